//! `ddbguard sql audit|backfill`: the Aurora Global Database side, against PostgreSQL readers and the primary.
//!
//! The region is `[aws] region` (or the SDK's region chain); `sql` commands read from that region's replica, or
//! from the primary when it is the home region. Passwords come from `PGPASSWORD` or the PostgreSQL password file
//! (`PGPASSFILE`, `~/.pgpass`), never from the config.
//!
//! `sql audit` exit codes, as `verify --until-caught-up`: 0 every verdict passes (and with `--compare-primary` no
//! row is missing or different); 1 otherwise, or stopped early by a signal; 2 configuration, connection or schema
//! errors.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ddbguard_sql::{AuditConfig, BoundTable, Credentials, ValueCipher};

use crate::config::{Config, KeyringSettings, SqlTableSettings};

/// `ddbguard sql` subcommands.
#[derive(Debug, Subcommand)]
pub enum SqlCommand {
    /// Give every protected value of a table on the local region's reader its verdict; with
    /// --compare-primary also report rows missing or different there. Prints a JSON summary; exit 0 when every
    /// verdict passed, 1 otherwise, 2 on config, connection or schema errors.
    Audit(SqlAuditArgs),
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

/// The AWS Encryption SDK cipher of a table's keyring.
///
/// The keyrings of the message format (KMS MRK with the local replica, MRK discovery, raw AES) are those of
/// `ddbguard-keys`; this build has none for the message format yet, so every kind is refused here with a clear
/// message rather than judged with a stand-in.
fn cipher(table: &SqlTableSettings) -> anyhow::Result<Arc<dyn ValueCipher>> {
    let kind = match &table.keyring {
        KeyringSettings::RawAes { .. } => "raw-aes",
        KeyringSettings::KmsMrk { .. } => "kms-mrk",
        KeyringSettings::KmsMrkDiscovery { .. } => "kms-mrk-discovery",
        KeyringSettings::Hierarchy(_) => "hierarchy",
    };
    anyhow::bail!(
        "sql table {:?}: the {kind} keyring for AWS Encryption SDK messages is not available in this build",
        table.table.name
    )
}

async fn run_audit(args: SqlAuditArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let target = target(&config, &args.table).await?;
    let recheck_after = Duration::try_from_secs_f64(args.recheck_seconds)
        .ok()
        .context("--recheck-seconds must be a number of seconds, 0 or more")?;
    anyhow::ensure!(args.page_size > 0, "--page-size must be at least 1");
    let cipher = cipher(target.table)?;
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
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &report).context("cannot write output")?;
    std::io::Write::write_all(&mut out, b"\n").context("cannot write output")?;
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
