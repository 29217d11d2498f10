//! The legacy client's official vectors (tests/data/ddbec, see its NOTICE.md): every offline scenario decrypts
//! to its plaintext and verifies, and one flipped bit in a signed attribute, the signature or the material
//! description fails; the KMS scenarios (which need a real KMS key) pass the structure check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ddbguard_dbe::json::{attribute_from_ddb_json, item_from_ddb_json};
use ddbguard_dbe::{AttributeValue, Item, Verdict, normalize_number};
use ddbguard_ddbec::{
    AttributeActions, ContentKey, LegacyAction, MATERIAL_DESCRIPTION, MaterialDescription, MaterialsProvider,
    MostRecentProvider, SIGNATURE, SecretBytes, StaticProvider, TableContext, UnwrappingKey, VerificationKey,
    WrappedProvider, check_structure, decrypt_item, deserialize_attribute, serialize_attribute, string_to_sign,
};
use serde_json::Value;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ddbec")
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn uri(dir: &Path, v: &Value) -> PathBuf {
    dir.join(v.as_str().unwrap().strip_prefix("file://").unwrap())
}

fn action(name: &str) -> LegacyAction {
    match name {
        "encrypt" => LegacyAction::EncryptAndSign,
        "sign" => LegacyAction::SignOnly,
        "nothing" => LegacyAction::DoNothing,
        other => panic!("action {other}"),
    }
}

/// Sets compare as sets and numbers by value: the serialized form sorts and normalizes both.
fn canonical(v: &AttributeValue) -> AttributeValue {
    let num = |n: &String| normalize_number(n).unwrap();
    match v {
        AttributeValue::N(n) => AttributeValue::N(num(n)),
        AttributeValue::Ns(s) => {
            let mut s: Vec<String> = s.iter().map(num).collect();
            s.sort();
            AttributeValue::Ns(s)
        }
        AttributeValue::Ss(s) => {
            let mut s = s.clone();
            s.sort();
            AttributeValue::Ss(s)
        }
        AttributeValue::Bs(s) => {
            let mut s = s.clone();
            s.sort();
            AttributeValue::Bs(s)
        }
        AttributeValue::L(l) => AttributeValue::L(l.iter().map(canonical).collect()),
        AttributeValue::M(m) => AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), canonical(v))).collect()),
        other => other.clone(),
    }
}

/// The item in canonical form, without `version`: the Java mapper's version attribute is bumped on write, so
/// the clients' own acceptance tests leave it out of the comparison too.
fn canonical_item(item: &Item) -> Item {
    item.iter()
        .filter(|(k, _)| *k != "version")
        .map(|(k, v)| (k.clone(), canonical(v)))
        .collect()
}

struct Expected {
    item: Item,
    actions: AttributeActions,
}

struct Table {
    keys: Vec<String>,
    items: Vec<Expected>,
}

fn plaintexts(path: &Path, version: &str) -> BTreeMap<String, Table> {
    let p = json(path);
    let mut tables = BTreeMap::new();
    for (table, spec) in p["items"].as_object().unwrap() {
        let keys: Vec<String> = spec["index"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let mut items = Vec::new();
        for it in spec["items"].as_array().unwrap() {
            let a = &p["actions"][it["action"].as_str().unwrap()];
            let mut actions = AttributeActions::new(action(a["default"].as_str().unwrap()));
            for (name, act) in a["override"].as_object().into_iter().flatten() {
                actions = actions.with(name.clone(), action(act.as_str().unwrap()));
            }
            let actions = actions.with_key_attributes(keys.iter().map(String::as_str));
            let mut item = item_from_ddb_json(&it["attributes"]).unwrap();
            if !it["exact"].as_bool().unwrap_or(false) {
                for group in p["versions"][table.as_str()][version].as_array().into_iter().flatten() {
                    item.extend(item_from_ddb_json(&p["attributes"][group.as_str().unwrap()]).unwrap());
                }
            }
            items.push(Expected { item, actions });
        }
        tables.insert(table.clone(), Table { keys, items });
    }
    tables
}

fn key_bytes(keys: &Value, name: &str) -> Vec<u8> {
    STANDARD.decode(keys[name]["material"].as_str().unwrap()).unwrap()
}

fn provider(scenario: &Value, keys: &Value) -> Box<dyn MaterialsProvider> {
    let decrypt = scenario["keys"]["decrypt"].as_str().unwrap();
    let verify = scenario["keys"]["verify"].as_str().unwrap();
    let verification = match keys[verify]["type"].as_str().unwrap() {
        "symmetric" => VerificationKey::hmac(SecretBytes::from_slice(&key_bytes(keys, verify))).unwrap(),
        _ => VerificationKey::rsa_public_der(&key_bytes(keys, verify)).unwrap(),
    };
    match scenario["provider"].as_str().unwrap() {
        "static" => {
            let content = ContentKey::new(SecretBytes::from_slice(&key_bytes(keys, decrypt))).unwrap();
            Box::new(StaticProvider::new(Some(content), verification))
        }
        "wrapped" => {
            let unwrapping = match keys[decrypt]["type"].as_str().unwrap() {
                "symmetric" => UnwrappingKey::aes(SecretBytes::from_slice(&key_bytes(keys, decrypt))).unwrap(),
                _ => UnwrappingKey::rsa_pkcs8_der(&key_bytes(keys, decrypt)).unwrap(),
            };
            Box::new(WrappedProvider::new(unwrapping, verification))
        }
        other => panic!("provider {other}"),
    }
}

/// The most-recent provider of a metastore scenario: its records decrypted with the metastore's provider.
fn most_recent(dir: &Path, scenario: &Value, keys: &Value) -> Box<dyn MaterialsProvider> {
    let meta = &scenario["metastore"];
    let meta_provider = provider(meta, keys);
    let meta_table = meta["table_name"].as_str().unwrap();
    let actions = MostRecentProvider::record_actions();
    let records = json(&uri(dir, &meta["ciphertext"]));
    let mut mr = MostRecentProvider::new(scenario["material_name"].as_str().unwrap());
    for record in records[meta_table].as_array().unwrap() {
        let record = item_from_ddb_json(record).unwrap();
        let table = MostRecentProvider::record_table(meta_table);
        let plain = futures::executor::block_on(decrypt_item(table, &record, &actions, meta_provider.as_ref()))
            .expect("metastore record decrypts");
        let AttributeValue::N(version) = &plain.item["V"] else {
            panic!("V")
        };
        mr = mr.with_version(
            version.parse().unwrap(),
            MostRecentProvider::version_from_record(&plain.item).unwrap(),
        );
    }
    Box::new(mr)
}

fn flip(item: &Item, attribute: &str, bit: usize) -> Item {
    let mut item = item.clone();
    match item.get_mut(attribute) {
        Some(AttributeValue::B(b)) => b[bit / 8] ^= 1 << (bit % 8),
        Some(AttributeValue::S(s)) => {
            let mut bytes = s.clone().into_bytes();
            bytes[bit / 8] ^= 1 << (bit % 8);
            match String::from_utf8(bytes) {
                Ok(t) => *s = t,
                // A flip that makes the string invalid UTF-8 cannot be stored: use the next bit.
                Err(_) => return flip(&item, attribute, bit + 1),
            }
        }
        // Numbers and sets change their last digit's worth instead: a flipped bit there is not a valid number.
        Some(AttributeValue::N(n)) => *n = format!("{n}1"),
        Some(AttributeValue::Ns(set)) => set[0] = format!("{}1", set[0]),
        Some(AttributeValue::Ss(set)) => set[0].push('!'),
        Some(AttributeValue::Bs(set)) => set[0][0] ^= 1,
        Some(AttributeValue::Bool(b)) => *b = !*b,
        _ => panic!("flip {attribute}"),
    }
    item
}

fn bit_len(item: &Item, attribute: &str) -> usize {
    match &item[attribute] {
        AttributeValue::B(b) => b.len() * 8,
        AttributeValue::S(s) => s.len() * 8,
        _ => 1,
    }
}

#[test]
fn every_offline_scenario_decrypts_verifies_and_fails_when_one_bit_flips() {
    let dir = data().join("encrypted_item");
    let scenarios = json(&dir.join("scenarios.json"));
    let keys = json(&uri(&dir, &scenarios["keys"]));
    let (mut decrypted, mut scenarios_run, mut flips, mut structural) = (0, 0, 0, 0);
    for scenario in scenarios["scenarios"].as_array().unwrap() {
        let ciphertext = uri(&dir, &scenario["ciphertext"]);
        let tables = plaintexts(
            &uri(&dir, &scenario["plaintext"]),
            scenario["version"].as_str().unwrap(),
        );
        let items = json(&ciphertext);
        let network = scenario["network"].as_bool().unwrap();
        let provider = match (network, scenario["provider"].as_str().unwrap()) {
            (true, _) => None,
            (false, "most_recent") => Some(most_recent(&dir, scenario, &keys)),
            (false, _) => Some(provider(scenario, &keys)),
        };
        scenarios_run += 1;
        let mut first_of_scenario = true;
        for (table_name, list) in items.as_object().unwrap() {
            let table = &tables[table_name.as_str()];
            for stored in list.as_array().unwrap() {
                let stored = item_from_ddb_json(stored).unwrap();
                // Some Java files hold an extra item with no plaintext; the clients' own tests skip those too.
                let Some(expected) = table
                    .items
                    .iter()
                    .find(|e| table.keys.iter().all(|k| e.item.get(k) == stored.get(k)))
                else {
                    continue;
                };
                let ctx = TableContext {
                    table_name,
                    partition_key: table.keys.first().map(String::as_str),
                    sort_key: table.keys.get(1).map(String::as_str),
                };
                if !stored.contains_key(SIGNATURE) {
                    // The all-DO_NOTHING item is stored as it is (the Java mapper bumped its `version`): nothing to
                    // verify, and no legacy item to ddbguard.
                    assert!(!ddbguard_ddbec::is_legacy_item(&stored));
                    continue;
                }
                check_structure(&stored, &expected.actions).unwrap();
                structural += 1;
                let Some(provider) = provider.as_deref() else { continue };
                let run =
                    |item: &Item| futures::executor::block_on(decrypt_item(ctx, item, &expected.actions, provider));
                let plain = run(&stored).unwrap_or_else(|e| panic!("{}: {e}", ciphertext.display()));
                assert_eq!(
                    canonical_item(&plain.item),
                    canonical_item(&expected.item),
                    "{}",
                    ciphertext.display()
                );
                decrypted += 1;

                // One flipped bit: in every bit of the material description and the signature of a scenario's
                // first item (every 7th under RSA-OAEP, whose unwrap is slow), every 61st bit of the others', and
                // in one bit of each signed attribute.
                let rsa = scenario["keys"]["decrypt"] == "rsaEncPriv";
                let stride = match (first_of_scenario, rsa) {
                    (true, false) => 1,
                    (true, true) => 7,
                    (false, _) => 61,
                };
                first_of_scenario = false;
                for attr in [MATERIAL_DESCRIPTION, SIGNATURE] {
                    for bit in (0..bit_len(&stored, attr)).step_by(stride) {
                        let err = run(&flip(&stored, attr, bit)).expect_err("a flipped bit verifies");
                        assert_eq!(err.verdict(), Verdict::IntegrityFailed, "{attr} bit {bit}: {err}");
                        flips += 1;
                    }
                }
                for (name, _) in stored.iter().filter(|(n, _)| {
                    *n != MATERIAL_DESCRIPTION
                        && *n != SIGNATURE
                        && expected.actions.action(n) != LegacyAction::DoNothing
                }) {
                    let bit = bit_len(&stored, name) / 2;
                    let err = run(&flip(&stored, name, bit)).expect_err("a flipped bit verifies");
                    assert_eq!(err.verdict(), Verdict::IntegrityFailed, "{name}: {err}");
                    flips += 1;
                }
            }
        }
    }
    eprintln!("{scenarios_run} scenarios: {decrypted} items decrypted, {structural} checked, {flips} flips refused");
    assert_eq!(scenarios_run, 22);
    assert!(decrypted >= 250, "{decrypted} items decrypted");
    assert!(flips > 5_000, "{flips} flips");
    assert!(structural > decrypted, "KMS items checked structurally too");
}

#[test]
fn attribute_serialization_vectors() {
    for case in json(&data().join("serialize_attribute.json")).as_array().unwrap() {
        let value = attribute_from_ddb_json(&case["attribute"], "v").unwrap();
        let expected = STANDARD.decode(case["serialized"].as_str().unwrap()).unwrap();
        assert_eq!(serialize_attribute(&value).unwrap(), expected, "{}", case["attribute"]);
    }
    for case in json(&data().join("deserialize_attribute.json")).as_array().unwrap() {
        let value = attribute_from_ddb_json(&case["attribute"], "v").unwrap();
        let bytes = STANDARD.decode(case["serialized"].as_str().unwrap()).unwrap();
        assert_eq!(
            canonical(&deserialize_attribute(&bytes).unwrap()),
            canonical(&value),
            "{}",
            case["attribute"]
        );
    }
}

#[test]
fn material_description_vectors() {
    for case in json(&data().join("material_description.json")).as_array().unwrap() {
        let md = MaterialDescription::from_entries(
            case["material_description"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())),
        );
        let expected = STANDARD.decode(case["serialized"].as_str().unwrap()).unwrap();
        assert_eq!(md.serialize().unwrap(), expected);
        assert_eq!(MaterialDescription::parse(&expected).unwrap(), md);
    }
}

#[test]
fn string_to_sign_vectors() {
    for case in json(&data().join("string_to_sign.json")).as_array().unwrap() {
        let mut item = Item::new();
        let mut actions = AttributeActions::new(LegacyAction::DoNothing);
        for (name, spec) in case["item"].as_object().unwrap() {
            item.insert(name.clone(), attribute_from_ddb_json(&spec["value"], name).unwrap());
            actions = actions.with(name.clone(), action(spec["action"].as_str().unwrap()));
        }
        let expected = STANDARD.decode(case["string_to_sign"].as_str().unwrap()).unwrap();
        assert_eq!(
            string_to_sign(case["table"].as_str().unwrap(), &item, &actions).unwrap(),
            expected
        );
    }
}
