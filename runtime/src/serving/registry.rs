//! `GET /registry`: the definitions being served, as JSON, so an operator can see which version
//! of `feature_store.yaml` a running server has taken (its generation and load time).

use serde_json::{Value as Json, json};

use super::ServingState;
use crate::registry::{Field, JoinKey, Registry};
use crate::settings::HumanDuration;

/// The served definitions of `serving`.
pub fn describe(serving: &ServingState) -> Json {
    let registry = serving.registry();
    let loaded_at = chrono::DateTime::<chrono::Utc>::from(serving.loaded_at)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let transforms = serving.online.transforms();
    json!({
        "project": registry.project.as_str(),
        "generation": serving.generation,
        "loaded_at": loaded_at,
        "entities": registry.entities.iter().map(|e| json!({
            "name": e.name.as_str(),
            "join_keys": join_keys(&e.join_keys),
        })).collect::<Vec<_>>(),
        "feature_views": registry.feature_views.iter().map(|v| json!({
            "name": v.name.as_str(),
            "entities": v.entities.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
            "join_keys": join_keys(&v.join_keys),
            "features": fields(&v.fields),
            "ttl": v.ttl.map(|t| HumanDuration(t).to_string()),
            "online": v.online,
        })).collect::<Vec<_>>(),
        "on_demand_views": registry.on_demand_views.iter().map(|v| json!({
            "name": v.name.as_str(),
            "transform": v.transform.as_str(),
            "module_loaded": transforms.is_some_and(|t| t.get(v.transform.as_str()).is_some()),
            "sources": v.sources.iter().map(|&s| registry.feature_views[s].name.as_str()).collect::<Vec<_>>(),
            "request_fields": fields(&v.request_fields),
            "features": fields(&v.fields),
        })).collect::<Vec<_>>(),
        "feature_services": registry.feature_services.iter().map(|s| json!({
            "name": s.name.as_str(),
            "features": s.features.iter().map(|&r| feature_name(registry, r)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "push_sources": registry.push_sources.iter().map(|p| json!({
            "name": p.name.as_str(),
            "feature_view": registry.feature_views[p.view].name.as_str(),
        })).collect::<Vec<_>>(),
    })
}

fn join_keys(keys: &[JoinKey]) -> Vec<Json> {
    keys.iter()
        .map(|k| json!({"name": k.name.as_str(), "type": k.dtype.name()}))
        .collect()
}

fn fields(fields: &[Field]) -> Vec<Json> {
    fields
        .iter()
        .map(|f| json!({"name": f.name.as_str(), "type": f.dtype.to_string()}))
        .collect()
}

/// `view:feature` of a resolved reference.
fn feature_name(registry: &Registry, r: crate::registry::FeatureRef) -> String {
    let (view, field) = registry.ref_names(r);
    format!("{view}:{}", field.name)
}
