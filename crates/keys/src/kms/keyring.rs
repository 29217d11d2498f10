//! The AWS KMS multi-Region key keyrings: [`MrkKeyring`] (`kind = "kms-mrk"`, one configured key used through
//! its local replica) and [`MrkDiscoveryKeyring`] (`kind = "kms-mrk-discovery"`, any `aws-kms` EDK whose MRK has a
//! replica here).
//!
//! Both work on the provider-wrapped part of an EDK (for the DB-ESDK suites: the EDK ciphertext after its first
//! 48 bytes, the encrypted PDK) and produce or consume the 32-byte intermediate key (IKM) of Intermediate Key
//! Wrapping. The adapter to the item format's `Keyring` trait lives in [`super::dbe`].

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::api::{EncryptionContext, KmsApi};
use super::cache::KeyCache;
use super::error::{KmsError, KmsErrorKind, Operation};
use crate::arn::{ArnError, ArnErrorKind, KmsArn, ResourceType};

/// The EDK provider id of the AWS KMS keyrings.
pub const KMS_PROVIDER_ID: &str = "aws-kms";

/// Length of the intermediate key a KMS keyring wraps.
pub const IKM_LEN: usize = 32;

/// One encrypted data key as a KMS keyring sees it.
#[derive(Debug, Clone, Copy)]
pub struct EdkRef<'a> {
    /// The provider id (`aws-kms` for these keyrings).
    pub provider_id: &'a str,
    /// The provider info (for `aws-kms`: the key ARN KMS returned on encrypt, UTF-8).
    pub provider_info: &'a [u8],
    /// The provider-wrapped key: the KMS ciphertext blob.
    pub ciphertext: &'a [u8],
}

/// An intermediate key unwrapped (or generated) by a KMS keyring.
pub struct Ikm {
    /// The 32 key bytes.
    pub key: Zeroizing<[u8; IKM_LEN]>,
    /// Which EDK it came from (decrypt) — index into the slice passed in.
    pub edk_index: usize,
}

impl fmt::Debug for Ikm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ikm")
            .field("key", &"<redacted>")
            .field("edk_index", &self.edk_index)
            .finish()
    }
}

/// An intermediate key generated on encrypt, with what goes into the new EDK.
pub struct GeneratedIkm {
    /// The 32 key bytes.
    pub key: Zeroizing<[u8; IKM_LEN]>,
    /// EDK provider id: `aws-kms`.
    pub provider_id: String,
    /// EDK provider info: the key ARN KMS answered with.
    pub provider_info: Vec<u8>,
    /// The KMS ciphertext blob (appended to the encrypted PDK in the EDK ciphertext).
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for GeneratedIkm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedIkm")
            .field("key", &"<redacted>")
            .field("provider_info", &String::from_utf8_lossy(&self.provider_info))
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Why a KMS keyring could not produce a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KmsKeyringError {
    /// No `aws-kms` EDK at all (the item was written by another kind of keyring).
    #[error("no aws-kms encrypted data key in the item ({count} EDK(s) with other providers: {providers})")]
    NoMatchingKey {
        /// EDKs seen.
        count: usize,
        /// Their provider ids, comma separated.
        providers: String,
    },
    /// The item's KMS key cannot be used through a replica in this region: a single-region key elsewhere, or a
    /// key that does not MRK-match the configured one.
    #[error(
        "item is encrypted under {edk_arn}, which {why}; it cannot be decrypted with {local} without a cross-region call"
    )]
    KeyNotMrk {
        /// The EDK's key ARN.
        edk_arn: String,
        /// The key this keyring uses here (or the discovery region).
        local: String,
        /// Why it does not match.
        why: &'static str,
    },
    /// An `aws-kms` EDK's provider info is not a KMS key ARN.
    #[error("aws-kms EDK {index} has provider info {info:?}, which is not a KMS key ARN: {reason}")]
    BadProviderInfo {
        /// EDK index.
        index: usize,
        /// The provider info (lossy UTF-8).
        info: String,
        /// Why.
        reason: String,
    },
    /// KMS refused or failed (classified inside).
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// The keyring cannot do this (a discovery keyring asked to encrypt).
    #[error("{0}")]
    Unsupported(&'static str),
}

impl KmsKeyringError {
    /// The KMS error kind, if KMS was the cause.
    pub fn kms_kind(&self) -> Option<KmsErrorKind> {
        match self {
            KmsKeyringError::Kms(e) => Some(e.kind),
            _ => None,
        }
    }
}

/// Sends one Decrypt for an EDK and checks the answer (KeyId == requested, 32 bytes); consults the cache.
async fn decrypt_one(
    kms: &dyn KmsApi,
    cache: Option<&KeyCache>,
    key_id: &str,
    ciphertext: &[u8],
    ec: &EncryptionContext,
) -> Result<Zeroizing<[u8; IKM_LEN]>, KmsError> {
    let cache_key = cache.map(|_| KeyCache::key(key_id, ciphertext, ec));
    if let (Some(c), Some(k)) = (cache, &cache_key)
        && let Some(hit) = c.get(k)
    {
        return Ok(hit);
    }
    let dk = kms.decrypt(key_id, ciphertext, ec).await?;
    let bad = |m: String| KmsError::local(Operation::Decrypt, kms.region(), key_id, KmsErrorKind::BadResponse, m);
    if dk.key_id != key_id {
        return Err(bad(format!(
            "KMS answered with KeyId {} instead of the requested key",
            dk.key_id
        )));
    }
    if dk.plaintext.len() != IKM_LEN {
        return Err(bad(format!(
            "plaintext is {} bytes, expected {IKM_LEN}",
            dk.plaintext.len()
        )));
    }
    let mut key = Zeroizing::new([0u8; IKM_LEN]);
    key.copy_from_slice(&dk.plaintext);
    if let (Some(c), Some(k)) = (cache, cache_key) {
        c.insert(k, key.clone());
    }
    Ok(key)
}

/// Picks the error to report after every candidate failed: the first non-throttle error if any (a finding
/// about the key beats "try later"), else the first throttle.
fn most_significant(errors: Vec<KmsError>) -> KmsError {
    let mut first = None;
    for e in errors {
        if e.kind != KmsErrorKind::Throttled && e.kind != KmsErrorKind::Transient {
            return e;
        }
        first.get_or_insert(e);
    }
    first.expect("called with at least one error")
}

fn providers(edks: &[EdkRef<'_>]) -> String {
    let mut p: Vec<&str> = edks.iter().map(|e| e.provider_id).collect();
    p.sort_unstable();
    p.dedup();
    p.join(", ")
}

fn parse_edk_arn(index: usize, info: &[u8]) -> Result<KmsArn, KmsKeyringError> {
    let bad = |reason: String| KmsKeyringError::BadProviderInfo {
        index,
        info: String::from_utf8_lossy(info).into_owned(),
        reason,
    };
    let s = std::str::from_utf8(info).map_err(|e| bad(e.to_string()))?;
    let arn = KmsArn::parse(s).map_err(|e| bad(e.kind.to_string()))?;
    if arn.resource_type() != ResourceType::Key {
        return Err(bad("an alias, not a key".into()));
    }
    Ok(arn)
}

/// The KMS MRK keyring: a configured key ARN, used in the local region through its replica there.
pub struct MrkKeyring {
    configured: KmsArn,
    local: KmsArn,
    local_str: String,
    kms: Arc<dyn KmsApi>,
    cache: Option<Arc<KeyCache>>,
}

impl fmt::Debug for MrkKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MrkKeyring")
            .field("configured", &self.configured.to_string())
            .field("local", &self.local_str)
            .field("region", &self.kms.region())
            .field("cache", &self.cache)
            .finish()
    }
}

impl MrkKeyring {
    /// A keyring for `key_arn` using `kms` (a client for the local region, normally a
    /// [`super::GovernedKms`]). An MRK is used through its replica in `kms.region()`; a single-region key only
    /// as is. Aliases and bare key ids are rejected: decrypt needs key ARNs.
    pub fn new(key_arn: &str, kms: Arc<dyn KmsApi>, cache: Option<Arc<KeyCache>>) -> Result<MrkKeyring, ArnError> {
        let configured = KmsArn::parse_key(key_arn)?;
        let local = if configured.is_mrk() {
            configured.replica_in(kms.region())?
        } else {
            if configured.region() != kms.region() {
                tracing::warn!(
                    key = %configured, region = kms.region(),
                    "configured key is a single-region key in another region; KMS calls will fail here"
                );
            }
            configured.clone()
        };
        Ok(MrkKeyring {
            local_str: local.to_string(),
            configured,
            local,
            kms,
            cache,
        })
    }

    /// The configured key ARN.
    pub fn configured_arn(&self) -> &KmsArn {
        &self.configured
    }

    /// The key ARN used in this region (the local replica of an MRK).
    pub fn local_arn(&self) -> &KmsArn {
        &self.local
    }

    /// Decrypts a bare KMS `CiphertextBlob` (no EDK around it) with the key used in this region, through the
    /// data-key cache: for the legacy client's direct KMS provider, whose items carry only the blob.
    pub async fn decrypt_local(
        &self,
        ciphertext: &[u8],
        ec: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; IKM_LEN]>, KmsError> {
        decrypt_one(&*self.kms, self.cache.as_deref(), &self.local_str, ciphertext, ec).await
    }

    /// Unwraps the intermediate key from the first EDK that MRK-matches the configured key.
    pub async fn unwrap_ikm(&self, edks: &[EdkRef<'_>], ec: &EncryptionContext) -> Result<Ikm, KmsKeyringError> {
        let mut errors = Vec::new();
        let mut not_matching: Option<(String, &'static str)> = None;
        let mut bad_info = None;
        for (index, edk) in edks.iter().enumerate() {
            if edk.provider_id != KMS_PROVIDER_ID {
                continue;
            }
            let arn = match parse_edk_arn(index, edk.provider_info) {
                Ok(a) => a,
                Err(e) => {
                    bad_info.get_or_insert(e);
                    continue;
                }
            };
            if !arn.mrk_matches(&self.configured) {
                let why = if !arn.is_mrk() {
                    "is a single-region key"
                } else if !self.configured.is_mrk() {
                    "is a multi-Region key but the configured key is a single-region key"
                } else {
                    "is a different multi-Region key"
                };
                not_matching.get_or_insert((arn.to_string(), why));
                continue;
            }
            match decrypt_one(&*self.kms, self.cache.as_deref(), &self.local_str, edk.ciphertext, ec).await {
                Ok(key) => return Ok(Ikm { key, edk_index: index }),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(most_significant(errors).into());
        }
        if let Some((edk_arn, why)) = not_matching {
            return Err(KmsKeyringError::KeyNotMrk {
                edk_arn,
                local: self.local_str.clone(),
                why,
            });
        }
        if let Some(e) = bad_info {
            return Err(e);
        }
        Err(KmsKeyringError::NoMatchingKey {
            count: edks.len(),
            providers: providers(edks),
        })
    }

    /// Generates a fresh intermediate key with `GenerateDataKey` on the local replica.
    pub async fn generate_ikm(&self, ec: &EncryptionContext) -> Result<GeneratedIkm, KmsKeyringError> {
        let dk = self.kms.generate_data_key(&self.local_str, IKM_LEN as i32, ec).await?;
        let bad = |m: String| {
            KmsError::local(
                Operation::GenerateDataKey,
                self.kms.region(),
                &self.local_str,
                KmsErrorKind::BadResponse,
                m,
            )
        };
        if dk.plaintext.len() != IKM_LEN {
            return Err(bad(format!("plaintext is {} bytes, expected {IKM_LEN}", dk.plaintext.len())).into());
        }
        match KmsArn::parse_key(&dk.key_id) {
            Ok(a) if a.mrk_matches(&self.local) => {}
            _ => {
                return Err(bad(format!(
                    "KMS answered with KeyId {:?}, not the requested key",
                    dk.key_id
                ))
                .into());
            }
        }
        let mut key = Zeroizing::new([0u8; IKM_LEN]);
        key.copy_from_slice(&dk.plaintext);
        Ok(GeneratedIkm {
            key,
            provider_id: KMS_PROVIDER_ID.to_owned(),
            provider_info: dk.key_id.into_bytes(),
            ciphertext: dk.ciphertext,
        })
    }
}

/// Which keys a discovery keyring may use: one partition and, optionally, a list of accounts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct DiscoveryFilter {
    /// The partition (`aws`).
    pub partition: String,
    /// Allowed account ids (must be non-empty, as in the AWS spec).
    pub accounts: Vec<String>,
}

/// The KMS MRK discovery keyring: decrypts any `aws-kms` EDK through this region's replica of its MRK (or the
/// key itself, for a single-region key in this region). Cannot encrypt.
pub struct MrkDiscoveryKeyring {
    kms: Arc<dyn KmsApi>,
    filter: Option<DiscoveryFilter>,
    cache: Option<Arc<KeyCache>>,
}

impl fmt::Debug for MrkDiscoveryKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MrkDiscoveryKeyring")
            .field("region", &self.kms.region())
            .field("filter", &self.filter)
            .field("cache", &self.cache)
            .finish()
    }
}

impl MrkDiscoveryKeyring {
    /// A discovery keyring for the region of `kms`. A filter must name a partition and at least one account.
    pub fn new(
        kms: Arc<dyn KmsApi>,
        filter: Option<DiscoveryFilter>,
        cache: Option<Arc<KeyCache>>,
    ) -> Result<MrkDiscoveryKeyring, ArnError> {
        if kms.region().is_empty() || kms.region().contains(':') {
            return Err(ArnError {
                input: String::new(),
                kind: ArnErrorKind::InvalidRegion(kms.region().to_owned()),
            });
        }
        if let Some(f) = &filter
            && (f.partition.is_empty() || f.accounts.is_empty() || f.accounts.iter().any(String::is_empty))
        {
            return Err(ArnError {
                input: format!("{f:?}"),
                kind: ArnErrorKind::Empty("discovery filter partition or account list"),
            });
        }
        Ok(MrkDiscoveryKeyring { kms, filter, cache })
    }

    /// Unwraps the intermediate key from the first usable `aws-kms` EDK.
    pub async fn unwrap_ikm(&self, edks: &[EdkRef<'_>], ec: &EncryptionContext) -> Result<Ikm, KmsKeyringError> {
        let region = self.kms.region();
        let mut errors = Vec::new();
        let mut other_region: Option<String> = None;
        let mut bad_info = None;
        for (index, edk) in edks.iter().enumerate() {
            if edk.provider_id != KMS_PROVIDER_ID {
                continue;
            }
            let arn = match parse_edk_arn(index, edk.provider_info) {
                Ok(a) => a,
                Err(e) => {
                    bad_info.get_or_insert(e);
                    continue;
                }
            };
            if let Some(f) = &self.filter
                && (arn.partition() != f.partition || !f.accounts.iter().any(|a| a == arn.account()))
            {
                continue;
            }
            let request = if arn.is_mrk() {
                match arn.with_region(region) {
                    Ok(a) => a,
                    Err(_) => continue,
                }
            } else if arn.region() == region {
                arn
            } else {
                other_region.get_or_insert(arn.to_string());
                continue;
            };
            let request = request.to_string();
            match decrypt_one(&*self.kms, self.cache.as_deref(), &request, edk.ciphertext, ec).await {
                Ok(key) => return Ok(Ikm { key, edk_index: index }),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(most_significant(errors).into());
        }
        if let Some(edk_arn) = other_region {
            return Err(KmsKeyringError::KeyNotMrk {
                edk_arn,
                local: format!("a key in {region}"),
                why: "is a single-region key in another region",
            });
        }
        if let Some(e) = bad_info {
            return Err(e);
        }
        Err(KmsKeyringError::NoMatchingKey {
            count: edks.len(),
            providers: providers(edks),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::error::UnavailableReason;
    use crate::kms::fake::{FailureKms, FakeKeyState, FakeKmsWorld};
    use crate::kms::governor::{GovernedKms, KmsCounters, RetryPolicy};
    use std::time::Duration;

    const E1: &str = "us-east-1";
    const AP: &str = "ap-southeast-2";
    const MRK_E1: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";
    const MRK_AP: &str = "arn:aws:kms:ap-southeast-2:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";
    const SRK_E1: &str = "arn:aws:kms:us-east-1:111122223333:key/b3537ef1-d8dc-4780-9f5a-55776cbb2f7f";

    fn ec() -> EncryptionContext {
        [
            ("aws-crypto-table-name".to_owned(), "orders".to_owned()),
            ("aws-crypto-partition-name".to_owned(), "pk".to_owned()),
        ]
        .into()
    }

    fn world() -> Arc<FakeKmsWorld> {
        let w = FakeKmsWorld::new();
        w.create_key(MRK_E1);
        w.create_key(MRK_AP);
        w.create_key(SRK_E1);
        w
    }

    fn governed(inner: Arc<dyn KmsApi>, counters: &Arc<KmsCounters>) -> Arc<dyn KmsApi> {
        let retry = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
            budget: Duration::from_secs(5),
        };
        Arc::new(GovernedKms::new(inner, None, retry, counters.clone()))
    }

    async fn encrypt_in(w: &Arc<FakeKmsWorld>, region: &str, arn: &str) -> GeneratedIkm {
        let k = MrkKeyring::new(arn, Arc::new(w.client(region)), None).unwrap();
        k.generate_ikm(&ec()).await.unwrap()
    }

    fn edk(g: &GeneratedIkm) -> EdkRef<'_> {
        EdkRef {
            provider_id: &g.provider_id,
            provider_info: &g.provider_info,
            ciphertext: &g.ciphertext,
        }
    }

    #[tokio::test]
    async fn encrypt_in_one_region_decrypt_with_replica_in_another() {
        let w = world();
        let g = encrypt_in(&w, E1, MRK_E1).await;
        assert_eq!(g.provider_info, MRK_E1.as_bytes());
        // Configured with the us-east-1 ARN, running in ap-southeast-2: uses the local replica.
        let k = MrkKeyring::new(MRK_E1, Arc::new(w.client(AP)), None).unwrap();
        assert_eq!(k.local_arn().to_string(), MRK_AP);
        let other = EdkRef {
            provider_id: "aws-kms-hierarchy",
            provider_info: b"x",
            ciphertext: b"y",
        };
        let ikm = k.unwrap_ikm(&[other, edk(&g)], &ec()).await.unwrap();
        assert_eq!(*ikm.key, *g.key);
        assert_eq!(ikm.edk_index, 1);
        // Wrong encryption context: integrity failure, not a key problem.
        let mut ec2 = ec();
        ec2.insert("aws-crypto-table-name".into(), "other".into());
        let e = k.unwrap_ikm(&[edk(&g)], &ec2).await.unwrap_err();
        assert_eq!(e.kms_kind(), Some(KmsErrorKind::IntegrityFailed));
    }

    #[tokio::test]
    async fn replica_states_are_key_unavailable() {
        let w = world();
        let g = encrypt_in(&w, E1, MRK_E1).await;
        let k = MrkKeyring::new(MRK_E1, Arc::new(w.client(AP)), None).unwrap();
        for (state, reason) in [
            (Some(FakeKeyState::Disabled), UnavailableReason::Disabled),
            (Some(FakeKeyState::PendingDeletion), UnavailableReason::PendingDeletion),
            (None, UnavailableReason::NotFound),
        ] {
            match state {
                Some(s) => w.set_state(MRK_AP, s),
                None => w.remove_key(MRK_AP),
            }
            let e = k.unwrap_ikm(&[edk(&g)], &ec()).await.unwrap_err();
            assert_eq!(e.kms_kind(), Some(KmsErrorKind::KeyUnavailable(reason)), "{e}");
        }
    }

    #[tokio::test]
    async fn single_region_and_other_mrk_are_key_not_mrk() {
        let w = world();
        let g = encrypt_in(&w, E1, SRK_E1).await;
        let k = MrkKeyring::new(MRK_E1, Arc::new(w.client(AP)), None).unwrap();
        let e = k.unwrap_ikm(&[edk(&g)], &ec()).await.unwrap_err();
        match &e {
            KmsKeyringError::KeyNotMrk { edk_arn, .. } => assert_eq!(edk_arn, SRK_E1),
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains(SRK_E1));
        let other_mrk = MRK_E1.replace("mrk-80bd", "mrk-90bd");
        w.create_key(&other_mrk);
        let g = encrypt_in(&w, E1, &other_mrk).await;
        let e = k.unwrap_ikm(&[edk(&g)], &ec()).await.unwrap_err();
        assert!(matches!(e, KmsKeyringError::KeyNotMrk { .. }), "{e:?}");
        // No aws-kms EDK at all.
        let raw = EdkRef {
            provider_id: "my-namespace",
            provider_info: b"k",
            ciphertext: b"c",
        };
        let e = k.unwrap_ikm(&[raw], &ec()).await.unwrap_err();
        assert!(matches!(e, KmsKeyringError::NoMatchingKey { .. }), "{e:?}");
    }

    #[test]
    fn aliases_are_rejected_at_construction() {
        let w = world();
        let e = MrkKeyring::new(
            "arn:aws:kms:us-east-1:111122223333:alias/mrk-orders",
            Arc::new(w.client(E1)),
            None,
        )
        .unwrap_err();
        assert_eq!(e.kind, ArnErrorKind::Alias);
        let e = MrkKeyring::new("alias/orders", Arc::new(w.client(E1)), None).unwrap_err();
        assert_eq!(e.kind, ArnErrorKind::NotArn);
        let e = MrkKeyring::new("mrk-80bd8ecdcd4342aebd84b7dc9da498a7", Arc::new(w.client(E1)), None).unwrap_err();
        assert_eq!(e.kind, ArnErrorKind::NotArn);
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_are_retried_then_reported_as_throttled() {
        let w = world();
        let g = encrypt_in(&w, E1, MRK_E1).await;
        let failing = Arc::new(FailureKms::new(Arc::new(w.client(AP))));
        let counters = KmsCounters::new();
        let k = MrkKeyring::new(MRK_E1, governed(failing.clone(), &counters), None).unwrap();
        // Two throttles, then success.
        failing.fail_next(Operation::Decrypt, 2, "ThrottlingException", 400);
        let ikm = k.unwrap_ikm(&[edk(&g)], &ec()).await.unwrap();
        assert_eq!(*ikm.key, *g.key);
        assert_eq!(counters.get(AP, Operation::Decrypt, "throttled"), 2);
        assert_eq!(counters.get(AP, Operation::Decrypt, "ok"), 1);
        // Throttled beyond the attempt budget: kms throttled, never key_unavailable.
        failing.fail_next(Operation::Decrypt, 10, "ThrottlingException", 400);
        let e = k.unwrap_ikm(&[edk(&g)], &ec()).await.unwrap_err();
        assert_eq!(e.kms_kind(), Some(KmsErrorKind::Throttled), "{e}");
        assert_eq!(failing.calls(Operation::Decrypt), 3 + 4);
        // HTTP 429 without a code is a throttle too.
        failing.fail_next(Operation::Decrypt, 10, "", 429);
        let e = k.unwrap_ikm(&[edk(&g)], &ec()).await.unwrap_err();
        assert_eq!(e.kms_kind(), Some(KmsErrorKind::Throttled), "{e}");
    }

    #[tokio::test]
    async fn cache_absorbs_repeated_records() {
        let w = world();
        let g = encrypt_in(&w, E1, MRK_E1).await;
        let counters = KmsCounters::new();
        let cache = Arc::new(KeyCache::new(16, Duration::from_secs(60)));
        let k = MrkKeyring::new(MRK_E1, governed(Arc::new(w.client(AP)), &counters), Some(cache.clone())).unwrap();
        for _ in 0..5 {
            k.unwrap_ikm(&[edk(&g)], &ec()).await.unwrap();
        }
        assert_eq!(counters.calls(AP, Operation::Decrypt), 1);
        assert_eq!((cache.hits(), cache.misses()), (4, 1));
        // A different EC is a different cache entry (and a KMS integrity failure).
        let mut ec2 = ec();
        ec2.insert("x".into(), "y".into());
        assert!(k.unwrap_ikm(&[edk(&g)], &ec2).await.is_err());
        assert_eq!(counters.calls(AP, Operation::Decrypt), 2);
    }

    #[tokio::test]
    async fn discovery_rewrites_mrk_region() {
        let w = world();
        let g = encrypt_in(&w, E1, MRK_E1).await;
        let filter = DiscoveryFilter {
            partition: "aws".into(),
            accounts: vec!["111122223333".into()],
        };
        let d = MrkDiscoveryKeyring::new(Arc::new(w.client(AP)), Some(filter), None).unwrap();
        let ikm = d.unwrap_ikm(&[edk(&g)], &ec()).await.unwrap();
        assert_eq!(*ikm.key, *g.key);
        // Filtered out account: no matching key.
        let f2 = DiscoveryFilter {
            partition: "aws".into(),
            accounts: vec!["999999999999".into()],
        };
        let d2 = MrkDiscoveryKeyring::new(Arc::new(w.client(AP)), Some(f2), None).unwrap();
        assert!(matches!(
            d2.unwrap_ikm(&[edk(&g)], &ec()).await.unwrap_err(),
            KmsKeyringError::NoMatchingKey { .. }
        ));
        // Single-region key: only in its own region.
        let s = encrypt_in(&w, E1, SRK_E1).await;
        assert!(matches!(
            d.unwrap_ikm(&[edk(&s)], &ec()).await.unwrap_err(),
            KmsKeyringError::KeyNotMrk { .. }
        ));
        let d_e1 = MrkDiscoveryKeyring::new(Arc::new(w.client(E1)), None, None).unwrap();
        assert!(d_e1.unwrap_ikm(&[edk(&s)], &ec()).await.is_ok());
        assert!(
            MrkDiscoveryKeyring::new(
                Arc::new(w.client(E1)),
                Some(DiscoveryFilter {
                    partition: "aws".into(),
                    accounts: vec![]
                }),
                None
            )
            .is_err()
        );
    }
}
