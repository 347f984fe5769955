//! The requests of each scenario, and the raw Redis reads of the Redis floor.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use quiver::entity_key::{EntityKey, KeyPart};
use quiver::store::redis::record_key;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::aio::ConnectionManager;

use crate::client::Conn;
use crate::driver::Op;
use crate::env::{FEATURES_5, ON_DEMAND_3, PROJECT, VIEW};
use crate::keys::{KeyDist, push_user_json};

/// Where the entities of a request come from.
#[derive(Clone)]
pub enum Keys {
    /// Drawn from the key space.
    Dist(KeyDist),
    /// With probability `hot`, drawn from the (warmed) key space; otherwise the next never-read
    /// user of the cold pool `first..=last` (each read once: an L1 miss).
    Mixed {
        /// Hot key distribution.
        dist: KeyDist,
        /// Probability of a hot key.
        hot: f64,
        /// Next cold user, shared by all workers.
        next_cold: Arc<AtomicUsize>,
        /// First cold user.
        first: usize,
        /// Last cold user.
        last: usize,
    },
}

impl Keys {
    fn user(&self, rng: &mut StdRng) -> usize {
        match self {
            Keys::Dist(d) => d.sample(rng),
            Keys::Mixed {
                dist,
                hot,
                next_cold,
                first,
                last,
            } => {
                if rng.random_bool(*hot) {
                    dist.sample(rng)
                } else {
                    // Wraps around (to already-cached users) only if the pool runs out; the
                    // measured hit rate then shows it.
                    first + next_cold.fetch_add(1, Ordering::Relaxed) % (last - first + 1)
                }
            }
        }
    }
}

/// What a lookup request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// The five features of `user_features`.
    Features5,
    /// A feature service over two views ([`crate::env::SERVICE`] or one of its logging copies).
    Service(&'static str),
    /// The three outputs of the on-demand view `user_risk` (request field `amount` sent along).
    OnDemand,
}

/// Builds `/get-online-features` bodies: `entities` random users.
#[derive(Clone)]
pub struct LookupBody {
    /// What is asked.
    pub ask: Ask,
    /// Entities per request.
    pub entities: usize,
    /// Where they come from.
    pub keys: Keys,
}

impl LookupBody {
    /// A fresh body.
    pub fn build(&self, rng: &mut StdRng) -> Bytes {
        let mut out = Vec::with_capacity(160 + self.entities * 14);
        match self.ask {
            Ask::Features5 => {
                out.extend_from_slice(b"{\"features\":[");
                for (i, f) in FEATURES_5.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'"');
                    out.extend_from_slice(f.as_bytes());
                    out.push(b'"');
                }
                out.push(b']');
            }
            Ask::Service(service) => {
                out.extend_from_slice(b"{\"feature_service\":\"");
                out.extend_from_slice(service.as_bytes());
                out.push(b'"');
            }
            Ask::OnDemand => {
                out.extend_from_slice(b"{\"features\":[");
                for (i, f) in ON_DEMAND_3.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'"');
                    out.extend_from_slice(f.as_bytes());
                    out.push(b'"');
                }
                out.push(b']');
            }
        }
        out.extend_from_slice(b",\"entities\":{\"user_id\":[");
        for i in 0..self.entities {
            if i > 0 {
                out.push(b',');
            }
            push_user_json(&mut out, self.keys.user(rng));
        }
        if self.ask == Ask::OnDemand {
            use std::io::Write;
            out.extend_from_slice(b"],\"amount\":[");
            for i in 0..self.entities {
                if i > 0 {
                    out.push(b',');
                }
                let _ = write!(out, "{:.2}", rng.random_range(5.0..500.0f64));
            }
        }
        out.extend_from_slice(b"]}}");
        out.into()
    }
}

/// A worker posting lookups to `path` (Quiver's `/get-online-features`, or a floor route).
pub struct HttpOp {
    conn: Conn,
    path: String,
    body: LookupBody,
    rng: StdRng,
}

impl HttpOp {
    /// Connects one worker.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        body: LookupBody,
        seed: u64,
    ) -> anyhow::Result<Self> {
        Ok(HttpOp {
            conn: Conn::connect(addr).await?,
            path: path.to_string(),
            body,
            rng: StdRng::seed_from_u64(seed),
        })
    }
}

impl Op for HttpOp {
    async fn run(&mut self) -> anyhow::Result<u64> {
        let body = self.body.build(&mut self.rng);
        let (status, response) = self.conn.post(&self.path, body).await?;
        anyhow::ensure!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&response)
        );
        Ok(self.body.entities as u64)
    }

    async fn recover(&mut self) {
        let _ = self.conn.reconnect().await;
    }
}

/// A worker pushing `rows` random users' `user_sessions` rows per request to `/push`.
pub struct PushOp {
    conn: Conn,
    rows: usize,
    dist: KeyDist,
    rng: StdRng,
}

impl PushOp {
    /// Connects one worker.
    pub async fn connect(
        addr: SocketAddr,
        rows: usize,
        dist: KeyDist,
        seed: u64,
    ) -> anyhow::Result<Self> {
        Ok(PushOp {
            conn: Conn::connect(addr).await?,
            rows,
            dist,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    fn body(&mut self) -> Bytes {
        use std::io::Write;
        let now = chrono::Utc::now().timestamp_micros();
        let ts = quiver::serving::json::format_timestamp(now);
        let mut out = Vec::with_capacity(200 + self.rows * 80);
        out.extend_from_slice(b"{\"push_source_name\":\"");
        out.extend_from_slice(crate::env::PUSH_SOURCE.as_bytes());
        out.extend_from_slice(b"\",\"df\":{\"user_id\":[");
        for i in 0..self.rows {
            if i > 0 {
                out.push(b',');
            }
            push_user_json(&mut out, self.dist.sample(&mut self.rng));
        }
        out.extend_from_slice(b"],\"event_timestamp\":[");
        for i in 0..self.rows {
            if i > 0 {
                out.push(b',');
            }
            let _ = write!(out, "\"{ts}\"");
        }
        out.extend_from_slice(b"],\"sessions_24h\":[");
        for i in 0..self.rows {
            if i > 0 {
                out.push(b',');
            }
            let _ = write!(out, "{}", self.rng.random_range(0..12));
        }
        out.extend_from_slice(b"],\"last_device\":[");
        for i in 0..self.rows {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"\"web\"");
        }
        out.extend_from_slice(b"],\"avg_session_minutes\":[");
        for i in 0..self.rows {
            if i > 0 {
                out.push(b',');
            }
            let _ = write!(out, "{:.1}", self.rng.random_range(0.5..45.0f64));
        }
        out.extend_from_slice(b"]},\"to\":\"online\"}");
        out.into()
    }
}

impl Op for PushOp {
    async fn run(&mut self) -> anyhow::Result<u64> {
        let body = self.body();
        let (status, response) = self.conn.post("/push", body).await?;
        anyhow::ensure!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&response)
        );
        Ok(self.rows as u64)
    }

    async fn recover(&mut self) {
        let _ = self.conn.reconnect().await;
    }
}

/// The Redis floor: `MGET` of the record keys Quiver would read, through the same client
/// (multiplexed `ConnectionManager`s, round-robin, TCP_NODELAY) and with nothing else.
pub struct RedisOp {
    conns: Arc<[ConnectionManager]>,
    next: Arc<AtomicUsize>,
    entities: usize,
    dist: KeyDist,
    rng: StdRng,
}

impl RedisOp {
    /// One worker over shared connections.
    pub fn new(
        conns: Arc<[ConnectionManager]>,
        next: Arc<AtomicUsize>,
        entities: usize,
        dist: KeyDist,
        seed: u64,
    ) -> Self {
        RedisOp {
            conns,
            next,
            entities,
            dist,
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl Op for RedisOp {
    async fn run(&mut self) -> anyhow::Result<u64> {
        let mut mget = redis::cmd("MGET");
        for _ in 0..self.entities {
            let user = quickstart::user_id(self.dist.sample(&mut self.rng));
            let entity = EntityKey::new([KeyPart::Str(&user)]);
            mget.arg(record_key(PROJECT, VIEW, entity.as_bytes()));
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        let mut conn = self.conns[i].clone();
        let values: Vec<Option<Vec<u8>>> = mget.query_async(&mut conn).await?;
        anyhow::ensure!(values.len() == self.entities, "short MGET reply");
        Ok(self.entities as u64)
    }
}

/// Opens `n` connection managers configured as Quiver's `RedisStore` configures them (defaults:
/// 1 s connect, 500 ms response timeout, TCP_NODELAY).
pub async fn redis_connections(url: &str, n: usize) -> anyhow::Result<Arc<[ConnectionManager]>> {
    use std::time::Duration;
    let info = redis::IntoConnectionInfo::into_connection_info(url)?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let client = redis::Client::open(info)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_millis(500)))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1))
        .set_number_of_retries(3);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(ConnectionManager::new_with_config(client.clone(), config.clone()).await?);
    }
    Ok(conns.into())
}
