//! Feature value types and values, shared by the registry, the stores, serving, transforms and batch.
//!
//! A [`Value`] is untyped in the MessagePack sense (an integer is an `Int` whatever its declared
//! width); the declared [`ValueType`] of a field says how it is checked on write and rendered on read.
//! Floats keep their width (`Float32` vs `Float64`) so that values round-trip bit for bit.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch, UTC. Every timestamp inside Quiver uses this unit.
pub type EpochMicros = i64;

/// Parses a point in time as people and Feast's clients write it: RFC 3339 with an offset
/// (`2026-11-22T07:00:00Z`, `...+01:00`), a naive ISO date-time taken as UTC
/// (`2026-11-22T07:00:00`, `2026-11-22 07:00:00.5`, as Feast's SDK sends), or a date taken as
/// midnight UTC (`2026-11-22`).
pub fn parse_time(text: &str) -> Result<EpochMicros, String> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_micros());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_micros());
    }
    Err(format!(
        "expected a timestamp like 2026-11-22T07:00:00Z, 2026-11-22T07:00:00 (UTC) or 2026-11-22, got {text:?}"
    ))
}

/// A scalar feature type, as declared in `feature_store.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalarType {
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// IEEE 754 single precision.
    Float32,
    /// IEEE 754 double precision.
    Float64,
    /// UTF-8 text.
    String,
    /// true / false.
    Bool,
    /// Arbitrary bytes (base64 in JSON).
    Bytes,
    /// A point in time, stored as microseconds since the epoch (RFC 3339 in JSON).
    UnixTimestamp,
}

/// A declared feature type: a scalar or a list of scalars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// A single value.
    Scalar(ScalarType),
    /// A list of values of one scalar type.
    List(ScalarType),
}

impl ScalarType {
    /// The name used in `feature_store.yaml`.
    pub fn name(self) -> &'static str {
        match self {
            ScalarType::Int32 => "int32",
            ScalarType::Int64 => "int64",
            ScalarType::Float32 => "float32",
            ScalarType::Float64 => "float64",
            ScalarType::String => "string",
            ScalarType::Bool => "bool",
            ScalarType::Bytes => "bytes",
            ScalarType::UnixTimestamp => "unix_timestamp",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "int32" => ScalarType::Int32,
            "int64" => ScalarType::Int64,
            "float32" => ScalarType::Float32,
            "float64" => ScalarType::Float64,
            "string" => ScalarType::String,
            "bool" => ScalarType::Bool,
            "bytes" => ScalarType::Bytes,
            "unix_timestamp" => ScalarType::UnixTimestamp,
            _ => return None,
        })
    }

    /// Whether a value is acceptable for this type (nulls are always acceptable).
    pub fn admits(self, value: &Value) -> bool {
        match (self, value) {
            (_, Value::Null) => true,
            (ScalarType::Int32, Value::Int(i)) => i32::try_from(*i).is_ok(),
            (ScalarType::Int64 | ScalarType::UnixTimestamp, Value::Int(_)) => true,
            (ScalarType::Float32, Value::Float32(_)) => true,
            (ScalarType::Float64, Value::Float64(_)) => true,
            (ScalarType::String, Value::String(_)) => true,
            (ScalarType::Bool, Value::Bool(_)) => true,
            (ScalarType::Bytes, Value::Bytes(_)) => true,
            _ => false,
        }
    }
}

impl ValueType {
    /// Parses `int64`, `float32`, `list<string>`, ... as written in `feature_store.yaml`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Some(inner) = s.strip_prefix("list<").and_then(|r| r.strip_suffix('>')) {
            return ScalarType::parse(inner.trim()).map(ValueType::List);
        }
        ScalarType::parse(s).map(ValueType::Scalar)
    }

    /// Whether a value is acceptable for this type (nulls are always acceptable).
    pub fn admits(self, value: &Value) -> bool {
        match (self, value) {
            (_, Value::Null) => true,
            (ValueType::Scalar(s), v) => s.admits(v),
            (ValueType::List(s), Value::List(items)) => items
                .iter()
                .all(|v| !matches!(v, Value::Null) && s.admits(v)),
            (ValueType::List(_), _) => false,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueType::Scalar(s) => f.write_str(s.name()),
            ValueType::List(s) => write!(f, "list<{}>", s.name()),
        }
    }
}

/// One feature value. Serializes to and from native MessagePack (nil, bool, int, f32, f64, str,
/// bin, array), which is both the online-store encoding and the Wasm transform ABI encoding.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// Missing or null.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// Any integer type, and `unix_timestamp` (microseconds since the epoch).
    Int(i64),
    /// A single-precision float.
    Float32(f32),
    /// A double-precision float.
    Float64(f64),
    /// UTF-8 text.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A list of values.
    List(Vec<Value>),
}

impl Value {
    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Bit-exact equality: floats compare by their bits, so NaN equals the same NaN and
    /// `0.0` differs from `-0.0`. This is the equality training–serving parity is checked with.
    pub fn bit_eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Float32(a), Value::Float32(b)) => a.to_bits() == b.to_bits(),
            (Value::Float64(a), Value::Float64(b)) => a.to_bits() == b.to_bits(),
            (Value::List(a), Value::List(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.bit_eq(y))
            }
            (a, b) => a == b,
        }
    }

    /// An estimate of the heap and inline bytes this value occupies, for cache weighing.
    pub fn approx_size(&self) -> usize {
        std::mem::size_of::<Value>()
            + match self {
                Value::String(s) => s.len(),
                Value::Bytes(b) => b.len(),
                Value::List(items) => items.iter().map(Value::approx_size).sum(),
                _ => 0,
            }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Float32(f) => serializer.serialize_f32(*f),
            Value::Float64(f) => serializer.serialize_f64(*f),
            Value::String(s) => serializer.serialize_str(s),
            Value::Bytes(b) => serializer.serialize_bytes(b),
            Value::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a feature value (nil, bool, integer, float, string, bytes or array)")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {v} does not fit in int64")))
    }
    fn visit_f32<E>(self, v: f32) -> Result<Value, E> {
        Ok(Value::Float32(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scalar_and_list_types() {
        assert_eq!(
            ValueType::parse("float32"),
            Some(ValueType::Scalar(ScalarType::Float32))
        );
        assert_eq!(
            ValueType::parse("list<int64>"),
            Some(ValueType::List(ScalarType::Int64))
        );
        assert_eq!(ValueType::parse("flaot32"), None);
        assert_eq!(
            ValueType::List(ScalarType::Bytes).to_string(),
            "list<bytes>"
        );
    }

    #[test]
    fn msgpack_round_trip_keeps_float_width_and_bits() {
        let row = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-7),
            Value::Float32(0.1),
            Value::Float64(0.1),
            Value::String("héllo".into()),
            Value::Bytes(vec![0, 255]),
            Value::List(vec![Value::Int(1), Value::Int(2)]),
            Value::Float32(f32::NAN),
        ];
        let bytes = rmp_serde::to_vec(&row).unwrap();
        let back: Vec<Value> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.len(), row.len());
        for (a, b) in row.iter().zip(&back) {
            assert!(a.bit_eq(b), "{a:?} != {b:?}");
        }
    }

    #[test]
    fn int32_rejects_values_out_of_range() {
        assert!(ScalarType::Int32.admits(&Value::Int(5)));
        assert!(!ScalarType::Int32.admits(&Value::Int(i64::MAX)));
        assert!(!ValueType::Scalar(ScalarType::Float32).admits(&Value::Float64(1.0)));
    }
}

#[cfg(test)]
mod time_tests {
    use super::parse_time;

    const T: i64 = 1_795_330_800_000_000; // 2026-11-22T07:00:00Z

    #[test]
    fn rfc_3339_naive_iso_and_dates_are_all_read_as_utc() {
        assert_eq!(parse_time("2026-11-22T07:00:00Z"), Ok(T));
        assert_eq!(parse_time("2026-11-22T08:00:00+01:00"), Ok(T));
        assert_eq!(parse_time("2026-11-22T07:00:00"), Ok(T));
        assert_eq!(parse_time("2026-11-22 07:00:00.000001"), Ok(T + 1));
        assert_eq!(parse_time("2026-11-22"), Ok(T - 7 * 3_600_000_000));
        assert!(
            parse_time("yesterday")
                .unwrap_err()
                .contains("\"yesterday\"")
        );
    }
}
