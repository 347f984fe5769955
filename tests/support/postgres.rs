//! Real PostgreSQL servers for tests ([`PostgresServer`]): each on a free loopback port in its own
//! temporary directory, killed (with every backend process) when dropped. Every test starts its
//! own, so tests run in parallel.
//!
//! - The binaries are Debian's (`apt-get install -y postgresql`): the newest
//!   `/usr/lib/postgresql/<version>/bin`, or the directory named by `QUIVER_TEST_PG_BINDIR`.
//!   Missing binaries fail the test with the install command; tests never skip.
//! - `initdb` and `postgres` refuse to run as root, and the suite runs as root in CI. When the
//!   test process is root, both run as the `postgres` user the package creates (or `nobody`),
//!   switched to by the child itself (`setuid`/`setgid` before exec, no `su`/`runuser` in
//!   between, so the child is the server and killing it kills the server). The temp directory
//!   is handed to that user (`chown`); as any other user, they run as that user.
//! - `initdb` runs once per machine into a template directory under the system's temp directory;
//!   each server starts from a copy of it, which takes milliseconds instead of a second of CPU.
//! - The server runs with `fsync=off`: a killed server loses nothing (the kernel keeps what it
//!   wrote), only a machine crash would, and the suite never crashes machines.
//! - [`PostgresServer::stop`] SIGKILLs the postmaster and its backends (its children) at once, as
//!   a crash would, and [`PostgresServer::pause`] freezes them all with SIGSTOP.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server gets to accept connections.
const STARTUP_BOUND: Duration = Duration::from_secs(30);
/// Attempts at finding a port nobody else grabbed in the meantime.
const PORT_ATTEMPTS: usize = 20;

/// The directory holding `initdb`, `postgres` and `pg_isready`, or a panic telling how to get it.
pub fn bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("QUIVER_TEST_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: install them \
             (Debian/Ubuntu: apt-get install -y postgresql), or set QUIVER_TEST_PG_BINDIR — \
             tests never skip"
        )
    })
}

/// The user and group the server runs as: `Some` when the test process is root.
fn server_user() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    for user in ["postgres", "nobody"] {
        if let (Some(uid), Some(gid)) = (id(&["-u", user]), id(&["-g", user])) {
            return Some((uid, gid));
        }
    }
    panic!("running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL")
}

/// A command that runs as the server user (when root), in a process group of its own (so a
/// Ctrl-C meant for the test run does not reach it first).
fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = server_user() {
        // std drops the supplementary groups too when a root parent sets the uid.
        cmd.uid(uid).gid(gid);
    }
    cmd.env_remove("PGDATA")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .process_group(0);
    cmd
}

/// Hands `path` (and everything under it) to the server user, when root.
pub fn hand_over(path: &Path) {
    let Some((uid, gid)) = server_user() else {
        return;
    };
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()
        .expect("run chown");
    assert!(
        status.success(),
        "chown -R {uid}:{gid} {} failed",
        path.display()
    );
}

/// A data directory made by `initdb`, shared by every test process of this machine: made once
/// into a directory of its own, then renamed into place (atomic; a process that lost the race
/// drops its own copy). Named after the binaries' directory, so another PostgreSQL gets its own.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let bindir = bindir();
        let tag = bindir.to_string_lossy().replace('/', "_");
        let path = std::env::temp_dir().join(format!("quiver-test-pgdata{tag}"));
        if path.join("data/PG_VERSION").is_file() {
            return path;
        }
        let dir = tempfile::tempdir().expect("cannot create a temp dir for initdb");
        hand_over(dir.path());
        let out = command(&bindir.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let made = dir.keep();
        if std::fs::rename(&made, &path).is_err() {
            // Another process put its template in place first.
            let _ = std::fs::remove_dir_all(&made);
        }
        path
    })
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}

/// One PostgreSQL server on 127.0.0.1, in its own temp directory.
pub struct PostgresServer {
    dir: TempDir,
    port: u16,
    /// The postmaster, leader of the server's process group; `None` while stopped.
    process: Option<Child>,
    /// Extra `-c name=value` settings it was started with, to start it again.
    settings: Vec<String>,
}

impl PostgresServer {
    /// Starts a fresh server (superuser `postgres`, trust authentication, database `postgres`).
    pub fn start() -> PostgresServer {
        Self::start_with(&[])
    }

    /// Starts a fresh server with extra `name=value` settings (as `-c name=value`).
    pub fn start_with(settings: &[&str]) -> PostgresServer {
        let dir = tempfile::tempdir().expect("cannot create a temp dir for postgres");
        let status = Command::new("cp")
            .arg("-a")
            .arg(template().join("data"))
            .arg(dir.path())
            .status()
            .expect("run cp");
        assert!(status.success(), "cannot copy the initdb template");
        hand_over(dir.path());
        let mut server = PostgresServer {
            dir,
            port: 0,
            process: None,
            settings: settings.iter().map(|s| s.to_string()).collect(),
        };
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!(
            "postgres did not start after {PORT_ATTEMPTS} attempts; log:\n{}",
            server.log_text()
        )
    }

    /// The temp directory (the data directory is its `data/`); owned by the server user.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The port it listens on (kept across [`PostgresServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id (its backends are its children, see [`children`]); `None`
    /// while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    /// `postgresql://postgres@127.0.0.1:<port>/postgres` (TLS off).
    pub fn url(&self) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// Starts the postmaster; false when it exited at once (typically: the port was taken).
    fn spawn(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).expect("log file");
        let mut cmd = command(&bindir().join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "shared_buffers=32MB", "-c", "max_connections=100"]);
        for setting in &self.settings {
            cmd.args(["-c", setting]);
        }
        cmd.stdout(log.try_clone().expect("log file")).stderr(log);
        let mut child = cmd.spawn().expect("cannot spawn postgres");
        let deadline = Instant::now() + STARTUP_BOUND;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            let ready = Command::new(bindir().join("pg_isready"))
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-t",
                    "1",
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                self.process = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                kill_group(&mut child);
                panic!(
                    "postgres on port {} did not accept connections within {STARTUP_BOUND:?}; log:\n{}",
                    self.port,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server and its backends with SIGKILL (as a crash would: no shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            kill_group(&mut child);
        }
    }

    /// Starts the server again on the same port, over the same data (after crash recovery).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + STARTUP_BOUND;
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "postgres could not start on port {} again; log:\n{}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Freezes (`true`, SIGSTOP) or thaws (`false`, SIGCONT) the server and every backend: it
    /// keeps its connections but answers nothing.
    pub fn pause(&self, frozen: bool) {
        let pid = self.process.as_ref().expect("server running").id();
        signal_tree(pid, if frozen { "-STOP" } else { "-CONT" });
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

/// The processes whose parent is `pid` (a postmaster's backends and helpers: each calls
/// `setsid`, so they are not in the postmaster's process group).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                // Fields after the command name (which may hold spaces): state, ppid, ...
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// Sends `signal` to process `pid` and its children.
fn signal_tree(pid: u32, signal: &str) {
    let mut pids: Vec<String> = children(pid).iter().map(u32::to_string).collect();
    pids.push(pid.to_string());
    let _ = Command::new("kill")
        .arg(signal)
        .arg("--")
        .args(&pids)
        .stderr(Stdio::null())
        .status();
}

/// SIGKILLs `child` (a postmaster) and its backends, reaps it, and waits (bounded) until none of
/// them is left, so the next server can take the data directory and its shared memory.
fn kill_group(child: &mut Child) {
    let pid = child.id();
    let backends = children(pid);
    signal_tree(pid, "-CONT");
    signal_tree(pid, "-KILL");
    let _ = child.wait();
    for _ in 0..200 {
        let alive = backends
            .iter()
            .any(|b| std::path::Path::new(&format!("/proc/{b}")).exists() && is_running(*b));
        if !alive {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True unless `pid` is gone or a zombie.
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}
