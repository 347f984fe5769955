//! Python tools the tests use (schemathesis, and later Feast and PySpark), installed from PyPI at
//! pinned versions into a virtual environment the tests make for themselves.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target directory of the running executable: the nearest ancestor holding cargo's
/// `CACHEDIR.TAG` (tests run from `target/<profile>/deps/`, benchmark binaries from
/// `target/<profile>/`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    exe.ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .unwrap_or_else(|| panic!("{} is not inside a cargo target directory", exe.display()))
        .to_path_buf()
}

/// A virtual environment `target/python/<name>` holding exactly `requirements` (pinned
/// `package==version` lines), made with `python3 -m venv` and pip on first use and reused while
/// the requirements are unchanged. Panics with the install command when Python is missing.
pub fn venv(name: &str, requirements: &[&str]) -> PathBuf {
    let dir = target_dir().join("python").join(name);
    let wanted = requirements.join("\n") + "\n";
    let stamp = dir.join("quiver-requirements.txt");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return dir;
    }
    let python = which("python3").unwrap_or_else(|| {
        panic!("python3 not found: apt-get install -y python3 python3-venv python3-pip")
    });
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    // One builder at a time across test binaries: the others wait for its stamp.
    let lock = dir.with_extension("lock");
    let started = std::time::Instant::now();
    loop {
        match std::fs::File::create_new(&lock) {
            // Another builder may have finished between the first check and taking the lock:
            // building again would clear a venv that tests are already using.
            Ok(_) if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) => {
                let _ = std::fs::remove_file(&lock);
                return dir;
            }
            Ok(_) => break,
            Err(_) if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) => return dir,
            Err(_) if started.elapsed() > std::time::Duration::from_secs(900) => {
                // A builder that died long ago left its lock behind.
                let _ = std::fs::remove_file(&lock);
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
    let built = || {
        run(
            Command::new(&python)
                .args(["-m", "venv", "--clear"])
                .arg(&dir),
            "python3 -m venv (apt-get install -y python3-venv)",
        );
        run(
            Command::new(dir.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(requirements),
            "pip install (PyPI must be reachable)",
        );
        std::fs::write(&stamp, &wanted).unwrap();
    };
    let result = std::panic::catch_unwind(built);
    let _ = std::fs::remove_file(&lock);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    dir
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The first `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| Path::new(p).is_file())
    })
}

/// The pinned Feast every Feast test runs: its SDK, CLI and feature server, with the Redis extra.
pub const FEAST: &[&str] = &["feast[redis]==0.67.0"];

/// The virtual environment holding [`FEAST`] (`target/python/feast`); its `bin/feast` and
/// `bin/python` run Feast.
pub fn feast() -> PathBuf {
    venv("feast", FEAST)
}
