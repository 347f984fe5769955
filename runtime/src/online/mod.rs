//! Get online features: the lookup pipeline, with no transport in it.
//!
//! [`OnlineFeatures::get_online_features`] takes a decoded [`OnlineRequest`] and returns a typed
//! [`OnlineResponse`]. The steps, in order:
//!
//! 1. select the features (or feature service) against the prepared [`ServingPlan`];
//! 2. check the entity rows and build their entity keys, once per distinct join-key list;
//! 3. read every (view, entity) in one call to the online store (through the L1 cache);
//! 4. decide each value's status with the view's [`crate::registry::ServingRule`];
//! 5. run on-demand transforms over the fetched rows and the request fields;
//! 6. for a sampled fraction of lookups, bin the served values of monitored features
//!    ([`DriftMonitor`]).
//!
//! HTTP (`crate::serving`) is an adapter: read body, parse, call, render. Benchmarks and any
//! other transport call this same function.

mod drift;
mod error;
mod ondemand;
mod plan;
mod request;
mod response;

use std::borrow::Cow;
use std::sync::Arc;

pub use self::drift::{DriftMonitor, FeatureDrift, MonitoredFeature};
pub use self::error::LookupError;
pub use self::plan::{FeatureSelection, ServingPlan};
pub use self::request::{EntityColumn, EntityRows, OnlineRequest};
pub use self::response::{Cell, FeatureColumn, OnlineResponse};
use crate::clock::SharedClock;
use crate::entity_key::EntityKey;
use crate::metrics::{Metrics, ViewMetrics};
use crate::offline::feature_log::{FeatureLog, LoggedRow};
pub use crate::registry::FeatureStatus;
use crate::registry::{FeatureRef, JoinKey, Registry};
use crate::store::{RowKey, SharedStore};
use crate::transform::ModuleCatalog;
use crate::types::{Value, ValueType};

/// The online lookup service: the prepared plan, the store (behind the L1 cache when enabled),
/// the clock for ttl decisions, metrics and the loaded transform modules.
pub struct OnlineFeatures {
    plan: ServingPlan,
    store: SharedStore,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    /// Handles of the plan's views, indexed like `Registry::feature_views`.
    views: Vec<ViewMetrics>,
    transforms: Option<Arc<ModuleCatalog>>,
    /// Drift monitoring of served values, when the registry has a `monitoring` section.
    monitor: Option<Arc<DriftMonitor>>,
    /// Logging of served rows, when a feature service has a `logging` section.
    feature_log: Option<Arc<FeatureLog>>,
}

impl OnlineFeatures {
    /// Prepares lookups for `registry` over `store`.
    pub fn new(
        registry: Arc<Registry>,
        store: SharedStore,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        transforms: Option<Arc<ModuleCatalog>>,
    ) -> Self {
        OnlineFeatures {
            views: metrics.views_of(&registry),
            plan: ServingPlan::new(registry),
            store,
            clock,
            metrics,
            transforms,
            monitor: None,
            feature_log: None,
        }
    }

    /// Logs sampled rows of the feature services that have a `logging` section into `log`.
    pub fn with_feature_log(mut self, log: Option<Arc<FeatureLog>>) -> Self {
        self.feature_log = log;
        self
    }

    /// The feature log, when a feature service logs.
    pub fn feature_log(&self) -> Option<&Arc<FeatureLog>> {
        self.feature_log.as_ref()
    }

    /// Bins a sampled fraction of served values into `monitor`'s counters.
    pub fn with_monitor(mut self, monitor: Option<Arc<DriftMonitor>>) -> Self {
        self.monitor = monitor;
        self
    }

    /// The drift monitor, when the registry monitors features.
    pub fn monitor(&self) -> Option<&Arc<DriftMonitor>> {
        self.monitor.as_ref()
    }

    /// The registry lookups are served from.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.plan.registry
    }

    /// The prepared plan.
    pub fn plan(&self) -> &ServingPlan {
        &self.plan
    }

    /// The store lookups read (the L1 cache when it is enabled).
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The clock deciding ttl.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The metric handles of feature view `view` (an index into `Registry::feature_views`).
    pub fn view_metrics(&self, view: usize) -> &ViewMetrics {
        &self.views[view]
    }

    /// The loaded transform modules, when the registry has on-demand views.
    pub fn transforms(&self) -> Option<&Arc<ModuleCatalog>> {
        self.transforms.as_ref()
    }

    /// Looks up the requested features of every entity row.
    pub async fn get_online_features<'p, C: EntityColumn>(
        &'p self,
        request: &OnlineRequest<'_, C>,
    ) -> Result<OnlineResponse<'p>, LookupError> {
        let registry = &self.plan.registry;
        let selection = self
            .plan
            .select(request.features, request.feature_service)?;
        let rows = EntityRows::new(&request.entities, registry.server.max_entities)?;
        let n = rows.len;

        // Entity keys, once per distinct join-key list.
        let mut keys_by_group: Vec<Option<Vec<EntityKey>>> = vec![None; self.plan.key_groups.len()];
        for &v in &selection.views {
            let g = self.plan.view_key_group[v];
            if keys_by_group[g].is_none() {
                let view = &registry.feature_views[v];
                keys_by_group[g] = Some(entity_keys(
                    &rows,
                    &self.plan.key_groups[g],
                    view.name.as_str(),
                )?);
            }
        }

        // One store read for every (view, row).
        let stored = {
            let mut keys = Vec::with_capacity(selection.views.len() * n);
            for &v in &selection.views {
                let entities = keys_by_group[self.plan.view_key_group[v]]
                    .as_ref()
                    .expect("keys computed for every selected view");
                let view = registry.feature_views[v].name.as_str();
                keys.extend(entities.iter().map(|entity| RowKey { view, entity }));
            }
            if keys.is_empty() {
                Vec::new()
            } else {
                self.store.read(&keys).await?
            }
        };

        let now = self.clock.now_micros();
        // Freshness: the age of every row served, once per (view, entity).
        for (k, &v) in selection.views.iter().enumerate() {
            let age = &self.views[v].age_seconds;
            for row in stored[k * n..(k + 1) * n].iter().flatten() {
                age.observe((now - row.event_ts).max(0) as f64 / 1e6);
            }
        }

        let mut features: Vec<FeatureColumn<'p>> = Vec::with_capacity(selection.refs.len());
        let mut computed: Vec<Option<ondemand::Computed>> =
            (0..registry.on_demand_views.len()).map(|_| None).collect();
        for &r in &selection.refs {
            let (view_name, field) = registry.ref_names(r);
            let name: Cow<'p, str> = if request.full_feature_names {
                Cow::Owned(format!("{view_name}__{}", field.name))
            } else {
                Cow::Borrowed(field.name.as_str())
            };
            let column = match r {
                FeatureRef::View { view, field: fi } => {
                    let offset = selection.view_position(view) * n;
                    let cells = self.view_cells(view, fi, &stored[offset..offset + n], now);
                    FeatureColumn {
                        name,
                        dtype: field.dtype,
                        cells,
                        computed: None,
                    }
                }
                FeatureRef::OnDemand { view, field: fi } => {
                    if computed[view].is_none() {
                        let source_rows = |s: usize| {
                            let k = selection.view_position(s);
                            &stored[k * n..(k + 1) * n]
                        };
                        computed[view] = Some(
                            ondemand::compute(
                                registry,
                                view,
                                self.transforms.as_deref(),
                                &self.metrics.transforms,
                                &rows,
                                source_rows,
                                now,
                            )
                            .await?,
                        );
                    }
                    let out = computed[view].as_ref().expect("computed above");
                    let cells = out
                        .rows
                        .iter()
                        .zip(&out.event_ts)
                        .zip(&out.failed)
                        .map(|((values, &event_ts), &failed)| Cell {
                            row: None,
                            index: fi,
                            status: if failed {
                                FeatureStatus::TransformError
                            } else if values[fi].is_null() {
                                FeatureStatus::NullValue
                            } else {
                                FeatureStatus::Present
                            },
                            event_ts,
                        })
                        .collect();
                    FeatureColumn {
                        name,
                        dtype: field.dtype,
                        cells,
                        computed: Some(Arc::clone(&out.rows)),
                    }
                }
            };
            features.push(column);
        }
        if !request.full_feature_names {
            for (i, c) in features.iter().enumerate() {
                if features[..i].iter().any(|d| d.name == c.name) || rows.column(&c.name).is_some()
                {
                    return Err(LookupError::InvalidRequest(format!(
                        "feature name \"{}\" appears twice in the response; set \"full_feature_names\": true",
                        c.name
                    )));
                }
            }
        }
        if let Some(monitor) = &self.monitor
            && monitor.sampled()
        {
            monitor.record(&selection.refs, &features, now);
        }
        let request_id = match (&self.feature_log, selection.service) {
            (Some(log), Some(service)) if log.service(service).is_some() => {
                let group = self.plan.view_key_group[selection.views[0]];
                let keys = keys_by_group[group]
                    .as_deref()
                    .expect("keys computed for every selected view");
                log_sampled_rows(log, service, &rows, keys, &features, &computed, now)
            }
            _ => None,
        };
        let echoed = request
            .entities
            .iter()
            .map(|(name, _)| self.plan.echoes_column(name))
            .collect();
        Ok(OnlineResponse {
            echoed,
            features,
            request_id,
        })
    }

    /// The cells of feature `field` of view `view`, from its stored rows, counted by status.
    fn view_cells(
        &self,
        view: usize,
        field: usize,
        stored: &[Option<Arc<crate::store::FeatureRow>>],
        now: crate::types::EpochMicros,
    ) -> Vec<Cell> {
        let rule = &self.plan.registry.feature_views[view].rule;
        let mut counts = [0u64; FeatureStatus::ALL.len()];
        let cells: Vec<Cell> = stored
            .iter()
            .map(|row| {
                let value_is_null = row
                    .as_ref()
                    .is_none_or(|r| r.values.get(field).is_none_or(|v| v.is_null()));
                let status = rule.status(row.as_deref().map(|r| r.meta()), value_is_null, now);
                counts[status.index()] += 1;
                match row {
                    Some(row) if status != FeatureStatus::NotFound => Cell {
                        status,
                        event_ts: row.event_ts,
                        row: Some(Arc::clone(row)),
                        index: field,
                    },
                    _ => Cell {
                        row: None,
                        index: field,
                        status,
                        event_ts: 0,
                    },
                }
            })
            .collect();
        for (counter, count) in self.views[view].statuses.iter().zip(counts) {
            if count > 0 {
                counter.inc_by(count);
            }
        }
        cells
    }
}

/// Copies the rows of a lookup whose entity is sampled by `service`'s log into it, and returns
/// the lookup's request id when a row was (an unsampled lookup allocates nothing).
fn log_sampled_rows<C: EntityColumn>(
    log: &FeatureLog,
    service: usize,
    rows: &EntityRows<'_, C>,
    sample_keys: &[EntityKey],
    features: &[FeatureColumn<'_>],
    computed: &[Option<ondemand::Computed>],
    now: crate::types::EpochMicros,
) -> Option<Arc<str>> {
    let service_log = log.service(service).expect("checked by the caller");
    let mut request_id: Option<Arc<str>> = None;
    let layout = &service_log.layout;
    let mut sampled = Vec::new();
    let mut modules: Option<Arc<[Option<Arc<str>>]>> = None;
    for (r, key) in sample_keys.iter().enumerate() {
        if !service_log.samples(key.as_bytes()) {
            continue;
        }
        let modules = modules
            .get_or_insert_with(|| {
                layout
                    .transform_views
                    .iter()
                    .map(|&v| {
                        computed[v]
                            .as_ref()
                            .map(|c| Arc::from(c.module.sha256.as_str()))
                    })
                    .collect()
            })
            .clone();
        let value_of = |name: &str, dtype: ValueType| {
            rows.column(name)
                .and_then(|c| c.value(r, dtype).ok())
                .unwrap_or(Value::Null)
        };
        let id = request_id.get_or_insert_with(|| log.request_id());
        sampled.push(LoggedRow {
            request_id: Arc::clone(id),
            row: r as u32,
            request_ts: now,
            keys: layout
                .join_keys
                .iter()
                .map(|k| value_of(k.name.as_str(), ValueType::Scalar(k.dtype)))
                .collect(),
            request_fields: layout
                .request_fields
                .iter()
                .map(|(name, dtype)| value_of(name, *dtype))
                .collect(),
            features: features
                .iter()
                .map(|column| {
                    let cell = &column.cells[r];
                    (
                        column.value(r).cloned().unwrap_or(Value::Null),
                        cell.status,
                        cell.event_ts,
                    )
                })
                .collect(),
            modules,
        });
    }
    log.submit(service, sampled);
    request_id
}

/// Builds the entity keys of one join-key group for every row.
pub fn entity_keys<C: EntityColumn>(
    rows: &EntityRows<'_, C>,
    join_keys: &[JoinKey],
    view_name: &str,
) -> Result<Vec<EntityKey>, LookupError> {
    let mut cols = Vec::with_capacity(join_keys.len());
    for jk in join_keys {
        let col = rows.column(jk.name.as_str()).ok_or_else(|| {
            LookupError::InvalidRequest(format!(
                "missing entity column \"{}\" (a join key of feature view \"{view_name}\")",
                jk.name
            ))
        })?;
        cols.push(col);
    }
    let mut keys = Vec::with_capacity(rows.len);
    let mut buf = Vec::with_capacity(16);
    let mut scratch = Vec::new();
    for r in 0..rows.len {
        buf.clear();
        for (col, jk) in cols.iter().zip(join_keys) {
            let part = col.key_part(r, jk.dtype, &mut scratch).map_err(|m| {
                LookupError::InvalidEntity(format!("entities.{}[{r}]: {m}", jk.name))
            })?;
            EntityKey::push_part(&mut buf, part);
        }
        keys.push(EntityKey::from_encoded(buf.clone()));
    }
    Ok(keys)
}
