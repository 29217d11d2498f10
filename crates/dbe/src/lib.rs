//! The AWS Database Encryption SDK (DB-ESDK) item format for DynamoDB, natively.
//!
//! Reads and writes exactly what the official SDKs write: `aws_dbe_head` / `aws_dbe_foot`, suites
//! 0x6700 (HMAC recipient tags) and 0x6701 (plus an ECDSA P-384 signature), record versions 1 and 2,
//! all four attribute actions. No I/O: keys come through the [`Keyring`] trait.
//!
//! - [`decrypt_item`] verifies commitment, recipient tag, signature and every encrypted attribute, and
//!   returns the plaintext item; every failure is a typed [`DbeError`] with a [`Verdict`].
//! - [`encrypt_item`] writes a record the official SDKs can read.
//! - [`check_structure`] / [`Header::from_item`] inspect a record without a key.
//! - [`TablePolicy`]: what a table's items are held to beyond [`TableConfig`] (required encryption, suite), with
//!   the pure checks every verdict-deciding entry point shares.
//! - [`Verdict`] / [`Reason`]: the verdict contract, one spelling per value.
//!
//! Byte-level reference: `dbesdk-format.md` (the design digest of the public specification).

mod config;
mod context;
mod crypto;
mod error;
mod header;
mod item;
pub mod json;
mod keyring;
mod number;
mod policy;
mod value;
mod verdict;

pub use config::{AlgorithmSuite, ConfigError, CryptoAction, TableConfig, UnknownAction};
pub use context::{
    EC_ATTR_PREFIX, EC_LEGEND, EC_PARTITION_NAME, EC_PUBLIC_KEY, EC_SORT_NAME, EC_TABLE_NAME, EncryptionContext,
    canonical_cmp, canonical_path, serialize_context, utf16_len,
};
pub use crypto::{Ikm, SecretKey, ct_eq, gcm_open, gcm_seal, random_fill};
pub use error::{DbeError, Part};
pub use header::{
    COMMITMENT_LEN, EncryptedDataKey, Footer, Header, MESSAGE_ID_LEN, SIGNATURE_LEN, TAG_LEN, WRAPPED_PDK_LEN,
};
pub use item::{DecryptedItem, check_structure, decrypt_item, encrypt_item, signed_attribute_names};
pub use keyring::{KeyUnavailableReason, Keyring, KeyringError, KeyringFuture, UnwrappedKey, WrappedKey};
pub use number::normalize_number;
pub use policy::{PolicyMismatch, TablePolicy};
pub use value::{AttributeValue, Item, MAX_DEPTH, cmp_utf16, type_id};
pub use verdict::{Reason, UnknownLabel, Verdict};

/// The header attribute.
pub const HEADER_ATTRIBUTE: &str = "aws_dbe_head";
/// The footer attribute.
pub const FOOTER_ATTRIBUTE: &str = "aws_dbe_foot";
/// Attribute names with this prefix are reserved for the format.
pub const RESERVED_PREFIX: &str = "aws_dbe_";
/// Material description attribute of the legacy DynamoDB Encryption Client.
pub const LEGACY_MATERIAL_DESCRIPTION: &str = "*amzn-ddb-map-desc*";
/// Signature attribute of the legacy DynamoDB Encryption Client.
pub const LEGACY_SIGNATURE: &str = "*amzn-ddb-map-sig*";

#[cfg(test)]
mod tests;
