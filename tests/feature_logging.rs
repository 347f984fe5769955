//! Feature logging and `quiver skew` on the quickstart data: served rows are logged, replayed by
//! the point-in-time join at their request time and found equal, feature by feature, on the
//! embedded store and on Redis; then skew is injected three ways (a source row rewritten
//! offline, a transform module replaced, a value pushed online only) and each is found in the
//! right feature. Servers run on a manual clock standing at each request time.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float32Array, RecordBatch};
use arrow::datatypes::Float32Type;
use quiver::clock::{ManualClock, SharedClock};
use quiver::offline::feature_log::skew::{SkewReport, SkewRequest, skew};
use quiver::offline::feature_log::training::{FromLogRequest, training_set_from_log};
use quiver::offline::historical::HistoricalOptions;
use quiver::offline::materialize::{MaterializeRequest, materialize};
use quiver::registry::Registry;
use quiver_tests::fixtures::{HOUR, load_registry, quickstart_registry_yaml, write_batch};
use quiver_tests::prometheus_text::parse_samples;
use quiver_tests::redis::RedisServer;
use quiver_tests::server::{TestServer, column};
use quiver_tests::training::read_parquet;
use quiver_tests::wasm::{install_module, rows_module_failing_on, transform_wasm};
use serde_json::{Value as Json, json};

/// 2030-01-01T00:00:00Z, as in the parity test.
const ANCHOR: i64 = 1_893_456_000_000_000;
const SEED: u64 = 11;
const USERS: usize = 40;

/// The quickstart registry over `data/`, with `online_store` replaced and both feature services
/// logging to `logs/` with `logging` (the YAML flow mapping's body).
fn registry_yaml(online_store: &str, logging: &str) -> String {
    let mut out = String::new();
    let mut in_store = false;
    for line in quickstart_registry_yaml().lines() {
        if line.starts_with("online_store:") {
            in_store = true;
            out.push_str("online_store:\n");
            out.push_str(online_store);
            out.push('\n');
            continue;
        }
        if in_store && (line.starts_with("  ") || line.is_empty()) {
            continue;
        }
        in_store = false;
        out.push_str(&line.replace("examples/quickstart/data/", "data/"));
        out.push('\n');
        if line.starts_with("  - name: fraud_model_v") {
            out.push_str(&format!("    logging: {{ {logging} }}\n"));
        }
    }
    out
}

fn sqlite() -> &'static str {
    "  type: sqlite\n  path: data/online_store.db"
}

/// The request field `amount` of entity row `r`.
fn amount(r: usize) -> f64 {
    ((r * 7919) % 50_000) as f64 / 100.0 + 0.01
}

/// Times spread over the data's week, near the end and past it (everything expired).
fn times() -> Vec<i64> {
    vec![
        ANCHOR - 2 * 24 * HOUR + 5 * HOUR,
        ANCHOR - 13 * HOUR,
        ANCHOR - 1,
        ANCHOR + 25 * HOUR,
    ]
}

struct Project {
    dir: tempfile::TempDir,
    registry: Arc<Registry>,
    users: Vec<String>,
}

impl Project {
    fn new(online_store: &str, logging: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        quickstart::generate(&dir.path().join("data"), USERS, ANCHOR, SEED).unwrap();
        for module in ["user_risk", "order_stats"] {
            install_module(
                &dir.path().join("transforms/wasm"),
                module,
                &transform_wasm(module),
            );
        }
        let registry = load_registry(dir.path(), &registry_yaml(online_store, logging));
        let mut users: Vec<String> = (1..=USERS).map(quickstart::user_id).collect();
        users.push("nobody".into());
        Project {
            dir,
            registry,
            users,
        }
    }

    fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// A server standing at `t` over a store materialized up to `t` (a namespace of its own).
    async fn server_at(&self, t: i64, namespace: &str) -> TestServer {
        let clock = Arc::new(ManualClock::new(t));
        let shared: SharedClock = clock.clone();
        let store = quiver::store::open(
            &self.registry.online_store,
            namespace,
            &self.registry.store_catalog(),
            shared.clone(),
        )
        .await
        .unwrap();
        let request = MaterializeRequest {
            start: Some(i64::MIN),
            end: t,
            views: vec![],
            progress: false,
        };
        materialize(&self.registry, &store, &shared, &request)
            .await
            .unwrap();
        TestServer::start(Arc::clone(&self.registry), store, shared).await
    }

    /// Looks up every user through `service`; returns the request id header and the body.
    async fn lookup(&self, server: &TestServer, service: &str) -> (Option<String>, Json) {
        let body = json!({
            "feature_service": service,
            "entities": {
                "user_id": self.users,
                "amount": (0..self.users.len()).map(amount).collect::<Vec<_>>(),
            },
            "full_feature_names": true,
        });
        let response = reqwest::Client::new()
            .post(server.url("/get-online-features"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let id = response
            .headers()
            .get(quiver::serving::REQUEST_ID_HEADER)
            .map(|v| v.to_str().unwrap().to_string());
        (id, response.json().await.unwrap())
    }

    /// Serves both feature services at every time of [`times`], logging every row.
    async fn serve_and_log(&self, prefix: &str) -> Vec<String> {
        let mut ids = Vec::new();
        for (i, &t) in times().iter().enumerate() {
            let server = self.server_at(t, &format!("{prefix}{i}")).await;
            for service in ["fraud_model_v1", "fraud_model_v2"] {
                let (id, _) = self.lookup(&server, service).await;
                ids.push(id.expect("a logged service's lookup carries a request id"));
            }
            // Stopping the server writes what its log holds.
            server.stop().await;
        }
        ids
    }

    async fn skew(&self, module_dirs: Vec<PathBuf>) -> SkewReport {
        let registry = Arc::clone(&self.registry);
        let request = SkewRequest {
            log_dir: self.logs(),
            since: None,
            until: None,
            module_dirs,
            examples: 3,
        };
        let report = tokio::task::spawn_blocking(move || {
            skew(
                &registry,
                &request,
                &HistoricalOptions {
                    transform_batch_rows: 256,
                    ..HistoricalOptions::default()
                },
            )
        })
        .await
        .unwrap()
        .unwrap();
        // Shown with --nocapture: the report as `quiver skew` prints it.
        eprintln!("{}", report.render());
        report
    }
}

/// Features with at least one mismatch, as `view:feature`.
fn skewed(report: &SkewReport) -> BTreeSet<String> {
    report
        .services
        .iter()
        .flat_map(|s| &s.features)
        .filter(|f| f.mismatches > 0)
        .map(|f| f.feature.clone())
        .collect()
}

fn assert_all_match(report: &SkewReport) {
    let rows_per_service = (times().len() * (USERS + 1)) as u64;
    assert_eq!(report.services.len(), 2, "{}", report.render());
    for s in &report.services {
        assert_eq!(s.rows, rows_per_service, "{}", report.render());
        assert!(s.modules.iter().all(|m| m.available), "{}", report.render());
        for f in &s.features {
            assert_eq!(f.rows, rows_per_service);
            assert_eq!(f.exact_match_rate, 1.0, "{}", report.render());
            assert_eq!(f.mismatches, 0);
        }
    }
    // The comparison covered values and their absence.
    let features = report.services.iter().flat_map(|s| &s.features);
    assert!(
        features.clone().all(|f| f.compared > 0),
        "{}",
        report.render()
    );
    assert!(
        features.clone().any(|f| f.compared < f.rows),
        "{}",
        report.render()
    );
    assert!(report.render().contains("100% match on every feature"));
}

async fn served_rows_match_their_replay(online_store: &str) {
    let p = Project::new(online_store, "destination: logs, sample_rate: 1.0");
    let ids = p.serve_and_log("log").await;
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        ids.len(),
        "request ids are unique"
    );
    let report = p.skew(vec![]).await;
    assert_all_match(&report);

    // The log is hive-partitioned by service and date, and holds no temporary file.
    let service_dir = p.logs().join("feature_service=fraud_model_v2");
    let days: Vec<String> = std::fs::read_dir(&service_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(days.iter().all(|d| d.starts_with("date=20")), "{days:?}");
    for day in days {
        for file in std::fs::read_dir(service_dir.join(day)).unwrap() {
            let name = file.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                name.starts_with("part-") && name.ends_with(".parquet"),
                "{name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_rows_replayed_at_their_request_time_match_on_every_feature_on_the_embedded_store() {
    served_rows_match_their_replay(sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_rows_replayed_at_their_request_time_match_on_every_feature_on_redis() {
    let redis = RedisServer::start();
    served_rows_match_their_replay(&format!(
        "  type: redis\n  connection_string: \"{}\"",
        redis.url()
    ))
    .await;
}

/// Rewrites `fraud_score` of every source row of `user` (to `score`).
fn rewrite_fraud_score(dir: &Path, user: &str, score: f32) -> usize {
    let mut rewritten = 0;
    // The quickstart writes `user_features` by day: `date=YYYY-MM-DD/snapshots.parquet`.
    let mut files = Vec::new();
    let mut dirs = vec![dir.join("data/user_features")];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                files.push(path);
            }
        }
    }
    for path in files {
        let batch = read_parquet(&path);
        let users = batch.column_by_name("user_id").unwrap().as_string::<i32>();
        let scores = batch
            .column_by_name("fraud_score")
            .unwrap()
            .as_primitive::<Float32Type>();
        let new: Float32Array = (0..batch.num_rows())
            .map(|r| {
                if users.value(r) == user {
                    rewritten += 1;
                    Some(score)
                } else {
                    (!scores.is_null(r)).then(|| scores.value(r))
                }
            })
            .collect();
        let i = batch.schema().index_of("fraud_score").unwrap();
        let mut columns = batch.columns().to_vec();
        columns[i] = Arc::new(new);
        write_batch(
            &path,
            RecordBatch::try_new(batch.schema(), columns).unwrap(),
        );
    }
    rewritten
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_row_rewritten_offline_after_it_was_served_is_skew_in_that_feature_only() {
    let p = Project::new(sqlite(), "destination: logs, sample_rate: 1.0");
    p.serve_and_log("a").await;
    let user = quickstart::user_id(3);
    assert!(rewrite_fraud_score(p.dir.path(), &user, 0.123) > 0);
    let report = p.skew(vec![]).await;
    // fraud_score itself, and the risk score computed from it; nothing else.
    assert_eq!(
        skewed(&report),
        BTreeSet::from([
            "user_features:fraud_score".to_string(),
            "user_risk:risk_score".to_string(),
        ]),
        "{}",
        report.render()
    );
    for f in report.services.iter().flat_map(|s| &s.features) {
        for e in &f.examples {
            assert_eq!(e.entity["user_id"], json!(user), "{}", report.render());
        }
        if f.feature == "user_features:fraud_score" {
            assert!(f.value_mismatches > 0);
            assert_eq!(f.examples[0].replayed, json!(0.123));
            assert!(f.mean_abs_diff.unwrap() > 0.0);
        }
    }
}

/// A `user_risk` stand-in that computes something else: `risk_score` 1.0 and nulls for every
/// row.
fn different_user_risk() -> Vec<u8> {
    let mut row = vec![0x83];
    for (key, value) in [
        ("order_value_per_order", &[0xc0][..]),
        ("amount_over_avg", &[0xc0][..]),
        ("risk_score", &[0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0][..]),
    ] {
        row.push(0xa0 | key.len() as u8);
        row.extend_from_slice(key.as_bytes());
        row.extend_from_slice(value);
    }
    // The marker never occurs in an input: no row fails.
    rows_module_failing_on(b"\xff\xfe\xfd\xfc\xfb", false, &row, "unreachable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_module_replaced_by_one_that_computes_differently_is_skew_in_its_features() {
    let p = Project::new(sqlite(), "destination: logs, sample_rate: 1.0");
    p.serve_and_log("b").await;
    // The module that served is kept elsewhere; the transforms directory gets another version.
    let archive = p.dir.path().join("module-archive");
    install_module(&archive, "user_risk-v1", &transform_wasm("user_risk"));
    install_module(
        &p.dir.path().join("transforms/wasm"),
        "user_risk",
        &different_user_risk(),
    );
    let report = p.skew(vec![]).await;
    assert_eq!(
        skewed(&report),
        BTreeSet::from([
            "user_risk:amount_over_avg".to_string(),
            "user_risk:order_value_per_order".to_string(),
            "user_risk:risk_score".to_string(),
        ]),
        "{}",
        report.render()
    );
    let v2 = report
        .services
        .iter()
        .find(|s| s.feature_service == "fraud_model_v2")
        .unwrap();
    let replay = v2
        .modules
        .iter()
        .find(|m| m.transform == "user_risk")
        .unwrap();
    assert!(!replay.available);
    assert_eq!(
        replay.logged_sha256.as_deref(),
        Some(quiver_tests::wasm::sha256_hex(&transform_wasm("user_risk")).as_str())
    );
    assert!(report.render().contains("not available"));

    // With the logged version at hand, the replay runs it and everything matches again.
    let report = p.skew(vec![archive]).await;
    assert_all_match(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_pushed_only_online_is_skew_in_the_pushed_feature() {
    let p = Project::new(sqlite(), "destination: logs, sample_rate: 1.0");
    let t = ANCHOR - 13 * HOUR;
    let server = p.server_at(t, "c").await;
    let user = quickstart::user_id(5);
    // The user's current row, pushed again a second later with another fraud score.
    let (status, current) = server
        .post(
            "/get-online-features",
            &json!({"features": ["user_features"], "entities": {"user_id": [user]}}),
        )
        .await;
    assert_eq!(status, 200, "{current}");
    let value = |name: &str| column(&current, name).0[0].clone();
    assert_eq!(column(&current, "fraud_score").1[0], "PRESENT");
    let pushed_ts = quiver::serving::json::format_timestamp(t - 1_000_000);
    let (status, body) = server
        .post(
            "/push",
            &json!({
                "push_source_name": "user_features_push",
                "to": "online",
                "df": {
                    "user_id": [user],
                    "event_timestamp": [pushed_ts],
                    "created": [pushed_ts],
                    "avg_order_value_7d": [value("avg_order_value_7d")],
                    "total_orders_30d": [value("total_orders_30d")],
                    "preferred_category": [value("preferred_category")],
                    "account_age_days": [value("account_age_days")],
                    "fraud_score": [0.987],
                },
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for service in ["fraud_model_v1", "fraud_model_v2"] {
        let (_, body) = p.lookup(&server, service).await;
        assert!(
            column(&body, "user_features__fraud_score")
                .0
                .contains(&json!(0.987))
        );
    }
    server.stop().await;
    let report = p.skew(vec![]).await;
    assert_eq!(
        skewed(&report),
        BTreeSet::from([
            "user_features:fraud_score".to_string(),
            "user_risk:risk_score".to_string(),
        ]),
        "{}",
        report.render()
    );
    let v1 = &report.services[0];
    let fraud = v1
        .features
        .iter()
        .find(|f| f.feature == "user_features:fraud_score")
        .unwrap();
    assert_eq!(fraud.value_mismatches, 1, "{}", report.render());
    assert_eq!(fraud.examples[0].served, json!(0.987));
    assert_eq!(fraud.examples[0].entity["user_id"], json!(user));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_by_entity_key_logs_the_same_entities_in_every_lookup() {
    let p = Project::new(sqlite(), "destination: logs, sample_rate: 0.3");
    let server = p.server_at(ANCHOR - 1, "sampling").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(p.lookup(&server, "fraud_model_v1").await.0.unwrap());
    }
    server.stop().await;
    let logs = quiver::offline::feature_log::read::read_logs(&p.logs(), None, None).unwrap();
    let batch = &logs[0].batch;
    let request_ids = batch
        .column_by_name("request_id")
        .unwrap()
        .as_string::<i32>();
    let users = batch.column_by_name("user_id").unwrap().as_string::<i32>();
    let mut by_request: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for r in 0..batch.num_rows() {
        by_request
            .entry(request_ids.value(r))
            .or_default()
            .insert(users.value(r));
    }
    assert_eq!(by_request.len(), 3);
    let first = &by_request[ids[0].as_str()];
    assert!(
        !first.is_empty() && first.len() < p.users.len(),
        "{first:?}"
    );
    for id in &ids {
        assert_eq!(&by_request[id.as_str()], first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_under_load_writes_every_row_it_accepted_and_counts_the_rows_it_dropped() {
    // A queue of 64 rows against 41-row lookups from 8 clients at once: some rows are dropped.
    let p = Project::new(
        sqlite(),
        "destination: logs, sample_rate: 1.0, queue_rows: 64, roll_rows: 500",
    );
    let server = Arc::new(p.server_at(ANCHOR - 1, "load").await);
    let lookups = 25;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let server = Arc::clone(&server);
        let users = p.users.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for _ in 0..lookups {
                let response = client
                    .post(server.url("/get-online-features"))
                    .json(&json!({
                        "feature_service": "fraud_model_v2",
                        "entities": {
                            "user_id": users,
                            "amount": (0..users.len()).map(amount).collect::<Vec<_>>(),
                        },
                    }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status().as_u16(), 200);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let server = Arc::into_inner(server).expect("every client is done");
    let state = Arc::clone(&server.state);
    server.stop().await;
    let text = String::from_utf8(state.metrics.render()).unwrap();
    let samples = parse_samples(&text).unwrap();
    let get = |name: &str| samples.get(name).copied().unwrap_or(0.0);
    let sampled = get(r#"quiver_feature_log_sampled_total{feature_service="fraud_model_v2"}"#);
    let written = get(r#"quiver_feature_log_rows_total{feature_service="fraud_model_v2"}"#);
    let dropped = get(
        r#"quiver_feature_log_dropped_total{feature_service="fraud_model_v2",reason="queue_full"}"#,
    );
    let failed = get(
        r#"quiver_feature_log_dropped_total{feature_service="fraud_model_v2",reason="write_error"}"#,
    );
    let total = (8 * lookups * p.users.len()) as f64;
    assert_eq!(sampled, total);
    assert_eq!(failed, 0.0);
    assert_eq!(written + dropped, sampled, "{text}");
    let logs = quiver::offline::feature_log::read::read_logs(&p.logs(), None, None).unwrap();
    let in_files: usize = logs.iter().map(|l| l.batch.num_rows()).sum();
    assert_eq!(in_files as f64, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_set_from_the_log_holds_the_values_that_were_served() {
    let p = Project::new(sqlite(), "destination: logs, sample_rate: 1.0");
    let server = p.server_at(ANCHOR - 13 * HOUR, "training").await;
    let (id, served) = p.lookup(&server, "fraud_model_v2").await;
    server.stop().await;
    let id = id.unwrap();
    // Labels for rows 0 and 2 of the request, and one for a request that was never logged.
    let labels = RecordBatch::try_from_iter([
        (
            "request_id",
            Arc::new(arrow::array::StringArray::from(vec![
                id.as_str(),
                id.as_str(),
                "unknown",
            ])) as _,
        ),
        (
            "row",
            Arc::new(arrow::array::Int64Array::from(vec![0, 2, 0])) as _,
        ),
        (
            "is_fraud",
            Arc::new(arrow::array::BooleanArray::from(vec![true, false, true])) as _,
        ),
    ])
    .unwrap();
    let labels_path = p.dir.path().join("labels.parquet");
    write_batch(&labels_path, labels);
    let output = p.dir.path().join("training.parquet");
    let summary = training_set_from_log(&FromLogRequest {
        log_dir: p.logs(),
        labels: labels_path,
        output: output.clone(),
        feature_service: None,
        since: None,
        until: None,
    })
    .unwrap();
    assert_eq!(summary.rows, 2);
    assert_eq!(summary.unmatched_labels, 1);
    let training = read_parquet(&output);
    let risk = training
        .column_by_name("user_risk__risk_score")
        .unwrap()
        .as_primitive::<arrow::datatypes::Float64Type>();
    let (served_risk, _, _) = column(&served, "user_risk__risk_score");
    for (out_row, request_row) in [(0, 0), (1, 2)] {
        match served_risk[request_row].as_f64() {
            Some(v) => assert_eq!(risk.value(out_row).to_bits(), v.to_bits()),
            None => assert!(risk.is_null(out_row)),
        }
    }
    let users = training
        .column_by_name("user_id")
        .unwrap()
        .as_string::<i32>();
    assert_eq!(users.value(1), p.users[2]);
}
