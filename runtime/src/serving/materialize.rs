//! `POST /materialize` and `POST /materialize-incremental`, as `feast serve` has them (Feast's SDK
//! with a remote online store delegates `FeatureStore.materialize` to them): the same
//! materialization as `quiver materialize`, written through this server's store, so its L1 cache
//! and every instance's are invalidated.

use std::sync::Arc;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use crate::offline::OfflineError;
use crate::offline::materialize::{MaterializeRequest, materialize};
use crate::types::{EpochMicros, parse_time};

/// `POST /materialize`: Feast's `{start_ts, end_ts, feature_views?, disable_event_timestamp?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowRequest {
    /// Window start: RFC 3339, naive ISO (UTC) or a date. Required unless
    /// `disable_event_timestamp`.
    #[serde(default)]
    pub start_ts: Option<String>,
    /// Window end, inclusive. Required unless `disable_event_timestamp`.
    #[serde(default)]
    pub end_ts: Option<String>,
    /// Views to materialize; every online view when absent or empty.
    #[serde(default)]
    pub feature_views: Option<Vec<String>>,
    /// As in `feast serve`: ignore the window and materialize everything up to now.
    #[serde(default)]
    pub disable_event_timestamp: bool,
    /// Sent by Feast's SDK; materialization writes by view, so it changes nothing.
    #[serde(default)]
    pub full_feature_names: bool,
    /// A feature view version (Feast's versioned views): not supported, answered 400.
    #[serde(default)]
    pub version: Option<String>,
}

/// `POST /materialize-incremental`: Feast's `{end_ts, feature_views?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementalRequest {
    /// Window end, inclusive; each view starts at its watermark.
    pub end_ts: String,
    /// Views to materialize; every online view when absent or empty.
    #[serde(default)]
    pub feature_views: Option<Vec<String>>,
    /// Sent by Feast's SDK; materialization writes by view, so it changes nothing.
    #[serde(default)]
    pub full_feature_names: bool,
    /// A feature view version (Feast's versioned views): not supported, answered 400.
    #[serde(default)]
    pub version: Option<String>,
}

/// Feast's versioned feature views are not supported: a request naming a version is refused.
fn no_version(version: Option<&str>) -> Result<(), ApiError> {
    match version {
        Some(v) => Err(ApiError::bad_request(format!(
            "version: feature view versions are not supported (asked for {v:?}); omit it to \
             materialize the registry's views"
        ))),
        None => Ok(()),
    }
}

impl WindowRequest {
    /// The window as (start, end) texts: the request's, or 1970 to now with
    /// `disable_event_timestamp`, as `feast serve` does.
    pub fn window(&self, now: EpochMicros) -> Result<(String, String), ApiError> {
        no_version(self.version.as_deref())?;
        if self.disable_event_timestamp {
            return Ok((
                "1970-01-01T00:00:00Z".to_owned(),
                super::json::format_timestamp(now),
            ));
        }
        match (&self.start_ts, &self.end_ts) {
            (Some(start), Some(end)) => Ok((start.clone(), end.clone())),
            _ => Err(ApiError::bad_request(
                "start_ts and end_ts are required unless disable_event_timestamp is true",
            )),
        }
    }
}

impl IncrementalRequest {
    /// Checks what the request asks for beyond the window.
    pub fn check(&self) -> Result<(), ApiError> {
        no_version(self.version.as_deref())
    }
}

/// What one view's materialization did.
#[derive(Debug, Serialize)]
pub struct ViewResult {
    view: String,
    rows_read: u64,
    entities: u64,
    written: u64,
    skipped_older: u64,
    skipped_expired: u64,
    files_read: u64,
    files_skipped: u64,
    row_groups_read: u64,
    row_groups_skipped: u64,
}

/// The answer: one entry per view.
#[derive(Debug, Serialize)]
pub struct MaterializeSummary {
    views: Vec<ViewResult>,
}

fn time(field: &str, text: &str) -> Result<EpochMicros, ApiError> {
    parse_time(text).map_err(|m| ApiError::bad_request(format!("{field}: {m}")))
}

/// Runs a materialization for `request`; `start: None` is incremental.
pub async fn run(
    app: &Arc<AppState>,
    start: Option<(&str, &str)>,
    end_ts: &str,
    views: Option<Vec<String>>,
) -> Result<MaterializeSummary, ApiError> {
    let start = start.map(|(f, t)| time(f, t)).transpose()?;
    let end = time("end_ts", end_ts)?;
    if start.is_some_and(|s| s > end) {
        return Err(ApiError::bad_request("start_ts is after end_ts"));
    }
    let views = views.unwrap_or_default();
    let serving = app.serving();
    let registry = serving.registry();
    for name in &views {
        match registry.view(name) {
            None => {
                return Err(ApiError::not_found(format!(
                    "unknown feature view \"{name}\""
                )));
            }
            Some((_, v)) if !v.online => {
                return Err(ApiError::invalid_entity(format!(
                    "feature view \"{name}\" is not online (online: false)"
                )));
            }
            Some(_) => {}
        }
    }
    let request = MaterializeRequest {
        start,
        end,
        views,
        progress: false,
    };
    // A detached task: a client that disconnects (or a request timeout) does not cut a
    // materialization in half; its watermark moves only when it completes.
    let clock = Arc::clone(app.clock());
    let job = tokio::spawn(async move {
        materialize(serving.registry(), serving.store(), &clock, &request).await
    });
    let summaries = job
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "MATERIALIZE_FAILED",
                e.to_string(),
            )
        })?
        .map_err(|e| match e {
            OfflineError::Store(e) => ApiError::from(e),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "MATERIALIZE_FAILED",
                other.to_string(),
            ),
        })?;
    Ok(MaterializeSummary {
        views: summaries
            .into_iter()
            .map(|s| ViewResult {
                view: s.view,
                rows_read: s.rows_read,
                entities: s.entities,
                written: s.written,
                skipped_older: s.skipped_older,
                skipped_expired: s.skipped_expired,
                files_read: s.pruning.files_read,
                files_skipped: s.pruning.files_skipped,
                row_groups_read: s.pruning.row_groups_read,
                row_groups_skipped: s.pruning.row_groups_skipped,
            })
            .collect(),
    })
}
