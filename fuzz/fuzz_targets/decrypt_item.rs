//! `decrypt_item` under a fixed raw AES key and table configuration, on an item built from the input:
//! DynamoDB JSON when the input parses as such, else the binary form of
//! `ddbguard_fuzz::item_from_binary` (one attribute of a valid encrypted base item replaced). It must
//! never panic; an item that decrypts must carry no `aws_dbe_*` attribute and its signed attributes
//! must match the header legend.
#![no_main]

use ddbguard_dbe::{Item, RESERVED_PREFIX, decrypt_item};
use libfuzzer_sys::fuzz_target;

fn item(data: &[u8]) -> Option<Item> {
    if data.first() == Some(&b'{') {
        let v: serde_json::Value = serde_json::from_slice(data).ok()?;
        return ddbguard_dbe::json::item_from_ddb_json(&v).ok();
    }
    ddbguard_fuzz::item_from_binary(data)
}

fuzz_target!(|data: &[u8]| {
    let Some(item) = item(data) else {
        return;
    };
    let keyring = ddbguard_fuzz::keyring();
    let config = ddbguard_fuzz::config(false);
    // The raw AES keyring never awaits I/O: the future completes on its first poll.
    if let Ok(decrypted) = futures::executor::block_on(decrypt_item(&config, &keyring, &item)) {
        assert!(decrypted.item.keys().all(|k| !k.starts_with(RESERVED_PREFIX)));
        assert_eq!(decrypted.actions.len(), decrypted.header.legend.len());
    }
});
