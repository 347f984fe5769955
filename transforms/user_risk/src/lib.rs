//! The fraud example's on-demand features: how a requested order compares with the user's history.
//!
//! Inputs come from the `user` view (all optional) and the request (`amount`). Every output is
//! `None` when an input it needs is missing. Only IEEE-exact operations (+ − × ÷, min/max) are used,
//! so the wasm module and this native build give bit-identical results.

use quiver_sdk::{Deserialize, Serialize, transform};

/// One input row.
#[derive(Debug, Clone, Deserialize)]
pub struct Input {
    /// Average order value over the last 7 days (`user` view).
    pub avg_order_value_7d: Option<f32>,
    /// Number of orders in the last 30 days (`user` view).
    pub total_orders_30d: Option<i64>,
    /// Days since the account was created (`user` view).
    pub account_age_days: Option<i64>,
    /// The upstream fraud model's score in [0, 1] (`user` view).
    pub fraud_score: Option<f32>,
    /// The requested order's amount (request field).
    pub amount: f64,
}

/// One output row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    /// The requested amount spread over the user's recent orders plus this one.
    pub order_value_per_order: Option<f64>,
    /// The requested amount relative to the 7-day average order value.
    pub amount_over_avg: Option<f64>,
    /// A combined risk score in [0, 1].
    pub risk_score: Option<f64>,
}

/// Accounts younger than this many days count as new in the risk score.
const NEW_ACCOUNT_DAYS: f64 = 30.0;

/// Computes the user risk features of one request.
#[transform]
pub fn user_risk(row: Input) -> Output {
    let order_value_per_order = row
        .total_orders_30d
        .map(|n| row.amount / (n.max(0) as f64 + 1.0));
    let amount_over_avg = row
        .avg_order_value_7d
        .filter(|avg| *avg > 0.0)
        .map(|avg| row.amount / f64::from(avg));
    let risk_score = match (row.fraud_score, row.account_age_days, amount_over_avg) {
        (Some(fraud), Some(age), Some(ratio)) => {
            // How far above the usual order value, squashed into [0, 1).
            let excess = (ratio - 1.0).max(0.0);
            let spike = excess / (excess + 1.0);
            // 1 for a brand-new account, falling towards 0 as it ages.
            let newness = NEW_ACCOUNT_DAYS / (NEW_ACCOUNT_DAYS + age.max(0) as f64);
            let score = 0.5 * f64::from(fraud) + 0.3 * spike + 0.2 * newness;
            Some(score.clamp(0.0, 1.0))
        }
        _ => None,
    };
    Output {
        order_value_per_order,
        amount_over_avg,
        risk_score,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Input {
        Input {
            avg_order_value_7d: Some(50.0),
            total_orders_30d: Some(9),
            account_age_days: Some(30),
            fraud_score: Some(0.5),
            amount: 100.0,
        }
    }

    #[test]
    fn all_features_are_computed_when_every_input_is_present() {
        let out = user_risk(full());
        assert_eq!(out.order_value_per_order, Some(10.0));
        assert_eq!(out.amount_over_avg, Some(2.0));
        // 0.5 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5
        assert_eq!(out.risk_score, Some(0.5));
    }

    #[test]
    fn a_missing_average_makes_the_ratio_and_the_score_none() {
        let out = user_risk(Input {
            avg_order_value_7d: None,
            ..full()
        });
        assert_eq!(out.amount_over_avg, None);
        assert_eq!(out.risk_score, None);
        assert_eq!(out.order_value_per_order, Some(10.0));
    }

    #[test]
    fn a_zero_average_gives_no_ratio_rather_than_infinity() {
        let out = user_risk(Input {
            avg_order_value_7d: Some(0.0),
            ..full()
        });
        assert_eq!(out.amount_over_avg, None);
    }

    #[test]
    fn missing_view_features_give_all_none() {
        let out = user_risk(Input {
            avg_order_value_7d: None,
            total_orders_30d: None,
            account_age_days: None,
            fraud_score: None,
            amount: 12.5,
        });
        assert_eq!(
            out,
            Output {
                order_value_per_order: None,
                amount_over_avg: None,
                risk_score: None
            }
        );
    }

    #[test]
    fn the_risk_score_stays_within_zero_and_one() {
        let out = user_risk(Input {
            fraud_score: Some(1.0),
            account_age_days: Some(0),
            amount: 1e12,
            ..full()
        });
        let score = out.risk_score.unwrap();
        assert!((0.0..=1.0).contains(&score), "{score}");
    }
}
