//! Global tables (version 2019.11.21) in the local environment: replicas, replication into the replica's
//! stream, last writer wins, and the fault knobs (pause, drop).

use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use aws_sdk_dynamodbstreams::types::OperationType;
use ddbguard_e2e::{
    Knob, LocalAws, PRIMARY_REGION, REPLICA_REGION, get_item, pk, record_pk, stream_records, unique_name,
    wait_for_absence, wait_for_item, wait_for_item_where, wait_for_stream_record,
};

/// Replication must show up within this (the default lag is 200 ms).
const ARRIVE: Duration = Duration::from_secs(2);

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

/// `DescribeTable` in both regions lists both replicas as ACTIVE, and the replica has the stream.
#[tokio::test]
async fn describe_table_lists_both_replicas() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let table = unique_name("gt", "describe");
    env.create_global_table(&table).await?;
    for region in [PRIMARY_REGION, REPLICA_REGION] {
        let described = env
            .dynamodb(region)
            .await
            .describe_table()
            .table_name(&table)
            .send()
            .await?;
        let t = described.table().expect("table");
        let mut replicas: Vec<(String, String)> = t
            .replicas()
            .iter()
            .map(|r| {
                let status = r.replica_status().map(|s| s.as_str().to_string()).unwrap_or_default();
                (r.region_name().unwrap_or_default().to_string(), status)
            })
            .collect();
        replicas.sort();
        let want = vec![
            (REPLICA_REGION.to_string(), "ACTIVE".to_string()),
            (PRIMARY_REGION.to_string(), "ACTIVE".to_string()),
        ];
        assert_eq!(replicas, want, "{region}");
        assert_eq!(t.global_table_version(), Some("2019.11.21"), "{region}");
        assert!(t.latest_stream_arn().is_some(), "{region} has a stream");
    }
    Ok(())
}

/// A PutItem in us-east-1 is readable in ap-southeast-2 and appears in ap-southeast-2's stream (INSERT, with
/// the new image) within 2 s; it is not replayed back into us-east-1's stream (no ping-pong).
#[tokio::test]
async fn put_replicates_into_replica_table_and_stream() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let table = unique_name("gt", "put");
    env.create_global_table(&table).await?;
    env.dynamodb(PRIMARY_REGION)
        .await
        .put_item()
        .table_name(&table)
        .item("pk", s("k1"))
        .item("blob", AttributeValue::B(vec![0u8, 1, 2, 255].into()))
        .send()
        .await?;

    let replica = env.dynamodb(REPLICA_REGION).await;
    let item = wait_for_item(&replica, &table, pk("k1"), ARRIVE)
        .await?
        .expect("replicated within 2 s");
    assert_eq!(item.get("blob"), Some(&AttributeValue::B(vec![0u8, 1, 2, 255].into())));

    let streams = env.streams(REPLICA_REGION).await;
    let record = wait_for_stream_record(&streams, &table, ARRIVE, |r| record_pk(r) == Some("k1")).await?;
    let record = record.expect("stream record in the replica region within 2 s");
    assert_eq!(record.event_name(), Some(&OperationType::Insert));
    let new_image = record.dynamodb().and_then(|d| d.new_image()).expect("new image");
    assert!(new_image.contains_key("blob"));

    // Give a ping-pong time to happen, then check the origin saw its own write exactly once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let origin = stream_records(&env.streams(PRIMARY_REGION).await, &table).await?;
    let own: Vec<_> = origin.iter().filter(|r| record_pk(r) == Some("k1")).collect();
    assert_eq!(own.len(), 1, "origin stream: {origin:?}");
    Ok(())
}

/// UpdateItem and DeleteItem replicate as their resulting item (MODIFY, then REMOVE in the replica's stream).
#[tokio::test]
async fn update_and_delete_replicate() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let table = unique_name("gt", "update-delete");
    env.create_global_table(&table).await?;
    let primary = env.dynamodb(PRIMARY_REGION).await;
    let replica = env.dynamodb(REPLICA_REGION).await;
    primary
        .put_item()
        .table_name(&table)
        .item("pk", s("u"))
        .item("n", AttributeValue::N("1".into()))
        .send()
        .await?;
    wait_for_item(&replica, &table, pk("u"), ARRIVE)
        .await?
        .expect("put replicated");

    primary
        .update_item()
        .table_name(&table)
        .set_key(Some(pk("u")))
        .update_expression("SET n = n + :one, tag = :t")
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .expression_attribute_values(":t", s("updated"))
        .send()
        .await?;
    let updated = wait_for_item_where(&replica, &table, pk("u"), ARRIVE, |i| {
        i.get("tag") == Some(&s("updated"))
    })
    .await?
    .expect("update replicated");
    assert_eq!(updated.get("n"), Some(&AttributeValue::N("2".into())));

    primary
        .delete_item()
        .table_name(&table)
        .set_key(Some(pk("u")))
        .send()
        .await?;
    assert!(
        wait_for_absence(&replica, &table, pk("u"), ARRIVE).await?,
        "delete replicated"
    );

    let streams = env.streams(REPLICA_REGION).await;
    let events: Vec<_> = stream_records(&streams, &table)
        .await?
        .iter()
        .filter(|r| record_pk(r) == Some("u"))
        .filter_map(|r| r.event_name().cloned())
        .collect();
    assert_eq!(
        events,
        vec![OperationType::Insert, OperationType::Modify, OperationType::Remove]
    );
    Ok(())
}

/// Writes in ap-southeast-2 replicate to us-east-1 (and into its stream).
#[tokio::test]
async fn writes_in_replica_region_replicate_back() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let table = unique_name("gt", "reverse");
    env.create_global_table(&table).await?;
    env.dynamodb(REPLICA_REGION)
        .await
        .put_item()
        .table_name(&table)
        .item("pk", s("from-ap"))
        .send()
        .await?;
    let primary = env.dynamodb(PRIMARY_REGION).await;
    assert!(wait_for_item(&primary, &table, pk("from-ap"), ARRIVE).await?.is_some());
    let streams = env.streams(PRIMARY_REGION).await;
    let record = wait_for_stream_record(&streams, &table, ARRIVE, |r| record_pk(r) == Some("from-ap")).await?;
    assert!(record.is_some(), "in us-east-1's stream");
    Ok(())
}

/// Paused replication (this table, us-east-1 -> ap-southeast-2) queues writes: absent after 2 s, delivered on
/// resume. The other direction keeps flowing meanwhile.
#[tokio::test]
async fn paused_replication_delivers_on_resume() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let table = unique_name("gt", "paused");
    env.create_global_table(&table).await?;
    let primary = env.dynamodb(PRIMARY_REGION).await;
    let replica = env.dynamodb(REPLICA_REGION).await;
    env.set_replication(
        &Knob::table(&table)
            .direction(PRIMARY_REGION, REPLICA_REGION)
            .paused(true),
    )
    .await?;

    primary
        .put_item()
        .table_name(&table)
        .item("pk", s("held"))
        .send()
        .await?;
    replica
        .put_item()
        .table_name(&table)
        .item("pk", s("other-way"))
        .send()
        .await?;
    assert!(
        wait_for_item(&primary, &table, pk("other-way"), ARRIVE)
            .await?
            .is_some(),
        "reverse still flows"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        get_item(&replica, &table, pk("held")).await?.is_none(),
        "paused write arrived"
    );
    let state = env.replication_state().await?;
    assert!(state["paused_depth"].as_u64().unwrap_or(0) >= 1, "{state}");

    env.set_replication(
        &Knob::table(&table)
            .direction(PRIMARY_REGION, REPLICA_REGION)
            .paused(false),
    )
    .await?;
    assert!(
        wait_for_item(&replica, &table, pk("held"), ARRIVE).await?.is_some(),
        "delivered after resume"
    );
    Ok(())
}

/// `drop_next: 1` drops exactly the next replicated write of the table; the one after it arrives.
#[tokio::test]
async fn drop_next_drops_exactly_one_write() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let table = unique_name("gt", "drop");
    env.create_global_table(&table).await?;
    let primary = env.dynamodb(PRIMARY_REGION).await;
    let replica = env.dynamodb(REPLICA_REGION).await;
    env.set_replication(
        &Knob::table(&table)
            .direction(PRIMARY_REGION, REPLICA_REGION)
            .drop_next(1),
    )
    .await?;

    primary
        .put_item()
        .table_name(&table)
        .item("pk", s("dropped"))
        .send()
        .await?;
    primary
        .put_item()
        .table_name(&table)
        .item("pk", s("kept"))
        .send()
        .await?;
    assert!(
        wait_for_item(&replica, &table, pk("kept"), ARRIVE).await?.is_some(),
        "the next write arrives"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        get_item(&replica, &table, pk("dropped")).await?.is_none(),
        "dropped write arrived"
    );
    let streams = env.streams(REPLICA_REGION).await;
    let records = stream_records(&streams, &table).await?;
    assert!(
        !records.iter().any(|r| record_pk(r) == Some("dropped")),
        "dropped write is in the stream"
    );
    Ok(())
}

/// Concurrent writes of one key in both regions converge on the later one everywhere (last writer wins).
#[tokio::test]
async fn concurrent_writes_converge_on_last_writer() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let table = unique_name("gt", "lww");
    env.create_global_table(&table).await?;
    env.set_replication(&Knob::table(&table).lag_ms(400)).await?;
    let primary = env.dynamodb(PRIMARY_REGION).await;
    let replica = env.dynamodb(REPLICA_REGION).await;
    primary
        .put_item()
        .table_name(&table)
        .item("pk", s("k"))
        .item("v", s("first"))
        .send()
        .await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    replica
        .put_item()
        .table_name(&table)
        .item("pk", s("k"))
        .item("v", s("second"))
        .send()
        .await?;
    // us-east-1 takes the later write once ap-southeast-2's delivery lands; the earlier write, delivered to
    // ap-southeast-2 first, must have been skipped there rather than overwrite the later one.
    let east = wait_for_item_where(&primary, &table, pk("k"), Duration::from_secs(3), |i| {
        i.get("v") == Some(&s("second"))
    })
    .await?;
    assert!(east.is_some(), "us-east-1 never took the later write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (name, client) in [("us-east-1", &primary), ("ap-southeast-2", &replica)] {
        let item = get_item(client, &table, pk("k")).await?.expect("item");
        assert_eq!(item.get("v"), Some(&s("second")), "{name}");
    }
    Ok(())
}

/// TransactWriteItems and BatchWriteItem replicate; a cancelled transaction replicates nothing.
#[tokio::test]
async fn transactions_and_batches_replicate() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let table = unique_name("gt", "txn");
    env.create_global_table(&table).await?;
    let primary = env.dynamodb_no_retry(PRIMARY_REGION).await;
    let replica = env.dynamodb(REPLICA_REGION).await;
    let put = |key: &str| -> anyhow::Result<TransactWriteItem> {
        let put = Put::builder().table_name(&table).item("pk", s(key)).build()?;
        Ok(TransactWriteItem::builder().put(put).build())
    };
    primary
        .transact_write_items()
        .transact_items(put("tx-ok")?)
        .send()
        .await?;
    let failing = Put::builder()
        .table_name(&table)
        .item("pk", s("tx-cancelled"))
        .condition_expression("attribute_exists(pk)")
        .build()?;
    let cancelled = primary
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().put(failing).build());
    assert!(
        cancelled.send().await.is_err(),
        "the condition must cancel the transaction"
    );
    primary
        .batch_write_item()
        .request_items(
            &table,
            vec![
                aws_sdk_dynamodb::types::WriteRequest::builder()
                    .put_request(
                        aws_sdk_dynamodb::types::PutRequest::builder()
                            .item("pk", s("batch"))
                            .build()?,
                    )
                    .build(),
            ],
        )
        .send()
        .await?;
    assert!(wait_for_item(&replica, &table, pk("tx-ok"), ARRIVE).await?.is_some());
    assert!(wait_for_item(&replica, &table, pk("batch"), ARRIVE).await?.is_some());
    assert!(get_item(&replica, &table, pk("tx-cancelled")).await?.is_none());
    Ok(())
}
