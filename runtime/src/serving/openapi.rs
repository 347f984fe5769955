//! `GET /openapi.json`: the API's OpenAPI document, completed with this registry's names (views,
//! features, feature services, push sources, join keys and request fields), so clients and
//! fuzzers see exactly which requests this deployment accepts.

use serde_json::{Value as Json, json};

use crate::registry::Registry;
use crate::types::{ScalarType, ValueType};

/// The registry-independent document.
pub const BASE: &str = include_str!("openapi.json");

/// The document for `registry`, rendered once per registry (at start-up and on each reload).
pub fn document(registry: &Registry) -> Vec<u8> {
    let mut doc: Json = serde_json::from_str(BASE).expect("openapi.json is valid JSON");
    let schemas = &mut doc["components"]["schemas"];

    let mut features: Vec<String> = registry.feature_index.keys().cloned().collect();
    features.extend(registry.feature_views.iter().map(|v| v.name.to_string()));
    features.extend(registry.on_demand_views.iter().map(|v| v.name.to_string()));
    features.sort();
    let services: Vec<&str> = registry
        .feature_services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    schemas["OnlineRequest"]["properties"]["features"]["items"] = enum_of(&features);
    let mut service = enum_of(&services);
    // Feast clients send `"feature_service": null` beside a list of features; with an enum,
    // OpenAPI 3.0 wants null listed too.
    service["nullable"] = Json::Bool(true);
    if let Some(names) = service["enum"].as_array_mut() {
        names.push(Json::Null);
    }
    schemas["OnlineRequest"]["properties"]["feature_service"] = service;

    // Entity columns: every join key and request field, typed.
    let mut columns = serde_json::Map::new();
    for view in &registry.feature_views {
        for key in &view.join_keys {
            columns.insert(
                key.name.to_string(),
                column_of(ValueType::Scalar(key.dtype), false),
            );
        }
    }
    for view in &registry.on_demand_views {
        for field in &view.request_fields {
            columns.insert(field.name.to_string(), column_of(field.dtype, true));
        }
    }
    schemas["EntityColumns"] = json!({
        "type": "object",
        "minProperties": 1,
        "properties": columns,
        "additionalProperties": {"type": "array", "items": {}},
    });
    schemas["OnlineRequest"]["properties"]["entities"] =
        json!({"$ref": "#/components/schemas/EntityColumns"});

    let push_sources: Vec<&str> = registry
        .push_sources
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    schemas["PushRequest"]["properties"]["push_source_name"] = enum_of(&push_sources);
    let views: Vec<&str> = registry
        .feature_views
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    schemas["WriteRequest"]["properties"]["feature_view_name"] = enum_of(&views);
    serde_json::to_vec(&doc).expect("serializable")
}

/// A string schema limited to `names` (any string when there are none, so the schema stays
/// satisfiable).
fn enum_of(names: &[impl AsRef<str>]) -> Json {
    if names.is_empty() {
        return json!({"type": "string"});
    }
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    json!({"type": "string", "enum": names})
}

/// An entity column of values of `dtype`; request fields may be null.
fn column_of(dtype: ValueType, nullable: bool) -> Json {
    let item = match dtype {
        ValueType::Scalar(s) => scalar(s),
        ValueType::List(s) => json!({"type": "array", "items": scalar(s)}),
    };
    let item = match item {
        Json::Object(mut m) if nullable => {
            m.insert("nullable".into(), Json::Bool(true));
            Json::Object(m)
        }
        other => other,
    };
    json!({"type": "array", "items": item})
}

fn scalar(s: ScalarType) -> Json {
    match s {
        ScalarType::Int32 => json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX}),
        ScalarType::Int64 => json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX}),
        ScalarType::Float32 | ScalarType::Float64 => json!({"type": "number"}),
        ScalarType::Bool => json!({"type": "boolean"}),
        ScalarType::Bytes => json!({"type": "string", "format": "byte"}),
        ScalarType::String | ScalarType::UnixTimestamp => json!({"type": "string"}),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_base_document_is_valid_json_with_every_route() {
        let doc: serde_json::Value = serde_json::from_str(super::BASE).unwrap();
        for path in [
            "/get-online-features",
            "/push",
            "/write-to-online-store",
            "/materialize",
            "/materialize-incremental",
            "/health",
            "/ready",
            "/metrics",
            "/monitoring",
            "/transforms",
            "/openapi.json",
            "/ui",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} is documented");
        }
    }
}
