#![warn(missing_docs)]
//! The legacy Amazon DynamoDB Encryption Client item format (Java `DynamoDBEncryptor`, Python
//! `dynamodb-encryption-sdk`), natively and read-only: items carrying `*amzn-ddb-map-desc*` and
//! `*amzn-ddb-map-sig*`. No I/O: keys come through the [`MaterialsProvider`] trait.
//!
//! - [`check_structure`]: the reserved attributes and the [`MaterialDescription`], without a key.
//! - [`verify_signature`]: the item signature (HmacSHA256 or SHA256withRSA) over [`string_to_sign`].
//! - [`decrypt_attributes`]: AES/CBC/PKCS5Padding attributes, deserialized ([`deserialize_attribute`]).
//! - [`decrypt_item`]: the three with a provider: [`StaticProvider`], [`WrappedProvider`] (AESWrap,
//!   RSA-OAEP), [`MostRecentProvider`] (metastore versions), or the direct KMS provider, whose KMS call lives in
//!   `ddbguard-keys` over [`DirectKmsDescription`].
//!
//! Failures are [`DdbecError`]s that name their [`ddbguard_dbe::Verdict`] and [`ddbguard_dbe::Reason`].
//! The format has one material description version (0); the vectors' "v0"/"v1" name plaintext sets, not formats.

mod actions;
mod crypto;
mod error;
mod item;
mod kms;
mod material;
mod provider;
mod serialize;

#[cfg(any(test, feature = "fake"))]
pub mod fake;

pub use actions::{AttributeActions, LegacyAction};
pub use crypto::{
    ContentKey, DecryptionMaterials, SecretBytes, SigningAlgorithm, UnwrappingKey, VerificationKey, wrapping,
};
pub use error::DdbecError;
pub use item::{
    DecryptedLegacyItem, LegacyStructure, TableContext, check_structure, decrypt_attributes, decrypt_item,
    is_legacy_item, string_to_sign, verify_signature,
};
pub use kms::{DirectKmsDescription, KEY_COVERAGE, KMS_WRAPPING_ALGORITHM, TABLE_NAME_CONTEXT_KEY};
pub use material::{CBC_PKCS5_PADDING, KeyInfo, MaterialDescription, keys};
pub use provider::{
    METASTORE_PARTITION_KEY, METASTORE_SORT_KEY, MaterialsProvider, MostRecentProvider, ProviderContext,
    ProviderFuture, StaticProvider, WrappedProvider,
};
pub use serialize::{deserialize_attribute, serialize_attribute};

/// The material description attribute.
pub const MATERIAL_DESCRIPTION: &str = ddbguard_dbe::LEGACY_MATERIAL_DESCRIPTION;
/// The signature attribute.
pub const SIGNATURE: &str = ddbguard_dbe::LEGACY_SIGNATURE;
