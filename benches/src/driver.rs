//! Closed-loop load: `concurrency` workers, each sending its next request as soon as the previous
//! answer arrived, for a warm-up then a measured window. Only requests that complete inside the
//! window count; each worker keeps every latency, so percentiles are exact.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One unit of work of a worker: a request, or a Redis command.
pub trait Op: Send + 'static {
    /// Performs one request; `Ok(items)` counts `items` (entities looked up, rows pushed).
    fn run(&mut self) -> impl Future<Output = anyhow::Result<u64>> + Send;

    /// Called after a failed request (to reconnect, say).
    fn recover(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Timing of one scenario run.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Excluded from the figures.
    pub warmup: Duration,
    /// Measured.
    pub measure: Duration,
}

/// The figures of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// Successful requests completed in the window.
    pub requests: u64,
    /// Items (entities, rows) of those requests.
    pub items: u64,
    /// Failed requests completed in the window.
    pub errors: u64,
    /// Length of the window, seconds.
    pub seconds: f64,
    /// Latency percentiles of successful requests, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// First error message seen, if any.
    pub first_error: Option<String>,
}

impl Outcome {
    /// Requests per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// Items per second.
    pub fn items_per_sec(&self) -> f64 {
        self.items as f64 / self.seconds
    }
}

struct WorkerResult {
    latencies_ns: Vec<u64>,
    items: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `ops` (one per worker) closed-loop on the current runtime; `on_window` runs when the
/// measured window starts and again when it ends (to snapshot server counters).
pub async fn closed_loop<O: Op, F, Fut>(ops: Vec<O>, window: Window, mut on_window: F) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let start = Instant::now();
    let measure_from = start + window.warmup;
    let measure_to = measure_from + window.measure;
    let workers: Vec<_> = ops
        .into_iter()
        .map(|mut op| {
            tokio::spawn(async move {
                let mut r = WorkerResult {
                    latencies_ns: Vec::with_capacity(1 << 14),
                    items: 0,
                    errors: 0,
                    first_error: None,
                };
                loop {
                    let sent = Instant::now();
                    if sent >= measure_to {
                        break;
                    }
                    let result = op.run().await;
                    let done = Instant::now();
                    let counted = done >= measure_from && done < measure_to;
                    match result {
                        Ok(items) if counted => {
                            r.latencies_ns.push((done - sent).as_nanos() as u64);
                            r.items += items;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            if counted {
                                r.errors += 1;
                                r.first_error.get_or_insert_with(|| format!("{e:#}"));
                            }
                            op.recover().await;
                        }
                    }
                }
                r
            })
        })
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    on_window().await;
    tokio::time::sleep_until(measure_to.into()).await;
    on_window().await;
    let mut all = Vec::new();
    let mut out = Outcome {
        seconds: window.measure.as_secs_f64(),
        ..Default::default()
    };
    for w in workers {
        let r = w.await.expect("load worker panicked");
        out.items += r.items;
        out.errors += r.errors;
        if out.first_error.is_none() {
            out.first_error = r.first_error;
        }
        all.extend(r.latencies_ns);
    }
    out.requests = all.len() as u64;
    if !all.is_empty() {
        all.sort_unstable();
        let at = |q: f64| {
            let i = ((all.len() as f64 * q).ceil() as usize).clamp(1, all.len()) - 1;
            all[i] as f64 / 1e3
        };
        out.p50_us = at(0.50);
        out.p99_us = at(0.99);
        out.p999_us = at(0.999);
        out.mean_us = all.iter().sum::<u64>() as f64 / all.len() as f64 / 1e3;
    }
    out
}
