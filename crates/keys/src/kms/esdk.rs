//! The KMS keyrings as the message format's [`ddbguard_esdk::Keyring`]s.
//!
//! An AWS Encryption SDK message's `aws-kms` EDK holds the KMS ciphertext blob of the data key itself (no
//! intermediate key), so the same [`MrkKeyring`] / [`MrkDiscoveryKeyring`] logic applies unchanged: MRK matching,
//! the local replica, the classification of KMS failures (see [`super::dbe`] for their mapping to verdicts).
//! These keyrings produce 32-byte keys, so they serve every AES-256 suite — the committing ones the SDKs write
//! today and the legacy 0x0078/0x0178/0x0378 — and refuse the AES-128/192 suites with a clear message.

use ddbguard_dbe::{EncryptionContext, KeyringError, KeyringFuture};
use ddbguard_esdk::{AlgorithmSuite, DataKey, DecryptedDataKey, EncryptedDataKey, GeneratedDataKey, Keyring};
use zeroize::Zeroizing;

use super::keyring::{EdkRef, IKM_LEN, Ikm, KmsKeyringError, MrkDiscoveryKeyring, MrkKeyring};

fn edk_refs(edks: &[EncryptedDataKey]) -> Vec<EdkRef<'_>> {
    edks.iter()
        .map(|e| EdkRef {
            provider_id: &e.provider_id,
            provider_info: &e.provider_info,
            ciphertext: &e.ciphertext,
        })
        .collect()
}

fn check_suite(suite: AlgorithmSuite) -> Result<(), KeyringError> {
    if suite.key_len() == IKM_LEN {
        Ok(())
    } else {
        Err(KeyringError::Other {
            message: format!(
                "the KMS keyrings handle 32-byte data keys; {suite} uses {}-byte keys",
                suite.key_len()
            ),
        })
    }
}

fn data_key(key: Zeroizing<[u8; IKM_LEN]>) -> DataKey {
    DataKey::from_slice(&key[..])
}

/// The data key a KMS keyring unwrapped, as the message format takes it.
fn decrypted(k: Ikm) -> Result<DecryptedDataKey, KeyringError> {
    Ok(DecryptedDataKey {
        key: data_key(k.key),
        edk_index: k.edk_index,
    })
}

impl Keyring for MrkKeyring {
    fn decrypt_data_key<'a>(
        &'a self,
        suite: AlgorithmSuite,
        edks: &'a [EncryptedDataKey],
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, DecryptedDataKey> {
        Box::pin(async move {
            check_suite(suite)?;
            decrypted(self.unwrap_ikm(&edk_refs(edks), ec).await?)
        })
    }

    fn generate_data_key<'a>(
        &'a self,
        suite: AlgorithmSuite,
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, GeneratedDataKey> {
        Box::pin(async move {
            check_suite(suite)?;
            let g = self.generate_ikm(ec).await?;
            Ok(GeneratedDataKey {
                key: data_key(g.key),
                edks: vec![EncryptedDataKey {
                    provider_id: g.provider_id,
                    provider_info: g.provider_info,
                    ciphertext: g.ciphertext,
                }],
            })
        })
    }
}

impl Keyring for MrkDiscoveryKeyring {
    fn decrypt_data_key<'a>(
        &'a self,
        suite: AlgorithmSuite,
        edks: &'a [EncryptedDataKey],
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, DecryptedDataKey> {
        Box::pin(async move {
            check_suite(suite)?;
            decrypted(self.unwrap_ikm(&edk_refs(edks), ec).await?)
        })
    }

    fn generate_data_key<'a>(
        &'a self,
        _suite: AlgorithmSuite,
        _ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, GeneratedDataKey> {
        Box::pin(async move {
            Err(
                KmsKeyringError::Unsupported("the kms-mrk-discovery keyring can only decrypt; use kms-mrk to encrypt")
                    .into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ddbguard_dbe::{Reason, Verdict};
    use ddbguard_esdk::{DecryptOptions, EncryptOptions, decrypt, encrypt};

    use super::*;
    use crate::kms::fake::{FakeKeyState, FakeKmsWorld};

    const MRK_E1: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";
    const MRK_AP: &str = "arn:aws:kms:ap-southeast-2:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";
    const SRK_E1: &str = "arn:aws:kms:us-east-1:111122223333:key/0f7e9d1c-2b3a-4c5d-8e9f-0a1b2c3d4e5f";

    fn ec() -> EncryptionContext {
        [
            ("table".to_owned(), "patients".to_owned()),
            ("id".to_owned(), "7".to_owned()),
        ]
        .into()
    }

    #[tokio::test]
    async fn messages_written_in_one_region_decrypt_with_the_replica_in_another() {
        let w = FakeKmsWorld::new();
        w.create_key(MRK_E1);
        w.create_key(MRK_AP);
        let writer = MrkKeyring::new(MRK_E1, Arc::new(w.client("us-east-1")), None).unwrap();
        let reader = MrkKeyring::new(MRK_E1, Arc::new(w.client("ap-southeast-2")), None).unwrap();
        let discovery = MrkDiscoveryKeyring::new(Arc::new(w.client("ap-southeast-2")), None, None).unwrap();
        for suite in [
            AlgorithmSuite::Aes256GcmHkdfSha512Commit,
            AlgorithmSuite::Aes256GcmHkdfSha512CommitEcdsaP384,
        ] {
            let options = EncryptOptions {
                suite,
                ..EncryptOptions::default()
            };
            let m = encrypt(&writer, &options, &ec(), b"123-45-6789").await.unwrap();
            let d = decrypt(&reader, &DecryptOptions::default(), &m).await.unwrap();
            assert_eq!(d.plaintext, b"123-45-6789");
            assert_eq!(d.header.encrypted_data_keys[0].provider_info, MRK_E1.as_bytes());
            let d = decrypt(&discovery, &DecryptOptions::default(), &m).await.unwrap();
            assert_eq!(d.plaintext, b"123-45-6789");
        }
        assert!(
            encrypt(&discovery, &EncryptOptions::default(), &ec(), b"x")
                .await
                .is_err()
        );
        let m = encrypt(&writer, &EncryptOptions::default(), &ec(), b"x").await.unwrap();
        w.set_state(MRK_AP, FakeKeyState::Disabled);
        let e = decrypt(&reader, &DecryptOptions::default(), &m).await.unwrap_err();
        assert_eq!((e.verdict(), e.reason()), (Verdict::KeyUnavailable, Reason::Disabled));
    }

    #[tokio::test]
    async fn a_single_region_key_is_key_not_mrk_without_a_kms_call() {
        let w = FakeKmsWorld::new();
        w.create_key(SRK_E1);
        w.create_key(MRK_AP);
        let writer = MrkKeyring::new(SRK_E1, Arc::new(w.client("us-east-1")), None).unwrap();
        let m = encrypt(&writer, &EncryptOptions::default(), &ec(), b"x").await.unwrap();
        let reader = MrkKeyring::new(MRK_AP, Arc::new(w.client("ap-southeast-2")), None).unwrap();
        let e = decrypt(&reader, &DecryptOptions::default(), &m).await.unwrap_err();
        assert_eq!((e.verdict(), e.reason()), (Verdict::KeyNotMrk, Reason::KeyNotMrk));
    }

    #[tokio::test]
    async fn aes_128_and_192_suites_are_refused_with_a_clear_message() {
        let w = FakeKmsWorld::new();
        w.create_key(MRK_E1);
        let k = MrkKeyring::new(MRK_E1, Arc::new(w.client("us-east-1")), None).unwrap();
        let e = k
            .generate_data_key(AlgorithmSuite::Aes128GcmHkdfSha256EcdsaP256, &ec())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("16-byte"), "{e}");
    }
}
