//! `ddbguard keys check`: is an MRK usable in every region of a global table?
//!
//! For one configured key and the table's regions, [`check_keys`] reports each region's replica state
//! (`DescribeKey`), whether the replica set covers every region, and a round-trip matrix: a data key generated
//! with the replica in each region and decrypted with the replica in every region (the diagonal included).
//! Every failing cell names the regions, the key and the classified KMS error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use super::api::{EncryptionContext, KmsApi};
use super::error::{KmsError, KmsErrorKind, UnavailableReason};
use crate::arn::{ArnError, KmsArn};

/// KMS clients by region (normally [`super::GovernedKms`] sharing one rate limiter).
pub type KmsClients = BTreeMap<String, Arc<dyn KmsApi>>;

/// A problem with the inputs (a configuration error, not a key finding).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The key ARN is not usable.
    #[error(transparent)]
    Arn(#[from] ArnError),
    /// No regions to check.
    #[error("no regions to check")]
    NoRegions,
    /// No KMS client was supplied for a region.
    #[error("no KMS client for region {0}")]
    NoClient(String),
}

/// A region's replica as `DescribeKey` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum KeyState {
    /// `Enabled`.
    Enabled,
    /// `Disabled`.
    Disabled,
    /// `PendingDeletion` or `PendingReplicaDeletion`.
    PendingDeletion,
    /// No such key in the region (`NotFoundException`): the MRK was never replicated here.
    Missing,
    /// Another KMS key state (`Creating`, `Updating`, `PendingImport`, `Unavailable`, …).
    Other(String),
    /// `DescribeKey` failed (access denied, throttled, …).
    Error(CellError),
}

/// A classified KMS error, flattened for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CellError {
    /// `key_unavailable/disabled`, `integrity_failed`, `throttled`, …
    pub kind: String,
    /// The KMS error code.
    pub code: String,
    /// The message.
    pub message: String,
}

impl From<&KmsError> for CellError {
    fn from(e: &KmsError) -> CellError {
        let kind = match e.kind {
            KmsErrorKind::KeyUnavailable(r) => format!("key_unavailable/{r}"),
            k => k.outcome().to_owned(),
        };
        CellError {
            kind,
            code: e.code.clone(),
            message: e.message.clone(),
        }
    }
}

/// One region's row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct RegionReport {
    /// The region.
    pub region: String,
    /// The key ARN used in that region (the MRK replica).
    pub key_arn: String,
    /// Its state.
    pub state: KeyState,
    /// The regions KMS lists for the MRK (primary and replicas), as seen from this region.
    pub replica_regions: Vec<String>,
}

/// One cell of the round-trip matrix.
#[derive(Debug, Clone, Serialize)]
pub struct RoundTrip {
    /// Where the data key was generated.
    pub encrypt_region: String,
    /// Where it was decrypted.
    pub decrypt_region: String,
    /// Whether it came back identical.
    pub ok: bool,
    /// Why not.
    pub error: Option<CellError>,
    /// Which step failed: `generate_data_key` or `decrypt`.
    pub failed_step: Option<&'static str>,
}

/// The result of [`check_keys`].
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The configured key ARN.
    pub key_arn: String,
    /// Whether it is a multi-Region key (a single-region key cannot serve other regions).
    pub multi_region: bool,
    /// Per region, in the order given.
    pub regions: Vec<RegionReport>,
    /// Whether a replica exists in every region checked.
    pub replicas_cover_all_regions: bool,
    /// Regions with no replica.
    pub missing_regions: Vec<String>,
    /// `regions.len()²` cells, encrypt-region major.
    pub matrix: Vec<RoundTrip>,
    /// Everything enabled, covered and every cell ok.
    pub ok: bool,
}

impl CheckReport {
    /// One line per problem, naming region, key and KMS error (for the CLI's exit-1 message).
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.regions {
            match &r.state {
                KeyState::Enabled => {}
                KeyState::Error(e) => out.push(format!(
                    "{}: {}: DescribeKey failed: {} ({}): {}",
                    r.region, r.key_arn, e.kind, e.code, e.message
                )),
                s => out.push(format!("{}: {}: key state {s:?}", r.region, r.key_arn)),
            }
        }
        for c in self.matrix.iter().filter(|c| !c.ok) {
            let e = c.error.as_ref();
            out.push(format!(
                "{} -> {}: {} failed: {} ({}): {}",
                c.encrypt_region,
                c.decrypt_region,
                c.failed_step.unwrap_or("round trip"),
                e.map_or("mismatch", |e| e.kind.as_str()),
                e.map_or("", |e| e.code.as_str()),
                e.map_or("plaintext differs", |e| e.message.as_str()),
            ));
        }
        out
    }
}

fn state_of(result: &Result<super::api::KeyDescription, KmsError>) -> KeyState {
    match result {
        Ok(d) => match d.state.as_str() {
            "Enabled" => KeyState::Enabled,
            "Disabled" => KeyState::Disabled,
            "PendingDeletion" | "PendingReplicaDeletion" => KeyState::PendingDeletion,
            other => KeyState::Other(other.to_owned()),
        },
        Err(e) if e.kind == KmsErrorKind::KeyUnavailable(UnavailableReason::NotFound) => KeyState::Missing,
        Err(e) => KeyState::Error(e.into()),
    }
}

/// Checks `key_arn` in every region of `regions` with the KMS client `clients[region]` (normally governed
/// clients). `encryption_context` is sent with every GenerateDataKey/Decrypt (use the table's
/// `aws-crypto-table-name` so key policies with encryption-context conditions allow the probe).
pub async fn check_keys(
    key_arn: &str,
    regions: &[String],
    clients: &KmsClients,
    encryption_context: &EncryptionContext,
) -> Result<CheckReport, CheckError> {
    let configured = KmsArn::parse_key(key_arn)?;
    if regions.is_empty() {
        return Err(CheckError::NoRegions);
    }
    let mut per_region = Vec::new();
    for region in regions {
        let client = clients
            .get(region)
            .ok_or_else(|| CheckError::NoClient(region.clone()))?;
        let arn = if configured.is_mrk() {
            configured.replica_in(region)?.to_string()
        } else {
            configured.to_string()
        };
        per_region.push((region.clone(), arn, client.clone()));
    }

    // States, concurrently.
    let described = futures::future::join_all(
        per_region
            .iter()
            .map(|(_, arn, client)| async move { client.describe_key(arn).await }),
    )
    .await;
    let mut reports = Vec::new();
    let mut listed: BTreeSet<String> = BTreeSet::new();
    for ((region, arn, _), d) in per_region.iter().zip(&described) {
        let replica_regions = d.as_ref().map(|d| d.replica_regions.clone()).unwrap_or_default();
        listed.extend(replica_regions.iter().cloned());
        reports.push(RegionReport {
            region: region.clone(),
            key_arn: arn.clone(),
            state: state_of(d),
            replica_regions,
        });
    }
    let missing_regions: Vec<String> = reports
        .iter()
        .filter(|r| r.state == KeyState::Missing || (!listed.is_empty() && !listed.contains(&r.region)))
        .map(|r| r.region.clone())
        .collect();

    // Round trips: one data key per region, decrypted in every region.
    let generated = futures::future::join_all(
        per_region
            .iter()
            .map(|(_, arn, client)| async move { client.generate_data_key(arn, 32, encryption_context).await }),
    )
    .await;
    let mut matrix = Vec::new();
    for ((enc_region, _, _), g) in per_region.iter().zip(&generated) {
        let cells = futures::future::join_all(per_region.iter().map(|(dec_region, dec_arn, dec_client)| async move {
            let (ok, error, failed_step) = match g {
                Err(e) => (false, Some(CellError::from(e)), Some("generate_data_key")),
                Ok(dk) => match dec_client.decrypt(dec_arn, &dk.ciphertext, encryption_context).await {
                    Ok(back) if back.plaintext[..] == dk.plaintext[..] && back.key_id == *dec_arn => (true, None, None),
                    Ok(back) => (
                        false,
                        Some(CellError {
                            kind: "bad_response".into(),
                            code: "mismatch".into(),
                            message: format!("decrypt answered KeyId {} with a different key", back.key_id),
                        }),
                        Some("decrypt"),
                    ),
                    Err(e) => (false, Some(CellError::from(&e)), Some("decrypt")),
                },
            };
            RoundTrip {
                encrypt_region: enc_region.clone(),
                decrypt_region: dec_region.clone(),
                ok,
                error,
                failed_step,
            }
        }))
        .await;
        matrix.extend(cells);
    }

    let ok = reports.iter().all(|r| r.state == KeyState::Enabled)
        && missing_regions.is_empty()
        && matrix.iter().all(|c| c.ok);
    Ok(CheckReport {
        key_arn: configured.to_string(),
        multi_region: configured.is_mrk(),
        regions: reports,
        replicas_cover_all_regions: missing_regions.is_empty(),
        missing_regions,
        matrix,
        ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::fake::{FakeKeyState, FakeKmsWorld};

    const MRK_E1: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";
    const MRK_AP: &str = "arn:aws:kms:ap-southeast-2:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";

    fn setup() -> (Arc<FakeKmsWorld>, Vec<String>, KmsClients) {
        let w = FakeKmsWorld::new();
        w.create_key(MRK_E1);
        w.create_key(MRK_AP);
        let regions = vec!["us-east-1".to_owned(), "ap-southeast-2".to_owned()];
        let clients = regions
            .iter()
            .map(|r| (r.clone(), Arc::new(w.client(r)) as Arc<dyn KmsApi>))
            .collect();
        (w, regions, clients)
    }

    fn ec() -> EncryptionContext {
        [("aws-crypto-table-name".to_owned(), "orders".to_owned())].into()
    }

    #[tokio::test]
    async fn healthy_two_regions() {
        let (_w, regions, clients) = setup();
        let r = check_keys(MRK_E1, &regions, &clients, &ec()).await.unwrap();
        assert!(r.ok, "{:#?}", r);
        assert_eq!(r.matrix.len(), 4);
        assert!(r.replicas_cover_all_regions);
        assert!(r.failures().is_empty());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["regions"][1]["state"]["state"], "enabled");
    }

    #[tokio::test]
    async fn disabled_replica_names_the_region() {
        let (w, regions, clients) = setup();
        w.set_state(MRK_AP, FakeKeyState::Disabled);
        let r = check_keys(MRK_E1, &regions, &clients, &ec()).await.unwrap();
        assert!(!r.ok);
        assert_eq!(r.regions[1].state, KeyState::Disabled);
        let bad: Vec<_> = r.matrix.iter().filter(|c| !c.ok).collect();
        // Generated in ap-southeast-2 (both cells) and decrypted there from us-east-1.
        assert_eq!(bad.len(), 3);
        assert!(
            bad.iter()
                .all(|c| c.error.as_ref().unwrap().kind == "key_unavailable/disabled")
        );
        let f = r.failures().join("\n");
        assert!(f.contains("ap-southeast-2") && f.contains(MRK_AP), "{f}");
    }

    #[tokio::test]
    async fn missing_replica_is_not_covered() {
        let (w, regions, clients) = setup();
        w.remove_key(MRK_AP);
        let r = check_keys(MRK_E1, &regions, &clients, &ec()).await.unwrap();
        assert!(!r.ok && !r.replicas_cover_all_regions);
        assert_eq!(r.missing_regions, vec!["ap-southeast-2".to_owned()]);
        assert_eq!(r.regions[1].state, KeyState::Missing);
    }

    #[tokio::test]
    async fn config_errors() {
        let (_w, regions, clients) = setup();
        assert!(matches!(
            check_keys("alias/x", &regions, &clients, &ec()).await,
            Err(CheckError::Arn(_))
        ));
        assert!(matches!(
            check_keys(MRK_E1, &[], &clients, &ec()).await,
            Err(CheckError::NoRegions)
        ));
        assert!(matches!(
            check_keys(MRK_E1, &["eu-west-1".to_owned()], &clients, &ec()).await,
            Err(CheckError::NoClient(_))
        ));
    }
}
