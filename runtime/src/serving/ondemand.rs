//! On-demand views at request time: one transform call per view per request, over all of its
//! entity rows, from the fetched source features and the request fields sent in `entities`.
//!
//! Inputs are named by feature: every feature of every source view, then every request field. A
//! source value is passed only where it would be served (`PRESENT`): missing, expired (past the
//! view's ttl) and null values all arrive as `None`, exactly as `quiver historical` passes them,
//! so training and serving compute from the same inputs.

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use serde_json::Value as Json;

use super::error::ApiError;
use super::json::value_from_json;
use super::online::EntityRows;
use crate::metrics::TransformMetrics;
use crate::registry::{OnDemandView, Registry};
use crate::store::FeatureRow;
use crate::transform::{Limits, ModuleCatalog, TransformError};
use crate::types::{EpochMicros, Value};

/// The precomputed input layout of one on-demand view.
#[derive(Debug)]
pub struct OnDemandPlan {
    /// Input names, in order: source features, then request fields.
    pub input_names: Vec<String>,
    /// Limits of one call.
    pub limits: Limits,
}

impl OnDemandPlan {
    /// Lays out the inputs of `view`.
    pub fn new(_registry: &Registry, view: &OnDemandView) -> Self {
        OnDemandPlan {
            input_names: view.input_names.to_vec(),
            limits: Limits::of_view(view),
        }
    }
}

/// The output of one on-demand view for a request: a row of values per entity row, and the
/// latest event timestamp among the source rows each was computed from.
pub struct Computed {
    /// One output row per entity row, values in output-field order.
    pub rows: Arc<Vec<Vec<Value>>>,
    /// Per entity row.
    pub event_ts: Vec<EpochMicros>,
}

/// Runs the transform of on-demand view `index` for every entity row of a request.
///
/// `source_rows(view)` gives the stored rows of a source feature view, one per entity row.
#[allow(clippy::too_many_arguments)]
pub async fn compute<'s>(
    registry: &Registry,
    index: usize,
    plan: &OnDemandPlan,
    transforms: Option<&ModuleCatalog>,
    metrics: &TransformMetrics,
    rows: &EntityRows<'_>,
    source_rows: impl Fn(usize) -> &'s [Option<Arc<FeatureRow>>],
    now: EpochMicros,
) -> Result<Computed, ApiError> {
    let view = &registry.on_demand_views[index];
    let module = transforms.and_then(|t| t.get(view.transform.as_str())).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TRANSFORM_UNAVAILABLE",
            format!(
                "on-demand view \"{}\": transform module \"{}\" is not loaded (expected {}.wasm in the transforms directory)",
                view.name, view.transform, view.transform
            ),
        )
    })?;

    // Request fields, checked before anything runs.
    let mut request_columns: Vec<&[Json]> = Vec::with_capacity(view.request_fields.len());
    for f in &view.request_fields {
        let column = rows.column(f.name.as_str()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "missing request field \"{}\" (needed by on-demand view \"{}\"); send it in \"entities\"",
                f.name, view.name
            ))
        })?;
        request_columns.push(column);
    }

    let n = rows.len;
    let mut inputs: Vec<Vec<Value>> = (0..n)
        .map(|_| Vec::with_capacity(plan.input_names.len()))
        .collect();
    let mut event_ts = vec![0; n];
    for &s in &view.sources {
        let source = &registry.feature_views[s];
        for (r, stored) in source_rows(s).iter().enumerate() {
            let usable = stored
                .as_ref()
                .filter(|row| source.rule.is_usable(row.meta(), now));
            match usable {
                Some(row) => {
                    event_ts[r] = event_ts[r].max(row.event_ts);
                    inputs[r].extend(row.values.iter().cloned());
                }
                None => inputs[r].extend(std::iter::repeat_n(Value::Null, source.fields.len())),
            }
        }
    }
    for (column, f) in request_columns.iter().zip(&view.request_fields) {
        for (r, input) in inputs.iter_mut().enumerate() {
            let v = value_from_json(&column[r], f.dtype)
                .map_err(|m| ApiError::invalid_entity(format!("entities.{}[{r}]: {m}", f.name)))?;
            input.push(v);
        }
    }

    let names: Vec<String> = plan.input_names.clone();
    let fields = view.fields.clone();
    let limits = plan.limits;
    let started = Instant::now();
    // A call is CPU-bound and bounded by its time limit: run it off the async workers.
    let result = tokio::task::spawn_blocking(move || {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        module.call(&names, &inputs, &fields, &limits)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "TRANSFORM_FAILED",
            e.to_string(),
        )
    })?;
    let view_name = view.name.as_str();
    metrics
        .call_seconds
        .with_label_values(&[view_name])
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(out) => {
            metrics.calls.with_label_values(&[view_name, "ok"]).inc();
            Ok(Computed {
                rows: Arc::new(out),
                event_ts,
            })
        }
        Err(e) => {
            metrics
                .calls
                .with_label_values(&[view_name, outcome(&e)])
                .inc();
            tracing::warn!(view = view_name, error = %e, "on-demand transform failed");
            let status = if matches!(e, TransformError::Timeout { .. }) {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            Err(ApiError::new(
                status,
                "TRANSFORM_FAILED",
                format!("on-demand view \"{}\": {e}", view.name),
            ))
        }
    }
}

/// The metric label of a failed call.
fn outcome(e: &TransformError) -> &'static str {
    match e {
        TransformError::Trap { .. } => "trap",
        TransformError::Timeout { .. } => "timeout",
        TransformError::OutOfMemory { .. } => "out_of_memory",
        TransformError::SchemaMismatch { .. } => "schema_mismatch",
        TransformError::BadOutput { .. } => "bad_output",
        TransformError::Guest { .. } => "guest_error",
        _ => "error",
    }
}
