//! The MessagePack framing of a call's rows, the same each way: an array with one element per
//! row, each row a map from field name (a string) to value.
//!
//! The host writes the input rows and reads the output rows with these functions, and the guest
//! SDK reads the input and writes the output with them, so both sides frame rows the same way.
//! The values inside a row are each side's own business (the host's feature values, the guest's
//! serde types); `docs/wasm-abi.md` lists how feature types map to MessagePack.
//!
//! Writes go to a `Vec<u8>` and cannot fail; reads advance a `&[u8]` past what they read.

use core::fmt;
use std::string::{String, ToString};
use std::vec::Vec;

/// Why a buffer does not have the row framing. Displays as a predicate ("is not a map: ...") for
/// the caller to put after what it was reading ("output row 3").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramingError {
    /// The buffer does not start with an array of rows.
    NotRows(String),
    /// A row is not a map.
    NotAMap(String),
    /// A map key is not a string.
    KeyNotAString(String),
    /// A map key runs past the end of the buffer.
    TruncatedKey,
    /// A map key is not UTF-8.
    KeyNotUtf8,
    /// This many bytes follow the last row.
    TrailingBytes(usize),
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingError::NotRows(e) => write!(f, "is not a MessagePack array of rows: {e}"),
            FramingError::NotAMap(e) => write!(f, "is not a map: {e}"),
            FramingError::KeyNotAString(e) => write!(f, "has a map key that is not a string: {e}"),
            FramingError::TruncatedKey => f.write_str("has a truncated map key"),
            FramingError::KeyNotUtf8 => f.write_str("has a map key that is not UTF-8"),
            FramingError::TrailingBytes(1) => f.write_str("has 1 byte after the last row"),
            FramingError::TrailingBytes(n) => write!(f, "has {n} bytes after the last row"),
        }
    }
}

impl core::error::Error for FramingError {}

/// Starts a batch of `rows` rows.
pub fn write_rows_len(buf: &mut Vec<u8>, rows: u32) {
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_array_len(buf, rows);
}

/// Starts a row of `fields` fields, each written as [`write_field_name`] and then its value.
pub fn write_row_len(buf: &mut Vec<u8>, fields: u32) {
    let _ = rmp::encode::write_map_len(buf, fields);
}

/// Writes a field name (a map key).
pub fn write_field_name(buf: &mut Vec<u8>, name: &str) {
    let _ = rmp::encode::write_str(buf, name);
}

/// Reads the number of rows of a batch.
pub fn read_rows_len(rd: &mut &[u8]) -> Result<u32, FramingError> {
    rmp::decode::read_array_len(rd).map_err(|e| FramingError::NotRows(e.to_string()))
}

/// Reads the number of fields of a row.
pub fn read_row_len(rd: &mut &[u8]) -> Result<u32, FramingError> {
    rmp::decode::read_map_len(rd).map_err(|e| FramingError::NotAMap(e.to_string()))
}

/// Reads a field name (a map key), borrowed from the buffer.
pub fn read_field_name<'a>(rd: &mut &'a [u8]) -> Result<&'a str, FramingError> {
    let len = rmp::decode::read_str_len(rd)
        .map_err(|e| FramingError::KeyNotAString(e.to_string()))? as usize;
    if rd.len() < len {
        return Err(FramingError::TruncatedKey);
    }
    let (key, rest) = rd.split_at(len);
    *rd = rest;
    core::str::from_utf8(key).map_err(|_| FramingError::KeyNotUtf8)
}

/// Checks that nothing follows the last row.
pub fn expect_end(rd: &[u8]) -> Result<(), FramingError> {
    if rd.is_empty() {
        Ok(())
    } else {
        Err(FramingError::TrailingBytes(rd.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_an_array_of_maps_keyed_by_field_name() {
        let mut buf = Vec::new();
        write_rows_len(&mut buf, 1);
        write_row_len(&mut buf, 2);
        write_field_name(&mut buf, "a");
        rmp::encode::write_nil(&mut buf).unwrap();
        write_field_name(&mut buf, "b");
        rmp::encode::write_bool(&mut buf, true).unwrap();
        // fixarray(1), fixmap(2), fixstr "a", nil, fixstr "b", true
        assert_eq!(buf, [0x91, 0x82, 0xa1, b'a', 0xc0, 0xa1, b'b', 0xc3]);

        let mut rd = &buf[..];
        assert_eq!(read_rows_len(&mut rd), Ok(1));
        assert_eq!(read_row_len(&mut rd), Ok(2));
        assert_eq!(read_field_name(&mut rd), Ok("a"));
        rmp::decode::read_nil(&mut rd).unwrap();
        assert_eq!(read_field_name(&mut rd), Ok("b"));
        assert!(rmp::decode::read_bool(&mut rd).unwrap());
        assert_eq!(expect_end(rd), Ok(()));
    }

    #[test]
    fn malformed_framing_is_reported_as_a_predicate() {
        let err = read_rows_len(&mut &[0xc3][..]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("is not a MessagePack array of rows"),
            "{err}"
        );
        assert!(matches!(
            read_row_len(&mut &[0x91][..]),
            Err(FramingError::NotAMap(_))
        ));
        assert!(matches!(
            read_field_name(&mut &[0x01][..]),
            Err(FramingError::KeyNotAString(_))
        ));
        assert_eq!(
            read_field_name(&mut &[0xa3, b'a'][..]),
            Err(FramingError::TruncatedKey)
        );
        assert_eq!(
            read_field_name(&mut &[0xa1, 0xff][..]),
            Err(FramingError::KeyNotUtf8)
        );
        assert_eq!(
            expect_end(&[0xc0, 0xc0]).unwrap_err().to_string(),
            "has 2 bytes after the last row"
        );
    }
}
