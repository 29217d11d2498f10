//! [`SdkDynamo`]: [`DynamoApi`] over `aws_sdk_dynamodb::Client`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    self as sdk, AttributeDefinition, ConditionCheck, Delete, KeySchemaElement, KeyType, KeysAndAttributes,
    ProvisionedThroughput, Put, ReturnConsumedCapacity, ReturnValue, ScalarAttributeType, StreamSpecification,
    StreamViewType, TransactWriteItem,
};

use crate::Item;
use crate::api::{
    BatchGetOutput, BillingMode, Consumed, DynamoApi, GetItemOutput, KeyAttribute, KeySchema, Page, PartitionQuery,
    ReturnValues, ScalarType, ScanSegment, StreamInfo, TableDescription, TableSpec, TableStatus, UpdateItemOutput,
    WriteOp,
};
use crate::error::{DdbError, ErrorKind, classify};
use crate::expr::{Condition, Rendered, Renderer, Update};

/// [`DynamoApi`] over the AWS SDK client (one region). Cheap to clone.
#[derive(Debug, Clone)]
pub struct SdkDynamo {
    client: aws_sdk_dynamodb::Client,
}

impl SdkDynamo {
    /// Wraps a client.
    pub fn new(client: aws_sdk_dynamodb::Client) -> SdkDynamo {
        SdkDynamo { client }
    }

    /// The wrapped client.
    pub fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.client
    }
}

fn invalid(operation: &'static str, table: &str, e: impl std::fmt::Display) -> DdbError {
    DdbError::new(ErrorKind::Other, operation, table, e.to_string())
}

/// Renders an optional condition and an optional update into one placeholder space.
fn render(
    operation: &'static str,
    table: &str,
    condition: Option<&Condition>,
    update: Option<&Update>,
) -> Result<Rendered, DdbError> {
    let mut r = Renderer::new();
    if let Some(u) = update {
        r.update(u).map_err(|e| invalid(operation, table, e))?;
    }
    if let Some(c) = condition {
        r.condition(c).map_err(|e| invalid(operation, table, e))?;
    }
    Ok(r.finish())
}

/// Placeholder maps as the SDK wants them: absent rather than empty (DynamoDB refuses empty maps).
fn maps(r: Rendered) -> (Option<HashMap<String, String>>, Option<Item>) {
    let names = (!r.names.is_empty()).then_some(r.names);
    let values = (!r.values.is_empty()).then_some(r.values);
    (names, values)
}

/// Consumed capacity as reported (with `TOTAL`, DynamoDB reports only `CapacityUnits`; it is read or write
/// units by the operation). Nothing reported (moto) is zero.
fn consumed(c: Option<&sdk::ConsumedCapacity>, write: bool) -> Consumed {
    let Some(c) = c else {
        return Consumed::default();
    };
    if write {
        Consumed {
            read_units: c.read_capacity_units().unwrap_or(0.0),
            write_units: c.write_capacity_units().or(c.capacity_units()).unwrap_or(0.0),
        }
    } else {
        Consumed {
            read_units: c.read_capacity_units().or(c.capacity_units()).unwrap_or(0.0),
            write_units: c.write_capacity_units().unwrap_or(0.0),
        }
    }
}

fn consumed_all(cs: &[sdk::ConsumedCapacity], write: bool) -> Consumed {
    let mut total = Consumed::default();
    for c in cs {
        total += consumed(Some(c), write);
    }
    total
}

fn scalar_to_sdk(t: ScalarType) -> ScalarAttributeType {
    match t {
        ScalarType::S => ScalarAttributeType::S,
        ScalarType::N => ScalarAttributeType::N,
        ScalarType::B => ScalarAttributeType::B,
    }
}

/// The typed description of an SDK table description.
pub fn table_description(t: &sdk::TableDescription) -> Result<TableDescription, String> {
    let name = t.table_name().unwrap_or_default().to_owned();
    let types: HashMap<&str, &ScalarAttributeType> = t
        .attribute_definitions()
        .iter()
        .map(|d| (d.attribute_name(), d.attribute_type()))
        .collect();
    let attr = |k: &KeySchemaElement| -> Result<KeyAttribute, String> {
        let kind = match types.get(k.attribute_name()) {
            Some(ScalarAttributeType::S) => ScalarType::S,
            Some(ScalarAttributeType::N) => ScalarType::N,
            Some(ScalarAttributeType::B) => ScalarType::B,
            other => return Err(format!("key attribute {:?} has type {other:?}", k.attribute_name())),
        };
        Ok(KeyAttribute::new(k.attribute_name(), kind))
    };
    let mut hash = None;
    let mut range = None;
    for k in t.key_schema() {
        match k.key_type() {
            KeyType::Hash => hash = Some(attr(k)?),
            KeyType::Range => range = Some(attr(k)?),
            other => return Err(format!("unknown key type {other:?}")),
        }
    }
    let hash = hash.ok_or_else(|| format!("table {name} has no partition key in its description"))?;
    let status = match t.table_status() {
        Some(sdk::TableStatus::Active) => TableStatus::Active,
        Some(sdk::TableStatus::Creating) => TableStatus::Creating,
        Some(sdk::TableStatus::Updating) => TableStatus::Updating,
        Some(sdk::TableStatus::Deleting) => TableStatus::Deleting,
        Some(other) => TableStatus::Other(other.as_str().to_owned()),
        None => TableStatus::Other("unknown".into()),
    };
    let provisioned = t.provisioned_throughput().map(|p| BillingMode::Provisioned {
        read_units: p.read_capacity_units().unwrap_or(0),
        write_units: p.write_capacity_units().unwrap_or(0),
    });
    let billing_mode = match t.billing_mode_summary().and_then(|b| b.billing_mode()) {
        Some(sdk::BillingMode::PayPerRequest) => Some(BillingMode::PayPerRequest),
        Some(sdk::BillingMode::Provisioned) => provisioned,
        // Tables created before on-demand existed have no summary and are provisioned.
        _ => provisioned.filter(|p| matches!(p, BillingMode::Provisioned { read_units, .. } if *read_units > 0)),
    };
    let stream = match (t.stream_specification(), t.latest_stream_arn()) {
        (None, None) => None,
        (spec, arn) => Some(StreamInfo {
            enabled: spec.is_some_and(|s| s.stream_enabled()),
            view_type: spec.and_then(|s| s.stream_view_type()).map(|v| v.as_str().to_owned()),
            arn: arn.map(str::to_owned),
        }),
    };
    Ok(TableDescription {
        name,
        status,
        key_schema: KeySchema { hash, range },
        billing_mode,
        stream,
        item_count: t.item_count(),
        size_bytes: t.table_size_bytes(),
        replica_regions: t
            .replicas()
            .iter()
            .filter_map(|r| r.region_name().map(str::to_owned))
            .collect(),
    })
}

fn transact_item(op: WriteOp) -> Result<TransactWriteItem, DdbError> {
    const OP: &str = "TransactWriteItems";
    Ok(match op {
        WriteOp::Put { table, item, condition } => {
            let r = render(OP, &table, condition.as_ref(), None)?;
            let condition = r.condition.clone();
            let (names, values) = maps(r);
            let put = Put::builder()
                .table_name(&table)
                .set_item(Some(item))
                .set_condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .build()
                .map_err(|e| invalid(OP, &table, e))?;
            TransactWriteItem::builder().put(put).build()
        }
        WriteOp::Update {
            table,
            key,
            update,
            condition,
        } => {
            let r = render(OP, &table, condition.as_ref(), Some(&update))?;
            let (condition, expression) = (r.condition.clone(), r.update.clone());
            let (names, values) = maps(r);
            let update = sdk::Update::builder()
                .table_name(&table)
                .set_key(Some(key))
                .set_update_expression(expression)
                .set_condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .build()
                .map_err(|e| invalid(OP, &table, e))?;
            TransactWriteItem::builder().update(update).build()
        }
        WriteOp::Delete { table, key, condition } => {
            let r = render(OP, &table, condition.as_ref(), None)?;
            let condition = r.condition.clone();
            let (names, values) = maps(r);
            let delete = Delete::builder()
                .table_name(&table)
                .set_key(Some(key))
                .set_condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .build()
                .map_err(|e| invalid(OP, &table, e))?;
            TransactWriteItem::builder().delete(delete).build()
        }
        WriteOp::ConditionCheck { table, key, condition } => {
            let r = render(OP, &table, Some(&condition), None)?;
            let condition = r.condition.clone();
            let (names, values) = maps(r);
            let check = ConditionCheck::builder()
                .table_name(&table)
                .set_key(Some(key))
                .set_condition_expression(condition)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .build()
                .map_err(|e| invalid(OP, &table, e))?;
            TransactWriteItem::builder().condition_check(check).build()
        }
    })
}

impl DynamoApi for SdkDynamo {
    async fn get_item(&self, table: &str, key: Item, consistent: bool) -> Result<GetItemOutput, DdbError> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(consistent)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| classify("GetItem", table, e))?;
        Ok(GetItemOutput {
            consumed: consumed(out.consumed_capacity(), false),
            item: out.item,
        })
    }

    async fn put_item(&self, table: &str, item: Item, condition: Option<Condition>) -> Result<Consumed, DdbError> {
        let r = render("PutItem", table, condition.as_ref(), None)?;
        let expression = r.condition.clone();
        let (names, values) = maps(r);
        let out = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .set_condition_expression(expression)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| classify("PutItem", table, e))?;
        Ok(consumed(out.consumed_capacity(), true))
    }

    async fn update_item(
        &self,
        table: &str,
        key: Item,
        update: Update,
        condition: Option<Condition>,
        return_values: ReturnValues,
    ) -> Result<UpdateItemOutput, DdbError> {
        let r = render("UpdateItem", table, condition.as_ref(), Some(&update))?;
        let (condition, expression) = (r.condition.clone(), r.update.clone());
        let (names, values) = maps(r);
        let out = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(key))
            .set_update_expression(expression)
            .set_condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .return_values(match return_values {
                ReturnValues::None => ReturnValue::None,
                ReturnValues::AllNew => ReturnValue::AllNew,
            })
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| classify("UpdateItem", table, e))?;
        Ok(UpdateItemOutput {
            consumed: consumed(out.consumed_capacity(), true),
            attributes: out.attributes,
        })
    }

    async fn delete_item(&self, table: &str, key: Item, condition: Option<Condition>) -> Result<Consumed, DdbError> {
        let r = render("DeleteItem", table, condition.as_ref(), None)?;
        let expression = r.condition.clone();
        let (names, values) = maps(r);
        let out = self
            .client
            .delete_item()
            .table_name(table)
            .set_key(Some(key))
            .set_condition_expression(expression)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| classify("DeleteItem", table, e))?;
        Ok(consumed(out.consumed_capacity(), true))
    }

    async fn transact_write(&self, ops: Vec<WriteOp>) -> Result<Consumed, DdbError> {
        let table = ops.first().map(|o| o.table().to_owned()).unwrap_or_default();
        let items = ops.into_iter().map(transact_item).collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| classify("TransactWriteItems", &table, e))?;
        Ok(consumed_all(out.consumed_capacity(), true))
    }

    async fn query(&self, table: &str, query: PartitionQuery) -> Result<Page, DdbError> {
        let mut r = Renderer::new();
        r.key_condition(&query.key_name, &query.value);
        let r = r.finish();
        let expression = r.key_condition.clone();
        let (names, values) = maps(r);
        let out = self
            .client
            .query()
            .table_name(table)
            .set_key_condition_expression(expression)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .consistent_read(query.consistent)
            .set_exclusive_start_key(query.exclusive_start_key)
            .set_limit(query.limit.map(|l| i32::try_from(l).unwrap_or(i32::MAX)))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| classify("Query", table, e))?;
        Ok(Page {
            consumed: consumed(out.consumed_capacity(), false),
            items: out.items.unwrap_or_default(),
            last_evaluated_key: out.last_evaluated_key.filter(|k| !k.is_empty()),
        })
    }

    async fn scan_segment(&self, table: &str, scan: ScanSegment) -> Result<Page, DdbError> {
        let segmented = scan.total_segments > 1;
        let out = self
            .client
            .scan()
            .table_name(table)
            .set_segment(segmented.then(|| i32::try_from(scan.segment).unwrap_or(i32::MAX)))
            .set_total_segments(segmented.then(|| i32::try_from(scan.total_segments).unwrap_or(i32::MAX)))
            .set_exclusive_start_key(scan.exclusive_start_key)
            .set_limit(scan.limit.map(|l| i32::try_from(l).unwrap_or(i32::MAX)))
            .consistent_read(scan.consistent)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| classify("Scan", table, e))?;
        Ok(Page {
            consumed: consumed(out.consumed_capacity(), false),
            items: out.items.unwrap_or_default(),
            last_evaluated_key: out.last_evaluated_key.filter(|k| !k.is_empty()),
        })
    }

    async fn batch_get(&self, table: &str, keys: Vec<Item>, consistent: bool) -> Result<BatchGetOutput, DdbError> {
        let request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(consistent)
            .build()
            .map_err(|e| invalid("BatchGetItem", table, e))?;
        let out = self
            .client
            .batch_get_item()
            .request_items(table, request)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| classify("BatchGetItem", table, e))?;
        Ok(BatchGetOutput {
            consumed: consumed_all(out.consumed_capacity(), false),
            items: out.responses.and_then(|mut r| r.remove(table)).unwrap_or_default(),
            unprocessed_keys: out
                .unprocessed_keys
                .and_then(|mut u| u.remove(table))
                .map(|k| k.keys)
                .unwrap_or_default(),
        })
    }

    async fn describe_table(&self, table: &str) -> Result<TableDescription, DdbError> {
        let out = self
            .client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| classify("DescribeTable", table, e))?;
        let t = out
            .table
            .ok_or_else(|| invalid("DescribeTable", table, "the answer has no table description"))?;
        table_description(&t).map_err(|m| invalid("DescribeTable", table, m))
    }

    async fn create_table(&self, spec: &TableSpec) -> Result<(), DdbError> {
        let table = spec.name.as_str();
        let mut request = self.client.create_table().table_name(table);
        let keys = std::iter::once((&spec.key_schema.hash, KeyType::Hash))
            .chain(spec.key_schema.range.as_ref().map(|r| (r, KeyType::Range)));
        for (attr, key_type) in keys {
            request = request
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(&attr.name)
                        .key_type(key_type)
                        .build()
                        .map_err(|e| invalid("CreateTable", table, e))?,
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(&attr.name)
                        .attribute_type(scalar_to_sdk(attr.kind))
                        .build()
                        .map_err(|e| invalid("CreateTable", table, e))?,
                );
        }
        request = match spec.billing_mode {
            BillingMode::PayPerRequest => request.billing_mode(sdk::BillingMode::PayPerRequest),
            BillingMode::Provisioned {
                read_units,
                write_units,
            } => request
                .billing_mode(sdk::BillingMode::Provisioned)
                .provisioned_throughput(
                    ProvisionedThroughput::builder()
                        .read_capacity_units(read_units)
                        .write_capacity_units(write_units)
                        .build()
                        .map_err(|e| invalid("CreateTable", table, e))?,
                ),
        };
        if let Some(view) = &spec.stream_view_type {
            request = request.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::from(view.as_str()))
                    .build()
                    .map_err(|e| invalid("CreateTable", table, e))?,
            );
        }
        request.send().await.map_err(|e| classify("CreateTable", table, e))?;
        Ok(())
    }

    async fn update_time_to_live(&self, table: &str, attribute: &str, enabled: bool) -> Result<(), DdbError> {
        let spec = sdk::TimeToLiveSpecification::builder()
            .attribute_name(attribute)
            .enabled(enabled)
            .build()
            .map_err(|e| invalid("UpdateTimeToLive", table, e))?;
        self.client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(|e| classify("UpdateTimeToLive", table, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AttributeValue;
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput as SdkGetOutput;
    use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
    use aws_sdk_dynamodb::operation::update_item::UpdateItemOutput as SdkUpdateOutput;
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    #[tokio::test]
    async fn requests_carry_rendered_expressions_and_ask_for_capacity() {
        let put = mock!(aws_sdk_dynamodb::Client::put_item)
            .match_requests(|r| {
                r.condition_expression() == Some("attribute_not_exists(#n0)")
                    && r.expression_attribute_names().is_some_and(|n| n["#n0"] == "id")
                    // DynamoDB refuses an empty value map.
                    && r.expression_attribute_values().is_none()
                    && r.return_consumed_capacity() == Some(&ReturnConsumedCapacity::Total)
            })
            .then_output(|| {
                PutItemOutput::builder()
                    .consumed_capacity(sdk::ConsumedCapacity::builder().capacity_units(2.0).build())
                    .build()
            });
        let conflict = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
            PutItemError::ConditionalCheckFailedException(ConditionalCheckFailedException::builder().build())
        });
        let update = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| {
                r.update_expression() == Some("SET #n0 = :v0 ADD #n1 :v1")
                    && r.condition_expression() == Some("#n1 = :v2")
                    && r.return_values() == Some(&ReturnValue::AllNew)
            })
            .then_output(|| SdkUpdateOutput::builder().attributes("id", s("a")).build());
        let get = mock!(aws_sdk_dynamodb::Client::get_item)
            .match_requests(|r| r.consistent_read() == Some(true))
            // moto reports no consumed capacity: zero, not an estimate.
            .then_output(|| SdkGetOutput::builder().build());
        let transact = mock!(aws_sdk_dynamodb::Client::transact_write_items)
            .match_requests(|r| {
                let items = r.transact_items();
                items.len() == 2
                    && items[0].put().and_then(|p| p.condition_expression()) == Some("attribute_not_exists(#n0)")
                    && items[1].condition_check().map(|c| c.condition_expression()) == Some("#n0 = :v0")
            })
            .then_output(|| {
                TransactWriteItemsOutput::builder()
                    .consumed_capacity(
                        sdk::ConsumedCapacity::builder()
                            .table_name("T")
                            .capacity_units(4.0)
                            .build(),
                    )
                    .build()
            });
        let client = mock_client!(
            aws_sdk_dynamodb,
            RuleMode::Sequential,
            [&put, &conflict, &update, &get, &transact]
        );
        let db = SdkDynamo::new(client);
        let key: Item = [("id".to_owned(), s("a"))].into();
        let c = db
            .put_item("T", key.clone(), Some(Condition::not_exists("id")))
            .await
            .unwrap();
        assert_eq!(c.write_units, 2.0);
        let e = db.put_item("T", key.clone(), None).await.unwrap_err();
        assert_eq!(
            (e.kind, e.operation, e.table.as_str()),
            (ErrorKind::Conflict, "PutItem", "T")
        );
        let u = Update::new().set("owner", s("w")).add_number("counter", 1);
        let out = db
            .update_item(
                "T",
                key.clone(),
                u,
                Some(Condition::equals("counter", AttributeValue::N("3".into()))),
                ReturnValues::AllNew,
            )
            .await
            .unwrap();
        assert_eq!(out.attributes, Some(key.clone()));
        let got = db.get_item("T", key.clone(), true).await.unwrap();
        assert_eq!((got.item, got.consumed), (None, Consumed::default()));
        let ops = vec![
            WriteOp::Put {
                table: "T".into(),
                item: key.clone(),
                condition: Some(Condition::not_exists("id")),
            },
            WriteOp::ConditionCheck {
                table: "T".into(),
                key,
                condition: Condition::equals("v", s("x")),
            },
        ];
        assert_eq!(db.transact_write(ops).await.unwrap().write_units, 4.0);
        assert_eq!(put.num_calls() + transact.num_calls(), 2);
    }

    #[tokio::test]
    async fn invalid_expressions_fail_before_any_request() {
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, []);
        let db = SdkDynamo::new(client);
        let e = db
            .put_item("T", Item::new(), Some(Condition::Or(vec![])))
            .await
            .unwrap_err();
        assert_eq!((e.kind, e.operation), (ErrorKind::Other, "PutItem"));
    }

    #[test]
    fn table_descriptions_are_typed() {
        let def = |n: &str, t| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(t)
                .build()
                .unwrap()
        };
        let key = |n: &str, t| {
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(t)
                .build()
                .unwrap()
        };
        let t = sdk::TableDescription::builder()
            .table_name("T")
            .table_status(sdk::TableStatus::Active)
            .attribute_definitions(def("pk", ScalarAttributeType::S))
            .attribute_definitions(def("sk", ScalarAttributeType::N))
            .key_schema(key("pk", KeyType::Hash))
            .key_schema(key("sk", KeyType::Range))
            .billing_mode_summary(
                sdk::BillingModeSummary::builder()
                    .billing_mode(sdk::BillingMode::Provisioned)
                    .build(),
            )
            .provisioned_throughput(
                sdk::ProvisionedThroughputDescription::builder()
                    .read_capacity_units(10)
                    .write_capacity_units(5)
                    .build(),
            )
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .unwrap(),
            )
            .latest_stream_arn("arn:stream")
            .item_count(12)
            .table_size_bytes(3456)
            .replicas(sdk::ReplicaDescription::builder().region_name("eu-west-1").build())
            .replicas(sdk::ReplicaDescription::builder().region_name("us-east-1").build())
            .build();
        let d = table_description(&t).unwrap();
        assert_eq!(d.status, TableStatus::Active);
        assert_eq!(
            d.key_schema,
            KeySchema {
                hash: KeyAttribute::new("pk", ScalarType::S),
                range: Some(KeyAttribute::new("sk", ScalarType::N)),
            }
        );
        assert_eq!(
            d.billing_mode,
            Some(BillingMode::Provisioned {
                read_units: 10,
                write_units: 5
            })
        );
        assert_eq!(
            d.stream,
            Some(StreamInfo {
                enabled: true,
                view_type: Some("NEW_AND_OLD_IMAGES".into()),
                arn: Some("arn:stream".into()),
            })
        );
        assert_eq!((d.item_count, d.size_bytes), (Some(12), Some(3456)));
        assert_eq!(d.replica_regions, vec!["eu-west-1".to_owned(), "us-east-1".to_owned()]);
        // On-demand tables report zero provisioned capacity; that is not "provisioned".
        let on_demand = sdk::TableDescription::builder()
            .table_name("O")
            .attribute_definitions(def("pk", ScalarAttributeType::B))
            .key_schema(key("pk", KeyType::Hash))
            .billing_mode_summary(
                sdk::BillingModeSummary::builder()
                    .billing_mode(sdk::BillingMode::PayPerRequest)
                    .build(),
            )
            .build();
        let d = table_description(&on_demand).unwrap();
        assert_eq!(d.billing_mode, Some(BillingMode::PayPerRequest));
        assert_eq!(d.status, TableStatus::Other("unknown".into()));
        assert!(d.stream.is_none() && d.key_schema.range.is_none());
    }
}
