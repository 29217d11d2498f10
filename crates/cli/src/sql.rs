//! `ddbguard sql audit|backfill`: the Aurora Global Database side, against PostgreSQL readers and the primary.
//!
//! The region is `[aws] region` (or the SDK's region chain); `sql` commands read from that region's replica, or
//! from the primary when it is the home region. Passwords come from `PGPASSWORD` or the PostgreSQL password file
//! (`PGPASSFILE`, `~/.pgpass`), never from the config.
//!
//! `sql audit` exit codes, as `verify --until-caught-up`: 0 every verdict passes (and with `--compare-primary` no
//! row is missing or different); 1 otherwise, or stopped early by a signal; 2 configuration, connection or schema
//! errors.
//!
//! `sql backfill` runs on the primary (`[sql] primary`) and exits as `ddbguard backfill`: 0 finished, 1 values
//! failed, 2 usage/config/connection (nothing written), 3 values left after repeated conflicts, 4 stopped after
//! it started by a database failure (the report has the `error`; the same command resumes), 130 interrupted. Progress goes to
//! stderr as the DynamoDB backfill's (`crate::progress`): a bar on a terminal, else a JSON line every 5 s
//! (`{"event": "backfill_progress", "job": …, "progress": {"system": "aurora", …}}`); the report to stdout.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ddbguard_esdk::{DecryptOptions, EncryptOptions};
use ddbguard_keys::RawAesKeyring;
use ddbguard_keys::kms::{MrkDiscoveryKeyring, MrkKeyring};
use ddbguard_sql::{AuditConfig, BoundTable, Credentials, EsdkCipher, ValueCipher};

use crate::config::{Config, KeyringSettings, SqlTableSettings};
use crate::keyring::AwsContext;

/// `ddbguard sql` subcommands.
#[derive(Debug, Subcommand)]
pub enum SqlCommand {
    /// Give every protected value of a table on the local region's reader its verdict; with
    /// --compare-primary also report rows missing or different there. Prints a JSON summary; exit 0 when every
    /// verdict passed, 1 otherwise, 2 on config, connection or schema errors.
    Audit(SqlAuditArgs),
    /// Encrypt a table's plaintext protected values on the primary: keyset pages, each write conditional on the
    /// value read (a concurrent application write wins), resumable from a checkpoint table in the database,
    /// rate-limited. Exit 0 finished, 1 values failed, 2 usage/config, 3 values left after repeated conflicts,
    /// 130 interrupted.
    Backfill(SqlBackfillArgs),
    /// Verify a table continuously on the local region's reader: rows changed since the last read (by the
    /// table's `cursor_column`), a full pass every --full-pass-seconds, and canaries (written on the primary by
    /// the home region's verifier, read here). Serves /metrics with --metrics-addr; runs until SIGTERM/SIGINT,
    /// then prints a JSON summary.
    Verify(SqlVerifyArgs),
}

/// `ddbguard sql verify` arguments.
#[derive(Debug, Args)]
pub struct SqlVerifyArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArgs,

    /// The `name` of a `[[sql_tables]]` entry.
    #[arg(long)]
    pub table: String,

    /// Seconds between two incremental reads (and canary checks).
    #[arg(long, default_value_t = 5.0)]
    pub poll_seconds: f64,

    /// Seconds between two full passes; 0: only the first.
    #[arg(long, default_value_t = 86_400.0)]
    pub full_pass_seconds: f64,

    /// Seconds between two canaries written on the primary (home region only).
    #[arg(long, default_value_t = 10.0)]
    pub canary_interval_seconds: f64,

    /// A canary older than this many seconds is missing.
    #[arg(long, default_value_t = 60.0)]
    pub canary_overdue_seconds: f64,

    /// Rows per page.
    #[arg(long, default_value_t = 500)]
    pub page_size: i64,

    /// Values judged at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,

    /// Serve /metrics (Prometheus) here.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
}

/// `ddbguard sql backfill` arguments.
#[derive(Debug, Args)]
pub struct SqlBackfillArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArgs,

    /// The `name` of a `[[sql_tables]]` entry.
    #[arg(long)]
    pub table: String,

    /// The job name, the key of its checkpoint (default `backfill-TABLE`); a finished job is not run again unless
    /// `--restart` starts a new pass of it.
    #[arg(long)]
    pub job: Option<String>,

    /// Rows per page (and per checkpoint).
    #[arg(long, default_value_t = 500)]
    pub page_size: i64,

    /// Values encrypted and written at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,

    /// Rows written per second (default: unlimited).
    #[arg(long)]
    pub rows_per_second: Option<f64>,

    /// KMS requests per second (default: unlimited).
    #[arg(long)]
    pub kms_requests_per_second: Option<f64>,

    /// Re-reads after a concurrent write before a value is left for a later run.
    #[arg(long, default_value_t = 3)]
    pub max_conflict_retries: u32,

    /// Count the plaintext values; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Start a new pass of the finished job `--job` from the first row (after exit 3, or once lagging
    /// applications stopped writing plaintext). Refused while the job is unfinished (run without it to resume).
    #[arg(long, conflicts_with = "dry_run")]
    pub restart: bool,
}

/// `ddbguard sql audit` arguments.
#[derive(Debug, Args)]
pub struct SqlAuditArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArgs,

    /// The `name` of a `[[sql_tables]]` entry.
    #[arg(long)]
    pub table: String,

    /// Also compare every row with the primary's, and report rows missing or different on the reader.
    #[arg(long)]
    pub compare_primary: bool,

    /// Rows per page.
    #[arg(long, default_value_t = 500)]
    pub page_size: i64,

    /// Values judged at once (each may be a KMS request).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,

    /// Seconds to wait before reading a difference from the primary again: a write still replicating is not a
    /// finding.
    #[arg(long, default_value_t = 2.0)]
    pub recheck_seconds: f64,

    /// Serve /metrics (Prometheus) here while the audit runs.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
}

/// Runs a `sql` subcommand.
pub async fn run(command: SqlCommand) -> anyhow::Result<ExitCode> {
    match command {
        SqlCommand::Audit(args) => run_audit(args).await,
        SqlCommand::Backfill(args) => run_backfill(args).await,
        SqlCommand::Verify(args) => run_verify(args).await,
    }
}

/// The local region, the table's settings and the reader's connection string.
struct Target<'c> {
    region: String,
    reader: String,
    primary: String,
    table: &'c SqlTableSettings,
}

async fn target<'c>(config: &'c Config, name: &str) -> anyhow::Result<Target<'c>> {
    let (sql, table) = config.sql_table(name)?;
    let region = crate::keyring::aws_settings(config).await?.region;
    let reader = sql.reader_for(&region).with_context(|| {
        format!(
            "{}: [sql.replicas] has no reader for region {region:?}, and it is not the home region",
            config.origin
        )
    })?;
    Ok(Target {
        region,
        reader: reader.to_owned(),
        primary: sql.primary.clone(),
        table,
    })
}

/// The AWS Encryption SDK cipher of a table's keyring: `ddbguard-keys`' keyrings (the MRK keyring decrypts with
/// the local replica), the SDKs' default commitment policy (non-committing suites are `policy_violation`), and
/// 0x0578 framed messages for the backfill, as the official SDKs write by default.
async fn cipher(config: &Config, table: &SqlTableSettings) -> anyhow::Result<Arc<dyn ValueCipher>> {
    let aws = match table.keyring {
        KeyringSettings::RawAes { .. } => None,
        _ => Some(AwsContext::new(&crate::keyring::aws_settings(config).await?).await),
    };
    let aws = || {
        aws.as_ref()
            .context("KMS keyrings need the AWS clients of the local region")
    };
    let (keyring, kms_requests): (Arc<dyn ddbguard_esdk::Keyring>, u32) = match &table.keyring {
        KeyringSettings::RawAes { namespace, name, key } => (
            Arc::new(RawAesKeyring::new(namespace.clone(), name.clone(), key.clone())),
            0,
        ),
        KeyringSettings::KmsMrk { key_arn } => {
            let aws = aws()?;
            let keyring = MrkKeyring::new(&key_arn.to_string(), aws.local_kms()?, Some(aws.cache.clone()))?;
            (Arc::new(keyring), 1)
        }
        KeyringSettings::KmsMrkDiscovery { filter } => {
            let aws = aws()?;
            let keyring = MrkDiscoveryKeyring::new(aws.local_kms()?, filter.clone(), Some(aws.cache.clone()))?;
            (Arc::new(keyring), 1)
        }
        KeyringSettings::Hierarchy(_) => {
            anyhow::bail!(
                "sql table {:?}: the hierarchy keyring is not supported",
                table.table.name
            )
        }
    };
    Ok(Arc::new(EsdkCipher::new(
        keyring,
        DecryptOptions::default(),
        EncryptOptions::default(),
        kms_requests,
    )))
}

async fn run_audit(args: SqlAuditArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let target = target(&config, &args.table).await?;
    let recheck_after = Duration::try_from_secs_f64(args.recheck_seconds)
        .ok()
        .context("--recheck-seconds must be a number of seconds, 0 or more")?;
    anyhow::ensure!(args.page_size > 0, "--page-size must be at least 1");
    let cipher = cipher(&config, target.table).await?;
    let metrics = match args.metrics_addr {
        Some(addr) => {
            let server = crate::audit::serve_metrics(addr).await?;
            ddbguard_sql::metrics::describe();
            Some(server)
        }
        None => None,
    };
    let credentials = Credentials::from_env(&|name| std::env::var(name).ok());
    let reader = ddbguard_sql::connect(&target.reader, &credentials).await?;
    let primary = if args.compare_primary {
        Some(ddbguard_sql::connect(&target.primary, &credentials).await?)
    } else {
        None
    };
    let bound = BoundTable::bind(&reader, &target.table.table).await?;
    let audit_config = AuditConfig {
        region: target.region.clone(),
        page_size: args.page_size,
        concurrency: args.concurrency,
        recheck_after,
    };
    tracing::info!(table = %target.table.table.name, region = %target.region, "sql audit: starting");
    let report = ddbguard_sql::audit(
        &reader,
        primary.as_ref(),
        &bound,
        cipher.as_ref(),
        &audit_config,
        crate::signal::shutdown_signal("sql audit: stopping"),
    )
    .await;
    if let Some(server) = metrics {
        server.abort();
    }
    let report = report?;
    crate::print_json(&report)?;
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn run_backfill(args: SqlBackfillArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let (sql, table) = config.sql_table(&args.table)?;
    anyhow::ensure!(args.page_size > 0, "--page-size must be at least 1");
    for (flag, rate) in [
        ("--rows-per-second", args.rows_per_second),
        ("--kms-requests-per-second", args.kms_requests_per_second),
    ] {
        anyhow::ensure!(
            rate.is_none_or(|r| r > 0.0 && r.is_finite()),
            "{flag} must be a positive number"
        );
    }
    let cipher = cipher(&config, table).await?;
    let credentials = Credentials::from_env(&|name| std::env::var(name).ok());
    let primary = ddbguard_sql::connect(&sql.primary, &credentials).await?;
    let bound = BoundTable::bind(&primary, &table.table).await?;
    let backfill_config = ddbguard_sql::BackfillConfig {
        job: args.job.unwrap_or_else(|| format!("backfill-{}", table.table.name)),
        page_size: args.page_size,
        concurrency: args.concurrency,
        rows_per_second: args.rows_per_second,
        kms_requests_per_second: args.kms_requests_per_second,
        max_conflict_retries: args.max_conflict_retries,
        dry_run: args.dry_run,
        restart: args.restart,
        progress_interval: crate::progress::interval(),
    };
    let mut reporter = crate::progress::Reporter::new(&backfill_config.job, backfill_config.dry_run);
    let mut progress = |p: &ddbguard_sql::backfill::Progress| reporter.update(p);
    tracing::info!(table = %table.table.name, job = %backfill_config.job, "sql backfill: starting");
    let report = ddbguard_sql::backfill(
        &primary,
        &bound,
        cipher.as_ref(),
        &backfill_config,
        &mut progress,
        crate::signal::shutdown_signal("sql backfill: stopping after this page"),
    )
    .await?;
    // The engine's last snapshot is the end of the run: the bar stays as it shows it.
    reporter.done();
    let mut value = serde_json::to_value(&report).context("cannot encode the report")?;
    if let Some(object) = value.as_object_mut() {
        object.insert("exit_code".into(), report.exit_code().into());
    }
    crate::print_json(&value)?;
    if let Some(error) = &report.error {
        crate::backfill::print_stopped(&format!("table {:?}", report.table), error);
    }
    Ok(ExitCode::from(report.exit_code()))
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .with_context(|| format!("{flag} must be a number of seconds, 0 or more"))
}

async fn run_verify(args: SqlVerifyArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let target = target(&config, &args.table).await?;
    let (sql, _) = config.sql_table(&args.table)?;
    let home_region = sql.home_region.clone().unwrap_or_else(|| target.region.clone());
    anyhow::ensure!(args.page_size > 0, "--page-size must be at least 1");
    let full_pass = seconds("--full-pass-seconds", args.full_pass_seconds)?;
    let verify_config = ddbguard_sql::verify::VerifyConfig {
        region: target.region.clone(),
        home_region: home_region.clone(),
        poll_interval: seconds("--poll-seconds", args.poll_seconds)?,
        full_pass_every: (!full_pass.is_zero()).then_some(full_pass),
        canary_interval: seconds("--canary-interval-seconds", args.canary_interval_seconds)?,
        canary_overdue_after: seconds("--canary-overdue-seconds", args.canary_overdue_seconds)?,
        page_size: args.page_size,
        concurrency: args.concurrency,
    };
    let cipher = cipher(&config, target.table).await?;
    let metrics = match args.metrics_addr {
        Some(addr) => {
            let server = crate::audit::serve_metrics(addr).await?;
            ddbguard_sql::metrics::describe();
            Some(server)
        }
        None => None,
    };
    let credentials = Credentials::from_env(&|name| std::env::var(name).ok());
    let reader = ddbguard_sql::connect(&target.reader, &credentials).await?;
    let primary = if target.region == home_region {
        Some(ddbguard_sql::connect(&target.primary, &credentials).await?)
    } else {
        None
    };
    let bound = BoundTable::bind(&reader, &target.table.table).await?;
    tracing::info!(table = %target.table.table.name, region = %target.region, %home_region, "sql verify: starting");
    let report = ddbguard_sql::verify::run(
        &reader,
        primary.as_ref(),
        &bound,
        cipher.as_ref(),
        &verify_config,
        crate::signal::shutdown_signal("sql verify: stopping"),
    )
    .await;
    if let Some(server) = metrics {
        server.abort();
    }
    let report = report?;
    crate::print_json(&report)?;
    Ok(ExitCode::SUCCESS)
}
