//! Shared by the micro-benchmarks: the benchmark registry (not connected) and sample rows.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use quiver::registry::Registry;
use quiver::store::{FeatureRow, OnlineStore, RowKey, RowWrite, StoreError, WriteOutcome};
use quiver::types::{EpochMicros, Value};

/// Rows by entity key, answered from memory, so a benchmark measures Quiver's own steps above the
/// store.
pub struct MapStore(pub HashMap<Vec<u8>, Arc<FeatureRow>>);

#[async_trait]
impl OnlineStore for MapStore {
    fn kind(&self) -> &'static str {
        "map"
    }
    async fn read(&self, keys: &[RowKey<'_>]) -> Result<Vec<Option<Arc<FeatureRow>>>, StoreError> {
        Ok(keys
            .iter()
            .map(|k| self.0.get(k.entity.as_bytes()).cloned())
            .collect())
    }
    async fn write(&self, _: &[RowWrite]) -> Result<WriteOutcome, StoreError> {
        Ok(WriteOutcome::default())
    }
    async fn watermark(&self, _: &str) -> Result<Option<EpochMicros>, StoreError> {
        Ok(None)
    }
    async fn set_watermark(&self, _: &str, _: EpochMicros) -> Result<(), StoreError> {
        Ok(())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The load suite's registry, compiled without connecting to anything.
pub fn registry() -> Arc<Registry> {
    let yaml = quiver_benches::env::registry_yaml(&quiver_benches::env::redis_section(
        "redis://127.0.0.1:1",
    ));
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
