//! What a table's records must look like, beyond what the item format itself enforces.

use std::collections::BTreeSet;

use ddbguard_dbe::{AlgorithmSuite, ConfigError, TableConfig};
use ddbguard_keys::arn::{ArnError, KmsArn};

/// The verification policy of one table.
#[derive(Debug, Clone)]
pub struct VerifyPolicy {
    /// The DB-ESDK table configuration (attribute actions, keys, unsigned attributes).
    pub table: TableConfig,
    /// Attributes that must be ENCRYPT_AND_SIGN whenever present, in addition to those the table configuration
    /// marks ENCRYPT_AND_SIGN.
    pub required_encrypted: BTreeSet<String>,
    /// If set, records written with another algorithm suite are a `policy_violation`.
    pub require_suite: Option<AlgorithmSuite>,
    /// The configured KMS key (any replica): every `aws-kms` EDK must MRK-match it, else `key_not_mrk`.
    /// `None` for raw and hierarchical keyrings (then `aws-kms` EDKs are not checked here; the keyring decides).
    pub key_arn: Option<KmsArn>,
    /// Share of records fully decrypted, `0.0..=1.0`; the rest get `ok_structural`. Records under a hierarchical
    /// keyring's EDK are always decrypted in full (no KMS call per record).
    pub sample_rate: f64,
}

/// An unusable policy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// The table configuration is invalid.
    #[error("table configuration: {0}")]
    Table(#[from] ConfigError),
    /// `sample_rate` outside `0.0..=1.0` (or NaN).
    #[error("sample_rate must be between 0 and 1, got {0}")]
    SampleRate(f64),
    /// The key ARN does not parse or names an alias.
    #[error("key ARN: {0}")]
    KeyArn(#[from] ArnError),
}

impl VerifyPolicy {
    /// A policy for `table`: no extra required attributes, any suite, no KMS key, every record decrypted.
    pub fn new(table: TableConfig) -> VerifyPolicy {
        VerifyPolicy {
            table,
            required_encrypted: BTreeSet::new(),
            require_suite: None,
            key_arn: None,
            sample_rate: 1.0,
        }
    }

    /// Sets the configured KMS key from its ARN (must name a key, not an alias).
    pub fn with_key_arn(mut self, arn: &str) -> Result<VerifyPolicy, PolicyError> {
        self.key_arn = Some(KmsArn::parse_key(arn)?);
        Ok(self)
    }

    /// Checks the table configuration and the sample rate.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.table.validate()?;
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(PolicyError::SampleRate(self.sample_rate));
        }
        Ok(())
    }

    /// Whether the policy requires anything encrypted (then an item without `aws_dbe_head` is `plaintext`).
    pub fn requires_encryption(&self) -> bool {
        self.table.encrypts_anything() || !self.required_encrypted.is_empty()
    }

    /// Whether `name` must be ENCRYPT_AND_SIGN when present.
    pub fn must_encrypt(&self, name: &str) -> bool {
        self.required_encrypted.contains(name)
            || self.table.attribute_actions.get(name) == Some(&ddbguard_dbe::CryptoAction::EncryptAndSign)
    }
}
