//! Reading a feature view's Parquet source: finding its files and scanning them batch by batch,
//! with every missing column or wrong type reported by file and column.

use arrow::array::{ArrayRef, RecordBatch};
use parquet::arrow::ProjectionMask;

use super::OfflineError;
use super::columns::{
    check_column, check_scalar, check_timestamp, key_part_at, timestamp_at, value_at,
};
use crate::entity_key::EntityKey;
use crate::registry::{FeatureView, ParquetSource};
use crate::storage::{DataFile, ReadOptions};
use crate::types::{EpochMicros, Value};

/// Rows per Arrow batch when scanning sources.
pub const BATCH_ROWS: usize = 8192;

/// The Parquet files of a source, sorted: the file itself, every `*.parquet` below a directory
/// or prefix (hidden and `_`-prefixed files, such as in-progress writes, are skipped), or a
/// glob's matches; local or in object storage.
pub fn source_files(source: &ParquetSource) -> Result<Vec<DataFile>, OfflineError> {
    Ok(source.location.list_parquet()?)
}

/// Opens a local Parquet file for a synchronous read (feature logs and their replays, which are
/// always local), with its footer parsed through [`DataFile`]. Fails naming the file.
pub fn open_parquet(
    file: &std::path::Path,
) -> Result<
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<std::fs::File>,
    OfflineError,
> {
    let data = DataFile::local(file);
    let metadata = data.metadata()?.clone();
    let f = std::fs::File::open(file).map_err(|e| data.error(format!("cannot open: {e}")))?;
    Ok(
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::new_with_metadata(
            f, metadata,
        ),
    )
}

/// One batch of a view's source, with its columns checked and located.
pub struct ViewBatch<'v> {
    view: &'v FeatureView,
    keys: Vec<ArrayRef>,
    event_ts: ArrayRef,
    created_ts: Option<ArrayRef>,
    /// Indices into `view.fields` of the columns in `features`.
    fields: Vec<usize>,
    features: Vec<ArrayRef>,
    rows: usize,
}

impl ViewBatch<'_> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The entity key of a row; `None` if a join key is null.
    pub fn entity_key(&self, row: usize) -> Option<EntityKey> {
        let mut buf = Vec::with_capacity(16);
        for (col, jk) in self.keys.iter().zip(&self.view.join_keys) {
            EntityKey::push_part(&mut buf, key_part_at(col.as_ref(), jk.dtype, row)?);
        }
        Some(EntityKey::from_encoded(buf))
    }

    /// The event timestamp of a row; `None` if null.
    pub fn event_ts(&self, row: usize) -> Option<EpochMicros> {
        timestamp_at(self.event_ts.as_ref(), row)
    }

    /// The created timestamp of a row (0 when the source has none or it is null).
    pub fn created_ts(&self, row: usize) -> EpochMicros {
        self.created_ts
            .as_ref()
            .and_then(|c| timestamp_at(c.as_ref(), row))
            .unwrap_or(0)
    }

    /// The feature values of a row, in the order of the fields scanned (schema order for
    /// [`scan_view_file`]).
    pub fn values(&self, row: usize) -> Vec<Value> {
        self.features
            .iter()
            .zip(&self.fields)
            .map(|(col, &f)| value_at(col.as_ref(), self.view.fields[f].dtype, row))
            .collect()
    }

    /// The join-key columns, in the view's join-key order.
    pub fn key_columns(&self) -> &[ArrayRef] {
        &self.keys
    }

    /// The event timestamp column (any Arrow timestamp unit).
    pub fn event_ts_column(&self) -> &ArrayRef {
        &self.event_ts
    }

    /// The created timestamp column, when the source has one.
    pub fn created_ts_column(&self) -> Option<&ArrayRef> {
        self.created_ts.as_ref()
    }

    /// The scanned feature columns, in the order of the fields scanned, with the indices of those
    /// fields in the view's schema.
    pub fn feature_columns(&self) -> impl Iterator<Item = (usize, &ArrayRef)> {
        self.fields.iter().copied().zip(&self.features)
    }
}

/// Which part of a view's source file to scan.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Indices into the view's fields to read; `None` reads every field.
    pub fields: Option<Vec<usize>>,
    /// Parquet row groups to read; `None` reads them all.
    pub row_groups: Option<Vec<usize>>,
    /// Rows per batch; [`BATCH_ROWS`] when zero.
    pub batch_rows: usize,
}

/// Scans one source file of a view, calling `on_batch` for every batch. Fails naming the file and
/// column when a column is missing or has a type that cannot be read as declared.
pub fn scan_view_file(
    view: &FeatureView,
    file: &DataFile,
    on_batch: impl FnMut(&ViewBatch<'_>) -> Result<(), OfflineError>,
) -> Result<(), OfflineError> {
    scan_view_file_with(view, file, &ScanOptions::default(), on_batch)
}

/// Scans part of one source file of a view (some fields, some row groups), with the same checks
/// as [`scan_view_file`] (only the columns read are checked).
pub fn scan_view_file_with(
    view: &FeatureView,
    file: &DataFile,
    options: &ScanOptions,
    mut on_batch: impl FnMut(&ViewBatch<'_>) -> Result<(), OfflineError>,
) -> Result<(), OfflineError> {
    let fields: Vec<usize> = match &options.fields {
        Some(f) => f.clone(),
        None => (0..view.fields.len()).collect(),
    };
    let input = file.open()?;
    let schema = input.schema().clone();

    // Locate and type-check every column the view needs before reading any data.
    let find = |name: &str| -> Result<usize, OfflineError> {
        schema
            .index_of(name)
            .map_err(|_| OfflineError::MissingColumn {
                file: file.to_string(),
                column: name.to_string(),
            })
    };
    let wrong = |column: &str, message: String| OfflineError::ColumnType {
        file: file.to_string(),
        column: column.to_string(),
        message,
    };
    let mut wanted = Vec::new();
    for jk in &view.join_keys {
        let i = find(jk.name.as_str())?;
        check_scalar(schema.field(i).data_type(), jk.dtype)
            .map_err(|m| wrong(jk.name.as_str(), m))?;
        wanted.push(i);
    }
    let ts = &view.source.timestamp_field;
    let ts_index = find(ts)?;
    check_timestamp(schema.field(ts_index).data_type()).map_err(|m| wrong(ts, m))?;
    wanted.push(ts_index);
    let created_index = match &view.source.created_timestamp_column {
        Some(c) => {
            let i = find(c)?;
            check_timestamp(schema.field(i).data_type()).map_err(|m| wrong(c, m))?;
            wanted.push(i);
            Some(i)
        }
        None => None,
    };
    for field in fields.iter().map(|&f| &view.fields[f]) {
        let i = find(field.name.as_str())?;
        check_column(schema.field(i).data_type(), field.dtype)
            .map_err(|m| wrong(field.name.as_str(), m))?;
        wanted.push(i);
    }

    let mut leaves = wanted.clone();
    leaves.sort_unstable();
    leaves.dedup();
    let projection = ProjectionMask::roots(input.parquet_schema(), leaves.iter().copied());
    let reader = input.read(ReadOptions {
        projection,
        row_groups: options.row_groups.clone(),
        batch_rows: if options.batch_rows == 0 {
            BATCH_ROWS
        } else {
            options.batch_rows
        },
    })?;
    // After projection, columns appear in file order; map each original index to its position.
    let pos = |original: usize| leaves.binary_search(&original).expect("projected");

    for batch in reader {
        let batch: RecordBatch = batch?;
        let col = |original: usize| batch.column(pos(original)).clone();
        let view_batch = ViewBatch {
            view,
            keys: view
                .join_keys
                .iter()
                .enumerate()
                .map(|(k, _)| col(wanted[k]))
                .collect(),
            event_ts: col(ts_index),
            created_ts: created_index.map(col),
            features: fields
                .iter()
                .map(|&f| {
                    col(schema
                        .index_of(view.fields[f].name.as_str())
                        .expect("checked"))
                })
                .collect(),
            fields: fields.clone(),
            rows: batch.num_rows(),
        };
        on_batch(&view_batch)?;
    }
    Ok(())
}

/// The rows of each row group of a Parquet file.
pub fn row_groups(file: &DataFile) -> Result<Vec<u64>, OfflineError> {
    Ok(file
        .open()?
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows().max(0) as u64)
        .collect())
}

/// Total rows in the given Parquet files, from their footers (for progress bars).
pub fn count_rows(files: &[DataFile]) -> u64 {
    files
        .iter()
        .filter_map(|f| f.open().ok())
        .map(|f| f.metadata().file_metadata().num_rows().max(0) as u64)
        .sum()
}

/// An inclusive range of event times a scan needs; `None` ends are unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeWindow {
    /// The earliest event time needed.
    pub start: Option<EpochMicros>,
    /// The latest event time needed.
    pub end: Option<EpochMicros>,
}

impl TimeWindow {
    /// Whether `[lo, hi]` (inclusive) overlaps the window.
    pub fn overlaps(&self, lo: EpochMicros, hi: EpochMicros) -> bool {
        self.start.is_none_or(|s| hi >= s) && self.end.is_none_or(|e| lo <= e)
    }
}

/// One file a pruned scan reads, with the row groups it reads of it.
#[derive(Debug, Clone)]
pub struct FileScan {
    /// The file's index in the unpruned list (scan order is kept across pruning).
    pub index: usize,
    /// The file.
    pub file: DataFile,
    /// The row groups read: (index, first row of the group in the file, rows).
    pub row_groups: Vec<(usize, u64, u64)>,
}

/// What pruning kept and skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Files with at least one row group read.
    pub files_read: u64,
    /// Files not read at all: outside the window by their hive partition (footer not even
    /// fetched) or by the statistics of every row group.
    pub files_skipped: u64,
    /// Row groups read.
    pub row_groups_read: u64,
    /// Row groups skipped by their timestamp statistics.
    pub row_groups_skipped: u64,
    /// Bytes read from storage (footers and column chunks), once the run is done.
    pub bytes_read: u64,
}

impl std::ops::AddAssign for PruneStats {
    fn add_assign(&mut self, o: PruneStats) {
        self.files_read += o.files_read;
        self.files_skipped += o.files_skipped;
        self.row_groups_read += o.row_groups_read;
        self.row_groups_skipped += o.row_groups_skipped;
        self.bytes_read += o.bytes_read;
    }
}

impl std::fmt::Display for PruneStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} files read ({} row groups), {} files and {} row groups skipped, {} read",
            self.files_read,
            self.row_groups_read,
            self.files_skipped,
            self.row_groups_skipped,
            human_bytes(self.bytes_read)
        )
    }
}

/// `bytes` as `812 B`, `3.4 KiB`, `12.0 MiB`, `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The files and row groups of a view's source that can hold rows in `window`: a file whose
/// hive partition (`date=`, `year=/month=/day=`) lies outside it is skipped without reading its
/// footer, and a row group whose timestamp statistics lie outside it is skipped. Row groups
/// without statistics are read.
pub fn prune(
    view: &FeatureView,
    files: &[DataFile],
    window: TimeWindow,
) -> Result<(Vec<FileScan>, PruneStats), OfflineError> {
    let mut stats = PruneStats::default();
    let mut scans = Vec::new();
    for (index, file) in files.iter().enumerate() {
        if let Some((lo, hi)) = file.partition_range()
            && !window.overlaps(lo, hi)
        {
            stats.files_skipped += 1;
            continue;
        }
        let input = file.open()?;
        let ts_range = timestamp_statistics(&input, &view.source.timestamp_field);
        let mut first_row = 0u64;
        let mut row_groups = Vec::new();
        for (g, group) in input.metadata().row_groups().iter().enumerate() {
            let rows = group.num_rows().max(0) as u64;
            let keep = match ts_range.as_ref().and_then(|r| r(g)) {
                Some((lo, hi)) => window.overlaps(lo, hi),
                None => true,
            };
            if keep {
                row_groups.push((g, first_row, rows));
                stats.row_groups_read += 1;
            } else {
                stats.row_groups_skipped += 1;
            }
            first_row += rows;
        }
        if row_groups.is_empty() {
            stats.files_skipped += 1;
        } else {
            stats.files_read += 1;
            scans.push(FileScan {
                index,
                file: file.clone(),
                row_groups,
            });
        }
    }
    Ok((scans, stats))
}

/// The earliest and latest value of timestamp column `column` over the whole file, from the
/// statistics of its row groups (`None` unless every row group has them).
pub fn timestamp_range(
    input: &crate::storage::ParquetInput<'_>,
    column: &str,
) -> Option<(EpochMicros, EpochMicros)> {
    let of_group = timestamp_statistics(input, column)?;
    let mut range: Option<(EpochMicros, EpochMicros)> = None;
    for g in 0..input.metadata().num_row_groups() {
        let (lo, hi) = of_group(g)?;
        range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
    }
    range
}

/// A function giving the (min, max) event time of a row group from its statistics, in
/// microseconds, when the timestamp column is a top-level INT64 timestamp with statistics.
#[allow(clippy::type_complexity)]
fn timestamp_statistics<'a>(
    input: &'a crate::storage::ParquetInput<'_>,
    column: &str,
) -> Option<Box<dyn Fn(usize) -> Option<(EpochMicros, EpochMicros)> + 'a>> {
    use arrow::datatypes::{DataType, TimeUnit};
    use parquet::file::statistics::Statistics;
    let field = input.schema().field_with_name(column).ok()?;
    let (to_lo, to_hi): (fn(i64) -> i64, fn(i64) -> i64) = match field.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => (
            |v| v.saturating_mul(1_000_000),
            |v| v.saturating_mul(1_000_000),
        ),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            (|v| v.saturating_mul(1000), |v| v.saturating_mul(1000))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => (|v| v, |v| v),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            (|v| v.div_euclid(1000), |v| v.div_euclid(1000) + 1)
        }
        _ => return None,
    };
    let leaf = input
        .parquet_schema()
        .columns()
        .iter()
        .position(|c| c.path().parts() == [column.to_string()])?;
    let metadata = input.metadata();
    Some(Box::new(move |group| {
        match metadata.row_group(group).column(leaf).statistics()? {
            // INT96 (legacy) timestamps have no usable statistics.
            Statistics::Int64(s) => Some((to_lo(*s.min_opt()?), to_hi(*s.max_opt()?))),
            _ => None,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_names_the_file_it_cannot_open_or_read() {
        let dir = tempfile::tempdir().unwrap();
        let missing = DataFile::local(dir.path().join("missing.parquet"));
        let e = missing.open().err().unwrap().to_string();
        assert!(
            e.contains("missing.parquet") && e.contains("cannot open"),
            "{e}"
        );

        let junk = dir.path().join("junk.parquet");
        std::fs::write(&junk, b"not parquet").unwrap();
        let e = DataFile::local(&junk).open().err().unwrap().to_string();
        assert!(
            e.contains("junk.parquet") && e.contains("not a readable Parquet file"),
            "{e}"
        );
    }
}
