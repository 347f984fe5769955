//! `historical`: point-in-time correctness at every edge, input order, pass-through columns,
//! key types, naming, feature services, errors that name the file and column, metadata, and the
//! spilling engine against a brute-force reference.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder, TimestampNanosecondBuilder, TimestampSecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use quiver::offline::historical::{
    FeatureList, HistoricalOptions, META_FEATURE_SERVICE, META_FEATURE_VIEWS, META_FEATURES,
};
use quiver::registry::Registry;
use quiver::types::{ScalarType, Value, ValueType};
use quiver_tests::fixtures::{
    HOUR, T0, UserRow, load_registry, user_registry_yaml, write_batch, write_user_rows,
};
use quiver_tests::training::{
    features, parquet_metadata, read_parquet, run, values, write_user_entities,
    write_user_entities_with_amounts,
};
use tempfile::TempDir;

const F32: ValueType = ValueType::Scalar(ScalarType::Float32);
const I64: ValueType = ValueType::Scalar(ScalarType::Int64);
const STR: ValueType = ValueType::Scalar(ScalarType::String);
const F64: ValueType = ValueType::Scalar(ScalarType::Float64);

struct Setup {
    dir: TempDir,
    registry: Arc<Registry>,
}

fn setup(rows: &[UserRow]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let registry = load_registry(
        dir.path(),
        &user_registry_yaml("  type: sqlite\n  path: online.db"),
    );
    write_user_rows(&dir.path().join("data/user_stats/a.parquet"), rows);
    Setup { dir, registry }
}

fn options() -> HistoricalOptions {
    HistoricalOptions {
        threads: 2,
        ..HistoricalOptions::default()
    }
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `historical` for `user_stats:score,orders,tier` over the given entity rows.
    fn training_set(&self, entities: &[(&str, i64)]) -> RecordBatch {
        write_user_entities(&self.path("entities.parquet"), entities);
        run(
            &self.registry,
            &self.path("entities.parquet"),
            features(&["user_stats:score", "user_stats:orders", "user_stats:tier"]),
            &self.path("out.parquet"),
            false,
            &options(),
        )
        .unwrap();
        read_parquet(&self.path("out.parquet"))
    }
}

fn scores(batch: &RecordBatch) -> Vec<Value> {
    values(batch, "score", F32)
}

#[test]
fn an_entity_timestamp_before_the_first_source_row_gets_nulls() {
    let s = setup(&[UserRow::new("alice", T0, 0.5, 1, "a")]);
    let out = s.training_set(&[("alice", T0 - 1)]);
    assert_eq!(out.num_rows(), 1);
    assert_eq!(scores(&out), vec![Value::Null]);
    assert_eq!(values(&out, "tier", STR), vec![Value::Null]);
}

#[test]
fn a_row_is_included_exactly_at_its_own_timestamp() {
    let s = setup(&[
        UserRow::new("alice", T0 - HOUR, 0.25, 1, "older"),
        UserRow::new("alice", T0, 0.5, 2, "exact"),
    ]);
    let out = s.training_set(&[("alice", T0)]);
    assert_eq!(
        values(&out, "tier", STR),
        vec![Value::String("exact".into())]
    );
    assert_eq!(scores(&out), vec![Value::Float32(0.5)]);
}

#[test]
fn a_row_is_usable_exactly_at_its_timestamp_plus_ttl_and_not_one_microsecond_later() {
    let s = setup(&[UserRow::new("alice", T0, 0.5, 1, "a")]);
    let ttl = 24 * HOUR;
    let out = s.training_set(&[("alice", T0 + ttl), ("alice", T0 + ttl + 1)]);
    assert_eq!(scores(&out), vec![Value::Float32(0.5), Value::Null]);
}

#[test]
fn an_expired_latest_row_does_not_fall_back_to_anything() {
    let s = setup(&[
        UserRow::new("alice", T0 - 30 * HOUR, 0.25, 1, "old"),
        UserRow::new("alice", T0 - 25 * HOUR, 0.5, 2, "expired"),
    ]);
    let out = s.training_set(&[("alice", T0), ("alice", T0 - 25 * HOUR + 1)]);
    assert_eq!(scores(&out), vec![Value::Null, Value::Float32(0.5)]);
}

#[test]
fn duplicate_event_timestamps_resolve_to_the_latest_created_timestamp() {
    let mut original = UserRow::new("alice", T0 - HOUR, 0.25, 1, "original");
    original.created_ts = T0 - HOUR + 10;
    let mut correction = UserRow::new("alice", T0 - HOUR, 0.5, 2, "corrected");
    correction.created_ts = T0 - HOUR + 20;
    let mut late_but_older_event = UserRow::new("alice", T0 - 2 * HOUR, 0.75, 3, "older event");
    late_but_older_event.created_ts = T0;
    // The correction comes first in the file: order must not matter.
    let s = setup(&[correction, original, late_but_older_event]);
    let out = s.training_set(&[("alice", T0)]);
    assert_eq!(
        values(&out, "tier", STR),
        vec![Value::String("corrected".into())]
    );
}

#[test]
fn rows_equal_in_event_and_created_timestamps_resolve_to_the_first_scanned_as_materialization_does()
{
    let s = setup(&[
        UserRow::new("alice", T0 - HOUR, 0.25, 1, "first"),
        UserRow::new("alice", T0 - HOUR, 0.5, 2, "second"),
    ]);
    let out = s.training_set(&[("alice", T0)]);
    assert_eq!(
        values(&out, "tier", STR),
        vec![Value::String("first".into())]
    );
}

#[test]
fn null_feature_values_stay_null_and_do_not_fall_back_to_older_rows() {
    let mut newer = UserRow::new("alice", T0 - HOUR, 0.5, 2, "new");
    newer.score = None;
    newer.tier = None;
    let s = setup(&[UserRow::new("alice", T0 - 2 * HOUR, 0.25, 1, "old"), newer]);
    let out = s.training_set(&[("alice", T0)]);
    assert_eq!(scores(&out), vec![Value::Null]);
    assert_eq!(values(&out, "tier", STR), vec![Value::Null]);
    assert_eq!(values(&out, "orders", I64), vec![Value::Int(2)]);
}

#[test]
fn rows_from_the_future_are_never_used() {
    let s = setup(&[
        UserRow::new("alice", T0 - HOUR, 0.25, 1, "past"),
        UserRow::new("alice", T0 + 1, 0.5, 2, "future"),
        UserRow::new("bob", T0 + 1, 0.75, 3, "future"),
    ]);
    let out = s.training_set(&[("alice", T0), ("bob", T0)]);
    assert_eq!(
        values(&out, "tier", STR),
        vec![Value::String("past".into()), Value::Null]
    );
}

#[test]
fn input_order_is_preserved_with_duplicate_entity_rows() {
    let s = setup(&[
        UserRow::new("alice", T0 - 3 * HOUR, 0.25, 1, "a1"),
        UserRow::new("alice", T0 - HOUR, 0.5, 2, "a2"),
        UserRow::new("bob", T0 - 2 * HOUR, 0.75, 3, "b1"),
    ]);
    let entities = [
        ("bob", T0),
        ("alice", T0),
        ("alice", T0 - 2 * HOUR),
        ("nobody", T0),
        ("alice", T0),
        ("bob", T0 - 3 * HOUR),
        ("alice", T0 - 2 * HOUR),
    ];
    let out = s.training_set(&entities);
    let tiers: Vec<Value> = ["b1", "a2", "a1", "", "a2", "", "a1"]
        .iter()
        .map(|t| {
            if t.is_empty() {
                Value::Null
            } else {
                Value::String(t.to_string())
            }
        })
        .collect();
    assert_eq!(values(&out, "tier", STR), tiers);
    let ids: Vec<Value> = entities
        .iter()
        .map(|(u, _)| Value::String(u.to_string()))
        .collect();
    assert_eq!(values(&out, "user_id", STR), ids);
}

#[test]
fn pass_through_columns_keep_their_values_types_and_order() {
    let s = setup(&[UserRow::new("alice", T0 - HOUR, 0.5, 1, "a")]);
    let mut label = Float64Builder::new();
    let mut uid = StringBuilder::new();
    let mut note = StringBuilder::new();
    let mut ts = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for (i, u) in ["alice", "bob"].iter().enumerate() {
        label.append_value(i as f64 + 0.5);
        uid.append_value(u);
        note.append_option((i == 0).then_some("hello"));
        ts.append_value(T0);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("label", DataType::Float64, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("note", DataType::Utf8, true),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(label.finish()),
        Arc::new(uid.finish()),
        Arc::new(note.finish()),
        Arc::new(ts.finish()),
    ];
    let entities = s.path("entities.parquet");
    write_batch(
        &entities,
        RecordBatch::try_new(schema.clone(), columns).unwrap(),
    );
    run(
        &s.registry,
        &entities,
        features(&["user_stats:score"]),
        &s.path("out.parquet"),
        false,
        &options(),
    )
    .unwrap();
    let out = read_parquet(&s.path("out.parquet"));
    let names: Vec<&str> = out
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        ["label", "user_id", "note", "event_timestamp", "score"]
    );
    for (i, f) in schema.fields().iter().enumerate() {
        assert_eq!(out.schema().field(i).data_type(), f.data_type());
    }
    assert_eq!(
        values(&out, "label", F64),
        vec![Value::Float64(0.5), Value::Float64(1.5)]
    );
    assert_eq!(
        values(&out, "note", STR),
        vec![Value::String("hello".into()), Value::Null]
    );
    assert_eq!(
        out.schema().field_with_name("score").unwrap().data_type(),
        &DataType::Float32
    );
}

#[test]
fn entity_timestamps_in_any_unit_with_or_without_time_zone_are_utc() {
    let s = setup(&[
        UserRow::new("alice", T0 - HOUR, 0.25, 1, "a"),
        UserRow::new("alice", T0, 0.5, 2, "b"),
    ]);
    let mut uid = StringBuilder::new();
    uid.append_value("alice");
    uid.append_value("alice");
    let mut secs = TimestampSecondBuilder::new();
    secs.append_value(T0 / 1_000_000);
    secs.append_value(T0 / 1_000_000 - 1);
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Second, None),
            false,
        ),
    ]));
    let entities = s.path("entities_s.parquet");
    write_batch(
        &entities,
        RecordBatch::try_new(
            schema,
            vec![Arc::new(uid.finish()), Arc::new(secs.finish())],
        )
        .unwrap(),
    );
    run(
        &s.registry,
        &entities,
        features(&["user_stats:tier"]),
        &s.path("out.parquet"),
        false,
        &options(),
    )
    .unwrap();
    let out = read_parquet(&s.path("out.parquet"));
    assert_eq!(
        values(&out, "tier", STR),
        vec![Value::String("b".into()), Value::String("a".into())]
    );

    let mut uid = StringBuilder::new();
    uid.append_value("alice");
    let mut nanos = TimestampNanosecondBuilder::new().with_timezone("+02:00");
    nanos.append_value(T0 * 1000 - 1);
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("+02:00".into())),
            false,
        ),
    ]));
    write_batch(
        &entities,
        RecordBatch::try_new(
            schema,
            vec![Arc::new(uid.finish()), Arc::new(nanos.finish())],
        )
        .unwrap(),
    );
    run(
        &s.registry,
        &entities,
        features(&["user_stats:tier"]),
        &s.path("out.parquet"),
        false,
        &options(),
    )
    .unwrap();
    // One nanosecond before T0 is before the row at T0.
    assert_eq!(
        values(&read_parquet(&s.path("out.parquet")), "tier", STR),
        vec![Value::String("a".into())]
    );
}

#[test]
fn full_feature_names_prefix_every_feature_with_its_view() {
    let s = setup(&[UserRow::new("alice", T0 - HOUR, 0.5, 1, "a")]);
    write_user_entities(&s.path("entities.parquet"), &[("alice", T0)]);
    run(
        &s.registry,
        &s.path("entities.parquet"),
        features(&["user_stats:tier", "user_stats:score"]),
        &s.path("out.parquet"),
        true,
        &options(),
    )
    .unwrap();
    let out = read_parquet(&s.path("out.parquet"));
    let names: Vec<&str> = out
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "user_id",
            "event_timestamp",
            "label",
            "user_stats__tier",
            "user_stats__score"
        ]
    );
}

#[test]
fn a_feature_service_selects_its_features_and_is_recorded() {
    let s = setup(&[UserRow::new("alice", T0 - HOUR, 0.5, 1, "a")]);
    write_user_entities(&s.path("entities.parquet"), &[("alice", T0)]);
    run(
        &s.registry,
        &s.path("entities.parquet"),
        FeatureList::Service("scoring".into()),
        &s.path("out.parquet"),
        false,
        &options(),
    )
    .unwrap();
    let out = read_parquet(&s.path("out.parquet"));
    assert_eq!(out.num_columns(), 5);
    assert_eq!(scores(&out), vec![Value::Float32(0.5)]);
    assert_eq!(values(&out, "tier", STR), vec![Value::String("a".into())]);
    assert_eq!(
        parquet_metadata(&s.path("out.parquet"), META_FEATURE_SERVICE).as_deref(),
        Some("scoring")
    );
}

#[test]
fn the_output_metadata_records_the_views_and_the_requested_features() {
    let s = setup(&[UserRow::new("alice", T0 - HOUR, 0.5, 1, "a")]);
    s.training_set(&[("alice", T0)]);
    let out = s.path("out.parquet");
    let features: serde_json::Value =
        serde_json::from_str(&parquet_metadata(&out, META_FEATURES).unwrap()).unwrap();
    assert_eq!(
        features,
        serde_json::json!(["user_stats:score", "user_stats:orders", "user_stats:tier"])
    );
    let views: serde_json::Value =
        serde_json::from_str(&parquet_metadata(&out, META_FEATURE_VIEWS).unwrap()).unwrap();
    let view = &views[0];
    assert_eq!(view["name"], "user_stats");
    assert_eq!(view["entities"], serde_json::json!(["user"]));
    assert_eq!(
        view["join_keys"],
        serde_json::json!([{"name": "user_id", "dtype": "string"}])
    );
    assert_eq!(
        view["fields"][0],
        serde_json::json!({"name": "score", "dtype": "float32"})
    );
    assert_eq!(view["ttl_seconds"], 86400.0);
    assert_eq!(view["source"]["path"], "data/user_stats");
    assert_eq!(view["source"]["created_timestamp_column"], "created");
}

fn error_of(s: &Setup, entities: &Path) -> String {
    run(
        &s.registry,
        entities,
        features(&["user_stats:score"]),
        &s.path("out.parquet"),
        false,
        &options(),
    )
    .unwrap_err()
    .to_string()
}

fn write_columns(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    write_batch(
        path,
        RecordBatch::try_new(schema, columns.into_iter().map(|(_, a)| a).collect()).unwrap(),
    );
}

fn micros(values: &[i64]) -> ArrayRef {
    let mut b = TimestampMicrosecondBuilder::new();
    b.append_slice(values);
    Arc::new(b.finish())
}

fn strings(values: &[&str]) -> ArrayRef {
    let mut b = StringBuilder::new();
    for v in values {
        b.append_value(v);
    }
    Arc::new(b.finish())
}

#[test]
fn a_missing_event_timestamp_column_is_an_error_naming_the_file_and_column() {
    let s = setup(&[UserRow::new("alice", T0, 0.5, 1, "a")]);
    let path = s.path("no_ts.parquet");
    write_columns(&path, vec![("user_id", strings(&["alice"]))]);
    let e = error_of(&s, &path);
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("\"event_timestamp\""), "{e}");
    assert!(e.contains("missing"), "{e}");
}

#[test]
fn a_missing_join_key_column_is_an_error_naming_the_file_and_column() {
    let s = setup(&[UserRow::new("alice", T0, 0.5, 1, "a")]);
    let path = s.path("no_key.parquet");
    write_columns(
        &path,
        vec![
            ("customer", strings(&["alice"])),
            ("event_timestamp", micros(&[T0])),
        ],
    );
    let e = error_of(&s, &path);
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("\"user_id\""), "{e}");
    assert!(e.contains("join key of feature view \"user_stats\""), "{e}");
}

#[test]
fn a_join_key_of_the_wrong_type_is_an_error_naming_the_file_and_column() {
    let s = setup(&[UserRow::new("alice", T0, 0.5, 1, "a")]);
    let path = s.path("int_key.parquet");
    let mut ids = Int64Builder::new();
    ids.append_value(7);
    write_columns(
        &path,
        vec![
            ("user_id", Arc::new(ids.finish())),
            ("event_timestamp", micros(&[T0])),
        ],
    );
    let e = error_of(&s, &path);
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("\"user_id\""), "{e}");
    assert!(e.contains("Int64") && e.contains("string"), "{e}");
}

#[test]
fn an_event_timestamp_that_is_not_a_timestamp_is_an_error_naming_the_file_and_column() {
    let s = setup(&[UserRow::new("alice", T0, 0.5, 1, "a")]);
    let path = s.path("int_ts.parquet");
    let mut ts = Int64Builder::new();
    ts.append_value(T0);
    write_columns(
        &path,
        vec![
            ("user_id", strings(&["alice"])),
            ("event_timestamp", Arc::new(ts.finish())),
        ],
    );
    let e = error_of(&s, &path);
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("\"event_timestamp\""), "{e}");
}

#[test]
fn an_unreadable_entity_file_is_an_error_naming_the_file() {
    let s = setup(&[UserRow::new("alice", T0, 0.5, 1, "a")]);
    let path = s.path("garbage.parquet");
    std::fs::write(&path, b"this is not parquet").unwrap();
    let e = error_of(&s, &path);
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("not a readable Parquet file"), "{e}");
    let missing = s.path("missing.parquet");
    let e = error_of(&s, &missing);
    assert!(e.contains(&missing.display().to_string()), "{e}");
    assert!(!s.path("out.parquet").exists());
}

#[test]
fn a_source_column_of_the_wrong_type_is_an_error_naming_the_source_file_and_column() {
    let s = setup(&[UserRow::new("alice", T0, 0.5, 1, "a")]);
    let bad = s.path("data/user_stats/b.parquet");
    let mut score = Float64Builder::new();
    score.append_value(0.5);
    write_columns(
        &bad,
        vec![
            ("user_id", strings(&["bob"])),
            ("event_timestamp", micros(&[T0])),
            ("created", micros(&[T0])),
            ("score", Arc::new(score.finish())),
        ],
    );
    write_user_entities(&s.path("entities.parquet"), &[("alice", T0)]);
    let e = error_of(&s, &s.path("entities.parquet"));
    assert!(e.contains(&bad.display().to_string()), "{e}");
    assert!(e.contains("\"score\""), "{e}");
}

#[test]
fn feature_names_that_clash_need_full_feature_names() {
    let s = setup(&[UserRow::new("alice", T0, 0.5, 1, "a")]);
    write_user_entities(&s.path("entities.parquet"), &[("alice", T0)]);
    let e = run(
        &s.registry,
        &s.path("entities.parquet"),
        features(&["user_stats:score", "user_stats:score"]),
        &s.path("out.parquet"),
        false,
        &options(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("\"score\" appears twice"), "{e}");
}

/// A registry with an int64 `merchant` entity, a view keyed by it without ttl, and a view keyed by
/// (user_id, merchant_id) with a 1h ttl.
fn keyed_setup() -> (TempDir, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap();
    let registry = load_registry(
        dir.path(),
        r#"project: test
entities:
  - name: user
    join_keys: [user_id]
  - name: merchant
    join_keys: [merchant_id]
    value_type: int64
feature_views:
  - name: merchant_stats
    entities: [merchant]
    schema:
      - { name: revenue, dtype: float64 }
    source:
      path: data/merchant.parquet
  - name: visits
    entities: [user, merchant]
    ttl: 1h
    schema:
      - { name: visit_count, dtype: int64 }
    source:
      path: data/visits.parquet
"#,
    );
    let mut m = Int32Builder::new();
    let mut ts = TimestampMicrosecondBuilder::new();
    let mut rev = Float64Builder::new();
    for (id, t, r) in [(1, T0 - 1000 * HOUR, 10.5), (2, T0 - HOUR, 20.25)] {
        m.append_value(id);
        ts.append_value(t);
        rev.append_value(r);
    }
    write_columns(
        &dir.path().join("data/merchant.parquet"),
        vec![
            ("merchant_id", Arc::new(m.finish())),
            ("event_timestamp", Arc::new(ts.finish())),
            ("revenue", Arc::new(rev.finish())),
        ],
    );
    let mut u = StringBuilder::new();
    let mut m = Int64Builder::new();
    let mut ts = TimestampMicrosecondBuilder::new();
    let mut count = Int64Builder::new();
    for (user, merchant, t, c) in [
        ("alice", 1, T0 - 10, 1),
        ("alice", 2, T0 - 20, 2),
        ("bob", 1, T0 - 30, 3),
    ] {
        u.append_value(user);
        m.append_value(merchant);
        ts.append_value(t);
        count.append_value(c);
    }
    write_columns(
        &dir.path().join("data/visits.parquet"),
        vec![
            ("user_id", Arc::new(u.finish())),
            ("merchant_id", Arc::new(m.finish())),
            ("event_timestamp", Arc::new(ts.finish())),
            ("visit_count", Arc::new(count.finish())),
        ],
    );
    (dir, registry)
}

#[test]
fn integer_join_keys_match_across_integer_widths_and_a_view_without_ttl_has_no_lower_bound() {
    let (dir, registry) = keyed_setup();
    let entities = dir.path().join("entities.parquet");
    let mut m = Int64Builder::new();
    m.append_slice(&[1, 2, 3]);
    write_columns(
        &entities,
        vec![
            ("merchant_id", Arc::new(m.finish())),
            ("event_timestamp", micros(&[T0, T0, T0])),
        ],
    );
    let out_path = dir.path().join("out.parquet");
    run(
        &registry,
        &entities,
        features(&["merchant_stats:revenue"]),
        &out_path,
        false,
        &options(),
    )
    .unwrap();
    assert_eq!(
        values(&read_parquet(&out_path), "revenue", F64),
        vec![Value::Float64(10.5), Value::Float64(20.25), Value::Null]
    );
}

#[test]
fn composite_keys_join_on_every_join_key() {
    let (dir, registry) = keyed_setup();
    let entities = dir.path().join("entities.parquet");
    let mut m = Int64Builder::new();
    m.append_slice(&[1, 2, 2, 1]);
    write_columns(
        &entities,
        vec![
            ("user_id", strings(&["alice", "alice", "bob", "bob"])),
            ("merchant_id", Arc::new(m.finish())),
            ("event_timestamp", micros(&[T0, T0, T0, T0 + 2 * HOUR])),
        ],
    );
    let out_path = dir.path().join("out.parquet");
    run(
        &registry,
        &entities,
        features(&["visits:visit_count", "merchant_stats:revenue"]),
        &out_path,
        false,
        &options(),
    )
    .unwrap();
    let out = read_parquet(&out_path);
    assert_eq!(
        values(&out, "visit_count", I64),
        vec![Value::Int(1), Value::Int(2), Value::Null, Value::Null]
    );
    assert_eq!(
        values(&out, "revenue", F64),
        vec![
            Value::Float64(10.5),
            Value::Float64(20.25),
            Value::Float64(20.25),
            Value::Float64(10.5)
        ]
    );
}

/// A small deterministic generator (xorshift), so the test needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const USERS: [&str; 40] = [
    "u00", "u01", "u02", "u03", "u04", "u05", "u06", "u07", "u08", "u09", "u10", "u11", "u12",
    "u13", "u14", "u15", "u16", "u17", "u18", "u19", "u20", "u21", "u22", "u23", "u24", "u25",
    "u26", "u27", "u28", "u29", "u30", "u31", "u32", "u33", "u34", "u35", "u36", "u37", "u38",
    "u39",
];

/// The reference answer: a direct scan of every source row for every entity row.
fn brute_force(rows: &[UserRow], user: &str, t: i64, ttl: i64) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, r) in rows.iter().enumerate() {
        if r.user_id != user || r.event_ts > t || t - r.event_ts > ttl {
            continue;
        }
        let better = match best {
            None => true,
            Some(b) => (r.event_ts, r.created_ts) > (rows[b].event_ts, rows[b].created_ts),
        };
        if better {
            best = Some(i);
        }
    }
    best
}

#[test]
fn the_spilling_engine_agrees_with_a_brute_force_scan_and_with_the_in_memory_engine() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut rows = Vec::new();
    for i in 0..3000 {
        let user = USERS[rng.below(USERS.len() as u64) as usize];
        // Coarse timestamps so that ties on event and created timestamps happen.
        let event_ts = T0 - (rng.below(96) as i64) * HOUR / 2;
        let mut row = UserRow::new(user, event_ts, i as f32 * 0.5, i, "t");
        row.created_ts = event_ts + rng.below(3) as i64;
        if rng.below(10) == 0 {
            row.score = None;
        }
        rows.push(row);
    }
    // Over several files, the second one with small row groups.
    let dir = tempfile::tempdir().unwrap();
    let registry = load_registry(
        dir.path(),
        &user_registry_yaml("  type: sqlite\n  path: online.db"),
    );
    write_user_rows(&dir.path().join("data/user_stats/a.parquet"), &rows[..1000]);
    write_user_rows(&dir.path().join("data/user_stats/b.parquet"), &rows[1000..]);
    let mut entities = Vec::new();
    for _ in 0..2000 {
        let user = if rng.below(20) == 0 {
            "nobody"
        } else {
            USERS[rng.below(USERS.len() as u64) as usize]
        };
        let t = T0 - (rng.below(60 * 48) as i64) * 60_000_000 + rng.below(3) as i64;
        entities.push((user, t));
    }
    let entity_path = dir.path().join("entities.parquet");
    write_user_entities(&entity_path, &entities);

    let spilled_path = dir.path().join("spilled.parquet");
    let spill_dir = tempfile::tempdir().unwrap();
    let summary = run(
        &registry,
        &entity_path,
        features(&["user_stats:score", "user_stats:orders"]),
        &spilled_path,
        false,
        &HistoricalOptions {
            memory_budget: 16 * 1024,
            threads: 2,
            temp_dir: Some(spill_dir.path().to_path_buf()),
            ..HistoricalOptions::default()
        },
    )
    .unwrap();
    assert!(summary.spilled, "{summary:?}");
    assert!(summary.buckets > 4, "{summary:?}");
    assert_eq!(summary.rows, 2000);
    assert_eq!(
        std::fs::read_dir(spill_dir.path()).unwrap().count(),
        0,
        "temporary files are removed"
    );

    let memory_path = dir.path().join("memory.parquet");
    let summary = run(
        &registry,
        &entity_path,
        features(&["user_stats:score", "user_stats:orders"]),
        &memory_path,
        false,
        &options(),
    )
    .unwrap();
    assert!(!summary.spilled);

    let spilled = read_parquet(&spilled_path);
    let memory = read_parquet(&memory_path);
    let ttl = 24 * HOUR;
    let expected_orders: Vec<Value> = entities
        .iter()
        .map(|(u, t)| {
            brute_force(&rows, u, *t, ttl)
                .map_or(Value::Null, |i| Value::Int(rows[i].orders.unwrap()))
        })
        .collect();
    let expected_scores: Vec<Value> = entities
        .iter()
        .map(|(u, t)| {
            brute_force(&rows, u, *t, ttl)
                .and_then(|i| rows[i].score)
                .map_or(Value::Null, Value::Float32)
        })
        .collect();
    assert!(expected_orders.iter().filter(|v| !v.is_null()).count() > 1000);
    for out in [&spilled, &memory] {
        assert_eq!(values(out, "orders", I64), expected_orders);
        assert_eq!(values(out, "score", F32), expected_scores);
        let labels: Vec<Value> = (0..2000).map(Value::Int).collect();
        assert_eq!(values(out, "label", I64), labels);
    }
}

/// 2030-01-01T00:00:00Z, the anchor of the generated quickstart data.
const ANCHOR: i64 = 1_893_456_000_000_000;

/// The quickstart data and registry, plus the `user_risk` on-demand view over `user_features`
/// with the `amount` request field, reading the example transforms built to wasm.
fn on_demand_setup() -> (TempDir, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap();
    quickstart::generate(&dir.path().join("data"), 60, ANCHOR, 5).unwrap();
    let yaml = format!(
        r#"project: quickstart
entities:
  - name: user
    join_keys: [user_id]
feature_views:
  - name: user_features
    entities: [user]
    ttl: 24h
    schema:
      - {{ name: avg_order_value_7d, dtype: float32 }}
      - {{ name: total_orders_30d, dtype: int64 }}
      - {{ name: preferred_category, dtype: string }}
      - {{ name: account_age_days, dtype: int64 }}
      - {{ name: fraud_score, dtype: float32 }}
    source:
      path: data/user_features
      created_timestamp_column: created
on_demand_feature_views:
  - name: user_risk
    transform: user_risk
    sources: [user_features]
    request_fields:
      - {{ name: amount, dtype: float64 }}
    schema:
      - {{ name: order_value_per_order, dtype: float64 }}
      - {{ name: amount_over_avg, dtype: float64 }}
      - {{ name: risk_score, dtype: float64 }}
    timeout: 30s
transforms:
  dir: {}
"#,
        quiver_tests::wasm::fixtures_dir().display()
    );
    let registry = load_registry(dir.path(), &yaml);
    (dir, registry)
}

fn f32_of(v: &Value) -> Option<f32> {
    match v {
        Value::Float32(x) => Some(*x),
        _ => None,
    }
}

fn i64_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(x) => Some(*x),
        _ => None,
    }
}

#[test]
fn on_demand_features_run_the_transform_over_point_in_time_inputs_and_record_its_sha256() {
    let (dir, registry) = on_demand_setup();
    let mut rows = Vec::new();
    let mut rng = Rng(42);
    for i in 0..5000usize {
        let user = quickstart::user_id(1 + (i % 61));
        let t = ANCHOR - rng.below(8 * 24) as i64 * HOUR;
        rows.push((user, t, (1 + rng.below(50_000)) as f64 / 100.0));
    }
    let entities = dir.path().join("entities.parquet");
    let borrowed: Vec<(&str, i64, f64)> =
        rows.iter().map(|(u, t, a)| (u.as_str(), *t, *a)).collect();
    write_user_entities_with_amounts(&entities, &borrowed);
    let out_path = dir.path().join("out.parquet");
    let summary = run(
        &registry,
        &entities,
        features(&[
            "user_risk:risk_score",
            "user_features:avg_order_value_7d",
            "user_features:total_orders_30d",
            "user_features:account_age_days",
            "user_features:fraud_score",
            "user_risk:amount_over_avg",
            "user_risk:order_value_per_order",
        ]),
        &out_path,
        false,
        &HistoricalOptions {
            threads: 2,
            transform_batch_rows: 1000,
            ..HistoricalOptions::default()
        },
    )
    .unwrap();
    assert_eq!(summary.rows, 5000);
    let out = read_parquet(&out_path);
    let aov = values(&out, "avg_order_value_7d", F32);
    let orders = values(&out, "total_orders_30d", I64);
    let age = values(&out, "account_age_days", I64);
    let fraud = values(&out, "fraud_score", F32);
    let risk = values(&out, "risk_score", F64);
    let over = values(&out, "amount_over_avg", F64);
    let per_order = values(&out, "order_value_per_order", F64);
    let bits = |v: Option<f64>| v.map_or(Value::Null, Value::Float64);
    let mut present = 0;
    for (r, (_, _, amount)) in rows.iter().enumerate() {
        let expected = user_risk::user_risk(user_risk::Input {
            avg_order_value_7d: f32_of(&aov[r]),
            total_orders_30d: i64_of(&orders[r]),
            account_age_days: i64_of(&age[r]),
            fraud_score: f32_of(&fraud[r]),
            amount: *amount,
        });
        assert!(bits(expected.risk_score).bit_eq(&risk[r]), "row {r}");
        assert!(bits(expected.amount_over_avg).bit_eq(&over[r]), "row {r}");
        assert!(
            bits(expected.order_value_per_order).bit_eq(&per_order[r]),
            "row {r}"
        );
        present += usize::from(!risk[r].is_null());
    }
    assert!(present > 1000 && present < 5000, "{present}");

    let wasm = std::fs::read(quiver_tests::wasm::fixtures_dir().join("user_risk.wasm")).unwrap();
    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&wasm))
    };
    let transforms: serde_json::Value = serde_json::from_str(
        &parquet_metadata(&out_path, quiver::offline::historical::META_TRANSFORMS).unwrap(),
    )
    .unwrap();
    assert_eq!(transforms, serde_json::json!({ "user_risk": sha256 }));
}

#[test]
fn a_missing_request_field_is_an_error_naming_the_file_and_column() {
    let (dir, registry) = on_demand_setup();
    let entities = dir.path().join("entities.parquet");
    write_user_entities(&entities, &[("user_0001", ANCHOR)]);
    let e = run(
        &registry,
        &entities,
        features(&["user_risk:risk_score"]),
        &dir.path().join("out.parquet"),
        false,
        &options(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains(&entities.display().to_string()), "{e}");
    assert!(e.contains("\"amount\""), "{e}");
    assert!(
        e.contains("request field of on-demand view \"user_risk\""),
        "{e}"
    );
}
