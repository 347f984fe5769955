//! The `quiver` command as a user runs it (the real binary, `quiver-under-test`): `validate`
//! checks the data and modules a registry names, times are read as Feast reads them, counts are
//! in good English, and user errors, logs and output files look as they should.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use quiver_tests::fixtures::{HOUR, T0, UserRow, user_registry_yaml, write_user_rows};
use quiver_tests::training::write_user_entities;

const SQLITE: &str = "  type: sqlite\n  path: data/online.db";

/// Runs `quiver -c <dir>/feature_store.yaml ARGS` in `dir`.
fn quiver(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quiver-under-test"))
        .arg("-c")
        .arg(dir.join("feature_store.yaml"))
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run quiver")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A directory with the test `user_stats` registry and two rows of its data, an hour before T0.
fn user_stats_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("feature_store.yaml"),
        user_registry_yaml(SQLITE),
    )
    .unwrap();
    write_user_rows(
        &dir.path().join("data/user_stats/part-0.parquet"),
        &[
            UserRow::new("alice", T0 - HOUR, 0.5, 3, "gold"),
            UserRow::new("bob", T0 - HOUR, 0.25, 1, "silver"),
        ],
    );
    dir
}

#[test]
fn validate_reports_every_missing_source_column_and_module_each_with_its_view_in_one_run() {
    let dir = user_stats_dir();
    // A misspelled source path, a column declared with the wrong type and one that is not in the
    // file, a module that is not there and one that is not WebAssembly.
    let yaml = user_registry_yaml(SQLITE).replace(
        "feature_services:",
        r#"  - name: user_sessions
    entities: [user]
    schema:
      - { name: sessions, dtype: int64 }
    source:
      path: data/user_sesions
  - name: user_stats_wide
    entities: [user]
    schema:
      - { name: score, dtype: float64 }
      - { name: visits, dtype: int64 }
    source:
      path: data/user_stats
on_demand_feature_views:
  - name: risk
    transform: risk
    sources: [user_stats]
    schema:
      - { name: risk_score, dtype: float64 }
  - name: junk
    transform: junk
    sources: [user_stats]
    schema:
      - { name: junk_score, dtype: float64 }
feature_services:"#,
    );
    std::fs::write(dir.path().join("feature_store.yaml"), yaml).unwrap();
    std::fs::create_dir_all(dir.path().join("transforms/wasm")).unwrap();
    std::fs::write(dir.path().join("transforms/wasm/junk.wasm"), b"not wasm").unwrap();

    let out = quiver(dir.path(), &["validate"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = [
        "5 problems keep it from running",
        "  feature_views[1] (user_sessions): source data/user_sesions does not exist",
        "  feature_views[2] (user_stats_wide): data/user_stats/part-0.parquet: column \"score\" has Arrow type Float32, which cannot be read as float64",
        "  feature_views[2] (user_stats_wide): data/user_stats/part-0.parquet: missing column \"visits\"",
        "  on_demand_feature_views[0] (risk): transform module transforms/wasm/risk.wasm does not exist",
        "  on_demand_feature_views[1] (junk): transform module transforms/wasm/junk.wasm: ",
    ];
    for line in expected {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("backtrace"), "{stderr}");

    // --no-data checks the document alone.
    let out = quiver(dir.path(), &["validate", "--no-data"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn validate_passes_and_counts_in_good_english_when_the_data_is_there() {
    let dir = user_stats_dir();
    let out = quiver(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "project \"test\", 1 entity, 1 feature view, 0 on-demand views, 1 feature service"
        ),
        "{stdout}"
    );
}

#[test]
fn materialize_takes_dates_and_times_without_offset_as_utc() {
    let dir = user_stats_dir();
    // T0 is 2026-01-01T00:00:00Z; the rows are at 2025-12-31T23:00:00Z.
    let out = quiver(
        dir.path(),
        &["materialize", "2025-12-31", "2025-12-31T23:30:00"],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains(
            "user_stats: 2025-12-31T00:00:00Z to 2025-12-31T23:30:00Z: 2 rows read, 2 entities"
        ),
        "{stdout}"
    );
    let out = quiver(dir.path(), &["materialize", "now-3650d", "now"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Materialized 1 feature view into sqlite"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_user_error_is_one_line_with_its_causes_and_no_backtrace() {
    let dir = user_stats_dir();
    let out = quiver(dir.path(), &["materialize", "yesterday", "now"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("Error: START: ") && stderr.contains("\"yesterday\""),
        "{stderr}"
    );
    assert!(!stderr.contains("acktrace"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn a_taken_port_is_reported_with_how_to_choose_another() {
    let dir = user_stats_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = quiver(dir.path(), &["serve", "--bind", &addr]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Error: cannot bind {addr} (choose another address with --bind or server.bind)"
        )),
        "{stderr}"
    );
}

#[test]
fn logs_written_to_a_pipe_or_file_carry_no_colour_codes() {
    let dir = user_stats_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_quiver-under-test"))
        .arg("-c")
        .arg(dir.path().join("feature_store.yaml"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start quiver");
    let stderr = child.stderr.take().unwrap();
    let started = Instant::now();
    let mut log = String::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("serving on") || started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(log.contains("serving on"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

#[test]
fn a_training_set_is_readable_as_the_umask_allows_not_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = user_stats_dir();
    write_user_entities(
        &dir.path().join("entities.parquet"),
        &[("alice", T0), ("bob", T0)],
    );
    let out = quiver(
        dir.path(),
        &[
            "historical",
            "--entities",
            "entities.parquet",
            "--features",
            "user_stats:score",
            "--output",
            "training.parquet",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Wrote 2 rows with 1 feature from 1 feature view"),
        "{}",
        text(&out.stdout)
    );
    let mode = std::fs::metadata(dir.path().join("training.parquet"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o666 & !umask(), "mode {mode:o}");
}

/// This process's umask (children inherit it), from /proc.
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("Umask in /proc/self/status");
    u32::from_str_radix(line.trim(), 8).unwrap()
}

/// A feature log of the `scoring` service with alice served her stored values and bob served a
/// score the offline data never had, both at T0.
fn write_scoring_log(dir: &Path) {
    use quiver::offline::feature_log::layout::LogLayout;
    use quiver::offline::feature_log::{LoggedRow, to_batch};
    use quiver::registry::FeatureStatus::Present;
    use quiver::types::Value;
    let registry = quiver::config::load(&dir.join("feature_store.yaml")).unwrap();
    let layout = LogLayout::new(&registry, 0);
    let row = |user: &str, score: f32, tier: &str| LoggedRow {
        request_id: "0123456789abcdef0123456789abcdef".into(),
        row: 0,
        request_ts: T0,
        keys: vec![Value::String(user.into())],
        request_fields: vec![],
        features: vec![
            (Value::Float32(score), Present, T0 - HOUR),
            (Value::String(tier.into()), Present, T0 - HOUR),
        ],
        modules: std::sync::Arc::new([]),
    };
    let batch = to_batch(
        &layout,
        &[row("alice", 0.5, "gold"), row("bob", 0.99, "silver")],
    )
    .unwrap();
    let day = dir.join("logs/feature_service=scoring/date=2026-01-01");
    std::fs::create_dir_all(&day).unwrap();
    quiver::offline::push_writer::write_parquet_atomically(
        &day.join(".part-1.parquet.tmp"),
        &day.join("part-1.parquet"),
        &batch,
    )
    .unwrap();
}

#[test]
fn skew_exits_2_above_the_allowed_mismatch_rate_0_within_it_and_1_without_logged_rows() {
    let dir = user_stats_dir();
    write_scoring_log(dir.path());

    let out = quiver(dir.path(), &["skew", "--log", "logs"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains("user_stats:score")
            && report.contains("served 0.99 (PRESENT), replayed 0.25"),
        "{report}"
    );
    assert!(text(&out.stderr).contains("above --max-mismatch-rate"));

    let out = quiver(
        dir.path(),
        &[
            "skew",
            "--log",
            "logs",
            "--max-mismatch-rate",
            "0.5",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let features = &json["services"][0]["features"];
    assert_eq!(features[0]["feature"], "user_stats:score");
    assert_eq!(features[0]["value_mismatches"], 1);
    assert_eq!(features[0]["exact_match_rate"], 0.5);
    assert_eq!(features[1]["mismatches"], 0);

    let out = quiver(
        dir.path(),
        &["skew", "--log", "logs", "--until", "2025-12-01"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("holds no logged rows in the requested time range"),
        "{}",
        text(&out.stderr)
    );
}
