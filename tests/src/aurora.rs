//! The local Aurora Global Database stand-in of one test process: a PostgreSQL 15 primary ("us-east-1") and a
//! read-only hot standby ("ap-southeast-2") fed by physical streaming replication.
//!
//! [`LocalAurora::shared`] runs `scripts/local-aws.d/pg.sh run DIR PID` once per test process: the script creates
//! both clusters in a fresh directory under the system temp dir on free ports, prints their connection strings,
//! and stops them and deletes the directory when this process exits. Tests therefore never share a database with
//! another test process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::repo_root;

/// Creating two clusters and a base backup takes a few seconds; allow for a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The two PostgreSQL clusters of this test process.
#[derive(Debug)]
pub struct LocalAurora {
    primary: String,
    replica: String,
    passfile: PathBuf,
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
        let (mut primary, mut replica, mut passfile) = (None, None, None);
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
            }
        }
        Ok(LocalAurora {
            primary: primary.unwrap_or_default(),
            replica: replica.unwrap_or_default(),
            passfile: passfile.unwrap_or_default(),
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
