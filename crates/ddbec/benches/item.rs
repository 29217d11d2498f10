//! Verify µs/item of legacy items beside DB-ESDK items of the same plaintext: the 10-attribute item 5/7 of the
//! official vectors' v1 files (`tests/data/ddbec`), as the Python client wrote it under the static (HMAC), wrapped
//! (AESWrap + HMAC) and wrapped (RSA-OAEP + SHA256withRSA) providers, and as `ddbguard-dbe` writes it with a
//! raw AES keyring (suites 0x6700 and 0x6701; the keyring is dbe's bench keyring, the same work as
//! `RawAesKeyring`). Structure-only checks are timed too. Prints a table of mean µs/item after criterion's
//! own report. The direct KMS provider's per-item cost is the static one plus its KMS call (or data-key
//! cache hit) and one HKDF.
//!
//! `cargo bench -p ddbguard-ddbec --bench item`

#[path = "../../dbe/benches/keyring/mod.rs"]
mod keyring;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::Criterion;
use ddbguard_dbe::json::item_from_ddb_json;
use ddbguard_dbe::{AlgorithmSuite, CryptoAction, Item, TableConfig};
use ddbguard_ddbec::{
    AttributeActions, ContentKey, LegacyAction, MaterialsProvider, SecretBytes, StaticProvider, TableContext,
    UnwrappingKey, VerificationKey, WrappedProvider, check_structure, decrypt_item,
};
use keyring::BenchKeyring;
use zeroize::Zeroizing;

const TABLE: TableContext<'static> = TableContext {
    table_name: "TableName",
    partition_key: Some("hashKey"),
    sort_key: Some("rangeKey"),
};

fn data() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ddbec/encrypted_item")
}

fn json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data().join(rel)).expect("vector file")).expect("JSON")
}

/// Item 5/7 of a ciphertext file.
fn vector_item(file: &str) -> Item {
    let f = json(&format!("ciphertext/python/{file}.json"));
    let item = f["TableName"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["hashKey"]["N"] == "5" && i["rangeKey"]["N"] == "7")
        .expect("item 5/7");
    item_from_ddb_json(item).expect("item")
}

fn key(name: &str) -> Vec<u8> {
    STANDARD
        .decode(json("keys.json")[name]["material"].as_str().expect("key"))
        .expect("base64")
}

fn plaintext() -> Item {
    let p = json("plaintext.json");
    let mut item =
        item_from_ddb_json(&serde_json::json!({"hashKey": {"N": "5"}, "rangeKey": {"N": "7"}})).expect("keys");
    for group in ["base", "doubles"] {
        item.extend(item_from_ddb_json(&p["attributes"][group]).expect("attributes"));
    }
    item
}

fn mean_us(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let actions = AttributeActions::new(LegacyAction::EncryptAndSign)
        .with("version", LegacyAction::SignOnly)
        .with_key_attributes(["hashKey", "rangeKey"]);
    let hmac = || VerificationKey::hmac(SecretBytes::from_slice(&key("hmacKey"))).expect("HMAC key");
    let legacy: Vec<(&str, Item, Box<dyn MaterialsProvider>)> = vec![
        (
            "legacy static AES+HMAC",
            vector_item("static-aes-hmac-3"),
            Box::new(StaticProvider::new(
                Some(ContentKey::new(SecretBytes::from_slice(&key("aesKey"))).expect("AES key")),
                hmac(),
            )),
        ),
        (
            "legacy wrapped AESWrap+HMAC",
            vector_item("wrapped-aes-hmac-1"),
            Box::new(WrappedProvider::new(
                UnwrappingKey::aes(SecretBytes::from_slice(&key("aesKey"))).expect("KEK"),
                hmac(),
            )),
        ),
        (
            "legacy wrapped RSA-OAEP+RSA",
            vector_item("wrapped-rsa-rsa-2"),
            Box::new(WrappedProvider::new(
                UnwrappingKey::rsa_pkcs8_der(&key("rsaEncPriv")).expect("RSA key"),
                VerificationKey::rsa_public_der(&key("rsaSignPub")).expect("RSA public key"),
            )),
        ),
    ];

    let plain = plaintext();
    let keyring = BenchKeyring::new("bench", "bench-key", Zeroizing::new([7u8; 32]));
    let mut dbesdk = Vec::new();
    for (label, suite) in [
        ("DB-ESDK 0x6700", AlgorithmSuite::from_id(0x6700).expect("suite")),
        ("DB-ESDK 0x6701", AlgorithmSuite::from_id(0x6701).expect("suite")),
    ] {
        let mut cfg = TableConfig::new("TableName", "hashKey");
        cfg.sort_key = Some("rangeKey".into());
        cfg.algorithm_suite = suite;
        for name in plain.keys() {
            let action = match name.as_str() {
                "hashKey" | "rangeKey" | "version" => CryptoAction::SignOnly,
                _ => CryptoAction::EncryptAndSign,
            };
            cfg.attribute_actions.insert(name.clone(), action);
        }
        let enc = futures::executor::block_on(ddbguard_dbe::encrypt_item(&cfg, &keyring, &plain)).expect("encrypt");
        dbesdk.push((label, cfg, enc));
    }

    let mut rows = Vec::new();
    let mut g = c.benchmark_group("verify_item");
    for (label, item, provider) in &legacy {
        let run =
            || futures::executor::block_on(decrypt_item(TABLE, item, &actions, provider.as_ref())).expect("verify");
        assert_eq!(run().item.len(), plain.len());
        g.bench_function(*label, |b| b.iter(|| black_box(run())));
        let n = if label.contains("RSA") { 200 } else { 5_000 };
        rows.push((
            format!("{label}: structure"),
            mean_us(20_000, || {
                black_box(check_structure(item, &actions).expect("structure"));
            }),
        ));
        rows.push((
            format!("{label}: verify+decrypt"),
            mean_us(n, || {
                black_box(run());
            }),
        ));
    }
    for (label, cfg, item) in &dbesdk {
        let run = || futures::executor::block_on(ddbguard_dbe::decrypt_item(cfg, &keyring, item)).expect("verify");
        g.bench_function(*label, |b| b.iter(|| black_box(run())));
        rows.push((
            format!("{label}: structure"),
            mean_us(20_000, || {
                black_box(ddbguard_dbe::check_structure(cfg, item).expect("structure"));
            }),
        ));
        rows.push((
            format!("{label}: verify+decrypt"),
            mean_us(2_000, || {
                black_box(run());
            }),
        ));
    }
    g.finish();
    c.final_summary();

    println!("\n{:<52} {:>10}", "10-attribute item", "µs/item");
    for (label, us) in rows {
        println!("{label:<52} {us:>10.1}");
    }
}
