//! Headless Chromium (Debian's `chromium`) for tests of the pages Quiver serves.

use std::path::PathBuf;
use std::process::Command;

/// The `chromium` binary, or a panic telling how to install it.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromium not found: install it (Debian/Ubuntu: apt-get install -y chromium) \
                 — tests never skip"
            )
        })
}

/// Headless Chromium on `url` with `args` (`--dump-dom`, `--screenshot=...`), in a profile of its
/// own, given 4 s of virtual time for the page's script to fetch and render. Its stdout.
pub fn run_chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,900",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        output.status.success(),
        "chromium failed on {url}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The rendered DOM of `url`, after the page's script ran.
pub fn rendered(url: &str) -> String {
    let dom = run_chromium(url, &["--dump-dom"]);
    assert!(dom.contains("Quiver monitoring"), "not the page:\n{dom}");
    dom
}
