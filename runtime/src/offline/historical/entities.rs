//! The entity dataframe: its columns located and checked against the plan, and readers of parts
//! of it. It is a Parquet file (`quiver historical`) or Arrow batches already in memory (the
//! Python package), read the same way: by "row groups" (a file's, or slices of the batches) and
//! projected columns.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ProjectionMask;

use super::plan::{InputSource, Plan};
use crate::offline::OfflineError;
use crate::offline::columns::{check_column, check_scalar, check_timestamp, timestamp_at};
use crate::offline::source::timestamp_range;
use crate::storage::{Batches, DataFile, Location, ReadOptions};
use crate::types::EpochMicros;

/// The name of the entity dataframe's timestamp column.
pub const EVENT_TIMESTAMP: &str = "event_timestamp";

/// Rows per unit of work of an in-memory entity dataframe (what a row group is for a file).
const MEMORY_CHUNK_ROWS: usize = 64 * 1024;

/// Where the entity rows come from.
#[derive(Debug, Clone)]
pub enum EntityInput {
    /// A Parquet file, local or an object.
    File(Location),
    /// Arrow batches already in memory, all of `schema`; nothing is written to disk for them.
    Batches {
        /// The schema of every batch.
        schema: SchemaRef,
        /// The rows, in order.
        batches: Vec<RecordBatch>,
    },
}

impl fmt::Display for EntityInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityInput::File(location) => location.fmt(f),
            EntityInput::Batches { .. } => f.write_str("the entity dataframe"),
        }
    }
}

/// The entity rows: a file, or in-memory chunks of at most [`MEMORY_CHUNK_ROWS`] rows.
pub(super) enum EntityData {
    File(DataFile),
    Memory {
        chunks: Vec<RecordBatch>,
        /// Bytes per row of each column, for the memory estimate.
        column_bytes: Vec<f64>,
    },
}

/// The entity dataframe, checked.
pub(super) struct EntityFile {
    pub(super) data: EntityData,
    /// What to call it in messages: the file's path or URL, or "the entity dataframe".
    pub(super) name: String,
    pub(super) schema: SchemaRef,
    /// Index of `event_timestamp`.
    pub(super) ts: usize,
    /// Per key group, the indices of its join-key columns.
    pub(super) keys: Vec<Vec<usize>>,
    /// Per on-demand view, the indices of its request-field columns, in input order.
    pub(super) requests: Vec<Vec<usize>>,
    /// Rows per row group (per chunk in memory).
    pub(super) row_groups: Vec<u64>,
    /// The earliest and latest `event_timestamp`, from the footer's statistics (when every
    /// row group has them) or, in memory, from the rows.
    pub(super) time_range: Option<(EpochMicros, EpochMicros)>,
}

impl EntityFile {
    /// Opens the entity file and locates every column the plan needs, failing naming the file
    /// and column when one is missing or mistyped, or when a feature column would clash with one.
    pub(super) fn open(input: &EntityInput, plan: &Plan<'_>) -> Result<Self, OfflineError> {
        match input {
            EntityInput::File(location) => {
                let file = DataFile::new(location.clone(), None);
                let builder = file.open()?;
                let schema = builder.schema().clone();
                let row_groups = builder
                    .metadata()
                    .row_groups()
                    .iter()
                    .map(|g| g.num_rows().max(0) as u64)
                    .collect();
                let time_range = timestamp_range(&builder, EVENT_TIMESTAMP);
                drop(builder);
                let name = file.to_string();
                Self::checked(
                    EntityData::File(file),
                    name,
                    schema,
                    row_groups,
                    time_range,
                    plan,
                )
            }
            EntityInput::Batches { schema, batches } => {
                let name = input.to_string();
                let mut column_bytes = vec![0.0; schema.fields().len()];
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                for batch in batches {
                    if batch.schema_ref().fields() != schema.fields() {
                        return Err(OfflineError::Other(format!(
                            "{name}: a batch's schema differs from the stream's"
                        )));
                    }
                    for (bytes, column) in column_bytes.iter_mut().zip(batch.columns()) {
                        *bytes += column.get_array_memory_size() as f64;
                    }
                }
                for bytes in &mut column_bytes {
                    *bytes /= rows.max(1) as f64;
                }
                let chunks: Vec<RecordBatch> = batches
                    .iter()
                    .flat_map(|b| {
                        (0..b.num_rows())
                            .step_by(MEMORY_CHUNK_ROWS)
                            .map(|at| b.slice(at, MEMORY_CHUNK_ROWS.min(b.num_rows() - at)))
                    })
                    .map(|b| {
                        RecordBatch::try_new(Arc::clone(schema), b.columns().to_vec())
                            .map_err(|e| OfflineError::Other(format!("{name}: {e}")))
                    })
                    .collect::<Result<_, _>>()?;
                let row_groups = chunks.iter().map(|c| c.num_rows() as u64).collect();
                let time_range = schema
                    .index_of(EVENT_TIMESTAMP)
                    .ok()
                    .filter(|&i| check_timestamp(schema.field(i).data_type()).is_ok())
                    .and_then(|i| {
                        chunks
                            .iter()
                            .flat_map(|c| {
                                let column = c.column(i);
                                (0..c.num_rows()).filter_map(move |r| timestamp_at(column, r))
                            })
                            .fold(None, |range: Option<(EpochMicros, EpochMicros)>, t| {
                                Some(range.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))))
                            })
                    });
                Self::checked(
                    EntityData::Memory {
                        chunks,
                        column_bytes,
                    },
                    name,
                    Arc::clone(schema),
                    row_groups,
                    time_range,
                    plan,
                )
            }
        }
    }

    /// Locates and checks every column the plan needs.
    fn checked(
        data: EntityData,
        name: String,
        schema: SchemaRef,
        row_groups: Vec<u64>,
        time_range: Option<(EpochMicros, EpochMicros)>,
        plan: &Plan<'_>,
    ) -> Result<Self, OfflineError> {
        let path = &name;
        let find = |name: &str, why: &str| {
            schema.index_of(name).map_err(|_| OfflineError::ColumnType {
                file: path.to_string(),
                column: name.to_string(),
                message: format!("is missing ({why})"),
            })
        };
        let ts = find(
            EVENT_TIMESTAMP,
            "the time each row's features are wanted at",
        )?;
        check_timestamp(schema.field(ts).data_type()).map_err(|m| OfflineError::ColumnType {
            file: path.to_string(),
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
                        file: path.to_string(),
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
                            file: path.to_string(),
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
                    path, out.name
                )));
            }
        }
        Ok(EntityFile {
            time_range,
            data,
            name,
            schema,
            ts,
            keys,
            requests,
            row_groups,
        })
    }

    /// Number of rows, from the footer.
    pub(super) fn rows(&self) -> u64 {
        self.row_groups.iter().sum()
    }

    /// A reader of some columns (by schema index) of some row groups; the columns come back in
    /// ascending schema order.
    pub(super) fn reader(
        &self,
        columns: Option<&[usize]>,
        row_groups: Option<Vec<usize>>,
        batch_rows: usize,
    ) -> Result<Batches, OfflineError> {
        let chunks = match &self.data {
            EntityData::File(file) => {
                let input = file.open()?;
                let projection = match columns {
                    Some(c) => ProjectionMask::roots(input.parquet_schema(), c.iter().copied()),
                    None => ProjectionMask::all(),
                };
                return Ok(input.read(ReadOptions {
                    projection,
                    row_groups,
                    batch_rows,
                })?);
            }
            EntityData::Memory { chunks, .. } => chunks,
        };
        let picked: Vec<RecordBatch> = match row_groups {
            Some(groups) => groups.iter().map(|&g| chunks[g].clone()).collect(),
            None => chunks.clone(),
        };
        let picked = match columns {
            Some(c) => {
                let mut c = c.to_vec();
                c.sort_unstable();
                c.dedup();
                picked
                    .iter()
                    .map(|b| b.project(&c))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| OfflineError::Other(format!("{}: {e}", self.name)))?
            }
            None => picked,
        };
        Ok(Box::new(Rebatched::new(picked, batch_rows.max(1))))
    }

    /// Bytes per row of each column, uncompressed: from a file's footer, or of the batches.
    pub(super) fn column_bytes(&self, of_file: impl FnOnce(&DataFile) -> Vec<f64>) -> Vec<f64> {
        match &self.data {
            EntityData::File(file) => of_file(file),
            EntityData::Memory { column_bytes, .. } => column_bytes.clone(),
        }
    }

    /// Bytes read from storage (none in memory).
    pub(super) fn bytes_read(&self) -> u64 {
        match &self.data {
            EntityData::File(file) => file.bytes_read(),
            EntityData::Memory { .. } => 0,
        }
    }
}

/// In-memory batches regrouped into batches of exactly `rows` rows (the last one shorter), as a
/// Parquet reader with that batch size gives them.
struct Rebatched {
    batches: std::collections::VecDeque<RecordBatch>,
    rows: usize,
}

impl Rebatched {
    fn new(batches: Vec<RecordBatch>, rows: usize) -> Self {
        Rebatched {
            batches: batches.into_iter().filter(|b| b.num_rows() > 0).collect(),
            rows,
        }
    }
}

impl Iterator for Rebatched {
    type Item = Result<RecordBatch, crate::storage::StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let first = self.batches.pop_front()?;
        if first.num_rows() >= self.rows {
            if first.num_rows() > self.rows {
                self.batches
                    .push_front(first.slice(self.rows, first.num_rows() - self.rows));
            }
            return Some(Ok(first.slice(0, self.rows)));
        }
        let schema = first.schema();
        let mut parts = vec![first];
        let mut have = parts[0].num_rows();
        while have < self.rows {
            let Some(next) = self.batches.pop_front() else {
                break;
            };
            let take = (self.rows - have).min(next.num_rows());
            if take < next.num_rows() {
                self.batches
                    .push_front(next.slice(take, next.num_rows() - take));
            }
            parts.push(next.slice(0, take));
            have += take;
        }
        Some(
            arrow::compute::concat_batches(&schema, &parts).map_err(|e| {
                crate::storage::StorageError {
                    location: "the entity dataframe".into(),
                    message: e.to_string(),
                }
            }),
        )
    }
}
