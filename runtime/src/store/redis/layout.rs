//! Redis key layout (see docs/redis-layout.md) and Redis Cluster slot hashing.
//!
//! A record lives at `{<16 hex of xxh3_64(entity key)>}:<project>:<view>:<entity key bytes>`. The
//! hash tag puts every view of one entity in the same cluster slot; the raw entity key after it
//! keeps keys distinct when two entity keys share a hash. Project and view names cannot contain
//! `:` (see [`crate::registry::Name`]), so the layout is unambiguous.

use xxhash_rust::xxh3::xxh3_64;

/// Number of hash slots of a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16384;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends the record key of (`project`, `view`, `entity`) to `buf`; returns the key's cluster slot.
pub fn push_record_key(buf: &mut Vec<u8>, project: &str, view: &str, entity: &[u8]) -> u16 {
    buf.reserve(21 + project.len() + view.len() + entity.len());
    buf.push(b'{');
    let tag_start = buf.len();
    let hash = xxh3_64(entity);
    for shift in (0..16).rev() {
        buf.push(HEX[((hash >> (shift * 4)) & 0xf) as usize]);
    }
    let slot = key_slot(&buf[tag_start..]);
    buf.extend_from_slice(b"}:");
    buf.extend_from_slice(project.as_bytes());
    buf.push(b':');
    buf.extend_from_slice(view.as_bytes());
    buf.push(b':');
    buf.extend_from_slice(entity);
    slot
}

/// The record key of (`project`, `view`, `entity`).
pub fn record_key(project: &str, view: &str, entity: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    push_record_key(&mut buf, project, view, entity);
    buf
}

/// The key holding a view's materialization watermark (decimal epoch micros).
pub fn watermark_key(project: &str, view: &str) -> String {
    format!("quiver:{{{project}}}:watermark:{view}")
}

/// The cluster slot of a hash tag (or of a whole key without one): CRC16/XMODEM modulo 16384.
pub fn key_slot(tag: &[u8]) -> u16 {
    crc16_xmodem(tag) % CLUSTER_SLOTS
}

/// The cluster slot of a full key, honouring a `{...}` hash tag as Redis does.
pub fn slot_of_key(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .map(|close| &rest[..close])
        })
        .filter(|tag| !tag.is_empty());
    key_slot(tag.unwrap_or(key))
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The pub/sub channel on which writes to a project's records are announced.
pub fn write_channel(project: &str) -> String {
    format!("quiver:{{{project}}}:writes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_what_redis_computes() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(slot_of_key(b"foo"), 12182);
        assert_eq!(
            slot_of_key(b"{user1000}.following"),
            slot_of_key(b"user1000")
        );
        assert_eq!(slot_of_key(b"{}foo"), slot_of_key(b"{}foo"));
        assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
    }

    #[test]
    fn record_keys_carry_a_hash_tag_then_project_view_and_raw_entity() {
        let key = record_key("proj", "drivers", b"\x01{k}");
        let text = String::from_utf8_lossy(&key);
        assert_eq!(key[0], b'{');
        assert_eq!(key[17], b'}');
        assert!(text[18..].starts_with(":proj:drivers:"));
        assert!(key.ends_with(b"\x01{k}"));
        assert_eq!(text[1..17], format!("{:016x}", xxh3_64(b"\x01{k}")));
    }

    #[test]
    fn every_view_of_an_entity_shares_one_slot() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let slot_a = push_record_key(&mut a, "p", "view_a", b"entity");
        let slot_b = push_record_key(&mut b, "p", "view_b", b"entity");
        assert_eq!(slot_a, slot_b);
        assert_eq!(slot_a, slot_of_key(&a));
    }

    #[test]
    fn watermark_keys_are_tagged_by_project() {
        assert_eq!(watermark_key("p", "v"), "quiver:{p}:watermark:v");
    }
}
