//! Acknowledged offline pushes survive a crash: the real `quiver serve` runs as a separate process,
//! is SIGKILLed right after answering, and after a restart every acknowledged row is in the view's
//! Parquet files exactly once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use quiver::offline::push_writer::{Appended, OfflineAppender};
use quiver::serving::push::{PushedFrame, WriteLimits, parse_rows};
use quiver_tests::fixtures::{HOUR, T0, load_registry};
use quiver_tests::process::QuiverProcess;
use serde_json::{Value, json};

const YAML: &str = r#"project: test
online_store:
  type: sqlite
  path: online.db
entities:
  - name: user
    join_keys: [user_id]
feature_views:
  - name: user_stats
    entities: [user]
    ttl: 24h
    schema:
      - { name: score, dtype: float32 }
      - { name: orders, dtype: int64 }
      - { name: tier, dtype: string }
    source:
      path: data/user_stats
push_sources:
  - name: user_stats_push
    feature_view: user_stats
server:
  max_body_bytes: 1048576
  max_entities: 1000
"#;

/// `quiver serve` in its own process (see `quiver-under-test` in Cargo.toml), once it answers
/// `/health` (which is after it replayed its write-ahead logs).
async fn start(config: &Path) -> QuiverProcess {
    QuiverProcess::serve(Path::new(env!("CARGO_BIN_EXE_quiver-under-test")), config)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap()
}

/// User ids of every row in the visible Parquet files under `dir` (names starting with `.` are
/// temporary files readers skip).
fn pushed_users(dir: &Path) -> Vec<String> {
    let mut users = Vec::new();
    for file in parquet_files(dir) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let column = batch.column_by_name("user_id").expect("user_id column");
            let strings = column.as_any().downcast_ref::<StringArray>().unwrap();
            users.extend((0..strings.len()).map(|i| strings.value(i).to_string()));
        }
    }
    users
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            out.extend(parquet_files(&path));
        } else if name.ends_with(".parquet") {
            out.push(path);
        }
    }
    out
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|e| e.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn assert_exactly_once(users: &[String], expected: &HashSet<String>) {
    let distinct: HashSet<String> = users.iter().cloned().collect();
    let lost = expected.difference(&distinct).count();
    let duplicated = users.len() - distinct.len();
    assert_eq!(
        (lost, duplicated, distinct.len()),
        (0, 0, expected.len()),
        "{lost} of {} acknowledged rows lost, {duplicated} duplicated",
        expected.len()
    );
}

/// Pushes 20 × 100 rows `to` a target, in waves of 7 concurrent requests, SIGKILLs the server as
/// soon as every push is answered, restarts it twice, and checks every acknowledged row is in the
/// Parquet files exactly once. `push` is appended to the configuration.
async fn push_kill_and_restart(push: &str, to: &str) {
    const REQUESTS: usize = 20;
    const ROWS: usize = 100;
    const WAVE: usize = 7;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("feature_store.yaml");
    std::fs::write(&config, format!("{YAML}{push}")).unwrap();
    let pushed = dir.path().join("data/user_stats/pushed");

    let server = start(&config).await;
    let url = format!("{}/push", server.base_url());
    let ts = quiver::serving::json::format_timestamp(chrono::Utc::now().timestamp_micros() - HOUR);
    let client = client();
    let request = |r: usize| {
        let users: Vec<String> = (0..ROWS).map(|i| format!("user_{r:02}_{i:03}")).collect();
        let body = json!({
            "push_source_name": "user_stats_push",
            "to": to,
            "df": {
                "user_id": users,
                "event_timestamp": vec![ts.as_str(); ROWS],
                "score": vec![0.5; ROWS],
                "orders": (0..ROWS).collect::<Vec<_>>(),
                "tier": vec!["gold"; ROWS],
            },
        });
        let (client, url) = (client.clone(), url.clone());
        async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["offline_durable"], ROWS, "{body}");
            users
        }
    };
    let mut acknowledged = HashSet::new();
    for wave in (0..REQUESTS).collect::<Vec<_>>().chunks(WAVE) {
        // A wave's requests are in flight at once, so some share an fsync.
        let users = futures::future::join_all(wave.iter().map(|&r| request(r))).await;
        acknowledged.extend(users.into_iter().flatten());
    }
    server.kill();

    let before = pushed_users(&pushed).len();
    eprintln!(
        "{} rows acknowledged; {before} in Parquet files when the process was killed",
        acknowledged.len()
    );
    assert_eq!(acknowledged.len(), REQUESTS * ROWS);

    // The restarted server replays the log before it answers.
    let server = start(&config).await;
    server.kill();
    assert_exactly_once(&pushed_users(&pushed), &acknowledged);
    assert_eq!(
        files_in(&pushed.join(".wal/user_stats")),
        Vec::<PathBuf>::new()
    );

    // A second restart finds nothing left to replay.
    let server = start(&config).await;
    server.kill();
    assert_exactly_once(&pushed_users(&pushed), &acknowledged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_offline_pushes_survive_a_sigkill_with_the_default_settings() {
    push_kill_and_restart("", "offline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_pushes_survive_a_sigkill_while_files_are_being_flushed() {
    // A file is written once 700 rows wait: the first two waves are in Parquet files (and their
    // segments deleted) and the last 600 rows only in the log when the process dies.
    push_kill_and_restart("push:\n  flush_rows: 700\n", "online_and_offline").await;
}

#[tokio::test]
async fn a_segment_replayed_after_its_file_was_written_does_not_duplicate_rows() {
    // A crash between renaming a flushed file into place and deleting its log segment.
    let dir = tempfile::tempdir().unwrap();
    let registry = load_registry(dir.path(), YAML);
    let df = json!({
        "user_id": ["alice", "bob", "carol"],
        "event_timestamp": vec![quiver::serving::json::format_timestamp(T0 - HOUR); 3],
        "score": [0.5, 0.25, 1.0],
        "orders": [1, 2, 3],
        "tier": ["a", "b", "c"],
    });
    let limits = WriteLimits {
        max_rows: 100,
        now: T0,
        max_future_skew: Duration::from_secs(86_400),
    };
    let rows = parse_rows(
        &registry.feature_views[0],
        PushedFrame::Json(df.as_object().unwrap()),
        &limits,
    )
    .unwrap();

    let appender = OfflineAppender::new(Arc::clone(&registry));
    assert_eq!(appender.append(0, rows).unwrap(), Appended::Durable(3));
    let wal = appender.wal_dir(0).to_path_buf();
    let segments = files_in(&wal);
    assert_eq!(segments.len(), 1, "{segments:?}");
    let logged = std::fs::read(&segments[0]).unwrap();
    let written: Vec<PathBuf> = appender
        .flush_all()
        .unwrap()
        .iter()
        .map(|l| l.as_local().expect("a local source").to_path_buf())
        .collect();
    assert_eq!(written.len(), 1);
    assert_eq!(files_in(&wal), Vec::<PathBuf>::new());
    // Put the segment back, as if the process died before deleting it.
    std::fs::write(&segments[0], &logged).unwrap();

    let restarted = OfflineAppender::new(registry);
    // Its file is in place: the segment is only deleted.
    assert_eq!(restarted.recover().unwrap(), 0);
    let pushed = dir.path().join("data/user_stats/pushed");
    assert_eq!(parquet_files(&pushed), written);
    let expected = ["alice", "bob", "carol"].map(String::from).into();
    assert_exactly_once(&pushed_users(&pushed), &expected);
    assert_eq!(files_in(&wal), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_segment_with_a_torn_tail_replays_only_its_complete_records() {
    let dir = tempfile::tempdir().unwrap();
    let registry = load_registry(dir.path(), YAML);
    let limits = WriteLimits {
        max_rows: 100,
        now: T0,
        max_future_skew: Duration::from_secs(86_400),
    };
    let appender = OfflineAppender::new(Arc::clone(&registry));
    for user in ["alice", "bob"] {
        let df = json!({
            "user_id": [user],
            "event_timestamp": [quiver::serving::json::format_timestamp(T0 - HOUR)],
            "score": [0.5],
            "orders": [1],
            "tier": ["a"],
        });
        let rows = parse_rows(
            &registry.feature_views[0],
            PushedFrame::Json(df.as_object().unwrap()),
            &limits,
        )
        .unwrap();
        appender.append(0, rows).unwrap();
    }
    let segment = files_in(appender.wal_dir(0)).remove(0);
    // The second record loses its last bytes, as if the crash hit before its fsync completed.
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    drop(appender);

    let restarted = OfflineAppender::new(registry);
    assert_eq!(restarted.recover().unwrap(), 1);
    let pushed = dir.path().join("data/user_stats/pushed");
    assert_eq!(pushed_users(&pushed), ["alice"]);
}
