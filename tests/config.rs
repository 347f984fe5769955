//! Golden tests of `feature_store.yaml` validation: every `ui/config/*.yaml` is an invalid
//! registry, and `ui/config/*.expected` beside it holds every error it must produce, one per line.
//! Run with `QUIVER_BLESS=1` to rewrite the expected files after an intended change.

use std::path::Path;

#[test]
fn invalid_configs_report_every_error_with_its_path() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/config");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 5,
        "golden cases missing in {}",
        dir.display()
    );
    let bless = std::env::var_os("QUIVER_BLESS").is_some();
    let mut failures = Vec::new();
    for case in cases {
        let text = std::fs::read_to_string(&case).unwrap();
        let actual = match quiver::config::load_str(&text, &dir) {
            Ok(_) => "(valid)\n".to_string(),
            Err(e) => e.errors.iter().map(|e| format!("{e}\n")).collect(),
        };
        let expected_path = case.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
        if actual != expected {
            failures.push(format!(
                "{}\n--- expected\n{expected}--- actual\n{actual}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_repository_feature_store_yaml_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../feature_store.yaml");
    let registry = quiver::config::load(&root).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(registry.project.as_str(), "quickstart");
    assert!(registry.service("fraud_model_v1").is_some());
}

#[test]
fn defaults_apply_when_sections_are_omitted() {
    let registry =
        quiver::config::load_str("project: minimal\n", Path::new("/srv/features")).unwrap();
    assert_eq!(registry.server.bind, "127.0.0.1:6566");
    let sqlite = registry
        .online_store
        .options::<quiver::store::sqlite::SqliteOptions>()
        .expect("the embedded store by default");
    assert_eq!(sqlite.path, Path::new("/srv/features/data/online_store.db"));
}
