//! `cargo run -p quickstart`: generate the sample data, materialize it into the embedded online
//! store configured by `feature_store.yaml`, and serve it on http://127.0.0.1:6566.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use quiver::clock::system_clock;
use quiver::offline::materialize::{MaterializeRequest, materialize};

/// Quiver quickstart.
#[derive(Parser)]
struct Args {
    /// The feature_store.yaml to use (the repository's root one by default).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../feature_store.yaml"))]
    config: PathBuf,
    /// Number of users to generate.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Only generate and materialize; do not serve.
    #[arg(long)]
    no_serve: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = args
        .config
        .canonicalize()
        .with_context(|| format!("cannot find {}", args.config.display()))?;
    let registry = Arc::new(quiver::config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?);
    let clock = system_clock();

    let data_dir = registry.base_dir.join("examples/quickstart/data");
    let generated = quickstart::generate(&data_dir, args.users, clock.now_micros(), 42)?;
    println!(
        "1/3 generated {} user_features rows, {} user_sessions rows and {} labels for {} users in {}",
        generated.user_feature_rows,
        generated.session_rows,
        generated.label_rows,
        generated.users,
        data_dir.display()
    );

    let store = registry.open_store(Arc::clone(&clock)).await?;
    let request = MaterializeRequest {
        start: None,
        end: clock.now_micros(),
        views: Vec::new(),
        progress: true,
    };
    for s in materialize(&registry, &store, &clock, &request).await? {
        println!(
            "2/3 materialized {}: {} rows read, {} entities, {} written, {} skipped as older, {} expired",
            s.view, s.rows_read, s.entities, s.written, s.skipped_older, s.skipped_expired
        );
    }
    if args.no_serve {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(&registry.server.bind)
        .await
        .with_context(|| format!("cannot bind {}", registry.server.bind))?;
    println!(
        "3/3 serving on http://{} — try:\n\n  curl -s -X POST http://{}/get-online-features \\\n    -d '{{\"features\": [\"user_features:avg_order_value_7d\", \"user_features:fraud_score\"], \"entities\": {{\"user_id\": [\"user_0001\", \"user_0002\", \"nobody\"]}}}}'\n\nCtrl-C stops the server.",
        listener.local_addr()?,
        listener.local_addr()?
    );
    let state = quiver::serving::AppState::new(registry, store, clock);
    quiver::serving::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
