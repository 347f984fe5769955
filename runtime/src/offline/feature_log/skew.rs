//! `quiver skew`: every logged row rebuilt by the point-in-time join at its request time — the
//! engine of `quiver historical`, with on-demand features run by the module versions that were
//! logged — and compared with what was served, feature by feature.
//!
//! Per feature and row, the served side is the logged value and status, the replayed side the
//! training-set value (null where the join finds nothing usable):
//!
//! - both have a value: *compared*; equal bit for bit is a match, otherwise a *value mismatch*
//!   (numbers add to the mean absolute and relative difference);
//! - a value was served (PRESENT) but the replay has none: *missing offline*;
//! - no value was served (NOT_FOUND, OUTSIDE_MAX_AGE, NULL_VALUE, TRANSFORM_ERROR) but the replay
//!   has one: *missing online*;
//! - neither has a value: a match.
//!
//! The two kinds of missing rows are the *status disagreements*: the served status says a value
//! did (or did not) exist where the offline data says otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{Field as ArrowField, Schema};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::layout::{
    LogMetadata, REQUEST_ID, REQUEST_TIME, ROW, STATUS_SUFFIX, TRANSFORM_PREFIX, parse_dtype,
};
use super::read::{LoggedRows, read_logs};
use crate::offline::OfflineError;
use crate::offline::columns::{timestamp_at, value_at};
use crate::offline::historical::{
    EVENT_TIMESTAMP, FeatureList, HistoricalOptions, HistoricalRequest, historical,
};
use crate::offline::source::open_parquet;
use crate::registry::Registry;
use crate::types::{EpochMicros, Value, ValueType};

/// What to check.
#[derive(Debug, Clone)]
pub struct SkewRequest {
    /// A feature log destination (or any directory above its `feature_service=` directories).
    pub log_dir: PathBuf,
    /// Only rows requested at or after this time.
    pub since: Option<EpochMicros>,
    /// Only rows requested before this time.
    pub until: Option<EpochMicros>,
    /// Directories searched (with the registry's transforms directory) for the logged module
    /// versions, by sha256 of their `.wasm` files.
    pub module_dirs: Vec<PathBuf>,
    /// Mismatching rows kept as examples, per feature.
    pub examples: usize,
}

/// The comparison of every logged row.
#[derive(Debug, Clone, Serialize)]
pub struct SkewReport {
    /// The log directory.
    pub log_dir: String,
    /// Rows compared, over all services.
    pub rows: u64,
    /// Per feature service.
    pub services: Vec<ServiceSkew>,
    /// Seconds the check took.
    pub seconds: f64,
}

/// The comparison of one feature service's logged rows.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceSkew {
    /// The feature service.
    pub feature_service: String,
    /// Logged rows replayed.
    pub rows: u64,
    /// Log files read.
    pub files: usize,
    /// Per feature, in response order.
    pub features: Vec<FeatureSkew>,
    /// Logged features the registry no longer has (not compared).
    pub not_in_registry: Vec<String>,
    /// The module versions the replay ran, per transform and logged sha256.
    pub modules: Vec<ModuleReplay>,
}

/// Which module replayed the rows logged with one module version.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleReplay {
    /// The transform module's name.
    pub transform: String,
    /// The sha256 logged with the rows.
    pub logged_sha256: Option<String>,
    /// Rows logged with it.
    pub rows: u64,
    /// Whether a module with that sha256 was found; when not, the rows were replayed with the
    /// current `<transforms.dir>/<transform>.wasm` and their differences are the module's.
    pub available: bool,
    /// The sha256 of the module that ran in the replay.
    pub replayed_sha256: String,
}

/// One feature's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureSkew {
    /// `view:feature`.
    pub feature: String,
    /// Declared type.
    pub dtype: String,
    /// Rows compared.
    pub rows: u64,
    /// Rows where both sides have a value.
    pub compared: u64,
    /// Rows where both sides agree (equal values, or no value on either side).
    pub matches: u64,
    /// `matches / rows` (1 when there are no rows).
    pub exact_match_rate: f64,
    /// `rows - matches`.
    pub mismatches: u64,
    /// Both sides have a value and they differ.
    pub value_mismatches: u64,
    /// A value was served; the replay has none.
    pub missing_offline: u64,
    /// No value was served; the replay has one.
    pub missing_online: u64,
    /// `missing_offline + missing_online`.
    pub status_disagreements: u64,
    /// Mean of |served − replayed| over compared rows (numbers only).
    pub mean_abs_diff: Option<f64>,
    /// Mean of |served − replayed| / |replayed| over compared rows with a non-zero replayed value.
    pub mean_rel_diff: Option<f64>,
    /// The first mismatching rows.
    pub examples: Vec<SkewExample>,
}

/// One mismatching row.
#[derive(Debug, Clone, Serialize)]
pub struct SkewExample {
    /// The lookup's request id.
    pub request_id: String,
    /// The entity row's index in it.
    pub row: i64,
    /// When it was served (RFC 3339).
    pub request_time: String,
    /// Join keys.
    pub entity: serde_json::Map<String, serde_json::Value>,
    /// The value served (null unless PRESENT).
    pub served: serde_json::Value,
    /// Its status.
    pub served_status: String,
    /// The training-set value.
    pub replayed: serde_json::Value,
}

impl SkewReport {
    /// The greatest mismatch rate (`1 - exact_match_rate`) of any feature.
    pub fn worst_mismatch_rate(&self) -> f64 {
        self.services
            .iter()
            .flat_map(|s| &s.features)
            .map(|f| 1.0 - f.exact_match_rate)
            .fold(0.0, f64::max)
    }

    /// The report as a table for a terminal.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for s in &self.services {
            let _ = writeln!(
                out,
                "feature service {}: {} logged rows from {} file{}",
                s.feature_service,
                s.rows,
                s.files,
                if s.files == 1 { "" } else { "s" }
            );
            let _ = writeln!(
                out,
                "  {:<40} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12} {:>12}",
                "feature",
                "rows",
                "match %",
                "mismatch",
                "values",
                "miss.off",
                "miss.on",
                "mean |d|",
                "mean |d|/|x|"
            );
            for f in &s.features {
                let num = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.6}"));
                let _ = writeln!(
                    out,
                    "  {:<40} {:>9} {:>9.3} {:>9} {:>9} {:>9} {:>9} {:>12} {:>12}",
                    f.feature,
                    f.rows,
                    f.exact_match_rate * 100.0,
                    f.mismatches,
                    f.value_mismatches,
                    f.missing_offline,
                    f.missing_online,
                    num(f.mean_abs_diff),
                    num(f.mean_rel_diff),
                );
            }
            for m in &s.modules {
                if m.available {
                    let _ = writeln!(
                        out,
                        "  module {}: {} rows replayed with the logged version (sha256 {})",
                        m.transform, m.rows, m.replayed_sha256
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "  module {}: {} rows were served by sha256 {}, which is not available; \
                         replayed with the current module (sha256 {}) — their differences are the module's",
                        m.transform,
                        m.rows,
                        m.logged_sha256.as_deref().unwrap_or("(none logged)"),
                        m.replayed_sha256
                    );
                }
            }
            for f in &s.not_in_registry {
                let _ = writeln!(
                    out,
                    "  {f}: logged, but not in the registry any more (not compared)"
                );
            }
            for f in s.features.iter().filter(|f| !f.examples.is_empty()) {
                let _ = writeln!(out, "  mismatching rows of {}:", f.feature);
                for e in &f.examples {
                    let _ = writeln!(
                        out,
                        "    request {} row {} at {} {}: served {} ({}), replayed {}",
                        e.request_id,
                        e.row,
                        e.request_time,
                        serde_json::Value::Object(e.entity.clone()),
                        e.served,
                        e.served_status,
                        e.replayed
                    );
                }
            }
        }
        let features: usize = self.services.iter().map(|s| s.features.len()).sum();
        let exact = self
            .services
            .iter()
            .flat_map(|s| &s.features)
            .filter(|f| f.mismatches == 0)
            .count();
        let _ = writeln!(
            out,
            "{} rows, {features} features: {exact} match on every row ({}), in {:.2}s",
            self.rows,
            if exact == features {
                "100% match on every feature".to_string()
            } else {
                format!(
                    "worst mismatch rate {:.4}%",
                    self.worst_mismatch_rate() * 100.0
                )
            },
            self.seconds
        );
        out
    }
}

/// Replays every logged row under `request.log_dir` and compares it with what was served.
pub fn skew(
    registry: &Registry,
    request: &SkewRequest,
    options: &HistoricalOptions,
) -> Result<SkewReport, OfflineError> {
    let started = Instant::now();
    let logs = read_logs(&request.log_dir, request.since, request.until)?;
    let mut modules = ModuleIndex::new(registry, &request.module_dirs);
    let mut services: Vec<ServiceSkew> = Vec::new();
    let mut total = 0;
    for logged in logs {
        let service = replay_service(registry, &logged, request, options, &mut modules)?;
        total += service.rows;
        match services
            .iter_mut()
            .find(|s| s.feature_service == service.feature_service)
        {
            // The same service logged with other columns (its definition changed): one report.
            Some(existing) => merge_service(existing, service),
            None => services.push(service),
        }
    }
    if total == 0 {
        return Err(OfflineError::Source {
            path: request.log_dir.display().to_string(),
            message: "holds no logged rows in the requested time range".into(),
        });
    }
    Ok(SkewReport {
        log_dir: request.log_dir.display().to_string(),
        rows: total,
        services,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn merge_service(into: &mut ServiceSkew, other: ServiceSkew) {
    into.rows += other.rows;
    into.files += other.files;
    into.modules.extend(other.modules);
    for f in other.not_in_registry {
        if !into.not_in_registry.contains(&f) {
            into.not_in_registry.push(f);
        }
    }
    for f in other.features {
        match into.features.iter_mut().find(|x| x.feature == f.feature) {
            Some(x) => {
                let mut acc = Acc::from_report(x);
                acc.add_report(&f);
                *x = acc.finish(x.feature.clone(), x.dtype.clone(), x.examples.clone());
            }
            None => into.features.push(f),
        }
    }
}

/// Module files by the sha256 of their bytes, found in the registry's transforms directory and
/// the extra directories.
struct ModuleIndex {
    dirs: Vec<PathBuf>,
    by_sha: Option<HashMap<String, PathBuf>>,
    current_dir: PathBuf,
}

impl ModuleIndex {
    fn new(registry: &Registry, extra: &[PathBuf]) -> Self {
        let mut dirs = vec![registry.transforms.dir.clone()];
        dirs.extend(extra.iter().cloned());
        ModuleIndex {
            dirs,
            by_sha: None,
            current_dir: registry.transforms.dir.clone(),
        }
    }

    fn find(&mut self, sha: &str) -> Option<PathBuf> {
        let dirs = &self.dirs;
        self.by_sha
            .get_or_insert_with(|| {
                let mut map = HashMap::new();
                for dir in dirs {
                    let Ok(entries) = std::fs::read_dir(dir) else {
                        continue;
                    };
                    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
                    paths.sort();
                    for path in paths {
                        if path.extension().is_some_and(|e| e == "wasm")
                            && let Ok(bytes) = std::fs::read(&path)
                        {
                            map.entry(hex::encode(Sha256::digest(&bytes)))
                                .or_insert(path);
                        }
                    }
                }
                map
            })
            .get(sha)
            .cloned()
    }
}

/// The rows of one group, split by the module versions they were served with.
fn replay_service(
    registry: &Registry,
    logged: &LoggedRows,
    request: &SkewRequest,
    options: &HistoricalOptions,
    modules: &mut ModuleIndex,
) -> Result<ServiceSkew, OfflineError> {
    let meta = &logged.metadata;
    let batch = &logged.batch;
    let file = logged.files.first().cloned().unwrap_or_default();
    let column = |name: &str| -> Result<ArrayRef, OfflineError> {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| OfflineError::MissingColumn {
                file: file.display().to_string(),
                column: name.to_string(),
            })
    };
    // Rows by the module versions they were served with.
    let sha_columns: Vec<ArrayRef> = meta
        .transforms
        .iter()
        .map(|t| column(&format!("{TRANSFORM_PREFIX}{t}")))
        .collect::<Result<_, _>>()?;
    let mut partitions: Vec<(Vec<Option<String>>, Vec<u32>)> = Vec::new();
    for r in 0..batch.num_rows() {
        let key: Vec<Option<String>> = sha_columns
            .iter()
            .map(|c| (!c.is_null(r)).then(|| c.as_string::<i32>().value(r).to_string()))
            .collect();
        match partitions.iter_mut().find(|(k, _)| *k == key) {
            Some((_, rows)) => rows.push(r as u32),
            None => partitions.push((key, vec![r as u32])),
        }
    }
    let compared: Vec<usize> = (0..meta.features.len())
        .filter(|&i| {
            registry
                .feature_index
                .contains_key(&meta.features[i].feature)
        })
        .collect();
    let not_in_registry = (0..meta.features.len())
        .filter(|i| !compared.contains(i))
        .map(|i| meta.features[i].feature.clone())
        .collect();
    let mut accs: Vec<Acc> = compared.iter().map(|_| Acc::default()).collect();
    let mut replays = Vec::new();
    for (shas, rows) in partitions {
        let part = take_record_batch(batch, &UInt32Array::from(rows))
            .map_err(|e| OfflineError::Other(format!("cannot select logged rows: {e}")))?;
        let temp = match &options.temp_dir {
            Some(d) => tempfile::tempdir_in(d),
            None => tempfile::tempdir(),
        }
        .map_err(|e| OfflineError::Other(format!("cannot create a temporary directory: {e}")))?;
        let mut replay_registry = registry.clone();
        if !meta.transforms.is_empty() {
            let dir = temp.path().join("transforms");
            std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
            for (transform, sha) in meta.transforms.iter().zip(&shas) {
                let found = sha.as_deref().and_then(|s| modules.find(s));
                let source = found
                    .clone()
                    .unwrap_or_else(|| modules.current_dir.join(format!("{transform}.wasm")));
                let bytes = std::fs::read(&source).map_err(|e| OfflineError::Source {
                    path: source.display().to_string(),
                    message: format!(
                        "cannot read transform module \"{transform}\" (logged sha256 {}, not found in {}): {e}",
                        sha.as_deref().unwrap_or("none"),
                        modules
                            .dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
                let target = dir.join(format!("{transform}.wasm"));
                std::fs::write(&target, &bytes).map_err(|e| io_error(&target, e))?;
                replays.push(ModuleReplay {
                    transform: transform.clone(),
                    logged_sha256: sha.clone(),
                    rows: part.num_rows() as u64,
                    available: found.is_some(),
                    replayed_sha256: hex::encode(Sha256::digest(&bytes)),
                });
            }
            replay_registry.transforms.dir = dir;
        }
        let entities = temp.path().join("entities.parquet");
        write_entities(meta, &part, &entities, &file)?;
        let output = temp.path().join("replay.parquet");
        let specs: Vec<String> = compared
            .iter()
            .map(|&i| meta.features[i].feature.clone())
            .collect();
        if specs.is_empty() {
            continue;
        }
        historical(
            &replay_registry,
            &HistoricalRequest {
                entities: crate::storage::Location::Local(entities),
                features: FeatureList::Features(specs),
                output: crate::storage::Location::Local(output.clone()),
                full_feature_names: true,
            },
            options,
        )?;
        // The replay is read a batch at a time, beside the same rows of the log: it is in the
        // log's order, and only one batch of it is in memory.
        let reader = open_parquet(&output)?
            .with_batch_size(65_536)
            .build()
            .map_err(|e| io_error(&output, e))?;
        let mut offset = 0;
        for replayed in reader {
            let replayed = replayed.map_err(|e| io_error(&output, e))?;
            let n = replayed.num_rows();
            if offset + n > part.num_rows() {
                return Err(OfflineError::Other(format!(
                    "the replay of {} logged rows returned more rows",
                    part.num_rows()
                )));
            }
            compare(
                meta,
                &part.slice(offset, n),
                &replayed,
                &compared,
                &mut accs,
                request.examples,
                &file,
            )?;
            offset += n;
        }
        if offset != part.num_rows() {
            return Err(OfflineError::Other(format!(
                "the replay of {} logged rows returned {offset} rows",
                part.num_rows()
            )));
        }
    }
    let features = compared
        .iter()
        .zip(accs)
        .map(|(&i, acc)| {
            let f = &meta.features[i];
            let examples = acc.examples.clone();
            acc.finish(f.feature.clone(), f.dtype.clone(), examples)
        })
        .collect();
    Ok(ServiceSkew {
        feature_service: meta.feature_service.clone(),
        rows: batch.num_rows() as u64,
        files: logged.files.len(),
        features,
        not_in_registry,
        modules: replays,
    })
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> OfflineError {
    OfflineError::Source {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The entity dataframe of the replay: join keys, `event_timestamp` (the request time) and the
/// request fields, one row per logged row, in order.
fn write_entities(
    meta: &LogMetadata,
    part: &RecordBatch,
    path: &Path,
    file: &Path,
) -> Result<(), OfflineError> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    let mut add = |name: &str, as_name: &str| -> Result<(), OfflineError> {
        let c = part
            .column_by_name(name)
            .ok_or_else(|| OfflineError::MissingColumn {
                file: file.display().to_string(),
                column: name.to_string(),
            })?;
        fields.push(ArrowField::new(as_name, c.data_type().clone(), true));
        columns.push(Arc::clone(c));
        Ok(())
    };
    for k in &meta.join_keys {
        add(&k.name, &k.name)?;
    }
    add(REQUEST_TIME, EVENT_TIMESTAMP)?;
    for f in &meta.request_fields {
        add(&f.name, &f.name)?;
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| OfflineError::Other(format!("cannot build the replay's entities: {e}")))?;
    let f = std::fs::File::create(path).map_err(|e| io_error(path, e))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None)
        .map_err(|e| io_error(path, e))?;
    writer.write(&batch).map_err(|e| io_error(path, e))?;
    writer.close().map_err(|e| io_error(path, e))?;
    Ok(())
}

/// Counts of one feature.
#[derive(Default, Clone)]
struct Acc {
    rows: u64,
    compared: u64,
    matches: u64,
    value_mismatches: u64,
    missing_offline: u64,
    missing_online: u64,
    numeric: u64,
    abs_sum: f64,
    rel_sum: f64,
    rel_n: u64,
    examples: Vec<SkewExample>,
}

impl Acc {
    fn from_report(f: &FeatureSkew) -> Self {
        Acc {
            rows: f.rows,
            compared: f.compared,
            matches: f.matches,
            value_mismatches: f.value_mismatches,
            missing_offline: f.missing_offline,
            missing_online: f.missing_online,
            numeric: f.mean_abs_diff.map_or(0, |_| f.compared),
            abs_sum: f.mean_abs_diff.unwrap_or(0.0) * f.compared as f64,
            rel_sum: f.mean_rel_diff.unwrap_or(0.0) * f.compared as f64,
            rel_n: f.mean_rel_diff.map_or(0, |_| f.compared),
            examples: Vec::new(),
        }
    }

    fn add_report(&mut self, f: &FeatureSkew) {
        let other = Acc::from_report(f);
        self.rows += other.rows;
        self.compared += other.compared;
        self.matches += other.matches;
        self.value_mismatches += other.value_mismatches;
        self.missing_offline += other.missing_offline;
        self.missing_online += other.missing_online;
        self.numeric += other.numeric;
        self.abs_sum += other.abs_sum;
        self.rel_sum += other.rel_sum;
        self.rel_n += other.rel_n;
    }

    fn finish(self, feature: String, dtype: String, examples: Vec<SkewExample>) -> FeatureSkew {
        FeatureSkew {
            feature,
            dtype,
            rows: self.rows,
            compared: self.compared,
            matches: self.matches,
            exact_match_rate: if self.rows == 0 {
                1.0
            } else {
                self.matches as f64 / self.rows as f64
            },
            mismatches: self.rows - self.matches,
            value_mismatches: self.value_mismatches,
            missing_offline: self.missing_offline,
            missing_online: self.missing_online,
            status_disagreements: self.missing_offline + self.missing_online,
            mean_abs_diff: (self.numeric > 0).then(|| self.abs_sum / self.numeric as f64),
            mean_rel_diff: (self.rel_n > 0).then(|| self.rel_sum / self.rel_n as f64),
            examples,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn compare(
    meta: &LogMetadata,
    logged: &RecordBatch,
    replayed: &RecordBatch,
    compared: &[usize],
    accs: &mut [Acc],
    max_examples: usize,
    file: &Path,
) -> Result<(), OfflineError> {
    let missing = |column: &str| OfflineError::MissingColumn {
        file: file.display().to_string(),
        column: column.to_string(),
    };
    if logged.num_rows() != replayed.num_rows() {
        return Err(OfflineError::Other(format!(
            "the replay of {} logged rows returned {} rows",
            logged.num_rows(),
            replayed.num_rows()
        )));
    }
    let ids = logged
        .column_by_name(REQUEST_ID)
        .ok_or_else(|| missing(REQUEST_ID))?;
    let row_index = logged.column_by_name(ROW).ok_or_else(|| missing(ROW))?;
    let times = logged
        .column_by_name(REQUEST_TIME)
        .ok_or_else(|| missing(REQUEST_TIME))?;
    let keys: Vec<(&str, ValueType, &ArrayRef)> = meta
        .join_keys
        .iter()
        .map(|k| {
            let c = logged
                .column_by_name(&k.name)
                .ok_or_else(|| missing(&k.name))?;
            let t = parse_dtype(&k.dtype).ok_or_else(|| missing(&k.name))?;
            Ok((k.name.as_str(), t, c))
        })
        .collect::<Result<_, OfflineError>>()?;
    for (acc, &i) in accs.iter_mut().zip(compared) {
        let f = &meta.features[i];
        let dtype = parse_dtype(&f.dtype).ok_or_else(|| OfflineError::ColumnType {
            file: file.display().to_string(),
            column: f.column.clone(),
            message: format!("has an unknown logged dtype \"{}\"", f.dtype),
        })?;
        let served = logged
            .column_by_name(&f.column)
            .ok_or_else(|| missing(&f.column))?;
        let status_name = format!("{}{STATUS_SUFFIX}", f.column);
        let statuses = logged
            .column_by_name(&status_name)
            .ok_or_else(|| missing(&status_name))?
            .as_string::<i32>();
        let offline = replayed
            .column_by_name(&f.column)
            .ok_or_else(|| OfflineError::Other(format!("the replay has no column {}", f.column)))?;
        for r in 0..logged.num_rows() {
            acc.rows += 1;
            let status = statuses.value(r);
            let served_present = status == "PRESENT";
            let replay_present = !offline.is_null(r);
            let outcome = match (served_present, replay_present) {
                (true, true) => {
                    acc.compared += 1;
                    let a = value_at(served.as_ref(), dtype, r);
                    let b = value_at(offline.as_ref(), dtype, r);
                    if let (Some(x), Some(y)) = (number(&a), number(&b)) {
                        acc.numeric += 1;
                        acc.abs_sum += (x - y).abs();
                        if y != 0.0 {
                            acc.rel_n += 1;
                            acc.rel_sum += (x - y).abs() / y.abs();
                        }
                    }
                    if same(&a, &b) {
                        None
                    } else {
                        acc.value_mismatches += 1;
                        Some((a, b))
                    }
                }
                (true, false) => {
                    acc.missing_offline += 1;
                    Some((value_at(served.as_ref(), dtype, r), Value::Null))
                }
                (false, true) => {
                    acc.missing_online += 1;
                    Some((Value::Null, value_at(offline.as_ref(), dtype, r)))
                }
                (false, false) => None,
            };
            match outcome {
                None => acc.matches += 1,
                Some((a, b)) if acc.examples.len() < max_examples => {
                    let mut entity = serde_json::Map::new();
                    for (name, t, c) in &keys {
                        entity.insert(name.to_string(), to_json(&value_at(c.as_ref(), *t, r)));
                    }
                    acc.examples.push(SkewExample {
                        request_id: ids.as_string::<i32>().value(r).to_string(),
                        row: row_index
                            .as_primitive::<arrow::datatypes::Int32Type>()
                            .value(r)
                            .into(),
                        request_time: timestamp_at(times.as_ref(), r)
                            .and_then(chrono::DateTime::from_timestamp_micros)
                            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                            .unwrap_or_default(),
                        entity,
                        served: to_json(&a),
                        served_status: status.to_string(),
                        replayed: to_json(&b),
                    });
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// A number as f64, for the differences.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float32(f) => Some(f64::from(*f)),
        Value::Float64(f) => Some(*f),
        _ => None,
    }
}

/// Bit-for-bit equality (floats by their bits, so NaN equals the same NaN and 0.0 differs from
/// -0.0).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float32(x), Value::Float32(y)) => x.to_bits() == y.to_bits(),
        (Value::Float64(x), Value::Float64(y)) => x.to_bits() == y.to_bits(),
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

/// A value as JSON for reports (f32 by its shortest representation, bytes as hex).
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float32(f) => f
            .to_string()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| J::String(f.to_string()), J::Number),
        Value::Float64(f) => {
            serde_json::Number::from_f64(*f).map_or_else(|| J::String(f.to_string()), J::Number)
        }
        Value::String(s) => J::String(s.clone()),
        Value::Bytes(b) => J::String(hex::encode(b)),
        Value::List(items) => J::Array(items.iter().map(to_json).collect()),
    }
}
