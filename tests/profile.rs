//! `quiver profile` as a user runs it (the real binary): the profile `quiver historical` stores
//! in a training set agrees with the training set's data, equals the profile of the view's source
//! over the same rows, does not depend on the thread count, and bad input is named.

use std::path::Path;
use std::process::{Command, Output};

use quiver::monitoring::{Profile, Summary};
use quiver::types::{ScalarType, Value, ValueType};
use quiver_tests::fixtures::{HOUR, T0, UserRow, user_registry_yaml, write_user_rows};
use quiver_tests::training::{read_parquet, values, write_user_entities};

const SQLITE: &str = "  type: sqlite\n  path: data/online.db";
const USERS: usize = 300;
const TIERS: [&str; 4] = ["gold", "silver", "bronze", "iron"];

/// Runs `quiver -c <dir>/feature_store.yaml ARGS` in `dir`.
fn quiver(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quiver-under-test"))
        .arg("-c")
        .arg(dir.join("feature_store.yaml"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run quiver")
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "quiver failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn user(i: usize) -> &'static str {
    Box::leak(format!("user_{i:04}").into_boxed_str())
}

/// A registry and `USERS` users: each has a row an hour before T0 (some with null features) and
/// an older one two days before, with other values, outside the last day.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        user_registry_yaml(SQLITE),
    )
    .unwrap();
    let mut rows = Vec::new();
    for i in 0..USERS {
        let mut recent = UserRow::new(
            user(i),
            T0 - HOUR - i as i64,
            (i * 37 % 101) as f32 / 4.0,
            (i % 9) as i64,
            TIERS[(i * 7 / 3) % 4],
        );
        if i % 17 == 0 {
            recent.score = None;
        }
        if i % 23 == 0 {
            recent.tier = None;
        }
        rows.push(recent);
        rows.push(UserRow::new(user(i), T0 - 48 * HOUR, -1e6, 1000, "old"));
    }
    write_user_rows(&dir.path().join("data/user_stats/part-0.parquet"), &rows);
    // Entity rows at T0, in another order than the source.
    let entities: Vec<(&str, i64)> = (0..USERS).rev().map(|i| (user(i), T0)).collect();
    write_user_entities(&dir.path().join("entities.parquet"), &entities);
    dir
}

fn historical(dir: &Path, output: &str, threads: &str) {
    ok(quiver(
        dir,
        &[
            "historical",
            "--entities",
            "entities.parquet",
            "--features",
            "user_stats:score,user_stats:orders,user_stats:tier",
            "--output",
            output,
            "--threads",
            threads,
        ],
    ));
}

#[test]
fn the_profile_of_a_training_set_agrees_with_its_rows() {
    let dir = setup();
    historical(dir.path(), "training.parquet", "2");
    let printed = ok(quiver(dir.path(), &["profile", "training.parquet"]));
    let profile = Profile::from_json(&printed).unwrap();
    assert_eq!(profile.rows, USERS as u64);
    assert!(
        profile.origin.source.contains("entities.parquet"),
        "{:?}",
        profile.origin
    );

    let data = read_parquet(&dir.path().join("training.parquet"));
    let columns = [
        ("score", ValueType::Scalar(ScalarType::Float32)),
        ("orders", ValueType::Scalar(ScalarType::Int64)),
        ("tier", ValueType::Scalar(ScalarType::String)),
    ];
    for (name, dtype) in columns {
        let f = profile.index_of(name).unwrap();
        let feature = &profile.features[f];
        assert_eq!(feature.feature, format!("user_stats:{name}"));
        assert_eq!(feature.dtype, dtype.to_string());
        let column = values(&data, name, dtype);
        let nulls = column.iter().filter(|v| v.is_null()).count() as u64;
        assert_eq!(
            (feature.count, feature.nulls),
            (USERS as u64 - nulls, nulls)
        );
        // Re-binning every value of the file gives the stored histogram.
        let mut counts = vec![0u64; feature.bin_count()];
        for v in &column {
            counts[feature.bin_of(v)] += 1;
        }
        assert_eq!(counts, feature.counts(), "{name}");
    }

    // Scores: the old rows (-1e6) are not in the training set; min, max and mean are the data's.
    let scores: Vec<f64> = values(&data, "score", columns[0].1)
        .into_iter()
        .filter_map(|v| match v {
            Value::Float32(x) => Some(f64::from(x)),
            _ => None,
        })
        .collect();
    let Summary::Numeric(n) = &profile.features[0].summary else {
        panic!("score is numeric")
    };
    let min = scores.iter().copied().fold(f64::INFINITY, f64::min);
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    assert_eq!((n.min, n.max), (Some(min), Some(max)));
    assert!(
        (n.mean.unwrap() - mean).abs() < 1e-9,
        "{:?} vs {mean}",
        n.mean
    );
    assert_eq!(n.edges.first(), Some(&min));
    assert_eq!(n.edges.last(), Some(&max));
    assert_eq!(n.edges.len(), 11, "{:?}", n.edges);
    assert!(!n.sampled);

    // Tiers: the four values by frequency, no "old", nulls apart.
    let Summary::Categorical(c) = &profile.features[2].summary else {
        panic!("tier is categorical")
    };
    let tiers: Vec<&str> = c.top.iter().map(|t| t.value.as_str()).collect();
    let mut expected: Vec<&str> = TIERS.to_vec();
    expected.sort();
    let mut sorted = tiers.clone();
    sorted.sort();
    assert_eq!(sorted, expected);
    assert_eq!(c.other, 0);

    // --output writes the same profile.
    ok(quiver(
        dir.path(),
        &["profile", "training.parquet", "--output", "profile.json"],
    ));
    let written = std::fs::read_to_string(dir.path().join("profile.json")).unwrap();
    assert_eq!(written, printed);
}

#[test]
fn the_profile_content_does_not_depend_on_the_thread_count() {
    let dir = setup();
    historical(dir.path(), "one.parquet", "1");
    historical(dir.path(), "two.parquet", "2");
    let one = Profile::from_json(&ok(quiver(dir.path(), &["profile", "one.parquet"]))).unwrap();
    let two = Profile::from_json(&ok(quiver(dir.path(), &["profile", "two.parquet"]))).unwrap();
    assert_eq!(one.content_json(), two.content_json());
}

#[test]
fn a_view_profiled_over_a_window_equals_the_training_set_of_the_same_rows() {
    let dir = setup();
    historical(dir.path(), "training.parquet", "2");
    let training =
        Profile::from_json(&ok(quiver(dir.path(), &["profile", "training.parquet"]))).unwrap();
    // The last day holds exactly the rows the training set took, in another order.
    let start = "2025-12-31T00:00:00Z";
    let end = "2026-01-01T00:00:00Z";
    ok(quiver(
        dir.path(),
        &[
            "profile",
            "--view",
            "user_stats",
            "--start",
            start,
            "--end",
            end,
            "--output",
            "view.json",
        ],
    ));
    let text = std::fs::read_to_string(dir.path().join("view.json")).unwrap();
    let view = Profile::from_json(&text).unwrap();
    assert_eq!(view.origin.start.as_deref(), Some(start));
    assert_eq!(view.origin.end.as_deref(), Some(end));
    assert!(
        view.origin.source.contains("user_stats"),
        "{:?}",
        view.origin
    );
    assert_eq!(view.content_json(), training.content_json());

    // Two days include the old rows: other values, twice the rows.
    let wide = Profile::from_json(&ok(quiver(
        dir.path(),
        &[
            "profile",
            "--view",
            "user_stats",
            "--start",
            "now-3650d",
            "--end",
            end,
            "--bins",
            "4",
        ],
    )))
    .unwrap();
    assert_eq!(wide.rows, 2 * USERS as u64);
    let Summary::Numeric(n) = &wide.features[0].summary else {
        panic!("score is numeric")
    };
    assert_eq!(n.min, Some(-1e6));
    assert!(n.edges.len() <= 5, "{:?}", n.edges);
}

#[test]
fn bad_input_is_named_and_fails_without_a_panic() {
    let dir = setup();
    let cases: [(&[&str], &str); 4] = [
        (&["profile", "entities.parquet"], "quiver.profile"),
        (&["profile", "missing.parquet"], "missing.parquet"),
        (
            &[
                "profile", "--view", "nope", "--start", "now-1d", "--end", "now",
            ],
            "unknown feature view \"nope\"",
        ),
        (
            &[
                "profile",
                "--view",
                "user_stats",
                "--start",
                "now",
                "--end",
                "now-1d",
            ],
            "after it ends",
        ),
    ];
    for (args, needle) in cases {
        let out = quiver(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = quiver(
        dir.path(),
        &[
            "profile",
            "--view",
            "user_stats",
            "--start",
            "now",
            "--end",
            "now",
            "--bins",
            "0",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bins is 0"), "{stderr}");
    // Neither a training set nor --view: a usage error.
    let out = quiver(dir.path(), &["profile"]);
    assert_eq!(out.status.code(), Some(2));
}
