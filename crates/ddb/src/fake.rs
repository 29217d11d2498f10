//! In-memory DynamoDB for tests: [`FakeDynamo`], and [`FaultyDynamo`], which injects failures into any
//! [`DynamoApi`].
//!
//! The fake follows DynamoDB where callers can observe it: key schemas and key types are enforced,
//! conditions and updates are evaluated (numbers compare numerically, sets as sets), transactions are all or
//! nothing with per-operation cancellation reasons, a table being created refuses data calls with
//! `ResourceNotFoundException`, parallel scan segments partition the items by a hash of the partition key,
//! a page filled up to `limit` returns a `LastEvaluatedKey` even when nothing follows, and consumed capacity
//! is computed from item sizes:
//!
//! - writes: 1 unit per started KB of the larger of the old and new item (at least 1); in a transaction, 2;
//! - `GetItem`/`BatchGetItem`: per item, 1 unit per started 4 KB (at least 1), half for eventually
//!   consistent reads;
//! - `Query`/`Scan`: the sizes of the page's items summed, then rounded up to 4 KB (at least one unit),
//!   half for eventually consistent reads.
//!
//! Item sizes follow DynamoDB's rules closely (names plus values; numbers about one byte per two digits),
//! not byte for byte. What it does not do: secondary indexes, filter and projection expressions, document
//! paths, TTL expiry, stale `ItemCount`/`TableSizeBytes` (the fake reports live numbers).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use crate::api::{
    BatchGetOutput, BillingMode, Consumed, DynamoApi, GetItemOutput, KeyAttribute, KeySchema, Page, PartitionQuery,
    ReturnValues, ScalarType, ScanSegment, StreamInfo, TableDescription, TableSpec, TableStatus, UpdateItemOutput,
    WriteOp,
};
use crate::error::{DdbError, ErrorKind};
use crate::expr::{Condition, InvalidExpression, Update, UpdateAction, check_update};
use crate::size::{Decimal, item_size, read_units, write_units};
use crate::{AttributeValue, Item};

/// Largest item DynamoDB stores.
const MAX_ITEM_BYTES: usize = 400 * 1024;
/// Largest page a query or scan returns.
const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// Where an item sits in a table: (hash of the partition key, partition key bytes, sort key bytes). Ordering
/// by the hash first makes every scan segment a set of whole partitions, as in DynamoDB.
type Slot = (u64, Vec<u8>, Vec<u8>);

#[derive(Debug)]
struct Table {
    spec: TableSpec,
    items: BTreeMap<Slot, Item>,
    /// `DescribeTable` calls still answering CREATING.
    describes_left: u32,
    replica_regions: Vec<String>,
    ttl_attribute: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    tables: HashMap<String, Table>,
    creating_describes: u32,
}

/// An in-memory DynamoDB (see the module documentation for what it models).
#[derive(Default)]
pub struct FakeDynamo {
    state: Mutex<State>,
}

impl fmt::Debug for FakeDynamo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("FakeDynamo")
            .field("tables", &state.tables.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn validation(operation: &'static str, table: &str, message: impl fmt::Display) -> DdbError {
    DdbError::new(
        ErrorKind::Other,
        operation,
        table,
        format!("ValidationException: {message}"),
    )
}

fn not_found(operation: &'static str, table: &str) -> DdbError {
    DdbError::new(
        ErrorKind::NotFound,
        operation,
        table,
        "ResourceNotFoundException: Requested resource not found",
    )
}

impl FakeDynamo {
    /// An empty fake; tables it creates are ACTIVE at once.
    pub fn new() -> FakeDynamo {
        FakeDynamo::default()
    }

    /// Tables created from now on answer CREATING to the first `describes` `DescribeTable` calls (and refuse
    /// data calls until then), so that waiting for ACTIVE is exercised.
    pub fn with_creating_describes(self, describes: u32) -> FakeDynamo {
        self.lock().creating_describes = describes;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates an ACTIVE table directly (test setup).
    pub fn add_table(&self, spec: TableSpec) {
        let mut state = self.lock();
        state.tables.insert(
            spec.name.clone(),
            Table {
                spec,
                items: BTreeMap::new(),
                describes_left: 0,
                replica_regions: Vec::new(),
                ttl_attribute: None,
            },
        );
    }

    /// Sets the replica regions `DescribeTable` reports.
    pub fn set_replica_regions(&self, table: &str, regions: Vec<String>) {
        if let Some(t) = self.lock().tables.get_mut(table) {
            t.replica_regions = regions;
        }
    }

    /// Every item of `table` (scan order), bypassing capacity and status (test assertions).
    pub fn items(&self, table: &str) -> Vec<Item> {
        self.lock()
            .tables
            .get(table)
            .map(|t| t.items.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Stores `item` unconditionally, bypassing status (test setup and tampering).
    pub fn put_raw(&self, table: &str, item: Item) -> Result<(), DdbError> {
        let mut state = self.lock();
        let t = state.tables.get_mut(table).ok_or_else(|| not_found("PutItem", table))?;
        let slot = slot_of(&t.spec.key_schema, &item, true).map_err(|m| validation("PutItem", table, m))?;
        t.items.insert(slot, item);
        Ok(())
    }

    /// The attribute TTL is enabled on, if any.
    pub fn ttl_attribute(&self, table: &str) -> Option<String> {
        self.lock().tables.get(table).and_then(|t| t.ttl_attribute.clone())
    }
}

/// The active table, or `ResourceNotFoundException` (as DynamoDB answers for a table still being created).
fn active<'a>(state: &'a mut State, operation: &'static str, table: &str) -> Result<&'a mut Table, DdbError> {
    match state.tables.get_mut(table) {
        Some(t) if t.describes_left == 0 => Ok(t),
        _ => Err(not_found(operation, table)),
    }
}

/// Bytes that identify a key value (type tag, then the value; numbers normalised).
fn key_bytes(attr: &KeyAttribute, value: Option<&AttributeValue>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match (attr.kind, value) {
        (ScalarType::S, Some(AttributeValue::S(s))) if !s.is_empty() => {
            out.push(b'S');
            out.extend_from_slice(s.as_bytes());
        }
        (ScalarType::N, Some(AttributeValue::N(n))) => {
            let d = Decimal::parse(n).ok_or_else(|| format!("key attribute {:?} is not a number", attr.name))?;
            out.push(b'N');
            out.extend_from_slice(format!("{d:?}").as_bytes());
        }
        (ScalarType::B, Some(AttributeValue::B(b))) if !b.as_ref().is_empty() => {
            out.push(b'B');
            out.extend_from_slice(b.as_ref());
        }
        (_, None) => return Err(format!("the key attribute {:?} is missing", attr.name)),
        _ => {
            return Err(format!(
                "the key attribute {:?} has the wrong type or is empty (expected {:?})",
                attr.name, attr.kind
            ));
        }
    }
    Ok(out)
}

/// The slot of an item or key. A key (`whole_item` false) must hold exactly the key attributes.
fn slot_of(schema: &KeySchema, item: &Item, whole_item: bool) -> Result<Slot, String> {
    let pk = key_bytes(&schema.hash, item.get(&schema.hash.name))?;
    let sk = match &schema.range {
        Some(r) => key_bytes(r, item.get(&r.name))?,
        None => Vec::new(),
    };
    if !whole_item && item.len() != schema.names().count() {
        return Err("the provided key does not match the table's key schema".into());
    }
    Ok((fnv1a(&pk), pk, sk))
}

/// FNV-1a: a stable hash (the same in every process), so segments are reproducible.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// DynamoDB's equality: same type; numbers numerically; sets as sets.
fn values_equal(a: &AttributeValue, b: &AttributeValue) -> bool {
    use AttributeValue as V;
    let num = |x: &str, y: &str| match (Decimal::parse(x), Decimal::parse(y)) {
        (Some(x), Some(y)) => x == y,
        _ => x == y,
    };
    match (a, b) {
        (V::N(x), V::N(y)) => num(x, y),
        (V::Ss(x), V::Ss(y)) => x.iter().collect::<HashSet<_>>() == y.iter().collect::<HashSet<_>>(),
        (V::Bs(x), V::Bs(y)) => {
            x.iter().map(|b| b.as_ref()).collect::<HashSet<_>>() == y.iter().map(|b| b.as_ref()).collect::<HashSet<_>>()
        }
        (V::Ns(x), V::Ns(y)) => x.len() == y.len() && x.iter().all(|a| y.iter().any(|b| num(a, b))),
        (V::L(x), V::L(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b)),
        (V::M(x), V::M(y)) => x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| values_equal(a, b))),
        _ => a == b,
    }
}

/// Evaluates a condition on the item as it is (`None`: it does not exist).
fn evaluate(condition: &Condition, item: Option<&Item>) -> Result<bool, InvalidExpression> {
    Ok(match condition {
        Condition::AttributeExists(n) => item.is_some_and(|i| i.contains_key(n)),
        Condition::AttributeNotExists(n) => !item.is_some_and(|i| i.contains_key(n)),
        Condition::Equals(n, v) => item.and_then(|i| i.get(n)).is_some_and(|x| values_equal(x, v)),
        Condition::And(all) | Condition::Or(all) if all.is_empty() => {
            return Err(InvalidExpression("an empty And/Or has no DynamoDB expression".into()));
        }
        Condition::And(all) => {
            let mut ok = true;
            for c in all {
                ok &= evaluate(c, item)?;
            }
            ok
        }
        Condition::Or(any) => {
            let mut ok = false;
            for c in any {
                ok |= evaluate(c, item)?;
            }
            ok
        }
        Condition::Not(c) => !evaluate(c, item)?,
    })
}

/// Adds two decimal numbers (integers exactly; others as f64, enough for tests).
fn add_numbers(a: &str, b: &str) -> Result<String, String> {
    if let (Ok(x), Ok(y)) = (a.trim().parse::<i128>(), b.trim().parse::<i128>()) {
        return x
            .checked_add(y)
            .map(|s| s.to_string())
            .ok_or_else(|| "number overflow".into());
    }
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => Ok((x + y).to_string()),
        _ => Err(format!("{a:?} or {b:?} is not a number")),
    }
}

/// Applies an update to `item` (the key is already in it).
fn apply(update: &Update, schema: &KeySchema, item: &mut Item) -> Result<(), String> {
    check_update(update).map_err(|e| e.0)?;
    for action in &update.actions {
        let name = match action {
            UpdateAction::Set(n, _) | UpdateAction::Remove(n) | UpdateAction::AddNumber(n, _) => n,
        };
        if schema.names().any(|k| k == name) {
            return Err(format!("cannot update attribute {name:?}: it is part of the key"));
        }
        match action {
            UpdateAction::Set(n, v) => {
                item.insert(n.clone(), v.clone());
            }
            UpdateAction::Remove(n) => {
                item.remove(n);
            }
            UpdateAction::AddNumber(n, delta) => {
                let new = match item.get(n) {
                    None => add_numbers("0", delta)?,
                    Some(AttributeValue::N(old)) => add_numbers(old, delta)?,
                    Some(_) => return Err(format!("ADD to {n:?}, which is not a number")),
                };
                item.insert(n.clone(), AttributeValue::N(new));
            }
        }
    }
    Ok(())
}

fn describe(t: &Table) -> TableDescription {
    let stream = t.spec.stream_view_type.as_ref().map(|view| StreamInfo {
        enabled: true,
        view_type: Some(view.clone()),
        arn: Some(format!(
            "arn:aws:dynamodb:us-east-1:000000000000:table/{}/stream/2026-01-01T00:00:00.000",
            t.spec.name
        )),
    });
    TableDescription {
        name: t.spec.name.clone(),
        status: if t.describes_left > 0 {
            TableStatus::Creating
        } else {
            TableStatus::Active
        },
        key_schema: t.spec.key_schema.clone(),
        billing_mode: Some(t.spec.billing_mode),
        stream,
        item_count: Some(t.items.len() as i64),
        size_bytes: Some(t.items.values().map(item_size).sum::<usize>() as i64),
        replica_regions: t.replica_regions.clone(),
    }
}

/// A read page of `items` (in slot order) after `start`, up to `limit` items or 1 MB.
fn page<'a>(
    schema: &KeySchema,
    items: impl Iterator<Item = (&'a Slot, &'a Item)>,
    start: Option<&Slot>,
    limit: Option<u32>,
    consistent: bool,
) -> Page {
    let limit = limit.map_or(usize::MAX, |l| l as usize);
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut last_evaluated_key = None;
    for (slot, item) in items {
        if start.is_some_and(|s| slot <= s) {
            continue;
        }
        if out.len() >= limit || bytes >= MAX_PAGE_BYTES {
            // DynamoDB stops at the limit and hands out the key of the last item returned.
            last_evaluated_key = out.last().map(|i| schema.key_of(i));
            break;
        }
        bytes += item_size(item);
        out.push(item.clone());
    }
    // A page filled exactly to the limit: DynamoDB returns a key even if nothing follows.
    if last_evaluated_key.is_none() && out.len() == limit && limit > 0 {
        last_evaluated_key = out.last().map(|i| schema.key_of(i));
    }
    Page {
        items: out,
        last_evaluated_key,
        consumed: Consumed {
            read_units: read_units(bytes, consistent),
            write_units: 0.0,
        },
    }
}

impl DynamoApi for FakeDynamo {
    async fn get_item(&self, table: &str, key: Item, consistent: bool) -> Result<GetItemOutput, DdbError> {
        let mut state = self.lock();
        let t = active(&mut state, "GetItem", table)?;
        let slot = slot_of(&t.spec.key_schema, &key, false).map_err(|m| validation("GetItem", table, m))?;
        let item = t.items.get(&slot).cloned();
        let size = item.as_ref().map_or(0, item_size);
        Ok(GetItemOutput {
            item,
            consumed: Consumed {
                read_units: read_units(size, consistent),
                write_units: 0.0,
            },
        })
    }

    async fn put_item(&self, table: &str, item: Item, condition: Option<Condition>) -> Result<Consumed, DdbError> {
        let mut state = self.lock();
        let t = active(&mut state, "PutItem", table)?;
        let slot = slot_of(&t.spec.key_schema, &item, true).map_err(|m| validation("PutItem", table, m))?;
        let size = item_size(&item);
        if size > MAX_ITEM_BYTES {
            return Err(validation(
                "PutItem",
                table,
                "Item size has exceeded the maximum allowed size",
            ));
        }
        let old = t.items.get(&slot);
        if let Some(c) = &condition
            && !evaluate(c, old).map_err(|e| validation("PutItem", table, e))?
        {
            return Err(DdbError::new(
                ErrorKind::Conflict,
                "PutItem",
                table,
                "ConditionalCheckFailedException: The conditional request failed",
            ));
        }
        let units = write_units(size.max(old.map_or(0, item_size)));
        t.items.insert(slot, item);
        Ok(Consumed {
            read_units: 0.0,
            write_units: units,
        })
    }

    async fn update_item(
        &self,
        table: &str,
        key: Item,
        update: Update,
        condition: Option<Condition>,
        return_values: ReturnValues,
    ) -> Result<UpdateItemOutput, DdbError> {
        let mut state = self.lock();
        let t = active(&mut state, "UpdateItem", table)?;
        let slot = slot_of(&t.spec.key_schema, &key, false).map_err(|m| validation("UpdateItem", table, m))?;
        let old = t.items.get(&slot);
        if let Some(c) = &condition
            && !evaluate(c, old).map_err(|e| validation("UpdateItem", table, e))?
        {
            return Err(DdbError::new(
                ErrorKind::Conflict,
                "UpdateItem",
                table,
                "ConditionalCheckFailedException: The conditional request failed",
            ));
        }
        let old_size = old.map_or(0, item_size);
        let mut new = old.cloned().unwrap_or(key);
        apply(&update, &t.spec.key_schema, &mut new).map_err(|m| validation("UpdateItem", table, m))?;
        let size = item_size(&new);
        if size > MAX_ITEM_BYTES {
            return Err(validation(
                "UpdateItem",
                table,
                "Item size to update has exceeded the maximum allowed size",
            ));
        }
        t.items.insert(slot, new.clone());
        Ok(UpdateItemOutput {
            attributes: (return_values == ReturnValues::AllNew).then_some(new),
            consumed: Consumed {
                read_units: 0.0,
                write_units: write_units(size.max(old_size)),
            },
        })
    }

    async fn delete_item(&self, table: &str, key: Item, condition: Option<Condition>) -> Result<Consumed, DdbError> {
        let mut state = self.lock();
        let t = active(&mut state, "DeleteItem", table)?;
        let slot = slot_of(&t.spec.key_schema, &key, false).map_err(|m| validation("DeleteItem", table, m))?;
        let old = t.items.get(&slot);
        if let Some(c) = &condition
            && !evaluate(c, old).map_err(|e| validation("DeleteItem", table, e))?
        {
            return Err(DdbError::new(
                ErrorKind::Conflict,
                "DeleteItem",
                table,
                "ConditionalCheckFailedException: The conditional request failed",
            ));
        }
        let units = write_units(old.map_or(0, item_size));
        t.items.remove(&slot);
        Ok(Consumed {
            read_units: 0.0,
            write_units: units,
        })
    }

    async fn transact_write(&self, ops: Vec<WriteOp>) -> Result<Consumed, DdbError> {
        const OP: &str = "TransactWriteItems";
        let first = ops.first().map(|o| o.table().to_owned()).unwrap_or_default();
        if ops.is_empty() || ops.len() > 100 {
            return Err(validation(OP, &first, "a transaction has 1 to 100 operations"));
        }
        let mut state = self.lock();
        // Validate everything and evaluate every condition before changing anything.
        let mut slots = Vec::with_capacity(ops.len());
        let mut seen = HashSet::new();
        let mut reasons = Vec::with_capacity(ops.len());
        for op in &ops {
            let t = active(&mut state, OP, op.table())?;
            let (key, condition) = match op {
                WriteOp::Put { item, condition, .. } => (item, condition.as_ref()),
                WriteOp::Update { key, condition, .. } | WriteOp::Delete { key, condition, .. } => {
                    (key, condition.as_ref())
                }
                WriteOp::ConditionCheck { key, condition, .. } => (key, Some(condition)),
            };
            let whole = matches!(op, WriteOp::Put { .. });
            let slot = slot_of(&t.spec.key_schema, key, whole).map_err(|m| validation(OP, op.table(), m))?;
            if !seen.insert((op.table().to_owned(), slot.clone())) {
                return Err(validation(
                    OP,
                    op.table(),
                    "Transaction request cannot include multiple operations on one item",
                ));
            }
            let current = t.items.get(&slot);
            let holds = match condition {
                Some(c) => evaluate(c, current).map_err(|e| validation(OP, op.table(), e))?,
                None => true,
            };
            reasons.push(if holds { "None" } else { "ConditionalCheckFailed" }.to_owned());
            slots.push(slot);
        }
        if reasons.iter().any(|r| r != "None") {
            return Err(DdbError {
                kind: ErrorKind::Conflict,
                operation: OP,
                table: first,
                message: "transaction cancelled: ConditionalCheckFailed".into(),
                cancellation_reasons: reasons,
            });
        }
        // Compute every new item first, so that an invalid update leaves the tables untouched.
        let mut writes: Vec<(String, Slot, Option<Item>)> = Vec::new();
        let mut units = 0.0;
        for (op, slot) in ops.into_iter().zip(slots) {
            let t = active(&mut state, OP, op.table())?;
            let old_size = t.items.get(&slot).map_or(0, item_size);
            let new = match op {
                WriteOp::Put { table, item, .. } => Some((table, Some(item))),
                WriteOp::Update { table, key, update, .. } => {
                    let mut new = t.items.get(&slot).cloned().unwrap_or(key);
                    apply(&update, &t.spec.key_schema, &mut new).map_err(|m| validation(OP, &table, m))?;
                    Some((table, Some(new)))
                }
                WriteOp::Delete { table, .. } => Some((table, None)),
                WriteOp::ConditionCheck { .. } => None,
            };
            let new_size = match &new {
                Some((table, Some(item))) => {
                    let size = item_size(item);
                    if size > MAX_ITEM_BYTES {
                        return Err(validation(OP, table, "Item size has exceeded the maximum allowed size"));
                    }
                    size
                }
                _ => 0,
            };
            units += 2.0 * write_units(old_size.max(new_size));
            if let Some((table, item)) = new {
                writes.push((table, slot, item));
            }
        }
        for (table, slot, item) in writes {
            let t = active(&mut state, OP, &table)?;
            match item {
                Some(item) => t.items.insert(slot, item),
                None => t.items.remove(&slot),
            };
        }
        Ok(Consumed {
            read_units: 0.0,
            write_units: units,
        })
    }

    async fn query(&self, table: &str, query: PartitionQuery) -> Result<Page, DdbError> {
        let mut state = self.lock();
        let t = active(&mut state, "Query", table)?;
        let schema = &t.spec.key_schema;
        if query.key_name != schema.hash.name {
            return Err(validation(
                "Query",
                table,
                "the key condition must name the partition key",
            ));
        }
        let pk = key_bytes(&schema.hash, Some(&query.value)).map_err(|m| validation("Query", table, m))?;
        let hash = fnv1a(&pk);
        let start = match &query.exclusive_start_key {
            Some(k) => Some(slot_of(schema, k, false).map_err(|m| validation("Query", table, m))?),
            None => None,
        };
        let items = t.items.iter().filter(|(s, _)| s.0 == hash && s.1 == pk);
        Ok(page(schema, items, start.as_ref(), query.limit, query.consistent))
    }

    async fn scan_segment(&self, table: &str, scan: ScanSegment) -> Result<Page, DdbError> {
        let mut state = self.lock();
        let t = active(&mut state, "Scan", table)?;
        if scan.total_segments == 0 || scan.total_segments > 1_000_000 || scan.segment >= scan.total_segments {
            return Err(validation(
                "Scan",
                table,
                format!("segment {} of {} segments", scan.segment, scan.total_segments),
            ));
        }
        if scan.limit == Some(0) {
            return Err(validation("Scan", table, "Limit must be at least 1"));
        }
        let schema = &t.spec.key_schema;
        let start = match &scan.exclusive_start_key {
            Some(k) => Some(slot_of(schema, k, false).map_err(|m| validation("Scan", table, m))?),
            None => None,
        };
        let total = u64::from(scan.total_segments);
        let segment = u64::from(scan.segment);
        let items = t.items.iter().filter(|(s, _)| s.0 % total == segment);
        Ok(page(schema, items, start.as_ref(), scan.limit, scan.consistent))
    }

    async fn batch_get(&self, table: &str, keys: Vec<Item>, consistent: bool) -> Result<BatchGetOutput, DdbError> {
        let mut state = self.lock();
        let t = active(&mut state, "BatchGetItem", table)?;
        if keys.is_empty() || keys.len() > 100 {
            return Err(validation("BatchGetItem", table, "a batch has 1 to 100 keys"));
        }
        let mut seen = HashSet::new();
        let mut out = BatchGetOutput::default();
        for key in &keys {
            let slot = slot_of(&t.spec.key_schema, key, false).map_err(|m| validation("BatchGetItem", table, m))?;
            if !seen.insert(slot.clone()) {
                return Err(validation(
                    "BatchGetItem",
                    table,
                    "Provided list of item keys contains duplicates",
                ));
            }
            let item = t.items.get(&slot);
            out.consumed.read_units += read_units(item.map_or(0, item_size), consistent);
            out.items.extend(item.cloned());
        }
        Ok(out)
    }

    async fn describe_table(&self, table: &str) -> Result<TableDescription, DdbError> {
        let mut state = self.lock();
        let t = state
            .tables
            .get_mut(table)
            .ok_or_else(|| not_found("DescribeTable", table))?;
        let d = describe(t);
        t.describes_left = t.describes_left.saturating_sub(1);
        Ok(d)
    }

    async fn create_table(&self, spec: &TableSpec) -> Result<(), DdbError> {
        let mut state = self.lock();
        if state.tables.contains_key(&spec.name) {
            return Err(DdbError::new(
                ErrorKind::InUse,
                "CreateTable",
                &spec.name,
                "ResourceInUseException: Table already exists",
            ));
        }
        if let BillingMode::Provisioned {
            read_units,
            write_units,
        } = spec.billing_mode
            && (read_units < 1 || write_units < 1)
        {
            return Err(validation(
                "CreateTable",
                &spec.name,
                "provisioned capacity must be at least 1",
            ));
        }
        let describes_left = state.creating_describes;
        state.tables.insert(
            spec.name.clone(),
            Table {
                spec: spec.clone(),
                items: BTreeMap::new(),
                describes_left,
                replica_regions: Vec::new(),
                ttl_attribute: None,
            },
        );
        Ok(())
    }

    async fn update_time_to_live(&self, table: &str, attribute: &str, enabled: bool) -> Result<(), DdbError> {
        let mut state = self.lock();
        let t = active(&mut state, "UpdateTimeToLive", table)?;
        t.ttl_attribute = enabled.then(|| attribute.to_owned());
        Ok(())
    }
}

/// The operations of [`DynamoApi`], to aim injected faults at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `get_item`.
    GetItem,
    /// `put_item`.
    PutItem,
    /// `update_item`.
    UpdateItem,
    /// `delete_item`.
    DeleteItem,
    /// `transact_write`.
    TransactWrite,
    /// `query`.
    Query,
    /// `scan_segment`.
    Scan,
    /// `batch_get`.
    BatchGet,
    /// `describe_table`.
    DescribeTable,
    /// `create_table`.
    CreateTable,
    /// `update_time_to_live`.
    UpdateTimeToLive,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::GetItem => "GetItem",
            Op::PutItem => "PutItem",
            Op::UpdateItem => "UpdateItem",
            Op::DeleteItem => "DeleteItem",
            Op::TransactWrite => "TransactWriteItems",
            Op::Query => "Query",
            Op::Scan => "Scan",
            Op::BatchGet => "BatchGetItem",
            Op::DescribeTable => "DescribeTable",
            Op::CreateTable => "CreateTable",
            Op::UpdateTimeToLive => "UpdateTimeToLive",
        }
    }
}

#[derive(Debug, Default)]
struct Faults {
    errors: HashMap<Op, VecDeque<ErrorKind>>,
    latency: HashMap<Op, Duration>,
    /// (keys left unprocessed per call, calls still affected).
    unprocessed: Option<(usize, u32)>,
    calls: HashMap<Op, u64>,
}

/// Wraps a [`DynamoApi`] and injects failures: errors of a kind for the next calls of an operation,
/// unprocessed keys for `batch_get`, and latency.
#[derive(Debug)]
pub struct FaultyDynamo<D> {
    inner: D,
    faults: Mutex<Faults>,
}

impl<D: DynamoApi> FaultyDynamo<D> {
    /// Wraps `inner`, without faults.
    pub fn new(inner: D) -> FaultyDynamo<D> {
        FaultyDynamo {
            inner,
            faults: Mutex::new(Faults::default()),
        }
    }

    /// The wrapped implementation.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `times` calls of `op` fail with `kind` (without reaching the wrapped implementation).
    pub fn fail_next(&self, op: Op, kind: ErrorKind, times: u32) {
        let mut f = self.faults();
        let queue = f.errors.entry(op).or_default();
        queue.extend(std::iter::repeat_n(kind, times as usize));
    }

    /// The next `calls` `batch_get` calls leave their last `keys` keys unprocessed.
    pub fn leave_unprocessed(&self, keys: usize, calls: u32) {
        self.faults().unprocessed = Some((keys, calls));
    }

    /// Every call of `op` first sleeps `latency`.
    pub fn set_latency(&self, op: Op, latency: Duration) {
        self.faults().latency.insert(op, latency);
    }

    /// How many calls of `op` were made (failed ones included).
    pub fn calls(&self, op: Op) -> u64 {
        self.faults().calls.get(&op).copied().unwrap_or(0)
    }

    async fn before(&self, op: Op, table: &str) -> Result<(), DdbError> {
        let (error, latency) = {
            let mut f = self.faults();
            *f.calls.entry(op).or_default() += 1;
            let error = f.errors.get_mut(&op).and_then(VecDeque::pop_front);
            (error, f.latency.get(&op).copied())
        };
        if let Some(latency) = latency {
            tokio::time::sleep(latency).await;
        }
        match error {
            None => Ok(()),
            Some(kind) => {
                let mut e = DdbError::new(kind, op.name(), table, format!("injected {kind} failure"));
                if op == Op::TransactWrite && kind == ErrorKind::Conflict {
                    e.cancellation_reasons = vec!["ConditionalCheckFailed".into()];
                }
                Err(e)
            }
        }
    }
}

impl<D: DynamoApi> DynamoApi for FaultyDynamo<D> {
    async fn get_item(&self, table: &str, key: Item, consistent: bool) -> Result<GetItemOutput, DdbError> {
        self.before(Op::GetItem, table).await?;
        self.inner.get_item(table, key, consistent).await
    }

    async fn put_item(&self, table: &str, item: Item, condition: Option<Condition>) -> Result<Consumed, DdbError> {
        self.before(Op::PutItem, table).await?;
        self.inner.put_item(table, item, condition).await
    }

    async fn update_item(
        &self,
        table: &str,
        key: Item,
        update: Update,
        condition: Option<Condition>,
        return_values: ReturnValues,
    ) -> Result<UpdateItemOutput, DdbError> {
        self.before(Op::UpdateItem, table).await?;
        self.inner
            .update_item(table, key, update, condition, return_values)
            .await
    }

    async fn delete_item(&self, table: &str, key: Item, condition: Option<Condition>) -> Result<Consumed, DdbError> {
        self.before(Op::DeleteItem, table).await?;
        self.inner.delete_item(table, key, condition).await
    }

    async fn transact_write(&self, ops: Vec<WriteOp>) -> Result<Consumed, DdbError> {
        let table = ops.first().map(|o| o.table().to_owned()).unwrap_or_default();
        self.before(Op::TransactWrite, &table).await?;
        self.inner.transact_write(ops).await
    }

    async fn query(&self, table: &str, query: PartitionQuery) -> Result<Page, DdbError> {
        self.before(Op::Query, table).await?;
        self.inner.query(table, query).await
    }

    async fn scan_segment(&self, table: &str, scan: ScanSegment) -> Result<Page, DdbError> {
        self.before(Op::Scan, table).await?;
        self.inner.scan_segment(table, scan).await
    }

    async fn batch_get(&self, table: &str, mut keys: Vec<Item>, consistent: bool) -> Result<BatchGetOutput, DdbError> {
        self.before(Op::BatchGet, table).await?;
        let left = {
            let mut f = self.faults();
            match &mut f.unprocessed {
                Some((n, calls)) if *calls > 0 => {
                    *calls -= 1;
                    (*n).min(keys.len())
                }
                _ => 0,
            }
        };
        let unprocessed = keys.split_off(keys.len() - left);
        let mut out = if keys.is_empty() {
            BatchGetOutput::default()
        } else {
            self.inner.batch_get(table, keys, consistent).await?
        };
        out.unprocessed_keys.extend(unprocessed);
        Ok(out)
    }

    async fn describe_table(&self, table: &str) -> Result<TableDescription, DdbError> {
        self.before(Op::DescribeTable, table).await?;
        self.inner.describe_table(table).await
    }

    async fn create_table(&self, spec: &TableSpec) -> Result<(), DdbError> {
        self.before(Op::CreateTable, &spec.name).await?;
        self.inner.create_table(spec).await
    }

    async fn update_time_to_live(&self, table: &str, attribute: &str, enabled: bool) -> Result<(), DdbError> {
        self.before(Op::UpdateTimeToLive, table).await?;
        self.inner.update_time_to_live(table, attribute, enabled).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ensure_table;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    fn n(v: &str) -> AttributeValue {
        AttributeValue::N(v.into())
    }

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    fn schema() -> KeySchema {
        KeySchema {
            hash: KeyAttribute::new("pk", ScalarType::S),
            range: Some(KeyAttribute::new("sk", ScalarType::S)),
        }
    }

    fn fake() -> FakeDynamo {
        let f = FakeDynamo::new();
        f.add_table(TableSpec::on_demand("T", schema()));
        f
    }

    fn key(pk: &str, sk: &str) -> Item {
        item(&[("pk", s(pk)), ("sk", s(sk))])
    }

    fn with(pk: &str, sk: &str, extra: &[(&str, AttributeValue)]) -> Item {
        let mut it = key(pk, sk);
        it.extend(item(extra));
        it
    }

    #[tokio::test]
    async fn conditions_are_evaluated_on_the_item_as_it_is() {
        let db = fake();
        let first = with("a", "1", &[("v", n("1")), ("odd name.#:", s("x"))]);
        db.put_item("T", first.clone(), Some(Condition::not_exists("pk")))
            .await
            .unwrap();
        // The same put again: the item exists now.
        let e = db
            .put_item("T", first.clone(), Some(Condition::not_exists("pk")))
            .await
            .unwrap_err();
        assert_eq!((e.kind, e.operation), (ErrorKind::Conflict, "PutItem"));

        // Numbers compare numerically.
        let eq = |v: AttributeValue| Some(Condition::equals("v", v));
        db.put_item("T", first.clone(), eq(n("1.00"))).await.unwrap();
        assert_eq!(
            db.put_item("T", first.clone(), eq(n("2"))).await.unwrap_err().kind,
            ErrorKind::Conflict
        );
        // Another type never equals.
        assert_eq!(
            db.put_item("T", first.clone(), eq(s("1"))).await.unwrap_err().kind,
            ErrorKind::Conflict
        );

        let or = Condition::Or(vec![
            Condition::exists("missing"),
            Condition::equals("odd name.#:", s("x")),
        ]);
        db.put_item("T", first.clone(), Some(or)).await.unwrap();
        let and = Condition::exists("pk").and(Condition::exists("missing"));
        assert_eq!(
            db.put_item("T", first.clone(), Some(and)).await.unwrap_err().kind,
            ErrorKind::Conflict
        );
        let not = Condition::Not(Box::new(Condition::exists("missing")));
        db.delete_item("T", key("a", "1"), Some(not)).await.unwrap();
        assert!(db.items("T").is_empty());
        // An empty group is a validation error, not a silent pass.
        let e = db.put_item("T", first, Some(Condition::And(vec![]))).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Other);
        assert!(db.items("T").is_empty());
    }

    #[tokio::test]
    async fn sets_compare_as_sets() {
        let db = fake();
        let it = with("a", "1", &[("ss", AttributeValue::Ss(vec!["x".into(), "y".into()]))]);
        db.put_item("T", it.clone(), None).await.unwrap();
        let same = AttributeValue::Ss(vec!["y".into(), "x".into()]);
        db.put_item("T", it.clone(), Some(Condition::equals("ss", same)))
            .await
            .unwrap();
        let other = AttributeValue::Ss(vec!["x".into()]);
        let e = db
            .put_item("T", it, Some(Condition::equals("ss", other)))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
    }

    #[tokio::test]
    async fn keys_are_checked_against_the_schema() {
        let db = fake();
        let e = db.put_item("T", item(&[("pk", s("a"))]), None).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Other);
        assert!(e.message.contains("\"sk\" is missing"), "{}", e.message);
        let e = db
            .put_item("T", item(&[("pk", n("1")), ("sk", s("x"))]), None)
            .await
            .unwrap_err();
        assert!(e.message.contains("wrong type"), "{}", e.message);
        // A key with extra attributes is not a key.
        let e = db
            .get_item("T", with("a", "1", &[("v", n("1"))]), true)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Other);
        let e = db.get_item("Missing", key("a", "1"), true).await.unwrap_err();
        assert_eq!((e.kind, e.table.as_str()), (ErrorKind::NotFound, "Missing"));
    }

    #[tokio::test]
    async fn updates_set_remove_add_and_create_missing_items() {
        let db = fake();
        let u = Update::new().set("owner", s("w1")).add_number("counter", 1);
        let out = db
            .update_item(
                "T",
                key("a", "1"),
                u,
                Some(Condition::not_exists("pk")),
                ReturnValues::AllNew,
            )
            .await
            .unwrap();
        let after = out.attributes.unwrap();
        assert_eq!(after, with("a", "1", &[("owner", s("w1")), ("counter", n("1"))]));
        let u = Update::new().remove("owner").add_number("counter", 41);
        let out = db
            .update_item(
                "T",
                key("a", "1"),
                u,
                Some(Condition::equals("counter", n("1"))),
                ReturnValues::None,
            )
            .await
            .unwrap();
        assert!(out.attributes.is_none());
        assert_eq!(db.items("T"), vec![with("a", "1", &[("counter", n("42"))])]);
        // Key attributes cannot be updated; ADD needs a number.
        let e = db
            .update_item(
                "T",
                key("a", "1"),
                Update::new().set("sk", s("2")),
                None,
                ReturnValues::None,
            )
            .await
            .unwrap_err();
        assert!(e.message.contains("part of the key"), "{}", e.message);
        db.update_item(
            "T",
            key("a", "1"),
            Update::new().set("s", s("x")),
            None,
            ReturnValues::None,
        )
        .await
        .unwrap();
        let e = db
            .update_item(
                "T",
                key("a", "1"),
                Update::new().add_number("s", 1),
                None,
                ReturnValues::None,
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Other);
    }

    #[tokio::test]
    async fn transactions_are_all_or_nothing_and_name_the_failed_operation() {
        let db = fake();
        db.put_item("T", with("a", "1", &[("v", n("1"))]), None).await.unwrap();
        let ops = vec![
            WriteOp::Put {
                table: "T".into(),
                item: with("b", "1", &[]),
                condition: Some(Condition::not_exists("pk")),
            },
            WriteOp::Update {
                table: "T".into(),
                key: key("a", "1"),
                update: Update::new().set("v", n("2")),
                condition: Some(Condition::equals("v", n("7"))),
            },
        ];
        let e = db.transact_write(ops.clone()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert_eq!(
            e.cancellation_reasons,
            vec!["None".to_owned(), "ConditionalCheckFailed".to_owned()]
        );
        assert_eq!(
            db.items("T").len(),
            1,
            "nothing of the cancelled transaction was written"
        );

        let mut ops = ops;
        if let WriteOp::Update { condition, .. } = &mut ops[1] {
            *condition = Some(Condition::equals("v", n("1")));
        }
        ops.push(WriteOp::ConditionCheck {
            table: "T".into(),
            key: key("c", "1"),
            condition: Condition::not_exists("pk"),
        });
        let consumed = db.transact_write(ops).await.unwrap();
        // Two units per started KB of each operation, condition checks included.
        assert_eq!(consumed.write_units, 6.0);
        let items = db.items("T");
        assert_eq!(items.len(), 2);
        assert!(items.contains(&with("a", "1", &[("v", n("2"))])));

        // Two operations on one item are refused, as DynamoDB does.
        let twice = vec![
            WriteOp::Delete {
                table: "T".into(),
                key: key("a", "1"),
                condition: None,
            },
            WriteOp::Put {
                table: "T".into(),
                item: key("a", "1"),
                condition: None,
            },
        ];
        assert_eq!(db.transact_write(twice).await.unwrap_err().kind, ErrorKind::Other);
        // An invalid update late in a transaction leaves earlier operations unapplied.
        let bad = vec![
            WriteOp::Delete {
                table: "T".into(),
                key: key("b", "1"),
                condition: None,
            },
            WriteOp::Update {
                table: "T".into(),
                key: key("a", "1"),
                update: Update::new().remove("pk"),
                condition: None,
            },
        ];
        assert_eq!(db.transact_write(bad).await.unwrap_err().kind, ErrorKind::Other);
        assert_eq!(db.items("T").len(), 2);
    }

    #[tokio::test]
    async fn scan_segments_cover_every_item_exactly_once() {
        let db = fake();
        for p in 0..200 {
            for s2 in 0..3 {
                db.put_item("T", with(&format!("p{p}"), &format!("s{s2}"), &[]), None)
                    .await
                    .unwrap();
            }
        }
        for total in [1u32, 2, 7, 16] {
            let mut seen = Vec::new();
            for segment in 0..total {
                let mut start = None;
                let mut pages = 0;
                loop {
                    let page = db
                        .scan_segment(
                            "T",
                            ScanSegment {
                                segment,
                                total_segments: total,
                                exclusive_start_key: start.take(),
                                limit: Some(25),
                                consistent: false,
                            },
                        )
                        .await
                        .unwrap();
                    pages += 1;
                    assert!(page.items.len() <= 25);
                    for it in &page.items {
                        seen.push((it["pk"].clone(), it["sk"].clone(), segment));
                    }
                    match page.last_evaluated_key {
                        Some(k) => start = Some(k),
                        None => break,
                    }
                    assert!(pages < 1000);
                }
            }
            assert_eq!(seen.len(), 600, "{total} segments");
            let distinct: HashSet<(String, String)> = seen
                .iter()
                .map(|(p, k, _)| (format!("{p:?}"), format!("{k:?}")))
                .collect();
            assert_eq!(distinct.len(), 600, "no item is returned twice");
            // Whole partitions stay in one segment.
            for (p, _, segment) in &seen {
                assert!(seen.iter().all(|(q, _, other)| q != p || other == segment));
            }
            if total > 1 {
                let used: HashSet<u32> = seen.iter().map(|(_, _, s)| *s).collect();
                assert_eq!(used.len(), total as usize, "every segment gets items");
            }
        }
        let e = db
            .scan_segment(
                "T",
                ScanSegment {
                    segment: 2,
                    total_segments: 2,
                    ..ScanSegment::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Other);
    }

    #[tokio::test]
    async fn a_page_filled_to_the_limit_has_a_last_evaluated_key_even_at_the_end() {
        let db = fake();
        for i in 0..4 {
            db.put_item("T", with("p", &format!("{i}"), &[]), None).await.unwrap();
        }
        let q = |start, limit| PartitionQuery {
            key_name: "pk".into(),
            value: s("p"),
            consistent: true,
            exclusive_start_key: start,
            limit,
        };
        let first = db.query("T", q(None, Some(2))).await.unwrap();
        assert_eq!(first.items.len(), 2);
        let second = db.query("T", q(first.last_evaluated_key, Some(2))).await.unwrap();
        assert_eq!(second.items.len(), 2);
        assert_eq!(second.last_evaluated_key, Some(key("p", "3")));
        let third = db.query("T", q(second.last_evaluated_key, Some(2))).await.unwrap();
        assert!(third.items.is_empty() && third.last_evaluated_key.is_none());
        // Sort key order within the partition.
        let all = db.query("T", q(None, None)).await.unwrap();
        let sks: Vec<_> = all.items.iter().map(|i| i["sk"].clone()).collect();
        assert_eq!(sks, vec![s("0"), s("1"), s("2"), s("3")]);
        assert!(all.last_evaluated_key.is_none());
    }

    #[tokio::test]
    async fn consumed_capacity_follows_dynamodb_rules() {
        let db = fake();
        // pk(2) + "a"(1) + sk(2) + "1"(1) + "blob"(4) + 3000 bytes = 3010 bytes: 3 write units, 1 read unit.
        let big = with("a", "1", &[("blob", AttributeValue::B(vec![0u8; 3000].into()))]);
        assert_eq!(item_size(&big), 3010);
        assert_eq!(db.put_item("T", big.clone(), None).await.unwrap().write_units, 3.0);
        let read = |c| db.get_item("T", key("a", "1"), c);
        assert_eq!(read(true).await.unwrap().consumed.read_units, 1.0);
        assert_eq!(read(false).await.unwrap().consumed.read_units, 0.5);
        // A missing item still costs the minimum.
        let missing = db.get_item("T", key("zz", "1"), true).await.unwrap();
        assert!(missing.item.is_none());
        assert_eq!(missing.consumed.read_units, 1.0);
        // 5000 bytes: 5 write units, 2 strongly consistent read units.
        let bigger = with("a", "2", &[("blob", AttributeValue::B(vec![0u8; 4990].into()))]);
        assert_eq!(item_size(&bigger), 5000);
        assert_eq!(db.put_item("T", bigger, None).await.unwrap().write_units, 5.0);
        assert_eq!(
            db.get_item("T", key("a", "2"), true).await.unwrap().consumed.read_units,
            2.0
        );
        // An overwrite with a smaller item is billed at the larger, old size.
        assert_eq!(db.put_item("T", key("a", "2"), None).await.unwrap().write_units, 5.0);
        // A scan sums the sizes before rounding: 3010 + 10 bytes = 1 unit, half when eventually consistent.
        let page = db
            .scan_segment(
                "T",
                ScanSegment {
                    total_segments: 1,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.consumed.read_units, 0.5);
        // A batch rounds per item.
        let out = db
            .batch_get("T", vec![key("a", "1"), key("a", "2")], true)
            .await
            .unwrap();
        assert_eq!(out.items.len(), 2);
        assert_eq!(out.consumed.read_units, 2.0);
        assert!(out.unprocessed_keys.is_empty());
        // Numbers: about one byte per two significant digits, plus one.
        assert_eq!(crate::size::value_size(&n("12345")), 4);
        assert_eq!(crate::size::value_size(&n("-0.000100")), 2);
    }

    #[tokio::test]
    async fn oversized_items_and_duplicate_batch_keys_are_refused() {
        let db = fake();
        let huge = with(
            "a",
            "1",
            &[("blob", AttributeValue::B(vec![0u8; MAX_ITEM_BYTES].into()))],
        );
        assert_eq!(db.put_item("T", huge, None).await.unwrap_err().kind, ErrorKind::Other);
        let e = db
            .batch_get("T", vec![key("a", "1"), key("a", "1")], true)
            .await
            .unwrap_err();
        assert!(e.message.contains("duplicates"), "{}", e.message);
    }

    #[tokio::test(start_paused = true)]
    async fn ensure_table_creates_once_and_waits_for_active() {
        let db = FakeDynamo::new().with_creating_describes(3);
        let spec = TableSpec {
            stream_view_type: Some("NEW_AND_OLD_IMAGES".into()),
            billing_mode: BillingMode::Provisioned {
                read_units: 5,
                write_units: 7,
            },
            ..TableSpec::on_demand("New", schema())
        };
        let first = ensure_table(&db, &spec, Duration::from_secs(60)).await.unwrap();
        assert!(first.created);
        assert_eq!(first.description.status, TableStatus::Active);
        assert_eq!(first.description.key_schema, schema());
        assert_eq!(
            first.description.billing_mode,
            Some(BillingMode::Provisioned {
                read_units: 5,
                write_units: 7
            })
        );
        let stream = first.description.stream.unwrap();
        assert!(stream.enabled && stream.arn.is_some());
        assert_eq!(stream.view_type.as_deref(), Some("NEW_AND_OLD_IMAGES"));
        let second = ensure_table(&db, &spec, Duration::from_secs(60)).await.unwrap();
        assert!(!second.created);
        // Data calls wait for ACTIVE too.
        db.put_item("New", key("a", "1"), None).await.unwrap();
        assert_eq!(db.describe_table("New").await.unwrap().item_count, Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn ensure_table_waits_for_a_table_someone_else_creates_and_times_out() {
        let inner = FakeDynamo::new().with_creating_describes(2);
        let spec = TableSpec::on_demand("T2", schema());
        inner.create_table(&spec).await.unwrap();
        assert_eq!(
            inner.get_item("T2", key("a", "1"), true).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        let db = FaultyDynamo::new(inner);
        // DescribeTable said "not found" before the other creator's table appeared: CreateTable is InUse.
        db.fail_next(Op::DescribeTable, ErrorKind::NotFound, 1);
        let out = ensure_table(&db, &spec, Duration::from_secs(60)).await.unwrap();
        assert!(!out.created);
        assert_eq!(db.calls(Op::CreateTable), 1);

        let slow = FakeDynamo::new().with_creating_describes(1000);
        let e = ensure_table(&slow, &TableSpec::on_demand("S", schema()), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            (e.kind, e.operation),
            (ErrorKind::Other, "DescribeTable (waiting for ACTIVE)")
        );
        assert!(e.message.contains("ACTIVE"), "{}", e.message);
    }

    #[tokio::test(start_paused = true)]
    async fn faults_are_injected_per_operation() {
        let db = FaultyDynamo::new(fake());
        db.fail_next(Op::PutItem, ErrorKind::Throttled, 2);
        for _ in 0..2 {
            let e = db.put_item("T", key("a", "1"), None).await.unwrap_err();
            assert_eq!((e.kind, e.operation), (ErrorKind::Throttled, "PutItem"));
        }
        db.put_item("T", key("a", "1"), None).await.unwrap();
        db.put_item("T", key("a", "2"), None).await.unwrap();
        assert_eq!(db.calls(Op::PutItem), 4);
        assert_eq!(db.inner().items("T").len(), 2);

        db.leave_unprocessed(1, 1);
        let keys = vec![key("a", "1"), key("a", "2"), key("a", "3")];
        let out = db.batch_get("T", keys.clone(), true).await.unwrap();
        assert_eq!(out.unprocessed_keys, vec![key("a", "3")]);
        assert_eq!(out.items.len(), 2);
        let out = db.batch_get("T", keys, true).await.unwrap();
        assert!(out.unprocessed_keys.is_empty());

        db.set_latency(Op::GetItem, Duration::from_secs(3));
        let before = tokio::time::Instant::now();
        db.get_item("T", key("a", "1"), true).await.unwrap();
        assert!(before.elapsed() >= Duration::from_secs(3));

        db.fail_next(Op::TransactWrite, ErrorKind::Conflict, 1);
        let e = db.transact_write(vec![]).await.unwrap_err();
        assert_eq!(e.cancellation_reasons, vec!["ConditionalCheckFailed".to_owned()]);
    }

    #[test]
    fn decimals_normalise() {
        let d = |s| Decimal::parse(s).unwrap();
        assert_eq!(d("1"), d("1.000"));
        assert_eq!(d("100"), d("1E2"));
        assert_eq!(d("-0"), d("0.0"));
        assert_ne!(d("1"), d("-1"));
        assert!(Decimal::parse("1x").is_none());
        assert!(Decimal::parse(".").is_none());
    }
}
