//! Feature monitoring: the reference [`Profile`] of a training set or of a feature view's data,
//! the binning the serving side counts served values with ([`FeatureProfile::bin_of`]), and the
//! drift scores between the two ([`psi`], [`js_distance`]), and the windowed counters the serving
//! side bins served values into ([`WindowedCounts`], scored by [`DriftScore`]).
//!
//! This module knows Arrow arrays and feature values, nothing of files, the registry or HTTP:
//! `offline` feeds it training sets and sources, `main.rs` prints its profiles.
//! `docs/monitoring.md` describes the format and the guarantees.

mod drift;
mod exact_sum;
pub mod profile;
mod profiler;
mod window;

pub use drift::{BinMismatch, SMOOTHING_EPSILON, js_distance, psi, smoothed_proportions};
pub use profile::{
    CategoricalSummary, CategoryCount, FORMAT_VERSION, FeatureProfile, MAX_BINS, MAX_TOP_K,
    META_PROFILE, NumericSummary, Origin, Profile, ProfileError, ProfileOptions, Summary,
};
pub use profiler::{ProfileColumn, Profiler, SecondPass, profile_batches};
pub use window::{
    DriftScore, DriftStatus, JS_CRITICAL, JS_WARNING, PSI_CRITICAL, PSI_WARNING, WindowedCounts,
    add,
};

#[cfg(test)]
mod tests;
