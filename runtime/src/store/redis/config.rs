//! The options of the Redis online store: `online_store: {type: redis, ...}`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::RedisStore;
use crate::clock::SharedClock;
use crate::settings::HumanDuration;
use crate::store::reconnect::{Connect, Reconnecting};
use crate::store::{
    SharedStore, SpecError, StoreCatalog, StoreError, StoreOptions, default_key_ttl_slack,
};

/// Standalone Redis, Redis behind Sentinel, or Redis Cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisType {
    /// A single Redis server (or a primary).
    #[default]
    Redis,
    /// A Redis Cluster; `connection_string` lists one or more seed nodes.
    RedisCluster,
    /// A primary found through Redis Sentinel; `connection_string` lists the sentinels and
    /// `sentinel_master` names the monitored primary.
    RedisSentinel,
}

/// How records are laid out in Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisLayout {
    /// Quiver's own: one MessagePack record per (project, view, entity key), hash-tagged by
    /// entity (docs/redis-layout.md, "Records").
    #[default]
    Quiver,
    /// Feast's: one hash per entity key with protobuf values, read and written by Feast 0.67
    /// as well (docs/redis-layout.md, "Feast's layout").
    Feast,
}

/// Options of the Redis online store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]`, `rediss://...` (TLS), or Feast's
    /// `host:port[,host:port...][,password=...,ssl=true,db=N]`.
    pub connection_string: String,
    /// `redis` (default), `redis_cluster` or `redis_sentinel`.
    #[serde(default)]
    pub redis_type: RedisType,
    /// With `redis_sentinel`: the name the sentinels monitor the primary under (as in Feast).
    #[serde(default = "RedisOptions::default_sentinel_master")]
    pub sentinel_master: String,
    /// Time allowed to establish a connection.
    #[serde(default = "RedisOptions::default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Time allowed for one command or pipeline round trip.
    #[serde(default = "RedisOptions::default_command_timeout")]
    pub command_timeout: HumanDuration,
    /// Number of multiplexed connections (per node in cluster mode) requests are spread over.
    #[serde(default = "RedisOptions::default_connections")]
    pub connections: usize,
    /// Records written per pipeline during materialization and pushes.
    #[serde(default = "RedisOptions::default_write_batch_size")]
    pub write_batch_size: usize,
    /// How long a key outlives its view's ttl before Redis expires it.
    #[serde(default = "default_key_ttl_slack")]
    pub key_ttl_slack: HumanDuration,
    /// `quiver` (default) or `feast`: whose key and value layout the store uses.
    #[serde(default)]
    pub layout: RedisLayout,
    /// With `layout: feast`: `EXPIRE` set on an entity's hash at every write (Feast's option).
    #[serde(default)]
    pub key_ttl_seconds: Option<u64>,
}

impl RedisOptions {
    fn default_connect_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(1))
    }
    fn default_command_timeout() -> HumanDuration {
        HumanDuration(Duration::from_millis(500))
    }
    fn default_connections() -> usize {
        2
    }
    fn default_write_batch_size() -> usize {
        1000
    }
    fn default_sentinel_master() -> String {
        "mymaster".into()
    }

    /// Options for `connection_string` with every other field at its default.
    pub fn with_connection_string(
        connection_string: impl Into<String>,
        redis_type: RedisType,
    ) -> Self {
        RedisOptions {
            connection_string: connection_string.into(),
            redis_type,
            sentinel_master: Self::default_sentinel_master(),
            connect_timeout: Self::default_connect_timeout(),
            command_timeout: Self::default_command_timeout(),
            connections: Self::default_connections(),
            write_batch_size: Self::default_write_batch_size(),
            key_ttl_slack: default_key_ttl_slack(),
            layout: RedisLayout::default(),
            key_ttl_seconds: None,
        }
    }
}

impl StoreOptions for RedisOptions {
    const TYPE: &'static str = "redis";

    fn kind(&self) -> &'static str {
        match self.redis_type {
            RedisType::Redis => "redis",
            RedisType::RedisCluster => "redis_cluster",
            RedisType::RedisSentinel => "redis_sentinel",
        }
    }

    fn key_ttl_slack(&self) -> HumanDuration {
        self.key_ttl_slack
    }

    /// Feast's layout prepares each view's field names and key types when the store opens.
    fn uses_catalog(&self) -> bool {
        self.layout == RedisLayout::Feast
    }

    fn check(&mut self, _base_dir: &Path) -> Vec<SpecError> {
        let mut problems = Vec::new();
        if self.connection_string.trim().is_empty() {
            problems.push(SpecError::new("connection_string", "must not be empty"));
        }
        if self.redis_type == RedisType::RedisSentinel && self.sentinel_master.trim().is_empty() {
            problems.push(SpecError::new("sentinel_master", "must not be empty"));
        }
        if self.connections == 0 {
            problems.push(SpecError::new("connections", "must be at least 1"));
        }
        if self.write_batch_size == 0 {
            problems.push(SpecError::new("write_batch_size", "must be at least 1"));
        }
        if self.command_timeout.0 < Duration::from_millis(1) {
            problems.push(SpecError::new("command_timeout", "must be at least 1ms"));
        }
        match (self.layout, self.key_ttl_seconds) {
            (RedisLayout::Quiver, Some(_)) => problems.push(SpecError::new(
                "key_ttl_seconds",
                "applies to layout: feast only; Quiver's layout expires each record at its event \
                 time + the view's ttl + key_ttl_slack",
            )),
            (RedisLayout::Feast, Some(0)) => {
                problems.push(SpecError::new("key_ttl_seconds", "must be at least 1"))
            }
            _ => {}
        }
        problems
    }

    /// Connects; when Redis is unreachable (not misconfigured), returns a store that answers
    /// [`StoreError::Unavailable`] and keeps connecting in the background, so serving starts
    /// unready and becomes ready by itself.
    async fn open(
        &self,
        project: &str,
        catalog: &Arc<StoreCatalog>,
        clock: SharedClock,
    ) -> Result<SharedStore, StoreError> {
        match RedisStore::connect(self, project, catalog, clock.clone()).await {
            Ok(store) => Ok(Arc::new(store)),
            Err(e) if e.is_unavailable() => {
                let (opts, project) = (self.clone(), Arc::<str>::from(project));
                let catalog = Arc::clone(catalog);
                let connect: Connect = Box::new(move || {
                    let (opts, project, clock) = (opts.clone(), project.clone(), clock.clone());
                    let catalog = Arc::clone(&catalog);
                    Box::pin(async move {
                        let store = RedisStore::connect(&opts, &project, &catalog, clock).await?;
                        Ok(Arc::new(store) as SharedStore)
                    })
                });
                Ok(Arc::new(Reconnecting::spawn(self.kind(), e, connect)))
            }
            Err(e) => Err(e),
        }
    }
}
