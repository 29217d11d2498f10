//! Segmented, resumable re-encryption of plaintext items (`ddbguard backfill` and `ddbguard migrate`).
//!
//! Module map:
//! - [`audit`]: [`audit()`] — every item of a table given `verify`'s verdict, and compared with its copy in
//!   another replica; [`AuditReport`].
//! - [`engine`]: [`run`] — a parallel scan whose segments are leases of `ddbguard-lease` in a ledger table, each
//!   page rewritten then checkpointed; [`BackfillConfig`].
//! - [`rewrite`]: one item — classify (plaintext, DB-ESDK, legacy), encrypt with `ddbguard-dbe`, write back with a
//!   condition that lets a concurrent application write win, re-read and retry on conflict.
//! - [`limiter`]: budgets of consumed read and write capacity and of KMS requests.
//! - [`report`]: the running tally, progress snapshots and the final [`Report`].
//! - [`ledger`]: records of applied migrations beside the segment leases.
//! - [`position`]: a segment's `LastEvaluatedKey` as text in its lease.
//! - [`scan`]: one scan page within a read budget, shared by the engine and the audit.
//! - [`table`]: the table and key schema check both make before scanning.
//!
//! Every DynamoDB call goes through the `ddbguard-ddb` adapter, so the whole engine runs over its fakes in tests.

#![warn(missing_docs)]

pub mod audit;
pub mod engine;
pub mod ledger;
pub mod limiter;
pub mod position;
pub mod report;
pub mod rewrite;
pub mod scan;
pub mod table;

pub use audit::{AuditConfig, AuditError, AuditReport, Replica, audit};
pub use engine::{BackfillConfig, BackfillError, ItemFilter, default_segments, run};
pub use report::{Completion, Progress, Report};
pub use rewrite::{FromLegacy, Outcome, RewriteSettings, Target};

#[cfg(test)]
mod tests;
