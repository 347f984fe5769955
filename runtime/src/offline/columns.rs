//! Conversion between Arrow columns and Quiver values, with the type rules of `feature_store.yaml`.
//!
//! Reading is strict about floats (a `float32` feature must be a Float32 column, so values reach the
//! online store and training sets bit for bit as they were written) and lenient about integer
//! widths (any signed or small unsigned integer column fits `int64`).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type,
};

use crate::entity_key::KeyPart;
use crate::types::{EpochMicros, ScalarType, Value, ValueType};

/// Whether an Arrow column type can be read as `want`; `Err` says what was found.
pub fn check_scalar(dt: &DataType, want: ScalarType) -> Result<(), String> {
    let ok = match want {
        ScalarType::Int32 => matches!(
            dt,
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16
        ),
        ScalarType::Int64 => matches!(
            dt,
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
        ),
        ScalarType::Float32 => matches!(dt, DataType::Float32),
        ScalarType::Float64 => matches!(dt, DataType::Float64),
        ScalarType::String => matches!(
            dt,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ),
        ScalarType::Bool => matches!(dt, DataType::Boolean),
        ScalarType::Bytes => matches!(
            dt,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView
        ),
        ScalarType::UnixTimestamp => matches!(dt, DataType::Timestamp(_, _)),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "has Arrow type {dt}, which cannot be read as {}",
            want.name()
        ))
    }
}

/// Whether an Arrow column type can be read as `want` (scalars and lists).
pub fn check_column(dt: &DataType, want: ValueType) -> Result<(), String> {
    match want {
        ValueType::Scalar(s) => check_scalar(dt, s),
        ValueType::List(s) => match dt {
            DataType::List(f) | DataType::LargeList(f) => {
                check_scalar(f.data_type(), s).map_err(|m| format!("is a list whose items {m}"))
            }
            other => Err(format!(
                "has Arrow type {other}, which cannot be read as list<{}>",
                s.name()
            )),
        },
    }
}

/// Whether a column can serve as a timestamp (any Arrow timestamp unit, with or without zone).
pub fn check_timestamp(dt: &DataType) -> Result<(), String> {
    check_scalar(dt, ScalarType::UnixTimestamp)
}

/// Reads a timestamp cell as microseconds since the epoch (UTC); `None` when null.
pub fn timestamp_at(array: &dyn Array, row: usize) -> Option<EpochMicros> {
    if array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => array
            .as_primitive::<TimestampSecondType>()
            .value(row)
            .saturating_mul(1_000_000),
        DataType::Timestamp(TimeUnit::Millisecond, _) => array
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .saturating_mul(1000),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            array.as_primitive::<TimestampMicrosecondType>().value(row)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => array
            .as_primitive::<TimestampNanosecondType>()
            .value(row)
            .div_euclid(1000),
        _ => return None,
    })
}

fn int_at(array: &dyn Array, row: usize) -> Option<i64> {
    Some(match array.data_type() {
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        _ => return None,
    })
}

fn str_at(array: &dyn Array, row: usize) -> Option<&str> {
    Some(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row),
        DataType::Utf8View => array.as_string_view().value(row),
        _ => return None,
    })
}

fn bytes_at(array: &dyn Array, row: usize) -> Option<&[u8]> {
    Some(match array.data_type() {
        DataType::Binary => array.as_binary::<i32>().value(row),
        DataType::LargeBinary => array.as_binary::<i64>().value(row),
        DataType::BinaryView => array.as_binary_view().value(row),
        _ => return None,
    })
}

fn scalar_at(array: &dyn Array, want: ScalarType, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match want {
        ScalarType::Int32 | ScalarType::Int64 => int_at(array, row).map_or(Value::Null, Value::Int),
        ScalarType::Float32 => Value::Float32(array.as_primitive::<Float32Type>().value(row)),
        ScalarType::Float64 => Value::Float64(array.as_primitive::<Float64Type>().value(row)),
        ScalarType::String => {
            str_at(array, row).map_or(Value::Null, |s| Value::String(s.to_owned()))
        }
        ScalarType::Bool => Value::Bool(array.as_boolean().value(row)),
        ScalarType::Bytes => bytes_at(array, row).map_or(Value::Null, |b| Value::Bytes(b.to_vec())),
        ScalarType::UnixTimestamp => timestamp_at(array, row).map_or(Value::Null, Value::Int),
    }
}

/// Reads one cell as a [`Value`] of the declared type. The column must have passed
/// [`check_column`] for `want`.
pub fn value_at(array: &dyn Array, want: ValueType, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match want {
        ValueType::Scalar(s) => scalar_at(array, s, row),
        ValueType::List(s) => {
            let items: ArrayRef = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().value(row),
                DataType::LargeList(_) => array.as_list::<i64>().value(row),
                _ => return Value::Null,
            };
            Value::List((0..items.len()).map(|i| scalar_at(&items, s, i)).collect())
        }
    }
}

/// Reads one join-key cell; `None` when null.
pub fn key_part_at(array: &dyn Array, want: ScalarType, row: usize) -> Option<KeyPart<'_>> {
    if array.is_null(row) {
        return None;
    }
    match want {
        ScalarType::String => str_at(array, row).map(KeyPart::Str),
        ScalarType::Bytes => bytes_at(array, row).map(KeyPart::Bytes),
        _ => int_at(array, row).map(KeyPart::Int),
    }
}

/// The Arrow type a declared type is written as (in training sets and pushed Parquet files).
pub fn arrow_type(dtype: ValueType) -> DataType {
    fn scalar(s: ScalarType) -> DataType {
        match s {
            ScalarType::Int32 => DataType::Int32,
            ScalarType::Int64 => DataType::Int64,
            ScalarType::Float32 => DataType::Float32,
            ScalarType::Float64 => DataType::Float64,
            ScalarType::String => DataType::Utf8,
            ScalarType::Bool => DataType::Boolean,
            ScalarType::Bytes => DataType::Binary,
            ScalarType::UnixTimestamp => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
        }
    }
    match dtype {
        ValueType::Scalar(s) => scalar(s),
        ValueType::List(s) => DataType::List(Arc::new(arrow::datatypes::Field::new(
            "item",
            scalar(s),
            true,
        ))),
    }
}

/// Builds an Arrow column of the declared type from values (nulls and mismatches become nulls;
/// callers check types before).
pub fn build_column<'a>(dtype: ValueType, values: impl Iterator<Item = &'a Value>) -> ArrayRef {
    macro_rules! prim {
        ($builder:ty, $pat:pat => $v:expr) => {{
            let mut b = <$builder>::new();
            for value in values {
                match value {
                    $pat => b.append_value($v),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    match dtype {
        ValueType::Scalar(ScalarType::Int32) => prim!(Int32Builder, Value::Int(i) => *i as i32),
        ValueType::Scalar(ScalarType::Int64) => prim!(Int64Builder, Value::Int(i) => *i),
        ValueType::Scalar(ScalarType::Float32) => prim!(Float32Builder, Value::Float32(f) => *f),
        ValueType::Scalar(ScalarType::Float64) => prim!(Float64Builder, Value::Float64(f) => *f),
        ValueType::Scalar(ScalarType::String) => prim!(StringBuilder, Value::String(s) => s),
        ValueType::Scalar(ScalarType::Bool) => prim!(BooleanBuilder, Value::Bool(b) => *b),
        ValueType::Scalar(ScalarType::Bytes) => prim!(BinaryBuilder, Value::Bytes(b) => b),
        ValueType::Scalar(ScalarType::UnixTimestamp) => {
            let mut b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
            for value in values {
                match value {
                    Value::Int(i) => b.append_value(*i),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        ValueType::List(s) => {
            let collected: Vec<&Value> = values.collect();
            let flat: Vec<&Value> = collected
                .iter()
                .flat_map(|v| match v {
                    Value::List(items) => items.iter().collect::<Vec<_>>(),
                    _ => Vec::new(),
                })
                .collect();
            let inner = build_column(ValueType::Scalar(s), flat.into_iter());
            let mut offsets = Vec::with_capacity(collected.len() + 1);
            let mut nulls = Vec::with_capacity(collected.len());
            offsets.push(0i32);
            for v in &collected {
                let len = match v {
                    Value::List(items) => items.len(),
                    _ => 0,
                };
                offsets.push(offsets.last().unwrap() + len as i32);
                nulls.push(matches!(v, Value::List(_)));
            }
            let field = Arc::new(arrow::datatypes::Field::new(
                "item",
                arrow_type(ValueType::Scalar(s)),
                true,
            ));
            Arc::new(arrow::array::ListArray::new(
                field,
                arrow::buffer::OffsetBuffer::new(offsets.into()),
                inner,
                Some(arrow::buffer::NullBuffer::from(nulls)),
            ))
        }
    }
}

/// Converts a column that passed [`check_column`] for `dtype` to the Arrow type the declared type
/// is written as ([`arrow_type`]), value for value as [`value_at`] reads it: integer widths widen,
/// string and binary layouts change, timestamps of any unit become microseconds (rounded down, as
/// everywhere in Quiver).
pub fn to_declared(array: &ArrayRef, dtype: ValueType) -> Result<ArrayRef, String> {
    let target = arrow_type(dtype);
    if array.data_type() == &target {
        return Ok(Arc::clone(array));
    }
    match dtype {
        ValueType::Scalar(ScalarType::UnixTimestamp) => {
            let mut b =
                TimestampMicrosecondBuilder::with_capacity(array.len()).with_timezone("UTC");
            for row in 0..array.len() {
                b.append_option(timestamp_at(array.as_ref(), row));
            }
            Ok(Arc::new(b.finish()))
        }
        ValueType::Scalar(_) => {
            arrow::compute::cast(array, &target).map_err(|e| format!("cannot convert: {e}"))
        }
        ValueType::List(_) => {
            let values: Vec<Value> = (0..array.len())
                .map(|row| value_at(array.as_ref(), dtype, row))
                .collect();
            Ok(build_column(dtype, values.iter()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int16Array, TimestampNanosecondArray};

    #[test]
    fn declared_conversion_widens_integers_and_floors_nanosecond_timestamps() {
        let ints: ArrayRef = Arc::new(Int16Array::from(vec![Some(-3), None]));
        let out = to_declared(&ints, ValueType::Scalar(ScalarType::Int64)).unwrap();
        assert_eq!(out.data_type(), &DataType::Int64);
        assert_eq!(
            value_at(out.as_ref(), ValueType::Scalar(ScalarType::Int64), 0),
            Value::Int(-3)
        );
        assert!(out.is_null(1));

        let ts: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![-1_500, 2_999]));
        let out = to_declared(&ts, ValueType::Scalar(ScalarType::UnixTimestamp)).unwrap();
        assert_eq!(timestamp_at(out.as_ref(), 0), Some(-2));
        assert_eq!(timestamp_at(out.as_ref(), 1), Some(2));
    }
}
