//! Drift monitoring end to end: a training set written by the real `quiver historical`, a server
//! monitoring the view against it, lookups that follow the training data (no drift) and then
//! lookups of shifted data (drift), read on `GET /monitoring` and `GET /metrics`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use quiver::clock::ManualClock;
use quiver::serving::AppState;
use quiver_tests::fixtures::{
    HOUR, T0, UserRow, load_registry, user_registry_yaml, write_user_rows,
};
use quiver_tests::prometheus_text::parse_samples;
use quiver_tests::server::TestServer;
use quiver_tests::training::write_user_entities;
use serde_json::{Value as Json, json};

const SQLITE: &str = "  type: sqlite\n  path: data/online.db";
const USERS: usize = 400;
const TIERS: [&str; 4] = ["gold", "silver", "bronze", "iron"];

fn user(i: usize) -> &'static str {
    Box::leak(format!("user_{i:04}").into_boxed_str())
}

/// The users' rows at `event_ts`: scores spread over [0, 1), shifted by `shift`; every 10th
/// score null; tiers cycling, or all `new_tier`.
fn rows(event_ts: i64, shift: f32, new_tier: Option<&'static str>) -> Vec<UserRow> {
    (0..USERS)
        .map(|i| {
            let mut row = UserRow::new(
                user(i),
                event_ts,
                (i * 37 % 100) as f32 / 100.0 + shift,
                (i % 9) as i64,
                new_tier.unwrap_or(TIERS[i % 4]),
            );
            if i % 10 == 0 {
                row.score = None;
            }
            row
        })
        .collect()
}

fn monitoring_yaml(profile: &str) -> String {
    format!(
        "{}monitoring:\n  sample_rate: 1.0\n  window: 1h\n  references:\n    - feature_view: user_stats\n      profile: {profile}\n",
        user_registry_yaml(SQLITE)
    )
}

/// A project with the users' rows an hour before T0 and a training set of them at T0, written by
/// `quiver historical` (which stores its profile in the file).
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        user_registry_yaml(SQLITE),
    )
    .unwrap();
    write_user_rows(
        &dir.path().join("data/user_stats/part-0.parquet"),
        &rows(T0 - HOUR, 0.0, None),
    );
    let entities: Vec<(&str, i64)> = (0..USERS).map(|i| (user(i), T0)).collect();
    write_user_entities(&dir.path().join("entities.parquet"), &entities);
    let out = Command::new(env!("CARGO_BIN_EXE_quiver-under-test"))
        .arg("-c")
        .arg(dir.path().join("feature_store.yaml"))
        .args([
            "historical",
            "--entities",
            "entities.parquet",
            "--features",
            "user_stats:score,user_stats:orders,user_stats:tier",
            "--output",
            "training.parquet",
        ])
        .current_dir(dir.path())
        .output()
        .expect("run quiver historical");
    assert!(
        out.status.success(),
        "quiver historical failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Materializes the view's source up to `end` into the online store.
async fn materialize(state: &AppState, end: i64) {
    let registry = state.registry();
    let request = quiver::offline::materialize::MaterializeRequest {
        start: Some(0),
        end,
        views: vec![],
        progress: false,
    };
    quiver::offline::materialize::materialize(&registry, &state.store(), state.clock(), &request)
        .await
        .expect("materialize");
}

/// Looks up every user's features, 100 entities per request.
async fn look_up_everyone(server: &TestServer) {
    for chunk in (0..USERS).collect::<Vec<_>>().chunks(100) {
        let ids: Vec<&str> = chunk.iter().map(|&i| user(i)).collect();
        let (status, body) = server
            .post(
                "/get-online-features",
                &json!({
                    "features": ["user_stats:score", "user_stats:orders", "user_stats:tier"],
                    "entities": {"user_id": ids}
                }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn monitoring(server: &TestServer) -> Json {
    let (status, body) = server.get("/monitoring").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn feature<'a>(report: &'a Json, name: &str) -> &'a Json {
    report["views"][0]["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == name)
        .unwrap_or_else(|| panic!("no feature {name} in {report}"))
}

async fn metric(server: &TestServer, name: &str, feature: &str) -> Option<f64> {
    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let samples = parse_samples(&text).unwrap();
    samples
        .get(&format!(
            "{name}{{feature=\"{feature}\",view=\"user_stats\"}}"
        ))
        .copied()
}

async fn start(dir: &Path, clock: Arc<ManualClock>) -> TestServer {
    let registry = load_registry(dir, &monitoring_yaml("training.parquet"));
    let store = registry.open_store(clock.clone()).await.unwrap();
    let state = AppState::try_new(registry, store, clock).expect("the references load");
    materialize(&state, T0).await;
    TestServer::start_with_state(state).await
}

#[tokio::test]
async fn served_values_like_the_training_data_score_ok_and_shifted_values_score_critical() {
    let dir = project();
    let clock = Arc::new(ManualClock::new(T0));
    let server = start(dir.path(), clock.clone()).await;

    // Before any lookup: the features are listed without data, and no score is published.
    let report = monitoring(&server).await;
    assert_eq!(report["window_seconds"], 3600);
    assert_eq!(report["sample_rate"], 1.0);
    assert_eq!(report["generated_at"], "2026-01-01T00:00:00Z");
    assert_eq!(report["views"][0]["view"], "user_stats");
    assert_eq!(report["views"][0]["reference"], "training.parquet");
    assert_eq!(feature(&report, "score")["status"], "insufficient_data");
    assert_eq!(feature(&report, "score")["psi"], Json::Null);
    assert_eq!(
        metric(&server, "quiver_feature_drift_samples", "score").await,
        Some(0.0)
    );
    assert_eq!(
        metric(&server, "quiver_feature_drift_psi", "score").await,
        None
    );

    // The served values are the training set's: no drift.
    look_up_everyone(&server).await;
    let report = monitoring(&server).await;
    for name in ["score", "orders", "tier"] {
        let f = feature(&report, name);
        assert_eq!(f["samples"], USERS, "{f}");
        assert_eq!(f["status"], "ok", "{f}");
        assert!(f["psi"].as_f64().unwrap() < 0.1, "{f}");
        assert!(f["js"].as_f64().unwrap() < 0.05, "{f}");
    }
    let score = feature(&report, "score");
    assert_eq!(score["dtype"], "float32");
    assert_eq!(score["null_rate_reference"], 0.1);
    assert_eq!(score["null_rate_serving"], 0.1);
    let bins = score["bins"].as_array().unwrap();
    assert_eq!(bins.last().unwrap()["label"], "null");
    for bin in bins {
        let (r, s) = (
            bin["reference"].as_f64().unwrap(),
            bin["serving"].as_f64().unwrap(),
        );
        assert!((r - s).abs() < 1e-12, "{bin}");
    }
    let tier_labels: Vec<&str> = feature(&report, "tier")["bins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["label"].as_str().unwrap())
        .collect();
    assert_eq!(tier_labels.len(), 6, "{tier_labels:?}");
    assert_eq!(&tier_labels[4..], ["other", "null"]);
    let psi = metric(&server, "quiver_feature_drift_psi", "score")
        .await
        .expect("a PSI series once there are enough samples");
    assert!(psi < 0.1, "{psi}");
    assert_eq!(
        metric(&server, "quiver_feature_drift_samples", "score").await,
        Some(USERS as f64)
    );
    assert_eq!(
        metric(&server, "quiver_feature_null_rate_delta", "score").await,
        Some(0.0)
    );

    // New data: scores 0.2 higher, a tier never seen in training. Two hours later the window
    // holds only lookups of the new data.
    write_user_rows(
        &dir.path().join("data/user_stats/part-1.parquet"),
        &rows(T0 + HOUR, 0.2, Some("platinum")),
    );
    clock.advance(2 * HOUR);
    materialize(&server.state, T0 + 2 * HOUR).await;
    look_up_everyone(&server).await;
    let report = monitoring(&server).await;
    for name in ["score", "tier"] {
        let f = feature(&report, name);
        assert_eq!(f["samples"], USERS, "{f}");
        assert_eq!(f["status"], "critical", "{f}");
        assert!(f["psi"].as_f64().unwrap() > 0.2, "{f}");
    }
    assert_eq!(feature(&report, "orders")["status"], "ok");
    let psi = metric(&server, "quiver_feature_drift_psi", "score")
        .await
        .unwrap();
    assert!(psi > 0.2, "{psi}");
    let js = metric(&server, "quiver_feature_drift_js", "tier")
        .await
        .unwrap();
    assert!(js > 0.15, "{js}");
    server.stop().await;
}

#[tokio::test]
async fn without_a_monitoring_section_there_are_no_views_and_no_drift_series() {
    let dir = project();
    let clock = Arc::new(ManualClock::new(T0));
    let registry = load_registry(dir.path(), &user_registry_yaml(SQLITE));
    let store = registry.open_store(clock.clone()).await.unwrap();
    let server = TestServer::start(registry, store, clock).await;
    let report = monitoring(&server).await;
    assert_eq!(report["views"], json!([]));
    let (_, text) = server.get("/metrics").await;
    assert!(!text.contains("quiver_feature_drift_"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn a_profile_that_does_not_match_the_view_is_an_error_naming_the_reference() {
    let dir = project();
    // The training set's profile, with the score declared as another type.
    let training =
        quiver::offline::profile::read_training_profile(&dir.path().join("training.parquet"))
            .unwrap();
    let mut wrong = training.clone();
    wrong.features[0].dtype = "float64".into();
    std::fs::write(dir.path().join("wrong.json"), wrong.to_json()).unwrap();
    let mut unknown = training;
    unknown.features[2].feature = "user_stats:tiers".into();
    std::fs::write(dir.path().join("unknown.json"), unknown.to_json()).unwrap();
    std::fs::write(dir.path().join("garbage.json"), "{").unwrap();

    for (file, expected) in [
        (
            "wrong.json",
            "monitoring.references[0]: profile wrong.json (feature view \"user_stats\"): feature \"user_stats:score\" is float64 in the profile but float32 in view \"user_stats\"",
        ),
        (
            "unknown.json",
            "monitoring.references[0]: profile unknown.json (feature view \"user_stats\"): feature \"user_stats:tiers\" is not in the schema of view \"user_stats\"",
        ),
        (
            "garbage.json",
            "monitoring.references[0].profile: garbage.json (feature view \"user_stats\"):",
        ),
    ] {
        let registry = load_registry(dir.path(), &monitoring_yaml(file));
        let errors = quiver::serving::load_monitor(&registry)
            .err()
            .unwrap_or_else(|| panic!("{file} was accepted"))
            .to_string();
        assert!(errors.contains(expected), "{file}: {errors}");
    }

    // The binary refuses to serve it, and `quiver validate` reports it.
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        monitoring_yaml("wrong.json"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quiver-under-test"))
        .arg("-c")
        .arg(dir.path().join("feature_store.yaml"))
        .arg("validate")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("monitoring.references[0]: profile wrong.json"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_the_drift_alert_once_served_values_shift_and_not_before() {
    use quiver_tests::prometheus_server::{PrometheusServer, rules_with_short_for};
    use std::time::{Duration, Instant};

    let dir = project();
    let clock = Arc::new(ManualClock::new(T0));
    let server = start(dir.path(), clock.clone()).await;
    // 1,200 values of the training distribution: past the rules' PSI guard of 1,000 samples.
    for _ in 0..3 {
        look_up_everyone(&server).await;
    }
    let prometheus = PrometheusServer::start(server.addr, &rules_with_short_for());
    let bound = Duration::from_secs(90);

    // Scraped, with scores in Prometheus, and several evaluations: no drift alert.
    let deadline = Instant::now() + bound;
    while prometheus.query("quiver_feature_drift_psi").await.is_none() {
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw a drift score"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    for alert in ["QuiverFeatureDriftWarning", "QuiverFeatureDriftCritical"] {
        assert_eq!(prometheus.state_of(alert).await, "inactive", "{alert}");
    }

    // The served data shifts (scores +0.2, a new tier): the critical drift alert fires for it.
    write_user_rows(
        &dir.path().join("data/user_stats/part-1.parquet"),
        &rows(T0 + HOUR, 0.2, Some("platinum")),
    );
    clock.advance(2 * HOUR);
    materialize(&server.state, T0 + 2 * HOUR).await;
    for _ in 0..3 {
        look_up_everyone(&server).await;
    }
    let deadline = Instant::now() + bound;
    let fired = loop {
        let firing = prometheus.firing_alerts().await;
        let critical: Vec<String> = firing
            .iter()
            .filter(|(name, _)| name == "QuiverFeatureDriftCritical")
            .map(|(_, labels)| labels["feature"].as_str().unwrap_or_default().to_owned())
            .collect();
        if critical.iter().any(|f| f == "score") && critical.iter().any(|f| f == "tier") {
            break critical;
        }
        assert!(
            Instant::now() < deadline,
            "the drift alert did not fire: {firing:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(!fired.iter().any(|f| f == "orders"), "{fired:?}");

    // The monitoring page draws the same verdict from this server's own /monitoring.
    let url = server.url("/ui");
    let dom = tokio::task::spawn_blocking(move || quiver_tests::browser::rendered(&url))
        .await
        .unwrap();
    let card = dom
        .split("data-feature=\"user_stats:score\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no drift card for score:\n{dom}"));
    let card = card.split("</svg>").next().unwrap();
    assert!(card.contains("badge critical"), "{card}");
    assert!(card.contains("<svg"), "{card}");
    server.stop().await;
}
