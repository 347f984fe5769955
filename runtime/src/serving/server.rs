//! The connection layer: accepts TCP connections and serves HTTP/1.1 on them with limits that
//! keep idle, slow and stalled clients from holding the server.
//!
//! - At most `server.max_connections` connections are served at once; a connection over the cap
//!   is answered `503` with a JSON body and closed at once, so its file descriptor is released.
//! - A connection that starts a request must deliver its headers within
//!   `server.header_read_timeout` (slowloris); one that sends nothing between requests is closed
//!   after `server.idle_timeout`.
//! - A request body must arrive within `server.body_read_timeout` (checked where bodies are
//!   read), and a whole request must be answered within `server.request_timeout`.
//! - On shutdown, accepting stops, idle connections close, in-flight requests may finish until
//!   `server.shutdown_timeout`; then every remaining connection is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::error::ApiError;
use crate::settings::ServerSettings;

/// The limits the connection layer enforces, from the `server` section.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time allowed for a request's headers once its first byte arrived.
    pub header_read_timeout: Duration,
    /// Time allowed for a request's whole body to arrive.
    pub body_read_timeout: Duration,
    /// Time a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time allowed to answer one request, body read included.
    pub request_timeout: Duration,
    /// Time in-flight requests get to finish after shutdown begins.
    pub shutdown_timeout: Duration,
}

impl ConnectionLimits {
    /// The limits configured in `server`.
    pub fn from_settings(settings: &ServerSettings) -> Self {
        ConnectionLimits {
            max_connections: settings.max_connections,
            header_read_timeout: settings.header_read_timeout.0,
            body_read_timeout: settings.body_read_timeout.0,
            idle_timeout: settings.idle_timeout.0,
            request_timeout: settings.request_timeout.0,
            shutdown_timeout: settings.shutdown_timeout.0,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then drains connections within
/// `limits.shutdown_timeout`.
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let started = Instant::now();
    // Tells every connection task to stop taking new requests; a watch channel because each task
    // only needs the latest value and late subscribers must still see it.
    let (stop_tx, stop_rx) = watch::channel(false);
    let active = Arc::new(AtomicUsize::new(0));
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            // Reap finished tasks so the set does not grow with the connection count.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (tcp, _) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Responses are small single writes: without TCP_NODELAY, Nagle's algorithm and delayed
        // ACKs can hold them back for tens of milliseconds.
        let _ = tcp.set_nodelay(true);
        if active.load(Ordering::Relaxed) >= limits.max_connections {
            connections.spawn(reject_over_capacity(tcp, limits.max_connections));
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let guard = ActiveGuard(Arc::clone(&active));
        connections.spawn(serve_one(
            tcp,
            router.clone(),
            limits,
            started,
            stop_rx.clone(),
            guard,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "shutdown deadline reached; closing the remaining connections"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Decrements the active connection count when a connection task ends, however it ends.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers a connection over the cap with a complete 503 and closes it.
async fn reject_over_capacity(mut tcp: TcpStream, max: usize) {
    let body = format!(
        r#"{{"error":{{"code":"TOO_MANY_CONNECTIONS","message":"the server is serving its limit of {max} connections (server.max_connections); retry later"}}}}"#
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await
    })
    .await;
}

/// What a connection's watchdog needs to know: requests in flight, and when bytes last arrived.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since the server started, when the connection last became idle (a response
    /// was produced, or it opened).
    idle_since_ms: AtomicU64,
    /// Whether bytes of a next request arrived since it became idle.
    reading: AtomicBool,
    /// When those first bytes arrived.
    reading_since_ms: AtomicU64,
}

async fn serve_one(
    tcp: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    started: Instant,
    mut stop: watch::Receiver<bool>,
    _guard: ActiveGuard,
) {
    let now_ms = move || started.elapsed().as_millis() as u64;
    let activity = Arc::new(Activity::default());
    activity.idle_since_ms.store(now_ms(), Ordering::Relaxed);
    let io = WatchedIo {
        inner: tcp,
        activity: Arc::clone(&activity),
        now_ms: Box::new(now_ms),
    };
    let service_activity = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let router = router.clone();
        let activity = Arc::clone(&service_activity);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.reading.store(false, Ordering::Relaxed);
        async move {
            let request =
                request.map(|body| Body::new(TimedBody::new(body, limits.body_read_timeout)));
            let response =
                tokio::time::timeout(limits.request_timeout, router.oneshot(request)).await;
            activity.in_flight.fetch_sub(1, Ordering::Relaxed);
            activity.idle_since_ms.store(now_ms(), Ordering::Relaxed);
            match response {
                Ok(Ok(response)) => Ok::<Response, std::convert::Infallible>(response),
                Ok(Err(never)) => match never {},
                Err(_) => Ok(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "REQUEST_TIMEOUT",
                    format!(
                        "the request was not answered within {:?} (server.request_timeout)",
                        limits.request_timeout
                    ),
                )
                .into_response()),
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    // hyper's own header timer is a backstop; the watchdog below enforces the configured limits.
    builder.header_read_timeout(limits.header_read_timeout.max(limits.idle_timeout));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let header_ms = limits.header_read_timeout.as_millis() as u64;
    let idle_ms = limits.idle_timeout.as_millis() as u64;
    // Waking every connection often costs CPU when thousands are open; half the header limit
    // bounds how late a slow request is caught.
    let check_every = (limits.header_read_timeout / 2).max(Duration::from_millis(50));
    let mut wait = check_every.min(limits.idle_timeout);
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || *stop.borrow() {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep(wait) => {
                if activity.in_flight.load(Ordering::Relaxed) > 0 {
                    wait = check_every;
                    continue;
                }
                let now = now_ms();
                // A request that never completes its headers, or a connection left idle.
                let (since, limit) = if activity.reading.load(Ordering::Relaxed) {
                    (activity.reading_since_ms.load(Ordering::Relaxed), header_ms)
                } else {
                    (activity.idle_since_ms.load(Ordering::Relaxed), idle_ms)
                };
                let deadline = since.saturating_add(limit);
                if now >= deadline {
                    return;
                }
                // Sleep until the deadline, but look again at least every `check_every`: a
                // request may start reading meanwhile, with a shorter limit.
                wait = Duration::from_millis(deadline - now).min(check_every);
            }
        }
    }
}

/// A TCP stream that records when the bytes of a new request start arriving.
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
    now_ms: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before
            && self.activity.in_flight.load(Ordering::Relaxed) == 0
            && !self.activity.reading.swap(true, Ordering::Relaxed)
        {
            let now = (self.now_ms)();
            self.activity.reading_since_ms.store(now, Ordering::Relaxed);
        }
        result
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that fails with [`BodyTimeout`] when it has not fully arrived within its limit,
/// so a stalled upload cannot hold a connection and its buffer.
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl TimedBody {
    fn new(inner: Incoming, limit: Duration) -> Self {
        TimedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

/// The request body did not arrive within `server.body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?} (server.body_read_timeout)")]
pub struct BodyTimeout(pub Duration);

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
