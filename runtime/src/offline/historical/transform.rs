//! On-demand features: loading each view's transform module and running it over output batches.
//!
//! Rows fail exactly as online: a failed call is retried row by row
//! ([`crate::transform::LoadedModule::call_isolating`]), and a row that fails on its own gets null
//! for every output column of its view; the run counts them
//! ([`super::HistoricalSummary::transform_failed_rows`]) and goes on.

use std::sync::LazyLock;

use arrow::array::{ArrayRef, RecordBatch};

use super::plan::{InputSource, OnDemandPlan, Plan};
use crate::offline::OfflineError;
use crate::offline::columns::value_at;
use crate::registry::Registry;
use crate::transform::ratelimit::LogLimiter;
use crate::transform::{Limits, RowResults, TransformEngine};

/// At most one log line per view per interval for output batches with failed rows.
static FAILURE_LOG: LazyLock<LogLimiter> = LazyLock::new(LogLimiter::default);
use crate::types::{Value, ValueType};

/// Loads the transform module of every planned on-demand view from
/// `<transforms.dir>/<transform>.wasm`.
pub(super) fn load_transforms(
    registry: &Registry,
    plan: &mut Plan<'_>,
) -> Result<(), OfflineError> {
    if plan.on_demand.is_empty() {
        return Ok(());
    }
    let engine = TransformEngine::new().map_err(|e| OfflineError::Transform {
        view: plan.on_demand[0].view.name.to_string(),
        source: e,
    })?;
    for od in &mut plan.on_demand {
        let path = registry
            .transforms
            .dir
            .join(format!("{}.wasm", od.view.transform));
        let bytes = std::fs::read(&path).map_err(|e| OfflineError::Source {
            path: path.display().to_string(),
            message: format!(
                "cannot read the transform module of on-demand view \"{}\": {e}",
                od.view.name
            ),
        })?;
        let module = engine
            .load(od.view.transform.as_str(), &bytes)
            .map_err(|e| OfflineError::Transform {
                view: od.view.name.to_string(),
                source: e,
            })?;
        od.module = Some(module);
    }
    Ok(())
}

/// Runs an on-demand view's transform over one output batch, in calls of `batch_rows` rows spread
/// over `threads` threads; returns one output row per entity row (nulls where the transform
/// failed on that row) and the number of failed rows.
pub(super) fn run_transform(
    od: &OnDemandPlan<'_>,
    requests: &[usize],
    entity_batch: &RecordBatch,
    joined: &[Vec<ArrayRef>],
    batch_rows: usize,
    threads: usize,
) -> Result<(Vec<Vec<Value>>, u64), OfflineError> {
    let module = od
        .module
        .as_ref()
        .expect("transforms are loaded before the join");
    let names: Vec<&str> = od.inputs.iter().map(|i| i.name.as_str()).collect();
    let mut request_columns = requests.iter();
    let columns: Vec<(&dyn arrow::array::Array, ValueType)> = od
        .inputs
        .iter()
        .map(|input| match input.source {
            InputSource::Joined { group, column } => (joined[group][column].as_ref(), input.dtype),
            InputSource::Request => (
                entity_batch
                    .column(*request_columns.next().expect("request column"))
                    .as_ref(),
                input.dtype,
            ),
        })
        .collect();
    let n = entity_batch.num_rows();
    let rows: Vec<Vec<Value>> = (0..n)
        .map(|r| {
            columns
                .iter()
                .map(|(col, dtype)| value_at(*col, *dtype, r))
                .collect()
        })
        .collect();
    let limits = Limits::of_view(od.view);
    let chunks: Vec<&[Vec<Value>]> = rows.chunks(batch_rows.max(1)).collect();
    let mut outputs: Vec<Option<Result<RowResults, OfflineError>>> =
        (0..chunks.len()).map(|_| None).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<parking_lot::Mutex<&mut Option<_>>> =
        outputs.iter_mut().map(parking_lot::Mutex::new).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.min(chunks.len()).max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= chunks.len() {
                        return;
                    }
                    let result = module
                        .call_isolating(&names, chunks[i], &od.view.fields, &limits)
                        .map_err(|e| OfflineError::Transform {
                            view: od.view.name.to_string(),
                            source: e,
                        });
                    **slots[i].lock() = Some(result);
                }
            });
        }
    });
    drop(slots);
    let mut out = Vec::with_capacity(n);
    let mut failed = 0u64;
    let mut first_error = None;
    for result in outputs {
        for row in result.expect("every chunk ran")?.rows {
            out.push(row.unwrap_or_else(|e| {
                failed += 1;
                first_error.get_or_insert(e);
                vec![Value::Null; od.view.fields.len()]
            }));
        }
    }
    if let Some(e) = first_error
        && let Some(suppressed) = FAILURE_LOG.admit(od.view.name.as_str())
    {
        tracing::warn!(
            view = %od.view.name,
            failed_rows = failed,
            error = %e,
            suppressed,
            "on-demand transform failed on some rows; their features are null ({suppressed} more failures suppressed)"
        );
    }
    Ok((out, failed))
}
