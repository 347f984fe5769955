//! `POST /get-online-features`: parse, resolve, one store read, statuses, Feast-shaped JSON.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value as Json;

use super::error::ApiError;
use super::json::{json_kind, key_part, write_str, write_timestamp, write_value};
use crate::entity_key::EntityKey;
pub use crate::registry::FeatureStatus;
use crate::registry::{FeatureRef, Registry};
use crate::store::{FeatureRow, RowKey};
use crate::types::{EpochMicros, ValueType};

/// The request body, in Feast's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineRequest<'a> {
    /// `view:feature` references.
    #[serde(default, borrow)]
    pub features: Option<Vec<Cow<'a, str>>>,
    /// A feature service name, instead of `features`.
    #[serde(default, borrow)]
    pub feature_service: Option<Cow<'a, str>>,
    /// Column-oriented entity rows: join keys and request fields, each a list of equal length.
    pub entities: serde_json::Map<String, Json>,
    /// Name features `view__feature` instead of `feature`.
    #[serde(default)]
    pub full_feature_names: bool,
}

/// A resolved list of features with the views it needs; precomputed for feature services.
#[derive(Debug, Clone)]
pub struct FeatureSelection {
    /// The features, in response order.
    pub refs: Vec<FeatureRef>,
    /// Feature views to read, deduplicated (sources of on-demand views included).
    pub views: Vec<usize>,
}

impl FeatureSelection {
    /// Builds the selection for `refs`.
    pub fn new(registry: &Registry, refs: Vec<FeatureRef>) -> Self {
        let mut views = Vec::new();
        for r in &refs {
            match *r {
                FeatureRef::View { view, .. } => {
                    if !views.contains(&view) {
                        views.push(view);
                    }
                }
                FeatureRef::OnDemand { view, .. } => {
                    for &s in &registry.on_demand_views[view].sources {
                        if !views.contains(&s) {
                            views.push(s);
                        }
                    }
                }
            }
        }
        FeatureSelection { refs, views }
    }
}

/// Everything the request path needs from the registry, prepared once at start-up.
#[derive(Debug)]
pub struct ServingPlan {
    /// The registry.
    pub registry: Arc<Registry>,
    /// Per feature view, the index of its join-key list in `key_groups` (views sharing join keys
    /// share entity keys, computed once per request).
    pub view_key_group: Vec<usize>,
    /// Distinct join-key lists.
    pub key_groups: Vec<Vec<crate::registry::JoinKey>>,
    /// Feature services, resolved.
    pub services: HashMap<String, Arc<FeatureSelection>>,
}

impl ServingPlan {
    /// Prepares the plan for a registry.
    pub fn new(registry: Arc<Registry>) -> Self {
        let mut key_groups: Vec<Vec<crate::registry::JoinKey>> = Vec::new();
        let mut view_key_group = Vec::new();
        for v in &registry.feature_views {
            let g = match key_groups.iter().position(|g| *g == v.join_keys) {
                Some(g) => g,
                None => {
                    key_groups.push(v.join_keys.clone());
                    key_groups.len() - 1
                }
            };
            view_key_group.push(g);
        }
        let services = registry
            .feature_services
            .iter()
            .map(|s| {
                (
                    s.name.to_string(),
                    Arc::new(FeatureSelection::new(&registry, s.features.clone())),
                )
            })
            .collect();
        ServingPlan {
            registry,
            view_key_group,
            key_groups,
            services,
        }
    }

    /// Resolves the request's features (or feature service).
    pub fn select(&self, request: &OnlineRequest<'_>) -> Result<Arc<FeatureSelection>, ApiError> {
        match (&request.features, &request.feature_service) {
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "give either \"features\" or \"feature_service\", not both",
            )),
            (None, None) => Err(ApiError::bad_request(
                "missing \"features\" (a list of \"view:feature\") or \"feature_service\"",
            )),
            (None, Some(name)) => {
                self.services.get(name.as_ref()).cloned().ok_or_else(|| {
                    ApiError::not_found(format!("unknown feature service \"{name}\""))
                })
            }
            (Some(features), None) => {
                if features.is_empty() {
                    return Err(ApiError::bad_request("\"features\" is empty"));
                }
                let mut refs = Vec::with_capacity(features.len());
                for spec in features {
                    match self.registry.feature_index.get(spec.as_ref()) {
                        Some(r) => refs.push(*r),
                        None => refs.extend(
                            self.registry
                                .resolve_refs(spec)
                                .map_err(ApiError::not_found)?,
                        ),
                    }
                }
                Ok(Arc::new(FeatureSelection::new(&self.registry, refs)))
            }
        }
    }
}

/// The entity rows of a request, checked: equal lengths, within limits.
pub struct EntityRows<'r> {
    /// Columns in request order: name and values.
    pub columns: Vec<(&'r str, &'r [Json])>,
    /// Number of rows.
    pub len: usize,
}

impl<'r> EntityRows<'r> {
    /// Checks the `entities` object.
    pub fn new(
        entities: &'r serde_json::Map<String, Json>,
        max_entities: usize,
    ) -> Result<Self, ApiError> {
        if entities.is_empty() {
            return Err(ApiError::bad_request(
                "\"entities\" is empty: give at least one join key column",
            ));
        }
        let mut columns = Vec::with_capacity(entities.len());
        let mut len = None;
        for (name, values) in entities {
            let Json::Array(values) = values else {
                return Err(ApiError::bad_request(format!(
                    "entities.{name} must be a list of values, got {}",
                    json_kind(values)
                )));
            };
            match len {
                None => len = Some(values.len()),
                Some(n) if n != values.len() => {
                    return Err(ApiError::bad_request(format!(
                        "entity columns have unequal lengths: {} has {} values, {} has {n}",
                        name,
                        values.len(),
                        columns
                            .first()
                            .map(|(n, _): &(&str, &[Json])| *n)
                            .unwrap_or("?"),
                    )));
                }
                Some(_) => {}
            }
            columns.push((name.as_str(), values.as_slice()));
        }
        let len = len.unwrap_or(0);
        if len > max_entities {
            return Err(ApiError::too_large(format!(
                "{len} entity rows requested; the limit is {max_entities} (server.max_entities)"
            )));
        }
        Ok(EntityRows { columns, len })
    }

    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&'r [Json]> {
        self.columns
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

/// Builds the entity keys of one join-key group for every row.
pub fn entity_keys(
    rows: &EntityRows<'_>,
    join_keys: &[crate::registry::JoinKey],
    view_name: &str,
) -> Result<Vec<EntityKey>, ApiError> {
    let mut cols = Vec::with_capacity(join_keys.len());
    for jk in join_keys {
        let col = rows.column(jk.name.as_str()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "missing entity column \"{}\" (a join key of feature view \"{view_name}\")",
                jk.name
            ))
        })?;
        cols.push(col);
    }
    let mut keys = Vec::with_capacity(rows.len);
    let mut buf = Vec::with_capacity(16);
    let mut bytes = Vec::new();
    for r in 0..rows.len {
        buf.clear();
        for (col, jk) in cols.iter().zip(join_keys) {
            let part = key_part(&col[r], jk.dtype, &mut bytes)
                .map_err(|m| ApiError::invalid_entity(format!("entities.{}[{r}]: {m}", jk.name)))?;
            EntityKey::push_part(&mut buf, part);
        }
        keys.push(EntityKey::from_encoded(buf.clone()));
    }
    Ok(keys)
}

/// One feature column of the response.
pub struct FeatureColumn<'a> {
    /// Output name.
    pub name: Cow<'a, str>,
    /// Declared type (for rendering).
    pub dtype: ValueType,
    /// One cell per entity row.
    pub cells: Vec<Cell>,
    /// For on-demand features: the transform's output rows, shared by the view's columns.
    pub computed: Option<Arc<Vec<Vec<crate::types::Value>>>>,
}

/// One response cell.
#[derive(Clone)]
pub struct Cell {
    /// The stored row the value comes from; `None` for NOT_FOUND and for on-demand features.
    pub row: Option<Arc<FeatureRow>>,
    /// Index into `row.values` (or into the computed row for on-demand features).
    pub index: usize,
    /// Status.
    pub status: FeatureStatus,
    /// Event timestamp reported.
    pub event_ts: EpochMicros,
}

/// Collects the store reads of a request: one key per (view, row).
pub fn read_keys<'k>(
    registry: &'k Registry,
    selection: &FeatureSelection,
    plan: &ServingPlan,
    keys_by_group: &'k [Option<Vec<EntityKey>>],
    rows: usize,
) -> Vec<RowKey<'k>> {
    let mut out = Vec::with_capacity(selection.views.len() * rows);
    for &v in &selection.views {
        let keys = keys_by_group[plan.view_key_group[v]]
            .as_ref()
            .expect("keys computed for every selected view");
        let view = registry.feature_views[v].name.as_str();
        out.extend(keys.iter().map(|entity| RowKey { view, entity }));
    }
    out
}

/// Renders the Feast response: `metadata.feature_names`, then one result per column.
pub fn render_response(rows: &EntityRows<'_>, features: &[FeatureColumn<'_>]) -> Vec<u8> {
    let n = rows.len;
    let mut out = Vec::with_capacity(128 + n * (rows.columns.len() + features.len()) * 48);
    out.extend_from_slice(b"{\"metadata\":{\"feature_names\":[");
    let names = rows
        .columns
        .iter()
        .map(|(name, _)| *name)
        .chain(features.iter().map(|f| f.name.as_ref()));
    for (i, name) in names.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(&mut out, name);
    }
    out.extend_from_slice(b"]},\"results\":[");
    const EPOCH: &[u8] = b"\"1970-01-01T00:00:00Z\"";
    let mut first = true;
    for (_, values) in &rows.columns {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"values\":");
        serde_json::to_writer(&mut out, values).expect("writing to a Vec cannot fail");
        out.extend_from_slice(b",\"statuses\":[");
        join_repeat(&mut out, b"\"PRESENT\"", n);
        out.extend_from_slice(b"],\"event_timestamps\":[");
        join_repeat(&mut out, EPOCH, n);
        out.extend_from_slice(b"]}");
    }
    for f in features {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"values\":[");
        for (r, cell) in f.cells.iter().enumerate() {
            if r > 0 {
                out.push(b',');
            }
            match (cell.status, &cell.row) {
                (FeatureStatus::Present, Some(row)) => {
                    write_value(&mut out, &row.values[cell.index], f.dtype)
                }
                (FeatureStatus::Present, None) => {
                    match f.computed.as_ref().and_then(|c| c.get(r)) {
                        Some(values) => write_value(&mut out, &values[cell.index], f.dtype),
                        None => out.extend_from_slice(b"null"),
                    }
                }
                _ => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b"],\"statuses\":[");
        for (r, cell) in f.cells.iter().enumerate() {
            if r > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(cell.status.as_str().as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b"],\"event_timestamps\":[");
        for (r, cell) in f.cells.iter().enumerate() {
            if r > 0 {
                out.push(b',');
            }
            if cell.event_ts == 0 {
                out.extend_from_slice(EPOCH);
            } else {
                write_timestamp(&mut out, cell.event_ts);
            }
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}");
    out
}

fn join_repeat(out: &mut Vec<u8>, item: &[u8], n: usize) {
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
}
