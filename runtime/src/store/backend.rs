//! How an online-store backend is configured and opened, and the `online_store` section that
//! selects one by its `type`.
//!
//! Each backend owns its options type (next to its store) and implements [`StoreOptions`] for it;
//! [`super::BACKENDS`] lists the backends. [`OnlineStoreSpec`] holds the options of whichever
//! backend the section names, so neither the YAML layer nor the registry knows the backends.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::{BACKENDS, SharedStore, StoreCatalog, StoreError};
use crate::clock::SharedClock;
use crate::settings::HumanDuration;

/// The options of one backend: the `online_store` section, without `type`, when `type` names
/// the backend. Implementations deserialize with `deny_unknown_fields`.
pub trait StoreOptions: DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static {
    /// The `type` that selects this backend in `online_store`.
    const TYPE: &'static str;

    /// A short name for logs and metrics (`sqlite`, `redis`, `redis_cluster`); the same as the
    /// opened store's [`super::OnlineStore::kind`].
    fn kind(&self) -> &'static str {
        Self::TYPE
    }

    /// How long a record outlives its view's ttl before the store drops it.
    fn key_ttl_slack(&self) -> HumanDuration;

    /// True when the opened store depends on the catalog it was opened with (a layout that
    /// addresses features by name), so a change to the views' schemas needs a new store.
    fn uses_catalog(&self) -> bool {
        false
    }

    /// Checks what deserialization cannot (empty strings, lower bounds) and resolves relative
    /// paths against `base_dir`, the directory of `feature_store.yaml`. Returns every problem,
    /// in field order.
    fn check(&mut self, base_dir: &Path) -> Vec<SpecError>;

    /// Opens (or connects to) the store for `project`, holding the views of `catalog`, reading
    /// "now" from `clock`. Layouts that need no schema ignore `catalog`.
    fn open(
        &self,
        project: &str,
        catalog: &Arc<StoreCatalog>,
        clock: SharedClock,
    ) -> impl Future<Output = Result<SharedStore, StoreError>> + Send;
}

/// The `key_ttl_slack` of every backend when omitted: one hour.
pub(crate) fn default_key_ttl_slack() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(3600))
}

/// One problem in the `online_store` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// Where, relative to the section: `connections`, `type`, or empty for the section itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl SpecError {
    /// A new problem at `path` (relative to the section).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// One entry of [`super::BACKENDS`]: a backend's `type` name and how to read its options.
/// Opening goes through the options ([`StoreOptions::open`]).
pub struct Backend {
    /// The `type` that selects the backend.
    pub name: &'static str,
    parse: fn(serde_yaml::Value) -> Result<OnlineStoreSpec, SpecError>,
}

impl Backend {
    /// The entry of the backend whose options are `T`.
    pub const fn of<T: StoreOptions>() -> Backend {
        Backend {
            name: T::TYPE,
            parse: parse_options::<T>,
        }
    }
}

/// Deserializes a backend's options strictly, keeping the path of the first problem.
fn parse_options<T: StoreOptions>(value: serde_yaml::Value) -> Result<OnlineStoreSpec, SpecError> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map(OnlineStoreSpec::new)
        .map_err(|e| {
            let path = e.path().to_string();
            SpecError::new(
                if path == "." { String::new() } else { path },
                e.into_inner().to_string(),
            )
        })
}

/// The `online_store` section: the options of the backend its `type` selects.
#[derive(Clone)]
pub struct OnlineStoreSpec(Arc<dyn AnyOptions>);

impl OnlineStoreSpec {
    /// The section for a backend's options.
    pub fn new<T: StoreOptions>(options: T) -> Self {
        OnlineStoreSpec(Arc::new(options))
    }

    /// Reads the section: finds the backend named by `type` in [`super::BACKENDS`] and
    /// deserializes the other fields as its options.
    pub fn from_yaml(value: &serde_yaml::Value) -> Result<Self, SpecError> {
        let serde_yaml::Value::Mapping(map) = value else {
            return Err(SpecError::new(
                "",
                format!("expected a mapping whose `type` is {}", type_names()),
            ));
        };
        let Some(tag) = map.get("type") else {
            return Err(SpecError::new("", "missing field `type`"));
        };
        let tag =
            String::deserialize(tag.clone()).map_err(|e| SpecError::new("type", e.to_string()))?;
        let Some(backend) = BACKENDS.iter().find(|b| b.name == tag) else {
            return Err(SpecError::new(
                "type",
                format!("unknown variant `{tag}`, expected {}", type_names()),
            ));
        };
        let mut options = map.clone();
        options.remove("type");
        (backend.parse)(serde_yaml::Value::Mapping(options))
    }

    /// The `type` of the section.
    pub fn type_name(&self) -> &'static str {
        self.0.type_name()
    }

    /// A short name for logs and metrics (`sqlite`, `redis`, `redis_cluster`).
    pub fn kind(&self) -> &'static str {
        self.0.kind()
    }

    /// How long a record outlives its view's ttl before the store drops it.
    pub fn key_ttl_slack(&self) -> HumanDuration {
        self.0.key_ttl_slack()
    }

    /// True when the opened store depends on the views' schemas ([`StoreOptions::uses_catalog`]).
    pub fn uses_catalog(&self) -> bool {
        self.0.uses_catalog()
    }

    /// The options, when they are the backend `T`'s.
    pub fn options<T: StoreOptions>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }

    /// The section checked, with relative paths resolved against `base_dir`
    /// ([`StoreOptions::check`]).
    pub fn checked(&self, base_dir: &Path) -> Result<Self, Vec<SpecError>> {
        self.0.checked(base_dir).map(OnlineStoreSpec)
    }

    /// Whether two sections describe the same store: the same backend with the same options
    /// (compared through their `Debug` form, which every options type derives, so every field
    /// counts). A running server compares its section with a reloaded one this way.
    pub fn same_as(&self, other: &OnlineStoreSpec) -> bool {
        self.type_name() == other.type_name() && format!("{self:?}") == format!("{other:?}")
    }

    /// Opens the store the section describes, for `project`, holding the views of `catalog`.
    pub async fn open(
        &self,
        project: &str,
        catalog: &Arc<StoreCatalog>,
        clock: SharedClock,
    ) -> Result<SharedStore, StoreError> {
        self.0.open(project, catalog, clock).await
    }
}

impl fmt::Debug for OnlineStoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<'de> Deserialize<'de> for OnlineStoreSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_yaml::Value::deserialize(deserializer)?;
        OnlineStoreSpec::from_yaml(&value).map_err(serde::de::Error::custom)
    }
}

/// The registered `type`s, worded as serde words the choices of an unknown variant:
/// `` `sqlite` or `redis` ``, or `` one of `a`, `b`, `c` ``.
fn type_names() -> String {
    let names: Vec<String> = BACKENDS.iter().map(|b| format!("`{}`", b.name)).collect();
    match names.as_slice() {
        [a, b] => format!("{a} or {b}"),
        [one] => one.clone(),
        all => format!("one of {}", all.join(", ")),
    }
}

/// [`StoreOptions`] with the type erased, so one [`OnlineStoreSpec`] holds any backend's.
trait AnyOptions: fmt::Debug + Send + Sync + 'static {
    fn type_name(&self) -> &'static str;
    fn kind(&self) -> &'static str;
    fn key_ttl_slack(&self) -> HumanDuration;
    fn uses_catalog(&self) -> bool;
    fn checked(&self, base_dir: &Path) -> Result<Arc<dyn AnyOptions>, Vec<SpecError>>;
    fn open<'a>(
        &'a self,
        project: &'a str,
        catalog: &'a Arc<StoreCatalog>,
        clock: SharedClock,
    ) -> BoxFuture<'a, Result<SharedStore, StoreError>>;
    fn as_any(&self) -> &dyn Any;
}

impl<T: StoreOptions> AnyOptions for T {
    fn type_name(&self) -> &'static str {
        T::TYPE
    }

    fn kind(&self) -> &'static str {
        StoreOptions::kind(self)
    }

    fn key_ttl_slack(&self) -> HumanDuration {
        StoreOptions::key_ttl_slack(self)
    }

    fn uses_catalog(&self) -> bool {
        StoreOptions::uses_catalog(self)
    }

    fn checked(&self, base_dir: &Path) -> Result<Arc<dyn AnyOptions>, Vec<SpecError>> {
        let mut options = self.clone();
        let problems = options.check(base_dir);
        if problems.is_empty() {
            Ok(Arc::new(options))
        } else {
            Err(problems)
        }
    }

    fn open<'a>(
        &'a self,
        project: &'a str,
        catalog: &'a Arc<StoreCatalog>,
        clock: SharedClock,
    ) -> BoxFuture<'a, Result<SharedStore, StoreError>> {
        Box::pin(StoreOptions::open(self, project, catalog, clock))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
