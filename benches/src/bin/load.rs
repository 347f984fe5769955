//! The load suite: `cargo run --release -p quiver-benches --bin load -- [--seconds S] [--zipf S]`.
//!
//! Starts Redis and PostgreSQL, materializes the quickstart data into both, starts Quiver (L1 on
//! and off over Redis, L1 off over PostgreSQL) and the HTTP floor in-process on a server runtime of
//! their own, drives closed-loop load from a separate client runtime, prints one table (with the
//! CPU time each request cost Quiver and the store, from `/proc`) and writes
//! `target/bench/load.json`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use quiver_benches::client::Conn;
use quiver_benches::cpu;
use quiver_benches::driver::{Op, Outcome, Window, closed_loop};
use quiver_benches::env::{Env, target_dir, wait_listening};
use quiver_benches::keys::KeyDist;
use quiver_benches::ops::{Ask, HttpOp, Keys, LookupBody, PushOp, RedisOp, redis_connections};
use quiver_benches::report::{Row, table};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[derive(Parser, Debug, serde::Serialize)]
#[command(about = "Quiver's load suite, with its physical floors measured in the same run")]
struct Args {
    /// Measured seconds per scenario and concurrency.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Warm-up seconds before each measurement (excluded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Closed-loop concurrencies (connections).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Zipf exponent of the key distribution; 0 is uniform.
    #[arg(long, default_value_t = 0.0)]
    zipf: f64,
    /// Users in the key space.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Extra users, materialized but never warmed: the misses of the mixed scenario.
    #[arg(long, default_value_t = 100_000)]
    cold_users: usize,
    /// L1 hit rate the mixed scenario aims at.
    #[arg(long, default_value_t = 0.73)]
    hit_rate: f64,
    /// Rows per `/push` request.
    #[arg(long, default_value_t = 100)]
    push_rows: usize,
    /// Worker threads of the server runtime (Quiver, HTTP floor).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the load-client runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Run only these scenarios (and the floors they compare with); comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Rounds of the feature-logging comparison (off, 1%, 100%, interleaved) per concurrency;
    /// each variant's row is the median of its rounds. 0 skips it.
    #[arg(long, default_value_t = 3)]
    logging_rounds: usize,
    /// The variants of the feature-logging comparison, from `off`, `1%`, `100%` (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "off,1%,100%")]
    logging_variants: Vec<String>,
    /// Where to write the JSON results (default: target/bench/load.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// How a scenario generates load.
#[derive(Clone)]
enum Kind {
    /// `POST /floor/<i>` on the floor server with the request bodies of a lookup scenario.
    HttpFloor { route: usize, body: LookupBody },
    /// `MGET` of the same keys.
    RedisFloor { entities: usize },
    /// `POST /get-online-features` to one of the Quiver servers.
    Lookup { target: Target, body: LookupBody },
    /// `POST /push`.
    Push,
}

/// Which Quiver server a lookup scenario talks to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// L1 on, over Redis.
    Cached,
    /// L1 off, over Redis: every lookup reads Redis.
    Redis,
    /// L1 off, over PostgreSQL: every lookup reads PostgreSQL.
    Postgres,
}

struct Scenario {
    name: String,
    kind: Kind,
    /// The floor scenario this one is compared with.
    floor: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let window = Window {
        warmup: Duration::from_secs_f64(args.warmup),
        measure: Duration::from_secs_f64(args.seconds),
    };
    let dist = KeyDist::new(args.users, args.zipf);
    let env = Env::start(args.users, args.cold_users, args.server_threads)?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name("load-client")
        .enable_all()
        .build()?;
    wait_listening(env.cached.addr)?;
    wait_listening(env.uncached.addr)?;

    // Every user of the key space in L1, both views, before anything is measured.
    let present = client_rt.block_on(warm(env.cached.addr, args.users))?;
    // Users without a live `user_features` row are answered from L1 as cached NOT_FOUNDs, which
    // count neither as hits nor as misses; the hot share is set so that hits / (hits + misses)
    // comes out at `--hit-rate`.
    let mut rng = StdRng::seed_from_u64(3);
    let q = (0..20_000)
        .filter(|_| present[dist.sample(&mut rng)])
        .count() as f64
        / 20_000.0;
    let hot_share = args.hit_rate / (q * (1.0 - args.hit_rate) + args.hit_rate);
    eprintln!(
        "{:.1}% of drawn users have a live row; mixed scenario: {:.1}% hot keys",
        q * 100.0,
        hot_share * 100.0
    );

    let f5 = |entities: usize, keys: Keys| LookupBody {
        ask: Ask::Features5,
        entities,
        keys,
    };
    let hot = Keys::Dist(dist.clone());
    let on_demand = LookupBody {
        ask: Ask::OnDemand,
        entities: 10,
        keys: hot.clone(),
    };
    let shapes = [
        (f5(1, hot.clone()), "1-entity"),
        (f5(10, hot.clone()), "10-entity"),
        (f5(100, hot.clone()), "100-entity"),
        (on_demand.clone(), "10-entity on-demand"),
    ];
    // Floor bodies: real Quiver responses of each shape, so the floor writes as many bytes.
    let samples: Vec<Bytes> = client_rt.block_on(async {
        let mut conn = Conn::connect(env.cached.addr).await?;
        let mut rng = StdRng::seed_from_u64(7);
        let mut out = Vec::new();
        for (shape, _) in &shapes {
            let body = shape.build(&mut rng);
            let (status, response) = conn.post("/get-online-features", body).await?;
            anyhow::ensure!(status.is_success(), "sample lookup failed: {status}");
            let text = String::from_utf8_lossy(&response);
            anyhow::ensure!(
                text.contains("\"PRESENT\""),
                "sample lookup found nothing: {text}"
            );
            out.push(response);
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    let sample_sizes: Vec<usize> = samples.iter().map(Bytes::len).collect();
    let floor_addr = env.start_floor(samples)?;
    wait_listening(floor_addr)?;

    let cold = Keys::Mixed {
        dist: dist.clone(),
        hot: hot_share,
        next_cold: Arc::new(AtomicUsize::new(0)),
        first: args.users + 1,
        last: env.users_total,
    };
    let mut scenarios = Vec::new();
    for (route, (body, label)) in shapes.iter().enumerate() {
        scenarios.push(Scenario {
            name: format!("floor: HTTP, {label} body ({} B)", sample_sizes[route]),
            kind: Kind::HttpFloor {
                route,
                body: body.clone(),
            },
            floor: None,
        });
    }
    scenarios.push(Scenario {
        name: "floor: Redis MGET 1 key".into(),
        kind: Kind::RedisFloor { entities: 1 },
        floor: None,
    });
    let service = LookupBody {
        ask: Ask::Service(quiver_benches::env::SERVICE),
        entities: 1,
        keys: hot.clone(),
    };
    let lookups = [
        (
            "L1 hit: 1 entity × 5 features",
            Target::Cached,
            f5(1, hot.clone()),
            0,
        ),
        (
            "L1 miss: 1 entity × 5 features (Redis)",
            Target::Redis,
            f5(1, hot.clone()),
            4,
        ),
        (
            "L1 hit: 10 entities × 5 features",
            Target::Cached,
            f5(10, hot.clone()),
            1,
        ),
        (
            "L1 hit: 100 entities × 5 features",
            Target::Cached,
            f5(100, hot.clone()),
            2,
        ),
        (
            "feature service: 2 views, 6 features, 1 entity",
            Target::Cached,
            service.clone(),
            0,
        ),
        (
            "on-demand view (Wasm): 10 entities × 3 features",
            Target::Cached,
            on_demand.clone(),
            3,
        ),
    ];
    // The lookup scenarios with L1 off, over Redis and over PostgreSQL: what swapping the store
    // costs. Each pair runs back to back, both against the HTTP floor of their response size.
    let mut by_store = Vec::new();
    for (shape, body, floor) in [
        ("1 entity × 5 features", f5(1, hot.clone()), 0),
        ("10 entities × 5 features", f5(10, hot.clone()), 1),
        ("100 entities × 5 features", f5(100, hot.clone()), 2),
        ("feature service: 2 views, 6 features, 1 entity", service, 0),
        (
            "on-demand view (Wasm): 10 entities × 3 features",
            on_demand,
            3,
        ),
    ] {
        for (store, target) in [("Redis", Target::Redis), ("PostgreSQL", Target::Postgres)] {
            by_store.push((
                format!("L1 off, {store}: {shape}"),
                target,
                body.clone(),
                floor,
            ));
        }
    }
    let mixed = format!(
        "mixed: 1 entity × 5 features, {:.0}% L1 hits",
        args.hit_rate * 100.0
    );
    for (name, target, body, floor) in lookups
        .into_iter()
        .map(|(name, target, body, floor)| (name.to_string(), target, body, floor))
        .chain([(mixed.clone(), Target::Cached, f5(1, cold), 0)])
        .chain(by_store)
    {
        scenarios.push(Scenario {
            name,
            kind: Kind::Lookup { target, body },
            floor: Some(scenarios[floor].name.clone()),
        });
    }
    scenarios.push(Scenario {
        name: format!("push: {} rows/request (rows/s)", args.push_rows),
        kind: Kind::Push,
        floor: None,
    });

    let selected = |s: &Scenario| {
        args.only.is_empty()
            || args.only.iter().any(|o| s.name.contains(o.as_str()))
            || scenarios.iter().any(|t| {
                t.floor.as_deref() == Some(s.name.as_str())
                    && args.only.iter().any(|o| t.name.contains(o.as_str()))
            })
    };

    // Each scenario is paired with its floor: the floor runs at the same concurrency right before
    // the scenario, so both see the same machine (it is shared, and its load drifts). A floor row
    // of the table is the median of its runs; "vs floor" compares with the paired run.
    let redis_url = env.redis.url();
    let redis_pid = redis_pid(env.redis.port())?;
    let postgres_pid = env.postgres.pid().context("postgres is not running")?;
    let tick_us = 1e6 / cpu::ticks_per_second();
    let mut rows: Vec<Row> = Vec::new();
    let mut floor_runs: HashMap<(String, usize), Vec<Outcome>> = HashMap::new();
    let measure = |s: &Scenario, c: usize| -> anyhow::Result<(Outcome, Option<f64>, Cpu)> {
        eprintln!("running {} at concurrency {c}", s.name);
        let snapshots = Arc::new(Mutex::new(Vec::new()));
        // The store whose processes serve the scenario, if any.
        let store_pid = match &s.kind {
            Kind::Lookup {
                target: Target::Postgres,
                ..
            } => Some(StorePid::Tree(postgres_pid)),
            Kind::Lookup { .. } | Kind::RedisFloor { .. } | Kind::Push => {
                Some(StorePid::Process(redis_pid))
            }
            Kind::HttpFloor { .. } => None,
        };
        let cpu_samples = Arc::new(Mutex::new(Vec::new()));
        let outcome = client_rt.block_on(run_scenario(
            &s.kind,
            c,
            window,
            &env,
            floor_addr,
            &redis_url,
            &dist,
            args.push_rows,
            Arc::clone(&snapshots),
            store_pid,
            Arc::clone(&cpu_samples),
        ))?;
        let cpu = match cpu_samples.lock().unwrap().as_slice() {
            [(q0, s0), (q1, s1)] if outcome.requests > 0 => {
                let per_request = |ticks: u64| ticks as f64 * tick_us / outcome.requests as f64;
                Cpu {
                    quiver_us: Some(per_request(q1.saturating_sub(*q0))),
                    store_us: store_pid.map(|_| per_request(s1.saturating_sub(*s0))),
                }
            }
            _ => Cpu::default(),
        };
        let l1_hit_rate = match (&s.kind, snapshots.lock().unwrap().as_slice()) {
            (
                Kind::Lookup {
                    target: Target::Cached,
                    ..
                },
                [a, b],
            ) => {
                let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
                eprintln!(
                    "  L1: {} hits, {} misses, {} negative hits, {} coalesced",
                    d[0], d[1], d[2], d[3]
                );
                (d[0] + d[1] > 0.0).then(|| d[0] / (d[0] + d[1]))
            }
            _ => None,
        };
        if let Some(e) = &outcome.first_error {
            eprintln!("  {} errors; first: {e}", outcome.errors);
        }
        eprintln!(
            "  {:.0} req/s, p50 {:.0}µs p99 {:.0}µs",
            outcome.rps(),
            outcome.p50_us,
            outcome.p99_us
        );
        Ok((outcome, l1_hit_rate, cpu))
    };
    let floors: Vec<&Scenario> = scenarios.iter().filter(|s| is_floor(s)).collect();
    for s in scenarios.iter().filter(|s| selected(s) && !is_floor(s)) {
        for &c in &args.concurrency {
            let floor = match &s.floor {
                Some(f) => {
                    let fs = floors.iter().find(|x| &x.name == f).expect("floor exists");
                    let (o, _, _) = measure(fs, c)?;
                    let rps = o.rps();
                    floor_runs.entry((f.clone(), c)).or_default().push(o);
                    Some(rps)
                }
                None => None,
            };
            let (outcome, l1_hit_rate, cpu) = measure(s, c)?;
            rows.push(Row {
                scenario: s.name.clone(),
                concurrency: Some(c),
                vs_floor: floor.map(|f| outcome.rps() / f),
                outcome,
                floor: s.floor.clone(),
                l1_hit_rate,
                quiver_cpu_us: cpu.quiver_us,
                store_cpu_us: cpu.store_us,
            });
        }
    }
    let logging = if args.logging_rounds > 0
        && (args.only.is_empty() || args.only.iter().any(|o| "logging".contains(o.as_str())))
    {
        let variants: Vec<(&str, &'static str)> = [
            ("off", quiver_benches::env::SERVICE),
            ("1%", quiver_benches::env::SERVICE_LOG_1),
            ("100%", quiver_benches::env::SERVICE_LOG_100),
        ]
        .into_iter()
        .filter(|(label, _)| args.logging_variants.iter().any(|v| v == label))
        .collect();
        anyhow::ensure!(
            variants.first().is_some_and(|(label, _)| *label == "off"),
            "--logging-variants must include off (the others are compared with it)"
        );
        let mut logging_rows = Vec::new();
        for &c in &args.concurrency {
            let mut runs: Vec<Vec<(Outcome, f64)>> = vec![Vec::new(); variants.len()];
            for _ in 0..args.logging_rounds {
                for (v, (label, service)) in variants.iter().enumerate() {
                    let scenario = Scenario {
                        name: format!("feature service, logging {label}: 10 entities × 6 features"),
                        kind: Kind::Lookup {
                            target: Target::Cached,
                            body: LookupBody {
                                ask: Ask::Service(service),
                                entities: 10,
                                keys: hot.clone(),
                            },
                        },
                        floor: None,
                    };
                    let (outcome, _, cpu) = measure(&scenario, c)?;
                    let cpu_us = cpu.quiver_us.unwrap_or(f64::NAN);
                    eprintln!("  server CPU {cpu_us:.1}µs per request");
                    runs[v].push((outcome, cpu_us));
                }
            }
            let medians: Vec<(Outcome, f64)> = runs
                .into_iter()
                .map(|mut r| {
                    r.sort_by(|a, b| a.0.rps().total_cmp(&b.0.rps()));
                    let rps = r[r.len() / 2].0.clone();
                    let mut p99: Vec<f64> = r.iter().map(|x| x.0.p99_us).collect();
                    p99.sort_by(f64::total_cmp);
                    let mut cpu: Vec<f64> = r.iter().map(|x| x.1).collect();
                    cpu.sort_by(f64::total_cmp);
                    (
                        Outcome {
                            p99_us: p99[p99.len() / 2],
                            ..rps
                        },
                        cpu[cpu.len() / 2],
                    )
                })
                .collect();
            for (v, (label, _)) in variants.iter().enumerate() {
                let (o, cpu) = &medians[v];
                let (base, base_cpu) = &medians[0];
                logging_rows.push(serde_json::json!({
                    "logging": label,
                    "concurrency": c,
                    "rps": o.rps(),
                    "p50_us": o.p50_us,
                    "p99_us": o.p99_us,
                    "errors": o.errors,
                    "server_cpu_us_per_request": cpu,
                    "rps_vs_off": o.rps() / base.rps() - 1.0,
                    "p99_vs_off": o.p99_us / base.p99_us - 1.0,
                    "cpu_vs_off": cpu / base_cpu - 1.0,
                }));
            }
        }
        logging_rows
    } else {
        Vec::new()
    };
    let mut floor_rows = Vec::new();
    for f in floors.iter().filter(|f| selected(f)) {
        for &c in &args.concurrency {
            let runs = floor_runs.entry((f.name.clone(), c)).or_default();
            if runs.is_empty() {
                runs.push(measure(f, c)?.0);
            }
            runs.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
            let median = runs[runs.len() / 2].clone();
            floor_rows.push(Row {
                scenario: format!("{} (median of {})", f.name, runs.len()),
                concurrency: Some(c),
                outcome: median,
                floor: None,
                vs_floor: None,
                l1_hit_rate: None,
                quiver_cpu_us: None,
                store_cpu_us: None,
            });
        }
    }
    floor_rows.append(&mut rows);
    let mut rows = floor_rows;
    if args.only.is_empty() || args.only.iter().any(|o| "materialize".contains(o.as_str())) {
        for (store, m) in [
            ("Redis", &env.materialized),
            ("PostgreSQL", &env.materialized_pg),
        ] {
            rows.push(Row {
                scenario: format!(
                    "materialize: 2 views → {store} ({} rows read, {} records) (rows/s)",
                    m.rows_read, m.written
                ),
                concurrency: None,
                outcome: Outcome {
                    items: m.rows_read,
                    seconds: m.seconds,
                    ..Default::default()
                },
                floor: None,
                vs_floor: None,
                l1_hit_rate: None,
                quiver_cpu_us: None,
                store_cpu_us: None,
            });
        }
    }

    let rendered = table(&rows);
    println!(
        "\nkeys: {} over {} users; {}s measured after {}s warm-up per row; server runtime {} threads, client {} thread(s)\n",
        dist.describe(),
        args.users,
        args.seconds,
        args.warmup,
        args.server_threads,
        args.client_threads
    );
    println!("{rendered}");
    if !logging.is_empty() {
        println!(
            "feature logging (L1 hits, 10 entities × 6 features; median of {} interleaved rounds; server CPU from /proc/self/task, quiver-* threads)\n",
            args.logging_rounds
        );
        println!(
            "| logging | conc | req/s | vs off | p50 | p99 | p99 vs off | server CPU/req | CPU vs off |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in &logging {
            let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "| {} | {} | {:.0} | {:+.1}% | {:.0}µs | {:.0}µs | {:+.1}% | {:.1}µs | {:+.1}% |",
                r["logging"].as_str().unwrap_or(""),
                r["concurrency"],
                f("rps"),
                f("rps_vs_off") * 100.0,
                f("p50_us"),
                f("p99_us"),
                f("p99_vs_off") * 100.0,
                f("server_cpu_us_per_request"),
                f("cpu_vs_off") * 100.0,
            );
        }
        println!();
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("bench").join("load.json"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::json!({
        "machine": machine(),
        "args": args,
        "keys": dist.describe(),
        "rows": rows,
        "feature_logging": logging,
    });
    std::fs::write(&out, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// CPU time per request of one run, microseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    /// The server runtime's threads (Quiver, or the floor server).
    quiver_us: Option<f64>,
    /// The store's processes.
    store_us: Option<f64>,
}

/// Where a store's CPU time is read.
#[derive(Debug, Clone, Copy)]
enum StorePid {
    /// One process (redis-server).
    Process(u32),
    /// A process and its children (a PostgreSQL server: the postmaster and its backends).
    Tree(u32),
}

impl StorePid {
    fn ticks(self) -> u64 {
        match self {
            StorePid::Process(pid) => cpu::process(pid),
            StorePid::Tree(pid) => cpu::process_and_children(pid),
        }
    }
}

/// The process id of the redis-server on `port`, from `INFO server`.
fn redis_pid(port: u16) -> anyhow::Result<u32> {
    let info: String = quiver_tests::redis::admin(port, redis::cmd("INFO").arg("server"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .context("no process_id in INFO server")
}

fn is_floor(s: &Scenario) -> bool {
    matches!(s.kind, Kind::HttpFloor { .. } | Kind::RedisFloor { .. })
}

/// Loads every user of the key space into L1 (both views), 1000 per request; returns, by user
/// number, whether its `user_features` row was found.
async fn warm(addr: SocketAddr, users: usize) -> anyhow::Result<Vec<bool>> {
    let mut conn = Conn::connect(addr).await?;
    let mut present = vec![false; users + 1];
    let mut first = 1;
    while first <= users {
        let last = (first + 999).min(users);
        let ids: Vec<String> = (first..=last).map(quickstart::user_id).collect();
        for ask in [
            serde_json::json!({"features": ["user_features"]}),
            serde_json::json!({"feature_service": quiver_benches::env::SERVICE}),
        ] {
            let mut body = ask;
            body["entities"] = serde_json::json!({ "user_id": ids });
            let (status, response) = conn
                .post("/get-online-features", serde_json::to_vec(&body)?.into())
                .await?;
            anyhow::ensure!(
                status.is_success(),
                "warm-up failed: {status} {}",
                String::from_utf8_lossy(&response)
            );
            if present[first..=last].iter().all(|p| !p) {
                let json: serde_json::Value = serde_json::from_slice(&response)?;
                // results[0] is the user_id column; results[1] the first feature of user_features.
                let statuses = json["results"][1]["statuses"]
                    .as_array()
                    .context("warm-up response without statuses")?;
                for (p, s) in present[first..=last].iter_mut().zip(statuses) {
                    *p = s != "NOT_FOUND";
                }
            }
        }
        first = last + 1;
    }
    Ok(present)
}

/// `quiver_l1_{hits,misses,negative_hits,coalesced}_total` of a server.
async fn l1_counters(addr: SocketAddr) -> anyhow::Result<[f64; 4]> {
    let mut conn = Conn::connect(addr).await?;
    let (_, body) = conn.get("/metrics").await?;
    let samples = quiver_tests::prometheus_text::parse_samples(&String::from_utf8_lossy(&body))
        .map_err(|e| anyhow::anyhow!("bad /metrics: {e}"))?;
    let get = |name: &str| samples.get(name).copied().unwrap_or(0.0);
    Ok([
        get("quiver_l1_hits_total"),
        get("quiver_l1_misses_total"),
        get("quiver_l1_negative_hits_total"),
        get("quiver_l1_coalesced_total"),
    ])
}

#[allow(clippy::too_many_arguments)]
async fn run_scenario(
    kind: &Kind,
    concurrency: usize,
    window: Window,
    env: &Env,
    floor_addr: SocketAddr,
    redis_url: &str,
    dist: &KeyDist,
    push_rows: usize,
    snapshots: Arc<Mutex<Vec<[f64; 4]>>>,
    store_pid: Option<StorePid>,
    cpu_samples: Arc<Mutex<Vec<(u64, u64)>>>,
) -> anyhow::Result<Outcome> {
    let seed = |w: usize| (concurrency * 1000 + w) as u64;
    let metrics_addr = env.cached.addr;
    let snap = move || {
        let snapshots = Arc::clone(&snapshots);
        let cpu_samples = Arc::clone(&cpu_samples);
        async move {
            // CPU first: the /metrics request below costs the server a little. Every `quiver-`
            // thread counts: the server's runtime and the feature log's writer.
            let sample = (
                cpu::own_threads("quiver-"),
                store_pid.map_or(0, StorePid::ticks),
            );
            cpu_samples.lock().unwrap().push(sample);
            if let Ok(c) = l1_counters(metrics_addr).await {
                snapshots.lock().unwrap().push(c);
            }
        }
    };
    match kind {
        Kind::HttpFloor { route, body } => {
            let path = format!("/floor/{route}");
            let mut ops = Vec::new();
            for w in 0..concurrency {
                ops.push(HttpOp::connect(floor_addr, &path, body.clone(), seed(w)).await?);
            }
            Ok(run(ops, window, snap).await)
        }
        Kind::Lookup { target, body } => {
            let addr = match target {
                Target::Cached => env.cached.addr,
                Target::Redis => env.uncached.addr,
                Target::Postgres => env.uncached_pg.addr,
            };
            let mut ops = Vec::new();
            for w in 0..concurrency {
                ops.push(
                    HttpOp::connect(addr, "/get-online-features", body.clone(), seed(w)).await?,
                );
            }
            Ok(run(ops, window, snap).await)
        }
        Kind::RedisFloor { entities } => {
            // As many connections as Quiver's store opens (`online_store.connections`).
            let conns = redis_connections(redis_url, 2).await?;
            let next = Arc::new(AtomicUsize::new(0));
            let ops = (0..concurrency)
                .map(|w| {
                    RedisOp::new(
                        Arc::clone(&conns),
                        Arc::clone(&next),
                        *entities,
                        dist.clone(),
                        seed(w),
                    )
                })
                .collect();
            Ok(run(ops, window, snap).await)
        }
        Kind::Push => {
            let mut ops = Vec::new();
            for w in 0..concurrency {
                ops.push(PushOp::connect(env.cached.addr, push_rows, dist.clone(), seed(w)).await?);
            }
            Ok(run(ops, window, snap).await)
        }
    }
}

async fn run<O: Op, F, Fut>(ops: Vec<O>, window: Window, snap: F) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    closed_loop(ops, window, snap).await
}

/// `nproc` and the CPU model, for the record.
fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
    })
}
