//! The record encoding shared by every online store: a MessagePack array
//! `[event_ts, created_ts, schema_fingerprint, [values...]]` (see docs/redis-layout.md).
//! Redis' Lua scripts read the first two elements to apply newer-wins on the server.

use super::{FeatureRow, StoreError};
use crate::types::{EpochMicros, Value};

/// Encodes a row as a MessagePack array.
pub fn encode_row(row: &FeatureRow) -> Vec<u8> {
    let mut buf = Vec::with_capacity(32 + row.values.len() * 9);
    let record = (
        row.event_ts,
        row.created_ts,
        row.schema_fingerprint,
        &row.values,
    );
    rmp_serde::encode::write(&mut buf, &record).expect("encoding to a Vec cannot fail");
    buf
}

/// Decodes a row written by [`encode_row`].
pub fn decode_row(bytes: &[u8]) -> Result<FeatureRow, StoreError> {
    let (event_ts, created_ts, schema_fingerprint, values): (
        EpochMicros,
        EpochMicros,
        u32,
        Vec<Value>,
    ) = rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(FeatureRow {
        event_ts,
        created_ts,
        schema_fingerprint,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_bit_for_bit() {
        let row = FeatureRow {
            event_ts: 1_700_000_000_000_000,
            created_ts: -1,
            schema_fingerprint: 0xdead_beef,
            values: vec![Value::Float32(1.5), Value::Null, Value::String("x".into())],
        };
        assert_eq!(decode_row(&encode_row(&row)).unwrap(), row);
    }

    #[test]
    fn garbage_is_a_corrupt_record_error() {
        assert!(matches!(
            decode_row(b"\xc1nope"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
