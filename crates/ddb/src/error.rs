//! [`DdbError`] and the one classification of DynamoDB failures.

use std::fmt;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// What a DynamoDB failure means to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A condition did not hold (`ConditionalCheckFailedException`, or a transaction cancelled because one of
    /// its conditions did not hold).
    Conflict,
    /// The request was refused for capacity or rate (`ProvisionedThroughputExceededException`,
    /// `ThrottlingException`, `RequestLimitExceeded`, `LimitExceededException`): retry later, slower.
    Throttled,
    /// The table does not exist, or is not ACTIVE yet (`ResourceNotFoundException`).
    NotFound,
    /// The table is being created, updated or deleted, or already exists (`ResourceInUseException`).
    InUse,
    /// A failure worth retrying as is: a timeout, a network failure, a 5xx answer, an internal server error, a
    /// conflicting transaction.
    Transient,
    /// Anything else (validation, access denied, …): retrying will not help.
    Other,
}

impl ErrorKind {
    /// Whether retrying later may succeed ([`ErrorKind::Throttled`] or [`ErrorKind::Transient`]).
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Throttled | ErrorKind::Transient)
    }

    /// A stable snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Conflict => "conflict",
            ErrorKind::Throttled => "throttled",
            ErrorKind::NotFound => "not_found",
            ErrorKind::InUse => "in_use",
            ErrorKind::Transient => "transient",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed DynamoDB call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("DynamoDB {operation} on table {table} failed ({kind}): {message}")]
pub struct DdbError {
    /// What the failure means.
    pub kind: ErrorKind,
    /// `GetItem`, `TransactWriteItems`, …
    pub operation: &'static str,
    /// The table (for a transaction, the first table it writes).
    pub table: String,
    /// The service's error code and message, or the transport failure. Never contains item values.
    pub message: String,
    /// For a cancelled transaction: one code per operation of the request, in order (`None` for an operation
    /// that was fine, `ConditionalCheckFailed`, `ThrottlingError`, `TransactionConflict`, …). Empty otherwise.
    pub cancellation_reasons: Vec<String>,
}

impl DdbError {
    /// An error of `kind` (for fakes, validation and waiting).
    pub fn new(kind: ErrorKind, operation: &'static str, table: impl Into<String>, message: impl Into<String>) -> Self {
        DdbError {
            kind,
            operation,
            table: table.into(),
            message: message.into(),
            cancellation_reasons: Vec::new(),
        }
    }
}

/// The kind an error code (or a transaction cancellation reason code) stands for.
pub fn kind_of_code(code: &str) -> Option<ErrorKind> {
    Some(match code {
        "ConditionalCheckFailedException" | "ConditionalCheckFailed" => ErrorKind::Conflict,
        "ProvisionedThroughputExceededException"
        | "ProvisionedThroughputExceeded"
        | "ThrottlingException"
        | "ThrottlingError"
        | "RequestLimitExceeded"
        | "LimitExceededException" => ErrorKind::Throttled,
        "ResourceNotFoundException" => ErrorKind::NotFound,
        "ResourceInUseException" => ErrorKind::InUse,
        "InternalServerError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "TransactionConflict"
        | "TransactionConflictException"
        | "TransactionInProgressException"
        | "ReplicatedWriteConflictException" => ErrorKind::Transient,
        c if c.contains("Throttl") => ErrorKind::Throttled,
        _ => return None,
    })
}

/// The kind of a cancelled transaction from its per-operation reasons: a failed condition makes it a
/// [`ErrorKind::Conflict`]; reasons that are all throttling or transient make it retryable; anything else is
/// [`ErrorKind::Other`]. Without reasons (some endpoints leave them out) it is taken as a failed condition.
pub fn kind_of_cancellation(reasons: &[String]) -> ErrorKind {
    let failed: Vec<&str> = reasons.iter().map(String::as_str).filter(|c| *c != "None").collect();
    if failed.is_empty() || failed.contains(&"ConditionalCheckFailed") {
        return ErrorKind::Conflict;
    }
    let kinds: Vec<Option<ErrorKind>> = failed.iter().map(|c| kind_of_code(c)).collect();
    if kinds.iter().all(|k| k.is_some_and(ErrorKind::is_retryable)) {
        if kinds.contains(&Some(ErrorKind::Throttled)) {
            ErrorKind::Throttled
        } else {
            ErrorKind::Transient
        }
    } else {
        ErrorKind::Other
    }
}

/// Operation errors whose typed variants classify without looking at the code, and (transactions) carry
/// cancellation reasons.
pub trait TypedError {
    /// The kind of the typed variant, if it has one.
    fn typed_kind(&self) -> Option<ErrorKind>;

    /// The per-operation reason codes of a cancelled transaction.
    fn cancellation_reasons(&self) -> Option<Vec<String>> {
        None
    }
}

macro_rules! typed {
    ($($t:ty => { $($m:ident => $k:expr),* $(,)? }),* $(,)?) => {$(
        impl TypedError for $t {
            fn typed_kind(&self) -> Option<ErrorKind> {
                $(if self.$m() { return Some($k); })*
                None
            }
        }
    )*};
}

use aws_sdk_dynamodb::operation as op;

typed! {
    op::get_item::GetItemError => {
        is_provisioned_throughput_exceeded_exception => ErrorKind::Throttled,
        is_request_limit_exceeded => ErrorKind::Throttled,
        is_throttling_exception => ErrorKind::Throttled,
        is_resource_not_found_exception => ErrorKind::NotFound,
        is_internal_server_error => ErrorKind::Transient,
    },
    op::put_item::PutItemError => {
        is_conditional_check_failed_exception => ErrorKind::Conflict,
        is_provisioned_throughput_exceeded_exception => ErrorKind::Throttled,
        is_request_limit_exceeded => ErrorKind::Throttled,
        is_throttling_exception => ErrorKind::Throttled,
        is_resource_not_found_exception => ErrorKind::NotFound,
        is_internal_server_error => ErrorKind::Transient,
        is_transaction_conflict_exception => ErrorKind::Transient,
        is_replicated_write_conflict_exception => ErrorKind::Transient,
    },
    op::update_item::UpdateItemError => {
        is_conditional_check_failed_exception => ErrorKind::Conflict,
        is_provisioned_throughput_exceeded_exception => ErrorKind::Throttled,
        is_request_limit_exceeded => ErrorKind::Throttled,
        is_throttling_exception => ErrorKind::Throttled,
        is_resource_not_found_exception => ErrorKind::NotFound,
        is_internal_server_error => ErrorKind::Transient,
        is_transaction_conflict_exception => ErrorKind::Transient,
        is_replicated_write_conflict_exception => ErrorKind::Transient,
    },
    op::delete_item::DeleteItemError => {
        is_conditional_check_failed_exception => ErrorKind::Conflict,
        is_provisioned_throughput_exceeded_exception => ErrorKind::Throttled,
        is_request_limit_exceeded => ErrorKind::Throttled,
        is_throttling_exception => ErrorKind::Throttled,
        is_resource_not_found_exception => ErrorKind::NotFound,
        is_internal_server_error => ErrorKind::Transient,
        is_transaction_conflict_exception => ErrorKind::Transient,
        is_replicated_write_conflict_exception => ErrorKind::Transient,
    },
    op::query::QueryError => {
        is_provisioned_throughput_exceeded_exception => ErrorKind::Throttled,
        is_request_limit_exceeded => ErrorKind::Throttled,
        is_throttling_exception => ErrorKind::Throttled,
        is_resource_not_found_exception => ErrorKind::NotFound,
        is_internal_server_error => ErrorKind::Transient,
    },
    op::scan::ScanError => {
        is_provisioned_throughput_exceeded_exception => ErrorKind::Throttled,
        is_request_limit_exceeded => ErrorKind::Throttled,
        is_throttling_exception => ErrorKind::Throttled,
        is_resource_not_found_exception => ErrorKind::NotFound,
        is_internal_server_error => ErrorKind::Transient,
    },
    op::batch_get_item::BatchGetItemError => {
        is_provisioned_throughput_exceeded_exception => ErrorKind::Throttled,
        is_request_limit_exceeded => ErrorKind::Throttled,
        is_throttling_exception => ErrorKind::Throttled,
        is_resource_not_found_exception => ErrorKind::NotFound,
        is_internal_server_error => ErrorKind::Transient,
    },
    op::describe_table::DescribeTableError => {
        is_resource_not_found_exception => ErrorKind::NotFound,
        is_internal_server_error => ErrorKind::Transient,
    },
    op::create_table::CreateTableError => {
        is_resource_in_use_exception => ErrorKind::InUse,
        is_limit_exceeded_exception => ErrorKind::Throttled,
        is_internal_server_error => ErrorKind::Transient,
    },
    op::update_time_to_live::UpdateTimeToLiveError => {
        is_resource_in_use_exception => ErrorKind::InUse,
        is_resource_not_found_exception => ErrorKind::NotFound,
        is_limit_exceeded_exception => ErrorKind::Throttled,
        is_internal_server_error => ErrorKind::Transient,
    },
}

impl TypedError for op::transact_write_items::TransactWriteItemsError {
    fn typed_kind(&self) -> Option<ErrorKind> {
        use op::transact_write_items::TransactWriteItemsError as E;
        match self {
            E::TransactionCanceledException(_) => self.cancellation_reasons().map(|r| kind_of_cancellation(&r)),
            E::ProvisionedThroughputExceededException(_) | E::RequestLimitExceeded(_) | E::ThrottlingException(_) => {
                Some(ErrorKind::Throttled)
            }
            E::ResourceNotFoundException(_) => Some(ErrorKind::NotFound),
            E::InternalServerError(_) | E::TransactionInProgressException(_) => Some(ErrorKind::Transient),
            _ => None,
        }
    }

    fn cancellation_reasons(&self) -> Option<Vec<String>> {
        match self {
            Self::TransactionCanceledException(c) => Some(
                c.cancellation_reasons()
                    .iter()
                    .map(|r| r.code().unwrap_or("None").to_owned())
                    .collect(),
            ),
            _ => None,
        }
    }
}

/// Classifies a failed SDK call: the typed variant first, then the error code, then the transport (timeouts,
/// dispatch failures and 5xx answers are [`ErrorKind::Transient`]).
pub fn classify<E>(operation: &'static str, table: &str, err: SdkError<E, HttpResponse>) -> DdbError
where
    E: ProvideErrorMetadata + TypedError + std::error::Error + Send + Sync + 'static,
{
    let reasons = err
        .as_service_error()
        .and_then(TypedError::cancellation_reasons)
        .unwrap_or_default();
    let status = err.raw_response().map(|r| r.status().as_u16());
    let kind = err
        .as_service_error()
        .and_then(TypedError::typed_kind)
        .or_else(|| err.code().and_then(kind_of_code))
        .unwrap_or_else(|| {
            let transport = matches!(err, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_));
            if transport || status.is_some_and(|s| s >= 500) {
                ErrorKind::Transient
            } else {
                ErrorKind::Other
            }
        });
    let message = if !reasons.is_empty() {
        let failed: Vec<&str> = reasons.iter().map(String::as_str).filter(|c| *c != "None").collect();
        if failed.is_empty() {
            "transaction cancelled".to_owned()
        } else {
            format!("transaction cancelled: {}", failed.join(", "))
        }
    } else {
        match (err.code(), err.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_owned(),
            _ => {
                let mut s = err.to_string();
                let mut source = std::error::Error::source(&err);
                while let Some(src) = source {
                    s.push_str(": ");
                    s.push_str(&src.to_string());
                    source = src.source();
                }
                s
            }
        }
    };
    DdbError {
        kind,
        operation,
        table: table.to_owned(),
        message,
        cancellation_reasons: reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::get_item::GetItemError;
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    use aws_sdk_dynamodb::types::CancellationReason;
    use aws_sdk_dynamodb::types::error::{ConditionalCheckFailedException, TransactionCanceledException};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn response(status: u16) -> HttpResponse {
        HttpResponse::new(status.try_into().unwrap(), SdkBody::empty())
    }

    fn service<E>(e: E, status: u16) -> SdkError<E, HttpResponse> {
        SdkError::service_error(e, response(status))
    }

    fn coded(code: &str, status: u16) -> SdkError<GetItemError, HttpResponse> {
        let meta = ErrorMetadata::builder().code(code).message("m").build();
        service(GetItemError::generic(meta), status)
    }

    #[test]
    fn typed_variants_classify_before_codes() {
        let e = PutItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder().message("no").build(),
        );
        let d = classify("PutItem", "T", service(e, 400));
        assert_eq!(
            (d.kind, d.operation, d.table.as_str()),
            (ErrorKind::Conflict, "PutItem", "T")
        );
        assert!(d.cancellation_reasons.is_empty());
    }

    #[test]
    fn codes_classify_untyped_errors() {
        for (code, kind) in [
            ("ProvisionedThroughputExceededException", ErrorKind::Throttled),
            ("ThrottlingException", ErrorKind::Throttled),
            ("RequestLimitExceeded", ErrorKind::Throttled),
            ("LimitExceededException", ErrorKind::Throttled),
            ("ConditionalCheckFailedException", ErrorKind::Conflict),
            ("ResourceNotFoundException", ErrorKind::NotFound),
            ("ResourceInUseException", ErrorKind::InUse),
            ("TransactionConflictException", ErrorKind::Transient),
            ("ValidationException", ErrorKind::Other),
            ("AccessDeniedException", ErrorKind::Other),
        ] {
            let d = classify("GetItem", "T", coded(code, 400));
            assert_eq!(d.kind, kind, "{code}");
            assert_eq!(d.message, format!("{code}: m"));
        }
        // An unknown code on a 5xx answer is transient.
        assert_eq!(classify("GetItem", "T", coded("Weird", 503)).kind, ErrorKind::Transient);
    }

    #[test]
    fn transport_failures_are_transient() {
        let e: SdkError<GetItemError, HttpResponse> = SdkError::timeout_error("slow");
        let d = classify("GetItem", "T", e);
        assert_eq!(d.kind, ErrorKind::Transient);
        assert!(d.message.contains("slow"), "{}", d.message);
        let e: SdkError<GetItemError, HttpResponse> = SdkError::construction_failure("bad input");
        assert_eq!(classify("GetItem", "T", e).kind, ErrorKind::Other);
    }

    fn cancelled(codes: &[&str]) -> DdbError {
        let reasons = codes
            .iter()
            .map(|c| CancellationReason::builder().code(*c).build())
            .collect();
        let e = TransactWriteItemsError::TransactionCanceledException(
            TransactionCanceledException::builder()
                .set_cancellation_reasons(Some(reasons))
                .build(),
        );
        classify("TransactWriteItems", "T", service(e, 400))
    }

    #[test]
    fn transaction_cancellations_keep_their_reasons() {
        let d = cancelled(&["None", "ConditionalCheckFailed"]);
        assert_eq!(d.kind, ErrorKind::Conflict);
        assert_eq!(
            d.cancellation_reasons,
            vec!["None".to_owned(), "ConditionalCheckFailed".to_owned()]
        );
        assert_eq!(d.message, "transaction cancelled: ConditionalCheckFailed");
        assert_eq!(cancelled(&["ThrottlingError", "None"]).kind, ErrorKind::Throttled);
        assert_eq!(cancelled(&["TransactionConflict"]).kind, ErrorKind::Transient);
        assert_eq!(
            cancelled(&["TransactionConflict", "ProvisionedThroughputExceeded"]).kind,
            ErrorKind::Throttled
        );
        let d = cancelled(&["ValidationError", "None"]);
        assert_eq!(d.kind, ErrorKind::Other);
        assert_eq!(d.message, "transaction cancelled: ValidationError");
        // Without reasons, a cancellation is taken as a failed condition.
        assert_eq!(cancelled(&[]).kind, ErrorKind::Conflict);
    }
}
