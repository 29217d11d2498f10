//! Encryption (`client-apis/encrypt.md`): message format version 2 under a committing suite, framed (4096-byte
//! frames, as the official SDKs) or non-framed. Version 1 and the non-committing suites are never written.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ddbguard_dbe::EncryptionContext;

use crate::crypto::{
    AAD_FINAL_FRAME, AAD_FRAME, AAD_SINGLE_BLOCK, FINAL_FRAME_MARKER, IV_LEN, MAX_NON_FRAMED_LEN, MessageDigest,
    MessageKeys, Signer, random_fill, sequence_iv,
};
use crate::decrypt::{EC_PUBLIC_KEY, RESERVED_EC_PREFIX};
use crate::error::EsdkError;
use crate::header::{ContentType, Header, MESSAGE_ID_LEN_V1, MESSAGE_ID_LEN_V2};
use crate::keyring::Keyring;
use crate::suite::AlgorithmSuite;

/// The frame length the official SDKs use by default.
pub const DEFAULT_FRAME_LENGTH: u32 = 4096;

/// How to encrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptOptions {
    /// The suite: 0x0578 (the default, signed) or 0x0478.
    pub suite: AlgorithmSuite,
    /// Frame length, or `None` for a non-framed body. Default: 4096.
    pub frame_length: Option<u32>,
}

impl Default for EncryptOptions {
    fn default() -> EncryptOptions {
        EncryptOptions {
            suite: AlgorithmSuite::Aes256GcmHkdfSha512CommitEcdsaP384,
            frame_length: Some(DEFAULT_FRAME_LENGTH),
        }
    }
}

/// Encrypts `plaintext` under a fresh data key from `keyring`, bound to `context`.
///
/// `context` must not use the reserved `aws-crypto-` prefix; for the signing suite the verification key is added
/// to the stored context, as the official SDKs do.
pub async fn encrypt(
    keyring: &dyn Keyring,
    options: &EncryptOptions,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, EsdkError> {
    if !options.suite.is_committing() {
        return Err(EsdkError::InvalidRequest(format!(
            "{} does not commit to its data key; only 0x0478 and 0x0578 are written",
            options.suite
        )));
    }
    encrypt_any_suite(keyring, options, context, plaintext).await
}

/// Encrypts under any suite, version 1 for the non-committing ones: the tests' way to produce the legacy messages
/// the decryptor must still read.
pub(crate) async fn encrypt_any_suite(
    keyring: &dyn Keyring,
    options: &EncryptOptions,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, EsdkError> {
    let suite = options.suite;
    if let Some(k) = context.keys().find(|k| k.starts_with(RESERVED_EC_PREFIX)) {
        return Err(EsdkError::InvalidRequest(format!(
            "encryption context key {k:?} uses the reserved prefix {RESERVED_EC_PREFIX}"
        )));
    }
    let (content_type, frame_length) = match options.frame_length {
        Some(0) => return Err(EsdkError::InvalidRequest("frame length 0".into())),
        Some(n) => {
            let frames = plaintext.len() as u64 / n as u64 + 1;
            if frames >= u32::MAX as u64 {
                return Err(EsdkError::TooLarge {
                    what: "frame count",
                    len: frames,
                    max: u32::MAX as u64 - 1,
                });
            }
            (ContentType::Framed, n)
        }
        None => {
            if plaintext.len() as u64 > MAX_NON_FRAMED_LEN {
                return Err(EsdkError::TooLarge {
                    what: "non-framed plaintext",
                    len: plaintext.len() as u64,
                    max: MAX_NON_FRAMED_LEN,
                });
            }
            (ContentType::NonFramed, 0)
        }
    };
    let signer = suite.signature().map(Signer::generate).transpose()?;
    let mut ec = context.clone();
    if let Some(s) = &signer {
        ec.insert(EC_PUBLIC_KEY.to_owned(), STANDARD.encode(s.public_key_compressed()?));
    }
    let generated = keyring.generate_data_key(suite, &ec).await?;
    if generated.edks.is_empty() {
        return Err(EsdkError::InvalidRequest(
            "the keyring produced no encrypted data key".into(),
        ));
    }
    let version = suite.message_version();
    let mut message_id = vec![
        0u8;
        if version == 2 {
            MESSAGE_ID_LEN_V2
        } else {
            MESSAGE_ID_LEN_V1
        }
    ];
    random_fill(&mut message_id)?;
    let keys = MessageKeys::derive(suite, &generated.key, &message_id)?;
    let mut header = Header {
        version,
        suite,
        message_id,
        encryption_context: ec,
        encrypted_data_keys: generated.edks,
        content_type,
        frame_length,
        commitment: keys.commitment.as_ref().map(|c| **c),
        header_iv: [0u8; IV_LEN],
        header_tag: [0u8; 16],
        body_len: 0,
        len: 0,
    };
    header.body_len = header.computed_body_len()?;
    let mut out = Vec::with_capacity(header.body_len + 32 + plaintext.len() + plaintext.len() / 128 + 200);
    header.write_body(&mut out)?;
    header.header_tag = keys.content.seal(header.header_iv, &out, &mut [])?;
    header.write_auth(&mut out);

    let mut aad = Vec::with_capacity(header.message_id.len() + AAD_FINAL_FRAME.len() + 12);
    let mut seal = |out: &mut Vec<u8>, sequence: u32, label: &[u8], chunk: &[u8]| -> Result<(), EsdkError> {
        aad.clear();
        aad.extend_from_slice(&header.message_id);
        aad.extend_from_slice(label);
        aad.extend_from_slice(&sequence.to_be_bytes());
        aad.extend_from_slice(&(chunk.len() as u64).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(chunk);
        let tag = keys.content.seal(sequence_iv(sequence), &aad, &mut out[start..])?;
        out.extend_from_slice(&tag);
        Ok(())
    };
    match content_type {
        ContentType::NonFramed => {
            out.extend_from_slice(&sequence_iv(1));
            out.extend_from_slice(&(plaintext.len() as u64).to_be_bytes());
            seal(&mut out, 1, AAD_SINGLE_BLOCK, plaintext)?;
        }
        ContentType::Framed => {
            let frame = frame_length as usize;
            // Regular frames while more than a frame remains; the final frame takes the rest (possibly a whole
            // frame, or nothing for an empty plaintext).
            let regular = plaintext.len().saturating_sub(1) / frame;
            let mut sequence = 1u32;
            for chunk in plaintext.chunks(frame).take(regular) {
                out.extend_from_slice(&sequence.to_be_bytes());
                out.extend_from_slice(&sequence_iv(sequence));
                seal(&mut out, sequence, AAD_FRAME, chunk)?;
                sequence += 1;
            }
            let last = &plaintext[regular * frame..];
            out.extend_from_slice(&FINAL_FRAME_MARKER.to_be_bytes());
            out.extend_from_slice(&sequence.to_be_bytes());
            out.extend_from_slice(&sequence_iv(sequence));
            out.extend_from_slice(&(last.len() as u32).to_be_bytes());
            seal(&mut out, sequence, AAD_FINAL_FRAME, last)?;
        }
    }
    if let (Some(signer), Some(alg)) = (signer, suite.signature()) {
        let mut digest = MessageDigest::new(alg);
        digest.update(&out);
        let signature = signer.sign(digest)?;
        let len = u16::try_from(signature.len()).map_err(|_| EsdkError::Crypto("signature length"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&signature);
    }
    Ok(out)
}
