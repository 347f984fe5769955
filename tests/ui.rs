//! `GET /ui`, the monitoring page, rendered by a real headless Chromium against a real server:
//! its script reads `/metrics` (and `/monitoring`) and the rendered page shows every view with
//! numbers; it degrades when `/monitoring` is missing or empty; and with `server.protect_reads`
//! it is reachable without the token and reads the data with the token from the URL fragment.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use quiver::clock::{ManualClock, SharedClock};
use quiver::serving::AppState;
use quiver_tests::browser::{rendered, run_chromium};
use quiver_tests::fixtures::{T0, load_registry, quickstart_registry_yaml, user_registry_yaml};
use quiver_tests::server::{TestServer, serve_materialized};
use serde_json::json;
use tempfile::TempDir;

/// The text of the table cell of class `class` in the row of `view`.
fn cell(dom: &str, view: &str, class: &str) -> String {
    let row = dom
        .split(&format!("data-view=\"{view}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no row for view {view}:\n{dom}"));
    let after = row
        .split(&format!("class=\"num {class}\">"))
        .nth(1)
        .unwrap_or_else(|| panic!("no {class} cell for {view}:\n{dom}"));
    after.split('<').next().unwrap_or_default().to_string()
}

/// The quickstart views materialized at T0 and served, after lookups (some of unknown users) and
/// a push 90 s old, so coverage, ages and write lag have values.
async fn quickstart_with_traffic() -> (TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    quickstart::generate(&dir.path().join("examples/quickstart/data"), 50, T0, 7).unwrap();
    let registry = load_registry(dir.path(), quickstart_registry_yaml());
    let clock: SharedClock = Arc::new(ManualClock::new(T0));
    let (_, server) = serve_materialized(registry, clock, T0).await;
    let users: Vec<String> = (1..=40)
        .map(quickstart::user_id)
        .chain(["nobody".into(), "no_one".into()])
        .collect();
    let (status, body) = server
        .post(
            "/get-online-features",
            &json!({"features": ["user_features:fraud_score", "user_sessions:sessions_24h"],
                    "entities": {"user_id": users}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let pushed_at = chrono::DateTime::from_timestamp_micros(T0 - 90_000_000)
        .unwrap()
        .to_rfc3339();
    let (status, body) = server
        .post(
            "/push",
            &json!({"push_source_name": "user_features_push", "to": "online",
                    "df": {"user_id": ["user_0001"], "event_timestamp": [pushed_at],
                           "avg_order_value_7d": [80.5], "total_orders_30d": [4],
                           "preferred_category": ["books"], "account_age_days": [400],
                           "fraud_score": [0.02]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (dir, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_every_view_with_coverage_and_age_once_its_script_ran() {
    let (_dir, server) = quickstart_with_traffic().await;
    let (status, page) = server.get("/ui").await;
    assert_eq!(status, 200);
    assert!(page.contains("<script>"), "{page}");
    let url = server.url("/ui");

    let dom = tokio::task::spawn_blocking(move || rendered(&url))
        .await
        .unwrap();
    assert!(dom.contains("project quickstart"), "{dom}");
    for view in ["user_features", "user_sessions"] {
        let coverage = cell(&dom, view, "coverage");
        assert!(coverage.ends_with(" %"), "{view} coverage {coverage:?}");
        let age = cell(&dom, view, "age");
        assert!(age != "—" && !age.is_empty(), "{view} age {age:?}");
    }
    // 42 users asked, 2 unknown: 40 of 42 present (every quickstart user has rows here).
    let coverage = cell(&dom, "user_sessions", "coverage");
    assert_eq!(coverage, "95.2 %", "{dom}");
    // Drift: this server has no /monitoring (404), and the page says so instead of failing.
    assert!(
        dom.contains("Drift monitoring is not available on this server"),
        "{dom}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_protect_reads_the_page_is_open_and_reads_with_the_token_from_the_fragment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/user_stats")).unwrap();
    let yaml = user_registry_yaml("  type: sqlite\n  path: online.db")
        .replace("server:\n", "server:\n  protect_reads: true\n");
    let registry = load_registry(dir.path(), &yaml);
    let clock: SharedClock = Arc::new(ManualClock::new(T0));
    let store = quiver::store::open(
        &registry.online_store,
        "test",
        &registry.store_catalog(),
        clock.clone(),
    )
    .await
    .unwrap();
    let state = AppState::with_write_token(registry, store, clock, Some("s3cret".into()));
    let server = TestServer::start_with_state(state).await;
    assert_eq!(server.get("/ui").await.0, 200, "the page needs no token");
    assert_eq!(server.get("/metrics").await.0, 401, "the data does");

    let (with_token, without) = (server.url("/ui#token=s3cret"), server.url("/ui"));
    let (dom, locked) =
        tokio::task::spawn_blocking(move || (rendered(&with_token), rendered(&without)))
            .await
            .unwrap();
    assert!(dom.contains("data-view=\"user_stats\""), "{dom}");
    assert!(
        dom.contains("<section id=\"auth\" hidden"),
        "no token prompt with a token:\n{dom}"
    );
    assert!(!locked.contains("data-view=\"user_stats\""), "{locked}");
    assert!(locked.contains("/metrics answered 401"), "{locked}");
    assert!(
        locked.contains("<section id=\"auth\">"),
        "the token prompt shows without a token:\n{locked}"
    );
}

/// The `/monitoring` answer of the drift monitor, as documented for it.
fn monitoring_report() -> serde_json::Value {
    let bins = |shift: f64| {
        json!([
            {"label": "< 0.05", "reference": 0.0, "serving": 0.001},
            {"label": "[0.05, 0.1)", "reference": 0.3, "serving": 0.3 - shift},
            {"label": "[0.1, 0.5)", "reference": 0.5, "serving": 0.5 + shift},
            {"label": "≥ 0.5", "reference": 0.19, "serving": 0.179},
            {"label": "null", "reference": 0.01, "serving": 0.02}
        ])
    };
    json!({"window_seconds": 3600, "sample_rate": 0.1, "generated_at": "2026-01-01T00:00:00Z",
        "views": [{"view": "user_features", "reference": "data/training.parquet",
            "features": [
                {"feature": "fraud_score", "dtype": "float32", "samples": 1234, "psi": 0.03,
                 "js": 0.02, "null_rate_reference": 0.01, "null_rate_serving": 0.02,
                 "status": "ok", "bins": bins(0.02)},
                {"feature": "avg_order_value_7d", "dtype": "float32", "samples": 1234,
                 "psi": 0.27, "js": 0.16, "null_rate_reference": 0.01,
                 "null_rate_serving": 0.02, "status": "critical", "bins": bins(0.2)}]}]})
}

/// A front for `quiver` that answers `/monitoring` with `report` and passes every other GET
/// through: `/monitoring` as the drift monitor serves it, in front of a server without one.
fn front_with_monitoring(quiver: SocketAddr, report: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let head = String::from_utf8_lossy(&request[..n]).into_owned();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let response = if path == "/monitoring" {
                format!(
                    "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{report}",
                    report.len()
                )
                .into_bytes()
            } else {
                let mut upstream = std::net::TcpStream::connect(quiver).unwrap();
                write!(upstream, "GET {path} HTTP/1.0\r\nHost: {quiver}\r\n\r\n").unwrap();
                let mut answer = Vec::new();
                upstream.read_to_end(&mut answer).unwrap();
                answer
            };
            let _ = stream.write_all(&response);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_draws_drift_scores_and_histograms_and_says_when_none_are_configured() {
    let (_dir, server) = quickstart_with_traffic().await;
    let front = front_with_monitoring(server.addr, monitoring_report().to_string());
    let empty = front_with_monitoring(
        server.addr,
        json!({"window_seconds": 3600, "sample_rate": 0.1,
               "generated_at": "2026-01-01T00:00:00Z", "views": []})
        .to_string(),
    );
    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui/monitoring-ui.png");
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let shot = screenshot.clone();
    let (dom, none) = tokio::task::spawn_blocking(move || {
        run_chromium(
            &format!("http://{front}/ui"),
            &[&format!("--screenshot={}", shot.display())],
        );
        (
            rendered(&format!("http://{front}/ui")),
            rendered(&format!("http://{empty}/ui")),
        )
    })
    .await
    .unwrap();

    for feature in ["fraud_score", "avg_order_value_7d"] {
        let card = dom
            .split(&format!("data-feature=\"user_features:{feature}\""))
            .nth(1)
            .unwrap_or_else(|| panic!("no card for {feature}:\n{dom}"));
        let card = card.split("</svg>").next().unwrap();
        assert!(
            card.contains("<svg"),
            "{feature} has its histograms:\n{card}"
        );
        // Five bins, each a reference and a serving bar.
        assert_eq!(card.matches("<rect").count(), 10, "{card}");
    }
    assert!(dom.contains("<b class=\"psi\">0.270</b>"), "{dom}");
    assert!(dom.contains("<b class=\"js\">0.160</b>"), "{dom}");
    assert!(dom.contains("badge critical"), "{dom}");
    assert!(
        dom.contains("data-view=\"user_features\""),
        "the views table stays: {dom}"
    );
    assert!(
        none.contains("No drift monitoring is configured on this server."),
        "{none}"
    );

    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    // `QUIVER_UPDATE_SCREENSHOTS=1` refreshes the copy the documentation shows.
    if std::env::var_os("QUIVER_UPDATE_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/images/monitoring-ui.png");
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::write(docs, png).unwrap();
    }
}
