//! A small work pool: units of work spread over scoped threads, stopping at the first error.

use crate::offline::OfflineError;

/// Runs `work(state, unit)` for units `0..units` on `threads` threads, each with its own state
/// from `init`, handed to `finish` when the thread runs out of units. Stops at the first error.
pub(super) fn parallel<S>(
    threads: usize,
    units: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, usize) -> Result<(), OfflineError> + Sync,
    finish: impl Fn(S) -> Result<(), OfflineError> + Sync,
) -> Result<(), OfflineError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let error = parking_lot::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(units).max(1) {
            scope.spawn(|| {
                let mut state = init();
                let result = (|| {
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        let unit = next.fetch_add(1, Ordering::Relaxed);
                        if unit >= units {
                            return Ok(());
                        }
                        work(&mut state, unit)?;
                    }
                })()
                .and_then(|()| finish(state));
                if let Err(e) = result {
                    failed.store(true, Ordering::Relaxed);
                    error.lock().get_or_insert(e);
                }
            });
        }
    });
    match error.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
