//! A decorator that meters an online store: read latency and failed operations, whether or not
//! the L1 cache sits in front of it.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use crate::metrics::StoreMetrics;
use crate::store::{
    FeatureRow, OnlineStore, RowKey, RowWrite, SharedStore, StoreError, WriteNotices, WriteOutcome,
};
use crate::types::EpochMicros;

/// Wraps a store and records `quiver_store_read_seconds` and `quiver_store_errors_total`.
pub struct MeteredStore {
    inner: SharedStore,
    metrics: StoreMetrics,
}

impl MeteredStore {
    /// Meters `inner`.
    pub fn new(inner: SharedStore, metrics: StoreMetrics) -> Self {
        MeteredStore { inner, metrics }
    }

    fn count<T>(&self, operation: &str, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            self.metrics.errors.with_label_values(&[operation]).inc();
        }
        result
    }
}

#[async_trait]
impl OnlineStore for MeteredStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn read(&self, keys: &[RowKey<'_>]) -> Result<Vec<Option<Arc<FeatureRow>>>, StoreError> {
        let started = Instant::now();
        let result = self.inner.read(keys).await;
        self.metrics
            .read_seconds
            .observe(started.elapsed().as_secs_f64());
        self.count("read", result)
    }

    async fn write(&self, rows: &[RowWrite]) -> Result<WriteOutcome, StoreError> {
        let result = self.inner.write(rows).await;
        self.count("write", result)
    }

    async fn watermark(&self, view: &str) -> Result<Option<EpochMicros>, StoreError> {
        self.inner.watermark(view).await
    }

    async fn set_watermark(&self, view: &str, at: EpochMicros) -> Result<(), StoreError> {
        self.inner.set_watermark(view, at).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn subscribe_writes(&self) -> Result<Option<WriteNotices>, StoreError> {
        self.inner.subscribe_writes().await
    }
}
