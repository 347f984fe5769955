//! Training–serving parity: over the quickstart data, for sampled entities and times T,
//! `materialize` up to T and a lookup at T (a server on a manual clock standing at T) return
//! exactly what `historical` puts in the training set for (entity, T), bit for bit, on-demand
//! features (the example Wasm transforms) included — on the embedded SQLite store and on a real
//! Redis server.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMicrosecondType;
use quiver::clock::{ManualClock, SharedClock};
use quiver::offline::historical::{FeatureList, HistoricalOptions};
use quiver::offline::materialize::{MaterializeRequest, materialize};
use quiver::registry::Registry;
use quiver::types::{ScalarType, Value, ValueType};
use quiver_tests::fixtures::{HOUR, load_registry, quickstart_registry_yaml};
use quiver_tests::redis::RedisServer;
use quiver_tests::server::{TestServer, column};
use quiver_tests::training::{read_parquet, run, values, write_user_entities_with_amounts};
use quiver_tests::wasm::{install_module, transform_wasm};
use serde_json::{Value as Json, json};

/// 2030-01-01T00:00:00Z: fixed, and later than any real clock running these tests, so records
/// written to Redis with an absolute expiry are still alive.
const ANCHOR: i64 = 1_893_456_000_000_000;
const SEED: u64 = 11;
const USERS: usize = 150;

/// The quickstart registry (the tests' own copy) with the sources in `data/` and the given online
/// store.
fn registry_yaml(online_store: &str) -> String {
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
    }
    out
}

/// The event timestamp and user of the first `user_sessions` row, for exact-boundary times.
fn first_session_row(dir: &Path) -> (String, i64) {
    let batch = read_parquet(&dir.join("data/user_sessions/activity.parquet"));
    let user = batch
        .column_by_name("user_id")
        .unwrap()
        .as_string::<i32>()
        .value(0)
        .to_string();
    let ts = batch
        .column_by_name("event_timestamp")
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>()
        .value(0);
    (user, ts)
}

/// The sampled times: spread over the data's week, around ttl boundaries, after the data ends,
/// and exactly at a row's timestamp, at that timestamp + ttl, and one microsecond later.
fn sample_times(dir: &Path) -> Vec<i64> {
    let (_, ts) = first_session_row(dir);
    let sessions_ttl = 12 * HOUR;
    vec![
        ANCHOR - 6 * 24 * HOUR - 2 * HOUR,
        ANCHOR - 2 * 24 * HOUR + 5 * HOUR,
        ANCHOR - 13 * HOUR,
        ANCHOR - 1,
        ANCHOR + 12 * HOUR + 30 * 60_000_000,
        ANCHOR + 25 * HOUR,
        ts,
        ts + sessions_ttl,
        ts + sessions_ttl + 1,
    ]
}

/// Every feature of every feature view and on-demand view.
fn all_features(registry: &Registry) -> Vec<(String, ValueType)> {
    let views = registry.feature_views.iter().map(|v| (&v.name, &v.fields));
    let on_demand = registry
        .on_demand_views
        .iter()
        .map(|v| (&v.name, &v.fields));
    views
        .chain(on_demand)
        .flat_map(|(name, fields)| {
            fields
                .iter()
                .map(move |f| (format!("{name}:{}", f.name), f.dtype))
        })
        .collect()
}

/// The `amount` request field of entity row `r`.
fn amount(r: usize) -> f64 {
    ((r * 7919) % 50_000) as f64 / 100.0 + 0.01
}

/// Compares one served cell with the training-set value; returns the status seen.
fn assert_same(
    status: &str,
    served: &Json,
    historical: &Value,
    dtype: ValueType,
    what: &str,
) -> String {
    match status {
        "PRESENT" => {
            let ok = match (historical, dtype) {
                // JSON renders an f32 by its shortest representation: read it back as f32.
                (Value::Float32(h), ValueType::Scalar(ScalarType::Float32)) => served
                    .as_f64()
                    .is_some_and(|s| (s as f32).to_bits() == h.to_bits()),
                (Value::Float64(h), ValueType::Scalar(ScalarType::Float64)) => {
                    served.as_f64().is_some_and(|s| s.to_bits() == h.to_bits())
                }
                (Value::Int(h), ValueType::Scalar(ScalarType::Int64)) => {
                    served.as_i64() == Some(*h)
                }
                (Value::String(h), ValueType::Scalar(ScalarType::String)) => {
                    served.as_str() == Some(h.as_str())
                }
                (Value::Bool(h), ValueType::Scalar(ScalarType::Bool)) => {
                    served.as_bool() == Some(*h)
                }
                _ => false,
            };
            assert!(
                ok,
                "{what}: served {served}, training set has {historical:?}"
            );
        }
        "NULL_VALUE" | "OUTSIDE_MAX_AGE" | "NOT_FOUND" => {
            assert!(
                historical.is_null(),
                "{what}: served {status}, training set has {historical:?}"
            );
            assert!(served.is_null(), "{what}: {status} with value {served}");
        }
        other => panic!("{what}: unexpected status {other}"),
    }
    status.to_string()
}

async fn parity(online_store: &str) {
    let dir = tempfile::tempdir().unwrap();
    quickstart::generate(&dir.path().join("data"), USERS, ANCHOR, SEED).unwrap();
    for module in ["user_risk", "order_stats"] {
        install_module(
            &dir.path().join("transforms/wasm"),
            module,
            &transform_wasm(module),
        );
    }
    let registry = load_registry(dir.path(), &registry_yaml(online_store));
    assert!(!registry.on_demand_views.is_empty());
    let times = sample_times(dir.path());
    let features = all_features(&registry);
    let mut users: Vec<String> = (1..=USERS).map(quickstart::user_id).collect();
    users.push("nobody".into());

    // One training set for every (user, T).
    let mut entity_rows: Vec<(&str, i64, f64)> = Vec::new();
    for &t in &times {
        for (r, u) in users.iter().enumerate() {
            entity_rows.push((u.as_str(), t, amount(r)));
        }
    }
    let entities = dir.path().join("entities.parquet");
    write_user_entities_with_amounts(&entities, &entity_rows);
    let output = dir.path().join("training.parquet");
    let (registry_for_batch, entities_for_batch, output_for_batch) =
        (Arc::clone(&registry), entities.clone(), output.clone());
    let specs: Vec<String> = features.iter().map(|(s, _)| s.clone()).collect();
    tokio::task::spawn_blocking(move || {
        run(
            &registry_for_batch,
            &entities_for_batch,
            FeatureList::Features(specs),
            &output_for_batch,
            true,
            &HistoricalOptions {
                transform_batch_rows: 256,
                ..HistoricalOptions::default()
            },
        )
    })
    .await
    .unwrap()
    .unwrap();
    let training = read_parquet(&output);
    assert_eq!(training.num_rows(), entity_rows.len());

    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, &t) in times.iter().enumerate() {
        // A fresh namespace per T, as if the store had only ever been materialized up to T.
        let clock = Arc::new(ManualClock::new(t));
        let shared: SharedClock = clock.clone();
        let store = quiver::store::open(
            &registry.online_store,
            &format!("parity{i}"),
            &registry.store_catalog(),
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
        materialize(&registry, &store, &shared, &request)
            .await
            .unwrap();
        let server = TestServer::start(Arc::clone(&registry), store, shared).await;
        let body = json!({
            "features": features.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
            "entities": {
                "user_id": users,
                "amount": (0..users.len()).map(amount).collect::<Vec<_>>(),
            },
            "full_feature_names": true,
        });
        let (code, response) = server.post("/get-online-features", &body).await;
        assert_eq!(code, 200, "{response}");
        let first = i * users.len();
        for (spec, dtype) in &features {
            let name = spec.replace(':', "__");
            let (served, statuses, _) = column(&response, &name);
            let expected = values(&training, &name, *dtype);
            for (r, user) in users.iter().enumerate() {
                let what = format!("{name} of {user} at T={t}");
                let status =
                    assert_same(statuses[r], &served[r], &expected[first + r], *dtype, &what);
                *seen.entry(status).or_default() += 1;
            }
        }
        server.stop().await;
    }
    // The comparison covered every kind of answer.
    for status in ["PRESENT", "NULL_VALUE", "OUTSIDE_MAX_AGE", "NOT_FOUND"] {
        assert!(
            seen.get(status).is_some_and(|&n| n > 0),
            "no {status} in {seen:?}"
        );
    }
    // The exact-boundary times hit the row they were built from.
    let (user, ts) = first_session_row(dir.path());
    let u = users.iter().position(|x| *x == user).unwrap();
    let session_ts = |t_index: usize| {
        let col = training
            .column_by_name("user_sessions__sessions_24h")
            .unwrap();
        !col.is_null(t_index * users.len() + u)
    };
    let at = times.iter().position(|&t| t == ts).unwrap();
    assert!(session_ts(at) && session_ts(at + 1) && !session_ts(at + 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_answers_at_t_equal_the_training_set_at_t_on_the_embedded_store() {
    parity("  type: sqlite\n  path: data/online_store.db").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_answers_at_t_equal_the_training_set_at_t_on_redis() {
    let redis = RedisServer::start();
    parity(&format!(
        "  type: redis\n  connection_string: \"{}\"",
        redis.url()
    ))
    .await;
}
