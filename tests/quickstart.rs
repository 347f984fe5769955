//! The root `feature_store.yaml` is the user's to edit (the quickstart and the SDK's walkthrough
//! change it), so every other test owns its registry (`fixtures::quickstart_registry_yaml`); this
//! one checks that the root file, as it stands, validates and serves the quickstart data.

use std::path::Path;
use std::sync::Arc;

use quiver::clock::ManualClock;
use quiver_tests::fixtures::{T0, load_registry};
use quiver_tests::server::{column, serve_materialized};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_feature_store_yaml_validates_and_serves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../feature_store.yaml");
    let registry = quiver::config::load(&root).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(registry.project.as_str(), "quickstart");

    // The same text in a directory of its own, over freshly generated quickstart data.
    let dir = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(&root).unwrap();
    quickstart::generate(&dir.path().join("examples/quickstart/data"), 20, T0, 7).unwrap();
    let registry = load_registry(dir.path(), &yaml);
    let (_, server) = serve_materialized(registry, Arc::new(ManualClock::new(T0)), T0).await;
    let mut users: Vec<String> = (1..=20).map(quickstart::user_id).collect();
    users.push("nobody".into());
    let (status, body) = server
        .post(
            "/get-online-features",
            &json!({"feature_service": "fraud_model_v1", "entities": {"user_id": users}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for feature in ["fraud_score", "sessions_24h"] {
        let (_, statuses, _) = column(&body, feature);
        assert!(statuses[..20].contains(&"PRESENT"), "{feature}: {body}");
        assert_eq!(statuses[20], "NOT_FOUND", "{feature}: {body}");
    }
}
