//! The settings sections of `feature_store.yaml` (`server`, `cache`, `transforms`, `push`,
//! `monitoring`) and
//! [`HumanDuration`], which every section uses.
//!
//! They sit below both the raw YAML document (the `config` module) and the compiled
//! [`crate::registry::Registry`], which holds them as written (with paths resolved), so the
//! registry never depends on the YAML layer.

pub mod duration;
pub mod offline;

use std::path::PathBuf;

use serde::Deserialize;

pub use duration::HumanDuration;
pub use offline::{OfflineStoreSettings, S3Settings};

/// The `push` section: how rows pushed `to: offline` become Parquet files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushSettings {
    /// Rows buffered per view before a file is written.
    pub flush_rows: usize,
    /// Longest time a pushed row waits in the buffer; `0` writes a file per request before
    /// answering.
    pub flush_interval: HumanDuration,
    /// Whether an offline push is answered only once its rows are on disk.
    pub durability: PushDurability,
    /// Where write-ahead logs live, one subdirectory per view (relative to `feature_store.yaml`);
    /// default: `<view source>/pushed/.wal`.
    pub wal_dir: Option<PathBuf>,
    /// Event timestamps later than now plus this are rejected.
    pub max_future_skew: HumanDuration,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            flush_rows: 10_000,
            flush_interval: HumanDuration::parse("5s").unwrap(),
            durability: PushDurability::Durable,
            wal_dir: None,
            max_future_skew: HumanDuration::parse("1d").unwrap(),
        }
    }
}

/// `push.durability`: what an acknowledged offline push guarantees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushDurability {
    /// Rows are fsynced to a write-ahead log (or a Parquet file) before the answer.
    #[default]
    Durable,
    /// Rows are only buffered in memory before the answer; a crash loses them.
    Buffered,
}

/// The `server` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address `quiver serve` binds to.
    pub bind: String,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest number of entity rows in one request.
    pub max_entities: usize,
    /// Environment variable holding the bearer token that write endpoints (`/push`,
    /// `/write-to-online-store`) require; when it is unset or empty, writes are open.
    pub write_token_env: String,
    /// Require the token on read endpoints too.
    pub protect_reads: bool,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time allowed for a request's headers once its first byte arrived.
    pub header_read_timeout: HumanDuration,
    /// Time allowed for a request's whole body to arrive (408 after it).
    pub body_read_timeout: HumanDuration,
    /// Time a keep-alive connection may wait for its next request before it is closed.
    pub idle_timeout: HumanDuration,
    /// Time allowed to answer one request (503 `REQUEST_TIMEOUT` after it).
    pub request_timeout: HumanDuration,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT; then connections are closed.
    pub shutdown_timeout: HumanDuration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            bind: "127.0.0.1:6566".into(),
            max_body_bytes: 4 * 1024 * 1024,
            max_entities: 10_000,
            write_token_env: "QUIVER_WRITE_TOKEN".into(),
            protect_reads: false,
            max_connections: 10_000,
            header_read_timeout: HumanDuration::parse("10s").unwrap(),
            body_read_timeout: HumanDuration::parse("10s").unwrap(),
            idle_timeout: HumanDuration::parse("60s").unwrap(),
            request_timeout: HumanDuration::parse("30s").unwrap(),
            shutdown_timeout: HumanDuration::parse("10s").unwrap(),
        }
    }
}

/// The `cache` section: the in-process L1 cache in front of the online store.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Whether the L1 cache is used at all.
    pub enabled: bool,
    /// How long a cached row may be served; per-view `cache_ttl` overrides it; `0` disables.
    pub ttl: HumanDuration,
    /// How long a NOT_FOUND answer is cached.
    pub negative_ttl: HumanDuration,
    /// Capacity in MiB (weighed by approximate row size).
    pub max_size_mib: u64,
    /// When the online store is unreachable, serve cached rows up to this much past their L1 ttl;
    /// `0` (the default) disables stale-if-error.
    pub max_stale: HumanDuration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: true,
            ttl: HumanDuration::parse("5s").unwrap(),
            negative_ttl: HumanDuration::parse("1s").unwrap(),
            max_size_mib: 256,
            max_stale: HumanDuration::default(),
        }
    }
}

/// The `transforms` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformSettings {
    /// Directory watched for `<name>.wasm` modules, relative to `feature_store.yaml`.
    pub dir: PathBuf,
    /// Default fuel (instructions) of one call whatever its rows.
    pub fuel_per_call: u64,
    /// Default fuel added per input row: a call of `n` rows gets `fuel_per_call + fuel_per_row × n`.
    pub fuel_per_row: u64,
    /// Default wall-clock backstop on one transform call (fuel decides pass or fail).
    pub timeout: HumanDuration,
    /// Default limit on a transform's linear memory, in MiB.
    pub max_memory_mib: u32,
    /// Module files larger than this are rejected without compiling.
    pub max_module_bytes: u64,
    /// Modules defining more functions than this are rejected without compiling.
    pub max_functions: u32,
    /// Longest a module may take to compile and pass its trial call before it is rejected.
    pub load_timeout: HumanDuration,
}

impl Default for TransformSettings {
    fn default() -> Self {
        TransformSettings {
            dir: PathBuf::from("transforms/wasm"),
            fuel_per_call: crate::transform::DEFAULT_FUEL_PER_CALL,
            fuel_per_row: crate::transform::DEFAULT_FUEL_PER_ROW,
            timeout: HumanDuration(crate::transform::DEFAULT_TIMEOUT),
            max_memory_mib: 64,
            max_module_bytes: crate::transform::DEFAULT_MAX_MODULE_BYTES,
            max_functions: crate::transform::DEFAULT_MAX_FUNCTIONS,
            load_timeout: HumanDuration(crate::transform::DEFAULT_LOAD_TIMEOUT),
        }
    }
}

/// A feature service's `logging` section: which of its served rows are written, where, and how
/// they are batched into files (see `docs/feature-logging.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureLogSettings {
    /// Directory the Parquet files go to (relative to `feature_store.yaml`), under
    /// `feature_service=<name>/date=YYYY-MM-DD/`.
    pub destination: PathBuf,
    /// Fraction of entities whose rows are logged (greater than 0, at most 1), decided by a hash
    /// of the entity key so that a sampled entity is logged in every lookup.
    #[serde(default = "FeatureLogSettings::default_sample_rate")]
    pub sample_rate: f64,
    /// Rows waiting to be written beyond which sampled rows are dropped (and counted).
    #[serde(default = "FeatureLogSettings::default_queue_rows")]
    pub queue_rows: usize,
    /// A file is written once this many rows of the service wait.
    #[serde(default = "FeatureLogSettings::default_roll_rows")]
    pub roll_rows: usize,
    /// A file is written once its oldest row has waited this long.
    #[serde(default = "FeatureLogSettings::default_roll_interval")]
    pub roll_interval: HumanDuration,
}

impl FeatureLogSettings {
    fn default_sample_rate() -> f64 {
        0.01
    }
    fn default_queue_rows() -> usize {
        100_000
    }
    fn default_roll_rows() -> usize {
        100_000
    }
    fn default_roll_interval() -> HumanDuration {
        HumanDuration::parse("1m").unwrap()
    }
}

/// The `monitoring` section: which served features are compared with a training profile, how
/// many lookups are sampled and over which sliding window (see `docs/monitoring.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringSettings {
    /// Fraction of lookups whose served values are binned (greater than 0, at most 1).
    pub sample_rate: f64,
    /// Length of the sliding window the scores are computed over.
    pub window: HumanDuration,
    /// Sub-windows the window is kept as; the oldest is dropped whole as time moves on.
    pub sub_windows: usize,
    /// Values of a feature in the window below which its scores are not computed.
    pub min_samples: u64,
    /// The reference profiles, one per feature view or feature service.
    pub references: Vec<MonitoringReference>,
}

impl Default for MonitoringSettings {
    fn default() -> Self {
        MonitoringSettings {
            sample_rate: 0.1,
            window: HumanDuration::parse("1h").unwrap(),
            sub_windows: 12,
            min_samples: 100,
            references: Vec::new(),
        }
    }
}

/// One entry of `monitoring.references`: a feature view (or feature service) and the profile its
/// served values are compared with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringReference {
    /// A feature view or on-demand view whose features the profile covers.
    #[serde(default)]
    pub feature_view: Option<String>,
    /// A feature service whose features the profile covers (instead of `feature_view`).
    #[serde(default)]
    pub feature_service: Option<String>,
    /// A training set written by `quiver historical` (its `quiver.profile` metadata) or a profile
    /// `.json`, relative to `feature_store.yaml`.
    pub profile: PathBuf,
}
