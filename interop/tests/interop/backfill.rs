//! The backfill engine's output decrypts with the official crate: plaintext items of every attribute type (nested
//! maps and lists, string/number/binary sets, binary, empty values, numbers at the edges of DynamoDB's range,
//! non-ASCII attribute names, an unsigned attribute) are stored in an in-memory table, rewritten by
//! `ddbguard_backfill::run` exactly as `ddbguard backfill` runs it (segment leases in a ledger table, conditional
//! write-back), and then read from the table and decrypted by `aws-db-esdk` with the same raw AES key: every value
//! equals the original (numbers compared after DynamoDB's normalization, sets as sets), with both suites.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ddbguard_backfill::{BackfillConfig, Completion, Target};
use ddbguard_ddb::{FakeDynamo, KeyAttribute, KeySchema, ScalarType, TableSpec};
use ddbguard_verify::convert::{item_to_table_item, table_item_to_item};
use ddbguard_verify::{Judge, VerifyPolicy};

use super::common::*;

const TABLE: &str = "BackfillInterop";
const LEDGER: &str = "ddbguard-backfill";
/// Enough items for several pages in each of the segments.
const ITEMS: usize = 48;

/// Attribute names, including ones whose UTF-8 and UTF-16 orders differ (the canonical record sorts by UTF-8
/// bytes; a mistake there breaks the signature on the other side).
const SIGNED_NAME: &str = "ünïcødé_signed";
const ENCRYPTED_NAME: &str = "名前";
const PRIVATE_USE_NAME: &str = "\u{E000}private";
const ASTRAL_NAME: &str = "𝟁astral";
const UNSIGNED_NAME: &str = "note";

fn config(suite: AlgorithmSuite) -> TableConfig {
    let mut c = TableConfig::new(TABLE, "pk");
    c.sort_key = Some("sk".into());
    c.algorithm_suite = suite;
    for (name, action) in [
        ("pk", CryptoAction::SignOnly),
        ("sk", CryptoAction::SignOnly),
        ("s", CryptoAction::EncryptAndSign),
        ("empty_s", CryptoAction::EncryptAndSign),
        ("n", CryptoAction::EncryptAndSign),
        ("n_max", CryptoAction::EncryptAndSign),
        ("n_min", CryptoAction::EncryptAndSign),
        ("n_signed_edge", CryptoAction::SignOnly),
        ("b", CryptoAction::EncryptAndSign),
        ("empty_b", CryptoAction::EncryptAndSign),
        ("bool", CryptoAction::EncryptAndSign),
        ("null", CryptoAction::EncryptAndSign),
        ("ss", CryptoAction::EncryptAndSign),
        ("ns", CryptoAction::EncryptAndSign),
        ("bs", CryptoAction::EncryptAndSign),
        ("ss_signed", CryptoAction::SignOnly),
        ("map", CryptoAction::EncryptAndSign),
        ("list", CryptoAction::EncryptAndSign),
        ("empty_map", CryptoAction::EncryptAndSign),
        ("empty_list", CryptoAction::SignOnly),
        (SIGNED_NAME, CryptoAction::SignOnly),
        (ENCRYPTED_NAME, CryptoAction::EncryptAndSign),
        (PRIVATE_USE_NAME, CryptoAction::EncryptAndSign),
        (ASTRAL_NAME, CryptoAction::EncryptAndSign),
        (UNSIGNED_NAME, CryptoAction::DoNothing),
    ] {
        c.attribute_actions.insert(name.into(), action);
    }
    c.allowed_unsigned_attributes.insert(UNSIGNED_NAME.into());
    c
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl Into<String>) -> AttributeValue {
    AttributeValue::N(v.into())
}

/// Item `i`: every attribute type; the values vary with `i` so that no two items encrypt the same plaintext.
fn plain_item(i: usize) -> Item {
    let mut inner = BTreeMap::new();
    inner.insert(
        "deep".to_owned(),
        AttributeValue::L(vec![n("-1E-130"), s("𝟁"), AttributeValue::Null]),
    );
    inner.insert("ß".to_owned(), AttributeValue::Bs(vec![vec![0], vec![0xff, 0xfe]]));
    let mut map = BTreeMap::new();
    map.insert("count".to_owned(), n(format!("{i}")));
    map.insert("nested".to_owned(), AttributeValue::M(inner));
    map.insert("k\u{FFFD}".to_owned(), AttributeValue::Bool(i % 2 == 0));
    map.insert(
        "set".to_owned(),
        AttributeValue::Ns(vec!["1E125".into(), "-1E-129".into(), format!("{i}.5")]),
    );
    let list = AttributeValue::L(vec![
        s(format!("item {i}")),
        n("9.9999999999999999999999999999999999999E+125"),
        AttributeValue::B(vec![i as u8, 0, 1]),
        AttributeValue::L(vec![AttributeValue::M(BTreeMap::new()), AttributeValue::L(vec![])]),
        AttributeValue::Ss(vec!["z".into(), "a".into(), "\u{E000}".into(), "𝟁".into()]),
    ]);
    let mut item = Item::new();
    item.insert("pk".into(), s(format!("customer-{i:04}")));
    item.insert("sk".into(), n(format!("{}", 1_700_000_000 + i)));
    item.insert("s".into(), s(format!("café {i} \u{0}")));
    item.insert("empty_s".into(), s(""));
    item.insert(
        "n".into(),
        n([
            "-0.50",
            "00.100",
            "1e-3",
            "-1.5E+3",
            "12345678901234567890123456789012345678",
        ][i % 5]),
    );
    item.insert("n_max".into(), n("9.9999999999999999999999999999999999999E+125"));
    item.insert("n_min".into(), n("-1E-130"));
    item.insert(
        "n_signed_edge".into(),
        n(["-9.9999999999999999999999999999999999999E+125", "1E-130"][i % 2]),
    );
    item.insert(
        "b".into(),
        AttributeValue::B((0..=255u8).cycle().skip(i).take(40).collect()),
    );
    item.insert("empty_b".into(), AttributeValue::B(vec![]));
    item.insert("bool".into(), AttributeValue::Bool(i % 3 == 0));
    item.insert("null".into(), AttributeValue::Null);
    item.insert(
        "ss".into(),
        AttributeValue::Ss(vec![format!("v{i}"), "ü".into(), "Z".into(), "a".into()]),
    );
    item.insert(
        "ns".into(),
        AttributeValue::Ns(vec![
            "9.9999999999999999999999999999999999999E+125".into(),
            "-9.9999999999999999999999999999999999999E+125".into(),
            "1E-130".into(),
            "-1E-130".into(),
            format!("{i}"),
        ]),
    );
    item.insert(
        "bs".into(),
        AttributeValue::Bs(vec![vec![0], vec![1, 2, 3], vec![i as u8 ^ 0x5a, 7]]),
    );
    item.insert(
        "ss_signed".into(),
        AttributeValue::Ss(vec!["x𝟁".into(), "x\u{FFFD}".into()]),
    );
    item.insert("map".into(), AttributeValue::M(map));
    item.insert("list".into(), list);
    item.insert("empty_map".into(), AttributeValue::M(BTreeMap::new()));
    item.insert("empty_list".into(), AttributeValue::L(vec![]));
    item.insert(SIGNED_NAME.into(), s(format!("signé {i}")));
    item.insert(ENCRYPTED_NAME.into(), s(format!("名前 {i}")));
    item.insert(PRIVATE_USE_NAME.into(), n(format!("-{i}.25")));
    item.insert(ASTRAL_NAME.into(), AttributeValue::Bool(true));
    item.insert(UNSIGNED_NAME.into(), s("left as it is"));
    item
}

fn table() -> Arc<FakeDynamo> {
    let db = Arc::new(FakeDynamo::new());
    db.add_table(TableSpec::on_demand(
        TABLE,
        KeySchema {
            hash: KeyAttribute::new("pk", ScalarType::S),
            range: Some(KeyAttribute::new("sk", ScalarType::N)),
        },
    ));
    for i in 0..ITEMS {
        db.put_raw(TABLE, item_to_table_item(&plain_item(i)))
            .expect("store a plaintext item");
    }
    db
}

fn target(cfg: &TableConfig) -> Target {
    let keyring: Arc<dyn ddbguard_dbe::Keyring> = Arc::new(ours::keyring());
    Target {
        table: TABLE.into(),
        judge: Judge::new(VerifyPolicy::new(cfg.clone()), keyring.clone()).expect("policy"),
        keyring,
        kms_calls_per_item: 0.0,
        version_attribute: None,
        from_legacy: None,
    }
}

fn backfill_config() -> BackfillConfig {
    let mut c = BackfillConfig::new("backfill", "us-east-1", LEDGER, "interop-worker");
    c.segments = Some(3);
    c.page_size = 7;
    c.lease_duration = Duration::from_secs(3);
    c
}

fn check_suite(suite: AlgorithmSuite) {
    let cfg = config(suite);
    let label = suite_name(suite == AlgorithmSuite::EcdsaP384);
    runtime().block_on(async {
        let db = table();
        let report = ddbguard_backfill::run(
            db.clone(),
            target(&cfg),
            backfill_config(),
            |_| {},
            std::future::pending::<()>(),
        )
        .await
        .expect("backfill run");
        assert_eq!(report.completion, Completion::Finished, "{label}");
        assert_eq!(report.progress.scanned, ITEMS as u64, "{label}: scanned");
        assert_eq!(
            report.progress.count("encrypted"),
            ITEMS as u64,
            "{label}: outcomes {:?}",
            report.progress.outcomes
        );
        assert_eq!(report.failed() + report.skipped_after_conflicts(), 0, "{label}");

        let official = official::client(&cfg).await.expect("official item encryptor");
        let stored = db.items(TABLE);
        assert_eq!(stored.len(), ITEMS, "{label}: items in the table");
        let mut seen = std::collections::BTreeSet::new();
        for stored in stored {
            let encrypted = table_item_to_item(&stored).expect("a stored item converts");
            assert!(
                binary(&encrypted, HEADER).is_some(),
                "{label}: not encrypted: {:?}",
                encrypted.get("pk")
            );
            assert!(binary(&encrypted, FOOTER).is_some(), "{label}: no footer");
            let Some(AttributeValue::S(pk)) = encrypted.get("pk") else {
                panic!("{label}: no pk")
            };
            let i: usize = pk.trim_start_matches("customer-").parse().expect("pk number");
            assert!(seen.insert(i), "{label}: {pk} twice");
            // Encrypted attributes are no longer readable in the table.
            assert!(
                matches!(encrypted.get(ENCRYPTED_NAME), Some(AttributeValue::B(_))),
                "{label}: {ENCRYPTED_NAME} not encrypted in {pk}"
            );
            let decrypted = official::decrypt_with(&official, &encrypted)
                .await
                .unwrap_or_else(|e| panic!("{label}: aws-db-esdk cannot decrypt {pk}: {e}"));
            let expected = canon_item(&plain_item(i));
            let got = canon_item(&decrypted);
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                expected.keys().collect::<Vec<_>>(),
                "{label}: attribute names of {pk}"
            );
            for (name, value) in &expected {
                assert_eq!(got.get(name), Some(value), "{label}: {pk}.{name}");
            }
        }
        assert_eq!(seen.len(), ITEMS, "{label}");
    });
}

#[test]
fn backfilled_items_decrypt_with_the_official_crate_0x6701() {
    check_suite(AlgorithmSuite::EcdsaP384);
}

#[test]
fn backfilled_items_decrypt_with_the_official_crate_0x6700() {
    check_suite(AlgorithmSuite::HmacOnly);
}
