//! [`LeaseStore`] in a DynamoDB table, through the project's DynamoDB adapter ([`DynamoApi`]): created if
//! missing (on-demand, hash key only), every ownership change a conditional write.
//!
//! Item layout: the key attribute (configurable, [`LeaseTable::key_attribute`]; S), `lease_owner` (S, absent when
//! unowned), `lease_counter` (N), `lease_token` (N), `checkpoint` (S, the position, optional),
//! `checkpoint_time_ms` (N, optional), the dependencies attribute (SS, absent when empty; configurable) and
//! `finished` (BOOL). The stream reader's tables use `shard_id` and `parent_shard_ids`, the names they had before
//! this crate existed, so existing lease tables keep working. Use one table per stream or per backfilled table.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use ddbguard_ddb::{
    AttributeValue, Condition, DdbError, DynamoApi, ErrorKind, Item, KeyAttribute, KeySchema, ReturnValues, ScalarType,
    ScanSegment, TableSpec, Update, ensure_table,
};

use crate::error::LeaseError;
use crate::lease::{Lease, LeaseGrant, Position, Taken};
use crate::store::LeaseStore;

const OWNER: &str = "lease_owner";
const COUNTER: &str = "lease_counter";
const TOKEN: &str = "lease_token";
const POSITION: &str = "checkpoint";
const POSITION_TIME: &str = "checkpoint_time_ms";
const FINISHED: &str = "finished";

/// The name and attribute layout of a lease table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTable {
    /// The table name.
    pub name: String,
    /// The hash key attribute holding the lease key.
    pub key_attribute: String,
    /// The string-set attribute holding the dependencies.
    pub dependencies_attribute: String,
}

impl LeaseTable {
    /// A table with the generic layout: `lease_key` and `depends_on`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            key_attribute: "lease_key".into(),
            dependencies_attribute: "depends_on".into(),
        }
    }

    /// A table with the stream reader's layout: `shard_id` and `parent_shard_ids`.
    pub fn for_shards(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            key_attribute: "shard_id".into(),
            dependencies_attribute: "parent_shard_ids".into(),
        }
    }
}

/// Leases in a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoLeaseStore<D> {
    db: D,
    table: LeaseTable,
    /// How long [`LeaseStore::initialize`] waits for a newly created table to become ACTIVE.
    create_timeout: Duration,
}

impl<D: DynamoApi> DynamoLeaseStore<D> {
    /// A store on `table` (created by [`LeaseStore::initialize`] if missing).
    pub fn new(db: D, table: LeaseTable) -> Self {
        Self {
            db,
            table,
            create_timeout: Duration::from_secs(120),
        }
    }

    /// The lease table name.
    pub fn table_name(&self) -> &str {
        &self.table.name
    }

    fn key(&self, key: &str) -> Item {
        HashMap::from([(self.table.key_attribute.clone(), AttributeValue::S(key.to_owned()))])
    }

    fn held_by(grant: &LeaseGrant) -> Condition {
        Condition::equals(OWNER, AttributeValue::S(grant.owner.clone())).and(Condition::equals(TOKEN, n(grant.token)))
    }

    /// Parses a lease item.
    fn lease_from_item(&self, item: &Item) -> Result<Lease, LeaseError> {
        let key = get_s(item, &self.table.key_attribute).ok_or_else(|| {
            LeaseError::Other(format!(
                "lease item of table {} without {}",
                self.table.name, self.table.key_attribute
            ))
        })?;
        let position = get_s(item, POSITION).map(|s| Position {
            value: s.to_owned(),
            time: None,
        });
        let position = match (position, get_n(item, POSITION_TIME)?) {
            (Some(mut p), Some(ms)) => {
                p.time = Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
                Some(p)
            }
            (p, _) => p,
        };
        let mut dependencies = match item.get(&self.table.dependencies_attribute) {
            Some(AttributeValue::Ss(v)) => v.clone(),
            _ => Vec::new(),
        };
        dependencies.sort();
        Ok(Lease {
            key: key.to_owned(),
            owner: get_s(item, OWNER).map(str::to_owned),
            counter: get_n(item, COUNTER)?.unwrap_or(0),
            token: get_n(item, TOKEN)?.unwrap_or(0),
            position,
            dependencies,
            finished: matches!(item.get(FINISHED), Some(AttributeValue::Bool(true))),
        })
    }

    /// Serialises a lease item.
    fn lease_to_item(&self, lease: &Lease) -> Item {
        let mut item = HashMap::from([
            (self.table.key_attribute.clone(), AttributeValue::S(lease.key.clone())),
            (COUNTER.to_owned(), n(lease.counter)),
            (TOKEN.to_owned(), n(lease.token)),
            (FINISHED.to_owned(), AttributeValue::Bool(lease.finished)),
        ]);
        if let Some(o) = &lease.owner {
            item.insert(OWNER.to_owned(), AttributeValue::S(o.clone()));
        }
        if let Some(p) = &lease.position {
            item.insert(POSITION.to_owned(), AttributeValue::S(p.value.clone()));
            if let Some(ms) = p.time.and_then(epoch_ms) {
                item.insert(POSITION_TIME.to_owned(), n(ms));
            }
        }
        if !lease.dependencies.is_empty() {
            item.insert(
                self.table.dependencies_attribute.clone(),
                AttributeValue::Ss(lease.dependencies.clone()),
            );
        }
        item
    }
}

/// What a failed call means for a lease: a refused condition is a [`LeaseError::Conflict`] on `key`.
fn classify(key: &str, e: DdbError) -> LeaseError {
    match e.kind {
        ErrorKind::Conflict => LeaseError::Conflict(key.to_owned()),
        ErrorKind::Throttled => LeaseError::Throttled(e.to_string()),
        _ => LeaseError::Other(e.to_string()),
    }
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_n(item: &Item, name: &str) -> Result<Option<u64>, LeaseError> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| LeaseError::Other(format!("lease attribute {name} is not a u64: {s}"))),
        Some(other) => Err(LeaseError::Other(format!(
            "lease attribute {name} has the wrong type: {other:?}"
        ))),
    }
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s),
        _ => None,
    }
}

fn epoch_ms(t: SystemTime) -> Option<u64> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
}

impl<D: DynamoApi> LeaseStore for DynamoLeaseStore<D> {
    async fn initialize(&self) -> Result<(), LeaseError> {
        let spec = TableSpec::on_demand(
            self.table.name.clone(),
            KeySchema {
                hash: KeyAttribute::new(self.table.key_attribute.clone(), ScalarType::S),
                range: None,
            },
        );
        let ensured = ensure_table(&self.db, &spec, self.create_timeout)
            .await
            .map_err(|e| classify(&self.table.name, e))?;
        if ensured.description.key_schema.hash.name != self.table.key_attribute {
            return Err(LeaseError::Other(format!(
                "lease table {} has hash key {}, expected {}",
                self.table.name, ensured.description.key_schema.hash.name, self.table.key_attribute
            )));
        }
        Ok(())
    }

    async fn list_leases(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut leases = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .db
                .scan_segment(
                    &self.table.name,
                    ScanSegment {
                        segment: 0,
                        total_segments: 1,
                        exclusive_start_key: start,
                        limit: None,
                        consistent: true,
                    },
                )
                .await
                .map_err(|e| classify(&self.table.name, e))?;
            for item in &page.items {
                leases.push(self.lease_from_item(item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(leases),
            }
        }
    }

    async fn create_lease_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let res = self
            .db
            .put_item(
                &self.table.name,
                self.lease_to_item(lease),
                Some(Condition::not_exists(self.table.key_attribute.clone())),
            )
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) => match classify(&lease.key, e) {
                LeaseError::Conflict(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn take_lease(&self, key: &str, owner: &str, expected_counter: u64) -> Result<Taken, LeaseError> {
        let token = expected_counter + 1;
        let out = self
            .db
            .update_item(
                &self.table.name,
                self.key(key),
                Update::new()
                    .set(OWNER, AttributeValue::S(owner.to_owned()))
                    .set(COUNTER, n(token))
                    .set(TOKEN, n(token)),
                Some(Condition::And(vec![
                    Condition::equals(COUNTER, n(expected_counter)),
                    Condition::Or(vec![
                        Condition::not_exists(FINISHED),
                        Condition::equals(FINISHED, AttributeValue::Bool(false)),
                    ]),
                ])),
                ReturnValues::AllNew,
            )
            .await
            .map_err(|e| classify(key, e))?;
        let lease = match &out.attributes {
            Some(item) => self.lease_from_item(item)?,
            None => {
                return Err(LeaseError::Other(format!(
                    "taking lease {key}: the table returned no attributes"
                )));
            }
        };
        Ok(Taken {
            grant: LeaseGrant {
                key: key.to_owned(),
                owner: owner.to_owned(),
                token,
            },
            lease,
        })
    }

    async fn renew_lease(&self, grant: &LeaseGrant) -> Result<u64, LeaseError> {
        let out = self
            .db
            .update_item(
                &self.table.name,
                self.key(&grant.key),
                Update::new().add_number(COUNTER, 1),
                Some(Self::held_by(grant)),
                ReturnValues::AllNew,
            )
            .await
            .map_err(|e| classify(&grant.key, e))?;
        let attrs = out.attributes.unwrap_or_default();
        Ok(get_n(&attrs, COUNTER)?.unwrap_or(0))
    }

    async fn checkpoint(
        &self,
        grant: &LeaseGrant,
        position: Option<&Position>,
        finished: bool,
    ) -> Result<(), LeaseError> {
        let mut update = Update::new().set(FINISHED, AttributeValue::Bool(finished));
        if let Some(p) = position {
            update = update.set(POSITION, AttributeValue::S(p.value.clone()));
            if let Some(ms) = p.time.and_then(epoch_ms) {
                update = update.set(POSITION_TIME, n(ms));
            }
        }
        self.db
            .update_item(
                &self.table.name,
                self.key(&grant.key),
                update,
                Some(Self::held_by(grant)),
                ReturnValues::None,
            )
            .await
            .map_err(|e| classify(&grant.key, e))?;
        Ok(())
    }

    async fn release_lease(&self, grant: &LeaseGrant) -> Result<(), LeaseError> {
        self.db
            .update_item(
                &self.table.name,
                self.key(&grant.key),
                Update::new().remove(OWNER).add_number(COUNTER, 1),
                Some(Self::held_by(grant)),
                ReturnValues::None,
            )
            .await
            .map_err(|e| classify(&grant.key, e))?;
        Ok(())
    }

    async fn delete_finished_lease(&self, key: &str) -> Result<(), LeaseError> {
        self.db
            .delete_item(
                &self.table.name,
                self.key(key),
                Some(Condition::Or(vec![
                    Condition::not_exists(self.table.key_attribute.clone()),
                    Condition::equals(FINISHED, AttributeValue::Bool(true)),
                ])),
            )
            .await
            .map_err(|e| classify(key, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use ddbguard_ddb::{FakeDynamo, FaultyDynamo, Op};

    fn store(db: FakeDynamo) -> DynamoLeaseStore<FakeDynamo> {
        DynamoLeaseStore::new(db, LeaseTable::for_shards("leases"))
    }

    #[tokio::test]
    async fn lease_items_round_trip() {
        let s = store(FakeDynamo::new());
        let lease = Lease {
            key: "shardId-1".into(),
            owner: Some("w1".into()),
            counter: 7,
            token: 5,
            position: Some(Position {
                value: "123".into(),
                time: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000)),
            }),
            dependencies: vec!["shardId-0".into()],
            finished: true,
        };
        let item = s.lease_to_item(&lease);
        assert!(item.contains_key("shard_id") && item.contains_key("parent_shard_ids"));
        assert_eq!(s.lease_from_item(&item).unwrap(), lease);
        let fresh = Lease::new("s", vec![]);
        assert_eq!(s.lease_from_item(&s.lease_to_item(&fresh)).unwrap(), fresh);
    }

    #[tokio::test]
    async fn the_store_keeps_the_lease_protocol_over_the_fake_table() {
        let s = store(FakeDynamo::new());
        s.initialize().await.unwrap();
        s.initialize().await.unwrap();
        assert!(
            s.create_lease_if_absent(&Lease::new("s1", vec!["s0".into()]))
                .await
                .unwrap()
        );
        assert!(!s.create_lease_if_absent(&Lease::new("s1", vec![])).await.unwrap());
        let a = s.take_lease("s1", "a", 0).await.unwrap();
        assert_eq!(
            (a.lease.owner.as_deref(), a.lease.token, a.lease.dependencies.clone()),
            (Some("a"), 1, vec!["s0".to_owned()])
        );
        assert_eq!(s.take_lease("s1", "b", 0).await, Err(LeaseError::Conflict("s1".into())));
        assert_eq!(s.renew_lease(&a.grant).await.unwrap(), 2);
        let p = Position {
            value: "42".into(),
            time: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(5)),
        };
        s.checkpoint(&a.grant, Some(&p), false).await.unwrap();
        // b takes over on the counter it saw and gets a's checkpoint with the take.
        let b = s.take_lease("s1", "b", 2).await.unwrap();
        assert_eq!(b.lease.position, Some(p.clone()));
        assert!(matches!(
            s.checkpoint(&a.grant, None, true).await,
            Err(LeaseError::Conflict(_))
        ));
        assert!(matches!(s.release_lease(&a.grant).await, Err(LeaseError::Conflict(_))));
        assert!(matches!(
            s.delete_finished_lease("s1").await,
            Err(LeaseError::Conflict(_))
        ));
        s.checkpoint(&b.grant, None, true).await.unwrap();
        assert!(
            matches!(s.take_lease("s1", "c", 3).await, Err(LeaseError::Conflict(_))),
            "finished"
        );
        s.release_lease(&b.grant).await.unwrap();
        let listed = s.list_leases().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].owner.clone(), listed[0].finished, listed[0].position.clone()),
            (None, true, Some(p))
        );
        s.delete_finished_lease("s1").await.unwrap();
        assert!(s.list_leases().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn throttling_is_throttled_and_a_table_with_another_key_is_refused() {
        let db = Arc::new(FakeDynamo::new());
        let faulty = Arc::new(FaultyDynamo::new(db.clone()));
        let s = DynamoLeaseStore::new(faulty.clone(), LeaseTable::for_shards("leases"));
        s.initialize().await.unwrap();
        s.create_lease_if_absent(&Lease::new("s1", vec![])).await.unwrap();
        faulty.fail_next(Op::UpdateItem, ErrorKind::Throttled, 1);
        assert!(matches!(
            s.take_lease("s1", "a", 0).await,
            Err(LeaseError::Throttled(_))
        ));
        s.take_lease("s1", "a", 0).await.unwrap();
        let other = DynamoLeaseStore::new(db, LeaseTable::new("leases"));
        let err = other.initialize().await.unwrap_err();
        assert!(
            err.to_string().contains("hash key shard_id, expected lease_key"),
            "{err}"
        );
    }
}
