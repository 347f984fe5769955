//! The HTTP API: `POST /get-online-features` (Feast-compatible), `GET /health`, `GET /ready`.
//!
//! The server takes its listener and shutdown signal from the caller, so tests bind
//! `127.0.0.1:0` and the binary binds the configured address.

pub mod error;
pub mod json;
pub mod online;

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use http_body_util::{BodyExt, Limited};
use tokio::net::TcpListener;

use self::error::ApiError;
use self::online::{
    Cell, EntityRows, FeatureColumn, FeatureStatus, OnlineRequest, ServingPlan, entity_keys,
    read_keys, render_response, row_status,
};
use crate::clock::SharedClock;
use crate::registry::{FeatureRef, Registry};
use crate::store::SharedStore;

/// Everything a request handler needs; built once at start-up and shared by all requests.
pub struct AppState {
    /// The registry and the lookup plan prepared from it.
    pub plan: ServingPlan,
    /// The online store.
    pub store: SharedStore,
    /// The clock used for ttl decisions.
    pub clock: SharedClock,
}

impl AppState {
    /// Prepares the state for a registry and an opened store.
    pub fn new(registry: Arc<Registry>, store: SharedStore, clock: SharedClock) -> Arc<Self> {
        Arc::new(AppState {
            plan: ServingPlan::new(registry),
            store,
            clock,
        })
    }

    fn registry(&self) -> &Registry {
        &self.plan.registry
    }
}

/// The API routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/get-online-features", post(get_online_features))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(not_found)
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Responses are small single writes: without TCP_NODELAY, Nagle's algorithm and delayed ACKs
    // can hold them back for tens of milliseconds.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn health() -> Response {
    json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
}

async fn ready(State(app): State<Arc<AppState>>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), app.store.ping()).await {
        Ok(Ok(())) => json_response(StatusCode::OK, br#"{"status":"ready"}"#.to_vec()),
        Ok(Err(e)) => ApiError::unavailable(format!(
            "online store ({}) not ready: {e}",
            app.store.kind()
        ))
        .into_response(),
        Err(_) => ApiError::unavailable(format!(
            "online store ({}) did not answer a ping within 2s",
            app.store.kind()
        ))
        .into_response(),
    }
}

async fn not_found() -> Response {
    ApiError::not_found("no such endpoint; see docs/http-api.md").into_response()
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Reads a request body up to `max` bytes; larger bodies are a 413.
async fn read_body(body: Body, max: usize) -> Result<bytes::Bytes, ApiError> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(format!(
            "request body is larger than {max} bytes (server.max_body_bytes)"
        ))),
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read request body: {e}"
        ))),
    }
}

/// Parses a JSON body; errors name the path of the offending field.
fn parse_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("invalid request body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid request body: {path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    Ok(value)
}

async fn get_online_features(State(app): State<Arc<AppState>>, body: Body) -> Response {
    match lookup(&app, body).await {
        Ok(bytes) => json_response(StatusCode::OK, bytes),
        Err(e) => e.into_response(),
    }
}

async fn lookup(app: &AppState, body: Body) -> Result<Vec<u8>, ApiError> {
    let registry = app.registry();
    let body = read_body(body, registry.server.max_body_bytes).await?;
    let request: OnlineRequest<'_> = parse_json(&body)?;
    let selection = app.plan.select(&request)?;
    let rows = EntityRows::new(&request.entities, registry.server.max_entities)?;
    let n = rows.len;

    // Entity keys, once per distinct join-key list.
    let mut keys_by_group = vec![None; app.plan.key_groups.len()];
    for &v in &selection.views {
        let g = app.plan.view_key_group[v];
        if keys_by_group[g].is_none() {
            let view = &registry.feature_views[v];
            keys_by_group[g] = Some(entity_keys(
                &rows,
                &app.plan.key_groups[g],
                view.name.as_str(),
            )?);
        }
    }

    // One store read for every (view, row).
    let keys = read_keys(registry, &selection, &app.plan, &keys_by_group, n);
    let stored = if keys.is_empty() {
        Vec::new()
    } else {
        app.store.read(&keys).await?
    };
    drop(keys);

    let now = app.clock.now_micros();
    let mut columns: Vec<FeatureColumn<'_>> = Vec::with_capacity(selection.refs.len());
    for &r in &selection.refs {
        let (view_name, field) = registry.ref_names(r);
        let name: Cow<'_, str> = if request.full_feature_names {
            Cow::Owned(format!("{view_name}__{}", field.name))
        } else {
            Cow::Borrowed(field.name.as_str())
        };
        match r {
            FeatureRef::View { view, field: fi } => {
                let v = &registry.feature_views[view];
                let offset = selection
                    .views
                    .iter()
                    .position(|&x| x == view)
                    .expect("selected")
                    * n;
                let ttl = v.ttl_micros();
                let cells = stored[offset..offset + n]
                    .iter()
                    .map(|row| match row {
                        Some(row) if row.schema_fingerprint == v.schema_fingerprint => Cell {
                            status: row_status(row, fi, ttl, now),
                            event_ts: row.event_ts,
                            row: Some(Arc::clone(row)),
                            index: fi,
                        },
                        _ => Cell {
                            row: None,
                            index: fi,
                            status: FeatureStatus::NotFound,
                            event_ts: 0,
                        },
                    })
                    .collect();
                columns.push(FeatureColumn {
                    name,
                    dtype: field.dtype,
                    cells,
                    computed: None,
                });
            }
            FeatureRef::OnDemand { view, .. } => {
                let odfv = &registry.on_demand_views[view];
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "TRANSFORM_UNAVAILABLE",
                    format!(
                        "on-demand view \"{}\": transform module \"{}\" is not loaded",
                        odfv.name, odfv.transform
                    ),
                ));
            }
        }
    }
    if !request.full_feature_names {
        for (i, c) in columns.iter().enumerate() {
            if columns[..i].iter().any(|d| d.name == c.name) || rows.column(&c.name).is_some() {
                return Err(ApiError::bad_request(format!(
                    "feature name \"{}\" appears twice in the response; set \"full_feature_names\": true",
                    c.name
                )));
            }
        }
    }
    Ok(render_response(&rows, &columns))
}
