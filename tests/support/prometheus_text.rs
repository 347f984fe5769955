//! A strict reader of the Prometheus text exposition format, enough to check that `/metrics`
//! parses and to read sample values.

use std::collections::HashMap;

/// Parses the exposition text; returns `series → value` (series = `name{labels}` as printed), or
/// the first line that is not valid exposition format.
pub fn parse_samples(text: &str) -> Result<HashMap<String, f64>, String> {
    let mut samples = HashMap::new();
    let mut typed = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), Some(_)) if valid_name(name) => {}
                (Some("TYPE"), Some(name), Some(kind))
                    if valid_name(name)
                        && ["counter", "gauge", "histogram", "summary", "untyped"]
                            .contains(&kind) =>
                {
                    typed.insert(name.to_string(), kind.to_string());
                }
                _ => return Err(bad("malformed comment")),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| bad("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| bad("value is not a number"))?,
        };
        let name = match series.find('{') {
            Some(i) => {
                let labels = series[i + 1..]
                    .strip_suffix('}')
                    .ok_or_else(|| bad("unclosed labels"))?;
                for pair in split_labels(labels) {
                    let (k, v) = pair.split_once('=').ok_or_else(|| bad("label without ="))?;
                    if !(valid_name(k) && v.starts_with('"') && v.ends_with('"') && v.len() >= 2) {
                        return Err(bad("malformed label"));
                    }
                }
                &series[..i]
            }
            None => series,
        };
        if !valid_name(name) {
            return Err(bad("invalid metric name"));
        }
        let base = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| typed.contains_key(*b)))
            .unwrap_or(name);
        if !typed.contains_key(base) && !typed.contains_key(name) {
            return Err(bad("sample without a TYPE line"));
        }
        samples.insert(series.to_string(), value);
    }
    Ok(samples)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn split_labels(labels: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        out.push(&labels[start..]);
    }
    out
}
