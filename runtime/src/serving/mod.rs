//! The HTTP API: `POST /get-online-features` (Feast-compatible), `GET /health`, `GET /ready`.
//!
//! The server takes its listener and shutdown signal from the caller, so tests bind
//! `127.0.0.1:0` and the binary binds the configured address.

pub mod error;
pub mod json;
pub mod ondemand;
pub mod online;
pub mod push;

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use http_body_util::{BodyExt, Limited};
use tokio::net::TcpListener;

use self::error::ApiError;
use self::ondemand::OnDemandPlan;
use self::online::{
    Cell, EntityRows, FeatureColumn, FeatureStatus, OnlineRequest, ServingPlan, entity_keys,
    read_keys, render_response,
};
use crate::cache::CachedStore;
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::offline::push_writer::OfflineAppender;
use crate::registry::{FeatureRef, Registry};
use crate::store::{FeatureRow, SharedStore, StoreEvent};
use crate::transform::catalog::RejectHook;
use crate::transform::{ModuleCatalog, TransformEngine};

/// Everything a request handler needs; built once at start-up and shared by all requests.
pub struct AppState {
    /// The registry and the lookup plan prepared from it.
    pub plan: ServingPlan,
    /// The online store, behind the L1 cache when it is enabled.
    pub store: SharedStore,
    /// The L1 cache, when enabled (the same object as `store`).
    pub cache: Option<Arc<CachedStore>>,
    /// The clock used for ttl decisions.
    pub clock: SharedClock,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Appends pushed rows to offline sources.
    pub offline: Arc<OfflineAppender>,
    /// Bearer token required by write endpoints (and reads with `server.protect_reads`).
    pub write_token: Option<String>,
    /// The loaded transform modules, when the registry has on-demand views.
    pub transforms: Option<Arc<ModuleCatalog>>,
    /// Input layouts of the on-demand views, indexed like `Registry::on_demand_views`.
    pub on_demand: Vec<OnDemandPlan>,
}

impl AppState {
    /// Prepares the state for a registry and an opened store, putting the L1 cache in front of
    /// the store unless `cache.enabled` is false. The write token is read from the environment
    /// variable named by `server.write_token_env`.
    pub fn new(registry: Arc<Registry>, store: SharedStore, clock: SharedClock) -> Arc<Self> {
        let token = std::env::var(&registry.server.write_token_env)
            .ok()
            .filter(|t| !t.is_empty());
        Self::with_write_token(registry, store, clock, token)
    }

    /// [`AppState::new`] with an explicit write token (`None`: writes are open).
    pub fn with_write_token(
        registry: Arc<Registry>,
        store: SharedStore,
        clock: SharedClock,
        write_token: Option<String>,
    ) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new(&registry));
        let cache = registry.cache.enabled.then(|| {
            Arc::new(CachedStore::new(
                store.clone(),
                &registry,
                clock.clone(),
                metrics.cache.clone(),
                metrics.store.clone(),
            ))
        });
        let store = match &cache {
            Some(c) => c.clone() as SharedStore,
            None => store,
        };
        let transforms = if registry.on_demand_views.is_empty() {
            None
        } else {
            match TransformEngine::new() {
                Ok(engine) => {
                    let failures = metrics.transforms.load_failures.clone();
                    let hook: RejectHook = Box::new(move |_, _| failures.inc());
                    Some(Arc::new(ModuleCatalog::load_dir_lenient(
                        &engine,
                        registry.transforms.dir.clone(),
                        Some(hook),
                    )))
                }
                Err(e) => {
                    tracing::error!(
                        "cannot start the transform engine; on-demand views are unavailable: {e}"
                    );
                    None
                }
            }
        };
        let on_demand = registry
            .on_demand_views
            .iter()
            .map(|v| OnDemandPlan::new(&registry, v))
            .collect();
        Arc::new(AppState {
            transforms,
            on_demand,
            offline: Arc::new(OfflineAppender::new(Arc::clone(&registry))),
            plan: ServingPlan::new(registry),
            store,
            cache,
            clock,
            metrics,
            write_token,
        })
    }

    /// Applies the write announcements of other instances (and of this one) until the stream ends,
    /// invalidating L1 entries.
    pub async fn follow_writes(self: Arc<Self>) {
        let mut notices = match self.store.subscribe_writes().await {
            Ok(Some(n)) => n,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(
                    "cannot subscribe to write announcements; L1 entries expire by ttl only: {e}"
                );
                return;
            }
        };
        while let Some(event) = notices.recv().await {
            let Some(cache) = &self.cache else { continue };
            match event {
                StoreEvent::Written(notice) => {
                    cache.invalidate(&notice.view, notice.entity.as_bytes())
                }
                StoreEvent::Resync => cache.invalidate_all(),
            }
        }
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
        .route("/metrics", get(metrics))
        .route("/transforms", get(list_transforms))
        .route("/push", post(push_handler))
        .route("/write-to-online-store", post(write_to_online_store))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
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
    let follower = tokio::spawn(Arc::clone(&state).follow_writes());
    // Reloads changed modules until the server stops.
    let _watcher = match &state.transforms {
        Some(t) => match Arc::clone(t).watch() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(
                    "cannot watch the transforms directory; modules will not reload: {e}"
                );
                None
            }
        },
        None => None,
    };
    let flusher = tokio::spawn(flush_pushed_rows(Arc::clone(&state.offline)));
    let result = axum::serve(listener, router(Arc::clone(&state)))
        .with_graceful_shutdown(shutdown)
        .await;
    follower.abort();
    flusher.abort();
    // Rows pushed to the offline store and still buffered are written before exiting.
    let offline = Arc::clone(&state.offline);
    match tokio::task::spawn_blocking(move || offline.flush_all()).await {
        Ok(Err(e)) => tracing::error!("cannot write buffered pushed rows: {e}"),
        Err(e) => tracing::error!("cannot write buffered pushed rows: {e}"),
        Ok(Ok(_)) => {}
    }
    result
}

/// Writes buffered pushed rows once they have waited `push.flush_interval`.
async fn flush_pushed_rows(offline: Arc<OfflineAppender>) {
    let mut tick = tokio::time::interval(offline.tick());
    loop {
        tick.tick().await;
        let appender = Arc::clone(&offline);
        match tokio::task::spawn_blocking(move || appender.flush_due()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!("cannot write pushed rows (kept for the next flush): {e}")
            }
            Err(e) => tracing::error!("pushed-row flush task failed: {e}"),
        }
    }
}

/// Counts and times every request by route and status. Unknown paths share one label value.
async fn record_request(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let is_write = matches!(path, "/push" | "/write-to-online-store");
    if let Some(token) = &app.write_token
        && (is_write || app.registry().server.protect_reads)
        && let Err(e) = check_token(&request, token)
    {
        return e.into_response();
    }
    let endpoint = match path {
        "/get-online-features" => "/get-online-features",
        "/push" => "/push",
        "/write-to-online-store" => "/write-to-online-store",
        "/health" => "/health",
        "/ready" => "/ready",
        "/metrics" => "/metrics",
        "/transforms" => "/transforms",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    let labels = [endpoint, status.as_str()];
    app.metrics.http_requests.with_label_values(&labels).inc();
    app.metrics
        .http_seconds
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Checks `Authorization: Bearer <token>`, comparing in constant time.
fn check_token(request: &Request, token: &str) -> Result<(), ApiError> {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "this endpoint requires Authorization: Bearer <token>",
            )
        })?;
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let differ = a.len() != b.len() || a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) != 0;
    if differ {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "invalid bearer token",
        ));
    }
    Ok(())
}

async fn push_handler(State(app): State<Arc<AppState>>, body: Body) -> Response {
    summary_response(push::push(&app, body).await)
}

async fn write_to_online_store(State(app): State<Arc<AppState>>, body: Body) -> Response {
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

/// `GET /transforms`: every loaded module, its hash, when it was loaded and the views using it.
async fn list_transforms(State(app): State<Arc<AppState>>) -> Response {
    let registry = app.registry();
    let modules: Vec<serde_json::Value> = app
        .transforms
        .as_ref()
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
        "rejected": app.transforms.as_ref().map_or(0, |t| t.rejected_count()),
    });
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    if let Some(cache) = &app.cache {
        cache.refresh_metrics();
    }
    let mut response = app.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
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
pub(crate) async fn read_body(body: Body, max: usize) -> Result<bytes::Bytes, ApiError> {
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
    // Freshness: the age of every row served, once per (view, entity).
    for (k, &v) in selection.views.iter().enumerate() {
        let age = &app.metrics.views[v].age_seconds;
        for row in stored[k * n..(k + 1) * n].iter().flatten() {
            age.observe((now - row.event_ts).max(0) as f64 / 1e6);
        }
    }
    let mut columns: Vec<FeatureColumn<'_>> = Vec::with_capacity(selection.refs.len());
    let mut computed: Vec<Option<ondemand::Computed>> =
        (0..registry.on_demand_views.len()).map(|_| None).collect();
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
                let view_metrics = &app.metrics.views[view];
                let cells: Vec<Cell> = stored[offset..offset + n]
                    .iter()
                    .map(|row| {
                        let status = v.rule.status(
                            row.as_deref().map(FeatureRow::meta),
                            row.as_ref()
                                .is_none_or(|r| r.values.get(fi).is_none_or(|x| x.is_null())),
                            now,
                        );
                        match row {
                            Some(row) if status != FeatureStatus::NotFound => Cell {
                                status,
                                event_ts: row.event_ts,
                                row: Some(Arc::clone(row)),
                                index: fi,
                            },
                            _ => Cell {
                                row: None,
                                index: fi,
                                status,
                                event_ts: 0,
                            },
                        }
                    })
                    .collect();
                let mut counts = [0u64; 4];
                for c in &cells {
                    counts[c.status.index()] += 1;
                }
                for (counter, count) in view_metrics.statuses.iter().zip(counts) {
                    if count > 0 {
                        counter.inc_by(count);
                    }
                }
                columns.push(FeatureColumn {
                    name,
                    dtype: field.dtype,
                    cells,
                    computed: None,
                });
            }
            FeatureRef::OnDemand { view, field: fi } => {
                if computed[view].is_none() {
                    let source_rows = |s: usize| {
                        let k = selection
                            .views
                            .iter()
                            .position(|&x| x == s)
                            .expect("sources selected");
                        &stored[k * n..(k + 1) * n]
                    };
                    let result = ondemand::compute(
                        registry,
                        view,
                        &app.on_demand[view],
                        app.transforms.as_deref(),
                        &app.metrics.transforms,
                        &rows,
                        source_rows,
                        now,
                    )
                    .await?;
                    computed[view] = Some(result);
                }
                let out = computed[view].as_ref().expect("computed above");
                let cells = out
                    .rows
                    .iter()
                    .zip(&out.event_ts)
                    .map(|(values, &event_ts)| Cell {
                        row: None,
                        index: fi,
                        status: if values[fi].is_null() {
                            FeatureStatus::NullValue
                        } else {
                            FeatureStatus::Present
                        },
                        event_ts,
                    })
                    .collect();
                columns.push(FeatureColumn {
                    name,
                    dtype: field.dtype,
                    cells,
                    computed: Some(Arc::clone(&out.rows)),
                });
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
