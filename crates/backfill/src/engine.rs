//! The backfill engine: a parallel scan whose segments are leases, each page rewritten and then checkpointed.
//!
//! Segments are leases of the lease crate in the ledger table (keys `<table>/<job>/<total>/<segment>`), so
//! several processes split one table and a dead process's segments are taken over after the lease duration. A
//! segment's position is the `LastEvaluatedKey` of its last fully processed page, written only after every write
//! of that page was acknowledged: a process killed at any instant resumes at the start of the page it was in,
//! whose already rewritten items now carry `aws_dbe_head` and are skipped — so no item is encrypted twice. The
//! same holds for migrated legacy items: the write-back removed their legacy attributes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ddbguard_ddb::{DdbError, DynamoApi, Item, ScanSegment};
use ddbguard_lease::{
    Coordinator, CoordinatorConfig, DynamoLeaseStore, Lease, LeaseContext, LeaseError, LeaseStore, LeaseTable,
    MemoryLeaseStore, Position, TaskEnd,
};
use ddbguard_verify::canary::{CanaryLayout, CanarySettings};
use futures::StreamExt as _;
use thiserror::Error;
use tokio::time::{Instant, MissedTickBehavior};

use crate::limiter::Budgets;
use crate::position;
use crate::report::{Completion, Progress, Report, Tally, would_write_units};
use crate::rewrite::{self, Outcome, RewriteSettings, Target};
use crate::scan::{self, PageError};
use crate::table::{TableCheckError, describe_keyed};

/// Tables larger than this get one more segment per this many bytes (up to [`MAX_SEGMENTS`]).
pub const BYTES_PER_SEGMENT: i64 = 512 * 1024 * 1024;
/// The default segment count never goes below this (the parallelism of a few processes).
pub const MIN_DEFAULT_SEGMENTS: u32 = 8;
/// Consecutive failed ledger reads (one per sync round, a third of the lease duration apart) before the run
/// gives up.
const MAX_LEDGER_FAILURES: u32 = 10;
/// DynamoDB's largest `TotalSegments`.
pub const MAX_SEGMENTS: u32 = 1_000_000;

/// The segment count for a table of `size_bytes` when `--segments` is not given: one per 512 MiB, at least 8.
pub fn default_segments(size_bytes: Option<i64>) -> u32 {
    let by_size = size_bytes.unwrap_or(0).max(0) / BYTES_PER_SEGMENT + 1;
    u32::try_from(by_size)
        .unwrap_or(MAX_SEGMENTS)
        .clamp(MIN_DEFAULT_SEGMENTS, 4096)
}

/// How a run is done.
#[derive(Debug, Clone)]
pub struct BackfillConfig {
    /// The job name: `backfill`, or a migration id. Segments of different jobs never mix.
    pub job: String,
    /// The region this process writes in (the table's home region).
    pub region: String,
    /// The ledger table (segment leases, checkpoints, applied migrations); created if missing.
    pub ledger_table: String,
    /// This process's lease owner name.
    pub worker_id: String,
    /// `TotalSegments` of the parallel scan; `None`: [`default_segments`] of the table's size.
    pub segments: Option<u32>,
    /// Segments worked on at once by this process.
    pub concurrency: usize,
    /// Items per scan page (`Limit`); a checkpoint follows every page.
    pub page_size: u32,
    /// Items of one page rewritten at once.
    pub item_concurrency: usize,
    /// Read capacity units per second (`None`: unlimited).
    pub read_units_per_second: Option<f64>,
    /// Write capacity units per second (`None`: unlimited).
    pub write_units_per_second: Option<f64>,
    /// KMS requests per second (`None`: unlimited).
    pub kms_requests_per_second: Option<f64>,
    /// Per-item settings: attempts, retries, dry run.
    pub rewrite: RewriteSettings,
    /// A lease whose holder stopped renewing for this long is taken over.
    pub lease_duration: Duration,
    /// How often a progress snapshot is handed to the caller.
    pub progress_interval: Duration,
    /// Leave out items this filter rejects (a migration's `filter`).
    pub filter: Option<ItemFilter>,
    /// The verifiers' canaries (key prefix and origin regions): their items are counted as `canary` and never
    /// rewritten. `None`: canary keys are items like any other.
    pub canaries: Option<CanarySettings>,
    /// Start a new pass of a finished job: its segment leases are deleted first, so the whole table is scanned
    /// again under the same job name. Refused while any segment of the job is unfinished (that pass resumes).
    pub restart: bool,
}

impl BackfillConfig {
    /// Defaults: 4 segments at once, pages of 100 items, 16 items at once, 3 write attempts, 8 retries from
    /// 50 ms, no rate limit, 30 s leases, progress every 5 s.
    pub fn new(
        job: impl Into<String>,
        region: impl Into<String>,
        ledger_table: impl Into<String>,
        worker_id: impl Into<String>,
    ) -> Self {
        Self {
            job: job.into(),
            region: region.into(),
            ledger_table: ledger_table.into(),
            worker_id: worker_id.into(),
            segments: None,
            concurrency: 4,
            page_size: 100,
            item_concurrency: 16,
            read_units_per_second: None,
            write_units_per_second: None,
            kms_requests_per_second: None,
            rewrite: RewriteSettings {
                max_attempts: 3,
                max_retries: 8,
                retry_backoff: Duration::from_millis(50),
                dry_run: false,
            },
            lease_duration: Duration::from_secs(30),
            progress_interval: Duration::from_secs(5),
            filter: None,
            canaries: None,
            restart: false,
        }
    }
}

/// A client-side filter over scanned items (a migration's `filter`). `Scan` filters do not lower the read
/// capacity a scan consumes, so filtering here costs the same and keeps the adapter narrow.
#[derive(Clone)]
pub struct ItemFilter(pub Arc<dyn Fn(&Item) -> bool + Send + Sync>);

impl std::fmt::Debug for ItemFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ItemFilter")
    }
}

/// Why a run could not start or went wrong as a whole. Item-level problems are outcomes in the report, not errors.
#[derive(Debug, Error)]
pub enum BackfillError {
    /// The table is not in the region.
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
    /// DynamoDB failed in a way that retrying did not cure (describing the table, scanning, the ledger).
    #[error(transparent)]
    Dynamo(#[from] DdbError),
    /// The ledger failed.
    #[error("ledger: {0}")]
    Ledger(#[from] LeaseError),
}

/// State shared by the segment tasks.
struct Shared<D> {
    db: D,
    target: Target,
    config: BackfillConfig,
    budgets: Budgets,
    tally: Tally,
    /// A failure that retrying does not cure (the table was deleted, access denied): ends the run.
    fatal: std::sync::Mutex<Option<DdbError>>,
    /// Recognises the verifiers' canary items.
    canaries: Option<CanaryLayout>,
}

/// Runs the job until every segment is finished or `shutdown` completes; `progress` gets a snapshot every
/// `progress_interval` (and once at the end).
pub async fn run<D: DynamoApi + Clone>(
    db: D,
    target: Target,
    config: BackfillConfig,
    progress: impl FnMut(&Progress),
    shutdown: impl Future,
) -> Result<Report, BackfillError> {
    if config.concurrency == 0 || config.item_concurrency == 0 || !(1..=1000).contains(&config.page_size) {
        return Err(BackfillError::Config(
            "concurrency and item concurrency must be at least 1, the page size within 1..=1000".into(),
        ));
    }
    if target.from_legacy.is_some() && !target.judge.judges_legacy() {
        return Err(BackfillError::Config(format!(
            "table {:?}: migrating legacy items needs a judge with the table's legacy policy and materials provider",
            target.table
        )));
    }
    let key_names: Vec<&str> = target.config().key_names().collect();
    let description = describe_keyed(&db, &target.table, &config.region, &key_names)
        .await
        .map_err(|e| match e {
            TableCheckError::NotFound { table, region } => BackfillError::TableNotFound { table, region },
            TableCheckError::Describe { source, .. } => BackfillError::Dynamo(source),
            e @ TableCheckError::KeyMismatch { .. } => BackfillError::Config(e.to_string()),
        })?;
    let segments = config
        .segments
        .unwrap_or_else(|| default_segments(description.size_bytes));
    if segments == 0 || segments > MAX_SEGMENTS {
        return Err(BackfillError::Config(format!(
            "segments must be within 1..={MAX_SEGMENTS}"
        )));
    }
    let canaries = match &config.canaries {
        Some(c) => Some(
            CanaryLayout::new(&description.key_schema, &c.prefix, &c.origins)
                .map_err(|e| BackfillError::Config(format!("canaries: {e}")))?,
        ),
        None => None,
    };
    let estimated_items = description.item_count.and_then(|n| u64::try_from(n).ok());
    let shared = Arc::new(Shared {
        budgets: Budgets::new(
            config.read_units_per_second,
            config.write_units_per_second,
            config.kms_requests_per_second,
        ),
        db: db.clone(),
        target,
        config,
        tally: Tally::default(),
        fatal: std::sync::Mutex::new(None),
        canaries,
    });
    let (completion, error) = if shared.config.rewrite.dry_run {
        // A dry run writes nothing, not even leases.
        drive(
            &shared,
            MemoryLeaseStore::new(),
            segments,
            estimated_items,
            progress,
            shutdown,
        )
        .await?
    } else {
        let store = DynamoLeaseStore::new(db, LeaseTable::new(shared.config.ledger_table.clone()));
        drive(&shared, store, segments, estimated_items, progress, shutdown).await?
    };
    let mut report = report(&shared, segments, estimated_items, completion);
    report.error = error.map(|e| e.to_string());
    Ok(report)
}

fn report(
    shared: &Shared<impl DynamoApi>,
    segments: u32,
    estimated_items: Option<u64>,
    (completion, elapsed): (Completion, Duration),
) -> Report {
    let progress = shared
        .tally
        .snapshot(&shared.budgets, elapsed, segments, estimated_items);
    let encrypted = progress.count("encrypted") + progress.count("migrated_legacy");
    let dry_run = shared.config.rewrite.dry_run;
    let budgets = &shared.budgets;
    let estimated_seconds = dry_run.then(|| {
        let wcu = would_write_units(shared.tally.would_write_bytes(), &progress) as f64;
        let per = |units: f64, rate: Option<f64>| rate.map_or(0.0, |r| units / r);
        per(progress.read_units, budgets.read.rate())
            .max(per(wcu, budgets.write.rate()))
            .max(per(progress.kms_calls, budgets.kms.rate()))
    });
    Report {
        table: shared.target.table.clone(),
        region: shared.config.region.clone(),
        job: shared.config.job.clone(),
        dry_run,
        completion,
        samples: shared.tally.samples(),
        bytes_by_outcome: shared.tally.bytes_by_outcome(),
        write_units_per_item: (encrypted > 0).then(|| progress.write_units / encrypted as f64),
        limited_by: budgets.limiting().map(|k| k.as_str()),
        would_write_bytes: dry_run.then(|| shared.tally.would_write_bytes()),
        estimated_seconds,
        progress,
        error: None,
    }
}

/// Deletes the segment leases (any segment count) under `prefix` of a finished job, so that this run scans the
/// table again. Refused while any of them is unfinished: that pass is running or was interrupted, and resumes
/// without a restart. Deleting only finished leases (a conditional delete) keeps a concurrent restart harmless:
/// at worst a segment is scanned twice, and its items already encrypted are skipped.
async fn start_new_pass<L: LeaseStore>(store: &L, prefix: &str, job: &str) -> Result<(), BackfillError> {
    let segments: Vec<Lease> = store
        .list_leases()
        .await?
        .into_iter()
        .filter(|l| l.key.starts_with(prefix))
        .collect();
    let unfinished = segments.iter().filter(|l| !l.finished).count();
    if unfinished > 0 {
        return Err(BackfillError::Config(format!(
            "job {job:?} is not finished ({unfinished} of {} segments left): a new pass starts only after it \
             finished; run it without restarting to resume it",
            segments.len()
        )));
    }
    for lease in &segments {
        store.delete_finished_lease(&lease.key).await?;
    }
    tracing::info!(job, segments = segments.len(), "starting a new pass of the job");
    Ok(())
}

fn segment_key(shared: &Shared<impl DynamoApi>, total: u32, segment: u32) -> String {
    format!("{}/{}/{total}/{segment}", shared.target.table, shared.config.job)
}

async fn drive<D: DynamoApi + Clone, L: LeaseStore>(
    shared: &Arc<Shared<D>>,
    store: L,
    segments: u32,
    estimated_items: Option<u64>,
    mut progress: impl FnMut(&Progress),
    shutdown: impl Future,
) -> Result<((Completion, Duration), Option<BackfillError>), BackfillError> {
    let cfg = &shared.config;
    let mut coordinator = Coordinator::new(
        store,
        CoordinatorConfig {
            worker_id: cfg.worker_id.clone(),
            lease_duration: cfg.lease_duration,
            max_leases: cfg.concurrency,
            steal: false,
            shutdown_deadline: Duration::from_secs(25),
            retry_backoff: Duration::from_millis(100),
            max_retry_backoff: Duration::from_secs(5),
        },
    );
    coordinator.initialize().await?;
    if cfg.restart {
        start_new_pass(
            coordinator.store(),
            &format!("{}/{}/", shared.target.table, cfg.job),
            &cfg.job,
        )
        .await?;
    }
    let prefix = format!("{}/{}/{segments}/", shared.target.table, cfg.job);
    let wanted: Vec<Lease> = (0..segments)
        .map(|s| Lease::new(segment_key(shared, segments, s), vec![]))
        .collect();
    let mut sync = tokio::time::interval(cfg.lease_duration / 3);
    sync.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut report_tick = tokio::time::interval(cfg.progress_interval);
    report_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    report_tick.reset();
    tokio::pin!(shutdown);
    let started = Instant::now();
    let mut ledger_failures = 0u32;
    // A failure after the run started ends it with a report of what was done (Completion::Failed), not an error
    // that would read as "nothing written".
    let mut failure: Option<BackfillError> = None;
    let completion = loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break Completion::Interrupted,
            done = coordinator.next_done() => {
                if let Ok(TaskEnd::Finished) = done.end {
                    shared.tally.segment_finished();
                }
                if shared.fatal.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                    break Completion::Failed;
                }
                sync.reset_immediately();
            }
            _ = sync.tick() => {
                coordinator.renew().await;
                if let Err(e) = coordinator.refresh(wanted.clone()).await {
                    // The ledger is throttled or unreachable: the running segments go on; try again next round.
                    ledger_failures += 1;
                    tracing::warn!(error = %e, failures = ledger_failures, "reading the ledger failed");
                    if ledger_failures >= MAX_LEDGER_FAILURES {
                        failure = Some(e.into());
                        break Completion::Failed;
                    }
                    continue;
                }
                ledger_failures = 0;
                let mine = |l: &Lease| l.key.starts_with(&prefix);
                if coordinator.leases().values().filter(|l| mine(l)).all(|l| l.finished) {
                    break Completion::Finished;
                }
                for taken in coordinator.balance(mine).await {
                    let segment = taken.grant.key.rsplit('/').next().and_then(|s| s.parse::<u32>().ok());
                    let Some(segment) = segment else { continue };
                    let start = taken.lease.position.clone();
                    let shared = shared.clone();
                    coordinator.spawn(taken, move |ctx| scan_segment(shared, ctx, segment, segments, start));
                }
            }
            _ = report_tick.tick() => progress(&shared.tally.snapshot(&shared.budgets, started.elapsed(), segments, estimated_items)),
        }
    };
    let stopped = coordinator.shutdown().await;
    for _ in &stopped.finished {
        shared.tally.segment_finished();
    }
    progress(
        &shared
            .tally
            .snapshot(&shared.budgets, started.elapsed(), segments, estimated_items),
    );
    if let Some(e) = shared.fatal.lock().unwrap_or_else(|e| e.into_inner()).take() {
        failure = failure.or(Some(e.into()));
    }
    let completion = if failure.is_some() {
        Completion::Failed
    } else {
        completion
    };
    Ok(((completion, started.elapsed()), failure))
}

/// One segment: scan a page, rewrite its items, checkpoint, repeat until the segment's end.
async fn scan_segment<D: DynamoApi + Clone, L: LeaseStore>(
    shared: Arc<Shared<D>>,
    mut ctx: LeaseContext<L>,
    segment: u32,
    total: u32,
    start: Option<Position>,
) -> TaskEnd {
    let cfg = &shared.config;
    let mut exclusive_start_key = match start.as_ref().map(|p| position::decode(&p.value)) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(e)) => {
            // Starting over is safe: already encrypted items are skipped.
            tracing::warn!(segment, error = %e, "unreadable checkpoint; scanning the segment from its start");
            None
        }
    };
    let mut backoff = ddbguard_ddb::Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        if let Some(end) = ctx.stopped() {
            return end;
        }
        let scan = ScanSegment {
            segment,
            total_segments: total,
            exclusive_start_key: exclusive_start_key.clone(),
            limit: Some(cfg.page_size),
            consistent: false,
        };
        let page = tokio::select! {
            page = scan::read_page(&shared.db, &shared.target.table, scan, &shared.budgets.read, &mut backoff) => page,
            _ = ctx.stop_requested() => continue,
        };
        let page = match page {
            Ok(p) => p,
            Err(PageError::Retry { delay, error }) => {
                tracing::warn!(segment, error = %error, "scan failed; backing off");
                ctx.pause(delay).await;
                continue;
            }
            Err(PageError::Fatal(e)) => {
                tracing::error!(segment, error = %e, "scan failed; stopping the run");
                *shared.fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                return TaskEnd::Stopped;
            }
        };
        shared.tally.scanned(page.items.len() as u64, page.bytes);
        let finished = page.is_last();
        // The page's items, a bounded number at a time; the checkpoint waits for all of them.
        let items = page.items;
        futures::stream::iter(items)
            .for_each_concurrent(cfg.item_concurrency, |item| {
                let shared = shared.clone();
                async move {
                    let bytes = ddbguard_ddb::item_size(&item) as u64;
                    let key = shared.target.config().key_names().filter_map(|k| item.get(k).map(|v| (k.to_owned(), v.clone()))).collect::<Item>();
                    let canary = shared.canaries.as_ref().is_some_and(|l| l.origin_of_table_item(&item).is_some());
                    let outcome = match &shared.config.filter {
                        _ if canary => Outcome::Canary,
                        Some(f) if !(f.0)(&item) => Outcome::Filtered,
                        _ => rewrite::process(&shared.db, &shared.target, &shared.budgets, &shared.config.rewrite, item).await,
                    };
                    if let Outcome::Failed { reason } = &outcome {
                        tracing::warn!(target: "alert", event = "backfill_item_failed", table = %shared.target.table, reason, "an item could not be rewritten");
                    }
                    shared.tally.outcome(&outcome, &key, outcome.kms_calls(&shared.target), bytes);
                }
            })
            .await;
        let position = match page
            .last_evaluated_key
            .as_ref()
            .filter(|k| !k.is_empty())
            .map(position::encode)
        {
            None => None,
            Some(Ok(text)) => Some(Position::new(text)),
            Some(Err(e)) => {
                tracing::error!(segment, error = %e, "cannot record the scan position; stopping the segment");
                return TaskEnd::Stopped;
            }
        };
        if let Err(end) = ctx.checkpoint(position.as_ref(), finished).await {
            return end;
        }
        if finished {
            return TaskEnd::Finished;
        }
        exclusive_start_key = page.last_evaluated_key;
    }
}
