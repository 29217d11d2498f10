//! A small bounded cache of unwrapped intermediate keys, keyed by what was sent to KMS.
//!
//! Streams deliver the same item more than once (retries, the old and new image of a modify, replays after a
//! handoff), so a Decrypt of an EDK ciphertext already opened a moment ago is answered locally. The key is a
//! SHA-256 over (KeyId, EDK ciphertext, serialized encryption context) — everything KMS would see — so a hit
//! can only return what KMS returned for exactly that request. Entries expire after a TTL; when full, the oldest
//! entry is evicted. Values are zeroized on drop and never printed.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::api::EncryptionContext;

/// The `cache` label of this cache's hit and load counters.
const CACHE_LABEL: &str = "kms_data_key";

/// The cache key: SHA-256 over the request.
pub type CacheKey = [u8; 32];

/// A bounded, expiring map from KMS requests to the 32-byte keys they returned.
pub struct KeyCache {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<CacheKey, (Zeroizing<[u8; 32]>, Instant)>,
    order: VecDeque<(CacheKey, Instant)>,
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .finish_non_exhaustive()
    }
}

impl KeyCache {
    /// A cache of at most `capacity` entries that live `ttl` each.
    pub fn new(capacity: usize, ttl: Duration) -> KeyCache {
        KeyCache {
            capacity,
            ttl,
            inner: Mutex::new(Inner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cache key for a Decrypt request.
    pub fn key(key_id: &str, ciphertext: &[u8], ec: &EncryptionContext) -> CacheKey {
        let mut h = Sha256::new();
        let mut put = |b: &[u8]| {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        };
        put(key_id.as_bytes());
        put(ciphertext);
        for (k, v) in ec {
            put(k.as_bytes());
            put(v.as_bytes());
        }
        h.finalize().into()
    }

    /// The cached key, if present and fresh. Counts a hit or a miss.
    pub fn get(&self, key: &CacheKey) -> Option<Zeroizing<[u8; 32]>> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let found = match inner.map.get(key) {
            Some((v, at)) if now.saturating_duration_since(*at) < self.ttl => Some(v.clone()),
            Some(_) => {
                inner.map.remove(key);
                None
            }
            None => None,
        };
        drop(inner);
        // Every miss is followed by a KMS Decrypt: exported as a load, like the branch key cache's.
        match &found {
            Some(_) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ddbguard_key_cache_hits_total", "cache" => CACHE_LABEL).increment(1);
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ddbguard_key_cache_loads_total", "cache" => CACHE_LABEL).increment(1);
            }
        }
        found
    }

    /// Stores a key, evicting expired entries and then the oldest ones to stay within capacity.
    pub fn insert(&self, key: CacheKey, value: Zeroizing<[u8; 32]>) {
        if self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Inner { map, order } = &mut *inner;
        map.insert(key, (value, now));
        order.push_back((key, now));
        while let Some((k, at)) = order.front().copied() {
            // Drop order entries that are stale (overwritten or already removed) or expired, and the oldest
            // live ones while over capacity.
            let live = map.get(&k).is_some_and(|(_, t)| *t == at);
            let expired = now.saturating_duration_since(at) >= self.ttl;
            if !live || expired || map.len() > self.capacity {
                order.pop_front();
                if live {
                    map.remove(&k);
                }
            } else {
                break;
            }
        }
        if order.len() > 4 * self.capacity.max(4) {
            // Re-inserted keys leave stale order entries behind a long-lived front entry; rebuild.
            let mut live: Vec<(CacheKey, Instant)> = map.iter().map(|(k, (_, t))| (*k, *t)).collect();
            live.sort_by_key(|(_, t)| *t);
            *order = live.into();
        }
    }

    /// Entries currently held (including expired ones not yet evicted).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).map.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that were not.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_metrics::sample;

    fn ec(v: &str) -> EncryptionContext {
        [("aws-crypto-table-name".to_owned(), v.to_owned())].into()
    }

    #[tokio::test(start_paused = true)]
    async fn hits_misses_ttl_and_capacity() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        let local = metrics::set_default_local_recorder(&recorder);
        let c = KeyCache::new(2, Duration::from_secs(60));
        let k1 = KeyCache::key("arn1", b"ct1", &ec("t"));
        let k1_other_ec = KeyCache::key("arn1", b"ct1", &ec("u"));
        let k1_other_key = KeyCache::key("arn2", b"ct1", &ec("t"));
        assert_ne!(k1, k1_other_ec);
        assert_ne!(k1, k1_other_key);
        assert!(c.get(&k1).is_none());
        c.insert(k1, Zeroizing::new([1; 32]));
        assert_eq!(*c.get(&k1).unwrap(), [1; 32]);
        assert!(c.get(&k1_other_ec).is_none());
        assert_eq!((c.hits(), c.misses()), (1, 2));

        let k2 = KeyCache::key("arn1", b"ct2", &ec("t"));
        let k3 = KeyCache::key("arn1", b"ct3", &ec("t"));
        c.insert(k2, Zeroizing::new([2; 32]));
        c.insert(k3, Zeroizing::new([3; 32]));
        assert_eq!(c.len(), 2);
        assert!(c.get(&k1).is_none(), "oldest evicted");
        assert!(c.get(&k3).is_some());

        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(c.get(&k3).is_none(), "expired");

        drop(local);
        let text = metrics.render();
        let count = |what: &str| {
            sample(
                &text,
                &format!("ddbguard_key_cache_{what}_total{{cache=\"kms_data_key\"}}"),
            )
        };
        assert_eq!((c.hits(), c.misses()), (2, 4));
        assert_eq!((count("hits"), count("loads")), (Some(2.0), Some(4.0)), "{text}");
    }

    #[test]
    fn debug_shows_no_keys() {
        let c = KeyCache::new(2, Duration::from_secs(60));
        c.insert([0; 32], Zeroizing::new([0xAB; 32]));
        let s = format!("{c:?}");
        assert!(!s.contains("171") && !s.contains("ab, ab"), "{s}");
    }
}
