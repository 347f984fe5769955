//! Bearer-token authentication as its own middleware: which routes it guards, how it reads the
//! header, and that what it rejects is counted.

use std::sync::Arc;

use quiver::clock::{ManualClock, SharedClock};
use quiver::serving::AppState;
use quiver_tests::fixtures::{T0, load_registry, user_registry_yaml};
use quiver_tests::prometheus_text;
use quiver_tests::server::TestServer;
use tempfile::TempDir;

async fn setup(protect_reads: bool) -> (TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/user_stats")).unwrap();
    let yaml = user_registry_yaml("  type: sqlite\n  path: online.db").replace(
        "server:\n",
        &format!("server:\n  protect_reads: {protect_reads}\n"),
    );
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
    (dir, TestServer::start_with_state(state).await)
}

async fn get_metrics(server: &TestServer, authorization: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new().get(server.url("/metrics"));
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_bearer_scheme_is_accepted_in_any_case() {
    let (_dir, server) = setup(true).await;
    assert_eq!(get_metrics(&server, Some("bearer s3cret")).await, 200);
    assert_eq!(get_metrics(&server, Some("BEARER s3cret")).await, 200);
    assert_eq!(get_metrics(&server, Some("Bearer wrong")).await, 401);
    assert_eq!(get_metrics(&server, None).await, 401);
}

#[tokio::test]
async fn reads_stay_open_unless_protect_reads_is_set() {
    let (_dir, server) = setup(false).await;
    assert_eq!(get_metrics(&server, None).await, 200);
    let push = reqwest::Client::new()
        .post(server.url("/write-to-online-store"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(push.status().as_u16(), 401);
}

#[tokio::test]
async fn rejected_requests_are_counted_by_route_and_status() {
    let (_dir, server) = setup(false).await;
    for _ in 0..3 {
        let push = reqwest::Client::new()
            .post(server.url("/push"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(push.status().as_u16(), 401);
    }
    let (_, text) = server.get("/metrics").await;
    let samples = prometheus_text::parse_samples(&text).expect("valid exposition format");
    let rejected = samples
        .iter()
        .find(|(series, _)| {
            series.starts_with("quiver_http_requests_total{")
                && series.contains(r#"endpoint="/push""#)
                && series.contains(r#"status="401""#)
        })
        .map(|(_, value)| *value);
    assert_eq!(rejected, Some(3.0), "{text}");
}

#[tokio::test]
async fn the_served_registry_follows_the_read_rules() {
    let get = |server: &TestServer, authorization: Option<&'static str>| {
        let mut request = reqwest::Client::new().get(server.url("/registry"));
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let (_open_dir, open) = setup(false).await;
    assert_eq!(get(&open, None).await, 200);
    let (_protected_dir, protected) = setup(true).await;
    assert_eq!(get(&protected, None).await, 401);
    assert_eq!(get(&protected, Some("Bearer s3cret")).await, 200);
}
