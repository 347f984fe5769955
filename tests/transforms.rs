//! The transform engine against real modules: the example transforms built to wasm32, and
//! hostile or broken modules written in WAT. Every failure must be contained: after it, the
//! same engine still runs a good module.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use quiver::registry::{Field, Name};
use quiver::transform::{
    Limits, LoadLimits, LoadedModule, ModuleCatalog, TransformEngine, TransformError,
};
use quiver::types::{ScalarType, Value, ValueType};
use quiver_tests::wasm::{
    module_with_functions, rows_module_failing_on, sha256_hex, transform_wasm, wat_module,
};

const USER_RISK_INPUTS: [&str; 5] = [
    "avg_order_value_7d",
    "total_orders_30d",
    "account_age_days",
    "fraud_score",
    "amount",
];

fn engine() -> TransformEngine {
    TransformEngine::new().expect("engine")
}

/// The defaults: fuel decides, the wall-clock backstop is generous.
fn limits() -> Limits {
    Limits::default()
}

fn field(name: &str, t: ScalarType) -> Field {
    Field {
        name: Name::new(name).unwrap(),
        dtype: ValueType::Scalar(t),
    }
}

fn user_risk_outputs() -> Vec<Field> {
    vec![
        field("order_value_per_order", ScalarType::Float64),
        field("amount_over_avg", ScalarType::Float64),
        field("risk_score", ScalarType::Float64),
    ]
}

/// The real user_risk module, compiled once per test process.
fn user_risk_module() -> Arc<LoadedModule> {
    static MODULE: OnceLock<Arc<LoadedModule>> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            engine()
                .load("user_risk", &transform_wasm("user_risk"))
                .unwrap()
        })
        .clone()
}

fn user_risk_row(input: &user_risk::Input) -> Vec<Value> {
    vec![
        input.avg_order_value_7d.map_or(Value::Null, Value::Float32),
        input.total_orders_30d.map_or(Value::Null, Value::Int),
        input.account_age_days.map_or(Value::Null, Value::Int),
        input.fraud_score.map_or(Value::Null, Value::Float32),
        Value::Float64(input.amount),
    ]
}

fn native_user_risk(input: &user_risk::Input) -> Vec<Value> {
    let out = user_risk::user_risk(input.clone());
    [
        out.order_value_per_order,
        out.amount_over_avg,
        out.risk_score,
    ]
    .into_iter()
    .map(|v| v.map_or(Value::Null, Value::Float64))
    .collect()
}

/// Runs the good module on one row: the engine must still work after whatever came before.
fn assert_engine_still_runs_a_good_module() {
    let input = user_risk::Input {
        avg_order_value_7d: Some(50.0),
        total_orders_30d: Some(9),
        account_age_days: Some(30),
        fraud_score: Some(0.5),
        amount: 100.0,
    };
    let out = user_risk_module()
        .call(
            &USER_RISK_INPUTS,
            &[user_risk_row(&input)],
            &user_risk_outputs(),
            &limits(),
        )
        .expect("the good module still runs");
    assert_eq!(
        out,
        vec![vec![
            Value::Float64(10.0),
            Value::Float64(2.0),
            Value::Float64(0.5)
        ]]
    );
}

/// A module whose output is the given bytes, placed at offset 16.
fn module_returning(bytes: &[u8]) -> Vec<u8> {
    let escaped: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
    wat_module(
        &format!(r#"(data (i32.const 16) "{escaped}")"#),
        &format!(
            "(i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const {}))",
            bytes.len()
        ),
    )
}

/// Loads a fixture and calls it with one row of one column.
fn call_fixture(
    wasm: &[u8],
    output: &[Field],
    limits: &Limits,
) -> Result<Vec<Vec<Value>>, TransformError> {
    let module = engine().load("fixture", wasm)?;
    module.call(&["x"], &[vec![Value::Int(1)]], output, limits)
}

fn one_float_output() -> Vec<Field> {
    vec![field("x", ScalarType::Float64)]
}

// ---- the real modules -------------------------------------------------------------------

#[test]
fn the_user_risk_module_matches_the_native_function_bit_for_bit() {
    let mut inputs = vec![
        user_risk::Input {
            avg_order_value_7d: Some(50.0),
            total_orders_30d: Some(9),
            account_age_days: Some(30),
            fraud_score: Some(0.5),
            amount: 100.0,
        },
        user_risk::Input {
            avg_order_value_7d: Some(0.0),
            total_orders_30d: Some(-3),
            account_age_days: Some(-1),
            fraud_score: Some(1.0),
            amount: -5.0,
        },
        user_risk::Input {
            avg_order_value_7d: Some(f32::MAX),
            total_orders_30d: Some(i64::MAX),
            account_age_days: Some(i64::MIN),
            fraud_score: Some(f32::MIN_POSITIVE),
            amount: f64::MAX,
        },
    ];
    // A deterministic spread of values and missing inputs.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let r = next();
        let some = |bit: u64| r & (1 << bit) != 0;
        inputs.push(user_risk::Input {
            avg_order_value_7d: some(0).then(|| (next() % 100_000) as f32 / 7.0),
            total_orders_30d: some(1).then(|| (next() % 500) as i64),
            account_age_days: some(2).then(|| (next() % 4000) as i64),
            fraud_score: some(3).then(|| (next() % 1000) as f32 / 999.0),
            amount: (next() % 10_000_000) as f64 / 100.0,
        });
    }
    let rows: Vec<Vec<Value>> = inputs.iter().map(user_risk_row).collect();
    let out = user_risk_module()
        .call(&USER_RISK_INPUTS, &rows, &user_risk_outputs(), &limits())
        .unwrap();
    assert_eq!(out.len(), inputs.len());
    for (i, (input, wasm)) in inputs.iter().zip(&out).enumerate() {
        let native = native_user_risk(input);
        assert!(
            native.iter().zip(wasm).all(|(a, b)| a.bit_eq(b)),
            "row {i}: {input:?}\nnative {native:?}\nwasm   {wasm:?}"
        );
    }
}

#[test]
fn missing_inputs_arrive_as_none_whether_null_or_absent() {
    let outputs = user_risk_outputs();
    let module = user_risk_module();
    let nulls = module
        .call(
            &USER_RISK_INPUTS,
            &[vec![
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Float64(10.0),
            ]],
            &outputs,
            &limits(),
        )
        .unwrap();
    let absent = module
        .call(
            &["amount"],
            &[vec![Value::Float64(10.0)]],
            &outputs,
            &limits(),
        )
        .unwrap();
    let none = vec![vec![Value::Null, Value::Null, Value::Null]];
    assert_eq!(nulls, none);
    assert_eq!(absent, none);
}

#[test]
fn the_order_stats_module_returns_typed_outputs_in_field_order() {
    let module = engine()
        .load("order_stats", &transform_wasm("order_stats"))
        .unwrap();
    // Declared in the opposite order to the struct's fields.
    let outputs = vec![
        field("is_new_account", ScalarType::Bool),
        field("orders_per_account_day", ScalarType::Float64),
    ];
    let out = module
        .call(
            &["total_orders_30d", "account_age_days"],
            &[
                vec![Value::Int(10), Value::Int(5)],
                vec![Value::Null, Value::Int(400)],
            ],
            &outputs,
            &limits(),
        )
        .unwrap();
    assert_eq!(
        out,
        vec![
            vec![Value::Bool(true), Value::Float64(2.0)],
            vec![Value::Bool(false), Value::Null],
        ]
    );
}

#[test]
fn an_input_that_does_not_fit_the_transforms_input_type_is_a_guest_error() {
    // `amount` is required (not an Option) in user_risk's input.
    let err = user_risk_module()
        .call(
            &["fraud_score"],
            &[vec![Value::Float32(0.5)]],
            &user_risk_outputs(),
            &limits(),
        )
        .unwrap_err();
    match &err {
        TransformError::Guest { module, message } => {
            assert_eq!(module, "user_risk");
            assert!(message.contains("amount"), "{message}");
            assert!(message.contains("row 0"), "{message}");
        }
        other => panic!("expected a guest error, got {other:?}"),
    }
    assert_engine_still_runs_a_good_module();
}

#[test]
fn nan_results_have_one_canonical_bit_pattern() {
    let mut row = user_risk_row(&user_risk::Input {
        avg_order_value_7d: Some(50.0),
        total_orders_30d: Some(9),
        account_age_days: Some(30),
        fraud_score: None,
        amount: 100.0,
    });
    // A NaN with a payload and the sign bit set.
    row[3] = Value::Float32(f32::from_bits(0xffc0_1234));
    let out = user_risk_module()
        .call(&USER_RISK_INPUTS, &[row], &user_risk_outputs(), &limits())
        .unwrap();
    match out[0][2] {
        Value::Float64(score) => assert_eq!(score.to_bits(), 0x7ff8_0000_0000_0000),
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn an_empty_batch_returns_no_rows() {
    let out = user_risk_module()
        .call(&USER_RISK_INPUTS, &[], &user_risk_outputs(), &limits())
        .unwrap();
    assert!(out.is_empty());
}

#[test]
fn rows_narrower_than_the_input_names_are_rejected() {
    let err = user_risk_module()
        .call(
            &USER_RISK_INPUTS,
            &[vec![Value::Null]],
            &user_risk_outputs(),
            &limits(),
        )
        .unwrap_err();
    assert!(matches!(err, TransformError::InvalidInput { .. }), "{err}");
}

#[test]
fn a_loaded_module_reports_its_name_and_hash() {
    let module = user_risk_module();
    assert_eq!(module.name, "user_risk");
    assert_eq!(module.sha256.len(), 64);
    assert!(module.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
}

// ---- hostile and broken modules --------------------------------------------------------

#[test]
fn an_infinite_loop_runs_out_of_fuel_identically_in_every_run() {
    let wasm = wat_module("", "(loop $l (br $l)) (i64.const 0)");
    let module = engine().load("fixture", &wasm).unwrap();
    let started = Instant::now();
    let errors: Vec<TransformError> = (0..3)
        .map(|_| {
            module
                .call(
                    &["x"],
                    &[vec![Value::Int(1)]],
                    &one_float_output(),
                    &limits(),
                )
                .unwrap_err()
        })
        .collect();
    for err in &errors {
        assert_eq!(
            *err,
            TransformError::OutOfFuel {
                module: "fixture".into(),
                limit: limits().fuel_for(1)
            }
        );
    }
    // Bounded, not measured: the loop must not run on for long.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_engine_still_runs_a_good_module();
}

#[test]
fn the_wall_clock_backstop_still_stops_a_call_with_unbounded_fuel() {
    let wasm = wat_module("", "(loop $l (br $l)) (i64.const 0)");
    let limits = Limits {
        fuel_per_call: u64::MAX,
        timeout: Duration::from_millis(50),
        ..limits()
    };
    let started = Instant::now();
    let err = call_fixture(&wasm, &one_float_output(), &limits).unwrap_err();
    assert_eq!(
        err,
        TransformError::Timeout {
            module: "fixture".into(),
            limit: Duration::from_millis(50)
        }
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_engine_still_runs_a_good_module();
}

/// Typical inputs of user_risk, all fields present, varying per row.
fn user_risk_rows(n: usize) -> Vec<Vec<Value>> {
    (0..n)
        .map(|i| {
            user_risk_row(&user_risk::Input {
                avg_order_value_7d: Some(80.0 + i as f32),
                total_orders_30d: Some(12 + i as i64 % 7),
                account_age_days: Some(400),
                fraud_score: Some(0.08),
                amount: 250.0 + i as f64,
            })
        })
        .collect()
}

/// The least `fuel_per_call` (with no per-row fuel) under which `call` succeeds.
fn least_fuel(call: impl Fn(&Limits) -> bool) -> u64 {
    let (mut lo, mut hi) = (0u64, 1u64 << 36);
    while hi - lo > hi / 100 {
        let mid = lo + (hi - lo) / 2;
        let limits = Limits {
            fuel_per_call: mid,
            fuel_per_row: 0,
            ..limits()
        };
        if call(&limits) { hi = mid } else { lo = mid }
    }
    hi
}

#[test]
fn the_default_fuel_leaves_the_example_transforms_ten_times_their_need_on_4096_row_batches() {
    let stats = engine()
        .load("order_stats", &transform_wasm("order_stats"))
        .unwrap();
    let stats_fields = [
        field("orders_per_account_day", ScalarType::Float64),
        field("is_new_account", ScalarType::Bool),
    ];
    let rows = user_risk_rows(4096);
    let risk = |rows: &[Vec<Value>], l: &Limits| {
        user_risk_module()
            .call(&USER_RISK_INPUTS, rows, &user_risk_outputs(), l)
            .is_ok()
    };
    let order_stats = |rows: &[Vec<Value>], l: &Limits| {
        stats
            .call(&USER_RISK_INPUTS, rows, &stats_fields, l)
            .is_ok()
    };
    for (name, call) in [
        (
            "user_risk",
            &risk as &dyn Fn(&[Vec<Value>], &Limits) -> bool,
        ),
        ("order_stats", &order_stats),
    ] {
        let one = least_fuel(|l| call(&rows[..1], l));
        let batch = least_fuel(|l| call(&rows, l));
        let per_row = (batch - one) / 4095;
        eprintln!("{name}: {one} fuel for 1 row, {batch} for 4096 rows (~{per_row} per row)");
        let tenth = Limits {
            fuel_per_call: limits().fuel_per_call / 10,
            fuel_per_row: limits().fuel_per_row / 10,
            ..limits()
        };
        assert!(
            call(&rows[..1], &tenth),
            "{name}: 1 row within a tenth of the default fuel"
        );
        assert!(
            call(&rows, &tenth),
            "{name}: 4096 rows within a tenth of the default fuel"
        );
    }
}

#[test]
fn calls_of_a_healthy_module_pass_while_every_core_is_saturated() {
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let burners: Vec<_> = (0..cores * 2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let module = user_risk_module();
    let rows = user_risk_rows(100);
    let failures: Vec<TransformError> = (0..200)
        .filter_map(|i| {
            let batch = &rows[..1 + i % 100];
            module
                .call(&USER_RISK_INPUTS, batch, &user_risk_outputs(), &limits())
                .err()
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    for b in burners {
        b.join().unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} calls failed: {:?}",
        failures.len(),
        failures.first()
    );
}

// ---- failures isolated to their rows ------------------------------------------------------

/// `{"x": 1.0}`, encoded.
const X_IS_ONE: &[u8] = &[0x81, 0xa1, b'x', 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0];

/// Returns `[{"x": 1.0}, ...]`, one row per input row, but traps when its input holds the
/// string "bad" anywhere: a transform that fails on one particular input value.
fn fails_on_bad() -> Vec<u8> {
    rows_module_failing_on(&[0xa3, b'b', b'a', b'd'], false, X_IS_ONE, "unreachable")
}

fn string_rows(values: &[&str]) -> Vec<Vec<Value>> {
    values
        .iter()
        .map(|v| vec![Value::String((*v).into())])
        .collect()
}

#[test]
fn a_row_that_traps_fails_alone_and_the_other_rows_of_its_batch_succeed() {
    let module = engine().load("fixture", &fails_on_bad()).unwrap();
    let rows = string_rows(&["ok", "bad", "fine", "bad", "good"]);
    let whole = module.call(&["x"], &rows, &one_float_output(), &limits());
    assert!(
        matches!(whole, Err(TransformError::Trap { .. })),
        "{whole:?}"
    );

    let results = module
        .call_isolating(&["x"], &rows, &one_float_output(), &limits())
        .unwrap();
    assert!(matches!(
        results.batch_error,
        Some(TransformError::Trap { .. })
    ));
    let failed: Vec<bool> = results.rows.iter().map(Result::is_err).collect();
    assert_eq!(failed, [false, true, false, true, false]);
    assert_eq!(results.failed(), 2);
    assert_eq!(
        results.rows[0].as_ref().unwrap(),
        &vec![Value::Float64(1.0)]
    );
}

#[test]
fn which_rows_fail_does_not_depend_on_the_batch_size() {
    let module = engine().load("fixture", &fails_on_bad()).unwrap();
    let values: Vec<&str> = (0..20)
        .map(|i| if i % 7 == 3 { "bad" } else { "ok" })
        .collect();
    let rows = string_rows(&values);
    let expected: Vec<bool> = values.iter().map(|v| *v == "bad").collect();
    for batch in [1, 2, 3, 8, 20] {
        let failed: Vec<bool> = rows
            .chunks(batch)
            .flat_map(|chunk| {
                module
                    .call_isolating(&["x"], chunk, &one_float_output(), &limits())
                    .unwrap()
                    .rows
                    .into_iter()
                    .map(|r| r.is_err())
            })
            .collect();
        assert_eq!(failed, expected, "batches of {batch}");
    }
}

#[test]
fn a_row_that_loops_runs_out_of_fuel_alone_and_the_other_rows_succeed() {
    let wasm = rows_module_failing_on(
        &[0xa3, b'b', b'a', b'd'],
        false,
        X_IS_ONE,
        "(loop $spin (br $spin))",
    );
    let module = engine().load("fixture", &wasm).unwrap();
    let rows = string_rows(&["ok", "bad", "fine", "good", "bad"]);
    let results = module
        .call_isolating(&["x"], &rows, &one_float_output(), &limits())
        .unwrap();
    assert!(matches!(
        results.batch_error,
        Some(TransformError::OutOfFuel { .. })
    ));
    let failed: Vec<bool> = results.rows.iter().map(Result::is_err).collect();
    assert_eq!(failed, [false, true, false, false, true]);
    assert!(matches!(
        results.rows[1],
        Err(TransformError::OutOfFuel { .. })
    ));
}

#[test]
fn a_module_that_loops_on_every_row_is_bounded_by_its_isolation_fuel() {
    let wasm = wat_module("", "(loop $l (br $l)) (i64.const 0)");
    let module = engine().load("fixture", &wasm).unwrap();
    let rows: Vec<Vec<Value>> = (0..50).map(|i| vec![Value::Int(i)]).collect();
    let started = Instant::now();
    let results = module
        .call_isolating(&["x"], &rows, &one_float_output(), &limits())
        .unwrap();
    assert_eq!(results.failed(), 50);
    assert!(
        results
            .rows
            .iter()
            .all(|r| matches!(r, Err(TransformError::OutOfFuel { .. })))
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn the_expected_fuel_follows_what_calls_spent_and_never_exceeds_the_budget() {
    let module = engine().load("fixture", &fails_on_bad()).unwrap();
    let limits = limits();
    let bound = LoadedModule::isolating_fuel_bound(&limits, 10);
    // Before any call: the whole budget.
    assert_eq!(module.expected_fuel(&limits, 10), bound);

    // Cheap rows: the expectation drops to what they cost, far below the budget.
    module
        .call_isolating(
            &["x"],
            &string_rows(&["ok"; 10]),
            &one_float_output(),
            &limits,
        )
        .unwrap();
    let cheap = module.expected_fuel(&limits, 10);
    assert!(cheap > 0 && cheap < bound / 10, "{cheap} of {bound}");

    // A batch with a failing row is retried row by row: what the retries spent counts, so the
    // expectation rises, but never past the budget.
    module
        .call_isolating(
            &["x"],
            &string_rows(&["ok", "bad", "ok"]),
            &one_float_output(),
            &limits,
        )
        .unwrap();
    let after_retries = module.expected_fuel(&limits, 10);
    assert!(after_retries > cheap, "{after_retries} after {cheap}");
    assert!(after_retries <= bound);
}

#[test]
fn growing_memory_past_the_limit_is_out_of_memory() {
    let wasm = wat_module(
        "",
        "(loop $l (drop (memory.grow (i32.const 1))) (br $l)) (i64.const 0)",
    );
    let limits = Limits {
        max_memory_bytes: 1 << 20,
        ..limits()
    };
    let err = call_fixture(&wasm, &one_float_output(), &limits).unwrap_err();
    assert_eq!(
        err,
        TransformError::OutOfMemory {
            module: "fixture".into(),
            limit_bytes: 1 << 20
        }
    );
    assert_engine_still_runs_a_good_module();
}

#[test]
fn an_initial_memory_above_the_limit_is_out_of_memory() {
    let text = r#"(module
        (memory (export "memory") 100)
        (func (export "quiver_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "quiver_dealloc") (param i32 i32))
        (func (export "quiver_transform") (param i32 i32) (result i64) (i64.const 0)))"#;
    let wasm = wat::parse_str(text).unwrap();
    let limits = Limits {
        max_memory_bytes: 1 << 20,
        ..limits()
    };
    let err = call_fixture(&wasm, &one_float_output(), &limits).unwrap_err();
    assert!(matches!(err, TransformError::OutOfMemory { .. }), "{err}");
    assert_engine_still_runs_a_good_module();
}

#[test]
fn unreachable_is_a_trap() {
    let wasm = wat_module("", "unreachable");
    let err = call_fixture(&wasm, &one_float_output(), &limits()).unwrap_err();
    match &err {
        TransformError::Trap { module, message } => {
            assert_eq!(module, "fixture");
            assert!(message.contains("unreachable"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_engine_still_runs_a_good_module();
}

#[test]
fn an_out_of_bounds_access_is_a_trap() {
    let wasm = wat_module("", "(drop (i32.load (i32.const 0x7fffffff))) (i64.const 0)");
    let err = call_fixture(&wasm, &one_float_output(), &limits()).unwrap_err();
    assert!(matches!(err, TransformError::Trap { .. }), "{err}");
    assert_engine_still_runs_a_good_module();
}

#[test]
fn a_module_built_for_another_abi_version_is_an_abi_mismatch() {
    let wasm = wat_module(
        r#"(import "quiver:abi/v2" "quiver_error" (func (param i32 i32)))"#,
        "(i64.const 0)",
    );
    let err = engine().load("old", &wasm).unwrap_err();
    assert_eq!(
        err,
        TransformError::AbiMismatch {
            module: "old".into(),
            found: "quiver:abi/v2".into(),
            expected: "quiver:abi/v1".into()
        }
    );
    assert!(err.to_string().contains("rebuild"), "{err}");
    assert_engine_still_runs_a_good_module();
}

#[test]
fn a_wasi_import_is_forbidden() {
    let wasm = wat_module(
        r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
        "(i64.const 0)",
    );
    let err = engine().load("wasi", &wasm).unwrap_err();
    assert_eq!(
        err,
        TransformError::ForbiddenImport {
            module: "wasi".into(),
            import: "wasi_snapshot_preview1::fd_write".into()
        }
    );
    assert_engine_still_runs_a_good_module();
}

#[test]
fn an_unknown_function_in_the_abi_module_is_forbidden() {
    let wasm = wat_module(
        r#"(import "quiver:abi/v1" "read_clock" (func (result i64)))"#,
        "(i64.const 0)",
    );
    let err = engine().load("clock", &wasm).unwrap_err();
    assert!(
        matches!(err, TransformError::ForbiddenImport { .. }),
        "{err}"
    );
}

#[test]
fn garbage_output_bytes_are_bad_output() {
    let wasm = module_returning(&[0xc1, 0xc1, 0xc1, 0xc1]);
    let err = call_fixture(&wasm, &one_float_output(), &limits()).unwrap_err();
    assert!(matches!(err, TransformError::BadOutput { .. }), "{err}");
    assert_engine_still_runs_a_good_module();
}

#[test]
fn an_output_pointer_outside_memory_is_bad_output() {
    let wasm = wat_module("", "(i64.const 0x7fff000000000010)");
    let err = call_fixture(&wasm, &one_float_output(), &limits()).unwrap_err();
    assert!(matches!(err, TransformError::BadOutput { .. }), "{err}");
    assert_engine_still_runs_a_good_module();
}

#[test]
fn the_wrong_number_of_output_rows_is_bad_output() {
    // An empty array for one input row.
    let wasm = module_returning(&[0x90]);
    let err = call_fixture(&wasm, &one_float_output(), &limits()).unwrap_err();
    match &err {
        TransformError::BadOutput { message, .. } => {
            assert!(message.contains("0 rows for 1"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bytes_that_are_not_wasm_are_an_invalid_module() {
    let err = engine().load("text", b"hello, world").unwrap_err();
    assert!(matches!(err, TransformError::InvalidModule { .. }), "{err}");
    let err = engine()
        .load("truncated", b"\0asm\x01\0\0\0\x01")
        .unwrap_err();
    assert!(matches!(err, TransformError::InvalidModule { .. }), "{err}");
    assert_engine_still_runs_a_good_module();
}

#[test]
fn a_module_without_the_abi_exports_is_an_invalid_module() {
    let wasm = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
    match engine().load("bare", &wasm).unwrap_err() {
        TransformError::InvalidModule { message, .. } => {
            assert!(message.contains("quiver_alloc"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let wasm = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func (export "quiver_alloc") (param i32) (result i32) (i32.const 0))
            (func (export "quiver_dealloc") (param i32 i32))
            (func (export "quiver_transform") (param i32 i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    match engine().load("typed", &wasm).unwrap_err() {
        TransformError::InvalidModule { message, .. } => {
            assert!(message.contains("quiver_transform"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_output_missing_a_declared_field_is_a_schema_mismatch_naming_it() {
    // [{"x": 1.5}] with fields x and y declared.
    let mut bytes = vec![0x91, 0x81, 0xa1, b'x', 0xcb];
    bytes.extend_from_slice(&1.5f64.to_be_bytes());
    let wasm = module_returning(&bytes);
    let outputs = vec![
        field("x", ScalarType::Float64),
        field("y", ScalarType::Float64),
    ];
    match call_fixture(&wasm, &outputs, &limits()).unwrap_err() {
        TransformError::SchemaMismatch { field, message, .. } => {
            assert_eq!(field, "y");
            assert!(message.contains("missing"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_engine_still_runs_a_good_module();
}

#[test]
fn an_integer_for_a_float_field_is_a_schema_mismatch_naming_it() {
    // [{"x": 3}]
    let wasm = module_returning(&[0x91, 0x81, 0xa1, b'x', 0x03]);
    match call_fixture(&wasm, &one_float_output(), &limits()).unwrap_err() {
        TransformError::SchemaMismatch { field, message, .. } => {
            assert_eq!(field, "x");
            assert!(message.contains("expected float64"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The same output is fine for an int64 field.
    let out = call_fixture(&wasm, &[field("x", ScalarType::Int64)], &limits()).unwrap();
    assert_eq!(out, vec![vec![Value::Int(3)]]);
    assert_engine_still_runs_a_good_module();
}

#[test]
fn an_error_reported_through_quiver_error_is_a_guest_error() {
    let wasm = wat_module(
        r#"(import "quiver:abi/v1" "quiver_error" (func $err (param i32 i32)))
           (data (i32.const 16) "row 0: bad input")"#,
        "(call $err (i32.const 16) (i32.const 16)) (i64.const 0)",
    );
    let err = call_fixture(&wasm, &one_float_output(), &limits()).unwrap_err();
    assert_eq!(
        err,
        TransformError::Guest {
            module: "fixture".into(),
            message: "row 0: bad input".into()
        }
    );
    assert_engine_still_runs_a_good_module();
}

#[test]
fn a_trap_in_one_call_does_not_affect_the_next_call_of_the_same_module() {
    // Traps when the input holds more than 8 bytes, otherwise returns [{"x": nil}] for one row.
    let wasm = wat_module(
        r#"(data (i32.const 16) "\91\81\a1x\c0")"#,
        "(if (i32.gt_u (local.get $len) (i32.const 8)) (then unreachable))
         (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 5))",
    );
    let module = engine().load("flaky", &wasm).unwrap();
    let outputs = one_float_output();
    let long = module.call(
        &["x"],
        &[vec![Value::String("a long string".into())]],
        &outputs,
        &limits(),
    );
    assert!(matches!(long, Err(TransformError::Trap { .. })), "{long:?}");
    let short = module.call(&["x"], &[vec![Value::Null]], &outputs, &limits());
    assert_eq!(short.unwrap(), vec![vec![Value::Null]]);
}

// ---- hot reload ------------------------------------------------------------------------

/// Writes `bytes` to `dir/name` the way builds and editors do: a temporary file, then a rename.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Polls `cond` every 10 ms for at most `limit`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A small valid module returning `[{"x": <n>}]`, different for every `n`.
fn numbered_module(n: u8) -> Vec<u8> {
    module_returning(&[0x91, 0x81, 0xa1, b'x', n & 0x7f])
}

fn call_numbered(module: &LoadedModule) -> Value {
    let out = module
        .call(
            &["x"],
            &[vec![Value::Null]],
            &[field("x", ScalarType::Int64)],
            &limits(),
        )
        .unwrap();
    out[0][0].clone()
}

#[test]
fn a_replaced_module_is_live_within_a_second_and_in_flight_calls_keep_their_version() {
    let dir = tempfile::tempdir().unwrap();
    replace_file(dir.path(), "score.wasm", &numbered_module(1));
    let catalog = Arc::new(ModuleCatalog::load_dir(&engine(), dir.path()).unwrap());
    let _watch = catalog.clone().watch().unwrap();
    let v1 = catalog.get("score").unwrap();
    assert_eq!(call_numbered(&v1), Value::Int(1));

    let v2_bytes = numbered_module(2);
    let v2_sha = sha256_hex(&v2_bytes);
    replace_file(dir.path(), "score.wasm", &v2_bytes);
    assert!(
        eventually(Duration::from_secs(1), || catalog
            .get("score")
            .is_some_and(|m| m.sha256 == v2_sha)),
        "the new version was not live within 1 s: {:?}",
        catalog.list()
    );
    assert_eq!(call_numbered(&catalog.get("score").unwrap()), Value::Int(2));
    // A caller holding the old version still runs it.
    assert_eq!(call_numbered(&v1), Value::Int(1));
}

#[test]
fn a_real_transform_replaced_by_rename_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    replace_file(dir.path(), "stats.wasm", &transform_wasm("order_stats"));
    let catalog = Arc::new(ModuleCatalog::load_dir(&engine(), dir.path()).unwrap());
    let _watch = catalog.clone().watch().unwrap();
    let new_bytes = transform_wasm("user_risk");
    let new_sha = sha256_hex(&new_bytes);
    replace_file(dir.path(), "stats.wasm", &new_bytes);
    // Compiling a real module in an unoptimized test build can take longer than in a release
    // server; the bound here is looser than the one-second target the small-module test checks.
    assert!(eventually(Duration::from_secs(10), || catalog
        .get("stats")
        .is_some_and(|m| m.sha256 == new_sha)));
}

#[test]
fn an_invalid_replacement_is_rejected_and_the_old_version_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    replace_file(dir.path(), "score.wasm", &numbered_module(1));
    let rejected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hook_count = rejected.clone();
    let catalog = Arc::new(
        ModuleCatalog::load_dir(&engine(), dir.path())
            .unwrap()
            .with_reject_hook(Box::new(move |name, err| {
                assert_eq!(name, "score");
                assert!(matches!(err, TransformError::InvalidModule { .. }));
                hook_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })),
    );
    let _watch = catalog.clone().watch().unwrap();
    let before = catalog.get("score").unwrap().sha256.clone();

    replace_file(dir.path(), "score.wasm", b"this is not wasm");
    assert!(eventually(Duration::from_secs(2), || catalog
        .rejected_count()
        == 1));
    assert_eq!(rejected.load(std::sync::atomic::Ordering::SeqCst), 1);
    let current = catalog.get("score").unwrap();
    assert_eq!(current.sha256, before);
    assert_eq!(call_numbered(&current), Value::Int(1));

    // Fixing the file brings the new version in.
    replace_file(dir.path(), "score.wasm", &numbered_module(3));
    assert!(eventually(Duration::from_secs(1), || catalog
        .get("score")
        .is_some_and(|m| call_numbered(&m) == Value::Int(3))));
    assert_eq!(catalog.rejected_count(), 1);
}

#[test]
fn added_and_deleted_files_load_and_unload_modules() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(ModuleCatalog::load_dir(&engine(), dir.path()).unwrap());
    let _watch = catalog.clone().watch().unwrap();
    assert!(catalog.list().is_empty());

    replace_file(dir.path(), "a.wasm", &numbered_module(4));
    assert!(eventually(Duration::from_secs(1), || catalog
        .get("a")
        .is_some()));
    let listed = catalog.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "a");
    assert_eq!(listed[0].sha256, sha256_hex(&numbered_module(4)));

    std::fs::remove_file(dir.path().join("a.wasm")).unwrap();
    assert!(eventually(Duration::from_secs(1), || catalog
        .get("a")
        .is_none()));
}

// ---- safer module swaps ------------------------------------------------------------------

/// A catalog over `dir` that records every rejection's error.
fn recording_catalog(
    dir: &Path,
) -> (
    Arc<ModuleCatalog>,
    Arc<std::sync::Mutex<Vec<TransformError>>>,
) {
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook_errors = errors.clone();
    let catalog = Arc::new(
        ModuleCatalog::load_dir(&engine(), dir)
            .unwrap()
            .with_reject_hook(Box::new(move |_, err| {
                hook_errors.lock().unwrap().push(err.clone());
            })),
    );
    (catalog, errors)
}

#[test]
fn a_module_that_loads_but_always_traps_does_not_replace_the_working_one() {
    let dir = tempfile::tempdir().unwrap();
    replace_file(dir.path(), "score.wasm", &numbered_module(1));
    let (catalog, errors) = recording_catalog(dir.path());
    let _watch = catalog.clone().watch().unwrap();
    let before = catalog.get("score").unwrap().sha256.clone();

    replace_file(dir.path(), "score.wasm", &wat_module("", "unreachable"));
    assert!(eventually(Duration::from_secs(5), || catalog
        .rejected_count()
        == 1));
    let err = errors.lock().unwrap()[0].clone();
    assert!(
        matches!(&err, TransformError::Rejected { message, .. } if message.contains("trial")),
        "{err}"
    );
    assert_eq!(catalog.get("score").unwrap().sha256, before);
    assert_eq!(call_numbered(&catalog.get("score").unwrap()), Value::Int(1));
}

#[test]
fn a_module_that_fails_on_recently_served_inputs_does_not_replace_the_working_one() {
    let dir = tempfile::tempdir().unwrap();
    replace_file(dir.path(), "score.wasm", &numbered_module(1));
    let (catalog, errors) = recording_catalog(dir.path());
    let _watch = catalog.clone().watch().unwrap();
    // Serving records the inputs the new version will be tried on.
    assert_eq!(call_numbered(&catalog.get("score").unwrap()), Value::Int(1));
    let before = catalog.get("score").unwrap().sha256.clone();

    // Runs an empty batch fine, but answers a field the view does not declare.
    let wrong_schema = module_returning(&[0x91, 0x81, 0xa1, b'y', 0x05]);
    replace_file(dir.path(), "score.wasm", &wrong_schema);
    assert!(eventually(Duration::from_secs(5), || catalog
        .rejected_count()
        == 1));
    let err = errors.lock().unwrap()[0].clone();
    assert!(
        matches!(&err, TransformError::Rejected { message, .. } if message.contains("output field y")),
        "{err}"
    );
    assert_eq!(catalog.get("score").unwrap().sha256, before);

    // A good replacement passes the same trial.
    replace_file(dir.path(), "score.wasm", &numbered_module(2));
    assert!(eventually(Duration::from_secs(5), || catalog
        .get("score")
        .is_some_and(|m| call_numbered(&m) == Value::Int(2))));
}

#[test]
fn a_module_with_50000_functions_is_rejected_quickly_while_another_module_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, errors) = recording_catalog(dir.path());
    let _watch = catalog.clone().watch().unwrap();
    let huge = module_with_functions(50_000);

    let started = Instant::now();
    replace_file(dir.path(), "huge.wasm", &huge);
    replace_file(dir.path(), "small.wasm", &numbered_module(7));
    assert!(
        eventually(Duration::from_secs(2), || catalog.get("small").is_some()
            && catalog.rejected_count() == 1),
        "after {:?}: {:?}, {} rejected",
        started.elapsed(),
        catalog.list(),
        catalog.rejected_count()
    );
    assert!(catalog.get("huge").is_none());
    let err = errors.lock().unwrap()[0].clone();
    assert!(
        matches!(&err, TransformError::Rejected { message, .. } if message.contains("50003 functions")),
        "{err}"
    );
}

#[test]
fn a_module_over_the_byte_limit_is_rejected_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, errors) = recording_catalog(dir.path());
    let catalog = Arc::new(
        Arc::into_inner(catalog)
            .unwrap()
            .with_load_limits(LoadLimits {
                max_module_bytes: 1024,
                ..LoadLimits::default()
            }),
    );
    let _watch = catalog.clone().watch().unwrap();
    let big = quiver_tests::wasm::with_custom_section(&numbered_module(1), &"x".repeat(2048));
    replace_file(dir.path(), "big.wasm", &big);
    replace_file(dir.path(), "small.wasm", &numbered_module(2));
    assert!(eventually(Duration::from_secs(2), || catalog
        .get("small")
        .is_some()
        && catalog.rejected_count() == 1));
    assert!(catalog.get("big").is_none());
    let err = errors.lock().unwrap()[0].clone();
    assert!(
        matches!(&err, TransformError::Rejected { message, .. } if message.contains("max_module_bytes")),
        "{err}"
    );
}

#[test]
fn a_module_that_compiles_too_slowly_is_rejected_and_others_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, errors) = recording_catalog(dir.path());
    let catalog = Arc::new(
        Arc::into_inner(catalog)
            .unwrap()
            .with_load_limits(LoadLimits {
                load_timeout: Duration::from_millis(200),
                max_functions: 100_000,
                ..LoadLimits::default()
            }),
    );
    let _watch = catalog.clone().watch().unwrap();
    // Under this catalog's function limit, but seconds to compile.
    replace_file(dir.path(), "slow.wasm", &module_with_functions(20_000));
    replace_file(dir.path(), "small.wasm", &numbered_module(3));
    assert!(eventually(Duration::from_secs(5), || catalog
        .get("small")
        .is_some()
        && catalog.rejected_count() == 1));
    assert!(catalog.get("slow").is_none());
    let err = errors.lock().unwrap()[0].clone();
    assert!(
        matches!(&err, TransformError::Rejected { message, .. } if message.contains("within")),
        "{err}"
    );
}
