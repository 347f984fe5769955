//! Live definitions: `quiver serve` re-reads `feature_store.yaml` when it changes and swaps in a
//! new [`ServingState`] without a restart.
//!
//! A changed file is compiled completely, by the same passes as at start-up
//! ([`crate::config::load`]); then everything derived from the registry is derived again
//! ([`derive`]) and swapped in with one atomic store. Requests in flight finish on the generation
//! they started with; later ones see the new one.
//!
//! - The `monitoring` references' profiles are read again ([`load_monitor`]); one that cannot be
//!   read or does not match its view rejects the change like an invalid file. The drift window
//!   of the new generation starts empty.
//! - An invalid file is rejected: the errors are logged (the messages of `quiver validate`),
//!   `quiver_registry_reloads_total{result="invalid"}` counts it, the old definitions keep serving.
//! - A change to what a running server cannot change (`project`, `online_store`, `server`) refuses
//!   the whole change (`result="needs_restart"`), even if other sections changed too: what is
//!   served is always exactly one version of the file, and a new view next to a new store
//!   connection would otherwise be served from the old store.
//! - What derived state survives a reload: the online-store connection (always), the L1 cache and
//!   its entries (while the `cache` section is unchanged, see [`CachedStore::adopt`]), the
//!   transform catalog and its watcher (while the `transforms` section is unchanged). The offline
//!   appender of the replaced generation is retired: its buffered rows are written once no request
//!   holds it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{AppState, ServingState, openapi};
use crate::cache::CachedStore;
use crate::clock::SharedClock;
use crate::config::{ConfigError, ConfigErrors};
use crate::metrics::Metrics;
use crate::offline::feature_log::FeatureLog;
use crate::offline::push_writer::OfflineAppender;
use crate::online::{DriftMonitor, OnlineFeatures};
use crate::registry::Registry;
use crate::settings::TransformSettings;
use crate::store::SharedStore;
use crate::transform::catalog::RejectHook;
use crate::transform::{LoadLimits, ModuleCatalog, TransformEngine};
use crate::watch::{Debounce, DirWatcher, watch_dir};

/// Events closer together than 100 ms are one change (editors write, then rename); a burst is cut
/// off after 500 ms, so a file that keeps changing still reloads.
const DEBOUNCE: Debounce = Debounce {
    quiet: Duration::from_millis(100),
    max: Duration::from_millis(500),
};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file has the bytes last read: nothing to do.
    Unchanged,
    /// The new definitions are served as this generation.
    Applied {
        /// The generation now served.
        generation: u64,
    },
    /// The file does not compile; the old definitions keep serving.
    Invalid {
        /// Every problem, one per line, as `quiver validate` reports them.
        errors: String,
    },
    /// The file changes what only a restart can; the old definitions keep serving.
    NeedsRestart {
        /// The sections that changed (`project`, `online_store`, `server`).
        sections: Vec<&'static str>,
    },
}

/// What reloads keep between generations. Lives in [`AppState`] behind its reload mutex.
#[derive(Default)]
pub(super) struct Reloads {
    /// The transform catalog and the section it was built for; reused while that is unchanged.
    catalog: Option<(TransformSettings, Arc<ModuleCatalog>)>,
    /// Watches the catalog's directory while the server runs.
    catalog_watcher: Option<DirWatcher>,
    /// Whether the server runs (and so whether a new catalog is watched).
    watching: bool,
    /// Hash of the file's bytes last read (applied or not), so an unchanged file is not reloaded
    /// and an unchanged bad file is reported once.
    last_read: Option<u64>,
}

/// What every generation shares: the process's store, clock and metrics.
pub(super) struct Parts<'a> {
    pub store: &'a SharedStore,
    pub clock: &'a SharedClock,
    pub metrics: &'a Arc<Metrics>,
}

/// Reads the profile of every `monitoring` reference of `registry` and prepares the drift monitor
/// (`None` without a `monitoring` section). Every error names its reference: a profile that cannot
/// be read, or whose features do not match the view's schema. Blocking (reads files).
pub fn load_monitor(registry: &Registry) -> Result<Option<Arc<DriftMonitor>>, ConfigErrors> {
    let Some(monitoring) = &registry.monitoring else {
        return Ok(None);
    };
    let mut errors = Vec::new();
    let mut profiles = Vec::new();
    for (i, reference) in monitoring.references.iter().enumerate() {
        match crate::offline::profile::read_reference_profile(&reference.path) {
            Ok(profile) => profiles.push(profile),
            Err(e) => errors.push(ConfigError::new(
                format!("monitoring.references[{i}].profile"),
                format!("{} ({}): {e}", reference.profile, reference.target),
            )),
        }
    }
    if errors.is_empty() {
        match DriftMonitor::new(registry, &profiles) {
            Ok(monitor) => return Ok(Some(Arc::new(monitor))),
            Err(more) => errors = more,
        }
    }
    Err(ConfigErrors { file: None, errors })
}

/// Derives everything served from `registry`: the L1 cache (the previous generation's when it can
/// serve this registry), the transform catalog, the lookup plan with its metric handles and drift
/// monitor (read by [`load_monitor`]), a fresh offline appender and the OpenAPI document. Blocking
/// (a new catalog compiles its modules).
pub(super) fn derive(
    parts: Parts<'_>,
    registry: Arc<Registry>,
    monitor: Option<Arc<DriftMonitor>>,
    generation: u64,
    previous: Option<&ServingState>,
    reloads: &mut Reloads,
) -> ServingState {
    let cache = match previous.and_then(|p| p.cache.as_ref()) {
        Some(cache) if registry.cache.enabled && cache.adopt(&registry) => Some(Arc::clone(cache)),
        _ => registry.cache.enabled.then(|| {
            Arc::new(CachedStore::new(
                Arc::clone(parts.store),
                &registry,
                Arc::clone(parts.clock),
                parts.metrics.cache.clone(),
            ))
        }),
    };
    let store = match &cache {
        Some(c) => Arc::clone(c) as SharedStore,
        None => Arc::clone(parts.store),
    };
    let transforms = reloads.catalog_for(&registry, parts.metrics);
    let feature_log = FeatureLog::start(&registry, &parts.metrics.feature_log);
    ServingState {
        generation,
        loaded_at: SystemTime::now(),
        offline: Arc::new(OfflineAppender::new(Arc::clone(&registry))),
        openapi: openapi::document(&registry).into(),
        online: OnlineFeatures::new(
            registry,
            store,
            Arc::clone(parts.clock),
            Arc::clone(parts.metrics),
            transforms,
        )
        .with_monitor(monitor)
        .with_feature_log(feature_log),
        cache,
    }
}

impl Reloads {
    /// The transform catalog for `registry`: none without on-demand views; otherwise the current
    /// one while the `transforms` section is unchanged, or a new one (watched when the server
    /// runs). A file that fails to load is counted and skipped, so it never stops the server.
    fn catalog_for(
        &mut self,
        registry: &Registry,
        metrics: &Metrics,
    ) -> Option<Arc<ModuleCatalog>> {
        if registry.on_demand_views.is_empty() {
            return None;
        }
        if let Some((settings, catalog)) = &self.catalog
            && *settings == registry.transforms
        {
            return Some(Arc::clone(catalog));
        }
        let engine = match TransformEngine::new() {
            Ok(engine) => engine,
            Err(e) => {
                tracing::error!(
                    "cannot start the transform engine; on-demand views are unavailable: {e}"
                );
                return None;
            }
        };
        let failures = metrics.transforms.load_failures.clone();
        let hook: RejectHook = Box::new(move |_, _| failures.inc());
        let catalog = Arc::new(ModuleCatalog::load_dir_lenient(
            &engine,
            registry.transforms.dir.clone(),
            LoadLimits::of_settings(&registry.transforms),
            Some(hook),
        ));
        // The old catalog's watcher stops here; requests holding its modules keep them.
        self.catalog_watcher = None;
        self.catalog = Some((registry.transforms.clone(), Arc::clone(&catalog)));
        if self.watching {
            self.watch_catalog();
        }
        Some(catalog)
    }

    /// Starts watching the current catalog's directory.
    fn watch_catalog(&mut self) {
        let Some((_, catalog)) = &self.catalog else {
            return;
        };
        match Arc::clone(catalog).watch() {
            Ok(w) => self.catalog_watcher = Some(w),
            Err(e) => {
                tracing::error!(
                    "cannot watch the transforms directory; modules will not reload: {e}"
                )
            }
        }
    }
}

/// Seconds since the epoch, for the loaded-timestamp gauge.
pub(super) fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The sections a running server cannot change that differ between two registries.
fn restart_only_changes(old: &Registry, new: &Registry) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.project != new.project {
        changed.push("project");
    }
    if !old.online_store.same_as(&new.online_store) {
        changed.push("online_store");
    } else if new.online_store.uses_catalog() && old.store_catalog() != new.store_catalog() {
        // Feast's layout addresses features by name and types entity keys: the store prepared
        // them for the views it was opened with.
        changed.push("feature views of a layout: feast store");
    }
    if old.server != new.server {
        changed.push("server");
    }
    changed
}

impl AppState {
    /// Starts (`true`) or stops watching the transforms directory; `serving::serve` calls it.
    pub(super) fn watch_transforms(&self, on: bool) {
        let mut reloads = self.reloads.lock();
        reloads.watching = on;
        if on {
            reloads.watch_catalog();
        } else {
            reloads.catalog_watcher = None;
        }
    }

    /// Re-reads `path` and, if it changed and compiles and changes nothing that needs a restart,
    /// serves it as the next generation. Logs and counts the outcome
    /// (`quiver_registry_reloads_total`). Blocking: call from a thread of its own.
    pub fn reload(&self, path: &Path) -> ReloadOutcome {
        let mut reloads = self.reloads.lock();
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                // Mid-replacement or removed: the next event reads it again.
                tracing::warn!(path = %path.display(), error = %e, "cannot read the registry file; keeping the served definitions");
                return ReloadOutcome::Unchanged;
            }
        };
        let digest = xxhash_rust::xxh3::xxh3_64(&text);
        if reloads.last_read == Some(digest) {
            return ReloadOutcome::Unchanged;
        }
        reloads.last_read = Some(digest);
        let current = self.serving();
        let outcome = match std::str::from_utf8(&text) {
            Err(e) => Err(format!(
                "{} has 1 error:\n  not UTF-8 text: {e}\n",
                path.display()
            )),
            Ok(text) => {
                crate::config::load_str(text, &current.registry().base_dir).map_err(|mut e| {
                    e.file = Some(path.to_path_buf());
                    e.to_string()
                })
            }
        };
        let registry = match outcome {
            Ok(registry) => registry,
            Err(errors) => {
                tracing::error!(
                    generation = current.generation,
                    "registry reload rejected; still serving generation {}: {}",
                    current.generation,
                    errors.trim_end()
                );
                self.count_reload("invalid");
                return ReloadOutcome::Invalid { errors };
            }
        };
        let monitor = match load_monitor(&registry) {
            Ok(monitor) => monitor,
            Err(mut e) => {
                e.file = Some(path.to_path_buf());
                let errors = e.to_string();
                tracing::error!(
                    generation = current.generation,
                    "registry reload rejected; still serving generation {}: {}",
                    current.generation,
                    errors.trim_end()
                );
                self.count_reload("invalid");
                return ReloadOutcome::Invalid { errors };
            }
        };
        let sections = restart_only_changes(current.registry(), &registry);
        if !sections.is_empty() {
            tracing::error!(
                generation = current.generation,
                "{} changes {}, which only a restart applies; the whole change waits for it (still serving generation {})",
                path.display(),
                sections.join(", "),
                current.generation
            );
            self.count_reload("needs_restart");
            return ReloadOutcome::NeedsRestart { sections };
        }
        let generation = current.generation + 1;
        let next = derive(
            Parts {
                store: &self.base_store,
                clock: &self.clock,
                metrics: &self.metrics,
            },
            Arc::new(registry),
            monitor,
            generation,
            Some(&*current),
            &mut reloads,
        );
        let loaded_at = next.loaded_at;
        let summary = format!(
            "{} feature views, {} on-demand views, {} feature services",
            next.registry().feature_views.len(),
            next.registry().on_demand_views.len(),
            next.registry().feature_services.len()
        );
        let replaced = self.serving.swap(Arc::new(next));
        self.retired.lock().push(Arc::clone(&replaced.offline));
        drop(replaced);
        drop(current);
        self.metrics.registry.generation.set(generation as i64);
        self.metrics
            .registry
            .loaded_timestamp
            .set(epoch_seconds(loaded_at));
        self.count_reload("ok");
        tracing::info!(generation, "reloaded {}: {summary}", path.display());
        ReloadOutcome::Applied { generation }
    }

    fn count_reload(&self, result: &str) {
        self.metrics
            .registry
            .reloads
            .with_label_values(&[result])
            .inc();
    }

    /// Watches `path` (the `feature_store.yaml` the served registry was loaded from) and reloads
    /// it on every change until the returned handle is dropped. `loaded` is the hash of the bytes
    /// that registry was compiled from ([`crate::config::load_with_digest`]); a change made
    /// before the watch started is caught by a first reload.
    ///
    /// The file's directory is watched (not the file), so a file replaced by rename, as editors
    /// and deployment tools do, is seen; events are debounced, and a reload on a thread of its own
    /// reads the file and does nothing when its bytes are unchanged.
    pub fn watch_registry(
        self: &Arc<Self>,
        path: &Path,
        loaded: u64,
    ) -> Result<DirWatcher, io::Error> {
        self.reloads.lock().last_read.get_or_insert(loaded);
        let path = path.to_path_buf();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().map(|n| n.to_os_string());
        // The file itself, or (as a Kubernetes ConfigMap is updated) a `..` entry swapped beside it.
        let relevant = move |event: &notify::Event| {
            event.paths.iter().any(|p| {
                let file = p.file_name();
                file == name.as_deref()
                    || file.is_some_and(|f| f.to_string_lossy().starts_with(".."))
            })
        };
        let state = Arc::clone(self);
        watch_dir(
            &dir,
            "registry file",
            "quiver-registry-reload",
            DEBOUNCE,
            relevant,
            move || {
                state.reload(&path);
            },
        )
        .map_err(|e| io::Error::other(format!("cannot watch {}: {e}", dir.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "project: p\nonline_store:\n  type: sqlite\n  path: online.db\nentities:\n  - name: user\n    join_keys: [user_id]\n    value_type: string\nfeature_views:\n  - name: a\n    entities: [user]\n    schema:\n      - { name: x, dtype: int64 }\n    source:\n      path: data/a\n      timestamp_field: ts\n";

    const VIEW_B: &str = "  - name: b\n    entities: [user]\n    schema:\n      - { name: y, dtype: string }\n    source:\n      path: data/b\n      timestamp_field: ts\n";

    fn compile(yaml: &str) -> Registry {
        crate::config::load_str(yaml, Path::new("/base")).unwrap()
    }

    #[test]
    fn only_the_project_store_and_server_sections_need_a_restart() {
        let base = compile(BASE);
        let with_view = compile(&format!("{BASE}{VIEW_B}cache:\n  ttl: 1s\n"));
        assert!(restart_only_changes(&base, &with_view).is_empty());
        let moved = compile(&BASE.replace("online.db", "other.db"));
        assert_eq!(restart_only_changes(&base, &moved), ["online_store"]);
        let renamed = compile(&BASE.replace("project: p", "project: q"));
        assert_eq!(restart_only_changes(&base, &renamed), ["project"]);
        let bound = compile(&format!("{BASE}server:\n  max_entities: 5\n"));
        assert_eq!(restart_only_changes(&base, &bound), ["server"]);
    }

    #[test]
    fn a_new_view_on_a_feast_layout_store_needs_a_restart_and_a_cache_change_does_not() {
        let feast = BASE.replace(
            "  type: sqlite\n  path: online.db\n",
            "  type: redis\n  layout: feast\n  connection_string: \"127.0.0.1:6379\"\n",
        );
        let base = compile(&feast);
        let with_view = compile(&format!("{feast}{VIEW_B}"));
        assert_eq!(
            restart_only_changes(&base, &with_view),
            ["feature views of a layout: feast store"]
        );
        let cached = compile(&format!("{feast}cache:\n  ttl: 1s\n"));
        assert!(restart_only_changes(&base, &cached).is_empty());
    }

    async fn state(dir: &Path) -> (Arc<AppState>, PathBuf) {
        let path = dir.join("feature_store.yaml");
        std::fs::write(&path, BASE).unwrap();
        let (registry, digest) = crate::config::load_with_digest(&path).unwrap();
        let clock = crate::clock::system_clock();
        let store = registry.open_store(Arc::clone(&clock)).await.unwrap();
        let state = AppState::with_write_token(Arc::new(registry), store, clock, None);
        state.reloads.lock().last_read = Some(digest);
        (state, path)
    }

    #[tokio::test]
    async fn a_reload_swaps_the_whole_state_and_a_held_state_keeps_its_registry() {
        let dir = tempfile::tempdir().unwrap();
        let (state, path) = state(dir.path()).await;
        assert_eq!(state.reload(&path), ReloadOutcome::Unchanged);
        let held = state.serving();
        std::fs::write(&path, format!("{BASE}{VIEW_B}")).unwrap();
        assert_eq!(
            state.reload(&path),
            ReloadOutcome::Applied { generation: 2 }
        );
        let now = state.serving();
        assert_eq!(now.generation, 2);
        assert_eq!(now.registry().feature_views.len(), 2);
        assert_eq!(now.online.plan().view_key_group.len(), 2);
        // The request that loaded generation 1 still resolves against generation 1.
        assert_eq!(held.generation, 1);
        assert_eq!(held.registry().feature_views.len(), 1);
        // The L1 cache and its entries survive; the replaced appender waits to be flushed.
        assert!(Arc::ptr_eq(
            held.cache.as_ref().unwrap(),
            now.cache.as_ref().unwrap()
        ));
        assert_eq!(state.retired.lock().len(), 1);
        assert_eq!(state.metrics.registry.generation.get(), 2);
        drop(held);
        state.flush_offline(false);
        assert!(state.retired.lock().is_empty());
    }

    #[tokio::test]
    async fn a_reload_whose_profile_does_not_load_keeps_the_served_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (state, path) = state(dir.path()).await;
        std::fs::write(dir.path().join("profile.json"), "{\"format_version\": 7}").unwrap();
        let monitored = format!(
            "{BASE}monitoring:\n  references:\n    - {{feature_view: a, profile: profile.json}}\n"
        );
        std::fs::write(&path, monitored).unwrap();
        let ReloadOutcome::Invalid { errors } = state.reload(&path) else {
            panic!("an unreadable profile was accepted");
        };
        assert!(
            errors.contains("monitoring.references[0].profile: profile.json (feature view \"a\")"),
            "{errors}"
        );
        assert!(errors.contains("format_version 7"), "{errors}");
        assert_eq!(state.serving().generation, 1);
        assert!(state.serving().online.monitor().is_none());
    }

    #[tokio::test]
    async fn an_invalid_or_restart_only_edit_keeps_the_served_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (state, path) = state(dir.path()).await;
        std::fs::write(
            &path,
            BASE.replace("entities: [user]", "entities: [nobody]"),
        )
        .unwrap();
        let ReloadOutcome::Invalid { errors } = state.reload(&path) else {
            panic!("an unknown entity was accepted");
        };
        assert!(errors.contains("unknown entity \"nobody\""), "{errors}");
        // The same bad bytes are reported once.
        assert_eq!(state.reload(&path), ReloadOutcome::Unchanged);
        std::fs::write(&path, BASE.replace("online.db", "b.db") + VIEW_B).unwrap();
        assert_eq!(
            state.reload(&path),
            ReloadOutcome::NeedsRestart {
                sections: vec!["online_store"]
            }
        );
        assert_eq!(state.serving().generation, 1);
        assert_eq!(state.registry().feature_views.len(), 1);
        let reloads = &state.metrics.registry.reloads;
        assert_eq!(reloads.with_label_values(&["invalid"]).get(), 1);
        assert_eq!(reloads.with_label_values(&["needs_restart"]).get(), 1);
        assert_eq!(reloads.with_label_values(&["ok"]).get(), 0);
    }
}
