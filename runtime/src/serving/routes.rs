//! The route table: every endpoint declared once, with its access level. Each route is wrapped in
//! the request metrics (outermost, so rejected requests are counted too) and the token check.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};

use super::{AppState, auth, handlers};

/// Who may call a route when a token is configured (`server.write_token_env`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Open unless `server.protect_reads` is set.
    Read,
    /// Always requires the bearer token.
    Write,
    /// Never requires the token: static content compiled into the binary, the same for every
    /// deployment and carrying no data (the `/ui` page). What such a page shows comes from read
    /// routes, which it calls with the token (see docs/monitoring.md).
    Open,
}

/// The endpoint label of requests to unknown paths.
const OTHER: &str = "other";

/// One route: its path, who may call it, its method and its handler.
type Route = (&'static str, Access, Method, MethodRouter<Arc<AppState>>);

/// Every route's path and method, in table order (the documentation is checked against it).
pub fn route_paths() -> Vec<(&'static str, Method)> {
    routes()
        .into_iter()
        .map(|(path, _, method, _)| (path, method))
        .collect()
}

/// The API routes.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for (path, access, method, handler) in routes() {
        let handler = handler.fallback(move || handlers::method_not_allowed(path, method));
        router = router.route(path, wrap(&state, path, access, handler));
    }
    router
        .fallback_service(
            wrap(
                &state,
                OTHER,
                Access::Read,
                axum::routing::any(handlers::not_found),
            )
            .with_state(Arc::clone(&state)),
        )
        .with_state(state)
}

/// The route table.
fn routes() -> [Route; 13] {
    [
        (
            "/get-online-features",
            Access::Read,
            Method::POST,
            post(handlers::get_online_features),
        ),
        ("/push", Access::Write, Method::POST, post(handlers::push)),
        (
            "/write-to-online-store",
            Access::Write,
            Method::POST,
            post(handlers::write_to_online_store),
        ),
        (
            "/materialize",
            Access::Write,
            Method::POST,
            post(handlers::materialize),
        ),
        (
            "/materialize-incremental",
            Access::Write,
            Method::POST,
            post(handlers::materialize_incremental),
        ),
        ("/health", Access::Read, Method::GET, get(handlers::health)),
        ("/ready", Access::Read, Method::GET, get(handlers::ready)),
        (
            "/metrics",
            Access::Read,
            Method::GET,
            get(handlers::metrics),
        ),
        (
            "/monitoring",
            Access::Read,
            Method::GET,
            get(handlers::monitoring),
        ),
        (
            "/transforms",
            Access::Read,
            Method::GET,
            get(handlers::list_transforms),
        ),
        (
            "/registry",
            Access::Read,
            Method::GET,
            get(handlers::registry),
        ),
        (
            "/openapi.json",
            Access::Read,
            Method::GET,
            get(handlers::openapi),
        ),
        ("/ui", Access::Open, Method::GET, get(handlers::ui)),
    ]
}

/// Puts the request metrics around one route, and the token check inside them when this route
/// needs a token (decided here, once: routes that need none carry no check at all).
fn wrap(
    state: &Arc<AppState>,
    endpoint: &'static str,
    access: Access,
    handler: MethodRouter<Arc<AppState>>,
) -> MethodRouter<Arc<AppState>> {
    let needs_token = state.write_token.is_some()
        && match access {
            Access::Write => true,
            Access::Read => state.registry().server.protect_reads,
            Access::Open => false,
        };
    let handler = if needs_token {
        handler.layer(middleware::from_fn_with_state(
            Arc::clone(state),
            auth::require_token,
        ))
    } else {
        handler
    };
    handler.layer(middleware::from_fn_with_state(
        (Arc::clone(state), endpoint),
        record_request,
    ))
}

/// Counts and times every request by route and status.
async fn record_request(
    State((app, endpoint)): State<(Arc<AppState>, &'static str)>,
    request: Request,
    next: Next,
) -> Response {
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
