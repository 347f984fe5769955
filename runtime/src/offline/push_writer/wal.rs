//! The write-ahead log of rows pushed `to: offline`: what makes an acknowledged push survive a
//! crash before its rows reach a Parquet file.
//!
//! Each view has a directory of segments, `<writer id>-<sequence>.wal`; a process appends to one
//! segment per view at a time. A segment is the 8-byte magic `QVWAL001` followed by records
//!
//! ```text
//! [payload length: u32 LE][xxh3-64 of the payload: u64 LE][payload: MessagePack WalRecord]
//! ```
//!
//! A push is answered only once the segment is fsynced past the end of its record, so after a
//! crash only an unacknowledged tail can be torn: reading stops at the first record that is short
//! or fails its checksum, and ignores the rest.
//!
//! The writing process holds an exclusive lock (`flock`) on its segments, released when it exits
//! however it exits; replay skips locked segments, so a server starting beside a live one sharing
//! the directory never replays (and deletes) the other's log.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::PushedRow;
use crate::entity_key::{EntityKey, KeyPart};
use crate::types::{EpochMicros, Value};

/// The first bytes of every segment (format version 1).
pub const MAGIC: &[u8; 8] = b"QVWAL001";
/// Length and checksum before each payload.
const RECORD_HEADER: usize = 12;
/// Larger payloads are not written, and read as a torn tail (no request body comes near it).
const MAX_PAYLOAD: usize = 1 << 30;

/// A WAL failure; callers tell "cannot write or read the log" from "the log no longer fits the
/// view".
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A segment or the WAL directory cannot be written, read or synced.
    #[error("write-ahead log {}: {source}", path.display())]
    Io {
        /// The segment or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A record was written for another schema of the view (its fields changed since).
    #[error(
        "write-ahead log {}: rows were logged for another schema of feature view \"{view}\"; \
         restore the previous feature_store.yaml to replay them, or move the file away",
        path.display()
    )]
    SchemaChanged {
        /// The segment.
        path: PathBuf,
        /// The view.
        view: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One logged push: its rows and the schema they were checked against.
#[derive(Serialize, Deserialize)]
struct WalRecord {
    schema_fingerprint: u32,
    rows: Vec<WalRow>,
}

#[derive(Serialize, Deserialize)]
struct WalRow {
    keys: Vec<Value>,
    event_ts: EpochMicros,
    created_ts: EpochMicros,
    values: Vec<Value>,
}

/// Frames the rows of one push as a record (header and payload).
pub fn encode(rows: &[PushedRow], schema_fingerprint: u32) -> Vec<u8> {
    let record = WalRecord {
        schema_fingerprint,
        rows: rows
            .iter()
            .map(|r| WalRow {
                keys: r.keys.clone(),
                event_ts: r.event_ts,
                created_ts: r.created_ts,
                values: r.values.clone(),
            })
            .collect(),
    };
    let payload = rmp_serde::to_vec(&record).expect("feature values always serialize");
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&xxh3_64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The segment file name for a writer and sequence number.
pub fn segment_name(writer_id: &str, seq: u64) -> String {
    format!("{writer_id}-{seq:06}.wal")
}

/// `(writer id, sequence)` of a segment file name, or `None` for other files.
pub fn parse_segment_name(name: &str) -> Option<(String, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (writer, seq) = stem.rsplit_once('-')?;
    if writer.is_empty() || !writer.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some((writer.to_string(), seq.parse().ok()?))
}

/// The segment a process appends to. Records are appended by one thread at a time (the view's
/// append lock); syncing is shared between concurrent requests.
pub struct Segment {
    /// Sequence number, also naming the Parquet file the segment becomes.
    pub seq: u64,
    path: PathBuf,
    file: File,
    // Bytes written so far; only the append lock's holder stores it.
    written: AtomicU64,
    // Bytes known to be on disk. A mutex, not an atomic, because the fsync runs under it:
    // requests arriving during a sync wait, then find their record covered (group commit).
    synced: Mutex<u64>,
    // Set when an fsync failed: the kernel may have dropped the failed pages and a later fsync
    // could wrongly succeed, so no later sync of this file is trusted.
    poisoned: AtomicBool,
}

impl Segment {
    /// Creates `<dir>/<writer id>-<seq>.wal` with its magic, durably (file and directory synced).
    pub fn create(dir: &Path, writer_id: &str, seq: u64) -> Result<Segment, WalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(segment_name(writer_id, seq));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.try_lock()
            .map_err(|e| io_err(&path)(io::Error::from(e)))?;
        file.write_all(MAGIC).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        sync_dir(dir)?;
        let len = MAGIC.len() as u64;
        Ok(Segment {
            seq,
            path,
            file,
            written: AtomicU64::new(len),
            synced: Mutex::new(len),
            poisoned: AtomicBool::new(false),
        })
    }

    /// Appends one framed record (not yet synced); returns the offset just past it. On failure
    /// the file is cut back to its previous length, so later records stay readable.
    pub fn append(&self, record: &[u8]) -> Result<u64, WalError> {
        let start = self.written.load(Ordering::Acquire);
        if record.len() - RECORD_HEADER > MAX_PAYLOAD {
            return Err(WalError::Io {
                path: self.path.clone(),
                source: io::Error::other("record too large"),
            });
        }
        if let Err(e) = (&self.file).write_all(record) {
            if let Err(cut) = self.file.set_len(start) {
                tracing::error!(
                    "cannot cut {} back after a failed write; later records may be unreadable: {cut}",
                    self.path.display()
                );
            }
            return Err(io_err(&self.path)(e));
        }
        let end = start + record.len() as u64;
        self.written.store(end, Ordering::Release);
        Ok(end)
    }

    /// Returns once the first `end` bytes are on disk, syncing at most once for all the records
    /// appended before the sync started.
    pub fn sync_to(&self, end: u64) -> Result<(), WalError> {
        let mut synced = self.synced.lock();
        if *synced >= end {
            return Ok(());
        }
        if self.is_poisoned() {
            return Err(io_err(&self.path)(io::Error::other(
                "an earlier fsync of this segment failed",
            )));
        }
        let target = self.written.load(Ordering::Acquire);
        if let Err(e) = self.file.sync_data() {
            self.poisoned.store(true, Ordering::Release);
            return Err(io_err(&self.path)(e));
        }
        *synced = target;
        Ok(())
    }

    /// Whether an fsync of this segment failed (its rows are then only trusted in memory).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Syncs everything appended so far.
    pub fn sync_all(&self) -> Result<(), WalError> {
        self.sync_to(self.written.load(Ordering::Acquire))
    }

    /// Deletes the segment once its rows are in a durable Parquet file.
    pub fn remove(&self) -> Result<(), WalError> {
        remove_segment(&self.path)
    }
}

/// Deletes a segment file and syncs its directory, so it is not replayed again.
pub fn remove_segment(path: &Path) -> Result<(), WalError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes a directory's entries (creations, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// The complete records of a segment, read under its lock.
#[derive(Debug)]
pub struct SegmentContents {
    /// Rows of every complete record, in order.
    pub rows: Vec<PushedRow>,
    /// Bytes after the last complete record (a torn, unacknowledged tail), ignored.
    pub torn_bytes: u64,
    // Held until the contents are dropped, so no other process replays the segment meanwhile.
    _lock: File,
}

/// Reads a segment's complete records; a short or corrupt record ends the log. `None` when a
/// live process holds the segment. Fails when a record was logged for another schema.
pub fn read_segment(
    path: &Path,
    schema_fingerprint: u32,
    view: &str,
) -> Result<Option<SegmentContents>, WalError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(path)(e)),
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_err(path))?;
    let mut rows = Vec::new();
    let mut at = MAGIC.len();
    if !bytes.starts_with(MAGIC) {
        // A crash right after the file was created: nothing was acknowledged in it.
        at = 0;
    } else {
        while let Some((record, next)) = next_record(&bytes, at) {
            if record.schema_fingerprint != schema_fingerprint {
                return Err(WalError::SchemaChanged {
                    path: path.to_path_buf(),
                    view: view.to_string(),
                });
            }
            rows.extend(record.rows.into_iter().map(pushed_row));
            at = next;
        }
    }
    Ok(Some(SegmentContents {
        rows,
        torn_bytes: (bytes.len() - at) as u64,
        _lock: file,
    }))
}

/// The record at `at` and the offset after it, or `None` if it is short or corrupt.
fn next_record(bytes: &[u8], at: usize) -> Option<(WalRecord, usize)> {
    let header = bytes.get(at..at + RECORD_HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let sum = u64::from_le_bytes(header[4..].try_into().ok()?);
    if len > MAX_PAYLOAD {
        return None;
    }
    let start = at + RECORD_HEADER;
    let payload = bytes.get(start..start + len)?;
    if xxh3_64(payload) != sum {
        return None;
    }
    let record = rmp_serde::from_slice(payload).ok()?;
    Some((record, start + len))
}

fn pushed_row(r: WalRow) -> PushedRow {
    let mut encoded = Vec::with_capacity(16);
    for k in &r.keys {
        match k {
            Value::String(s) => EntityKey::push_part(&mut encoded, KeyPart::Str(s)),
            Value::Int(i) => EntityKey::push_part(&mut encoded, KeyPart::Int(*i)),
            Value::Bytes(b) => EntityKey::push_part(&mut encoded, KeyPart::Bytes(b)),
            // Join keys are never of other types; the Parquet writer only needs `keys`.
            _ => {}
        }
    }
    PushedRow {
        entity: EntityKey::from_encoded(encoded),
        keys: r.keys,
        event_ts: r.event_ts,
        created_ts: r.created_ts,
        values: r.values,
    }
}

/// Segment files in a WAL directory (none when it does not exist), sorted by name.
pub fn list_segments(dir: &Path) -> Result<Vec<(PathBuf, String, u64)>, WalError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // No log yet; or the view reads a single file, so nothing can be pushed to it offline.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        if let Some((writer, seq)) = parse_segment_name(&name.to_string_lossy()) {
            out.push((entry.path(), writer, seq));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_reading_a_single_file_has_no_segments() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.parquet");
        std::fs::write(&file, b"not a directory").unwrap();
        let segments = list_segments(&file.join("pushed").join(".wal").join("view")).unwrap();
        assert!(segments.is_empty());
    }

    fn row(user: &str, ts: EpochMicros) -> PushedRow {
        let mut encoded = Vec::new();
        EntityKey::push_part(&mut encoded, KeyPart::Str(user));
        PushedRow {
            entity: EntityKey::from_encoded(encoded),
            keys: vec![Value::String(user.into())],
            event_ts: ts,
            created_ts: 0,
            values: vec![Value::Float32(0.5), Value::Int(3), Value::Null],
        }
    }

    fn users(rows: &[PushedRow]) -> Vec<String> {
        rows.iter()
            .map(|r| match &r.keys[0] {
                Value::String(s) => s.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_torn_last_record_is_ignored_and_the_complete_ones_replay() {
        let dir = tempfile::tempdir().unwrap();
        let segment = Segment::create(dir.path(), "abc", 1).unwrap();
        for (i, user) in ["alice", "bob", "carol"].iter().enumerate() {
            segment.append(&encode(&[row(user, i as i64)], 7)).unwrap();
        }
        segment.sync_all().unwrap();
        // The writer is gone (its lock released), as after a crash.
        drop(segment);
        let path = dir.path().join(segment_name("abc", 1));
        let full = std::fs::metadata(&path).unwrap().len();
        for cut in [1, 5, RECORD_HEADER as u64 + 2] {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(full - cut)
                .unwrap();
            let contents = read_segment(&path, 7, "v").unwrap().unwrap();
            assert_eq!(users(&contents.rows), ["alice", "bob"], "cut {cut}");
            assert!(contents.torn_bytes > 0);
        }
        let contents = read_segment(&path, 7, "v").unwrap().unwrap();
        assert!(contents.rows[1].values[0].bit_eq(&Value::Float32(0.5)));
        assert_eq!(contents.rows[1].entity, row("bob", 1).entity);
    }

    #[test]
    fn a_record_with_a_bad_checksum_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let segment = Segment::create(dir.path(), "abc", 2).unwrap();
        segment.append(&encode(&[row("alice", 1)], 7)).unwrap();
        let mut bad = encode(&[row("bob", 2)], 7);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        segment.append(&bad).unwrap();
        segment.append(&encode(&[row("carol", 3)], 7)).unwrap();
        drop(segment);
        let path = dir.path().join(segment_name("abc", 2));
        let contents = read_segment(&path, 7, "v").unwrap().unwrap();
        assert_eq!(users(&contents.rows), ["alice"]);
    }

    #[test]
    fn a_segment_logged_for_another_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let segment = Segment::create(dir.path(), "abc", 3).unwrap();
        segment.append(&encode(&[row("alice", 1)], 7)).unwrap();
        drop(segment);
        let path = dir.path().join(segment_name("abc", 3));
        assert!(matches!(
            read_segment(&path, 8, "v"),
            Err(WalError::SchemaChanged { .. })
        ));
    }

    #[test]
    fn a_segment_still_held_by_its_writer_is_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let segment = Segment::create(dir.path(), "abc", 4).unwrap();
        segment.append(&encode(&[row("alice", 1)], 7)).unwrap();
        let path = dir.path().join(segment_name("abc", 4));
        assert!(read_segment(&path, 7, "v").unwrap().is_none());
        drop(segment);
        assert_eq!(read_segment(&path, 7, "v").unwrap().unwrap().rows.len(), 1);
    }

    #[test]
    fn segment_names_round_trip_and_other_files_are_ignored() {
        assert_eq!(
            parse_segment_name(&segment_name("9f3a", 12)),
            Some(("9f3a".to_string(), 12))
        );
        assert_eq!(parse_segment_name(".part.tmp"), None);
        assert_eq!(parse_segment_name("x.wal.tmp"), None);
    }
}
