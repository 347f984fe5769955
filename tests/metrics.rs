//! Metrics that must not depend on how the server is put together.

use std::sync::Arc;

use quiver::clock::ManualClock;
use quiver_tests::fixtures::{
    HOUR, T0, UserRow, load_registry, user_registry_yaml, write_user_rows,
};
use quiver_tests::prometheus_text::parse_samples;
use quiver_tests::server::serve_materialized;
use serde_json::json;

#[tokio::test]
async fn store_reads_are_timed_with_the_l1_cache_off() {
    let dir = tempfile::tempdir().unwrap();
    write_user_rows(
        &dir.path().join("data/user_stats/part-0.parquet"),
        &[UserRow::new("alice", T0 - HOUR, 0.25, 7, "gold")],
    );
    let yaml = format!(
        "{}cache:\n  enabled: false\n",
        user_registry_yaml("  type: sqlite\n  path: online.db")
    );
    let registry = load_registry(dir.path(), &yaml);
    assert!(!registry.cache.enabled);
    let (_, server) = serve_materialized(registry, Arc::new(ManualClock::new(T0)), T0).await;
    for _ in 0..3 {
        let (status, _) = server
            .post(
                "/get-online-features",
                &json!({"features": ["user_stats:score"], "entities": {"user_id": ["alice"]}}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (_, text) = server.get("/metrics").await;
    let samples = parse_samples(&text).unwrap();
    let reads = samples
        .iter()
        .find(|(series, _)| series.starts_with("quiver_online_store_read_duration_seconds_count"))
        .map(|(_, v)| *v);
    assert_eq!(reads, Some(3.0), "{text}");
}
