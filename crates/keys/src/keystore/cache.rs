//! Unwrapped branch keys, cached: a TTL and an entry bound, and single-flight loading (concurrent misses for
//! one key wait for one load, so a burst of records under a new branch key version makes one KMS call).
//!
//! [`CachingBranchKeySource`] is the [`BranchKeySource`] the hierarchical keyring uses in front of a
//! [`BranchKeyLoader`] such as [`DynamoKeyStore`]. A failed load is shared by the callers waiting for it and
//! kept for a short `failure_ttl` (1 s by default), so that a batch of records under a key that cannot be loaded
//! (throttled, disabled, not yet replicated) costs one load, not one per record; after that the next caller
//! tries again (behind the KMS governor's rate limit). The cache itself is `crate::load_cache`'s, shared with
//! the legacy metastore: when full it evicts failures before keys (a record names its branch key version, and a
//! record can name one that does not exist), and a remembered failure is not counted as a hit.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ddbguard_dbe::{KeyUnavailableReason, KeyringError, KeyringFuture};

use super::{DynamoKeyStore, KeyStoreError};
use crate::arn::KmsArn;
use crate::hierarchy::{BranchKey, BranchKeySource};
use crate::kms::KmsKeyringError;
use crate::load_cache::LoadCache;

/// Loads branch keys (uncached).
pub trait BranchKeyLoader: Send + Sync + fmt::Debug {
    /// The active version of a branch key.
    fn load_active<'a>(&'a self, branch_key_id: &'a str) -> KeyringFuture<'a, BranchKey>;
    /// One version (UUID bytes) of a branch key.
    fn load_version<'a>(&'a self, branch_key_id: &'a str, version: &'a [u8; 16]) -> KeyringFuture<'a, BranchKey>;
}

/// Cache bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long an unwrapped branch key is used before it is loaded again (also how long encryption keeps using
    /// an active version after a rotation).
    pub ttl: Duration,
    /// At most this many branch key versions are held (each is 32 bytes plus bookkeeping).
    pub max_entries: usize,
    /// How long a failed load answers for its key before the next caller loads again.
    pub failure_ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            ttl: Duration::from_secs(600),
            max_entries: 1000,
            failure_ttl: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Slot {
    Active(String),
    Version(String, [u8; 16]),
}

/// The cache itself: slots for "the active version of id" and "version v of id" (see `crate::load_cache`).
pub struct BranchKeyCache {
    settings: CacheSettings,
    cache: LoadCache<Slot, BranchKey, KeyringError>,
}

impl fmt::Debug for BranchKeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BranchKeyCache")
            .field("settings", &self.settings)
            .field("entries", &self.len())
            .field("loads", &self.loads())
            .finish()
    }
}

impl BranchKeyCache {
    /// An empty cache (a zero bound is raised to one entry).
    pub fn new(settings: CacheSettings) -> BranchKeyCache {
        BranchKeyCache {
            settings,
            cache: LoadCache::new(
                "branch_key",
                Some(settings.ttl),
                settings.failure_ttl,
                settings.max_entries,
            ),
        }
    }

    /// Loads started (cache misses that went to the loader).
    pub fn loads(&self) -> u64 {
        self.cache.loads()
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.cache.hits()
    }

    /// Entries held (loaded or loading).
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A [`BranchKeySource`] that caches what a [`BranchKeyLoader`] loads.
#[derive(Debug)]
pub struct CachingBranchKeySource<L> {
    loader: L,
    cache: BranchKeyCache,
}

impl<L: BranchKeyLoader> CachingBranchKeySource<L> {
    /// `loader` behind a cache with these bounds.
    pub fn new(loader: L, settings: CacheSettings) -> CachingBranchKeySource<L> {
        CachingBranchKeySource {
            loader,
            cache: BranchKeyCache::new(settings),
        }
    }

    /// The cache (for its counters).
    pub fn cache(&self) -> &BranchKeyCache {
        &self.cache
    }

    /// The loader.
    pub fn loader(&self) -> &L {
        &self.loader
    }
}

impl<L: BranchKeyLoader> BranchKeySource for CachingBranchKeySource<L> {
    fn active<'a>(&'a self, branch_key_id: &'a str) -> KeyringFuture<'a, Arc<BranchKey>> {
        Box::pin(async move {
            let (key, loaded) = self
                .cache
                .cache
                .get_or_load(Slot::Active(branch_key_id.to_owned()), || {
                    self.loader.load_active(branch_key_id)
                })
                .await?;
            // What encrypts now is what decrypts next: no second load for the same version.
            self.cache.cache.offer(
                Slot::Version(branch_key_id.to_owned(), key.version),
                key.clone(),
                loaded,
            );
            Ok(key)
        })
    }

    fn version<'a>(&'a self, branch_key_id: &'a str, version: &'a [u8; 16]) -> KeyringFuture<'a, Arc<BranchKey>> {
        Box::pin(async move {
            self.cache
                .cache
                .get_or_load(Slot::Version(branch_key_id.to_owned(), *version), || {
                    self.loader.load_version(branch_key_id, version)
                })
                .await
                .map(|(key, _)| key)
        })
    }
}

impl From<KeyStoreError> for KeyringError {
    fn from(e: KeyStoreError) -> KeyringError {
        let message = e.to_string();
        match e {
            KeyStoreError::Kms(k) => KmsKeyringError::Kms(k).into(),
            // The record names a branch key version this region's key store does not have (yet).
            KeyStoreError::NotFound { branch_key_id, .. } => KeyringError::KeyUnavailable {
                reason: KeyUnavailableReason::NotFound,
                key: branch_key_id,
                message,
            },
            KeyStoreError::KeyMismatch { stored, .. } => {
                if KmsArn::parse(&stored).is_ok_and(|a| a.is_mrk()) {
                    KeyringError::NoMatchingKey { message }
                } else {
                    KeyringError::KeyNotMrk { key: stored, message }
                }
            }
            KeyStoreError::Dynamo {
                transient: true, table, ..
            } => KeyringError::Throttled { key: table, message },
            // Not the record's fault: every record under this key store would fail alike. `Other` makes it
            // key_unavailable with the message that names the logical name to check.
            KeyStoreError::NotAuthentic { .. } => KeyringError::Other { message },
            _ => KeyringError::Other { message },
        }
    }
}

impl<D: ddbguard_ddb::DynamoApi> BranchKeyLoader for DynamoKeyStore<D> {
    fn load_active<'a>(&'a self, branch_key_id: &'a str) -> KeyringFuture<'a, BranchKey> {
        Box::pin(async move { Ok(self.active_branch_key(branch_key_id).await?) })
    }

    fn load_version<'a>(&'a self, branch_key_id: &'a str, version: &'a [u8; 16]) -> KeyringFuture<'a, BranchKey> {
        Box::pin(async move {
            let v = uuid::Uuid::from_bytes(*version).to_string();
            Ok(self.branch_key_version(branch_key_id, &v).await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::time::Instant;

    use zeroize::Zeroizing;

    use super::*;
    use crate::test_metrics::sample;

    const V1: &str = "e9ce18a3-edb5-4272-9f86-1cacb7997ff6";
    const V2: &str = "0d7a9d2c-5b8e-4a51-9d1b-2f6a1c3e4b5d";

    /// Counts loads; each load takes 10 ms (so concurrent callers overlap) and may fail.
    #[derive(Debug, Default)]
    struct CountingLoader {
        loads: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    impl CountingLoader {
        fn key(id: &str, version: &str) -> BranchKey {
            BranchKey::new(id, version, Zeroizing::new([3; 32])).unwrap()
        }
        async fn load(&self, id: &str, version: &str) -> Result<BranchKey, KeyringError> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(KeyringError::Other {
                    message: "injected".into(),
                });
            }
            Ok(Self::key(id, version))
        }
    }

    impl BranchKeyLoader for CountingLoader {
        fn load_active<'a>(&'a self, id: &'a str) -> KeyringFuture<'a, BranchKey> {
            Box::pin(self.load(id, V1))
        }
        fn load_version<'a>(&'a self, id: &'a str, v: &'a [u8; 16]) -> KeyringFuture<'a, BranchKey> {
            Box::pin(async move { self.load(id, &uuid::Uuid::from_bytes(*v).to_string()).await })
        }
    }

    fn source(ttl_secs: u64, max: usize) -> Arc<CachingBranchKeySource<CountingLoader>> {
        Arc::new(CachingBranchKeySource::new(
            CountingLoader::default(),
            CacheSettings {
                ttl: Duration::from_secs(ttl_secs),
                max_entries: max,
                failure_ttl: Duration::from_secs(1),
            },
        ))
    }

    fn uuid(v: &str) -> [u8; 16] {
        *uuid::Uuid::parse_str(v).unwrap().as_bytes()
    }

    /// 50 tasks looking up version V2 of `bk` at once.
    fn fifty_concurrent_lookups(
        s: &Arc<CachingBranchKeySource<CountingLoader>>,
    ) -> Vec<tokio::task::JoinHandle<Result<[u8; 16], KeyringError>>> {
        (0..50)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.version("bk", &uuid(V2)).await.map(|k| k.version) })
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_make_one_load() {
        let s = source(60, 10);
        for t in fifty_concurrent_lookups(&s) {
            assert_eq!(t.await.unwrap().unwrap(), uuid(V2));
        }
        assert_eq!(s.loader().loads.load(Ordering::SeqCst), 1);
        assert_eq!(s.cache().loads(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn active_key_also_serves_its_version_and_expires() {
        let s = source(60, 10);
        let k = s.active("bk").await.unwrap();
        assert_eq!(k.version, uuid(V1));
        s.version("bk", &uuid(V1)).await.unwrap();
        s.active("bk").await.unwrap();
        assert_eq!(s.loader().loads.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        s.version("bk", &uuid(V1)).await.unwrap();
        assert_eq!(s.loader().loads.load(Ordering::SeqCst), 2, "expired after the TTL");
    }

    /// Hits and loads go to the metrics as they go to the in-process counts; a caller that waits for a load
    /// in flight is neither.
    #[tokio::test(start_paused = true)]
    async fn hits_and_loads_are_exported() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        let local = metrics::set_default_local_recorder(&recorder);
        let s = source(60, 10);
        s.active("bk").await.unwrap();
        s.version("bk", &uuid(V1)).await.unwrap();
        s.active("bk").await.unwrap();
        tokio::time::advance(Duration::from_secs(61)).await;
        s.version("bk", &uuid(V1)).await.unwrap();
        drop(local);
        let text = metrics.render();
        let count = |what: &str| {
            sample(
                &text,
                &format!("ddbguard_key_cache_{what}_total{{cache=\"branch_key\"}}"),
            )
        };
        assert_eq!((s.cache().hits(), s.cache().loads()), (2, 2));
        assert_eq!((count("hits"), count("loads")), (Some(2.0), Some(2.0)), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn size_is_bounded_and_failures_are_kept_only_briefly() {
        let s = source(600, 3);
        for i in 0..10u8 {
            let mut v = uuid(V2);
            v[15] = i;
            s.version("bk", &v).await.unwrap();
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(s.cache().len(), 3);
        s.loader().fail.store(true, Ordering::SeqCst);
        assert!(s.version("other", &uuid(V2)).await.is_err());
        assert!(s.version("other", &uuid(V2)).await.is_err());
        assert_eq!(
            s.loader().loads.load(Ordering::SeqCst),
            11,
            "a failure answers for its key for failure_ttl"
        );
        tokio::time::advance(Duration::from_millis(1_001)).await;
        s.loader().fail.store(false, Ordering::SeqCst);
        assert!(
            s.version("other", &uuid(V2)).await.is_ok(),
            "loaded again after failure_ttl"
        );
        assert_eq!(s.loader().loads.load(Ordering::SeqCst), 12);
        assert!(s.cache().len() <= 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_offered_key_expires_with_the_entry_it_came_from() {
        let s = source(60, 10);
        let key = Arc::new(CountingLoader::key("bk", V1));
        let slot = Slot::Version("bk".into(), uuid(V1));
        s.cache()
            .cache
            .offer(slot, key, Instant::now() - Duration::from_secs(50));
        s.version("bk", &uuid(V1)).await.unwrap();
        assert_eq!(s.loader().loads.load(Ordering::SeqCst), 0, "fresh for 10 more seconds");
        tokio::time::advance(Duration::from_secs(11)).await;
        s.version("bk", &uuid(V1)).await.unwrap();
        assert_eq!(
            s.loader().loads.load(Ordering::SeqCst),
            1,
            "60 s after the original load"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn callers_waiting_for_a_failing_load_share_its_failure() {
        let s = source(60, 10);
        s.loader().fail.store(true, Ordering::SeqCst);
        for t in fifty_concurrent_lookups(&s) {
            assert!(matches!(t.await.unwrap(), Err(KeyringError::Other { .. })));
        }
        assert_eq!(s.loader().loads.load(Ordering::SeqCst), 1, "one load for 50 callers");
    }

    #[test]
    fn key_store_errors_become_verdict_errors() {
        let nf = KeyStoreError::NotFound {
            table: "t".into(),
            branch_key_id: "bk".into(),
            item_type: "branch:version:x".into(),
        };
        assert!(matches!(
            KeyringError::from(nf),
            KeyringError::KeyUnavailable {
                reason: KeyUnavailableReason::NotFound,
                ..
            }
        ));
        let single = KeyStoreError::KeyMismatch {
            branch_key_id: "bk".into(),
            stored: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab".into(),
            configured: "arn:aws:kms:us-east-1:111122223333:key/mrk-1".into(),
        };
        assert!(matches!(KeyringError::from(single), KeyringError::KeyNotMrk { .. }));
        let throttled = KeyStoreError::Dynamo {
            operation: "GetItem",
            table: "t".into(),
            message: "ThrottlingException".into(),
            transient: true,
        };
        assert!(matches!(KeyringError::from(throttled), KeyringError::Throttled { .. }));
    }
}
