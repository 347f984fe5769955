//! Serving over real Redis servers: failure and recovery, cross-instance cache invalidation,
//! single flight counted by Redis itself, and stale-if-error.

use std::sync::Arc;
use std::time::Duration;

use quiver::clock::{ManualClock, SharedClock, system_clock};
use quiver::offline::materialize::{MaterializeRequest, materialize};
use quiver::registry::Registry;
use quiver::store::SharedStore;
use quiver_tests::fixtures::{
    HOUR, UserRow, load_registry, quickstart_registry_yaml, user_registry_yaml, write_user_rows,
};
use quiver_tests::redis::{RedisServer, admin};
use quiver_tests::server::{TestServer, column, eventually};
use serde_json::{Value, json};
use tempfile::TempDir;

fn now() -> i64 {
    system_clock().now_micros()
}

/// A registry over `redis` with `extra` YAML appended, and the user rows materialized into it.
async fn registry_with_data(dir: &TempDir, redis: &RedisServer, extra: &str) -> Arc<Registry> {
    let t = now();
    write_user_rows(
        &dir.path().join("data/user_stats/part-0.parquet"),
        &[
            UserRow::new("alice", t - HOUR, 0.25, 7, "gold"),
            UserRow::new("bob", t - HOUR, 0.5, 3, "silver"),
        ],
    );
    let store = format!(
        "  type: redis\n  connection_string: \"{}\"\n  command_timeout: 300ms\n  connect_timeout: 300ms\n",
        redis.url()
    );
    let yaml = format!("{}{extra}", user_registry_yaml(&store));
    let registry = load_registry(dir.path(), &yaml);
    let clock = system_clock();
    let store = open(&registry, clock.clone()).await;
    let request = MaterializeRequest {
        start: Some(0),
        end: t,
        views: vec![],
        progress: false,
    };
    materialize(&registry, &store, &clock, &request)
        .await
        .unwrap();
    registry
}

async fn open(registry: &Registry, clock: SharedClock) -> SharedStore {
    registry.open_store(clock).await.unwrap()
}

async fn lookup(server: &TestServer, user: &str) -> (u16, Value) {
    let body = json!({"features": ["user_stats:tier"], "entities": {"user_id": [user]}});
    tokio::time::timeout(
        Duration::from_secs(5),
        server.post("/get-online-features", &body),
    )
    .await
    .expect("a lookup must answer within a bounded time, even with Redis down")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_answer_503_while_redis_is_down_and_recover_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start();
    let registry = registry_with_data(&dir, &redis, "cache:\n  enabled: false\n").await;
    let clock = system_clock();
    let server = Arc::new(
        TestServer::start(
            registry.clone(),
            open(&registry, clock.clone()).await,
            clock,
        )
        .await,
    );
    assert_eq!(lookup(&server, "alice").await.0, 200);

    // Load from four clients throughout the outage.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (server, stop) = (server.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    statuses.push(lookup(&server, "alice").await.0);
                }
                statuses
            })
        })
        .collect();

    redis.stop();
    assert!(
        eventually(Duration::from_secs(5), || async {
            lookup(&server, "alice").await.0 == 503
        })
        .await
    );
    let (status, body) = lookup(&server, "bob").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "STORE_UNAVAILABLE", "{body}");
    assert_eq!(server.get("/ready").await.0, 503);
    assert_eq!(server.get("/health").await.0, 200, "the process stays up");

    redis.restart();
    assert!(
        eventually(Duration::from_secs(10), || async {
            lookup(&server, "alice").await.0 == 200
        })
        .await,
        "serving recovers without a restart"
    );
    assert_eq!(server.get("/ready").await.0, 200);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        let statuses = task.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 503),
            "only 200 or 503 under failure: {statuses:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_instance_is_served_by_another_before_its_l1_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let push = "push_sources:\n  - name: users\n    feature_view: user_stats\ncache:\n  ttl: 60s\n";
    let registry = registry_with_data(&dir, &redis, push).await;
    let clock = system_clock();
    let a = TestServer::start(
        registry.clone(),
        open(&registry, clock.clone()).await,
        clock.clone(),
    )
    .await;
    let b = TestServer::start(
        registry.clone(),
        open(&registry, clock.clone()).await,
        clock.clone(),
    )
    .await;
    // Both instances subscribe to write announcements when they start.
    let channel = "quiver:{test}:writes";
    assert!(
        eventually(Duration::from_secs(5), || async {
            let counts: Vec<(String, i64)> = admin(
                redis.port(),
                redis::cmd("PUBSUB").arg("NUMSUB").arg(channel),
            )
            .unwrap();
            counts[0].1 == 2
        })
        .await
    );

    // B caches alice for 60s.
    assert_eq!(
        column(&lookup(&b, "alice").await.1, "tier").0[0],
        json!("gold")
    );

    // A push through A...
    let df = json!({
        "user_id": ["alice"],
        "event_timestamp": [quiver::serving::json::format_timestamp(now())],
        "score": [0.9], "orders": [9], "tier": ["platinum"],
    });
    let (status, body) = a
        .post("/push", &json!({"push_source_name": "users", "df": df}))
        .await;
    assert_eq!(status, 200, "{body}");
    // ...is served by B well before B's L1 ttl.
    assert!(
        eventually(Duration::from_secs(5), || async {
            column(&lookup(&b, "alice").await.1, "tier").0[0] == json!("platinum")
        })
        .await,
        "B still serves the old value"
    );

    // A materialization by a third process (here: a third store) invalidates too.
    assert_eq!(
        column(&lookup(&b, "bob").await.1, "tier").0[0],
        json!("silver")
    );
    write_user_rows(
        &dir.path().join("data/user_stats/part-1.parquet"),
        &[UserRow::new("bob", now(), 0.1, 1, "bronze")],
    );
    let third = open(&registry, clock.clone()).await;
    let request = MaterializeRequest {
        start: Some(0),
        end: now(),
        views: vec![],
        progress: false,
    };
    materialize(&registry, &third, &clock, &request)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            column(&lookup(&b, "bob").await.1, "tier").0[0] == json!("bronze")
        })
        .await
    );
}

fn mget_calls(port: u16) -> u64 {
    let info: String = admin(port, redis::cmd("INFO").arg("commandstats")).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_mget:calls="))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_of_one_key_cause_one_redis_read() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let registry = registry_with_data(&dir, &redis, "").await;
    let clock = system_clock();
    let server = Arc::new(
        TestServer::start(
            registry.clone(),
            open(&registry, clock.clone()).await,
            clock,
        )
        .await,
    );
    let _: () = admin(redis.port(), redis::cmd("CONFIG").arg("RESETSTAT")).unwrap();
    let requests: Vec<_> = (0..64)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move { lookup(&server, "alice").await })
        })
        .collect();
    for r in futures::future::join_all(requests).await {
        let (status, body) = r.unwrap();
        assert_eq!(status, 200);
        assert_eq!(column(&body, "tier").0[0], json!("gold"));
    }
    assert_eq!(
        mget_calls(redis.port()),
        1,
        "64 concurrent lookups of one key read Redis once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_rows_are_served_stale_while_redis_is_down_only_when_max_stale_allows() {
    for (max_stale, expect_stale) in [("1h", true), ("0s", false)] {
        let dir = tempfile::tempdir().unwrap();
        let mut redis = RedisServer::start();
        let extra = format!("cache:\n  ttl: 1s\n  max_stale: {max_stale}\n");
        let registry = registry_with_data(&dir, &redis, &extra).await;
        let clock = Arc::new(ManualClock::new(now()));
        let shared: SharedClock = clock.clone();
        let server = TestServer::start(
            registry.clone(),
            open(&registry, shared.clone()).await,
            shared,
        )
        .await;
        let (_, fresh) = lookup(&server, "alice").await;

        redis.stop();
        clock.advance(2_000_000); // past the 1s L1 ttl
        let (status, body) = lookup(&server, "alice").await;
        if expect_stale {
            assert_eq!(status, 200, "{body}");
            let (values, statuses, timestamps) = column(&body, "tier");
            assert_eq!((values[0].clone(), statuses[0]), (json!("gold"), "PRESENT"));
            assert_eq!(
                timestamps,
                column(&fresh, "tier").2,
                "stale rows keep their true event time"
            );
            // A key that was never cached still needs Redis.
            assert_eq!(lookup(&server, "bob").await.0, 503);
        } else {
            assert_eq!(status, 503, "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_runs_against_redis_by_switching_only_online_store() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let yaml = quickstart_registry_yaml();
    let start = 1 + yaml
        .find("\nonline_store:\n")
        .expect("the quickstart registry has an online_store section");
    let end = start + yaml[start..].find("\n\n").unwrap();
    let yaml = format!(
        "{}online_store:\n  type: redis\n  connection_string: \"{}\"{}",
        &yaml[..start],
        redis.url(),
        &yaml[end..]
    );
    let t = now();
    quickstart::generate(&dir.path().join("examples/quickstart/data"), 100, t, 42).unwrap();
    let registry = load_registry(dir.path(), &yaml);
    assert_eq!(registry.online_store.type_name(), "redis");
    let clock = system_clock();
    let store = open(&registry, clock.clone()).await;
    let request = MaterializeRequest {
        start: None,
        end: t,
        views: vec![],
        progress: false,
    };
    let summaries = materialize(&registry, &store, &clock, &request)
        .await
        .unwrap();
    assert!(summaries.iter().all(|s| s.written > 0), "{summaries:?}");
    let server = TestServer::start(registry, store, clock).await;
    let (status, body) = server
        .post(
            "/get-online-features",
            &json!({"feature_service": "fraud_model_v1", "entities": {"user_id": ["user_0001", "nobody"]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, statuses, _) = column(&body, "fraud_score");
    assert_eq!(statuses[1], "NOT_FOUND");
    assert_ne!(statuses[0], "NOT_FOUND", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_starts_unready_while_redis_is_down_and_becomes_ready_when_it_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start();
    let registry = registry_with_data(&dir, &redis, "cache:\n  enabled: false\n").await;
    tokio::task::block_in_place(|| redis.stop());

    // Opening the store does not fail just because Redis is down.
    let clock = system_clock();
    let store = open(&registry, clock.clone()).await;
    let server = TestServer::start(registry.clone(), store, clock).await;
    let (status, body) = server.get("/ready").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = lookup(&server, "alice").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "STORE_UNAVAILABLE", "{body}");
    assert_eq!(server.get("/health").await.0, 200, "the process is up");

    tokio::task::block_in_place(|| redis.restart());
    assert!(
        eventually(Duration::from_secs(15), || async {
            server.get("/ready").await.0 == 200
        })
        .await,
        "ready without a restart once Redis answers"
    );
    let (status, body) = lookup(&server, "alice").await;
    assert_eq!(status, 200, "{body}");
    // Writes go through the connected store, and are served.
    let ts = quiver::serving::json::format_timestamp(now());
    let df = json!({"user_id": ["carol"], "event_timestamp": [ts], "score": [0.5], "orders": [1], "tier": ["new"]});
    let (status, body) = server
        .post(
            "/write-to-online-store",
            &json!({"feature_view_name": "user_stats", "df": df}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = lookup(&server, "carol").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(column(&body, "tier").0[0], json!("new"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_the_first_lookup_on_every_pooled_connection_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start();
    let registry = registry_with_data(&dir, &redis, "cache:\n  enabled: false\n").await;
    let clock = system_clock();
    let server = TestServer::start(
        registry.clone(),
        open(&registry, clock.clone()).await,
        clock,
    )
    .await;
    // Use every pooled connection (two by default) before the restart.
    for _ in 0..4 {
        assert_eq!(lookup(&server, "alice").await.0, 200);
    }

    tokio::task::block_in_place(|| redis.restart());
    for i in 0..20 {
        let (status, body) = lookup(&server, "alice").await;
        assert_eq!(status, 200, "lookup {i} after the restart: {body}");
    }
    assert_eq!(server.get("/ready").await.0, 200);
}
