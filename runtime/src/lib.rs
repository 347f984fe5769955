//! Quiver: a feature-serving runtime for machine learning.
//!
//! - [`config`] reads `feature_store.yaml` and compiles it into a [`registry::Registry`].
//! - [`settings`] holds the settings sections both of them share (server, cache, transforms, push).
//! - [`store`] holds the online stores (embedded SQLite, Redis, Redis Cluster) behind one trait,
//!   each backend owning its `online_store` options and registered by its `type`.
//! - [`offline`] reads Parquet sources and materializes them into the online store.
//! - [`transform`] runs on-demand transforms: sandboxed WebAssembly modules, hot-reloaded.
//! - [`serving`] is the HTTP API (`/get-online-features`, `/health`, `/ready`, ...).

pub mod cache;
pub mod clock;
pub mod config;
pub mod entity_key;
pub mod metrics;
pub mod offline;
pub mod registry;
pub mod serving;
pub mod settings;
pub mod store;
pub mod transform;
pub mod types;
