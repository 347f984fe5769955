//! Order-rate features computed from the `user` view alone (no request fields).

use quiver_sdk::{Deserialize, Serialize, transform};

/// One input row.
#[derive(Debug, Clone, Deserialize)]
pub struct Input {
    /// Number of orders in the last 30 days.
    pub total_orders_30d: Option<i64>,
    /// Days since the account was created.
    pub account_age_days: Option<i64>,
}

/// One output row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    /// Orders per day of account life, over the last 30 days (or the account's life if shorter).
    pub orders_per_account_day: Option<f64>,
    /// Whether the account is younger than 30 days.
    pub is_new_account: Option<bool>,
}

/// Accounts younger than this many days are new.
const NEW_ACCOUNT_DAYS: i64 = 30;

/// Computes the order-rate features of one user.
#[transform]
pub fn order_stats(row: Input) -> Output {
    let orders_per_account_day = match (row.total_orders_30d, row.account_age_days) {
        (Some(orders), Some(age)) => {
            let days = age.clamp(1, NEW_ACCOUNT_DAYS);
            Some(orders.max(0) as f64 / days as f64)
        }
        _ => None,
    };
    Output {
        orders_per_account_day,
        is_new_account: row.account_age_days.map(|age| age < NEW_ACCOUNT_DAYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_account_spreads_its_orders_over_thirty_days() {
        let out = order_stats(Input {
            total_orders_30d: Some(60),
            account_age_days: Some(400),
        });
        assert_eq!(out.orders_per_account_day, Some(2.0));
        assert_eq!(out.is_new_account, Some(false));
    }

    #[test]
    fn a_new_account_spreads_its_orders_over_its_life() {
        let out = order_stats(Input {
            total_orders_30d: Some(10),
            account_age_days: Some(5),
        });
        assert_eq!(out.orders_per_account_day, Some(2.0));
        assert_eq!(out.is_new_account, Some(true));
    }

    #[test]
    fn a_zero_day_old_account_does_not_divide_by_zero() {
        let out = order_stats(Input {
            total_orders_30d: Some(3),
            account_age_days: Some(0),
        });
        assert_eq!(out.orders_per_account_day, Some(3.0));
    }

    #[test]
    fn missing_inputs_give_none() {
        let out = order_stats(Input {
            total_orders_30d: None,
            account_age_days: None,
        });
        assert_eq!(
            out,
            Output {
                orders_per_account_day: None,
                is_new_account: None
            }
        );
        let out = order_stats(Input {
            total_orders_30d: None,
            account_age_days: Some(3),
        });
        assert_eq!(out.orders_per_account_day, None);
        assert_eq!(out.is_new_account, Some(true));
    }
}
