//! Real `redis-server` processes for tests: a standalone server ([`RedisServer`]), a Redis
//! Cluster of masters ([`RedisCluster`]), and a primary with a replica watched by Redis Sentinel
//! ([`RedisSentinelGroup`]), each on free loopback ports in its own temporary directory, killed
//! when dropped. Every test starts its own, so tests run in parallel.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server gets to answer PING, or a cluster to reach `cluster_state:ok`.
const STARTUP_BOUND: Duration = Duration::from_secs(20);
/// Attempts at finding a port nobody else grabbed in the meantime.
const PORT_ATTEMPTS: usize = 20;

/// The `redis-server` binary, or a panic telling how to install it.
fn redis_server_bin() -> PathBuf {
    find_on_path("redis-server").unwrap_or_else(|| {
        panic!(
            "redis-server not found: install it (Debian/Ubuntu: apt-get install -y redis-server) \
             — tests never skip"
        )
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A free loopback port (the OS picks it; it may be taken again before use, callers retry).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A free port below 55000 whose cluster bus port (port + 10000) is free too.
fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        if port < 55000 && port_is_free(port + 10000) {
            return port;
        }
        // Ephemeral ports are often above 55000: try one of the lower range directly.
        let guess = 20000 + (rand::random::<u16>() % 35000);
        if port_is_free(guess) && port_is_free(guess + 10000) {
            return guess;
        }
    }
    panic!("no free port pair (port, port + 10000) on 127.0.0.1")
}

/// Opens a synchronous connection to a local Redis, for administration in tests.
pub fn admin_connection(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    client.get_connection_with_timeout(Duration::from_secs(2))
}

/// Sends one command to a local Redis.
pub fn admin<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let mut conn = admin_connection(port)?;
    cmd.query(&mut conn)
}

/// One `redis-server` child process bound to 127.0.0.1.
struct Process {
    child: Child,
    port: u16,
    log: PathBuf,
    /// Directory and extra arguments it was started with, to start it again.
    dir: PathBuf,
    extra: Vec<String>,
}

impl Process {
    /// Spawns `redis-server` on `port` in `dir` with `extra` arguments; `None` if it exited at once
    /// (typically because the port was taken).
    fn spawn(port: u16, dir: &Path, extra: &[&str]) -> Option<Process> {
        let log = dir.join(format!("redis-{port}.log"));
        let mut cmd = Command::new(redis_server_bin());
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("cannot spawn redis-server");
        exit_cleanup::register(child.id());
        let mut process = Process {
            child,
            port,
            log,
            dir: dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        let deadline = Instant::now() + STARTUP_BOUND;
        loop {
            if let Ok(Some(_)) = process.child.try_wait() {
                return None;
            }
            if admin::<String>(port, &redis::cmd("PING")).is_ok_and(|p| p == "PONG") {
                return Some(process);
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server on port {port} did not answer PING within {STARTUP_BOUND:?}; log:\n{}",
                    process.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Spawns a sentinel on `port` in `dir` watching the primary on `primary_port` as
    /// `master_name`; `None` if it exited at once.
    fn spawn_sentinel(
        port: u16,
        dir: &Path,
        master_name: &str,
        primary_port: u16,
    ) -> Option<Process> {
        let log = dir.join(format!("sentinel-{port}.log"));
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {log}\n\
                 sentinel monitor {master_name} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {master_name} 1000\n\
                 sentinel failover-timeout {master_name} 5000\n\
                 sentinel parallel-syncs {master_name} 1\n",
                dir = dir.display(),
                log = log.display(),
            ),
        )
        .expect("cannot write sentinel.conf");
        let child = Command::new(redis_server_bin())
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot spawn redis-server --sentinel");
        exit_cleanup::register(child.id());
        let mut process = Process {
            child,
            port,
            log,
            dir: dir.to_path_buf(),
            extra: Vec::new(),
        };
        let deadline = Instant::now() + STARTUP_BOUND;
        loop {
            if let Ok(Some(_)) = process.child.try_wait() {
                let log = process.log_text();
                assert!(
                    !log.contains("sentinel") || log.contains("Address already in use"),
                    "redis-server --sentinel exited: install Sentinel support (Debian/Ubuntu: \
                     apt-get install -y redis-sentinel redis-server); log:\n{log}"
                );
                return None;
            }
            if admin::<String>(port, &redis::cmd("PING")).is_ok_and(|p| p == "PONG") {
                return Some(process);
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server --sentinel on port {port} did not answer PING within \
                     {STARTUP_BOUND:?}: install Sentinel support (Debian/Ubuntu: apt-get install -y \
                     redis-sentinel redis-server); log:\n{}",
                    process.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process again on its port, with its directory and arguments.
    fn respawn(&self) -> Option<Process> {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        Process::spawn(self.port, &self.dir, &extra)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        exit_cleanup::unregister(self.child.id());
    }
}

/// Servers still running when the test process exits are killed then: a shared fixture kept in
/// a `static` (as `tests/import_feast.rs` does) is never dropped, so its `Drop` never runs.
mod exit_cleanup {
    use std::sync::{Mutex, Once};

    // The pids of the running servers; locked briefly to add, remove, or kill them at exit.
    static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    static HOOK: Once = Once::new();

    unsafe extern "C" {
        fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
    }

    extern "C" fn kill_running() {
        let pids = match RUNNING.lock() {
            Ok(mut pids) => std::mem::take(&mut *pids),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for pid in pids {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &pid.to_string()])
                .status();
        }
    }

    pub(super) fn register(pid: u32) {
        // SAFETY: `kill_running` is a plain function that stays valid for the whole process.
        HOOK.call_once(|| unsafe {
            atexit(kill_running);
        });
        if let Ok(mut pids) = RUNNING.lock() {
            pids.push(pid);
        }
    }

    pub(super) fn unregister(pid: u32) {
        if let Ok(mut pids) = RUNNING.lock() {
            pids.retain(|&p| p != pid);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A standalone `redis-server` on a free loopback port, killed on drop.
pub struct RedisServer {
    dir: TempDir,
    port: u16,
    process: Option<Process>,
}

impl RedisServer {
    /// Starts a server and waits (bounded) until it answers PING.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("cannot create a temp dir for redis-server");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            if let Some(process) = Process::spawn(port, dir.path(), &[]) {
                return RedisServer {
                    dir,
                    port,
                    process: Some(process),
                };
            }
        }
        panic!("redis-server did not start after {PORT_ATTEMPTS} attempts at a free port");
    }

    /// Starts a server that also accepts TLS connections on a second port, with a certificate for
    /// `127.0.0.1` and `localhost` signed by a throwaway CA (made with the `openssl` command).
    /// Returns the server, its TLS port and the CA certificate's path (to trust it).
    pub fn start_with_tls() -> (RedisServer, u16, PathBuf) {
        let dir = tempfile::tempdir().expect("cannot create a temp dir for redis-server");
        let ca = make_test_certificates(dir.path());
        let arg = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let (cert, key, ca_arg) = (arg("server.crt"), arg("server.key"), arg("ca.crt"));
        for _ in 0..PORT_ATTEMPTS {
            let (port, tls_port) = (free_port(), free_port());
            let tls_port_arg = tls_port.to_string();
            let extra = [
                "--tls-port",
                &tls_port_arg,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca_arg,
                "--tls-auth-clients",
                "no",
            ];
            if let Some(process) = Process::spawn(port, dir.path(), &extra) {
                let server = RedisServer {
                    dir,
                    port,
                    process: Some(process),
                };
                return (server, tls_port, ca);
            }
        }
        panic!("redis-server with TLS did not start after {PORT_ATTEMPTS} attempts")
    }

    /// The port the server listens on (kept across [`RedisServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would: no shutdown handshake).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the server again on the same port (empty: persistence is off).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + STARTUP_BOUND;
        loop {
            if let Some(process) = Process::spawn(self.port, self.dir.path(), &[]) {
                self.process = Some(process);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server could not bind port {} again",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A synchronous connection for administration.
    pub fn connection(&self) -> redis::Connection {
        admin_connection(self.port).expect("cannot connect to the test redis-server")
    }
}

/// Writes `ca.crt`, `server.crt` and `server.key` into `dir`; returns the CA certificate's path.
pub fn make_test_certificates(dir: &Path) -> PathBuf {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}): install it (Debian/Ubuntu: apt-get install -y openssl)"));
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write ext.cnf");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=Quiver test CA",
        "-days",
        "2",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    dir.join("ca.crt")
}

/// A Redis Cluster of masters without replicas on free loopback ports, killed on drop.
pub struct RedisCluster {
    _dir: TempDir,
    nodes: Vec<Process>,
}

impl RedisCluster {
    /// Starts `masters` cluster-enabled servers, joins them with `redis-cli --cluster create`, and
    /// waits (bounded) until every node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> RedisCluster {
        assert!(masters >= 3, "Redis Cluster needs at least 3 masters");
        let dir = tempfile::tempdir().expect("cannot create a temp dir for the cluster");
        let mut nodes = Vec::with_capacity(masters);
        while nodes.len() < masters {
            let mut started = None;
            for _ in 0..PORT_ATTEMPTS {
                let port = free_cluster_port();
                let node_dir = dir.path().join(port.to_string());
                std::fs::create_dir_all(&node_dir).expect("cannot create a node dir");
                let config = format!("nodes-{port}.conf");
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &config,
                    "--cluster-node-timeout",
                    "5000",
                ];
                if let Some(p) = Process::spawn(port, &node_dir, &extra) {
                    started = Some(p);
                    break;
                }
            }
            nodes.push(started.expect("a cluster node did not start on any free port"));
        }
        let cluster = RedisCluster { _dir: dir, nodes };
        cluster.create();
        cluster.wait_until_ok();
        cluster
    }

    fn create(&self) {
        let cli = find_on_path("redis-cli").expect("redis-cli not found next to redis-server");
        let mut cmd = Command::new(cli);
        cmd.args(["--cluster", "create"]);
        for node in &self.nodes {
            cmd.arg(format!("127.0.0.1:{}", node.port));
        }
        cmd.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = cmd.output().expect("cannot run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn wait_until_ok(&self) {
        let deadline = Instant::now() + STARTUP_BOUND;
        for node in &self.nodes {
            loop {
                let info: String =
                    admin(node.port, redis::cmd("CLUSTER").arg("INFO")).unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} did not reach cluster_state:ok: {info}",
                    node.port
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Kills the master on `port` (as a crash would); its slots are no longer served.
    pub fn stop_master(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("no master on that port");
        node.kill();
    }

    /// Starts the master on `port` again (it rejoins with its slots, empty: persistence is off) and
    /// waits (bounded) until every node reports `cluster_state:ok`.
    pub fn restart_master(&mut self, port: u16) {
        let i = self
            .nodes
            .iter()
            .position(|n| n.port == port)
            .expect("no master on that port");
        let deadline = Instant::now() + STARTUP_BOUND;
        let process = loop {
            if let Some(p) = self.nodes[i].respawn() {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "cluster master could not bind port {port} again"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        // The old handle's process is dead already; replacing it only reaps it.
        self.nodes[i] = process;
        self.wait_until_ok();
    }

    /// The ports of the masters.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Feast-style seed list: `127.0.0.1:<p1>,127.0.0.1:<p2>,...`.
    pub fn connection_string(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node id (`CLUSTER MYID`) of the master on `port`.
    pub fn node_id(&self, port: u16) -> String {
        admin(port, redis::cmd("CLUSTER").arg("MYID")).expect("CLUSTER MYID failed")
    }

    /// The port of the master serving `slot`, as the first node sees it.
    pub fn slot_owner(&self, slot: u16) -> u16 {
        let slots: redis::Value =
            admin(self.nodes[0].port, redis::cmd("CLUSTER").arg("SLOTS")).expect("CLUSTER SLOTS");
        let redis::Value::Array(ranges) = slots else {
            panic!("unexpected CLUSTER SLOTS reply: {slots:?}")
        };
        for range in ranges {
            let redis::Value::Array(items) = range else {
                continue;
            };
            let (Some(redis::Value::Int(lo)), Some(redis::Value::Int(hi))) =
                (items.first(), items.get(1))
            else {
                continue;
            };
            if (*lo..=*hi).contains(&i64::from(slot))
                && let Some(redis::Value::Array(master)) = items.get(2)
                && let Some(redis::Value::Int(port)) = master.get(1)
            {
                return *port as u16;
            }
        }
        panic!("slot {slot} is not served by any node")
    }
}

/// A primary and one replica (`replicaof`) watched by sentinels (`redis-server --sentinel`,
/// quorum 1, down after 1 s), on free loopback ports, killed on drop.
pub struct RedisSentinelGroup {
    _dir: TempDir,
    primary: Option<Process>,
    replica: Process,
    sentinels: Vec<Process>,
}

impl RedisSentinelGroup {
    /// The name the sentinels monitor the primary under.
    pub const MASTER_NAME: &'static str = "quivermaster";

    /// Starts the primary, the replica and `sentinels` sentinels, and waits (bounded) until the
    /// replica is in sync and every sentinel knows it (so a failover can promote it).
    pub fn start(sentinels: usize) -> RedisSentinelGroup {
        assert!((1..=3).contains(&sentinels), "1 to 3 sentinels");
        let dir = tempfile::tempdir().expect("cannot create a temp dir for the sentinel group");
        let start = |name: &str, extra: &dyn Fn(u16) -> Vec<String>| {
            let node_dir = dir.path().join(name);
            std::fs::create_dir_all(&node_dir).expect("cannot create a node dir");
            for _ in 0..PORT_ATTEMPTS {
                let port = free_port();
                let args = extra(port);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                if let Some(p) = Process::spawn(port, &node_dir, &args) {
                    return p;
                }
            }
            panic!("{name} did not start on any free port");
        };
        let primary = start("primary", &|_| Vec::new());
        let primary_port = primary.port.to_string();
        let replica = start("replica", &|_| {
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary_port.clone(),
            ]
        });
        let mut watchers = Vec::new();
        for i in 0..sentinels {
            let node_dir = dir.path().join(format!("sentinel-{i}"));
            std::fs::create_dir_all(&node_dir).expect("cannot create a sentinel dir");
            let mut started = None;
            for _ in 0..PORT_ATTEMPTS {
                if let Some(p) =
                    Process::spawn_sentinel(free_port(), &node_dir, Self::MASTER_NAME, primary.port)
                {
                    started = Some(p);
                    break;
                }
            }
            watchers.push(started.expect("a sentinel did not start on any free port"));
        }
        let group = RedisSentinelGroup {
            _dir: dir,
            primary: Some(primary),
            replica,
            sentinels: watchers,
        };
        group.wait_until_watched();
        group
    }

    fn wait_until_watched(&self) {
        let deadline = Instant::now() + STARTUP_BOUND;
        loop {
            let info: String =
                admin(self.replica.port, redis::cmd("INFO").arg("replication")).unwrap_or_default();
            let synced = info.contains("master_link_status:up");
            let known = self.sentinels.iter().all(|s| {
                admin::<redis::Value>(
                    s.port,
                    redis::cmd("SENTINEL")
                        .arg("REPLICAS")
                        .arg(Self::MASTER_NAME),
                )
                .is_ok_and(|v| matches!(v, redis::Value::Array(r) if !r.is_empty()))
            });
            if synced && known {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not sync or the sentinels did not see it: {info}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Feast-style list of the sentinels: `127.0.0.1:<s1>,127.0.0.1:<s2>,...`.
    pub fn connection_string(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the replica (the primary after a failover).
    pub fn replica_port(&self) -> u16 {
        self.replica.port
    }

    /// The port of the first primary.
    pub fn primary_port(&self) -> u16 {
        self.primary
            .as_ref()
            .map(|p| p.port)
            .expect("primary already killed")
    }

    /// Waits until the replica has every write of the primary, then kills the primary (as a
    /// crash would).
    pub fn kill_primary(&mut self) {
        let port = self.primary_port();
        // WAIT covers the writes of its own connection only: a write of ours, acknowledged by the
        // replica, comes after every earlier write in the replication stream.
        let mut conn = admin_connection(port).expect("cannot reach the primary");
        let () = redis::cmd("SET")
            .arg("quiver-test:fence")
            .arg(1)
            .query(&mut conn)
            .expect("SET on the primary");
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(5000)
            .query(&mut conn)
            .expect("WAIT on the primary");
        assert_eq!(
            acked, 1,
            "the replica did not acknowledge the primary's writes"
        );
        if let Some(mut p) = self.primary.take() {
            p.kill();
        }
    }

    /// Waits (bounded by `within`) until every sentinel names the replica as the primary and the
    /// replica has taken the role; panics otherwise.
    pub fn wait_for_failover(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let named = self.sentinels.iter().all(|s| {
                admin::<Vec<String>>(
                    s.port,
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(Self::MASTER_NAME),
                )
                .is_ok_and(|a| a.get(1) == Some(&self.replica.port.to_string()))
            });
            let role: String =
                admin(self.replica.port, redis::cmd("INFO").arg("replication")).unwrap_or_default();
            if named && role.contains("role:master") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no failover to the replica within {within:?}; sentinel log:\n{}",
                self.sentinels[0].log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
