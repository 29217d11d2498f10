//! The branch key store: branch keys for the hierarchical keyring, kept in a DynamoDB table in the format of the
//! official AWS key store (MPL `KeyStore`, hierarchy-version 1), so branch keys made by either side serve both.
//!
//! Table: partition key `branch-key-id` (S), sort key `type` (S). A branch key is three items written in one
//! transaction:
//!
//! | `type` | `enc` is | extra attribute |
//! |---|---|---|
//! | `branch:version:<uuid>` | the version's key (decrypt-only copy) | |
//! | `branch:ACTIVE` | the same key, the version that encrypts | `version` = `branch:version:<uuid>` |
//! | `beacon:ACTIVE` | the beacon key (searchable encryption; stored, never used here) | |
//!
//! Every item also holds `create-time` (ISO 8601, UTC, microseconds), `kms-arn` (the KMS key `enc` is under),
//! `hierarchy-version` (N, `1`) and the caller's custom encryption context as `aws-crypto-ec:<key>` attributes.
//! `enc` is a KMS ciphertext whose encryption context is every other attribute of the item (numbers as their
//! decimal text) plus `tablename` = the logical key store name, so KMS authenticates the whole item.
//!
//! Branch keys are wrapped under a KMS key; under a multi-Region key, a key store table that is a global table
//! serves every region: each region decrypts with its local replica of the MRK.
//!
//! Modules: [`dynamo`] (the DynamoDB store: create, rotate, get), [`cache`] (a TTL and size bounded cache with
//! single-flight loading in front of it, the [`crate::BranchKeySource`] the keyring uses).

pub mod cache;
pub mod dynamo;

use std::collections::BTreeMap;

use thiserror::Error;

use crate::kms::{EncryptionContext, KmsError};

pub use cache::{BranchKeyCache, BranchKeyLoader, CacheSettings, CachingBranchKeySource};
pub use dynamo::{BranchKeyItemInfo, DynamoKeyStore};

/// `type` of the active branch key item.
pub const BRANCH_ACTIVE: &str = "branch:ACTIVE";
/// `type` of the beacon key item.
pub const BEACON_ACTIVE: &str = "beacon:ACTIVE";
/// Prefix of a branch key version's `type` (and of the active item's `version`).
pub const VERSION_PREFIX: &str = "branch:version:";
/// Prefix of custom encryption context attributes.
pub const CUSTOM_EC_PREFIX: &str = "aws-crypto-ec:";

pub(crate) const ATTR_ID: &str = "branch-key-id";
pub(crate) const ATTR_TYPE: &str = "type";
pub(crate) const ATTR_ENC: &str = "enc";
pub(crate) const ATTR_VERSION: &str = "version";
pub(crate) const ATTR_CREATE_TIME: &str = "create-time";
pub(crate) const ATTR_KMS_ARN: &str = "kms-arn";
pub(crate) const ATTR_HIERARCHY_VERSION: &str = "hierarchy-version";
/// Encryption context key of the logical key store name (not stored in the item).
pub(crate) const EC_TABLE_NAME: &str = "tablename";

/// Why a key store operation failed.
#[derive(Debug, Error)]
pub enum KeyStoreError {
    /// The item does not exist.
    #[error("branch key {branch_key_id:?} has no {item_type:?} item in key store table {table}")]
    NotFound {
        /// Key store table.
        table: String,
        /// Branch key id.
        branch_key_id: String,
        /// The `type` looked up.
        item_type: String,
    },
    /// The item exists but is not a valid key store item.
    #[error("key store item {branch_key_id:?}/{item_type:?} in table {table} is malformed: {reason}")]
    Malformed {
        /// Key store table.
        table: String,
        /// Branch key id.
        branch_key_id: String,
        /// The `type` of the item.
        item_type: String,
        /// What is wrong.
        reason: String,
    },
    /// The item is wrapped under a KMS key this store is not configured for.
    #[error(
        "branch key {branch_key_id:?} is wrapped under KMS key {stored}, which does not match the configured key {configured}"
    )]
    KeyMismatch {
        /// Branch key id.
        branch_key_id: String,
        /// `kms-arn` of the item.
        stored: String,
        /// The configured key.
        configured: String,
    },
    /// KMS refused to decrypt an item's `enc` under its encryption context: the item was changed, or this
    /// store's logical name is not the one the item was written with.
    #[error(
        "key store item {branch_key_id:?}/{item_type:?} in table {table} does not authenticate under logical key \
         store name {logical_name:?}: check key_store_logical_name (it defaults to the table name), or the item \
         was altered ({source})"
    )]
    NotAuthentic {
        /// Key store table.
        table: String,
        /// Branch key id.
        branch_key_id: String,
        /// The `type` of the item.
        item_type: String,
        /// The logical key store name used in the encryption context.
        logical_name: String,
        /// KMS's answer.
        source: Box<KmsError>,
    },
    /// KMS refused a call (classified; see [`KmsError`]).
    #[error("KMS: {0}")]
    Kms(#[from] KmsError),
    /// A DynamoDB call failed.
    #[error("DynamoDB {operation} on key store table {table} failed: {message}")]
    Dynamo {
        /// `GetItem`, `Query`, `TransactWriteItems`, …
        operation: &'static str,
        /// Key store table.
        table: String,
        /// The service's code and message.
        message: String,
        /// Whether the failure is worth retrying later (throttling, a 5xx answer, a timeout, a network failure,
        /// a conflicting transaction) rather than a finding about the key store.
        transient: bool,
    },
    /// `CreateKey` for an id that already exists.
    #[error("branch key {branch_key_id:?} already exists in key store table {table}")]
    AlreadyExists {
        /// Key store table.
        table: String,
        /// Branch key id.
        branch_key_id: String,
    },
    /// The active item changed between reading and rotating it.
    #[error(
        "the active version of branch key {branch_key_id:?} changed while it was being rotated; run the rotation again"
    )]
    ConcurrentRotation {
        /// Branch key id.
        branch_key_id: String,
    },
    /// The table exists with another key schema.
    #[error(
        "table {table} is not a key store: its key schema is {found}, expected branch-key-id (HASH, S) and type (RANGE, S)"
    )]
    BadSchema {
        /// The table.
        table: String,
        /// What it has.
        found: String,
    },
    /// Invalid arguments.
    #[error("{0}")]
    InvalidInput(String),
}

impl KeyStoreError {
    /// A stable snake_case label of the failure (`not_found`, `kms`, `dynamo`, …) for JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            KeyStoreError::NotFound { .. } => "not_found",
            KeyStoreError::Malformed { .. } => "malformed",
            KeyStoreError::KeyMismatch { .. } => "key_mismatch",
            KeyStoreError::NotAuthentic { .. } => "not_authentic",
            KeyStoreError::Kms(_) => "kms",
            KeyStoreError::Dynamo { .. } => "dynamodb",
            KeyStoreError::AlreadyExists { .. } => "already_exists",
            KeyStoreError::ConcurrentRotation { .. } => "concurrent_rotation",
            KeyStoreError::BadSchema { .. } => "bad_schema",
            KeyStoreError::InvalidInput(_) => "invalid_input",
        }
    }
}

/// The encryption contexts of one branch key version (hierarchy-version 1).
#[derive(Debug, Clone)]
pub(crate) struct VersionContexts {
    /// Of the `branch:version:<uuid>` item.
    pub decrypt_only: EncryptionContext,
    /// Of the `branch:ACTIVE` item.
    pub active: EncryptionContext,
    /// Of the `beacon:ACTIVE` item.
    pub beacon: EncryptionContext,
}

/// Builds the KMS encryption contexts of a new branch key version.
pub(crate) fn version_contexts(
    branch_key_id: &str,
    version: &str,
    create_time: &str,
    logical_name: &str,
    kms_arn: &str,
    custom: &BTreeMap<String, String>,
) -> VersionContexts {
    let mut base = EncryptionContext::new();
    base.insert(ATTR_ID.to_owned(), branch_key_id.to_owned());
    base.insert(ATTR_CREATE_TIME.to_owned(), create_time.to_owned());
    base.insert(EC_TABLE_NAME.to_owned(), logical_name.to_owned());
    base.insert(ATTR_KMS_ARN.to_owned(), kms_arn.to_owned());
    base.insert(ATTR_HIERARCHY_VERSION.to_owned(), "1".to_owned());
    for (k, v) in custom {
        base.insert(format!("{CUSTOM_EC_PREFIX}{k}"), v.clone());
    }
    let typed = |t: &str| {
        let mut ec = base.clone();
        ec.insert(ATTR_TYPE.to_owned(), t.to_owned());
        ec
    };
    let version_type = format!("{VERSION_PREFIX}{version}");
    let mut active = typed(BRANCH_ACTIVE);
    active.insert(ATTR_VERSION.to_owned(), version_type.clone());
    VersionContexts {
        decrypt_only: typed(&version_type),
        active,
        beacon: typed(BEACON_ACTIVE),
    }
}

/// The custom encryption context (prefix removed) within a key store encryption context.
pub(crate) fn custom_context(ec: &EncryptionContext) -> BTreeMap<String, String> {
    ec.iter()
        .filter_map(|(k, v)| k.strip_prefix(CUSTOM_EC_PREFIX).map(|k| (k.to_owned(), v.clone())))
        .collect()
}

/// The branch key version (UUID text) an authenticated encryption context names: its `type` for a version
/// item, its `version` for the active item.
pub(crate) fn version_of(ec: &EncryptionContext) -> Result<&str, String> {
    let t = ec.get(ATTR_TYPE).ok_or("no type")?;
    let v = if t == BRANCH_ACTIVE {
        ec.get(ATTR_VERSION).ok_or("the active item has no version attribute")?
    } else {
        t
    };
    v.strip_prefix(VERSION_PREFIX)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{v:?} is not \"{VERSION_PREFIX}<uuid>\""))
}

/// Now as ISO 8601 in UTC with microseconds (`2026-11-28T17:03:29.358123Z`).
pub(crate) fn create_time_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let micros = now.subsec_micros();
    let t = aws_smithy_types::DateTime::from_secs_and_nanos(now.as_secs() as i64, micros * 1000);
    let s = t
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned());
    // Always six fraction digits, as the key store specifies.
    let secs = s.trim_end_matches('Z').split('.').next().unwrap_or("").to_owned();
    format!("{secs}.{micros:06}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_follow_the_official_layout() {
        let custom = BTreeMap::from([("department".to_owned(), "admin".to_owned())]);
        let c = version_contexts(
            "bk",
            "83eec007-5659-4554-bf11-699b90f41ac6",
            "2023-06-03T19:03:29.358000Z",
            "KeyStore",
            "arn:aws:kms:us-east-1:111122223333:key/mrk-1",
            &custom,
        );
        let keys = |ec: &EncryptionContext| ec.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(&c.decrypt_only),
            [
                "aws-crypto-ec:department",
                "branch-key-id",
                "create-time",
                "hierarchy-version",
                "kms-arn",
                "tablename",
                "type"
            ]
        );
        assert_eq!(
            c.decrypt_only["type"],
            "branch:version:83eec007-5659-4554-bf11-699b90f41ac6"
        );
        assert_eq!(c.active["type"], "branch:ACTIVE");
        assert_eq!(c.active["version"], c.decrypt_only["type"]);
        assert_eq!(c.beacon["type"], "beacon:ACTIVE");
        assert!(!c.beacon.contains_key("version"));
        assert_eq!(c.active["hierarchy-version"], "1");
        assert_eq!(custom_context(&c.active), custom);
        assert_eq!(version_of(&c.active).unwrap(), "83eec007-5659-4554-bf11-699b90f41ac6");
        assert_eq!(
            version_of(&c.decrypt_only).unwrap(),
            "83eec007-5659-4554-bf11-699b90f41ac6"
        );
        assert!(version_of(&c.beacon).is_err());
    }

    #[test]
    fn create_time_has_microseconds() {
        let t = create_time_now();
        assert_eq!(t.len(), "2026-11-28T17:03:29.358123Z".len(), "{t}");
        assert!(
            t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.',
            "{t}"
        );
    }
}
