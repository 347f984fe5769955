//! Small, explicit test data: Parquet files of a `user` view and the registries that read them.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use quiver::registry::Registry;

/// Microseconds in an hour.
pub const HOUR: i64 = 3_600_000_000;
/// A fixed "now" for tests with a manual clock: 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600_000_000;

/// One row of the test `user_stats` view.
#[derive(Debug, Clone)]
pub struct UserRow {
    /// Join key.
    pub user_id: &'static str,
    /// Event time (epoch micros).
    pub event_ts: i64,
    /// Created time (epoch micros).
    pub created_ts: i64,
    /// float32 feature.
    pub score: Option<f32>,
    /// int64 feature.
    pub orders: Option<i64>,
    /// string feature.
    pub tier: Option<&'static str>,
}

impl UserRow {
    /// A row with every feature present.
    pub fn new(
        user_id: &'static str,
        event_ts: i64,
        score: f32,
        orders: i64,
        tier: &'static str,
    ) -> Self {
        UserRow {
            user_id,
            event_ts,
            created_ts: event_ts,
            score: Some(score),
            orders: Some(orders),
            tier: Some(tier),
        }
    }
}

/// Writes rows of the `user_stats` view to a Parquet file.
pub fn write_user_rows(path: &Path, rows: &[UserRow]) {
    let mut uid = StringBuilder::new();
    let mut ts = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut created = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut score = Float32Builder::new();
    let mut orders = Int64Builder::new();
    let mut tier = StringBuilder::new();
    for r in rows {
        uid.append_value(r.user_id);
        ts.append_value(r.event_ts);
        created.append_value(r.created_ts);
        score.append_option(r.score);
        orders.append_option(r.orders);
        tier.append_option(r.tier);
    }
    let tz = Some("UTC".into());
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            false,
        ),
        Field::new(
            "created",
            DataType::Timestamp(TimeUnit::Microsecond, tz),
            false,
        ),
        Field::new("score", DataType::Float32, true),
        Field::new("orders", DataType::Int64, true),
        Field::new("tier", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(uid.finish()),
        Arc::new(ts.finish()),
        Arc::new(created.finish()),
        Arc::new(score.finish()),
        Arc::new(orders.finish()),
        Arc::new(tier.finish()),
    ];
    write_batch(
        path,
        RecordBatch::try_new(schema, columns).expect("valid batch"),
    );
}

/// Writes one record batch to a Parquet file.
pub fn write_batch(path: &Path, batch: RecordBatch) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create dir");
    }
    let file = File::create(path).expect("create parquet file");
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write batch");
    writer.close().expect("close writer");
}

/// The YAML of a registry with a `user` entity and a `user_stats` view (ttl 24h) reading
/// `data/user_stats/` (a directory), and a feature service `scoring` over two of its features.
/// `online_store` is inserted as given (YAML, indented two spaces under the key).
pub fn user_registry_yaml(online_store: &str) -> String {
    format!(
        r#"project: test
online_store:
{online_store}
entities:
  - name: user
    join_keys: [user_id]
    value_type: string
feature_views:
  - name: user_stats
    entities: [user]
    ttl: 24h
    schema:
      - {{ name: score, dtype: float32 }}
      - {{ name: orders, dtype: int64 }}
      - {{ name: tier, dtype: string }}
    source:
      path: data/user_stats
      timestamp_field: event_timestamp
      created_timestamp_column: created
feature_services:
  - name: scoring
    features: [user_stats:score, user_stats:tier]
server:
  max_body_bytes: 4096
  max_entities: 100
"#
    )
}

/// Writes `feature_store.yaml` into `dir` and loads it.
pub fn load_registry(dir: &Path, yaml: &str) -> Arc<Registry> {
    let path = dir.join("feature_store.yaml");
    std::fs::write(&path, yaml).expect("write feature_store.yaml");
    Arc::new(quiver::config::load(&path).unwrap_or_else(|e| panic!("invalid test registry: {e}")))
}

/// The quickstart registry (two feature views, the `user_risk` and `order_stats` on-demand views,
/// two feature services, a push source) over `examples/quickstart/data/`, as
/// `quickstart::generate` lays it out. A copy the tests own: the root `feature_store.yaml` is the
/// user's to edit, and only `tests/quickstart.rs` reads it.
pub fn quickstart_registry_yaml() -> &'static str {
    r#"project: quickstart

online_store:
  type: sqlite
  path: data/online_store.db

entities:
  - name: user
    join_keys: [user_id]
    value_type: string
    description: A customer of the shop.

feature_views:
  - name: user_features
    entities: [user]
    ttl: 24h
    schema:
      - { name: avg_order_value_7d, dtype: float32 }
      - { name: total_orders_30d, dtype: int64 }
      - { name: preferred_category, dtype: string }
      - { name: account_age_days, dtype: int64 }
      - { name: fraud_score, dtype: float32 }
    source:
      path: examples/quickstart/data/user_features
      timestamp_field: event_timestamp
      created_timestamp_column: created

  - name: user_sessions
    entities: [user]
    ttl: 12h
    schema:
      - { name: sessions_24h, dtype: int64 }
      - { name: last_device, dtype: string }
      - { name: avg_session_minutes, dtype: float64 }
    source:
      path: examples/quickstart/data/user_sessions
      timestamp_field: event_timestamp

on_demand_feature_views:
  - name: user_risk
    transform: user_risk
    sources: [user_features]
    request_fields:
      - { name: amount, dtype: float64 }
    schema:
      - { name: order_value_per_order, dtype: float64 }
      - { name: amount_over_avg, dtype: float64 }
      - { name: risk_score, dtype: float64 }

  - name: order_stats
    transform: order_stats
    sources: [user_features]
    schema:
      - { name: orders_per_account_day, dtype: float64 }
      - { name: is_new_account, dtype: bool }

feature_services:
  - name: fraud_model_v1
    features:
      - user_features:avg_order_value_7d
      - user_features:total_orders_30d
      - user_features:fraud_score
      - user_sessions

  - name: fraud_model_v2
    features:
      - user_features:avg_order_value_7d
      - user_features:fraud_score
      - user_risk
      - order_stats:is_new_account

push_sources:
  - name: user_features_push
    feature_view: user_features

server:
  bind: 127.0.0.1:6566

cache:
  ttl: 5s
"#
}
