//! Drift monitoring on the request path: a sampled fraction of lookups bins every served value of
//! a monitored feature into that feature's windowed counters, with the bins of its reference
//! profile ([`FeatureProfile::bin_of`]).
//!
//! Everything is prepared once per registry ([`DriftMonitor::new`]): which (view, feature) is
//! monitored, its profile and its counters. Per request, the sampling decision is one draw of a
//! per-thread random number; per value, one bin lookup and one atomic add. No lock, no
//! allocation.
//!
//! A value is binned as served: PRESENT values by their value; every other status (NULL_VALUE,
//! NOT_FOUND, OUTSIDE_MAX_AGE, TRANSFORM_ERROR) answers null, and counts in the null bin, as the
//! historical join that built the training set writes a null for a missing or expired value.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use crate::config::ConfigError;
use crate::monitoring::{DriftScore, FeatureProfile, Profile, WindowedCounts, add};
use crate::registry::{FeatureRef, Name, Registry};
use crate::types::EpochMicros;

use super::FeatureColumn;

/// The monitored features of one registry and their counters.
pub struct DriftMonitor {
    /// A request is sampled when its thread's next random number is below this
    /// (`sample_rate × 2^64`).
    sample_threshold: u64,
    sample_rate: f64,
    window: Duration,
    min_samples: u64,
    /// Per feature view, per field: the index into `features` of a monitored feature.
    by_view: Box<[Box<[Option<u32>]>]>,
    /// The same for on-demand views.
    by_on_demand: Box<[Box<[Option<u32>]>]>,
    features: Vec<MonitoredFeature>,
}

/// One monitored feature: its reference profile and the counts of its served values.
pub struct MonitoredFeature {
    /// The view (feature view or on-demand view).
    pub view: Name,
    /// The feature.
    pub feature: Name,
    /// Its declared type (`float32`, `list<string>`, ...).
    pub dtype: String,
    /// The profile's path as written in `feature_store.yaml`.
    pub reference: String,
    /// The feature's reference profile (its bins and counts).
    pub profile: FeatureProfile,
    null_bin: usize,
    counts: WindowedCounts,
}

/// One feature's served counts over the window and their drift from the reference.
pub struct FeatureDrift<'m> {
    /// The feature.
    pub feature: &'m MonitoredFeature,
    /// Served values per bin over the window.
    pub serving: Vec<u64>,
    /// Scores and status.
    pub score: DriftScore,
}

thread_local! {
    /// xorshift64* state of this thread's sampling draws: per thread, so sampling takes no lock
    /// and shares no cache line. Seeded once per thread from the process's random hasher keys.
    static DRAW: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64) | 1);
}

/// The next random number of this thread.
fn draw() -> u64 {
    DRAW.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

impl DriftMonitor {
    /// Prepares monitoring for `registry`, whose `monitoring` section must be present, with
    /// `profiles[i]` the profile read for `monitoring.references[i]`. Maps each profile feature
    /// to a served (view, feature) by its `feature` field (`view:feature`); an error names the
    /// reference whose profile does not match the view's schema.
    pub fn new(registry: &Registry, profiles: &[Profile]) -> Result<Self, Vec<ConfigError>> {
        let Some(settings) = &registry.monitoring else {
            return Err(vec![ConfigError::new(
                "monitoring",
                "no monitoring section",
            )]);
        };
        let mut errors = Vec::new();
        let mut by_view: Vec<Vec<Option<u32>>> = registry
            .feature_views
            .iter()
            .map(|v| vec![None; v.fields.len()])
            .collect();
        let mut by_on_demand: Vec<Vec<Option<u32>>> = registry
            .on_demand_views
            .iter()
            .map(|v| vec![None; v.fields.len()])
            .collect();
        let mut owner: Vec<usize> = Vec::new();
        let mut features = Vec::new();
        let sub_window = settings.window / settings.sub_windows.max(1) as u32;
        for (i, (reference, profile)) in settings.references.iter().zip(profiles).enumerate() {
            let path = format!("monitoring.references[{i}]");
            let what = format!("profile {} ({})", reference.profile, reference.target);
            let views: Vec<&str> = reference
                .features
                .iter()
                .map(|&r| registry.ref_names(r).0.as_str())
                .collect();
            let mut matched = 0;
            for fp in &profile.features {
                let Some((view, name)) = fp.feature.split_once(':') else {
                    errors.push(ConfigError::new(
                        &path,
                        format!(
                            "{what}: feature \"{}\" is not named view:feature",
                            fp.feature
                        ),
                    ));
                    continue;
                };
                if !views.contains(&view) {
                    continue;
                }
                let Some(&r) = registry.feature_index.get(fp.feature.as_str()) else {
                    errors.push(ConfigError::new(
                        &path,
                        format!(
                            "{what}: feature \"{}\" is not in the schema of view \"{view}\"",
                            fp.feature
                        ),
                    ));
                    continue;
                };
                if !reference.features.contains(&r) {
                    continue;
                }
                let (_, field) = registry.ref_names(r);
                let dtype = field.dtype.to_string();
                if dtype != fp.dtype {
                    errors.push(ConfigError::new(
                        &path,
                        format!(
                            "{what}: feature \"{}\" is {} in the profile but {dtype} in view \"{view}\"",
                            fp.feature, fp.dtype
                        ),
                    ));
                    continue;
                }
                let slot = match r {
                    FeatureRef::View { view, field } => &mut by_view[view][field],
                    FeatureRef::OnDemand { view, field } => &mut by_on_demand[view][field],
                };
                if let Some(existing) = *slot {
                    errors.push(ConfigError::new(
                        &path,
                        format!(
                            "{what}: feature \"{}\" is monitored by monitoring.references[{}] already",
                            fp.feature, owner[existing as usize]
                        ),
                    ));
                    continue;
                }
                matched += 1;
                *slot = Some(features.len() as u32);
                owner.push(i);
                let bins = fp.bin_count();
                features.push(MonitoredFeature {
                    view: Name::new(view).expect("a registry view name"),
                    feature: Name::new(name).expect("a registry feature name"),
                    dtype,
                    reference: reference.profile.clone(),
                    profile: fp.clone(),
                    null_bin: bins - 1,
                    counts: WindowedCounts::new(bins, settings.sub_windows, sub_window),
                });
            }
            if matched == 0 && !errors.iter().any(|e| e.path == path) {
                errors.push(ConfigError::new(
                    &path,
                    format!("{what}: the profile has no feature of {}", reference.target),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(DriftMonitor {
            sample_threshold: if settings.sample_rate >= 1.0 {
                u64::MAX
            } else {
                (settings.sample_rate * 2f64.powi(64)) as u64
            },
            sample_rate: settings.sample_rate,
            window: settings.window,
            min_samples: settings.min_samples,
            by_view: by_view.into_iter().map(Vec::into_boxed_slice).collect(),
            by_on_demand: by_on_demand
                .into_iter()
                .map(Vec::into_boxed_slice)
                .collect(),
            features,
        })
    }

    /// The fraction of lookups sampled.
    pub fn sample_rate(&self) -> f64 {
        self.sample_rate
    }

    /// The sliding window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Values in the window below which scores are not computed.
    pub fn min_samples(&self) -> u64 {
        self.min_samples
    }

    /// The monitored features, grouped by reference in document order.
    pub fn features(&self) -> &[MonitoredFeature] {
        &self.features
    }

    /// Whether this lookup is sampled: one draw of the thread's random numbers.
    #[inline]
    pub fn sampled(&self) -> bool {
        self.sample_threshold == u64::MAX || draw() < self.sample_threshold
    }

    /// Bins every served value of the monitored features among `columns` (resolved as `refs`)
    /// into the sub-window holding `now`.
    pub fn record(&self, refs: &[FeatureRef], columns: &[FeatureColumn<'_>], now: EpochMicros) {
        for (&r, column) in refs.iter().zip(columns) {
            let index = match r {
                FeatureRef::View { view, field } => self.by_view[view][field],
                FeatureRef::OnDemand { view, field } => self.by_on_demand[view][field],
            };
            let Some(index) = index else { continue };
            let monitored = &self.features[index as usize];
            let Some(counts) = monitored.counts.current(now) else {
                continue;
            };
            for row in 0..column.cells.len() {
                let bin = match column.value(row) {
                    Some(value) => monitored.profile.bin_of(value),
                    None => monitored.null_bin,
                };
                add(counts, bin);
            }
        }
    }

    /// Every monitored feature's served counts over the window ending at `now`, and its scores.
    pub fn report(&self, now: EpochMicros) -> Vec<FeatureDrift<'_>> {
        self.features
            .iter()
            .map(|feature| {
                let serving = feature.counts.totals(now);
                let score = DriftScore::of(&feature.profile, &serving, self.min_samples);
                FeatureDrift {
                    feature,
                    serving,
                    score,
                }
            })
            .collect()
    }
}
