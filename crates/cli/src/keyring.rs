//! Builds the AWS clients, the keyring and the verification policy a table's settings describe.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ddbguard_dbe::Keyring;
use ddbguard_ddb::SdkDynamo;
use ddbguard_ddbec::MaterialsProvider;
use ddbguard_keys::keystore::{CachingBranchKeySource, DynamoKeyStore};
use ddbguard_keys::kms::{
    DirectKmsProvider, GovernedKms, KeyCache, KmsApi, KmsCounters, MrkDiscoveryKeyring, MrkKeyring, RateLimiter,
    RetryPolicy, SdkKms,
};
use ddbguard_keys::metastore::{MetaStoreCacheSettings, MetaStoreProvider};
use ddbguard_keys::{HierarchyKeyring, RawAesKeyring};
use ddbguard_verify::{LegacyPolicy, VerifyPolicy};

use ddbguard_verify::service::{RegionClients, SdkStreams};

use crate::config::{
    AwsSettings, Config, ConfigError, HierarchySettings, KeyringSettings, LegacyProviderSettings, TableSettings,
};

/// Unwrapped intermediate keys kept per process (each 32 bytes plus bookkeeping), and for how long.
const KEY_CACHE_ENTRIES: usize = 10_000;
const KEY_CACHE_TTL: Duration = Duration::from_secs(300);

/// The process's AWS clients: one governed KMS client per configured region, all sharing one KMS rate
/// limiter, one set of call counters and one cache of unwrapped keys.
#[derive(Debug)]
pub struct AwsContext {
    pub settings: AwsSettings,
    pub kms: BTreeMap<String, Arc<dyn KmsApi>>,
    pub counters: Arc<KmsCounters>,
    pub cache: Arc<KeyCache>,
    /// The SDK configuration, loaded once (credentials, endpoint, timeouts) for the local region; other regions'
    /// clients are derived from it.
    pub sdk: aws_config::SdkConfig,
}

impl AwsContext {
    /// Loads the SDK configuration (credentials from the default chain) for every region of `settings`.
    pub async fn new(settings: &AwsSettings) -> AwsContext {
        let limiter = Arc::new(RateLimiter::new(
            settings.kms_requests_per_second,
            settings.kms_requests_per_second.ceil().max(1.0) as u32,
        ));
        let counters = KmsCounters::new();
        let sdk = sdk_config(settings, &settings.region).await;
        let mut kms: BTreeMap<String, Arc<dyn KmsApi>> = BTreeMap::new();
        for region in &settings.regions {
            let client = SdkKms::new(aws_sdk_kms::Client::new(&in_region(&sdk, region)), region.clone());
            let governed = GovernedKms::new(
                Arc::new(client),
                Some(limiter.clone()),
                RetryPolicy::default(),
                counters.clone(),
            );
            kms.insert(region.clone(), Arc::new(governed));
        }
        AwsContext {
            settings: settings.clone(),
            kms,
            counters,
            cache: Arc::new(KeyCache::new(KEY_CACHE_ENTRIES, KEY_CACHE_TTL)),
            sdk,
        }
    }

    /// The SDK configuration of `region`.
    pub fn sdk_for(&self, region: &str) -> aws_config::SdkConfig {
        in_region(&self.sdk, region)
    }

    /// The key store of a `hierarchy` keyring, in the local region.
    pub fn key_store(&self, h: &HierarchySettings) -> anyhow::Result<DynamoKeyStore> {
        Ok(DynamoKeyStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            &h.key_store_table,
            &h.logical_name,
            &h.key_arn.to_string(),
            self.local_kms()?,
        )?)
    }

    /// The KMS client of the local region.
    pub fn local_kms(&self) -> anyhow::Result<Arc<dyn KmsApi>> {
        self.kms
            .get(&self.settings.region)
            .cloned()
            .with_context(|| format!("no KMS client for the local region {}", self.settings.region))
    }
}

/// The `[aws]` settings with the local region settled, once per process: the file's `region`, else what the AWS
/// SDK's region chain finds (`AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, then the instance
/// metadata) — on ECS the task's `AWS_REGION`. An error names `[aws] region` when neither has one.
pub async fn aws_settings(config: &Config) -> Result<AwsSettings, ConfigError> {
    let from_chain = match config.aws.region {
        Some(_) => None,
        None => aws_config::meta::region::RegionProviderChain::default_provider()
            .region()
            .await
            .map(|region| region.to_string()),
    };
    config.aws_settings(from_chain)
}

/// No single AWS call attempt may take longer than this (the SDK retries a timed-out attempt).
const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// No AWS call, retries included, may take longer than this: a hung connection must not hold a lease renewal or
/// a shutdown.
const OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The SDK configuration for one region, honouring `endpoint_url` (the local environment), with per-attempt and
/// per-operation timeouts.
async fn sdk_config(settings: &AwsSettings, region: &str) -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_owned()))
        .timeout_config(timeouts);
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// `sdk` with another region (same credentials provider, endpoint and timeouts).
fn in_region(sdk: &aws_config::SdkConfig, region: &str) -> aws_config::SdkConfig {
    sdk.to_builder()
        .region(aws_config::Region::new(region.to_owned()))
        .build()
}

/// The verify service's clients: DynamoDB and DynamoDB Streams of any region, from the one SDK configuration.
impl RegionClients for AwsContext {
    type Dynamo = SdkDynamo;
    type Streams = SdkStreams;

    fn dynamo(&self, region: &str) -> SdkDynamo {
        SdkDynamo::new(aws_sdk_dynamodb::Client::new(&self.sdk_for(region)))
    }

    fn streams(&self, region: &str) -> SdkStreams {
        SdkStreams::new(aws_sdk_dynamodbstreams::Client::new(&self.sdk_for(region)))
    }
}

/// The keyring for these settings, ready to decrypt (and, except discovery, encrypt).
pub fn build(settings: &KeyringSettings, aws: Option<&AwsContext>) -> anyhow::Result<Box<dyn Keyring>> {
    let aws = || aws.context("KMS keyrings need the AWS clients of the local region");
    Ok(match settings {
        KeyringSettings::RawAes { namespace, name, key } => {
            Box::new(RawAesKeyring::new(namespace.clone(), name.clone(), key.clone()))
        }
        KeyringSettings::KmsMrk { key_arn } => {
            let aws = aws()?;
            Box::new(MrkKeyring::new(
                &key_arn.to_string(),
                aws.local_kms()?,
                Some(aws.cache.clone()),
            )?)
        }
        KeyringSettings::KmsMrkDiscovery { filter } => {
            let aws = aws()?;
            Box::new(MrkDiscoveryKeyring::new(
                aws.local_kms()?,
                filter.clone(),
                Some(aws.cache.clone()),
            )?)
        }
        KeyringSettings::Hierarchy(h) => {
            let source = Arc::new(CachingBranchKeySource::new(aws()?.key_store(h)?, h.cache));
            match &h.branch_key_id {
                Some(id) => Box::new(HierarchyKeyring::new(id.clone(), source)),
                None => Box::new(HierarchyKeyring::for_any_branch_key(source)),
            }
        }
    })
}

/// The policy every verdict about this table's items is judged by: `ddbguard verify` and `ddbguard item decrypt`
/// build it here, so the same item gets the same verdict from both.
///
/// `sample_rate` applies to stream records only (`item decrypt` always verifies in full). Under a hierarchical
/// keyring it is 1: unwrapping under a cached branch key costs no KMS call.
pub fn verify_policy(table: &TableSettings, sample_rate: f64) -> anyhow::Result<VerifyPolicy> {
    let mut policy = VerifyPolicy::new(ddbguard_dbe::TablePolicy {
        config: table.dbe.clone(),
        required_encrypted: table.required_encrypted.clone(),
        require_suite: table.require_suite,
    });
    policy.sample_rate = sample_rate;
    if matches!(table.keyring, KeyringSettings::Hierarchy(_)) {
        policy.sample_rate = 1.0;
    }
    if let KeyringSettings::KmsMrk { key_arn } = &table.keyring {
        policy = policy.with_key(key_arn.clone());
    }
    policy.legacy = table.legacy.as_ref().map(|legacy| LegacyPolicy {
        actions: legacy.actions.clone(),
        // The legacy clients sign under the physical table name they are given.
        table_name: table.name.clone(),
    });
    Ok(policy)
}

/// The materials provider for the table's legacy items, when its `[tables.legacy]` allows them; pass it to the
/// judge beside [`verify_policy`]'s policy (one without the other leaves legacy items `legacy_format`). The
/// most-recent provider's metastore table is checked here (it exists in the local region with a metastore's key),
/// so that a wrong name or a missing permission is a startup error.
pub async fn legacy_provider(
    table: &TableSettings,
    aws: Option<&AwsContext>,
) -> anyhow::Result<Option<Arc<dyn MaterialsProvider>>> {
    let Some(legacy) = &table.legacy else {
        return Ok(None);
    };
    Ok(Some(match &legacy.provider {
        LegacyProviderSettings::AwsKms { key_arn } => {
            let aws = aws.context("the legacy aws-kms provider needs the AWS clients of the local region")?;
            Arc::new(DirectKmsProvider::new(
                &key_arn.to_string(),
                aws.local_kms()?,
                Some(aws.cache.clone()),
            )?)
        }
        LegacyProviderSettings::MostRecent {
            metastore_table,
            material_name,
            metastore_key_arn,
        } => {
            let aws = aws.context("the legacy most-recent provider needs the AWS clients of the local region")?;
            // The metastore's records are direct-KMS items: their data keys share the process's key cache.
            let records = DirectKmsProvider::new(
                &metastore_key_arn.to_string(),
                aws.local_kms()?,
                Some(aws.cache.clone()),
            )?;
            let provider = MetaStoreProvider::new(
                SdkDynamo::new(aws_sdk_dynamodb::Client::new(&aws.sdk)),
                metastore_table.clone(),
                material_name.clone(),
                Arc::new(records),
                MetaStoreCacheSettings::default(),
            );
            provider
                .check()
                .await
                .with_context(|| format!("table {:?}: [tables.legacy]", table.name))?;
            Arc::new(provider)
        }
        LegacyProviderSettings::Wrapped(provider) => Arc::new(provider.clone()),
        LegacyProviderSettings::Static(provider) => Arc::new(provider.clone()),
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const MRK: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab";

    fn table(keyring: &str) -> String {
        format!(
            "[aws]\nregion = \"us-east-1\"\nregions = [\"us-east-1\"]\n\
             [[tables]]\nname = \"Orders\"\npartition_key = \"pk\"\nrequired_encrypted = [\"ssn\"]\n\
             require_suite = \"0x6701\"\n[tables.attribute_actions]\npk = \"SIGN_ONLY\"\n[tables.keyring]\n{keyring}\n"
        )
    }

    #[test]
    fn policy_carries_the_table_settings() {
        let raw = format!("kind = \"raw-aes\"\nkey_namespace = \"ops\"\nkey_name = \"k\"\nkey_base64 = \"{KEY}\"");
        let config = Config::parse(Path::new("v.toml"), &table(&raw)).unwrap();
        let policy = verify_policy(&config.tables[0], 0.5).unwrap();
        assert!(policy.table.required_encrypted.contains("ssn"));
        assert_eq!(
            policy.table.require_suite,
            Some(ddbguard_dbe::AlgorithmSuite::EcdsaP384)
        );
        assert_eq!(policy.sample_rate, 0.5);
        assert!(policy.key_arn.is_none());
        assert!(policy.table.requires_encryption());

        let kms = format!("kind = \"kms-mrk\"\nkey_arn = \"{MRK}\"");
        let config = Config::parse(Path::new("v.toml"), &table(&kms)).unwrap();
        let policy = verify_policy(&config.tables[0], 0.5).unwrap();
        assert_eq!(policy.key_arn.map(|k| k.to_string()).as_deref(), Some(MRK));
    }

    #[tokio::test]
    async fn a_legacy_section_gives_the_policy_and_the_provider() {
        let kms = format!("kind = \"kms-mrk\"\nkey_arn = \"{MRK}\"");
        let config = Config::parse(Path::new("v.toml"), &table(&kms)).unwrap();
        assert!(verify_policy(&config.tables[0], 1.0).unwrap().legacy.is_none());
        assert!(legacy_provider(&config.tables[0], None).await.unwrap().is_none());

        let config = Config::parse(
            Path::new("v.toml"),
            &table(&format!("{kms}\n[tables.legacy]\nallowed = true")),
        )
        .unwrap();
        let legacy = verify_policy(&config.tables[0], 1.0).unwrap().legacy.unwrap();
        assert_eq!(legacy.table_name, "Orders");
        assert_eq!(legacy.actions.action("pk"), ddbguard_ddbec::LegacyAction::SignOnly);
        // The direct KMS provider needs the local region's KMS client.
        let e = legacy_provider(&config.tables[0], None).await.unwrap_err();
        assert!(e.to_string().contains("AWS clients"), "{e}");

        let config = Config::parse(
            Path::new("v.toml"),
            &table(&format!(
                "{kms}\n[tables.legacy]\nallowed = true\nprovider = \"most-recent\"\n\
                 metastore_table = \"meta\"\nmaterial_name = \"orders\""
            )),
        )
        .unwrap();
        let e = legacy_provider(&config.tables[0], None).await.unwrap_err();
        assert!(
            e.to_string().contains("most-recent provider needs the AWS clients"),
            "{e}"
        );
    }
}
