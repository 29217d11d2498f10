//! `decrypt_item` / `encrypt_item`: the item-level procedures of §1.10 and §1.11.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::config::{AlgorithmSuite, CryptoAction, TableConfig};
use crate::context::{
    ContextField, EC_PUBLIC_KEY, EncryptionContext, base_context, canonical_cmp, merge_context, serialize_context,
    write_canonical_path,
};
use crate::crypto::{
    CanonicalHasher, IntermediateKeys, RecordKeys, SecretKey, Signer, any_tag_matches, ct_eq, random_fill,
    verify_signature,
};
use crate::error::{DbeError, Part};
use crate::header::{COMMITMENT_LEN, EncryptedDataKey, Footer, Header, MESSAGE_ID_LEN};
use crate::keyring::Keyring;
use crate::value::{AttributeValue, Item, ValueError, type_id};
use crate::{FOOTER_ATTRIBUTE, HEADER_ATTRIBUTE, LEGACY_MATERIAL_DESCRIPTION, RESERVED_PREFIX};

const GCM_TAG_LEN: usize = 16;
/// Smallest stored encrypted value: 2-byte type id + empty ciphertext + 16-byte tag.
const MIN_ENCRYPTED_LEN: usize = 2 + GCM_TAG_LEN;

/// A decrypted and fully verified item.
#[derive(Debug, Clone)]
pub struct DecryptedItem {
    /// The plaintext item, without `aws_dbe_head` / `aws_dbe_foot`.
    pub item: Item,
    /// The parsed header.
    pub header: Header,
    /// Which EDK the keyring opened.
    pub edk_index: usize,
    /// The action the header's legend gives each signed attribute (attributes not listed were unsigned).
    pub actions: BTreeMap<String, CryptoAction>,
}

impl DecryptedItem {
    /// Attributes whose action in the record differs from `config.attribute_actions` (the writer's
    /// policy differed from ours; the DB-ESDK accepts such records, a verifier may flag them).
    pub fn action_differences<'a>(&'a self, config: &'a TableConfig) -> Vec<(&'a str, CryptoAction, CryptoAction)> {
        self.actions
            .iter()
            .filter_map(|(name, &written)| {
                let ours = config.attribute_actions.get(name).copied()?;
                (ours != written).then_some((name.as_str(), written, ours))
            })
            .collect()
    }
}

pub(crate) fn value_error(attribute: &str, e: ValueError) -> DbeError {
    match e {
        ValueError::Bad(what) => DbeError::BadValue {
            attribute: attribute.to_owned(),
            what,
        },
        ValueError::Number(what) => DbeError::InvalidNumber {
            attribute: attribute.to_owned(),
            what,
        },
    }
}

fn binary(v: &AttributeValue, part: Part) -> Result<&[u8], DbeError> {
    match v {
        AttributeValue::B(b) => Ok(b),
        other => Err(DbeError::PartWrongType {
            part,
            found: other.type_name(),
        }),
    }
}

/// The raw `aws_dbe_head` and `aws_dbe_foot` bytes of an item.
pub(crate) fn header_and_footer<'a>(
    item: &'a Item,
    config: Option<&TableConfig>,
) -> Result<(&'a [u8], &'a [u8]), DbeError> {
    match (item.get(HEADER_ATTRIBUTE), item.get(FOOTER_ATTRIBUTE)) {
        (Some(h), Some(f)) => Ok((binary(h, Part::Header)?, binary(f, Part::Footer)?)),
        (None, None) if item.contains_key(LEGACY_MATERIAL_DESCRIPTION) => Err(DbeError::LegacyFormat),
        (None, None) => Err(DbeError::NotEncrypted {
            policy_encrypts: config.is_none_or(TableConfig::encrypts_anything),
        }),
        (None, Some(_)) => Err(DbeError::PartMissing { part: Part::Header }),
        (Some(_), None) => Err(DbeError::PartMissing { part: Part::Footer }),
    }
}

/// Names of the attributes a reader with `config` treats as signed, in canonical order: every attribute
/// except `aws_dbe_head`, `aws_dbe_foot` and the allowed-unsigned ones.
pub fn signed_attribute_names<'a>(config: &TableConfig, item: &'a Item) -> Vec<&'a str> {
    signed_attributes(config, item).into_iter().map(|(n, _)| n).collect()
}

/// The signed attributes (name and value) in canonical order, as [`signed_attribute_names`] lists them.
fn signed_attributes<'a>(config: &TableConfig, item: &'a Item) -> Vec<(&'a str, &'a AttributeValue)> {
    let mut attrs: Vec<(&str, &AttributeValue)> = item
        .iter()
        .map(|(n, v)| (n.as_str(), v))
        .filter(|(n, _)| *n != HEADER_ATTRIBUTE && *n != FOOTER_ATTRIBUTE && !config.is_allowed_unsigned(n))
        .collect();
    attrs.sort_unstable_by(|a, b| canonical_cmp(a.0, b.0));
    attrs
}

/// One signed attribute of a record being decrypted.
struct SignedField<'a> {
    name: &'a str,
    value: &'a AttributeValue,
    action: CryptoAction,
}

/// What can be checked without a key.
struct Structure<'a> {
    header: Header,
    header_bytes: &'a [u8],
    footer: Footer,
    fields: Vec<SignedField<'a>>,
}

fn structure<'a>(config: &TableConfig, item: &'a Item) -> Result<Structure<'a>, DbeError> {
    let (header_bytes, footer_bytes) = header_and_footer(item, Some(config))?;
    let header = Header::parse(header_bytes)?;
    let footer = Footer::parse(footer_bytes, &header)?;
    for key in config.key_names() {
        if !item.contains_key(key) {
            return Err(DbeError::MissingKeyAttribute {
                attribute: key.to_owned(),
            });
        }
    }
    let signed = signed_attributes(config, item);
    if signed.len() != header.legend.len() {
        if signed.len() > header.legend.len()
            && let Some((extra, _)) = signed
                .iter()
                .find(|(n, _)| !config.attribute_actions.contains_key(*n) && !config.key_names().any(|k| k == *n))
        {
            return Err(DbeError::UnexpectedSignedAttribute {
                attribute: (*extra).to_owned(),
            });
        }
        return Err(DbeError::LegendMismatch {
            legend: header.legend.len(),
            signed: signed.len(),
        });
    }
    let mut fields = Vec::with_capacity(signed.len());
    for ((name, value), &action) in signed.into_iter().zip(&header.legend) {
        if action == CryptoAction::EncryptAndSign {
            match value {
                AttributeValue::B(b) if b.len() >= MIN_ENCRYPTED_LEN => {}
                AttributeValue::B(_) => {
                    return Err(DbeError::MalformedEncryptedField {
                        attribute: name.to_owned(),
                        what: "is shorter than a type id and a GCM tag",
                    });
                }
                _ => {
                    return Err(DbeError::MalformedEncryptedField {
                        attribute: name.to_owned(),
                        what: "is not of type B",
                    });
                }
            }
        }
        fields.push(SignedField { name, value, action });
    }
    Ok(Structure {
        header,
        header_bytes,
        footer,
        fields,
    })
}

/// Checks an encrypted item without any key: header and footer parse, key attributes present, the
/// signed attribute set matches the legend, encrypted attributes are well-formed. This is what an
/// `ok_structural` verdict rests on (the caller still checks the EDKs against its key).
pub fn check_structure(config: &TableConfig, item: &Item) -> Result<Header, DbeError> {
    structure(config, item).map(|s| s.header)
}

/// Serialized bytes of a plaintext value, borrowing where the encoding is the identity.
fn value_bytes<'a>(name: &str, v: &'a AttributeValue) -> Result<Cow<'a, [u8]>, DbeError> {
    match v {
        AttributeValue::S(s) => Ok(Cow::Borrowed(s.as_bytes())),
        AttributeValue::B(b) => Ok(Cow::Borrowed(b)),
        AttributeValue::N(n) => match crate::number::normalize_cow(n) {
            Ok(Cow::Borrowed(s)) => Ok(Cow::Borrowed(s.as_bytes())),
            Ok(Cow::Owned(s)) => Ok(Cow::Owned(s.into_bytes())),
            Err(what) => Err(DbeError::InvalidNumber {
                attribute: name.to_owned(),
                what,
            }),
        },
        other => other.serialize().map(Cow::Owned).map_err(|e| value_error(name, e)),
    }
}

/// Feeds one canonical field into the hash (§1.9). For encrypted fields `bytes` is the stored value
/// (type id first); for plaintext ones the serialized value.
fn hash_field(h: &mut CanonicalHasher, path: &[u8], encrypted: bool, type_id: u16, bytes: &[u8]) {
    h.update(path);
    if encrypted {
        h.update(&(bytes.len().saturating_sub(2) as u64).to_be_bytes());
        h.update(b"ENCRYPTED");
        h.update(bytes);
    } else {
        h.update(&(bytes.len() as u64).to_be_bytes());
        h.update(b"PLAINTEXT");
        h.update(&type_id.to_be_bytes());
        h.update(bytes);
    }
}

fn hash_prefix(header_bytes: &[u8], ec_bytes: &[u8]) -> CanonicalHasher {
    let mut h = CanonicalHasher::default();
    h.update(header_bytes);
    h.update(&(ec_bytes.len() as u64).to_be_bytes());
    h.update(ec_bytes);
    h
}

/// Decrypts and verifies one item (§1.10): commitment, recipient tag, signature (0x6701) and every
/// encrypted attribute. Decrypt follows the header's legend, not `config.attribute_actions`; from the
/// config it uses the logical table name, key names and the allowed-unsigned attributes/prefix. Both
/// suites are accepted whatever `config.algorithm_suite` says (as the DB-ESDK does); the suite is in
/// [`DecryptedItem::header`].
pub async fn decrypt_item(config: &TableConfig, keyring: &dyn Keyring, item: &Item) -> Result<DecryptedItem, DbeError> {
    let s = structure(config, item)?;
    let header = s.header;

    // Serialized values: plaintext fields serialized; encrypted fields as stored.
    let mut values: Vec<(u16, Cow<'_, [u8]>)> = Vec::with_capacity(s.fields.len());
    for f in &s.fields {
        values.push(match (f.action, f.value) {
            (CryptoAction::EncryptAndSign, AttributeValue::B(b)) => (type_id::BINARY, Cow::Borrowed(b.as_slice())),
            (_, v) => (v.type_id(), value_bytes(f.name, v)?),
        });
    }
    let ctx_fields: Vec<ContextField<'_>> = s
        .fields
        .iter()
        .zip(&values)
        .map(|(f, (t, b))| ContextField {
            name: f.name,
            action: f.action,
            type_id: *t,
            value: b,
        })
        .collect();
    let ec = merge_context(
        &header.stored_context,
        base_context(config, header.version, &ctx_fields)?,
    )?;
    let ec_bytes = serialize_context(&ec)?;

    // Key.
    let provider_edks: Vec<EncryptedDataKey> = header
        .edks
        .iter()
        .map(|e| EncryptedDataKey {
            provider_id: e.provider_id.clone(),
            provider_info: e.provider_info.clone(),
            ciphertext: e.provider_ciphertext().unwrap_or_default().to_vec(),
        })
        .collect();
    let unwrapped = keyring.unwrap_key(&provider_edks, &ec).await?;
    let edk_index = unwrapped.edk_index;
    let edk = header.edks.get(edk_index).ok_or(DbeError::KeyringIndex {
        index: edk_index,
        count: header.edks.len(),
    })?;
    let ik = IntermediateKeys::derive(&unwrapped.ikm);
    drop(unwrapped);
    let pdk = edk
        .wrapped_pdk()
        .and_then(|w| ik.unwrap_pdk(w, &ec_bytes))
        .ok_or(DbeError::DataKeyUnwrap { edk_index })?;
    let rk = RecordKeys::derive(&pdk, &header.message_id);
    drop(pdk);

    // Commitment.
    let body_len = s.header_bytes.len().saturating_sub(COMMITMENT_LEN);
    let body = s.header_bytes.get(..body_len).unwrap_or_default();
    if !ct_eq(&rk.commitment(body)?, &header.commitment) {
        return Err(DbeError::CommitmentMismatch);
    }

    // Canonical hash, recipient tag, signature.
    let mut h = hash_prefix(s.header_bytes, &ec_bytes);
    let mut path = Vec::with_capacity(config.logical_table_name.len() + 64);
    for (f, (t, b)) in s.fields.iter().zip(&values) {
        path.clear();
        write_canonical_path(&mut path, &config.logical_table_name, f.name);
        hash_field(&mut h, &path, f.action == CryptoAction::EncryptAndSign, *t, b);
    }
    let hash = h.finish();
    if !any_tag_matches(&ik.tag(&hash)?, &s.footer.tags) {
        return Err(DbeError::TagMismatch);
    }
    if let Some(sig) = &s.footer.signature {
        let pk_b64 = header
            .stored_context
            .get(EC_PUBLIC_KEY)
            .ok_or(DbeError::PublicKey("missing from the encryption context"))?;
        let pk = STANDARD
            .decode(pk_b64)
            .map_err(|_| DbeError::PublicKey("not valid base64"))?;
        if !verify_signature(&pk, &hash, sig) {
            return Err(DbeError::SignatureInvalid);
        }
    }

    // Fields.
    let encrypted_count = s
        .fields
        .iter()
        .filter(|f| f.action == CryptoAction::EncryptAndSign)
        .count();
    let keys = rk.field_keys(encrypted_count)?;
    let mut decrypted: Vec<(&str, AttributeValue)> = Vec::with_capacity(encrypted_count);
    let mut ordinal = 0usize;
    for f in &s.fields {
        if f.action != CryptoAction::EncryptAndSign {
            continue;
        }
        let AttributeValue::B(stored) = f.value else {
            continue;
        };
        let malformed = || DbeError::MalformedEncryptedField {
            attribute: f.name.to_owned(),
            what: "is shorter than a type id and a GCM tag",
        };
        let (tid, rest) = stored.split_first_chunk::<2>().ok_or_else(malformed)?;
        let ct_len = rest.len().checked_sub(GCM_TAG_LEN).ok_or_else(malformed)?;
        let (ct, tag) = rest.split_at(ct_len);
        let mut buf = ct.to_vec();
        path.clear();
        write_canonical_path(&mut path, &config.logical_table_name, f.name);
        if !keys.open(ordinal, &path, &mut buf, tag) {
            return Err(DbeError::FieldAuthentication {
                attribute: f.name.to_owned(),
            });
        }
        ordinal += 1;
        let value = AttributeValue::deserialize_owned(u16::from_be_bytes(*tid), buf).map_err(|e| match e {
            ValueError::Bad(what) | ValueError::Number(what) => DbeError::BadValue {
                attribute: f.name.to_owned(),
                what,
            },
        })?;
        decrypted.push((f.name, value));
    }
    // The plaintext item: every attribute but the header and footer, encrypted ones replaced by their
    // plaintext. Both sides are walked in the item's (byte) order and collected in bulk.
    decrypted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut decrypted = decrypted.into_iter().peekable();
    let out: Item = item
        .iter()
        .filter(|(name, _)| *name != HEADER_ATTRIBUTE && *name != FOOTER_ATTRIBUTE)
        .map(|(name, value)| match decrypted.next_if(|(d, _)| *d == name.as_str()) {
            Some((_, plaintext)) => (name.clone(), plaintext),
            None => (name.clone(), value.clone()),
        })
        .collect();
    let actions: BTreeMap<String, CryptoAction> = s.fields.iter().map(|f| (f.name.to_owned(), f.action)).collect();
    Ok(DecryptedItem {
        item: out,
        header,
        edk_index,
        actions,
    })
}

/// The action `config` gives an attribute on encrypt.
fn action_for(config: &TableConfig, name: &str) -> Result<CryptoAction, DbeError> {
    if name.starts_with(RESERVED_PREFIX) {
        return Err(DbeError::ReservedAttributeName {
            attribute: name.to_owned(),
        });
    }
    match config.attribute_actions.get(name) {
        Some(a) => Ok(*a),
        None if config.is_allowed_unsigned(name) => Ok(CryptoAction::DoNothing),
        None => Err(DbeError::MissingAction {
            attribute: name.to_owned(),
        }),
    }
}

/// Encrypts and signs one item (§1.11) with `config.algorithm_suite` and one EDK from `keyring`.
pub async fn encrypt_item(config: &TableConfig, keyring: &dyn Keyring, item: &Item) -> Result<Item, DbeError> {
    config.validate()?;
    let mut fields: Vec<(&str, &AttributeValue, CryptoAction)> = Vec::with_capacity(item.len());
    for (name, value) in item {
        let action = action_for(config, name)?;
        if action.is_signed() {
            fields.push((name.as_str(), value, action));
        }
    }
    for key in config.key_names() {
        if !item.contains_key(key) {
            return Err(DbeError::MissingKeyAttribute {
                attribute: key.to_owned(),
            });
        }
    }
    for (name, action) in &config.attribute_actions {
        if *action == CryptoAction::SignAndIncludeInEncryptionContext && !item.contains_key(name) {
            return Err(DbeError::MissingContextAttribute {
                attribute: name.clone(),
            });
        }
    }
    fields.sort_unstable_by(|a, b| canonical_cmp(a.0, b.0));
    let version = if fields
        .iter()
        .any(|f| f.2 == CryptoAction::SignAndIncludeInEncryptionContext)
    {
        2
    } else {
        1
    };
    let mut serialized: Vec<(u16, Cow<'_, [u8]>)> = Vec::with_capacity(fields.len());
    for (name, value, _) in &fields {
        serialized.push((value.type_id(), value_bytes(name, value)?));
    }
    let ctx_fields: Vec<ContextField<'_>> = fields
        .iter()
        .zip(&serialized)
        .map(|(f, (t, b))| ContextField {
            name: f.0,
            action: f.2,
            type_id: *t,
            value: b,
        })
        .collect();
    let base = base_context(config, version, &ctx_fields)?;

    let suite = config.algorithm_suite;
    let signer = if suite == AlgorithmSuite::EcdsaP384 {
        Some(Signer::generate()?)
    } else {
        None
    };
    let mut stored = EncryptionContext::new();
    if let Some(s) = &signer {
        stored.insert(EC_PUBLIC_KEY.to_owned(), STANDARD.encode(s.public_key_compressed()?));
    }
    let ec = merge_context(&stored, base)?;
    let ec_bytes = serialize_context(&ec)?;

    let wrapped = keyring.wrap_key(&ec).await?;
    let pdk = SecretKey::random()?;
    let ik = IntermediateKeys::derive(&wrapped.ikm);
    let mut ciphertext = Vec::with_capacity(48 + wrapped.wrapped.len());
    ciphertext.extend_from_slice(&ik.wrap_pdk(&pdk, &ec_bytes)?);
    ciphertext.extend_from_slice(&wrapped.wrapped);
    let mut message_id = [0u8; MESSAGE_ID_LEN];
    random_fill(&mut message_id)?;
    let mut header = Header {
        version,
        suite,
        message_id,
        legend: fields.iter().map(|f| f.2).collect(),
        stored_context: stored,
        edks: vec![EncryptedDataKey {
            provider_id: wrapped.provider_id,
            provider_info: wrapped.provider_info,
            ciphertext,
        }],
        commitment: [0; COMMITMENT_LEN],
    };
    let rk = RecordKeys::derive(&pdk, &message_id);
    drop(pdk);
    let mut header_bytes = header.encode_body()?;
    header.commitment = rk.commitment(&header_bytes)?;
    header_bytes.extend_from_slice(&header.commitment);

    let encrypted_count = fields.iter().filter(|f| f.2 == CryptoAction::EncryptAndSign).count();
    let keys = rk.field_keys(encrypted_count)?;
    let mut h = hash_prefix(&header_bytes, &ec_bytes);
    let mut encrypted: Vec<(&str, Vec<u8>)> = Vec::with_capacity(encrypted_count);
    let mut path = Vec::with_capacity(config.logical_table_name.len() + 64);
    let mut ordinal = 0usize;
    for ((name, _, action), (tid, bytes)) in fields.iter().zip(serialized) {
        path.clear();
        write_canonical_path(&mut path, &config.logical_table_name, name);
        if *action == CryptoAction::EncryptAndSign {
            let mut stored = Vec::with_capacity(2 + bytes.len() + GCM_TAG_LEN);
            stored.extend_from_slice(&tid.to_be_bytes());
            stored.extend_from_slice(&bytes);
            let tag = keys.seal(ordinal, &path, &mut stored[2..])?;
            ordinal += 1;
            stored.extend_from_slice(&tag);
            hash_field(&mut h, &path, true, type_id::BINARY, &stored);
            encrypted.push((*name, stored));
        } else {
            hash_field(&mut h, &path, false, tid, &bytes);
        }
    }
    let hash = h.finish();
    let footer = Footer {
        tags: vec![ik.tag(&hash)?],
        signature: match &signer {
            Some(s) => Some(s.sign(&hash)?),
            None => None,
        },
    };
    // The encrypted item: the input with encrypted attributes replaced by their stored form, collected in
    // bulk in the item's (byte) order, plus the header and footer.
    encrypted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut encrypted = encrypted.into_iter().peekable();
    let mut out: Item = item
        .iter()
        .map(|(name, value)| match encrypted.next_if(|(e, _)| *e == name.as_str()) {
            Some((_, stored)) => (name.clone(), AttributeValue::B(stored)),
            None => (name.clone(), value.clone()),
        })
        .collect();
    out.insert(HEADER_ATTRIBUTE.to_owned(), AttributeValue::B(header_bytes));
    out.insert(FOOTER_ATTRIBUTE.to_owned(), AttributeValue::B(footer.encode()));
    Ok(out)
}
