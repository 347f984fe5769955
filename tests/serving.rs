//! The Feast-compatible HTTP API over the embedded store: statuses, naming, feature services and
//! every error class, against a real server on a loopback port.

use std::sync::Arc;

use quiver::clock::ManualClock;
use quiver_tests::fixtures::{
    HOUR, T0, UserRow, load_registry, user_registry_yaml, write_user_rows,
};
use quiver_tests::server::{TestServer, column, serve_materialized};
use serde_json::json;
use tempfile::TempDir;

struct Setup {
    _dir: TempDir,
    clock: Arc<ManualClock>,
    server: TestServer,
}

/// A server over the embedded store holding `rows`, materialized up to T0, with the clock at T0.
async fn setup(rows: &[UserRow]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    write_user_rows(&dir.path().join("data/user_stats/part-0.parquet"), rows);
    let registry = load_registry(
        dir.path(),
        &user_registry_yaml("  type: sqlite\n  path: online.db"),
    );
    let clock = Arc::new(ManualClock::new(T0));
    let (_, server) = serve_materialized(registry, clock.clone(), T0).await;
    Setup {
        _dir: dir,
        clock,
        server,
    }
}

fn standard_rows() -> Vec<UserRow> {
    vec![
        UserRow::new("alice", T0 - 2 * HOUR, 0.25, 7, "gold"),
        UserRow {
            tier: None,
            ..UserRow::new("bob", T0 - HOUR, 0.5, 3, "")
        },
        // Past the 24h ttl but within the store's 1h expiry slack: still stored, not served.
        UserRow::new("carol", T0 - 24 * HOUR - HOUR / 2, 0.75, 1, "silver"),
    ]
}

#[tokio::test]
async fn reports_present_null_not_found_and_outside_max_age() {
    let s = setup(&standard_rows()).await;
    let (status, body) = s
        .server
        .post(
            "/get-online-features",
            &json!({
                "features": ["user_stats:score", "user_stats:tier"],
                "entities": {"user_id": ["alice", "bob", "carol", "dave"]}
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["metadata"]["feature_names"],
        json!(["user_id", "score", "tier"])
    );

    let (values, statuses, _) = column(&body, "user_id");
    assert_eq!(
        *values,
        vec![json!("alice"), json!("bob"), json!("carol"), json!("dave")]
    );
    assert_eq!(statuses, vec!["PRESENT"; 4]);

    let (values, statuses, timestamps) = column(&body, "score");
    assert_eq!(
        *values,
        vec![json!(0.25), json!(0.5), json!(null), json!(null)]
    );
    assert_eq!(
        statuses,
        vec!["PRESENT", "PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"]
    );
    assert_eq!(
        timestamps,
        vec![
            "2025-12-31T22:00:00Z",
            "2025-12-31T23:00:00Z",
            "2025-12-30T23:30:00Z",
            "1970-01-01T00:00:00Z"
        ]
    );

    let (values, statuses, _) = column(&body, "tier");
    assert_eq!(
        *values,
        vec![json!("gold"), json!(null), json!(null), json!(null)]
    );
    assert_eq!(
        statuses,
        vec!["PRESENT", "NULL_VALUE", "OUTSIDE_MAX_AGE", "NOT_FOUND"]
    );
}

#[tokio::test]
async fn serves_outside_max_age_once_the_clock_passes_the_ttl() {
    let s = setup(&standard_rows()).await;
    let request = json!({"features": ["user_stats:score"], "entities": {"user_id": ["alice"]}});
    let (_, body) = s.server.post("/get-online-features", &request).await;
    assert_eq!(column(&body, "score").1, vec!["PRESENT"]);

    // alice's row is 2h old; exactly at the ttl it is still served, one microsecond later it is not.
    s.clock.set(T0 - 2 * HOUR + 24 * HOUR);
    let (_, body) = s.server.post("/get-online-features", &request).await;
    assert_eq!(column(&body, "score").1, vec!["PRESENT"]);
    s.clock.advance(1);
    let (_, body) = s.server.post("/get-online-features", &request).await;
    assert_eq!(column(&body, "score").1, vec!["OUTSIDE_MAX_AGE"]);
    assert_eq!(column(&body, "score").0[0], json!(null));
}

#[tokio::test]
async fn names_features_view_double_underscore_feature_when_asked() {
    let s = setup(&standard_rows()).await;
    let (status, body) = s
        .server
        .post(
            "/get-online-features",
            &json!({
                "features": ["user_stats:orders"],
                "entities": {"user_id": ["alice"]},
                "full_feature_names": true
            }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["metadata"]["feature_names"],
        json!(["user_id", "user_stats__orders"])
    );
    assert_eq!(*column(&body, "user_stats__orders").0, vec![json!(7)]);
}

#[tokio::test]
async fn serves_the_features_of_a_feature_service() {
    let s = setup(&standard_rows()).await;
    let (status, body) = s
        .server
        .post(
            "/get-online-features",
            &json!({"feature_service": "scoring", "entities": {"user_id": ["alice", "bob"]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["metadata"]["feature_names"],
        json!(["user_id", "score", "tier"])
    );
    assert_eq!(*column(&body, "score").0, vec![json!(0.25), json!(0.5)]);
}

#[tokio::test]
async fn whole_views_expand_to_all_their_features() {
    let s = setup(&standard_rows()).await;
    let (status, body) = s
        .server
        .post(
            "/get-online-features",
            &json!({"features": ["user_stats"], "entities": {"user_id": ["alice"]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["metadata"]["feature_names"],
        json!(["user_id", "score", "orders", "tier"])
    );
}

#[tokio::test]
async fn float32_values_are_served_exactly_as_written() {
    let s = setup(&[UserRow::new("alice", T0 - HOUR, 0.1, 1, "a")]).await;
    let (_, body) = s
        .server
        .post(
            "/get-online-features",
            &json!({"features": ["user_stats:score"], "entities": {"user_id": ["alice"]}}),
        )
        .await;
    // 0.1f32 renders as its shortest round-tripping form, not as 0.10000000149011612.
    assert_eq!(column(&body, "score").0[0].to_string(), "0.1");
}

async fn expect_error(
    s: &Setup,
    body: impl Into<reqwest::Body>,
    status: u16,
    code: &str,
    needle: &str,
) {
    let (got, response) = s.server.post_raw("/get-online-features", body).await;
    assert_eq!(got, status, "{response}");
    assert_eq!(response["error"]["code"], code, "{response}");
    let message = response["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(needle),
        "message {message:?} should mention {needle:?}"
    );
}

#[tokio::test]
async fn malformed_json_is_a_400_naming_the_problem() {
    let s = setup(&standard_rows()).await;
    expect_error(
        &s,
        "{not json",
        400,
        "INVALID_REQUEST",
        "invalid request body",
    )
    .await;
    expect_error(
        &s,
        r#"{"features": ["user_stats:score"]}"#,
        400,
        "INVALID_REQUEST",
        "entities",
    )
    .await;
    expect_error(
        &s,
        r#"{"features": "user_stats:score", "entities": {"user_id": ["a"]}}"#,
        400,
        "INVALID_REQUEST",
        "features",
    )
    .await;
    expect_error(
        &s,
        r#"{"features": ["user_stats:score"], "entities": {"user_id": "a"}}"#,
        400,
        "INVALID_REQUEST",
        "entities.user_id must be a list",
    )
    .await;
    expect_error(
        &s,
        r#"{"featurez": [], "entities": {}}"#,
        400,
        "INVALID_REQUEST",
        "featurez",
    )
    .await;
}

#[tokio::test]
async fn entity_lists_of_unequal_length_are_a_400() {
    let s = setup(&standard_rows()).await;
    let body = json!({"features": ["user_stats:score"], "entities": {"user_id": ["a", "b"], "amount": [1.0]}});
    expect_error(
        &s,
        body.to_string(),
        400,
        "INVALID_REQUEST",
        "unequal lengths",
    )
    .await;
}

#[tokio::test]
async fn a_missing_join_key_is_a_400_naming_it() {
    let s = setup(&standard_rows()).await;
    let body = json!({"features": ["user_stats:score"], "entities": {"customer_id": ["a"]}});
    expect_error(&s, body.to_string(), 400, "INVALID_REQUEST", "\"user_id\"").await;
}

#[tokio::test]
async fn unknown_views_features_and_services_are_404s() {
    let s = setup(&standard_rows()).await;
    let entities = json!({"user_id": ["alice"]});
    let cases = [
        (
            json!({"features": ["nope:score"], "entities": entities}),
            "unknown feature view \"nope\"",
        ),
        (
            json!({"features": ["user_stats:nope"], "entities": entities}),
            "has no feature \"nope\"",
        ),
        (
            json!({"feature_service": "nope", "entities": entities}),
            "unknown feature service \"nope\"",
        ),
    ];
    for (body, needle) in cases {
        expect_error(&s, body.to_string(), 404, "NOT_FOUND", needle).await;
    }
}

#[tokio::test]
async fn an_entity_value_of_the_wrong_type_is_a_422() {
    let s = setup(&standard_rows()).await;
    let body = json!({"features": ["user_stats:score"], "entities": {"user_id": ["alice", 42]}});
    expect_error(
        &s,
        body.to_string(),
        422,
        "INVALID_ENTITY",
        "entities.user_id[1]: expected string, got an integer",
    )
    .await;
}

#[tokio::test]
async fn bodies_and_entity_counts_over_the_limits_are_413s() {
    let s = setup(&standard_rows()).await;
    let big = json!({"features": ["user_stats:score"], "entities": {"user_id": vec!["x".repeat(100); 60]}});
    expect_error(
        &s,
        big.to_string(),
        413,
        "PAYLOAD_TOO_LARGE",
        "max_body_bytes",
    )
    .await;
    let many = json!({"features": ["user_stats:score"], "entities": {"user_id": vec!["u"; 101]}});
    expect_error(
        &s,
        many.to_string(),
        413,
        "PAYLOAD_TOO_LARGE",
        "max_entities",
    )
    .await;
}

#[tokio::test]
async fn health_and_readiness_answer_200_when_the_store_is_up() {
    let s = setup(&standard_rows()).await;
    assert_eq!(s.server.get("/health").await.0, 200);
    let (status, body) = s.server.get("/ready").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    let (status, body) = s.server.get("/nope").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn an_empty_entity_list_returns_empty_columns() {
    let s = setup(&standard_rows()).await;
    let (status, body) = s
        .server
        .post(
            "/get-online-features",
            &json!({"features": ["user_stats:score"], "entities": {"user_id": []}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(*column(&body, "score").0, Vec::<serde_json::Value>::new());
}
