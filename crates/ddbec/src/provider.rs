//! Materials providers: where an item's verification and content keys come from.
//!
//! The trait returns a boxed future like [`ddbguard_dbe::Keyring`], so a provider that calls a key service (the
//! direct AWS KMS provider in `ddbguard-keys`) fits beside the local ones here: [`StaticProvider`] (keys given
//! as they are), [`WrappedProvider`] (a content key wrapped in the material description with AESWrap or
//! RSA-OAEP) and [`MostRecentProvider`] (the metastore's versions, each a wrapped provider, chosen by the item's
//! `amzn-ddb-meta-id`). Every provider checks the material description entries it consumes exactly: the
//! description is not signed, so these checks are what make a change to it fail.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ddbguard_dbe::{AttributeValue, Item};

use crate::actions::{AttributeActions, LegacyAction};
use crate::crypto::{ContentKey, DecryptionMaterials, SecretBytes, SigningAlgorithm, UnwrappingKey, VerificationKey};
use crate::error::DdbecError;
use crate::item::TableContext;
use crate::material::{KeyInfo, MaterialDescription, keys};

/// The boxed future providers return.
pub type ProviderFuture<'a> = Pin<Box<dyn Future<Output = Result<DecryptionMaterials, DdbecError>> + Send + 'a>>;

/// What a provider sees of the item it supplies keys for.
#[derive(Debug, Clone, Copy)]
pub struct ProviderContext<'a> {
    /// The table and its key attribute names.
    pub table: TableContext<'a>,
    /// The item's material description.
    pub description: &'a MaterialDescription,
    /// The item as stored.
    pub item: &'a Item,
}

/// A source of decryption materials for legacy items.
pub trait MaterialsProvider: Send + Sync + Debug {
    /// The keys for one item, after checking the description entries this provider consumes.
    fn decryption_materials<'a>(&'a self, ctx: &'a ProviderContext<'a>) -> ProviderFuture<'a>;
}

pub(crate) fn mismatch(field: &'static str, what: &'static str) -> DdbecError {
    DdbecError::AlgorithmMismatch { field, what }
}

/// Decodes a base64 value strictly (canonical padding and trailing bits); the Java client's MIME encoder
/// breaks lines with CRLF every 76 characters, so exactly those pairs are dropped first.
pub(crate) fn decode_base64(value: &str, field: &'static str) -> Result<Vec<u8>, DdbecError> {
    let joined: String;
    let value = if value.contains('\r') {
        joined = value.split("\r\n").collect();
        &joined
    } else {
        value
    };
    STANDARD.decode(value).map_err(|_| mismatch(field, "not base64"))
}

/// Keys given directly: a content key (optional) and a verification key, whatever the description says about
/// them, as the clients' static provider does, except that a wrapped key in the description is refused (such
/// an item was written by another provider).
#[derive(Debug, Clone)]
pub struct StaticProvider {
    materials: DecryptionMaterials,
}

impl StaticProvider {
    /// A provider with these keys.
    pub fn new(decryption_key: Option<ContentKey>, verification_key: VerificationKey) -> StaticProvider {
        StaticProvider {
            materials: DecryptionMaterials {
                decryption_key,
                verification_key,
            },
        }
    }
}

impl MaterialsProvider for StaticProvider {
    fn decryption_materials<'a>(&'a self, ctx: &'a ProviderContext<'a>) -> ProviderFuture<'a> {
        Box::pin(async move {
            for field in [keys::WRAPPED_KEY, keys::WRAPPING_ALGORITHM, keys::CONTENT_ALGORITHM] {
                if ctx.description.get(field).is_some() {
                    return Err(mismatch(
                        field,
                        "the item's content key is wrapped, the static provider's is not",
                    ));
                }
            }
            Ok(self.materials.clone())
        })
    }
}

/// A content key wrapped into the description (`amzn-ddb-env-key`) with AESWrap or RSA-OAEP, and a signing key.
#[derive(Debug, Clone)]
pub struct WrappedProvider {
    unwrapping_key: UnwrappingKey,
    verification_key: VerificationKey,
}

impl WrappedProvider {
    /// A provider unwrapping with `unwrapping_key` and verifying with `verification_key`.
    pub fn new(unwrapping_key: UnwrappingKey, verification_key: VerificationKey) -> WrappedProvider {
        WrappedProvider {
            unwrapping_key,
            verification_key,
        }
    }

    /// The materials for a description (synchronous: no key service involved).
    pub fn materials(&self, description: &MaterialDescription) -> Result<DecryptionMaterials, DdbecError> {
        // Older Java clients leave out the wrapping and content algorithms: the JCE defaults of the unwrapping
        // key's algorithm then apply (see `UnwrappingKey::unwrap_key`), and AES of the unwrapped key's length.
        let content = KeyInfo::parse(description.get(keys::CONTENT_ALGORITHM).unwrap_or("AES"))?;
        if content.algorithm != "AES" {
            return Err(mismatch(keys::CONTENT_ALGORITHM, "not AES"));
        }
        let wrapped = decode_base64(
            description
                .get(keys::WRAPPED_KEY)
                .ok_or_else(|| mismatch(keys::WRAPPED_KEY, "missing"))?,
            keys::WRAPPED_KEY,
        )?;
        let unwrapped = self
            .unwrapping_key
            .unwrap_key(description.get(keys::WRAPPING_ALGORITHM), &wrapped)?;
        let key = ContentKey::new(unwrapped).map_err(|_| DdbecError::UnwrapFailed {
            what: "the unwrapped content key is not an AES key",
        })?;
        if content.bits.is_some_and(|bits| bits != key.bits()) {
            return Err(mismatch(
                keys::CONTENT_ALGORITHM,
                "length differs from the unwrapped key's",
            ));
        }
        Ok(DecryptionMaterials {
            decryption_key: Some(key),
            verification_key: self.verification_key.clone(),
        })
    }
}

impl MaterialsProvider for WrappedProvider {
    fn decryption_materials<'a>(&'a self, ctx: &'a ProviderContext<'a>) -> ProviderFuture<'a> {
        Box::pin(async move { self.materials(ctx.description) })
    }
}

/// The metastore table's partition key: the material name (S).
pub const METASTORE_PARTITION_KEY: &str = "N";
/// The metastore table's sort key: the version (N).
pub const METASTORE_SORT_KEY: &str = "V";

/// The most-recent provider's metastore, as far as its keys can be configured: one material name and, per
/// version, the wrapped provider its metastore record holds. Items name theirs in `amzn-ddb-meta-id`
/// (`name#version`).
#[derive(Debug, Clone)]
pub struct MostRecentProvider {
    material_name: String,
    versions: BTreeMap<u64, WrappedProvider>,
}

impl MostRecentProvider {
    /// A provider for `material_name`, with no version yet.
    pub fn new(material_name: impl Into<String>) -> MostRecentProvider {
        MostRecentProvider {
            material_name: material_name.into(),
            versions: BTreeMap::new(),
        }
    }

    /// Adds a version's keys.
    pub fn with_version(mut self, version: u64, provider: WrappedProvider) -> MostRecentProvider {
        self.versions.insert(version, provider);
        self
    }

    /// The material name and version an item's `amzn-ddb-meta-id` names (`name#version`, the version a
    /// canonical decimal number). The clients split at the first `#`; a name is compared whole afterwards, so
    /// splitting at the last one only changes which malformed entries are refused.
    pub fn meta_id(description: &MaterialDescription) -> Result<(&str, u64), DdbecError> {
        let id = description
            .get(keys::META_ID)
            .ok_or_else(|| mismatch(keys::META_ID, "missing"))?;
        let (name, version) = id
            .rsplit_once('#')
            .ok_or_else(|| mismatch(keys::META_ID, "not name#version"))?;
        let version: u64 = version
            .parse()
            .ok()
            .filter(|v: &u64| v.to_string() == version)
            .ok_or_else(|| mismatch(keys::META_ID, "version is not a decimal number"))?;
        Ok((name, version))
    }

    /// The attribute actions metastore records are written with: the clients' metastore writes them through an
    /// encrypted table with the default action `ENCRYPT_AND_SIGN`, which leaves the key attributes `N` and `V`
    /// sign-only.
    pub fn record_actions() -> AttributeActions {
        AttributeActions::new(LegacyAction::EncryptAndSign)
            .with_key_attributes([METASTORE_PARTITION_KEY, METASTORE_SORT_KEY])
    }

    /// The table context metastore records of `table_name` are signed (and their KMS data keys bound) under.
    pub fn record_table(table_name: &str) -> TableContext<'_> {
        TableContext {
            table_name,
            partition_key: Some(METASTORE_PARTITION_KEY),
            sort_key: Some(METASTORE_SORT_KEY),
        }
    }

    /// A version's wrapped provider from its decrypted metastore record: `encAlg`/`enc` (the AES wrapping key)
    /// and `intAlg`/`int` (the HmacSHA256 signing key), in material type `t` = `0`, the only one the clients
    /// write or read.
    pub fn version_from_record(record: &Item) -> Result<WrappedProvider, DdbecError> {
        let text = |name: &'static str| match record.get(name) {
            Some(AttributeValue::S(s)) => Ok(s.as_str()),
            _ => Err(DdbecError::InvalidKey {
                what: "metastore record lacks a string algorithm attribute",
            }),
        };
        let bytes = |name: &'static str| match record.get(name) {
            Some(AttributeValue::B(b)) => Ok(SecretBytes::from_slice(b)),
            _ => Err(DdbecError::InvalidKey {
                what: "metastore record lacks a binary key attribute",
            }),
        };
        if text("t")? != "0" {
            return Err(DdbecError::InvalidKey {
                what: "metastore record is of an unsupported material type",
            });
        }
        if KeyInfo::parse(text("encAlg")?)?.algorithm != "AES" {
            return Err(DdbecError::InvalidKey {
                what: "metastore encryption key is not AES",
            });
        }
        if KeyInfo::parse(text("intAlg")?)?.algorithm != SigningAlgorithm::HmacSha256.jce_name() {
            return Err(DdbecError::InvalidKey {
                what: "metastore integrity key is not HmacSHA256",
            });
        }
        Ok(WrappedProvider::new(
            UnwrappingKey::aes(bytes("enc")?)?,
            VerificationKey::hmac(bytes("int")?)?,
        ))
    }
}

impl MaterialsProvider for MostRecentProvider {
    fn decryption_materials<'a>(&'a self, ctx: &'a ProviderContext<'a>) -> ProviderFuture<'a> {
        Box::pin(async move {
            let (name, version) = MostRecentProvider::meta_id(ctx.description)?;
            // The configured versions are every key the table's items may be under, and the entry is not signed:
            // an item naming another material or version is treated as tampered, not as a key to fetch.
            let provider = self
                .versions
                .get(&version)
                .filter(|_| name == self.material_name)
                .ok_or_else(|| mismatch(keys::META_ID, "names a material or version that is not configured"))?;
            provider.materials(ctx.description)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_drops_only_crlf_pairs_and_is_strict() {
        assert_eq!(decode_base64("AAEC\r\nAw==", "f").unwrap(), [0, 1, 2, 3]);
        assert!(decode_base64("AAEC\rAw==", "f").is_err());
        assert!(decode_base64("AAEC\nAw==", "f").is_err());
        // Non-zero trailing bits: another encoding of the same bytes is refused.
        assert!(decode_base64("AAECAx==", "f").is_err());
    }

    #[test]
    fn meta_id_is_name_hash_canonical_decimal_version() {
        let md = |id: &str| MaterialDescription::from_entries([(keys::META_ID, id)]);
        assert_eq!(MostRecentProvider::meta_id(&md("orders#12")).unwrap(), ("orders", 12));
        assert_eq!(MostRecentProvider::meta_id(&md("a#b#0")).unwrap(), ("a#b", 0));
        for bad in [
            "orders",
            "orders#",
            "orders#012",
            "orders#-1",
            "orders#+1",
            "orders#1.0",
        ] {
            let e = MostRecentProvider::meta_id(&md(bad)).unwrap_err();
            assert!(
                matches!(
                    e,
                    DdbecError::AlgorithmMismatch {
                        field: keys::META_ID,
                        ..
                    }
                ),
                "{bad}: {e}"
            );
        }
        assert!(MostRecentProvider::meta_id(&MaterialDescription::from_entries::<_, &str, &str>([])).is_err());
    }

    #[test]
    fn a_record_of_another_material_type_or_algorithm_is_refused() {
        let record = |t: &str, enc_alg: &str| {
            Item::from([
                ("t".to_owned(), AttributeValue::S(t.into())),
                ("encAlg".to_owned(), AttributeValue::S(enc_alg.into())),
                ("enc".to_owned(), AttributeValue::B(vec![7; 32])),
                ("intAlg".to_owned(), AttributeValue::S("HmacSHA256".into())),
                ("int".to_owned(), AttributeValue::B(vec![9; 32])),
            ])
        };
        assert!(MostRecentProvider::version_from_record(&record("0", "AES")).is_ok());
        for (t, alg) in [("1", "AES"), ("0", "DESede")] {
            let e = MostRecentProvider::version_from_record(&record(t, alg)).unwrap_err();
            assert!(matches!(e, DdbecError::InvalidKey { .. }), "{t} {alg}: {e}");
            assert_eq!(e.verdict(), ddbguard_dbe::Verdict::KeyUnavailable);
        }
        let mut no_type = record("0", "AES");
        no_type.remove("t");
        assert!(MostRecentProvider::version_from_record(&no_type).is_err());
    }
}
