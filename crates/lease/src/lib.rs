//! Leases keyed by a string, and the machinery that balances them over workers.
//!
//! A lease says who works on what (a stream shard, a backfill scan segment) and how far they got. This crate knows
//! no streams, no tables being scanned and no cryptography; the stream reader and the backfill are its users.
//!
//! Module map:
//! - [`lease`]: [`Lease`] (key, owner, counter, fencing token, opaque [`Position`], dependencies, finished),
//!   [`LeaseGrant`] and [`Taken`].
//! - [`store`]: the [`LeaseStore`] trait and [`MemoryLeaseStore`]; [`dynamo`]: [`DynamoLeaseStore`], leases in a
//!   DynamoDB table through the project's DynamoDB adapter.
//! - [`plan`]: the balancing plan, a pure function (fair share, take free leases, steal one from an overloaded
//!   worker).
//! - [`coordinator`]: [`Coordinator`], which takes, renews, runs one task per held lease with fenced checkpoints
//!   ([`LeaseContext`]), and releases everything within a deadline at shutdown.
//!
//! Guarantees: at most one worker holds a lease at a time as far as the store is concerned (every write is
//! conditional on the owner and its fencing token); a worker that lost a lease can no longer move its position;
//! after a worker dies its leases are taken over once their counter has not moved for the lease duration.

#![warn(missing_docs)]

pub mod coordinator;
pub mod dynamo;
pub mod error;
pub mod lease;
pub mod plan;
pub mod store;

#[cfg(test)]
mod tests;

pub use coordinator::{Coordinator, CoordinatorConfig, Done, LeaseContext, ShutdownReport, TaskEnd};
pub use ddbguard_ddb::Backoff;
pub use dynamo::{DynamoLeaseStore, LeaseTable};
pub use error::LeaseError;
pub use lease::{Lease, LeaseGrant, Position, Taken};
pub use store::{LeaseStore, MemoryLeaseStore};
