//! `ddbguard verify`: the per-region stream verifier of one table.
//!
//! Wiring: the table's stream ARN comes from `DescribeTable` in the local region (`[aws] region`); every record
//! of the stream goes through a [`Verifier`] (the table's policy and keyring) inside a [`VerifySink`], driven
//! by a [`StreamReader`] over DynamoDB Streams. Leases live in the DynamoDB table `<[verify] lease_table>-<table>`
//! (one lease table per stream, created if missing). `--until-caught-up` never competes with (or waits for) the
//! long-running verifiers of the same stream: from its checkpoints it keeps them in `<--audit-lease-table>-<table>`
//! (a cron audit resumes where the last one stopped), from the trim horizon or the tip in memory.
//!
//! Records with a failing verdict are also written to `[verify] quarantine_table` (created if missing; see
//! [`ddbguard_verify::quarantine`]) unless `[verify] quarantine = false`.
//!
//! Metrics (Prometheus text), `/healthz` and `/readyz` are served on `--metrics-addr`; readiness is the reader's
//! (a recent lease sync, no stalled shard; a standby without a lease is ready). SIGTERM or SIGINT stops reading, finishes the in-flight batches, writes their
//! checkpoints and releases the leases (within the reader's 20 s shutdown deadline).
//!
//! Exit codes:
//! - long-running mode: 0 after a clean shutdown.
//! - `--until-caught-up`: prints the [`VerifySummary`] JSON (plus `stream_arn`, `caught_up` and `passed`) on
//!   stdout. Exit 0 when every final verdict is `ok`, `ok_structural` or `remove`, no stream gap was seen (records
//!   lost to a gap were never verified) and the run read every shard to its end or tip (a signal before that
//!   leaves records unread); 1 otherwise.
//! - 2: configuration or startup error (unknown table, no stream on the table, lease table, quarantine table or
//!   metrics port unusable, …): nothing was verified.
//! - 4: a failure after startup ([`crate::AfterStartup`]): the metrics endpoint stopped while the verifier ran
//!   (the reader is stopped cleanly first), the `--until-caught-up` summary could not be written, or the shutdown
//!   overran its deadline and aborted shard tasks before their checkpoints (their records are read again by the
//!   next owner: nothing is lost, but the stop was not clean and the orchestrator should know). What was verified
//!   is checkpointed; a restart resumes there.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use ddbguard_dbe::Keyring;
use ddbguard_verify::Verifier;
use ddbguard_verify::http;
use ddbguard_verify::service::{self, LeaseMode, LeaseTables, MetricsEndpoint, ServiceConfig, StartPosition};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use metrics_util::MetricKindMask;

use crate::config::{Config, TableSettings};
use crate::keyring::{self, AwsContext};

/// How often the Prometheus recorder compacts its histograms and expires idle series.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// A gauge not updated for this long is removed from `/metrics` (a finished shard's lag, for instance). Live
/// gauges are updated every few seconds (lag at every poll, leases held at every discovery).
const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// `ddbguard verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArgs,

    /// The physical table name of a `[[tables]]` entry; required when several tables are configured (one table
    /// per process).
    #[arg(long)]
    pub table: Option<String>,

    /// Where to start reading shards: the oldest retained record, the tip, or after the stored checkpoint
    /// (shards without one start at the oldest record).
    #[arg(long, value_enum, default_value_t = StartFrom::Checkpoint)]
    pub from: StartFrom,

    /// Exit once every shard is read to its end or tip, print a JSON summary and exit 0 when every verdict
    /// passed and no stream gap was seen, 1 otherwise. With `--from checkpoint` the checkpoints are kept in the
    /// audit lease table (the next run resumes there); otherwise leases are kept in memory.
    #[arg(long)]
    pub until_caught_up: bool,

    /// Prefix of the lease tables of `--until-caught-up --from checkpoint` runs (`<prefix>-<table>`, created if
    /// missing): separate from `[verify] lease_table` so that audits neither wait for nor move the checkpoints of
    /// the long-running verifiers.
    #[arg(long, default_value = DEFAULT_AUDIT_LEASE_TABLE, env = "DDBGUARD_AUDIT_LEASE_TABLE")]
    pub audit_lease_table: String,

    /// Where to serve /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9464", env = "DDBGUARD_METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
}

/// Default `--audit-lease-table`.
pub const DEFAULT_AUDIT_LEASE_TABLE: &str = "ddbguard-audit-leases";

/// `--from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartFrom {
    /// Every shard from its oldest retained record, ignoring checkpoints (audits).
    TrimHorizon,
    /// Only records written after startup.
    Latest,
    /// Resume after the stored checkpoint; shards without one start at the oldest retained record.
    Checkpoint,
}

impl StartFrom {
    fn start_position(self) -> StartPosition {
        match self {
            StartFrom::TrimHorizon => StartPosition::TrimHorizon,
            StartFrom::Latest => StartPosition::Latest,
            StartFrom::Checkpoint => StartPosition::Checkpoint,
        }
    }
}

/// Runs `ddbguard verify`. `Err` is a startup or configuration error (exit code 2).
pub async fn run(args: VerifyArgs, emf: bool) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let table = select_table(&config, args.table.as_deref())?;
    // The local region is the one whose replica and stream are verified.
    let aws_settings = keyring::aws_settings(&config).await?;
    let region = aws_settings.region.clone();

    // The recorder first, so that every metric from here on is exported.
    // Per-shard series (lag) stop being updated when a shard is finished or moves to another worker: drop gauges
    // idle for longer than any live one can be (every held shard updates its lag at least every poll).
    let prometheus = prometheus_builder()?
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT))
        .install_recorder()
        .context("cannot install the Prometheus metrics recorder")?;
    ddbguard_verify::metrics::describe_all(crate::VERSION, crate::GIT_SHA);
    let listener = http::bind(args.metrics_addr).await?;
    let metrics_addr = listener.local_addr().unwrap_or(args.metrics_addr);

    let aws = AwsContext::new(&aws_settings).await;
    let keyring: Arc<dyn Keyring> = Arc::from(keyring::build(&table.keyring, Some(&aws))?);
    let policy = keyring::verify_policy(table, config.verify.sample_rate)?;
    let mut verifier = Verifier::new(policy, keyring, region.clone())
        .with_context(|| format!("{}: table {:?}: unusable policy", config.origin, table.name))?
        .with_table_label(table.name.clone());
    if let Some(provider) = keyring::legacy_provider(table, Some(&aws)).await? {
        verifier = verifier.with_legacy_provider(provider);
    }
    let service = ServiceConfig {
        table: table.name.clone(),
        region,
        worker_id: config.verify.worker_id.clone(),
        leases: LeaseMode::for_run(
            &LeaseTables {
                daemon: config.verify.lease_table.clone(),
                audit: args.audit_lease_table.clone(),
            },
            args.until_caught_up,
            args.from.start_position(),
        ),
        start_position: args.from.start_position(),
        until_caught_up: args.until_caught_up,
        quarantine: config.verify.quarantine.clone(),
        canaries: config.verify.canaries_in(&aws_settings.regions),
    };
    tracing::info!(%metrics_addr, sample_rate = config.verify.sample_rate, from = ?args.from, "verify: configured");

    let upkeep = tokio::spawn({
        let prometheus = prometheus.clone();
        async move {
            let mut tick = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
            loop {
                tick.tick().await;
                prometheus.run_upkeep();
            }
        }
    });
    // EMF lines go to stdout, where --until-caught-up prints its summary: only the long-running service
    // writes them.
    let emf = (emf && !args.until_caught_up).then(|| {
        let prometheus = prometheus.clone();
        ddbguard_verify::emf::spawn_emf_writer(move || prometheus.render(), ddbguard_verify::emf::DEFAULT_INTERVAL)
    });
    let endpoint = MetricsEndpoint {
        listener,
        render: Arc::new(move || prometheus.render()),
    };
    let shutdown = crate::signal::shutdown_signal("verify: shutting down");
    let report = service::run(&aws, service, verifier, Some(endpoint), shutdown).await;
    upkeep.abort();
    if let Some(emf) = emf {
        emf.stop().await;
    }
    let report = report.map_err(|e| {
        let after_startup = e.after_startup();
        let e = anyhow::Error::new(e).context(format!("{}: table {:?}", config.origin, table.name));
        if after_startup {
            e.context(crate::AfterStartup)
        } else {
            e
        }
    })?;

    if args.until_caught_up {
        crate::print_json(&report.to_json())
            .context("cannot write the summary")
            .context(crate::AfterStartup)?;
    }
    exit_code(&report, args.until_caught_up)
        .map_err(|e| anyhow::anyhow!("{}: table {:?}: {e}", config.origin, table.name).context(crate::AfterStartup))
}

/// The exit code of a run that stopped: `Err` when the stop itself was not clean (exit 4).
fn exit_code(report: &service::VerifyReport, until_caught_up: bool) -> Result<ExitCode, &'static str> {
    if report.run.shutdown_timed_out {
        return Err(
            "the shutdown overran its deadline and aborted shard tasks before their checkpoints; their \
                    records will be read again by the next owner",
        );
    }
    Ok(if !until_caught_up || report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The Prometheus exporter's settings common to every command that serves `/metrics`: request-latency
/// histograms with buckets (summable across tasks) instead of per-process quantiles.
pub(crate) fn prometheus_builder() -> anyhow::Result<PrometheusBuilder> {
    use ddbguard_verify::metrics::{HISTOGRAM_BUCKETS, LATENCY_BUCKETS, LATENCY_SUFFIX};
    PrometheusBuilder::new()
        .set_buckets(HISTOGRAM_BUCKETS)
        .context("invalid histogram buckets")?
        .set_buckets_for_metric(Matcher::Suffix(LATENCY_SUFFIX.to_owned()), LATENCY_BUCKETS)
        .context("invalid latency histogram buckets")
}

/// The table to verify: `--table`, or the only configured one.
fn select_table<'c>(config: &'c Config, name: Option<&str>) -> anyhow::Result<&'c TableSettings> {
    match (name, config.tables.as_slice()) {
        (Some(name), _) => Ok(config.table(name)?),
        (None, [only]) => Ok(only),
        (None, []) => anyhow::bail!("{}: no [[tables]] entry to verify", config.origin),
        (None, tables) => anyhow::bail!(
            "{}: {} tables are configured ({}); `verify` checks one table per process: pass --table NAME",
            config.origin,
            tables.len(),
            tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    /// A clean stop exits 0 (1 when `--until-caught-up` did not pass); a stop that aborted shard tasks exits 4
    /// whatever the verdicts.
    #[test]
    fn a_shutdown_that_overran_its_deadline_is_not_a_clean_exit() {
        let mut report = service::VerifyReport {
            stream_arn: "arn:aws:dynamodb:us-east-1:111122223333:table/T/stream/x".into(),
            summary: Default::default(),
            run: Default::default(),
        };
        assert_eq!(exit_code(&report, false), Ok(ExitCode::SUCCESS));
        // Not caught up: the until-caught-up run did not read everything.
        assert_eq!(exit_code(&report, true), Ok(ExitCode::from(1)));
        report.run.caught_up = true;
        assert_eq!(exit_code(&report, true), Ok(ExitCode::SUCCESS));
        report.run.shutdown_timed_out = true;
        for until_caught_up in [false, true] {
            let e = exit_code(&report, until_caught_up).unwrap_err();
            assert!(e.contains("overran its deadline"), "{e}");
        }
        assert_eq!(report.to_json()["shutdown_timed_out"], true);
    }

    /// Latency series get the shared buckets (summable across tasks); other histograms stay summaries.
    #[test]
    fn latency_histograms_have_buckets() {
        let recorder = prometheus_builder().unwrap().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            ::metrics::histogram!("ddbguard_kms_request_duration_seconds", "region" => "eu-west-1").record(0.02);
            ::metrics::histogram!("ddbguard_canary_lag_seconds").record(3.0);
        });
        let text = handle.render();
        assert!(
            text.contains(r#"ddbguard_kms_request_duration_seconds_bucket{region="eu-west-1",le="0.01"} 0"#)
                && text.contains(r#"ddbguard_kms_request_duration_seconds_bucket{region="eu-west-1",le="0.025"} 1"#),
            "{text}"
        );
        // Every other histogram (the canary lag) has buckets up to minutes.
        assert!(
            text.contains(r#"ddbguard_canary_lag_seconds_bucket{le="2.5"} 0"#)
                && text.contains(r#"ddbguard_canary_lag_seconds_bucket{le="5"} 1"#)
                && text.contains(r#"ddbguard_canary_lag_seconds_bucket{le="600"} 1"#),
            "{text}"
        );
    }

    fn table(name: &str) -> String {
        format!(
            "[[tables]]\nname = \"{name}\"\npartition_key = \"pk\"\nrequired_encrypted = [\"ssn\"]\n\
             require_suite = \"0x6701\"\n[tables.attribute_actions]\npk = \"SIGN_ONLY\"\n\
             [tables.keyring]\nkind = \"raw-aes\"\nkey_namespace = \"ops\"\nkey_name = \"k\"\nkey_base64 = \"{KEY}\"\n"
        )
    }

    #[test]
    fn one_table_is_selected_and_several_need_the_flag() {
        let one = Config::parse(Path::new("v.toml"), &table("Orders")).unwrap();
        assert_eq!(select_table(&one, None).unwrap().name, "Orders");
        let two = Config::parse(Path::new("v.toml"), &format!("{}{}", table("Orders"), table("Users"))).unwrap();
        let e = select_table(&two, None).unwrap_err().to_string();
        assert!(
            e.contains("v.toml") && e.contains("--table") && e.contains("Orders, Users"),
            "{e}"
        );
        assert_eq!(select_table(&two, Some("Users")).unwrap().name, "Users");
        let e = select_table(&two, Some("Nope")).unwrap_err().to_string();
        assert!(e.contains("Nope"), "{e}");
        let none = Config::parse(Path::new("v.toml"), "").unwrap();
        assert!(select_table(&none, None).is_err());
    }
}
