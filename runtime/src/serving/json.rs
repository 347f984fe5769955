//! Converting between JSON and feature values at the HTTP boundary.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat};
use serde_json::Value as Json;

use crate::entity_key::KeyPart;
use crate::types::{EpochMicros, ScalarType, Value, ValueType};

/// The JSON type name of a value, for error messages.
pub fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Reads a join-key value of type `dtype` from JSON; `Err` describes the mismatch.
pub fn key_part<'a>(
    v: &'a Json,
    dtype: ScalarType,
    bytes_buf: &'a mut Vec<u8>,
) -> Result<KeyPart<'a>, String> {
    match (dtype, v) {
        (ScalarType::String, Json::String(s)) => Ok(KeyPart::Str(s)),
        (ScalarType::Int64 | ScalarType::Int32, Json::Number(n)) => {
            integer_from_json(n, dtype).map(KeyPart::Int)
        }
        (ScalarType::Bytes, Json::String(s)) => {
            *bytes_buf = BASE64
                .decode(s)
                .map_err(|e| format!("expected base64-encoded bytes: {e}"))?;
            Ok(KeyPart::Bytes(bytes_buf))
        }
        (want, got) => Err(format!("expected {}, got {}", want.name(), json_kind(got))),
    }
}

/// Reads a request-time value of the declared type from JSON (for on-demand views).
pub fn value_from_json(v: &Json, dtype: ValueType) -> Result<Value, String> {
    match dtype {
        ValueType::Scalar(s) => scalar_from_json(v, s),
        ValueType::List(s) => match v {
            Json::Null => Ok(Value::Null),
            Json::Array(items) => items
                .iter()
                .map(|i| scalar_from_json(i, s))
                .collect::<Result<_, _>>()
                .map(Value::List),
            other => Err(format!(
                "expected a list of {}, got {}",
                s.name(),
                json_kind(other)
            )),
        },
    }
}

/// An integer of type `int64` or `int32`: a fraction is a type mismatch, an integer beyond the
/// type's range is out of range.
fn integer_from_json(n: &serde_json::Number, dtype: ScalarType) -> Result<i64, String> {
    let out_of_range = || format!("{n} is out of range for {}", dtype.name());
    match n.as_i64() {
        Some(i) if dtype == ScalarType::Int32 && i32::try_from(i).is_err() => Err(out_of_range()),
        Some(i) => Ok(i),
        None if n.is_u64() => Err(out_of_range()),
        None => Err(format!("expected {}, got a number", dtype.name())),
    }
}

/// Reads a scalar. The one rule for numbers: a value must be finite and within its declared
/// type's range (a float32 beyond ±f32::MAX, an integer beyond int64/int32) or it is rejected;
/// nothing is silently saturated, rounded to infinity or stored as null.
fn scalar_from_json(v: &Json, s: ScalarType) -> Result<Value, String> {
    let mismatch = || format!("expected {}, got {}", s.name(), json_kind(v));
    Ok(match (s, v) {
        (_, Json::Null) => Value::Null,
        (ScalarType::Int32 | ScalarType::Int64, Json::Number(n)) => {
            Value::Int(integer_from_json(n, s)?)
        }
        (ScalarType::Float32, Json::Number(n)) => {
            let f = finite(n)?;
            if f.abs() > f64::from(f32::MAX) {
                return Err(format!("{n} is out of range for float32"));
            }
            Value::Float32(f as f32)
        }
        (ScalarType::Float64, Json::Number(n)) => Value::Float64(finite(n)?),
        (ScalarType::String, Json::String(x)) => Value::String(x.clone()),
        (ScalarType::Bool, Json::Bool(b)) => Value::Bool(*b),
        (ScalarType::Bytes, Json::String(x)) => Value::Bytes(
            BASE64
                .decode(x)
                .map_err(|e| format!("expected base64-encoded bytes: {e}"))?,
        ),
        (ScalarType::UnixTimestamp, Json::String(x)) => Value::Int(
            DateTime::parse_from_rfc3339(x)
                .map_err(|e| format!("expected an RFC 3339 timestamp: {e}"))?
                .timestamp_micros(),
        ),
        (ScalarType::UnixTimestamp, Json::Number(n)) => Value::Int(epoch_seconds_to_micros(n)?),
        _ => return Err(mismatch()),
    })
}

fn finite(n: &serde_json::Number) -> Result<f64, String> {
    n.as_f64()
        .filter(|f| f.is_finite())
        .ok_or_else(|| format!("{n} is not a finite number"))
}

/// Epoch seconds (an integer or a fraction) as microseconds, refusing what does not fit a
/// timestamp (rather than saturating it into a far-future one).
pub fn epoch_seconds_to_micros(n: &serde_json::Number) -> Result<EpochMicros, String> {
    let out_of_range = || format!("{n} epoch seconds is out of range for a timestamp");
    let micros = if let Some(i) = n.as_i64() {
        i.checked_mul(1_000_000).ok_or_else(out_of_range)?
    } else if n.is_u64() {
        return Err(out_of_range());
    } else {
        let m = (finite(n)? * 1e6).round();
        // 2^63 is exactly representable and i64::MAX is not: the upper bound is exclusive.
        if !(-(2f64.powi(63))..2f64.powi(63)).contains(&m) {
            return Err(out_of_range());
        }
        m as i64
    };
    // Every stored timestamp must also be renderable (chrono's years ±262,143).
    DateTime::from_timestamp_micros(micros)
        .map(|_| micros)
        .ok_or_else(out_of_range)
}

/// Formats epoch microseconds as RFC 3339 UTC (`2026-11-22T07:00:00Z`, fractions only when present).
pub fn format_timestamp(micros: EpochMicros) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// Appends epoch microseconds as a JSON string in exactly the form of [`format_timestamp`], without
/// allocating: responses carry one timestamp per cell, so this runs hundreds of times a request.
pub fn write_timestamp(out: &mut Vec<u8>, micros: EpochMicros) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        // Outside four-digit years chrono's rendering (signs, wider years) is the reference.
        return write_str(out, &format_timestamp(micros));
    }
    // `"YYYY-MM-DDTHH:MM:SS.ffffffZ"` built on the stack, appended in one copy.
    let mut buf = *b"\"0000-00-00T00:00:00.000000Z\"";
    let two = |buf: &mut [u8; 29], at: usize, v: u32| {
        buf[at] = b'0' + (v / 10) as u8;
        buf[at + 1] = b'0' + (v % 10) as u8;
    };
    let y = year as u32;
    two(&mut buf, 1, y / 100);
    two(&mut buf, 3, y % 100);
    two(&mut buf, 6, month);
    two(&mut buf, 9, day);
    two(&mut buf, 12, day_secs / 3600);
    two(&mut buf, 15, day_secs / 60 % 60);
    two(&mut buf, 18, day_secs % 60);
    // chrono's `SecondsFormat::AutoSi`: no fraction, milliseconds or microseconds, whichever is
    // exact.
    let len = if frac == 0 {
        20
    } else {
        let (mut value, digits) = if frac.is_multiple_of(1000) {
            (frac / 1000, 3)
        } else {
            (frac, 6)
        };
        for i in (21..21 + digits).rev() {
            buf[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        21 + digits
    };
    buf[len] = b'Z';
    buf[len + 1] = b'"';
    out.extend_from_slice(&buf[..len + 2]);
}

/// (year, month, day) of a day count since 1970-01-01 in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn write_non_finite(out: &mut Vec<u8>, f: f64) {
    out.extend_from_slice(if f.is_nan() {
        b"\"NaN\""
    } else if f > 0.0 {
        b"\"Infinity\""
    } else {
        b"\"-Infinity\""
    });
}

/// Appends a value as JSON, rendered by its declared type: floats that JSON numbers cannot hold
/// as the strings of protobuf's JSON mapping (`"NaN"`, `"Infinity"`, `"-Infinity"`, as Feast's
/// server answers them; never a null, which would read as a missing value), bytes as base64,
/// timestamps as RFC 3339.
pub fn write_value(out: &mut Vec<u8>, value: &Value, dtype: ValueType) {
    let scalar = match dtype {
        ValueType::Scalar(s) | ValueType::List(s) => s,
    };
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) if scalar == ScalarType::UnixTimestamp => write_timestamp(out, *i),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Float32(f) if f.is_finite() => {
            out.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes())
        }
        Value::Float64(f) if f.is_finite() => {
            out.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes())
        }
        Value::Float32(f) => write_non_finite(out, f64::from(*f)),
        Value::Float64(f) => write_non_finite(out, *f),
        Value::String(s) => write_str(out, s),
        Value::Bytes(b) => write_str(out, &BASE64.encode(b)),
        Value::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, ValueType::Scalar(scalar));
            }
            out.push(b']');
        }
    }
}

/// Appends a JSON string literal, escaped.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(v: Value, t: ValueType) -> String {
        let mut out = Vec::new();
        write_value(&mut out, &v, t);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn renders_values_by_declared_type() {
        use ScalarType::*;
        assert_eq!(
            render(Value::Float32(0.1), ValueType::Scalar(Float32)),
            "0.1"
        );
        assert_eq!(
            render(Value::Float64(f64::NAN), ValueType::Scalar(Float64)),
            "\"NaN\""
        );
        assert_eq!(
            render(Value::Int(0), ValueType::Scalar(UnixTimestamp)),
            "\"1970-01-01T00:00:00Z\""
        );
        assert_eq!(
            render(Value::Bytes(vec![1, 2]), ValueType::Scalar(Bytes)),
            "\"AQI=\""
        );
        assert_eq!(
            render(
                Value::List(vec![Value::String("a\"b".into())]),
                ValueType::List(String)
            ),
            "[\"a\\\"b\"]"
        );
    }

    #[test]
    fn timestamps_are_written_exactly_as_chrono_formats_them() {
        let mut values = vec![
            0,
            -1,
            1,
            999,
            1000,
            1_000_000,
            1_767_225_600_000_000,
            1_767_225_600_123_000,
            1_767_225_600_123_456,
            951_782_400_000_000,     // 2000-02-29
            -62_135_596_800_000_000, // 0001-01-01
            -62_167_219_200_000_000, // 0000-01-01
            -62_167_219_200_000_001,
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            253_402_300_800_000_000, // 10000-01-01
            i64::MAX,
            i64::MIN,
        ];
        // A deterministic spread over and beyond the four-digit years.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push((x as i64) % 300_000_000_000_000_000);
            values.push(((x >> 20) as i64 % 4_000_000_000) * 1_000_000 + (x % 3) as i64 * 1000);
        }
        for v in values {
            let mut out = Vec::new();
            write_timestamp(&mut out, v);
            let mut expected = Vec::new();
            write_str(&mut expected, &format_timestamp(v));
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(expected).unwrap(),
                "{v}"
            );
        }
    }

    #[test]
    fn an_int64_beyond_its_range_is_reported_as_out_of_range() {
        let big: Json = serde_json::from_str("9223372036854775808").unwrap();
        let t = ValueType::Scalar(ScalarType::Int64);
        assert_eq!(
            value_from_json(&big, t).unwrap_err(),
            "9223372036854775808 is out of range for int64"
        );
        let mut buf = Vec::new();
        assert_eq!(
            key_part(&big, ScalarType::Int64, &mut buf).unwrap_err(),
            "9223372036854775808 is out of range for int64"
        );
        assert_eq!(
            value_from_json(&serde_json::json!(1.5), t).unwrap_err(),
            "expected int64, got a number"
        );
    }

    #[test]
    fn an_int32_beyond_its_range_is_reported_as_out_of_range() {
        let t = ValueType::Scalar(ScalarType::Int32);
        assert_eq!(
            value_from_json(&serde_json::json!(2_147_483_648_i64), t).unwrap_err(),
            "2147483648 is out of range for int32"
        );
        assert!(value_from_json(&serde_json::json!(-2_147_483_648_i64), t).is_ok());
    }

    #[test]
    fn a_float32_beyond_its_range_is_rejected_not_stored_as_infinity() {
        let t = ValueType::Scalar(ScalarType::Float32);
        assert_eq!(
            value_from_json(&serde_json::json!(1e39), t).unwrap_err(),
            "1e+39 is out of range for float32"
        );
        assert_eq!(
            value_from_json(
                &serde_json::json!([1.0, -1e39]),
                ValueType::List(ScalarType::Float32)
            )
            .unwrap_err(),
            "-1e+39 is out of range for float32"
        );
        assert!(value_from_json(&serde_json::json!(f32::MAX), t).is_ok());
    }

    #[test]
    fn epoch_seconds_that_do_not_fit_a_timestamp_are_rejected_not_saturated() {
        for text in [
            "1e15",
            "9223372036854775807",
            "18446744073709551615",
            "-1e300",
        ] {
            let n: serde_json::Number = serde_json::from_str(text).unwrap();
            assert!(epoch_seconds_to_micros(&n).is_err(), "{text}");
        }
        let n: serde_json::Number = serde_json::from_str("1.5").unwrap();
        assert_eq!(epoch_seconds_to_micros(&n), Ok(1_500_000));
    }

    #[test]
    fn join_keys_of_the_wrong_type_are_described() {
        let mut buf = Vec::new();
        let err = key_part(&serde_json::json!(5), ScalarType::String, &mut buf).unwrap_err();
        assert_eq!(err, "expected string, got an integer");
    }
}

#[cfg(test)]
mod non_finite_tests {
    use super::write_value;
    use crate::types::{ScalarType, Value, ValueType};

    #[test]
    fn non_finite_floats_are_rendered_as_protobuf_json_strings_not_null() {
        let render = |v: Value| {
            let mut out = Vec::new();
            write_value(&mut out, &v, ValueType::Scalar(ScalarType::Float64));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(render(Value::Float64(f64::NAN)), "\"NaN\"");
        assert_eq!(render(Value::Float32(f32::INFINITY)), "\"Infinity\"");
        assert_eq!(render(Value::Float64(f64::NEG_INFINITY)), "\"-Infinity\"");
        assert_eq!(render(Value::Float64(0.5)), "0.5");
    }
}
