//! The compiled registry: every name checked, every reference resolved to an index, every type
//! parsed. Built once from `feature_store.yaml` by the config compiler (`config::compile`), which
//! depends on this module and never the reverse; the serving path and batch jobs work from it and
//! never re-parse or re-validate. Its settings come from [`crate::settings`] and
//! [`crate::store::OnlineStoreSpec`], both below it.
//!
//! Two things every path shares live here, once: the serving rule ([`ServingRule`], in [`rule`])
//! and the input layout of each on-demand transform ([`OnDemandView::inputs`]).

pub mod rule;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::settings::{CacheSettings, PushSettings, ServerSettings, TransformSettings};
use crate::store::{FeatureColumn, KeyColumn, OnlineStoreSpec, StoreCatalog, ViewSchema};
use crate::types::{ScalarType, ValueType};

pub use rule::{FeatureStatus, ServingRule, StoredRow};

/// A validated name: 1 to 128 characters from `[A-Za-z0-9_-]`, starting with a letter or `_`.
/// Names become parts of online-store keys and metric labels, so they stay plain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>);

impl Name {
    /// Checks and wraps a name.
    pub fn new(s: &str) -> Result<Self, String> {
        let ok_first = s
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let ok_rest = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if s.is_empty() {
            Err("must not be empty".into())
        } else if s.len() > 128 {
            Err(format!("name {s:?} is longer than 128 characters"))
        } else if !ok_first || !ok_rest {
            Err(format!(
                "invalid name {s:?}: use letters, digits, '_' and '-', starting with a letter or '_'"
            ))
        } else {
            Ok(Name(Arc::from(s)))
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string (cheap to clone into keys and labels).
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A join key column and its type.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinKey {
    /// Column name (in requests, entity dataframes and Parquet sources).
    pub name: Name,
    /// `String`, `Int64`, `Int32` or `Bytes`.
    pub dtype: ScalarType,
}

/// An entity.
#[derive(Debug, Clone)]
pub struct Entity {
    /// Entity name.
    pub name: Name,
    /// Its join keys.
    pub join_keys: Vec<JoinKey>,
}

/// A named, typed field of a view.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Field name.
    pub name: Name,
    /// Declared type.
    pub dtype: ValueType,
}

/// Where a view's rows come from.
#[derive(Debug, Clone)]
pub struct ParquetSource {
    /// As written in the config (for messages).
    pub path_spec: String,
    /// Where it is: a file, a directory or a glob pattern (resolved against the config's
    /// directory), or an object-store URL of an object, a prefix or a glob.
    pub location: crate::storage::Location,
    /// Event timestamp column.
    pub timestamp_field: String,
    /// Created timestamp column, if any.
    pub created_timestamp_column: Option<String>,
}

impl ParquetSource {
    /// True when the source is a directory, so offline pushes can add files to it; a source that
    /// is one file or a glob (as a Feast file source is) takes online pushes only.
    pub fn is_directory(&self) -> bool {
        !(self.path_spec.ends_with(".parquet") || self.path_spec.contains(['*', '?', '[']))
    }
}

/// A feature view.
#[derive(Debug, Clone)]
pub struct FeatureView {
    /// View name.
    pub name: Name,
    /// Entity names, in order.
    pub entities: Vec<Name>,
    /// The join keys of those entities, in order: the view's entity key.
    pub join_keys: Vec<JoinKey>,
    /// The features.
    pub fields: Vec<Field>,
    /// Maximum age of a served value; `None` means never expires.
    pub ttl: Option<Duration>,
    /// Whether it is materialized and served online.
    pub online: bool,
    /// Its Parquet source.
    pub source: ParquetSource,
    /// L1 cache ttl for this view; `None` disables caching of this view.
    pub cache_ttl: Option<Duration>,
    /// Fingerprint of (field names, types); stored with every online record so that a reader
    /// never misreads a record written under another schema.
    pub schema_fingerprint: u32,
    /// Whether a stored row is usable at a time, and until when the store keeps it.
    pub rule: ServingRule,
}

impl FeatureView {
    /// Index of a field by name.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name.as_str() == name)
    }
}

/// An on-demand feature view: a transform over source views' features and request fields.
#[derive(Debug, Clone)]
pub struct OnDemandView {
    /// View name.
    pub name: Name,
    /// Transform module name (`<transforms.dir>/<transform>.wasm`).
    pub transform: Name,
    /// Indices into [`Registry::feature_views`] of its source views.
    pub sources: Vec<usize>,
    /// Fields sent by the client with the request.
    pub request_fields: Vec<Field>,
    /// Output fields.
    pub fields: Vec<Field>,
    /// The transform's inputs, in the order they are passed: every feature of every source view,
    /// then every request field. Serving and historical retrieval both build rows from this.
    pub inputs: Vec<OnDemandInput>,
    /// The input names, in [`OnDemandView::inputs`] order.
    pub input_names: Arc<[String]>,
    /// Fuel of one call whatever its rows.
    pub fuel_per_call: u64,
    /// Fuel added per input row of a call.
    pub fuel_per_row: u64,
    /// Wall-clock backstop on one call.
    pub timeout: Duration,
    /// Limit on linear memory, in bytes.
    pub max_memory_bytes: usize,
}

/// One input of an on-demand transform.
#[derive(Debug, Clone)]
pub struct OnDemandInput {
    /// Name the transform sees.
    pub name: Name,
    /// Its type.
    pub dtype: ValueType,
    /// Where the value comes from.
    pub source: OnDemandInputSource,
}

/// Where an on-demand input's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDemandInputSource {
    /// `feature_views[view].fields[field]`, passed only where it would be served (a usable row,
    /// see [`ServingRule::is_usable`]); otherwise null.
    Feature {
        /// Index into [`Registry::feature_views`].
        view: usize,
        /// Index into that view's fields.
        field: usize,
    },
    /// `request_fields[field]` of the on-demand view, sent by the client.
    Request {
        /// Index into [`OnDemandView::request_fields`].
        field: usize,
    },
}

/// Lays out the inputs of an on-demand view with `sources` and `request_fields`: every feature of
/// every source view, then every request field.
pub fn on_demand_inputs(
    feature_views: &[FeatureView],
    sources: &[usize],
    request_fields: &[Field],
) -> Vec<OnDemandInput> {
    let features = sources.iter().flat_map(|&view| {
        feature_views[view]
            .fields
            .iter()
            .enumerate()
            .map(move |(field, f)| OnDemandInput {
                name: f.name.clone(),
                dtype: f.dtype,
                source: OnDemandInputSource::Feature { view, field },
            })
    });
    let requests = request_fields
        .iter()
        .enumerate()
        .map(|(field, f)| OnDemandInput {
            name: f.name.clone(),
            dtype: f.dtype,
            source: OnDemandInputSource::Request { field },
        });
    features.chain(requests).collect()
}

/// A reference to one feature, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureRef {
    /// `feature_views[view].fields[field]`.
    View {
        /// Index into [`Registry::feature_views`].
        view: usize,
        /// Index into that view's fields.
        field: usize,
    },
    /// `on_demand_views[view].fields[field]`.
    OnDemand {
        /// Index into [`Registry::on_demand_views`].
        view: usize,
        /// Index into that view's output fields.
        field: usize,
    },
}

/// A feature service: a resolved list of features.
#[derive(Debug, Clone)]
pub struct FeatureService {
    /// Service name.
    pub name: Name,
    /// The features, in declaration order.
    pub features: Vec<FeatureRef>,
    /// Logging of served rows, with `destination` resolved against the registry's directory.
    pub logging: Option<crate::settings::FeatureLogSettings>,
}

/// A push source, resolved.
#[derive(Debug, Clone)]
pub struct PushSource {
    /// Push source name.
    pub name: Name,
    /// Index into [`Registry::feature_views`] of the view it feeds.
    pub view: usize,
}

/// The compiled registry.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Project name.
    pub project: Name,
    /// Entities.
    pub entities: Vec<Entity>,
    /// Feature views.
    pub feature_views: Vec<FeatureView>,
    /// On-demand feature views.
    pub on_demand_views: Vec<OnDemandView>,
    /// Feature services.
    pub feature_services: Vec<FeatureService>,
    /// Push sources.
    pub push_sources: Vec<PushSource>,
    /// Offline push settings.
    pub push: PushSettings,
    /// Online store settings (paths resolved).
    pub online_store: OnlineStoreSpec,
    /// How offline locations (paths and object-store URLs) are reached.
    pub offline: std::sync::Arc<crate::storage::OfflineStorage>,
    /// Server settings.
    pub server: ServerSettings,
    /// L1 cache settings.
    pub cache: CacheSettings,
    /// Transform settings (directory resolved).
    pub transforms: TransformSettings,
    /// Directory of `feature_store.yaml`.
    pub base_dir: PathBuf,
    /// `view:feature` → feature, for every feature of every view.
    pub feature_index: HashMap<String, FeatureRef>,
    /// Drift monitoring, when the `monitoring` section is present.
    pub monitoring: Option<Monitoring>,
}

/// The `monitoring` section, compiled: references resolved to the features they cover, profile
/// paths resolved against the directory of `feature_store.yaml`. The profiles themselves are read
/// when a server derives its serving state from the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Monitoring {
    /// Fraction of lookups whose served values are binned, in `(0, 1]`.
    pub sample_rate: f64,
    /// The sliding window.
    pub window: Duration,
    /// Sub-windows the window is kept as (the window divided by them is at least a second).
    pub sub_windows: usize,
    /// Values in the window below which a feature's scores are not computed.
    pub min_samples: u64,
    /// The references, in document order.
    pub references: Vec<MonitorReference>,
}

/// One monitoring reference: a set of served features and the profile they are compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorReference {
    /// What the reference names, for messages: `feature view "user_features"` or
    /// `feature service "fraud_model_v1"`.
    pub target: String,
    /// The features it covers (a view's features or a service's).
    pub features: Vec<FeatureRef>,
    /// The profile's path as written in `feature_store.yaml` (how it is shown).
    pub profile: String,
    /// The profile's path, resolved.
    pub path: PathBuf,
}

impl Registry {
    /// A feature view by name.
    pub fn view(&self, name: &str) -> Option<(usize, &FeatureView)> {
        self.feature_views
            .iter()
            .enumerate()
            .find(|(_, v)| v.name.as_str() == name)
    }

    /// An on-demand view by name.
    pub fn on_demand_view(&self, name: &str) -> Option<(usize, &OnDemandView)> {
        self.on_demand_views
            .iter()
            .enumerate()
            .find(|(_, v)| v.name.as_str() == name)
    }

    /// A push source by name.
    pub fn push_source(&self, name: &str) -> Option<&PushSource> {
        self.push_sources.iter().find(|p| p.name.as_str() == name)
    }

    /// Opens the online store of `online_store` for this registry's project and views.
    pub async fn open_store(
        &self,
        clock: crate::clock::SharedClock,
    ) -> Result<crate::store::SharedStore, crate::store::StoreError> {
        self.online_store
            .open(self.project.as_str(), &self.store_catalog(), clock)
            .await
    }

    /// What the online store is told about the views it holds: every feature view's join keys
    /// (in entity-key order) and features (in schema order), with their declared types.
    pub fn store_catalog(&self) -> Arc<StoreCatalog> {
        let mut catalog = StoreCatalog::default();
        for view in &self.feature_views {
            let schema = ViewSchema {
                join_keys: view
                    .join_keys
                    .iter()
                    .map(|k| KeyColumn {
                        name: k.name.as_arc().clone(),
                        dtype: k.dtype,
                    })
                    .collect(),
                features: view
                    .fields
                    .iter()
                    .map(|f| FeatureColumn {
                        name: f.name.as_arc().clone(),
                        dtype: f.dtype,
                    })
                    .collect(),
                schema_fingerprint: view.schema_fingerprint,
            };
            catalog.insert(view.name.as_arc().clone(), schema);
        }
        Arc::new(catalog)
    }

    /// A feature service by name.
    pub fn service(&self, name: &str) -> Option<&FeatureService> {
        self.feature_services
            .iter()
            .find(|s| s.name.as_str() == name)
    }

    /// Resolves `view:feature` (or a whole `view`, expanding to all its features) as written in a
    /// request, a feature service or the `historical` command.
    pub fn resolve_refs(&self, spec: &str) -> Result<Vec<FeatureRef>, String> {
        resolve_feature_spec(
            &self.feature_index,
            &self.feature_views,
            &self.on_demand_views,
            spec,
        )
    }

    /// `(view name, feature name)` of a resolved reference.
    pub fn ref_names(&self, r: FeatureRef) -> (&Name, &Field) {
        match r {
            FeatureRef::View { view, field } => {
                let v = &self.feature_views[view];
                (&v.name, &v.fields[field])
            }
            FeatureRef::OnDemand { view, field } => {
                let v = &self.on_demand_views[view];
                (&v.name, &v.fields[field])
            }
        }
    }
}

/// Resolves `view:feature`, or a whole `view` (all its features), against compiled views and
/// their feature index; the error says which part is unknown.
pub(crate) fn resolve_feature_spec(
    index: &HashMap<String, FeatureRef>,
    views: &[FeatureView],
    odfvs: &[OnDemandView],
    spec: &str,
) -> Result<Vec<FeatureRef>, String> {
    if let Some(r) = index.get(spec) {
        return Ok(vec![*r]);
    }
    if let Some((view, feature)) = spec.split_once(':') {
        return if views.iter().any(|v| v.name.as_str() == view)
            || odfvs.iter().any(|v| v.name.as_str() == view)
        {
            Err(format!(
                "feature view \"{view}\" has no feature \"{feature}\""
            ))
        } else {
            Err(format!("unknown feature view \"{view}\""))
        };
    }
    if let Some(i) = views.iter().position(|v| v.name.as_str() == spec) {
        return Ok((0..views[i].fields.len())
            .map(|field| FeatureRef::View { view: i, field })
            .collect());
    }
    if let Some(i) = odfvs.iter().position(|v| v.name.as_str() == spec) {
        return Ok((0..odfvs[i].fields.len())
            .map(|field| FeatureRef::OnDemand { view: i, field })
            .collect());
    }
    Err(format!("unknown feature view \"{spec}\""))
}
