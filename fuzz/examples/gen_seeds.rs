//! Writes the committed seed corpora under fuzz/seeds/ (run from fuzz/, see README.md):
//!
//!     cargo run --example gen_seeds -- /path/to/testdata/dbesdk
//!
//! The header and footer seeds come from the `aws_dbe_head` / `aws_dbe_foot` of the official decrypt
//! vectors (the `decrypt_*.json` files in the given directory) and of fresh ddbguard records; value
//! seeds are serialized plaintext values; decrypt_item seeds are fresh records for both suites and
//! both record versions (DynamoDB JSON) plus the binary form of `item_from_binary` built from them.
//! Records get a random message id, so every run writes different (equally valid) seeds.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ddbguard_dbe::{AlgorithmSuite, AttributeValue, Footer, Header, Item, encrypt_item, json};
use ddbguard_fuzz::value::AttributeValue as V;

fn plaintext(v2: bool) -> Item {
    let s = |x: &str| AttributeValue::S(x.to_owned());
    let n = |x: &str| AttributeValue::N(x.to_owned());
    let mut item = Item::new();
    item.insert("pk".into(), s("partition-1"));
    item.insert("sk".into(), n("42"));
    item.insert("data".into(), s("secret data ✓"));
    item.insert("num".into(), n("-12.50E3"));
    item.insert(
        "nested".into(),
        AttributeValue::M(BTreeMap::from([
            ("list".to_owned(), AttributeValue::L(vec![n("1"), AttributeValue::Null, AttributeValue::Bool(true)])),
            ("bin".to_owned(), AttributeValue::B(vec![0, 1, 2, 255])),
        ])),
    );
    item.insert("sets".into(), AttributeValue::Ss(vec!["b".into(), "a".into(), "😀".into()]));
    item.insert("flag".into(), AttributeValue::Bool(false));
    item.insert("plain".into(), AttributeValue::Ns(vec!["3".into(), "1.0".into()]));
    item.insert("unsigned".into(), s("not authenticated"));
    if v2 {
        item.insert("ctx".into(), s("in the context"));
    }
    item
}

fn b(item: &Item, name: &str) -> Vec<u8> {
    match &item[name] {
        AttributeValue::B(b) => b.clone(),
        other => panic!("{name} is {}", other.type_name()),
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let vectors = std::env::args().nth(1).expect("usage: gen_seeds <dir with decrypt_*.json>");
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for t in ["header", "footer", "value", "decrypt_item"] {
        let _ = fs::remove_dir_all(seeds.join(t));
    }

    // Fresh records: suite 0x6700 and 0x6701 with record version 1, and 0x6700 with version 2.
    let keyring = ddbguard_fuzz::keyring();
    let mut records = Vec::new();
    for (name, suite, v2) in [
        ("item-6700-v1", AlgorithmSuite::HmacOnly, false),
        ("item-6701-v1", AlgorithmSuite::EcdsaP384, false),
        ("item-6700-v2", AlgorithmSuite::HmacOnly, true),
    ] {
        let mut config = ddbguard_fuzz::config(v2);
        config.algorithm_suite = suite;
        let item = futures::executor::block_on(encrypt_item(&config, &keyring, &plaintext(v2))).unwrap();
        let check = futures::executor::block_on(ddbguard_dbe::decrypt_item(&ddbguard_fuzz::config(false), &keyring, &item))
            .expect("a fresh record decrypts under the fuzz configuration");
        assert_eq!(check.item.len(), plaintext(v2).len());
        let text = serde_json::to_string_pretty(&json::item_to_ddb_json(&item)).unwrap();
        write(&seeds.join("decrypt_item"), &format!("{name}.json"), format!("{text}\n").as_bytes());
        records.push((name, item));
    }
    // Binary form: selector (item index | attribute index << 2) followed by the original value.
    for (i, (name, item)) in records.iter().enumerate() {
        for (a, attr) in ddbguard_fuzz::MUTABLE.iter().enumerate() {
            if i > 0 && a > 1 {
                continue;
            }
            let mut bytes = vec![(i | a << 2) as u8];
            bytes.extend(b(item, attr));
            write(&seeds.join("decrypt_item"), &format!("{name}-{attr}.bin"), &bytes);
        }
    }

    // Headers and footers: official vectors (first test of each file) and the fresh records.
    let mut pairs: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut files: Vec<_> = fs::read_dir(&vectors)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("decrypt_"))
        .collect();
    files.sort();
    for path in files {
        let doc: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let mut flavors = BTreeSet::new();
        for (id, test) in doc["tests"].as_object().unwrap() {
            let Some(enc) = test.get("encrypted") else { continue };
            let field = |n: &str| enc[n]["B"].as_str().map(|s| STANDARD.decode(s).unwrap());
            let (Some(head), Some(foot)) = (field("aws_dbe_head"), field("aws_dbe_foot")) else { continue };
            let Ok(h) = Header::parse(&head) else { continue };
            // One seed per file and (version, suite, EDK count) shape.
            if flavors.insert((h.version, h.suite.flavor(), h.edks.len())) {
                pairs.push((format!("{stem}-{id}"), head, foot));
            }
        }
    }
    for (name, item) in &records {
        pairs.push((name.to_string(), b(item, "aws_dbe_head"), b(item, "aws_dbe_foot")));
    }
    for (name, head, foot) in &pairs {
        let h = Header::parse(head).unwrap();
        assert_eq!(h.encode().unwrap(), *head);
        Footer::parse(foot, &h).unwrap();
        write(&seeds.join("header"), &format!("{name}.bin"), head);
        // The footer target's selector: bit 0 the suite, bits 1-2 the EDK count minus one.
        if h.edks.len() <= 4 {
            let mut bytes = vec![(h.suite.signs() as usize | (h.edks.len() - 1) << 1) as u8];
            bytes.extend(foot);
            write(&seeds.join("footer"), &format!("{name}.bin"), &bytes);
        }
    }

    // Values: type id then value bytes, one per type, plus a few numbers as text.
    let s = |x: &str| V::S(x.to_owned());
    let values = [
        ("null", V::Null),
        ("string", s("héllo")),
        ("number", V::N("-1.5E-3".into())),
        ("bool", V::Bool(true)),
        ("binary", V::B(vec![0, 255, 7])),
        ("string-set", V::Ss(vec!["b".into(), "a".into()])),
        ("number-set", V::Ns(vec!["10".into(), "2".into()])),
        ("binary-set", V::Bs(vec![vec![2], vec![1, 0]])),
        ("map", V::M(BTreeMap::from([("k".to_owned(), V::L(vec![s("x"), V::N("0".into())])), ("a".to_owned(), V::Null)]))),
        ("list", V::L(vec![V::M(BTreeMap::from([("z".to_owned(), V::Bool(false))])), V::Bs(vec![vec![9]])])),
    ];
    for (name, v) in values {
        let mut bytes = v.type_id().to_be_bytes().to_vec();
        bytes.extend(ddbguard_fuzz::value_serialize(&v).unwrap());
        write(&seeds.join("value"), &format!("{name}.bin"), &bytes);
    }
    for (i, n) in ["0.000001230", "-9.9999999999999999999999999999999999999E+125", "1e-130"].iter().enumerate() {
        write(&seeds.join("value"), &format!("number-text-{i}.txt"), n.as_bytes());
    }
    println!("seeds written to {}", seeds.display());
}
