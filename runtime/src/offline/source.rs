//! Reading a feature view's Parquet source: finding its files and scanning them batch by batch,
//! with every missing column or wrong type reported by file and column.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{ArrayRef, RecordBatch};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::OfflineError;
use super::columns::{
    check_column, check_scalar, check_timestamp, key_part_at, timestamp_at, value_at,
};
use crate::entity_key::EntityKey;
use crate::registry::{FeatureView, ParquetSource};
use crate::types::{EpochMicros, Value};

/// Rows per Arrow batch when scanning sources.
pub const BATCH_ROWS: usize = 8192;

/// The Parquet files of a source, sorted: the file itself, every `*.parquet` below a directory
/// (hidden and `_`-prefixed files, such as in-progress writes, are skipped), or a glob's matches.
pub fn source_files(source: &ParquetSource) -> Result<Vec<PathBuf>, OfflineError> {
    let path = &source.path;
    let spec = path.to_string_lossy();
    let mut files = if spec.contains(['*', '?', '[']) {
        glob::glob(&spec)
            .map_err(|e| OfflineError::Source {
                path: path.clone(),
                message: format!("invalid glob: {e}"),
            })?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect()
    } else if path.is_dir() {
        let mut out = Vec::new();
        collect_parquet(path, &mut out)?;
        out
    } else if path.is_file() {
        vec![path.clone()]
    } else {
        return Err(OfflineError::Source {
            path: path.clone(),
            message: "no such file or directory".into(),
        });
    };
    files.sort();
    Ok(files)
}

fn collect_parquet(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), OfflineError> {
    let entries = std::fs::read_dir(dir).map_err(|e| OfflineError::Source {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    for entry in entries.flatten() {
        let p = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if p.is_dir() {
            collect_parquet(&p, out)?;
        } else if name.ends_with(".parquet") {
            out.push(p);
        }
    }
    Ok(())
}

/// Opens a Parquet file for reading, with its footer parsed. Fails naming the file when it cannot
/// be opened or is not Parquet.
pub fn open_parquet(file: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, OfflineError> {
    let f = File::open(file).map_err(|e| OfflineError::Source {
        path: file.to_path_buf(),
        message: format!("cannot open: {e}"),
    })?;
    ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| OfflineError::Source {
        path: file.to_path_buf(),
        message: format!("not a readable Parquet file: {e}"),
    })
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
    file: &Path,
    on_batch: impl FnMut(&ViewBatch<'_>) -> Result<(), OfflineError>,
) -> Result<(), OfflineError> {
    scan_view_file_with(view, file, &ScanOptions::default(), on_batch)
}

/// Scans part of one source file of a view (some fields, some row groups), with the same checks
/// as [`scan_view_file`] (only the columns read are checked).
pub fn scan_view_file_with(
    view: &FeatureView,
    file: &Path,
    options: &ScanOptions,
    mut on_batch: impl FnMut(&ViewBatch<'_>) -> Result<(), OfflineError>,
) -> Result<(), OfflineError> {
    let fields: Vec<usize> = match &options.fields {
        Some(f) => f.clone(),
        None => (0..view.fields.len()).collect(),
    };
    let builder = open_parquet(file)?;
    let schema = builder.schema().clone();

    // Locate and type-check every column the view needs before reading any data.
    let find = |name: &str| -> Result<usize, OfflineError> {
        schema
            .index_of(name)
            .map_err(|_| OfflineError::MissingColumn {
                file: file.to_path_buf(),
                column: name.to_string(),
            })
    };
    let wrong = |column: &str, message: String| OfflineError::ColumnType {
        file: file.to_path_buf(),
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
    let mask = ProjectionMask::roots(builder.parquet_schema(), leaves.iter().copied());
    let mut builder = builder
        .with_projection(mask)
        .with_batch_size(if options.batch_rows == 0 {
            BATCH_ROWS
        } else {
            options.batch_rows
        });
    if let Some(groups) = &options.row_groups {
        builder = builder.with_row_groups(groups.clone());
    }
    let reader = builder.build().map_err(|e| OfflineError::Source {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    // After projection, columns appear in file order; map each original index to its position.
    let pos = |original: usize| leaves.binary_search(&original).expect("projected");

    for batch in reader {
        let batch: RecordBatch = batch.map_err(|e| OfflineError::Source {
            path: file.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
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

/// The number of row groups and rows of each row group of a Parquet file.
pub fn row_groups(file: &Path) -> Result<Vec<u64>, OfflineError> {
    Ok(open_parquet(file)?
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows().max(0) as u64)
        .collect())
}

/// Total rows in the given Parquet files, from their footers (for progress bars).
pub fn count_rows(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|p| open_parquet(p).ok())
        .map(|b| b.metadata().file_metadata().num_rows().max(0) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_parquet_names_the_file_it_cannot_open_or_read() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.parquet");
        let e = open_parquet(&missing).unwrap_err().to_string();
        assert!(
            e.contains("missing.parquet") && e.contains("cannot open"),
            "{e}"
        );

        let junk = dir.path().join("junk.parquet");
        std::fs::write(&junk, b"not parquet").unwrap();
        let e = open_parquet(&junk).unwrap_err().to_string();
        assert!(
            e.contains("junk.parquet") && e.contains("not a readable Parquet file"),
            "{e}"
        );
    }
}
