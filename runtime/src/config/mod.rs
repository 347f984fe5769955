//! `feature_store.yaml`: the raw document as written ([`RawConfig`]) and loading it.
//!
//! Loading happens in two steps, as in spin and vector: serde reads the document strictly
//! (`deny_unknown_fields` everywhere), then [`compile`] checks names, types and references and turns
//! it into a [`crate::registry::Registry`]. Both steps collect every error they find, each with its
//! path in the document (`feature_views[2].schema[0].dtype: unknown type "flaot32"`).

mod compile;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use compile::compile;

use crate::registry::Registry;
use crate::settings::{
    CacheSettings, HumanDuration, MonitoringSettings, OfflineStoreSettings, PushSettings,
    ServerSettings, TransformSettings,
};
use crate::store::OnlineStoreSpec;

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
    /// How offline data in object storage (`s3://` URLs) is reached.
    #[serde(default)]
    pub offline_store: OfflineStoreSettings,
    /// HTTP server settings.
    #[serde(default)]
    pub server: ServerSettings,
    /// In-process (L1) cache settings.
    #[serde(default)]
    pub cache: CacheSettings,
    /// Wasm transform settings.
    #[serde(default)]
    pub transforms: TransformSettings,
    /// Drift monitoring of served values against training profiles; off when omitted.
    #[serde(default)]
    pub monitoring: Option<MonitoringSettings>,
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
    /// Logging of served rows (off when absent).
    #[serde(default)]
    pub logging: Option<crate::settings::FeatureLogSettings>,
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
    load_with_digest(path).map(|(registry, _)| registry)
}

/// [`load`], also returning the xxh3-64 hash of the bytes compiled, so that a server watching
/// the file knows which version it serves.
pub fn load_with_digest(path: &Path) -> Result<(Registry, u64), ConfigErrors> {
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
    let digest = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
    load_str(&text, &base_dir)
        .map(|registry| (registry, digest))
        .map_err(|mut e| {
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
    check_nesting(text).map_err(|e| vec![e])?;
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
    const OTHER_SECTIONS: [&str; 8] = [
        "project",
        "online_store",
        "offline_store",
        "server",
        "cache",
        "transforms",
        "push",
        "monitoring",
    ];
    let mut errors = Vec::new();
    let mut broken_names = HashSet::new();
    for key in map.keys().cloned().collect::<Vec<_>>() {
        let name = key.as_str().unwrap_or("?").to_string();
        if !OTHER_SECTIONS.contains(&name.as_str()) && !LIST_SECTIONS.contains(&name.as_str()) {
            errors.push(ConfigError::new(
                name,
                "unknown field; expected one of project, online_store, entities, feature_views, \
                 on_demand_feature_views, feature_services, push_sources, push, offline_store, server, \
                 cache, transforms, monitoring",
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
    let sections: [(&str, SectionCheck); 7] = [
        ("push", check_item::<PushSettings>),
        ("offline_store", check_item::<OfflineStoreSettings>),
        ("online_store", check_online_store),
        ("server", check_item::<ServerSettings>),
        ("cache", check_item::<CacheSettings>),
        ("transforms", check_item::<TransformSettings>),
        ("monitoring", check_item::<MonitoringSettings>),
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

/// Deepest nesting of flow collections (`[...]`, `{...}`) accepted; no valid configuration comes
/// close.
const MAX_FLOW_DEPTH: usize = 64;

/// Rejects documents nested deeper than [`MAX_FLOW_DEPTH`] in one linear pass, before the YAML
/// parser sees them: its work grows with the square of the depth, so a 400 KB file of brackets
/// would otherwise take minutes to be refused.
fn check_nesting(text: &str) -> Result<(), ConfigError> {
    for (n, line) in text.lines().enumerate() {
        let mut depth = 0usize;
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        let mut escaped = false;
        for c in line.chars() {
            match quote {
                Some('"') if escaped => escaped = false,
                Some('"') if c == '\\' => escaped = true,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '"' | '\'' => quote = Some(c),
                    '#' if previous.is_whitespace() => break,
                    '[' | '{' => {
                        depth += 1;
                        if depth > MAX_FLOW_DEPTH {
                            return Err(ConfigError::new(
                                "",
                                format!(
                                    "line {}: collections nested deeper than {MAX_FLOW_DEPTH} levels",
                                    n + 1
                                ),
                            ));
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                },
            }
            previous = c;
        }
    }
    Ok(())
}

/// Checks one YAML value against a section's type; `Err((path, message))`.
type SectionCheck = fn(&serde_yaml::Value) -> Result<(), (String, String)>;

/// Checks the `online_store` section against the backend its `type` names.
fn check_online_store(value: &serde_yaml::Value) -> Result<(), (String, String)> {
    OnlineStoreSpec::from_yaml(value)
        .map(|_| ())
        .map_err(|e| (e.path, clean_message(&e.message)))
}

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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::store::redis::{RedisOptions, RedisType};
    use crate::store::sqlite::SqliteOptions;

    /// The errors of a document `project: p` plus `online_store`, one per line.
    fn online_store_errors(section: &str) -> String {
        let text = format!("project: p\nonline_store: {section}\n");
        match super::load_str(&text, Path::new("/base")) {
            Ok(_) => "(valid)".into(),
            Err(e) => e
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    #[test]
    fn the_online_store_type_selects_a_registered_backend() {
        assert_eq!(
            online_store_errors("{type: dynamodb}"),
            "online_store.type: unknown variant `dynamodb`, expected one of `sqlite`, `redis`, `postgres`"
        );
        assert_eq!(
            online_store_errors("{path: x}"),
            "online_store: missing field `type`"
        );
        assert_eq!(
            online_store_errors("sqlite"),
            "online_store: expected a mapping whose `type` is one of `sqlite`, `redis`, `postgres`"
        );
    }

    #[test]
    fn backend_options_are_strict_and_errors_name_the_field() {
        assert_eq!(
            online_store_errors("{type: sqlite, pth: x}"),
            "online_store.pth: unknown field `pth`, expected `path` or `key_ttl_slack`"
        );
        assert_eq!(
            online_store_errors("{type: redis}"),
            "online_store: missing field `connection_string`"
        );
        assert_eq!(
            online_store_errors("{type: redis, connection_string: x, command_timeout: soon}"),
            "online_store.command_timeout: invalid duration \"soon\": expected a number before the unit"
        );
        assert_eq!(
            online_store_errors("{type: redis, connection_string: x, redis_type: sentinel}"),
            "online_store.redis_type: unknown variant `sentinel`, expected one of `redis`, `redis_cluster`, `redis_sentinel`"
        );
    }

    #[test]
    fn backend_checks_run_at_compile_time_with_paths() {
        assert_eq!(
            online_store_errors("{type: sqlite, path: \"\"}"),
            "online_store.path: must not be empty"
        );
        assert_eq!(
            online_store_errors(
                "{type: redis, connection_string: x, command_timeout: 0, write_batch_size: 0}"
            ),
            "online_store.write_batch_size: must be at least 1\n\
             online_store.command_timeout: must be at least 1ms"
        );
    }

    #[test]
    fn the_sqlite_path_resolves_against_the_config_directory() {
        let registry = super::load_str(
            "project: p\nonline_store: {type: sqlite, path: db/online.db, key_ttl_slack: 2h}\n",
            Path::new("/base"),
        )
        .unwrap();
        let options = registry.online_store.options::<SqliteOptions>().unwrap();
        assert_eq!(options.path, Path::new("/base/db/online.db"));
        assert_eq!(registry.online_store.key_ttl_slack().to_string(), "2h");
        assert_eq!(registry.online_store.kind(), "sqlite");
    }

    #[test]
    fn redis_options_keep_feast_defaults_and_label_cluster_mode() {
        let registry = super::load_str(
            "project: p\nonline_store:\n  type: redis\n  connection_string: \"a:6379,b:6379\"\n  \
             redis_type: redis_cluster\n",
            Path::new("/base"),
        )
        .unwrap();
        let options = registry.online_store.options::<RedisOptions>().unwrap();
        assert_eq!(options.redis_type, RedisType::RedisCluster);
        assert_eq!(options.connections, 2);
        assert_eq!(options.command_timeout.to_string(), "500ms");
        assert_eq!(registry.online_store.type_name(), "redis");
        assert_eq!(registry.online_store.kind(), "redis_cluster");
        assert!(registry.online_store.options::<SqliteOptions>().is_none());
    }
}

#[cfg(test)]
mod nesting_tests {
    use super::*;

    #[test]
    fn a_deeply_nested_document_is_refused_at_once() {
        let depth = 200_000;
        let text = format!(
            "project: p\nentities: {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        // Refused by the linear pre-check (the YAML parser's own refusal, "recursion limit
        // exceeded", came after work growing with the square of the depth).
        let errors = parse(&text).unwrap_err();
        assert!(
            errors[0].message.contains("nested deeper than 64"),
            "{errors:?}"
        );
    }

    #[test]
    fn brackets_in_quotes_and_comments_do_not_count() {
        let deep = "[".repeat(100);
        let text = format!(
            "project: p # {deep}\nentities:\n  - name: \"{deep}\"\n    description: '{deep}'\n"
        );
        assert!(check_nesting(&text).is_ok());
    }
}
