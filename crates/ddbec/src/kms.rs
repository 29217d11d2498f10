//! The direct AWS KMS provider's item side, without I/O: which description entries it writes, the KMS
//! encryption context its data key is bound to, and the keys derived from the data key. The KMS call itself
//! is `ddbguard-keys`' (`kms::ddbec`).
//!
//! The client asks KMS for a 256-bit data key under the configured key, with the encryption context
//! `{"*amzn-ddb-env-alg*": <amzn-ddb-env-alg>, "*amzn-ddb-sig-alg*": <amzn-ddb-sig-alg>,
//! "*aws-kms-table*": <table>, <partition key name>: <value>, <sort key name>: <value>}` (key values: S and N as
//! stored, B in base64), stores the `CiphertextBlob` in `amzn-ddb-env-key`, and derives with HKDF-SHA-256 (no
//! salt) the content key (info `Encryption`, the `amzn-ddb-env-alg` length) and the HMAC key (info `Signing`,
//! the `amzn-ddb-sig-alg` length).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ddbguard_dbe::AttributeValue;
use zeroize::Zeroizing;

use crate::crypto::{ContentKey, DecryptionMaterials, SecretBytes, VerificationKey};
use crate::error::DdbecError;
use crate::material::{KeyInfo, MaterialDescription, keys};
use crate::provider::{ProviderContext, decode_base64, mismatch};

/// The `amzn-ddb-wrap-alg` value of the direct KMS provider.
pub const KMS_WRAPPING_ALGORITHM: &str = "kms";
/// The `aws-kms-ec-attr` value: the key attributes are in the encryption context.
pub const KEY_COVERAGE: &str = "*keys*";
/// The encryption context key of the table name.
pub const TABLE_NAME_CONTEXT_KEY: &str = "*aws-kms-table*";
const DEFAULT_CONTENT: &str = "AES/256";
const DEFAULT_SIGNING: &str = "HmacSHA256/256";

/// The direct KMS provider's entries of one item's description, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectKmsDescription {
    /// The KMS `CiphertextBlob` of the data key.
    pub ciphertext_blob: Vec<u8>,
    /// `amzn-ddb-env-alg` as written (part of the encryption context).
    pub content_description: String,
    /// `amzn-ddb-sig-alg` as written (part of the encryption context).
    pub signing_description: String,
    content_bytes: usize,
    signing_bytes: usize,
}

impl DirectKmsDescription {
    /// Checks and extracts the entries; fails for an item another provider wrote.
    pub fn parse(description: &MaterialDescription) -> Result<DirectKmsDescription, DdbecError> {
        if description.get(keys::WRAPPING_ALGORITHM) != Some(KMS_WRAPPING_ALGORITHM) {
            return Err(mismatch(
                keys::WRAPPING_ALGORITHM,
                "not written by the direct KMS provider",
            ));
        }
        if description
            .get(keys::KMS_CONTEXT_ATTRIBUTES)
            .is_some_and(|v| v != KEY_COVERAGE)
        {
            return Err(mismatch(keys::KMS_CONTEXT_ATTRIBUTES, "unknown key coverage"));
        }
        let content_description = description.get(keys::CONTENT_ALGORITHM).unwrap_or(DEFAULT_CONTENT);
        let content = KeyInfo::parse(content_description)?;
        let content_bytes = match (content.algorithm, content.bits.unwrap_or(256)) {
            ("AES", bits @ (128 | 192 | 256)) => bits / 8,
            _ => return Err(mismatch(keys::CONTENT_ALGORITHM, "not AES-128, -192 or -256")),
        };
        let signing_description = description
            .get(keys::ITEM_SIGNATURE_ALGORITHM)
            .unwrap_or(DEFAULT_SIGNING);
        let signing = KeyInfo::parse(signing_description)?;
        let signing_bytes = match (signing.algorithm, signing.bits.unwrap_or(256)) {
            // HKDF-SHA-256 yields at most 255 blocks of 32 bytes.
            ("HmacSHA256", bits) if bits % 8 == 0 && (128..=8160).contains(&bits) => bits / 8,
            _ => {
                return Err(mismatch(
                    keys::ITEM_SIGNATURE_ALGORITHM,
                    "not HmacSHA256 of a usable length",
                ));
            }
        };
        let blob = description
            .get(keys::WRAPPED_KEY)
            .ok_or_else(|| mismatch(keys::WRAPPED_KEY, "missing"))?;
        Ok(DirectKmsDescription {
            ciphertext_blob: decode_base64(blob, keys::WRAPPED_KEY)?,
            content_description: content_description.to_owned(),
            signing_description: signing_description.to_owned(),
            content_bytes,
            signing_bytes,
        })
    }

    /// The encryption context the data key is bound to (see the module doc). A key attribute of a type other
    /// than S, N or B cannot have been in the context: such an item is refused.
    pub fn encryption_context(&self, ctx: &ProviderContext<'_>) -> Result<BTreeMap<String, String>, DdbecError> {
        let mut ec = BTreeMap::new();
        ec.insert(
            format!("*{}*", keys::CONTENT_ALGORITHM),
            self.content_description.clone(),
        );
        ec.insert(
            format!("*{}*", keys::ITEM_SIGNATURE_ALGORITHM),
            self.signing_description.clone(),
        );
        for name in [ctx.table.partition_key, ctx.table.sort_key].into_iter().flatten() {
            let value = match ctx.item.get(name) {
                None => continue,
                Some(AttributeValue::S(s) | AttributeValue::N(s)) => s.clone(),
                Some(AttributeValue::B(b)) => STANDARD.encode(b),
                Some(_) => {
                    return Err(DdbecError::BadSerialization {
                        attribute: name.to_owned(),
                        what: "a key attribute must be S, N or B",
                    });
                }
            };
            ec.insert(name.to_owned(), value);
        }
        ec.insert(TABLE_NAME_CONTEXT_KEY.to_owned(), ctx.table.table_name.to_owned());
        Ok(ec)
    }

    /// The content and HMAC keys derived from the decrypted data key.
    pub fn derive(&self, data_key: &[u8]) -> Result<DecryptionMaterials, DdbecError> {
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(None, data_key);
        let mut enc = Zeroizing::new(vec![0u8; self.content_bytes]);
        hkdf.expand(b"Encryption", &mut enc)
            .map_err(|_| DdbecError::Crypto("HKDF expand"))?;
        let mut mac = Zeroizing::new(vec![0u8; self.signing_bytes]);
        hkdf.expand(b"Signing", &mut mac)
            .map_err(|_| DdbecError::Crypto("HKDF expand"))?;
        Ok(DecryptionMaterials {
            decryption_key: Some(ContentKey::new(SecretBytes::new(enc))?),
            verification_key: VerificationKey::hmac(SecretBytes::new(mac))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use ddbguard_dbe::Item;

    use super::*;
    use crate::item::TableContext;

    fn description(extra: &[(&str, &str)]) -> MaterialDescription {
        let mut entries = vec![
            (keys::WRAPPING_ALGORITHM, KMS_WRAPPING_ALGORITHM),
            (keys::CONTENT_ALGORITHM, "AES/256"),
            (keys::ITEM_SIGNATURE_ALGORITHM, "HmacSHA256/256"),
            (keys::KMS_CONTEXT_ATTRIBUTES, KEY_COVERAGE),
            (keys::WRAPPED_KEY, "AQID"),
        ];
        entries.extend_from_slice(extra);
        MaterialDescription::from_entries(entries)
    }

    #[test]
    fn context_names_algorithms_table_and_key_values() {
        let d = DirectKmsDescription::parse(&description(&[])).unwrap();
        assert_eq!(d.ciphertext_blob, [1, 2, 3]);
        let item = Item::from([
            ("pk".to_owned(), AttributeValue::B(vec![0, 1, 2, 3])),
            ("sk".to_owned(), AttributeValue::N("7".into())),
        ]);
        let md = description(&[]);
        let ctx = ProviderContext {
            table: TableContext {
                table_name: "T",
                partition_key: Some("pk"),
                sort_key: Some("sk"),
            },
            description: &md,
            item: &item,
        };
        let ec = d.encryption_context(&ctx).unwrap();
        let expected: BTreeMap<String, String> = [
            ("*amzn-ddb-env-alg*", "AES/256"),
            ("*amzn-ddb-sig-alg*", "HmacSHA256/256"),
            ("*aws-kms-table*", "T"),
            ("pk", "AAECAw=="),
            ("sk", "7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(ec, expected);
    }

    #[test]
    fn refuses_other_providers_and_unknown_algorithms() {
        let other = MaterialDescription::from_entries([(keys::WRAPPING_ALGORITHM, "AESWrap")]);
        assert!(DirectKmsDescription::parse(&other).is_err());
        for (k, v) in [
            (keys::CONTENT_ALGORITHM, "AES/255"),
            (keys::CONTENT_ALGORITHM, "DES/256"),
            (keys::ITEM_SIGNATURE_ALGORITHM, "HmacSHA1/160"),
            (keys::KMS_CONTEXT_ATTRIBUTES, "*none*"),
        ] {
            let base = description(&[]);
            let mut entries: BTreeMap<&str, &str> = base.entries().collect();
            entries.insert(k, v);
            assert!(
                DirectKmsDescription::parse(&MaterialDescription::from_entries(entries)).is_err(),
                "{k}={v}"
            );
        }
    }

    #[test]
    fn derives_distinct_encryption_and_signing_keys_from_the_data_key() {
        let d = DirectKmsDescription::parse(&description(&[])).unwrap();
        let a = d.derive(&[1; 32]).unwrap();
        let b = d.derive(&[2; 32]).unwrap();
        let (Some(ka), Some(kb)) = (&a.decryption_key, &b.decryption_key) else {
            panic!("content keys")
        };
        assert_eq!((ka.bits(), kb.bits()), (256, 256));
        assert_ne!(ka.expose_for_tests(), kb.expose_for_tests());
        let VerificationKey::Hmac(mac_a) = &a.verification_key else {
            panic!("hmac")
        };
        let VerificationKey::Hmac(mac_b) = &b.verification_key else {
            panic!("hmac")
        };
        assert_ne!(mac_a.expose(), mac_b.expose());
        assert_ne!(mac_a.expose(), ka.expose_for_tests());
        assert_eq!(mac_a.len(), 32);
    }
}
