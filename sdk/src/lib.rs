//! Write Quiver on-demand transforms in Rust.
//!
//! A transform is a plain function from one input row to one output row, marked with
//! [`transform`]:
//!
//! ```
//! use quiver_sdk::{transform, Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Input {
//!     total_orders_30d: Option<i64>,
//!     account_age_days: Option<i64>,
//! }
//!
//! #[derive(Serialize)]
//! struct Output {
//!     orders_per_day: Option<f64>,
//! }
//!
//! #[transform]
//! fn order_rate(row: Input) -> Output {
//!     let orders_per_day = match (row.total_orders_30d, row.account_age_days) {
//!         (Some(n), Some(age)) => Some(n as f64 / age.max(1) as f64),
//!         _ => None,
//!     };
//!     Output { orders_per_day }
//! }
//!
//! let out = order_rate(Input { total_orders_30d: Some(6), account_age_days: Some(3) });
//! assert_eq!(out.orders_per_day, Some(2.0));
//! ```
//!
//! Built for `wasm32-unknown-unknown`, the attribute also generates the module's exports (see
//! `docs/wasm-abi.md`); natively the function is just a function, so it can be unit-tested.
//! Inputs that the feature store does not have arrive as `None`: declare them as `Option<T>`.

pub use quiver_sdk_macros::transform;
pub use serde::{Deserialize, Serialize};

/// The serde crate the SDK is built with (for `#[serde(crate = "quiver_sdk::serde")]`).
pub use serde;

#[doc(hidden)]
pub mod __abi;
