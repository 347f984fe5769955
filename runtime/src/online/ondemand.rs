//! On-demand views at request time: one transform call per view per request, over all of its
//! entity rows, from the fetched source features and the request fields.
//!
//! Inputs follow the registry's compiled layout ([`crate::registry::OnDemandView::inputs`]), the
//! same one `quiver historical` uses. A source value is passed only where the serving rule allows
//! it to be served; missing, expired and null values all arrive as `None`, exactly as in batch.
//!
//! A failed call fails only the rows that fail on their own ([`LoadedModule::call_isolating`]):
//! their on-demand cells answer `TRANSFORM_ERROR` with a null value, everything else in the
//! response is intact. A module that is not loaded still fails the request (503).
//!
//! [`LoadedModule::call_isolating`]: crate::transform::LoadedModule::call_isolating

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use super::LookupError;
use super::request::{EntityColumn, EntityRows};
use crate::metrics::TransformMetrics;
use crate::registry::{OnDemandInputSource, Registry};
use crate::store::FeatureRow;
use crate::transform::ratelimit::LogLimiter;
use crate::transform::{Limits, LoadedModule, ModuleCatalog};
use crate::types::{EpochMicros, Value};

/// At most one log line per view per interval for failed calls; metrics count every one.
static FAILURE_LOG: LazyLock<LogLimiter> = LazyLock::new(LogLimiter::default);

/// Calls expected to spend at most this much fuel run as any other step of the request. Fuel
/// counts the instructions a call executes, so this keeps such a call to about a millisecond of
/// Wasm. With the default limits a single-row call qualifies before any call has run, and once
/// calls have run, any batch whose rows have cost under this much together.
const INLINE_MAX_FUEL: u64 = 2_000_000;

/// Runs a transform call on the request's own thread. A call expected to run longer (see
/// [`LoadedModule::expected_fuel`]) first hands this worker's other tasks to another thread
/// (`block_in_place`), so they are not held up while it runs; that hand-off wakes a thread and
/// costs tens of microseconds, more than a small batch's whole call. Either way the call starts
/// at once: handing it to another thread instead (`spawn_blocking`) costs two thread wake-ups,
/// and on a busy machine the wait for that thread to be scheduled (hundreds of microseconds)
/// dominates the call. A current-thread runtime has no other worker to hand tasks to, and runs
/// it in place.
///
/// The expectation only picks the thread: a module that turns expensive holds its worker for at
/// most one call's fuel before its calls move off the worker, and the fuel a call may spend, so
/// its result, is the same either way.
fn run_call<R>(expected_fuel: u64, call: impl FnOnce() -> R) -> R {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if expected_fuel > INLINE_MAX_FUEL && multi_thread {
        tokio::task::block_in_place(call)
    } else {
        call()
    }
}

/// The output of one on-demand view for a request: a row of values per entity row, and the
/// latest event timestamp among the source rows each was computed from.
pub struct Computed {
    /// One output row per entity row, values in output-field order (nulls for failed rows).
    pub rows: Arc<Vec<Vec<Value>>>,
    /// Per entity row.
    pub event_ts: Vec<EpochMicros>,
    /// Per entity row: whether the transform failed on it (its cells answer `TRANSFORM_ERROR`).
    pub failed: Vec<bool>,
    /// The module version that ran (its sha256 goes into the feature log).
    pub module: Arc<LoadedModule>,
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
    let limits = Limits::of_view(view);
    let names: Vec<&str> = view.input_names.iter().map(String::as_str).collect();
    let result = run_call(module.expected_fuel(&limits, n), || {
        module.call_isolating(&names, &inputs, &view.fields, &limits)
    });
    let view_name = view.name.as_str();
    metrics
        .call_seconds
        .with_label_values(&[view_name])
        .observe(started.elapsed().as_secs_f64());
    // Only an invalid input (a bug in building the rows) fails the whole call.
    let results = result.map_err(|e| LookupError::TransformFailed {
        message: format!("on-demand view \"{}\": {e}", view.name),
        timed_out: false,
    })?;
    let outcome = results.batch_error.as_ref().map_or("ok", |e| e.outcome());
    metrics.calls.with_label_values(&[view_name, outcome]).inc();
    let failed_rows = results.failed();
    if failed_rows > 0 {
        metrics
            .row_failures
            .with_label_values(&[view_name])
            .inc_by(failed_rows as u64);
        if let Some(suppressed) = FAILURE_LOG.admit(view_name) {
            let first = results
                .rows
                .iter()
                .find_map(|r| r.as_ref().err())
                .expect("a failed row");
            tracing::warn!(
                view = view_name,
                failed_rows,
                rows = n,
                error = %first,
                suppressed,
                "on-demand transform failed on some rows ({suppressed} more failures suppressed)"
            );
        }
    }
    let mut failed = Vec::with_capacity(n);
    let rows = results
        .rows
        .into_iter()
        .map(|r| {
            failed.push(r.is_err());
            r.unwrap_or_else(|_| vec![Value::Null; view.fields.len()])
        })
        .collect();
    Ok(Computed {
        rows: Arc::new(rows),
        event_ts,
        failed,
        module,
    })
}
