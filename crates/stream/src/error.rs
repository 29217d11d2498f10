//! Typed errors. Service refusals that change what the reader does (expired iterator, trimmed data, throttling,
//! not found) are separate variants; everything else is `Other`, retried with backoff.

use ddbguard_lease::LeaseError;
use thiserror::Error;

/// An error from a [`StreamsApi`](crate::StreamsApi) call.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StreamsError {
    /// The shard iterator is older than 15 minutes (or otherwise invalidated): get a new one from the checkpoint.
    #[error("shard iterator expired: {0}")]
    ExpiredIterator(String),
    /// The requested position is past the retention period (24 h): the records are gone.
    #[error("trimmed data access: {0}")]
    TrimmedDataAccess(String),
    /// LimitExceeded, ProvisionedThroughputExceeded or a throttling error: back off and retry.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The stream or shard does not exist (any more).
    #[error("resource not found: {0}")]
    ResourceNotFound(String),
    /// Anything else (network, internal server error, malformed response).
    #[error("streams error: {0}")]
    Other(String),
}

/// An error returned by [`StreamReader::run`](crate::StreamReader::run).
#[derive(Debug, Error)]
pub enum ReaderError {
    /// The configuration cannot work (e.g. zero batch size or lease duration).
    #[error("invalid reader configuration: {0}")]
    Config(String),
    /// The stream does not exist.
    #[error("stream not found: {0}")]
    StreamNotFound(String),
    /// The lease store could not be initialised (e.g. lease table could not be created).
    #[error("lease store: {0}")]
    LeaseStore(#[from] LeaseError),
}

/// An error returned by a [`RecordSink`](crate::RecordSink). The batch is not checkpointed and is offered again
/// after a backoff.
#[derive(Debug, Error)]
#[error("record sink failed: {message}")]
pub struct SinkError {
    /// What went wrong, for the log.
    pub message: String,
}

impl SinkError {
    /// Creates a sink error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}
