//! The catalog of loaded transform modules: the modules of a directory, hot-reloaded when its
//! files change. (Not to be confused with `crate::registry`, the compiled feature registry.)
//!
//! Readers ([`ModuleCatalog::get`]) never block: the module map is swapped atomically as a
//! whole, and a caller keeps the `Arc<LoadedModule>` it got, so in-flight calls finish on the
//! version they started with. Reloading (reading, hashing, compiling) happens off the request
//! path: each changed module on a thread of its own, so a slow one never holds the others back.
//! A module that fails to load is rejected (logged and counted) and the previous version, if any,
//! keeps serving; a deleted file unloads its module.
//!
//! Before compiling, a module over [`LoadLimits::max_module_bytes`] or defining more than
//! [`LoadLimits::max_functions`] functions is rejected; a module that does not compile and pass
//! its trial within [`LoadLimits::load_timeout`] is rejected too. A new version replaces a serving
//! one only after a trial: an empty batch must run to completion, and the inputs recently served by
//! the current version (a few rows per view) must give rows of the view's schema.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::ratelimit::LogLimiter;
use super::{Limits, LoadedModule, TransformEngine, TransformError};
use crate::watch::{Debounce, DirWatcher, watch_dir};

/// Events closer together than 75 ms are one change (a build writes and renames); a burst is cut
/// off after 300 ms, so a file that keeps changing still reloads.
const DEBOUNCE: Debounce = Debounce {
    quiet: Duration::from_millis(75),
    max: Duration::from_millis(300),
};

/// Bounds on loading a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Larger files are rejected without compiling.
    pub max_module_bytes: u64,
    /// Modules defining more functions are rejected without compiling.
    pub max_functions: u32,
    /// Longest a module may take to compile (and pass its trial) before it is rejected.
    pub load_timeout: Duration,
    /// Limits of the empty-batch trial call.
    pub trial: Limits,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            max_module_bytes: super::DEFAULT_MAX_MODULE_BYTES,
            max_functions: super::DEFAULT_MAX_FUNCTIONS,
            load_timeout: super::DEFAULT_LOAD_TIMEOUT,
            trial: Limits::default(),
        }
    }
}

impl LoadLimits {
    /// The limits of the `transforms` section.
    pub fn of_settings(settings: &crate::settings::TransformSettings) -> Self {
        LoadLimits {
            max_module_bytes: settings.max_module_bytes,
            max_functions: settings.max_functions,
            load_timeout: settings.load_timeout.0,
            trial: Limits {
                fuel_per_call: settings.fuel_per_call,
                fuel_per_row: settings.fuel_per_row,
                timeout: settings.timeout.0,
                max_memory_bytes: settings.max_memory_mib as usize * 1024 * 1024,
            },
        }
    }
}

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
    limits: LoadLimits,
    /// Rate-limits rejection lines per module.
    reject_log: LogLimiter,
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
    /// New bytes, with their SHA-256, to load.
    Changed(Vec<u8>, String),
    /// New bytes rejected before compiling.
    Rejected(String, TransformError),
}

impl ModuleCatalog {
    /// Loads every `<name>.wasm` in `dir`. At startup a module that fails to load is an error
    /// (a broken deployment should not start serving); later reloads are lenient.
    pub fn load_dir(
        engine: &TransformEngine,
        dir: impl Into<PathBuf>,
    ) -> Result<Self, CatalogError> {
        let dir = dir.into();
        let limits = LoadLimits::default();
        let mut modules = HashMap::new();
        for (name, path) in module_files(&dir)? {
            let bytes = read_at_most(&path, limits.max_module_bytes).map_err(|source| {
                CatalogError::Io {
                    path: path.clone(),
                    source,
                }
            })?;
            check_size(&name, &bytes, &limits)?;
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
            limits,
            reject_log: LogLimiter::default(),
        })
    }

    /// Loads what it can of `dir` (creating it when missing): a module that fails to load is
    /// rejected, logged and counted as on reload, and its views stay unavailable until a good
    /// version lands. This is how the server starts, so one broken file cannot keep every other
    /// feature from being served.
    pub fn load_dir_lenient(
        engine: &TransformEngine,
        dir: impl Into<PathBuf>,
        limits: LoadLimits,
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
            limits,
            reject_log: LogLimiter::default(),
        };
        catalog.rescan();
        catalog
    }

    /// Sets the bounds on later reloads (modules already loaded stay).
    pub fn with_load_limits(mut self, limits: LoadLimits) -> Self {
        self.limits = limits;
        self
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
    /// deleted ones, keeps the old version of a file that fails to load or to pass its trial.
    /// Blocking (it compiles, each changed module on its own thread, and returns when every one
    /// is in or past [`LoadLimits::load_timeout`]); the watcher calls it on its own thread.
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
        let removed: Vec<&String> = current
            .keys()
            .filter(|name| !files.iter().any(|(n, _)| n == *name))
            .collect();
        if !removed.is_empty() {
            let mut next = (*current).clone();
            for name in removed {
                tracing::info!(module = %name, "transform module file removed; unloaded");
                next.remove(name);
            }
            self.modules.store(Arc::new(next));
        }

        // Carries each changed module's outcome from its loading thread back to this one.
        let (tx, rx) =
            mpsc::channel::<(String, String, Result<Arc<LoadedModule>, TransformError>)>();
        let mut pending: Vec<(String, String)> = Vec::new();
        for (name, path) in &files {
            let loaded = current.get(name);
            match self.scan_file(name, path, loaded) {
                Scanned::Unchanged => {}
                Scanned::Rejected(sha256, e) => self.reject(name, &sha256, &e, loaded.is_some()),
                Scanned::Changed(bytes, sha256) => {
                    let (engine, limits, previous) =
                        (self.engine.clone(), self.limits, loaded.cloned());
                    let (tx, thread_name, thread_sha) = (tx.clone(), name.clone(), sha256.clone());
                    let spawned = thread::Builder::new()
                        .name(format!("quiver-load-{name}"))
                        .spawn(move || {
                            let result = load_and_try(
                                &engine,
                                &thread_name,
                                &bytes,
                                &limits,
                                previous.as_deref(),
                            );
                            // The rescan may have given up waiting; then the result is dropped.
                            let _ = tx.send((thread_name, thread_sha, result));
                        });
                    match spawned {
                        Ok(_) => pending.push((name.clone(), sha256)),
                        Err(e) => {
                            tracing::error!(module = %name, error = %e, "cannot start a thread to load a transform module")
                        }
                    }
                }
            }
        }
        drop(tx);

        let deadline = Instant::now() + self.limits.load_timeout;
        while !pending.is_empty() {
            let wait = deadline.saturating_duration_since(Instant::now());
            let Ok((name, sha256, result)) = rx.recv_timeout(wait) else {
                break;
            };
            pending.retain(|(n, _)| *n != name);
            let had_previous = current.contains_key(&name);
            match result {
                Ok(module) => {
                    self.rejected_versions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&name);
                    tracing::info!(module = %name, sha256 = %module.sha256, "transform module reloaded");
                    let mut next = (*self.modules.load_full()).clone();
                    next.insert(name, module);
                    self.modules.store(Arc::new(next));
                }
                Err(e) => self.reject(&name, &sha256, &e, had_previous),
            }
        }
        for (name, sha256) in pending {
            let e = TransformError::Rejected {
                module: name.clone(),
                message: format!(
                    "did not compile and pass its trial within {:?}",
                    self.limits.load_timeout
                ),
            };
            self.reject(&name, &sha256, &e, current.contains_key(&name));
        }
    }

    /// Records a rejected version: remembered by hash (so unchanged bytes are not retried),
    /// counted, logged (rate-limited per module) and reported to the hook.
    fn reject(&self, name: &str, sha256: &str, e: &TransformError, kept_previous: bool) {
        self.rejected_versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), sha256.to_owned());
        self.rejected.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.reject_log.admit(name) {
            tracing::error!(
                module = name,
                error = %e,
                kept_previous,
                suppressed,
                "rejected transform module ({suppressed} more rejections suppressed)"
            );
        }
        if let Some(hook) = &self.on_reject {
            hook(name, e);
        }
    }

    fn scan_file(&self, name: &str, path: &Path, loaded: Option<&Arc<LoadedModule>>) -> Scanned {
        let bytes = match read_at_most(path, self.limits.max_module_bytes) {
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
        let rejected = self
            .rejected_versions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if rejected.get(name) == Some(&sha256) {
            return Scanned::Unchanged;
        }
        drop(rejected);
        match check_size(name, &bytes, &self.limits) {
            Ok(()) => Scanned::Changed(bytes, sha256),
            Err(e) => Scanned::Rejected(sha256, e),
        }
    }

    /// Watches the directory and reloads on every change until the returned handle is dropped
    /// (see [`crate::watch`]): any event triggers a debounced rescan on a dedicated thread.
    pub fn watch(self: Arc<Self>) -> Result<DirWatcher, CatalogError> {
        let dir = self.dir.clone();
        watch_dir(
            &dir,
            "transforms directory",
            "quiver-transform-reload",
            DEBOUNCE,
            |_| true,
            move || self.rescan(),
        )
        .map_err(|source| CatalogError::Watch { path: dir, source })
    }
}

/// Compiles a module and, when it is to replace `previous`, tries it: an empty batch must run to
/// completion and every input recently served by `previous` must give valid rows.
fn load_and_try(
    engine: &TransformEngine,
    name: &str,
    bytes: &[u8],
    limits: &LoadLimits,
    previous: Option<&LoadedModule>,
) -> Result<Arc<LoadedModule>, TransformError> {
    let module = engine.load(name, bytes)?;
    let Some(previous) = previous else {
        // Nothing serves yet: nothing better to keep.
        return Ok(module);
    };
    let failed = |e: TransformError| TransformError::Rejected {
        module: name.to_owned(),
        message: format!("failed its trial call, keeping the serving version: {e}"),
    };
    module.call_empty(&limits.trial).map_err(failed)?;
    for sample in previous.samples() {
        let names: Vec<&str> = sample.input_names.iter().map(String::as_str).collect();
        module
            .call(&names, &sample.rows, &sample.output, &sample.limits)
            .map_err(failed)?;
    }
    Ok(module)
}

/// Reads at most `max + 1` bytes of a file: enough to tell that it is over `max`.
fn read_at_most(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Rejects, before compiling, a module over the byte limit or defining too many functions.
fn check_size(name: &str, bytes: &[u8], limits: &LoadLimits) -> Result<(), TransformError> {
    let rejected = |message: String| TransformError::Rejected {
        module: name.to_owned(),
        message,
    };
    if bytes.len() as u64 > limits.max_module_bytes {
        return Err(rejected(format!(
            "larger than transforms.max_module_bytes ({} bytes)",
            limits.max_module_bytes
        )));
    }
    if let Some(functions) = defined_functions(bytes)
        && functions > u64::from(limits.max_functions)
    {
        return Err(rejected(format!(
            "defines {functions} functions, more than transforms.max_functions ({})",
            limits.max_functions
        )));
    }
    Ok(())
}

/// The number of functions a module defines (its function section's count), read from the
/// section headers without parsing anything else; `None` when the bytes are not a well-formed
/// module (the compiler then says what is wrong).
fn defined_functions(bytes: &[u8]) -> Option<u64> {
    /// Section id of the function section.
    const FUNCTION_SECTION: u8 = 3;
    let mut rest = bytes.strip_prefix(b"\0asm")?.get(4..)?;
    while let Some((&id, after_id)) = rest.split_first() {
        let (size, payload) = read_leb128(after_id)?;
        let size = usize::try_from(size).ok()?;
        if id == FUNCTION_SECTION {
            return read_leb128(payload.get(..size)?).map(|(count, _)| count);
        }
        rest = payload.get(size..)?;
    }
    Some(0)
}

/// An unsigned LEB128 number and the bytes after it.
fn read_leb128(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
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
    fn the_function_count_is_read_from_the_function_section() {
        // Header, a type section (one `() -> ()`), a function section declaring 3 functions.
        let mut bytes = b"\0asm\x01\0\0\0".to_vec();
        bytes.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]);
        bytes.extend_from_slice(&[3, 4, 3, 0, 0, 0]);
        assert_eq!(defined_functions(&bytes), Some(3));
        assert_eq!(defined_functions(&bytes[..8]), Some(0));
        assert_eq!(defined_functions(b"not wasm"), None);
        assert_eq!(defined_functions(&bytes[..11]), None);
    }

    #[test]
    fn a_module_over_the_limits_is_rejected_before_compiling() {
        let mut bytes = b"\0asm\x01\0\0\0".to_vec();
        bytes.extend_from_slice(&[3, 3, 0xd0, 0x86, 0x03]); // 50,000 functions
        let limits = LoadLimits::default();
        let err = check_size("m", &bytes, &limits).unwrap_err();
        assert!(err.to_string().contains("50000 functions"), "{err}");
        let small = LoadLimits {
            max_module_bytes: 4,
            ..limits
        };
        let err = check_size("m", &bytes, &small).unwrap_err();
        assert!(err.to_string().contains("max_module_bytes"), "{err}");
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
