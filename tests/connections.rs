//! The connection layer under idle, slow, stalled and excess clients, against a real server on a
//! loopback port (and the real binary for SIGTERM).

use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver::clock::ManualClock;
use quiver_tests::fixtures::{T0, UserRow, load_registry, user_registry_yaml, write_user_rows};
use quiver_tests::server::{TestServer, serve_materialized};
use serde_json::json;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server over the embedded store with `server_settings` added to its `server` section.
async fn setup(server_settings: &str) -> (TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    write_user_rows(
        &dir.path().join("data/user_stats/part-0.parquet"),
        &[UserRow::new("alice", T0 - 3_600_000_000, 0.25, 7, "gold")],
    );
    let yaml = user_registry_yaml("  type: sqlite\n  path: online.db")
        .replace("server:\n", &format!("server:\n{server_settings}"));
    let registry = load_registry(dir.path(), &yaml);
    let (_, server) = serve_materialized(registry, Arc::new(ManualClock::new(T0)), T0).await;
    (dir, server)
}

async fn lookup(server: &TestServer) -> u16 {
    let (status, _) = server
        .post(
            "/get-online-features",
            &json!({"features": ["user_stats:score"], "entities": {"user_id": ["alice"]}}),
        )
        .await;
    status
}

/// Reads until the peer closes the connection (or `limit` passes); returns what was read.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(limit, tcp.read_to_end(&mut out)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn thousands_of_idle_and_slowloris_connections_do_not_keep_a_lookup_from_being_answered() {
    let (_dir, server) = setup("").await;
    let mut held = Vec::new();
    for i in 0..3000 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        if i % 2 == 1 {
            // Slowloris: headers started, never finished.
            tcp.write_all(b"POST /get-online-features HTTP/1.1\r\nhost: quiver\r\n")
                .await
                .unwrap();
        }
        held.push(tcp);
    }
    // Every one of them is still open and a normal lookup is answered.
    let answered = tokio::time::timeout(Duration::from_secs(10), lookup(&server)).await;
    assert_eq!(answered.expect("the lookup was answered"), 200);
    drop(held);
}

#[tokio::test]
async fn a_connection_over_the_cap_is_answered_503_and_closed() {
    let (_dir, server) = setup("  max_connections: 20\n").await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Let the server account for all twenty.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    let answer = read_until_closed(&mut extra, Duration::from_secs(5))
        .await
        .expect("the extra connection was closed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("TOO_MANY_CONNECTIONS"), "{answer}");
    assert!(answer.contains("server.max_connections"), "{answer}");
    // Once connections go away, new ones are served again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lookup(&server).await, 200);
}

#[tokio::test]
async fn a_request_whose_headers_never_finish_is_dropped_after_the_header_timeout() {
    let (_dir, server) = setup("  header_read_timeout: 1s\n  idle_timeout: 60s\n").await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"POST /get-online-features HTTP/1.1\r\nhost: q\r\n")
        .await
        .unwrap();
    let closed = read_until_closed(&mut tcp, Duration::from_secs(10)).await;
    assert!(
        closed.is_some(),
        "the slow connection was still open after 10s"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (_dir, server) = setup("  idle_timeout: 1s\n").await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let body = r#"{"features":["user_stats:score"],"entities":{"user_id":["alice"]}}"#;
    let request = format!(
        "POST /get-online-features HTTP/1.1\r\nhost: q\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    let answer = read_until_closed(&mut tcp, Duration::from_secs(10))
        .await
        .expect("the idle connection was closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_stalled_request_body_is_answered_408() {
    let (_dir, server) = setup("  body_read_timeout: 1s\n").await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(
        b"POST /get-online-features HTTP/1.1\r\nhost: q\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"features\":",
    )
    .await
    .unwrap();
    let answer = read_until_closed(&mut tcp, Duration::from_secs(10))
        .await
        .expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.body_read_timeout"), "{answer}");
}

#[tokio::test]
async fn a_method_the_route_does_not_take_is_answered_405_with_a_json_error() {
    let (_dir, server) = setup("").await;
    let response = reqwest::Client::new()
        .get(server.url("/get-online-features"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn sigterm_with_a_half_sent_request_exits_within_the_shutdown_deadline() {
    let dir = tempfile::tempdir().unwrap();
    write_user_rows(
        &dir.path().join("data/user_stats/part-0.parquet"),
        &[UserRow::new("alice", T0, 0.25, 7, "gold")],
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = user_registry_yaml("  type: sqlite\n  path: online.db").replace(
        "server:\n",
        &format!("server:\n  bind: 127.0.0.1:{port}\n  shutdown_timeout: 2s\n"),
    );
    let config = dir.path().join("feature_store.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_quiver-under-test"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut tcp = None;
    for _ in 0..200 {
        if let Ok(c) = TcpStream::connect(&addr).await {
            tcp = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tcp = tcp.expect("the server started listening");
    tcp.write_all(b"POST /get-online-features HTTP/1.1\r\nhost: q\r\ncontent-length: 100\r\n\r\n{")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if exited.is_none() {
        let _ = child.kill();
        panic!("quiver serve was still running 10s after SIGTERM (shutdown_timeout: 2s)");
    }
    drop(tcp);
}
