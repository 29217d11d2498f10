//! Storage of leases: the [`LeaseStore`] trait and the in-memory store.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::LeaseError;
use crate::lease::{Lease, LeaseGrant, Position, Taken};

/// Storage of leases and their positions. [`DynamoLeaseStore`](crate::DynamoLeaseStore) for production,
/// [`MemoryLeaseStore`] for tests and single-process runs.
///
/// Every write but [`create_lease_if_absent`](LeaseStore::create_lease_if_absent) and
/// [`take_lease`](LeaseStore::take_lease) is fenced by a [`LeaseGrant`]: it fails with [`LeaseError::Conflict`]
/// once the lease has another owner or token.
pub trait LeaseStore: Send + Sync + 'static {
    /// Prepares the store (e.g. creates the lease table if missing). Called once before anything else.
    fn initialize(&self) -> impl Future<Output = Result<(), LeaseError>> + Send {
        async { Ok(()) }
    }

    /// All leases.
    fn list_leases(&self) -> impl Future<Output = Result<Vec<Lease>, LeaseError>> + Send;

    /// Creates the lease unless one exists with its key. Returns whether it was created.
    fn create_lease_if_absent(&self, lease: &Lease) -> impl Future<Output = Result<bool, LeaseError>> + Send;

    /// Takes the lease for `owner` if its counter is still `expected_counter` (unowned, expired or stolen) and it
    /// is not finished. Increments the counter and returns the grant with the lease as written.
    /// [`LeaseError::Conflict`] if someone moved first.
    fn take_lease(
        &self,
        key: &str,
        owner: &str,
        expected_counter: u64,
    ) -> impl Future<Output = Result<Taken, LeaseError>> + Send;

    /// Heartbeat: increments the counter if the grant still holds. Returns the new counter.
    fn renew_lease(&self, grant: &LeaseGrant) -> impl Future<Output = Result<u64, LeaseError>> + Send;

    /// Writes the position (when given) and `finished` if the grant still holds.
    fn checkpoint(
        &self,
        grant: &LeaseGrant,
        position: Option<&Position>,
        finished: bool,
    ) -> impl Future<Output = Result<(), LeaseError>> + Send;

    /// Gives the lease up (owner cleared, counter incremented) if the grant still holds.
    fn release_lease(&self, grant: &LeaseGrant) -> impl Future<Output = Result<(), LeaseError>> + Send;

    /// Deletes a finished lease (its work is gone for good). [`LeaseError::Conflict`] if it is not finished.
    fn delete_finished_lease(&self, key: &str) -> impl Future<Output = Result<(), LeaseError>> + Send;
}

impl<T: LeaseStore> LeaseStore for Arc<T> {
    fn initialize(&self) -> impl Future<Output = Result<(), LeaseError>> + Send {
        (**self).initialize()
    }
    fn list_leases(&self) -> impl Future<Output = Result<Vec<Lease>, LeaseError>> + Send {
        (**self).list_leases()
    }
    fn create_lease_if_absent(&self, lease: &Lease) -> impl Future<Output = Result<bool, LeaseError>> + Send {
        (**self).create_lease_if_absent(lease)
    }
    fn take_lease(
        &self,
        key: &str,
        owner: &str,
        expected_counter: u64,
    ) -> impl Future<Output = Result<Taken, LeaseError>> + Send {
        (**self).take_lease(key, owner, expected_counter)
    }
    fn renew_lease(&self, grant: &LeaseGrant) -> impl Future<Output = Result<u64, LeaseError>> + Send {
        (**self).renew_lease(grant)
    }
    fn checkpoint(
        &self,
        grant: &LeaseGrant,
        position: Option<&Position>,
        finished: bool,
    ) -> impl Future<Output = Result<(), LeaseError>> + Send {
        (**self).checkpoint(grant, position, finished)
    }
    fn release_lease(&self, grant: &LeaseGrant) -> impl Future<Output = Result<(), LeaseError>> + Send {
        (**self).release_lease(grant)
    }
    fn delete_finished_lease(&self, key: &str) -> impl Future<Output = Result<(), LeaseError>> + Send {
        (**self).delete_finished_lease(key)
    }
}

/// In-memory [`LeaseStore`]; clones share the same table, so several workers in one process can compete.
#[derive(Clone, Debug, Default)]
pub struct MemoryLeaseStore {
    leases: Arc<Mutex<BTreeMap<String, Lease>>>,
    /// Optional artificial latency per call, to widen race windows in tests.
    latency: Option<Duration>,
}

impl MemoryLeaseStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same table, answering every call after `latency` (tests: widen race windows).
    pub fn with_latency(&self, latency: Duration) -> Self {
        Self {
            leases: self.leases.clone(),
            latency: Some(latency),
        }
    }

    /// The current lease of a key (for tests and diagnostics).
    pub fn get(&self, key: &str) -> Option<Lease> {
        self.lock().get(key).cloned()
    }

    /// Inserts or replaces a lease (tests: seed a position).
    pub fn put(&self, lease: Lease) {
        self.lock().insert(lease.key.clone(), lease);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Lease>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn delay(&self) {
        if let Some(d) = self.latency {
            tokio::time::sleep(d).await;
        }
    }

    fn with_held<T>(&self, grant: &LeaseGrant, f: impl FnOnce(&mut Lease) -> T) -> Result<T, LeaseError> {
        let mut map = self.lock();
        match map.get_mut(&grant.key) {
            Some(l) if l.owner.as_deref() == Some(grant.owner.as_str()) && l.token == grant.token => Ok(f(l)),
            _ => Err(LeaseError::Conflict(grant.key.clone())),
        }
    }
}

impl LeaseStore for MemoryLeaseStore {
    async fn list_leases(&self) -> Result<Vec<Lease>, LeaseError> {
        self.delay().await;
        Ok(self.lock().values().cloned().collect())
    }

    async fn create_lease_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        self.delay().await;
        let mut map = self.lock();
        if map.contains_key(&lease.key) {
            return Ok(false);
        }
        map.insert(lease.key.clone(), lease.clone());
        Ok(true)
    }

    async fn take_lease(&self, key: &str, owner: &str, expected_counter: u64) -> Result<Taken, LeaseError> {
        self.delay().await;
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(l) if l.counter == expected_counter && !l.finished => {
                l.counter += 1;
                l.token = l.counter;
                l.owner = Some(owner.to_owned());
                Ok(Taken {
                    grant: LeaseGrant {
                        key: key.to_owned(),
                        owner: owner.to_owned(),
                        token: l.token,
                    },
                    lease: l.clone(),
                })
            }
            _ => Err(LeaseError::Conflict(key.to_owned())),
        }
    }

    async fn renew_lease(&self, grant: &LeaseGrant) -> Result<u64, LeaseError> {
        self.delay().await;
        self.with_held(grant, |l| {
            l.counter += 1;
            l.counter
        })
    }

    async fn checkpoint(
        &self,
        grant: &LeaseGrant,
        position: Option<&Position>,
        finished: bool,
    ) -> Result<(), LeaseError> {
        self.delay().await;
        self.with_held(grant, |l| {
            if let Some(p) = position {
                l.position = Some(p.clone());
            }
            l.finished = finished;
        })
    }

    async fn release_lease(&self, grant: &LeaseGrant) -> Result<(), LeaseError> {
        self.delay().await;
        self.with_held(grant, |l| {
            l.owner = None;
            l.counter += 1;
        })
    }

    async fn delete_finished_lease(&self, key: &str) -> Result<(), LeaseError> {
        self.delay().await;
        let mut map = self.lock();
        match map.get(key) {
            Some(l) if l.finished => {
                map.remove(key);
                Ok(())
            }
            None => Ok(()),
            Some(_) => Err(LeaseError::Conflict(key.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_one_worker_wins_a_take_and_fencing_holds() {
        let store = MemoryLeaseStore::new();
        assert!(store.create_lease_if_absent(&Lease::new("s1", vec![])).await.unwrap());
        assert!(!store.create_lease_if_absent(&Lease::new("s1", vec![])).await.unwrap());
        let a = store.take_lease("s1", "a", 0).await.unwrap().grant;
        assert_eq!(
            store.take_lease("s1", "b", 0).await,
            Err(LeaseError::Conflict("s1".into()))
        );
        // b observes the new counter and takes over (as after an expiry).
        let b = store.take_lease("s1", "b", 1).await.unwrap();
        assert_eq!((b.lease.owner.as_deref(), b.lease.token), (Some("b"), 2));
        let b = b.grant;
        let p = Position::new("5");
        assert!(matches!(
            store.checkpoint(&a, Some(&p), false).await,
            Err(LeaseError::Conflict(_))
        ));
        assert!(matches!(store.renew_lease(&a).await, Err(LeaseError::Conflict(_))));
        assert!(matches!(store.release_lease(&a).await, Err(LeaseError::Conflict(_))));
        store.checkpoint(&b, Some(&p), false).await.unwrap();
        store.release_lease(&b).await.unwrap();
        let l = store.get("s1").unwrap();
        assert_eq!(l.owner, None);
        assert_eq!(l.position, Some(p));
    }

    #[tokio::test]
    async fn the_take_returns_the_position_written_after_the_last_listing() {
        let store = MemoryLeaseStore::new();
        store.create_lease_if_absent(&Lease::new("s1", vec![])).await.unwrap();
        let old = store.take_lease("s1", "a", 0).await.unwrap().grant;
        store.checkpoint(&old, Some(&Position::new("7")), false).await.unwrap();
        // b listed before that checkpoint and takes over on the counter it saw last.
        let counter = store.get("s1").unwrap().counter;
        let taken = store.take_lease("s1", "b", counter).await.unwrap();
        assert_eq!(taken.lease.position, Some(Position::new("7")));
    }

    #[tokio::test]
    async fn finished_leases_are_never_taken_and_only_they_are_deleted() {
        let store = MemoryLeaseStore::new();
        store.create_lease_if_absent(&Lease::new("s1", vec![])).await.unwrap();
        assert!(matches!(
            store.delete_finished_lease("s1").await,
            Err(LeaseError::Conflict(_))
        ));
        let g = store.take_lease("s1", "a", 0).await.unwrap().grant;
        store.checkpoint(&g, None, true).await.unwrap();
        let counter = store.get("s1").unwrap().counter;
        assert!(matches!(
            store.take_lease("s1", "b", counter).await,
            Err(LeaseError::Conflict(_))
        ));
        store.delete_finished_lease("s1").await.unwrap();
        assert_eq!(store.get("s1"), None);
        store.delete_finished_lease("s1").await.unwrap();
    }
}
