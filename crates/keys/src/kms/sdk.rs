//! [`SdkKms`]: [`KmsApi`] over an `aws-sdk-kms` client (the `aws` feature, on by default; the format-only users
//! of this crate, such as the fuzz targets, build without the AWS SDK).

use std::fmt;

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use zeroize::Zeroizing;

use super::api::{DataKey, EncryptionContext, KeyDescription, KmsApi, KmsFuture, ReEncryptRequest, WrappedKey};
use super::error::{KmsError, KmsErrorKind, Operation};

/// [`KmsApi`] over an `aws-sdk-kms` client for one region.
///
/// Every request disables the SDK's own retries (the governor owns retry policy, so a throttle is retried in
/// exactly one place and counted once per attempt).
#[derive(Clone)]
pub struct SdkKms {
    client: aws_sdk_kms::Client,
    region: String,
}

impl fmt::Debug for SdkKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkKms")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl SdkKms {
    /// Wraps a client whose configuration targets `region`.
    pub fn new(client: aws_sdk_kms::Client, region: impl Into<String>) -> SdkKms {
        SdkKms {
            client,
            region: region.into(),
        }
    }

    /// Wraps a client, taking the region from its configuration (empty if none is set).
    pub fn from_client(client: aws_sdk_kms::Client) -> SdkKms {
        let region = client.config().region().map(|r| r.to_string()).unwrap_or_default();
        SdkKms { client, region }
    }

    fn no_retry() -> aws_sdk_kms::config::Builder {
        aws_sdk_kms::config::Builder::default().retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
    }

    fn error<E>(
        &self,
        op: Operation,
        key_id: &str,
        err: SdkError<E, aws_sdk_kms::config::http::HttpResponse>,
    ) -> KmsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        match &err {
            SdkError::TimeoutError(_) => KmsError::local(
                op,
                &self.region,
                key_id,
                KmsErrorKind::Transient,
                format!("timeout: {err}"),
            ),
            SdkError::DispatchFailure(d) => KmsError::local(
                op,
                &self.region,
                key_id,
                KmsErrorKind::Transient,
                format!("dispatch failure: {:?}", d),
            ),
            SdkError::ConstructionFailure(_) => KmsError::local(
                op,
                &self.region,
                key_id,
                KmsErrorKind::Other,
                format!("request construction failed: {err}"),
            ),
            _ => {
                // Modeled errors built without metadata (mocks) carry no code; their Display starts with the
                // shape name (`DisabledException: …`).
                let code = err.code().map(str::to_owned).or_else(|| {
                    err.as_service_error().and_then(|e| {
                        let shown = e.to_string();
                        let name = shown.split(':').next().unwrap_or("").trim();
                        (name.ends_with("Exception") && !name.contains(' ')).then(|| name.to_owned())
                    })
                });
                let message = err.message().map(str::to_owned).unwrap_or_else(|| {
                    let mut s = err.to_string();
                    if let Some(src) = std::error::Error::source(&err) {
                        s.push_str(": ");
                        s.push_str(&src.to_string());
                    }
                    s
                });
                KmsError::from_code(op, &self.region, key_id, code.as_deref(), status, Some(&message))
            }
        }
    }

    fn data_key(
        &self,
        op: Operation,
        requested: &str,
        key_id: Option<&str>,
        plaintext: Option<Blob>,
        ciphertext: Option<Blob>,
    ) -> Result<DataKey, KmsError> {
        let bad = |m: &str| KmsError::local(op, &self.region, requested, KmsErrorKind::BadResponse, m.to_owned());
        let key_id = key_id.ok_or_else(|| bad("response has no KeyId"))?.to_owned();
        let plaintext = Zeroizing::new(plaintext.ok_or_else(|| bad("response has no Plaintext"))?.into_inner());
        Ok(DataKey {
            key_id,
            plaintext,
            ciphertext: ciphertext.map(Blob::into_inner).unwrap_or_default(),
        })
    }
}

impl SdkKms {
    /// The `KeyId` and `CiphertextBlob` of an answer that wraps a key, both required.
    fn wrapped_key(
        &self,
        op: Operation,
        requested: &str,
        key_id: Option<&str>,
        ciphertext: Option<&Blob>,
    ) -> Result<WrappedKey, KmsError> {
        match (key_id, ciphertext) {
            (Some(k), Some(c)) => Ok(WrappedKey {
                key_id: k.to_owned(),
                ciphertext: c.as_ref().to_vec(),
            }),
            _ => Err(KmsError::local(
                op,
                &self.region,
                requested,
                KmsErrorKind::BadResponse,
                "response lacks KeyId or CiphertextBlob".into(),
            )),
        }
    }
}

fn ec_map(ec: &EncryptionContext) -> Option<std::collections::HashMap<String, String>> {
    if ec.is_empty() {
        None
    } else {
        Some(ec.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

impl KmsApi for SdkKms {
    fn region(&self) -> &str {
        &self.region
    }

    fn decrypt<'a>(&'a self, key_id: &'a str, ct: &'a [u8], ec: &'a EncryptionContext) -> KmsFuture<'a, DataKey> {
        Box::pin(async move {
            let op = Operation::Decrypt;
            let mut out = self
                .client
                .decrypt()
                .key_id(key_id)
                .ciphertext_blob(Blob::new(ct))
                .set_encryption_context(ec_map(ec))
                .customize()
                .config_override(Self::no_retry())
                .send()
                .await
                .map_err(|e| self.error(op, key_id, e))?;
            let plaintext = out.plaintext.take();
            self.data_key(op, key_id, out.key_id(), plaintext, None)
        })
    }

    fn generate_data_key<'a>(&'a self, key_id: &'a str, n: i32, ec: &'a EncryptionContext) -> KmsFuture<'a, DataKey> {
        Box::pin(async move {
            let op = Operation::GenerateDataKey;
            let mut out = self
                .client
                .generate_data_key()
                .key_id(key_id)
                .number_of_bytes(n)
                .set_encryption_context(ec_map(ec))
                .customize()
                .config_override(Self::no_retry())
                .send()
                .await
                .map_err(|e| self.error(op, key_id, e))?;
            let plaintext = out.plaintext.take();
            let ciphertext = out.ciphertext_blob.take();
            let dk = self.data_key(op, key_id, out.key_id(), plaintext, ciphertext)?;
            if dk.ciphertext.is_empty() {
                return Err(KmsError::local(
                    op,
                    &self.region,
                    key_id,
                    KmsErrorKind::BadResponse,
                    "response has no CiphertextBlob".into(),
                ));
            }
            Ok(dk)
        })
    }

    fn generate_data_key_without_plaintext<'a>(
        &'a self,
        key_id: &'a str,
        n: i32,
        ec: &'a EncryptionContext,
    ) -> KmsFuture<'a, WrappedKey> {
        Box::pin(async move {
            let op = Operation::GenerateDataKeyWithoutPlaintext;
            let out = self
                .client
                .generate_data_key_without_plaintext()
                .key_id(key_id)
                .number_of_bytes(n)
                .set_encryption_context(ec_map(ec))
                .customize()
                .config_override(Self::no_retry())
                .send()
                .await
                .map_err(|e| self.error(op, key_id, e))?;
            self.wrapped_key(op, key_id, out.key_id(), out.ciphertext_blob())
        })
    }

    fn re_encrypt<'a>(&'a self, r: ReEncryptRequest<'a>) -> KmsFuture<'a, WrappedKey> {
        Box::pin(async move {
            let op = Operation::ReEncrypt;
            let out = self
                .client
                .re_encrypt()
                .source_key_id(r.source_key_id)
                .ciphertext_blob(Blob::new(r.ciphertext))
                .set_source_encryption_context(ec_map(r.source_encryption_context))
                .destination_key_id(r.destination_key_id)
                .set_destination_encryption_context(ec_map(r.destination_encryption_context))
                .customize()
                .config_override(Self::no_retry())
                .send()
                .await
                .map_err(|e| self.error(op, r.source_key_id, e))?;
            self.wrapped_key(op, r.destination_key_id, out.key_id(), out.ciphertext_blob())
        })
    }

    fn describe_key<'a>(&'a self, key_id: &'a str) -> KmsFuture<'a, KeyDescription> {
        Box::pin(async move {
            let op = Operation::DescribeKey;
            let out = self
                .client
                .describe_key()
                .key_id(key_id)
                .customize()
                .config_override(Self::no_retry())
                .send()
                .await
                .map_err(|e| self.error(op, key_id, e))?;
            let md = out.key_metadata().ok_or_else(|| {
                KmsError::local(
                    op,
                    &self.region,
                    key_id,
                    KmsErrorKind::BadResponse,
                    "no KeyMetadata".into(),
                )
            })?;
            let mut replica_regions = Vec::new();
            if let Some(mrc) = md.multi_region_configuration() {
                if let Some(r) = mrc.primary_key().and_then(|p| p.region()) {
                    replica_regions.push(r.to_owned());
                }
                replica_regions.extend(mrc.replica_keys().iter().filter_map(|k| k.region().map(str::to_owned)));
            }
            Ok(KeyDescription {
                arn: md.arn().unwrap_or(md.key_id()).to_owned(),
                state: md
                    .key_state()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|| "Unknown".into()),
                multi_region: md.multi_region().unwrap_or(false),
                replica_regions,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    //! The SDK adapter against mocked `aws-sdk-kms` responses: error classification through the real
    //! deserializers, and the governor retrying throttles of the real client.

    use std::sync::Arc;
    use std::time::Duration;

    use aws_sdk_kms::Client;
    use aws_sdk_kms::operation::decrypt::{DecryptError, DecryptOutput};
    use aws_sdk_kms::types::error::DisabledException;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;
    use crate::kms::error::UnavailableReason;
    use crate::kms::governor::{GovernedKms, KmsCounters, RetryPolicy};

    const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";

    fn throttle_body() -> Option<String> {
        Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_owned())
    }

    fn governed(client: Client, counters: &Arc<KmsCounters>) -> GovernedKms {
        let retry = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            budget: Duration::from_secs(10),
        };
        GovernedKms::new(
            Arc::new(SdkKms::new(client, "us-east-1")),
            None,
            retry,
            counters.clone(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn mocked_throttles_are_retried_then_succeed() {
        let rule = mock!(Client::decrypt)
            .sequence()
            .http_status(400, throttle_body())
            .times(2)
            .http_status(503, None)
            .output(|| {
                DecryptOutput::builder()
                    .key_id(ARN)
                    .plaintext(Blob::new(vec![7u8; 32]))
                    .build()
            })
            .build();
        let client = mock_client!(aws_sdk_kms, RuleMode::Sequential, [&rule]);
        let counters = KmsCounters::new();
        let kms = governed(client, &counters);
        let dk = kms.decrypt(ARN, b"blob", &EncryptionContext::new()).await.unwrap();
        assert_eq!(&dk.plaintext[..], &[7u8; 32]);
        assert_eq!(rule.num_calls(), 4);
        assert_eq!(counters.get("us-east-1", Operation::Decrypt, "throttled"), 3);
        assert_eq!(counters.get("us-east-1", Operation::Decrypt, "ok"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn mocked_throttles_beyond_budget_are_kms_throttled_not_key_unavailable() {
        let rule = mock!(Client::decrypt)
            .sequence()
            .http_status(400, throttle_body())
            .repeatedly()
            .build();
        let client = mock_client!(aws_sdk_kms, RuleMode::Sequential, [&rule]);
        let counters = KmsCounters::new();
        let kms = governed(client, &counters);
        let e = kms.decrypt(ARN, b"blob", &EncryptionContext::new()).await.unwrap_err();
        assert_eq!(e.kind, KmsErrorKind::Throttled, "{e}");
        assert_eq!(e.code, "ThrottlingException");
        assert_eq!(rule.num_calls(), 4, "retried up to max_attempts by the governor only");
        assert_eq!(counters.get("us-east-1", Operation::Decrypt, "key_unavailable"), 0);
    }

    #[tokio::test]
    async fn mocked_service_errors_are_classified() {
        let disabled = mock!(Client::decrypt).then_error(|| {
            DecryptError::DisabledException(DisabledException::builder().message("key is disabled").build())
        });
        let client = mock_client!(aws_sdk_kms, RuleMode::Sequential, [&disabled]);
        let e = SdkKms::new(client, "us-east-1")
            .decrypt(ARN, b"blob", &EncryptionContext::new())
            .await
            .unwrap_err();
        assert_eq!(e.kind, KmsErrorKind::KeyUnavailable(UnavailableReason::Disabled), "{e}");

        let pending = mock!(Client::decrypt).then_http_response(|| {
            aws_sdk_kms::config::http::HttpResponse::new(
                400.try_into().unwrap(),
                aws_smithy_types::body::SdkBody::from(
                    r#"{"__type":"KMSInvalidStateException","message":"arn:aws:kms:us-east-1:111122223333:key/mrk-1 is pending deletion."}"#,
                ),
            )
        });
        let client = mock_client!(aws_sdk_kms, RuleMode::Sequential, [&pending]);
        let e = SdkKms::new(client, "us-east-1")
            .decrypt(ARN, b"blob", &EncryptionContext::new())
            .await
            .unwrap_err();
        assert_eq!(
            e.kind,
            KmsErrorKind::KeyUnavailable(UnavailableReason::PendingDeletion),
            "{e}"
        );

        let denied = mock!(Client::decrypt).sequence().http_status(
            400,
            Some(r#"{"__type":"AccessDeniedException","message":"not authorized"}"#.to_owned()),
        );
        let client = mock_client!(aws_sdk_kms, RuleMode::Sequential, [&denied.build()]);
        let e = SdkKms::new(client, "us-east-1")
            .decrypt(ARN, b"blob", &EncryptionContext::new())
            .await
            .unwrap_err();
        assert_eq!(
            e.kind,
            KmsErrorKind::KeyUnavailable(UnavailableReason::AccessDenied),
            "{e}"
        );
    }
}
