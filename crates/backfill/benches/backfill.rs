//! Throughput and cost of `ddbguard backfill`, in process: the real engine (`ddbguard_backfill::run`: parallel scan
//! whose segments are leases in a ledger table, conditional `UpdateItem` write-back, a checkpoint per page) over an
//! in-memory `FakeDynamo` holding plaintext items, with the two production keyrings wired as the CLI wires them:
//!
//! - `kms-mrk`: `MrkKeyring` over the in-memory KMS through the governed client (counters, retries; no rate
//!   limit) with the unwrapped-key cache: one `GenerateDataKey` per item;
//! - `hierarchy`: `HierarchyKeyring` over a branch key store (`DynamoKeyStore` on its own in-memory table, the
//!   branch key created with `CreateKey` and wrapped under the in-memory KMS) behind `CachingBranchKeySource`:
//!   one KMS `Decrypt` for the whole run, when the active branch key is first loaded.
//!
//! each with suites 0x6701 (ECDSA P-384) and 0x6700 (HMAC only). Items: 10-attribute customer records (4
//! encrypted, 5 signed including the keys, 1 unsigned), about 240 bytes of plaintext (under 1 KB encrypted). Engine settings are
//! `BackfillConfig::new`'s defaults (the segment count from the table's size, 4 segments at once, pages of 100,
//! 16 items at once, no rate limit). Only `run` is timed; loading the table and the checks are not.
//!
//! Reported per scenario: items/s (wall), CPU µs per item and items/s per core (the inverse), the consumed read and
//! write capacity per item that the fake bills exactly as DynamoDB documents it (a scan page: one unit per started
//! 4 KB of the page, halved for an eventually consistent read; a write: one unit per started KB of the larger of
//! the old and new item) against the minimum for these items (their plaintext bytes read at half a unit per 4 KB,
//! and one write of each encrypted item), KMS calls per item (the governed client's counters) and peak RSS.
//!
//! After each run the bench checks that the run finished, every item was scanned once and encrypted once, nothing
//! was skipped or failed, every item in the table decrypts to its original values (under a separate, uncounted
//! KMS client), the KMS calls are as above, and a second run finds every segment finished in the ledger and scans nothing.
//!
//! Environment: `DDBGUARD_BENCH_ITEMS` (items per scenario, default 20000). CPU time is user + system time of the
//! whole process from `/proc/self/stat`; peak RSS is `VmHWM` from `/proc/self/status`, reset before each run
//! through `/proc/self/clear_refs` where allowed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ddbguard_backfill::{BackfillConfig, Completion, Report, Target};
use ddbguard_dbe::{AlgorithmSuite, AttributeValue, Item, Keyring, decrypt_item};
use ddbguard_ddb::size::write_units;
use ddbguard_ddb::{FakeDynamo, KeyAttribute, KeySchema, ScalarType, TableSpec, item_size};
use ddbguard_keys::HierarchyKeyring;
use ddbguard_keys::keystore::{CacheSettings, CachingBranchKeySource, DynamoKeyStore};
use ddbguard_keys::kms::fake::FakeKmsWorld;
use ddbguard_keys::kms::{GovernedKms, KeyCache, KmsApi, KmsCounters, MrkKeyring, Operation, RetryPolicy};
use ddbguard_verify::convert::{item_to_table_item, table_item_to_item};
use ddbguard_verify::{Judge, VerifyPolicy};

#[path = "../../verify/benches/common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::{
    TABLE, cpu_time, env_usize, load_average, machine, mib, plain_item, reset_peak_rss, status_kib, suite_label,
    table_config,
};

const LEDGER: &str = "ddbguard-backfill";
const KEY_STORE: &str = "ddbguard-branch-keys";
const REGION: &str = "us-east-1";
const MRK_ID: &str = "mrk-0123456789abcdef0123456789abcdef";
/// As `ddbguard` sizes its cache of unwrapped keys (crates/cli/src/keyring.rs).
const KEY_CACHE_ENTRIES: usize = 10_000;
const KEY_CACHE_TTL: Duration = Duration::from_secs(300);

fn mrk() -> String {
    format!("arn:aws:kms:{REGION}:111122223333:key/{MRK_ID}")
}

/// The index of an item from its partition key.
fn index_of(item: &Item) -> usize {
    match item.get("pk") {
        Some(AttributeValue::S(pk)) => pk
            .strip_prefix("customer#")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected pk {pk:?}")),
        other => panic!("no string pk: {other:?}"),
    }
}

/// The production keyrings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    KmsMrk,
    Hierarchy,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::KmsMrk => "kms-mrk",
            Kind::Hierarchy => "hierarchy",
        }
    }
}

/// One scenario's keyrings: the one the run encrypts with (KMS calls counted) and one that decrypts for the
/// checks (calls not counted).
struct Keyrings {
    encrypt: Arc<dyn Keyring>,
    check: Arc<dyn Keyring>,
    counters: Arc<KmsCounters>,
    kms_calls_per_item: f64,
}

async fn keyrings(kind: Kind, world: &Arc<FakeKmsWorld>) -> Keyrings {
    let counters = KmsCounters::new();
    let governed: Arc<dyn KmsApi> = Arc::new(GovernedKms::new(
        Arc::new(world.client(REGION)),
        None,
        RetryPolicy::default(),
        counters.clone(),
    ));
    let uncounted: Arc<dyn KmsApi> = Arc::new(world.client(REGION));
    match kind {
        Kind::KmsMrk => {
            let cache = || Some(Arc::new(KeyCache::new(KEY_CACHE_ENTRIES, KEY_CACHE_TTL)));
            Keyrings {
                encrypt: Arc::new(MrkKeyring::new(&mrk(), governed, cache()).expect("MRK keyring")),
                check: Arc::new(MrkKeyring::new(&mrk(), uncounted, cache()).expect("MRK keyring")),
                counters,
                kms_calls_per_item: 1.0,
            }
        }
        Kind::Hierarchy => {
            // The key store on its own table, as in production; creating the branch key is not counted.
            let store_db = Arc::new(FakeDynamo::new());
            let admin = DynamoKeyStore::with_dynamo(store_db.clone(), KEY_STORE, KEY_STORE, &mrk(), uncounted.clone())
                .expect("key store");
            admin.create_key_store().await.expect("CreateKeyStore");
            let custom = BTreeMap::from([("department".to_owned(), "billing".to_owned())]);
            let branch_key_id = admin
                .create_key(Some("customers-branch-key"), &custom)
                .await
                .expect("CreateKey");
            let source = |kms: Arc<dyn KmsApi>| {
                let store = DynamoKeyStore::with_dynamo(store_db.clone(), KEY_STORE, KEY_STORE, &mrk(), kms)
                    .expect("key store");
                Arc::new(CachingBranchKeySource::new(store, CacheSettings::default()))
            };
            Keyrings {
                encrypt: Arc::new(HierarchyKeyring::new(branch_key_id.clone(), source(governed))),
                check: Arc::new(HierarchyKeyring::new(branch_key_id, source(uncounted))),
                counters,
                kms_calls_per_item: 0.0,
            }
        }
    }
}

fn load_table(items: usize) -> Arc<FakeDynamo> {
    let db = Arc::new(FakeDynamo::new());
    db.add_table(TableSpec::on_demand(
        TABLE,
        KeySchema {
            hash: KeyAttribute::new("pk", ScalarType::S),
            range: Some(KeyAttribute::new("sk", ScalarType::N)),
        },
    ));
    for i in 0..items {
        db.put_raw(TABLE, item_to_table_item(&plain_item(i)))
            .expect("store a plaintext item");
    }
    db
}

/// One row of the table.
struct Row {
    kind: Kind,
    suite: AlgorithmSuite,
    items: usize,
    segments: u32,
    wall: Duration,
    cpu: Duration,
    rss_before_kib: u64,
    peak_kib: u64,
    peak_reset: bool,
    plain_bytes: u64,
    encrypted_bytes: u64,
    read_units: f64,
    write_units: f64,
    min_read_units: f64,
    min_write_units: f64,
    kms_calls: u64,
}

async fn backfill(db: Arc<FakeDynamo>, target: Target) -> Report {
    let config = BackfillConfig::new("backfill", REGION, LEDGER, "bench-worker");
    ddbguard_backfill::run(db, target, config, |_| {}, std::future::pending::<()>())
        .await
        .expect("backfill run")
}

async fn run_scenario(kind: Kind, suite: AlgorithmSuite, items: usize) -> Row {
    let label = format!("{} {}", kind.label(), suite_label(suite));
    let world = FakeKmsWorld::new();
    world.create_key(&mrk());
    let keys = keyrings(kind, &world).await;
    let cfg = table_config(suite);
    let mut policy = VerifyPolicy::new(cfg.clone());
    if kind == Kind::KmsMrk {
        policy = policy.with_key_arn(&mrk()).expect("key ARN");
    }
    let target = Target {
        table: TABLE.into(),
        judge: Judge::new(policy, keys.encrypt.clone()).expect("policy"),
        keyring: keys.encrypt.clone(),
        kms_calls_per_item: keys.kms_calls_per_item,
        version_attribute: None,
        from_legacy: None,
    };
    let db = load_table(items);
    let plain_bytes: u64 = db.items(TABLE).iter().map(|i| item_size(i) as u64).sum();
    // Setting up the key store cost KMS calls of its own: count from here.
    let kms_before = keys.counters.total();

    let peak_reset = reset_peak_rss();
    let rss_before_kib = status_kib("VmRSS");
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let report = backfill(db.clone(), target.clone()).await;
    let wall = t0.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    let peak_kib = status_kib("VmHWM");
    let kms_calls = keys.counters.total() - kms_before;

    // The run: finished, every item scanned and encrypted once, nothing else.
    let n = items as u64;
    let p = &report.progress;
    assert_eq!(report.completion, Completion::Finished, "{label}");
    assert_eq!(p.scanned, n, "{label}: scanned");
    assert_eq!(p.count("encrypted"), n, "{label}: outcomes {:?}", p.outcomes);
    assert_eq!(
        p.outcomes.values().sum::<u64>(),
        n,
        "{label}: outcomes {:?}",
        p.outcomes
    );
    assert_eq!(report.failed() + report.skipped_after_conflicts(), 0, "{label}");
    assert_eq!(p.segments_finished, p.segments, "{label}: segments finished");
    // KMS: one GenerateDataKey per item, or one Decrypt of the branch key for the whole run.
    match kind {
        Kind::KmsMrk => {
            assert_eq!(kms_calls, n, "{label}: KMS calls {:?}", keys.counters.snapshot());
            assert_eq!(
                keys.counters.get(REGION, Operation::GenerateDataKey, "ok"),
                n,
                "{label}: GenerateDataKey calls"
            );
            assert_eq!(p.kms_calls, n as f64, "{label}: KMS calls in the report");
        }
        Kind::Hierarchy => {
            assert_eq!(kms_calls, 1, "{label}: KMS calls {:?}", keys.counters.snapshot());
            assert_eq!(p.kms_calls, 0.0, "{label}: KMS calls in the report");
        }
    }
    // The table: every item encrypted and decrypting to its original values.
    let stored = db.items(TABLE);
    assert_eq!(stored.len(), items, "{label}: items in the table");
    let mut seen = vec![false; items];
    let mut encrypted_bytes = 0u64;
    let mut min_write_units = 0.0;
    for item in &stored {
        let size = item_size(item);
        encrypted_bytes += size as u64;
        min_write_units += write_units(size);
        let item = table_item_to_item(item).expect("a stored item converts");
        let decrypted = decrypt_item(&cfg, keys.check.as_ref(), &item)
            .await
            .unwrap_or_else(|e| panic!("{label}: a rewritten item does not decrypt: {e}"));
        let i = index_of(&decrypted.item);
        assert!(!std::mem::replace(&mut seen[i], true), "{label}: item {i} twice");
        assert_eq!(decrypted.item, plain_item(i), "{label}: item {i} decrypted");
    }
    assert!(seen.iter().all(|s| *s), "{label}: items missing");
    // The ledger: a second run finds every segment finished and scans nothing.
    let again = backfill(db.clone(), target).await;
    assert_eq!(
        (again.progress.scanned, again.completion),
        (0, Completion::Finished),
        "{label}: second run"
    );

    Row {
        kind,
        suite,
        items,
        segments: p.segments,
        wall,
        cpu,
        rss_before_kib,
        peak_kib,
        peak_reset,
        plain_bytes,
        encrypted_bytes,
        read_units: p.read_units,
        write_units: p.write_units,
        min_read_units: plain_bytes as f64 / 4096.0 / 2.0,
        min_write_units,
        kms_calls,
    }
}

fn print_table(rows: &[Row], load_start: &str, load_end: &str) {
    let defaults = BackfillConfig::new("backfill", REGION, LEDGER, "w");
    println!("## ddbguard backfill benchmark\n");
    println!(
        "machine: {}; tokio worker threads: {}; load average (1/5/15 min) {load_start} before, {load_end} after",
        machine(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "engine defaults: {} segments at once, pages of {}, {} items at once, no rate limit; in-memory DynamoDB and KMS\n",
        defaults.concurrency, defaults.page_size, defaults.item_concurrency,
    );
    println!(
        "| keyring | suite | items | segments | bytes/item plain → encrypted | wall s | items/s | CPU µs/item \
         | items/s per core | cores used | RCU/item (min) | WCU/item (min) | KMS calls/item | RSS before MiB | peak RSS MiB |"
    );
    println!("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let n = r.items as f64;
        let wall = r.wall.as_secs_f64();
        let cpu = r.cpu.as_secs_f64();
        println!(
            "| {} | {} | {} | {} | {:.0} → {:.0} | {wall:.2} | {:.0} | {:.1} | {:.0} | {:.2} | {:.4} ({:.4}) | {:.2} ({:.2}) | {:.4} | {:.0} | {:.0}{} |",
            r.kind.label(),
            suite_label(r.suite),
            r.items,
            r.segments,
            r.plain_bytes as f64 / n,
            r.encrypted_bytes as f64 / n,
            n / wall,
            cpu * 1e6 / n,
            n / cpu,
            cpu / wall,
            r.read_units / n,
            r.min_read_units / n,
            r.write_units / n,
            r.min_write_units / n,
            r.kms_calls as f64 / n,
            mib(r.rss_before_kib),
            mib(r.peak_kib),
            if r.peak_reset { "" } else { " (process)" },
        );
    }
    println!(
        "\nCPU = user + system time of the whole process (10 ms ticks) during the run, the in-memory DynamoDB and KMS \
         included; items/s per core = items ÷ CPU seconds. RCU/WCU = consumed capacity the run was charged for the \
         table (the ledger's own writes, one checkpoint per page of 100, are not included); (min) = the items' \
         plaintext bytes read at 0.5 unit per 4 KB, and one write unit per started KB of each encrypted item. RSS \
         before = after loading the table (the in-memory table holds every item); peak RSS = VmHWM during the \
         run{}.",
        if rows.iter().all(|r| r.peak_reset) {
            " (reset before each run)"
        } else {
            "; \"(process)\" = could not be reset, the peak of the whole process so far"
        }
    );
}

fn main() {
    let items = env_usize("DDBGUARD_BENCH_ITEMS", 20_000);
    assert!(items > 0, "DDBGUARD_BENCH_ITEMS must be at least 1");
    // As `ddbguard backfill`: the multi-threaded runtime with one worker per CPU.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let load_start = load_average();
        let mut rows = Vec::new();
        for kind in [Kind::KmsMrk, Kind::Hierarchy] {
            for suite in [AlgorithmSuite::EcdsaP384, AlgorithmSuite::HmacOnly] {
                let row = run_scenario(kind, suite, items).await;
                eprintln!(
                    "{} {}: {items} items in {:.2} s",
                    kind.label(),
                    suite_label(suite),
                    row.wall.as_secs_f64()
                );
                rows.push(row);
            }
        }
        print_table(&rows, &load_start, &load_average());
    });
}
