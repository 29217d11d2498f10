//! The hierarchical keyring over the DynamoDB branch key store end to end: branch keys created (and rotated) in
//! us-east-1 in a key store that is a global table, items encrypted there, and decrypted in ap-southeast-2
//! through the local MRK replica — 10,000 items for one KMS call — plus the verdicts of key store failures.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue as Av, KeyType};
use ddbguard_dbe::{
    AlgorithmSuite, AttributeValue, CryptoAction, Item, TableConfig, Verdict, decrypt_item, encrypt_item,
};
use ddbguard_e2e::{LocalAws, PRIMARY_REGION, REPLICA_REGION, unique_name, wait_for_item};
use ddbguard_keys::HierarchyKeyring;
use ddbguard_keys::keystore::{BRANCH_ACTIVE, CacheSettings, CachingBranchKeySource, DynamoKeyStore, VERSION_PREFIX};
use ddbguard_keys::kms::{KmsCounters, Operation};

const ITEMS: usize = 10_000;

/// A key store global table wrapped under a fresh replicated MRK: (table, MRK primary ARN, MRK replica ARN).
async fn key_store(env: &LocalAws, test: &str) -> anyhow::Result<(String, String, String)> {
    let mrk = env.create_replicated_mrk(&unique_name("hierarchy", test)).await?;
    let table = unique_name("keystore", test);
    env.create_global_table_keyed(&table, &[("branch-key-id", KeyType::Hash), ("type", KeyType::Range)])
        .await?;
    let replica = mrk.arn_in(REPLICA_REGION);
    Ok((table, mrk.primary_arn, replica))
}

async fn store(
    env: &LocalAws,
    region: &str,
    table: &str,
    key_arn: &str,
    counters: &Arc<KmsCounters>,
) -> DynamoKeyStore {
    DynamoKeyStore::new(
        env.dynamodb(region).await,
        table,
        table,
        key_arn,
        env.governed_kms(region, counters).await,
    )
    .expect("key store")
}

/// Waits until the key store item `(id, type)` has replicated to ap-southeast-2.
async fn replicated(env: &LocalAws, table: &str, id: &str, item_type: &str) -> anyhow::Result<HashMap<String, Av>> {
    let key = HashMap::from([
        ("branch-key-id".to_owned(), Av::S(id.to_owned())),
        ("type".to_owned(), Av::S(item_type.to_owned())),
    ]);
    wait_for_item(&env.dynamodb(REPLICA_REGION).await, table, key, Duration::from_secs(20))
        .await?
        .ok_or_else(|| anyhow::anyhow!("{id}/{item_type} did not replicate to {REPLICA_REGION}"))
}

fn table_config() -> TableConfig {
    let mut config = TableConfig::new("payments", "pk");
    config.algorithm_suite = AlgorithmSuite::HmacOnly;
    config.attribute_actions.insert("pk".into(), CryptoAction::SignOnly);
    config
        .attribute_actions
        .insert("iban".into(), CryptoAction::EncryptAndSign);
    config.attribute_actions.insert("amount".into(), CryptoAction::SignOnly);
    config
}

fn payment(i: usize) -> Item {
    [
        ("pk".to_owned(), AttributeValue::S(format!("payment-{i:05}"))),
        (
            "iban".to_owned(),
            AttributeValue::S(format!("DE89 3704 0044 0532 {i:04} 00")),
        ),
        (
            "amount".to_owned(),
            AttributeValue::N(format!("{}.{:02}", i * 7, i % 100)),
        ),
    ]
    .into()
}

/// Decrypts `items` with `keyring` on 8 concurrent tasks (so the first records miss the cache together) and
/// checks each against `expected(i)`.
async fn decrypt_all(keyring: Arc<HierarchyKeyring>, items: Arc<Vec<Item>>, expected: fn(usize) -> Item) {
    let config = Arc::new(table_config());
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (keyring, items, config) = (keyring.clone(), items.clone(), config.clone());
        tasks.spawn(async move {
            for i in (worker..items.len()).step_by(8) {
                let decrypted = decrypt_item(&config, keyring.as_ref(), &items[i])
                    .await
                    .unwrap_or_else(|e| panic!("item {i}: {e}"));
                assert_eq!(decrypted.item, expected(i), "item {i}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("decrypt task");
    }
}

#[tokio::test]
async fn ten_thousand_items_under_one_branch_key_cost_one_kms_call_in_the_verifying_region() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let (table, primary_arn, _) = key_store(env, "10k").await?;

    let writer_counters = KmsCounters::new();
    let writer_store = store(env, PRIMARY_REGION, &table, &primary_arn, &writer_counters).await;
    let id = writer_store.create_key(None, &BTreeMap::new()).await?;
    let active = replicated(env, &table, &id, BRANCH_ACTIVE).await?;
    // The official key store's item layout.
    let Some(Av::S(version)) = active.get("version") else {
        panic!("the active item has no version: {active:?}")
    };
    assert!(version.starts_with(VERSION_PREFIX), "{version}");
    assert_eq!(active.get("hierarchy-version"), Some(&Av::N("1".into())));
    assert_eq!(active.get("kms-arn"), Some(&Av::S(primary_arn.clone())));
    assert!(matches!(active.get("enc"), Some(Av::B(_))));
    assert!(!active.contains_key("tablename"));
    replicated(env, &table, &id, version).await?;
    replicated(env, &table, &id, "beacon:ACTIVE").await?;

    let writer = HierarchyKeyring::new(
        id.clone(),
        Arc::new(CachingBranchKeySource::new(writer_store, CacheSettings::default())),
    );
    let config = table_config();
    let mut items = Vec::with_capacity(ITEMS);
    for i in 0..ITEMS {
        items.push(encrypt_item(&config, &writer, &payment(i)).await?);
    }
    assert_eq!(writer_counters.calls(PRIMARY_REGION, Operation::Decrypt), 1);
    let items = Arc::new(items);

    // The verifying region: its own store client, cache and KMS replica.
    let counters = KmsCounters::new();
    let source = Arc::new(CachingBranchKeySource::new(
        store(env, REPLICA_REGION, &table, &primary_arn, &counters).await,
        CacheSettings::default(),
    ));
    let reader = Arc::new(HierarchyKeyring::new(id.clone(), source.clone()));
    decrypt_all(reader.clone(), items.clone(), payment).await;
    let calls = counters.total();
    println!("{ITEMS} items decrypted in {REPLICA_REGION} with {calls} KMS call(s)");
    assert!(calls <= 2, "{calls} KMS calls: {:?}", counters.snapshot());
    assert_eq!(counters.get(REPLICA_REGION, Operation::Decrypt, "ok"), 1);
    assert_eq!(source.cache().loads(), 1);

    // Rotation: a new version encrypts; the verifier makes one more call for it, none for the old one.
    let rotator = store(env, PRIMARY_REGION, &table, &primary_arn, &writer_counters).await;
    let new_version = rotator.version_key(&id).await?;
    replicated(env, &table, &id, &format!("{VERSION_PREFIX}{new_version}")).await?;
    let fresh_writer = HierarchyKeyring::new(
        id.clone(),
        Arc::new(CachingBranchKeySource::new(rotator, CacheSettings::default())),
    );
    let mut rotated = Vec::new();
    for i in 0..100 {
        rotated.push(encrypt_item(&config, &fresh_writer, &payment(i)).await?);
    }
    decrypt_all(reader.clone(), Arc::new(rotated), payment).await;
    decrypt_all(reader, Arc::new(items[..100].to_vec()), payment).await;
    assert_eq!(counters.get(REPLICA_REGION, Operation::Decrypt, "ok"), 2);
    Ok(())
}

#[tokio::test]
async fn branch_key_failures_become_verdicts() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let (table, primary_arn, replica_arn) = key_store(env, "verdicts").await?;
    let counters = KmsCounters::new();
    let writer_store = store(env, PRIMARY_REGION, &table, &primary_arn, &counters).await;
    let id = writer_store
        .create_key(Some("tenant-7"), &BTreeMap::from([("tenant".into(), "7".into())]))
        .await?;
    assert_eq!(id, "tenant-7");
    let again = writer_store
        .create_key(Some("tenant-7"), &BTreeMap::from([("tenant".into(), "7".into())]))
        .await;
    assert!(again.is_err_and(|e| e.to_string().contains("already exists")));
    let active = replicated(env, &table, &id, BRANCH_ACTIVE).await?;
    assert_eq!(active.get("aws-crypto-ec:tenant"), Some(&Av::S("7".into())));
    let Some(Av::S(version)) = active.get("version") else {
        panic!("{active:?}")
    };
    replicated(env, &table, &id, version).await?;

    let writer = HierarchyKeyring::new(
        id.clone(),
        Arc::new(CachingBranchKeySource::new(writer_store, CacheSettings::default())),
    );
    let config = table_config();
    let item = encrypt_item(&config, &writer, &payment(1)).await?;

    // A reader for any branch key decrypts it (the branch key id comes from the record).
    let reader_store = || store(env, REPLICA_REGION, &table, &primary_arn, &counters);
    let any = HierarchyKeyring::for_any_branch_key(Arc::new(CachingBranchKeySource::new(
        reader_store().await,
        CacheSettings::default(),
    )));
    assert_eq!(decrypt_item(&config, &any, &item).await?.item, payment(1));

    // A keyring for another branch key finds no EDK it can open: not our key.
    let other = HierarchyKeyring::new(
        "tenant-8",
        Arc::new(CachingBranchKeySource::new(
            reader_store().await,
            CacheSettings::default(),
        )),
    );
    let err = decrypt_item(&config, &other, &item)
        .await
        .expect_err("other branch key");
    assert_eq!(
        (err.verdict(), err.reason().as_str()),
        (Verdict::KeyNotMrk, "no_matching_key"),
        "{err}"
    );

    // The replica disabled in the verifying region: key_unavailable/disabled.
    env.kms(REPLICA_REGION)
        .await
        .disable_key()
        .key_id(&replica_arn)
        .send()
        .await?;
    let fresh = HierarchyKeyring::new(
        id.clone(),
        Arc::new(CachingBranchKeySource::new(
            reader_store().await,
            CacheSettings::default(),
        )),
    );
    let err = decrypt_item(&config, &fresh, &item)
        .await
        .expect_err("disabled replica");
    assert_eq!(err.verdict(), Verdict::KeyUnavailable, "{err}");
    assert_eq!(err.reason().as_str(), "disabled", "{err}");
    Ok(())
}
