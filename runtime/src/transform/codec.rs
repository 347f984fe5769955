//! A call's rows in MessagePack: input rows out, output rows back (`docs/wasm-abi.md`). The
//! framing (an array of maps each way) is `quiver_abi::rows`, shared with the guest SDK; the
//! values and the checks against the view's schema are the host's.

use quiver_abi::rows;
use serde::Deserialize;

use super::TransformError;
use crate::registry::Field;
use crate::types::Value;

/// Encodes rows as a MessagePack array of maps (column name → value), straight from the
/// columns. The caller has checked that the counts fit in `u32`. Writes to a `Vec` cannot fail,
/// hence the ignored results.
pub(crate) fn encode_rows(names: &[&str], batch: &[Vec<Value>]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16 + batch.len() * names.len() * 16);
    rows::write_rows_len(&mut buf, batch.len() as u32);
    for row in batch {
        rows::write_row_len(&mut buf, names.len() as u32);
        for (name, value) in names.iter().zip(row) {
            rows::write_field_name(&mut buf, name);
            write_value(&mut buf, value);
        }
    }
    buf
}

fn write_value(buf: &mut Vec<u8>, value: &Value) {
    let _ = match value {
        Value::Null => rmp::encode::write_nil(buf).map_err(drop),
        Value::Bool(b) => rmp::encode::write_bool(buf, *b).map_err(drop),
        Value::Int(i) => rmp::encode::write_sint(buf, *i).map(drop).map_err(drop),
        Value::Float32(f) => rmp::encode::write_f32(buf, *f).map_err(drop),
        Value::Float64(f) => rmp::encode::write_f64(buf, *f).map_err(drop),
        Value::String(s) => rmp::encode::write_str(buf, s).map_err(drop),
        Value::Bytes(b) => rmp::encode::write_bin(buf, b).map_err(drop),
        Value::List(items) => {
            let _ = rmp::encode::write_array_len(buf, items.len() as u32);
            for item in items {
                write_value(buf, item);
            }
            Ok(())
        }
    };
}

/// Decodes the output: an array of `expected_rows` maps whose keys are exactly the names of
/// `fields`, each value admitted by the field's type. Returns the values in field order.
pub(crate) fn decode_rows(
    module: &str,
    bytes: &[u8],
    expected_rows: usize,
    fields: &[Field],
) -> Result<Vec<Vec<Value>>, TransformError> {
    let bad = |message: String| TransformError::BadOutput {
        module: module.to_owned(),
        message,
    };
    let schema = |field: &str, message: String| TransformError::SchemaMismatch {
        module: module.to_owned(),
        field: field.to_owned(),
        message,
    };

    let mut rd = bytes;
    let n = rows::read_rows_len(&mut rd).map_err(|e| bad(format!("output {e}")))?;
    if n as usize != expected_rows {
        return Err(bad(format!(
            "returned {n} rows for {expected_rows} input rows"
        )));
    }
    let mut out = Vec::with_capacity(expected_rows);
    for r in 0..expected_rows {
        let len = rows::read_row_len(&mut rd).map_err(|e| bad(format!("output row {r} {e}")))?;
        let mut slots: Vec<Option<Value>> = vec![None; fields.len()];
        for _ in 0..len {
            let key =
                rows::read_field_name(&mut rd).map_err(|e| bad(format!("output row {r} {e}")))?;
            let Some(index) = fields.iter().position(|f| f.name.as_str() == key) else {
                return Err(schema(
                    key,
                    format!("output row {r} has a field that is not declared in the view's schema"),
                ));
            };
            let value = Value::deserialize(&mut rmp_serde::Deserializer::new(&mut rd));
            let value = match value {
                Ok(v) => v,
                // A well-formed value of a kind features cannot hold (a map, a huge integer).
                Err(rmp_serde::decode::Error::Syntax(m)) => {
                    return Err(schema(key, format!("output row {r}: {m}")));
                }
                Err(e) => return Err(bad(format!("output row {r}, field {key}: {e}"))),
            };
            let field = &fields[index];
            if !field.dtype.admits(&value) {
                return Err(schema(
                    key,
                    format!(
                        "output row {r}: expected {}, got {}",
                        field.dtype,
                        describe(&value)
                    ),
                ));
            }
            if slots[index].replace(value).is_some() {
                return Err(schema(key, format!("output row {r} has it twice")));
            }
        }
        let mut row = Vec::with_capacity(fields.len());
        for (slot, field) in slots.into_iter().zip(fields) {
            match slot {
                Some(v) => row.push(v),
                None => {
                    return Err(schema(
                        field.name.as_str(),
                        format!("missing from output row {r} (return null for a missing value)"),
                    ));
                }
            }
        }
        out.push(row);
    }
    rows::expect_end(rd).map_err(|e| bad(format!("output {e}")))?;
    Ok(out)
}

/// A short description of a value's MessagePack kind, for type errors.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("bool {b}"),
        Value::Int(i) => format!("integer {i}"),
        Value::Float32(f) => format!("float32 {f}"),
        Value::Float64(f) => format!("float64 {f}"),
        Value::String(_) => "a string".to_owned(),
        Value::Bytes(_) => "bytes".to_owned(),
        Value::List(_) => "a list".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Name;
    use crate::types::{ScalarType, ValueType};

    fn field(name: &str, t: ScalarType) -> Field {
        Field {
            name: Name::new(name).unwrap(),
            dtype: ValueType::Scalar(t),
        }
    }

    fn encode_output(batch: &[&[(&str, Value)]]) -> Vec<u8> {
        let mut buf = Vec::new();
        rows::write_rows_len(&mut buf, batch.len() as u32);
        for row in batch {
            rows::write_row_len(&mut buf, row.len() as u32);
            for (k, v) in row.iter() {
                rows::write_field_name(&mut buf, k);
                write_value(&mut buf, v);
            }
        }
        buf
    }

    #[test]
    fn input_rows_are_an_array_of_maps_keyed_by_column_name() {
        let bytes = encode_rows(
            &["a", "b"],
            &[
                vec![Value::Float32(1.5), Value::Null],
                vec![Value::Int(3), Value::String("x".into())],
            ],
        );
        let mut rd = &bytes[..];
        assert_eq!(rows::read_rows_len(&mut rd), Ok(2));
        assert_eq!(rows::read_row_len(&mut rd), Ok(2));
        assert_eq!(rows::read_field_name(&mut rd), Ok("a"));
        assert_eq!(rmp::decode::read_f32(&mut rd).unwrap(), 1.5);
        assert_eq!(rows::read_field_name(&mut rd), Ok("b"));
        rmp::decode::read_nil(&mut rd).unwrap();
    }

    #[test]
    fn output_values_come_back_in_field_order_whatever_the_map_order() {
        let fields = [
            field("x", ScalarType::Float64),
            field("y", ScalarType::Bool),
        ];
        let bytes = encode_output(&[&[("y", Value::Bool(true)), ("x", Value::Float64(0.5))]]);
        let decoded = decode_rows("m", &bytes, 1, &fields).unwrap();
        assert_eq!(decoded, vec![vec![Value::Float64(0.5), Value::Bool(true)]]);
    }

    #[test]
    fn nulls_are_admitted_for_every_type() {
        let fields = [field("x", ScalarType::Float64)];
        let bytes = encode_output(&[&[("x", Value::Null)]]);
        assert_eq!(
            decode_rows("m", &bytes, 1, &fields).unwrap(),
            vec![vec![Value::Null]]
        );
    }

    #[test]
    fn an_integer_for_a_float_field_is_a_schema_mismatch_naming_the_field() {
        let fields = [field("x", ScalarType::Float64)];
        let bytes = encode_output(&[&[("x", Value::Int(3))]]);
        match decode_rows("m", &bytes, 1, &fields) {
            Err(TransformError::SchemaMismatch { field, message, .. }) => {
                assert_eq!(field, "x");
                assert!(
                    message.contains("expected float64, got integer 3"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_float64_for_a_float32_field_is_a_schema_mismatch() {
        let fields = [field("x", ScalarType::Float32)];
        let bytes = encode_output(&[&[("x", Value::Float64(1.0))]]);
        assert!(matches!(
            decode_rows("m", &bytes, 1, &fields),
            Err(TransformError::SchemaMismatch { .. })
        ));
    }

    #[test]
    fn integers_are_admitted_for_integer_and_timestamp_fields() {
        let fields = [
            field("a", ScalarType::Int32),
            field("b", ScalarType::Int64),
            field("c", ScalarType::UnixTimestamp),
        ];
        let bytes = encode_output(&[&[
            ("a", Value::Int(1)),
            ("b", Value::Int(-2)),
            ("c", Value::Int(1_700_000_000_000_000)),
        ]]);
        assert!(decode_rows("m", &bytes, 1, &fields).is_ok());
    }

    #[test]
    fn missing_extra_and_duplicate_fields_are_schema_mismatches() {
        let fields = [field("x", ScalarType::Int64), field("y", ScalarType::Int64)];
        let cases: [(&[(&str, Value)], &str); 3] = [
            (&[("x", Value::Int(1))], "y"),
            (
                &[
                    ("x", Value::Int(1)),
                    ("y", Value::Int(1)),
                    ("z", Value::Int(1)),
                ],
                "z",
            ),
            (&[("x", Value::Int(1)), ("x", Value::Int(1))], "x"),
        ];
        for (row, expected) in cases {
            match decode_rows("m", &encode_output(&[row]), 1, &fields) {
                Err(TransformError::SchemaMismatch { field, .. }) => assert_eq!(field, expected),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_wrong_row_count_garbage_and_trailing_bytes_are_bad_output() {
        let fields = [field("x", ScalarType::Int64)];
        let one = encode_output(&[&[("x", Value::Int(1))]]);
        let mut trailing = one.clone();
        trailing.push(0xc0);
        for (bytes, rows) in [
            (&one[..], 2),
            (&[0xde, 0xad, 0xbe, 0xef][..], 1),
            (&one[..one.len() - 1], 1),
            (&trailing[..], 1),
            (&[][..], 1),
        ] {
            assert!(
                matches!(
                    decode_rows("m", bytes, rows, &fields),
                    Err(TransformError::BadOutput { .. })
                ),
                "{bytes:?}"
            );
        }
    }
}
