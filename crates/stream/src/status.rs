//! A cheap, lock-protected snapshot of what the reader is doing, for `/readyz`, logs and tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{SequenceNumber, StreamGap};

/// Most recent gaps kept in the status (older ones are only counted).
const MAX_GAPS_KEPT: usize = 64;

/// A point-in-time view of a reader.
#[derive(Clone, Debug, Default)]
pub struct ReaderStatus {
    /// This worker's id.
    pub worker_id: String,
    /// Shards whose lease this worker holds.
    pub leases_held: Vec<String>,
    /// Per held shard.
    pub shards: Vec<ShardStatus>,
    /// Records handed to the sink since start.
    pub records_total: u64,
    /// Of those, records at or below a stored checkpoint (redeliveries).
    pub duplicates_total: u64,
    /// Throttled Streams calls since start.
    pub throttles_total: u64,
    /// Gaps declared since start.
    pub gaps_total: u64,
    /// The most recent gaps (at most 64).
    pub recent_gaps: Vec<StreamGap>,
    /// Time since the last successful round of shard discovery and lease listing; `None` before the first.
    /// A worker holding no lease (more workers than shards) is a healthy standby as long as this is recent.
    pub last_lease_sync: Option<Duration>,
    /// No successful round for longer than two discovery intervals plus a lease duration: the worker would not
    /// notice a dead peer's shards in time.
    pub lease_sync_stale: bool,
}

impl ReaderStatus {
    /// Shards with no successful `GetRecords` for longer than the stall threshold.
    pub fn stalled_shards(&self) -> Vec<&str> {
        self.shards
            .iter()
            .filter(|s| s.stalled)
            .map(|s| s.shard_id.as_str())
            .collect()
    }

    /// Readiness as `/readyz` defines it: leases synced recently (holding one is not needed: a standby takes
    /// over a dead peer's shards) and no shard stalled.
    pub fn is_ready(&self) -> bool {
        self.last_lease_sync.is_some() && !self.lease_sync_stale && self.shards.iter().all(|s| !s.stalled)
    }
}

/// One held shard.
#[derive(Clone, Debug)]
pub struct ShardStatus {
    /// The shard.
    pub shard_id: String,
    /// now − approximate creation time of the last record read; zero when the last read found the shard's tip;
    /// `None` before the first successful read.
    pub lag: Option<Duration>,
    /// No successful `GetRecords` for more than the stall threshold.
    pub stalled: bool,
    /// A read found the shard's tip at least once since the lease was taken.
    pub caught_up: bool,
    /// Records handed to the sink from this shard since the lease was taken.
    pub records: u64,
    /// Last checkpoint written.
    pub checkpoint: Option<SequenceNumber>,
}

#[derive(Debug)]
struct ShardState {
    taken_at: Instant,
    last_success: Option<Instant>,
    lag: Option<Duration>,
    caught_up: bool,
    records: u64,
    checkpoint: Option<SequenceNumber>,
}

#[derive(Debug, Default)]
struct Inner {
    worker_id: String,
    stall_after: Duration,
    sync_stale_after: Duration,
    last_sync: Option<Instant>,
    shards: BTreeMap<String, ShardState>,
    records_total: u64,
    duplicates_total: u64,
    throttles_total: u64,
    gaps_total: u64,
    recent_gaps: Vec<StreamGap>,
}

/// Shared handle to a reader's live status; clone freely, call [`StatusHandle::snapshot`] any time.
#[derive(Clone, Debug, Default)]
pub struct StatusHandle(Arc<Mutex<Inner>>);

impl StatusHandle {
    pub(crate) fn new(worker_id: &str, stall_after: Duration, sync_stale_after: Duration) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            worker_id: worker_id.to_owned(),
            stall_after,
            sync_stale_after,
            ..Inner::default()
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current status.
    pub fn snapshot(&self) -> ReaderStatus {
        let inner = self.lock();
        let now = Instant::now();
        let shards: Vec<ShardStatus> = inner
            .shards
            .iter()
            .map(|(id, s)| ShardStatus {
                shard_id: id.clone(),
                lag: s.lag,
                stalled: now.saturating_duration_since(s.last_success.unwrap_or(s.taken_at)) > inner.stall_after,
                caught_up: s.caught_up,
                records: s.records,
                checkpoint: s.checkpoint.clone(),
            })
            .collect();
        ReaderStatus {
            worker_id: inner.worker_id.clone(),
            leases_held: inner.shards.keys().cloned().collect(),
            shards,
            records_total: inner.records_total,
            duplicates_total: inner.duplicates_total,
            throttles_total: inner.throttles_total,
            gaps_total: inner.gaps_total,
            recent_gaps: inner.recent_gaps.clone(),
            last_lease_sync: inner.last_sync.map(|t| now.saturating_duration_since(t)),
            lease_sync_stale: inner
                .last_sync
                .is_none_or(|t| now.saturating_duration_since(t) > inner.sync_stale_after),
        }
    }

    /// A round of discovery and lease listing succeeded.
    pub(crate) fn lease_synced(&self) {
        self.lock().last_sync = Some(Instant::now());
    }

    pub(crate) fn lease_taken(&self, shard_id: &str, checkpoint: Option<SequenceNumber>) {
        self.lock().shards.insert(
            shard_id.to_owned(),
            ShardState {
                taken_at: Instant::now(),
                last_success: None,
                lag: None,
                caught_up: false,
                records: 0,
                checkpoint,
            },
        );
    }

    pub(crate) fn lease_dropped(&self, shard_id: &str) {
        self.lock().shards.remove(shard_id);
    }

    pub(crate) fn leases_held(&self) -> usize {
        self.lock().shards.len()
    }

    /// The largest known lag of the shards held; zero when none is held or known.
    pub(crate) fn max_lag(&self) -> Duration {
        self.lock()
            .shards
            .values()
            .filter_map(|s| s.lag)
            .max()
            .unwrap_or_default()
    }

    pub(crate) fn is_caught_up(&self, shard_id: &str) -> bool {
        self.lock().shards.get(shard_id).is_some_and(|s| s.caught_up)
    }

    pub(crate) fn read_ok(&self, shard_id: &str, lag: Duration, at_tip: bool) {
        let mut inner = self.lock();
        if let Some(s) = inner.shards.get_mut(shard_id) {
            s.last_success = Some(Instant::now());
            s.lag = Some(lag);
            s.caught_up |= at_tip;
        }
    }

    /// A successful read that returned nothing but is not yet taken as the shard's tip: the shard is alive, its
    /// lag unknown.
    pub(crate) fn read_nothing(&self, shard_id: &str) {
        if let Some(s) = self.lock().shards.get_mut(shard_id) {
            s.last_success = Some(Instant::now());
        }
    }

    pub(crate) fn delivered(&self, shard_id: &str, records: u64, duplicates: u64, checkpoint: SequenceNumber) {
        let mut inner = self.lock();
        inner.records_total += records;
        inner.duplicates_total += duplicates;
        if let Some(s) = inner.shards.get_mut(shard_id) {
            s.records += records;
            s.checkpoint = Some(checkpoint);
        }
    }

    pub(crate) fn throttled(&self) {
        self.lock().throttles_total += 1;
    }

    pub(crate) fn gap(&self, gap: &StreamGap) {
        let mut inner = self.lock();
        inner.gaps_total += 1;
        if inner.recent_gaps.len() == MAX_GAPS_KEPT {
            inner.recent_gaps.remove(0);
        }
        inner.recent_gaps.push(gap.clone());
    }
}
