//! DynamoDB Streams reader for `ddbguard verify`.
//!
//! Module map:
//! - [`api`]: the narrow [`StreamsApi`] trait (DescribeStream, GetShardIterator, GetRecords) and [`SdkStreams`].
//! - Leases come from `ddbguard-lease` (one lease per shard, keyed by shard id, the checkpoint as its position):
//!   [`LeaseStore`], [`MemoryLeaseStore`], [`DynamoLeaseStore`] are re-exported here.
//! - [`reader`]: [`StreamReader`], its [`ReaderConfig`], the [`RecordSink`] callback and the [`RunSummary`].
//! - [`status`]: [`ReaderStatus`] snapshots (leases held, per-shard lag, stalled shards).
//! - [`model`]: records, shards, sequence numbers, checkpoints, gaps. [`error`]: typed errors.
//! - `fake` (feature `fake`): `FakeStreams`, a scripted in-process stream with fault injection.
//!
//! Guarantees (see the crate README): at-least-once delivery, order within a shard, children after parents,
//! gaps always reported, bounded memory.
//!
//! ```no_run
//! use ddbguard_stream::{MemoryLeaseStore, ReaderConfig, RecordBatch, RecordSink, SdkStreams, SinkError, StreamReader};
//!
//! struct Print;
//! impl RecordSink for Print {
//!     async fn process(&self, batch: &RecordBatch) -> Result<(), SinkError> {
//!         println!("{} records from {}", batch.records.len(), batch.shard_id);
//!         Ok(())
//!     }
//! }
//!
//! # async fn example(client: aws_sdk_dynamodbstreams::Client) -> Result<(), Box<dyn std::error::Error>> {
//! let config = ReaderConfig::new("arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/x", "worker-1");
//! let reader = StreamReader::new(config, SdkStreams::new(client), MemoryLeaseStore::new(), Print)?;
//! let summary = reader.run(tokio::signal::ctrl_c()).await?;
//! println!("{} records", summary.records);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod api;
pub mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod model;
pub mod reader;
pub mod status;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use api::{SdkStreams, StreamsApi};
pub use ddbguard_lease::{DynamoLeaseStore, Lease, LeaseError, LeaseStore, MemoryLeaseStore};
pub use error::{ReaderError, SinkError, StreamsError};
pub use model::{
    AttributeValue, Checkpoint, EventName, GapReason, IteratorPosition, RecordBatch, RecordsPage, SequenceNumber,
    Shard, ShardPage, StreamGap, StreamRecord, table_name_from_stream_arn,
};
pub use reader::{ReaderConfig, RecordSink, RunSummary, StartPosition, StreamReader};
pub use status::{ReaderStatus, ShardStatus, StatusHandle};
