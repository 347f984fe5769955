//! Feast's Redis keys and hash fields: the entity key serialized as Feast's
//! `serialize_entity_key` does with `entity_key_serialization_version: 3`, followed by the project
//! name, and field names that are the murmur3 hash of `<view>:<feature>`.

use std::sync::Arc;

use crate::entity_key::{EntityKey, KeyPart};
use crate::store::catalog::KeyColumn;
use crate::types::ScalarType;

/// `feast.types.ValueType` tags used in serialized entity keys.
mod tag {
    pub const BYTES: u32 = 1;
    pub const STRING: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const UNIX_TIMESTAMP: u32 = 8;
}

/// How one view's entity keys become Feast's Redis keys, prepared once: the join keys sorted by
/// name (as Feast sorts them) with their declared types, and the key's constant start (count and
/// names).
#[derive(Debug, Clone)]
pub struct KeyEncoder {
    /// The serialized count and join-key names.
    prefix: Vec<u8>,
    /// For each join key in Feast's (sorted) order: its position among the entity key's parts
    /// (Quiver's order) and its declared type.
    order: Vec<(usize, ScalarType)>,
    /// The join key names, in Quiver's order, for messages.
    names: Arc<[Arc<str>]>,
}

impl KeyEncoder {
    /// The encoder of a view with these join keys (in Quiver's entity-key order).
    pub fn new(join_keys: &[KeyColumn]) -> KeyEncoder {
        let mut sorted: Vec<(usize, &KeyColumn)> = join_keys.iter().enumerate().collect();
        sorted.sort_by(|a, b| a.1.name.as_bytes().cmp(b.1.name.as_bytes()));
        let mut prefix = Vec::new();
        prefix.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
        for (_, key) in &sorted {
            prefix.extend_from_slice(&tag::STRING.to_le_bytes());
            prefix.extend_from_slice(&(key.name.len() as u32).to_le_bytes());
            prefix.extend_from_slice(key.name.as_bytes());
        }
        KeyEncoder {
            prefix,
            order: sorted.iter().map(|(i, k)| (*i, k.dtype)).collect(),
            names: join_keys.iter().map(|k| k.name.clone()).collect(),
        }
    }

    /// Appends the Redis key of `entity` in `project` to `buf`: the serialized entity key, then
    /// the project name. Fails when the entity key does not have one part per join key.
    pub fn push_key(&self, buf: &mut Vec<u8>, entity: &EntityKey, project: &str) -> Result<(), String> {
        let parts = entity.parts();
        if parts.len() != self.order.len() {
            return Err(format!(
                "entity key {entity:?} has {} parts, the view's join keys are {:?}",
                parts.len(),
                self.names
            ));
        }
        buf.extend_from_slice(&self.prefix);
        for &(i, dtype) in &self.order {
            let (value_tag, bytes): (u32, std::borrow::Cow<'_, [u8]>) = match (parts[i], dtype) {
                (KeyPart::Str(s), _) => (tag::STRING, s.as_bytes().into()),
                (KeyPart::Bytes(b), _) => (tag::BYTES, b.into()),
                (KeyPart::Int(n), ScalarType::Int32) => {
                    let n = i32::try_from(n).map_err(|_| {
                        format!("join key {} is int32, {n} does not fit", self.names[i])
                    })?;
                    (tag::INT32, n.to_le_bytes().to_vec().into())
                }
                (KeyPart::Int(n), ScalarType::UnixTimestamp) => {
                    (tag::UNIX_TIMESTAMP, n.to_le_bytes().to_vec().into())
                }
                (KeyPart::Int(n), _) => (tag::INT64, n.to_le_bytes().to_vec().into()),
            };
            buf.extend_from_slice(&value_tag.to_le_bytes());
            buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            buf.extend_from_slice(&bytes);
        }
        buf.extend_from_slice(project.as_bytes());
        Ok(())
    }
}

/// The hash field of a feature: murmur3_32 (seed 0) of `<view>:<feature>`, little-endian, as
/// Feast's `_mmh3` computes it.
pub fn feature_field(view: &str, feature: &str) -> [u8; 4] {
    murmur3_32(format!("{view}:{feature}").as_bytes(), 0).to_le_bytes()
}

/// The hash field holding a view's event timestamp (a serialized `google.protobuf.Timestamp`).
pub fn timestamp_field(view: &str) -> Vec<u8> {
    format!("_ts:{view}").into_bytes()
}

/// MurmurHash3, x86 32-bit.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes(block.try_into().expect("4 bytes"));
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k: u32 = 0;
        for (i, &b) in tail.iter().enumerate() {
            k ^= u32::from(b) << (8 * i);
        }
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn column(name: &str, dtype: ScalarType) -> KeyColumn {
        KeyColumn {
            name: Arc::from(name),
            dtype,
        }
    }

    /// `feast.infra.online_stores.helpers._mmh3(s).hex()` in Feast 0.67.
    #[test]
    fn feature_fields_are_feasts_murmur3_hashes() {
        assert_eq!(hex(&feature_field("driver_hourly_stats", "conv_rate")), "6160e3da");
        assert_eq!(hex(&feature_field("customer_profile", "recent_scores")), "e7e0ab67");
        assert_eq!(hex(&feature_field("v", "f0")), "df710080");
        assert_eq!(murmur3_32(b"", 0), 0);
    }

    /// `_redis_key("driver_ranking", EntityKey(join_keys=["driver_id"],
    /// entity_values=[Value(int64_val=1001)]), 3).hex()` in Feast 0.67.
    #[test]
    fn an_int64_key_is_feasts_redis_key() {
        let encoder = KeyEncoder::new(&[column("driver_id", ScalarType::Int64)]);
        let mut buf = Vec::new();
        encoder
            .push_key(&mut buf, &EntityKey::new([KeyPart::Int(1001)]), "driver_ranking")
            .unwrap();
        assert_eq!(
            hex(&buf),
            "0100000002000000090000006472697665725f69640400000008000000e903000000000000\
             6472697665725f72616e6b696e67"
        );
    }

    /// `serialize_entity_key(EntityKey(join_keys=["driver_id", "customer_id"],
    /// entity_values=[Value(int32_val=-7), Value(string_val="c1")]), 3).hex()`: join keys sorted
    /// by name, int32 kept as 4 bytes.
    #[test]
    fn composite_keys_are_sorted_by_name_and_int32_keeps_its_width() {
        let encoder = KeyEncoder::new(&[
            column("driver_id", ScalarType::Int32),
            column("customer_id", ScalarType::String),
        ]);
        let mut buf = Vec::new();
        encoder
            .push_key(&mut buf, &EntityKey::new([KeyPart::Int(-7), KeyPart::Str("c1")]), "")
            .unwrap();
        assert_eq!(
            hex(&buf),
            "02000000020000000b000000637573746f6d65725f696402000000090000006472697665725f6964\
             020000000200000063310300000004000000f9ffffff"
        );
    }

    /// `serialize_entity_key(EntityKey(join_keys=["k"], entity_values=[Value(bytes_val=b"\0\xff")]), 3)`.
    #[test]
    fn a_bytes_key_is_feasts_key() {
        let encoder = KeyEncoder::new(&[column("k", ScalarType::Bytes)]);
        let mut buf = Vec::new();
        encoder
            .push_key(&mut buf, &EntityKey::new([KeyPart::Bytes(&[0, 255])]), "")
            .unwrap();
        assert_eq!(hex(&buf), "0100000002000000010000006b010000000200000000ff");
    }

    #[test]
    fn a_key_with_the_wrong_number_of_parts_is_refused() {
        let encoder = KeyEncoder::new(&[column("driver_id", ScalarType::Int64)]);
        let err = encoder
            .push_key(&mut Vec::new(), &EntityKey::new([KeyPart::Int(1), KeyPart::Int(2)]), "p")
            .unwrap_err();
        assert!(err.contains("driver_id"), "{err}");
    }
}
