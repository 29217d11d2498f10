//! The keyring interface: how a message's data key is obtained (decrypt) or made (encrypt).
//!
//! Unlike the item format, the message format has no intermediate key: the keyring wraps the data key itself, and
//! its length is the suite's key length (16, 24 or 32 bytes). Keyrings return boxed futures (no async-trait) and
//! fail with the item format's [`ddbguard_dbe::KeyringError`], so a key failure gets the same verdict in both systems.

use std::fmt::{self, Debug};

use ddbguard_dbe::{EncryptionContext, KeyringFuture};
use zeroize::Zeroizing;

use crate::suite::AlgorithmSuite;

/// One encrypted data key as stored in the header.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedDataKey {
    /// Key provider id: `aws-kms`, or a raw keyring's namespace.
    pub provider_id: String,
    /// Key provider info: the KMS key ARN, or a raw keyring's key name and IV.
    pub provider_info: Vec<u8>,
    /// The wrapped data key (a KMS ciphertext blob, or AES-GCM ciphertext and tag).
    pub ciphertext: Vec<u8>,
}

impl Debug for EncryptedDataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedDataKey")
            .field("provider_id", &self.provider_id)
            .field("provider_info", &String::from_utf8_lossy(&self.provider_info))
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// A plaintext data key: zeroized on drop, never printed.
#[derive(Clone)]
pub struct DataKey(Zeroizing<Vec<u8>>);

impl DataKey {
    /// Wraps key bytes.
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> DataKey {
        DataKey(bytes)
    }

    /// Copies key bytes.
    pub fn from_slice(bytes: &[u8]) -> DataKey {
        DataKey(Zeroizing::new(bytes.to_vec()))
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the key has no bytes (never valid for a suite).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey(<{} bytes redacted>)", self.0.len())
    }
}

/// Result of [`Keyring::decrypt_data_key`].
#[derive(Debug)]
pub struct DecryptedDataKey {
    /// The data key (`suite.key_len()` bytes).
    pub key: DataKey,
    /// Index of the EDK it came from, in the header's order.
    pub edk_index: usize,
}

/// Result of [`Keyring::generate_data_key`].
#[derive(Debug)]
pub struct GeneratedDataKey {
    /// The fresh data key (`suite.key_len()` bytes).
    pub key: DataKey,
    /// The data key wrapped for each recipient (at least one).
    pub edks: Vec<EncryptedDataKey>,
}

/// A source of data keys for messages.
pub trait Keyring: Send + Sync + Debug {
    /// Finds an EDK this keyring can open and returns the data key and its index in `edks`.
    ///
    /// `ec` is the full encryption context (stored in the header, plus pairs the caller required but the header
    /// does not store); a keyring must bind it (AES-GCM AAD, KMS encryption context).
    fn decrypt_data_key<'a>(
        &'a self,
        suite: AlgorithmSuite,
        edks: &'a [EncryptedDataKey],
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, DecryptedDataKey>;

    /// Produces a fresh `suite.key_len()`-byte data key and its wrapped forms, bound to `ec`.
    fn generate_data_key<'a>(
        &'a self,
        suite: AlgorithmSuite,
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, GeneratedDataKey>;
}

impl<K: Keyring + ?Sized> Keyring for &K {
    fn decrypt_data_key<'a>(
        &'a self,
        suite: AlgorithmSuite,
        edks: &'a [EncryptedDataKey],
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, DecryptedDataKey> {
        (**self).decrypt_data_key(suite, edks, ec)
    }

    fn generate_data_key<'a>(
        &'a self,
        suite: AlgorithmSuite,
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, GeneratedDataKey> {
        (**self).generate_data_key(suite, ec)
    }
}

/// Checks what a keyring returned against the header before the key is used.
pub(crate) fn check_decrypted(
    suite: AlgorithmSuite,
    edk_count: usize,
    got: &DecryptedDataKey,
) -> Result<(), crate::EsdkError> {
    if got.edk_index >= edk_count {
        return Err(crate::EsdkError::KeyringBadIndex {
            index: got.edk_index,
            count: edk_count,
        });
    }
    if got.key.len() != suite.key_len() {
        return Err(crate::EsdkError::DataKeyLength {
            suite,
            len: got.key.len(),
            expected: suite.key_len(),
        });
    }
    Ok(())
}
