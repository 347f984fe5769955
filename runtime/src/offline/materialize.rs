//! Materialization: copy the latest value of every entity in a time window from a view's Parquet
//! source into the online store.
//!
//! Per entity key, the row kept is the one with the greatest (event timestamp, created timestamp)
//! within `[start, end]`, both ends inclusive. It is written under the store's newer-wins rule, so
//! an older window materialized after a newer one changes nothing. Rows whose record would already
//! have expired (event time + ttl + slack in the past) are not written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::OfflineError;
use super::source::{
    PruneStats, ScanOptions, TimeWindow, prune, scan_view_file_with, source_files,
};
use crate::clock::SharedClock;
use crate::entity_key::EntityKey;
use crate::registry::{FeatureView, Registry};
use crate::store::{FeatureRow, RowWrite, SharedStore, WriteOutcome};
use crate::types::EpochMicros;

/// Records written per store call.
const WRITE_CHUNK: usize = 1000;

/// What to materialize.
#[derive(Debug, Clone)]
pub struct MaterializeRequest {
    /// Window start (inclusive); `None` for incremental runs (from the view's watermark).
    pub start: Option<EpochMicros>,
    /// Window end (inclusive).
    pub end: EpochMicros,
    /// Views to materialize; all online views when empty.
    pub views: Vec<String>,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

/// What materializing one view did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSummary {
    /// The view.
    pub view: String,
    /// Window start used.
    pub start: EpochMicros,
    /// Window end used.
    pub end: EpochMicros,
    /// Source rows read.
    pub rows_read: u64,
    /// Distinct entities whose latest row in the window was found.
    pub entities: u64,
    /// Records stored.
    pub written: u64,
    /// Records the store already held a newer (or equal) value for.
    pub skipped_older: u64,
    /// Records not written because they would already have expired.
    pub skipped_expired: u64,
    /// Source rows ignored because a join key or the event timestamp was null.
    pub skipped_null: u64,
    /// Files and row groups read, and skipped as outside the window.
    pub pruning: PruneStats,
}

/// Materializes the requested views. Incremental runs (no `start`) begin at each view's watermark,
/// or at `end - ttl` (the epoch for views without ttl) when the view was never materialized, and
/// move the watermark to `end` when they succeed.
pub async fn materialize(
    registry: &Registry,
    store: &SharedStore,
    clock: &SharedClock,
    request: &MaterializeRequest,
) -> Result<Vec<ViewSummary>, OfflineError> {
    let views = select_views(registry, &request.views)?;
    let mut summaries = Vec::new();
    for view in views {
        let start = match request.start {
            Some(s) => s,
            None => match store.watermark(view.name.as_str()).await? {
                Some(w) => w,
                None => view
                    .rule
                    .ttl_micros()
                    .map_or(i64::MIN, |t| request.end.saturating_sub(t)),
            },
        };
        let summary =
            materialize_view(view, store, clock, start, request.end, request.progress).await?;
        if request.start.is_none() {
            store.set_watermark(view.name.as_str(), request.end).await?;
        }
        summaries.push(summary);
    }
    Ok(summaries)
}

fn select_views<'r>(
    registry: &'r Registry,
    names: &[String],
) -> Result<Vec<&'r FeatureView>, OfflineError> {
    if names.is_empty() {
        return Ok(registry.feature_views.iter().filter(|v| v.online).collect());
    }
    names
        .iter()
        .map(|n| match registry.view(n) {
            Some((_, v)) if v.online => Ok(v),
            Some(_) => Err(OfflineError::Other(format!(
                "feature view \"{n}\" is not online (online: false)"
            ))),
            None => Err(OfflineError::Other(format!("unknown feature view \"{n}\""))),
        })
        .collect()
}

/// The latest row of one entity seen so far.
struct Latest {
    event_ts: EpochMicros,
    created_ts: EpochMicros,
    values: Vec<crate::types::Value>,
}

async fn materialize_view(
    view: &FeatureView,
    store: &SharedStore,
    clock: &SharedClock,
    start: EpochMicros,
    end: EpochMicros,
    progress: bool,
) -> Result<ViewSummary, OfflineError> {
    let started = Instant::now();
    // Listing, footers and data are blocking I/O (files or objects): off the async workers.
    let scan_view = view.clone();
    let scan_bar = bar_for(progress, view.name.as_str());
    let bar = scan_bar.clone();
    let (latest, rows_read, skipped_null, pruning) = tokio::task::spawn_blocking(move || {
        let files = source_files(&scan_view.source)?;
        let window = TimeWindow {
            start: (start > i64::MIN).then_some(start),
            end: Some(end),
        };
        let (scans, pruning) = prune(&scan_view, &files, window)?;
        scan_bar.set_length(scans.iter().flat_map(|s| &s.row_groups).map(|g| g.2).sum());
        let mut latest: HashMap<EntityKey, Latest> = HashMap::new();
        let (mut rows_read, mut skipped_null) = (0u64, 0u64);
        for scan in &scans {
            let options = ScanOptions {
                row_groups: Some(scan.row_groups.iter().map(|g| g.0).collect()),
                ..ScanOptions::default()
            };
            scan_view_file_with(&scan_view, &scan.file, &options, |batch| {
                for row in 0..batch.len() {
                    let (Some(ts), Some(key)) = (batch.event_ts(row), batch.entity_key(row)) else {
                        skipped_null += 1;
                        continue;
                    };
                    if ts < start || ts > end {
                        continue;
                    }
                    let created = batch.created_ts(row);
                    match latest.get_mut(&key) {
                        Some(l) if (ts, created) <= (l.event_ts, l.created_ts) => {}
                        Some(l) => {
                            *l = Latest {
                                event_ts: ts,
                                created_ts: created,
                                values: batch.values(row),
                            };
                        }
                        None => {
                            latest.insert(
                                key,
                                Latest {
                                    event_ts: ts,
                                    created_ts: created,
                                    values: batch.values(row),
                                },
                            );
                        }
                    }
                }
                rows_read += batch.len() as u64;
                scan_bar.inc(batch.len() as u64);
                Ok(())
            })?;
        }
        let mut pruning = pruning;
        pruning.bytes_read = files.iter().map(|f| f.bytes_read()).sum();
        Ok::<_, OfflineError>((latest, rows_read, skipped_null, pruning))
    })
    .await
    .map_err(|e| OfflineError::Other(format!("materialization task failed: {e}")))??;

    let now = clock.now_micros();
    let view_name: Arc<str> = Arc::clone(view.name.as_arc());
    let entities = latest.len() as u64;
    let mut outcome = WriteOutcome::default();
    let mut skipped_expired = 0u64;
    let mut chunk = Vec::with_capacity(WRITE_CHUNK);
    bar.set_message(format!("{}: writing", view.name));
    for (entity, l) in latest {
        if view.rule.is_expired_for_store(l.event_ts, now) {
            skipped_expired += 1;
            continue;
        }
        chunk.push(RowWrite {
            view: Arc::clone(&view_name),
            entity,
            row: FeatureRow {
                event_ts: l.event_ts,
                created_ts: l.created_ts,
                schema_fingerprint: view.schema_fingerprint,
                values: l.values,
            },
            expire_at: view.rule.expire_at(l.event_ts),
        });
        if chunk.len() == WRITE_CHUNK {
            outcome += store.write(&chunk).await?;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        outcome += store.write(&chunk).await?;
    }
    bar.finish_and_clear();
    tracing::debug!(view = %view.name, elapsed = ?started.elapsed(), "materialized");
    Ok(ViewSummary {
        view: view.name.to_string(),
        start,
        end,
        rows_read,
        entities,
        written: outcome.written as u64,
        skipped_older: outcome.skipped_older as u64,
        skipped_expired,
        skipped_null,
        pruning,
    })
}

fn bar_for(enabled: bool, view: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:24} [{bar:30}] {pos}/{len} rows ({per_sec})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("{view}: reading"));
    bar
}
