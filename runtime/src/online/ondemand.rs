//! On-demand views at request time: one transform call per view per request, over all of its
//! entity rows, from the fetched source features and the request fields.
//!
//! Inputs follow the registry's compiled layout ([`crate::registry::OnDemandView::inputs`]), the
//! same one `quiver historical` uses. A source value is passed only where the serving rule allows
//! it to be served; missing, expired and null values all arrive as `None`, exactly as in batch.

use std::sync::Arc;
use std::time::Instant;

use super::LookupError;
use super::request::{EntityColumn, EntityRows};
use crate::metrics::TransformMetrics;
use crate::registry::{OnDemandInputSource, Registry};
use crate::store::FeatureRow;
use crate::transform::{Limits, ModuleCatalog, TransformError};
use crate::types::{EpochMicros, Value};

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
pub(super) async fn compute<'s, C: EntityColumn>(
    registry: &Arc<Registry>,
    index: usize,
    transforms: Option<&ModuleCatalog>,
    metrics: &TransformMetrics,
    rows: &EntityRows<'_, C>,
    source_rows: impl Fn(usize) -> &'s [Option<Arc<FeatureRow>>],
    now: EpochMicros,
) -> Result<Computed, LookupError> {
    let view = &registry.on_demand_views[index];
    let module = transforms.and_then(|t| t.get(view.transform.as_str())).ok_or_else(|| {
        LookupError::TransformUnavailable(format!(
            "on-demand view \"{}\": transform module \"{}\" is not loaded (expected {}.wasm in the transforms directory)",
            view.name, view.transform, view.transform
        ))
    })?;

    // Request fields, checked before anything runs.
    let mut request_columns: Vec<&C> = Vec::with_capacity(view.request_fields.len());
    for f in &view.request_fields {
        let column = rows.column(f.name.as_str()).ok_or_else(|| {
            LookupError::InvalidRequest(format!(
                "missing request field \"{}\" (needed by on-demand view \"{}\"); send it in \"entities\"",
                f.name, view.name
            ))
        })?;
        request_columns.push(column);
    }

    let n = rows.len;
    let mut inputs: Vec<Vec<Value>> = (0..n)
        .map(|_| Vec::with_capacity(view.inputs.len()))
        .collect();
    let mut event_ts = vec![0; n];
    // The source rows each entity row may use, by the serving rule.
    let usable: Vec<Vec<Option<&FeatureRow>>> = view
        .sources
        .iter()
        .map(|&s| {
            let rule = &registry.feature_views[s].rule;
            source_rows(s)
                .iter()
                .map(|stored| {
                    stored
                        .as_deref()
                        .filter(|row| rule.is_usable(row.meta(), now))
                })
                .collect()
        })
        .collect();
    for (r, ts) in event_ts.iter_mut().enumerate() {
        for source in &usable {
            if let Some(row) = source[r] {
                *ts = (*ts).max(row.event_ts);
            }
        }
    }
    for input in &view.inputs {
        match input.source {
            OnDemandInputSource::Feature { view: s, field } => {
                let k = view
                    .sources
                    .iter()
                    .position(|&x| x == s)
                    .expect("an input's view is a source");
                for (r, row_inputs) in inputs.iter_mut().enumerate() {
                    row_inputs.push(
                        usable[k][r]
                            .and_then(|row| row.values.get(field).cloned())
                            .unwrap_or(Value::Null),
                    );
                }
            }
            OnDemandInputSource::Request { field } => {
                let column = request_columns[field];
                for (r, row_inputs) in inputs.iter_mut().enumerate() {
                    let v = column.value(r, input.dtype).map_err(|m| {
                        LookupError::InvalidEntity(format!("entities.{}[{r}]: {m}", input.name))
                    })?;
                    row_inputs.push(v);
                }
            }
        }
    }

    let started = Instant::now();
    let call_registry = Arc::clone(registry);
    // A call is CPU-bound and bounded by its limits: run it off the async workers.
    let result = tokio::task::spawn_blocking(move || {
        let view = &call_registry.on_demand_views[index];
        let names: Vec<&str> = view.input_names.iter().map(String::as_str).collect();
        module.call(&names, &inputs, &view.fields, &Limits::of_view(view))
    })
    .await
    .map_err(|e| LookupError::TransformFailed {
        message: format!("on-demand view \"{}\": {e}", view.name),
        timed_out: false,
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
            Err(LookupError::TransformFailed {
                message: format!("on-demand view \"{}\": {e}", view.name),
                timed_out: matches!(e, TransformError::Timeout { .. }),
            })
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
