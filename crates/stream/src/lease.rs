//! Shard leases: who reads which shard, and how far it got.
//!
//! One lease per shard. Every ownership change (take, renew, release) increments `counter`; other workers watch the
//! counter with their own monotonic clock and consider a lease expired when it has not moved for the lease duration
//! (KCL's scheme: no clock synchronisation between workers is needed). A take is a conditional write on the counter
//! it observed, so two workers can never both win. The winner gets `token` = the new counter; checkpoints and
//! releases are conditional on `owner` and `token`, so a worker that lost its lease (stolen, or it paused past the
//! timeout) can no longer move the checkpoint.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::error::LeaseError;
use crate::model::SequenceNumber;

/// The last processed position of a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Sequence number of the last record the sink accepted.
    pub sequence_number: SequenceNumber,
    /// Approximate creation time of that record: a checkpoint older than the retention period is a gap.
    pub record_time: Option<SystemTime>,
}

/// One lease row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The shard id (the lease key).
    pub shard_id: String,
    /// The worker holding the lease, if any.
    pub owner: Option<String>,
    /// Incremented by every take, renewal and release; watched by others to detect a dead owner.
    pub counter: u64,
    /// The fencing token of the current owner (the counter value at take time).
    pub token: u64,
    /// The last processed position.
    pub checkpoint: Option<Checkpoint>,
    /// Parent shard ids: this shard is read only after they are finished.
    pub parent_shard_ids: Vec<String>,
    /// The shard is closed and was read to its end; it is never leased again.
    pub finished: bool,
}

impl Lease {
    /// A fresh, unowned lease for a shard.
    pub fn new(shard_id: impl Into<String>, parent_shard_ids: Vec<String>) -> Self {
        Self {
            shard_id: shard_id.into(),
            owner: None,
            counter: 0,
            token: 0,
            checkpoint: None,
            parent_shard_ids,
            finished: false,
        }
    }
}

/// Proof of holding a lease, passed back on every conditional write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The shard.
    pub shard_id: String,
    /// This worker.
    pub owner: String,
    /// The fencing token returned by the take.
    pub token: u64,
}

/// Storage of leases and checkpoints. [`DynamoLeaseStore`](crate::DynamoLeaseStore) for production,
/// [`MemoryLeaseStore`] for tests and single-process runs.
pub trait LeaseStore: Send + Sync + 'static {
    /// Prepares the store (e.g. creates the lease table if missing). Called once by the reader before anything else.
    fn initialize(&self) -> impl Future<Output = Result<(), LeaseError>> + Send {
        async { Ok(()) }
    }

    /// All leases.
    fn list_leases(&self) -> impl Future<Output = Result<Vec<Lease>, LeaseError>> + Send;

    /// Creates the lease unless one exists for the shard. Returns whether it was created.
    fn create_lease_if_absent(&self, lease: &Lease) -> impl Future<Output = Result<bool, LeaseError>> + Send;

    /// Takes the lease for `owner` if its counter is still `expected_counter` (unowned, expired or stolen).
    /// Increments the counter and returns the grant. [`LeaseError::Conflict`] if someone moved first.
    fn take_lease(
        &self,
        shard_id: &str,
        owner: &str,
        expected_counter: u64,
    ) -> impl Future<Output = Result<LeaseGrant, LeaseError>> + Send;

    /// Heartbeat: increments the counter if the grant still holds. Returns the new counter.
    fn renew_lease(&self, grant: &LeaseGrant) -> impl Future<Output = Result<u64, LeaseError>> + Send;

    /// Writes the checkpoint (and `finished`) if the grant still holds.
    fn checkpoint(
        &self,
        grant: &LeaseGrant,
        checkpoint: Option<&Checkpoint>,
        finished: bool,
    ) -> impl Future<Output = Result<(), LeaseError>> + Send;

    /// Gives the lease up (owner cleared, counter incremented) if the grant still holds.
    fn release_lease(&self, grant: &LeaseGrant) -> impl Future<Output = Result<(), LeaseError>> + Send;

    /// Deletes a finished lease (its shard is gone from the stream). [`LeaseError::Conflict`] if it is not
    /// finished.
    fn delete_finished_lease(&self, shard_id: &str) -> impl Future<Output = Result<(), LeaseError>> + Send;
}

/// In-memory [`LeaseStore`]; clones share the same table, so several readers in one process can compete.
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

    /// The current lease of a shard (for tests and diagnostics).
    pub fn get(&self, shard_id: &str) -> Option<Lease> {
        self.lock().get(shard_id).cloned()
    }

    /// Inserts or replaces a lease (tests: seed a checkpoint).
    pub fn put(&self, lease: Lease) {
        self.lock().insert(lease.shard_id.clone(), lease);
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
        match map.get_mut(&grant.shard_id) {
            Some(l) if l.owner.as_deref() == Some(grant.owner.as_str()) && l.token == grant.token => Ok(f(l)),
            _ => Err(LeaseError::Conflict(grant.shard_id.clone())),
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
        if map.contains_key(&lease.shard_id) {
            return Ok(false);
        }
        map.insert(lease.shard_id.clone(), lease.clone());
        Ok(true)
    }

    async fn take_lease(&self, shard_id: &str, owner: &str, expected_counter: u64) -> Result<LeaseGrant, LeaseError> {
        self.delay().await;
        let mut map = self.lock();
        match map.get_mut(shard_id) {
            Some(l) if l.counter == expected_counter && !l.finished => {
                l.counter += 1;
                l.token = l.counter;
                l.owner = Some(owner.to_owned());
                Ok(LeaseGrant {
                    shard_id: shard_id.to_owned(),
                    owner: owner.to_owned(),
                    token: l.token,
                })
            }
            _ => Err(LeaseError::Conflict(shard_id.to_owned())),
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
        checkpoint: Option<&Checkpoint>,
        finished: bool,
    ) -> Result<(), LeaseError> {
        self.delay().await;
        self.with_held(grant, |l| {
            if let Some(c) = checkpoint {
                l.checkpoint = Some(c.clone());
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

    async fn delete_finished_lease(&self, shard_id: &str) -> Result<(), LeaseError> {
        self.delay().await;
        let mut map = self.lock();
        match map.get(shard_id) {
            Some(l) if l.finished => {
                map.remove(shard_id);
                Ok(())
            }
            None => Ok(()),
            Some(_) => Err(LeaseError::Conflict(shard_id.to_owned())),
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
        let a = store.take_lease("s1", "a", 0).await.unwrap();
        assert_eq!(
            store.take_lease("s1", "b", 0).await,
            Err(LeaseError::Conflict("s1".into()))
        );
        // b observes the new counter and takes over (as after an expiry).
        let b = store.take_lease("s1", "b", 1).await.unwrap();
        let cp = Checkpoint {
            sequence_number: "5".into(),
            record_time: None,
        };
        assert!(matches!(
            store.checkpoint(&a, Some(&cp), false).await,
            Err(LeaseError::Conflict(_))
        ));
        assert!(matches!(store.renew_lease(&a).await, Err(LeaseError::Conflict(_))));
        store.checkpoint(&b, Some(&cp), false).await.unwrap();
        store.release_lease(&b).await.unwrap();
        let l = store.get("s1").unwrap();
        assert_eq!(l.owner, None);
        assert_eq!(l.checkpoint, Some(cp));
    }
}
