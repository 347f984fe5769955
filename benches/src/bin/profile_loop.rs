//! A fixed request loop for instruction-level profiling of Quiver's own request path.
//!
//! Sets up Redis and a small quickstart data set, then sends `--requests` lookups straight into
//! Quiver's router (`tower::ServiceExt::oneshot`: routing, metrics middleware, handler, L1 and
//! the Redis store — not hyper's HTTP/1 codec or sockets) on a single-threaded runtime, inside
//! the function `measured`, so callgrind can collect just that:
//!
//! ```text
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*profile_loop::measured*' \
//!     target/release/profile-loop --mode hit --entities 1 --requests 20000
//! ```
//!
//! `--monitoring RATE` monitors `user_features` against a profile of its source (drift monitoring
//! with `sample_rate: RATE`), so the instructions per request with and without it compare.
//! `--on-demand` looks up the three outputs of the on-demand view `user_risk` (the Wasm transform).
//! `--service NAME` looks up a feature service instead of five features: `fraud_model_v1` (no
//! logging), `fraud_model_v1_log1` (feature logging at 1%) or `fraud_model_v1_log100` (every
//! row logged), so the request path's cost of logging compares (the writer thread is not in the
//! profiled function).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, header};
use clap::Parser;
use http_body_util::BodyExt;
use quiver::clock::system_clock;
use quiver::offline::materialize::{MaterializeRequest, materialize};
use quiver::serving::{AppState, router};
use quiver_benches::env::{redis_section, registry_yaml};
use quiver_benches::keys::KeyDist;
use quiver_benches::ops::{Ask, Keys, LookupBody};
use quiver_tests::redis::RedisServer;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tower::ServiceExt;

#[derive(Parser, Debug)]
struct Args {
    /// `hit` (L1 on, warmed) or `miss` (L1 off: every lookup reads Redis).
    #[arg(long, default_value = "hit")]
    mode: String,
    /// Entities per request.
    #[arg(long, default_value_t = 1)]
    entities: usize,
    /// Requests in the measured loop.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Users generated and materialized.
    #[arg(long, default_value_t = 2_000)]
    users: usize,
    /// Drift monitoring of `user_features` with this sample rate (0: no `monitoring` section).
    #[arg(long, default_value_t = 0.0)]
    monitoring: f64,
    /// Look up this feature service instead of the five features of `user_features`.
    #[arg(long)]
    service: Option<String>,
    /// Look up the on-demand view `user_risk` (the Wasm transform) instead.
    #[arg(long, conflicts_with = "service")]
    on_demand: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir()?;
    quiver_benches::env::generate(
        dir.path(),
        args.users,
        chrono::Utc::now().timestamp_micros(),
    )?;
    let path = dir.path().join("feature_store.yaml");
    std::fs::write(&path, registry_yaml(&redis_section(&redis.url())))?;
    if args.monitoring > 0.0 {
        let registry = quiver::config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let profile = quiver::offline::profile::profile_view(
            &registry,
            "user_features",
            0,
            chrono::Utc::now().timestamp_micros(),
            Default::default(),
        )?;
        std::fs::write(dir.path().join("profile.json"), profile.to_json())?;
        let monitoring = format!(
            "monitoring:\n  sample_rate: {}\n  references:\n    - feature_view: user_features\n      profile: profile.json\n",
            args.monitoring
        );
        std::fs::write(
            &path,
            registry_yaml(&redis_section(&redis.url())) + &monitoring,
        )?;
    }
    let mut registry = quiver::config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    registry.cache.enabled = args.mode == "hit";
    let registry = Arc::new(registry);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let app = rt.block_on(async {
        let clock = system_clock();
        let store = registry.open_store(clock.clone()).await?;
        let request = MaterializeRequest {
            start: Some(0),
            end: clock.now_micros(),
            views: vec![],
            progress: false,
        };
        materialize(&registry, &store, &clock, &request).await?;
        let state = AppState::try_new(Arc::clone(&registry), store, clock)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok::<_, anyhow::Error>(router(state))
    })?;
    let body = LookupBody {
        ask: match &args.service {
            // The body builder takes a name that lives as long as the program.
            Some(name) => Ask::Service(Box::leak(name.clone().into_boxed_str())),
            None if args.on_demand => Ask::OnDemand,
            None => Ask::Features5,
        },
        entities: args.entities,
        keys: Keys::Dist(KeyDist::new(args.users, 0.0)),
    };
    // Warm: every user in L1 (when on), and every lazily built structure built.
    let mut rng = StdRng::seed_from_u64(1);
    rt.block_on(send(
        &app,
        &body,
        &mut rng,
        args.users * 4 / args.entities.max(1),
    ));
    let started = Instant::now();
    let bytes = measured(&rt, &app, &body, &mut rng, args.requests);
    let elapsed = started.elapsed();
    println!(
        "{} requests ({} mode, {} entities) in {:.3}s: {:.1} µs/request, {} response bytes",
        args.requests,
        args.mode,
        args.entities,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / args.requests as f64,
        bytes
    );
    drop(redis);
    Ok(())
}

/// The profiled region.
#[inline(never)]
fn measured(
    rt: &tokio::runtime::Runtime,
    app: &axum::Router,
    body: &LookupBody,
    rng: &mut StdRng,
    requests: usize,
) -> usize {
    rt.block_on(send(app, body, rng, requests))
}

async fn send(app: &axum::Router, body: &LookupBody, rng: &mut StdRng, n: usize) -> usize {
    let mut bytes = 0;
    for _ in 0..n {
        let request = Request::post("/get-online-features")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.build(rng)))
            .expect("valid request");
        let response = app.clone().oneshot(request).await.expect("infallible");
        assert!(response.status().is_success(), "{}", response.status());
        bytes += response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .len();
    }
    bytes
}
