//! KMS errors, classified the way ddbguard's verdicts need them.
//!
//! Every failure of a KMS call ends up as a [`KmsError`] whose [`KmsErrorKind`] says what the caller should do:
//! a key that is unavailable in this region is a finding about the key ([`KmsErrorKind::KeyUnavailable`], with the
//! sub-reason kept), a ciphertext KMS refuses to open is an integrity finding, throttling is neither (retry
//! later), and everything else is an operational error.

use std::fmt;

/// The KMS operation a call made (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `Decrypt`
    Decrypt,
    /// `GenerateDataKey`
    GenerateDataKey,
    /// `GenerateDataKeyWithoutPlaintext`
    GenerateDataKeyWithoutPlaintext,
    /// `DescribeKey`
    DescribeKey,
    /// `ReEncrypt` (branch key creation and rotation)
    ReEncrypt,
}

impl Operation {
    /// The metric label: `decrypt`, `generate_data_key`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Decrypt => "decrypt",
            Operation::GenerateDataKey => "generate_data_key",
            Operation::GenerateDataKeyWithoutPlaintext => "generate_data_key_without_plaintext",
            Operation::DescribeKey => "describe_key",
            Operation::ReEncrypt => "re_encrypt",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why KMS in this region cannot use the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnavailableReason {
    /// `NotFoundException`: the key (replica) does not exist in this region.
    NotFound,
    /// `DisabledException`.
    Disabled,
    /// `KMSInvalidStateException` for a key pending deletion (or a replica pending deletion).
    PendingDeletion,
    /// `KMSInvalidStateException` for another state (pending import, unavailable, creating, …).
    InvalidState,
    /// `AccessDeniedException`: the key policy or IAM denies the caller.
    AccessDenied,
}

impl UnavailableReason {
    /// The label used in verdicts and metrics: `not_found`, `disabled`, `pending_deletion`, … It is the record's
    /// reason code ([`ddbguard_dbe::Reason`]) and spelled only there.
    pub fn as_str(self) -> &'static str {
        ddbguard_dbe::KeyUnavailableReason::from(self).as_str()
    }
}

impl From<UnavailableReason> for ddbguard_dbe::KeyUnavailableReason {
    fn from(r: UnavailableReason) -> Self {
        match r {
            UnavailableReason::NotFound => Self::NotFound,
            UnavailableReason::Disabled => Self::Disabled,
            UnavailableReason::PendingDeletion => Self::PendingDeletion,
            UnavailableReason::InvalidState => Self::InvalidState,
            UnavailableReason::AccessDenied => Self::AccessDenied,
        }
    }
}

impl serde::Serialize for UnavailableReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for UnavailableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of failure a KMS call had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "reason")]
pub enum KmsErrorKind {
    /// The key cannot be used in this region (a finding about the key, not retried).
    KeyUnavailable(UnavailableReason),
    /// `InvalidCiphertextException` / `IncorrectKeyException`: the ciphertext or its encryption context was
    /// altered, or it belongs to another key.
    IntegrityFailed,
    /// `ThrottlingException`, `LimitExceededException`, HTTP 429/503: retried inside the budget, then reported.
    Throttled,
    /// A transient service or network failure (internal error, timeout, dispatch failure); retried like throttles.
    Transient,
    /// The response broke the contract (wrong KeyId, wrong plaintext length, missing fields).
    BadResponse,
    /// Anything else: invalid request, unsupported key usage, local configuration.
    Other,
}

impl KmsErrorKind {
    /// The outcome label used in `ddbguard_kms_requests_total{outcome}`.
    pub fn outcome(self) -> &'static str {
        match self {
            KmsErrorKind::KeyUnavailable(_) => "key_unavailable",
            KmsErrorKind::IntegrityFailed => "integrity_failed",
            KmsErrorKind::Throttled => "throttled",
            KmsErrorKind::Transient => "transient",
            KmsErrorKind::BadResponse => "bad_response",
            KmsErrorKind::Other => "error",
        }
    }

    /// Whether the governor retries this kind of failure.
    pub fn is_retryable(self) -> bool {
        matches!(self, KmsErrorKind::Throttled | KmsErrorKind::Transient)
    }
}

/// A failed KMS call: which operation, in which region, on which key, and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("KMS {operation} in {region} on {key_id}: {} ({code}): {message}", kind_label(.kind))]
pub struct KmsError {
    /// The operation.
    pub operation: Operation,
    /// The region the call went to.
    pub region: String,
    /// The KeyId sent (an ARN for the keyrings).
    pub key_id: String,
    /// The classification.
    pub kind: KmsErrorKind,
    /// The service error code (`NotFoundException`, …) or a short local description (`dispatch`, `timeout`).
    pub code: String,
    /// The service's or SDK's message.
    pub message: String,
}

fn kind_label(kind: &KmsErrorKind) -> String {
    match kind {
        KmsErrorKind::KeyUnavailable(r) => format!("key_unavailable/{r}"),
        other => other.outcome().to_owned(),
    }
}

impl KmsError {
    /// Builds an error from a service error code, an optional HTTP status and a message.
    pub fn from_code(
        operation: Operation,
        region: &str,
        key_id: &str,
        code: Option<&str>,
        status: Option<u16>,
        message: Option<&str>,
    ) -> KmsError {
        let message = message.unwrap_or("").to_owned();
        let kind = classify(code, status, &message);
        KmsError {
            operation,
            region: region.to_owned(),
            key_id: key_id.to_owned(),
            kind,
            code: code.map(str::to_owned).unwrap_or_else(|| match status {
                Some(s) => format!("HTTP {s}"),
                None => "unknown".to_owned(),
            }),
            message,
        }
    }

    /// A local error of the given kind (bad response, invalid input).
    pub fn local(operation: Operation, region: &str, key_id: &str, kind: KmsErrorKind, message: String) -> KmsError {
        KmsError {
            operation,
            region: region.to_owned(),
            key_id: key_id.to_owned(),
            kind,
            code: kind.outcome().to_owned(),
            message,
        }
    }
}

/// Classifies a KMS failure from its error code, HTTP status and message.
pub fn classify(code: Option<&str>, status: Option<u16>, message: &str) -> KmsErrorKind {
    use KmsErrorKind::*;
    use UnavailableReason::*;
    match code {
        Some("NotFoundException") => KeyUnavailable(NotFound),
        Some("DisabledException") => KeyUnavailable(Disabled),
        Some("KMSInvalidStateException" | "KMSInvalidStateFault") => {
            let m = message.to_ascii_lowercase();
            if m.contains("pending deletion") || m.contains("pendingdeletion") || m.contains("pendingreplicadeletion") {
                KeyUnavailable(PendingDeletion)
            } else {
                KeyUnavailable(InvalidState)
            }
        }
        Some("AccessDeniedException" | "AccessDenied") => KeyUnavailable(AccessDenied),
        Some("InvalidCiphertextException" | "IncorrectKeyException") => IntegrityFailed,
        Some(
            "ThrottlingException"
            | "Throttling"
            | "ThrottledException"
            | "LimitExceededException"
            | "RequestLimitExceeded"
            | "TooManyRequestsException",
        ) => Throttled,
        Some("KMSInternalException" | "DependencyTimeoutException" | "KeyUnavailableException" | "InternalFailure") => {
            Transient
        }
        Some("ServiceUnavailable" | "ServiceUnavailableException") => Throttled,
        _ => match status {
            Some(429 | 503) => Throttled,
            Some(s) if s >= 500 => Transient,
            _ => Other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KmsErrorKind::*;
    use UnavailableReason::*;

    #[test]
    fn classification() {
        let c = |code: &str, msg: &str| classify(Some(code), Some(400), msg);
        assert_eq!(c("NotFoundException", ""), KeyUnavailable(NotFound));
        assert_eq!(c("DisabledException", "x is disabled."), KeyUnavailable(Disabled));
        assert_eq!(
            c("KMSInvalidStateException", "arn:aws:kms:… is pending deletion."),
            KeyUnavailable(PendingDeletion)
        );
        assert_eq!(
            c("KMSInvalidStateException", "arn:aws:kms:… is pending import."),
            KeyUnavailable(InvalidState)
        );
        assert_eq!(c("AccessDeniedException", ""), KeyUnavailable(AccessDenied));
        assert_eq!(c("InvalidCiphertextException", ""), IntegrityFailed);
        assert_eq!(c("IncorrectKeyException", ""), IntegrityFailed);
        assert_eq!(c("ThrottlingException", "Rate exceeded"), Throttled);
        assert_eq!(c("LimitExceededException", ""), Throttled);
        assert_eq!(c("KMSInternalException", ""), Transient);
        assert_eq!(c("ValidationException", ""), Other);
        assert_eq!(classify(None, Some(429), ""), Throttled);
        assert_eq!(classify(None, Some(503), ""), Throttled);
        assert_eq!(classify(None, Some(500), ""), Transient);
        assert_eq!(classify(None, None, ""), Other);
    }

    #[test]
    fn display_names_everything() {
        let e = KmsError::from_code(
            Operation::Decrypt,
            "ap-southeast-2",
            "arn:aws:kms:ap-southeast-2:1:key/mrk-1",
            Some("DisabledException"),
            Some(400),
            Some("key is disabled"),
        );
        let s = e.to_string();
        assert!(s.contains("decrypt") && s.contains("ap-southeast-2") && s.contains("key_unavailable/disabled"));
        assert!(s.contains("DisabledException"), "{s}");
    }
}
