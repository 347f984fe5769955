//! Feast's layout keeps every view of an entity in one Redis hash. Redis stores a hash of up to
//! `hash-max-listpack-entries` fields (512 by default) as a listpack, which it scans from the start
//! for every field an `HMGET` reads: reading a wide hash whole costs O(fields²). A store opened in
//! Feast's layout over views that make hashes that wide warns, naming the setting, unless the
//! server already stores them as hash tables.

use std::sync::Arc;
use std::time::Duration;

use quiver::clock::system_clock;
use quiver::settings::HumanDuration;
use quiver::store::redis::{RedisLayout, RedisOptions, RedisType};
use quiver::store::{FeatureColumn, KeyColumn, OnlineStoreSpec, StoreCatalog, ViewSchema};
use quiver::types::{ScalarType, ValueType};
use quiver_tests::logs::captured_logs;
use quiver_tests::redis::{RedisCluster, RedisServer, admin};

const PROJECT: &str = "wide";
const WARNING: &str = "hash-max-listpack-entries";

/// `views` views of `features` float features each, all over `driver_id`: one entity hash of
/// `views * (features + 2)` fields in Feast's layout.
fn catalog(views: usize, features: usize) -> Arc<StoreCatalog> {
    let mut catalog = StoreCatalog::default();
    for v in 0..views {
        catalog.insert(
            format!("wide_{v:02}"),
            ViewSchema {
                join_keys: vec![KeyColumn {
                    name: Arc::from("driver_id"),
                    dtype: ScalarType::Int64,
                }],
                features: (0..features)
                    .map(|f| FeatureColumn {
                        name: Arc::from(format!("f{f}")),
                        dtype: ValueType::Scalar(ScalarType::Float64),
                    })
                    .collect(),
                schema_fingerprint: 1,
            },
        );
    }
    Arc::new(catalog)
}

/// Opens a store in Feast's layout with a unique `project` and returns what it logged about it.
async fn open_and_log(
    connection_string: String,
    redis_type: RedisType,
    catalog: Arc<StoreCatalog>,
) -> String {
    let logs = captured_logs();
    let mut opts = RedisOptions::with_connection_string(connection_string, redis_type);
    opts.layout = RedisLayout::Feast;
    opts.connect_timeout = HumanDuration(Duration::from_secs(5));
    opts.command_timeout = HumanDuration(Duration::from_secs(10));
    let before = logs.lock().unwrap().len();
    let store = quiver::store::open(
        &OnlineStoreSpec::new(opts),
        PROJECT,
        &catalog,
        system_clock(),
    )
    .await
    .unwrap();
    store.ping().await.unwrap();
    String::from_utf8_lossy(&logs.lock().unwrap()[before..]).into_owned()
}

fn set_listpack_entries(port: u16, entries: u32) {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("SET").arg("hash-max-listpack-entries").arg(entries);
    admin::<()>(port, &cmd).unwrap();
}

// The tests of this binary share one log: they run one at a time (`serial`) so that each sees
// only its own store's lines.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_sharing_a_hash_wider_than_a_listpack_warn_at_startup() {
    let _serial = SERIAL.lock().await;
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    // 25 views of 10 features: 300 fields per entity, under Redis's default limit of 512.
    let log = open_and_log(server.url(), RedisType::Redis, catalog(25, 10)).await;
    assert!(log.contains(WARNING), "{log}");
    assert!(log.contains("up to 300 fields"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_warning_once_the_server_keeps_such_hashes_as_tables() {
    let _serial = SERIAL.lock().await;
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    set_listpack_entries(server.port(), 128);
    let log = open_and_log(server.url(), RedisType::Redis, catalog(25, 10)).await;
    assert!(!log.contains(WARNING), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrow_hashes_never_warn() {
    let _serial = SERIAL.lock().await;
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    // 2 views of 10 features: 24 fields, cheap to scan whatever the encoding.
    let log = open_and_log(server.url(), RedisType::Redis, catalog(2, 10)).await;
    assert!(!log.contains(WARNING), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_checked_too() {
    let _serial = SERIAL.lock().await;
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    let log = open_and_log(
        cluster.connection_string(),
        RedisType::RedisCluster,
        catalog(25, 10),
    )
    .await;
    assert!(log.contains(WARNING), "{log}");
}
