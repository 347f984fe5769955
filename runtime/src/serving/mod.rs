//! The HTTP transport: `POST /get-online-features` (Feast-compatible), `/push`,
//! `/write-to-online-store`, `/health`, `/ready`, `/metrics`, `/monitoring`, `/transforms` and
//! `/registry`.
//!
//! This module wires the pieces (store, cache, metrics, transforms) into an [`AppState`], whose
//! registry-derived part ([`ServingState`]) a reload of `feature_store.yaml` swaps whole, and
//! adapts HTTP to the domain calls: the lookup is [`crate::online::OnlineFeatures`], the write
//! path [`push`]. The server takes its listener and shutdown signal from the caller, so tests bind
//! `127.0.0.1:0` and the binary binds the configured address.
//!
//! Request path: [`routes`] (metrics, then [`auth`]) -> [`handlers`] -> [`crate::online`] ->
//! [`crate::cache`] -> [`crate::metered`] -> [`crate::store`].

pub mod arrow_response;
mod auth;
pub mod error;
mod handlers;
pub mod json;
pub mod materialize;
pub mod monitoring;
pub mod online;
pub mod openapi;
pub mod push;
mod registry;
pub mod reload;
mod routes;
pub mod server;

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::net::TcpListener;

pub(crate) use self::handlers::read_body;
pub use self::handlers::{REQUEST_ID_HEADER, parse_json};
pub use self::reload::{ReloadOutcome, load_monitor};
pub use self::routes::{route_paths, router};
use crate::cache::CachedStore;
use crate::clock::SharedClock;
use crate::config::ConfigErrors;
use crate::metered::MeteredStore;
use crate::metrics::Metrics;
use crate::offline::push_writer::OfflineAppender;
use crate::online::OnlineFeatures;
use crate::registry::Registry;
use crate::store::{SharedStore, StoreEvent};

/// What is being served: one compiled registry and everything derived from it (the serving plan,
/// per-view metric handles, L1 cache policies, on-demand bindings to modules, the drift monitor
/// with its reference profiles, the offline appender, the OpenAPI document). A registry reload builds a new one and swaps it in whole
/// ([`AppState::serving`]); a request keeps the one it started with.
pub struct ServingState {
    /// 1 for the registry loaded at start-up, +1 per applied reload.
    pub generation: u64,
    /// When this registry was loaded.
    pub loaded_at: SystemTime,
    /// The lookup pipeline (plan, store behind L1, clock, view metrics, transforms).
    pub online: OnlineFeatures,
    /// The L1 cache, when enabled (the same object the lookup reads through).
    pub cache: Option<Arc<CachedStore>>,
    /// Appends pushed rows to this registry's offline sources.
    pub offline: Arc<OfflineAppender>,
    /// The OpenAPI document served at `/openapi.json`, rendered once per registry.
    pub openapi: bytes::Bytes,
}

impl ServingState {
    /// The compiled registry.
    pub fn registry(&self) -> &Arc<Registry> {
        self.online.registry()
    }

    /// The store requests read and write (the L1 cache when it is enabled).
    pub fn store(&self) -> &SharedStore {
        self.online.store()
    }
}

/// Everything a request handler needs: the swappable [`ServingState`] and what lives as long as
/// the process (store connection, metrics, clock, write token).
pub struct AppState {
    /// The definitions being served; swapped whole by a reload so that no request ever sees half
    /// of one registry and half of another.
    serving: ArcSwap<ServingState>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Bearer token required by write endpoints (and reads with `server.protect_reads`).
    pub write_token: Option<String>,
    /// The online store, metered and below any L1 cache: opened once, kept across reloads.
    base_store: SharedStore,
    clock: SharedClock,
    /// Serializes reloads and holds what they reuse (the transform catalog and its watcher).
    /// A blocking mutex: held by the reload thread while it builds the next state, never by a
    /// request.
    reloads: Mutex<reload::Reloads>,
    /// Appenders of replaced generations: flushed, then dropped once no request holds them. A
    /// blocking mutex: held to push or sweep the list, never across an await.
    retired: Mutex<Vec<Arc<OfflineAppender>>>,
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

    /// [`AppState::new`], failing when a `monitoring` reference's profile cannot be read or does
    /// not match its view (what `quiver serve` uses: a bad reference is a configuration error).
    pub fn try_new(
        registry: Arc<Registry>,
        store: SharedStore,
        clock: SharedClock,
    ) -> Result<Arc<Self>, ConfigErrors> {
        let token = std::env::var(&registry.server.write_token_env)
            .ok()
            .filter(|t| !t.is_empty());
        let monitor = load_monitor(&registry)?;
        Ok(Self::build(registry, store, clock, token, monitor))
    }

    /// [`AppState::new`] with an explicit write token (`None`: writes are open). A `monitoring`
    /// reference that cannot be loaded is logged and monitoring is off; [`AppState::try_new`]
    /// refuses it instead.
    pub fn with_write_token(
        registry: Arc<Registry>,
        store: SharedStore,
        clock: SharedClock,
        write_token: Option<String>,
    ) -> Arc<Self> {
        let monitor = load_monitor(&registry).unwrap_or_else(|e| {
            tracing::error!("drift monitoring is off: {}", e.to_string().trim_end());
            None
        });
        Self::build(registry, store, clock, write_token, monitor)
    }

    fn build(
        registry: Arc<Registry>,
        store: SharedStore,
        clock: SharedClock,
        write_token: Option<String>,
        monitor: Option<Arc<crate::online::DriftMonitor>>,
    ) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new(&registry));
        let base_store: SharedStore = Arc::new(MeteredStore::new(store, metrics.store.clone()));
        let mut reloads = reload::Reloads::default();
        let serving = reload::derive(
            reload::Parts {
                store: &base_store,
                clock: &clock,
                metrics: &metrics,
            },
            registry,
            monitor,
            1,
            None,
            &mut reloads,
        );
        metrics.registry.generation.set(1);
        metrics
            .registry
            .loaded_timestamp
            .set(reload::epoch_seconds(serving.loaded_at));
        Arc::new(AppState {
            serving: ArcSwap::from_pointee(serving),
            metrics,
            write_token,
            base_store,
            clock,
            reloads: Mutex::new(reloads),
            retired: Mutex::new(Vec::new()),
        })
    }

    /// The definitions being served now. A request takes this once and uses it throughout, so
    /// every index it resolves stays valid even if a reload swaps in another registry meanwhile.
    pub fn serving(&self) -> Arc<ServingState> {
        self.serving.load_full()
    }

    /// The registry being served now.
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(self.serving.load().registry())
    }

    /// The store requests read and write now (the L1 cache when it is enabled).
    pub fn store(&self) -> SharedStore {
        Arc::clone(self.serving.load().store())
    }

    /// The clock deciding ttl.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Applies the write announcements of other instances (and of this one) until the stream ends,
    /// invalidating L1 entries of the cache being served.
    pub async fn follow_writes(self: Arc<Self>) {
        let mut notices = match self.base_store.subscribe_writes().await {
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
            let serving = self.serving.load_full();
            let Some(cache) = &serving.cache else {
                continue;
            };
            match event {
                StoreEvent::Written(notice) => {
                    cache.invalidate(&notice.view, notice.entity.as_bytes())
                }
                StoreEvent::Resync => cache.invalidate_all(),
            }
        }
    }

    /// Writes the due pushed rows of the served generation, and every row of replaced
    /// generations no request holds any more (dropping their appenders). Blocking.
    fn flush_offline(&self, all: bool) {
        let current = Arc::clone(&self.serving.load().offline);
        let result = if all {
            current.flush_all()
        } else {
            current.flush_due()
        };
        if let Err(e) = result {
            tracing::error!("cannot write pushed rows (kept for the next flush): {e}");
        }
        let retired: Vec<Arc<OfflineAppender>> = self.retired.lock().clone();
        for appender in retired {
            // Two holders: the list and the clone above. A third is a request still appending.
            let idle = Arc::strong_count(&appender) == 2;
            let result = if idle || all {
                appender.flush_all()
            } else {
                appender.flush_due()
            };
            match result {
                Ok(_) if idle => self.retired.lock().retain(|a| !Arc::ptr_eq(a, &appender)),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!("cannot write pushed rows (kept for the next flush): {e}")
                }
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
    let offline = Arc::clone(&state.serving().offline);
    let replayed = tokio::task::spawn_blocking(move || offline.recover())
        .await
        .map_err(std::io::Error::other)?
        .map_err(|e| std::io::Error::other(format!("cannot replay pushed rows: {e}")))?;
    if replayed > 0 {
        tracing::info!("replayed {replayed} pushed rows from the write-ahead log");
    }
    let follower = tokio::spawn(Arc::clone(&state).follow_writes());
    // Reloads changed modules until the server stops.
    state.watch_transforms(true);
    let flusher = tokio::spawn(flush_pushed_rows(Arc::clone(&state)));
    let limits = server::ConnectionLimits::from_settings(&state.registry().server);
    let result =
        server::serve_connections(listener, router(Arc::clone(&state)), limits, shutdown).await;
    follower.abort();
    flusher.abort();
    state.watch_transforms(false);
    // Logged rows still queued are written before exiting.
    let logged = state.serving();
    if let Err(e) = tokio::task::spawn_blocking(move || {
        if let Some(log) = logged.online.feature_log() {
            log.close();
        }
    })
    .await
    {
        tracing::error!("cannot write queued feature log rows: {e}");
    }
    // Rows pushed to the offline store and still buffered are written before exiting.
    let flushed = Arc::clone(&state);
    if let Err(e) = tokio::task::spawn_blocking(move || flushed.flush_offline(true)).await {
        tracing::error!("cannot write buffered pushed rows: {e}");
    }
    result
}

/// Writes buffered pushed rows once they have waited `push.flush_interval`, and the rows of
/// replaced generations once no request holds them.
async fn flush_pushed_rows(state: Arc<AppState>) {
    loop {
        let tick = state.serving.load().offline.tick();
        tokio::time::sleep(tick).await;
        let flushed = Arc::clone(&state);
        if let Err(e) = tokio::task::spawn_blocking(move || flushed.flush_offline(false)).await {
            tracing::error!("pushed-row flush task failed: {e}");
        }
    }
}
