//! The message header (`data-format/message-header.md`): versions 1 and 2, parsed from a byte prefix, and
//! version 2 written.

use ddbguard_dbe::EncryptionContext;

use crate::crypto::{COMMITMENT_LEN, IV_LEN, TAG_LEN};
use crate::error::{EsdkError, Part};
use crate::keyring::EncryptedDataKey;
use crate::suite::AlgorithmSuite;

/// Message id length in version 1.
pub const MESSAGE_ID_LEN_V1: usize = 16;
/// Message id length in version 2.
pub const MESSAGE_ID_LEN_V2: usize = 32;
/// The version-1 type byte: customer authenticated encrypted data.
const TYPE_CUSTOMER_AED: u8 = 0x80;

/// How the body is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// One encrypted block (content type 0x01).
    NonFramed,
    /// A sequence of frames of `frame_length` bytes and a final frame (content type 0x02).
    Framed,
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Message format version: 1 or 2.
    pub version: u8,
    /// The algorithm suite.
    pub suite: AlgorithmSuite,
    /// Random message id (16 bytes in version 1, 32 in version 2).
    pub message_id: Vec<u8>,
    /// The stored encryption context (including `aws-crypto-public-key` for signing suites).
    pub encryption_context: EncryptionContext,
    /// The encrypted data keys (at least one).
    pub encrypted_data_keys: Vec<EncryptedDataKey>,
    /// Framed or not.
    pub content_type: ContentType,
    /// Frame length (0 for non-framed bodies).
    pub frame_length: u32,
    /// Commitment key (algorithm suite data) of committing suites.
    pub commitment: Option<[u8; COMMITMENT_LEN]>,
    /// Header authentication IV (version 1 stores it; version 2 uses zeros).
    pub header_iv: [u8; IV_LEN],
    /// Header authentication tag.
    pub header_tag: [u8; TAG_LEN],
    /// Length of the header body, the bytes the header tag authenticates.
    pub body_len: usize,
    /// Length of the whole header (body and authentication).
    pub len: usize,
}

/// Reads fields from a byte slice; running out of bytes is [`EsdkError::Truncated`], nothing else is.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    part: Part,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], part: Part) -> Reader<'a> {
        Reader { buf, pos: 0, part }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], EsdkError> {
        let s = self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end))
            .ok_or(EsdkError::Truncated { part: self.part, what })?;
        self.pos += n;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], EsdkError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, EsdkError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, EsdkError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, EsdkError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn utf8(&mut self, len: usize, what: &'static str) -> Result<String, EsdkError> {
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| EsdkError::malformed(self.part, format!("{what} is not UTF-8")))
    }
}

/// Parses the key-value pairs of the AAD field: `u16 count || (u16 len, key, u16 len, value)*`.
pub(crate) fn parse_context(bytes: &[u8]) -> Result<EncryptionContext, EsdkError> {
    let mut ec = EncryptionContext::new();
    if bytes.is_empty() {
        return Ok(ec);
    }
    // The pairs have their own length field in the header, so running out of bytes inside them is a malformed
    // header, not a truncated message.
    let inner = |e: EsdkError| match e {
        EsdkError::Truncated { what, .. } => {
            EsdkError::malformed(Part::Header, format!("encryption context overruns its length ({what})"))
        }
        e => e,
    };
    let mut r = Reader::new(bytes, Part::Header);
    let count = r.u16("encryption context count").map_err(inner)?;
    if count == 0 {
        return Err(EsdkError::malformed(
            Part::Header,
            "encryption context has a length but no pairs",
        ));
    }
    for _ in 0..count {
        let klen = r.u16("encryption context key length").map_err(inner)? as usize;
        let key = r.utf8(klen, "encryption context key").map_err(inner)?;
        let vlen = r.u16("encryption context value length").map_err(inner)? as usize;
        let value = r.utf8(vlen, "encryption context value").map_err(inner)?;
        if ec.insert(key, value).is_some() {
            return Err(EsdkError::malformed(
                Part::Header,
                "encryption context has a duplicate key",
            ));
        }
    }
    if r.pos() != bytes.len() {
        return Err(EsdkError::malformed(
            Part::Header,
            "encryption context has bytes after its last pair",
        ));
    }
    Ok(ec)
}

fn put_u16(out: &mut Vec<u8>, n: usize, what: &'static str) -> Result<(), EsdkError> {
    let v = u16::try_from(n).map_err(|_| EsdkError::TooLarge {
        what,
        len: n as u64,
        max: u16::MAX as u64,
    })?;
    out.extend_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Serializes an encryption context as the format does: empty for an empty context, else
/// `u16 count || (u16 len, key, u16 len, value)*` in key byte order.
pub fn serialize_context(ec: &EncryptionContext) -> Result<Vec<u8>, EsdkError> {
    let mut out = Vec::new();
    if ec.is_empty() {
        return Ok(out);
    }
    put_u16(&mut out, ec.len(), "encryption context pair count")?;
    for (k, v) in ec {
        put_u16(&mut out, k.len(), "encryption context key")?;
        out.extend_from_slice(k.as_bytes());
        put_u16(&mut out, v.len(), "encryption context value")?;
        out.extend_from_slice(v.as_bytes());
    }
    Ok(out)
}

impl Header {
    /// Parses the header at the start of `buf` (trailing bytes, the body, are ignored).
    ///
    /// A `buf` that ends inside the header is [`EsdkError::Truncated`]; a streaming reader retries with more bytes.
    pub fn parse(buf: &[u8]) -> Result<Header, EsdkError> {
        let mut r = Reader::new(buf, Part::Header);
        let version = r.u8("version")?;
        if version != 1 && version != 2 {
            return Err(EsdkError::UnsupportedVersion(version));
        }
        if version == 1 {
            let t = r.u8("type")?;
            if t != TYPE_CUSTOMER_AED {
                return Err(EsdkError::malformed(
                    Part::Header,
                    format!("type 0x{t:02x}, expected 0x80"),
                ));
            }
        }
        let suite_id = r.u16("algorithm suite id")?;
        let suite = AlgorithmSuite::from_id(suite_id)
            .filter(|s| s.message_version() == version)
            .ok_or(EsdkError::UnsupportedSuite(suite_id))?;
        let id_len = if version == 1 {
            MESSAGE_ID_LEN_V1
        } else {
            MESSAGE_ID_LEN_V2
        };
        let message_id = r.take(id_len, "message id")?.to_vec();
        let aad_len = r.u16("AAD length")? as usize;
        let encryption_context = parse_context(r.take(aad_len, "encryption context")?)?;
        let edk_count = r.u16("encrypted data key count")?;
        if edk_count == 0 {
            return Err(EsdkError::malformed(Part::Header, "no encrypted data keys"));
        }
        let mut encrypted_data_keys = Vec::with_capacity(edk_count.min(16) as usize);
        for _ in 0..edk_count {
            let n = r.u16("key provider id length")? as usize;
            let provider_id = r.utf8(n, "key provider id")?;
            let n = r.u16("key provider info length")? as usize;
            let provider_info = r.take(n, "key provider info")?.to_vec();
            let n = r.u16("encrypted data key length")? as usize;
            let ciphertext = r.take(n, "encrypted data key")?.to_vec();
            encrypted_data_keys.push(EncryptedDataKey {
                provider_id,
                provider_info,
                ciphertext,
            });
        }
        let content_type = match r.u8("content type")? {
            0x01 => ContentType::NonFramed,
            0x02 => ContentType::Framed,
            t => return Err(EsdkError::malformed(Part::Header, format!("content type 0x{t:02x}"))),
        };
        if version == 1 {
            if r.array::<4>("reserved")? != [0; 4] {
                return Err(EsdkError::malformed(Part::Header, "reserved bytes are not zero"));
            }
            let iv_len = r.u8("IV length")?;
            if iv_len as usize != IV_LEN {
                return Err(EsdkError::malformed(
                    Part::Header,
                    format!("IV length {iv_len}, expected 12"),
                ));
            }
        }
        let frame_length = r.u32("frame length")?;
        match (content_type, frame_length) {
            (ContentType::NonFramed, 0) => {}
            (ContentType::NonFramed, _) => {
                return Err(EsdkError::malformed(
                    Part::Header,
                    "non-framed message with a frame length",
                ));
            }
            (ContentType::Framed, 0) => return Err(EsdkError::malformed(Part::Header, "frame length 0")),
            (ContentType::Framed, _) => {}
        }
        let commitment = if suite.is_committing() {
            Some(r.array::<COMMITMENT_LEN>("algorithm suite data")?)
        } else {
            None
        };
        let body_len = r.pos();
        let header_iv = if version == 1 {
            r.array::<IV_LEN>("header IV")?
        } else {
            [0u8; IV_LEN]
        };
        let header_tag = r.array::<TAG_LEN>("header authentication tag")?;
        Ok(Header {
            version,
            suite,
            message_id,
            encryption_context,
            encrypted_data_keys,
            content_type,
            frame_length,
            commitment,
            header_iv,
            header_tag,
            body_len,
            len: r.pos(),
        })
    }

    /// Serializes the header body (everything the header tag authenticates).
    pub(crate) fn write_body(&self, out: &mut Vec<u8>) -> Result<(), EsdkError> {
        let start = out.len();
        out.push(self.version);
        if self.version == 1 {
            out.push(TYPE_CUSTOMER_AED);
        }
        out.extend_from_slice(&self.suite.id().to_be_bytes());
        out.extend_from_slice(&self.message_id);
        let ec = serialize_context(&self.encryption_context)?;
        put_u16(out, ec.len(), "encryption context")?;
        out.extend_from_slice(&ec);
        put_u16(out, self.encrypted_data_keys.len(), "encrypted data key count")?;
        for edk in &self.encrypted_data_keys {
            put_u16(out, edk.provider_id.len(), "key provider id")?;
            out.extend_from_slice(edk.provider_id.as_bytes());
            put_u16(out, edk.provider_info.len(), "key provider info")?;
            out.extend_from_slice(&edk.provider_info);
            put_u16(out, edk.ciphertext.len(), "encrypted data key")?;
            out.extend_from_slice(&edk.ciphertext);
        }
        out.push(match self.content_type {
            ContentType::NonFramed => 0x01,
            ContentType::Framed => 0x02,
        });
        if self.version == 1 {
            out.extend_from_slice(&[0; 4]);
            out.push(IV_LEN as u8);
        }
        out.extend_from_slice(&self.frame_length.to_be_bytes());
        if let Some(c) = &self.commitment {
            out.extend_from_slice(c);
        }
        debug_assert_eq!(out.len() - start, self.body_len);
        Ok(())
    }

    /// Serializes the header authentication.
    pub(crate) fn write_auth(&self, out: &mut Vec<u8>) {
        if self.version == 1 {
            out.extend_from_slice(&self.header_iv);
        }
        out.extend_from_slice(&self.header_tag);
    }

    /// The length of the header body this header serializes to.
    pub(crate) fn computed_body_len(&self) -> Result<usize, EsdkError> {
        let mut n = 1 + 2 + self.message_id.len() + 2 + serialize_context(&self.encryption_context)?.len() + 2;
        if self.version == 1 {
            n += 1 + 4 + 1;
        }
        for edk in &self.encrypted_data_keys {
            n += 6 + edk.provider_id.len() + edk.provider_info.len() + edk.ciphertext.len();
        }
        n += 1 + 4 + self.commitment.map_or(0, |c| c.len());
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(version: u8) -> Header {
        let suite = if version == 2 {
            AlgorithmSuite::Aes256GcmHkdfSha512Commit
        } else {
            AlgorithmSuite::Aes256GcmHkdfSha256
        };
        let mut h = Header {
            version,
            suite,
            message_id: vec![9; if version == 2 { 32 } else { 16 }],
            encryption_context: [("tenant".to_owned(), "a".to_owned()), ("id".to_owned(), "1".to_owned())].into(),
            encrypted_data_keys: vec![EncryptedDataKey {
                provider_id: "aws-kms".into(),
                provider_info: b"arn".to_vec(),
                ciphertext: vec![1, 2, 3],
            }],
            content_type: ContentType::Framed,
            frame_length: 4096,
            commitment: (version == 2).then_some([5; 32]),
            header_iv: [0; 12],
            header_tag: [6; 16],
            body_len: 0,
            len: 0,
        };
        h.body_len = h.computed_body_len().unwrap();
        h.len = h.body_len + if version == 1 { 28 } else { 16 };
        h
    }

    fn bytes(h: &Header) -> Vec<u8> {
        let mut out = Vec::new();
        h.write_body(&mut out).unwrap();
        h.write_auth(&mut out);
        out
    }

    #[test]
    fn headers_round_trip_in_both_versions() {
        for v in [1, 2] {
            let h = sample(v);
            let mut b = bytes(&h);
            assert_eq!(b.len(), h.len);
            b.extend_from_slice(b"body");
            assert_eq!(Header::parse(&b).unwrap(), h);
        }
    }

    #[test]
    fn every_prefix_is_truncated_not_malformed() {
        for v in [1, 2] {
            let b = bytes(&sample(v));
            for n in 0..b.len() {
                assert!(
                    matches!(Header::parse(&b[..n]), Err(EsdkError::Truncated { .. })),
                    "version {v}, prefix {n}"
                );
            }
        }
    }

    #[test]
    fn rejects_bad_fields() {
        let b = bytes(&sample(2));
        let with = |i: usize, v: u8| {
            let mut c = b.clone();
            c[i] = v;
            Header::parse(&c)
        };
        assert!(matches!(with(0, 3), Err(EsdkError::UnsupportedVersion(3))));
        // A version-1 suite in a version-2 header.
        assert!(matches!(with(1, 0x00), Err(EsdkError::UnsupportedSuite(0x0078))));
        assert!(matches!(with(1, 0x67), Err(EsdkError::UnsupportedSuite(0x6778))));
        let mut h = sample(2);
        h.content_type = ContentType::NonFramed;
        assert!(matches!(Header::parse(&bytes(&h)), Err(EsdkError::Malformed { .. })));
        h.frame_length = 0;
        assert!(Header::parse(&bytes(&h)).is_ok());
        h.encrypted_data_keys.clear();
        h.body_len = h.computed_body_len().unwrap();
        assert!(matches!(Header::parse(&bytes(&h)), Err(EsdkError::Malformed { .. })));
    }

    #[test]
    fn context_serialization_is_empty_for_an_empty_context_and_rejects_duplicates() {
        assert!(serialize_context(&EncryptionContext::new()).unwrap().is_empty());
        let ec: EncryptionContext = [("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())].into();
        let s = serialize_context(&ec).unwrap();
        assert_eq!(s, b"\x00\x02\x00\x01a\x00\x011\x00\x01b\x00\x012");
        assert_eq!(parse_context(&s).unwrap(), ec);
        let dup = b"\x00\x02\x00\x01a\x00\x011\x00\x01a\x00\x012";
        assert!(matches!(parse_context(dup), Err(EsdkError::Malformed { .. })));
        assert!(matches!(
            parse_context(&s[..s.len() - 1]),
            Err(EsdkError::Malformed { .. })
        ));
        assert!(matches!(parse_context(b"\x00\x00"), Err(EsdkError::Malformed { .. })));
    }
}
