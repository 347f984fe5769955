//! Profiles of offline data: the one stored in a training set's metadata, and one computed from a
//! feature view's source over a time window (`quiver profile`).

use std::path::Path;

use arrow::array::{ArrayRef, BooleanArray};
use arrow::compute::filter;

use super::OfflineError;
use super::columns::timestamp_at;
use super::source::{scan_view_file, source_files};
use crate::monitoring::{
    META_PROFILE, Origin, Profile, ProfileColumn, ProfileError, ProfileOptions, Profiler,
    SecondPass,
};
use crate::registry::{FeatureView, Registry};
use crate::storage::DataFile;
use crate::types::EpochMicros;

/// An RFC 3339 time, to the microsecond.
pub(crate) fn rfc3339(micros: EpochMicros) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| micros.to_string())
}

/// Now, in RFC 3339.
pub(crate) fn now_rfc3339() -> String {
    rfc3339(chrono::Utc::now().timestamp_micros())
}

/// The profile a training set written by `quiver historical` carries in its Parquet metadata
/// (key [`META_PROFILE`]).
pub fn read_training_profile(file: &Path) -> Result<Profile, OfflineError> {
    let text = DataFile::local(file)
        .open()?
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == META_PROFILE))
        .and_then(|kv| kv.value.clone())
        .ok_or_else(|| OfflineError::Source {
            path: file.display().to_string(),
            message: format!(
                "has no \"{META_PROFILE}\" metadata: not a training set written by quiver historical \
                 (profile a feature view's source with --view instead)"
            ),
        })?;
    Profile::from_json(&text).map_err(|e| OfflineError::Source {
        path: file.display().to_string(),
        message: format!("metadata \"{META_PROFILE}\": {e}"),
    })
}

/// A monitoring reference: a training set written by `quiver historical` (a Parquet file, its
/// `quiver.profile` metadata) or a profile written by `quiver profile` (JSON), told apart by the
/// Parquet magic bytes at the start of the file.
pub fn read_reference_profile(file: &Path) -> Result<Profile, OfflineError> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| OfflineError::Source {
        path: file.display().to_string(),
        message: format!("cannot read: {e}"),
    };
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(file).map_err(unreadable)?;
    let n = f.read(&mut magic).map_err(unreadable)?;
    if magic[..n] == *b"PAR1" {
        return read_training_profile(file);
    }
    let text = std::fs::read_to_string(file).map_err(|_| OfflineError::Source {
        path: file.display().to_string(),
        message: "is neither a Parquet training set nor a profile .json".into(),
    })?;
    Profile::from_json(&text).map_err(|e| OfflineError::Source {
        path: file.display().to_string(),
        message: e.to_string(),
    })
}

/// Profiles the fields of feature view `view` over its source rows with an event timestamp in
/// `[start, end]` (both inclusive; rows with a null event timestamp are left out). Two passes over
/// the files, in path order, rows numbered in scan order.
pub fn profile_view(
    registry: &Registry,
    view: &str,
    start: EpochMicros,
    end: EpochMicros,
    options: ProfileOptions,
) -> Result<Profile, OfflineError> {
    let (_, view) = registry
        .view(view)
        .ok_or_else(|| OfflineError::Other(format!("unknown feature view \"{view}\"")))?;
    if start > end {
        return Err(OfflineError::Other(format!(
            "the window starts at {} after it ends at {}",
            rfc3339(start),
            rfc3339(end)
        )));
    }
    let columns: Vec<ProfileColumn> = view
        .fields
        .iter()
        .map(|f| ProfileColumn {
            name: f.name.to_string(),
            feature: format!("{}:{}", view.name, f.name),
            dtype: f.dtype,
        })
        .collect();
    let files = source_files(&view.source)?;
    let mut first = Profiler::new(columns, options)?;
    let mut row = 0u64;
    scan_window(view, &files, start, end, |arrays| {
        first.observe(row, arrays)?;
        row += arrays.first().map_or(0, |a| a.len()) as u64;
        Ok(())
    })?;
    let mut second: SecondPass = first.into_second_pass();
    scan_window(view, &files, start, end, |arrays| {
        second.observe(arrays)?;
        Ok(())
    })?;
    let origin = Origin {
        source: format!("feature view {} ({})", view.name, view.source.path_spec),
        start: Some(rfc3339(start)),
        end: Some(rfc3339(end)),
        created_at: now_rfc3339(),
    };
    Ok(second.finish(origin)?)
}

/// Calls `on_rows` with the feature columns of every batch, keeping only rows in the window.
fn scan_window(
    view: &FeatureView,
    files: &[DataFile],
    start: EpochMicros,
    end: EpochMicros,
    mut on_rows: impl FnMut(&[ArrayRef]) -> Result<(), ProfileError>,
) -> Result<(), OfflineError> {
    for file in files {
        scan_view_file(view, file, |batch| {
            let ts = batch.event_ts_column();
            let keep: BooleanArray = (0..batch.len())
                .map(|r| Some(timestamp_at(ts.as_ref(), r).is_some_and(|t| t >= start && t <= end)))
                .collect();
            let arrays = batch
                .feature_columns()
                .map(|(_, c)| filter(c.as_ref(), &keep))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file.error(format!("cannot filter rows: {e}")))?;
            on_rows(&arrays).map_err(|e| file.error(e).into())
        })?;
    }
    Ok(())
}
