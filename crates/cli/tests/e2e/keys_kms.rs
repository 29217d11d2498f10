//! The KMS MRK keyring end to end: items encrypted with `ddbguard_dbe::encrypt_item` in us-east-1 and decrypted
//! in ap-southeast-2 through the local replica, the key states that make a region's replica unusable, items under
//! a single-region key, and `keys check`.

use std::collections::BTreeMap;

use ddbguard_dbe::{AttributeValue, CryptoAction, Item, TableConfig, Verdict, decrypt_item, encrypt_item};
use ddbguard_e2e::{LocalAws, PRIMARY_REGION, REPLICA_REGION, unique_name};
use ddbguard_keys::kms::check::{KeyState, KmsClients, check_keys};
use ddbguard_keys::kms::{KmsCounters, MrkKeyring, Operation};

async fn keyring(env: &LocalAws, key_arn: &str, region: &str) -> MrkKeyring {
    MrkKeyring::new(key_arn, env.governed_kms(region, &KmsCounters::new()).await, None).expect("key ARN")
}

fn table() -> (TableConfig, Item) {
    let mut config = TableConfig::new("orders", "pk");
    config.attribute_actions.insert("pk".into(), CryptoAction::SignOnly);
    config
        .attribute_actions
        .insert("card".into(), CryptoAction::EncryptAndSign);
    config.attribute_actions.insert("status".into(), CryptoAction::SignOnly);
    let item: Item = [
        ("pk".to_owned(), AttributeValue::S("order-1".into())),
        ("card".to_owned(), AttributeValue::S("4111 1111 1111 1111".into())),
        ("status".to_owned(), AttributeValue::S("paid".into())),
    ]
    .into();
    (config, item)
}

/// Encrypts the test item in us-east-1 with the MRK keyring configured with `key_arn`.
async fn encrypted_in_primary(env: &LocalAws, key_arn: &str) -> (TableConfig, Item, Item) {
    let (config, item) = table();
    let writer = keyring(env, key_arn, PRIMARY_REGION).await;
    let encrypted = encrypt_item(&config, &writer, &item).await.expect("encrypt");
    (config, item, encrypted)
}

#[tokio::test]
async fn item_encrypted_in_us_east_1_decrypts_in_ap_southeast_2_with_the_replica() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env
        .create_replicated_mrk(&unique_name("keys", "cross-region-item"))
        .await?;
    let (config, item, encrypted) = encrypted_in_primary(env, &mrk.primary_arn).await;

    let counters = KmsCounters::new();
    let reader = MrkKeyring::new(
        &mrk.primary_arn,
        env.governed_kms(REPLICA_REGION, &counters).await,
        None,
    )?;
    assert_eq!(reader.local_arn().to_string(), mrk.arn_in(REPLICA_REGION));
    let decrypted = decrypt_item(&config, &reader, &encrypted).await?;
    assert_eq!(decrypted.item, item);
    assert_eq!(counters.get(REPLICA_REGION, Operation::Decrypt, "ok"), 1);
    Ok(())
}

#[tokio::test]
async fn disabled_replica_is_key_unavailable_disabled() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env.create_replicated_mrk(&unique_name("keys", "disabled")).await?;
    let (config, _, encrypted) = encrypted_in_primary(env, &mrk.primary_arn).await;
    let replica = mrk.arn_in(REPLICA_REGION);
    env.kms(REPLICA_REGION)
        .await
        .disable_key()
        .key_id(&replica)
        .send()
        .await?;

    let reader = keyring(env, &mrk.primary_arn, REPLICA_REGION).await;
    let e = decrypt_item(&config, &reader, &encrypted).await.unwrap_err();
    assert_eq!(e.verdict(), Verdict::KeyUnavailable, "{e}");
    assert_eq!(e.reason().as_str(), "disabled", "{e}");
    // The primary region still decrypts.
    let primary_reader = keyring(env, &mrk.primary_arn, PRIMARY_REGION).await;
    decrypt_item(&config, &primary_reader, &encrypted).await?;
    Ok(())
}

#[tokio::test]
async fn replica_pending_deletion_is_key_unavailable_pending_deletion() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env
        .create_replicated_mrk(&unique_name("keys", "pending-deletion"))
        .await?;
    let (config, _, encrypted) = encrypted_in_primary(env, &mrk.primary_arn).await;
    let replica = mrk.arn_in(REPLICA_REGION);
    env.kms(REPLICA_REGION)
        .await
        .schedule_key_deletion()
        .key_id(&replica)
        .pending_window_in_days(7)
        .send()
        .await?;

    let reader = keyring(env, &mrk.primary_arn, REPLICA_REGION).await;
    let e = decrypt_item(&config, &reader, &encrypted).await.unwrap_err();
    assert_eq!(e.verdict(), Verdict::KeyUnavailable, "{e}");
    assert_eq!(e.reason().as_str(), "pending_deletion", "{e}");
    Ok(())
}

#[tokio::test]
async fn key_never_replicated_is_key_unavailable_not_found() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env.create_mrk(&unique_name("keys", "not-replicated")).await?;
    let (config, _, encrypted) = encrypted_in_primary(env, &mrk.primary_arn).await;

    let reader = keyring(env, &mrk.primary_arn, REPLICA_REGION).await;
    let e = decrypt_item(&config, &reader, &encrypted).await.unwrap_err();
    assert_eq!(e.verdict(), Verdict::KeyUnavailable, "{e}");
    assert_eq!(e.reason().as_str(), "not_found", "{e}");
    Ok(())
}

#[tokio::test]
async fn item_under_a_single_region_key_is_key_not_mrk() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env
        .create_replicated_mrk(&unique_name("keys", "srk-configured"))
        .await?;
    let srk = env
        .kms(PRIMARY_REGION)
        .await
        .create_key()
        .description(unique_name("keys", "single-region"))
        .send()
        .await?;
    let srk_arn = srk.key_metadata().and_then(|m| m.arn()).expect("arn").to_owned();
    assert!(!srk_arn.contains(":key/mrk-"));
    // An application wrote with a single-region key by mistake.
    let (config, _, encrypted) = encrypted_in_primary(env, &srk_arn).await;

    let reader = keyring(env, &mrk.primary_arn, REPLICA_REGION).await;
    let e = decrypt_item(&config, &reader, &encrypted).await.unwrap_err();
    assert_eq!(e.verdict(), Verdict::KeyNotMrk, "{e}");
    assert_eq!(e.reason().as_str(), "key_not_mrk", "{e}");
    assert!(e.to_string().contains(&srk_arn), "names the EDK's key: {e}");
    Ok(())
}

#[tokio::test]
async fn keys_check_healthy_then_disabled_replica_names_the_region() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env.create_replicated_mrk(&unique_name("keys", "check")).await?;
    let regions = vec![PRIMARY_REGION.to_owned(), REPLICA_REGION.to_owned()];
    let counters = KmsCounters::new();
    let mut clients = KmsClients::new();
    for r in &regions {
        clients.insert(r.clone(), env.governed_kms(r, &counters).await);
    }
    let ec: BTreeMap<String, String> = [("aws-crypto-table-name".to_owned(), "orders".to_owned())].into();

    let report = check_keys(&mrk.primary_arn, &regions, &clients, &ec).await?;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.matrix.len(), 4);

    env.kms(REPLICA_REGION)
        .await
        .disable_key()
        .key_id(mrk.arn_in(REPLICA_REGION))
        .send()
        .await?;
    let report = check_keys(&mrk.primary_arn, &regions, &clients, &ec).await?;
    assert!(!report.ok);
    assert_eq!(report.regions[1].state, KeyState::Disabled);
    let failures = report.failures().join("\n");
    assert!(failures.contains(REPLICA_REGION), "{failures}");
    assert!(
        report
            .matrix
            .iter()
            .filter(|c| !c.ok)
            .all(|c| c.encrypt_region == REPLICA_REGION || c.decrypt_region == REPLICA_REGION)
    );
    Ok(())
}
