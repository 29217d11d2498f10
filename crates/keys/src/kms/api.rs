//! The narrow KMS interface every keyring talks to (its `aws-sdk-kms` implementation is [`super::sdk`]).
//!
//! [`KmsApi`] is deliberately small: the four operations ddbguard needs, with borrowed inputs and owned,
//! zeroizing outputs. Fakes ([`super::fake::FakeKms`]), fault injectors ([`super::fake::FailureKms`]) and the
//! governor ([`super::governor::GovernedKms`]: rate limit, retries, metrics) implement it too, so they stack.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use zeroize::Zeroizing;

use super::error::KmsError;

/// An encryption context as KMS takes it (sorted map; same type as the item format's).
pub type EncryptionContext = BTreeMap<String, String>;

/// A boxed future returned by [`KmsApi`] methods.
pub type KmsFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KmsError>> + Send + 'a>>;

/// A data key as KMS returns it from `Decrypt` or `GenerateDataKey`.
pub struct DataKey {
    /// The key ARN KMS used (`KeyId` of the response).
    pub key_id: String,
    /// The plaintext key bytes (zeroized on drop).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The ciphertext blob (empty for `Decrypt`).
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .field("plaintext", &format_args!("<{} bytes redacted>", self.plaintext.len()))
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// A wrapped key from `GenerateDataKeyWithoutPlaintext`.
#[derive(Debug, Clone)]
pub struct WrappedKey {
    /// The key ARN KMS used.
    pub key_id: String,
    /// The ciphertext blob.
    pub ciphertext: Vec<u8>,
}

/// The state of a key as `DescribeKey` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyDescription {
    /// The key ARN.
    pub arn: String,
    /// `Enabled`, `Disabled`, `PendingDeletion`, `PendingReplicaDeletion`, … as KMS spells it.
    pub state: String,
    /// Whether KMS reports the key as multi-Region.
    pub multi_region: bool,
    /// The primary key's region and the replica regions, when KMS reports them.
    pub replica_regions: Vec<String>,
}

/// The KMS operations ddbguard uses, in one region.
pub trait KmsApi: Send + Sync + fmt::Debug {
    /// The region this client sends requests to.
    fn region(&self) -> &str;

    /// `Decrypt(KeyId, CiphertextBlob, EncryptionContext)`.
    fn decrypt<'a>(
        &'a self,
        key_id: &'a str,
        ciphertext: &'a [u8],
        encryption_context: &'a EncryptionContext,
    ) -> KmsFuture<'a, DataKey>;

    /// `GenerateDataKey(KeyId, NumberOfBytes, EncryptionContext)`.
    fn generate_data_key<'a>(
        &'a self,
        key_id: &'a str,
        number_of_bytes: i32,
        encryption_context: &'a EncryptionContext,
    ) -> KmsFuture<'a, DataKey>;

    /// `GenerateDataKeyWithoutPlaintext(KeyId, NumberOfBytes, EncryptionContext)` (branch key creation).
    fn generate_data_key_without_plaintext<'a>(
        &'a self,
        key_id: &'a str,
        number_of_bytes: i32,
        encryption_context: &'a EncryptionContext,
    ) -> KmsFuture<'a, WrappedKey>;

    /// `DescribeKey(KeyId)`.
    fn describe_key<'a>(&'a self, key_id: &'a str) -> KmsFuture<'a, KeyDescription>;

    /// `ReEncrypt(SourceKeyId, CiphertextBlob, SourceEncryptionContext, DestinationKeyId,
    /// DestinationEncryptionContext)`; the answer's `KeyId` is the destination key.
    fn re_encrypt<'a>(&'a self, request: ReEncryptRequest<'a>) -> KmsFuture<'a, WrappedKey>;
}

/// The arguments of [`KmsApi::re_encrypt`].
#[derive(Debug, Clone, Copy)]
pub struct ReEncryptRequest<'a> {
    /// The key the ciphertext is under.
    pub source_key_id: &'a str,
    /// The ciphertext blob.
    pub ciphertext: &'a [u8],
    /// The encryption context the ciphertext is bound to.
    pub source_encryption_context: &'a EncryptionContext,
    /// The key to re-encrypt under.
    pub destination_key_id: &'a str,
    /// The encryption context to bind the new ciphertext to.
    pub destination_encryption_context: &'a EncryptionContext,
}

impl<T: KmsApi + ?Sized> KmsApi for std::sync::Arc<T> {
    fn region(&self) -> &str {
        (**self).region()
    }
    fn decrypt<'a>(&'a self, key_id: &'a str, ct: &'a [u8], ec: &'a EncryptionContext) -> KmsFuture<'a, DataKey> {
        (**self).decrypt(key_id, ct, ec)
    }
    fn generate_data_key<'a>(&'a self, key_id: &'a str, n: i32, ec: &'a EncryptionContext) -> KmsFuture<'a, DataKey> {
        (**self).generate_data_key(key_id, n, ec)
    }
    fn generate_data_key_without_plaintext<'a>(
        &'a self,
        key_id: &'a str,
        n: i32,
        ec: &'a EncryptionContext,
    ) -> KmsFuture<'a, WrappedKey> {
        (**self).generate_data_key_without_plaintext(key_id, n, ec)
    }
    fn describe_key<'a>(&'a self, key_id: &'a str) -> KmsFuture<'a, KeyDescription> {
        (**self).describe_key(key_id)
    }
    fn re_encrypt<'a>(&'a self, request: ReEncryptRequest<'a>) -> KmsFuture<'a, WrappedKey> {
        (**self).re_encrypt(request)
    }
}
