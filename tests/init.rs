//! `quiver init` and `quiver new-transform` with the real binary, in temp directories outside
//! this repository: the generated project validates, materializes live rows and serves them; its
//! transform crate builds for wasm32 from its own directory against the SDK by path and its
//! on-demand view is served; a `new-transform` crate passes its unit test and its entry
//! validates; bad input is refused with the problem named.
//!
//! Building a transform crate from scratch takes a while, so the crates build with one target
//! directory (`target/init-crates`), `--offline` against this workspace's lock file (the crates
//! they need are the workspace's own), and the built project is shared by the tests that need it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use quiver_tests::process::QuiverProcess;
use serde_json::{Value, json};

const TRANSFORM: &str = "transformed_conv_rate";

/// The repository root (this package is `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_quiver-under-test"))
}

fn quiver(args: &[&str], dir: &Path) -> Output {
    Command::new(binary())
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run quiver")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs quiver and returns its stdout; fails the test with both streams when it fails.
fn quiver_ok(args: &[&str], dir: &Path) -> String {
    let out = quiver(args, dir);
    assert!(
        out.status.success(),
        "quiver {args:?} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs quiver, expects it to fail, and returns its stderr.
fn quiver_err(args: &[&str], dir: &Path) -> String {
    let out = quiver(args, dir);
    assert!(
        !out.status.success(),
        "quiver {args:?} succeeded:\n{}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// A scratch directory outside this repository.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(
        !dir.path().starts_with(root().canonicalize().unwrap()),
        "the temp dir {} is inside the repository",
        dir.path().display()
    );
    dir
}

/// `cargo <args>` in a generated crate, offline, with the shared target directory. The
/// workspace's lock file pins the crate's dependencies to the versions already fetched.
fn cargo_in(crate_dir: &Path, args: &[&str]) -> Output {
    std::fs::copy(root().join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(args)
        .arg("--offline")
        .current_dir(crate_dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cargo.to_string_lossy()));
    assert!(
        out.status.success(),
        "cargo {args:?} in {} failed:\n{}\n{}",
        crate_dir.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn target_dir() -> PathBuf {
    root().join("target").join("init-crates")
}

/// `quiver init <scratch>/driver-demo`.
fn init_project(scratch: &Path) -> (PathBuf, String) {
    let dir = scratch.join("driver-demo");
    let report = quiver_ok(&["init", dir.to_str().unwrap()], scratch);
    (dir, report)
}

/// A project whose transform crate was built for wasm32 from its own directory, the module
/// copied into `transforms/wasm/`, and the sample data materialized; made once.
struct Built {
    _scratch: tempfile::TempDir,
    dir: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        quiver_tests::wasm::check_wasm_target(&root()).unwrap_or_else(|e| panic!("{e}"));
        let scratch = scratch();
        let (dir, _) = init_project(scratch.path());
        let crate_dir = dir.join("transforms").join(TRANSFORM);
        cargo_in(
            &crate_dir,
            &["build", "--release", "--target", "wasm32-unknown-unknown"],
        );
        let wasm = target_dir()
            .join("wasm32-unknown-unknown/release")
            .join(format!("{TRANSFORM}.wasm"));
        std::fs::copy(
            &wasm,
            dir.join("transforms/wasm")
                .join(format!("{TRANSFORM}.wasm")),
        )
        .unwrap_or_else(|e| panic!("cannot copy {}: {e}", wasm.display()));
        quiver_ok(&["materialize-incremental", "now"], &dir);
        Built {
            _scratch: scratch,
            dir,
        }
    })
}

/// POSTs a lookup to a running server.
async fn lookup(server: &QuiverProcess, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/get-online-features", server.base_url()))
        .json(body)
        .send()
        .await
        .expect("lookup");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// The values and statuses of the column `name` of a response.
fn column(body: &Value, name: &str) -> (Vec<Value>, Vec<String>) {
    let names = body["metadata"]["feature_names"]
        .as_array()
        .unwrap_or_else(|| panic!("no feature_names: {body}"));
    let i = names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no column {name}: {body}"));
    let result = &body["results"][i];
    let values = result["values"].as_array().unwrap().clone();
    let statuses = result["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    (values, statuses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initialized_project_validates_materializes_live_rows_and_serves_them() {
    let scratch = scratch();
    let (dir, report) = init_project(scratch.path());
    assert!(
        report.contains("Created the Quiver project \"driver-demo\""),
        "{report}"
    );
    for next in [
        "quiver materialize-incremental now",
        "cargo build --release --target wasm32-unknown-unknown",
        "quiver serve",
        "curl -s -X POST http://127.0.0.1:6566/get-online-features",
    ] {
        assert!(report.contains(next), "{next}: {report}");
    }
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!(
            "cp target/wasm32-unknown-unknown/release/{TRANSFORM}.wasm ../wasm/"
        )),
        "{readme}"
    );
    let manifest =
        std::fs::read_to_string(dir.join("transforms").join(TRANSFORM).join("Cargo.toml")).unwrap();
    let sdk = root().join("sdk").canonicalize().unwrap();
    assert!(
        manifest.contains(&format!("quiver-sdk = {{ path = \"{}\" }}", sdk.display())),
        "{manifest}"
    );

    let valid = quiver_ok(&["validate", "--no-data"], &dir);
    assert!(
        valid.contains("is valid: project \"driver-demo\", 1 entity, 1 feature view, 1 on-demand view, 1 feature service"),
        "{valid}"
    );
    // Before the transform is built, validate names its module, and only that.
    let problems = quiver_err(&["validate"], &dir);
    assert!(
        problems.contains("1 problem keeps it from running"),
        "{problems}"
    );
    assert!(
        problems.contains(&format!(
            "transform module transforms/wasm/{TRANSFORM}.wasm does not exist"
        )),
        "{problems}"
    );

    let materialized = quiver_ok(&["materialize-incremental", "now"], &dir);
    assert!(
        materialized.contains("15 rows read, 5 entities, 5 written, 0 skipped as older, 0 expired"),
        "{materialized}"
    );

    let server = QuiverProcess::serve(binary(), &dir.join("feature_store.yaml"));
    let (status, body) = lookup(
        &server,
        &json!({
            "features": ["driver_stats:conv_rate", "driver_stats:acc_rate", "driver_stats:avg_daily_trips"],
            "entities": {"driver_id": [1001, 1005, 9999]}
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (values, statuses) = column(&body, "conv_rate");
    assert_eq!(statuses, ["PRESENT", "PRESENT", "NOT_FOUND"], "{body}");
    // The latest row of each driver (see quiver::scaffold::project::sample_conv_rate).
    assert_eq!(values[0], json!(0.25), "{body}");
    assert_eq!(values[1], json!(0.5), "{body}");
    let (values, statuses) = column(&body, "avg_daily_trips");
    assert_eq!(statuses[..2], ["PRESENT", "PRESENT"], "{body}");
    assert_eq!(values[..2], [json!(10), json!(50)], "{body}");

    // The on-demand view waits for its module; the answer says so.
    let (status, body) = lookup(
        &server,
        &json!({"features": [format!("{TRANSFORM}:conv_rate_plus_val")],
                "entities": {"driver_id": [1001], "val_to_add": [1]}}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("TRANSFORM_UNAVAILABLE"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_transform_builds_outside_the_repository_and_its_view_is_served() {
    let built = built();
    let valid = quiver_ok(&["validate"], &built.dir);
    assert!(valid.contains("is valid"), "{valid}");

    let server = QuiverProcess::serve(binary(), &built.dir.join("feature_store.yaml"));
    let (status, body) = lookup(
        &server,
        &json!({"feature_service": "driver_activity",
                "entities": {"driver_id": [1001, 1002], "val_to_add": [10, 20]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (values, statuses) = column(&body, "conv_rate_plus_val");
    assert_eq!(statuses, ["PRESENT", "PRESENT"], "{body}");
    // 0.25 + 10 and 0.3125 + 20: the rates are multiples of 1/64, so the sums are exact.
    assert_eq!(values, [json!(10.25), json!(20.3125)], "{body}");
    let (values, statuses) = column(&body, "acc_rate_plus_val");
    assert_eq!(statuses, ["PRESENT", "PRESENT"], "{body}");
    assert_eq!(values, [json!(10.75), json!(20.71875)], "{body}");
}

#[test]
fn the_initialized_transform_crate_passes_its_own_unit_tests() {
    let scratch = scratch();
    let (dir, _) = init_project(scratch.path());
    let out = cargo_in(&dir.join("transforms").join(TRANSFORM), &["test"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("the_request_value_is_added_to_each_rate ... ok")
            && stdout.contains("test result: ok. 2 passed"),
        "{stdout}"
    );
}

#[test]
fn a_new_transform_crate_passes_its_unit_test_and_its_entry_validates() {
    let scratch = scratch();
    let (dir, _) = init_project(scratch.path());
    let report = quiver_ok(
        &[
            "new-transform",
            "trip_score",
            "--inputs",
            "conv_rate:float32,avg_daily_trips:int64",
            "--request",
            "distance_km:float64",
            "--outputs",
            "score:float64,busy:bool,tags:list<string>",
            "--sources",
            "driver_stats",
        ],
        &dir,
    );
    let crate_dir = dir.join("transforms/trip_score");
    let lib = std::fs::read_to_string(crate_dir.join("src/lib.rs")).unwrap();
    for line in [
        "pub conv_rate: Option<f32>,",
        "pub avg_daily_trips: Option<i64>,",
        "pub distance_km: f64,",
        "pub busy: Option<bool>,",
        "pub tags: Option<Vec<String>>,",
        "PLACEHOLDER",
        "pub fn trip_score(row: Input) -> Output {",
    ] {
        assert!(lib.contains(line), "{line}:\n{lib}");
    }
    let out = cargo_in(&crate_dir, &["test"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("the_placeholder_answers_null_for_every_output ... ok"),
        "{stdout}"
    );

    // The printed entry, pasted into the project's registry, validates.
    let start = report
        .find("on_demand_feature_views:\n")
        .unwrap_or_else(|| panic!("no entry in the report:\n{report}"));
    let snippet = &report[start..];
    let snippet = &snippet[..snippet.find("\n\n").unwrap() + 1];
    assert!(
        snippet.contains("    sources: [driver_stats]\n"),
        "{snippet}"
    );
    let config = dir.join("feature_store.yaml");
    let yaml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        yaml.replacen("on_demand_feature_views:\n", snippet, 1),
    )
    .unwrap();
    let valid = quiver_ok(&["validate", "--no-data"], &dir);
    assert!(valid.contains("2 on-demand views"), "{valid}");
}

#[test]
fn init_refuses_a_non_empty_directory_unless_forced_and_keeps_other_files() {
    let scratch = scratch();
    let dir = scratch.path().join("existing");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let refused = quiver_err(&["init"], &dir);
    assert!(
        refused.contains("is not empty (it holds notes.txt)") && refused.contains("--force"),
        "{refused}"
    );
    assert!(!dir.join("feature_store.yaml").exists());

    let report = quiver_ok(&["init", "--force"], &dir);
    assert!(
        report.contains("Created the Quiver project \"existing\""),
        "{report}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "mine"
    );
    // A second forced run says what it replaced.
    let report = quiver_ok(&["init", ".", "--force"], &dir);
    assert!(report.contains("replaced"), "{report}");
    assert!(report.contains("feature_store.yaml"), "{report}");
}

#[test]
fn bad_names_dtypes_and_sdk_paths_are_refused_naming_the_problem() {
    let scratch = scratch();
    let dir = scratch.path();
    let cases: [(&[&str], &str); 6] = [
        (
            &["new-transform", "9lives"],
            "invalid transform name \"9lives\"",
        ),
        (&["new-transform", "my-score"], "use '_' (my_score)"),
        (
            &["new-transform", "score", "--outputs", "x:float"],
            "invalid field \"x:float\" in --outputs: unknown type \"float\"",
        ),
        (
            &["new-transform", "score", "--inputs", "rate"],
            "invalid field \"rate\" in --inputs: expected name:dtype",
        ),
        (
            &["new-transform", "score", "--request", "bad name:int64"],
            "invalid name \"bad name\"",
        ),
        (
            &["init", "project", "--sdk", "/nonexistent/sdk"],
            "the quiver-sdk crate is not at /nonexistent/sdk",
        ),
    ];
    for (args, expected) in cases {
        let stderr = quiver_err(args, dir);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert!(
        std::fs::read_dir(dir).unwrap().next().is_none(),
        "a refused command wrote nothing"
    );
}
