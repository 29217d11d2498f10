//! [`DynamoApi`]: the DynamoDB calls ddbguard makes, with typed inputs and outputs, and [`ensure_table`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::error::{DdbError, ErrorKind};
use crate::expr::{Condition, Update};
use crate::{AttributeValue, Item};

/// Capacity units a call consumed, as DynamoDB reports it (`ReturnConsumedCapacity::TOTAL`).
///
/// Endpoints that do not report consumed capacity (moto, DynamoDB Local in some versions) yield zeros:
/// nothing is estimated on the caller's side, so a rate limiter fed from these numbers does not slow down
/// against such endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Consumed {
    /// Read capacity units.
    pub read_units: f64,
    /// Write capacity units.
    pub write_units: f64,
}

impl std::ops::AddAssign for Consumed {
    fn add_assign(&mut self, other: Consumed) {
        self.read_units += other.read_units;
        self.write_units += other.write_units;
    }
}

/// What `GetItem` returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetItemOutput {
    /// The item, if it exists.
    pub item: Option<Item>,
    /// Capacity consumed.
    pub consumed: Consumed,
}

/// Which attributes `UpdateItem` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReturnValues {
    /// None.
    #[default]
    None,
    /// The whole item as it is after the update.
    AllNew,
}

/// What `UpdateItem` returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateItemOutput {
    /// With [`ReturnValues::AllNew`]: the item after the update.
    pub attributes: Option<Item>,
    /// Capacity consumed.
    pub consumed: Consumed,
}

/// One operation of a `TransactWriteItems` request.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Put an item, optionally on a condition.
    Put {
        /// Table.
        table: String,
        /// The whole item (with its key).
        item: Item,
        /// Condition on the item as it is.
        condition: Option<Condition>,
    },
    /// Update an item.
    Update {
        /// Table.
        table: String,
        /// The item's key.
        key: Item,
        /// The changes.
        update: Update,
        /// Condition on the item as it is.
        condition: Option<Condition>,
    },
    /// Delete an item.
    Delete {
        /// Table.
        table: String,
        /// The item's key.
        key: Item,
        /// Condition on the item as it is.
        condition: Option<Condition>,
    },
    /// Only check a condition on an item.
    ConditionCheck {
        /// Table.
        table: String,
        /// The item's key.
        key: Item,
        /// The condition.
        condition: Condition,
    },
}

impl WriteOp {
    /// The table the operation writes.
    pub fn table(&self) -> &str {
        match self {
            WriteOp::Put { table, .. }
            | WriteOp::Update { table, .. }
            | WriteOp::Delete { table, .. }
            | WriteOp::ConditionCheck { table, .. } => table,
        }
    }
}

/// A query of one partition: every item whose partition key equals `value`, in sort key order.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionQuery {
    /// Partition key attribute name.
    pub key_name: String,
    /// Partition key value.
    pub value: AttributeValue,
    /// Strongly consistent read.
    pub consistent: bool,
    /// Where the previous page stopped.
    pub exclusive_start_key: Option<Item>,
    /// Most items to evaluate.
    pub limit: Option<u32>,
}

/// One page of a parallel scan: segment `segment` of `total_segments`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScanSegment {
    /// This segment (0-based).
    pub segment: u32,
    /// Number of segments (1 for a plain scan).
    pub total_segments: u32,
    /// Where the previous page of this segment stopped.
    pub exclusive_start_key: Option<Item>,
    /// Most items to evaluate.
    pub limit: Option<u32>,
    /// Strongly consistent read.
    pub consistent: bool,
}

/// One page of a query or scan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// The items.
    pub items: Vec<Item>,
    /// Where to continue; `None` when the segment (or partition) is done. DynamoDB may return a key followed by
    /// an empty last page.
    pub last_evaluated_key: Option<Item>,
    /// Capacity consumed.
    pub consumed: Consumed,
}

/// What `BatchGetItem` returned for one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchGetOutput {
    /// The items found (in no particular order; missing items are simply absent).
    pub items: Vec<Item>,
    /// Keys DynamoDB did not process (throttling, response size): ask for them again.
    pub unprocessed_keys: Vec<Item>,
    /// Capacity consumed.
    pub consumed: Consumed,
}

/// The type of a key attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalarType {
    /// String.
    S,
    /// Number.
    N,
    /// Binary.
    B,
}

/// A key attribute: name and type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyAttribute {
    /// Attribute name.
    pub name: String,
    /// Attribute type.
    pub kind: ScalarType,
}

impl KeyAttribute {
    /// A key attribute.
    pub fn new(name: impl Into<String>, kind: ScalarType) -> KeyAttribute {
        KeyAttribute {
            name: name.into(),
            kind,
        }
    }
}

/// A table's primary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeySchema {
    /// Partition (HASH) key.
    pub hash: KeyAttribute,
    /// Sort (RANGE) key, if any.
    pub range: Option<KeyAttribute>,
}

impl KeySchema {
    /// The names of the key attributes.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.hash.name.as_str()).chain(self.range.as_ref().map(|r| r.name.as_str()))
    }

    /// The key of `item` (its key attributes only).
    pub fn key_of(&self, item: &Item) -> Item {
        self.names()
            .filter_map(|n| item.get(n).map(|v| (n.to_owned(), v.clone())))
            .collect()
    }
}

/// Billing mode of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingMode {
    /// On demand.
    PayPerRequest,
    /// Provisioned capacity.
    Provisioned {
        /// Read capacity units per second.
        read_units: i64,
        /// Write capacity units per second.
        write_units: i64,
    },
}

/// Status of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableStatus {
    /// Being created: reads and writes fail with `ResourceNotFoundException`.
    Creating,
    /// Usable.
    Active,
    /// Being updated (usable).
    Updating,
    /// Being deleted.
    Deleting,
    /// Another status (archived, inaccessible encryption key, …), as DynamoDB names it.
    Other(String),
}

/// The table's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Whether the stream is enabled.
    pub enabled: bool,
    /// `NEW_IMAGE`, `NEW_AND_OLD_IMAGES`, …
    pub view_type: Option<String>,
    /// ARN of the latest stream.
    pub arn: Option<String>,
}

/// What `DescribeTable` says about a table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDescription {
    /// Table name.
    pub name: String,
    /// Status.
    pub status: TableStatus,
    /// Primary key.
    pub key_schema: KeySchema,
    /// Billing mode (and provisioned capacity). `None` if DynamoDB did not say (old tables are provisioned).
    pub billing_mode: Option<BillingMode>,
    /// The stream, if one was ever specified.
    pub stream: Option<StreamInfo>,
    /// Approximate item count (updated about every six hours by DynamoDB).
    pub item_count: Option<i64>,
    /// Approximate size in bytes (same refresh).
    pub size_bytes: Option<i64>,
    /// Regions of the global table's replicas (empty for a single-region table).
    pub replica_regions: Vec<String>,
}

/// A table to create.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    /// Table name.
    pub name: String,
    /// Primary key.
    pub key_schema: KeySchema,
    /// Billing mode.
    pub billing_mode: BillingMode,
    /// Stream view type (`NEW_AND_OLD_IMAGES`, …) to enable a stream with.
    pub stream_view_type: Option<String>,
}

impl TableSpec {
    /// An on-demand table without a stream.
    pub fn on_demand(name: impl Into<String>, key_schema: KeySchema) -> TableSpec {
        TableSpec {
            name: name.into(),
            key_schema,
            billing_mode: BillingMode::PayPerRequest,
            stream_view_type: None,
        }
    }
}

/// The DynamoDB calls ddbguard makes. [`crate::SdkDynamo`] for AWS; behind the `fake` feature,
/// `FakeDynamo` and `FaultyDynamo` for tests.
///
/// Every data call requests the consumed capacity and returns it ([`Consumed`]).
pub trait DynamoApi: Send + Sync + 'static {
    /// `GetItem`.
    fn get_item(
        &self,
        table: &str,
        key: Item,
        consistent: bool,
    ) -> impl Future<Output = Result<GetItemOutput, DdbError>> + Send;

    /// `PutItem`, optionally on a condition on the item as it is ([`ErrorKind::Conflict`] if it does not hold).
    fn put_item(
        &self,
        table: &str,
        item: Item,
        condition: Option<Condition>,
    ) -> impl Future<Output = Result<Consumed, DdbError>> + Send;

    /// `UpdateItem` (creates the item if it does not exist and the condition allows).
    fn update_item(
        &self,
        table: &str,
        key: Item,
        update: Update,
        condition: Option<Condition>,
        return_values: ReturnValues,
    ) -> impl Future<Output = Result<UpdateItemOutput, DdbError>> + Send;

    /// `DeleteItem`.
    fn delete_item(
        &self,
        table: &str,
        key: Item,
        condition: Option<Condition>,
    ) -> impl Future<Output = Result<Consumed, DdbError>> + Send;

    /// `TransactWriteItems`: all operations or none. A cancelled transaction is a [`DdbError`] with its
    /// per-operation `cancellation_reasons`.
    fn transact_write(&self, ops: Vec<WriteOp>) -> impl Future<Output = Result<Consumed, DdbError>> + Send;

    /// One page of a `Query` of one partition.
    fn query(&self, table: &str, query: PartitionQuery) -> impl Future<Output = Result<Page, DdbError>> + Send;

    /// One page of a (parallel) `Scan`.
    fn scan_segment(&self, table: &str, scan: ScanSegment) -> impl Future<Output = Result<Page, DdbError>> + Send;

    /// `BatchGetItem` of up to 100 keys of one table.
    fn batch_get(
        &self,
        table: &str,
        keys: Vec<Item>,
        consistent: bool,
    ) -> impl Future<Output = Result<BatchGetOutput, DdbError>> + Send;

    /// `DescribeTable`.
    fn describe_table(&self, table: &str) -> impl Future<Output = Result<TableDescription, DdbError>> + Send;

    /// `CreateTable` (returns once DynamoDB accepted it; the table is usually CREATING). See [`ensure_table`].
    fn create_table(&self, spec: &TableSpec) -> impl Future<Output = Result<(), DdbError>> + Send;

    /// `UpdateTimeToLive`: enables (or disables) expiry of items by the epoch-seconds number `attribute`.
    fn update_time_to_live(
        &self,
        table: &str,
        attribute: &str,
        enabled: bool,
    ) -> impl Future<Output = Result<(), DdbError>> + Send;
}

impl<T: DynamoApi> DynamoApi for Arc<T> {
    fn get_item(
        &self,
        table: &str,
        key: Item,
        consistent: bool,
    ) -> impl Future<Output = Result<GetItemOutput, DdbError>> + Send {
        (**self).get_item(table, key, consistent)
    }

    fn put_item(
        &self,
        table: &str,
        item: Item,
        condition: Option<Condition>,
    ) -> impl Future<Output = Result<Consumed, DdbError>> + Send {
        (**self).put_item(table, item, condition)
    }

    fn update_item(
        &self,
        table: &str,
        key: Item,
        update: Update,
        condition: Option<Condition>,
        return_values: ReturnValues,
    ) -> impl Future<Output = Result<UpdateItemOutput, DdbError>> + Send {
        (**self).update_item(table, key, update, condition, return_values)
    }

    fn delete_item(
        &self,
        table: &str,
        key: Item,
        condition: Option<Condition>,
    ) -> impl Future<Output = Result<Consumed, DdbError>> + Send {
        (**self).delete_item(table, key, condition)
    }

    fn transact_write(&self, ops: Vec<WriteOp>) -> impl Future<Output = Result<Consumed, DdbError>> + Send {
        (**self).transact_write(ops)
    }

    fn query(&self, table: &str, query: PartitionQuery) -> impl Future<Output = Result<Page, DdbError>> + Send {
        (**self).query(table, query)
    }

    fn scan_segment(&self, table: &str, scan: ScanSegment) -> impl Future<Output = Result<Page, DdbError>> + Send {
        (**self).scan_segment(table, scan)
    }

    fn batch_get(
        &self,
        table: &str,
        keys: Vec<Item>,
        consistent: bool,
    ) -> impl Future<Output = Result<BatchGetOutput, DdbError>> + Send {
        (**self).batch_get(table, keys, consistent)
    }

    fn describe_table(&self, table: &str) -> impl Future<Output = Result<TableDescription, DdbError>> + Send {
        (**self).describe_table(table)
    }

    fn create_table(&self, spec: &TableSpec) -> impl Future<Output = Result<(), DdbError>> + Send {
        (**self).create_table(spec)
    }

    fn update_time_to_live(
        &self,
        table: &str,
        attribute: &str,
        enabled: bool,
    ) -> impl Future<Output = Result<(), DdbError>> + Send {
        (**self).update_time_to_live(table, attribute, enabled)
    }
}

/// What [`ensure_table`] found or did.
#[derive(Debug, Clone, PartialEq)]
pub struct EnsuredTable {
    /// Whether this call created the table (false if it existed or someone else created it meanwhile).
    pub created: bool,
    /// The ACTIVE table. Its key schema may differ from the spec if the table already existed: check it.
    pub description: TableDescription,
}

/// Creates the table if it is missing and waits until it is ACTIVE — the one place for that logic.
///
/// A table that exists is left as it is (whatever its schema: the caller checks
/// [`EnsuredTable::description`]). A concurrent creation by another process (`ResourceInUseException`) is
/// waited for like our own. Fails with [`ErrorKind::Other`] if the table is not ACTIVE within `timeout` (a
/// table stuck in CREATING needs an operator, not a retry).
pub async fn ensure_table<D: DynamoApi>(db: &D, spec: &TableSpec, timeout: Duration) -> Result<EnsuredTable, DdbError> {
    let mut created = false;
    match db.describe_table(&spec.name).await {
        Ok(d) if d.status == TableStatus::Active => {
            return Ok(EnsuredTable {
                created: false,
                description: d,
            });
        }
        Ok(_) => {}
        Err(e) if e.kind == ErrorKind::NotFound => {
            tracing::info!(table = %spec.name, "creating table");
            match db.create_table(spec).await {
                Ok(()) => created = true,
                Err(e) if e.kind == ErrorKind::InUse => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    loop {
        match db.describe_table(&spec.name).await {
            Ok(d) if d.status == TableStatus::Active => {
                return Ok(EnsuredTable {
                    created,
                    description: d,
                });
            }
            Ok(_) => {}
            // Right after CreateTable, DescribeTable may not see the table yet.
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let delay = backoff.next_delay();
        if tokio::time::Instant::now() + delay > deadline {
            return Err(DdbError::new(
                ErrorKind::Other,
                "DescribeTable (waiting for ACTIVE)",
                &spec.name,
                format!("the table did not become ACTIVE within {timeout:?}"),
            ));
        }
        tokio::time::sleep(delay).await;
    }
}
