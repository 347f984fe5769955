//! The result table, printed and written as JSON.

use serde::Serialize;

use crate::driver::Outcome;

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Closed-loop workers (connections); `None` for library calls.
    pub concurrency: Option<usize>,
    /// The measured figures.
    pub outcome: Outcome,
    /// The floor this row is compared with, if any.
    pub floor: Option<String>,
    /// Requests/s of this row divided by the floor's at the same concurrency.
    pub vs_floor: Option<f64>,
    /// L1 hit rate in the window, from `/metrics` (`hits / (hits + misses)`).
    pub l1_hit_rate: Option<f64>,
    /// CPU time of the server runtime's threads per request, microseconds (from `/proc`).
    pub quiver_cpu_us: Option<f64>,
    /// CPU time of the store's processes per request, microseconds (from `/proc`).
    pub store_cpu_us: Option<f64>,
}

fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if x >= 1e3 {
        format!("{:.2}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}µs")
    }
}

/// Renders the table as Markdown (readable in a terminal, pasteable into the docs).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | conc | req/s | lookups/s | p50 | p99 | p99.9 | errors | vs floor | L1 hit | server CPU/req | store CPU/req |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|\n");
    for r in rows {
        let o = &r.outcome;
        let library = r.concurrency.is_none();
        let cell = |s: String| if library { "—".to_string() } else { s };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.concurrency.map_or("—".into(), |c| c.to_string()),
            cell(fmt_rate(o.rps())),
            fmt_rate(o.items_per_sec()),
            cell(fmt_us(o.p50_us)),
            cell(fmt_us(o.p99_us)),
            cell(fmt_us(o.p999_us)),
            cell(o.errors.to_string()),
            match (&r.floor, r.vs_floor) {
                (Some(f), Some(x)) => format!("{:.0}% of {f}", x * 100.0),
                _ => "—".into(),
            },
            r.l1_hit_rate
                .map_or("—".into(), |h| format!("{:.1}%", h * 100.0)),
            r.quiver_cpu_us.map_or("—".into(), fmt_us),
            r.store_cpu_us.map_or("—".into(), fmt_us),
        ));
    }
    out
}
