//! The quarantine: every record with a failing final verdict, kept in a DynamoDB table with its evidence.
//!
//! A stream keeps a record for 24 hours; an operator looking at an alert the next morning needs the record as it
//! was. Each failing record becomes one [`QuarantineEntry`]: table, region, keys, verdict, reason, stream
//! coordinates (shard, sequence number, event id), time, and the NEW image exactly as the stream carried it —
//! ciphertext, header and signature attributes included, never a decrypted value (the verifier never keeps a
//! plaintext, and the image is the stored form).
//!
//! Writing never holds up the stream: [`Quarantine::submit`] puts the entry on a bounded channel and returns; a
//! writer task ([`start`]) does the `PutItem`s. A full channel drops the entry, and a failed write is logged;
//! both are counted in `ddbguard_quarantine_writes_total{table,outcome}` (`written`, `failed`, `dropped`). The
//! record itself is counted and alerted by the verifier either way.
//!
//! The entry id is `<region>#<event id>`: a redelivered record (another worker after a lease takeover)
//! overwrites its own entry instead of adding a second one. Entries expire through the table's TTL attribute
//! [`TTL_ATTRIBUTE`] after the configured retention.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::primitives::Blob as TableBlob;
use aws_sdk_dynamodb::types::AttributeValue as TableValue;
use aws_sdk_dynamodbstreams::primitives::Blob as StreamBlob;
use aws_sdk_dynamodbstreams::types::AttributeValue as StreamValue;
use ddbguard_ddb::{
    DdbError, DynamoApi, Item, KeyAttribute, KeySchema, ScalarType, ScanSegment, TableSpec, ensure_table,
};
use ddbguard_stream::StreamRecord;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use ddbguard_dbe::{Reason, Verdict};

use crate::engine::{RecordOutcome, Verifier};
use crate::judge::{Depth, Judgement};

/// Default quarantine table name (`[verify] quarantine_table`).
pub const DEFAULT_TABLE: &str = "ddbguard-quarantine";

/// Default retention of an entry (`[verify] quarantine_retention`): 30 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Entries waiting for the writer; beyond this, entries are dropped (and counted) rather than slowing the stream.
pub const DEFAULT_CAPACITY: usize = 1024;

/// The TTL attribute of the quarantine table (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// The quarantine table's partition key.
pub const ID_ATTRIBUTE: &str = "id";

/// How long creating the quarantine table may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where failing records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineSettings {
    /// The DynamoDB table, in the local region.
    pub table: String,
    /// How long an entry is kept (its TTL).
    pub retention: Duration,
    /// Entries buffered for the writer before new ones are dropped.
    pub capacity: usize,
}

impl Default for QuarantineSettings {
    fn default() -> Self {
        QuarantineSettings {
            table: DEFAULT_TABLE.to_owned(),
            retention: DEFAULT_RETENTION,
            capacity: DEFAULT_CAPACITY,
        }
    }
}

/// Whether an entry still needs attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryStatus {
    /// Quarantined, not re-verified as passing.
    Open,
    /// A replay judged the stored image as passing.
    Resolved,
}

impl EntryStatus {
    /// `open` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Open => "open",
            EntryStatus::Resolved => "resolved",
        }
    }
}

/// One quarantined record.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineEntry {
    /// `<region>#<event id>`.
    pub id: String,
    /// The verified table (its label).
    pub table: String,
    /// The verifying region.
    pub region: String,
    /// Primary key as DynamoDB JSON text.
    pub keys: String,
    /// The failing verdict label.
    pub verdict: String,
    /// The reason code.
    pub reason: String,
    /// The verdict's detail (names attributes and ARNs, never values).
    pub message: String,
    /// Origin region of the record, when known.
    pub origin_region: Option<String>,
    /// Shard of the record.
    pub shard_id: String,
    /// Sequence number in the shard.
    pub sequence_number: String,
    /// Stream event id.
    pub event_id: String,
    /// INSERT or MODIFY (or REMOVE / unknown).
    pub event_name: String,
    /// When the record was written (epoch seconds), as the stream says.
    pub written_at: Option<u64>,
    /// When it was quarantined (epoch seconds).
    pub quarantined_at: u64,
    /// When DynamoDB may expire the entry (epoch seconds).
    pub expires_at: u64,
    /// Open or resolved.
    pub status: EntryStatus,
    /// When a replay resolved it (epoch seconds).
    pub resolved_at: Option<u64>,
    /// The verdict of that replay.
    pub resolved_verdict: Option<String>,
    /// The NEW image as the stream carried it (stored form: ciphertext and all).
    pub image: Option<Item>,
}

/// A quarantine entry that cannot be read back.
#[derive(Debug, Error)]
pub enum QuarantineError {
    /// An attribute is missing or of the wrong type.
    #[error("quarantine entry {id:?}: attribute {attribute:?} is missing or not a {expected}")]
    Malformed {
        /// The entry's id, if readable.
        id: String,
        /// The attribute.
        attribute: &'static str,
        /// Its expected type.
        expected: &'static str,
    },
    /// A DynamoDB call failed.
    #[error("quarantine table {table:?}: {source}")]
    Dynamo {
        /// The quarantine table.
        table: String,
        /// The failure.
        source: DdbError,
    },
    /// The table exists with another key schema.
    #[error("quarantine table {table:?} exists but its key is not the string partition key {ID_ATTRIBUTE:?}")]
    Schema {
        /// The quarantine table.
        table: String,
    },
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl QuarantineEntry {
    /// The entry of a record with a failing outcome, verified by `table` in `region`.
    pub fn new(
        table: &str,
        region: &str,
        shard_id: &str,
        record: &StreamRecord,
        outcome: &RecordOutcome,
        retention: Duration,
    ) -> QuarantineEntry {
        let now = now_secs();
        QuarantineEntry {
            id: format!("{region}#{}", record.event_id),
            table: table.to_owned(),
            region: region.to_owned(),
            keys: outcome.keys.to_string(),
            verdict: outcome.verdict.as_str().to_owned(),
            reason: outcome.reason.as_str().to_owned(),
            message: outcome.message.clone(),
            origin_region: outcome.origin_region.clone(),
            shard_id: shard_id.to_owned(),
            sequence_number: record.sequence_number.to_string(),
            event_id: record.event_id.clone(),
            event_name: record.event_name.as_str().to_owned(),
            written_at: record
                .approximate_creation_time
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            quarantined_at: now,
            expires_at: now.saturating_add(retention.as_secs()),
            status: EntryStatus::Open,
            resolved_at: None,
            resolved_verdict: None,
            image: record.new_image.as_ref().map(image_to_table_item),
        }
    }

    /// The entry as a DynamoDB item of the quarantine table.
    pub fn to_item(&self) -> Item {
        let s = |v: &str| TableValue::S(v.to_owned());
        let n = |v: u64| TableValue::N(v.to_string());
        let mut item = Item::new();
        item.insert(ID_ATTRIBUTE.into(), s(&self.id));
        item.insert("table".into(), s(&self.table));
        item.insert("region".into(), s(&self.region));
        item.insert("keys".into(), s(&self.keys));
        item.insert("verdict".into(), s(&self.verdict));
        item.insert("reason".into(), s(&self.reason));
        item.insert("message".into(), s(&self.message));
        item.insert("shard_id".into(), s(&self.shard_id));
        item.insert("sequence_number".into(), s(&self.sequence_number));
        item.insert("event_id".into(), s(&self.event_id));
        item.insert("event_name".into(), s(&self.event_name));
        item.insert("quarantined_at".into(), n(self.quarantined_at));
        item.insert(TTL_ATTRIBUTE.into(), n(self.expires_at));
        item.insert("status".into(), s(self.status.as_str()));
        if let Some(origin) = &self.origin_region {
            item.insert("origin_region".into(), s(origin));
        }
        if let Some(t) = self.written_at {
            item.insert("written_at".into(), n(t));
        }
        if let Some(t) = self.resolved_at {
            item.insert("resolved_at".into(), n(t));
        }
        if let Some(v) = &self.resolved_verdict {
            item.insert("resolved_verdict".into(), s(v));
        }
        if let Some(image) = &self.image {
            item.insert("image".into(), TableValue::M(image.clone()));
        }
        item
    }

    /// Reads an entry back from its item.
    pub fn from_item(item: &Item) -> Result<QuarantineEntry, QuarantineError> {
        let id = match item.get(ID_ATTRIBUTE) {
            Some(TableValue::S(id)) => id.clone(),
            _ => String::new(),
        };
        let malformed = |attribute: &'static str, expected: &'static str| QuarantineError::Malformed {
            id: id.clone(),
            attribute,
            expected,
        };
        let opt_s = |name: &str| match item.get(name) {
            Some(TableValue::S(v)) => Some(v.clone()),
            _ => None,
        };
        let opt_n = |name: &str| match item.get(name) {
            Some(TableValue::N(v)) => v.parse::<u64>().ok(),
            _ => None,
        };
        let s = |name: &'static str| opt_s(name).ok_or_else(|| malformed(name, "string"));
        let n = |name: &'static str| opt_n(name).ok_or_else(|| malformed(name, "number"));
        if id.is_empty() {
            return Err(malformed(ID_ATTRIBUTE, "string"));
        }
        let status = match s("status")?.as_str() {
            "open" => EntryStatus::Open,
            "resolved" => EntryStatus::Resolved,
            _ => return Err(malformed("status", "status (open, resolved)")),
        };
        let image = match item.get("image") {
            Some(TableValue::M(m)) => Some(m.clone()),
            None => None,
            Some(_) => return Err(malformed("image", "map")),
        };
        Ok(QuarantineEntry {
            table: s("table")?,
            region: s("region")?,
            keys: s("keys")?,
            verdict: s("verdict")?,
            reason: s("reason")?,
            message: opt_s("message").unwrap_or_default(),
            origin_region: opt_s("origin_region"),
            shard_id: s("shard_id")?,
            sequence_number: s("sequence_number")?,
            event_id: s("event_id")?,
            event_name: s("event_name")?,
            written_at: opt_n("written_at"),
            quarantined_at: n("quarantined_at")?,
            expires_at: n(TTL_ATTRIBUTE)?,
            status,
            resolved_at: opt_n("resolved_at"),
            resolved_verdict: opt_s("resolved_verdict"),
            image,
            id,
        })
    }

    /// The entry as JSON for `quarantine list` and `show`: the image as DynamoDB JSON (stored form).
    pub fn to_json(&self, with_image: bool) -> serde_json::Value {
        let keys: serde_json::Value =
            serde_json::from_str(&self.keys).unwrap_or_else(|_| serde_json::Value::String(self.keys.clone()));
        let mut doc = serde_json::json!({
            "id": self.id,
            "table": self.table,
            "region": self.region,
            "keys": keys,
            "verdict": self.verdict,
            "reason": self.reason,
            "message": self.message,
            "origin_region": self.origin_region,
            "shard_id": self.shard_id,
            "sequence_number": self.sequence_number,
            "event_id": self.event_id,
            "event_name": self.event_name,
            "written_at": self.written_at,
            "quarantined_at": self.quarantined_at,
            "expires_at": self.expires_at,
            "status": self.status.as_str(),
            "resolved_at": self.resolved_at,
            "resolved_verdict": self.resolved_verdict,
        });
        if with_image && let (Some(map), Some(image)) = (doc.as_object_mut(), &self.image) {
            map.insert("image".into(), table_item_json(image));
        }
        doc
    }

    /// Marks the entry resolved by a replay whose verdict was `verdict`.
    pub fn resolve(&mut self, verdict: &str) {
        self.status = EntryStatus::Resolved;
        self.resolved_at = Some(now_secs());
        self.resolved_verdict = Some(verdict.to_owned());
    }
}

/// Re-judges a stored image with today's keyring and policy, fully (a replay is not sampled), and marks the entry
/// resolved when the verdict passes. Returns the judgement; the entry is not written back.
pub async fn replay(verifier: &Verifier, entry: &mut QuarantineEntry) -> Judgement {
    let judgement = match &entry.image {
        None => Judgement::new(
            Verdict::PolicyViolation,
            Reason::NoNewImage,
            "the quarantined record has no NEW image: nothing to verify again",
        ),
        Some(image) => match crate::convert::table_item_to_item(image) {
            Ok(item) => verifier.judge().judge(&item, Depth::Full).await,
            Err(e) => Judgement::new(Verdict::IntegrityFailed, e.reason(), e.to_string()),
        },
    };
    if judgement.verdict.is_pass() {
        entry.resolve(judgement.verdict.as_str());
    }
    judgement
}

/// Creates the quarantine table if it is missing (partition key [`ID_ATTRIBUTE`], on demand) and enables its
/// TTL on [`TTL_ATTRIBUTE`].
pub async fn ensure<D: DynamoApi>(db: &D, table: &str) -> Result<(), QuarantineError> {
    let dynamo = |source| QuarantineError::Dynamo {
        table: table.to_owned(),
        source,
    };
    let schema = KeySchema {
        hash: KeyAttribute::new(ID_ATTRIBUTE, ScalarType::S),
        range: None,
    };
    let ensured = ensure_table(db, &TableSpec::on_demand(table, schema.clone()), CREATE_TIMEOUT)
        .await
        .map_err(dynamo)?;
    if ensured.description.key_schema != schema {
        return Err(QuarantineError::Schema {
            table: table.to_owned(),
        });
    }
    if ensured.created {
        db.update_time_to_live(table, TTL_ATTRIBUTE, true)
            .await
            .map_err(dynamo)?;
    }
    Ok(())
}

/// Every entry of the quarantine table (a full scan: the table holds failures only).
pub async fn scan<D: DynamoApi>(
    db: &D,
    table: &str,
) -> Result<Vec<Result<QuarantineEntry, QuarantineError>>, QuarantineError> {
    let mut entries = Vec::new();
    let mut start = None;
    loop {
        let page = db
            .scan_segment(
                table,
                ScanSegment {
                    segment: 0,
                    total_segments: 1,
                    exclusive_start_key: start,
                    limit: None,
                    consistent: false,
                },
            )
            .await
            .map_err(|source| QuarantineError::Dynamo {
                table: table.to_owned(),
                source,
            })?;
        entries.extend(page.items.iter().map(QuarantineEntry::from_item));
        match page.last_evaluated_key {
            Some(key) => start = Some(key),
            None => break,
        }
    }
    Ok(entries)
}

/// One entry by id.
pub async fn get<D: DynamoApi>(db: &D, table: &str, id: &str) -> Result<Option<QuarantineEntry>, QuarantineError> {
    let key = Item::from([(ID_ATTRIBUTE.to_owned(), TableValue::S(id.to_owned()))]);
    let out = db
        .get_item(table, key, true)
        .await
        .map_err(|source| QuarantineError::Dynamo {
            table: table.to_owned(),
            source,
        })?;
    out.item.as_ref().map(QuarantineEntry::from_item).transpose()
}

/// Writes (or overwrites) an entry.
pub async fn put<D: DynamoApi>(db: &D, table: &str, entry: &QuarantineEntry) -> Result<(), QuarantineError> {
    db.put_item(table, entry.to_item(), None)
        .await
        .map(drop)
        .map_err(|source| QuarantineError::Dynamo {
            table: table.to_owned(),
            source,
        })
}

/// The verifier's handle: hands failing records to the writer without waiting.
#[derive(Debug, Clone)]
pub struct Quarantine {
    tx: mpsc::Sender<QuarantineEntry>,
    table: String,
    retention: Duration,
}

/// The writer task of a [`Quarantine`]; [`QuarantineWriter::finish`] writes what is buffered and stops it.
#[derive(Debug)]
pub struct QuarantineWriter {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl QuarantineWriter {
    /// Stops accepting entries, writes the buffered ones (for at most `timeout`) and ends the task.
    pub async fn finish(self, timeout: Duration) {
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        if tokio::time::timeout(timeout, self.task).await.is_err() {
            abort.abort();
            tracing::warn!(?timeout, "quarantine: buffered entries not written before shutdown");
        }
    }
}

fn count(table: &str, outcome: &'static str) {
    metrics::counter!("ddbguard_quarantine_writes_total", "table" => table.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// Starts the writer task putting entries into `settings.table` with `db`; `table_label` labels the metric.
pub fn start<D: DynamoApi>(db: D, settings: &QuarantineSettings, table_label: &str) -> (Quarantine, QuarantineWriter) {
    let (tx, mut rx) = mpsc::channel::<QuarantineEntry>(settings.capacity.max(1));
    let (stop, mut stopped) = oneshot::channel::<()>();
    let quarantine_table = settings.table.clone();
    let label = table_label.to_owned();
    let task = tokio::spawn(async move {
        // A completed oneshot receiver must not be polled again (it panics): once stopped, only drain.
        let mut stopping = false;
        loop {
            let entry = tokio::select! {
                entry = rx.recv() => entry,
                _ = &mut stopped, if !stopping => {
                    // No new entries; what is buffered is still written below.
                    stopping = true;
                    rx.close();
                    rx.recv().await
                }
            };
            let Some(entry) = entry else { break };
            match put(&db, &quarantine_table, &entry).await {
                Ok(()) => count(&label, "written"),
                Err(e) => {
                    tracing::warn!(
                        target: "alert",
                        event = "quarantine_write_failed",
                        table = %entry.table,
                        id = %entry.id,
                        verdict = %entry.verdict,
                        error = %e,
                        "quarantine write failed"
                    );
                    count(&label, "failed");
                }
            }
        }
    });
    (
        Quarantine {
            tx,
            table: table_label.to_owned(),
            retention: settings.retention,
        },
        QuarantineWriter { stop, task },
    )
}

impl Quarantine {
    /// Queues the entry of a failing record; drops (and counts) it when the writer is behind.
    pub fn submit(&self, region: &str, shard_id: &str, record: &StreamRecord, outcome: &RecordOutcome) {
        let entry = QuarantineEntry::new(&self.table, region, shard_id, record, outcome, self.retention);
        if let Err(e) = self.tx.try_send(entry) {
            let entry = match e {
                mpsc::error::TrySendError::Full(entry) | mpsc::error::TrySendError::Closed(entry) => entry,
            };
            tracing::warn!(
                target: "alert",
                event = "quarantine_dropped",
                table = %entry.table,
                id = %entry.id,
                verdict = %entry.verdict,
                "quarantine writer behind: entry dropped"
            );
            count(&self.table, "dropped");
        }
    }
}

/// A stream image as a DynamoDB item, value for value (a type neither crate knows is stored as NULL).
pub fn image_to_table_item(image: &HashMap<String, StreamValue>) -> Item {
    image.iter().map(|(k, v)| (k.clone(), stream_to_table(v))).collect()
}

fn stream_to_table(v: &StreamValue) -> TableValue {
    let blob = |b: &StreamBlob| TableBlob::new(b.as_ref().to_vec());
    match v {
        StreamValue::S(s) => TableValue::S(s.clone()),
        StreamValue::N(n) => TableValue::N(n.clone()),
        StreamValue::B(b) => TableValue::B(blob(b)),
        StreamValue::Bool(b) => TableValue::Bool(*b),
        StreamValue::Null(b) => TableValue::Null(*b),
        StreamValue::Ss(v) => TableValue::Ss(v.clone()),
        StreamValue::Ns(v) => TableValue::Ns(v.clone()),
        StreamValue::Bs(v) => TableValue::Bs(v.iter().map(blob).collect()),
        StreamValue::M(m) => TableValue::M(m.iter().map(|(k, v)| (k.clone(), stream_to_table(v))).collect()),
        StreamValue::L(l) => TableValue::L(l.iter().map(stream_to_table).collect()),
        _ => TableValue::Null(true),
    }
}

/// A stored image as DynamoDB JSON (binary values base64, as the AWS CLI prints them).
fn table_item_json(item: &Item) -> serde_json::Value {
    match crate::convert::table_item_to_item(item) {
        Ok(item) => ddbguard_dbe::json::item_to_ddb_json(&item),
        Err(e) => serde_json::Value::String(format!("<image not representable: {}>", e.reason().as_str())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ddbguard_ddb::{ErrorKind, FakeDynamo, FaultyDynamo, Op};
    use ddbguard_stream::{EventName, SequenceNumber};
    use serde_json::json;

    use super::*;
    use crate::tests::capture::Counters;

    fn record(event_id: &str) -> StreamRecord {
        let image = HashMap::from([
            ("pk".to_owned(), StreamValue::S("p1".into())),
            (
                "ssn".to_owned(),
                StreamValue::B(StreamBlob::new(vec![0xde, 0xad, 0xbe, 0xef])),
            ),
            (
                "nested".to_owned(),
                StreamValue::M(HashMap::from([(
                    "l".to_owned(),
                    StreamValue::L(vec![StreamValue::Ns(vec!["1".into()]), StreamValue::Null(true)]),
                )])),
            ),
        ]);
        StreamRecord {
            event_id: event_id.into(),
            event_name: EventName::Modify,
            sequence_number: SequenceNumber::new("4200"),
            approximate_creation_time: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            keys: HashMap::from([("pk".to_owned(), StreamValue::S("p1".into()))]),
            new_image: Some(image),
            old_image: None,
            size_bytes: None,
        }
    }

    fn outcome(event_id: &str) -> RecordOutcome {
        RecordOutcome {
            verdict: Verdict::KeyUnavailable,
            reason: Reason::Disabled,
            origin_region: Some("us-east-1".into()),
            keys: json!({"pk": {"S": "p1"}}),
            event_id: event_id.into(),
            message: "kms:Decrypt denied".into(),
            format: crate::ItemFormat::DbEsdk,
        }
    }

    #[test]
    fn an_entry_round_trips_through_its_item_with_the_image_as_stored() {
        let entry = QuarantineEntry::new(
            "orders",
            "eu-west-1",
            "shard-7",
            &record("e1"),
            &outcome("e1"),
            DEFAULT_RETENTION,
        );
        assert_eq!(entry.id, "eu-west-1#e1");
        assert_eq!(entry.expires_at - entry.quarantined_at, 30 * 86_400);
        assert_eq!(entry.written_at, Some(1_700_000_000));
        let item = entry.to_item();
        assert_eq!(item.get("status"), Some(&TableValue::S("open".into())));
        let back = QuarantineEntry::from_item(&item).unwrap();
        assert_eq!(back, entry);
        let image = back.image.as_ref().unwrap();
        assert_eq!(
            image["ssn"],
            TableValue::B(TableBlob::new(vec![0xde, 0xad, 0xbe, 0xef]))
        );
        let shown = back.to_json(true);
        assert_eq!(shown["keys"], json!({"pk": {"S": "p1"}}));
        assert_eq!(shown["sequence_number"], "4200");
        assert_eq!(shown["image"]["ssn"], json!({"B": "3q2+7w=="}));
        assert!(back.to_json(false).get("image").is_none());

        let mut broken = item.clone();
        broken.remove("verdict");
        let e = QuarantineEntry::from_item(&broken).unwrap_err().to_string();
        assert!(e.contains("eu-west-1#e1") && e.contains("verdict"), "{e}");
    }

    #[tokio::test]
    async fn the_table_is_created_with_its_ttl_and_a_foreign_schema_is_refused() {
        let db = FakeDynamo::new();
        ensure(&db, "q").await.unwrap();
        assert_eq!(db.ttl_attribute("q").as_deref(), Some(TTL_ATTRIBUTE));
        ensure(&db, "q").await.unwrap();
        db.add_table(TableSpec::on_demand(
            "other",
            KeySchema {
                hash: KeyAttribute::new("pk", ScalarType::S),
                range: None,
            },
        ));
        assert!(matches!(
            ensure(&db, "other").await,
            Err(QuarantineError::Schema { .. })
        ));
    }

    /// The stream never waits for the writer: entries beyond the buffer are dropped and counted.
    #[tokio::test]
    async fn a_full_channel_drops_and_counts() {
        let db = Arc::new(FakeDynamo::new());
        ensure(&db, "q").await.unwrap();
        let settings = QuarantineSettings {
            table: "q".into(),
            capacity: 1,
            ..QuarantineSettings::default()
        };
        let (quarantine, writer) = start(db.clone(), &settings, "orders");
        let counters = Counters::default();
        // On this current-thread runtime the writer task cannot run before the next await: one entry is buffered.
        metrics::with_local_recorder(&counters, || {
            for id in ["e1", "e2", "e3"] {
                quarantine.submit("eu-west-1", "shard-0", &record(id), &outcome(id));
            }
        });
        let dropped = [("table", "orders"), ("outcome", "dropped")];
        assert_eq!(counters.get("ddbguard_quarantine_writes_total", &dropped), 2);
        writer.finish(Duration::from_secs(5)).await;
        let items = db.items("q");
        assert_eq!(items.len(), 1);
        assert_eq!(QuarantineEntry::from_item(&items[0]).unwrap().event_id, "e1");
    }

    /// A failed write costs that entry only; the writer goes on.
    #[tokio::test]
    async fn a_failed_write_does_not_stop_the_writer() {
        let db = Arc::new(FaultyDynamo::new(FakeDynamo::new()));
        ensure(&db, "q").await.unwrap();
        db.fail_next(Op::PutItem, ErrorKind::Throttled, 1);
        let settings = QuarantineSettings {
            table: "q".into(),
            ..QuarantineSettings::default()
        };
        let (quarantine, writer) = start(db.clone(), &settings, "orders");
        for id in ["e1", "e2"] {
            quarantine.submit("eu-west-1", "shard-0", &record(id), &outcome(id));
        }
        writer.finish(Duration::from_secs(5)).await;
        let items = db.inner().items("q");
        assert_eq!(items.len(), 1);
        assert_eq!(QuarantineEntry::from_item(&items[0]).unwrap().event_id, "e2");
        assert_eq!(db.calls(Op::PutItem), 2);
    }
}
