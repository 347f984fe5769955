//! Fuzz targets for the parsers that take untrusted input: lookup and push request bodies,
//! `feature_store.yaml`, and online-store records. Each target takes arbitrary bytes and checks
//! that Quiver answers with a result or a client error: never a panic, never a server error.
//!
//! The same functions run two ways: coverage-guided under libFuzzer (`cargo fuzz run <target>
//! --features libfuzzer`), and as a bounded, seeded mutation run in the test suite
//! ([`mutate::run`]), so every CI run fuzzes for a fixed number of cases.

pub mod mutate;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use quiver::clock::ManualClock;
use quiver::metrics::Metrics;
use quiver::online::OnlineFeatures;
use quiver::registry::Registry;
use quiver::serving::error::ApiError;
use quiver::serving::online::{JsonRequest, render_response};
use quiver::serving::parse_json;
use quiver::serving::push::PushRequest;
use quiver::store::{FeatureRow, OnlineStore, RowKey, RowWrite, StoreError, WriteOutcome};
use quiver::types::EpochMicros;

/// A registry exercising every key and value type.
pub const REGISTRY: &str = r#"
project: fuzz
entities:
  - {name: user, join_keys: [user_id], value_type: string}
  - {name: shop, join_keys: [shop_id], value_type: int64}
  - {name: device, join_keys: [device_id], value_type: bytes}
feature_views:
  - name: users
    entities: [user]
    ttl: 1h
    schema:
      - {name: score, dtype: float32}
      - {name: orders, dtype: int64}
      - {name: tier, dtype: string}
      - {name: tags, dtype: "list<string>"}
    source: {path: data/users}
  - name: shops
    entities: [shop, user]
    schema:
      - {name: rating, dtype: float64}
      - {name: open, dtype: bool}
      - {name: since, dtype: unix_timestamp}
    source: {path: data/shops}
  - name: devices
    entities: [device]
    schema:
      - {name: seen, dtype: int32}
      - {name: blob, dtype: bytes}
    source: {path: data/devices}
feature_services:
  - {name: all, features: [users, shops, devices]}
push_sources:
  - {name: users_push, feature_view: users}
  - {name: shops_push, feature_view: shops}
server:
  max_entities: 64
"#;

/// A store that holds one row per view for every entity, so lookups reach statuses and rendering.
struct EveryEntityStore {
    rows: HashMap<String, Arc<FeatureRow>>,
}

#[async_trait]
impl OnlineStore for EveryEntityStore {
    fn kind(&self) -> &'static str {
        "fuzz"
    }
    async fn read(&self, keys: &[RowKey<'_>]) -> Result<Vec<Option<Arc<FeatureRow>>>, StoreError> {
        Ok(keys
            .iter()
            .map(|k| self.rows.get(k.view).cloned())
            .collect())
    }
    async fn write(&self, rows: &[RowWrite]) -> Result<WriteOutcome, StoreError> {
        Ok(WriteOutcome {
            written: rows.len(),
            ..WriteOutcome::default()
        })
    }
    async fn watermark(&self, _: &str) -> Result<Option<EpochMicros>, StoreError> {
        Ok(None)
    }
    async fn set_watermark(&self, _: &str, _: EpochMicros) -> Result<(), StoreError> {
        Ok(())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

struct Lookup {
    online: OnlineFeatures,
    runtime: tokio::runtime::Runtime,
}

fn registry() -> &'static Arc<Registry> {
    static REGISTRY_CELL: OnceLock<Arc<Registry>> = OnceLock::new();
    REGISTRY_CELL.get_or_init(|| {
        Arc::new(
            quiver::config::load_str(REGISTRY, Path::new("/nonexistent"))
                .unwrap_or_else(|e| panic!("the fuzz registry is valid: {e}")),
        )
    })
}

fn lookup() -> &'static Lookup {
    static LOOKUP: OnceLock<Lookup> = OnceLock::new();
    LOOKUP.get_or_init(|| {
        let registry = registry();
        let now = 1_767_225_600_000_000;
        let rows = registry
            .feature_views
            .iter()
            .map(|v| {
                let values = v.fields.iter().map(|f| sample_value(f.dtype)).collect();
                let row = FeatureRow {
                    event_ts: now - 1_000_000,
                    created_ts: now,
                    schema_fingerprint: v.schema_fingerprint,
                    values,
                };
                (v.name.to_string(), Arc::new(row))
            })
            .collect();
        Lookup {
            online: OnlineFeatures::new(
                Arc::clone(registry),
                Arc::new(EveryEntityStore { rows }),
                Arc::new(ManualClock::new(now)),
                Arc::new(Metrics::new(registry)),
                None,
            ),
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime"),
        }
    })
}

fn sample_value(dtype: quiver::types::ValueType) -> quiver::types::Value {
    use quiver::types::{ScalarType, Value, ValueType};
    let scalar = |s: ScalarType| match s {
        ScalarType::Int32 | ScalarType::Int64 | ScalarType::UnixTimestamp => Value::Int(-7),
        ScalarType::Float32 => Value::Float32(f32::MAX),
        ScalarType::Float64 => Value::Float64(f64::NAN),
        ScalarType::String => Value::String("x\"\\\u{1}".into()),
        ScalarType::Bool => Value::Bool(true),
        ScalarType::Bytes => Value::Bytes(vec![0, 255]),
    };
    match dtype {
        ValueType::Scalar(s) => scalar(s),
        ValueType::List(s) => Value::List(vec![scalar(s), Value::Null]),
    }
}

/// A client error, never a server error.
fn assert_client_error(e: &ApiError, input: &[u8]) {
    assert!(
        e.status.is_client_error(),
        "{e} for input {:?}",
        String::from_utf8_lossy(input)
    );
}

/// `POST /get-online-features` bodies: parse, look up, render.
pub fn lookup_request(data: &[u8]) {
    let lookup = lookup();
    let wire: JsonRequest<'_> = match parse_json(data) {
        Ok(w) => w,
        Err(e) => return assert_client_error(&e, data),
    };
    let request = wire.to_request();
    match lookup
        .runtime
        .block_on(lookup.online.get_online_features(&request))
    {
        Ok(response) => {
            let body = render_response(&request, &response);
            serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_else(|e| {
                panic!(
                    "rendered invalid JSON ({e}): {}",
                    String::from_utf8_lossy(&body)
                )
            });
        }
        Err(e) => assert_client_error(&ApiError::from(e), data),
    }
}

/// `POST /push` bodies: parse and check the rows against the view.
pub fn push_request(data: &[u8]) {
    let registry = registry();
    let request: PushRequest<'_> = match parse_json(data) {
        Ok(r) => r,
        Err(e) => return assert_client_error(&e, data),
    };
    let Some(source) = registry.push_source(&request.push_source_name) else {
        return;
    };
    let view = &registry.feature_views[source.view];
    let limits = quiver::serving::push::WriteLimits {
        max_rows: registry.server.max_entities,
        now: 1_767_225_600_000_000,
        max_future_skew: registry.push.max_future_skew.0,
    };
    let frame = quiver::serving::push::PushedFrame::Json(&request.df);
    if let Err(e) = quiver::serving::push::parse_rows(view, frame, &limits) {
        assert_client_error(&e, data);
    }
}

/// `feature_store.yaml` text: loads or reports errors.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = quiver::config::load_str(text, Path::new("/nonexistent"));
    }
}

/// Online-store records: a record that decodes re-encodes to one that decodes the same.
pub fn record_codec(data: &[u8]) {
    use quiver::store::codec::{decode_row, encode_row};
    if let Ok(row) = decode_row(data) {
        let again = decode_row(&encode_row(&row)).expect("a re-encoded record decodes");
        assert_eq!(format!("{row:?}"), format!("{again:?}"));
    }
}
