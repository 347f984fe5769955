//! On-demand views served over HTTP with the real example modules built from `transforms/`:
//! results equal the native functions, modules drop in and swap live without failed requests, and
//! hostile or broken modules fail only their own requests.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quiver::clock::ManualClock;
use quiver::offline::historical::HistoricalOptions;
use quiver_tests::fixtures::{T0, load_registry, quickstart_registry_yaml};
use quiver_tests::prometheus_text::parse_samples;
use quiver_tests::server::{TestServer, column, eventually, serve_materialized};
use quiver_tests::training::{
    features, read_parquet, run, values, write_user_entities_with_amounts,
};
use quiver_tests::wasm::{
    install_module, rows_module_failing_on, transform_wasm, wat_module, with_custom_section,
};
use serde_json::{Value, json};
use tempfile::TempDir;

struct Setup {
    dir: TempDir,
    server: Arc<TestServer>,
}

impl Setup {
    fn modules(&self) -> PathBuf {
        self.dir.path().join("transforms/wasm")
    }
}

/// The quickstart registry (the tests' own copy) over quickstart data generated at T0, served
/// with the given modules installed.
async fn setup(modules: &[(&str, Vec<u8>)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let yaml = quickstart_registry_yaml();
    quickstart::generate(&dir.path().join("examples/quickstart/data"), 50, T0, 7).unwrap();
    for (name, bytes) in modules {
        install_module(&dir.path().join("transforms/wasm"), name, bytes);
    }
    let registry = load_registry(dir.path(), yaml);
    let (_, server) = serve_materialized(registry, Arc::new(ManualClock::new(T0)), T0).await;
    let server = Arc::new(server);
    Setup { dir, server }
}

async fn risk_request(server: &TestServer, users: &[&str], amounts: &[f64]) -> (u16, Value) {
    server
        .post(
            "/get-online-features",
            &json!({
                "features": [
                    "user_features:avg_order_value_7d", "user_features:total_orders_30d",
                    "user_features:account_age_days", "user_features:fraud_score",
                    "user_risk:order_value_per_order", "user_risk:amount_over_avg", "user_risk:risk_score",
                    "order_stats:is_new_account"
                ],
                "entities": {"user_id": users, "amount": amounts}
            }),
        )
        .await
}

fn f32_of(v: &Value) -> Option<f32> {
    // JSON carries the shortest representation that round-trips through f32.
    v.as_f64().map(|x| x.to_string().parse::<f32>().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_features_equal_the_native_function_bit_for_bit() {
    let s = setup(&[
        ("user_risk", transform_wasm("user_risk")),
        ("order_stats", transform_wasm("order_stats")),
    ])
    .await;
    let users: Vec<String> = (1..=50)
        .map(quickstart::user_id)
        .chain(["nobody".to_string()])
        .collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let amounts: Vec<f64> = (0..users.len()).map(|i| 10.0 + i as f64 * 7.25).collect();
    let (status, body) = risk_request(&s.server, &users, &amounts).await;
    assert_eq!(status, 200, "{body}");
    // As in Feast, the join key is echoed and the request field (an input only) is not.
    let names = &body["metadata"]["feature_names"];
    assert_eq!(names[0], "user_id", "{names}");
    assert!(
        !names.as_array().unwrap().iter().any(|n| n == "amount"),
        "{names}"
    );

    let (avg, avg_status, _) = column(&body, "avg_order_value_7d");
    let (orders, _, _) = column(&body, "total_orders_30d");
    let (age, _, _) = column(&body, "account_age_days");
    let (fraud, _, _) = column(&body, "fraud_score");
    let (per_order, _, _) = column(&body, "order_value_per_order");
    let (over_avg, over_status, _) = column(&body, "amount_over_avg");
    let (risk, _, _) = column(&body, "risk_score");
    let (is_new, _, _) = column(&body, "is_new_account");
    let mut compared = 0;
    for r in 0..users.len() {
        // Inputs exactly as served: a value withheld as OUTSIDE_MAX_AGE is None for the transform too.
        let served = avg_status[r] != "NOT_FOUND" && avg_status[r] != "OUTSIDE_MAX_AGE";
        let expected = user_risk::user_risk(user_risk::Input {
            avg_order_value_7d: f32_of(&avg[r]),
            total_orders_30d: orders[r].as_i64(),
            account_age_days: age[r].as_i64(),
            fraud_score: f32_of(&fraud[r]),
            amount: amounts[r],
        });
        let bits = |v: &Value| v.as_f64().map(f64::to_bits);
        assert_eq!(
            bits(&per_order[r]),
            expected.order_value_per_order.map(f64::to_bits),
            "row {r}"
        );
        assert_eq!(
            bits(&over_avg[r]),
            expected.amount_over_avg.map(f64::to_bits),
            "row {r}"
        );
        assert_eq!(
            bits(&risk[r]),
            expected.risk_score.map(f64::to_bits),
            "row {r}"
        );
        let expected_new = order_stats::order_stats(order_stats::Input {
            total_orders_30d: orders[r].as_i64(),
            account_age_days: age[r].as_i64(),
        });
        assert_eq!(is_new[r].as_bool(), expected_new.is_new_account, "row {r}");
        if served {
            compared += 1;
        }
    }
    assert!(
        compared >= 40,
        "most users have served features ({compared})"
    );
    // The unknown user has no inputs: its outputs are nulls, reported as NULL_VALUE.
    assert_eq!(over_status[users.len() - 1], "NULL_VALUE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_fields_are_checked_before_the_transform_runs() {
    let s = setup(&[("user_risk", transform_wasm("user_risk"))]).await;
    let features = json!(["user_risk:risk_score"]);
    let (status, body) = s
        .server
        .post(
            "/get-online-features",
            &json!({"features": features, "entities": {"user_id": ["user_0001"]}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing request field \"amount\"")
    );
    let (status, body) = s
        .server
        .post(
            "/get-online-features",
            &json!({"features": features, "entities": {"user_id": ["user_0001"], "amount": ["lots"]}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["message"],
        "entities.amount[0]: expected float64, got a string"
    );
}

async fn transforms_listing(server: &TestServer) -> Value {
    let (status, body) = server.get("/transforms").await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_dropped_into_the_directory_is_served_without_a_restart() {
    let s = setup(&[]).await;
    let (status, body) = risk_request(&s.server, &["user_0001"], &[10.0]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "TRANSFORM_UNAVAILABLE");
    // Everything else is served meanwhile.
    let (status, _) = s
        .server
        .post("/get-online-features", &json!({"features": ["user_features:fraud_score"], "entities": {"user_id": ["user_0001"]}}))
        .await;
    assert_eq!(status, 200);

    let wasm = transform_wasm("user_risk");
    install_module(&s.modules(), "user_risk", &wasm);
    install_module(&s.modules(), "order_stats", &transform_wasm("order_stats"));
    assert!(
        eventually(Duration::from_secs(5), || async {
            risk_request(&s.server, &["user_0001"], &[10.0]).await.0 == 200
        })
        .await
    );
    let listing = transforms_listing(&s.server).await;
    let user_risk = listing["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "user_risk")
        .unwrap();
    assert_eq!(user_risk["views"], json!(["user_risk"]));
    assert_eq!(user_risk["sha256"].as_str().unwrap().len(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_module_under_load_fails_no_request() {
    let good = transform_wasm("user_risk");
    let s = setup(&[
        ("user_risk", good.clone()),
        ("order_stats", transform_wasm("order_stats")),
    ])
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (server, stop) = (s.server.clone(), stop.clone());
            tokio::spawn(async move {
                let mut served = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) =
                        risk_request(&server, &["user_0001", "user_0002"], &[25.0, 99.5]).await;
                    assert_eq!(status, 200, "a request failed during the swap: {body}");
                    served += 1;
                }
                served
            })
        })
        .collect();
    let mut last = String::new();
    for version in 0..5 {
        let bytes = with_custom_section(&good, &format!("v{version}"));
        install_module(&s.modules(), "user_risk", &bytes);
        last = quiver_tests::wasm::sha256_hex(&bytes);
        let expected = last.clone();
        assert!(
            eventually(Duration::from_secs(5), || async {
                let listing = transforms_listing(&s.server).await;
                listing["modules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["sha256"] == expected.as_str())
            })
            .await,
            "version {version} went live"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    assert!(total > 0);
    let listing = transforms_listing(&s.server).await;
    assert!(
        listing["modules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["sha256"] == last.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_module_fails_only_its_own_cells_and_a_broken_file_keeps_the_old_version() {
    let looping = wat_module("", "(loop $l (br $l)) (i64.const 0)");
    let s = setup(&[
        ("user_risk", looping),
        ("order_stats", transform_wasm("order_stats")),
    ])
    .await;
    let plain =
        json!({"features": ["user_features:fraud_score"], "entities": {"user_id": ["user_0001"]}});
    let (hostile, other) = tokio::join!(
        risk_request(&s.server, &["user_0001"], &[1.0]),
        s.server.post("/get-online-features", &plain)
    );
    // The runaway module's cells fail; the rest of the same response is intact.
    assert_eq!(hostile.0, 200, "{}", hostile.1);
    let (risk, risk_status, _) = column(&hostile.1, "risk_score");
    assert_eq!(risk_status, ["TRANSFORM_ERROR"]);
    assert!(risk[0].is_null());
    let (_, fraud_status, _) = column(&hostile.1, "fraud_score");
    assert_ne!(fraud_status[0], "TRANSFORM_ERROR");
    let (_, stats_status, _) = column(&hostile.1, "is_new_account");
    assert_ne!(stats_status[0], "TRANSFORM_ERROR");
    assert_eq!(other.0, 200);

    // The fix goes live; then a file that is not Wasm is rejected and the fix keeps serving.
    install_module(&s.modules(), "user_risk", &transform_wasm("user_risk"));
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (_, body) = risk_request(&s.server, &["user_0001"], &[1.0]).await;
            column(&body, "risk_score").1 != ["TRANSFORM_ERROR"]
        })
        .await
    );
    install_module(&s.modules(), "user_risk", b"definitely not wasm");
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (_, text) = s.server.get("/metrics").await;
            parse_samples(&text)
                .unwrap()
                .get("quiver_transform_load_failures_total")
                .copied()
                == Some(1.0)
        })
        .await
    );
    let (status, body) = risk_request(&s.server, &["user_0001"], &[1.0]).await;
    assert_eq!(status, 200);
    assert_ne!(column(&body, "risk_score").1, ["TRANSFORM_ERROR"]);
    let (_, text) = s.server.get("/metrics").await;
    let samples = parse_samples(&text).unwrap();
    // At least the first request; more while the fix was on its way in.
    let out_of_fuel =
        samples.get(r#"quiver_transform_calls_total{outcome="out_of_fuel",view="user_risk"}"#);
    assert!(out_of_fuel.is_some_and(|n| *n >= 1.0), "{out_of_fuel:?}");
    let failed_rows = samples.get(r#"quiver_transform_row_failures_total{view="user_risk"}"#);
    assert!(failed_rows.is_some_and(|n| *n >= 1.0), "{failed_rows:?}");
}

/// A `user_risk` stand-in that answers `risk_score: 1.0` (and nulls) for every row but traps on
/// any row whose `amount` is negative.
fn fails_on_negative_amounts() -> Vec<u8> {
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
    let mut marker = vec![0xa6];
    marker.extend_from_slice(b"amount");
    marker.push(0xcb);
    rows_module_failing_on(&marker, true, &row, "unreachable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_failing_on_one_entity_fails_only_that_entitys_on_demand_cells() {
    let s = setup(&[
        ("user_risk", fails_on_negative_amounts()),
        ("order_stats", transform_wasm("order_stats")),
    ])
    .await;
    let (status, body) = risk_request(
        &s.server,
        &["user_0001", "user_0002", "user_0003"],
        &[1.0, -5.0, 2.0],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for name in ["order_value_per_order", "amount_over_avg", "risk_score"] {
        let (_, statuses, _) = column(&body, name);
        assert_eq!(statuses[1], "TRANSFORM_ERROR", "{name}");
        assert!(statuses[0] != "TRANSFORM_ERROR" && statuses[2] != "TRANSFORM_ERROR");
    }
    let (risk, risk_status, _) = column(&body, "risk_score");
    assert_eq!(risk_status, ["PRESENT", "TRANSFORM_ERROR", "PRESENT"]);
    assert_eq!(risk, &vec![json!(1.0), Value::Null, json!(1.0)]);
    // Plain features and the other on-demand view of the same entity are intact.
    for name in ["avg_order_value_7d", "is_new_account"] {
        let (_, statuses, _) = column(&body, name);
        assert!(statuses.iter().all(|s| *s != "TRANSFORM_ERROR"), "{name}");
    }
    let (_, text) = s.server.get("/metrics").await;
    let samples = parse_samples(&text).unwrap();
    assert_eq!(
        samples.get(r#"quiver_transform_row_failures_total{view="user_risk"}"#),
        Some(&1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_and_historical_fail_the_same_rows_for_the_same_inputs() {
    let s = setup(&[
        ("user_risk", fails_on_negative_amounts()),
        ("order_stats", transform_wasm("order_stats")),
    ])
    .await;
    let users: Vec<String> = (1..=12).map(quickstart::user_id).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let amounts: Vec<f64> = (0..12)
        .map(|i| {
            if i % 5 == 1 {
                -(i as f64) - 0.5
            } else {
                i as f64
            }
        })
        .collect();

    let (status, body) = risk_request(&s.server, &users, &amounts).await;
    assert_eq!(status, 200, "{body}");
    let online_failed: Vec<bool> = column(&body, "risk_score")
        .1
        .iter()
        .map(|s| *s == "TRANSFORM_ERROR")
        .collect();
    let expected: Vec<bool> = amounts.iter().map(|a| *a < 0.0).collect();
    assert_eq!(online_failed, expected);

    // The same rows in batch, in calls of another size than the online one.
    let registry = quiver::config::load(&s.dir.path().join("feature_store.yaml")).unwrap();
    let entities = s.dir.path().join("entities.parquet");
    let rows: Vec<(&str, i64, f64)> = users
        .iter()
        .zip(&amounts)
        .map(|(u, a)| (*u, T0, *a))
        .collect();
    write_user_entities_with_amounts(&entities, &rows);
    let output = s.dir.path().join("training.parquet");
    let options = HistoricalOptions {
        transform_batch_rows: 5,
        ..HistoricalOptions::default()
    };
    let summary = run(
        &registry,
        &entities,
        features(&["user_risk:risk_score", "order_stats:is_new_account"]),
        &output,
        false,
        &options,
    )
    .unwrap();
    assert_eq!(
        summary.transform_failed_rows,
        expected.iter().filter(|f| **f).count() as u64
    );
    let batch = read_parquet(&output);
    let risk = values(
        &batch,
        "risk_score",
        quiver::types::ValueType::Scalar(quiver::types::ScalarType::Float64),
    );
    let batch_failed: Vec<bool> = risk.iter().map(|v| v.is_null()).collect();
    assert_eq!(batch_failed, online_failed);
    assert!(
        risk.iter()
            .filter(|v| !v.is_null())
            .all(|v| *v == quiver::types::Value::Float64(1.0))
    );
}
