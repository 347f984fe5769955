//! Entity dataframes for `historical`, and reading the training sets it writes.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatchReader;
use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};
use quiver::offline::columns::value_at;
use quiver::offline::historical::{
    FeatureList, HistoricalOptions, HistoricalRequest, HistoricalSummary, historical,
};
use quiver::registry::Registry;
use quiver::storage::Location;
use quiver::types::{Value, ValueType};

use crate::fixtures::write_batch;

/// Writes an entity dataframe of `user_id` (string), `event_timestamp` (microseconds, UTC) and a
/// pass-through `label` column holding each row's position.
pub fn write_user_entities(path: &Path, rows: &[(&str, i64)]) {
    let mut uid = StringBuilder::new();
    let mut ts = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut label = Int64Builder::new();
    for (i, (u, t)) in rows.iter().enumerate() {
        uid.append_value(u);
        ts.append_value(*t);
        label.append_value(i as i64);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("label", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(uid.finish()),
        Arc::new(ts.finish()),
        Arc::new(label.finish()),
    ];
    write_batch(path, RecordBatch::try_new(schema, columns).unwrap());
}

/// Writes an entity dataframe of `user_id`, `event_timestamp` (microseconds, UTC) and an `amount`
/// (float64) request field.
pub fn write_user_entities_with_amounts(path: &Path, rows: &[(&str, i64, f64)]) {
    let mut uid = StringBuilder::new();
    let mut ts = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut amount = Float64Builder::new();
    for (u, t, a) in rows {
        uid.append_value(u);
        ts.append_value(*t);
        amount.append_value(*a);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("amount", DataType::Float64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(uid.finish()),
        Arc::new(ts.finish()),
        Arc::new(amount.finish()),
    ];
    write_batch(path, RecordBatch::try_new(schema, columns).unwrap());
}

/// Reads a whole Parquet file into one batch.
pub fn read_parquet(path: &Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    concat_batches(&schema, &batches).unwrap()
}

/// The key-value metadata of a Parquet file.
pub fn parquet_metadata(path: &Path, key: &str) -> Option<String> {
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    reader
        .metadata()
        .file_metadata()
        .key_value_metadata()?
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
}

/// The values of a column, read as `dtype`.
pub fn values(batch: &RecordBatch, column: &str, dtype: ValueType) -> Vec<Value> {
    let col = batch
        .column_by_name(column)
        .unwrap_or_else(|| panic!("no column {column} in {:?}", batch.schema()));
    (0..batch.num_rows())
        .map(|r| value_at(col.as_ref(), dtype, r))
        .collect()
}

/// Runs `historical` and returns its summary.
pub fn run(
    registry: &Registry,
    entities: &Path,
    features: FeatureList,
    output: &Path,
    full_feature_names: bool,
    options: &HistoricalOptions,
) -> Result<HistoricalSummary, quiver::offline::OfflineError> {
    historical(
        registry,
        &HistoricalRequest {
            entities: Location::Local(entities.to_path_buf()),
            features,
            output: Location::Local(output.to_path_buf()),
            full_feature_names,
        },
        options,
    )
}

/// `view:feature` strings as a feature list.
pub fn features(specs: &[&str]) -> FeatureList {
    FeatureList::Features(specs.iter().map(|s| s.to_string()).collect())
}
