//! Step 1: read the entity file and the sources on all cores and send every row to the bucket of
//! its entity key, with only the columns the join needs.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryBuilder, Int64Array, RecordBatch, UInt32Array, UInt64Array,
};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use indicatif::ProgressBar;

use super::entities::EntityFile;
use super::layout::Layout;
use super::parallel::parallel;
use super::plan::Plan;
use super::spill::Spill;
use crate::entity_key::EntityKey;
use crate::offline::OfflineError;
use crate::offline::columns::{arrow_type, key_part_at, timestamp_at, to_declared};
use crate::offline::source::{ScanOptions, scan_view_file_with};
use crate::registry::JoinKey;

/// Rows per batch read while partitioning.
const READ_BATCH_ROWS: usize = 16384;

/// The partitioned inputs.
pub(super) struct Partitioned {
    /// Per key group: entity rows `(row, key, ts)`.
    pub(super) entities: Vec<Spill>,
    /// Per planned view: source rows `(key, ts, created, seq, features...)`.
    pub(super) sources: Vec<Spill>,
}

/// The bucket of an encoded entity key.
pub(super) fn bucket_of(key: &[u8], buckets: usize) -> usize {
    let h = xxhash_rust::xxh3::xxh3_64(key);
    ((h as u128 * buckets as u128) >> 64) as usize
}

fn entity_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("row", DataType::UInt64, false),
        Field::new("key", DataType::Binary, false),
        Field::new("ts", DataType::Int64, false),
    ]))
}

fn source_schema(plan: &Plan<'_>, p: usize) -> SchemaRef {
    let vp = &plan.views[p];
    let mut fields = vec![
        Field::new("key", DataType::Binary, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("created", DataType::Int64, false),
        Field::new("seq", DataType::UInt64, false),
    ];
    for &f in &vp.fields {
        let field = &vp.view.fields[f];
        fields.push(Field::new(
            field.name.as_str(),
            arrow_type(field.dtype),
            true,
        ));
    }
    Arc::new(Schema::new(fields))
}

/// One unit of partitioning work: a row group of the entity file or of a source file.
enum Unit {
    Entities {
        row_group: usize,
        first_row: u64,
    },
    Source {
        view: usize,
        file: usize,
        row_group: usize,
        first_row: u64,
    },
}

/// A worker's rows waiting to be appended to one bucket.
#[derive(Default)]
struct Pending {
    batches: Vec<RecordBatch>,
    rows: usize,
}

struct Worker<'a> {
    spills: &'a [Spill],
    buckets: usize,
    flush_rows: usize,
    /// `[input][bucket]`; inputs are the groups' entity spills, then the views' source spills.
    pending: Vec<Vec<Pending>>,
}

impl Worker<'_> {
    fn push(
        &mut self,
        input: usize,
        bucket: usize,
        batch: RecordBatch,
    ) -> Result<(), OfflineError> {
        let p = &mut self.pending[input][bucket];
        p.rows += batch.num_rows();
        p.batches.push(batch);
        if p.rows >= self.flush_rows {
            self.flush(input, bucket)?;
        }
        Ok(())
    }

    fn flush(&mut self, input: usize, bucket: usize) -> Result<(), OfflineError> {
        let p = std::mem::take(&mut self.pending[input][bucket]);
        if p.rows == 0 {
            return Ok(());
        }
        let spill = &self.spills[input];
        let batch = if p.batches.len() == 1 {
            p.batches.into_iter().next().expect("one batch")
        } else {
            concat_batches(spill.schema(), &p.batches)
                .map_err(|e| OfflineError::Other(format!("cannot buffer rows: {e}")))?
        };
        spill.write(bucket, batch)
    }

    /// Sends the rows of a dense batch (column 1 or 0 holds the encoded key) to their buckets.
    fn route(
        &mut self,
        input: usize,
        batch: RecordBatch,
        key_column: usize,
    ) -> Result<(), OfflineError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.buckets == 1 {
            return self.push(input, 0, batch);
        }
        let keys = batch
            .column(key_column)
            .as_any()
            .downcast_ref::<arrow::array::BinaryArray>()
            .expect("binary keys");
        let mut per_bucket: Vec<Vec<u32>> = vec![Vec::new(); self.buckets];
        for row in 0..keys.len() {
            per_bucket[bucket_of(keys.value(row), self.buckets)].push(row as u32);
        }
        for (bucket, rows) in per_bucket.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let part = if rows.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(&batch, &UInt32Array::from(rows))
                    .map_err(|e| OfflineError::Other(format!("cannot partition rows: {e}")))?
            };
            self.push(input, bucket, part)?;
        }
        Ok(())
    }
}

/// Encodes the entity key of a row into `buf`; false when a key part is null.
fn encode_key(
    buf: &mut Vec<u8>,
    columns: &[&dyn Array],
    join_keys: &[JoinKey],
    row: usize,
) -> bool {
    buf.clear();
    for (col, jk) in columns.iter().zip(join_keys) {
        match key_part_at(*col, jk.dtype, row) {
            Some(part) => EntityKey::push_part(buf, part),
            None => return false,
        }
    }
    true
}

/// Partitions the entity file and every planned view's source.
pub(super) fn partition(
    plan: &Plan<'_>,
    entities: &EntityFile,
    layout: &Layout,
    bar: &ProgressBar,
) -> Result<Partitioned, OfflineError> {
    let dir = layout.spill_dir.as_ref().map(|d| d.path());
    let groups = plan.groups.len();
    let mut spills: Vec<Spill> = (0..groups)
        .map(|g| {
            Spill::new(
                entity_schema(),
                layout.buckets,
                dir,
                &format!("entities-{g}"),
            )
        })
        .collect();
    for p in 0..plan.views.len() {
        spills.push(Spill::new(
            source_schema(plan, p),
            layout.buckets,
            dir,
            &format!("source-{p}"),
        ));
    }

    let mut units = Vec::new();
    let mut first_row = 0;
    for (row_group, &rows) in entities.row_groups.iter().enumerate() {
        units.push(Unit::Entities {
            row_group,
            first_row,
        });
        first_row += rows;
    }
    for (view, vp) in plan.views.iter().enumerate() {
        for (scan_index, scan) in vp.scans.iter().enumerate() {
            for &(row_group, first_row, _) in &scan.row_groups {
                units.push(Unit::Source {
                    view,
                    file: scan_index,
                    row_group,
                    first_row,
                });
            }
        }
    }
    // Entity columns read while partitioning: the timestamp and every join key, in schema order.
    let mut entity_columns: Vec<usize> = entities.keys.iter().flatten().copied().collect();
    entity_columns.push(entities.ts);
    entity_columns.sort_unstable();
    entity_columns.dedup();
    let projected = |i: usize| entity_columns.binary_search(&i).expect("projected");

    parallel(
        layout.threads,
        units.len(),
        || Worker {
            spills: &spills,
            buckets: layout.buckets,
            flush_rows: layout.flush_rows,
            pending: (0..spills.len())
                .map(|_| (0..layout.buckets).map(|_| Pending::default()).collect())
                .collect(),
        },
        |worker, unit| match units[unit] {
            Unit::Entities {
                row_group,
                first_row,
            } => {
                let reader = entities.reader(
                    Some(&entity_columns),
                    Some(vec![row_group]),
                    READ_BATCH_ROWS,
                )?;
                let mut row = first_row;
                for batch in reader {
                    let batch = batch?;
                    let n = batch.num_rows();
                    let ts_col = batch.column(projected(entities.ts));
                    for (g, group) in plan.groups.iter().enumerate() {
                        let cols: Vec<&dyn Array> = entities.keys[g]
                            .iter()
                            .map(|&i| batch.column(projected(i)).as_ref())
                            .collect();
                        let mut rows = Vec::with_capacity(n);
                        let mut keys = BinaryBuilder::with_capacity(n, n * 16);
                        let mut ts = Vec::with_capacity(n);
                        let mut buf = Vec::with_capacity(32);
                        for r in 0..n {
                            // Rows with a null key or timestamp get null features.
                            let Some(t) = timestamp_at(ts_col.as_ref(), r) else {
                                continue;
                            };
                            if !encode_key(&mut buf, &cols, &group.join_keys, r) {
                                continue;
                            }
                            rows.push(row + r as u64);
                            keys.append_value(&buf);
                            ts.push(t);
                        }
                        let dense = RecordBatch::try_new(
                            Arc::clone(spills[g].schema()),
                            vec![
                                Arc::new(UInt64Array::from(rows)),
                                Arc::new(keys.finish()),
                                Arc::new(Int64Array::from(ts)),
                            ],
                        )
                        .expect("entity schema");
                        worker.route(g, dense, 1)?;
                    }
                    row += n as u64;
                    bar.inc(n as u64);
                }
                Ok(())
            }
            Unit::Source {
                view,
                file,
                row_group,
                first_row,
            } => {
                let vp = &plan.views[view];
                let path = &vp.scans[file].file;
                // Scan order (the tie-break between equal rows) counts every file of the source,
                // read or pruned.
                let file = vp.scans[file].index;
                let options = ScanOptions {
                    fields: Some(vp.fields.clone()),
                    row_groups: Some(vec![row_group]),
                    batch_rows: READ_BATCH_ROWS,
                };
                let input = groups + view;
                let schema = Arc::clone(spills[input].schema());
                let mut row = first_row;
                scan_view_file_with(vp.view, path, &options, |batch| {
                    let n = batch.len();
                    let cols: Vec<&dyn Array> =
                        batch.key_columns().iter().map(|c| c.as_ref()).collect();
                    let ts_col = batch.event_ts_column();
                    let created_col = batch.created_ts_column();
                    let mut valid = Vec::with_capacity(n);
                    let mut keys = BinaryBuilder::with_capacity(n, n * 16);
                    let mut ts = Vec::with_capacity(n);
                    let mut created = Vec::with_capacity(n);
                    let mut seq = Vec::with_capacity(n);
                    let mut buf = Vec::with_capacity(32);
                    for r in 0..n {
                        // As in materialization: rows with a null key or timestamp are skipped,
                        // a null created timestamp counts as 0.
                        let Some(t) = timestamp_at(ts_col.as_ref(), r) else {
                            continue;
                        };
                        if !encode_key(&mut buf, &cols, &vp.view.join_keys, r) {
                            continue;
                        }
                        valid.push(r as u32);
                        keys.append_value(&buf);
                        ts.push(t);
                        created.push(
                            created_col
                                .and_then(|c| timestamp_at(c.as_ref(), r))
                                .unwrap_or(0),
                        );
                        // Scan order: file, then row within the file.
                        seq.push(((file as u64) << 40) | (row + r as u64));
                    }
                    let all_valid = valid.len() == n;
                    let valid = UInt32Array::from(valid);
                    let mut columns: Vec<ArrayRef> = vec![
                        Arc::new(keys.finish()),
                        Arc::new(Int64Array::from(ts)),
                        Arc::new(Int64Array::from(created)),
                        Arc::new(UInt64Array::from(seq)),
                    ];
                    for (f, col) in batch.feature_columns() {
                        let field = &vp.view.fields[f];
                        let col = if all_valid {
                            Arc::clone(col)
                        } else {
                            arrow::compute::take(col.as_ref(), &valid, None).map_err(|e| {
                                OfflineError::Other(format!("cannot filter rows: {e}"))
                            })?
                        };
                        let declared = to_declared(&col, field.dtype).map_err(|m| {
                            OfflineError::ColumnType {
                                file: path.to_string(),
                                column: field.name.to_string(),
                                message: m,
                            }
                        })?;
                        columns.push(declared);
                    }
                    let dense = RecordBatch::try_new(Arc::clone(&schema), columns)
                        .map_err(|e| OfflineError::Other(format!("cannot partition rows: {e}")))?;
                    worker.route(input, dense, 0)?;
                    row += n as u64;
                    bar.inc(n as u64);
                    Ok(())
                })
            }
        },
        |mut worker| {
            for input in 0..worker.pending.len() {
                for bucket in 0..worker.buckets {
                    worker.flush(input, bucket)?;
                }
            }
            Ok(())
        },
    )?;
    let sources = spills.split_off(groups);
    Ok(Partitioned {
        entities: spills,
        sources,
    })
}
