//! The catalog of loaded transform modules: the modules of a directory, hot-reloaded when its
//! files change. (Not to be confused with `crate::registry`, the compiled feature registry.)
//!
//! Readers ([`ModuleCatalog::get`]) never block: the module map is swapped atomically as a
//! whole, and a caller keeps the `Arc<LoadedModule>` it got, so in-flight calls finish on the
//! version they started with. Reloading (reading, hashing, compiling) happens on the watcher's
//! own thread, never on a request path. A module that fails to load is rejected (logged and
//! counted) and the previous version, if any, keeps serving; a deleted file unloads its module.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::{LoadedModule, TransformEngine, TransformError};

/// Events closer together than this are handled as one change (a build writes and renames).
const DEBOUNCE: Duration = Duration::from_millis(75);

/// A burst of events is cut off after this long, so a file that keeps changing still reloads.
const MAX_DEBOUNCE: Duration = Duration::from_millis(300);

/// Why the catalog could not be set up.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// The directory could not be read.
    #[error("cannot read transforms directory {path}: {source}")]
    Io {
        /// The directory or file concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A module in the directory failed to load at startup.
    #[error(transparent)]
    Module(#[from] TransformError),
    /// The directory could not be watched.
    #[error("cannot watch transforms directory {path}: {source}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: notify::Error,
    },
}

/// A loaded module's identity, for listings and `/health`-style endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Module name.
    pub name: String,
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
}

/// Called with the module name and the error each time a module is rejected.
pub type RejectHook = Box<dyn Fn(&str, &TransformError) + Send + Sync>;

/// The loaded modules of one directory: `<dir>/<name>.wasm` is module `name`.
pub struct ModuleCatalog {
    engine: TransformEngine,
    dir: PathBuf,
    /// The current modules; swapped whole so readers never lock and never see a half update.
    modules: ArcSwap<HashMap<String, Arc<LoadedModule>>>,
    /// Hash of the last rejected bytes per module, so an unchanged bad file is reported once.
    rejected_versions: Mutex<HashMap<String, String>>,
    /// Serializes rescans (startup, watcher thread, explicit calls) so swaps do not race.
    rescan_lock: Mutex<()>,
    rejected: AtomicU64,
    on_reject: Option<RejectHook>,
}

impl std::fmt::Debug for ModuleCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleCatalog")
            .field("dir", &self.dir)
            .field("modules", &self.list())
            .finish_non_exhaustive()
    }
}

/// What a rescan found for one file.
enum Scanned {
    /// Same bytes as the loaded version (or as the last rejected ones): nothing to do.
    Unchanged,
    /// New bytes that loaded.
    Loaded(Arc<LoadedModule>),
    /// New bytes that did not.
    Rejected,
}

impl ModuleCatalog {
    /// Loads every `<name>.wasm` in `dir`. At startup a module that fails to load is an error
    /// (a broken deployment should not start serving); later reloads are lenient.
    pub fn load_dir(
        engine: &TransformEngine,
        dir: impl Into<PathBuf>,
    ) -> Result<Self, CatalogError> {
        let dir = dir.into();
        let mut modules = HashMap::new();
        for (name, path) in module_files(&dir)? {
            let bytes = std::fs::read(&path).map_err(|source| CatalogError::Io {
                path: path.clone(),
                source,
            })?;
            modules.insert(name.clone(), engine.load(&name, &bytes)?);
        }
        Ok(ModuleCatalog {
            engine: engine.clone(),
            dir,
            modules: ArcSwap::from_pointee(modules),
            rejected_versions: Mutex::new(HashMap::new()),
            rescan_lock: Mutex::new(()),
            rejected: AtomicU64::new(0),
            on_reject: None,
        })
    }

    /// Loads what it can of `dir` (creating it when missing): a module that fails to load is
    /// rejected, logged and counted as on reload, and its views stay unavailable until a good
    /// version lands. This is how the server starts, so one broken file cannot keep every other
    /// feature from being served.
    pub fn load_dir_lenient(
        engine: &TransformEngine,
        dir: impl Into<PathBuf>,
        on_reject: Option<RejectHook>,
    ) -> Self {
        let dir = dir.into();
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::error!(dir = %dir.display(), error = %e, "cannot create the transforms directory");
        }
        let catalog = ModuleCatalog {
            engine: engine.clone(),
            dir,
            modules: ArcSwap::from_pointee(HashMap::new()),
            rejected_versions: Mutex::new(HashMap::new()),
            rescan_lock: Mutex::new(()),
            rejected: AtomicU64::new(0),
            on_reject,
        };
        catalog.rescan();
        catalog
    }

    /// Sets a hook called each time a module is rejected on reload (e.g. to count it in metrics).
    pub fn with_reject_hook(mut self, hook: RejectHook) -> Self {
        self.on_reject = Some(hook);
        self
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current version of a module.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedModule>> {
        self.modules.load().get(name).cloned()
    }

    /// The loaded modules, sorted by name.
    pub fn list(&self) -> Vec<ModuleInfo> {
        let mut infos: Vec<ModuleInfo> = self
            .modules
            .load()
            .values()
            .map(|m| ModuleInfo {
                name: m.name.clone(),
                sha256: m.sha256.clone(),
                loaded_at: m.loaded_at,
            })
            .collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    /// How many module versions have been rejected on reload since startup.
    pub fn rejected_count(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Brings the catalog in line with the directory: loads new and changed files, unloads
    /// deleted ones, keeps the old version of a file that fails to load. Blocking (it compiles);
    /// the watcher calls it on its own thread.
    pub fn rescan(&self) {
        let _serialized = self.rescan_lock.lock().unwrap_or_else(|e| e.into_inner());
        let files = match module_files(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                // A vanished or unreadable directory is more likely a deployment in progress than
                // a request to unload everything: keep serving what is loaded.
                tracing::error!(error = %e, "cannot rescan transforms directory; keeping loaded modules");
                return;
            }
        };
        let current = self.modules.load_full();
        let mut next = HashMap::with_capacity(files.len());
        let mut changed = false;
        for (name, path) in &files {
            match self.scan_file(name, path, current.get(name)) {
                Scanned::Unchanged | Scanned::Rejected => {
                    if let Some(old) = current.get(name) {
                        next.insert(name.clone(), old.clone());
                    }
                }
                Scanned::Loaded(module) => {
                    next.insert(name.clone(), module);
                    changed = true;
                }
            }
        }
        for name in current.keys() {
            if !files.iter().any(|(n, _)| n == name) {
                tracing::info!(module = %name, "transform module file removed; unloaded");
                changed = true;
            }
        }
        if changed {
            self.modules.store(Arc::new(next));
        }
    }

    fn scan_file(&self, name: &str, path: &Path, loaded: Option<&Arc<LoadedModule>>) -> Scanned {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            // Renamed away between listing and reading: the next event rescans.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Scanned::Unchanged,
            Err(e) => {
                tracing::error!(module = name, path = %path.display(), error = %e, "cannot read transform module");
                return Scanned::Unchanged;
            }
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if loaded.is_some_and(|m| m.sha256 == sha256) {
            return Scanned::Unchanged;
        }
        let mut rejected = self
            .rejected_versions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if rejected.get(name) == Some(&sha256) {
            return Scanned::Unchanged;
        }
        match self.engine.load(name, &bytes) {
            Ok(module) => {
                rejected.remove(name);
                tracing::info!(module = name, sha256 = %module.sha256, "transform module reloaded");
                Scanned::Loaded(module)
            }
            Err(e) => {
                rejected.insert(name.to_owned(), sha256);
                self.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    module = name,
                    error = %e,
                    kept_previous = loaded.is_some(),
                    "rejected transform module"
                );
                if let Some(hook) = &self.on_reject {
                    hook(name, &e);
                }
                Scanned::Rejected
            }
        }
    }

    /// Watches the directory and reloads on every change until the returned handle is dropped.
    ///
    /// The directory itself is watched (not the files), so files replaced by rename, as builds
    /// and editors do, are seen; any event triggers a debounced rescan on a dedicated thread.
    pub fn watch(self: Arc<Self>) -> Result<CatalogWatcher, CatalogError> {
        // Carries "something changed" from notify's thread to the reload thread.
        let (tx, rx) = mpsc::channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Err(e) = &event {
                    tracing::warn!(error = %e, "transforms directory watch error; rescanning");
                }
                let _ = tx.send(());
            })
            .map_err(|source| CatalogError::Watch {
                path: self.dir.clone(),
                source,
            })?;
        watcher
            .watch(&self.dir, RecursiveMode::NonRecursive)
            .map_err(|source| CatalogError::Watch {
                path: self.dir.clone(),
                source,
            })?;
        let catalog = self;
        let thread = thread::Builder::new()
            .name("quiver-transform-reload".into())
            .spawn(move || {
                // Catch changes made between loading and watching.
                catalog.rescan();
                // Ends when the watcher (and with it the sender) is dropped.
                while rx.recv().is_ok() {
                    let burst = Instant::now();
                    loop {
                        match rx.recv_timeout(DEBOUNCE) {
                            Ok(()) if burst.elapsed() < MAX_DEBOUNCE => continue,
                            Ok(()) | Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    catalog.rescan();
                }
            })
            .map_err(|source| CatalogError::Io {
                path: PathBuf::from("<reload thread>"),
                source,
            })?;
        Ok(CatalogWatcher {
            watcher: Some(watcher),
            thread: Some(thread),
        })
    }
}

/// Keeps the directory watched; dropping it stops the watch and the reload thread.
pub struct CatalogWatcher {
    watcher: Option<RecommendedWatcher>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for CatalogWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogWatcher").finish_non_exhaustive()
    }
}

impl Drop for CatalogWatcher {
    fn drop(&mut self) {
        // Dropping the watcher drops the event sender, which ends the reload thread's loop.
        drop(self.watcher.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `(name, path)` of every `<name>.wasm` in `dir`, skipping hidden files (temporary files of
/// write-then-rename) and names that are not valid module names.
fn module_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, CatalogError> {
    let io_err = |source| CatalogError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let path = entry.path();
        if path.extension() != Some(OsStr::new("wasm")) {
            continue;
        }
        let Some(name) = path.file_stem().and_then(OsStr::to_str) else {
            continue;
        };
        if name.starts_with('.') || crate::registry::Name::new(name).is_err() {
            continue;
        }
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(true) {
            continue;
        }
        files.push((name.to_owned(), path));
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_wasm_files_with_valid_names_are_modules() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "a.wasm",
            ".a.wasm.tmp",
            ".b.wasm",
            "c.txt",
            "bad name.wasm",
            "d.wasm",
        ] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        std::fs::create_dir(dir.path().join("e.wasm")).unwrap();
        let names: Vec<String> = module_files(dir.path())
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["a", "d"]);
    }

    #[test]
    fn a_missing_directory_is_an_io_error() {
        let engine = TransformEngine::new().unwrap();
        let err = ModuleCatalog::load_dir(&engine, "/nonexistent/quiver-transforms").unwrap_err();
        assert!(matches!(err, CatalogError::Io { .. }), "{err}");
    }

    #[test]
    fn an_invalid_module_at_startup_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("broken.wasm"), b"not wasm").unwrap();
        let engine = TransformEngine::new().unwrap();
        let err = ModuleCatalog::load_dir(&engine, dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                CatalogError::Module(TransformError::InvalidModule { .. })
            ),
            "{err}"
        );
    }
}
