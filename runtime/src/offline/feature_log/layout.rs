//! The columns of a feature service's log, prepared once per registry, and the metadata that
//! describes them in every file (so `quiver skew` reads a log without guessing).

use serde::{Deserialize, Serialize};

use crate::registry::{FeatureRef, JoinKey, Registry};
use crate::types::{ScalarType, ValueType};

/// The Parquet key-value metadata key holding a log file's [`LogMetadata`] as JSON.
pub const META_FEATURE_LOG: &str = "quiver.feature_log";

/// Columns every log file has, before the entity, request and feature columns.
pub const REQUEST_ID: &str = "request_id";
/// The entity row's index in its request.
pub const ROW: &str = "row";
/// When the lookup ran (the time the point-in-time replay uses).
pub const REQUEST_TIME: &str = "request_time";
/// The feature service.
pub const FEATURE_SERVICE: &str = "feature_service";
/// Suffix of a feature's status column.
pub const STATUS_SUFFIX: &str = "__status";
/// Suffix of a feature's event timestamp column.
pub const EVENT_TS_SUFFIX: &str = "__event_timestamp";
/// Prefix of the column holding a transform module's sha256.
pub const TRANSFORM_PREFIX: &str = "transform_sha256__";

/// A named, typed column of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedColumn {
    /// Column name.
    pub name: String,
    /// Declared type, as in `feature_store.yaml`.
    pub dtype: String,
}

/// One logged feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedFeature {
    /// `view:feature`.
    pub feature: String,
    /// Column name: `view__feature`.
    pub column: String,
    /// Declared type.
    pub dtype: String,
}

/// What a log file holds, stored in its metadata ([`META_FEATURE_LOG`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMetadata {
    /// 1.
    pub format_version: u32,
    /// The project.
    pub project: String,
    /// The feature service.
    pub feature_service: String,
    /// Join keys of the service's views, in order of first use.
    pub join_keys: Vec<LoggedColumn>,
    /// Request fields of its on-demand views.
    pub request_fields: Vec<LoggedColumn>,
    /// Its features, in response order.
    pub features: Vec<LoggedFeature>,
    /// Names of the transform modules its on-demand views run.
    pub transforms: Vec<String>,
}

/// The log's columns for one feature service, with what capture needs to fill them.
#[derive(Debug)]
pub struct LogLayout {
    /// The metadata written to every file.
    pub metadata: LogMetadata,
    /// The same, as JSON.
    pub metadata_json: String,
    /// Join keys with their types.
    pub join_keys: Vec<JoinKey>,
    /// Request fields with their types.
    pub request_fields: Vec<(String, ValueType)>,
    /// Feature types, in response order.
    pub feature_types: Vec<ValueType>,
    /// Per logged transform, the on-demand view (index) whose run reports its module.
    pub transform_views: Vec<usize>,
}

impl LogLayout {
    /// The layout of feature service `service` (an index into `Registry::feature_services`).
    pub fn new(registry: &Registry, service: usize) -> Self {
        let s = &registry.feature_services[service];
        let mut join_keys: Vec<JoinKey> = Vec::new();
        let mut request_fields: Vec<(String, ValueType)> = Vec::new();
        let mut transforms: Vec<String> = Vec::new();
        let mut transform_views = Vec::new();
        let add_view_keys = |view: usize, join_keys: &mut Vec<JoinKey>| {
            for jk in &registry.feature_views[view].join_keys {
                if !join_keys.iter().any(|k| k.name == jk.name) {
                    join_keys.push(jk.clone());
                }
            }
        };
        let mut features = Vec::new();
        let mut feature_types = Vec::new();
        for &r in &s.features {
            match r {
                FeatureRef::View { view, .. } => add_view_keys(view, &mut join_keys),
                FeatureRef::OnDemand { view, .. } => {
                    let od = &registry.on_demand_views[view];
                    for &source in &od.sources {
                        add_view_keys(source, &mut join_keys);
                    }
                    for f in &od.request_fields {
                        if !request_fields.iter().any(|(n, _)| n == f.name.as_str()) {
                            request_fields.push((f.name.to_string(), f.dtype));
                        }
                    }
                    if !transforms.iter().any(|t| t == od.transform.as_str()) {
                        transforms.push(od.transform.to_string());
                        transform_views.push(view);
                    }
                }
            }
            let (view, field) = registry.ref_names(r);
            features.push(LoggedFeature {
                feature: format!("{view}:{}", field.name),
                column: format!("{view}__{}", field.name),
                dtype: field.dtype.to_string(),
            });
            feature_types.push(field.dtype);
        }
        // A request field that is also a join key is logged once, as the key.
        request_fields.retain(|(n, _)| !join_keys.iter().any(|k| k.name.as_str() == n));
        let metadata = LogMetadata {
            format_version: 1,
            project: registry.project.to_string(),
            feature_service: s.name.to_string(),
            join_keys: join_keys
                .iter()
                .map(|k| LoggedColumn {
                    name: k.name.to_string(),
                    dtype: ValueType::Scalar(k.dtype).to_string(),
                })
                .collect(),
            request_fields: request_fields
                .iter()
                .map(|(n, t)| LoggedColumn {
                    name: n.clone(),
                    dtype: t.to_string(),
                })
                .collect(),
            features,
            transforms,
        };
        let metadata_json = serde_json::to_string(&metadata).expect("serializable");
        LogLayout {
            metadata,
            metadata_json,
            join_keys,
            request_fields,
            feature_types,
            transform_views,
        }
    }
}

/// Parses a logged dtype (`float32`, `list<string>`).
pub fn parse_dtype(text: &str) -> Option<ValueType> {
    ValueType::parse(text)
}

/// The scalar type of a join key column as logged.
pub fn key_type(column: &LoggedColumn) -> Option<ScalarType> {
    match parse_dtype(&column.dtype)? {
        ValueType::Scalar(s) => Some(s),
        ValueType::List(_) => None,
    }
}
