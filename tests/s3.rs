//! The offline store on object storage, against a real S3 API server (moto's standalone server,
//! started by the test on a free loopback port): materialization and training sets read from S3
//! and equal to the same runs on local files, partition and row-group pruning counted in the
//! server's own request log, pushes written to S3 as whole objects, and failures (missing bucket
//! or object, wrong credentials, a server dying mid-read) that name the URL, never the secret,
//! and leave no partial output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use quiver::clock::{ManualClock, SharedClock};
use quiver::entity_key::{EntityKey, KeyPart};
use quiver::store::RowKey;
use quiver_tests::process::QuiverProcess;
use quiver_tests::s3::{DyingProxy, S3Server, SECRET_ACCESS_KEY, quiver_env, quiver_env_at};
use quiver_tests::training::read_parquet;
use serde_json::json;

const BUCKET: &str = "offline";
/// 2026-01-01T00:00:00Z.
const DAY0: i64 = 1_767_225_600_000_000;
const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
const DAYS: i64 = 7;
const USERS: usize = 10;
/// Rows per row group: four hours of ten users.
const ROW_GROUP_ROWS: usize = 40;

fn quiver_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_quiver-under-test"))
}

/// Runs `quiver -c <config> <args>` with `env`.
fn quiver(config: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    Command::new(quiver_binary())
        .arg("-c")
        .arg(config)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("NO_COLOR", "1")
        .output()
        .expect("run quiver")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn succeeded(o: &Output) -> String {
    assert!(
        o.status.success(),
        "quiver failed:\n{}\n{}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// One day of hourly rows for every user, sorted by time, in row groups of four hours: the value
/// of `(user u, hour h of day d)` is `d * 1000 + h * 10 + u`.
fn day_batch(day: i64) -> RecordBatch {
    let (mut users, mut ts, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for h in 0..24 {
        for u in 0..USERS {
            users.push(format!("u{u}"));
            ts.push(DAY0 + day * DAY + h * HOUR);
            values.push((day * 1000 + h * 10) as f64 + u as f64);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("spend", DataType::Float64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(users)),
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        Arc::new(Float64Array::from(values)),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

fn parquet_bytes(batch: &RecordBatch, row_group_rows: usize) -> Vec<u8> {
    let props = WriterProperties::builder()
        .set_max_row_group_size(row_group_rows)
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props)).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    bytes
}

fn entities_batch(rows: &[(&str, i64)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap()
}

/// The registry: `spend` (no ttl, materialized) and `spend_day` (ttl 24h, for training sets),
/// both over `source`, and a push source feeding `spend`.
fn registry_yaml(source: &str, offline_store: &str) -> String {
    format!(
        r#"project: s3test
online_store: {{type: sqlite, path: online.db}}
{offline_store}
entities:
  - {{name: user, join_keys: [user_id], value_type: string}}
feature_views:
  - name: spend
    entities: [user]
    schema: [{{name: spend, dtype: float64}}]
    source: {{path: "{source}"}}
  - name: spend_day
    entities: [user]
    ttl: 24h
    schema: [{{name: spend, dtype: float64}}]
    source: {{path: "{source}"}}
push_sources:
  - {{name: spend_push, feature_view: spend}}
push:
  flush_interval: 0s
"#
    )
}

/// A server holding seven days of `spend` under `s3://offline/spend/date=.../part-0.parquet`,
/// the same files under `<dir>/local/spend/`, and the two registries that read them.
struct Setup {
    server: S3Server,
    dir: tempfile::TempDir,
    local: PathBuf,
    s3: PathBuf,
}

fn date(day: i64) -> String {
    chrono::DateTime::from_timestamp_micros(DAY0 + day * DAY)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

fn setup_with(offline_store: &str) -> Setup {
    let server = S3Server::start();
    server.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    for day in 0..DAYS {
        let key = format!("spend/date={}/part-0.parquet", date(day));
        let bytes = parquet_bytes(&day_batch(day), ROW_GROUP_ROWS);
        let local = dir.path().join("local").join(&key);
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, &bytes).unwrap();
        server.put(BUCKET, &key, bytes);
    }
    let local = dir.path().join("local/feature_store.yaml");
    std::fs::write(&local, registry_yaml("spend", "")).unwrap();
    std::fs::create_dir_all(dir.path().join("s3")).unwrap();
    let s3 = dir.path().join("s3/feature_store.yaml");
    std::fs::write(
        &s3,
        registry_yaml(&format!("s3://{BUCKET}/spend/"), offline_store),
    )
    .unwrap();
    Setup {
        server,
        dir,
        local,
        s3,
    }
}

fn setup() -> Setup {
    setup_with("")
}

impl Setup {
    fn env(&self) -> Vec<(String, String)> {
        quiver_env(&self.server)
    }

    /// The objects of `s3://offline/spend/` the server was asked for with GET since `since`
    /// requests (footers and column chunks), as their partition dates.
    fn dates_read(&self, since: usize) -> Vec<String> {
        let mut dates: Vec<String> = self.server.gets()[since..]
            .iter()
            .filter_map(|p| p.split("date=").nth(1))
            .map(|d| d[..10].to_string())
            .collect();
        dates.sort();
        dates.dedup();
        dates
    }
}

/// The `spend` value stored online for each user, from the embedded store next to `config`.
fn stored(config: &Path) -> Vec<Option<(i64, f64)>> {
    let registry = quiver::config::load(config).unwrap();
    let clock: SharedClock = Arc::new(ManualClock::new(DAY0));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = registry.open_store(clock).await.unwrap();
        let keys: Vec<EntityKey> = (0..USERS)
            .map(|u| EntityKey::new([KeyPart::Str(&format!("u{u}"))]))
            .collect();
        let rows: Vec<RowKey<'_>> = keys
            .iter()
            .map(|entity| RowKey {
                view: "spend",
                entity,
            })
            .collect();
        store
            .read(&rows)
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                r.map(|r| match &r.values[0] {
                    quiver::types::Value::Float64(v) => (r.event_ts, *v),
                    other => panic!("unexpected {other:?}"),
                })
            })
            .collect()
    })
}

#[test]
fn materializing_from_s3_reads_only_the_partitions_and_row_groups_of_its_window() {
    let s = setup();
    let env = s.env();
    // The first four hours of the last day: one partition, one row group of six.
    let window = ["2026-01-07T00:00:00Z", "2026-01-07T03:59:59Z"];
    let before = s.server.gets().len();
    let out = succeeded(&quiver(
        &s.s3,
        &env,
        &["materialize", window[0], window[1], "--views", "spend"],
    ));
    assert!(
        out.contains("1 files read (1 row groups), 6 files and 5 row groups skipped"),
        "{out}"
    );
    assert_eq!(s.dates_read(before), ["2026-01-07"]);

    // The same run on local files gives the same summary and the same stored values.
    let local = succeeded(&quiver(
        &s.local,
        &[],
        &["materialize", window[0], window[1], "--views", "spend"],
    ));
    // Equal but for the bytes read: local reads count their buffered read-ahead.
    let line = |text: &str| {
        let line = text.lines().find(|l| l.starts_with("spend:")).unwrap();
        line[..line.rfind(", ").unwrap()].to_string()
    };
    assert_eq!(line(&out), line(&local));
    let values = stored(&s.s3);
    assert_eq!(values, stored(&s.local));
    // u3's latest row in the window: day 6, hour 3.
    assert_eq!(values[3], Some((DAY0 + 6 * DAY + 3 * HOUR, 6033.0)));
}

#[test]
fn incremental_materialization_from_s3_reads_only_what_is_new_since_the_watermark() {
    let s = setup();
    let env = s.env();
    // No watermark and no ttl: every partition.
    let first = succeeded(&quiver(
        &s.s3,
        &env,
        &[
            "materialize-incremental",
            "2026-01-07T05:59:59Z",
            "--views",
            "spend",
        ],
    ));
    assert!(first.contains("7 files read"), "{first}");
    // From the watermark (05:59:59 on the last day) on: one partition, the last five of its six
    // row groups.
    let before = s.server.gets().len();
    let second = succeeded(&quiver(
        &s.s3,
        &env,
        &[
            "materialize-incremental",
            "2026-01-07T23:59:59Z",
            "--views",
            "spend",
        ],
    ));
    assert!(
        second.contains("1 files read (5 row groups), 6 files and 1 row groups skipped"),
        "{second}"
    );
    assert_eq!(s.dates_read(before), ["2026-01-07"]);
    assert_eq!(stored(&s.s3)[9], Some((DAY0 + 6 * DAY + 23 * HOUR, 6239.0)));
}

#[test]
fn a_training_set_built_from_s3_entities_is_written_to_s3_equal_to_the_local_one() {
    let s = setup();
    let env = s.env();
    let entities = entities_batch(&[
        ("u1", DAY0 + 4 * DAY + 12 * HOUR),
        ("u2", DAY0 + 4 * DAY + 12 * HOUR + 1),
        ("u1", DAY0 + 3 * DAY + 13 * HOUR),
        ("nobody", DAY0 + 4 * DAY),
    ]);
    let bytes = parquet_bytes(&entities, 1024);
    s.server
        .put(BUCKET, "labels/entities.parquet", bytes.clone());
    let local_entities = s.dir.path().join("local/entities.parquet");
    std::fs::write(&local_entities, &bytes).unwrap();

    let before = s.server.gets().len();
    let out = succeeded(&quiver(
        &s.s3,
        &env,
        &[
            "historical",
            "--entities",
            "s3://offline/labels/entities.parquet",
            "--features",
            "spend_day:spend",
            "--output",
            "s3://offline/training/set.parquet",
        ],
    ));
    // Entity times from day 3 13:00 to day 4 12:00, ttl 24h: days 2 to 4 can hold usable rows.
    assert!(out.contains("3 files read"), "{out}");
    assert!(out.contains("4 files and"), "{out}");
    assert_eq!(
        s.dates_read(before),
        ["2026-01-03", "2026-01-04", "2026-01-05"]
    );
    let remote = s
        .server
        .get(BUCKET, "training/set.parquet")
        .expect("the training set is on S3");
    let remote_path = s.dir.path().join("remote.parquet");
    std::fs::write(&remote_path, remote).unwrap();

    let local_out = s.dir.path().join("local/set.parquet");
    succeeded(&quiver(
        &s.local,
        &[],
        &[
            "historical",
            "--entities",
            local_entities.to_str().unwrap(),
            "--features",
            "spend_day:spend",
            "--output",
            local_out.to_str().unwrap(),
        ],
    ));
    let (remote, local) = (read_parquet(&remote_path), read_parquet(&local_out));
    assert_eq!(remote.columns(), local.columns());
    let spend = remote
        .column_by_name("spend")
        .unwrap()
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert_eq!(spend.value(0), 4121.0);
    assert_eq!(spend.value(1), 4122.0);
    assert_eq!(spend.value(2), 3131.0);
    assert!(spend.is_null(3));
    // No temporary object was left beside it.
    assert_eq!(s.server.list(BUCKET, "training"), ["training/set.parquet"]);
}

#[test]
fn a_row_pushed_to_an_s3_offline_store_is_a_whole_object_that_historical_then_reads() {
    let s = setup();
    let env = s.env();
    let server = QuiverProcess::serve_with_env(&quiver_binary(), &s.s3, &env);
    let pushed_at = DAY0 + 7 * DAY + 6 * HOUR;
    let body = json!({
        "push_source_name": "spend_push",
        "to": "offline",
        "df": {
            "user_id": ["u4"],
            "event_timestamp": [quiver::serving::json::format_timestamp(pushed_at)],
            "spend": [99.5],
        },
    });
    let response = reqwest::blocking_post(&format!("{}/push", server.base_url()), &body);
    assert_eq!(response.0, 200, "{}", response.1);
    drop(server);

    let keys = s.server.list(BUCKET, "spend/pushed");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("spend/pushed/date=2026-01-08/part-"),
        "{keys:?}"
    );
    let entities = entities_batch(&[("u4", pushed_at + HOUR), ("u5", pushed_at + HOUR)]);
    s.server.put(
        BUCKET,
        "labels/pushed.parquet",
        parquet_bytes(&entities, 1024),
    );
    let out = succeeded(&quiver(
        &s.s3,
        &env,
        &[
            "historical",
            "--entities",
            "s3://offline/labels/pushed.parquet",
            "--features",
            "spend_day:spend",
            "--output",
            "s3://offline/training/pushed.parquet",
        ],
    ));
    // Day 6 and the pushed object (day 7); days 0 to 5 are skipped by their partitions.
    assert!(out.contains("2 files read"), "{out}");
    let path = s.dir.path().join("pushed.parquet");
    std::fs::write(
        &path,
        s.server.get(BUCKET, "training/pushed.parquet").unwrap(),
    )
    .unwrap();
    let batch = read_parquet(&path);
    let spend = batch
        .column_by_name("spend")
        .unwrap()
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert_eq!(spend.value(0), 99.5);
    // u5's latest row is day 6, 23:00, seven hours before: within the ttl.
    assert_eq!(spend.value(1), 6235.0);
}

#[test]
fn a_missing_bucket_or_object_is_an_error_naming_the_url_without_the_secret() {
    let s = setup();
    let env = s.env();
    let missing_bucket = s.dir.path().join("s3/missing_bucket.yaml");
    std::fs::write(
        &missing_bucket,
        registry_yaml("s3://no-such-bucket/spend/", ""),
    )
    .unwrap();
    let out = quiver(
        &missing_bucket,
        &env,
        &[
            "materialize",
            "2026-01-01",
            "2026-01-02",
            "--views",
            "spend",
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("s3://no-such-bucket/spend"), "{err}");
    assert!(!err.contains(SECRET_ACCESS_KEY) && !stdout(&out).contains(SECRET_ACCESS_KEY));

    let out = quiver(
        &s.s3,
        &env,
        &[
            "historical",
            "--entities",
            "s3://offline/labels/missing.parquet",
            "--features",
            "spend_day:spend",
            "--output",
            "s3://offline/training/never.parquet",
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("s3://offline/labels/missing.parquet: no such object"),
        "{err}"
    );
    assert!(!err.contains(SECRET_ACCESS_KEY));
    assert!(s.server.list(BUCKET, "training").is_empty());
}

#[test]
fn wrong_credentials_are_an_error_naming_the_url_and_never_the_secret() {
    // A server that checks every request's signature against the users it knows (none).
    let server = S3Server::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("feature_store.yaml");
    std::fs::write(&config, registry_yaml(&format!("s3://{BUCKET}/spend/"), "")).unwrap();
    let out = quiver(
        &config,
        &[
            quiver_env(&server),
            vec![("QUIVER_LOG".into(), "debug".into())],
        ]
        .concat(),
        &[
            "materialize",
            "2026-01-01",
            "2026-01-02",
            "--views",
            "spend",
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("s3://offline/spend"), "{err}");
    assert!(
        err.contains("403") || err.contains("InvalidAccessKeyId"),
        "{err}"
    );
    assert!(
        !err.contains(SECRET_ACCESS_KEY) && !stdout(&out).contains(SECRET_ACCESS_KEY),
        "the secret leaked:\n{err}"
    );
}

#[test]
fn a_server_dying_mid_read_fails_the_run_with_a_clear_error_and_leaves_no_output() {
    let mut s = setup_with("offline_store: {max_retries: 2, retry_timeout: 10s}");
    let entities = entities_batch(&[("u1", DAY0 + 6 * DAY + 12 * HOUR)]);
    s.server.put(
        BUCKET,
        "labels/entities.parquet",
        parquet_bytes(&entities, 1024),
    );
    let args = |output: &str| {
        [
            "historical",
            "--entities",
            "s3://offline/labels/entities.parquet",
            "--features",
            "spend:spend",
            "--output",
            output,
        ]
        .map(String::from)
    };
    // A run through a proxy that never dies measures the bytes a whole run reads: the listing,
    // the entity file, seven footers, then the column chunks.
    let whole = DyingProxy::start(s.server.port(), u64::MAX, || {});
    let measured = s.dir.path().join("measured.parquet");
    let out = quiver(
        &s.s3,
        &quiver_env_at(&whole.endpoint()),
        &args(measured.to_str().unwrap())
            .each_ref()
            .map(String::as_str),
    );
    succeeded(&out);
    let total = whole.relayed();
    // The second run loses the server three quarters of the way through.
    let pid = s.server.pid();
    let proxy = DyingProxy::start(s.server.port(), total * 3 / 4, move || {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
    });
    let out_dir = s.dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let output = out_dir.join("training.parquet");
    let started = std::time::Instant::now();
    let out = quiver(
        &s.s3,
        &quiver_env_at(&proxy.endpoint()),
        &args(output.to_str().unwrap())
            .each_ref()
            .map(String::as_str),
    );
    assert!(proxy.died.load(std::sync::atomic::Ordering::SeqCst));
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("s3://offline/spend/date="), "{err}");
    assert!(!err.contains(SECRET_ACCESS_KEY));
    // Retries are bounded: the run gives up instead of hanging.
    assert!(started.elapsed() < std::time::Duration::from_secs(120));
    // No output, complete or partial, and no temporary file left behind.
    let left: Vec<_> = std::fs::read_dir(&out_dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
    s.server.kill();
}

mod reqwest {
    /// POSTs JSON with a blocking HTTP/1.0 request; returns the status and body.
    pub fn blocking_post(url: &str, body: &serde_json::Value) -> (u16, String) {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (addr, path) = rest.split_at(rest.find('/').unwrap());
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let body = body.to_string();
        write!(
            stream,
            "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

/// The README's "Offline data on S3": the quickstart data uploaded to a bucket, then
/// `examples/s3/feature_store.yaml` materializing and building a training set from it.
#[test]
fn the_quickstart_runs_from_s3_with_its_day_partitions_pruned() {
    let server = S3Server::start();
    server.create_bucket("quiver-quickstart");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let now = chrono::Utc::now().timestamp_micros();
    quickstart::generate(&data, 200, now, 42).unwrap();
    let mut uploaded = Vec::new();
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let key = path
                    .strip_prefix(&data)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                server.upload("quiver-quickstart", &key, &path);
                uploaded.push(key);
            }
        }
    }
    assert!(
        uploaded
            .iter()
            .filter(|k| k.starts_with("user_features/date="))
            .count()
            >= 7,
        "{uploaded:?}"
    );
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/s3/feature_store.yaml");
    let config = dir.path().join("feature_store.yaml");
    std::fs::write(
        &config,
        std::fs::read_to_string(example)
            .unwrap()
            .replace("dir: ../../transforms/wasm", "dir: transforms"),
    )
    .unwrap();
    let env = quiver_env(&server);

    let out = succeeded(&quiver(&config, &env, &["materialize-incremental", "now"]));
    let line = out
        .lines()
        .find(|l| l.starts_with("user_features:"))
        .unwrap_or_else(|| panic!("{out}"));
    // The last 24 hours (the view's ttl) touch at most two of the seven days.
    let skipped: u64 = line
        .split(", ")
        .find_map(|part| {
            part.split_once(" files and ")
                .and_then(|(n, _)| n.rsplit(' ').next())
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(skipped >= 5, "{line}");

    let out = succeeded(&quiver(
        &config,
        &env,
        &[
            "historical",
            "--entities",
            "s3://quiver-quickstart/labels.parquet",
            "--feature-service",
            "fraud_model_v1",
            "--output",
            "s3://quiver-quickstart/training/fraud_model_v1.parquet",
        ],
    ));
    assert!(out.contains("files read"), "{out}");
    let training = server
        .get("quiver-quickstart", "training/fraud_model_v1.parquet")
        .expect("the training set is on S3");
    let path = dir.path().join("training.parquet");
    std::fs::write(&path, training).unwrap();
    let batch = read_parquet(&path);
    assert!(batch.num_rows() > 0);
    assert!(batch.column_by_name("fraud_score").is_some());
}

/// Sets up a server that checks credentials: an IAM user allowed everything on S3, created while
/// the server still accepts unsigned requests, then a bucket holding one day of `spend`, written
/// with the user's keys. Returns the keys.
fn authenticated_bucket(server: &S3Server) -> (String, String) {
    let python = quiver_tests::python::venv("moto", quiver_tests::s3::MOTO).join("bin/python");
    let script = r#"
import io, json, sys, boto3
endpoint = sys.argv[1]
anonymous = dict(endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="setup", aws_secret_access_key="setup")
iam = boto3.client("iam", **anonymous)
iam.create_user(UserName="quiver")
iam.put_user_policy(UserName="quiver", PolicyName="s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="quiver")["AccessKey"]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
s3.create_bucket(Bucket="offline")
s3.put_object(Bucket="offline", Key="spend/date=2026-01-01/part-0.parquet", Body=sys.stdin.buffer.read())
print(key["AccessKeyId"], key["SecretAccessKey"])
"#;
    let mut child = Command::new(python)
        .args(["-c", script, &server.endpoint()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&parquet_bytes(&day_batch(0), ROW_GROUP_ROWS))
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (id, secret) = text.trim().split_once(' ').unwrap();
    (id.to_string(), secret.to_string())
}

#[test]
fn credentials_come_from_the_shared_credentials_file_and_its_profile() {
    // The first three requests (creating the user and its key) go unchecked; every later one
    // must be signed by a key the server knows. The endpoint, region and keys all come from the
    // profile.
    let server = S3Server::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    let (id, secret) = authenticated_bucket(&server);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("feature_store.yaml");
    std::fs::write(&config, registry_yaml("s3://offline/spend/", "")).unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = AKIAWRONGDEFAULT\naws_secret_access_key = wrong\n\n\
             [training]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"
        ),
    )
    .unwrap();
    let aws_config = dir.path().join("config");
    std::fs::write(
        &aws_config,
        format!(
            "[profile training]\nregion = us-east-1\nendpoint_url = {}\n",
            server.endpoint()
        ),
    )
    .unwrap();
    let env = |profile: &str| {
        vec![
            ("AWS_PROFILE".to_string(), profile.to_string()),
            (
                "AWS_SHARED_CREDENTIALS_FILE".to_string(),
                credentials.display().to_string(),
            ),
            (
                "AWS_CONFIG_FILE".to_string(),
                aws_config.display().to_string(),
            ),
        ]
    };
    let window = [
        "materialize",
        "2026-01-01",
        "2026-01-02",
        "--views",
        "spend",
    ];
    let out = succeeded(&quiver(&config, &env("training"), &window));
    assert!(out.contains("1 files read (6 row groups)"), "{out}");

    // The default profile's keys are refused, and named in no message.
    let out = quiver(&config, &env("default"), &window);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("s3://offline/spend"), "{err}");
    assert!(!err.contains(&secret) && !err.contains("secret_access_key = wrong"));
}
