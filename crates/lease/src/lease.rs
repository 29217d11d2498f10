//! The lease row, its position and the proof of holding it.
//!
//! Every ownership change (take, renew, release) increments `counter`; other workers watch the counter with their
//! own monotonic clock and consider a lease expired when it has not moved for the lease duration (KCL's scheme: no
//! clock synchronisation between workers is needed). A take is a conditional write on the counter it observed, so
//! two workers can never both win. The winner gets `token` = the new counter; checkpoints and releases are
//! conditional on `owner` and `token`, so a worker that lost its lease (stolen, or it paused past the timeout) can
//! no longer move the position.

use std::time::SystemTime;

/// How far the holder of a lease got, in the user's own terms: a stream sequence number, a scan segment's
/// `LastEvaluatedKey` serialised as JSON, … The lease crate never interprets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The opaque position.
    pub value: String,
    /// When the data at this position was written, if the user knows it (a stream checkpoint older than the
    /// stream's retention is a gap).
    pub time: Option<SystemTime>,
}

impl Position {
    /// A position without a time.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            time: None,
        }
    }
}

/// One lease row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// What is leased (a shard id, a scan segment, …): the lease key.
    pub key: String,
    /// The worker holding the lease, if any.
    pub owner: Option<String>,
    /// Incremented by every take, renewal and release; watched by others to detect a dead owner.
    pub counter: u64,
    /// The fencing token of the current owner (the counter value at take time).
    pub token: u64,
    /// The last processed position.
    pub position: Option<Position>,
    /// Keys of leases that must be finished before this one is worked on (a stream shard's parents).
    pub dependencies: Vec<String>,
    /// The work is done; the lease is never taken again.
    pub finished: bool,
}

impl Lease {
    /// A fresh, unowned lease.
    pub fn new(key: impl Into<String>, dependencies: Vec<String>) -> Self {
        Self {
            key: key.into(),
            owner: None,
            counter: 0,
            token: 0,
            position: None,
            dependencies,
            finished: false,
        }
    }
}

/// Proof of holding a lease, passed back on every conditional write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The lease key.
    pub key: String,
    /// This worker.
    pub owner: String,
    /// The fencing token returned by the take.
    pub token: u64,
}

/// What a successful take returns: the grant and the lease as the take left it, so the new holder starts from the
/// position stored at that instant, not from an earlier listing (a previous owner may have checkpointed since).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The proof of holding.
    pub grant: LeaseGrant,
    /// The lease right after the take.
    pub lease: Lease,
}
