//! Request parsing and response encoding of `POST /get-online-features` (`serving::online`).

mod support;

use std::borrow::Cow;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiver::registry::FeatureRef;
use quiver::serving::online::{
    Cell, EntityRows, FeatureColumn, OnlineRequest, ServingPlan, entity_keys, read_keys,
    render_response,
};
use quiver::serving::parse_json;

fn parse(c: &mut Criterion) {
    let registry = support::registry();
    let plan = ServingPlan::new(Arc::clone(&registry));
    let mut group = c.benchmark_group("online/parse");
    for n in [1usize, 100] {
        let body = support::request_body(n);
        group.throughput(Throughput::Elements(n as u64));
        // What the handler does before the store read: JSON, feature resolution, entity keys.
        group.bench_function(format!("{n} entities"), |b| {
            b.iter(|| {
                let request: OnlineRequest<'_> = parse_json(black_box(&body)).unwrap();
                let selection = plan.select(&request).unwrap();
                let rows = EntityRows::new(&request.entities, 10_000).unwrap();
                let g = plan.view_key_group[selection.views[0]];
                let keys = vec![Some(
                    entity_keys(&rows, &plan.key_groups[g], "user_features").unwrap(),
                )];
                let read = read_keys(&registry, &selection, &plan, &keys, rows.len);
                black_box(read.len())
            })
        });
    }
    group.finish();
}

fn render(c: &mut Criterion) {
    let registry = support::registry();
    let plan = ServingPlan::new(Arc::clone(&registry));
    let view = &registry.feature_views[0];
    let now = 1_767_225_600_000_000;
    let mut group = c.benchmark_group("online/render");
    for n in [1usize, 100] {
        let body = support::request_body(n);
        let request: OnlineRequest<'_> = parse_json(&body).unwrap();
        let rows = EntityRows::new(&request.entities, 10_000).unwrap();
        let stored: Vec<_> = (0..n)
            .map(|i| Arc::new(support::user_row(i, view.schema_fingerprint)))
            .collect();
        let selection = plan.select(&request).unwrap();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{n} entities"), |b| {
            b.iter(|| {
                // Cells as the handler builds them, then the JSON.
                let columns: Vec<FeatureColumn<'_>> = selection
                    .refs
                    .iter()
                    .map(|r| {
                        let FeatureRef::View { field, .. } = *r else {
                            unreachable!("features of a view")
                        };
                        FeatureColumn {
                            name: Cow::Borrowed(view.fields[field].name.as_str()),
                            dtype: view.fields[field].dtype,
                            cells: stored
                                .iter()
                                .map(|row| Cell {
                                    status: view.rule.status(
                                        Some(row.meta()),
                                        row.values[field].is_null(),
                                        now,
                                    ),
                                    event_ts: row.event_ts,
                                    row: Some(Arc::clone(row)),
                                    index: field,
                                })
                                .collect(),
                            computed: None,
                        }
                    })
                    .collect();
                black_box(render_response(&rows, &columns).len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, render);
criterion_main!(benches);
