//! The L1 cache: an in-process, read-through decorator of any [`OnlineStore`].
//!
//! - Keyed by (feature view, entity key) — never by entity alone — and holding whole stored rows,
//!   so requests for different features of one entity each get exactly what they asked for.
//! - Bounded by bytes (mini-moka's weigher) and by time: each view has an L1 ttl (`cache.ttl`,
//!   per-view `cache_ttl`, `0` disables). Freshness is decided with Quiver's [`Clock`], so it is
//!   testable without sleeping; mini-moka's own ttl only reclaims memory.
//! - NOT_FOUND answers are cached for `cache.negative_ttl`, so floods of unknown keys stay in-process.
//! - Single flight: concurrent misses of one key wait for a single read of the store.
//! - Writes go to the store first and invalidate afterwards: the cache never reports a write the
//!   store has not acknowledged. Writes announced by other instances invalidate too
//!   ([`CachedStore::invalidate`]); a read racing with an invalidation never caches the old value.
//! - Stale-if-error: when the store is unreachable, entries up to `cache.max_stale` past their ttl
//!   are served (with their true event timestamps); without one, the error goes to the caller.
//!
//! [`Clock`]: crate::clock::Clock

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use mini_moka::sync::{Cache, ConcurrentCacheExt};
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

/// A cached answer for one key.
#[derive(Clone)]
struct Entry {
    /// The full cache key, checked on every hit (entries are indexed by its 128-bit hash).
    key: Arc<[u8]>,
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
    entries: Cache<u128, Entry>,
    /// Keys invalidated recently, with the invalidation sequence number: a read that started
    /// before that number must not cache what it read.
    tombstones: Cache<u128, u64>,
    invalidation_seq: AtomicU64,
    /// The invalidation sequence number of the last [`CachedStore::invalidate_all`].
    resync_seq: AtomicU64,
    /// Per-view ttls; swapped whole when a reloaded registry is adopted.
    policies: ArcSwap<HashMap<Box<str>, ViewPolicy>>,
    /// The `cache` section this cache was built with.
    settings: CacheSettings,
    /// The longest view ttl this cache was built for.
    longest: Duration,
    max_stale: i64,
    clock: SharedClock,
    metrics: CacheMetrics,
    // Keys being read right now, each with a channel its followers wait on. A blocking mutex:
    // held only to look up or insert keys, never across an await.
    inflight: Mutex<HashMap<Box<[u8]>, watch::Receiver<FlightResult>>>,
    inserted: AtomicU64,
    removed: AtomicU64,
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

/// The longest view ttl of `registry` (1s when no view is cached).
fn longest_ttl(registry: &Registry) -> Duration {
    registry
        .feature_views
        .iter()
        .filter_map(|v| v.cache_ttl)
        .max()
        .unwrap_or(Duration::from_secs(1))
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
        let longest = longest_ttl(registry);
        let entries = Cache::builder()
            .max_capacity(settings.max_size_mib.saturating_mul(1024 * 1024))
            .weigher(|_: &u128, e: &Entry| {
                let row = e.row.as_ref().map_or(0, |r| r.approx_size());
                u32::try_from(e.key.len() + row + 64).unwrap_or(u32::MAX)
            })
            // Only reclaims memory; freshness is decided by `fresh_until` with Quiver's clock.
            .time_to_live(longest + settings.max_stale.0 + Duration::from_secs(1))
            .build();
        let tombstones = Cache::builder()
            .max_capacity(100_000)
            .time_to_live(Duration::from_secs(60))
            .build();
        CachedStore {
            inner,
            entries,
            tombstones,
            invalidation_seq: AtomicU64::new(0),
            resync_seq: AtomicU64::new(0),
            policies: ArcSwap::from_pointee(view_policies(registry)),
            settings: settings.clone(),
            longest,
            max_stale: micros(settings.max_stale.0),
            clock,
            metrics,
            inflight: Mutex::new(HashMap::new()),
            inserted: AtomicU64::new(0),
            removed: AtomicU64::new(0),
        }
    }

    /// Takes the per-view ttls of a reloaded `registry`, keeping every cached entry, when this
    /// cache can serve it: the same `cache` section and no view ttl longer than the longest this
    /// cache was built for (its memory reclamation is fixed at build). Returns false, changing
    /// nothing, when a new cache is needed instead.
    pub fn adopt(&self, registry: &Registry) -> bool {
        if registry.cache != self.settings || longest_ttl(registry) > self.longest {
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
        self.tombstones.insert(hash, seq);
        if self.entries.get(&hash).is_some() {
            self.entries.invalidate(&hash);
            self.removed.fetch_add(1, Ordering::Relaxed);
            self.metrics.invalidations.inc();
        }
    }

    /// Drops every entry (announcements may have been missed).
    pub fn invalidate_all(&self) {
        self.invalidation_seq.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
        self.tombstones.invalidate_all();
        // Reads in flight started before this point must not cache what they read.
        self.resync_seq.store(
            self.invalidation_seq.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
    }

    /// Updates the entry-count, size and eviction series (called when metrics are scraped).
    pub fn refresh_metrics(&self) {
        self.entries.sync();
        let entries = self.entries.entry_count();
        self.metrics.entries.set(entries as i64);
        self.metrics
            .size_bytes
            .set(self.entries.weighted_size() as i64);
        let gone = self
            .inserted
            .load(Ordering::Relaxed)
            .saturating_sub(self.removed.load(Ordering::Relaxed))
            .saturating_sub(entries);
        let counted = self.metrics.evictions.get();
        if gone > counted {
            self.metrics.evictions.inc_by(gone - counted);
        }
    }

    fn insert(
        &self,
        key: Box<[u8]>,
        row: Option<Arc<FeatureRow>>,
        policy: ViewPolicy,
        now: EpochMicros,
    ) {
        let ttl = if row.is_some() {
            policy.ttl
        } else {
            policy.negative_ttl
        };
        if ttl <= 0 {
            return;
        }
        let fresh_until = now.saturating_add(ttl);
        let entry = Entry {
            key: Arc::from(&key[..]),
            row,
            fresh_until,
            stale_until: fresh_until.saturating_add(self.max_stale),
        };
        self.entries.insert(key_hash(&key), entry);
        self.inserted.fetch_add(1, Ordering::Relaxed);
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
    stale: Option<Entry>,
}

/// A missed key another request is already reading.
struct Follow {
    index: usize,
    rx: watch::Receiver<FlightResult>,
    stale: Option<Entry>,
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
            let found = self
                .entries
                .get(&key_hash(&buf))
                .filter(|e| *e.key == buf[..]);
            match found {
                Some(e) if now < e.fresh_until => {
                    if e.row.is_some() {
                        hits += 1;
                    } else {
                        negative_hits += 1;
                    }
                    out[index] = e.row;
                }
                stale => pending.push((index, Box::<[u8]>::from(&buf[..]), stale, policy)),
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
                            // A write announced while we were reading may be newer than `row`.
                            if self
                                .tombstones
                                .get(&key_hash(&key))
                                .is_none_or(|s| s <= seq_before)
                            {
                                self.insert(key, row.clone(), policy, now);
                            }
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
