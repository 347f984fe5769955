//! `POST /get-online-features` over HTTP: the JSON request in Feast's shape, entity values read
//! straight from the parsed JSON, and the Feast-shaped JSON response. The lookup itself is
//! [`crate::online::OnlineFeatures::get_online_features`].

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value as Json;

use super::json::{json_kind, key_part, value_from_json, write_str, write_timestamp, write_value};
use crate::entity_key::KeyPart;
use crate::online::{EntityColumn, OnlineRequest, OnlineResponse};
use crate::types::{EpochMicros, ScalarType, Value, ValueType};

/// The request body, in Feast's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonRequest<'a> {
    /// `view:feature` references.
    #[serde(default, borrow)]
    pub features: Option<Vec<Cow<'a, str>>>,
    /// A feature service name, instead of `features`.
    #[serde(default, borrow)]
    pub feature_service: Option<Cow<'a, str>>,
    /// Column-oriented entity rows: join keys and request fields, each a list of equal length.
    pub entities: serde_json::Map<String, Json>,
    /// Name features `view__feature` instead of `feature`.
    #[serde(default)]
    pub full_feature_names: bool,
    /// Sent by Feast's SDK (0.67, remote online store); Quiver's views have no versions, so the
    /// response carries no version metadata either way.
    #[serde(default)]
    pub include_feature_view_version_metadata: Option<bool>,
}

impl<'a> JsonRequest<'a> {
    /// The pipeline's request; entity values stay in the parsed JSON.
    pub fn to_request(&self) -> OnlineRequest<'_, Json> {
        OnlineRequest {
            features: self.features.as_deref(),
            feature_service: self.feature_service.as_deref(),
            entities: self
                .entities
                .iter()
                .map(|(name, values)| (name.as_str(), values))
                .collect(),
            full_feature_names: self.full_feature_names,
        }
    }
}

/// A JSON entity column is an array of values.
impl EntityColumn for Json {
    fn row_count(&self) -> Result<usize, String> {
        match self {
            Json::Array(values) => Ok(values.len()),
            other => Err(format!(
                "must be a list of values, got {}",
                json_kind(other)
            )),
        }
    }

    fn key_part<'a>(
        &'a self,
        row: usize,
        dtype: ScalarType,
        scratch: &'a mut Vec<u8>,
    ) -> Result<KeyPart<'a>, String> {
        key_part(&self[row], dtype, scratch)
    }

    fn value(&self, row: usize, dtype: ValueType) -> Result<Value, String> {
        value_from_json(&self[row], dtype)
    }
}

/// The number of entity rows of a JSON request, and the entity columns its answer echoes (join
/// keys, as sent), in request order: what every rendering of the answer starts from.
pub(super) fn echoed_entities<'r>(
    request: &'r OnlineRequest<'_, Json>,
    response: &OnlineResponse<'_>,
) -> (usize, Vec<&'r (&'r str, &'r Json)>) {
    let n = request
        .entities
        .first()
        .and_then(|(_, values)| values.as_array())
        .map_or(0, Vec::len);
    let entities = request
        .entities
        .iter()
        .zip(&response.echoed)
        .filter_map(|(column, &echoed)| echoed.then_some(column))
        .collect();
    (n, entities)
}

/// Renders the Feast response: `metadata.feature_names`, then one result per column: the echoed
/// entity columns as sent, then the features.
pub fn render_response(
    request: &OnlineRequest<'_, Json>,
    response: &OnlineResponse<'_>,
) -> Vec<u8> {
    let (n, entities) = echoed_entities(request, response);
    let features = &response.features;
    let mut out = Vec::with_capacity(128 + n * (entities.len() + features.len()) * 48);
    out.extend_from_slice(b"{\"metadata\":{\"feature_names\":[");
    let names = entities
        .iter()
        .map(|(name, _)| *name)
        .chain(features.iter().map(|f| f.name.as_ref()));
    for (i, name) in names.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(&mut out, name);
    }
    out.extend_from_slice(b"]},\"results\":[");
    const EPOCH: &[u8] = b"\"1970-01-01T00:00:00Z\"";
    // The features of one view share each row's event timestamp: each row's last rendered
    // timestamp is kept (start offset, length, value) and copied when the next feature repeats it.
    let mut rendered_ts: Vec<(EpochMicros, usize, usize)> = vec![(0, 0, 0); n];
    let mut first = true;
    for (_, values) in entities {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"values\":");
        serde_json::to_writer(&mut out, values).expect("writing to a Vec cannot fail");
        out.extend_from_slice(b",\"statuses\":[");
        join_repeat(&mut out, b"\"PRESENT\"", n);
        out.extend_from_slice(b"],\"event_timestamps\":[");
        join_repeat(&mut out, EPOCH, n);
        out.extend_from_slice(b"]}");
    }
    for f in features {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"values\":[");
        for r in 0..f.cells.len() {
            if r > 0 {
                out.push(b',');
            }
            match f.value(r) {
                Some(value) => write_value(&mut out, value, f.dtype),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b"],\"statuses\":[");
        for (r, cell) in f.cells.iter().enumerate() {
            if r > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(cell.status.as_str().as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b"],\"event_timestamps\":[");
        for (r, cell) in f.cells.iter().enumerate() {
            if r > 0 {
                out.push(b',');
            }
            if cell.event_ts == 0 {
                out.extend_from_slice(EPOCH);
                continue;
            }
            match rendered_ts.get_mut(r) {
                Some((ts, start, len)) if *ts == cell.event_ts && *len > 0 => {
                    out.extend_from_within(*start..*start + *len);
                }
                Some(memo) => {
                    let start = out.len();
                    write_timestamp(&mut out, cell.event_ts);
                    *memo = (cell.event_ts, start, out.len() - start);
                }
                None => write_timestamp(&mut out, cell.event_ts),
            }
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}");
    out
}

fn join_repeat(out: &mut Vec<u8>, item: &[u8], n: usize) {
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
}
