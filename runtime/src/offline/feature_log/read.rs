//! Reading feature logs back: every file under a directory, filtered by request time, grouped by
//! what the files hold (their [`LogMetadata`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch};

use super::layout::{LogMetadata, META_FEATURE_LOG, REQUEST_TIME};
use crate::offline::OfflineError;
use crate::offline::columns::timestamp_at;
use crate::offline::source::open_parquet;
use crate::types::EpochMicros;

/// The logged rows of one feature service (one version of its columns).
pub struct LoggedRows {
    /// What the files hold.
    pub metadata: LogMetadata,
    /// The rows, in file order (files sorted by path).
    pub batch: RecordBatch,
    /// The files they came from.
    pub files: Vec<PathBuf>,
}

/// Every logged row under `dir` whose request time is in `[since, until)`, grouped by service
/// (and by version of its columns, when the service changed while it was logged). Files and
/// directories whose names start with `.` (files being written) are skipped; `date=` directories
/// outside the range are not opened.
pub fn read_logs(
    dir: &Path,
    since: Option<EpochMicros>,
    until: Option<EpochMicros>,
) -> Result<Vec<LoggedRows>, OfflineError> {
    if !dir.is_dir() {
        return Err(OfflineError::Source {
            path: dir.display().to_string(),
            message: "is not a directory of feature logs".into(),
        });
    }
    let mut files = Vec::new();
    collect(dir, since, until, &mut files, 0)?;
    files.sort();
    let mut groups: BTreeMap<String, (LogMetadata, Vec<RecordBatch>, Vec<PathBuf>)> =
        BTreeMap::new();
    for file in files {
        let builder = open_parquet(&file)?;
        let json = builder
            .schema()
            .metadata()
            .get(META_FEATURE_LOG)
            .cloned()
            .ok_or_else(|| OfflineError::Source {
                path: file.display().to_string(),
                message: format!("is not a feature log file (no \"{META_FEATURE_LOG}\" metadata)"),
            })?;
        let metadata: LogMetadata =
            serde_json::from_str(&json).map_err(|e| OfflineError::Source {
                path: file.display().to_string(),
                message: format!("invalid \"{META_FEATURE_LOG}\" metadata: {e}"),
            })?;
        let reader = builder.build().map_err(|e| OfflineError::Source {
            path: file.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        let entry = groups
            .entry(json)
            .or_insert_with(|| (metadata, Vec::new(), Vec::new()));
        for batch in reader {
            let batch = batch.map_err(|e| OfflineError::Source {
                path: file.display().to_string(),
                message: format!("cannot read: {e}"),
            })?;
            let batch = in_range(&batch, since, until).map_err(|m| OfflineError::Source {
                path: file.display().to_string(),
                message: m,
            })?;
            if batch.num_rows() > 0 {
                entry.1.push(batch);
            }
        }
        entry.2.push(file);
    }
    let mut out = Vec::new();
    for (_, (metadata, batches, files)) in groups {
        let Some(first) = batches.first() else {
            continue;
        };
        let batch = concat_batches(&first.schema(), &batches)
            .map_err(|e| OfflineError::Other(format!("cannot combine logged rows: {e}")))?;
        out.push(LoggedRows {
            metadata,
            batch,
            files,
        });
    }
    out.sort_by(|a, b| a.metadata.feature_service.cmp(&b.metadata.feature_service));
    Ok(out)
}

/// The rows of `batch` whose request time is in `[since, until)`.
fn in_range(
    batch: &RecordBatch,
    since: Option<EpochMicros>,
    until: Option<EpochMicros>,
) -> Result<RecordBatch, String> {
    if since.is_none() && until.is_none() {
        return Ok(batch.clone());
    }
    let times = batch
        .column_by_name(REQUEST_TIME)
        .ok_or_else(|| format!("missing column \"{REQUEST_TIME}\""))?;
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|r| {
            Some(
                timestamp_at(times.as_ref(), r)
                    .is_some_and(|t| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u)),
            )
        })
        .collect();
    filter_record_batch(batch, &keep).map_err(|e| e.to_string())
}

/// Log files under `dir`, at most 4 directories deep.
fn collect(
    dir: &Path,
    since: Option<EpochMicros>,
    until: Option<EpochMicros>,
    files: &mut Vec<PathBuf>,
    depth: usize,
) -> Result<(), OfflineError> {
    let entries = std::fs::read_dir(dir).map_err(|e| OfflineError::Source {
        path: dir.display().to_string(),
        message: format!("cannot list: {e}"),
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            if depth >= 4 {
                continue;
            }
            if let Some(day) = name.strip_prefix("date=")
                && !day_in_range(day, since, until)
            {
                continue;
            }
            collect(&path, since, until, files, depth + 1)?;
        } else if name.ends_with(".parquet") {
            files.push(path);
        }
    }
    Ok(())
}

/// Whether the day `YYYY-MM-DD` can hold times in `[since, until)`.
fn day_in_range(day: &str, since: Option<EpochMicros>, until: Option<EpochMicros>) -> bool {
    let Ok(date) = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d") else {
        return true;
    };
    let start = date
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_micros();
    let end = start + 86_400_000_000;
    since.is_none_or(|s| end > s) && until.is_none_or(|u| start < u)
}
