//! Appending pushed rows to a view's offline source, as Parquet files `materialize` and
//! `historical` already read.
//!
//! Layout, under the view's source directory:
//! `pushed/date=YYYY-MM-DD/part-<first event micros>-<writer id>-<sequence>.parquet`, one file per
//! flush, with the view's own column names and types (join keys, timestamp field, created
//! timestamp column when declared, features). A file is written as `.<name>.tmp` in the same
//! directory (readers skip names starting with `.`) and renamed into place when complete, so a
//! crash never leaves a half-written file a reader trips on.
//!
//! Rows are buffered per view and flushed when `push.flush_rows` rows are waiting or the oldest
//! has waited `push.flush_interval`; with an interval of `0` every request writes its own file
//! before it is answered.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondBuilder};
use arrow::datatypes::{Field as ArrowField, Schema, TimeUnit};
use parking_lot::Mutex;
use parquet::arrow::ArrowWriter;

use super::OfflineError;
use super::columns::{arrow_type, build_column};
use crate::registry::Registry;
use crate::types::{EpochMicros, Value, ValueType};

/// One pushed row, typed and checked.
#[derive(Debug, Clone)]
pub struct PushedRow {
    /// The encoded entity key.
    pub entity: crate::entity_key::EntityKey,
    /// Join-key values, in the view's join-key order.
    pub keys: Vec<Value>,
    /// Event timestamp.
    pub event_ts: EpochMicros,
    /// Created timestamp.
    pub created_ts: EpochMicros,
    /// Feature values, in schema order.
    pub values: Vec<Value>,
}

struct Buffer {
    rows: Vec<PushedRow>,
    since: Option<Instant>,
}

/// Buffers pushed rows per view and writes them as Parquet files.
pub struct OfflineAppender {
    registry: Arc<Registry>,
    // One buffer per view, indexed like `Registry::feature_views`. A blocking mutex: held only to
    // append or take rows, never while a file is written.
    buffers: Vec<Mutex<Buffer>>,
    writer_id: String,
    sequence: AtomicU64,
}

impl OfflineAppender {
    /// An appender for the views of `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        let buffers = registry
            .feature_views
            .iter()
            .map(|_| {
                Mutex::new(Buffer {
                    rows: Vec::new(),
                    since: None,
                })
            })
            .collect();
        OfflineAppender {
            registry,
            buffers,
            writer_id: format!(
                "{:x}",
                std::process::id() as u64 ^ (chrono::Utc::now().timestamp_micros() as u64)
            ),
            sequence: AtomicU64::new(0),
        }
    }

    /// Adds rows to a view's buffer and writes a file if the buffer is full or flushing is
    /// immediate. Blocking (file I/O): call from a blocking context.
    pub fn append(
        &self,
        view: usize,
        rows: Vec<PushedRow>,
    ) -> Result<Option<PathBuf>, OfflineError> {
        let full = {
            let mut buffer = self.buffers[view].lock();
            buffer.since.get_or_insert_with(Instant::now);
            buffer.rows.extend(rows);
            buffer.rows.len() >= self.registry.push.flush_rows
                || self.registry.push.flush_interval.0.is_zero()
        };
        if full {
            self.flush_view(view)
        } else {
            Ok(None)
        }
    }

    /// Writes the buffers whose oldest row has waited the flush interval. Blocking.
    pub fn flush_due(&self) -> Result<Vec<PathBuf>, OfflineError> {
        let interval = self.registry.push.flush_interval.0;
        let mut written = Vec::new();
        for view in 0..self.buffers.len() {
            let due = self.buffers[view]
                .lock()
                .since
                .is_some_and(|s| s.elapsed() >= interval);
            if due {
                written.extend(self.flush_view(view)?);
            }
        }
        Ok(written)
    }

    /// Writes every non-empty buffer (on shutdown). Blocking.
    pub fn flush_all(&self) -> Result<Vec<PathBuf>, OfflineError> {
        let mut written = Vec::new();
        for view in 0..self.buffers.len() {
            written.extend(self.flush_view(view)?);
        }
        Ok(written)
    }

    /// How often [`OfflineAppender::flush_due`] should run.
    pub fn tick(&self) -> Duration {
        (self.registry.push.flush_interval.0 / 4).max(Duration::from_millis(50))
    }

    fn flush_view(&self, view: usize) -> Result<Option<PathBuf>, OfflineError> {
        let rows = {
            let mut buffer = self.buffers[view].lock();
            buffer.since = None;
            std::mem::take(&mut buffer.rows)
        };
        if rows.is_empty() {
            return Ok(None);
        }
        match self.write_file(view, &rows) {
            Ok(path) => Ok(Some(path)),
            Err(e) => {
                // Put the rows back so a later flush retries them.
                let mut buffer = self.buffers[view].lock();
                buffer.since.get_or_insert_with(Instant::now);
                let newer = std::mem::replace(&mut buffer.rows, rows);
                buffer.rows.extend(newer);
                Err(e)
            }
        }
    }

    fn write_file(&self, view: usize, rows: &[PushedRow]) -> Result<PathBuf, OfflineError> {
        let v = &self.registry.feature_views[view];
        let first = rows.iter().map(|r| r.event_ts).min().unwrap_or(0);
        let day = chrono::DateTime::from_timestamp_micros(first)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "unknown".into());
        let dir = v.source.path.join("pushed").join(format!("date={day}"));
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
        let name = format!("part-{first}-{}-{seq:06}.parquet", self.writer_id);
        let path = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp"));

        let ts_type =
            arrow::datatypes::DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (k, jk) in v.join_keys.iter().enumerate() {
            let t = ValueType::Scalar(jk.dtype);
            fields.push(ArrowField::new(jk.name.as_str(), arrow_type(t), false));
            columns.push(build_column(t, rows.iter().map(|r| &r.keys[k])));
        }
        let timestamps = |get: &dyn Fn(&PushedRow) -> EpochMicros| -> ArrayRef {
            let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
            for r in rows {
                b.append_value(get(r));
            }
            Arc::new(b.finish())
        };
        fields.push(ArrowField::new(
            &v.source.timestamp_field,
            ts_type.clone(),
            false,
        ));
        columns.push(timestamps(&|r| r.event_ts));
        if let Some(created) = &v.source.created_timestamp_column {
            fields.push(ArrowField::new(created, ts_type, false));
            columns.push(timestamps(&|r| r.created_ts));
        }
        for (i, f) in v.fields.iter().enumerate() {
            fields.push(ArrowField::new(f.name.as_str(), arrow_type(f.dtype), true));
            columns.push(build_column(f.dtype, rows.iter().map(|r| &r.values[i])));
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| OfflineError::Other(format!("cannot build pushed batch: {e}")))?;
        write_parquet_atomically(&tmp, &path, &batch)?;
        Ok(path)
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> OfflineError {
    OfflineError::Source {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes a batch to `tmp`, syncs it, and renames it to `path`.
pub fn write_parquet_atomically(
    tmp: &Path,
    path: &Path,
    batch: &RecordBatch,
) -> Result<(), OfflineError> {
    let file = File::create(tmp).map_err(|e| io_error(tmp, e))?;
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), None).map_err(|e| io_error(tmp, e))?;
    writer.write(batch).map_err(|e| io_error(tmp, e))?;
    writer.close().map_err(|e| io_error(tmp, e))?;
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(tmp, e))?;
    std::fs::rename(tmp, path).map_err(|e| io_error(path, e))?;
    Ok(())
}
