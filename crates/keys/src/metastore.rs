//! The legacy DynamoDB Encryption Client's most-recent provider over its metastore, with versions fetched as
//! items name them.
//!
//! The metastore is a DynamoDB table (partition key `N`, the material name, S; sort key `V`, the version, N)
//! whose records are themselves legacy items, encrypted and signed by the metastore's own materials provider
//! (usually the direct KMS provider): `N` and `V` sign-only, everything else (`t`, `enc`, `encAlg`, `int`,
//! `intAlg`) encrypted and signed. Each record holds one version's AES wrapping key and HMAC signing key.
//! Writers create versions as they rotate, so a reader cannot know them up front: an item's `amzn-ddb-meta-id`
//! (`name#version`) names its version, which is read with a consistent `GetItem` from the metastore table in the
//! local region (a global table under an MRK serves every region), decrypted and verified with the metastore's
//! provider, and kept.
//!
//! # Cache
//!
//! A version's keys never change (the clients create a version once, conditionally), so a loaded version is kept
//! without a TTL; the cache is bounded in entries and evicts the least recently used. Concurrent misses for one
//! version share one load. A failed load answers for its version for a short `failure_ttl` (1 s by default) so a
//! burst of items under a version that is not there yet (created in another region, not replicated here) costs
//! one `GetItem`, not one per item; the next caller after that tries again. The cache is the branch key
//! cache's (`crate::load_cache`): failures are evicted before loaded versions.
//!
//! # Verdicts
//!
//! - An item naming another material name is `integrity_failed`: the meta-id is not signed, and no key of this
//!   metastore could verify it.
//! - A version missing from the local metastore is `key_unavailable` (`not_found`), not `integrity_failed`: it
//!   is what a version created in another region looks like until it replicates.
//! - A record that does not verify or decrypt keeps the verdict of its own failure (`integrity_failed` for a
//!   tampered record, `key_unavailable` for a refused KMS key); a record that verifies but is not a version
//!   record is `key_unavailable`. Every such error names the metastore table and the version
//!   ([`DdbecError::Metastore`]).
//! - DynamoDB throttling (or a transient failure) beyond the SDK's retries is `kms_throttled`, the verdict of
//!   keys that could not be fetched for rate: the item is checked again later.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ddbguard_dbe::{KeyUnavailableReason, KeyringError};
use ddbguard_ddb::{AttributeValue as TableValue, DdbError, DynamoApi, ErrorKind, ScalarType, SdkDynamo};
use ddbguard_ddbec::{
    DdbecError, METASTORE_PARTITION_KEY, METASTORE_SORT_KEY, MaterialsProvider, MostRecentProvider, ProviderContext,
    ProviderFuture, WrappedProvider, decrypt_item, keys,
};

use crate::load_cache::LoadCache;

/// Why the metastore table cannot serve as one (the startup check, [`MetaStoreProvider::check`]).
#[derive(Debug, thiserror::Error)]
pub enum MetaStoreCheckError {
    /// No such table in this region.
    #[error(
        "metastore table {table:?} not found in this region: the verifier reads it in its own region (make the \
         metastore a global table beside the data table, or check the name)"
    )]
    NotFound {
        /// The configured table.
        table: String,
    },
    /// DescribeTable failed otherwise (access denied, throttling beyond the retries, …).
    #[error("metastore table {table:?}: {source}")]
    Describe {
        /// The configured table.
        table: String,
        /// The failure.
        source: DdbError,
    },
    /// Another key schema than the legacy clients' metastore.
    #[error("metastore table {table:?} has the key {actual}; a metastore's is N (string) HASH, V (number) RANGE")]
    KeySchema {
        /// The configured table.
        table: String,
        /// The table's key, as `name (type) HASH[, name (type) RANGE]`.
        actual: String,
    },
}

/// Bounds of the version cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaStoreCacheSettings {
    /// At most this many versions are held (each two keys of 32 bytes plus bookkeeping); the least recently used
    /// is evicted first.
    pub max_versions: usize,
    /// How long a failed load answers for its version before the next caller loads again.
    pub failure_ttl: Duration,
}

impl Default for MetaStoreCacheSettings {
    fn default() -> Self {
        MetaStoreCacheSettings {
            max_versions: 1000,
            failure_ttl: Duration::from_secs(1),
        }
    }
}

/// The most-recent provider reading its versions from a metastore table as items name them.
///
/// Generic over the DynamoDB implementation so that tests run it over `ddbguard_ddb::FakeDynamo`; production
/// code uses the default, [`SdkDynamo`], on the local region's client.
pub struct MetaStoreProvider<D = SdkDynamo> {
    ddb: D,
    table: String,
    material_name: String,
    record_provider: Arc<dyn MaterialsProvider>,
    cache: LoadCache<u64, WrappedProvider, DdbecError>,
}

impl<D> fmt::Debug for MetaStoreProvider<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaStoreProvider")
            .field("table", &self.table)
            .field("material_name", &self.material_name)
            .field("record_provider", &self.record_provider)
            .field("cached_versions", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl<D: DynamoApi> MetaStoreProvider<D> {
    /// A provider for the versions of `material_name` in metastore `table`, read through `ddb` (the local
    /// region's client), whose records are decrypted and verified by `record_provider` (the metastore's own
    /// provider, e.g. a [`crate::kms::DirectKmsProvider`]).
    pub fn new(
        ddb: D,
        table: impl Into<String>,
        material_name: impl Into<String>,
        record_provider: Arc<dyn MaterialsProvider>,
        cache: MetaStoreCacheSettings,
    ) -> MetaStoreProvider<D> {
        MetaStoreProvider {
            ddb,
            table: table.into(),
            material_name: material_name.into(),
            record_provider,
            // Versions never change: no TTL, only the bound.
            cache: LoadCache::new("metastore", None, cache.failure_ttl, cache.max_versions),
        }
    }

    /// The DynamoDB client (tests reach a fake's counters through it).
    pub fn dynamo(&self) -> &D {
        &self.ddb
    }

    /// Versions loaded from the metastore (cache misses), failed loads included.
    pub fn loads(&self) -> u64 {
        self.cache.loads()
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.cache.hits()
    }

    /// Versions held (loaded, loading, or recently failed).
    pub fn cached_versions(&self) -> usize {
        self.cache.len()
    }

    /// Checks that the metastore table exists in this region with the metastore's key schema (`N` string HASH, `V`
    /// number RANGE): run at startup, so that a mistyped table name or a missing permission stops the command
    /// with its reason instead of making every legacy item `key_unavailable`.
    pub async fn check(&self) -> Result<(), MetaStoreCheckError> {
        let description = self.ddb.describe_table(&self.table).await.map_err(|source| {
            if source.kind == ErrorKind::NotFound {
                MetaStoreCheckError::NotFound {
                    table: self.table.clone(),
                }
            } else {
                MetaStoreCheckError::Describe {
                    table: self.table.clone(),
                    source,
                }
            }
        })?;
        let key = &description.key_schema;
        let expected = key.hash.name == METASTORE_PARTITION_KEY
            && key.hash.kind == ScalarType::S
            && key
                .range
                .as_ref()
                .is_some_and(|r| r.name == METASTORE_SORT_KEY && r.kind == ScalarType::N);
        if !expected {
            let attribute = |a: &ddbguard_ddb::KeyAttribute, role: &str| format!("{} ({:?}) {role}", a.name, a.kind);
            let mut actual = attribute(&key.hash, "HASH");
            if let Some(range) = &key.range {
                actual.push_str(", ");
                actual.push_str(&attribute(range, "RANGE"));
            }
            return Err(MetaStoreCheckError::KeySchema {
                table: self.table.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Reads, decrypts and verifies one version's record.
    async fn load(&self, version: u64) -> Result<WrappedProvider, DdbecError> {
        let key = HashMap::from([
            (
                METASTORE_PARTITION_KEY.to_owned(),
                TableValue::S(self.material_name.clone()),
            ),
            (METASTORE_SORT_KEY.to_owned(), TableValue::N(version.to_string())),
        ]);
        let out = self
            .ddb
            .get_item(&self.table, key, true)
            .await
            .map_err(|e| DdbecError::Provider(dynamo_error(e)))?;
        let Some(stored) = out.item else {
            return Err(DdbecError::Provider(KeyringError::KeyUnavailable {
                reason: KeyUnavailableReason::NotFound,
                key: format!("{}#{version}", self.material_name),
                message: format!(
                    "metastore table {} in this region has no such version (not created, or not replicated here \
                     yet)",
                    self.table
                ),
            }));
        };
        let record = record_item(&stored)?;
        let plain = decrypt_item(
            MostRecentProvider::record_table(&self.table),
            &record,
            &MostRecentProvider::record_actions(),
            self.record_provider.as_ref(),
        )
        .await?;
        MostRecentProvider::version_from_record(&plain.item)
    }
}

/// A failed `GetItem`: throttling and transient failures are worth trying again later (the SDK has retried
/// already); anything else (no such table, access denied) makes every item under the metastore unverifiable.
fn dynamo_error(e: DdbError) -> KeyringError {
    if e.kind.is_retryable() {
        KeyringError::Throttled {
            key: e.table.clone(),
            message: e.to_string(),
        }
    } else {
        KeyringError::Other { message: e.to_string() }
    }
}

/// A stored record in the item model: its attributes are strings (`N`), numbers (`V`) and binaries (the
/// encrypted ones and the reserved attributes); anything else is not a metastore record.
fn record_item(stored: &HashMap<String, TableValue>) -> Result<ddbguard_dbe::Item, DdbecError> {
    use ddbguard_dbe::AttributeValue as V;
    stored
        .iter()
        .map(|(name, value)| {
            let value = match value {
                TableValue::S(s) => V::S(s.clone()),
                TableValue::N(n) => V::N(n.clone()),
                TableValue::B(b) => V::B(b.clone().into_inner()),
                _ => {
                    return Err(DdbecError::InvalidKey {
                        what: "metastore record holds an attribute that is not a string, number or binary",
                    });
                }
            };
            Ok((name.clone(), value))
        })
        .collect()
}

impl<D: DynamoApi> MaterialsProvider for MetaStoreProvider<D> {
    fn decryption_materials<'a>(&'a self, ctx: &'a ProviderContext<'a>) -> ProviderFuture<'a> {
        Box::pin(async move {
            let (name, version) = MostRecentProvider::meta_id(ctx.description)?;
            // The entry is not signed: an item naming another material is treated as tampered, not as a key to
            // fetch (no key of this metastore could verify it).
            if name != self.material_name {
                return Err(DdbecError::AlgorithmMismatch {
                    field: keys::META_ID,
                    what: "names another material than the configured one",
                });
            }
            let (provider, _) = self
                .cache
                .get_or_load(version, || self.load(version))
                .await
                .map_err(|source| DdbecError::Metastore {
                    table: self.table.clone(),
                    meta_id: format!("{name}#{version}"),
                    source: Box::new(source),
                })?;
            provider.materials(ctx.description)
        })
    }
}

#[cfg(test)]
mod tests {
    use ddbguard_dbe::{AttributeValue, Item, Reason, Verdict};
    use ddbguard_ddb::{ErrorKind, FakeDynamo, FaultyDynamo, KeyAttribute, KeySchema, Op, ScalarType, TableSpec};
    use ddbguard_ddbec::fake::{direct_kms_context, seal_direct_kms, seal_most_recent};
    use ddbguard_ddbec::{AttributeActions, LegacyAction, TableContext};

    use super::*;
    use crate::kms::fake::{FakeKeyState, FakeKmsWorld};
    use crate::kms::{DirectKmsProvider, KmsApi};

    const MRK_E1: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";
    const MRK_AP: &str = "arn:aws:kms:ap-southeast-2:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";
    const META: &str = "meta";
    const MATERIAL: &str = "orders-material";

    const TABLE: TableContext<'static> = TableContext {
        table_name: "orders",
        partition_key: Some("pk"),
        sort_key: None,
    };

    fn actions() -> AttributeActions {
        AttributeActions::new(LegacyAction::EncryptAndSign).with_key_attributes(["pk"])
    }

    fn plain(n: u32) -> Item {
        Item::from([
            ("pk".to_owned(), AttributeValue::S(format!("order-{n}"))),
            ("card".to_owned(), AttributeValue::S("4111-1111".into())),
        ])
    }

    /// A version's keys: AES wrapping key and HMAC key, distinct per version.
    fn version_keys(version: u64) -> ([u8; 32], [u8; 32]) {
        ([version as u8; 32], [0x80 | version as u8; 32])
    }

    struct World {
        kms: Arc<FakeKmsWorld>,
        provider: MetaStoreProvider<FaultyDynamo<FakeDynamo>>,
    }

    fn world(settings: MetaStoreCacheSettings) -> World {
        let kms = FakeKmsWorld::new();
        kms.create_key(MRK_E1);
        kms.create_key(MRK_AP);
        let ddb = FakeDynamo::new();
        ddb.add_table(TableSpec::on_demand(
            META,
            KeySchema {
                hash: KeyAttribute::new(METASTORE_PARTITION_KEY, ScalarType::S),
                range: Some(KeyAttribute::new(METASTORE_SORT_KEY, ScalarType::N)),
            },
        ));
        // The verifier's side: ap-southeast-2, the metastore's records under the MRK's replica there.
        let record_provider = DirectKmsProvider::new(MRK_E1, Arc::new(kms.client("ap-southeast-2")), None).unwrap();
        let provider = MetaStoreProvider::new(
            FaultyDynamo::new(ddb),
            META,
            MATERIAL,
            Arc::new(record_provider),
            settings,
        );
        World { kms, provider }
    }

    impl World {
        fn ddb(&self) -> &FaultyDynamo<FakeDynamo> {
            self.provider.dynamo()
        }

        /// Writes version `version`'s record as the clients' metastore does in us-east-1 (the direct KMS
        /// provider under the MRK), with `t` as given.
        async fn create_version_typed(&self, version: u64, t: &str) {
            let (enc, int) = version_keys(version);
            let record = Item::from([
                ("N".to_owned(), AttributeValue::S(MATERIAL.into())),
                ("V".to_owned(), AttributeValue::N(version.to_string())),
                ("t".to_owned(), AttributeValue::S(t.into())),
                ("encAlg".to_owned(), AttributeValue::S("AES".into())),
                ("enc".to_owned(), AttributeValue::B(enc.to_vec())),
                ("intAlg".to_owned(), AttributeValue::S("HmacSHA256".into())),
                ("int".to_owned(), AttributeValue::B(int.to_vec())),
            ]);
            let table = MostRecentProvider::record_table(META);
            let ec = direct_kms_context(table, &record).unwrap();
            let dk = self
                .kms
                .client("us-east-1")
                .generate_data_key(MRK_E1, 32, &ec)
                .await
                .unwrap();
            let sealed = seal_direct_kms(
                table,
                &record,
                &MostRecentProvider::record_actions(),
                &dk.plaintext,
                &dk.ciphertext,
            )
            .unwrap();
            self.ddb().inner().put_raw(META, to_table(&sealed)).unwrap();
        }

        async fn create_version(&self, version: u64) {
            self.create_version_typed(version, "0").await;
        }

        async fn verify(&self, item: &Item) -> Result<Item, DdbecError> {
            decrypt_item(TABLE, item, &actions(), &self.provider)
                .await
                .map(|d| d.item)
        }

        fn get_items(&self) -> u64 {
            self.ddb().calls(Op::GetItem)
        }
    }

    fn to_table(item: &Item) -> ddbguard_ddb::Item {
        item.iter()
            .map(|(k, v)| {
                let v = match v {
                    AttributeValue::S(s) => TableValue::S(s.clone()),
                    AttributeValue::N(n) => TableValue::N(n.clone()),
                    AttributeValue::B(b) => TableValue::B(b.clone().into()),
                    other => panic!("unexpected record value {other:?}"),
                };
                (k.clone(), v)
            })
            .collect()
    }

    fn item_under(version: u64, n: u32) -> Item {
        item_under_material(MATERIAL, version, n)
    }

    fn item_under_material(material: &str, version: u64, n: u32) -> Item {
        let (enc, int) = version_keys(version);
        seal_most_recent("orders", &plain(n), &actions(), material, version, &enc, &int).unwrap()
    }

    #[tokio::test]
    async fn versions_are_fetched_as_items_name_them_and_once() {
        let w = world(MetaStoreCacheSettings::default());
        w.create_version(1).await;
        for n in 0..3 {
            assert_eq!(w.verify(&item_under(1, n)).await.unwrap(), plain(n));
        }
        assert_eq!((w.get_items(), w.provider.loads(), w.provider.hits()), (1, 1, 2));
        // A writer rotates: the new version is read when the first item under it arrives, without a restart.
        w.create_version(2).await;
        for n in 3..5 {
            assert_eq!(w.verify(&item_under(2, n)).await.unwrap(), plain(n));
        }
        assert_eq!(w.verify(&item_under(1, 9)).await.unwrap(), plain(9));
        assert_eq!(w.get_items(), 2);
        assert_eq!(w.provider.cached_versions(), 2);
    }

    #[tokio::test]
    async fn concurrent_items_under_a_new_version_share_one_load() {
        let w = world(MetaStoreCacheSettings::default());
        w.create_version(1).await;
        w.ddb().set_latency(Op::GetItem, Duration::from_millis(20));
        let items: Vec<Item> = (0..8).map(|n| item_under(1, n)).collect();
        let results = futures::future::join_all(items.iter().map(|i| w.verify(i))).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(w.get_items(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_version_not_in_the_local_metastore_is_key_unavailable_until_it_arrives() {
        let w = world(MetaStoreCacheSettings::default());
        let item = item_under(7, 1);
        let e = w.verify(&item).await.unwrap_err();
        assert_eq!(e.verdict(), Verdict::KeyUnavailable, "{e}");
        assert_eq!(e.reason(), Reason::NotFound);
        let message = e.to_string();
        assert!(
            message.contains("metastore table meta") && message.contains("orders-material#7"),
            "{message}"
        );
        // Within the failure TTL the answer is kept: one GetItem for a burst of items.
        assert!(w.verify(&item_under(7, 2)).await.is_err());
        assert_eq!(w.get_items(), 1);
        // The version replicates; after the failure TTL the next item loads it.
        w.create_version(7).await;
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(w.verify(&item).await.unwrap(), plain(1));
        assert_eq!(w.get_items(), 2);
    }

    #[tokio::test]
    async fn an_item_naming_another_material_is_integrity_failed_without_a_read() {
        let w = world(MetaStoreCacheSettings::default());
        w.create_version(1).await;
        let e = w.verify(&item_under_material("other", 1, 1)).await.unwrap_err();
        assert_eq!(e.verdict(), Verdict::IntegrityFailed, "{e}");
        assert_eq!(w.get_items(), 0);
    }

    #[tokio::test]
    async fn an_item_under_the_wrong_version_keys_is_integrity_failed() {
        let w = world(MetaStoreCacheSettings::default());
        w.create_version(1).await;
        w.create_version(2).await;
        // Sealed with version 1's keys, but naming version 2.
        let (enc, int) = version_keys(1);
        let item = seal_most_recent("orders", &plain(1), &actions(), MATERIAL, 2, &enc, &int).unwrap();
        let e = w.verify(&item).await.unwrap_err();
        assert_eq!(e.verdict(), Verdict::IntegrityFailed, "{e}");
    }

    #[tokio::test]
    async fn a_tampered_record_is_integrity_failed_and_names_the_metastore() {
        let w = world(MetaStoreCacheSettings::default());
        w.create_version(1).await;
        let mut stored = w.ddb().inner().items(META).remove(0);
        let Some(TableValue::B(enc)) = stored.get("enc") else {
            panic!("enc is binary")
        };
        let mut bytes = enc.clone().into_inner();
        bytes[20] ^= 1;
        stored.insert("enc".into(), TableValue::B(bytes.into()));
        w.ddb().inner().put_raw(META, stored).unwrap();
        let e = w.verify(&item_under(1, 1)).await.unwrap_err();
        assert_eq!(e.verdict(), Verdict::IntegrityFailed, "{e}");
        assert!(matches!(e, DdbecError::Metastore { .. }), "{e:?}");
        assert!(e.to_string().contains("metastore table meta"), "{e}");
    }

    #[tokio::test]
    async fn a_record_of_another_material_type_or_a_disabled_key_is_key_unavailable() {
        let w = world(MetaStoreCacheSettings::default());
        w.create_version_typed(1, "1").await;
        let e = w.verify(&item_under(1, 1)).await.unwrap_err();
        assert_eq!(e.verdict(), Verdict::KeyUnavailable, "{e}");

        let w = world(MetaStoreCacheSettings::default());
        w.create_version(1).await;
        w.kms.set_state(MRK_AP, FakeKeyState::Disabled);
        let e = w.verify(&item_under(1, 1)).await.unwrap_err();
        assert_eq!(
            (e.verdict(), e.reason()),
            (Verdict::KeyUnavailable, Reason::Disabled),
            "{e}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dynamodb_throttling_is_throttled_and_retried_after_the_failure_ttl() {
        let w = world(MetaStoreCacheSettings::default());
        w.create_version(1).await;
        w.ddb().fail_next(Op::GetItem, ErrorKind::Throttled, 1);
        let e = w.verify(&item_under(1, 1)).await.unwrap_err();
        assert_eq!(e.verdict(), Verdict::KmsThrottled, "{e}");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(w.verify(&item_under(1, 1)).await.is_ok());

        // Another failure (no such table, access denied) makes the version's items unverifiable until it heals;
        // version 2 exists, so only the injected fault can fail it.
        w.create_version(2).await;
        w.ddb().fail_next(Op::GetItem, ErrorKind::Other, 1);
        let e = w.verify(&item_under(2, 1)).await.unwrap_err();
        assert_eq!(e.verdict(), Verdict::KeyUnavailable, "{e}");
        assert_ne!(e.reason(), Reason::NotFound, "{e}");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(w.verify(&item_under(2, 1)).await.is_ok());
    }

    #[tokio::test]
    async fn the_cache_holds_at_most_max_versions_evicting_the_least_recently_used() {
        let w = world(MetaStoreCacheSettings {
            max_versions: 2,
            ..MetaStoreCacheSettings::default()
        });
        for v in 1..=3 {
            w.create_version(v).await;
        }
        for v in [1, 2, 1, 3] {
            w.verify(&item_under(v, 1)).await.unwrap();
        }
        // 3 evicted 2 (1 was used more recently).
        assert_eq!((w.get_items(), w.provider.cached_versions()), (3, 2));
        w.verify(&item_under(1, 1)).await.unwrap();
        assert_eq!(w.get_items(), 3);
        w.verify(&item_under(2, 1)).await.unwrap();
        assert_eq!((w.get_items(), w.provider.cached_versions()), (4, 2));
    }

    #[tokio::test]
    async fn the_startup_check_names_a_missing_table_and_a_wrong_key_schema() {
        let w = world(MetaStoreCacheSettings::default());
        w.provider.check().await.unwrap();

        let ddb = Arc::new(FakeDynamo::new());
        let provider = |ddb: Arc<FakeDynamo>, table: &str| {
            let records = DirectKmsProvider::new(MRK_E1, Arc::new(w.kms.client("ap-southeast-2")), None).unwrap();
            MetaStoreProvider::new(
                ddb,
                table,
                MATERIAL,
                Arc::new(records),
                MetaStoreCacheSettings::default(),
            )
        };
        let e = provider(ddb.clone(), "nope").check().await.unwrap_err();
        assert!(matches!(e, MetaStoreCheckError::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("\"nope\" not found in this region"), "{e}");

        ddb.add_table(TableSpec::on_demand(
            "orders",
            KeySchema {
                hash: KeyAttribute::new("pk", ScalarType::S),
                range: None,
            },
        ));
        let e = provider(ddb, "orders").check().await.unwrap_err();
        assert!(
            e.to_string().contains("has the key pk (S) HASH; a metastore's is N"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn items_naming_missing_versions_do_not_evict_loaded_ones() {
        let w = world(MetaStoreCacheSettings {
            max_versions: 3,
            ..MetaStoreCacheSettings::default()
        });
        for v in 1..=2 {
            w.create_version(v).await;
            w.verify(&item_under(v, 1)).await.unwrap();
        }
        // Versions nobody created, named by (unsigned) meta-ids, each failing within the failure TTL.
        for v in 100..120 {
            let e = w.verify(&item_under(v, 1)).await.unwrap_err();
            assert_eq!(e.reason(), Reason::NotFound, "{e}");
        }
        assert!(w.provider.cached_versions() <= 3);
        let reads = w.get_items();
        for v in 1..=2 {
            w.verify(&item_under(v, 1)).await.unwrap();
        }
        assert_eq!(w.get_items(), reads, "the loaded versions were kept");
    }
}
