//! A fixed loop of transform calls for instruction-level profiling: the `user_risk` example module
//! called `--calls` times on `--rows` rows, inside the function `measured`, so callgrind can count
//! just the calls (instantiate, encode, run, decode) whatever else the machine is doing:
//!
//! ```text
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*transform_loop::measured*' \
//!     target/release/transform-loop --rows 10 --calls 2000
//! ```

use std::hint::black_box;

use clap::Parser;
use quiver::registry::{Field, Name};
use quiver::transform::{Limits, LoadedModule, TransformEngine};
use quiver::types::{ScalarType, Value, ValueType};

#[derive(Parser, Debug)]
struct Args {
    /// Rows per call.
    #[arg(long, default_value_t = 10)]
    rows: usize,
    /// Calls in the measured loop.
    #[arg(long, default_value_t = 2_000)]
    calls: usize,
}

const INPUTS: [&str; 5] = [
    "avg_order_value_7d",
    "total_orders_30d",
    "account_age_days",
    "fraud_score",
    "amount",
];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let wasm = quiver_tests::wasm::transform_wasm("user_risk");
    let engine = TransformEngine::new()?;
    let module = engine.load("user_risk", &wasm)?;
    let outputs: Vec<Field> = ["order_value_per_order", "amount_over_avg", "risk_score"]
        .into_iter()
        .map(|n| Field {
            name: Name::new(n).expect("a valid name"),
            dtype: ValueType::Scalar(ScalarType::Float64),
        })
        .collect();
    let rows: Vec<Vec<Value>> = (0..args.rows)
        .map(|i| {
            vec![
                Value::Float32(80.0 + i as f32),
                Value::Int(12),
                Value::Int(400),
                Value::Float32(0.08),
                Value::Float64(250.0),
            ]
        })
        .collect();
    let limits = Limits::default();
    // Warm: the first call initializes lazily built state.
    module.call(&INPUTS, &rows, &outputs, &limits)?;
    let started = std::time::Instant::now();
    measured(&module, &rows, &outputs, &limits, args.calls);
    println!(
        "{} calls of {} rows in {:.3}s",
        args.calls,
        args.rows,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The profiled region.
#[inline(never)]
fn measured(
    module: &LoadedModule,
    rows: &[Vec<Value>],
    outputs: &[Field],
    limits: &Limits,
    calls: usize,
) {
    for _ in 0..calls {
        black_box(
            module
                .call(&INPUTS, black_box(rows), outputs, limits)
                .expect("a healthy call"),
        );
    }
}
