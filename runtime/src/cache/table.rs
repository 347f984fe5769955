//! The L1's storage: a sharded map bounded by bytes, with CLOCK (second-chance) eviction.
//!
//! - Entries are indexed by a 128-bit hash of their key; the shard is picked from its high bits.
//! - A hit takes one shard's read lock and sets the entry's reference bit (a relaxed atomic store,
//!   skipped when the bit is already set): no queue of recorded reads, no frequency sketch, no
//!   global lock, nothing allocated. Concurrent hits on one shard run in parallel.
//! - An insert takes the shard's write lock. When the shard holds more than its share of the byte
//!   bound, the clock hand sweeps its slots: an entry read since the hand last passed loses its
//!   bit and stays, one that was not is evicted. Entries that are read keep their place; entries
//!   inserted and never read again (a scan of cold keys) are the first to go.
//! - Each shard owns `max_bytes / SHARDS` bytes, so the whole table never holds more than
//!   `max_bytes` of weighed entries. An entry heavier than a shard's share is not stored.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;

/// Number of shards (a power of two): enough that two server threads rarely meet on one lock,
/// few enough that each shard's share of a small bound still holds many entries.
const SHARDS: usize = 64;

/// A byte-bounded map from 128-bit key hashes to `V`, safe to share between threads.
pub(crate) struct ClockTable<V> {
    // Read-mostly: hits share a shard's lock; inserts, removals and evictions take it alone.
    shards: Box<[RwLock<Shard<V>>]>,
    shard_bytes: usize,
    evictions: AtomicU64,
}

struct Shard<V> {
    /// Hash to slot index.
    index: HashMap<u128, u32, BuildHasherDefault<HashBits>>,
    slots: Vec<Slot<V>>,
    /// Indices of empty slots, reused before the vector grows.
    free: Vec<u32>,
    /// The clock hand: the next slot the eviction sweep looks at.
    hand: usize,
    bytes: usize,
}

struct Slot<V> {
    hash: u128,
    weight: usize,
    /// Set by reads, cleared by the sweeping hand.
    referenced: AtomicBool,
    /// `None` for an empty slot (listed in `free`).
    value: Option<V>,
}

/// What an insert did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inserted {
    /// Whether the entry is now in the table.
    pub stored: bool,
    /// Whether it replaced an entry of the same hash.
    pub replaced: bool,
}

impl<V> ClockTable<V> {
    /// An empty table holding at most `max_bytes` of weighed entries.
    pub(crate) fn new(max_bytes: u64) -> Self {
        let shard_bytes = usize::try_from(max_bytes / SHARDS as u64).unwrap_or(usize::MAX);
        ClockTable {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::new())).collect(),
            shard_bytes,
            evictions: AtomicU64::new(0),
        }
    }

    fn shard(&self, hash: u128) -> &RwLock<Shard<V>> {
        // The index's hasher uses the low bits; the shard takes high ones, so they stay independent.
        &self.shards[(hash >> 122) as usize & (SHARDS - 1)]
    }

    /// Reads the entry of `hash` with `read` under the shard's read lock, marking it as used.
    pub(crate) fn get<R>(&self, hash: u128, read: impl FnOnce(&V) -> R) -> Option<R> {
        let shard = self.shard(hash).read();
        let slot = &shard.slots[*shard.index.get(&hash)? as usize];
        if !slot.referenced.load(Ordering::Relaxed) {
            slot.referenced.store(true, Ordering::Relaxed);
        }
        slot.value.as_ref().map(read)
    }

    /// Stores `value` under `hash` (replacing any entry of that hash) if `admit()`, called under
    /// the shard's write lock, agrees. Removals of the same hash take that lock too, so a decision
    /// made by `admit` cannot be overtaken by a removal (see [`ClockTable::remove_with`]).
    pub(crate) fn insert_if(
        &self,
        hash: u128,
        value: V,
        weight: usize,
        admit: impl FnOnce() -> bool,
    ) -> Inserted {
        if weight > self.shard_bytes {
            return Inserted::default();
        }
        let mut shard = self.shard(hash).write();
        if !admit() {
            return Inserted::default();
        }
        let replaced = shard.put(hash, value, weight);
        let evicted = shard.evict_down_to(self.shard_bytes, hash);
        if evicted > 0 {
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
        Inserted {
            stored: true,
            replaced,
        }
    }

    /// Runs `before` and then removes the entry of `hash`, both under the shard's write lock;
    /// returns whether there was one.
    pub(crate) fn remove_with(&self, hash: u128, before: impl FnOnce()) -> bool {
        let mut shard = self.shard(hash).write();
        before();
        shard.remove(hash)
    }

    /// Removes every entry.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            *shard.write() = Shard::new();
        }
    }

    /// The number of entries and their total weight.
    pub(crate) fn usage(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(n, bytes), shard| {
            let shard = shard.read();
            (n + shard.index.len() as u64, bytes + shard.bytes as u64)
        })
    }

    /// Entries evicted for room so far.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

impl<V> Shard<V> {
    fn new() -> Self {
        Shard {
            index: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            bytes: 0,
        }
    }

    /// Stores `value`; returns whether it replaced an entry.
    fn put(&mut self, hash: u128, value: V, weight: usize) -> bool {
        if let Some(&i) = self.index.get(&hash) {
            let slot = &mut self.slots[i as usize];
            self.bytes = self.bytes - slot.weight + weight;
            slot.weight = weight;
            slot.value = Some(value);
            return true;
        }
        let slot = Slot {
            hash,
            weight,
            referenced: AtomicBool::new(false),
            value: Some(value),
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 entries per shard")
            }
        };
        self.index.insert(hash, i);
        self.bytes += weight;
        false
    }

    fn remove(&mut self, hash: u128) -> bool {
        let Some(i) = self.index.remove(&hash) else {
            return false;
        };
        let slot = &mut self.slots[i as usize];
        self.bytes -= slot.weight;
        slot.weight = 0;
        slot.value = None;
        self.free.push(i);
        true
    }

    /// Sweeps the clock hand until the shard holds at most `budget` bytes, sparing `keep` (the
    /// entry just inserted); returns the number of entries evicted.
    fn evict_down_to(&mut self, budget: usize, keep: u128) -> u64 {
        let mut evicted = 0;
        // Two turns clear every reference bit and then reach every entry: enough to get under
        // budget, since `keep` alone fits.
        let mut steps = 2 * self.slots.len() + 1;
        while self.bytes > budget && steps > 0 {
            steps -= 1;
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let slot = &mut self.slots[self.hand];
            self.hand += 1;
            if slot.value.is_none() || slot.hash == keep {
                continue;
            }
            if std::mem::take(slot.referenced.get_mut()) {
                continue;
            }
            let hash = slot.hash;
            self.remove(hash);
            evicted += 1;
        }
        evicted
    }
}

/// The index's hasher: keys are already uniform 128-bit hashes, so their low 64 bits serve.
#[derive(Default)]
struct HashBits(u64);

impl Hasher for HashBits {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than `u128`; fold them in so it stays a valid hasher.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes spread over every shard, as real key hashes are.
    fn hash(i: u64) -> u128 {
        xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())
    }

    #[test]
    fn an_inserted_entry_is_found_until_it_is_removed() {
        let table = ClockTable::new(1 << 20);
        assert!(table.insert_if(hash(1), "one", 10, || true).stored);
        assert_eq!(table.get(hash(1), |v| *v), Some("one"));
        assert_eq!(table.get(hash(2), |v| *v), None);
        assert!(table.remove_with(hash(1), || ()));
        assert!(!table.remove_with(hash(1), || ()));
        assert_eq!(table.get(hash(1), |v| *v), None);
        assert_eq!(table.usage(), (0, 0));
    }

    #[test]
    fn an_insert_refused_by_its_admission_check_stores_nothing() {
        let table = ClockTable::new(1 << 20);
        assert!(!table.insert_if(hash(1), 1, 10, || false).stored);
        assert_eq!(table.get(hash(1), |v| *v), None);
    }

    #[test]
    fn replacing_an_entry_updates_its_weight() {
        let table = ClockTable::new(1 << 20);
        table.insert_if(hash(1), 1, 10, || true);
        let again = table.insert_if(hash(1), 2, 30, || true);
        assert!(again.replaced);
        assert_eq!(table.get(hash(1), |v| *v), Some(2));
        assert_eq!(table.usage(), (1, 30));
    }

    #[test]
    fn the_total_weight_never_exceeds_the_bound() {
        let max = 64 * 1024;
        let table = ClockTable::new(max);
        for i in 0..10_000 {
            table.insert_if(hash(i), i, 100, || true);
            assert!(table.usage().1 <= max);
        }
        let (entries, bytes) = table.usage();
        assert!(
            entries > 0 && bytes <= max,
            "{entries} entries, {bytes} bytes"
        );
        assert_eq!(table.evictions(), 10_000 - entries);
    }

    #[test]
    fn an_entry_heavier_than_a_shard_share_is_not_stored() {
        let table = ClockTable::new(SHARDS as u64 * 100);
        assert!(!table.insert_if(hash(1), 1, 101, || true).stored);
        assert!(table.insert_if(hash(2), 2, 100, || true).stored);
    }

    #[test]
    fn entries_read_since_the_last_sweep_survive_eviction() {
        // One shard's worth of room for ten entries per shard, on average.
        let table = ClockTable::new(SHARDS as u64 * 1000);
        let hot: Vec<u64> = (0..SHARDS as u64 * 2).collect();
        for &i in &hot {
            table.insert_if(hash(i), i, 100, || true);
        }
        // A scan of cold keys, each read never; the hot keys are read between inserts.
        for i in 1_000..20_000 {
            for &h in &hot {
                table.get(hash(h), |_| ());
            }
            table.insert_if(hash(i), i, 100, || true);
        }
        let kept = hot
            .iter()
            .filter(|&&h| table.get(hash(h), |_| ()).is_some())
            .count();
        assert_eq!(
            kept,
            hot.len(),
            "hot entries evicted by a scan of cold ones"
        );
    }

    #[test]
    fn clearing_empties_every_shard() {
        let table = ClockTable::new(1 << 20);
        for i in 0..1000 {
            table.insert_if(hash(i), i, 10, || true);
        }
        table.clear();
        assert_eq!(table.usage(), (0, 0));
        assert_eq!(table.get(hash(3), |v| *v), None);
    }
}
