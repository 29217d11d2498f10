//! Verdict tests on real records: items encrypted with `encrypt_item` under a raw AES keyring (or a fake
//! KMS-shaped keyring), tampered with, turned into stream records and verified.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ddbguard_dbe::{
    AlgorithmSuite, AttributeValue, CryptoAction, EncryptedDataKey, EncryptionContext, Item, Keyring, KeyringError,
    KeyringFuture, SecretKey, TableConfig, UnwrappedKey, Verdict, WrappedKey, encrypt_item,
};
use ddbguard_keys::RawAesKeyring;
use ddbguard_stream::{EventName, GapReason, RecordBatch, RecordSink, SequenceNumber, StreamGap, StreamRecord};
use serde_json::json;
use zeroize::Zeroizing;

use crate::convert::item_to_image;
use crate::engine::sampled;
use crate::{RecordOutcome, Verifier, VerifyPolicy, VerifySink};

/// The plaintext of the encrypted attribute: must never show up in an outcome, a log line or a metric.
const SECRET: &str = "TOPSECRET-4242";
const MRK_WEST: &str = "arn:aws:kms:us-west-2:111122223333:key/mrk-0123456789abcdef0123456789abcdef";
const MRK_EU: &str = "arn:aws:kms:eu-west-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef";
const SINGLE_REGION: &str = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn config() -> TableConfig {
    let mut c = TableConfig::new("orders", "pk");
    c.sort_key = Some("sk".into());
    for (name, action) in [
        ("pk", CryptoAction::SignOnly),
        ("sk", CryptoAction::SignOnly),
        ("secret", CryptoAction::EncryptAndSign),
        ("amount", CryptoAction::SignOnly),
    ] {
        c.attribute_actions.insert(name.into(), action);
    }
    c.allowed_unsigned_attributes.insert("note".into());
    c
}

fn raw_keyring() -> Arc<RawAesKeyring> {
    Arc::new(RawAesKeyring::new("ddbguard-test", "key-1", Zeroizing::new([7u8; 32])))
}

fn plain_item(pk: &str, secret: &str) -> Item {
    let mut item = Item::new();
    item.insert("pk".into(), AttributeValue::S(pk.into()));
    item.insert("sk".into(), AttributeValue::N("1".into()));
    item.insert("secret".into(), AttributeValue::S(secret.into()));
    item.insert("amount".into(), AttributeValue::N("100".into()));
    item.insert("note".into(), AttributeValue::S("unsigned".into()));
    item
}

async fn encrypt_with(config: &TableConfig, keyring: &dyn Keyring, item: &Item) -> Item {
    encrypt_item(config, keyring, item).await.expect("encrypt")
}

async fn encrypted(pk: &str) -> Item {
    encrypt_with(&config(), raw_keyring().as_ref(), &plain_item(pk, SECRET)).await
}

fn record(event_id: &str, event_name: EventName, item: Option<&Item>) -> StreamRecord {
    let keys = [
        (
            "pk".to_owned(),
            aws_sdk_dynamodbstreams::types::AttributeValue::S("p1".into()),
        ),
        (
            "sk".to_owned(),
            aws_sdk_dynamodbstreams::types::AttributeValue::N("1".into()),
        ),
    ];
    StreamRecord {
        event_id: event_id.into(),
        event_name,
        sequence_number: SequenceNumber::new("100"),
        approximate_creation_time: None,
        keys: keys.into_iter().collect(),
        new_image: item.map(item_to_image),
        old_image: None,
        size_bytes: None,
    }
}

fn insert(item: &Item) -> StreamRecord {
    record("event-1", EventName::Insert, Some(item))
}

fn verifier_with(policy: VerifyPolicy, keyring: Arc<dyn Keyring>) -> Verifier {
    Verifier::new(policy, keyring, "eu-west-1").expect("valid policy")
}

fn verifier() -> Verifier {
    verifier_with(VerifyPolicy::new(config()), raw_keyring())
}

/// Every outcome: the plaintext never appears, and keys hold only the primary key.
fn checked(outcome: RecordOutcome) -> RecordOutcome {
    let text = format!("{outcome:?}");
    assert!(!text.contains(SECRET), "plaintext leaked: {text}");
    if let Some(keys) = outcome.keys.as_object() {
        assert!(keys.keys().all(|k| k == "pk" || k == "sk"), "{keys:?}");
    }
    outcome
}

async fn verdict_of(v: &Verifier, record: &StreamRecord) -> RecordOutcome {
    checked(v.evaluate(record).await)
}

fn flip_bit(item: &mut Item, attr: &str) {
    match item.get_mut(attr) {
        Some(AttributeValue::B(b)) => {
            let last = b.len() - 1;
            b[last] ^= 0x01;
        }
        other => panic!("{attr} is not binary: {other:?}"),
    }
}

// ---- a fake keyring: KMS- or hierarchy-shaped EDKs, configurable failures, call counting ----

#[derive(Debug)]
struct FakeKeyring {
    provider_id: String,
    provider_info: Vec<u8>,
    fail: Option<KeyringError>,
    calls: AtomicUsize,
}

impl FakeKeyring {
    fn new(provider_id: &str, provider_info: &str) -> FakeKeyring {
        FakeKeyring {
            provider_id: provider_id.into(),
            provider_info: provider_info.as_bytes().to_vec(),
            fail: None,
            calls: AtomicUsize::new(0),
        }
    }

    fn failing(fail: KeyringError) -> FakeKeyring {
        FakeKeyring {
            fail: Some(fail),
            ..FakeKeyring::new("aws-kms", MRK_WEST)
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Keyring for FakeKeyring {
    fn unwrap_key<'a>(
        &'a self,
        edks: &'a [EncryptedDataKey],
        _ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, UnwrappedKey> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if let Some(e) = &self.fail {
                return Err(e.clone());
            }
            for (i, edk) in edks.iter().enumerate() {
                if edk.provider_id == self.provider_id && edk.ciphertext.len() == 32 {
                    let mut ikm = Zeroizing::new([0u8; 32]);
                    ikm.copy_from_slice(&edk.ciphertext);
                    return Ok(UnwrappedKey {
                        ikm: SecretKey::new(ikm),
                        edk_index: i,
                    });
                }
            }
            Err(KeyringError::NoMatchingKey { message: "fake".into() })
        })
    }

    fn wrap_key<'a>(&'a self, _ec: &'a EncryptionContext) -> KeyringFuture<'a, WrappedKey> {
        Box::pin(async move {
            let ikm = SecretKey::random().map_err(|e| KeyringError::Other { message: e.to_string() })?;
            // Not wrapped at all: the fake only shapes the EDK.
            let wrapped = ikm.expose().to_vec();
            Ok(WrappedKey {
                ikm,
                provider_id: self.provider_id.clone(),
                provider_info: self.provider_info.clone(),
                wrapped,
            })
        })
    }
}

// ---- verdicts ----

#[tokio::test]
async fn correct_item_is_ok_with_keys_and_no_origin_for_raw_keys() {
    let o = verdict_of(&verifier(), &insert(&encrypted("p1").await)).await;
    assert_eq!(
        (o.verdict, o.reason.as_str()),
        (Verdict::Ok, "verified"),
        "{}",
        o.message
    );
    assert_eq!(o.origin_region, None);
    assert_eq!(o.keys, json!({"pk": {"S": "p1"}, "sk": {"N": "1"}}));
    assert!(o.is_pass());
    let js = serde_json::to_value(&o).unwrap();
    assert_eq!(
        (js["verdict"].as_str(), js["reason"].as_str()),
        (Some("ok"), Some("verified"))
    );
}

#[tokio::test]
async fn plaintext_item_where_ciphertext_belongs() {
    let o = verdict_of(&verifier(), &insert(&plain_item("p1", SECRET))).await;
    assert_eq!((o.verdict, o.reason.as_str()), (Verdict::Plaintext, "not_encrypted"));

    // Without ENCRYPT_AND_SIGN in the table, a required_encrypted attribute still makes it `plaintext` ...
    let mut signed_only = config();
    signed_only
        .attribute_actions
        .insert("secret".into(), CryptoAction::SignOnly);
    let mut policy = VerifyPolicy::new(signed_only.clone());
    policy.table.required_encrypted = BTreeSet::from(["secret".to_owned()]);
    let v = verifier_with(policy, raw_keyring());
    assert_eq!(
        verdict_of(&v, &insert(&plain_item("p1", SECRET))).await.verdict,
        Verdict::Plaintext
    );

    // ... and otherwise an unsigned item is a policy violation.
    let v = verifier_with(VerifyPolicy::new(signed_only), raw_keyring());
    let o = verdict_of(&v, &insert(&plain_item("p1", SECRET))).await;
    assert_eq!(
        (o.verdict, o.reason.as_str()),
        (Verdict::PolicyViolation, "not_encrypted")
    );
}

#[tokio::test]
async fn encrypted_record_with_the_secret_written_sign_only_is_plaintext() {
    let mut writer = config();
    writer.attribute_actions.insert("secret".into(), CryptoAction::SignOnly);
    let item = encrypt_with(&writer, raw_keyring().as_ref(), &plain_item("p1", SECRET)).await;
    let o = verdict_of(&verifier(), &insert(&item)).await;
    assert_eq!(
        (o.verdict, o.reason.as_str()),
        (Verdict::Plaintext, "attribute_not_encrypted")
    );
    assert!(o.message.contains("secret"));
}

#[tokio::test]
async fn flipped_ciphertext_bit_fails_integrity() {
    let mut item = encrypted("p1").await;
    flip_bit(&mut item, "secret");
    let o = verdict_of(&verifier(), &insert(&item)).await;
    assert_eq!(o.verdict, Verdict::IntegrityFailed, "{}", o.reason.as_str());

    let mut item = encrypted("p1").await;
    flip_bit(&mut item, "aws_dbe_foot");
    assert_eq!(
        verdict_of(&verifier(), &insert(&item)).await.verdict,
        Verdict::IntegrityFailed
    );
}

#[tokio::test]
async fn changed_signed_attribute_fails_integrity() {
    let mut item = encrypted("p1").await;
    item.insert("amount".into(), AttributeValue::N("1000000".into()));
    let o = verdict_of(&verifier(), &insert(&item)).await;
    assert_eq!(o.verdict, Verdict::IntegrityFailed, "{}", o.reason.as_str());

    // The unsigned attribute may change freely.
    let mut item = encrypted("p1").await;
    item.insert("note".into(), AttributeValue::S("edited".into()));
    assert_eq!(verdict_of(&verifier(), &insert(&item)).await.verdict, Verdict::Ok);
}

#[tokio::test]
async fn value_swapped_between_items_fails_integrity() {
    let mut a = encrypted("p1").await;
    let b = encrypted("p2").await;
    a.insert("secret".into(), b["secret"].clone());
    let o = verdict_of(&verifier(), &insert(&a)).await;
    assert_eq!(o.verdict, Verdict::IntegrityFailed, "{}", o.reason.as_str());
}

#[tokio::test]
async fn unexpected_signed_attribute_is_a_policy_violation() {
    // Written by a writer whose policy signs an attribute ours does not know.
    let mut writer = config();
    writer.attribute_actions.insert("extra".into(), CryptoAction::SignOnly);
    let mut plain = plain_item("p1", SECRET);
    plain.insert("extra".into(), AttributeValue::S("x".into()));
    let item = encrypt_with(&writer, raw_keyring().as_ref(), &plain).await;
    let o = verdict_of(&verifier(), &insert(&item)).await;
    assert_eq!(
        (o.verdict, o.reason.as_str()),
        (Verdict::PolicyViolation, "unexpected_signed_attribute")
    );
    assert!(o.message.contains("extra"));

    // An attribute added after encryption (not in the legend).
    let mut item = encrypted("p1").await;
    item.insert("injected".into(), AttributeValue::S("x".into()));
    let o = verdict_of(&verifier(), &insert(&item)).await;
    assert_eq!(o.verdict, Verdict::PolicyViolation, "{}", o.reason.as_str());

    // A known attribute with a different action than ours.
    let mut writer = config();
    writer
        .attribute_actions
        .insert("amount".into(), CryptoAction::EncryptAndSign);
    let item = encrypt_with(&writer, raw_keyring().as_ref(), &plain_item("p1", SECRET)).await;
    let o = verdict_of(&verifier(), &insert(&item)).await;
    assert_eq!(
        (o.verdict, o.reason.as_str()),
        (Verdict::PolicyViolation, "action_mismatch")
    );
}

#[tokio::test]
async fn wrong_suite_is_a_policy_violation() {
    let item = encrypted("p1").await;
    let written = ddbguard_dbe::Header::from_item(&item).unwrap().suite;
    let other = if written == AlgorithmSuite::HmacOnly {
        AlgorithmSuite::from_id(0x6701).unwrap()
    } else {
        AlgorithmSuite::HmacOnly
    };
    let mut policy = VerifyPolicy::new(config());
    policy.table.require_suite = Some(other);
    let o = verdict_of(&verifier_with(policy, raw_keyring()), &insert(&item)).await;
    assert_eq!(
        (o.verdict, o.reason.as_str()),
        (Verdict::PolicyViolation, "wrong_suite")
    );
}

#[tokio::test]
async fn remove_legacy_missing_image_and_unconvertible_images() {
    let v = verifier();
    let o = verdict_of(&v, &record("e", EventName::Remove, None)).await;
    assert_eq!(
        (o.verdict, o.reason.as_str(), o.origin_region.as_deref()),
        (Verdict::Remove, "remove", None)
    );

    let mut legacy = plain_item("p1", SECRET);
    legacy.insert("*amzn-ddb-map-desc*".into(), AttributeValue::B(vec![1, 2]));
    assert_eq!(verdict_of(&v, &insert(&legacy)).await.verdict, Verdict::LegacyFormat);

    let o = verdict_of(&v, &record("e", EventName::Modify, None)).await;
    assert_eq!(
        (o.verdict, o.reason.as_str()),
        (Verdict::PolicyViolation, "no_new_image")
    );

    // An event name this version does not know gets a failing verdict, even with a correct new image.
    let o = verdict_of(&v, &record("e", EventName::Unknown, Some(&encrypted("p1").await))).await;
    assert_eq!(
        (o.verdict, o.reason.as_str()),
        (Verdict::PolicyViolation, "unknown_event_name")
    );

    let mut r = insert(&encrypted("p1").await);
    r.new_image.as_mut().unwrap().insert(
        "weird".into(),
        aws_sdk_dynamodbstreams::types::AttributeValue::Null(false),
    );
    let o = verdict_of(&v, &r).await;
    assert_eq!((o.verdict, o.reason.as_str()), (Verdict::IntegrityFailed, "null_false"));
}

#[tokio::test]
async fn keys_come_from_the_image_when_the_record_has_none() {
    let mut r = insert(&encrypted("p9").await);
    r.keys = HashMap::new();
    let o = verdict_of(&verifier(), &r).await;
    assert_eq!(o.keys, json!({"pk": {"S": "p9"}, "sk": {"N": "1"}}));
}

#[tokio::test]
async fn sample_rate_zero_gives_ok_structural_without_a_keyring_call() {
    let kms = Arc::new(FakeKeyring::new("aws-kms", MRK_WEST));
    let item = encrypt_with(&config(), kms.as_ref(), &plain_item("p1", SECRET)).await;
    let mut policy = VerifyPolicy::new(config()).with_key_arn(MRK_EU).unwrap();
    policy.sample_rate = 0.0;
    let v = verifier_with(policy, kms.clone());
    let o = verdict_of(&v, &insert(&item)).await;
    assert_eq!((o.verdict, o.reason.as_str()), (Verdict::OkStructural, "not_sampled"));
    assert_eq!(o.origin_region.as_deref(), Some("us-west-2"));
    assert_eq!(kms.calls(), 0);

    // Structural failures are still caught without sampling.
    let mut tampered = item.clone();
    tampered.insert("injected".into(), AttributeValue::S("x".into()));
    assert_eq!(
        verdict_of(&v, &insert(&tampered)).await.verdict,
        Verdict::PolicyViolation
    );
}

#[tokio::test]
async fn hierarchical_records_are_always_fully_verified() {
    let hierarchy = Arc::new(FakeKeyring::new("aws-kms-hierarchy", "branch-key-id"));
    let item = encrypt_with(&config(), hierarchy.as_ref(), &plain_item("p1", SECRET)).await;
    let mut policy = VerifyPolicy::new(config());
    policy.sample_rate = 0.0;
    let o = verdict_of(&verifier_with(policy, hierarchy.clone()), &insert(&item)).await;
    assert_eq!(o.verdict, Verdict::Ok, "{}", o.message);
    assert_eq!(o.origin_region, None);
    assert_eq!(hierarchy.calls(), 1);
}

#[tokio::test]
async fn kms_edks_must_mrk_match_the_configured_key() {
    let v_for = |kms: Arc<FakeKeyring>| verifier_with(VerifyPolicy::new(config()).with_key_arn(MRK_EU).unwrap(), kms);

    // A replica of the configured MRK in another region: full decrypt, origin from the EDK.
    let kms = Arc::new(FakeKeyring::new("aws-kms", MRK_WEST));
    let item = encrypt_with(&config(), kms.as_ref(), &plain_item("p1", SECRET)).await;
    let o = verdict_of(&v_for(kms.clone()), &insert(&item)).await;
    assert_eq!(o.verdict, Verdict::Ok, "{}", o.message);
    assert_eq!(o.origin_region.as_deref(), Some("us-west-2"));

    // A single-region key: key_not_mrk, and the keyring is never asked.
    let single = Arc::new(FakeKeyring::new("aws-kms", SINGLE_REGION));
    let item = encrypt_with(&config(), single.as_ref(), &plain_item("p1", SECRET)).await;
    let o = verdict_of(&v_for(single.clone()), &insert(&item)).await;
    assert_eq!((o.verdict, o.reason.as_str()), (Verdict::KeyNotMrk, "edk_key_not_mrk"));
    assert_eq!(o.origin_region.as_deref(), Some("us-west-2"));
    assert!(o.message.contains(SINGLE_REGION), "{}", o.message);
    assert_eq!(single.calls(), 0);

    // Garbage in the provider info, and no aws-kms EDK at all.
    let garbage = Arc::new(FakeKeyring::new("aws-kms", "not-an-arn"));
    let item = encrypt_with(&config(), garbage.as_ref(), &plain_item("p1", SECRET)).await;
    let o = verdict_of(&v_for(garbage.clone()), &insert(&item)).await;
    assert_eq!((o.verdict, o.reason.as_str()), (Verdict::KeyNotMrk, "edk_arn_invalid"));
    let o = verdict_of(&v_for(kms.clone()), &insert(&encrypted("p1").await)).await;
    assert_eq!((o.verdict, o.reason.as_str()), (Verdict::KeyNotMrk, "no_kms_edk"));
    assert_eq!(garbage.calls(), 0);
}

#[tokio::test]
async fn keyring_failures_map_to_their_verdicts() {
    let item = encrypted("p1").await;
    let cases = [
        (
            KeyringError::KeyNotMrk {
                key: "k".into(),
                message: "single-region".into(),
            },
            Verdict::KeyNotMrk,
        ),
        (
            KeyringError::Throttled {
                key: "k".into(),
                message: "slow down".into(),
            },
            Verdict::KmsThrottled,
        ),
        (
            KeyringError::KeyUnavailable {
                reason: ddbguard_dbe::KeyUnavailableReason::Disabled,
                key: "k".into(),
                message: "disabled".into(),
            },
            Verdict::KeyUnavailable,
        ),
    ];
    for (error, verdict) in cases {
        let fake = Arc::new(FakeKeyring::failing(error));
        let o = verdict_of(
            &verifier_with(VerifyPolicy::new(config()), fake.clone()),
            &insert(&item),
        )
        .await;
        assert_eq!(o.verdict, verdict, "{}", o.message);
        assert_eq!(fake.calls(), 1);
    }
}

#[test]
fn sampling_is_deterministic_and_proportional() {
    let ids: Vec<String> = (0..20_000).map(|i| format!("{i:032x}")).collect();
    for rate in [0.1, 0.5, 0.9] {
        let hits = ids.iter().filter(|id| sampled(id, rate)).count() as f64 / ids.len() as f64;
        assert!((hits - rate).abs() < 0.02, "rate {rate}: {hits}");
        assert!(ids.iter().all(|id| sampled(id, rate) == sampled(id, rate)));
    }
    assert!(ids.iter().all(|id| sampled(id, 1.0)));
    assert!(!ids.iter().any(|id| sampled(id, 0.0)));
}

#[test]
fn invalid_policies_are_rejected() {
    for rate in [-0.1, 1.5, f64::NAN] {
        let mut p = VerifyPolicy::new(config());
        p.sample_rate = rate;
        assert!(Verifier::new(p, raw_keyring(), "eu-west-1").is_err(), "{rate}");
    }
    assert!(
        VerifyPolicy::new(config())
            .with_key_arn("arn:aws:kms:eu-west-1:1:alias/x")
            .is_err()
    );
}

// ---- sink: batches, throttling, duplicates, gaps, summary ----

fn batch(records: Vec<StreamRecord>, duplicates: usize) -> RecordBatch {
    RecordBatch {
        shard_id: "shardId-1".into(),
        records,
        duplicates,
    }
}

#[tokio::test]
async fn sink_counts_by_verdict_and_origin_and_skips_duplicates() {
    let kms = Arc::new(FakeKeyring::new("aws-kms", MRK_WEST));
    let v = verifier_with(VerifyPolicy::new(config()).with_key_arn(MRK_EU).unwrap(), kms.clone());
    let sink = VerifySink::new(Arc::new(v)).with_concurrency(2);
    let good = encrypt_with(&config(), kms.as_ref(), &plain_item("p1", SECRET)).await;
    let mut bad = good.clone();
    flip_bit(&mut bad, "secret");
    let records = vec![
        record("dup", EventName::Insert, Some(&plain_item("p1", SECRET))),
        record("a", EventName::Insert, Some(&good)),
        record("b", EventName::Modify, Some(&bad)),
        record("c", EventName::Remove, None),
        record("d", EventName::Insert, Some(&plain_item("p1", SECRET))),
    ];
    sink.process(&batch(records, 1)).await.expect("no throttling");
    sink.on_gap(&StreamGap {
        table: "orders".into(),
        shard_id: "shardId-0".into(),
        checkpoint: Some(SequenceNumber::new("5")),
        first_available: Some(SequenceNumber::new("9")),
        reason: GapReason::Trimmed,
    });
    let s = sink.summary();
    assert_eq!(s.records, 4);
    assert_eq!(s.duplicates_skipped, 1);
    assert_eq!(
        s.by_verdict,
        BTreeMap::from([
            (Verdict::Ok, 1),
            (Verdict::IntegrityFailed, 1),
            (Verdict::Remove, 1),
            (Verdict::Plaintext, 1)
        ])
    );
    assert_eq!(
        s.by_origin["us-west-2"],
        BTreeMap::from([(Verdict::Ok, 1), (Verdict::IntegrityFailed, 1)])
    );
    assert_eq!(
        s.by_origin["unknown"],
        BTreeMap::from([(Verdict::Remove, 1), (Verdict::Plaintext, 1)])
    );
    assert_eq!(s.failures(), 2);
    assert!(!s.passed());

    let js = serde_json::to_value(&s).unwrap();
    assert_eq!(js["table"], "orders");
    assert_eq!(js["region"], "eu-west-1");
    assert_eq!(js["by_verdict"]["ok"], 1);
    assert_eq!(js["by_origin"]["us-west-2"]["integrity_failed"], 1);
    assert_eq!(js["gaps"][0]["reason"], "trimmed_data_access");
    assert_eq!(js["gaps"][0]["checkpoint"], "5");
    assert!(!js.to_string().contains(SECRET));
}

/// A batch of full verifications is CPU work with no I/O when keys are cached (0x6701: ~0.2 s per 1,000
/// records); it must let the runtime's other tasks (lease renewals, the metrics server) run while it goes on.
#[tokio::test]
async fn a_long_batch_yields_to_other_tasks() {
    let sink = VerifySink::new(Arc::new(verifier()));
    let item = encrypted("p1").await;
    let records = (0..300)
        .map(|n| record(&format!("r{n}"), EventName::Insert, Some(&item)))
        .collect();
    let other_task_ran = Arc::new(AtomicUsize::new(0));
    let probe = tokio::spawn({
        let ran = other_task_ran.clone();
        async move {
            loop {
                ran.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });
    // One thread: the probe runs only if the batch gives the thread back before it finishes.
    sink.process(&batch(records, 0)).await.expect("no throttling");
    let ran = other_task_ran.load(Ordering::Relaxed);
    probe.abort();
    assert!(ran > 0, "the batch held the runtime for all 300 records");
    let summary = sink.summary();
    assert_eq!(
        (summary.records, summary.by_verdict.get(&Verdict::Ok)),
        (300, Some(&300))
    );
}

#[tokio::test]
async fn throttled_batches_are_handed_back_for_retry() {
    let item = encrypted("p1").await;
    let fake = Arc::new(FakeKeyring::failing(KeyringError::Throttled {
        key: "k".into(),
        message: "Rate exceeded".into(),
    }));
    let sink = VerifySink::new(Arc::new(verifier_with(VerifyPolicy::new(config()), fake)));
    let b = batch(
        vec![
            record("a", EventName::Insert, Some(&item)),
            record("b", EventName::Remove, None),
        ],
        0,
    );
    let err = sink
        .process(&b)
        .await
        .expect_err("throttled batch must not be checkpointed");
    assert!(err.to_string().contains("throttled"), "{err}");
    let s = sink.summary();
    assert_eq!((s.records, s.throttled_retries), (0, 1));
    assert!(s.by_verdict.is_empty(), "nothing final is counted from a retried batch");

    // The retry succeeds once the keyring works again: each record is counted once.
    let sink = VerifySink::new(Arc::new(verifier()));
    sink.process(&b).await.unwrap();
    assert_eq!(
        sink.summary().by_verdict,
        BTreeMap::from([(Verdict::Ok, 1), (Verdict::Remove, 1)])
    );
    assert!(sink.summary().passed());
}

/// A keyring that answers `ThrottlingException` to its first `n` calls and then unwraps like [`FakeKeyring`].
#[derive(Debug)]
struct ThrottleFirst {
    inner: FakeKeyring,
    throttle: AtomicUsize,
}

impl Keyring for ThrottleFirst {
    fn unwrap_key<'a>(
        &'a self,
        edks: &'a [EncryptedDataKey],
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, UnwrappedKey> {
        if self
            .throttle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.inner.calls.fetch_add(1, Ordering::SeqCst);
            return Box::pin(async {
                Err(KeyringError::Throttled {
                    key: "k".into(),
                    message: "Rate exceeded".into(),
                })
            });
        }
        self.inner.unwrap_key(edks, ec)
    }

    fn wrap_key<'a>(&'a self, ec: &'a EncryptionContext) -> KeyringFuture<'a, WrappedKey> {
        self.inner.wrap_key(ec)
    }
}

#[tokio::test]
async fn a_retried_batch_verifies_only_its_throttled_records_again() {
    let kms = Arc::new(ThrottleFirst {
        inner: FakeKeyring::new("aws-kms", MRK_WEST),
        throttle: AtomicUsize::new(0),
    });
    let item = encrypt_with(&config(), kms.as_ref(), &plain_item("p1", SECRET)).await;
    let v = verifier_with(VerifyPolicy::new(config()).with_key_arn(MRK_EU).unwrap(), kms.clone());
    let sink = VerifySink::new(Arc::new(v)).with_concurrency(1);
    let b = batch(
        (0..4)
            .map(|n| record(&format!("r{n}"), EventName::Insert, Some(&item)))
            .collect(),
        0,
    );
    // The first record is throttled once; the other three are verified.
    kms.throttle.store(1, Ordering::SeqCst);
    sink.process(&b).await.expect_err("throttled");
    assert_eq!(kms.inner.calls(), 4);
    sink.process(&b).await.expect("the retry succeeds");
    assert_eq!(kms.inner.calls(), 5, "only the throttled record is decrypted again");
    let s = sink.summary();
    assert_eq!((s.records, s.throttled_retries), (4, 1));
    assert_eq!(s.by_verdict, BTreeMap::from([(Verdict::Ok, 4)]));

    // Another batch of the shard starts afresh: nothing of the first is reused.
    let other = batch(vec![record("r9", EventName::Insert, Some(&item))], 0);
    sink.process(&other).await.unwrap();
    assert_eq!(kms.inner.calls(), 6);
    assert_eq!(sink.summary().records, 5);
}

// ---- metrics and alert logs ----

pub(crate) mod capture {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

    #[derive(Debug, Default)]
    pub struct Counters(pub Mutex<Vec<(Key, Arc<Cell>)>>);

    #[derive(Debug, Default)]
    pub struct Cell(pub AtomicU64);

    impl CounterFn for Cell {
        fn increment(&self, value: u64) {
            self.0.fetch_add(value, Ordering::SeqCst);
        }
        fn absolute(&self, value: u64) {
            self.0.store(value, Ordering::SeqCst);
        }
    }

    impl Counters {
        pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
            let all = self.0.lock().unwrap();
            all.iter()
                .filter(|(k, _)| {
                    k.name() == name
                        && labels
                            .iter()
                            .all(|(l, v)| k.labels().any(|kl| kl.key() == *l && kl.value() == *v))
                })
                .map(|(_, c)| c.0.load(Ordering::SeqCst))
                .sum()
        }
    }

    impl Recorder for Counters {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let mut all = self.0.lock().unwrap();
            if let Some((_, c)) = all.iter().find(|(k, _)| k == key) {
                return Counter::from_arc(c.clone());
            }
            let cell = Arc::new(Cell::default());
            all.push((key.clone(), cell.clone()));
            Counter::from_arc(cell)
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }
}

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn metrics_and_alerts_name_table_keys_verdict_and_reason_but_no_values() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (good, mut bad) = rt.block_on(async { (encrypted("p1").await, encrypted("p1").await) });
    flip_bit(&mut bad, "secret");

    let counters = capture::Counters::default();
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let v = verifier();
    tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&counters, || {
            rt.block_on(async {
                assert_eq!(v.verify(&insert(&good)).await.verdict, Verdict::Ok);
                assert_eq!(v.verify(&insert(&bad)).await.verdict, Verdict::IntegrityFailed);
                assert_eq!(
                    v.verify(&insert(&plain_item("p1", SECRET))).await.verdict,
                    Verdict::Plaintext
                );
            })
        })
    });

    let labels = |verdict| {
        [
            ("table", "orders"),
            ("region", "eu-west-1"),
            ("origin_region", "unknown"),
            ("verdict", verdict),
            ("format", "dbesdk"),
        ]
    };
    assert_eq!(counters.get("ddbguard_records_total", &labels("ok")), 1);
    assert_eq!(counters.get("ddbguard_records_total", &labels("integrity_failed")), 1);
    assert_eq!(counters.get("ddbguard_records_total", &labels("plaintext")), 1);

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let alerts: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l["target"] == "alert")
        .collect();
    assert_eq!(alerts.len(), 2, "{text}");
    for alert in &alerts {
        assert_eq!(alert["level"], "WARN");
        assert_eq!(alert["fields"]["table"], "orders");
        assert_eq!(alert["fields"]["keys"], r#"{"pk":{"S":"p1"},"sk":{"N":"1"}}"#);
        assert!(alert["fields"]["reason"].is_string());
        assert_eq!(alert["fields"]["format"], "dbesdk");
    }
    assert_eq!(alerts[0]["fields"]["verdict"], "integrity_failed");
    assert_eq!(alerts[1]["fields"]["verdict"], "plaintext");
    assert!(!text.contains(SECRET), "plaintext in logs: {text}");
}

/// The operator docs list every verdict and reason, spelled as the code spells them.
#[test]
fn metrics_doc_lists_every_verdict_and_reason() {
    let doc = include_str!("../../../docs/METRICS.md");
    for label in Verdict::ALL.iter().map(|v| v.as_str()) {
        assert!(
            doc.contains(&format!("`{label}`")),
            "docs/METRICS.md lacks verdict {label}"
        );
    }
    for label in ddbguard_dbe::Reason::ALL.iter().map(|r| r.as_str()) {
        assert!(
            doc.contains(&format!("`{label}`")),
            "docs/METRICS.md lacks reason {label}"
        );
    }
}

/// A legacy item's outcome carries `format = ddbec` into the records metric (two label values only).
#[test]
fn legacy_records_are_counted_with_format_ddbec() {
    use ddbguard_ddbec::{
        AttributeActions, ContentKey, LegacyAction, MaterialDescription, SecretBytes, StaticProvider, VerificationKey,
    };

    let actions = AttributeActions::new(LegacyAction::EncryptAndSign).with_key_attributes(["pk", "sk"]);
    let plain = Item::from([
        ("pk".to_owned(), AttributeValue::S("p1".into())),
        ("sk".to_owned(), AttributeValue::S("s1".into())),
        ("secret".to_owned(), AttributeValue::S(SECRET.into())),
    ]);
    let (aes, mac) = ([3u8; 32], [4u8; 32]);
    let item = ddbguard_ddbec::fake::seal_item("orders", &plain, &actions, &aes, &mac, &MaterialDescription::default())
        .unwrap();
    let mut policy = VerifyPolicy::new(config());
    policy.legacy = Some(crate::LegacyPolicy {
        actions,
        table_name: "orders".into(),
    });
    let provider = StaticProvider::new(
        Some(ContentKey::new(SecretBytes::from_slice(&aes)).unwrap()),
        VerificationKey::hmac(SecretBytes::from_slice(&mac)).unwrap(),
    );
    let v = verifier_with(policy, raw_keyring()).with_legacy_provider(Arc::new(provider));
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let counters = capture::Counters::default();
    let (good, dbesdk) = metrics::with_local_recorder(&counters, || {
        rt.block_on(async {
            let encrypted = encrypted("p2").await;
            (v.verify(&insert(&item)).await, v.verify(&insert(&encrypted)).await)
        })
    });
    assert_eq!((good.verdict, good.format), (Verdict::Ok, crate::ItemFormat::Ddbec));
    assert_eq!(dbesdk.format, crate::ItemFormat::DbEsdk);
    let count = |format| counters.get("ddbguard_records_total", &[("verdict", "ok"), ("format", format)]);
    assert_eq!((count("ddbec"), count("dbesdk")), (1, 1));
    // The format stays out of the serialized outcome, whose fields are an output format.
    assert!(serde_json::to_value(&good).unwrap().get("format").is_none());
}
