//! The L1 cache over the embedded store, with a clock the tests control: per-view keys, ttl,
//! negative caching, per-view opt-out, single flight, and the metrics that show it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use quiver::cache::CachedStore;
use quiver::clock::{ManualClock, SharedClock};
use quiver::entity_key::{EntityKey, KeyPart};
use quiver::metrics::Metrics;
use quiver::serving::AppState;
use quiver::store::{
    FeatureRow, OnlineStore, RowKey, RowWrite, SharedStore, StoreError, WriteOutcome,
};
use quiver::types::{EpochMicros, Value};
use quiver_tests::fixtures::{
    HOUR, T0, UserRow, load_registry, user_registry_yaml, write_user_rows,
};
use quiver_tests::prometheus_text::parse_samples;
use quiver_tests::server::{TestServer, column, serve_materialized};
use serde_json::json;
use tempfile::TempDir;

const SECOND: i64 = 1_000_000;

struct Setup {
    _dir: TempDir,
    clock: Arc<ManualClock>,
    /// The store under the cache: writes here are invisible to L1 until its entries expire.
    raw: SharedStore,
    server: TestServer,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    write_user_rows(
        &dir.path().join("data/user_stats/part-0.parquet"),
        &[
            UserRow::new("alice", T0 - HOUR, 0.25, 7, "gold"),
            UserRow::new("bob", T0 - HOUR, 0.5, 3, "silver"),
        ],
    );
    let registry = load_registry(
        dir.path(),
        &user_registry_yaml("  type: sqlite\n  path: online.db"),
    );
    let clock = Arc::new(ManualClock::new(T0));
    let (raw, server) = serve_materialized(registry, clock.clone(), T0).await;
    Setup {
        _dir: dir,
        clock,
        raw,
        server,
    }
}

/// Writes a new `tier` for a user straight into the store under the cache.
async fn write_behind_the_cache(raw: &SharedStore, user: &str, event_ts: EpochMicros, tier: &str) {
    let fingerprint = {
        let key = EntityKey::new([KeyPart::Str("alice")]);
        raw.read(&[RowKey {
            view: "user_stats",
            entity: &key,
        }])
        .await
        .unwrap()[0]
            .as_ref()
            .unwrap()
            .schema_fingerprint
    };
    let row = RowWrite {
        view: Arc::from("user_stats"),
        entity: EntityKey::new([KeyPart::Str(user)]),
        row: FeatureRow {
            event_ts,
            created_ts: event_ts,
            schema_fingerprint: fingerprint,
            values: vec![
                Value::Float32(0.9),
                Value::Int(9),
                Value::String(tier.into()),
            ],
        },
        expire_at: None,
    };
    assert_eq!(raw.write(&[row]).await.unwrap().written, 1);
}

async fn tier_of(s: &Setup, user: &str) -> (serde_json::Value, String) {
    let (status, body) = s
        .server
        .post(
            "/get-online-features",
            &json!({"features": ["user_stats:tier"], "entities": {"user_id": [user]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (values, statuses, _) = column(&body, "tier");
    (values[0].clone(), statuses[0].to_string())
}

#[tokio::test]
async fn two_requests_for_different_features_of_one_entity_each_get_what_they_asked_for() {
    let s = setup().await;
    for (feature, expected) in [
        ("user_stats:score", json!(0.25)),
        ("user_stats:orders", json!(7)),
        ("user_stats:tier", json!("gold")),
    ] {
        let (_, body) = s
            .server
            .post(
                "/get-online-features",
                &json!({"features": [feature], "entities": {"user_id": ["alice"]}}),
            )
            .await;
        let name = feature.split(':').nth(1).unwrap();
        assert_eq!(body["metadata"]["feature_names"], json!(["user_id", name]));
        assert_eq!(column(&body, name).0[0], expected);
    }
}

#[tokio::test]
async fn serves_from_l1_until_its_ttl_passes_then_reads_the_store_again() {
    let s = setup().await;
    assert_eq!(tier_of(&s, "alice").await.0, json!("gold"));
    write_behind_the_cache(&s.raw, "alice", T0, "platinum").await;
    // Within the 5s L1 ttl the cached row is served...
    s.clock.advance(4 * SECOND);
    assert_eq!(tier_of(&s, "alice").await.0, json!("gold"));
    // ...and once it has passed, the new one.
    s.clock.advance(2 * SECOND);
    assert_eq!(tier_of(&s, "alice").await.0, json!("platinum"));
}

#[tokio::test]
async fn not_found_answers_are_cached_for_the_negative_ttl() {
    let s = setup().await;
    assert_eq!(tier_of(&s, "zoe").await.1, "NOT_FOUND");
    write_behind_the_cache(&s.raw, "zoe", T0, "new").await;
    assert_eq!(tier_of(&s, "zoe").await.1, "NOT_FOUND");
    s.clock.advance(SECOND + 1);
    assert_eq!(
        tier_of(&s, "zoe").await,
        (json!("new"), "PRESENT".to_string())
    );
}

#[tokio::test]
async fn a_view_with_cache_ttl_zero_is_never_cached() {
    let dir = tempfile::tempdir().unwrap();
    write_user_rows(
        &dir.path().join("data/user_stats/p.parquet"),
        &[UserRow::new("alice", T0 - HOUR, 0.25, 7, "gold")],
    );
    let yaml = user_registry_yaml("  type: sqlite\n  path: online.db")
        .replace("    ttl: 24h\n", "    ttl: 24h\n    cache_ttl: 0s\n");
    let registry = load_registry(dir.path(), &yaml);
    assert!(registry.feature_views[0].cache_ttl.is_none());
    let (raw, server) = serve_materialized(registry, Arc::new(ManualClock::new(T0)), T0).await;
    let body = json!({"features": ["user_stats:tier"], "entities": {"user_id": ["alice"]}});
    assert_eq!(
        column(&server.post("/get-online-features", &body).await.1, "tier").0[0],
        json!("gold")
    );
    write_behind_the_cache(&raw, "alice", T0, "platinum").await;
    assert_eq!(
        column(&server.post("/get-online-features", &body).await.1, "tier").0[0],
        json!("platinum")
    );
}

/// A real store with a delay and a read counter in front of it, to observe coalescing.
struct CountingStore {
    inner: SharedStore,
    reads: AtomicUsize,
    keys_read: AtomicUsize,
}

#[async_trait]
impl OnlineStore for CountingStore {
    fn kind(&self) -> &'static str {
        "counting"
    }
    async fn read(&self, keys: &[RowKey<'_>]) -> Result<Vec<Option<Arc<FeatureRow>>>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.keys_read.fetch_add(keys.len(), Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.inner.read(keys).await
    }
    async fn write(&self, rows: &[RowWrite]) -> Result<WriteOutcome, StoreError> {
        self.inner.write(rows).await
    }
    async fn watermark(&self, view: &str) -> Result<Option<EpochMicros>, StoreError> {
        self.inner.watermark(view).await
    }
    async fn set_watermark(&self, view: &str, at: EpochMicros) -> Result<(), StoreError> {
        self.inner.set_watermark(view, at).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[tokio::test]
async fn concurrent_misses_of_one_key_cause_a_single_store_read() {
    let s = setup().await;
    let counting = Arc::new(CountingStore {
        inner: s.raw.clone(),
        reads: AtomicUsize::new(0),
        keys_read: AtomicUsize::new(0),
    });
    let state = AppState::new(
        s.server.state.registry().clone(),
        counting.clone(),
        s.server.state.clock().clone(),
    );
    let key = EntityKey::new([KeyPart::Str("alice")]);
    let reads = (0..32).map(|_| {
        let state = state.clone();
        let key = key.clone();
        tokio::spawn(async move {
            state
                .store()
                .read(&[RowKey {
                    view: "user_stats",
                    entity: &key,
                }])
                .await
        })
    });
    for r in futures::future::join_all(reads).await {
        assert_eq!(
            r.unwrap().unwrap()[0].as_ref().unwrap().values[2],
            Value::String("gold".into())
        );
    }
    assert_eq!(counting.reads.load(Ordering::SeqCst), 1);
    assert_eq!(counting.keys_read.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_with_traffic() {
    let s = setup().await;
    let (status, before) = s.server.get("/metrics").await;
    assert_eq!(status, 200);
    let before = parse_samples(&before).unwrap();
    for _ in 0..3 {
        tier_of(&s, "alice").await;
    }
    tier_of(&s, "nobody").await;
    let (_, after) = s.server.get("/metrics").await;
    let after = parse_samples(&after).unwrap_or_else(|e| panic!("{e}\n{after}"));
    let get = |samples: &std::collections::HashMap<String, f64>, k: &str| {
        samples.get(k).copied().unwrap_or(0.0)
    };

    let requests = r#"quiver_http_requests_total{endpoint="/get-online-features",status="200"}"#;
    assert_eq!(get(&after, requests) - get(&before, requests), 4.0);
    assert_eq!(get(&after, "quiver_l1_hits_total"), 2.0);
    assert_eq!(get(&after, "quiver_l1_misses_total"), 2.0);
    let present = r#"quiver_feature_values_total{status="PRESENT",view="user_stats"}"#;
    let not_found = r#"quiver_feature_values_total{status="NOT_FOUND",view="user_stats"}"#;
    assert_eq!((get(&after, present), get(&after, not_found)), (3.0, 1.0));
    assert_eq!(
        get(
            &after,
            r#"quiver_feature_age_seconds_count{view="user_stats"}"#
        ),
        3.0
    );
    assert!(after.keys().any(|k| k.starts_with("quiver_build_info{")));
    assert!(get(&after, "quiver_l1_entries") >= 1.0);
    assert!(
        after.keys().all(|k| !k.contains("alice")),
        "entity keys must never be labels"
    );
}

/// A store whose reads take what the store holds at once and answer 50 ms later, so a write can
/// land between a read and its answer.
struct LaggingStore {
    inner: SharedStore,
}

#[async_trait]
impl OnlineStore for LaggingStore {
    fn kind(&self) -> &'static str {
        "lagging"
    }
    async fn read(&self, keys: &[RowKey<'_>]) -> Result<Vec<Option<Arc<FeatureRow>>>, StoreError> {
        let rows = self.inner.read(keys).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        rows
    }
    async fn write(&self, rows: &[RowWrite]) -> Result<WriteOutcome, StoreError> {
        self.inner.write(rows).await
    }
    async fn watermark(&self, view: &str) -> Result<Option<EpochMicros>, StoreError> {
        self.inner.watermark(view).await
    }
    async fn set_watermark(&self, view: &str, at: EpochMicros) -> Result<(), StoreError> {
        self.inner.set_watermark(view, at).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

async fn cached_tier(cache: &CachedStore, user: &str) -> Value {
    let key = EntityKey::new([KeyPart::Str(user)]);
    let rows = cache
        .read(&[RowKey {
            view: "user_stats",
            entity: &key,
        }])
        .await
        .unwrap();
    rows[0].as_ref().unwrap().values[2].clone()
}

#[tokio::test]
async fn a_read_overlapping_an_invalidation_does_not_cache_the_row_it_read() {
    for invalidate_all in [false, true] {
        let s = setup().await;
        let registry = s.server.state.registry().clone();
        let clock: SharedClock = s.clock.clone();
        let cache = Arc::new(CachedStore::new(
            Arc::new(LaggingStore {
                inner: s.raw.clone(),
            }),
            &registry,
            clock,
            Metrics::new(&registry).cache.clone(),
        ));
        let read = tokio::spawn({
            let cache = cache.clone();
            async move { cached_tier(&cache, "alice").await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // A newer row is written and announced while the read is on its way back.
        write_behind_the_cache(&s.raw, "alice", T0, "platinum").await;
        if invalidate_all {
            cache.invalidate_all();
        } else {
            let key = EntityKey::new([KeyPart::Str("alice")]);
            cache.invalidate("user_stats", key.as_bytes());
        }
        assert_eq!(read.await.unwrap(), Value::String("gold".into()));
        assert_eq!(
            cached_tier(&cache, "alice").await,
            Value::String("platinum".into()),
            "the row read before the invalidation was cached (invalidate_all: {invalidate_all})"
        );
    }
}
