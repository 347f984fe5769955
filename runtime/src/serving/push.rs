//! Streaming writes: `POST /push` (Feast's shape, through a push source) and
//! `POST /write-to-online-store` (straight to a view's online records).
//!
//! A request is checked whole before anything is written: every column known, every value of its
//! declared type. Online writes obey the store's newer-wins rule (an out-of-order older event never
//! replaces a newer one) and invalidate L1 caches; offline writes append Parquet files under the
//! view's source directory (see [`crate::offline::push_writer`]).

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use serde::Deserialize;
use serde_json::Value as Json;

use super::error::ApiError;
use super::json::{
    epoch_seconds_to_micros, format_timestamp, json_kind, key_part, value_from_json,
};
use super::{AppState, ServingState};
use crate::entity_key::{EntityKey, KeyPart};
use crate::offline::columns::{
    check_column, check_scalar, check_timestamp, key_part_at, timestamp_at, value_at,
};
use crate::offline::push_writer::{Appended, PushedRow};
use crate::registry::{FeatureView, Registry};
use crate::store::{FeatureRow, RowWrite, WriteOutcome};
use crate::types::{EpochMicros, ScalarType, Value, ValueType};

/// Where pushed rows go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushTarget {
    /// The online store only (the default).
    #[default]
    Online,
    /// The offline store only.
    Offline,
    /// Both.
    OnlineAndOffline,
}

/// `POST /push`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest<'a> {
    /// A push source declared in `feature_store.yaml`.
    #[serde(borrow)]
    pub push_source_name: Cow<'a, str>,
    /// Column-oriented rows.
    pub df: serde_json::Map<String, Json>,
    /// `online` (default), `offline` or `online_and_offline`.
    #[serde(default)]
    pub to: PushTarget,
    /// Accepted for Feast compatibility; Quiver's registry is always current.
    #[serde(default)]
    pub allow_registry_cache: Option<bool>,
    /// Accepted for Feast compatibility; Quiver computes on-demand views when they are read.
    #[serde(default)]
    pub transform_on_write: Option<bool>,
}

/// `POST /write-to-online-store`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteRequest<'a> {
    /// The feature view to write.
    #[serde(borrow)]
    pub feature_view_name: Cow<'a, str>,
    /// Column-oriented rows.
    pub df: serde_json::Map<String, Json>,
    /// Accepted for Feast compatibility; Quiver's registry is always current.
    #[serde(default)]
    pub allow_registry_cache: Option<bool>,
    /// Accepted for Feast compatibility; Quiver computes on-demand views when they are read.
    #[serde(default)]
    pub transform_on_write: Option<bool>,
}

/// What a write did, as answered to the client.
#[derive(Debug, Default, serde::Serialize)]
pub struct PushSummary {
    /// Rows in the request.
    pub rows: usize,
    /// Rows stored online.
    pub written: usize,
    /// Rows not stored online because a newer (or equal) value was already there.
    pub skipped_older: usize,
    /// Rows not stored online because they were already past their ttl (and slack).
    pub skipped_expired: usize,
    /// Rows accepted for the offline store (`offline_durable + offline_buffered`).
    pub offline_rows: usize,
    /// Offline rows on disk before the answer (fsynced in the write-ahead log or a Parquet file).
    pub offline_durable: usize,
    /// Offline rows only in memory (`push.durability: buffered`); a crash before the next flush
    /// loses them.
    pub offline_buffered: usize,
}

/// What a write accepts besides the view's schema.
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    /// Most rows in one request (`server.max_entities`).
    pub max_rows: usize,
    /// The server's clock.
    pub now: EpochMicros,
    /// How far past `now` an event or created timestamp may be (`push.max_future_skew`).
    pub max_future_skew: std::time::Duration,
}

impl WriteLimits {
    /// The limits of the served `registry` now.
    pub fn of(app: &AppState, registry: &Registry) -> Self {
        WriteLimits {
            max_rows: registry.server.max_entities,
            now: app.clock().now_micros(),
            max_future_skew: registry.push.max_future_skew.0,
        }
    }

    /// Refuses a timestamp beyond `now + max_future_skew`.
    fn check_not_future(&self, ts: EpochMicros) -> Result<EpochMicros, String> {
        let skew = i64::try_from(self.max_future_skew.as_micros()).unwrap_or(i64::MAX);
        if ts > self.now.saturating_add(skew) {
            return Err(format!(
                "{} is more than {} ahead of the server's clock (push.max_future_skew)",
                format_timestamp(ts),
                crate::settings::HumanDuration(self.max_future_skew)
            ));
        }
        Ok(ts)
    }
}

/// `POST /push`: checks the whole request, then writes online and/or offline.
pub async fn push(app: &AppState, body: axum::body::Body) -> Result<PushSummary, ApiError> {
    let serving = app.serving();
    let registry = serving.registry();
    let body = super::read_body(body, registry.server.max_body_bytes).await?;
    let request: PushRequest<'_> = super::parse_json(&body)?;
    push_frame(
        app,
        &request.push_source_name,
        PushedFrame::Json(&request.df),
        request.to,
    )
    .await
}

/// A push through push source `source_name` of `df` (JSON or Arrow) to `to`: the whole frame is
/// checked by [`parse_rows`], then written online and/or offline. `POST /push` and the Python
/// package's Arrow pushes both come here.
pub async fn push_frame(
    app: &AppState,
    source_name: &str,
    df: PushedFrame<'_>,
    to: PushTarget,
) -> Result<PushSummary, ApiError> {
    let serving = app.serving();
    let registry = serving.registry();
    let source = registry
        .push_source(source_name)
        .ok_or_else(|| ApiError::not_found(format!("unknown push source \"{source_name}\"")))?;
    let view = source.view;
    let offline = matches!(to, PushTarget::Offline | PushTarget::OnlineAndOffline);
    if offline && !registry.feature_views[view].source.is_directory() {
        return Err(ApiError::bad_request(format!(
            "push source \"{}\" feeds \"{}\", whose source is {:?}: offline pushes add files \
             to a source directory, so this source takes `to: online` only",
            source.name,
            registry.feature_views[view].name,
            registry.feature_views[view].source.path_spec
        )));
    }
    let rows = parse_rows(
        &registry.feature_views[view],
        df,
        &WriteLimits::of(app, registry),
    )?;
    let mut summary = PushSummary {
        rows: rows.len(),
        ..Default::default()
    };
    if matches!(to, PushTarget::Online | PushTarget::OnlineAndOffline) {
        summary = write_online(app, &serving, view, &rows).await?;
    }
    if offline {
        match write_offline(&serving, view, rows).await? {
            Appended::Durable(n) => summary.offline_durable = n,
            Appended::Buffered(n) => summary.offline_buffered = n,
        }
        summary.offline_rows = summary.offline_durable + summary.offline_buffered;
    }
    Ok(summary)
}

/// `POST /write-to-online-store`: checks the whole request, then writes the view's records.
pub async fn write_to_online_store(
    app: &AppState,
    body: axum::body::Body,
) -> Result<PushSummary, ApiError> {
    let serving = app.serving();
    let registry = serving.registry();
    let body = super::read_body(body, registry.server.max_body_bytes).await?;
    let request: WriteRequest<'_> = super::parse_json(&body)?;
    write_frame(
        app,
        &request.feature_view_name,
        PushedFrame::Json(&request.df),
    )
    .await
}

/// A write of `df` (JSON or Arrow) to feature view `view_name`'s online records: checked whole
/// by [`parse_rows`], then written under newer-wins. `POST /write-to-online-store` and the Python
/// package's Arrow writes both come here.
pub async fn write_frame(
    app: &AppState,
    view_name: &str,
    df: PushedFrame<'_>,
) -> Result<PushSummary, ApiError> {
    let serving = app.serving();
    let registry = serving.registry();
    let (view, fv) = registry
        .view(view_name)
        .ok_or_else(|| ApiError::not_found(format!("unknown feature view \"{view_name}\"")))?;
    let rows = parse_rows(fv, df, &WriteLimits::of(app, registry))?;
    write_online(app, &serving, view, &rows).await
}

/// A dataframe written to the store, column-oriented: the JSON of `POST /push` and
/// `POST /write-to-online-store`, or Arrow data handed over in-process (the Python package).
#[derive(Clone, Copy)]
pub enum PushedFrame<'a> {
    /// `{column: [values]}`.
    Json(&'a serde_json::Map<String, Json>),
    /// One record batch.
    Arrow(&'a RecordBatch),
}

/// One column of a [`PushedFrame`].
#[derive(Clone, Copy)]
enum PushedColumn<'a> {
    Json(&'a [Json]),
    Arrow(&'a dyn Array),
}

impl<'a> PushedColumn<'a> {
    /// Refuses an Arrow column whose type cannot be read as `dtype` (JSON is checked per value).
    fn check(&self, name: &str, dtype: Option<ValueType>) -> Result<(), ApiError> {
        let PushedColumn::Arrow(array) = self else {
            return Ok(());
        };
        let checked = match dtype {
            Some(ValueType::Scalar(s)) => check_scalar(array.data_type(), s),
            Some(list) => check_column(array.data_type(), list),
            None => check_timestamp(array.data_type()),
        };
        checked.map_err(|m| ApiError::invalid_entity(format!("df.{name}: {m}")))
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            PushedColumn::Json(values) => values[row].is_null(),
            PushedColumn::Arrow(array) => array.is_null(row),
        }
    }

    fn key_part<'b>(
        &'b self,
        row: usize,
        dtype: ScalarType,
        bytes: &'b mut Vec<u8>,
    ) -> Result<KeyPart<'b>, String> {
        match self {
            PushedColumn::Json(values) => key_part(&values[row], dtype, bytes),
            PushedColumn::Arrow(array) => key_part_at(*array, dtype, row)
                .ok_or_else(|| format!("expected {}, got null", dtype.name())),
        }
    }

    fn time(&self, row: usize) -> Result<EpochMicros, String> {
        match self {
            PushedColumn::Json(values) => parse_time(&values[row]),
            PushedColumn::Arrow(array) => timestamp_at(*array, row)
                .ok_or_else(|| "expected a timestamp, got null".to_string()),
        }
    }

    fn value(&self, row: usize, dtype: ValueType) -> Result<Value, String> {
        match self {
            PushedColumn::Json(values) => value_from_json(&values[row], dtype),
            PushedColumn::Arrow(array) => Ok(value_at(*array, dtype, row)),
        }
    }
}

/// The created-timestamp column Feast's SDK adds to every write, often all null.
const FEAST_CREATED_COLUMN: &str = "created";

/// Checks a dataframe (JSON or Arrow) against a view's schema and `limits`, and converts every
/// row: the one rule of every write path.
pub fn parse_rows(
    view: &FeatureView,
    df: PushedFrame<'_>,
    limits: &WriteLimits,
) -> Result<Vec<PushedRow>, ApiError> {
    let max_rows = limits.max_rows;
    let created_name = view.source.created_timestamp_column.as_deref();
    let mut len = None;
    let mut columns: Vec<(&str, PushedColumn<'_>)> = Vec::new();
    let named: Vec<(&str, Result<PushedColumn<'_>, &Json>)> = match df {
        PushedFrame::Json(map) => map
            .iter()
            .map(|(name, column)| {
                let column = match column {
                    Json::Array(values) => Ok(PushedColumn::Json(values.as_slice())),
                    other => Err(other),
                };
                (name.as_str(), column)
            })
            .collect(),
        PushedFrame::Arrow(batch) => batch
            .schema_ref()
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, c)| (f.name().as_str(), Ok(PushedColumn::Arrow(c.as_ref()))))
            .collect(),
    };
    for (name, column) in named {
        let column = column.map_err(|other| {
            ApiError::bad_request(format!(
                "df.{name} must be a list of values, got {}",
                json_kind(other)
            ))
        })?;
        let values = match column {
            PushedColumn::Json(values) => values.len(),
            PushedColumn::Arrow(array) => array.len(),
        };
        match len {
            None => len = Some(values),
            Some(n) if n != values => {
                return Err(ApiError::bad_request(format!(
                    "df columns have unequal lengths: {name} has {values} values, others have {n}"
                )));
            }
            Some(_) => {}
        }
        let known = view.join_keys.iter().any(|j| j.name.as_str() == name)
            || view.field_index(name).is_some()
            || name == "event_timestamp"
            || *name == view.source.timestamp_field
            || name == "created_timestamp"
            || name == FEAST_CREATED_COLUMN
            || Some(name) == created_name;
        if !known {
            return Err(ApiError::invalid_entity(format!(
                "df.{name}: feature view \"{}\" has no column \"{name}\"",
                view.name
            )));
        }
        columns.push((name, column));
    }
    let n = len.unwrap_or(0);
    if n > max_rows {
        return Err(ApiError::too_large(format!(
            "{n} rows pushed; the limit is {max_rows} (server.max_entities)"
        )));
    }
    let column = |name: &str| -> Option<(&str, PushedColumn<'_>)> {
        columns.iter().find(|(n, _)| *n == name).copied()
    };
    let required = |name: &str, dtype: ValueType| {
        let (name, found) = column(name).ok_or_else(|| {
            ApiError::invalid_entity(format!(
                "df is missing column \"{name}\" of feature view \"{}\"",
                view.name
            ))
        })?;
        found.check(name, Some(dtype))?;
        Ok::<_, ApiError>(found)
    };
    let keys: Vec<PushedColumn<'_>> = view
        .join_keys
        .iter()
        .map(|j| required(j.name.as_str(), ValueType::Scalar(j.dtype)))
        .collect::<Result<_, _>>()?;
    let timestamp = |name: Option<&str>| -> Result<Option<PushedColumn<'_>>, ApiError> {
        match name.and_then(column) {
            Some((name, found)) => found.check(name, None).map(|()| Some(found)),
            None => Ok(None),
        }
    };
    let event = match column("event_timestamp") {
        Some(_) => timestamp(Some("event_timestamp"))?,
        None => timestamp(Some(&view.source.timestamp_field))?,
    }
    .ok_or_else(|| ApiError::invalid_entity("df is missing column \"event_timestamp\""))?;
    let created_column = [
        created_name,
        Some("created_timestamp"),
        Some(FEAST_CREATED_COLUMN),
    ]
    .into_iter()
    .flatten()
    .find(|&name| column(name).is_some());
    let created = timestamp(created_column)?;
    let features: Vec<PushedColumn<'_>> = view
        .fields
        .iter()
        .map(|f| required(f.name.as_str(), f.dtype))
        .collect::<Result<_, _>>()?;

    let mut rows = Vec::with_capacity(n);
    let mut bytes = Vec::new();
    for r in 0..n {
        let mut key_values = Vec::with_capacity(keys.len());
        let mut encoded = Vec::with_capacity(16);
        for (col, jk) in keys.iter().zip(&view.join_keys) {
            let part = col
                .key_part(r, jk.dtype, &mut bytes)
                .map_err(|m| ApiError::invalid_entity(format!("df.{}[{r}]: {m}", jk.name)))?;
            EntityKey::push_part(&mut encoded, part);
            key_values.push(match part {
                KeyPart::Str(s) => Value::String(s.to_owned()),
                KeyPart::Int(i) => Value::Int(i),
                KeyPart::Bytes(b) => Value::Bytes(b.to_vec()),
            });
        }
        let event_ts = event
            .time(r)
            .and_then(|t| limits.check_not_future(t))
            .map_err(|m| ApiError::invalid_entity(format!("df.event_timestamp[{r}]: {m}")))?;
        let created_ts = match created {
            // Feast's SDK sends a created column of nulls when the view has none.
            Some(c) if c.is_null(r) => 0,
            Some(c) => c
                .time(r)
                .and_then(|t| limits.check_not_future(t))
                .map_err(|m| ApiError::invalid_entity(format!("df.created_timestamp[{r}]: {m}")))?,
            None => 0,
        };
        let mut values = Vec::with_capacity(features.len());
        for (col, f) in features.iter().zip(&view.fields) {
            values.push(
                col.value(r, f.dtype)
                    .map_err(|m| ApiError::invalid_entity(format!("df.{}[{r}]: {m}", f.name)))?,
            );
        }
        rows.push(PushedRow {
            entity: EntityKey::from_encoded(encoded),
            keys: key_values,
            event_ts,
            created_ts,
            values,
        });
    }
    Ok(rows)
}

/// A timestamp as [`crate::types::parse_time`] reads it (RFC 3339, naive ISO as UTC, as Feast's
/// SDK sends, or a date), or a number of seconds since the epoch (fractions allowed); a number
/// that does not fit a timestamp is refused, never saturated.
fn parse_time(v: &Json) -> Result<EpochMicros, String> {
    match v {
        Json::String(s) => crate::types::parse_time(s),
        Json::Number(n) => epoch_seconds_to_micros(n),
        other => Err(format!(
            "expected an RFC 3339 timestamp or epoch seconds, got {}",
            json_kind(other)
        )),
    }
}

/// Writes checked rows to the online store under newer-wins, and records their write lag;
/// `view_index` indexes the registry of `serving`.
pub async fn write_online(
    app: &AppState,
    serving: &ServingState,
    view_index: usize,
    rows: &[PushedRow],
) -> Result<PushSummary, ApiError> {
    let registry = serving.registry();
    let view = &registry.feature_views[view_index];
    let now = app.clock().now_micros();
    let name: Arc<str> = Arc::clone(view.name.as_arc());
    let mut summary = PushSummary {
        rows: rows.len(),
        ..PushSummary::default()
    };
    let mut writes = Vec::with_capacity(rows.len());
    for r in rows {
        if view.rule.is_expired_for_store(r.event_ts, now) {
            summary.skipped_expired += 1;
            continue;
        }
        writes.push(RowWrite {
            view: Arc::clone(&name),
            entity: r.entity.clone(),
            row: FeatureRow {
                event_ts: r.event_ts,
                created_ts: r.created_ts,
                schema_fingerprint: view.schema_fingerprint,
                values: r.values.clone(),
            },
            expire_at: view.rule.expire_at(r.event_ts),
        });
    }
    let mut outcome = WriteOutcome::default();
    for chunk in writes.chunks(1000) {
        outcome += serving.store().write(chunk).await?;
    }
    let readable_at = app.clock().now_micros();
    let lag = &serving.online.view_metrics(view_index).write_lag_seconds;
    for w in &writes {
        lag.observe((readable_at - w.row.event_ts).max(0) as f64 / 1e6);
    }
    summary.written = outcome.written;
    summary.skipped_older = outcome.skipped_older;
    Ok(summary)
}

/// Appends checked rows to the view's offline source (logged, or only buffered with
/// `push.durability: buffered`; see `push.flush_interval`); `view_index` indexes the registry of
/// `serving`.
pub async fn write_offline(
    serving: &ServingState,
    view_index: usize,
    rows: Vec<PushedRow>,
) -> Result<Appended, ApiError> {
    let appender = Arc::clone(&serving.offline);
    tokio::task::spawn_blocking(move || appender.append(view_index, rows))
        .await
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "OFFLINE_WRITE_FAILED",
                e.to_string(),
            )
        })?
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "OFFLINE_WRITE_FAILED",
                e.to_string(),
            )
        })
}
