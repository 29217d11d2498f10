//! Typed failures and the verdicts they map to.
//!
//! Every distinct way an item can fail to decrypt or encrypt is one [`DbeError`] variant, so that the
//! verifier can turn it into a [`Verdict`] (architecture §4) and a stable [`DbeError::reason`] code for
//! metrics and logs. Messages name attributes, lengths and offsets; they never contain attribute values
//! or key material.

use std::fmt;

use crate::config::ConfigError;
use crate::keyring::KeyringError;
use crate::verdict::{Reason, Verdict};

/// Which of the two reserved attributes an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `aws_dbe_head`
    Header,
    /// `aws_dbe_foot`
    Footer,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Header => crate::HEADER_ATTRIBUTE,
            Part::Footer => crate::FOOTER_ATTRIBUTE,
        })
    }
}

/// Everything that can go wrong decrypting or encrypting one item.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbeError {
    // ---- no DB-ESDK item at all ----
    /// Neither `aws_dbe_head` nor `aws_dbe_foot` is present.
    #[error("item has no aws_dbe_head/aws_dbe_foot: it is not encrypted")]
    NotEncrypted {
        /// Whether the policy has ENCRYPT_AND_SIGN attributes (then the verdict is `plaintext`).
        policy_encrypts: bool,
    },
    /// The item was written by the legacy DynamoDB Encryption Client.
    #[error("item was written by the legacy DynamoDB Encryption Client (*amzn-ddb-map-desc*)")]
    LegacyFormat,

    // ---- header / footer structure ----
    /// One of `aws_dbe_head` / `aws_dbe_foot` is present, the other is not.
    #[error("{part} is missing")]
    PartMissing {
        /// The missing attribute.
        part: Part,
    },
    /// `aws_dbe_head` / `aws_dbe_foot` is not of DynamoDB type B.
    #[error("{part} has type {found}, expected B")]
    PartWrongType {
        /// The attribute.
        part: Part,
        /// The DynamoDB type found.
        found: &'static str,
    },
    /// The header bytes do not follow the layout.
    #[error("malformed aws_dbe_head: {what} at byte {offset}")]
    MalformedHeader {
        /// What was wrong.
        what: &'static str,
        /// Byte offset inside the header.
        offset: usize,
    },
    /// Header version byte is not 1 or 2.
    #[error("unsupported record version {0:#04x}")]
    UnsupportedVersion(u8),
    /// Header flavor byte is not 0 or 1.
    #[error("unsupported format flavor {0:#04x}")]
    UnsupportedFlavor(u8),
    /// Footer length does not fit the header's EDK count and flavor.
    #[error("aws_dbe_foot is {len} bytes; expected {expected} for {edks} EDK(s) and flavor {flavor}")]
    FooterLength {
        /// Actual length.
        len: usize,
        /// Expected length.
        expected: usize,
        /// EDK count in the header.
        edks: usize,
        /// Flavor byte.
        flavor: u8,
    },

    // ---- shape vs. policy ----
    /// The number of signed attributes on the item differs from the header's legend.
    #[error("header signs {legend} attribute(s) but the item has {signed} signed attribute(s)")]
    LegendMismatch {
        /// Legend length.
        legend: usize,
        /// Signed attributes on the item (all but header, footer and allowed-unsigned ones).
        signed: usize,
    },
    /// More signed attributes than the legend and this one is not in the policy at all.
    #[error(
        "attribute {attribute:?} is not in the policy and not allowed unsigned, so it must be signed, but the header does not sign it"
    )]
    UnexpectedSignedAttribute {
        /// The attribute name.
        attribute: String,
    },
    /// The partition or sort key attribute is missing.
    #[error("key attribute {attribute:?} is missing")]
    MissingKeyAttribute {
        /// The key attribute name.
        attribute: String,
    },
    /// A SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT attribute is missing on encrypt.
    #[error("attribute {attribute:?} is SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT and must be present")]
    MissingContextAttribute {
        /// The attribute name.
        attribute: String,
    },
    /// An attribute name uses the reserved `aws_dbe_` prefix on encrypt.
    #[error("attribute {attribute:?} uses the reserved prefix aws_dbe_")]
    ReservedAttributeName {
        /// The attribute name.
        attribute: String,
    },
    /// An attribute on the item has no action and is not allowed unsigned (encrypt).
    #[error("attribute {attribute:?} has no crypto action and is not allowed unsigned")]
    MissingAction {
        /// The attribute name.
        attribute: String,
    },
    /// The table configuration is invalid.
    #[error("invalid table configuration: {0}")]
    Config(#[from] ConfigError),

    // ---- context ----
    /// The header's stored encryption context contradicts the context built from the item.
    #[error("stored encryption context entry {key:?} differs from the value derived from the item")]
    ContextMismatch {
        /// The EC key.
        key: String,
    },
    /// An encryption-context entry or header field does not fit its 16-bit length (encrypt).
    #[error("{what} is too large for the item format ({len} > {max})")]
    TooLarge {
        /// What overflowed.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },

    // ---- keys ----
    /// The keyring failed (no EDK for it, key unavailable, throttled, …).
    #[error("keyring: {0}")]
    Keyring(#[from] KeyringError),
    /// The keyring answered with an EDK index outside the header's EDK list.
    #[error("keyring returned EDK index {index} but the header has {count} EDK(s)")]
    KeyringIndex {
        /// Returned index.
        index: usize,
        /// EDK count.
        count: usize,
    },
    /// The wrapped data key (intermediate key wrapping) did not authenticate.
    #[error("the data key in EDK {edk_index} did not authenticate under the intermediate key")]
    DataKeyUnwrap {
        /// EDK used.
        edk_index: usize,
    },

    // ---- authentication ----
    /// Header commitment does not match the data key.
    #[error("header commitment does not match the data key")]
    CommitmentMismatch,
    /// No recipient tag in the footer matches.
    #[error("no recipient tag in aws_dbe_foot matches the canonical record")]
    TagMismatch,
    /// The ECDSA signature does not verify.
    #[error("ECDSA P-384 signature does not verify")]
    SignatureInvalid,
    /// The encryption context of an 0x6701 record has no (valid) `aws-crypto-public-key`.
    #[error("aws-crypto-public-key is {0}")]
    PublicKey(&'static str),
    /// AES-GCM authentication of an encrypted attribute failed.
    #[error("attribute {attribute:?} failed authentication")]
    FieldAuthentication {
        /// The attribute name.
        attribute: String,
    },
    /// An ENCRYPT_AND_SIGN attribute is not of type B or is too short to hold a ciphertext.
    #[error("encrypted attribute {attribute:?} {what}")]
    MalformedEncryptedField {
        /// The attribute name.
        attribute: String,
        /// What was wrong.
        what: &'static str,
    },
    /// A value could not be serialized or deserialized (after decryption: the plaintext is malformed).
    #[error("attribute {attribute:?}: bad value serialization: {what}")]
    BadValue {
        /// The attribute name.
        attribute: String,
        /// What was wrong.
        what: &'static str,
    },
    /// A number is not a valid DynamoDB number (syntax, > 38 significant digits, out of range).
    #[error("attribute {attribute:?}: number cannot be normalized: {what}")]
    InvalidNumber {
        /// The attribute name (empty when normalizing a bare string).
        attribute: String,
        /// What was wrong.
        what: &'static str,
    },
    /// A cryptographic primitive failed unexpectedly (random source, key generation, signing).
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
}

impl DbeError {
    /// The verdict this failure means for a stream record (architecture §4).
    pub fn verdict(&self) -> Verdict {
        use DbeError::*;
        match self {
            NotEncrypted { policy_encrypts: true } => Verdict::Plaintext,
            NotEncrypted { policy_encrypts: false } => Verdict::PolicyViolation,
            LegacyFormat => Verdict::LegacyFormat,
            PartMissing { .. }
            | PartWrongType { .. }
            | MalformedHeader { .. }
            | UnsupportedVersion(_)
            | UnsupportedFlavor(_)
            | FooterLength { .. }
            | ContextMismatch { .. }
            | KeyringIndex { .. }
            | DataKeyUnwrap { .. }
            | CommitmentMismatch
            | TagMismatch
            | SignatureInvalid
            | PublicKey(_)
            | FieldAuthentication { .. }
            | MalformedEncryptedField { .. }
            | BadValue { .. }
            | InvalidNumber { .. }
            | Crypto(_) => Verdict::IntegrityFailed,
            LegendMismatch { .. }
            | UnexpectedSignedAttribute { .. }
            | MissingKeyAttribute { .. }
            | MissingContextAttribute { .. }
            | ReservedAttributeName { .. }
            | MissingAction { .. }
            | Config(_)
            | TooLarge { .. } => Verdict::PolicyViolation,
            Keyring(e) => e.verdict(),
        }
    }

    /// The stable reason code for metrics, logs and outputs.
    pub fn reason(&self) -> Reason {
        use DbeError::*;
        match self {
            NotEncrypted { .. } => Reason::NotEncrypted,
            LegacyFormat => Reason::LegacyFormat,
            PartMissing { part: Part::Header } => Reason::HeaderMissing,
            PartMissing { part: Part::Footer } => Reason::FooterMissing,
            PartWrongType { part: Part::Header, .. } => Reason::HeaderWrongType,
            PartWrongType { part: Part::Footer, .. } => Reason::FooterWrongType,
            MalformedHeader { .. } => Reason::MalformedHeader,
            UnsupportedVersion(_) => Reason::UnsupportedVersion,
            UnsupportedFlavor(_) => Reason::UnsupportedFlavor,
            FooterLength { .. } => Reason::FooterLength,
            LegendMismatch { .. } => Reason::LegendMismatch,
            UnexpectedSignedAttribute { .. } => Reason::UnexpectedSignedAttribute,
            MissingKeyAttribute { .. } => Reason::MissingKeyAttribute,
            MissingContextAttribute { .. } => Reason::MissingContextAttribute,
            ReservedAttributeName { .. } => Reason::ReservedAttributeName,
            MissingAction { .. } => Reason::MissingAttributeAction,
            Config(_) => Reason::InvalidConfig,
            ContextMismatch { .. } => Reason::ContextMismatch,
            TooLarge { .. } => Reason::TooLarge,
            Keyring(e) => e.reason(),
            KeyringIndex { .. } => Reason::KeyringBadIndex,
            DataKeyUnwrap { .. } => Reason::DataKeyUnwrapFailed,
            CommitmentMismatch => Reason::CommitmentMismatch,
            TagMismatch => Reason::RecipientTagMismatch,
            SignatureInvalid => Reason::SignatureInvalid,
            PublicKey(_) => Reason::PublicKeyInvalid,
            FieldAuthentication { .. } => Reason::FieldAuthenticationFailed,
            MalformedEncryptedField { .. } => Reason::MalformedEncryptedField,
            BadValue { .. } => Reason::BadValueSerialization,
            InvalidNumber { .. } => Reason::InvalidNumber,
            Crypto(_) => Reason::CryptoFailure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_examples() {
        assert_eq!(DbeError::CommitmentMismatch.verdict(), Verdict::IntegrityFailed);
        assert_eq!(DbeError::CommitmentMismatch.reason().as_str(), "commitment_mismatch");
        assert_eq!(
            DbeError::NotEncrypted { policy_encrypts: true }.verdict(),
            Verdict::Plaintext
        );
        assert_eq!(DbeError::LegacyFormat.verdict(), Verdict::LegacyFormat);
        let e = DbeError::MissingKeyAttribute { attribute: "pk".into() };
        assert_eq!(e.verdict(), Verdict::PolicyViolation);
        assert!(e.to_string().contains("pk"));
    }
}
