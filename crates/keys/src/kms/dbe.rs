//! The KMS keyrings as the item format's [`ddbguard_dbe::Keyring`]s, and the mapping of their failures into
//! [`ddbguard_dbe::KeyringError`] (and so into verdicts).
//!
//! `dbe` hands keyrings the EDKs with the ciphertext already reduced to the provider part (after the 48-byte
//! wrapped data key), which is exactly the KMS ciphertext blob.

use ddbguard_dbe::{
    EncryptedDataKey, EncryptionContext, KeyUnavailableReason, Keyring, KeyringError, KeyringFuture, SecretKey,
    UnwrappedKey, WrappedKey,
};

use super::error::KmsErrorKind;
use super::keyring::{EdkRef, KmsKeyringError, MrkDiscoveryKeyring, MrkKeyring};

impl From<KmsKeyringError> for KeyringError {
    fn from(e: KmsKeyringError) -> KeyringError {
        let message = e.to_string();
        match e {
            KmsKeyringError::NoMatchingKey { .. } => KeyringError::NoMatchingKey { message },
            KmsKeyringError::KeyNotMrk { edk_arn, .. } => KeyringError::KeyNotMrk { key: edk_arn, message },
            KmsKeyringError::BadProviderInfo { .. } => KeyringError::IntegrityFailed { message },
            KmsKeyringError::Unsupported(_) => KeyringError::Other { message },
            KmsKeyringError::Kms(k) => match k.kind {
                KmsErrorKind::KeyUnavailable(r) => KeyringError::KeyUnavailable {
                    reason: KeyUnavailableReason::from(r),
                    key: k.key_id,
                    message,
                },
                KmsErrorKind::IntegrityFailed => KeyringError::IntegrityFailed { message },
                // Transient service failures that outlived the retry budget are "try again later", like throttles:
                // not a finding about the key.
                KmsErrorKind::Throttled | KmsErrorKind::Transient => KeyringError::Throttled { key: k.key_id, message },
                KmsErrorKind::BadResponse | KmsErrorKind::Other => KeyringError::Other { message },
            },
        }
    }
}

fn edk_refs(edks: &[EncryptedDataKey]) -> Vec<EdkRef<'_>> {
    edks.iter()
        .map(|e| EdkRef {
            provider_id: &e.provider_id,
            provider_info: &e.provider_info,
            ciphertext: &e.ciphertext,
        })
        .collect()
}

/// The item format's view of an intermediate key a KMS keyring unwrapped.
fn unwrapped(ikm: super::keyring::Ikm) -> UnwrappedKey {
    UnwrappedKey {
        ikm: SecretKey::new(ikm.key),
        edk_index: ikm.edk_index,
    }
}

impl Keyring for MrkKeyring {
    fn unwrap_key<'a>(
        &'a self,
        edks: &'a [EncryptedDataKey],
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, UnwrappedKey> {
        Box::pin(async move { Ok(unwrapped(self.unwrap_ikm(&edk_refs(edks), ec).await?)) })
    }

    fn wrap_key<'a>(&'a self, ec: &'a EncryptionContext) -> KeyringFuture<'a, WrappedKey> {
        Box::pin(async move {
            let g = self.generate_ikm(ec).await?;
            Ok(WrappedKey {
                ikm: SecretKey::new(g.key),
                provider_id: g.provider_id,
                provider_info: g.provider_info,
                wrapped: g.ciphertext,
            })
        })
    }
}

impl Keyring for MrkDiscoveryKeyring {
    fn unwrap_key<'a>(
        &'a self,
        edks: &'a [EncryptedDataKey],
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, UnwrappedKey> {
        Box::pin(async move { Ok(unwrapped(self.unwrap_ikm(&edk_refs(edks), ec).await?)) })
    }

    fn wrap_key<'a>(&'a self, _ec: &'a EncryptionContext) -> KeyringFuture<'a, WrappedKey> {
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
    use super::*;
    use crate::kms::error::{KmsError, Operation, UnavailableReason};
    use ddbguard_dbe::Verdict;

    fn kms(kind: KmsErrorKind) -> KeyringError {
        KmsKeyringError::Kms(KmsError::local(
            Operation::Decrypt,
            "ap-southeast-2",
            "arn",
            kind,
            "m".into(),
        ))
        .into()
    }

    #[tokio::test]
    async fn items_round_trip_across_regions_through_dbe() {
        use crate::kms::fake::{FakeKeyState, FakeKmsWorld};
        use ddbguard_dbe::{AttributeValue, CryptoAction, Item, TableConfig, decrypt_item, encrypt_item};
        use std::sync::Arc;

        const MRK_E1: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";
        const MRK_AP: &str = "arn:aws:kms:ap-southeast-2:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";
        let w = FakeKmsWorld::new();
        w.create_key(MRK_E1);
        w.create_key(MRK_AP);
        let mut config = TableConfig::new("orders", "pk");
        config.attribute_actions.insert("pk".into(), CryptoAction::SignOnly);
        config
            .attribute_actions
            .insert("secret".into(), CryptoAction::EncryptAndSign);
        let item: Item = [
            ("pk".to_owned(), AttributeValue::S("order-1".into())),
            ("secret".to_owned(), AttributeValue::S("4111-1111".into())),
        ]
        .into();
        let writer = MrkKeyring::new(MRK_E1, Arc::new(w.client("us-east-1")), None).unwrap();
        let encrypted = encrypt_item(&config, &writer, &item).await.unwrap();
        let reader = MrkKeyring::new(MRK_E1, Arc::new(w.client("ap-southeast-2")), None).unwrap();
        let decrypted = decrypt_item(&config, &reader, &encrypted).await.unwrap();
        assert_eq!(decrypted.item, item);
        let discovery = MrkDiscoveryKeyring::new(Arc::new(w.client("ap-southeast-2")), None, None).unwrap();
        assert_eq!(decrypt_item(&config, &discovery, &encrypted).await.unwrap().item, item);
        w.set_state(MRK_AP, FakeKeyState::Disabled);
        let e = decrypt_item(&config, &reader, &encrypted).await.unwrap_err();
        assert_eq!(e.verdict(), Verdict::KeyUnavailable);
        assert_eq!(e.reason().as_str(), "disabled");
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            kms(KmsErrorKind::KeyUnavailable(UnavailableReason::Disabled)).verdict(),
            Verdict::KeyUnavailable
        );
        assert_eq!(
            kms(KmsErrorKind::KeyUnavailable(UnavailableReason::PendingDeletion))
                .reason()
                .as_str(),
            "pending_deletion"
        );
        assert_eq!(kms(KmsErrorKind::Throttled).verdict(), Verdict::KmsThrottled);
        assert_eq!(kms(KmsErrorKind::Transient).verdict(), Verdict::KmsThrottled);
        assert_eq!(kms(KmsErrorKind::IntegrityFailed).verdict(), Verdict::IntegrityFailed);
        let e: KeyringError = KmsKeyringError::KeyNotMrk {
            edk_arn: "arn:x".into(),
            local: "arn:y".into(),
            why: "is a single-region key",
        }
        .into();
        assert_eq!(e.verdict(), Verdict::KeyNotMrk);
    }
}
