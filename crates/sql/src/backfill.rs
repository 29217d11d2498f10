//! `sql backfill`: encrypt the plaintext values of a table's protected columns on the primary.
//!
//! - Keyset pagination over the primary key; after each page the last key is saved in a checkpoint table in the
//!   same database (`ddbguard_backfill_checkpoints`, one row per job), so a killed job resumes after the last
//!   saved page. Rows of the page being processed when it died are read again: values already encrypted are
//!   recognised as such and left alone.
//! - Each write is `UPDATE … WHERE key = … AND col IS NOT DISTINCT FROM <value read>`: when the application wrote
//!   the row in between, the update matches nothing, the row is read again and, if still plaintext, encrypted
//!   anew (up to `max_conflict_retries` times; then it is left and counted). A concurrent write always wins.
//! - Rate budgets from `ddbguard-backfill`'s limiter: rows written per second and KMS requests per second.
//! - A value that cannot be encrypted (a NULL context column, a key that refuses) or whose write the database
//!   refuses for its values (a check constraint, a trigger, a column too short for the ciphertext:
//!   [`SqlError::rejects_values`]) is counted `failed` and left; any other database failure (a page read, a write,
//!   a re-read, the checkpoint: the connection, the table, privileges) stops the run ([`Completion::Failed`],
//!   exit 4) before its page is checkpointed, so the same job resumes with that page.
//! - Run on the primary only: secondaries are read-only, and a write there would fail anyway.

use std::future::Future;
use std::time::{Duration, Instant};

use ddbguard_backfill::limiter::{Budget, BudgetKind};
use futures::StreamExt as _;
use serde::Serialize;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use crate::SqlError;
use crate::cipher::{Stored, ValueCipher, looks_like_message};
use crate::scan::{BoundTable, ScannedRow};
use crate::table::{ProtectedColumn, conditional_update};

/// The checkpoint table, created on the primary when missing.
pub const CHECKPOINT_TABLE: &str = "ddbguard_backfill_checkpoints";

/// Tuning of a backfill.
#[derive(Debug, Clone)]
pub struct BackfillConfig {
    /// The job name: its checkpoint's key. A finished job is not run again.
    pub job: String,
    /// Rows per page (and per checkpoint).
    pub page_size: i64,
    /// Values encrypted and written at once.
    pub concurrency: usize,
    /// Rows written per second (`None`: unlimited).
    pub rows_per_second: Option<f64>,
    /// KMS requests per second (`None`: unlimited).
    pub kms_requests_per_second: Option<f64>,
    /// Re-reads after a concurrent write before a value is left.
    pub max_conflict_retries: u32,
    /// Count what would be encrypted; write nothing, not even the checkpoint.
    pub dry_run: bool,
    /// Start a new pass of a finished job from the first row (after values were left after conflicts, or once
    /// lagging applications stopped writing plaintext). Refused while the job is unfinished: it resumes instead.
    pub restart: bool,
    /// Between two progress snapshots.
    pub progress_interval: Duration,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        BackfillConfig {
            job: String::new(),
            page_size: 500,
            concurrency: 8,
            rows_per_second: None,
            kms_requests_per_second: None,
            max_conflict_retries: 3,
            dry_run: false,
            restart: false,
            progress_interval: Duration::from_secs(5),
        }
    }
}

/// How a run ended: the DynamoDB backfill's, with its exit codes.
pub use ddbguard_backfill::Completion;

/// Counts of a run (and the progress snapshots).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Rows read.
    pub rows_scanned: u64,
    /// Values encrypted and written.
    pub encrypted: u64,
    /// Values that were already AWS Encryption SDK messages.
    pub already_encrypted: u64,
    /// NULL values.
    pub nulls: u64,
    /// Writes that matched nothing because the application wrote the row in between (each retried).
    pub conflicts: u64,
    /// Values left plaintext after `max_conflict_retries` conflicts in a row.
    pub skipped_after_conflicts: u64,
    /// Values that could not be encrypted or written (the key service refused, a context value was NULL).
    pub failed: u64,
    /// With `dry_run`: plaintext values that would be encrypted.
    pub would_encrypt: u64,
}

/// A progress snapshot of a run, handed to the caller at most every `progress_interval` and once at the end.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Progress {
    /// Always `aurora`.
    pub system: &'static str,
    /// Seconds since this run started.
    pub elapsed_seconds: f64,
    /// Rows scanned by earlier runs of the job, up to the checkpoint this run resumed from.
    pub resumed_at_rows: u64,
    /// Rows read per second by this run.
    pub rows_per_second: f64,
    /// The table's row count as the planner estimates it (`pg_class.reltuples`), when it has one.
    pub estimated_rows: Option<u64>,
    /// Seconds left at the current rate, when the row count is estimated.
    pub eta_seconds: Option<u64>,
    /// The counts of this run so far.
    #[serde(flatten)]
    pub counts: Counts,
}

impl Progress {
    fn new(counts: &Counts, elapsed: Duration, resumed_at_rows: u64, estimated_rows: Option<u64>) -> Progress {
        let elapsed_seconds = elapsed.as_secs_f64();
        let rows_per_second = if elapsed_seconds > 0.0 {
            counts.rows_scanned as f64 / elapsed_seconds
        } else {
            0.0
        };
        let position = resumed_at_rows + counts.rows_scanned;
        let eta_seconds = estimated_rows
            .filter(|_| rows_per_second > 0.0)
            .map(|total| (total.saturating_sub(position) as f64 / rows_per_second).ceil() as u64);
        Progress {
            system: "aurora",
            elapsed_seconds,
            resumed_at_rows,
            rows_per_second,
            estimated_rows,
            eta_seconds,
            counts: counts.clone(),
        }
    }

    /// Rows scanned by the job so far, earlier runs included.
    pub fn position(&self) -> u64 {
        self.resumed_at_rows + self.counts.rows_scanned
    }
}

/// The report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct BackfillReport {
    /// Always `aurora`.
    pub system: &'static str,
    /// The table.
    pub table: String,
    /// The job.
    pub job: String,
    /// How it ended.
    pub completion: Completion,
    /// Whether this run started from a saved checkpoint.
    pub resumed: bool,
    /// Whether the job had already finished before this run (nothing was done).
    pub already_finished: bool,
    /// The counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// Seconds the run took.
    pub elapsed_seconds: f64,
    /// The budget waited for most, if any (`rows`, `kms`).
    pub limited_by: Option<&'static str>,
    /// KMS requests charged.
    pub kms_requests: u64,
    /// Why the run stopped, when it [`Completion::Failed`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BackfillReport {
    /// Ends the run with `e`: what was done so far stays in the report.
    fn fail(&mut self, e: &SqlError) {
        tracing::error!(error = %e, table = %self.table, job = %self.job, "sql backfill: stopped by a database failure");
        self.completion = Completion::Failed;
        self.error = Some(e.to_string());
    }

    /// The exit code, as the DynamoDB backfill's: 130 interrupted, 4 stopped by a database failure, 1 failures, 3
    /// values left after conflicts, 0.
    pub fn exit_code(&self) -> u8 {
        self.completion
            .exit_code(self.counts.failed, self.counts.skipped_after_conflicts)
    }
}

/// What one plaintext value came to.
#[derive(Debug)]
enum Outcome {
    Encrypted {
        conflicts: u32,
    },
    AlreadyEncrypted {
        conflicts: u32,
    },
    Gone {
        conflicts: u32,
    },
    Skipped {
        conflicts: u32,
    },
    /// The value could not be encrypted (a NULL context column, a key that refused) or the database refused its
    /// write for its values ([`SqlError::rejects_values`]: a check constraint, a column too short for the
    /// ciphertext): left as it is.
    Failed {
        conflicts: u32,
    },
    /// The database failed the write or the re-read for a reason that concerns every row (the connection, the
    /// table, privileges): the run stops before its page is checkpointed, so the value is tried again when the job
    /// resumes.
    Database {
        conflicts: u32,
        error: SqlError,
    },
}

/// Whether a stored value is already a message (and so left alone).
fn is_message(stored: &Stored) -> bool {
    stored.message_bytes().is_some_and(|b| looks_like_message(&b))
}

struct Run<'a> {
    primary: &'a Client,
    bound: &'a BoundTable,
    cipher: &'a dyn ValueCipher,
    config: &'a BackfillConfig,
    updates: Vec<String>,
    rows: Budget,
    kms: Budget,
}

impl Run<'_> {
    /// Encrypts one plaintext value, re-reading after each conflict.
    async fn encrypt_value(&self, row: &ScannedRow, c: usize, mut current: Stored) -> Outcome {
        let column: &ProtectedColumn = &self.bound.table.columns[c];
        let mut text = row.text.clone();
        let mut conflicts = 0;
        loop {
            let Some(context) = self.bound.table.expected_context(&column.name, &text) else {
                tracing::warn!(table = %self.bound.table.name, column = %column.name, key = %row.key_json(&self.bound.table),
                    "sql backfill: a context column is NULL; the value cannot be bound to its row");
                return Outcome::Failed { conflicts };
            };
            self.kms.ready().await;
            self.kms.charge(f64::from(self.cipher.kms_requests_per_call()));
            let message = match self.cipher.seal(current.plaintext_bytes(), &context).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(table = %self.bound.table.name, column = %column.name,
                        key = %row.key_json(&self.bound.table), error = %e, "sql backfill: cannot encrypt");
                    return Outcome::Failed { conflicts };
                }
            };
            let new = Stored::encode(message, column.encoding);
            self.rows.ready().await;
            self.rows.charge(1.0);
            let written = match self.write(c, &row.key, &new, &current).await {
                Ok(n) => n,
                Err(error) => return self.database_failure(row, column, conflicts, error),
            };
            if written > 0 {
                return Outcome::Encrypted { conflicts };
            }
            // The application wrote the row since it was read: read it again.
            conflicts += 1;
            let again = match self
                .bound
                .rows_by_keys(self.primary, &self.bound.statements.by_key, &[&row.key])
                .await
            {
                Ok(rows) => rows,
                Err(error) => return self.database_failure(row, column, conflicts, error),
            };
            let Some(fresh) = again.into_iter().next() else {
                return Outcome::Gone { conflicts };
            };
            match fresh.values.into_iter().nth(c).flatten() {
                None => return Outcome::Gone { conflicts },
                Some(v) if is_message(&v) => return Outcome::AlreadyEncrypted { conflicts },
                Some(_) if conflicts > self.config.max_conflict_retries => return Outcome::Skipped { conflicts },
                Some(v) => {
                    current = v;
                    text = fresh.text;
                }
            }
        }
    }

    /// A statement about one value failed: the value is `failed` when the database refused it for its values,
    /// else the run stops.
    fn database_failure(&self, row: &ScannedRow, column: &ProtectedColumn, conflicts: u32, error: SqlError) -> Outcome {
        if error.rejects_values() {
            tracing::warn!(table = %self.bound.table.name, column = %column.name, key = %row.key_json(&self.bound.table),
                error = %error, "sql backfill: the database refused the encrypted value; left as it is");
            Outcome::Failed { conflicts }
        } else {
            Outcome::Database { conflicts, error }
        }
    }

    async fn write(&self, c: usize, key: &[String], new: &Stored, old: &Stored) -> Result<u64, SqlError> {
        let value = |s: &Stored| -> Box<dyn ToSql + Sync + Send> {
            match s {
                Stored::Text(t) => Box::new(t.clone()),
                Stored::Bytes(b) => Box::new(b.clone()),
            }
        };
        let (new, old) = (value(new), value(old));
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![new.as_ref() as &(dyn ToSql + Sync)];
        params.extend(key.iter().map(|k| k as &(dyn ToSql + Sync)));
        params.push(old.as_ref() as &(dyn ToSql + Sync));
        self.primary
            .execute(&self.updates[c], &params)
            .await
            .map_err(|e| SqlError::query(&self.bound.table.name, e))
    }
}

/// The saved position of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checkpoint {
    last_key: Option<Vec<String>>,
    finished: bool,
    rows_scanned: u64,
}

/// The planner's row count of the table (`reltuples`; -1 before the first ANALYZE): enough for a progress bar
/// without a `count(*)` over a large table. `None` when unknown or unreadable (progress then has no total).
async fn estimate_rows(primary: &Client, bound: &BoundTable) -> Option<u64> {
    let row = primary
        .query_opt(
            "SELECT reltuples::float8 FROM pg_class WHERE oid = to_regclass($1::text)",
            &[&bound.table.quoted_name()],
        )
        .await
        .ok()??;
    let estimate: f64 = row.try_get(0).ok()?;
    (estimate >= 0.0).then_some(estimate as u64)
}

async fn ensure_checkpoint_table(primary: &Client, table: &str) -> Result<(), SqlError> {
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} (job text PRIMARY KEY, table_name text NOT NULL, \
         last_key text[], finished boolean NOT NULL DEFAULT false, rows_scanned bigint NOT NULL DEFAULT 0, \
         updated_at timestamptz NOT NULL DEFAULT now())"
    );
    match primary.batch_execute(&create).await {
        Ok(()) => Ok(()),
        // Two jobs creating it at once: one loses the race on the catalogue, and the table exists.
        Err(e) if e.code().is_some_and(|c| c.code() == "23505" || c.code() == "42P07") => Ok(()),
        Err(e) => Err(SqlError::query(table, e)),
    }
}

async fn load_checkpoint(primary: &Client, job: &str, table: &str) -> Result<Option<Checkpoint>, SqlError> {
    let row = primary
        .query_opt(
            &format!("SELECT table_name, last_key, finished, rows_scanned FROM {CHECKPOINT_TABLE} WHERE job = $1"),
            &[&job],
        )
        .await
        .map_err(|e| SqlError::query(table, e))?;
    let Some(row) = row else { return Ok(None) };
    let saved_table: String = row.get(0);
    if saved_table != table {
        return Err(SqlError::Schema {
            table: table.to_owned(),
            message: format!("job {job:?} is the backfill of table {saved_table:?}; choose another --job"),
        });
    }
    Ok(Some(Checkpoint {
        last_key: row.get(1),
        finished: row.get(2),
        rows_scanned: u64::try_from(row.get::<_, i64>(3)).unwrap_or(0),
    }))
}

/// Resets a finished job's checkpoint, so that the next pass starts at the first row. Conditional on the job being
/// finished, so that a restart racing another run of the job cannot reset its progress.
async fn restart_checkpoint(primary: &Client, job: &str, table: &str) -> Result<(), SqlError> {
    let reset = primary
        .execute(
            &format!(
                "UPDATE {CHECKPOINT_TABLE} SET last_key = NULL, finished = false, rows_scanned = 0, updated_at = now() \
                 WHERE job = $1 AND finished"
            ),
            &[&job],
        )
        .await
        .map_err(|e| SqlError::query(table, e))?;
    if reset == 0 {
        return Err(SqlError::Schema {
            table: table.to_owned(),
            message: format!("job {job:?} changed while it was restarted; run the command again"),
        });
    }
    Ok(())
}

async fn save_checkpoint(
    primary: &Client,
    job: &str,
    table: &str,
    last_key: Option<&[String]>,
    finished: bool,
    rows_scanned: u64,
) -> Result<(), SqlError> {
    let scanned = i64::try_from(rows_scanned).unwrap_or(i64::MAX);
    primary
        .execute(
            &format!(
                "INSERT INTO {CHECKPOINT_TABLE} (job, table_name, last_key, finished, rows_scanned, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (job) DO UPDATE SET last_key = EXCLUDED.last_key, \
                 finished = EXCLUDED.finished, rows_scanned = {CHECKPOINT_TABLE}.rows_scanned + $5, updated_at = now()"
            ),
            &[&job, &table, &last_key, &finished, &scanned],
        )
        .await
        .map_err(|e| SqlError::query(table, e))?;
    Ok(())
}

/// Runs the backfill of one table on `primary`. `progress` gets a snapshot at most every
/// `config.progress_interval` and one at the end; `shutdown` stops the run after the page in progress (checkpoint
/// saved).
pub async fn backfill(
    primary: &Client,
    bound: &BoundTable,
    cipher: &dyn ValueCipher,
    config: &BackfillConfig,
    progress: &mut (dyn FnMut(&Progress) + Send),
    shutdown: impl Future<Output = ()>,
) -> Result<BackfillReport, SqlError> {
    let started = Instant::now();
    let table = bound.table.name.clone();
    let checkpoint = if config.dry_run {
        None
    } else {
        ensure_checkpoint_table(primary, &table).await?;
        let checkpoint = load_checkpoint(primary, &config.job, &table).await?;
        if config.restart {
            match checkpoint {
                Some(c) if c.finished => {
                    restart_checkpoint(primary, &config.job, &table).await?;
                    None
                }
                Some(_) => {
                    return Err(SqlError::Schema {
                        table: table.clone(),
                        message: format!(
                            "job {:?} has not finished; run it without --restart to resume it",
                            config.job
                        ),
                    });
                }
                None => None,
            }
        } else {
            checkpoint
        }
    };
    let mut report = BackfillReport {
        system: "aurora",
        table: table.clone(),
        job: config.job.clone(),
        completion: Completion::Finished,
        resumed: checkpoint.as_ref().is_some_and(|c| c.last_key.is_some()),
        already_finished: checkpoint.as_ref().is_some_and(|c| c.finished),
        counts: Counts::default(),
        elapsed_seconds: 0.0,
        limited_by: None,
        kms_requests: 0,
        error: None,
    };
    if report.already_finished {
        return Ok(report);
    }
    let resumed_at_rows = checkpoint
        .as_ref()
        .filter(|c| c.last_key.is_some())
        .map_or(0, |c| c.rows_scanned);
    let estimated_rows = estimate_rows(primary, bound).await;
    let snapshot = |counts: &Counts| Progress::new(counts, started.elapsed(), resumed_at_rows, estimated_rows);
    let run = Run {
        primary,
        bound,
        cipher,
        config,
        updates: bound
            .table
            .columns
            .iter()
            .map(|c| conditional_update(&bound.table, c, &bound.key_types))
            .collect(),
        rows: Budget::new(BudgetKind::Rows, config.rows_per_second),
        kms: Budget::new(BudgetKind::Kms, config.kms_requests_per_second),
    };
    let mut last = checkpoint.and_then(|c| c.last_key);
    let mut last_progress = Instant::now();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let page = tokio::select! {
            biased;
            () = &mut shutdown => { report.completion = Completion::Interrupted; break; }
            page = bound.page(primary, last.as_deref(), config.page_size) => match page {
                Ok(page) => page,
                Err(e) => {
                    report.fail(&e);
                    break;
                }
            },
        };
        let counts = &mut report.counts;
        counts.rows_scanned += page.len() as u64;
        let mut plaintext = Vec::new();
        for (r, row) in page.iter().enumerate() {
            for (c, value) in row.values.iter().enumerate() {
                match value {
                    None => counts.nulls += 1,
                    Some(v) if is_message(v) => counts.already_encrypted += 1,
                    Some(v) => plaintext.push((r, c, v.clone())),
                }
            }
        }
        if config.dry_run {
            counts.would_encrypt += plaintext.len() as u64;
        } else {
            let outcomes: Vec<Outcome> = futures::stream::iter(plaintext)
                .map(|(r, c, v)| run.encrypt_value(&page[r], c, v))
                .buffer_unordered(config.concurrency.max(1))
                .collect()
                .await;
            let mut database_error = None;
            for outcome in outcomes {
                let conflicts = match outcome {
                    Outcome::Encrypted { conflicts } => {
                        counts.encrypted += 1;
                        conflicts
                    }
                    Outcome::AlreadyEncrypted { conflicts } | Outcome::Gone { conflicts } => conflicts,
                    Outcome::Skipped { conflicts } => {
                        counts.skipped_after_conflicts += 1;
                        conflicts
                    }
                    Outcome::Failed { conflicts } => {
                        counts.failed += 1;
                        conflicts
                    }
                    Outcome::Database { conflicts, error } => {
                        database_error.get_or_insert(error);
                        conflicts
                    }
                };
                counts.conflicts += u64::from(conflicts);
            }
            // The page is not checkpointed: its values are read again (the encrypted ones as such) on resume.
            if let Some(e) = database_error {
                report.fail(&e);
                break;
            }
        }
        let full = page.len() as i64 == config.page_size;
        if let Some(end) = page.last() {
            last = Some(end.key.clone());
        }
        if !config.dry_run
            && let Err(e) =
                save_checkpoint(primary, &config.job, &table, last.as_deref(), !full, page.len() as u64).await
        {
            report.fail(&e);
            break;
        }
        if last_progress.elapsed() >= config.progress_interval {
            progress(&snapshot(&report.counts));
            last_progress = Instant::now();
        }
        if !full {
            break;
        }
    }
    progress(&snapshot(&report.counts));
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    report.kms_requests = run.kms.charged() as u64;
    report.limited_by = [&run.rows, &run.kms]
        .into_iter()
        .filter(|b| !b.waited().is_zero())
        .max_by_key(|b| b.waited())
        .map(|b| b.kind().as_str());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(completion: Completion, counts: Counts) -> BackfillReport {
        BackfillReport {
            system: "aurora",
            table: "t".into(),
            job: "j".into(),
            completion,
            resumed: false,
            already_finished: false,
            counts,
            elapsed_seconds: 0.0,
            limited_by: None,
            kms_requests: 0,
            error: None,
        }
    }

    #[test]
    fn exit_codes_match_the_dynamodb_backfill() {
        let ok = Counts {
            encrypted: 3,
            ..Counts::default()
        };
        assert_eq!(report(Completion::Finished, ok.clone()).exit_code(), 0);
        let left = Counts {
            skipped_after_conflicts: 1,
            ..ok.clone()
        };
        assert_eq!(report(Completion::Finished, left.clone()).exit_code(), 3);
        let failed = Counts { failed: 1, ..left };
        assert_eq!(report(Completion::Finished, failed.clone()).exit_code(), 1);
        assert_eq!(report(Completion::Interrupted, failed.clone()).exit_code(), 130);
        assert_eq!(report(Completion::Failed, failed).exit_code(), 4);
    }

    #[test]
    fn progress_counts_earlier_runs_and_estimates_what_is_left() {
        let counts = Counts {
            rows_scanned: 200,
            ..Counts::default()
        };
        let p = Progress::new(&counts, Duration::from_secs(2), 1_000, Some(1_600));
        assert_eq!(p.position(), 1_200);
        assert_eq!(p.rows_per_second, 100.0);
        assert_eq!(p.eta_seconds, Some(4), "400 rows left at 100 rows/s");
        // No estimate (never analysed) or no rate yet: no ETA, and no division by zero.
        assert_eq!(
            Progress::new(&counts, Duration::from_secs(2), 0, None).eta_seconds,
            None
        );
        let idle = Progress::new(&Counts::default(), Duration::ZERO, 0, Some(10));
        assert_eq!((idle.rows_per_second, idle.eta_seconds), (0.0, None));
        // A table that grew past its estimate: nothing left, not a negative number.
        assert_eq!(
            Progress::new(&counts, Duration::from_secs(1), 0, Some(100)).eta_seconds,
            Some(0)
        );
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["system"], "aurora");
        assert_eq!(json["rows_scanned"], 200, "the counts are flattened: {json}");
    }

    #[test]
    fn messages_are_left_alone_and_plaintext_is_not() {
        assert!(is_message(&Stored::Bytes(vec![0x02, 0x05, 0x78, 1])));
        assert!(!is_message(&Stored::Text("123-45-6789".into())));
        // Base64 of a message is a message; base64 of anything else is not.
        assert!(is_message(&Stored::encode(
            vec![0x02, 0x04, 0x78],
            crate::Encoding::Base64
        )));
        assert!(!is_message(&Stored::Text("aGVsbG8=".into())));
    }
}
