//! `ddbguard quarantine` end to end: records that fail in ap-southeast-2 because the local key replica is disabled
//! are quarantined by `verify` (with their stored image, no plaintext), listed and shown, and `quarantine replay`
//! turns them `ok` and resolved once the key is enabled again.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use ddbguard_e2e::{LocalAws, PRIMARY_REGION, REPLICA_REGION, unique_name};
use serde_json::{Value, json};

use crate::cli::{TempDir, ddbguard, verify_until_caught_up};

/// The replica's config: `ssn` encrypted under the MRK's replica, quarantine in its own table.
fn config(endpoint: &str, table: &str, key_arn: &str, quarantine_table: &str) -> String {
    format!(
        r#"[aws]
region = "{REPLICA_REGION}"
regions = ["{PRIMARY_REGION}", "{REPLICA_REGION}"]
endpoint_url = "{endpoint}"

[verify]
quarantine_table = "{quarantine_table}"
quarantine_retention = "2d"

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

/// DynamoDB JSON of strings and binaries (what `item encrypt` prints for these items) to an SDK item.
fn sdk_item(value: &Value) -> HashMap<String, AttributeValue> {
    let object = value.as_object().expect("an item is an object");
    object
        .iter()
        .map(|(name, v)| {
            let value = match (v.get("S"), v.get("B")) {
                (Some(s), _) => AttributeValue::S(s.as_str().expect("S").to_owned()),
                (_, Some(b)) => AttributeValue::B(
                    aws_smithy_types::base64::decode(b.as_str().expect("B"))
                        .expect("base64")
                        .into(),
                ),
                _ => panic!("unexpected attribute {name}: {v}"),
            };
            (name.clone(), value)
        })
        .collect()
}

#[tokio::test]
async fn a_key_unavailable_record_is_quarantined_without_plaintext_and_replayed_ok() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env.create_replicated_mrk(&unique_name("quarantine", "replay")).await?;
    let table = unique_name("quarantine", "replay");
    env.create_global_table(&table).await?;
    let dir = TempDir::new("quarantine-replay");
    let quarantine_table = unique_name("quarantine", "entries");
    let config = dir.write(
        "ap-southeast-2.toml",
        &config(env.endpoint(), &table, &mrk.arn_in(REPLICA_REGION), &quarantine_table),
    );
    let secrets = ["123-45-0001", "123-45-0002"];
    let ddb = env.dynamodb(REPLICA_REGION).await;
    for (i, ssn) in secrets.iter().enumerate() {
        let plain = json!({"pk": {"S": format!("c{i}")}, "ssn": {"S": ssn}});
        let run = ddbguard(
            &["item", "encrypt", "--config", &config, "--table", &table],
            &plain.to_string(),
        );
        assert_eq!(run.code, 0, "{run:#?}");
        ddb.put_item()
            .table_name(&table)
            .set_item(Some(sdk_item(&run.json())))
            .send()
            .await?;
    }
    let kms = env.kms(REPLICA_REGION).await;
    let key = mrk.arn_in(REPLICA_REGION);
    kms.disable_key().key_id(&key).send().await?;

    let run = verify_until_caught_up(&config, &table);
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.json()["by_verdict"], json!({"key_unavailable": 2}));

    let list = ddbguard(
        &[
            "quarantine",
            "list",
            "--config",
            &config,
            "--verdict",
            "key_unavailable",
        ],
        "",
    );
    assert_eq!(list.code, 0, "{list:#?}");
    let entries = list.json();
    let entries = entries.as_array().expect("a JSON array");
    assert_eq!(entries.len(), 2, "{entries:#?}");
    for entry in entries {
        assert_eq!(entry["table"], table.as_str());
        assert_eq!(entry["region"], REPLICA_REGION);
        assert_eq!(entry["status"], "open");
        assert!(entry["shard_id"].as_str().is_some_and(|s| !s.is_empty()), "{entry}");
        let show = ddbguard(
            &[
                "quarantine",
                "show",
                "--config",
                &config,
                entry["id"].as_str().expect("id"),
            ],
            "",
        );
        assert_eq!(show.code, 0, "{show:#?}");
        let shown = show.json();
        assert!(shown["image"]["ssn"]["B"].is_string(), "{shown:#}");
        assert!(shown["image"]["aws_dbe_head"]["B"].is_string(), "{shown:#}");
        for text in [
            &show.stdout,
            &show.stderr,
            &list.stdout,
            &list.stderr,
            &run.stdout,
            &run.stderr,
        ] {
            for secret in secrets {
                assert!(!text.contains(secret), "plaintext {secret} in output: {text}");
            }
        }
    }
    // No plaintext in the stored entries either.
    let stored = ddb.scan().table_name(&quarantine_table).send().await?;
    assert_eq!(stored.items().len(), 2);
    let dump = format!("{:?}", stored.items());
    for secret in secrets {
        assert!(!dump.contains(secret), "plaintext {secret} in the quarantine table");
    }
    let missing = ddbguard(&["quarantine", "show", "--config", &config, "nope"], "");
    assert_eq!(missing.code, 1, "{missing:#?}");

    kms.enable_key().key_id(&key).send().await?;
    let replay = ddbguard(&["quarantine", "replay", "--config", &config], "");
    assert_eq!(replay.code, 0, "{replay:#?}");
    let summary = replay.json();
    assert_eq!(
        (summary["replayed"].as_u64(), summary["resolved"].as_u64()),
        (Some(2), Some(2)),
        "{summary:#}"
    );
    assert!(
        summary["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .all(|e| e["verdict"] == "ok"),
        "{summary:#}"
    );

    let open = ddbguard(&["quarantine", "list", "--config", &config, "--open"], "");
    assert_eq!(open.json(), json!([]), "{open:#?}");
    Ok(())
}
