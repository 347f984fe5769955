//! Quiver and Feast 0.67 on one Redis, with `online_store: {type: redis, layout: feast}`: Quiver
//! serves what `feast materialize-incremental` and `FeatureStore.push` wrote, exactly as
//! `feast serve` does, and Feast's SDK reads what Quiver's `/push` wrote.
//!
//! Everything is real: a `redis-server` on a free port, the pinned Feast from PyPI (see
//! `quiver_tests::python::feast`), the sample repository `tests/feast_repo/`, and the
//! `quiver serve` binary.

use std::path::Path;
use std::time::Duration;

use quiver_tests::feast::FeastRepo;
use quiver_tests::process::QuiverProcess;
use quiver_tests::redis::RedisServer;
use quiver_tests::server::eventually;
use serde_json::{Value as Json, json};

/// Where Quiver deliberately answers differently from `feast serve` (docs/redis-layout.md):
/// - an entity the store does not hold is NOT_FOUND in Quiver; Feast's Redis reader answers its
///   features with an empty value (listed as `unknown_entity` below);
/// - Quiver enforces each view's ttl online; Feast does not (the sample rows are all within ttl,
///   so no row of these tests differs on that account).
const UNKNOWN_DRIVER: i64 = 9999;
const UNKNOWN_CUSTOMER: &str = "nobody";

/// A copy of the sample Feast repository, applied and materialized into its own `redis-server`.
struct Materialized {
    _redis: RedisServer,
    _dir: tempfile::TempDir,
    repo: FeastRepo,
}

impl Materialized {
    /// Copies `tests/feast_repo`, points it at a new `redis-server`, writes its data, and runs
    /// `feast apply` and `feast materialize-incremental <now>`.
    fn new() -> Materialized {
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let repo = FeastRepo::with_redis(dir.path(), redis.port());
        repo.make_data();
        repo.apply_and_materialize();
        Materialized {
            _redis: redis,
            _dir: dir,
            repo,
        }
    }

    /// Runs a Python snippet in the repository with Feast's SDK; returns the JSON it printed on
    /// its last line.
    fn python(&self, code: &str) -> Json {
        let out = self.repo.python(&["-c", code]);
        let last = out.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// `quiver serve` over the same Redis in Feast's layout, with the registry
    /// `quiver import-feast` writes for the repository (the path a Feast user takes).
    fn quiver(&self) -> QuiverProcess {
        let binary = Path::new(env!("CARGO_BIN_EXE_quiver-under-test"));
        let config = self.repo.dir().join("quiver/feature_store.yaml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        let import = std::process::Command::new(binary)
            .arg("import-feast")
            .arg(self.repo.dir())
            .arg("--output")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            import.status.success(),
            "quiver import-feast failed:\n{}",
            String::from_utf8_lossy(&import.stderr)
        );
        let imported = std::fs::read_to_string(&config).unwrap();
        assert!(imported.contains("  layout: feast\n"), "{imported}");
        QuiverProcess::serve(binary, &config)
    }
}

/// `POST` a JSON body to a server; the status and the JSON answer.
async fn post(base_url: &str, path: &str, body: &Json) -> (u16, Json) {
    let response = reqwest::Client::new()
        .post(format!("{base_url}{path}"))
        .json(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Json::String(text)),
    )
}

/// One column of an answer of `/get-online-features`: name, values, statuses, event timestamps.
type Column = (String, Vec<Json>, Vec<String>, Vec<String>);

/// One answer of `/get-online-features`, column by column.
fn columns(response: &Json) -> Vec<Column> {
    let names = response["metadata"]["feature_names"]
        .as_array()
        .unwrap_or_else(|| panic!("no feature_names in {response}"));
    let results = response["results"].as_array().unwrap();
    names
        .iter()
        .zip(results)
        .map(|(name, result)| {
            let statuses = result["statuses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            let times = result["event_timestamps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap_or_default().to_string())
                .collect();
            (
                name.as_str().unwrap().to_string(),
                result["values"].as_array().unwrap().clone(),
                statuses,
                times,
            )
        })
        .collect()
}

/// Equal as feature values: numbers by value (Feast widens float32 to a double when it renders
/// it, Quiver prints the float32's shortest form), lists item by item, the rest exactly.
fn same_value(feature: &str, quiver: &Json, feast: &Json) -> bool {
    match (quiver, feast) {
        (Json::Number(a), Json::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            if feature.ends_with("conv_rate") {
                a as f32 == b as f32
            } else {
                a == b
            }
        }
        (Json::Array(a), Json::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(feature, x, y))
        }
        (a, b) => a == b,
    }
}

/// Asks both servers the same question and checks that every feature of every entity has the
/// same value and status, except where Quiver deliberately differs: in rows of unknown entities
/// Quiver answers NOT_FOUND where Feast's Redis reader answers PRESENT with a null value.
async fn compare(quiver: &str, feast: &str, body: &Json, unknown_rows: &[usize]) {
    let (q_status, q) = post(quiver, "/get-online-features", body).await;
    let (f_status, f) = post(feast, "/get-online-features", body).await;
    assert_eq!((q_status, f_status), (200, 200), "quiver: {q}\nfeast: {f}");
    let (q, mut f) = (columns(&q), columns(&f));
    // Feast groups the columns by view and orders them its own way; compare them by name.
    let mut names: Vec<&String> = q.iter().map(|c| &c.0).collect();
    names.sort();
    f.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        names,
        f.iter().map(|c| &c.0).collect::<Vec<_>>(),
        "feature names"
    );
    let is_join_key = |name: &str| body["entities"].as_object().unwrap().contains_key(name);
    for (name, q_values, q_statuses, q_times) in &q {
        let (_, f_values, f_statuses, f_times) = f.iter().find(|c| &c.0 == name).unwrap();
        for row in 0..q_values.len() {
            if unknown_rows.contains(&row) {
                if !is_join_key(name) {
                    assert_eq!(q_statuses[row], "NOT_FOUND", "{name} of unknown row {row}");
                    assert!(q_values[row].is_null(), "{name} of unknown row {row}");
                    assert!(f_values[row].is_null(), "feast: {name} of row {row}");
                }
                continue;
            }
            assert!(
                same_value(name, &q_values[row], &f_values[row]),
                "{name} of row {row}: quiver {} feast {}",
                q_values[row],
                f_values[row]
            );
            assert_eq!(
                q_statuses[row], f_statuses[row],
                "status of {name}, row {row}"
            );
            if !is_join_key(name) {
                assert_eq!(
                    quiver::types::parse_time(&q_times[row]),
                    quiver::types::parse_time(&f_times[row]),
                    "event timestamp of {name}, row {row}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiver_serves_what_feast_materialized_exactly_as_feast_serve_does() {
    let repo = tokio::task::spawn_blocking(Materialized::new)
        .await
        .unwrap();
    let feast_server = repo.repo.serve();
    let feast = feast_server.base_url();
    let quiver_process = repo.quiver();
    let quiver = quiver_process.base_url();
    eprintln!("feast serve on {feast}, quiver on {quiver}");

    // Every feature of both views, for a sample of entities and one unknown of each kind.
    let every_feature = json!({
        "entities": {
            "driver_id": [1001, 1002, 1007, 1020, UNKNOWN_DRIVER],
            "customer_id": ["c1", "c2", "c5", "c10", UNKNOWN_CUSTOMER],
        },
        "features": [
            "driver_hourly_stats:conv_rate",
            "driver_hourly_stats:acc_rate",
            "driver_hourly_stats:avg_daily_trips",
            "driver_hourly_stats:city",
            "driver_hourly_stats:active",
            "customer_profile:lifetime_value",
            "customer_profile:tier",
            "customer_profile:recent_scores",
        ],
        "full_feature_names": true,
    });
    compare(&quiver, &feast, &every_feature, &[4]).await;

    // The feature service, as Feast clients ask for it.
    let service = json!({
        "entities": {"driver_id": [1003, 1011], "customer_id": ["c3", "c9"]},
        "feature_service": "driver_activity",
    });
    compare(&quiver, &feast, &service, &[]).await;

    // The values are the latest rows (5 hours ago), not the older ones (30 hours ago).
    let (_, answer) = post(&quiver, "/get-online-features", &service).await;
    let trips = columns(&answer)
        .into_iter()
        .find(|c| c.0 == "avg_daily_trips")
        .unwrap();
    assert_eq!(trips.1, vec![json!(1003 * 3 + 5), json!(1011 * 3 + 5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feast_push_after_quiver_started_is_served_by_quiver() {
    let repo = tokio::task::spawn_blocking(Materialized::new)
        .await
        .unwrap();
    let quiver_process = repo.quiver();
    let quiver = quiver_process.base_url();
    let body = json!({
        "entities": {"driver_id": [1004]},
        "features": ["driver_hourly_stats:avg_daily_trips", "driver_hourly_stats:city"],
    });
    let (_, before) = post(&quiver, "/get-online-features", &body).await;
    assert_eq!(columns(&before)[1].1, vec![json!(1004 * 3 + 5)]);

    let pushed = tokio::task::spawn_blocking(move || {
        repo.python(
            r#"
import json
from datetime import datetime, timezone
import pandas as pd
from feast import FeatureStore
now = datetime.now(timezone.utc)
df = pd.DataFrame([{
    "driver_id": 1004, "event_timestamp": now, "created": now,
    "conv_rate": 0.25, "acc_rate": 0.5, "avg_daily_trips": 777, "city": "Porto", "active": True,
}])
df["conv_rate"] = df["conv_rate"].astype("float32")
FeatureStore(repo_path=".").push("driver_stats_push", df)
print(json.dumps({"pushed": True}))
"#,
        );
        repo
    })
    .await
    .unwrap();
    // Feast's writes are not announced: Quiver serves them once its L1 entry (cache.ttl, 5 s by
    // default) has expired.
    let served = eventually(Duration::from_secs(15), || {
        let (quiver, body) = (&quiver, &body);
        async move {
            let (_, after) = post(quiver, "/get-online-features", body).await;
            let cols = columns(&after);
            cols[1].1 == vec![json!(777)] && cols[2].1 == vec![json!("Porto")]
        }
    })
    .await;
    assert!(served, "Quiver did not serve the value Feast pushed");
    drop(pushed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiver_push_into_the_feast_layout_is_read_by_feasts_sdk() {
    let repo = tokio::task::spawn_blocking(Materialized::new)
        .await
        .unwrap();
    let quiver_process = repo.quiver();
    let quiver = quiver_process.base_url();
    let now = chrono::Utc::now();
    let event = now.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    let (status, answer) = post(
        &quiver,
        "/push",
        &json!({
            "push_source_name": "driver_stats_push",
            "df": {
                "driver_id": [1006, 4242],
                "event_timestamp": [event, event],
                "conv_rate": [0.75, 0.125],
                "acc_rate": [0.5, 0.25],
                "avg_daily_trips": [9_007_199_254_740_993_i64, 12],
                "city": ["Braga", null],
                "active": [false, true],
            },
            "to": "online",
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    let read = tokio::task::spawn_blocking(move || {
        repo.python(
            r#"
import json
from feast import FeatureStore
store = FeatureStore(repo_path=".")
out = store.get_online_features(
    features=["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate",
              "driver_hourly_stats:avg_daily_trips", "driver_hourly_stats:city",
              "driver_hourly_stats:active"],
    entity_rows=[{"driver_id": 1006}, {"driver_id": 4242}],
).to_dict()
print(json.dumps({k: [None if v != v else v for v in vs] for k, vs in out.items()}))
"#,
        )
    })
    .await
    .unwrap();
    assert_eq!(read["driver_id"], json!([1006, 4242]));
    assert_eq!(read["conv_rate"], json!([0.75, 0.125]));
    assert_eq!(read["acc_rate"], json!([0.5, 0.25]));
    // Exact beyond 2^53: Quiver writes int64_val as given.
    assert_eq!(
        read["avg_daily_trips"],
        json!([9_007_199_254_740_993_i64, 12])
    );
    assert_eq!(read["city"], json!(["Braga", null]));
    assert_eq!(read["active"], json!([false, true]));
}

#[test]
fn quiver_materialize_into_the_feast_layout_is_read_by_feasts_sdk() {
    // Feast applies its definitions but never materializes: every value Feast reads is Quiver's.
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = FeastRepo::with_redis(dir.path(), redis.port());
    repo.make_data();
    repo.feast(&["apply"]);
    let materialized = Materialized {
        _redis: redis,
        _dir: dir,
        repo,
    };
    let process = materialized.quiver();
    drop(process);
    let config = materialized.repo.dir().join("quiver/feature_store.yaml");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_quiver-under-test"))
        .arg("-c")
        .arg(&config)
        .args(["materialize", "now-3d", "now"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "quiver materialize failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let read = materialized.python(
        r#"
import json
from feast import FeatureStore
store = FeatureStore(repo_path=".")
out = store.get_online_features(
    features=["driver_hourly_stats:avg_daily_trips", "driver_hourly_stats:city",
              "customer_profile:tier", "customer_profile:recent_scores"],
    entity_rows=[{"driver_id": 1001, "customer_id": "c1"}, {"driver_id": 1012, "customer_id": "c7"}],
).to_dict()
print(json.dumps(out))
"#,
    );
    // The latest rows of make_data.py: 5 hours ago for drivers, one row per customer.
    assert_eq!(read["avg_daily_trips"], json!([1001 * 3 + 5, 1012 * 3 + 5]));
    assert_eq!(read["city"], json!(["Quito", "Oslo"]));
    assert_eq!(read["tier"], json!([1, 1]));
    assert_eq!(read["recent_scores"], json!([[0.5, 1.0], [3.5, 7.0]]));
}
