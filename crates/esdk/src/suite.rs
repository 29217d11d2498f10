//! The algorithm suites of the AWS Encryption SDK message format (`framework/algorithm-suites.md`).
//!
//! All eleven AES-GCM suites are read; only the two committing suites are written, because a message under a
//! non-committing suite can be made to decrypt to two different plaintexts under two data keys.

use std::fmt;

/// How the data key becomes the content encryption key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// The data key is the content key (legacy suites 0x0014, 0x0046, 0x0078).
    Identity,
    /// HKDF-SHA-256, info = suite id || message id.
    HkdfSha256,
    /// HKDF-SHA-384, info = suite id || message id.
    HkdfSha384,
    /// HKDF-SHA-512 with the message id as salt, plus a commitment key (message format version 2).
    HkdfSha512Commit,
}

/// The signature algorithm of a signing suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// ECDSA over P-256 with SHA-256 (suite 0x0214).
    EcdsaP256,
    /// ECDSA over P-384 with SHA-384.
    EcdsaP384,
}

/// An algorithm suite, by its two-byte id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AlgorithmSuite {
    /// 0x0014 AES-128-GCM, no key derivation. Read only.
    Aes128Gcm,
    /// 0x0046 AES-192-GCM, no key derivation. Read only.
    Aes192Gcm,
    /// 0x0078 AES-256-GCM, no key derivation. Read only.
    Aes256Gcm,
    /// 0x0114 AES-128-GCM, HKDF-SHA-256. Read only.
    Aes128GcmHkdfSha256,
    /// 0x0146 AES-192-GCM, HKDF-SHA-256. Read only.
    Aes192GcmHkdfSha256,
    /// 0x0178 AES-256-GCM, HKDF-SHA-256. Read only.
    Aes256GcmHkdfSha256,
    /// 0x0214 AES-128-GCM, HKDF-SHA-256, ECDSA P-256. Read only.
    Aes128GcmHkdfSha256EcdsaP256,
    /// 0x0346 AES-192-GCM, HKDF-SHA-384, ECDSA P-384. Read only.
    Aes192GcmHkdfSha384EcdsaP384,
    /// 0x0378 AES-256-GCM, HKDF-SHA-384, ECDSA P-384 (the default of the 1.x SDKs). Read only.
    Aes256GcmHkdfSha384EcdsaP384,
    /// 0x0478 AES-256-GCM, HKDF-SHA-512, key commitment.
    Aes256GcmHkdfSha512Commit,
    /// 0x0578 AES-256-GCM, HKDF-SHA-512, key commitment, ECDSA P-384 (the default of the official SDKs).
    Aes256GcmHkdfSha512CommitEcdsaP384,
}

impl AlgorithmSuite {
    /// Every suite, in id order.
    pub const ALL: &'static [AlgorithmSuite] = &[
        AlgorithmSuite::Aes128Gcm,
        AlgorithmSuite::Aes192Gcm,
        AlgorithmSuite::Aes256Gcm,
        AlgorithmSuite::Aes128GcmHkdfSha256,
        AlgorithmSuite::Aes192GcmHkdfSha256,
        AlgorithmSuite::Aes256GcmHkdfSha256,
        AlgorithmSuite::Aes128GcmHkdfSha256EcdsaP256,
        AlgorithmSuite::Aes192GcmHkdfSha384EcdsaP384,
        AlgorithmSuite::Aes256GcmHkdfSha384EcdsaP384,
        AlgorithmSuite::Aes256GcmHkdfSha512Commit,
        AlgorithmSuite::Aes256GcmHkdfSha512CommitEcdsaP384,
    ];

    /// The two-byte id in the header.
    pub fn id(self) -> u16 {
        match self {
            AlgorithmSuite::Aes128Gcm => 0x0014,
            AlgorithmSuite::Aes192Gcm => 0x0046,
            AlgorithmSuite::Aes256Gcm => 0x0078,
            AlgorithmSuite::Aes128GcmHkdfSha256 => 0x0114,
            AlgorithmSuite::Aes192GcmHkdfSha256 => 0x0146,
            AlgorithmSuite::Aes256GcmHkdfSha256 => 0x0178,
            AlgorithmSuite::Aes128GcmHkdfSha256EcdsaP256 => 0x0214,
            AlgorithmSuite::Aes192GcmHkdfSha384EcdsaP384 => 0x0346,
            AlgorithmSuite::Aes256GcmHkdfSha384EcdsaP384 => 0x0378,
            AlgorithmSuite::Aes256GcmHkdfSha512Commit => 0x0478,
            AlgorithmSuite::Aes256GcmHkdfSha512CommitEcdsaP384 => 0x0578,
        }
    }

    /// The suite with this id, if it is an AES-GCM suite of the format.
    pub fn from_id(id: u16) -> Option<AlgorithmSuite> {
        AlgorithmSuite::ALL.iter().copied().find(|s| s.id() == id)
    }

    /// Data key and content key length in bytes (16, 24 or 32).
    pub fn key_len(self) -> usize {
        match self {
            AlgorithmSuite::Aes128Gcm
            | AlgorithmSuite::Aes128GcmHkdfSha256
            | AlgorithmSuite::Aes128GcmHkdfSha256EcdsaP256 => 16,
            AlgorithmSuite::Aes192Gcm
            | AlgorithmSuite::Aes192GcmHkdfSha256
            | AlgorithmSuite::Aes192GcmHkdfSha384EcdsaP384 => 24,
            _ => 32,
        }
    }

    /// The key derivation.
    pub fn kdf(self) -> Kdf {
        match self {
            AlgorithmSuite::Aes128Gcm | AlgorithmSuite::Aes192Gcm | AlgorithmSuite::Aes256Gcm => Kdf::Identity,
            AlgorithmSuite::Aes128GcmHkdfSha256
            | AlgorithmSuite::Aes192GcmHkdfSha256
            | AlgorithmSuite::Aes256GcmHkdfSha256
            | AlgorithmSuite::Aes128GcmHkdfSha256EcdsaP256 => Kdf::HkdfSha256,
            AlgorithmSuite::Aes192GcmHkdfSha384EcdsaP384 | AlgorithmSuite::Aes256GcmHkdfSha384EcdsaP384 => {
                Kdf::HkdfSha384
            }
            AlgorithmSuite::Aes256GcmHkdfSha512Commit | AlgorithmSuite::Aes256GcmHkdfSha512CommitEcdsaP384 => {
                Kdf::HkdfSha512Commit
            }
        }
    }

    /// The signature algorithm, for signing suites.
    pub fn signature(self) -> Option<SignatureAlgorithm> {
        match self {
            AlgorithmSuite::Aes128GcmHkdfSha256EcdsaP256 => Some(SignatureAlgorithm::EcdsaP256),
            AlgorithmSuite::Aes192GcmHkdfSha384EcdsaP384
            | AlgorithmSuite::Aes256GcmHkdfSha384EcdsaP384
            | AlgorithmSuite::Aes256GcmHkdfSha512CommitEcdsaP384 => Some(SignatureAlgorithm::EcdsaP384),
            _ => None,
        }
    }

    /// Whether the suite commits to its data key (and so is written in message format version 2).
    pub fn is_committing(self) -> bool {
        self.kdf() == Kdf::HkdfSha512Commit
    }

    /// The message format version a message under this suite has: 2 for committing suites, 1 otherwise.
    pub fn message_version(self) -> u8 {
        if self.is_committing() { 2 } else { 1 }
    }

    /// The official enum name.
    pub fn name(self) -> &'static str {
        match self {
            AlgorithmSuite::Aes128Gcm => "AES_128_GCM_IV12_TAG16_NO_KDF",
            AlgorithmSuite::Aes192Gcm => "AES_192_GCM_IV12_TAG16_NO_KDF",
            AlgorithmSuite::Aes256Gcm => "AES_256_GCM_IV12_TAG16_NO_KDF",
            AlgorithmSuite::Aes128GcmHkdfSha256 => "AES_128_GCM_IV12_TAG16_HKDF_SHA256",
            AlgorithmSuite::Aes192GcmHkdfSha256 => "AES_192_GCM_IV12_TAG16_HKDF_SHA256",
            AlgorithmSuite::Aes256GcmHkdfSha256 => "AES_256_GCM_IV12_TAG16_HKDF_SHA256",
            AlgorithmSuite::Aes128GcmHkdfSha256EcdsaP256 => "AES_128_GCM_IV12_TAG16_HKDF_SHA256_ECDSA_P256",
            AlgorithmSuite::Aes192GcmHkdfSha384EcdsaP384 => "AES_192_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384",
            AlgorithmSuite::Aes256GcmHkdfSha384EcdsaP384 => "AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384",
            AlgorithmSuite::Aes256GcmHkdfSha512Commit => "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
            AlgorithmSuite::Aes256GcmHkdfSha512CommitEcdsaP384 => "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
        }
    }
}

impl fmt::Display for AlgorithmSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04X} ({})", self.id(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        for &s in AlgorithmSuite::ALL {
            assert_eq!(AlgorithmSuite::from_id(s.id()), Some(s));
        }
        assert_eq!(AlgorithmSuite::from_id(0x6701), None);
        assert_eq!(AlgorithmSuite::from_id(0x0000), None);
        assert_eq!(AlgorithmSuite::ALL.len(), 11);
    }

    #[test]
    fn only_the_0x04_and_0x05_suites_commit() {
        let committing: Vec<u16> = AlgorithmSuite::ALL
            .iter()
            .filter(|s| s.is_committing())
            .map(|s| s.id())
            .collect();
        assert_eq!(committing, [0x0478, 0x0578]);
        assert_eq!(AlgorithmSuite::Aes256GcmHkdfSha512CommitEcdsaP384.message_version(), 2);
        assert_eq!(AlgorithmSuite::Aes256GcmHkdfSha384EcdsaP384.message_version(), 1);
    }

    #[test]
    fn key_lengths_and_signatures_follow_the_id() {
        assert_eq!(AlgorithmSuite::Aes128GcmHkdfSha256EcdsaP256.key_len(), 16);
        assert_eq!(AlgorithmSuite::Aes192GcmHkdfSha384EcdsaP384.key_len(), 24);
        assert_eq!(AlgorithmSuite::Aes256GcmHkdfSha512Commit.key_len(), 32);
        assert_eq!(
            AlgorithmSuite::Aes128GcmHkdfSha256EcdsaP256.signature(),
            Some(SignatureAlgorithm::EcdsaP256)
        );
        assert_eq!(AlgorithmSuite::Aes256GcmHkdfSha512Commit.signature(), None);
        assert_eq!(
            AlgorithmSuite::Aes256GcmHkdfSha512CommitEcdsaP384.to_string(),
            "0x0578 (AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384)"
        );
    }
}
