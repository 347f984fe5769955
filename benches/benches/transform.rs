//! One on-demand transform (the `user_risk` example built to wasm): compile, instantiate and call
//! measured separately.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiver::registry::{Field, Name};
use quiver::transform::{Limits, TransformEngine};
use quiver::types::{ScalarType, Value, ValueType};

const INPUTS: [&str; 5] = [
    "avg_order_value_7d",
    "total_orders_30d",
    "account_age_days",
    "fraud_score",
    "amount",
];

fn outputs() -> Vec<Field> {
    ["order_value_per_order", "amount_over_avg", "risk_score"]
        .into_iter()
        .map(|n| Field {
            name: Name::new(n).unwrap(),
            dtype: ValueType::Scalar(ScalarType::Float64),
        })
        .collect()
}

fn rows(n: usize) -> Vec<Vec<Value>> {
    (0..n)
        .map(|i| {
            vec![
                Value::Float32(80.0 + i as f32),
                Value::Int(12),
                Value::Int(400),
                Value::Float32(0.08),
                Value::Float64(250.0),
            ]
        })
        .collect()
}

fn transform(c: &mut Criterion) {
    let wasm = quiver_tests::wasm::transform_wasm("user_risk");
    let engine = TransformEngine::new().unwrap();
    // The defaults: fuel metering on, as in serving.
    let limits = Limits::default();
    let mut group = c.benchmark_group("transform/user_risk");
    group.sample_size(10);
    group.bench_function("compile (load)", |b| {
        b.iter(|| black_box(engine.load("user_risk", black_box(&wasm)).unwrap()))
    });
    group.finish();

    let module = engine.load("user_risk", &wasm).unwrap();
    let output = outputs();
    let mut group = c.benchmark_group("transform/user_risk");
    group.bench_function("instantiate", |b| {
        b.iter(|| module.instantiate(&limits).unwrap())
    });
    for n in [1usize, 10, 100] {
        let input = rows(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(
            format!("call {n} rows (instantiate + encode + run + decode)"),
            |b| {
                b.iter(|| {
                    black_box(
                        module
                            .call(&INPUTS, black_box(&input), &output, &limits)
                            .unwrap(),
                    )
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, transform);
criterion_main!(benches);
