//! Writing the training set: the entity rows in input order with their features, and the Parquet
//! metadata recording how it was built, with the profile of its feature columns.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema};
use indicatif::ProgressBar;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::metadata::{FileMetaData, KeyValue, ParquetMetaData, RowGroupMetaData};
use parquet::file::properties::WriterProperties;
use serde_json::json;

use super::entities::{EntityFile, EntityInput};
use super::layout::Layout;
use super::merge::Merger;
use super::plan::{OutputSource, Plan};
use super::spill::Spill;
use super::transform::run_transform;
use super::{FeatureList, HistoricalOptions, TrainingSet};
use crate::monitoring::{
    META_PROFILE, Origin, ProfileColumn, ProfileOptions, Profiler, SecondPass,
};
use crate::offline::OfflineError;
use crate::offline::columns::{arrow_type, build_column};
use crate::offline::profile::now_rfc3339;
use crate::registry::Registry;
use crate::storage::Location;
use crate::types::Value;

/// Parquet key-value metadata key: the feature views used, as JSON.
pub const META_FEATURE_VIEWS: &str = "quiver.feature_views";
/// Parquet key-value metadata key: the requested features (`view:feature`), as a JSON list.
pub const META_FEATURES: &str = "quiver.features";
/// Parquet key-value metadata key: the feature service, when one was requested.
pub const META_FEATURE_SERVICE: &str = "quiver.feature_service";
/// Parquet key-value metadata key: the transform modules used, `{name: sha256}`, as JSON.
pub const META_TRANSFORMS: &str = "quiver.transforms";

/// Rows per batch when reading the entity file and writing the output.
const OUTPUT_BATCH_ROWS: usize = 8192;

/// Where the training set goes.
pub(super) enum Sink<'a> {
    /// A Parquet file (local or an object), written whole then renamed or uploaded.
    File(&'a Location),
    /// Arrow batches in memory, returned to the caller; nothing is written to disk.
    Memory,
}

/// What was asked for, as the training set records it.
pub(super) struct Asked<'a> {
    pub(super) entities: &'a EntityInput,
    pub(super) features: &'a FeatureList,
    pub(super) full_feature_names: bool,
}

/// The Parquet key-value metadata: the views, features, project and transforms used.
fn metadata(registry: &Registry, plan: &Plan<'_>, request: &Asked<'_>) -> Vec<KeyValue> {
    let views: Vec<_> = plan
        .views
        .iter()
        .map(|vp| {
            let v = vp.view;
            json!({
                "name": v.name.as_str(),
                "entities": v.entities.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
                "join_keys": v.join_keys.iter().map(|k| json!({
                    "name": k.name.as_str(),
                    "dtype": k.dtype.name(),
                })).collect::<Vec<_>>(),
                "fields": v.fields.iter().map(|f| json!({
                    "name": f.name.as_str(),
                    "dtype": f.dtype.to_string(),
                })).collect::<Vec<_>>(),
                "ttl_seconds": v.ttl.map(|t| t.as_secs_f64()),
                "source": {
                    "path": v.source.path_spec,
                    "timestamp_field": v.source.timestamp_field,
                    "created_timestamp_column": v.source.created_timestamp_column,
                },
            })
        })
        .collect();
    let mut kv = vec![
        KeyValue::new(
            META_FEATURE_VIEWS.to_string(),
            serde_json::to_string(&views).expect("JSON"),
        ),
        KeyValue::new(
            META_FEATURES.to_string(),
            serde_json::to_string(&plan.specs).expect("JSON"),
        ),
        KeyValue::new("quiver.project".to_string(), registry.project.to_string()),
        KeyValue::new(
            "quiver.full_feature_names".to_string(),
            request.full_feature_names.to_string(),
        ),
    ];
    if !plan.on_demand.is_empty() {
        let mut transforms = serde_json::Map::new();
        for od in &plan.on_demand {
            if let Some(m) = &od.module {
                transforms.insert(od.view.transform.to_string(), json!(m.sha256));
            }
        }
        kv.push(KeyValue::new(
            META_TRANSFORMS.to_string(),
            serde_json::Value::Object(transforms).to_string(),
        ));
    }
    if let FeatureList::Service(name) = &request.features {
        kv.push(KeyValue::new(
            META_FEATURE_SERVICE.to_string(),
            name.clone(),
        ));
    }
    kv
}

/// Streams the entity rows again, merges each key group's joined results back into input order,
/// computes the on-demand features, and writes it all to `sink`: a file (through a temporary
/// file renamed into place) or batches in memory. Returns the rows written, the seconds spent in
/// transforms, the rows on which a transform failed (summed over views), and the training set
/// when it stays in memory.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_output(
    registry: &Registry,
    plan: &Plan<'_>,
    request: &Asked<'_>,
    sink: Sink<'_>,
    entities: &EntityFile,
    results: Vec<Spill>,
    layout: &Layout,
    options: &HistoricalOptions,
    bar: &ProgressBar,
) -> Result<(u64, f64, u64, Option<TrainingSet>), OfflineError> {
    let mut fields: Vec<Arc<Field>> = entities.schema.fields().iter().cloned().collect();
    for out in &plan.outputs {
        fields.push(Arc::new(Field::new(&out.name, arrow_type(out.dtype), true)));
    }
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        entities.schema.metadata().clone(),
    ));
    let output = match &sink {
        Sink::File(location) => location.to_string(),
        Sink::Memory => "the training set".to_string(),
    };
    let output_error = |e: &dyn std::fmt::Display| OfflineError::Source {
        path: output.clone(),
        message: format!("cannot write: {e}"),
    };
    let mut file = match &sink {
        Sink::File(location) => Some(
            ParquetSink::create(
                location,
                options,
                &schema,
                metadata(registry, plan, request),
            )
            .map_err(|e| output_error(&e))?,
        ),
        Sink::Memory => None,
    };
    let mut kept: Vec<RecordBatch> = Vec::new();
    let mut mergers = results
        .into_iter()
        .enumerate()
        .map(|(g, spill)| Merger::new(spill, plan.result_schema(g)))
        .collect::<Result<Vec<_>, _>>()?;
    // With transforms, batches large enough for one call per thread.
    let batch_rows = if plan.on_demand.is_empty() {
        OUTPUT_BATCH_ROWS
    } else {
        OUTPUT_BATCH_ROWS.max(layout.threads * options.transform_batch_rows.max(1))
    };
    // The training set's profile, first pass: over the feature columns as they are written.
    let first_feature = entities.schema.fields().len();
    let mut profiler = Profiler::new(profile_columns(plan), ProfileOptions::default())?;
    let mut row = 0u64;
    let mut transform_seconds = 0.0;
    let mut transform_failed_rows = 0;
    for batch in entities.reader(None, None, batch_rows)? {
        let batch = batch?;
        let n = batch.num_rows();
        let joined: Vec<Vec<ArrayRef>> = mergers
            .iter_mut()
            .map(|m| m.take(row, n))
            .collect::<Result<_, _>>()?;
        let transform_started = Instant::now();
        let computed: Vec<(Vec<Vec<Value>>, u64)> = plan
            .on_demand
            .iter()
            .zip(&entities.requests)
            .map(|(od, requests)| {
                run_transform(
                    od,
                    requests,
                    &batch,
                    &joined,
                    options.transform_batch_rows,
                    layout.threads,
                )
            })
            .collect::<Result<_, _>>()?;
        transform_seconds += transform_started.elapsed().as_secs_f64();
        transform_failed_rows += computed.iter().map(|(_, failed)| failed).sum::<u64>();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for out in &plan.outputs {
            columns.push(match out.source {
                OutputSource::Joined { group, column } => Arc::clone(&joined[group][column]),
                OutputSource::OnDemand { plan: o, field } => {
                    build_column(out.dtype, computed[o].0.iter().map(|r| &r[field]))
                }
            });
        }
        let out =
            RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| output_error(&e))?;
        profiler.observe(row, &out.columns()[first_feature..])?;
        match &mut file {
            Some(file) => file.writer.write(&out).map_err(|e| output_error(&e))?,
            None => kept.push(out),
        }
        row += n as u64;
        bar.inc(n as u64);
    }
    let mut second = profiler.into_second_pass();
    let origin = |second: SecondPass| {
        second.finish(Origin {
            source: format!("training set from {}", request.entities),
            start: None,
            end: None,
            created_at: now_rfc3339(),
        })
    };
    let Some(mut file) = file else {
        // In memory: the second pass reads the batches kept, and the record and profile go
        // into the schema's metadata (where a file has them in its footer).
        for batch in &kept {
            second.observe(&batch.columns()[first_feature..])?;
        }
        let profile = origin(second)?;
        let mut meta = schema.metadata().clone();
        for kv in metadata(registry, plan, request) {
            meta.insert(kv.key, kv.value.unwrap_or_default());
        }
        meta.insert(META_PROFILE.to_string(), profile.to_json());
        let schema = Arc::new(schema.as_ref().clone().with_metadata(meta));
        let batches = kept
            .into_iter()
            .map(|b| b.with_schema(Arc::clone(&schema)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| output_error(&e))?;
        let set = TrainingSet { schema, batches };
        return Ok((row, transform_seconds, transform_failed_rows, Some(set)));
    };
    // Second pass: the row groups written so far, read back before the footer exists; the
    // profile then joins the footer's metadata.
    file.writer.flush().map_err(|e| output_error(&e))?;
    file.writer.sync().map_err(|e| output_error(&e))?;
    reread_features(
        &file.tmp,
        file.writer.flushed_row_groups(),
        first_feature..schema.fields().len(),
        &mut second,
    )
    .map_err(|e| output_error(&e))?;
    let profile = origin(second)?;
    file.writer
        .append_key_value_metadata(KeyValue::new(META_PROFILE.to_string(), profile.to_json()));
    file.writer.close().map_err(|e| output_error(&e))?;
    let Sink::File(location) = sink else {
        unreachable!("a file is written only for a file sink")
    };
    match location.as_local() {
        Some(path) => {
            file.tmp.persist(path).map_err(|e| output_error(&e.error))?;
        }
        // The temporary file is deleted when `tmp` drops, uploaded or not.
        None => location.upload(file.tmp.path())?,
    }
    Ok((row, transform_seconds, transform_failed_rows, None))
}

/// The Parquet file a training set is written to: a temporary file beside the output (or in the
/// temporary directory for an object) and its writer.
struct ParquetSink {
    tmp: tempfile::NamedTempFile,
    writer: ArrowWriter<std::fs::File>,
}

impl ParquetSink {
    fn create(
        output: &Location,
        options: &HistoricalOptions,
        schema: &Arc<Schema>,
        metadata: Vec<KeyValue>,
    ) -> Result<Self, String> {
        // A local output is written beside its final name and renamed into place; an object is
        // written to a local temporary file first and uploaded whole once complete.
        let dir = match output.as_local() {
            Some(path) => path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            None => options.temp_dir.clone().unwrap_or_else(std::env::temp_dir),
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix(".quiver-historical-").suffix(".parquet");
        // A temporary file is private (0600); the training set is an ordinary output file,
        // readable as the umask allows (0644 under the usual 022), like any file the user writes.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let tmp = builder.tempfile_in(&dir).map_err(|e| e.to_string())?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(metadata))
            .build();
        let file = tmp.reopen().map_err(|e| e.to_string())?;
        let writer = ArrowWriter::try_new(file, Arc::clone(schema), Some(props))
            .map_err(|e| e.to_string())?;
        Ok(ParquetSink { tmp, writer })
    }
}

/// The profiled columns of a training set: every feature column, as `view:feature`.
fn profile_columns(plan: &Plan<'_>) -> Vec<ProfileColumn> {
    plan.outputs
        .iter()
        .zip(&plan.specs)
        .map(|(out, spec)| ProfileColumn {
            name: out.name.clone(),
            feature: spec.clone(),
            dtype: out.dtype,
        })
        .collect()
}

/// Reads the columns `columns` of the row groups already written to `tmp` (whose footer is not
/// written yet) into the profile's second pass.
fn reread_features(
    tmp: &tempfile::NamedTempFile,
    row_groups: &[RowGroupMetaData],
    columns: std::ops::Range<usize>,
    second: &mut SecondPass,
) -> Result<(), String> {
    let Some(first) = row_groups.first() else {
        return Ok(()); // no rows
    };
    let schema = first.schema_descr_ptr();
    let rows = row_groups.iter().map(|g| g.num_rows()).sum();
    let metadata = ParquetMetaData::new(
        FileMetaData::new(1, rows, None, None, Arc::clone(&schema), None),
        row_groups.to_vec(),
    );
    let metadata = ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new())
        .map_err(|e| format!("cannot read back the row groups written: {e}"))?;
    let file = tmp.reopen().map_err(|e| e.to_string())?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata)
        .with_projection(ProjectionMask::roots(&schema, columns))
        .with_batch_size(OUTPUT_BATCH_ROWS)
        .build()
        .map_err(|e| format!("cannot read back the row groups written: {e}"))?;
    for batch in reader {
        let batch = batch.map_err(|e| format!("cannot read back the row groups written: {e}"))?;
        second.observe(batch.columns()).map_err(|e| e.to_string())?;
    }
    Ok(())
}
