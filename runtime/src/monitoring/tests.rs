//! Profiles of known data: determinism, edges, top values, nulls and NaN, and `bin_of` against
//! the histogram it must reproduce.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int64Array, ListArray, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::Int32Type;

use super::*;
use crate::types::{ScalarType, Value, ValueType};

fn origin() -> Origin {
    Origin {
        source: "test".into(),
        start: None,
        end: None,
        created_at: "2026-01-01T00:00:00Z".into(),
    }
}

fn col(name: &str, dtype: &str) -> ProfileColumn {
    ProfileColumn {
        name: name.into(),
        feature: format!("view:{name}"),
        dtype: ValueType::parse(dtype).unwrap(),
    }
}

/// A deterministic mixture: floats with nulls, NaN and ±∞, ints, strings, bools and lists.
struct Data {
    floats: Vec<Option<f64>>,
    ints: Vec<Option<i64>>,
    strings: Vec<Option<String>>,
    bools: Vec<Option<bool>>,
    lists: Vec<Option<Vec<Option<i32>>>>,
}

fn data(rows: usize) -> Data {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut d = Data {
        floats: vec![],
        ints: vec![],
        strings: vec![],
        bools: vec![],
        lists: vec![],
    };
    for _ in 0..rows {
        let r = next();
        d.floats.push(match r % 50 {
            0 => None,
            1 => Some(f64::NAN),
            2 => Some(f64::INFINITY),
            _ => Some((r >> 20) as f64 / 1e9 - 3000.0),
        });
        d.ints
            .push((r % 13 != 0).then_some((r >> 40) as i64 % 1000 - 200));
        d.strings
            .push((r % 11 != 0).then(|| format!("s{}", ((r >> 8) % 37) * ((r >> 16) % 3))));
        d.bools.push((r % 7 != 0).then_some(r % 3 == 0));
        d.lists
            .push((r % 9 != 0).then(|| (0..(r >> 33) % 6).map(|i| Some(i as i32)).collect()));
    }
    d
}

fn columns() -> Vec<ProfileColumn> {
    vec![
        col("f", "float64"),
        col("i", "int64"),
        col("s", "string"),
        col("b", "bool"),
        col("l", "list<int32>"),
    ]
}

fn batch(d: &Data, rows: std::ops::Range<usize>) -> Vec<ArrayRef> {
    vec![
        Arc::new(Float64Array::from(d.floats[rows.clone()].to_vec())),
        Arc::new(Int64Array::from(d.ints[rows.clone()].to_vec())),
        Arc::new(StringArray::from(d.strings[rows.clone()].to_vec())),
        Arc::new(BooleanArray::from(d.bools[rows.clone()].to_vec())),
        Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
            d.lists[rows].to_vec(),
        )),
    ]
}

fn values(d: &Data, column: usize) -> Vec<Value> {
    match column {
        0 => d
            .floats
            .iter()
            .map(|v| v.map_or(Value::Null, Value::Float64))
            .collect(),
        1 => d
            .ints
            .iter()
            .map(|v| v.map_or(Value::Null, Value::Int))
            .collect(),
        2 => d
            .strings
            .iter()
            .map(|v| v.clone().map_or(Value::Null, Value::String))
            .collect(),
        3 => d
            .bools
            .iter()
            .map(|v| v.map_or(Value::Null, Value::Bool))
            .collect(),
        _ => d
            .lists
            .iter()
            .map(|v| {
                v.as_ref().map_or(Value::Null, |items| {
                    Value::List(
                        items
                            .iter()
                            .map(|i| Value::Int(i.unwrap() as i64))
                            .collect(),
                    )
                })
            })
            .collect(),
    }
}

fn options(sample_size: usize) -> ProfileOptions {
    ProfileOptions {
        bins: 10,
        top_k: 5,
        sample_size,
    }
}

fn whole(d: &Data, rows: usize, opts: ProfileOptions) -> Profile {
    profile_batches(columns(), opts, &[batch(d, 0..rows)], origin()).unwrap()
}

/// The same rows in uneven batches, observed out of order by two profilers that are merged,
/// and counted in the second pass by forks merged in another order.
fn split(d: &Data, rows: usize, opts: ProfileOptions) -> Profile {
    let cuts = [0, 1, 7, 300, 301, 999, rows.min(1500), rows];
    let ranges: Vec<_> = cuts.windows(2).map(|w| w[0]..w[1]).collect();
    let mut a = Profiler::new(columns(), opts).unwrap();
    let mut b = Profiler::new(columns(), opts).unwrap();
    for (n, r) in ranges.iter().enumerate().rev() {
        let p = if n % 2 == 0 { &mut a } else { &mut b };
        p.observe(r.start as u64, &batch(d, r.clone())).unwrap();
    }
    b.merge(a).unwrap();
    let second = b.into_second_pass();
    let mut x = second.fork();
    let mut y = second.fork();
    for (n, r) in ranges.iter().enumerate() {
        let p = if n % 3 == 0 { &mut x } else { &mut y };
        p.observe(&batch(d, r.clone())).unwrap();
    }
    y.merge(x);
    let mut total = second.fork();
    total.merge(y);
    total.finish(origin()).unwrap()
}

#[test]
fn the_same_rows_in_other_batches_and_worker_orders_give_identical_bytes() {
    let d = data(2000);
    // Every value fits the sample (exact edges), and a sample smaller than the data.
    for sample_size in [100_000, 150] {
        let one = whole(&d, 2000, options(sample_size));
        let many = split(&d, 2000, options(sample_size));
        assert_eq!(
            one.content_json(),
            many.content_json(),
            "sample {sample_size}"
        );
    }
    let sampled = whole(&d, 2000, options(150));
    let Summary::Numeric(n) = &sampled.features[0].summary else {
        panic!("numeric")
    };
    assert!(n.sampled);
}

#[test]
fn reordered_rows_give_identical_bytes_when_every_value_fits_the_sample() {
    let d = data(1000);
    let mut reversed = data(1000);
    reversed.floats.reverse();
    reversed.ints.reverse();
    reversed.strings.reverse();
    reversed.bools.reverse();
    reversed.lists.reverse();
    let a = whole(&d, 1000, options(100_000));
    let b = whole(&reversed, 1000, options(100_000));
    assert_eq!(a.content_json(), b.content_json());
    // The origin is outside the content.
    let mut c = b.clone();
    c.origin.created_at = "2030-01-01T00:00:00Z".into();
    assert_eq!(a.content_json(), c.content_json());
    assert_ne!(a.to_json(), c.to_json());
}

#[test]
fn quantile_edges_of_one_to_a_hundred_are_the_tens() {
    let ints: Vec<i64> = (1..=100).collect();
    let p = profile_batches(
        vec![col("x", "int64")],
        ProfileOptions::default(),
        &[vec![Arc::new(Int64Array::from(ints))]],
        origin(),
    )
    .unwrap();
    let f = &p.features[0];
    let Summary::Numeric(n) = &f.summary else {
        panic!("numeric")
    };
    let expected: Vec<f64> = std::iter::once(1.0)
        .chain((1..=10).map(|i| i as f64 * 10.0))
        .collect();
    assert_eq!(n.edges, expected);
    // [1, 10) holds 1..=9, [10, 20) ..., the last bin [90, 100] 90..=100.
    assert_eq!(n.bins, vec![9, 10, 10, 10, 10, 10, 10, 10, 10, 11]);
    assert_eq!((n.underflow, n.overflow, n.null), (0, 0, 0));
    assert_eq!((n.min, n.max, n.mean), (Some(1.0), Some(100.0), Some(50.5)));
    // Population standard deviation of 1..=100: sqrt((100² − 1) / 12).
    assert!((n.std_dev.unwrap() - (9999.0f64 / 12.0).sqrt()).abs() < 1e-12);
    assert!(!n.sampled);
    assert_eq!(f.bin_of(&Value::Int(0)), 0);
    assert_eq!(f.bin_of(&Value::Int(1)), 1);
    assert_eq!(f.bin_of(&Value::Int(10)), 2);
    assert_eq!(f.bin_of(&Value::Int(100)), 10);
    assert_eq!(f.bin_of(&Value::Int(101)), 11);
    assert_eq!(f.bin_of(&Value::Null), 12);
    assert_eq!(f.bin_label(10), "[90, 100]");
    assert_eq!(f.bin_label(2), "[10, 20)");
}

#[test]
fn equal_quantiles_are_merged_into_one_edge() {
    // 90% zeros: most quantile edges are 0.
    let mut v = vec![0.0; 90];
    v.extend((1..=10).map(f64::from));
    let p = profile_batches(
        vec![col("x", "float64")],
        ProfileOptions::default(),
        &[vec![Arc::new(Float64Array::from(v))]],
        origin(),
    )
    .unwrap();
    let Summary::Numeric(n) = &p.features[0].summary else {
        panic!("numeric")
    };
    assert_eq!(n.edges, vec![0.0, 10.0]);
    assert_eq!(n.bins, vec![100]);
    // A single value: one edge, one bin holding exactly it.
    let p = profile_batches(
        vec![col("x", "float32")],
        ProfileOptions::default(),
        &[vec![Arc::new(Float32Array::from(vec![2.5f32; 4]))]],
        origin(),
    )
    .unwrap();
    let f = &p.features[0];
    assert_eq!(f.counts(), vec![0, 4, 0, 0]);
    assert_eq!(f.bin_of(&Value::Float32(2.5)), 1);
    assert_eq!(f.bin_of(&Value::Float32(2.6)), 2);
    assert_eq!(f.bin_of(&Value::Float32(-1.0)), 0);
}

#[test]
fn top_values_tied_in_count_are_ordered_by_value() {
    let s: Vec<Option<&str>> = ["b", "c", "a", "b", "a", "c", "d", "a", "b", "c"]
        .into_iter()
        .map(Some)
        .chain([None])
        .collect();
    let opts = ProfileOptions {
        top_k: 2,
        ..ProfileOptions::default()
    };
    let p = profile_batches(
        vec![col("s", "string")],
        opts,
        &[vec![Arc::new(StringArray::from(s))]],
        origin(),
    )
    .unwrap();
    let f = &p.features[0];
    let Summary::Categorical(c) = &f.summary else {
        panic!("categorical")
    };
    let top: Vec<(&str, u64)> = c.top.iter().map(|t| (t.value.as_str(), t.count)).collect();
    assert_eq!(top, vec![("a", 3), ("b", 3)]);
    assert_eq!((c.other, c.null, f.count, f.nulls), (4, 1, 10, 1));
    assert_eq!(f.bin_of(&Value::String("a".into())), 0);
    assert_eq!(f.bin_of(&Value::String("c".into())), 2);
    assert_eq!(f.bin_of(&Value::String("never seen".into())), 2);
    assert_eq!(f.bin_of(&Value::Null), 3);
    assert_eq!(f.counts(), vec![3, 3, 4, 1]);
}

#[test]
fn nan_counts_as_null_and_infinities_fall_outside_the_edges() {
    let v = vec![
        Some(1.0),
        Some(f64::NAN),
        None,
        Some(f64::INFINITY),
        Some(f64::NEG_INFINITY),
        Some(2.0),
        Some(-0.0),
    ];
    let p = profile_batches(
        vec![col("x", "float64")],
        ProfileOptions::default(),
        &[vec![Arc::new(Float64Array::from(v))]],
        origin(),
    )
    .unwrap();
    let f = &p.features[0];
    let Summary::Numeric(n) = &f.summary else {
        panic!("numeric")
    };
    assert_eq!((f.count, f.nulls, n.nan, n.infinite), (5, 2, 1, 2));
    assert_eq!((n.min, n.max), (Some(0.0), Some(2.0)));
    assert_eq!(n.mean, Some(1.0));
    assert!((n.std_dev.unwrap() - (2.0f64 / 3.0).sqrt()).abs() < 1e-15);
    assert_eq!(n.edges.first(), Some(&0.0));
    assert!(n.edges.first().unwrap().is_sign_positive(), "-0.0 is 0.0");
    assert_eq!((n.underflow, n.overflow, n.null), (1, 1, 2));
    assert_eq!(f.bin_of(&Value::Float64(f64::NAN)), n.null_bin());
    assert_eq!(f.bin_of(&Value::Float64(f64::NEG_INFINITY)), 0);
    // Every number in the profile is finite, so it round-trips through JSON.
    assert_eq!(Profile::from_json(&p.to_json()).unwrap(), p);
}

#[test]
fn an_all_null_feature_has_no_edges_and_counts_only_nulls() {
    let p = profile_batches(
        vec![col("x", "float64"), col("s", "string")],
        ProfileOptions::default(),
        &[vec![
            Arc::new(Float64Array::from(vec![None::<f64>; 3])),
            Arc::new(StringArray::from(vec![None::<&str>; 3])),
        ]],
        origin(),
    )
    .unwrap();
    let (x, s) = (&p.features[0], &p.features[1]);
    let Summary::Numeric(n) = &x.summary else {
        panic!("numeric")
    };
    assert_eq!((x.count, x.nulls), (0, 3));
    assert_eq!((n.min, n.mean, n.std_dev), (None, None, None));
    assert!(n.edges.is_empty());
    assert_eq!(x.counts(), vec![0, 0, 3]);
    assert_eq!(x.bin_of(&Value::Null), 2);
    assert_eq!(
        x.bin_of(&Value::Float64(5.0)),
        1,
        "overflow: no training value"
    );
    assert_eq!(s.counts(), vec![0, 3]);
    assert_eq!(s.bin_of(&Value::String("a".into())), 0, "other");
    assert_eq!(psi(&x.counts(), &[0, 0, 7]).unwrap(), 0.0);
}

#[test]
fn binning_every_value_again_with_bin_of_reproduces_the_histogram() {
    let d = data(3000);
    // Exact edges and candidates, then sampled ones: bin_of agrees either way.
    for sample_size in [100_000, 200] {
        let p = whole(&d, 3000, options(sample_size));
        for (i, f) in p.features.iter().enumerate() {
            let mut counts = vec![0u64; f.bin_count()];
            for v in values(&d, i) {
                counts[p.bin_of(i, &v)] += 1;
            }
            assert_eq!(counts, f.counts(), "{} (sample {sample_size})", f.name);
            assert_eq!(counts.iter().sum::<u64>(), p.rows);
            assert_eq!(f.count + f.nulls, p.rows);
        }
    }
}

#[test]
fn a_profile_round_trips_through_json_with_its_lookup_index() {
    let d = data(500);
    let p = whole(&d, 500, options(100_000));
    let text = p.to_json();
    let back = Profile::from_json(&text).unwrap();
    assert_eq!(back.to_json(), text);
    let s = back.index_of("view:s").unwrap();
    assert_eq!(back.index_of("s"), Some(s));
    let Summary::Categorical(c) = &back.features[s].summary else {
        panic!("categorical")
    };
    let first = Value::String(c.top[0].value.clone());
    assert_eq!(back.bin_of(s, &first), 0);
    assert!(text.starts_with("{\"format_version\":1,"), "{text}");
}

#[test]
fn other_format_versions_and_garbage_are_refused_by_name() {
    let e = Profile::from_json("{\"format_version\": 9}").unwrap_err();
    assert!(e.to_string().contains("format_version 9"), "{e}");
    let e = Profile::from_json("[1, 2]").unwrap_err();
    assert!(e.to_string().starts_with("not a Quiver profile"), "{e}");
}

#[test]
fn options_out_of_range_are_refused() {
    for (bins, top_k, sample_size) in [(0, 20, 100), (51, 20, 100), (10, 0, 100), (10, 20, 5)] {
        let opts = ProfileOptions {
            bins,
            top_k,
            sample_size,
        };
        let e = Profiler::new(columns(), opts).unwrap_err();
        assert!(e.to_string().starts_with("invalid profile options"), "{e}");
    }
}

#[test]
fn a_column_of_the_wrong_type_is_named_in_the_error() {
    let mut p = Profiler::new(vec![col("amount", "float64")], ProfileOptions::default()).unwrap();
    let e = p
        .observe(0, &[Arc::new(StringArray::from(vec!["1.5"]))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"amount\"") && e.contains("float64"), "{e}");
    let e = p.observe(0, &[]).unwrap_err().to_string();
    assert!(e.contains("expected 1 columns"), "{e}");
}

#[test]
fn timestamps_are_profiled_in_microseconds_and_bools_as_true_and_false() {
    let ts = TimestampMicrosecondArray::from(vec![Some(1_000_000), Some(3_000_000), None])
        .with_timezone("UTC");
    let p = profile_batches(
        vec![col("t", "unix_timestamp"), col("b", "bool")],
        ProfileOptions::default(),
        &[vec![
            Arc::new(ts),
            Arc::new(BooleanArray::from(vec![
                Some(true),
                Some(true),
                Some(false),
            ])),
        ]],
        origin(),
    )
    .unwrap();
    let Summary::Numeric(n) = &p.features[0].summary else {
        panic!("numeric")
    };
    assert_eq!(n.mean, Some(2_000_000.0));
    assert_eq!(p.features[0].bin_of(&Value::Int(2_000_000)), 1);
    let b = &p.features[1];
    assert_eq!(b.counts(), vec![2, 1, 0, 0]);
    assert_eq!(b.bin_of(&Value::Bool(false)), 1);
    assert_eq!(b.dtype, ValueType::Scalar(ScalarType::Bool).to_string());
}
