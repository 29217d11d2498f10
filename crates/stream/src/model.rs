//! Plain data types shared by the Streams API, the lease store and the reader.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::time::SystemTime;

pub use aws_sdk_dynamodbstreams::types::AttributeValue;
use ddbguard_lease::Position;

/// The last processed position of a shard, as stored in its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Sequence number of the last record the sink accepted.
    pub sequence_number: SequenceNumber,
    /// Approximate creation time of that record: a checkpoint older than the retention period is a gap.
    pub record_time: Option<SystemTime>,
}

impl Checkpoint {
    /// The checkpoint stored in a lease position.
    pub fn from_position(p: &Position) -> Self {
        Self {
            sequence_number: SequenceNumber::new(p.value.clone()),
            record_time: p.time,
        }
    }

    /// The lease position of this checkpoint.
    pub fn to_position(&self) -> Position {
        Position {
            value: self.sequence_number.as_str().to_owned(),
            time: self.record_time,
        }
    }
}

impl From<Checkpoint> for Position {
    fn from(c: Checkpoint) -> Self {
        c.to_position()
    }
}

/// A DynamoDB Streams sequence number.
///
/// The service hands these out as decimal strings of up to 40 digits that only grow within a shard (and a child's
/// are greater than its parent's). They do not fit in a `u128` reliably and must not be compared as strings, so
/// this type orders them numerically: fewer significant digits is smaller, equal lengths compare digit by digit.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(String);

impl SequenceNumber {
    /// Wraps a sequence number exactly as the service returned it.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The sequence number as the service spells it (what `AFTER_SEQUENCE_NUMBER` iterators need).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn significant(&self) -> &str {
        let t = self.0.trim_start_matches('0');
        if t.is_empty() { "0" } else { t }
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.significant(), other.significant());
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}

impl From<&str> for SequenceNumber {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

/// One shard as `DescribeStream` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// The shard id (`shardId-...`), unique within the stream; also the lease key.
    pub id: String,
    /// The shard this one was split from, if any. A child is read only after its parent is finished.
    pub parent_id: Option<String>,
    /// First sequence number of the shard.
    pub start: Option<SequenceNumber>,
    /// Last sequence number of a closed shard; `None` while the shard is open.
    pub end: Option<SequenceNumber>,
}

impl Shard {
    /// Whether the service has closed the shard (no new records will be appended).
    pub fn is_closed(&self) -> bool {
        self.end.is_some()
    }
}

/// One page of `DescribeStream`.
#[derive(Clone, Debug, Default)]
pub struct ShardPage {
    /// Shards on this page.
    pub shards: Vec<Shard>,
    /// Pass as `exclusive_start_shard_id` to get the next page; `None` on the last page.
    pub last_evaluated_shard_id: Option<String>,
}

/// Where a shard iterator starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IteratorPosition {
    /// The oldest record still retained (24 h).
    TrimHorizon,
    /// Just after the newest record: only records written from now on.
    Latest,
    /// At the given record.
    AtSequenceNumber(SequenceNumber),
    /// Just after the given record: how a checkpoint is resumed.
    AfterSequenceNumber(SequenceNumber),
}

/// The kind of change a stream record describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventName {
    /// A new item was written.
    Insert,
    /// An existing item was replaced or updated.
    Modify,
    /// An item was deleted (including TTL deletions).
    Remove,
    /// An event name this version does not know (absent, or added to the API later). The record is still
    /// delivered, so that it gets a (failing) verdict instead of stalling its shard.
    Unknown,
}

impl EventName {
    /// The name as the service spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::Insert => "INSERT",
            EventName::Modify => "MODIFY",
            EventName::Remove => "REMOVE",
            EventName::Unknown => "UNKNOWN",
        }
    }
}

/// One stream record, owned and detached from the SDK response.
///
/// Images stay in the SDK's `aws_sdk_dynamodbstreams::types::AttributeValue` (re-exported as
/// [`AttributeValue`](crate::AttributeValue)): the reader never looks inside them, and converting once in the
/// verifier into the item model of `ddbguard-dbe` avoids a second neutral copy here.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRecord {
    /// The service's unique id of the event (stable across redeliveries: usable for de-duplication).
    pub event_id: String,
    /// INSERT, MODIFY or REMOVE.
    pub event_name: EventName,
    /// Position of the record in its shard.
    pub sequence_number: SequenceNumber,
    /// When the change was written (second precision); the basis of the lag metric.
    pub approximate_creation_time: Option<SystemTime>,
    /// The item's primary key attributes.
    pub keys: HashMap<String, AttributeValue>,
    /// The item after the change (NEW_IMAGE / NEW_AND_OLD_IMAGES streams).
    pub new_image: Option<HashMap<String, AttributeValue>>,
    /// The item before the change (OLD_IMAGE / NEW_AND_OLD_IMAGES streams).
    pub old_image: Option<HashMap<String, AttributeValue>>,
    /// Size of the record as the service counts it.
    pub size_bytes: Option<i64>,
}

/// One page of `GetRecords`.
#[derive(Clone, Debug, Default)]
pub struct RecordsPage {
    /// Records in shard order.
    pub records: Vec<StreamRecord>,
    /// Iterator for the next call; `None` once a closed shard has been read to its end.
    pub next_iterator: Option<String>,
    /// Why each record the page left out could not be placed in its shard (no sequence number): the reader
    /// counts and alerts them under its table, which the API call does not know.
    pub left_out: Vec<String>,
}

/// A batch of records from one shard handed to the [`RecordSink`](crate::RecordSink).
#[derive(Clone, Debug)]
pub struct RecordBatch {
    /// The shard the records come from.
    pub shard_id: String,
    /// Records in shard order. Never empty.
    pub records: Vec<StreamRecord>,
    /// How many leading records are at or below the shard's stored checkpoint, i.e. were already processed by
    /// this or another worker (at-least-once redelivery). The sink may skip counting them twice.
    pub duplicates: usize,
}

impl RecordBatch {
    /// Whether the record at `index` is a redelivery of an already checkpointed record.
    pub fn is_duplicate(&self, index: usize) -> bool {
        index < self.duplicates
    }
}

/// A hole in what was read: records between `checkpoint` and `first_available` were trimmed by the service (24 h
/// retention) before this reader got to them. Always reported, never skipped silently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamGap {
    /// The table label the gap is counted under.
    pub table: String,
    /// The shard with the gap (for [`GapReason::StreamReplaced`], the new stream's ARN).
    pub shard_id: String,
    /// The last sequence number processed before the gap (`None` if the shard was never checkpointed).
    pub checkpoint: Option<SequenceNumber>,
    /// The first sequence number still available after the gap (`None` if the shard had nothing left or is gone).
    pub first_available: Option<SequenceNumber>,
    /// Why the reader concluded there is a gap.
    pub reason: GapReason,
}

/// Why a gap was declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapReason {
    /// The service answered `TrimmedDataAccessException` for the checkpoint.
    Trimmed,
    /// The checkpointed record is older than the stream's retention period.
    CheckpointExpired,
    /// The shard no longer exists (`ResourceNotFoundException`) while unread records were expected.
    ShardGone,
    /// The table's stream was disabled and enabled again under a new ARN: writes between the two streams are in
    /// neither. Reported once the old stream is read to its end, before the new one is read; `shard_id` is the
    /// new stream's ARN.
    StreamReplaced,
}

impl GapReason {
    /// A short label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Trimmed => "trimmed_data_access",
            GapReason::CheckpointExpired => "checkpoint_older_than_retention",
            GapReason::ShardGone => "shard_not_found",
            GapReason::StreamReplaced => "stream_replaced",
        }
    }
}

/// Derives the table name from a stream ARN (`arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL`).
/// Returns the whole ARN if it does not have that shape.
pub fn table_name_from_stream_arn(arn: &str) -> &str {
    arn.split_once(":table/")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
        .unwrap_or(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_order_numerically() {
        let a = SequenceNumber::new("9");
        let b = SequenceNumber::new("10");
        assert!(a < b, "string order would say otherwise");
        assert_eq!(SequenceNumber::new("0010").cmp(&b), Ordering::Equal);
        let long_a = SequenceNumber::new("100000000000000000000000000000000000001");
        let long_b = SequenceNumber::new("100000000000000000000000000000000000002");
        assert!(long_a < long_b);
        assert!(SequenceNumber::new("0") < SequenceNumber::new("1"));
    }

    #[test]
    fn table_name_is_parsed_from_stream_arn() {
        assert_eq!(
            table_name_from_stream_arn(
                "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"
            ),
            "orders"
        );
        assert_eq!(table_name_from_stream_arn("weird"), "weird");
    }
}
