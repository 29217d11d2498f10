//! The keyring interface: how `dbe` obtains the intermediate key (IKM) of a record.
//!
//! `dbe` does the intermediate key wrapping itself (§1.7): a keyring only wraps and unwraps the
//! 32-byte IKM. On decrypt the keyring receives the header's EDKs **with `ciphertext` already reduced to
//! the provider part** (the bytes after the 48-byte wrapped data key), so a KMS keyring passes it to
//! `Decrypt` unchanged; the index it returns refers to the same list (= the header's EDK order).

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use crate::context::EncryptionContext;
use crate::crypto::Ikm;
use crate::header::EncryptedDataKey;
use crate::verdict::{Reason, Verdict};

/// The boxed future keyrings return (no async-trait needed).
pub type KeyringFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KeyringError>> + Send + 'a>>;

/// A source of intermediate keys.
pub trait Keyring: Send + Sync + Debug {
    /// Finds an EDK this keyring can open and returns its IKM and index in `edks`.
    ///
    /// `edks[i].ciphertext` is the provider part only (header EDK ciphertext after byte 48); `ec` is the
    /// full encryption context (stored ∪ required), which a keyring must authenticate (AAD or KMS EC).
    fn unwrap_key<'a>(
        &'a self,
        edks: &'a [EncryptedDataKey],
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, UnwrappedKey>;

    /// Produces a fresh IKM and its provider-wrapped form, bound to `ec`.
    fn wrap_key<'a>(&'a self, ec: &'a EncryptionContext) -> KeyringFuture<'a, WrappedKey>;
}

/// Result of [`Keyring::unwrap_key`].
#[derive(Debug)]
pub struct UnwrappedKey {
    /// The intermediate key.
    pub ikm: Ikm,
    /// Index of the EDK it came from.
    pub edk_index: usize,
}

/// Result of [`Keyring::wrap_key`].
#[derive(Debug)]
pub struct WrappedKey {
    /// The intermediate key.
    pub ikm: Ikm,
    /// EDK provider id.
    pub provider_id: String,
    /// EDK provider info.
    pub provider_info: Vec<u8>,
    /// The provider-wrapped IKM (dbe prepends the 48-byte wrapped data key).
    pub wrapped: Vec<u8>,
}

/// Why the key service refused a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyUnavailableReason {
    /// The key (replica) does not exist in this region.
    NotFound,
    /// The key is disabled.
    Disabled,
    /// The key is scheduled for deletion.
    PendingDeletion,
    /// The key is in another state that forbids use (e.g. pending import).
    InvalidState,
    /// The caller may not use the key.
    AccessDenied,
}

impl KeyUnavailableReason {
    /// The label, which is also the record's [`Reason`] (`not_found`, `disabled`, …): spelled once, there.
    pub fn as_str(self) -> &'static str {
        Reason::from(self).as_str()
    }
}

impl std::fmt::Display for KeyUnavailableReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A keyring failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// No EDK is for this keyring (other provider, other key name, key that does not MRK-match).
    #[error("no encrypted data key this keyring can open: {message}")]
    NoMatchingKey {
        /// Which EDKs were seen (provider ids / infos, never key material).
        message: String,
    },
    /// The EDK names a single-region key (or alias) where an MRK is required.
    #[error("key {key} is not a multi-Region key: {message}")]
    KeyNotMrk {
        /// The key identifier.
        key: String,
        /// Details.
        message: String,
    },
    /// The key service refused the key.
    #[error("key {key} unavailable ({reason}): {message}")]
    KeyUnavailable {
        /// Why.
        reason: KeyUnavailableReason,
        /// The key identifier.
        key: String,
        /// Service message.
        message: String,
    },
    /// The key service throttled beyond the retry budget.
    #[error("throttled using key {key}: {message}")]
    Throttled {
        /// The key identifier.
        key: String,
        /// Service message.
        message: String,
    },
    /// The wrapped key did not authenticate (wrong key material or encryption context).
    #[error("wrapped key did not authenticate: {message}")]
    IntegrityFailed {
        /// Details.
        message: String,
    },
    /// Anything else (network, configuration, unexpected response).
    #[error("{message}")]
    Other {
        /// Details.
        message: String,
    },
}

impl KeyringError {
    /// The verdict for a record whose key could not be obtained this way.
    pub fn verdict(&self) -> Verdict {
        match self {
            KeyringError::NoMatchingKey { .. } | KeyringError::KeyNotMrk { .. } => Verdict::KeyNotMrk,
            KeyringError::KeyUnavailable { .. } | KeyringError::Other { .. } => Verdict::KeyUnavailable,
            KeyringError::Throttled { .. } => Verdict::KmsThrottled,
            KeyringError::IntegrityFailed { .. } => Verdict::IntegrityFailed,
        }
    }

    /// The reason code; for `key_unavailable` it is the [`KeyUnavailableReason`] itself (`disabled`, …).
    pub fn reason(&self) -> Reason {
        match self {
            KeyringError::NoMatchingKey { .. } => Reason::NoMatchingKey,
            KeyringError::KeyNotMrk { .. } => Reason::KeyNotMrk,
            KeyringError::KeyUnavailable { reason, .. } => Reason::from(*reason),
            KeyringError::Throttled { .. } => Reason::KmsThrottled,
            KeyringError::IntegrityFailed { .. } => Reason::WrappedKeyIntegrityFailed,
            KeyringError::Other { .. } => Reason::KeyringError,
        }
    }
}
