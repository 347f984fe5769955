//! Bucketed intermediate data: kept in memory when the whole job fits the memory budget, spilled
//! to temporary files otherwise.
//!
//! A spilled bucket is one file of frames, each `u64` little-endian length followed by one Arrow
//! IPC stream holding one record batch. Files are opened for each append and each read, so the
//! number of buckets is not limited by the number of open files.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use parking_lot::Mutex;

use crate::offline::OfflineError;

/// One bucketed data set (the entity rows of a key group, the source rows of a view, or the
/// joined results of a key group).
pub(super) struct Spill {
    schema: SchemaRef,
    store: Store,
}

enum Store {
    Memory(Vec<Mutex<Vec<RecordBatch>>>),
    Disk {
        dir: PathBuf,
        name: String,
        // Serializes appends to one bucket file.
        locks: Vec<Mutex<()>>,
    },
}

fn io_error(path: &Path, what: &str, e: impl std::fmt::Display) -> OfflineError {
    OfflineError::Source {
        path: path.display().to_string(),
        message: format!("{what}: {e}"),
    }
}

impl Spill {
    /// A spill of `buckets` buckets, in memory (`dir` = `None`) or in files `<dir>/<name>-<b>.bin`.
    pub(super) fn new(schema: SchemaRef, buckets: usize, dir: Option<&Path>, name: &str) -> Self {
        let store = match dir {
            None => Store::Memory((0..buckets).map(|_| Mutex::new(Vec::new())).collect()),
            Some(dir) => Store::Disk {
                dir: dir.to_path_buf(),
                name: name.to_string(),
                locks: (0..buckets).map(|_| Mutex::new(())).collect(),
            },
        };
        Spill { schema, store }
    }

    /// The number of buckets.
    pub(super) fn buckets(&self) -> usize {
        match &self.store {
            Store::Memory(b) => b.len(),
            Store::Disk { locks, .. } => locks.len(),
        }
    }

    /// The schema of every batch.
    pub(super) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn path(dir: &Path, name: &str, bucket: usize) -> PathBuf {
        dir.join(format!("{name}-{bucket}.bin"))
    }

    /// Appends a batch to a bucket.
    pub(super) fn write(&self, bucket: usize, batch: RecordBatch) -> Result<(), OfflineError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        match &self.store {
            Store::Memory(buckets) => {
                buckets[bucket].lock().push(batch);
                Ok(())
            }
            Store::Disk { dir, name, locks } => {
                let path = Self::path(dir, name, bucket);
                let mut frame = vec![0u8; 8];
                {
                    let mut writer = StreamWriter::try_new(&mut frame, &self.schema)
                        .map_err(|e| io_error(&path, "cannot encode spilled rows", e))?;
                    writer
                        .write(&batch)
                        .map_err(|e| io_error(&path, "cannot encode spilled rows", e))?;
                    writer
                        .finish()
                        .map_err(|e| io_error(&path, "cannot encode spilled rows", e))?;
                }
                let len = (frame.len() - 8) as u64;
                frame[..8].copy_from_slice(&len.to_le_bytes());
                let _guard = locks[bucket].lock();
                let mut file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| io_error(&path, "cannot write temporary file", e))?;
                file.write_all(&frame)
                    .map_err(|e| io_error(&path, "cannot write temporary file", e))
            }
        }
    }

    /// Takes every batch of a bucket out of the spill (its file is deleted).
    pub(super) fn take_all(&self, bucket: usize) -> Result<Vec<RecordBatch>, OfflineError> {
        let mut cursor = self.cursor(bucket);
        let mut out = Vec::new();
        while let Some(batch) = cursor.next_batch()? {
            out.push(batch);
        }
        cursor.remove();
        Ok(out)
    }

    /// A reader over a bucket's batches, in the order they were written. Memory buckets are
    /// moved into the cursor.
    pub(super) fn cursor(&self, bucket: usize) -> Cursor {
        match &self.store {
            Store::Memory(buckets) => {
                Cursor::Memory(std::mem::take(&mut *buckets[bucket].lock()).into())
            }
            Store::Disk { dir, name, .. } => Cursor::Disk {
                path: Self::path(dir, name, bucket),
                offset: 0,
            },
        }
    }
}

/// Reads one bucket batch by batch. A disk cursor keeps no file open between batches.
pub(super) enum Cursor {
    Memory(VecDeque<RecordBatch>),
    Disk { path: PathBuf, offset: u64 },
}

impl Cursor {
    /// The next batch, or `None` at the end.
    pub(super) fn next_batch(&mut self) -> Result<Option<RecordBatch>, OfflineError> {
        match self {
            Cursor::Memory(batches) => Ok(batches.pop_front()),
            Cursor::Disk { path, offset } => {
                let mut file = match File::open(&*path) {
                    Ok(f) => f,
                    // A bucket nothing was written to has no file.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io_error(path, "cannot read temporary file", e)),
                };
                file.seek(SeekFrom::Start(*offset))
                    .map_err(|e| io_error(path, "cannot read temporary file", e))?;
                let mut len = [0u8; 8];
                match file.read_exact(&mut len) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                    Err(e) => return Err(io_error(path, "cannot read temporary file", e)),
                }
                let len = u64::from_le_bytes(len);
                let mut frame = vec![0u8; len as usize];
                file.read_exact(&mut frame)
                    .map_err(|e| io_error(path, "truncated temporary file", e))?;
                *offset += 8 + len;
                let mut reader = StreamReader::try_new(std::io::Cursor::new(frame), None)
                    .map_err(|e| io_error(path, "corrupt temporary file", e))?;
                match reader.next() {
                    Some(batch) => batch
                        .map(Some)
                        .map_err(|e| io_error(path, "corrupt temporary file", e)),
                    None => Err(io_error(path, "corrupt temporary file", "empty frame")),
                }
            }
        }
    }

    /// Deletes what the cursor reads (a no-op for memory buckets, which it already owns).
    pub(super) fn remove(&self) {
        if let Cursor::Disk { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}
