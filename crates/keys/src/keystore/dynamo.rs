//! [`DynamoKeyStore`]: the key store's operations over DynamoDB and KMS (`CreateKeyStore`, `CreateKey`,
//! `VersionKey`, `GetActiveBranchKey`, `GetBranchKeyVersion`, and a `describe` for operators).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use aws_sdk_dynamodb::primitives::Blob;
use ddbguard_ddb::{
    AttributeValue, Condition, DdbError, DynamoApi, ErrorKind, Item, KeyAttribute, KeySchema, PartitionQuery,
    ScalarType, SdkDynamo, TableSpec, WriteOp, ensure_table,
};
use zeroize::Zeroizing;

use super::{
    ATTR_CREATE_TIME, ATTR_ENC, ATTR_HIERARCHY_VERSION, ATTR_ID, ATTR_KMS_ARN, ATTR_TYPE, ATTR_VERSION, BRANCH_ACTIVE,
    EC_TABLE_NAME, KeyStoreError, VERSION_PREFIX, VersionContexts, create_time_now, custom_context, version_contexts,
    version_of,
};
use crate::arn::{KmsArn, mrk_match};
use crate::hierarchy::BranchKey;
use crate::kms::{EncryptionContext, KmsApi, KmsError, KmsErrorKind, ReEncryptRequest};

/// What `describe` shows of one key store item (no key material, no KMS call).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BranchKeyItemInfo {
    /// `type`: `branch:ACTIVE`, `branch:version:<uuid>` or `beacon:ACTIVE`.
    #[serde(rename = "type")]
    pub item_type: String,
    /// For `branch:ACTIVE`: the active version (`branch:version:<uuid>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `create-time`.
    pub create_time: String,
    /// `kms-arn`.
    pub kms_arn: String,
    /// `hierarchy-version`.
    pub hierarchy_version: String,
    /// The custom encryption context (without the `aws-crypto-ec:` prefix).
    pub encryption_context: BTreeMap<String, String>,
}

/// The branch key store in one region: a DynamoDB table and the KMS key that wraps its branch keys, used
/// through that region's KMS client (for an MRK, its replica in the client's region).
///
/// Generic over the DynamoDB implementation so that tests run it over `ddbguard_ddb::FakeDynamo`; production
/// code uses the default, [`SdkDynamo`].
pub struct DynamoKeyStore<D = SdkDynamo> {
    ddb: D,
    table: String,
    logical_name: String,
    configured: KmsArn,
    kms_key_id: String,
    kms: Arc<dyn KmsApi>,
}

impl<D> fmt::Debug for DynamoKeyStore<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoKeyStore")
            .field("table", &self.table)
            .field("logical_name", &self.logical_name)
            .field("kms_key_id", &self.kms_key_id)
            .finish_non_exhaustive()
    }
}

impl DynamoKeyStore<SdkDynamo> {
    /// A store over `table` (logical name `logical_name`, bound into every branch key) whose branch keys are
    /// wrapped under `kms_key_arn`, a key ARN (not an alias). `kms` is the KMS client of the local region; an MRK
    /// is used through its replica there.
    pub fn new(
        ddb: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        logical_name: impl Into<String>,
        kms_key_arn: &str,
        kms: Arc<dyn KmsApi>,
    ) -> Result<DynamoKeyStore<SdkDynamo>, KeyStoreError> {
        DynamoKeyStore::with_dynamo(SdkDynamo::new(ddb), table, logical_name, kms_key_arn, kms)
    }
}

impl<D: DynamoApi> DynamoKeyStore<D> {
    /// [`DynamoKeyStore::new`] over any DynamoDB implementation.
    pub fn with_dynamo(
        ddb: D,
        table: impl Into<String>,
        logical_name: impl Into<String>,
        kms_key_arn: &str,
        kms: Arc<dyn KmsApi>,
    ) -> Result<DynamoKeyStore<D>, KeyStoreError> {
        let configured = KmsArn::parse_key(kms_key_arn)
            .map_err(|e| KeyStoreError::InvalidInput(format!("key store KMS key {kms_key_arn:?}: {e}")))?;
        let kms_key_id = if configured.is_mrk() {
            configured
                .replica_in(kms.region())
                .map_err(|e| KeyStoreError::InvalidInput(e.to_string()))?
                .to_string()
        } else {
            configured.to_string()
        };
        let table = table.into();
        let logical_name = logical_name.into();
        if table.is_empty() || logical_name.is_empty() {
            return Err(KeyStoreError::InvalidInput(
                "the key store table and logical name must not be empty".into(),
            ));
        }
        Ok(DynamoKeyStore {
            ddb,
            table,
            logical_name,
            configured,
            kms_key_id,
            kms,
        })
    }

    /// The key store table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The KMS key id calls are made with (the local replica of an MRK).
    pub fn kms_key_id(&self) -> &str {
        &self.kms_key_id
    }

    /// A failed DynamoDB call; throttling and transient failures are worth retrying later.
    fn dynamo(&self, e: DdbError) -> KeyStoreError {
        KeyStoreError::Dynamo {
            operation: e.operation,
            table: e.table,
            message: e.message,
            transient: e.kind.is_retryable(),
        }
    }

    /// `CreateKeyStore`: creates the table (on-demand) if it does not exist, waits until it is ACTIVE, and checks
    /// the key schema. Returns whether it was created (false if it existed, or another process created it at the
    /// same time). Production key stores are usually created by infrastructure code as a global table; this is
    /// for first setups and the local environment.
    pub async fn create_key_store(&self) -> Result<bool, KeyStoreError> {
        let expected = KeySchema {
            hash: KeyAttribute::new(ATTR_ID, ScalarType::S),
            range: Some(KeyAttribute::new(ATTR_TYPE, ScalarType::S)),
        };
        let spec = TableSpec::on_demand(self.table.clone(), expected.clone());
        let table = ensure_table(&self.ddb, &spec, TABLE_ACTIVE_TIMEOUT)
            .await
            .map_err(|e| self.dynamo(e))?;
        let found = &table.description.key_schema;
        if *found != expected {
            let attr = |a: &KeyAttribute, role: &str| format!("{} ({role}, {:?})", a.name, a.kind);
            let mut parts = vec![attr(&found.hash, "HASH")];
            parts.extend(found.range.as_ref().map(|r| attr(r, "RANGE")));
            return Err(KeyStoreError::BadSchema {
                table: self.table.clone(),
                found: parts.join(", "),
            });
        }
        Ok(table.created)
    }

    /// `CreateKey`: a new branch key (id = a random UUID unless given) with its first version and its beacon
    /// key, bound to the custom encryption context `custom`. Returns the branch key id.
    ///
    /// As in the official key store, a caller-chosen id needs a non-empty encryption context.
    pub async fn create_key(
        &self,
        branch_key_id: Option<&str>,
        custom: &BTreeMap<String, String>,
    ) -> Result<String, KeyStoreError> {
        let id = match branch_key_id {
            Some("") => {
                return Err(KeyStoreError::InvalidInput(
                    "the branch key id must not be empty".into(),
                ));
            }
            Some(_) if custom.is_empty() => {
                return Err(KeyStoreError::InvalidInput(
                    "a caller-chosen branch key id needs an encryption context (as in the official key store); \
                     add one or leave the id out to get a random UUID"
                        .into(),
                ));
            }
            Some(id) => id.to_owned(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let version = uuid::Uuid::new_v4().to_string();
        let create_time = create_time_now();
        // As the official key store does: the configured ARN, whichever region's replica wraps the key.
        let kms_arn = self.configured.to_string();
        let ecs = version_contexts(&id, &version, &create_time, &self.logical_name, &kms_arn, custom);
        let (decrypt_only, active) = self.wrapped_version(&ecs).await?;
        let beacon = self
            .kms
            .generate_data_key_without_plaintext(&self.kms_key_id, 32, &ecs.beacon)
            .await?;
        let puts = vec![
            self.put(item(&ecs.decrypt_only, decrypt_only), Condition::not_exists(ATTR_ID)),
            self.put(item(&ecs.active, active), Condition::not_exists(ATTR_ID)),
            self.put(item(&ecs.beacon, beacon.ciphertext), Condition::not_exists(ATTR_ID)),
        ];
        self.transact(puts, || KeyStoreError::AlreadyExists {
            table: self.table.clone(),
            branch_key_id: id.clone(),
        })
        .await?;
        Ok(id)
    }

    /// `VersionKey`: rotates a branch key. The active item is read, authenticated with KMS, and replaced by a
    /// new version in one transaction that fails if the active item changed meanwhile. Returns the new
    /// version (UUID text).
    pub async fn version_key(&self, branch_key_id: &str) -> Result<String, KeyStoreError> {
        let old = self.get_item(branch_key_id, BRANCH_ACTIVE, true).await?;
        let (old_ec, old_enc) = self.authenticated_context(branch_key_id, BRANCH_ACTIVE, &old)?;
        let stored_arn = old_ec[ATTR_KMS_ARN].clone();
        // Authenticate the item as it is before building on it.
        self.re_encrypt(&old_enc, &old_ec, &old_ec).await.map_err(|e| match e {
            KeyStoreError::Kms(k) => self.kms_failure(branch_key_id, BRANCH_ACTIVE, k),
            other => other,
        })?;
        let version = uuid::Uuid::new_v4().to_string();
        let create_time = create_time_now();
        let custom = custom_context(&old_ec);
        let ecs = version_contexts(
            branch_key_id,
            &version,
            &create_time,
            &self.logical_name,
            &stored_arn,
            &custom,
        );
        let (decrypt_only, active) = self.wrapped_version(&ecs).await?;
        // The active item is replaced only if it is still the one authenticated above.
        let unchanged =
            Condition::exists(ATTR_ID).and(Condition::equals(ATTR_ENC, AttributeValue::B(Blob::new(old_enc))));
        let puts = vec![
            self.put(item(&ecs.decrypt_only, decrypt_only), Condition::not_exists(ATTR_ID)),
            self.put(item(&ecs.active, active), unchanged),
        ];
        self.transact(puts, || KeyStoreError::ConcurrentRotation {
            branch_key_id: branch_key_id.to_owned(),
        })
        .await?;
        Ok(version)
    }

    /// A new version's key, wrapped twice: for its `branch:version:<uuid>` item (GenerateDataKeyWithoutPlaintext)
    /// and, re-encrypted under the ACTIVE context, for the `branch:ACTIVE` item.
    async fn wrapped_version(&self, ecs: &VersionContexts) -> Result<(Vec<u8>, Vec<u8>), KeyStoreError> {
        let decrypt_only = self
            .kms
            .generate_data_key_without_plaintext(&self.kms_key_id, 32, &ecs.decrypt_only)
            .await?;
        let active = self
            .re_encrypt(&decrypt_only.ciphertext, &ecs.decrypt_only, &ecs.active)
            .await?;
        Ok((decrypt_only.ciphertext, active))
    }

    /// Writes `puts` in one transaction; a failed condition is `conflict()`. A transaction cancelled for another
    /// reason (throttling, a conflicting transaction, validation) is a DynamoDB error that names the reasons.
    async fn transact(
        &self,
        puts: Vec<WriteOp>,
        conflict: impl FnOnce() -> KeyStoreError,
    ) -> Result<(), KeyStoreError> {
        match self.ddb.transact_write(puts).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind == ErrorKind::Conflict => Err(conflict()),
            Err(e) => Err(self.dynamo(e)),
        }
    }

    /// `GetActiveBranchKey`: the active version, decrypted (an eventually consistent read, as the official
    /// store does).
    pub async fn active_branch_key(&self, branch_key_id: &str) -> Result<BranchKey, KeyStoreError> {
        let item = self.get_item(branch_key_id, BRANCH_ACTIVE, false).await?;
        self.decrypt_item(branch_key_id, BRANCH_ACTIVE, &item).await
    }

    /// [`DynamoKeyStore::active_branch_key`] with a strongly consistent read: what operators see right after a
    /// rotation.
    pub async fn active_branch_key_consistent(&self, branch_key_id: &str) -> Result<BranchKey, KeyStoreError> {
        let item = self.get_item(branch_key_id, BRANCH_ACTIVE, true).await?;
        self.decrypt_item(branch_key_id, BRANCH_ACTIVE, &item).await
    }

    /// `GetBranchKeyVersion`: one version (UUID text), decrypted.
    pub async fn branch_key_version(&self, branch_key_id: &str, version: &str) -> Result<BranchKey, KeyStoreError> {
        let item_type = format!("{VERSION_PREFIX}{version}");
        let item = self.get_item(branch_key_id, &item_type, false).await?;
        self.decrypt_item(branch_key_id, &item_type, &item).await
    }

    /// Every item of a branch key (active, versions, beacon), without decrypting anything.
    pub async fn describe(&self, branch_key_id: &str) -> Result<Vec<BranchKeyItemInfo>, KeyStoreError> {
        let mut infos = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .ddb
                .query(
                    &self.table,
                    PartitionQuery {
                        key_name: ATTR_ID.to_owned(),
                        value: AttributeValue::S(branch_key_id.to_owned()),
                        consistent: true,
                        exclusive_start_key: start.take(),
                        limit: None,
                    },
                )
                .await
                .map_err(|e| self.dynamo(e))?;
            for item in page.items {
                let item_type = match item.get(ATTR_TYPE) {
                    Some(AttributeValue::S(t)) => t.clone(),
                    _ => "<no type>".to_owned(),
                };
                let (ec, _) = self.authenticated_context(branch_key_id, &item_type, &item)?;
                infos.push(BranchKeyItemInfo {
                    version: ec.get(ATTR_VERSION).cloned(),
                    create_time: ec[ATTR_CREATE_TIME].clone(),
                    kms_arn: ec[ATTR_KMS_ARN].clone(),
                    hierarchy_version: ec[ATTR_HIERARCHY_VERSION].clone(),
                    encryption_context: custom_context(&ec),
                    item_type,
                });
            }
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        if infos.is_empty() {
            return Err(KeyStoreError::NotFound {
                table: self.table.clone(),
                branch_key_id: branch_key_id.to_owned(),
                item_type: "any".into(),
            });
        }
        Ok(infos)
    }

    async fn get_item(&self, branch_key_id: &str, item_type: &str, consistent: bool) -> Result<Item, KeyStoreError> {
        let key = Item::from([
            (ATTR_ID.to_owned(), AttributeValue::S(branch_key_id.to_owned())),
            (ATTR_TYPE.to_owned(), AttributeValue::S(item_type.to_owned())),
        ]);
        let out = self
            .ddb
            .get_item(&self.table, key, consistent)
            .await
            .map_err(|e| self.dynamo(e))?;
        out.item.ok_or_else(|| KeyStoreError::NotFound {
            table: self.table.clone(),
            branch_key_id: branch_key_id.to_owned(),
            item_type: item_type.to_owned(),
        })
    }

    /// The KMS encryption context an item's `enc` is bound to (every other attribute, plus `tablename`), and
    /// `enc`; checks the record format and that the item's KMS key is the configured one (MRK-aware).
    fn authenticated_context(
        &self,
        branch_key_id: &str,
        item_type: &str,
        item: &Item,
    ) -> Result<(EncryptionContext, Vec<u8>), KeyStoreError> {
        let malformed = |reason: String| KeyStoreError::Malformed {
            table: self.table.clone(),
            branch_key_id: branch_key_id.to_owned(),
            item_type: item_type.to_owned(),
            reason,
        };
        let mut ec = EncryptionContext::new();
        let mut enc = None;
        for (name, value) in item {
            match (name.as_str(), value) {
                (ATTR_ENC, AttributeValue::B(b)) => enc = Some(b.as_ref().to_vec()),
                (ATTR_ENC, _) => return Err(malformed("enc is not a binary attribute".into())),
                (_, AttributeValue::S(s)) => {
                    ec.insert(name.clone(), s.clone());
                }
                (ATTR_HIERARCHY_VERSION, AttributeValue::N(n)) => {
                    ec.insert(name.clone(), n.clone());
                }
                _ => return Err(malformed(format!("attribute {name:?} is not a string"))),
            }
        }
        let enc = enc.ok_or_else(|| malformed("no enc attribute".into()))?;
        for required in [
            ATTR_ID,
            ATTR_TYPE,
            ATTR_CREATE_TIME,
            ATTR_KMS_ARN,
            ATTR_HIERARCHY_VERSION,
        ] {
            match ec.get(required) {
                Some(v) if !v.is_empty() => {}
                _ => return Err(malformed(format!("missing or empty {required}"))),
            }
        }
        if ec[ATTR_ID] != branch_key_id || ec[ATTR_TYPE] != item_type {
            return Err(malformed(format!(
                "the item's key is {:?}/{:?}",
                ec[ATTR_ID], ec[ATTR_TYPE]
            )));
        }
        if ec[ATTR_HIERARCHY_VERSION] != "1" {
            return Err(malformed(format!(
                "hierarchy-version {} is not supported (only 1)",
                ec[ATTR_HIERARCHY_VERSION]
            )));
        }
        if ec.contains_key(EC_TABLE_NAME) {
            return Err(malformed(format!(
                "the item has a reserved {EC_TABLE_NAME:?} attribute"
            )));
        }
        let stored = &ec[ATTR_KMS_ARN];
        let compatible = if self.configured.is_mrk() {
            mrk_match(stored, &self.configured.to_string())
        } else {
            *stored == self.configured.to_string()
        };
        if !compatible {
            return Err(KeyStoreError::KeyMismatch {
                branch_key_id: branch_key_id.to_owned(),
                stored: stored.clone(),
                configured: self.configured.to_string(),
            });
        }
        ec.insert(EC_TABLE_NAME.to_owned(), self.logical_name.clone());
        Ok((ec, enc))
    }

    async fn decrypt_item(
        &self,
        branch_key_id: &str,
        item_type: &str,
        item: &Item,
    ) -> Result<BranchKey, KeyStoreError> {
        let malformed = |reason: String| KeyStoreError::Malformed {
            table: self.table.clone(),
            branch_key_id: branch_key_id.to_owned(),
            item_type: item_type.to_owned(),
            reason,
        };
        let (ec, enc) = self.authenticated_context(branch_key_id, item_type, item)?;
        let version = version_of(&ec).map_err(malformed)?.to_owned();
        let dk = self
            .kms
            .decrypt(&self.kms_key_id, &enc, &ec)
            .await
            .map_err(|e| self.kms_failure(branch_key_id, item_type, e))?;
        if !mrk_match(&dk.key_id, &self.kms_key_id) {
            return Err(malformed(format!(
                "KMS decrypted it with key {}, not {}",
                dk.key_id, self.kms_key_id
            )));
        }
        if dk.plaintext.len() != 32 {
            return Err(malformed(format!(
                "the decrypted branch key is {} bytes, not 32",
                dk.plaintext.len()
            )));
        }
        // Copied straight into a zeroizing buffer: no stray copy of the key on the stack.
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&dk.plaintext);
        BranchKey::new(branch_key_id, &version, key).map_err(malformed)
    }

    /// A KMS failure on an item's `enc`: one that did not authenticate is [`KeyStoreError::NotAuthentic`].
    fn kms_failure(&self, branch_key_id: &str, item_type: &str, e: KmsError) -> KeyStoreError {
        if e.kind == KmsErrorKind::IntegrityFailed {
            KeyStoreError::NotAuthentic {
                table: self.table.clone(),
                branch_key_id: branch_key_id.to_owned(),
                item_type: item_type.to_owned(),
                logical_name: self.logical_name.clone(),
                source: Box::new(e),
            }
        } else {
            KeyStoreError::Kms(e)
        }
    }

    async fn re_encrypt(
        &self,
        ciphertext: &[u8],
        source: &EncryptionContext,
        destination: &EncryptionContext,
    ) -> Result<Vec<u8>, KeyStoreError> {
        let out = self
            .kms
            .re_encrypt(ReEncryptRequest {
                source_key_id: &self.kms_key_id,
                ciphertext,
                source_encryption_context: source,
                destination_key_id: &self.kms_key_id,
                destination_encryption_context: destination,
            })
            .await?;
        Ok(out.ciphertext)
    }

    fn put(&self, item: Item, condition: Condition) -> WriteOp {
        WriteOp::Put {
            table: self.table.clone(),
            item,
            condition: Some(condition),
        }
    }
}

/// How long `CreateKeyStore` waits for a new table to become ACTIVE.
const TABLE_ACTIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The DynamoDB item for an encryption context and its `enc`: the context without `tablename`, with
/// `hierarchy-version` as a number.
fn item(ec: &EncryptionContext, enc: Vec<u8>) -> Item {
    let mut item: Item = ec
        .iter()
        .filter(|(k, _)| k.as_str() != EC_TABLE_NAME)
        .map(|(k, v)| {
            let value = if k == ATTR_HIERARCHY_VERSION {
                AttributeValue::N(v.clone())
            } else {
                AttributeValue::S(v.clone())
            };
            (k.clone(), value)
        })
        .collect();
    item.insert(ATTR_ENC.to_owned(), AttributeValue::B(Blob::new(enc)));
    item
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::fake::FakeKmsWorld;
    use ddbguard_ddb::{FakeDynamo, FaultyDynamo, Op};

    const MRK_EAST: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab";
    const MRK_WEST: &str = "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab";
    const VERSION: &str = "83eec007-5659-4554-bf11-699b90f41ac6";

    /// A store in eu-west-1 over a fake KMS (the DynamoDB client is never called by these tests).
    fn offline_store(world: &Arc<FakeKmsWorld>) -> DynamoKeyStore {
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("eu-west-1"))
            .build();
        let kms: Arc<dyn KmsApi> = Arc::new(world.client("eu-west-1"));
        DynamoKeyStore::new(
            aws_sdk_dynamodb::Client::from_conf(conf),
            "Keys",
            "Logical",
            MRK_EAST,
            kms,
        )
        .unwrap()
    }

    /// A DECRYPT_ONLY item as the us-east-1 side would write it, with its key from the fake KMS.
    async fn written_item(world: &Arc<FakeKmsWorld>) -> Item {
        let ecs = version_contexts(
            "bk",
            VERSION,
            "2026-11-28T17:03:29.358123Z",
            "Logical",
            MRK_EAST,
            &BTreeMap::new(),
        );
        let east = world.client("us-east-1");
        let wrapped = east
            .generate_data_key_without_plaintext(MRK_EAST, 32, &ecs.decrypt_only)
            .await
            .unwrap();
        item(&ecs.decrypt_only, wrapped.ciphertext)
    }

    #[tokio::test]
    async fn an_item_written_in_one_region_decrypts_with_the_local_replica() {
        let world = FakeKmsWorld::new();
        world.create_key(MRK_EAST);
        world.create_key(MRK_WEST);
        let store = offline_store(&world);
        assert_eq!(store.kms_key_id(), MRK_WEST);
        let it = written_item(&world).await;
        let t = format!("{VERSION_PREFIX}{VERSION}");
        let key = store.decrypt_item("bk", &t, &it).await.unwrap();
        assert_eq!(
            (key.branch_key_id.as_str(), key.version),
            ("bk", *uuid::Uuid::parse_str(VERSION).unwrap().as_bytes())
        );

        // Any attribute changed in the table breaks KMS authentication of `enc`.
        let mut changed = it.clone();
        changed.insert(
            "create-time".into(),
            AttributeValue::S("2020-01-01T00:00:00.000000Z".into()),
        );
        let e = store.decrypt_item("bk", &t, &changed).await.unwrap_err();
        assert!(
            matches!(e, KeyStoreError::NotAuthentic { ref source, .. } if source.code == "InvalidCiphertextException"),
            "{e}"
        );
        // Under another logical key store name, too; the error says which name to check, and it is not the
        // record's integrity failure.
        let mut other = offline_store(&world);
        other.logical_name = "Other".into();
        let e = other.decrypt_item("bk", &t, &it).await.unwrap_err();
        assert!(matches!(e, KeyStoreError::NotAuthentic { .. }), "{e}");
        assert!(
            e.to_string().contains("\"Other\"") && e.to_string().contains("key_store_logical_name"),
            "{e}"
        );
        assert_eq!(
            ddbguard_dbe::KeyringError::from(e).verdict(),
            ddbguard_dbe::Verdict::KeyUnavailable
        );
    }

    #[tokio::test]
    async fn malformed_items_are_named_errors() {
        let world = FakeKmsWorld::new();
        world.create_key(MRK_EAST);
        let store = offline_store(&world);
        let good = written_item(&world).await;
        let t = format!("{VERSION_PREFIX}{VERSION}");
        let check = |it: &Item, want: &str| {
            let e = store.authenticated_context("bk", &t, it).unwrap_err();
            assert!(e.to_string().contains(want), "{e} (wanted {want:?})");
        };
        assert!(store.authenticated_context("bk", &t, &good).is_ok());
        let mut it = good.clone();
        it.remove("enc");
        check(&it, "no enc attribute");
        let mut it = good.clone();
        it.insert("enc".into(), AttributeValue::S("x".into()));
        check(&it, "enc is not a binary attribute");
        let mut it = good.clone();
        it.insert("hierarchy-version".into(), AttributeValue::N("2".into()));
        check(&it, "hierarchy-version 2 is not supported");
        let mut it = good.clone();
        it.remove("create-time");
        check(&it, "missing or empty create-time");
        let mut it = good.clone();
        it.insert("tablename".into(), AttributeValue::S("x".into()));
        check(&it, "reserved \"tablename\"");
        let mut it = good.clone();
        it.insert("extra".into(), AttributeValue::Bool(true));
        check(&it, "\"extra\" is not a string");
        let e = store.authenticated_context("other", &t, &good).unwrap_err();
        assert!(e.to_string().contains("the item's key is"), "{e}");
        let mut it = good.clone();
        it.insert(
            "kms-arn".into(),
            AttributeValue::S("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab".into()),
        );
        assert!(matches!(
            store.authenticated_context("bk", &t, &it),
            Err(KeyStoreError::KeyMismatch { .. })
        ));
        // The active item without its version attribute cannot name a version.
        let ecs = version_contexts("bk", VERSION, "t", "Logical", MRK_EAST, &BTreeMap::new());
        let mut active = item(&ecs.active, vec![1]);
        active.remove("version");
        let e = store.decrypt_item("bk", BRANCH_ACTIVE, &active).await.unwrap_err();
        assert!(e.to_string().contains("no version attribute"), "{e}");
    }

    /// A store in us-east-1 over `ddb` and a fake KMS that has the key.
    fn store_over<D: DynamoApi>(ddb: D) -> DynamoKeyStore<D> {
        let world = FakeKmsWorld::new();
        world.create_key(MRK_EAST);
        let kms: Arc<dyn KmsApi> = Arc::new(world.client("us-east-1"));
        DynamoKeyStore::with_dynamo(ddb, "Keys", "Logical", MRK_EAST, kms).unwrap()
    }

    fn types(infos: &[BranchKeyItemInfo]) -> Vec<String> {
        let mut t: Vec<String> = infos.iter().map(|i| i.item_type.clone()).collect();
        t.sort();
        t
    }

    #[tokio::test(start_paused = true)]
    async fn creating_the_store_twice_creates_the_table_once() {
        let fake = Arc::new(FakeDynamo::new().with_creating_describes(2));
        let store = store_over(Arc::clone(&fake));
        assert!(store.create_key_store().await.unwrap());
        assert!(!store.create_key_store().await.unwrap());
        let d = fake.describe_table("Keys").await.unwrap();
        assert_eq!(d.billing_mode, Some(ddbguard_ddb::BillingMode::PayPerRequest));
        assert_eq!(
            (d.key_schema.hash.name.as_str(), d.key_schema.range.map(|r| r.name)),
            ("branch-key-id", Some("type".to_owned()))
        );
    }

    #[tokio::test]
    async fn a_table_with_another_schema_is_not_a_key_store() {
        let fake = FakeDynamo::new();
        fake.add_table(TableSpec::on_demand(
            "Keys",
            KeySchema {
                hash: KeyAttribute::new("pk", ScalarType::S),
                range: None,
            },
        ));
        let e = store_over(fake).create_key_store().await.unwrap_err();
        assert!(
            matches!(e, KeyStoreError::BadSchema { ref found, .. } if found == "pk (HASH, S)"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn create_rotate_get_and_describe_over_the_fake() {
        let store = store_over(FakeDynamo::new());
        store.create_key_store().await.unwrap();
        let custom = BTreeMap::from([("tenant".to_owned(), "a".to_owned())]);
        let id = store.create_key(None, &custom).await.unwrap();
        let first = store.active_branch_key(&id).await.unwrap();
        assert_eq!(first.branch_key_id, id);
        let infos = store.describe(&id).await.unwrap();
        let v1 = format!("{VERSION_PREFIX}{}", uuid::Uuid::from_bytes(first.version));
        assert_eq!(
            types(&infos),
            vec!["beacon:ACTIVE".to_owned(), BRANCH_ACTIVE.into(), v1.clone()]
        );
        assert!(
            infos
                .iter()
                .all(|i| i.encryption_context == custom && i.hierarchy_version == "1")
        );
        let active = infos.iter().find(|i| i.item_type == BRANCH_ACTIVE).unwrap();
        assert_eq!(active.version.as_deref(), Some(v1.as_str()));

        let v2 = store.version_key(&id).await.unwrap();
        let now = store.active_branch_key_consistent(&id).await.unwrap();
        assert_eq!(uuid::Uuid::from_bytes(now.version).to_string(), v2);
        assert_ne!(now.version, first.version);
        // The old version still decrypts to the same key.
        let old = store
            .branch_key_version(&id, &uuid::Uuid::from_bytes(first.version).to_string())
            .await
            .unwrap();
        assert_eq!(old.version, first.version);
        assert_eq!(old.key.expose(), first.key.expose());
        assert_ne!(now.key.expose(), first.key.expose());
        assert_eq!(store.describe(&id).await.unwrap().len(), 4);

        // A caller-chosen id that exists already: the transaction's conditions refuse it.
        store.create_key(Some("bk"), &custom).await.unwrap();
        let e = store.create_key(Some("bk"), &custom).await.unwrap_err();
        assert!(
            matches!(e, KeyStoreError::AlreadyExists { ref branch_key_id, .. } if branch_key_id == "bk"),
            "{e}"
        );
        let e = store.describe("nope").await.unwrap_err();
        assert!(matches!(e, KeyStoreError::NotFound { .. }), "{e}");
        let e = store.branch_key_version(&id, VERSION).await.unwrap_err();
        assert!(matches!(e, KeyStoreError::NotFound { .. }), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_rotations_conflict_on_the_active_item() {
        let fake = FaultyDynamo::new(FakeDynamo::new());
        let store = store_over(fake);
        store.create_key_store().await.unwrap();
        let id = store.create_key(None, &BTreeMap::new()).await.unwrap();
        // Both rotations read the same active item before either writes.
        store
            .ddb
            .set_latency(Op::TransactWrite, std::time::Duration::from_millis(10));
        let (a, b) = tokio::join!(store.version_key(&id), store.version_key(&id));
        let (won, lost) = if a.is_ok() { (a, b) } else { (b, a) };
        let won = won.unwrap();
        let lost = lost.unwrap_err();
        assert!(matches!(lost, KeyStoreError::ConcurrentRotation { .. }), "{lost}");
        let active = store.active_branch_key_consistent(&id).await.unwrap();
        assert_eq!(uuid::Uuid::from_bytes(active.version).to_string(), won);
        // Exactly one new version was written: active, beacon, two versions.
        assert_eq!(store.describe(&id).await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn throttling_is_transient_and_reads_as_kms_throttled() {
        let fake = FaultyDynamo::new(FakeDynamo::new());
        let store = store_over(fake);
        store.create_key_store().await.unwrap();
        let id = store.create_key(None, &BTreeMap::new()).await.unwrap();
        store.ddb.fail_next(Op::GetItem, ErrorKind::Throttled, 1);
        let e = store.active_branch_key(&id).await.unwrap_err();
        assert!(
            matches!(e, KeyStoreError::Dynamo { operation: "GetItem", transient: true, ref table, .. } if table == "Keys"),
            "{e}"
        );
        assert_eq!(
            ddbguard_dbe::KeyringError::from(e).verdict(),
            ddbguard_dbe::Verdict::KmsThrottled
        );
        // A throttled transaction is transient too, and writes nothing.
        store.ddb.fail_next(Op::TransactWrite, ErrorKind::Throttled, 1);
        let e = store.version_key(&id).await.unwrap_err();
        assert!(matches!(e, KeyStoreError::Dynamo { transient: true, .. }), "{e}");
        assert_eq!(store.describe(&id).await.unwrap().len(), 3);
        // The next call goes through.
        store.active_branch_key(&id).await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_table_is_a_named_dynamodb_error() {
        let store = store_over(FakeDynamo::new());
        let e = store.active_branch_key("bk").await.unwrap_err();
        assert!(
            matches!(
                e,
                KeyStoreError::Dynamo { operation: "GetItem", transient: false, ref table, ref message }
                    if table == "Keys" && message.starts_with("ResourceNotFoundException")
            ),
            "{e}"
        );
        assert_eq!(e.kind(), "dynamodb");
        assert!(e.to_string().contains("key store table Keys"), "{e}");
        let e = store.create_key(None, &BTreeMap::new()).await.unwrap_err();
        assert!(
            matches!(
                e,
                KeyStoreError::Dynamo {
                    operation: "TransactWriteItems",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn items_hold_the_context_without_the_table_name() {
        let ecs = version_contexts(
            "bk",
            "83eec007-5659-4554-bf11-699b90f41ac6",
            "t",
            "Logical",
            "arn:aws:kms:us-east-1:111122223333:key/mrk-1",
            &BTreeMap::new(),
        );
        let it = item(&ecs.active, vec![1, 2]);
        assert!(!it.contains_key("tablename"));
        assert_eq!(it["hierarchy-version"], AttributeValue::N("1".into()));
        assert_eq!(it["type"], AttributeValue::S(BRANCH_ACTIVE.into()));
        assert_eq!(
            it["version"],
            AttributeValue::S("branch:version:83eec007-5659-4554-bf11-699b90f41ac6".into())
        );
        assert_eq!(it["enc"], AttributeValue::B(Blob::new(vec![1, 2])));
        assert_eq!(it.len(), 7);
    }
}
