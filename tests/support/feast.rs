//! Real Feast next to Quiver: copies of the sample repository `tests/feast_repo`, the `feast` CLI
//! and `feast serve`, all from the pinned venv of [`crate::python::feast`].

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::http_get_status;

/// The sample Feast repository checked into `tests/feast_repo`.
pub fn sample_repo() -> PathBuf {
    crate::wasm::workspace_root().join("tests/feast_repo")
}

/// Writes Quiver's registry for the sample repository (`tests/feast_repo/quiver.yaml`) into
/// `dir` (a copy of the repository, so its `data/` is the same Parquet) with `online_store` (YAML
/// lines indented by two spaces) and the example transforms, and returns its path.
pub fn quiver_config(dir: &Path, online_store: &str) -> PathBuf {
    let definitions = std::fs::read_to_string(sample_repo().join("quiver.yaml")).unwrap();
    let config = dir.join("quiver.yaml");
    std::fs::write(
        &config,
        format!(
            "{definitions}\nonline_store:\n{online_store}\ntransforms:\n  dir: {}\n",
            crate::wasm::fixtures_dir().display()
        ),
    )
    .unwrap();
    config
}

/// A copy of the sample repository in a test's temp dir.
pub struct FeastRepo {
    dir: PathBuf,
    venv: PathBuf,
}

impl FeastRepo {
    /// Copies the sample repository into `dir` (created) with `online_store` (YAML lines indented
    /// by two spaces, without the `online_store:` line) as its online store, and `registry` as its
    /// registry path (relative to `dir`, or absolute to share another repository's registry).
    pub fn create(dir: &Path, online_store: &str, registry: &str) -> FeastRepo {
        let venv = crate::python::feast();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        for file in ["definitions.py", "make_data.py", "sdk_client.py"] {
            std::fs::copy(sample_repo().join(file), dir.join(file)).unwrap();
        }
        let yaml = format!(
            "project: driver_ranking\nprovider: local\nregistry: {registry}\nonline_store:\n{online_store}\n\
             offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
        );
        std::fs::write(dir.join("feature_store.yaml"), yaml).unwrap();
        FeastRepo {
            dir: dir.to_path_buf(),
            venv,
        }
    }

    /// A repository whose online store is the Redis at `127.0.0.1:<port>`.
    pub fn with_redis(dir: &Path, port: u16) -> FeastRepo {
        let store = format!("  type: redis\n  connection_string: \"127.0.0.1:{port}\"");
        FeastRepo::create(dir, &store, "data/registry.db")
    }

    /// A client repository whose online store is the feature server at `url` (Feast's `remote`
    /// store), reading the registry at `registry`.
    pub fn remote(dir: &Path, url: &str, registry: &Path) -> FeastRepo {
        let store = format!("  type: remote\n  path: {url}");
        FeastRepo::create(dir, &store, &registry.display().to_string())
    }

    /// The repository's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the sample Parquet data (event times relative to now) into `data/`: 20 drivers.
    pub fn make_data(&self) {
        self.python(&["make_data.py", "data"]);
    }

    /// Like [`FeastRepo::make_data`], with `drivers` drivers (ids from 1001).
    pub fn make_data_with_drivers(&self, drivers: usize) {
        self.python(&["make_data.py", "data", &drivers.to_string()]);
    }

    /// Runs `feast <args>` in the repository; panics with its output when it fails.
    pub fn feast(&self, args: &[&str]) -> String {
        run(
            Command::new(self.venv.join("bin/feast")).args(args),
            &self.dir,
        )
    }

    /// Runs the venv's `python <args>` in the repository; returns stdout, panics with the output
    /// when it fails.
    pub fn python(&self, args: &[&str]) -> String {
        run(
            Command::new(self.venv.join("bin/python")).args(args),
            &self.dir,
        )
    }

    /// `feast apply`, then `feast materialize-incremental <now>`.
    pub fn apply_and_materialize(&self) {
        self.feast(&["apply"]);
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string();
        self.feast(&["materialize-incremental", &now]);
    }

    /// Starts `feast serve` for this repository on a free port, with one worker that is never
    /// recycled.
    pub fn serve(&self) -> FeastServer {
        self.serve_with_workers(1)
    }

    /// Starts `feast serve` for this repository on a free port, with `workers` gunicorn workers
    /// that are never recycled, and no access log.
    pub fn serve_with_workers(&self, workers: usize) -> FeastServer {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = self.dir.join("feast-serve.log");
        let child = Command::new(self.venv.join("bin/feast"))
            .args([
                "serve",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--no-access-log",
                "--workers",
                &workers.to_string(),
                // No worker recycling (gunicorn's max_requests): a recycled worker drops its open
                // connections and takes its CPU time out of /proc, which load runs measure.
                "--max-requests",
                "0",
                "--max-requests-jitter",
                "0",
            ])
            .current_dir(&self.dir)
            // gunicorn's master and worker outlive the command's own process: a process group
            // of their own lets Drop kill them all (and lets benchmarks sum their CPU time).
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(self.dir.join("feast-serve.err")).unwrap())
            .spawn()
            .expect("start feast serve");
        let mut server = FeastServer {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            dir: self.dir.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while http_get_status(server.addr, "/health") != Some(200) {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("feast serve exited ({status}):\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "feast serve did not answer /health within 90 s:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

/// A running `feast serve` (its whole process group is killed when dropped).
pub struct FeastServer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl FeastServer {
    /// `http://<addr>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process group of the server (the command, gunicorn's master and its worker).
    pub fn process_group(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("feast-serve.log"), read("feast-serve.err"))
    }
}

impl Drop for FeastServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long one `feast` or `python` command may take.
const COMMAND_BOUND: Duration = Duration::from_secs(300);

fn run(command: &mut Command, dir: &Path) -> String {
    let mut child = command
        .current_dir(dir)
        .env("FEAST_USAGE", "False")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let deadline = Instant::now() + COMMAND_BOUND;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} did not finish within {COMMAND_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed in {}:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
