//! From a decoded Feast registry and its `feature_store.yaml` to Quiver's model, with a note for
//! everything that is not carried over. Pure: no files are read or written here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use super::proto::{self, OnDemandSourceKind, SourceOptions, SourceType, ValueType};
use super::repo_config::{FeastConfig, FeastOnlineStore};

/// Feast's placeholder entity of views without entities.
const DUMMY_ENTITY: &str = "__dummy";

/// One thing of the Feast repository that the Quiver file does not carry (or carries
/// differently), and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// What it is about: `feature_views.driver_stats`, `online_store`, ...
    pub subject: String,
    /// What was left out and why, and what to do.
    pub message: String,
}

/// The Quiver registry the import writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversion {
    /// `project`.
    pub project: String,
    /// `online_store`: keys and rendered scalar values, in order.
    pub online_store: Vec<(String, String)>,
    /// `entities`.
    pub entities: Vec<Entity>,
    /// `feature_views`.
    pub feature_views: Vec<FeatureView>,
    /// On-demand views with a Python transformation: written commented out, with a stub crate.
    pub on_demand_views: Vec<OnDemandView>,
    /// `feature_services`.
    pub feature_services: Vec<FeatureService>,
    /// `push_sources`.
    pub push_sources: Vec<PushSource>,
    /// What is not carried over.
    pub notes: Vec<Note>,
}

/// An entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// Name.
    pub name: String,
    /// Its (single) join key.
    pub join_key: String,
    /// `string`, `int64`, `int32` or `bytes`.
    pub value_type: &'static str,
    /// Free text.
    pub description: String,
    /// Owner and tags, carried as a comment.
    pub comment: Option<String>,
}

/// A typed field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Name.
    pub name: String,
    /// Quiver dtype: `float64`, `list<int64>`, ...
    pub dtype: String,
}

/// A feature view.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureView {
    /// Name.
    pub name: String,
    /// Entity names.
    pub entities: Vec<String>,
    /// Features.
    pub schema: Vec<Field>,
    /// Quiver duration (`2d`), or none for Feast's "forever".
    pub ttl: Option<String>,
    /// Served online.
    pub online: bool,
    /// Parquet path, relative to the output file's directory when it can be.
    pub path: String,
    /// Event time column.
    pub timestamp_field: String,
    /// Created time column.
    pub created_timestamp_column: Option<String>,
    /// Free text.
    pub description: String,
    /// Owner and tags, carried as a comment.
    pub comment: Option<String>,
}

/// An on-demand view whose Feast transformation is Python.
#[derive(Debug, Clone, PartialEq)]
pub struct OnDemandView {
    /// Name.
    pub name: String,
    /// The module (and stub crate library) name.
    pub transform: String,
    /// Source feature views.
    pub sources: Vec<String>,
    /// The features of the source views the Feast view reads, in source order.
    pub inputs: Vec<Field>,
    /// Request fields.
    pub request_fields: Vec<Field>,
    /// Output schema.
    pub schema: Vec<Field>,
    /// Free text.
    pub description: String,
    /// `pandas`, `python` or `substrait`.
    pub mode: String,
    /// The Python function, as Feast stored it.
    pub python: String,
    /// Whether every source view was carried over (the entry can then be enabled as it is).
    pub sources_carried: bool,
    /// `service: view:feature` references left out of services until the view is enabled.
    pub service_refs: Vec<(String, String)>,
}

/// A feature service.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureService {
    /// Name.
    pub name: String,
    /// `view` or `view:feature`.
    pub features: Vec<String>,
    /// Free text.
    pub description: String,
    /// Owner and tags, carried as a comment.
    pub comment: Option<String>,
}

/// A push source.
#[derive(Debug, Clone, PartialEq)]
pub struct PushSource {
    /// Name.
    pub name: String,
    /// The view it feeds.
    pub feature_view: String,
    /// Free text.
    pub description: String,
    /// Set when the view reads one file or a glob: the source then takes online pushes only
    /// (Feast's default), since offline pushes add files to a source directory; says how to
    /// allow offline ones.
    pub online_only: Option<String>,
}

/// Where the Feast repository and the output file are, both absolute.
#[derive(Debug, Clone)]
pub struct Locations {
    /// The Feast repository directory.
    pub repo_dir: PathBuf,
    /// The directory the Quiver file is written to.
    pub output_dir: PathBuf,
}

/// Quiver's dtype for a Feast value type, if it has one.
pub fn quiver_dtype(value_type: ValueType) -> Option<String> {
    use ValueType as V;
    let scalar = |v: ValueType| -> Option<&'static str> {
        Some(match v {
            V::Bytes | V::BytesList => "bytes",
            V::String | V::StringList => "string",
            V::Int32 | V::Int32List => "int32",
            V::Int64 | V::Int64List => "int64",
            V::Double | V::DoubleList => "float64",
            V::Float | V::FloatList => "float32",
            V::Bool | V::BoolList => "bool",
            V::UnixTimestamp | V::UnixTimestampList => "unix_timestamp",
            _ => return None,
        })
    };
    let name = scalar(value_type)?;
    let is_list = matches!(
        value_type,
        V::BytesList
            | V::StringList
            | V::Int32List
            | V::Int64List
            | V::DoubleList
            | V::FloatList
            | V::BoolList
            | V::UnixTimestampList
    );
    Some(if is_list {
        format!("list<{name}>")
    } else {
        name.to_string()
    })
}

fn value_type(raw: i32) -> ValueType {
    ValueType::try_from(raw).unwrap_or(ValueType::Invalid)
}

fn value_type_name(raw: i32) -> String {
    match ValueType::try_from(raw) {
        Ok(v) => format!("{v:?}"),
        Err(_) => format!("value type {raw}"),
    }
}

fn source_kind(source: &proto::DataSource) -> String {
    match SourceType::try_from(source.r#type) {
        Ok(SourceType::BatchBigquery) => "BigQuery".into(),
        Ok(SourceType::BatchSnowflake) => "Snowflake".into(),
        Ok(SourceType::BatchRedshift) => "Redshift".into(),
        Ok(SourceType::BatchSpark) => "Spark".into(),
        Ok(SourceType::BatchTrino) => "Trino".into(),
        Ok(SourceType::BatchAthena) => "Athena".into(),
        Ok(SourceType::BatchIceberg) => "Iceberg".into(),
        Ok(SourceType::StreamKafka) => "Kafka".into(),
        Ok(SourceType::StreamKinesis) => "Kinesis".into(),
        Ok(SourceType::CustomSource) => {
            format!("custom ({})", source.data_source_class_type)
        }
        Ok(SourceType::PushSource) => "push".into(),
        Ok(SourceType::RequestSource) => "request".into(),
        Ok(SourceType::BatchFile) => "file".into(),
        Ok(SourceType::Invalid) | Err(_) => "unknown".into(),
    }
}

/// `seconds` (and `nanos`) as a Quiver duration: `2d`, `90m`, `1500ms`, `17s`.
pub fn format_duration(d: &proto::Duration) -> String {
    let millis = d.seconds.saturating_mul(1000) + i64::from(d.nanos / 1_000_000);
    if millis % 1000 != 0 {
        return format!("{millis}ms");
    }
    let seconds = millis / 1000;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds % size == 0 {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

/// `path` relative to `from` when both are absolute (`..` as needed), `path` otherwise.
pub fn relative_path(from: &Path, path: &Path) -> PathBuf {
    let from = normalize(from);
    let path = normalize(path);
    if !from.is_absolute() || !path.is_absolute() {
        return path;
    }
    let f: Vec<_> = from.components().collect();
    let p: Vec<_> = path.components().collect();
    let common = f.iter().zip(&p).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c.as_os_str());
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Removes `.` and resolves `..` lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn comment(owner: &str, tags: &BTreeMap<String, String>) -> Option<String> {
    let mut parts = Vec::new();
    if !owner.is_empty() {
        parts.push(format!("owner: {owner}"));
    }
    if !tags.is_empty() {
        let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("tags: {}", tags.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join("; ").replace('\n', " "))
}

/// Converts the registry of `config`'s project.
pub fn convert(
    config: &FeastConfig,
    registry: &proto::Registry,
    locations: &Locations,
) -> Conversion {
    let mut c = Conversion {
        project: config.project.clone(),
        ..Conversion::default()
    };
    let note = |notes: &mut Vec<Note>, subject: String, message: String| {
        notes.push(Note { subject, message });
    };
    let mut notes = Vec::new();
    let in_project = |project: &str| project.is_empty() || project == config.project;

    // --- feature_store.yaml ---
    c.online_store = online_store(config, &mut notes);
    if !matches!(config.offline_store.as_str(), "file" | "dask" | "duckdb") {
        note(
            &mut notes,
            "offline_store".into(),
            format!(
                "type {}: Quiver reads Parquet files only; export each view's data to Parquet and \
                 point its source.path at it",
                config.offline_store
            ),
        );
    }
    if config.provider != "local" {
        note(
            &mut notes,
            "provider".into(),
            format!(
                "{}: Quiver has no providers; the stores are the ones listed here",
                config.provider
            ),
        );
    }
    for key in &config.other_keys {
        note(
            &mut notes,
            key.clone(),
            "has no Quiver equivalent (see docs/configuration.md for Quiver's `server` section)"
                .into(),
        );
    }

    // --- feature views, needed first: entities without a value type take their views' ---
    let mut fv_specs: Vec<&proto::FeatureViewSpec> = registry
        .feature_views
        .iter()
        .filter_map(|v| v.spec.as_ref())
        .filter(|s| in_project(&s.project))
        .collect();
    fv_specs.sort_by(|a, b| a.name.cmp(&b.name));

    // --- entities ---
    let mut entity_specs: Vec<&proto::EntitySpec> = registry
        .entities
        .iter()
        .filter_map(|e| e.spec.as_ref())
        .filter(|s| in_project(&s.project) && s.name != DUMMY_ENTITY)
        .collect();
    entity_specs.sort_by(|a, b| a.name.cmp(&b.name));
    for e in entity_specs {
        let subject = format!("entities.{}", e.name);
        let mut raw = e.value_type;
        if value_type(raw) == ValueType::Invalid {
            // Feast infers a missing entity type from the views' entity columns.
            if let Some(col) = fv_specs
                .iter()
                .flat_map(|v| &v.entity_columns)
                .find(|col| col.name == e.join_key)
            {
                raw = col.value_type;
            }
        }
        let value_type = match value_type(raw) {
            ValueType::String => "string",
            ValueType::Int64 => "int64",
            ValueType::Int32 => "int32",
            ValueType::Bytes => "bytes",
            ValueType::Invalid => {
                note(
                    &mut notes,
                    subject.clone(),
                    "has no value type and no view declares its join key's type; imported as \
                     `string`, check it"
                        .into(),
                );
                "string"
            }
            _ => {
                note(
                    &mut notes,
                    subject,
                    format!(
                        "not carried over: its join key type {} is not one of Quiver's entity \
                         types (string, int64, int32, bytes); its views are left out too",
                        value_type_name(raw)
                    ),
                );
                continue;
            }
        };
        c.entities.push(Entity {
            name: e.name.clone(),
            join_key: if e.join_key.is_empty() {
                e.name.clone()
            } else {
                e.join_key.clone()
            },
            value_type,
            description: e.description.clone(),
            comment: comment(&e.owner, &e.tags),
        });
    }
    let entity_names: BTreeSet<&str> = c.entities.iter().map(|e| e.name.as_str()).collect();

    // --- feature views ---
    let mut pushes: BTreeMap<String, (Vec<String>, String)> = BTreeMap::new();
    for spec in &fv_specs {
        let subject = format!("feature_views.{}", spec.name);
        let entities: Vec<String> = spec
            .entities
            .iter()
            .filter(|e| e.as_str() != DUMMY_ENTITY)
            .cloned()
            .collect();
        if entities.is_empty() {
            note(
                &mut notes,
                subject,
                "not carried over: it has no entities, and Quiver's views are keyed by entities"
                    .into(),
            );
            continue;
        }
        if let Some(missing) = entities.iter().find(|e| !entity_names.contains(e.as_str())) {
            note(
                &mut notes,
                subject,
                format!("not carried over: its entity {missing} is not carried over"),
            );
            continue;
        }
        let Some(batch) = spec.batch_source.as_ref() else {
            note(
                &mut notes,
                subject,
                "not carried over: it has no batch source".into(),
            );
            continue;
        };
        let path = match file_path(batch, locations) {
            Ok(path) => path,
            Err(why) => {
                note(&mut notes, subject, format!("not carried over: {why}"));
                continue;
            }
        };
        if !batch.field_mapping.is_empty() {
            let mapping: Vec<String> = batch
                .field_mapping
                .iter()
                .map(|(from, to)| format!("{from} -> {to}"))
                .collect();
            note(
                &mut notes,
                subject.clone(),
                format!(
                    "the field mapping of source {} ({}) is not carried over: Quiver reads \
                     columns by feature name; rename the Parquet columns",
                    batch.name,
                    mapping.join(", ")
                ),
            );
        }
        if !batch.date_partition_column.is_empty() {
            note(
                &mut notes,
                subject.clone(),
                format!(
                    "date_partition_column {} is not used: Quiver reads every file under \
                     source.path",
                    batch.date_partition_column
                ),
            );
        }
        let mut schema = Vec::new();
        for f in &spec.features {
            match quiver_dtype(value_type(f.value_type)) {
                Some(dtype) => schema.push(Field {
                    name: f.name.clone(),
                    dtype,
                }),
                None => note(
                    &mut notes,
                    format!("{subject}.{}", f.name),
                    format!(
                        "not carried over: type {} has no Quiver dtype",
                        value_type_name(f.value_type)
                    ),
                ),
            }
        }
        if schema.is_empty() {
            note(
                &mut notes,
                subject,
                "not carried over: none of its features has a Quiver dtype".into(),
            );
            continue;
        }
        if let Some(stream) = &spec.stream_source {
            match SourceType::try_from(stream.r#type) {
                Ok(SourceType::PushSource) => {
                    pushes
                        .entry(stream.name.clone())
                        .or_insert_with(|| (Vec::new(), stream.description.clone()))
                        .0
                        .push(spec.name.clone());
                }
                _ => note(
                    &mut notes,
                    subject.clone(),
                    format!(
                        "its {} stream source {} is not carried over: Quiver does not consume \
                         streams; have the stream processor POST rows to /push through a push \
                         source",
                        source_kind(stream),
                        stream.name
                    ),
                ),
            }
        }
        c.feature_views.push(FeatureView {
            name: spec.name.clone(),
            entities,
            schema,
            ttl: spec
                .ttl
                .filter(|d| d.seconds > 0 || d.nanos > 0)
                .map(|d| format_duration(&d)),
            online: spec.online,
            path,
            timestamp_field: if batch.timestamp_field.is_empty() {
                "event_timestamp".into()
            } else {
                batch.timestamp_field.clone()
            },
            created_timestamp_column: Some(batch.created_timestamp_column.clone())
                .filter(|c| !c.is_empty()),
            description: spec.description.clone(),
            comment: comment(&spec.owner, &spec.tags),
        });
    }

    // --- push sources: one per Feast push source, feeding its first view ---
    for (name, (views, description)) in pushes {
        if views.len() > 1 {
            note(
                &mut notes,
                format!("push_sources.{name}"),
                format!(
                    "feeds {} views in Feast; a Quiver push source feeds one, so it feeds {} \
                     and the others ({}) need push sources of their own",
                    views.len(),
                    views[0],
                    views[1..].join(", ")
                ),
            );
        }
        let view = &views[0];
        let online_only = c
            .feature_views
            .iter()
            .find(|v| &v.name == view)
            .filter(|v| v.path.ends_with(".parquet") || v.path.contains(['*', '?', '[']))
            .map(|v| {
                let suggestion = v
                    .path
                    .strip_suffix(".parquet")
                    .filter(|_| !v.path.contains(['*', '?', '[']))
                    .map(|dir| format!(" (e.g. {dir}/)"))
                    .unwrap_or_default();
                format!(
                    "takes online pushes only (Feast's default): {view} reads {}, and offline \
                     pushes add Parquet files to a source directory; to push offline too, move \
                     its files into a directory of their own{suggestion} and set the view's \
                     source.path to it",
                    v.path
                )
            });
        if let Some(why) = &online_only {
            note(&mut notes, format!("push_sources.{name}"), why.clone());
        }
        c.push_sources.push(PushSource {
            name,
            feature_view: view.clone(),
            description,
            online_only,
        });
    }
    let pushed: BTreeSet<&str> = c.push_sources.iter().map(|p| p.name.as_str()).collect();
    for source in &registry.data_sources {
        if in_project(&source.project)
            && SourceType::try_from(source.r#type) == Ok(SourceType::PushSource)
            && !pushed.contains(source.name.as_str())
        {
            note(
                &mut notes,
                format!("push_sources.{}", source.name),
                "not carried over: no carried-over feature view uses it as its stream source"
                    .into(),
            );
        }
    }

    let views: BTreeMap<&str, &FeatureView> = c
        .feature_views
        .iter()
        .map(|v| (v.name.as_str(), v))
        .collect();

    // --- on-demand views ---
    let mut odfv_specs: Vec<&proto::OnDemandFeatureViewSpec> = registry
        .on_demand_feature_views
        .iter()
        .filter_map(|v| v.spec.as_ref())
        .filter(|s| in_project(&s.project))
        .collect();
    odfv_specs.sort_by(|a, b| a.name.cmp(&b.name));
    for spec in odfv_specs {
        let subject = format!("on_demand_feature_views.{}", spec.name);
        let udf = spec
            .feature_transformation
            .as_ref()
            .and_then(|t| t.user_defined_function.as_ref())
            .or(spec.user_defined_function.as_ref());
        let mode = if !spec.mode.is_empty() {
            spec.mode.clone()
        } else {
            udf.map(|u| u.mode.clone())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "pandas".into())
        };
        let mut view = OnDemandView {
            name: spec.name.clone(),
            transform: spec.name.replace('-', "_"),
            sources: Vec::new(),
            inputs: Vec::new(),
            request_fields: Vec::new(),
            schema: Vec::new(),
            description: spec.description.clone(),
            mode: mode.clone(),
            python: udf.map(|u| u.body_text.clone()).unwrap_or_default(),
            sources_carried: true,
            service_refs: Vec::new(),
        };
        let typed = |fields: &[proto::FeatureSpec], what: &str, notes: &mut Vec<Note>| {
            let mut out = Vec::new();
            for f in fields {
                match quiver_dtype(value_type(f.value_type)) {
                    Some(dtype) => out.push(Field {
                        name: f.name.clone(),
                        dtype,
                    }),
                    None => notes.push(Note {
                        subject: format!("{subject}.{}", f.name),
                        message: format!(
                            "{what} of type {} left out: it has no Quiver dtype",
                            value_type_name(f.value_type)
                        ),
                    }),
                }
            }
            out
        };
        for source in spec.sources.values() {
            let (view_name, columns) = match &source.source {
                Some(OnDemandSourceKind::FeatureView(fv)) => match &fv.spec {
                    Some(s) => (s.name.clone(), s.features.clone()),
                    None => continue,
                },
                Some(OnDemandSourceKind::FeatureViewProjection(p)) => {
                    (p.feature_view_name.clone(), p.feature_columns.clone())
                }
                Some(OnDemandSourceKind::RequestDataSource(ds)) => {
                    if let Some(SourceOptions::Request(r)) = &ds.options {
                        let fields = typed(&r.schema, "request field", &mut notes);
                        view.request_fields.extend(fields);
                    }
                    continue;
                }
                None => continue,
            };
            if !views.contains_key(view_name.as_str()) {
                view.sources_carried = false;
                note(
                    &mut notes,
                    subject.clone(),
                    format!(
                        "its source view {view_name} is not carried over, so its entry cannot be \
                         enabled until that view is"
                    ),
                );
            }
            let fields = typed(&columns, "input", &mut notes);
            view.inputs.extend(fields);
            view.sources.push(view_name);
        }
        view.schema = typed(&spec.features, "output", &mut notes);
        if spec.write_to_online_store {
            note(
                &mut notes,
                subject.clone(),
                "write_to_online_store is not carried over: Quiver computes on-demand views at \
                 request time"
                    .into(),
            );
        }
        if !spec.aggregations.is_empty() {
            note(
                &mut notes,
                subject.clone(),
                "its aggregations are not carried over".into(),
            );
        }
        note(
            &mut notes,
            subject,
            format!(
                "a Python transformation (mode {mode}) cannot run in Quiver: a stub transform \
                 crate was generated in transforms/{}/; port the function to it, build it to \
                 WebAssembly and uncomment the view's entry in on_demand_feature_views",
                view.transform
            ),
        );
        c.on_demand_views.push(view);
    }

    // --- feature services ---
    let mut service_specs: Vec<&proto::FeatureServiceSpec> = registry
        .feature_services
        .iter()
        .filter_map(|s| s.spec.as_ref())
        .filter(|s| in_project(&s.project))
        .collect();
    service_specs.sort_by(|a, b| a.name.cmp(&b.name));
    for spec in service_specs {
        let subject = format!("feature_services.{}", spec.name);
        let mut features = Vec::new();
        for p in &spec.features {
            let name = &p.feature_view_name;
            if !p.feature_view_name_alias.is_empty() {
                note(
                    &mut notes,
                    subject.clone(),
                    format!(
                        "the alias {} of {name} is not carried over: its features are served \
                         under {name}",
                        p.feature_view_name_alias
                    ),
                );
            }
            if !p.join_key_map.is_empty() {
                note(
                    &mut notes,
                    subject.clone(),
                    format!(
                        "the join key mapping of {name} is not carried over: requests use the \
                         entity's own join keys"
                    ),
                );
            }
            if let Some(view) = views.get(name.as_str()) {
                let have: BTreeSet<&str> = view.schema.iter().map(|f| f.name.as_str()).collect();
                let mut taken = Vec::new();
                for col in &p.feature_columns {
                    if have.contains(col.name.as_str()) {
                        taken.push(col.name.clone());
                    } else {
                        note(
                            &mut notes,
                            subject.clone(),
                            format!(
                                "{name}:{} left out: that feature is not carried over",
                                col.name
                            ),
                        );
                    }
                }
                let whole = taken.len() == view.schema.len()
                    && taken.iter().collect::<BTreeSet<_>>().len() == have.len();
                if whole {
                    features.push(name.clone());
                } else {
                    features.extend(taken.into_iter().map(|f| format!("{name}:{f}")));
                }
            } else if let Some(odfv) = c.on_demand_views.iter_mut().find(|v| &v.name == name) {
                let refs: Vec<String> = if p.feature_columns.len() == odfv.schema.len() {
                    vec![name.clone()]
                } else {
                    p.feature_columns
                        .iter()
                        .map(|f| format!("{name}:{}", f.name))
                        .collect()
                };
                for r in &refs {
                    odfv.service_refs.push((spec.name.clone(), r.clone()));
                }
                note(
                    &mut notes,
                    subject.clone(),
                    format!(
                        "{} left out until the on-demand view {name} is enabled; add it back then",
                        refs.join(", ")
                    ),
                );
            } else {
                note(
                    &mut notes,
                    subject.clone(),
                    format!("{name} left out: that view is not carried over"),
                );
            }
        }
        if spec.logging_config.is_some() {
            note(
                &mut notes,
                subject.clone(),
                "its feature logging configuration is not carried over".into(),
            );
        }
        c.feature_services.push(FeatureService {
            name: spec.name.clone(),
            features,
            description: spec.description.clone(),
            comment: comment(&spec.owner, &spec.tags),
        });
    }

    // --- what Quiver has no equivalent for ---
    for sfv in &registry.stream_feature_views {
        if let Some(s) = sfv.spec.as_ref().filter(|s| in_project(&s.project)) {
            note(
                &mut notes,
                format!("stream_feature_views.{}", s.name),
                "not carried over: Quiver does not consume streams or run streaming \
                 aggregations; declare a feature view with a push source and push its rows"
                    .into(),
            );
        }
    }
    for (count, what) in [
        (registry.feature_tables.len(), "feature tables"),
        (registry.saved_datasets.len(), "saved datasets"),
        (
            registry.validation_references.len(),
            "validation references",
        ),
        (registry.permissions.len(), "permissions"),
    ] {
        if count > 0 {
            note(
                &mut notes,
                "registry".into(),
                format!("{count} {what} not carried over: Quiver has no equivalent"),
            );
        }
    }
    c.notes = notes;
    c
}

/// The Quiver `online_store` section for Feast's.
fn online_store(config: &FeastConfig, notes: &mut Vec<Note>) -> Vec<(String, String)> {
    let kv = |k: &str, v: String| (k.to_string(), v);
    let sqlite = |notes: &mut Vec<Note>, why: String| {
        notes.push(Note {
            subject: "online_store".into(),
            message: why,
        });
        vec![
            kv("type", "sqlite".into()),
            kv("path", "data/online_store.db".into()),
        ]
    };
    match &config.online_store {
        FeastOnlineStore::Redis {
            connection_string,
            redis_type,
            sentinel_master,
            key_ttl_seconds,
            other_options,
        } => {
            let mut out = vec![
                kv("type", "redis".into()),
                kv("layout", "feast".into()),
                kv("connection_string", connection_string.clone()),
                kv("redis_type", redis_type.clone()),
            ];
            if let Some(master) = sentinel_master {
                out.push(kv("sentinel_master", master.clone()));
            }
            if let Some(ttl) = key_ttl_seconds {
                out.push(kv("key_ttl_seconds", ttl.to_string()));
            }
            for option in other_options {
                notes.push(Note {
                    subject: format!("online_store.{option}"),
                    message: "not carried over: Quiver's Redis store has no such option".into(),
                });
            }
            if config.entity_key_serialization_version != 3 {
                notes.push(Note {
                    subject: "entity_key_serialization_version".into(),
                    message: format!(
                        "{}: Quiver reads and writes Feast's Redis keys of version 3 only; set \
                         entity_key_serialization_version: 3 in Feast and materialize again",
                        config.entity_key_serialization_version
                    ),
                });
            }
            out
        }
        FeastOnlineStore::Sqlite { path } => sqlite(
            notes,
            format!(
                "Feast's SQLite store ({path}) is in Feast's own table layout, which Quiver does \
                 not read: Quiver's SQLite store is data/online_store.db; fill it with `quiver \
                 materialize`"
            ),
        ),
        FeastOnlineStore::Other { store_type } => sqlite(
            notes,
            format!(
                "type {store_type} is not carried over: Quiver's stores are Redis and SQLite; \
                 the embedded SQLite store is used, fill it with `quiver materialize`"
            ),
        ),
    }
}

/// The Parquet path of a file source, relative to the output when it can be, or why there is
/// none.
fn file_path(source: &proto::DataSource, locations: &Locations) -> Result<String, String> {
    let options = match &source.options {
        Some(SourceOptions::File(f)) => f,
        _ => {
            return Err(format!(
                "its batch source {} is a {} source; Quiver reads Parquet files: export the data \
                 to Parquet and declare the view with source.path",
                source.name,
                source_kind(source)
            ));
        }
    };
    if options
        .file_format
        .as_ref()
        .is_some_and(|f| f.delta_format.is_some())
    {
        return Err(format!(
            "its batch source {} is a Delta table; Quiver reads Parquet files",
            source.name
        ));
    }
    let uri = options.uri.strip_prefix("file://").unwrap_or(&options.uri);
    if uri.contains("://") {
        return Err(format!(
            "its batch source {} is remote ({uri}); Quiver reads local Parquet files: copy them \
             and declare the view with source.path",
            source.name
        ));
    }
    let absolute = locations.repo_dir.join(uri);
    Ok(relative_path(&locations.output_dir, &absolute)
        .to_string_lossy()
        .into_owned())
}
