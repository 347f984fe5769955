//! The Python package (`python/`) and its Spark integration, tested from Python: a pinned venv
//! under `target/python/quiver-python` (maturin, pyarrow, pandas, pytest, PySpark, ruff, mypy), the
//! extension built into it by `maturin develop` (with its own target directory, since this
//! `cargo test` holds the lock of the main one), then pytest on `python/tests/` against the
//! `quiver` command built from the same sources. PySpark runs in local mode and needs `java`.
//! The Spark tests run twice: on PySpark 4 with the whole suite, and on PySpark 3.5 (the oldest
//! line `quiver.spark` supports) in a second small venv that imports the same built package.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quiver_tests::python::{venv, which};
use quiver_tests::wasm::{fixtures_dir, workspace_root};

/// What the Python suite runs on, pinned.
const REQUIREMENTS: &[&str] = &[
    "maturin==1.9.6",
    "pyarrow==21.0.0",
    "pandas==2.3.3",
    "pytest==8.4.2",
    "pyspark==4.0.1",
    "ruff==0.14.6",
    "mypy==1.18.2",
];

/// The second Spark line the Spark tests run on, pinned; the package's native module is abi3, so
/// the one `maturin develop` built serves it too (imported from `python/python`).
const PYSPARK_35: &[&str] = &[
    "pyspark==3.5.9",
    "pyarrow==21.0.0",
    "pandas==2.3.3",
    "numpy==1.26.4",
    "pytest==8.4.2",
];

/// Bound on the build and on the pytest run, each.
const TIME_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Runs `command` to completion within [`TIME_LIMIT`], killing its process group past it; panics
/// with its output when it fails.
fn run(command: &mut Command, what: &str) {
    use std::os::unix::process::CommandExt;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > TIME_LIMIT {
            // The whole group: pytest's Spark JVM and Python workers too.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
    match status {
        Some(s) if s.success() => println!("{what}:\n{output}"),
        Some(s) => panic!("{what} failed ({s}):\n{output}"),
        None => panic!("{what} took more than {TIME_LIMIT:?}:\n{output}"),
    }
}

fn python_env() -> PathBuf {
    venv("quiver-python", REQUIREMENTS)
}

/// Builds the extension into the venv (a debug build, as `maturin develop` makes by default),
/// once per test process, and makes the Spark runs take turns: two local Spark sessions at once
/// would share the machine's cores and memory.
fn build_extension(env: &Path) -> std::sync::MutexGuard<'static, ()> {
    static BUILT: std::sync::Once = std::sync::Once::new();
    static SPARK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let turn = SPARK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    BUILT.call_once(|| maturin_develop(env));
    turn
}

fn maturin_develop(env: &Path) {
    let root = workspace_root();
    run(
        Command::new(env.join("bin/maturin"))
            .current_dir(root.join("python"))
            .args(["develop", "--quiet"])
            .env("VIRTUAL_ENV", env)
            .env("CARGO_TARGET_DIR", root.join("target/python-build"))
            .env("PYO3_PYTHON", env.join("bin/python"))
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .env_remove("RUSTFLAGS"),
        "maturin develop (python/)",
    );
}

#[test]
fn the_python_package_and_spark_build_the_same_training_sets_as_the_cli() {
    assert!(
        which("java").is_some(),
        "java not found (PySpark needs it): apt-get install -y default-jre-headless"
    );
    let env = python_env();
    let _turn = build_extension(&env);
    pytest(&env, &["tests"], "pytest python/tests");
}

#[test]
fn spark_builds_the_same_training_sets_as_the_cli_on_pyspark_3_5_too() {
    assert!(
        which("java").is_some(),
        "java not found (PySpark needs it): apt-get install -y default-jre-headless"
    );
    let env = python_env();
    let spark35 = venv("quiver-pyspark35", PYSPARK_35);
    let _turn = build_extension(&env);
    // The parity tests (edge cases, input order, the quickstart with on-demand features, and
    // apply_transform); the streaming test runs on PySpark 4.
    pytest(
        &spark35,
        &["tests/test_spark.py", "-k", "not stream"],
        "pytest python/tests/test_spark.py on PySpark 3.5",
    );
}

/// Runs pytest with `args` from `python/` in `env`, with the `quiver` command, the example
/// modules and generated quickstart data, and `env`'s Python for Spark's workers.
fn pytest(env: &Path, args: &[&str], what: &str) {
    let data = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    quickstart::generate(data.path(), 40, now, 17).unwrap();
    let root = workspace_root();
    run(
        Command::new(env.join("bin/python"))
            .current_dir(root.join("python"))
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .args(args)
            // The built package, for a venv that `maturin develop` did not install it into.
            .env("PYTHONPATH", root.join("python/python"))
            .env("QUIVER_BIN", env!("CARGO_BIN_EXE_quiver-under-test"))
            .env("QUIVER_WASM_DIR", fixtures_dir())
            .env("QUIVER_QUICKSTART_DATA", data.path())
            .env("PYSPARK_PYTHON", env.join("bin/python"))
            .env("PYSPARK_DRIVER_PYTHON", env.join("bin/python")),
        what,
    );
}

#[test]
fn the_python_package_is_ruff_clean_and_strictly_typed() {
    let env = python_env();
    let python = workspace_root().join("python");
    run(
        Command::new(env.join("bin/ruff"))
            .current_dir(&python)
            .args(["check", "--no-cache", "python", "tests"]),
        "ruff check",
    );
    run(
        Command::new(env.join("bin/ruff"))
            .current_dir(&python)
            .args(["format", "--check", "--no-cache", "python", "tests"]),
        "ruff format --check",
    );
    run(
        Command::new(env.join("bin/mypy"))
            .current_dir(&python)
            .args(["--cache-dir=/dev/null", "python/quiver"]),
        "mypy (strict, from pyproject.toml)",
    );
}
