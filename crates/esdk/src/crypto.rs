//! Key derivation, content encryption and message signatures (`framework/transitive-requirements.md`).
//!
//! AES-GCM and ECDSA from aws-lc-rs (one key schedule per message, reused for every frame; signatures over a
//! running digest so that no frame has to stay in memory until the footer); HKDF from RustCrypto.

use aws_lc_rs::aead::{AES_128_GCM, AES_192_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest;
use aws_lc_rs::encoding::{AsBigEndian, EcPublicKeyCompressedBin};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_ASN1_SIGNING,
    EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use hkdf::Hkdf;
use sha2::{Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::EsdkError;
use crate::keyring::DataKey;
use crate::suite::{AlgorithmSuite, Kdf, SignatureAlgorithm};

/// AES-GCM IV length of every suite.
pub const IV_LEN: usize = 12;
/// AES-GCM tag length of every suite.
pub const TAG_LEN: usize = 16;
/// Commitment key length (algorithm suite data of the committing suites).
pub const COMMITMENT_LEN: usize = 32;

/// Body AAD content of regular frames.
pub(crate) const AAD_FRAME: &[u8] = b"AWSKMSEncryptionClient Frame";
/// Body AAD content of the final frame.
pub(crate) const AAD_FINAL_FRAME: &[u8] = b"AWSKMSEncryptionClient Final Frame";
/// Body AAD content of a non-framed body.
pub(crate) const AAD_SINGLE_BLOCK: &[u8] = b"AWSKMSEncryptionClient Single Block";
/// The final-frame marker in place of a sequence number.
pub(crate) const FINAL_FRAME_MARKER: u32 = u32::MAX;
/// Largest non-framed body the format allows (2^36 - 32 bytes, the AES-GCM limit).
pub(crate) const MAX_NON_FRAMED_LEN: u64 = (1 << 36) - 32;

const DERIVE_KEY_LABEL: &[u8] = b"DERIVEKEY";
const COMMIT_KEY_LABEL: &[u8] = b"COMMITKEY";

/// The per-message content key: AES-GCM under the derived key, set up once.
pub(crate) struct ContentKey(LessSafeKey);

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(<redacted>)")
    }
}

impl ContentKey {
    fn new(key: &[u8]) -> Result<ContentKey, EsdkError> {
        let alg = match key.len() {
            16 => &AES_128_GCM,
            24 => &AES_192_GCM,
            32 => &AES_256_GCM,
            _ => return Err(EsdkError::Crypto("content key length")),
        };
        let unbound = UnboundKey::new(alg, key).map_err(|_| EsdkError::Crypto("AES-GCM key setup failed"))?;
        Ok(ContentKey(LessSafeKey::new(unbound)))
    }

    /// Encrypts in place; returns the tag.
    pub fn seal(&self, iv: [u8; IV_LEN], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], EsdkError> {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), buf)
            .map_err(|_| EsdkError::Crypto("AES-GCM encryption failed"))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts in place; false if the tag does not authenticate (the buffer is then garbage).
    pub fn open(&self, iv: [u8; IV_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
        self.0
            .open_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), tag, buf)
            .is_ok()
    }
}

/// The keys a data key yields for one message.
pub(crate) struct MessageKeys {
    pub content: ContentKey,
    /// For committing suites: the commitment key the header must carry.
    pub commitment: Option<Zeroizing<[u8; COMMITMENT_LEN]>>,
}

impl std::fmt::Debug for MessageKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageKeys(<redacted>)")
    }
}

impl MessageKeys {
    /// Derives the content key (and commitment key) from the data key and message id.
    pub fn derive(suite: AlgorithmSuite, data_key: &DataKey, message_id: &[u8]) -> Result<MessageKeys, EsdkError> {
        let key_len = suite.key_len();
        if data_key.len() != key_len {
            return Err(EsdkError::DataKeyLength {
                suite,
                len: data_key.len(),
                expected: key_len,
            });
        }
        let suite_id = suite.id().to_be_bytes();
        let mut okm = Zeroizing::new([0u8; 32]);
        let okm = &mut okm[..key_len];
        let bad = |_| EsdkError::Crypto("HKDF output length");
        match suite.kdf() {
            Kdf::Identity => {
                return Ok(MessageKeys {
                    content: ContentKey::new(data_key.expose())?,
                    commitment: None,
                });
            }
            Kdf::HkdfSha256 => Hkdf::<Sha256>::new(None, data_key.expose())
                .expand_multi_info(&[&suite_id, message_id], okm)
                .map_err(bad)?,
            Kdf::HkdfSha384 => Hkdf::<Sha384>::new(None, data_key.expose())
                .expand_multi_info(&[&suite_id, message_id], okm)
                .map_err(bad)?,
            Kdf::HkdfSha512Commit => {
                // One extract for both keys: the message id is the salt.
                let hk = Hkdf::<Sha512>::new(Some(message_id), data_key.expose());
                hk.expand_multi_info(&[&suite_id, DERIVE_KEY_LABEL], okm).map_err(bad)?;
                let mut commitment = Zeroizing::new([0u8; COMMITMENT_LEN]);
                hk.expand(COMMIT_KEY_LABEL, &mut commitment[..]).map_err(bad)?;
                return Ok(MessageKeys {
                    content: ContentKey::new(okm)?,
                    commitment: Some(commitment),
                });
            }
        }
        Ok(MessageKeys {
            content: ContentKey::new(okm)?,
            commitment: None,
        })
    }

    /// Constant-time check of the header's commitment.
    pub fn check_commitment(&self, stored: Option<&[u8; COMMITMENT_LEN]>) -> Result<(), EsdkError> {
        match (&self.commitment, stored) {
            (None, None) => Ok(()),
            (Some(ours), Some(theirs)) if bool::from(ours[..].ct_eq(&theirs[..])) => Ok(()),
            _ => Err(EsdkError::CommitmentMismatch),
        }
    }
}

/// The IV of frame `sequence`: the sequence number, big-endian, left-padded with zeros.
pub(crate) fn sequence_iv(sequence: u32) -> [u8; IV_LEN] {
    let mut iv = [0u8; IV_LEN];
    iv[8..].copy_from_slice(&sequence.to_be_bytes());
    iv
}

fn digest_alg(alg: SignatureAlgorithm) -> &'static digest::Algorithm {
    match alg {
        SignatureAlgorithm::EcdsaP256 => &digest::SHA256,
        SignatureAlgorithm::EcdsaP384 => &digest::SHA384,
    }
}

/// A running digest of the message bytes for the footer signature.
#[derive(Clone)]
pub(crate) struct MessageDigest {
    alg: SignatureAlgorithm,
    ctx: digest::Context,
}

impl std::fmt::Debug for MessageDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageDigest").field("alg", &self.alg).finish()
    }
}

impl MessageDigest {
    pub fn new(alg: SignatureAlgorithm) -> MessageDigest {
        MessageDigest {
            alg,
            ctx: digest::Context::new(digest_alg(alg)),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.ctx.update(bytes);
    }

    /// Verifies a DER signature over everything digested with the SEC1 (compressed) public key.
    pub fn verify(self, public_key: &[u8], signature: &[u8]) -> Result<(), EsdkError> {
        let alg = match self.alg {
            SignatureAlgorithm::EcdsaP256 => &ECDSA_P256_SHA256_ASN1,
            SignatureAlgorithm::EcdsaP384 => &ECDSA_P384_SHA384_ASN1,
        };
        UnparsedPublicKey::new(alg, public_key)
            .verify_digest(&self.ctx.finish(), signature)
            .map_err(|_| EsdkError::SignatureInvalid)
    }
}

/// A fresh per-message signing key.
pub(crate) struct Signer {
    key: EcdsaKeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    pub fn generate(alg: SignatureAlgorithm) -> Result<Signer, EsdkError> {
        let signing = match alg {
            SignatureAlgorithm::EcdsaP256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            SignatureAlgorithm::EcdsaP384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
        };
        let key = EcdsaKeyPair::generate(signing).map_err(|_| EsdkError::Crypto("ECDSA key generation failed"))?;
        Ok(Signer { key })
    }

    /// The SEC1 compressed public point (what `aws-crypto-public-key` carries, base64).
    pub fn public_key_compressed(&self) -> Result<Vec<u8>, EsdkError> {
        let c: EcPublicKeyCompressedBin<'static> = self
            .key
            .public_key()
            .as_be_bytes()
            .map_err(|_| EsdkError::Crypto("public key encoding failed"))?;
        Ok(c.as_ref().to_vec())
    }

    /// DER signature over the digested message.
    pub fn sign(&self, digest: MessageDigest) -> Result<Vec<u8>, EsdkError> {
        let sig = self
            .key
            .sign_digest(&digest.ctx.finish())
            .map_err(|_| EsdkError::Crypto("ECDSA signing failed"))?;
        Ok(sig.as_ref().to_vec())
    }
}

/// Fills `buf` from the system CSPRNG.
pub(crate) fn random_fill(buf: &mut [u8]) -> Result<(), EsdkError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| EsdkError::Crypto("random source failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committing_derivation_yields_distinct_content_and_commitment_keys() {
        let suite = AlgorithmSuite::Aes256GcmHkdfSha512Commit;
        let dk = DataKey::from_slice(&[7u8; 32]);
        let a = MessageKeys::derive(suite, &dk, &[1u8; 32]).unwrap();
        let b = MessageKeys::derive(suite, &dk, &[2u8; 32]).unwrap();
        let ca = a.commitment.as_ref().unwrap();
        assert_ne!(ca[..], b.commitment.as_ref().unwrap()[..]);
        a.check_commitment(Some(ca)).unwrap();
        assert!(matches!(
            b.check_commitment(Some(ca)),
            Err(EsdkError::CommitmentMismatch)
        ));
        assert!(a.check_commitment(None).is_err());
        // The content key differs per message id: a frame sealed under one does not open under the other.
        let mut buf = *b"frame";
        let tag = a.content.seal(sequence_iv(1), b"aad", &mut buf).unwrap();
        let mut copy = buf;
        assert!(!b.content.open(sequence_iv(1), b"aad", &mut copy, &tag));
        assert!(a.content.open(sequence_iv(1), b"aad", &mut buf, &tag));
        assert_eq!(&buf, b"frame");
    }

    #[test]
    fn derivation_checks_the_data_key_length() {
        let dk = DataKey::from_slice(&[7u8; 16]);
        assert!(matches!(
            MessageKeys::derive(AlgorithmSuite::Aes256GcmHkdfSha512Commit, &dk, &[0u8; 32]),
            Err(EsdkError::DataKeyLength { len: 16, .. })
        ));
        for &suite in AlgorithmSuite::ALL {
            let dk = DataKey::from_slice(&vec![1u8; suite.key_len()]);
            let keys = MessageKeys::derive(suite, &dk, &[0u8; 16]).unwrap();
            assert_eq!(keys.commitment.is_some(), suite.is_committing());
        }
    }

    #[test]
    fn sequence_ivs_are_the_padded_number() {
        assert_eq!(sequence_iv(1), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(sequence_iv(0x0102_0304)[8..], [1, 2, 3, 4]);
    }

    #[test]
    fn signatures_verify_only_over_the_same_bytes() {
        for alg in [SignatureAlgorithm::EcdsaP256, SignatureAlgorithm::EcdsaP384] {
            let signer = Signer::generate(alg).unwrap();
            let pk = signer.public_key_compressed().unwrap();
            let mut d = MessageDigest::new(alg);
            d.update(b"header");
            d.update(b"body");
            let sig = signer.sign(d).unwrap();
            let mut same = MessageDigest::new(alg);
            same.update(b"headerbody");
            same.verify(&pk, &sig).unwrap();
            let mut other = MessageDigest::new(alg);
            other.update(b"headerbodY");
            assert!(matches!(other.verify(&pk, &sig), Err(EsdkError::SignatureInvalid)));
        }
    }
}
