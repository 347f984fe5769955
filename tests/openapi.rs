//! The OpenAPI document at `/openapi.json` checked against the real server by schemathesis
//! (pinned, from PyPI, in a virtual environment the test makes): every generated request, valid
//! or not, must get an answer that matches the document, and none may be a server error.

use std::path::Path;
use std::sync::Arc;

use quiver::clock::ManualClock;
use quiver_tests::fixtures::{T0, load_registry};
use quiver_tests::python;
use quiver_tests::server::serve_materialized;
use quiver_tests::wasm::{install_module, transform_wasm};

const SCHEMATHESIS: &str = "schemathesis==4.32.5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_response_off_the_document() {
    let venv = python::venv("schemathesis", &[SCHEMATHESIS]);
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let yaml = std::fs::read_to_string(root.join("feature_store.yaml")).unwrap();
    quickstart::generate(&dir.path().join("examples/quickstart/data"), 50, T0, 7).unwrap();
    for name in ["user_risk", "order_stats"] {
        install_module(
            &dir.path().join("transforms/wasm"),
            name,
            &transform_wasm(name),
        );
    }
    let registry = load_registry(dir.path(), &yaml);
    let (_, server) = serve_materialized(registry, Arc::new(ManualClock::new(T0)), T0).await;

    let output = tokio::process::Command::new(venv.join("bin/schemathesis"))
        .arg("run")
        .arg(server.url("/openapi.json"))
        // Every check but positive_data_acceptance: whether a schema-valid request names a
        // join key its views need depends on the registry, which the document cannot express.
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--max-examples", "100", "--seed", "1", "--workers", "1"])
        .env("NO_COLOR", "1")
        .current_dir(dir.path())
        .output()
        .await
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let cases = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(|c: char| c.is_ascii_digit()) && l.contains(" generated,"))
        .unwrap_or("no case count")
        .trim();
    println!("schemathesis: {cases}");
    assert!(
        output.status.success(),
        "schemathesis failed:\n{stdout}\n{stderr}"
    );
    assert!(cases.contains("passed"), "{stdout}");
}
