//! Feast's Redis layout (`online_store: {type: redis, layout: feast}`), as Feast 0.67 writes and
//! reads it (see docs/redis-layout.md, "Feast's layout"):
//!
//! - one hash per entity key and project, key = Feast's serialized entity key (version 3) followed
//!   by the project name; every view of that entity keeps its fields in it;
//! - a feature's field is the murmur3 hash of `<view>:<feature>`, its value a serialized
//!   `feast.types.Value`; `_ts:<view>` holds the view's event time as a `google.protobuf.Timestamp`;
//! - Quiver adds `_quiver:<view>` = `<ts seconds>:<ts nanos>:<created micros>:<expire_at micros>`
//!   (empty expiry: none), which Feast never reads. It is valid only while its seconds and nanos
//!   are those of `_ts:<view>` (a later write by Feast leaves it stale), and gives Quiver's rows
//!   their created timestamp and their expiry.
//!
//! Writes run [`WRITE_SCRIPT`] per record, so newer-wins is atomic on the server.

pub mod key;
pub mod proto;

use std::collections::HashMap;
use std::sync::Arc;

use ::redis::{Cmd, Value as RedisValue};
use prost::Message;

use self::key::{KeyEncoder, feature_field, timestamp_field};
use self::proto::{Timestamp, decode_value, value_bytes};
use crate::entity_key::EntityKey;
use crate::store::catalog::{FeatureColumn, StoreCatalog};
use crate::store::{FeatureRow, RowWrite, StoreError};
use crate::types::{EpochMicros, Value};

/// Newer-wins write of one view's fields in an entity's hash.
///
/// `KEYS[1]` the hash; `ARGV` = `_ts` field, `_quiver` field, new event seconds, new event nanos,
/// new created micros, serialized new Timestamp, new `_quiver` value, `EXPIRE` seconds (`""`:
/// none), now in epoch micros, then field/value pairs. Returns 1 when written, 0 when the stored
/// event time is newer, or equal with a created time at least as new (a row Feast wrote, which has
/// none, wins ties as it does in Feast). A stored row Quiver wrote whose expiry has passed counts
/// as absent. The stored Timestamp is decoded here and compared as (seconds, nanos), so the
/// comparison is exact to the nanosecond.
pub const WRITE_SCRIPT: &str = r#"
local function varint(s, pos)
  local groups = {}
  while true do
    local b = string.byte(s, pos)
    if not b then return nil, pos end
    pos = pos + 1
    groups[#groups + 1] = b % 128
    if b < 128 then break end
    if #groups >= 10 then return nil, pos end
  end
  if #groups == 10 then
    -- a negative int64 (two's complement): -(~x) - 1, with ~x small for small magnitudes
    local c = 1 - (groups[10] % 2)
    for i = 9, 1, -1 do c = c * 128 + (127 - groups[i]) end
    return -c - 1, pos
  end
  local v = 0
  for i = #groups, 1, -1 do v = v * 128 + groups[i] end
  return v, pos
end
local function timestamp(s)
  local sec, nanos, pos = 0, 0, 1
  while pos <= #s do
    local tag
    tag, pos = varint(s, pos)
    if tag == 8 then sec, pos = varint(s, pos)
    elseif tag == 16 then nanos, pos = varint(s, pos)
    else return nil end
    if sec == nil or nanos == nil then return nil end
  end
  return sec, nanos
end
local cur = redis.call('HMGET', KEYS[1], ARGV[1], ARGV[2])
local sec, nanos = nil, nil
if cur[1] then sec, nanos = timestamp(cur[1]) end
local created, expire_at = nil, nil
if sec and cur[2] then
  local s, n, c, e = string.match(cur[2], '^(-?%d+):(-?%d+):(-?%d+):(-?%d*)$')
  if s and tonumber(s) == sec and tonumber(n) == nanos then
    created = tonumber(c)
    if e ~= '' then expire_at = tonumber(e) end
  end
end
if expire_at and expire_at <= tonumber(ARGV[9]) then sec = nil end
if sec then
  local new_sec, new_nanos = tonumber(ARGV[3]), tonumber(ARGV[4])
  if sec > new_sec or (sec == new_sec and nanos > new_nanos) then return 0 end
  if sec == new_sec and nanos == new_nanos then
    if created == nil or created >= tonumber(ARGV[5]) then return 0 end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[6], ARGV[2], ARGV[7], unpack(ARGV, 10))
if ARGV[8] ~= '' then
  redis.call('EXPIRE', KEYS[1], ARGV[8])
end
return 1
"#;

/// One view, prepared at open: its key encoder and every hash field it reads.
#[derive(Debug)]
struct FeastView {
    keys: KeyEncoder,
    /// `_ts:<view>`.
    ts_field: Vec<u8>,
    /// `_quiver:<view>`.
    quiver_field: Vec<u8>,
    /// Each feature's murmur3 field, in schema order.
    feature_fields: Vec<[u8; 4]>,
    features: Vec<FeatureColumn>,
    schema_fingerprint: u32,
}

/// Feast's layout for one project, with every view of the catalog prepared.
#[derive(Debug)]
pub struct FeastLayout {
    project: Arc<str>,
    views: HashMap<Arc<str>, FeastView>,
    /// `EXPIRE` set on a hash after each write (Feast's `key_ttl_seconds`).
    key_ttl_seconds: Option<u64>,
    /// The most fields one entity's hash can hold (see [`FeastLayout::widest_hash`]).
    widest_hash: usize,
}

/// What [`FeastLayout::read_command`] asks for, to decode the reply.
pub struct PendingRead<'a> {
    view: &'a FeastView,
    name: &'a str,
}

impl FeastLayout {
    /// Prepares the layout of `project` for the views of `catalog`.
    pub fn new(project: &str, catalog: &StoreCatalog, key_ttl_seconds: Option<u64>) -> FeastLayout {
        let views = catalog
            .views()
            .map(|(name, schema)| {
                let view = FeastView {
                    keys: KeyEncoder::new(&schema.join_keys),
                    ts_field: timestamp_field(name),
                    quiver_field: format!("_quiver:{name}").into_bytes(),
                    feature_fields: schema
                        .features
                        .iter()
                        .map(|f| feature_field(name, &f.name))
                        .collect(),
                    features: schema.features.clone(),
                    schema_fingerprint: schema.schema_fingerprint,
                };
                (name.clone(), view)
            })
            .collect();
        // Views over the same join keys share each entity's hash (the key is the serialized
        // entity key, whose columns are sorted by name).
        let mut hash_fields: HashMap<Vec<&str>, usize> = HashMap::new();
        for (_, schema) in catalog.views() {
            let mut keys: Vec<&str> = schema.join_keys.iter().map(|k| &*k.name).collect();
            keys.sort_unstable();
            *hash_fields.entry(keys).or_default() += 2 + schema.features.len();
        }
        FeastLayout {
            project: Arc::from(project),
            views,
            key_ttl_seconds,
            widest_hash: hash_fields.into_values().max().unwrap_or(0),
        }
    }

    /// The most fields one entity's hash holds when every view is written: each view over the
    /// same join keys keeps its features, `_ts:<view>` and `_quiver:<view>` in that hash.
    pub fn widest_hash(&self) -> usize {
        self.widest_hash
    }

    fn view(&self, name: &str) -> Result<&FeastView, StoreError> {
        self.views.get(name).ok_or_else(|| {
            StoreError::Backend(format!(
                "feature view {name} is not known to the store (layout: feast needs every view's \
                 join keys and features)"
            ))
        })
    }

    /// The Redis key of `entity`'s hash, as seen by `view`.
    pub fn key(&self, view: &str, entity: &EntityKey) -> Result<Vec<u8>, StoreError> {
        let v = self.view(view)?;
        let mut buf = Vec::with_capacity(64);
        v.keys
            .push_key(&mut buf, entity, &self.project)
            .map_err(|e| StoreError::Backend(format!("feature view {view}: {e}")))?;
        Ok(buf)
    }

    /// Appends the fields of `view` that an `HMGET` reads (`_ts`, `_quiver`, then every feature)
    /// to `cmd`; returns how many, and what decoding their values needs. Feast keeps every view
    /// of an entity in one hash, so one `HMGET` can read several views' fields.
    pub fn push_read_fields<'a>(
        &'a self,
        cmd: &mut Cmd,
        view: &'a str,
    ) -> Result<(usize, PendingRead<'a>), StoreError> {
        let v = self.view(view)?;
        cmd.arg(&v.ts_field).arg(&v.quiver_field);
        for field in &v.feature_fields {
            cmd.arg(&field[..]);
        }
        Ok((2 + v.feature_fields.len(), PendingRead { view: v, name: view }))
    }

    /// The row a view's fields of an `HMGET` reply hold (see [`FeastLayout::push_read_fields`]):
    /// absent when the view has no event time in the hash, or when Quiver wrote it with an expiry
    /// that has passed at `now`.
    pub fn decode_read(
        pending: &PendingRead<'_>,
        fields: impl ExactSizeIterator<Item = RedisValue>,
        now: EpochMicros,
    ) -> Result<Option<Arc<FeatureRow>>, StoreError> {
        let view = pending.view;
        let corrupt =
            |what: String| StoreError::Corrupt(format!("feature view {}: {what}", pending.name));
        if fields.len() != 2 + view.features.len() {
            return Err(corrupt(format!("HMGET returned {} fields", fields.len())));
        }
        let mut fields = fields;
        let ts = match fields.next() {
            Some(RedisValue::BulkString(b)) => b,
            _ => return Ok(None),
        };
        let ts = Timestamp::decode(ts.as_slice())
            .map_err(|e| corrupt(format!("_ts is not a protobuf Timestamp: {e}")))?;
        let event_ts = ts
            .to_micros()
            .ok_or_else(|| corrupt(format!("_ts {ts:?} is out of range")))?;
        let mut created_ts = event_ts;
        if let Some(RedisValue::BulkString(q)) = fields.next()
            && let Some((created, expire_at)) = parse_quiver_field(&q, ts)
        {
            if expire_at.is_some_and(|at| at <= now) {
                return Ok(None);
            }
            created_ts = created;
        }
        let mut values = Vec::with_capacity(view.features.len());
        for (field, feature) in fields.zip(&view.features) {
            values.push(match field {
                RedisValue::BulkString(b) => decode_value(&b, feature.dtype)
                    .map_err(|e| corrupt(format!("feature {}: {e}", feature.name)))?,
                _ => Value::Null,
            });
        }
        Ok(Some(Arc::new(FeatureRow {
            event_ts,
            created_ts,
            schema_fingerprint: view.schema_fingerprint,
            values,
        })))
    }

    /// The script call writing `w` to the hash at `key` (`sha` is [`WRITE_SCRIPT`]'s) at `now`.
    pub fn write_command(
        &self,
        sha: &str,
        key: &[u8],
        w: &RowWrite,
        now: EpochMicros,
    ) -> Result<Cmd, StoreError> {
        let v = self.view(&w.view)?;
        if w.row.values.len() != v.features.len() {
            return Err(StoreError::Backend(format!(
                "feature view {}: a row of {} values for {} features",
                w.view,
                w.row.values.len(),
                v.features.len()
            )));
        }
        let ts = Timestamp::from_micros(w.row.event_ts);
        let quiver = format!(
            "{}:{}:{}:{}",
            ts.seconds,
            ts.nanos,
            w.row.created_ts,
            w.expire_at.map(|at| at.to_string()).unwrap_or_default()
        );
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(sha)
            .arg(1)
            .arg(key)
            .arg(&v.ts_field)
            .arg(&v.quiver_field)
            .arg(ts.seconds)
            .arg(ts.nanos)
            .arg(w.row.created_ts)
            .arg(ts.encode_to_vec())
            .arg(quiver);
        match self.key_ttl_seconds {
            Some(secs) => cmd.arg(secs),
            None => cmd.arg(""),
        };
        cmd.arg(now);
        for ((field, feature), value) in v.feature_fields.iter().zip(&v.features).zip(&w.row.values)
        {
            let bytes = value_bytes(value, feature.dtype).map_err(|e| {
                StoreError::Backend(format!("feature view {} feature {}: {e}", w.view, feature.name))
            })?;
            cmd.arg(&field[..]).arg(bytes);
        }
        Ok(cmd)
    }
}

/// The created timestamp and expiry of a `_quiver:<view>` value, when it belongs to the event
/// time `ts` (a later write by Feast leaves a stale one behind).
fn parse_quiver_field(bytes: &[u8], ts: Timestamp) -> Option<(EpochMicros, Option<EpochMicros>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.split(':');
    let seconds: i64 = parts.next()?.parse().ok()?;
    let nanos: i32 = parts.next()?.parse().ok()?;
    let created: i64 = parts.next()?.parse().ok()?;
    let expire_at = match parts.next()? {
        "" => None,
        at => Some(at.parse().ok()?),
    };
    (seconds == ts.seconds && nanos == ts.nanos).then_some((created, expire_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiver_field_counts_only_for_its_own_event_time() {
        let ts = Timestamp::from_micros(1_700_000_000_000_001);
        let field = format!("{}:{}:42:", ts.seconds, ts.nanos);
        assert_eq!(parse_quiver_field(field.as_bytes(), ts), Some((42, None)));
        let later = Timestamp::from_micros(1_700_000_000_000_002);
        assert_eq!(parse_quiver_field(field.as_bytes(), later), None);
        let with_expiry = format!("{}:{}:42:99", ts.seconds, ts.nanos);
        assert_eq!(
            parse_quiver_field(with_expiry.as_bytes(), ts),
            Some((42, Some(99)))
        );
        assert_eq!(parse_quiver_field(b"garbage", ts), None);
    }
}
