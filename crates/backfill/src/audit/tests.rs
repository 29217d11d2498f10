//! The audit over the fake DynamoDB: verdict counts on a mixed table, retried throttling and unprocessed keys,
//! and the comparison of two replicas (missing on each side, different, and a mismatch that replication heals
//! before the re-check).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ddbguard_dbe::{CryptoAction, TableConfig, encrypt_item};
use ddbguard_ddb::{
    AttributeValue, ErrorKind, FakeDynamo, FaultyDynamo, KeyAttribute, KeySchema, Op, ScalarType, TableSpec,
};
use ddbguard_keys::RawAesKeyring;
use ddbguard_verify::convert::{item_to_table_item, table_item_to_item};
use ddbguard_verify::{Verifier, VerifyPolicy};
use serde_json::json;
use zeroize::Zeroizing;

use super::*;

const TABLE: &str = "Customers";
const LOCAL: &str = "us-east-1";
const OTHER: &str = "ap-southeast-2";

fn table_config() -> TableConfig {
    let mut c = TableConfig::new(TABLE, "pk");
    c.sort_key = Some("sk".into());
    for (name, action) in [
        ("pk", CryptoAction::SignOnly),
        ("sk", CryptoAction::SignOnly),
        ("ssn", CryptoAction::EncryptAndSign),
        ("tier", CryptoAction::SignOnly),
    ] {
        c.attribute_actions.insert(name.into(), action);
    }
    c
}

fn keyring() -> Arc<RawAesKeyring> {
    Arc::new(RawAesKeyring::new("ddbguard-test", "key-1", Zeroizing::new([9u8; 32])))
}

fn verifier(sample_rate: f64) -> Arc<Verifier> {
    let mut policy = VerifyPolicy::new(table_config());
    policy.sample_rate = sample_rate;
    Arc::new(Verifier::new(policy, keyring(), LOCAL).unwrap().with_table_label(TABLE))
}

fn plain(i: usize) -> Item {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(format!("customer-{i:04}"))),
        ("sk".to_owned(), AttributeValue::N("1".into())),
        ("ssn".to_owned(), AttributeValue::S(format!("123-45-{i:04}"))),
        ("tier".to_owned(), AttributeValue::S("gold".into())),
    ])
}

async fn encrypted(i: usize) -> Item {
    let item = encrypt_item(
        &table_config(),
        keyring().as_ref(),
        &table_item_to_item(&plain(i)).unwrap(),
    )
    .await
    .unwrap();
    item_to_table_item(&item)
}

fn empty_table() -> FakeDynamo {
    let db = FakeDynamo::new();
    db.add_table(TableSpec::on_demand(
        TABLE,
        KeySchema {
            hash: KeyAttribute::new("pk", ScalarType::S),
            range: Some(KeyAttribute::new("sk", ScalarType::N)),
        },
    ));
    db
}

/// `n` encrypted items.
async fn table_with(n: usize) -> FakeDynamo {
    let db = empty_table();
    for i in 0..n {
        db.put_raw(TABLE, encrypted(i).await).unwrap();
    }
    db
}

/// A copy of every item of `from`.
fn replica_of(from: &FakeDynamo) -> FakeDynamo {
    let db = empty_table();
    for item in from.items(TABLE) {
        db.put_raw(TABLE, item).unwrap();
    }
    db
}

fn config() -> AuditConfig {
    AuditConfig {
        segments: Some(4),
        page_size: 10,
        ..AuditConfig::default()
    }
}

fn key(i: usize) -> Value {
    json!({"pk": {"S": format!("customer-{i:04}")}, "sk": {"N": "1"}})
}

/// One byte of the encrypted `ssn` changed.
fn tampered(mut item: Item) -> Item {
    let Some(AttributeValue::B(blob)) = item.get("ssn") else {
        panic!("ssn is not binary")
    };
    let mut bytes = blob.clone().into_inner();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    item.insert("ssn".into(), AttributeValue::B(bytes.into()));
    item
}

async fn local_only<D: DynamoApi>(db: D, verifier: Arc<Verifier>, config: AuditConfig) -> AuditReport {
    audit(
        db,
        verifier,
        TABLE,
        None::<Replica<FakeDynamo>>,
        config,
        std::future::pending::<()>(),
    )
    .await
    .unwrap()
}

async fn compared<L: DynamoApi, R: DynamoApi>(local: L, other: R, config: AuditConfig) -> AuditReport {
    let replica = Replica {
        region: OTHER.to_owned(),
        db: other,
    };
    audit(
        local,
        verifier(1.0),
        TABLE,
        Some(replica),
        config,
        std::future::pending::<()>(),
    )
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_mixed_table_gets_verify_s_verdicts_counted_with_sample_keys() {
    let db = Arc::new(table_with(30).await);
    db.put_raw(TABLE, plain(30)).unwrap();
    db.put_raw(TABLE, tampered(encrypted(31).await)).unwrap();

    let report = local_only(db.clone(), verifier(1.0), config()).await;
    assert_eq!(report.completion, Completion::Finished);
    assert_eq!(report.items, 32);
    assert_eq!(
        report.by_verdict,
        BTreeMap::from([
            (Verdict::Ok, 30),
            (Verdict::Plaintext, 1),
            (Verdict::IntegrityFailed, 1)
        ])
    );
    assert_eq!(
        report.by_reason[&Verdict::Plaintext],
        BTreeMap::from([(Reason::NotEncrypted, 1)])
    );
    assert_eq!(report.by_reason[&Verdict::Ok], BTreeMap::from([(Reason::Verified, 30)]));
    assert_eq!(report.samples[&Verdict::Plaintext], vec![key(30)]);
    assert_eq!(report.samples[&Verdict::IntegrityFailed], vec![key(31)]);
    assert!(
        !report.samples.contains_key(&Verdict::Ok),
        "keys of passing items are not kept"
    );
    assert_eq!(report.failures, 2);
    assert!(!report.passed);
    assert!(report.read_units > 0.0 && report.scanned_bytes > 0);
    // The raw keyring names no KMS key: the origin is unknown for every item.
    assert_eq!(report.by_origin["unknown"][&Verdict::Ok], 30);
    // No value is ever in the report.
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains("123-45-"), "{text}");

    // Without sampling, encrypted items are checked structurally; the tampered ciphertext then goes unseen,
    // exactly as `verify` would miss it on an unsampled record.
    let report = local_only(db.clone(), verifier(0.0), config()).await;
    assert_eq!(
        report.by_verdict,
        BTreeMap::from([(Verdict::OkStructural, 31), (Verdict::Plaintext, 1)])
    );

    // A clean table passes.
    let report = local_only(Arc::new(table_with(12).await), verifier(1.0), config()).await;
    assert_eq!(report.by_verdict, BTreeMap::from([(Verdict::Ok, 12)]));
    assert!(report.passed);
}

#[tokio::test(start_paused = true)]
async fn sampling_is_deterministic_per_key() {
    let db = Arc::new(table_with(200).await);
    let first = local_only(db.clone(), verifier(0.3), config()).await;
    let second = local_only(db, verifier(0.3), config()).await;
    let full = first.by_verdict.get(&Verdict::Ok).copied().unwrap_or(0);
    assert!((30..=90).contains(&full), "about 30 % of 200 decrypted in full: {full}");
    assert_eq!(first.by_verdict, second.by_verdict);
    assert!(first.passed);
}

#[tokio::test(start_paused = true)]
async fn throttling_and_unprocessed_keys_are_retried() {
    let local = Arc::new(FaultyDynamo::new(table_with(45).await));
    let other = Arc::new(FaultyDynamo::new(replica_of(local.inner())));
    local.fail_next(Op::Scan, ErrorKind::Throttled, 3);
    local.fail_next(Op::BatchGet, ErrorKind::Transient, 2);
    other.fail_next(Op::BatchGet, ErrorKind::Throttled, 2);
    other.leave_unprocessed(4, 5);

    let report = compared(local.clone(), other.clone(), config()).await;
    let compare = report.compare.clone().unwrap();
    assert_eq!(report.items, 45, "{report:#?}");
    assert_eq!(compare.compared, 45);
    assert_eq!(compare.identical, 45);
    assert_eq!(compare.reverse_checked, 45);
    assert!(compare.agrees(), "{compare:#?}");
    assert!(report.passed);
    // 5 pages in each of the local region's 4 segments... at least one scan call per segment, plus the retries.
    assert!(local.calls(Op::Scan) >= 4 + 3);
    // The 5 local pages are each one lookup, plus 2 throttled calls and 5 calls that left keys unprocessed.
    assert!(other.calls(Op::BatchGet) >= 5 + 2 + 5, "{}", other.calls(Op::BatchGet));
}

#[tokio::test(start_paused = true)]
async fn unprocessed_keys_without_progress_fail_the_audit() {
    let local = Arc::new(table_with(5).await);
    let other = Arc::new(FaultyDynamo::new(replica_of(&local)));
    other.leave_unprocessed(100, u32::MAX);
    let replica = Replica {
        region: OTHER.to_owned(),
        db: other,
    };
    let e = audit(
        local,
        verifier(1.0),
        TABLE,
        Some(replica),
        config(),
        std::future::pending::<()>(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, AuditError::Dynamo { region, source } if region == OTHER && source.kind == ErrorKind::Throttled),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn compare_finds_items_missing_on_each_side_and_different_ones() {
    let local = Arc::new(table_with(25).await);
    let other = Arc::new(replica_of(&local));
    // Only here: customer-0025. Only there: customer-0026. Different there: customer-0007's ciphertext.
    local.put_raw(TABLE, encrypted(25).await).unwrap();
    other.put_raw(TABLE, encrypted(26).await).unwrap();
    let altered = tampered(
        other
            .items(TABLE)
            .into_iter()
            .find(|i| i.get("pk") == Some(&AttributeValue::S("customer-0007".into())))
            .unwrap(),
    );
    other.put_raw(TABLE, altered).unwrap();

    let report = compared(local, other, config()).await;
    let compare = report.compare.clone().unwrap();
    assert_eq!(compare.region, OTHER);
    assert_eq!(compare.compared, 26);
    assert_eq!(compare.identical, 24);
    assert_eq!(
        compare.missing,
        BTreeMap::from([
            (
                format!("missing_in_{OTHER}"),
                KeyList {
                    count: 1,
                    keys: vec![key(25)]
                }
            ),
            (
                format!("missing_in_{LOCAL}"),
                KeyList {
                    count: 1,
                    keys: vec![key(26)]
                }
            ),
        ])
    );
    assert_eq!(
        compare.different,
        Differences {
            count: 1,
            items: vec![Difference {
                key: key(7),
                attributes: vec!["ssn".into()]
            }]
        }
    );
    assert!(!compare.agrees());
    // Every local item is fine: the replicas' disagreement alone fails the audit.
    assert_eq!(report.by_verdict, BTreeMap::from([(Verdict::Ok, 26)]));
    assert!(!report.passed);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["compare"][format!("missing_in_{OTHER}")]["count"], 1, "{json:#}");
    assert_eq!(
        json["compare"]["different"]["items"][0]["attributes"],
        json!(["ssn"]),
        "{json:#}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_write_replicated_before_the_recheck_is_not_a_finding() {
    let local = Arc::new(table_with(10).await);
    let other = Arc::new(replica_of(&local));
    let late = encrypted(10).await;
    local.put_raw(TABLE, late.clone()).unwrap();
    // The write arrives in the other region half a second into the audit, before the re-check at 2 s.
    let arriving = other.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        arriving.put_raw(TABLE, late).unwrap();
    });

    let report = compared(local.clone(), other.clone(), config()).await;
    let compare = report.compare.unwrap();
    assert!(compare.agrees(), "{compare:#?}");
    assert_eq!((compare.compared, compare.identical), (11, 11));

    // Without a re-check, the same race is reported.
    let other = Arc::new(replica_of(&local));
    other
        .delete_item(TABLE, key_of(&["pk".into(), "sk".into()], &plain(10)), None)
        .await
        .unwrap();
    let report = compared(
        local,
        other,
        AuditConfig {
            recheck_after: Duration::ZERO,
            ..config()
        },
    )
    .await;
    assert_eq!(report.compare.unwrap().missing[&format!("missing_in_{OTHER}")].count, 1);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_interrupts_the_audit_and_it_does_not_pass() {
    let db = Arc::new(FaultyDynamo::new(table_with(40).await));
    db.set_latency(Op::Scan, Duration::from_secs(1));
    let config = AuditConfig {
        concurrency: 1,
        ..config()
    };
    let report = audit(
        db,
        verifier(1.0),
        TABLE,
        None::<Replica<FakeDynamo>>,
        config,
        tokio::time::sleep(Duration::from_millis(1500)),
    )
    .await
    .unwrap();
    assert_eq!(report.completion, Completion::Interrupted);
    assert!(report.items < 40, "{}", report.items);
    assert!(!report.passed);
}

#[tokio::test]
async fn a_missing_table_or_key_mismatch_is_an_error() {
    let db = Arc::new(FakeDynamo::new());
    let e = audit(
        db,
        verifier(1.0),
        TABLE,
        None::<Replica<FakeDynamo>>,
        config(),
        std::future::pending::<()>(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, AuditError::TableNotFound { ref region, .. } if region == LOCAL),
        "{e}"
    );

    let local = Arc::new(empty_table());
    let other = Arc::new(FakeDynamo::new());
    other.add_table(TableSpec::on_demand(
        TABLE,
        KeySchema {
            hash: KeyAttribute::new("pk", ScalarType::S),
            range: None,
        },
    ));
    let replica = Replica {
        region: OTHER.to_owned(),
        db: other,
    };
    let e = audit(
        local,
        verifier(1.0),
        TABLE,
        Some(replica),
        config(),
        std::future::pending::<()>(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains(OTHER) && e.contains("partition_key"), "{e}");
}

#[test]
fn attributes_compare_as_dynamodb_means_them() {
    let a = HashMap::from([
        ("n".to_owned(), AttributeValue::N("1.50".into())),
        ("ss".to_owned(), AttributeValue::Ss(vec!["x".into(), "y".into()])),
        (
            "m".to_owned(),
            AttributeValue::M(HashMap::from([(
                "k".to_owned(),
                AttributeValue::Ns(vec!["2".into(), "10".into()]),
            )])),
        ),
        ("only_a".to_owned(), AttributeValue::Bool(true)),
        ("b".to_owned(), AttributeValue::B(vec![1u8, 2].into())),
    ]);
    let b = HashMap::from([
        ("n".to_owned(), AttributeValue::N("1.5".into())),
        ("ss".to_owned(), AttributeValue::Ss(vec!["y".into(), "x".into()])),
        (
            "m".to_owned(),
            AttributeValue::M(HashMap::from([(
                "k".to_owned(),
                AttributeValue::Ns(vec!["10".into(), "2.0".into()]),
            )])),
        ),
        ("only_b".to_owned(), AttributeValue::Null(true)),
        ("b".to_owned(), AttributeValue::B(vec![1u8, 3].into())),
    ]);
    assert_eq!(differing_attributes(&a, &b), vec!["b", "only_a", "only_b"]);
    assert!(differing_attributes(&a, &a.clone()).is_empty());
}

/// The verifiers' canary items are neither judged nor compared: a canary only one replica has, and one whose
/// payload differs between them (each region overwrites its own every few seconds), are no finding.
#[tokio::test(start_paused = true)]
async fn canary_items_are_counted_apart_and_never_compared() {
    let local = table_with(5).await;
    let other = replica_of(&local);
    let settings = CanarySettings {
        origins: vec![LOCAL.to_owned(), OTHER.to_owned()],
        ..CanarySettings::default()
    };
    let layout = CanaryLayout::new(
        &KeySchema {
            hash: KeyAttribute::new("pk", ScalarType::S),
            range: Some(KeyAttribute::new("sk", ScalarType::N)),
        },
        &settings.prefix,
        &settings.origins,
    )
    .unwrap();
    // Canaries in plaintext: judged, they would be `plaintext` failures.
    let canary = |region: &str, payload: &str| {
        let mut item = item_to_table_item(&layout.key(region));
        item.insert("ssn".into(), AttributeValue::S(payload.into()));
        item
    };
    local.put_raw(TABLE, canary(LOCAL, "local-1")).unwrap();
    local.put_raw(TABLE, canary(OTHER, "other-1")).unwrap();
    other.put_raw(TABLE, canary(OTHER, "other-2")).unwrap();

    let with_canaries = AuditConfig {
        canaries: Some(settings),
        ..config()
    };
    let report = compared(local, other, with_canaries.clone()).await;
    assert_eq!(report.items, 5);
    assert_eq!(report.canaries, 2);
    assert_eq!(report.by_verdict.get(&Verdict::Ok), Some(&5));
    assert!(report.passed, "{report:#?}");
    let compare = report.compare.unwrap();
    assert!(compare.agrees(), "{compare:#?}");
    assert_eq!(compare.compared, 5);

    // Without the setting, the same canary keys are items: plaintext, and they differ.
    let local = table_with(5).await;
    local.put_raw(TABLE, canary(LOCAL, "local-1")).unwrap();
    let report = local_only(local, verifier(1.0), config()).await;
    assert_eq!((report.items, report.canaries), (6, 0));
    assert!(!report.passed);
}
