//! Canaries end to end: two long-running `ddbguard verify` processes, one per region of a global table, write
//! their canaries every second and watch each other's arrive. With replication from us-east-1 paused, the
//! ap-southeast-2 verifier reports us-east-1 missing within `canary_slo` plus one interval, and present again once
//! replication resumes; a 3 s replication lag shows in the lag histogram; with the ap-southeast-2 replica key
//! disabled, us-east-1's canaries are `key_unavailable` there; both stop within 20 s of SIGTERM.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ddbguard_e2e::{Knob, LocalAws, PRIMARY_REGION, REPLICA_REGION, unique_name};

use crate::cli::TempDir;

const INTERVAL_S: u64 = 1;
const SLO_S: u64 = 4;

fn config(region: &str, endpoint: &str, table: &str, key_arn: &str, leases: &str) -> String {
    format!(
        r#"[aws]
region = "{region}"
regions = ["{PRIMARY_REGION}", "{REPLICA_REGION}"]
endpoint_url = "{endpoint}"

[verify]
lease_table = "{leases}"
quarantine = false
canary_interval = "{INTERVAL_S}s"
canary_slo = "{SLO_S}s"

[[tables]]
name = "{table}"
partition_key = "pk"

[tables.attribute_actions]
pk = "SIGN_ONLY"
ssn = "ENCRYPT_AND_SIGN"

[tables.keyring]
kind = "kms-mrk"
key_arn = "{key_arn}"
"#
    )
}

/// A long-running verifier: the child process, its metrics address and its log file.
pub(crate) struct Verifier {
    child: Child,
    addr: SocketAddr,
    log: String,
}

impl Verifier {
    pub(crate) fn start(config: &str, table: &str, log: String) -> Verifier {
        Verifier::spawn(&["verify", "--config", config, "--table", table], &[], log)
    }

    /// Starts `ddbguard ARGS --metrics-addr <a free port>` with `env` and its log (level info) in `log`.
    pub(crate) fn spawn(args: &[&str], env: &[(&str, &str)], log: String) -> Verifier {
        // A free port: bound, read and released (the verifier binds it a moment later).
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = crate::cli::command()
            .args(args)
            .arg("--metrics-addr")
            .arg(addr.to_string())
            .envs(env.iter().copied())
            .env("DDBGUARD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawning ddbguard");
        Verifier { child, addr, log }
    }

    /// `/metrics`, or an empty string while the endpoint is not up.
    fn metrics(&self) -> String {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .is_err()
        {
            return String::new();
        }
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body);
        body
    }

    /// The value of the first series of `name` whose labels include every `label="value"` of `labels`.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        series_value(&self.metrics(), name, labels)
    }

    /// SIGTERM, then the time until exit and the exit code.
    pub(crate) fn stop(mut self) -> (Duration, Option<i32>, String) {
        let start = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = start + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        (start.elapsed(), status.and_then(|s| s.code()), log)
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn series_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Polls `check` every 200 ms until it holds or `timeout` passes; the time it took.
pub(crate) fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn labels<'a>(origin: &'a str, replica: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("origin_region", origin), ("replica_region", replica)]
}

#[tokio::test(flavor = "multi_thread")]
async fn canaries_show_paused_replication_lag_and_a_disabled_replica() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env.create_replicated_mrk(&unique_name("canary", "story")).await?;
    let table = unique_name("canary", "story");
    env.create_global_table(&table).await?;
    let dir = TempDir::new("canary");
    let leases = unique_name("leases", "canary");
    let east_cfg = dir.write(
        "east.toml",
        &config(PRIMARY_REGION, env.endpoint(), &table, &mrk.primary_arn, &leases),
    );
    let south_cfg = dir.write(
        "south.toml",
        &config(
            REPLICA_REGION,
            env.endpoint(),
            &table,
            &mrk.arn_in(REPLICA_REGION),
            &leases,
        ),
    );
    let east = Verifier::start(&east_cfg, &table, dir.write("east.log", ""));
    let south = Verifier::start(&south_cfg, &table, dir.write("south.log", ""));

    // Both regions' canaries arrive in both regions, decrypt and are not missing.
    let ok = |v: &Verifier, origin: &str, replica: &str| {
        let mut l = labels(origin, replica);
        l.push(("verdict", "ok"));
        v.value("ddbguard_canaries_total", &l).unwrap_or(0.0) >= 1.0
    };
    wait_until(
        "canaries of both regions in both regions",
        Duration::from_secs(60),
        || {
            ok(&east, PRIMARY_REGION, PRIMARY_REGION)
                && ok(&east, REPLICA_REGION, PRIMARY_REGION)
                && ok(&south, PRIMARY_REGION, REPLICA_REGION)
                && ok(&south, REPLICA_REGION, REPLICA_REGION)
        },
    );
    let missing =
        |v: &Verifier, origin: &str, replica: &str| v.value("ddbguard_canary_missing", &labels(origin, replica));
    assert_eq!(missing(&south, PRIMARY_REGION, REPLICA_REGION), Some(0.0));
    assert_eq!(missing(&east, REPLICA_REGION, PRIMARY_REGION), Some(0.0));
    // Canaries are not application records.
    assert_eq!(south.value("ddbguard_records_total", &[]), None, "{}", south.metrics());

    // Replication from us-east-1 paused: missing in ap-southeast-2 within the SLO plus one interval.
    let east_to_south = || Knob::table(&table).direction(PRIMARY_REGION, REPLICA_REGION);
    env.set_replication(&east_to_south().paused(true)).await?;
    let took = wait_until("us-east-1 missing in ap-southeast-2", Duration::from_secs(30), || {
        missing(&south, PRIMARY_REGION, REPLICA_REGION) == Some(1.0)
    });
    println!("paused replication: missing after {took:?}");
    // The metrics endpoint is read every 200 ms and the state evaluated every second: a second of slack.
    assert!(
        took <= Duration::from_secs(SLO_S + INTERVAL_S + 1),
        "missing only after {took:?}"
    );
    assert_eq!(
        missing(&east, REPLICA_REGION, PRIMARY_REGION),
        Some(0.0),
        "the other direction still flows"
    );
    env.set_replication(&east_to_south().paused(false)).await?;
    let took = wait_until("us-east-1 back in ap-southeast-2", Duration::from_secs(30), || {
        missing(&south, PRIMARY_REGION, REPLICA_REGION) == Some(0.0)
    });
    println!("resumed replication: present again after {took:?}");

    // A 3 s lag: observations above the 2.5 s bucket.
    env.set_replication(&east_to_south().lag_ms(3000)).await?;
    let slow = || {
        let text = south.metrics();
        let l = labels(PRIMARY_REGION, REPLICA_REGION);
        let count = series_value(&text, "ddbguard_canary_lag_seconds_count", &l).unwrap_or(0.0);
        let mut fast = l.clone();
        fast.push(("le", "2.5"));
        let under = series_value(&text, "ddbguard_canary_lag_seconds_bucket", &fast).unwrap_or(0.0);
        count - under
    };
    wait_until("a lag above 2.5 s", Duration::from_secs(30), || slow() >= 2.0);
    env.set_replication(&east_to_south().lag_ms(200)).await?;

    // The ap-southeast-2 replica disabled: us-east-1's canaries are key_unavailable there, and its own canary
    // cannot be encrypted.
    let kms = env.kms(REPLICA_REGION).await;
    let replica_arn = mrk.arn_in(REPLICA_REGION);
    kms.disable_key().key_id(&replica_arn).send().await?;
    wait_until(
        "key_unavailable canaries in ap-southeast-2",
        Duration::from_secs(30),
        || {
            let mut l = labels(PRIMARY_REGION, REPLICA_REGION);
            l.push(("verdict", "key_unavailable"));
            south.value("ddbguard_canaries_total", &l).unwrap_or(0.0) >= 1.0
        },
    );
    wait_until("encrypt_failed canary writes", Duration::from_secs(30), || {
        south
            .value("ddbguard_canary_writes_total", &[("outcome", "encrypt_failed")])
            .unwrap_or(0.0)
            >= 1.0
    });
    kms.enable_key().key_id(&replica_arn).send().await?;
    let recovered_from = south
        .value(
            "ddbguard_canaries_total",
            &[("origin_region", PRIMARY_REGION), ("verdict", "ok")],
        )
        .unwrap_or(0.0);
    wait_until("ok canaries again", Duration::from_secs(30), || {
        south
            .value(
                "ddbguard_canaries_total",
                &[("origin_region", PRIMARY_REGION), ("verdict", "ok")],
            )
            .unwrap_or(0.0)
            > recovered_from
    });

    let (east_took, east_code, _) = east.stop();
    let (south_took, south_code, south_log) = south.stop();
    println!("stopped: us-east-1 in {east_took:?}, ap-southeast-2 in {south_took:?}");
    assert_eq!((east_code, south_code), (Some(0), Some(0)), "{south_log}");
    assert!(east_took < Duration::from_secs(20) && south_took < Duration::from_secs(20));
    for event in [
        "canary_missing",
        "canary_arrived",
        "canary_verdict",
        "canary_recovered",
        "canary_write_failed",
    ] {
        assert!(
            south_log.contains(event),
            "no {event} event in the ap-southeast-2 log:\n{south_log}"
        );
    }
    assert!(south_log.contains("key_unavailable"), "{south_log}");
    Ok(())
}
