//! Feast's own Python SDK (pinned, from PyPI) against `quiver serve`, side by side with `feast serve`.
//!
//! Two client repositories share one Feast registry and differ only in their `remote` online
//! store: one names `feast serve` (over a Redis filled by `feast materialize`), the other
//! `quiver serve` (over its own embedded store, filled by the SDK's `materialize`, which Feast
//! delegates to the server). The same SDK calls must give the same features through both.

use std::path::Path;

use quiver_tests::feast::{FeastRepo, quiver_config};
use quiver_tests::process::QuiverProcess;
use quiver_tests::redis::RedisServer;
use serde_json::Value;

/// Feature columns whose values are float32: Feast renders their widened float64, Quiver the
/// shortest float32 text; both are the same float32, so they are compared at that precision.
const FLOAT32_COLUMNS: &[&str] = &["conv_rate", "driver_hourly_stats__conv_rate"];

fn sdk(client: &FeastRepo, args: &[&str]) -> Value {
    let mut full = vec!["sdk_client.py"];
    full.extend_from_slice(args);
    let out = client.python(&full);
    serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("sdk_client.py printed no JSON ({e}):\n{out}"))
}

/// Asserts two `lookup` outputs hold the same columns with the same values.
fn assert_same_features(through_feast: &Value, through_quiver: &Value, when: &str) {
    for query in ["features", "feature_service", "full_feature_names"] {
        let (expected, actual) = (
            through_feast[query].as_object().unwrap(),
            through_quiver[query].as_object().unwrap(),
        );
        let mut expected_names: Vec<_> = expected.keys().collect();
        let mut actual_names: Vec<_> = actual.keys().collect();
        expected_names.sort();
        actual_names.sort();
        assert_eq!(actual_names, expected_names, "{when}: {query}: columns");
        for (name, want) in expected {
            let got = &actual[name];
            let (want, got) = (want.as_array().unwrap(), got.as_array().unwrap());
            assert_eq!(got.len(), want.len(), "{when}: {query}.{name}: rows");
            for (row, (w, g)) in want.iter().zip(got).enumerate() {
                assert!(
                    same_value(name, w, g),
                    "{when}: {query}.{name}[{row}]: feast serve gave {w}, quiver serve {g}"
                );
            }
        }
    }
}

fn same_value(column: &str, want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Number(w), Value::Number(g)) => {
            let (w, g) = (w.as_f64().unwrap(), g.as_f64().unwrap());
            if FLOAT32_COLUMNS.contains(&column) {
                (w as f32).to_bits() == (g as f32).to_bits()
            } else {
                w.to_bits() == g.to_bits() || w == g
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(w, g)| same_value(column, w, g))
        }
        _ => want == got,
    }
}

#[test]
fn feasts_sdk_gets_the_same_features_from_quiver_serve_as_from_feast_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let reference = FeastRepo::with_redis(&tmp.path().join("reference"), redis.port());
    reference.make_data();
    reference.apply_and_materialize();
    let feast_server = reference.serve();
    let quiver = QuiverProcess::serve(
        Path::new(env!("CARGO_BIN_EXE_quiver-under-test")),
        &quiver_config(reference.dir(), "  type: sqlite\n  path: quiver-online.db"),
    );

    let registry = reference.dir().join("data/registry.db");
    let via_feast = FeastRepo::remote(
        &tmp.path().join("via_feast"),
        &feast_server.base_url(),
        &registry,
    );
    let via_quiver = FeastRepo::remote(
        &tmp.path().join("via_quiver"),
        &quiver.base_url(),
        &registry,
    );

    // Quiver's store starts empty: before the SDK materializes through it, nothing is found.
    let before = sdk(&via_quiver, &["lookup"]);
    assert!(
        before["features"]["conv_rate"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_null),
        "{before}"
    );

    // `FeatureStore.materialize` with a remote store is `POST /materialize` on the server.
    let end = chrono::Utc::now().naive_utc();
    let start = end - chrono::Duration::days(3);
    let fmt = |t: chrono::NaiveDateTime| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    sdk(&via_quiver, &["materialize", &fmt(start), &fmt(end)]);
    assert_same_features(
        &sdk(&via_feast, &["lookup"]),
        &sdk(&via_quiver, &["lookup"]),
        "after materialize",
    );

    // `write_to_online_store` (POST /write-to-online-store with naive ISO times and a `created`
    // column) and `push` (the same route, per view of the push source) through both servers.
    for client in [&via_feast, &via_quiver] {
        sdk(client, &["write", "1001", "0.75"]);
        sdk(client, &["push", "1002", "0.5"]);
    }
    let through_feast = sdk(&via_feast, &["lookup"]);
    assert_eq!(through_feast["features"]["conv_rate"][0], 0.75);
    assert_eq!(through_feast["features"]["city"][1], "Accra");
    assert_same_features(
        &through_feast,
        &sdk(&via_quiver, &["lookup"]),
        "after write and push",
    );
}
