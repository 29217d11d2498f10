//! The engine over the fake DynamoDB: what is rewritten and what is not, concurrent application writes,
//! interruption and resume, two processes on one ledger, throttling, the write budget, and a dead process's
//! segment taken over; legacy items migrated (`from_legacy`) over a fake KMS with the direct KMS provider.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ddbguard_dbe::{CryptoAction, Keyring, TableConfig, decrypt_item};
use ddbguard_ddb::{
    AttributeValue, BatchGetOutput, Condition, Consumed, DdbError, DynamoApi, ErrorKind, FakeDynamo, FaultyDynamo,
    GetItemOutput, Item, KeyAttribute, KeySchema, Op, Page, PartitionQuery, ReturnValues, ScalarType, ScanSegment,
    TableDescription, TableSpec, Update, UpdateItemOutput, WriteOp,
};
use ddbguard_ddbec::fake::{direct_kms_context, seal_direct_kms};
use ddbguard_ddbec::{AttributeActions, LegacyAction, TableContext};
use ddbguard_keys::RawAesKeyring;
use ddbguard_keys::kms::fake::{FailureKms, FakeKmsWorld};
use ddbguard_keys::kms::{DirectKmsProvider, KmsApi as _, Operation};
use ddbguard_lease::{DynamoLeaseStore, Lease, LeaseStore, LeaseTable};
use ddbguard_verify::convert::{item_to_table_item, table_item_to_item};
use ddbguard_verify::{Judge, LegacyPolicy, VerifyPolicy};
use zeroize::Zeroizing;

use crate::engine::{BackfillConfig, run};
use crate::report::{Completion, Report};
use crate::rewrite::{FOOT, FromLegacy, HEAD, LEGACY_DESC, LEGACY_SIG, Target, write_condition, write_update};

const TABLE: &str = "Customers";
const LEDGER: &str = "ddbguard-backfill";

fn table_config() -> TableConfig {
    let mut c = TableConfig::new(TABLE, "pk");
    c.sort_key = Some("sk".into());
    for (name, action) in [
        ("pk", CryptoAction::SignOnly),
        ("sk", CryptoAction::SignOnly),
        ("ssn", CryptoAction::EncryptAndSign),
        ("email", CryptoAction::EncryptAndSign),
        ("tier", CryptoAction::SignOnly),
    ] {
        c.attribute_actions.insert(name.into(), action);
    }
    c.allowed_unsigned_attributes.insert("note".into());
    c
}

fn keyring() -> Arc<RawAesKeyring> {
    Arc::new(RawAesKeyring::new("ddbguard-test", "key-1", Zeroizing::new([9u8; 32])))
}

fn target() -> Target {
    Target {
        table: TABLE.into(),
        judge: Judge::new(VerifyPolicy::new(table_config()), keyring()).unwrap(),
        keyring: keyring(),
        kms_calls_per_item: 0.0,
        version_attribute: None,
        from_legacy: None,
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn plain(i: usize) -> Item {
    HashMap::from([
        ("pk".to_owned(), s(&format!("customer-{i:05}"))),
        ("sk".to_owned(), AttributeValue::N("1".into())),
        ("ssn".to_owned(), s(&format!("123-45-{i:04}"))),
        ("email".to_owned(), s(&format!("c{i}@example.com"))),
        ("tier".to_owned(), s("gold")),
    ])
}

fn table_with(n: usize) -> Arc<FakeDynamo> {
    let db = Arc::new(FakeDynamo::new());
    db.add_table(TableSpec::on_demand(
        TABLE,
        KeySchema {
            hash: KeyAttribute::new("pk", ScalarType::S),
            range: Some(KeyAttribute::new("sk", ScalarType::N)),
        },
    ));
    for i in 0..n {
        db.put_raw(TABLE, plain(i)).unwrap();
    }
    db
}

fn config(worker: &str) -> BackfillConfig {
    let mut c = BackfillConfig::new("backfill", "us-east-1", LEDGER, worker);
    c.segments = Some(4);
    c.page_size = 10;
    c.lease_duration = Duration::from_secs(6);
    c.progress_interval = Duration::from_secs(1);
    c
}

async fn backfill<D: DynamoApi + Clone>(db: D, config: BackfillConfig) -> Report {
    run(db, target(), config, |_| {}, std::future::pending::<()>())
        .await
        .unwrap()
}

/// `db` behind writes slowed to 200 ms, and a config that writes two items at once: a run stopped after a few
/// seconds lands in the middle of a table of a hundred items or more.
fn slowed(db: &Arc<FakeDynamo>) -> (Arc<FaultyDynamo<Arc<FakeDynamo>>>, BackfillConfig) {
    let faulty = Arc::new(FaultyDynamo::new(db.clone()));
    faulty.set_latency(Op::UpdateItem, Duration::from_millis(200));
    let mut c = config("w1");
    c.item_concurrency = 2;
    (faulty, c)
}

/// A run interrupted (as by a signal) after `seconds`.
async fn interrupted_after<D: DynamoApi + Clone>(
    db: D,
    target: Target,
    config: BackfillConfig,
    seconds: u64,
) -> Report {
    run(
        db,
        target,
        config,
        |_| {},
        tokio::time::sleep(Duration::from_secs(seconds)),
    )
    .await
    .unwrap()
}

/// Every item of the table decrypts to `expected` (or, for items in `expected` as `None`, is left as it was).
async fn assert_all_encrypted(db: &FakeDynamo, n: usize) {
    let items = db.items(TABLE);
    assert_eq!(items.len(), n);
    for item in items {
        assert!(item.contains_key(HEAD), "not encrypted: {:?}", item.get("pk"));
        let decrypted = decrypt_item(
            &table_config(),
            keyring().as_ref() as &dyn Keyring,
            &table_item_to_item(&item).unwrap(),
        )
        .await
        .expect("decrypts");
        let pk = match item.get("pk") {
            Some(AttributeValue::S(pk)) => pk.clone(),
            other => panic!("pk {other:?}"),
        };
        let i: usize = pk.trim_start_matches("customer-").parse().unwrap();
        let original = table_item_to_item(&plain(i)).unwrap();
        assert_eq!(decrypted.item.get("ssn"), original.get("ssn"), "{pk}");
        assert_eq!(decrypted.item.get("email"), original.get("email"), "{pk}");
    }
}

#[tokio::test(start_paused = true)]
async fn plaintext_is_encrypted_and_everything_else_is_left_alone() {
    let db = table_with(40);
    // Already encrypted by the application, written by the legacy client, and an item the policy does not
    // cover (an attribute with no action).
    let encrypted = ddbguard_dbe::encrypt_item(
        &table_config(),
        keyring().as_ref(),
        &table_item_to_item(&plain(100)).unwrap(),
    )
    .await
    .unwrap();
    db.put_raw(TABLE, item_to_table_item(&encrypted)).unwrap();
    let mut legacy = plain(101);
    legacy.insert(LEGACY_DESC.into(), AttributeValue::B(vec![0u8, 1].into()));
    db.put_raw(TABLE, legacy.clone()).unwrap();
    let mut unknown = plain(102);
    unknown.insert("shoe_size".into(), AttributeValue::N("44".into()));
    db.put_raw(TABLE, unknown.clone()).unwrap();

    let report = backfill(db.clone(), config("w1")).await;
    assert_eq!(report.completion, Completion::Finished);
    let p = &report.progress;
    assert_eq!(p.scanned, 43);
    assert_eq!(
        (
            p.count("encrypted"),
            p.count("already_encrypted"),
            p.count("legacy_format"),
            p.count("policy_violation")
        ),
        (40, 1, 1, 1),
        "{:?}",
        p.outcomes
    );
    assert_eq!(p.verdicts.get("ok_structural"), Some(&1));
    assert_eq!(report.samples["policy_violation"].len(), 1);
    assert_eq!(report.failed() + report.skipped_after_conflicts(), 0);
    // Left byte for byte as they were.
    let items = db.items(TABLE);
    let find = |pk: &str| items.iter().find(|i| i.get("pk") == Some(&s(pk))).unwrap().clone();
    assert_eq!(find("customer-00101"), legacy);
    assert_eq!(find("customer-00102"), unknown);
    assert_eq!(find("customer-00100"), item_to_table_item(&encrypted));
    // The fake reports capacity: one write per item (each under 1 KB), and the scan's reads.
    assert_eq!(report.write_units_per_item, Some(1.0));
    assert!(p.read_units > 0.0);

    // A second run finds every segment finished in the ledger and writes nothing.
    let again = backfill(db.clone(), config("w1")).await;
    assert_eq!((again.progress.scanned, again.completion), (0, Completion::Finished));
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_writes_nothing_and_estimates_the_cost() {
    let db = table_with(25);
    let mut c = config("w1");
    c.rewrite.dry_run = true;
    c.write_units_per_second = Some(5.0);
    let report = backfill(db.clone(), c).await;
    assert_eq!(report.progress.count("would_encrypt"), 25);
    assert!(db.items(TABLE).iter().all(|i| !i.contains_key(HEAD)));
    assert!(db.items(LEDGER).is_empty(), "no ledger entry either");
    assert!(report.would_write_bytes.unwrap() > 25 * 100);
    // The bytes by outcome add up to what was scanned.
    assert_eq!(report.bytes_by_outcome.keys().collect::<Vec<_>>(), ["would_encrypt"]);
    assert_eq!(report.bytes_by_outcome["would_encrypt"], report.progress.scanned_bytes);
    // 25 writes of one unit at 5 units a second.
    assert_eq!(report.estimated_seconds, Some(5.0));
}

/// Wraps the fake; before the write-back of chosen items, writes them as the application would.
#[derive(Clone)]
struct Interfering {
    inner: Arc<FakeDynamo>,
    /// pk → how many more times to interfere, and with what.
    plan: Arc<Mutex<HashMap<String, (usize, Interference)>>>,
    interfered: Arc<AtomicUsize>,
    /// The KMS the application's legacy client writes with ([`Interference::LegacyWrite`]).
    world: Option<Arc<FakeKmsWorld>>,
}

#[derive(Clone, Copy, Debug)]
enum Interference {
    /// The application, still on the legacy client, writes the item again (with a new email).
    LegacyWrite,
    /// The application changes the email, still in plaintext.
    PlaintextWrite,
    /// The application writes the item encrypted itself (with a new email).
    EncryptedWrite,
    /// The application deletes it.
    Delete,
    /// The application, on the legacy client with optimistic locking, writes the item again with a new email and
    /// this version.
    VersionedLegacyWrite(u64),
}

impl Interfering {
    async fn interfere(&self, key: &Item) {
        let Some(AttributeValue::S(pk)) = key.get("pk") else {
            return;
        };
        let (left, what) = {
            let mut plan = self.plan.lock().unwrap();
            match plan.get_mut(pk) {
                Some((n, what)) if *n > 0 => {
                    *n -= 1;
                    (*n, *what)
                }
                _ => return,
            }
        };
        self.interfered.fetch_add(1, Ordering::Relaxed);
        let i: usize = pk.trim_start_matches("customer-").parse().unwrap();
        let mut item = plain(i);
        // Each write differs from the one before (a write of identical values would not be a change).
        let email = match left {
            0 => format!("changed-{i}@example.com"),
            n => format!("changed-{i}-{n}@example.com"),
        };
        item.insert("email".into(), s(&email));
        match what {
            Interference::LegacyWrite => {
                let world = self.world.as_ref().expect("a KMS for legacy writes");
                self.inner.put_raw(TABLE, legacy_item(world, &item).await).unwrap();
            }
            Interference::VersionedLegacyWrite(version) => {
                let world = self.world.as_ref().expect("a KMS for legacy writes");
                item.insert(VERSION.into(), AttributeValue::N(version.to_string()));
                self.inner.put_raw(TABLE, legacy_item(world, &item).await).unwrap();
            }
            Interference::PlaintextWrite => self.inner.put_raw(TABLE, item).unwrap(),
            Interference::EncryptedWrite => {
                let e = ddbguard_dbe::encrypt_item(
                    &table_config(),
                    keyring().as_ref(),
                    &table_item_to_item(&item).unwrap(),
                )
                .await
                .unwrap();
                self.inner.put_raw(TABLE, item_to_table_item(&e)).unwrap();
            }
            Interference::Delete => {
                self.inner.delete_item(TABLE, key.clone(), None).await.unwrap();
            }
        }
    }
}

impl DynamoApi for Interfering {
    async fn get_item(&self, table: &str, key: Item, consistent: bool) -> Result<GetItemOutput, DdbError> {
        self.inner.get_item(table, key, consistent).await
    }
    async fn put_item(&self, table: &str, item: Item, condition: Option<Condition>) -> Result<Consumed, DdbError> {
        self.inner.put_item(table, item, condition).await
    }
    async fn update_item(
        &self,
        table: &str,
        key: Item,
        update: Update,
        condition: Option<Condition>,
        return_values: ReturnValues,
    ) -> Result<UpdateItemOutput, DdbError> {
        if table == TABLE {
            self.interfere(&key).await;
        }
        self.inner
            .update_item(table, key, update, condition, return_values)
            .await
    }
    async fn delete_item(&self, table: &str, key: Item, condition: Option<Condition>) -> Result<Consumed, DdbError> {
        self.inner.delete_item(table, key, condition).await
    }
    async fn transact_write(&self, ops: Vec<WriteOp>) -> Result<Consumed, DdbError> {
        self.inner.transact_write(ops).await
    }
    async fn query(&self, table: &str, query: PartitionQuery) -> Result<Page, DdbError> {
        self.inner.query(table, query).await
    }
    async fn scan_segment(&self, table: &str, scan: ScanSegment) -> Result<Page, DdbError> {
        self.inner.scan_segment(table, scan).await
    }
    async fn batch_get(&self, table: &str, keys: Vec<Item>, consistent: bool) -> Result<BatchGetOutput, DdbError> {
        self.inner.batch_get(table, keys, consistent).await
    }
    async fn describe_table(&self, table: &str) -> Result<TableDescription, DdbError> {
        self.inner.describe_table(table).await
    }
    async fn create_table(&self, spec: &TableSpec) -> Result<(), DdbError> {
        self.inner.create_table(spec).await
    }
    async fn update_time_to_live(&self, table: &str, attribute: &str, enabled: bool) -> Result<(), DdbError> {
        self.inner.update_time_to_live(table, attribute, enabled).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_concurrent_application_write_always_wins() {
    let db = table_with(30);
    let plan = HashMap::from([
        ("customer-00001".to_owned(), (1, Interference::PlaintextWrite)),
        ("customer-00002".to_owned(), (1, Interference::EncryptedWrite)),
        ("customer-00003".to_owned(), (1, Interference::Delete)),
        // Changes before every attempt: left plaintext for a later run.
        ("customer-00004".to_owned(), (99, Interference::PlaintextWrite)),
    ]);
    let interfering = Interfering {
        inner: db.clone(),
        plan: Arc::new(Mutex::new(plan)),
        interfered: Arc::new(AtomicUsize::new(0)),
        world: None,
    };
    let report = backfill(interfering.clone(), config("w1")).await;
    let p = &report.progress;
    assert_eq!(p.count("encrypted"), 27, "{:?}", p.outcomes);
    assert_eq!(
        (
            p.count("encrypted_meanwhile"),
            p.count("deleted_meanwhile"),
            p.count("skipped_conflicts")
        ),
        (1, 1, 1)
    );
    assert_eq!(report.skipped_after_conflicts(), 1);
    let items = db.items(TABLE);
    let find = |pk: &str| items.iter().find(|i| i.get("pk") == Some(&s(pk))).cloned();
    // The plaintext write was re-read and encrypted from its new value.
    let one = find("customer-00001").unwrap();
    let decrypted = decrypt_item(&table_config(), keyring().as_ref(), &table_item_to_item(&one).unwrap())
        .await
        .unwrap();
    assert_eq!(
        decrypted.item.get("email"),
        Some(&ddbguard_dbe::AttributeValue::S("changed-1@example.com".into()))
    );
    // The application's own encryption was left as it wrote it.
    let two = find("customer-00002").unwrap();
    let decrypted = decrypt_item(&table_config(), keyring().as_ref(), &table_item_to_item(&two).unwrap())
        .await
        .unwrap();
    assert_eq!(
        decrypted.item.get("email"),
        Some(&ddbguard_dbe::AttributeValue::S("changed-2@example.com".into()))
    );
    // The deletion stands, and the item that kept changing holds the application's last plaintext.
    assert!(find("customer-00003").is_none());
    let four = find("customer-00004").unwrap();
    assert!(!four.contains_key(HEAD));
    assert!(
        matches!(four.get("email"), Some(AttributeValue::S(e)) if e.starts_with("changed-4-")),
        "{four:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_attribute_added_meanwhile_fails_the_condition_and_survives() {
    // The application adds `ssn`-less item's email between scan and write: the item read had no email, so the
    // condition requires it absent.
    let db = table_with(0);
    let mut item = plain(7);
    item.remove("email");
    db.put_raw(TABLE, item).unwrap();
    let interfering = Interfering {
        inner: db.clone(),
        plan: Arc::new(Mutex::new(HashMap::from([(
            "customer-00007".to_owned(),
            (1, Interference::PlaintextWrite),
        )]))),
        interfered: Arc::new(AtomicUsize::new(0)),
        world: None,
    };
    let report = backfill(interfering, config("w1")).await;
    assert_eq!(report.progress.count("encrypted"), 1);
    let now = db.items(TABLE).pop().unwrap();
    let decrypted = decrypt_item(&table_config(), keyring().as_ref(), &table_item_to_item(&now).unwrap())
        .await
        .unwrap();
    assert_eq!(
        decrypted.item.get("email"),
        Some(&ddbguard_dbe::AttributeValue::S("changed-7@example.com".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_run_resumes_and_encrypts_every_item_exactly_once() {
    let db = table_with(120);
    // Slow writes, so the interruption lands mid-run.
    let (faulty, c) = slowed(&db);
    let first = interrupted_after(faulty.clone(), target(), c.clone(), 3).await;
    assert_eq!(first.completion, Completion::Interrupted);
    let done_first = first.progress.count("encrypted");
    assert!(done_first > 0 && done_first < 120, "{done_first}");
    // Every lease was released at the interruption.
    let store = DynamoLeaseStore::new(db.clone(), LeaseTable::new(LEDGER));
    assert!(store.list_leases().await.unwrap().iter().all(|l| l.owner.is_none()));

    let second = backfill(faulty.clone(), c).await;
    assert_eq!(second.completion, Completion::Finished);
    // The pages the first run was in are scanned again; their rewritten items are skipped, never re-encrypted.
    assert_eq!(done_first + second.progress.count("encrypted"), 120);
    assert_eq!(
        second.progress.count("already_encrypted") as usize,
        second.progress.scanned as usize - second.progress.count("encrypted") as usize
    );
    assert_all_encrypted(&db, 120).await;
}

/// The verifiers' canary items are counted as `canary` and never rewritten (a plaintext canary would otherwise
/// be encrypted, and an encrypted one counted as an application item `already_encrypted`); without the setting
/// the same keys are items like any other.
#[tokio::test(start_paused = true)]
async fn canary_items_are_counted_apart_and_never_rewritten() {
    let settings = ddbguard_verify::canary::CanarySettings {
        origins: vec!["us-east-1".to_owned(), "ap-southeast-2".to_owned()],
        ..Default::default()
    };
    let layout = ddbguard_verify::canary::CanaryLayout::new(
        &KeySchema {
            hash: KeyAttribute::new("pk", ScalarType::S),
            range: Some(KeyAttribute::new("sk", ScalarType::N)),
        },
        &settings.prefix,
        &settings.origins,
    )
    .unwrap();
    let canary = |region: &str| {
        let mut item = item_to_table_item(&layout.key(region));
        item.insert("ssn".into(), s("canary payload"));
        item
    };
    let db = table_with(20);
    for region in &settings.origins {
        db.put_raw(TABLE, canary(region)).unwrap();
    }
    let mut c = config("w1");
    c.canaries = Some(settings.clone());
    let report = backfill(db.clone(), c).await;
    assert_eq!(report.progress.count("canary"), 2);
    assert_eq!(report.progress.count("encrypted"), 20);
    for region in &settings.origins {
        let key = canary(region);
        let stored = db
            .items(TABLE)
            .into_iter()
            .find(|i| i.get("pk") == key.get("pk"))
            .unwrap();
        assert_eq!(stored, key, "the canary of {region} was left as it was");
    }

    let db = table_with(20);
    db.put_raw(TABLE, canary("us-east-1")).unwrap();
    let report = backfill(db, config("w2")).await;
    assert_eq!(
        (report.progress.count("canary"), report.progress.count("encrypted")),
        (0, 21)
    );
}

/// DynamoDB failing for good after the run started (here: every scan refused) ends it with a report of what was
/// done, `Completion::Failed` and the error, not an error that would read as "nothing written"; a rerun resumes.
#[tokio::test(start_paused = true)]
async fn a_dynamodb_failure_after_the_start_ends_the_run_with_its_report() {
    let db = table_with(400);
    let (faulty, c) = slowed(&db);
    let running = tokio::spawn(run(
        faulty.clone(),
        target(),
        c.clone(),
        |_| {},
        std::future::pending::<()>(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Not retryable: the table's pages and the ledger's listings fail from now on.
    faulty.fail_next(Op::Scan, ErrorKind::Other, 100_000);
    let failed = running.await.unwrap().unwrap();
    assert_eq!(failed.completion, Completion::Failed);
    let error = failed.error.as_deref().unwrap_or_default();
    assert!(!error.is_empty(), "the report says why");
    let done_first = failed.progress.count("encrypted");
    assert!(done_first > 0 && done_first < 400, "{done_first}");
    let json = serde_json::to_value(&failed).unwrap();
    assert_eq!(json["completion"], "failed");
    assert_eq!(json["error"], error);

    let second = backfill(db.clone(), c).await;
    assert_eq!(second.completion, Completion::Finished);
    assert!(second.error.is_none());
    assert_eq!(done_first + second.progress.count("encrypted"), 400);
    assert_all_encrypted(&db, 400).await;
}

/// A finished job is not scanned again under its name; `restart` starts a new pass of it, which encrypts what a
/// lagging writer wrote in plaintext since. A restart is refused while a pass is unfinished.
#[tokio::test(start_paused = true)]
async fn restart_starts_a_new_pass_of_a_finished_job() {
    let db = table_with(120);
    // Slow writes, so the interruption lands mid-run.
    let (faulty, c) = slowed(&db);
    let mut restart = c.clone();
    restart.restart = true;
    let interrupted = interrupted_after(faulty.clone(), target(), c.clone(), 3).await;
    assert_eq!(interrupted.completion, Completion::Interrupted);
    let err = run(
        db.clone(),
        target(),
        restart.clone(),
        |_| {},
        std::future::pending::<()>(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("is not finished"), "{err}");

    let first = backfill(db.clone(), c.clone()).await;
    assert_eq!(first.completion, Completion::Finished);
    db.put_raw(TABLE, plain(120)).unwrap();
    let same = backfill(db.clone(), c).await;
    assert_eq!(same.progress.scanned, 0, "a finished job is not scanned again");

    let second = backfill(db.clone(), restart).await;
    assert_eq!(second.completion, Completion::Finished);
    assert_eq!(second.progress.scanned, 121);
    assert_eq!(second.progress.count("encrypted"), 1);
    assert_eq!(second.progress.count("already_encrypted"), 120);
    assert_all_encrypted(&db, 121).await;
}

#[tokio::test(start_paused = true)]
async fn two_processes_split_the_segments_and_together_finish() {
    let db = table_with(200);
    let mut a = config("a");
    let mut b = config("b");
    a.segments = Some(8);
    b.segments = Some(8);
    a.concurrency = 2;
    b.concurrency = 2;
    let (ra, rb) = tokio::join!(backfill(db.clone(), a), backfill(db.clone(), b));
    let (ea, eb) = (ra.progress.count("encrypted"), rb.progress.count("encrypted"));
    assert_eq!(ea + eb, 200);
    assert!(ea > 0 && eb > 0, "both worked: {ea} + {eb}");
    assert_all_encrypted(&db, 200).await;
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried_and_the_write_budget_holds() {
    let db = table_with(300);
    let faulty = Arc::new(FaultyDynamo::new(db.clone()));
    faulty.fail_next(Op::UpdateItem, ErrorKind::Throttled, 5);
    let mut c = config("w1");
    c.write_units_per_second = Some(20.0);
    let started = tokio::time::Instant::now();
    let report = backfill(faulty.clone(), c).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(report.progress.count("encrypted"), 300);
    let rate = report.progress.write_units / elapsed;
    assert!(rate <= 20.0 * 1.1, "{rate} units/s against a budget of 20");
    assert!(rate >= 20.0 * 0.8, "the budget is used: {rate}");
    assert_eq!(report.limited_by, Some("write_capacity"));
    assert!(faulty.calls(Op::UpdateItem) >= 305, "the throttled writes were retried");
}

#[tokio::test(start_paused = true)]
async fn throttled_scans_of_the_table_and_the_ledger_are_retried() {
    let db = table_with(60);
    let faulty = Arc::new(FaultyDynamo::new(db.clone()));
    // The first scans are the ledger's listings, the next ones the table's segments.
    faulty.fail_next(Op::Scan, ErrorKind::Throttled, 4);
    let report = backfill(faulty.clone(), config("w1")).await;
    assert_eq!(report.progress.count("encrypted"), 60);
    faulty.fail_next(Op::Scan, ErrorKind::Transient, 2);
    let again = backfill(faulty, config("w1")).await;
    assert_eq!(again.completion, Completion::Finished);
    assert_all_encrypted(&db, 60).await;
}

#[tokio::test(start_paused = true)]
async fn a_dead_processs_segment_is_taken_over() {
    let db = table_with(50);
    // A process that took segment 0 and died: its counter never moves again.
    let store = DynamoLeaseStore::new(db.clone(), LeaseTable::new(LEDGER));
    store.initialize().await.unwrap();
    let key = format!("{TABLE}/backfill/4/0");
    store
        .create_lease_if_absent(&Lease::new(key.clone(), vec![]))
        .await
        .unwrap();
    store.take_lease(&key, "dead", 0).await.unwrap();
    let started = tokio::time::Instant::now();
    let report = backfill(db.clone(), config("w1")).await;
    assert_eq!(report.progress.count("encrypted"), 50);
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "waited for the lease to expire"
    );
    assert_all_encrypted(&db, 50).await;
}

#[tokio::test(start_paused = true)]
async fn a_missing_table_or_key_mismatch_is_a_named_error() {
    let db = Arc::new(FakeDynamo::new());
    let err = run(db.clone(), target(), config("w1"), |_| {}, std::future::pending::<()>())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("\"Customers\" does not exist in us-east-1"),
        "{err}"
    );
    db.add_table(TableSpec::on_demand(
        TABLE,
        KeySchema {
            hash: KeyAttribute::new("id", ScalarType::S),
            range: None,
        },
    ));
    let err = run(db, target(), config("w1"), |_| {}, std::future::pending::<()>())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("has the key id but the configuration names pk, sk"),
        "{err}"
    );
}

// ---- legacy items (`from_legacy`) ----

const MRK_E1: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";
const OTHER_MRK_E1: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-00000000000000000000000000000001";

const LEGACY_TABLE: TableContext<'static> = TableContext {
    table_name: TABLE,
    partition_key: Some("pk"),
    sort_key: Some("sk"),
};

/// What the legacy client was told: encrypt the two secrets, sign the rest, leave `note` alone.
fn legacy_actions() -> AttributeActions {
    AttributeActions::new(LegacyAction::SignOnly)
        .with("ssn", LegacyAction::EncryptAndSign)
        .with("email", LegacyAction::EncryptAndSign)
        .with("note", LegacyAction::DoNothing)
        .with_key_attributes(["pk", "sk"])
}

fn kms_world() -> Arc<FakeKmsWorld> {
    let w = FakeKmsWorld::new();
    w.create_key(MRK_E1);
    w.create_key(OTHER_MRK_E1);
    w
}

/// `plain` as the legacy client writes it with the direct KMS provider under `key`.
async fn legacy_item_under(world: &Arc<FakeKmsWorld>, key: &str, plain: &Item) -> Item {
    let plain = table_item_to_item(plain).unwrap();
    let ec = direct_kms_context(LEGACY_TABLE, &plain).unwrap();
    let dk = world.client("us-east-1").generate_data_key(key, 32, &ec).await.unwrap();
    let sealed = seal_direct_kms(LEGACY_TABLE, &plain, &legacy_actions(), &dk.plaintext, &dk.ciphertext).unwrap();
    item_to_table_item(&sealed)
}

async fn legacy_item(world: &Arc<FakeKmsWorld>, plain: &Item) -> Item {
    legacy_item_under(world, MRK_E1, plain).await
}

/// The target with the table's legacy policy and the direct KMS provider over `kms` (one `Decrypt` per item).
fn legacy_target(kms: Arc<FailureKms>, from_legacy: bool) -> Target {
    let mut policy = VerifyPolicy::new(table_config());
    policy.legacy = Some(LegacyPolicy {
        actions: legacy_actions(),
        table_name: TABLE.into(),
    });
    let provider = DirectKmsProvider::new(MRK_E1, kms, None).unwrap();
    Target {
        judge: Judge::new(policy, keyring())
            .unwrap()
            .with_legacy_provider(Arc::new(provider)),
        from_legacy: from_legacy.then_some(FromLegacy {
            kms_calls_per_item: 1.0,
            calls_aws: true,
        }),
        ..target()
    }
}

fn counting_kms(world: &Arc<FakeKmsWorld>) -> Arc<FailureKms> {
    Arc::new(FailureKms::new(Arc::new(world.client("us-east-1"))))
}

/// `n` legacy items `customer-00000..`, sealed from [`plain`].
async fn legacy_table(world: &Arc<FakeKmsWorld>, n: usize) -> Arc<FakeDynamo> {
    let db = table_with(0);
    for i in 0..n {
        db.put_raw(TABLE, legacy_item(world, &plain(i)).await).unwrap();
    }
    db
}

async fn backfill_to<D: DynamoApi + Clone>(db: D, target: Target, config: BackfillConfig) -> Report {
    run(db, target, config, |_| {}, std::future::pending::<()>())
        .await
        .unwrap()
}

fn find(db: &FakeDynamo, pk: &str) -> Option<Item> {
    db.items(TABLE).into_iter().find(|i| i.get("pk") == Some(&s(pk)))
}

/// Every item is in the DB-ESDK format only and decrypts to the values of `plain(i)` (all of them, `note`
/// included).
async fn assert_all_migrated(db: &FakeDynamo, n: usize) {
    assert_all_encrypted(db, n).await;
    for item in db.items(TABLE) {
        assert!(
            !item.contains_key(LEGACY_DESC) && !item.contains_key(LEGACY_SIG),
            "{:?}",
            item.get("pk")
        );
        let decrypted = decrypt_item(&table_config(), keyring().as_ref(), &table_item_to_item(&item).unwrap())
            .await
            .unwrap();
        let Some(AttributeValue::S(pk)) = item.get("pk") else {
            panic!("no pk")
        };
        let i: usize = pk.trim_start_matches("customer-").parse().unwrap();
        assert_eq!(decrypted.item, table_item_to_item(&plain(i)).unwrap(), "{pk}");
    }
}

#[tokio::test(start_paused = true)]
async fn legacy_items_are_migrated_only_when_asked_and_decrypt_to_their_original_values() {
    let world = kms_world();
    let db = legacy_table(&world, 30).await;
    for i in 30..50 {
        db.put_raw(TABLE, plain(i)).unwrap();
    }
    let kms = counting_kms(&world);

    // Without the option, legacy items stay as they are, even with a judge that can open them.
    let mut c = config("w1");
    c.job = "plain".into();
    let report = backfill_to(db.clone(), legacy_target(kms.clone(), false), c).await;
    assert_eq!(
        (
            report.progress.count("legacy_format"),
            report.progress.count("encrypted")
        ),
        (30, 20)
    );
    assert_eq!(kms.calls(Operation::Decrypt), 0);
    assert!(find(&db, "customer-00000").unwrap().contains_key(LEGACY_DESC));

    // A dry run under the direct KMS provider counts them without a KMS call, and writes nothing.
    let before = db.items(TABLE);
    let mut c = config("w1");
    c.job = "dry".into();
    c.rewrite.dry_run = true;
    let report = backfill_to(db.clone(), legacy_target(kms.clone(), true), c).await;
    assert_eq!(
        report.progress.count("would_migrate_legacy"),
        30,
        "{:?}",
        report.progress.outcomes
    );
    assert_eq!(
        report.progress.kms_calls, 30.0,
        "the estimate counts one Decrypt per legacy item"
    );
    assert!(report.would_write_bytes.unwrap() > 30 * 200);
    assert_eq!(kms.calls(Operation::Decrypt), 0);
    assert_eq!(db.items(TABLE).len(), before.len());
    assert!(before.iter().all(|i| db.items(TABLE).contains(i)));

    let report = backfill_to(db.clone(), legacy_target(kms.clone(), true), config("w1")).await;
    let p = &report.progress;
    assert_eq!(report.completion, Completion::Finished);
    assert_eq!(
        (p.count("migrated_legacy"), p.count("already_encrypted"), p.scanned),
        (30, 20, 50),
        "{:?}",
        p.outcomes
    );
    assert_eq!(report.failed(), 0);
    // One `Decrypt` per legacy item, charged to the KMS budget and reported.
    assert_eq!(kms.calls(Operation::Decrypt), 30);
    assert_eq!(p.kms_calls, 30.0);
    assert_eq!(report.write_units_per_item, Some(1.0));
    assert!(p.legacy_refused.is_empty());
    assert_all_migrated(&db, 50).await;
}

#[tokio::test(start_paused = true)]
async fn a_legacy_item_that_does_not_verify_is_refused_and_left_as_it_was() {
    let world = kms_world();
    let db = legacy_table(&world, 10).await;
    // A signed attribute changed after signing; an item under a key that is not the table's MRK.
    let mut tampered = find(&db, "customer-00003").unwrap();
    tampered.insert("tier".into(), s("platinum"));
    db.put_raw(TABLE, tampered.clone()).unwrap();
    let other_key = legacy_item_under(&world, OTHER_MRK_E1, &plain(4)).await;
    db.put_raw(TABLE, other_key.clone()).unwrap();
    let kms = counting_kms(&world);
    // Two throttled `Decrypt`s are retried; a key that stays unavailable fails the item without refusing it.
    kms.fail_next(Operation::Decrypt, 2, "ThrottlingException", 400);

    let report = backfill_to(db.clone(), legacy_target(kms.clone(), true), config("w1")).await;
    let p = &report.progress;
    assert_eq!(
        (p.count("migrated_legacy"), p.count("legacy_refused")),
        (8, 2),
        "{:?}",
        p.outcomes
    );
    assert_eq!(
        p.legacy_refused["integrity_failed"]["signature_invalid"], 1,
        "{:?}",
        p.legacy_refused
    );
    assert_eq!(
        p.legacy_refused["key_not_mrk"].values().sum::<u64>(),
        1,
        "{:?}",
        p.legacy_refused
    );
    assert_eq!(report.samples["legacy_refused"].len(), 2);
    assert_eq!(report.failed(), 2, "a refusal counts as a failed item");
    // Left byte for byte as they were.
    assert_eq!(find(&db, "customer-00003").unwrap(), tampered);
    assert_eq!(find(&db, "customer-00004").unwrap(), other_key);
    assert!(find(&db, "customer-00005").unwrap().contains_key(HEAD));

    // A replica key that cannot be used: `failed` with the reason, the item untouched, for a later run.
    let db = legacy_table(&world, 3).await;
    let before = db.items(TABLE);
    let kms = counting_kms(&world);
    kms.fail_next(Operation::Decrypt, 3, "DisabledException", 400);
    let report = backfill_to(db.clone(), legacy_target(kms, true), config("w1")).await;
    assert_eq!(report.progress.count("failed"), 3, "{:?}", report.progress.outcomes);
    assert_eq!(report.progress.count("legacy_refused"), 0);
    assert!(before.iter().all(|i| db.items(TABLE).contains(i)));
}

#[tokio::test(start_paused = true)]
async fn a_concurrent_application_write_to_a_legacy_item_always_wins() {
    let world = kms_world();
    let db = legacy_table(&world, 20).await;
    let plan = HashMap::from([
        // Still on the legacy client: the new legacy item is migrated from its new value.
        ("customer-00001".to_owned(), (1, Interference::LegacyWrite)),
        // Moved to plaintext: encrypted from its new value.
        ("customer-00002".to_owned(), (1, Interference::PlaintextWrite)),
        // Moved to the DB-ESDK: left as the application wrote it.
        ("customer-00003".to_owned(), (1, Interference::EncryptedWrite)),
        ("customer-00004".to_owned(), (1, Interference::Delete)),
        ("customer-00005".to_owned(), (99, Interference::LegacyWrite)),
    ]);
    let interfering = Interfering {
        inner: db.clone(),
        plan: Arc::new(Mutex::new(plan)),
        interfered: Arc::new(AtomicUsize::new(0)),
        world: Some(world.clone()),
    };
    let report = backfill_to(interfering, legacy_target(counting_kms(&world), true), config("w1")).await;
    let p = &report.progress;
    assert_eq!(
        (
            p.count("migrated_legacy"),
            p.count("encrypted"),
            p.count("encrypted_meanwhile"),
            p.count("deleted_meanwhile"),
            p.count("skipped_conflicts"),
        ),
        (16, 1, 1, 1, 1),
        "{:?}",
        p.outcomes
    );
    let email = |item: Item| async move {
        let d = decrypt_item(&table_config(), keyring().as_ref(), &table_item_to_item(&item).unwrap())
            .await
            .unwrap();
        d.item.get("email").cloned()
    };
    let changed = |i: usize| Some(ddbguard_dbe::AttributeValue::S(format!("changed-{i}@example.com")));
    for i in [1, 2, 3] {
        let item = find(&db, &format!("customer-{i:05}")).unwrap();
        assert!(!item.contains_key(LEGACY_DESC), "{i}");
        assert_eq!(email(item).await, changed(i), "{i}");
    }
    assert!(find(&db, "customer-00004").is_none());
    // Changed before every attempt: the application's last legacy item, left for a later run.
    let five = find(&db, "customer-00005").unwrap();
    assert!(five.contains_key(LEGACY_DESC) && !five.contains_key(HEAD));
    assert!(matches!(five.get("email"), Some(AttributeValue::B(_))));
}

const VERSION: &str = "version";

#[tokio::test(start_paused = true)]
async fn a_versioned_legacy_item_is_migrated_with_the_next_version_unless_the_application_wrote_one() {
    let world = kms_world();
    let db = table_with(0);
    let versioned = |i: usize| {
        let mut item = plain(i);
        item.insert(VERSION.into(), AttributeValue::N("3".into()));
        item
    };
    for i in 0..10 {
        db.put_raw(TABLE, legacy_item(&world, &versioned(i)).await).unwrap();
    }
    // The application writes customer-00002 between the engine's read and its write, with the version it
    // should (4); the engine's write, conditional on version 3, fails and the item is migrated from what the
    // application wrote.
    let interfering = Interfering {
        inner: db.clone(),
        plan: Arc::new(Mutex::new(HashMap::from([(
            "customer-00002".to_owned(),
            (1, Interference::VersionedLegacyWrite(4)),
        )]))),
        interfered: Arc::new(AtomicUsize::new(0)),
        world: Some(world.clone()),
    };
    let mut config_with_version = table_config();
    config_with_version
        .attribute_actions
        .insert(VERSION.into(), CryptoAction::SignOnly);
    let mut policy = VerifyPolicy::new(config_with_version.clone());
    policy.legacy = Some(LegacyPolicy {
        actions: legacy_actions(),
        table_name: TABLE.into(),
    });
    let provider = DirectKmsProvider::new(MRK_E1, counting_kms(&world), None).unwrap();
    let target = Target {
        judge: Judge::new(policy, keyring())
            .unwrap()
            .with_legacy_provider(Arc::new(provider)),
        version_attribute: Some(VERSION.into()),
        from_legacy: Some(FromLegacy {
            kms_calls_per_item: 1.0,
            calls_aws: true,
        }),
        ..target()
    };
    let report = backfill_to(interfering.clone(), target, config("w1")).await;
    assert_eq!(report.completion, Completion::Finished);
    assert_eq!(
        report.progress.count("migrated_legacy"),
        10,
        "{:?}",
        report.progress.outcomes
    );
    assert_eq!(interfering.interfered.load(Ordering::Relaxed), 1);
    for item in db.items(TABLE) {
        assert!(!item.contains_key(LEGACY_DESC) && item.contains_key(HEAD));
        let decrypted = decrypt_item(
            &config_with_version,
            keyring().as_ref(),
            &table_item_to_item(&item).unwrap(),
        )
        .await
        .unwrap()
        .item;
        let Some(AttributeValue::S(pk)) = item.get("pk") else {
            panic!("no pk")
        };
        let i: usize = pk.trim_start_matches("customer-").parse().unwrap();
        // The next version, signed inside the DB-ESDK item, and the values the last writer left.
        let mut expected = versioned(i);
        let version = if i == 2 {
            expected.insert("email".into(), s(&format!("changed-{i}@example.com")));
            "5"
        } else {
            "4"
        };
        expected.insert(VERSION.into(), AttributeValue::N(version.into()));
        assert_eq!(decrypted, table_item_to_item(&expected).unwrap(), "{pk}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_legacy_migration_resumes_and_skips_nothing() {
    let world = kms_world();
    let db = legacy_table(&world, 120).await;
    let (faulty, c) = slowed(&db);
    let kms = counting_kms(&world);
    let first = interrupted_after(faulty.clone(), legacy_target(kms.clone(), true), c.clone(), 3).await;
    assert_eq!(first.completion, Completion::Interrupted);
    let done_first = first.progress.count("migrated_legacy");
    assert!(done_first > 0 && done_first < 120, "{done_first}");

    let second = backfill_to(faulty, legacy_target(kms.clone(), true), c).await;
    assert_eq!(second.completion, Completion::Finished);
    assert_eq!(done_first + second.progress.count("migrated_legacy"), 120);
    // The pages the first run was in are scanned again: their migrated items are DB-ESDK items now.
    assert_eq!(
        second.progress.count("already_encrypted"),
        second.progress.scanned - second.progress.count("migrated_legacy")
    );
    assert_eq!(kms.calls(Operation::Decrypt), 120, "no item was judged twice");
    assert_all_migrated(&db, 120).await;
}

#[tokio::test]
async fn a_legacy_write_back_pins_the_item_read_and_removes_the_legacy_attributes() {
    let world = kms_world();
    let read = legacy_item(&world, &plain(1)).await;
    let encrypted = item_to_table_item(
        &ddbguard_dbe::encrypt_item(
            &table_config(),
            keyring().as_ref(),
            &table_item_to_item(&plain(1)).unwrap(),
        )
        .await
        .unwrap(),
    );
    let target = legacy_target(counting_kms(&world), true);
    let Condition::And(all) = write_condition(&target, &read) else {
        panic!("not a conjunction")
    };
    for name in [HEAD, FOOT] {
        assert!(all.contains(&Condition::not_exists(name)), "{name}");
    }
    for name in [LEGACY_DESC, LEGACY_SIG, "ssn", "tier"] {
        assert!(all.contains(&Condition::equals(name, read[name].clone())), "{name}");
    }
    let update = write_update(&target, &read, &encrypted);
    let expected = Update::new()
        .set(FOOT, encrypted[FOOT].clone())
        .set(HEAD, encrypted[HEAD].clone())
        .set("email", encrypted["email"].clone())
        .set("ssn", encrypted["ssn"].clone())
        .remove(LEGACY_DESC)
        .remove(LEGACY_SIG);
    assert_eq!(update, expected);

    // With a version attribute only the version is compared.
    let versioned = Target {
        version_attribute: Some("version".into()),
        ..target
    };
    let Condition::And(all) = write_condition(&versioned, &read) else {
        panic!("not a conjunction")
    };
    assert_eq!(all.len(), 5);
    assert!(all.contains(&Condition::not_exists("version")));
    // The legacy description and signature stay pinned: a legacy writer that does not bump the version still
    // makes a new signature.
    for name in [LEGACY_DESC, LEGACY_SIG] {
        assert!(all.contains(&Condition::equals(name, read[name].clone())), "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn migrating_legacy_items_needs_a_judge_that_opens_them() {
    let db = table_with(1);
    let without_provider = Target {
        from_legacy: Some(FromLegacy {
            kms_calls_per_item: 1.0,
            calls_aws: true,
        }),
        ..target()
    };
    let err = run(
        db.clone(),
        without_provider,
        config("w1"),
        |_| {},
        std::future::pending::<()>(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("legacy policy and materials provider"),
        "{err}"
    );
    assert!(db.items(LEDGER).is_empty(), "refused before anything was written");
}
