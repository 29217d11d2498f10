//! The legacy DynamoDB Encryption Client's direct AWS KMS materials provider, over the same [`KmsApi`] stack
//! (governor, retries, metrics, cache) as the DB-ESDK keyrings.
//!
//! # Which region and key decrypt an item
//!
//! The legacy format records no key identifier: `amzn-ddb-env-key` is a bare KMS `CiphertextBlob`. The clients
//! themselves decrypt with whatever key and region they are configured with (Python: the configured key's
//! region; Java: the region of the KMS client it is given). ddbguard does the same with the key it is
//! configured with, through its replica in the verifier's own region: `Decrypt(KeyId = local replica ARN,
//! CiphertextBlob, EncryptionContext)` on the local region's client. A symmetric ciphertext of a multi-Region
//! key decrypts under any replica of it, so an item written under the MRK in us-east-1 is verified in
//! ap-southeast-2 without a cross-region call. Naming the KeyId makes KMS refuse a blob of any other key
//! (`IncorrectKeyException`): such an item is `key_not_mrk` (a single-region key, or another MRK, that cannot
//! be used here), and the answer's KeyId must be the local replica. A refused replica (disabled, missing,
//! pending deletion, access denied) is `key_unavailable`; a blob or encryption context that does not
//! authenticate (`InvalidCiphertextException`) is `integrity_failed`; throttling beyond the retry budget is
//! `kms_throttled`.
//!
//! The encryption context is rebuilt from the item and the table (`ddbguard_ddbec::DirectKmsDescription`), the
//! 32-byte data key is cached like an intermediate key, and the content and HMAC keys are derived from it.

use std::fmt;
use std::sync::Arc;

use ddbguard_dbe::KeyringError;
use ddbguard_ddbec::{DdbecError, DirectKmsDescription, MaterialsProvider, ProviderContext, ProviderFuture};

use super::api::KmsApi;
use super::cache::KeyCache;
use super::error::{KmsError, KmsErrorKind};
use super::keyring::{KmsKeyringError, MrkKeyring};
use crate::arn::ArnError;

/// KMS's answer when a `CiphertextBlob` belongs to another key than the `KeyId` named.
const INCORRECT_KEY: &str = "IncorrectKeyException";

/// The direct KMS provider: one configured key, used in the local region through its replica — the key choice of
/// the KMS keyring ([`MrkKeyring`]), whose decryption of a bare blob it uses.
pub struct DirectKmsProvider {
    keyring: MrkKeyring,
}

impl fmt::Debug for DirectKmsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DirectKmsProvider").field(&self.keyring).finish()
    }
}

impl DirectKmsProvider {
    /// A provider for `key_arn` on `kms` (the local region's client, normally a [`super::GovernedKms`]). An MRK
    /// is used through its replica in `kms.region()`; a single-region key as it is (and then only in its own
    /// region). Aliases and bare key ids are refused.
    pub fn new(
        key_arn: &str,
        kms: Arc<dyn KmsApi>,
        cache: Option<Arc<KeyCache>>,
    ) -> Result<DirectKmsProvider, ArnError> {
        Ok(DirectKmsProvider {
            keyring: MrkKeyring::new(key_arn, kms, cache)?,
        })
    }

    fn error(&self, e: KmsError) -> KeyringError {
        if e.kind == KmsErrorKind::IntegrityFailed && e.code == INCORRECT_KEY {
            return KeyringError::KeyNotMrk {
                key: self.keyring.local_arn().to_string(),
                message: format!(
                    "the item's data key is not under {} or a multi-Region replica of it ({INCORRECT_KEY})",
                    self.keyring.configured_arn()
                ),
            };
        }
        KmsKeyringError::Kms(e).into()
    }
}

impl MaterialsProvider for DirectKmsProvider {
    fn decryption_materials<'a>(&'a self, ctx: &'a ProviderContext<'a>) -> ProviderFuture<'a> {
        Box::pin(async move {
            let description = DirectKmsDescription::parse(ctx.description)?;
            let ec = description.encryption_context(ctx)?;
            let data_key = self
                .keyring
                .decrypt_local(&description.ciphertext_blob, &ec)
                .await
                .map_err(|e| DdbecError::Provider(self.error(e)))?;
            description.derive(&data_key[..])
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ddbguard_dbe::{AttributeValue, Item, Reason, Verdict};
    use ddbguard_ddbec::fake::{direct_kms_context, seal_direct_kms};
    use ddbguard_ddbec::{AttributeActions, LegacyAction, TableContext, decrypt_item};

    use super::*;
    use crate::arn::KmsArn;
    use crate::kms::fake::{FakeKeyState, FakeKmsWorld};

    const MRK_E1: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";
    const MRK_AP: &str = "arn:aws:kms:ap-southeast-2:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";
    const OTHER_MRK_E1: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-00000000000000000000000000000001";
    const OTHER_MRK_AP: &str = "arn:aws:kms:ap-southeast-2:111122223333:key/mrk-00000000000000000000000000000001";
    const SRK_E1: &str = "arn:aws:kms:us-east-1:111122223333:key/0b9f2a53-55a4-4a4b-9f5c-3a6c2b1d9e10";

    const TABLE: TableContext<'static> = TableContext {
        table_name: "orders",
        partition_key: Some("pk"),
        sort_key: None,
    };

    fn actions() -> AttributeActions {
        AttributeActions::new(LegacyAction::EncryptAndSign).with_key_attributes(["pk"])
    }

    fn plain() -> Item {
        Item::from([
            ("pk".to_owned(), AttributeValue::S("order-1".into())),
            ("card".to_owned(), AttributeValue::S("4111-1111".into())),
        ])
    }

    /// An item written as the legacy client does with the direct KMS provider under `key` in its region.
    async fn legacy_item(world: &Arc<FakeKmsWorld>, key: &str) -> Item {
        let region = KmsArn::parse_key(key).unwrap().region().to_owned();
        let ec = direct_kms_context(TABLE, &plain()).unwrap();
        let dk = world.client(&region).generate_data_key(key, 32, &ec).await.unwrap();
        seal_direct_kms(TABLE, &plain(), &actions(), &dk.plaintext, &dk.ciphertext).unwrap()
    }

    fn world() -> Arc<FakeKmsWorld> {
        let w = FakeKmsWorld::new();
        for k in [MRK_E1, MRK_AP, OTHER_MRK_E1, OTHER_MRK_AP, SRK_E1] {
            w.create_key(k);
        }
        w
    }

    async fn verify(w: &Arc<FakeKmsWorld>, item: &Item) -> Result<Item, DdbecError> {
        let provider = DirectKmsProvider::new(MRK_E1, Arc::new(w.client("ap-southeast-2")), None).unwrap();
        assert_eq!(provider.keyring.local_arn().to_string(), MRK_AP);
        decrypt_item(TABLE, item, &actions(), &provider).await.map(|d| d.item)
    }

    #[tokio::test]
    async fn an_item_written_under_the_mrk_in_us_east_1_verifies_with_the_replica_in_ap_southeast_2() {
        let w = world();
        let item = legacy_item(&w, MRK_E1).await;
        assert_eq!(verify(&w, &item).await.unwrap(), plain());
    }

    #[tokio::test]
    async fn items_under_another_key_are_key_not_mrk() {
        let w = world();
        for key in [SRK_E1, OTHER_MRK_E1] {
            let e = verify(&w, &legacy_item(&w, key).await).await.unwrap_err();
            assert_eq!(e.verdict(), Verdict::KeyNotMrk, "{key}: {e}");
            assert_eq!(e.reason(), Reason::KeyNotMrk);
        }
    }

    #[tokio::test]
    async fn a_disabled_replica_is_key_unavailable() {
        let w = world();
        let item = legacy_item(&w, MRK_E1).await;
        w.set_state(MRK_AP, FakeKeyState::Disabled);
        let e = verify(&w, &item).await.unwrap_err();
        assert_eq!(e.verdict(), Verdict::KeyUnavailable);
        assert_eq!(e.reason(), Reason::Disabled);
    }

    #[tokio::test]
    async fn a_changed_key_attribute_or_table_breaks_the_encryption_context() {
        let w = world();
        let mut item = legacy_item(&w, MRK_E1).await;
        item.insert("pk".into(), AttributeValue::S("order-2".into()));
        let e = verify(&w, &item).await.unwrap_err();
        assert_eq!(e.verdict(), Verdict::IntegrityFailed, "{e}");
        let item = legacy_item(&w, MRK_E1).await;
        let provider = DirectKmsProvider::new(MRK_E1, Arc::new(w.client("ap-southeast-2")), None).unwrap();
        let other_table = TableContext {
            table_name: "invoices",
            ..TABLE
        };
        let e = decrypt_item(other_table, &item, &actions(), &provider)
            .await
            .unwrap_err();
        assert_eq!(e.verdict(), Verdict::IntegrityFailed, "{e}");
    }

    #[tokio::test]
    async fn the_cache_spares_a_second_decrypt_of_the_same_item() {
        let w = world();
        let item = legacy_item(&w, MRK_E1).await;
        let cache = Arc::new(KeyCache::new(16, Duration::from_secs(60)));
        let provider =
            DirectKmsProvider::new(MRK_E1, Arc::new(w.client("ap-southeast-2")), Some(cache.clone())).unwrap();
        for _ in 0..2 {
            decrypt_item(TABLE, &item, &actions(), &provider).await.unwrap();
        }
        assert_eq!((cache.misses(), cache.hits()), (1, 1));
    }
}
