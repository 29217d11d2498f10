//! Errors of lease stores.

use thiserror::Error;

/// An error of a [`LeaseStore`](crate::LeaseStore) call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LeaseError {
    /// A conditional write failed: someone else holds or changed the lease. The caller must stop acting on it.
    #[error("lease conflict on {0}")]
    Conflict(String),
    /// The lease table throttled the request: back off and retry.
    #[error("lease store throttled: {0}")]
    Throttled(String),
    /// Anything else (table missing and not creatable, network, malformed item).
    #[error("lease store error: {0}")]
    Other(String),
}
