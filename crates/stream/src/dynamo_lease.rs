//! [`LeaseStore`] in a DynamoDB table (created if missing, PAY_PER_REQUEST, hash key `shard_id`).
//!
//! Item layout: `shard_id` (S, key), `lease_owner` (S, absent when unowned), `lease_counter` (N), `lease_token`
//! (N), `checkpoint` (S, optional), `checkpoint_time_ms` (N, optional), `parent_shard_ids` (SS, absent when
//! empty), `finished` (BOOL). Use one table per stream.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue, ScalarAttributeType,
    TableStatus,
};

use crate::error::LeaseError;
use crate::lease::{Checkpoint, Lease, LeaseGrant, LeaseStore};
use crate::model::SequenceNumber;

const SHARD_ID: &str = "shard_id";
const OWNER: &str = "lease_owner";
const COUNTER: &str = "lease_counter";
const TOKEN: &str = "lease_token";
const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_TIME: &str = "checkpoint_time_ms";
const PARENTS: &str = "parent_shard_ids";
const FINISHED: &str = "finished";

/// Leases in a DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoLeaseStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// How long [`LeaseStore::initialize`] waits for a newly created table to become ACTIVE.
    create_timeout: Duration,
}

impl DynamoLeaseStore {
    /// A store on `table` (created by [`LeaseStore::initialize`] if missing).
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            create_timeout: Duration::from_secs(120),
        }
    }

    /// The lease table name.
    pub fn table_name(&self) -> &str {
        &self.table
    }
}

/// What a typed DynamoDB error means for a lease operation.
#[derive(Clone, Copy)]
enum Kind {
    Conflict,
    Throttled,
    NotFound,
    InUse,
}

/// Implemented for the operation error enums this store sees, so that typed variants are recognised even when the
/// error metadata carries no code.
trait Typed {
    fn kind(&self) -> Option<Kind>;
}

macro_rules! typed {
    ($($t:ty => { $($m:ident => $k:expr),* $(,)? }),* $(,)?) => {$(
        impl Typed for $t {
            fn kind(&self) -> Option<Kind> {
                $(if self.$m() { return Some($k); })*
                None
            }
        }
    )*};
}

typed! {
    aws_sdk_dynamodb::operation::update_item::UpdateItemError => {
        is_conditional_check_failed_exception => Kind::Conflict,
        is_provisioned_throughput_exceeded_exception => Kind::Throttled,
        is_request_limit_exceeded => Kind::Throttled,
    },
    aws_sdk_dynamodb::operation::put_item::PutItemError => {
        is_conditional_check_failed_exception => Kind::Conflict,
        is_provisioned_throughput_exceeded_exception => Kind::Throttled,
        is_request_limit_exceeded => Kind::Throttled,
    },
    aws_sdk_dynamodb::operation::delete_item::DeleteItemError => {
        is_conditional_check_failed_exception => Kind::Conflict,
        is_provisioned_throughput_exceeded_exception => Kind::Throttled,
        is_request_limit_exceeded => Kind::Throttled,
    },
    aws_sdk_dynamodb::operation::scan::ScanError => {
        is_provisioned_throughput_exceeded_exception => Kind::Throttled,
        is_request_limit_exceeded => Kind::Throttled,
        is_resource_not_found_exception => Kind::NotFound,
    },
    aws_sdk_dynamodb::operation::describe_table::DescribeTableError => {
        is_resource_not_found_exception => Kind::NotFound,
    },
    aws_sdk_dynamodb::operation::create_table::CreateTableError => {
        is_resource_in_use_exception => Kind::InUse,
        is_limit_exceeded_exception => Kind::Throttled,
    },
}

/// The kind of a DynamoDB error: typed variant first, then error code.
fn kind_of<E, R>(err: &SdkError<E, R>) -> Option<Kind>
where
    E: ProvideErrorMetadata + Typed,
{
    if let Some(k) = err.as_service_error().and_then(Typed::kind) {
        return Some(k);
    }
    match err.code() {
        Some("ConditionalCheckFailedException") => Some(Kind::Conflict),
        Some(
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "LimitExceededException",
        ) => Some(Kind::Throttled),
        Some("ResourceNotFoundException") => Some(Kind::NotFound),
        Some("ResourceInUseException") => Some(Kind::InUse),
        _ => None,
    }
}

fn classify<E, R>(shard_id: &str, err: SdkError<E, R>) -> LeaseError
where
    E: ProvideErrorMetadata + Typed + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let message = err.message().map(str::to_owned).unwrap_or_else(|| format!("{err:?}"));
    match kind_of(&err) {
        Some(Kind::Conflict) => LeaseError::Conflict(shard_id.to_owned()),
        Some(Kind::Throttled) => LeaseError::Throttled(message),
        _ => match err.code() {
            Some(code) => LeaseError::Other(format!("{code}: {message}")),
            None => LeaseError::Other(message),
        },
    }
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_n(item: &HashMap<String, AttributeValue>, name: &str) -> Result<Option<u64>, LeaseError> {
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

fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s),
        _ => None,
    }
}

/// Parses a lease item.
pub(crate) fn lease_from_item(item: &HashMap<String, AttributeValue>) -> Result<Lease, LeaseError> {
    let shard_id = get_s(item, SHARD_ID).ok_or_else(|| LeaseError::Other("lease item without shard_id".into()))?;
    let checkpoint = get_s(item, CHECKPOINT).map(|s| Checkpoint {
        sequence_number: SequenceNumber::new(s),
        record_time: None,
    });
    let checkpoint = match (checkpoint, get_n(item, CHECKPOINT_TIME)?) {
        (Some(mut c), Some(ms)) => {
            c.record_time = Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
            Some(c)
        }
        (c, _) => c,
    };
    let mut parent_shard_ids = match item.get(PARENTS) {
        Some(AttributeValue::Ss(v)) => v.clone(),
        _ => Vec::new(),
    };
    parent_shard_ids.sort();
    Ok(Lease {
        shard_id: shard_id.to_owned(),
        owner: get_s(item, OWNER).map(str::to_owned),
        counter: get_n(item, COUNTER)?.unwrap_or(0),
        token: get_n(item, TOKEN)?.unwrap_or(0),
        checkpoint,
        parent_shard_ids,
        finished: matches!(item.get(FINISHED), Some(AttributeValue::Bool(true))),
    })
}

/// Serialises a lease item.
pub(crate) fn lease_to_item(lease: &Lease) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        (SHARD_ID.to_owned(), AttributeValue::S(lease.shard_id.clone())),
        (COUNTER.to_owned(), n(lease.counter)),
        (TOKEN.to_owned(), n(lease.token)),
        (FINISHED.to_owned(), AttributeValue::Bool(lease.finished)),
    ]);
    if let Some(o) = &lease.owner {
        item.insert(OWNER.to_owned(), AttributeValue::S(o.clone()));
    }
    if let Some(c) = &lease.checkpoint {
        item.insert(
            CHECKPOINT.to_owned(),
            AttributeValue::S(c.sequence_number.as_str().to_owned()),
        );
        if let Some(ms) = c.record_time.and_then(epoch_ms) {
            item.insert(CHECKPOINT_TIME.to_owned(), n(ms));
        }
    }
    if !lease.parent_shard_ids.is_empty() {
        item.insert(PARENTS.to_owned(), AttributeValue::Ss(lease.parent_shard_ids.clone()));
    }
    item
}

fn epoch_ms(t: SystemTime) -> Option<u64> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

impl DynamoLeaseStore {
    fn key(&self, shard_id: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([(SHARD_ID.to_owned(), AttributeValue::S(shard_id.to_owned()))])
    }

    async fn wait_active(&self) -> Result<(), LeaseError> {
        let deadline = tokio::time::Instant::now() + self.create_timeout;
        loop {
            let out = self.client.describe_table().table_name(&self.table).send().await;
            match out {
                Ok(o) if o.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) => return Ok(()),
                Ok(_) => {}
                Err(e) if matches!(kind_of(&e), Some(Kind::NotFound)) => {}
                Err(e) => return Err(classify(&self.table, e)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LeaseError::Other(format!(
                    "lease table {} did not become ACTIVE",
                    self.table
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl LeaseStore for DynamoLeaseStore {
    async fn initialize(&self) -> Result<(), LeaseError> {
        match self.client.describe_table().table_name(&self.table).send().await {
            Ok(o) if o.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) => return Ok(()),
            Ok(_) => return self.wait_active().await,
            Err(e) if matches!(kind_of(&e), Some(Kind::NotFound)) => {}
            Err(e) => return Err(classify(&self.table, e)),
        }
        tracing::info!(table = %self.table, "creating lease table");
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(SHARD_ID)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| LeaseError::Other(e.to_string()))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(SHARD_ID)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| LeaseError::Other(e.to_string()))?,
            )
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Another worker created it concurrently.
            Err(e) if matches!(kind_of(&e), Some(Kind::InUse)) => {}
            Err(e) => return Err(classify(&self.table, e)),
        }
        self.wait_active().await
    }

    async fn list_leases(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut leases = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify(&self.table, e))?;
            for item in out.items() {
                leases.push(lease_from_item(item)?);
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(leases),
            }
        }
    }

    async fn create_lease_if_absent(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(lease_to_item(lease)))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", SHARD_ID)
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) => match classify(&lease.shard_id, e) {
                LeaseError::Conflict(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn take_lease(&self, shard_id: &str, owner: &str, expected_counter: u64) -> Result<LeaseGrant, LeaseError> {
        let token = expected_counter + 1;
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(shard_id)))
            .update_expression("SET #o = :o, #c = :new, #t = :new")
            .condition_expression("#c = :exp AND (attribute_not_exists(#f) OR #f = :false)")
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_names("#c", COUNTER)
            .expression_attribute_names("#t", TOKEN)
            .expression_attribute_names("#f", FINISHED)
            .expression_attribute_values(":o", AttributeValue::S(owner.to_owned()))
            .expression_attribute_values(":new", n(token))
            .expression_attribute_values(":exp", n(expected_counter))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .send()
            .await
            .map_err(|e| classify(shard_id, e))?;
        Ok(LeaseGrant {
            shard_id: shard_id.to_owned(),
            owner: owner.to_owned(),
            token,
        })
    }

    async fn renew_lease(&self, grant: &LeaseGrant) -> Result<u64, LeaseError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(&grant.shard_id)))
            .update_expression("SET #c = #c + :one")
            .condition_expression("#o = :o AND #t = :t")
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_names("#c", COUNTER)
            .expression_attribute_names("#t", TOKEN)
            .expression_attribute_values(":o", AttributeValue::S(grant.owner.clone()))
            .expression_attribute_values(":t", n(grant.token))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| classify(&grant.shard_id, e))?;
        let attrs = out.attributes.unwrap_or_default();
        Ok(get_n(&attrs, COUNTER)?.unwrap_or(0))
    }

    async fn checkpoint(
        &self,
        grant: &LeaseGrant,
        checkpoint: Option<&Checkpoint>,
        finished: bool,
    ) -> Result<(), LeaseError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(&grant.shard_id)))
            .condition_expression("#o = :o AND #t = :t")
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_names("#t", TOKEN)
            .expression_attribute_names("#f", FINISHED)
            .expression_attribute_values(":o", AttributeValue::S(grant.owner.clone()))
            .expression_attribute_values(":t", n(grant.token))
            .expression_attribute_values(":f", AttributeValue::Bool(finished));
        let mut update = String::from("SET #f = :f");
        if let Some(c) = checkpoint {
            update.push_str(", #cp = :cp");
            req = req
                .expression_attribute_names("#cp", CHECKPOINT)
                .expression_attribute_values(":cp", AttributeValue::S(c.sequence_number.as_str().to_owned()));
            if let Some(ms) = c.record_time.and_then(epoch_ms) {
                update.push_str(", #ct = :ct");
                req = req
                    .expression_attribute_names("#ct", CHECKPOINT_TIME)
                    .expression_attribute_values(":ct", n(ms));
            }
        }
        req.update_expression(update)
            .send()
            .await
            .map_err(|e| classify(&grant.shard_id, e))?;
        Ok(())
    }

    async fn release_lease(&self, grant: &LeaseGrant) -> Result<(), LeaseError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(&grant.shard_id)))
            .update_expression("REMOVE #o SET #c = #c + :one")
            .condition_expression("#o = :o AND #t = :t")
            .expression_attribute_names("#o", OWNER)
            .expression_attribute_names("#c", COUNTER)
            .expression_attribute_names("#t", TOKEN)
            .expression_attribute_values(":o", AttributeValue::S(grant.owner.clone()))
            .expression_attribute_values(":t", n(grant.token))
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| classify(&grant.shard_id, e))?;
        Ok(())
    }

    async fn delete_finished_lease(&self, shard_id: &str) -> Result<(), LeaseError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.key(shard_id)))
            .condition_expression("attribute_not_exists(#k) OR #f = :true")
            .expression_attribute_names("#k", SHARD_ID)
            .expression_attribute_names("#f", FINISHED)
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .send()
            .await
            .map_err(|e| classify(shard_id, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::create_table::CreateTableOutput;
    use aws_sdk_dynamodb::operation::describe_table::{DescribeTableError, DescribeTableOutput};
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_sdk_dynamodb::operation::scan::ScanOutput;
    use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
    use aws_sdk_dynamodb::types::TableDescription;
    use aws_sdk_dynamodb::types::error::{
        ConditionalCheckFailedException, ProvisionedThroughputExceededException, ResourceNotFoundException,
    };
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    #[test]
    fn lease_items_round_trip() {
        let lease = Lease {
            shard_id: "shardId-1".into(),
            owner: Some("w1".into()),
            counter: 7,
            token: 5,
            checkpoint: Some(Checkpoint {
                sequence_number: "123".into(),
                record_time: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000)),
            }),
            parent_shard_ids: vec!["shardId-0".into()],
            finished: true,
        };
        assert_eq!(lease_from_item(&lease_to_item(&lease)).unwrap(), lease);
        let fresh = Lease::new("s", vec![]);
        assert_eq!(lease_from_item(&lease_to_item(&fresh)).unwrap(), fresh);
    }

    #[tokio::test]
    async fn conditional_failures_are_conflicts_and_throttles_are_throttles() {
        let conflict = mock!(aws_sdk_dynamodb::Client::update_item).then_error(|| {
            UpdateItemError::ConditionalCheckFailedException(ConditionalCheckFailedException::builder().build())
        });
        let throttled = mock!(aws_sdk_dynamodb::Client::update_item).then_error(|| {
            UpdateItemError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder()
                    .message("slow down")
                    .build(),
            )
        });
        let exists = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
            PutItemError::ConditionalCheckFailedException(ConditionalCheckFailedException::builder().build())
        });
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&conflict, &throttled, &exists]);
        let store = DynamoLeaseStore::new(client, "leases");
        assert_eq!(
            store.take_lease("s1", "w", 3).await,
            Err(LeaseError::Conflict("s1".into()))
        );
        let grant = LeaseGrant {
            shard_id: "s1".into(),
            owner: "w".into(),
            token: 4,
        };
        assert!(matches!(store.renew_lease(&grant).await, Err(LeaseError::Throttled(_))));
        assert!(!store.create_lease_if_absent(&Lease::new("s1", vec![])).await.unwrap());
    }

    #[tokio::test]
    async fn initialize_creates_missing_table_and_list_paginates() {
        let missing = mock!(aws_sdk_dynamodb::Client::describe_table)
            .then_error(|| DescribeTableError::ResourceNotFoundException(ResourceNotFoundException::builder().build()));
        let create = mock!(aws_sdk_dynamodb::Client::create_table)
            .match_requests(|r| {
                r.table_name() == Some("leases") && r.billing_mode() == Some(&BillingMode::PayPerRequest)
            })
            .then_output(|| CreateTableOutput::builder().build());
        let active = mock!(aws_sdk_dynamodb::Client::describe_table).then_output(|| {
            DescribeTableOutput::builder()
                .table(TableDescription::builder().table_status(TableStatus::Active).build())
                .build()
        });
        let page1 = mock!(aws_sdk_dynamodb::Client::scan).then_output(|| {
            ScanOutput::builder()
                .items(lease_to_item(&Lease::new("a", vec![])))
                .set_last_evaluated_key(Some(HashMap::from([(
                    SHARD_ID.to_owned(),
                    AttributeValue::S("a".into()),
                )])))
                .build()
        });
        let page2 = mock!(aws_sdk_dynamodb::Client::scan)
            .match_requests(|r| r.exclusive_start_key().is_some())
            .then_output(|| {
                ScanOutput::builder()
                    .items(lease_to_item(&Lease::new("b", vec!["a".into()])))
                    .build()
            });
        let client = mock_client!(
            aws_sdk_dynamodb,
            RuleMode::Sequential,
            [&missing, &create, &active, &page1, &page2]
        );
        let store = DynamoLeaseStore::new(client, "leases");
        store.initialize().await.unwrap();
        assert_eq!(create.num_calls(), 1);
        let leases = store.list_leases().await.unwrap();
        assert_eq!(
            leases.iter().map(|l| l.shard_id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(leases[1].parent_shard_ids, ["a"]);
    }
}
