//! The verdict contract (architecture §4): one [`Verdict`] and one [`Reason`] per judged item or record.
//!
//! Both are closed sets with exactly one spelling each, defined here once: [`Verdict::as_str`] /
//! [`Reason::as_str`] are the metric label values, the `verdict` / `reason` fields of logs and JSON outputs, and
//! their `Display` and serde forms. Nothing downstream spells a verdict or reason itself, and nothing parses a label
//! back to decide anything. They live in the item-format crate so that its typed errors can name their verdict and
//! reason; the stream-record reasons (`no_new_image`, `unknown_event_name`, …) are part of the same contract.

use std::fmt;
use std::str::FromStr;

use crate::keyring::KeyUnavailableReason;

/// Defines a fieldless enum whose variants each have one snake_case label, with `ALL`, `as_str`, `Display`,
/// `FromStr` and serde in terms of that label.
macro_rules! labelled {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[doc = $doc:literal])* $variant:ident => $label:literal, )* }
    ) => {
        $(#[$meta])*
        pub enum $name { $( $(#[doc = $doc])* $variant, )* }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )* ];

            /// The one spelling: metric label value, log field, JSON output.
            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $label, )* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownLabel;
            fn from_str(s: &str) -> Result<Self, UnknownLabel> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownLabel { kind: stringify!($name), label: s.to_owned() })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A string that is not the label of any verdict or reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {label:?}")]
pub struct UnknownLabel {
    /// `Verdict` or `Reason`.
    pub kind: &'static str,
    /// The string given.
    pub label: String,
}

labelled! {
    /// The outcome of judging one item or stream record: exactly one per record.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum Verdict {
        /// Decrypted and authentic: commitment, recipient tag, signature and every field verified.
        Ok => "ok",
        /// Not fully decrypted (not sampled); header, key and shape checked without the data key.
        OkStructural => "ok_structural",
        /// An attribute the policy says must be encrypted is stored in plaintext.
        Plaintext => "plaintext",
        /// Written by the legacy DynamoDB Encryption Client (`*amzn-ddb-map-desc*`).
        LegacyFormat => "legacy_format",
        /// Encrypted under a key that does not MRK-match the configured key (or no EDK for this keyring).
        KeyNotMrk => "key_not_mrk",
        /// The key service refused the local key (missing, disabled, pending deletion, access denied).
        KeyUnavailable => "key_unavailable",
        /// Commitment, recipient tag, signature or field authentication failed, or the format is malformed.
        IntegrityFailed => "integrity_failed",
        /// The item's shape differs from the policy (actions, suite, key attributes, reserved names).
        PolicyViolation => "policy_violation",
        /// The key service throttled beyond the retry budget; retried later.
        KmsThrottled => "kms_throttled",
        /// A REMOVE event: nothing to decrypt.
        Remove => "remove",
    }
}

impl Verdict {
    /// Whether the verdict passes: `ok`, `ok_structural` and `remove`. Everything else is a finding (alert, exit
    /// code 1, failure count).
    pub fn is_pass(self) -> bool {
        matches!(self, Verdict::Ok | Verdict::OkStructural | Verdict::Remove)
    }
}

labelled! {
    /// Why an item got its verdict: a stable code for metrics-adjacent logs, outputs and alerts.
    ///
    /// Grouped by the verdict they usually come with; some (e.g. `not_encrypted`, `action_mismatch`) depend on the
    /// policy for their verdict.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    #[non_exhaustive]
    pub enum Reason {
        // ---- passing ----
        /// `ok`: decrypted and every check passed.
        Verified => "verified",
        /// `ok_structural`: not sampled for a full decrypt.
        NotSampled => "not_sampled",
        /// `remove`: a REMOVE stream event.
        Remove => "remove",

        // ---- stream records that carry no judgeable item ----
        /// An event name other than INSERT, MODIFY, REMOVE.
        UnknownEventName => "unknown_event_name",
        /// INSERT/MODIFY without a NEW image (the stream view type lacks new images).
        NoNewImage => "no_new_image",
        /// A stream image attribute of a type this build does not know.
        UnknownAttributeType => "unknown_attribute_type",
        /// A stream image attribute `NULL: false`.
        NullFalse => "null_false",
        /// A stream image nested deeper than the item format allows.
        ImageTooDeep => "image_too_deep",

        // ---- not (DB-ESDK) encrypted ----
        /// No `aws_dbe_head` / `aws_dbe_foot`.
        NotEncrypted => "not_encrypted",
        /// Written by the legacy DynamoDB Encryption Client.
        LegacyFormat => "legacy_format",
        /// An attribute the policy requires encrypted is signed-only or unsigned.
        AttributeNotEncrypted => "attribute_not_encrypted",

        // ---- structure ----
        /// `aws_dbe_head` missing while `aws_dbe_foot` is present.
        HeaderMissing => "header_missing",
        /// `aws_dbe_foot` missing while `aws_dbe_head` is present.
        FooterMissing => "footer_missing",
        /// `aws_dbe_head` is not of type B.
        HeaderWrongType => "header_wrong_type",
        /// `aws_dbe_foot` is not of type B.
        FooterWrongType => "footer_wrong_type",
        /// The header bytes do not follow the layout.
        MalformedHeader => "malformed_header",
        /// Record version other than 1 or 2.
        UnsupportedVersion => "unsupported_version",
        /// Format flavor other than 0 or 1.
        UnsupportedFlavor => "unsupported_flavor",
        /// Footer length does not fit the header.
        FooterLength => "footer_length",
        /// An AWS Encryption SDK message body or footer does not follow the layout (frame order, lengths,
        /// trailing bytes).
        MalformedBody => "malformed_body",
        /// An AWS Encryption SDK message ends before its header, body or footer is complete.
        Truncated => "truncated",

        // ---- shape vs policy ----
        /// The header's legend does not line up with the item's signed attributes.
        LegendMismatch => "legend_mismatch",
        /// A signed attribute the policy has no action for (or one that must be signed and is not).
        UnexpectedSignedAttribute => "unexpected_signed_attribute",
        /// An attribute written with another action than the policy's.
        ActionMismatch => "action_mismatch",
        /// Written with another algorithm suite than `require_suite`.
        WrongSuite => "wrong_suite",
        /// An AWS Encryption SDK message under a suite without key commitment where the policy requires it.
        NotCommitting => "not_committing",
        /// The partition or sort key attribute is missing.
        MissingKeyAttribute => "missing_key_attribute",
        /// A SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT attribute is missing (encrypt).
        MissingContextAttribute => "missing_context_attribute",
        /// An attribute uses the reserved `aws_dbe_` prefix (encrypt).
        ReservedAttributeName => "reserved_attribute_name",
        /// An attribute has no action and is not allowed unsigned (encrypt).
        MissingAttributeAction => "missing_attribute_action",
        /// The table configuration is invalid.
        InvalidConfig => "invalid_config",
        /// An encryption-context entry or header field does not fit its length field (encrypt).
        TooLarge => "too_large",

        // ---- keys ----
        /// With a configured KMS key: an `aws-kms` EDK names a key that does not MRK-match it.
        EdkKeyNotMrk => "edk_key_not_mrk",
        /// With a configured KMS key: an `aws-kms` EDK's provider info is not a key ARN.
        EdkArnInvalid => "edk_arn_invalid",
        /// With a configured KMS key: the record has no `aws-kms` EDK.
        NoKmsEdk => "no_kms_edk",
        /// No EDK is for this keyring.
        NoMatchingKey => "no_matching_key",
        /// The EDK names a single-region key (or alias) where an MRK is required.
        KeyNotMrk => "key_not_mrk",
        /// `key_unavailable`: the key (replica) does not exist in this region (`NotFoundException`).
        NotFound => "not_found",
        /// `key_unavailable`: the key is disabled (`DisabledException`).
        Disabled => "disabled",
        /// `key_unavailable`: the key is scheduled for deletion.
        PendingDeletion => "pending_deletion",
        /// `key_unavailable`: the key is in another state that forbids use.
        InvalidState => "invalid_state",
        /// `key_unavailable`: the key policy or IAM denies the caller.
        AccessDenied => "access_denied",
        /// Any other keyring failure (network, configuration, unexpected response).
        KeyringError => "keyring_error",
        /// The key service throttled beyond the retry budget.
        KmsThrottled => "kms_throttled",
        /// The keyring answered with an EDK index outside the header's list.
        KeyringBadIndex => "keyring_bad_index",

        // ---- authentication ----
        /// The provider-wrapped key did not authenticate.
        WrappedKeyIntegrityFailed => "wrapped_key_integrity_failed",
        /// The wrapped data key did not authenticate under the intermediate key.
        DataKeyUnwrapFailed => "data_key_unwrap_failed",
        /// The stored encryption context contradicts the item.
        ContextMismatch => "context_mismatch",
        /// Header commitment does not match the data key.
        CommitmentMismatch => "commitment_mismatch",
        /// No recipient tag in the footer matches.
        RecipientTagMismatch => "recipient_tag_mismatch",
        /// The ECDSA P-384 signature does not verify.
        SignatureInvalid => "signature_invalid",
        /// The `aws-crypto-public-key` of an 0x6701 record is missing or invalid.
        PublicKeyInvalid => "public_key_invalid",
        /// AES-GCM authentication of an encrypted attribute failed.
        FieldAuthenticationFailed => "field_authentication_failed",
        /// The header authentication tag of an AWS Encryption SDK message does not verify.
        HeaderAuthenticationFailed => "header_authentication_failed",
        /// AES-GCM authentication of an AWS Encryption SDK frame (or non-framed body) failed.
        ContentAuthenticationFailed => "content_authentication_failed",
        /// An ENCRYPT_AND_SIGN attribute is not of type B or too short.
        MalformedEncryptedField => "malformed_encrypted_field",
        /// A value could not be (de)serialized.
        BadValueSerialization => "bad_value_serialization",
        /// A number is not a valid DynamoDB number.
        InvalidNumber => "invalid_number",
        /// A cryptographic primitive failed unexpectedly.
        CryptoFailure => "crypto_failure",
    }
}

impl From<KeyUnavailableReason> for Reason {
    fn from(r: KeyUnavailableReason) -> Reason {
        match r {
            KeyUnavailableReason::NotFound => Reason::NotFound,
            KeyUnavailableReason::Disabled => Reason::Disabled,
            KeyUnavailableReason::PendingDeletion => Reason::PendingDeletion,
            KeyUnavailableReason::InvalidState => Reason::InvalidState,
            KeyUnavailableReason::AccessDenied => Reason::AccessDenied,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn labels_round_trip_through_str_display_and_serde() {
        for &v in Verdict::ALL {
            assert_eq!(v.as_str().parse::<Verdict>(), Ok(v));
            assert_eq!(v.to_string(), v.as_str());
            let json = serde_json::to_value(v).unwrap();
            assert_eq!(json, serde_json::Value::String(v.as_str().into()));
            assert_eq!(serde_json::from_value::<Verdict>(json).unwrap(), v);
        }
        for &r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(r));
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::Value::String(r.as_str().into())
            );
        }
        let e = "invalid_input".parse::<Verdict>().unwrap_err();
        assert_eq!(e.to_string(), "unknown Verdict \"invalid_input\"");
        assert!(serde_json::from_str::<Reason>("\"key_disabled\"").is_err());
    }

    #[test]
    fn every_label_is_unique_snake_case() {
        let mut seen = BTreeSet::new();
        for label in Reason::ALL.iter().map(|r| r.as_str()) {
            assert!(seen.insert(label), "reason {label} spelled twice");
            assert!(label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{label}");
        }
        assert_eq!(Verdict::ALL.len(), 10);
    }

    #[test]
    fn only_ok_ok_structural_and_remove_pass() {
        let passing: Vec<Verdict> = Verdict::ALL.iter().copied().filter(|v| v.is_pass()).collect();
        assert_eq!(passing, [Verdict::Ok, Verdict::OkStructural, Verdict::Remove]);
    }

    #[test]
    fn key_unavailable_reasons_have_one_spelling() {
        assert_eq!(Reason::from(KeyUnavailableReason::Disabled).as_str(), "disabled");
        assert_eq!(KeyUnavailableReason::Disabled.as_str(), "disabled");
        assert_eq!(KeyUnavailableReason::NotFound.as_str(), "not_found");
    }
}
