//! The embedded online store: one SQLite file, no server to run, survives restarts.
//!
//! SQLite runs in WAL mode, so `quiver materialize` (another process) can write while
//! `quiver serve` reads. Records are kept in one table keyed by (project, view, entity key); the
//! newer-wins rule is a conditional upsert, atomic per record.
//!
//! Damage is reported, never served as missing data: a file that fails `PRAGMA quick_check` is
//! refused at open; corruption or I/O errors while serving are [`StoreError::Unavailable`] (503)
//! and logged; and a database file deleted or replaced while serving (detected by its device and
//! inode) fails readiness and every write, instead of acknowledging rows into an unlinked file.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use serde::Deserialize;

use super::codec::{decode_row, encode_row};
use super::{
    FeatureRow, OnlineStore, RowKey, RowWrite, SharedStore, SpecError, StoreCatalog, StoreError,
    StoreOptions, WriteOutcome, default_key_ttl_slack,
};
use crate::clock::SharedClock;
use crate::settings::HumanDuration;
use crate::types::EpochMicros;

/// Options of the embedded SQLite online store (`online_store: {type: sqlite, ...}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteOptions {
    /// Database file, relative to the directory of `feature_store.yaml`.
    #[serde(default = "SqliteOptions::default_path")]
    pub path: PathBuf,
    /// How long a record outlives its view's ttl before it is dropped (so that lookups can still
    /// answer `OUTSIDE_MAX_AGE` for a while).
    #[serde(default = "default_key_ttl_slack")]
    pub key_ttl_slack: HumanDuration,
}

impl SqliteOptions {
    fn default_path() -> PathBuf {
        PathBuf::from("data/online_store.db")
    }
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            path: Self::default_path(),
            key_ttl_slack: default_key_ttl_slack(),
        }
    }
}

impl StoreOptions for SqliteOptions {
    const TYPE: &'static str = "sqlite";

    fn key_ttl_slack(&self) -> HumanDuration {
        self.key_ttl_slack
    }

    fn check(&mut self, base_dir: &Path) -> Vec<SpecError> {
        let mut problems = Vec::new();
        if self.path.as_os_str().is_empty() {
            problems.push(SpecError::new("path", "must not be empty"));
        }
        self.path = base_dir.join(&self.path);
        problems
    }

    /// Opens the database file; the records need no schema, so `catalog` is not used.
    async fn open(
        &self,
        project: &str,
        _catalog: &Arc<StoreCatalog>,
        clock: SharedClock,
    ) -> Result<SharedStore, StoreError> {
        Ok(Arc::new(SqliteStore::open(&self.path, project, clock)?))
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS quiver_online (
    project    TEXT    NOT NULL,
    view       TEXT    NOT NULL,
    entity     BLOB    NOT NULL,
    event_ts   INTEGER NOT NULL,
    created_ts INTEGER NOT NULL,
    expire_at  INTEGER,
    record     BLOB    NOT NULL,
    PRIMARY KEY (project, view, entity)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quiver_watermarks (
    project TEXT    NOT NULL,
    view    TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (project, view)
) WITHOUT ROWID;
";

const UPSERT: &str = "
INSERT INTO quiver_online (project, view, entity, event_ts, created_ts, expire_at, record)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (project, view, entity) DO UPDATE SET
    event_ts = excluded.event_ts, created_ts = excluded.created_ts,
    expire_at = excluded.expire_at, record = excluded.record
WHERE (excluded.event_ts, excluded.created_ts) > (quiver_online.event_ts, quiver_online.created_ts)
   OR (quiver_online.expire_at IS NOT NULL AND quiver_online.expire_at <= ?8)";

const SELECT: &str =
    "SELECT record, expire_at FROM quiver_online WHERE project = ?1 AND view = ?2 AND entity = ?3";

/// The embedded SQLite online store.
pub struct SqliteStore {
    project: Arc<str>,
    path: PathBuf,
    clock: SharedClock,
    // A small pool of connections: a rusqlite connection is not `Sync`, and SQLite in WAL mode lets
    // readers proceed in parallel. Each slot is a blocking mutex held only inside `spawn_blocking`.
    pool: Arc<Vec<Mutex<Connection>>>,
    /// `(device, inode)` of the file opened, to notice it being deleted or replaced.
    identity: (u64, u64),
    errors: ErrorLog,
}

/// Logs store errors at most once per [`ErrorLog::EVERY`], counting the ones left out.
struct ErrorLog {
    // Blocking mutex: checked and updated in a few instructions, never across an await.
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl ErrorLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn new() -> Self {
        ErrorLog {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    fn record(&self, path: &Path, e: &StoreError) {
        let mut last = self.last.lock();
        if last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        drop(last);
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::error!(
            path = %path.display(),
            suppressed,
            "sqlite online store error: {e}"
        );
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` for `project`.
    pub fn open(path: &Path, project: &str, clock: SharedClock) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Backend(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        check_integrity(path)?;
        let connections = 4;
        let mut pool = Vec::with_capacity(connections);
        let in_file = |e| in_file(path, backend(e));
        for _ in 0..connections {
            let conn = Connection::open(path)
                .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
            conn.busy_timeout(Duration::from_secs(10))
                .map_err(in_file)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(in_file)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(in_file)?;
            pool.push(Mutex::new(conn));
        }
        pool[0].lock().execute_batch(SCHEMA).map_err(in_file)?;
        let identity = file_identity(path)?;
        Ok(SqliteStore {
            project: Arc::from(project),
            path: path.to_path_buf(),
            clock,
            pool: Arc::new(pool),
            identity,
            errors: ErrorLog::new(),
        })
    }

    /// Fails when the path no longer names the file opened (deleted, or replaced by another):
    /// the open connections would keep using the old, unlinked file.
    fn check_file(&self) -> Result<(), StoreError> {
        let result = match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.identity => Ok(()),
            Ok(_) => Err(StoreError::Unavailable(format!(
                "{} was replaced while serving; restart quiver to open the new file",
                self.path.display()
            ))),
            Err(e) => Err(StoreError::Unavailable(format!(
                "{} is gone while serving ({e}); writes would be lost",
                self.path.display()
            ))),
        };
        if let Err(e) = &result {
            self.errors.record(&self.path, e);
        }
        result
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with a free connection on the blocking thread pool.
    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = Arc::clone(&self.pool);
        let result = tokio::task::spawn_blocking(move || {
            // Prefer an idle connection; wait on the first one only if all are busy.
            let mut guard = pool
                .iter()
                .find_map(|m| m.try_lock())
                .unwrap_or_else(|| pool[0].lock());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?;
        if let Err(e) = &result {
            self.errors.record(&self.path, e);
        }
        result.map_err(|e| in_file(&self.path, e))
    }
}

/// Runs `PRAGMA quick_check` on a connection of its own (so the pool's page caches start empty)
/// and refuses a damaged file, naming it.
fn check_integrity(path: &Path) -> Result<(), StoreError> {
    if !path.exists() {
        return Ok(());
    }
    let refuse = |detail: String| {
        StoreError::Backend(format!(
            "{} is damaged ({detail}); restore it from a backup, or delete it and materialize again",
            path.display()
        ))
    };
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
    let mut stmt = conn
        .prepare("PRAGMA quick_check")
        .map_err(|e| refuse(format!("PRAGMA quick_check failed: {e}")))?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| refuse(format!("PRAGMA quick_check failed: {e}")))?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    let shown: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
    Err(refuse(format!("PRAGMA quick_check: {}", shown.join("; "))))
}

/// `(device, inode)` of `path`.
fn file_identity(path: &Path) -> Result<(u64, u64), StoreError> {
    std::fs::metadata(path)
        .map(|m| (m.dev(), m.ino()))
        .map_err(|e| StoreError::Backend(format!("cannot stat {}: {e}", path.display())))
}

/// Maps an SQLite error: a damaged file or a failing disk is [`StoreError::Unavailable`] (503,
/// the data cannot be served), anything else [`StoreError::Backend`].
fn backend(e: rusqlite::Error) -> StoreError {
    let damaged = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
        )
    );
    if damaged {
        StoreError::Unavailable(format!("sqlite: {e}"))
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// Names the database file in a backend error ("database is locked" alone does not say which).
fn in_file(path: &Path, e: StoreError) -> StoreError {
    match e {
        StoreError::Backend(m) => StoreError::Backend(format!("{}: {m}", path.display())),
        other => other,
    }
}

#[async_trait]
impl OnlineStore for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn read(&self, keys: &[RowKey<'_>]) -> Result<Vec<Option<Arc<FeatureRow>>>, StoreError> {
        let owned: Vec<(Arc<str>, Vec<u8>)> = keys
            .iter()
            .map(|k| (Arc::from(k.view), k.entity.as_bytes().to_vec()))
            .collect();
        let project = Arc::clone(&self.project);
        let now = self.clock.now_micros();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(SELECT).map_err(backend)?;
            let mut out = Vec::with_capacity(owned.len());
            for (view, entity) in &owned {
                let found: Option<(Vec<u8>, Option<EpochMicros>)> = stmt
                    .query_row(params![&*project, &**view, entity], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()
                    .map_err(backend)?;
                out.push(match found {
                    Some((_, Some(expire_at))) if expire_at <= now => None,
                    // Quiver only writes valid records: one that does not decode is file damage.
                    Some((record, _)) => Some(Arc::new(decode_row(&record).map_err(|e| {
                        StoreError::Unavailable(format!("sqlite: damaged record: {e}"))
                    })?)),
                    None => None,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn write(&self, rows: &[RowWrite]) -> Result<WriteOutcome, StoreError> {
        self.check_file()?;
        let rows = rows.to_vec();
        let project = Arc::clone(&self.project);
        let now = self.clock.now_micros();
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            let mut outcome = WriteOutcome::default();
            {
                let mut stmt = tx.prepare_cached(UPSERT).map_err(backend)?;
                for w in &rows {
                    let changed = stmt
                        .execute(params![
                            &*project,
                            &*w.view,
                            w.entity.as_bytes(),
                            w.row.event_ts,
                            w.row.created_ts,
                            w.expire_at,
                            encode_row(&w.row),
                            now,
                        ])
                        .map_err(backend)?;
                    if changed > 0 {
                        outcome.written += 1;
                    } else {
                        outcome.skipped_older += 1;
                    }
                }
            }
            tx.commit().map_err(backend)?;
            Ok(outcome)
        })
        .await
    }

    async fn watermark(&self, view: &str) -> Result<Option<EpochMicros>, StoreError> {
        let (project, view) = (Arc::clone(&self.project), view.to_string());
        self.with_conn(move |conn| {
            conn.query_row(
                "SELECT at FROM quiver_watermarks WHERE project = ?1 AND view = ?2",
                params![&*project, view],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn set_watermark(&self, view: &str, at: EpochMicros) -> Result<(), StoreError> {
        self.check_file()?;
        let (project, view) = (Arc::clone(&self.project), view.to_string());
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO quiver_watermarks (project, view, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (project, view) DO UPDATE SET at = excluded.at",
                params![&*project, view, at],
            )
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check_file()?;
        self.with_conn(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(backend))
            .await
    }
}
