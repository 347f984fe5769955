//! The Redis record codec (`store::codec`) and key layout (`store::redis::record_key`).

mod support;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use quiver::entity_key::{EntityKey, KeyPart};
use quiver::store::codec::{decode_row, encode_row};
use quiver::store::redis::record_key;

fn codec(c: &mut Criterion) {
    let row = support::user_row(7, 0xdead_beef);
    let bytes = encode_row(&row);
    c.bench_function("codec/encode_row (5 values)", |b| {
        b.iter(|| black_box(encode_row(black_box(&row))))
    });
    c.bench_function("codec/decode_row (5 values)", |b| {
        b.iter(|| black_box(decode_row(black_box(&bytes)).unwrap()))
    });
    let user = quickstart::user_id(4242);
    let entity = EntityKey::new([KeyPart::Str(&user)]);
    c.bench_function("codec/record_key", |b| {
        b.iter(|| {
            black_box(record_key(
                "bench",
                "user_features",
                black_box(entity.as_bytes()),
            ))
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
