//! Feast's own feature server and Quiver side by side, on one Redis filled by `feast materialize`:
//!
//! ```sh
//! cargo build --release -p quiver
//! cargo run --release -p quiver-benches --bin vs-feast -- [--seconds S] [--drivers N]
//! ```
//!
//! Copies the sample Feast repository (`tests/feast_repo`), writes `--drivers` drivers, runs
//! `feast apply` and `feast materialize-incremental` (the pinned Feast, in the tests' venv), then
//! starts `feast serve` (one worker) and `quiver serve` (`layout: feast`, the same Redis; once with
//! its L1 cache, once without) as separate processes. Each is driven closed-loop with the same
//! bodies (1 or 10 random drivers x 5 features) at each concurrency; the table gives requests/s,
//! latency, server CPU per request (from /proc, summed over the server's processes) and Quiver's
//! ratio to Feast in the same run. Results also go to `target/bench/vs_feast.json`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use quiver_benches::client::Conn;
use quiver_benches::driver::{Op, Outcome, Window, closed_loop};
use quiver_benches::env::target_dir;
use quiver_tests::feast::{FeastRepo, FeastServer};
use quiver_tests::process::QuiverProcess;
use quiver_tests::redis::RedisServer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value as Json;

#[derive(Parser, Debug, Serialize)]
#[command(about = "feast serve and quiver serve side by side on one Feast-materialized Redis")]
struct Args {
    /// Measured seconds per server, scenario and concurrency.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Warm-up seconds before each measurement (excluded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Closed-loop concurrencies (connections).
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    concurrency: Vec<usize>,
    /// Entities per request.
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    entities: Vec<usize>,
    /// Drivers written and materialized by Feast (the key space).
    #[arg(long, default_value_t = 5000)]
    drivers: usize,
    /// The `quiver` binary to run (default: target/release/quiver).
    #[arg(long)]
    quiver: Option<PathBuf>,
}

/// The five features of `driver_hourly_stats` every request asks for.
const FEATURES: [&str; 5] = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
    "driver_hourly_stats:city",
    "driver_hourly_stats:active",
];

/// One worker: lookups of `entities` random drivers.
struct DriverLookup {
    conn: Conn,
    entities: usize,
    drivers: usize,
    rng: StdRng,
}

impl DriverLookup {
    fn body(&mut self) -> Bytes {
        let ids: Vec<u64> = (0..self.entities)
            .map(|_| 1001 + self.rng.random_range(0..self.drivers as u64))
            .collect();
        lookup_body(&ids)
    }
}

fn lookup_body(ids: &[u64]) -> Bytes {
    let body = serde_json::json!({
        "features": FEATURES,
        "entities": {"driver_id": ids},
        "full_feature_names": false,
    });
    Bytes::from(serde_json::to_vec(&body).expect("serializable"))
}

impl Op for DriverLookup {
    async fn run(&mut self) -> anyhow::Result<u64> {
        let body = self.body();
        let (status, response) = self.conn.post("/get-online-features", body).await?;
        ensure!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&response)
        );
        Ok(self.entities as u64)
    }

    async fn recover(&mut self) {
        let _ = self.conn.reconnect().await;
    }
}

/// A server under test and how to read its CPU time.
struct Server {
    name: &'static str,
    addr: SocketAddr,
    /// Processes whose CPU time counts: a pid, or a process group.
    cpu: CpuOf,
}

#[derive(Clone, Copy)]
enum CpuOf {
    Pid(u32),
    Group(u32),
}

/// Clock ticks of user + system time of the processes `of` names, from /proc.
fn cpu_ticks(of: CpuOf) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command (which may hold spaces) start after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
        let pgrp: u32 = fields.get(2).and_then(|f| f.parse().ok()).unwrap_or(0);
        let counts = match of {
            CpuOf::Pid(p) => pid == p,
            CpuOf::Group(g) => pgrp == g,
        };
        if counts {
            let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
            let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
            total += utime + stime;
        }
    }
    total
}

/// Clock ticks per second (USER_HZ); 100 on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Serialize)]
struct Row {
    server: &'static str,
    entities: usize,
    concurrency: usize,
    outcome: Outcome,
    /// Server CPU milliseconds per request in the measured window.
    cpu_ms_per_request: f64,
}

async fn measure(server: &Server, entities: usize, concurrency: usize, args: &Args) -> Row {
    let mut ops = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        ops.push(DriverLookup {
            conn: Conn::connect(server.addr).await.expect("connect"),
            entities,
            drivers: args.drivers,
            rng: StdRng::seed_from_u64(worker as u64 + 1),
        });
    }
    let window = Window {
        warmup: Duration::from_secs_f64(args.warmup),
        measure: Duration::from_secs_f64(args.seconds),
    };
    let ticks = std::sync::Mutex::new(Vec::new());
    let outcome = closed_loop(ops, window, || {
        ticks.lock().unwrap().push(cpu_ticks(server.cpu));
        async {}
    })
    .await;
    let ticks = ticks.into_inner().unwrap();
    let used = ticks
        .get(1)
        .zip(ticks.first())
        .map_or(0, |(b, a)| b.saturating_sub(*a));
    let cpu_ms_per_request = if outcome.requests == 0 {
        f64::NAN
    } else {
        used as f64 / TICKS_PER_SECOND * 1000.0 / outcome.requests as f64
    };
    Row {
        server: server.name,
        entities,
        concurrency,
        outcome,
        cpu_ms_per_request,
    }
}

/// The values of one answer by column name (feast serve does not keep the requested order).
async fn answer(addr: SocketAddr, ids: &[u64]) -> anyhow::Result<Vec<(String, Json)>> {
    let mut conn = Conn::connect(addr).await?;
    let (status, body) = conn.post("/get-online-features", lookup_body(ids)).await?;
    ensure!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    let json: Json = serde_json::from_slice(&body)?;
    let names = json["metadata"]["feature_names"]
        .as_array()
        .context("feature_names")?;
    let results = json["results"].as_array().context("results")?;
    let mut columns: Vec<(String, Json)> = names
        .iter()
        .zip(results)
        .map(|(name, r)| {
            (
                name.as_str().unwrap_or_default().to_owned(),
                r["values"].clone(),
            )
        })
        .collect();
    columns.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(columns)
}

/// Both servers must answer the same values (float32 compared at float32) before anything is
/// timed, or the comparison would not be of the same work.
async fn check_same_answers(feast: SocketAddr, quiver: SocketAddr) -> anyhow::Result<()> {
    let ids: Vec<u64> = (1001..1011).collect();
    let (f, q) = (answer(feast, &ids).await?, answer(quiver, &ids).await?);
    let names = |c: &[(String, Json)]| c.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    ensure!(
        names(&f) == names(&q),
        "columns: feast serve {:?}, quiver serve {:?}",
        names(&f),
        names(&q)
    );
    for ((name, fv), (_, qv)) in f.iter().zip(&q) {
        for (row, (a, b)) in fv
            .as_array()
            .context("values")?
            .iter()
            .zip(qv.as_array().context("values")?)
            .enumerate()
        {
            let same = match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => (x as f32) == (y as f32),
                _ => a == b,
            };
            if !same {
                bail!("{name}[{row}]: feast serve {a}, quiver serve {b}");
            }
        }
    }
    Ok(())
}

fn quiver_config(repo: &Path, redis_port: u16, cache: bool) -> PathBuf {
    let yaml = format!(
        r#"project: driver_ranking
online_store:
  type: redis
  layout: feast
  connection_string: "127.0.0.1:{redis_port}"
entities:
  - name: driver
    join_keys: [driver_id]
    value_type: int64
feature_views:
  - name: driver_hourly_stats
    entities: [driver]
    ttl: 48h
    schema:
      - {{ name: conv_rate, dtype: float32 }}
      - {{ name: acc_rate, dtype: float64 }}
      - {{ name: avg_daily_trips, dtype: int64 }}
      - {{ name: city, dtype: string }}
      - {{ name: active, dtype: bool }}
    source:
      path: data/driver_stats.parquet
      timestamp_field: event_timestamp
      created_timestamp_column: created
server:
  max_entities: 1000
cache:
  enabled: {cache}
"#
    );
    let path = repo.join(format!("quiver-cache-{cache}.yaml"));
    std::fs::write(&path, yaml).expect("write quiver config");
    path
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let quiver_bin = args
        .quiver
        .clone()
        .unwrap_or_else(|| target_dir().join("release/quiver"));
    ensure!(
        quiver_bin.is_file(),
        "{} not found: build it first with `cargo build --release -p quiver`",
        quiver_bin.display()
    );

    let tmp = tempfile::tempdir()?;
    let redis = RedisServer::start();
    let repo = FeastRepo::with_redis(&tmp.path().join("feast_repo"), redis.port());
    eprintln!(
        "writing {} drivers; feast apply; feast materialize-incremental",
        args.drivers
    );
    repo.make_data_with_drivers(args.drivers);
    repo.apply_and_materialize();

    let feast: FeastServer = repo.serve();
    let quiver_l1 =
        QuiverProcess::serve(&quiver_bin, &quiver_config(repo.dir(), redis.port(), true));
    let quiver_direct =
        QuiverProcess::serve(&quiver_bin, &quiver_config(repo.dir(), redis.port(), false));
    let servers = [
        Server {
            name: "feast serve",
            addr: feast.addr(),
            cpu: CpuOf::Group(feast.process_group()),
        },
        Server {
            name: "quiver serve (L1 off)",
            addr: quiver_direct.addr(),
            cpu: CpuOf::Pid(quiver_direct.pid()),
        },
        Server {
            name: "quiver serve (L1 on)",
            addr: quiver_l1.addr(),
            cpu: CpuOf::Pid(quiver_l1.pid()),
        },
    ];

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(check_same_answers(feast.addr(), quiver_direct.addr()))?;
    eprintln!("feast serve and quiver serve answer the same values; measuring");

    let mut rows = Vec::new();
    for &entities in &args.entities {
        for &concurrency in &args.concurrency {
            for server in &servers {
                let row = runtime.block_on(measure(server, entities, concurrency, &args));
                eprintln!(
                    "{:<22} {entities:>2} entities c={concurrency:<3} {:>9.0} req/s  p50 {:>8.2} ms  p99 {:>8.2} ms  cpu {:.3} ms/req  errors {}",
                    row.server,
                    row.outcome.rps(),
                    row.outcome.p50_us / 1000.0,
                    row.outcome.p99_us / 1000.0,
                    row.cpu_ms_per_request,
                    row.outcome.errors,
                );
                rows.push(row);
            }
        }
    }

    println!("{}", table(&rows));
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("vs_feast.json"),
        serde_json::to_vec_pretty(&serde_json::json!({"args": args, "rows": rows}))?,
    )?;
    Ok(())
}

/// A Markdown table: one line per server, scenario and concurrency, with Quiver's ratios to
/// `feast serve` in the same run.
fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| server | entities | c | req/s | p50 ms | p99 ms | server CPU ms/req | req/s vs feast | CPU/req vs feast |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let feast = rows.iter().find(|r| {
            r.server == "feast serve"
                && r.entities == row.entities
                && r.concurrency == row.concurrency
        });
        let (speed, cpu) = match feast {
            Some(f) if row.server != "feast serve" => (
                format!("{:.1}x", row.outcome.rps() / f.outcome.rps()),
                format!("{:.3}x", row.cpu_ms_per_request / f.cpu_ms_per_request),
            ),
            _ => ("".into(), "".into()),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.3} | {speed} | {cpu} |\n",
            row.server,
            row.entities,
            row.concurrency,
            row.outcome.rps(),
            row.outcome.p50_us / 1000.0,
            row.outcome.p99_us / 1000.0,
            row.cpu_ms_per_request,
        ));
    }
    out
}
