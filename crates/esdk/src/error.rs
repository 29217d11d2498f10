//! Typed failures and the verdicts they map to.
//!
//! Every way a message can fail is one [`EsdkError`] variant with a [`Verdict`] and a [`Reason`] from the same
//! contract as the DynamoDB item format (`ddbguard_dbe::verdict`), so both systems report alike. Messages name
//! fields, lengths, offsets and frame numbers; never plaintext, data keys or encryption context values.

use std::fmt;

use ddbguard_dbe::{KeyringError, Reason, Verdict};

use crate::suite::AlgorithmSuite;

/// The part of a message an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The header (body and authentication).
    Header,
    /// The body: frames or the non-framed content.
    Body,
    /// The footer (signature).
    Footer,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Header => "header",
            Part::Body => "body",
            Part::Footer => "footer",
        })
    }
}

/// Everything that can go wrong decrypting, inspecting or encrypting one message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EsdkError {
    // ---- structure ----
    /// The message ends before the part is complete.
    #[error("message truncated in the {part}: {what}")]
    Truncated {
        /// Where.
        part: Part,
        /// The field that is cut off.
        what: &'static str,
    },
    /// A field does not follow the layout.
    #[error("malformed {part}: {what}")]
    Malformed {
        /// Where.
        part: Part,
        /// What is wrong.
        what: String,
    },
    /// A message format version other than 1 or 2 (first byte).
    #[error("unsupported message format version 0x{0:02x}")]
    UnsupportedVersion(u8),
    /// An algorithm suite id the format does not define (or that does not fit the message version).
    #[error("unsupported algorithm suite 0x{0:04x}")]
    UnsupportedSuite(u16),

    // ---- policy ----
    /// A non-committing suite where the policy requires key commitment.
    #[error("message uses {0}, which does not commit to its data key; the policy requires commitment")]
    NotCommitting(AlgorithmSuite),
    /// Another suite than the one the policy requires.
    #[error("message uses {found}, the policy requires {expected}")]
    WrongSuite {
        /// Required.
        expected: AlgorithmSuite,
        /// Found.
        found: AlgorithmSuite,
    },
    /// A length beyond a configured or format limit.
    #[error("{what} is {len}, more than the limit of {max}")]
    TooLarge {
        /// What.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The caller's input to encrypt is not allowed (reserved encryption context key, suite not written, …).
    #[error("invalid encryption request: {0}")]
    InvalidRequest(String),

    // ---- keys ----
    /// The keyring could not produce the data key.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The keyring answered with an EDK index outside the header's list.
    #[error("keyring returned EDK index {index} of {count}")]
    KeyringBadIndex {
        /// Returned index.
        index: usize,
        /// EDKs in the header.
        count: usize,
    },
    /// The keyring returned a data key of another length than the suite's.
    #[error("keyring returned a {len}-byte data key, {suite} needs {expected}")]
    DataKeyLength {
        /// The suite.
        suite: AlgorithmSuite,
        /// Returned length.
        len: usize,
        /// Expected length.
        expected: usize,
    },

    // ---- authentication ----
    /// The header's commitment does not match the data key.
    #[error("key commitment does not match the data key")]
    CommitmentMismatch,
    /// The header authentication tag does not verify.
    #[error("header authentication tag does not verify")]
    HeaderAuthenticationFailed,
    /// A frame (or the non-framed body) does not authenticate.
    #[error("content of frame {sequence} does not authenticate")]
    ContentAuthenticationFailed {
        /// Sequence number (1 for non-framed bodies).
        sequence: u32,
    },
    /// The stored encryption context lacks a required pair or has another value for it.
    #[error("encryption context key {key:?} {problem}")]
    ContextMismatch {
        /// The key (keys are not secret; values are not printed).
        key: String,
        /// `is missing` / `has another value`.
        problem: &'static str,
    },
    /// The `aws-crypto-public-key` entry is missing, malformed, or present for a non-signing suite.
    #[error("verification key: {0}")]
    PublicKeyInvalid(&'static str),
    /// The footer's signature does not verify.
    #[error("message signature does not verify")]
    SignatureInvalid,
    /// A cryptographic primitive failed unexpectedly.
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
}

impl EsdkError {
    /// The verdict for a message that failed this way.
    pub fn verdict(&self) -> Verdict {
        match self {
            EsdkError::Keyring(k) => k.verdict(),
            EsdkError::NotCommitting(_)
            | EsdkError::WrongSuite { .. }
            | EsdkError::TooLarge { .. }
            | EsdkError::InvalidRequest(_) => Verdict::PolicyViolation,
            _ => Verdict::IntegrityFailed,
        }
    }

    /// The reason code.
    pub fn reason(&self) -> Reason {
        match self {
            EsdkError::Truncated { .. } => Reason::Truncated,
            EsdkError::Malformed { part: Part::Header, .. } => Reason::MalformedHeader,
            EsdkError::Malformed { .. } => Reason::MalformedBody,
            EsdkError::UnsupportedVersion(_) => Reason::UnsupportedVersion,
            EsdkError::UnsupportedSuite(_) => Reason::MalformedHeader,
            EsdkError::NotCommitting(_) => Reason::NotCommitting,
            EsdkError::WrongSuite { .. } => Reason::WrongSuite,
            EsdkError::TooLarge { .. } => Reason::TooLarge,
            EsdkError::InvalidRequest(_) => Reason::InvalidConfig,
            EsdkError::Keyring(k) => k.reason(),
            EsdkError::KeyringBadIndex { .. } => Reason::KeyringBadIndex,
            EsdkError::DataKeyLength { .. } => Reason::CryptoFailure,
            EsdkError::CommitmentMismatch => Reason::CommitmentMismatch,
            EsdkError::HeaderAuthenticationFailed => Reason::HeaderAuthenticationFailed,
            EsdkError::ContentAuthenticationFailed { .. } => Reason::ContentAuthenticationFailed,
            EsdkError::ContextMismatch { .. } => Reason::ContextMismatch,
            EsdkError::PublicKeyInvalid(_) => Reason::PublicKeyInvalid,
            EsdkError::SignatureInvalid => Reason::SignatureInvalid,
            EsdkError::Crypto(_) => Reason::CryptoFailure,
        }
    }

    pub(crate) fn malformed(part: Part, what: impl Into<String>) -> EsdkError {
        EsdkError::Malformed {
            part,
            what: what.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_shared_contract() {
        let e = EsdkError::NotCommitting(AlgorithmSuite::Aes256GcmHkdfSha384EcdsaP384);
        assert_eq!(
            (e.verdict(), e.reason().as_str()),
            (Verdict::PolicyViolation, "not_committing")
        );
        let e = EsdkError::Truncated {
            part: Part::Body,
            what: "frame",
        };
        assert_eq!(
            (e.verdict(), e.reason().as_str()),
            (Verdict::IntegrityFailed, "truncated")
        );
        let e = EsdkError::malformed(Part::Footer, "trailing bytes");
        assert_eq!(e.reason(), Reason::MalformedBody);
        let e = EsdkError::Keyring(KeyringError::KeyUnavailable {
            reason: ddbguard_dbe::KeyUnavailableReason::Disabled,
            key: "k".into(),
            message: "m".into(),
        });
        assert_eq!(
            (e.verdict(), e.reason().as_str()),
            (Verdict::KeyUnavailable, "disabled")
        );
        assert_eq!(EsdkError::CommitmentMismatch.verdict(), Verdict::IntegrityFailed);
    }
}
