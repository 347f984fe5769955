//! The example transforms built to real `.wasm` modules, once per test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The transform crates built for the tests.
pub const TRANSFORM_CRATES: &[&str] = &["order_stats", "trip_estimate", "user_risk"];

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

/// Fails with the install command when the wasm32 standard library is missing (`root`: where
/// to ask rustc, so a toolchain file there is honoured).
pub fn check_wasm_target(root: &Path) -> Result<(), String> {
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

/// A module that returns one copy of `row` (an encoded output row) per input row, but fails with
/// `failure` (WAT instructions: `unreachable`, an endless loop, ...) when its input holds the
/// bytes `marker` (followed by a byte with its top bit set, when `sign_bit_after`: a negative
/// float 64 after a key). Called row by row, it fails exactly on the rows holding the marker: a
/// transform that fails on one particular input value.
pub fn rows_module_failing_on(
    marker: &[u8],
    sign_bit_after: bool,
    row: &[u8],
    failure: &str,
) -> Vec<u8> {
    let escape = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("\\{b:02x}")).collect() };
    let m = marker.len();
    let scan_end = m + usize::from(sign_bit_after);
    let sign_check = if sign_bit_after {
        format!(
            "(if (local.get $hit) (then (local.set $hit (i32.ge_u
                (i32.load8_u (i32.add (local.get $i) (i32.const {m}))) (i32.const 128)))))"
        )
    } else {
        String::new()
    };
    let row_len = row.len();
    let extra = format!(
        r#"(data (i32.const 16) "{row}") (data (i32.const 2048) "{marker}")"#,
        row = escape(row),
        marker = escape(marker)
    );
    let body = format!(
        r#"(local $i i32) (local $j i32) (local $end i32) (local $hit i32) (local $n i32)
        (local $b i32) (local $out i32) (local $p i32) (local $k i32)
        (local.set $end (i32.sub (i32.add (local.get $ptr) (local.get $len)) (i32.const {scan_end})))
        (local.set $i (local.get $ptr))
        (block $scanned (loop $scan
            (br_if $scanned (i32.gt_s (local.get $i) (local.get $end)))
            (local.set $hit (i32.const 1))
            (local.set $j (i32.const 0))
            (block $compared (loop $compare
                (br_if $compared (i32.ge_u (local.get $j) (i32.const {m})))
                (if (i32.ne (i32.load8_u (i32.add (local.get $i) (local.get $j)))
                            (i32.load8_u (i32.add (i32.const 2048) (local.get $j))))
                    (then (local.set $hit (i32.const 0)) (br $compared)))
                (local.set $j (i32.add (local.get $j) (i32.const 1)))
                (br $compare)))
            {sign_check}
            (if (local.get $hit) (then {failure}))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $scan)))
        ;; The row count: fixarray, array16 or array32.
        (local.set $b (i32.load8_u (local.get $ptr)))
        (if (i32.eq (i32.and (local.get $b) (i32.const 0xf0)) (i32.const 0x90))
            (then (local.set $n (i32.and (local.get $b) (i32.const 0x0f))))
            (else (if (i32.eq (local.get $b) (i32.const 0xdc))
                (then (local.set $n (i32.or
                    (i32.shl (i32.load8_u offset=1 (local.get $ptr)) (i32.const 8))
                    (i32.load8_u offset=2 (local.get $ptr)))))
                (else (local.set $n (i32.or
                    (i32.or (i32.shl (i32.load8_u offset=1 (local.get $ptr)) (i32.const 24))
                            (i32.shl (i32.load8_u offset=2 (local.get $ptr)) (i32.const 16)))
                    (i32.or (i32.shl (i32.load8_u offset=3 (local.get $ptr)) (i32.const 8))
                            (i32.load8_u offset=4 (local.get $ptr)))))))))
        (local.set $out (global.get $heap))
        (i32.store8 (local.get $out) (i32.const 0xdd))
        (i32.store8 offset=1 (local.get $out) (i32.shr_u (local.get $n) (i32.const 24)))
        (i32.store8 offset=2 (local.get $out) (i32.shr_u (local.get $n) (i32.const 16)))
        (i32.store8 offset=3 (local.get $out) (i32.shr_u (local.get $n) (i32.const 8)))
        (i32.store8 offset=4 (local.get $out) (local.get $n))
        (local.set $p (i32.add (local.get $out) (i32.const 5)))
        (block $written (loop $rows
            (br_if $written (i32.ge_u (local.get $k) (local.get $n)))
            (memory.copy (local.get $p) (i32.const 16) (i32.const {row_len}))
            (local.set $p (i32.add (local.get $p) (i32.const {row_len})))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $rows)))
        (global.set $heap (local.get $p))
        (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
                (i64.extend_i32_u (i32.sub (local.get $p) (local.get $out))))"#
    );
    wat_module(&extra, &body)
}

/// A module with the ABI's exports and `functions` more (empty) functions: large to compile.
pub fn module_with_functions(functions: usize) -> Vec<u8> {
    let extra = "(func)".repeat(functions);
    wat_module(&extra, "(i64.const 0)")
}
