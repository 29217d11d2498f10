//! The legacy DynamoDB Encryption Client format (`ddbguard-ddbec`). Byte 0 picks what the rest is:
//! - `0`: a material description: `MaterialDescription::parse` never panics, and a parsed description
//!   serializes to bytes that parse back to the same description;
//! - `1`: a serialized attribute: `deserialize_attribute` never panics, and serialize∘deserialize is a fixed
//!   point after one round (numbers normalize, sets and maps sort);
//! - anything else: the new `*amzn-ddb-map-desc*` (byte 0 odd) or `*amzn-ddb-map-sig*` (even) of a valid
//!   item of the official vectors, or a whole DynamoDB JSON item if the input starts with `{`, decrypted
//!   with the vectors' static keys: never panics, and a changed item that still verifies decrypts to the base
//!   item's plaintext (the description is not signed: dropping the informational `amzn-ddb-map-signingAlg`,
//!   which Java static items lack anyway, changes nothing, and nothing that changes the plaintext may pass).
#![no_main]

use std::sync::OnceLock;

use ddbguard_dbe::json::item_from_ddb_json;
use ddbguard_dbe::{AttributeValue, Item};
use ddbguard_ddbec::{
    AttributeActions, ContentKey, LegacyAction, MATERIAL_DESCRIPTION, MaterialDescription, SIGNATURE, SecretBytes,
    StaticProvider, TableContext, VerificationKey, decrypt_item, deserialize_attribute, serialize_attribute,
};
use libfuzzer_sys::fuzz_target;

/// The official vectors' `ciphertext/python/static-aes-hmac-1.json`: its item 5/7 (table `TableName`, keys
/// `hashKey`/`rangeKey`, action `encrypt`) is the base, under the vectors' `aesKey` and `hmacKey`.
const VECTORS: &str =
    include_str!("../../crates/ddbec/tests/data/ddbec/encrypted_item/ciphertext/python/static-aes-hmac-1.json");

fn base() -> &'static Item {
    static ITEM: OnceLock<Item> = OnceLock::new();
    ITEM.get_or_init(|| {
        let file: serde_json::Value = serde_json::from_str(VECTORS).expect("vector JSON");
        let items = file["TableName"].as_array().expect("TableName items");
        let base = items
            .iter()
            .find(|i| i["hashKey"]["N"] == "5" && i["rangeKey"]["N"] == "7")
            .expect("item 5/7");
        item_from_ddb_json(base).expect("base item")
    })
}

fn provider() -> StaticProvider {
    StaticProvider::new(
        Some(ContentKey::new(SecretBytes::from_slice(&(0u8..16).collect::<Vec<_>>())).expect("AES key")),
        VerificationKey::hmac(SecretBytes::from_slice(&(0u8..8).collect::<Vec<_>>())).expect("HMAC key"),
    )
}

fn actions() -> AttributeActions {
    AttributeActions::new(LegacyAction::EncryptAndSign)
        .with("version", LegacyAction::SignOnly)
        .with_key_attributes(["hashKey", "rangeKey"])
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => {
            if let Ok(md) = MaterialDescription::parse(rest) {
                let bytes = md.serialize().expect("a parsed description serializes");
                assert_eq!(MaterialDescription::parse(&bytes).expect("re-parses"), md);
            }
        }
        1 => {
            if let Ok(v) = deserialize_attribute(rest)
                && let Ok(once) = serialize_attribute(&v)
            {
                let again = deserialize_attribute(&once).expect("serialized value deserializes");
                assert_eq!(serialize_attribute(&again).expect("serializes"), once);
            }
        }
        _ => {
            let item = if data.first() == Some(&b'{') {
                let Ok(v) = serde_json::from_slice(data) else { return };
                let Ok(item) = item_from_ddb_json(&v) else { return };
                item
            } else {
                let mut item = base().clone();
                let attr = if mode % 2 == 1 { MATERIAL_DESCRIPTION } else { SIGNATURE };
                item.insert(attr.to_owned(), AttributeValue::B(rest.to_vec()));
                item
            };
            let table = TableContext {
                table_name: "TableName",
                partition_key: Some("hashKey"),
                sort_key: Some("rangeKey"),
            };
            let provider = provider();
            // The static provider never awaits: the future completes on its first poll.
            let result = futures::executor::block_on(decrypt_item(table, &item, &actions(), &provider));
            if let Ok(decrypted) = result
                && data.first() != Some(&b'{')
            {
                let base = futures::executor::block_on(decrypt_item(table, base(), &actions(), &provider))
                    .expect("the base item verifies");
                assert_eq!(
                    decrypted.item, base.item,
                    "a changed item verified to another plaintext"
                );
            }
        }
    }
});
