//! `POST /get-online-features` answered as an Arrow IPC stream, for clients that ask for it with
//! `Accept: application/vnd.apache.arrow.stream` (pyarrow, polars, pandas read it directly).
//!
//! The stream holds one schema and one record batch, one row per entity row in request order, with
//! the columns of the JSON answer's `metadata.feature_names` in the same order: the echoed entity
//! columns, typed by their join key's declared type, then per feature `<name>` (its declared type,
//! null unless PRESENT), `<name>__status` (Utf8, the JSON status names) and
//! `<name>__event_timestamp` (`Timestamp(Microsecond, "UTC")`, 0 where JSON says
//! `1970-01-01T00:00:00Z`). It is built straight from the [`OnlineResponse`] with typed builders
//! sized for the rows; no cell is rendered to text.
//!
//! Statuses are plain Utf8 rather than a dictionary: arrow's IPC writer sends one dictionary
//! message per dictionary column, and for 250 features that cost more server CPU per request
//! than the status strings themselves (measured with `vs-feast --arrow`, see
//! docs/benchmarks.md), for an answer about 30% larger.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder,
    Int64Builder, ListArray, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::error::ArrowError;
use arrow::ipc::MetadataVersion;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use axum::http::{HeaderMap, header};
use serde_json::Value as Json;

use super::handlers::REQUEST_ID_HEADER;
use super::json::key_part;
use super::online::echoed_entities;
use crate::entity_key::KeyPart;
use crate::offline::columns::arrow_type;
use crate::online::{OnlineRequest, OnlineResponse};
use crate::registry::Registry;
use crate::types::{ScalarType, Value, ValueType};

/// The media type of the Arrow answer: an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// Suffix of a feature's status column.
pub const STATUS_SUFFIX: &str = "__status";
/// Suffix of a feature's event-timestamp column.
pub const EVENT_TIMESTAMP_SUFFIX: &str = "__event_timestamp";

/// How a lookup is answered, from the request's `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    /// Feast's JSON answer (the default).
    Json,
    /// An Arrow IPC stream.
    Arrow,
}

impl ResponseFormat {
    /// Arrow when `Accept` lists [`ARROW_STREAM`] with q > 0 and JSON (`application/json`, or the
    /// most specific of `application/*` and `*/*` when it is not listed) has no strictly higher q;
    /// JSON otherwise, including when there is no `Accept`. Reads the header in place (no
    /// allocation).
    pub fn negotiate(headers: &HeaderMap) -> ResponseFormat {
        let mut arrow: Option<f32> = None;
        // The q of application/json, application/* and */*, the most specific that is listed wins.
        let mut json: [Option<f32>; 3] = [None; 3];
        for value in headers.get_all(header::ACCEPT) {
            let Ok(text) = value.to_str() else { continue };
            for range in text.split(',') {
                let mut parts = range.split(';');
                let media = parts.next().unwrap_or("").trim();
                let Some(q) = quality(parts) else { continue };
                let slot = if media.eq_ignore_ascii_case(ARROW_STREAM) {
                    &mut arrow
                } else if media.eq_ignore_ascii_case("application/json") {
                    &mut json[0]
                } else if media.eq_ignore_ascii_case("application/*") {
                    &mut json[1]
                } else if media == "*/*" {
                    &mut json[2]
                } else {
                    continue;
                };
                *slot = Some(slot.map_or(q, |old: f32| old.max(q)));
            }
        }
        let json = json.into_iter().flatten().next().unwrap_or(0.0);
        match arrow {
            Some(q) if q > 0.0 && q >= json => ResponseFormat::Arrow,
            _ => ResponseFormat::Json,
        }
    }
}

/// The `q` parameter of one media range (1 when absent); `None` when it is malformed, and the
/// range is then ignored.
fn quality<'a>(params: impl Iterator<Item = &'a str>) -> Option<f32> {
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            return value
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q));
        }
    }
    Some(1.0)
}

/// The longest status name (`OUTSIDE_MAX_AGE`), to size the status columns.
const STATUS_BYTES: usize = 15;

/// Renders the Arrow IPC stream of a lookup. `registry` types the echoed entity columns (join
/// keys by their declared type; a column that is no join key by what its JSON values are).
pub fn render_arrow(
    registry: &Registry,
    request: &OnlineRequest<'_, Json>,
    response: &OnlineResponse<'_>,
) -> Result<Vec<u8>, ArrowError> {
    let (n, entities) = echoed_entities(request, response);
    let width = entities.len() + 3 * response.features.len();
    let mut fields: Vec<Field> = Vec::with_capacity(width);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(width);

    for (name, values) in entities {
        let values = values.as_array().map_or(&[][..], Vec::as_slice);
        let column = match join_key_type(registry, name) {
            Some(dtype) => join_key_column(values, dtype),
            None => inferred_column(values),
        };
        fields.push(Field::new(*name, column.data_type().clone(), true));
        columns.push(column);
    }

    let utc: Arc<str> = Arc::from("UTC");
    for f in &response.features {
        let mut builder = ColumnBuilder::new(f.dtype, n, (0..n).map(|r| f.value(r)));
        for r in 0..n {
            builder.append(f.value(r));
        }
        let values = builder.finish();
        let mut statuses = StringBuilder::with_capacity(n, n * STATUS_BYTES);
        for c in &f.cells {
            statuses.append_value(c.status.as_str());
        }
        let statuses = statuses.finish();
        let timestamps =
            TimestampMicrosecondArray::from_iter_values(f.cells.iter().map(|c| c.event_ts))
                .with_timezone_opt(Some(Arc::clone(&utc)));
        let name = f.name.as_ref();
        fields.push(Field::new(name, values.data_type().clone(), true));
        fields.push(Field::new(
            format!("{name}{STATUS_SUFFIX}"),
            DataType::Utf8,
            false,
        ));
        fields.push(Field::new(
            format!("{name}{EVENT_TIMESTAMP_SUFFIX}"),
            DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::clone(&utc))),
            false,
        ));
        columns.push(values);
        columns.push(Arc::new(statuses));
        columns.push(Arc::new(timestamps));
    }

    let mut schema = Schema::new(fields);
    if let Some(id) = &response.request_id {
        schema
            .metadata
            .insert(REQUEST_ID_HEADER.to_string(), id.to_string());
    }
    let schema = Arc::new(schema);
    let batch = RecordBatch::try_new_with_options(
        Arc::clone(&schema),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
    )?;
    // 8-byte alignment (the format's minimum) rather than 64: a wide answer has three buffers or
    // more per feature, and most are a few hundred bytes.
    let options = IpcWriteOptions::try_new(8, false, MetadataVersion::V5)?;
    let estimate = 512 + width * 96 + n * (16 * width + 8);
    let mut writer =
        StreamWriter::try_new_with_options(Vec::with_capacity(estimate), &schema, options)?;
    writer.write(&batch)?;
    writer.finish()?;
    writer.into_inner()
}

/// The declared type of the join key named `name`, from the registry's entities.
fn join_key_type(registry: &Registry, name: &str) -> Option<ScalarType> {
    registry
        .entities
        .iter()
        .flat_map(|e| &e.join_keys)
        .find(|k| k.name.as_str() == name)
        .map(|k| k.dtype)
}

/// An echoed join-key column of declared type `dtype`; a value that is not of that type (only
/// possible in a column no requested view reads) is null.
fn join_key_column(values: &[Json], dtype: ScalarType) -> ArrayRef {
    let mut scratch = Vec::new();
    match dtype {
        ScalarType::String => {
            let bytes = values.iter().map(|v| v.as_str().map_or(0, str::len)).sum();
            let mut b = StringBuilder::with_capacity(values.len(), bytes);
            for v in values {
                b.append_option(v.as_str());
            }
            Arc::new(b.finish())
        }
        // Join keys are string, int64, int32 or bytes.
        _ => {
            let dtype_of_column = ValueType::Scalar(dtype);
            let mut b = ColumnBuilder::new(dtype_of_column, values.len(), std::iter::empty());
            for v in values {
                match key_part(v, dtype, &mut scratch) {
                    Ok(KeyPart::Int(i)) => b.append_int(i),
                    Ok(KeyPart::Bytes(bytes)) => b.append_bytes(bytes),
                    _ => b.append(None),
                }
            }
            b.finish()
        }
    }
}

/// An echoed column that is no join key (the lookup ignores it): Int64 when every value is a JSON
/// integer, Float64 for numbers, Boolean, Utf8 for strings, and otherwise Utf8 of each value's
/// JSON text; nulls stay null.
fn inferred_column(values: &[Json]) -> ArrayRef {
    let present = || values.iter().filter(|v| !v.is_null());
    if present().all(Json::is_i64) {
        Arc::new(
            values
                .iter()
                .map(Json::as_i64)
                .collect::<arrow::array::Int64Array>(),
        )
    } else if present().all(Json::is_number) {
        Arc::new(
            values
                .iter()
                .map(Json::as_f64)
                .collect::<arrow::array::Float64Array>(),
        )
    } else if present().all(Json::is_boolean) {
        Arc::new(
            values
                .iter()
                .map(Json::as_bool)
                .collect::<arrow::array::BooleanArray>(),
        )
    } else if present().all(Json::is_string) {
        Arc::new(values.iter().map(Json::as_str).collect::<StringArray>())
    } else {
        let mut b = StringBuilder::with_capacity(values.len(), values.len() * 16);
        for v in values {
            if v.is_null() {
                b.append_null();
            } else {
                // Display writes the compact JSON text straight into the builder.
                let _ = write!(b, "{v}");
                b.append_value("");
            }
        }
        Arc::new(b.finish())
    }
}

/// A builder of one column of a declared [`ValueType`], sized up front. Values of another type
/// than declared (which the stores and transforms never serve) are appended as null.
enum ColumnBuilder {
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    Bool(BooleanBuilder),
    Binary(BinaryBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    List {
        item: ScalarType,
        items: Box<ColumnBuilder>,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
    },
}

impl ColumnBuilder {
    /// A builder for `rows` values of type `dtype`; `values` (iterated once, may be empty) sizes
    /// the string, binary and list buffers.
    fn new<'v>(
        dtype: ValueType,
        rows: usize,
        values: impl Iterator<Item = Option<&'v Value>>,
    ) -> ColumnBuilder {
        // Only variable-width columns need the values' sizes.
        let (items, bytes) = match dtype {
            ValueType::Scalar(ScalarType::String | ScalarType::Bytes) | ValueType::List(_) => {
                sizes(values)
            }
            ValueType::Scalar(_) => (0, 0),
        };
        match dtype {
            ValueType::Scalar(s) => Self::scalar(s, rows, bytes),
            ValueType::List(s) => {
                let mut offsets = Vec::with_capacity(rows + 1);
                offsets.push(0);
                ColumnBuilder::List {
                    item: s,
                    items: Box::new(Self::scalar(s, items, bytes)),
                    offsets,
                    nulls: NullBufferBuilder::new(rows),
                }
            }
        }
    }

    fn scalar(s: ScalarType, rows: usize, bytes: usize) -> ColumnBuilder {
        match s {
            ScalarType::Int32 => ColumnBuilder::Int32(Int32Builder::with_capacity(rows)),
            ScalarType::Int64 => ColumnBuilder::Int64(Int64Builder::with_capacity(rows)),
            ScalarType::Float32 => ColumnBuilder::Float32(Float32Builder::with_capacity(rows)),
            ScalarType::Float64 => ColumnBuilder::Float64(Float64Builder::with_capacity(rows)),
            ScalarType::String => ColumnBuilder::Utf8(StringBuilder::with_capacity(rows, bytes)),
            ScalarType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(rows)),
            ScalarType::Bytes => ColumnBuilder::Binary(BinaryBuilder::with_capacity(rows, bytes)),
            ScalarType::UnixTimestamp => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
        }
    }

    /// Appends one value; `None` (and a value of another type) is null.
    fn append(&mut self, value: Option<&Value>) {
        match (self, value) {
            (ColumnBuilder::Int32(b), Some(Value::Int(i))) => b.append_value(*i as i32),
            (ColumnBuilder::Int64(b), Some(Value::Int(i))) => b.append_value(*i),
            (ColumnBuilder::Float32(b), Some(Value::Float32(f))) => b.append_value(*f),
            (ColumnBuilder::Float64(b), Some(Value::Float64(f))) => b.append_value(*f),
            (ColumnBuilder::Utf8(b), Some(Value::String(s))) => b.append_value(s),
            (ColumnBuilder::Bool(b), Some(Value::Bool(v))) => b.append_value(*v),
            (ColumnBuilder::Binary(b), Some(Value::Bytes(v))) => b.append_value(v),
            (ColumnBuilder::Timestamp(b), Some(Value::Int(i))) => b.append_value(*i),
            (
                ColumnBuilder::List {
                    items,
                    offsets,
                    nulls,
                    ..
                },
                Some(Value::List(values)),
            ) => {
                for v in values {
                    items.append(Some(v));
                }
                let end = offsets.last().copied().unwrap_or(0) + values.len() as i32;
                offsets.push(end);
                nulls.append_non_null();
            }
            (builder, _) => builder.append_null(),
        }
    }

    /// Appends an integer (a join key) to an integer column.
    fn append_int(&mut self, i: i64) {
        match self {
            ColumnBuilder::Int32(b) => b.append_value(i as i32),
            ColumnBuilder::Int64(b) => b.append_value(i),
            other => other.append_null(),
        }
    }

    /// Appends bytes (a join key) to a binary column.
    fn append_bytes(&mut self, bytes: &[u8]) {
        match self {
            ColumnBuilder::Binary(b) => b.append_value(bytes),
            other => other.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Int32(b) => b.append_null(),
            ColumnBuilder::Int64(b) => b.append_null(),
            ColumnBuilder::Float32(b) => b.append_null(),
            ColumnBuilder::Float64(b) => b.append_null(),
            ColumnBuilder::Utf8(b) => b.append_null(),
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Binary(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
            ColumnBuilder::List { offsets, nulls, .. } => {
                offsets.push(offsets.last().copied().unwrap_or(0));
                nulls.append_null();
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Int32(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Float32(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Utf8(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Binary(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::List {
                item,
                items,
                offsets,
                nulls,
            } => {
                let field = Arc::new(Field::new(
                    "item",
                    arrow_type(ValueType::Scalar(*item)),
                    true,
                ));
                Arc::new(ListArray::new(
                    field,
                    OffsetBuffer::new(std::mem::take(offsets).into()),
                    items.finish(),
                    nulls.finish(),
                ))
            }
        }
    }
}

/// (list items, string or binary bytes) of `values`, to size a builder.
fn sizes<'v>(values: impl Iterator<Item = Option<&'v Value>>) -> (usize, usize) {
    let (mut items, mut bytes) = (0, 0);
    for value in values.flatten() {
        match value {
            Value::String(s) => bytes += s.len(),
            Value::Bytes(b) => bytes += b.len(),
            Value::List(list) => {
                items += list.len();
                for v in list {
                    match v {
                        Value::String(s) => bytes += s.len(),
                        Value::Bytes(b) => bytes += b.len(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (items, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn format(accept: &[&str]) -> ResponseFormat {
        let mut headers = HeaderMap::new();
        for a in accept {
            headers.append(header::ACCEPT, HeaderValue::from_str(a).unwrap());
        }
        ResponseFormat::negotiate(&headers)
    }

    #[test]
    fn arrow_is_answered_only_when_asked_for_and_json_is_not_preferred() {
        use ResponseFormat::{Arrow, Json};
        assert_eq!(format(&[]), Json);
        assert_eq!(format(&["*/*"]), Json);
        assert_eq!(format(&["application/json"]), Json);
        assert_eq!(format(&["text/html, image/png"]), Json);
        assert_eq!(format(&[ARROW_STREAM]), Arrow);
        assert_eq!(format(&["Application/Vnd.Apache.Arrow.Stream"]), Arrow);
        assert_eq!(format(&["application/vnd.apache.arrow.stream;q=0"]), Json);
        assert_eq!(
            format(&["application/vnd.apache.arrow.stream; q=0.0"]),
            Json
        );
        assert_eq!(
            format(&["application/json, application/vnd.apache.arrow.stream"]),
            Arrow
        );
        assert_eq!(
            format(&["application/json;q=0.9, application/vnd.apache.arrow.stream;q=0.5"]),
            Json
        );
        assert_eq!(
            format(&["application/json;q=0.5, application/vnd.apache.arrow.stream;q=0.5"]),
            Arrow
        );
        assert_eq!(
            format(&["application/vnd.apache.arrow.stream;q=0.5, */*"]),
            Json
        );
        assert_eq!(
            format(&["application/vnd.apache.arrow.stream, */*;q=0.1"]),
            Arrow
        );
        // application/json is more specific than */*.
        assert_eq!(
            format(&["application/vnd.apache.arrow.stream;q=0.5, application/json;q=0.1, */*"]),
            Arrow
        );
        // Several Accept headers are one list; a malformed q ignores its range.
        assert_eq!(format(&["application/json;q=0.2", ARROW_STREAM]), Arrow);
        assert_eq!(format(&["application/vnd.apache.arrow.stream;q=x"]), Json);
    }

    #[test]
    fn list_columns_keep_null_and_empty_lists_apart() {
        let dtype = ValueType::List(ScalarType::String);
        let values = [
            Some(Value::List(vec![
                Value::String("a".into()),
                Value::String("bc".into()),
            ])),
            None,
            Some(Value::List(vec![])),
        ];
        let mut b = ColumnBuilder::new(dtype, 3, values.iter().map(Option::as_ref));
        for v in &values {
            b.append(v.as_ref());
        }
        let array = b.finish();
        assert_eq!(array.data_type(), &arrow_type(dtype));
        let list = array.as_any().downcast_ref::<ListArray>().unwrap();
        assert_eq!(list.value_length(0), 2);
        assert!(list.is_null(1));
        assert!(list.is_valid(2));
        assert_eq!(list.value_length(2), 0);
    }
}
