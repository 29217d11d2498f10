//! An in-memory keyring for tests and benchmarks (feature `fake`): one local AES-256 wrapping key, with the
//! raw AES keyring's EDK layout (`framework/raw-aes-keyring.md`) so that messages look like real ones.
//!
//! Production code uses the keyrings of `ddbguard-keys`, which implement [`Keyring`] for KMS and raw AES.

use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ddbguard_dbe::{EncryptionContext, KeyringError, KeyringFuture};
use zeroize::Zeroizing;

use crate::crypto::random_fill;
use crate::header::serialize_context;
use crate::keyring::{DataKey, DecryptedDataKey, EncryptedDataKey, GeneratedDataKey, Keyring};
use crate::suite::AlgorithmSuite;

/// A keyring wrapping data keys under one fixed AES-256 key; counts its calls.
pub struct FakeKeyring {
    namespace: String,
    name: String,
    key: LessSafeKey,
    calls: AtomicUsize,
}

impl std::fmt::Debug for FakeKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKeyring")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl FakeKeyring {
    /// A keyring named `namespace`/`name` with wrapping key bytes `key`.
    pub fn new(namespace: &str, name: &str, key: [u8; 32]) -> FakeKeyring {
        let key = Zeroizing::new(key);
        FakeKeyring {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            // 32 bytes is always a valid AES-256 key.
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key[..]).unwrap_or_else(|_| unreachable!())),
            calls: AtomicUsize::new(0),
        }
    }

    /// How many keyring calls were made.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    fn aad(ec: &EncryptionContext) -> Result<Vec<u8>, KeyringError> {
        serialize_context(ec).map_err(|e| KeyringError::Other { message: e.to_string() })
    }

    fn decrypt_sync(
        &self,
        suite: AlgorithmSuite,
        edks: &[EncryptedDataKey],
        ec: &EncryptionContext,
    ) -> Result<DecryptedDataKey, KeyringError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let aad = Self::aad(ec)?;
        let mut candidates = 0;
        for (index, edk) in edks.iter().enumerate() {
            if edk.provider_id != self.namespace {
                continue;
            }
            let Some(iv) = edk
                .provider_info
                .strip_prefix(self.name.as_bytes())
                .and_then(|r| r.strip_prefix(&[0, 0, 0, 128, 0, 0, 0, 12][..]))
                .and_then(|iv| <[u8; 12]>::try_from(iv).ok())
            else {
                continue;
            };
            candidates += 1;
            let Some(split) = edk.ciphertext.len().checked_sub(16) else {
                continue;
            };
            let mut key = Zeroizing::new(edk.ciphertext[..split].to_vec());
            let opened = self.key.open_in_place_separate_tag(
                Nonce::assume_unique_for_key(iv),
                Aad::from(&aad[..]),
                &edk.ciphertext[split..],
                &mut key[..],
            );
            if opened.is_ok() && key.len() == suite.key_len() {
                return Ok(DecryptedDataKey {
                    key: DataKey::new(key),
                    edk_index: index,
                });
            }
        }
        if candidates == 0 {
            Err(KeyringError::NoMatchingKey {
                message: format!("no EDK for {}/{}", self.namespace, self.name),
            })
        } else {
            Err(KeyringError::IntegrityFailed {
                message: format!(
                    "{candidates} EDK(s) for {}/{} did not authenticate",
                    self.namespace, self.name
                ),
            })
        }
    }

    fn generate_sync(&self, suite: AlgorithmSuite, ec: &EncryptionContext) -> Result<GeneratedDataKey, KeyringError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let other = |e: crate::EsdkError| KeyringError::Other { message: e.to_string() };
        let aad = Self::aad(ec)?;
        let mut key = Zeroizing::new(vec![0u8; suite.key_len()]);
        random_fill(&mut key).map_err(other)?;
        let mut iv = [0u8; 12];
        random_fill(&mut iv).map_err(other)?;
        let mut ciphertext = key.to_vec();
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(&aad[..]), &mut ciphertext)
            .map_err(|_| KeyringError::Other {
                message: "AES-GCM wrap failed".into(),
            })?;
        ciphertext.extend_from_slice(tag.as_ref());
        let mut provider_info = self.name.as_bytes().to_vec();
        provider_info.extend_from_slice(&[0, 0, 0, 128, 0, 0, 0, 12]);
        provider_info.extend_from_slice(&iv);
        Ok(GeneratedDataKey {
            key: DataKey::new(key),
            edks: vec![EncryptedDataKey {
                provider_id: self.namespace.clone(),
                provider_info,
                ciphertext,
            }],
        })
    }
}

impl Keyring for FakeKeyring {
    fn decrypt_data_key<'a>(
        &'a self,
        suite: AlgorithmSuite,
        edks: &'a [EncryptedDataKey],
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, DecryptedDataKey> {
        Box::pin(async move { self.decrypt_sync(suite, edks, ec) })
    }

    fn generate_data_key<'a>(
        &'a self,
        suite: AlgorithmSuite,
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, GeneratedDataKey> {
        Box::pin(async move { self.generate_sync(suite, ec) })
    }
}
