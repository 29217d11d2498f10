//! `ddbguard verify --until-caught-up` end to end: the real binary reads the stream of a global table's replica in
//! ap-southeast-2 from its oldest record and prints a JSON summary; these tests assert its counts by verdict and by
//! origin region, and its exit code, for items written correctly in either region, for tampered and misconfigured
//! items (`key_not_mrk`, `integrity_failed`, `policy_violation`), for a disabled local key replica
//! (`key_unavailable`) and for a clean run of 2,000 records.
//!
//! Items are encrypted by `ddbguard item encrypt` (JSON lines for batches) and written with the SDK.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use ddbguard_e2e::{LocalAws, Mrk, PRIMARY_REGION, REPLICA_REGION, batch_write, unique_name, wait_replicated};
use serde_json::{Value, json};

use crate::cli::{Run, TempDir, ddbguard, verify_until_caught_up, verify_until_caught_up_into};

/// Verdicts that let `verify --until-caught-up` exit 0.
const PASSING: [&str; 3] = ["ok", "ok_structural", "remove"];

/// DynamoDB JSON (as `ddbguard item encrypt` prints it) to an SDK attribute value.
fn to_sdk(value: &Value) -> AttributeValue {
    let (kind, inner) = value
        .as_object()
        .and_then(|o| o.iter().next())
        .unwrap_or_else(|| panic!("not DynamoDB JSON: {value}"));
    let text = || inner.as_str().unwrap_or_else(|| panic!("{kind}: {inner}")).to_owned();
    match kind.as_str() {
        "S" => AttributeValue::S(text()),
        "N" => AttributeValue::N(text()),
        "B" => AttributeValue::B(aws_smithy_types::base64::decode(text()).expect("base64").into()),
        "SS" | "NS" | "BS" => {
            let members = inner.as_array().unwrap_or_else(|| panic!("{kind}: {inner}"));
            let texts = members
                .iter()
                .map(|m| m.as_str().unwrap_or_else(|| panic!("{kind}: {m}")).to_owned());
            match kind.as_str() {
                "SS" => AttributeValue::Ss(texts.collect()),
                "NS" => AttributeValue::Ns(texts.collect()),
                _ => AttributeValue::Bs(
                    texts
                        .map(|t| aws_smithy_types::base64::decode(t).expect("base64").into())
                        .collect(),
                ),
            }
        }
        "BOOL" => AttributeValue::Bool(inner.as_bool().expect("BOOL")),
        "NULL" => AttributeValue::Null(true),
        "L" => AttributeValue::L(inner.as_array().expect("L").iter().map(to_sdk).collect()),
        "M" => AttributeValue::M(sdk_item(inner)),
        other => panic!("unexpected type {other} in {value}"),
    }
}

/// A DynamoDB JSON item to an SDK item.
pub(crate) fn sdk_item(value: &Value) -> HashMap<String, AttributeValue> {
    value
        .as_object()
        .expect("an item is an object")
        .iter()
        .map(|(k, v)| (k.clone(), to_sdk(v)))
        .collect()
}

/// A config for `table` verified or written in `region`: `ssn` encrypted, `Zip` signed, `note` allowed unsigned,
/// plus `extra_actions` (lines of `name = "ACTION"`).
fn config(region: &str, endpoint: &str, table: &str, key_arn: &str, extra_actions: &str) -> String {
    format!(
        r#"[aws]
region = "{region}"
regions = ["{PRIMARY_REGION}", "{REPLICA_REGION}"]
endpoint_url = "{endpoint}"

[[tables]]
name = "{table}"
partition_key = "pk"
allowed_unsigned_attributes = ["note"]

[tables.attribute_actions]
pk = "SIGN_ONLY"
ssn = "ENCRYPT_AND_SIGN"
Zip = "SIGN_ONLY"
note = "DO_NOTHING"
{extra_actions}

[tables.keyring]
kind = "kms-mrk"
key_arn = "{key_arn}"
"#
    )
}

/// A plaintext customer item.
fn customer(id: &str, n: usize) -> Value {
    json!({
        "pk": {"S": id},
        "ssn": {"S": format!("123-45-{n:04}")},
        "Zip": {"N": "2000"},
        "note": {"S": "vip"},
    })
}

/// Encrypts `items` with `ddbguard item encrypt` (JSON lines when there are several) and returns them encrypted.
fn encrypt_all(config: &str, table: &str, items: &[Value]) -> Vec<Value> {
    let input: String = items.iter().map(|i| format!("{i}\n")).collect();
    let run = ddbguard(&["item", "encrypt", "--config", config, "--table", table], &input);
    assert_eq!(
        run.code,
        0,
        "{}\n{}",
        run.stderr,
        &run.stdout[..run.stdout.len().min(2000)]
    );
    if items.len() == 1 {
        return vec![run.json()];
    }
    let encrypted: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| {
            let line: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
            assert_eq!(line["ok"], true, "{line}");
            line["item"].clone()
        })
        .collect();
    assert_eq!(encrypted.len(), items.len(), "{}", run.stderr);
    encrypted
}

/// Puts one item.
async fn put(ddb: &aws_sdk_dynamodb::Client, table: &str, item: &Value) -> anyhow::Result<()> {
    ddb.put_item()
        .table_name(table)
        .set_item(Some(sdk_item(item)))
        .send()
        .await?;
    Ok(())
}

/// Waits until `count` items are in `table` in `region` (Scan, `Select::Count`).
async fn wait_for_count(
    env: &LocalAws,
    region: &str,
    table: &str,
    count: i32,
    timeout: Duration,
) -> anyhow::Result<()> {
    let ddb = env.dynamodb(region).await;
    let deadline = Instant::now() + timeout;
    loop {
        let mut seen = 0;
        let mut start = None;
        loop {
            let out = ddb
                .scan()
                .table_name(table)
                .select(aws_sdk_dynamodb::types::Select::Count)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await?;
            seen += out.count();
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        if seen >= count {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{table} in {region} has {seen} of {count} items after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One test's global table, replicated MRK and configs: `primary` writes in us-east-1 under the primary key,
/// `replica` writes and verifies in ap-southeast-2 under the local replica's ARN.
struct Setup {
    env: &'static LocalAws,
    mrk: Mrk,
    table: String,
    dir: TempDir,
    primary: String,
    replica: String,
}

async fn setup(test: &str) -> anyhow::Result<Setup> {
    let env = LocalAws::shared();
    let mrk = env.create_replicated_mrk(&unique_name("verify", test)).await?;
    let table = unique_name("verify", test);
    env.create_global_table(&table).await?;
    let dir = TempDir::new(&format!("verify-{test}"));
    let primary = dir.write(
        "us-east-1.toml",
        &config(PRIMARY_REGION, env.endpoint(), &table, &mrk.primary_arn, ""),
    );
    let replica = dir.write(
        "ap-southeast-2.toml",
        &config(REPLICA_REGION, env.endpoint(), &table, &mrk.arn_in(REPLICA_REGION), ""),
    );
    Ok(Setup {
        env,
        mrk,
        table,
        dir,
        primary,
        replica,
    })
}

impl Setup {
    /// Runs `ddbguard verify --until-caught-up --from trim-horizon` in ap-southeast-2; returns the run and summary.
    fn verify(&self) -> (Run, Value) {
        let run = verify_until_caught_up(&self.replica, &self.table);
        let summary = run.json();
        assert_eq!(summary["table"], self.table.as_str(), "{summary:#}");
        assert_eq!(summary["region"], REPLICA_REGION, "{summary:#}");
        assert_eq!(summary["caught_up"], true, "{summary:#}");
        assert_eq!(summary["gaps"].as_array().map(Vec::len), Some(0), "{summary:#}");
        (run, summary)
    }
}

/// The summary's counts by verdict.
fn by_verdict(summary: &Value) -> HashMap<String, u64> {
    summary["by_verdict"]
        .as_object()
        .unwrap_or_else(|| panic!("no by_verdict: {summary:#}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("a count")))
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[tokio::test]
async fn items_written_correctly_in_either_region_are_ok_and_counted_by_origin() -> anyhow::Result<()> {
    let s = setup("either-region").await?;
    let east: Vec<Value> = (0..2).map(|n| customer(&format!("east-{n}"), n)).collect();
    let south: Vec<Value> = (0..3).map(|n| customer(&format!("south-{n}"), n)).collect();
    let east = encrypt_all(&s.primary, &s.table, &east);
    let south = encrypt_all(&s.replica, &s.table, &south);
    let east_ddb = s.env.dynamodb(PRIMARY_REGION).await;
    let south_ddb = s.env.dynamodb(REPLICA_REGION).await;
    for item in &east {
        put(&east_ddb, &s.table, item).await?;
    }
    for item in &south {
        put(&south_ddb, &s.table, item).await?;
    }
    let east_ids: Vec<String> = (0..east.len()).map(|n| format!("east-{n}")).collect();
    wait_replicated(
        &south_ddb,
        &s.table,
        east_ids.iter().map(String::as_str),
        Duration::from_secs(10),
    )
    .await?;

    let (run, summary) = s.verify();
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(summary["records"], 5, "{summary:#}");
    assert_eq!(by_verdict(&summary), counts(&[("ok", 5)]), "{summary:#}");
    assert_eq!(summary["by_origin"][PRIMARY_REGION]["ok"], 2, "{summary:#}");
    assert_eq!(summary["by_origin"][REPLICA_REGION]["ok"], 3, "{summary:#}");
    assert_eq!(summary["passed"], true, "{summary:#}");

    // The same run with nowhere to write its summary (a full disk): it verified, then failed — exit 4, not the
    // startup error's 2 nor a verdict's 1.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full")?;
    let run = verify_until_caught_up_into(&s.replica, &s.table, full.into());
    assert_eq!(run.code, 4, "{run:#?}");
    assert!(
        run.stderr.contains("failed after startup") && run.stderr.contains("cannot write the summary"),
        "{run:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn tampered_and_misconfigured_items_get_their_failing_verdicts() -> anyhow::Result<()> {
    let s = setup("bad-records").await?;
    let env = s.env;
    let ddb = env.dynamodb(REPLICA_REGION).await;

    // A writer configured with a single-Region key (kind kms-mrk accepts any key ARN).
    let single = env
        .kms(REPLICA_REGION)
        .await
        .create_key()
        .description(unique_name("verify", "single-region"))
        .send()
        .await?;
    let single_arn = single
        .key_metadata()
        .and_then(|m| m.arn())
        .expect("CreateKey returned an ARN")
        .to_owned();
    assert!(!single_arn.contains("mrk-"), "{single_arn}");
    let single_config = s.dir.write(
        "single-region.toml",
        &config(REPLICA_REGION, env.endpoint(), &s.table, &single_arn, ""),
    );
    // A writer whose policy signs an attribute the verifier's policy does not know.
    let extra_config = s.dir.write(
        "extra.toml",
        &config(
            REPLICA_REGION,
            env.endpoint(),
            &s.table,
            &s.mrk.arn_in(REPLICA_REGION),
            "extra = \"SIGN_ONLY\"",
        ),
    );

    let [good, flipped, signed, swapped]: [Value; 4] = encrypt_all(
        &s.replica,
        &s.table,
        &[
            customer("good", 0),
            customer("flipped", 1),
            customer("signed", 2),
            customer("swapped", 3),
        ],
    )
    .try_into()
    .expect("four items");

    // A flipped ciphertext bit: one base64 character in the middle of the encrypted value.
    let mut flipped = flipped;
    let text = flipped["ssn"]["B"].as_str().expect("ssn is B").to_owned();
    let mut chars: Vec<char> = text.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    flipped["ssn"]["B"] = json!(chars.into_iter().collect::<String>());
    // A changed SIGN_ONLY attribute.
    let mut signed = signed;
    signed["Zip"] = json!({"N": "2001"});
    // An encrypted value moved from another item under the same attribute name.
    let mut swapped = swapped;
    swapped["ssn"] = good["ssn"].clone();
    assert_ne!(swapped["ssn"], signed["ssn"]);

    let single_item = encrypt_all(&single_config, &s.table, &[customer("single-region", 4)]).remove(0);
    let mut extra_plain = customer("extra", 5);
    extra_plain["extra"] = json!({"S": "signed but not in the policy"});
    let extra_item = encrypt_all(&extra_config, &s.table, &[extra_plain]).remove(0);

    for item in [&good, &flipped, &signed, &swapped, &single_item, &extra_item] {
        put(&ddb, &s.table, item).await?;
    }

    let (run, summary) = s.verify();
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(summary["records"], 6, "{summary:#}");
    assert_eq!(
        by_verdict(&summary),
        counts(&[
            ("ok", 1),
            ("key_not_mrk", 1),
            ("integrity_failed", 3),
            ("policy_violation", 1),
        ]),
        "{summary:#}"
    );
    assert_eq!(summary["passed"], false, "{summary:#}");
    // Every failing record is named in an alert; no plaintext value is ever printed.
    for id in ["flipped", "signed", "swapped", "single-region", "extra"] {
        assert!(run.stderr.contains(id), "no alert names {id}: {}", run.stderr);
    }
    for n in 0..6 {
        let ssn = format!("123-45-{n:04}");
        assert!(!run.stdout.contains(&ssn) && !run.stderr.contains(&ssn), "{run:#?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_disabled_local_key_replica_makes_records_key_unavailable() -> anyhow::Result<()> {
    let s = setup("disabled-replica").await?;
    let items = encrypt_all(&s.replica, &s.table, &[customer("a", 0), customer("b", 1)]);
    let ddb = s.env.dynamodb(REPLICA_REGION).await;
    for item in &items {
        put(&ddb, &s.table, item).await?;
    }
    s.env
        .kms(REPLICA_REGION)
        .await
        .disable_key()
        .key_id(s.mrk.arn_in(REPLICA_REGION))
        .send()
        .await?;

    let (run, summary) = s.verify();
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(summary["records"], 2, "{summary:#}");
    assert_eq!(by_verdict(&summary), counts(&[("key_unavailable", 2)]), "{summary:#}");
    assert_eq!(summary["passed"], false, "{summary:#}");
    Ok(())
}

#[tokio::test]
async fn a_clean_run_of_2000_records_from_both_regions_has_no_failing_verdict() -> anyhow::Result<()> {
    const PER_REGION: usize = 1_000;
    let s = setup("clean-2000").await?;
    let east: Vec<Value> = (0..PER_REGION).map(|n| customer(&format!("east-{n}"), n)).collect();
    let south: Vec<Value> = (0..PER_REGION).map(|n| customer(&format!("south-{n}"), n)).collect();
    let (primary, replica, table) = (s.primary.clone(), s.replica.clone(), s.table.clone());
    let east = tokio::task::spawn_blocking(move || encrypt_all(&primary, &table, &east));
    let table = s.table.clone();
    let south = tokio::task::spawn_blocking(move || encrypt_all(&replica, &table, &south));
    let (east, south) = (east.await?, south.await?);
    batch_write(
        &s.env.dynamodb(PRIMARY_REGION).await,
        &s.table,
        east.iter().map(sdk_item).collect(),
    )
    .await?;
    batch_write(
        &s.env.dynamodb(REPLICA_REGION).await,
        &s.table,
        south.iter().map(sdk_item).collect(),
    )
    .await?;
    wait_for_count(
        s.env,
        REPLICA_REGION,
        &s.table,
        2 * PER_REGION as i32,
        Duration::from_secs(30),
    )
    .await?;

    let (run, summary) = s.verify();
    let verdicts = by_verdict(&summary);
    let failing: Vec<_> = verdicts
        .iter()
        .filter(|(v, _)| !PASSING.contains(&v.as_str()))
        .collect();
    assert!(failing.is_empty(), "{summary:#}");
    let total: u64 = verdicts.values().sum();
    assert!(total >= 2 * PER_REGION as u64, "{summary:#}");
    assert_eq!(summary["records"], total, "{summary:#}");
    assert_eq!(summary["by_origin"][PRIMARY_REGION]["ok"], PER_REGION, "{summary:#}");
    assert_eq!(summary["by_origin"][REPLICA_REGION]["ok"], PER_REGION, "{summary:#}");
    assert_eq!(summary["passed"], true, "{summary:#}");
    assert_eq!(run.code, 0, "{}", run.stderr);
    Ok(())
}
