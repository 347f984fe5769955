//! Quiver's load suite: real Redis and PostgreSQL, real HTTP, and the physical floors (a minimal
//! HTTP handler, raw Redis reads) measured in the same run. See `docs/benchmarks.md`.

pub mod client;
pub mod cpu;
pub mod driver;
pub mod env;
pub mod keys;
pub mod ops;
pub mod report;
