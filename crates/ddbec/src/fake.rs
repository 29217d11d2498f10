//! A legacy item writer for tests (feature `fake`): ddbguard never writes the legacy format, but its tests
//! need items under keys they choose (a KMS data key from a fake KMS, a tampered attribute).

use std::collections::BTreeMap;

use aws_lc_rs::cipher::{AES_128, AES_256, DecryptionContext, PaddedBlockEncryptingKey, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ddbguard_dbe::{AttributeValue, Item};

use crate::actions::{AttributeActions, LegacyAction};
use crate::crypto::{DecryptionMaterials, VerificationKey};
use crate::error::DdbecError;
use crate::item::{TableContext, string_to_sign};
use crate::kms::{DirectKmsDescription, KEY_COVERAGE, KMS_WRAPPING_ALGORITHM};
use crate::material::{CBC_PKCS5_PADDING, MaterialDescription, keys};
use crate::provider::ProviderContext;
use crate::serialize::serialize_attribute;
use crate::{MATERIAL_DESCRIPTION, SIGNATURE};

/// Encrypts and signs `plain` as the clients do, with an HMAC key and an AES-128/256 content key.
pub fn seal_item(
    table_name: &str,
    plain: &Item,
    actions: &AttributeActions,
    content_key: &[u8],
    hmac_key: &[u8],
    description: &MaterialDescription,
) -> Result<Item, DdbecError> {
    let mut item = Item::new();
    for (name, value) in plain {
        if actions.action(name) != LegacyAction::EncryptAndSign {
            item.insert(name.clone(), value.clone());
            continue;
        }
        let algorithm = if content_key.len() == 16 { &AES_128 } else { &AES_256 };
        let key = UnboundCipherKey::new(algorithm, content_key).map_err(|_| DdbecError::Crypto("AES key"))?;
        let key = PaddedBlockEncryptingKey::cbc_pkcs7(key).map_err(|_| DdbecError::Crypto("AES-CBC key"))?;
        let mut buf = serialize_attribute(value)?;
        let ctx = key
            .encrypt(&mut buf)
            .map_err(|_| DdbecError::Crypto("AES-CBC encrypt"))?;
        let DecryptionContext::Iv128(iv) = ctx else {
            return Err(DdbecError::Crypto("AES-CBC IV"));
        };
        let iv: FixedLength<16> = iv;
        let mut stored = iv.as_ref().to_vec();
        stored.extend_from_slice(&buf);
        item.insert(name.clone(), AttributeValue::B(stored));
    }
    let mut entries: BTreeMap<String, String> = description
        .entries()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    entries.insert(keys::SYMMETRIC_MODE.to_owned(), CBC_PKCS5_PADDING.to_owned());
    let data = string_to_sign(table_name, &item, actions)?;
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, hmac_key),
        &data,
    );
    item.insert(SIGNATURE.to_owned(), AttributeValue::B(tag.as_ref().to_vec()));
    item.insert(
        MATERIAL_DESCRIPTION.to_owned(),
        AttributeValue::B(MaterialDescription::from_entries(entries).serialize()?),
    );
    Ok(item)
}

/// The description the direct KMS provider writes around a `CiphertextBlob`.
pub fn direct_kms_description(ciphertext_blob: &[u8]) -> MaterialDescription {
    MaterialDescription::from_entries([
        (keys::WRAPPING_ALGORITHM, KMS_WRAPPING_ALGORITHM),
        (keys::CONTENT_ALGORITHM, "AES/256"),
        (keys::ITEM_SIGNATURE_ALGORITHM, "HmacSHA256/256"),
        (keys::KMS_CONTEXT_ATTRIBUTES, KEY_COVERAGE),
    ])
    .with(keys::WRAPPED_KEY, STANDARD.encode(ciphertext_blob))
}

/// The encryption context the direct KMS provider binds an item's data key to (what a fake KMS must be given
/// when it makes the `CiphertextBlob`).
pub fn direct_kms_context(table: TableContext<'_>, plain: &Item) -> Result<BTreeMap<String, String>, DdbecError> {
    let md = direct_kms_description(b"-");
    let ctx = ProviderContext {
        table,
        description: &md,
        item: plain,
    };
    DirectKmsDescription::parse(&md)?.encryption_context(&ctx)
}

/// Seals `plain` as the direct KMS provider does with `data_key` (the plaintext of `ciphertext_blob`).
pub fn seal_direct_kms(
    table: TableContext<'_>,
    plain: &Item,
    actions: &AttributeActions,
    data_key: &[u8],
    ciphertext_blob: &[u8],
) -> Result<Item, DdbecError> {
    let md = direct_kms_description(ciphertext_blob);
    let DecryptionMaterials {
        decryption_key,
        verification_key,
    } = DirectKmsDescription::parse(&md)?.derive(data_key)?;
    let (Some(content), VerificationKey::Hmac(mac)) = (decryption_key, verification_key) else {
        return Err(DdbecError::Crypto("direct KMS derivation"));
    };
    seal_item(
        table.table_name,
        plain,
        actions,
        content.expose_for_tests(),
        mac.expose(),
        &md,
    )
}

/// Seals `plain` as the most-recent provider does under version `version` of `material_name`: a fresh AES-256
/// content key wrapped (AESWrap) under the version's `wrapping_key`, the item signed with its `hmac_key`.
pub fn seal_most_recent(
    table_name: &str,
    plain: &Item,
    actions: &AttributeActions,
    material_name: &str,
    version: u64,
    wrapping_key: &[u8],
    hmac_key: &[u8],
) -> Result<Item, DdbecError> {
    use aws_lc_rs::key_wrap::{AES_128, AES_256, AesKek, KeyWrap};
    let mut content_key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut content_key).map_err(|_| DdbecError::Crypto("random content key"))?;
    let cipher = if wrapping_key.len() == 16 { &AES_128 } else { &AES_256 };
    let kek = AesKek::new(cipher, wrapping_key).map_err(|_| DdbecError::Crypto("AES key-wrap key"))?;
    let mut wrapped = vec![0u8; content_key.len() + 8];
    let len = kek
        .wrap(&content_key, &mut wrapped)
        .map_err(|_| DdbecError::Crypto("AES key wrap"))?
        .len();
    wrapped.truncate(len);
    let description = MaterialDescription::from_entries([
        (keys::WRAPPING_ALGORITHM, crate::crypto::wrapping::AES_WRAP),
        (keys::CONTENT_ALGORITHM, "AES/256"),
    ])
    .with(keys::WRAPPED_KEY, STANDARD.encode(&wrapped))
    .with(keys::META_ID, format!("{material_name}#{version}"));
    seal_item(table_name, plain, actions, &content_key, hmac_key, &description)
}
