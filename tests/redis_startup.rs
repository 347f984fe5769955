//! The real `quiver serve` process with Redis down at start-up: it starts, answers `/ready` and
//! lookups with 503, and becomes ready by itself once Redis comes up. A malformed connection string
//! still stops it at start-up.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use quiver_tests::fixtures::{load_registry, user_registry_yaml};
use quiver_tests::redis::RedisServer;
use serde_json::{Value, json};

/// `quiver serve` in its own process (see `quiver-under-test` in Cargo.toml), killed on drop.
struct Quiver {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Quiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver-under-test"));
    cmd.arg("-c")
        .arg(config)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("QUIVER_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

impl Quiver {
    /// Starts `quiver -c <config> serve` on a free port; the address comes from its start-up log.
    fn start(config: &Path) -> Quiver {
        let mut child = command(config).spawn().expect("start quiver");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        // Echoes the log for diagnostics and drains it, so the process never blocks on the pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("quiver: {line}");
                if let Some(rest) = line.split("serving on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.parse::<SocketAddr>().expect("address in the log"));
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("quiver serve did not start within 60 s while Redis was down");
        Quiver { child, addr }
    }

    async fn get(&self, path: &str) -> u16 {
        reqwest::get(format!("http://{}{path}", self.addr))
            .await
            .expect("quiver answers")
            .status()
            .as_u16()
    }

    async fn lookup(&self) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("http://{}/get-online-features", self.addr))
            .json(&json!({"features": ["user_stats:tier"], "entities": {"user_id": ["alice"]}}))
            .send()
            .await
            .expect("quiver answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }
}

fn write_config(dir: &Path, connection_string: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("data/user_stats")).unwrap();
    let store = format!(
        "  type: redis\n  connection_string: \"{connection_string}\"\n  connect_timeout: 300ms\n  command_timeout: 300ms\n"
    );
    load_registry(dir, &user_registry_yaml(&store));
    dir.join("feature_store.yaml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiver_serve_starts_unready_while_redis_is_down_and_becomes_ready_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    tokio::task::block_in_place(|| redis.stop());
    let config = write_config(dir.path(), &redis.url());

    let quiver = tokio::task::block_in_place(|| Quiver::start(&config));
    assert_eq!(quiver.get("/health").await, 200);
    assert_eq!(quiver.get("/ready").await, 503);
    let (status, body) = quiver.lookup().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "STORE_UNAVAILABLE", "{body}");

    tokio::task::block_in_place(|| redis.restart());
    let deadline = Instant::now() + Duration::from_secs(20);
    while quiver.get("/ready").await != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready 20 s after Redis came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = quiver.lookup().await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiver_serve_with_a_malformed_connection_string_stops_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "redis://localhost:notaport");
    let output = tokio::task::spawn_blocking(move || {
        let mut child = command(&config).spawn().expect("start quiver");
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("quiver serve kept running with a malformed connection string");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connection_string"), "{stderr}");
}
