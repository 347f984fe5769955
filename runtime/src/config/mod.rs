//! `feature_store.yaml`: the raw document as written ([`RawConfig`]) and loading it.
//!
//! Loading happens in two steps, as in spin and vector: serde reads the document strictly
//! (`deny_unknown_fields` everywhere), then [`compile`] checks names, types and references and turns
//! it into a [`crate::registry::Registry`]. Both steps collect every error they find, each with its
//! path in the document (`feature_views[2].schema[0].dtype: unknown type "flaot32"`).

mod compile;
pub mod duration;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use compile::compile;
pub(crate) use compile::resolve_feature_spec;
pub use duration::HumanDuration;

use crate::registry::Registry;

/// The whole `feature_store.yaml` document, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Project name; namespaces every online-store key.
    pub project: String,
    /// Where online features live; the embedded SQLite store when omitted.
    #[serde(default)]
    pub online_store: Option<OnlineStoreSpec>,
    /// Entities and their join keys.
    #[serde(default)]
    pub entities: Vec<RawEntity>,
    /// Feature views backed by Parquet sources.
    #[serde(default)]
    pub feature_views: Vec<RawFeatureView>,
    /// Views computed at request time by a Wasm transform.
    #[serde(default)]
    pub on_demand_feature_views: Vec<RawOnDemandView>,
    /// Named lists of features a model consumes.
    #[serde(default)]
    pub feature_services: Vec<RawFeatureService>,
    /// Named entry points for streaming writes (`POST /push`), each feeding one feature view.
    #[serde(default)]
    pub push_sources: Vec<RawPushSource>,
    /// How pushed rows are appended to the offline store.
    #[serde(default)]
    pub push: PushSettings,
    /// HTTP server settings.
    #[serde(default)]
    pub server: ServerSettings,
    /// In-process (L1) cache settings.
    #[serde(default)]
    pub cache: CacheSettings,
    /// Wasm transform settings.
    #[serde(default)]
    pub transforms: TransformSettings,
}

/// The `online_store` section, selected by its `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OnlineStoreSpec {
    /// The embedded, file-backed store (the default).
    Sqlite(SqliteOptions),
    /// Redis, standalone or Cluster.
    Redis(RedisOptions),
}

impl Default for OnlineStoreSpec {
    fn default() -> Self {
        OnlineStoreSpec::Sqlite(SqliteOptions::default())
    }
}

impl OnlineStoreSpec {
    /// How long a record outlives its view's ttl before the store drops it.
    pub fn key_ttl_slack(&self) -> HumanDuration {
        match self {
            OnlineStoreSpec::Sqlite(o) => o.key_ttl_slack,
            OnlineStoreSpec::Redis(o) => o.key_ttl_slack,
        }
    }
}

fn default_key_ttl_slack() -> HumanDuration {
    HumanDuration::parse("1h").unwrap()
}

/// Options of the embedded SQLite online store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteOptions {
    /// Database file, relative to the directory of `feature_store.yaml`.
    #[serde(default = "SqliteOptions::default_path")]
    pub path: PathBuf,
    /// How long a record outlives its view's ttl before it is dropped (so that lookups can still
    /// answer `OUTSIDE_MAX_AGE` for a while).
    #[serde(default = "default_key_ttl_slack")]
    pub key_ttl_slack: HumanDuration,
}

impl SqliteOptions {
    fn default_path() -> PathBuf {
        PathBuf::from("data/online_store.db")
    }
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            path: Self::default_path(),
            key_ttl_slack: default_key_ttl_slack(),
        }
    }
}

/// Standalone Redis or Redis Cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisType {
    /// A single Redis server (or a primary).
    #[default]
    Redis,
    /// A Redis Cluster; `connection_string` lists one or more seed nodes.
    RedisCluster,
}

/// Options of the Redis online store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]`, `rediss://...` (TLS), or Feast's
    /// `host:port[,host:port...][,password=...,ssl=true,db=N]`.
    pub connection_string: String,
    /// `redis` (default) or `redis_cluster`.
    #[serde(default)]
    pub redis_type: RedisType,
    /// Time allowed to establish a connection.
    #[serde(default = "RedisOptions::default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Time allowed for one command or pipeline round trip.
    #[serde(default = "RedisOptions::default_command_timeout")]
    pub command_timeout: HumanDuration,
    /// Number of multiplexed connections (per node in cluster mode) requests are spread over.
    #[serde(default = "RedisOptions::default_connections")]
    pub connections: usize,
    /// Records written per pipeline during materialization and pushes.
    #[serde(default = "RedisOptions::default_write_batch_size")]
    pub write_batch_size: usize,
    /// How long a key outlives its view's ttl before Redis expires it.
    #[serde(default = "default_key_ttl_slack")]
    pub key_ttl_slack: HumanDuration,
}

impl RedisOptions {
    fn default_connect_timeout() -> HumanDuration {
        HumanDuration::parse("1s").unwrap()
    }
    fn default_command_timeout() -> HumanDuration {
        HumanDuration::parse("500ms").unwrap()
    }
    fn default_connections() -> usize {
        2
    }
    fn default_write_batch_size() -> usize {
        1000
    }

    /// Options for `connection_string` with every other field at its default.
    pub fn with_connection_string(
        connection_string: impl Into<String>,
        redis_type: RedisType,
    ) -> Self {
        RedisOptions {
            connection_string: connection_string.into(),
            redis_type,
            connect_timeout: Self::default_connect_timeout(),
            command_timeout: Self::default_command_timeout(),
            connections: Self::default_connections(),
            write_batch_size: Self::default_write_batch_size(),
            key_ttl_slack: default_key_ttl_slack(),
        }
    }
}

/// An entity: a named set of join keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntity {
    /// Entity name, referenced by feature views.
    pub name: String,
    /// Join key column names; defaults to the entity name.
    #[serde(default)]
    pub join_keys: Vec<String>,
    /// Type of the join keys: `string`, `int64`, `int32` or `bytes`.
    #[serde(default = "RawEntity::default_value_type")]
    pub value_type: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

impl RawEntity {
    fn default_value_type() -> String {
        "string".into()
    }
}

/// A named, typed field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    /// Field name.
    pub name: String,
    /// Type: `int32`, `int64`, `float32`, `float64`, `string`, `bool`, `bytes`, `unix_timestamp`,
    /// or `list<T>` of any of them.
    pub dtype: String,
}

/// A feature view backed by a Parquet source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeatureView {
    /// View name.
    pub name: String,
    /// Entity names; their join keys (in order) form the view's entity key.
    pub entities: Vec<String>,
    /// The features of the view.
    pub schema: Vec<RawField>,
    /// Maximum age of a served value; `0` or omitted means values never expire.
    #[serde(default)]
    pub ttl: HumanDuration,
    /// Whether the view is materialized to and served from the online store.
    #[serde(default = "default_true")]
    pub online: bool,
    /// Where the view's rows come from.
    pub source: RawParquetSource,
    /// Per-view L1 cache ttl; overrides `cache.ttl`, `0` disables the L1 cache for this view.
    #[serde(default)]
    pub cache_ttl: Option<HumanDuration>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

fn default_true() -> bool {
    true
}

/// A Parquet source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParquetSource {
    /// A file, a directory (every `*.parquet` below it) or a glob, relative to `feature_store.yaml`.
    pub path: String,
    /// Column holding the event timestamp.
    #[serde(default = "RawParquetSource::default_timestamp_field")]
    pub timestamp_field: String,
    /// Optional column holding the created timestamp, used to break ties.
    #[serde(default)]
    pub created_timestamp_column: Option<String>,
}

impl RawParquetSource {
    fn default_timestamp_field() -> String {
        "event_timestamp".into()
    }
}

/// A view computed at request time by a Wasm transform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnDemandView {
    /// View name.
    pub name: String,
    /// Transform module name: `<transforms.dir>/<transform>.wasm`.
    pub transform: String,
    /// Feature views whose features are the transform's inputs.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Fields the client sends with the request (in `entities`).
    #[serde(default)]
    pub request_fields: Vec<RawField>,
    /// What the transform returns.
    pub schema: Vec<RawField>,
    /// Per-view fuel of one transform call whatever its rows.
    #[serde(default)]
    pub fuel_per_call: Option<u64>,
    /// Per-view fuel added per input row of a call.
    #[serde(default)]
    pub fuel_per_row: Option<u64>,
    /// Per-view wall-clock backstop on one transform call.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Per-view limit on the transform's linear memory, in MiB.
    #[serde(default)]
    pub max_memory_mib: Option<u32>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// A named list of features: `view` (all its features) or `view:feature`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeatureService {
    /// Service name.
    pub name: String,
    /// Feature references.
    pub features: Vec<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// A push source: a name clients push to, feeding one feature view.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPushSource {
    /// Push source name (`push_source_name` in requests).
    pub name: String,
    /// The feature view it feeds.
    pub feature_view: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// The `push` section: how rows pushed `to: offline` become Parquet files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushSettings {
    /// Rows buffered per view before a file is written.
    pub flush_rows: usize,
    /// Longest time a pushed row waits in the buffer; `0` writes a file per request before
    /// answering.
    pub flush_interval: HumanDuration,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            flush_rows: 10_000,
            flush_interval: HumanDuration::parse("5s").unwrap(),
        }
    }
}

/// The `server` section.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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

/// One problem in `feature_store.yaml`, with its path in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `feature_views[2].schema[0].dtype`, or empty for the document itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A new error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a configuration; displayed one per line.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// The file, when loaded from one.
    pub file: Option<PathBuf>,
    /// The problems, in document order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        match &self.file {
            Some(file) => writeln!(
                f,
                "{} has {n} error{}:",
                file.display(),
                if n == 1 { "" } else { "s" }
            )?,
            None => writeln!(
                f,
                "configuration has {n} error{}:",
                if n == 1 { "" } else { "s" }
            )?,
        }
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Reads, parses and compiles `feature_store.yaml`. Relative paths in it resolve against its directory.
pub fn load(path: &Path) -> Result<Registry, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: Some(path.to_path_buf()),
        errors: vec![ConfigError::new(
            "",
            format!("cannot read {}: {e}", path.display()),
        )],
    })?;
    let base_dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    load_str(&text, &base_dir).map_err(|mut e| {
        e.file = Some(path.to_path_buf());
        e
    })
}

/// Parses and compiles a configuration held in memory; relative paths resolve against `base_dir`.
pub fn load_str(text: &str, base_dir: &Path) -> Result<Registry, ConfigErrors> {
    let parsed = parse(text).map_err(|errors| ConfigErrors { file: None, errors })?;
    let mut errors = parsed.errors;
    match compile::compile_with(parsed.config, base_dir, &parsed.broken_names) {
        Ok(registry) if errors.is_empty() => Ok(registry),
        Ok(_) => Err(ConfigErrors { file: None, errors }),
        Err(more) => {
            errors.extend(more);
            Err(ConfigErrors { file: None, errors })
        }
    }
}

/// The result of a lenient parse: the items that parsed, the errors of those that did not, and
/// the names of the items that were dropped (so references to them are not reported twice).
#[derive(Debug)]
pub struct Parsed {
    /// Every section and item that parsed; failed sections fall back to their defaults.
    pub config: RawConfig,
    /// Structural errors (unknown fields, wrong types, bad durations), with paths.
    pub errors: Vec<ConfigError>,
    /// Names of list items that failed to parse.
    pub broken_names: HashSet<String>,
}

/// Parses the document strictly, section by section and item by item, so that one bad feature
/// view neither hides the errors of the next nor keeps the rest from being checked. Fails
/// outright only when the text is not a YAML mapping.
pub fn parse(text: &str) -> Result<Parsed, Vec<ConfigError>> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| vec![ConfigError::new("", format!("invalid YAML: {e}"))])?;
    let serde_yaml::Value::Mapping(mut map) = doc else {
        return Err(vec![ConfigError::new(
            "",
            "expected a mapping at the top level (project, online_store, entities, ...)",
        )]);
    };

    const LIST_SECTIONS: [&str; 5] = [
        "entities",
        "feature_views",
        "on_demand_feature_views",
        "feature_services",
        "push_sources",
    ];
    const OTHER_SECTIONS: [&str; 6] = [
        "project",
        "online_store",
        "server",
        "cache",
        "transforms",
        "push",
    ];
    let mut errors = Vec::new();
    let mut broken_names = HashSet::new();
    for key in map.keys().cloned().collect::<Vec<_>>() {
        let name = key.as_str().unwrap_or("?").to_string();
        if !OTHER_SECTIONS.contains(&name.as_str()) && !LIST_SECTIONS.contains(&name.as_str()) {
            errors.push(ConfigError::new(
                name,
                "unknown field; expected one of project, online_store, entities, feature_views, \
                 on_demand_feature_views, feature_services, push_sources, push, server, cache, transforms",
            ));
            map.remove(&key);
        }
    }
    for section in LIST_SECTIONS {
        let Some(serde_yaml::Value::Sequence(items)) = map.get_mut(section) else {
            continue;
        };
        let mut kept = Vec::with_capacity(items.len());
        for (i, item) in std::mem::take(items).into_iter().enumerate() {
            let result = match section {
                "entities" => check_item::<RawEntity>(&item),
                "feature_views" => check_item::<RawFeatureView>(&item),
                "on_demand_feature_views" => check_item::<RawOnDemandView>(&item),
                "push_sources" => check_item::<RawPushSource>(&item),
                _ => check_item::<RawFeatureService>(&item),
            };
            match result {
                Ok(()) => kept.push(item),
                Err((path, message)) => {
                    errors.push(ConfigError::new(
                        join_path(&format!("{section}[{i}]"), &path),
                        message,
                    ));
                    if let Some(name) = item.get("name").and_then(|n| n.as_str()) {
                        broken_names.insert(name.to_string());
                    }
                }
            }
        }
        *items = kept;
    }
    let sections: [(&str, SectionCheck); 5] = [
        ("push", check_item::<PushSettings>),
        ("online_store", check_item::<OnlineStoreSpec>),
        ("server", check_item::<ServerSettings>),
        ("cache", check_item::<CacheSettings>),
        ("transforms", check_item::<TransformSettings>),
    ];
    for (section, check) in sections {
        if let Some(value) = map.get(section)
            && let Err((path, message)) = check(value)
        {
            errors.push(ConfigError::new(join_path(section, &path), message));
            map.remove(section);
        }
    }
    if !map.contains_key("project") {
        // Reported by the compile step as an empty name.
        map.insert("project".into(), "".into());
    }
    let config = serde_path_to_error::deserialize::<_, RawConfig>(serde_yaml::Value::Mapping(map))
        .map_err(|e| {
            let path = e.path().to_string();
            let mut all = errors.clone();
            all.push(ConfigError::new(
                if path == "." { String::new() } else { path },
                clean_message(&e.into_inner().to_string()),
            ));
            all
        })?;
    Ok(Parsed {
        config,
        errors,
        broken_names,
    })
}
/// Checks one YAML value against a section's type; `Err((path, message))`.
type SectionCheck = fn(&serde_yaml::Value) -> Result<(), (String, String)>;

fn check_item<T: serde::de::DeserializeOwned>(
    value: &serde_yaml::Value,
) -> Result<(), (String, String)> {
    serde_path_to_error::deserialize::<_, T>(value.clone())
        .map(|_| ())
        .map_err(|e| {
            let path = e.path().to_string();
            (
                if path == "." { String::new() } else { path },
                clean_message(&e.into_inner().to_string()),
            )
        })
}

fn join_path(prefix: &str, path: &str) -> String {
    match path {
        "" => prefix.to_string(),
        p if p.starts_with('[') => format!("{prefix}{p}"),
        p => format!("{prefix}.{p}"),
    }
}

/// serde_yaml appends " at line L column C" positions that refer to a re-serialized value, not the
/// user's file; drop them, the path says where.
fn clean_message(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
