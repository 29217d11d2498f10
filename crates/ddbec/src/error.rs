//! The crate's one error type, each variant naming its [`Verdict`] and [`Reason`].
//!
//! Messages name attributes, fields and algorithms, never attribute values or key material.

use ddbguard_dbe::{KeyringError, Reason, Verdict};

/// Why a legacy item could not be checked, verified or decrypted, or a key not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DdbecError {
    /// The item has no `*amzn-ddb-map-desc*`.
    #[error("material description attribute missing")]
    MissingMaterialDescription,
    /// The item has no `*amzn-ddb-map-sig*`.
    #[error("signature attribute missing")]
    MissingSignature,
    /// A reserved attribute is not of type B.
    #[error("{attribute} is not of type B")]
    WrongType {
        /// Which reserved attribute.
        attribute: &'static str,
    },
    /// The material description's version is not 0.
    #[error("material description version {version:#010x} is not supported")]
    UnsupportedVersion {
        /// The version read.
        version: u32,
    },
    /// The material description does not follow the layout, or names or values what the clients never write.
    #[error("malformed material description: {what}")]
    MalformedDescription {
        /// What is wrong.
        what: &'static str,
    },
    /// The material description names an algorithm the key in hand is not for.
    #[error("material description {field} does not fit the configured key: {what}")]
    AlgorithmMismatch {
        /// The material description entry.
        field: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// The wrapped content key did not unwrap (wrong key, or tampered).
    #[error("wrapped content key did not unwrap: {what}")]
    UnwrapFailed {
        /// What failed.
        what: &'static str,
    },
    /// The item signature does not verify.
    #[error("item signature does not verify")]
    SignatureInvalid,
    /// An attribute to decrypt is not of type B or too short to hold an IV and one block.
    #[error("encrypted attribute {attribute} is malformed: {what}")]
    MalformedEncryptedField {
        /// The attribute name.
        attribute: String,
        /// What is wrong.
        what: &'static str,
    },
    /// An attribute did not decrypt (bad padding: wrong key or tampered).
    #[error("attribute {attribute} did not decrypt")]
    FieldDecryptFailed {
        /// The attribute name.
        attribute: String,
    },
    /// A value could not be serialized or a decrypted value deserialized.
    #[error("attribute {attribute}: bad value serialization: {what}")]
    BadSerialization {
        /// The attribute name (empty where not known).
        attribute: String,
        /// What is wrong.
        what: &'static str,
    },
    /// A number that is not a DynamoDB number.
    #[error("attribute {attribute}: invalid number")]
    InvalidNumber {
        /// The attribute name.
        attribute: String,
    },
    /// The materials provider could not supply keys (no matching key, KMS refused or throttled, …).
    #[error(transparent)]
    Provider(#[from] KeyringError),
    /// Key material given to a provider is not usable (configuration, not item, problem).
    #[error("invalid key: {what}")]
    InvalidKey {
        /// What is wrong (never the key).
        what: &'static str,
    },
    /// A cryptographic primitive failed unexpectedly.
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
    /// The metastore version an item names could not be loaded: not found, not readable, or its record does not
    /// verify. The verdict and reason are the underlying failure's; the message names the metastore.
    #[error("metastore table {table}, version {meta_id}: {source}")]
    Metastore {
        /// The metastore table.
        table: String,
        /// `name#version`.
        meta_id: String,
        /// Why the version could not be loaded.
        source: Box<DdbecError>,
    },
}

impl DdbecError {
    /// The verdict for an item that failed this way.
    pub fn verdict(&self) -> Verdict {
        match self {
            DdbecError::Provider(e) => e.verdict(),
            DdbecError::Metastore { source, .. } => source.verdict(),
            DdbecError::InvalidKey { .. } => Verdict::KeyUnavailable,
            _ => Verdict::IntegrityFailed,
        }
    }

    /// The reason code, in the DB-ESDK format's vocabulary: the material description plays the header's part and
    /// the signature attribute the footer's.
    pub fn reason(&self) -> Reason {
        match self {
            DdbecError::MissingMaterialDescription => Reason::HeaderMissing,
            DdbecError::MissingSignature => Reason::FooterMissing,
            DdbecError::WrongType { attribute } if *attribute == crate::SIGNATURE => Reason::FooterWrongType,
            DdbecError::WrongType { .. } => Reason::HeaderWrongType,
            DdbecError::UnsupportedVersion { .. } => Reason::UnsupportedVersion,
            DdbecError::MalformedDescription { .. } | DdbecError::AlgorithmMismatch { .. } => Reason::MalformedHeader,
            DdbecError::UnwrapFailed { .. } => Reason::WrappedKeyIntegrityFailed,
            DdbecError::SignatureInvalid => Reason::SignatureInvalid,
            DdbecError::MalformedEncryptedField { .. } => Reason::MalformedEncryptedField,
            DdbecError::FieldDecryptFailed { .. } => Reason::FieldAuthenticationFailed,
            DdbecError::BadSerialization { .. } => Reason::BadValueSerialization,
            DdbecError::InvalidNumber { .. } => Reason::InvalidNumber,
            DdbecError::Provider(e) => e.reason(),
            DdbecError::InvalidKey { .. } => Reason::KeyringError,
            DdbecError::Crypto(_) => Reason::CryptoFailure,
            DdbecError::Metastore { source, .. } => source.reason(),
        }
    }
}

#[cfg(test)]
mod tests {
    use ddbguard_dbe::KeyUnavailableReason;

    use super::*;

    #[test]
    fn item_faults_are_integrity_failures_and_key_faults_keep_the_keyring_verdict() {
        assert_eq!(DdbecError::SignatureInvalid.verdict(), Verdict::IntegrityFailed);
        assert_eq!(DdbecError::SignatureInvalid.reason(), Reason::SignatureInvalid);
        assert_eq!(
            DdbecError::WrongType {
                attribute: crate::SIGNATURE
            }
            .reason(),
            Reason::FooterWrongType
        );
        assert_eq!(
            DdbecError::WrongType {
                attribute: crate::MATERIAL_DESCRIPTION
            }
            .reason(),
            Reason::HeaderWrongType
        );
        let disabled = DdbecError::from(KeyringError::KeyUnavailable {
            reason: KeyUnavailableReason::Disabled,
            key: "k".into(),
            message: "m".into(),
        });
        assert_eq!(disabled.verdict(), Verdict::KeyUnavailable);
        assert_eq!(disabled.reason(), Reason::Disabled);
        let not_mrk = DdbecError::from(KeyringError::KeyNotMrk {
            key: "k".into(),
            message: "m".into(),
        });
        assert_eq!(not_mrk.verdict(), Verdict::KeyNotMrk);
    }
}
