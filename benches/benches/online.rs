//! `POST /get-online-features` without sockets: parsing the JSON body (`serving::online`), then the
//! real lookup pipeline (`online::OnlineFeatures`) over a store that answers from memory, and the
//! JSON rendering.

mod support;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiver::clock::ManualClock;
use quiver::metrics::Metrics;
use quiver::online::OnlineFeatures;
use quiver::serving::online::{JsonRequest, render_response};
use quiver::serving::parse_json;

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
        Arc::new(support::MapStore(rows)),
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
