//! The HTTP handlers: each reads its input, calls the domain code and renders the answer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};

use super::AppState;
use super::arrow_response::{ARROW_STREAM, ResponseFormat, render_arrow};
use super::error::ApiError;
use super::online::{JsonRequest, render_response};
use super::push;

/// The response header carrying a lookup's id in the feature log (lookups with logged rows only).
pub const REQUEST_ID_HEADER: &str = "x-quiver-request-id";

/// `POST /get-online-features`: read body, parse, look up, render as JSON, or as an Arrow IPC
/// stream when `Accept` asks for it ([`ResponseFormat::negotiate`]). Errors are JSON either way.
pub(super) async fn get_online_features(
    State(app): State<Arc<AppState>>,
    request: Request,
) -> Response {
    // The whole request, not a `HeaderMap` extractor: that would copy the headers.
    let (parts, body) = request.into_parts();
    let format = ResponseFormat::negotiate(&parts.headers);
    let serving = app.serving();
    let result = async {
        let body = read_body(body, serving.registry().server.max_body_bytes).await?;
        let wire: JsonRequest<'_> = parse_json(&body)?;
        let request = wire.to_request();
        let response = serving.online.get_online_features(&request).await?;
        let bytes = match format {
            ResponseFormat::Json => render_response(&request, &response),
            ResponseFormat::Arrow => render_arrow(serving.registry(), &request, &response)
                .map_err(|e| {
                    tracing::error!("cannot render the Arrow answer: {e}");
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "RENDER_FAILED",
                        format!("cannot render the Arrow answer: {e}"),
                    )
                })?,
        };
        Ok::<_, ApiError>((bytes, response.request_id.clone()))
    }
    .await;
    match result {
        Ok((bytes, request_id)) => {
            let mut response = match format {
                ResponseFormat::Json => json_response(StatusCode::OK, bytes),
                ResponseFormat::Arrow => {
                    let mut response = (StatusCode::OK, bytes).into_response();
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM));
                    response
                }
            };
            if let Some(id) = request_id
                && let Ok(value) = HeaderValue::from_str(&id)
            {
                response
                    .headers_mut()
                    .insert(header::HeaderName::from_static(REQUEST_ID_HEADER), value);
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /push`.
pub(super) async fn push(State(app): State<Arc<AppState>>, body: Body) -> Response {
    summary_response(push::push(&app, body).await)
}

/// `POST /write-to-online-store`.
pub(super) async fn write_to_online_store(
    State(app): State<Arc<AppState>>,
    body: Body,
) -> Response {
    summary_response(push::write_to_online_store(&app, body).await)
}

fn summary_response(result: Result<push::PushSummary, ApiError>) -> Response {
    match result {
        Ok(summary) => json_response(
            StatusCode::OK,
            serde_json::to_vec(&summary).expect("serializable"),
        ),
        Err(e) => e.into_response(),
    }
}

/// `POST /materialize`: Feast's `{start_ts, end_ts, feature_views?, disable_event_timestamp?}`.
pub(super) async fn materialize(State(app): State<Arc<AppState>>, body: Body) -> Response {
    let result = async {
        let body = read_body(body, app.registry().server.max_body_bytes).await?;
        let request: super::materialize::WindowRequest = parse_json(&body)?;
        let (start, end) = request.window(app.clock().now_micros())?;
        super::materialize::run(
            &app,
            Some(("start_ts", &start)),
            &end,
            request.feature_views,
        )
        .await
    }
    .await;
    summary_json(result)
}

/// `POST /materialize-incremental`: Feast's `{end_ts, feature_views?}`.
pub(super) async fn materialize_incremental(
    State(app): State<Arc<AppState>>,
    body: Body,
) -> Response {
    let result = async {
        let body = read_body(body, app.registry().server.max_body_bytes).await?;
        let request: super::materialize::IncrementalRequest = parse_json(&body)?;
        request.check()?;
        super::materialize::run(&app, None, &request.end_ts, request.feature_views).await
    }
    .await;
    summary_json(result)
}

fn summary_json(result: Result<impl serde::Serialize, ApiError>) -> Response {
    match result {
        Ok(summary) => json_response(
            StatusCode::OK,
            serde_json::to_vec(&summary).expect("serializable"),
        ),
        Err(e) => e.into_response(),
    }
}

/// `GET /transforms`: every loaded module, its hash, when it was loaded and the views using it.
pub(super) async fn list_transforms(State(app): State<Arc<AppState>>) -> Response {
    let serving = app.serving();
    let registry = serving.registry();
    let transforms = serving.online.transforms();
    let modules: Vec<serde_json::Value> = transforms
        .map(|t| t.list())
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let views: Vec<&str> = registry
                .on_demand_views
                .iter()
                .filter(|v| v.transform.as_str() == m.name)
                .map(|v| v.name.as_str())
                .collect();
            let loaded_at = chrono::DateTime::<chrono::Utc>::from(m.loaded_at)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            serde_json::json!({"name": m.name, "sha256": m.sha256, "loaded_at": loaded_at, "views": views})
        })
        .collect();
    let body = serde_json::json!({
        "dir": registry.transforms.dir,
        "modules": modules,
        "rejected": transforms.map_or(0, |t| t.rejected_count()),
    });
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

/// `GET /registry`: what is being served: the project, entities, feature views (features, types,
/// ttl), on-demand views (their module), feature services, push sources, and the generation and
/// load time of these definitions.
pub(super) async fn registry(State(app): State<Arc<AppState>>) -> Response {
    let serving = app.serving();
    let body = super::registry::describe(&serving);
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

/// `GET /metrics`: the Prometheus text format.
pub(super) async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let serving = app.serving();
    if let Some(cache) = &serving.cache {
        cache.refresh_metrics();
    }
    let now = app.clock().now_micros();
    let mut response =
        super::monitoring::render_metrics(&app.metrics, &serving, now).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `GET /monitoring`: the drift of every monitored feature over the window, with its bins.
pub(super) async fn monitoring(State(app): State<Arc<AppState>>) -> Response {
    let serving = app.serving();
    let body = super::monitoring::describe(&serving, app.clock().now_micros());
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

/// `GET /openapi.json`: the API's OpenAPI document with this registry's names.
pub(super) async fn openapi(State(app): State<Arc<AppState>>) -> Response {
    let mut response = (StatusCode::OK, app.serving().openapi.clone()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The monitoring page: HTML, CSS and JavaScript in one file, compiled in (no CDN, no build step).
const UI_PAGE: &str = include_str!("ui/monitoring.html");

/// `GET /ui`: the monitoring page. It holds no data: its script reads `/metrics` and
/// `/monitoring` (with the bearer token from the URL fragment or a prompt, when reads are
/// protected) and renders them in the browser.
pub(super) async fn ui() -> Response {
    let mut response = (StatusCode::OK, UI_PAGE).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /health`: the process is up.
pub(super) async fn health() -> Response {
    json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
}

/// `GET /ready`: the online store answers a ping.
pub(super) async fn ready(State(app): State<Arc<AppState>>) -> Response {
    let serving = app.serving();
    let store = serving.store();
    match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
        Ok(Ok(())) => json_response(StatusCode::OK, br#"{"status":"ready"}"#.to_vec()),
        Ok(Err(e)) => {
            ApiError::unavailable(format!("online store ({}) not ready: {e}", store.kind()))
                .into_response()
        }
        Err(_) => ApiError::unavailable(format!(
            "online store ({}) did not answer a ping within 2s",
            store.kind()
        ))
        .into_response(),
    }
}

/// A known path called with a method it does not take.
pub(super) async fn method_not_allowed(path: &'static str, allowed: Method) -> Response {
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("{path} takes {allowed}"),
    )
    .into_response();
    if let Ok(allow) = HeaderValue::from_str(allowed.as_str()) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

/// Any other path.
pub(super) async fn not_found() -> Response {
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
pub(crate) async fn read_body(body: Body, max: usize) -> Result<bytes::Bytes, ApiError> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(format!(
            "request body is larger than {max} bytes (server.max_body_bytes)"
        ))),
        Err(e) => {
            // The body's own error arrives wrapped; look for the timeout down the chain.
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
            while let Some(c) = cause {
                if let Some(timeout) = c.downcast_ref::<super::server::BodyTimeout>() {
                    return Err(ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "REQUEST_TIMEOUT",
                        timeout.to_string(),
                    ));
                }
                cause = c.source();
            }
            Err(ApiError::bad_request(format!(
                "cannot read request body: {e}"
            )))
        }
    }
}

/// Parses a JSON body; errors name the path of the offending field.
pub fn parse_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    // The plain parser first: tracking the path costs about as much as the parse itself and is
    // only needed to name the offending field of an invalid body, which is parsed again below.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
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
