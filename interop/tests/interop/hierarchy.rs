//! Interoperability with the official key store and hierarchical keyring (`aws-db-esdk` 1.3.0's `KeyStore` and
//! `CreateAwsKmsHierarchicalKeyring`), on the local AWS environment (`common::local_aws`: moto with multi-Region
//! keys and global tables). Branch keys are wrapped under a multi-Region key; the official key store is configured
//! with `KmsConfiguration::KmsMrKeyArn`, ddbguard's `DynamoKeyStore` with the same ARN, table and logical name.
//!
//! - A branch key made by the official key store (random id without, or chosen id with custom encryption
//!   context) is read by ddbguard with the same key bytes and version; items written by the official
//!   hierarchical keyring decrypt with ddbguard's `HierarchyKeyring` and the other way round; after the
//!   official `VersionKey`, ddbguard encrypts under the new version and still decrypts the old one.
//! - A branch key made and rotated by ddbguard is read by the official key store (both versions); items
//!   written under either version by either side decrypt on the other.
//! - Cross-region: the key store table is a global table; ddbguard in ap-southeast-2, with the MRK's replica
//!   there, decrypts what the official keyring wrote in us-east-1, and the official keyring in us-east-1 reads
//!   a branch key ddbguard created in ap-southeast-2 and decrypts ddbguard's items.
//! - A tampered hierarchy EDK (wrapped key, salt, version, branch key id) fails on both sides.
//!
//! Items are `fixed_case` in both suites (0x6700, 0x6701) and both record versions (v2 puts a
//! SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT attribute into the context the hierarchy EDK authenticates).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_db_esdk::key_store::client as keystore_client;
use aws_db_esdk::key_store::types::KmsConfiguration;
use aws_db_esdk::key_store::types::key_store_config::KeyStoreConfig;
use aws_db_esdk::material_providers::types::keyring::KeyringRef;
use ddbguard_keys::HierarchyKeyring;
use ddbguard_keys::keystore::{CacheSettings, CachingBranchKeySource, DynamoKeyStore};
use ddbguard_keys::kms::SdkKms;

use super::{Case, fixed_case};
use crate::common::*;
use aws_sdk_dynamodb::types::KeyType;
use ddbguard_e2e::{LocalAws, PRIMARY_REGION, REPLICA_REGION, unique_name};

type R<T> = Result<T, String>;

/// EDK provider id of the hierarchical keyring.
const PROVIDER_ID: &[u8] = b"aws-kms-hierarchy";
/// An EDK's ciphertext is the data key wrapped under the intermediate key (32 bytes and a 16-byte tag), then
/// the keyring's own part: salt (16), IV (12), branch key version (16), wrapped intermediate key (32), tag (16).
const WRAPPED_PDK_LEN: usize = 48;
const KEYRING_PART_LEN: usize = 16 + 12 + 16 + 32 + 16;

/// How long a global table may take to replicate a branch key (the environment's default lag is 200 ms).
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a test body on the shared runtime; an error fails the test with its message.
fn run(body: impl Future<Output = R<()>>) {
    if let Err(e) = runtime().block_on(body) {
        panic!("{e}");
    }
}

fn err<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

/// The items of every suite and record version (with a sort key).
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for ecdsa in [false, true] {
        for v2 in [false, true] {
            cases.push(fixed_case(ecdsa, v2, true));
        }
    }
    cases
}

fn case_name(case: &Case) -> String {
    format!("suite {} v{}", suite_name(case.ecdsa), if case.v2 { 2 } else { 1 })
}

/// A 16-byte UUID as text.
fn uuid_text(b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

// ---------------------------------------------------------------------------------------------
// The key store on both sides

/// One key store: its table, logical name and the multi-Region key that wraps its branch keys.
struct Store {
    env: &'static LocalAws,
    /// KMS and DynamoDB clients of [`PRIMARY_REGION`] and [`REPLICA_REGION`], in that order.
    clients: [(aws_sdk_kms::Client, aws_sdk_dynamodb::Client); 2],
    table: String,
    logical: String,
    primary_arn: String,
    replica_arn: String,
}

impl Store {
    async fn new(what: &str) -> R<Store> {
        let env = LocalAws::shared();
        let mrk = env
            .create_replicated_mrk(&format!("interop key store {what}"))
            .await
            .map_err(|e| format!("{e:#}"))?;
        let replica_arn = mrk.replica_arn.ok_or("the key store MRK has no replica")?;
        let clients = [
            (env.kms(PRIMARY_REGION).await, env.dynamodb(PRIMARY_REGION).await),
            (env.kms(REPLICA_REGION).await, env.dynamodb(REPLICA_REGION).await),
        ];
        Ok(Store {
            env,
            clients,
            table: unique_name("keystore", what),
            logical: format!("ddbguard-interop-{what}"),
            primary_arn: mrk.primary_arn,
            replica_arn,
        })
    }

    /// Makes the key store table a global table (`branch-key-id` HASH, `type` RANGE) replicated to
    /// [`REPLICA_REGION`]; without it, the table is made by `CreateKeyStore` in one region.
    async fn make_global_table(&self) -> R<()> {
        self.env
            .create_global_table_keyed(
                &self.table,
                &[("branch-key-id", KeyType::Hash), ("type", KeyType::Range)],
            )
            .await
            .map_err(|e| format!("{e:#}"))
    }

    fn clients(&self, region: &str) -> &(aws_sdk_kms::Client, aws_sdk_dynamodb::Client) {
        &self.clients[usize::from(region != PRIMARY_REGION)]
    }

    /// The MRK's ARN in `region`: what each region configures.
    fn arn_in(&self, region: &str) -> &str {
        if region == PRIMARY_REGION {
            &self.primary_arn
        } else {
            &self.replica_arn
        }
    }

    /// The official key store in `region` (`KmsMrKeyArn` with the MRK's ARN there).
    fn official(&self, region: &str) -> R<keystore_client::Client> {
        let config = KeyStoreConfig::builder()
            .kms_client(self.clients(region).0.clone())
            .ddb_client(self.clients(region).1.clone())
            .ddb_table_name(&self.table)
            .logical_key_store_name(&self.logical)
            .kms_configuration(KmsConfiguration::KmsMrKeyArn(self.arn_in(region).to_owned()))
            .build()
            .map_err(err("official KeyStoreConfig"))?;
        keystore_client::Client::from_conf(config).map_err(err("official key store"))
    }

    /// ddbguard's key store in `region`.
    fn ours(&self, region: &str) -> R<DynamoKeyStore> {
        let (kms, dynamodb) = self.clients(region);
        let kms = Arc::new(SdkKms::new(kms.clone(), region));
        DynamoKeyStore::new(dynamodb.clone(), &self.table, &self.logical, self.arn_in(region), kms)
            .map_err(err("ddbguard key store"))
    }

    /// Both keyrings for one branch key in `region`, each with a fresh cache.
    async fn keyrings(&self, region: &str, branch_key_id: &str) -> R<Keyrings> {
        let official = official::mpl()?
            .create_aws_kms_hierarchical_keyring()
            .branch_key_id(branch_key_id)
            .key_store(self.official(region)?)
            .ttl_seconds(600)
            .send()
            .await
            .map_err(err("official CreateAwsKmsHierarchicalKeyring"))?;
        let source = Arc::new(CachingBranchKeySource::new(
            self.ours(region)?,
            CacheSettings::default(),
        ));
        Ok(Keyrings {
            official,
            ours: HierarchyKeyring::new(branch_key_id, source),
            region: region.to_owned(),
        })
    }
}

async fn official_create_key(store: &keystore_client::Client, id: Option<&str>, context: &[(&str, &str)]) -> R<String> {
    let context: HashMap<String, String> = context
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let out = store
        .create_key()
        .set_branch_key_identifier(id.map(str::to_owned))
        .set_encryption_context((!context.is_empty()).then_some(context))
        .send()
        .await
        .map_err(err("official CreateKey"))?;
    out.branch_key_identifier
        .ok_or_else(|| "official CreateKey returned no id".to_owned())
}

/// The official key store's active version of a branch key: (version, key bytes).
async fn official_active(store: &keystore_client::Client, id: &str) -> R<(String, Vec<u8>)> {
    let out = store
        .get_active_branch_key()
        .branch_key_identifier(id)
        .send()
        .await
        .map_err(err(format!("official GetActiveBranchKey {id}")))?;
    let m = out.branch_key_materials.ok_or("no branch key materials")?;
    Ok((
        m.branch_key_version.ok_or("no version")?,
        m.branch_key.ok_or("no key")?.into_inner(),
    ))
}

/// One version of a branch key through the official key store: its key bytes.
async fn official_version(store: &keystore_client::Client, id: &str, version: &str) -> R<Vec<u8>> {
    let out = store
        .get_branch_key_version()
        .branch_key_identifier(id)
        .branch_key_version(version)
        .send()
        .await
        .map_err(err(format!("official GetBranchKeyVersion {id} {version}")))?;
    let m = out.branch_key_materials.ok_or("no branch key materials")?;
    if m.branch_key_version.as_deref() != Some(version) {
        return Err(format!(
            "official GetBranchKeyVersion {version} answered version {:?}",
            m.branch_key_version
        ));
    }
    Ok(m.branch_key.ok_or("no key")?.into_inner())
}

/// Both key stores see the same active version of `id` with the same key bytes; returns the version.
async fn same_active(official: &keystore_client::Client, ours: &DynamoKeyStore, id: &str) -> R<String> {
    let (version, key) = official_active(official, id).await?;
    let mine = ours
        .active_branch_key(id)
        .await
        .map_err(err(format!("ddbguard active_branch_key {id}")))?;
    if uuid_text(&mine.version) != version {
        return Err(format!(
            "active version of {id}: ddbguard {}, official {version}",
            uuid_text(&mine.version)
        ));
    }
    if mine.key.expose()[..] != key[..] {
        return Err(format!("active branch key {id} {version}: the key bytes differ"));
    }
    Ok(version)
}

/// Both key stores give the same key bytes for one version of `id`.
async fn same_version(official: &keystore_client::Client, ours: &DynamoKeyStore, id: &str, version: &str) -> R<()> {
    let key = official_version(official, id, version).await?;
    let mine = ours
        .branch_key_version(id, version)
        .await
        .map_err(err(format!("ddbguard branch_key_version {id} {version}")))?;
    if uuid_text(&mine.version) != version || mine.key.expose()[..] != key[..] {
        return Err(format!(
            "branch key {id} version {version} differs between the two key stores"
        ));
    }
    Ok(())
}

/// Polls until `ours` (a store in another region than the writer) sees every item of `id`.
async fn wait_replicated(ours: &DynamoKeyStore, id: &str, items: usize) -> R<()> {
    let deadline = Instant::now() + REPLICATION_TIMEOUT;
    loop {
        match ours.describe(id).await {
            Ok(found) if found.len() >= items => return Ok(()),
            other if Instant::now() > deadline => {
                return Err(format!(
                    "branch key {id} did not replicate to table {} within {REPLICATION_TIMEOUT:?}: {other:?}",
                    ours.table()
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Items

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Official,
    Ddbguard,
}

/// The official and ddbguard hierarchical keyrings for one branch key in one region.
struct Keyrings {
    official: KeyringRef,
    ours: HierarchyKeyring,
    region: String,
}

/// Items encrypted by one side: (case, encrypted item).
struct Written {
    by: Side,
    what: String,
    items: Vec<(Case, Item)>,
}

impl Keyrings {
    async fn encrypt(&self, by: Side, case: &Case) -> R<Item> {
        let (cfg, item) = (case.config(), case.item());
        match by {
            Side::Official => {
                let client = official::client_with_keyring(&cfg, self.official.clone())?;
                official::encrypt_with(&client, &item).await
            }
            Side::Ddbguard => ddbguard_dbe::encrypt_item(&cfg, &self.ours, &item)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    async fn decrypt(&self, by: Side, case: &Case, item: &Item) -> R<Item> {
        let cfg = case.config();
        match by {
            Side::Official => {
                let client = official::client_with_keyring(&cfg, self.official.clone())?;
                official::decrypt_with(&client, item).await
            }
            Side::Ddbguard => ddbguard_dbe::decrypt_item(&cfg, &self.ours, item)
                .await
                .map(|d| d.item)
                .map_err(|e| format!("{} ({e})", ours::verdict(&e))),
        }
    }

    /// Every case encrypted by `by`; checks each hierarchy EDK names `branch_key_id` and `version`.
    async fn write(&self, by: Side, branch_key_id: &str, version: &str) -> R<Written> {
        let what = format!("{by:?} in {} under {branch_key_id} {version}", self.region);
        let mut items = Vec::new();
        for case in cases() {
            let item = self
                .encrypt(by, &case)
                .await
                .map_err(err(format!("{what}: encrypt {}", case_name(&case))))?;
            let (info, ct) = hierarchy_edk(&item)?;
            let head = binary(&item, HEADER).ok_or("no header")?;
            let found_version = uuid_text(&head[ct.start + 28..ct.start + 44]);
            if head[info] != *branch_key_id.as_bytes() || found_version != version {
                return Err(format!(
                    "{what}: {} has an EDK for version {found_version}",
                    case_name(&case)
                ));
            }
            items.push((case, item));
        }
        Ok(Written { by, what, items })
    }

    /// Every item of `written` decrypts on `by` to its plaintext.
    async fn read(&self, by: Side, written: &Written) -> R<()> {
        for (case, item) in &written.items {
            let plain = self.decrypt(by, case, item).await.map_err(err(format!(
                "{by:?} in {} decrypting items written by {}: {}",
                self.region,
                written.what,
                case_name(case)
            )))?;
            if canon_item(&plain) != canon_item(&case.item()) {
                return Err(format!(
                    "{by:?} in {} decrypting items written by {}: {}: wrong plaintext",
                    self.region,
                    written.what,
                    case_name(case)
                ));
            }
        }
        Ok(())
    }

    /// Both sides decrypt `written` (the writer's own side too, as a control).
    async fn read_both(&self, written: &Written) -> R<()> {
        let other = match written.by {
            Side::Official => Side::Ddbguard,
            Side::Ddbguard => Side::Official,
        };
        self.read(other, written).await?;
        self.read(written.by, written).await
    }
}

/// The byte ranges of the provider info (branch key id) and of the keyring's part of the ciphertext (after the
/// wrapped data key) of the only EDK in an item's header, which must be a hierarchy EDK.
fn hierarchy_edk(item: &Item) -> R<(Range<usize>, Range<usize>)> {
    let head = binary(item, HEADER).ok_or("no header")?;
    let region = edk_region(head).ok_or("no EDK region")?;
    if head[region.start - 1] != 1 {
        return Err(format!("{} EDKs, expected 1", head[region.start - 1]));
    }
    let mut at = region.start;
    let mut field = || -> R<Range<usize>> {
        let len = usize::from(u16::from_be_bytes(
            head.get(at..at + 2).ok_or("EDK truncated")?.try_into().unwrap(),
        ));
        let r = at + 2..at + 2 + len;
        at = r.end;
        Ok(r)
    };
    let provider = field()?;
    let info = field()?;
    let ct = field()?;
    if head[provider.clone()] != *PROVIDER_ID || ct.len() != WRAPPED_PDK_LEN + KEYRING_PART_LEN || ct.end != region.end
    {
        return Err(format!(
            "not one hierarchy EDK: provider {:?}, ciphertext {ct:?}, EDKs {region:?}",
            String::from_utf8_lossy(&head[provider])
        ));
    }
    Ok((info, ct.start + WRAPPED_PDK_LEN..ct.end))
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Branch keys made (and versioned) by the official key store serve ddbguard's keyring, in both directions.
#[test]
fn official_branch_keys_serve_both_keyrings() {
    run(async {
        let store = Store::new("official").await?;
        let official = store.official(PRIMARY_REGION)?;
        let ours = store.ours(PRIMARY_REGION)?;
        official
            .create_key_store()
            .send()
            .await
            .map_err(err("official CreateKeyStore"))?;
        // The table the official key store made is a key store to ddbguard too.
        ours.create_key_store()
            .await
            .map_err(err("ddbguard create_key_store on the official's table"))?;

        let random_id = official_create_key(&official, None, &[]).await?;
        let chosen_id = unique_name("tenant", "interop");
        official_create_key(
            &official,
            Some(&chosen_id),
            &[("department", "admin"), ("tenant", "t-1")],
        )
        .await?;

        for id in [&random_id, &chosen_id] {
            let version = same_active(&official, &ours, id).await?;
            same_version(&official, &ours, id, &version).await?;
            let described = ours.describe(id).await.map_err(err("ddbguard describe"))?;
            let custom: BTreeMap<String, String> = if *id == chosen_id {
                BTreeMap::from([
                    ("department".to_owned(), "admin".to_owned()),
                    ("tenant".to_owned(), "t-1".to_owned()),
                ])
            } else {
                BTreeMap::new()
            };
            if described.len() != 3 || described.iter().any(|i| i.encryption_context != custom) {
                return Err(format!("ddbguard describe {id}: {described:?}"));
            }

            let keyrings = store.keyrings(PRIMARY_REGION, id).await?;
            let by_official = keyrings.write(Side::Official, id, &version).await?;
            let by_ours = keyrings.write(Side::Ddbguard, id, &version).await?;
            keyrings.read_both(&by_official).await?;
            keyrings.read_both(&by_ours).await?;
        }

        // The official VersionKey: ddbguard encrypts under the new version, and still decrypts the old one.
        let old_version = same_active(&official, &ours, &chosen_id).await?;
        let before = store.keyrings(PRIMARY_REGION, &chosen_id).await?;
        let old_items = before.write(Side::Official, &chosen_id, &old_version).await?;
        official
            .version_key()
            .branch_key_identifier(&chosen_id)
            .send()
            .await
            .map_err(err("official VersionKey"))?;
        let new_version = same_active(&official, &ours, &chosen_id).await?;
        if new_version == old_version {
            return Err("official VersionKey did not change the active version".into());
        }
        same_version(&official, &ours, &chosen_id, &old_version).await?;
        let after = store.keyrings(PRIMARY_REGION, &chosen_id).await?;
        let by_official = after.write(Side::Official, &chosen_id, &new_version).await?;
        let by_ours = after.write(Side::Ddbguard, &chosen_id, &new_version).await?;
        after.read_both(&by_official).await?;
        after.read_both(&by_ours).await?;
        after.read_both(&old_items).await
    });
}

/// Branch keys made and rotated by ddbguard serve the official keyring, in both directions.
#[test]
fn ddbguard_branch_keys_serve_both_keyrings() {
    run(async {
        let store = Store::new("ddbguard").await?;
        let official = store.official(PRIMARY_REGION)?;
        let ours = store.ours(PRIMARY_REGION)?;
        ours.create_key_store()
            .await
            .map_err(err("ddbguard create_key_store"))?;
        // The table ddbguard made is a key store to the official crate too.
        official
            .create_key_store()
            .send()
            .await
            .map_err(err("official CreateKeyStore on ddbguard's table"))?;

        let random_id = ours
            .create_key(None, &BTreeMap::new())
            .await
            .map_err(err("ddbguard create_key"))?;
        let chosen_id = unique_name("tenant", "interop");
        let custom = BTreeMap::from([
            ("department".to_owned(), "admin".to_owned()),
            ("tenant".to_owned(), "t-2".to_owned()),
        ]);
        ours.create_key(Some(&chosen_id), &custom)
            .await
            .map_err(err("ddbguard create_key with an id"))?;

        for id in [&random_id, &chosen_id] {
            let version = same_active(&official, &ours, id).await?;
            same_version(&official, &ours, id, &version).await?;
            // The beacon key ddbguard stores (never uses) is valid to the official key store as well.
            let beacon = official
                .get_beacon_key()
                .branch_key_identifier(id.as_str())
                .send()
                .await
                .map_err(err(format!("official GetBeaconKey {id}")))?;
            if beacon
                .beacon_key_materials
                .and_then(|m| m.beacon_key)
                .is_none_or(|k| k.as_ref().len() != 32)
            {
                return Err(format!("official GetBeaconKey {id}: no 32-byte beacon key"));
            }
            let keyrings = store.keyrings(PRIMARY_REGION, id).await?;
            let by_ours = keyrings.write(Side::Ddbguard, id, &version).await?;
            let by_official = keyrings.write(Side::Official, id, &version).await?;
            keyrings.read_both(&by_ours).await?;
            keyrings.read_both(&by_official).await?;
        }

        // ddbguard rotates: both sides encrypt under the new version; items under either version decrypt on both.
        let v1 = same_active(&official, &ours, &chosen_id).await?;
        let before = store.keyrings(PRIMARY_REGION, &chosen_id).await?;
        let ours_v1 = before.write(Side::Ddbguard, &chosen_id, &v1).await?;
        let official_v1 = before.write(Side::Official, &chosen_id, &v1).await?;
        let v2 = ours
            .version_key(&chosen_id)
            .await
            .map_err(err("ddbguard version_key"))?;
        if same_active(&official, &ours, &chosen_id).await? != v2 || v2 == v1 {
            return Err(format!("after ddbguard's version_key the active version is not {v2}"));
        }
        same_version(&official, &ours, &chosen_id, &v1).await?;
        same_version(&official, &ours, &chosen_id, &v2).await?;
        let described = ours.describe(&chosen_id).await.map_err(err("ddbguard describe"))?;
        if described.len() != 4 || described.iter().any(|i| i.encryption_context != custom) {
            return Err(format!("ddbguard describe after rotation: {described:?}"));
        }

        let after = store.keyrings(PRIMARY_REGION, &chosen_id).await?;
        let ours_v2 = after.write(Side::Ddbguard, &chosen_id, &v2).await?;
        let official_v2 = after.write(Side::Official, &chosen_id, &v2).await?;
        for written in [&ours_v1, &ours_v2, &official_v1, &official_v2] {
            after.read_both(written).await?;
        }

        // And the official VersionKey accepts the active item ddbguard's rotation wrote.
        official
            .version_key()
            .branch_key_identifier(&chosen_id)
            .send()
            .await
            .map_err(err("official VersionKey of ddbguard's branch key"))?;
        let v3 = same_active(&official, &ours, &chosen_id).await?;
        let latest = store.keyrings(PRIMARY_REGION, &chosen_id).await?;
        let ours_v3 = latest.write(Side::Ddbguard, &chosen_id, &v3).await?;
        latest.read_both(&ours_v3).await?;
        latest.read_both(&ours_v2).await
    });
}

/// A key store table that is a global table: each region reads the branch keys the other wrote, with its own
/// replica of the multi-Region key.
#[test]
fn global_key_store_serves_both_keyrings_across_regions() {
    run(async {
        let store = Store::new("global").await?;
        store.make_global_table().await?;
        let official_east = store.official(PRIMARY_REGION)?;
        let ours_east = store.ours(PRIMARY_REGION)?;
        let ours_south = store.ours(REPLICA_REGION)?;
        official_east
            .create_key_store()
            .send()
            .await
            .map_err(err("official CreateKeyStore on the global table"))?;

        // The official key store writes in us-east-1; ddbguard reads in ap-southeast-2.
        let id = official_create_key(&official_east, None, &[]).await?;
        wait_replicated(&ours_south, &id, 3).await?;
        let version = same_active(&official_east, &ours_south, &id).await?;
        let east = store.keyrings(PRIMARY_REGION, &id).await?;
        let south = store.keyrings(REPLICA_REGION, &id).await?;
        let by_official_east = east.write(Side::Official, &id, &version).await?;
        south.read(Side::Ddbguard, &by_official_east).await?;
        let by_ours_south = south.write(Side::Ddbguard, &id, &version).await?;
        east.read(Side::Official, &by_ours_south).await?;

        // ddbguard writes a branch key in ap-southeast-2 (wrapped under the replica); the official key store
        // reads it in us-east-1 with the primary.
        let id = ours_south
            .create_key(None, &BTreeMap::new())
            .await
            .map_err(err("ddbguard create_key in ap-southeast-2"))?;
        wait_replicated(&ours_east, &id, 3).await?;
        let version = same_active(&official_east, &ours_south, &id).await?;
        same_version(&official_east, &ours_south, &id, &version).await?;
        let east = store.keyrings(PRIMARY_REGION, &id).await?;
        let south = store.keyrings(REPLICA_REGION, &id).await?;
        let by_ours_south = south.write(Side::Ddbguard, &id, &version).await?;
        east.read(Side::Official, &by_ours_south).await?;
        let by_official_east = east.write(Side::Official, &id, &version).await?;
        south.read(Side::Ddbguard, &by_official_east).await
    });
}

/// A changed hierarchy EDK fails on both sides, whichever side wrote the item.
#[test]
fn tampered_hierarchy_edks_fail_on_both_sides() {
    run(async {
        let store = Store::new("tamper").await?;
        let official = store.official(PRIMARY_REGION)?;
        official
            .create_key_store()
            .send()
            .await
            .map_err(err("official CreateKeyStore"))?;
        let id = official_create_key(&official, None, &[]).await?;
        let keyrings = store.keyrings(PRIMARY_REGION, &id).await?;
        let mut problems = Vec::new();
        for by in [Side::Official, Side::Ddbguard] {
            for case in [fixed_case(false, true, true), fixed_case(true, false, true)] {
                let item = keyrings.encrypt(by, &case).await?;
                let (info, ct) = hierarchy_edk(&item)?;
                // (what, byte offset in the header, whether ddbguard must call it an integrity failure)
                let tampers = [
                    ("wrapped data key", ct.start - WRAPPED_PDK_LEN, true),
                    ("salt", ct.start, true),
                    ("IV", ct.start + 16, true),
                    ("version", ct.start + 28, false),
                    ("wrapped key", ct.start + 44, true),
                    ("tag", ct.end - 1, true),
                    ("branch key id", info.start, false),
                ];
                for (what, at, integrity) in tampers {
                    let mut tampered = item.clone();
                    match tampered.get_mut(HEADER) {
                        Some(AttributeValue::B(head)) => head[at] ^= 0x01,
                        _ => return Err("no header".into()),
                    }
                    let label = format!("{by:?}'s {} item, {what} changed", case_name(&case));
                    if keyrings.decrypt(Side::Official, &case, &tampered).await.is_ok() {
                        problems.push(format!("{label}: the official crate decrypts it"));
                    }
                    let cfg = case.config();
                    match ddbguard_dbe::decrypt_item(&cfg, &keyrings.ours, &tampered).await {
                        Ok(_) => problems.push(format!("{label}: ddbguard decrypts it")),
                        Err(e) if integrity && ours::verdict(&e) != "integrity_failed" => problems.push(format!(
                            "{label}: ddbguard says {} ({e}), expected integrity_failed",
                            ours::verdict(&e)
                        )),
                        Err(_) => {}
                    }
                }
                // The untouched item still decrypts on both sides.
                for side in [Side::Official, Side::Ddbguard] {
                    keyrings
                        .decrypt(side, &case, &item)
                        .await
                        .map_err(err(format!("{side:?} decrypting {by:?}'s untouched item")))?;
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    });
}
