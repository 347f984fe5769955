//! The serving rule: whether a stored row of a feature view may be served at time `T`, with which
//! status, and until when the online store keeps it.
//!
//! This is the one definition of the rule. The online lookup, on-demand inputs, the historical
//! (point-in-time) join, pushes and materialization all call it, so a training row is built from
//! exactly the values a lookup at the same time would have served.
//!
//! - A row stamped `ts` is fresh at `T` iff `T - ts <= ttl` (inclusive: a value exactly `ttl` old
//!   is still served). A view without ttl never expires.
//! - A row written under another schema (its fingerprint differs from the view's) is never used;
//!   it reads as absent.
//! - The historical join only considers rows with `ts <= T` (it searches for the latest such
//!   row). The online store holds only the latest row, so a row stamped after `T` (clock skew
//!   between writer and server) is served as fresh.
//! - The store keeps a row until `ts + ttl + slack` (`online_store.key_ttl_slack`), so lookups
//!   answer `OUTSIDE_MAX_AGE` for a while before they answer `NOT_FOUND`.

use crate::types::EpochMicros;

/// The status of one served value: Feast's four, and `TRANSFORM_ERROR` for an on-demand value
/// whose transform failed on that row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureStatus {
    /// A value was found and is within the view's ttl.
    Present,
    /// A row was found and the stored value is null.
    NullValue,
    /// No row for the entity.
    NotFound,
    /// The row is older than the view's ttl; the value is withheld.
    OutsideMaxAge,
    /// Quiver's own: the on-demand transform failed for this entity row (other rows and other
    /// features are unaffected); the value is null.
    TransformError,
}

impl FeatureStatus {
    /// Every status, in [`FeatureStatus::index`] order.
    pub const ALL: [FeatureStatus; 5] = [
        FeatureStatus::Present,
        FeatureStatus::NullValue,
        FeatureStatus::NotFound,
        FeatureStatus::OutsideMaxAge,
        FeatureStatus::TransformError,
    ];

    /// The status's name (Feast's, and `TRANSFORM_ERROR`).
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureStatus::Present => "PRESENT",
            FeatureStatus::NullValue => "NULL_VALUE",
            FeatureStatus::NotFound => "NOT_FOUND",
            FeatureStatus::OutsideMaxAge => "OUTSIDE_MAX_AGE",
            FeatureStatus::TransformError => "TRANSFORM_ERROR",
        }
    }

    /// A dense index (0..5), for per-status counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What the rule needs to know of a stored row: when it happened and which schema wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRow {
    /// Event timestamp.
    pub event_ts: EpochMicros,
    /// Schema fingerprint written with the row.
    pub schema_fingerprint: u32,
}

impl crate::store::FeatureRow {
    /// What the serving rule needs to know of a stored row.
    pub fn meta(&self) -> StoredRow {
        StoredRow {
            event_ts: self.event_ts,
            schema_fingerprint: self.schema_fingerprint,
        }
    }
}

/// The serving rule of one feature view, compiled from its ttl, its schema and the online store's
/// slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServingRule {
    /// Maximum age in microseconds; `None`: never expires.
    ttl_micros: Option<i64>,
    /// Fingerprint of the view's (field names, types).
    schema_fingerprint: u32,
    /// How long the store keeps a row past its ttl, in microseconds.
    retention_slack_micros: i64,
}

impl ServingRule {
    /// The rule for a view with `ttl_micros` (`None` or `Some(0)`: never expires), schema
    /// `schema_fingerprint`, on a store that keeps rows `retention_slack_micros` past their ttl.
    pub fn new(
        ttl_micros: Option<i64>,
        schema_fingerprint: u32,
        retention_slack_micros: i64,
    ) -> Self {
        ServingRule {
            ttl_micros: ttl_micros.filter(|&t| t > 0),
            schema_fingerprint,
            retention_slack_micros: retention_slack_micros.max(0),
        }
    }

    /// The ttl in microseconds, if the view has one.
    pub fn ttl_micros(&self) -> Option<i64> {
        self.ttl_micros
    }

    /// Whether a row stamped `event_ts` is fresh at `at`: `at - event_ts <= ttl`, inclusive.
    pub fn is_fresh(&self, event_ts: EpochMicros, at: EpochMicros) -> bool {
        match self.ttl_micros {
            None => true,
            Some(ttl) => (at as i128) - (event_ts as i128) <= ttl as i128,
        }
    }

    /// The event times (inclusive; `None` is unbounded) of the rows that can be usable at some
    /// time in `[first, last]`: a row stamped after `last` never is, nor one more than ttl older
    /// than `first`. Scans read only this window of a source.
    pub fn usable_window(
        &self,
        first: EpochMicros,
        last: EpochMicros,
    ) -> (Option<EpochMicros>, Option<EpochMicros>) {
        (
            self.ttl_micros.map(|ttl| first.saturating_sub(ttl)),
            Some(last),
        )
    }

    /// Whether `row` may be used at `at`: written under this view's schema and fresh.
    pub fn is_usable(&self, row: StoredRow, at: EpochMicros) -> bool {
        row.schema_fingerprint == self.schema_fingerprint && self.is_fresh(row.event_ts, at)
    }

    /// The status of one value of `row` at `at`; `value_is_null` says whether the stored value
    /// is null. A row of another schema reads as absent.
    pub fn status(
        &self,
        row: Option<StoredRow>,
        value_is_null: bool,
        at: EpochMicros,
    ) -> FeatureStatus {
        match row {
            Some(row) if row.schema_fingerprint == self.schema_fingerprint => {
                if !self.is_fresh(row.event_ts, at) {
                    FeatureStatus::OutsideMaxAge
                } else if value_is_null {
                    FeatureStatus::NullValue
                } else {
                    FeatureStatus::Present
                }
            }
            _ => FeatureStatus::NotFound,
        }
    }

    /// Until when the online store keeps a row stamped `event_ts`: `event_ts + ttl + slack`,
    /// saturating; `None` for views without ttl.
    pub fn expire_at(&self, event_ts: EpochMicros) -> Option<EpochMicros> {
        self.ttl_micros.map(|ttl| {
            event_ts
                .saturating_add(ttl)
                .saturating_add(self.retention_slack_micros)
        })
    }

    /// Whether a row stamped `event_ts` would already have left the store at `now`, so writing it
    /// is pointless.
    pub fn is_expired_for_store(&self, event_ts: EpochMicros, now: EpochMicros) -> bool {
        self.expire_at(event_ts).is_some_and(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: i64 = 3_600_000_000;
    const SLACK: i64 = 60_000_000;
    const FP: u32 = 0xabcd;
    const TS: i64 = 1_700_000_000_000_000;

    fn rule() -> ServingRule {
        ServingRule::new(Some(TTL), FP, SLACK)
    }

    fn row(event_ts: i64) -> Option<StoredRow> {
        Some(StoredRow {
            event_ts,
            schema_fingerprint: FP,
        })
    }

    #[test]
    fn a_value_exactly_ttl_old_is_still_served() {
        assert!(rule().is_fresh(TS, TS + TTL));
        assert_eq!(
            rule().status(row(TS), false, TS + TTL),
            FeatureStatus::Present
        );
    }

    #[test]
    fn a_value_one_microsecond_past_its_ttl_is_outside_max_age() {
        assert!(!rule().is_fresh(TS, TS + TTL + 1));
        assert_eq!(
            rule().status(row(TS), false, TS + TTL + 1),
            FeatureStatus::OutsideMaxAge
        );
        assert!(!rule().is_usable(row(TS).unwrap(), TS + TTL + 1));
    }

    #[test]
    fn a_row_stamped_after_the_lookup_time_counts_as_fresh_online() {
        assert!(rule().is_fresh(TS + 1, TS));
        assert_eq!(
            rule().status(row(TS + 1), false, TS),
            FeatureStatus::Present
        );
    }

    #[test]
    fn the_usable_window_keeps_exactly_the_rows_fresh_at_some_time_in_the_range() {
        let (lo, hi) = rule().usable_window(TS, TS + 10);
        assert_eq!((lo, hi), (Some(TS - TTL), Some(TS + 10)));
        assert!(rule().is_fresh(lo.unwrap(), TS));
        assert!(!rule().is_fresh(lo.unwrap() - 1, TS));
        let no_ttl = ServingRule::new(None, FP, SLACK);
        assert_eq!(no_ttl.usable_window(TS, TS), (None, Some(TS)));
    }

    #[test]
    fn a_ttl_of_zero_never_expires() {
        for never in [
            ServingRule::new(Some(0), FP, SLACK),
            ServingRule::new(None, FP, SLACK),
        ] {
            assert!(never.is_fresh(i64::MIN, i64::MAX));
            assert_eq!(never.expire_at(TS), None);
            assert!(!never.is_expired_for_store(i64::MIN, i64::MAX));
        }
    }

    #[test]
    fn a_row_of_another_schema_reads_as_absent() {
        let other = StoredRow {
            event_ts: TS,
            schema_fingerprint: FP + 1,
        };
        assert_eq!(
            rule().status(Some(other), false, TS),
            FeatureStatus::NotFound
        );
        assert!(!rule().is_usable(other, TS));
        assert_eq!(rule().status(None, false, TS), FeatureStatus::NotFound);
    }

    #[test]
    fn a_null_value_within_ttl_is_null_value() {
        assert_eq!(rule().status(row(TS), true, TS), FeatureStatus::NullValue);
    }

    #[test]
    fn the_store_keeps_a_row_for_ttl_plus_slack() {
        assert_eq!(rule().expire_at(TS), Some(TS + TTL + SLACK));
        assert!(!rule().is_expired_for_store(TS, TS + TTL + SLACK - 1));
        assert!(rule().is_expired_for_store(TS, TS + TTL + SLACK));
        assert_eq!(rule().expire_at(i64::MAX - 1), Some(i64::MAX));
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        assert!(!rule().is_fresh(i64::MIN, i64::MAX));
        assert!(rule().is_fresh(i64::MAX, i64::MIN));
    }
}
