//! What Feast's SDK and `feast serve` clients send, accepted as they send it: lookup bodies with
//! version metadata, writes with naive ISO timestamps and a null `created` column, and
//! `POST /materialize` / `POST /materialize-incremental`.

use std::sync::Arc;

use quiver::clock::{ManualClock, SharedClock};
use quiver_tests::fixtures::{
    HOUR, T0, UserRow, load_registry, user_registry_yaml, write_user_rows,
};
use quiver_tests::server::{TestServer, column};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A server over an empty embedded store; the Parquet source holds alice and bob.
async fn setup() -> (TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    write_user_rows(
        &dir.path().join("data/user_stats/part-0.parquet"),
        &[
            UserRow::new("alice", T0 - 2 * HOUR, 0.25, 7, "gold"),
            UserRow::new("bob", T0 - HOUR, 0.5, 3, "silver"),
        ],
    );
    let registry = load_registry(
        dir.path(),
        &user_registry_yaml("  type: sqlite\n  path: online.db"),
    );
    let clock: SharedClock = Arc::new(ManualClock::new(T0));
    let store = quiver::store::open(
        &registry.online_store,
        "test",
        &registry.store_catalog(),
        clock.clone(),
    )
    .await
    .unwrap();
    (dir, TestServer::start(registry, store, clock).await)
}

async fn scores(server: &TestServer) -> (Vec<Value>, Vec<String>) {
    let (status, body) = server
        .post(
            "/get-online-features",
            &json!({
                "features": ["user_stats:score"],
                "entities": {"user_id": ["alice", "bob"]},
                "full_feature_names": false,
                "include_feature_view_version_metadata": false
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (values, statuses, _) = column(&body, "score");
    (
        values.clone(),
        statuses.iter().map(|s| s.to_string()).collect(),
    )
}

fn naive(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

#[tokio::test]
async fn a_lookup_body_with_feasts_version_metadata_flag_is_answered() {
    let (_dir, server) = setup().await;
    let (_, statuses) = scores(&server).await;
    assert_eq!(statuses, ["NOT_FOUND", "NOT_FOUND"]);
}

#[tokio::test]
async fn materialize_over_http_writes_the_window_as_feast_serve_does() {
    let (_dir, server) = setup().await;
    let (status, body) = server
        .post(
            "/materialize",
            &json!({"start_ts": naive(T0 - 3 * HOUR), "end_ts": naive(T0), "feature_views": ["user_stats"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["views"][0]["view"], "user_stats");
    assert_eq!(body["views"][0]["written"], 2);
    let (values, statuses) = scores(&server).await;
    assert_eq!(statuses, ["PRESENT", "PRESENT"]);
    assert_eq!(values, vec![json!(0.25), json!(0.5)]);
}

#[tokio::test]
async fn materialize_incremental_starts_where_the_last_run_ended() {
    let (_dir, server) = setup().await;
    // Up to just before bob's row: only alice.
    let (status, body) = server
        .post(
            "/materialize-incremental",
            &json!({"end_ts": naive(T0 - HOUR - 1)}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["views"][0]["written"], 1);
    let (status, body) = server
        .post("/materialize-incremental", &json!({"end_ts": naive(T0)}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["views"][0]["written"], 1, "only bob is new: {body}");
}

#[tokio::test]
async fn materialize_names_an_unknown_view_and_a_bad_time() {
    let (_dir, server) = setup().await;
    let (status, body) = server
        .post(
            "/materialize",
            &json!({"start_ts": "2026-01-01", "end_ts": "2026-01-02", "feature_views": ["nope"]}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"nope\"")
    );
    let (status, body) = server
        .post(
            "/materialize",
            &json!({"start_ts": "soon", "end_ts": "2026-01-02"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("start_ts")
    );
}

#[tokio::test]
async fn a_feast_sdk_write_with_naive_timestamps_and_null_created_is_stored() {
    let (_dir, server) = setup().await;
    let (status, body) = server
        .post(
            "/write-to-online-store",
            &json!({
                "feature_view_name": "user_stats",
                "df": {
                    "user_id": ["alice"],
                    "score": [0.75],
                    "orders": [9],
                    "tier": ["platinum"],
                    "event_timestamp": [naive(T0 - HOUR)],
                    "created": [null]
                },
                "allow_registry_cache": true,
                "transform_on_write": true
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["written"], 1);
    let (values, statuses) = scores(&server).await;
    assert_eq!(statuses[0], "PRESENT");
    assert_eq!(values[0], json!(0.75));
}
