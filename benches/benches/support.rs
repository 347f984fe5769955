//! Shared by the micro-benchmarks: the benchmark registry (not connected) and sample rows.

#![allow(dead_code)]

use std::sync::Arc;

use quiver::registry::Registry;
use quiver::store::FeatureRow;
use quiver::types::Value;

/// The load suite's registry, compiled without connecting to anything.
pub fn registry() -> Arc<Registry> {
    let yaml = quiver_benches::env::registry_yaml("redis://127.0.0.1:1");
    Arc::new(
        quiver::config::load_str(&yaml, std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// A `user_features` row as the quickstart data has them.
pub fn user_row(i: usize, fingerprint: u32) -> FeatureRow {
    FeatureRow {
        event_ts: 1_767_225_600_000_000 - (i as i64 % 3600) * 1_000_000,
        created_ts: 1_767_225_600_000_000,
        schema_fingerprint: fingerprint,
        values: vec![
            Value::Float32(123.45 + i as f32),
            Value::Int(17),
            Value::String("electronics".into()),
            Value::Int(812),
            Value::Float32(0.087),
        ],
    }
}

/// `{"features": [5 features], "entities": {"user_id": [n users]}}`.
pub fn request_body(n: usize) -> Vec<u8> {
    let ids: Vec<String> = (1..=n).map(quickstart::user_id).collect();
    serde_json::to_vec(&serde_json::json!({
        "features": quiver_benches::env::FEATURES_5,
        "entities": {"user_id": ids},
    }))
    .unwrap()
}
