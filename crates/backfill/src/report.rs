//! Counting a run as it goes ([`Tally`]), the periodic [`Progress`] snapshot, and the final [`Report`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use ddbguard_ddb::Item;
use serde::Serialize;

use ddbguard_verify::convert::attribute_from_table;

use crate::limiter::Budgets;
use crate::rewrite::Outcome;

/// At most this many sample keys are kept per outcome (the report lists them; memory stays bounded).
pub const SAMPLE_KEYS: usize = 10;

#[derive(Debug, Default)]
struct Inner {
    scanned: u64,
    scanned_bytes: u64,
    outcomes: BTreeMap<&'static str, u64>,
    outcome_bytes: BTreeMap<&'static str, u64>,
    verdicts: BTreeMap<String, u64>,
    legacy_refused: BTreeMap<String, BTreeMap<String, u64>>,
    samples: BTreeMap<&'static str, Vec<serde_json::Value>>,
    kms_calls: f64,
    would_write_bytes: u64,
    segments_finished: u32,
}

/// Counters shared by every segment task of a run.
#[derive(Debug, Default)]
pub struct Tally {
    inner: Mutex<Inner>,
}

impl Tally {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A scanned page: its items and bytes.
    pub fn scanned(&self, items: u64, bytes: u64) {
        let mut t = self.lock();
        t.scanned += items;
        t.scanned_bytes += bytes;
    }

    /// One item's outcome; `key` is its primary key (kept as a sample for the report, never a value),
    /// `kms_calls` what it cost ([`Outcome::kms_calls`]), `bytes` its size as scanned.
    pub fn outcome(&self, outcome: &Outcome, key: &Item, kms_calls: f64, bytes: u64) {
        let mut t = self.lock();
        let label = outcome.label();
        *t.outcomes.entry(label).or_default() += 1;
        *t.outcome_bytes.entry(label).or_default() += bytes;
        match outcome {
            Outcome::AlreadyEncrypted { verdict, .. } => *t.verdicts.entry(verdict.to_string()).or_default() += 1,
            Outcome::WouldEncrypt { encrypted_bytes } | Outcome::WouldMigrateLegacy { encrypted_bytes } => {
                t.would_write_bytes += *encrypted_bytes as u64
            }
            Outcome::LegacyRefused { verdict, reason } => {
                *t.legacy_refused
                    .entry(verdict.to_string())
                    .or_default()
                    .entry(reason.to_string())
                    .or_default() += 1
            }
            _ => {}
        }
        t.kms_calls += kms_calls;
        let interesting = !matches!(
            outcome,
            Outcome::Encrypted { .. }
                | Outcome::MigratedLegacy { .. }
                | Outcome::AlreadyEncrypted {
                    verdict: ddbguard_dbe::Verdict::OkStructural,
                    ..
                }
        );
        if interesting {
            let samples = t.samples.entry(label).or_default();
            if samples.len() < SAMPLE_KEYS {
                samples.push(key_json(key));
            }
        }
    }

    /// A segment read to its end.
    pub fn segment_finished(&self) {
        self.lock().segments_finished += 1;
    }

    /// The numbers so far; consumed capacity is what the budgets were charged.
    pub fn snapshot(
        &self,
        budgets: &Budgets,
        elapsed: Duration,
        segments: u32,
        estimated_items: Option<u64>,
    ) -> Progress {
        let t = self.lock();
        let secs = elapsed.as_secs_f64().max(1e-3);
        let rate = t.scanned as f64 / secs;
        let eta_seconds = estimated_items
            .filter(|n| *n > t.scanned && rate > 0.0)
            .map(|n| ((n - t.scanned) as f64 / rate).ceil() as u64);
        Progress {
            elapsed_seconds: elapsed.as_secs_f64(),
            scanned: t.scanned,
            scanned_bytes: t.scanned_bytes,
            outcomes: t.outcomes.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            verdicts: t.verdicts.clone(),
            legacy_refused: t.legacy_refused.clone(),
            items_per_second: rate,
            read_units: budgets.read.charged(),
            write_units: budgets.write.charged(),
            kms_calls: t.kms_calls,
            segments_finished: t.segments_finished,
            segments,
            estimated_items,
            eta_seconds,
        }
    }

    /// The sample keys per outcome.
    pub fn samples(&self) -> BTreeMap<String, Vec<serde_json::Value>> {
        self.lock()
            .samples
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    /// Bytes scanned, by outcome.
    pub fn bytes_by_outcome(&self) -> BTreeMap<String, u64> {
        self.lock()
            .outcome_bytes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect()
    }

    /// Bytes the dry run's encrypted items would write.
    pub fn would_write_bytes(&self) -> u64 {
        self.lock().would_write_bytes
    }
}

/// A primary key as DynamoDB JSON, attributes in name order, for samples and for matching items across regions
/// (keys are never encrypted; values of other attributes are never reported).
pub(crate) fn key_json(key: &Item) -> serde_json::Value {
    let mut names: Vec<&String> = key.keys().collect();
    names.sort();
    let mut out = serde_json::Map::new();
    for name in names {
        let json = match attribute_from_table(&key[name], name) {
            Ok(v) => ddbguard_dbe::json::attribute_to_ddb_json(&v),
            Err(e) => serde_json::Value::String(format!("<{}>", e.reason().as_str())),
        };
        out.insert(name.clone(), json);
    }
    serde_json::Value::Object(out)
}

/// A snapshot of a running job, for the progress bar and the JSON progress lines.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Progress {
    /// Seconds since the start.
    pub elapsed_seconds: f64,
    /// Items scanned.
    pub scanned: u64,
    /// Bytes scanned.
    pub scanned_bytes: u64,
    /// Items by outcome (`encrypted`, `migrated_legacy`, `already_encrypted`, `legacy_format`, `legacy_refused`, …).
    pub outcomes: BTreeMap<String, u64>,
    /// Items already in the DB-ESDK format, by structural verdict.
    pub verdicts: BTreeMap<String, u64>,
    /// Legacy items that did not verify (`legacy_refused`), by verdict and reason; left out when there are none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub legacy_refused: BTreeMap<String, BTreeMap<String, u64>>,
    /// Scan rate.
    pub items_per_second: f64,
    /// Read capacity units consumed (estimated where the endpoint does not report them).
    pub read_units: f64,
    /// Write capacity units consumed (same).
    pub write_units: f64,
    /// KMS requests made for encryption and for judging legacy items.
    pub kms_calls: f64,
    /// Segments read to their end (by every process sharing the ledger, as seen by this one).
    pub segments_finished: u32,
    /// Segments of the job.
    pub segments: u32,
    /// The table's approximate item count (DynamoDB updates it about every six hours).
    pub estimated_items: Option<u64>,
    /// Seconds left at the current rate, when the item count is known.
    pub eta_seconds: Option<u64>,
}

impl Progress {
    /// Items counted under `label`.
    pub fn count(&self, label: &str) -> u64 {
        self.outcomes.get(label).copied().unwrap_or(0)
    }
}

/// How a run ended (of the DynamoDB backfill, and of the Aurora one in `ddbguard-sql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Completion {
    /// The whole job is finished (now or by an earlier run).
    Finished,
    /// Stopped by a signal at a page boundary; every finished page is checkpointed.
    Interrupted,
    /// Stopped after it started by a failure of the database or the ledger that retries did not cure (the
    /// report's `error` says which); every finished page is checkpointed and a rerun resumes.
    Failed,
}

impl Completion {
    /// The exit code of a run that ended so with `failed` items (or values) that could not be processed and `left`
    /// ones left after repeated conflicts: 130 interrupted, 4 failed after it started, 1 failures, 3 left, 0.
    pub fn exit_code(self, failed: u64, left: u64) -> u8 {
        match self {
            Completion::Interrupted => 130,
            Completion::Failed => 4,
            Completion::Finished if failed > 0 => 1,
            Completion::Finished if left > 0 => 3,
            Completion::Finished => 0,
        }
    }
}

/// The final report of a run (printed as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The table.
    pub table: String,
    /// The region written.
    pub region: String,
    /// The job (`backfill`, or the migration id).
    pub job: String,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// How the run ended.
    pub completion: Completion,
    /// The numbers.
    pub progress: Progress,
    /// Bytes of the scanned items (as read), by outcome.
    pub bytes_by_outcome: BTreeMap<String, u64>,
    /// Up to ten primary keys per outcome other than `encrypted`.
    pub samples: BTreeMap<String, Vec<serde_json::Value>>,
    /// Write units per encrypted or migrated item (the minimum is 1 per started KB of the encrypted item).
    pub write_units_per_item: Option<f64>,
    /// The budget callers waited for most (`read_capacity`, `write_capacity`, `kms`), if any.
    pub limited_by: Option<&'static str>,
    /// Dry run: bytes the encrypted items would occupy.
    pub would_write_bytes: Option<u64>,
    /// Dry run: seconds the run would take at the configured rates.
    pub estimated_seconds: Option<f64>,
    /// Why the run stopped, when it [`Completion::Failed`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Write units a dry run's writes would cost: one per started KB of all the encrypted items' bytes, and at least
/// one per item (plaintext items to encrypt and legacy items to migrate alike).
pub fn would_write_units(would_write_bytes: u64, progress: &Progress) -> u64 {
    let items = progress.count("would_encrypt") + progress.count("would_migrate_legacy");
    would_write_bytes.div_ceil(1024).max(items)
}

impl Report {
    /// Dry run: the write units the run would cost ([`would_write_units`]); 0 for a real run.
    pub fn would_write_units(&self) -> u64 {
        self.would_write_bytes
            .map_or(0, |bytes| would_write_units(bytes, &self.progress))
    }

    /// Items that could not be processed, legacy items refused included (exit 1).
    pub fn failed(&self) -> u64 {
        self.progress.count("failed") + self.legacy_refused()
    }

    /// Legacy items that did not verify and were left as they were.
    pub fn legacy_refused(&self) -> u64 {
        self.progress.count("legacy_refused")
    }

    /// Items left plaintext after repeated conflicts with the application (exit 3).
    pub fn skipped_after_conflicts(&self) -> u64 {
        self.progress.count("skipped_conflicts")
    }
}
