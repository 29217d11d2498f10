//! The production [`ValueCipher`]: the AWS Encryption SDK message format of `ddbguard-esdk` with a keyring from
//! `ddbguard-keys` (the MRK-aware KMS keyring with the local replica, the discovery keyring, raw AES).

use std::sync::Arc;

use ddbguard_dbe::Verdict;
use ddbguard_esdk::{DecryptOptions, EncryptOptions, Keyring};
use zeroize::Zeroizing;

use crate::cipher::{CipherFuture, EncryptionContext, Opened, SealError, ValueCipher};

/// AWS Encryption SDK messages under one keyring.
#[derive(Debug, Clone)]
pub struct EsdkCipher {
    keyring: Arc<dyn Keyring>,
    decrypt: DecryptOptions,
    encrypt: EncryptOptions,
    kms_requests_per_call: u32,
}

impl EsdkCipher {
    /// A cipher over `keyring`. `decrypt` holds the table's policy (commitment required by default, a required
    /// suite); its `expected_context` is replaced per value. `kms_requests_per_call` is 1 for a KMS keyring, 0
    /// for a local one (for the KMS budget).
    pub fn new(
        keyring: Arc<dyn Keyring>,
        decrypt: DecryptOptions,
        encrypt: EncryptOptions,
        kms_requests_per_call: u32,
    ) -> EsdkCipher {
        EsdkCipher {
            keyring,
            decrypt,
            encrypt,
            kms_requests_per_call,
        }
    }
}

impl ValueCipher for EsdkCipher {
    fn open<'a>(
        &'a self,
        message: &'a [u8],
        expected: &'a EncryptionContext,
    ) -> CipherFuture<'a, Result<Opened, Verdict>> {
        Box::pin(async move {
            let mut options = self.decrypt.clone();
            options.expected_context = expected.clone();
            match ddbguard_esdk::decrypt(self.keyring.as_ref(), &options, message).await {
                Ok(d) => Ok(Opened {
                    context: d.header.encryption_context,
                    plaintext: Zeroizing::new(d.plaintext),
                }),
                Err(e) => {
                    tracing::debug!(verdict = %e.verdict(), reason = %e.reason(), "esdk: message failed");
                    Err(e.verdict())
                }
            }
        })
    }

    fn seal<'a>(
        &'a self,
        plaintext: &'a [u8],
        context: &'a EncryptionContext,
    ) -> CipherFuture<'a, Result<Vec<u8>, SealError>> {
        Box::pin(async move {
            ddbguard_esdk::encrypt(self.keyring.as_ref(), &self.encrypt, context, plaintext)
                .await
                .map_err(|e| match e.verdict() {
                    Verdict::KmsThrottled => SealError::Throttled,
                    _ => SealError::Key(format!("{} ({})", e.verdict(), e.reason())),
                })
        })
    }

    fn kms_requests_per_call(&self) -> u32 {
        self.kms_requests_per_call
    }
}

#[cfg(test)]
mod tests {
    use ddbguard_esdk::fake::FakeKeyring;

    use super::*;
    use crate::cipher::{Stored, judge};
    use crate::table::Encoding;

    fn ctx(id: &str) -> EncryptionContext {
        [("table", "patients"), ("column", "ssn"), ("id", id)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn cipher(key: [u8; 32]) -> EsdkCipher {
        EsdkCipher::new(
            Arc::new(FakeKeyring::new("ns", "wrapping", key)),
            DecryptOptions::default(),
            EncryptOptions::default(),
            0,
        )
    }

    #[tokio::test]
    async fn real_messages_get_their_verdicts() {
        let c = cipher([7; 32]);
        let message = c.seal(b"123-45-6789", &ctx("1")).await.unwrap();
        let stored = Stored::encode(message.clone(), Encoding::Base64);
        assert_eq!(judge(&c, &stored, Some(&ctx("1"))).await, Verdict::Ok);
        // The same ciphertext in row 2's column: the stored context names row 1.
        assert_eq!(judge(&c, &stored, Some(&ctx("2"))).await, Verdict::IntegrityFailed);
        let mut tampered = message.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            judge(&c, &Stored::Bytes(tampered), Some(&ctx("1"))).await,
            Verdict::IntegrityFailed
        );
        let opened = c.open(&message, &ctx("1")).await.unwrap();
        assert_eq!(&opened.plaintext[..], b"123-45-6789");
        // Another wrapping key cannot unwrap the data key.
        let other = cipher([8; 32]);
        assert_ne!(judge(&other, &stored, Some(&ctx("1"))).await, Verdict::Ok);
    }
}
