//! The material description (`*amzn-ddb-map-desc*`): how an item's keys and algorithms are described.
//!
//! Layout: a 4-byte version (`00 00 00 00`), then for each entry (Python: in byte order of the names; Java: in
//! hash-map order),
//! `u32 length || name (UTF-8)` and `u32 length || value (UTF-8)`, all big-endian, up to the end.
//!
//! The clients do not sign this attribute: its integrity rests on every value being consumed by a check that
//! fails when it changes (the wrapped key's authentication, the KMS encryption context, an exact algorithm name).
//! Parsing is therefore strict: no repeated entry, no trailing bytes; and an item's description
//! may hold only the entry names the two clients write ([`keys`], [`MaterialDescription::check_names`]): an entry
//! this crate cannot check is refused rather than ignored.

use std::collections::BTreeMap;

use crate::error::DdbecError;

/// The entry names the Java and Python clients write.
pub mod keys {
    /// The attribute encryption mode, appended to the content key's algorithm (`/CBC/PKCS5Padding`).
    pub const SYMMETRIC_MODE: &str = "amzn-ddb-map-sym-mode";
    /// The signing algorithm of an asymmetric (or, from Python, any) signing key.
    pub const SIGNING_ALGORITHM: &str = "amzn-ddb-map-signingAlg";
    /// The wrapped (or KMS-encrypted) content key, base64.
    pub const WRAPPED_KEY: &str = "amzn-ddb-env-key";
    /// The content key's algorithm and optional length in bits (`AES`, `AES/256`).
    pub const CONTENT_ALGORITHM: &str = "amzn-ddb-env-alg";
    /// How the content key is wrapped (`AESWrap`, `RSA/ECB/OAEPWithSHA-256AndMGF1Padding`, `kms`).
    pub const WRAPPING_ALGORITHM: &str = "amzn-ddb-wrap-alg";
    /// The direct KMS provider's signing key algorithm and length (`HmacSHA256/256`).
    pub const ITEM_SIGNATURE_ALGORITHM: &str = "amzn-ddb-sig-alg";
    /// The direct KMS provider's marker that the key attributes are in the encryption context (`*keys*`).
    pub const KMS_CONTEXT_ATTRIBUTES: &str = "aws-kms-ec-attr";
    /// The most-recent provider's material name and version (`name#version`).
    pub const META_ID: &str = "amzn-ddb-meta-id";

    /// Every name accepted.
    pub const ALL: [&str; 8] = [
        SYMMETRIC_MODE,
        SIGNING_ALGORITHM,
        WRAPPED_KEY,
        CONTENT_ALGORITHM,
        WRAPPING_ALGORITHM,
        ITEM_SIGNATURE_ALGORITHM,
        KMS_CONTEXT_ATTRIBUTES,
        META_ID,
    ];
}

/// The one encryption mode the clients write.
pub const CBC_PKCS5_PADDING: &str = "/CBC/PKCS5Padding";

/// A parsed material description: entry name to value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MaterialDescription {
    entries: BTreeMap<String, String>,
}

fn malformed(what: &'static str) -> DdbecError {
    DdbecError::MalformedDescription { what }
}

fn read_u32(bytes: &[u8], at: &mut usize) -> Result<u32, DdbecError> {
    let end = at.checked_add(4).ok_or_else(|| malformed("length overflows"))?;
    let field = bytes.get(*at..end).ok_or_else(|| malformed("truncated length"))?;
    *at = end;
    let mut b = [0u8; 4];
    b.copy_from_slice(field);
    Ok(u32::from_be_bytes(b))
}

fn read_string(bytes: &[u8], at: &mut usize) -> Result<String, DdbecError> {
    let len = usize::try_from(read_u32(bytes, at)?).map_err(|_| malformed("length overflows"))?;
    let end = at.checked_add(len).ok_or_else(|| malformed("length overflows"))?;
    let field = bytes.get(*at..end).ok_or_else(|| malformed("truncated entry"))?;
    *at = end;
    String::from_utf8(field.to_vec()).map_err(|_| malformed("entry is not UTF-8"))
}

impl MaterialDescription {
    /// Parses the attribute's bytes strictly (see the module doc).
    pub fn parse(bytes: &[u8]) -> Result<MaterialDescription, DdbecError> {
        let mut at = 0;
        let version = read_u32(bytes, &mut at)?;
        if version != 0 {
            return Err(DdbecError::UnsupportedVersion { version });
        }
        let mut entries = BTreeMap::new();
        while at < bytes.len() {
            let name = read_string(bytes, &mut at)?;
            let value = read_string(bytes, &mut at)?;
            // The Java client writes the entries in hash-map order, so order is not checked; a repeat is refused.
            if entries.insert(name, value).is_some() {
                return Err(malformed("entry repeated"));
            }
        }
        Ok(MaterialDescription { entries })
    }

    /// Builds a description from entries (any names; [`MaterialDescription::parse`] is the strict side).
    pub fn from_entries<I, K, V>(entries: I) -> MaterialDescription
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        MaterialDescription {
            entries: entries.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        }
    }

    /// The serialized form (what the clients write).
    pub fn serialize(&self) -> Result<Vec<u8>, DdbecError> {
        let mut out = vec![0u8; 4];
        // BTreeMap<String, _> iterates in byte order of the names: the clients' order.
        for (name, value) in &self.entries {
            for s in [name, value] {
                let len = u32::try_from(s.len()).map_err(|_| malformed("entry longer than 4 GiB"))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        Ok(out)
    }

    /// Refuses any entry name the clients do not write (see the module doc for why).
    pub fn check_names(&self) -> Result<(), DdbecError> {
        if self.entries.keys().all(|k| keys::ALL.contains(&k.as_str())) {
            Ok(())
        } else {
            Err(malformed("unknown entry name"))
        }
    }

    /// The description with one entry set.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> MaterialDescription {
        self.entries.insert(name.into(), value.into());
        self
    }

    /// The value of an entry.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(String::as_str)
    }

    /// Every entry, in name order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether the description is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A `NAME` or `NAME/BITS` key description (`AES/256`, `HmacSHA256/256`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo<'a> {
    /// The algorithm name.
    pub algorithm: &'a str,
    /// The length in bits, where given.
    pub bits: Option<usize>,
}

impl<'a> KeyInfo<'a> {
    /// Parses `NAME[/BITS]`; `field` names the entry in errors.
    pub fn parse(s: &'a str) -> Result<KeyInfo<'a>, DdbecError> {
        match s.split_once('/') {
            None => Ok(KeyInfo {
                algorithm: s,
                bits: None,
            }),
            Some((algorithm, bits)) => {
                // Only canonical decimal: a changed digit must not parse to the same length.
                if bits.is_empty() || bits.starts_with('0') || !bits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(malformed("key length is not a decimal number"));
                }
                let bits = bits
                    .parse()
                    .map_err(|_| malformed("key length is not a decimal number"))?;
                Ok(KeyInfo {
                    algorithm,
                    bits: Some(bits),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_in_name_order_and_parses_back() {
        let md = MaterialDescription::from_entries([
            (keys::SYMMETRIC_MODE, CBC_PKCS5_PADDING),
            (keys::SIGNING_ALGORITHM, "HmacSHA256"),
        ]);
        let bytes = md.serialize().unwrap();
        assert_eq!(&bytes[..4], &[0, 0, 0, 0]);
        assert_eq!(&bytes[4..8], &23u32.to_be_bytes());
        assert_eq!(&bytes[8..31], keys::SIGNING_ALGORITHM.as_bytes());
        assert_eq!(MaterialDescription::parse(&bytes).unwrap(), md);
    }

    #[test]
    fn refuses_unknown_names_repeats_trailing_bytes_and_other_versions() {
        let unknown = MaterialDescription::from_entries([("A", "x")]).serialize().unwrap();
        assert!(matches!(
            MaterialDescription::parse(&unknown).unwrap().check_names(),
            Err(DdbecError::MalformedDescription {
                what: "unknown entry name"
            })
        ));
        let known = MaterialDescription::from_entries([(keys::META_ID, "m#1")]);
        assert!(known.check_names().is_ok());
        let a = MaterialDescription::from_entries([(keys::SYMMETRIC_MODE, "a")])
            .serialize()
            .unwrap();
        let b = MaterialDescription::from_entries([(keys::SIGNING_ALGORITHM, "b")])
            .serialize()
            .unwrap();
        let mut swapped = b.clone();
        swapped.extend_from_slice(&a[4..]);
        assert_eq!(MaterialDescription::parse(&swapped).unwrap().entries().count(), 2);
        let mut repeated = a.clone();
        repeated.extend_from_slice(&a[4..]);
        assert!(MaterialDescription::parse(&repeated).is_err());
        let mut trailing = a.clone();
        trailing.push(0);
        assert!(MaterialDescription::parse(&trailing).is_err());
        let mut v1 = a;
        v1[3] = 1;
        assert_eq!(
            MaterialDescription::parse(&v1),
            Err(DdbecError::UnsupportedVersion { version: 1 })
        );
        assert!(MaterialDescription::parse(&[0, 0]).is_err());
        assert_eq!(
            MaterialDescription::parse(&[0; 4]).unwrap(),
            MaterialDescription::default()
        );
    }

    #[test]
    fn key_info_takes_only_canonical_lengths() {
        assert_eq!(
            KeyInfo::parse("AES").unwrap(),
            KeyInfo {
                algorithm: "AES",
                bits: None
            }
        );
        assert_eq!(
            KeyInfo::parse("HmacSHA256/256").unwrap(),
            KeyInfo {
                algorithm: "HmacSHA256",
                bits: Some(256)
            }
        );
        for bad in ["AES/", "AES/0256", "AES/25x", "AES/+256"] {
            assert!(KeyInfo::parse(bad).is_err(), "{bad}");
        }
    }
}
