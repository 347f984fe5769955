//! Starting Quiver's HTTP server in-process on a free loopback port, and talking to it.

use std::net::SocketAddr;
use std::sync::Arc;

use quiver::clock::SharedClock;
use quiver::registry::Registry;
use quiver::serving::{AppState, serve};
use quiver::store::SharedStore;
use serde_json::Value as Json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server; stopped (gracefully) on drop.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (store, clock, plan).
    pub state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts a server for `registry` over `store` on `127.0.0.1:0`.
    pub async fn start(
        registry: Arc<Registry>,
        store: SharedStore,
        clock: SharedClock,
    ) -> TestServer {
        let state = AppState::new(registry, store, clock);
        Self::start_with_state(state).await
    }

    /// Starts a server over prepared state on `127.0.0.1:0`.
    pub async fn start_with_state(state: Arc<AppState>) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(serve(listener, Arc::clone(&state), async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            state,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs a raw body; returns the status and the parsed JSON body.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Json) {
        let response = client()
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body read");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {text}"));
        (status, json)
    }

    /// POSTs JSON; returns the status and the parsed JSON body.
    pub async fn post(&self, path: &str, body: &Json) -> (u16, Json) {
        self.post_raw(path, body.to_string()).await
    }

    /// GETs a path; returns the status and the body text.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = client()
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body read"))
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task").expect("server ran");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .expect("client")
    })
}

/// One column of a Feast response, by output name: (values, statuses, event_timestamps).
pub fn column<'a>(response: &'a Json, name: &str) -> (&'a Vec<Json>, Vec<&'a str>, Vec<&'a str>) {
    let names = response["metadata"]["feature_names"]
        .as_array()
        .expect("feature_names");
    let i = names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no column {name} in {response}"));
    let result = &response["results"][i];
    (
        result["values"].as_array().expect("values"),
        result["statuses"]
            .as_array()
            .expect("statuses")
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect(),
        result["event_timestamps"]
            .as_array()
            .expect("event_timestamps")
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect(),
    )
}

/// Opens the registry's online store, materializes every online view over `[0, end]` with
/// `clock`, and starts a server over the result. Returns the store (unwrapped by any cache) too.
pub async fn serve_materialized(
    registry: Arc<Registry>,
    clock: SharedClock,
    end: i64,
) -> (SharedStore, TestServer) {
    let store = registry
        .open_store(clock.clone())
        .await
        .expect("open the online store");
    let request = quiver::offline::materialize::MaterializeRequest {
        start: Some(0),
        end,
        views: vec![],
        progress: false,
    };
    quiver::offline::materialize::materialize(&registry, &store, &clock, &request)
        .await
        .expect("materialize");
    let server = TestServer::start(registry, store.clone(), clock).await;
    (store, server)
}

/// Polls `check` every 20 ms for up to `limit`; true as soon as it holds. For waiting on
/// asynchronous effects (reloads, invalidations, recoveries) without asserting on time.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    limit: std::time::Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}
