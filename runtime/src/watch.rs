//! A watched directory: notify's events, filtered, debounced, and acted on by a thread of its own.
//! `quiver serve` watches the transforms directory (modules) and the directory of
//! `feature_store.yaml` (live definitions) this way.
//!
//! The directory is watched, not the files, so a file replaced by rename (as builds, editors and
//! deployment tools do) is seen.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

/// How a watch groups events into changes.
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    /// Events closer together than this are one change.
    pub quiet: Duration,
    /// A burst is cut off after this long, so a file that keeps changing still reloads.
    pub max: Duration,
}

/// Watches `dir` (not recursively) until dropped. `on_change` runs on a thread named
/// `thread_name`: once at the start (catching changes made before the watch began), then once per
/// debounced burst of events that `relevant` accepts. A watch error counts as a change (the state
/// is re-read; `what` names the watched thing in the log).
pub fn watch_dir(
    dir: &Path,
    what: &'static str,
    thread_name: &str,
    debounce: Debounce,
    relevant: impl Fn(&notify::Event) -> bool + Send + 'static,
    mut on_change: impl FnMut() + Send + 'static,
) -> Result<DirWatcher, notify::Error> {
    // Carries "something changed" from notify's thread to the reacting thread.
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let counts = match &event {
            Err(e) => {
                tracing::warn!(error = %e, "{what} watch error; re-reading");
                true
            }
            Ok(event) => relevant(event),
        };
        if counts {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    let thread = thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || {
            on_change();
            // Ends when the watcher (and with it the sender) is dropped.
            while rx.recv().is_ok() {
                let burst = Instant::now();
                loop {
                    match rx.recv_timeout(debounce.quiet) {
                        Ok(()) if burst.elapsed() < debounce.max => continue,
                        Ok(()) | Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                on_change();
            }
        })
        .map_err(notify::Error::io)?;
    Ok(DirWatcher {
        watcher: Some(watcher),
        thread: Some(thread),
    })
}

/// Keeps a directory watched; dropping it stops the watch and its thread.
pub struct DirWatcher {
    watcher: Option<RecommendedWatcher>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DirWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatcher").finish_non_exhaustive()
    }
}

impl Drop for DirWatcher {
    fn drop(&mut self) {
        // Dropping the watcher drops the event sender, which ends the thread's loop.
        drop(self.watcher.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
