//! The table policy: what a table's items must look like, beyond what the item format itself enforces.
//!
//! [`TableConfig`] is what the DB-ESDK needs to encrypt and decrypt; [`TablePolicy`] adds what a verifier, an
//! audit or a backfill holds items to: attributes that must be encrypted whenever present and the one allowed
//! algorithm suite. Its checks are pure functions of a parsed header and the item, so every entry point (stream
//! verifier, `item decrypt`, a backfill's audit scan) applies the same rules.

use std::collections::BTreeSet;

use crate::config::{AlgorithmSuite, ConfigError, CryptoAction, TableConfig};
use crate::header::Header;
use crate::item::{DecryptedItem, signed_attribute_names};
use crate::value::Item;
use crate::verdict::{Reason, Verdict};

/// The policy of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePolicy {
    /// The DB-ESDK table configuration (attribute actions, keys, unsigned attributes, suite used on encrypt).
    pub config: TableConfig,
    /// Attributes that must be ENCRYPT_AND_SIGN whenever present, in addition to those the table configuration
    /// marks ENCRYPT_AND_SIGN.
    pub required_encrypted: BTreeSet<String>,
    /// If set, items written with another algorithm suite are a `policy_violation`.
    pub require_suite: Option<AlgorithmSuite>,
}

/// How an item differs from its table's policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyMismatch {
    /// The item was written with another suite than `require_suite`.
    #[error("record uses suite {}, the policy requires {}", written.name(), required.name())]
    WrongSuite {
        /// The header's suite.
        written: AlgorithmSuite,
        /// The policy's.
        required: AlgorithmSuite,
    },
    /// An attribute the policy requires encrypted is signed-only (`Some`) or unsigned (`None`).
    #[error("attribute {attribute:?} must be ENCRYPT_AND_SIGN but {}", match written {
        Some(action) => format!("was written {action}"),
        None => "is stored unsigned".to_owned(),
    })]
    AttributeNotEncrypted {
        /// The attribute name.
        attribute: String,
        /// The action it was written with, `None` when unsigned.
        written: Option<CryptoAction>,
    },
    /// A signed attribute the policy has no action for.
    #[error("attribute {attribute:?} is signed ({written}) but has no action in the policy")]
    UnexpectedSignedAttribute {
        /// The attribute name.
        attribute: String,
        /// The action it was written with.
        written: CryptoAction,
    },
    /// An attribute written with another action than the policy's.
    #[error("attribute {attribute:?} was written {written}, the policy says {policy}")]
    ActionMismatch {
        /// The attribute name.
        attribute: String,
        /// The action it was written with.
        written: CryptoAction,
        /// The policy's action.
        policy: CryptoAction,
    },
}

impl PolicyMismatch {
    /// The verdict: `plaintext` for an attribute that should have been encrypted, else `policy_violation`.
    pub fn verdict(&self) -> Verdict {
        match self {
            PolicyMismatch::AttributeNotEncrypted { .. } => Verdict::Plaintext,
            _ => Verdict::PolicyViolation,
        }
    }

    /// The reason code.
    pub fn reason(&self) -> Reason {
        match self {
            PolicyMismatch::WrongSuite { .. } => Reason::WrongSuite,
            PolicyMismatch::AttributeNotEncrypted { .. } => Reason::AttributeNotEncrypted,
            PolicyMismatch::UnexpectedSignedAttribute { .. } => Reason::UnexpectedSignedAttribute,
            PolicyMismatch::ActionMismatch { .. } => Reason::ActionMismatch,
        }
    }
}

impl TablePolicy {
    /// A policy that asks nothing beyond `config`: no extra required attributes, any suite.
    pub fn new(config: TableConfig) -> TablePolicy {
        TablePolicy {
            config,
            required_encrypted: BTreeSet::new(),
            require_suite: None,
        }
    }

    /// Checks the table configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.config.validate()
    }

    /// Whether the policy requires anything encrypted (then an item without `aws_dbe_head` is `plaintext`, else
    /// a `policy_violation`: every item must at least be signed).
    pub fn requires_encryption(&self) -> bool {
        self.config.encrypts_anything() || !self.required_encrypted.is_empty()
    }

    /// Whether `name` must be ENCRYPT_AND_SIGN when present.
    pub fn must_encrypt(&self, name: &str) -> bool {
        self.required_encrypted.contains(name)
            || self.config.attribute_actions.get(name) == Some(&CryptoAction::EncryptAndSign)
    }

    /// The header's suite and legend against the policy, first mismatch wins: suite, then attributes that must be
    /// encrypted (signed-only, then unsigned), then signed attributes without an action or with another one.
    ///
    /// `header` must be the item's, checked by [`crate::check_structure`] (so that the legend lines up with the
    /// item's signed attributes in canonical order).
    pub fn check_header(&self, header: &Header, item: &Item) -> Result<(), PolicyMismatch> {
        if let Some(required) = self.require_suite
            && header.suite != required
        {
            return Err(PolicyMismatch::WrongSuite {
                written: header.suite,
                required,
            });
        }
        let names = signed_attribute_names(&self.config, item);
        for (name, &written) in names.iter().zip(&header.legend) {
            if written != CryptoAction::EncryptAndSign && self.must_encrypt(name) {
                return Err(PolicyMismatch::AttributeNotEncrypted {
                    attribute: (*name).to_owned(),
                    written: Some(written),
                });
            }
        }
        if let Some(name) = item
            .keys()
            .find(|n| self.must_encrypt(n) && self.config.is_allowed_unsigned(n))
        {
            return Err(PolicyMismatch::AttributeNotEncrypted {
                attribute: name.clone(),
                written: None,
            });
        }
        for (name, &written) in names.iter().zip(&header.legend) {
            match self.config.attribute_actions.get(*name) {
                None => {
                    return Err(PolicyMismatch::UnexpectedSignedAttribute {
                        attribute: (*name).to_owned(),
                        written,
                    });
                }
                Some(&policy) if policy != written => {
                    return Err(PolicyMismatch::ActionMismatch {
                        attribute: (*name).to_owned(),
                        written,
                        policy,
                    });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The actions a decrypted item was written with against the policy's.
    pub fn check_decrypted(&self, decrypted: &DecryptedItem) -> Result<(), PolicyMismatch> {
        match decrypted.action_differences(&self.config).first() {
            Some(&(name, written, policy)) => Err(PolicyMismatch::ActionMismatch {
                attribute: name.to_owned(),
                written,
                policy,
            }),
            None => Ok(()),
        }
    }
}

impl From<TableConfig> for TablePolicy {
    fn from(config: TableConfig) -> TablePolicy {
        TablePolicy::new(config)
    }
}
