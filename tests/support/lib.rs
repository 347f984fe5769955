//! Support for Quiver's integration tests: starting real `redis-server` and PostgreSQL processes,
//! building the Wasm fixtures, starting Quiver's server on a free loopback port, writing Parquet
//! fixtures.

pub mod browser;
pub mod feast;
pub mod fixtures;
pub mod logs;
pub mod postgres;
pub mod process;
pub mod prometheus_server;
pub mod prometheus_text;
pub mod python;
pub mod redis;
pub mod s3;
pub mod server;
pub mod training;
pub mod wasm;
