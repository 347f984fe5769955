//! A lean HTTP/1.1 keep-alive client: one hyper connection per load worker, TCP_NODELAY, no
//! pooling, retries or redirects — the least client work per request that still speaks HTTP.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Body = Either<Full<Bytes>, Empty<Bytes>>;

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Body>,
    addr: SocketAddr,
    host: HeaderValue,
}

impl Conn {
    /// Connects to `addr` with TCP_NODELAY set.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
        })
    }

    /// Reconnects after a broken connection.
    pub async fn reconnect(&mut self) -> anyhow::Result<()> {
        *self = Conn::connect(self.addr).await?;
        Ok(())
    }

    /// POSTs a JSON body; returns the status and the whole response body.
    pub async fn post(&mut self, path: &str, body: Bytes) -> anyhow::Result<(StatusCode, Bytes)> {
        self.post_accepting(path, body, None).await
    }

    /// POSTs a JSON body with an `Accept` header (none when `accept` is `None`); returns the
    /// status and the whole response body.
    pub async fn post_accepting(
        &mut self,
        path: &str,
        body: Bytes,
        accept: Option<&'static str>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(accept) = accept {
            request = request.header(ACCEPT, HeaderValue::from_static(accept));
        }
        self.send(request.body(Either::Left(Full::new(body)))?)
            .await
    }

    /// GETs a path; returns the status and the whole response body.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(HOST, self.host.clone())
            .body(Either::Right(Empty::new()))?;
        self.send(request).await
    }

    async fn send(&mut self, request: Request<Body>) -> anyhow::Result<(StatusCode, Bytes)> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
