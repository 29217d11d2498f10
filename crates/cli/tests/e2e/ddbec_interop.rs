//! Legacy items written by the official Python DynamoDB Encryption Client (`dynamodb-encryption-sdk`, through
//! `scripts/local-aws.d/ddbec_interop.py`) with its direct KMS provider in us-east-1, judged by the `ddbguard`
//! binary in ap-southeast-2 with the local replica of the MRK: items under the MRK are `ok`, an item under a
//! single-Region key is `key_not_mrk`, an item with one flipped bit in an encrypted attribute is
//! `integrity_failed`, and with the replica disabled every item is `key_unavailable`. `ddbguard item decrypt`
//! prints a Python-written item's plaintext, and a long-running verifier labels the records `format="ddbec"`.
//! The client's KMS requests (key, region, encryption context) are asserted as docs/LEGACY.md describes them.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use aws_sdk_dynamodb::types::{AttributeValue, KeyType, ScalarAttributeType};
use ddbguard_e2e::{LocalAws, Mrk, PRIMARY_REGION, REPLICA_REGION, unique_name, wait_for_item};
use serde_json::{Value, json};

use crate::canary::{Verifier, wait_until};
use crate::cli::{Run, TempDir, ddbguard, ddbguard_into};
use crate::esdk_interop::python_script;
use crate::verify::sdk_item;

/// The Python client's attribute actions: everything not listed is encrypted (its default).
fn actions() -> Value {
    json!({
        "default": "ENCRYPT_AND_SIGN",
        "attributes": {"zip": "SIGN_ONLY", "flags": "SIGN_ONLY", "note": "DO_NOTHING"},
    })
}

/// The same actions in ddbguard's config (the key attributes are signed by the client whatever it is told).
const TABLE_ACTIONS: &str = r#"pk = "SIGN_ONLY"
sk = "SIGN_ONLY"
ssn = "ENCRYPT_AND_SIGN"
blob = "ENCRYPT_AND_SIGN"
tags = "ENCRYPT_AND_SIGN"
scores = "ENCRYPT_AND_SIGN"
profile = "ENCRYPT_AND_SIGN"
zip = "SIGN_ONLY"
flags = "SIGN_ONLY"
note = "DO_NOTHING"
"#;

/// A plaintext item with every attribute type: S, N, B, SS, NS, BS, L, M, BOOL and NULL (set members in byte
/// order, as the clients sort them, and numbers normalized, so a decrypted item compares equal).
fn plain(pk: &str, n: usize) -> Value {
    json!({
        "pk": {"S": pk},
        "sk": {"S": format!("v{n}")},
        "ssn": {"S": format!("123-45-{n:04}")},
        "blob": {"B": "AAECAwQF/w=="},
        "tags": {"SS": ["blue", "green"]},
        "scores": {"NS": ["-1.5", "100", "7"]},
        "profile": {"M": {"name": {"S": "Ana"}, "age": {"N": "41"}, "pets": {"L": [{"S": "cat"}, {"NULL": true}]}}},
        "zip": {"N": "2000"},
        "flags": {"M": {"vip": {"BOOL": true}, "keys": {"BS": ["AQ==", "Ag=="]}}},
        "note": {"S": "unsigned"},
    })
}

fn key_of(item: &Value) -> Value {
    json!({"pk": item["pk"], "sk": item["sk"]})
}

/// Runs ddbec_interop.py on `ops`; returns one result per op.
fn python(env: &LocalAws, ops: Vec<Value>) -> Result<Vec<Value>> {
    let count = ops.len();
    let answer = python_script("ddbec_interop.py", &json!({ "endpoint": env.endpoint(), "ops": ops }))?;
    let results = answer["results"].as_array().context("results")?.clone();
    ensure!(
        results.len() == count,
        "{count} ops, {} results: {answer}",
        results.len()
    );
    Ok(results)
}

fn op(kind: &str, region: &str, table: &str, key_id: &str, body: (&str, Value)) -> Value {
    let mut op = json!({"op": kind, "region": region, "table": table, "key_id": key_id, "actions": actions()});
    op[body.0] = body.1;
    op
}

/// An SDK attribute value as DynamoDB JSON (binary values in base64).
fn to_json(value: &AttributeValue) -> Value {
    let b64 = |b: &aws_sdk_dynamodb::primitives::Blob| json!(aws_smithy_types::base64::encode(b.as_ref()));
    match value {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::B(b) => json!({"B": b64(b)}),
        AttributeValue::Ss(v) => json!({"SS": v}),
        AttributeValue::Ns(v) => json!({"NS": v}),
        AttributeValue::Bs(v) => json!({"BS": v.iter().map(b64).collect::<Vec<_>>()}),
        AttributeValue::L(v) => json!({"L": v.iter().map(to_json).collect::<Vec<_>>()}),
        AttributeValue::M(m) => json!({"M": item_json(m)}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::Null(_) => json!({"NULL": true}),
        other => panic!("unexpected attribute value {other:?}"),
    }
}

fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(item.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
}

/// Waits until `item`'s key is readable in ap-southeast-2.
async fn wait_in_replica(env: &LocalAws, table: &str, item: &Value) -> Result<HashMap<String, AttributeValue>> {
    let ddb = env.dynamodb(REPLICA_REGION).await;
    wait_for_item(&ddb, table, sdk_item(&key_of(item)), Duration::from_secs(10))
        .await?
        .with_context(|| format!("{} did not reach {REPLICA_REGION}", key_of(item)))
}

/// ddbguard's config in ap-southeast-2: the table's keyring under the local replica of the MRK and a
/// `[tables.legacy]` section with the direct KMS provider (its key defaults to the keyring's).
fn config(env: &LocalAws, table: &str, mrk: &Mrk) -> String {
    format!(
        r#"[aws]
region = "{REPLICA_REGION}"
regions = ["{PRIMARY_REGION}", "{REPLICA_REGION}"]
endpoint_url = "{endpoint}"

[[tables]]
name = "{table}"
partition_key = "pk"
sort_key = "sk"
allowed_unsigned_attributes = ["note"]

[tables.attribute_actions]
{TABLE_ACTIONS}
[tables.keyring]
kind = "kms-mrk"
key_arn = "{replica}"

[tables.legacy]
allowed = true
provider = "aws-kms"
"#,
        endpoint = env.endpoint(),
        replica = mrk.arn_in(REPLICA_REGION),
    )
}

struct Setup {
    env: &'static LocalAws,
    mrk: Mrk,
    table: String,
    dir: TempDir,
    config: String,
}

async fn setup(test: &str) -> Result<Setup> {
    let env = LocalAws::shared();
    let mrk = env.create_replicated_mrk(&unique_name("ddbec", test)).await?;
    let table = unique_name("ddbec", test);
    env.create_global_table_keyed(&table, &[("pk", KeyType::Hash), ("sk", KeyType::Range)])
        .await?;
    let dir = TempDir::new(&format!("ddbec-{test}"));
    let config = dir.write("ap-southeast-2.toml", &config(env, &table, &mrk));
    Ok(Setup {
        env,
        mrk,
        table,
        dir,
        config,
    })
}

impl Setup {
    /// `ddbguard verify --until-caught-up` in ap-southeast-2 with JSON logs: the run, its summary, and its alert
    /// events (`record_verdict`).
    fn verify(&self) -> (Run, Value, Vec<Value>) {
        self.verify_with(&self.config)
    }

    /// [`Setup::verify`] with another config file.
    fn verify_with(&self, config: &str) -> (Run, Value, Vec<Value>) {
        let run = ddbguard_into(
            &[
                "verify",
                "--config",
                config,
                "--table",
                &self.table,
                "--until-caught-up",
                "--from",
                "trim-horizon",
                "--metrics-addr",
                "127.0.0.1:0",
            ],
            "",
            &[("DDBGUARD_LOG_FORMAT", "json")],
            Stdio::piped(),
        );
        let summary = run.json();
        assert_eq!(summary["caught_up"], true, "{run:#?}");
        assert_eq!(summary["gaps"].as_array().map(Vec::len), Some(0), "{summary:#}");
        let alerts = run
            .stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == "record_verdict")
            .collect();
        (run, summary, alerts)
    }
}

/// The expected KMS encryption context of an item (see docs/LEGACY.md, "The KMS region and key").
fn expected_context(table: &str, item: &Value) -> Value {
    json!({
        "*amzn-ddb-env-alg*": "AES/256",
        "*amzn-ddb-sig-alg*": "HmacSHA256/256",
        "*aws-kms-table*": table,
        "pk": item["pk"]["S"],
        "sk": item["sk"]["S"],
    })
}

fn assert_ok(result: &Value) {
    assert_eq!(result["ok"], true, "python: {result:#}");
}

#[tokio::test]
async fn items_the_python_client_writes_in_us_east_1_are_judged_in_ap_southeast_2() -> Result<()> {
    let s = setup("python-writes").await?;
    let env = s.env;
    let single = env
        .kms(PRIMARY_REGION)
        .await
        .create_key()
        .description(unique_name("ddbec", "single-region"))
        .send()
        .await?;
    let single_arn = single.key_metadata().and_then(|m| m.arn()).context("ARN")?.to_owned();

    let good: Vec<Value> = (0..3).map(|n| plain("mrk", n)).collect();
    let single_item = plain("single-region", 3);
    let tampered_plain = plain("tampered", 4);
    let mut ops: Vec<Value> = good
        .iter()
        .map(|i| op("put", PRIMARY_REGION, &s.table, &s.mrk.primary_arn, ("item", i.clone())))
        .collect();
    ops.push(op(
        "put",
        PRIMARY_REGION,
        &s.table,
        &single_arn,
        ("item", single_item.clone()),
    ));
    ops.push(op(
        "encrypt",
        PRIMARY_REGION,
        &s.table,
        &s.mrk.primary_arn,
        ("item", tampered_plain.clone()),
    ));
    let results = python(env, ops)?;
    assert_eq!(results.len(), 5);
    for (r, item) in results.iter().zip(good.iter().chain([&single_item, &tampered_plain])) {
        assert_ok(r);
        // One GenerateDataKey per item, in the region of the configured key, naming it, with the item's context.
        let calls = r["kms_calls"].as_array().context("kms_calls")?;
        assert_eq!(calls.len(), 1, "{r:#}");
        assert_eq!(calls[0]["operation"], "GenerateDataKey", "{r:#}");
        assert_eq!(calls[0]["region"], PRIMARY_REGION, "{r:#}");
        assert_eq!(calls[0]["params"]["NumberOfBytes"], 32, "{r:#}");
        assert_eq!(
            calls[0]["params"]["EncryptionContext"],
            expected_context(&s.table, item),
            "{r:#}"
        );
    }
    assert_eq!(
        results[0]["kms_calls"][0]["params"]["KeyId"],
        s.mrk.primary_arn.as_str()
    );
    assert_eq!(results[3]["kms_calls"][0]["params"]["KeyId"], single_arn.as_str());

    // The tampered item: one bit flipped in the middle of the encrypted `ssn`, written with the SDK.
    let mut tampered = results[4]["item"].clone();
    assert!(tampered.get("*amzn-ddb-map-desc*").is_some(), "{tampered:#}");
    let mut ssn = aws_smithy_types::base64::decode(tampered["ssn"]["B"].as_str().context("ssn is B")?)?;
    let middle = ssn.len() / 2;
    ssn[middle] ^= 0x10;
    tampered["ssn"] = json!({"B": aws_smithy_types::base64::encode(&ssn)});
    env.dynamodb(PRIMARY_REGION)
        .await
        .put_item()
        .table_name(&s.table)
        .set_item(Some(sdk_item(&tampered)))
        .send()
        .await?;

    let mut stored = Vec::new();
    for item in good.iter().chain([&single_item, &tampered_plain]) {
        stored.push(wait_in_replica(env, &s.table, item).await?);
    }

    // The Python client reads an MRK item back in ap-southeast-2 with the replica's ARN: its Decrypt goes to the
    // region of the configured ARN and names no key (KMS finds it from the blob); the tampered one fails.
    let replica_arn = s.mrk.arn_in(REPLICA_REGION);
    let read = python(
        env,
        vec![
            op("get", REPLICA_REGION, &s.table, &replica_arn, ("key", key_of(&good[0]))),
            op(
                "get",
                REPLICA_REGION,
                &s.table,
                &replica_arn,
                ("key", key_of(&tampered_plain)),
            ),
            op(
                "get",
                REPLICA_REGION,
                &s.table,
                &s.mrk.primary_arn,
                ("key", key_of(&good[0])),
            ),
        ],
    )?;
    assert_ok(&read[0]);
    assert_eq!(read[0]["item"], good[0], "{:#}", read[0]);
    let calls = read[0]["kms_calls"].as_array().context("kms_calls")?;
    assert_eq!(calls.len(), 1, "{:#}", read[0]);
    assert_eq!(calls[0]["operation"], "Decrypt");
    assert_eq!(calls[0]["region"], REPLICA_REGION);
    assert!(calls[0]["params"].get("KeyId").is_none(), "{:#}", read[0]);
    assert_eq!(
        calls[0]["params"]["EncryptionContext"],
        expected_context(&s.table, &good[0])
    );
    assert_eq!(read[1]["ok"], false, "python accepted the tampered item: {:#}", read[1]);
    // Configured with the primary's ARN, the same read in ap-southeast-2 decrypts across regions, in us-east-1.
    assert_ok(&read[2]);
    assert_eq!(read[2]["item"], good[0], "{:#}", read[2]);
    assert_eq!(read[2]["kms_calls"][0]["region"], PRIMARY_REGION, "{:#}", read[2]);

    let (run, summary, alerts) = s.verify();
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(summary["records"], 5, "{summary:#}");
    assert_eq!(
        summary["by_verdict"],
        json!({"ok": 3, "key_not_mrk": 1, "integrity_failed": 1}),
        "{summary:#}"
    );
    // A legacy item names neither its key nor a region (the KMS blob is opaque), so its origin is not known.
    assert_eq!(summary["by_origin"]["unknown"]["ok"], 3, "{summary:#}");
    // Each failing record has one alert naming it, its verdict and the legacy format; no plaintext is printed.
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    for (id, verdict) in [("single-region", "key_not_mrk"), ("tampered", "integrity_failed")] {
        let alert = alerts
            .iter()
            .find(|a| a["keys"].as_str().is_some_and(|k| k.contains(id)))
            .unwrap_or_else(|| panic!("no alert names {id}: {alerts:#?}"));
        assert_eq!(alert["verdict"], verdict, "{alert:#}");
        assert_eq!(alert["format"], "ddbec", "{alert:#}");
    }
    for n in 0..5 {
        let ssn = format!("123-45-{n:04}");
        assert!(!run.stdout.contains(&ssn) && !run.stderr.contains(&ssn), "{run:#?}");
    }

    // A long-running verifier from the same stream counts them in `ddbguard_records_total` with format="ddbec".
    let leases = unique_name("leases", "ddbec");
    let long_running = s.dir.write(
        "long-running.toml",
        &format!(
            "{}\n[verify]\nlease_table = \"{leases}\"\nquarantine = false\n",
            config(env, &s.table, &s.mrk)
        ),
    );
    let verifier = Verifier::start(&long_running, &s.table, s.dir.write("verify.log", ""));
    let count = |verdict| verifier.value("ddbguard_records_total", &[("format", "ddbec"), ("verdict", verdict)]);
    wait_until("5 legacy records counted", Duration::from_secs(30), || {
        count("ok") == Some(3.0) && count("key_not_mrk") == Some(1.0) && count("integrity_failed") == Some(1.0)
    });
    assert_eq!(verifier.value("ddbguard_records_total", &[("format", "dbesdk")]), None);
    let (_, code, log) = verifier.stop();
    assert_eq!(code, Some(0), "{log}");

    // `item decrypt` in ap-southeast-2 prints the original plaintext of a Python-written item as stored there.
    let input = item_json(&stored[1]);
    assert!(input.get("*amzn-ddb-map-sig*").is_some(), "{input:#}");
    let run = ddbguard(
        &["item", "decrypt", "--config", &s.config, "--table", &s.table],
        &input.to_string(),
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json(), good[1], "{run:#?}");
    drop(s.dir);
    Ok(())
}

#[tokio::test]
async fn a_disabled_replica_makes_python_items_key_unavailable() -> Result<()> {
    let s = setup("disabled-replica").await?;
    let items = [plain("a", 0), plain("b", 1)];
    let ops = items
        .iter()
        .map(|i| op("put", PRIMARY_REGION, &s.table, &s.mrk.primary_arn, ("item", i.clone())))
        .collect();
    for r in python(s.env, ops)? {
        assert_ok(&r);
    }
    for item in &items {
        wait_in_replica(s.env, &s.table, item).await?;
    }
    s.env
        .kms(REPLICA_REGION)
        .await
        .disable_key()
        .key_id(s.mrk.arn_in(REPLICA_REGION))
        .send()
        .await?;
    let (run, summary, alerts) = s.verify();
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(summary["by_verdict"], json!({"key_unavailable": 2}), "{summary:#}");
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    for alert in &alerts {
        assert_eq!(alert["format"], "ddbec", "{alert:#}");
        assert_eq!(alert["reason"], "disabled", "{alert:#}");
    }
    Ok(())
}

/// The most-recent provider: the Python client writes items under metastore versions it creates in us-east-1
/// (version 0 on first use, version 1 after a rotation); the metastore is a global table, and ap-southeast-2's
/// verifier reads each version an item names from its local replica of the metastore, decrypting the record with
/// the local replica of the MRK. An item whose material description names a version the metastore lacks is
/// `key_unavailable`.
#[tokio::test]
async fn items_under_the_python_clients_metastore_versions_are_judged_in_ap_southeast_2() -> Result<()> {
    let s = setup("most-recent").await?;
    let env = s.env;
    let meta = unique_name("ddbec", "metastore");
    env.create_global_table_typed(
        &meta,
        &[
            ("N", KeyType::Hash, ScalarAttributeType::S),
            ("V", KeyType::Range, ScalarAttributeType::N),
        ],
    )
    .await?;
    let material = "orders";
    let store = json!({"table": meta, "material_name": material});
    let put = |item: &Value| {
        let mut op = op(
            "put",
            PRIMARY_REGION,
            &s.table,
            &s.mrk.primary_arn,
            ("item", item.clone()),
        );
        op["metastore"] = store.clone();
        op
    };
    let (v0, v1): (Vec<Value>, Vec<Value>) = (
        (0..2).map(|n| plain("v0", n)).collect(),
        (2..4).map(|n| plain("v1", n)).collect(),
    );
    let mut ops: Vec<Value> = v0.iter().map(put).collect();
    let mut rotate = json!({"op": "rotate", "region": PRIMARY_REGION, "key_id": s.mrk.primary_arn});
    rotate["metastore"] = store.clone();
    ops.push(rotate);
    ops.extend(v1.iter().map(put));
    let mut encrypt = put(&plain("missing-version", 4));
    encrypt["op"] = json!("encrypt");
    ops.push(encrypt);
    let results = python(env, ops)?;
    for r in &results {
        assert_ok(r);
    }
    assert_eq!(results[2]["version"], 1, "{:#}", results[2]);

    // The items name their versions in the material description (`amzn-ddb-meta-id`, not signed apart from the
    // description); one is rewritten to name version 9, which no writer created.
    let desc = |item: &Value| -> Result<Vec<u8>> {
        Ok(aws_smithy_types::base64::decode(
            item["*amzn-ddb-map-desc*"]["B"].as_str().context("map-desc is B")?,
        )?)
    };
    let mut missing = results[5]["item"].clone();
    let mut bytes = desc(&missing)?;
    let named = format!("{material}#1");
    let at = bytes
        .windows(named.len())
        .position(|w| w == named.as_bytes())
        .with_context(|| format!("no {named} in the material description of {missing:#}"))?;
    bytes[at + named.len() - 1] = b'9';
    missing["*amzn-ddb-map-desc*"] = json!({"B": aws_smithy_types::base64::encode(&bytes)});
    env.dynamodb(PRIMARY_REGION)
        .await
        .put_item()
        .table_name(&s.table)
        .set_item(Some(sdk_item(&missing)))
        .send()
        .await?;

    let mut stored = Vec::new();
    for item in v0.iter().chain(&v1).chain([&plain("missing-version", 4)]) {
        stored.push(wait_in_replica(env, &s.table, item).await?);
    }
    let first = item_json(&stored[0]);
    let named = desc(&first)?;
    assert!(
        named
            .windows(material.len() + 2)
            .any(|w| w == format!("{material}#0").as_bytes()),
        "{first:#}"
    );
    // Both versions' records have replicated to ap-southeast-2's metastore.
    let replica = env.dynamodb(REPLICA_REGION).await;
    for version in ["0", "1"] {
        let key = sdk_item(&json!({"N": {"S": material}, "V": {"N": version}}));
        wait_for_item(&replica, &meta, key, Duration::from_secs(10))
            .await?
            .with_context(|| format!("version {version} did not reach {REPLICA_REGION}"))?;
    }

    let config = s.dir.write(
        "most-recent.toml",
        &config(env, &s.table, &s.mrk).replace(
            "provider = \"aws-kms\"\n",
            &format!("provider = \"most-recent\"\nmetastore_table = \"{meta}\"\nmaterial_name = \"{material}\"\n"),
        ),
    );
    let (run, summary, alerts) = s.verify_with(&config);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(summary["records"], 5, "{summary:#}");
    assert_eq!(
        summary["by_verdict"],
        json!({"ok": 4, "key_unavailable": 1}),
        "{summary:#}"
    );
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert!(
        alerts[0]["keys"]
            .as_str()
            .is_some_and(|k| k.contains("missing-version")),
        "{alerts:#?}"
    );
    assert_eq!(alerts[0]["format"], "ddbec", "{:#}", alerts[0]);
    for n in 0..5 {
        let ssn = format!("123-45-{n:04}");
        assert!(!run.stdout.contains(&ssn) && !run.stderr.contains(&ssn), "{run:#?}");
    }

    // `item decrypt` in ap-southeast-2 reads a version-1 item's version from the metastore too.
    let run = ddbguard(
        &["item", "decrypt", "--config", &config, "--table", &s.table],
        &item_json(&stored[2]).to_string(),
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json(), v1[0], "{run:#?}");

    // A mistyped metastore table is a startup error naming it, not a key_unavailable verdict per item.
    let mistyped = s.dir.write(
        "mistyped.toml",
        &std::fs::read_to_string(&config)?.replace(&meta, "no-such-metastore"),
    );
    let run = ddbguard(
        &[
            "verify",
            "--config",
            &mistyped,
            "--table",
            &s.table,
            "--until-caught-up",
        ],
        "",
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("\"no-such-metastore\" not found in this region"),
        "{run:#?}"
    );
    Ok(())
}
