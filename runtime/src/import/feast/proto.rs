//! The part of Feast's `feast.core.Registry` protobuf that the import reads, written by hand.
//!
//! Field numbers and types are Feast 0.67's (`protos/feast/core/*.proto` in feast-dev/feast:
//! `Registry`, `Entity`, `FeatureView`, `DataSource`, `OnDemandFeatureView`, `FeatureService`,
//! `FeatureViewProjection`, `Feature`, `Transformation`, `StreamFeatureView`). Only the fields the
//! import uses are declared; prost skips every other field, so registries written by newer Feast
//! versions still decode.

use std::collections::BTreeMap;

/// `feast.core.Registry`: everything `feast apply` stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Registry {
    /// Entities of every project in the registry.
    #[prost(message, repeated, tag = "1")]
    pub entities: Vec<Entity>,
    /// Feature tables, Feast's pre-0.10 views (counted only).
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub feature_tables: Vec<Vec<u8>>,
    /// Batch feature views.
    #[prost(message, repeated, tag = "6")]
    pub feature_views: Vec<FeatureView>,
    /// Feature services.
    #[prost(message, repeated, tag = "7")]
    pub feature_services: Vec<FeatureService>,
    /// On-demand feature views.
    #[prost(message, repeated, tag = "8")]
    pub on_demand_feature_views: Vec<OnDemandFeatureView>,
    /// Saved datasets (counted only).
    #[prost(bytes = "vec", repeated, tag = "11")]
    pub saved_datasets: Vec<Vec<u8>>,
    /// Every data source, named, as applied.
    #[prost(message, repeated, tag = "12")]
    pub data_sources: Vec<DataSource>,
    /// Validation references (counted only).
    #[prost(bytes = "vec", repeated, tag = "13")]
    pub validation_references: Vec<Vec<u8>>,
    /// Stream feature views.
    #[prost(message, repeated, tag = "14")]
    pub stream_feature_views: Vec<StreamFeatureView>,
    /// Permissions (counted only).
    #[prost(bytes = "vec", repeated, tag = "16")]
    pub permissions: Vec<Vec<u8>>,
}

/// `feast.core.Entity`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entity {
    /// The entity's definition.
    #[prost(message, optional, tag = "1")]
    pub spec: Option<EntitySpec>,
}

/// `feast.core.EntitySpecV2`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntitySpec {
    /// Entity name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Type of its join key.
    #[prost(enumeration = "ValueType", tag = "2")]
    pub value_type: i32,
    /// Free text.
    #[prost(string, tag = "3")]
    pub description: String,
    /// The join key column.
    #[prost(string, tag = "4")]
    pub join_key: String,
    /// Free-form tags.
    #[prost(btree_map = "string, string", tag = "8")]
    pub tags: BTreeMap<String, String>,
    /// The project it belongs to.
    #[prost(string, tag = "9")]
    pub project: String,
    /// Owner, usually an e-mail address.
    #[prost(string, tag = "10")]
    pub owner: String,
}

/// `feast.types.ValueType.Enum`: the type of a feature or join key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
#[allow(missing_docs)]
pub enum ValueType {
    Invalid = 0,
    Bytes = 1,
    String = 2,
    Int32 = 3,
    Int64 = 4,
    Double = 5,
    Float = 6,
    Bool = 7,
    UnixTimestamp = 8,
    BytesList = 11,
    StringList = 12,
    Int32List = 13,
    Int64List = 14,
    DoubleList = 15,
    FloatList = 16,
    BoolList = 17,
    UnixTimestampList = 18,
    Null = 19,
    Map = 20,
    MapList = 21,
    BytesSet = 22,
    StringSet = 23,
    Int32Set = 24,
    Int64Set = 25,
    DoubleSet = 26,
    FloatSet = 27,
    BoolSet = 28,
    UnixTimestampSet = 29,
    Json = 32,
    JsonList = 33,
    Struct = 34,
    StructList = 35,
    Uuid = 36,
    TimeUuid = 37,
    UuidList = 38,
    TimeUuidList = 39,
    UuidSet = 40,
    TimeUuidSet = 41,
    ValueList = 42,
    ValueSet = 43,
    Decimal = 44,
    DecimalList = 45,
    DecimalSet = 46,
    ScalarMap = 47,
    ZonedTimestamp = 48,
}

/// `feast.core.FeatureSpecV2`: a named, typed column.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureSpec {
    /// Column name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its type.
    #[prost(enumeration = "ValueType", tag = "2")]
    pub value_type: i32,
    /// Free-form tags.
    #[prost(btree_map = "string, string", tag = "3")]
    pub tags: BTreeMap<String, String>,
    /// Free text.
    #[prost(string, tag = "4")]
    pub description: String,
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Duration {
    /// Whole seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds past `seconds`.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `feast.core.FeatureView`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureView {
    /// The view's definition.
    #[prost(message, optional, tag = "1")]
    pub spec: Option<FeatureViewSpec>,
}

/// `feast.core.FeatureViewSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureViewSpec {
    /// View name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The project it belongs to.
    #[prost(string, tag = "2")]
    pub project: String,
    /// Entity names.
    #[prost(string, repeated, tag = "3")]
    pub entities: Vec<String>,
    /// The features (without the entity columns).
    #[prost(message, repeated, tag = "4")]
    pub features: Vec<FeatureSpec>,
    /// Free-form tags.
    #[prost(btree_map = "string, string", tag = "5")]
    pub tags: BTreeMap<String, String>,
    /// How long a value is served after its event time; zero or absent: forever.
    #[prost(message, optional, tag = "6")]
    pub ttl: Option<Duration>,
    /// The offline source.
    #[prost(message, optional, tag = "7")]
    pub batch_source: Option<DataSource>,
    /// Whether the view is materialized and served online.
    #[prost(bool, tag = "8")]
    pub online: bool,
    /// A push, Kafka or Kinesis source, if any.
    #[prost(message, optional, tag = "9")]
    pub stream_source: Option<DataSource>,
    /// Free text.
    #[prost(string, tag = "10")]
    pub description: String,
    /// Owner, usually an e-mail address.
    #[prost(string, tag = "11")]
    pub owner: String,
    /// The entity columns with their types.
    #[prost(message, repeated, tag = "12")]
    pub entity_columns: Vec<FeatureSpec>,
}

/// `feast.core.StreamFeatureView`: only its name is read (stream views are not imported).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamFeatureView {
    /// The view's definition.
    #[prost(message, optional, tag = "1")]
    pub spec: Option<NamedSpec>,
}

/// The `name` (1) and `project` (2) fields many Feast specs share.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedSpec {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The project it belongs to.
    #[prost(string, tag = "2")]
    pub project: String,
}

/// `feast.core.DataSource.SourceType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
#[allow(missing_docs)]
pub enum SourceType {
    Invalid = 0,
    BatchFile = 1,
    BatchBigquery = 2,
    StreamKafka = 3,
    StreamKinesis = 4,
    BatchRedshift = 5,
    CustomSource = 6,
    RequestSource = 7,
    BatchSnowflake = 8,
    PushSource = 9,
    BatchTrino = 10,
    BatchSpark = 11,
    BatchAthena = 12,
    BatchIceberg = 13,
}

/// `feast.core.DataSource`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DataSource {
    /// Kind of source.
    #[prost(enumeration = "SourceType", tag = "1")]
    pub r#type: i32,
    /// Source column → feature name.
    #[prost(btree_map = "string, string", tag = "2")]
    pub field_mapping: BTreeMap<String, String>,
    /// Event time column.
    #[prost(string, tag = "3")]
    pub timestamp_field: String,
    /// Partition column, used by Feast to prune file scans.
    #[prost(string, tag = "4")]
    pub date_partition_column: String,
    /// Created time column, breaking ties between rows of one event time.
    #[prost(string, tag = "5")]
    pub created_timestamp_column: String,
    /// The Python class of a custom source.
    #[prost(string, tag = "17")]
    pub data_source_class_type: String,
    /// Source name, unique in the project.
    #[prost(string, tag = "20")]
    pub name: String,
    /// The project it belongs to.
    #[prost(string, tag = "21")]
    pub project: String,
    /// Free text.
    #[prost(string, tag = "23")]
    pub description: String,
    /// The batch source of a push or stream source.
    #[prost(message, optional, boxed, tag = "26")]
    pub batch_source: Option<Box<DataSource>>,
    /// Options of the kind of source.
    #[prost(oneof = "SourceOptions", tags = "11, 18, 22")]
    pub options: Option<SourceOptions>,
}

/// The `options` oneof of `feast.core.DataSource`, for the kinds the import reads (others are
/// known by [`DataSource::type`]).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum SourceOptions {
    /// A file source.
    #[prost(message, tag = "11")]
    File(FileOptions),
    /// A request source.
    #[prost(message, tag = "18")]
    Request(RequestDataOptions),
    /// A push source (no options).
    #[prost(message, tag = "22")]
    Push(PushOptions),
}

/// `feast.core.DataSource.FileOptions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileOptions {
    /// Parquet or Delta.
    #[prost(message, optional, tag = "1")]
    pub file_format: Option<FileFormat>,
    /// The path or URL of the file or directory.
    #[prost(string, tag = "2")]
    pub uri: String,
    /// A custom S3 endpoint.
    #[prost(string, tag = "3")]
    pub s3_endpoint_override: String,
}

/// `feast.core.FileFormat`: which of its oneof fields is set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileFormat {
    /// Set for Parquet (an empty message).
    #[prost(bytes = "vec", optional, tag = "1")]
    pub parquet_format: Option<Vec<u8>>,
    /// Set for Delta tables.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub delta_format: Option<Vec<u8>>,
}

/// `feast.core.DataSource.RequestDataOptions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestDataOptions {
    /// The fields the client sends.
    #[prost(message, repeated, tag = "3")]
    pub schema: Vec<FeatureSpec>,
}

/// `feast.core.DataSource.PushOptions` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushOptions {}

/// `feast.core.OnDemandFeatureView`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OnDemandFeatureView {
    /// The view's definition.
    #[prost(message, optional, tag = "1")]
    pub spec: Option<OnDemandFeatureViewSpec>,
}

/// `feast.core.OnDemandFeatureViewSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OnDemandFeatureViewSpec {
    /// View name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The project it belongs to.
    #[prost(string, tag = "2")]
    pub project: String,
    /// Output schema.
    #[prost(message, repeated, tag = "3")]
    pub features: Vec<FeatureSpec>,
    /// Inputs by name: feature views, their projections, request sources.
    #[prost(btree_map = "string, message", tag = "4")]
    pub sources: BTreeMap<String, OnDemandSource>,
    /// The transformation of registries written before `feature_transformation`.
    #[prost(message, optional, tag = "5")]
    pub user_defined_function: Option<UserDefinedFunction>,
    /// Free text.
    #[prost(string, tag = "6")]
    pub description: String,
    /// Free-form tags.
    #[prost(btree_map = "string, string", tag = "7")]
    pub tags: BTreeMap<String, String>,
    /// Owner.
    #[prost(string, tag = "8")]
    pub owner: String,
    /// The transformation.
    #[prost(message, optional, tag = "10")]
    pub feature_transformation: Option<FeatureTransformation>,
    /// `pandas`, `python` or `substrait`.
    #[prost(string, tag = "11")]
    pub mode: String,
    /// Whether Feast computes it at write time and stores the result.
    #[prost(bool, tag = "12")]
    pub write_to_online_store: bool,
    /// Aggregations (counted only).
    #[prost(bytes = "vec", repeated, tag = "16")]
    pub aggregations: Vec<Vec<u8>>,
}

/// `feast.core.OnDemandSource`: one input of an on-demand view.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OnDemandSource {
    /// Which kind of input.
    #[prost(oneof = "OnDemandSourceKind", tags = "1, 2, 3")]
    pub source: Option<OnDemandSourceKind>,
}

/// The `source` oneof of `feast.core.OnDemandSource` (the large variants boxed).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum OnDemandSourceKind {
    /// A whole feature view.
    #[prost(message, tag = "1")]
    FeatureView(Box<FeatureView>),
    /// A request source.
    #[prost(message, tag = "2")]
    RequestDataSource(Box<DataSource>),
    /// A feature view projection.
    #[prost(message, tag = "3")]
    FeatureViewProjection(FeatureViewProjection),
}

/// `feast.core.UserDefinedFunction` (and `UserDefinedFunctionV2`, which adds `mode` at 4).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserDefinedFunction {
    /// Function name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The function's source text.
    #[prost(string, tag = "3")]
    pub body_text: String,
    /// `pandas` or `python` (V2 only).
    #[prost(string, tag = "4")]
    pub mode: String,
}

/// `feast.core.FeatureTransformationV2`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureTransformation {
    /// A Python function.
    #[prost(message, optional, tag = "1")]
    pub user_defined_function: Option<UserDefinedFunction>,
    /// A Substrait plan (set for `mode="substrait"`).
    #[prost(bytes = "vec", optional, tag = "2")]
    pub substrait_transformation: Option<Vec<u8>>,
}

/// `feast.core.FeatureViewProjection`: a view, or a subset of its features, as a service or an
/// on-demand view uses it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureViewProjection {
    /// The view.
    #[prost(string, tag = "1")]
    pub feature_view_name: String,
    /// The features taken.
    #[prost(message, repeated, tag = "2")]
    pub feature_columns: Vec<FeatureSpec>,
    /// Another name for the view in responses.
    #[prost(string, tag = "3")]
    pub feature_view_name_alias: String,
    /// Join key renames (entity column → request column).
    #[prost(btree_map = "string, string", tag = "4")]
    pub join_key_map: BTreeMap<String, String>,
}

/// `feast.core.FeatureService`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureService {
    /// The service's definition.
    #[prost(message, optional, tag = "1")]
    pub spec: Option<FeatureServiceSpec>,
}

/// `feast.core.FeatureServiceSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FeatureServiceSpec {
    /// Service name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The project it belongs to.
    #[prost(string, tag = "2")]
    pub project: String,
    /// The views and features it serves.
    #[prost(message, repeated, tag = "3")]
    pub features: Vec<FeatureViewProjection>,
    /// Free-form tags.
    #[prost(btree_map = "string, string", tag = "4")]
    pub tags: BTreeMap<String, String>,
    /// Free text.
    #[prost(string, tag = "5")]
    pub description: String,
    /// Owner.
    #[prost(string, tag = "6")]
    pub owner: String,
    /// Feature logging configuration (present or not).
    #[prost(bytes = "vec", optional, tag = "7")]
    pub logging_config: Option<Vec<u8>>,
}
