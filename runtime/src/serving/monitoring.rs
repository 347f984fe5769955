//! `GET /monitoring` and the drift series of `GET /metrics`: the drift monitor's window, scored at
//! the time of the request (see `docs/monitoring.md`).

use serde_json::{Value as Json, json};

use super::ServingState;
use crate::metrics::{DriftSeries, Metrics};
use crate::online::FeatureDrift;
use crate::types::EpochMicros;

/// Publishes every monitored feature's drift on the metrics (none without monitoring) and renders
/// every metric, under the drift scrape lock.
pub fn render_metrics(metrics: &Metrics, serving: &ServingState, now: EpochMicros) -> Vec<u8> {
    let _scrape = metrics.drift.scrape.lock();
    let report = serving
        .online
        .monitor()
        .map(|m| m.report(now))
        .unwrap_or_default();
    metrics.drift.publish(report.iter().map(|d| {
        let score = &d.score;
        DriftSeries {
            view: d.feature.view.as_str(),
            feature: d.feature.feature.as_str(),
            samples: score.samples,
            scores: score.psi.zip(score.js).map(|(psi, js)| {
                let delta = score.null_rate_serving.unwrap_or(0.0) - score.null_rate_reference;
                (psi, js, delta)
            }),
        }
    }));
    metrics.render()
}

/// The body of `GET /monitoring`: the window, the sample rate, and per monitored view its
/// reference and per feature its scores, status and bins (proportions of the reference and of the
/// values served in the window).
pub fn describe(serving: &ServingState, now: EpochMicros) -> Json {
    let generated_at = chrono::DateTime::from_timestamp_micros(now)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let Some(monitor) = serving.online.monitor() else {
        return json!({"window_seconds": 0, "sample_rate": 0.0, "generated_at": generated_at, "views": []});
    };
    let mut views: Vec<(&str, &str, Vec<Json>)> = Vec::new();
    for drift in monitor.report(now) {
        let f = drift.feature;
        let entry = feature_json(&drift);
        match views
            .iter_mut()
            .find(|(view, reference, _)| *view == f.view.as_str() && *reference == f.reference)
        {
            Some((_, _, features)) => features.push(entry),
            None => views.push((f.view.as_str(), f.reference.as_str(), vec![entry])),
        }
    }
    let views: Vec<Json> = views
        .into_iter()
        .map(|(view, reference, features)| {
            json!({"view": view, "reference": reference, "features": features})
        })
        .collect();
    json!({
        "window_seconds": monitor.window().as_secs(),
        "sample_rate": monitor.sample_rate(),
        "generated_at": generated_at,
        "views": views,
    })
}

fn feature_json(drift: &FeatureDrift<'_>) -> Json {
    let f = drift.feature;
    let score = &drift.score;
    let reference = f.profile.counts();
    let proportions = |counts: &[u64]| -> Vec<f64> {
        let total: u64 = counts.iter().sum();
        counts
            .iter()
            .map(|&c| {
                if total == 0 {
                    0.0
                } else {
                    c as f64 / total as f64
                }
            })
            .collect()
    };
    let (r, s) = (proportions(&reference), proportions(&drift.serving));
    let bins: Vec<Json> = (0..reference.len())
        .map(|b| json!({"label": f.profile.bin_label(b), "reference": r[b], "serving": s[b]}))
        .collect();
    json!({
        "feature": f.feature.as_str(),
        "dtype": f.dtype,
        "samples": score.samples,
        "psi": score.psi,
        "js": score.js,
        "null_rate_reference": score.null_rate_reference,
        "null_rate_serving": score.null_rate_serving,
        "status": score.status,
        "bins": bins,
    })
}
