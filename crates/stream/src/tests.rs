//! Reader behaviour against `FakeStreams` and `MemoryLeaseStore`, with paused Tokio time.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::fake::FakeStreams;
use crate::{
    AttributeValue, Checkpoint, GapReason, Lease, LeaseStore, MemoryLeaseStore, ReaderConfig, RecordBatch, RecordSink,
    RunSummary, SequenceNumber, SinkError, StartPosition, StatusHandle, StreamGap, StreamReader,
};

const ARN: &str = "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000";

/// One delivered record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    shard: String,
    seq: SequenceNumber,
    pk: String,
    duplicate: bool,
}

#[derive(Default)]
struct CollectingSink {
    seen: Mutex<Vec<Seen>>,
    gaps: Mutex<Vec<StreamGap>>,
    /// Virtual time each batch takes.
    delay: Option<Duration>,
    /// Notified when a batch starts.
    started: Notify,
    batches: Mutex<u64>,
}

impl CollectingSink {
    fn with_delay(d: Duration) -> Self {
        Self {
            delay: Some(d),
            ..Self::default()
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn seqs(&self) -> HashSet<SequenceNumber> {
        self.seen().into_iter().map(|s| s.seq).collect()
    }
}

impl RecordSink for CollectingSink {
    async fn process(&self, batch: &RecordBatch) -> Result<(), SinkError> {
        *self.batches.lock().unwrap() += 1;
        self.started.notify_waiters();
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        let mut seen = self.seen.lock().unwrap();
        for (i, r) in batch.records.iter().enumerate() {
            let pk = match &r.keys["pk"] {
                AttributeValue::S(s) => s.clone(),
                other => panic!("unexpected key {other:?}"),
            };
            seen.push(Seen {
                shard: batch.shard_id.clone(),
                seq: r.sequence_number.clone(),
                pk,
                duplicate: batch.is_duplicate(i),
            });
        }
        Ok(())
    }

    fn on_gap(&self, gap: &StreamGap) {
        self.gaps.lock().unwrap().push(gap.clone());
    }
}

fn config(worker: &str) -> ReaderConfig {
    let mut c = ReaderConfig::new(ARN, worker);
    c.lease_duration = Duration::from_secs(10);
    c.renew_interval = Duration::from_secs(3);
    c.discovery_interval = Duration::from_secs(5);
    c.poll_interval = Duration::from_millis(500);
    c.max_poll_interval = Duration::from_secs(2);
    c.max_records_per_batch = 10;
    c
}

type Reader = StreamReader<Arc<FakeStreams>, MemoryLeaseStore, Arc<CollectingSink>>;

fn reader(cfg: ReaderConfig, fake: &Arc<FakeStreams>, store: &MemoryLeaseStore, sink: &Arc<CollectingSink>) -> Reader {
    StreamReader::new(cfg, fake.clone(), store.clone(), sink.clone()).unwrap()
}

/// Runs until caught up, bounded by a (virtual) minute.
async fn run_caught_up(
    cfg: ReaderConfig,
    fake: &Arc<FakeStreams>,
    store: &MemoryLeaseStore,
    sink: &Arc<CollectingSink>,
) -> RunSummary {
    let mut cfg = cfg;
    cfg.until_caught_up = true;
    let summary = reader(cfg, fake, store, sink)
        .run(tokio::time::sleep(Duration::from_secs(600)))
        .await
        .unwrap();
    assert!(summary.caught_up, "did not catch up within the time limit: {summary:?}");
    summary
}

/// Waits (virtual time) until `cond` holds, panicking after `limit`.
async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_per_key_order(seen: &[Seen]) {
    let mut last: BTreeMap<&str, &SequenceNumber> = BTreeMap::new();
    for s in seen.iter().filter(|s| !s.duplicate) {
        if let Some(prev) = last.insert(&s.pk, &s.seq) {
            assert!(prev < &s.seq, "key {} went back from {prev} to {}", s.pk, s.seq);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn shard_split_reads_children_only_after_parent_and_skips_nothing() {
    let fake = Arc::new(FakeStreams::new());
    fake.add_shard("shard-0", None);
    let mut expected = HashSet::new();
    for i in 0..5 {
        expected.insert(fake.put("shard-0", &format!("k{}", i % 3), i));
    }
    let store = MemoryLeaseStore::new();
    // A slow sink keeps the parent's tail in progress across several discovery rounds.
    let sink = Arc::new(CollectingSink::with_delay(Duration::from_secs(3)));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let r = reader(config("w1"), &fake, &store, &sink);
    let run = tokio::spawn(r.run(async move {
        let _ = stop_rx.await;
    }));
    wait_for(Duration::from_secs(30), "first parent records", || {
        sink.seen().len() == 5
    })
    .await;

    // The parent gets 25 more records (3 batches of 10), is split, and the children get records for the same keys
    // at once: a reader that starts children on discovery would interleave them with the parent's tail.
    for i in 5..30 {
        expected.insert(fake.put("shard-0", &format!("k{}", i % 3), i));
    }
    fake.split_shard("shard-0", "shard-1", "shard-2");
    for i in 30..45 {
        // A key lives in exactly one child (as DynamoDB partitions), the same keys as in the parent.
        let child = if i % 3 == 2 { "shard-2" } else { "shard-1" };
        expected.insert(fake.put(child, &format!("k{}", i % 3), i));
    }
    wait_for(Duration::from_secs(60), "all records", || {
        sink.seqs().len() == expected.len()
    })
    .await;
    stop_tx.send(()).unwrap();
    let summary = run.await.unwrap().unwrap();

    let seen = sink.seen();
    assert_eq!(sink.seqs(), expected, "nothing skipped");
    let last_parent = seen.iter().rposition(|s| s.shard == "shard-0").unwrap();
    let first_child = seen.iter().position(|s| s.shard != "shard-0").unwrap();
    assert!(
        last_parent < first_child,
        "a child record was delivered before the parent's tail"
    );
    assert_per_key_order(&seen);
    assert!(store.get("shard-0").unwrap().finished);
    assert_eq!(summary.shards_finished, ["shard-0"]);
    assert_eq!(summary.leases_released, 2, "both children released at shutdown");
    assert!(store.get("shard-1").unwrap().owner.is_none());
}

#[tokio::test(start_paused = true)]
async fn expired_iterator_is_refreshed_from_the_checkpoint() {
    let fake = Arc::new(FakeStreams::new());
    fake.add_shard("shard-0", None);
    let seqs: Vec<_> = (0..25).map(|i| fake.put("shard-0", &format!("k{i}"), i)).collect();
    fake.close_shard("shard-0");
    // The first batch (records 0..10) succeeds, the second call finds its iterator expired.
    fake.expire_at_get_records_call(2);
    let store = MemoryLeaseStore::new();
    let sink = Arc::new(CollectingSink::default());
    let summary = run_caught_up(config("w1"), &fake, &store, &sink).await;

    let got: Vec<_> = sink.seen().into_iter().map(|s| s.seq).collect();
    assert_eq!(got, seqs, "every record exactly once, in order");
    let calls = fake.calls();
    assert_eq!(calls.expired, 1);
    assert_eq!(
        calls.iterator_requests.last().unwrap().1,
        crate::IteratorPosition::AfterSequenceNumber(seqs[9].clone()),
        "refreshed after the last checkpointed record"
    );
    assert_eq!(summary.records, 25);
    assert_eq!(summary.duplicates, 0);
    assert_eq!(
        SequenceNumber::new(store.get("shard-0").unwrap().position.unwrap().value),
        seqs[24]
    );
}

#[tokio::test(start_paused = true)]
async fn trimmed_checkpoint_is_reported_as_a_gap_not_skipped() {
    let fake = Arc::new(FakeStreams::new());
    fake.add_shard("shard-0", None);
    let seqs: Vec<_> = (0..10).map(|i| fake.put("shard-0", &format!("k{i}"), i)).collect();
    let store = MemoryLeaseStore::new();
    // A previous run checkpointed record 2; records 3..=5 were trimmed before anyone read them.
    let mut lease = Lease::new("shard-0", vec![]);
    lease.position = Some(
        Checkpoint {
            sequence_number: seqs[2].clone(),
            record_time: Some(SystemTime::now()),
        }
        .into(),
    );
    store.put(lease);
    fake.trim_before("shard-0", &seqs[6]);
    let sink = Arc::new(CollectingSink::default());
    let r = reader(config("w1").tap_caught_up(), &fake, &store, &sink);
    let status = r.status();
    let summary = r.run(tokio::time::sleep(Duration::from_secs(600))).await.unwrap();

    let expected_gap = StreamGap {
        table: "orders".into(),
        shard_id: "shard-0".into(),
        checkpoint: Some(seqs[2].clone()),
        first_available: Some(seqs[6].clone()),
        reason: GapReason::Trimmed,
    };
    assert_eq!(*sink.gaps.lock().unwrap(), std::slice::from_ref(&expected_gap));
    assert_eq!(summary.gaps, [expected_gap]);
    assert_eq!(status.snapshot().gaps_total, 1);
    let got: Vec<_> = sink.seen().into_iter().map(|s| s.seq).collect();
    assert_eq!(got, seqs[6..], "reading continued at the trim horizon");
}

#[tokio::test(start_paused = true)]
async fn checkpoint_older_than_retention_is_a_gap() {
    let fake = Arc::new(FakeStreams::new());
    fake.add_shard("shard-0", None);
    let seqs: Vec<_> = (0..4).map(|i| fake.put("shard-0", &format!("k{i}"), i)).collect();
    let store = MemoryLeaseStore::new();
    let mut lease = Lease::new("shard-0", vec![]);
    let old = SystemTime::now() - Duration::from_secs(25 * 3600);
    lease.position = Some(
        Checkpoint {
            sequence_number: SequenceNumber::new("5"),
            record_time: Some(old),
        }
        .into(),
    );
    store.put(lease);
    let sink = Arc::new(CollectingSink::default());
    let summary = run_caught_up(config("w1"), &fake, &store, &sink).await;
    assert_eq!(summary.gaps.len(), 1);
    assert_eq!(summary.gaps[0].reason, GapReason::CheckpointExpired);
    assert_eq!(summary.gaps[0].checkpoint, Some(SequenceNumber::new("5")));
    assert_eq!(summary.gaps[0].first_available, Some(seqs[0].clone()));
    assert_eq!(sink.seen().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn two_readers_share_shards_and_take_over_after_a_crash() {
    let fake = Arc::new(FakeStreams::new());
    let shards = ["shard-a", "shard-b", "shard-c", "shard-d"];
    let mut expected = HashSet::new();
    for (n, s) in shards.iter().enumerate() {
        fake.add_shard(s, None);
        for i in 0..5 {
            expected.insert(fake.put(s, &format!("{s}-k{i}"), (n * 100 + i) as u64));
        }
    }
    let store = MemoryLeaseStore::new();
    let (sink_a, sink_b) = (Arc::new(CollectingSink::default()), Arc::new(CollectingSink::default()));
    let ra = reader(config("worker-a"), &fake, &store, &sink_a);
    let rb = reader(config("worker-b"), &fake, &store, &sink_b);
    let (status_a, status_b): (StatusHandle, StatusHandle) = (ra.status(), rb.status());
    let run_a = tokio::spawn(ra.run(std::future::pending::<()>()));
    let (stop_b, stop_b_rx) = oneshot::channel::<()>();
    let run_b = tokio::spawn(rb.run(async move {
        let _ = stop_b_rx.await;
    }));
    let union = |a: &CollectingSink, b: &CollectingSink| -> HashSet<SequenceNumber> {
        a.seqs().union(&b.seqs()).cloned().collect()
    };
    wait_for(Duration::from_secs(120), "balanced leases", || {
        status_a.snapshot().leases_held.len() == 2 && status_b.snapshot().leases_held.len() == 2
    })
    .await;
    wait_for(Duration::from_secs(60), "first records", || {
        union(&sink_a, &sink_b) == expected
    })
    .await;
    let a_shards = status_a.snapshot().leases_held;

    // Crash A: its tasks die, its leases stay owned in the table.
    run_a.abort();
    assert!(run_a.await.unwrap_err().is_cancelled());
    let crashed_at = Instant::now();
    for s in shards {
        for i in 5..8 {
            expected.insert(fake.put(s, &format!("{s}-k{i}"), i));
        }
    }
    wait_for(Duration::from_secs(60), "takeover", || {
        status_b.snapshot().leases_held.len() == 4
    })
    .await;
    let took = Instant::now() - crashed_at;
    // lease duration + one discovery interval + slack.
    assert!(took <= Duration::from_secs(17), "takeover took {took:?}");
    wait_for(Duration::from_secs(60), "every record after the takeover", || {
        union(&sink_a, &sink_b) == expected
    })
    .await;
    // A's shards' new records were read by B.
    for s in &a_shards {
        assert!(sink_b.seen().iter().any(|x| &x.shard == s), "B never read {s}");
    }
    stop_b.send(()).unwrap();
    run_b.await.unwrap().unwrap();
    assert_per_key_order(&sink_b.seen());
}

#[tokio::test(start_paused = true)]
async fn shutdown_mid_batch_checkpoints_it_and_restart_resumes_there() {
    let fake = Arc::new(FakeStreams::new());
    fake.add_shard("shard-0", None);
    let seqs: Vec<_> = (0..10).map(|i| fake.put("shard-0", &format!("k{i}"), i)).collect();
    let store = MemoryLeaseStore::new();
    let sink = Arc::new(CollectingSink::with_delay(Duration::from_secs(5)));
    let mut cfg = config("w1");
    cfg.max_records_per_batch = 4;
    let r = reader(cfg.clone(), &fake, &store, &sink);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let run = tokio::spawn(r.run(async move {
        let _ = stop_rx.await;
    }));
    // Wait until the second batch (records 4..8) is in the sink, then ask to stop.
    wait_for(Duration::from_secs(60), "second batch", || {
        *sink.batches.lock().unwrap() == 2
    })
    .await;
    let asked = Instant::now();
    stop_tx.send(()).unwrap();
    let summary = run.await.unwrap().unwrap();
    assert!(
        Instant::now() - asked <= Duration::from_secs(20),
        "shutdown exceeded the deadline"
    );
    assert!(!summary.shutdown_timed_out);
    assert_eq!(summary.records, 8, "the in-flight batch was finished");
    let lease = store.get("shard-0").unwrap();
    assert_eq!(
        SequenceNumber::new(lease.position.unwrap().value),
        seqs[7],
        "in-flight batch checkpointed"
    );
    assert_eq!(lease.owner, None, "lease released");

    let sink2 = Arc::new(CollectingSink::default());
    let summary2 = run_caught_up(cfg, &fake, &store, &sink2).await;
    let got: Vec<_> = sink2.seen().into_iter().map(|s| s.seq).collect();
    assert_eq!(got, seqs[8..], "restart resumed right after the checkpoint");
    assert_eq!(summary2.duplicates, 0);
}

#[tokio::test(start_paused = true)]
async fn throttling_backs_off_then_makes_progress() {
    let fake = Arc::new(FakeStreams::new());
    fake.set_describe_page_size(1);
    for s in ["shard-0", "shard-1"] {
        fake.add_shard(s, None);
    }
    let seqs: HashSet<_> = (0..20)
        .map(|i| fake.put(if i % 2 == 0 { "shard-0" } else { "shard-1" }, "k", i))
        .collect();
    fake.throttle_next(6);
    let store = MemoryLeaseStore::new();
    let sink = Arc::new(CollectingSink::default());
    let started = Instant::now();
    let r = reader(config("w1").tap_caught_up(), &fake, &store, &sink);
    let status = r.status();
    let summary = r.run(tokio::time::sleep(Duration::from_secs(600))).await.unwrap();
    assert!(summary.caught_up);
    assert_eq!(sink.seqs(), seqs);
    assert_eq!(fake.calls().throttled, 6);
    assert_eq!(status.snapshot().throttles_total, 6);
    // Six throttled DescribeStream calls in a row: at least 50+100+200+400+800+1600 ms of jittered backoff.
    assert!(
        Instant::now() - started >= Duration::from_millis(3150),
        "no backoff: {:?}",
        Instant::now() - started
    );
    assert!(
        fake.calls().describe_stream >= 8,
        "paginated discovery (2 pages) after 6 throttles"
    );
}

#[tokio::test(start_paused = true)]
async fn trim_horizon_start_delivers_checkpointed_records_again_as_records() {
    let fake = Arc::new(FakeStreams::new());
    fake.add_shard("shard-0", None);
    let seqs: Vec<_> = (0..10).map(|i| fake.put("shard-0", "k", i)).collect();
    let store = MemoryLeaseStore::new();
    let mut lease = Lease::new("shard-0", vec![]);
    lease.position = Some(
        Checkpoint {
            sequence_number: seqs[4].clone(),
            record_time: Some(SystemTime::now()),
        }
        .into(),
    );
    store.put(lease);
    let sink = Arc::new(CollectingSink::default());
    let mut cfg = config("w1");
    cfg.start_position = StartPosition::TrimHorizon;
    let summary = run_caught_up(cfg, &fake, &store, &sink).await;
    // An explicit trim-horizon start is an audit: the 5 records up to the checkpoint are verified again, not
    // skipped as redeliveries.
    assert_eq!(summary.records, 10);
    assert_eq!(summary.duplicates, 0);
    assert_eq!(sink.seen().iter().filter(|s| s.duplicate).count(), 0);
    assert_eq!(sink.seen().len(), 10);
}

/// DynamoDB Streams may answer empty pages before a part of an open shard that holds records: a few empty pages
/// are not the tip, and until-caught-up must not end before the records behind them are read.
#[tokio::test(start_paused = true)]
async fn empty_pages_before_records_are_not_the_tip() {
    let fake = Arc::new(FakeStreams::new());
    fake.add_shard("shard-0", None);
    for i in 0..10 {
        fake.put("shard-0", "k", i);
    }
    fake.empty_next(2);
    let store = MemoryLeaseStore::new();
    let sink = Arc::new(CollectingSink::default());
    let summary = run_caught_up(config("w1"), &fake, &store, &sink).await;
    assert_eq!(summary.records, 10, "{summary:?}");
    assert_eq!(sink.seen().len(), 10);
}

#[tokio::test(start_paused = true)]
async fn latest_skips_existing_records_and_closed_shards() {
    let fake = Arc::new(FakeStreams::new());
    fake.add_shard("old", None);
    fake.put("old", "k", 0);
    fake.close_shard("old");
    fake.add_shard("open", Some("old"));
    fake.put("open", "k", 1);
    let store = MemoryLeaseStore::new();
    let sink = Arc::new(CollectingSink::default());
    let mut cfg = config("w1");
    cfg.start_position = StartPosition::Latest;
    let r = reader(cfg, &fake, &store, &sink);
    let status = r.status();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let run = tokio::spawn(r.run(async move {
        let _ = stop_rx.await;
    }));
    wait_for(Duration::from_secs(60), "open shard caught up", || {
        status
            .snapshot()
            .shards
            .iter()
            .any(|s| s.shard_id == "open" && s.caught_up)
    })
    .await;
    let new = fake.put("open", "k", 2);
    wait_for(Duration::from_secs(60), "new record", || !sink.seen().is_empty()).await;
    stop_tx.send(()).unwrap();
    run.await.unwrap().unwrap();
    assert_eq!(sink.seen().into_iter().map(|s| s.seq).collect::<Vec<_>>(), [new]);
    assert!(
        store.get("old").unwrap().finished,
        "closed shard marked finished unread"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_shard_reports_zero_lag_and_a_stalled_shard_is_flagged() {
    let fake = Arc::new(FakeStreams::new());
    fake.add_shard("shard-0", None);
    fake.put_at("shard-0", "k", 0, SystemTime::now() - Duration::from_secs(30));
    let store = MemoryLeaseStore::new();
    let sink = Arc::new(CollectingSink::default());
    let r = reader(config("w1"), &fake, &store, &sink);
    let status = r.status();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let run = tokio::spawn(r.run(async move {
        let _ = stop_rx.await;
    }));
    wait_for(Duration::from_secs(60), "idle at tip", || {
        status
            .snapshot()
            .shards
            .first()
            .is_some_and(|s| s.caught_up && s.lag == Some(Duration::ZERO))
    })
    .await;
    assert!(status.snapshot().is_ready());
    // Throttle every call for a long time: no successful read for > 6 × 2 s.
    fake.throttle_next(u64::MAX);
    wait_for(Duration::from_secs(120), "stall detected", || {
        !status.snapshot().stalled_shards().is_empty()
    })
    .await;
    assert!(!status.snapshot().is_ready());
    fake.throttle_next(0);
    wait_for(Duration::from_secs(120), "recovered", || {
        status.snapshot().stalled_shards().is_empty()
    })
    .await;
    stop_tx.send(()).unwrap();
    run.await.unwrap().unwrap();
}

trait TapCaughtUp {
    fn tap_caught_up(self) -> Self;
}

impl TapCaughtUp for ReaderConfig {
    fn tap_caught_up(mut self) -> Self {
        self.until_caught_up = true;
        self
    }
}

#[tokio::test]
async fn invalid_configuration_is_rejected() {
    let mut cfg = config("w1");
    cfg.max_records_per_batch = 0;
    let fake = Arc::new(FakeStreams::new());
    let err = StreamReader::new(cfg, fake, MemoryLeaseStore::new(), Arc::new(CollectingSink::default())).unwrap_err();
    assert!(matches!(err, crate::ReaderError::Config(_)));
    let _ = MemoryLeaseStore::new().list_leases().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn finished_leases_of_shards_gone_from_the_stream_are_deleted() {
    let fake = Arc::new(FakeStreams::new());
    fake.add_shard("old", None);
    fake.put("old", "k", 0);
    fake.split_shard("old", "left", "right");
    fake.add_shard("gone", None);
    fake.close_shard("gone");
    let store = MemoryLeaseStore::new();
    let sink = Arc::new(CollectingSink::default());
    run_caught_up(config("w1"), &fake, &store, &sink).await;
    assert!(store.get("old").unwrap().finished);
    assert!(store.get("gone").unwrap().finished);
    // Both closed shards leave the stream; "old" is still named as the parent of the listed "left" and "right".
    fake.remove_shard("old");
    fake.remove_shard("gone");
    run_caught_up(config("w1"), &fake, &store, &sink).await;
    assert!(store.get("gone").is_none(), "obsolete finished lease deleted");
    assert!(
        store.get("old").is_some(),
        "a parent still named by listed children is kept"
    );
    assert!(store.get("left").is_some());
}
