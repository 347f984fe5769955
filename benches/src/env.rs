//! The servers a load run talks to, all started here: a real `redis-server` and a real PostgreSQL
//! on free loopback ports (the test harness), the quickstart data materialized into both, three
//! Quiver servers (L1 on over Redis, L1 off over Redis, L1 off over PostgreSQL) and the HTTP floor
//! server, all on one server runtime of their own.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::routing::post;
use axum::serve::ListenerExt;
use bytes::Bytes;
use quiver::clock::system_clock;
use quiver::offline::materialize::{MaterializeRequest, materialize};
use quiver::registry::Registry;
use quiver::serving::{AppState, serve};
use quiver::store::SharedStore;
use quiver_tests::postgres::PostgresServer;
use quiver_tests::redis::RedisServer;
use serde::Serialize;
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// The project name of the benchmark registry (the prefix of every Redis key).
pub const PROJECT: &str = "bench";
/// The view every single-view scenario reads.
pub const VIEW: &str = "user_features";
/// Its five features, as requested.
pub const FEATURES_5: [&str; 5] = [
    "user_features:avg_order_value_7d",
    "user_features:total_orders_30d",
    "user_features:preferred_category",
    "user_features:account_age_days",
    "user_features:fraud_score",
];
/// A feature service over two views (`user_features` and `user_sessions`).
pub const SERVICE: &str = "fraud_model_v1";
/// The same features as [`SERVICE`], logging 1% of entities (`logging.sample_rate: 0.01`).
pub const SERVICE_LOG_1: &str = "fraud_model_v1_log1";
/// The same features as [`SERVICE`], logging every entity.
pub const SERVICE_LOG_100: &str = "fraud_model_v1_log100";
/// The outputs of the on-demand view `user_risk` (the example transform, in Wasm).
pub const ON_DEMAND_3: [&str; 3] = [
    "user_risk:order_value_per_order",
    "user_risk:amount_over_avg",
    "user_risk:risk_score",
];
/// The push source feeding `user_sessions`.
pub const PUSH_SOURCE: &str = "user_sessions_push";

/// The `online_store` section of the Redis registry.
pub fn redis_section(redis_url: &str) -> String {
    format!("  type: redis\n  connection_string: \"{redis_url}\"\n")
}

/// The `online_store` section of the PostgreSQL registry: the reversal plan's one edit, every
/// other option at its default.
pub fn postgres_section(postgres_url: &str) -> String {
    format!("  type: postgres\n  connection_string: \"{postgres_url}\"\n")
}

/// The benchmark registry: the quickstart views over the store `online_store` describes, L1
/// entries kept for the whole run (`ttl`, `negative_ttl` 1h), so "L1 hit" scenarios hit and misses
/// are chosen by the workload.
pub fn registry_yaml(online_store: &str) -> String {
    format!(
        r#"project: {PROJECT}
online_store:
{online_store}entities:
  - name: user
    join_keys: [user_id]
    value_type: string
feature_views:
  - name: user_features
    entities: [user]
    ttl: 24h
    schema:
      - {{ name: avg_order_value_7d, dtype: float32 }}
      - {{ name: total_orders_30d, dtype: int64 }}
      - {{ name: preferred_category, dtype: string }}
      - {{ name: account_age_days, dtype: int64 }}
      - {{ name: fraud_score, dtype: float32 }}
    source:
      path: data/user_features
      timestamp_field: event_timestamp
      created_timestamp_column: created
  - name: user_sessions
    entities: [user]
    ttl: 12h
    schema:
      - {{ name: sessions_24h, dtype: int64 }}
      - {{ name: last_device, dtype: string }}
      - {{ name: avg_session_minutes, dtype: float64 }}
    source:
      path: data/user_sessions
      timestamp_field: event_timestamp
on_demand_feature_views:
  - name: user_risk
    transform: user_risk
    sources: [user_features]
    request_fields:
      - {{ name: amount, dtype: float64 }}
    schema:
      - {{ name: order_value_per_order, dtype: float64 }}
      - {{ name: amount_over_avg, dtype: float64 }}
      - {{ name: risk_score, dtype: float64 }}
feature_services:
  - name: {SERVICE}
    features:
      - user_features:avg_order_value_7d
      - user_features:total_orders_30d
      - user_features:fraud_score
      - user_sessions
  - name: {SERVICE_LOG_1}
    logging: {{ destination: feature_logs, sample_rate: 0.01 }}
    features:
      - user_features:avg_order_value_7d
      - user_features:total_orders_30d
      - user_features:fraud_score
      - user_sessions
  - name: {SERVICE_LOG_100}
    logging: {{ destination: feature_logs, sample_rate: 1.0 }}
    features:
      - user_features:avg_order_value_7d
      - user_features:total_orders_30d
      - user_features:fraud_score
      - user_sessions
push_sources:
  - name: {PUSH_SOURCE}
    feature_view: user_sessions
server:
  max_entities: 10000
cache:
  ttl: 1h
  negative_ttl: 1h
  max_size_mib: 2048
"#
    )
}

/// What materializing the data set did.
#[derive(Debug, Clone, Serialize)]
pub struct Materialized {
    /// Source rows read (both views).
    pub rows_read: u64,
    /// Records written to the store.
    pub written: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// A Quiver server running on the server runtime.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub state: Arc<AppState>,
    _stop: oneshot::Sender<()>,
}

/// Everything a load run needs; dropping it stops the servers and Redis.
pub struct Env {
    /// Runs the Quiver and floor servers (never the load clients).
    pub server_rt: Runtime,
    /// The Redis server.
    pub redis: RedisServer,
    /// The PostgreSQL server.
    pub postgres: PostgresServer,
    /// The registry (L1 on).
    pub registry: Arc<Registry>,
    /// Quiver with the L1 cache.
    pub cached: Server,
    /// Quiver without it: every lookup reads Redis.
    pub uncached: Server,
    /// Quiver without it over PostgreSQL: every lookup reads PostgreSQL.
    pub uncached_pg: Server,
    /// Materialization figures, into Redis.
    pub materialized: Materialized,
    /// Materialization figures, into PostgreSQL.
    pub materialized_pg: Materialized,
    /// Users generated: the key space plus the cold pool.
    pub users_total: usize,
    _dir: TempDir,
}

impl Env {
    /// Starts Redis and PostgreSQL, generates `users + cold_users` quickstart users, materializes
    /// them into each (timed), and starts the three Quiver servers on a runtime with
    /// `server_threads` workers.
    pub fn start(users: usize, cold_users: usize, server_threads: usize) -> anyhow::Result<Env> {
        let redis = RedisServer::start();
        // Room for the whole store in shared buffers (~0.1 GB at the default 200k users), as a
        // production server sized for its hot set would have; Redis holds everything in memory.
        let postgres = PostgresServer::start_with(&["shared_buffers=512MB"]);
        let dir = tempfile::tempdir()?;
        let users_total = users + cold_users;
        let anchor = chrono::Utc::now().timestamp_micros();
        let t = Instant::now();
        generate(dir.path(), users_total, anchor)?;
        eprintln!(
            "generated {users_total} users of quickstart data in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        let path = dir.path().join("feature_store.yaml");
        std::fs::write(&path, registry_yaml(&redis_section(&redis.url())))?;
        let registry = Arc::new(quiver::config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?);
        // The same registry but for `online_store`, beside it (so over the same data).
        let pg_path = dir.path().join("feature_store_postgres.yaml");
        std::fs::write(&pg_path, registry_yaml(&postgres_section(&postgres.url())))?;
        let pg_registry =
            Arc::new(quiver::config::load(&pg_path).map_err(|e| anyhow::anyhow!("{e}"))?);
        let server_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(server_threads)
            .thread_name("quiver-server")
            .enable_all()
            .build()?;
        let materialized = server_rt.block_on(materialize_all(&registry))?;
        eprintln!(
            "materialized {} rows ({} records) into Redis in {:.1}s",
            materialized.rows_read, materialized.written, materialized.seconds
        );
        let materialized_pg = server_rt.block_on(materialize_all(&pg_registry))?;
        eprintln!(
            "materialized {} rows ({} records) into PostgreSQL in {:.1}s",
            materialized_pg.rows_read, materialized_pg.written, materialized_pg.seconds
        );
        // What autovacuum would do shortly after a bulk load (set hint bits, gather statistics),
        // done now so that no scenario pays for it or races with it; then the table and its
        // primary key are loaded into shared buffers, as on a server that has been serving.
        let t = Instant::now();
        server_rt.block_on(vacuum(&postgres.url()))?;
        eprintln!(
            "VACUUM (ANALYZE) and pg_prewarm of the PostgreSQL store in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        let uncached_registry = |registry: &Registry| {
            let mut plain = registry.clone();
            plain.cache.enabled = false;
            Arc::new(plain)
        };
        let cached = server_rt.block_on(start_quiver(Arc::clone(&registry)))?;
        let uncached = server_rt.block_on(start_quiver(uncached_registry(&registry)))?;
        let uncached_pg = server_rt.block_on(start_quiver(uncached_registry(&pg_registry)))?;
        Ok(Env {
            server_rt,
            redis,
            postgres,
            registry,
            cached,
            uncached,
            uncached_pg,
            materialized,
            materialized_pg,
            users_total,
            _dir: dir,
        })
    }

    /// Starts the HTTP floor server: `POST /floor/<i>` reads the request body and answers
    /// `bodies[i]` as JSON — what any axum service does at the least.
    pub fn start_floor(&self, bodies: Vec<Bytes>) -> anyhow::Result<SocketAddr> {
        self.server_rt.block_on(async {
            let mut router = Router::new();
            for (i, body) in bodies.into_iter().enumerate() {
                router = router.route(
                    &format!("/floor/{i}"),
                    post(move |_request: Bytes| {
                        let body = body.clone();
                        async move {
                            (
                                [(axum::http::header::CONTENT_TYPE, "application/json")],
                                body,
                            )
                        }
                    }),
                );
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            // The same listener settings as Quiver's `serve`.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            });
            Ok(addr)
        })
    }

    /// Opens an online store on the server runtime (for the push and materialize scenarios).
    pub fn open_store(&self) -> anyhow::Result<SharedStore> {
        let registry = Arc::clone(&self.registry);
        self.server_rt.block_on(async move {
            registry
                .open_store(system_clock())
                .await
                .context("cannot open the Redis store")
        })
    }
}

/// Writes the quickstart data under `dir/data` (`user_features/`, `user_sessions/`) and installs
/// the `user_risk` example transform, built to wasm, into `dir/transforms/wasm`.
pub fn generate(dir: &Path, users: usize, anchor: i64) -> anyhow::Result<()> {
    quickstart::generate(&dir.join("data"), users, anchor, 42)?;
    quiver_tests::wasm::install_module(
        &dir.join("transforms/wasm"),
        "user_risk",
        &quiver_tests::wasm::transform_wasm("user_risk"),
    );
    Ok(())
}

/// `VACUUM (ANALYZE)` of the PostgreSQL store's tables, then `pg_prewarm` of the records and
/// their primary key (pg_prewarm ships with Debian's postgresql package).
async fn vacuum(url: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    // One statement per call: several in one string run as one transaction, which VACUUM refuses.
    for sql in [
        "VACUUM (ANALYZE) quiver.online, quiver.watermarks",
        "CREATE EXTENSION IF NOT EXISTS pg_prewarm",
        "SELECT pg_prewarm('quiver.online'), pg_prewarm('quiver.online_pkey')",
    ] {
        client.batch_execute(sql).await?;
    }
    Ok(())
}

async fn materialize_all(registry: &Registry) -> anyhow::Result<Materialized> {
    let clock = system_clock();
    let store = registry.open_store(clock.clone()).await?;
    let request = MaterializeRequest {
        start: Some(0),
        end: clock.now_micros(),
        views: vec![],
        progress: false,
    };
    let t = Instant::now();
    let summaries = materialize(registry, &store, &clock, &request).await?;
    let seconds = t.elapsed().as_secs_f64();
    Ok(Materialized {
        rows_read: summaries.iter().map(|s| s.rows_read).sum(),
        written: summaries.iter().map(|s| s.written).sum(),
        seconds,
    })
}

async fn start_quiver(registry: Arc<Registry>) -> anyhow::Result<Server> {
    let clock = system_clock();
    let store = registry.open_store(clock.clone()).await?;
    let state = AppState::with_write_token(registry, store, clock, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, Arc::clone(&state), async move {
        let _ = stopped.await;
    }));
    Ok(Server {
        addr,
        state,
        _stop: stop,
    })
}

/// Waits until `addr` accepts connections (bounded).
pub fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{addr} does not accept connections"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The workspace's `target/` directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}
