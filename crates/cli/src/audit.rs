//! `ddbguard audit`: every item of one table given the verdict `verify` would give it, in the local region, and
//! with `--compare-region` every item compared with its copy in another replica.
//!
//! Wiring: the table's policy and keyring are exactly `verify`'s ([`keyring::verify_policy`], [`keyring::build`],
//! a [`Verifier`] labelled with the physical table name and the local region), so an item gets the same verdict
//! from both; `[verify] sample_rate` (or `--sample-rate`) decides which items are decrypted in full. The scan and
//! the comparison are `ddbguard_backfill::audit`.
//!
//! Output: the [`AuditReport`] as JSON on stdout. With `--metrics-addr`, `/metrics` serves the
//! `ddbguard_records_total{table,region,origin_region,verdict}` series while the audit runs (the same series as
//! `verify`'s; an audit is its own process, so its counts never mix with a verifier's).
//!
//! Exit codes, as `verify --until-caught-up`:
//! - 0: the whole table was read, every verdict is `ok` or `ok_structural`, and with `--compare-region` both
//!   replicas hold the same items with the same attributes;
//! - 1: any other verdict, any item missing or different in a replica, or a signal stopped the audit early;
//! - 2: configuration or startup error (unknown table, table missing in a region, key schema mismatch, metrics
//!   port unusable), or DynamoDB failing beyond retries: the audit proves nothing.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use ddbguard_backfill::{AuditConfig, Replica, audit};
use ddbguard_dbe::Keyring;
use ddbguard_verify::Verifier;
use ddbguard_verify::http::{self, HealthSource, Readiness};
use ddbguard_verify::service::RegionClients as _;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::keyring::{self, AwsContext};

/// `ddbguard audit` arguments.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArgs,

    /// The physical table name of a `[[tables]]` entry.
    #[arg(long)]
    pub table: String,

    /// Also compare every item with its copy in this region's replica (consistent reads there), and look for
    /// items only that replica has.
    #[arg(long, value_name = "REGION")]
    pub compare_region: Option<String>,

    /// `TotalSegments` of the parallel scans (default: one per 512 MiB of the table, at least 8).
    #[arg(long)]
    pub segments: Option<u32>,

    /// Segments scanned at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,

    /// Read capacity units per second, in each region (default: unlimited).
    #[arg(long)]
    pub read_units_per_second: Option<f64>,

    /// Share of items decrypted in full, `0..=1` (default: `[verify] sample_rate`, as `verify` would); the rest are
    /// checked structurally.
    #[arg(long)]
    pub sample_rate: Option<f64>,

    /// Seconds to wait before reading a replica mismatch again: a write still replicating is not a finding.
    #[arg(long, default_value_t = 2.0)]
    pub recheck_seconds: f64,

    /// Serve /metrics (Prometheus) here while the audit runs.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
}

/// Runs `ddbguard audit`. `Err` is a configuration or startup error (exit code 2).
pub async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let table = config.table(&args.table)?;
    let recheck_after = Duration::try_from_secs_f64(args.recheck_seconds)
        .ok()
        .context("--recheck-seconds must be a number of seconds, 0 or more")?;
    let aws_settings = keyring::aws_settings(&config).await?;
    let region = aws_settings.region.clone();

    let metrics = match args.metrics_addr {
        Some(addr) => Some(serve_metrics(addr).await?),
        None => None,
    };

    let aws = AwsContext::new(&aws_settings).await;
    let keyring: Arc<dyn Keyring> = Arc::from(keyring::build(&table.keyring, Some(&aws))?);
    let mut policy = keyring::verify_policy(table, config.verify.sample_rate)?;
    if let Some(rate) = args.sample_rate {
        policy.sample_rate = rate;
    }
    let mut verifier = Verifier::new(policy, keyring, region.clone())
        .with_context(|| format!("{}: table {:?}: unusable policy", config.origin, table.name))?
        .with_table_label(table.name.clone());
    if let Some(provider) = keyring::legacy_provider(table, Some(&aws)).await? {
        verifier = verifier.with_legacy_provider(provider);
    }
    let audit_config = AuditConfig {
        segments: args.segments,
        concurrency: args.concurrency,
        read_units_per_second: args.read_units_per_second,
        recheck_after,
        canaries: config.verify.canaries_in(&aws_settings.regions),
        ..AuditConfig::default()
    };
    let replica = args.compare_region.map(|r| Replica {
        db: aws.dynamo(&r),
        region: r,
    });
    tracing::info!(table = %table.name, %region, compare_region = replica.as_ref().map(|r| r.region.as_str()), "audit: starting");
    let report = audit(
        aws.dynamo(&region),
        Arc::new(verifier),
        &table.name,
        replica,
        audit_config,
        crate::signal::shutdown_signal("audit: stopping"),
    )
    .await;
    if let Some(server) = metrics {
        server.abort();
    }
    let report = report.with_context(|| format!("{}: table {:?}", config.origin, table.name))?;

    crate::print_json(&report)?;
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `/metrics` for a one-shot audit: always ready, since there is nothing to wait for.
struct AuditMetrics(PrometheusHandle);

impl HealthSource for AuditMetrics {
    fn render_metrics(&self) -> String {
        self.0.render()
    }

    fn readiness(&self) -> Readiness {
        Readiness::Ready
    }
}

/// Installs the Prometheus recorder and serves it on `addr` until the returned task is aborted.
pub(crate) async fn serve_metrics(addr: SocketAddr) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let handle = crate::verify::prometheus_builder()?
        .install_recorder()
        .context("cannot install the Prometheus metrics recorder")?;
    ddbguard_verify::metrics::describe_all(crate::VERSION, crate::GIT_SHA);
    let listener = http::bind(addr).await?;
    let source: Arc<dyn HealthSource> = Arc::new(AuditMetrics(handle));
    Ok(tokio::spawn(async move {
        if let Err(e) = http::serve(listener, source, std::future::pending()).await {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    }))
}
