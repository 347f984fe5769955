//! The protobuf messages of Feast's Redis layout, written out here: `feast.types.Value` (the
//! variants Quiver's types map to) and `google.protobuf.Timestamp`, with the conversions between
//! them and Quiver's [`Value`]s.
//!
//! Field numbers are those of Feast 0.67's `feast/types/Value.proto`. Feast stores
//! `unix_timestamp_val` as whole seconds since the epoch (`int(datetime.timestamp())`, so
//! truncated toward zero) and `-2^63` as its null timestamp; Quiver's timestamps are microseconds.

use prost::Message;

use crate::types::{ScalarType, Value, ValueType};

/// `feast.types.Value`: one feature value; an empty message is null.
#[derive(Clone, PartialEq, Message)]
pub struct ValueProto {
    /// The value, `None` when null.
    #[prost(
        oneof = "Val",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 15, 16, 17, 18, 19"
    )]
    pub val: Option<Val>,
}

/// The `val` oneof of `feast.types.Value`, as far as Quiver's types reach.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Val {
    /// `bytes_val`.
    #[prost(bytes, tag = "1")]
    BytesVal(Vec<u8>),
    /// `string_val`.
    #[prost(string, tag = "2")]
    StringVal(String),
    /// `int32_val`.
    #[prost(int32, tag = "3")]
    Int32Val(i32),
    /// `int64_val`.
    #[prost(int64, tag = "4")]
    Int64Val(i64),
    /// `double_val`.
    #[prost(double, tag = "5")]
    DoubleVal(f64),
    /// `float_val`.
    #[prost(float, tag = "6")]
    FloatVal(f32),
    /// `bool_val`.
    #[prost(bool, tag = "7")]
    BoolVal(bool),
    /// `unix_timestamp_val`: seconds since the epoch.
    #[prost(int64, tag = "8")]
    UnixTimestampVal(i64),
    /// `bytes_list_val`.
    #[prost(message, tag = "11")]
    BytesListVal(BytesList),
    /// `string_list_val`.
    #[prost(message, tag = "12")]
    StringListVal(StringList),
    /// `int32_list_val`.
    #[prost(message, tag = "13")]
    Int32ListVal(Int32List),
    /// `int64_list_val`.
    #[prost(message, tag = "14")]
    Int64ListVal(Int64List),
    /// `double_list_val`.
    #[prost(message, tag = "15")]
    DoubleListVal(DoubleList),
    /// `float_list_val`.
    #[prost(message, tag = "16")]
    FloatListVal(FloatList),
    /// `bool_list_val`.
    #[prost(message, tag = "17")]
    BoolListVal(BoolList),
    /// `unix_timestamp_list_val`: seconds since the epoch.
    #[prost(message, tag = "18")]
    UnixTimestampListVal(Int64List),
    /// `null_val` (the enum `feast.types.Null`, whose only value is 0).
    #[prost(int32, tag = "19")]
    NullVal(i32),
}

/// `feast.types.BytesList`.
#[derive(Clone, PartialEq, Message)]
pub struct BytesList {
    /// The items.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub val: Vec<Vec<u8>>,
}

/// `feast.types.StringList`.
#[derive(Clone, PartialEq, Message)]
pub struct StringList {
    /// The items.
    #[prost(string, repeated, tag = "1")]
    pub val: Vec<String>,
}

/// `feast.types.Int32List`.
#[derive(Clone, PartialEq, Message)]
pub struct Int32List {
    /// The items.
    #[prost(int32, repeated, tag = "1")]
    pub val: Vec<i32>,
}

/// `feast.types.Int64List` (also the timestamp list).
#[derive(Clone, PartialEq, Message)]
pub struct Int64List {
    /// The items.
    #[prost(int64, repeated, tag = "1")]
    pub val: Vec<i64>,
}

/// `feast.types.DoubleList`.
#[derive(Clone, PartialEq, Message)]
pub struct DoubleList {
    /// The items.
    #[prost(double, repeated, tag = "1")]
    pub val: Vec<f64>,
}

/// `feast.types.FloatList`.
#[derive(Clone, PartialEq, Message)]
pub struct FloatList {
    /// The items.
    #[prost(float, repeated, tag = "1")]
    pub val: Vec<f32>,
}

/// `feast.types.BoolList`.
#[derive(Clone, PartialEq, Message)]
pub struct BoolList {
    /// The items.
    #[prost(bool, repeated, tag = "1")]
    pub val: Vec<bool>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct Timestamp {
    /// Whole seconds since the epoch (negative before 1970).
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second, `0..1e9`.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// Feast's null `unix_timestamp_val`.
const NULL_TIMESTAMP: i64 = i64::MIN;

impl Timestamp {
    /// The timestamp of a point in epoch microseconds.
    pub fn from_micros(micros: i64) -> Timestamp {
        Timestamp {
            seconds: micros.div_euclid(1_000_000),
            nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
        }
    }

    /// The point in epoch microseconds (sub-microsecond nanos are dropped); `None` when it does
    /// not fit or the nanos are out of range.
    pub fn to_micros(self) -> Option<i64> {
        if !(0..1_000_000_000).contains(&self.nanos) {
            return None;
        }
        self.seconds
            .checked_mul(1_000_000)?
            .checked_add(i64::from(self.nanos / 1000))
    }
}

/// Why a value cannot be stored in, or was not read as, its declared type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Mismatch(pub String);

/// Feast's `unix_timestamp_val` (seconds) of a Quiver timestamp (microseconds), truncated toward
/// zero as Feast's `int(datetime.timestamp())` does.
fn micros_to_seconds(micros: i64) -> i64 {
    micros / 1_000_000
}

fn seconds_to_micros(seconds: i64) -> Result<Value, Mismatch> {
    if seconds == NULL_TIMESTAMP {
        return Ok(Value::Null);
    }
    seconds
        .checked_mul(1_000_000)
        .map(Value::Int)
        .ok_or_else(|| Mismatch(format!("timestamp {seconds}s is out of range")))
}

/// The `feast.types.Value` of `value`, declared as `dtype`.
pub fn encode_value(value: &Value, dtype: ValueType) -> Result<ValueProto, Mismatch> {
    let mismatch = || Mismatch(format!("value {value:?} does not fit type {dtype}"));
    let val = match (dtype, value) {
        (_, Value::Null) => None,
        (ValueType::Scalar(s), v) => Some(encode_scalar(s, v).ok_or_else(mismatch)?),
        (ValueType::List(s), Value::List(items)) => Some(encode_list(s, items).ok_or_else(mismatch)?),
        (ValueType::List(_), _) => return Err(mismatch()),
    };
    Ok(ValueProto { val })
}

fn encode_scalar(s: ScalarType, v: &Value) -> Option<Val> {
    Some(match (s, v) {
        (ScalarType::Int32, Value::Int(i)) => Val::Int32Val(i32::try_from(*i).ok()?),
        (ScalarType::Int64, Value::Int(i)) => Val::Int64Val(*i),
        (ScalarType::UnixTimestamp, Value::Int(i)) => Val::UnixTimestampVal(micros_to_seconds(*i)),
        (ScalarType::Float32, Value::Float32(f)) => Val::FloatVal(*f),
        (ScalarType::Float64, Value::Float64(f)) => Val::DoubleVal(*f),
        (ScalarType::String, Value::String(t)) => Val::StringVal(t.clone()),
        (ScalarType::Bytes, Value::Bytes(b)) => Val::BytesVal(b.clone()),
        (ScalarType::Bool, Value::Bool(b)) => Val::BoolVal(*b),
        _ => return None,
    })
}

fn encode_list(s: ScalarType, items: &[Value]) -> Option<Val> {
    fn all<T>(items: &[Value], f: impl Fn(&Value) -> Option<T>) -> Option<Vec<T>> {
        items.iter().map(f).collect()
    }
    Some(match s {
        ScalarType::Int32 => Val::Int32ListVal(Int32List {
            val: all(items, |v| match v {
                Value::Int(i) => i32::try_from(*i).ok(),
                _ => None,
            })?,
        }),
        ScalarType::Int64 => Val::Int64ListVal(Int64List {
            val: all(items, |v| match v {
                Value::Int(i) => Some(*i),
                _ => None,
            })?,
        }),
        ScalarType::UnixTimestamp => Val::UnixTimestampListVal(Int64List {
            val: all(items, |v| match v {
                Value::Int(i) => Some(micros_to_seconds(*i)),
                _ => None,
            })?,
        }),
        ScalarType::Float32 => Val::FloatListVal(FloatList {
            val: all(items, |v| match v {
                Value::Float32(f) => Some(*f),
                _ => None,
            })?,
        }),
        ScalarType::Float64 => Val::DoubleListVal(DoubleList {
            val: all(items, |v| match v {
                Value::Float64(f) => Some(*f),
                _ => None,
            })?,
        }),
        ScalarType::String => Val::StringListVal(StringList {
            val: all(items, |v| match v {
                Value::String(t) => Some(t.clone()),
                _ => None,
            })?,
        }),
        ScalarType::Bytes => Val::BytesListVal(BytesList {
            val: all(items, |v| match v {
                Value::Bytes(b) => Some(b.clone()),
                _ => None,
            })?,
        }),
        ScalarType::Bool => Val::BoolListVal(BoolList {
            val: all(items, |v| match v {
                Value::Bool(b) => Some(*b),
                _ => None,
            })?,
        }),
    })
}

/// The Quiver value of a stored `feast.types.Value`, checked against the declared `dtype`.
pub fn decode_value(bytes: &[u8], dtype: ValueType) -> Result<Value, Mismatch> {
    let proto = ValueProto::decode(bytes)
        .map_err(|e| Mismatch(format!("not a feast.types.Value: {e}")))?;
    let value = match proto.val {
        None | Some(Val::NullVal(_)) => Value::Null,
        Some(Val::BytesVal(b)) => Value::Bytes(b),
        Some(Val::StringVal(s)) => Value::String(s),
        Some(Val::Int32Val(i)) => Value::Int(i64::from(i)),
        Some(Val::Int64Val(i)) => Value::Int(i),
        Some(Val::DoubleVal(f)) => Value::Float64(f),
        Some(Val::FloatVal(f)) => Value::Float32(f),
        Some(Val::BoolVal(b)) => Value::Bool(b),
        Some(Val::UnixTimestampVal(s)) => seconds_to_micros(s)?,
        Some(Val::BytesListVal(l)) => Value::List(l.val.into_iter().map(Value::Bytes).collect()),
        Some(Val::StringListVal(l)) => Value::List(l.val.into_iter().map(Value::String).collect()),
        Some(Val::Int32ListVal(l)) => {
            Value::List(l.val.into_iter().map(|i| Value::Int(i64::from(i))).collect())
        }
        Some(Val::Int64ListVal(l)) => Value::List(l.val.into_iter().map(Value::Int).collect()),
        Some(Val::DoubleListVal(l)) => Value::List(l.val.into_iter().map(Value::Float64).collect()),
        Some(Val::FloatListVal(l)) => Value::List(l.val.into_iter().map(Value::Float32).collect()),
        Some(Val::BoolListVal(l)) => Value::List(l.val.into_iter().map(Value::Bool).collect()),
        Some(Val::UnixTimestampListVal(l)) => Value::List(
            l.val
                .into_iter()
                .map(seconds_to_micros)
                .collect::<Result<_, _>>()?,
        ),
    };
    if dtype.admits(&value) {
        Ok(value)
    } else {
        Err(Mismatch(format!(
            "holds {value:?}, which does not fit the declared type {dtype}"
        )))
    }
}

/// The stored bytes of a value.
pub fn value_bytes(value: &Value, dtype: ValueType) -> Result<Vec<u8>, Mismatch> {
    Ok(encode_value(value, dtype)?.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn scalar(s: ScalarType) -> ValueType {
        ValueType::Scalar(s)
    }

    fn list(s: ScalarType) -> ValueType {
        ValueType::List(s)
    }

    /// Each vector is `ValueProto(...).SerializeToString().hex()` from Feast 0.67's
    /// `feast.protos.feast.types.Value_pb2`, e.g. `Value(int32_val=-5)` for the first.
    #[test]
    fn values_encode_byte_for_byte_as_feast_serializes_them() {
        use ScalarType::*;
        let cases: Vec<(Value, ValueType, &str)> = vec![
            (Value::Int(-5), scalar(Int32), "18fbffffffffffffffff01"),
            (Value::Int(-(1 << 62)), scalar(Int64), "208080808080808080c001"),
            (Value::Int(0), scalar(Int64), "2000"),
            (Value::Float32(1.5), scalar(Float32), "350000c03f"),
            (Value::Float64(-0.1), scalar(Float64), "299a9999999999b9bf"),
            (Value::String("Lisbon é".into()), scalar(String), "12094c6973626f6e20c3a9"),
            (Value::Bytes(vec![0, 1]), scalar(Bytes), "0a020001"),
            (Value::Bool(true), scalar(Bool), "3801"),
            (Value::Bool(false), scalar(Bool), "3800"),
            // Value(unix_timestamp_val=1700000000): Quiver's microseconds become seconds.
            (Value::Int(1_700_000_000_000_000), scalar(UnixTimestamp), "4080e2cfaa06"),
            (Value::Null, scalar(Int64), ""),
            (Value::List(vec![Value::Int(1), Value::Int(-1)]), list(Int32), "6a0d0a0b01ffffffffffffffffff01"),
            (Value::List(vec![Value::Int(1), Value::Int(1 << 40)]), list(Int64), "72090a0701808080808020"),
            (Value::List(vec![Value::Float32(0.5), Value::Float32(-2.0)]), list(Float32), "82010a0a080000003f000000c0"),
            (Value::List(vec![Value::Float64(0.5), Value::Float64(1.0)]), list(Float64), "7a120a10000000000000e03f000000000000f03f"),
            (Value::List(vec![Value::String("a".into()), Value::String(std::string::String::new())]), list(String), "62050a01610a00"),
            (Value::List(vec![Value::Bytes(b"x".to_vec())]), list(Bytes), "5a030a0178"),
            (Value::List(vec![Value::Bool(true), Value::Bool(false)]), list(Bool), "8a01040a020100"),
            (Value::List(vec![Value::Int(1_000_000), Value::Int(2_000_000)]), list(UnixTimestamp), "9201040a020102"),
            (Value::List(vec![]), list(Int64), "7200"),
        ];
        for (value, dtype, expected) in cases {
            let bytes = value_bytes(&value, dtype).unwrap();
            assert_eq!(hex(&bytes), expected, "{value:?} as {dtype}");
            assert!(
                decode_value(&bytes, dtype).unwrap().bit_eq(&value),
                "{value:?} as {dtype} does not read back"
            );
        }
    }

    /// `Timestamp().FromDatetime(dt).SerializeToString().hex()` with google.protobuf 
    /// in Feast 0.67's environment.
    #[test]
    fn timestamps_encode_as_protobuf_serializes_them() {
        let cases = [
            // 2023-11-14T22:13:20.123456Z
            (1_700_000_000_123_456, "0880e2cfaa06108094ef3a"),
            // 1970-01-01T00:00:00Z: both fields are zero, so nothing is written.
            (0, ""),
            // 1969-12-31T23:59:59.5Z: seconds -1, nanos 500000000.
            (-500_000, "08ffffffffffffffffff011080cab5ee01"),
        ];
        for (micros, expected) in cases {
            let ts = Timestamp::from_micros(micros);
            assert_eq!(hex(&ts.encode_to_vec()), expected, "{micros}");
            let back = Timestamp::decode(ts.encode_to_vec().as_slice()).unwrap();
            assert_eq!(back.to_micros(), Some(micros));
        }
    }

    #[test]
    fn a_feast_null_timestamp_and_an_empty_message_read_as_null() {
        let null_ts = ValueProto {
            val: Some(Val::UnixTimestampVal(NULL_TIMESTAMP)),
        }
        .encode_to_vec();
        assert_eq!(
            decode_value(&null_ts, scalar(ScalarType::UnixTimestamp)).unwrap(),
            Value::Null
        );
        assert_eq!(decode_value(&[], scalar(ScalarType::Float64)).unwrap(), Value::Null);
    }

    #[test]
    fn values_that_do_not_fit_their_declared_type_are_refused_both_ways() {
        assert!(value_bytes(&Value::Int(1 << 40), scalar(ScalarType::Int32)).is_err());
        assert!(value_bytes(&Value::String("x".into()), scalar(ScalarType::Int64)).is_err());
        let double = value_bytes(&Value::Float64(1.0), scalar(ScalarType::Float64)).unwrap();
        let err = decode_value(&double, scalar(ScalarType::Int64)).unwrap_err();
        assert!(err.0.contains("declared type int64"), "{err}");
        assert!(decode_value(b"\xff\xff", scalar(ScalarType::Int64)).is_err());
    }
}
