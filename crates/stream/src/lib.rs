//! DynamoDB Streams reader for `ddbguard verify`.
//!
//! This crate will own shard discovery and lineage, one lease per shard in a DynamoDB lease table,
//! checkpoints, iterator refresh, throttling backoff and trimmed-data gap detection (architecture §5).
//! It is intentionally empty until the stream-verifier issue lands: nothing here pretends to work yet.
