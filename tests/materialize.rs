//! Materialization from real Parquet files into the embedded store: windows, newer-wins, created
//! timestamp ties, incremental watermarks, restarts, and errors that name the file and column.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use quiver::clock::{ManualClock, SharedClock};
use quiver::entity_key::{EntityKey, KeyPart};
use quiver::offline::materialize::{MaterializeRequest, ViewSummary, materialize};
use quiver::registry::Registry;
use quiver::store::{RowKey, SharedStore};
use quiver::types::Value;
use quiver_tests::fixtures::{
    HOUR, T0, UserRow, load_registry, user_registry_yaml, write_batch, write_user_rows,
};
use tempfile::TempDir;

struct Setup {
    dir: TempDir,
    registry: Arc<Registry>,
    clock: SharedClock,
    store: SharedStore,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/user_stats")).unwrap();
    let registry = load_registry(
        dir.path(),
        &user_registry_yaml("  type: sqlite\n  path: online.db"),
    );
    let clock: SharedClock = Arc::new(ManualClock::new(T0));
    let store = quiver::store::open(
        &registry.online_store,
        "test",
        &registry.store_catalog(),
        clock.clone(),
    )
    .await
    .unwrap();
    Setup {
        dir,
        registry,
        clock,
        store,
    }
}

impl Setup {
    fn write(&self, file: &str, rows: &[UserRow]) {
        write_user_rows(&self.dir.path().join("data/user_stats").join(file), rows);
    }

    async fn run(&self, start: Option<i64>, end: i64) -> ViewSummary {
        let request = MaterializeRequest {
            start,
            end,
            views: vec![],
            progress: false,
        };
        let mut out = materialize(&self.registry, &self.store, &self.clock, &request)
            .await
            .unwrap();
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    async fn stored(&self, user: &str) -> Option<(i64, Vec<Value>)> {
        let key = EntityKey::new([KeyPart::Str(user)]);
        let rows = self
            .store
            .read(&[RowKey {
                view: "user_stats",
                entity: &key,
            }])
            .await
            .unwrap();
        rows[0].as_ref().map(|r| (r.event_ts, r.values.clone()))
    }
}

#[tokio::test]
async fn keeps_the_latest_row_per_entity_within_the_window() {
    let s = setup().await;
    s.write(
        "a.parquet",
        &[
            UserRow::new("alice", T0 - 5 * HOUR, 0.1, 1, "a"),
            UserRow::new("alice", T0 - 3 * HOUR, 0.2, 2, "b"),
            UserRow::new("alice", T0 + HOUR, 0.9, 9, "future"),
            UserRow::new("bob", T0 - 4 * HOUR, 0.3, 3, "c"),
        ],
    );
    let summary = s.run(Some(T0 - 10 * HOUR), T0).await;
    assert_eq!(
        (summary.rows_read, summary.entities, summary.written),
        (4, 2, 2)
    );
    let (ts, values) = s.stored("alice").await.unwrap();
    assert_eq!(ts, T0 - 3 * HOUR);
    assert_eq!(
        values,
        vec![
            Value::Float32(0.2),
            Value::Int(2),
            Value::String("b".into())
        ]
    );
}

#[tokio::test]
async fn breaks_event_time_ties_by_the_later_created_timestamp() {
    let s = setup().await;
    let mut first = UserRow::new("alice", T0 - HOUR, 0.1, 1, "original");
    first.created_ts = T0 - HOUR + 10;
    let mut correction = UserRow::new("alice", T0 - HOUR, 0.2, 2, "corrected");
    correction.created_ts = T0 - HOUR + 20;
    // The correction comes first in the file: order must not matter.
    s.write("a.parquet", &[correction, first]);
    s.run(Some(0), T0).await;
    assert_eq!(
        s.stored("alice").await.unwrap().1[2],
        Value::String("corrected".into())
    );
}

#[tokio::test]
async fn an_older_window_never_overwrites_a_newer_value() {
    let s = setup().await;
    s.write(
        "a.parquet",
        &[
            UserRow::new("alice", T0 - 5 * HOUR, 0.1, 1, "old"),
            UserRow::new("alice", T0 - HOUR, 0.2, 2, "new"),
        ],
    );
    let newer = s.run(Some(T0 - 2 * HOUR), T0).await;
    assert_eq!(newer.written, 1);
    let older = s.run(Some(T0 - 10 * HOUR), T0 - 4 * HOUR).await;
    assert_eq!((older.written, older.skipped_older), (0, 1));
    assert_eq!(
        s.stored("alice").await.unwrap().1[2],
        Value::String("new".into())
    );
}

#[tokio::test]
async fn incremental_runs_continue_from_the_watermark() {
    let s = setup().await;
    s.write(
        "a.parquet",
        &[UserRow::new("alice", T0 - 2 * HOUR, 0.1, 1, "first")],
    );
    // Never materialized: the window starts one ttl (24h) before END.
    let first = s.run(None, T0).await;
    assert_eq!(
        (first.start, first.end, first.written),
        (T0 - 24 * HOUR, T0, 1)
    );
    assert_eq!(s.store.watermark("user_stats").await.unwrap(), Some(T0));

    s.write(
        "b.parquet",
        &[UserRow::new("alice", T0 + HOUR, 0.2, 2, "second")],
    );
    let second = s.run(None, T0 + 2 * HOUR).await;
    assert_eq!(
        (second.start, second.end, second.written),
        (T0, T0 + 2 * HOUR, 1)
    );
    assert_eq!(
        s.stored("alice").await.unwrap().1[2],
        Value::String("second".into())
    );
    assert_eq!(
        s.store.watermark("user_stats").await.unwrap(),
        Some(T0 + 2 * HOUR)
    );
}

#[tokio::test]
async fn records_whose_expiry_has_passed_are_not_written() {
    let s = setup().await;
    // ttl 24h + default slack 1h: a 26h-old row would expire before it is written.
    s.write(
        "a.parquet",
        &[
            UserRow::new("alice", T0 - 26 * HOUR, 0.1, 1, "stale"),
            UserRow::new("bob", T0 - 24 * HOUR - 1, 0.1, 1, "kept"),
        ],
    );
    let summary = s.run(Some(0), T0).await;
    assert_eq!((summary.written, summary.skipped_expired), (1, 1));
    assert!(s.stored("alice").await.is_none());
    assert!(s.stored("bob").await.is_some());
}

#[tokio::test]
async fn the_embedded_store_survives_a_restart() {
    let s = setup().await;
    s.write(
        "a.parquet",
        &[UserRow::new("alice", T0 - HOUR, 0.5, 5, "kept")],
    );
    s.run(Some(0), T0).await;
    drop(s.store);
    let reopened = quiver::store::open(
        &s.registry.online_store,
        "test",
        &s.registry.store_catalog(),
        s.clock.clone(),
    )
    .await
    .unwrap();
    let key = EntityKey::new([KeyPart::Str("alice")]);
    let rows = reopened
        .read(&[RowKey {
            view: "user_stats",
            entity: &key,
        }])
        .await
        .unwrap();
    assert_eq!(
        rows[0].as_ref().unwrap().values[2],
        Value::String("kept".into())
    );
}

/// Writes a one-row file with the join key and timestamps, plus the given feature columns.
fn write_bad_file(path: &Path, features: Vec<(Field, ArrayRef)>) {
    let tz = Some("UTC".into());
    let mut uid = StringBuilder::new();
    uid.append_value("alice");
    let mut ts = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    ts.append_value(T0 - HOUR);
    let mut created = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    created.append_value(T0 - HOUR);
    let mut fields = vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            false,
        ),
        Field::new(
            "created",
            DataType::Timestamp(TimeUnit::Microsecond, tz),
            false,
        ),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(uid.finish()),
        Arc::new(ts.finish()),
        Arc::new(created.finish()),
    ];
    for (field, column) in features {
        fields.push(field);
        columns.push(column);
    }
    write_batch(
        path,
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap(),
    );
}

fn float64_column(name: &str) -> (Field, ArrayRef) {
    let mut b = Float64Builder::new();
    b.append_value(0.5);
    (
        Field::new(name, DataType::Float64, true),
        Arc::new(b.finish()),
    )
}

async fn materialize_error(s: &Setup) -> String {
    let request = MaterializeRequest {
        start: Some(0),
        end: T0,
        views: vec![],
        progress: false,
    };
    materialize(&s.registry, &s.store, &s.clock, &request)
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test]
async fn a_missing_column_is_an_error_naming_file_and_column() {
    let s = setup().await;
    write_bad_file(&s.dir.path().join("data/user_stats/bad.parquet"), vec![]);
    let message = materialize_error(&s).await;
    assert!(message.contains("bad.parquet"), "{message}");
    assert!(message.contains("missing column \"score\""), "{message}");
}

#[tokio::test]
async fn a_column_of_the_wrong_type_is_an_error_naming_file_and_column() {
    let s = setup().await;
    write_bad_file(
        &s.dir.path().join("data/user_stats/bad.parquet"),
        vec![float64_column("score")],
    );
    let message = materialize_error(&s).await;
    assert!(message.contains("bad.parquet"), "{message}");
    assert!(
        message
            .contains("column \"score\" has Arrow type Float64, which cannot be read as float32"),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_source_is_an_error_naming_the_path() {
    let s = setup().await;
    std::fs::remove_dir_all(s.dir.path().join("data/user_stats")).unwrap();
    let message = materialize_error(&s).await;
    assert!(
        message.contains("data/user_stats") && message.contains("no such file or directory"),
        "{message}"
    );
}

#[tokio::test]
async fn a_file_that_is_not_parquet_is_an_error_naming_it() {
    let s = setup().await;
    std::fs::write(
        s.dir.path().join("data/user_stats/junk.parquet"),
        b"not parquet",
    )
    .unwrap();
    let message = materialize_error(&s).await;
    assert!(
        message.contains("junk.parquet") && message.contains("not a readable Parquet file"),
        "{message}"
    );
}
