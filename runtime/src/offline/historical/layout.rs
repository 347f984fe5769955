//! Sizing a run: the estimated memory of the join, and from it the number of buckets, whether
//! they spill to temporary files, and the buffer sizes.

use super::HistoricalOptions;
use super::entities::EntityFile;
use super::plan::Plan;
use crate::offline::OfflineError;
use crate::offline::source::FileScan;
use crate::registry::JoinKey;
use crate::types::{ScalarType, ValueType};

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

/// Uncompressed Parquet bytes per row of each named top-level column, over the row groups
/// scanned of some files (all of them when a scan lists none).
fn parquet_column_bytes(files: &[FileScan], columns: &[&str]) -> (u64, Vec<f64>) {
    let mut rows = 0u64;
    let mut bytes = vec![0u64; columns.len()];
    for scan in files {
        // An unreadable file fails later, naming itself; the estimate just skips it.
        let Ok(input) = scan.file.open() else {
            continue;
        };
        let groups = input.metadata().row_groups();
        let read: Vec<usize> = if scan.row_groups.is_empty() {
            (0..groups.len()).collect()
        } else {
            scan.row_groups.iter().map(|g| g.0).collect()
        };
        for rg in read.into_iter().map(|g| &groups[g]) {
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
pub(super) fn estimate_bytes(plan: &Plan<'_>, entities: &EntityFile) -> (u64, f64) {
    let mut total = 0.0;
    let mut source_rows = 0u64;
    for vp in &plan.views {
        let mut names: Vec<&str> = vp.view.join_keys.iter().map(|k| k.name.as_str()).collect();
        let nkeys = names.len();
        names.extend(vp.fields.iter().map(|&f| vp.view.fields[f].name.as_str()));
        let (rows, per_row) = parquet_column_bytes(&vp.scans, &names);
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
    let per_row = entities.column_bytes(|file| {
        parquet_column_bytes(
            &[FileScan {
                index: 0,
                file: file.clone(),
                row_groups: Vec::new(),
            }],
            &entities
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>(),
        )
        .1
    });
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
pub(super) struct Layout {
    /// Hash buckets per key group.
    pub(super) buckets: usize,
    /// The temporary directory buckets spill to; `None` when they stay in memory.
    pub(super) spill_dir: Option<tempfile::TempDir>,
    /// Worker threads.
    pub(super) threads: usize,
    /// Rows a worker buffers per bucket before appending them to the bucket.
    pub(super) flush_rows: usize,
    /// Rows per frame of joined results (what the final merge holds per bucket).
    pub(super) merge_rows: usize,
}

/// Largest number of buckets; beyond it buckets grow past the budget.
const MAX_BUCKETS: usize = 16384;

impl Layout {
    /// Chooses the layout for a join estimated at `estimate` bytes: in memory when it fits half
    /// the budget, otherwise enough spilled buckets for each thread's bucket to fit its share.
    pub(super) fn new(
        plan: &Plan<'_>,
        estimate: f64,
        options: &HistoricalOptions,
    ) -> Result<Self, OfflineError> {
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
        let buckets = ((estimate / (budget / 2.0 / threads as f64)).ceil() as usize)
            .clamp(threads, MAX_BUCKETS);
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
            path: options
                .temp_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir)
                .display()
                .to_string(),
            message: format!("cannot create a temporary directory: {e}"),
        })?;
        // Write buffers: a quarter of the budget over threads × inputs × buckets, ~100 bytes a row.
        let flush_rows = ((budget / 4.0 / (threads as f64 * inputs * buckets as f64 * 100.0))
            as usize)
            .clamp(64, 8192);
        let merge_rows =
            ((budget / 4.0 / (plan.groups.len().max(1) as f64 * buckets as f64 * 100.0)) as usize)
                .clamp(16, 8192);
        Ok(Layout {
            buckets,
            spill_dir: Some(dir),
            threads,
            flush_rows,
            merge_rows,
        })
    }
}
