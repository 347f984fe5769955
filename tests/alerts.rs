//! The alert rules of `deploy/prometheus/quiver-alerts.yml` checked by Prometheus itself:
//! `promtool check rules` accepts them, their unit tests (`quiver-alerts.test.yml`) pass, and a
//! real Prometheus scraping a real `quiver serve` fires the online-store alert when the Redis
//! behind it stops, while an unrelated alert stays inactive.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use quiver_tests::fixtures::user_registry_yaml;
use quiver_tests::process::QuiverProcess;
use quiver_tests::prometheus_server::{
    PrometheusServer, get_json, rules_dir, rules_with_short_for, tool,
};
use quiver_tests::redis::RedisServer;
use serde_json::json;

/// How long the end-to-end test waits for Prometheus to see something.
const ALERT_BOUND: Duration = Duration::from_secs(90);

/// Runs promtool in the rules directory; fails the test with its output when it fails.
fn promtool(args: &[&str]) -> String {
    let output = Command::new(tool("promtool"))
        .args(args)
        .current_dir(rules_dir())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let out = promtool(&["check", "rules", "quiver-alerts.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_unit_tests_of_the_alert_rules_pass_in_promtool() {
    let out = promtool(&["test", "rules", "quiver-alerts.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_of_the_rules_file_has_a_unit_test() {
    let rules = std::fs::read_to_string(rules_dir().join("quiver-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(rules_dir().join("quiver-alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 9, "{alerts:?}");
    for alert in alerts {
        let firing = tests
            .split("alertname: ")
            .skip(1)
            .filter(|case| case.starts_with(&format!("{alert}\n")))
            .map(|case| !case.contains("exp_alerts: []"))
            .collect::<Vec<_>>();
        assert!(
            firing.contains(&true) && firing.contains(&false),
            "{alert} needs a case where it fires and one where it does not"
        );
    }
}

/// One lookup of `user`; its status.
async fn lookup(quiver: &QuiverProcess, user: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/get-online-features", quiver.base_url()))
        .json(&json!({"features": ["user_stats:score"], "entities": {"user_id": [user]}}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("lookup answered")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_the_online_store_alert_when_redis_stops_and_nothing_else() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/user_stats")).unwrap();
    let yaml = user_registry_yaml(&format!(
        "  type: redis\n  connection_string: \"127.0.0.1:{}\"\n  command_timeout: 300ms\n  connect_timeout: 300ms",
        redis.port()
    ));
    let config = dir.path().join("feature_store.yaml");
    std::fs::write(&config, yaml).unwrap();
    let quiver = QuiverProcess::serve(Path::new(env!("CARGO_BIN_EXE_quiver-under-test")), &config);
    let written = reqwest::Client::new()
        .post(format!("{}/write-to-online-store", quiver.base_url()))
        .json(&json!({"feature_view_name": "user_stats",
            "df": {"user_id": ["alice"], "event_timestamp": [chrono::Utc::now().to_rfc3339()],
                   "score": [0.5], "orders": [3], "tier": ["gold"]}}))
        .send()
        .await
        .expect("write answered");
    assert_eq!(written.status(), 200, "{}", written.text().await.unwrap());
    let prometheus = PrometheusServer::start(quiver.addr(), &rules_with_short_for());

    // Healthy: Prometheus scrapes Quiver (up == 1) and lookups of a stored user succeed; no
    // alert fires (lookups of unknown users would rightly fire QuiverCoverageDrop).
    let up_query = format!("{}/api/v1/query?query=up", prometheus.base_url());
    let deadline = Instant::now() + ALERT_BOUND;
    loop {
        assert_eq!(lookup(&quiver, "alice").await, 200, "lookup with Redis up");
        let up = get_json(&up_query).await;
        if up["data"]["result"][0]["value"][1] == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped Quiver: {up}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few more scrapes and evaluations with the store healthy.
    for _ in 0..12 {
        assert_eq!(lookup(&quiver, "alice").await, 200);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        prometheus.state_of("QuiverOnlineStoreErrors").await,
        "inactive"
    );
    assert_eq!(
        prometheus.firing_alerts().await,
        vec![],
        "nothing fires while healthy"
    );

    // The store goes away: lookups of users nobody asked for before (so no cache answers them)
    // fail, and the alert fires.
    redis.stop();
    let mut n = 0;
    let fired = loop {
        n += 1;
        assert_ne!(
            lookup(&quiver, &format!("user_{n}")).await,
            200,
            "lookup with Redis stopped"
        );
        let firing = prometheus.firing_alerts().await;
        if let Some((_, labels)) = firing
            .iter()
            .find(|(name, _)| name == "QuiverOnlineStoreErrors")
        {
            break labels.clone();
        }
        assert!(
            Instant::now() < deadline,
            "QuiverOnlineStoreErrors did not fire within {ALERT_BOUND:?}; rules: {:?}",
            prometheus.rule_states().await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(fired["severity"], "critical", "{fired}");
    assert_eq!(fired["store"], "redis", "{fired}");
    assert_eq!(fired["operation"], "read", "{fired}");

    // Quiver itself is still up, and nothing about transforms happened.
    assert_eq!(prometheus.state_of("QuiverDown").await, "inactive");
    assert_eq!(
        prometheus.state_of("QuiverTransformFailures").await,
        "inactive"
    );
    let others: Vec<String> = prometheus
        .firing_alerts()
        .await
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name != "QuiverOnlineStoreErrors")
        .collect();
    assert!(others.is_empty(), "unrelated alerts fire: {others:?}");
}
