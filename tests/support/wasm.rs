//! The example transforms built to real `.wasm` modules, once per test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The transform crates built for the tests.
pub const TRANSFORM_CRATES: &[&str] = &["order_stats", "user_risk"];

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_owned()
}

/// Directory holding `<crate>.wasm` for every crate in [`TRANSFORM_CRATES`], built on first use.
///
/// Runs a nested `cargo build --profile wasm-release --target wasm32-unknown-unknown` with its own
/// target directory (`target/wasm-fixtures`), so it never waits on the lock of the `cargo test`
/// that runs this process. Panics with what to do if the build fails.
pub fn fixtures_dir() -> &'static Path {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DIR.get_or_init(build_fixtures) {
        Ok(dir) => dir,
        Err(message) => panic!("{message}"),
    }
}

/// The bytes of one example transform's `.wasm`.
pub fn transform_wasm(crate_name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(format!("{crate_name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn build_fixtures() -> Result<PathBuf, String> {
    let root = workspace_root();
    let target_dir = root.join("target").join("wasm-fixtures");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    check_wasm_target(&root)?;
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--profile",
            "wasm-release",
            "--target",
            "wasm32-unknown-unknown",
        ]);
    for name in TRANSFORM_CRATES {
        cmd.args(["-p", name]);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cargo.to_string_lossy()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("wasm32-unknown-unknown")
            && (stderr.contains("not installed") || stderr.contains("can't find crate"))
        {
            "\nhint: install the target with `rustup target add wasm32-unknown-unknown`"
        } else {
            ""
        };
        return Err(format!(
            "building the wasm transform fixtures failed:\n{stderr}{hint}"
        ));
    }
    Ok(target_dir
        .join("wasm32-unknown-unknown")
        .join("wasm-release"))
}

/// Fails with the install command when the wasm32 standard library is missing.
fn check_wasm_target(root: &Path) -> Result<(), String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    // Run from the workspace so a toolchain file there picks the same toolchain as the build.
    let out = Command::new(&rustc)
        .current_dir(root)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", rustc.to_string_lossy()))?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let lib = Path::new(&sysroot).join("lib/rustlib/wasm32-unknown-unknown");
    if lib.is_dir() {
        Ok(())
    } else {
        Err(format!(
            "the wasm32-unknown-unknown target is not installed (no {}); run `rustup target add wasm32-unknown-unknown`",
            lib.display()
        ))
    }
}
