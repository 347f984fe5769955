//! A store whose server is not reachable yet: it connects in the background, with retries and
//! backoff, so `quiver serve` starts unready (`/ready` and lookups answer 503) and becomes ready
//! without a restart once the server answers.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::{
    FeatureRow, OnlineStore, RowKey, RowWrite, SharedStore, StoreError, WriteNotices, WriteOutcome,
};
use crate::types::EpochMicros;

/// First pause between connection attempts; doubled after each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One connection attempt.
pub type Connect =
    Box<dyn Fn() -> BoxFuture<'static, Result<SharedStore, StoreError>> + Send + Sync>;

/// A store that answers [`StoreError::Unavailable`] until a background task has connected it,
/// then delegates every call. The task stops when the store is dropped.
pub struct Reconnecting {
    kind: &'static str,
    shared: Arc<Shared>,
}

struct Shared {
    /// Set once, by the background task; read without locking on every request.
    store: OnceLock<SharedStore>,
    // Blocking mutex: held only to copy or replace a short string, never across an await.
    last_error: Mutex<String>,
    /// Flips to true once connected, for subscribers waiting to forward write announcements.
    connected: watch::Sender<bool>,
}

impl Reconnecting {
    /// Starts connecting in the background with `connect`; `first_error` is why the first attempt
    /// (made by the caller) failed. `kind` names the backend in logs and metrics.
    pub fn spawn(kind: &'static str, first_error: StoreError, connect: Connect) -> Reconnecting {
        let shared = Arc::new(Shared {
            store: OnceLock::new(),
            last_error: Mutex::new(first_error.to_string()),
            connected: watch::channel(false).0,
        });
        tracing::warn!(
            store = kind,
            "online store not reachable at start-up; serving unready and connecting in the background: {first_error}"
        );
        tokio::spawn(connect_in_background(
            kind,
            Arc::downgrade(&shared),
            connect,
        ));
        Reconnecting { kind, shared }
    }

    /// True once the background task has connected.
    pub fn is_connected(&self) -> bool {
        self.shared.store.get().is_some()
    }

    fn inner(&self) -> Result<&SharedStore, StoreError> {
        self.shared.store.get().ok_or_else(|| {
            StoreError::Unavailable(format!(
                "not connected yet: {}",
                self.shared.last_error.lock()
            ))
        })
    }
}

/// Tries `connect` until it succeeds or the store is dropped (the task holds only a weak
/// reference, so dropping the store ends it at its next attempt).
async fn connect_in_background(kind: &'static str, shared: Weak<Shared>, connect: Connect) {
    let mut backoff = MIN_BACKOFF;
    loop {
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        if shared.strong_count() == 0 {
            return;
        }
        let attempt = connect().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match attempt {
            Ok(store) => {
                let _ = shared.store.set(store);
                shared.connected.send_replace(true);
                tracing::info!(store = kind, "online store connected; ready");
                return;
            }
            Err(e) => {
                if e.is_unavailable() {
                    tracing::debug!(store = kind, "online store still unreachable: {e}");
                } else {
                    tracing::error!(store = kind, "cannot connect the online store: {e}");
                }
                *shared.last_error.lock() = e.to_string();
            }
        }
    }
}

#[async_trait]
impl OnlineStore for Reconnecting {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn read(&self, keys: &[RowKey<'_>]) -> Result<Vec<Option<Arc<FeatureRow>>>, StoreError> {
        self.inner()?.read(keys).await
    }

    async fn write(&self, rows: &[RowWrite]) -> Result<WriteOutcome, StoreError> {
        self.inner()?.write(rows).await
    }

    async fn watermark(&self, view: &str) -> Result<Option<EpochMicros>, StoreError> {
        self.inner()?.watermark(view).await
    }

    async fn set_watermark(&self, view: &str, at: EpochMicros) -> Result<(), StoreError> {
        self.inner()?.set_watermark(view, at).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner()?.ping().await
    }

    /// Subscribes once connected: until then the returned stream is silent (there is nothing to
    /// invalidate while nothing can be read).
    async fn subscribe_writes(&self) -> Result<Option<WriteNotices>, StoreError> {
        if let Some(store) = self.shared.store.get() {
            return store.subscribe_writes().await;
        }
        // Bounded like the backends' own announcement channels: a slow reader delays forwarding.
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let mut connected = self.shared.connected.subscribe();
        let shared = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            if connected.wait_for(|c| *c).await.is_err() {
                return;
            }
            let Some(store) = shared.upgrade().and_then(|s| s.store.get().cloned()) else {
                return;
            };
            let mut notices = match store.subscribe_writes().await {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("cannot subscribe to write announcements: {e}");
                    return;
                }
            };
            drop(store);
            while let Some(event) = notices.recv().await {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::clock::system_clock;
    use crate::store::sqlite::SqliteStore;

    /// A connect that fails with "refused" `failures` times, then opens an SQLite store; counts
    /// its attempts.
    fn flaky_connect(
        failures: usize,
        attempts: Arc<AtomicUsize>,
        dir: &tempfile::TempDir,
    ) -> Connect {
        let path = dir.path().join("online.db");
        Box::new(move || {
            let (attempts, path) = (Arc::clone(&attempts), path.clone());
            Box::pin(async move {
                if attempts.fetch_add(1, Ordering::SeqCst) < failures {
                    return Err(StoreError::Unavailable("connection refused".into()));
                }
                Ok(Arc::new(SqliteStore::open(&path, "p", system_clock())?) as SharedStore)
            })
        })
    }

    #[tokio::test]
    async fn a_store_is_unavailable_until_a_background_attempt_connects_it() {
        let dir = tempfile::tempdir().unwrap();
        let attempts = Arc::new(AtomicUsize::new(0));
        let store = Reconnecting::spawn(
            "sqlite",
            StoreError::Unavailable("connection refused".into()),
            flaky_connect(2, Arc::clone(&attempts), &dir),
        );
        let err = store.ping().await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(err.to_string().contains("not connected yet"), "{err}");

        for _ in 0..100 {
            if store.is_connected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        store.ping().await.expect("connected by the third attempt");
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        assert_eq!(store.kind(), "sqlite");
    }

    #[tokio::test]
    async fn dropping_the_store_stops_the_background_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let attempts = Arc::new(AtomicUsize::new(0));
        let store = Reconnecting::spawn(
            "sqlite",
            StoreError::Unavailable("connection refused".into()),
            flaky_connect(usize::MAX, Arc::clone(&attempts), &dir),
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
        drop(store);
        let at_drop = attempts.load(Ordering::SeqCst);
        assert!(at_drop >= 1, "attempts were made");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            at_drop,
            "no attempt after the drop"
        );
    }
}
