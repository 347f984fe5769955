//! `POST /get-online-features` without sockets: parsing the JSON body (`serving::online`), then the
//! real lookup pipeline (`online::OnlineFeatures`) over a store that answers from memory, and the
//! JSON rendering.

mod support;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiver::clock::ManualClock;
use quiver::metrics::Metrics;
use quiver::online::OnlineFeatures;
use quiver::serving::online::{JsonRequest, render_response};
use quiver::serving::parse_json;
use quiver::store::{FeatureRow, OnlineStore, RowKey, RowWrite, StoreError, WriteOutcome};
use quiver::types::EpochMicros;

/// Answers reads from a map filled up front, so the benchmark measures Quiver's own steps.
struct MemoryRows(HashMap<Vec<u8>, Arc<FeatureRow>>);

#[async_trait]
impl OnlineStore for MemoryRows {
    fn kind(&self) -> &'static str {
        "memory"
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

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("online/parse");
    for n in [1usize, 100] {
        let body = support::request_body(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{n} entities"), |b| {
            b.iter(|| {
                let wire: JsonRequest<'_> = parse_json(black_box(&body)).unwrap();
                black_box(wire.to_request().entities.len())
            })
        });
    }
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let registry = support::registry();
    let view = &registry.feature_views[0];
    let rows = (1..=100)
        .map(|i| {
            let key = quiver::entity_key::EntityKey::new([quiver::entity_key::KeyPart::Str(
                &quickstart::user_id(i),
            )]);
            (
                key.as_bytes().to_vec(),
                Arc::new(support::user_row(i, view.schema_fingerprint)),
            )
        })
        .collect();
    let clock = Arc::new(ManualClock::new(1_767_225_600_000_000));
    let online = OnlineFeatures::new(
        Arc::clone(&registry),
        Arc::new(MemoryRows(rows)),
        clock,
        Arc::new(Metrics::new(&registry)),
        None,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("online/lookup+render");
    for n in [1usize, 100] {
        let body = support::request_body(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{n} entities"), |b| {
            b.iter(|| {
                let wire: JsonRequest<'_> = parse_json(black_box(&body)).unwrap();
                let request = wire.to_request();
                let response = rt.block_on(online.get_online_features(&request)).unwrap();
                black_box(render_response(&request, &response).len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, lookup);
criterion_main!(benches);
