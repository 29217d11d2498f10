//! Canonical paths, the canonical attribute order, and the encryption context (§1.3, §1.5).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::config::{CryptoAction, TableConfig};
use crate::error::DbeError;
use crate::value::type_id;

/// An encryption context: UTF-8 keys and values, ordered by UTF-8 bytes.
pub type EncryptionContext = BTreeMap<String, String>;

/// EC key: logical table name.
pub const EC_TABLE_NAME: &str = "aws-crypto-table-name";
/// EC key: partition key name.
pub const EC_PARTITION_NAME: &str = "aws-crypto-partition-name";
/// EC key: sort key name.
pub const EC_SORT_NAME: &str = "aws-crypto-sort-name";
/// EC key prefix for attribute values.
pub const EC_ATTR_PREFIX: &str = "aws-crypto-attr.";
/// EC key: version-2 legend.
pub const EC_LEGEND: &str = "aws-crypto-legend";
/// EC key: base64 compressed P-384 public key (suite 0x6701).
pub const EC_PUBLIC_KEY: &str = "aws-crypto-public-key";

/// Length of a name in UTF-16 code units (what the canonical path counts).
pub fn utf16_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.encode_utf16().count()
    }
}

/// The canonical order of top-level attribute names: UTF-16 length first, then UTF-8 bytes.
pub fn canonical_cmp(a: &str, b: &str) -> Ordering {
    utf16_len(a)
        .cmp(&utf16_len(b))
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// Appends the canonical path of top-level attribute `name` in table `table`.
pub fn write_canonical_path(out: &mut Vec<u8>, table: &str, name: &str) {
    out.extend_from_slice(table.as_bytes());
    out.extend_from_slice(&1u64.to_be_bytes());
    out.push(b'$');
    out.extend_from_slice(&(utf16_len(name) as u64).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
}

/// The canonical path as a fresh vector.
pub fn canonical_path(table: &str, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(table.len() + name.len() + 17);
    write_canonical_path(&mut out, table, name);
    out
}

/// Serializes an encryption context: `u16 count || (u16 len, key, u16 len, value)*` in key order.
///
/// An empty context serializes as `0x0000`, as the header's stored context must (0x6700 items store none). The
/// material providers' form of an empty context is the empty string instead; it never applies here, because
/// the full context of an item (the AAD of every keyring) always holds the table and partition key names.
pub fn serialize_context(ec: &EncryptionContext) -> Result<Vec<u8>, DbeError> {
    let mut out = Vec::with_capacity(2 + ec.iter().map(|(k, v)| 4 + k.len() + v.len()).sum::<usize>());
    put_u16(&mut out, ec.len(), "encryption context entry count")?;
    for (k, v) in ec {
        put_u16(&mut out, k.len(), "encryption context key")?;
        out.extend_from_slice(k.as_bytes());
        put_u16(&mut out, v.len(), "encryption context value")?;
        out.extend_from_slice(v.as_bytes());
    }
    Ok(out)
}

pub(crate) fn put_u16(out: &mut Vec<u8>, n: usize, what: &'static str) -> Result<(), DbeError> {
    let v = u16::try_from(n).map_err(|_| DbeError::TooLarge {
        what,
        len: n,
        max: u16::MAX as usize,
    })?;
    out.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Version-1 EC value: base64(type id || serialized value).
fn v1_value(type_id: u16, value: &[u8]) -> String {
    let mut raw = Vec::with_capacity(2 + value.len());
    raw.extend_from_slice(&type_id.to_be_bytes());
    raw.extend_from_slice(value);
    STANDARD.encode(raw)
}

/// One signed attribute as the context builder sees it: name, action, type id and serialized value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContextField<'a> {
    pub name: &'a str,
    pub action: CryptoAction,
    pub type_id: u16,
    pub value: &'a [u8],
}

/// The required ("base") context for a record version (§1.5). `fields` are the signed attributes
/// with their serialized values (for encrypted attributes of a decrypt: their stored bytes).
pub(crate) fn base_context(
    config: &TableConfig,
    version: u8,
    fields: &[ContextField<'_>],
) -> Result<EncryptionContext, DbeError> {
    let mut ec = EncryptionContext::new();
    ec.insert(EC_TABLE_NAME.to_owned(), config.logical_table_name.clone());
    ec.insert(EC_PARTITION_NAME.to_owned(), config.partition_key.clone());
    if let Some(sk) = &config.sort_key {
        ec.insert(EC_SORT_NAME.to_owned(), sk.clone());
    }
    if version == 1 {
        for key in config.key_names() {
            let f = fields
                .iter()
                .find(|f| f.name == key)
                .ok_or_else(|| DbeError::MissingKeyAttribute {
                    attribute: key.to_owned(),
                })?;
            ec.insert([EC_ATTR_PREFIX, key].concat(), v1_value(f.type_id, f.value));
        }
    } else {
        // Sorted by the UTF-8 bytes of the EC key, i.e. of the attribute name.
        let mut included: Vec<&ContextField<'_>> = fields
            .iter()
            .filter(|f| f.action == CryptoAction::SignAndIncludeInEncryptionContext)
            .collect();
        included.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        let mut legend = String::with_capacity(included.len());
        for f in included {
            let (ch, value) = match f.type_id {
                type_id::STRING | type_id::NUMBER => {
                    let s = std::str::from_utf8(f.value).map_err(|_| DbeError::BadValue {
                        attribute: f.name.to_owned(),
                        what: "string is not UTF-8",
                    })?;
                    (if f.type_id == type_id::STRING { 'S' } else { 'N' }, s.to_owned())
                }
                type_id::NULL => ('L', "null".to_owned()),
                type_id::BOOLEAN => (
                    'L',
                    if f.value.first().copied().unwrap_or(0) == 0 {
                        "false"
                    } else {
                        "true"
                    }
                    .to_owned(),
                ),
                _ => ('B', v1_value(f.type_id, f.value)),
            };
            legend.push(ch);
            ec.insert([EC_ATTR_PREFIX, f.name].concat(), value);
        }
        ec.insert(EC_LEGEND.to_owned(), legend);
    }
    Ok(ec)
}

/// Full EC = stored ∪ base; a stored entry contradicting the base context is an error.
pub(crate) fn merge_context(
    stored: &EncryptionContext,
    mut base: EncryptionContext,
) -> Result<EncryptionContext, DbeError> {
    for (k, v) in stored {
        match base.get(k) {
            Some(existing) if existing != v => return Err(DbeError::ContextMismatch { key: k.clone() }),
            Some(_) => {}
            None => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_order_is_length_first() {
        let mut names = vec!["blob", "meta", "pk", "secret", "sk", "tags"];
        names.sort_by(|a, b| canonical_cmp(a, b));
        assert_eq!(names, ["pk", "sk", "blob", "meta", "tags", "secret"]);
        // UTF-16 length: café is 4 units, x𝟁 is 3.
        assert_eq!(utf16_len("café"), 4);
        assert_eq!(utf16_len("x𝟁"), 3);
        let mut names = vec!["café", "x𝟁", "abcd"];
        names.sort_by(|a, b| canonical_cmp(a, b));
        assert_eq!(names, ["x𝟁", "abcd", "café"]);
    }

    #[test]
    fn path_bytes() {
        let p = canonical_path("T", "ab");
        assert_eq!(
            p,
            [b'T', 0, 0, 0, 0, 0, 0, 0, 1, b'$', 0, 0, 0, 0, 0, 0, 0, 2, b'a', b'b']
        );
        assert_eq!(&canonical_path("T", "x𝟁")[10..18], &3u64.to_be_bytes());
    }

    #[test]
    fn context_serialization() {
        let mut ec = EncryptionContext::new();
        ec.insert("b".into(), "2".into());
        ec.insert("a".into(), "1".into());
        assert_eq!(
            serialize_context(&ec).unwrap(),
            [0, 2, 0, 1, b'a', 0, 1, b'1', 0, 1, b'b', 0, 1, b'2']
        );
        assert_eq!(serialize_context(&EncryptionContext::new()).unwrap(), [0, 0]);
        let mut big = EncryptionContext::new();
        big.insert("k".into(), "x".repeat(70_000));
        assert!(serialize_context(&big).is_err());
    }

    #[test]
    fn v2_context_values_and_legend() {
        let mut c = TableConfig::new("T", "bar");
        c.sort_key = Some("sortKey".into());
        let fields = [
            ContextField {
                name: "bar",
                action: CryptoAction::SignAndIncludeInEncryptionContext,
                type_id: type_id::NUMBER,
                value: b"1234",
            },
            ContextField {
                name: "sortKey",
                action: CryptoAction::SignAndIncludeInEncryptionContext,
                type_id: type_id::BINARY,
                value: &[1, 2, 3, 4],
            },
            ContextField {
                name: "sign",
                action: CryptoAction::SignAndIncludeInEncryptionContext,
                type_id: type_id::BOOLEAN,
                value: &[1],
            },
            ContextField {
                name: "sign3",
                action: CryptoAction::SignAndIncludeInEncryptionContext,
                type_id: type_id::BOOLEAN,
                value: &[0],
            },
            ContextField {
                name: "sign4",
                action: CryptoAction::SignAndIncludeInEncryptionContext,
                type_id: type_id::NULL,
                value: &[],
            },
            ContextField {
                name: "enc",
                action: CryptoAction::EncryptAndSign,
                type_id: type_id::BINARY,
                value: &[9],
            },
        ];
        let ec = base_context(&c, 2, &fields).unwrap();
        assert_eq!(ec[EC_LEGEND], "NLLLB");
        assert_eq!(ec["aws-crypto-attr.bar"], "1234");
        assert_eq!(ec["aws-crypto-attr.sortKey"], "//8BAgME");
        assert_eq!(ec["aws-crypto-attr.sign"], "true");
        assert_eq!(ec["aws-crypto-attr.sign3"], "false");
        assert_eq!(ec["aws-crypto-attr.sign4"], "null");
        assert_eq!(ec[EC_SORT_NAME], "sortKey");
        assert!(!ec.contains_key("aws-crypto-attr.enc"));
        let v1 = base_context(&c, 1, &fields).unwrap();
        assert_eq!(v1["aws-crypto-attr.bar"], "AAIxMjM0");
        assert!(!v1.contains_key(EC_LEGEND));
    }

    #[test]
    fn merge_detects_conflicts() {
        let mut stored = EncryptionContext::new();
        stored.insert(EC_PUBLIC_KEY.into(), "k".into());
        let mut base = EncryptionContext::new();
        base.insert(EC_TABLE_NAME.into(), "T".into());
        let full = merge_context(&stored, base.clone()).unwrap();
        assert_eq!(full.len(), 2);
        stored.insert(EC_TABLE_NAME.into(), "U".into());
        assert!(matches!(
            merge_context(&stored, base),
            Err(DbeError::ContextMismatch { .. })
        ));
    }
}
