//! The Redis online store: standalone, behind Redis Sentinel, or Redis Cluster (layout:
//! docs/redis-layout.md).
//!
//! - One key per (project, view, entity key), holding the [`codec`](super::codec) record; the key's
//!   hash tag is derived from the entity key, so all views of an entity share one cluster slot.
//! - Reads are one round trip: one `MGET` on a standalone server; on a cluster, one `MGET` per slot,
//!   all slots in flight at once (so one round trip per node in wall time, never a cross-slot
//!   command).
//! - Writes run a Lua script that applies newer-wins on the server (atomic per record) and sets
//!   `PXAT expire_at`; one call writes up to 64 records (one on a cluster). Rows are sent
//!   in chunks of `write_batch_size`: one pipeline of calls per chunk on a standalone server; on a
//!   cluster, the calls of a chunk all in flight at once, so each node's multiplexed connection
//!   carries them as one pipeline.
//! - Every round trip is bounded by `command_timeout` ([`StoreError::Timeout`]); refused or dropped
//!   connections are [`StoreError::Unavailable`]. Connections reconnect on their own, so serving
//!   recovers when Redis comes back without restarting Quiver; a request that finds its pooled
//!   connection stale (Redis restarted since its last use) is sent once more on the reconnected
//!   one, so the first request after a restart does not fail.
//! - With Sentinel, the store asks the sentinels where the primary is at start-up and again after
//!   a failed request, and moves its connections when a failover moved the primary.
//! - A cluster is ready when `CLUSTER INFO` says `cluster_state:ok`, `CLUSTER SLOTS` covers every
//!   slot, and every master it names answers PING.

mod config;
pub mod feast;
mod layout;
mod primary;
mod target;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use ::redis::io::tcp::TcpSettings;
use ::redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use ::redis::{
    Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisError, Script, ServerErrorKind, TlsMode, Value as RedisValue,
};
use async_trait::async_trait;
use futures::StreamExt;
use futures::future::try_join_all;

pub use config::{RedisLayout, RedisOptions, RedisType};
pub use layout::{record_key, slot_of_key, watermark_key};
pub use target::RedisTarget;

use self::feast::{FeastLayout, PendingRead};
use self::primary::{Primary, is_stale};
use super::codec::{decode_row, encode_row};
use super::{
    FeatureRow, OnlineStore, RowKey, RowWrite, StoreCatalog, StoreError, StoreEvent, StoreOptions,
    WriteNotice, WriteNotices, WriteOutcome,
};
use crate::clock::SharedClock;
use crate::types::{EpochMicros, Value};

/// Newer-wins write of records, in order.
///
/// `KEYS[i]` record key; `ARGV[4i-3..4i]` = its event_ts, created_ts, record, expire_at in epoch
/// milliseconds (`""` = no expiry). Returns an array with, per key, 1 when the record was written
/// and 0 when the stored one is newer or equal. Records are applied one after the other, so a key
/// given twice ends with the newer.
///
/// Only the stored record's head is read: its array header and the two integers after it (event
/// and created timestamps, [`codec`](super::codec)), decoded from MessagePack's integer formats in
/// place, so the cost does not grow with the number of values. A stored value whose head is not
/// that (not a record: corrupt) is replaced. Timestamps are compared as Lua numbers (doubles):
/// exact for epoch microseconds up to year 2255.
const WRITE_SCRIPT: &str = r#"
local function int_at(s, p)
  local b = string.byte(s, p)
  if not b then return nil, p end
  if b < 0x80 then return b, p + 1 end
  if b >= 0xe0 then return b - 256, p + 1 end
  if b == 0xcc then return struct.unpack('>I1', s, p + 1) end
  if b == 0xcd then return struct.unpack('>I2', s, p + 1) end
  if b == 0xce then return struct.unpack('>I4', s, p + 1) end
  if b == 0xd0 then return struct.unpack('>i1', s, p + 1) end
  if b == 0xd1 then return struct.unpack('>i2', s, p + 1) end
  if b == 0xd2 then return struct.unpack('>i4', s, p + 1) end
  if (b == 0xcf or b == 0xd3) and #s >= p + 8 then
    local hi, lo = struct.unpack('>I4I4', s, p + 1)
    if b == 0xd3 and hi >= 2147483648 then hi = hi - 4294967296 end
    return hi * 4294967296 + lo, p + 9
  end
  return nil, p
end
local function stamps(s)
  local b = string.byte(s, 1)
  local p
  if b and b >= 0x92 and b <= 0x9f then p = 2
  elseif b == 0xdc then p = 4
  else return nil end
  local ev, cr
  ev, p = int_at(s, p)
  if ev == nil then return nil end
  cr, p = int_at(s, p)
  return ev, cr
end
local written = {}
for i = 1, #KEYS do
  local a = 4 * (i - 1)
  local key = KEYS[i]
  local newer = 1
  local cur = redis.call('GET', key)
  if cur then
    local ok, ev, cr = pcall(stamps, cur)
    if ok and ev ~= nil and cr ~= nil then
      local new_ev = tonumber(ARGV[a + 1])
      if ev > new_ev or (ev == new_ev and cr >= tonumber(ARGV[a + 2])) then
        newer = 0
      end
    end
  end
  if newer == 1 then
    if ARGV[a + 4] == '' then
      redis.call('SET', key, ARGV[a + 3])
    else
      redis.call('SET', key, ARGV[a + 3], 'PXAT', ARGV[a + 4])
    end
  end
  written[i] = newer
end
return written
"#;

/// Records per call of [`WRITE_SCRIPT`]: enough to spread a call's fixed cost (command dispatch,
/// script lookup, Lua set-up) over many records, few enough that one call, which Redis runs
/// atomically, holds the server for well under a millisecond.
const RECORDS_PER_SCRIPT_CALL: usize = 64;

/// Fields of a hash above which a listpack encoding makes reads costly: Redis finds each field of
/// an `HMGET` by scanning the listpack from its start, so reading a whole hash of `n` fields costs
/// O(n²) (measured: 13x the Redis CPU of a hash table at 275 fields; docs/redis-layout.md).
const WIDE_HASH_FIELDS: usize = 128;

/// One `HMGET` of Feast's layout: the hash's slot, the command, and the views it reads as
/// (index of the key in the request, number of fields, how to decode them).
type HashRead<'a> = (u16, Cmd, Vec<(usize, usize, PendingRead<'a>)>);

/// One call of the write script: the rows it writes (indices into the written chunk), the slot of
/// its keys, and the command.
struct WriteCall {
    rows: Vec<usize>,
    slot: u16,
    cmd: Cmd,
}

/// The Redis online store (standalone, Sentinel or cluster).
pub struct RedisStore {
    kind: &'static str,
    project: Arc<str>,
    backend: Backend,
    // Round-robin cursor over the connections; relaxed is enough, any spread will do.
    next: AtomicUsize,
    command_timeout: Duration,
    write_batch_size: usize,
    /// The write script of the layout ([`WRITE_SCRIPT`], or [`feast::WRITE_SCRIPT`]).
    script: Script,
    script_source: &'static str,
    /// Feast's layout, with every view prepared; `None` for Quiver's own.
    feast: Option<FeastLayout>,
    /// "Now" for skipping already-expired rows and stamping write announcements.
    clock: SharedClock,
    /// Nodes a write-announcement subscription may connect to (any node of a cluster relays
    /// every publication); with Sentinel, the current primary instead.
    pubsub_nodes: Vec<ConnectionInfo>,
    /// The parsed connection string, to reach cluster masters directly for readiness.
    target: RedisTarget,
    tcp: TcpSettings,
    connect_timeout: Duration,
}

enum Backend {
    /// A standalone server, or the primary Sentinel names.
    Primary(Arc<Primary>),
    Cluster(Vec<ClusterConnection>),
}

impl RedisStore {
    /// Connects to the Redis server or cluster that `opts` describes, for `project`, holding the
    /// views of `catalog` (used by `layout: feast`), reading "now" from `clock`.
    ///
    /// Connects eagerly and loads the write script: an unreachable server is
    /// [`StoreError::Unavailable`] or [`StoreError::Timeout`], a malformed connection string or
    /// option [`StoreError::Backend`]. ([`RedisOptions`]' `open` turns the first kind into a store
    /// that keeps connecting in the background.)
    pub async fn connect(
        opts: &RedisOptions,
        project: &str,
        catalog: &StoreCatalog,
        clock: SharedClock,
    ) -> Result<RedisStore, StoreError> {
        let target = RedisTarget::parse(&opts.connection_string)
            .map_err(|e| StoreError::Backend(format!("invalid redis connection_string: {e}")))?;
        let connect_timeout = opts.connect_timeout.0.max(Duration::from_millis(1));
        let command_timeout = opts.command_timeout.0.max(Duration::from_millis(1));
        let connections = opts.connections.max(1);
        let tcp = TcpSettings::default().set_nodelay(true);
        let nodes: Vec<ConnectionInfo> = target
            .nodes
            .iter()
            .map(|(host, port)| connection_info(&target, host, *port, &tcp))
            .collect::<Result<_, _>>()?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(command_timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(3);

        let backend = match opts.redis_type {
            RedisType::Redis => {
                if nodes.len() > 1 {
                    return Err(StoreError::Backend(
                        "several hosts in connection_string need redis_type: redis_cluster or \
                         redis_sentinel"
                            .into(),
                    ));
                }
                let client = Client::open(nodes[0].clone()).map_err(config_error)?;
                Backend::Primary(Arc::new(
                    Primary::standalone(client, manager_config, connections, connect_timeout)
                        .await?,
                ))
            }
            RedisType::RedisSentinel => {
                let master = opts.sentinel_master.trim();
                if master.is_empty() {
                    return Err(StoreError::Backend(
                        "invalid redis configuration: sentinel_master must not be empty".into(),
                    ));
                }
                let sentinels = target
                    .nodes
                    .iter()
                    .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
                let mut builder =
                    SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)
                        .map_err(config_error)?
                        .set_client_to_redis_db(target.db)
                        .set_client_to_redis_tcp_settings(tcp.clone())
                        .set_client_to_sentinel_tcp_settings(tcp.clone());
                if target.tls {
                    builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
                }
                if let Some(user) = &target.username {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(password) = &target.password {
                    builder = builder.set_client_to_redis_password(password);
                }
                let client = builder.build().map_err(config_error)?;
                // Asking the sentinels is a connect plus a round trip or two.
                let bound = connect_timeout + command_timeout;
                Backend::Primary(Arc::new(
                    Primary::from_sentinel(client, manager_config, connections, bound).await?,
                ))
            }
            RedisType::RedisCluster => {
                if target.db != 0 {
                    return Err(StoreError::Backend(
                        "Redis Cluster has only database 0; remove db from connection_string"
                            .into(),
                    ));
                }
                let client: ClusterClient = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(connect_timeout)
                    .response_timeout(command_timeout)
                    .tcp_settings(tcp.clone())
                    .build()
                    .map_err(config_error)?;
                let conns = (0..connections).map(|_| {
                    let client = client.clone();
                    // Discovering the topology is a connect plus a CLUSTER SLOTS round trip.
                    bounded(connect_timeout + command_timeout, async move {
                        client
                            .get_async_connection()
                            .await
                            .map_err(|e| map_error(e, connect_timeout))
                    })
                });
                Backend::Cluster(try_join_all(conns).await?)
            }
        };
        let (script_source, feast) = match opts.layout {
            RedisLayout::Quiver => (WRITE_SCRIPT, None),
            RedisLayout::Feast => (
                feast::WRITE_SCRIPT,
                Some(FeastLayout::new(project, catalog, opts.key_ttl_seconds)),
            ),
        };
        let store = RedisStore {
            kind: opts.kind(),
            project: Arc::from(project),
            backend,
            next: AtomicUsize::new(0),
            command_timeout,
            write_batch_size: opts.write_batch_size.max(1),
            script: Script::new(script_source),
            script_source,
            feast,
            clock,
            pubsub_nodes: nodes,
            target,
            tcp,
            connect_timeout,
        };
        store.load_script().await?;
        if let Some(feast) = &store.feast {
            store.warn_on_listpack_hashes(feast.widest_hash()).await;
        }
        Ok(store)
    }

    /// Warns when Feast's layout will keep hashes wider than [`WIDE_HASH_FIELDS`] that the
    /// server stores as listpacks (its `hash-max-listpack-entries` is at least the hash's field
    /// count). Servers that refuse `CONFIG GET` (managed services often rename it) are not
    /// checked.
    async fn warn_on_listpack_hashes(&self, widest: usize) {
        if widest <= WIDE_HASH_FIELDS {
            return;
        }
        let mut cmd = ::redis::cmd("CONFIG");
        cmd.arg("GET").arg("hash-max-listpack-entries");
        let reply = match &self.backend {
            Backend::Primary(_) => self.query::<RedisValue>(&cmd).await,
            Backend::Cluster(conns) => {
                let mut conn = conns[self.pick(conns.len())].clone();
                self.timed(route(&mut conn, cmd, any_node())).await
            }
        };
        let entries = reply.ok().and_then(|reply| {
            let pairs: Vec<(String, String)> = ::redis::from_redis_value(reply).ok()?;
            pairs.first()?.1.parse::<usize>().ok()
        });
        match entries {
            Some(entries) if entries >= widest => tracing::warn!(
                "layout: feast keeps up to {widest} fields in one entity's hash, and this Redis \
                 stores hashes of up to {entries} fields (hash-max-listpack-entries) as lists it \
                 scans once per field read: set hash-max-listpack-entries below {widest} (for \
                 example {WIDE_HASH_FIELDS}) before writing (docs/redis-layout.md)"
            ),
            Some(_) => {}
            None => tracing::debug!("cannot read hash-max-listpack-entries; not checked"),
        }
    }

    /// The next connection index, round-robin.
    fn pick(&self, len: usize) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % len
    }

    /// Runs `fut` bounded by the command timeout.
    async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        let timeout = self.command_timeout;
        bounded(timeout, async move {
            fut.await.map_err(|e| map_error(e, timeout))
        })
        .await
    }

    /// Runs `fut` bounded by the command timeout, leaving its client error for the caller to look at.
    async fn timed_raw<T>(
        &self,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<Result<T, RedisError>, StoreError> {
        tokio::time::timeout(self.command_timeout, fut)
            .await
            .map_err(|_| StoreError::Timeout(self.command_timeout))
    }

    /// Runs `op` on a connection to the primary, bounded by the command timeout. When the
    /// connection turned out stale (the server restarted or failed over since its last use; nothing
    /// ran), `op` runs once more on the reconnected connection (with Sentinel, on the primary the
    /// sentinels name now), so the first request after a restart does not fail.
    async fn on_primary<T, Fut>(
        &self,
        primary: &Primary,
        op: impl Fn(ConnectionManager) -> Fut,
    ) -> Result<Result<T, RedisError>, StoreError>
    where
        Fut: Future<Output = Result<T, RedisError>>,
    {
        // The retry goes over the same connection, which the failure made reconnect (another
        // pooled connection may be just as stale); after a Sentinel move, the same slot of the new
        // primary's connections.
        let slot = self.pick(primary.current().conns.len());
        let conn =
            |current: Arc<primary::Current>| current.conns[slot % current.conns.len()].clone();
        let first = self.timed_raw(op(conn(primary.current()))).await;
        let stale = match &first {
            Ok(Ok(_)) => return first,
            Ok(Err(e)) => {
                primary.after_failure(Some(e)).await;
                is_stale(e) || is_read_only(e)
            }
            Err(_) => {
                primary.after_failure(None).await;
                false
            }
        };
        if !stale {
            return first;
        }
        let second = self.timed_raw(op(conn(primary.current()))).await;
        match &second {
            Ok(Err(e)) => primary.after_failure(Some(e)).await,
            Err(_) => primary.after_failure(None).await,
            Ok(Ok(_)) => {}
        }
        second
    }

    /// Sends one command to wherever its key lives.
    async fn query<T: ::redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        match &self.backend {
            Backend::Primary(primary) => self
                .on_primary(primary, |mut conn| async move {
                    cmd.query_async(&mut conn).await
                })
                .await?
                .map_err(|e| map_error(e, self.command_timeout)),
            Backend::Cluster(conns) => {
                let mut conn = conns[self.pick(conns.len())].clone();
                self.timed(cmd.query_async(&mut conn)).await
            }
        }
    }

    /// Loads the write script (on every master of a cluster), so `EVALSHA` finds it.
    async fn load_script(&self) -> Result<(), StoreError> {
        let mut load = ::redis::cmd("SCRIPT");
        load.arg("LOAD").arg(self.script_source);
        match &self.backend {
            Backend::Primary(_) => {
                // Every connection reaches the same server; loading once is enough.
                self.query::<String>(&load).await?;
            }
            Backend::Cluster(conns) => {
                let mut conn = conns[self.pick(conns.len())].clone();
                let routing = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                self.timed(route(&mut conn, load, routing)).await?;
            }
        }
        Ok(())
    }

    /// The script calls writing the live rows of `rows` (rows already expired count as skipped in
    /// `outcome`). Feast's layout, and any layout on a cluster, take one call per row; Quiver's
    /// layout on a standalone server packs up to [`RECORDS_PER_SCRIPT_CALL`] records into each
    /// call, in the rows' order.
    fn write_calls(
        &self,
        rows: &[RowWrite],
        now_micros: EpochMicros,
        outcome: &mut WriteOutcome,
    ) -> Result<Vec<WriteCall>, StoreError> {
        let sha = self.script.get_hash();
        let live = rows
            .iter()
            .enumerate()
            .filter(|(_, w)| w.expire_at.is_none_or(|at| at > now_micros));
        let mut calls = Vec::new();
        if let Some(feast) = &self.feast {
            for (i, w) in live {
                let key = feast.key(&w.view, &w.entity)?;
                let cmd = feast.write_command(sha, &key, w, now_micros)?;
                calls.push(WriteCall {
                    rows: vec![i],
                    slot: slot_of_key(&key),
                    cmd,
                });
            }
            outcome.skipped_older += rows.len() - calls.len();
            return Ok(calls);
        }
        // On a cluster, one record per call: records of different entities rarely share a slot,
        // and while a slot migrates a call whose keys are split between two nodes is refused
        // (TRYAGAIN) until the migration ends, where a single key just follows ASK.
        let cluster = matches!(self.backend, Backend::Cluster(_));
        let per_call = if cluster { 1 } else { RECORDS_PER_SCRIPT_CALL };
        let keyed: Vec<(usize, Vec<u8>)> = live
            .map(|(i, w)| {
                let mut key = Vec::with_capacity(64);
                layout::push_record_key(&mut key, &self.project, &w.view, w.entity.as_bytes());
                (i, key)
            })
            .collect();
        outcome.skipped_older += rows.len() - keyed.len();
        // In order, so that rows of one key are applied in the order given.
        for part in keyed.chunks(per_call) {
            let mut cmd = ::redis::cmd("EVALSHA");
            cmd.arg(sha).arg(part.len());
            for (_, key) in part {
                cmd.arg(key);
            }
            for &(i, _) in part {
                let w = &rows[i];
                cmd.arg(w.row.event_ts)
                    .arg(w.row.created_ts)
                    .arg(encode_row(&w.row));
                match w.expire_at {
                    // Round up to the millisecond so a record never expires before `expire_at`.
                    Some(at) => {
                        cmd.arg(at.div_euclid(1000) + i64::from(at.rem_euclid(1000) != 0))
                    }
                    None => cmd.arg(""),
                };
            }
            let first_key = &part[0].1;
            calls.push(WriteCall {
                rows: part.iter().map(|(i, _)| *i).collect(),
                slot: slot_of_key(first_key),
                cmd,
            });
        }
        Ok(calls)
    }

    /// Writes one chunk of at most `write_batch_size` rows.
    async fn write_chunk(
        &self,
        rows: &[RowWrite],
        now: EpochMicros,
    ) -> Result<WriteOutcome, StoreError> {
        let mut outcome = WriteOutcome::default();
        let calls = self.write_calls(rows, now, &mut outcome)?;
        if calls.is_empty() {
            return Ok(outcome);
        }
        let results = match &self.backend {
            Backend::Primary(primary) => self.write_calls_standalone(primary, &calls).await?,
            Backend::Cluster(conns) => self.write_calls_cluster(conns, &calls).await?,
        };
        count_results(&mut outcome, results);
        Ok(outcome)
    }

    /// Sends the calls of a chunk to a standalone server as one pipeline; returns one 1/0 result
    /// per written row.
    async fn write_calls_standalone(
        &self,
        primary: &Primary,
        calls: &[WriteCall],
    ) -> Result<Vec<i64>, StoreError> {
        let mut pipe = Pipeline::with_capacity(calls.len());
        for call in calls {
            pipe.add_command(call.cmd.clone());
        }
        let send = |mut conn: ConnectionManager| {
            let pipe = &pipe;
            async move { pipe.query_async::<Vec<RedisValue>>(&mut conn).await }
        };
        let replies: Vec<RedisValue> = match self.on_primary(primary, send).await? {
            Err(e) if is_no_script(&e) => {
                // The server lost its script cache (restart, failover, SCRIPT FLUSH): no call of
                // the pipeline ran, so load the script and send the chunk again.
                self.load_script().await?;
                self.on_primary(primary, send)
                    .await?
                    .map_err(|e| map_error(e, self.command_timeout))?
            }
            other => other.map_err(|e| map_error(e, self.command_timeout))?,
        };
        let mut results = Vec::new();
        for (call, reply) in calls.iter().zip(replies) {
            script_results(reply, call.rows.len(), &mut results)?;
        }
        Ok(results)
    }

    /// Sends the calls of a chunk to a cluster, each to its slot's master, all in flight at once
    /// (so each node's multiplexed connection carries them as one pipeline); returns one 1/0
    /// result per written row.
    async fn write_calls_cluster(
        &self,
        conns: &[ClusterConnection],
        calls: &[WriteCall],
    ) -> Result<Vec<i64>, StoreError> {
        let conn = conns[self.pick(conns.len())].clone();
        let send = |i: usize| {
            let mut conn = conn.clone();
            let call = &calls[i];
            async move {
                (
                    i,
                    route(&mut conn, call.cmd.clone(), slot_route(call.slot)).await,
                )
            }
        };
        let replies = self
            .timed_raw(async { Ok(futures::future::join_all((0..calls.len()).map(send)).await) })
            .await?
            .map_err(|e| map_error(e, self.command_timeout))?;
        let mut results = Vec::new();
        let mut retry = Vec::new();
        for (i, reply) in replies {
            match reply {
                Ok(v) => script_results(v, calls[i].rows.len(), &mut results)?,
                // This call did not run: its node lost the script cache.
                Err(e) if is_no_script(&e) => retry.push(i),
                Err(e) => return Err(map_error(e, self.command_timeout)),
            }
        }
        if !retry.is_empty() {
            self.load_script().await?;
            let again = self
                .timed_raw(async {
                    Ok(futures::future::join_all(retry.into_iter().map(send)).await)
                })
                .await?
                .map_err(|e| map_error(e, self.command_timeout))?;
            for (i, reply) in again {
                let reply = reply.map_err(|e| map_error(e, self.command_timeout))?;
                script_results(reply, calls[i].rows.len(), &mut results)?;
            }
        }
        Ok(results)
    }

    /// Publishes the keys of a written chunk on the project's write channel, so every Quiver
    /// instance drops them from its L1 cache. A failed publication is logged, not returned: the
    /// records are stored, and caches converge within their ttl.
    async fn announce(&self, rows: &[RowWrite], now: EpochMicros) {
        let notices: Vec<[Value; 4]> = rows
            .iter()
            .map(|w| {
                [
                    Value::String(w.view.to_string()),
                    Value::Bytes(w.entity.as_bytes().to_vec()),
                    Value::Int(w.row.event_ts),
                    Value::Int(now),
                ]
            })
            .collect();
        let payload = rmp_serde::to_vec(&notices).expect("encoding to a Vec cannot fail");
        let mut publish = ::redis::cmd("PUBLISH");
        publish
            .arg(layout::write_channel(&self.project))
            .arg(payload);
        if let Err(e) = self.query::<i64>(&publish).await {
            tracing::warn!(
                "cannot announce {} written records to other instances: {e}",
                rows.len()
            );
        }
    }

    /// Readiness of a cluster: every slot range is served. `CLUSTER INFO` must say
    /// `cluster_state:ok`, `CLUSTER SLOTS` must cover all 16384 slots, and every master it names
    /// must answer PING on a connection of its own (a master that just died is still listed, and
    /// the others keep saying `ok` until `cluster-node-timeout` has passed).
    async fn cluster_ready(&self, conns: &[ClusterConnection]) -> Result<(), StoreError> {
        let mut conn = conns[self.pick(conns.len())].clone();
        let mut info = ::redis::cmd("CLUSTER");
        info.arg("INFO");
        let info: String =
            ::redis::from_redis_value(self.timed(route(&mut conn, info, any_node())).await?)
                .map_err(|e| StoreError::Backend(format!("unexpected CLUSTER INFO reply: {e}")))?;
        if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
            return Err(StoreError::Unavailable(
                "redis cluster_state is not ok".into(),
            ));
        }
        let mut slots = ::redis::cmd("CLUSTER");
        slots.arg("SLOTS");
        let slots = self.timed(route(&mut conn, slots, any_node())).await?;
        let (covered, masters) = slot_masters(slots)?;
        if covered < 16384 {
            return Err(StoreError::Unavailable(format!(
                "redis cluster serves {covered} of 16384 slots"
            )));
        }
        let bound = self.connect_timeout + self.command_timeout;
        let pings = masters.into_iter().map(|(host, port)| {
            let info = connection_info(&self.target, &host, port, &self.tcp);
            async move {
                let result = bounded(bound, async {
                    let client = Client::open(info?).map_err(config_error)?;
                    let mut conn = client
                        .get_multiplexed_async_connection()
                        .await
                        .map_err(|e| map_error(e, bound))?;
                    ::redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .map_err(|e| map_error(e, bound))
                })
                .await;
                result.map_err(|e| {
                    StoreError::Unavailable(format!("redis cluster master {host}:{port}: {e}"))
                })
            }
        });
        try_join_all(pings).await.map(|_| ())
    }

    /// Reads in Feast's layout: one `HMGET` per entity hash (all the views asked for), in one
    /// pipeline on a standalone server, all in flight at once on a cluster (each routed by the
    /// slot of its whole key).
    async fn read_feast(
        &self,
        feast: &FeastLayout,
        keys: &[RowKey<'_>],
    ) -> Result<Vec<Option<Arc<FeatureRow>>>, StoreError> {
        // Feast keeps every view of an entity in one hash: one HMGET per hash reads all the
        // requested views of that entity, whatever their number.
        let mut hashes: HashMap<Vec<u8>, usize> = HashMap::with_capacity(keys.len());
        let mut reads: Vec<HashRead<'_>> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let key = feast.key(k.view, k.entity)?;
            let at = match hashes.get(&key) {
                Some(&at) => at,
                None => {
                    let mut cmd = ::redis::cmd("HMGET");
                    cmd.arg(&key);
                    reads.push((slot_of_key(&key), cmd, Vec::new()));
                    hashes.insert(key, reads.len() - 1);
                    reads.len() - 1
                }
            };
            let (_, cmd, views) = &mut reads[at];
            let (fields, pending) = feast.push_read_fields(cmd, k.view)?;
            views.push((i, fields, pending));
        }
        let replies: Vec<RedisValue> = match &self.backend {
            Backend::Primary(primary) => {
                let mut pipe = Pipeline::with_capacity(reads.len());
                for (_, cmd, _) in &reads {
                    pipe.add_command(cmd.clone());
                }
                let send = |mut conn: ConnectionManager| {
                    let pipe = &pipe;
                    async move { pipe.query_async::<Vec<RedisValue>>(&mut conn).await }
                };
                self.on_primary(primary, send)
                    .await?
                    .map_err(|e| map_error(e, self.command_timeout))?
            }
            Backend::Cluster(conns) => {
                let conn = conns[self.pick(conns.len())].clone();
                let calls = reads.iter().map(|(slot, cmd, _)| {
                    let mut conn = conn.clone();
                    let cmd = cmd.clone();
                    let slot = *slot;
                    async move { route(&mut conn, cmd, slot_route(slot)).await }
                });
                self.timed(try_join_all(calls)).await?
            }
        };
        if replies.len() != reads.len() {
            return Err(StoreError::Backend(format!(
                "{} HMGET replies for {} hashes",
                replies.len(),
                reads.len()
            )));
        }
        let now = self.clock.now_micros();
        let mut out = vec![None; keys.len()];
        for ((_, _, views), reply) in reads.iter().zip(replies) {
            let RedisValue::Array(fields) = reply else {
                return Err(StoreError::Corrupt(format!(
                    "unexpected HMGET reply {reply:?}"
                )));
            };
            let expected: usize = views.iter().map(|(_, n, _)| n).sum();
            if fields.len() != expected {
                return Err(StoreError::Corrupt(format!(
                    "HMGET returned {} fields for {expected}",
                    fields.len()
                )));
            }
            let mut fields = fields.into_iter();
            for (i, n, pending) in views {
                let mut view_fields = fields.by_ref().take(*n);
                out[*i] = FeastLayout::decode_read(pending, &mut view_fields, now)?;
                // Decoding may stop early (an absent row): skip to the next view's fields.
                view_fields.for_each(drop);
            }
        }
        Ok(out)
    }

    /// Reads keys on a cluster: one `MGET` per slot, all slots in flight at once.
    async fn read_cluster(
        &self,
        conns: &[ClusterConnection],
        keys: &[RowKey<'_>],
    ) -> Result<Vec<Option<Arc<FeatureRow>>>, StoreError> {
        // (slot, position in `keys`, record key), sorted so each slot's keys are contiguous.
        let mut slotted: Vec<(u16, usize, Vec<u8>)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut key = Vec::with_capacity(24 + self.project.len() + k.view.len());
                let slot =
                    layout::push_record_key(&mut key, &self.project, k.view, k.entity.as_bytes());
                (slot, i, key)
            })
            .collect();
        slotted.sort_unstable_by_key(|(slot, i, _)| (*slot, *i));
        let conn = conns[self.pick(conns.len())].clone();
        let groups = slotted.chunk_by(|a, b| a.0 == b.0).map(|group| {
            let mut mget = ::redis::cmd("MGET");
            for (_, _, key) in group {
                mget.arg(key);
            }
            let mut conn = conn.clone();
            async move {
                let value = route(&mut conn, mget, slot_route(group[0].0)).await?;
                Ok::<_, RedisError>((group, value))
            }
        });
        let replies = self.timed(try_join_all(groups)).await?;
        let mut out = vec![None; keys.len()];
        for (group, value) in replies {
            let values = mget_values(value, group.len())?;
            for ((_, i, _), v) in group.iter().zip(values) {
                out[*i] = decode_value(v)?;
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl OnlineStore for RedisStore {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn read(&self, keys: &[RowKey<'_>]) -> Result<Vec<Option<Arc<FeatureRow>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(feast) = &self.feast {
            return self.read_feast(feast, keys).await;
        }
        match &self.backend {
            Backend::Primary(_) => {
                let mut mget = ::redis::cmd("MGET");
                let mut key = Vec::with_capacity(64);
                for k in keys {
                    key.clear();
                    layout::push_record_key(&mut key, &self.project, k.view, k.entity.as_bytes());
                    mget.arg(&key);
                }
                let value: RedisValue = self.query(&mget).await?;
                mget_values(value, keys.len())?
                    .into_iter()
                    .map(decode_value)
                    .collect()
            }
            Backend::Cluster(conns) => self.read_cluster(conns, keys).await,
        }
    }

    async fn write(&self, rows: &[RowWrite]) -> Result<WriteOutcome, StoreError> {
        let now = self.clock.now_micros();
        // Up to one chunk per connection in flight, so large writes keep every connection busy.
        let in_flight = match &self.backend {
            Backend::Primary(primary) => primary.current().conns.len(),
            Backend::Cluster(conns) => conns.len(),
        };
        let chunks: Vec<_> = rows
            .chunks(self.write_batch_size)
            .map(|chunk| async move {
                let outcome = self.write_chunk(chunk, now).await?;
                self.announce(chunk, now).await;
                Ok::<_, StoreError>(outcome)
            })
            .collect();
        let mut outcomes = futures::stream::iter(chunks).buffer_unordered(in_flight);
        let mut total = WriteOutcome::default();
        while let Some(outcome) = outcomes.next().await {
            total += outcome?;
        }
        Ok(total)
    }

    async fn watermark(&self, view: &str) -> Result<Option<EpochMicros>, StoreError> {
        let mut get = ::redis::cmd("GET");
        get.arg(watermark_key(&self.project, view));
        let value: Option<String> = self.query(&get).await?;
        value
            .map(|v| {
                v.parse::<EpochMicros>()
                    .map_err(|_| StoreError::Corrupt(format!("watermark of view {view}: {v:?}")))
            })
            .transpose()
    }

    async fn set_watermark(&self, view: &str, at: EpochMicros) -> Result<(), StoreError> {
        let mut set = ::redis::cmd("SET");
        set.arg(watermark_key(&self.project, view)).arg(at);
        self.query::<()>(&set).await
    }

    async fn subscribe_writes(&self) -> Result<Option<WriteNotices>, StoreError> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let nodes = match &self.backend {
            Backend::Primary(primary) => PubsubNodes::Primary(Arc::clone(primary)),
            Backend::Cluster(_) => PubsubNodes::Fixed(self.pubsub_nodes.clone()),
        };
        let channel = layout::write_channel(&self.project);
        tokio::spawn(follow_write_channel(nodes, channel, tx));
        Ok(Some(rx))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let ping = ::redis::cmd("PING");
        match &self.backend {
            Backend::Primary(_) => self.query::<String>(&ping).await.map(|_| ()),
            Backend::Cluster(conns) => self.cluster_ready(conns).await,
        }
    }
}

/// Keeps a subscription to the write channel alive, forwarding announcements until the receiver
/// is dropped. After a reconnection (announcements may have been missed) it sends
/// [`StoreEvent::Resync`] so caches start over.
async fn follow_write_channel(
    nodes: PubsubNodes,
    channel: String,
    tx: tokio::sync::mpsc::Sender<StoreEvent>,
) {
    let mut attempt = 0usize;
    let mut connected_before = false;
    loop {
        let node = match &nodes {
            PubsubNodes::Fixed(nodes) => nodes[attempt % nodes.len()].clone(),
            PubsubNodes::Primary(primary) => primary.current().info.clone(),
        };
        attempt += 1;
        let subscribed = async {
            let mut pubsub = Client::open(node)?.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(2), subscribed).await {
            Ok(Ok(pubsub)) => {
                if connected_before && tx.send(StoreEvent::Resync).await.is_err() {
                    return;
                }
                connected_before = true;
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(notices) = rmp_serde::from_slice::<Vec<(Value, Value, Value, Value)>>(
                        msg.get_payload_bytes(),
                    ) else {
                        tracing::warn!("ignoring a malformed write announcement on {channel}");
                        continue;
                    };
                    for notice in notices {
                        if let (
                            Value::String(view),
                            Value::Bytes(entity),
                            Value::Int(event_ts),
                            Value::Int(written_at),
                        ) = notice
                        {
                            let notice = WriteNotice {
                                view: Arc::from(view),
                                entity: crate::entity_key::EntityKey::from_encoded(entity),
                                event_ts,
                                written_at,
                            };
                            if tx.send(StoreEvent::Written(notice)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                tracing::warn!("write-announcement subscription lost; reconnecting");
            }
            Ok(Err(e)) => tracing::debug!("cannot subscribe to write announcements yet: {e}"),
            Err(_) => tracing::debug!("subscribing to write announcements timed out"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where write announcements are subscribed to.
enum PubsubNodes {
    /// The configured nodes, in turn (any node of a cluster relays every publication).
    Fixed(Vec<ConnectionInfo>),
    /// Wherever the primary is now (it moves with Sentinel failovers).
    Primary(Arc<Primary>),
}

/// Builds the connection info of one node.
fn connection_info(
    target: &RedisTarget,
    host: &str,
    port: u16,
    tcp: &TcpSettings,
) -> Result<ConnectionInfo, StoreError> {
    let addr = if target.tls {
        ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_string(), port)
    };
    let mut redis = RedisConnectionInfo::default().set_db(target.db);
    if let Some(user) = &target.username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &target.password {
        redis = redis.set_password(password);
    }
    Ok(addr
        .into_connection_info()
        .map_err(config_error)?
        .set_redis_settings(redis)
        .set_tcp_settings(tcp.clone()))
}

/// Routing to whichever node of a cluster: for commands about the server, not a key.
fn any_node() -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random)
}

/// Sends a command through the cluster connection (which follows MOVED/ASK and retries
/// TRYAGAIN); other error replies come back as values, so they are turned into errors here.
async fn route(
    conn: &mut ClusterConnection,
    cmd: Cmd,
    routing: RoutingInfo,
) -> Result<RedisValue, RedisError> {
    conn.route_command(cmd, routing).await?.extract_error()
}

/// The number of slots a `CLUSTER SLOTS` reply covers and the distinct `(host, port)` of the
/// masters serving them.
fn slot_masters(reply: RedisValue) -> Result<(i64, Vec<(String, u16)>), StoreError> {
    let unexpected = || StoreError::Backend("unexpected CLUSTER SLOTS reply".into());
    let RedisValue::Array(ranges) = reply else {
        return Err(unexpected());
    };
    let mut covered = 0;
    let mut masters: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        let RedisValue::Array(items) = range else {
            return Err(unexpected());
        };
        let (Some(RedisValue::Int(lo)), Some(RedisValue::Int(hi)), Some(RedisValue::Array(node))) =
            (items.first(), items.get(1), items.get(2))
        else {
            return Err(unexpected());
        };
        covered += hi - lo + 1;
        let host = match node.first() {
            Some(RedisValue::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(RedisValue::SimpleString(s)) => s.clone(),
            _ => return Err(unexpected()),
        };
        let Some(RedisValue::Int(port)) = node.get(1) else {
            return Err(unexpected());
        };
        let port = u16::try_from(*port).map_err(|_| unexpected())?;
        if !masters.iter().any(|(h, p)| *h == host && *p == port) {
            masters.push((host, port));
        }
    }
    Ok((covered, masters))
}

/// Routing to the master of a slot.
fn slot_route(slot: u16) -> RoutingInfo {
    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
        slot,
        SlotAddr::Master,
    )))
}

/// Bounds `fut` by `timeout`, turning the elapsed case into [`StoreError::Timeout`].
async fn bounded<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or(Err(StoreError::Timeout(timeout)))
}

/// True when a write reached a replica (a former primary after a failover): nothing ran.
fn is_read_only(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

/// True when a call failed because the server does not have the script cached (nothing ran).
fn is_no_script(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// Maps a client error: unreachable or failing servers are `Unavailable`, slow ones `Timeout`.
fn map_error(e: RedisError, timeout: Duration) -> StoreError {
    if e.is_timeout() {
        return StoreError::Timeout(timeout);
    }
    if is_tls_rejection(&e) {
        // A certificate that does not verify is configuration to fix, not a server to wait for.
        return StoreError::Backend(format!("TLS handshake with redis failed: {e}"));
    }
    let unavailable = e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ReadOnly
                )
        );
    if unavailable {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// True when a connection failed in the TLS handshake (certificate not trusted, wrong name).
/// The connection manager hands out copies of its connection error that keep only the text, so
/// rustls' messages are recognized too.
fn is_tls_rejection(e: &RedisError) -> bool {
    let text = e.to_string();
    if text.contains("invalid peer certificate") || text.contains("received fatal alert") {
        return true;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        cause = c.source();
    }
    false
}

fn config_error(e: RedisError) -> StoreError {
    StoreError::Backend(format!("invalid redis configuration: {e}"))
}

/// The elements of an `MGET` reply, checked to be `expected` long.
fn mget_values(value: RedisValue, expected: usize) -> Result<Vec<RedisValue>, StoreError> {
    match value {
        RedisValue::Array(values) if values.len() == expected => Ok(values),
        other => Err(StoreError::Backend(format!(
            "unexpected MGET reply for {expected} keys: {other:?}"
        ))),
    }
}

/// Decodes one `MGET` element: nil is an absent (or expired) record.
fn decode_value(value: RedisValue) -> Result<Option<Arc<FeatureRow>>, StoreError> {
    match value {
        RedisValue::Nil => Ok(None),
        RedisValue::BulkString(bytes) => Ok(Some(Arc::new(decode_row(&bytes)?))),
        other => Err(StoreError::Corrupt(format!(
            "record is not a string: {other:?}"
        ))),
    }
}

/// Appends the 1/0 answers of one write script call of `rows` rows to `out`: an integer (Feast's
/// layout, one row) or an array of them (Quiver's).
fn script_results(value: RedisValue, rows: usize, out: &mut Vec<i64>) -> Result<(), StoreError> {
    let unexpected = |value: &RedisValue| {
        StoreError::Backend(format!("unexpected write script reply: {value:?}"))
    };
    match value {
        RedisValue::Int(n) if rows == 1 => out.push(n),
        RedisValue::Array(items) if items.len() == rows => {
            for item in items {
                match item {
                    RedisValue::Int(n) => out.push(n),
                    other => return Err(unexpected(&other)),
                }
            }
        }
        other => return Err(unexpected(&other)),
    }
    Ok(())
}

fn count_results(outcome: &mut WriteOutcome, results: impl IntoIterator<Item = i64>) {
    for written in results {
        if written == 1 {
            outcome.written += 1;
        } else {
            outcome.skipped_older += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(lo: i64, hi: i64, port: i64) -> RedisValue {
        RedisValue::Array(vec![
            RedisValue::Int(lo),
            RedisValue::Int(hi),
            RedisValue::Array(vec![
                RedisValue::BulkString(b"127.0.0.1".to_vec()),
                RedisValue::Int(port),
            ]),
        ])
    }

    #[test]
    fn cluster_slots_give_the_covered_count_and_each_master_once() {
        let reply = RedisValue::Array(vec![
            range(0, 5000, 7000),
            range(5001, 10000, 7001),
            range(10001, 16383, 7000),
        ]);
        let (covered, masters) = slot_masters(reply).unwrap();
        assert_eq!(covered, 16384);
        assert_eq!(
            masters,
            vec![
                ("127.0.0.1".to_string(), 7000),
                ("127.0.0.1".to_string(), 7001)
            ]
        );
    }

    #[test]
    fn a_cluster_missing_a_slot_range_covers_fewer_slots() {
        let reply = RedisValue::Array(vec![range(0, 5000, 7000), range(10001, 16383, 7002)]);
        assert_eq!(slot_masters(reply).unwrap().0, 16384 - 5000);
    }
}
