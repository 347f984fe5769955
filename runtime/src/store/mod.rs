//! Online stores: one trait, one module per backend, each backend selected by the `type` of the
//! `online_store` section through [`BACKENDS`].
//!
//! Every backend keeps one record per (project, feature view, entity key): the latest feature row
//! of that entity in that view, with its event and created timestamps. Writes are newer-wins
//! (compared by event timestamp, then created timestamp) and atomic per record, so concurrent
//! writers never let an older value replace a newer one. Records expire at `expire_at`
//! (event timestamp + view ttl + slack) so that expired features leave the store.

mod backend;
pub mod catalog;
pub mod codec;
pub mod reconnect;

use std::sync::Arc;

use async_trait::async_trait;

use crate::entity_key::EntityKey;
use crate::types::{EpochMicros, Value};

pub(crate) use backend::default_key_ttl_slack;
pub use backend::{Backend, OnlineStoreSpec, SpecError, StoreOptions};
pub use catalog::{FeatureColumn, KeyColumn, StoreCatalog, ViewSchema};

/// Declares each backend's module and registers its options type in [`BACKENDS`].
macro_rules! backends {
    ($($module:ident :: $options:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// Every online-store backend, selected by `online_store.type`. The `type` names, in
        /// this order, are the choices listed when a configuration names an unknown one.
        pub static BACKENDS: &[Backend] = &[$(Backend::of::<$module::$options>()),*];
    };
}

// Adding a backend touches its own module and one line here:
// 1. write `store/<name>.rs` (or `store/<name>/mod.rs`) holding the store, which implements
//    [`OnlineStore`], and its options type: `#[derive(Deserialize)]` with
//    `#[serde(deny_unknown_fields)]`, implementing [`StoreOptions`] with `TYPE = "<name>"` (its
//    `check` validates values and resolves paths, its `open` builds the store);
// 2. add `<name>::<Name>Options,` below.
backends! {
    sqlite::SqliteOptions,
    redis::RedisOptions,
    postgres::PostgresOptions,
}

/// The embedded SQLite store, with its default options, when `online_store` is omitted.
impl Default for OnlineStoreSpec {
    fn default() -> Self {
        OnlineStoreSpec::new(sqlite::SqliteOptions::default())
    }
}

/// A stored feature row: the values of one view's schema, in schema order.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    /// When the values were true in the world (the source's timestamp field).
    pub event_ts: EpochMicros,
    /// When the values were produced; breaks ties between equal event timestamps.
    pub created_ts: EpochMicros,
    /// Fingerprint of the view schema the values were written with (see
    /// [`crate::registry::FeatureView::schema_fingerprint`]); a reader with another schema ignores the row.
    pub schema_fingerprint: u32,
    /// One value per schema field, in schema order.
    pub values: Vec<Value>,
}

impl FeatureRow {
    /// True when `self` should replace `other` under the newer-wins rule.
    pub fn is_newer_than(&self, other: &FeatureRow) -> bool {
        (self.event_ts, self.created_ts) > (other.event_ts, other.created_ts)
    }

    /// Approximate memory footprint, for cache weighing.
    pub fn approx_size(&self) -> usize {
        std::mem::size_of::<FeatureRow>()
            + self.values.iter().map(Value::approx_size).sum::<usize>()
    }
}

/// The address of one record: a feature view and an entity key.
#[derive(Debug, Clone, Copy)]
pub struct RowKey<'a> {
    /// Feature view name.
    pub view: &'a str,
    /// Encoded entity key.
    pub entity: &'a EntityKey,
}

/// One record to write.
#[derive(Debug, Clone)]
pub struct RowWrite {
    /// Feature view name.
    pub view: Arc<str>,
    /// Encoded entity key.
    pub entity: EntityKey,
    /// The row.
    pub row: FeatureRow,
    /// When the record may be dropped by the store (epoch micros); `None` keeps it forever.
    pub expire_at: Option<EpochMicros>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Records stored (new, or newer than what was there).
    pub written: usize,
    /// Records not stored because the store already held a newer or equal one.
    pub skipped_older: usize,
}

impl std::ops::AddAssign for WriteOutcome {
    fn add_assign(&mut self, rhs: Self) {
        self.written += rhs.written;
        self.skipped_older += rhs.skipped_older;
    }
}

/// Errors of an online store. Serving answers 503 for [`StoreError::Unavailable`] and
/// [`StoreError::Timeout`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached (connection refused, reset, cluster down).
    #[error("online store unavailable: {0}")]
    Unavailable(String),
    /// The backend did not answer within the configured time.
    #[error("online store timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A stored record could not be decoded.
    #[error("corrupt record in online store: {0}")]
    Corrupt(String),
    /// Any other backend error.
    #[error("online store error: {0}")]
    Backend(String),
}

impl StoreError {
    /// True when the error means "try again later" (the store is down or slow).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }
}

/// An online store backend.
#[async_trait]
pub trait OnlineStore: Send + Sync + 'static {
    /// A short name for logs and metrics (`sqlite`, `redis`, `redis_cluster`).
    fn kind(&self) -> &'static str;

    /// Reads records; the result has one entry per key, in order (`None` = absent or expired).
    /// Implementations read all keys in as few round trips as the backend allows.
    async fn read(&self, keys: &[RowKey<'_>]) -> Result<Vec<Option<Arc<FeatureRow>>>, StoreError>;

    /// Writes records under the newer-wins rule, atomically per record.
    async fn write(&self, rows: &[RowWrite]) -> Result<WriteOutcome, StoreError>;

    /// The materialization watermark of a view (end of the last successful incremental run).
    async fn watermark(&self, view: &str) -> Result<Option<EpochMicros>, StoreError>;

    /// Records the materialization watermark of a view.
    async fn set_watermark(&self, view: &str, at: EpochMicros) -> Result<(), StoreError>;

    /// Checks that the backend answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Subscribes to the writes made by every Quiver instance sharing this store, for cache
    /// invalidation and freshness. `None` when the backend cannot announce writes.
    async fn subscribe_writes(&self) -> Result<Option<WriteNotices>, StoreError> {
        Ok(None)
    }
}

/// A write announced to every instance sharing a store.
#[derive(Debug, Clone)]
pub struct WriteNotice {
    /// Feature view.
    pub view: Arc<str>,
    /// Entity key.
    pub entity: EntityKey,
    /// Event timestamp of the written value.
    pub event_ts: EpochMicros,
    /// When the writer stored it (the writer's clock).
    pub written_at: EpochMicros,
}

/// What a write-announcement subscription delivers.
#[derive(Debug, Clone)]
pub enum StoreEvent {
    /// A record was written.
    Written(WriteNotice),
    /// The subscription was re-established; announcements may have been missed.
    Resync,
}

/// A stream of write announcements.
pub type WriteNotices = tokio::sync::mpsc::Receiver<StoreEvent>;

/// A shared online store handle.
pub type SharedStore = Arc<dyn OnlineStore>;

/// Opens the online store a registry's `online_store` section describes, for `project`, holding
/// the views of `catalog` (see [`crate::registry::Registry::store_catalog`]).
pub async fn open(
    spec: &OnlineStoreSpec,
    project: &str,
    catalog: &Arc<StoreCatalog>,
    clock: crate::clock::SharedClock,
) -> Result<SharedStore, StoreError> {
    spec.open(project, catalog, clock).await
}

#[cfg(test)]
mod tests {
    use super::{BACKENDS, OnlineStoreSpec};

    #[test]
    fn every_backend_type_is_registered_once() {
        let mut names: Vec<_> = BACKENDS.iter().map(|b| b.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BACKENDS.len(), "duplicate type in BACKENDS");
    }

    #[test]
    fn a_section_deserializes_through_serde_with_paths_in_messages() {
        let spec: OnlineStoreSpec = serde_yaml::from_str("type: sqlite\npath: x.db\n").unwrap();
        assert_eq!(spec.type_name(), "sqlite");
        let err = serde_yaml::from_str::<OnlineStoreSpec>(
            "type: redis\nconnection_string: x\nconnections: many\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("connections: invalid type: string \"many\", expected usize"),
            "{err}"
        );
    }

    #[test]
    fn a_sentinel_section_names_the_monitored_primary_as_feast_does() {
        let spec: OnlineStoreSpec = serde_yaml::from_str(
            "type: redis\nredis_type: redis_sentinel\nsentinel_master: cache\nconnection_string: s1:26379,s2:26379\n",
        )
        .unwrap();
        assert_eq!(spec.kind(), "redis_sentinel");
        let opts = spec.options::<super::redis::RedisOptions>().unwrap();
        assert_eq!(opts.sentinel_master, "cache");
        let default: OnlineStoreSpec = serde_yaml::from_str(
            "type: redis\nredis_type: redis_sentinel\nconnection_string: s1\n",
        )
        .unwrap();
        let opts = default.options::<super::redis::RedisOptions>().unwrap();
        assert_eq!(opts.sentinel_master, "mymaster");
    }

    #[test]
    fn the_embedded_store_is_the_default() {
        assert_eq!(OnlineStoreSpec::default().type_name(), "sqlite");
        assert_eq!(OnlineStoreSpec::default().key_ttl_slack().to_string(), "1h");
    }
}
