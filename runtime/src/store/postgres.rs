//! The PostgreSQL online store (`online_store: {type: postgres, ...}`; layout:
//! docs/postgres-layout.md).
//!
//! - One table holds every record: one row per (project, view, entity key) with the event,
//!   created and expiry times as columns and the [`codec`](super::codec) record as `bytea`.
//! - Reads are one round trip: one prepared `SELECT` joining the table with the requested
//!   (view, entity) pairs passed as two arrays, whatever the number of views and entities.
//! - Writes are one prepared `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE ... WHERE`
//!   per chunk of `write_batch_size` rows: newer-wins is decided by PostgreSQL, atomically per
//!   record. A chunk holds each (view, entity) once (the newest of the batch; the others count as
//!   skipped) in key order, so concurrent writers lock rows in the same order and never deadlock.
//! - Expired records (past `expire_at` = event time + the view's ttl + `key_ttl_slack`) are never
//!   served, may be replaced by any row, and are deleted by a background purge every
//!   `purge_interval`.
//! - The schema is created or migrated when the store opens, under a transaction-scoped advisory
//!   lock, so several servers starting at once against an empty database are safe; its version is
//!   kept in `schema_version`.
//! - Written keys are announced with `NOTIFY` on the project's channel; every instance `LISTEN`s
//!   on a connection of its own and drops them from its L1 cache, as Redis does with pub/sub.
//! - Connections come from a pool (`pool_size`); getting one is bounded by `connect_timeout`, each
//!   statement by `command_timeout`. Refused or dropped connections are
//!   [`StoreError::Unavailable`]; a statement that finds its pooled connection closed (the server
//!   restarted since its last use) runs once more on a new one, so serving recovers by itself.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures::StreamExt;
use serde::Deserialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Config as PgConfig};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::codec::{decode_row, encode_row};
use super::reconnect::{Connect, Reconnecting};
use super::{
    FeatureRow, OnlineStore, RowKey, RowWrite, SharedStore, SpecError, StoreCatalog, StoreError,
    StoreEvent, StoreOptions, WriteNotice, WriteNotices, WriteOutcome, default_key_ttl_slack,
};
use crate::clock::SharedClock;
use crate::entity_key::EntityKey;
use crate::settings::HumanDuration;
use crate::types::{EpochMicros, Value};

/// The schema version this build creates and serves (see [`MIGRATIONS`]).
pub const SCHEMA_VERSION: i32 = 1;

/// Options of the PostgreSQL online store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresOptions {
    /// `postgresql://[user[:password]@]host[:port][/dbname][?param=value...]` or libpq's
    /// `host=... port=... user=... dbname=...` form; `sslmode=disable|prefer|require`.
    pub connection_string: String,
    /// The PostgreSQL schema (namespace) holding Quiver's tables; created when missing.
    #[serde(default = "PostgresOptions::default_schema")]
    pub schema: String,
    /// Largest number of pooled connections.
    #[serde(default = "PostgresOptions::default_pool_size")]
    pub pool_size: usize,
    /// Time allowed to establish a connection (or to wait for a free pooled one).
    #[serde(default = "PostgresOptions::default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Time allowed for one statement's round trip.
    #[serde(default = "PostgresOptions::default_command_timeout")]
    pub command_timeout: HumanDuration,
    /// Records written per statement during materialization and pushes.
    #[serde(default = "PostgresOptions::default_write_batch_size")]
    pub write_batch_size: usize,
    /// How long a record outlives its view's ttl before it is no longer served and purged.
    #[serde(default = "default_key_ttl_slack")]
    pub key_ttl_slack: HumanDuration,
    /// How often expired records are deleted.
    #[serde(default = "PostgresOptions::default_purge_interval")]
    pub purge_interval: HumanDuration,
    /// A PEM file of CA certificates trusted for TLS besides the system's roots, relative to
    /// the directory of `feature_store.yaml`.
    #[serde(default)]
    pub ssl_root_cert: Option<PathBuf>,
}

impl PostgresOptions {
    fn default_schema() -> String {
        "quiver".into()
    }
    fn default_pool_size() -> usize {
        8
    }
    fn default_connect_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(2))
    }
    fn default_command_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(1))
    }
    fn default_write_batch_size() -> usize {
        1000
    }
    fn default_purge_interval() -> HumanDuration {
        HumanDuration(Duration::from_secs(300))
    }

    /// Options for `connection_string` with every other field at its default.
    pub fn with_connection_string(connection_string: impl Into<String>) -> Self {
        PostgresOptions {
            connection_string: connection_string.into(),
            schema: Self::default_schema(),
            pool_size: Self::default_pool_size(),
            connect_timeout: Self::default_connect_timeout(),
            command_timeout: Self::default_command_timeout(),
            write_batch_size: Self::default_write_batch_size(),
            key_ttl_slack: default_key_ttl_slack(),
            purge_interval: Self::default_purge_interval(),
            ssl_root_cert: None,
        }
    }
}

/// True for a name usable unquoted as a PostgreSQL identifier and kept as written.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 63
        && !name.starts_with("pg_")
}

impl StoreOptions for PostgresOptions {
    const TYPE: &'static str = "postgres";

    fn key_ttl_slack(&self) -> HumanDuration {
        self.key_ttl_slack
    }

    fn check(&mut self, base_dir: &Path) -> Vec<SpecError> {
        let mut problems = Vec::new();
        if self.connection_string.trim().is_empty() {
            problems.push(SpecError::new("connection_string", "must not be empty"));
        } else if let Err(e) = self.connection_string.parse::<PgConfig>() {
            problems.push(SpecError::new(
                "connection_string",
                format!("not a PostgreSQL connection string: {e}"),
            ));
        }
        if !is_plain_identifier(&self.schema) {
            problems.push(SpecError::new(
                "schema",
                format!(
                    "{:?} is not a plain identifier: lower-case letters, digits and `_`, starting \
                     with a letter or `_`, at most 63 bytes, not starting with `pg_`",
                    self.schema
                ),
            ));
        }
        if self.pool_size == 0 {
            problems.push(SpecError::new("pool_size", "must be at least 1"));
        }
        if self.connect_timeout.0 < Duration::from_millis(1) {
            problems.push(SpecError::new("connect_timeout", "must be at least 1ms"));
        }
        if self.command_timeout.0 < Duration::from_millis(1) {
            problems.push(SpecError::new("command_timeout", "must be at least 1ms"));
        }
        if self.write_batch_size == 0 {
            problems.push(SpecError::new("write_batch_size", "must be at least 1"));
        }
        if self.purge_interval.0 < Duration::from_secs(1) {
            problems.push(SpecError::new("purge_interval", "must be at least 1s"));
        }
        if let Some(path) = &self.ssl_root_cert {
            if path.as_os_str().is_empty() {
                problems.push(SpecError::new("ssl_root_cert", "must not be empty"));
            }
            self.ssl_root_cert = Some(base_dir.join(path));
        }
        problems
    }

    /// Connects and migrates the schema; when PostgreSQL is unreachable (not misconfigured),
    /// returns a store that answers [`StoreError::Unavailable`] and keeps connecting in the
    /// background, so serving starts unready and becomes ready by itself.
    async fn open(
        &self,
        project: &str,
        _catalog: &Arc<StoreCatalog>,
        clock: SharedClock,
    ) -> Result<SharedStore, StoreError> {
        match PostgresStore::connect(self, project, clock.clone()).await {
            Ok(store) => Ok(store),
            Err(e) if e.is_unavailable() => {
                let (opts, project) = (self.clone(), Arc::<str>::from(project));
                let connect: Connect = Box::new(move || {
                    let (opts, project, clock) = (opts.clone(), project.clone(), clock.clone());
                    Box::pin(async move {
                        let store = PostgresStore::connect(&opts, &project, clock).await?;
                        Ok(store as SharedStore)
                    })
                });
                Ok(Arc::new(Reconnecting::spawn(self.kind(), e, connect)))
            }
            Err(e) => Err(e),
        }
    }
}

/// The schema migrations: `MIGRATIONS[i]` brings a schema at version `i` to version `i + 1`.
/// `{s}` stands for the configured schema name. Append only: a released step never changes.
const MIGRATIONS: &[&str] = &["
CREATE TABLE {s}.online (
    project    text   NOT NULL,
    view       text   NOT NULL,
    entity     bytea  NOT NULL,
    event_ts   bigint NOT NULL,
    created_ts bigint NOT NULL,
    expire_at  bigint,
    record     bytea  NOT NULL,
    PRIMARY KEY (project, view, entity)
);
CREATE INDEX online_expire_at ON {s}.online (expire_at) WHERE expire_at IS NOT NULL;
CREATE TABLE {s}.watermarks (
    project text   NOT NULL,
    view    text   NOT NULL,
    at      bigint NOT NULL,
    PRIMARY KEY (project, view)
);
"];

/// The statements of the store, with the schema name filled in.
struct Statements {
    read: String,
    upsert: String,
    watermark: String,
    set_watermark: String,
    purge: String,
    notify: String,
}

impl Statements {
    fn new(schema: &str) -> Self {
        let s = |sql: &str| sql.replace("{s}", schema);
        Statements {
            // $1 project, $2 views, $3 entities (pairwise), $4 now.
            read: s("SELECT k.i, t.record
                 FROM unnest($2::text[], $3::bytea[]) WITH ORDINALITY AS k(view, entity, i)
                 JOIN {s}.online t ON t.project = $1 AND t.view = k.view AND t.entity = k.entity
                 WHERE t.expire_at IS NULL OR t.expire_at > $4"),
            // $1 project, $2.. $7 the rows' columns, $8 now. Returns the rows written.
            upsert: s("INSERT INTO {s}.online AS t
                     (project, view, entity, event_ts, created_ts, expire_at, record)
                 SELECT $1, r.* FROM unnest($2::text[], $3::bytea[], $4::bigint[], $5::bigint[],
                                            $6::bigint[], $7::bytea[]) AS r
                 ON CONFLICT (project, view, entity) DO UPDATE SET
                     event_ts = excluded.event_ts, created_ts = excluded.created_ts,
                     expire_at = excluded.expire_at, record = excluded.record
                 WHERE (excluded.event_ts, excluded.created_ts) > (t.event_ts, t.created_ts)
                    OR (t.expire_at IS NOT NULL AND t.expire_at <= $8)
                 RETURNING t.view, t.entity, t.event_ts"),
            watermark: s("SELECT at FROM {s}.watermarks WHERE project = $1 AND view = $2"),
            set_watermark: s("INSERT INTO {s}.watermarks (project, view, at) VALUES ($1, $2, $3)
                 ON CONFLICT (project, view) DO UPDATE SET at = excluded.at"),
            // $1 project, $2 now, $3 most rows per statement.
            purge: s("DELETE FROM {s}.online WHERE ctid = ANY(ARRAY(
                     SELECT ctid FROM {s}.online
                     WHERE project = $1 AND expire_at IS NOT NULL AND expire_at <= $2
                     LIMIT $3))"),
            notify: "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p".into(),
        }
    }
}

/// Types an async block as a statement sequence of `tokio_postgres` (so `?` knows its error).
fn pg<T, F: Future<Output = Result<T, tokio_postgres::Error>>>(f: F) -> F {
    f
}

/// Runs `$body` with `$c` bound to a pooled connection (`&Object`), bounded by the store's
/// command timeout; evaluates to `Result<T, StoreError>`. When the connection turned out closed
/// (the server restarted since its last use), `$body` runs once more on a new connection, so the
/// first request after a restart does not fail: every statement of the store is safe to repeat
/// (reads, newer-wins upserts, watermark upserts, notifications, purges).
macro_rules! on_client {
    ($store:expr, |$c:ident| $body:block) => {{
        let store: &PostgresStore = $store;
        let mut retried = false;
        loop {
            let client = match store.client().await {
                Ok(client) => client,
                Err(e) => break Err(e),
            };
            let result = {
                let $c: &Object = &client;
                tokio::time::timeout(store.command_timeout, pg(async { $body })).await
            };
            match result {
                Ok(Ok(value)) => break Ok(value),
                // Dropping it is enough: the pool does not hand out closed connections.
                Ok(Err(e)) if !retried && e.is_closed() => retried = true,
                Ok(Err(e)) => break Err(map_error(&e)),
                Err(_) => {
                    // The connection may still carry the slow statement: do not reuse it.
                    let _ = Object::take(client);
                    break Err(StoreError::Timeout(store.command_timeout));
                }
            }
        }
    }};
}

/// The connection option making every prepared statement use one generic plan (PostgreSQL 12+).
const GENERIC_PLANS: &str = "-c plan_cache_mode=force_generic_plan";

/// Rows deleted per purge statement, so one purge never holds many locks for long.
const PURGE_BATCH: i64 = 10_000;
/// Most purge statements per purge run (the rest waits for the next run).
const PURGE_ROUNDS: usize = 100;
/// Largest `NOTIFY` payload sent (PostgreSQL refuses payloads of 8000 bytes or more).
const NOTIFY_PAYLOAD_BYTES: usize = 7000;

/// The PostgreSQL online store.
pub struct PostgresStore {
    project: Arc<str>,
    pool: Pool,
    sql: Statements,
    command_timeout: Duration,
    connect_timeout: Duration,
    write_batch_size: usize,
    /// "Now" for expiry and for stamping write announcements.
    clock: SharedClock,
    /// The `LISTEN`/`NOTIFY` channel of this schema and project.
    channel: String,
    /// How to open the dedicated `LISTEN` connection.
    pg_config: PgConfig,
    tls: MakeRustlsConnect,
}

impl PostgresStore {
    /// Connects to the database `opts` describes for `project`, creates or migrates the schema,
    /// and starts the background purge of expired records.
    ///
    /// An unreachable server is [`StoreError::Unavailable`] or [`StoreError::Timeout`]; a
    /// malformed connection string, a TLS failure or a schema newer than this build
    /// [`StoreError::Backend`].
    pub async fn connect(
        opts: &PostgresOptions,
        project: &str,
        clock: SharedClock,
    ) -> Result<Arc<PostgresStore>, StoreError> {
        let mut pg_config: PgConfig = opts.connection_string.parse().map_err(|e| {
            StoreError::Backend(format!(
                "invalid postgres connection_string: not a PostgreSQL connection string: {e}"
            ))
        })?;
        if !is_plain_identifier(&opts.schema) {
            return Err(StoreError::Backend(format!(
                "invalid postgres schema {:?}: not a plain identifier",
                opts.schema
            )));
        }
        let connect_timeout = opts.connect_timeout.0.max(Duration::from_millis(1));
        let command_timeout = opts.command_timeout.0.max(Duration::from_millis(1));
        pg_config.connect_timeout(connect_timeout);
        if pg_config.get_application_name().is_none() {
            pg_config.application_name("quiver");
        }
        // The statements' plans do not depend on their parameters (primary-key lookups of the
        // requested pairs): plan them once per connection instead of at every bind, where the
        // load suite saw planning stall for up to 0.9 s.
        let options = match pg_config.get_options() {
            Some(given) if !given.trim().is_empty() => {
                format!("{given} {GENERIC_PLANS}")
            }
            _ => GENERIC_PLANS.to_string(),
        };
        pg_config.options(options);
        let tls = MakeRustlsConnect::new(tls_config(opts.ssl_root_cert.as_deref())?);
        let manager = Manager::from_config(
            pg_config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(connect_timeout))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the postgres pool: {e}")))?;
        let channel = format!(
            "quiver_writes_{:016x}",
            xxhash_rust::xxh3::xxh3_64(format!("{}\0{project}", opts.schema).as_bytes())
        );
        let store = Arc::new(PostgresStore {
            project: Arc::from(project),
            pool,
            sql: Statements::new(&opts.schema),
            command_timeout,
            connect_timeout,
            write_batch_size: opts.write_batch_size.max(1),
            clock,
            channel,
            pg_config,
            tls,
        });
        store.migrate(&opts.schema).await?;
        tokio::spawn(purge_periodically(
            Arc::downgrade(&store),
            opts.purge_interval.0.max(Duration::from_secs(1)),
        ));
        Ok(store)
    }

    /// Creates the schema or brings it to [`SCHEMA_VERSION`], in one transaction holding an
    /// advisory lock, so concurrent first uses by several servers apply each step once.
    async fn migrate(&self, schema: &str) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let lock_key = xxhash_rust::xxh3::xxh3_64(format!("quiver schema {schema}").as_bytes()) as i64;
        let migrate = async {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key])
                .await?;
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {schema}.schema_version (
                     version    integer     PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 );"
            ))
            .await?;
            let current: i32 = tx
                .query_one(
                    &format!("SELECT coalesce(max(version), 0) FROM {schema}.schema_version"),
                    &[],
                )
                .await?
                .get(0);
            if current > SCHEMA_VERSION {
                return Ok(Err(current));
            }
            for (step, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
                tx.batch_execute(&sql.replace("{s}", schema)).await?;
                let version = step as i32 + 1;
                tx.execute(
                    &format!("INSERT INTO {schema}.schema_version (version) VALUES ($1)"),
                    &[&version],
                )
                .await?;
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(Ok(()))
        };
        // Waiting for another server's migration is bounded too, more generously.
        let bound = self.command_timeout.max(Duration::from_secs(30));
        match tokio::time::timeout(bound, migrate).await {
            Err(_) => Err(StoreError::Timeout(bound)),
            Ok(Err(e)) => Err(map_error(&e)),
            Ok(Ok(Err(found))) => Err(StoreError::Backend(format!(
                "postgres schema {schema} is at version {found}, newer than this quiver's \
                 {SCHEMA_VERSION}; upgrade quiver"
            ))),
            Ok(Ok(Ok(()))) => Ok(()),
        }
    }

    /// A pooled connection, bounded by the connect timeout.
    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Timeout(_) => StoreError::Timeout(self.connect_timeout),
            deadpool_postgres::PoolError::Backend(e) => map_error(&e),
            other => StoreError::Unavailable(format!("postgres pool: {other}")),
        })
    }

    /// Deletes this project's expired records, in statements of at most [`PURGE_BATCH`] rows.
    /// Returns how many were deleted.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let now = self.clock.now_micros();
        let mut total = 0;
        for _ in 0..PURGE_ROUNDS {
            let deleted = on_client!(self, |c| {
                let stmt = c.prepare_cached(&self.sql.purge).await?;
                c.execute(&stmt, &[&&*self.project, &now, &PURGE_BATCH])
                    .await
            })?;
            total += deleted;
            if deleted < PURGE_BATCH as u64 {
                break;
            }
        }
        Ok(total)
    }

    /// Writes one chunk of distinct keys; returns the keys written, with their event times.
    async fn write_chunk(
        &self,
        rows: &[&RowWrite],
        now: EpochMicros,
    ) -> Result<Vec<(String, Vec<u8>, EpochMicros)>, StoreError> {
        let views: Vec<&str> = rows.iter().map(|w| &*w.view).collect();
        let entities: Vec<&[u8]> = rows.iter().map(|w| w.entity.as_bytes()).collect();
        let events: Vec<i64> = rows.iter().map(|w| w.row.event_ts).collect();
        let created: Vec<i64> = rows.iter().map(|w| w.row.created_ts).collect();
        let expire: Vec<Option<i64>> = rows.iter().map(|w| w.expire_at).collect();
        let records: Vec<Vec<u8>> = rows.iter().map(|w| encode_row(&w.row)).collect();
        on_client!(self, |c| {
            let stmt = c.prepare_cached(&self.sql.upsert).await?;
            let written = c
                .query(
                    &stmt,
                    &[
                        &&*self.project,
                        &views,
                        &entities,
                        &events,
                        &created,
                        &expire,
                        &records,
                        &now,
                    ],
                )
                .await?;
            Ok(written
                .into_iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })
    }

    /// Announces written keys on the project's channel, so every Quiver instance drops them from
    /// its L1 cache. A failed announcement is logged, not returned: the records are stored, and
    /// caches converge within their ttl.
    async fn announce(&self, written: &[(String, Vec<u8>, EpochMicros)], now: EpochMicros) {
        if written.is_empty() {
            return;
        }
        let payloads = notify_payloads(written, now);
        let result = on_client!(self, |c| {
            let stmt = c.prepare_cached(&self.sql.notify).await?;
            c.execute(&stmt, &[&self.channel, &payloads]).await
        });
        if let Err(e) = result {
            tracing::warn!(
                "cannot announce {} written records to other instances: {e}",
                written.len()
            );
        }
    }
}

/// The `NOTIFY` payloads announcing `written`: base64 of the MessagePack list of
/// `[view, entity, event_ts, written_at]` that Redis' write channel carries, each payload under
/// [`NOTIFY_PAYLOAD_BYTES`].
fn notify_payloads(written: &[(String, Vec<u8>, EpochMicros)], now: EpochMicros) -> Vec<String> {
    let encode = |notices: &[[Value; 4]]| {
        let bytes = rmp_serde::to_vec(notices).expect("encoding to a Vec cannot fail");
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let mut payloads = Vec::new();
    let mut batch: Vec<[Value; 4]> = Vec::new();
    let mut size = 0;
    for (view, entity, event_ts) in written {
        // MessagePack framing is at most ~30 bytes per notice; base64 grows it by 4/3.
        let cost = (view.len() + entity.len() + 40) * 4 / 3;
        if !batch.is_empty() && size + cost > NOTIFY_PAYLOAD_BYTES {
            payloads.push(encode(&batch));
            batch.clear();
            size = 0;
        }
        batch.push([
            Value::String(view.clone()),
            Value::Bytes(entity.clone()),
            Value::Int(*event_ts),
            Value::Int(now),
        ]);
        size += cost;
    }
    payloads.push(encode(&batch));
    payloads
}

/// Decodes a `NOTIFY` payload of [`notify_payloads`]; `None` when malformed.
fn decode_payload(payload: &str) -> Option<Vec<WriteNotice>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()?;
    let notices: Vec<(Value, Value, Value, Value)> = rmp_serde::from_slice(&bytes).ok()?;
    Some(
        notices
            .into_iter()
            .filter_map(|notice| match notice {
                (
                    Value::String(view),
                    Value::Bytes(entity),
                    Value::Int(event_ts),
                    Value::Int(written_at),
                ) => Some(WriteNotice {
                    view: Arc::from(view),
                    entity: EntityKey::from_encoded(entity),
                    event_ts,
                    written_at,
                }),
                _ => None,
            })
            .collect(),
    )
}

/// The rustls configuration: the system's roots, plus the CAs of `extra_roots` (a PEM file).
fn tls_config(extra_roots: Option<&Path>) -> Result<rustls::ClientConfig, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: `ssl_root_cert` may be all that is needed.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_roots {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let bad = |e: String| {
            StoreError::Backend(format!(
                "invalid postgres ssl_root_cert {}: {e}",
                path.display()
            ))
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no certificate in the file".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("TLS setup for postgres: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Maps a client error: unreachable, restarting or overloaded servers are `Unavailable`; a
/// certificate that does not verify, bad credentials or SQL errors are `Backend`.
fn map_error(e: &tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let transient = code.starts_with("08") // connection exception
            || code.starts_with("53") // insufficient resources (too many connections)
            || code.starts_with("57P") // admin/crash shutdown, cannot connect now
            || code.starts_with("58") // system error (I/O)
            || *db.code() == SqlState::T_R_DEADLOCK_DETECTED
            || *db.code() == SqlState::T_R_SERIALIZATION_FAILURE;
        let message = format!("postgres: {db}");
        return if transient {
            StoreError::Unavailable(message)
        } else {
            StoreError::Backend(message)
        };
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    let mut io = false;
    let mut tls = false;
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        if c.is::<rustls::Error>() {
            tls = true;
        }
        if let Some(io_error) = c.downcast_ref::<std::io::Error>() {
            if io_error
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                tls = true;
            } else {
                io = true;
            }
        }
        cause = c.source();
    }
    if tls || text.contains("invalid peer certificate") {
        // A certificate that does not verify is configuration to fix, not a server to wait for.
        StoreError::Backend(format!("TLS handshake with postgres failed: {text}"))
    } else if e.is_closed() || io || text.contains("timeout") || text.contains("connection") {
        StoreError::Unavailable(format!("postgres: {text}"))
    } else {
        StoreError::Backend(format!("postgres: {text}"))
    }
}

/// Deletes expired records every `every` until the store is dropped (the task holds a weak
/// reference, so dropping the store ends it at its next run).
async fn purge_periodically(store: Weak<PostgresStore>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(store) = store.upgrade() else {
            return;
        };
        match store.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!("purged {n} expired records from the postgres online store"),
            Err(e) => tracing::warn!("cannot purge expired records from postgres: {e}"),
        }
    }
}

/// Keeps a `LISTEN` connection on the write channel alive, forwarding announcements until the
/// receiver is dropped. After a reconnection (announcements may have been missed) it sends
/// [`StoreEvent::Resync`] so caches start over.
async fn follow_write_channel(
    pg_config: PgConfig,
    tls: MakeRustlsConnect,
    channel: String,
    connect_timeout: Duration,
    tx: tokio::sync::mpsc::Sender<StoreEvent>,
) {
    let mut connected_before = false;
    while !tx.is_closed() {
        let connected = async {
            let (client, mut connection) = pg_config.connect(tls.clone()).await?;
            // Unbounded: the connection task must never block on a slow forwarder (announcements
            // are small, and the forwarder below drains them as they come).
            let (ntx, nrx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(message)) = messages.next().await {
                    if let AsyncMessage::Notification(n) = message
                        && ntx.send(n.payload().to_string()).is_err()
                    {
                        return;
                    }
                }
            });
            client.batch_execute(&format!("LISTEN {channel}")).await?;
            Ok::<_, tokio_postgres::Error>((client, nrx))
        };
        match tokio::time::timeout(connect_timeout + Duration::from_secs(1), connected).await {
            Ok(Ok((_client, mut payloads))) => {
                if connected_before && tx.send(StoreEvent::Resync).await.is_err() {
                    return;
                }
                connected_before = true;
                loop {
                    let payload = tokio::select! {
                        p = payloads.recv() => p,
                        _ = tx.closed() => return,
                    };
                    let Some(payload) = payload else { break };
                    let Some(notices) = decode_payload(&payload) else {
                        tracing::warn!("ignoring a malformed write announcement on {channel}");
                        continue;
                    };
                    for notice in notices {
                        if tx.send(StoreEvent::Written(notice)).await.is_err() {
                            return;
                        }
                    }
                }
                tracing::warn!("write-announcement connection to postgres lost; reconnecting");
            }
            Ok(Err(e)) => tracing::debug!("cannot listen for write announcements yet: {e}"),
            Err(_) => tracing::debug!("listening for write announcements timed out"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[async_trait]
impl OnlineStore for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn read(&self, keys: &[RowKey<'_>]) -> Result<Vec<Option<Arc<FeatureRow>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let views: Vec<&str> = keys.iter().map(|k| k.view).collect();
        let entities: Vec<&[u8]> = keys.iter().map(|k| k.entity.as_bytes()).collect();
        let now = self.clock.now_micros();
        let rows = on_client!(self, |c| {
            let stmt = c.prepare_cached(&self.sql.read).await?;
            c.query(&stmt, &[&&*self.project, &views, &entities, &now])
                .await
        })?;
        let mut out = vec![None; keys.len()];
        for row in rows {
            let position: i64 = row.get(0);
            let record: &[u8] = row.get(1);
            let slot = usize::try_from(position - 1)
                .ok()
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| {
                    StoreError::Backend(format!("read returned an unknown position {position}"))
                })?;
            *slot = Some(Arc::new(decode_row(record)?));
        }
        Ok(out)
    }

    async fn write(&self, rows: &[RowWrite]) -> Result<WriteOutcome, StoreError> {
        let now = self.clock.now_micros();
        let mut outcome = WriteOutcome::default();
        // The newest row of the batch per key (the first of equals, as writing them one by one
        // would keep): one statement cannot update a row twice.
        let mut newest: HashMap<(&str, &[u8]), &RowWrite> = HashMap::with_capacity(rows.len());
        for w in rows {
            if w.expire_at.is_some_and(|at| at <= now) {
                // Already expired: it would never be served.
                outcome.skipped_older += 1;
                continue;
            }
            match newest.entry((&*w.view, w.entity.as_bytes())) {
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(w);
                }
                std::collections::hash_map::Entry::Occupied(mut slot) => {
                    outcome.skipped_older += 1;
                    if w.row.is_newer_than(&slot.get().row) {
                        slot.insert(w);
                    }
                }
            }
        }
        let mut distinct: Vec<&RowWrite> = newest.into_values().collect();
        // One lock order for every writer: concurrent batches sharing keys cannot deadlock.
        distinct.sort_unstable_by(|a, b| {
            (&*a.view, a.entity.as_bytes()).cmp(&(&*b.view, b.entity.as_bytes()))
        });
        for chunk in distinct.chunks(self.write_batch_size) {
            let written = self.write_chunk(chunk, now).await?;
            outcome.written += written.len();
            outcome.skipped_older += chunk.len() - written.len();
            self.announce(&written, now).await;
        }
        Ok(outcome)
    }

    async fn watermark(&self, view: &str) -> Result<Option<EpochMicros>, StoreError> {
        on_client!(self, |c| {
            let stmt = c.prepare_cached(&self.sql.watermark).await?;
            let row = c.query_opt(&stmt, &[&&*self.project, &view]).await?;
            Ok(row.map(|r| r.get::<_, i64>(0)))
        })
    }

    async fn set_watermark(&self, view: &str, at: EpochMicros) -> Result<(), StoreError> {
        on_client!(self, |c| {
            let stmt = c.prepare_cached(&self.sql.set_watermark).await?;
            c.execute(&stmt, &[&&*self.project, &view, &at]).await
        })
        .map(|_| ())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        on_client!(self, |c| { c.simple_query("SELECT 1").await }).map(|_| ())
    }

    async fn subscribe_writes(&self) -> Result<Option<WriteNotices>, StoreError> {
        // Bounded like Redis' announcement channel: a slow reader delays forwarding.
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(follow_write_channel(
            self.pg_config.clone(),
            self.tls.clone(),
            self.channel.clone(),
            self.connect_timeout,
            tx,
        ));
        Ok(Some(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_must_be_plain_identifiers() {
        for ok in ["quiver", "_x", "feature_store_2"] {
            assert!(is_plain_identifier(ok), "{ok}");
        }
        for bad in ["", "Quiver", "2x", "a-b", "a;drop", "pg_catalog", &"x".repeat(64)] {
            assert!(!is_plain_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn announcements_round_trip_and_stay_under_the_payload_limit() {
        let written: Vec<(String, Vec<u8>, EpochMicros)> = (0..2000)
            .map(|i: i64| ("user_features".to_string(), i.to_be_bytes().to_vec(), i))
            .collect();
        let payloads = notify_payloads(&written, 99);
        assert!(payloads.len() > 1);
        let mut decoded = Vec::new();
        for p in &payloads {
            assert!(p.len() < 8000, "payload of {} bytes", p.len());
            decoded.extend(decode_payload(p).unwrap());
        }
        assert_eq!(decoded.len(), written.len());
        assert_eq!(decoded[1999].event_ts, 1999);
        assert_eq!(decoded[5].entity.as_bytes(), &5i64.to_be_bytes());
        assert_eq!(decoded[5].written_at, 99);
        assert!(decode_payload("not base64!").is_none());
    }

    #[test]
    fn a_bad_section_names_each_field() {
        let mut opts = PostgresOptions::with_connection_string("postgresql://h:notaport/db");
        opts.schema = "Bad-Name".into();
        opts.pool_size = 0;
        opts.write_batch_size = 0;
        let problems = opts.check(Path::new("/"));
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["connection_string", "schema", "pool_size", "write_batch_size"]
        );
    }
}
