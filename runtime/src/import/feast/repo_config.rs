//! A Feast repository's `feature_store.yaml`, read as Feast reads it.
//!
//! Feast expands environment variables in the whole file before parsing it
//! (`os.path.expandvars`: `$NAME` and `${NAME}` are replaced when `NAME` is set and left as they
//! are otherwise), so the import does the same. Only the keys the import uses are interpreted;
//! the rest are listed by name so the report can say they were not carried over.

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::ImportError;

/// The parts of a Feast `feature_store.yaml` the import reads.
#[derive(Debug, Clone, PartialEq)]
pub struct FeastConfig {
    /// `project`.
    pub project: String,
    /// `provider` (`local` when absent).
    pub provider: String,
    /// Where the file registry lives: `registry` (a path, or a mapping with `path`), resolved
    /// against the repository directory.
    pub registry: PathBuf,
    /// `online_store`, with Feast's default (`sqlite`) when absent.
    pub online_store: FeastOnlineStore,
    /// `offline_store.type` (`file` when absent).
    pub offline_store: String,
    /// `entity_key_serialization_version` (Feast 0.67's default, 3, when absent).
    pub entity_key_serialization_version: i64,
    /// Top-level keys with no Quiver equivalent that are set (`auth`, `feature_server`, ...).
    pub other_keys: Vec<String>,
}

/// Feast's `online_store` section.
#[derive(Debug, Clone, PartialEq)]
pub enum FeastOnlineStore {
    /// `type: redis`.
    Redis {
        /// `connection_string` (Feast's default `localhost:6379` when absent).
        connection_string: String,
        /// `redis_type`: `redis`, `redis_cluster` or `redis_sentinel`.
        redis_type: String,
        /// `sentinel_master`, when set.
        sentinel_master: Option<String>,
        /// `key_ttl_seconds`, when set.
        key_ttl_seconds: Option<u64>,
        /// Options that are set and have no Quiver equivalent.
        other_options: Vec<String>,
    },
    /// `type: sqlite` (Feast's default store).
    Sqlite {
        /// Feast's database file (`data/online.db` by default).
        path: String,
    },
    /// Any other store type.
    Other {
        /// Its `type`.
        store_type: String,
    },
}

/// Replaces `$NAME` and `${NAME}` by the value `lookup` gives for `NAME`, leaving references to
/// unset names as written, as Python's `os.path.expandvars` does.
pub fn expand_env_vars(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, written_len) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match (written_len, lookup(name)) {
            (n, Some(value)) if n > 0 && !name.is_empty() => {
                out.push_str(&value);
                rest = &after[n..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Reads the Feast `feature_store.yaml` text of the repository at `repo_dir`.
pub fn parse(
    text: &str,
    file: &Path,
    repo_dir: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<FeastConfig, ImportError> {
    let invalid = |message: String| ImportError::InvalidFeastConfig {
        path: file.to_path_buf(),
        message,
    };
    let expanded = expand_env_vars(text, lookup);
    let doc: Value = serde_yaml::from_str(&expanded).map_err(|e| invalid(e.to_string()))?;
    let Value::Mapping(doc) = doc else {
        return Err(invalid("the document is not a mapping".into()));
    };
    let project = string_at(&doc, "project")
        .ok_or_else(|| invalid("`project` is missing or not a string".into()))?;
    let registry = registry_path(&doc, file, repo_dir)?;
    let online_store = online_store(doc.get("online_store"));
    let offline_store = match doc.get("offline_store") {
        None | Some(Value::Null) => "file".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Mapping(m)) => string_at(m, "type").unwrap_or_else(|| "file".into()),
        Some(_) => return Err(invalid("`offline_store` is not a mapping".into())),
    };
    let entity_key_serialization_version = match doc.get("entity_key_serialization_version") {
        None | Some(Value::Null) => 3,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(3),
        Some(other) => {
            return Err(invalid(format!(
                "`entity_key_serialization_version` is not an integer: {}",
                render(other)
            )));
        }
    };
    const READ: &[&str] = &[
        "project",
        "provider",
        "registry",
        "online_store",
        "offline_store",
        "entity_key_serialization_version",
    ];
    let other_keys = doc
        .iter()
        .filter_map(|(k, v)| k.as_str().map(|k| (k, v)))
        .filter(|(k, v)| !READ.contains(k) && !v.is_null())
        .map(|(k, _)| k.to_string())
        .collect();
    Ok(FeastConfig {
        project,
        provider: string_at(&doc, "provider").unwrap_or_else(|| "local".into()),
        registry,
        online_store,
        offline_store,
        entity_key_serialization_version,
        other_keys,
    })
}

fn string_at(map: &Mapping, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn render(value: &Value) -> String {
    serde_yaml::to_string(value)
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// The local file the registry is in, or an error saying what to do for registries that are not
/// a local file.
fn registry_path(doc: &Mapping, file: &Path, repo_dir: &Path) -> Result<PathBuf, ImportError> {
    let remote = |location: String, advice: &str| ImportError::RemoteRegistry {
        location,
        advice: advice.to_string(),
    };
    let path = match doc.get("registry") {
        None | Some(Value::Null) => "data/registry.db".to_string(),
        Some(Value::String(path)) => path.clone(),
        Some(Value::Mapping(m)) => {
            let registry_type = string_at(m, "registry_type").unwrap_or_else(|| "file".into());
            let path = string_at(m, "path").unwrap_or_default();
            if registry_type != "file" {
                return Err(remote(
                    format!("registry_type: {registry_type} ({path})"),
                    "point a copy of the repository's feature_store.yaml at a local file \
                     registry (`registry: data/registry.db`), run `feast apply` with it, and \
                     import that copy",
                ));
            }
            if path.is_empty() {
                return Err(ImportError::InvalidFeastConfig {
                    path: file.to_path_buf(),
                    message: "`registry.path` is missing".into(),
                });
            }
            path
        }
        Some(other) => {
            return Err(ImportError::InvalidFeastConfig {
                path: file.to_path_buf(),
                message: format!(
                    "`registry` is neither a path nor a mapping: {}",
                    render(other)
                ),
            });
        }
    };
    if let Some(local) = path.strip_prefix("file://") {
        return Ok(repo_dir.join(local));
    }
    if let Some((scheme, _)) = path.split_once("://") {
        let advice = match scheme {
            "s3" => "download it (`aws s3 cp <path> registry.db`) and set `registry:` to the copy",
            "gs" => {
                "download it (`gcloud storage cp <path> registry.db`) and set `registry:` to the copy"
            }
            _ => "copy it to a local file and set `registry:` to the copy",
        };
        return Err(remote(path.clone(), advice));
    }
    Ok(repo_dir.join(path))
}

fn online_store(value: Option<&Value>) -> FeastOnlineStore {
    let map = match value {
        None | Some(Value::Null) => {
            return FeastOnlineStore::Sqlite {
                path: "data/online.db".into(),
            };
        }
        Some(Value::String(store_type)) => Mapping::from_iter([(
            Value::String("type".into()),
            Value::String(store_type.clone()),
        )]),
        Some(Value::Mapping(m)) => m.clone(),
        Some(other) => {
            return FeastOnlineStore::Other {
                store_type: render(other),
            };
        }
    };
    let store_type = string_at(&map, "type").unwrap_or_else(|| "sqlite".into());
    match store_type.as_str() {
        "redis" => {
            const READ: &[&str] = &[
                "type",
                "connection_string",
                "redis_type",
                "sentinel_master",
                "key_ttl_seconds",
            ];
            FeastOnlineStore::Redis {
                connection_string: string_at(&map, "connection_string")
                    .unwrap_or_else(|| "localhost:6379".into()),
                redis_type: string_at(&map, "redis_type").unwrap_or_else(|| "redis".into()),
                sentinel_master: string_at(&map, "sentinel_master"),
                key_ttl_seconds: map.get("key_ttl_seconds").and_then(Value::as_u64),
                other_options: map
                    .iter()
                    .filter_map(|(k, v)| k.as_str().map(|k| (k, v)))
                    .filter(|(k, v)| !READ.contains(k) && !v.is_null())
                    .map(|(k, _)| k.to_string())
                    .collect(),
            }
        }
        "sqlite" => FeastOnlineStore::Sqlite {
            path: string_at(&map, "path").unwrap_or_else(|| "data/online.db".into()),
        },
        _ => FeastOnlineStore::Other { store_type },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "REDIS_HOST" => Some("cache.internal".into()),
            "PORT" => Some("6380".into()),
            _ => None,
        }
    }

    fn parse_ok(text: &str) -> FeastConfig {
        parse(
            text,
            Path::new("/repo/feature_store.yaml"),
            Path::new("/repo"),
            &env,
        )
        .unwrap()
    }

    #[test]
    fn set_variables_are_expanded_in_both_forms_and_unset_ones_are_left_as_written() {
        assert_eq!(
            expand_env_vars("${REDIS_HOST}:$PORT,$UNSET,${UNSET},$,${", &env),
            "cache.internal:6380,$UNSET,${UNSET},$,${"
        );
    }

    #[test]
    fn a_redis_store_keeps_its_connection_string_type_and_key_ttl() {
        let c = parse_ok(
            "project: p\nregistry: data/registry.db\nonline_store:\n  type: redis\n  \
             connection_string: ${REDIS_HOST}:6379\n  redis_type: redis_cluster\n  \
             key_ttl_seconds: 3600\n  full_scan_for_deletion: false\n",
        );
        assert_eq!(
            c.online_store,
            FeastOnlineStore::Redis {
                connection_string: "cache.internal:6379".into(),
                redis_type: "redis_cluster".into(),
                sentinel_master: None,
                key_ttl_seconds: Some(3600),
                other_options: vec!["full_scan_for_deletion".into()],
            }
        );
        assert_eq!(c.registry, Path::new("/repo/data/registry.db"));
        assert_eq!(c.entity_key_serialization_version, 3);
    }

    #[test]
    fn a_registry_mapping_is_read_by_its_path() {
        let c =
            parse_ok("project: p\nregistry:\n  path: reg/registry.pb\n  cache_ttl_seconds: 60\n");
        assert_eq!(c.registry, Path::new("/repo/reg/registry.pb"));
        assert_eq!(
            c.online_store,
            FeastOnlineStore::Sqlite {
                path: "data/online.db".into()
            }
        );
    }

    #[test]
    fn remote_registries_are_refused_with_what_to_do() {
        for (yaml, expected) in [
            ("registry: s3://bucket/registry.db", "aws s3 cp"),
            ("registry: gs://bucket/registry.db", "gcloud storage cp"),
            (
                "registry:\n  registry_type: sql\n  path: postgresql://db/feast",
                "feast apply",
            ),
        ] {
            let err = parse(
                &format!("project: p\n{yaml}\n"),
                Path::new("/repo/feature_store.yaml"),
                Path::new("/repo"),
                &env,
            )
            .unwrap_err();
            assert!(matches!(err, ImportError::RemoteRegistry { .. }), "{err}");
            assert!(err.to_string().contains(expected), "{err}");
        }
    }

    #[test]
    fn other_store_types_and_unknown_top_level_keys_are_named() {
        let c = parse_ok(
            "project: p\nonline_store:\n  type: dynamodb\n  region: eu-west-1\n\
             offline_store:\n  type: bigquery\nentity_key_serialization_version: 2\n\
             feature_server:\n  enabled: true\n",
        );
        assert_eq!(
            c.online_store,
            FeastOnlineStore::Other {
                store_type: "dynamodb".into()
            }
        );
        assert_eq!(c.offline_store, "bigquery");
        assert_eq!(c.entity_key_serialization_version, 2);
        assert_eq!(c.other_keys, vec!["feature_server".to_string()]);
    }

    #[test]
    fn a_document_without_a_project_is_an_error_naming_the_file() {
        let err = parse(
            "registry: r.db\n",
            Path::new("/repo/feature_store.yaml"),
            Path::new("/repo"),
            &env,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("/repo/feature_store.yaml"),
            "{err}"
        );
        assert!(err.to_string().contains("project"), "{err}");
    }
}
