//! Quiver: a feature-serving runtime for machine learning.
//!
//! - [`config`] reads `feature_store.yaml` and compiles it into a [`registry::Registry`].
//! - [`settings`] holds the settings sections both of them share (server, cache, transforms, push).
//! - [`store`] holds the online stores (embedded SQLite, Redis, Redis Cluster) behind one trait,
//!   each backend owning its `online_store` options and registered by its `type`.
//! - [`storage`] is where offline data lives: local paths or object-store URLs (`s3://`), with
//!   ranged Parquet reads and whole-object writes.
//! - [`offline`] reads Parquet sources and materializes them into the online store.
//! - [`transform`] runs on-demand transforms: sandboxed WebAssembly modules, hot-reloaded.
//! - [`monitoring`] profiles training data (the reference for drift monitoring): histograms,
//!   the binning of served values, PSI and Jensen–Shannon scores.
//! - [`online`] is the lookup pipeline ("get online features"), free of any transport.
//! - [`import`] turns a Feast repository into a Quiver `feature_store.yaml` (`quiver import-feast`).
//! - [`scaffold`] writes new projects and transform crates (`quiver init`, `quiver new-transform`).
//! - [`serving`] is the HTTP API (`/get-online-features`, `/health`, `/ready`, ...), an adapter
//!   over [`online`] and the push path.

pub mod cache;
pub mod clock;
pub mod config;
pub mod entity_key;
pub mod import;
pub mod metered;
pub mod metrics;
pub mod monitoring;
pub mod offline;
pub mod online;
pub mod registry;
pub mod scaffold;
pub mod serving;
pub mod settings;
pub mod storage;
pub mod store;
pub mod transform;
pub mod types;
pub mod watch;
