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

mod join;
mod merge;
mod partition;
mod spill;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde_json::json;

use super::OfflineError;
use super::columns::{
    arrow_type, build_column, check_column, check_scalar, check_timestamp, value_at,
};
use super::source::source_files;
use crate::registry::{
    FeatureRef, FeatureView, JoinKey, OnDemandInputSource, OnDemandView, Registry,
};
use crate::transform::{Limits, LoadedModule, TransformEngine};
use crate::types::{ScalarType, Value, ValueType};

/// The name of the entity dataframe's timestamp column.
pub const EVENT_TIMESTAMP: &str = "event_timestamp";

/// Parquet key-value metadata key: the feature views used, as JSON.
pub const META_FEATURE_VIEWS: &str = "quiver.feature_views";
/// Parquet key-value metadata key: the requested features (`view:feature`), as a JSON list.
pub const META_FEATURES: &str = "quiver.features";
/// Parquet key-value metadata key: the feature service, when one was requested.
pub const META_FEATURE_SERVICE: &str = "quiver.feature_service";
/// Parquet key-value metadata key: the transform modules used, `{name: sha256}`, as JSON.
pub const META_TRANSFORMS: &str = "quiver.transforms";

/// Default memory budget: 1 GiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 1 << 30;

/// Rows per batch when reading the entity file and writing the output.
const OUTPUT_BATCH_ROWS: usize = 8192;

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
    /// The entity dataframe: a Parquet file with the join keys and `event_timestamp`.
    pub entities: PathBuf,
    /// The features.
    pub features: FeatureList,
    /// The Parquet file to write.
    pub output: PathBuf,
    /// Name feature columns `view__feature` instead of `feature`.
    pub full_feature_names: bool,
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
    /// Seconds in total.
    pub seconds: f64,
}

/// One feature view to join.
struct ViewPlan<'r> {
    view: &'r FeatureView,
    /// Key group index.
    group: usize,
    /// Indices of the fields to read, ascending.
    fields: Vec<usize>,
    files: Vec<PathBuf>,
}

/// Views sharing one join-key list share entity keys and buckets.
struct GroupPlan {
    join_keys: Vec<JoinKey>,
    /// Indices into `Plan::views`.
    views: Vec<usize>,
}

/// Where an output column comes from.
#[derive(Clone, Copy)]
enum OutputSource {
    /// A key group's joined results, at a column position (after the row index).
    Joined { group: usize, column: usize },
    /// An on-demand view's output field.
    OnDemand { plan: usize, field: usize },
}

/// One output feature column.
struct OutputColumn {
    name: String,
    dtype: ValueType,
    source: OutputSource,
}

/// One input of a transform: a joined feature or an entity dataframe column.
struct TransformInput {
    name: String,
    dtype: ValueType,
    source: InputSource,
}

#[derive(Clone, Copy)]
enum InputSource {
    Joined {
        group: usize,
        column: usize,
    },
    /// A request field, from the entity dataframe column of the same name (located when the
    /// entity file is opened: [`EntityFile::requests`]).
    Request,
}

/// One on-demand view to compute.
struct OnDemandPlan<'r> {
    view: &'r OnDemandView,
    /// Its source views' features (by plain name), then its request fields.
    inputs: Vec<TransformInput>,
    module: Option<Arc<LoadedModule>>,
}

struct Plan<'r> {
    specs: Vec<String>,
    views: Vec<ViewPlan<'r>>,
    groups: Vec<GroupPlan>,
    outputs: Vec<OutputColumn>,
    on_demand: Vec<OnDemandPlan<'r>>,
}

impl<'r> Plan<'r> {
    fn new(
        registry: &'r Registry,
        list: &FeatureList,
        full_names: bool,
    ) -> Result<Self, OfflineError> {
        let refs: Vec<FeatureRef> = match list {
            FeatureList::Service(name) => registry
                .service(name)
                .ok_or_else(|| OfflineError::Other(format!("unknown feature service \"{name}\"")))?
                .features
                .clone(),
            FeatureList::Features(specs) => {
                if specs.is_empty() {
                    return Err(OfflineError::Other("no features requested".into()));
                }
                let mut refs = Vec::new();
                for s in specs {
                    refs.extend(registry.resolve_refs(s).map_err(OfflineError::Other)?);
                }
                refs
            }
        };
        let mut plan = Plan {
            specs: Vec::new(),
            views: Vec::new(),
            groups: Vec::new(),
            outputs: Vec::new(),
            on_demand: Vec::new(),
        };
        let mut by_view: HashMap<usize, usize> = HashMap::new();
        let mut by_odfv: HashMap<usize, usize> = HashMap::new();
        // Per reference: (planned view, field) or (on-demand plan, field).
        let mut wanted: Vec<OutputSource> = Vec::new();
        for r in &refs {
            let (view_name, field) = registry.ref_names(*r);
            plan.specs.push(format!("{view_name}:{}", field.name));
            match *r {
                FeatureRef::View { view, field } => {
                    let p = plan.view_plan(registry, &mut by_view, view)?;
                    if !plan.views[p].fields.contains(&field) {
                        plan.views[p].fields.push(field);
                    }
                    wanted.push(OutputSource::Joined {
                        group: p,
                        column: field,
                    });
                }
                FeatureRef::OnDemand { view, field } => {
                    let odfv = &registry.on_demand_views[view];
                    let o = match by_odfv.get(&view) {
                        Some(&o) => o,
                        None => {
                            // A transform sees every feature of its source views.
                            for &s in &odfv.sources {
                                let p = plan.view_plan(registry, &mut by_view, s)?;
                                plan.views[p].fields =
                                    (0..registry.feature_views[s].fields.len()).collect();
                            }
                            plan.on_demand.push(OnDemandPlan {
                                view: odfv,
                                inputs: Vec::new(),
                                module: None,
                            });
                            by_odfv.insert(view, plan.on_demand.len() - 1);
                            plan.on_demand.len() - 1
                        }
                    };
                    wanted.push(OutputSource::OnDemand { plan: o, field });
                }
            }
        }
        for v in &mut plan.views {
            v.fields.sort_unstable();
            v.fields.dedup();
        }
        for (r, w) in refs.iter().zip(wanted) {
            let (view_name, f) = registry.ref_names(*r);
            let source = match w {
                // `group` holds the planned view until here.
                OutputSource::Joined {
                    group: p,
                    column: field,
                } => {
                    let (group, column) = plan.joined_column(p, field);
                    OutputSource::Joined { group, column }
                }
                on_demand => on_demand,
            };
            plan.outputs.push(OutputColumn {
                name: if full_names {
                    format!("{view_name}__{}", f.name)
                } else {
                    f.name.to_string()
                },
                dtype: f.dtype,
                source,
            });
        }
        for o in 0..plan.on_demand.len() {
            let odfv = plan.on_demand[o].view;
            // The registry's layout, shared with serving: where each input is in the join.
            let inputs = odfv
                .inputs
                .iter()
                .map(|input| TransformInput {
                    name: input.name.to_string(),
                    dtype: input.dtype,
                    source: match input.source {
                        OnDemandInputSource::Feature { view, field } => {
                            let (group, column) = plan.joined_column(by_view[&view], field);
                            InputSource::Joined { group, column }
                        }
                        OnDemandInputSource::Request { .. } => InputSource::Request,
                    },
                })
                .collect();
            plan.on_demand[o].inputs = inputs;
        }
        Ok(plan)
    }

    /// The planned view for registry view `view`, planning it (and its key group) if needed.
    fn view_plan(
        &mut self,
        registry: &'r Registry,
        by_view: &mut HashMap<usize, usize>,
        view: usize,
    ) -> Result<usize, OfflineError> {
        if let Some(&p) = by_view.get(&view) {
            return Ok(p);
        }
        let v = &registry.feature_views[view];
        let group = match self.groups.iter().position(|g| g.join_keys == v.join_keys) {
            Some(g) => g,
            None => {
                self.groups.push(GroupPlan {
                    join_keys: v.join_keys.clone(),
                    views: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        self.groups[group].views.push(self.views.len());
        self.views.push(ViewPlan {
            view: v,
            group,
            fields: Vec::new(),
            files: source_files(&v.source)?,
        });
        by_view.insert(view, self.views.len() - 1);
        Ok(self.views.len() - 1)
    }

    /// Where field `field` of planned view `p` lands: its key group and column in the group's
    /// joined results.
    fn joined_column(&self, p: usize, field: usize) -> (usize, usize) {
        let vp = &self.views[p];
        let mut column = 0;
        for &q in &self.groups[vp.group].views {
            if q == p {
                column += vp.fields.iter().position(|&x| x == field).expect("planned");
                break;
            }
            column += self.views[q].fields.len();
        }
        (vp.group, column)
    }

    /// The Arrow schema of a key group's joined results: row index, then its views' fields.
    fn result_schema(&self, group: usize) -> SchemaRef {
        let mut fields = vec![Field::new("row", DataType::UInt64, false)];
        for &p in &self.groups[group].views {
            let v = &self.views[p];
            for &f in &v.fields {
                let field = &v.view.fields[f];
                fields.push(Field::new(
                    format!("{}__{}", v.view.name, field.name),
                    arrow_type(field.dtype),
                    true,
                ));
            }
        }
        Arc::new(Schema::new(fields))
    }
}

/// The entity dataframe, checked.
struct EntityFile {
    path: PathBuf,
    schema: SchemaRef,
    /// Index of `event_timestamp`.
    ts: usize,
    /// Per key group, the indices of its join-key columns.
    keys: Vec<Vec<usize>>,
    /// Per on-demand view, the indices of its request-field columns, in input order.
    requests: Vec<Vec<usize>>,
    /// Rows per row group.
    row_groups: Vec<u64>,
}

fn open_parquet(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, OfflineError> {
    let f = File::open(path).map_err(|e| OfflineError::Source {
        path: path.to_path_buf(),
        message: format!("cannot open: {e}"),
    })?;
    ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| OfflineError::Source {
        path: path.to_path_buf(),
        message: format!("not a readable Parquet file: {e}"),
    })
}

impl EntityFile {
    fn open(path: &Path, plan: &Plan<'_>) -> Result<Self, OfflineError> {
        let builder = open_parquet(path)?;
        let schema = builder.schema().clone();
        let find = |name: &str, why: &str| {
            schema.index_of(name).map_err(|_| OfflineError::ColumnType {
                file: path.to_path_buf(),
                column: name.to_string(),
                message: format!("is missing ({why})"),
            })
        };
        let ts = find(
            EVENT_TIMESTAMP,
            "the time each row's features are wanted at",
        )?;
        check_timestamp(schema.field(ts).data_type()).map_err(|m| OfflineError::ColumnType {
            file: path.to_path_buf(),
            column: EVENT_TIMESTAMP.into(),
            message: m,
        })?;
        let mut keys = Vec::new();
        for g in &plan.groups {
            let view = plan.views[g.views[0]].view;
            let mut cols = Vec::new();
            for jk in &g.join_keys {
                let i = find(
                    jk.name.as_str(),
                    &format!("a join key of feature view \"{}\"", view.name),
                )?;
                check_scalar(schema.field(i).data_type(), jk.dtype).map_err(|m| {
                    OfflineError::ColumnType {
                        file: path.to_path_buf(),
                        column: jk.name.to_string(),
                        message: format!("{m} (join key of feature view \"{}\")", view.name),
                    }
                })?;
                cols.push(i);
            }
            keys.push(cols);
        }
        let mut requests = Vec::new();
        for od in &plan.on_demand {
            let mut cols = Vec::new();
            for input in &od.inputs {
                if let InputSource::Request = input.source {
                    let why = format!("a request field of on-demand view \"{}\"", od.view.name);
                    let i = find(&input.name, &why)?;
                    check_column(schema.field(i).data_type(), input.dtype).map_err(|m| {
                        OfflineError::ColumnType {
                            file: path.to_path_buf(),
                            column: input.name.clone(),
                            message: format!("{m} ({why})"),
                        }
                    })?;
                    cols.push(i);
                }
            }
            requests.push(cols);
        }
        for out in &plan.outputs {
            if schema.index_of(&out.name).is_ok() {
                return Err(OfflineError::Other(format!(
                    "{}: feature column \"{}\" clashes with a column of the entity dataframe; \
                     use full feature names",
                    path.display(),
                    out.name
                )));
            }
        }
        let row_groups = builder
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows().max(0) as u64)
            .collect();
        Ok(EntityFile {
            path: path.to_path_buf(),
            schema,
            ts,
            keys,
            requests,
            row_groups,
        })
    }

    fn rows(&self) -> u64 {
        self.row_groups.iter().sum()
    }

    /// A reader of some columns (by schema index) of some row groups; the columns come back in
    /// ascending schema order.
    fn reader(
        &self,
        columns: Option<&[usize]>,
        row_groups: Option<Vec<usize>>,
        batch_rows: usize,
    ) -> Result<ParquetRecordBatchReader, OfflineError> {
        let builder = open_parquet(&self.path)?;
        let mask = match columns {
            Some(c) => ProjectionMask::roots(builder.parquet_schema(), c.iter().copied()),
            None => ProjectionMask::all(),
        };
        let mut builder = builder.with_projection(mask).with_batch_size(batch_rows);
        if let Some(g) = row_groups {
            builder = builder.with_row_groups(g);
        }
        builder.build().map_err(|e| OfflineError::Source {
            path: self.path.clone(),
            message: format!("cannot read: {e}"),
        })
    }

    fn read_error(&self, e: impl std::fmt::Display) -> OfflineError {
        OfflineError::Source {
            path: self.path.clone(),
            message: format!("cannot read: {e}"),
        }
    }
}

/// Approximate in-memory bytes per row of a column of `dtype`, from the Parquet footer.
fn value_bytes(dtype: ValueType, parquet_bytes_per_row: f64) -> f64 {
    match dtype {
        ValueType::Scalar(ScalarType::Int64 | ScalarType::Float64 | ScalarType::UnixTimestamp) => {
            8.0
        }
        ValueType::Scalar(ScalarType::Int32 | ScalarType::Float32) => 4.0,
        ValueType::Scalar(ScalarType::Bool) => 1.0,
        // Dictionary encoding makes Parquet smaller than Arrow; assume at least 16 bytes.
        _ => 8.0 + parquet_bytes_per_row.max(16.0),
    }
}

/// Uncompressed Parquet bytes per row of each named top-level column, over some files.
fn parquet_column_bytes(files: &[PathBuf], columns: &[&str]) -> (u64, Vec<f64>) {
    let mut rows = 0u64;
    let mut bytes = vec![0u64; columns.len()];
    for file in files {
        let Ok(builder) = File::open(file)
            .map_err(|_| ())
            .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).map_err(|_| ()))
        else {
            continue;
        };
        for rg in builder.metadata().row_groups() {
            rows += rg.num_rows().max(0) as u64;
            for cc in rg.columns() {
                let root = cc.column_path().parts().first().map(String::as_str);
                if let Some(i) = columns.iter().position(|c| Some(*c) == root) {
                    bytes[i] += cc.uncompressed_size().max(0) as u64;
                }
            }
        }
    }
    let per_row = bytes
        .iter()
        .map(|&b| {
            if rows == 0 {
                0.0
            } else {
                b as f64 / rows as f64
            }
        })
        .collect();
    (rows, per_row)
}

fn key_bytes(join_keys: &[JoinKey], per_row: &[f64]) -> f64 {
    join_keys
        .iter()
        .zip(per_row)
        .map(|(jk, &b)| match jk.dtype {
            ScalarType::String | ScalarType::Bytes => 5.0 + b.max(8.0),
            _ => 9.0,
        })
        .sum::<f64>()
        + 4.0
}

/// Estimated bytes the join holds in memory if nothing is spilled.
fn estimate_bytes(plan: &Plan<'_>, entities: &EntityFile) -> (u64, f64) {
    let mut total = 0.0;
    let mut source_rows = 0u64;
    for vp in &plan.views {
        let mut names: Vec<&str> = vp.view.join_keys.iter().map(|k| k.name.as_str()).collect();
        let nkeys = names.len();
        names.extend(vp.fields.iter().map(|&f| vp.view.fields[f].name.as_str()));
        let (rows, per_row) = parquet_column_bytes(&vp.files, &names);
        source_rows += rows;
        let features: f64 = vp
            .fields
            .iter()
            .zip(&per_row[nkeys..])
            .map(|(&f, &b)| value_bytes(vp.view.fields[f].dtype, b))
            .sum();
        // Timestamps, sequence number, and the 24-byte sort entry of the join.
        total += rows as f64
            * (key_bytes(&vp.view.join_keys, &per_row[..nkeys]) + 24.0 + 24.0 + features);
    }
    let entity_rows = entities.rows() as f64;
    let (_, per_row) = parquet_column_bytes(
        std::slice::from_ref(&entities.path),
        &entities
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
    );
    for (g, group) in plan.groups.iter().enumerate() {
        let kb: Vec<f64> = entities.keys[g].iter().map(|&i| per_row[i]).collect();
        total += entity_rows * (key_bytes(&group.join_keys, &kb) + 16.0 + 8.0);
    }
    for out in &plan.outputs {
        total += entity_rows * value_bytes(out.dtype, 16.0);
    }
    (source_rows, total)
}

/// How the join is laid out: bucket count, spilling, batch sizes.
struct Layout {
    buckets: usize,
    spill_dir: Option<tempfile::TempDir>,
    threads: usize,
    /// Rows a worker buffers per bucket before appending them to the bucket.
    flush_rows: usize,
    /// Rows per frame of joined results (what the final merge holds per bucket).
    merge_rows: usize,
}

/// Largest number of buckets; beyond it buckets grow past the budget.
const MAX_BUCKETS: usize = 16384;

fn layout(
    plan: &Plan<'_>,
    estimate: f64,
    options: &HistoricalOptions,
) -> Result<Layout, OfflineError> {
    let threads = if options.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        options.threads
    };
    let budget = options.memory_budget.max(1) as f64;
    let inputs = (plan.groups.len() + plan.views.len()).max(1) as f64;
    if estimate <= budget / 2.0 {
        // Everything fits: keep buckets in memory, a few per thread so all cores join.
        return Ok(Layout {
            buckets: threads * 4,
            spill_dir: None,
            threads,
            flush_rows: 8192,
            merge_rows: 8192,
        });
    }
    // Each thread joins one bucket at a time; a bucket must fit its share of half the budget
    // (the other half covers buffers and the merge).
    let buckets =
        ((estimate / (budget / 2.0 / threads as f64)).ceil() as usize).clamp(threads, MAX_BUCKETS);
    if buckets == MAX_BUCKETS {
        tracing::warn!(
            "the entity and source data are large for the memory budget; buckets will exceed it"
        );
    }
    let dir = match &options.temp_dir {
        Some(d) => tempfile::Builder::new()
            .prefix("quiver-historical-")
            .tempdir_in(d),
        None => tempfile::Builder::new()
            .prefix("quiver-historical-")
            .tempdir(),
    }
    .map_err(|e| OfflineError::Source {
        path: options.temp_dir.clone().unwrap_or_else(std::env::temp_dir),
        message: format!("cannot create a temporary directory: {e}"),
    })?;
    // Write buffers: a quarter of the budget over threads × inputs × buckets, ~100 bytes a row.
    let flush_rows = ((budget / 4.0 / (threads as f64 * inputs * buckets as f64 * 100.0)) as usize)
        .clamp(64, 8192);
    let merge_rows = ((budget / 4.0 / (plan.groups.len().max(1) as f64 * buckets as f64 * 100.0))
        as usize)
        .clamp(16, 8192);
    Ok(Layout {
        buckets,
        spill_dir: Some(dir),
        threads,
        flush_rows,
        merge_rows,
    })
}

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

/// Runs `work(state, unit)` for units `0..units` on `threads` threads, each with its own state
/// from `init`, handed to `finish` when the thread runs out of units. Stops at the first error.
fn parallel<S>(
    threads: usize,
    units: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, usize) -> Result<(), OfflineError> + Sync,
    finish: impl Fn(S) -> Result<(), OfflineError> + Sync,
) -> Result<(), OfflineError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let error = parking_lot::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(units).max(1) {
            scope.spawn(|| {
                let mut state = init();
                let result = (|| {
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        let unit = next.fetch_add(1, Ordering::Relaxed);
                        if unit >= units {
                            return Ok(());
                        }
                        work(&mut state, unit)?;
                    }
                })()
                .and_then(|()| finish(state));
                if let Err(e) = result {
                    failed.store(true, Ordering::Relaxed);
                    error.lock().get_or_insert(e);
                }
            });
        }
    });
    match error.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn metadata(registry: &Registry, plan: &Plan<'_>, request: &HistoricalRequest) -> Vec<KeyValue> {
    let views: Vec<_> = plan
        .views
        .iter()
        .map(|vp| {
            let v = vp.view;
            json!({
                "name": v.name.as_str(),
                "entities": v.entities.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
                "join_keys": v.join_keys.iter().map(|k| json!({
                    "name": k.name.as_str(),
                    "dtype": k.dtype.name(),
                })).collect::<Vec<_>>(),
                "fields": v.fields.iter().map(|f| json!({
                    "name": f.name.as_str(),
                    "dtype": f.dtype.to_string(),
                })).collect::<Vec<_>>(),
                "ttl_seconds": v.ttl.map(|t| t.as_secs_f64()),
                "source": {
                    "path": v.source.path_spec,
                    "timestamp_field": v.source.timestamp_field,
                    "created_timestamp_column": v.source.created_timestamp_column,
                },
            })
        })
        .collect();
    let mut kv = vec![
        KeyValue::new(
            META_FEATURE_VIEWS.to_string(),
            serde_json::to_string(&views).expect("JSON"),
        ),
        KeyValue::new(
            META_FEATURES.to_string(),
            serde_json::to_string(&plan.specs).expect("JSON"),
        ),
        KeyValue::new("quiver.project".to_string(), registry.project.to_string()),
        KeyValue::new(
            "quiver.full_feature_names".to_string(),
            request.full_feature_names.to_string(),
        ),
    ];
    if !plan.on_demand.is_empty() {
        let mut transforms = serde_json::Map::new();
        for od in &plan.on_demand {
            if let Some(m) = &od.module {
                transforms.insert(od.view.transform.to_string(), json!(m.sha256));
            }
        }
        kv.push(KeyValue::new(
            META_TRANSFORMS.to_string(),
            serde_json::Value::Object(transforms).to_string(),
        ));
    }
    if let FeatureList::Service(name) = &request.features {
        kv.push(KeyValue::new(
            META_FEATURE_SERVICE.to_string(),
            name.clone(),
        ));
    }
    kv
}

/// Builds a point-in-time-correct training set: every row of `request.entities`, in order, with
/// its pass-through columns and the requested features as of its `event_timestamp`, written to
/// `request.output` (atomically: a temporary file renamed into place).
pub fn historical(
    registry: &Registry,
    request: &HistoricalRequest,
    options: &HistoricalOptions,
) -> Result<HistoricalSummary, OfflineError> {
    let started = Instant::now();
    let mut plan = Plan::new(registry, &request.features, request.full_feature_names)?;
    load_transforms(registry, &mut plan)?;
    if !request.full_feature_names {
        for (i, out) in plan.outputs.iter().enumerate() {
            if plan.outputs[..i].iter().any(|o| o.name == out.name) {
                return Err(OfflineError::Other(format!(
                    "feature name \"{}\" appears twice; use full feature names",
                    out.name
                )));
            }
        }
    }
    let entities = EntityFile::open(&request.entities, &plan)?;
    let (source_rows_estimate, estimate) = estimate_bytes(&plan, &entities);
    let layout = layout(&plan, estimate, options)?;
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
    let (rows, transform_seconds) = write_output(
        registry, &plan, request, &entities, results, &layout, options, &bar,
    )?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    Ok(HistoricalSummary {
        rows,
        source_rows: source_rows_estimate,
        views: plan.views.len(),
        features: plan.outputs.len(),
        buckets: layout.buckets,
        spilled: layout.spill_dir.is_some(),
        join_seconds: seconds - transform_seconds,
        transform_seconds,
        seconds,
    })
}

/// Loads the transform module of every planned on-demand view from
/// `<transforms.dir>/<transform>.wasm`.
fn load_transforms(registry: &Registry, plan: &mut Plan<'_>) -> Result<(), OfflineError> {
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
            path: path.clone(),
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
/// over `threads` threads; returns one output row per entity row.
fn run_transform(
    od: &OnDemandPlan<'_>,
    requests: &[usize],
    entity_batch: &RecordBatch,
    joined: &[Vec<ArrayRef>],
    batch_rows: usize,
    threads: usize,
) -> Result<Vec<Vec<Value>>, OfflineError> {
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
    let mut outputs: Vec<Option<Result<Vec<Vec<Value>>, OfflineError>>> =
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
                        .call(&names, chunks[i], &od.view.fields, &limits)
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
    for result in outputs {
        out.extend(result.expect("every chunk ran")?);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn write_output(
    registry: &Registry,
    plan: &Plan<'_>,
    request: &HistoricalRequest,
    entities: &EntityFile,
    results: Vec<spill::Spill>,
    layout: &Layout,
    options: &HistoricalOptions,
    bar: &ProgressBar,
) -> Result<(u64, f64), OfflineError> {
    let mut fields: Vec<Arc<Field>> = entities.schema.fields().iter().cloned().collect();
    for out in &plan.outputs {
        fields.push(Arc::new(Field::new(&out.name, arrow_type(out.dtype), true)));
    }
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        entities.schema.metadata().clone(),
    ));
    let output_error = |e: &dyn std::fmt::Display| OfflineError::Source {
        path: request.output.clone(),
        message: format!("cannot write: {e}"),
    };
    let dir = request
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".quiver-historical-")
        .suffix(".parquet")
        .tempfile_in(dir)
        .map_err(|e| output_error(&e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(Some(metadata(registry, plan, request)))
        .build();
    let file = tmp.reopen().map_err(|e| output_error(&e))?;
    let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props))
        .map_err(|e| output_error(&e))?;
    let mut mergers = results
        .into_iter()
        .enumerate()
        .map(|(g, spill)| merge::Merger::new(spill, plan.result_schema(g)))
        .collect::<Result<Vec<_>, _>>()?;
    // With transforms, batches large enough for one call per thread.
    let batch_rows = if plan.on_demand.is_empty() {
        OUTPUT_BATCH_ROWS
    } else {
        OUTPUT_BATCH_ROWS.max(layout.threads * options.transform_batch_rows.max(1))
    };
    let mut row = 0u64;
    let mut transform_seconds = 0.0;
    for batch in entities.reader(None, None, batch_rows)? {
        let batch = batch.map_err(|e| entities.read_error(e))?;
        let n = batch.num_rows();
        let joined: Vec<Vec<ArrayRef>> = mergers
            .iter_mut()
            .map(|m| m.take(row, n))
            .collect::<Result<_, _>>()?;
        let transform_started = Instant::now();
        let computed: Vec<Vec<Vec<Value>>> = plan
            .on_demand
            .iter()
            .zip(&entities.requests)
            .map(|(od, requests)| {
                run_transform(
                    od,
                    requests,
                    &batch,
                    &joined,
                    options.transform_batch_rows,
                    layout.threads,
                )
            })
            .collect::<Result<_, _>>()?;
        transform_seconds += transform_started.elapsed().as_secs_f64();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for out in &plan.outputs {
            columns.push(match out.source {
                OutputSource::Joined { group, column } => Arc::clone(&joined[group][column]),
                OutputSource::OnDemand { plan: o, field } => {
                    build_column(out.dtype, computed[o].iter().map(|r| &r[field]))
                }
            });
        }
        let out =
            RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| output_error(&e))?;
        writer.write(&out).map_err(|e| output_error(&e))?;
        row += n as u64;
        bar.inc(n as u64);
    }
    writer.close().map_err(|e| output_error(&e))?;
    tmp.persist(&request.output)
        .map_err(|e| output_error(&e.error))?;
    Ok((row, transform_seconds))
}
