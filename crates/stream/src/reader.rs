//! The reader: shard discovery and lineage, lease balancing and renewal, one polling task per leased shard,
//! graceful shutdown and the until-caught-up mode.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ddbguard_lease::{
    Backoff, Coordinator, CoordinatorConfig, Lease, LeaseContext, LeaseStore, ShutdownReport, Taken, TaskEnd,
};
use tokio::time::{Instant, MissedTickBehavior};

use crate::api::StreamsApi;
use crate::error::{ReaderError, SinkError, StreamsError};
use crate::model::{
    Checkpoint, GapReason, IteratorPosition, RecordBatch, RecordsPage, SequenceNumber, Shard, StreamGap,
    table_name_from_stream_arn,
};
use crate::status::StatusHandle;

/// Where shards start when the reader first reads them in this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartPosition {
    /// Every shard known at startup is read from the oldest retained record, ignoring stored checkpoints
    /// (re-verification audits). Shards created later, and shards taken back later in the same run, resume from
    /// their checkpoint.
    TrimHorizon,
    /// Shards open at startup start at their tip and shards closed at startup are marked finished unread,
    /// ignoring stored checkpoints. Shards created later are read from their start (nothing after startup is
    /// skipped, also across a split).
    Latest,
    /// Resume every shard after its checkpoint; shards without one start at the trim horizon. The default.
    #[default]
    Checkpoint,
}

/// Reader settings. [`ReaderConfig::new`] gives production defaults.
#[derive(Clone, Debug)]
pub struct ReaderConfig {
    /// The stream to read.
    pub stream_arn: String,
    /// The `table` label of metrics and gap reports (defaults to the table name in the stream ARN).
    pub table_label: String,
    /// Unique id of this worker (e.g. ECS task id); the lease owner name.
    pub worker_id: String,
    /// Where shards start (see [`StartPosition`]).
    pub start_position: StartPosition,
    /// A lease whose counter has not moved for this long is considered abandoned and taken over.
    pub lease_duration: Duration,
    /// How often held leases are renewed (heartbeat); well below `lease_duration`.
    pub renew_interval: Duration,
    /// How often shards are listed and leases rebalanced (also right after a shard finishes).
    pub discovery_interval: Duration,
    /// First delay after a read that found the shard's tip; doubles (with jitter) up to `max_poll_interval`.
    pub poll_interval: Duration,
    /// Cap of the idle polling delay.
    pub max_poll_interval: Duration,
    /// First delay after a throttled or failed call; doubles (with jitter) up to `max_error_backoff`.
    pub error_backoff: Duration,
    /// Cap of the error backoff.
    pub max_error_backoff: Duration,
    /// `Limit` of each `GetRecords` call (1..=1000): the largest batch handed to the sink.
    pub max_records_per_batch: u32,
    /// At most this many shards are leased, and so read concurrently, by this worker.
    pub max_concurrent_shards: usize,
    /// A held shard is stalled after `stall_after_polls × max_poll_interval` without a successful `GetRecords`.
    pub stall_after_polls: u32,
    /// The stream's retention period: a checkpoint whose record is older is a gap.
    pub retention: Duration,
    /// Shutdown returns within this time even if the sink hangs (then the in-flight batch is not checkpointed).
    pub shutdown_deadline: Duration,
    /// Take leases from workers holding more than their share (one per discovery round).
    pub steal_leases: bool,
    /// Return from [`StreamReader::run`] once every shard is finished or read to its tip.
    pub until_caught_up: bool,
    /// An open shard is at its tip (lag 0, caught up, idle polling) only after this many empty `GetRecords`
    /// pages in a row: DynamoDB Streams may answer empty pages before reaching a part of the shard that holds
    /// records. The pages before that are re-polled every [`EMPTY_PAGE_REPOLL`].
    pub empty_pages_at_tip: u32,
}

/// Delay between `GetRecords` calls on empty pages not yet taken as the tip (DynamoDB Streams allows 5 calls per
/// second per shard).
pub const EMPTY_PAGE_REPOLL: Duration = Duration::from_millis(250);

impl ReaderConfig {
    /// Defaults: 20 s leases renewed every 5 s, discovery every 30 s, idle polling 1 s → 5 s, error backoff
    /// 100 ms → 10 s, 1000 records per batch, 64 shards, stalled after 6 polls, 24 h retention, 20 s shutdown.
    pub fn new(stream_arn: impl Into<String>, worker_id: impl Into<String>) -> Self {
        let stream_arn = stream_arn.into();
        Self {
            table_label: table_name_from_stream_arn(&stream_arn).to_owned(),
            stream_arn,
            worker_id: worker_id.into(),
            start_position: StartPosition::Checkpoint,
            lease_duration: Duration::from_secs(20),
            renew_interval: Duration::from_secs(5),
            discovery_interval: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            max_poll_interval: Duration::from_secs(5),
            error_backoff: Duration::from_millis(100),
            max_error_backoff: Duration::from_secs(10),
            max_records_per_batch: 1000,
            max_concurrent_shards: 64,
            stall_after_polls: 6,
            retention: Duration::from_secs(24 * 3600),
            shutdown_deadline: Duration::from_secs(20),
            steal_leases: true,
            until_caught_up: false,
            empty_pages_at_tip: 3,
        }
    }

    fn validate(&self) -> Result<(), ReaderError> {
        let bad = |m: &str| Err(ReaderError::Config(m.to_owned()));
        if self.worker_id.is_empty() {
            return bad("worker_id is empty");
        }
        if !(1..=1000).contains(&self.max_records_per_batch) {
            return bad("max_records_per_batch must be within 1..=1000");
        }
        if self.max_concurrent_shards == 0 {
            return bad("max_concurrent_shards must be at least 1");
        }
        if self.empty_pages_at_tip == 0 {
            return bad("empty_pages_at_tip must be at least 1");
        }
        if self.renew_interval.is_zero() || self.renew_interval >= self.lease_duration {
            return bad("renew_interval must be non-zero and shorter than lease_duration");
        }
        if self.poll_interval.is_zero() || self.discovery_interval.is_zero() || self.error_backoff.is_zero() {
            return bad("poll_interval, discovery_interval and error_backoff must be non-zero");
        }
        Ok(())
    }

    fn stall_after(&self) -> Duration {
        self.max_poll_interval
            .max(self.poll_interval)
            .saturating_mul(self.stall_after_polls.max(1))
    }
}

/// Receives batches and gap reports. Implemented by the verifier.
pub trait RecordSink: Send + Sync + 'static {
    /// Processes one batch. The checkpoint is written only after this returns `Ok`; on `Err` the same batch is
    /// offered again after a backoff. Called concurrently for different shards, never twice at once for one shard.
    fn process(&self, batch: &RecordBatch) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Called once per gap, before reading continues at the trim horizon. The reader has already counted it in
    /// `ddbguard_stream_gaps_total` and logged it with target `alert`.
    fn on_gap(&self, gap: &StreamGap) {
        let _ = gap;
    }
}

impl<T: RecordSink> RecordSink for Arc<T> {
    fn process(&self, batch: &RecordBatch) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).process(batch)
    }

    fn on_gap(&self, gap: &StreamGap) {
        (**self).on_gap(gap)
    }
}

/// What [`StreamReader::run`] did.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    /// Records handed to the sink.
    pub records: u64,
    /// Of those, redeliveries of already checkpointed records.
    pub duplicates: u64,
    /// Gaps declared during the run.
    pub gaps: Vec<StreamGap>,
    /// Shards finished (read to their end) by this worker during the run.
    pub shards_finished: Vec<String>,
    /// `true` when the run ended because every shard was finished or read to its tip (until-caught-up mode).
    pub caught_up: bool,
    /// Leases released at shutdown.
    pub leases_released: usize,
    /// `true` if some shard task did not finish within the shutdown deadline and was aborted.
    pub shutdown_timed_out: bool,
    /// Gaps and finished shards beyond the first [`SUMMARY_LIST_LIMIT`] of each, counted but not listed (a
    /// long-running process must not hold every shard it ever read).
    pub not_listed: u64,
}

/// At most this many gaps and finished shards are listed in a [`RunSummary`].
pub const SUMMARY_LIST_LIMIT: usize = 1000;

impl RunSummary {
    fn note_gap(&mut self, gap: StreamGap) {
        if self.gaps.len() < SUMMARY_LIST_LIMIT {
            self.gaps.push(gap);
        } else {
            self.not_listed += 1;
        }
    }

    fn note_finished(&mut self, shard_id: &str) {
        if self.shards_finished.len() < SUMMARY_LIST_LIMIT {
            self.shards_finished.push(shard_id.to_owned());
        } else {
            self.not_listed += 1;
        }
    }
}

/// The DynamoDB Streams reader. Generic over the Streams API, the lease store and the sink so that tests plug in
/// fakes.
pub struct StreamReader<S, L, K> {
    shared: Arc<Shared<S, K>>,
    leases: L,
}

impl<S, L, K> std::fmt::Debug for StreamReader<S, L, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

struct Shared<S, K> {
    config: ReaderConfig,
    /// The stream being read: `config.stream_arn` until the table's stream is replaced.
    stream_arn: std::sync::Mutex<String>,
    api: S,
    sink: K,
    status: StatusHandle,
    summary: std::sync::Mutex<RunSummary>,
}

/// Where a shard task starts.
#[derive(Clone, Debug)]
enum Initial {
    Checkpoint,
    Position(IteratorPosition),
    SkipToEnd,
}

impl<S: StreamsApi, L: LeaseStore, K: RecordSink> StreamReader<S, L, K> {
    /// Creates a reader. Nothing is called until [`StreamReader::run`].
    pub fn new(config: ReaderConfig, api: S, leases: L, sink: K) -> Result<Self, ReaderError> {
        config.validate()?;
        let sync_stale_after = config
            .discovery_interval
            .saturating_mul(2)
            .saturating_add(config.lease_duration);
        let status = StatusHandle::new(&config.worker_id, config.stall_after(), sync_stale_after);
        Ok(Self {
            shared: Arc::new(Shared {
                stream_arn: std::sync::Mutex::new(config.stream_arn.clone()),
                config,
                api,
                sink,
                status,
                summary: std::sync::Mutex::new(RunSummary::default()),
            }),
            leases,
        })
    }

    /// A handle to the live status (lag, leases held, stalled shards), usable while `run` is going.
    pub fn status(&self) -> StatusHandle {
        self.shared.status.clone()
    }

    /// Reads until `shutdown` completes (or, in until-caught-up mode, until every shard is finished or read to its
    /// tip). On shutdown: stops reading, lets the in-flight batches finish and checkpoints them, releases the
    /// leases, and returns within `shutdown_deadline`.
    pub async fn run(self, shutdown: impl Future) -> Result<RunSummary, ReaderError> {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let leases = Coordinator::new(
            self.leases,
            CoordinatorConfig {
                worker_id: cfg.worker_id.clone(),
                lease_duration: cfg.lease_duration,
                max_leases: cfg.max_concurrent_shards,
                steal: cfg.steal_leases,
                shutdown_deadline: cfg.shutdown_deadline,
                retry_backoff: cfg.error_backoff,
                max_retry_backoff: cfg.max_error_backoff,
            },
        );
        leases.initialize().await?;
        let mut coord = StreamCoordinator {
            shared: shared.clone(),
            leases,
            shards: BTreeMap::new(),
            first_discovery: None,
            started: HashSet::new(),
            switched: false,
        };
        tokio::pin!(shutdown);
        let mut renew = tokio::time::interval_at(Instant::now() + cfg.renew_interval, cfg.renew_interval);
        renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_sync = Instant::now();
        let mut caught_up_check = tokio::time::interval(cfg.poll_interval);
        caught_up_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut caught_up = false;
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                done = coord.leases.next_done() => {
                    if coord.task_done(done) {
                        next_sync = Instant::now();
                    }
                }
                _ = renew.tick() => {
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => break,
                        () = coord.leases.renew() => {}
                    }
                }
                _ = tokio::time::sleep_until(next_sync) => {
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => break,
                        () = coord.follow_current_stream() => {}
                    }
                    let discovered = tokio::select! {
                        biased;
                        _ = &mut shutdown => break,
                        d = coord.discover() => d,
                    };
                    match discovered {
                        Ok(Some(shards)) => {
                            tokio::select! {
                                biased;
                                _ = &mut shutdown => break,
                                () = coord.sync(shards) => {}
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            coord.shutdown().await;
                            return Err(e);
                        }
                    }
                    next_sync = Instant::now() + cfg.discovery_interval;
                }
                _ = caught_up_check.tick(), if cfg.until_caught_up => {
                    if coord.all_caught_up() {
                        caught_up = true;
                        break;
                    }
                }
            }
        }
        coord.shutdown().await;
        let mut summary = std::mem::take(&mut *shared.summary_mut());
        summary.caught_up = caught_up;
        Ok(summary)
    }
}

/// The stream's side of lease balancing: which shards exist, their lineage, where each starts. The lease
/// mechanics (take, steal, renew, fencing, release) are the lease crate's [`Coordinator`].
struct StreamCoordinator<S, L, K> {
    shared: Arc<Shared<S, K>>,
    leases: Coordinator<L>,
    /// Shards from the last successful discovery.
    shards: BTreeMap<String, Shard>,
    /// Shards (id → closed?) seen by the first discovery of this run; drives `StartPosition`.
    first_discovery: Option<HashMap<String, bool>>,
    /// Shards this process has already started reading once.
    started: HashSet<String>,
    /// The stream was replaced and the new one not yet synced: nothing is caught up until it is.
    switched: bool,
}

impl<S: StreamsApi, L: LeaseStore, K: RecordSink> StreamCoordinator<S, L, K> {
    fn cfg(&self) -> &ReaderConfig {
        &self.shared.config
    }

    /// Lists all shards (paginated), retrying throttles with backoff. `Ok(None)` when it keeps failing: the next
    /// round tries again. A missing stream is fatal only on the first discovery.
    async fn discover(&self) -> Result<Option<Vec<Shard>>, ReaderError> {
        let cfg = self.cfg();
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        let mut backoff = Backoff::new(cfg.error_backoff, cfg.max_error_backoff);
        let arn = self.shared.stream_arn();
        loop {
            match self.shared.api.describe_stream(&arn, start.as_deref()).await {
                Ok(page) => {
                    backoff.reset();
                    shards.extend(page.shards);
                    match page.last_evaluated_shard_id {
                        Some(last) => start = Some(last),
                        None => return Ok(Some(shards)),
                    }
                }
                Err(StreamsError::ResourceNotFound(m)) if self.first_discovery.is_none() => {
                    return Err(ReaderError::StreamNotFound(m));
                }
                Err(e) => {
                    if matches!(e, StreamsError::Throttled(_)) {
                        self.shared.status.throttled();
                        metrics::counter!("ddbguard_stream_throttles_total", "table" => cfg.table_label.clone(), "operation" => "DescribeStream").increment(1);
                    }
                    if backoff.attempts() >= 10 {
                        tracing::warn!(error = %e, "shard discovery keeps failing; retrying next round");
                        return Ok(None);
                    }
                    tracing::debug!(error = %e, "DescribeStream failed; backing off");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Creates missing leases, observes others' heartbeats, takes available leases up to this worker's share,
    /// steals one if unbalanced, and starts shard tasks.
    async fn sync(&mut self, shards: Vec<Shard>) {
        if self.first_discovery.is_none() {
            self.first_discovery = Some(shards.iter().map(|s| (s.id.clone(), s.is_closed())).collect());
        }
        self.switched = false;
        self.shards = shards.into_iter().map(|s| (s.id.clone(), s)).collect();
        if let Err(e) = self.leases.refresh(Vec::new()).await {
            tracing::warn!(error = %e, "listing leases failed");
            return;
        }
        // A shard without a lease is new, or it left the stream after this discovery and another worker deleted
        // its finished lease in between. Creating the lease again would have some worker read a gone shard (a
        // false gap) or re-read a finished one; a discovery after the listing tells the two apart, because a
        // worker deletes a lease only after a discovery that no longer lists its shard.
        if self.shards.keys().any(|id| !self.leases.leases().contains_key(id)) {
            match self.discover().await {
                Ok(Some(fresh)) => self.shards = fresh.into_iter().map(|s| (s.id.clone(), s)).collect(),
                Ok(None) | Err(_) => return,
            }
            let wanted: Vec<Lease> = self
                .shards
                .values()
                .filter(|s| !self.leases.leases().contains_key(&s.id))
                .map(|s| Lease::new(s.id.clone(), s.parent_id.iter().cloned().collect()))
                .collect();
            if let Err(e) = self.leases.refresh(wanted).await {
                tracing::warn!(error = %e, "listing leases failed");
                return;
            }
        }
        self.shared.status.lease_synced();

        self.delete_obsolete_leases().await;

        // Shards gone from both the stream and the lease table are never started again: forget them.
        let (leases, shards) = (self.leases.leases(), &self.shards);
        self.started
            .retain(|id| leases.contains_key(id) || shards.contains_key(id));

        let readable: HashSet<String> = self
            .leases
            .leases()
            .values()
            .filter(|l| self.parents_done(l))
            .map(|l| l.key.clone())
            .collect();
        for taken in self.leases.balance(|l| readable.contains(&l.key)).await {
            self.start_shard(taken);
        }
        self.publish_leases_held();
    }

    /// Follows the table's current stream. A stream disabled and enabled again gets a new ARN, and the old one
    /// only closes: reading it alone would leave the process idle forever. The old stream is read to its end
    /// first (its records were written before it was disabled), or until it is gone; then the switch is reported
    /// as a gap (writes between the two streams are in neither) and the new stream is read from its start.
    async fn follow_current_stream(&mut self) {
        if self.first_discovery.is_none() {
            return;
        }
        let current = self.shared.stream_arn();
        let table = table_name_from_stream_arn(&current).to_owned();
        let latest = match self.shared.api.latest_stream_arn(&table).await {
            Ok(Some(latest)) if latest != current => latest,
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "listing the table's streams failed; retrying next round");
                return;
            }
        };
        let leases = self.leases.leases();
        let read_to_end = self.shards.keys().all(|id| leases.get(id).is_some_and(|l| l.finished));
        let old_gone = !read_to_end
            && matches!(
                self.shared.api.describe_stream(&current, None).await,
                Err(StreamsError::ResourceNotFound(_))
            );
        if !(read_to_end || old_gone) {
            tracing::info!(old = %current, new = %latest, "the table has a new stream; reading the old one to its end first");
            return;
        }
        let gap = StreamGap {
            table: self.cfg().table_label.clone(),
            shard_id: latest.clone(),
            checkpoint: None,
            first_available: None,
            reason: GapReason::StreamReplaced,
        };
        tracing::warn!(
            target: "alert",
            event = "stream_gap",
            table = %gap.table,
            old_stream = %current,
            new_stream = %latest,
            reason = gap.reason.as_str(),
            "the table's stream was replaced; writes between the two streams were in neither"
        );
        metrics::counter!("ddbguard_stream_gaps_total", "table" => gap.table.clone(), "shard" => gap.shard_id.clone())
            .increment(1);
        self.shared.status.gap(&gap);
        self.shared.sink.on_gap(&gap);
        self.shared.summary_mut().note_gap(gap);
        *self.shared.stream_arn.lock().unwrap_or_else(|e| e.into_inner()) = latest;
        self.shards.clear();
        self.switched = true;
    }

    /// Deletes finished leases whose shard left the stream (past retention) and that no listed shard names as its
    /// parent, so that the lease table does not grow forever (shards roll over every few hours).
    async fn delete_obsolete_leases(&mut self) {
        let parents: HashSet<&String> = self.shards.values().filter_map(|s| s.parent_id.as_ref()).collect();
        let obsolete: Vec<String> = self
            .leases
            .leases()
            .values()
            .filter(|l| l.finished && !self.shards.contains_key(&l.key) && !parents.contains(&l.key))
            .map(|l| l.key.clone())
            .collect();
        for shard_id in obsolete {
            match self.leases.delete_finished(&shard_id).await {
                Ok(()) => {
                    tracing::debug!(shard = %shard_id, "deleted the lease of a finished shard gone from the stream")
                }
                Err(e) => tracing::debug!(shard = %shard_id, error = %e, "deleting an obsolete lease failed"),
            }
        }
    }

    fn parents_done(&self, lease: &Lease) -> bool {
        let leases = self.leases.leases();
        let mut parents: Vec<&String> = lease.dependencies.iter().collect();
        if let Some(p) = self.shards.get(&lease.key).and_then(|s| s.parent_id.as_ref()) {
            parents.push(p);
        }
        parents.into_iter().all(|p| match leases.get(p) {
            Some(pl) => pl.finished,
            // The parent is past retention and gone from the stream: nothing left to read before this child.
            None => !self.shards.contains_key(p),
        })
    }

    fn start_shard(&mut self, taken: Taken) {
        let shard_id = taken.grant.key.clone();
        let first_time = self.started.insert(shard_id.clone());
        let at_startup = self.first_discovery.as_ref().and_then(|m| m.get(&shard_id)).copied();
        // `Latest` skips only what nobody has read yet: a checkpoint in a shared lease table is another worker's
        // progress, and skipping past it would drop the shard's unread records for every worker.
        let unread = taken.lease.position.is_none();
        let initial = match (self.cfg().start_position, first_time, at_startup) {
            (StartPosition::TrimHorizon, true, Some(_)) => Initial::Position(IteratorPosition::TrimHorizon),
            (StartPosition::Latest, true, Some(false)) if unread => Initial::Position(IteratorPosition::Latest),
            (StartPosition::Latest, true, Some(true)) if unread => Initial::SkipToEnd,
            _ => Initial::Checkpoint,
        };
        tracing::info!(shard = %shard_id, token = taken.grant.token, ?initial, "lease taken");
        let checkpoint = taken.lease.position.as_ref().map(Checkpoint::from_position);
        self.shared
            .status
            .lease_taken(&shard_id, checkpoint.as_ref().map(|c| c.sequence_number.clone()));
        let shared = self.shared.clone();
        let stream_arn = shared.stream_arn();
        self.leases.spawn(taken, move |lease| {
            ShardTask {
                shared,
                stream_arn,
                shard_id,
                lease,
                stored: checkpoint,
                initial,
            }
            .run()
        });
    }

    /// Handles a finished shard task; returns whether discovery should run now (a shard finished or failed).
    fn task_done(&mut self, done: ddbguard_lease::Done) -> bool {
        self.drop_shard_status(&done.key);
        let resync = match done.end {
            Ok(TaskEnd::Finished) => {
                self.shared.summary_mut().note_finished(&done.key);
                tracing::info!(shard = %done.key, "shard finished");
                true
            }
            Ok(TaskEnd::LeaseLost) => false,
            Ok(TaskEnd::Stopped) => false,
            Err(_) => true,
        };
        self.publish_leases_held();
        resync
    }

    fn all_caught_up(&self) -> bool {
        if self.first_discovery.is_none() || self.switched {
            return false;
        }
        let leases = self.leases.leases();
        self.shards.keys().all(|id| {
            leases.get(id).is_some_and(|l| l.finished) || (self.leases.holds(id) && self.shared.status.is_caught_up(id))
        })
    }

    /// Forgets a shard's live status and zeroes its lag gauge: the new owner (if any) reports the shard from now
    /// on, and a stale value must not keep a lag alarm firing.
    fn drop_shard_status(&self, shard_id: &str) {
        self.shared.status.lease_dropped(shard_id);
        metrics::gauge!("ddbguard_shard_lag_seconds", "table" => self.cfg().table_label.clone(), "shard" => shard_id.to_owned())
            .set(0.0);
        publish_table_lag(&self.cfg().table_label, &self.shared.status);
    }

    /// Also refreshes the table's lag, so that a worker holding no shard reports 0 instead of letting the series
    /// expire (or keep a stale value).
    fn publish_leases_held(&self) {
        metrics::gauge!("ddbguard_leases_held", "table" => self.cfg().table_label.clone())
            .set(self.shared.status.leases_held() as f64);
        publish_table_lag(&self.cfg().table_label, &self.shared.status);
    }

    /// Stops all shard tasks, waits for in-flight batches and their checkpoints (bounded by the deadline) and
    /// releases the leases.
    async fn shutdown(&mut self) {
        let ShutdownReport {
            released,
            finished,
            held,
            timed_out,
        } = self.leases.shutdown().await;
        {
            let mut summary = self.shared.summary_mut();
            for shard in &finished {
                summary.note_finished(shard);
            }
            summary.leases_released += released;
            summary.shutdown_timed_out |= timed_out;
        }
        for shard in &held {
            self.drop_shard_status(shard);
        }
        self.publish_leases_held();
        tracing::info!(released, "stream reader stopped");
    }
}

impl<S, K> Shared<S, K> {
    fn stream_arn(&self) -> String {
        self.stream_arn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn summary_mut(&self) -> std::sync::MutexGuard<'_, RunSummary> {
        self.summary.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sets the table's lag: the largest lag of the shards this process reads (0 when it reads none), the one
/// number a "verifier behind" alarm needs without aggregating per-shard series.
fn publish_table_lag(table: &str, status: &StatusHandle) {
    metrics::gauge!("ddbguard_stream_lag_seconds", "table" => table.to_owned()).set(status.max_lag().as_secs_f64());
}

/// Records how long a completed `GetRecords` call took, by outcome (a call cut short by a stop is not recorded).
fn record_get_records(table: &str, got: &Result<RecordsPage, StreamsError>, took: Duration) {
    let outcome = match got {
        Ok(_) => "ok",
        Err(StreamsError::Throttled(_)) => "throttled",
        Err(StreamsError::ExpiredIterator(_)) => "expired_iterator",
        Err(StreamsError::TrimmedDataAccess(_)) => "trimmed",
        Err(StreamsError::ResourceNotFound(_)) => "not_found",
        Err(StreamsError::Other(_)) => "error",
    };
    metrics::histogram!("ddbguard_stream_get_records_duration_seconds", "table" => table.to_owned(), "outcome" => outcome)
        .record(took.as_secs_f64());
}

/// The per-shard loop: read a batch, hand it to the sink, checkpoint, repeat.
struct ShardTask<S, L, K> {
    shared: Arc<Shared<S, K>>,
    /// The stream the shard belongs to.
    stream_arn: String,
    shard_id: String,
    lease: LeaseContext<L>,
    /// The checkpoint stored in the lease when it was taken.
    stored: Option<Checkpoint>,
    initial: Initial,
}

impl<S: StreamsApi, L: LeaseStore, K: RecordSink> ShardTask<S, L, K> {
    fn cfg(&self) -> &ReaderConfig {
        &self.shared.config
    }

    fn stopped(&self) -> Option<TaskEnd> {
        self.lease.stopped()
    }

    async fn pause(&mut self, d: Duration) -> bool {
        self.lease.pause(d).await
    }

    async fn run(mut self) -> TaskEnd {
        let shared = self.shared.clone();
        let shard_id = self.shard_id.clone();
        let stream_arn = self.stream_arn.clone();
        let table = self.cfg().table_label.clone();
        let mut checkpoint = self.stored.clone();
        // Records up to the stored checkpoint are redeliveries when resuming from it; an explicit start position
        // (an audit from the trim horizon) verifies them again.
        let mut dup_floor = match self.initial {
            Initial::Checkpoint => checkpoint.as_ref().map(|c| c.sequence_number.clone()),
            _ => None,
        };
        let resumed = matches!(self.initial, Initial::Checkpoint);
        // Whether this task has checkpointed a batch.
        let mut delivered = false;
        let mut pending_gap: Option<(Option<SequenceNumber>, GapReason)> = None;
        let restart_position = match &self.initial {
            Initial::SkipToEnd => {
                tracing::info!(shard = %shard_id, "closed at startup with start position LATEST: marked finished unread");
                return match self.write_checkpoint(None, true).await {
                    Ok(()) => TaskEnd::Finished,
                    Err(o) => o,
                };
            }
            Initial::Position(p) => p.clone(),
            Initial::Checkpoint => IteratorPosition::TrimHorizon,
        };
        let mut position = match (&self.initial, &checkpoint) {
            (Initial::Checkpoint, Some(cp)) => {
                let age = cp.record_time.and_then(|t| SystemTime::now().duration_since(t).ok());
                if age.is_some_and(|a| a > self.cfg().retention) {
                    pending_gap = Some((Some(cp.sequence_number.clone()), GapReason::CheckpointExpired));
                    IteratorPosition::TrimHorizon
                } else {
                    IteratorPosition::AfterSequenceNumber(cp.sequence_number.clone())
                }
            }
            _ => restart_position.clone(),
        };
        let mut iterator: Option<String> = None;
        let mut poll = Backoff::new(self.cfg().poll_interval, self.cfg().max_poll_interval);
        let mut empty_pages: u32 = 0;
        let mut errors = Backoff::new(self.cfg().error_backoff, self.cfg().max_error_backoff);
        loop {
            if let Some(o) = self.stopped() {
                return o;
            }
            let it = match iterator.take() {
                Some(it) => it,
                None => {
                    let got = tokio::select! {
                        r = shared.api.get_shard_iterator(&stream_arn, &shard_id, &position) => r,
                        _ = self.lease.stop_requested() => continue,
                    };
                    match got {
                        Ok(it) => it,
                        Err(StreamsError::TrimmedDataAccess(_)) if position != IteratorPosition::TrimHorizon => {
                            if resumed || delivered {
                                dup_floor = checkpoint.as_ref().map(|c| c.sequence_number.clone()).or(dup_floor);
                            }
                            pending_gap = Some((
                                checkpoint.as_ref().map(|c| c.sequence_number.clone()),
                                GapReason::Trimmed,
                            ));
                            position = IteratorPosition::TrimHorizon;
                            continue;
                        }
                        Err(StreamsError::ResourceNotFound(m)) => {
                            if self.confirmed_gone(&m).await {
                                return self.shard_gone(&checkpoint).await;
                            }
                            let d = errors.next_delay();
                            self.pause(d).await;
                            continue;
                        }
                        Err(e) => {
                            self.note_error("GetShardIterator", &e);
                            let d = errors.next_delay();
                            self.pause(d).await;
                            continue;
                        }
                    }
                }
            };
            let sent = Instant::now();
            let got = tokio::select! {
                r = shared.api.get_records(&it, shared.config.max_records_per_batch) => r,
                _ = self.lease.stop_requested() => continue,
            };
            record_get_records(&table, &got, sent.elapsed());
            let page = match got {
                Ok(page) => page,
                Err(StreamsError::ExpiredIterator(_)) => {
                    tracing::debug!(shard = %shard_id, "iterator expired; refreshing from the checkpoint");
                    metrics::counter!("ddbguard_stream_iterator_refreshes_total", "table" => table.clone())
                        .increment(1);
                    position = match &checkpoint {
                        Some(cp) => IteratorPosition::AfterSequenceNumber(cp.sequence_number.clone()),
                        None => restart_position.clone(),
                    };
                    continue;
                }
                Err(StreamsError::TrimmedDataAccess(_)) => {
                    // Re-read from the trim horizon: records up to the checkpoint, if still there, were delivered
                    // (by this task, or before the checkpoint it resumed from) and come again as redeliveries.
                    if resumed || delivered {
                        dup_floor = checkpoint.as_ref().map(|c| c.sequence_number.clone()).or(dup_floor);
                    }
                    pending_gap = Some((
                        checkpoint.as_ref().map(|c| c.sequence_number.clone()),
                        GapReason::Trimmed,
                    ));
                    position = IteratorPosition::TrimHorizon;
                    continue;
                }
                Err(StreamsError::ResourceNotFound(m)) => {
                    if self.confirmed_gone(&m).await {
                        return self.shard_gone(&checkpoint).await;
                    }
                    // A fresh iterator from the checkpoint: the old one may be what the service no longer knows.
                    position = match &checkpoint {
                        Some(cp) => IteratorPosition::AfterSequenceNumber(cp.sequence_number.clone()),
                        None => restart_position.clone(),
                    };
                    let d = errors.next_delay();
                    self.pause(d).await;
                    continue;
                }
                Err(e) => {
                    self.note_error("GetRecords", &e);
                    iterator = Some(it);
                    let d = errors.next_delay();
                    self.pause(d).await;
                    continue;
                }
            };
            errors.reset();
            self.report_left_out(&page.left_out);
            let finished = page.next_iterator.is_none();
            if let Some((cp, reason)) = pending_gap.take() {
                let first = page.records.first().map(|r| r.sequence_number.clone());
                match (&cp, &first) {
                    // The checkpointed record (or an earlier one) is still there: nothing was lost.
                    (Some(c), Some(f)) if f <= c => {
                        tracing::debug!(shard = %shard_id, "the checkpoint is still retained; no gap");
                    }
                    // Empty pages before the shard's tip say nothing yet about what is retained.
                    (_, None) if !finished && empty_pages + 1 < self.cfg().empty_pages_at_tip => {
                        pending_gap = Some((cp, reason));
                    }
                    _ => self.report_gap(cp, first, reason),
                }
            }
            if page.records.is_empty() {
                if finished {
                    self.shared.status.read_ok(&shard_id, Duration::ZERO, true);
                    self.set_lag(Duration::ZERO);
                    return match self.write_checkpoint(checkpoint.as_ref(), true).await {
                        Ok(()) => TaskEnd::Finished,
                        Err(o) => o,
                    };
                }
                iterator = page.next_iterator;
                empty_pages = empty_pages.saturating_add(1);
                if empty_pages < self.cfg().empty_pages_at_tip {
                    self.shared.status.read_nothing(&shard_id);
                    self.pause(EMPTY_PAGE_REPOLL).await;
                    continue;
                }
                self.shared.status.read_ok(&shard_id, Duration::ZERO, true);
                self.set_lag(Duration::ZERO);
                let d = poll.next_delay();
                self.pause(d).await;
                continue;
            }
            empty_pages = 0;
            poll.reset();
            let last = page.records.last().expect("non-empty");
            let lag = last
                .approximate_creation_time
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or(Duration::ZERO);
            self.shared.status.read_ok(&shard_id, lag, false);
            self.set_lag(lag);
            let new_cp = Checkpoint {
                sequence_number: last.sequence_number.clone(),
                record_time: last.approximate_creation_time,
            };
            let duplicates = match &dup_floor {
                Some(floor) => page.records.iter().take_while(|r| r.sequence_number <= *floor).count(),
                None => 0,
            };
            let batch = RecordBatch {
                shard_id: shard_id.clone(),
                records: page.records,
                duplicates,
            };
            // Deliver; the sink is never cancelled mid-batch (shutdown waits for it).
            loop {
                match self.shared.sink.process(&batch).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(shard = %shard_id, error = %e, "record sink failed; offering the batch again");
                        let d = errors.next_delay();
                        if !self.pause(d).await {
                            // Not checkpointed: whoever reads the shard next sees the batch again.
                            return self.stopped().unwrap_or(TaskEnd::Stopped);
                        }
                    }
                }
            }
            errors.reset();
            let n = batch.records.len() as u64;
            if duplicates > 0 {
                metrics::counter!("ddbguard_stream_duplicate_records_total", "table" => table.clone())
                    .increment(duplicates as u64);
            }
            if let Err(o) = self.write_checkpoint(Some(&new_cp), finished).await {
                return o;
            }
            self.shared
                .status
                .delivered(&shard_id, n, duplicates as u64, new_cp.sequence_number.clone());
            {
                let mut s = self.shared.summary_mut();
                s.records += n;
                s.duplicates += duplicates as u64;
            }
            position = IteratorPosition::AfterSequenceNumber(new_cp.sequence_number.clone());
            checkpoint = Some(new_cp);
            delivered = true;
            if finished {
                return TaskEnd::Finished;
            }
            iterator = page.next_iterator;
        }
    }

    fn set_lag(&self, lag: Duration) {
        metrics::gauge!("ddbguard_shard_lag_seconds", "table" => self.cfg().table_label.clone(), "shard" => self.shard_id.clone())
            .set(lag.as_secs_f64());
        publish_table_lag(&self.cfg().table_label, &self.shared.status);
    }

    /// Counts and alerts the records the page left out: they were never verified, and nothing else says so.
    fn report_left_out(&self, left_out: &[String]) {
        if left_out.is_empty() {
            return;
        }
        let table = &self.cfg().table_label;
        metrics::counter!("ddbguard_stream_malformed_records_total", "table" => table.clone())
            .increment(left_out.len() as u64);
        for why in left_out {
            tracing::error!(
                target: "alert",
                event = "malformed_stream_record",
                table = %table,
                shard = %self.shard_id,
                error = %why,
                "a stream record without a position was left out of its page"
            );
        }
    }

    fn note_error(&self, operation: &'static str, e: &StreamsError) {
        if matches!(e, StreamsError::Throttled(_)) {
            self.shared.status.throttled();
            metrics::counter!("ddbguard_stream_throttles_total", "table" => self.cfg().table_label.clone(), "operation" => operation).increment(1);
            tracing::debug!(shard = %self.shard_id, operation, "throttled; backing off");
        } else {
            tracing::warn!(shard = %self.shard_id, operation, error = %e, "streams call failed; backing off");
        }
    }

    /// Whether a `ResourceNotFound` means the shard is gone: only when a full listing of the stream no longer
    /// names it. The service also answers it transiently (e.g. for a shard created a moment ago); ending the
    /// shard then would mark it finished unread and let its children start before it.
    async fn confirmed_gone(&self, message: &str) -> bool {
        let shared = &self.shared;
        let mut start: Option<String> = None;
        loop {
            match shared.api.describe_stream(&self.stream_arn, start.as_deref()).await {
                Ok(page) => {
                    if page.shards.iter().any(|s| s.id == self.shard_id) {
                        tracing::warn!(shard = %self.shard_id, message, "ResourceNotFound for a listed shard; retrying");
                        return false;
                    }
                    match page.last_evaluated_shard_id {
                        Some(last) => start = Some(last),
                        None => {
                            tracing::debug!(shard = %self.shard_id, message, "shard not found and no longer listed");
                            return true;
                        }
                    }
                }
                // The whole stream is gone (deleted, or past its 24 h after being disabled): so is the shard.
                Err(StreamsError::ResourceNotFound(_)) => return true,
                Err(e) => {
                    self.note_error("DescribeStream", &e);
                    return false;
                }
            }
        }
    }

    /// The shard disappeared from the stream: whatever was unread is lost; report it and mark the shard finished.
    async fn shard_gone(&mut self, checkpoint: &Option<Checkpoint>) -> TaskEnd {
        self.report_gap(
            checkpoint.as_ref().map(|c| c.sequence_number.clone()),
            None,
            GapReason::ShardGone,
        );
        match self.write_checkpoint(checkpoint.as_ref(), true).await {
            Ok(()) => TaskEnd::Finished,
            Err(o) => o,
        }
    }

    fn report_gap(
        &self,
        checkpoint: Option<SequenceNumber>,
        first_available: Option<SequenceNumber>,
        reason: GapReason,
    ) {
        let gap = StreamGap {
            table: self.cfg().table_label.clone(),
            shard_id: self.shard_id.clone(),
            checkpoint,
            first_available,
            reason,
        };
        metrics::counter!("ddbguard_stream_gaps_total", "table" => gap.table.clone(), "shard" => gap.shard_id.clone())
            .increment(1);
        tracing::warn!(
            target: "alert",
            event = "stream_gap",
            table = %gap.table,
            shard = %gap.shard_id,
            checkpoint = gap.checkpoint.as_ref().map(|s| s.as_str()).unwrap_or("none"),
            first_available = gap.first_available.as_ref().map(|s| s.as_str()).unwrap_or("none"),
            reason = gap.reason.as_str(),
            "stream records were trimmed before they were verified; continuing from the trim horizon"
        );
        self.shared.status.gap(&gap);
        self.shared.sink.on_gap(&gap);
        self.shared.summary_mut().note_gap(gap);
    }

    /// Writes the checkpoint under the lease (fenced, retried); `Err` when the lease is lost or the task stops.
    async fn write_checkpoint(&mut self, cp: Option<&Checkpoint>, finished: bool) -> Result<(), TaskEnd> {
        let position = cp.map(Checkpoint::to_position);
        self.lease.checkpoint(position.as_ref(), finished).await
    }
}
