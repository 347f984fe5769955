//! Time as Quiver sees it. Serving, stores and materialization read "now" through a [`Clock`], so
//! tests can move time forward (ttl expiry, `OUTSIDE_MAX_AGE`) without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::types::EpochMicros;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Microseconds since the Unix epoch, UTC.
    fn now_micros(&self) -> EpochMicros;
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> EpochMicros {
        chrono::Utc::now().timestamp_micros()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    // An atomic rather than a lock: reads happen on every request, writes only from the test.
    now: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `now`.
    pub fn new(now: EpochMicros) -> Self {
        ManualClock {
            now: AtomicI64::new(now),
        }
    }

    /// Sets the current time.
    pub fn set(&self, now: EpochMicros) {
        self.now.store(now, Ordering::SeqCst);
    }

    /// Moves the clock forward by `micros`.
    pub fn advance(&self, micros: i64) {
        self.now.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> EpochMicros {
        self.now.load(Ordering::SeqCst)
    }
}

/// The system clock as a [`SharedClock`].
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}
