//! Feast's own feature server and Quiver side by side, on Redis filled by `feast materialize`:
//!
//! ```sh
//! benches/vs-feast.sh [--quick] [--seconds S] [--concurrency 16,64] [--drivers N] [--redis standalone,cluster]
//! ```
//!
//! (the script builds what it needs and runs this binary). For each Redis topology (a standalone
//! `redis-server`, then a 3-master Redis Cluster) it writes the benchmark's Feast repository
//! (`benches/feast_repo`: the sample `driver_hourly_stats` and `trip_estimate`, plus 25 feature
//! views x 10 features over the same entity), runs `feast apply` and `feast materialize` with the
//! pinned Feast (the tests' venv, `target/python/feast`), then starts `feast serve` (one worker
//! per core, never recycled, no access log) and two `quiver serve` (`layout: feast` on the same
//! Redis; L1 off, and L1 on with every driver loaded first) as separate processes. It checks that
//! the three answer the same values for every scenario, then drives each closed-loop with the same
//! bodies (same seeds) at each concurrency. The table gives requests/s, latency, errors, the
//! servers' own CPU time per 1,000 requests (from /proc: Quiver's process, the `feast serve`
//! process group; Redis excluded) and Quiver's ratios to Feast in the same run. Results also go
//! to `target/bench/vs_feast.json`. With `--arrow`, both Quiver servers are measured a second
//! time asking for the Arrow IPC answer (`Accept: application/vnd.apache.arrow.stream`; rows
//! `quiver serve, L1 off, Arrow` and `quiver serve, L1 on, Arrow`), so JSON and Arrow rendering
//! compare on the same servers and bodies in one run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use quiver_benches::client::Conn;
use quiver_benches::cpu;
use quiver_benches::driver::{Op, Outcome, Window, closed_loop};
use quiver_benches::env::target_dir;
use quiver_tests::feast::{FeastRepo, FeastServer};
use quiver_tests::process::QuiverProcess;
use quiver_tests::redis::{RedisCluster, RedisServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value as Json;

#[derive(Parser, Debug, Serialize)]
#[command(about = "feast serve and quiver serve side by side on Feast-materialized Redis")]
struct Args {
    /// Short windows at one concurrency (1 s warm-up, 2 s measured, concurrency 16) over 2,000
    /// drivers: a few minutes in all. Overrides --seconds, --warmup and --concurrency.
    #[arg(long)]
    quick: bool,
    /// Measured seconds per topology, scenario, concurrency and server.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Warm-up seconds before each measurement (excluded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Closed-loop concurrencies (connections).
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    concurrency: Vec<usize>,
    /// Drivers written and materialized by Feast (the key space; default 5000, 2000 with --quick).
    #[arg(long)]
    drivers: Option<usize>,
    /// Redis topologies: `standalone`, `cluster` (3 masters).
    #[arg(long, value_delimiter = ',', default_value = "standalone,cluster")]
    redis: Vec<String>,
    /// Run only the scenarios whose name contains one of these (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// gunicorn workers of `feast serve` (default: the number of cores).
    #[arg(long)]
    feast_workers: Option<usize>,
    /// The `quiver` binary to run (default: target/release/quiver).
    #[arg(long)]
    quiver: Option<PathBuf>,
    /// Also measure both Quiver servers answering Arrow IPC streams instead of JSON.
    #[arg(long)]
    arrow: bool,
    /// `CONFIG SET hash-max-listpack-entries` on every Redis node before Feast materializes.
    /// Feast keeps all of an entity's views in one hash (281 fields here): below that count
    /// Redis stores it as a hash table instead of a list it scans once per field read, what
    /// docs/redis-layout.md recommends. 512 is Redis's own default.
    #[arg(long, default_value_t = 128)]
    hash_max_listpack_entries: u32,
}

/// Feature views of 10 features each in the wide shape (benches/feast_repo/definitions.py).
const WIDE_VIEWS: usize = 25;
/// Features per wide view.
const WIDE_FEATURES: usize = 10;
/// The Feast project (the prefix of every Redis key, shared by both servers).
const PROJECT: &str = "driver_ranking";

/// The five features of `driver_hourly_stats`.
const FEATURES_5: [&str; 5] = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
    "driver_hourly_stats:city",
    "driver_hourly_stats:active",
];

/// One request shape: what is asked, for how many drivers.
#[derive(Clone, Debug, Serialize)]
struct Scenario {
    name: String,
    features: Vec<String>,
    entities: usize,
    /// Sends the request field `distance_km` along (the on-demand view needs it).
    on_demand: bool,
    /// Highest concurrency run (the wide 100-entity shapes: at 64 connections `feast serve` would
    /// queue each request for tens of seconds).
    max_concurrency: usize,
}

fn scenarios() -> Vec<Scenario> {
    let lookup = |entities: usize| Scenario {
        name: format!("lookup {entities} x 5"),
        features: FEATURES_5.iter().map(|f| f.to_string()).collect(),
        entities,
        on_demand: false,
        max_concurrency: usize::MAX,
    };
    let wide = |entities: usize, features: usize| Scenario {
        name: format!("wide {entities} x {features}"),
        features: (0..features / WIDE_FEATURES)
            .flat_map(|v| (0..WIDE_FEATURES).map(move |f| format!("wide_{v:02}:v{v:02}_f{f}")))
            .collect(),
        entities,
        on_demand: false,
        max_concurrency: if entities >= 100 { 16 } else { usize::MAX },
    };
    let on_demand = |entities: usize| Scenario {
        name: format!("on-demand {entities} x 1"),
        features: vec!["trip_estimate:expected_conversions".into()],
        entities,
        on_demand: true,
        max_concurrency: usize::MAX,
    };
    vec![
        lookup(1),
        lookup(10),
        lookup(100),
        wide(1, 50),
        wide(1, 250),
        wide(100, 50),
        wide(100, 250),
        on_demand(1),
        on_demand(10),
        on_demand(100),
    ]
}

impl Scenario {
    /// A body for drivers `ids` (and trip lengths `distances` when on-demand).
    fn body(&self, ids: &[u64], distances: &[f64]) -> Bytes {
        let mut entities = serde_json::Map::new();
        entities.insert("driver_id".into(), serde_json::json!(ids));
        if self.on_demand {
            entities.insert("distance_km".into(), serde_json::json!(distances));
        }
        let body = serde_json::json!({
            "features": self.features,
            "entities": entities,
            "full_feature_names": false,
        });
        Bytes::from(serde_json::to_vec(&body).expect("serializable"))
    }

    /// A random body: `entities` random drivers of `drivers`, random trip lengths.
    fn random_body(&self, rng: &mut StdRng, drivers: usize) -> Bytes {
        let ids: Vec<u64> = (0..self.entities)
            .map(|_| 1001 + rng.random_range(0..drivers as u64))
            .collect();
        let distances: Vec<f64> = if self.on_demand {
            (0..self.entities)
                .map(|_| f64::from(rng.random_range(100..10_000u32)) / 100.0)
                .collect()
        } else {
            Vec::new()
        };
        self.body(&ids, &distances)
    }
}

/// The `Accept` of the Arrow rows.
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// One load worker: `scenario`'s requests with random drivers.
struct Lookup {
    conn: Conn,
    scenario: Scenario,
    drivers: usize,
    rng: StdRng,
    accept: Option<&'static str>,
}

/// Posts one lookup; an answer asked for as Arrow must be an Arrow stream (it opens with the IPC
/// continuation marker), so a server falling back to JSON cannot pass for a fast Arrow one.
async fn lookup(
    conn: &mut Conn,
    body: Bytes,
    accept: Option<&'static str>,
) -> anyhow::Result<Bytes> {
    let (status, response) = conn
        .post_accepting("/get-online-features", body, accept)
        .await?;
    ensure!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&response)
    );
    if accept.is_some() {
        ensure!(
            response.starts_with(&[0xff; 4]),
            "not an Arrow stream: {}",
            String::from_utf8_lossy(&response[..response.len().min(200)])
        );
    }
    Ok(response)
}

impl Op for Lookup {
    async fn run(&mut self) -> anyhow::Result<u64> {
        let body = self.scenario.random_body(&mut self.rng, self.drivers);
        lookup(&mut self.conn, body, self.accept).await?;
        Ok(self.scenario.entities as u64)
    }

    async fn recover(&mut self) {
        let _ = self.conn.reconnect().await;
    }
}

/// A server under test, how to read its CPU time and the `Accept` it is sent.
struct Server {
    name: &'static str,
    addr: SocketAddr,
    cpu: CpuOf,
    accept: Option<&'static str>,
}

#[derive(Clone, Copy)]
enum CpuOf {
    /// One process (all its threads).
    Pid(u32),
    /// A process group (`feast serve`: gunicorn's master and workers).
    Group(u32),
}

impl CpuOf {
    fn ticks(self) -> u64 {
        match self {
            CpuOf::Pid(pid) => cpu::process(pid),
            CpuOf::Group(pgid) => cpu::process_group(pgid),
        }
    }
}

const FEAST: &str = "feast serve";
const QUIVER_OFF: &str = "quiver serve, L1 off";
const QUIVER_ON: &str = "quiver serve, L1 on";
const QUIVER_OFF_ARROW: &str = "quiver serve, L1 off, Arrow";
const QUIVER_ON_ARROW: &str = "quiver serve, L1 on, Arrow";

#[derive(Debug, Serialize)]
struct Row {
    redis: &'static str,
    scenario: String,
    concurrency: usize,
    server: &'static str,
    outcome: Outcome,
    /// Server CPU seconds per 1,000 requests in the measured window (= ms per request).
    cpu_s_per_1k: f64,
    /// Warm-up and measured seconds of this row (see [`window_for`]).
    warmup_s: f64,
    measured_s: f64,
    /// 1-minute load average when the measurement ended.
    load_average: f64,
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

async fn measure(
    server: &Server,
    scenario: &Scenario,
    concurrency: usize,
    window: Window,
    drivers: usize,
    tick_s: f64,
) -> anyhow::Result<(Outcome, f64)> {
    let mut ops = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        ops.push(Lookup {
            conn: Conn::connect(server.addr).await.context("connect")?,
            scenario: scenario.clone(),
            drivers,
            // The same seeds for every server: the same bodies in the same order.
            rng: StdRng::seed_from_u64(worker as u64 + 1),
            accept: server.accept,
        });
    }
    let ticks = std::sync::Mutex::new(Vec::new());
    let outcome = closed_loop(ops, window, || {
        ticks.lock().unwrap().push(server.cpu.ticks());
        async {}
    })
    .await;
    let ticks = ticks.into_inner().unwrap();
    let used = match ticks.as_slice() {
        [a, b] => b.saturating_sub(*a),
        _ => 0,
    };
    let cpu_s_per_1k = if outcome.requests == 0 {
        f64::NAN
    } else {
        used as f64 * tick_s * 1000.0 / outcome.requests as f64
    };
    Ok((outcome, cpu_s_per_1k))
}

/// The requested features' values of one answer, by feature name (feast serve does not keep the
/// requested order), and the answer's size in bytes.
async fn answer(
    server: &Server,
    scenario: &Scenario,
    body: Bytes,
) -> anyhow::Result<(BTreeMap<String, Vec<Json>>, usize)> {
    let mut conn = Conn::connect(server.addr).await?;
    let response = lookup(&mut conn, body, server.accept).await?;
    let mut by_name = if server.accept.is_some() {
        arrow_values(&response)?
    } else {
        json_values(&response)?
    };
    let mut out = BTreeMap::new();
    for feature in &scenario.features {
        let short = feature.rsplit(':').next().unwrap_or(feature);
        let values = by_name.remove(short).with_context(|| {
            format!(
                "no column {short} in {}",
                String::from_utf8_lossy(&response[..response.len().min(2000)])
            )
        })?;
        ensure!(
            values.len() == scenario.entities,
            "{short}: {} values for {} entities",
            values.len(),
            scenario.entities
        );
        out.insert(short.to_owned(), values);
    }
    Ok((out, response.len()))
}

/// The value columns of a JSON answer, by name.
fn json_values(response: &[u8]) -> anyhow::Result<BTreeMap<String, Vec<Json>>> {
    let json: Json = serde_json::from_slice(response)?;
    let names = json["metadata"]["feature_names"]
        .as_array()
        .context("feature_names")?;
    let results = json["results"].as_array().context("results")?;
    let mut by_name = BTreeMap::new();
    for (name, result) in names.iter().zip(results) {
        let values = result["values"].as_array().context("values")?.clone();
        by_name.insert(name.as_str().unwrap_or_default().to_owned(), values);
    }
    Ok(by_name)
}

/// The value columns of an Arrow answer (the scalar types of this benchmark's views), by name.
fn arrow_values(response: &[u8]) -> anyhow::Result<BTreeMap<String, Vec<Json>>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type};
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(response), None)?;
    let mut by_name: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    for batch in reader {
        let batch = batch?;
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            let cell = |r: usize| -> Option<Json> {
                if column.is_null(r) {
                    return Some(Json::Null);
                }
                Some(match column.data_type() {
                    DataType::Float64 => Json::from(column.as_primitive::<Float64Type>().value(r)),
                    DataType::Float32 => {
                        Json::from(f64::from(column.as_primitive::<Float32Type>().value(r)))
                    }
                    DataType::Int64 => Json::from(column.as_primitive::<Int64Type>().value(r)),
                    DataType::Utf8 => Json::from(column.as_string::<i32>().value(r)),
                    DataType::Boolean => Json::from(column.as_boolean().value(r)),
                    _ => return None,
                })
            };
            // Status and event-timestamp columns are not values.
            let Some(values) = (0..column.len()).map(cell).collect::<Option<Vec<Json>>>() else {
                continue;
            };
            by_name
                .entry(field.name().clone())
                .or_default()
                .extend(values);
        }
    }
    Ok(by_name)
}

/// Every server must answer the same values (floats compared at float32) as `feast serve`, with
/// no missing value, before anything is timed: otherwise the comparison would not be of the same
/// work.
async fn check_same_answers(
    servers: &[Server],
    scenario: &Scenario,
    drivers: usize,
) -> anyhow::Result<()> {
    let ids: Vec<u64> = (0..scenario.entities as u64)
        .map(|i| 1001 + (i * 37) % drivers as u64)
        .collect();
    let distances: Vec<f64> = (0..scenario.entities).map(|i| 1.5 + i as f64).collect();
    let body = scenario.body(&ids, &distances);
    let (reference, size) = answer(&servers[0], scenario, body.clone()).await?;
    let mut sizes = vec![format!("{} {size}", servers[0].name)];
    for (name, values) in &reference {
        ensure!(
            values.iter().all(|v| !v.is_null()),
            "{}: {} answered null for {name}: is the data materialized?",
            scenario.name,
            servers[0].name
        );
    }
    for server in &servers[1..] {
        let (other, size) = answer(server, scenario, body.clone()).await?;
        sizes.push(format!("{} {size}", server.name));
        for (name, values) in &reference {
            for (row, (a, b)) in values.iter().zip(&other[name]).enumerate() {
                let same = match (a.as_f64(), b.as_f64()) {
                    (Some(x), Some(y)) => (x as f32) == (y as f32),
                    _ => a == b,
                };
                if !same {
                    bail!(
                        "{}: {name}[{row}]: {} {a}, {} {b}",
                        scenario.name,
                        servers[0].name,
                        server.name
                    );
                }
            }
        }
    }
    eprintln!("{}: answer bytes: {}", scenario.name, sizes.join(", "));
    Ok(())
}

/// The shortest of three single requests of `scenario` to the idle `server`: what one
/// request costs it, to size the measurement windows.
async fn single_latency(
    server: &Server,
    scenario: &Scenario,
    drivers: usize,
) -> anyhow::Result<Duration> {
    let mut conn = Conn::connect(server.addr).await?;
    let mut best = Duration::MAX;
    let mut rng = StdRng::seed_from_u64(99);
    for _ in 0..3 {
        let body = scenario.random_body(&mut rng, drivers);
        let sent = Instant::now();
        lookup(&mut conn, body, server.accept).await?;
        best = best.min(sent.elapsed());
    }
    Ok(best)
}

/// The longest warm-up or measured window of one row.
const MAX_WINDOW: Duration = Duration::from_secs(30);
/// Requests a row should count; a row counting fewer is measured again, longer.
const MIN_REQUESTS: u64 = 20;

/// The window of one row. A closed loop of `concurrency` requests on `cores` queues each request
/// for about `concurrency / cores` service times; until that queue is full, CPU is spent on
/// requests that complete later. So the warm-up lasts at least two queueing delays and the
/// measurement at least 25 service times per core (both capped at 30 s): a slow server gets
/// longer windows, never fewer than ~25 requests counted in steady state.
fn window_for(base: Window, service: Duration, concurrency: usize, cores: usize) -> Window {
    let cap = MAX_WINDOW;
    let queueing = service.mul_f64(concurrency as f64 / cores as f64);
    Window {
        warmup: base.warmup.max((queueing * 2).min(cap)),
        measure: base
            .measure
            .max(service.mul_f64(25.0 / cores as f64).min(cap)),
    }
}

/// Loads every driver of every scenario into the L1 of the server at `addr`.
async fn warm(addr: SocketAddr, scenarios: &[Scenario], drivers: usize) -> anyhow::Result<()> {
    let mut conn = Conn::connect(addr).await?;
    for scenario in scenarios {
        let ids: Vec<u64> = (1001..1001 + drivers as u64).collect();
        for chunk in ids.chunks(500) {
            let distances = vec![1.0; chunk.len()];
            let (status, body) = conn
                .post("/get-online-features", scenario.body(chunk, &distances))
                .await?;
            ensure!(
                status.is_success(),
                "warming L1: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    Ok(())
}

/// Quiver's registry for the same repository: the views of benches/feast_repo/definitions.py over
/// `online_store` (YAML lines indented by two spaces), the `trip_estimate` transform built to
/// Wasm, and L1 on or off. With L1 on, entries stay for the whole run, so L1-on rows measure hits.
fn quiver_config(repo: &Path, online_store: &str, cache: bool, transforms: &Path) -> PathBuf {
    let mut yaml = format!(
        r#"project: {PROJECT}
online_store:
{online_store}
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
"#
    );
    for v in 0..WIDE_VIEWS {
        yaml.push_str(&format!(
            "  - name: wide_{v:02}\n    entities: [driver]\n    ttl: 48h\n    schema:\n"
        ));
        for f in 0..WIDE_FEATURES {
            yaml.push_str(&format!(
                "      - {{ name: v{v:02}_f{f}, dtype: float64 }}\n"
            ));
        }
        yaml.push_str(
            "    source:\n      path: data/wide.parquet\n      timestamp_field: event_timestamp\n      created_timestamp_column: created\n",
        );
    }
    yaml.push_str(&format!(
        r#"on_demand_feature_views:
  - name: trip_estimate
    transform: trip_estimate
    sources: [driver_hourly_stats]
    request_fields:
      - {{ name: distance_km, dtype: float64 }}
    schema:
      - {{ name: expected_conversions, dtype: float64 }}
transforms:
  dir: {}
server:
  max_entities: 1000
cache:
  enabled: {cache}
  ttl: 1h
  negative_ttl: 1h
  max_size_mib: 1024
"#,
        transforms.display()
    ));
    let path = repo.join(format!("quiver-cache-{cache}.yaml"));
    std::fs::write(&path, yaml).expect("write quiver config");
    path
}

/// The Redis of one topology, kept alive while its servers run.
enum Redis {
    Standalone(RedisServer),
    Cluster(RedisCluster),
}

impl Redis {
    fn start(kind: &str) -> anyhow::Result<(&'static str, Redis)> {
        Ok(match kind {
            "standalone" => ("standalone", Redis::Standalone(RedisServer::start())),
            "cluster" => ("cluster", Redis::Cluster(RedisCluster::start(3))),
            other => bail!("--redis {other}: expected standalone or cluster"),
        })
    }

    /// Sets `hash-max-listpack-entries` on every node.
    fn set_hash_max_listpack_entries(&self, entries: u32) -> anyhow::Result<()> {
        let ports = match self {
            Redis::Standalone(r) => vec![r.port()],
            Redis::Cluster(c) => c.ports(),
        };
        for port in ports {
            let mut cmd = ::redis::cmd("CONFIG");
            cmd.arg("SET").arg("hash-max-listpack-entries").arg(entries);
            quiver_tests::redis::admin::<()>(port, &cmd)
                .with_context(|| format!("CONFIG SET hash-max-listpack-entries on port {port}"))?;
        }
        Ok(())
    }

    /// The `online_store` lines (indented by two spaces) common to Feast and Quiver, without
    /// Quiver's `layout`.
    fn online_store(&self) -> String {
        match self {
            Redis::Standalone(r) => format!(
                "  type: redis\n  connection_string: \"127.0.0.1:{}\"",
                r.port()
            ),
            Redis::Cluster(c) => format!(
                "  type: redis\n  redis_type: redis_cluster\n  connection_string: \"{}\"",
                c.connection_string()
            ),
        }
    }
}

/// A Feast repository of benches/feast_repo over `online_store`, with `drivers` drivers
/// materialized by `feast materialize`.
fn feast_repo(dir: &Path, online_store: &str, drivers: usize) -> FeastRepo {
    let repo = FeastRepo::create(dir, online_store, "data/registry.db");
    let ours = quiver_tests::wasm::workspace_root().join("benches/feast_repo");
    for file in ["definitions.py", "make_data.py"] {
        std::fs::copy(ours.join(file), dir.join(file)).expect("copy benches/feast_repo");
    }
    let started = Instant::now();
    repo.python(&["make_data.py", "data", &drivers.to_string()]);
    repo.feast(&["apply"]);
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::days(3))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let to = now.format("%Y-%m-%dT%H:%M:%S").to_string();
    repo.feast(&["materialize", &from, &to]);
    eprintln!(
        "feast apply + materialize of {drivers} drivers: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    repo
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.seconds = 2.0;
        args.warmup = 1.0;
        args.concurrency = vec![16];
    }
    let drivers = args.drivers.unwrap_or(if args.quick { 2000 } else { 5000 });
    let quiver_bin = args
        .quiver
        .clone()
        .unwrap_or_else(|| target_dir().join("release/quiver"));
    ensure!(
        quiver_bin.is_file(),
        "{} not found: build it first with `cargo build --release -p quiver`",
        quiver_bin.display()
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let feast_workers = args.feast_workers.unwrap_or(cores);
    let window = Window {
        warmup: Duration::from_secs_f64(args.warmup),
        measure: Duration::from_secs_f64(args.seconds),
    };
    let tick_s = 1.0 / cpu::ticks_per_second();
    let scenarios: Vec<Scenario> = scenarios()
        .into_iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| s.name.contains(o)))
        .collect();
    ensure!(!scenarios.is_empty(), "--only matches no scenario");
    let transforms = quiver_tests::wasm::fixtures_dir();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let load_at_start = load_average();

    let mut rows = Vec::new();
    for kind in &args.redis {
        let (topology, redis) = Redis::start(kind)?;
        redis.set_hash_max_listpack_entries(args.hash_max_listpack_entries)?;
        let tmp = tempfile::tempdir()?;
        let store = redis.online_store();
        eprintln!("== Redis {topology}: writing {} drivers", drivers);
        let repo = feast_repo(&tmp.path().join("feast_repo"), &store, drivers);
        // Quiver's default command_timeout (500 ms) fails every 100 x 250 request without L1
        // at concurrency 16 on this machine (its Redis reads queue for longer than that), which
        // leaves that row without a cost to compare; Feast's Redis client waits as long as it
        // takes. So both Quiver servers wait up to 5 s, and timeouts still count as errors.
        let quiver_store = format!("{store}\n  layout: feast\n  command_timeout: 5s");
        let feast: FeastServer = repo.serve_with_workers(feast_workers);
        let quiver_off = QuiverProcess::serve(
            &quiver_bin,
            &quiver_config(repo.dir(), &quiver_store, false, transforms),
        );
        let quiver_on = QuiverProcess::serve(
            &quiver_bin,
            &quiver_config(repo.dir(), &quiver_store, true, transforms),
        );
        let mut servers = vec![
            Server {
                name: FEAST,
                addr: feast.addr(),
                cpu: CpuOf::Group(feast.process_group()),
                accept: None,
            },
            Server {
                name: QUIVER_OFF,
                addr: quiver_off.addr(),
                cpu: CpuOf::Pid(quiver_off.pid()),
                accept: None,
            },
            Server {
                name: QUIVER_ON,
                addr: quiver_on.addr(),
                cpu: CpuOf::Pid(quiver_on.pid()),
                accept: None,
            },
        ];
        if args.arrow {
            // The same two processes, asked for Arrow.
            servers.extend([
                Server {
                    name: QUIVER_OFF_ARROW,
                    addr: quiver_off.addr(),
                    cpu: CpuOf::Pid(quiver_off.pid()),
                    accept: Some(ARROW_STREAM),
                },
                Server {
                    name: QUIVER_ON_ARROW,
                    addr: quiver_on.addr(),
                    cpu: CpuOf::Pid(quiver_on.pid()),
                    accept: Some(ARROW_STREAM),
                },
            ]);
        }
        runtime.block_on(warm(quiver_on.addr(), &scenarios, drivers))?;
        for scenario in &scenarios {
            runtime.block_on(check_same_answers(&servers, scenario, drivers))?;
        }
        eprintln!(
            "feast serve and every quiver serve row answer the same values in {} scenarios; measuring",
            scenarios.len()
        );
        for scenario in &scenarios {
            let mut service = Vec::new();
            for server in &servers {
                service.push(runtime.block_on(single_latency(server, scenario, drivers))?);
            }
            let mut concurrencies: Vec<usize> = args
                .concurrency
                .iter()
                .map(|&c| c.min(scenario.max_concurrency))
                .collect();
            concurrencies.dedup();
            for &concurrency in &concurrencies {
                for (server, &service) in servers.iter().zip(&service) {
                    let mut window = window_for(window, service, concurrency, cores);
                    let (mut outcome, mut cpu_s_per_1k) = runtime.block_on(measure(
                        server,
                        scenario,
                        concurrency,
                        window,
                        drivers,
                        tick_s,
                    ))?;
                    // A server slower under load than alone counts too few requests for a
                    // steady figure: measure once more, long enough for MIN_REQUESTS at the rate
                    // just seen (capped).
                    if outcome.requests < MIN_REQUESTS && window.measure < MAX_WINDOW {
                        let rate = outcome.requests.max(1) as f64 / window.measure.as_secs_f64();
                        window = Window {
                            warmup: window.warmup,
                            measure: Duration::from_secs_f64(MIN_REQUESTS as f64 / rate)
                                .clamp(window.measure, MAX_WINDOW),
                        };
                        (outcome, cpu_s_per_1k) = runtime.block_on(measure(
                            server,
                            scenario,
                            concurrency,
                            window,
                            drivers,
                            tick_s,
                        ))?;
                    }
                    let row = Row {
                        redis: topology,
                        scenario: scenario.name.clone(),
                        concurrency,
                        server: server.name,
                        outcome,
                        cpu_s_per_1k,
                        warmup_s: window.warmup.as_secs_f64(),
                        measured_s: window.measure.as_secs_f64(),
                        load_average: load_average(),
                    };
                    eprintln!(
                        "{topology:<10} {:<16} c={concurrency:<3} {:<27} {:>9.1} req/s  p50 {:>8.2} ms  p99 {:>8.2} ms  cpu {:.3} s/1k req  errors {}  ({:.1}+{:.1} s){}",
                        row.scenario,
                        row.server,
                        row.outcome.rps(),
                        row.outcome.p50_us / 1000.0,
                        row.outcome.p99_us / 1000.0,
                        row.cpu_s_per_1k,
                        row.outcome.errors,
                        row.warmup_s,
                        row.measured_s,
                        row.outcome
                            .first_error
                            .as_deref()
                            .map(|e| format!(" (first: {e})"))
                            .unwrap_or_default(),
                    );
                    rows.push(row);
                }
            }
        }
        drop((quiver_on, quiver_off, feast));
    }

    let loads: Vec<f64> = rows.iter().map(|r| r.load_average).collect();
    let (low, high) = loads
        .iter()
        .fold((load_at_start, load_at_start), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    let elapsed = started.elapsed().as_secs_f64();
    println!("{}", table(&rows));
    println!(
        "{cores} cores; feast serve with {feast_workers} workers; at least {} s measured after {} s warm-up per row \
         (longer for slow rows, see vs_feast.json); {drivers} drivers; Redis hash-max-listpack-entries {}; \
         1-minute load average {low:.2}-{high:.2} during the run; {elapsed:.0} s in all",
        args.seconds, args.warmup, args.hash_max_listpack_entries
    );
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("vs_feast.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "args": args,
            "cores": cores,
            "feast_workers": feast_workers,
            "drivers": drivers,
            "load_average": {"start": load_at_start, "min": low, "max": high},
            "seconds_total": elapsed,
            "rows": rows,
        }))?,
    )?;
    Ok(())
}

fn ms(us: f64) -> String {
    if us >= 100_000.0 {
        format!("{:.0}", us / 1000.0)
    } else if us >= 10_000.0 {
        format!("{:.1}", us / 1000.0)
    } else {
        format!("{:.2}", us / 1000.0)
    }
}

/// A Markdown table: one line per topology, scenario, concurrency and server, with Quiver's
/// ratios to `feast serve` in the same run.
fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| Redis | scenario (entities x features) | c | server | req/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU s / 1k req | req/s vs Feast | CPU vs Feast |\n\
         |---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let feast = rows.iter().find(|r| {
            r.server == FEAST
                && r.redis == row.redis
                && r.scenario == row.scenario
                && r.concurrency == row.concurrency
        });
        let (speed, cpu) = match feast {
            Some(f) if row.server != FEAST && row.outcome.requests > 0 => (
                format!("{:.1}x", row.outcome.rps() / f.outcome.rps()),
                format!("1/{:.0}", f.cpu_s_per_1k / row.cpu_s_per_1k),
            ),
            Some(_) if row.server != FEAST => ("—".into(), "—".into()),
            _ => (String::new(), String::new()),
        };
        let rps = row.outcome.rps();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {speed} | {cpu} |\n",
            row.redis,
            row.scenario,
            row.concurrency,
            row.server,
            if rps >= 100.0 {
                format!("{rps:.0}")
            } else {
                format!("{rps:.1}")
            },
            ms(row.outcome.p50_us),
            ms(row.outcome.p99_us),
            ms(row.outcome.p999_us),
            row.outcome.errors,
            row.cpu_s_per_1k,
        ));
    }
    out
}
