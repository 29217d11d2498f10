//! The stream reader's [`RecordSink`]: verifies each batch and keeps the run's counts.
//!
//! - Records of a batch are verified with bounded concurrency ([`VerifySink::with_concurrency`], default
//!   [`DEFAULT_CONCURRENCY`]), so a KMS round trip per sampled record does not serialize the batch.
//! - Redelivered records (`RecordBatch::is_duplicate`) were verified and checkpointed before: they are skipped and
//!   counted in `duplicates_skipped`, so metrics and the summary count each record once.
//! - `kms_throttled` is not a final verdict: if any record of a batch is throttled, the throttled records are
//!   counted (`ddbguard_records_total{verdict="kms_throttled"}`, summary `throttled_retries`) and logged, and the
//!   batch is returned as a [`SinkError`]. The reader then offers the same batch again after its backoff instead
//!   of checkpointing past it. The other records' outcomes are kept for that retry (per shard, one batch: the
//!   reader never has two batches of a shard in flight), so the retry verifies only the throttled records again
//!   (no second KMS call per record); every outcome is counted when the batch succeeds, so nothing is counted
//!   twice as a final verdict.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use ddbguard_dbe::Verdict;
use ddbguard_stream::{RecordBatch, RecordSink, SinkError, StreamGap};
use futures::StreamExt;
use serde::Serialize;

use crate::canary::Canaries;
use crate::engine::{RecordOutcome, UNKNOWN_ORIGIN, Verifier};
use crate::quarantine::Quarantine;

/// Records of one batch verified at the same time.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// At most this many shards' throttled batches are kept for their retry.
const MAX_PENDING_RETRIES: usize = 1024;

/// A gap as the summary reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GapSummary {
    /// Table label.
    pub table: String,
    /// Shard with the gap.
    pub shard_id: String,
    /// Last sequence number processed before the gap.
    pub checkpoint: Option<String>,
    /// First sequence number read after the gap.
    pub first_available: Option<String>,
    /// Why (`trimmed_data_access`, `checkpoint_older_than_retention`, `shard_not_found`,
    /// `stream_replaced`).
    pub reason: &'static str,
}

impl From<&StreamGap> for GapSummary {
    fn from(gap: &StreamGap) -> GapSummary {
        GapSummary {
            table: gap.table.clone(),
            shard_id: gap.shard_id.clone(),
            checkpoint: gap.checkpoint.as_ref().map(ToString::to_string),
            first_available: gap.first_available.as_ref().map(ToString::to_string),
            reason: gap.reason.as_str(),
        }
    }
}

/// What a run verified: the JSON printed by `ddbguard verify --until-caught-up`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifySummary {
    /// Table label.
    pub table: String,
    /// Verifying region.
    pub region: String,
    /// Records with a final verdict.
    pub records: u64,
    /// Final verdicts, serialized by label (`ok`, `ok_structural`, …).
    pub by_verdict: BTreeMap<Verdict, u64>,
    /// Final verdicts by origin region (`unknown` when not known) and label: the origin × region matrix row of
    /// this region.
    pub by_origin: BTreeMap<String, BTreeMap<Verdict, u64>>,
    /// Redelivered records skipped (already verified before their checkpoint).
    pub duplicates_skipped: u64,
    /// Records that were throttled by KMS and whose batch was handed back for a retry.
    pub throttled_retries: u64,
    /// Stream gaps (records trimmed before they could be read), the first [`MAX_LISTED_GAPS`].
    pub gaps: Vec<GapSummary>,
    /// Gaps beyond those listed: counted, not kept (a process that runs for months must not hold every gap).
    #[serde(skip_serializing_if = "is_zero")]
    pub gaps_not_listed: u64,
    /// Canary records (not counted in `records`), by origin region and verdict.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub canaries: BTreeMap<String, BTreeMap<Verdict, u64>>,
}

/// At most this many gaps are listed in a [`VerifySummary`].
pub const MAX_LISTED_GAPS: usize = 1000;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl VerifySummary {
    /// Counts one final outcome.
    pub fn add(&mut self, outcome: &RecordOutcome) {
        let verdict = outcome.verdict;
        let origin = outcome.origin_region.as_deref().unwrap_or(UNKNOWN_ORIGIN);
        self.records += 1;
        *self.by_verdict.entry(verdict).or_default() += 1;
        *self
            .by_origin
            .entry(origin.to_owned())
            .or_default()
            .entry(verdict)
            .or_default() += 1;
    }

    /// Records whose final verdict is not `ok`, `ok_structural` or `remove`.
    pub fn failures(&self) -> u64 {
        self.by_verdict
            .iter()
            .filter(|(v, _)| !v.is_pass())
            .map(|(_, n)| n)
            .sum()
    }

    /// Canary records whose verdict did not pass.
    pub fn canary_failures(&self) -> u64 {
        self.canaries
            .values()
            .flat_map(|by_verdict| by_verdict.iter())
            .filter(|(v, _)| !v.is_pass())
            .map(|(_, n)| n)
            .sum()
    }

    /// Whether every final verdict passed (`ok`, `ok_structural`, `remove`), canaries included.
    pub fn all_verdicts_pass(&self) -> bool {
        self.failures() == 0 && self.canary_failures() == 0
    }

    /// Whether every verdict passed and no gap was seen (records lost to a gap were never verified).
    pub fn passed(&self) -> bool {
        self.all_verdicts_pass() && self.gaps.is_empty() && self.gaps_not_listed == 0
    }
}

/// The [`RecordSink`] of `ddbguard verify`.
#[derive(Debug)]
pub struct VerifySink {
    verifier: Arc<Verifier>,
    concurrency: usize,
    summary: Mutex<VerifySummary>,
    /// Per shard, the final outcomes of the last batch handed back for a KMS throttle, for its retry.
    retries: Mutex<HashMap<String, Retry>>,
    /// Where records with a failing final verdict are kept, if anywhere.
    quarantine: Option<Quarantine>,
    /// Recognises canary records, which are judged and measured apart from application records.
    canaries: Option<Arc<Canaries>>,
}

/// What a throttled batch already settled: outcomes by the record's position, valid for the same records only.
#[derive(Debug)]
struct Retry {
    /// Event ids of the batch's records, to recognise the same batch.
    event_ids: Vec<String>,
    /// Final outcomes by record index (`None`: throttled, or a duplicate).
    outcomes: Vec<Option<RecordOutcome>>,
}

impl VerifySink {
    /// A sink verifying with `verifier`, [`DEFAULT_CONCURRENCY`] records at a time.
    pub fn new(verifier: Arc<Verifier>) -> VerifySink {
        let summary = VerifySummary {
            table: verifier.table().to_owned(),
            region: verifier.region().to_owned(),
            ..VerifySummary::default()
        };
        VerifySink {
            verifier,
            concurrency: DEFAULT_CONCURRENCY,
            summary: Mutex::new(summary),
            retries: Mutex::new(HashMap::new()),
            quarantine: None,
            canaries: None,
        }
    }

    /// Judges canary records with `canaries` (lag, missing, verdict) instead of counting them as records.
    pub fn with_canaries(mut self, canaries: Arc<Canaries>) -> VerifySink {
        self.canaries = Some(canaries);
        self
    }

    /// Hands every record with a failing final verdict to `quarantine` (without waiting for its write).
    pub fn with_quarantine(mut self, quarantine: Quarantine) -> VerifySink {
        self.quarantine = Some(quarantine);
        self
    }

    /// Verifies up to `n` records of a batch at the same time (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> VerifySink {
        self.concurrency = n.max(1);
        self
    }

    /// The verifier.
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// A snapshot of the counts so far.
    pub fn summary(&self) -> VerifySummary {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VerifySummary> {
        // The summary is plain counters: a panic elsewhere cannot leave it inconsistent enough to matter.
        self.summary.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn retries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Retry>> {
        self.retries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Verifies a batch; `Err` when KMS throttled any record (the batch must be retried, not checkpointed).
    pub async fn verify_batch(&self, batch: &RecordBatch) -> Result<Vec<RecordOutcome>, SinkError> {
        let verifier = &self.verifier;
        let event_ids: Vec<String> = batch.records.iter().map(|r| r.event_id.clone()).collect();
        // Outcomes settled by an earlier attempt of this very batch (same records, same order).
        let mut settled: Vec<Option<RecordOutcome>> = match self.retries().remove(&batch.shard_id) {
            Some(retry) if retry.event_ids == event_ids => retry.outcomes,
            _ => vec![None; batch.records.len()],
        };
        let first = batch.duplicates.min(batch.records.len());
        // Canaries are set apart before anything is counted; they are judged once the batch is accepted.
        let canaries: Vec<(usize, String)> = match &self.canaries {
            Some(c) => (first..batch.records.len())
                .filter_map(|i| c.recognize(&batch.records[i]).map(|origin| (i, origin)))
                .collect(),
            None => Vec::new(),
        };
        let todo: Vec<usize> = (first..batch.records.len())
            .filter(|&i| settled[i].is_none() && !canaries.iter().any(|(c, _)| *c == i))
            .collect();
        // Collected first: iterator adapters with closures held across the await would make this future's
        // `Send` bound unprovable for the reader's `impl Future + Send`.
        let pending: Vec<_> = todo.iter().map(|&i| verifier.evaluate(&batch.records[i])).collect();
        let fresh: Vec<RecordOutcome> = futures::stream::iter(pending)
            .buffered(self.concurrency)
            .collect()
            .await;
        let mut throttled = 0usize;
        for (i, outcome) in todo.into_iter().zip(fresh) {
            if outcome.verdict == Verdict::KmsThrottled {
                verifier.report(&outcome);
                throttled += 1;
            } else {
                settled[i] = Some(outcome);
            }
        }
        if throttled > 0 {
            self.lock().throttled_retries += throttled as u64;
            let total = batch.records.len() - batch.duplicates.min(batch.records.len());
            let mut retries = self.retries();
            // Entries of shards that moved to another worker before their retry are never taken back; a bound
            // keeps a process that runs for months from collecting them (losing one only costs KMS calls).
            if retries.len() >= MAX_PENDING_RETRIES {
                retries.clear();
            }
            retries.insert(
                batch.shard_id.clone(),
                Retry {
                    event_ids,
                    outcomes: settled,
                },
            );
            return Err(SinkError::new(format!(
                "{throttled} of {total} record(s) from shard {} throttled by KMS; the batch will be retried",
                batch.shard_id
            )));
        }
        let mut observed = Vec::with_capacity(canaries.len());
        if let Some(c) = &self.canaries {
            for (i, origin) in &canaries {
                observed.push(c.observe(verifier.judge(), &batch.records[*i], origin).await);
            }
        }
        if let Some(quarantine) = &self.quarantine {
            for (record, outcome) in batch.records.iter().zip(&settled) {
                if let Some(outcome) = outcome.as_ref().filter(|o| !o.is_pass()) {
                    quarantine.submit(verifier.region(), &batch.shard_id, record, outcome);
                }
            }
        }
        let outcomes: Vec<RecordOutcome> = settled.into_iter().flatten().collect();

        let mut summary = self.lock();
        summary.duplicates_skipped += batch.duplicates.min(batch.records.len()) as u64;
        for outcome in &outcomes {
            verifier.report(outcome);
            summary.add(outcome);
        }
        for canary in observed {
            *summary
                .canaries
                .entry(canary.origin)
                .or_default()
                .entry(canary.verdict)
                .or_default() += 1;
        }
        drop(summary);
        Ok(outcomes)
    }
}

impl RecordSink for VerifySink {
    async fn process(&self, batch: &RecordBatch) -> Result<(), SinkError> {
        self.verify_batch(batch).await.map(drop)
    }

    fn on_gap(&self, gap: &StreamGap) {
        let mut summary = self.lock();
        if summary.gaps.len() < MAX_LISTED_GAPS {
            summary.gaps.push(GapSummary::from(gap));
        } else {
            summary.gaps_not_listed += 1;
        }
    }
}
