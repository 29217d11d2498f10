//! `ddbguard backfill`: encrypts the plaintext items of one table in its home region with the backfill engine.
//!
//! Wiring: the `[[tables]]` entry gives the item format, the keyring and the policy (the judge `verify` uses);
//! `[aws]` the clients; `[backfill]` the ledger table and the default budgets. Before anything is scanned the run
//! is refused (exit 2, one line naming the field) when the table is missing, has no stream, is a replica outside
//! its home region, or its keyring cannot encrypt.
//!
//! Budgets: an absolute rate, or a share of a provisioned table's capacity (default half); an on-demand table
//! gets [`DEFAULT_ON_DEMAND_READ_UNITS`] / [`DEFAULT_ON_DEMAND_WRITE_UNITS`] unless told otherwise. The KMS
//! budget defaults to `[aws] kms_requests_per_second`; a `kms-mrk` keyring costs one `GenerateDataKey` per item,
//! `hierarchy` and `raw-aes` none per item.
//!
//! `--from-legacy` (or a migration's `from_legacy = true`) also migrates the items of the legacy DynamoDB
//! Encryption Client to the DB-ESDK format: each is judged in full as `verify` judges it (the table's
//! `[tables.legacy]` provider; the `aws-kms` provider costs one `Decrypt` per item, charged to the KMS budget) and
//! only an `ok` one is rewritten (`migrated_legacy`); one that does not verify is left as it is
//! (`legacy_refused`, counted as failed). Refused (exit 2) for a table without `[tables.legacy] allowed = true`.
//!
//! Exit codes: 0 finished; 1 some items failed (legacy items refused included); 2 usage or configuration; 3 finished but some items were left
//! plaintext after repeated conflicts with the application; 4 stopped after it started by a DynamoDB or ledger
//! failure that retries did not cure (the report has the `error`; a rerun resumes); 130 interrupted (SIGINT/SIGTERM: the run stops at a
//! page boundary and every finished page is checkpointed).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Args;
use ddbguard_backfill::ledger::RECORD_PREFIX;
use ddbguard_backfill::{BackfillConfig, FromLegacy, ItemFilter, Report, Target};
use ddbguard_dbe::Keyring;
use ddbguard_ddb::{BillingMode, DynamoApi, ErrorKind, SdkDynamo, TableDescription};
use ddbguard_keys::RawAesKeyring;
use ddbguard_verify::Judge;
use ddbguard_verify::service::RegionClients as _;

use crate::config::backfill::{DEFAULT_ON_DEMAND_READ_UNITS, DEFAULT_ON_DEMAND_WRITE_UNITS, check_rate, check_share};
use crate::config::{AwsSettings, Config, KeyringSettings, LegacyProviderSettings, Rate, TableSettings};
use crate::keyring::{self, AwsContext};
use crate::progress::Reporter;

/// `ddbguard backfill` arguments.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArgs,

    /// The physical table name of a `[[tables]]` entry.
    #[arg(long)]
    pub table: String,

    /// The job name. Processes with one job name share its segments and checkpoints, and resume it; a finished
    /// job is not scanned again unless `--restart` starts a new pass of it.
    #[arg(long, default_value = "backfill")]
    pub job: String,

    /// Start a new pass of the finished job `--job` (after exit 3, or once lagging applications stopped writing
    /// plaintext): its segments are reset and the whole table is scanned again. Refused while the job has
    /// unfinished segments (run without it to resume). Start the pass in one process; others join without it.
    #[arg(long)]
    pub restart: bool,

    /// Scan, classify and encrypt in memory, write nothing (not even leases); report what would change.
    #[arg(long)]
    pub dry_run: bool,

    /// Also migrate items of the legacy DynamoDB Encryption Client (`*amzn-ddb-map-desc*`) to the DB-ESDK
    /// format: each is verified and decrypted with the table's `[tables.legacy]` provider, then encrypted with
    /// its keyring; one that does not verify is never rewritten (`legacy_refused`, exit 1). Needs
    /// `[tables.legacy] allowed = true`. With `--dry-run`: counts `would_migrate_legacy` (under the `aws-kms` and
    /// `most-recent` providers from the structure alone, without an AWS call).
    #[arg(long)]
    pub from_legacy: bool,

    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags shared by `backfill` and `migrate`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The region to run in (the table's home region); default `[aws] region`. Must equal the table's
    /// `home_region` when that is set.
    #[arg(long)]
    pub region: Option<String>,

    /// `TotalSegments` of the parallel scan (every process of one job must use the same); default one per
    /// 512 MiB of table, at least 8.
    #[arg(long)]
    pub segments: Option<u32>,

    /// Segments this process works on at once; default `[backfill] concurrency` (4).
    #[arg(long)]
    pub concurrency: Option<usize>,

    /// Write nothing and make no KMS call: set by `backfill --dry-run` and by `migrate plan` (which is always a
    /// dry run), never a flag of its own here.
    #[arg(skip)]
    pub dry_run: bool,

    /// Migrate legacy items too: set by `backfill --from-legacy` and by a migration's `from_legacy = true`.
    #[arg(skip)]
    pub from_legacy: bool,

    /// Read capacity units per second.
    #[arg(long, value_parser = rate)]
    pub read_units_per_second: Option<f64>,

    /// Write capacity units per second.
    #[arg(long, value_parser = rate, conflicts_with = "write_capacity_share")]
    pub write_units_per_second: Option<f64>,

    /// Share (0 < F <= 1) of a provisioned table's write capacity.
    #[arg(long, value_parser = share)]
    pub write_capacity_share: Option<f64>,

    /// KMS requests per second for encryption.
    #[arg(long, value_parser = rate)]
    pub kms_requests_per_second: Option<f64>,
}

fn rate(s: &str) -> Result<f64, String> {
    check_rate(s.parse().map_err(|e| format!("{e}"))?)
}

fn share(s: &str) -> Result<f64, String> {
    check_share(s.parse().map_err(|e| format!("{e}"))?)
}

/// Runs `ddbguard backfill`. `Err` is a usage or configuration error (exit 2).
pub async fn run(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let table = config.table(&args.table)?;
    if args.job.is_empty() || args.job.contains('/') || args.job.starts_with(RECORD_PREFIX) {
        bail!(
            "--job: {:?} must be non-empty, without '/' and not start with \"migration#\"",
            args.job
        );
    }
    let run = RunArgs {
        dry_run: args.dry_run,
        from_legacy: args.from_legacy,
        ..args.run
    };
    let mut job = Job::prepare(&config, table, &run, &args.job, None).await?;
    job.engine.restart = args.restart;
    let report = job.execute().await?;
    Ok(finish(&report, &job.limits))
}

/// The budgets a run uses, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Limits {
    /// Read capacity units per second.
    pub read_units_per_second: f64,
    /// Write capacity units per second.
    pub write_units_per_second: f64,
    /// KMS requests per second.
    pub kms_requests_per_second: f64,
    /// KMS requests one encryption costs.
    pub kms_calls_per_item: f64,
    /// KMS requests judging one legacy item costs (only when legacy items are migrated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_kms_calls_per_item: Option<f64>,
}

/// A checked, ready-to-run job.
pub struct Job {
    db: SdkDynamo,
    target: Target,
    engine: BackfillConfig,
    /// The budgets.
    pub limits: Limits,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// The local region and the AWS settings for a run: `--region` when given, else `[aws] region` / the SDK chain.
async fn run_settings(config: &Config, region: Option<&str>) -> anyhow::Result<AwsSettings> {
    let Some(region) = region else {
        return Ok(keyring::aws_settings(config).await?);
    };
    let mut settings = config.aws_settings(Some(region.to_owned()))?;
    settings.region = region.to_owned();
    if !settings.regions.iter().any(|r| r == region) {
        settings.regions.push(region.to_owned());
    }
    Ok(settings)
}

/// An error about a `[[tables]]` field (one line, exit 2).
fn table_error(config: &Config, table: &TableSettings, field: &str, message: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{}: table {:?}: field `{field}`: {message}", config.origin, table.name)
}

/// KMS requests judging one legacy item with this provider costs: the direct KMS provider decrypts each item's
/// own data key (a `Decrypt`); the most-recent provider decrypts one metastore record per version and keeps it
/// (not charged per item); the wrapped and static providers hold their keys.
pub fn legacy_kms_calls_per_item(provider: &LegacyProviderSettings) -> f64 {
    match provider {
        LegacyProviderSettings::AwsKms { .. } => 1.0,
        _ => 0.0,
    }
}

/// KMS requests one encryption under this keyring costs.
pub fn kms_calls_per_item(keyring: &KeyringSettings) -> f64 {
    match keyring {
        KeyringSettings::KmsMrk { .. } => 1.0,
        _ => 0.0,
    }
}

impl Job {
    /// Checks the table and settings and builds the clients; nothing is written.
    pub async fn prepare(
        config: &Config,
        table: &TableSettings,
        run: &RunArgs,
        job: &str,
        filter: Option<ItemFilter>,
    ) -> anyhow::Result<Job> {
        match &table.keyring {
            KeyringSettings::KmsMrkDiscovery { .. } => {
                return Err(table_error(
                    config,
                    table,
                    "keyring.kind",
                    "a kms-mrk-discovery keyring cannot encrypt; use kms-mrk or hierarchy with the key items are written under",
                ));
            }
            KeyringSettings::Hierarchy(h) if h.branch_key_id.is_none() => {
                return Err(table_error(
                    config,
                    table,
                    "keyring.branch_key_id",
                    "a hierarchy keyring without branch_key_id cannot encrypt",
                ));
            }
            _ => {}
        }
        let legacy = match (&table.legacy, run.from_legacy) {
            (_, false) => None,
            (Some(legacy), true) => Some(legacy),
            (None, true) => {
                return Err(table_error(
                    config,
                    table,
                    "legacy",
                    format!(
                        "--from-legacy: table {:?} does not allow legacy items; add [tables.legacy] with allowed = \
                         true (and the provider the legacy client wrote them with) to migrate them",
                        table.name
                    ),
                ));
            }
        };
        let settings = run_settings(config, run.region.as_deref()).await?;
        let local = settings.region.clone();
        let home = table.home_region.as_deref().or(run.region.as_deref());
        if let Some(home) = home
            && home != local
        {
            let field = if table.home_region.is_some() {
                "home_region"
            } else {
                "--region"
            };
            return Err(table_error(
                config,
                table,
                field,
                format!(
                    "the home region is {home} but this process runs in {local}; writing a global table's items in \
                     two regions lets last-writer-wins silently pick one: run in {home}"
                ),
            ));
        }
        let backfill = &config.backfill;
        let kms_requests_per_second = run
            .kms_requests_per_second
            .or(backfill.kms_requests_per_second)
            .unwrap_or(settings.kms_requests_per_second);
        // The KMS clients' own limiter must not hold the run below its budget.
        let mut settings = settings;
        settings.kms_requests_per_second = settings.kms_requests_per_second.max(kms_requests_per_second);
        let aws = AwsContext::new(&settings).await;
        let db = aws.dynamo(&local);
        let description = describe(config, table, &db, &local).await?;
        if home.is_none() && description.replica_regions.iter().any(|r| *r != local) {
            return Err(table_error(
                config,
                table,
                "home_region",
                format!(
                    "{:?} is a global table (replicas in {}): set home_region or pass --region to say which \
                     region's replica the backfill writes",
                    table.name,
                    description.replica_regions.join(", ")
                ),
            ));
        }
        if description.stream.is_none() {
            return Err(table_error(
                config,
                table,
                "name",
                format!(
                    "table {:?} in {local} has no stream: global tables replicate through it and `verify` reads it; \
                     enable it (NEW_AND_OLD_IMAGES) first",
                    table.name
                ),
            ));
        }
        let provisioned = match description.billing_mode {
            Some(BillingMode::Provisioned {
                read_units,
                write_units,
            }) => Some((read_units, write_units)),
            _ => None,
        };
        let write_rate = match (run.write_units_per_second, run.write_capacity_share) {
            (Some(r), _) => Rate::PerSecond(r),
            (None, Some(s)) => Rate::Share(s),
            (None, None) => backfill.write,
        };
        let read_rate = run.read_units_per_second.map_or(backfill.read, Rate::PerSecond);
        let limits = Limits {
            read_units_per_second: read_rate.units(provisioned.map(|p| p.0), DEFAULT_ON_DEMAND_READ_UNITS),
            write_units_per_second: write_rate.units(provisioned.map(|p| p.1), DEFAULT_ON_DEMAND_WRITE_UNITS),
            kms_requests_per_second,
            kms_calls_per_item: kms_calls_per_item(&table.keyring),
            legacy_kms_calls_per_item: legacy.map(|l| legacy_kms_calls_per_item(&l.provider)),
        };
        let real: Arc<dyn Keyring> = Arc::from(keyring::build(&table.keyring, Some(&aws))?);
        // A dry run encrypts with an in-memory key of the same item shape, so it costs no KMS call; the estimate
        // still counts `kms_calls_per_item` per item.
        let encrypting: Arc<dyn Keyring> = if run.dry_run && table.keyring.needs_aws() {
            let mut key = zeroize::Zeroizing::new([0u8; 32]);
            key.copy_from_slice(uuid::Uuid::new_v4().as_bytes().repeat(2).as_slice());
            Arc::new(RawAesKeyring::new("ddbguard-dry-run", "stand-in", key))
        } else {
            real.clone()
        };
        let policy = keyring::verify_policy(table, 1.0)?;
        let mut judge = Judge::new(policy, real)
            .with_context(|| format!("{}: table {:?}: unusable policy", config.origin, table.name))?;
        // Legacy items are judged only when they are migrated: otherwise they stay `legacy_format`, as before.
        if legacy.is_some()
            && let Some(provider) = keyring::legacy_provider(table, Some(&aws)).await?
        {
            judge = judge.with_legacy_provider(provider);
        }
        let target = Target {
            table: table.name.clone(),
            judge,
            keyring: encrypting,
            kms_calls_per_item: limits.kms_calls_per_item,
            version_attribute: table.version_attribute.clone(),
            from_legacy: legacy.map(|l| FromLegacy {
                kms_calls_per_item: legacy_kms_calls_per_item(&l.provider),
                calls_aws: l.provider.needs_aws(),
            }),
        };
        let mut engine = BackfillConfig::new(
            job,
            local,
            backfill.ledger_table.clone(),
            config.verify.worker_id.clone(),
        );
        engine.segments = run.segments;
        engine.concurrency = run.concurrency.unwrap_or(backfill.concurrency);
        if engine.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        engine.read_units_per_second = Some(limits.read_units_per_second);
        engine.write_units_per_second = Some(limits.write_units_per_second);
        engine.kms_requests_per_second = Some(limits.kms_requests_per_second);
        engine.rewrite.dry_run = run.dry_run;
        engine.filter = filter;
        engine.canaries = config.verify.canaries_in(&settings.regions);
        engine.progress_interval = crate::progress::interval();
        Ok(Job {
            db,
            target,
            engine,
            limits,
        })
    }

    /// The DynamoDB client of the run's region.
    pub fn db(&self) -> &SdkDynamo {
        &self.db
    }

    /// The ledger table.
    pub fn ledger_table(&self) -> &str {
        &self.engine.ledger_table
    }

    /// Runs the job until it finishes or a signal stops it, showing progress on stderr.
    pub async fn execute(&self) -> anyhow::Result<Report> {
        let mut reporter = Reporter::new(&self.engine.job, self.engine.rewrite.dry_run);
        let report = ddbguard_backfill::run(
            self.db.clone(),
            self.target.clone(),
            self.engine.clone(),
            |p| reporter.update(p),
            crate::signal::shutdown_signal("backfill: stopping at the next page boundary"),
        )
        .await
        .with_context(|| format!("table {:?} in {}", self.target.table, self.engine.region))?;
        reporter.finish(&report);
        Ok(report)
    }
}

async fn describe(
    config: &Config,
    table: &TableSettings,
    db: &SdkDynamo,
    region: &str,
) -> anyhow::Result<TableDescription> {
    match db.describe_table(&table.name).await {
        Ok(d) => Ok(d),
        Err(e) if e.kind == ErrorKind::NotFound => Err(table_error(
            config,
            table,
            "name",
            format!("no table {:?} in {region}", table.name),
        )),
        Err(e) => Err(anyhow::Error::new(e).context(format!("describing table {:?} in {region}", table.name))),
    }
}

/// The exit code of a finished, interrupted or failed run.
pub fn exit_code(report: &Report) -> u8 {
    report
        .completion
        .exit_code(report.failed(), report.skipped_after_conflicts())
}

/// The report as printed: the engine's report, the budgets, and a note when KMS limited the run.
pub fn report_json(report: &Report, limits: &Limits) -> serde_json::Value {
    let mut value = serde_json::to_value(report).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("limits".into(), serde_json::to_value(limits).unwrap_or_default());
        object.insert("exit_code".into(), exit_code(report).into());
        if let Some(note) = limit_note(report, limits) {
            object.insert("note".into(), note.into());
        }
    }
    value
}

/// Says so when the KMS budget, not DynamoDB capacity, is what limited the run.
pub fn limit_note(report: &Report, limits: &Limits) -> Option<String> {
    (report.limited_by == Some("kms")).then(|| {
        let per_item = limits.kms_calls_per_item + limits.legacy_kms_calls_per_item.unwrap_or(0.0);
        format!(
            "the KMS budget ({} requests/s, {per_item} per item), not DynamoDB capacity, limited this run: raise \
             --kms-requests-per-second within the account's KMS quota, or use a hierarchy keyring",
            limits.kms_requests_per_second
        )
    })
}

/// Says on stderr why a run that [`Completion::Failed`](ddbguard_backfill::Completion::Failed) stopped (the
/// report on stdout has the same `error`).
pub fn print_stop_error(report: &Report) {
    if let Some(error) = &report.error {
        print_stopped(&format!("table {:?} in {}", report.table, report.region), error);
    }
}

/// Says on stderr why a run (of `place`, the table) stopped after it started, and how to resume it: the DynamoDB
/// and the Aurora backfills. `--restart` is refused on an unfinished job, so the hint leaves it out.
pub fn print_stopped(place: &str, error: &str) {
    eprintln!(
        "ddbguard: error: {place}: the run stopped after it started: {error}; finished pages are checkpointed, \
         rerun the command (without --restart) to resume"
    );
}

/// Prints the report on stdout (and the KMS note on stderr) and returns the exit code.
fn finish(report: &Report, limits: &Limits) -> ExitCode {
    if let Some(note) = limit_note(report, limits) {
        eprintln!("ddbguard: {note}");
    }
    print_stop_error(report);
    let text = serde_json::to_string_pretty(&report_json(report, limits)).unwrap_or_default();
    println!("{text}");
    ExitCode::from(exit_code(report))
}

#[cfg(test)]
mod tests {
    use ddbguard_backfill::{Completion, Progress};

    use super::*;

    fn report(outcomes: &[(&str, u64)], completion: Completion, limited_by: Option<&'static str>) -> Report {
        Report {
            table: "Orders".into(),
            region: "us-east-1".into(),
            job: "backfill".into(),
            dry_run: false,
            completion,
            progress: Progress {
                elapsed_seconds: 1.0,
                scanned: 10,
                scanned_bytes: 100,
                outcomes: outcomes.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
                verdicts: Default::default(),
                legacy_refused: Default::default(),
                items_per_second: 10.0,
                read_units: 1.0,
                write_units: 10.0,
                kms_calls: 10.0,
                segments_finished: 8,
                segments: 8,
                estimated_items: None,
                eta_seconds: None,
            },
            samples: Default::default(),
            bytes_by_outcome: Default::default(),
            write_units_per_item: None,
            limited_by,
            would_write_bytes: None,
            estimated_seconds: None,
            error: None,
        }
    }

    const LIMITS: Limits = Limits {
        read_units_per_second: 10.0,
        write_units_per_second: 5.0,
        kms_requests_per_second: 3.0,
        kms_calls_per_item: 1.0,
        legacy_kms_calls_per_item: None,
    };

    #[test]
    fn exit_codes_follow_the_report() {
        let finished = Completion::Finished;
        assert_eq!(exit_code(&report(&[("encrypted", 10)], finished, None)), 0);
        assert_eq!(
            exit_code(&report(&[("failed", 1), ("skipped_conflicts", 1)], finished, None)),
            1
        );
        assert_eq!(exit_code(&report(&[("skipped_conflicts", 1)], finished, None)), 3);
        // A legacy item that did not verify is a failed item, whatever else happened.
        assert_eq!(
            exit_code(&report(
                &[("migrated_legacy", 9), ("legacy_refused", 1)],
                finished,
                None
            )),
            1
        );
        assert_eq!(exit_code(&report(&[("migrated_legacy", 10)], finished, None)), 0);
        assert_eq!(exit_code(&report(&[("failed", 1)], Completion::Interrupted, None)), 130);
        // A DynamoDB or ledger failure after the start: 4, whatever the counts (2 would say nothing was written).
        assert_eq!(exit_code(&report(&[("encrypted", 10)], Completion::Failed, None)), 4);
    }

    #[test]
    fn the_output_says_when_kms_limits_the_run() {
        let r = report(&[("encrypted", 10)], Completion::Finished, Some("kms"));
        let json = report_json(&r, &LIMITS);
        assert!(
            json["note"]
                .as_str()
                .is_some_and(|n| n.contains("KMS budget (3 requests/s")),
            "{json}"
        );
        assert_eq!(json["limits"]["write_units_per_second"], 5.0);
        assert_eq!(json["exit_code"], 0);
        assert!(json["limits"].get("legacy_kms_calls_per_item").is_none(), "{json}");
        let r = report(&[("encrypted", 10)], Completion::Finished, Some("write_capacity"));
        assert!(report_json(&r, &LIMITS).get("note").is_none());
        // Migrating legacy items adds the legacy provider's Decrypt to every item.
        let legacy = Limits {
            legacy_kms_calls_per_item: Some(1.0),
            ..LIMITS
        };
        let r = report(&[("migrated_legacy", 10)], Completion::Finished, Some("kms"));
        let json = report_json(&r, &legacy);
        assert!(
            json["note"]
                .as_str()
                .is_some_and(|n| n.contains("3 requests/s, 2 per item")),
            "{json}"
        );
        assert_eq!(json["limits"]["legacy_kms_calls_per_item"], 1.0);
    }

    #[test]
    fn only_kms_mrk_costs_a_kms_call_per_item() {
        let arn = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab";
        let mrk = KeyringSettings::KmsMrk {
            key_arn: arn.parse().unwrap(),
        };
        assert_eq!(kms_calls_per_item(&mrk), 1.0);
        let raw = KeyringSettings::RawAes {
            namespace: "n".into(),
            name: "k".into(),
            key: zeroize::Zeroizing::new([0; 32]),
        };
        assert_eq!(kms_calls_per_item(&raw), 0.0);
        let direct = LegacyProviderSettings::AwsKms {
            key_arn: arn.parse().unwrap(),
        };
        assert_eq!(legacy_kms_calls_per_item(&direct), 1.0);
    }
}
