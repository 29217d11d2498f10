//! Throughput of the whole `ddbguard verify` pipeline, in process: the real `StreamReader` (discovery, leases in a
//! `MemoryLeaseStore`, one task per shard, a checkpoint per batch) over a `FakeStreams` holding pre-encrypted
//! items, into the real `VerifySink`/`Verifier` (image conversion, header parse, structure and policy checks,
//! decryption when sampled), with the Prometheus recorder `ddbguard verify` installs counting every verdict.
//!
//! Scenarios (one process, one after the other; each gets its own stream, lease store, sink, KMS and table label):
//! - reader only: the same stream into a sink that only counts records, the floor under the others (reading the fake
//!   stream, which clones each page, leases, checkpoints).
//! - `ok_structural`: KMS MRK keyring, `sample_rate = 0`: no record is decrypted; no KMS call is made (counted).
//! - `ok` with a hierarchical keyring (static branch key), `sample_rate = 1`: every record decrypted and verified.
//! - `ok` with the KMS MRK keyring through an in-memory KMS (governed client and intermediate-key cache as the CLI
//!   wires them, without the rate limit), `sample_rate = 1`: one KMS Decrypt per record, since every record carries
//!   its own data key (the cache only helps with redeliveries, and there are none here).
//!
//! The verifying scenarios run with both suites (0x6701 with ECDSA P-384 signatures, 0x6700 HMAC only). The stream: 4
//! shards, one of them split in two after half its records (children read after the parent), every shard closed so
//! that the run ends when all are read. Records are INSERTs and MODIFYs of distinct 10-attribute items (4
//! encrypted, 5 signed including the keys, 1 unsigned), each encrypted separately, written from two regions
//! (KMS) or under one branch key. Only `StreamReader::run` is timed; encrypting and loading the stream are not.
//! After each run the bench checks every verdict, the Prometheus count, the KMS call count and that every shard's
//! checkpoint reached its last record, and panics otherwise.
//!
//! Environment: `DDBGUARD_BENCH_RECORDS` (records per scenario, default 30000), `DDBGUARD_LOG` (log filter, default
//! `warn`). CPU time is user + system time of the whole process from `/proc/self/stat`; peak RSS is `VmHWM` from
//! `/proc/self/status`, reset before each run through `/proc/self/clear_refs` where allowed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ddbguard_dbe::{AlgorithmSuite, Item, Keyring, Verdict, encrypt_item};
use ddbguard_keys::kms::fake::FakeKmsWorld;
use ddbguard_keys::kms::{GovernedKms, KeyCache, KmsApi, KmsCounters, MrkKeyring, Operation, RetryPolicy};
use ddbguard_keys::{BranchKey, HierarchyKeyring};
use ddbguard_stream::fake::FakeStreams;
use ddbguard_stream::{EventName, MemoryLeaseStore, ReaderConfig, RecordBatch, RecordSink, SinkError, StreamReader};
use ddbguard_verify::convert::item_to_image;
use ddbguard_verify::{Verifier, VerifyPolicy, VerifySink, VerifySummary};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use zeroize::Zeroizing;

#[allow(dead_code)]
mod common;

use common::{
    cpu_time, env_usize, load_average, machine, mib, plain_item, reset_peak_rss, status_kib, suite_label, table_config,
};

const REGION: &str = "eu-west-1";
const OTHER_REGION: &str = "us-east-1";
const MRK_ID: &str = "mrk-0123456789abcdef0123456789abcdef";
const STREAM_ARN: &str = "arn:aws:dynamodb:eu-west-1:111122223333:table/Customers/stream/2026-01-01T00:00:00.000";
const BRANCH_KEY_ID: &str = "customers-branch-key";
const BRANCH_KEY_VERSION: &str = "e9ce18a3-edb5-4272-9f86-1cacb7997ff6";
/// As `ddbguard verify` sizes its cache of unwrapped keys (crates/cli/src/keyring.rs).
const KEY_CACHE_ENTRIES: usize = 10_000;
const KEY_CACHE_TTL: Duration = Duration::from_secs(300);
/// As `ddbguard verify` runs the Prometheus upkeep.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

fn mrk(region: &str) -> String {
    format!("arn:aws:kms:{region}:111122223333:key/{MRK_ID}")
}

/// One record to load: primary key and NEW image in the stream's attribute values.
struct Encoded {
    keys: HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>,
    image: HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>,
}

fn encode(item: &Item) -> Encoded {
    let image = item_to_image(item);
    let keys = ["pk", "sk"]
        .into_iter()
        .map(|k| (k.to_owned(), image[k].clone()))
        .collect();
    Encoded { keys, image }
}

/// Encrypts items `0..n`, alternating between the keyrings (e.g. one per writing region).
async fn encrypt_items(suite: AlgorithmSuite, keyrings: &[Arc<dyn Keyring>], n: usize) -> Vec<Encoded> {
    let config = table_config(suite);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let keyring = &keyrings[i % keyrings.len()];
        let encrypted = encrypt_item(&config, keyring.as_ref(), &plain_item(i))
            .await
            .expect("encrypt");
        out.push(encode(&encrypted));
    }
    out
}

/// The shards every scenario's stream has, in the order they are filled.
const SHARDS: [&str; 6] = [
    "shardId-0000",
    "shardId-0001",
    "shardId-0002",
    "shardId-0003",
    "shardId-0003-a",
    "shardId-0003-b",
];

/// A closed stream of `records`: a quarter in each of shards 0–2, the last quarter half in shard 3 and half in its
/// two children (shard 3 is split once its half is written).
fn load_stream(records: Vec<Encoded>) -> FakeStreams {
    let n = records.len();
    let fake = FakeStreams::new();
    for shard in &SHARDS[..4] {
        fake.add_shard(shard, None);
    }
    let parent_share = n.div_ceil(4) / 2;
    let mut in_shard3 = 0;
    for (i, record) in records.into_iter().enumerate() {
        let lane = i % 4;
        let shard = if lane < 3 {
            SHARDS[lane]
        } else {
            in_shard3 += 1;
            if in_shard3 <= parent_share {
                SHARDS[3]
            } else {
                if in_shard3 == parent_share + 1 {
                    fake.split_shard(SHARDS[3], SHARDS[4], SHARDS[5]);
                }
                SHARDS[4 + in_shard3 % 2]
            }
        };
        let event = if i % 4 == 1 {
            EventName::Modify
        } else {
            EventName::Insert
        };
        fake.put_image(shard, event, record.keys, record.image);
    }
    if in_shard3 <= parent_share {
        // Too few records to reach the split: split anyway so that every scenario has the same lineage.
        fake.split_shard(SHARDS[3], SHARDS[4], SHARDS[5]);
    }
    for shard in [SHARDS[0], SHARDS[1], SHARDS[2], SHARDS[4], SHARDS[5]] {
        fake.close_shard(shard);
    }
    fake
}

/// What a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The floor: the reader and the fake stream with a sink that only counts (records of the structural scenario).
    ReaderOnly,
    /// `ok_structural`: KMS MRK keyring, `sample_rate = 0`; no KMS call.
    Structural,
    /// `ok`: hierarchical keyring over a static branch key, `sample_rate = 1`.
    Hierarchy,
    /// `ok`: KMS MRK keyring over the in-memory KMS, `sample_rate = 1`; one Decrypt per record.
    Kms,
}

impl Kind {
    fn keyring_label(self) -> &'static str {
        match self {
            Kind::ReaderOnly => "— (sink only counts)",
            Kind::Structural => "kms-mrk",
            Kind::Hierarchy => "hierarchy (static branch key)",
            Kind::Kms => "kms-mrk (in-memory KMS)",
        }
    }
}

/// A sink that only counts what it is handed: the reader's own cost.
#[derive(Debug, Default)]
struct CountingSink {
    records: AtomicU64,
}

impl RecordSink for CountingSink {
    async fn process(&self, batch: &RecordBatch) -> Result<(), SinkError> {
        self.records.fetch_add(batch.records.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Time and memory of one `StreamReader::run`.
struct Usage {
    wall: Duration,
    cpu: Duration,
    rss_before_kib: u64,
    peak_kib: u64,
    peak_reset: bool,
}

/// One row of the table.
struct Row {
    kind: Kind,
    suite: AlgorithmSuite,
    sample_rate: Option<f64>,
    records: usize,
    usage: Usage,
    verdicts: String,
    kms_calls: Option<u64>,
    cache: Option<(u64, u64)>,
}

/// Runs the reader over `fake` into `sink` until every shard is read, then checks that nothing was skipped: every
/// record read once, no gap, every shard finished with its checkpoint at its last record.
async fn read_all<K: RecordSink>(label: &str, fake: Arc<FakeStreams>, sink: K, records: usize) -> Usage {
    let last_seq: Vec<_> = SHARDS
        .iter()
        .map(|s| (s.to_string(), fake.sequence_numbers(s).last().cloned()))
        .collect();
    let leases = MemoryLeaseStore::new();
    let mut config = ReaderConfig::new(STREAM_ARN, "bench-worker");
    config.table_label = label.to_owned();
    config.until_caught_up = true;
    // The caught-up check runs every poll interval: keep the idle tail after the last batch short.
    config.poll_interval = Duration::from_millis(10);
    let reader = StreamReader::new(config, fake, leases.clone(), sink).expect("reader");

    let peak_reset = reset_peak_rss();
    let rss_before_kib = status_kib("VmRSS");
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let run = reader.run(std::future::pending::<()>()).await.expect("reader run");
    let wall = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    let peak_kib = status_kib("VmHWM");

    assert!(run.caught_up, "{label}: the reader did not catch up: {run:?}");
    assert_eq!(run.records, records as u64, "{label}: records read");
    assert!(run.gaps.is_empty(), "{label}: gaps {:?}", run.gaps);
    assert_eq!(run.duplicates, 0, "{label}: duplicates");
    let mut finished = run.shards_finished.clone();
    finished.sort();
    assert_eq!(finished, SHARDS.map(String::from).to_vec(), "{label}: finished shards");
    for (shard, last) in &last_seq {
        let lease = leases
            .get(shard)
            .unwrap_or_else(|| panic!("{label}: no lease for {shard}"));
        assert!(lease.finished, "{label}: {shard} not finished");
        assert_eq!(
            lease.position.map(|p| ddbguard_stream::SequenceNumber::new(p.value)),
            last.clone(),
            "{label}: {shard} checkpoint is not its last record"
        );
    }
    Usage {
        wall,
        cpu,
        rss_before_kib,
        peak_kib,
        peak_reset,
    }
}

/// Encrypts and loads the scenario's records, runs it and checks every verdict and count.
async fn run_scenario(index: usize, kind: Kind, suite: AlgorithmSuite, records: usize, prom: &PrometheusHandle) -> Row {
    let label = format!("bench-{index}");
    // Each scenario its own KMS (so that its ciphertexts are freed with it), with the MRK in both regions; items
    // are written from both (origin regions us-east-1 and eu-west-1).
    let world = FakeKmsWorld::new();
    world.create_key(&mrk(REGION));
    world.create_key(&mrk(OTHER_REGION));
    let hierarchy: Arc<dyn Keyring> = Arc::new(HierarchyKeyring::with_static_key(
        BranchKey::new(BRANCH_KEY_ID, BRANCH_KEY_VERSION, Zeroizing::new([42u8; 32])).expect("branch key"),
    ));
    let writers: Vec<Arc<dyn Keyring>> = match kind {
        Kind::Hierarchy => vec![hierarchy.clone()],
        _ => [OTHER_REGION, REGION]
            .into_iter()
            .map(|region| -> Arc<dyn Keyring> {
                let kms: Arc<dyn KmsApi> = Arc::new(world.client(region));
                Arc::new(MrkKeyring::new(&mrk(region), kms, None).expect("MRK keyring"))
            })
            .collect(),
    };
    let setup = Instant::now();
    let fake = Arc::new(load_stream(encrypt_items(suite, &writers, records).await));
    eprintln!(
        "{label}: encrypted and loaded {records} records in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    if kind == Kind::ReaderOnly {
        let sink = Arc::new(CountingSink::default());
        let usage = read_all(&label, fake, sink.clone(), records).await;
        assert_eq!(
            sink.records.load(Ordering::Relaxed),
            records as u64,
            "{label}: records handed to the sink"
        );
        return Row {
            kind,
            suite,
            sample_rate: None,
            records,
            usage,
            verdicts: "—".to_owned(),
            kms_calls: None,
            cache: None,
        };
    }

    // The verifier's KMS keyring, wired as `ddbguard verify` does (minus the rate limit): governed local client,
    // counters, cache of unwrapped keys.
    let counters = KmsCounters::new();
    let cache = Arc::new(KeyCache::new(KEY_CACHE_ENTRIES, KEY_CACHE_TTL));
    let governed = GovernedKms::new(
        Arc::new(world.client(REGION)),
        None,
        RetryPolicy::default(),
        counters.clone(),
    );
    let kms_keyring: Arc<dyn Keyring> =
        Arc::new(MrkKeyring::new(&mrk(OTHER_REGION), Arc::new(governed), Some(cache.clone())).expect("MRK keyring"));
    let (keyring, sample_rate, expected, kms_calls) = match kind {
        Kind::Structural => (kms_keyring, 0.0, Verdict::OkStructural, 0),
        Kind::Hierarchy => (hierarchy, 1.0, Verdict::Ok, 0),
        Kind::Kms => (kms_keyring, 1.0, Verdict::Ok, records as u64),
        Kind::ReaderOnly => unreachable!("handled above"),
    };
    let mut policy = VerifyPolicy::new(table_config(suite));
    policy.sample_rate = sample_rate;
    if kind != Kind::Hierarchy {
        policy = policy.with_key_arn(&mrk(OTHER_REGION)).expect("key ARN");
    }
    let verifier = Verifier::new(policy, keyring, REGION)
        .expect("policy")
        .with_table_label(label.clone());
    let sink = Arc::new(VerifySink::new(Arc::new(verifier)));

    let usage = read_all(&label, fake, sink.clone(), records).await;

    // Every record verified once, with the expected verdict, counted in Prometheus; KMS called as expected.
    let n = records as u64;
    let summary = sink.summary();
    assert_eq!(summary.records, n, "{label}: records verified");
    assert_eq!(summary.by_verdict, BTreeMap::from([(expected, n)]), "{label}: verdicts");
    assert!(summary.gaps.is_empty(), "{label}: gaps");
    assert_eq!(summary.duplicates_skipped, 0, "{label}: duplicates skipped");
    assert_eq!(summary.throttled_retries, 0, "{label}: throttled");
    assert_eq!(
        prometheus_count(&prom.render(), &label, expected.as_str()),
        n,
        "{label}: ddbguard_records_total{{verdict={:?}}}",
        expected.as_str()
    );
    assert_eq!(
        counters.total(),
        kms_calls,
        "{label}: KMS calls {:?}",
        counters.snapshot()
    );
    assert_eq!(
        counters.get(REGION, Operation::Decrypt, "ok"),
        kms_calls,
        "{label}: successful Decrypts in {REGION}"
    );
    Row {
        kind,
        suite,
        sample_rate: Some(sample_rate),
        records,
        usage,
        verdicts: by_origin(&summary),
        kms_calls: Some(counters.total()),
        cache: (kind != Kind::Hierarchy).then(|| (cache.hits(), cache.misses())),
    }
}

/// Sum of `ddbguard_records_total` for one table and verdict in the Prometheus text.
fn prometheus_count(text: &str, table: &str, verdict: &str) -> u64 {
    let table = format!("table=\"{table}\"");
    let verdict = format!("verdict=\"{verdict}\"");
    text.lines()
        .filter(|l| l.starts_with("ddbguard_records_total{") && l.contains(&table) && l.contains(&verdict))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `origin: verdict n, …` from the summary's origin × verdict counts.
fn by_origin(summary: &VerifySummary) -> String {
    let mut parts = Vec::new();
    for (origin, verdicts) in &summary.by_origin {
        for (verdict, n) in verdicts {
            parts.push(format!("{origin}: `{verdict}` {n}"));
        }
    }
    parts.join(", ")
}

fn print_table(rows: &[Row], load_start: &str, load_end: &str) {
    println!("## ddbguard verify pipeline benchmark\n");
    println!(
        "machine: {}; tokio worker threads: {}; load average (1/5/15 min) {load_start} before, {load_end} after",
        machine(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "stream: 6 shards (4, one split in two), all closed; batches of up to {} records; sink concurrency {}\n",
        ReaderConfig::new(STREAM_ARN, "w").max_records_per_batch,
        ddbguard_verify::sink::DEFAULT_CONCURRENCY,
    );
    println!(
        "| verdict | keyring | suite | sample rate | records | wall s | records/s | CPU µs/record | CPU cores used \
         | RSS before MiB | peak RSS MiB | KMS calls | key cache hits/misses | verdicts by origin region |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for r in rows {
        let n = r.records as f64;
        let wall = r.usage.wall.as_secs_f64();
        let cpu = r.usage.cpu.as_secs_f64();
        let verdict = match r.kind {
            Kind::ReaderOnly => "(reader only)",
            Kind::Structural => "`ok_structural`",
            Kind::Hierarchy | Kind::Kms => "`ok`",
        };
        let dash = || "—".to_owned();
        println!(
            "| {verdict} | {} | {} | {} | {} | {wall:.2} | {:.0} | {:.1} | {:.2} | {:.0} | {:.0}{} | {} | {} | {} |",
            r.kind.keyring_label(),
            suite_label(r.suite),
            r.sample_rate.map_or_else(dash, |s| s.to_string()),
            r.records,
            n / wall,
            cpu * 1e6 / n,
            cpu / wall,
            mib(r.usage.rss_before_kib),
            mib(r.usage.peak_kib),
            if r.usage.peak_reset { "" } else { " (process)" },
            r.kms_calls.map_or_else(dash, |c| c.to_string()),
            r.cache.map_or_else(dash, |(h, m)| format!("{h}/{m}")),
            r.verdicts,
        );
    }
    println!(
        "\nCPU = user + system time of the whole process (10 ms ticks) during the run; RSS before = after loading the \
         stream (the in-memory stream holds every record); peak RSS = VmHWM during the run{}.",
        if rows.iter().all(|r| r.usage.peak_reset) {
            " (reset before each run)"
        } else {
            "; \"(process)\" = could not be reset, the peak of the whole process so far"
        }
    );
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DDBGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let records = env_usize("DDBGUARD_BENCH_RECORDS", 30_000);
    assert!(records > 0, "DDBGUARD_BENCH_RECORDS must be at least 1");

    // As `ddbguard verify`: the multi-threaded runtime with one worker per CPU, the Prometheus recorder first.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .expect("Prometheus recorder");
    runtime.block_on(async move {
        let upkeep_handle = prometheus.clone();
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
            loop {
                tick.tick().await;
                upkeep_handle.run_upkeep();
            }
        });

        let load_start = load_average();
        let mut rows = Vec::new();
        let p384 = AlgorithmSuite::EcdsaP384;
        let hmac = AlgorithmSuite::HmacOnly;
        let plan = [
            (Kind::ReaderOnly, p384),
            (Kind::Structural, p384),
            (Kind::Structural, hmac),
            (Kind::Hierarchy, p384),
            (Kind::Hierarchy, hmac),
            (Kind::Kms, p384),
            (Kind::Kms, hmac),
        ];
        for (index, (kind, suite)) in plan.into_iter().enumerate() {
            let row = run_scenario(index, kind, suite, records, &prometheus).await;
            eprintln!(
                "bench-{index}: {:?} {}: {records} records in {:.2} s",
                kind,
                suite_label(suite),
                row.usage.wall.as_secs_f64()
            );
            rows.push(row);
        }
        upkeep.abort();
        print_table(&rows, &load_start, &load_average());
    });
}
