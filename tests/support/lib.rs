//! Support for Quiver's integration tests: starting real `redis-server` processes, building the
//! Wasm fixtures, starting Quiver's server on a free loopback port.

pub mod wasm;
