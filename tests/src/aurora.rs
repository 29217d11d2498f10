//! The local Aurora Global Database stand-in of one test process: a PostgreSQL 15 primary ("us-east-1") and a
//! read-only hot standby ("ap-southeast-2") fed by physical streaming replication.
//!
//! [`LocalAurora::shared`] runs `scripts/local-aws.d/pg.sh run DIR PID` once per test process: the script creates
//! both clusters in a fresh directory under the system temp dir on free ports, prints their connection strings,
//! and stops them and deletes the directory when this process exits. Tests therefore never share a database with
//! another test process.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ddbguard_sql::cipher::EncryptionContext;
use ddbguard_sql::{Encoding, Stored, ValueCipher};

use crate::repo_root;

/// Creating two clusters and a base backup takes a few seconds; allow for a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The two PostgreSQL clusters of this test process.
#[derive(Debug)]
pub struct LocalAurora {
    primary: String,
    replica: String,
    passfile: PathBuf,
    ca: Option<PathBuf>,
    dir: PathBuf,
    /// The supervising script; it stops the clusters when this process exits.
    _child: Mutex<Child>,
}

static SHARED: OnceLock<LocalAurora> = OnceLock::new();

impl LocalAurora {
    /// The clusters of this test process, created on first use.
    ///
    /// # Panics
    ///
    /// When the clusters cannot be started: every Aurora test needs them.
    pub fn shared() -> &'static LocalAurora {
        SHARED.get_or_init(|| match Self::start() {
            Ok(env) => env,
            Err(e) => panic!("cannot start the local PostgreSQL clusters: {e:#}"),
        })
    }

    fn start() -> Result<LocalAurora> {
        let dir = std::env::temp_dir().join(format!("ddbguard-pg-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
        let script = repo_root().join("scripts/local-aws.d/pg.sh");
        let mut child = Command::new(&script)
            .arg("run")
            .arg(&dir)
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", script.display()))?;
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("local-aws pg: {line}");
                }
            });
        }
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout pipe"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut primary, mut replica, mut passfile, mut ca) = (None, None, None, None);
        // pg_ca, when TLS is on, comes before the last line, pg_passfile.
        while primary.is_none() || replica.is_none() || passfile.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => {
                    let _ = child.kill();
                    bail!("pg.sh did not print its connection strings within {START_TIMEOUT:?}: {e}");
                }
            };
            if let Some(v) = line.strip_prefix("pg_primary=") {
                primary = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("pg_replica=") {
                replica = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("pg_passfile=") {
                passfile = Some(PathBuf::from(v));
            } else if let Some(v) = line.strip_prefix("pg_ca=") {
                ca = Some(PathBuf::from(v));
            }
        }
        Ok(LocalAurora {
            primary: primary.unwrap_or_default(),
            replica: replica.unwrap_or_default(),
            passfile: passfile.unwrap_or_default(),
            ca,
            dir,
            _child: Mutex::new(child),
        })
    }

    /// The primary's connection string (`postgresql://app@127.0.0.1:PORT/app`, no password).
    pub fn primary(&self) -> &str {
        &self.primary
    }

    /// The standby's connection string.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The PostgreSQL password file holding the `app` role's password: pass it as `PGPASSFILE`.
    pub fn passfile(&self) -> &Path {
        &self.passfile
    }

    /// The CA that signed both clusters' server certificate (for 127.0.0.1), when they run with TLS (pg.sh's
    /// default): `?sslmode=verify-full&sslrootcert=<this>`.
    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// A connection to `url` (the primary or the replica) as the `app` role, its password from the password file.
    pub async fn connect(&self, url: &str) -> Result<tokio_postgres::Client> {
        ddbguard_sql::connect(url, &ddbguard_sql::Credentials::passfile(&self.passfile))
            .await
            .with_context(|| format!("connecting to {url}"))
    }

    /// Waits until the standby has replayed everything the primary wrote so far.
    pub async fn wait_replayed(&self, timeout: Duration) -> Result<()> {
        let primary = self.connect(&self.primary).await?;
        let replica = self.connect(&self.replica).await?;
        // The insert position, not `pg_current_wal_lsn()` (the write position): with `synchronous_commit = off`
        // a commit returns before its WAL is written, and waiting for the write position could pass before the
        // last commit reached the standby.
        let lsn: String = primary
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .context("reading the primary's WAL position")?
            .get(0);
        let deadline = Instant::now() + timeout;
        loop {
            let caught_up: bool = replica
                .query_one("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&lsn])
                .await
                .context("reading the standby's replay position")?
                .get(0);
            if caught_up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the standby did not replay up to {lsn} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pauses (`true`) or resumes WAL replay on the standby.
    pub fn set_replay_paused(&self, paused: bool) -> Result<()> {
        let verb = if paused { "pause" } else { "resume" };
        let status = Command::new(repo_root().join("scripts/local-aws.d/pg.sh"))
            .arg(verb)
            .arg(&self.dir)
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("pg.sh {verb}"))?;
        if !status.success() {
            bail!("pg.sh {verb} failed ({status})");
        }
        Ok(())
    }
}

/// Creates the tests' `patients` table on `client`: `id bigint` key, `ssn text` (base64 messages), `scan bytea`.
pub async fn create_patients(client: &tokio_postgres::Client, name: &str) -> Result<()> {
    client
        .batch_execute(&format!(
            "CREATE TABLE {name} (id bigint PRIMARY KEY, ssn text, scan bytea)"
        ))
        .await
        .with_context(|| format!("creating table {name}"))
}

/// Inserts rows `1..=rows` with the plaintext `ssn-ID`, and `scan-ID` (bytes) when `scan`, else a NULL scan.
pub async fn insert_plaintext(client: &tokio_postgres::Client, name: &str, rows: i64, scan: bool) -> Result<()> {
    let scan = if scan {
        "convert_to('scan-' || g, 'UTF8')"
    } else {
        "NULL"
    };
    client
        .execute(
            &format!("INSERT INTO {name} SELECT g, 'ssn-' || g, {scan} FROM generate_series(1, $1::bigint) g"),
            &[&rows],
        )
        .await
        .with_context(|| format!("filling table {name}"))?;
    Ok(())
}

/// The encryption context the `patients` application binds to a value: `{table: patients, column, id}`.
pub fn patients_context(column: &str, id: i64) -> EncryptionContext {
    [
        ("table", "patients".to_owned()),
        ("column", column.to_owned()),
        ("id", id.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The binary's configuration of `table` (`ssn` base64, `scan` bytea, bound to [`patients_context`]) against
/// `env`'s clusters, with `aws` as the body of the `[aws]` section and `keyring` as the body of the table's keyring.
pub fn patients_config(env: &LocalAurora, table: &str, aws: &str, keyring: &str) -> String {
    format!(
        r#"
[aws]
{aws}

[sql]
primary = "{primary}"
home_region = "us-east-1"
[sql.replicas]
"ap-southeast-2" = "{replica}"

[[sql_tables]]
name = "{table}"
primary_key = ["id"]
[sql_tables.columns]
ssn = {{ encoding = "base64" }}
scan = {{ encoding = "bytea" }}
[sql_tables.encryption_context]
table = "patients"
column = "{{column}}"
id = "{{row.id}}"
[sql_tables.keyring]
{keyring}
"#,
        primary = env.primary(),
        replica = env.replica(),
    )
}

/// Waits until backfill `job` has checkpointed at least `rows` rows on `primary`; returns the rows checkpointed.
/// `alive` is asked on every poll and fails the wait when the backfill ended before.
pub async fn wait_for_checkpoint(
    primary: &tokio_postgres::Client,
    job: &str,
    rows: i64,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<i64> {
    let deadline = Instant::now() + timeout;
    loop {
        let saved = primary
            .query_opt(
                &format!(
                    "SELECT rows_scanned FROM {} WHERE job = $1",
                    ddbguard_sql::backfill::CHECKPOINT_TABLE
                ),
                &[&job],
            )
            .await;
        if let Ok(Some(row)) = saved {
            let scanned: i64 = row.get(0);
            if scanned >= rows {
                return Ok(scanned);
            }
        }
        if !alive() {
            bail!("backfill {job} ended before it checkpointed {rows} rows");
        }
        if Instant::now() > deadline {
            bail!("backfill {job} did not checkpoint {rows} rows within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What an [`AppWriter`] wrote.
#[derive(Debug, Default)]
pub struct AppWrites {
    /// The last `ssn` plaintext written to each row it touched.
    pub last: BTreeMap<i64, String>,
    /// Writes of a plaintext value.
    pub plaintext: u64,
    /// Writes of a value the application encrypted itself.
    pub encrypted: u64,
}

/// The application of a `patients` table writing new `ssn` values to a pseudo-random subset of rows `1..=rows`
/// while a test runs: plaintext, or, every `encrypt_every`th write with a cipher, a message it sealed itself
/// (bound to [`patients_context`]), as an application half-way through its own migration does.
#[derive(Debug)]
pub struct AppWriter {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<AppWrites>>,
}

impl AppWriter {
    /// Starts writing through `client` until [`stop`](Self::stop).
    pub fn spawn(
        client: tokio_postgres::Client,
        table: &str,
        rows: i64,
        sealer: Option<(Arc<dyn ValueCipher>, u64)>,
    ) -> AppWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let update = format!("UPDATE {table} SET ssn = $1 WHERE id = $2");
        let task = tokio::spawn(async move {
            let mut writes = AppWrites::default();
            let mut n = 0u64;
            while !stopped.load(Ordering::SeqCst) {
                n += 1;
                // A step prime to `rows` visits rows in a scattered order, some many times.
                let id = i64::try_from(n * 7919 % rows.unsigned_abs()).unwrap_or(0) + 1;
                let value = format!("app-{n}");
                let stored = match &sealer {
                    Some((cipher, every)) if n.is_multiple_of(*every) => {
                        let message = cipher
                            .seal(value.as_bytes(), &patients_context("ssn", id))
                            .await
                            .map_err(|e| anyhow!("the application cannot encrypt row {id}: {e}"))?;
                        writes.encrypted += 1;
                        match Stored::encode(message, Encoding::Base64) {
                            Stored::Text(t) => t,
                            Stored::Bytes(_) => bail!("base64 encoding gave bytes"),
                        }
                    }
                    _ => {
                        writes.plaintext += 1;
                        value.clone()
                    }
                };
                client
                    .execute(&update, &[&stored, &id])
                    .await
                    .with_context(|| format!("the application's update of row {id}"))?;
                writes.last.insert(id, value);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(writes)
        });
        AppWriter { stop, task }
    }

    /// Stops writing; what was written.
    pub async fn stop(self) -> Result<AppWrites> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.context("the application writer panicked")?
    }
}
