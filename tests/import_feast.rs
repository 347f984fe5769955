//! `quiver import-feast` against real Feast: the sample repository (`tests/feast_repo`) is
//! applied with Feast 0.67 (its Redis store pointed at a real `redis-server`), imported, and the
//! result is checked against the definitions and with `quiver validate`. The generated stub
//! transform crate is built outside the workspace against the SDK by path.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use quiver_tests::python;
use quiver_tests::redis::RedisServer;

/// The repository root (this package is `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn quiver(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quiver-under-test"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run quiver")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The applied Feast repository and the import of it, made once for the tests of this file.
struct Imported {
    dir: tempfile::TempDir,
    redis_port: u16,
    report: String,
    _redis: RedisServer,
}

impl Imported {
    fn output_dir(&self) -> PathBuf {
        self.dir.path().join("quiver")
    }

    fn yaml(&self) -> String {
        std::fs::read_to_string(self.output_dir().join("feature_store.yaml")).unwrap()
    }
}

fn imported() -> &'static Imported {
    static IMPORTED: OnceLock<Imported> = OnceLock::new();
    IMPORTED.get_or_init(|| {
        let venv = python::feast();
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("feast_repo");
        std::fs::create_dir_all(&repo).unwrap();
        for name in ["definitions.py", "make_data.py", "feature_store.yaml"] {
            std::fs::copy(root().join("tests/feast_repo").join(name), repo.join(name)).unwrap();
        }
        let config = std::fs::read_to_string(repo.join("feature_store.yaml")).unwrap();
        let config = config.replace(
            "  connection_string: \"127.0.0.1:6379\"",
            &format!(
                "  connection_string: \"127.0.0.1:{}\"\n  key_ttl_seconds: 604800",
                redis.port()
            ),
        );
        assert!(config.contains("key_ttl_seconds"), "{config}");
        std::fs::write(repo.join("feature_store.yaml"), config).unwrap();
        run(
            Command::new(venv.join("bin/python"))
                .args(["make_data.py", "data"])
                .current_dir(&repo),
            "python make_data.py data",
        );
        run(
            Command::new(venv.join("bin/feast"))
                .arg("apply")
                .current_dir(&repo),
            "feast apply",
        );
        let output = dir.path().join("quiver/feature_store.yaml");
        let imported = quiver(
            &[
                "import-feast",
                repo.to_str().unwrap(),
                "--output",
                output.to_str().unwrap(),
            ],
            dir.path(),
        );
        assert!(
            imported.status.success(),
            "import-feast failed:\n{}\n{}",
            text(&imported.stdout),
            text(&imported.stderr)
        );
        Imported {
            redis_port: redis.port(),
            report: text(&imported.stdout),
            dir,
            _redis: redis,
        }
    })
}

/// The output with the two Redis options of Feast's layout removed, which only the branch that
/// adds `layout: feast` to Quiver's Redis store accepts.
fn without_feast_layout_options(yaml: &str) -> String {
    yaml.lines()
        .filter(|l| !l.starts_with("  layout: ") && !l.starts_with("  key_ttl_seconds: "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn the_imported_registry_matches_the_feast_definitions() {
    let imported = imported();
    let yaml = imported.yaml();
    let registry =
        quiver::config::load_str(&without_feast_layout_options(&yaml), &imported.output_dir())
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(registry.project.as_str(), "driver_ranking");

    let entities: Vec<&str> = registry.entities.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(entities.len(), 2, "{entities:?}");
    assert!(
        yaml.contains("  - name: driver\n    join_keys: [driver_id]\n    value_type: int64\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("  - name: customer\n    join_keys: [customer_id]\n    value_type: string\n"),
        "{yaml}"
    );

    let driver = registry
        .feature_views
        .iter()
        .find(|v| v.name.as_str() == "driver_hourly_stats")
        .expect("driver_hourly_stats imported");
    let schema: Vec<String> = driver
        .fields
        .iter()
        .map(|f| format!("{}:{}", f.name, f.dtype))
        .collect();
    assert_eq!(
        schema,
        [
            "conv_rate:float32",
            "acc_rate:float64",
            "avg_daily_trips:int64",
            "city:string",
            "active:bool"
        ]
    );
    assert!(
        yaml.contains("  - name: driver_hourly_stats\n    entities: [driver]\n    ttl: 2d\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains(
            "      path: ../feast_repo/data/driver_stats.parquet\n      timestamp_field: event_timestamp\n      created_timestamp_column: created\n"
        ),
        "{yaml}"
    );
    let customer = registry
        .feature_views
        .iter()
        .find(|v| v.name.as_str() == "customer_profile")
        .expect("customer_profile imported");
    let schema: Vec<String> = customer
        .fields
        .iter()
        .map(|f| format!("{}:{}", f.name, f.dtype))
        .collect();
    assert_eq!(
        schema,
        [
            "lifetime_value:float64",
            "tier:int64",
            "recent_scores:list<float64>"
        ]
    );
    assert!(
        yaml.contains("      path: ../feast_repo/data/customer_profile.parquet\n"),
        "{yaml}"
    );

    assert!(
        yaml.contains(
            "feature_services:\n  - name: driver_activity\n    features:\n      - driver_hourly_stats:conv_rate\n      - driver_hourly_stats:avg_daily_trips\n      - customer_profile\n"
        ),
        "{yaml}"
    );
    assert!(
        yaml.contains(
            "push_sources:\n  - name: driver_stats_push\n    feature_view: driver_hourly_stats\n"
        ),
        "the push source is carried over (online pushes)\n{yaml}"
    );
    assert!(
        imported
            .report
            .contains("push_sources.driver_stats_push: takes online pushes only"),
        "{}",
        imported.report
    );
    assert!(
        yaml.contains(&format!(
            "online_store:\n  type: redis\n  layout: feast\n  connection_string: \"127.0.0.1:{}\"\n  redis_type: redis\n  key_ttl_seconds: 604800\n",
            imported.redis_port
        )),
        "{yaml}"
    );
}

#[test]
fn the_python_on_demand_view_is_reported_and_gets_a_stub_crate() {
    let imported = imported();
    let report = &imported.report;
    assert!(
        report.contains(
            "on_demand_feature_views.trip_estimate: a Python transformation (mode pandas)"
        ),
        "{report}"
    );
    assert!(
        report.contains("Generated the stub transform crate"),
        "{report}"
    );
    let yaml = imported.yaml();
    assert!(
        yaml.contains("#   - on_demand_feature_views.trip_estimate: a Python transformation"),
        "the notes are on top of the file too:\n{yaml}"
    );
    assert!(yaml.contains("# on_demand_feature_views:\n#   - name: trip_estimate\n#     transform: trip_estimate\n#     sources: [driver_hourly_stats]\n#     request_fields:\n#       - { name: distance_km, dtype: float64 }\n#     schema:\n#       - { name: expected_conversions, dtype: float64 }\n"), "{yaml}");

    let stub = imported.output_dir().join("transforms/trip_estimate");
    let lib = std::fs::read_to_string(stub.join("src/lib.rs")).unwrap();
    assert!(lib.contains("pub conv_rate: Option<f32>,"), "{lib}");
    assert!(lib.contains("pub distance_km: f64,"), "{lib}");
    assert!(
        lib.contains("pub expected_conversions: Option<f64>,"),
        "{lib}"
    );
    assert!(lib.contains("PLACEHOLDER"), "{lib}");
    assert!(
        lib.contains("inputs[\"conv_rate\"] * inputs[\"distance_km\"]"),
        "{lib}"
    );

    // The crate builds where it was written, outside this workspace, against the SDK by path.
    // The workspace's lock file pins the dependencies to the versions already fetched, and the
    // workspace's target directory is reused.
    std::fs::copy(root().join("Cargo.lock"), stub.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = root().join("target");
    run(
        Command::new(cargo)
            .args(["build", "--offline", "--quiet", "--manifest-path"])
            .arg(stub.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target),
        "cargo build of the stub crate",
    );
}

#[test]
fn the_imported_registry_validates_with_its_sources() {
    let imported = imported();
    let config = imported.output_dir().join("feature_store.yaml");
    let scratch = imported.output_dir().join("without_layout.yaml");
    std::fs::write(&scratch, without_feast_layout_options(&imported.yaml())).unwrap();
    for file in [&scratch, &config] {
        let out = quiver(
            &["-c", file.to_str().unwrap(), "validate"],
            &imported.output_dir(),
        );
        assert!(
            out.status.success(),
            "quiver validate {}:\n{}\n{}",
            file.display(),
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout)
                .contains("2 entities, 2 feature views, 0 on-demand views, 1 feature service"),
            "{}",
            text(&out.stdout)
        );
    }
}

#[test]
fn a_repository_that_was_never_applied_is_an_error_naming_the_registry_and_feast_apply() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("feast_repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::copy(
        root().join("tests/feast_repo/feature_store.yaml"),
        repo.join("feature_store.yaml"),
    )
    .unwrap();
    let out = quiver(
        &["import-feast", "feast_repo", "--output", "quiver.yaml"],
        dir.path(),
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("data/registry.db does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("run `feast apply`"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!dir.path().join("quiver.yaml").exists());
}
