//! Importing registries written by other feature stores into Quiver's `feature_store.yaml`.
//!
//! - [`feast`]: a Feast repository (`quiver import-feast`).

pub mod feast;
