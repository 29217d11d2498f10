//! `ddbguard audit`: every item of a table judged, and optionally compared with its copy in another replica.
//!
//! The proof that a migration finished and the replicas agree:
//!
//! - **Verdicts.** A parallel scan of the whole table in the local region (segments run concurrently in this
//!   process, at most [`AuditConfig::concurrency`] at once; no leases: an audit is one process and keeps no
//!   position). Each item goes to the [`Verifier`] `verify` uses for the table: the same judge, the same sampling
//!   (`sample_rate` decides [`Depth::Full`] or [`Depth::Structural`], keyed by the item's primary key instead of a
//!   stream event id, so a re-run samples the same items), and the same `ddbguard_records_total{table,region,
//!   origin_region,verdict}` series and `alert` events. That series has no label telling a scanned item from a
//!   stream record: an audit is its own short-lived process, so its counts never mix with a verifier's.
//!   `kms_throttled` is retried with backoff before it is counted.
//! - **Replicas** ([`Replica`]). For every local page, one consistent `BatchGetItem` (a page is at most 100
//!   items) in the other region; unprocessed keys and throttling are retried with jittered backoff. Items are
//!   compared attribute by attribute (sets as sets, numbers by value): `different` names the attributes that
//!   differ, never their values; `missing_in_<region>` lists keys. Then the other region is scanned the same way
//!   and its keys are looked up locally, to find items missing locally. A mismatch may be a write still being
//!   replicated: before it is reported, both sides are read again (consistently) after
//!   [`AuditConfig::recheck_after`], and only a mismatch that persists is reported.
//!
//! Memory stays bounded whatever the table's size: one page per running segment, a bounded number of sample
//! keys per failing verdict and of listed mismatches (beyond those, only counts).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ddbguard_dbe::{Reason, Verdict};
use ddbguard_ddb::size::{item_size, read_units};
use ddbguard_ddb::{AttributeValue, Backoff, DdbError, DynamoApi, ErrorKind, Item, ScanSegment, TableDescription};
use ddbguard_verify::canary::{CanaryLayout, CanarySettings};
use ddbguard_verify::convert::table_item_to_item;
use ddbguard_verify::{Depth, Judgement, RecordOutcome, Verifier, VerifySummary};
use futures::StreamExt as _;
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::engine::{MAX_SEGMENTS, default_segments};
use crate::limiter::{Budget, BudgetKind};
use crate::report::{Completion, key_json};
use crate::scan::{self, PageError};
use crate::table::{TableCheckError, describe_keyed};

/// DynamoDB's limit of keys in one `BatchGetItem`.
pub const MAX_BATCH_GET: usize = 100;

/// How an audit is done.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `TotalSegments` of each region's parallel scan; `None`: [`default_segments`] of the local table's size.
    pub segments: Option<u32>,
    /// Segments scanned at once (the two regions' scans share this bound).
    pub concurrency: usize,
    /// Items per scan page, `1..=100`, so that a page's lookup in the other region is one `BatchGetItem`.
    pub page_size: u32,
    /// Items of one page judged at once.
    pub item_concurrency: usize,
    /// Read capacity units per second, in each region (`None`: unlimited).
    pub read_units_per_second: Option<f64>,
    /// Consecutive retries of a throttled or failing DynamoDB call (or a KMS-throttled verdict) before giving up.
    pub max_retries: u32,
    /// First retry delay; doubles with jitter up to 100 times this.
    pub retry_backoff: Duration,
    /// A replica mismatch is read again on both sides after this long and reported only if it persists (a write
    /// replicating meanwhile is not a finding). Zero reports mismatches at once.
    pub recheck_after: Duration,
    /// Sample primary keys kept per failing verdict.
    pub sample_keys: usize,
    /// Keys listed per replica finding (`missing_in_…`, `different`); beyond that only counted.
    pub max_listed: usize,
    /// How often a progress line is logged.
    pub progress_interval: Duration,
    /// The verifiers' canaries (key prefix and origin regions): canary items are counted apart, never judged or
    /// compared (each region overwrites its own every few seconds). `None`: canary keys are items like any other.
    pub canaries: Option<CanarySettings>,
}

impl Default for AuditConfig {
    /// 4 segments at once, pages of 100, 16 items at once, no rate limit, 10 retries from 100 ms, re-check after
    /// 2 s, 10 sample keys per verdict, 1,000 listed keys per finding, progress every 10 s.
    fn default() -> Self {
        AuditConfig {
            segments: None,
            concurrency: 4,
            page_size: 100,
            item_concurrency: 16,
            read_units_per_second: None,
            max_retries: 10,
            retry_backoff: Duration::from_millis(100),
            recheck_after: Duration::from_secs(2),
            sample_keys: 10,
            max_listed: 1000,
            progress_interval: Duration::from_secs(10),
            canaries: None,
        }
    }
}

/// The other replica of a global table, to compare with.
#[derive(Debug, Clone)]
pub struct Replica<R> {
    /// Its region (names `missing_in_<region>`).
    pub region: String,
    /// DynamoDB in that region.
    pub db: R,
}

/// Why an audit could not start or could not finish. Findings about items are in the report, not errors.
#[derive(Debug, Error)]
pub enum AuditError {
    /// The table is not in a region.
    #[error("table {table:?} does not exist in {region}")]
    TableNotFound {
        /// The table.
        table: String,
        /// The region.
        region: String,
    },
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// A segment task ended abnormally (a bug, not a finding).
    #[error("an audit task failed: {0}")]
    Task(String),
    /// DynamoDB failed in a region in a way retrying did not cure.
    #[error("{region}: {source}")]
    Dynamo {
        /// The region.
        region: String,
        /// The failure.
        #[source]
        source: DdbError,
    },
}

/// Primary keys of one replica finding: how many, and the first ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KeyList {
    /// Items with this finding.
    pub count: u64,
    /// Their primary keys as DynamoDB JSON (the first [`AuditConfig::max_listed`]).
    pub keys: Vec<Value>,
}

/// An item whose replicas differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// The primary key as DynamoDB JSON.
    pub key: Value,
    /// Attributes whose values differ or that only one replica has (names only, never values).
    pub attributes: Vec<String>,
}

/// Items whose replicas differ.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Differences {
    /// How many.
    pub count: u64,
    /// The first [`AuditConfig::max_listed`].
    pub items: Vec<Difference>,
}

/// The comparison with the other replica.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CompareReport {
    /// The other region.
    pub region: String,
    /// Local items looked up in the other region.
    pub compared: u64,
    /// Of those, identical in both.
    pub identical: u64,
    /// Items of the other region looked up locally.
    pub reverse_checked: u64,
    /// `missing_in_<region>` for each region: items only the other region has.
    #[serde(flatten)]
    pub missing: BTreeMap<String, KeyList>,
    /// Items both regions have, with different attributes.
    pub different: Differences,
    /// Read capacity consumed in the other region (scan and lookups).
    pub read_units: f64,
}

impl CompareReport {
    /// Whether both replicas hold the same items with the same attributes.
    pub fn agrees(&self) -> bool {
        self.different.count == 0 && self.missing.values().all(|m| m.count == 0)
    }
}

/// What an audit found: printed as JSON by `ddbguard audit`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// The table.
    pub table: String,
    /// The local region.
    pub region: String,
    /// `finished`, or `interrupted` by a signal (then not every item was audited).
    pub completion: Completion,
    /// `TotalSegments` of the scans.
    pub segments: u32,
    /// Items judged.
    pub items: u64,
    /// Canary items of the verifiers, left out of every count and comparison.
    #[serde(skip_serializing_if = "is_zero")]
    pub canaries: u64,
    /// Items by verdict (`ok`, `ok_structural`, `plaintext`, …).
    pub by_verdict: BTreeMap<Verdict, u64>,
    /// Items whose verdict does not pass.
    pub failures: u64,
    /// Items by verdict and reason.
    pub by_reason: BTreeMap<Verdict, BTreeMap<Reason, u64>>,
    /// Items by origin region (`unknown` when not known) and verdict.
    pub by_origin: BTreeMap<String, BTreeMap<Verdict, u64>>,
    /// Items by format (`dbesdk`, which also counts items in neither format, or `ddbec` for the legacy
    /// DynamoDB Encryption Client's) and verdict: after `backfill --from-legacy`, no `ddbec` entry.
    pub by_format: BTreeMap<&'static str, BTreeMap<Verdict, u64>>,
    /// Verdicts retried because KMS throttled.
    pub throttled_retries: u64,
    /// Up to [`AuditConfig::sample_keys`] primary keys per failing verdict.
    pub samples: BTreeMap<Verdict, Vec<Value>>,
    /// Bytes scanned in the local region.
    pub scanned_bytes: u64,
    /// Read capacity consumed in the local region.
    pub read_units: f64,
    /// The comparison with the other replica, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareReport>,
    /// Seconds the audit took.
    pub elapsed_seconds: f64,
    /// Whether the audit finished, every verdict passed and (with a comparison) the replicas agree.
    pub passed: bool,
}

/// The running counts.
#[derive(Debug, Default)]
struct Tally {
    summary: VerifySummary,
    by_reason: BTreeMap<Verdict, BTreeMap<Reason, u64>>,
    by_format: BTreeMap<&'static str, BTreeMap<Verdict, u64>>,
    samples: BTreeMap<Verdict, Vec<Value>>,
    scanned_bytes: u64,
    compare: CompareReport,
    segments_finished: u32,
    canaries: u64,
}

/// Which region a segment task scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The local region: judge, and compare with the replica.
    Local,
    /// The replica: look its keys up locally.
    Remote,
}

struct Shared<L, R> {
    local: L,
    canaries: Option<CanaryLayout>,
    replica: Option<Replica<R>>,
    verifier: Arc<Verifier>,
    table: String,
    key_names: Vec<String>,
    config: AuditConfig,
    local_budget: Budget,
    remote_budget: Budget,
    tally: Mutex<Tally>,
    stop: AtomicBool,
    fatal: Mutex<Option<AuditError>>,
}

impl<L, R> Shared<L, R> {
    fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, error: AuditError) {
        self.stop.store(true, Ordering::SeqCst);
        let mut fatal = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
        fatal.get_or_insert(error);
    }

    fn local_region(&self) -> &str {
        self.verifier.region()
    }
}

/// Audits `table` in the verifier's region through `local`, and compares it with `replica` when given. Stops at
/// page boundaries once `shutdown` completes (the report then says `interrupted`).
pub async fn audit<L, R>(
    local: L,
    verifier: Arc<Verifier>,
    table: &str,
    replica: Option<Replica<R>>,
    config: AuditConfig,
    shutdown: impl Future,
) -> Result<AuditReport, AuditError>
where
    L: DynamoApi,
    R: DynamoApi,
{
    if config.concurrency == 0
        || config.item_concurrency == 0
        || config.progress_interval.is_zero()
        || !(1..=MAX_BATCH_GET as u32).contains(&config.page_size)
    {
        return Err(AuditError::Config(
            "concurrency and item concurrency must be at least 1, the progress interval above zero, the page size \
             within 1..=100"
                .into(),
        ));
    }
    let region = verifier.region().to_owned();
    let key_names: Vec<String> = verifier.policy().table.config.key_names().map(str::to_owned).collect();
    let description = describe(&local, table, &region, &key_names).await?;
    if let Some(r) = &replica {
        if r.region == region {
            return Err(AuditError::Config(format!(
                "--compare-region {} is the local region: compare with another replica",
                r.region
            )));
        }
        let other = describe(&r.db, table, &r.region, &key_names).await?;
        if other.key_schema != description.key_schema {
            return Err(AuditError::Config(format!(
                "table {table:?} has another key schema in {} than in {region}",
                r.region
            )));
        }
    }
    let canaries = match &config.canaries {
        Some(c) => Some(
            CanaryLayout::new(&description.key_schema, &c.prefix, &c.origins)
                .map_err(|e| AuditError::Config(format!("canaries: {e}")))?,
        ),
        None => None,
    };
    let segments = config
        .segments
        .unwrap_or_else(|| default_segments(description.size_bytes));
    if segments == 0 || segments > MAX_SEGMENTS {
        return Err(AuditError::Config(format!(
            "segments must be within 1..={MAX_SEGMENTS}"
        )));
    }
    let mut tally = Tally::default();
    tally.summary.table = verifier.table().to_owned();
    tally.summary.region = region.clone();
    if let Some(r) = &replica {
        tally.compare.region = r.region.clone();
        for name in [&region, &r.region] {
            tally
                .compare
                .missing
                .insert(format!("missing_in_{name}"), KeyList::default());
        }
    }
    let shared = Arc::new(Shared {
        local_budget: Budget::new(BudgetKind::ReadCapacity, config.read_units_per_second),
        remote_budget: Budget::new(BudgetKind::ReadCapacity, config.read_units_per_second),
        local,
        canaries,
        replica,
        verifier,
        table: table.to_owned(),
        key_names,
        config,
        tally: Mutex::new(tally),
        stop: AtomicBool::new(false),
        fatal: Mutex::new(None),
    });

    let started = Instant::now();
    let completion = drive(&shared, segments, shutdown).await;
    if let Some(e) = shared.fatal.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(e);
    }
    Ok(report(&shared, segments, completion, started.elapsed()))
}

async fn describe<D: DynamoApi>(
    db: &D,
    table: &str,
    region: &str,
    key_names: &[String],
) -> Result<TableDescription, AuditError> {
    let key_names: Vec<&str> = key_names.iter().map(String::as_str).collect();
    describe_keyed(db, table, region, &key_names)
        .await
        .map_err(|e| match e {
            TableCheckError::NotFound { table, region } => AuditError::TableNotFound { table, region },
            TableCheckError::Describe { region, source } => AuditError::Dynamo { region, source },
            e @ TableCheckError::KeyMismatch { .. } => AuditError::Config(e.to_string()),
        })
}

/// Runs every segment of both passes, at most `concurrency` at once, until done or `shutdown`.
async fn drive<L, R>(shared: &Arc<Shared<L, R>>, segments: u32, shutdown: impl Future) -> Completion
where
    L: DynamoApi,
    R: DynamoApi,
{
    let passes: &[Pass] = if shared.replica.is_some() {
        &[Pass::Local, Pass::Remote]
    } else {
        &[Pass::Local]
    };
    // The local pass first: the reverse lookups then only find what is really missing locally.
    let mut pending = passes.iter().flat_map(|&p| (0..segments).map(move |s| (p, s)));
    let mut running = JoinSet::new();
    let mut progress = tokio::time::interval(shared.config.progress_interval);
    progress.reset();
    tokio::pin!(shutdown);
    let mut interrupted = false;
    loop {
        while running.len() < shared.config.concurrency && !shared.stop.load(Ordering::SeqCst) {
            let Some((pass, segment)) = pending.next() else { break };
            let shared = shared.clone();
            running.spawn(async move { run_segment(shared, pass, segment, segments).await });
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            _ = &mut shutdown, if !interrupted => {
                tracing::info!("audit: stopping at the next page boundary");
                interrupted = true;
                shared.stop.store(true, Ordering::SeqCst);
            }
            done = running.join_next() => {
                if let Some(Err(e)) = done {
                    shared.fail(AuditError::Task(e.to_string()));
                }
            }
            _ = progress.tick() => {
                let t = shared.tally();
                tracing::info!(
                    table = %shared.table,
                    items = t.summary.records,
                    failures = t.summary.failures(),
                    segments_finished = t.segments_finished,
                    segments_total = segments * passes.len() as u32,
                    "audit: progress"
                );
            }
        }
    }
    if interrupted || pending.next().is_some() {
        Completion::Interrupted
    } else {
        Completion::Finished
    }
}

fn report<L, R>(shared: &Shared<L, R>, segments: u32, completion: Completion, elapsed: Duration) -> AuditReport {
    let t = shared.tally();
    let compare = shared.replica.as_ref().map(|_| CompareReport {
        read_units: shared.remote_budget.charged(),
        ..t.compare.clone()
    });
    let all_pass = t.summary.all_verdicts_pass();
    let agrees = compare.as_ref().is_none_or(CompareReport::agrees);
    AuditReport {
        table: shared.table.clone(),
        region: shared.local_region().to_owned(),
        completion,
        segments,
        items: t.summary.records,
        canaries: t.canaries,
        by_verdict: t.summary.by_verdict.clone(),
        failures: t.summary.failures(),
        by_reason: t.by_reason.clone(),
        by_origin: t.summary.by_origin.clone(),
        by_format: t.by_format.clone(),
        throttled_retries: t.summary.throttled_retries,
        samples: t.samples.clone(),
        scanned_bytes: t.scanned_bytes,
        read_units: shared.local_budget.charged(),
        compare,
        elapsed_seconds: elapsed.as_secs_f64(),
        passed: completion == Completion::Finished && all_pass && agrees,
    }
}

/// One segment of one pass: page after page until its end, a stop, or a failure.
async fn run_segment<L, R>(shared: Arc<Shared<L, R>>, pass: Pass, segment: u32, total: u32)
where
    L: DynamoApi,
    R: DynamoApi,
{
    let mut start: Option<Item> = None;
    let mut backoff = backoff(&shared.config);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let scan = ScanSegment {
            segment,
            total_segments: total,
            exclusive_start_key: start.take(),
            limit: Some(shared.config.page_size),
            consistent: false,
        };
        let page = match pass {
            Pass::Local => {
                read_page(
                    &shared,
                    &shared.local,
                    shared.local_region(),
                    &shared.local_budget,
                    scan,
                    &mut backoff,
                )
                .await
            }
            Pass::Remote => match &shared.replica {
                Some(r) => read_page(&shared, &r.db, &r.region, &shared.remote_budget, scan, &mut backoff).await,
                None => return,
            },
        };
        let Some(page) = page else { return };
        let done = page.is_last();
        let result = match pass {
            Pass::Local => local_page(&shared, page.items, page.bytes).await,
            Pass::Remote => remote_page(&shared, page.items).await,
        };
        if let Err(e) = result {
            shared.fail(e);
            return;
        }
        if done {
            shared.tally().segments_finished += 1;
            return;
        }
        start = page.last_evaluated_key;
    }
}

fn backoff(config: &AuditConfig) -> Backoff {
    Backoff::new(config.retry_backoff, config.retry_backoff * 100)
}

/// One page, retried with backoff; `None` after a failure that stopped the audit, or a stop.
async fn read_page<L, R, D: DynamoApi>(
    shared: &Shared<L, R>,
    db: &D,
    region: &str,
    budget: &Budget,
    scan: ScanSegment,
    backoff: &mut Backoff,
) -> Option<scan::ScannedPage> {
    loop {
        match scan::read_page(db, &shared.table, scan.clone(), budget, backoff).await {
            Ok(page) => return Some(page),
            Err(PageError::Retry { delay, error }) if backoff.attempts() <= shared.config.max_retries => {
                tracing::warn!(region, segment = scan.segment, error = %error, "audit: scan failed; backing off");
                tokio::time::sleep(delay).await;
                if shared.stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(PageError::Retry { error: source, .. } | PageError::Fatal(source)) => {
                shared.fail(AuditError::Dynamo {
                    region: region.to_owned(),
                    source,
                });
                return None;
            }
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The page without the verifiers' canary items (counted when `count`: the local pass only).
fn without_canaries<L, R>(shared: &Shared<L, R>, mut items: Vec<Item>, count: bool) -> Vec<Item> {
    let Some(layout) = &shared.canaries else {
        return items;
    };
    let before = items.len();
    items.retain(|item| layout.origin_of_table_item(item).is_none());
    if count && items.len() < before {
        shared.tally().canaries += (before - items.len()) as u64;
    }
    items
}

/// A local page: every item judged, then (with a replica) compared with its copy there.
async fn local_page<L, R>(shared: &Arc<Shared<L, R>>, items: Vec<Item>, bytes: u64) -> Result<(), AuditError>
where
    L: DynamoApi,
    R: DynamoApi,
{
    shared.tally().scanned_bytes += bytes;
    let items = without_canaries(shared, items, true);
    futures::stream::iter(&items)
        .for_each_concurrent(shared.config.item_concurrency, |item| async move {
            let outcome = judge(shared, item).await;
            shared.verifier.report(&outcome);
            let mut t = shared.tally();
            t.summary.add(&outcome);
            *t.by_reason
                .entry(outcome.verdict)
                .or_default()
                .entry(outcome.reason)
                .or_default() += 1;
            *t.by_format
                .entry(outcome.format.as_str())
                .or_default()
                .entry(outcome.verdict)
                .or_default() += 1;
            if !outcome.is_pass() {
                let samples = t.samples.entry(outcome.verdict).or_default();
                if samples.len() < shared.config.sample_keys {
                    samples.push(outcome.keys);
                }
            }
        })
        .await;
    let Some(replica) = &shared.replica else {
        return Ok(());
    };
    let keyed = keyed(shared, items);
    let keys: Vec<Item> = keyed.iter().map(|(_, k, _)| k.clone()).collect();
    let theirs = batch_get(shared, &replica.db, &replica.region, &shared.remote_budget, keys).await?;
    let mut suspects = Vec::new();
    let mut identical = 0u64;
    for (id, key, mine) in &keyed {
        match theirs.get(id) {
            Some(other) if differing_attributes(mine, other).is_empty() => identical += 1,
            _ => suspects.push(key.clone()),
        }
    }
    {
        let mut t = shared.tally();
        t.compare.compared += keyed.len() as u64;
        t.compare.identical += identical;
    }
    if suspects.is_empty() {
        return Ok(());
    }
    let mine: HashMap<String, Item> = keyed.into_iter().map(|(id, _, item)| (id, item)).collect();
    let (now_mine, now_theirs) = if shared.config.recheck_after.is_zero() {
        (mine, theirs)
    } else {
        recheck(shared, replica, suspects.clone()).await?
    };
    for key in suspects {
        let id = key_id(&key);
        let finding = match (now_mine.get(&id), now_theirs.get(&id)) {
            (Some(_), None) => Finding::Missing(replica.region.clone()),
            (Some(a), Some(b)) => match differing_attributes(a, b) {
                names if names.is_empty() => Finding::Identical,
                names => Finding::Different(names),
            },
            // Deleted locally meanwhile: the reverse pass sees it if the other region still has it.
            (None, _) => continue,
        };
        record(shared, &key, finding);
    }
    Ok(())
}

/// A page of the other region: keys not found locally (after a re-check) are `missing_in_<local region>`.
async fn remote_page<L, R>(shared: &Arc<Shared<L, R>>, items: Vec<Item>) -> Result<(), AuditError>
where
    L: DynamoApi,
    R: DynamoApi,
{
    let Some(replica) = &shared.replica else {
        return Ok(());
    };
    let items = without_canaries(shared, items, false);
    let keyed = keyed(shared, items);
    let keys: Vec<Item> = keyed.iter().map(|(_, k, _)| k.clone()).collect();
    let mine = batch_get(shared, &shared.local, shared.local_region(), &shared.local_budget, keys).await?;
    shared.tally().compare.reverse_checked += keyed.len() as u64;
    let suspects: Vec<Item> = keyed
        .iter()
        .filter(|(id, _, _)| !mine.contains_key(id))
        .map(|(_, k, _)| k.clone())
        .collect();
    if suspects.is_empty() {
        return Ok(());
    }
    let (now_mine, now_theirs) = if shared.config.recheck_after.is_zero() {
        (mine, keyed.into_iter().map(|(id, _, item)| (id, item)).collect())
    } else {
        recheck(shared, replica, suspects.clone()).await?
    };
    for key in suspects {
        let id = key_id(&key);
        if !now_mine.contains_key(&id) && now_theirs.contains_key(&id) {
            record(shared, &key, Finding::Missing(shared.local_region().to_owned()));
        }
    }
    Ok(())
}

/// Waits for replication to catch up, then reads `keys` again on both sides (consistently).
async fn recheck<L, R>(
    shared: &Shared<L, R>,
    replica: &Replica<R>,
    keys: Vec<Item>,
) -> Result<(HashMap<String, Item>, HashMap<String, Item>), AuditError>
where
    L: DynamoApi,
    R: DynamoApi,
{
    tokio::time::sleep(shared.config.recheck_after).await;
    let mine = batch_get(
        shared,
        &shared.local,
        shared.local_region(),
        &shared.local_budget,
        keys.clone(),
    )
    .await?;
    let theirs = batch_get(shared, &replica.db, &replica.region, &shared.remote_budget, keys).await?;
    Ok((mine, theirs))
}

enum Finding {
    Identical,
    /// Missing in this region.
    Missing(String),
    /// These attributes differ.
    Different(Vec<String>),
}

fn record<L, R>(shared: &Shared<L, R>, key: &Item, finding: Finding) {
    let max = shared.config.max_listed;
    let json = key_json(key);
    let mut t = shared.tally();
    match finding {
        // The re-check found both sides equal: replication had not caught up at the first look.
        Finding::Identical => t.compare.identical += 1,
        Finding::Missing(region) => {
            tracing::warn!(target: "alert", event = "replica_missing", table = %shared.table, keys = %json, missing_in = %region, "item missing in a replica");
            let list = t.compare.missing.entry(format!("missing_in_{region}")).or_default();
            list.count += 1;
            if list.keys.len() < max {
                list.keys.push(json);
            }
        }
        Finding::Different(attributes) => {
            tracing::warn!(target: "alert", event = "replica_different", table = %shared.table, keys = %json, attributes = ?attributes, "replicas of an item differ");
            let different = &mut t.compare.different;
            different.count += 1;
            if different.items.len() < max {
                different.items.push(Difference { key: json, attributes });
            }
        }
    }
}

/// The verdict `verify` would give `item`, with KMS throttling retried.
async fn judge<L, R>(shared: &Shared<L, R>, item: &Item) -> RecordOutcome {
    let keys = key_json(&key_of(&shared.key_names, item));
    let depth = if shared.verifier.is_sampled(&keys.to_string()) {
        Depth::Full
    } else {
        Depth::Structural
    };
    let converted = table_item_to_item(item);
    let mut backoff = backoff(&shared.config);
    let judgement = loop {
        let judgement = match &converted {
            Ok(i) => shared.verifier.judge().judge(i, depth).await,
            Err(e) => Judgement::new(Verdict::IntegrityFailed, e.reason(), e.to_string()),
        };
        if judgement.verdict != Verdict::KmsThrottled || backoff.attempts() >= shared.config.max_retries {
            break judgement;
        }
        shared.tally().summary.throttled_retries += 1;
        tokio::time::sleep(backoff.next_delay()).await;
    };
    RecordOutcome {
        verdict: judgement.verdict,
        reason: judgement.reason,
        origin_region: judgement.origin_region,
        keys,
        // A scanned item has no stream event.
        event_id: String::new(),
        message: judgement.message,
        format: judgement.format,
    }
}

/// `BatchGetItem` (consistent) of `keys`, 100 at a time, until every key is processed: unprocessed keys and
/// throttling are retried with jittered backoff; `max_retries` calls in a row without progress fail the audit.
/// Returns the items found by [`key_id`].
async fn batch_get<L, R, D: DynamoApi>(
    shared: &Shared<L, R>,
    db: &D,
    region: &str,
    budget: &Budget,
    keys: Vec<Item>,
) -> Result<HashMap<String, Item>, AuditError> {
    let mut found = HashMap::with_capacity(keys.len());
    let mut backoff = backoff(&shared.config);
    let mut pending = keys;
    while !pending.is_empty() {
        let rest = pending.split_off(pending.len().min(MAX_BATCH_GET));
        let batch = std::mem::replace(&mut pending, rest);
        budget.ready().await;
        match db.batch_get(&shared.table, batch.clone(), true).await {
            Ok(out) => {
                let estimate: f64 = out.items.iter().map(|i| read_units(item_size(i), true)).sum();
                budget.charge(if out.consumed.read_units > 0.0 {
                    out.consumed.read_units
                } else {
                    estimate
                });
                if out.unprocessed_keys.len() < batch.len() {
                    backoff.reset();
                }
                for item in out.items {
                    found.insert(key_id(&key_of(&shared.key_names, &item)), item);
                }
                if out.unprocessed_keys.is_empty() {
                    continue;
                }
                pending.extend(out.unprocessed_keys);
                if backoff.attempts() >= shared.config.max_retries {
                    return Err(AuditError::Dynamo {
                        region: region.to_owned(),
                        source: DdbError::new(
                            ErrorKind::Throttled,
                            "BatchGetItem",
                            &shared.table,
                            format!("keys still unprocessed after {} retries", shared.config.max_retries),
                        ),
                    });
                }
                tracing::debug!(
                    region,
                    unprocessed = pending.len(),
                    "audit: unprocessed keys; backing off"
                );
            }
            Err(e) if e.kind.is_retryable() && backoff.attempts() < shared.config.max_retries => {
                tracing::warn!(region, error = %e, "audit: BatchGetItem failed; backing off");
                pending.extend(batch);
            }
            Err(source) => {
                return Err(AuditError::Dynamo {
                    region: region.to_owned(),
                    source,
                });
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
    Ok(found)
}

/// The items of a page with their key and its [`key_id`].
fn keyed<L, R>(shared: &Shared<L, R>, items: Vec<Item>) -> Vec<(String, Item, Item)> {
    items
        .into_iter()
        .map(|item| {
            let key = key_of(&shared.key_names, &item);
            (key_id(&key), key, item)
        })
        .collect()
}

fn key_of(names: &[String], item: &Item) -> Item {
    names
        .iter()
        .filter_map(|n| item.get(n).map(|v| (n.clone(), v.clone())))
        .collect()
}

/// A primary key as one string, equal for equal keys: the key to match items of the two regions by.
fn key_id(key: &Item) -> String {
    key_json(key).to_string()
}

/// Names of the attributes whose values differ between `a` and `b`, or that only one has; sorted.
pub fn differing_attributes(a: &Item, b: &Item) -> Vec<String> {
    let mut names: Vec<String> = a
        .iter()
        .filter(|(name, value)| b.get(*name).is_none_or(|other| !same_value(value, other)))
        .map(|(name, _)| name.clone())
        .chain(b.keys().filter(|name| !a.contains_key(*name)).cloned())
        .collect();
    names.sort();
    names
}

/// Equality as DynamoDB means it: sets are unordered, numbers compare by value.
fn same_value(a: &AttributeValue, b: &AttributeValue) -> bool {
    use AttributeValue as V;
    match (a, b) {
        (V::N(x), V::N(y)) => same_number(x, y),
        (V::Ss(x), V::Ss(y)) => sorted(x.iter().cloned()) == sorted(y.iter().cloned()),
        (V::Ns(x), V::Ns(y)) => sorted(x.iter().map(|n| normalized(n))) == sorted(y.iter().map(|n| normalized(n))),
        (V::Bs(x), V::Bs(y)) => {
            sorted(x.iter().map(|b| b.as_ref().to_vec())) == sorted(y.iter().map(|b| b.as_ref().to_vec()))
        }
        (V::L(x), V::L(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y)),
        (V::M(x), V::M(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w))),
        _ => a == b,
    }
}

fn same_number(x: &str, y: &str) -> bool {
    x == y || normalized(x) == normalized(y)
}

/// The canonical text of a number; an unparsable one stays as it is (and so compares textually).
fn normalized(n: &str) -> String {
    ddbguard_dbe::normalize_number(n).unwrap_or_else(|_| n.to_owned())
}

fn sorted<T: Ord>(values: impl Iterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = values.collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests;
