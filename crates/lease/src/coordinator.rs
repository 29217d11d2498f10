//! The coordinator: takes leases by the [plan](crate::plan), steals to balance, renews what it holds, runs one
//! task per held lease, fences every checkpoint, and releases everything within a deadline at shutdown.
//!
//! The user keeps the loop (it knows when to look for new work: a stream lists shards, a backfill has fixed scan
//! segments) and calls [`Coordinator::refresh`], [`Coordinator::balance`], [`Coordinator::renew`] and
//! [`Coordinator::next_done`] from it. Every task runs in the coordinator's [`JoinSet`], so none outlives
//! [`Coordinator::shutdown`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ddbguard_ddb::Backoff;
use tokio::sync::watch;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;

use crate::error::LeaseError;
use crate::lease::{Lease, LeaseGrant, Position, Taken};
use crate::plan::{Candidate, PlanInput, plan};
use crate::store::LeaseStore;

/// Coordinator settings.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Unique id of this worker; the lease owner name.
    pub worker_id: String,
    /// A lease whose counter has not moved for this long is considered abandoned and taken over.
    pub lease_duration: Duration,
    /// At most this many leases are held at once.
    pub max_leases: usize,
    /// Take leases from workers holding more than their share (one per round).
    pub steal: bool,
    /// [`Coordinator::shutdown`] returns within this time even if a task hangs (it is then aborted and its
    /// in-flight work not checkpointed).
    pub shutdown_deadline: Duration,
    /// First delay of a failed checkpoint's retry; doubles (with jitter) up to `max_retry_backoff`.
    pub retry_backoff: Duration,
    /// Cap of the checkpoint retry backoff.
    pub max_retry_backoff: Duration,
}

impl CoordinatorConfig {
    /// Defaults: 20 s leases, 64 leases, stealing on, 20 s shutdown, retries 100 ms → 10 s.
    pub fn new(worker_id: impl Into<String>) -> Self {
        Self {
            worker_id: worker_id.into(),
            lease_duration: Duration::from_secs(20),
            max_leases: 64,
            steal: true,
            shutdown_deadline: Duration::from_secs(20),
            retry_backoff: Duration::from_millis(100),
            max_retry_backoff: Duration::from_secs(10),
        }
    }
}

/// Why a task is asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Run,
    Shutdown,
    LeaseLost,
}

/// How a lease task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskEnd {
    /// The work behind the lease is complete and the lease was checkpointed `finished`.
    Finished,
    /// Stopped on request (shutdown); the lease is released by the coordinator.
    Stopped,
    /// The lease was lost (a fenced write was refused, or renewals failed for a lease duration).
    LeaseLost,
}

/// What a task gets: its grant, the stop signal, and fenced checkpoints.
#[derive(Debug)]
pub struct LeaseContext<L> {
    store: Arc<L>,
    grant: LeaseGrant,
    stop: watch::Receiver<Signal>,
    retry: (Duration, Duration),
}

impl<L: LeaseStore> LeaseContext<L> {
    /// The grant this task works under.
    pub fn grant(&self) -> &LeaseGrant {
        &self.grant
    }

    /// `Some` once the task should stop: how it should then end.
    pub fn stopped(&self) -> Option<TaskEnd> {
        // The coordinator dropped the sender without a word: nobody renews the lease any more, so stop.
        if self.stop.has_changed().is_err() {
            return Some(TaskEnd::Stopped);
        }
        match *self.stop.borrow() {
            Signal::Run => None,
            Signal::Shutdown => Some(TaskEnd::Stopped),
            Signal::LeaseLost => Some(TaskEnd::LeaseLost),
        }
    }

    /// Completes when the task is asked to stop (use it in `select!` around slow calls). Cancel-safe.
    pub async fn stop_requested(&mut self) {
        while self.stopped().is_none() {
            if self.stop.changed().await.is_err() {
                return;
            }
        }
    }

    /// Sleeps for `d` unless asked to stop first; returns whether the sleep completed.
    pub async fn pause(&mut self, d: Duration) -> bool {
        if self.stopped().is_some() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.stop_requested() => false,
        }
    }

    /// Writes the position (and `finished`) under the grant, retrying throttles and errors with backoff (a few
    /// times only once stopping). `Err(LeaseLost)` when the store refuses the grant: another worker owns the lease
    /// now and the task must end without acting further.
    pub async fn checkpoint(&mut self, position: Option<&Position>, finished: bool) -> Result<(), TaskEnd> {
        let mut backoff = Backoff::new(self.retry.0, self.retry.1);
        loop {
            match self.store.checkpoint(&self.grant, position, finished).await {
                Ok(()) => return Ok(()),
                Err(LeaseError::Conflict(_)) => {
                    tracing::warn!(lease = %self.grant.key, "checkpoint refused: lease lost");
                    return Err(TaskEnd::LeaseLost);
                }
                Err(e) => {
                    tracing::warn!(lease = %self.grant.key, error = %e, "checkpoint failed; retrying");
                    if let Some(end) = self.stopped()
                        && backoff.attempts() >= 3
                    {
                        return Err(end);
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}

/// A task that ended, as [`Coordinator::next_done`] reports it.
#[derive(Debug)]
pub struct Done {
    /// The lease key.
    pub key: String,
    /// How it ended; `Err` when the task panicked (its lease has been released).
    pub end: Result<TaskEnd, String>,
}

/// What [`Coordinator::shutdown`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Leases released.
    pub released: usize,
    /// Keys whose task finished its work while stopping.
    pub finished: Vec<String>,
    /// Every key held when shutdown began.
    pub held: Vec<String>,
    /// Some task did not end within the deadline and was aborted.
    pub timed_out: bool,
}

struct Held {
    grant: LeaseGrant,
    stop: watch::Sender<Signal>,
    last_renewed: Instant,
}

/// What another worker's lease looked like when we last saw it change.
struct Observed {
    owner: Option<String>,
    counter: u64,
    since: Instant,
}

/// Takes, renews, runs and releases leases for one worker. Generic over the store so that tests use
/// [`MemoryLeaseStore`](crate::MemoryLeaseStore).
pub struct Coordinator<L> {
    store: Arc<L>,
    config: CoordinatorConfig,
    /// Leases from the last listing, updated locally as our tasks finish.
    leases: BTreeMap<String, Lease>,
    observed: HashMap<String, Observed>,
    held: HashMap<String, Held>,
    tasks: JoinSet<TaskEnd>,
    /// Key and token of each running task (a key can be held again, under a new token, before the task of an
    /// earlier grant has ended).
    task_keys: HashMap<Id, (String, u64)>,
}

impl<L> std::fmt::Debug for Coordinator<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("config", &self.config)
            .field("held", &self.held.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<L: LeaseStore> Coordinator<L> {
    /// A coordinator over `store`. Nothing is called until [`Coordinator::initialize`].
    pub fn new(store: L, config: CoordinatorConfig) -> Self {
        Self {
            store: Arc::new(store),
            config,
            leases: BTreeMap::new(),
            observed: HashMap::new(),
            held: HashMap::new(),
            tasks: JoinSet::new(),
            task_keys: HashMap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &L {
        &self.store
    }

    /// Prepares the store (creates the lease table if missing).
    pub async fn initialize(&self) -> Result<(), LeaseError> {
        self.store.initialize().await
    }

    /// The leases as last listed (with this worker's finished tasks marked finished).
    pub fn leases(&self) -> &BTreeMap<String, Lease> {
        &self.leases
    }

    /// Whether this worker holds `key`.
    pub fn holds(&self, key: &str) -> bool {
        self.held.contains_key(key)
    }

    /// The keys this worker holds.
    pub fn held_keys(&self) -> impl Iterator<Item = &str> {
        self.held.keys().map(String::as_str)
    }

    /// Whether some task is running.
    pub fn has_tasks(&self) -> bool {
        !self.tasks.is_empty()
    }

    /// Lists the leases, creates those of `wanted` that do not exist yet, and notes who moved which counter (the
    /// expiry clock of other workers' leases).
    pub async fn refresh(&mut self, wanted: impl IntoIterator<Item = Lease>) -> Result<(), LeaseError> {
        let listed = self.store.list_leases().await?;
        self.leases = listed.into_iter().map(|l| (l.key.clone(), l)).collect();
        let missing: Vec<Lease> = wanted
            .into_iter()
            .filter(|l| !self.leases.contains_key(&l.key))
            .collect();
        if !missing.is_empty() {
            for lease in &missing {
                if let Err(e) = self.store.create_lease_if_absent(lease).await {
                    tracing::warn!(lease = %lease.key, error = %e, "creating lease failed");
                }
            }
            let listed = self.store.list_leases().await?;
            self.leases = listed.into_iter().map(|l| (l.key.clone(), l)).collect();
        }
        let now = Instant::now();
        for l in self.leases.values() {
            let changed = match self.observed.get(&l.key) {
                Some(o) => o.owner != l.owner || o.counter != l.counter,
                None => true,
            };
            if changed {
                self.observed.insert(
                    l.key.clone(),
                    Observed {
                        owner: l.owner.clone(),
                        counter: l.counter,
                        since: now,
                    },
                );
            }
        }
        let leases = &self.leases;
        self.observed.retain(|k, _| leases.contains_key(k));
        Ok(())
    }

    /// Deletes a finished lease from the store and from the local view.
    pub async fn delete_finished(&mut self, key: &str) -> Result<(), LeaseError> {
        self.store.delete_finished_lease(key).await?;
        self.leases.remove(key);
        self.observed.remove(key);
        Ok(())
    }

    /// Whether a listed lease is free for this worker: unowned, owned by an earlier incarnation of this worker,
    /// or its counter has not moved for a lease duration.
    fn expired(&self, lease: &Lease, now: Instant) -> bool {
        match &lease.owner {
            None => true,
            Some(o) if *o == self.config.worker_id => true,
            Some(_) => self
                .observed
                .get(&lease.key)
                .is_some_and(|o| now - o.since >= self.config.lease_duration),
        }
    }

    /// Plans this round over the unfinished leases that `workable` accepts (e.g. whose dependencies are
    /// finished) and takes them. Returns the successful takes; start each with [`Coordinator::spawn`].
    pub async fn balance(&mut self, workable: impl Fn(&Lease) -> bool) -> Vec<Taken> {
        let now = Instant::now();
        let candidates: Vec<Candidate<'_>> = self
            .leases
            .values()
            .filter(|l| !l.finished && workable(l))
            .map(|l| Candidate {
                key: &l.key,
                owner: l.owner.as_deref(),
                counter: l.counter,
                expired: self.expired(l, now),
            })
            .collect();
        let held: HashSet<String> = self.held.keys().cloned().collect();
        let takes = plan(&PlanInput {
            me: &self.config.worker_id,
            candidates: &candidates,
            held: &held,
            max_leases: self.config.max_leases,
            steal: self.config.steal,
        });
        let mut taken = Vec::with_capacity(takes.len());
        for t in takes {
            if let Some(victim) = &t.stolen_from {
                tracing::info!(lease = %t.key, from = %victim, "stealing lease to balance load");
            }
            match self.store.take_lease(&t.key, &self.config.worker_id, t.counter).await {
                Ok(tk) => {
                    self.leases.insert(tk.lease.key.clone(), tk.lease.clone());
                    taken.push(tk);
                }
                Err(LeaseError::Conflict(_)) => tracing::debug!(lease = %t.key, "lease taken by someone else first"),
                Err(e) => tracing::warn!(lease = %t.key, error = %e, "taking lease failed"),
            }
        }
        taken
    }

    /// Runs the task of a taken lease. `task` gets the [`LeaseContext`] and must end when it says to stop.
    pub fn spawn<F, Fut>(&mut self, taken: Taken, task: F)
    where
        F: FnOnce(LeaseContext<L>) -> Fut,
        Fut: Future<Output = TaskEnd> + Send + 'static,
    {
        let grant = taken.grant;
        let (stop_tx, stop_rx) = watch::channel(Signal::Run);
        let ctx = LeaseContext {
            store: self.store.clone(),
            grant: grant.clone(),
            stop: stop_rx,
            retry: (self.config.retry_backoff, self.config.max_retry_backoff),
        };
        let handle = self.tasks.spawn(task(ctx));
        self.task_keys.insert(handle.id(), (grant.key.clone(), grant.token));
        if let Some(old) = self.held.insert(
            grant.key.clone(),
            Held {
                grant,
                stop: stop_tx,
                last_renewed: Instant::now(),
            },
        ) {
            // An earlier grant's task still running: it must not go on under a token that is no longer ours.
            let _ = old.stop.send(Signal::LeaseLost);
        }
    }

    /// Waits for the next task to end (cancel-safe; pending forever while no task runs, so it can sit in a
    /// `select!`). Tasks of superseded grants are skipped. A panicked task's lease is released here.
    pub async fn next_done(&mut self) -> Done {
        loop {
            if self.tasks.is_empty() {
                std::future::pending::<()>().await;
            }
            let Some(joined) = self.tasks.join_next_with_id().await else {
                continue;
            };
            if let Some(done) = self.task_ended(joined).await {
                return done;
            }
        }
    }

    async fn task_ended(&mut self, joined: Result<(Id, TaskEnd), JoinError>) -> Option<Done> {
        let (id, end) = match joined {
            Ok((id, end)) => (id, Ok(end)),
            Err(e) => (e.id(), Err(e.to_string())),
        };
        let (key, token) = self.task_keys.remove(&id)?;
        if self.held.get(&key).is_none_or(|h| h.grant.token != token) {
            // The task of an earlier grant: the key is held again under a newer one, whose task goes on.
            return None;
        }
        let held = self.held.remove(&key)?;
        match &end {
            Ok(TaskEnd::Finished) => {
                if let Some(l) = self.leases.get_mut(&key) {
                    l.finished = true;
                }
            }
            Ok(TaskEnd::LeaseLost) => tracing::warn!(lease = %key, "lease lost; its task stopped"),
            Ok(TaskEnd::Stopped) => {
                // Stopped on its own (not at shutdown): give the lease back so that another worker goes on.
                self.release(&held.grant).await;
            }
            Err(e) => {
                tracing::error!(lease = %key, error = %e, "lease task failed; releasing its lease");
                self.release(&held.grant).await;
            }
        }
        Some(Done { key, end })
    }

    async fn release(&self, grant: &LeaseGrant) -> bool {
        let deadline = self.config.lease_duration;
        match tokio::time::timeout(deadline, self.store.release_lease(grant)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(lease = %grant.key, error = %e, "releasing lease failed");
                false
            }
            Err(_) => {
                tracing::warn!(lease = %grant.key, "releasing lease timed out");
                false
            }
        }
    }

    /// Heartbeat for every held lease. A refused renewal (or none that succeeded for a whole lease duration)
    /// tells the task that its lease is lost, because another worker may own it now.
    pub async fn renew(&mut self) {
        let lease_duration = self.config.lease_duration;
        let now = Instant::now();
        for (key, h) in &mut self.held {
            match self.store.renew_lease(&h.grant).await {
                Ok(_) => h.last_renewed = now,
                Err(LeaseError::Conflict(_)) => {
                    tracing::warn!(lease = %key, "lease renewal refused: lease lost");
                    let _ = h.stop.send(Signal::LeaseLost);
                }
                Err(e) => {
                    tracing::warn!(lease = %key, error = %e, "lease renewal failed");
                    if now - h.last_renewed >= lease_duration {
                        let _ = h.stop.send(Signal::LeaseLost);
                    }
                }
            }
        }
    }

    /// Stops every task, waits for them (their in-flight work and checkpoints) and releases the leases, all
    /// within `shutdown_deadline`. No task is left running when this returns.
    pub async fn shutdown(&mut self) -> ShutdownReport {
        let deadline = Instant::now() + self.config.shutdown_deadline;
        let mut report = ShutdownReport {
            held: self.held.keys().cloned().collect(),
            ..ShutdownReport::default()
        };
        report.held.sort();
        for h in self.held.values() {
            let _ = h.stop.send(Signal::Shutdown);
        }
        // Leave a fifth of the deadline for releasing leases.
        let wait_until = deadline - self.config.shutdown_deadline / 5;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(wait_until, self.tasks.join_next_with_id()).await {
                Ok(Some(joined)) => {
                    let (id, end) = match &joined {
                        Ok((id, end)) => (*id, Some(*end)),
                        Err(e) => (e.id(), None),
                    };
                    if let Some((key, token)) = self.task_keys.remove(&id)
                        && self.held.get(&key).is_some_and(|h| h.grant.token == token)
                    {
                        match end {
                            Some(TaskEnd::Finished) => {
                                report.finished.push(key.clone());
                                self.held.remove(&key);
                            }
                            // Still ours: released below.
                            Some(TaskEnd::Stopped) | None => {}
                            Some(TaskEnd::LeaseLost) => {
                                self.held.remove(&key);
                            }
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        remaining = self.tasks.len(),
                        "shutdown deadline reached; aborting lease tasks"
                    );
                    report.timed_out = true;
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        self.task_keys.clear();
        let held: Vec<Held> = self.held.drain().map(|(_, h)| h).collect();
        for h in held {
            match tokio::time::timeout_at(deadline, self.store.release_lease(&h.grant)).await {
                Ok(Ok(())) => report.released += 1,
                Ok(Err(e)) => tracing::warn!(lease = %h.grant.key, error = %e, "releasing lease failed"),
                Err(_) => tracing::warn!(lease = %h.grant.key, "releasing lease timed out"),
            }
        }
        report
    }
}
