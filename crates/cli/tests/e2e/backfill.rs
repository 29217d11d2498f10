//! `ddbguard backfill` and `ddbguard migrate` end to end, with the built binary against the local two-region
//! environment: plaintext items of every attribute type encrypted in us-east-1 while an application writes (no
//! write lost), a SIGKILLed run resumed, two processes sharing one job, `migrate plan|apply|status` (a second
//! apply changes nothing), the replica in ap-southeast-2 identical afterwards, legacy DynamoDB Encryption Client
//! items migrated with `--from-legacy` (a tampered one refused and left as it was), and bad input refused with
//! exit 2 before anything is written.

use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_smithy_types::Blob;
use ddbguard_dbe::{AlgorithmSuite, CryptoAction, Keyring, TableConfig, decrypt_item, encrypt_item};
use ddbguard_e2e::{LocalAws, PRIMARY_REGION, REPLICA_REGION, batch_write, unique_name};
use ddbguard_keys::RawAesKeyring;
use ddbguard_verify::convert::{item_to_table_item, table_item_to_item};
use serde_json::{Value, json};

use crate::cli::{Run, TempDir, ddbguard};

type SdkItem = HashMap<String, AttributeValue>;

/// The raw AES key of these tests (bytes 0..=31), base64.
const RAW_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Attributes of the test items and their actions: every DynamoDB type, nested, and unicode names.
const ACTIONS: &[(&str, &str)] = &[
    ("pk", "SIGN_ONLY"),
    ("ssn", "ENCRYPT_AND_SIGN"),
    ("n_max", "ENCRYPT_AND_SIGN"),
    ("n_min", "ENCRYPT_AND_SIGN"),
    ("n_tiny", "SIGN_ONLY"),
    ("n_neg_tiny", "ENCRYPT_AND_SIGN"),
    ("blob", "ENCRYPT_AND_SIGN"),
    ("flag", "SIGN_ONLY"),
    ("nothing", "ENCRYPT_AND_SIGN"),
    ("profile", "ENCRYPT_AND_SIGN"),
    ("history", "ENCRYPT_AND_SIGN"),
    ("tags", "ENCRYPT_AND_SIGN"),
    ("scores", "SIGN_ONLY"),
    ("blobs", "ENCRYPT_AND_SIGN"),
    ("名前", "ENCRYPT_AND_SIGN"),
    ("ünïcödé 🔑", "SIGN_ONLY"),
    ("version", "SIGN_ONLY"),
];

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_owned())
}

/// Plaintext item `i` with every attribute type; `generation` changes its values (an application write).
fn item(i: usize, generation: u32) -> SdkItem {
    let nested = AttributeValue::M(HashMap::from([
        ("street".to_owned(), s(&format!("{i} Main St"))),
        (
            "geo".to_owned(),
            AttributeValue::L(vec![n("-33.8688"), n("151.2093"), AttributeValue::Null(true)]),
        ),
        (
            "deep".to_owned(),
            AttributeValue::M(HashMap::from([(
                "list".to_owned(),
                AttributeValue::L(vec![AttributeValue::Bool(true), AttributeValue::M(HashMap::new())]),
            )])),
        ),
    ]));
    HashMap::from([
        ("pk".to_owned(), s(&format!("customer-{i:05}"))),
        ("ssn".to_owned(), s(&format!("123-45-{i:04}-g{generation}"))),
        ("n_max".to_owned(), n("9.9999999999999999999999999999999999999E+125")),
        ("n_min".to_owned(), n("-9.9999999999999999999999999999999999999E+125")),
        ("n_tiny".to_owned(), n("1E-130")),
        ("n_neg_tiny".to_owned(), n("-1E-130")),
        (
            "blob".to_owned(),
            AttributeValue::B(Blob::new(vec![0u8, 255, i as u8, generation as u8])),
        ),
        ("flag".to_owned(), AttributeValue::Bool(i.is_multiple_of(2))),
        ("nothing".to_owned(), AttributeValue::Null(true)),
        ("profile".to_owned(), nested),
        (
            "history".to_owned(),
            AttributeValue::L(vec![s("a"), n("1"), AttributeValue::L(vec![s("nested")])]),
        ),
        (
            "tags".to_owned(),
            AttributeValue::Ss(vec!["gold".into(), format!("t{i}")]),
        ),
        (
            "scores".to_owned(),
            AttributeValue::Ns(vec!["1".into(), "-0.5".into(), "1E+10".into()]),
        ),
        (
            "blobs".to_owned(),
            AttributeValue::Bs(vec![Blob::new(vec![1u8]), Blob::new(vec![2u8, 3])]),
        ),
        ("名前".to_owned(), s("山田 太郎")),
        ("ünïcödé 🔑".to_owned(), s("value ✓")),
        ("version".to_owned(), n(&generation.to_string())),
    ])
}

fn table_config(table: &str) -> TableConfig {
    TableConfig {
        logical_table_name: table.to_owned(),
        partition_key: "pk".into(),
        sort_key: None,
        attribute_actions: ACTIONS
            .iter()
            .map(|(a, action)| ((*a).to_owned(), action.parse::<CryptoAction>().expect("action")))
            .collect(),
        allowed_unsigned_attributes: Default::default(),
        allowed_unsigned_attribute_prefix: Some("aws:rep:".into()),
        algorithm_suite: AlgorithmSuite::EcdsaP384,
    }
}

fn raw_keyring() -> RawAesKeyring {
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    for (i, b) in key.iter_mut().enumerate() {
        *b = i as u8;
    }
    RawAesKeyring::new("ops", "backfill", key)
}

const RAW_AES: &str = "kind = \"raw-aes\"\nkey_namespace = \"ops\"\nkey_name = \"backfill\"\nkey_base64 = \"@KEY@\"";

/// A config for `table` run in `region`; `table_extra` goes into the `[[tables]]` entry, `keyring` into its
/// keyring section, `top` before `[[tables]]`.
fn config(region: &str, endpoint: &str, table: &str, table_extra: &str, keyring: &str, top: &str) -> String {
    let actions: String = ACTIONS
        .iter()
        .map(|(a, action)| format!("\"{a}\" = \"{action}\"\n"))
        .collect();
    format!(
        "[aws]\nregion = \"{region}\"\nregions = [\"{PRIMARY_REGION}\", \"{REPLICA_REGION}\"]\nendpoint_url = \"{endpoint}\"\n\
         [backfill]\nledger_table = \"{table}-ledger\"\n{top}\n\
         [[tables]]\nname = \"{table}\"\npartition_key = \"pk\"\nallowed_unsigned_attribute_prefix = \"aws:rep:\"\n{table_extra}\n\
         [tables.attribute_actions]\n{actions}\n[tables.keyring]\n{}\n",
        keyring.replace("@KEY@", RAW_KEY)
    )
}

/// Every item of `table` in `region` (consistent scan), by `pk`.
async fn scan_all(env: &LocalAws, region: &str, table: &str) -> anyhow::Result<HashMap<String, SdkItem>> {
    let ddb = env.dynamodb(region).await;
    let mut out = HashMap::new();
    let mut start = None;
    loop {
        let page = ddb
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        for item in page.items() {
            let pk = match item.get("pk") {
                Some(AttributeValue::S(pk)) => pk.clone(),
                other => anyhow::bail!("item without pk: {other:?}"),
            };
            out.insert(pk, item.clone());
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return Ok(out);
        }
    }
}

/// A table with a stream (and a replica in ap-southeast-2) holding plaintext items `0..count`.
async fn seeded_table(env: &LocalAws, test: &str, count: usize) -> anyhow::Result<String> {
    let table = unique_name("bf", test);
    env.create_global_table(&table).await?;
    batch_write(
        &env.dynamodb(PRIMARY_REGION).await,
        &table,
        (0..count).map(|i| item(i, 0)).collect(),
    )
    .await?;
    Ok(table)
}

/// A running `ddbguard` process; killed and reaped if the test fails before waiting for it.
struct Proc(Option<Child>);

impl Proc {
    fn kill(&mut self) {
        if let Some(child) = self.0.as_mut() {
            child.kill().expect("killing ddbguard");
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `ddbguard backfill` as a child process (stdout and stderr piped).
fn spawn_backfill(config: &str, table: &str, extra: &[&str]) -> Proc {
    crate::cli::command()
        .args(["backfill", "--config", config, "--table", table])
        .args(extra)
        .env("DDBGUARD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(|c| Proc(Some(c)))
        .expect("spawning ddbguard backfill")
}

fn wait(mut proc: Proc) -> Run {
    let child = proc.0.take().expect("a running process");
    let out = child.wait_with_output().expect("waiting for ddbguard");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn count(report: &Value, outcome: &str) -> u64 {
    report["progress"]["outcomes"][outcome].as_u64().unwrap_or(0)
}

/// `value` with numbers normalized (the DB-ESDK stores encrypted numbers normalized, as DynamoDB compares them)
/// and sets sorted (sets have no order).
fn canon(value: &AttributeValue) -> AttributeValue {
    let number = |n: &String| ddbguard_dbe::normalize_number(n).unwrap_or_else(|e| panic!("{n}: {e}"));
    match value {
        AttributeValue::N(x) => AttributeValue::N(number(x)),
        AttributeValue::Ns(xs) => {
            let mut v: Vec<String> = xs.iter().map(number).collect();
            v.sort();
            AttributeValue::Ns(v)
        }
        AttributeValue::Ss(xs) => {
            let mut v = xs.clone();
            v.sort();
            AttributeValue::Ss(v)
        }
        AttributeValue::Bs(xs) => {
            let mut v = xs.clone();
            v.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
            AttributeValue::Bs(v)
        }
        AttributeValue::L(xs) => AttributeValue::L(xs.iter().map(canon).collect()),
        AttributeValue::M(m) => AttributeValue::M(canon_item(m)),
        other => other.clone(),
    }
}

fn canon_item(item: &SdkItem) -> SdkItem {
    item.iter().map(|(k, v)| (k.clone(), canon(v))).collect()
}

/// Decrypts every item of `items` and compares it with `expected` (by pk); returns how many were encrypted.
async fn assert_decrypt_to(table: &str, items: &HashMap<String, SdkItem>, expected: &HashMap<String, SdkItem>) {
    let config = table_config(table);
    let keyring = raw_keyring();
    assert_eq!(items.len(), expected.len());
    for (pk, stored) in items {
        assert!(stored.contains_key("aws_dbe_head"), "{pk} is not encrypted");
        let decrypted = decrypt_item(&config, &keyring as &dyn Keyring, &table_item_to_item(stored).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{pk} does not decrypt: {e}"));
        let mut plain = item_to_table_item(&decrypted.item);
        plain.retain(|k, _| !k.starts_with("aws:rep:"));
        assert_eq!(
            canon_item(&plain),
            canon_item(expected.get(pk).expect("expected item")),
            "{pk}"
        );
    }
}

/// 5,000 plaintext items of every attribute type are encrypted in us-east-1 while an application changes 200 of
/// them (100 plaintext writes, 100 DB-ESDK writes): every item decrypts to its latest value (no write lost),
/// and the replica in ap-southeast-2 holds identical items.
#[tokio::test]
async fn every_item_is_encrypted_and_no_application_write_is_lost() -> anyhow::Result<()> {
    const ITEMS: usize = 5000;
    let env = LocalAws::shared();
    let t0 = Instant::now();
    let table = seeded_table(env, "all-types", ITEMS).await?;
    eprintln!("timing: seeded in {:?}", t0.elapsed());
    let dir = TempDir::new("backfill-all-types");
    let cfg = dir.write(
        "c.toml",
        &config(
            PRIMARY_REGION,
            env.endpoint(),
            &table,
            &format!("home_region = \"{PRIMARY_REGION}\""),
            RAW_AES,
            "",
        ),
    );
    let child = spawn_backfill(&cfg, &table, &["--segments", "8"]);

    // The application, during the run: even items get a plaintext write, odd ones an encrypted write.
    let ddb = env.dynamodb(PRIMARY_REGION).await;
    let mut expected: HashMap<String, SdkItem> = (0..ITEMS).map(|i| (format!("customer-{i:05}"), item(i, 0))).collect();
    let keyring = raw_keyring();
    let tc = table_config(&table);
    for k in 0..200 {
        let i = k * (ITEMS / 200) + 7;
        let new = item(i, 1);
        let stored = if k % 2 == 0 {
            new.clone()
        } else {
            let encrypted = encrypt_item(&tc, &keyring as &dyn Keyring, &table_item_to_item(&new).unwrap()).await?;
            item_to_table_item(&encrypted)
        };
        ddb.put_item().table_name(&table).set_item(Some(stored)).send().await?;
        expected.insert(format!("customer-{i:05}"), new);
    }
    let first = wait(child);
    assert_eq!(first.code, 0, "{}\n{}", first.stderr, first.stdout);
    let report = first.json();
    eprintln!("timing: first run done at {:?}: {}", t0.elapsed(), report["progress"]);
    assert_eq!(report["completion"], "finished");
    assert_eq!(report["progress"]["segments_finished"], 8);
    // Plaintext writes that landed after their item was encrypted are plaintext again: a second pass of the
    // same job (as the migration procedure prescribes) encrypts them, and only them.
    let second = ddbguard(&["backfill", "--config", &cfg, "--table", &table, "--restart"], "");
    assert_eq!(second.code, 0, "{}", second.stderr);
    let again = second.json();
    assert!(count(&again, "encrypted") <= 100, "{again}");
    assert_eq!(
        count(&again, "already_encrypted") + count(&again, "encrypted"),
        ITEMS as u64,
        "{again}"
    );

    eprintln!("timing: second run done at {:?}: {}", t0.elapsed(), again["progress"]);
    let primary = scan_all(env, PRIMARY_REGION, &table).await?;
    assert_decrypt_to(&table, &primary, &expected).await;
    eprintln!("timing: decrypted at {:?}", t0.elapsed());

    // The replica converges to the same items.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let replica = scan_all(env, REPLICA_REGION, &table).await?;
        let strip = |m: &HashMap<String, SdkItem>| -> HashMap<String, SdkItem> {
            m.iter()
                .map(|(k, v)| {
                    let mut v = v.clone();
                    v.retain(|a, _| !a.starts_with("aws:rep:"));
                    (k.clone(), v)
                })
                .collect()
        };
        if strip(&replica) == strip(&primary) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica did not converge: {} items",
            replica.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// A run killed with SIGKILL mid-run and restarted finishes; every item is encrypted exactly once: what the
/// killed run encrypted, the restart counts as already encrypted, and the two add up to the table.
#[tokio::test]
async fn a_killed_run_resumes_and_encrypts_every_item_exactly_once() -> anyhow::Result<()> {
    const ITEMS: usize = 400;
    let env = LocalAws::shared();
    let table = seeded_table(env, "sigkill", ITEMS).await?;
    let dir = TempDir::new("backfill-sigkill");
    // One worker id across the restart: the new process takes over its earlier incarnation's leases at once.
    let top = "[verify]\nworker_id = \"backfill-e2e\"\n";
    let cfg = dir.write(
        "c.toml",
        &config(PRIMARY_REGION, env.endpoint(), &table, "", RAW_AES, top),
    );
    let slow = [
        "--region",
        PRIMARY_REGION,
        "--segments",
        "4",
        "--write-units-per-second",
        "40",
    ];
    let mut child = spawn_backfill(&cfg, &table, &slow);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = scan_all(env, PRIMARY_REGION, &table)
            .await?
            .values()
            .filter(|i| i.contains_key("aws_dbe_head"))
            .count();
        if done >= 60 {
            break;
        }
        assert!(Instant::now() < deadline, "the run encrypted nothing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill();
    let killed = wait(child);
    assert_eq!(killed.code, -1, "killed by a signal");
    // Requests the process sent before it died may still be applied (moto finishes a request it received even
    // when the client is gone, later on a loaded machine): count once the number has stopped moving.
    let mut encrypted_before = u64::MAX;
    let mut unchanged_since = Instant::now();
    let settle_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = scan_all(env, PRIMARY_REGION, &table)
            .await?
            .values()
            .filter(|i| i.contains_key("aws_dbe_head"))
            .count() as u64;
        if now != encrypted_before {
            encrypted_before = now;
            unchanged_since = Instant::now();
        } else if unchanged_since.elapsed() >= Duration::from_secs(3) {
            break;
        }
        assert!(
            Instant::now() < settle_deadline,
            "the killed run's writes kept landing for 30 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(encrypted_before < ITEMS as u64, "the run finished before the kill");

    let resumed = ddbguard(
        &[
            "backfill",
            "--config",
            &cfg,
            "--table",
            &table,
            "--region",
            PRIMARY_REGION,
            "--segments",
            "4",
        ],
        "",
    );
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let report = resumed.json();
    assert_eq!(count(&report, "encrypted") + encrypted_before, ITEMS as u64, "{report}");
    // Resumed pages start at their checkpoints: at most the pages in flight at the kill are read again.
    assert!(count(&report, "already_encrypted") <= encrypted_before, "{report}");
    let expected = (0..ITEMS).map(|i| (format!("customer-{i:05}"), item(i, 0))).collect();
    assert_decrypt_to(&table, &scan_all(env, PRIMARY_REGION, &table).await?, &expected).await;
    Ok(())
}

/// Two processes on one table split the segments and together finish, each item encrypted by one of them.
#[tokio::test]
async fn two_processes_split_the_segments_and_together_finish() -> anyhow::Result<()> {
    const ITEMS: usize = 300;
    let env = LocalAws::shared();
    let table = seeded_table(env, "two", ITEMS).await?;
    let dir = TempDir::new("backfill-two");
    let cfg = dir.write(
        "c.toml",
        &config(
            PRIMARY_REGION,
            env.endpoint(),
            &table,
            &format!("home_region = \"{PRIMARY_REGION}\""),
            RAW_AES,
            "",
        ),
    );
    // Slow enough (moto reports half a unit per write: 20 items/s) that the second process is up before the first
    // could finish alone.
    let flags = [
        "--segments",
        "8",
        "--concurrency",
        "2",
        "--write-units-per-second",
        "10",
    ];
    let a = spawn_backfill(&cfg, &table, &flags);
    let b = spawn_backfill(&cfg, &table, &flags);
    let (a, b) = (wait(a), wait(b));
    assert_eq!((a.code, b.code), (0, 0), "{}\n{}", a.stderr, b.stderr);
    let (a, b) = (a.json(), b.json());
    assert_eq!(
        (a["completion"].as_str(), b["completion"].as_str()),
        (Some("finished"), Some("finished"))
    );
    let (ea, eb) = (count(&a, "encrypted"), count(&b, "encrypted"));
    assert!(ea > 0 && eb > 0, "one process did all the work: {ea} + {eb}");
    assert_eq!(ea + eb, ITEMS as u64);
    let expected = (0..ITEMS).map(|i| (format!("customer-{i:05}"), item(i, 0))).collect();
    assert_decrypt_to(&table, &scan_all(env, PRIMARY_REGION, &table).await?, &expected).await;
    Ok(())
}

/// `migrate plan` writes nothing and counts what `apply` then does; a second `apply` changes nothing; `status`
/// lists the migration as applied; an edited applied migration is refused, naming the file.
#[tokio::test]
async fn migrate_plans_applies_once_and_refuses_an_edited_migration() -> anyhow::Result<()> {
    const ITEMS: usize = 200;
    let env = LocalAws::shared();
    let table = seeded_table(env, "migrate", ITEMS).await?;
    let mrk = env.create_replicated_mrk("backfill migrate").await?;
    let dir = TempDir::new("backfill-migrate");
    let kms = format!("kind = \"kms-mrk\"\nkey_arn = \"{}\"", mrk.primary_arn);
    let cfg = dir.write("c.toml", &config(PRIMARY_REGION, env.endpoint(), &table, "", &kms, ""));
    let migrations = std::path::Path::new(&cfg).with_file_name("migrations");
    std::fs::create_dir_all(&migrations)?;
    let actions: String = ACTIONS
        .iter()
        .map(|(a, action)| format!("\"{a}\" = \"{action}\"\n"))
        .collect();
    let migration = format!("table = \"{table}\"\nhome_region = \"{PRIMARY_REGION}\"\n[attribute_actions]\n{actions}");
    let file = migrations.join("0001_encrypt_all.toml");
    std::fs::write(&file, &migration)?;
    let dir_arg = migrations.to_str().expect("UTF-8");
    let migrate = |op: &str| ddbguard(&["migrate", op, "--config", &cfg, "--migrations", dir_arg], "");

    let status = migrate("status");
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert_eq!(status.json()["migrations"][0]["state"], "pending");

    let plan = migrate("plan");
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let plan = plan.json()["migrations"][0]["plan"].clone();
    assert_eq!(count(&plan["report"], "would_encrypt"), ITEMS as u64, "{plan}");
    assert_eq!(plan["kms_calls"], ITEMS as f64, "{plan}");
    assert!(plan["write_units"].as_u64().unwrap_or(0) >= ITEMS as u64, "{plan}");
    assert!(plan["estimated_seconds"].as_f64().is_some(), "{plan}");
    assert!(
        plan["bytes_by_outcome"]["would_encrypt"].as_u64().unwrap_or(0) > 0,
        "{plan}"
    );
    let untouched = scan_all(env, PRIMARY_REGION, &table).await?;
    assert!(
        untouched.values().all(|i| !i.contains_key("aws_dbe_head")),
        "plan wrote"
    );

    let apply = migrate("apply");
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    let applied = apply.json()["migrations"][0].clone();
    assert_eq!(applied["applied_now"], true, "{applied}");
    assert_eq!(count(&applied["report"], "encrypted"), ITEMS as u64, "{applied}");
    assert_eq!(applied["report"]["progress"]["kms_calls"], ITEMS as f64, "{applied}");
    let after_first = scan_all(env, PRIMARY_REGION, &table).await?;
    assert!(after_first.values().all(|i| i.contains_key("aws_dbe_head")));

    let again = migrate("apply");
    assert_eq!(again.code, 0, "{}", again.stderr);
    let again = again.json()["migrations"][0].clone();
    assert_eq!(again["state"], "applied", "{again}");
    assert!(again.get("applied_now").is_none(), "{again}");
    assert_eq!(
        scan_all(env, PRIMARY_REGION, &table).await?,
        after_first,
        "a second apply changed items"
    );
    let status = migrate("status");
    assert_eq!(status.json()["migrations"][0]["state"], "applied");

    std::fs::write(&file, format!("{migration}# edited\n"))?;
    let edited = migrate("apply");
    assert_eq!(edited.code, 2, "{}", edited.stderr);
    assert!(
        edited.stderr.contains("0001_encrypt_all.toml") && edited.stderr.contains("changed"),
        "{}",
        edited.stderr
    );
    Ok(())
}

/// Bad input is refused with exit 2 and a one-line error naming the field, before anything is written: a config
/// naming a missing table, a keyring that cannot encrypt, a migration with an unknown action, a table without a
/// stream, and a run outside the table's home region.
#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_nothing_is_written() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let table = seeded_table(env, "bad", 20).await?;
    let dir = TempDir::new("backfill-bad");
    let ep = env.endpoint();
    let discovery = "kind = \"kms-mrk-discovery\"";
    let missing = unique_name("bf", "missing");
    // A table without a stream.
    let no_stream = unique_name("bf", "nostream");
    let ddb = env.dynamodb(PRIMARY_REGION).await;
    ddb.create_table()
        .table_name(&no_stream)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await?;
    batch_write(&ddb, &no_stream, (0..5).map(|i| item(i, 0)).collect()).await?;
    let cases = [
        (
            config(PRIMARY_REGION, ep, &missing, "", RAW_AES, ""),
            missing.as_str(),
            vec![],
            "`name`",
        ),
        (
            config(PRIMARY_REGION, ep, &table, "", discovery, ""),
            table.as_str(),
            vec![],
            "`keyring.kind`",
        ),
        (
            config(PRIMARY_REGION, ep, &no_stream, "", RAW_AES, ""),
            no_stream.as_str(),
            vec![],
            "no stream",
        ),
        (
            config(
                PRIMARY_REGION,
                ep,
                &table,
                &format!("home_region = \"{REPLICA_REGION}\""),
                RAW_AES,
                "",
            ),
            table.as_str(),
            vec![],
            "`home_region`",
        ),
        // A global table without a home region needs --region.
        (
            config(PRIMARY_REGION, ep, &table, "", RAW_AES, ""),
            table.as_str(),
            vec![],
            "`home_region`",
        ),
        // --from-legacy on a table without [tables.legacy] allowed = true.
        (
            config(
                PRIMARY_REGION,
                ep,
                &table,
                &format!("home_region = \"{PRIMARY_REGION}\""),
                RAW_AES,
                "",
            ),
            table.as_str(),
            vec!["--from-legacy"],
            "does not allow legacy items",
        ),
        // --region names another region than the table's home region.
        (
            config(
                PRIMARY_REGION,
                ep,
                &table,
                &format!("home_region = \"{PRIMARY_REGION}\""),
                RAW_AES,
                "",
            ),
            table.as_str(),
            vec!["--region", REPLICA_REGION, "--write-capacity-share", "0.5"],
            "`home_region`",
        ),
    ];
    for (i, (text, name, extra, field)) in cases.iter().enumerate() {
        let cfg = dir.write(&format!("c{i}.toml"), text);
        let mut args = vec!["backfill", "--config", cfg.as_str(), "--table", name];
        args.extend(extra.iter().copied());
        let run = ddbguard(&args, "");
        assert_eq!(run.code, 2, "case {i}: {}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1, "case {i}: {}", run.stderr);
        assert!(run.stderr.contains(field), "case {i}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "case {i}: {}", run.stdout);
    }
    // A migration with an unknown action.
    let cfg = dir.write("m.toml", &config(PRIMARY_REGION, ep, &table, "", RAW_AES, ""));
    let migrations = std::path::Path::new(&cfg).with_file_name("migrations");
    std::fs::create_dir_all(&migrations)?;
    std::fs::write(
        migrations.join("0001_bad.toml"),
        format!("table = \"{table}\"\n[attribute_actions]\npk = \"SIGN_ONLY\"\nssn = \"ENCRYPT\"\n"),
    )?;
    let run = ddbguard(
        &[
            "migrate",
            "apply",
            "--config",
            &cfg,
            "--migrations",
            migrations.to_str().expect("UTF-8"),
        ],
        "",
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("0001_bad.toml") && run.stderr.contains("attribute_actions.ssn"),
        "{}",
        run.stderr
    );
    // Nothing was written: every item is still plaintext, and no ledger table was made.
    for t in [&table, &no_stream] {
        let items = scan_all(env, PRIMARY_REGION, t).await?;
        assert!(
            !items.is_empty() && items.values().all(|i| !i.contains_key("aws_dbe_head")),
            "{t}"
        );
    }
    let ledger = ddb.describe_table().table_name(format!("{table}-ledger")).send().await;
    assert!(ledger.is_err(), "a ledger table was created");
    Ok(())
}

/// The attributes of [`item`] a legacy item carries here: the SIGN_ONLY numbers that DynamoDB would store
/// normalized are left out (the legacy clients sign numbers as given).
const LEGACY_ATTRIBUTES: &[&str] = &[
    "pk",
    "ssn",
    "blob",
    "flag",
    "nothing",
    "profile",
    "history",
    "tags",
    "blobs",
    "名前",
    "ünïcödé 🔑",
    "version",
];

fn legacy_plain(i: usize) -> SdkItem {
    let mut plain = item(i, 0);
    plain.retain(|name, _| LEGACY_ATTRIBUTES.contains(&name.as_str()));
    plain
}

/// The legacy client's actions for [`ACTIONS`] (what ddbguard's `[tables.legacy]` derives from the table's).
fn legacy_actions() -> ddbguard_ddbec::AttributeActions {
    use ddbguard_ddbec::{AttributeActions, LegacyAction};
    let mut actions = AttributeActions::new(LegacyAction::DoNothing);
    for (name, action) in ACTIONS {
        let legacy = match *action {
            "ENCRYPT_AND_SIGN" => LegacyAction::EncryptAndSign,
            "DO_NOTHING" => LegacyAction::DoNothing,
            _ => LegacyAction::SignOnly,
        };
        actions = actions.with(*name, legacy);
    }
    actions.with_key_attributes(["pk"])
}

/// 50 items written as the legacy client's direct KMS provider writes them (a data key per item from the local
/// KMS, under the MRK in us-east-1), one of them tampered with: `backfill --from-legacy` counts them in a dry run
/// without writing, then migrates the 49 that verify, which decrypt with ddbguard's own keyring to their original
/// values; the tampered one is refused (exit 1, verdict and reason in the report) and left byte for byte.
#[tokio::test]
async fn legacy_items_are_migrated_and_a_tampered_one_is_refused() -> anyhow::Result<()> {
    use ddbguard_ddbec::TableContext;
    use ddbguard_ddbec::fake::{direct_kms_context, seal_direct_kms};
    use ddbguard_keys::kms::{KmsApi as _, SdkKms};

    const ITEMS: usize = 50;
    const TAMPERED: &str = "customer-00007";
    let env = LocalAws::shared();
    let mrk = env.create_replicated_mrk("backfill from legacy").await?;
    let table = unique_name("bf", "legacy");
    env.create_global_table(&table).await?;
    let kms = SdkKms::new(env.kms(PRIMARY_REGION).await, PRIMARY_REGION);
    let context = TableContext {
        table_name: &table,
        partition_key: Some("pk"),
        sort_key: None,
    };
    let mut sealed = Vec::with_capacity(ITEMS);
    for i in 0..ITEMS {
        let plain = table_item_to_item(&legacy_plain(i))?;
        let ec = direct_kms_context(context, &plain)?;
        let data_key = kms.generate_data_key(&mrk.primary_arn, 32, &ec).await?;
        let item = seal_direct_kms(
            context,
            &plain,
            &legacy_actions(),
            &data_key.plaintext,
            &data_key.ciphertext,
        )?;
        let mut item = item_to_table_item(&item);
        if i == 7 {
            // A signed attribute changed after signing.
            item.insert("flag".into(), AttributeValue::Bool(i % 2 != 0));
        }
        sealed.push(item);
    }
    let ddb = env.dynamodb(PRIMARY_REGION).await;
    batch_write(&ddb, &table, sealed).await?;
    let before = scan_all(env, PRIMARY_REGION, &table).await?;

    let dir = TempDir::new("backfill-legacy");
    let keyring = format!("kind = \"kms-mrk\"\nkey_arn = \"{}\"", mrk.primary_arn);
    let extra = format!("home_region = \"{PRIMARY_REGION}\"\n[tables.legacy]\nallowed = true");
    let cfg = dir.write(
        "c.toml",
        &config(PRIMARY_REGION, env.endpoint(), &table, &extra, &keyring, ""),
    );

    let dry = ddbguard(
        &[
            "backfill",
            "--config",
            &cfg,
            "--table",
            &table,
            "--from-legacy",
            "--dry-run",
        ],
        "",
    );
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let plan = dry.json();
    // The aws-kms provider needs KMS to verify: a dry run checks the structure only, which the tampered item has.
    assert_eq!(count(&plan, "would_migrate_legacy"), ITEMS as u64, "{plan}");
    assert_eq!(plan["limits"]["legacy_kms_calls_per_item"], 1.0, "{plan}");
    assert_eq!(
        scan_all(env, PRIMARY_REGION, &table).await?,
        before,
        "a dry run writes nothing"
    );

    let run = ddbguard(&["backfill", "--config", &cfg, "--table", &table, "--from-legacy"], "");
    assert_eq!(run.code, 1, "a refused item fails the run: {}", run.stderr);
    let report = run.json();
    assert_eq!(
        (count(&report, "migrated_legacy"), count(&report, "legacy_refused")),
        (ITEMS as u64 - 1, 1),
        "{report}"
    );
    assert_eq!(
        report["progress"]["legacy_refused"]["integrity_failed"]["signature_invalid"], 1,
        "{report}"
    );
    assert_eq!(report["samples"]["legacy_refused"][0]["pk"]["S"], TAMPERED, "{report}");
    // One Decrypt (legacy data key) and one GenerateDataKey (kms-mrk keyring) per migrated item, and the Decrypt
    // of the refused one.
    assert_eq!(
        report["progress"]["kms_calls"],
        2.0 * (ITEMS as f64 - 1.0) + 1.0,
        "{report}"
    );

    let mut after = scan_all(env, PRIMARY_REGION, &table).await?;
    assert_eq!(
        after.remove(TAMPERED),
        before.get(TAMPERED).cloned(),
        "the refused item is untouched"
    );
    for (pk, stored) in &after {
        assert!(
            !stored.contains_key("*amzn-ddb-map-desc*") && !stored.contains_key("*amzn-ddb-map-sig*"),
            "{pk} keeps legacy attributes"
        );
    }
    let expected: HashMap<String, SdkItem> = (0..ITEMS)
        .map(|i| (format!("customer-{i:05}"), legacy_plain(i)))
        .filter(|(pk, _)| pk != TAMPERED)
        .collect();
    assert_decrypt_kms(&table, &after, &expected, env, &mrk.primary_arn).await?;

    // The audit tells the formats apart: every migrated item a DB-ESDK item, the refused one still legacy.
    let audit = ddbguard(&["audit", "--config", &cfg, "--table", &table], "");
    assert_eq!(audit.code, 1, "{audit:#?}");
    assert_eq!(
        audit.json()["by_format"],
        json!({"dbesdk": {"ok": ITEMS - 1}, "ddbec": {"integrity_failed": 1}}),
        "{audit:#?}"
    );
    Ok(())
}

/// [`assert_decrypt_to`] with the table's kms-mrk keyring in us-east-1.
async fn assert_decrypt_kms(
    table: &str,
    items: &HashMap<String, SdkItem>,
    expected: &HashMap<String, SdkItem>,
    env: &LocalAws,
    key_arn: &str,
) -> anyhow::Result<()> {
    use ddbguard_keys::kms::{MrkKeyring, SdkKms};
    let kms = std::sync::Arc::new(SdkKms::new(env.kms(PRIMARY_REGION).await, PRIMARY_REGION));
    let keyring = MrkKeyring::new(key_arn, kms, None)?;
    let config = table_config(table);
    assert_eq!(items.len(), expected.len());
    for (pk, stored) in items {
        let decrypted = decrypt_item(&config, &keyring as &dyn Keyring, &table_item_to_item(stored)?)
            .await
            .map_err(|e| anyhow::anyhow!("{pk} does not decrypt: {e}"))?;
        let mut plain = item_to_table_item(&decrypted.item);
        plain.retain(|k, _| !k.starts_with("aws:rep:"));
        assert_eq!(canon_item(&plain), canon_item(&expected[pk]), "{pk}");
    }
    Ok(())
}
