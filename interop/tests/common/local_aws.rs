//! The local two-region AWS environment for the hierarchical keyring tests: `scripts/local-aws.d/launcher.py`
//! (moto 5.2.5 with multi-Region keys, key states and global tables), started once per test process on a free
//! port and tied to its lifetime (`--exit-with-parent`), or the endpoint in `DDBGUARD_TEST_ENDPOINT` when set.
//! A small equivalent of the workspace's `tests` crate (this crate is outside the workspace).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateReplicationGroupMemberAction, KeySchemaElement, KeyType,
    ReplicationGroupUpdate, ScalarAttributeType, StreamSpecification, StreamViewType,
};

/// The region where tests create primary keys and tables.
pub const PRIMARY_REGION: &str = "us-east-1";
/// The second region: MRK replicas and global-table replicas live here.
pub const REPLICA_REGION: &str = "ap-southeast-2";

/// How long the launcher may take to start (under a second when installed).
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub type Result<T> = std::result::Result<T, String>;

/// The local environment of this test process.
#[derive(Debug)]
pub struct LocalAws {
    endpoint: String,
    host_port: String,
    /// The launcher this process started (`None` with `DDBGUARD_TEST_ENDPOINT`); it exits when we do.
    _child: Option<Mutex<Child>>,
}

static SHARED: OnceLock<LocalAws> = OnceLock::new();

/// The repository root (the parent of the interop crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("interop/ has a parent")
        .to_path_buf()
}

/// A name no other test (or earlier run against the same endpoint) uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid_like())
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{}-{nanos:x}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

impl LocalAws {
    /// The environment of this test process, started on first use.
    ///
    /// # Panics
    ///
    /// When it cannot be started: every hierarchical keyring test needs it.
    pub fn shared() -> &'static LocalAws {
        SHARED.get_or_init(|| match Self::start() {
            Ok(env) => env,
            Err(e) => panic!("cannot start the local AWS environment: {e}"),
        })
    }

    fn start() -> Result<LocalAws> {
        if let Ok(endpoint) = std::env::var("DDBGUARD_TEST_ENDPOINT") {
            let endpoint = endpoint.trim_end_matches('/').to_owned();
            let host_port = endpoint
                .strip_prefix("http://")
                .ok_or_else(|| format!("DDBGUARD_TEST_ENDPOINT must be http://HOST:PORT, got {endpoint}"))?
                .to_owned();
            let env = LocalAws {
                endpoint,
                host_port,
                _child: None,
            };
            env.wait_healthy()?;
            return Ok(env);
        }
        let repo = repo_root();
        let python = repo.join(".venv/bin/python");
        if !python.exists() {
            let status = Command::new(repo.join("scripts/local-aws"))
                .arg("install")
                .current_dir(&repo)
                .status()
                .map_err(|e| format!("running scripts/local-aws install: {e}"))?;
            if !status.success() {
                return Err(format!("scripts/local-aws install failed ({status})"));
            }
        }
        let mut child = Command::new(&python)
            .arg(repo.join("scripts/local-aws.d/launcher.py"))
            .args(["--host", "127.0.0.1", "--port", "0", "--exit-with-parent"])
            .arg(std::process::id().to_string())
            .current_dir(&repo)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Piped and forwarded rather than inherited, so no handle of ours outlives the test binary.
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", python.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(std::result::Result::ok) {
                    eprintln!("local-aws: {line}");
                }
            });
        }
        // The launcher prints "local-aws listening on http://127.0.0.1:PORT" once its socket is bound.
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
                return Err(format!(
                    "the launcher did not report its port within {START_TIMEOUT:?}: {other:?}"
                ));
            }
        };
        let endpoint = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|e| e.starts_with("http://"))
            .ok_or_else(|| format!("unexpected launcher output: {line:?}"))?
            .to_owned();
        let host_port = endpoint.trim_start_matches("http://").to_owned();
        let env = LocalAws {
            endpoint,
            host_port,
            _child: Some(Mutex::new(child)),
        };
        env.wait_healthy()?;
        Ok(env)
    }

    fn wait_healthy(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match http_get(&self.host_port, "/_local/health") {
                Ok(200) => return Ok(()),
                other if Instant::now() > deadline => {
                    return Err(format!("no healthy answer at {}: {other:?}", self.endpoint));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A KMS client for `region` against the local endpoint (static test credentials).
    pub fn kms(&self, region: &str) -> aws_sdk_kms::Client {
        use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "interop"))
            .build();
        aws_sdk_kms::Client::from_conf(config)
    }

    /// A DynamoDB client for `region` against the local endpoint (static test credentials).
    pub fn dynamodb(&self, region: &str) -> aws_sdk_dynamodb::Client {
        use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "interop"))
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// A multi-Region key in [`PRIMARY_REGION`] replicated to [`REPLICA_REGION`]: (primary ARN, replica ARN).
    pub async fn create_replicated_mrk(&self, description: &str) -> Result<(String, String)> {
        let kms = self.kms(PRIMARY_REGION);
        let created = kms
            .create_key()
            .multi_region(true)
            .description(description)
            .send()
            .await
            .map_err(|e| format!("CreateKey: {e:?}"))?;
        let primary = created
            .key_metadata()
            .and_then(|m| m.arn())
            .ok_or("CreateKey returned no ARN")?
            .to_owned();
        let replica = kms
            .replicate_key()
            .key_id(&primary)
            .replica_region(REPLICA_REGION)
            .send()
            .await
            .map_err(|e| format!("ReplicateKey: {e:?}"))?;
        let replica = replica
            .replica_key_metadata()
            .and_then(|m| m.arn())
            .ok_or("ReplicateKey returned no ARN")?
            .to_owned();
        Ok((primary, replica))
    }

    /// Creates a key store table (`branch-key-id` HASH S, `type` RANGE S) in [`PRIMARY_REGION`] and adds its
    /// replica in [`REPLICA_REGION`]: a global table, version 2019.11.21, that the environment replicates.
    pub async fn create_global_key_store_table(&self, name: &str) -> Result<()> {
        let ddb = self.dynamodb(PRIMARY_REGION);
        let key = |name: &str, key_type| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .map_err(|e| e.to_string())
        };
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| e.to_string())
        };
        ddb.create_table()
            .table_name(name)
            .key_schema(key("branch-key-id", KeyType::Hash)?)
            .key_schema(key("type", KeyType::Range)?)
            .attribute_definitions(attr("branch-key-id")?)
            .attribute_definitions(attr("type")?)
            .billing_mode(BillingMode::PayPerRequest)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .send()
            .await
            .map_err(|e| format!("CreateTable: {e:?}"))?;
        ddb.update_table()
            .table_name(name)
            .replica_updates(
                ReplicationGroupUpdate::builder()
                    .create(
                        CreateReplicationGroupMemberAction::builder()
                            .region_name(REPLICA_REGION)
                            .build()
                            .map_err(|e| e.to_string())?,
                    )
                    .build(),
            )
            .send()
            .await
            .map_err(|e| format!("UpdateTable ReplicaUpdates Create: {e:?}"))?;
        Ok(())
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`; the status code.
fn http_get(host_port: &str, path: &str) -> Result<u16> {
    let mut stream = TcpStream::connect(host_port).map_err(|e| format!("connecting to {host_port}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("malformed response: {response:?}"))
}
