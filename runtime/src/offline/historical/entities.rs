//! The entity dataframe: its columns located and checked against the plan, and readers of parts
//! of it.

use arrow::datatypes::SchemaRef;
use parquet::arrow::ProjectionMask;

use super::plan::{InputSource, Plan};
use crate::offline::OfflineError;
use crate::offline::columns::{check_column, check_scalar, check_timestamp};
use crate::offline::source::timestamp_range;
use crate::storage::{Batches, DataFile, Location, ReadOptions};
use crate::types::EpochMicros;

/// The name of the entity dataframe's timestamp column.
pub const EVENT_TIMESTAMP: &str = "event_timestamp";

/// The entity dataframe, checked.
pub(super) struct EntityFile {
    pub(super) file: DataFile,
    pub(super) schema: SchemaRef,
    /// Index of `event_timestamp`.
    pub(super) ts: usize,
    /// Per key group, the indices of its join-key columns.
    pub(super) keys: Vec<Vec<usize>>,
    /// Per on-demand view, the indices of its request-field columns, in input order.
    pub(super) requests: Vec<Vec<usize>>,
    /// Rows per row group.
    pub(super) row_groups: Vec<u64>,
    /// The earliest and latest `event_timestamp`, from the footer's statistics (when every
    /// row group has them).
    pub(super) time_range: Option<(EpochMicros, EpochMicros)>,
}

impl EntityFile {
    /// Opens the entity file and locates every column the plan needs, failing naming the file
    /// and column when one is missing or mistyped, or when a feature column would clash with one.
    pub(super) fn open(location: &Location, plan: &Plan<'_>) -> Result<Self, OfflineError> {
        let file = DataFile::new(location.clone(), None);
        let path = &file;
        let builder = file.open()?;
        let schema = builder.schema().clone();
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
        let row_groups = builder
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows().max(0) as u64)
            .collect();
        let time_range = timestamp_range(&builder, EVENT_TIMESTAMP);
        drop(builder);
        Ok(EntityFile {
            time_range,
            file,
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
        let input = self.file.open()?;
        let projection = match columns {
            Some(c) => ProjectionMask::roots(input.parquet_schema(), c.iter().copied()),
            None => ProjectionMask::all(),
        };
        Ok(input.read(ReadOptions {
            projection,
            row_groups,
            batch_rows,
        })?)
    }
}
