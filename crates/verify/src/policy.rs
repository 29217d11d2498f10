//! What verification adds to the table policy: the configured KMS key and the sample rate.
//!
//! The table policy itself (attribute actions, required encryption, suite) is [`TablePolicy`] in `ddbguard-dbe`,
//! next to the table configuration, so that every crate judging items (this one, a backfill's audit) holds them
//! to the same rules. What stays here needs `ddbguard-keys` (ARN parsing and MRK matching) or is a property of
//! continuous verification (sampling).

use ddbguard_dbe::{ConfigError, TablePolicy};
use ddbguard_ddbec::AttributeActions;
use ddbguard_keys::arn::{ArnError, KmsArn};

/// How a table's legacy DynamoDB Encryption Client items are judged (`[tables.legacy]` with `allowed = true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyPolicy {
    /// What the legacy client did to each attribute (key attributes already demoted to `SIGN_ONLY`).
    pub actions: AttributeActions,
    /// The table name the items were signed under (the physical table name the client was given).
    pub table_name: String,
}

/// The verification policy of one table.
#[derive(Debug, Clone)]
pub struct VerifyPolicy {
    /// The table policy: configuration, required-encrypted attributes, required suite.
    pub table: TablePolicy,
    /// The configured KMS key (any replica): every `aws-kms` EDK must MRK-match it, else `key_not_mrk`.
    /// `None` for raw and hierarchical keyrings (then `aws-kms` EDKs are not checked here; the keyring decides).
    pub key_arn: Option<KmsArn>,
    /// Share of stream records fully decrypted, `0.0..=1.0`; the rest get `ok_structural`. Records under a
    /// hierarchical keyring's EDK are always decrypted in full (no KMS call per record).
    pub sample_rate: f64,
    /// Legacy items are verified under this policy (with the judge's materials provider); `None`: they are
    /// `legacy_format`.
    pub legacy: Option<LegacyPolicy>,
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
    /// A policy for `table` (a [`TablePolicy`] or a bare table configuration): no KMS key, every record decrypted.
    pub fn new(table: impl Into<TablePolicy>) -> VerifyPolicy {
        VerifyPolicy {
            table: table.into(),
            key_arn: None,
            sample_rate: 1.0,
            legacy: None,
        }
    }

    /// Sets the configured KMS key from its ARN (must name a key, not an alias).
    pub fn with_key_arn(self, arn: &str) -> Result<VerifyPolicy, PolicyError> {
        Ok(self.with_key(KmsArn::parse_key(arn)?))
    }

    /// Sets the configured KMS key, already parsed (the config keeps ARNs parsed).
    pub fn with_key(mut self, arn: KmsArn) -> VerifyPolicy {
        self.key_arn = Some(arn);
        self
    }

    /// Checks the table configuration and the sample rate.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.table.validate()?;
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(PolicyError::SampleRate(self.sample_rate));
        }
        Ok(())
    }
}
