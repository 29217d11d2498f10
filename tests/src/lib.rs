//! Test support for ddbguard's end-to-end tests against the local two-region AWS environment.
//!
//! [`LocalAws::shared`] starts `scripts/local-aws.d/launcher.py` (moto 5.2.5 with MRKs, key states, global tables
//! and fault knobs; see `scripts/local-aws.d/README.md`) once per test process, on a free port, tied to this
//! process's lifetime (`--exit-with-parent`). With `DDBGUARD_TEST_ENDPOINT` set it uses that endpoint instead.
//! It builds SDK clients per region, and has helpers for unique names, MRKs, global tables, replication knobs and
//! waiting for items and stream records.
//!
//! SDK clients are built per test (never cached across tests): each `#[tokio::test]` has its own runtime, and an
//! HTTP connection pool must not outlive the runtime that made it.

pub mod aurora;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CreateReplicationGroupMemberAction, KeySchemaElement, KeyType,
    PutRequest, ReplicationGroupUpdate, ScalarAttributeType, StreamSpecification, StreamViewType, WriteRequest,
};
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};

/// The region where tests create primary keys and global tables.
pub const PRIMARY_REGION: &str = "us-east-1";
/// The second region: MRK replicas and global-table replicas live here.
pub const REPLICA_REGION: &str = "ap-southeast-2";
/// The hash key attribute of tables made by [`LocalAws::create_global_table`] (type `S`).
pub const PK: &str = "pk";

/// How long [`LocalAws::shared`] waits for the launcher to start (it takes under a second when installed).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The local two-region AWS environment used by one test process.
#[derive(Debug)]
pub struct LocalAws {
    endpoint: String,
    host_port: String,
    /// The launcher started by this process (`None` when `DDBGUARD_TEST_ENDPOINT` was given). Kept so the child
    /// handle and its stdout pipe live as long as the process; the launcher exits by itself when we do.
    _child: Option<Mutex<Child>>,
}

static SHARED: OnceLock<LocalAws> = OnceLock::new();

impl LocalAws {
    /// The environment of this test process, started on first use.
    ///
    /// Uses `DDBGUARD_TEST_ENDPOINT` (e.g. `http://127.0.0.1:4566`) when set; otherwise runs
    /// `<repo>/.venv/bin/python scripts/local-aws.d/launcher.py --port 0 --exit-with-parent <pid>` (running
    /// `scripts/local-aws install` first when the venv is missing) and waits until it answers.
    ///
    /// # Panics
    ///
    /// When the environment cannot be started or does not answer: every end-to-end test needs it.
    pub fn shared() -> &'static LocalAws {
        SHARED.get_or_init(|| match Self::start() {
            Ok(env) => env,
            Err(e) => panic!("cannot start the local AWS environment: {e:#}"),
        })
    }

    fn start() -> Result<LocalAws> {
        if let Ok(endpoint) = std::env::var("DDBGUARD_TEST_ENDPOINT") {
            let endpoint = endpoint.trim_end_matches('/').to_string();
            let host_port = endpoint
                .strip_prefix("http://")
                .ok_or_else(|| anyhow!("DDBGUARD_TEST_ENDPOINT must be http://HOST:PORT, got {endpoint}"))?
                .to_string();
            let env = LocalAws {
                endpoint,
                host_port,
                _child: None,
            };
            env.wait_healthy(START_TIMEOUT)?;
            return Ok(env);
        }
        let repo = repo_root();
        let python = repo.join(".venv/bin/python");
        if !python.exists() {
            let status = Command::new(repo.join("scripts/local-aws"))
                .arg("install")
                .current_dir(&repo)
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit())
                .status()
                .context("running scripts/local-aws install")?;
            if !status.success() {
                bail!("scripts/local-aws install failed ({status})");
            }
        }
        let mut child = Command::new(&python)
            .arg(repo.join("scripts/local-aws.d/launcher.py"))
            .args(["--host", "127.0.0.1", "--port", "0", "--exit-with-parent"])
            .arg(std::process::id().to_string())
            .current_dir(&repo)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Piped and forwarded, not inherited: an inherited handle held by the launcher for its last 500 ms
            // would make test runners wait for (and report) a leaked process.
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", python.display()))?;
        // The launcher prints "local-aws listening on http://127.0.0.1:PORT" once its socket is bound.
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout pipe"))?;
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("local-aws: {line}");
                }
            });
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(reader.read_line(&mut line).map(|_| line));
            // Keep draining so the launcher never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) if !line.is_empty() => line,
            other => {
                let _ = child.kill();
                bail!("the launcher did not report its port within {START_TIMEOUT:?}: {other:?}");
            }
        };
        let endpoint = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|e| e.starts_with("http://"))
            .ok_or_else(|| anyhow!("unexpected launcher output: {line:?}"))?
            .to_string();
        let host_port = endpoint.trim_start_matches("http://").to_string();
        let env = LocalAws {
            endpoint,
            host_port,
            _child: Some(Mutex::new(child)),
        };
        env.wait_healthy(START_TIMEOUT)?;
        Ok(env)
    }

    fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match http_blocking(&self.host_port, "GET", "/_local/health", "") {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) if Instant::now() > deadline => bail!("health: {status} {body}"),
                Err(e) if Instant::now() > deadline => return Err(e.context(format!("no answer at {}", self.endpoint))),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// SDK configuration for `region` against the local endpoint, with static test credentials. `max_attempts`
    /// `None` keeps the SDK's standard retries; `Some(1)` makes errors surface at once.
    pub async fn sdk_config(&self, region: &str, max_attempts: Option<u32>) -> SdkConfig {
        let retry = match max_attempts {
            Some(n) => RetryConfig::standard().with_max_attempts(n),
            None => RetryConfig::standard(),
        };
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::from_keys("test", "test", None))
            .retry_config(retry)
            .load()
            .await
    }

    /// A KMS client for `region`.
    pub async fn kms(&self, region: &str) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.sdk_config(region, None).await)
    }

    /// ddbguard's governed KMS client for `region` (SDK retries off, the governor's retry policy, no rate
    /// limit), counting its calls into `counters`.
    pub async fn governed_kms(
        &self,
        region: &str,
        counters: &std::sync::Arc<ddbguard_keys::kms::KmsCounters>,
    ) -> std::sync::Arc<dyn ddbguard_keys::kms::KmsApi> {
        use ddbguard_keys::kms::{GovernedKms, RetryPolicy, SdkKms};
        let sdk = SdkKms::new(self.kms(region).await, region);
        std::sync::Arc::new(GovernedKms::new(
            std::sync::Arc::new(sdk),
            None,
            RetryPolicy::default(),
            counters.clone(),
        ))
    }

    /// A KMS client for `region` that does not retry: for tests that expect an error.
    pub async fn kms_no_retry(&self, region: &str) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.sdk_config(region, Some(1)).await)
    }

    /// A DynamoDB client for `region`.
    pub async fn dynamodb(&self, region: &str) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config(region, None).await)
    }

    /// A DynamoDB client for `region` that does not retry.
    pub async fn dynamodb_no_retry(&self, region: &str) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config(region, Some(1)).await)
    }

    /// A DynamoDB Streams client for `region`.
    pub async fn streams(&self, region: &str) -> aws_sdk_dynamodbstreams::Client {
        aws_sdk_dynamodbstreams::Client::new(&self.sdk_config(region, None).await)
    }

    /// A DynamoDB Streams client for `region` that does not retry.
    pub async fn streams_no_retry(&self, region: &str) -> aws_sdk_dynamodbstreams::Client {
        aws_sdk_dynamodbstreams::Client::new(&self.sdk_config(region, Some(1)).await)
    }

    /// Creates a multi-Region key in [`PRIMARY_REGION`] and replicates it to [`REPLICA_REGION`].
    pub async fn create_replicated_mrk(&self, description: &str) -> Result<Mrk> {
        let mrk = self.create_mrk(description).await?;
        let replica = self
            .kms(PRIMARY_REGION)
            .await
            .replicate_key()
            .key_id(&mrk.primary_arn)
            .replica_region(REPLICA_REGION)
            .send()
            .await
            .context("ReplicateKey")?;
        let replica_arn = replica
            .replica_key_metadata()
            .and_then(|m| m.arn())
            .ok_or_else(|| anyhow!("ReplicateKey returned no ARN"))?
            .to_string();
        Ok(Mrk {
            replica_arn: Some(replica_arn),
            ..mrk
        })
    }

    /// Creates a multi-Region key in [`PRIMARY_REGION`] only (no replica).
    pub async fn create_mrk(&self, description: &str) -> Result<Mrk> {
        let created = self
            .kms(PRIMARY_REGION)
            .await
            .create_key()
            .multi_region(true)
            .description(description)
            .send()
            .await
            .context("CreateKey")?;
        let meta = created
            .key_metadata()
            .ok_or_else(|| anyhow!("CreateKey returned no metadata"))?;
        Ok(Mrk {
            key_id: meta.key_id().to_string(),
            primary_arn: meta
                .arn()
                .ok_or_else(|| anyhow!("CreateKey returned no ARN"))?
                .to_string(),
            replica_arn: None,
        })
    }

    /// Creates table `name` in [`PRIMARY_REGION`] (hash key [`PK`] of type `S`, on-demand, stream with new and
    /// old images) and adds its replica in [`REPLICA_REGION`]: a global table, version 2019.11.21.
    pub async fn create_global_table(&self, name: &str) -> Result<()> {
        self.create_global_table_keyed(name, &[(PK, KeyType::Hash)]).await
    }

    /// Like [`LocalAws::create_global_table`] with another key schema: `(attribute, HASH or RANGE)`, every key
    /// attribute of type `S` (e.g. a branch key store: `branch-key-id` HASH, `type` RANGE).
    pub async fn create_global_table_keyed(&self, name: &str, keys: &[(&str, KeyType)]) -> Result<()> {
        let typed: Vec<_> = keys
            .iter()
            .map(|(attribute, key_type)| (*attribute, key_type.clone(), ScalarAttributeType::S))
            .collect();
        self.create_global_table_typed(name, &typed).await
    }

    /// Like [`LocalAws::create_global_table_keyed`] with each key attribute's type (e.g. the legacy client's
    /// metastore: `N` HASH of type `S`, `V` RANGE of type `N`).
    pub async fn create_global_table_typed(
        &self,
        name: &str,
        keys: &[(&str, KeyType, ScalarAttributeType)],
    ) -> Result<()> {
        let ddb = self.dynamodb(PRIMARY_REGION).await;
        let mut create = ddb.create_table().table_name(name);
        for (attribute, key_type, attribute_type) in keys {
            create = create
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(*attribute)
                        .key_type(key_type.clone())
                        .build()?,
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(*attribute)
                        .attribute_type(attribute_type.clone())
                        .build()?,
                );
        }
        create
            .billing_mode(BillingMode::PayPerRequest)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()?,
            )
            .send()
            .await
            .context("CreateTable")?;
        ddb.update_table()
            .table_name(name)
            .replica_updates(
                ReplicationGroupUpdate::builder()
                    .create(
                        CreateReplicationGroupMemberAction::builder()
                            .region_name(REPLICA_REGION)
                            .build()?,
                    )
                    .build(),
            )
            .send()
            .await
            .context("UpdateTable ReplicaUpdates Create")?;
        Ok(())
    }

    /// Sets a replication knob (`POST /_local/replication`).
    pub async fn set_replication(&self, knob: &Knob) -> Result<serde_json::Value> {
        let (status, body) = self
            .http("POST", "/_local/replication", knob.to_json().to_string())
            .await?;
        if status != 200 {
            bail!("POST /_local/replication: {status} {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// The replication state (`GET /_local/replication`): knobs, queue depth, counters.
    pub async fn replication_state(&self) -> Result<serde_json::Value> {
        let (status, body) = self.http("GET", "/_local/replication", String::new()).await?;
        if status != 200 {
            bail!("GET /_local/replication: {status} {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// One HTTP/1.1 request to the environment; returns the status code and the body.
    pub async fn http(&self, method: &str, path: &str, body: String) -> Result<(u16, String)> {
        let host_port = self.host_port.clone();
        let (method, path) = (method.to_string(), path.to_string());
        tokio::task::spawn_blocking(move || http_blocking(&host_port, &method, &path, &body)).await?
    }
}

/// A multi-Region key made by [`LocalAws::create_mrk`] or [`LocalAws::create_replicated_mrk`].
#[derive(Debug, Clone)]
pub struct Mrk {
    /// The key id (`mrk-…`), the same in every region.
    pub key_id: String,
    /// The primary key's ARN (in [`PRIMARY_REGION`]).
    pub primary_arn: String,
    /// The replica's ARN in [`REPLICA_REGION`], when replicated.
    pub replica_arn: Option<String>,
}

impl Mrk {
    /// The ARN this key has (or would have) in `region`.
    pub fn arn_in(&self, region: &str) -> String {
        self.primary_arn
            .replacen(&format!(":{PRIMARY_REGION}:"), &format!(":{region}:"), 1)
    }
}

/// A replication fault knob (`POST /_local/replication`); unset fields are left as they are.
#[derive(Debug, Clone, Default)]
pub struct Knob {
    /// Source region (`None`: every region).
    pub source: Option<String>,
    /// Target region (`None`: every region).
    pub target: Option<String>,
    /// Table (`None`: every table). Tests always set it so they do not disturb each other.
    pub table: Option<String>,
    /// Queue (`true`) or deliver (`false`) replicated writes.
    pub paused: Option<bool>,
    /// Replication lag for writes from now on.
    pub lag_ms: Option<u64>,
    /// Drop the next N replicated writes.
    pub drop_next: Option<u64>,
}

impl Knob {
    /// A knob scoped to `table`, both directions.
    pub fn table(table: &str) -> Knob {
        Knob {
            table: Some(table.to_string()),
            ..Knob::default()
        }
    }

    /// Narrows the knob to one direction.
    pub fn direction(mut self, source: &str, target: &str) -> Knob {
        self.source = Some(source.to_string());
        self.target = Some(target.to_string());
        self
    }

    /// Sets `paused`.
    pub fn paused(mut self, paused: bool) -> Knob {
        self.paused = Some(paused);
        self
    }

    /// Sets `lag_ms`.
    pub fn lag_ms(mut self, lag_ms: u64) -> Knob {
        self.lag_ms = Some(lag_ms);
        self
    }

    /// Sets `drop_next`.
    pub fn drop_next(mut self, n: u64) -> Knob {
        self.drop_next = Some(n);
        self
    }

    /// The JSON body of the knob.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        let strings = [
            ("source", &self.source),
            ("target", &self.target),
            ("table", &self.table),
        ];
        for (name, value) in strings {
            if let Some(v) = value {
                map.insert(name.into(), v.clone().into());
            }
        }
        if let Some(p) = self.paused {
            map.insert("paused".into(), p.into());
        }
        if let Some(l) = self.lag_ms {
            map.insert("lag_ms".into(), l.into());
        }
        if let Some(d) = self.drop_next {
            map.insert("drop_next".into(), d.into());
        }
        serde_json::Value::Object(map)
    }
}

/// A fresh name for a test resource: `prefix-test-<12 hex chars>`, valid as a table name and key description.
pub fn unique_name(prefix: &str, test: &str) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let test: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{prefix}-{test}-{}", &suffix[..12])
}

/// The DynamoDB key `{pk: S(value)}` of tables made by [`LocalAws::create_global_table`].
pub fn pk(value: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_string(), AttributeValue::S(value.to_string()))])
}

/// Polls `GetItem` (consistent read) until the item exists or `timeout` passes.
pub async fn wait_for_item(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    key: HashMap<String, AttributeValue>,
    timeout: Duration,
) -> Result<Option<HashMap<String, AttributeValue>>> {
    wait_for_item_where(ddb, table, key, timeout, |_| true).await
}

/// Waits until every item `{pk: id}` of `ids` exists in `table` through `replica` (the other region's client),
/// each within `timeout`; an error names the first that did not arrive.
pub async fn wait_replicated<'a>(
    replica: &aws_sdk_dynamodb::Client,
    table: &str,
    ids: impl IntoIterator<Item = &'a str>,
    timeout: Duration,
) -> Result<()> {
    for id in ids {
        if wait_for_item(replica, table, pk(id), timeout).await?.is_none() {
            bail!("{id} did not reach {table} in the other region within {timeout:?}");
        }
    }
    Ok(())
}

/// Polls `GetItem` until the item exists and satisfies `accept`, or `timeout` passes (then `None`).
pub async fn wait_for_item_where(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    key: HashMap<String, AttributeValue>,
    timeout: Duration,
    accept: impl Fn(&HashMap<String, AttributeValue>) -> bool,
) -> Result<Option<HashMap<String, AttributeValue>>> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = get_item(ddb, table, key.clone()).await?;
        if let Some(item) = got.filter(|i| accept(i)) {
            return Ok(Some(item));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GetItem` until the item is absent or `timeout` passes; returns whether it is absent.
pub async fn wait_for_absence(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    key: HashMap<String, AttributeValue>,
    timeout: Duration,
) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if get_item(ddb, table, key.clone()).await?.is_none() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GetItem` with a consistent read.
pub async fn get_item(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    key: HashMap<String, AttributeValue>,
) -> Result<Option<HashMap<String, AttributeValue>>> {
    let out = ddb
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .context("GetItem")?;
    Ok(out.item().cloned())
}

/// Every record currently in the stream of `table` (all shards, from `TRIM_HORIZON`).
pub async fn stream_records(streams: &aws_sdk_dynamodbstreams::Client, table: &str) -> Result<Vec<Record>> {
    let listed = streams
        .list_streams()
        .table_name(table)
        .send()
        .await
        .context("ListStreams")?;
    let stream_arn = listed
        .streams()
        .first()
        .and_then(|s| s.stream_arn())
        .ok_or_else(|| anyhow!("table {table} has no stream"))?
        .to_string();
    let described = streams
        .describe_stream()
        .stream_arn(&stream_arn)
        .send()
        .await
        .context("DescribeStream")?;
    let shards = described
        .stream_description()
        .map(|d| d.shards().to_vec())
        .unwrap_or_default();
    let mut records = Vec::new();
    for shard in shards {
        let shard_id = shard.shard_id().ok_or_else(|| anyhow!("shard without id"))?;
        let mut iterator = streams
            .get_shard_iterator()
            .stream_arn(&stream_arn)
            .shard_id(shard_id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .context("GetShardIterator")?
            .shard_iterator()
            .map(str::to_string);
        while let Some(it) = iterator {
            let page = streams
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .context("GetRecords")?;
            if page.records().is_empty() {
                break;
            }
            records.extend(page.records().iter().cloned());
            iterator = page.next_shard_iterator().map(str::to_string);
        }
    }
    Ok(records)
}

/// Polls the stream of `table` until a record satisfies `accept` or `timeout` passes (then `None`).
pub async fn wait_for_stream_record(
    streams: &aws_sdk_dynamodbstreams::Client,
    table: &str,
    timeout: Duration,
    accept: impl Fn(&Record) -> bool,
) -> Result<Option<Record>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = stream_records(streams, table).await?.into_iter().find(|r| accept(r)) {
            return Ok(Some(found));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The string value of hash key [`PK`] in a stream record's keys.
pub fn record_pk(record: &Record) -> Option<&str> {
    match record.dynamodb()?.keys()?.get(PK)? {
        aws_sdk_dynamodbstreams::types::AttributeValue::S(s) => Some(s),
        _ => None,
    }
}

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A minimal blocking HTTP/1.1 client for the `/_local/` endpoints (`Connection: close`, no TLS).
fn http_blocking(host_port: &str, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(host_port).with_context(|| format!("connecting to {host_port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed status line: {head}"))?;
    Ok((status, body.to_string()))
}

/// Writes `items` with `BatchWriteItem`, 25 at a time, resending unprocessed requests.
pub async fn batch_write(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    items: Vec<HashMap<String, AttributeValue>>,
) -> Result<()> {
    for chunk in items.chunks(25) {
        let mut requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|i| {
                let put = PutRequest::builder().set_item(Some(i.clone())).build()?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<Result<_, aws_sdk_dynamodb::error::BuildError>>()?;
        for _ in 0..50 {
            let out = ddb
                .batch_write_item()
                .request_items(table, requests.clone())
                .send()
                .await?;
            requests = out
                .unprocessed_items()
                .and_then(|u| u.get(table))
                .cloned()
                .unwrap_or_default();
            if requests.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::ensure!(
            requests.is_empty(),
            "BatchWriteItem left {} unprocessed",
            requests.len()
        );
    }
    Ok(())
}
