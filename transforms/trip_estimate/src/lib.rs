//! The `trip_estimate` on-demand view of the Feast sample repository (`tests/feast_repo`), ported
//! from its pandas function:
//!
//! ```python
//! out["expected_conversions"] = inputs["conv_rate"] * inputs["distance_km"]
//! ```
//!
//! pandas multiplies a float32 column by a float64 column in float64, so the port widens
//! `conv_rate` first; the product is then bit-identical to Feast's. A missing `conv_rate` gives
//! `None` (Feast's NaN becomes null on the wire either way).

use quiver_sdk::{Deserialize, Serialize, transform};

/// One input row.
#[derive(Debug, Clone, Deserialize)]
pub struct Input {
    /// The driver's conversion rate (`driver_hourly_stats` view).
    pub conv_rate: Option<f32>,
    /// The requested trip's length (request field).
    pub distance_km: f64,
}

/// One output row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    /// Conversions expected over the trip.
    pub expected_conversions: Option<f64>,
}

/// Computes the trip estimate of one request.
#[transform]
pub fn trip_estimate(row: Input) -> Output {
    Output {
        expected_conversions: row.conv_rate.map(|rate| f64::from(rate) * row.distance_km),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_the_widened_rate_times_the_distance() {
        let out = trip_estimate(Input {
            conv_rate: Some(0.1),
            distance_km: 3.0,
        });
        assert_eq!(out.expected_conversions, Some(f64::from(0.1f32) * 3.0));
    }

    #[test]
    fn a_missing_rate_gives_no_estimate() {
        let out = trip_estimate(Input {
            conv_rate: None,
            distance_km: 3.0,
        });
        assert_eq!(out.expected_conversions, None);
    }
}
