//! The embedded SQLite store reports damage instead of serving it as missing data: a damaged
//! file is refused at open, corruption while serving answers 503 and is logged, and a database
//! file deleted or replaced while serving fails readiness and writes.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quiver::clock::{SharedClock, system_clock};
use quiver::offline::materialize::{MaterializeRequest, materialize};
use quiver::registry::Registry;
use quiver_tests::fixtures::{HOUR, UserRow, load_registry, user_registry_yaml, write_user_rows};
use quiver_tests::logs::captured_logs;
use quiver_tests::server::TestServer;
use serde_json::{Value, json};
use tempfile::TempDir;

/// SQLite's default page size.
const PAGE: u64 = 4096;

/// A registry over `online.db` in `dir`, with two users materialized into it (the store is closed
/// again, so the file holds every page and no write-ahead log).
async fn registry_with_data(dir: &TempDir) -> Arc<Registry> {
    let t = system_clock().now_micros();
    write_user_rows(
        &dir.path().join("data/user_stats/part-0.parquet"),
        &[
            UserRow::new("alice", t - HOUR, 0.25, 7, "gold"),
            UserRow::new("bob", t - HOUR, 0.5, 3, "silver"),
        ],
    );
    let registry = load_registry(
        dir.path(),
        &user_registry_yaml("  type: sqlite\n  path: online.db"),
    );
    let clock = system_clock();
    let store = open(&registry, clock.clone()).await.unwrap();
    let request = MaterializeRequest {
        start: Some(0),
        end: t,
        views: vec![],
        progress: false,
    };
    materialize(&registry, &store, &clock, &request)
        .await
        .unwrap();
    drop(store);
    assert!(
        !db_path(dir).with_extension("db-wal").exists(),
        "closing the last connection checkpoints the log"
    );
    registry
}

async fn open(
    registry: &Registry,
    clock: SharedClock,
) -> Result<quiver::store::SharedStore, quiver::store::StoreError> {
    registry.open_store(clock).await
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("online.db")
}

/// Overwrites page `page` (1-based) of the database with garbage.
fn corrupt_page(path: &Path, page: u64) {
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    assert!(
        file.metadata().unwrap().len() >= page * PAGE,
        "no page {page}"
    );
    file.seek(SeekFrom::Start((page - 1) * PAGE)).unwrap();
    file.write_all(&[0xA5; PAGE as usize]).unwrap();
    file.sync_all().unwrap();
}

fn tier_lookup(user: &str) -> Value {
    json!({"features": ["user_stats:tier"], "entities": {"user_id": [user]}})
}

fn write_body(user: &str) -> Value {
    let ts = quiver::serving::json::format_timestamp(system_clock().now_micros());
    json!({"feature_view_name": "user_stats", "df": {
        "user_id": [user], "event_timestamp": [ts], "score": [0.5], "orders": [1], "tier": ["new"],
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_a_corrupted_page_is_refused_at_open_with_a_message_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry_with_data(&dir).await;
    corrupt_page(&db_path(&dir), 2);

    let err = open(&registry, system_clock())
        .await
        .err()
        .expect("opened a damaged file");
    let message = err.to_string();
    assert!(
        message.contains(&db_path(&dir).display().to_string()),
        "{message}"
    );
    assert!(message.contains("damaged"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_corrupted_while_serving_answers_503_with_a_documented_code_and_is_logged() {
    let logs = captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let registry = registry_with_data(&dir).await;
    let clock = system_clock();
    let server = TestServer::start(
        registry.clone(),
        open(&registry, clock.clone()).await.unwrap(),
        clock,
    )
    .await;

    corrupt_page(&db_path(&dir), 2);
    let (status, body) = server
        .post("/get-online-features", &tier_lookup("alice"))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "STORE_UNAVAILABLE", "{body}");
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logged.contains("sqlite online store error")
            && logged.contains(&db_path(&dir).display().to_string()),
        "the error is logged with the file: {logged}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_database_while_serving_fails_readiness_and_writes_are_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry_with_data(&dir).await;
    let clock = system_clock();
    let server = TestServer::start(
        registry.clone(),
        open(&registry, clock.clone()).await.unwrap(),
        clock,
    )
    .await;
    assert_eq!(server.get("/ready").await.0, 200);
    let (status, body) = server
        .post("/write-to-online-store", &write_body("carol"))
        .await;
    assert_eq!(status, 200, "{body}");

    for suffix in ["db", "db-wal", "db-shm"] {
        let _ = std::fs::remove_file(db_path(&dir).with_extension(suffix));
    }
    assert_eq!(server.get("/ready").await.0, 503);
    let (status, body) = server
        .post("/write-to-online-store", &write_body("dave"))
        .await;
    assert_eq!(
        status, 503,
        "a write into a deleted file must not be acknowledged: {body}"
    );
    assert_eq!(body["error"]["code"], "STORE_UNAVAILABLE", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_database_file_while_serving_fails_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry_with_data(&dir).await;
    let clock = system_clock();
    let server = TestServer::start(
        registry.clone(),
        open(&registry, clock.clone()).await.unwrap(),
        clock,
    )
    .await;
    assert_eq!(server.get("/ready").await.0, 200);

    let copy = dir.path().join("copy.db");
    std::fs::copy(db_path(&dir), &copy).unwrap();
    std::fs::rename(&copy, db_path(&dir)).unwrap();
    let (status, body) = server.get("/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("replaced"), "{body}");
}
