//! `ddbguard migrate status|plan|apply`: the migration files of a folder, run through the backfill engine.
//!
//! - `status` lists every migration file as `applied` (with its record) or `pending`, from the records in the
//!   ledger table (layout: `ddbguard_backfill::ledger`).
//! - `plan` runs every pending migration as a dry run: items and bytes by outcome, sample keys, the read and write
//!   units and KMS calls it will cost and the time at the configured rates. It writes nothing.
//! - `apply` runs the pending migrations in the order of their numbers (job name = migration id, so a killed apply
//!   resumes from its checkpoints) and records each one that finished cleanly, with its counters and the SHA-256
//!   of its file. It stops at the first migration that does not finish cleanly, with that run's exit code.
//!
//! A migration with `from_legacy = true` also migrates the table's legacy DynamoDB Encryption Client items, as
//! `backfill --from-legacy` does.
//!
//! Every file is validated before anything runs; an invalid file (unknown action, unknown table, …) or an
//! applied migration whose file has changed since is refused with exit 2, naming the file (and the field).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use ddbguard_backfill::ItemFilter;
use ddbguard_backfill::ledger::{self, MigrationRecord};
use ddbguard_verify::service::RegionClients as _;
use serde_json::json;

use crate::backfill::{self, Job, RunArgs};
use crate::config::Config;
use crate::config::migration::{self, Migration};
use crate::keyring::{self, AwsContext};

/// `ddbguard migrate` subcommands.
#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// List applied and pending migrations (JSON on stdout).
    Status(MigrateArgs),
    /// Dry run of every pending migration: what would change and what it would cost. Writes nothing.
    Plan(MigrateArgs),
    /// Run the pending migrations in order and record each. Exit codes as `backfill`.
    Apply(MigrateArgs),
}

/// Arguments of every `migrate` subcommand.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArgs,

    /// The folder of `NNNN_name.toml` migration files.
    #[arg(long, default_value = "migrations", value_name = "DIR")]
    pub migrations: PathBuf,

    /// Not a flag of `migrate` (`plan` is the dry run): accepted only to refuse it with an explanation rather
    /// than clap's bare "unexpected argument".
    #[arg(long, hide = true)]
    pub dry_run: bool,

    #[command(flatten)]
    pub run: RunArgs,
}

/// A migration file and what the ledger says about it.
struct Entry {
    migration: Migration,
    record: Option<MigrationRecord>,
}

impl Entry {
    fn state(&self) -> &'static str {
        if self.record.is_some() { "applied" } else { "pending" }
    }

    fn json(&self) -> serde_json::Value {
        let m = &self.migration;
        let mut value = json!({
            "id": m.id,
            "file": m.path.display().to_string(),
            "table": m.table.name,
            "state": self.state(),
            "checksum": m.checksum,
        });
        if let Some(r) = &self.record {
            value["applied_at_ms"] = r.applied_at_ms.into();
            value["applied_in"] = r.region.clone().into();
            value["report"] = serde_json::from_str(&r.report).unwrap_or(serde_json::Value::Null);
        }
        value
    }
}

/// Runs a `migrate` subcommand. `Err` is a usage or configuration error (exit 2).
pub async fn run(command: MigrateCommand) -> anyhow::Result<ExitCode> {
    let (args, mode) = match command {
        MigrateCommand::Status(a) => (a, Mode::Status),
        MigrateCommand::Plan(a) => (a, Mode::Plan),
        MigrateCommand::Apply(a) => (a, Mode::Apply),
    };
    if args.dry_run {
        bail!("{}", dry_run_refusal(mode));
    }
    let config = args.config.load()?;
    let migrations = migration::load_dir(&args.migrations, &config)?;
    let entries = read_ledger(&config, &args.run, migrations).await?;
    let mut out = Vec::new();
    let mut code = 0u8;
    for entry in &entries {
        let mut value = entry.json();
        match mode {
            Mode::Status => {}
            Mode::Plan | Mode::Apply if entry.record.is_some() => {}
            Mode::Plan => {
                let run = RunArgs {
                    dry_run: true,
                    ..args.run.clone()
                };
                let job = prepare(&config, &entry.migration, &run).await?;
                let report = job.execute().await?;
                let would_write_units = report.would_write_units();
                value["plan"] = json!({
                    "report": backfill::report_json(&report, &job.limits),
                    "items_by_outcome": report.progress.outcomes,
                    "bytes_by_outcome": report.bytes_by_outcome,
                    "samples": report.samples,
                    "read_units": report.progress.read_units,
                    "write_units": would_write_units,
                    "kms_calls": report.progress.kms_calls,
                    "estimated_seconds": report.estimated_seconds,
                });
                backfill::print_stop_error(&report);
                // A plan's items are never failed or left: only how it ended sets the code.
                if report.completion != ddbguard_backfill::Completion::Finished {
                    code = report.completion.exit_code(0, 0);
                }
            }
            Mode::Apply => {
                let job = prepare(&config, &entry.migration, &args.run).await?;
                let report = job.execute().await?;
                let report_json = backfill::report_json(&report, &job.limits);
                backfill::print_stop_error(&report);
                code = backfill::exit_code(&report);
                if code == 0 {
                    let record = MigrationRecord {
                        id: entry.migration.id.clone(),
                        table: entry.migration.table.name.clone(),
                        region: report.region.clone(),
                        checksum: entry.migration.checksum.clone(),
                        applied_at_ms: ledger::now_ms(),
                        report: serde_json::to_string(&report.progress).unwrap_or_default(),
                    };
                    ledger::write_record(job.db(), job.ledger_table(), &record)
                        .await
                        .with_context(|| format!("recording migration {} in {}", record.id, job.ledger_table()))?;
                    value["state"] = "applied".into();
                    value["applied_now"] = true.into();
                }
                value["report"] = report_json;
                if let Some(note) = backfill::limit_note(&report, &job.limits) {
                    eprintln!("ddbguard: {}: {note}", entry.migration.id);
                }
            }
        }
        out.push(value);
        if code != 0 {
            break;
        }
    }
    let text = serde_json::to_string_pretty(&json!({ "migrations": out })).unwrap_or_default();
    println!("{text}");
    Ok(ExitCode::from(code))
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Status,
    Plan,
    Apply,
}

/// Why `--dry-run` is refused, and what to run instead.
fn dry_run_refusal(mode: Mode) -> &'static str {
    match mode {
        Mode::Plan => "--dry-run: `migrate plan` is always a dry run (it writes nothing); drop the flag",
        Mode::Apply => "--dry-run: `migrate apply` has no dry run; `ddbguard migrate plan` shows what it would do",
        Mode::Status => "--dry-run: `migrate status` only reads the ledger; drop the flag",
    }
}

async fn prepare(config: &Config, migration: &Migration, run: &RunArgs) -> anyhow::Result<Job> {
    let filter = migration
        .filter
        .clone()
        .map(|f| ItemFilter(std::sync::Arc::new(move |item| f.matches(item))));
    let run = RunArgs {
        from_legacy: migration.from_legacy,
        ..run.clone()
    };
    Job::prepare(config, &migration.table, &run, &migration.id, filter)
        .await
        .with_context(|| format!("migration {}", migration.path.display()))
}

/// The ledger's record of every migration; an applied migration whose file changed is refused.
async fn read_ledger(config: &Config, run: &RunArgs, migrations: Vec<Migration>) -> anyhow::Result<Vec<Entry>> {
    let mut settings = match &run.region {
        Some(r) => config.aws_settings(Some(r.clone()))?,
        None => keyring::aws_settings(config).await?,
    };
    if let Some(r) = &run.region {
        settings.region = r.clone();
    }
    let aws = AwsContext::new(&settings).await;
    let db = aws.dynamo(&settings.region);
    let ledger_table = &config.backfill.ledger_table;
    let mut entries = Vec::with_capacity(migrations.len());
    for migration in migrations {
        let record = ledger::read_record(&db, ledger_table, &migration.id)
            .await
            .with_context(|| format!("reading the ledger table {ledger_table} in {}", settings.region))?;
        if let Some(r) = &record
            && r.checksum != migration.checksum
        {
            bail!(
                "migration {}: file: changed since it was applied on {} ms (checksum {} then, {} now); applied \
                 migrations are never edited: add a new migration instead",
                migration.path.display(),
                r.applied_at_ms,
                r.checksum,
                migration.checksum
            );
        }
        entries.push(Entry { migration, record });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{Cli, Command};

    /// `--dry-run` is no documented flag of `migrate`, yet still refused with the reason (and exit 2), before
    /// any configuration is read.
    #[tokio::test]
    async fn dry_run_is_refused_with_the_reason() {
        let help = Cli::try_parse_from(["ddbguard", "migrate", "plan", "--help"])
            .unwrap_err()
            .to_string();
        assert!(!help.contains("--dry-run"), "{help}");
        let backfill_help = Cli::try_parse_from(["ddbguard", "backfill", "--help"])
            .unwrap_err()
            .to_string();
        assert!(backfill_help.contains("--dry-run"), "{backfill_help}");
        for (sub, says) in [("plan", "always a dry run"), ("apply", "migrate plan` shows")] {
            let cli = Cli::try_parse_from(["ddbguard", "migrate", sub, "--config", "/nonexistent.toml", "--dry-run"])
                .unwrap();
            let Command::Migrate(command) = cli.command else {
                panic!("not a migrate command")
            };
            let e = run(command).await.unwrap_err().to_string();
            assert!(e.contains(says), "{sub}: {e}");
        }
    }
}
