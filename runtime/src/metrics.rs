//! Prometheus metrics for operators, served at `GET /metrics` in the text format.
//!
//! Names carry the `quiver_` prefix and their unit. Labels only take bounded values: endpoint
//! routes, status codes, view names and feature statuses from the registry — never entity keys.
//! Handles for per-view series are resolved once per registry (at start-up and on each reload)
//! and indexed by view, so the request path does no label lookups.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry as PromRegistry, TextEncoder,
};

use crate::registry::FeatureStatus;
use crate::registry::Registry;

/// Latency buckets in seconds, from 50µs to 5s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0,
];

/// Feature age buckets in seconds, from 1s to 30 days.
const AGE_BUCKETS: &[f64] = &[
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    3.0 * 3600.0,
    6.0 * 3600.0,
    12.0 * 3600.0,
    86_400.0,
    2.0 * 86_400.0,
    7.0 * 86_400.0,
    30.0 * 86_400.0,
];

/// L1 cache counters, shared with [`crate::cache::CachedStore`].
#[derive(Clone)]
pub struct CacheMetrics {
    /// Lookups answered from L1 with a row.
    pub hits: IntCounter,
    /// Lookups answered from L1 with a cached NOT_FOUND.
    pub negative_hits: IntCounter,
    /// Lookups that went to the online store.
    pub misses: IntCounter,
    /// Lookups that waited for another request's read of the same key (single flight).
    pub coalesced: IntCounter,
    /// Entries served past their L1 ttl because the online store was unreachable.
    pub stale_served: IntCounter,
    /// Entries dropped because another Quiver instance (or this one) wrote a newer value.
    pub invalidations: IntCounter,
    /// Entries removed by capacity or expiry (sampled at scrape time).
    pub evictions: IntCounter,
    /// Entries currently cached.
    pub entries: IntGauge,
    /// Approximate bytes currently cached.
    pub size_bytes: IntGauge,
}

/// Online-store read metrics.
#[derive(Clone)]
pub struct StoreMetrics {
    /// Duration of one read call to the online store (all keys of a request).
    pub read_seconds: Histogram,
    /// Failed online-store operations, by operation.
    pub errors: IntCounterVec,
}

/// Per-view serving metrics, indexed like `Registry::feature_views` (see [`Metrics::views_of`]).
pub struct ViewMetrics {
    /// Served values by status, in [`FeatureStatus::index`] order.
    pub statuses: [IntCounter; FeatureStatus::ALL.len()],
    /// Age of served rows (now − event timestamp), in seconds.
    pub age_seconds: Histogram,
    /// Seconds from a value's event timestamp to the moment it became readable online.
    pub write_lag_seconds: Histogram,
}

/// On-demand transform metrics.
#[derive(Clone)]
pub struct TransformMetrics {
    /// Transform calls by view and outcome (`ok`, `trap`, `out_of_fuel`, `timeout`, ...): the
    /// outcome of the batch call, before failed batches are retried row by row.
    pub calls: IntCounterVec,
    /// Entity rows whose on-demand values failed (answered `TRANSFORM_ERROR`), by view.
    pub row_failures: IntCounterVec,
    /// Duration of one transform call, by view.
    pub call_seconds: HistogramVec,
    /// Modules that failed to load (hot reload rejections included).
    pub load_failures: IntCounter,
}

/// Feature logging, by feature service ([`crate::offline::feature_log`]).
#[derive(Clone)]
pub struct FeatureLogMetrics {
    /// Entity rows sampled for the log.
    pub sampled: IntCounterVec,
    /// Logged rows in files renamed into place.
    pub written: IntCounterVec,
    /// Sampled rows not written, by reason: `queue_full`, `write_error`.
    pub dropped: IntCounterVec,
}

/// Every metric Quiver exports.
pub struct Metrics {
    prom: PromRegistry,
    /// Requests by endpoint and status code.
    pub http_requests: IntCounterVec,
    /// Request duration by endpoint and status code.
    pub http_seconds: HistogramVec,
    /// L1 cache.
    pub cache: CacheMetrics,
    /// Online store.
    pub store: StoreMetrics,
    /// Per-view series; [`Metrics::views_of`] resolves the handles of a registry's views.
    view_series: ViewSeries,
    /// Transforms.
    pub transforms: TransformMetrics,
    /// Registry reloads of `quiver serve`.
    pub registry: RegistryMetrics,
    /// Drift of served values from their reference profiles, set at scrape time.
    pub drift: DriftMetrics,
    /// Feature logging.
    pub feature_log: FeatureLogMetrics,
}

/// Drift of served values from their reference profiles, by view and feature: set from the
/// monitor's window at every scrape ([`DriftMetrics::publish`]), so a feature no longer monitored
/// loses its series.
pub struct DriftMetrics {
    psi: GaugeVec,
    js: GaugeVec,
    null_rate_delta: GaugeVec,
    samples: IntGaugeVec,
    /// Held from publishing to rendering, so that one scrape never renders the series another
    /// scrape has just cleared. A blocking mutex: held only inside the `/metrics` handler.
    pub scrape: parking_lot::Mutex<()>,
}

/// One feature's drift, as published on `/metrics`.
pub struct DriftSeries<'a> {
    /// The view.
    pub view: &'a str,
    /// The feature.
    pub feature: &'a str,
    /// Served values in the window.
    pub samples: u64,
    /// PSI, JS distance and the null-rate delta; `None` below the minimum sample count.
    pub scores: Option<(f64, f64, f64)>,
}

impl DriftMetrics {
    /// Replaces every drift series with `series`. Call with [`DriftMetrics::scrape`] held.
    pub fn publish<'a>(&self, series: impl IntoIterator<Item = DriftSeries<'a>>) {
        self.psi.reset();
        self.js.reset();
        self.null_rate_delta.reset();
        self.samples.reset();
        for s in series {
            let labels = [s.view, s.feature];
            self.samples
                .with_label_values(&labels)
                .set(i64::try_from(s.samples).unwrap_or(i64::MAX));
            if let Some((psi, js, null_rate_delta)) = s.scores {
                self.psi.with_label_values(&labels).set(psi);
                self.js.with_label_values(&labels).set(js);
                self.null_rate_delta
                    .with_label_values(&labels)
                    .set(null_rate_delta);
            }
        }
    }
}

/// The labelled families behind [`ViewMetrics`].
struct ViewSeries {
    statuses: IntCounterVec,
    ages: HistogramVec,
    lags: HistogramVec,
}

/// Reloads of `feature_store.yaml` by a running server.
#[derive(Clone)]
pub struct RegistryMetrics {
    /// Reloads by result: `ok`, `invalid` (kept the old definitions), `needs_restart`.
    pub reloads: IntCounterVec,
    /// Generation of the registry being served (1 at start-up, +1 per applied reload).
    pub generation: IntGauge,
    /// When the registry being served was loaded, in seconds since the epoch.
    pub loaded_timestamp: prometheus::Gauge,
}

impl Metrics {
    /// Creates and registers every metric, labelled with the project and store of `registry`
    /// (which a reload cannot change).
    pub fn new(registry: &Registry) -> Self {
        let prom = PromRegistry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            prom.register(c).expect("metric names are unique");
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            reg(Box::new(g.clone()));
            g
        };

        let build_info = IntGauge::with_opts(
            Opts::new("quiver_build_info", "Build information; always 1.")
                .const_label("version", env!("CARGO_PKG_VERSION"))
                .const_label("project", registry.project.as_str()),
        )
        .expect("valid metric");
        build_info.set(1);
        reg(Box::new(build_info));

        let http_requests = IntCounterVec::new(
            Opts::new(
                "quiver_http_requests_total",
                "HTTP requests by endpoint and status code.",
            ),
            &["endpoint", "status"],
        )
        .expect("valid metric");
        reg(Box::new(http_requests.clone()));
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "quiver_http_request_duration_seconds",
                "HTTP request duration.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["endpoint", "status"],
        )
        .expect("valid metric");
        reg(Box::new(http_seconds.clone()));

        let cache = CacheMetrics {
            hits: counter(
                "quiver_l1_hits_total",
                "Lookups answered from the L1 cache with a row.",
            ),
            negative_hits: counter(
                "quiver_l1_negative_hits_total",
                "Lookups answered from the L1 cache with a cached NOT_FOUND.",
            ),
            misses: counter(
                "quiver_l1_misses_total",
                "Lookups that went to the online store.",
            ),
            coalesced: counter(
                "quiver_l1_coalesced_total",
                "Lookups that waited for a concurrent read of the same key instead of reading.",
            ),
            stale_served: counter(
                "quiver_l1_stale_served_total",
                "Entries served past their L1 ttl because the online store was unreachable.",
            ),
            invalidations: counter(
                "quiver_l1_invalidations_total",
                "Entries dropped because a newer value was written.",
            ),
            evictions: counter(
                "quiver_l1_evictions_total",
                "Entries removed by capacity or expiry.",
            ),
            entries: gauge("quiver_l1_entries", "Entries in the L1 cache."),
            size_bytes: gauge("quiver_l1_size_bytes", "Approximate size of the L1 cache."),
        };

        let read_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "quiver_online_store_read_duration_seconds",
                "Duration of one online-store read (all keys of a request).",
            )
            .const_label("store", store_kind(registry))
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        reg(Box::new(read_seconds.clone()));
        let store_errors = IntCounterVec::new(
            Opts::new(
                "quiver_online_store_errors_total",
                "Failed online-store operations.",
            )
            .const_label("store", store_kind(registry)),
            &["operation"],
        )
        .expect("valid metric");
        reg(Box::new(store_errors.clone()));

        let statuses = IntCounterVec::new(
            Opts::new(
                "quiver_feature_values_total",
                "Feature values served, by view and status (coverage = PRESENT / all).",
            ),
            &["view", "status"],
        )
        .expect("valid metric");
        reg(Box::new(statuses.clone()));
        let ages = HistogramVec::new(
            HistogramOpts::new(
                "quiver_feature_age_seconds",
                "Age of served rows: now minus their event timestamp.",
            )
            .buckets(AGE_BUCKETS.to_vec()),
            &["view"],
        )
        .expect("valid metric");
        reg(Box::new(ages.clone()));
        let lags = HistogramVec::new(
            HistogramOpts::new(
                "quiver_feature_write_lag_seconds",
                "Seconds from a value's event timestamp to the moment it became readable online.",
            )
            .buckets(AGE_BUCKETS.to_vec()),
            &["view"],
        )
        .expect("valid metric");
        reg(Box::new(lags.clone()));
        let view_series = ViewSeries {
            statuses,
            ages,
            lags,
        };

        let calls = IntCounterVec::new(
            Opts::new(
                "quiver_transform_calls_total",
                "On-demand transform calls by view and outcome.",
            ),
            &["view", "outcome"],
        )
        .expect("valid metric");
        reg(Box::new(calls.clone()));
        let call_seconds = HistogramVec::new(
            HistogramOpts::new(
                "quiver_transform_call_duration_seconds",
                "Duration of one transform call.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["view"],
        )
        .expect("valid metric");
        reg(Box::new(call_seconds.clone()));
        let row_failures = IntCounterVec::new(
            Opts::new(
                "quiver_transform_row_failures_total",
                "Entity rows whose on-demand transform failed (answered TRANSFORM_ERROR), by view.",
            ),
            &["view"],
        )
        .expect("valid metric");
        reg(Box::new(row_failures.clone()));
        let transforms = TransformMetrics {
            calls,
            row_failures,
            call_seconds,
            load_failures: counter(
                "quiver_transform_load_failures_total",
                "Transform modules rejected at load or reload.",
            ),
        };

        let reloads = IntCounterVec::new(
            Opts::new(
                "quiver_registry_reloads_total",
                "Reloads of feature_store.yaml by result: ok, invalid, needs_restart.",
            ),
            &["result"],
        )
        .expect("valid metric");
        reg(Box::new(reloads.clone()));
        for result in ["ok", "invalid", "needs_restart"] {
            reloads.with_label_values(&[result]);
        }
        let loaded_timestamp = prometheus::Gauge::new(
            "quiver_registry_loaded_timestamp_seconds",
            "When the registry being served was loaded, in seconds since the epoch.",
        )
        .expect("valid metric");
        reg(Box::new(loaded_timestamp.clone()));
        let registry_metrics = RegistryMetrics {
            reloads,
            generation: gauge(
                "quiver_registry_generation",
                "Generation of the registry being served: 1 at start-up, +1 per applied reload.",
            ),
            loaded_timestamp,
        };

        let drift_gauge = |name: &str, help: &str| {
            let g =
                GaugeVec::new(Opts::new(name, help), &["view", "feature"]).expect("valid metric");
            reg(Box::new(g.clone()));
            g
        };
        let samples = IntGaugeVec::new(
            Opts::new(
                "quiver_feature_drift_samples",
                "Served values of a monitored feature binned in the drift window.",
            ),
            &["view", "feature"],
        )
        .expect("valid metric");
        reg(Box::new(samples.clone()));
        let drift = DriftMetrics {
            psi: drift_gauge(
                "quiver_feature_drift_psi",
                "Population stability index of served values against the reference profile, over the drift window.",
            ),
            js: drift_gauge(
                "quiver_feature_drift_js",
                "Jensen-Shannon distance (base 2) of served values from the reference profile, over the drift window.",
            ),
            null_rate_delta: drift_gauge(
                "quiver_feature_null_rate_delta",
                "Share of null values served minus the share in the reference profile, over the drift window.",
            ),
            samples,
            scrape: parking_lot::Mutex::new(()),
        };

        let log_counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let feature_log = FeatureLogMetrics {
            sampled: log_counter(
                "quiver_feature_log_sampled_total",
                "Served entity rows sampled for the feature log, by feature service.",
                &["feature_service"],
            ),
            written: log_counter(
                "quiver_feature_log_rows_total",
                "Logged rows written to Parquet files in place, by feature service.",
                &["feature_service"],
            ),
            dropped: log_counter(
                "quiver_feature_log_dropped_total",
                "Sampled rows not logged, by feature service and reason: queue_full, write_error.",
                &["feature_service", "reason"],
            ),
        };
        for s in registry
            .feature_services
            .iter()
            .filter(|s| s.logging.is_some())
        {
            let name = s.name.as_str();
            feature_log.sampled.with_label_values(&[name]);
            feature_log.written.with_label_values(&[name]);
            for reason in ["queue_full", "write_error"] {
                feature_log.dropped.with_label_values(&[name, reason]);
            }
        }

        Metrics {
            prom,
            feature_log,
            drift,
            http_requests,
            http_seconds,
            cache,
            store: StoreMetrics {
                read_seconds,
                errors: store_errors,
            },
            view_series,
            transforms,
            registry: registry_metrics,
        }
    }

    /// The per-view handles of `registry`'s feature views, indexed like
    /// `Registry::feature_views`; resolved once per registry so the request path does no label
    /// lookups.
    pub fn views_of(&self, registry: &Registry) -> Vec<ViewMetrics> {
        let series = &self.view_series;
        registry
            .feature_views
            .iter()
            .map(|v| {
                let name = v.name.as_str();
                let status =
                    |s: FeatureStatus| series.statuses.with_label_values(&[name, s.as_str()]);
                ViewMetrics {
                    statuses: FeatureStatus::ALL.map(status),
                    age_seconds: series.ages.with_label_values(&[name]),
                    write_lag_seconds: series.lags.with_label_values(&[name]),
                }
            })
            .collect()
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.prom.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        out
    }
}

fn store_kind(registry: &Registry) -> &'static str {
    registry.online_store.kind()
}
