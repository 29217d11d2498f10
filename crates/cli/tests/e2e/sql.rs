//! The SQL side against the local Aurora stand-in (`ddbguard_e2e::aurora`): a PostgreSQL primary and a read-only
//! hot standby fed by streaming replication.
//!
//! - Rows written on the primary (clean, plaintext, under a single-region key, tampered, swapped between rows,
//!   NULL) get their verdicts from the audit on the standby; a disabled replica key is `key_unavailable`; with
//!   replay paused a new row is missing on the standby (`--compare-primary`) and found after resume.
//! - The backfill encrypts 5,000 plaintext rows with real AWS Encryption SDK messages while an application
//!   updates rows, is killed mid-run and resumed from its checkpoint, and every row decrypts to the value the
//!   application wrote last.
//!
//! - Rows whose ciphertexts the official Python AWS Encryption SDK wrote under the us-east-1 MRK (and a
//!   single-region key) get the same verdicts from `ddbguard sql audit` on the standby with the ap-southeast-2
//!   replica, through the local KMS; values `ddbguard sql backfill` encrypts there decrypt in the Python SDK with
//!   the replica (`scripts/local-aws.d/esdk_interop.py`).
//! - The binary backfills 5,000 rows under the MRK through the local KMS while the application writes plaintext
//!   and its own messages, survives a SIGKILL, and the Python SDK decrypts every row to the last value written.
//! - `ddbguard sql verify` on the standby counts verdicts on /metrics, reports the canary missing while replay is
//!   paused (one alert) and back after resume, and exits 0 on SIGTERM.
//! - TLS: `sslmode=verify-full` with the stand-in's CA connects; another CA fails, naming TLS.
//!
//! The library tests drive it directly (with the in-memory cipher and keyring); the binary's message-format
//! keyrings come from `ddbguard-keys`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ddbguard_dbe::Verdict;
use ddbguard_e2e::aurora::{self, AppWriter, LocalAurora};
use ddbguard_e2e::{LocalAws, PRIMARY_REGION, REPLICA_REGION, unique_name};
use ddbguard_esdk::fake::FakeKeyring;
use ddbguard_esdk::{DecryptOptions, EncryptOptions, Header};
use ddbguard_keys::kms::{MrkKeyring, SdkKms};
use ddbguard_sql::cipher::{EncryptionContext, FakeCipher, Stored, looks_like_message};
use ddbguard_sql::table::ContextTemplate;
use ddbguard_sql::{
    AuditConfig, BackfillConfig, BoundTable, Encoding, EsdkCipher, ProtectedColumn, SqlTable, ValueCipher,
};
use serde_json::{Value, json};

const MRK_US: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef";
const MRK_AP: &str = "arn:aws:kms:ap-southeast-2:111122223333:key/mrk-0123456789abcdef0123456789abcdef";
const SINGLE: &str = "arn:aws:kms:us-east-1:111122223333:key/11112222-3333-4444-5555-666677778888";

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn patients(name: &str) -> SqlTable {
    SqlTable {
        name: name.to_owned(),
        primary_key: vec!["id".into()],
        columns: vec![
            ProtectedColumn {
                name: "ssn".into(),
                encoding: Encoding::Base64,
            },
            ProtectedColumn {
                name: "scan".into(),
                encoding: Encoding::Bytea,
            },
        ],
        encryption_context: [("table", "patients"), ("column", "{column}"), ("id", "{row.id}")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), ContextTemplate::parse(v).unwrap()))
            .collect(),
        cursor_column: None,
    }
}

fn context(column: &str, id: i64) -> EncryptionContext {
    aurora::patients_context(column, id)
}

fn b64(message: Vec<u8>) -> String {
    match Stored::encode(message, Encoding::Base64) {
        Stored::Text(t) => t,
        Stored::Bytes(_) => unreachable!(),
    }
}

async fn create_table(client: &tokio_postgres::Client, name: &str) {
    aurora::create_patients(client, name).await.unwrap();
}

#[tokio::test]
async fn audit_gives_each_row_on_the_standby_its_verdict() {
    let env = LocalAurora::shared();
    let primary = env.connect(env.primary()).await.unwrap();
    let name = unique("patients");
    create_table(&primary, &name).await;
    let clean = |id: i64, col: &str| FakeCipher::message(MRK_US, &context(col, id), b"123-45-6789");
    let rows: Vec<(i64, Option<String>, Option<Vec<u8>>)> = vec![
        (1, Some(b64(clean(1, "ssn"))), Some(clean(1, "scan"))),
        (2, Some("123-45-6789".into()), None),
        (
            3,
            Some(b64(FakeCipher::message(SINGLE, &context("ssn", 3), b"x"))),
            None,
        ),
        (
            4,
            Some(b64({
                let mut m = clean(4, "ssn");
                m[12] ^= 0x10;
                m
            })),
            None,
        ),
        // Row 1's ciphertext copied into row 5: decrypts, but bound to id 1.
        (5, Some(b64(clean(1, "ssn"))), None),
        (6, None, None),
    ];
    for (id, ssn, scan) in &rows {
        primary
            .execute(&format!("INSERT INTO {name} VALUES ($1, $2, $3)"), &[id, ssn, scan])
            .await
            .unwrap();
    }
    env.wait_replayed(Duration::from_secs(30)).await.unwrap();

    let replica = env.connect(env.replica()).await.unwrap();
    let write = replica
        .execute(&format!("UPDATE {name} SET ssn = NULL WHERE id = 1"), &[])
        .await
        .unwrap_err();
    assert!(write.to_string().contains("read-only") || format!("{write:?}").contains("read-only"));

    let table = patients(&name);
    let bound = BoundTable::bind(&replica, &table).await.unwrap();
    let cipher = FakeCipher::new(MRK_AP);
    let config = AuditConfig {
        region: "ap-southeast-2".into(),
        page_size: 2,
        recheck_after: Duration::from_millis(200),
        ..AuditConfig::default()
    };
    let report = ddbguard_sql::audit(
        &replica,
        Some(&primary),
        &bound,
        &cipher,
        &config,
        std::future::pending(),
    )
    .await
    .unwrap();
    let verdicts: BTreeMap<(String, String), Verdict> = report
        .findings
        .iter()
        .map(|f| ((f.key["id"].as_str().unwrap().to_owned(), f.column.clone()), f.verdict))
        .collect();
    let expect = |id: &str, col: &str| verdicts.get(&(id.to_owned(), col.to_owned())).copied();
    assert_eq!(expect("1", "ssn"), None, "{report:?}");
    assert_eq!(expect("2", "ssn"), Some(Verdict::Plaintext));
    assert_eq!(expect("3", "ssn"), Some(Verdict::KeyNotMrk));
    assert_eq!(expect("4", "ssn"), Some(Verdict::IntegrityFailed));
    assert_eq!(expect("5", "ssn"), Some(Verdict::IntegrityFailed));
    assert_eq!(report.rows, 6);
    assert_eq!(report.records, 6, "five ssn values and one scan; NULLs are not values");
    assert_eq!(report.nulls, 6);
    assert_eq!(report.by_verdict[&Verdict::Ok], 2);
    assert!(!report.passed);
    let cmp = report.compare_primary.as_ref().unwrap();
    assert_eq!((cmp.primary_rows, cmp.missing_on_secondary, cmp.different), (6, 0, 0));

    // The ap-southeast-2 replica key disabled: nothing decrypts there.
    cipher.set_unavailable(true);
    let report = ddbguard_sql::audit(&replica, None, &bound, &cipher, &config, std::future::pending())
        .await
        .unwrap();
    // Row 1's two values and the copy in row 5 (the key is needed before the context can be read); the
    // tampered row 4 fails its integrity check first.
    assert_eq!(report.by_verdict.get(&Verdict::KeyUnavailable), Some(&3), "{report:?}");
    cipher.set_unavailable(false);

    // Replay paused: a row written on the primary is missing on the standby, and arrives after resume.
    env.set_replay_paused(true).unwrap();
    let result = async {
        primary
            .execute(
                &format!("INSERT INTO {name} VALUES (7, $1, NULL)"),
                &[&b64(clean(7, "ssn"))],
            )
            .await
            .unwrap();
        let report = ddbguard_sql::audit(
            &replica,
            Some(&primary),
            &bound,
            &cipher,
            &config,
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(
            report.compare_primary.as_ref().unwrap().missing_on_secondary,
            1,
            "{report:?}"
        );
        assert!(!report.passed);
    }
    .await;
    env.set_replay_paused(false).unwrap();
    let () = result;
    env.wait_replayed(Duration::from_secs(30)).await.unwrap();
    let report = ddbguard_sql::audit(
        &replica,
        Some(&primary),
        &bound,
        &cipher,
        &config,
        std::future::pending(),
    )
    .await
    .unwrap();
    let cmp = report.compare_primary.as_ref().unwrap();
    assert_eq!((cmp.missing_on_secondary, report.rows), (0, 7), "{report:?}");
}

#[tokio::test]
async fn canary_goes_missing_while_replay_is_paused_and_comes_back_after_resume() {
    use ddbguard_sql::canary;
    let env = LocalAurora::shared();
    let primary = env.connect(env.primary()).await.unwrap();
    let replica = env.connect(env.replica()).await.unwrap();
    let writer = FakeCipher::new(MRK_US);
    let reader = FakeCipher::new(MRK_AP);
    canary::ensure_table(&primary).await.unwrap();
    let mut watch = canary::Watch::new("us-east-1", Duration::from_secs(1));

    canary::write(&primary, &writer, "us-east-1").await.unwrap();
    env.wait_replayed(Duration::from_secs(30)).await.unwrap();
    let seen = canary::read(&replica, &reader, "us-east-1").await.unwrap();
    assert_eq!(seen.as_ref().map(|s| s.verdict), Some(Verdict::Ok), "{seen:?}");
    assert!(!watch.observe(seen.as_ref()), "{seen:?}");

    env.set_replay_paused(true).unwrap();
    let paused = async {
        for _ in 0..3 {
            canary::write(&primary, &writer, "us-east-1").await.unwrap();
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let seen = canary::read(&replica, &reader, "us-east-1").await.unwrap();
        assert_eq!(seen.as_ref().map(|s| s.seq), Some(1), "replay is paused: {seen:?}");
        assert!(watch.observe(seen.as_ref()), "the canary is overdue: {seen:?}");
    }
    .await;
    env.set_replay_paused(false).unwrap();
    let () = paused;
    canary::write(&primary, &writer, "us-east-1").await.unwrap();
    env.wait_replayed(Duration::from_secs(30)).await.unwrap();
    let seen = canary::read(&replica, &reader, "us-east-1").await.unwrap();
    assert_eq!(seen.as_ref().map(|s| s.seq), Some(5), "{seen:?}");
    assert!(!watch.observe(seen.as_ref()), "back after resume: {seen:?}");

    // The replica key disabled: the canary arrives but does not decrypt, which is missing too.
    reader.set_unavailable(true);
    let seen = canary::read(&replica, &reader, "us-east-1").await.unwrap();
    assert_eq!(seen.as_ref().map(|s| s.verdict), Some(Verdict::KeyUnavailable));
    assert!(watch.observe(seen.as_ref()));
}

fn esdk_cipher() -> EsdkCipher {
    EsdkCipher::new(
        Arc::new(FakeKeyring::new("aws-kms", "mrk", [9; 32])),
        DecryptOptions::default(),
        EncryptOptions::default(),
        0,
    )
}

#[tokio::test]
async fn backfill_encrypts_5000_rows_under_a_concurrent_writer_and_resumes_after_a_kill() {
    const ROWS: i64 = 5_000;
    let env = LocalAurora::shared();
    let primary = env.connect(env.primary()).await.unwrap();
    let name = unique("patients");
    create_table(&primary, &name).await;
    aurora::insert_plaintext(&primary, &name, ROWS, true).await.unwrap();
    let table = patients(&name);
    let bound = BoundTable::bind(&primary, &table).await.unwrap();
    let cipher = Arc::new(esdk_cipher());
    let config = BackfillConfig {
        job: unique("job"),
        page_size: 200,
        concurrency: 8,
        progress_interval: Duration::from_secs(3600),
        ..BackfillConfig::default()
    };

    // The application keeps writing new plaintext SSNs to random rows the whole time.
    let writer = AppWriter::spawn(env.connect(env.primary()).await.unwrap(), &name, ROWS, None);

    // First run: killed after a while (the task and its connection dropped mid-page).
    let started = Instant::now();
    let first = {
        let (primary, bound, cipher, config) = (
            env.connect(env.primary()).await.unwrap(),
            bound.clone(),
            cipher.clone(),
            config.clone(),
        );
        tokio::spawn(async move {
            ddbguard_sql::backfill(
                &primary,
                &bound,
                cipher.as_ref(),
                &config,
                &mut |_| {},
                std::future::pending(),
            )
            .await
        })
    };
    // Killed once a few pages are checkpointed, in the middle of the next.
    aurora::wait_for_checkpoint(&primary, &config.job, 600, Duration::from_secs(120), || {
        !first.is_finished()
    })
    .await
    .unwrap();
    first.abort();
    assert!(
        first.await.unwrap_err().is_cancelled(),
        "the first run finished before it could be killed"
    );

    // Restart: resumes from the checkpoint.
    let report = ddbguard_sql::backfill(
        &primary,
        &bound,
        cipher.as_ref(),
        &config,
        &mut |_| {},
        std::future::pending(),
    )
    .await
    .unwrap();
    let last_written = writer.stop().await.unwrap().last;
    eprintln!(
        "sql backfill: {} rows, resumed run {:?} in {:.1}s (both runs {:.1}s), {} application writes",
        ROWS,
        report.counts,
        report.elapsed_seconds,
        started.elapsed().as_secs_f64(),
        last_written.len()
    );
    assert!(report.resumed);
    assert!(
        report.counts.rows_scanned < ROWS as u64,
        "resumed, not started over: {report:?}"
    );
    assert_eq!(report.exit_code(), 0, "{report:?}");

    // Rows the application wrote after the scan passed them are plaintext again: a second job catches them.
    let second = BackfillConfig {
        job: unique("job"),
        ..config.clone()
    };
    let report = ddbguard_sql::backfill(
        &primary,
        &bound,
        cipher.as_ref(),
        &second,
        &mut |_| {},
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert_eq!(report.counts.rows_scanned, ROWS as u64);

    // Every value is a message that decrypts, bound to its row, to what the application wrote last.
    let rows = primary
        .query(&format!("SELECT id, ssn, scan FROM {name} ORDER BY id"), &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), ROWS as usize);
    for row in rows {
        let id: i64 = row.get(0);
        let ssn = Stored::Text(row.get(1));
        let scan = Stored::Bytes(row.get(2));
        let want = last_written.get(&id).cloned().unwrap_or_else(|| format!("ssn-{id}"));
        let bytes = ssn.message_bytes().unwrap();
        let opened = cipher
            .open(&bytes, &context("ssn", id))
            .await
            .unwrap_or_else(|v| panic!("row {id} ssn: {v}"));
        assert_eq!(
            String::from_utf8_lossy(&opened.plaintext),
            want,
            "row {id}: a write was lost"
        );
        let bytes = scan.message_bytes().unwrap();
        let opened = cipher
            .open(&bytes, &context("scan", id))
            .await
            .unwrap_or_else(|v| panic!("row {id} scan: {v}"));
        assert_eq!(&opened.plaintext[..], format!("scan-{id}").as_bytes());
    }
    // The finished job is not run again.
    let again = ddbguard_sql::backfill(
        &primary,
        &bound,
        cipher.as_ref(),
        &second,
        &mut |_| {},
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(again.already_finished);
}

/// The raw AES key of the binary's tests (bytes 0..=31), base64.
const RAW_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The application's cipher under the binary's raw AES key.
fn binary_cipher() -> EsdkCipher {
    let keyring = ddbguard_keys::RawAesKeyring::new(
        "ops",
        "aurora",
        zeroize::Zeroizing::new(std::array::from_fn(|i| i as u8)),
    );
    EsdkCipher::new(
        Arc::new(keyring),
        DecryptOptions::default(),
        EncryptOptions::default(),
        0,
    )
}

fn binary_config(env: &LocalAurora, table: &str, region: &str) -> String {
    let keyring =
        format!("kind = \"raw-aes\"\nkey_namespace = \"ops\"\nkey_name = \"aurora\"\nkey_base64 = \"{RAW_KEY}\"");
    aurora::patients_config(env, table, &format!("region = \"{region}\""), &keyring)
}

/// `ddbguard ARGS` against the stand-in: `config` in `DDBGUARD_CONFIG_TOML`, the clusters' password file in
/// `PGPASSFILE`.
fn sql_cli(args: &[&str], config: &str, passfile: &str) -> crate::cli::Run {
    crate::cli::ddbguard_with_env(args, "", &[("DDBGUARD_CONFIG_TOML", config), ("PGPASSFILE", passfile)])
}

/// [`sql_cli`] started in the background (warnings only in its log), its stdout and stderr piped or discarded.
fn sql_spawn(args: &[&str], config: &str, passfile: &str, piped: bool) -> std::process::Child {
    let output = || {
        if piped {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        }
    };
    crate::cli::command()
        .args(args)
        .env("DDBGUARD_CONFIG_TOML", config)
        .env("PGPASSFILE", passfile)
        .env("DDBGUARD_LOG", "warn")
        .stdout(output())
        .stderr(output())
        .spawn()
        .unwrap()
}

/// A new `patients` table on the primary with `rows` plaintext rows (NULL scans): the primary's client, the table's
/// name, the password file's path and the binary's us-east-1 config (raw AES keyring).
async fn plaintext_patients(env: &LocalAurora, rows: i64) -> (tokio_postgres::Client, String, String, String) {
    let primary = env.connect(env.primary()).await.unwrap();
    let name = unique("patients");
    create_table(&primary, &name).await;
    aurora::insert_plaintext(&primary, &name, rows, false).await.unwrap();
    let passfile = env.passfile().to_str().unwrap().to_owned();
    let home = binary_config(env, &name, "us-east-1");
    (primary, name, passfile, home)
}

#[tokio::test]
async fn the_binary_backfills_survives_sigkill_and_audits_the_standby() {
    const ROWS: i64 = 2_000;
    let env = LocalAurora::shared();
    let (primary, name, passfile, home) = plaintext_patients(env, ROWS).await;
    let job = unique("job");
    let backfill_args = [
        "sql",
        "backfill",
        "--table",
        &name,
        "--job",
        &job,
        "--page-size",
        "100",
        "--rows-per-second",
        "1000",
    ];

    // Killed with SIGKILL once some pages are checkpointed.
    let mut child = sql_spawn(&backfill_args, &home, &passfile, false);
    aurora::wait_for_checkpoint(&primary, &job, 300, Duration::from_secs(120), || {
        child.try_wait().is_ok_and(|s| s.is_none())
    })
    .await
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    // Restarted: resumes and finishes.
    let run = sql_cli(&backfill_args, &home, &passfile);
    assert_eq!(run.code, 0, "{run:#?}");
    let report = run.json();
    assert_eq!(report["resumed"], true, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert!(report["rows_scanned"].as_u64().unwrap() < ROWS as u64, "{report}");

    // The standby: every value decrypts with the key and is bound to its row.
    env.wait_replayed(Duration::from_secs(30)).await.unwrap();
    let replica_config = binary_config(env, &name, "ap-southeast-2");
    let audit = ["sql", "audit", "--table", &name, "--compare-primary"];
    let run = sql_cli(&audit, &replica_config, &passfile);
    assert_eq!(run.code, 0, "{run:#?}");
    let report = run.json();
    assert_eq!(report["by_verdict"]["ok"], ROWS, "{report}");
    assert_eq!(report["compare_primary"]["missing_on_secondary"], 0, "{report}");

    // A plaintext row written afterwards fails the audit with exit 1.
    primary
        .execute(
            &format!("INSERT INTO {name} VALUES ($1, 'plain', NULL)"),
            &[&(ROWS + 1)],
        )
        .await
        .unwrap();
    env.wait_replayed(Duration::from_secs(30)).await.unwrap();
    let run = sql_cli(&audit, &replica_config, &passfile);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.json()["by_verdict"]["plaintext"], 1);

    // Without the password file the connection is refused: exit 2, and the message names no password.
    let run = sql_cli(&audit, &replica_config, "/nonexistent");
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(!run.stderr.contains("ddbguard-local"), "{run:#?}");
}

#[tokio::test]
async fn a_database_failure_mid_backfill_exits_4_the_same_command_resumes_and_restart_starts_a_new_pass() {
    const ROWS: i64 = 1_000;
    let env = LocalAurora::shared();
    let (primary, name, passfile, home) = plaintext_patients(env, ROWS).await;
    let job = unique("job");
    let backfill_args = [
        "sql",
        "backfill",
        "--table",
        &name,
        "--job",
        &job,
        "--page-size",
        "50",
        "--rows-per-second",
        "400",
    ];
    let child = sql_spawn(&backfill_args, &home, &passfile, true);
    let pid = child.id();
    let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
    aurora::wait_for_checkpoint(&primary, &job, 200, Duration::from_secs(60), alive)
        .await
        .unwrap();
    // The table goes away under the running backfill (renamed, as a botched deploy might).
    let moved = format!("{name}_moved");
    primary
        .batch_execute(&format!("ALTER TABLE {name} RENAME TO {moved}"))
        .await
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["completion"], "failed", "{report}");
    assert_eq!(report["exit_code"], 4, "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains(&name) && error.contains("42P01"), "{error}");
    assert!(stderr.contains("stopped after it started"), "{stderr}");
    let first = report["encrypted"].as_u64().unwrap();
    assert!(first >= 200 && first < ROWS as u64, "{report}");

    // Back in place, the same command resumes from the last finished page and finishes; `--restart` of the
    // unfinished job is refused.
    primary
        .batch_execute(&format!("ALTER TABLE {moved} RENAME TO {name}"))
        .await
        .unwrap();
    let restart: Vec<&str> = backfill_args.iter().copied().chain(["--restart"]).collect();
    let run = sql_cli(&restart, &home, &passfile);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("has not finished"), "{run:#?}");
    let run = sql_cli(&backfill_args, &home, &passfile);
    assert_eq!(run.code, 0, "{run:#?}");
    let report = run.json();
    assert_eq!(report["resumed"], true, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    let plaintext: i64 = primary
        .query_one(&format!("SELECT count(*) FROM {name} WHERE ssn LIKE 'ssn-%'"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(plaintext, 0, "every value is encrypted");
    let audit = sql_cli(&["sql", "audit", "--table", &name], &home, &passfile);
    assert_eq!(audit.code, 0, "{audit:#?}");
    assert_eq!(audit.json()["by_verdict"]["ok"], ROWS, "{audit:#?}");

    // A plaintext value written later (a lagging application): the finished job is not run again, `--restart`
    // starts a new pass that encrypts it.
    primary
        .execute(&format!("UPDATE {name} SET ssn = 'late-plaintext' WHERE id = 500"), &[])
        .await
        .unwrap();
    let run = sql_cli(&backfill_args, &home, &passfile);
    assert_eq!(run.code, 0, "{run:#?}");
    let report = run.json();
    assert_eq!(
        (report["already_finished"].as_bool(), report["encrypted"].as_u64()),
        (Some(true), Some(0)),
        "{report}"
    );
    let run = sql_cli(&restart, &home, &passfile);
    assert_eq!(run.code, 0, "{run:#?}");
    let report = run.json();
    assert_eq!(
        (
            report["resumed"].as_bool(),
            report["encrypted"].as_u64(),
            report["already_encrypted"].as_u64()
        ),
        (Some(false), Some(1), Some(ROWS as u64 - 1)),
        "{report}"
    );
}

#[tokio::test]
async fn a_value_the_database_refuses_is_failed_and_the_run_goes_on() {
    const ROWS: i64 = 100;
    let env = LocalAurora::shared();
    let (primary, name, passfile, home) = plaintext_patients(env, ROWS).await;
    // A check constraint the application's schema might have: row 7's ssn must stay plaintext.
    primary
        .batch_execute(&format!(
            "ALTER TABLE {name} ADD CONSTRAINT keep_7 CHECK (id <> 7 OR ssn LIKE 'ssn-%')"
        ))
        .await
        .unwrap();
    let run = sql_cli(
        &["sql", "backfill", "--table", &name, "--page-size", "10"],
        &home,
        &passfile,
    );
    assert_eq!(run.code, 1, "{run:#?}");
    let report = run.json();
    assert_eq!(report["completion"], "finished", "{report}");
    assert_eq!(
        (report["encrypted"].as_u64(), report["failed"].as_u64()),
        (Some(ROWS as u64 - 1), Some(1)),
        "{report}"
    );
    assert!(
        run.stderr.contains("23514") && run.stderr.contains("\"7\""),
        "the refusal is logged with its key: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("ssn-7"), "no plaintext in the log: {}", run.stderr);
}

/// The `[aws]` section of the binary in `region` against the local KMS.
fn local_aws(env: &LocalAws, region: &str) -> String {
    format!(
        "region = \"{region}\"\nregions = [\"{PRIMARY_REGION}\", \"{REPLICA_REGION}\"]\nendpoint_url = \"{}\"",
        env.endpoint()
    )
}

fn kms_mrk(key_arn: &str) -> String {
    format!("kind = \"kms-mrk\"\nkey_arn = \"{key_arn}\"")
}

/// The ciphertexts of the `encrypt` operations of the Python SDK, in order.
fn python_ciphertexts(env: &LocalAws, ops: Vec<Value>) -> Vec<Vec<u8>> {
    let results = crate::esdk_interop::python(env, ops).unwrap();
    results
        .iter()
        .map(|r| {
            assert_eq!(r["ok"], true, "python encrypt: {r}");
            STANDARD.decode(r["ciphertext"].as_str().unwrap()).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn the_binary_audits_rows_the_python_sdk_wrote_with_the_ap_southeast_2_replica() {
    let aws = LocalAws::shared();
    let env = LocalAurora::shared();
    let mrk = aws
        .create_replicated_mrk(&unique_name("mrk", "sql-python-audit"))
        .await
        .unwrap();
    let single = aws
        .kms(PRIMARY_REGION)
        .await
        .create_key()
        .description(unique_name("srk", "sql-python-audit"))
        .send()
        .await
        .unwrap()
        .key_metadata()
        .and_then(|m| m.arn())
        .unwrap()
        .to_owned();
    let encrypt = |key_arn: &str, suite: &str, frame_length: u32, column: &str, id: i64| {
        json!({
            "op": "encrypt", "key_arn": key_arn, "suite": suite, "frame_length": frame_length,
            "encryption_context": context(column, id), "plaintext": STANDARD.encode(b"123-45-6789"),
        })
    };
    let written = python_ciphertexts(
        aws,
        vec![
            encrypt(&mrk.primary_arn, "0578", 4096, "ssn", 1),
            encrypt(&mrk.primary_arn, "0478", 0, "scan", 1),
            encrypt(&single, "0578", 4096, "ssn", 3),
            encrypt(&mrk.primary_arn, "0578", 4096, "ssn", 4),
            encrypt(&mrk.primary_arn, "0578", 4096, "ssn", 5),
            encrypt(&mrk.primary_arn, "0478", 4096, "ssn", 6),
        ],
    );
    let [clean_ssn, clean_scan, single_region, mut tampered, five, six] = <[Vec<u8>; 6]>::try_from(written).unwrap();
    // One bit of the final frame's ciphertext (after its end marker, sequence number, IV and length).
    let header = Header::parse(&tampered).unwrap();
    tampered[header.len + 24 + 2] ^= 0x08;

    let primary = env.connect(env.primary()).await.unwrap();
    let name = unique("patients");
    create_table(&primary, &name).await;
    let rows: Vec<(i64, Option<String>, Option<Vec<u8>>)> = vec![
        (1, Some(b64(clean_ssn)), Some(clean_scan)),
        (2, Some("123-45-6789".into()), None),
        (3, Some(b64(single_region)), None),
        (4, Some(b64(tampered)), None),
        // Rows 5 and 6 hold each other's ciphertexts: both decrypt, bound to the other row.
        (5, Some(b64(six)), None),
        (6, Some(b64(five)), None),
    ];
    for (id, ssn, scan) in &rows {
        primary
            .execute(&format!("INSERT INTO {name} VALUES ($1, $2, $3)"), &[id, ssn, scan])
            .await
            .unwrap();
    }
    env.wait_replayed(Duration::from_secs(30)).await.unwrap();

    let config = aurora::patients_config(env, &name, &local_aws(aws, REPLICA_REGION), &kms_mrk(&mrk.primary_arn));
    let passfile = env.passfile().to_str().unwrap().to_owned();
    let run = sql_cli(
        &[
            "sql",
            "audit",
            "--table",
            &name,
            "--compare-primary",
            "--recheck-seconds",
            "0.2",
        ],
        &config,
        &passfile,
    );
    assert_eq!(run.code, 1, "{run:#?}");
    let report = run.json();
    let verdicts: BTreeMap<(String, String), String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                (
                    f["key"]["id"].as_str().unwrap().to_owned(),
                    f["column"].as_str().unwrap().to_owned(),
                ),
                f["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeMap<(String, String), String> = [
        ("2", "plaintext"),
        ("3", "key_not_mrk"),
        ("4", "integrity_failed"),
        ("5", "integrity_failed"),
        ("6", "integrity_failed"),
    ]
    .into_iter()
    .map(|(id, verdict)| ((id.to_owned(), "ssn".to_owned()), verdict.to_owned()))
    .collect();
    assert_eq!(verdicts, expected, "{report}");
    assert_eq!(report["by_verdict"]["ok"], 2, "row 1's ssn and scan: {report}");
    assert_eq!(report["rows"], 6, "{report}");
    assert_eq!(report["compare_primary"]["missing_on_secondary"], 0, "{report}");
}

#[tokio::test]
async fn values_the_binary_backfills_under_the_mrk_decrypt_in_the_python_sdk_with_the_replica() {
    const ROWS: i64 = 20;
    let aws = LocalAws::shared();
    let env = LocalAurora::shared();
    let mrk = aws
        .create_replicated_mrk(&unique_name("mrk", "sql-python-backfill"))
        .await
        .unwrap();
    let replica_arn = mrk.replica_arn.clone().unwrap();
    let primary = env.connect(env.primary()).await.unwrap();
    let name = unique("patients");
    create_table(&primary, &name).await;
    // Row ROWS has no scan: NULL stays NULL.
    primary
        .execute(
            &format!(
                "INSERT INTO {name} SELECT g, 'ssn-' || g, CASE WHEN g < $1 THEN convert_to('scan-' || g, 'UTF8') END \
                 FROM generate_series(1, $1::bigint) g"
            ),
            &[&ROWS],
        )
        .await
        .unwrap();

    let config = aurora::patients_config(env, &name, &local_aws(aws, PRIMARY_REGION), &kms_mrk(&mrk.primary_arn));
    let passfile = env.passfile().to_str().unwrap().to_owned();
    let job = unique("job");
    let run = sql_cli(
        &["sql", "backfill", "--table", &name, "--job", &job],
        &config,
        &passfile,
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json()["failed"], 0, "{run:#?}");
    // Not a terminal: progress as the DynamoDB backfill's JSON lines, the last one at the end of the run.
    let progress: Vec<Value> = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "backfill_progress")
        .collect();
    let last = progress.last().unwrap_or_else(|| panic!("no progress line: {run:#?}"));
    assert_eq!(last["job"], job.as_str(), "{last}");
    assert_eq!(last["progress"]["system"], "aurora", "{last}");
    assert_eq!(last["progress"]["rows_scanned"], ROWS, "{last}");
    assert_eq!(last["progress"]["encrypted"], 2 * ROWS - 1, "{last}");

    // Read on the standby, decrypted by the official SDK with the ap-southeast-2 replica key.
    env.wait_replayed(Duration::from_secs(30)).await.unwrap();
    let replica = env.connect(env.replica()).await.unwrap();
    let rows = replica
        .query(&format!("SELECT id, ssn, scan FROM {name} ORDER BY id"), &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), ROWS as usize);
    let mut ops = Vec::new();
    let mut expected = Vec::new();
    for row in rows {
        let id: i64 = row.get(0);
        let ssn: String = row.get(1);
        assert_ne!(ssn, format!("ssn-{id}"), "row {id} is still plaintext");
        let values = [
            ("ssn", Some(Stored::Text(ssn)), format!("ssn-{id}")),
            (
                "scan",
                row.get::<_, Option<Vec<u8>>>(2).map(Stored::Bytes),
                format!("scan-{id}"),
            ),
        ];
        for (column, stored, plaintext) in values {
            let Some(stored) = stored else {
                assert_eq!((id, column), (ROWS, "scan"), "only row {ROWS}'s scan is NULL");
                continue;
            };
            let message = stored.message_bytes().unwrap();
            ops.push(json!({ "op": "decrypt", "key_arn": replica_arn, "ciphertext": STANDARD.encode(&message) }));
            expected.push((id, column, plaintext));
        }
    }
    let results = crate::esdk_interop::python(aws, ops).unwrap();
    assert_eq!(results.len(), expected.len());
    assert_eq!(expected.len(), 2 * ROWS as usize - 1);
    for (r, (id, column, plaintext)) in results.iter().zip(&expected) {
        assert_eq!(r["ok"], true, "python decrypt of row {id} {column}: {r}");
        let decrypted = STANDARD.decode(r["plaintext"].as_str().unwrap()).unwrap();
        assert_eq!(decrypted, plaintext.as_bytes(), "row {id} {column}");
        assert_eq!(r["suite"], "0578", "the official SDKs' default suite: {r}");
        let bound: EncryptionContext = serde_json::from_value(r["encryption_context"].clone()).unwrap();
        for (k, v) in context(column, *id) {
            assert_eq!(bound.get(&k), Some(&v), "row {id} {column}: {r}");
        }
    }
}

/// The backfill's "done when": 5,000 plaintext rows encrypted by the binary with the MRK keyring through the local
/// KMS while the application writes all along (new plaintext values, and values it encrypted itself), killed with
/// SIGKILL once its checkpoint advanced and restarted from it; afterwards every row is a message that the official
/// Python SDK decrypts with the ap-southeast-2 replica to the value the application wrote last.
#[tokio::test]
async fn the_binary_backfills_5000_rows_under_the_mrk_through_a_writer_and_a_sigkill_for_the_python_sdk() {
    const ROWS: i64 = 5_000;
    let aws = LocalAws::shared();
    let env = LocalAurora::shared();
    let mrk = aws
        .create_replicated_mrk(&unique_name("mrk", "sql-backfill-5000"))
        .await
        .unwrap();
    let replica_arn = mrk.replica_arn.clone().unwrap();
    let primary = env.connect(env.primary()).await.unwrap();
    let name = unique("patients");
    create_table(&primary, &name).await;
    aurora::insert_plaintext(&primary, &name, ROWS, false).await.unwrap();

    // The application: new plaintext SSNs, and every fifth one encrypted by itself under the MRK in us-east-1.
    let app_kms = SdkKms::new(aws.kms(PRIMARY_REGION).await, PRIMARY_REGION);
    let app_keyring = MrkKeyring::new(&mrk.primary_arn, Arc::new(app_kms), None).unwrap();
    let app_cipher: Arc<dyn ValueCipher> = Arc::new(EsdkCipher::new(
        Arc::new(app_keyring),
        DecryptOptions::default(),
        EncryptOptions::default(),
        1,
    ));
    let writer = AppWriter::spawn(
        env.connect(env.primary()).await.unwrap(),
        &name,
        ROWS,
        Some((app_cipher, 5)),
    );

    let config = aurora::patients_config(env, &name, &local_aws(aws, PRIMARY_REGION), &kms_mrk(&mrk.primary_arn));
    let passfile = env.passfile().to_str().unwrap().to_owned();
    let job = unique("job");
    let backfill = |job: &str| {
        sql_cli(
            &["sql", "backfill", "--table", &name, "--job", job, "--page-size", "250"],
            &config,
            &passfile,
        )
    };

    // First run: SIGKILL once 1,500 rows are checkpointed, in the middle of a later page.
    let started = Instant::now();
    let mut child = sql_spawn(
        &["sql", "backfill", "--table", &name, "--job", &job, "--page-size", "250"],
        &config,
        &passfile,
        false,
    );
    let restart_point = aurora::wait_for_checkpoint(&primary, &job, 1_500, Duration::from_secs(180), || {
        child.try_wait().is_ok_and(|s| s.is_none())
    })
    .await
    .unwrap();
    let first_seconds = started.elapsed().as_secs_f64();
    child.kill().unwrap();
    child.wait().unwrap();

    // Restarted: resumes from the checkpoint in the database and finishes.
    let run = backfill(&job);
    assert_eq!(run.code, 0, "{run:#?}");
    let resumed = run.json();
    assert_eq!(resumed["resumed"], true, "{resumed}");
    assert_eq!(resumed["failed"], 0, "{resumed}");
    let rescanned = resumed["rows_scanned"].as_u64().unwrap();
    assert!(rescanned < ROWS as u64, "resumed, not started over: {resumed}");
    assert!(
        rescanned >= (ROWS - restart_point) as u64,
        "from the checkpoint on: {resumed}"
    );
    let writes = writer.stop().await.unwrap();
    assert!(writes.plaintext > 0 && writes.encrypted > 0, "{writes:?}");

    // Plaintext the application wrote behind the scan: a second job encrypts it.
    let sweep = backfill(&unique("job"));
    assert_eq!(sweep.code, 0, "{sweep:#?}");
    let sweep = sweep.json();
    assert_eq!(sweep["rows_scanned"], ROWS, "{sweep}");

    // On the standby: every row is a message; the official SDK decrypts all of them with the replica key, in one
    // process, to the application's last value (or the original one), bound to its row.
    env.wait_replayed(Duration::from_secs(60)).await.unwrap();
    let replica = env.connect(env.replica()).await.unwrap();
    let rows = replica
        .query(&format!("SELECT id, ssn FROM {name} ORDER BY id"), &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), ROWS as usize);
    let mut ops = Vec::with_capacity(rows.len());
    let mut expected = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.get(0);
        let ssn: Option<String> = row.get(1);
        let message = ssn
            .and_then(|s| Stored::Text(s).message_bytes().map(|b| b.into_owned()))
            .filter(|b| looks_like_message(b))
            .unwrap_or_else(|| panic!("row {id} is not ciphertext"));
        ops.push(json!({ "op": "decrypt", "key_arn": replica_arn, "ciphertext": STANDARD.encode(&message) }));
        let want = writes.last.get(&id).cloned().unwrap_or_else(|| format!("ssn-{id}"));
        expected.push((id, want));
    }
    let python_started = Instant::now();
    let results = crate::esdk_interop::python(aws, ops).unwrap();
    let python_seconds = python_started.elapsed().as_secs_f64();
    assert_eq!(results.len(), expected.len());
    for (r, (id, want)) in results.iter().zip(&expected) {
        assert_eq!(r["ok"], true, "python decrypt of row {id}: {r}");
        let decrypted = STANDARD.decode(r["plaintext"].as_str().unwrap()).unwrap();
        assert_eq!(decrypted, want.as_bytes(), "row {id}: a write was lost");
        let bound: EncryptionContext = serde_json::from_value(r["encryption_context"].clone()).unwrap();
        for (k, v) in context("ssn", *id) {
            assert_eq!(bound.get(&k), Some(&v), "row {id}: {r}");
        }
    }
    let rate = |report: &Value| report["rows_scanned"].as_f64().unwrap() / report["elapsed_seconds"].as_f64().unwrap();
    eprintln!(
        "sql backfill (binary, kms-mrk): {ROWS} rows; killed after {first_seconds:.1}s at checkpoint {restart_point} \
         ({:.0} rows/s); resumed run {rescanned} rows in {:.1}s ({:.0} rows/s, {} encrypted, {} conflicts); sweep \
         {:.1}s ({} encrypted); application {} plaintext + {} encrypted writes; python decrypt of {ROWS} rows {python_seconds:.1}s \
         ({:.0}/s)",
        restart_point as f64 / first_seconds,
        resumed["elapsed_seconds"].as_f64().unwrap(),
        rate(&resumed),
        resumed["encrypted"],
        resumed["conflicts"],
        sweep["elapsed_seconds"].as_f64().unwrap(),
        sweep["encrypted"],
        writes.plaintext,
        writes.encrypted,
        ROWS as f64 / python_seconds,
    );
}

/// `ddbguard sql verify`, the long-running form, on the standby: rows written on the primary (clean, plaintext,
/// tampered) are counted on its /metrics by verdict; with replay paused the home region's canary goes missing
/// (`ddbguard_canary_missing{system="aurora"}` 1, one `canary_missing` alert, not one per poll) and comes back
/// after resume; SIGTERM stops it at once with exit 0.
#[tokio::test]
async fn the_binary_verifies_the_standby_counts_verdicts_and_watches_the_canary() {
    use crate::canary::{Verifier, wait_until};
    let env = LocalAurora::shared();
    let primary = env.connect(env.primary()).await.unwrap();
    let name = unique("patients");
    create_table(&primary, &name).await;
    // The application advances `seq` on every write: the verifier's cursor.
    primary
        .batch_execute(&format!("ALTER TABLE {name} ADD COLUMN seq bigserial"))
        .await
        .unwrap();
    let with_cursor = |config: String| {
        config.replace(
            "primary_key = [\"id\"]",
            "primary_key = [\"id\"]\ncursor_column = \"seq\"",
        )
    };
    let passfile = env.passfile().to_str().unwrap().to_owned();
    let dir = crate::cli::TempDir::new("sql-verify");
    let home_config = with_cursor(binary_config(env, &name, "us-east-1"));
    let replica_config = with_cursor(binary_config(env, &name, "ap-southeast-2"));
    let verify = |config: &str, log: &str| {
        let args = [
            "sql",
            "verify",
            "--table",
            &name,
            "--poll-seconds",
            "0.3",
            "--canary-interval-seconds",
            "0.5",
            "--canary-overdue-seconds",
            "3",
        ];
        Verifier::spawn(
            &args,
            &[("DDBGUARD_CONFIG_TOML", config), ("PGPASSFILE", &passfile)],
            dir.write(log, ""),
        )
    };

    // The home region's verifier writes the canaries on the primary; the standby's verifier starts once they
    // arrive there, so that its first look is not a miss.
    let home = verify(&home_config, "home.log");
    let replica = env.connect(env.replica()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // An error is the canary table not created yet.
        let seen = replica.query_one("SELECT count(*) FROM ddbguard_canaries", &[]).await;
        if seen.is_ok_and(|r| r.get::<_, i64>(0) > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "no canary on the standby within a minute");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let south = verify(&replica_config, "south.log");
    let missing = |v: &Verifier| {
        v.value(
            "ddbguard_canary_missing",
            &[("system", "aurora"), ("origin_region", "us-east-1")],
        )
    };
    wait_until(
        "the standby's verifier sees the canary",
        Duration::from_secs(60),
        || missing(&south) == Some(0.0),
    );

    // Rows written on the primary by the application: clean, plaintext, tampered.
    let app = binary_cipher();
    let clean = app.seal(b"123-45-6789", &context("ssn", 1)).await.unwrap();
    let mut tampered = app.seal(b"123-45-6789", &context("ssn", 3)).await.unwrap();
    let header = Header::parse(&tampered).unwrap();
    tampered[header.len + 24 + 2] ^= 0x08;
    for (id, ssn) in [(1i64, b64(clean)), (2, "123-45-6789".to_owned()), (3, b64(tampered))] {
        primary
            .execute(&format!("INSERT INTO {name} (id, ssn) VALUES ($1, $2)"), &[&id, &ssn])
            .await
            .unwrap();
    }
    let count = |v: &Verifier, verdict: &str| {
        v.value(
            "ddbguard_sql_values_total",
            &[
                ("system", "aurora"),
                ("table", &name),
                ("region", "ap-southeast-2"),
                ("column", "ssn"),
                ("verdict", verdict),
            ],
        )
    };
    let took = wait_until("the three rows counted on the standby", Duration::from_secs(60), || {
        ["ok", "plaintext", "integrity_failed"]
            .iter()
            .all(|v| count(&south, v) == Some(1.0))
    });
    eprintln!("sql verify: three rows judged on the standby {took:?} after the writes");

    // Replay paused: the canary goes missing within the overdue time and comes back after resume.
    env.set_replay_paused(true).unwrap();
    let went_missing = std::panic::catch_unwind(|| {
        let took = wait_until(
            "the canary missing while replay is paused",
            Duration::from_secs(30),
            || missing(&south) == Some(1.0),
        );
        // Missing for several polls: still one alert.
        std::thread::sleep(Duration::from_millis(1_500));
        took
    });
    env.set_replay_paused(false).unwrap();
    let went_missing = went_missing.unwrap_or_else(|e| std::panic::resume_unwind(e));
    let came_back = wait_until("the canary back after resume", Duration::from_secs(30), || {
        missing(&south) == Some(0.0)
    });
    eprintln!("sql verify: canary missing {went_missing:?} after the pause, back {came_back:?} after resume");

    let (took, code, log) = south.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    let (home_took, home_code, home_log) = home.stop();
    assert_eq!(home_code, Some(0), "{home_log}");
    assert!(home_took < Duration::from_secs(5), "SIGTERM took {home_took:?}");
    // An alert on each change, not on every poll while missing.
    assert_eq!(log.matches("canary_missing").count(), 1, "{log}");
    assert_eq!(log.matches("canary_arrived").count(), 1, "{log}");
    eprintln!("sql verify: SIGTERM → exit in {took:?} (standby), {home_took:?} (home)");
}

/// TLS end to end: the clusters run with ssl = on under pg.sh's throwaway CA; `sql audit` with
/// `sslmode=verify-full&sslrootcert=<that CA>` on both connection strings succeeds, and with another CA it fails
/// with exit 2 and an error that names TLS and the certificate.
#[tokio::test]
async fn the_binary_audits_over_verified_tls_and_names_tls_when_the_ca_is_wrong() {
    let env = LocalAurora::shared();
    let ca = env.ca().expect("pg.sh runs the clusters with TLS by default");
    let primary = env.connect(env.primary()).await.unwrap();
    let name = unique("patients");
    create_table(&primary, &name).await;
    let clean = binary_cipher().seal(b"123-45-6789", &context("ssn", 1)).await.unwrap();
    primary
        .execute(&format!("INSERT INTO {name} (id, ssn) VALUES (1, $1)"), &[&b64(clean)])
        .await
        .unwrap();
    env.wait_replayed(Duration::from_secs(30)).await.unwrap();

    let passfile = env.passfile().to_str().unwrap().to_owned();
    let with_ca = |ca: &std::path::Path| {
        let verified = |url: &str| format!("\"{url}?sslmode=verify-full&sslrootcert={}\"", ca.display());
        binary_config(env, &name, "ap-southeast-2")
            .replace(&format!("\"{}\"", env.primary()), &verified(env.primary()))
            .replace(&format!("\"{}\"", env.replica()), &verified(env.replica()))
    };
    let audit = |config: &str| {
        sql_cli(
            &["sql", "audit", "--table", &name, "--compare-primary"],
            config,
            &passfile,
        )
    };
    let config = with_ca(ca);
    assert!(config.contains("sslmode=verify-full"), "{config}");
    let run = audit(&config);
    assert_eq!(run.code, 0, "{run:#?}");
    let report = run.json();
    assert_eq!(report["by_verdict"]["ok"], 1, "{report}");
    assert_eq!(report["compare_primary"]["missing_on_secondary"], 0, "{report}");

    // Another CA, made here: the server's certificate does not chain to it.
    let dir = crate::cli::TempDir::new("sql-tls");
    let other = dir.write("other-ca.crt", "");
    let key = dir.write("other-ca.key", "");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-days", "1", "-subj", "/CN=another CA", "-keyout", &key, "-out", &other])
        .output()
        .unwrap();
    assert!(made.status.success(), "openssl: {made:?}");
    let run = audit(&with_ca(std::path::Path::new(&other)));
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("TLS"), "the error names TLS: {run:#?}");
    assert!(
        run.stderr.to_lowercase().contains("certificate"),
        "and the certificate: {run:#?}"
    );
    assert!(!run.stderr.contains("ddbguard-local"), "no password: {run:#?}");
    eprintln!("sql audit with another CA: {}", run.stderr.trim());
}
