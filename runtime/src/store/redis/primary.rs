//! The one server a non-cluster store talks to: a standalone Redis, or the primary that Redis
//! Sentinel names (`redis_type: redis_sentinel`), whose connections are replaced when a failover
//! moves it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::sentinel::SentinelClient;
use ::redis::{Client, ConnectionInfo, RedisError};
use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::{bounded, config_error, map_error};
use crate::store::StoreError;

/// Sentinels are asked again at most this often, however many requests fail at once.
const SENTINEL_REASK: Duration = Duration::from_millis(200);

/// Connections to the primary, and (for Sentinel) how to find it again.
pub(super) struct Primary {
    /// The primary in use; swapped whole when Sentinel names another.
    current: ArcSwap<Current>,
    sentinel: Option<SentinelLookup>,
}

/// Connections to one server address.
pub(super) struct Current {
    /// Where the connections go (for logs and the write-announcement subscription).
    pub info: ConnectionInfo,
    /// Multiplexed connections that reconnect to `info` by themselves.
    pub conns: Vec<ConnectionManager>,
}

struct SentinelLookup {
    // Async mutex: asking the sentinels takes round trips, and one question at a time suffices.
    client: tokio::sync::Mutex<SentinelClient>,
    // Blocking mutex: read and replaced, never held across an await.
    last_asked: Mutex<Option<Instant>>,
    config: ConnectionManagerConfig,
    connections: usize,
    /// Bound of one question to the sentinels.
    timeout: Duration,
}

impl Current {
    /// `connections` lazily connecting managers for `client`.
    fn new(
        client: Client,
        config: &ConnectionManagerConfig,
        connections: usize,
    ) -> Result<Current, StoreError> {
        let conns = (0..connections)
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<_, _>>()
            .map_err(config_error)?;
        Ok(Current {
            info: client.get_connection_info().clone(),
            conns,
        })
    }
}

impl Primary {
    /// A standalone server: connects `connections` managers now (bounded by `timeout`), so an
    /// unreachable server is reported at once.
    pub async fn standalone(
        client: Client,
        config: ConnectionManagerConfig,
        connections: usize,
        timeout: Duration,
    ) -> Result<Primary, StoreError> {
        let current = Current::new(client, &config, connections)?;
        connect_all(&current, timeout).await?;
        Ok(Primary {
            current: ArcSwap::from_pointee(current),
            sentinel: None,
        })
    }

    /// The primary that the sentinels of `client` name, connected now (bounded by `timeout`).
    pub async fn from_sentinel(
        mut client: SentinelClient,
        config: ConnectionManagerConfig,
        connections: usize,
        timeout: Duration,
    ) -> Result<Primary, StoreError> {
        let primary = ask(&mut client, timeout).await?;
        let current = Current::new(primary, &config, connections)?;
        connect_all(&current, timeout).await?;
        Ok(Primary {
            current: ArcSwap::from_pointee(current),
            sentinel: Some(SentinelLookup {
                client: tokio::sync::Mutex::new(client),
                last_asked: Mutex::new(None),
                config,
                connections,
                timeout,
            }),
        })
    }

    /// The connections in use.
    pub fn current(&self) -> Arc<Current> {
        self.current.load_full()
    }

    /// Called after a request failed with `e` (`None`: it timed out): with Sentinel, asks the
    /// sentinels (at most every [`SENTINEL_REASK`]) where the primary is, and moves the
    /// connections there if it changed.
    pub async fn after_failure(&self, e: Option<&RedisError>) {
        let Some(sentinel) = &self.sentinel else {
            return;
        };
        if e.is_some_and(|e| !moves_primary(e)) {
            return;
        }
        {
            let mut last = sentinel.last_asked.lock();
            if last.is_some_and(|t| t.elapsed() < SENTINEL_REASK) {
                return;
            }
            *last = Some(Instant::now());
        }
        let mut client = sentinel.client.lock().await;
        match ask(&mut client, sentinel.timeout).await {
            Ok(primary) => {
                if primary.get_connection_info().addr() == self.current.load().info.addr() {
                    return;
                }
                match Current::new(primary, &sentinel.config, sentinel.connections) {
                    Ok(next) => {
                        tracing::warn!(
                            "redis sentinel: primary moved from {} to {}",
                            self.current.load().info.addr(),
                            next.info.addr()
                        );
                        self.current.store(Arc::new(next));
                    }
                    Err(e) => tracing::error!("redis sentinel: cannot use the new primary: {e}"),
                }
            }
            Err(e) => tracing::debug!("redis sentinel: cannot find the primary yet: {e}"),
        }
    }
}

/// True when `e` may mean the primary moved: it is unreachable, or it became a replica.
fn moves_primary(e: &RedisError) -> bool {
    is_stale(e)
        || e.is_timeout()
        || e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::ReadOnly)
}

/// True when a request failed because its connection is gone (the server restarted, failed over
/// or closed it), so the same request on a fresh connection may succeed. Usually nothing ran; if a
/// reset came after the server ran it, running it again is harmless (reads, `SET` of a watermark,
/// and newer-wins writes, which then count the row as skipped).
pub(super) fn is_stale(e: &RedisError) -> bool {
    e.is_connection_dropped() || e.is_io_error() || e.is_connection_refusal()
}

/// Asks the sentinels for a client of the primary.
async fn ask(client: &mut SentinelClient, timeout: Duration) -> Result<Client, StoreError> {
    bounded(timeout, async {
        client
            .async_get_client()
            .await
            .map_err(|e| match map_error(e, timeout) {
                StoreError::Backend(m) => {
                    StoreError::Unavailable(format!("no primary from redis sentinel: {m}"))
                }
                other => other,
            })
    })
    .await
}

/// Waits until every manager of `current` has connected.
async fn connect_all(current: &Current, timeout: Duration) -> Result<(), StoreError> {
    let pings = current.conns.iter().map(|conn| {
        let mut conn = conn.clone();
        bounded(timeout, async move {
            ::redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map_err(|e| map_error(e, timeout))
        })
    });
    futures::future::try_join_all(pings).await.map(|_| ())
}
