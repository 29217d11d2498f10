//! The verify service: one table's stream in one region, verified until shutdown (or until caught up).
//!
//! Everything the binary used to wire by hand lives here, behind injected pieces so that the whole service runs
//! over fakes in a test: the AWS clients come from a per-region factory ([`RegionClients`], mountpoint-s3's
//! client-factory pattern), the shutdown is a future the caller passes in (mini-redis's pattern), the metrics
//! endpoint gets an already bound listener and a render function, and the result is a [`VerifyReport`] that
//! the caller maps to output and an exit code.
//!
//! What it does: resolves the table's stream in the local region (`DescribeTable`; the stream must carry new
//! images), keeps shard leases in `<lease prefix>-<table>` (created if missing) or in memory, reads the stream
//! with the stream reader into a [`VerifySink`], serves `/metrics`, `/healthz` and `/readyz` while it runs,
//! and stops cleanly when `shutdown` completes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ddbguard_ddb::{DdbError, DynamoApi, ErrorKind, KeySchema};
use ddbguard_lease::{DynamoLeaseStore, LeaseStore, LeaseTable, MemoryLeaseStore};
use ddbguard_stream::{ReaderConfig, ReaderError, ReaderStatus, RunSummary, StatusHandle, StreamReader, StreamsApi};
pub use ddbguard_stream::{SdkStreams, StartPosition};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::canary::{Canaries, CanaryError, CanarySettings};
use crate::engine::Verifier;
use crate::http::{self, HealthSource, Readiness};
use crate::quarantine::{self, QuarantineError, QuarantineSettings};
use crate::sink::{VerifySink, VerifySummary};

/// DynamoDB's longest table name.
const MAX_TABLE_NAME: usize = 255;

/// Builds the AWS clients of a region. The binary builds SDK clients from one loaded SDK config; tests return
/// fakes.
pub trait RegionClients: Send + Sync + 'static {
    /// The DynamoDB client.
    type Dynamo: DynamoApi + Clone;
    /// The DynamoDB Streams client.
    type Streams: StreamsApi + Clone;
    /// DynamoDB in `region`.
    fn dynamo(&self, region: &str) -> Self::Dynamo;
    /// DynamoDB Streams in `region`.
    fn streams(&self, region: &str) -> Self::Streams;
}

/// Where shard leases live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseMode {
    /// In the DynamoDB table `<prefix>-<table>` of the local region (created if missing), shared with the other
    /// verifiers of the stream: a dead one's shards are taken over.
    Table {
        /// The lease table name prefix (`[verify] lease_table`).
        prefix: String,
    },
    /// In memory: the run neither competes with nor waits for the long-running verifiers (audits,
    /// `--until-caught-up`).
    InMemory,
}

/// The lease table prefixes a process may use: the long-running verifiers' and the one-shot audits'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTables {
    /// Prefix of the long-running verifiers' lease tables (`[verify] lease_table`).
    pub daemon: String,
    /// Prefix of the lease tables of one-shot runs resuming from their checkpoints (`--audit-lease-table`).
    pub audit: String,
}

impl LeaseMode {
    /// Where a run keeps its leases. A long-running verifier shares the daemon table with its peers. A one-shot
    /// run (`until_caught_up`) from its checkpoints keeps them in the audit table, so that the next audit (a cron
    /// job) resumes where this one stopped instead of verifying, and alerting on, the whole retained stream again;
    /// a separate table because an audit must neither wait for shards a daemon holds nor move a daemon's
    /// checkpoints. Other one-shot runs (from the trim horizon or the tip) ignore checkpoints: in memory.
    pub fn for_run(tables: &LeaseTables, until_caught_up: bool, start: StartPosition) -> LeaseMode {
        match (until_caught_up, start) {
            (false, _) => LeaseMode::Table {
                prefix: tables.daemon.clone(),
            },
            (true, StartPosition::Checkpoint) => LeaseMode::Table {
                prefix: tables.audit.clone(),
            },
            (true, StartPosition::TrimHorizon | StartPosition::Latest) => LeaseMode::InMemory,
        }
    }

    /// The lease table of `table`, if leases live in a table.
    pub fn table_for(&self, table: &str) -> Option<String> {
        match self {
            LeaseMode::Table { prefix } => Some(format!("{prefix}-{table}")),
            LeaseMode::InMemory => None,
        }
    }
}

/// What to verify and how.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The table (its physical name in the local region).
    pub table: String,
    /// The local region: its stream is read, its replica key decrypts.
    pub region: String,
    /// This worker's lease owner name.
    pub worker_id: String,
    /// Where leases live.
    pub leases: LeaseMode,
    /// Where shards start.
    pub start_position: StartPosition,
    /// Return once every shard is read to its end or tip.
    pub until_caught_up: bool,
    /// Where records with a failing verdict are kept (created if missing); `None`: nowhere.
    pub quarantine: Option<QuarantineSettings>,
    /// Canaries: recognised (and judged apart) in every run; written and watched for missing origins by the
    /// long-running service only. `None`: canary keys are application items like any other.
    pub canaries: Option<CanarySettings>,
}

/// How long the quarantine writer may take to write what is buffered at shutdown (within the task's stop timeout).
const QUARANTINE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The metrics endpoint to serve while the service runs.
pub struct MetricsEndpoint {
    /// The bound listener.
    pub listener: TcpListener,
    /// Renders every metric (Prometheus text).
    pub render: Arc<dyn Fn() -> String + Send + Sync>,
}

impl std::fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// The stream read.
    pub stream_arn: String,
    /// The verdicts.
    pub summary: VerifySummary,
    /// The reader's side: records, duplicates, gaps, caught up, leases released.
    pub run: RunSummary,
}

impl VerifyReport {
    /// Every verdict passed, no gap was seen, and (until caught up) every shard was read.
    pub fn passed(&self) -> bool {
        self.summary.passed() && self.run.caught_up
    }

    /// The JSON document `--until-caught-up` prints: the summary plus the stream, failures, whether the run
    /// caught up and the verdict.
    pub fn to_json(&self) -> serde_json::Value {
        let mut doc = serde_json::to_value(&self.summary).unwrap_or_default();
        if let Some(map) = doc.as_object_mut() {
            map.insert("stream_arn".into(), self.stream_arn.clone().into());
            map.insert("failures".into(), self.summary.failures().into());
            map.insert("caught_up".into(), self.run.caught_up.into());
            map.insert("shutdown_timed_out".into(), self.run.shutdown_timed_out.into());
            map.insert("passed".into(), self.passed().into());
        }
        doc
    }
}

/// Why the service could not run, or stopped. Every variant but [`ServiceError::MetricsEndpoint`] is a startup or
/// configuration problem: nothing was verified ([`ServiceError::after_startup`] tells them apart).
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The table is not in the local region.
    #[error("table {table:?} does not exist in {region}")]
    TableNotFound {
        /// The table.
        table: String,
        /// The local region.
        region: String,
    },
    /// The table has no enabled stream.
    #[error(
        "table {table:?} in {region} has no DynamoDB stream; enable one with view type NEW_IMAGE or \
         NEW_AND_OLD_IMAGES (a global table's replicas have one already)"
    )]
    NoStream {
        /// The table.
        table: String,
        /// The local region.
        region: String,
    },
    /// The stream does not carry new images.
    #[error(
        "the stream of table {table:?} in {region} has view type {view}; verification needs NEW_IMAGE or \
         NEW_AND_OLD_IMAGES"
    )]
    NoNewImages {
        /// The table.
        table: String,
        /// The local region.
        region: String,
        /// The stream's view type.
        view: String,
    },
    /// DescribeTable failed.
    #[error("cannot describe table {table:?} in {region}: {source}")]
    Describe {
        /// The table.
        table: String,
        /// The local region.
        region: String,
        /// The failure.
        source: DdbError,
    },
    /// The lease table name is unusable.
    #[error(
        "the lease table name {name:?} is longer than {MAX_TABLE_NAME} characters; choose a shorter \
         [verify] lease_table (or --audit-lease-table for --until-caught-up --from checkpoint)"
    )]
    LeaseTableName {
        /// The name.
        name: String,
    },
    /// Canaries cannot run on this table.
    #[error("canaries: {0}")]
    Canary(#[from] CanaryError),
    /// The quarantine table cannot be created or has another key.
    #[error("the quarantine is unusable: {0}")]
    Quarantine(#[from] QuarantineError),
    /// The reader could not start or its lease store failed at startup.
    #[error("the stream reader failed: {0}")]
    Reader(#[from] ReaderError),
    /// The metrics endpoint's task ended while the verifier ran. Nothing could answer the health check any more,
    /// so the verifier stopped (cleanly: in-flight batches checkpointed, leases released) rather than run
    /// unobserved until the orchestrator kills it.
    #[error("the metrics endpoint stopped while verifying ({0}); the reader was stopped")]
    MetricsEndpoint(String),
}

impl ServiceError {
    /// Whether the service had started (stream found, lease and quarantine tables ready, `/metrics` served)
    /// before it failed; a restart with the same configuration may well succeed.
    pub fn after_startup(&self) -> bool {
        match self {
            ServiceError::MetricsEndpoint(_) => true,
            ServiceError::TableNotFound { .. }
            | ServiceError::NoStream { .. }
            | ServiceError::NoNewImages { .. }
            | ServiceError::Describe { .. }
            | ServiceError::LeaseTableName { .. }
            | ServiceError::Canary(_)
            | ServiceError::Quarantine(_)
            | ServiceError::Reader(_) => false,
        }
    }
}

/// Runs the verifier of `config.table` until `shutdown` completes (or, until caught up, every shard is read).
pub async fn run<C: RegionClients>(
    clients: &C,
    config: ServiceConfig,
    verifier: Verifier,
    metrics: Option<MetricsEndpoint>,
    shutdown: impl Future,
) -> Result<VerifyReport, ServiceError> {
    let lease_table = config.leases.table_for(&config.table);
    if let Some(name) = &lease_table
        && name.len() > MAX_TABLE_NAME
    {
        return Err(ServiceError::LeaseTableName { name: name.clone() });
    }
    let dynamo = clients.dynamo(&config.region);
    let (stream_arn, key_schema) = stream_arn(&dynamo, &config.table, &config.region).await?;
    let mut reader_config = ReaderConfig::new(stream_arn.clone(), config.worker_id.clone());
    reader_config.table_label = config.table.clone();
    reader_config.start_position = config.start_position;
    reader_config.until_caught_up = config.until_caught_up;
    let table_label = verifier.table().to_owned();
    let judge = verifier.judge().clone();
    let canaries = match &config.canaries {
        Some(settings) => match Canaries::new(
            settings.clone(),
            &key_schema,
            &verifier.policy().table.config,
            &table_label,
            &config.region,
        ) {
            Ok(canaries) => Some(Arc::new(canaries)),
            // A one-shot run only recognises canaries; it need not refuse a table the daemon could not serve.
            Err(e) if config.until_caught_up => {
                tracing::warn!(table = %config.table, error = %e, "canaries are not recognised in this run");
                None
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let mut sink = VerifySink::new(Arc::new(verifier));
    if let Some(canaries) = &canaries {
        sink = sink.with_canaries(canaries.clone());
    }
    let mut writer = None;
    if let Some(settings) = &config.quarantine {
        quarantine::ensure(&dynamo, &settings.table).await?;
        let (handle, task) = quarantine::start(dynamo.clone(), settings, &table_label);
        sink = sink.with_quarantine(handle);
        writer = Some(task);
    }
    let sink = Arc::new(sink);
    let streams = clients.streams(&config.region);
    // The long-running service writes its region's canary and watches every origin's; one-shot runs only
    // recognise canaries (they neither run long enough to see one go missing nor should they write).
    let (canary_stop, canary_stopped) = watch::channel(false);
    let canary_task = canaries.as_ref().filter(|_| !config.until_caught_up).map(|canaries| {
        let mut stopped = canary_stopped.clone();
        tokio::spawn(canaries.clone().run(
            dynamo.clone(),
            config.table.clone(),
            judge,
            config.worker_id.clone(),
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        ))
    });
    tracing::info!(
        table = %config.table,
        region = %config.region,
        %stream_arn,
        worker_id = %config.worker_id,
        lease_table = lease_table.as_deref().unwrap_or("(in memory)"),
        start_position = ?config.start_position,
        until_caught_up = config.until_caught_up,
        canaries = canaries.is_some(),
        "verify: starting"
    );
    let run = match lease_table {
        None => {
            drive(
                reader_config,
                streams,
                MemoryLeaseStore::new(),
                sink.clone(),
                metrics,
                shutdown,
            )
            .await
        }
        Some(name) => {
            let leases = DynamoLeaseStore::new(dynamo, LeaseTable::for_shards(name));
            drive(reader_config, streams, leases, sink.clone(), metrics, shutdown).await
        }
    };
    let _ = canary_stop.send(true);
    if let Some(task) = canary_task
        && let Err(e) = task.await
    {
        tracing::warn!(error = %e, "the canary task failed");
    }
    if let Some(writer) = writer {
        writer.finish(QUARANTINE_FLUSH_TIMEOUT).await;
    }
    let run = run?;
    let summary = sink.summary();
    tracing::info!(
        table = %summary.table,
        records = summary.records,
        failures = summary.failures(),
        gaps = summary.gaps.len(),
        duplicates_skipped = summary.duplicates_skipped,
        caught_up = run.caught_up,
        leases_released = run.leases_released,
        shutdown_timed_out = run.shutdown_timed_out,
        "verify: stopped"
    );
    Ok(VerifyReport {
        stream_arn,
        summary,
        run,
    })
}

/// The ARN of the table's stream in the local region and the table's key schema; an error unless the stream
/// carries new images.
async fn stream_arn<D: DynamoApi>(db: &D, table: &str, region: &str) -> Result<(String, KeySchema), ServiceError> {
    let description = match db.describe_table(table).await {
        Ok(d) => d,
        Err(e) if e.kind == ErrorKind::NotFound => {
            return Err(ServiceError::TableNotFound {
                table: table.to_owned(),
                region: region.to_owned(),
            });
        }
        Err(source) => {
            return Err(ServiceError::Describe {
                table: table.to_owned(),
                region: region.to_owned(),
                source,
            });
        }
    };
    let stream = description.stream.filter(|s| s.enabled);
    let Some(arn) = stream.as_ref().and_then(|s| s.arn.clone()) else {
        return Err(ServiceError::NoStream {
            table: table.to_owned(),
            region: region.to_owned(),
        });
    };
    if let Some(view) = stream.and_then(|s| s.view_type)
        && !matches!(view.as_str(), "NEW_IMAGE" | "NEW_AND_OLD_IMAGES")
    {
        return Err(ServiceError::NoNewImages {
            table: table.to_owned(),
            region: region.to_owned(),
            view,
        });
    }
    Ok((arn, description.key_schema))
}

/// Runs the reader, with the metrics endpoint beside it, until it returns (caught up, or shutdown and a clean
/// stop). The endpoint stops with the reader; no task is left running.
async fn drive<S: StreamsApi, L: LeaseStore>(
    config: ReaderConfig,
    streams: S,
    leases: L,
    sink: Arc<VerifySink>,
    metrics: Option<MetricsEndpoint>,
    shutdown: impl Future,
) -> Result<RunSummary, ServiceError> {
    let reader = StreamReader::new(config, streams, leases, sink)?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let mut server = metrics.map(|endpoint| {
        let health = Arc::new(Health {
            render: endpoint.render,
            status: reader.status(),
        });
        tokio::spawn(http::serve(endpoint.listener, health, async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }))
    });
    let mut endpoint_stopped = None;
    let result = reader
        .run(async {
            endpoint_stopped = endpoint_or_shutdown(server.as_mut(), shutdown).await;
        })
        .await;
    let _ = stop_tx.send(true);
    // An endpoint that ended already is not awaited again (a finished task's handle must not be polled).
    if let (Some(server), None) = (server, &endpoint_stopped) {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics endpoint failed"),
            Err(e) => tracing::warn!(error = %e, "metrics endpoint task failed"),
        }
    }
    let summary = result?;
    match endpoint_stopped {
        Some(why) => Err(ServiceError::MetricsEndpoint(why)),
        None => Ok(summary),
    }
}

/// Completes with `shutdown` (`None`), or when the metrics endpoint's task ends first (`Some(why)`): it only
/// ends when told to, so ending on its own is a failure (an error or a panic).
async fn endpoint_or_shutdown(
    endpoint: Option<&mut JoinHandle<std::io::Result<()>>>,
    shutdown: impl Future,
) -> Option<String> {
    let Some(endpoint) = endpoint else {
        shutdown.await;
        return None;
    };
    let why = tokio::select! {
        biased;
        _ = shutdown => return None,
        ended = endpoint => match ended {
            Ok(Ok(())) => "it returned".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        },
    };
    tracing::error!(error = %why, "metrics endpoint stopped; stopping the verifier");
    Some(why)
}

/// `/metrics` from the render function, `/readyz` from the reader's status.
struct Health {
    render: Arc<dyn Fn() -> String + Send + Sync>,
    status: StatusHandle,
}

impl HealthSource for Health {
    fn render_metrics(&self) -> String {
        (self.render)()
    }

    fn readiness(&self) -> Readiness {
        readiness(&self.status.snapshot())
    }
}

/// Ready when the worker synced its leases recently and no shard it holds is stalled. Holding a lease is not
/// needed: with more workers than shards, a worker without one is a standby that takes over a dead peer's shards,
/// and marking it unready would have the orchestrator replace a healthy task forever.
pub fn readiness(status: &ReaderStatus) -> Readiness {
    let Some(age) = status.last_lease_sync else {
        return Readiness::NotReady("no lease sync yet (shard discovery and lease listing)".to_owned());
    };
    if status.lease_sync_stale {
        return Readiness::NotReady(format!(
            "last successful lease sync {}s ago: shard discovery or the lease table keeps failing",
            age.as_secs()
        ));
    }
    let stalled = status.stalled_shards();
    if !stalled.is_empty() {
        return Readiness::NotReady(format!("stalled shards: {}", stalled.join(", ")));
    }
    Readiness::Ready
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use ddbguard_dbe::{AttributeValue, CryptoAction, Item, TableConfig, encrypt_item};
    use ddbguard_ddb::{FakeDynamo, KeyAttribute, KeySchema, ScalarType, TableSpec};
    use ddbguard_keys::RawAesKeyring;
    use ddbguard_stream::EventName;
    use ddbguard_stream::fake::FakeStreams;
    use zeroize::Zeroizing;

    use super::*;
    use crate::VerifyPolicy;
    use crate::convert::item_to_image;
    use crate::quarantine::QuarantineEntry;

    /// The fakes of one region.
    struct Fakes {
        dynamo: Arc<FakeDynamo>,
        streams: Arc<FakeStreams>,
    }

    impl RegionClients for Fakes {
        type Dynamo = Arc<FakeDynamo>;
        type Streams = Arc<FakeStreams>;
        fn dynamo(&self, _region: &str) -> Arc<FakeDynamo> {
            self.dynamo.clone()
        }
        fn streams(&self, _region: &str) -> Arc<FakeStreams> {
            self.streams.clone()
        }
    }

    fn table_config() -> TableConfig {
        let mut c = TableConfig::new("orders", "pk");
        c.attribute_actions.insert("pk".into(), CryptoAction::SignOnly);
        c.attribute_actions.insert("ssn".into(), CryptoAction::EncryptAndSign);
        c
    }

    fn keyring() -> Arc<RawAesKeyring> {
        Arc::new(RawAesKeyring::new("ddbguard-test", "key-1", Zeroizing::new([7u8; 32])))
    }

    fn verifier() -> Verifier {
        Verifier::new(VerifyPolicy::new(table_config()), keyring(), "eu-west-1").unwrap()
    }

    fn fakes(view: Option<&str>) -> Fakes {
        let dynamo = Arc::new(FakeDynamo::new());
        let mut spec = TableSpec::on_demand(
            "orders",
            KeySchema {
                hash: KeyAttribute::new("pk", ScalarType::S),
                range: None,
            },
        );
        spec.stream_view_type = view.map(str::to_owned);
        dynamo.add_table(spec);
        Fakes {
            dynamo,
            streams: Arc::new(FakeStreams::new()),
        }
    }

    async fn write(fakes: &Fakes, shard: &str, pk: &str, tamper: bool) {
        let mut item = Item::new();
        item.insert("pk".into(), AttributeValue::S(pk.into()));
        item.insert("ssn".into(), AttributeValue::S("123-45-6789".into()));
        let mut encrypted = encrypt_item(&table_config(), keyring().as_ref(), &item).await.unwrap();
        if tamper && let Some(AttributeValue::B(b)) = encrypted.get_mut("ssn") {
            let last = b.len() - 1;
            b[last] ^= 1;
        }
        let image = item_to_image(&encrypted);
        let keys: HashMap<_, _> = image
            .iter()
            .filter(|(k, _)| *k == "pk")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        fakes.streams.put_image(shard, EventName::Insert, keys, image);
    }

    fn config(leases: LeaseMode) -> ServiceConfig {
        ServiceConfig {
            table: "orders".into(),
            region: "eu-west-1".into(),
            worker_id: "w1".into(),
            leases,
            start_position: StartPosition::TrimHorizon,
            until_caught_up: true,
            quarantine: None,
            canaries: None,
        }
    }

    /// The whole service over fakes: stream resolved from DescribeTable, leases in a (fake) DynamoDB lease
    /// table, every record judged, a report that fails on the tampered record.
    #[tokio::test(start_paused = true)]
    async fn the_service_verifies_a_stream_over_fakes_and_reports() {
        let fakes = fakes(Some("NEW_AND_OLD_IMAGES"));
        fakes.streams.add_shard("shard-0", None);
        fakes.streams.add_shard("shard-1", None);
        for i in 0..5 {
            write(
                &fakes,
                if i % 2 == 0 { "shard-0" } else { "shard-1" },
                &format!("p{i}"),
                false,
            )
            .await;
        }
        let mode = LeaseMode::Table {
            prefix: "ddbguard-leases".into(),
        };
        let report = run(
            &fakes,
            config(mode.clone()),
            verifier(),
            None,
            std::future::pending::<()>(),
        )
        .await
        .unwrap();
        assert!(report.run.caught_up);
        assert_eq!(report.summary.records, 5);
        assert_eq!(report.summary.by_verdict.get(&ddbguard_dbe::Verdict::Ok), Some(&5));
        assert!(report.passed(), "{}", report.to_json());
        assert!(report.stream_arn.contains("table/orders/stream"));
        // The leases were kept in the lease table and released at the end.
        let leases = fakes.dynamo.items("ddbguard-leases-orders");
        assert_eq!(leases.len(), 2);
        assert!(leases.iter().all(|l| !l.contains_key("lease_owner")));

        write(&fakes, "shard-0", "p9", true).await;
        let report = run(
            &fakes,
            config(LeaseMode::InMemory),
            verifier(),
            None,
            std::future::pending::<()>(),
        )
        .await
        .unwrap();
        assert_eq!(report.summary.records, 6);
        assert!(!report.passed());
        assert_eq!(report.to_json()["failures"], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_table_without_a_usable_stream_is_a_named_startup_error() {
        let pending = std::future::pending::<()>;
        let err = run(&fakes(None), config(LeaseMode::InMemory), verifier(), None, pending())
            .await
            .unwrap_err();
        assert!(matches!(err, ServiceError::NoStream { .. }), "{err}");
        let err = run(
            &fakes(Some("KEYS_ONLY")),
            config(LeaseMode::InMemory),
            verifier(),
            None,
            pending(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("KEYS_ONLY"), "{err}");
        let mut other = config(LeaseMode::InMemory);
        other.table = "missing".into();
        let err = run(&fakes(None), other, verifier(), None, pending()).await.unwrap_err();
        assert!(matches!(err, ServiceError::TableNotFound { .. }), "{err}");
        let long = LeaseMode::Table {
            prefix: "x".repeat(250),
        };
        let err = run(&fakes(Some("NEW_IMAGE")), config(long), verifier(), None, pending())
            .await
            .unwrap_err();
        assert!(matches!(err, ServiceError::LeaseTableName { .. }), "{err}");
    }

    #[test]
    fn one_shot_runs_from_checkpoints_keep_them_in_the_audit_table() {
        let tables = LeaseTables {
            daemon: "leases".into(),
            audit: "audit-leases".into(),
        };
        let table = |prefix: &str| LeaseMode::Table { prefix: prefix.into() };
        for start in [
            StartPosition::Checkpoint,
            StartPosition::TrimHorizon,
            StartPosition::Latest,
        ] {
            assert_eq!(LeaseMode::for_run(&tables, false, start), table("leases"));
        }
        assert_eq!(
            LeaseMode::for_run(&tables, true, StartPosition::Checkpoint),
            table("audit-leases")
        );
        assert_eq!(
            LeaseMode::for_run(&tables, true, StartPosition::TrimHorizon),
            LeaseMode::InMemory
        );
        assert_eq!(
            LeaseMode::for_run(&tables, true, StartPosition::Latest),
            LeaseMode::InMemory
        );
    }

    /// A cron audit twice in a row: the second run verifies only what was written in between, and a daemon's
    /// lease table is not touched.
    #[tokio::test(start_paused = true)]
    async fn a_second_audit_resumes_where_the_first_stopped() {
        let fakes = fakes(Some("NEW_IMAGE"));
        fakes.streams.add_shard("shard-0", None);
        fakes.streams.add_shard("shard-1", None);
        for i in 0..4 {
            write(&fakes, &format!("shard-{}", i % 2), &format!("p{i}"), false).await;
        }
        let tables = LeaseTables {
            daemon: "leases".into(),
            audit: "audit-leases".into(),
        };
        let audit = || {
            let mut cfg = config(LeaseMode::for_run(&tables, true, StartPosition::Checkpoint));
            cfg.start_position = StartPosition::Checkpoint;
            cfg
        };
        let first = run(&fakes, audit(), verifier(), None, std::future::pending::<()>())
            .await
            .unwrap();
        assert!(first.passed(), "{}", first.to_json());
        assert_eq!(first.summary.records, 4);
        write(&fakes, "shard-1", "p8", true).await;
        write(&fakes, "shard-0", "p9", false).await;
        let second = run(&fakes, audit(), verifier(), None, std::future::pending::<()>())
            .await
            .unwrap();
        assert_eq!(second.summary.records, 2, "{}", second.to_json());
        assert_eq!(second.summary.duplicates_skipped, 0);
        assert_eq!(second.summary.failures(), 1);
        assert_eq!(fakes.dynamo.items("audit-leases-orders").len(), 2);
        assert!(fakes.dynamo.items("leases-orders").is_empty());
    }

    /// A failing record lands in quarantine with its stored image and no plaintext anywhere in the entry; a
    /// passing one does not. The table is created with its TTL.
    #[tokio::test(start_paused = true)]
    async fn a_failing_record_is_quarantined_without_plaintext() {
        let fakes = fakes(Some("NEW_IMAGE"));
        fakes.streams.add_shard("shard-0", None);
        write(&fakes, "shard-0", "p1", false).await;
        write(&fakes, "shard-0", "p2", true).await;
        let mut cfg = config(LeaseMode::InMemory);
        cfg.quarantine = Some(QuarantineSettings::default());
        let report = run(&fakes, cfg, verifier(), None, std::future::pending::<()>())
            .await
            .unwrap();
        assert_eq!(report.summary.failures(), 1);
        let failing = report.summary.by_verdict.keys().find(|v| !v.is_pass()).unwrap();
        let items = fakes.dynamo.items(quarantine::DEFAULT_TABLE);
        assert_eq!(items.len(), 1);
        assert_eq!(
            fakes.dynamo.ttl_attribute(quarantine::DEFAULT_TABLE).as_deref(),
            Some(quarantine::TTL_ATTRIBUTE)
        );
        let entry = QuarantineEntry::from_item(&items[0]).unwrap();
        assert_eq!(entry.verdict, failing.as_str());
        assert_eq!(entry.keys, r#"{"pk":{"S":"p2"}}"#);
        assert_eq!((entry.table.as_str(), entry.region.as_str()), ("orders", "eu-west-1"));
        assert_eq!(entry.shard_id, "shard-0");
        assert_eq!(entry.event_name, "INSERT");
        assert!(!entry.sequence_number.is_empty() && entry.id.ends_with(&entry.event_id));
        let image = entry.image.as_ref().unwrap();
        assert!(matches!(image.get("ssn"), Some(ddbguard_ddb::AttributeValue::B(_))));
        assert!(image.contains_key("aws_dbe_head") && image.contains_key("aws_dbe_foot"));
        let plaintext = "123-45-6789";
        assert!(!format!("{items:?}").contains(plaintext));
        assert!(!entry.to_json(true).to_string().contains(plaintext));
        for value in image.values() {
            if let ddbguard_ddb::AttributeValue::B(b) = value {
                assert!(!b.as_ref().windows(plaintext.len()).any(|w| w == plaintext.as_bytes()));
            }
        }
    }

    /// Records that failed under one keyring pass a replay under the keyring of today, which resolves them.
    #[tokio::test(start_paused = true)]
    async fn a_replay_with_todays_keys_resolves_the_entry() {
        let fakes = fakes(Some("NEW_IMAGE"));
        fakes.streams.add_shard("shard-0", None);
        write(&fakes, "shard-0", "p1", false).await;
        let wrong_key = Arc::new(RawAesKeyring::new("ddbguard-test", "key-1", Zeroizing::new([9u8; 32])));
        let yesterday = Verifier::new(VerifyPolicy::new(table_config()), wrong_key, "eu-west-1").unwrap();
        let mut cfg = config(LeaseMode::InMemory);
        cfg.quarantine = Some(QuarantineSettings::default());
        let report = run(&fakes, cfg, yesterday, None, std::future::pending::<()>())
            .await
            .unwrap();
        assert_eq!(report.summary.failures(), 1);
        let items = fakes.dynamo.items(quarantine::DEFAULT_TABLE);
        let mut entry = QuarantineEntry::from_item(&items[0]).unwrap();
        assert_eq!(entry.status, quarantine::EntryStatus::Open);

        let judgement = quarantine::replay(&verifier(), &mut entry).await;
        assert_eq!(judgement.verdict, ddbguard_dbe::Verdict::Ok, "{}", judgement.message);
        assert_eq!(entry.status, quarantine::EntryStatus::Resolved);
        assert_eq!(entry.resolved_verdict.as_deref(), Some("ok"));
        quarantine::put(&fakes.dynamo, quarantine::DEFAULT_TABLE, &entry)
            .await
            .unwrap();
        let stored = quarantine::get(&fakes.dynamo, quarantine::DEFAULT_TABLE, &entry.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.status, quarantine::EntryStatus::Resolved);
    }

    /// SIGTERM in a long-running service: the shutdown future ends the run, which releases its leases.
    #[tokio::test(start_paused = true)]
    async fn the_shutdown_future_stops_a_long_running_service() {
        let fakes = fakes(Some("NEW_IMAGE"));
        fakes.streams.add_shard("shard-0", None);
        write(&fakes, "shard-0", "p1", false).await;
        let mut cfg = config(LeaseMode::Table { prefix: "l".into() });
        cfg.until_caught_up = false;
        let report = run(
            &fakes,
            cfg,
            verifier(),
            None,
            tokio::time::sleep(Duration::from_secs(30)),
        )
        .await
        .unwrap();
        assert_eq!(report.summary.records, 1);
        assert_eq!(report.run.leases_released, 1);
        assert!(!report.run.caught_up);
    }

    #[test]
    fn a_healthy_standby_is_ready_and_a_stale_or_stalled_worker_is_not() {
        let mut status = ReaderStatus::default();
        assert!(matches!(readiness(&status), Readiness::NotReady(why) if why.contains("lease")));
        // A standby: no lease held (more workers than shards), leases synced a moment ago.
        status.last_lease_sync = Some(Duration::from_secs(2));
        assert_eq!(readiness(&status), Readiness::Ready);
        status.lease_sync_stale = true;
        assert!(matches!(readiness(&status), Readiness::NotReady(why) if why.contains("sync")));
        status.lease_sync_stale = false;
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
    fn the_report_json_adds_the_run_fields() {
        let report = VerifyReport {
            stream_arn: "arn:s".into(),
            summary: VerifySummary {
                table: "Orders".into(),
                region: "eu-west-1".into(),
                ..VerifySummary::default()
            },
            run: RunSummary {
                caught_up: true,
                ..RunSummary::default()
            },
        };
        let doc = report.to_json();
        assert_eq!(doc["table"], "Orders");
        assert_eq!(doc["stream_arn"], "arn:s");
        assert_eq!(doc["caught_up"], true);
        assert_eq!(doc["passed"], true);
        assert_eq!(doc["failures"], 0);
        let not_caught_up = VerifyReport {
            run: RunSummary::default(),
            ..report
        };
        assert_eq!(not_caught_up.to_json()["passed"], false);
    }

    /// The endpoint ending on its own (here: a panic) stops the wait and says why; the shutdown signal wins
    /// when both are ready, and a live endpoint waits for the shutdown.
    #[tokio::test]
    async fn an_endpoint_that_ends_on_its_own_is_reported() {
        let mut crashed: JoinHandle<std::io::Result<()>> = tokio::spawn(async { panic!("accept loop broke") });
        let why = endpoint_or_shutdown(Some(&mut crashed), std::future::pending::<()>()).await;
        assert!(why.as_deref().is_some_and(|w| w.contains("panicked")), "{why:?}");
        let err = ServiceError::MetricsEndpoint(why.unwrap_or_default());
        assert!(err.after_startup(), "{err}");
        let startup = ServiceError::NoStream {
            table: "t".into(),
            region: "r".into(),
        };
        assert!(!startup.after_startup());

        let mut done: JoinHandle<std::io::Result<()>> = tokio::spawn(async { Ok(()) });
        tokio::task::yield_now().await;
        assert_eq!(endpoint_or_shutdown(Some(&mut done), async {}).await, None);
        let mut live: JoinHandle<std::io::Result<()>> = tokio::spawn(std::future::pending());
        assert_eq!(endpoint_or_shutdown(Some(&mut live), async {}).await, None);
        live.abort();
        assert_eq!(endpoint_or_shutdown(None, async {}).await, None);
    }
}
