//! Rate-limited failure logs: at most one line per key (a view, a module) per interval, each
//! saying how many lines were suppressed since the previous one. A module failing on every row
//! of every request must not flood the log; the metrics count every failure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The default interval between two lines of one key.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Decides which failures get a log line.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    /// Guards the per-key state; held for a map lookup only, never across I/O.
    keys: Mutex<HashMap<String, KeyState>>,
}

#[derive(Debug)]
struct KeyState {
    logged_at: Instant,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(LOG_INTERVAL)
    }
}

impl LogLimiter {
    /// At most one line per key per `interval`.
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a failure of `key` may be logged now: `Some(n)` with the number of failures
    /// suppressed since the last line, or `None` to stay silent (and count it).
    pub fn admit(&self, key: &str) -> Option<u64> {
        self.admit_at(key, Instant::now())
    }

    /// [`LogLimiter::admit`] at a given time.
    pub fn admit_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut keys = self.keys.lock();
        match keys.get_mut(key) {
            Some(state) if now.saturating_duration_since(state.logged_at) < self.interval => {
                state.suppressed += 1;
                None
            }
            Some(state) => {
                state.logged_at = now;
                Some(std::mem::take(&mut state.suppressed))
            }
            None => {
                keys.insert(
                    key.to_owned(),
                    KeyState {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_failures_in_a_second_give_one_line_per_key() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let start = Instant::now();
        let mut lines = 0;
        for i in 0..10_000u64 {
            let now = start + Duration::from_micros(i * 100);
            for key in ["a", "b"] {
                if limiter.admit_at(key, now).is_some() {
                    lines += 1;
                }
            }
        }
        assert_eq!(lines, 2);
    }

    #[test]
    fn the_next_line_after_the_interval_counts_the_suppressed_failures() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(limiter.admit_at("v", start), Some(0));
        for s in 1..10 {
            assert_eq!(limiter.admit_at("v", start + Duration::from_secs(s)), None);
        }
        assert_eq!(
            limiter.admit_at("v", start + Duration::from_secs(10)),
            Some(9)
        );
        assert_eq!(
            limiter.admit_at("v", start + Duration::from_secs(25)),
            Some(0)
        );
    }
}
