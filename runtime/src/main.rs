//! The `quiver` command: create a project, validate a registry, materialize Parquet into the
//! online store, serve, build training sets and print their profiles.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use quiver::clock::{SharedClock, system_clock};
use quiver::config;
use quiver::monitoring::{Profile, ProfileOptions};
use quiver::offline::historical::{FeatureList, HistoricalOptions, HistoricalRequest, historical};
use quiver::offline::materialize::{MaterializeRequest, ViewSummary, materialize};
use quiver::registry::Registry;
use quiver::serving::{AppState, serve};
use quiver::store::SharedStore;
use quiver::types::EpochMicros;

/// Quiver: a feature-serving runtime for machine learning.
#[derive(Parser)]
#[command(name = "quiver", version, about)]
struct Cli {
    /// Path to feature_store.yaml.
    #[arg(
        short,
        long,
        global = true,
        env = "QUIVER_CONFIG",
        default_value = "feature_store.yaml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check feature_store.yaml and report every problem at once: the document, then each view's
    /// source data (files, columns, types) and each on-demand view's transform module.
    Validate {
        /// Check only the document, not the sources and modules it names.
        #[arg(long)]
        no_data: bool,
    },
    /// Load the latest value per entity in [START, END] from the Parquet sources into the online store.
    Materialize {
        /// Window start: "now-7d", RFC 3339 (2026-11-01T00:00:00Z), or a UTC time or date
        /// without offset (2026-11-01T00:00:00, 2026-11-01).
        start: String,
        /// Window end, in the same forms, or "now".
        end: String,
        /// Only these feature views (comma-separated).
        #[arg(long, value_delimiter = ',')]
        views: Vec<String>,
    },
    /// Materialize from each view's watermark (the end of its last incremental run) up to END.
    MaterializeIncremental {
        /// Window end: "now", "now-1h", RFC 3339, or a UTC time or date without offset.
        end: String,
        /// Only these feature views (comma-separated).
        #[arg(long, value_delimiter = ',')]
        views: Vec<String>,
    },
    /// Build a point-in-time-correct training set: every entity row with its features as of its
    /// event_timestamp, as the online store would have served them then.
    Historical {
        /// Entity dataframe (Parquet): join keys, event_timestamp, and pass-through columns. A
        /// path or an s3:// URL.
        #[arg(
            long,
            required_unless_present = "from_log",
            conflicts_with = "from_log"
        )]
        entities: Option<String>,
        /// Features as view:feature (or a whole view), comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present_any = ["feature_service", "from_log"],
            conflicts_with_all = ["feature_service", "from_log"]
        )]
        features: Vec<String>,
        /// Build the training set from a feature log instead: the values that were served, joined
        /// with --labels on request_id (and row).
        #[arg(long, requires = "labels")]
        from_log: Option<PathBuf>,
        /// With --from-log: Parquet with request_id (optionally row) and the label columns.
        #[arg(long, requires = "from_log")]
        labels: Option<PathBuf>,
        /// With --from-log: only rows requested at or after this time.
        #[arg(long, requires = "from_log")]
        since: Option<String>,
        /// With --from-log: only rows requested before this time.
        #[arg(long, requires = "from_log")]
        until: Option<String>,
        /// A feature service instead of --features.
        #[arg(long)]
        feature_service: Option<String>,
        /// Parquet file to write: a path or an s3:// URL.
        #[arg(long)]
        output: String,
        /// Name feature columns view__feature instead of feature.
        #[arg(long)]
        full_feature_names: bool,
        /// Memory budget of the join in MiB; larger inputs are spilled to temporary files.
        #[arg(long, default_value_t = 1024)]
        memory_mib: usize,
        /// Worker threads (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Directory for temporary files (default: the system's).
        #[arg(long)]
        temp_dir: Option<PathBuf>,
        /// Rows per on-demand transform call.
        #[arg(long, default_value_t = 4096)]
        transform_batch_rows: usize,
    },
    /// Replay logged served rows through the point-in-time join at their request time and compare
    /// them with what was served, feature by feature; exits 2 when a feature's mismatch rate is
    /// above --max-mismatch-rate.
    Skew {
        /// A feature log destination (logging.destination of a feature service).
        #[arg(long)]
        log: PathBuf,
        /// Only rows requested at or after this time ("now-1d", RFC 3339, a UTC date).
        #[arg(long)]
        since: Option<String>,
        /// Only rows requested before this time.
        #[arg(long)]
        until: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Largest mismatch rate (0 to 1) of any feature that still exits 0.
        #[arg(long, default_value_t = 0.0)]
        max_mismatch_rate: f64,
        /// Directories holding earlier versions of the transform modules, found by sha256
        /// (comma-separated; the registry's transforms directory is always searched).
        #[arg(long, value_delimiter = ',')]
        modules: Vec<PathBuf>,
        /// Mismatching rows shown per feature.
        #[arg(long, default_value_t = 5)]
        examples: usize,
        /// Memory budget of the join in MiB.
        #[arg(long, default_value_t = 1024)]
        memory_mib: usize,
        /// Worker threads (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Directory for temporary files (default: the system's).
        #[arg(long)]
        temp_dir: Option<PathBuf>,
    },
    /// Write a Quiver feature_store.yaml equivalent to a Feast repository (its feature_store.yaml
    /// and the registry `feast apply` wrote), listing everything that cannot be carried over.
    ImportFeast {
        /// The Feast repository: the directory holding Feast's feature_store.yaml.
        repo: PathBuf,
        /// The Quiver file to write; stub transform crates go to transforms/ beside it.
        #[arg(long, default_value = "feature_store.yaml")]
        output: PathBuf,
        /// Replace the output and stub crate files if they exist.
        #[arg(long)]
        force: bool,
        /// The quiver-sdk crate the stub transform crates depend on by path [default: this
        /// checkout's sdk/].
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Create a working project: feature_store.yaml, sample Parquet data, a transform crate and a
    /// README with the next commands.
    Init {
        /// The project directory (created if absent); the project is named after it.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Write into a non-empty directory, replacing files of the same name.
        #[arg(long)]
        force: bool,
        /// The quiver-sdk crate the transform crate depends on by path [default: this checkout's
        /// sdk/].
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Create a transform crate with typed Input and Output structs and print its
    /// on_demand_feature_views entry.
    NewTransform {
        /// The transform's name: the on-demand view, the crate, the function and the .wasm.
        name: String,
        /// The directory the crate is written into, as <DIR>/<NAME>/.
        #[arg(long, default_value = "transforms")]
        dir: PathBuf,
        /// Features the transform reads, as name:dtype (comma-separated).
        #[arg(long, value_delimiter = ',')]
        inputs: Vec<String>,
        /// Request fields the client sends, as name:dtype (comma-separated).
        #[arg(long, value_delimiter = ',')]
        request: Vec<String>,
        /// Outputs, as name:dtype (comma-separated) [default: value:float64].
        #[arg(long, value_delimiter = ',')]
        outputs: Vec<String>,
        /// The feature views holding the inputs, for the entry's `sources` (comma-separated).
        #[arg(long, value_delimiter = ',')]
        sources: Vec<String>,
        /// Write into an existing non-empty crate directory, replacing its files.
        #[arg(long)]
        force: bool,
        /// The quiver-sdk crate the crate depends on by path [default: this checkout's sdk/].
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Print the profile of a training set (stored in its metadata by `historical`), or compute
    /// the profile of a feature view's source data over a window: the reference for drift
    /// monitoring.
    Profile {
        /// A training set written by `quiver historical`.
        #[arg(required_unless_present = "view", conflicts_with_all = ["view", "bins", "top_k"])]
        training_set: Option<PathBuf>,
        /// Profile this feature view's offline source instead.
        #[arg(long, requires_all = ["start", "end"])]
        view: Option<String>,
        /// Window start (with --view), in the forms `materialize` takes.
        #[arg(long, requires = "view")]
        start: Option<String>,
        /// Window end (with --view).
        #[arg(long, requires = "view")]
        end: Option<String>,
        /// Write the profile (JSON) to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Quantile bins per numeric feature (with --view; 1 to 50).
        #[arg(long)]
        bins: Option<usize>,
        /// Most frequent values kept per string or bool feature (with --view).
        #[arg(long)]
        top_k: Option<usize>,
    },
    /// Serve the HTTP API (POST /get-online-features, GET /health, GET /ready).
    Serve {
        /// Address to bind; overrides server.bind.
        #[arg(long)]
        bind: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // validate and skew answer with their own reports; their module loads are not news.
    let default_level = match cli.command {
        Command::Validate { .. } | Command::Skew { .. } => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUIVER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs redirected to a file or collected stay plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The message and its causes on one line; no backtrace, even with RUST_BACKTRACE set:
            // these are the user's errors (a file, an address, a time), not Quiver's bugs.
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::ImportFeast {
        repo,
        output,
        force,
        sdk,
    } = cli.command
    {
        // The SDK path is written into the stub crates' Cargo.toml: absolute and tidy.
        let sdk_dir = quiver::scaffold::sdk_dir(sdk.as_deref());
        let options = quiver::import::feast::ImportOptions {
            output,
            force,
            sdk_dir,
        };
        let summary = quiver::import::feast::import_repository(&repo, &options)
            .with_context(|| format!("cannot import the Feast repository {}", repo.display()))?;
        print!("{}", summary.report());
        return Ok(());
    }
    if let Command::Init { dir, force, sdk } = cli.command {
        let options = quiver::scaffold::project::InitOptions {
            dir,
            force,
            sdk_dir: quiver::scaffold::sdk_dir(sdk.as_deref()),
            now_micros: system_clock().now_micros(),
        };
        let done = quiver::scaffold::project::init(&options)
            .with_context(|| format!("cannot create a project in {}", options.dir.display()))?;
        print!("{}", done.report());
        return Ok(());
    }
    if let Command::NewTransform {
        name,
        dir,
        inputs,
        request,
        outputs,
        sources,
        force,
        sdk,
    } = cli.command
    {
        let options = quiver::scaffold::new_transform::NewTransform {
            name,
            dir,
            inputs,
            request,
            outputs,
            sources,
            sdk_dir: quiver::scaffold::sdk_dir(sdk.as_deref()),
            force,
        };
        let generated = quiver::scaffold::new_transform::new_transform(&options)
            .with_context(|| format!("cannot create the transform crate {}", options.name))?;
        print!("{}", generated.report());
        return Ok(());
    }
    if let Command::Profile {
        training_set: Some(file),
        output,
        ..
    } = &cli.command
    {
        let profile = quiver::offline::profile::read_training_profile(file)
            .context("cannot read the training set's profile")?;
        return write_profile(&profile, output.as_deref());
    }
    let (registry, digest) = match config::load_with_digest(&cli.config) {
        Ok((r, digest)) => (Arc::new(r), digest),
        Err(errors) => {
            eprint!("{errors}");
            std::process::exit(1);
        }
    };
    let clock = system_clock();
    match cli.command {
        Command::Validate { no_data } => {
            if !no_data {
                let checked = Arc::clone(&registry);
                let problems = tokio::task::spawn_blocking(move || {
                    let mut problems = quiver::offline::check::check_sources(&checked);
                    problems.extend(quiver::offline::check::check_transforms(&checked));
                    let mut problems: Vec<String> =
                        problems.iter().map(ToString::to_string).collect();
                    // The monitoring references' profiles, read and matched as `serve` does.
                    if let Err(e) = quiver::serving::load_monitor(&checked) {
                        problems.extend(e.errors.iter().map(ToString::to_string));
                    }
                    problems
                })
                .await
                .context("the data check failed")?;
                if !problems.is_empty() {
                    let n = problems.len();
                    eprintln!(
                        "{} is valid, but {n} problem{} keep{} it from running (--no-data skips these checks):",
                        cli.config.display(),
                        if n == 1 { "" } else { "s" },
                        if n == 1 { "s" } else { "" },
                    );
                    for p in &problems {
                        eprintln!("  {p}");
                    }
                    std::process::exit(1);
                }
            }
            println!(
                "{} is valid: project \"{}\", {}, {}, {}, {}",
                cli.config.display(),
                registry.project,
                count(registry.entities.len(), "entity", "entities"),
                count(
                    registry.feature_views.len(),
                    "feature view",
                    "feature views"
                ),
                count(
                    registry.on_demand_views.len(),
                    "on-demand view",
                    "on-demand views"
                ),
                count(
                    registry.feature_services.len(),
                    "feature service",
                    "feature services"
                ),
            );
            Ok(())
        }
        Command::Materialize { start, end, views } => {
            let start = parse_time(&start, &clock).context("START")?;
            let end = parse_time(&end, &clock).context("END")?;
            if start > end {
                bail!("START is after END");
            }
            run_materialize(&registry, &clock, Some(start), end, views).await
        }
        Command::MaterializeIncremental { end, views } => {
            let end = parse_time(&end, &clock).context("END")?;
            run_materialize(&registry, &clock, None, end, views).await
        }
        Command::Historical {
            from_log: Some(log_dir),
            labels,
            since,
            until,
            feature_service,
            output,
            ..
        } => {
            if quiver::storage::OfflineStorage::is_url(&output) {
                bail!("--from-log writes a local file: --output {output} is a URL");
            }
            let request = quiver::offline::feature_log::training::FromLogRequest {
                log_dir,
                labels: labels.context("--from-log needs --labels")?,
                output: PathBuf::from(&output),
                feature_service,
                since: since
                    .map(|t| parse_time(&t, &clock))
                    .transpose()
                    .context("--since")?,
                until: until
                    .map(|t| parse_time(&t, &clock))
                    .transpose()
                    .context("--until")?,
            };
            let s = tokio::task::spawn_blocking(move || {
                quiver::offline::feature_log::training::training_set_from_log(&request)
            })
            .await
            .context("training set task failed")?
            .context("cannot build the training set from the feature log")?;
            println!(
                "Wrote {} of feature service \"{}\" as served to {}",
                count(s.rows as usize, "row", "rows"),
                s.feature_service,
                output
            );
            if s.unmatched_labels > 0 {
                eprintln!(
                    "note: {} had no logged row (not sampled, or outside the range)",
                    count(s.unmatched_labels as usize, "label row", "label rows")
                );
            }
            Ok(())
        }
        Command::Historical {
            entities,
            features,
            feature_service,
            output,
            full_feature_names,
            memory_mib,
            threads,
            temp_dir,
            transform_batch_rows,
            ..
        } => {
            let cwd = std::env::current_dir().context("current directory")?;
            let locate = |spec: &str, what: &str| {
                registry
                    .offline
                    .locate(spec, &cwd)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("--{what}"))
            };
            let request = HistoricalRequest {
                entities: locate(&entities.context("--entities is required")?, "entities")?,
                features: match feature_service {
                    Some(name) => FeatureList::Service(name),
                    None => FeatureList::Features(features),
                },
                output: locate(&output, "output")?,
                full_feature_names,
            };
            let options = HistoricalOptions {
                memory_budget: memory_mib.saturating_mul(1 << 20),
                threads,
                temp_dir,
                progress: true,
                transform_batch_rows,
            };
            let registry = Arc::clone(&registry);
            let output = request.output.clone();
            let s = tokio::task::spawn_blocking(move || historical(&registry, &request, &options))
                .await
                .context("historical retrieval task failed")?
                .context("historical retrieval failed")?;
            println!(
                "Wrote {} with {} from {} to {} in {:.2}s ({:.0} rows/s; \
                 {}; join {:.2}s, transforms {:.2}s; {}, {}; {})",
                count(s.rows as usize, "row", "rows"),
                count(s.features, "feature", "features"),
                count(s.views, "feature view", "feature views"),
                output,
                s.seconds,
                s.rows as f64 / s.seconds.max(1e-9),
                count(s.source_rows as usize, "source row", "source rows"),
                s.join_seconds,
                s.transform_seconds,
                count(s.buckets, "bucket", "buckets"),
                if s.spilled {
                    "spilled to disk"
                } else {
                    "in memory"
                },
                s.pruning,
            );
            if s.transform_failed_rows > 0 {
                eprintln!(
                    "warning: on-demand transforms failed on {}; their features are null",
                    count(s.transform_failed_rows as usize, "row", "rows")
                );
            }
            Ok(())
        }
        Command::Skew {
            log,
            since,
            until,
            json,
            max_mismatch_rate,
            modules,
            examples,
            memory_mib,
            threads,
            temp_dir,
        } => {
            if !(0.0..=1.0).contains(&max_mismatch_rate) {
                bail!("--max-mismatch-rate must be from 0 to 1, got {max_mismatch_rate}");
            }
            let request = quiver::offline::feature_log::skew::SkewRequest {
                log_dir: log,
                since: since
                    .map(|t| parse_time(&t, &clock))
                    .transpose()
                    .context("--since")?,
                until: until
                    .map(|t| parse_time(&t, &clock))
                    .transpose()
                    .context("--until")?,
                module_dirs: modules,
                examples,
            };
            let options = HistoricalOptions {
                memory_budget: memory_mib.saturating_mul(1 << 20),
                threads,
                temp_dir,
                progress: false,
                ..HistoricalOptions::default()
            };
            let registry = Arc::clone(&registry);
            let report = tokio::task::spawn_blocking(move || {
                quiver::offline::feature_log::skew::skew(&registry, &request, &options)
            })
            .await
            .context("skew task failed")?
            .context("cannot check the feature log")?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).context("cannot render the report")?
                );
            } else {
                print!("{}", report.render());
            }
            let worst = report.worst_mismatch_rate();
            if worst > max_mismatch_rate {
                eprintln!(
                    "skew: a feature's mismatch rate is {:.4}%, above --max-mismatch-rate {:.4}%",
                    worst * 100.0,
                    max_mismatch_rate * 100.0
                );
                std::process::exit(2);
            }
            Ok(())
        }
        // Handled above, before a registry is needed.
        Command::ImportFeast { .. } | Command::Init { .. } | Command::NewTransform { .. } => Ok(()),
        Command::Profile {
            view,
            start,
            end,
            output,
            bins,
            top_k,
            ..
        } => {
            // Clap requires --view (or a training set, read above) and --start and --end with it.
            let (Some(view), Some(start), Some(end)) = (view, start, end) else {
                bail!("give a training set, or --view with --start and --end");
            };
            let start = parse_time(&start, &clock).context("--start")?;
            let end = parse_time(&end, &clock).context("--end")?;
            let defaults = ProfileOptions::default();
            let options = ProfileOptions {
                bins: bins.unwrap_or(defaults.bins),
                top_k: top_k.unwrap_or(defaults.top_k),
                ..defaults
            };
            let registry = Arc::clone(&registry);
            let name = view.clone();
            let profile = tokio::task::spawn_blocking(move || {
                quiver::offline::profile::profile_view(&registry, &name, start, end, options)
            })
            .await
            .context("profile task failed")?
            .with_context(|| format!("cannot profile feature view \"{view}\""))?;
            write_profile(&profile, output.as_deref())
        }
        Command::Serve { bind } => {
            let store = open_store(&registry, &clock).await?;
            let bind = bind.unwrap_or_else(|| registry.server.bind.clone());
            let listener = tokio::net::TcpListener::bind(&bind)
                .await
                .with_context(|| {
                    format!(
                        "cannot bind {bind} (choose another address with --bind or server.bind)"
                    )
                })?;
            let addr = listener.local_addr()?;
            tracing::info!(
                project = %registry.project,
                store = store.kind(),
                "serving on http://{addr} (POST /get-online-features, GET /health, GET /ready)"
            );
            let state = match AppState::try_new(Arc::clone(&registry), store, clock) {
                Ok(state) => state,
                Err(mut errors) => {
                    errors.file = Some(cli.config.clone());
                    eprint!("{errors}");
                    std::process::exit(1);
                }
            };
            // Serves edits of feature_store.yaml without a restart while it lives.
            let _watcher = match state.watch_registry(&cli.config, digest) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::error!(
                        "cannot watch {}; changes need a restart: {e}",
                        cli.config.display()
                    );
                    None
                }
            };
            serve(listener, state, shutdown_signal())
                .await
                .context("server failed")
        }
    }
}

/// Writes a profile as indented JSON to `output`, or to standard output.
fn write_profile(profile: &Profile, output: Option<&std::path::Path>) -> Result<()> {
    let mut json = profile.to_json_pretty();
    json.push('\n');
    match output {
        Some(path) => {
            std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            print!("{json}");
            Ok(())
        }
    }
}

async fn open_store(registry: &Registry, clock: &SharedClock) -> Result<SharedStore> {
    registry
        .open_store(Arc::clone(clock))
        .await
        .context("cannot open the online store")
}

async fn run_materialize(
    registry: &Registry,
    clock: &SharedClock,
    start: Option<EpochMicros>,
    end: EpochMicros,
    views: Vec<String>,
) -> Result<()> {
    let store = open_store(registry, clock).await?;
    let started = Instant::now();
    let request = MaterializeRequest {
        start,
        end,
        views,
        progress: true,
    };
    let summaries = materialize(registry, &store, clock, &request).await?;
    for s in &summaries {
        print_summary(s);
    }
    let rows: u64 = summaries.iter().map(|s| s.rows_read).sum();
    let written: u64 = summaries.iter().map(|s| s.written).sum();
    println!(
        "Materialized {} into {}: {}, {} written in {:.2}s",
        count(summaries.len(), "feature view", "feature views"),
        store.kind(),
        count(rows as usize, "row read", "rows read"),
        count(written as usize, "entity", "entities"),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_summary(s: &ViewSummary) {
    let fmt = |t: EpochMicros| {
        if t == i64::MIN {
            "the beginning".to_string()
        } else {
            quiver::serving::json::format_timestamp(t)
        }
    };
    println!(
        "{}: {} to {}: {}, {}, {} written, {} skipped as older, {} expired, {} with null keys; {}",
        s.view,
        fmt(s.start),
        fmt(s.end),
        count(s.rows_read as usize, "row read", "rows read"),
        count(s.entities as usize, "entity", "entities"),
        s.written,
        s.skipped_older,
        s.skipped_expired,
        s.skipped_null,
        s.pruning
    );
}

/// `n` with the singular or plural noun: "1 entity", "2 entities".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A time on the command line: `now`, `now-<duration>` (`now-7d`, `now-1h30m`), or what
/// [`quiver::types::parse_time`] reads: RFC 3339 (`2026-11-22T07:00:00Z`, any offset) or, as Feast
/// accepts them, a time without offset (`2026-11-22T07:00:00`) or a date (`2026-11-22`, its
/// midnight), both taken as UTC.
fn parse_time(text: &str, clock: &SharedClock) -> Result<EpochMicros> {
    if text == "now" {
        return Ok(clock.now_micros());
    }
    if let Some(ago) = text.strip_prefix("now-") {
        let ago = quiver::settings::HumanDuration::parse(ago)
            .map_err(|e| anyhow::anyhow!("\"{text}\": {e}"))?;
        return Ok(clock.now_micros().saturating_sub(ago.as_micros_i64()));
    }
    quiver::types::parse_time(text)
        .map_err(|e| anyhow::anyhow!("{e}; or \"now\", or \"now-<duration>\" (now-7d)"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
