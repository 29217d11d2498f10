//! A bounded cache of loaded keys with single-flight loading: the branch key cache ([`crate::keystore`]) and the
//! legacy metastore's version cache ([`crate::metastore`]).
//!
//! - Concurrent misses for one key wait for one load, whose result (success or failure) they all get.
//! - A loaded value answers for `ttl` after it was loaded (`None`: until evicted); a failure answers for
//!   `failure_ttl` after it happened, so a burst of lookups for a key that cannot be loaded costs one load; the
//!   next caller after that loads again.
//! - At most `max_entries` are held. When full, expired entries go first, then failures (least recently used
//!   first), then loaded values (least recently used first): keys are named by the records and items being
//!   checked, which an attacker may write, so lookups of keys that do not exist must not evict those that do.
//! - `ddbguard_key_cache_hits_total` counts lookups answered by a loaded value (a remembered failure is not a
//!   hit), `ddbguard_key_cache_loads_total` loads started, both labelled `cache`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

/// A load's result: the value, or the error and when it happened.
type Loaded<V, E> = Result<Arc<V>, (Instant, E)>;

struct Entry<V, E> {
    /// When the value was loaded (or the entry made, while loading).
    created: Instant,
    /// The cache's use counter when this entry was last looked up.
    last_used: u64,
    cell: Arc<OnceCell<Loaded<V, E>>>,
}

impl<V, E> Entry<V, E> {
    fn failed(&self) -> bool {
        matches!(self.cell.get(), Some(Err(_)))
    }
}

struct Entries<K, V, E> {
    map: HashMap<K, Entry<V, E>>,
    uses: u64,
}

/// The cache: see the module docs.
pub(crate) struct LoadCache<K, V, E> {
    label: &'static str,
    ttl: Option<Duration>,
    failure_ttl: Duration,
    max_entries: usize,
    entries: Mutex<Entries<K, V, E>>,
    loads: AtomicU64,
    hits: AtomicU64,
}

impl<K, V, E> fmt::Debug for LoadCache<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadCache")
            .field("cache", &self.label)
            .field("ttl", &self.ttl)
            .field("failure_ttl", &self.failure_ttl)
            .field("max_entries", &self.max_entries)
            .field("loads", &self.loads.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V, E: Clone> LoadCache<K, V, E> {
    /// An empty cache labelled `label` in the metrics (a zero bound is raised to one entry).
    pub(crate) fn new(
        label: &'static str,
        ttl: Option<Duration>,
        failure_ttl: Duration,
        max_entries: usize,
    ) -> LoadCache<K, V, E> {
        LoadCache {
            label,
            ttl,
            failure_ttl,
            max_entries: max_entries.max(1),
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                uses: 0,
            }),
            loads: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// Loads started (misses that went to the loader), failed ones included.
    pub(crate) fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Lookups answered by a loaded value.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Entries held (loaded, loading, or recently failed).
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }

    fn lock(&self) -> MutexGuard<'_, Entries<K, V, E>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, entry: &Entry<V, E>, now: Instant) -> bool {
        match entry.cell.get() {
            Some(Err((failed, _))) => now.duration_since(*failed) < self.failure_ttl,
            _ => self.ttl.is_none_or(|ttl| now.duration_since(entry.created) < ttl),
        }
    }

    /// The fresh cell of `key` and when its value was loaded; made (evicting if full) when missing or expired,
    /// holding `value` (loaded at the given time) if there is one.
    fn cell(&self, key: &K, value: Option<(Arc<V>, Instant)>) -> (Arc<OnceCell<Loaded<V, E>>>, Instant) {
        let mut entries = self.lock();
        let now = Instant::now();
        entries.uses += 1;
        let uses = entries.uses;
        if let Some(e) = entries.map.get(key)
            && self.fresh(e, now)
        {
            let found = (e.cell.clone(), e.created);
            if let Some(e) = entries.map.get_mut(key) {
                e.last_used = uses;
            }
            return found;
        }
        entries.map.remove(key);
        if entries.map.len() >= self.max_entries {
            entries.map.retain(|_, e| self.fresh(e, now));
        }
        while entries.map.len() >= self.max_entries {
            let victim = entries
                .map
                .iter()
                .min_by_key(|(_, e)| (!e.failed(), e.last_used))
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => entries.map.remove(&k),
                None => break,
            };
        }
        let (cell, created) = match value {
            Some((v, loaded)) => (OnceCell::new_with(Some(Ok(v))), loaded),
            None => (OnceCell::new(), now),
        };
        let cell = Arc::new(cell);
        entries.map.insert(
            key.clone(),
            Entry {
                created,
                last_used: uses,
                cell: cell.clone(),
            },
        );
        (cell, created)
    }

    /// The value of `key` and when it was loaded, loading it (once for all concurrent callers) on a miss.
    pub(crate) async fn get_or_load<F, Fut>(&self, key: K, load: F) -> Result<(Arc<V>, Instant), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let (cell, created) = self.cell(&key, None);
        match cell.get() {
            Some(Ok(value)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ddbguard_key_cache_hits_total", "cache" => self.label).increment(1);
                return Ok((value.clone(), created));
            }
            Some(Err((_, e))) => return Err(e.clone()),
            None => {}
        }
        // Every caller waiting here gets the one load's result, success or failure.
        cell.get_or_init(|| async {
            self.loads.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("ddbguard_key_cache_loads_total", "cache" => self.label).increment(1);
            load().await.map(Arc::new).map_err(|e| (Instant::now(), e))
        })
        .await
        .clone()
        .map(|v| (v, created))
        .map_err(|(_, e)| e)
    }

    /// Records `value`, loaded at `loaded`, under `key` unless a fresh entry exists. The entry keeps that time,
    /// so the value expires when the entry it came from does, not a TTL later.
    pub(crate) fn offer(&self, key: K, value: Arc<V>, loaded: Instant) {
        let (cell, _) = self.cell(&key, Some((value.clone(), loaded)));
        let _ = cell.set(Ok(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max: usize) -> LoadCache<u32, u32, String> {
        LoadCache::new("test", None, Duration::from_secs(1), max)
    }

    async fn get(c: &LoadCache<u32, u32, String>, key: u32, ok: bool) -> Result<u32, String> {
        c.get_or_load(
            key,
            || async move { if ok { Ok(key) } else { Err(format!("no {key}")) } },
        )
        .await
        .map(|(v, _)| *v)
    }

    #[tokio::test]
    async fn failures_are_evicted_before_values_and_are_no_hits() {
        let c = cache(3);
        assert_eq!(get(&c, 1, true).await, Ok(1));
        assert_eq!(get(&c, 2, true).await, Ok(2));
        for missing in 100..120 {
            assert!(get(&c, missing, false).await.is_err());
        }
        assert!(c.len() <= 3);
        let loads = c.loads();
        assert_eq!((get(&c, 1, true).await, get(&c, 2, true).await), (Ok(1), Ok(2)));
        assert_eq!(c.loads(), loads, "the loaded values were kept");
        assert_eq!(c.hits(), 2);
        // A remembered failure answers without a load, and is not a hit.
        assert!(get(&c, 119, true).await.is_err());
        assert_eq!((c.loads(), c.hits()), (loads, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn values_expire_after_the_ttl_and_failures_after_the_failure_ttl() {
        let c: LoadCache<u32, u32, String> =
            LoadCache::new("test", Some(Duration::from_secs(10)), Duration::from_secs(1), 10);
        assert!(get(&c, 1, false).await.is_err());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(get(&c, 1, true).await, Ok(1));
        assert_eq!(c.loads(), 2);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(get(&c, 1, true).await, Ok(1));
        assert_eq!(c.loads(), 2);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(get(&c, 1, true).await, Ok(1));
        assert_eq!(c.loads(), 3);
    }
}
