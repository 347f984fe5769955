//! What a caller asks `historical` for (the entity file, the features, the output path, the
//! budget) and what it reports back.

use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::storage::Location;

/// Default memory budget: 1 GiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 1 << 30;

/// The features to retrieve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureList {
    /// `view:feature` references (or whole views), in output order.
    Features(Vec<String>),
    /// A feature service, by name.
    Service(String),
}

/// What to build.
#[derive(Debug, Clone)]
pub struct HistoricalRequest {
    /// The entity dataframe: a Parquet file (local or an object) with the join keys and
    /// `event_timestamp`.
    pub entities: Location,
    /// The features.
    pub features: FeatureList,
    /// The Parquet file to write (local or an object).
    pub output: Location,
    /// Name feature columns `view__feature` instead of `feature`.
    pub full_feature_names: bool,
}

/// A training set built in memory ([`historical_in_memory`](super::historical_in_memory)): the
/// rows, and a schema whose metadata holds what a training set file's footer holds (the record
/// of how it was built and its profile).
#[derive(Debug, Clone)]
pub struct TrainingSet {
    /// The schema of every batch, with the training set's metadata.
    pub schema: SchemaRef,
    /// The rows, in the entity rows' order.
    pub batches: Vec<RecordBatch>,
}

/// How to build it.
#[derive(Debug, Clone)]
pub struct HistoricalOptions {
    /// Approximate bound on the memory held by the join, in bytes.
    pub memory_budget: usize,
    /// Worker threads; the number of cores when zero.
    pub threads: usize,
    /// Where temporary files go; the system temporary directory when `None`.
    pub temp_dir: Option<PathBuf>,
    /// Draw a progress bar on stderr (hidden when it is not a terminal).
    pub progress: bool,
    /// Rows per transform call for on-demand features.
    pub transform_batch_rows: usize,
}

impl Default for HistoricalOptions {
    fn default() -> Self {
        HistoricalOptions {
            memory_budget: DEFAULT_MEMORY_BUDGET,
            threads: 0,
            temp_dir: None,
            progress: false,
            transform_batch_rows: 4096,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoricalSummary {
    /// Entity rows written (every input row).
    pub rows: u64,
    /// Source rows read, over all views.
    pub source_rows: u64,
    /// Feature views joined.
    pub views: usize,
    /// Feature columns written.
    pub features: usize,
    /// Hash buckets used.
    pub buckets: usize,
    /// Whether intermediate data went to temporary files.
    pub spilled: bool,
    /// Seconds spent partitioning, joining and merging.
    pub join_seconds: f64,
    /// Seconds spent in on-demand transforms.
    pub transform_seconds: f64,
    /// (Entity row, on-demand view) pairs whose transform failed on that row; their output
    /// columns are null (online answers `TRANSFORM_ERROR` for the same rows).
    pub transform_failed_rows: u64,
    /// Seconds in total.
    pub seconds: f64,
    /// Source files and row groups read, and skipped as outside the entity rows' time range.
    pub pruning: crate::offline::source::PruneStats,
}
