//! [`DynamoKeyStore`]: the key store's operations over DynamoDB and KMS (`CreateKeyStore`, `CreateKey`,
//! `VersionKey`, `GetActiveBranchKey`, `GetBranchKeyVersion`, and a `describe` for operators).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use aws_sdk_dynamodb::client::Waiters as _;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put, ScalarAttributeType, TableStatus,
    TransactWriteItem,
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
pub struct DynamoKeyStore {
    ddb: aws_sdk_dynamodb::Client,
    table: String,
    logical_name: String,
    configured: KmsArn,
    kms_key_id: String,
    kms: Arc<dyn KmsApi>,
}

impl fmt::Debug for DynamoKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoKeyStore")
            .field("table", &self.table)
            .field("logical_name", &self.logical_name)
            .field("kms_key_id", &self.kms_key_id)
            .finish_non_exhaustive()
    }
}

type Item = HashMap<String, AttributeValue>;

impl DynamoKeyStore {
    /// A store over `table` (logical name `logical_name`, bound into every branch key) whose branch keys are
    /// wrapped under `kms_key_arn`, a key ARN (not an alias). `kms` is the KMS client of the local region; an MRK
    /// is used through its replica there.
    pub fn new(
        ddb: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        logical_name: impl Into<String>,
        kms_key_arn: &str,
        kms: Arc<dyn KmsApi>,
    ) -> Result<DynamoKeyStore, KeyStoreError> {
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

    fn dynamo<E>(&self, operation: &'static str, e: SdkError<E, HttpResponse>) -> KeyStoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = e.code().unwrap_or("").to_owned();
        let status = e.raw_response().map(|r| r.status().as_u16());
        let transient = matches!(e, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_))
            || status.is_some_and(|s| s >= 500)
            || is_transient_code(&code);
        let message = match (e.code(), e.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_owned(),
            _ => {
                let mut s = e.to_string();
                if let Some(src) = std::error::Error::source(&e) {
                    s.push_str(": ");
                    s.push_str(&src.to_string());
                }
                s
            }
        };
        KeyStoreError::Dynamo {
            operation,
            table: self.table.clone(),
            message,
            transient,
        }
    }

    /// `CreateKeyStore`: creates the table (on-demand) if it does not exist and checks the key schema if it
    /// does. Returns whether it was created. Production key stores are usually created by infrastructure code
    /// as a global table; this is for first setups and the local environment.
    pub async fn create_key_store(&self) -> Result<bool, KeyStoreError> {
        match self.ddb.describe_table().table_name(&self.table).send().await {
            Ok(out) => {
                let table = out
                    .table
                    .unwrap_or_else(|| aws_sdk_dynamodb::types::TableDescription::builder().build());
                let schema: Vec<(String, KeyType)> = table
                    .key_schema()
                    .iter()
                    .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
                    .collect();
                let types: HashMap<&str, &ScalarAttributeType> = table
                    .attribute_definitions()
                    .iter()
                    .map(|d| (d.attribute_name(), d.attribute_type()))
                    .collect();
                let ok = schema.len() == 2
                    && schema.contains(&(ATTR_ID.to_owned(), KeyType::Hash))
                    && schema.contains(&(ATTR_TYPE.to_owned(), KeyType::Range))
                    && types.get(ATTR_ID) == Some(&&ScalarAttributeType::S)
                    && types.get(ATTR_TYPE) == Some(&&ScalarAttributeType::S);
                if !ok {
                    return Err(KeyStoreError::BadSchema {
                        table: self.table.clone(),
                        found: format!("{schema:?}"),
                    });
                }
                if table.table_status() != Some(&TableStatus::Active) {
                    self.wait_active().await?;
                }
                Ok(false)
            }
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                let key = |name: &str, t: KeyType| {
                    KeySchemaElement::builder()
                        .attribute_name(name)
                        .key_type(t)
                        .build()
                        .map_err(|e| KeyStoreError::InvalidInput(e.to_string()))
                };
                let def = |name: &str| {
                    AttributeDefinition::builder()
                        .attribute_name(name)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(|e| KeyStoreError::InvalidInput(e.to_string()))
                };
                self.ddb
                    .create_table()
                    .table_name(&self.table)
                    .key_schema(key(ATTR_ID, KeyType::Hash)?)
                    .key_schema(key(ATTR_TYPE, KeyType::Range)?)
                    .attribute_definitions(def(ATTR_ID)?)
                    .attribute_definitions(def(ATTR_TYPE)?)
                    .billing_mode(BillingMode::PayPerRequest)
                    .send()
                    .await
                    .map_err(|e| self.dynamo("CreateTable", e))?;
                self.wait_active().await?;
                Ok(true)
            }
            Err(e) => Err(self.dynamo("DescribeTable", e)),
        }
    }

    /// Waits until the table is ACTIVE: DynamoDB refuses writes to a table that is still being created.
    async fn wait_active(&self) -> Result<(), KeyStoreError> {
        self.ddb
            .wait_until_table_exists()
            .table_name(&self.table)
            .wait(TABLE_ACTIVE_TIMEOUT)
            .await
            .map(drop)
            .map_err(|e| {
                let mut message = e.to_string();
                if let Some(src) = std::error::Error::source(&e) {
                    message.push_str(": ");
                    message.push_str(&src.to_string());
                }
                KeyStoreError::Dynamo {
                    operation: "DescribeTable (waiting for ACTIVE)",
                    table: self.table.clone(),
                    message,
                    transient: false,
                }
            })
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
        let not_exists = "attribute_not_exists(#id)";
        let puts = vec![
            self.put(item(&ecs.decrypt_only, decrypt_only), not_exists, None)?,
            self.put(item(&ecs.active, active), not_exists, None)?,
            self.put(item(&ecs.beacon, beacon.ciphertext), not_exists, None)?,
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
        let puts = vec![
            self.put(item(&ecs.decrypt_only, decrypt_only), "attribute_not_exists(#id)", None)?,
            self.put(
                item(&ecs.active, active),
                "attribute_exists(#id) AND #enc = :old",
                Some(old_enc),
            )?,
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
        puts: Vec<TransactWriteItem>,
        conflict: impl FnOnce() -> KeyStoreError,
    ) -> Result<(), KeyStoreError> {
        let e = match self
            .ddb
            .transact_write_items()
            .set_transact_items(Some(puts))
            .send()
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = e.as_service_error() else {
            return Err(self.dynamo("TransactWriteItems", e));
        };
        let reasons: Vec<&str> = cancelled
            .cancellation_reasons()
            .iter()
            .filter_map(|r| r.code())
            .filter(|c| *c != "None")
            .collect();
        // Without reasons (some endpoints leave them out) a cancelled conditional write is taken as the condition.
        if reasons.is_empty() || reasons.contains(&"ConditionalCheckFailed") {
            return Err(conflict());
        }
        Err(KeyStoreError::Dynamo {
            operation: "TransactWriteItems",
            table: self.table.clone(),
            message: format!("transaction cancelled: {}", reasons.join(", ")),
            transient: reasons.iter().all(|c| is_transient_code(c)),
        })
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
        let mut pages = self
            .ddb
            .query()
            .table_name(&self.table)
            .key_condition_expression("#id = :id")
            .expression_attribute_names("#id", ATTR_ID)
            .expression_attribute_values(":id", AttributeValue::S(branch_key_id.to_owned()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|e| self.dynamo("Query", e))?;
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
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key(ATTR_ID, AttributeValue::S(branch_key_id.to_owned()))
            .key(ATTR_TYPE, AttributeValue::S(item_type.to_owned()))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|e| self.dynamo("GetItem", e))?;
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

    fn put(&self, item: Item, condition: &str, old_enc: Option<Vec<u8>>) -> Result<TransactWriteItem, KeyStoreError> {
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_names("#id", ATTR_ID);
        if let Some(old) = old_enc {
            put = put
                .expression_attribute_names("#enc", ATTR_ENC)
                .expression_attribute_values(":old", AttributeValue::B(Blob::new(old)));
        }
        let put = put.build().map_err(|e| KeyStoreError::InvalidInput(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}

/// How long `CreateKeyStore` waits for a new table to become ACTIVE.
const TABLE_ACTIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Error and cancellation-reason codes that mean "try again later" rather than a finding about the key store.
fn is_transient_code(code: &str) -> bool {
    code.contains("Throttl")
        || matches!(
            code,
            "ProvisionedThroughputExceededException"
                | "ProvisionedThroughputExceeded"
                | "RequestLimitExceeded"
                | "InternalServerError"
                | "ServiceUnavailable"
                | "TransactionConflict"
                | "TransactionConflictException"
                | "TransactionInProgressException"
        )
}

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
