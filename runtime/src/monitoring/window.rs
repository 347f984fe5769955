//! Counts of served values per bin over a sliding window, kept as a ring of fixed sub-windows,
//! and the drift of those counts from a reference ([`DriftScore`]).
//!
//! The window of `N` sub-windows of length `L` covers the current sub-window and the `N − 1`
//! before it: between `(N − 1)·L` and `N·L` of history. Sub-window `e` is the time range
//! `[e·L, (e + 1)·L)`; it is counted in slot `e mod N`. The first request that finds its slot
//! holding an older sub-window rotates it: it claims the slot, zeroes its counters and publishes
//! the new sub-window number, all without a lock. Requests that meet a slot mid-rotation, or
//! carry a time older than the slot's sub-window, skip their values (they are a sample anyway).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use super::drift::{js_distance, psi};
use super::profile::FeatureProfile;

/// The slot holds no sub-window yet.
const EMPTY: i64 = -1;
/// A request is zeroing the slot for a new sub-window.
const ROTATING: i64 = i64::MIN;

/// Per-bin counters of served values over a sliding window of sub-windows.
pub struct WindowedCounts {
    /// Sub-window length, in microseconds.
    sub_window: i64,
    slots: Box<[Slot]>,
    bins: usize,
}

/// One sub-window's counters.
struct Slot {
    /// The sub-window counted (`EMPTY`, `ROTATING` or a sub-window number). An atomic so that the
    /// request that first sees a new sub-window claims the slot (compare-and-swap) and no lock is
    /// taken on the request path.
    epoch: AtomicI64,
    /// Values per bin; atomics so that concurrent requests add without a lock.
    counts: Box<[AtomicU64]>,
}

impl WindowedCounts {
    /// Counters for `bins` bins over a window of `sub_windows` sub-windows of `sub_window` each
    /// (at least 1 µs and 1 sub-window are used).
    pub fn new(bins: usize, sub_windows: usize, sub_window: Duration) -> Self {
        let slots = (0..sub_windows.max(1))
            .map(|_| Slot {
                epoch: AtomicI64::new(EMPTY),
                counts: (0..bins).map(|_| AtomicU64::new(0)).collect(),
            })
            .collect();
        WindowedCounts {
            sub_window: i64::try_from(sub_window.as_micros())
                .unwrap_or(i64::MAX)
                .max(1),
            slots,
            bins,
        }
    }

    /// Bins counted.
    pub fn bins(&self) -> usize {
        self.bins
    }

    /// The counters of the sub-window holding `now` (microseconds since the epoch), rotating its
    /// slot when it still holds an older sub-window. `None` when values at `now` cannot be
    /// counted: the slot is being rotated by another request, or already counts a later
    /// sub-window. Add to a bin with [`add`].
    pub fn current(&self, now: i64) -> Option<&[AtomicU64]> {
        let epoch = now.max(0) / self.sub_window;
        let slot = &self.slots[(epoch % self.slots.len() as i64) as usize];
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen == epoch {
            return Some(&slot.counts);
        }
        if seen == ROTATING || seen > epoch {
            return None;
        }
        if slot
            .epoch
            .compare_exchange(seen, ROTATING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        for c in slot.counts.iter() {
            c.store(0, Ordering::Relaxed);
        }
        slot.epoch.store(epoch, Ordering::Release);
        Some(&slot.counts)
    }

    /// Counts one value in `bin` at `now`; `false` when it could not be counted (see
    /// [`WindowedCounts::current`]).
    pub fn record(&self, now: i64, bin: usize) -> bool {
        match self.current(now) {
            Some(counts) => {
                add(counts, bin);
                true
            }
            None => false,
        }
    }

    /// The counts per bin of the window ending in the sub-window holding `now`.
    pub fn totals(&self, now: i64) -> Vec<u64> {
        let epoch = now.max(0) / self.sub_window;
        let n = self.slots.len() as i64;
        let mut totals = vec![0u64; self.bins];
        for slot in self.slots.iter() {
            let e = slot.epoch.load(Ordering::Acquire);
            if e >= 0 && e <= epoch && epoch - e < n {
                for (t, c) in totals.iter_mut().zip(slot.counts.iter()) {
                    *t += c.load(Ordering::Relaxed);
                }
            }
        }
        totals
    }
}

/// Adds one value to `bin` of a sub-window's counters ([`WindowedCounts::current`]).
#[inline]
pub fn add(counts: &[AtomicU64], bin: usize) {
    if let Some(c) = counts.get(bin) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// PSI above this is a warning.
pub const PSI_WARNING: f64 = 0.1;
/// PSI above this is critical.
pub const PSI_CRITICAL: f64 = 0.2;
/// Jensen–Shannon distance above this is a warning.
pub const JS_WARNING: f64 = 0.05;
/// Jensen–Shannon distance above this is critical.
pub const JS_CRITICAL: f64 = 0.15;

/// How far a feature's served values are from its reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftStatus {
    /// PSI at most [`PSI_WARNING`] and JS at most [`JS_WARNING`].
    Ok,
    /// PSI above [`PSI_WARNING`] or JS above [`JS_WARNING`].
    Warning,
    /// PSI above [`PSI_CRITICAL`] or JS above [`JS_CRITICAL`].
    Critical,
    /// Fewer values in the window than the minimum: no scores.
    InsufficientData,
}

impl DriftStatus {
    /// The status of scores by the thresholds.
    pub fn of(psi: f64, js: f64) -> Self {
        if psi > PSI_CRITICAL || js > JS_CRITICAL {
            DriftStatus::Critical
        } else if psi > PSI_WARNING || js > JS_WARNING {
            DriftStatus::Warning
        } else {
            DriftStatus::Ok
        }
    }
}

/// The drift of one feature's served counts from its reference.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftScore {
    /// Served values counted (the window's total).
    pub samples: u64,
    /// Population stability index; `None` below the minimum sample count.
    pub psi: Option<f64>,
    /// Jensen–Shannon distance; `None` below the minimum sample count.
    pub js: Option<f64>,
    /// Share of nulls in the reference (0 for an empty reference).
    pub null_rate_reference: f64,
    /// Share of nulls served; `None` without samples.
    pub null_rate_serving: Option<f64>,
    /// The status by the thresholds.
    pub status: DriftStatus,
}

impl DriftScore {
    /// Scores `serving` (counts per bin of `reference`'s bins) against `reference`; scores are
    /// computed from `min_samples` values on.
    pub fn of(reference: &FeatureProfile, serving: &[u64], min_samples: u64) -> Self {
        let reference_counts = reference.counts();
        let null_bin = reference_counts.len() - 1;
        let samples: u64 = serving.iter().sum();
        let reference_total: u64 = reference_counts.iter().sum();
        let null_rate_reference = if reference_total == 0 {
            0.0
        } else {
            reference_counts[null_bin] as f64 / reference_total as f64
        };
        let null_rate_serving = (samples > 0)
            .then(|| serving.get(null_bin).copied().unwrap_or(0) as f64 / samples as f64);
        let scores = (samples >= min_samples.max(1))
            .then(|| {
                Some((
                    psi(&reference_counts, serving).ok()?,
                    js_distance(&reference_counts, serving).ok()?,
                ))
            })
            .flatten();
        DriftScore {
            samples,
            psi: scores.map(|s| s.0),
            js: scores.map(|s| s.1),
            null_rate_reference,
            null_rate_serving,
            status: scores.map_or(DriftStatus::InsufficientData, |(p, j)| {
                DriftStatus::of(p, j)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, StringArray};

    use super::*;
    use crate::monitoring::{Origin, ProfileColumn, ProfileOptions, profile_batches};
    use crate::types::{Value, ValueType};

    const SECOND: i64 = 1_000_000;

    /// 3 sub-windows of 10 s: a window of 20 to 30 s.
    fn counts() -> WindowedCounts {
        WindowedCounts::new(4, 3, Duration::from_secs(10))
    }

    #[test]
    fn values_count_in_their_bins_over_the_whole_window() {
        let c = counts();
        assert!(c.record(0, 1));
        assert!(c.record(5 * SECOND, 1));
        assert!(c.record(12 * SECOND, 3));
        assert!(c.record(29 * SECOND, 0));
        assert_eq!(c.totals(29 * SECOND), [1, 2, 0, 1]);
        // Out of range bins are ignored rather than panicking.
        add(c.current(29 * SECOND).unwrap(), 99);
        assert_eq!(c.totals(29 * SECOND), [1, 2, 0, 1]);
    }

    #[test]
    fn the_oldest_sub_window_leaves_the_window_as_time_moves_on() {
        let c = counts();
        c.record(SECOND, 0);
        c.record(11 * SECOND, 1);
        c.record(21 * SECOND, 2);
        assert_eq!(c.totals(29 * SECOND), [1, 1, 1, 0]);
        // At 30 s the sub-window [0, 10) is out, even before anything rotates its slot.
        assert_eq!(c.totals(30 * SECOND), [0, 1, 1, 0]);
        // A value at 31 s rotates that slot: zeroed, then counted.
        c.record(31 * SECOND, 3);
        assert_eq!(c.totals(31 * SECOND), [0, 1, 1, 1]);
        // Long after, nothing is left.
        assert_eq!(c.totals(100 * SECOND), [0, 0, 0, 0]);
        c.record(100 * SECOND, 2);
        assert_eq!(c.totals(100 * SECOND), [0, 0, 1, 0]);
    }

    #[test]
    fn a_value_older_than_its_slots_sub_window_is_not_counted() {
        let c = counts();
        c.record(31 * SECOND, 0);
        // 1 s falls in the same slot, which now counts [30, 40).
        assert!(!c.record(SECOND, 1));
        assert_eq!(c.totals(31 * SECOND), [1, 0, 0, 0]);
    }

    #[test]
    fn concurrent_requests_lose_no_value_within_a_sub_window() {
        let c = Arc::new(counts());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        assert!(c.record(15 * SECOND, (t + i) % 4));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.totals(15 * SECOND), [10_000; 4]);
    }

    fn float_profile(values: &[Option<f64>]) -> FeatureProfile {
        let column = ProfileColumn {
            name: "x".into(),
            feature: "v:x".into(),
            dtype: ValueType::parse("float64").unwrap(),
        };
        let array: ArrayRef = Arc::new(Float64Array::from(values.to_vec()));
        let origin = Origin {
            source: "test".into(),
            start: None,
            end: None,
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        profile_batches(
            vec![column],
            ProfileOptions::default(),
            &[vec![array]],
            origin,
        )
        .unwrap()
        .features
        .remove(0)
    }

    #[test]
    fn scores_from_counters_match_the_hand_computed_values() {
        // Reference: 0, 1, 2, 3 and a null; edges [0, 1, 2, 3]: bins underflow, [0,1), [1,2),
        // [2,3], overflow, null.
        let reference = float_profile(&[Some(0.0), Some(1.0), Some(2.0), Some(3.0), None]);
        assert_eq!(reference.counts(), [0, 1, 1, 2, 0, 1]);
        let c = WindowedCounts::new(reference.bin_count(), 2, Duration::from_secs(60));
        for x in [0.5, 0.5, 1.5, 2.5, 7.0] {
            c.record(0, reference.bin_of(&Value::Float64(x)));
        }
        c.record(0, reference.bin_of(&Value::Null));
        let serving = c.totals(0);
        assert_eq!(serving, [0, 2, 1, 1, 1, 1]);

        // Smoothed proportions, by hand: (c/N + ε) / (1 + 6ε).
        let e = crate::monitoring::SMOOTHING_EPSILON;
        let p = |counts: [f64; 6], n: f64| counts.map(|c| (c / n + e) / (1.0 + 6.0 * e));
        let r = p([0.0, 1.0, 1.0, 2.0, 0.0, 1.0], 5.0);
        let s = p([0.0, 2.0, 1.0, 1.0, 1.0, 1.0], 6.0);
        let psi: f64 = (0..6).map(|i| (s[i] - r[i]) * (s[i] / r[i]).ln()).sum();
        let js = (0..6)
            .map(|i| {
                let m = (r[i] + s[i]) / 2.0;
                0.5 * r[i] * (r[i] / m).log2() + 0.5 * s[i] * (s[i] / m).log2()
            })
            .sum::<f64>()
            .sqrt();

        let score = DriftScore::of(&reference, &serving, 6);
        assert_eq!(score.samples, 6);
        assert!(
            (score.psi.unwrap() - psi).abs() < 1e-12,
            "{score:?} vs {psi}"
        );
        assert!((score.js.unwrap() - js).abs() < 1e-12, "{score:?} vs {js}");
        assert_eq!(score.null_rate_reference, 0.2);
        assert_eq!(score.null_rate_serving, Some(1.0 / 6.0));
        // The overflow bin (empty in the reference) weighs heavily: PSI ≈ 1.6.
        assert_eq!(score.status, DriftStatus::Critical);

        let few = DriftScore::of(&reference, &serving, 7);
        assert_eq!((few.psi, few.js), (None, None));
        assert_eq!(few.status, DriftStatus::InsufficientData);
        assert_eq!(few.null_rate_serving, Some(1.0 / 6.0));
    }

    #[test]
    fn the_status_follows_the_alerting_thresholds() {
        assert_eq!(DriftStatus::of(0.1, 0.05), DriftStatus::Ok);
        assert_eq!(DriftStatus::of(0.11, 0.0), DriftStatus::Warning);
        assert_eq!(DriftStatus::of(0.0, 0.06), DriftStatus::Warning);
        assert_eq!(DriftStatus::of(0.21, 0.0), DriftStatus::Critical);
        assert_eq!(DriftStatus::of(0.0, 0.16), DriftStatus::Critical);
    }

    #[test]
    fn categories_bin_by_value_with_other_and_null() {
        let column = ProfileColumn {
            name: "c".into(),
            feature: "v:c".into(),
            dtype: ValueType::parse("string").unwrap(),
        };
        let array: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a"),
            Some("a"),
            Some("b"),
            None,
        ]));
        let origin = Origin {
            source: "test".into(),
            start: None,
            end: None,
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        let profile = profile_batches(
            vec![column],
            ProfileOptions::default(),
            &[vec![array]],
            origin,
        )
        .unwrap()
        .features
        .remove(0);
        let labels: Vec<String> = (0..profile.bin_count())
            .map(|b| profile.bin_label(b))
            .collect();
        assert_eq!(labels, ["a", "b", "other", "null"]);
        let c = WindowedCounts::new(profile.bin_count(), 1, Duration::from_secs(1));
        for v in ["a", "b", "new", "newer"] {
            c.record(0, profile.bin_of(&Value::String(v.into())));
        }
        assert_eq!(c.totals(0), [1, 1, 2, 0]);
    }

    /// A deterministic standard normal sample (xorshift64* and Box–Muller).
    struct Normal(u64);

    impl Normal {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        fn next(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
    }

    /// PSI > 0.1, PSI > 0.2 and JS > 0.05 among 100 fresh samples of `n` values drawn from the
    /// reference's own distribution (a profile of 10,000 values, 10 quantile bins).
    fn false_alarms(n: usize) -> (usize, usize, usize) {
        let mut normal = Normal(0x9e37_79b9_7f4a_7c15);
        let training: Vec<Option<f64>> = (0..10_000).map(|_| Some(normal.next())).collect();
        let reference = float_profile(&training);
        let mut alarms = (0, 0, 0);
        for _ in 0..100 {
            let c = WindowedCounts::new(reference.bin_count(), 12, Duration::from_secs(300));
            for _ in 0..n {
                c.record(0, reference.bin_of(&Value::Float64(normal.next())));
            }
            let score = DriftScore::of(&reference, &c.totals(0), 1);
            let (psi, js) = (score.psi.unwrap(), score.js.unwrap());
            alarms.0 += usize::from(psi > PSI_WARNING);
            alarms.1 += usize::from(psi > PSI_CRITICAL);
            alarms.2 += usize::from(js > JS_WARNING);
        }
        alarms
    }

    #[test]
    fn samples_of_the_reference_distribution_rarely_raise_a_false_alarm() {
        let hundred = false_alarms(100);
        let thousand = false_alarms(1000);
        let ten_thousand = false_alarms(10_000);
        println!(
            "false alarms out of 100 samples (PSI > 0.1, PSI > 0.2, JS > 0.05): \
             100 values {hundred:?}, 1000 values {thousand:?}, 10000 values {ten_thousand:?}"
        );
        // Expected PSI of a fresh sample is about (bins − 1) / n: 0.01 for 1000 values.
        assert!(thousand.0 <= 1, "{thousand:?}");
        assert_eq!(thousand.1, 0, "{thousand:?}");
        assert_eq!(ten_thousand, (0, 0, 0));
        // At the minimum of 100 values the same rules are noisy: the expected PSI is near 0.1,
        // and the JS distance, a square root, is noisier still.
        assert!(hundred.0 > thousand.0, "{hundred:?}");
        assert!(hundred.2 > thousand.2, "{hundred:?}");
    }
}
