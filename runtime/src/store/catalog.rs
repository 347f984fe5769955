//! What a store may know about the views it holds: per view, its join keys and features with their
//! declared types. Built from the compiled registry ([`crate::registry::Registry::store_catalog`])
//! and handed to [`super::open`].
//!
//! Quiver's own record layouts do not need it (a record is the row's values in schema order, keyed
//! by the canonical entity key); layouts that address features by name and type entity keys, such
//! as Feast's Redis layout, do.

use std::collections::HashMap;
use std::sync::Arc;

use crate::types::{ScalarType, ValueType};

/// One join key of a view: its column name and declared type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    /// The join key's name.
    pub name: Arc<str>,
    /// Its declared type (`String`, `Int32`, `Int64`, `Bytes`, ...).
    pub dtype: ScalarType,
}

/// One feature of a view: its name and declared type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureColumn {
    /// The feature's name.
    pub name: Arc<str>,
    /// Its declared type.
    pub dtype: ValueType,
}

/// The schema of one view as a store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSchema {
    /// The view's join keys, in the order of the parts of its [`crate::entity_key::EntityKey`]s.
    pub join_keys: Vec<KeyColumn>,
    /// The view's features, in the order of [`super::FeatureRow::values`].
    pub features: Vec<FeatureColumn>,
    /// The fingerprint of the current schema: what a layout that addresses features by name
    /// reports for every row it reads (see [`super::FeatureRow::schema_fingerprint`]).
    pub schema_fingerprint: u32,
}

/// The views a store holds, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCatalog {
    views: HashMap<Arc<str>, ViewSchema>,
}

impl StoreCatalog {
    /// An empty catalog: enough for layouts that need no schema.
    pub fn empty() -> Arc<StoreCatalog> {
        Arc::new(StoreCatalog::default())
    }

    /// Adds (or replaces) a view.
    pub fn insert(&mut self, view: impl Into<Arc<str>>, schema: ViewSchema) {
        self.views.insert(view.into(), schema);
    }

    /// A view's schema.
    pub fn view(&self, name: &str) -> Option<&ViewSchema> {
        self.views.get(name)
    }

    /// Every view with its schema, in no particular order.
    pub fn views(&self) -> impl Iterator<Item = (&Arc<str>, &ViewSchema)> {
        self.views.iter()
    }
}
