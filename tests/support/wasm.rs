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

/// A module implementing the ABI in WAT, with `body` as `quiver_transform`'s body (params
/// `$ptr`, `$len`, result i64) and `extra` spliced into the module (imports, data).
pub fn wat_module(extra: &str, body: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
            {extra}
            (memory (export "memory") 1)
            (global $heap (mut i32) (i32.const 4096))
            (func (export "quiver_alloc") (param $len i32) (result i32)
                (local $p i32)
                (local.set $p (global.get $heap))
                (global.set $heap (i32.add (global.get $heap) (local.get $len)))
                (local.get $p))
            (func (export "quiver_dealloc") (param i32 i32))
            (func (export "quiver_transform") (param $ptr i32) (param $len i32) (result i64)
                {body}))"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("fixture does not parse: {e}\n{text}"))
}

/// Installs a module into a transforms directory the way deployments should: written under a
/// temporary name, then renamed into place.
pub fn install_module(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create transforms dir");
    let tmp = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::write(&tmp, bytes).expect("write module");
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).expect("rename module into place");
}

/// The same module with a custom section appended: behaves identically, hashes differently.
pub fn with_custom_section(wasm: &[u8], payload: &str) -> Vec<u8> {
    let name = b"quiver-test";
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(payload.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    let mut size = body.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&body);
    out
}

/// SHA-256 of bytes, lowercase hex (as `/transforms` and training-set metadata report modules).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
