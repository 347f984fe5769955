//! The rendering of one lookup's answer alone, JSON against Arrow, in one run:
//!
//! ```sh
//! target/release/render-loop --entities 100 --features 250
//! ```
//!
//! Builds an [`OnlineResponse`] of `--entities` rows x `--features` float64 features (every cell
//! PRESENT, one stored row per entity shared by the features of a view of 10, as a lookup answers
//! it), then renders it `--renders` times with `serving::online::render_response` (JSON) and with
//! `serving::arrow_response::render_arrow` (the Arrow IPC stream), alternating rounds, and prints
//! the time per render and the answer size of each. No store, no HTTP: what `vs-feast --arrow`
//! measures end to end, less everything but the rendering.

use std::borrow::Cow;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use quiver::online::{Cell, FeatureColumn, FeatureStatus, OnlineResponse};
use quiver::serving::arrow_response::render_arrow;
use quiver::serving::online::{JsonRequest, render_response};
use quiver::store::FeatureRow;
use quiver::types::{ScalarType, Value, ValueType};

#[derive(Parser, Debug)]
#[command(about = "render one lookup's answer as JSON and as Arrow, and time both")]
struct Args {
    /// Entity rows of the answer.
    #[arg(long, default_value_t = 100)]
    entities: usize,
    /// float64 features of the answer.
    #[arg(long, default_value_t = 250)]
    features: usize,
    /// Renders per format (split into 10 alternating rounds).
    #[arg(long, default_value_t = 2000)]
    renders: usize,
}

/// Features per view, as in the `wide` views of `vs-feast`.
const PER_VIEW: usize = 10;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let registry = quiver::config::load_str(
        r#"project: render
online_store:
  type: sqlite
  path: online.db
entities:
  - name: driver
    join_keys: [driver_id]
    value_type: int64
feature_views:
  - name: wide
    entities: [driver]
    schema:
      - { name: f, dtype: float64 }
    source:
      path: wide.parquet
      timestamp_field: event_timestamp
"#,
        dir.path(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ids: Vec<u64> = (1001..1001 + args.entities as u64).collect();
    let body = serde_json::to_vec(&serde_json::json!({
        "features": ["wide:f"],
        "entities": {"driver_id": ids},
    }))?;
    let wire: JsonRequest<'_> = serde_json::from_slice(&body)?;
    let request = wire.to_request();

    let now = 1_767_225_600_000_000;
    let views = args.features.div_ceil(PER_VIEW);
    // One stored row per (view, entity), its values shared by the view's features.
    let rows: Vec<Vec<Arc<FeatureRow>>> = (0..views)
        .map(|v| {
            (0..args.entities)
                .map(|e| {
                    Arc::new(FeatureRow {
                        event_ts: now - (e * 37 + v) as i64 * 1_000_000,
                        created_ts: now,
                        schema_fingerprint: 0,
                        values: (0..PER_VIEW)
                            .map(|f| Value::Float64((e * PER_VIEW + f) as f64 * 0.37))
                            .collect(),
                    })
                })
                .collect()
        })
        .collect();
    let names: Vec<String> = (0..args.features)
        .map(|f| format!("v{:02}_f{}", f / PER_VIEW, f % PER_VIEW))
        .collect();
    let features = names
        .iter()
        .enumerate()
        .map(|(f, name)| FeatureColumn {
            name: Cow::Borrowed(name.as_str()),
            dtype: ValueType::Scalar(ScalarType::Float64),
            cells: rows[f / PER_VIEW]
                .iter()
                .map(|row| Cell {
                    row: Some(Arc::clone(row)),
                    index: f % PER_VIEW,
                    status: FeatureStatus::Present,
                    event_ts: row.event_ts,
                })
                .collect(),
            computed: None,
        })
        .collect();
    let response = OnlineResponse {
        echoed: vec![true],
        features,
        request_id: None,
    };

    let json_bytes = render_response(&request, &response).len();
    let arrow_bytes = render_arrow(&registry, &request, &response)?.len();
    let (mut json, mut arrow) = (Duration::ZERO, Duration::ZERO);
    let rounds = 10;
    let per_round = args.renders.div_ceil(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        for _ in 0..per_round {
            black_box(render_response(black_box(&request), black_box(&response)));
        }
        json += started.elapsed();
        let started = Instant::now();
        for _ in 0..per_round {
            black_box(render_arrow(
                &registry,
                black_box(&request),
                black_box(&response),
            )?);
        }
        arrow += started.elapsed();
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / (rounds * per_round) as f64;
    println!(
        "{} x {} answer, {} renders each: JSON {:.1} µs/render, {} bytes; Arrow {:.1} µs/render, {} bytes",
        args.entities,
        args.features,
        rounds * per_round,
        per(json),
        json_bytes,
        per(arrow),
        arrow_bytes,
    );
    Ok(())
}
