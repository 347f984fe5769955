//! The HTTP transport: `POST /get-online-features` (Feast-compatible), `/push`,
//! `/write-to-online-store`, `/health`, `/ready`, `/metrics` and `/transforms`.
//!
//! This module wires the pieces (store, cache, metrics, transforms) into an [`AppState`] and
//! adapts HTTP to the domain calls: the lookup is [`crate::online::OnlineFeatures`], the write
//! path [`push`]. The server takes its listener and shutdown signal from the caller, so tests bind
//! `127.0.0.1:0` and the binary binds the configured address.
//!
//! Request path: [`routes`] (metrics, then [`auth`]) -> [`handlers`] -> [`crate::online`] ->
//! [`crate::cache`] -> [`crate::metered`] -> [`crate::store`].

mod auth;
pub mod error;
mod handlers;
pub mod json;
pub mod materialize;
pub mod online;
pub mod openapi;
pub mod push;
mod routes;
pub mod server;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use self::handlers::parse_json;
pub(crate) use self::handlers::read_body;
pub use self::routes::{route_paths, router};
use crate::cache::CachedStore;
use crate::clock::SharedClock;
use crate::metered::MeteredStore;
use crate::metrics::Metrics;
use crate::offline::push_writer::OfflineAppender;
use crate::online::OnlineFeatures;
use crate::registry::Registry;
use crate::store::{SharedStore, StoreEvent};
use crate::transform::catalog::RejectHook;
use crate::transform::{LoadLimits, ModuleCatalog, TransformEngine};

/// Everything a request handler needs; built once at start-up and shared by all requests.
pub struct AppState {
    /// The lookup pipeline (registry, store behind L1, clock, transforms).
    pub online: OnlineFeatures,
    /// The L1 cache, when enabled (the same object the lookup reads through).
    pub cache: Option<Arc<CachedStore>>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Appends pushed rows to offline sources.
    pub offline: Arc<OfflineAppender>,
    /// Bearer token required by write endpoints (and reads with `server.protect_reads`).
    pub write_token: Option<String>,
    /// The OpenAPI document served at `/openapi.json`, rendered once.
    pub openapi: bytes::Bytes,
}

impl AppState {
    /// Prepares the state for a registry and an opened store: the store is metered, then put
    /// behind the L1 cache unless `cache.enabled` is false. The write token is read from the
    /// environment variable named by `server.write_token_env`.
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
        let store: SharedStore = Arc::new(MeteredStore::new(store, metrics.store.clone()));
        let cache = registry.cache.enabled.then(|| {
            Arc::new(CachedStore::new(
                store.clone(),
                &registry,
                clock.clone(),
                metrics.cache.clone(),
            ))
        });
        let store = match &cache {
            Some(c) => c.clone() as SharedStore,
            None => store,
        };
        let transforms = load_transforms(&registry, &metrics);
        Arc::new(AppState {
            offline: Arc::new(OfflineAppender::new(Arc::clone(&registry))),
            openapi: openapi::document(&registry).into(),
            online: OnlineFeatures::new(registry, store, clock, Arc::clone(&metrics), transforms),
            cache,
            metrics,
            write_token,
        })
    }

    /// The compiled registry.
    pub fn registry(&self) -> &Arc<Registry> {
        self.online.registry()
    }

    /// The store requests read and write (the L1 cache when it is enabled).
    pub fn store(&self) -> &SharedStore {
        self.online.store()
    }

    /// The clock deciding ttl.
    pub fn clock(&self) -> &SharedClock {
        self.online.clock()
    }

    /// Applies the write announcements of other instances (and of this one) until the stream ends,
    /// invalidating L1 entries.
    pub async fn follow_writes(self: Arc<Self>) {
        let mut notices = match self.store().subscribe_writes().await {
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
}

/// Serves the API on `listener` until `shutdown` completes, then drains in-flight requests within
/// `server.shutdown_timeout` (see [`server`] for the connection limits). Pushed rows a previous
/// process logged but did not write as Parquet are replayed first; the server fails to start if
/// they cannot be.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let offline = Arc::clone(&state.offline);
    let replayed = tokio::task::spawn_blocking(move || offline.recover())
        .await
        .map_err(std::io::Error::other)?
        .map_err(|e| std::io::Error::other(format!("cannot replay pushed rows: {e}")))?;
    if replayed > 0 {
        tracing::info!("replayed {replayed} pushed rows from the write-ahead log");
    }
    let follower = tokio::spawn(Arc::clone(&state).follow_writes());
    // Reloads changed modules until the server stops.
    let _watcher = match state.online.transforms() {
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
    let limits = server::ConnectionLimits::from_settings(&state.registry().server);
    let result =
        server::serve_connections(listener, router(Arc::clone(&state)), limits, shutdown).await;
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

/// Loads the transform modules when the registry has on-demand views; a broken file is counted
/// and skipped, so it never stops the server.
fn load_transforms(registry: &Registry, metrics: &Metrics) -> Option<Arc<ModuleCatalog>> {
    if registry.on_demand_views.is_empty() {
        return None;
    }
    match TransformEngine::new() {
        Ok(engine) => {
            let failures = metrics.transforms.load_failures.clone();
            let hook: RejectHook = Box::new(move |_, _| failures.inc());
            Some(Arc::new(ModuleCatalog::load_dir_lenient(
                &engine,
                registry.transforms.dir.clone(),
                LoadLimits::of_settings(&registry.transforms),
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
}
