//! The L1 cache: an in-process, read-through decorator of any [`OnlineStore`].
//!
//! - Keyed by (feature view, entity key) — never by entity alone — and holding whole stored rows,
//!   so requests for different features of one entity each get exactly what they asked for.
//! - Bounded by bytes ([`table`]: sharded, CLOCK eviction, a hit costs one shared lock and no
//!   allocation) and by time: each view has an L1 ttl (`cache.ttl`, per-view `cache_ttl`, `0`
//!   disables). Freshness is decided with Quiver's [`Clock`], so it is testable without sleeping.
//! - NOT_FOUND answers are cached for `cache.negative_ttl`, so floods of unknown keys stay in-process.
//! - Single flight: concurrent misses of one key wait for a single read of the store.
//! - Writes go to the store first and invalidate afterwards: the cache never reports a write the
//!   store has not acknowledged. Writes announced by other instances invalidate too
//!   ([`CachedStore::invalidate`]); a read racing with an invalidation never caches the old value:
//!   each invalidation stamps its key's slot in [`InvalidationStamps`] with a sequence number, and
//!   a read that started before that number does not cache what it read.
//! - Stale-if-error: when the store is unreachable, entries up to `cache.max_stale` past their ttl
//!   are served (with their true event timestamps); without one, the error goes to the caller.
//!
//! [`Clock`]: crate::clock::Clock

mod table;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::metrics::CacheMetrics;
use crate::registry::Registry;
use crate::settings::CacheSettings;
use crate::store::{
    FeatureRow, OnlineStore, RowKey, RowWrite, SharedStore, StoreError, WriteOutcome,
};
use crate::types::EpochMicros;

use self::table::ClockTable;

/// A cached answer for one key.
struct Entry {
    /// The full cache key, checked on every hit (entries are indexed by its 128-bit hash).
    key: Box<[u8]>,
    /// The row, or `None` for a cached NOT_FOUND.
    row: Option<Arc<FeatureRow>>,
    /// Served from L1 until then.
    fresh_until: EpochMicros,
    /// Served when the store is unreachable until then.
    stale_until: EpochMicros,
}

/// The result of one in-flight read, shared with the requests waiting on it.
type FlightResult = Option<Result<Option<Arc<FeatureRow>>, String>>;

/// Cache settings per view, resolved from the registry.
#[derive(Debug, Clone, Copy)]
struct ViewPolicy {
    ttl: i64,
    negative_ttl: i64,
}

/// A read-through L1 cache in front of an online store.
pub struct CachedStore {
    inner: SharedStore,
    entries: ClockTable<Entry>,
    /// The sequence number of the latest invalidation of each key's slot: a read that started
    /// before it must not cache what it read.
    stamps: InvalidationStamps,
    invalidation_seq: AtomicU64,
    /// The invalidation sequence number of the last [`CachedStore::invalidate_all`]: reads that
    /// started before it cache nothing.
    resync_seq: AtomicU64,
    /// Per-view ttls; swapped whole when a reloaded registry is adopted.
    policies: ArcSwap<HashMap<Box<str>, ViewPolicy>>,
    /// The `cache` section this cache was built with.
    settings: CacheSettings,
    max_stale: i64,
    clock: SharedClock,
    metrics: CacheMetrics,
    // Keys being read right now, each with a channel its followers wait on. A blocking mutex:
    // held only to look up or insert keys, never across an await.
    inflight: Mutex<HashMap<Box<[u8]>, watch::Receiver<FlightResult>>>,
}

/// Invalidation sequence numbers by key hash, in a fixed array of slots: keys sharing a slot
/// share a stamp, which only ever makes a racing read skip caching (never cache a stale row).
struct InvalidationStamps(Box<[AtomicU64]>);

impl InvalidationStamps {
    const SLOTS: usize = 1 << 14;

    fn new() -> Self {
        InvalidationStamps((0..Self::SLOTS).map(|_| AtomicU64::new(0)).collect())
    }

    fn slot(&self, hash: u128) -> &AtomicU64 {
        &self.0[hash as usize & (Self::SLOTS - 1)]
    }

    fn stamp(&self, hash: u128, seq: u64) {
        self.slot(hash).fetch_max(seq, Ordering::SeqCst);
    }

    /// Whether no invalidation of `hash`'s slot came after sequence number `seq`.
    fn unchanged_since(&self, hash: u128, seq: u64) -> bool {
        self.slot(hash).load(Ordering::SeqCst) <= seq
    }
}

fn cache_key(buf: &mut Vec<u8>, view: &str, entity: &[u8]) {
    buf.clear();
    buf.extend_from_slice(view.as_bytes());
    buf.push(0);
    buf.extend_from_slice(entity);
}

/// The index of a cache key: lookups hash the key built in a reused buffer instead of
/// allocating one.
fn key_hash(key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key)
}

/// The per-view L1 ttls of `registry` (views without one are not cached).
fn view_policies(registry: &Registry) -> HashMap<Box<str>, ViewPolicy> {
    let negative_ttl = micros(registry.cache.negative_ttl.0);
    registry
        .feature_views
        .iter()
        .filter_map(|v| {
            v.cache_ttl.map(|ttl| {
                (
                    Box::from(v.name.as_str()),
                    ViewPolicy {
                        ttl: micros(ttl),
                        negative_ttl: negative_ttl.min(micros(ttl)),
                    },
                )
            })
        })
        .collect()
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl CachedStore {
    /// Wraps `inner` with the cache settings of `registry`.
    pub fn new(
        inner: SharedStore,
        registry: &Registry,
        clock: SharedClock,
        metrics: CacheMetrics,
    ) -> Self {
        let settings = &registry.cache;
        CachedStore {
            inner,
            entries: ClockTable::new(settings.max_size_mib.saturating_mul(1024 * 1024)),
            stamps: InvalidationStamps::new(),
            invalidation_seq: AtomicU64::new(0),
            resync_seq: AtomicU64::new(0),
            policies: ArcSwap::from_pointee(view_policies(registry)),
            settings: settings.clone(),
            max_stale: micros(settings.max_stale.0),
            clock,
            metrics,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Takes the per-view ttls of a reloaded `registry`, keeping every cached entry, when this
    /// cache can serve it: the same `cache` section (byte bound, negative ttl, stale window).
    /// Returns false, changing nothing, when a new cache is needed instead.
    pub fn adopt(&self, registry: &Registry) -> bool {
        if registry.cache != self.settings {
            return false;
        }
        self.policies.store(Arc::new(view_policies(registry)));
        true
    }

    /// Drops the cached entry of one key (a newer value was written somewhere).
    pub fn invalidate(&self, view: &str, entity: &[u8]) {
        let mut key = Vec::with_capacity(view.len() + 1 + entity.len());
        cache_key(&mut key, view, entity);
        let hash = key_hash(&key);
        let seq = self.invalidation_seq.fetch_add(1, Ordering::SeqCst) + 1;
        // Stamped under the entry's shard lock, so a racing insert either sees the stamp or
        // lands before this removal.
        if self
            .entries
            .remove_with(hash, || self.stamps.stamp(hash, seq))
        {
            self.metrics.invalidations.inc();
        }
    }

    /// Drops every entry (announcements may have been missed).
    pub fn invalidate_all(&self) {
        // Reads in flight started before this point must not cache what they read.
        let seq = self.invalidation_seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.resync_seq.fetch_max(seq, Ordering::SeqCst);
        self.entries.clear();
    }

    /// Updates the entry-count, size and eviction series (called when metrics are scraped).
    pub fn refresh_metrics(&self) {
        let (entries, bytes) = self.entries.usage();
        self.metrics.entries.set(entries as i64);
        self.metrics.size_bytes.set(bytes as i64);
        let evicted = self.entries.evictions();
        let counted = self.metrics.evictions.get();
        if evicted > counted {
            self.metrics.evictions.inc_by(evicted - counted);
        }
    }

    /// Caches what a read that started at invalidation sequence number `read_seq` found, unless
    /// the key was invalidated since.
    fn insert(
        &self,
        key: Box<[u8]>,
        row: Option<Arc<FeatureRow>>,
        policy: ViewPolicy,
        now: EpochMicros,
        read_seq: u64,
    ) {
        let ttl = if row.is_some() {
            policy.ttl
        } else {
            policy.negative_ttl
        };
        if ttl <= 0 {
            return;
        }
        let hash = key_hash(&key);
        let weight = key.len() + row.as_ref().map_or(0, |r| r.approx_size()) + 64;
        let fresh_until = now.saturating_add(ttl);
        let entry = Entry {
            key,
            row,
            fresh_until,
            stale_until: fresh_until.saturating_add(self.max_stale),
        };
        // Checked under the shard lock, which invalidations also take (see `invalidate`).
        self.entries.insert_if(hash, entry, weight, || {
            self.resync_seq.load(Ordering::SeqCst) <= read_seq
                && self.stamps.unchanged_since(hash, read_seq)
        });
    }

    async fn read_inner(
        &self,
        keys: &[RowKey<'_>],
    ) -> Result<Vec<Option<Arc<FeatureRow>>>, StoreError> {
        self.inner.read(keys).await
    }
}

/// Removes this request's in-flight keys when it finishes or is cancelled, so followers never
/// wait on a read nobody is doing.
struct FlightGuard<'a> {
    inflight: &'a Mutex<HashMap<Box<[u8]>, watch::Receiver<FlightResult>>>,
    keys: Vec<Box<[u8]>>,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let mut map = self.inflight.lock();
        for k in &self.keys {
            map.remove(k);
        }
    }
}

/// A missed key this request reads from the store.
struct Lead {
    /// Position in the request.
    index: usize,
    /// For cacheable views: the cache key, the view's policy and the followers' channel.
    flight: Option<(Box<[u8]>, ViewPolicy, watch::Sender<FlightResult>)>,
    /// An expired entry that may still be served if the store is unreachable.
    stale: Option<Stale>,
}

/// A missed key another request is already reading.
struct Follow {
    index: usize,
    rx: watch::Receiver<FlightResult>,
    stale: Option<Stale>,
}

/// An expired entry, kept for stale-if-error.
struct Stale {
    row: Option<Arc<FeatureRow>>,
    stale_until: EpochMicros,
}

/// What the table holds for one key at a given time.
enum Lookup {
    Fresh(Option<Arc<FeatureRow>>),
    Expired(Stale),
    Absent,
}

#[async_trait]
impl OnlineStore for CachedStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn read(&self, keys: &[RowKey<'_>]) -> Result<Vec<Option<Arc<FeatureRow>>>, StoreError> {
        let now = self.clock.now_micros();
        let mut out: Vec<Option<Arc<FeatureRow>>> = vec![None; keys.len()];
        let mut leads = Vec::new();
        let mut follows = Vec::new();
        let mut buf = Vec::with_capacity(64);
        let (mut hits, mut negative_hits) = (0u64, 0u64);
        let mut pending = Vec::new();
        // Keys come grouped by view: look the policy up once per run of one view.
        let mut last: Option<(&str, Option<ViewPolicy>)> = None;
        let policies = self.policies.load_full();
        for (index, k) in keys.iter().enumerate() {
            let policy = match last {
                Some((view, policy)) if view == k.view => policy,
                _ => {
                    let policy = policies.get(k.view).copied();
                    last = Some((k.view, policy));
                    policy
                }
            };
            let Some(policy) = policy else {
                leads.push(Lead {
                    index,
                    flight: None,
                    stale: None,
                });
                continue;
            };
            cache_key(&mut buf, k.view, k.entity.as_bytes());
            let found = self.entries.get(key_hash(&buf), |e| {
                if *e.key != buf[..] {
                    Lookup::Absent
                } else if now < e.fresh_until {
                    Lookup::Fresh(e.row.clone())
                } else {
                    Lookup::Expired(Stale {
                        row: e.row.clone(),
                        stale_until: e.stale_until,
                    })
                }
            });
            match found.unwrap_or(Lookup::Absent) {
                Lookup::Fresh(row) => {
                    if row.is_some() {
                        hits += 1;
                    } else {
                        negative_hits += 1;
                    }
                    out[index] = row;
                }
                Lookup::Expired(stale) => {
                    pending.push((index, Box::<[u8]>::from(&buf[..]), Some(stale), policy))
                }
                Lookup::Absent => pending.push((index, Box::<[u8]>::from(&buf[..]), None, policy)),
            }
        }
        self.metrics.hits.inc_by(hits);
        self.metrics.negative_hits.inc_by(negative_hits);

        // Register the misses under one lock acquisition: the first request to miss a key reads
        // it, later ones wait for that read.
        let mut guard = FlightGuard {
            inflight: &self.inflight,
            keys: Vec::new(),
        };
        if !pending.is_empty() {
            let mut map = self.inflight.lock();
            for (index, key, stale, policy) in pending {
                match map.get(&key) {
                    Some(rx) => follows.push(Follow {
                        index,
                        rx: rx.clone(),
                        stale,
                    }),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        map.insert(key.clone(), rx);
                        guard.keys.push(key.clone());
                        leads.push(Lead {
                            index,
                            flight: Some((key, policy, tx)),
                            stale,
                        });
                    }
                }
            }
        }
        if leads.is_empty() && follows.is_empty() {
            return Ok(out);
        }
        self.metrics.misses.inc_by(leads.len() as u64);
        self.metrics.coalesced.inc_by(follows.len() as u64);

        if !leads.is_empty() {
            let lead_keys: Vec<RowKey<'_>> = leads.iter().map(|l| keys[l.index]).collect();
            let seq_before = self.invalidation_seq.load(Ordering::SeqCst);
            match self.read_inner(&lead_keys).await {
                Ok(rows) => {
                    let now = self.clock.now_micros();
                    for (lead, row) in leads.into_iter().zip(rows) {
                        if let Some((key, policy, tx)) = lead.flight {
                            let _ = tx.send(Some(Ok(row.clone())));
                            // Skipped if a write announced while we were reading may be newer.
                            self.insert(key, row.clone(), policy, now, seq_before);
                        }
                        out[lead.index] = row;
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    let mut all_stale = e.is_unavailable();
                    for lead in leads {
                        if let Some((_, _, tx)) = &lead.flight {
                            let _ = tx.send(Some(Err(message.clone())));
                        }
                        match lead.stale {
                            Some(s) if all_stale && now < s.stale_until => {
                                self.metrics.stale_served.inc();
                                out[lead.index] = s.row;
                            }
                            _ => all_stale = false,
                        }
                    }
                    if !all_stale {
                        return Err(e);
                    }
                }
            }
        }
        drop(guard);

        for mut f in follows {
            let waited: FlightResult =
                f.rx.wait_for(|r| r.is_some())
                    .await
                    .ok()
                    .and_then(|r| r.clone());
            let shared = match waited {
                Some(result) => result,
                // The reading request was cancelled: read this key ourselves.
                None => self
                    .read_inner(&[keys[f.index]])
                    .await
                    .map(|mut r| r.remove(0))
                    .map_err(|e| e.to_string()),
            };
            match shared {
                Ok(row) => out[f.index] = row,
                Err(message) => match f.stale {
                    Some(s) if self.max_stale > 0 && now < s.stale_until => {
                        self.metrics.stale_served.inc();
                        out[f.index] = s.row;
                    }
                    _ => return Err(StoreError::Unavailable(message)),
                },
            }
        }
        Ok(out)
    }

    async fn write(&self, rows: &[RowWrite]) -> Result<WriteOutcome, StoreError> {
        let result = self.inner.write(rows).await;
        // Invalidate even after a failed write: some records may have been stored.
        for w in rows {
            self.invalidate(&w.view, w.entity.as_bytes());
        }
        result
    }

    async fn watermark(&self, view: &str) -> Result<Option<EpochMicros>, StoreError> {
        self.inner.watermark(view).await
    }

    async fn set_watermark(&self, view: &str, at: EpochMicros) -> Result<(), StoreError> {
        self.inner.set_watermark(view, at).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn subscribe_writes(&self) -> Result<Option<crate::store::WriteNotices>, StoreError> {
        self.inner.subscribe_writes().await
    }
}
