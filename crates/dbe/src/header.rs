//! `aws_dbe_head` and `aws_dbe_foot` codecs (§1.6, §1.9).

use crate::config::{AlgorithmSuite, CryptoAction};
use crate::context::{EncryptionContext, put_u16};
use crate::error::DbeError;

/// Message ID length.
pub const MESSAGE_ID_LEN: usize = 32;
/// Header commitment length.
pub const COMMITMENT_LEN: usize = 32;
/// Recipient tag length (HMAC-SHA-384).
pub const TAG_LEN: usize = 48;
/// ECDSA P-384 DER signature length as written by the DB-ESDK.
pub const SIGNATURE_LEN: usize = 103;
/// Length of the intermediate-wrapped data key at the start of every EDK ciphertext.
pub const WRAPPED_PDK_LEN: usize = 48;

/// One encrypted data key.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedDataKey {
    /// Key provider id, e.g. `aws-kms`, `aws-kms-hierarchy`, or a raw keyring namespace.
    pub provider_id: String,
    /// Key provider info, e.g. the KMS key ARN or branch key id.
    pub provider_info: Vec<u8>,
    /// `wrapped PDK (48 bytes) || provider-wrapped intermediate key` as stored in the header.
    pub ciphertext: Vec<u8>,
}

impl EncryptedDataKey {
    /// The intermediate-wrapped data key (first 48 bytes of the ciphertext).
    pub fn wrapped_pdk(&self) -> Option<&[u8]> {
        self.ciphertext.get(..WRAPPED_PDK_LEN)
    }

    /// The provider part of the ciphertext (after the 48-byte wrapped data key).
    pub fn provider_ciphertext(&self) -> Option<&[u8]> {
        self.ciphertext.get(WRAPPED_PDK_LEN..)
    }
}

impl std::fmt::Debug for EncryptedDataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedDataKey")
            .field("provider_id", &self.provider_id)
            .field("provider_info", &String::from_utf8_lossy(&self.provider_info))
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// A parsed `aws_dbe_head`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Record version: 1, or 2 when SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT is used.
    pub version: u8,
    /// Algorithm suite (from the flavor byte).
    pub suite: AlgorithmSuite,
    /// Random per-record id.
    pub message_id: [u8; MESSAGE_ID_LEN],
    /// Action of each signed attribute, in canonical order.
    pub legend: Vec<CryptoAction>,
    /// The stored encryption context (in practice only `aws-crypto-public-key`, or empty).
    pub stored_context: EncryptionContext,
    /// Encrypted data keys (1..=255).
    pub edks: Vec<EncryptedDataKey>,
    /// Header commitment.
    pub commitment: [u8; COMMITMENT_LEN],
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DbeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end.and_then(|e| self.buf.get(self.pos..e)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(DbeError::MalformedHeader { what, offset: self.pos }),
        }
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DbeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<usize, DbeError> {
        let b = self.take(2, what)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u16_bytes(&mut self, what: &'static str) -> Result<&'a [u8], DbeError> {
        let n = self.u16(what)?;
        self.take(n, what)
    }
    fn utf8(&mut self, what: &'static str) -> Result<&'a str, DbeError> {
        let at = self.pos;
        let b = self.u16_bytes(what)?;
        std::str::from_utf8(b).map_err(|_| DbeError::MalformedHeader {
            what: "string is not UTF-8",
            offset: at,
        })
    }
}

impl Header {
    /// Parses header bytes; rejects unknown versions/flavors, bad legend bytes, unsorted or duplicate
    /// context keys, zero EDKs, EDK ciphertexts shorter than 48 bytes, and missing or trailing bytes.
    pub fn parse(bytes: &[u8]) -> Result<Header, DbeError> {
        let mut c = Cursor { buf: bytes, pos: 0 };
        let version = c.u8("truncated before version")?;
        if version != 1 && version != 2 {
            return Err(DbeError::UnsupportedVersion(version));
        }
        let flavor = c.u8("truncated before flavor")?;
        let suite = AlgorithmSuite::from_flavor(flavor).ok_or(DbeError::UnsupportedFlavor(flavor))?;
        let mut message_id = [0u8; MESSAGE_ID_LEN];
        message_id.copy_from_slice(c.take(MESSAGE_ID_LEN, "truncated message id")?);
        let legend_at = c.pos;
        let legend_bytes = c.u16_bytes("truncated legend")?;
        let mut legend = Vec::with_capacity(legend_bytes.len());
        for (i, &b) in legend_bytes.iter().enumerate() {
            legend.push(CryptoAction::from_legend_byte(b).ok_or(DbeError::MalformedHeader {
                what: "legend byte is not 'e', 's' or 'c'",
                offset: legend_at + 2 + i,
            })?);
        }
        let count = c.u16("truncated encryption context count")?;
        let mut stored_context = EncryptionContext::new();
        let mut last: Option<&str> = None;
        for _ in 0..count {
            let at = c.pos;
            let k = c.utf8("truncated encryption context key")?;
            let v = c.utf8("truncated encryption context value")?;
            if last.is_some_and(|l| l.as_bytes() >= k.as_bytes()) {
                return Err(DbeError::MalformedHeader {
                    what: "encryption context keys not sorted or duplicated",
                    offset: at,
                });
            }
            last = Some(k);
            stored_context.insert(k.to_owned(), v.to_owned());
        }
        let edk_at = c.pos;
        let edk_count = c.u8("truncated EDK count")?;
        if edk_count == 0 {
            return Err(DbeError::MalformedHeader {
                what: "no encrypted data keys",
                offset: edk_at,
            });
        }
        let mut edks = Vec::with_capacity(usize::from(edk_count));
        for _ in 0..edk_count {
            let provider_id = c.utf8("truncated EDK provider id")?.to_owned();
            let provider_info = c.u16_bytes("truncated EDK provider info")?.to_vec();
            let ct_at = c.pos;
            let ciphertext = c.u16_bytes("truncated EDK ciphertext")?.to_vec();
            if ciphertext.len() < WRAPPED_PDK_LEN {
                return Err(DbeError::MalformedHeader {
                    what: "EDK ciphertext shorter than the 48-byte wrapped data key",
                    offset: ct_at,
                });
            }
            edks.push(EncryptedDataKey {
                provider_id,
                provider_info,
                ciphertext,
            });
        }
        let mut commitment = [0u8; COMMITMENT_LEN];
        commitment.copy_from_slice(c.take(COMMITMENT_LEN, "truncated commitment")?);
        if c.pos != bytes.len() {
            return Err(DbeError::MalformedHeader {
                what: "trailing bytes after the commitment",
                offset: c.pos,
            });
        }
        Ok(Header {
            version,
            suite,
            message_id,
            legend,
            stored_context,
            edks,
            commitment,
        })
    }

    /// The header bytes without the commitment (what the commitment is computed over).
    pub fn encode_body(&self) -> Result<Vec<u8>, DbeError> {
        let mut out = Vec::with_capacity(
            64 + self.legend.len()
                + self
                    .edks
                    .iter()
                    .map(|e| 6 + e.provider_id.len() + e.provider_info.len() + e.ciphertext.len())
                    .sum::<usize>()
                + self
                    .stored_context
                    .iter()
                    .map(|(k, v)| 4 + k.len() + v.len())
                    .sum::<usize>(),
        );
        out.push(self.version);
        out.push(self.suite.flavor());
        out.extend_from_slice(&self.message_id);
        put_u16(&mut out, self.legend.len(), "legend")?;
        out.extend(self.legend.iter().filter_map(|a| a.legend_byte()));
        if self.legend.iter().any(|a| !a.is_signed()) {
            return Err(DbeError::Crypto("DO_NOTHING has no legend byte"));
        }
        out.extend_from_slice(&crate::context::serialize_context(&self.stored_context)?);
        let count = u8::try_from(self.edks.len())
            .ok()
            .filter(|&n| n > 0)
            .ok_or(DbeError::TooLarge {
                what: "EDK count (1..=255)",
                len: self.edks.len(),
                max: 255,
            })?;
        out.push(count);
        for e in &self.edks {
            put_u16(&mut out, e.provider_id.len(), "EDK provider id")?;
            out.extend_from_slice(e.provider_id.as_bytes());
            put_u16(&mut out, e.provider_info.len(), "EDK provider info")?;
            out.extend_from_slice(&e.provider_info);
            put_u16(&mut out, e.ciphertext.len(), "EDK ciphertext")?;
            out.extend_from_slice(&e.ciphertext);
        }
        Ok(out)
    }

    /// The full header bytes.
    pub fn encode(&self) -> Result<Vec<u8>, DbeError> {
        let mut out = self.encode_body()?;
        out.extend_from_slice(&self.commitment);
        Ok(out)
    }

    /// Parses the `aws_dbe_head` attribute of an encrypted item (checks presence and type B).
    pub fn from_item(item: &crate::Item) -> Result<Header, DbeError> {
        let (head, _) = crate::item::header_and_footer(item, None)?;
        Header::parse(head)
    }
}

/// A parsed `aws_dbe_foot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// One HMAC-SHA-384 recipient tag per EDK, in header order.
    pub tags: Vec<[u8; TAG_LEN]>,
    /// The DER ECDSA P-384 signature (suite 0x6701 only).
    pub signature: Option<[u8; SIGNATURE_LEN]>,
}

impl Footer {
    /// The exact footer length a header implies.
    pub fn expected_len(header: &Header) -> usize {
        header.edks.len() * TAG_LEN + if header.suite.signs() { SIGNATURE_LEN } else { 0 }
    }

    /// Parses footer bytes for this header; the length must be exact.
    pub fn parse(bytes: &[u8], header: &Header) -> Result<Footer, DbeError> {
        let expected = Footer::expected_len(header);
        if bytes.len() != expected {
            return Err(DbeError::FooterLength {
                len: bytes.len(),
                expected,
                edks: header.edks.len(),
                flavor: header.suite.flavor(),
            });
        }
        let (tag_bytes, sig) = bytes.split_at(header.edks.len() * TAG_LEN);
        let tags = tag_bytes
            .chunks_exact(TAG_LEN)
            .map(|c| {
                let mut t = [0u8; TAG_LEN];
                t.copy_from_slice(c);
                t
            })
            .collect();
        let signature = if header.suite.signs() {
            let mut s = [0u8; SIGNATURE_LEN];
            s.copy_from_slice(sig);
            Some(s)
        } else {
            None
        };
        Ok(Footer { tags, signature })
    }

    /// The footer bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.tags.len() * TAG_LEN + SIGNATURE_LEN);
        for t in &self.tags {
            out.extend_from_slice(t);
        }
        if let Some(s) = &self.signature {
            out.extend_from_slice(s);
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample(suite: AlgorithmSuite, edks: usize) -> Header {
        let mut stored_context = EncryptionContext::new();
        if suite.signs() {
            stored_context.insert("aws-crypto-public-key".into(), "A".repeat(68));
        }
        Header {
            version: 1,
            suite,
            message_id: [7; 32],
            legend: vec![CryptoAction::SignOnly, CryptoAction::EncryptAndSign],
            stored_context,
            edks: (0..edks)
                .map(|i| EncryptedDataKey {
                    provider_id: "aws-kms-hierarchy".into(),
                    provider_info: format!("branch-{i}").into_bytes(),
                    ciphertext: vec![i as u8; 140],
                })
                .collect(),
            commitment: [9; 32],
        }
    }

    #[test]
    fn round_trip_and_truncations() {
        for suite in [AlgorithmSuite::HmacOnly, AlgorithmSuite::EcdsaP384] {
            let h = sample(suite, 2);
            let bytes = h.encode().unwrap();
            assert_eq!(Header::parse(&bytes).unwrap(), h);
            for n in 0..bytes.len() {
                assert!(Header::parse(&bytes[..n]).is_err(), "truncated to {n}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(matches!(
                Header::parse(&longer),
                Err(DbeError::MalformedHeader {
                    what: "trailing bytes after the commitment",
                    ..
                })
            ));
        }
    }

    #[test]
    fn sizes_match_the_digest() {
        let mut h = sample(AlgorithmSuite::HmacOnly, 1);
        h.legend = vec![CryptoAction::SignOnly; 3];
        h.edks[0].provider_info = b"bd3842ff-3076-4092-9918-4395730050b8".to_vec();
        assert_eq!(h.encode().unwrap().len(), 273);
        h.suite = AlgorithmSuite::EcdsaP384;
        h.stored_context.insert("aws-crypto-public-key".into(), "A".repeat(68));
        assert_eq!(h.encode().unwrap().len(), 366);
    }

    #[test]
    fn bad_fields() {
        let bytes = sample(AlgorithmSuite::EcdsaP384, 1).encode().unwrap();
        let mut b = bytes.clone();
        b[0] = 3;
        assert!(matches!(Header::parse(&b), Err(DbeError::UnsupportedVersion(3))));
        let mut b = bytes.clone();
        b[1] = 2;
        assert!(matches!(Header::parse(&b), Err(DbeError::UnsupportedFlavor(2))));
        let mut b = bytes.clone();
        b[36] = b'x';
        assert!(matches!(
            Header::parse(&b),
            Err(DbeError::MalformedHeader { offset: 36, .. })
        ));
    }

    #[test]
    fn footer_codec() {
        for suite in [AlgorithmSuite::HmacOnly, AlgorithmSuite::EcdsaP384] {
            let h = sample(suite, 2);
            let f = Footer {
                tags: vec![[1; 48], [2; 48]],
                signature: suite.signs().then_some([3; 103]),
            };
            let bytes = f.encode();
            assert_eq!(Footer::parse(&bytes, &h).unwrap(), f);
            for n in 0..bytes.len() {
                assert!(matches!(
                    Footer::parse(&bytes[..n], &h),
                    Err(DbeError::FooterLength { .. })
                ));
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Footer::parse(&longer, &h).is_err());
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Header::parse(&b);
        }

        #[test]
        fn mutations_never_panic(i in any::<prop::sample::Index>(), v in any::<u8>()) {
            let mut b = sample(AlgorithmSuite::EcdsaP384, 2).encode().unwrap();
            let at = i.index(b.len());
            b[at] = v;
            if let Ok(h) = Header::parse(&b) {
                prop_assert_eq!(h.encode().unwrap(), b);
            }
        }
    }
}
