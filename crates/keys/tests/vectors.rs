//! The official DB-ESDK decrypt vectors (`aws-dbesdk-decrypt` manifests): every positive test must decrypt
//! to exactly its plaintext, every negative test must fail.
//!
//! Folder: the vendored copy in `tests/data/dbesdk/` (see its `NOTICE.md`), or `DDBGUARD_DBESDK_VECTORS` to try
//! another set. Missing vectors fail the test: a clone that cannot run it must not report it as passed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ddbguard_dbe::json::item_from_ddb_json;
use ddbguard_dbe::{
    AlgorithmSuite, AttributeValue, CryptoAction, Item, TableConfig, cmp_utf16, decrypt_item, normalize_number,
};
use ddbguard_keys::{BranchKey, HierarchyKeyring};
use serde_json::Value;
use zeroize::Zeroizing;

fn vectors_dir() -> PathBuf {
    let dir = std::env::var_os("DDBGUARD_DBESDK_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dbesdk"));
    assert!(
        dir.join("keys.json").is_file(),
        "DB-ESDK vectors not found at {} (keys.json missing)",
        dir.display()
    );
    dir
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn keyring(dir: &Path) -> HierarchyKeyring {
    let keys = read_json(&dir.join("keys.json"));
    let k = &keys["keys"]["static-branch-key-1"];
    let bytes = STANDARD.decode(k["branchKey"].as_str().unwrap()).unwrap();
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&bytes);
    let bk = BranchKey::new(
        k["key-id"].as_str().unwrap(),
        k["branchKeyVersion"].as_str().unwrap(),
        key,
    )
    .unwrap();
    HierarchyKeyring::with_static_key(bk)
}

/// The table configuration of one test (JsonConfig defaults: table GazelleVectorTable, key RecNum).
fn config(c: &Value) -> TableConfig {
    let mut cfg = TableConfig::new(
        c.get("logicalTableName")
            .and_then(Value::as_str)
            .unwrap_or("GazelleVectorTable"),
        c.get("partitionKeyName").and_then(Value::as_str).unwrap_or("RecNum"),
    );
    cfg.sort_key = c.get("sortKeyName").and_then(Value::as_str).map(str::to_owned);
    if let Some(actions) = c.get("attributeActionsOnEncrypt").and_then(Value::as_object) {
        cfg.attribute_actions = actions
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().parse::<CryptoAction>().unwrap()))
            .collect::<BTreeMap<_, _>>();
    }
    if let Some(list) = c.get("allowedUnsignedAttributes").and_then(Value::as_array) {
        cfg.allowed_unsigned_attributes = list
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect::<BTreeSet<_>>();
    }
    cfg.allowed_unsigned_attribute_prefix = c
        .get("allowedUnsignedAttributePrefix")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_owned);
    if let Some(id) = c.get("algorithmSuiteId").and_then(Value::as_str) {
        cfg.algorithm_suite = AlgorithmSuite::from_name(id).unwrap_or_else(|| panic!("unknown suite {id}"));
    }
    cfg
}

/// The vectors' plaintext notation (JsonItem.dfy): strings are S, JSON numbers are N, objects have one
/// DynamoDB type key; NS entries may be JSON numbers.
fn plain_value(v: &Value) -> AttributeValue {
    match v {
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::Object(o) => {
            assert_eq!(o.len(), 1, "attribute value objects have one type key: {v}");
            let (t, d) = o.iter().next().unwrap();
            match t.as_str() {
                "L" => AttributeValue::L(d.as_array().unwrap().iter().map(plain_value).collect()),
                "M" => AttributeValue::M(
                    d.as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), plain_value(v)))
                        .collect(),
                ),
                "NS" => AttributeValue::Ns(
                    d.as_array()
                        .unwrap()
                        .iter()
                        .map(|e| match e {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect(),
                ),
                "NULL" => AttributeValue::Null,
                _ => ddbguard_dbe::json::attribute_from_ddb_json(v, "plaintext").unwrap(),
            }
        }
        other => panic!("unsupported plaintext value {other}"),
    }
}

/// DdbItemJson.NormalizeItem: sets compared as sorted sets; numbers normalized if `numbers` (for the
/// expected plaintext; decrypted numbers are compared as stored).
fn normalize(v: &AttributeValue, numbers: bool) -> AttributeValue {
    let num = |n: &String| {
        if numbers {
            normalize_number(n).unwrap_or_else(|_| n.clone())
        } else {
            n.clone()
        }
    };
    match v {
        AttributeValue::N(n) => AttributeValue::N(num(n)),
        AttributeValue::Ns(s) => {
            let mut s: Vec<String> = s.iter().map(num).collect();
            s.sort_by(|a, b| cmp_utf16(a, b));
            AttributeValue::Ns(s)
        }
        AttributeValue::Ss(s) => {
            let mut s = s.clone();
            s.sort_by(|a, b| cmp_utf16(a, b));
            AttributeValue::Ss(s)
        }
        AttributeValue::Bs(s) => {
            let mut s = s.clone();
            s.sort();
            AttributeValue::Bs(s)
        }
        AttributeValue::M(m) => AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), normalize(v, numbers))).collect()),
        AttributeValue::L(l) => AttributeValue::L(l.iter().map(|v| normalize(v, numbers)).collect()),
        other => other.clone(),
    }
}

fn normalize_item(item: &Item, numbers: bool) -> Item {
    item.iter().map(|(k, v)| (k.clone(), normalize(v, numbers))).collect()
}

/// Every single-bit flip of the footer, one bit of the header's commitment and one bit of each encrypted
/// attribute must make a positive vector fail.
fn assert_tamper_fails(keyring: &HierarchyKeyring, cfg: &TableConfig, encrypted: &Item, what: &str) {
    let mut targets: Vec<(String, usize)> = vec![("aws_dbe_head".into(), 1), ("aws_dbe_foot".into(), 0)];
    for (name, v) in encrypted {
        if let AttributeValue::B(b) = v
            && !name.starts_with("aws_dbe_")
        {
            targets.push((name.clone(), b.len() / 2));
        }
    }
    for (name, at) in targets {
        let mut item = encrypted.clone();
        if let Some(AttributeValue::B(b)) = item.get_mut(&name) {
            let at = if name == "aws_dbe_head" { b.len() - at } else { at };
            b[at] ^= 0x01;
        }
        let r = futures::executor::block_on(decrypt_item(cfg, keyring, &item));
        assert!(r.is_err(), "{what}: flipping a bit of {name} was not detected");
    }
}

/// Encrypting the plaintext again with the test's configuration and the same hierarchical keyring must
/// decrypt back to it (configs that are only valid for decrypt are skipped; returns whether it ran).
fn assert_reencrypts(keyring: &HierarchyKeyring, cfg: &TableConfig, plain: &Item, what: &str) -> bool {
    if cfg.validate().is_err() || plain.keys().any(|k| !cfg.attribute_actions.contains_key(k)) {
        return false;
    }
    let enc = futures::executor::block_on(ddbguard_dbe::encrypt_item(cfg, keyring, plain))
        .unwrap_or_else(|e| panic!("{what}: re-encrypt failed: {e}"));
    let back = futures::executor::block_on(decrypt_item(cfg, keyring, &enc))
        .unwrap_or_else(|e| panic!("{what}: decrypt of re-encrypted item failed: {e}"));
    assert_eq!(normalize_item(&back.item, true), normalize_item(plain, true), "{what}");
    true
}

#[test]
fn official_decrypt_vectors() {
    let dir = vectors_dir();
    let keyring = keyring(&dir);
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("decrypt_") && n.ends_with(".json"))
        })
        .collect();
    manifests.sort();
    let (mut positive, mut negative, mut reencrypted) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for path in &manifests {
        let m = read_json(path);
        if m["manifest"]["type"] != "aws-dbesdk-decrypt" {
            continue;
        }
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for (id, t) in m["tests"].as_object().unwrap() {
            let cfg = config(&t["config"]);
            let encrypted = item_from_ddb_json(&t["encrypted"]).unwrap();
            let result = futures::executor::block_on(decrypt_item(&cfg, &keyring, &encrypted));
            match t["type"].as_str().unwrap() {
                "positive-decrypt" => {
                    positive += 1;
                    let want: Item = t["plaintext"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), plain_value(v)))
                        .collect();
                    match result {
                        Ok(d) if normalize_item(&d.item, false) == normalize_item(&want, true) => {
                            assert_tamper_fails(&keyring, &cfg, &encrypted, &format!("{file} #{id}"));
                            reencrypted +=
                                usize::from(assert_reencrypts(&keyring, &cfg, &d.item, &format!("{file} #{id}")));
                        }
                        Ok(d) => failures.push(format!("{file} #{id}: got {:?}, want {want:?}", d.item)),
                        Err(e) => failures.push(format!("{file} #{id}: {e} ({})", e.reason())),
                    }
                }
                "negative-decrypt" => {
                    negative += 1;
                    match result {
                        Err(e) => eprintln!("{file} #{id}: fails as expected: {} ({})", e, e.verdict()),
                        Ok(_) => failures.push(format!("{file} #{id}: negative test decrypted")),
                    }
                }
                other => panic!("{file} #{id}: unknown test type {other}"),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!(
        "{} manifests: {positive} positive, {negative} negative decrypt vectors passed; {reencrypted} re-encrypted",
        manifests.len()
    );
    assert!(reencrypted >= 30, "re-encrypted only {reencrypted} plaintexts");
    assert_eq!(positive, 38, "positive decrypt vectors");
    assert_eq!(negative, 4, "negative decrypt vectors");
}
