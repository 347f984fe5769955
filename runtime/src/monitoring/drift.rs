//! Drift scores between a reference histogram (a [`FeatureProfile`](super::FeatureProfile)'s
//! counts) and the counts of served values binned the same way.
//!
//! Both scores compare *smoothed proportions*: with `N` the total count and `B` the number of
//! bins, bin `i` weighs `(c_i / N + ε) / (1 + B·ε)`, `ε` = [`SMOOTHING_EPSILON`] (`1e-4`). An empty
//! bin thus weighs about `1e-4` instead of 0, so PSI stays finite, and a side with no counts at all
//! (`N = 0`) is uniform.

/// The ε added to every bin's proportion before renormalizing.
pub const SMOOTHING_EPSILON: f64 = 1e-4;

/// The two count vectors do not describe the same bins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the reference has {reference} bins but the served counts have {serving}")]
pub struct BinMismatch {
    /// Bins of the reference counts.
    pub reference: usize,
    /// Bins of the served counts.
    pub serving: usize,
}

/// The smoothed proportions of `counts` (see the module documentation).
pub fn smoothed_proportions(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    let bins = counts.len() as f64;
    if total == 0 {
        return vec![1.0 / bins; counts.len()];
    }
    counts
        .iter()
        .map(|&c| (c as f64 / total as f64 + SMOOTHING_EPSILON) / (1.0 + bins * SMOOTHING_EPSILON))
        .collect()
}

fn check(reference: &[u64], serving: &[u64]) -> Result<(), BinMismatch> {
    if reference.len() == serving.len() {
        Ok(())
    } else {
        Err(BinMismatch {
            reference: reference.len(),
            serving: serving.len(),
        })
    }
}

/// The population stability index, `Σ (s_i − r_i) · ln(s_i / r_i)` over the smoothed
/// proportions `r` (reference) and `s` (served). 0 for identical distributions; by the usual rule
/// of thumb, under 0.1 is stable and over 0.25 a significant shift.
pub fn psi(reference: &[u64], serving: &[u64]) -> Result<f64, BinMismatch> {
    check(reference, serving)?;
    let r = smoothed_proportions(reference);
    let s = smoothed_proportions(serving);
    Ok(r.iter()
        .zip(&s)
        .map(|(&r, &s)| (s - r) * (s / r).ln())
        .sum())
}

/// The Jensen–Shannon distance in base 2, `sqrt(½ KL(r‖m) + ½ KL(s‖m))` with `m = (r + s) / 2`,
/// over the smoothed proportions: 0 for identical distributions, at most 1.
pub fn js_distance(reference: &[u64], serving: &[u64]) -> Result<f64, BinMismatch> {
    check(reference, serving)?;
    let r = smoothed_proportions(reference);
    let s = smoothed_proportions(serving);
    let divergence: f64 = r
        .iter()
        .zip(&s)
        .map(|(&r, &s)| {
            let m = (r + s) / 2.0;
            0.5 * r * (r / m).log2() + 0.5 * s * (s / m).log2()
        })
        .sum();
    Ok(divergence.clamp(0.0, 1.0).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn identical_histograms_score_zero() {
        assert_eq!(psi(&[5, 0, 3], &[10, 0, 6]).unwrap(), 0.0);
        assert_eq!(js_distance(&[5, 0, 3], &[10, 0, 6]).unwrap(), 0.0);
    }

    #[test]
    fn psi_matches_a_hand_computed_value() {
        // r = (0.5 + ε, 0.5 + ε) / (1 + 2ε), s = (0.2 + ε, 0.8 + ε) / (1 + 2ε).
        let e = SMOOTHING_EPSILON;
        let d = 1.0 + 2.0 * e;
        let (r1, r2) = ((0.5 + e) / d, (0.5 + e) / d);
        let (s1, s2) = ((0.2 + e) / d, (0.8 + e) / d);
        let expected = (s1 - r1) * (s1 / r1).ln() + (s2 - r2) * (s2 / r2).ln();
        close(psi(&[50, 50], &[20, 80]).unwrap(), expected);
        // Unsmoothed: 0.3·ln(1.6) − 0.3·ln(0.4) ≈ 0.4159; the smoothing moves it by about 1e-4.
        let unsmoothed = 0.3 * (0.8f64 / 0.5).ln() - 0.3 * (0.2f64 / 0.5).ln();
        assert!((psi(&[50, 50], &[20, 80]).unwrap() - unsmoothed).abs() < 1e-3);
    }

    #[test]
    fn an_empty_bin_gives_a_finite_psi_from_the_smoothing() {
        // r = (1, 0), s = (0, 1) before smoothing; both terms are (hi − lo)·ln(hi / lo).
        let e = SMOOTHING_EPSILON;
        let d = 1.0 + 2.0 * e;
        let (hi, lo) = ((1.0 + e) / d, e / d);
        let expected = 2.0 * (hi - lo) * (hi / lo).ln();
        let got = psi(&[7, 0], &[0, 3]).unwrap();
        close(got, expected);
        assert!(got.is_finite() && got > 18.0, "{got}");
    }

    #[test]
    fn js_distance_of_disjoint_histograms_is_almost_one() {
        let e = SMOOTHING_EPSILON;
        let d = 1.0 + 2.0 * e;
        let (hi, lo) = ((1.0 + e) / d, e / d);
        let m = (hi + lo) / 2.0;
        let expected = (hi * (hi / m).log2() + lo * (lo / m).log2()).sqrt();
        let got = js_distance(&[4, 0], &[0, 9]).unwrap();
        close(got, expected);
        assert!(got > 0.99 && got <= 1.0, "{got}");
    }

    #[test]
    fn js_distance_matches_a_hand_computed_value() {
        // r = (0.25, 0.75), s = (0.75, 0.25) before smoothing; m = (0.5, 0.5).
        let e = SMOOTHING_EPSILON;
        let d = 1.0 + 2.0 * e;
        let (a, b) = ((0.25 + e) / d, (0.75 + e) / d);
        let m = (a + b) / 2.0;
        let kl = a * (a / m).log2() + b * (b / m).log2();
        close(js_distance(&[1, 3], &[3, 1]).unwrap(), kl.sqrt());
        // ≈ sqrt(1 − H(0.25)) = sqrt(1 − 0.811278) ≈ 0.4344.
        assert!((js_distance(&[1, 3], &[3, 1]).unwrap() - 0.4344).abs() < 1e-3);
    }

    #[test]
    fn all_null_features_on_both_sides_show_no_drift() {
        // Everything in the last (null) bin on both sides, different totals.
        assert_eq!(psi(&[0, 0, 0, 12], &[0, 0, 0, 5]).unwrap(), 0.0);
        assert_eq!(js_distance(&[0, 0, 0, 12], &[0, 0, 0, 5]).unwrap(), 0.0);
    }

    #[test]
    fn a_side_without_counts_is_uniform() {
        let expected = psi(&[1, 1, 1], &[0, 0, 0]).unwrap();
        assert_eq!(expected, 0.0);
        assert!(psi(&[3, 0, 0], &[0, 0, 0]).unwrap() > 0.0);
    }

    #[test]
    fn histograms_of_different_lengths_are_refused() {
        assert_eq!(
            psi(&[1, 2], &[1, 2, 3]).unwrap_err().to_string(),
            "the reference has 2 bins but the served counts have 3"
        );
        assert!(js_distance(&[1], &[]).is_err());
    }
}
