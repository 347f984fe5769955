//! Generates the data of `benches/historical.sh`: a `user_features` source of many rows over a
//! month, an entity dataframe of user ids and times with a request field (`amount`) and a label,
//! and the `feature_store.yaml` that reads them (with the `user_risk` on-demand view).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use clap::Parser;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
/// 2026-01-01T00:00:00Z: the end of the generated month.
const END: i64 = 1_767_225_600_000_000;
const CATEGORIES: [&str; 6] = [
    "electronics",
    "books",
    "fashion",
    "home",
    "grocery",
    "sports",
];
/// Rows per Parquet row group (the unit the readers parallelize over).
const ROW_GROUP: usize = 256 * 1024;

/// Generate the historical-retrieval benchmark data.
#[derive(Parser)]
struct Args {
    /// Output directory.
    #[arg(long)]
    dir: PathBuf,
    /// Source rows.
    #[arg(long, default_value_t = 10_000_000)]
    source_rows: usize,
    /// Entity dataframe rows.
    #[arg(long, default_value_t = 1_000_000)]
    entity_rows: usize,
    /// Distinct users.
    #[arg(long, default_value_t = 500_000)]
    users: usize,
    /// Source files.
    #[arg(long, default_value_t = 8)]
    files: usize,
    /// Directory holding `user_risk.wasm`.
    #[arg(long)]
    transforms_dir: PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

fn ts_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )
}

fn writer(path: &Path, schema: Arc<Schema>) -> Result<ArrowWriter<File>> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_size(ROW_GROUP)
        .build();
    Ok(ArrowWriter::try_new(file, schema, Some(props))?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let data = args.dir.join("data/user_features");
    std::fs::create_dir_all(&data)?;
    let mut rng = StdRng::seed_from_u64(args.seed);

    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        ts_field("event_timestamp"),
        ts_field("created"),
        Field::new("avg_order_value_7d", DataType::Float32, true),
        Field::new("total_orders_30d", DataType::Int64, true),
        Field::new("preferred_category", DataType::Utf8, true),
        Field::new("account_age_days", DataType::Int64, true),
        Field::new("fraud_score", DataType::Float32, true),
    ]));
    let per_file = args.source_rows.div_ceil(args.files.max(1));
    let mut written = 0;
    for f in 0..args.files {
        let mut w = writer(&data.join(format!("part-{f:03}.parquet")), schema.clone())?;
        let rows_in_file = per_file.min(args.source_rows - written);
        let mut done = 0;
        while done < rows_in_file {
            let n = (rows_in_file - done).min(65536);
            let mut uid = Int64Builder::with_capacity(n);
            let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
            let mut created = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
            let mut aov = Float32Builder::with_capacity(n);
            let mut orders = Int64Builder::with_capacity(n);
            let mut category = StringBuilder::new();
            let mut age = Int64Builder::with_capacity(n);
            let mut fraud = Float32Builder::with_capacity(n);
            for _ in 0..n {
                let user = rng.random_range(0..args.users as i64);
                // Whole seconds over the month before END.
                let t = END - rng.random_range(0..30 * 24 * 3600) * 1_000_000;
                uid.append_value(user);
                ts.append_value(t);
                created.append_value(t + rng.random_range(0..600) * 1_000_000);
                aov.append_value(rng.random_range(5.0f32..300.0));
                orders.append_value(rng.random_range(0..60));
                if rng.random_bool(0.05) {
                    category.append_null();
                } else {
                    category.append_value(CATEGORIES[rng.random_range(0..CATEGORIES.len())]);
                }
                age.append_value(rng.random_range(0..2000));
                if rng.random_bool(0.05) {
                    fraud.append_null();
                } else {
                    fraud.append_value(rng.random_range(0.0f32..1.0));
                }
            }
            let columns: Vec<ArrayRef> = vec![
                Arc::new(uid.finish()),
                Arc::new(ts.finish()),
                Arc::new(created.finish()),
                Arc::new(aov.finish()),
                Arc::new(orders.finish()),
                Arc::new(category.finish()),
                Arc::new(age.finish()),
                Arc::new(fraud.finish()),
            ];
            w.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
            done += n;
        }
        w.close()?;
        written += rows_in_file;
    }

    let entity_schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        ts_field("event_timestamp"),
        Field::new("amount", DataType::Float64, false),
        Field::new("label", DataType::Boolean, false),
    ]));
    let mut w = writer(&args.dir.join("entities.parquet"), entity_schema.clone())?;
    let mut done = 0;
    while done < args.entity_rows {
        let n = (args.entity_rows - done).min(65536);
        let mut uid = Int64Builder::with_capacity(n);
        let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut amount = Float64Builder::with_capacity(n);
        let mut label = BooleanBuilder::with_capacity(n);
        for _ in 0..n {
            // A few unknown users, and times from before the data to after it.
            uid.append_value(rng.random_range(0..(args.users as i64 * 21 / 20)));
            ts.append_value(END - rng.random_range(-2 * DAY..32 * DAY));
            amount.append_value((rng.random_range(1.0f64..500.0) * 100.0).round() / 100.0);
            label.append_value(rng.random_bool(0.02));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(uid.finish()),
            Arc::new(ts.finish()),
            Arc::new(amount.finish()),
            Arc::new(label.finish()),
        ];
        w.write(&RecordBatch::try_new(entity_schema.clone(), columns)?)?;
        done += n;
    }
    w.close()?;

    std::fs::write(
        args.dir.join("feature_store.yaml"),
        format!(
            r#"project: bench
entities:
  - name: user
    join_keys: [user_id]
    value_type: int64
feature_views:
  - name: user_features
    entities: [user]
    ttl: 7d
    schema:
      - {{ name: avg_order_value_7d, dtype: float32 }}
      - {{ name: total_orders_30d, dtype: int64 }}
      - {{ name: preferred_category, dtype: string }}
      - {{ name: account_age_days, dtype: int64 }}
      - {{ name: fraud_score, dtype: float32 }}
    source:
      path: data/user_features
      timestamp_field: event_timestamp
      created_timestamp_column: created
on_demand_feature_views:
  - name: user_risk
    transform: user_risk
    sources: [user_features]
    request_fields:
      - {{ name: amount, dtype: float64 }}
    schema:
      - {{ name: order_value_per_order, dtype: float64 }}
      - {{ name: amount_over_avg, dtype: float64 }}
      - {{ name: risk_score, dtype: float64 }}
    timeout: 10s
transforms:
  dir: {}
"#,
            args.transforms_dir.display()
        ),
    )?;
    println!(
        "generated {} source rows in {} files, {} entity rows, {} users in {}",
        args.source_rows,
        args.files,
        args.entity_rows,
        args.users,
        args.dir.display()
    );
    Ok(())
}
