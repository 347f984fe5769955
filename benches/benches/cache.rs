//! The L1 hit path: `CachedStore::read` when every key is cached and fresh.

mod support;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiver::cache::CachedStore;
use quiver::clock::system_clock;
use quiver::entity_key::{EntityKey, KeyPart};
use quiver::metrics::Metrics;
use quiver::store::{OnlineStore, RowKey};

fn hits(c: &mut Criterion) {
    let registry = support::registry();
    let fingerprint = registry.feature_views[0].schema_fingerprint;
    let users = 10_000;
    let keys: Vec<EntityKey> = (1..=users)
        .map(|i| EntityKey::new([KeyPart::Str(&quickstart::user_id(i))]))
        .collect();
    let inner = support::MapStore(
        keys.iter()
            .enumerate()
            .map(|(i, k)| {
                (
                    k.as_bytes().to_vec(),
                    Arc::new(support::user_row(i, fingerprint)),
                )
            })
            .collect(),
    );
    let metrics = Metrics::new(&registry);
    let cache = CachedStore::new(
        Arc::new(inner),
        &registry,
        system_clock(),
        metrics.cache.clone(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let all: Vec<RowKey<'_>> = keys
        .iter()
        .map(|entity| RowKey {
            view: "user_features",
            entity,
        })
        .collect();
    rt.block_on(cache.read(&all)).unwrap();
    let mut group = c.benchmark_group("l1/read hit");
    for n in [1usize, 100] {
        group.throughput(Throughput::Elements(n as u64));
        let mut at = 0;
        group.bench_function(format!("{n} keys"), |b| {
            b.iter(|| {
                at = (at + n) % (users - n);
                let rows = rt
                    .block_on(cache.read(black_box(&all[at..at + n])))
                    .unwrap();
                assert!(rows[0].is_some());
                black_box(rows)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hits);
criterion_main!(benches);
