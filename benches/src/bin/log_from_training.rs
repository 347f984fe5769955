//! `log-from-training`: turns a training set of a feature service (written by `quiver historical
//! --feature-service S --full-feature-names`) into a feature log of S, as if every entity row had
//! been served at its `event_timestamp` with exactly those values, so `quiver skew` over it has a
//! known answer (100% match) and a known size. Used by `benches/skew.sh`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, RecordBatchReader};
use clap::Parser;
use quiver::offline::columns::{timestamp_at, value_at};
use quiver::offline::feature_log::layout::LogLayout;
use quiver::offline::feature_log::{LoggedRow, day_of, service_dir, to_batch};
use quiver::offline::push_writer::write_parquet_atomically;
use quiver::registry::FeatureStatus;
use quiver::types::{Value, ValueType};

#[derive(Parser)]
struct Args {
    /// The registry the training set was built with.
    #[arg(long)]
    config: PathBuf,
    /// The feature service.
    #[arg(long)]
    feature_service: String,
    /// The training set (full feature names).
    #[arg(long)]
    training: PathBuf,
    /// The log directory to write.
    #[arg(long)]
    log: PathBuf,
    /// Rows per log file.
    #[arg(long, default_value_t = 100_000)]
    file_rows: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let registry = quiver::config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(service) = registry
        .feature_services
        .iter()
        .position(|s| s.name.as_str() == args.feature_service)
    else {
        bail!("no feature service \"{}\"", args.feature_service);
    };
    let layout = LogLayout::new(&registry, service);
    // The sha256 of each transform module, as the server would have logged it.
    let modules: Arc<[Option<Arc<str>>]> = layout
        .metadata
        .transforms
        .iter()
        .map(|t| {
            let path = registry.transforms.dir.join(format!("{t}.wasm"));
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            Ok(Some(Arc::from(
                quiver_tests::wasm::sha256_hex(&bytes).as_str(),
            )))
        })
        .collect::<Result<_>>()?;
    let reader = quiver::offline::source::open_parquet(&args.training)?
        .with_batch_size(8192)
        .build()?;
    let schema = reader.schema();
    let col = |name: &str| {
        schema
            .index_of(name)
            .with_context(|| format!("no column {name}"))
    };
    let ts = col("event_timestamp")?;
    let keys: Vec<(usize, ValueType)> = layout
        .join_keys
        .iter()
        .map(|k| Ok((col(k.name.as_str())?, ValueType::Scalar(k.dtype))))
        .collect::<Result<_>>()?;
    let requests: Vec<(usize, ValueType)> = layout
        .request_fields
        .iter()
        .map(|(n, t)| Ok((col(n)?, *t)))
        .collect::<Result<_>>()?;
    let features: Vec<(usize, ValueType)> = layout
        .metadata
        .features
        .iter()
        .zip(&layout.feature_types)
        .map(|(f, t)| Ok((col(&f.column)?, *t)))
        .collect::<Result<_>>()?;
    // Rows by request day: one file per day and at most `file_rows` rows, as the server rolls them.
    let mut days: std::collections::BTreeMap<String, Vec<LoggedRow>> = Default::default();
    let mut files = 0u64;
    let mut total = 0u64;
    let mut flush = |rows: &mut Vec<LoggedRow>| -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        files += 1;
        let day = day_of(rows[0].request_ts);
        let dir = service_dir(&args.log, &args.feature_service).join(format!("date={day}"));
        std::fs::create_dir_all(&dir)?;
        let name = format!("part-{}-bench-{files:06}.parquet", rows[0].request_ts);
        let batch = to_batch(&layout, rows)?;
        write_parquet_atomically(&dir.join(format!(".{name}.tmp")), &dir.join(name), &batch)?;
        rows.clear();
        Ok(())
    };
    for batch in reader {
        let batch = batch?;
        for r in 0..batch.num_rows() {
            let request_ts = timestamp_at(batch.column(ts).as_ref(), r).unwrap_or(0);
            let id: Arc<str> = format!("{total:032x}").into();
            total += 1;
            let row = LoggedRow {
                request_id: id,
                row: 0,
                request_ts,
                keys: keys
                    .iter()
                    .map(|&(c, t)| value_at(batch.column(c).as_ref(), t, r))
                    .collect(),
                request_fields: requests
                    .iter()
                    .map(|&(c, t)| value_at(batch.column(c).as_ref(), t, r))
                    .collect(),
                features: features
                    .iter()
                    .map(|&(c, t)| {
                        let column = batch.column(c);
                        if column.is_null(r) {
                            (Value::Null, FeatureStatus::NotFound, 0)
                        } else {
                            (value_at(column.as_ref(), t, r), FeatureStatus::Present, 0)
                        }
                    })
                    .collect(),
                modules: Arc::clone(&modules),
            };
            let rows = days.entry(day_of(request_ts)).or_default();
            rows.push(row);
            if rows.len() >= args.file_rows {
                flush(rows)?;
            }
        }
    }
    for rows in days.values_mut() {
        flush(rows)?;
    }
    println!(
        "wrote {total} logged rows of feature service \"{}\" in {files} files under {}",
        args.feature_service,
        args.log.display()
    );
    Ok(())
}
