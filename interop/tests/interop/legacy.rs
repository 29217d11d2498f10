//! `ddbguard backfill --from-legacy` (the binary) on the local AWS environment, and the official crate reading
//! the result: 2,000 items written as the legacy DynamoDB Encryption Client's direct KMS provider writes them
//! (one `GenerateDataKey` per item under a multi-Region key in us-east-1, through the local KMS) are migrated
//! while an application keeps rewriting 200 of them, half as plaintext and half as new legacy items. Afterwards
//! no item is in the legacy format, no application write is lost, and `aws-db-esdk`'s own MRK keyring — with no
//! legacy override — decrypts every item to the original values, or to the application's last ones.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue as Av;
use ddbguard_ddbec::fake::{direct_kms_context, seal_direct_kms};
use ddbguard_ddbec::{AttributeActions, LegacyAction, TableContext};
use ddbguard_e2e::{LocalAws, PRIMARY_REGION, REPLICA_REGION, batch_write, unique_name};
use ddbguard_keys::kms::{KmsApi as _, SdkKms};
use serde_json::Value;

use crate::cli::ddbguard_bin;
use crate::common::*;

const ITEMS: usize = 2_000;
/// Items the application rewrites during the run: even ones as plaintext, odd ones as new legacy items.
const REWRITTEN: usize = 200;
/// Legacy items sealed at once (each needs its own `GenerateDataKey`).
const SEALING_TASKS: usize = 8;

type SdkItem = HashMap<String, Av>;

/// The table's attribute actions, for the DB-ESDK (ddbguard's config and the official encryptor alike).
const ACTIONS: &[(&str, CryptoAction)] = &[
    ("pk", CryptoAction::SignOnly),
    ("ssn", CryptoAction::EncryptAndSign),
    ("email", CryptoAction::EncryptAndSign),
    ("profile", CryptoAction::EncryptAndSign),
    ("blob", CryptoAction::EncryptAndSign),
    ("tier", CryptoAction::SignOnly),
    ("scores", CryptoAction::SignOnly),
    ("note", CryptoAction::DoNothing),
];

fn table_config(table: &str) -> TableConfig {
    let mut cfg = TableConfig::new(table, "pk");
    cfg.algorithm_suite = AlgorithmSuite::EcdsaP384;
    cfg.allowed_unsigned_attributes = ["note".to_owned()].into();
    // Global tables of version 2017.11.29 add these; the local environment's replication may too.
    cfg.allowed_unsigned_attribute_prefix = Some("aws:rep:".to_owned());
    for (name, action) in ACTIONS {
        cfg.attribute_actions.insert((*name).to_owned(), *action);
    }
    cfg
}

/// What the legacy client was told: the same actions (ddbguard derives its `[tables.legacy]` ones from the
/// table's), anything else left alone.
fn legacy_actions() -> AttributeActions {
    let mut actions = AttributeActions::new(LegacyAction::DoNothing);
    for (name, action) in ACTIONS {
        let legacy = match action {
            CryptoAction::EncryptAndSign => LegacyAction::EncryptAndSign,
            CryptoAction::DoNothing => LegacyAction::DoNothing,
            _ => LegacyAction::SignOnly,
        };
        actions = actions.with(*name, legacy);
    }
    actions.with_key_attributes(["pk"])
}

/// Plaintext item `i`; `generation` > 0 is an application write.
fn plain(i: usize, generation: u32) -> Item {
    let s = |v: String| AttributeValue::S(v);
    Item::from([
        ("pk".to_owned(), s(format!("customer-{i:05}"))),
        ("ssn".to_owned(), s(format!("123-45-{i:04}-g{generation}"))),
        ("email".to_owned(), s(format!("c{i}.g{generation}@example.com"))),
        (
            "profile".to_owned(),
            AttributeValue::M(
                [
                    ("street".to_owned(), s(format!("{i} Main St"))),
                    (
                        "geo".to_owned(),
                        AttributeValue::L(vec![AttributeValue::N("151".into()), AttributeValue::Null]),
                    ),
                    ("vip".to_owned(), AttributeValue::Bool(i % 3 == 0)),
                ]
                .into(),
            ),
        ),
        (
            "blob".to_owned(),
            AttributeValue::B(vec![0, 255, i as u8, generation as u8]),
        ),
        ("tier".to_owned(), s(if i % 2 == 0 { "gold" } else { "silver" }.into())),
        (
            "scores".to_owned(),
            AttributeValue::Ns(vec!["1".into(), (i % 97 + 2).to_string(), "200".into()]),
        ),
        ("note".to_owned(), s(format!("note {i}"))),
    ])
}

/// The legacy client's writer: seals items with the direct KMS provider under `key_arn` in us-east-1.
#[derive(Clone)]
struct LegacyWriter {
    kms: Arc<SdkKms>,
    key_arn: String,
    table: String,
}

impl LegacyWriter {
    async fn seal(&self, plain: &Item) -> Result<SdkItem, String> {
        let table = TableContext {
            table_name: &self.table,
            partition_key: Some("pk"),
            sort_key: None,
        };
        let context = direct_kms_context(table, plain).map_err(|e| format!("encryption context: {e}"))?;
        let data_key = self
            .kms
            .generate_data_key(&self.key_arn, 32, &context)
            .await
            .map_err(|e| format!("GenerateDataKey: {e}"))?;
        let sealed = seal_direct_kms(
            table,
            plain,
            &legacy_actions(),
            &data_key.plaintext,
            &data_key.ciphertext,
        )
        .map_err(|e| format!("sealing: {e}"))?;
        Ok(to_official_item(&sealed))
    }
}

fn ddbguard_config(env: &LocalAws, table: &str, key_arn: &str) -> String {
    let actions: String = ACTIONS
        .iter()
        .map(|(name, action)| format!("{name} = \"{action}\"\n"))
        .collect();
    format!(
        r#"[aws]
region = "{PRIMARY_REGION}"
regions = ["{PRIMARY_REGION}", "{REPLICA_REGION}"]
endpoint_url = "{endpoint}"
kms_requests_per_second = 2000
[backfill]
ledger_table = "{table}-ledger"
[[tables]]
name = "{table}"
partition_key = "pk"
home_region = "{PRIMARY_REGION}"
algorithm_suite = "0x6701"
allowed_unsigned_attributes = ["note"]
allowed_unsigned_attribute_prefix = "aws:rep:"
[tables.attribute_actions]
{actions}
[tables.keyring]
kind = "kms-mrk"
key_arn = "{key_arn}"
[tables.legacy]
allowed = true
"#,
        endpoint = env.endpoint()
    )
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    wall: Duration,
}

impl Run {
    fn report(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("report is not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

fn backfill(config: &std::path::Path, table: &str, extra: &[&str]) -> std::process::Child {
    let mut command = Command::new(ddbguard_bin());
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|n| n.starts_with("AWS_") || n.starts_with("DDBGUARD_"))
        {
            command.env_remove(name);
        }
    }
    command
        .args(["backfill", "--config"])
        .arg(config)
        .args(["--table", table, "--from-legacy", "--segments", "8"])
        .args(["--read-units-per-second", "5000", "--write-units-per-second", "5000"])
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("DDBGUARD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", ddbguard_bin().display()))
}

fn wait(child: std::process::Child, started: Instant) -> Run {
    let out = child.wait_with_output().expect("waiting for ddbguard");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        wall: started.elapsed(),
    }
}

fn count(report: &Value, outcome: &str) -> u64 {
    report["progress"]["outcomes"][outcome].as_u64().unwrap_or(0)
}

async fn scan_all(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Result<HashMap<String, SdkItem>, String> {
    let mut out = HashMap::new();
    let mut start = None;
    loop {
        let page = ddb
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| format!("Scan: {e}"))?;
        for item in page.items() {
            let Some(Av::S(pk)) = item.get("pk") else {
                return Err(format!("an item without pk: {:?}", item.keys()));
            };
            out.insert(pk.clone(), item.clone());
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return Ok(out);
        }
    }
}

/// Seals items `0..ITEMS` (generation 0), [`SEALING_TASKS`] at a time.
async fn seal_all(writer: &LegacyWriter) -> Vec<SdkItem> {
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..SEALING_TASKS {
        let writer = writer.clone();
        tasks.spawn(async move {
            let mut sealed = Vec::new();
            for i in (t..ITEMS).step_by(SEALING_TASKS) {
                sealed.push(writer.seal(&plain(i, 0)).await.expect("sealing a legacy item"));
            }
            sealed
        });
    }
    let mut all = Vec::with_capacity(ITEMS);
    while let Some(done) = tasks.join_next().await {
        all.extend(done.expect("a sealing task"));
    }
    all
}

#[test]
fn backfill_from_legacy_migrates_2000_items_under_a_concurrent_writer_and_the_official_crate_reads_them() {
    runtime().block_on(async {
        let env = LocalAws::shared();
        let mrk = env
            .create_replicated_mrk("interop legacy migration")
            .await
            .expect("MRK");
        let table = unique_name("legacy", "from-legacy");
        env.create_global_table(&table).await.expect("global table");
        let ddb = env.dynamodb(PRIMARY_REGION).await;
        let kms = env.kms(PRIMARY_REGION).await;
        let writer = LegacyWriter {
            kms: Arc::new(SdkKms::new(kms.clone(), PRIMARY_REGION)),
            key_arn: mrk.primary_arn.clone(),
            table: table.clone(),
        };
        let t0 = Instant::now();
        batch_write(&ddb, &table, seal_all(&writer).await)
            .await
            .expect("writing the legacy items");
        eprintln!("timing: {ITEMS} legacy items sealed and written in {:?}", t0.elapsed());

        let dir = std::env::temp_dir().join(format!("ddbguard-interop-legacy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join("ddbguard.toml");
        std::fs::File::create(&config)
            .and_then(|mut f| f.write_all(ddbguard_config(env, &table, &mrk.primary_arn).as_bytes()))
            .expect("writing the config");

        // The application, during the run: the last write to each item is what the table must hold.
        let mut expected: HashMap<String, Item> =
            (0..ITEMS).map(|i| (format!("customer-{i:05}"), plain(i, 0))).collect();
        let started = Instant::now();
        // A KMS budget that holds the run to at least 2 × 2,000 / 150 ≈ 27 s, whatever the machine's speed, so the
        // writer (a few seconds) races it instead of finishing after it.
        let mut child = backfill(&config, &table, &["--kms-requests-per-second", "150"]);
        let mut during = 0;
        for k in 0..REWRITTEN {
            if child.try_wait().expect("polling ddbguard").is_none() {
                during += 1;
            }
            let i = k * (ITEMS / REWRITTEN) + 3;
            let new = plain(i, 1 + (k % 2) as u32);
            let stored = if k % 2 == 0 {
                to_official_item(&new)
            } else {
                writer.seal(&new).await.expect("sealing an application write")
            };
            ddb.put_item()
                .table_name(&table)
                .set_item(Some(stored))
                .send()
                .await
                .expect("an application write");
            expected.insert(format!("customer-{i:05}"), new);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let writer_done = started.elapsed();
        let first = wait(child, started);
        assert_eq!(first.code, 0, "{}\n{}", first.stderr, first.stdout);
        // Writes must race the run (the rest land after it, for the second pass). The local server is shared with
        // the run, so the writer manages only about 3 writes/s while it lasts (~90 of 200 measured): a fifth is
        // the bar, well below that and well above none.
        assert!(
            during >= REWRITTEN / 5,
            "only {during} of {REWRITTEN} writes while the run was on ({:.1} s)\n{}",
            first.wall.as_secs_f64(),
            first.stdout
        );
        let report = first.report();
        let p = &report["progress"];
        eprintln!(
            "measured: first pass {:.1} s wall ({:.1} s in the engine), {:.0} items/s, {} KMS calls, \
             writer finished at {:.1} s ({during} writes during the run); outcomes {}",
            first.wall.as_secs_f64(),
            p["elapsed_seconds"].as_f64().unwrap_or(0.0),
            p["items_per_second"].as_f64().unwrap_or(0.0),
            p["kms_calls"],
            writer_done.as_secs_f64(),
            p["outcomes"]
        );
        assert_eq!(report["completion"], "finished", "{report}");
        assert_eq!(p["scanned"], ITEMS as u64, "{report}");
        assert_eq!(
            count(&report, "legacy_refused") + count(&report, "failed"),
            0,
            "{report}"
        );
        assert!(
            count(&report, "migrated_legacy") >= (ITEMS - REWRITTEN) as u64,
            "every item the application left alone was migrated: {report}"
        );
        // The aws-kms provider's Decrypt and the kms-mrk keyring's GenerateDataKey, per migrated item.
        assert!(
            p["kms_calls"].as_f64().unwrap_or(0.0) >= 2.0 * (ITEMS - REWRITTEN) as f64,
            "{report}"
        );

        // Application writes that landed after their item was migrated are plaintext or legacy again: a new pass
        // of the job rewrites them, and only them.
        let started = Instant::now();
        let second = wait(backfill(&config, &table, &["--restart"]), started);
        assert_eq!(second.code, 0, "{}\n{}", second.stderr, second.stdout);
        let again = second.report();
        let redone = count(&again, "migrated_legacy") + count(&again, "encrypted");
        assert!(redone <= REWRITTEN as u64, "{again}");
        assert_eq!(count(&again, "already_encrypted") + redone, ITEMS as u64, "{again}");
        assert_eq!(
            again["progress"]["verdicts"]["ok_structural"],
            (ITEMS as u64 - redone),
            "{again}"
        );
        eprintln!(
            "measured: second pass {:.1} s wall, outcomes {}",
            second.wall.as_secs_f64(),
            again["progress"]["outcomes"]
        );

        // The official crate, with its plain MRK keyring and no legacy override, reads every item.
        let keyring = official::mpl()
            .expect("official material providers")
            .create_aws_kms_mrk_keyring()
            .kms_key_id(mrk.primary_arn.clone())
            .kms_client(kms.clone())
            .send()
            .await
            .expect("official CreateAwsKmsMrkKeyring");
        let cfg = table_config(&table);
        let client = official::client_with_keyring(&cfg, keyring).expect("official item encryptor");
        let stored = scan_all(&ddb, &table).await.expect("scanning the table");
        assert_eq!(stored.len(), ITEMS);
        let mut problems = Vec::new();
        for (pk, item) in &stored {
            if item.contains_key("*amzn-ddb-map-desc*") || item.contains_key("*amzn-ddb-map-sig*") {
                problems.push(format!("{pk}: still carries legacy attributes"));
                continue;
            }
            let plaintext = match official::decrypt_official_with(&client, item.clone()).await {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("{pk}: the official crate refuses it: {e}"));
                    continue;
                }
            };
            let mut got = from_official_item(&plaintext);
            got.retain(|name, _| !name.starts_with("aws:rep:"));
            if canon_item(&got) != canon_item(&expected[pk]) {
                problems.push(format!("{pk}: decrypts to other values than the last written"));
            }
        }
        let shown: Vec<&String> = problems.iter().take(10).collect();
        assert!(problems.is_empty(), "{} of {ITEMS} items: {shown:#?}", problems.len());
        std::fs::remove_dir_all(&dir).ok();
    });
}
