//! The streaming write path over the embedded store: `/push` and `/write-to-online-store`,
//! newer-wins, all-or-nothing validation, bearer tokens, and offline files that materialization reads.

use std::sync::Arc;

use quiver::clock::{ManualClock, SharedClock};
use quiver::offline::materialize::{MaterializeRequest, materialize};
use quiver::registry::Registry;
use quiver::serving::AppState;
use quiver::store::SharedStore;
use quiver_tests::fixtures::{HOUR, T0, load_registry, user_registry_yaml};
use quiver_tests::server::{TestServer, column};
use serde_json::{Value, json};
use tempfile::TempDir;

struct Setup {
    dir: TempDir,
    registry: Arc<Registry>,
    clock: SharedClock,
    server: TestServer,
}

const PUSH_SOURCES: &str =
    "push_sources:\n  - name: user_stats_push\n    feature_view: user_stats\n";

async fn setup(token: Option<&str>) -> Setup {
    setup_with(token, "push:\n  flush_interval: 0s\n").await
}

/// A server whose `feature_store.yaml` ends with `push` (a `push:` section, or nothing).
async fn setup_with(token: Option<&str>, push: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/user_stats")).unwrap();
    let yaml = format!(
        "{}{PUSH_SOURCES}{push}",
        user_registry_yaml("  type: sqlite\n  path: online.db")
    );
    let registry = load_registry(dir.path(), &yaml);
    let clock: SharedClock = Arc::new(ManualClock::new(T0));
    let store: SharedStore = quiver::store::open(
        &registry.online_store,
        "test",
        &registry.store_catalog(),
        clock.clone(),
    )
    .await
    .unwrap();
    let state = AppState::with_write_token(
        registry.clone(),
        store,
        clock.clone(),
        token.map(String::from),
    );
    let server = TestServer::start_with_state(state).await;
    Setup {
        dir,
        registry,
        clock,
        server,
    }
}

fn df(users: &[&str], hours_ago: &[i64], tiers: &[&str]) -> Value {
    json!({
        "user_id": users,
        "event_timestamp": hours_ago.iter().map(|h| quiver::serving::json::format_timestamp(T0 - h * HOUR)).collect::<Vec<_>>(),
        "score": users.iter().map(|_| 0.5).collect::<Vec<_>>(),
        "orders": users.iter().map(|_| 3).collect::<Vec<_>>(),
        "tier": tiers,
    })
}

async fn tier_of(s: &Setup, user: &str) -> (Value, String) {
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
async fn a_pushed_value_is_served_and_an_older_one_pushed_later_is_skipped() {
    let s = setup(None).await;
    let (status, body) = s
        .server
        .post(
            "/push",
            &json!({"push_source_name": "user_stats_push", "df": df(&["alice"], &[1], &["gold"])}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["written"], 1);
    assert_eq!(
        tier_of(&s, "alice").await,
        (json!("gold"), "PRESENT".into())
    );

    let (status, body) = s
        .server
        .post(
            "/push",
            &json!({"push_source_name": "user_stats_push", "df": df(&["alice"], &[5], &["stale"])}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["written"].clone(), body["skipped_older"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(tier_of(&s, "alice").await.0, json!("gold"));
}

#[tokio::test]
async fn write_to_online_store_writes_a_view_directly() {
    let s = setup(None).await;
    let (status, body) = s
        .server
        .post("/write-to-online-store", &json!({"feature_view_name": "user_stats", "df": df(&["bob", "carol"], &[1, 2], &["a", "b"])}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["written"], 2);
    assert_eq!(tier_of(&s, "carol").await.0, json!("b"));
}

#[tokio::test]
async fn a_rejected_push_writes_nothing_and_names_column_and_row() {
    let s = setup(None).await;
    let mut bad = df(&["alice", "bob"], &[1, 1], &["gold", "silver"]);
    bad["orders"] = json!([3, "three"]);
    let (status, body) = s
        .server
        .post(
            "/push",
            &json!({"push_source_name": "user_stats_push", "df": bad, "to": "online_and_offline"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["message"],
        "df.orders[1]: expected int64, got a string"
    );
    assert_eq!(tier_of(&s, "alice").await.1, "NOT_FOUND");
    assert!(!s.dir.path().join("data/user_stats/pushed").exists());
}

#[tokio::test]
async fn unknown_columns_sources_and_missing_timestamps_are_rejected() {
    let s = setup(None).await;
    let mut extra = df(&["alice"], &[1], &["gold"]);
    extra["colour"] = json!(["red"]);
    let (status, body) = s
        .server
        .post(
            "/push",
            &json!({"push_source_name": "user_stats_push", "df": extra}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no column \"colour\"")
    );

    let (status, _) = s
        .server
        .post(
            "/push",
            &json!({"push_source_name": "nope", "df": df(&["a"], &[1], &["x"])}),
        )
        .await;
    assert_eq!(status, 404);

    let mut no_ts = df(&["alice"], &[1], &["gold"]);
    no_ts.as_object_mut().unwrap().remove("event_timestamp");
    let (status, body) = s
        .server
        .post(
            "/push",
            &json!({"push_source_name": "user_stats_push", "df": no_ts}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("event_timestamp")
    );
}

#[tokio::test]
async fn with_a_token_configured_writes_need_it_and_reads_stay_open() {
    let s = setup(Some("s3cret")).await;
    let request =
        json!({"push_source_name": "user_stats_push", "df": df(&["alice"], &[1], &["gold"])});
    let (status, body) = s.server.post("/push", &request).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(tier_of(&s, "alice").await.1, "NOT_FOUND");

    let response = reqwest::Client::new()
        .post(s.server.url("/push"))
        .header("authorization", "Bearer wrong")
        .body(request.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    let response = reqwest::Client::new()
        .post(s.server.url("/push"))
        .header("authorization", "Bearer s3cret")
        .body(request.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(tier_of(&s, "alice").await.0, json!("gold"));
}

#[tokio::test]
async fn rows_pushed_offline_land_in_parquet_files_that_materialize_reads() {
    let s = setup(None).await;
    let (status, body) = s
        .server
        .post(
            "/push",
            &json!({"push_source_name": "user_stats_push", "df": df(&["alice", "bob"], &[2, 3], &["gold", "silver"]), "to": "offline"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["offline_rows"].clone(), body["written"].clone()),
        (json!(2), json!(0))
    );
    // Offline only: not online yet.
    assert_eq!(tier_of(&s, "alice").await.1, "NOT_FOUND");

    // A fresh store materialized from the source directory sees the pushed rows.
    let other = quiver::store::open(
        &quiver::store::OnlineStoreSpec::new(quiver::store::sqlite::SqliteOptions {
            path: s.dir.path().join("other.db"),
            ..Default::default()
        }),
        "test",
        &quiver::store::StoreCatalog::empty(),
        s.clock.clone(),
    )
    .await
    .unwrap();
    let request = MaterializeRequest {
        start: Some(0),
        end: T0,
        views: vec![],
        progress: false,
    };
    let summary = materialize(&s.registry, &other, &s.clock, &request)
        .await
        .unwrap();
    assert_eq!((summary[0].rows_read, summary[0].written), (2, 2));
    let files: Vec<_> = walk(&s.dir.path().join("data/user_stats/pushed"));
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].rsplit('/').next().unwrap();
    assert!(
        name.starts_with("part-") && name.ends_with(".parquet"),
        "{files:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}

#[tokio::test]
async fn a_row_pushed_online_and_offline_is_in_the_next_training_set_exactly_as_served() {
    use quiver::offline::historical::HistoricalOptions;
    use quiver::types::{ScalarType, ValueType};
    use quiver_tests::training::{features, read_parquet, run, values, write_user_entities};

    let s = setup(None).await;
    let request = json!({
        "push_source_name": "user_stats_push",
        "df": df(&["alice"], &[2], &["gold"]),
        "to": "online_and_offline",
    });
    let (status, body) = s.server.post("/push", &request).await;
    assert_eq!(status, 200, "{body}");
    let (served, status) = tier_of(&s, "alice").await;
    assert_eq!(
        (served.clone(), status.as_str()),
        (json!("gold"), "PRESENT")
    );

    let entities = s.dir.path().join("entities.parquet");
    write_user_entities(&entities, &[("alice", T0), ("alice", T0 - 3 * HOUR)]);
    let output = s.dir.path().join("training.parquet");
    let registry = s.registry.clone();
    let (entities_path, output_path) = (entities.clone(), output.clone());
    tokio::task::spawn_blocking(move || {
        run(
            &registry,
            &entities_path,
            features(&["user_stats:tier", "user_stats:score"]),
            &output_path,
            false,
            &HistoricalOptions::default(),
        )
    })
    .await
    .unwrap()
    .unwrap();
    let batch = read_parquet(&output);
    let tiers = values(&batch, "tier", ValueType::Scalar(ScalarType::String));
    // At T0 the pushed row (2h old) is the training value; 3h before T0 it did not exist yet.
    assert_eq!(
        tiers,
        vec![
            quiver::types::Value::String("gold".into()),
            quiver::types::Value::Null
        ]
    );
    let scores = values(&batch, "score", ValueType::Scalar(ScalarType::Float32));
    assert!(
        scores[0].bit_eq(&quiver::types::Value::Float32(0.5)),
        "{scores:?}"
    );
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

/// A push of one row for alice, one hour old, with `column` replaced by the raw JSON `value`.
fn raw_push(column: &str, value: &str, to: &str) -> String {
    let ts = format!("\"{}\"", quiver::serving::json::format_timestamp(T0 - HOUR));
    let mut columns = vec![
        ("user_id", "\"alice\"".to_string()),
        ("event_timestamp", ts),
        ("score", "0.5".into()),
        ("orders", "3".into()),
        ("tier", "\"gold\"".into()),
    ];
    for c in &mut columns {
        if c.0 == column {
            c.1 = value.to_string();
        }
    }
    let df: Vec<String> = columns
        .iter()
        .map(|(name, v)| format!("\"{name}\":[{v}]"))
        .collect();
    format!(
        "{{\"push_source_name\":\"user_stats_push\",\"to\":\"{to}\",\"df\":{{{}}}}}",
        df.join(",")
    )
}

fn parquet_files(dir: &std::path::Path) -> Vec<String> {
    if !dir.exists() {
        return Vec::new();
    }
    walk(dir)
        .into_iter()
        .filter(|p| {
            let name = p.rsplit('/').next().unwrap_or_default();
            name.ends_with(".parquet") && !name.starts_with('.')
        })
        .collect()
}

#[tokio::test]
async fn a_push_with_an_event_timestamp_far_in_the_future_is_rejected() {
    let s = setup(None).await;
    let mut bad = df(&["alice", "bob"], &[1, 1], &["gold", "silver"]);
    bad["event_timestamp"][1] = json!("2090-01-01T00:00:00Z");
    let (status, body) = s
        .server
        .post(
            "/push",
            &json!({"push_source_name": "user_stats_push", "df": bad, "to": "online_and_offline"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        message(&body),
        "df.event_timestamp[1]: 2090-01-01T00:00:00Z is more than 1d ahead of the server's clock \
         (push.max_future_skew)"
    );
    assert_eq!(tier_of(&s, "alice").await.1, "NOT_FOUND");
    assert!(!s.dir.path().join("data/user_stats/pushed").exists());
}

#[tokio::test]
async fn a_push_slightly_ahead_of_the_clock_is_accepted() {
    let s = setup(None).await;
    let mut ahead = df(&["alice"], &[0], &["gold"]);
    ahead["event_timestamp"][0] = json!(quiver::serving::json::format_timestamp(T0 + HOUR));
    let (status, body) = s
        .server
        .post(
            "/push",
            &json!({"push_source_name": "user_stats_push", "df": ahead}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["written"], 1);
}

#[tokio::test]
async fn a_created_timestamp_far_in_the_future_is_rejected() {
    let s = setup(None).await;
    let mut bad = df(&["alice"], &[1], &["gold"]);
    bad["created"] = json!(["2090-01-01T00:00:00Z"]);
    let (status, body) = s
        .server
        .post(
            "/push",
            &json!({"push_source_name": "user_stats_push", "df": bad}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        message(&body).starts_with("df.created_timestamp[0]: 2090-01-01T00:00:00Z is more than"),
        "{body}"
    );
}

#[tokio::test]
async fn epoch_seconds_too_large_for_a_timestamp_are_rejected_not_saturated() {
    let s = setup(None).await;
    for ts in [
        "1e15",
        "9223372036854775807",
        "18446744073709551615",
        "-1e300",
    ] {
        let (status, body) = s
            .server
            .post_raw("/push", raw_push("event_timestamp", ts, "online"))
            .await;
        assert_eq!(status, 422, "{ts}: {body}");
        assert!(
            message(&body).starts_with("df.event_timestamp[0]: ")
                && message(&body).ends_with("epoch seconds is out of range for a timestamp"),
            "{ts}: {body}"
        );
    }
    assert_eq!(tier_of(&s, "alice").await.1, "NOT_FOUND");
}

#[tokio::test]
async fn a_float32_beyond_its_range_is_rejected_not_served_as_a_present_null() {
    let s = setup(None).await;
    let (status, body) = s
        .server
        .post_raw("/push", raw_push("score", "1e39", "online"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        message(&body),
        "df.score[0]: 1e+39 is out of range for float32"
    );
    assert_eq!(tier_of(&s, "alice").await.1, "NOT_FOUND");
}

#[tokio::test]
async fn an_int64_beyond_its_range_is_rejected_as_out_of_range() {
    let s = setup(None).await;
    let (status, body) = s
        .server
        .post_raw("/push", raw_push("orders", "9223372036854775808", "online"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        message(&body),
        "df.orders[0]: 9223372036854775808 is out of range for int64"
    );
}

#[tokio::test]
async fn write_to_online_store_applies_the_same_checks_as_push() {
    let s = setup(None).await;
    let mut bad = df(&["alice"], &[1], &["gold"]);
    bad["event_timestamp"][0] = json!("2090-01-01T00:00:00Z");
    let (status, body) = s
        .server
        .post(
            "/write-to-online-store",
            &json!({"feature_view_name": "user_stats", "df": bad}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        message(&body).starts_with("df.event_timestamp[0]: 2090-01-01T00:00:00Z is more than"),
        "{body}"
    );
    let mut bad = df(&["alice"], &[1], &["gold"]);
    bad["score"] = json!([1e39]);
    let (status, body) = s
        .server
        .post(
            "/write-to-online-store",
            &json!({"feature_view_name": "user_stats", "df": bad}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        message(&body),
        "df.score[0]: 1e+39 is out of range for float32"
    );
    assert_eq!(tier_of(&s, "alice").await.1, "NOT_FOUND");
}

#[tokio::test]
async fn an_offline_push_is_logged_durably_before_it_is_answered_and_says_so() {
    let s = setup_with(None, "push:\n  flush_interval: 1h\n").await;
    let (status, body) = s
        .server
        .post(
            "/push",
            &json!({"push_source_name": "user_stats_push", "df": df(&["alice", "bob"], &[2, 3], &["gold", "silver"]), "to": "offline"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["offline_durable"].clone(),
            body["offline_buffered"].clone(),
            body["offline_rows"].clone()
        ),
        (json!(2), json!(0), json!(2))
    );
    // Until the flush only the write-ahead log holds them.
    let pushed = s.dir.path().join("data/user_stats/pushed");
    let wal = pushed.join(".wal/user_stats");
    let segments = walk(&wal);
    assert!(
        segments.len() == 1 && segments[0].ends_with(".wal"),
        "{segments:?}"
    );
    assert_eq!(parquet_files(&pushed), Vec::<String>::new());

    // A graceful stop writes the file and drops the log.
    let Setup { dir, server, .. } = s;
    server.stop().await;
    let pushed = dir.path().join("data/user_stats/pushed");
    assert_eq!(parquet_files(&pushed).len(), 1);
    assert_eq!(walk(&wal), Vec::<String>::new());
}

#[tokio::test]
async fn with_buffered_durability_an_offline_push_says_its_rows_are_only_buffered() {
    let s = setup_with(
        None,
        "push:\n  flush_interval: 1h\n  durability: buffered\n",
    )
    .await;
    let (status, body) = s
        .server
        .post(
            "/push",
            &json!({"push_source_name": "user_stats_push", "df": df(&["alice", "bob"], &[2, 3], &["gold", "silver"]), "to": "online_and_offline"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["offline_durable"].clone(),
            body["offline_buffered"].clone(),
            body["written"].clone()
        ),
        (json!(0), json!(2), json!(2))
    );
    assert!(!s.dir.path().join("data/user_stats/pushed/.wal").exists());
}

#[tokio::test]
async fn with_flush_interval_zero_an_offline_push_is_durable_in_its_own_file() {
    let s = setup(None).await;
    let (status, body) = s
        .server
        .post(
            "/push",
            &json!({"push_source_name": "user_stats_push", "df": df(&["alice"], &[2], &["gold"]), "to": "offline"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offline_durable"], 1);
    let pushed = s.dir.path().join("data/user_stats/pushed");
    assert_eq!(parquet_files(&pushed).len(), 1);
    assert!(!pushed.join(".wal").exists());
}
