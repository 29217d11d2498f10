//! Items: the structure check, the string to sign and its signature, attribute decryption.
//!
//! Three separate steps, as for the DB-ESDK format, so that a structural-only verdict stays cheap:
//! [`check_structure`] (no key), [`verify_signature`] (needs the verification key) and [`decrypt_attributes`]
//! (needs the content key); [`decrypt_item`] runs all three with a [`MaterialsProvider`].

use ddbguard_dbe::{AttributeValue, Item};
use zeroize::Zeroizing;

use crate::actions::{AttributeActions, LegacyAction};
use crate::crypto::{DecryptionMaterials, SigningAlgorithm};
use crate::error::DdbecError;
use crate::material::{CBC_PKCS5_PADDING, MaterialDescription, keys};
use crate::provider::{MaterialsProvider, ProviderContext};
use crate::serialize::{deserialize_value, serialize_value_into};
use crate::{MATERIAL_DESCRIPTION, SIGNATURE};

/// SHA-256 of `ENCRYPTED` and of `PLAINTEXT`, which mark each signed attribute's action in the string to sign
/// (constants: they would otherwise be hashed again for every signed attribute of every item).
const ENCRYPTED_MARKER: [u8; 32] = [
    0x39, 0x41, 0x15, 0xac, 0x4e, 0xb0, 0x9a, 0xa4, 0x94, 0x29, 0x34, 0x88, 0x16, 0xb2, 0x03, 0x81, 0x27, 0xb0, 0xf9,
    0xe3, 0xa5, 0x20, 0x37, 0x2a, 0xe1, 0x00, 0xca, 0x19, 0xfb, 0x08, 0xfd, 0x50,
];
const PLAINTEXT_MARKER: [u8; 32] = [
    0xcb, 0x40, 0xe7, 0xda, 0xdc, 0x86, 0x16, 0x1b, 0x97, 0x98, 0xde, 0x48, 0x51, 0x2f, 0x33, 0x2d, 0x21, 0xc1, 0x41,
    0xfc, 0xc1, 0xe2, 0x8a, 0x08, 0x6f, 0xde, 0x4a, 0x33, 0x75, 0xaa, 0xb1, 0xb5,
];

fn action_marker(action: LegacyAction) -> &'static [u8; 32] {
    if action == LegacyAction::EncryptAndSign {
        &ENCRYPTED_MARKER
    } else {
        &PLAINTEXT_MARKER
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether the item carries the legacy client's attributes at all.
pub fn is_legacy_item(item: &Item) -> bool {
    item.contains_key(MATERIAL_DESCRIPTION) || item.contains_key(SIGNATURE)
}

/// What [`check_structure`] found: the parsed material description and the signature bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyStructure<'a> {
    /// The material description.
    pub description: MaterialDescription,
    /// The signature attribute's bytes.
    pub signature: &'a [u8],
}

fn binary<'a>(item: &'a Item, attribute: &'static str, missing: DdbecError) -> Result<&'a [u8], DdbecError> {
    match item.get(attribute) {
        None => Err(missing),
        Some(AttributeValue::B(b)) => Ok(b),
        Some(_) => Err(DdbecError::WrongType { attribute }),
    }
}

/// Checks an item's structure without any key: both reserved attributes present and binary, the material
/// description well-formed with only the entries the clients write, a supported encryption mode, and every
/// attribute the actions say is encrypted stored as binary.
pub fn check_structure<'a>(item: &'a Item, actions: &AttributeActions) -> Result<LegacyStructure<'a>, DdbecError> {
    let description = MaterialDescription::parse(binary(
        item,
        MATERIAL_DESCRIPTION,
        DdbecError::MissingMaterialDescription,
    )?)?;
    let signature = binary(item, SIGNATURE, DdbecError::MissingSignature)?;
    description.check_names()?;
    let mut encrypted = false;
    for (name, value) in item {
        if name == MATERIAL_DESCRIPTION || name == SIGNATURE || actions.action(name) != LegacyAction::EncryptAndSign {
            continue;
        }
        encrypted = true;
        if !matches!(value, AttributeValue::B(_)) {
            return Err(DdbecError::MalformedEncryptedField {
                attribute: name.clone(),
                what: "not of type B",
            });
        }
    }
    match description.get(keys::SYMMETRIC_MODE) {
        Some(CBC_PKCS5_PADDING) => {}
        Some(_) => {
            return Err(DdbecError::MalformedDescription {
                what: "unsupported attribute encryption mode",
            });
        }
        None if encrypted => {
            return Err(DdbecError::MalformedDescription {
                what: "no attribute encryption mode although attributes are encrypted",
            });
        }
        None => {}
    }
    if let Some(alg) = description.get(keys::SIGNING_ALGORITHM)
        && ![SigningAlgorithm::HmacSha256, SigningAlgorithm::Sha256WithRsa]
            .iter()
            .any(|a| a.jce_name() == alg)
    {
        return Err(DdbecError::MalformedDescription {
            what: "unsupported signing algorithm",
        });
    }
    Ok(LegacyStructure { description, signature })
}

/// The string the clients sign: `SHA-256("TABLE>" table "<TABLE")`, then for each signed attribute in byte
/// order of the names (the two reserved attributes excluded) `SHA-256(name) || SHA-256(ENCRYPTED|PLAINTEXT) ||
/// SHA-256(serialized stored value)`.
pub fn string_to_sign(table_name: &str, item: &Item, actions: &AttributeActions) -> Result<Vec<u8>, DdbecError> {
    let mut out = Vec::with_capacity(32 + item.len() * 96);
    out.extend_from_slice(&sha256(format!("TABLE>{table_name}<TABLE").as_bytes()));
    let mut serialized = Vec::new();
    // Item is a BTreeMap<String, _>: byte order of the names, which is the Python client's code-point order.
    for (name, value) in item {
        if name == MATERIAL_DESCRIPTION || name == SIGNATURE {
            continue;
        }
        let action = actions.action(name);
        if action == LegacyAction::DoNothing {
            continue;
        }
        out.extend_from_slice(&sha256(name.as_bytes()));
        out.extend_from_slice(action_marker(action));
        serialize_value_into(value, &mut serialized).map_err(|e| e.named(name))?;
        out.extend_from_slice(&sha256(&serialized));
    }
    Ok(out)
}

/// Verifies the item signature with the provider's verification key.
pub fn verify_signature(
    table_name: &str,
    item: &Item,
    actions: &AttributeActions,
    structure: &LegacyStructure<'_>,
    materials: &DecryptionMaterials,
) -> Result<(), DdbecError> {
    if let Some(alg) = structure.description.get(keys::SIGNING_ALGORITHM)
        && alg != materials.verification_key.algorithm().jce_name()
    {
        return Err(DdbecError::AlgorithmMismatch {
            field: keys::SIGNING_ALGORITHM,
            what: "the item names another signing algorithm than the key's",
        });
    }
    let data = string_to_sign(table_name, item, actions)?;
    materials.verification_key.verify(&data, structure.signature)
}

/// Decrypts every `ENCRYPT_AND_SIGN` attribute; the returned item has no reserved attributes. Call it only
/// after [`verify_signature`]: CBC is not authenticated by itself.
pub fn decrypt_attributes(
    item: &Item,
    actions: &AttributeActions,
    materials: &DecryptionMaterials,
) -> Result<Item, DdbecError> {
    let mut out = Item::new();
    for (name, value) in item {
        if name == MATERIAL_DESCRIPTION || name == SIGNATURE {
            continue;
        }
        if actions.action(name) != LegacyAction::EncryptAndSign {
            out.insert(name.clone(), value.clone());
            continue;
        }
        let AttributeValue::B(stored) = value else {
            return Err(DdbecError::MalformedEncryptedField {
                attribute: name.clone(),
                what: "not of type B",
            });
        };
        let key = materials.decryption_key.as_ref().ok_or(DdbecError::AlgorithmMismatch {
            field: keys::SYMMETRIC_MODE,
            what: "attributes are encrypted but the provider has no content key",
        })?;
        let plain: Zeroizing<Vec<u8>> = key.decrypt(name, stored)?;
        out.insert(name.clone(), deserialize_value(&plain).map_err(|e| e.named(name))?);
    }
    Ok(out)
}

/// A decrypted and verified legacy item.
#[derive(Debug, Clone, PartialEq)]
pub struct DecryptedLegacyItem {
    /// The plaintext item, without the reserved attributes.
    pub item: Item,
    /// The material description it was written with.
    pub description: MaterialDescription,
}

/// Where an item lives, for its signature and the providers (the KMS encryption context names the table and
/// key attributes).
#[derive(Debug, Clone, Copy)]
pub struct TableContext<'a> {
    /// The table name (signed).
    pub table_name: &'a str,
    /// The partition key attribute name.
    pub partition_key: Option<&'a str>,
    /// The sort key attribute name.
    pub sort_key: Option<&'a str>,
}

/// Structure check, keys from `provider`, signature, decryption.
pub async fn decrypt_item(
    table: TableContext<'_>,
    item: &Item,
    actions: &AttributeActions,
    provider: &dyn MaterialsProvider,
) -> Result<DecryptedLegacyItem, DdbecError> {
    let structure = check_structure(item, actions)?;
    let ctx = ProviderContext {
        table,
        description: &structure.description,
        item,
    };
    let materials = provider.decryption_materials(&ctx).await?;
    verify_signature(table.table_name, item, actions, &structure, &materials)?;
    let plain = decrypt_attributes(item, actions, &materials)?;
    Ok(DecryptedLegacyItem {
        item: plain,
        description: structure.description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_markers_are_the_digests_of_their_words() {
        assert_eq!(*action_marker(LegacyAction::EncryptAndSign), sha256(b"ENCRYPTED"));
        assert_eq!(*action_marker(LegacyAction::SignOnly), sha256(b"PLAINTEXT"));
    }
}
