//! `quiver historical`: point-in-time-correct training sets.
//!
//! For every row of an entity dataframe (join keys, `event_timestamp`, and any other columns,
//! which pass through) and every requested feature view, the value is taken from the latest
//! source row that the online path would have served at that time: a row with timestamp `ts` is
//! usable at `t` iff `ts <= t` and `t - ts <= ttl` (both ends inclusive; no ttl, no lower bound).
//! Among usable rows the greatest (event timestamp, created timestamp) wins, and between rows equal
//! in both the first in scan order wins, as in materialization. No usable row gives nulls.
//!
//! The engine partitions entity rows and source rows by a hash of the entity key into buckets
//! (in memory when the job fits the memory budget, in temporary files otherwise), joins each
//! bucket in memory on all cores, and merges the per-bucket results back into input order while
//! streaming the entity file again for its pass-through columns. `docs/historical.md` describes
//! the design and its memory bound.
//!
//! The steps, each in its own module: [`plan`] resolves the request against the registry,
//! [`entities`] checks the entity file, [`layout`] sizes the buckets, [`partition`], [`join`]
//! and [`merge`] (over [`spill`]) do the work, [`transform`] runs on-demand views, and
//! [`output`] writes the result. This module only runs them in order.

mod entities;
mod join;
mod layout;
mod merge;
mod output;
mod parallel;
mod partition;
mod plan;
mod request;
mod spill;
mod transform;

use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use crate::monitoring::META_PROFILE;
pub use entities::{EVENT_TIMESTAMP, EntityInput};
pub use output::{META_FEATURE_SERVICE, META_FEATURE_VIEWS, META_FEATURES, META_TRANSFORMS};
pub use request::{
    DEFAULT_MEMORY_BUDGET, FeatureList, HistoricalOptions, HistoricalRequest, HistoricalSummary,
    TrainingSet,
};

use super::OfflineError;
use crate::registry::Registry;
use entities::EntityFile;
use layout::Layout;
use output::{Asked, Sink};
use plan::Plan;

/// Builds a point-in-time-correct training set: every row of `request.entities`, in order, with
/// its pass-through columns and the requested features as of its `event_timestamp`, written to
/// `request.output` (atomically: a temporary file renamed into place).
pub fn historical(
    registry: &Registry,
    request: &HistoricalRequest,
    options: &HistoricalOptions,
) -> Result<HistoricalSummary, OfflineError> {
    let entities = EntityInput::File(request.entities.clone());
    let asked = Asked {
        entities: &entities,
        features: &request.features,
        full_feature_names: request.full_feature_names,
    };
    build(registry, &asked, Sink::File(&request.output), options).map(|(summary, _)| summary)
}

/// Builds a training set as [`historical`] does, from entity rows in a file or in memory, and
/// returns it in memory instead of writing a file: how the Python package hands Arrow data to
/// the engine and back without a file in between. The training set is the one [`historical`]
/// would write, with the file's key-value metadata in the schema's metadata.
pub fn historical_in_memory(
    registry: &Registry,
    entities: &EntityInput,
    features: &FeatureList,
    full_feature_names: bool,
    options: &HistoricalOptions,
) -> Result<(TrainingSet, HistoricalSummary), OfflineError> {
    let asked = Asked {
        entities,
        features,
        full_feature_names,
    };
    let (summary, set) = build(registry, &asked, Sink::Memory, options)?;
    Ok((
        set.expect("a memory sink returns the training set"),
        summary,
    ))
}

/// Runs the steps, writing the training set to `sink`.
fn build(
    registry: &Registry,
    request: &Asked<'_>,
    sink: Sink<'_>,
    options: &HistoricalOptions,
) -> Result<(HistoricalSummary, Option<TrainingSet>), OfflineError> {
    let started = Instant::now();
    let mut plan = Plan::new(registry, request.features, request.full_feature_names)?;
    transform::load_transforms(registry, &mut plan)?;
    if !request.full_feature_names {
        plan.check_unique_names()?;
    }
    let entities = EntityFile::open(request.entities, &plan)?;
    let pruning = plan.prune(entities.time_range)?;
    let (source_rows_estimate, estimate) = layout::estimate_bytes(&plan, &entities);
    let layout = Layout::new(&plan, estimate, options)?;
    tracing::debug!(
        estimate_bytes = estimate as u64,
        buckets = layout.buckets,
        spilled = layout.spill_dir.is_some(),
        "historical layout"
    );
    let bar = progress_bar(options.progress);

    // 1. Partition entity rows and source rows by entity key.
    bar.set_message("partitioning");
    bar.set_length(entities.rows() + source_rows_estimate);
    let phase = Instant::now();
    let partitioned = partition::partition(&plan, &entities, &layout, &bar)?;
    tracing::debug!(elapsed = ?phase.elapsed(), "historical: partitioned");

    // 2. Join each bucket.
    bar.set_message("joining");
    bar.set_position(0);
    bar.set_length((layout.buckets * plan.groups.len()) as u64);
    let phase = Instant::now();
    let results = join::join_all(&plan, &layout, partitioned, &bar)?;
    tracing::debug!(elapsed = ?phase.elapsed(), "historical: joined");

    // 3. Merge back into input order, with the pass-through columns, and write.
    bar.set_message("writing");
    bar.set_position(0);
    bar.set_length(entities.rows());
    let (rows, transform_seconds, transform_failed_rows, set) = output::write_output(
        registry, &plan, request, sink, &entities, results, &layout, options, &bar,
    )?;
    bar.finish_and_clear();
    let mut pruning = pruning;
    pruning.bytes_read = entities.bytes_read()
        + plan
            .views
            .iter()
            .flat_map(|vp| &vp.files)
            .map(|f| f.bytes_read())
            .sum::<u64>();
    let seconds = started.elapsed().as_secs_f64();
    let summary = HistoricalSummary {
        rows,
        source_rows: source_rows_estimate,
        views: plan.views.len(),
        features: plan.outputs.len(),
        buckets: layout.buckets,
        spilled: layout.spill_dir.is_some(),
        join_seconds: seconds - transform_seconds,
        transform_seconds,
        transform_failed_rows,
        seconds,
        pruning,
    };
    Ok((summary, set))
}

/// A progress bar on stderr, or a hidden one.
fn progress_bar(enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:24} [{bar:30}] {pos}/{len} ({per_sec})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}
