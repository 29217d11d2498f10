//! `ddbguard audit` end to end on a global table replicated between us-east-1 and ap-southeast-2: a clean table
//! passes in both regions and the replicas agree; an item deleted in one replica while its replication was held
//! back, and one whose ciphertext was altered in one replica only, make `--compare-region` fail naming both, and
//! the altered one is `integrity_failed` in that region's audit; a plaintext item fails with `plaintext`.
//!
//! Items are encrypted by `ddbguard item encrypt` and written with the SDK.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use ddbguard_e2e::{Knob, LocalAws, Mrk, PRIMARY_REGION, REPLICA_REGION, get_item, pk, unique_name, wait_replicated};
use serde_json::{Value, json};

use crate::cli::{Run, TempDir, ddbguard};
use crate::verify::sdk_item;

/// Replication arrives within this (the default lag is 200 ms).
const ARRIVE: Duration = Duration::from_secs(10);

/// A config for `table` audited in `region`: `ssn` encrypted, `Zip` signed.
fn config(region: &str, endpoint: &str, table: &str, key_arn: &str) -> String {
    format!(
        r#"[aws]
region = "{region}"
regions = ["{PRIMARY_REGION}", "{REPLICA_REGION}"]
endpoint_url = "{endpoint}"

[[tables]]
name = "{table}"
partition_key = "pk"
required_encrypted = ["ssn"]

[tables.attribute_actions]
pk = "SIGN_ONLY"
ssn = "ENCRYPT_AND_SIGN"
Zip = "SIGN_ONLY"

[tables.keyring]
kind = "kms-mrk"
key_arn = "{key_arn}"
"#
    )
}

fn customer(id: &str, n: usize) -> Value {
    json!({"pk": {"S": id}, "ssn": {"S": format!("123-45-{n:04}")}, "Zip": {"N": "2000"}})
}

/// One test's replicated MRK, global table with `ids` written encrypted in us-east-1 and replicated, and
/// configs for both regions.
struct Setup {
    env: &'static LocalAws,
    table: String,
    _dir: TempDir,
    primary: String,
    replica: String,
}

async fn setup(test: &str, ids: &[&str]) -> anyhow::Result<Setup> {
    let env = LocalAws::shared();
    let mrk: Mrk = env.create_replicated_mrk(&unique_name("audit", test)).await?;
    let table = unique_name("audit", test);
    env.create_global_table(&table).await?;
    let dir = TempDir::new(&format!("audit-{test}"));
    let primary = dir.write(
        "us-east-1.toml",
        &config(PRIMARY_REGION, env.endpoint(), &table, &mrk.primary_arn),
    );
    let replica = dir.write(
        "ap-southeast-2.toml",
        &config(REPLICA_REGION, env.endpoint(), &table, &mrk.arn_in(REPLICA_REGION)),
    );
    let input: String = ids
        .iter()
        .enumerate()
        .map(|(n, id)| format!("{}\n", customer(id, n)))
        .collect();
    let run = ddbguard(&["item", "encrypt", "--config", &primary, "--table", &table], &input);
    assert_eq!(run.code, 0, "{run:#?}");
    // One item comes back as one document, several as JSON lines of results.
    let items: Vec<Value> = if ids.len() == 1 {
        vec![run.json()]
    } else {
        run.stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).map(|line| line["item"].clone()))
            .collect::<Result<_, _>>()?
    };
    let ddb = env.dynamodb(PRIMARY_REGION).await;
    for item in &items {
        ddb.put_item()
            .table_name(&table)
            .set_item(Some(sdk_item(item)))
            .send()
            .await?;
    }
    wait_replicated(&env.dynamodb(REPLICA_REGION).await, &table, ids.iter().copied(), ARRIVE).await?;
    Ok(Setup {
        env,
        table,
        _dir: dir,
        primary,
        replica,
    })
}

impl Setup {
    /// `ddbguard audit` with `config` and `extra` flags; every item decrypted in full.
    fn audit(&self, config: &str, extra: &[&str]) -> (Run, Value) {
        let mut args = vec![
            "audit",
            "--config",
            config,
            "--table",
            &self.table,
            "--sample-rate",
            "1",
        ];
        args.extend_from_slice(extra);
        let run = ddbguard(&args, "");
        let report = run.json();
        assert_eq!(report["table"], self.table.as_str(), "{report:#}");
        assert_eq!(report["completion"], "finished", "{report:#}");
        (run, report)
    }
}

fn key(id: &str) -> Value {
    json!({"pk": {"S": id}})
}

#[tokio::test]
async fn a_replicated_encrypted_table_passes_in_both_regions_and_the_replicas_agree() -> anyhow::Result<()> {
    let ids: Vec<String> = (0..12).map(|n| format!("c-{n}")).collect();
    let s = setup("clean", &ids.iter().map(String::as_str).collect::<Vec<_>>()).await?;

    for (config, region) in [(&s.primary, PRIMARY_REGION), (&s.replica, REPLICA_REGION)] {
        let (run, report) = s.audit(config, &[]);
        assert_eq!(run.code, 0, "{run:#?}");
        assert_eq!(report["region"], region, "{report:#}");
        assert_eq!(report["items"], 12, "{report:#}");
        assert_eq!(report["by_verdict"], json!({"ok": 12}), "{report:#}");
        // Written in us-east-1, under its key: the origin is us-east-1 wherever the audit runs.
        assert_eq!(report["by_origin"][PRIMARY_REGION]["ok"], 12, "{report:#}");
        assert_eq!(report["passed"], true, "{report:#}");
        assert!(report.get("compare").is_none(), "{report:#}");
    }

    let (run, report) = s.audit(&s.primary, &["--compare-region", REPLICA_REGION]);
    assert_eq!(run.code, 0, "{run:#?}");
    let compare = &report["compare"];
    assert_eq!(compare["region"], REPLICA_REGION, "{report:#}");
    assert_eq!(compare["compared"], 12, "{report:#}");
    assert_eq!(compare["identical"], 12, "{report:#}");
    assert_eq!(compare["reverse_checked"], 12, "{report:#}");
    assert_eq!(
        compare[format!("missing_in_{REPLICA_REGION}")]["count"],
        0,
        "{report:#}"
    );
    assert_eq!(
        compare[format!("missing_in_{PRIMARY_REGION}")]["count"],
        0,
        "{report:#}"
    );
    assert_eq!(compare["different"]["count"], 0, "{report:#}");
    assert_eq!(report["passed"], true, "{report:#}");
    Ok(())
}

#[tokio::test]
async fn compare_names_an_item_deleted_in_one_replica_and_one_altered_in_the_other() -> anyhow::Result<()> {
    let s = setup("diverged", &["keep-0", "keep-1", "gone", "altered"]).await?;
    let env = s.env;
    let primary = env.dynamodb(PRIMARY_REGION).await;
    let replica = env.dynamodb(REPLICA_REGION).await;

    // Delete "gone" in us-east-1 while replication to ap-southeast-2 is paused, its replicated write dropped (the
    // environment drops writes as they are queued), then resume: ap-southeast-2 keeps the item.
    let east_to_south = Knob::table(&s.table).direction(PRIMARY_REGION, REPLICA_REGION);
    env.set_replication(&east_to_south.clone().paused(true).drop_next(1))
        .await?;
    primary
        .delete_item()
        .table_name(&s.table)
        .set_key(Some(pk("gone")))
        .send()
        .await?;
    env.set_replication(&east_to_south.paused(false)).await?;

    // Alter one ciphertext byte of "altered" in ap-southeast-2 only (its replicated write dropped).
    let south_to_east = Knob::table(&s.table).direction(REPLICA_REGION, PRIMARY_REGION);
    env.set_replication(&south_to_east.drop_next(1)).await?;
    let mut item = get_item(&replica, &s.table, pk("altered")).await?.expect("replicated");
    let Some(AttributeValue::B(blob)) = item.get("ssn") else {
        anyhow::bail!("ssn is not binary: {item:?}")
    };
    let mut bytes = blob.clone().into_inner();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    item.insert("ssn".into(), AttributeValue::B(bytes.into()));
    replica
        .put_item()
        .table_name(&s.table)
        .set_item(Some(item))
        .send()
        .await?;

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(get_item(&primary, &s.table, pk("gone")).await?.is_none());
    assert!(
        get_item(&replica, &s.table, pk("gone")).await?.is_some(),
        "the delete replicated"
    );
    let east = get_item(&primary, &s.table, pk("altered"))
        .await?
        .expect("altered in us-east-1");
    let south = get_item(&replica, &s.table, pk("altered"))
        .await?
        .expect("altered in ap-southeast-2");
    assert_ne!(east.get("ssn"), south.get("ssn"), "the altered item replicated");

    let (run, report) = s.audit(&s.primary, &["--compare-region", REPLICA_REGION]);
    assert_eq!(run.code, 1, "{run:#?}");
    let compare = &report["compare"];
    assert_eq!(
        compare[format!("missing_in_{PRIMARY_REGION}")],
        json!({"count": 1, "keys": [key("gone")]}),
        "{report:#}"
    );
    assert_eq!(
        compare[format!("missing_in_{REPLICA_REGION}")]["count"],
        0,
        "{report:#}"
    );
    assert_eq!(
        compare["different"],
        json!({"count": 1, "items": [{"key": key("altered"), "attributes": ["ssn"]}]}),
        "{report:#}"
    );
    // us-east-1's own items are all fine: only the comparison fails.
    assert_eq!(report["by_verdict"], json!({"ok": 3}), "{report:#}");
    assert_eq!(report["passed"], false, "{report:#}");
    assert!(
        !run.stdout.contains("123-45-") && !run.stderr.contains("123-45-"),
        "{run:#?}"
    );

    // Seen from ap-southeast-2, the altered ciphertext fails authentication.
    let (run, report) = s.audit(&s.replica, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(
        report["by_verdict"],
        json!({"ok": 3, "integrity_failed": 1}),
        "{report:#}"
    );
    assert_eq!(
        report["samples"]["integrity_failed"],
        json!([key("altered")]),
        "{report:#}"
    );
    assert!(
        run.stderr.contains("altered"),
        "no alert names the item: {}",
        run.stderr
    );
    Ok(())
}

#[tokio::test]
async fn a_plaintext_item_fails_the_audit() -> anyhow::Result<()> {
    let s = setup("plaintext", &["encrypted"]).await?;
    s.env
        .dynamodb(PRIMARY_REGION)
        .await
        .put_item()
        .table_name(&s.table)
        .set_item(Some(sdk_item(&customer("legacy-plain", 9))))
        .send()
        .await?;

    let (run, report) = s.audit(&s.primary, &[]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(report["by_verdict"], json!({"ok": 1, "plaintext": 1}), "{report:#}");
    assert_eq!(report["failures"], 1, "{report:#}");
    assert_eq!(
        report["by_reason"]["plaintext"],
        json!({"not_encrypted": 1}),
        "{report:#}"
    );
    assert_eq!(
        report["samples"]["plaintext"],
        json!([key("legacy-plain")]),
        "{report:#}"
    );
    assert_eq!(report["passed"], false, "{report:#}");
    Ok(())
}

#[tokio::test]
async fn a_table_missing_in_the_compare_region_is_a_startup_error() -> anyhow::Result<()> {
    let s = setup("no-replica", &["one"]).await?;
    let run = ddbguard(
        &[
            "audit",
            "--config",
            &s.primary,
            "--table",
            &s.table,
            "--compare-region",
            "eu-west-1",
        ],
        "",
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("eu-west-1") && run.stderr.contains(&s.table),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{run:#?}");
    Ok(())
}
