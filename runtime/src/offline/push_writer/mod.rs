//! Appending pushed rows to a view's offline source, as Parquet files `materialize` and
//! `historical` already read.
//!
//! Layout, under the view's source directory:
//! `pushed/date=YYYY-MM-DD/part-<first event micros>-<writer id>-<sequence>.parquet`, one file per
//! flush, with the view's own column names and types (join keys, timestamp field, created
//! timestamp column when declared, features). A file is written as `.<name>.tmp` in the same
//! directory (readers skip names starting with `.`), synced, renamed into place and the directory
//! synced, so a crash never leaves a half-written file a reader trips on. A flush whose rows
//! fall on several days writes one file per day, so a file under `date=D` holds only rows of day
//! D (UTC) and readers may prune by the partition. On object storage (an `s3://` source) each
//! file is one object uploaded in a single request: it appears complete or not at all.
//!
//! Rows are buffered per view and flushed when `push.flush_rows` rows are waiting or the oldest
//! has waited `push.flush_interval`; with an interval of `0` every request writes its own file
//! before it is answered.
//!
//! With `push.durability: durable` (the default) a buffered push is first appended to the view's
//! write-ahead log ([`wal`]) and fsynced before it is answered. The rows buffered for a view are
//! exactly the records of its current WAL segment; a flush seals the segment and names the Parquet
//! file after it (writer id and sequence). The segment is deleted once its file is durably in
//! place; replaying a segment at start-up ([`OfflineAppender::recover`]) writes only the files of
//! it that do not exist yet, so no row is written twice. The log is always local: under the
//! source directory, or `push.wal_dir`, or for an object-store source
//! `<dir of feature_store.yaml>/.quiver/wal`.

pub mod wal;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondBuilder};
use arrow::datatypes::{Field as ArrowField, Schema, TimeUnit};
use parking_lot::Mutex;
use parquet::arrow::ArrowWriter;

use self::wal::Segment;
use super::OfflineError;
use super::columns::{arrow_type, build_column};
use crate::registry::Registry;
use crate::settings::PushDurability;
use crate::storage::Location;
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

/// What became of the rows of one [`OfflineAppender::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// On disk (fsynced in the write-ahead log or in a Parquet file): they survive a crash.
    Durable(usize),
    /// Only in memory until the next flush (`push.durability: buffered`).
    Buffered(usize),
}

/// Rows waiting for a Parquet file, and the WAL segment that holds exactly them.
struct Active {
    rows: Vec<PushedRow>,
    since: Option<Instant>,
    segment: Option<Arc<Segment>>,
}

/// A flushed batch not yet written as Parquet (kept for a retry when the write fails).
struct Sealed {
    rows: Vec<PushedRow>,
    writer_id: String,
    seq: u64,
    segment: Option<Arc<Segment>>,
}

struct ViewAppender {
    wal_dir: PathBuf,
    // Rows and the segment they are logged in change together. A blocking mutex: held to append
    // one record and its rows (and to create a segment), never while a Parquet file is written.
    active: Mutex<Active>,
    // Sealed batches in flush order. Held for the whole Parquet write, so each batch is written
    // by one thread at a time and a failed one is retried before later ones.
    sealed: Mutex<Vec<Sealed>>,
}

/// Buffers pushed rows per view, logs them durably, and writes them as Parquet files.
pub struct OfflineAppender {
    registry: Arc<Registry>,
    // Indexed like `Registry::feature_views`.
    views: Vec<ViewAppender>,
    writer_id: String,
    sequence: AtomicU64,
}

impl OfflineAppender {
    /// An appender for the views of `registry`. Call [`OfflineAppender::recover`] before the
    /// first append to replay what a previous process logged.
    pub fn new(registry: Arc<Registry>) -> Self {
        let views = registry
            .feature_views
            .iter()
            .map(|v| ViewAppender {
                wal_dir: match (&registry.push.wal_dir, v.source.location.as_local()) {
                    (Some(dir), _) => registry.base_dir.join(dir).join(v.name.as_str()),
                    (None, Some(source)) => {
                        source.join("pushed").join(".wal").join(v.name.as_str())
                    }
                    (None, None) => registry
                        .base_dir
                        .join(".quiver")
                        .join("wal")
                        .join(v.name.as_str()),
                },
                active: Mutex::new(Active {
                    rows: Vec::new(),
                    since: None,
                    segment: None,
                }),
                sealed: Mutex::new(Vec::new()),
            })
            .collect();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut seed = Vec::with_capacity(20);
        seed.extend_from_slice(&std::process::id().to_le_bytes());
        seed.extend_from_slice(&nanos.to_le_bytes());
        OfflineAppender {
            registry,
            views,
            writer_id: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&seed)),
            sequence: AtomicU64::new(0),
        }
    }

    /// The WAL directory of a view.
    pub fn wal_dir(&self, view: usize) -> &Path {
        &self.views[view].wal_dir
    }

    /// Replays every WAL segment left by earlier processes into the Parquet file it would have
    /// become, then deletes it; returns the number of rows replayed. A segment whose file is
    /// already in place (a crash between the rename and the deletion) is only deleted, so no row
    /// is written twice. Segments a live process holds are left alone. Blocking: call before
    /// serving.
    pub fn recover(&self) -> Result<usize, OfflineError> {
        let mut replayed = 0;
        for (index, view) in self.views.iter().enumerate() {
            let v = &self.registry.feature_views[index];
            // Only a view read from a directory takes offline pushes, so only it can have logged
            // rows; the log path of a view read from one file is not even a directory.
            if !v.source.is_directory() {
                continue;
            }
            for (path, writer_id, seq) in wal::list_segments(&view.wal_dir)? {
                if writer_id == self.writer_id {
                    continue;
                }
                let Some(contents) =
                    wal::read_segment(&path, v.schema_fingerprint, v.name.as_str())?
                else {
                    tracing::info!(
                        "{}: in use by a running process; left to it",
                        path.display()
                    );
                    continue;
                };
                if contents.torn_bytes > 0 {
                    tracing::warn!(
                        "{}: ignoring {} bytes of an unacknowledged, incomplete record",
                        path.display(),
                        contents.torn_bytes
                    );
                }
                // Files already in place (a crash between their write and the segment's
                // deletion) are not written again.
                let written = self.write_files(index, &contents.rows, &writer_id, seq, true)?;
                if !written.is_empty() {
                    tracing::info!(
                        "replayed {} pushed rows of \"{}\" from {} into {}",
                        contents.rows.len(),
                        v.name,
                        path.display(),
                        written
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    replayed += contents.rows.len();
                } else {
                    tracing::info!("{}: already written", path.display());
                }
                wal::remove_segment(&path)?;
                drop(contents);
            }
        }
        Ok(replayed)
    }

    /// Adds a request's rows to a view's offline store. With `push.flush_interval: 0` they are
    /// written as their own file; otherwise they are buffered (logged and fsynced first unless
    /// `push.durability` is `buffered`) and a file is written if the buffer is full. Blocking
    /// (file I/O): call from a blocking context.
    pub fn append(&self, view: usize, rows: Vec<PushedRow>) -> Result<Appended, OfflineError> {
        let n = rows.len();
        if n == 0 {
            return Ok(Appended::Durable(0));
        }
        let push = &self.registry.push;
        if push.flush_interval.0.is_zero() {
            let seq = self.next_seq();
            self.write_files(view, &rows, &self.writer_id, seq, false)?;
            return Ok(Appended::Durable(n));
        }
        let v = &self.views[view];
        let durable = push.durability == PushDurability::Durable;
        let (logged, full) = {
            let mut active = v.active.lock();
            let logged = if durable {
                let segment = match &active.segment {
                    Some(s) => Arc::clone(s),
                    None => {
                        let s = Arc::new(Segment::create(
                            &v.wal_dir,
                            &self.writer_id,
                            self.next_seq(),
                        )?);
                        active.segment = Some(Arc::clone(&s));
                        s
                    }
                };
                let fingerprint = self.registry.feature_views[view].schema_fingerprint;
                let end = segment.append(&wal::encode(&rows, fingerprint))?;
                Some((segment, end))
            } else {
                None
            };
            active.since.get_or_insert_with(Instant::now);
            active.rows.extend(rows);
            (logged, active.rows.len() >= push.flush_rows)
        };
        // Outside the lock: requests appending meanwhile share this fsync.
        if let Some((segment, end)) = &logged
            && let Err(e) = segment.sync_to(*end)
        {
            // Seal the untrusted segment so later pushes log to a fresh one; its rows go to a
            // file from memory.
            if let Err(flush) = self.flush_view(view) {
                tracing::error!("cannot write pushed rows (kept for the next flush): {flush}");
            }
            return Err(e.into());
        }
        if full && let Err(e) = self.flush_view(view) {
            if logged.is_none() {
                return Err(e);
            }
            // The rows are safe in the log; the next flush retries the file.
            tracing::error!("cannot write pushed rows (kept for the next flush): {e}");
        }
        Ok(if logged.is_some() {
            Appended::Durable(n)
        } else {
            Appended::Buffered(n)
        })
    }

    /// Writes the buffers whose oldest row has waited the flush interval, and retries batches
    /// whose write failed. Blocking.
    pub fn flush_due(&self) -> Result<Vec<Location>, OfflineError> {
        let interval = self.registry.push.flush_interval.0;
        let mut written = Vec::new();
        for (index, view) in self.views.iter().enumerate() {
            let due = view
                .active
                .lock()
                .since
                .is_some_and(|s| s.elapsed() >= interval)
                || !view.sealed.lock().is_empty();
            if due {
                written.extend(self.flush_view(index)?);
            }
        }
        Ok(written)
    }

    /// Writes every non-empty buffer (on shutdown). Blocking.
    pub fn flush_all(&self) -> Result<Vec<Location>, OfflineError> {
        let mut written = Vec::new();
        for view in 0..self.views.len() {
            written.extend(self.flush_view(view)?);
        }
        Ok(written)
    }

    /// How often [`OfflineAppender::flush_due`] should run.
    pub fn tick(&self) -> Duration {
        (self.registry.push.flush_interval.0 / 4).max(Duration::from_millis(50))
    }

    fn next_seq(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// Seals the view's buffer (and its segment) and writes every sealed batch, oldest first.
    fn flush_view(&self, view: usize) -> Result<Vec<Location>, OfflineError> {
        let v = &self.views[view];
        let mut sealed = v.sealed.lock();
        {
            let mut active = v.active.lock();
            if !active.rows.is_empty() {
                let segment = active.segment.take();
                let seq = match &segment {
                    Some(s) => s.seq,
                    None => self.next_seq(),
                };
                sealed.push(Sealed {
                    rows: std::mem::take(&mut active.rows),
                    writer_id: self.writer_id.clone(),
                    seq,
                    segment,
                });
                active.since = None;
            }
        }
        let mut written = Vec::new();
        while let Some(batch) = sealed.first() {
            if let Some(segment) = &batch.segment
                && !segment.is_poisoned()
            {
                // A replay after a crash must find the same rows: no torn tail.
                segment.sync_all()?;
            }
            written.extend(self.write_files(
                view,
                &batch.rows,
                &batch.writer_id,
                batch.seq,
                false,
            )?);
            if let Some(segment) = &batch.segment
                && let Err(e) = segment.remove()
            {
                // Harmless: a replay rewrites the same file.
                tracing::warn!("cannot delete a replayed write-ahead log segment: {e}");
            }
            sealed.remove(0);
        }
        Ok(written)
    }

    /// Writes rows as `pushed/date=<day>/part-<first event micros>-<writer id>-<seq>.parquet`,
    /// one file per day of their event times (the names depend only on the rows, so a replay
    /// finds the same ones). With `skip_existing`, files already in place are left as they are.
    /// Returns the files written.
    fn write_files(
        &self,
        view: usize,
        rows: &[PushedRow],
        writer_id: &str,
        seq: u64,
        skip_existing: bool,
    ) -> Result<Vec<Location>, OfflineError> {
        let mut by_day: std::collections::BTreeMap<String, Vec<PushedRow>> = Default::default();
        for row in rows {
            let day = chrono::DateTime::from_timestamp_micros(row.event_ts)
                .map(|t| t.format("%Y-%m-%d").to_string())
                .unwrap_or_else(|| "unknown".into());
            by_day.entry(day).or_default().push(row.clone());
        }
        let pushed = self.registry.feature_views[view]
            .source
            .location
            .join("pushed");
        let mut written = Vec::new();
        for (day, rows) in by_day {
            let first = rows.iter().map(|r| r.event_ts).min().unwrap_or(0);
            let dir = pushed.join(&format!("date={day}"));
            let name = format!("part-{first}-{writer_id}-{seq:06}.parquet");
            let file = dir.join(&name);
            if skip_existing && file.exists()? {
                continue;
            }
            let batch = self.batch(view, &rows)?;
            match &dir {
                Location::Local(dir) => {
                    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
                    let path = dir.join(&name);
                    write_parquet_atomically(&dir.join(format!(".{name}.tmp")), &path, &batch)?;
                }
                Location::Object(_) => file.put(parquet_bytes(&batch, &file)?)?,
            }
            written.push(file);
        }
        Ok(written)
    }

    /// The rows as a batch with the view's own column names and types.
    fn batch(&self, view: usize, rows: &[PushedRow]) -> Result<RecordBatch, OfflineError> {
        let v = &self.registry.feature_views[view];
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
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| OfflineError::Other(format!("cannot build pushed batch: {e}")))
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> OfflineError {
    OfflineError::Source {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// A batch as the bytes of a Parquet file.
fn parquet_bytes(batch: &RecordBatch, file: &Location) -> Result<Vec<u8>, OfflineError> {
    let error = |e: parquet::errors::ParquetError| OfflineError::Source {
        path: file.to_string(),
        message: format!("cannot write: {e}"),
    };
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None).map_err(error)?;
    writer.write(batch).map_err(error)?;
    writer.close().map_err(error)?;
    Ok(bytes)
}

/// Writes a batch to `tmp`, syncs it, renames it to `path` and syncs the directory.
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
    if let Some(dir) = path.parent() {
        wal::sync_dir(dir)?;
    }
    Ok(())
}
