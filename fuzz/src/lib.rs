//! Shared pieces of the fuzz targets: the fixed table configuration and key, the base encrypted items
//! the `decrypt_item` target mutates, and the crate-private value codec of ddbguard-dbe.
#![allow(dead_code, unreachable_pub, missing_debug_implementations)]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use ddbguard_dbe::{CryptoAction, Item, TableConfig};
use ddbguard_keys::RawAesKeyring;
use zeroize::Zeroizing;

/// The typed value codec (`value.rs`, with `number.rs` it depends on) is `pub(crate)` in ddbguard-dbe,
/// so its source files are compiled in here as modules: the same code, not a copy.
/// `crate::error::DbeError` resolves to the real error type.
#[path = "../../crates/dbe/src/number.rs"]
mod number;
#[path = "../../crates/dbe/src/value.rs"]
pub mod value;
mod error {
    pub(crate) use ddbguard_dbe::DbeError;
}

pub const TABLE: &str = "fuzz_table";
pub const KEY_NAMESPACE: &str = "fuzz";
pub const KEY_NAME: &str = "fuzz-key";
pub const WRAPPING_KEY: [u8; 32] = [0x42; 32];

/// The raw AES keyring every target uses.
pub fn keyring() -> RawAesKeyring {
    RawAesKeyring::new(KEY_NAMESPACE, KEY_NAME, Zeroizing::new(WRAPPING_KEY))
}

/// Table configuration. `v2` puts `ctx` in the encryption context (record version 2), which requires
/// the key attributes to be SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT too. Decrypt follows the header
/// legend, so either configuration decrypts every base item.
pub fn config(v2: bool) -> TableConfig {
    let mut c = TableConfig::new(TABLE, "pk");
    c.sort_key = Some("sk".to_owned());
    let key_action = if v2 { CryptoAction::SignAndIncludeInEncryptionContext } else { CryptoAction::SignOnly };
    c.attribute_actions.insert("pk".to_owned(), key_action);
    c.attribute_actions.insert("sk".to_owned(), key_action);
    for name in ["data", "num", "nested", "sets", "flag", "nothing"] {
        c.attribute_actions.insert(name.to_owned(), CryptoAction::EncryptAndSign);
    }
    c.attribute_actions.insert("plain".to_owned(), CryptoAction::SignOnly);
    if v2 {
        c.attribute_actions.insert("ctx".to_owned(), CryptoAction::SignAndIncludeInEncryptionContext);
    }
    c.attribute_actions.insert("unsigned".to_owned(), CryptoAction::DoNothing);
    c.allowed_unsigned_attributes = BTreeSet::from(["unsigned".to_owned()]);
    c
}

/// Base encrypted items (DynamoDB JSON), as written by `examples/gen_seeds.rs`.
pub const BASE_ITEMS: [&str; 3] = [
    include_str!("../seeds/decrypt_item/item-6700-v1.json"),
    include_str!("../seeds/decrypt_item/item-6701-v1.json"),
    include_str!("../seeds/decrypt_item/item-6700-v2.json"),
];

/// The parsed base items (skipping any that do not parse, e.g. before the seeds are generated).
pub fn base_items() -> &'static [Item] {
    static ITEMS: OnceLock<Vec<Item>> = OnceLock::new();
    ITEMS.get_or_init(|| {
        BASE_ITEMS
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .filter_map(|v| ddbguard_dbe::json::item_from_ddb_json(&v).ok())
            .filter(|i: &Item| !i.is_empty())
            .collect()
    })
}

/// Attributes of a base item the binary input form can replace, by the selector's bits 2-3.
pub const MUTABLE: [&str; 4] = ["aws_dbe_head", "aws_dbe_foot", "data", "nested"];

/// Binary input form: byte 0 picks the base item (bits 0-1) and the attribute (bits 2-3); the rest is
/// that attribute's new `B` value.
pub fn item_from_binary(data: &[u8]) -> Option<Item> {
    let (&selector, rest) = data.split_first()?;
    let items = base_items();
    if items.is_empty() {
        return None;
    }
    let mut item = items[usize::from(selector & 3) % items.len()].clone();
    let name = MUTABLE[usize::from((selector >> 2) & 3)];
    item.insert(name.to_owned(), ddbguard_dbe::AttributeValue::B(rest.to_vec()));
    Some(item)
}

/// `AttributeValue::deserialize` of the crate-private codec (`Err` carries the reason).
pub fn value_deserialize(type_id: u16, bytes: &[u8]) -> Result<value::AttributeValue, String> {
    value::AttributeValue::deserialize(type_id, bytes).map_err(|e| format!("{e:?}"))
}

/// `AttributeValue::deserialize_owned` of the crate-private codec.
pub fn value_deserialize_owned(type_id: u16, bytes: Vec<u8>) -> Result<value::AttributeValue, String> {
    value::AttributeValue::deserialize_owned(type_id, bytes).map_err(|e| format!("{e:?}"))
}

/// `AttributeValue::serialize` of the crate-private codec (value bytes, without the type id).
pub fn value_serialize(v: &value::AttributeValue) -> Result<Vec<u8>, String> {
    v.serialize().map_err(|e| format!("{e:?}"))
}
