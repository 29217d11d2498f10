//! Keys and the primitives the legacy clients use: AES/CBC/PKCS5Padding attribute encryption, HmacSHA256 and
//! SHA256withRSA item signatures, AESWrap (RFC 3394) and RSA/ECB/OAEPWithSHA-256AndMGF1Padding key wrapping.
//!
//! Key bytes live in [`SecretBytes`] (zeroized on drop, never printed); no `Debug` here shows key material.

use aws_lc_rs::cipher::{AES_128, AES_192, AES_256, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use std::sync::Arc;

use aws_lc_rs::key_wrap::{self, AesKek, KeyWrap};
use aws_lc_rs::rsa::{Pkcs1PrivateDecryptingKey, PrivateDecryptingKey};
use aws_lc_rs::signature::{self, UnparsedPublicKey};
use rsa::pkcs8::DecodePrivateKey;
use zeroize::Zeroizing;

use crate::error::DdbecError;

/// The AES block (and IV) length.
const BLOCK: usize = 16;

/// Secret key bytes: zeroized on drop, never printed.
#[derive(Clone)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of key bytes.
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> SecretBytes {
        SecretBytes(bytes)
    }

    /// Copies key bytes.
    pub fn from_slice(bytes: &[u8]) -> SecretBytes {
        SecretBytes(Zeroizing::new(bytes.to_vec()))
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// An AES content key: decrypts attributes written as `IV || AES-CBC(PKCS#5 padded value)`.
#[derive(Debug, Clone)]
pub struct ContentKey(SecretBytes);

impl ContentKey {
    /// An AES-128, -192 or -256 key.
    pub fn new(key: SecretBytes) -> Result<ContentKey, DdbecError> {
        match key.len() {
            16 | 24 | 32 => Ok(ContentKey(key)),
            _ => Err(DdbecError::InvalidKey {
                what: "an AES content key is 16, 24 or 32 bytes",
            }),
        }
    }

    /// The key length in bits.
    pub fn bits(&self) -> usize {
        self.0.len() * 8
    }

    /// The key bytes, for the test writer only.
    #[cfg(any(test, feature = "fake"))]
    pub(crate) fn expose_for_tests(&self) -> &[u8] {
        self.0.expose()
    }

    /// Decrypts one stored attribute value (`IV || ciphertext`) to its serialized plaintext.
    pub fn decrypt(&self, attribute: &str, stored: &[u8]) -> Result<Zeroizing<Vec<u8>>, DdbecError> {
        let malformed = |what| DdbecError::MalformedEncryptedField {
            attribute: attribute.to_owned(),
            what,
        };
        let (iv, body) = stored
            .split_at_checked(BLOCK)
            .ok_or_else(|| malformed("shorter than the IV"))?;
        if body.is_empty() || !body.len().is_multiple_of(BLOCK) {
            return Err(malformed("ciphertext is not a whole number of blocks"));
        }
        let algorithm = match self.0.len() {
            16 => &AES_128,
            24 => &AES_192,
            _ => &AES_256,
        };
        let key = UnboundCipherKey::new(algorithm, self.0.expose()).map_err(|_| DdbecError::Crypto("AES key"))?;
        let key = PaddedBlockDecryptingKey::cbc_pkcs7(key).map_err(|_| DdbecError::Crypto("AES-CBC key"))?;
        let mut iv_block = [0u8; BLOCK];
        iv_block.copy_from_slice(iv);
        let mut buf = Zeroizing::new(body.to_vec());
        let len = key
            .decrypt(&mut buf, DecryptionContext::Iv128(FixedLength::from(iv_block)))
            .map_err(|_| DdbecError::FieldDecryptFailed {
                attribute: attribute.to_owned(),
            })?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// The algorithm an item signature is checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// `HmacSHA256`: HMAC-SHA-256 over the string to sign.
    HmacSha256,
    /// `SHA256withRSA`: RSASSA-PKCS1-v1_5 with SHA-256 over the string to sign.
    Sha256WithRsa,
}

impl SigningAlgorithm {
    /// The JCE name the clients write (`amzn-ddb-map-signingAlg`).
    pub fn jce_name(self) -> &'static str {
        match self {
            SigningAlgorithm::HmacSha256 => "HmacSHA256",
            SigningAlgorithm::Sha256WithRsa => "SHA256withRSA",
        }
    }
}

/// A key that verifies item signatures.
#[derive(Clone)]
pub enum VerificationKey {
    /// An HMAC-SHA-256 key.
    Hmac(SecretBytes),
    /// An RSA public key (SubjectPublicKeyInfo or PKCS#1 DER), 2048 to 8192 bits.
    Rsa(Vec<u8>),
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerificationKey::Hmac(_) => f.write_str("VerificationKey::Hmac(<redacted>)"),
            VerificationKey::Rsa(der) => write!(f, "VerificationKey::Rsa({} bytes)", der.len()),
        }
    }
}

impl VerificationKey {
    /// An HMAC-SHA-256 key; the clients accept any length but an empty one.
    pub fn hmac(key: SecretBytes) -> Result<VerificationKey, DdbecError> {
        if key.is_empty() {
            return Err(DdbecError::InvalidKey { what: "empty HMAC key" });
        }
        Ok(VerificationKey::Hmac(key))
    }

    /// An RSA public key in DER (SubjectPublicKeyInfo, as the clients' test keys, or PKCS#1), checked now.
    pub fn rsa_public_der(der: &[u8]) -> Result<VerificationKey, DdbecError> {
        // aws-lc-rs parses the key lazily on verify: a garbage key and a bad signature look alike there, so
        // parse it now with the parser verification uses (PKCS#1, then SubjectPublicKeyInfo; the encryption-key
        // parser takes SubjectPublicKeyInfo only).
        aws_lc_rs::rsa::PublicKey::from_der(der).map_err(|_| DdbecError::InvalidKey {
            what: "not an RSA public key in DER",
        })?;
        Ok(VerificationKey::Rsa(der.to_vec()))
    }

    /// The algorithm this key verifies.
    pub fn algorithm(&self) -> SigningAlgorithm {
        match self {
            VerificationKey::Hmac(_) => SigningAlgorithm::HmacSha256,
            VerificationKey::Rsa(_) => SigningAlgorithm::Sha256WithRsa,
        }
    }

    /// Verifies `signature` over `data` (constant-time for HMAC).
    pub fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), DdbecError> {
        let ok = match self {
            VerificationKey::Hmac(key) => {
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.expose());
                aws_lc_rs::hmac::verify(&key, data, signature).is_ok()
            }
            VerificationKey::Rsa(der) => UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
                .verify(data, signature)
                .is_ok(),
        };
        if ok { Ok(()) } else { Err(DdbecError::SignatureInvalid) }
    }
}

/// The wrapping algorithms the clients write (`amzn-ddb-wrap-alg`).
pub mod wrapping {
    /// RFC 3394 AES key wrap.
    pub const AES_WRAP: &str = "AESWrap";
    /// RSA-OAEP with SHA-256 and MGF1 with SHA-1 (the JCE default for this name).
    pub const RSA_OAEP_SHA256: &str = "RSA/ECB/OAEPWithSHA-256AndMGF1Padding";
}

/// A key that unwraps content keys (the wrapped provider's).
#[derive(Clone)]
pub enum UnwrappingKey {
    /// An AES-128 or AES-256 key-encryption key (`AESWrap`).
    Aes(SecretBytes),
    /// An RSA private key: `RSA/ECB/OAEPWithSHA-256AndMGF1Padding`, or PKCS#1 v1.5 where an older Java client
    /// wrote no wrapping algorithm (the JCE default for a bare `RSA`).
    Rsa {
        /// The key for OAEP with SHA-256 and MGF1-SHA-1, which aws-lc-rs does not offer.
        oaep: Box<rsa::PrivateKey>,
        /// The same key for PKCS#1 v1.5.
        pkcs1: Arc<Pkcs1PrivateDecryptingKey>,
    },
}

impl std::fmt::Debug for UnwrappingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnwrappingKey::Aes(_) => f.write_str("UnwrappingKey::Aes(<redacted>)"),
            UnwrappingKey::Rsa { .. } => f.write_str("UnwrappingKey::Rsa(<redacted>)"),
        }
    }
}

impl UnwrappingKey {
    /// An AES key-encryption key of 16 or 32 bytes.
    pub fn aes(key: SecretBytes) -> Result<UnwrappingKey, DdbecError> {
        match key.len() {
            16 | 32 => Ok(UnwrappingKey::Aes(key)),
            _ => Err(DdbecError::InvalidKey {
                what: "an AES key-encryption key is 16 or 32 bytes",
            }),
        }
    }

    /// An RSA private key in PKCS#8 DER.
    pub fn rsa_pkcs8_der(der: &[u8]) -> Result<UnwrappingKey, DdbecError> {
        let invalid = || DdbecError::InvalidKey {
            what: "not an RSA private key in PKCS#8 DER",
        };
        let oaep = rsa::PrivateKey::from_pkcs8_der(der).map_err(|_| invalid())?;
        let pkcs1 = PrivateDecryptingKey::from_pkcs8(der)
            .ok()
            .and_then(|k| Pkcs1PrivateDecryptingKey::new(k).ok())
            .ok_or_else(invalid)?;
        Ok(UnwrappingKey::Rsa {
            oaep: Box::new(oaep),
            pkcs1: Arc::new(pkcs1),
        })
    }

    /// Unwraps a content key wrapped with `algorithm` (`amzn-ddb-wrap-alg`; `None` where it was not written).
    pub fn unwrap_key(&self, algorithm: Option<&str>, wrapped: &[u8]) -> Result<SecretBytes, DdbecError> {
        let failed = |what| DdbecError::UnwrapFailed { what };
        match (self, algorithm) {
            (UnwrappingKey::Aes(kek), None | Some(wrapping::AES_WRAP)) => {
                let cipher = if kek.len() == 16 {
                    &key_wrap::AES_128
                } else {
                    &key_wrap::AES_256
                };
                let kek = AesKek::new(cipher, kek.expose()).map_err(|_| DdbecError::Crypto("AES key-wrap key"))?;
                let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
                let len = kek
                    .unwrap(wrapped, &mut out)
                    .map_err(|_| failed("AES key unwrap"))?
                    .len();
                out.truncate(len);
                Ok(SecretBytes::new(out))
            }
            (UnwrappingKey::Rsa { oaep, .. }, Some(wrapping::RSA_OAEP_SHA256)) => {
                let padding = rsa::Oaep::<sha2::Sha256, sha1::Sha1>::new_with_mgf_hash();
                let out = oaep
                    .decrypt(padding, wrapped)
                    .map_err(|_| failed("RSA-OAEP decryption"))?;
                Ok(SecretBytes::new(Zeroizing::new(out)))
            }
            (UnwrappingKey::Rsa { pkcs1, .. }, None) => {
                let mut out = Zeroizing::new(vec![0u8; pkcs1.min_output_size()]);
                let len = pkcs1
                    .decrypt(wrapped, &mut out)
                    .map_err(|_| failed("RSA PKCS#1 v1.5 decryption"))?
                    .len();
                out.truncate(len);
                Ok(SecretBytes::new(out))
            }
            _ => Err(DdbecError::AlgorithmMismatch {
                field: crate::material::keys::WRAPPING_ALGORITHM,
                what: "not the configured unwrapping key's algorithm",
            }),
        }
    }
}

/// The keys one item is checked and decrypted with.
#[derive(Debug, Clone)]
pub struct DecryptionMaterials {
    /// The content key; `None` where the provider has only a signing key (items with no encrypted attribute).
    pub decryption_key: Option<ContentKey>,
    /// The key the item signature is verified with.
    pub verification_key: VerificationKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = SecretBytes::from_slice(&[0xAB; 16]);
        let shown = format!("{key:?} {:?}", VerificationKey::Hmac(key.clone()));
        assert!(
            !shown.to_lowercase().contains("ab, ") && !shown.contains("171"),
            "{shown}"
        );
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn content_keys_are_aes_sized_and_reject_short_or_ragged_fields() {
        assert!(ContentKey::new(SecretBytes::from_slice(&[0; 15])).is_err());
        let key = ContentKey::new(SecretBytes::from_slice(&[7; 16])).unwrap();
        assert!(matches!(
            key.decrypt("a", &[0; 16]),
            Err(DdbecError::MalformedEncryptedField { .. })
        ));
        assert!(matches!(
            key.decrypt("a", &[0; 33]),
            Err(DdbecError::MalformedEncryptedField { .. })
        ));
        // 32 random-looking bytes: the padding check fails (almost always; this input is fixed, so it does).
        assert!(matches!(
            key.decrypt("a", &[0x5a; 32]),
            Err(DdbecError::FieldDecryptFailed { .. })
        ));
    }

    #[test]
    fn aes_key_unwrap_matches_rfc_3394_and_refuses_a_changed_bit() {
        // RFC 3394 §4.1: 128-bit KEK wrapping 128 bits of key data.
        let kek = UnwrappingKey::aes(SecretBytes::from_slice(&(0u8..16).collect::<Vec<_>>())).unwrap();
        let mut wrapped = [
            0x1F, 0xA6, 0x8B, 0x0A, 0x81, 0x12, 0xB4, 0x47, 0xAE, 0xF3, 0x4B, 0xD8, 0xFB, 0x5A, 0x7B, 0x82, 0x9D, 0x3E,
            0x86, 0x23, 0x71, 0xD2, 0xCF, 0xE5,
        ];
        let key = kek.unwrap_key(Some(wrapping::AES_WRAP), &wrapped).unwrap();
        assert_eq!(
            key.expose(),
            [
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF
            ]
        );
        wrapped[3] ^= 1;
        assert!(matches!(
            kek.unwrap_key(None, &wrapped),
            Err(DdbecError::UnwrapFailed { .. })
        ));
        assert!(matches!(
            kek.unwrap_key(Some(wrapping::RSA_OAEP_SHA256), &wrapped),
            Err(DdbecError::AlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn hmac_verification_is_exact() {
        let key = VerificationKey::hmac(SecretBytes::from_slice(b"key")).unwrap();
        let tag = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"key"),
            b"data",
        );
        assert!(key.verify(b"data", tag.as_ref()).is_ok());
        assert_eq!(key.verify(b"datA", tag.as_ref()), Err(DdbecError::SignatureInvalid));
        assert!(VerificationKey::hmac(SecretBytes::from_slice(b"")).is_err());
        assert!(VerificationKey::rsa_public_der(b"not a key").is_err());
    }

    #[test]
    fn rsa_verification_keys_are_taken_as_pkcs1_or_subject_public_key_info() {
        use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
        use aws_lc_rs::signature::KeyPair as _;

        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let mut sig = vec![0u8; pair.public_modulus_len()];
        pair.sign(
            &signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            b"data",
            &mut sig,
        )
        .unwrap();
        let pkcs1 = pair.public_key().as_ref().to_vec();
        let spki: PublicKeyX509Der<'_> = pair.public_key().as_der().unwrap();
        assert_ne!(pkcs1, spki.as_ref());
        for der in [&pkcs1[..], spki.as_ref()] {
            let key = VerificationKey::rsa_public_der(der).unwrap();
            assert!(key.verify(b"data", &sig).is_ok());
            assert_eq!(key.verify(b"datA", &sig), Err(DdbecError::SignatureInvalid));
        }
        // A truncated key is refused when it is configured, not when an item is verified.
        assert!(VerificationKey::rsa_public_der(&pkcs1[..pkcs1.len() - 1]).is_err());
    }
}
