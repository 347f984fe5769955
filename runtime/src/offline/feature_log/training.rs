//! `quiver historical --from-log`: a training set of the values that were served, from logged rows
//! and a label file joined on the request id (and the entity row, when the labels have it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchReader, UInt32Array};
use arrow::compute::{cast, concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Field as ArrowField, Schema};

use super::layout::{REQUEST_ID, REQUEST_TIME, ROW};
use super::read::read_logs;
use crate::offline::OfflineError;
use crate::offline::historical::{META_FEATURE_SERVICE, META_FEATURES};
use crate::offline::push_writer::write_parquet_atomically;
use crate::offline::source::open_parquet;
use crate::types::EpochMicros;

/// What to build.
#[derive(Debug, Clone)]
pub struct FromLogRequest {
    /// A feature log destination.
    pub log_dir: PathBuf,
    /// Parquet with a `request_id` column (and optionally `row`), and the labels.
    pub labels: PathBuf,
    /// The training set to write.
    pub output: PathBuf,
    /// The feature service, when the log holds several.
    pub feature_service: Option<String>,
    /// Only rows requested at or after this time.
    pub since: Option<EpochMicros>,
    /// Only rows requested before this time.
    pub until: Option<EpochMicros>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromLogSummary {
    /// The feature service.
    pub feature_service: String,
    /// Rows written.
    pub rows: u64,
    /// Label rows with no logged row (not sampled, or outside the range).
    pub unmatched_labels: u64,
}

/// Joins the labels with the logged rows: one output row per (label row, logged row) pair with the
/// same request id (and row, when the labels have a `row` column), in label order: the label
/// columns, then the logged `request_time`, join keys, request fields and feature values (named
/// `view__feature`, exactly as served; statuses and event timestamps are left out). Written
/// atomically.
pub fn training_set_from_log(request: &FromLogRequest) -> Result<FromLogSummary, OfflineError> {
    let mut logs = read_logs(&request.log_dir, request.since, request.until)?;
    if let Some(name) = &request.feature_service {
        logs.retain(|l| &l.metadata.feature_service == name);
    }
    let services: Vec<&str> = logs
        .iter()
        .map(|l| l.metadata.feature_service.as_str())
        .collect();
    let Some(first) = logs.first() else {
        return Err(OfflineError::Source {
            path: request.log_dir.display().to_string(),
            message: match &request.feature_service {
                Some(s) => format!("holds no logged rows of feature service \"{s}\""),
                None => "holds no logged rows".into(),
            },
        });
    };
    if services.iter().any(|s| *s != services[0]) {
        return Err(OfflineError::Other(format!(
            "{} holds rows of several feature services ({}); choose one with --feature-service",
            request.log_dir.display(),
            services.join(", ")
        )));
    }
    if logs.len() > 1 {
        return Err(OfflineError::Other(format!(
            "feature service \"{}\" was logged with different columns over the range; \
             narrow it with --since/--until",
            services[0]
        )));
    }
    let meta = first.metadata.clone();
    let logged = &first.batch;

    let labels = read_all(&request.labels)?;
    let label_ids = string_column(&labels, REQUEST_ID, &request.labels)?;
    let label_rows = match labels.column_by_name(ROW) {
        Some(c) => Some(
            cast(c, &DataType::Int64)
                .map_err(|e| column_error(&request.labels, ROW, e))?
                .as_primitive::<arrow::datatypes::Int64Type>()
                .clone(),
        ),
        None => None,
    };
    let log_ids = string_column(logged, REQUEST_ID, &request.log_dir)?;
    let log_rows = logged
        .column_by_name(ROW)
        .ok_or_else(|| OfflineError::MissingColumn {
            file: request.log_dir.display().to_string(),
            column: ROW.into(),
        })?
        .as_primitive::<arrow::datatypes::Int32Type>()
        .clone();
    let mut by_id: HashMap<&str, Vec<u32>> = HashMap::new();
    for r in 0..logged.num_rows() {
        by_id.entry(log_ids.value(r)).or_default().push(r as u32);
    }
    let mut take_labels = Vec::new();
    let mut take_logged = Vec::new();
    let mut unmatched = 0u64;
    for r in 0..labels.num_rows() {
        let matches: Vec<u32> = if label_ids.is_null(r) {
            Vec::new()
        } else {
            by_id
                .get(label_ids.value(r))
                .map(|rows| {
                    rows.iter()
                        .copied()
                        .filter(|&l| {
                            label_rows.as_ref().is_none_or(|lr| {
                                !lr.is_null(r)
                                    && lr.value(r) == i64::from(log_rows.value(l as usize))
                            })
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        if matches.is_empty() {
            unmatched += 1;
        }
        for l in matches {
            take_labels.push(r as u32);
            take_logged.push(l);
        }
    }
    let labels_out = take_record_batch(&labels, &UInt32Array::from(take_labels))
        .map_err(|e| OfflineError::Other(format!("cannot select label rows: {e}")))?;
    let logged_out = take_record_batch(logged, &UInt32Array::from(take_logged))
        .map_err(|e| OfflineError::Other(format!("cannot select logged rows: {e}")))?;
    let mut fields: Vec<ArrowField> = labels_out
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns: Vec<ArrayRef> = labels_out.columns().to_vec();
    let mut wanted: Vec<&str> = vec![REQUEST_TIME];
    wanted.extend(meta.join_keys.iter().map(|k| k.name.as_str()));
    wanted.extend(meta.request_fields.iter().map(|k| k.name.as_str()));
    wanted.extend(meta.features.iter().map(|f| f.column.as_str()));
    for name in wanted {
        if labels.schema().index_of(name).is_ok() {
            // The label file has it already (a join key, typically): keep the label's.
            continue;
        }
        let (i, field) = logged_out
            .schema()
            .column_with_name(name)
            .map(|(i, f)| (i, f.clone()))
            .ok_or_else(|| OfflineError::MissingColumn {
                file: request.log_dir.display().to_string(),
                column: name.to_string(),
            })?;
        fields.push(field);
        columns.push(Arc::clone(logged_out.column(i)));
    }
    let features: Vec<&str> = meta.features.iter().map(|f| f.feature.as_str()).collect();
    let metadata = HashMap::from([
        (
            META_FEATURES.to_string(),
            serde_json::to_string(&features).expect("serializable"),
        ),
        (
            META_FEATURE_SERVICE.to_string(),
            meta.feature_service.clone(),
        ),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, metadata)),
        columns,
    )
    .map_err(|e| OfflineError::Other(format!("cannot build the training set: {e}")))?;
    let name = request
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "training.parquet".into());
    let tmp = request.output.with_file_name(format!(".{name}.tmp"));
    write_parquet_atomically(&tmp, &request.output, &batch)?;
    Ok(FromLogSummary {
        feature_service: meta.feature_service,
        rows: batch.num_rows() as u64,
        unmatched_labels: unmatched,
    })
}

fn column_error(file: &Path, column: &str, e: impl std::fmt::Display) -> OfflineError {
    OfflineError::ColumnType {
        file: file.display().to_string(),
        column: column.into(),
        message: e.to_string(),
    }
}

fn string_column(
    batch: &RecordBatch,
    name: &str,
    file: &Path,
) -> Result<arrow::array::StringArray, OfflineError> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| OfflineError::MissingColumn {
            file: file.display().to_string(),
            column: name.into(),
        })?;
    let c = cast(c, &DataType::Utf8).map_err(|e| column_error(file, name, e))?;
    Ok(c.as_string::<i32>().clone())
}

fn read_all(path: &Path) -> Result<RecordBatch, OfflineError> {
    let reader = open_parquet(path)?
        .build()
        .map_err(|e| column_error(path, "*", e))?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> =
        reader
            .collect::<Result<_, _>>()
            .map_err(|e| OfflineError::Source {
                path: path.display().to_string(),
                message: format!("cannot read: {e}"),
            })?;
    concat_batches(&schema, &batches).map_err(|e| OfflineError::Source {
        path: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })
}
