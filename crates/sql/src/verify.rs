//! `sql verify`: the long-running form of the audit on one region's reader.
//!
//! - Incremental: rows read in (cursor, key) order after the last one seen, the cursor being a column the
//!   application advances on every write (`updated_at`, a sequence id). A transaction that commits after rows
//!   with a higher cursor were already read is missed by this pass, so:
//! - a full pass (the audit's scan) runs every `full_pass_every`;
//! - canaries: in the home region the verifier writes one on the primary every `canary_interval`; in every region
//!   it reads the home region's canary on its reader ([`crate::canary`]).

use std::future::Future;
use std::time::{Duration, Instant};

use ddbguard_dbe::Verdict;
use tokio_postgres::Client;

use crate::SqlError;
use crate::audit::{AuditConfig, AuditReport, judge_rows};
use crate::canary;
use crate::cipher::ValueCipher;
use crate::scan::BoundTable;

/// Tuning of a verifier.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// This region (a label).
    pub region: String,
    /// The region whose canaries are read (the primary's).
    pub home_region: String,
    /// Between two incremental reads.
    pub poll_interval: Duration,
    /// Between two full passes (`None`: only the first).
    pub full_pass_every: Option<Duration>,
    /// Between two canaries written (home region only).
    pub canary_interval: Duration,
    /// A canary older than this is missing.
    pub canary_overdue_after: Duration,
    /// Rows per page.
    pub page_size: i64,
    /// Values judged at once.
    pub concurrency: usize,
}

/// What a verifier saw until it stopped.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Values judged by the incremental reads, by verdict.
    pub incremental: std::collections::BTreeMap<Verdict, u64>,
    /// Full passes finished, and the last one's report.
    pub full_passes: u64,
    /// The last full pass.
    pub last_full_pass: Option<AuditReport>,
    /// Canaries written (home region).
    pub canaries_written: u64,
    /// Whether the canary was missing at the last check.
    pub canary_missing: bool,
}

/// Runs until `shutdown` completes. `primary` is given in the home region (canaries are written there).
pub async fn run(
    reader: &Client,
    primary: Option<&Client>,
    bound: &BoundTable,
    cipher: &dyn ValueCipher,
    config: &VerifyConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<VerifyReport, SqlError> {
    let mut report = VerifyReport::default();
    if let Some(primary) = primary {
        canary::ensure_table(primary).await?;
    }
    let mut watch = canary::Watch::new(&config.home_region, config.canary_overdue_after);
    let mut cursor: Option<(String, Vec<String>)> = None;
    let mut next_full = Some(Instant::now());
    let mut next_canary = Instant::now();
    let audit_config = AuditConfig {
        region: config.region.clone(),
        page_size: config.page_size,
        concurrency: config.concurrency,
        recheck_after: Duration::ZERO,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let now = Instant::now();
        if let Some(primary) = primary
            && now >= next_canary
        {
            match canary::write(primary, cipher, &config.home_region).await {
                Ok(_) => report.canaries_written += 1,
                Err(e) => tracing::warn!(error = %e, "sql verify: cannot write the canary"),
            }
            next_canary = now + config.canary_interval;
        }
        let seen = canary::read(reader, cipher, &config.home_region).await?;
        report.canary_missing = watch.observe(seen.as_ref());
        // On the change only, as the DynamoDB verifier: the gauge says it on every poll.
        if watch.changed() {
            if report.canary_missing {
                tracing::warn!(target: "alert", event = "canary_missing", system = "aurora",
                    origin_region = %config.home_region, region = %config.region, observation = ?seen,
                    "no fresh canary from {}: replication to {} is stalled or the key is unusable",
                    config.home_region, config.region);
            } else {
                tracing::info!(target: "alert", event = "canary_arrived", system = "aurora",
                    origin_region = %config.home_region, region = %config.region,
                    "canaries from {} arrive again", config.home_region);
            }
        }
        if next_full.is_some_and(|t| now >= t) {
            let pass = crate::audit(reader, None, bound, cipher, &audit_config, std::future::pending()).await?;
            report.full_passes += 1;
            report.last_full_pass = Some(pass);
            next_full = config.full_pass_every.map(|d| now + d);
        }
        // Incremental: every row changed since the last one seen.
        while let Some(page) = bound.cursor_page(reader, cursor.as_ref(), config.page_size).await? {
            let rows: Vec<_> = page.iter().map(|(r, _)| r.clone()).collect();
            for (r, c, verdict) in judge_rows(bound, cipher, &rows, config.concurrency).await {
                if let Some(v) = verdict {
                    *report.incremental.entry(v).or_default() += 1;
                    crate::metrics::value_judged(&bound.table.name, &config.region, &bound.table.columns[c].name, v);
                    if !v.is_pass() {
                        crate::metrics::finding(
                            &bound.table.name,
                            &config.region,
                            &bound.table.columns[c].name,
                            &rows[r].key_json(&bound.table),
                            v,
                        );
                    }
                }
            }
            let full = page.len() as i64 == config.page_size;
            if let Some((row, value)) = page.last() {
                cursor = Some((value.clone(), row.key.clone()));
            }
            if !full {
                break;
            }
        }
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(report),
            () = tokio::time::sleep(config.poll_interval) => {}
        }
    }
}
