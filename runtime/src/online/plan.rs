//! What the lookup needs from the registry, prepared once per registry (at start-up and on each
//! reload): the distinct join-key lists, resolved feature services, and feature selection.

use std::collections::HashMap;
use std::sync::Arc;

use super::LookupError;
use crate::registry::{FeatureRef, JoinKey, Registry};

/// A resolved list of features with the views it needs; precomputed for feature services.
#[derive(Debug, Clone)]
pub struct FeatureSelection {
    /// The features, in response order.
    pub refs: Vec<FeatureRef>,
    /// Feature views to read, deduplicated (sources of on-demand views included).
    pub views: Vec<usize>,
    /// The feature service selected (an index into `Registry::feature_services`), if any.
    pub service: Option<usize>,
}

impl FeatureSelection {
    /// Builds the selection for `refs`.
    pub fn new(registry: &Registry, refs: Vec<FeatureRef>) -> Self {
        let mut views = Vec::new();
        let mut add = |view: usize| {
            if !views.contains(&view) {
                views.push(view);
            }
        };
        for r in &refs {
            match *r {
                FeatureRef::View { view, .. } => add(view),
                FeatureRef::OnDemand { view, .. } => {
                    registry.on_demand_views[view]
                        .sources
                        .iter()
                        .for_each(|&s| add(s));
                }
            }
        }
        FeatureSelection {
            refs,
            views,
            service: None,
        }
    }

    /// Position of feature view `view` in [`FeatureSelection::views`] (and so in the store read).
    pub fn view_position(&self, view: usize) -> usize {
        self.views
            .iter()
            .position(|&x| x == view)
            .expect("every view a selected feature needs is selected")
    }
}

/// Everything the request path needs from the registry, prepared once per registry.
#[derive(Debug)]
pub struct ServingPlan {
    /// The registry.
    pub registry: Arc<Registry>,
    /// Per feature view, the index of its join-key list in `key_groups` (views sharing join keys
    /// share entity keys, computed once per request).
    pub view_key_group: Vec<usize>,
    /// Distinct join-key lists.
    pub key_groups: Vec<Vec<JoinKey>>,
    /// Feature services, resolved.
    pub services: HashMap<String, Arc<FeatureSelection>>,
    /// Request fields of on-demand views that are not join keys: inputs only, so, as in Feast,
    /// a response does not echo their entity columns.
    pub request_only_columns: Vec<Box<str>>,
}

impl ServingPlan {
    /// Prepares the plan for a registry.
    pub fn new(registry: Arc<Registry>) -> Self {
        let mut key_groups: Vec<Vec<JoinKey>> = Vec::new();
        let mut view_key_group = Vec::new();
        for v in &registry.feature_views {
            let g = match key_groups.iter().position(|g| *g == v.join_keys) {
                Some(g) => g,
                None => {
                    key_groups.push(v.join_keys.clone());
                    key_groups.len() - 1
                }
            };
            view_key_group.push(g);
        }
        let services = registry
            .feature_services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut selection = FeatureSelection::new(&registry, s.features.clone());
                selection.service = Some(i);
                (s.name.to_string(), Arc::new(selection))
            })
            .collect();
        let mut request_only_columns: Vec<Box<str>> = Vec::new();
        for field in registry
            .on_demand_views
            .iter()
            .flat_map(|v| &v.request_fields)
        {
            let name = field.name.as_str();
            let is_join_key = key_groups.iter().flatten().any(|k| k.name.as_str() == name);
            if !is_join_key && !request_only_columns.iter().any(|c| &**c == name) {
                request_only_columns.push(name.into());
            }
        }
        ServingPlan {
            registry,
            view_key_group,
            key_groups,
            services,
            request_only_columns,
        }
    }

    /// True when a response echoes the entity column `name`: join keys are echoed, request
    /// fields of on-demand views are not (they are inputs, as in Feast).
    pub fn echoes_column(&self, name: &str) -> bool {
        !self.request_only_columns.iter().any(|c| &**c == name)
    }

    /// Resolves a request's `features` (or `feature_service`).
    pub fn select(
        &self,
        features: Option<&[impl AsRef<str>]>,
        feature_service: Option<&str>,
    ) -> Result<Arc<FeatureSelection>, LookupError> {
        match (features, feature_service) {
            (Some(_), Some(_)) => Err(LookupError::InvalidRequest(
                "give either \"features\" or \"feature_service\", not both".into(),
            )),
            (None, None) => Err(LookupError::InvalidRequest(
                "missing \"features\" (a list of \"view:feature\") or \"feature_service\"".into(),
            )),
            (None, Some(name)) => self.services.get(name).cloned().ok_or_else(|| {
                LookupError::NotFound(format!("unknown feature service \"{name}\""))
            }),
            (Some(features), None) => {
                if features.is_empty() {
                    return Err(LookupError::InvalidRequest("\"features\" is empty".into()));
                }
                let mut refs = Vec::with_capacity(features.len());
                for spec in features {
                    let spec = spec.as_ref();
                    match self.registry.feature_index.get(spec) {
                        Some(r) => refs.push(*r),
                        None => refs.extend(
                            self.registry
                                .resolve_refs(spec)
                                .map_err(LookupError::NotFound)?,
                        ),
                    }
                }
                Ok(Arc::new(FeatureSelection::new(&self.registry, refs)))
            }
        }
    }
}
