//! The Arrow IPC answer of `POST /get-online-features` (`Accept:
//! application/vnd.apache.arrow.stream`), against a real server on a loopback port: for the same
//! requests, JSON and Arrow agree cell by cell (values of every type, statuses, event timestamps,
//! column names and order), Arrow is answered only when asked for, and errors stay JSON.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::ipc::reader::StreamReader;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use quiver::clock::ManualClock;
use quiver::offline::columns::{arrow_type, build_column};
use quiver::types::{Value, ValueType};
use quiver_tests::fixtures::{HOUR, T0, load_registry, quickstart_registry_yaml, write_batch};
use quiver_tests::server::{TestServer, serve_materialized};
use quiver_tests::wasm::{install_module, transform_wasm};
use serde_json::{Value as Json, json};
use tempfile::TempDir;

const ARROW: &str = "application/vnd.apache.arrow.stream";

/// The features of the `typed` view: one of every declared type.
const TYPED: &[(&str, &str)] = &[
    ("f_int32", "int32"),
    ("f_int64", "int64"),
    ("f_float32", "float32"),
    ("f_float64", "float64"),
    ("f_string", "string"),
    ("f_bool", "bool"),
    ("f_bytes", "bytes"),
    ("f_ts", "unix_timestamp"),
    ("f_ints", "list<int64>"),
    ("f_floats", "list<float32>"),
    ("f_strings", "list<string>"),
    ("f_bools", "list<bool>"),
    ("f_times", "list<unix_timestamp>"),
];

fn registry_yaml() -> String {
    let mut yaml = String::from(
        r#"project: arrow
online_store:
  type: sqlite
  path: online.db
entities:
  - name: item
    join_keys: [item_id]
    value_type: int64
  - name: blob
    join_keys: [blob_key]
    value_type: bytes
feature_views:
  - name: typed
    entities: [item]
    ttl: 24h
    schema:
"#,
    );
    for (name, dtype) in TYPED {
        yaml.push_str(&format!("      - {{ name: {name}, dtype: \"{dtype}\" }}\n"));
    }
    yaml.push_str(
        r#"    source:
      path: data/typed.parquet
      timestamp_field: event_timestamp
  - name: blob_stats
    entities: [blob]
    ttl: 24h
    schema:
      - { name: weight, dtype: float64 }
    source:
      path: data/blob.parquet
      timestamp_field: event_timestamp
"#,
    );
    yaml
}

/// The rows of `typed`: item 1 has every value, item 2 nulls, an empty list, NaN and odd values,
/// item 3 is past the ttl (OUTSIDE_MAX_AGE); there is no item 4 (NOT_FOUND).
fn typed_rows() -> Vec<(i64, i64, Vec<Value>)> {
    use Value::*;
    let s = |x: &str| String(x.to_string());
    vec![
        (
            1,
            T0 - HOUR,
            vec![
                Int(-7),
                Int(1 << 40),
                Float32(0.1),
                Float64(2.5e-300),
                s("gold \"é\""),
                Bool(true),
                Bytes(vec![0, 1, 255]),
                Int(T0 - 90 * HOUR + 123_456),
                List(vec![Int(1), Int(-2), Int(3)]),
                List(vec![Float32(1.5), Float32(f32::INFINITY)]),
                List(vec![s("a"), s(""), s("ccc")]),
                List(vec![Bool(false), Bool(true)]),
                List(vec![Int(0), Int(T0)]),
            ],
        ),
        (
            2,
            T0 - 2 * HOUR - 1_500,
            vec![
                Int(i64::from(i32::MIN)),
                Null,
                Float32(-0.0),
                Float64(f64::NAN),
                Null,
                Bool(false),
                Bytes(vec![]),
                Null,
                List(vec![]),
                Null,
                List(vec![s("only")]),
                Null,
                List(vec![]),
            ],
        ),
        (
            3,
            T0 - 24 * HOUR - HOUR / 2,
            vec![
                Int(3),
                Int(3),
                Float32(3.0),
                Float64(3.0),
                s("old"),
                Bool(true),
                Bytes(vec![3]),
                Int(3),
                List(vec![Int(3)]),
                List(vec![Float32(3.0)]),
                List(vec![s("old")]),
                List(vec![Bool(true)]),
                List(vec![Int(3)]),
            ],
        ),
    ]
}

fn write_fixtures(dir: &std::path::Path) {
    let rows = typed_rows();
    let utc = || Some("UTC".into());
    let mut fields = vec![
        Field::new("item_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, utc()),
            false,
        ),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                .with_timezone("UTC"),
        ),
    ];
    for (i, (name, dtype)) in TYPED.iter().enumerate() {
        let dtype = ValueType::parse(dtype).unwrap();
        fields.push(Field::new(*name, arrow_type(dtype), true));
        columns.push(build_column(dtype, rows.iter().map(|r| &r.2[i])));
    }
    write_batch(
        &dir.join("data/typed.parquet"),
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap(),
    );

    let blob_schema = Schema::new(vec![
        Field::new("blob_key", DataType::Binary, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, utc()),
            false,
        ),
        Field::new("weight", DataType::Float64, true),
    ]);
    let keys: Vec<&[u8]> = vec![b"\x00\x01", b"hi"];
    write_batch(
        &dir.join("data/blob.parquet"),
        RecordBatch::try_new(
            Arc::new(blob_schema),
            vec![
                Arc::new(arrow::array::BinaryArray::from(keys)),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![T0 - HOUR, T0 - 3 * HOUR])
                        .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from(vec![Some(0.5), None])),
            ],
        )
        .unwrap(),
    );
}

/// A server over the typed fixtures, materialized at T0 with the clock at T0.
async fn typed_server() -> (TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    write_fixtures(dir.path());
    let registry = load_registry(dir.path(), &registry_yaml());
    let (_, server) = serve_materialized(registry, Arc::new(ManualClock::new(T0)), T0).await;
    (dir, server)
}

/// One answer: status, Content-Type, the request-id header and the body.
struct Answer {
    status: u16,
    content_type: String,
    request_id: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
        })
    }

    fn arrow(&self) -> RecordBatch {
        assert_eq!(self.content_type, ARROW);
        let reader = StreamReader::try_new(Cursor::new(&self.body), None).expect("an Arrow stream");
        let schema = reader.schema();
        let batches: Vec<RecordBatch> = reader.map(|b| b.expect("a record batch")).collect();
        assert_eq!(batches.len(), 1, "one record batch");
        assert_eq!(batches[0].schema(), schema);
        batches.into_iter().next().unwrap()
    }
}

async fn post(server: &TestServer, body: &Json, accept: Option<&str>) -> Answer {
    post_bytes(server, body.to_string(), accept).await
}

async fn post_bytes(server: &TestServer, body: String, accept: Option<&str>) -> Answer {
    let mut request = reqwest::Client::new()
        .post(server.url("/get-online-features"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.expect("request sent");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    Answer {
        status: response.status().as_u16(),
        content_type: header("content-type").unwrap_or_default(),
        request_id: header(quiver::serving::REQUEST_ID_HEADER),
        body: response.bytes().await.expect("body").to_vec(),
    }
}

/// Fetches `body` as JSON and as Arrow and checks they agree cell by cell; returns both.
async fn json_and_arrow(server: &TestServer, body: &Json) -> (Json, RecordBatch) {
    let json = post(server, body, None).await;
    assert_eq!(json.status, 200, "{}", String::from_utf8_lossy(&json.body));
    assert_eq!(json.content_type, "application/json");
    let json = json.json();
    let arrow = post(server, body, Some(ARROW)).await;
    assert_eq!(
        arrow.status,
        200,
        "{}",
        String::from_utf8_lossy(&arrow.body)
    );
    let batch = arrow.arrow();
    assert_same(&json, &batch);
    (json, batch)
}

/// The JSON answer and the Arrow batch hold the same columns, in the same order, and the same
/// values, statuses and event timestamps in every cell.
fn assert_same(json: &Json, batch: &RecordBatch) {
    let names: Vec<&str> = json["metadata"]["feature_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let results = json["results"].as_array().unwrap();
    let fields: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    // k entity columns (one Arrow column each), then three Arrow columns per feature.
    let k = (3 * names.len() - fields.len()) / 2;
    let mut expected = Vec::new();
    for (i, name) in names.iter().enumerate() {
        expected.push(name.to_string());
        if i >= k {
            expected.push(format!("{name}__status"));
            expected.push(format!("{name}__event_timestamp"));
        }
    }
    assert_eq!(fields, expected, "Arrow columns vs JSON feature_names");
    let rows = results[0]["values"].as_array().unwrap().len();
    assert_eq!(batch.num_rows(), rows);

    let mut c = 0;
    for (i, result) in results.iter().enumerate() {
        let values = result["values"].as_array().unwrap();
        let column = batch.column(c);
        for (r, value) in values.iter().enumerate() {
            if let Err(e) = same(value, column.as_ref(), r) {
                panic!("{}[{r}]: JSON {value} vs Arrow: {e}", names[i]);
            }
        }
        c += 1;
        if i < k {
            continue;
        }
        let statuses = batch.column(c).as_string::<i32>();
        assert_eq!(statuses.null_count(), 0);
        let timestamps = batch
            .column(c + 1)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(
            batch.schema().field(c + 1).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        for r in 0..rows {
            let status = statuses.value(r);
            assert_eq!(
                result["statuses"][r].as_str().unwrap(),
                status,
                "{}[{r}] status",
                names[i]
            );
            let ts = micros(result["event_timestamps"][r].as_str().unwrap());
            assert_eq!(ts, timestamps.value(r), "{}[{r}] event timestamp", names[i]);
            if status != "PRESENT" {
                assert!(
                    batch.column(c - 1).is_null(r),
                    "{}[{r}] is {status}",
                    names[i]
                );
            }
        }
        c += 2;
    }
    assert_eq!(c, batch.num_columns());
}

fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .timestamp_micros()
}

/// Whether a JSON value is what the Arrow cell holds, as JSON renders it: floats bit for bit
/// (NaN and infinities as strings), bytes as base64, timestamps as RFC 3339.
fn same(json: &Json, array: &dyn Array, row: usize) -> Result<(), String> {
    if array.is_null(row) {
        return if json.is_null() {
            Ok(())
        } else {
            Err("null".into())
        };
    }
    let ok = match array.data_type() {
        DataType::Int32 => {
            json.as_i64()
                == Some(i64::from(
                    array
                        .as_any()
                        .downcast_ref::<Int32Array>()
                        .unwrap()
                        .value(row),
                ))
        }
        DataType::Int64 => {
            json.as_i64()
                == Some(
                    array
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap()
                        .value(row),
                )
        }
        DataType::Float32 => {
            let v = array
                .as_any()
                .downcast_ref::<Float32Array>()
                .unwrap()
                .value(row);
            match json {
                // JSON carries float32 in its shortest round-tripping form.
                Json::Number(n) => (n.as_f64().unwrap() as f32).to_bits() == v.to_bits(),
                Json::String(s) => non_finite(s, f64::from(v)),
                _ => false,
            }
        }
        DataType::Float64 => {
            let v = array
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .value(row);
            match json {
                Json::Number(n) => n.as_f64().unwrap().to_bits() == v.to_bits(),
                Json::String(s) => non_finite(s, v),
                _ => false,
            }
        }
        DataType::Utf8 => {
            json.as_str()
                == Some(
                    array
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .unwrap()
                        .value(row),
                )
        }
        DataType::Boolean => {
            json.as_bool()
                == Some(
                    array
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .unwrap()
                        .value(row),
                )
        }
        DataType::Binary => {
            json.as_str() == Some(&BASE64.encode(array.as_binary::<i32>().value(row)))
        }
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC" => {
            json.as_str().map(micros)
                == Some(
                    array
                        .as_any()
                        .downcast_ref::<TimestampMicrosecondArray>()
                        .unwrap()
                        .value(row),
                )
        }
        DataType::List(_) => {
            let items = array.as_list::<i32>().value(row);
            let Some(json_items) = json.as_array() else {
                return Err(format!("a list of {} items", items.len()));
            };
            if json_items.len() != items.len() {
                return Err(format!("a list of {} items", items.len()));
            }
            for (i, item) in json_items.iter().enumerate() {
                same(item, items.as_ref(), i).map_err(|e| format!("item {i}: {e}"))?;
            }
            true
        }
        other => return Err(format!("unexpected Arrow type {other}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?}",
            arrow::util::display::ArrayFormatter::try_new(array, &Default::default())
                .map(|f| f.value(row).to_string())
        ))
    }
}

fn non_finite(s: &str, v: f64) -> bool {
    match s {
        "NaN" => v.is_nan(),
        "Infinity" => v == f64::INFINITY,
        "-Infinity" => v == f64::NEG_INFINITY,
        _ => false,
    }
}

#[tokio::test]
async fn an_arrow_answer_holds_the_same_values_statuses_and_timestamps_as_json() {
    let (_dir, server) = typed_server().await;
    let features: Vec<String> = TYPED
        .iter()
        .map(|(name, _)| format!("typed:{name}"))
        .collect();
    let body = json!({"features": features, "entities": {"item_id": [4, 1, 3, 2, 1]}});
    let (json, batch) = json_and_arrow(&server, &body).await;

    // Every status is there: NOT_FOUND, PRESENT, OUTSIDE_MAX_AGE and NULL_VALUE.
    let statuses: Vec<&str> = json["results"][2]["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "NOT_FOUND",
            "PRESENT",
            "OUTSIDE_MAX_AGE",
            "NULL_VALUE",
            "PRESENT"
        ],
        "f_int64"
    );
    // Columns typed as declared: the join key by its entity, each feature by its dtype.
    let schema = batch.schema();
    assert_eq!(schema.field(0).data_type(), &DataType::Int64);
    for (name, dtype) in TYPED {
        let field = schema.field_with_name(name).unwrap();
        assert_eq!(
            field.data_type(),
            &arrow_type(ValueType::parse(dtype).unwrap()),
            "{name}"
        );
        assert_eq!(
            schema
                .field_with_name(&format!("{name}__status"))
                .unwrap()
                .data_type(),
            &DataType::Utf8
        );
    }
    // The JSON's 1970-01-01T00:00:00Z (no row) is 0; a present cell carries its row's time.
    let ts = batch
        .column_by_name("f_ts__event_timestamp")
        .unwrap()
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    assert_eq!(ts.value(0), 0);
    assert_eq!(ts.value(1), T0 - HOUR);
    // Floats bit for bit, NaN included.
    let floats = batch
        .column_by_name("f_float64")
        .unwrap()
        .as_primitive::<arrow::datatypes::Float64Type>();
    assert!(floats.value(3).is_nan());
    assert_eq!(floats.value(1), 2.5e-300);
    assert!(
        schema.metadata().is_empty(),
        "no request id without logging"
    );
}

#[tokio::test]
async fn an_arrow_answer_names_columns_by_view_and_feature_with_full_feature_names() {
    let (_dir, server) = typed_server().await;
    let body = json!({
        "features": ["typed:f_string", "blob_stats:weight", "typed:f_strings"],
        "entities": {
            "item_id": [1, 2, 9],
            "blob_key": [BASE64.encode(b"hi"), BASE64.encode(b"\x00\x01"), BASE64.encode(b"none")],
        },
        "full_feature_names": true,
    });
    let (_, batch) = json_and_arrow(&server, &body).await;
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "item_id",
            "blob_key",
            "typed__f_string",
            "typed__f_string__status",
            "typed__f_string__event_timestamp",
            "blob_stats__weight",
            "blob_stats__weight__status",
            "blob_stats__weight__event_timestamp",
            "typed__f_strings",
            "typed__f_strings__status",
            "typed__f_strings__event_timestamp",
        ]
    );
    // A bytes join key is echoed as its bytes, not as the base64 text sent.
    assert_eq!(schema.field(1).data_type(), &DataType::Binary);
    assert_eq!(batch.column(1).as_binary::<i32>().value(1), b"\x00\x01");
}

#[tokio::test]
async fn an_echoed_column_that_is_no_join_key_is_typed_by_its_values() {
    let (_dir, server) = typed_server().await;
    let body = json!({
        "features": ["typed:f_int32"],
        "entities": {"item_id": [1, 2], "rank": [10, null], "label": ["a", "b"], "mixed": [1, "x"]},
    });
    let (_, batch) = json_and_arrow_loose(&server, &body).await;
    let schema = batch.schema();
    assert_eq!(
        schema.field_with_name("rank").unwrap().data_type(),
        &DataType::Int64
    );
    assert_eq!(
        schema.field_with_name("label").unwrap().data_type(),
        &DataType::Utf8
    );
    // Values of mixed JSON types are their JSON text.
    let mixed = batch.column_by_name("mixed").unwrap().as_string::<i32>();
    assert_eq!((mixed.value(0), mixed.value(1)), ("1", "\"x\""));
}

/// As [`json_and_arrow`], with the entity columns compared by the test itself (a column of mixed
/// JSON types has no Arrow type that holds its values as they are).
async fn json_and_arrow_loose(server: &TestServer, body: &Json) -> (Json, RecordBatch) {
    let json = post(server, body, None).await.json();
    let arrow = post(server, body, Some(ARROW)).await;
    assert_eq!(
        arrow.status,
        200,
        "{}",
        String::from_utf8_lossy(&arrow.body)
    );
    let batch = arrow.arrow();
    let rank = batch.column_by_name("rank").unwrap();
    assert!(same(&json["results"][1]["values"][0], rank.as_ref(), 0).is_ok());
    assert!(rank.is_null(1));
    (json, batch)
}

#[tokio::test]
async fn an_empty_entity_list_is_an_arrow_answer_with_no_rows() {
    let (_dir, server) = typed_server().await;
    let body = json!({"features": ["typed:f_int64", "typed:f_ints"], "entities": {"item_id": []}});
    let (_, batch) = json_and_arrow(&server, &body).await;
    assert_eq!(batch.num_rows(), 0);
    assert_eq!(batch.num_columns(), 7);
}

#[tokio::test]
async fn json_is_answered_without_accept_and_for_json_wildcards_unknown_types_and_arrow_at_q_0() {
    let (_dir, server) = typed_server().await;
    let body = json!({"features": ["typed:f_float32", "typed:f_bytes"], "entities": {"item_id": [1, 2, 4]}});
    let plain = post(&server, &body, None).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.content_type, "application/json");
    for accept in [
        "application/json",
        "*/*",
        "text/html",
        "application/vnd.apache.arrow.stream;q=0",
        "application/vnd.apache.arrow.stream;q=0.5, application/json",
        "application/vnd.apache.arrow.stream;q=0.5, */*",
        "application/vnd.apache.arrow.file",
    ] {
        let answer = post(&server, &body, Some(accept)).await;
        assert_eq!(answer.status, 200, "{accept}");
        assert_eq!(answer.content_type, "application/json", "{accept}");
        assert_eq!(
            answer.body, plain.body,
            "{accept}: the same JSON as without Accept"
        );
    }
    for accept in [
        ARROW,
        "application/json;q=0.9, application/vnd.apache.arrow.stream",
        "application/vnd.apache.arrow.stream, */*;q=0.1",
    ] {
        let answer = post(&server, &body, Some(accept)).await;
        assert_eq!(answer.status, 200, "{accept}");
        assert_eq!(answer.content_type, ARROW, "{accept}");
        assert_same(&plain.json(), &answer.arrow());
    }
}

#[tokio::test]
async fn an_invalid_request_asking_for_arrow_gets_the_json_error() {
    let (_dir, server) = typed_server().await;
    let cases = [
        ("{\"features\": [", 400, "INVALID_REQUEST"),
        (
            r#"{"features": ["typed:nope"], "entities": {"item_id": [1]}}"#,
            404,
            "NOT_FOUND",
        ),
        (
            r#"{"features": ["typed:f_int64"], "entities": {"item_id": ["one"]}}"#,
            422,
            "INVALID_ENTITY",
        ),
        (
            r#"{"features": ["typed:f_int64"], "entities": {"blob_key": ["AA=="]}}"#,
            400,
            "INVALID_REQUEST",
        ),
    ];
    for (body, status, code) in cases {
        let answer = post_bytes(&server, body.to_string(), Some(ARROW)).await;
        assert_eq!(answer.status, status, "{body}");
        assert_eq!(answer.content_type, "application/json", "{body}");
        assert_eq!(answer.json()["error"]["code"], code, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_features_and_the_feature_log_request_id_are_in_the_arrow_answer() {
    let dir = tempfile::tempdir().unwrap();
    quickstart::generate(&dir.path().join("examples/quickstart/data"), 30, T0, 7).unwrap();
    for module in ["user_risk", "order_stats"] {
        install_module(
            &dir.path().join("transforms/wasm"),
            module,
            &transform_wasm(module),
        );
    }
    // Every row of fraud_model_v2 logged, so its lookups carry a request id.
    let yaml = quickstart_registry_yaml().replace(
        "  - name: fraud_model_v2\n",
        "  - name: fraud_model_v2\n    logging: { destination: logs, sample_rate: 1.0 }\n",
    );
    let registry = load_registry(dir.path(), &yaml);
    let (_, server) = serve_materialized(registry, Arc::new(ManualClock::new(T0)), T0).await;
    let users: Vec<String> = (1..=30)
        .map(quickstart::user_id)
        .chain(["nobody".to_string()])
        .collect();
    let amounts: Vec<f64> = (0..users.len()).map(|i| 5.0 + i as f64 * 3.5).collect();

    // On-demand features (float64 and bool) beside plain ones; the request field is not echoed.
    let body = json!({
        "features": [
            "user_features:avg_order_value_7d", "user_features:preferred_category",
            "user_risk:risk_score", "user_risk:amount_over_avg", "order_stats:is_new_account"
        ],
        "entities": {"user_id": users, "amount": amounts},
    });
    let (json, batch) = json_and_arrow(&server, &body).await;
    assert_eq!(batch.schema().field(0).name(), "user_id");
    assert!(batch.schema().field_with_name("amount").is_err());
    let risk = &json["results"][3]["statuses"];
    assert!(
        risk.as_array()
            .unwrap()
            .iter()
            .filter(|s| *s == "PRESENT")
            .count()
            > 10,
        "{risk}"
    );
    assert_eq!(
        batch
            .schema()
            .field_with_name("is_new_account")
            .unwrap()
            .data_type(),
        &DataType::Boolean
    );

    // A logged feature service: the request id is the header and the schema's metadata.
    let body = json!({
        "feature_service": "fraud_model_v2",
        "entities": {"user_id": users, "amount": amounts},
        "full_feature_names": true,
    });
    let arrow = post(&server, &body, Some(ARROW)).await;
    assert_eq!(arrow.status, 200);
    let id = arrow.request_id.clone().expect("a request id header");
    assert_eq!(
        arrow
            .arrow()
            .schema()
            .metadata()
            .get(quiver::serving::REQUEST_ID_HEADER),
        Some(&id)
    );
    let (_, batch) = json_and_arrow(&server, &body).await;
    assert!(
        batch
            .schema()
            .field_with_name("user_risk__risk_score")
            .is_ok()
    );
}

/// The pyarrow the Python package's tests pin.
const PYARROW: &str = "pyarrow==21.0.0";

#[tokio::test]
async fn pyarrow_reads_the_arrow_answer_with_open_stream() {
    let python = quiver_tests::python::venv("pyarrow", &[PYARROW]).join("bin/python");
    let (dir, server) = typed_server().await;
    let body = json!({
        "features": ["typed:f_int64", "typed:f_strings", "typed:f_float64"],
        "entities": {"item_id": [2, 4, 1]},
    });
    let json = post(&server, &body, None).await.json();
    let arrow = post(&server, &body, Some(ARROW)).await;
    let path = dir.path().join("answer.arrows");
    std::fs::write(&path, &arrow.body).unwrap();
    // As docs/http-api.md shows it.
    let script = r#"
import json, math, sys
import pyarrow as pa
table = pa.ipc.open_stream(open(sys.argv[1], "rb").read()).read_all()
print(json.dumps({
    "names": table.column_names,
    "types": [str(t) for t in table.schema.types],
    "item_id": table.column("item_id").to_pylist(),
    "f_int64": table.column("f_int64").to_pylist(),
    "f_int64__status": table.column("f_int64__status").to_pylist(),
    "f_strings": table.column("f_strings").to_pylist(),
    "f_float64": ["NaN" if x is not None and math.isnan(x) else x for x in table.column("f_float64").to_pylist()],
    "f_float64__event_timestamp": table.column("f_float64__event_timestamp").cast(pa.int64()).to_pylist(),
}))
"#;
    let output = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: Json = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        read["types"],
        json!([
            "int64",
            "int64",
            "string",
            "timestamp[us, tz=UTC]",
            "list<item: string>",
            "string",
            "timestamp[us, tz=UTC]",
            "double",
            "string",
            "timestamp[us, tz=UTC]",
        ])
    );
    let results = &json["results"];
    // One entity column, then three columns per feature.
    let mut names = vec![json["metadata"]["feature_names"][0].clone()];
    for name in json["metadata"]["feature_names"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
    {
        let name = name.as_str().unwrap();
        names.extend([
            json!(name),
            json!(format!("{name}__status")),
            json!(format!("{name}__event_timestamp")),
        ]);
    }
    assert_eq!(read["names"], json!(names));
    assert_eq!(read["item_id"], results[0]["values"]);
    assert_eq!(read["f_int64"], results[1]["values"]);
    assert_eq!(read["f_int64__status"], results[1]["statuses"]);
    assert_eq!(read["f_strings"], results[2]["values"]);
    assert_eq!(read["f_float64"], results[3]["values"]);
    let timestamps: Vec<i64> = results[3]["event_timestamps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| micros(t.as_str().unwrap()))
        .collect();
    assert_eq!(read["f_float64__event_timestamp"], json!(timestamps));
}
