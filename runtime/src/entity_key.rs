//! Canonical, binary-safe encoding of an entity key (the values of a view's join keys, in order).
//!
//! Layout, per join key in declaration order: a tag byte, then
//! - `0x01` string: u32 big-endian length, then UTF-8 bytes;
//! - `0x02` integer (int32 and int64 alike): i64 big-endian;
//! - `0x03` bytes: u32 big-endian length, then the bytes.
//!
//! The same encoding is used by every online store, so a key written by `materialize` is found by
//! serving whatever the JSON or Parquet type width of the join key was.

use std::fmt;

/// An encoded entity key. Cheap to hash and compare; see the module docs for the layout.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey(Box<[u8]>);

/// One join-key value, borrowed, as it goes into an [`EntityKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart<'a> {
    /// A string join key.
    Str(&'a str),
    /// An integer join key (int32 or int64).
    Int(i64),
    /// A bytes join key.
    Bytes(&'a [u8]),
}

impl EntityKey {
    /// Encodes the given join-key values, in order.
    pub fn new<'a>(parts: impl IntoIterator<Item = KeyPart<'a>>) -> Self {
        let mut buf = Vec::with_capacity(16);
        for part in parts {
            Self::push_part(&mut buf, part);
        }
        EntityKey(buf.into_boxed_slice())
    }

    /// Appends one encoded part to a buffer; used to build keys without intermediate vectors.
    pub fn push_part(buf: &mut Vec<u8>, part: KeyPart<'_>) {
        match part {
            KeyPart::Str(s) => {
                buf.push(0x01);
                buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
                buf.extend_from_slice(s.as_bytes());
            }
            KeyPart::Int(i) => {
                buf.push(0x02);
                buf.extend_from_slice(&i.to_be_bytes());
            }
            KeyPart::Bytes(b) => {
                buf.push(0x03);
                buf.extend_from_slice(&(b.len() as u32).to_be_bytes());
                buf.extend_from_slice(b);
            }
        }
    }

    /// Wraps bytes produced by [`EntityKey::push_part`].
    pub fn from_encoded(bytes: Vec<u8>) -> Self {
        EntityKey(bytes.into_boxed_slice())
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Decodes the parts again (for display and debugging).
    pub fn parts(&self) -> Vec<KeyPart<'_>> {
        let mut out = Vec::new();
        let mut rest: &[u8] = &self.0;
        while let Some((&tag, tail)) = rest.split_first() {
            match tag {
                0x02 if tail.len() >= 8 => {
                    let (n, tail) = tail.split_at(8);
                    out.push(KeyPart::Int(i64::from_be_bytes(n.try_into().unwrap())));
                    rest = tail;
                }
                0x01 | 0x03 if tail.len() >= 4 => {
                    let (n, tail) = tail.split_at(4);
                    let len = u32::from_be_bytes(n.try_into().unwrap()) as usize;
                    if tail.len() < len {
                        break;
                    }
                    let (body, tail) = tail.split_at(len);
                    out.push(match std::str::from_utf8(body) {
                        Ok(s) if tag == 0x01 => KeyPart::Str(s),
                        _ => KeyPart::Bytes(body),
                    });
                    rest = tail;
                }
                _ => break,
            }
        }
        out
    }
}

impl fmt::Debug for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EntityKey").field(&self.parts()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keys_round_trip_through_parts() {
        let key = EntityKey::new([
            KeyPart::Str("u:1"),
            KeyPart::Int(-3),
            KeyPart::Bytes(&[0, 1]),
        ]);
        assert_eq!(
            key.parts(),
            vec![
                KeyPart::Str("u:1"),
                KeyPart::Int(-3),
                KeyPart::Bytes(&[0, 1])
            ]
        );
    }

    #[test]
    fn string_and_integer_keys_never_collide() {
        assert_ne!(
            EntityKey::new([KeyPart::Str("1")]),
            EntityKey::new([KeyPart::Int(1)])
        );
        assert_ne!(
            EntityKey::new([KeyPart::Str("ab"), KeyPart::Str("c")]),
            EntityKey::new([KeyPart::Str("a"), KeyPart::Str("bc")])
        );
    }
}
