//! `ddbguard verify`: the per-region stream verifier of one table.
//!
//! Wiring: the table's stream ARN comes from `DescribeTable` in the local region (`[aws] region`); every record
//! of the stream goes through a [`Verifier`] (the table's policy and keyring) inside a [`VerifySink`], driven
//! by a [`StreamReader`] over DynamoDB Streams. Leases live in the DynamoDB table `<[verify] lease_table>-<table>`
//! (one lease table per stream, created if missing), except with `--until-caught-up`, which keeps its leases in
//! memory so that it never competes with (or waits for) the long-running verifiers of the same stream.
//!
//! Metrics (Prometheus text), `/healthz` and `/readyz` are served on `--metrics-addr`; readiness is the reader's
//! (leases held, no stalled shard). SIGTERM or SIGINT stops reading, finishes the in-flight batches, writes their
//! checkpoints and releases the leases (within the reader's 20 s shutdown deadline).
//!
//! Exit codes:
//! - long-running mode: 0 after a clean shutdown.
//! - `--until-caught-up`: prints the [`VerifySummary`] JSON (plus `stream_arn`, `caught_up` and `passed`) on
//!   stdout. Exit 0 when every final verdict is `ok`, `ok_structural` or `remove`, no stream gap was seen (records
//!   lost to a gap were never verified) and the run read every shard to its end or tip (a signal before that
//!   leaves records unread); 1 otherwise.
//! - 2: configuration or startup error (unknown table, no stream on the table, lease table or metrics port
//!   unusable, …): nothing was verified.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::types::StreamViewType;
use clap::Args;
use ddbguard_dbe::Keyring;
use ddbguard_stream::{
    DynamoLeaseStore, LeaseStore, MemoryLeaseStore, ReaderConfig, RunSummary, SdkStreams, StartPosition, StatusHandle,
    StreamReader,
};
use ddbguard_verify::http::{self, HealthSource, Readiness};
use ddbguard_verify::{Verifier, VerifySink, VerifySummary};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio::sync::watch;

use crate::config::{Config, TableSettings};
use crate::keyring::{self, AwsContext};

/// How often the Prometheus recorder compacts its histograms and expires idle series.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// A gauge not updated for this long is removed from `/metrics` (a finished shard's lag, for instance). Live
/// gauges are updated every few seconds (lag at every poll, leases held at every discovery).
const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// DynamoDB's longest table name.
const MAX_TABLE_NAME: usize = 255;

/// `ddbguard verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The ddbguard config file (TOML).
    #[arg(long, env = "DDBGUARD_CONFIG")]
    pub config: PathBuf,

    /// The physical table name of a `[[tables]]` entry; required when several tables are configured (one table
    /// per process).
    #[arg(long)]
    pub table: Option<String>,

    /// Where to start reading shards: the oldest retained record, the tip, or after the stored checkpoint
    /// (shards without one start at the oldest record).
    #[arg(long, value_enum, default_value_t = StartFrom::Checkpoint)]
    pub from: StartFrom,

    /// Exit once every shard is read to its end or tip, print a JSON summary and exit 0 when every verdict
    /// passed and no stream gap was seen, 1 otherwise. Leases are kept in memory (not in the lease table).
    #[arg(long)]
    pub until_caught_up: bool,

    /// Where to serve /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9464", env = "DDBGUARD_METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
}

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
pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let table = select_table(&config, args.table.as_deref())?;
    let aws_settings = config.aws.as_ref().with_context(|| {
        format!(
            "{}: `verify` needs an [aws] section with the local `region` (the region whose replica and stream \
             are verified)",
            config.path.display()
        )
    })?;
    let region = aws_settings.region.clone();
    let lease_table = config.verify.lease_table_for(&table.name);
    if !args.until_caught_up && lease_table.len() > MAX_TABLE_NAME {
        anyhow::bail!(
            "{}: [verify] lease_table: the lease table name {lease_table:?} is longer than {MAX_TABLE_NAME} \
             characters; choose a shorter lease_table",
            config.path.display()
        );
    }

    // The recorder first, so that every metric from here on is exported.
    // Per-shard series (lag) stop being updated when a shard is finished or moves to another worker: drop gauges
    // idle for longer than any live one can be (every held shard updates its lag at least every poll).
    let prometheus = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT))
        .install_recorder()
        .context("cannot install the Prometheus metrics recorder")?;
    let listener = http::bind(args.metrics_addr).await?;
    let metrics_addr = listener.local_addr().unwrap_or(args.metrics_addr);

    let aws = AwsContext::new(aws_settings).await;
    let keyring: Arc<dyn Keyring> = Arc::from(keyring::build(&table.keyring, Some(&aws))?);
    let policy = keyring::verify_policy(table, config.verify.sample_rate)?;
    let verifier = Verifier::new(policy, keyring, region.clone())
        .with_context(|| format!("{}: table {:?}: unusable policy", config.path.display(), table.name))?
        .with_table_label(table.name.clone());

    let sdk = keyring::sdk_config(aws_settings, &region).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let stream_arn = stream_arn(&ddb, &table.name, &region).await?;

    let mut reader_config = ReaderConfig::new(stream_arn.clone(), config.verify.worker_id.clone());
    reader_config.table_label = table.name.clone();
    reader_config.start_position = args.from.start_position();
    reader_config.until_caught_up = args.until_caught_up;
    let sink = Arc::new(VerifySink::new(Arc::new(verifier)));
    let streams = SdkStreams::new(aws_sdk_dynamodbstreams::Client::new(&sdk));

    tracing::info!(
        table = %table.name,
        %region,
        %stream_arn,
        worker_id = %config.verify.worker_id,
        lease_table = if args.until_caught_up { "(in memory)" } else { lease_table.as_str() },
        from = ?args.from,
        until_caught_up = args.until_caught_up,
        %metrics_addr,
        sample_rate = config.verify.sample_rate,
        "verify: starting"
    );

    let serve = Serve { listener, prometheus };
    let run_summary = if args.until_caught_up {
        drive(reader_config, streams, MemoryLeaseStore::new(), sink.clone(), serve).await?
    } else {
        let leases = DynamoLeaseStore::new(ddb, lease_table);
        drive(reader_config, streams, leases, sink.clone(), serve).await?
    };

    let summary = sink.summary();
    tracing::info!(
        table = %summary.table,
        records = summary.records,
        failures = summary.failures(),
        gaps = summary.gaps.len(),
        duplicates_skipped = summary.duplicates_skipped,
        caught_up = run_summary.caught_up,
        leases_released = run_summary.leases_released,
        shutdown_timed_out = run_summary.shutdown_timed_out,
        "verify: stopped"
    );
    if !args.until_caught_up {
        return Ok(ExitCode::SUCCESS);
    }
    let passed = summary.passed() && run_summary.caught_up;
    let doc = summary_json(&summary, &stream_arn, &run_summary, passed)?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &doc).context("cannot write output")?;
    std::io::Write::write_all(&mut out, b"\n").context("cannot write output")?;
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The table to verify: `--table`, or the only configured one.
fn select_table<'c>(config: &'c Config, name: Option<&str>) -> anyhow::Result<&'c TableSettings> {
    match (name, config.tables.as_slice()) {
        (Some(name), _) => Ok(config.table(name)?),
        (None, [only]) => Ok(only),
        (None, []) => anyhow::bail!("{}: no [[tables]] entry to verify", config.path.display()),
        (None, tables) => anyhow::bail!(
            "{}: {} tables are configured ({}); `verify` checks one table per process: pass --table NAME",
            config.path.display(),
            tables.len(),
            tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The ARN of the table's stream in the local region; an error unless the stream carries new images.
async fn stream_arn(ddb: &aws_sdk_dynamodb::Client, table: &str, region: &str) -> anyhow::Result<String> {
    let described = match ddb.describe_table().table_name(table).send().await {
        Ok(out) => out,
        Err(SdkError::ServiceError(e)) if matches!(e.err(), DescribeTableError::ResourceNotFoundException(_)) => {
            anyhow::bail!("table {table:?} does not exist in {region}");
        }
        Err(e) => anyhow::bail!(
            "cannot describe table {table:?} in {region}: {}",
            DisplayErrorContext(&e)
        ),
    };
    let description = described
        .table()
        .with_context(|| format!("DescribeTable of {table:?} in {region} returned no table"))?;
    let enabled = description.stream_specification().is_some_and(|s| s.stream_enabled());
    let arn = description.latest_stream_arn().filter(|_| enabled).with_context(|| {
        format!(
            "table {table:?} in {region} has no DynamoDB stream; enable one with view type NEW_IMAGE or \
             NEW_AND_OLD_IMAGES (a global table's replicas have one already)"
        )
    })?;
    if let Some(view) = description.stream_specification().and_then(|s| s.stream_view_type())
        && !matches!(view, StreamViewType::NewImage | StreamViewType::NewAndOldImages)
    {
        anyhow::bail!(
            "the stream of table {table:?} in {region} has view type {}; verification needs NEW_IMAGE or \
             NEW_AND_OLD_IMAGES",
            view.as_str()
        );
    }
    Ok(arn.to_owned())
}

/// The metrics endpoint, served while the reader runs.
struct Serve {
    listener: tokio::net::TcpListener,
    prometheus: PrometheusHandle,
}

/// Runs the reader with the metrics endpoint until it returns (caught up, or a signal and a clean shutdown).
async fn drive<L: LeaseStore>(
    config: ReaderConfig,
    streams: SdkStreams,
    leases: L,
    sink: Arc<VerifySink>,
    serve: Serve,
) -> anyhow::Result<RunSummary> {
    let reader = StreamReader::new(config, streams, leases, sink).context("cannot start the stream reader")?;
    let health = Arc::new(Health {
        prometheus: serve.prometheus.clone(),
        status: reader.status(),
    });
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let server = tokio::spawn(http::serve(serve.listener, health, async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    }));
    let prometheus = serve.prometheus;
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            prometheus.run_upkeep();
        }
    });

    let result = reader.run(shutdown_signal()).await;

    upkeep.abort();
    let _ = stop_tx.send(true);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics endpoint failed"),
        Err(e) => tracing::warn!(error = %e, "metrics endpoint task failed"),
    }
    result.context("the stream reader failed")
}

/// Completes on the first SIGTERM (ECS stopping the task) or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                tracing::info!(signal = name, "verify: shutting down");
                return;
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            }
        }
    }
    if tokio::signal::ctrl_c().await.is_ok() {
        tracing::info!(signal = "SIGINT", "verify: shutting down");
    } else {
        // Without any signal handler, never stop on a signal (the process is killed instead).
        std::future::pending::<()>().await;
    }
}

/// `/metrics` from the Prometheus recorder, `/readyz` from the reader's status.
struct Health {
    prometheus: PrometheusHandle,
    status: StatusHandle,
}

impl HealthSource for Health {
    fn render_metrics(&self) -> String {
        self.prometheus.render()
    }

    fn readiness(&self) -> Readiness {
        let status = self.status.snapshot();
        readiness(&status)
    }
}

fn readiness(status: &ddbguard_stream::ReaderStatus) -> Readiness {
    if status.leases_held.is_empty() {
        return Readiness::NotReady("no shard lease held".to_owned());
    }
    let stalled = status.stalled_shards();
    if !stalled.is_empty() {
        return Readiness::NotReady(format!("stalled shards: {}", stalled.join(", ")));
    }
    Readiness::Ready
}

/// The `--until-caught-up` output: the verify summary plus the stream, whether the run caught up and the verdict.
fn summary_json(
    summary: &VerifySummary,
    stream_arn: &str,
    run: &RunSummary,
    passed: bool,
) -> anyhow::Result<serde_json::Value> {
    let mut doc = serde_json::to_value(summary).context("cannot serialize the summary")?;
    if let Some(map) = doc.as_object_mut() {
        map.insert("stream_arn".into(), stream_arn.into());
        map.insert("failures".into(), summary.failures().into());
        map.insert("caught_up".into(), run.caught_up.into());
        map.insert("passed".into(), passed.into());
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

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

    #[test]
    fn readiness_needs_leases_and_no_stall() {
        let mut status = ddbguard_stream::ReaderStatus::default();
        assert!(matches!(readiness(&status), Readiness::NotReady(why) if why.contains("lease")));
        status.leases_held.push("shard-1".into());
        assert_eq!(readiness(&status), Readiness::Ready);
        status.shards.push(ddbguard_stream::ShardStatus {
            shard_id: "shard-1".into(),
            lag: None,
            stalled: true,
            caught_up: false,
            records: 0,
            checkpoint: None,
        });
        assert!(matches!(readiness(&status), Readiness::NotReady(why) if why.contains("shard-1")));
    }

    #[test]
    fn summary_json_adds_the_run_fields() {
        let summary = VerifySummary {
            table: "Orders".into(),
            region: "eu-west-1".into(),
            ..VerifySummary::default()
        };
        let run = RunSummary {
            caught_up: true,
            ..RunSummary::default()
        };
        let doc = summary_json(&summary, "arn:s", &run, true).unwrap();
        assert_eq!(doc["table"], "Orders");
        assert_eq!(doc["stream_arn"], "arn:s");
        assert_eq!(doc["caught_up"], true);
        assert_eq!(doc["passed"], true);
        assert_eq!(doc["failures"], 0);
    }
}
