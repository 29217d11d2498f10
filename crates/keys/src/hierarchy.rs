//! The hierarchical keyring's local wrapping (MPL `AwsKmsHierarchicalKeyring`), over a pluggable source
//! of branch keys.
//!
//! EDK: provider id `aws-kms-hierarchy`, provider info = branch key id (UTF-8), provider ciphertext =
//! salt(16) || IV(12) || branch key version UUID (16 bytes) || AES-256-GCM(derived key, IV, AAD, IKM)(32) || tag(16),
//! derived key = NIST SP 800-108 counter-mode KDF with HMAC-SHA-256, one block:
//! HMAC(branch key, u32be(1) || "aws-kms-hierarchy" || 0x00 || salt || u32be(256)),
//! AAD = "aws-kms-hierarchy" || branch key id || version (16 bytes) || serialized full EC.
//!
//! [`BranchKeySource`] is where branch keys come from: [`StaticBranchKeySource`] holds one in memory
//! (test vectors, offline use); [`crate::keystore::CachingBranchKeySource`] over a
//! [`crate::keystore::DynamoKeyStore`] is the official key store in DynamoDB, unwrapped with KMS and cached.

use std::sync::Arc;

use ddbguard_dbe::{
    EncryptedDataKey, EncryptionContext, Ikm, Keyring, KeyringError, KeyringFuture, SecretKey, UnwrappedKey,
    WrappedKey, gcm_open, gcm_seal, random_fill, serialize_context,
};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// EDK provider id of the hierarchical keyring.
pub const PROVIDER_ID: &str = "aws-kms-hierarchy";
const SALT_LEN: usize = 16;
const IV_LEN: usize = 12;
const VERSION_LEN: usize = 16;
/// Provider ciphertext length: salt, IV, version, wrapped IKM, tag.
pub const PROVIDER_CIPHERTEXT_LEN: usize = SALT_LEN + IV_LEN + VERSION_LEN + 32 + 16;
/// The longest branch key id a key store item can have (a DynamoDB partition key holds up to 2048 bytes).
const MAX_BRANCH_KEY_ID_LEN: usize = 2048;

/// One version of a branch key.
pub struct BranchKey {
    /// Branch key id.
    pub branch_key_id: String,
    /// Version UUID as its 16 bytes.
    pub version: [u8; VERSION_LEN],
    /// The 32-byte branch key.
    pub key: SecretKey,
}

impl std::fmt::Debug for BranchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BranchKey")
            .field("branch_key_id", &self.branch_key_id)
            .field("version", &uuid::Uuid::from_bytes(self.version))
            .field("key", &"<redacted>")
            .finish()
    }
}

impl BranchKey {
    /// A branch key from its id, version UUID string and key bytes.
    pub fn new(branch_key_id: impl Into<String>, version: &str, key: Zeroizing<[u8; 32]>) -> Result<BranchKey, String> {
        let version = uuid::Uuid::parse_str(version).map_err(|e| format!("branch key version is not a UUID: {e}"))?;
        Ok(BranchKey {
            branch_key_id: branch_key_id.into(),
            version: *version.as_bytes(),
            key: SecretKey::new(key),
        })
    }

    fn wrapping_key(&self, salt: &[u8]) -> Result<SecretKey, KeyringError> {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(self.key.expose()).map_err(|_| KeyringError::Other {
                message: "HMAC key setup failed".into(),
            })?;
        mac.update(&1u32.to_be_bytes());
        mac.update(PROVIDER_ID.as_bytes());
        mac.update(&[0]);
        mac.update(salt);
        mac.update(&256u32.to_be_bytes());
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(&mac.finalize().into_bytes());
        Ok(SecretKey::new(k))
    }

    fn aad(&self, ec_bytes: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(PROVIDER_ID.len() + self.branch_key_id.len() + VERSION_LEN + ec_bytes.len());
        aad.extend_from_slice(PROVIDER_ID.as_bytes());
        aad.extend_from_slice(self.branch_key_id.as_bytes());
        aad.extend_from_slice(&self.version);
        aad.extend_from_slice(ec_bytes);
        aad
    }
}

/// A branch key version's UUID bytes as text.
pub fn version_text(version: &[u8; VERSION_LEN]) -> String {
    uuid::Uuid::from_bytes(*version).to_string()
}

/// Where branch keys come from.
pub trait BranchKeySource: Send + Sync + std::fmt::Debug {
    /// The active version of a branch key (used to encrypt).
    fn active<'a>(&'a self, branch_key_id: &'a str) -> KeyringFuture<'a, Arc<BranchKey>>;
    /// A specific version of a branch key (used to decrypt).
    fn version<'a>(
        &'a self,
        branch_key_id: &'a str,
        version: &'a [u8; VERSION_LEN],
    ) -> KeyringFuture<'a, Arc<BranchKey>>;
}

/// One branch key held in memory.
#[derive(Debug, Clone)]
pub struct StaticBranchKeySource {
    key: Arc<BranchKey>,
}

impl StaticBranchKeySource {
    /// A source that knows exactly this branch key version.
    pub fn new(key: BranchKey) -> StaticBranchKeySource {
        StaticBranchKeySource { key: Arc::new(key) }
    }

    fn unknown(&self, id: &str) -> KeyringError {
        KeyringError::NoMatchingKey {
            message: format!(
                "branch key {id:?} is not the static branch key {:?}",
                self.key.branch_key_id
            ),
        }
    }
}

impl BranchKeySource for StaticBranchKeySource {
    fn active<'a>(&'a self, branch_key_id: &'a str) -> KeyringFuture<'a, Arc<BranchKey>> {
        Box::pin(async move {
            if branch_key_id == self.key.branch_key_id {
                Ok(self.key.clone())
            } else {
                Err(self.unknown(branch_key_id))
            }
        })
    }

    fn version<'a>(
        &'a self,
        branch_key_id: &'a str,
        version: &'a [u8; VERSION_LEN],
    ) -> KeyringFuture<'a, Arc<BranchKey>> {
        Box::pin(async move {
            if branch_key_id != self.key.branch_key_id {
                return Err(self.unknown(branch_key_id));
            }
            if *version != self.key.version {
                return Err(KeyringError::NoMatchingKey {
                    message: format!(
                        "branch key {branch_key_id:?} version {} is not the static version {}",
                        uuid::Uuid::from_bytes(*version),
                        uuid::Uuid::from_bytes(self.key.version)
                    ),
                });
            }
            Ok(self.key.clone())
        })
    }
}

/// The hierarchical keyring: for one branch key id, or (decrypt only) for any branch key of its source.
#[derive(Debug, Clone)]
pub struct HierarchyKeyring {
    branch_key_id: Option<String>,
    source: Arc<dyn BranchKeySource>,
}

impl HierarchyKeyring {
    /// A keyring using branch key `branch_key_id` from `source`.
    pub fn new(branch_key_id: impl Into<String>, source: Arc<dyn BranchKeySource>) -> HierarchyKeyring {
        HierarchyKeyring {
            branch_key_id: Some(branch_key_id.into()),
            source,
        }
    }

    /// A keyring that decrypts under whichever branch key of `source` an EDK names (a verifier over a table
    /// whose items use many branch keys, e.g. one per tenant); it cannot encrypt.
    pub fn for_any_branch_key(source: Arc<dyn BranchKeySource>) -> HierarchyKeyring {
        HierarchyKeyring {
            branch_key_id: None,
            source,
        }
    }

    /// The configured branch key id (`None`: any).
    pub fn branch_key_id(&self) -> Option<&str> {
        self.branch_key_id.as_deref()
    }

    /// A keyring over one static branch key (the official test vectors' `static-branch-key-1`).
    pub fn with_static_key(key: BranchKey) -> HierarchyKeyring {
        HierarchyKeyring::new(key.branch_key_id.clone(), Arc::new(StaticBranchKeySource::new(key)))
    }

    async fn unwrap(&self, edks: &[EncryptedDataKey], ec: &EncryptionContext) -> Result<UnwrappedKey, KeyringError> {
        let ec_bytes = serialize_context(ec).map_err(|e| KeyringError::Other { message: e.to_string() })?;
        let mut last_err: Option<KeyringError> = None;
        for (index, edk) in edks.iter().enumerate() {
            if edk.provider_id != PROVIDER_ID {
                continue;
            }
            let branch_key_id = match (&self.branch_key_id, std::str::from_utf8(&edk.provider_info)) {
                (Some(id), _) if id.as_bytes() != edk.provider_info.as_slice() => continue,
                (Some(id), _) => id.as_str(),
                // DynamoDB keys are 1 to 2048 bytes: anything else could never name a key store item.
                (None, Ok(id)) if id.is_empty() || id.len() > MAX_BRANCH_KEY_ID_LEN => {
                    last_err = Some(KeyringError::IntegrityFailed {
                        message: format!(
                            "hierarchy EDK {index} has a branch key id of {} bytes (a key store key is 1 to \
                             {MAX_BRANCH_KEY_ID_LEN})",
                            id.len()
                        ),
                    });
                    continue;
                }
                (None, Ok(id)) => id,
                (None, Err(_)) => {
                    last_err = Some(KeyringError::IntegrityFailed {
                        message: format!("hierarchy EDK {index} has a branch key id that is not UTF-8"),
                    });
                    continue;
                }
            };
            let Some(ct) = edk
                .ciphertext
                .get(..PROVIDER_CIPHERTEXT_LEN)
                .filter(|_| edk.ciphertext.len() == PROVIDER_CIPHERTEXT_LEN)
            else {
                last_err = Some(KeyringError::IntegrityFailed {
                    message: format!(
                        "hierarchy EDK {index} is {} bytes, expected {PROVIDER_CIPHERTEXT_LEN}",
                        edk.ciphertext.len()
                    ),
                });
                continue;
            };
            let (salt, rest) = ct.split_at(SALT_LEN);
            let (iv, rest) = rest.split_at(IV_LEN);
            let (version, rest) = rest.split_at(VERSION_LEN);
            let (wrapped, tag) = rest.split_at(32);
            let mut v = [0u8; VERSION_LEN];
            v.copy_from_slice(version);
            let branch = match self.source.version(branch_key_id, &v).await {
                Ok(b) => b,
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            let key = branch.wrapping_key(salt)?;
            let mut ikm = Zeroizing::new([0u8; 32]);
            ikm.copy_from_slice(wrapped);
            let mut nonce = [0u8; IV_LEN];
            nonce.copy_from_slice(iv);
            if gcm_open(&key, &nonce, &branch.aad(&ec_bytes), &mut ikm[..], tag) {
                return Ok(UnwrappedKey {
                    ikm: Ikm::new(ikm),
                    edk_index: index,
                });
            }
            last_err = Some(KeyringError::IntegrityFailed {
                message: format!(
                    "hierarchy EDK {index} for branch key {branch_key_id:?} did not authenticate (wrong branch key or encryption context)"
                ),
            });
        }
        Err(last_err.unwrap_or_else(|| KeyringError::NoMatchingKey {
            message: format!(
                "no EDK for branch key {} among {} EDK(s) from providers [{}]",
                self.branch_key_id
                    .as_deref()
                    .map_or("(any)".to_owned(), |id| format!("{id:?}")),
                edks.len(),
                edks.iter()
                    .map(|e| e.provider_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }))
    }

    async fn wrap(&self, ec: &EncryptionContext) -> Result<WrappedKey, KeyringError> {
        let other = |e: ddbguard_dbe::DbeError| KeyringError::Other { message: e.to_string() };
        let ec_bytes = serialize_context(ec).map_err(other)?;
        let Some(branch_key_id) = &self.branch_key_id else {
            return Err(KeyringError::Other {
                message: "this hierarchical keyring has no branch_key_id configured, so it can only decrypt".into(),
            });
        };
        let branch = self.source.active(branch_key_id).await?;
        let ikm = SecretKey::random().map_err(other)?;
        let mut salt = [0u8; SALT_LEN];
        random_fill(&mut salt).map_err(other)?;
        let mut iv = [0u8; IV_LEN];
        random_fill(&mut iv).map_err(other)?;
        let key = branch.wrapping_key(&salt)?;
        let mut wrapped = Vec::with_capacity(PROVIDER_CIPHERTEXT_LEN);
        wrapped.extend_from_slice(&salt);
        wrapped.extend_from_slice(&iv);
        wrapped.extend_from_slice(&branch.version);
        let at = wrapped.len();
        wrapped.extend_from_slice(ikm.expose());
        let tag = gcm_seal(&key, &iv, &branch.aad(&ec_bytes), &mut wrapped[at..]).map_err(other)?;
        wrapped.extend_from_slice(&tag);
        Ok(WrappedKey {
            ikm,
            provider_id: PROVIDER_ID.to_owned(),
            provider_info: branch_key_id.as_bytes().to_vec(),
            wrapped,
        })
    }
}

impl Keyring for HierarchyKeyring {
    fn unwrap_key<'a>(
        &'a self,
        edks: &'a [EncryptedDataKey],
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, UnwrappedKey> {
        Box::pin(self.unwrap(edks, ec))
    }

    fn wrap_key<'a>(&'a self, ec: &'a EncryptionContext) -> KeyringFuture<'a, WrappedKey> {
        Box::pin(self.wrap(ec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> HierarchyKeyring {
        HierarchyKeyring::with_static_key(
            BranchKey::new("bk", "e9ce18a3-edb5-4272-9f86-1cacb7997ff6", Zeroizing::new([7; 32])).unwrap(),
        )
    }

    #[test]
    fn wrap_unwrap() {
        let k = keyring();
        let ec: EncryptionContext = [("k".to_owned(), "v".to_owned())].into_iter().collect();
        let w = futures::executor::block_on(k.wrap_key(&ec)).unwrap();
        assert_eq!(w.wrapped.len(), PROVIDER_CIPHERTEXT_LEN);
        let edk = EncryptedDataKey {
            provider_id: w.provider_id,
            provider_info: w.provider_info,
            ciphertext: w.wrapped,
        };
        let u = futures::executor::block_on(k.unwrap_key(std::slice::from_ref(&edk), &ec)).unwrap();
        assert_eq!(u.ikm.expose(), w.ikm.expose());
        let bad = futures::executor::block_on(k.unwrap_key(std::slice::from_ref(&edk), &EncryptionContext::new()));
        assert!(matches!(bad, Err(KeyringError::IntegrityFailed { .. })));
        let mut other_version = edk.clone();
        other_version.ciphertext[28] ^= 1;
        let bad = futures::executor::block_on(k.unwrap_key(&[other_version], &ec));
        assert!(matches!(bad, Err(KeyringError::NoMatchingKey { .. })));
        let none = futures::executor::block_on(k.unwrap_key(&[], &ec));
        assert!(matches!(none, Err(KeyringError::NoMatchingKey { .. })));
        assert!(!format!("{k:?}").contains("7, 7"));
    }

    #[test]
    fn any_key_mode_rejects_ids_no_key_store_can_hold() {
        let key = BranchKey::new("bk", "e9ce18a3-edb5-4272-9f86-1cacb7997ff6", Zeroizing::new([7; 32])).unwrap();
        let k = HierarchyKeyring::for_any_branch_key(Arc::new(StaticBranchKeySource::new(key)));
        let ec = EncryptionContext::new();
        let w = futures::executor::block_on(keyring().wrap_key(&ec)).unwrap();
        for id in [Vec::new(), vec![b'x'; MAX_BRANCH_KEY_ID_LEN + 1]] {
            let edk = EncryptedDataKey {
                provider_id: PROVIDER_ID.to_owned(),
                provider_info: id,
                ciphertext: w.wrapped.clone(),
            };
            let e = futures::executor::block_on(k.unwrap_key(&[edk], &ec)).unwrap_err();
            assert!(matches!(e, KeyringError::IntegrityFailed { .. }), "{e}");
            assert!(e.to_string().contains("branch key id of"), "{e}");
        }
    }
}
