//! Serving over a real PostgreSQL: lookups under load while the server is killed and restarted
//! (bounded 503s, recovery without restarting Quiver), a push through one instance invalidating
//! another's L1 cache through `LISTEN`/`NOTIFY`, and the founding ADR's reversal plan: the
//! quickstart switched to PostgreSQL by changing only `online_store`, materialized with
//! `quiver materialize`, answers exactly as it does on SQLite and Redis.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quiver::clock::{ManualClock, SharedClock, system_clock};
use quiver::offline::materialize::{MaterializeRequest, materialize};
use quiver_tests::fixtures::{
    HOUR, UserRow, load_registry, quickstart_registry_yaml, user_registry_yaml, write_user_rows,
};
use quiver_tests::postgres::PostgresServer;
use quiver_tests::redis::RedisServer;
use quiver_tests::server::{TestServer, column, eventually};
use quiver_tests::wasm::{install_module, transform_wasm};
use serde_json::{Value, json};

/// Bound for one lookup to answer, whatever state PostgreSQL is in.
const ANSWERS_WITHIN: Duration = Duration::from_secs(5);

async fn lookup(server: &TestServer, user: &str) -> (u16, Value) {
    let body = json!({"features": ["user_stats:tier"], "entities": {"user_id": [user]}});
    tokio::time::timeout(ANSWERS_WITHIN, server.post("/get-online-features", &body))
        .await
        .expect("a lookup must answer within a bounded time, even with PostgreSQL down")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_under_load_answer_503_while_postgres_is_down_and_recover_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap();
    let t = system_clock().now_micros();
    write_user_rows(
        &dir.path().join("data/user_stats/part-0.parquet"),
        &[
            UserRow::new("alice", t - HOUR, 0.25, 7, "gold"),
            UserRow::new("bob", t - HOUR, 0.5, 3, "silver"),
        ],
    );
    let section = format!(
        "  type: postgres\n  connection_string: \"{}\"\n  command_timeout: 300ms\n  connect_timeout: 300ms\n",
        pg.url()
    );
    let yaml = format!("{}cache:\n  enabled: false\n", user_registry_yaml(&section));
    let registry = load_registry(dir.path(), &yaml);
    assert_eq!(registry.online_store.type_name(), "postgres");
    let clock = system_clock();
    let store = registry.open_store(clock.clone()).await.unwrap();
    let request = MaterializeRequest {
        start: Some(0),
        end: t,
        views: vec![],
        progress: false,
    };
    materialize(&registry, &store, &clock, &request)
        .await
        .unwrap();
    let server = Arc::new(TestServer::start(registry, store, clock).await);
    assert_eq!(lookup(&server, "alice").await.0, 200);

    // Four clients looking up without pause, each recording every status, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (server, stop) = (Arc::clone(&server), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                // Bounded: at most 100k lookups per client, and the test stops them far sooner.
                for _ in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (status, body) = lookup(&server, "alice").await;
                    if status == 200 {
                        assert_eq!(column(&body, "tier").0[0], json!("gold"), "{body}");
                    }
                    statuses.push(status);
                }
                statuses
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| pg.stop());
    assert!(
        eventually(Duration::from_secs(15), || async {
            lookup(&server, "alice").await.0 == 503
        })
        .await,
        "lookups kept succeeding after postgres was killed"
    );
    let (status, body) = lookup(&server, "alice").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "STORE_UNAVAILABLE", "{body}");
    assert_eq!(server.get("/ready").await.0, 503);

    tokio::task::block_in_place(|| pg.restart());
    assert!(
        eventually(Duration::from_secs(30), || async {
            lookup(&server, "alice").await.0 == 200
        })
        .await,
        "lookups did not recover after postgres came back"
    );
    assert!(
        eventually(Duration::from_secs(15), || async {
            server.get("/ready").await.0 == 200
        })
        .await,
        "ready again without a restart"
    );
    stop.store(true, Ordering::Relaxed);
    let mut statuses = Vec::new();
    for client in clients {
        statuses.extend(client.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let unavailable = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(
        ok + unavailable,
        statuses.len(),
        "only 200 and 503 while postgres failed: {:?}",
        statuses
            .iter()
            .filter(|s| **s != 200 && **s != 503)
            .collect::<Vec<_>>()
    );
    assert!(
        ok > 0 && unavailable > 0,
        "{ok} answered, {unavailable} unavailable"
    );
    // Every client's last lookups ran after the recovery.
    assert_eq!(statuses.last(), Some(&200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_through_one_instance_is_served_by_another_before_its_l1_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let pg = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap();
    let t = system_clock().now_micros();
    write_user_rows(
        &dir.path().join("data/user_stats/part-0.parquet"),
        &[UserRow::new("alice", t - HOUR, 0.25, 7, "gold")],
    );
    let section = format!("  type: postgres\n  connection_string: \"{}\"\n", pg.url());
    let yaml = format!(
        "{}push_sources:\n  - name: users\n    feature_view: user_stats\ncache:\n  ttl: 60s\n",
        user_registry_yaml(&section)
    );
    let registry = load_registry(dir.path(), &yaml);
    let clock = system_clock();
    let store = registry.open_store(clock.clone()).await.unwrap();
    let request = MaterializeRequest {
        start: Some(0),
        end: t,
        views: vec![],
        progress: false,
    };
    materialize(&registry, &store, &clock, &request)
        .await
        .unwrap();
    let start = || async {
        let store = registry.open_store(clock.clone()).await.unwrap();
        TestServer::start(registry.clone(), store, clock.clone()).await
    };
    let (a, b) = (start().await, start().await);
    // Both instances LISTEN for write announcements once they started.
    let (admin, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    assert!(
        eventually(Duration::from_secs(10), || async {
            let listening: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN quiver_writes_%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            listening == 2
        })
        .await,
        "both instances listen"
    );

    // B caches alice for 60 s; a push through A is served by B well before that.
    assert_eq!(
        column(&lookup(&b, "alice").await.1, "tier").0[0],
        json!("gold")
    );
    let df = json!({
        "user_id": ["alice"],
        "event_timestamp": [quiver::serving::json::format_timestamp(system_clock().now_micros())],
        "score": [0.9], "orders": [9], "tier": ["platinum"],
    });
    let (status, body) = a
        .post("/push", &json!({"push_source_name": "users", "df": df}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            column(&lookup(&b, "alice").await.1, "tier").0[0] == json!("platinum")
        })
        .await,
        "B still serves the old value"
    );
}

/// The quickstart registry with its `online_store` section replaced by `section`, and nothing else.
fn quickstart_with(section: &str) -> String {
    let yaml = quickstart_registry_yaml();
    let start = 1 + yaml
        .find("\nonline_store:\n")
        .expect("the quickstart registry has an online_store section");
    let end = start + yaml[start..].find("\n\n").unwrap();
    format!("{}online_store:\n{section}{}", &yaml[..start], &yaml[end..])
}

/// `quiver materialize` run by the real binary in `dir`.
fn quiver_materialize(dir: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quiver-under-test"))
        .arg("-c")
        .arg(dir.join("feature_store.yaml"))
        .args(["materialize", "now-3650d", "now"])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run quiver materialize");
    assert!(
        out.status.success(),
        "quiver materialize failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_switched_to_postgres_answers_as_on_sqlite_and_redis() {
    let pg = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap();
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let sections = [
        (
            "sqlite",
            "  type: sqlite\n  path: data/online_store.db\n".to_string(),
        ),
        (
            "redis",
            format!("  type: redis\n  connection_string: \"{}\"\n", redis.url()),
        ),
        (
            "postgres",
            format!("  type: postgres\n  connection_string: \"{}\"\n", pg.url()),
        ),
    ];
    let modules = [
        ("user_risk", transform_wasm("user_risk")),
        ("order_stats", transform_wasm("order_stats")),
    ];
    let t = system_clock().now_micros();
    let users: Vec<String> = (1..=100)
        .map(quickstart::user_id)
        .chain(["nobody".to_string()])
        .collect();
    let amounts: Vec<f64> = (0..users.len()).map(|i| 5.0 + i as f64 * 3.5).collect();
    let requests = [
        json!({"feature_service": "fraud_model_v1", "entities": {"user_id": users}}),
        json!({"feature_service": "fraud_model_v2", "entities": {"user_id": users, "amount": amounts}}),
    ];
    let mut answers: Vec<(&str, Vec<Value>)> = Vec::new();
    let mut dirs = Vec::new();
    for (name, section) in &sections {
        // The same data in each directory, and the same registry but for `online_store`.
        let dir = tempfile::tempdir().unwrap();
        quickstart::generate(&dir.path().join("examples/quickstart/data"), 100, t, 42).unwrap();
        for (module, bytes) in &modules {
            install_module(&dir.path().join("transforms/wasm"), module, bytes);
        }
        std::fs::write(
            dir.path().join("feature_store.yaml"),
            quickstart_with(section),
        )
        .unwrap();
        let path = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || quiver_materialize(&path))
            .await
            .unwrap();

        let registry = load_registry(dir.path(), &quickstart_with(section));
        assert_eq!(registry.online_store.type_name(), *name);
        // One "now" for every backend, so ttl statuses are decided alike.
        let clock: SharedClock = Arc::new(ManualClock::new(t));
        let store = registry.open_store(clock.clone()).await.unwrap();
        let server = TestServer::start(registry, store, clock).await;
        let mut bodies = Vec::new();
        for request in &requests {
            let (status, body) = server.post("/get-online-features", request).await;
            assert_eq!(status, 200, "{name}: {body}");
            bodies.push(body);
        }
        answers.push((name, bodies));
        dirs.push(dir);
    }

    let (_, sqlite) = &answers[0];
    let (_, v1_statuses, _) = column(&sqlite[0], "fraud_score");
    assert!(v1_statuses.contains(&"PRESENT"), "{}", sqlite[0]);
    assert_eq!(v1_statuses[100], "NOT_FOUND");
    let (risk, _, _) = column(&sqlite[1], "risk_score");
    assert!(risk.iter().any(|v| v.is_number()), "{}", sqlite[1]);
    for (name, bodies) in &answers[1..] {
        for (i, (body, expected)) in bodies.iter().zip(sqlite).enumerate() {
            assert_eq!(body, expected, "{name} answers request {i} unlike sqlite");
        }
    }
}
