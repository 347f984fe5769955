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

/// `POST /materialize`: Feast's `{start_ts, end_ts, feature_views?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowRequest {
    /// Window start: RFC 3339, naive ISO (UTC) or a date.
    pub start_ts: String,
    /// Window end, inclusive.
    pub end_ts: String,
    /// Views to materialize; every online view when absent or empty.
    #[serde(default)]
    pub feature_views: Option<Vec<String>>,
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
            })
            .collect(),
    })
}
