//! Table configuration: attribute actions, key names, unsigned attributes, algorithm suite.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// What happens to an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CryptoAction {
    /// Encrypted and signed (legend `e`).
    EncryptAndSign,
    /// Plaintext, signed (legend `s`).
    SignOnly,
    /// Plaintext, signed, and its value is in the encryption context (legend `c`; record version 2).
    SignAndIncludeInEncryptionContext,
    /// Untouched and unauthenticated (no legend byte).
    DoNothing,
}

impl CryptoAction {
    /// The configuration spelling: `ENCRYPT_AND_SIGN`, `SIGN_ONLY`, …
    pub fn as_str(self) -> &'static str {
        match self {
            CryptoAction::EncryptAndSign => "ENCRYPT_AND_SIGN",
            CryptoAction::SignOnly => "SIGN_ONLY",
            CryptoAction::SignAndIncludeInEncryptionContext => "SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT",
            CryptoAction::DoNothing => "DO_NOTHING",
        }
    }

    /// The header legend byte, `None` for DO_NOTHING.
    pub fn legend_byte(self) -> Option<u8> {
        match self {
            CryptoAction::EncryptAndSign => Some(b'e'),
            CryptoAction::SignOnly => Some(b's'),
            CryptoAction::SignAndIncludeInEncryptionContext => Some(b'c'),
            CryptoAction::DoNothing => None,
        }
    }

    /// The action of a legend byte.
    pub fn from_legend_byte(b: u8) -> Option<CryptoAction> {
        match b {
            b'e' => Some(CryptoAction::EncryptAndSign),
            b's' => Some(CryptoAction::SignOnly),
            b'c' => Some(CryptoAction::SignAndIncludeInEncryptionContext),
            _ => None,
        }
    }

    /// Whether the attribute is authenticated (everything but DO_NOTHING).
    pub fn is_signed(self) -> bool {
        self != CryptoAction::DoNothing
    }
}

impl fmt::Display for CryptoAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown crypto action string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown crypto action {0:?}")]
pub struct UnknownAction(pub String);

impl FromStr for CryptoAction {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Self, UnknownAction> {
        Ok(match s {
            "ENCRYPT_AND_SIGN" => CryptoAction::EncryptAndSign,
            "SIGN_ONLY" => CryptoAction::SignOnly,
            "SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT" => CryptoAction::SignAndIncludeInEncryptionContext,
            "DO_NOTHING" => CryptoAction::DoNothing,
            _ => return Err(UnknownAction(s.to_owned())),
        })
    }
}

/// The two DB-ESDK algorithm suites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum AlgorithmSuite {
    /// 0x6700 ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY_SYMSIG_HMAC_SHA384: HMAC recipient tags only.
    HmacOnly,
    /// 0x6701 ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384_SYMSIG_HMAC_SHA384 (the default).
    #[default]
    EcdsaP384,
}

impl AlgorithmSuite {
    /// 0x6700 or 0x6701.
    pub fn id(self) -> u16 {
        match self {
            AlgorithmSuite::HmacOnly => 0x6700,
            AlgorithmSuite::EcdsaP384 => 0x6701,
        }
    }

    /// The suite of an id.
    pub fn from_id(id: u16) -> Option<AlgorithmSuite> {
        match id {
            0x6700 => Some(AlgorithmSuite::HmacOnly),
            0x6701 => Some(AlgorithmSuite::EcdsaP384),
            _ => None,
        }
    }

    /// The header flavor byte (second suite byte).
    pub fn flavor(self) -> u8 {
        match self {
            AlgorithmSuite::HmacOnly => 0,
            AlgorithmSuite::EcdsaP384 => 1,
        }
    }

    /// The suite of a header flavor byte.
    pub fn from_flavor(b: u8) -> Option<AlgorithmSuite> {
        Self::from_id(0x6700 | u16::from(b)).filter(|_| b <= 1)
    }

    /// The MPL name.
    pub fn name(self) -> &'static str {
        match self {
            AlgorithmSuite::HmacOnly => "ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY_SYMSIG_HMAC_SHA384",
            AlgorithmSuite::EcdsaP384 => "ALG_AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384_SYMSIG_HMAC_SHA384",
        }
    }

    /// The suite of an MPL name.
    pub fn from_name(s: &str) -> Option<AlgorithmSuite> {
        [AlgorithmSuite::HmacOnly, AlgorithmSuite::EcdsaP384]
            .into_iter()
            .find(|a| a.name() == s)
    }

    /// Whether records carry an ECDSA signature.
    pub fn signs(self) -> bool {
        self == AlgorithmSuite::EcdsaP384
    }
}

/// A table's DB-ESDK configuration (the DynamoDbTableEncryptionConfig subset ddbguard needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// Logical table name (part of every canonical path and the encryption context).
    pub logical_table_name: String,
    /// Partition key attribute name.
    pub partition_key: String,
    /// Sort key attribute name, if the table has one.
    pub sort_key: Option<String>,
    /// Action per attribute, used on encrypt (decrypt follows the header's legend).
    pub attribute_actions: BTreeMap<String, CryptoAction>,
    /// Attributes that are not signed (DO_NOTHING); decrypt treats every other attribute as signed.
    pub allowed_unsigned_attributes: BTreeSet<String>,
    /// Attributes with this prefix are not signed.
    pub allowed_unsigned_attribute_prefix: Option<String>,
    /// Suite used on encrypt (decrypt accepts both, see [`crate::DecryptedItem::header`]).
    pub algorithm_suite: AlgorithmSuite,
}

/// An inconsistent [`TableConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The logical table name or a key name is empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A key attribute is not signed in plaintext.
    #[error(
        "key attribute {attribute:?} has action {action}; key attributes must be SIGN_ONLY, or SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT when any attribute uses it"
    )]
    KeyAction {
        /// The key attribute.
        attribute: String,
        /// Its action.
        action: CryptoAction,
    },
    /// A DO_NOTHING attribute is not covered by the allowed unsigned attributes or prefix.
    #[error("attribute {0:?} is DO_NOTHING but not in allowed_unsigned_attributes nor under the unsigned prefix")]
    DoNothingNotAllowed(String),
    /// A signed attribute is also allowed unsigned.
    #[error("attribute {0:?} is signed but also allowed unsigned")]
    SignedButAllowedUnsigned(String),
    /// An attribute name uses the reserved `aws_dbe_` prefix.
    #[error("attribute {0:?} uses the reserved prefix aws_dbe_")]
    Reserved(String),
}

impl TableConfig {
    /// A configuration with no attribute actions yet (the partition key must still be given one).
    pub fn new(logical_table_name: impl Into<String>, partition_key: impl Into<String>) -> TableConfig {
        TableConfig {
            logical_table_name: logical_table_name.into(),
            partition_key: partition_key.into(),
            sort_key: None,
            attribute_actions: BTreeMap::new(),
            allowed_unsigned_attributes: BTreeSet::new(),
            allowed_unsigned_attribute_prefix: None,
            algorithm_suite: AlgorithmSuite::default(),
        }
    }

    /// Whether `name` is unsigned by configuration (listed or under the prefix).
    pub fn is_allowed_unsigned(&self, name: &str) -> bool {
        self.allowed_unsigned_attributes.contains(name)
            || self
                .allowed_unsigned_attribute_prefix
                .as_deref()
                .is_some_and(|p| name.starts_with(p))
    }

    /// Whether any configured attribute is ENCRYPT_AND_SIGN.
    pub fn encrypts_anything(&self) -> bool {
        self.attribute_actions
            .values()
            .any(|a| *a == CryptoAction::EncryptAndSign)
    }

    /// The key names: partition key, then sort key.
    pub fn key_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.partition_key.as_str()).chain(self.sort_key.as_deref())
    }

    /// Checks the rules of the DB-ESDK table configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.logical_table_name.is_empty() {
            return Err(ConfigError::Empty("logical table name"));
        }
        if self.partition_key.is_empty() {
            return Err(ConfigError::Empty("partition key"));
        }
        if self.sort_key.as_deref() == Some("") {
            return Err(ConfigError::Empty("sort key"));
        }
        let v2 = self
            .attribute_actions
            .values()
            .any(|a| *a == CryptoAction::SignAndIncludeInEncryptionContext);
        let key_action = if v2 {
            CryptoAction::SignAndIncludeInEncryptionContext
        } else {
            CryptoAction::SignOnly
        };
        for key in self.key_names() {
            let action = self
                .attribute_actions
                .get(key)
                .copied()
                .unwrap_or(CryptoAction::DoNothing);
            if action != key_action {
                return Err(ConfigError::KeyAction {
                    attribute: key.to_owned(),
                    action,
                });
            }
        }
        for (name, action) in &self.attribute_actions {
            if name.starts_with(crate::RESERVED_PREFIX) {
                return Err(ConfigError::Reserved(name.clone()));
            }
            let unsigned = self.is_allowed_unsigned(name);
            if *action == CryptoAction::DoNothing && !unsigned {
                return Err(ConfigError::DoNothingNotAllowed(name.clone()));
            }
            if action.is_signed() && unsigned {
                return Err(ConfigError::SignedButAllowedUnsigned(name.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> TableConfig {
        let mut c = TableConfig::new("T", "pk");
        c.attribute_actions.insert("pk".into(), CryptoAction::SignOnly);
        c.attribute_actions
            .insert("secret".into(), CryptoAction::EncryptAndSign);
        c
    }

    #[test]
    fn actions_parse() {
        for a in [
            CryptoAction::EncryptAndSign,
            CryptoAction::SignOnly,
            CryptoAction::SignAndIncludeInEncryptionContext,
            CryptoAction::DoNothing,
        ] {
            assert_eq!(a.as_str().parse::<CryptoAction>(), Ok(a));
            if let Some(b) = a.legend_byte() {
                assert_eq!(CryptoAction::from_legend_byte(b), Some(a));
            }
        }
        assert!("sign_only".parse::<CryptoAction>().is_err());
    }

    #[test]
    fn suites() {
        assert_eq!(AlgorithmSuite::from_id(0x6701), Some(AlgorithmSuite::EcdsaP384));
        assert_eq!(AlgorithmSuite::from_flavor(0), Some(AlgorithmSuite::HmacOnly));
        assert_eq!(AlgorithmSuite::from_flavor(2), None);
        assert_eq!(AlgorithmSuite::from_id(0x6702), None);
        assert_eq!(
            AlgorithmSuite::from_name(AlgorithmSuite::HmacOnly.name()),
            Some(AlgorithmSuite::HmacOnly)
        );
    }

    #[test]
    fn validation() {
        assert_eq!(base().validate(), Ok(()));
        let mut c = base();
        c.attribute_actions.insert("pk".into(), CryptoAction::EncryptAndSign);
        assert!(matches!(c.validate(), Err(ConfigError::KeyAction { .. })));
        let mut c = base();
        c.attribute_actions
            .insert("x".into(), CryptoAction::SignAndIncludeInEncryptionContext);
        assert!(matches!(c.validate(), Err(ConfigError::KeyAction { .. })));
        c.attribute_actions
            .insert("pk".into(), CryptoAction::SignAndIncludeInEncryptionContext);
        assert_eq!(c.validate(), Ok(()));
        let mut c = base();
        c.attribute_actions.insert("junk".into(), CryptoAction::DoNothing);
        assert!(matches!(c.validate(), Err(ConfigError::DoNothingNotAllowed(_))));
        c.allowed_unsigned_attribute_prefix = Some("ju".into());
        assert_eq!(c.validate(), Ok(()));
        c.allowed_unsigned_attributes.insert("secret".into());
        assert!(matches!(c.validate(), Err(ConfigError::SignedButAllowedUnsigned(_))));
        let mut c = base();
        c.attribute_actions.insert("aws_dbe_x".into(), CryptoAction::SignOnly);
        assert!(matches!(c.validate(), Err(ConfigError::Reserved(_))));
        let mut c = base();
        c.sort_key = Some("sk".into());
        assert!(matches!(c.validate(), Err(ConfigError::KeyAction { .. })));
    }
}
