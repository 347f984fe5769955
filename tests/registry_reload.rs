//! Live definitions: the real `quiver serve` process takes edits of its `feature_store.yaml`
//! without a restart. New feature views and on-demand views are served, an invalid edit or one
//! that needs a restart keeps the old definitions serving (and is counted and logged), and a series
//! of edits under load fails no request; feature logging starts and stops with its section.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quiver_tests::process::QuiverProcess;
use quiver_tests::prometheus_text::parse_samples;
use quiver_tests::server::eventually;
use quiver_tests::wasm::{install_module, transform_wasm};
use serde_json::{Value, json};
use tempfile::TempDir;

/// How long a reload may take to show (debounce, compile, swap) before a test fails.
const RELOAD: Duration = Duration::from_secs(10);

/// `quiver serve` in its own process (see `quiver-under-test` in Cargo.toml), killed on drop.
struct Quiver {
    process: QuiverProcess,
    client: reqwest::Client,
}

impl Quiver {
    /// Starts `quiver -c <config> serve` on a free port.
    fn start(config: &Path) -> Quiver {
        Quiver {
            process: QuiverProcess::serve(
                Path::new(env!("CARGO_BIN_EXE_quiver-under-test")),
                config,
            ),
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.process.base_url())
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("quiver answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    async fn lookup(&self, features: &[&str], users: &[&str]) -> (u16, Value) {
        self.post(
            "/get-online-features",
            &json!({"features": features, "entities": {"user_id": users}}),
        )
        .await
    }

    async fn registry(&self) -> Value {
        let response = self
            .client
            .get(self.url("/registry"))
            .send()
            .await
            .expect("quiver answers");
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.expect("a JSON body")
    }

    async fn generation(&self) -> u64 {
        self.registry().await["generation"]
            .as_u64()
            .expect("generation")
    }

    /// One series of `/metrics` (0 when absent).
    async fn metric(&self, series: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("quiver answers")
            .text()
            .await
            .unwrap();
        let samples = parse_samples(&text).expect("valid exposition format");
        samples.get(series).copied().unwrap_or(0.0)
    }

    async fn reloads(&self, result: &str) -> f64 {
        self.metric(&format!(
            "quiver_registry_reloads_total{{result=\"{result}\"}}"
        ))
        .await
    }

    fn logged(&self, text: &str) -> bool {
        self.process.log().iter().any(|l| l.contains(text))
    }

    /// Writes rows of `view` through `/write-to-online-store`.
    async fn write(&self, view: &str, df: Value) {
        let (status, body) = self
            .post(
                "/write-to-online-store",
                &json!({"feature_view_name": view, "df": df}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// A feature view reading `data/<name>` with the given schema lines.
fn view(name: &str, schema: &str) -> String {
    format!(
        "  - name: {name}\n    entities: [user]\n    ttl: 30d\n    schema:\n{schema}    source:\n      path: data/{name}\n      timestamp_field: event_timestamp\n"
    )
}

fn user_features() -> String {
    view(
        "user_features",
        "      - { name: total_orders_30d, dtype: int64 }\n      - { name: account_age_days, dtype: int64 }\n",
    )
}

const ORDER_STATS: &str = "on_demand_feature_views:\n  - name: order_stats\n    transform: order_stats\n    sources: [user_features]\n    schema:\n      - { name: orders_per_account_day, dtype: float64 }\n      - { name: is_new_account, dtype: bool }\n";

/// A registry over an embedded store at `store_path`, with `views` (feature views) and `extra`
/// (top-level sections) appended.
fn registry_yaml(store_path: &str, views: &str, extra: &str) -> String {
    format!(
        "project: live\nonline_store:\n  type: sqlite\n  path: {store_path}\nentities:\n  - name: user\n    join_keys: [user_id]\n    value_type: string\nfeature_views:\n{views}{extra}"
    )
}

/// Replaces the file as editors and deployment tools do: write aside, then rename over it.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_file_name(".feature_store.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A directory with `feature_store.yaml` (`yaml`) and the transforms directory.
fn project(yaml: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("transforms/wasm")).unwrap();
    let config = dir.path().join("feature_store.yaml");
    std::fs::write(&config, yaml).unwrap();
    (dir, config)
}

/// A minute ago (the views' ttl is 30 days and the server's clock is the system's).
fn recent() -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339()
}

async fn write_user_features(quiver: &Quiver) {
    quiver
        .write(
            "user_features",
            json!({
                "user_id": ["u1", "u2"],
                "event_timestamp": [recent(), recent()],
                "total_orders_30d": [12, 3],
                "account_age_days": [400, 5],
            }),
        )
        .await;
}

async fn wait_for_generation(quiver: &Quiver, generation: u64) {
    assert!(
        eventually(RELOAD, || async { quiver.generation().await == generation }).await,
        "generation {generation} was not served within {RELOAD:?}: {}",
        quiver.registry().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feature_view_added_to_a_running_servers_file_is_served_without_a_restart() {
    let (dir, config) = project(&registry_yaml("data/online.db", &user_features(), ""));
    let quiver = tokio::task::block_in_place(|| Quiver::start(&config));
    let (status, body) = quiver.lookup(&["user_clicks:clicks"], &["u1"]).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(quiver.generation().await, 1);

    let clicks = view(
        "user_clicks",
        "      - { name: clicks, dtype: int64 }\n      - { name: last_page, dtype: string }\n",
    );
    replace_file(
        &config,
        &registry_yaml("data/online.db", &(user_features() + &clicks), ""),
    );
    wait_for_generation(&quiver, 2).await;

    quiver
        .write(
            "user_clicks",
            json!({"user_id": ["u1"], "event_timestamp": [recent()],
                   "clicks": [7], "last_page": ["/cart"]}),
        )
        .await;
    let (status, body) = quiver
        .lookup(&["user_clicks:clicks", "user_clicks:last_page"], &["u1"])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][1]["values"], json!([7]), "{body}");
    assert_eq!(body["results"][1]["statuses"], json!(["PRESENT"]), "{body}");
    assert_eq!(body["results"][2]["values"], json!(["/cart"]), "{body}");

    let registry = quiver.registry().await;
    let added = registry["feature_views"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "user_clicks")
        .expect("the new view is listed");
    assert_eq!(
        added["features"],
        json!([{"name": "clicks", "type": "int64"}, {"name": "last_page", "type": "string"}])
    );
    assert_eq!(added["ttl"], "30d");
    assert_eq!(quiver.reloads("ok").await, 1.0);
    assert_eq!(quiver.metric("quiver_registry_generation").await, 2.0);
    assert!(
        quiver
            .metric("quiver_registry_loaded_timestamp_seconds")
            .await
            > 1.7e9
    );
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_view_whose_module_is_dropped_in_is_served_without_a_restart() {
    // No on-demand view at start-up, so the server starts without any transform catalog.
    let (dir, config) = project(&registry_yaml("data/online.db", &user_features(), ""));
    let quiver = tokio::task::block_in_place(|| Quiver::start(&config));
    write_user_features(&quiver).await;
    let (status, _) = quiver
        .lookup(&["order_stats:is_new_account"], &["u1"])
        .await;
    assert_eq!(status, 404);

    install_module(
        &dir.path().join("transforms/wasm"),
        "order_stats",
        &transform_wasm("order_stats"),
    );
    replace_file(
        &config,
        &registry_yaml("data/online.db", &user_features(), ORDER_STATS),
    );
    wait_for_generation(&quiver, 2).await;
    // The module loads beside the swap: poll until the view answers.
    let deadline = tokio::time::Instant::now() + RELOAD;
    let last = loop {
        let (status, body) = quiver
            .lookup(&["order_stats:is_new_account"], &["u1", "u2"])
            .await;
        if status == 200 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the on-demand view was not served within {RELOAD:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(last["results"][1]["values"], json!([false, true]), "{last}");
    let registry = quiver.registry().await;
    assert_eq!(registry["on_demand_views"][0]["transform"], "order_stats");
    assert_eq!(registry["on_demand_views"][0]["module_loaded"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_edit_keeps_the_old_definitions_serving_and_is_counted() {
    let (dir, config) = project(&registry_yaml("data/online.db", &user_features(), ""));
    let quiver = tokio::task::block_in_place(|| Quiver::start(&config));
    write_user_features(&quiver).await;

    // A new view naming an entity that does not exist.
    let broken = view("user_clicks", "      - { name: clicks, dtype: int64 }\n")
        .replace("entities: [user]", "entities: [account]");
    let bad = registry_yaml("data/online.db", &(user_features() + &broken), "");
    replace_file(&config, &bad);
    assert!(
        eventually(RELOAD, || async { quiver.reloads("invalid").await == 1.0 }).await,
        "the invalid edit was not counted"
    );
    assert_eq!(quiver.generation().await, 1);
    assert_eq!(quiver.reloads("ok").await, 0.0);
    let (status, body) = quiver
        .lookup(&["user_features:total_orders_30d"], &["u1"])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][1]["values"], json!([12]));

    // The log names the problem as `quiver validate` does.
    let validate = std::process::Command::new(env!("CARGO_BIN_EXE_quiver-under-test"))
        .arg("-c")
        .arg(&config)
        .args(["validate", "--no-data"])
        .output()
        .unwrap();
    assert!(!validate.status.success());
    let problem = String::from_utf8_lossy(&validate.stderr)
        .lines()
        .find(|l| l.contains("account"))
        .expect("validate names the unknown entity")
        .trim()
        .to_string();
    assert!(
        eventually(RELOAD, || async { quiver.logged(&problem) }).await,
        "the server log lacks {problem:?}"
    );

    // Fixing the file applies it.
    let valid = bad.replace("entities: [account]", "entities: [user]");
    replace_file(&config, &valid);
    wait_for_generation(&quiver, 2).await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_online_store_section_is_reported_as_needing_a_restart() {
    let (dir, config) = project(&registry_yaml("data/online.db", &user_features(), ""));
    let quiver = tokio::task::block_in_place(|| Quiver::start(&config));
    write_user_features(&quiver).await;

    // Another store, and a new view beside it: the whole change waits for a restart.
    let clicks = view("user_clicks", "      - { name: clicks, dtype: int64 }\n");
    replace_file(
        &config,
        &registry_yaml("data/other.db", &(user_features() + &clicks), ""),
    );
    assert!(
        eventually(RELOAD, || async {
            quiver.reloads("needs_restart").await == 1.0
        })
        .await,
        "the change was not reported as needing a restart"
    );
    assert!(
        eventually(RELOAD, || async {
            quiver.logged("online_store, which only a restart applies")
        })
        .await
    );
    assert_eq!(quiver.generation().await, 1);
    let (status, _) = quiver.lookup(&["user_clicks:clicks"], &["u1"]).await;
    assert_eq!(status, 404);
    let (status, body) = quiver
        .lookup(&["user_features:total_orders_30d"], &["u1"])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][1]["values"], json!([12]));
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_of_registry_edits_under_load_fails_no_request() {
    let (dir, config) = project(&registry_yaml(
        "data/online.db",
        &user_features(),
        ORDER_STATS,
    ));
    install_module(
        &dir.path().join("transforms/wasm"),
        "order_stats",
        &transform_wasm("order_stats"),
    );
    let quiver = Arc::new(tokio::task::block_in_place(|| Quiver::start(&config)));
    write_user_features(&quiver).await;
    assert!(
        eventually(RELOAD, || async {
            quiver
                .lookup(&["order_stats:is_new_account"], &["u1"])
                .await
                .0
                == 200
        })
        .await
    );

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (quiver, stop) = (Arc::clone(&quiver), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut served = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = quiver
                        .lookup(
                            &[
                                "user_features:total_orders_30d",
                                "order_stats:orders_per_account_day",
                            ],
                            &["u1", "u2"],
                        )
                        .await;
                    assert_eq!(status, 200, "a request failed during a reload: {body}");
                    assert_eq!(body["results"][1]["values"], json!([12, 3]), "{body}");
                    served += 1;
                }
                served
            })
        })
        .collect();
    // Each edit puts a view before `user_features`, so its index changes with every generation:
    // a request resolving against two generations would read the wrong view. The last edit
    // removes them all again.
    let mut views = user_features();
    for edit in 0..5 {
        views = view(
            &format!("extra_{edit}"),
            "      - { name: value, dtype: float64 }\n",
        ) + &views;
        replace_file(
            &config,
            &registry_yaml("data/online.db", &views, ORDER_STATS),
        );
        wait_for_generation(&quiver, edit + 2).await;
    }
    let (status, _) = quiver.lookup(&["extra_4:value"], &["u1"]).await;
    assert_eq!(status, 200);
    replace_file(
        &config,
        &registry_yaml("data/online.db", &user_features(), ORDER_STATS),
    );
    wait_for_generation(&quiver, 7).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        total += c.await.expect("no client saw a failed request");
    }
    assert!(total > 0);
    eprintln!("{total} lookups served across 6 reloads");
    assert_eq!(quiver.reloads("ok").await, 6.0);
    let (status, _) = quiver.lookup(&["extra_4:value"], &["u1"]).await;
    assert_eq!(status, 404);
}

/// Lookups of `scoring` for `users`; returns the `x-quiver-request-id` header, if any.
async fn scoring_request_id(quiver: &Quiver, users: &[&str]) -> Option<String> {
    let response = quiver
        .client
        .post(quiver.url("/get-online-features"))
        .json(&json!({"feature_service": "scoring", "entities": {"user_id": users}}))
        .send()
        .await
        .expect("quiver answers");
    assert_eq!(response.status().as_u16(), 200);
    response
        .headers()
        .get("x-quiver-request-id")
        .map(|v| v.to_str().unwrap().to_string())
}

/// Rows in the Parquet files of the feature log under `dir` (temporary files skipped).
fn logged_rows(dir: &Path) -> usize {
    if !dir.exists() {
        return 0;
    }
    quiver::offline::feature_log::read::read_logs(dir, None, None)
        .unwrap()
        .iter()
        .map(|l| l.batch.num_rows())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_logging_turned_on_and_off_in_a_running_servers_file_follows_the_edit() {
    let service = |logging: &str| {
        format!("feature_services:\n  - name: scoring\n    features: [user_features]\n{logging}")
    };
    let (dir, config) = project(&registry_yaml(
        "data/online.db",
        &user_features(),
        &service(""),
    ));
    let quiver = tokio::task::block_in_place(|| Quiver::start(&config));
    write_user_features(&quiver).await;
    assert_eq!(scoring_request_id(&quiver, &["u1", "u2"]).await, None);

    let logging = "    logging: { destination: logs, sample_rate: 1.0, roll_interval: 1h }\n";
    replace_file(
        &config,
        &registry_yaml("data/online.db", &user_features(), &service(logging)),
    );
    wait_for_generation(&quiver, 2).await;
    assert!(scoring_request_id(&quiver, &["u1", "u2"]).await.is_some());

    // Turned off again: the replaced writer writes the two rows it holds, and nothing more is
    // logged.
    replace_file(
        &config,
        &registry_yaml("data/online.db", &user_features(), &service("")),
    );
    wait_for_generation(&quiver, 3).await;
    assert_eq!(scoring_request_id(&quiver, &["u1"]).await, None);
    let logs = dir.path().join("logs");
    assert!(
        eventually(RELOAD, || async { logged_rows(&logs) == 2 }).await,
        "{} rows logged",
        logged_rows(&logs)
    );
    assert_eq!(
        quiver
            .metric("quiver_feature_log_rows_total{feature_service=\"scoring\"}")
            .await,
        2.0
    );
}
