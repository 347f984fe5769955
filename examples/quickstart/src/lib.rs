//! Sample data for Quiver's quickstart: users of an online shop with the features of a fraud model.
//!
//! `user_features` (one snapshot per user per day over a week, some nulls, some corrected rows
//! that share an event timestamp and differ in created timestamp) and `user_sessions` (hourly
//! activity). Generation is deterministic for a given seed and anchor time.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, Float32Builder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
const CATEGORIES: [&str; 6] = [
    "electronics",
    "books",
    "fashion",
    "home",
    "grocery",
    "sports",
];
const DEVICES: [&str; 3] = ["ios", "android", "web"];

/// What was generated.
#[derive(Debug, Clone, Copy)]
pub struct Generated {
    /// Rows in `user_features/snapshots.parquet`.
    pub user_feature_rows: usize,
    /// Rows in `user_sessions/activity.parquet`.
    pub session_rows: usize,
    /// Number of users.
    pub users: usize,
    /// Rows in `labels.parquet`, the entity dataframe for training sets.
    pub label_rows: usize,
}

/// The id of user `i`, as used in the data and in requests (`user_0001`, ...).
pub fn user_id(i: usize) -> String {
    format!("user_{i:04}")
}

fn ts_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

fn ts_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )
}

/// Writes `user_features/snapshots.parquet` and `user_sessions/activity.parquet` into `dir` (one
/// directory per view, so pushed rows can be appended beside them). Timestamps lie in the
/// week before `anchor` (epoch microseconds); about one user in ten has been inactive for more
/// than a day, so its features are older than the 24h ttl.
pub fn generate(dir: &Path, users: usize, anchor: i64, seed: u64) -> Result<Generated> {
    // Whole minutes keep the timestamps in responses readable.
    let anchor = anchor - anchor.rem_euclid(60_000_000);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut rng = StdRng::seed_from_u64(seed);

    let mut uid = StringBuilder::new();
    let mut event = ts_builder();
    let mut created = ts_builder();
    let mut aov = Float32Builder::new();
    let mut orders = Int64Builder::new();
    let mut category = StringBuilder::new();
    let mut age = Int64Builder::new();
    let mut fraud = Float32Builder::new();
    let mut rows = 0;
    for i in 1..=users {
        let id = user_id(i);
        let inactive_days = if rng.random_bool(0.1) {
            rng.random_range(2..5)
        } else {
            0
        };
        let signup_days: i64 = rng.random_range(1..1500);
        let base_aov: f32 = rng.random_range(8.0..250.0);
        let base_fraud: f32 = if rng.random_bool(0.05) {
            rng.random_range(0.6..0.99)
        } else {
            rng.random_range(0.0..0.2)
        };
        let offset = rng.random_range(0..12) * HOUR;
        for day in (inactive_days..7).rev() {
            let ts = anchor - day * DAY - offset - HOUR;
            let corrections = if rng.random_bool(0.03) { 2 } else { 1 };
            for c in 0..corrections {
                uid.append_value(&id);
                event.append_value(ts);
                created.append_value(ts + 5 * 60_000_000 + c * HOUR);
                let drift: f32 = rng.random_range(0.9..1.1);
                aov.append_value((base_aov * drift * 100.0).round() / 100.0);
                orders.append_value(rng.random_range(0..40));
                if signup_days < 30 && rng.random_bool(0.5) {
                    category.append_null();
                } else {
                    category.append_value(CATEGORIES[rng.random_range(0..CATEGORIES.len())]);
                }
                age.append_value(signup_days + 7 - day);
                if rng.random_bool(0.05) {
                    fraud.append_null();
                } else {
                    fraud.append_value(((base_fraud * drift).min(1.0) * 1000.0).round() / 1000.0);
                }
                rows += 1;
            }
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        ts_field("event_timestamp"),
        ts_field("created"),
        Field::new("avg_order_value_7d", DataType::Float32, true),
        Field::new("total_orders_30d", DataType::Int64, true),
        Field::new("preferred_category", DataType::Utf8, true),
        Field::new("account_age_days", DataType::Int64, true),
        Field::new("fraud_score", DataType::Float32, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(uid.finish()),
        Arc::new(event.finish()),
        Arc::new(created.finish()),
        Arc::new(aov.finish()),
        Arc::new(orders.finish()),
        Arc::new(category.finish()),
        Arc::new(age.finish()),
        Arc::new(fraud.finish()),
    ];
    write_daily(
        &dir.join("user_features"),
        "snapshots.parquet",
        &RecordBatch::try_new(schema, columns)?,
    )?;

    let mut uid = StringBuilder::new();
    let mut event = ts_builder();
    let mut sessions = Int64Builder::new();
    let mut device = StringBuilder::new();
    let mut minutes = Float64Builder::new();
    let mut session_rows = 0;
    for i in 1..=users {
        let id = user_id(i);
        for hours_ago in (0..48).step_by(6) {
            uid.append_value(&id);
            event.append_value(anchor - hours_ago * HOUR - rng.random_range(0..3600) * 1_000_000);
            sessions.append_value(rng.random_range(0..12));
            device.append_value(DEVICES[rng.random_range(0..DEVICES.len())]);
            minutes.append_value((rng.random_range(0.5..45.0f64) * 10.0).round() / 10.0);
            session_rows += 1;
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        ts_field("event_timestamp"),
        Field::new("sessions_24h", DataType::Int64, true),
        Field::new("last_device", DataType::Utf8, true),
        Field::new("avg_session_minutes", DataType::Float64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(uid.finish()),
        Arc::new(event.finish()),
        Arc::new(sessions.finish()),
        Arc::new(device.finish()),
        Arc::new(minutes.finish()),
    ];
    write(
        &dir.join("user_sessions/activity.parquet"),
        RecordBatch::try_new(schema, columns)?,
    )?;
    let label_rows = write_labels(&dir.join("labels.parquet"), users, anchor, &mut rng)?;
    Ok(Generated {
        user_feature_rows: rows,
        session_rows,
        users,
        label_rows,
    })
}

/// Writes `labels.parquet`: past orders (user, time, amount) and whether each turned out to be
/// fraud — the entity dataframe `quiver historical` turns into a training set.
fn write_labels(path: &Path, users: usize, anchor: i64, rng: &mut StdRng) -> Result<usize> {
    let rows = users * 5;
    let mut uid = StringBuilder::new();
    let mut event = ts_builder();
    let mut amount = Float64Builder::new();
    let mut is_fraud = arrow::array::BooleanBuilder::new();
    for _ in 0..rows {
        uid.append_value(user_id(rng.random_range(1..=users)));
        event.append_value(anchor - rng.random_range(0..7 * 24 * 60) * 60_000_000);
        amount.append_value((rng.random_range(1.0..500.0f64) * 100.0).round() / 100.0);
        is_fraud.append_value(rng.random_bool(0.03));
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        ts_field("event_timestamp"),
        Field::new("amount", DataType::Float64, false),
        Field::new("is_fraud", DataType::Boolean, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(uid.finish()),
        Arc::new(event.finish()),
        Arc::new(amount.finish()),
        Arc::new(is_fraud.finish()),
    ];
    write(path, RecordBatch::try_new(schema, columns)?)?;
    Ok(rows)
}

/// Writes a batch as hive partitions by the UTC day of its `event_timestamp` column:
/// `<dir>/date=YYYY-MM-DD/<name>`, so readers can skip the days a time window excludes. Replaces
/// the files of an earlier run (and the single file older versions wrote).
fn write_daily(dir: &Path, name: &str, batch: &RecordBatch) -> Result<()> {
    use arrow::array::{AsArray, UInt32Array};
    use arrow::datatypes::TimestampMicrosecondType;
    let _ = std::fs::remove_file(dir.join(name));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("date=") {
                let _ = std::fs::remove_file(entry.path().join(name));
            }
        }
    }
    let ts = batch
        .column_by_name("event_timestamp")
        .context("no event_timestamp column")?
        .as_primitive::<TimestampMicrosecondType>();
    let mut days: std::collections::BTreeMap<i64, Vec<u32>> = Default::default();
    for row in 0..ts.len() {
        days.entry(ts.value(row).div_euclid(DAY))
            .or_default()
            .push(row as u32);
    }
    for (day, rows) in days {
        let date = chrono::DateTime::from_timestamp_micros(day * DAY)
            .context("timestamp out of range")?
            .format("%Y-%m-%d");
        let indices = UInt32Array::from(rows);
        let part = arrow::compute::take_record_batch(batch, &indices)?;
        write(&dir.join(format!("date={date}")).join(name), part)?;
    }
    Ok(())
}

/// Writes one batch to a Parquet file, atomically (temporary file, then rename).
pub fn write(path: &Path, batch: RecordBatch) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("data.parquet");
    // A dot-named temporary: readers of the directory skip it until it is renamed into place.
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} into place", path.display()))?;
    Ok(())
}
