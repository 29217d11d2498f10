//! `ddbguard item decrypt`, the operator's command, on items the official crate wrote: it prints their
//! plaintext, and the same item with one ciphertext bit flipped exits 1 with `integrity_failed`.
//!
//! The binary is `DDBGUARD_BIN` (scripts/interop.sh builds it in the main workspace's target folder);
//! without it the test builds it with cargo.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ddbguard_dbe::json::{item_from_ddb_json, item_to_ddb_json};
use serde_json::{Value, json};

use crate::common::*;

const TABLE: &str = "InteropCustomers";

pub(crate) fn ddbguard_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("DDBGUARD_BIN") {
            return PathBuf::from(bin);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--locked",
                "-p",
                "ddbguard",
                "--bin",
                "ddbguard",
                "--manifest-path",
            ])
            .arg(root.join("Cargo.toml"))
            .status()
            .expect("running cargo build for the ddbguard binary");
        assert!(status.success(), "cargo build of the ddbguard binary failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("debug").join("ddbguard")
    })
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ddbguard_item(op: &str, config: &Path, stdin: &str) -> Run {
    let mut child = Command::new(ddbguard_bin())
        .args(["item", op, "--config"])
        .arg(config)
        .args(["--table", TABLE, "-"])
        .env("DDBGUARD_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", ddbguard_bin().display()));
    child
        .stdin
        .take()
        .expect("stdin pipe")
        .write_all(stdin.as_bytes())
        .expect("writing stdin");
    let out = child.wait_with_output().expect("waiting for ddbguard");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The table as both sides see it: ddbguard's TOML and the same configuration for the official encryptor.
/// `zip` in the encryption context makes these record version 2 items, so the keys must be in it too.
fn table(suite: &str, id: u16) -> (String, TableConfig) {
    let toml = format!(
        r#"[[tables]]
name = "{TABLE}"
partition_key = "pk"
sort_key = "sk"
algorithm_suite = "{suite}"
allowed_unsigned_attributes = ["note"]
[tables.attribute_actions]
pk = "SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT"
sk = "SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT"
zip = "SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT"
ssn = "ENCRYPT_AND_SIGN"
scores = "ENCRYPT_AND_SIGN"
note = "DO_NOTHING"
[tables.keyring]
kind = "raw-aes"
key_namespace = "{KEY_NAMESPACE}"
key_name = "{KEY_NAME}"
key_base64 = "{}"
"#,
        STANDARD.encode(KEY)
    );
    let mut cfg = TableConfig::new(TABLE, "pk");
    cfg.sort_key = Some("sk".to_owned());
    cfg.algorithm_suite = AlgorithmSuite::from_id(id).expect("a DB-ESDK suite");
    cfg.allowed_unsigned_attributes = ["note".to_owned()].into();
    for (name, action) in [
        ("pk", CryptoAction::SignAndIncludeInEncryptionContext),
        ("sk", CryptoAction::SignAndIncludeInEncryptionContext),
        ("zip", CryptoAction::SignAndIncludeInEncryptionContext),
        ("ssn", CryptoAction::EncryptAndSign),
        ("scores", CryptoAction::EncryptAndSign),
        ("note", CryptoAction::DoNothing),
    ] {
        cfg.attribute_actions.insert(name.to_owned(), action);
    }
    (toml, cfg)
}

#[test]
fn item_decrypt_reads_official_items_and_names_a_flipped_bit() {
    let dir = std::env::temp_dir().join(format!("ddbguard-interop-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let plain_json = json!({
        "pk": {"S": "cust-1"},
        "sk": {"S": "profile"},
        "zip": {"N": "2000"},
        "ssn": {"S": "123-45-6789"},
        "scores": {"M": {"a": {"NS": ["1", "2.5"]}, "b": {"L": [{"BOOL": true}, {"NULL": true}]}}},
        "note": {"S": "vip"},
    });
    let plain = item_from_ddb_json(&plain_json).expect("plaintext item");

    for (suite, id) in [("0x6700", 0x6700), ("0x6701", 0x6701)] {
        let (toml, cfg) = table(suite, id);
        let config = dir.join(format!("ddbguard-{suite}.toml"));
        std::fs::write(&config, toml).expect("writing config");
        let encrypted = runtime()
            .block_on(official::encrypt(&cfg, &plain))
            .unwrap_or_else(|e| panic!("{suite}: official encrypt: {e}"));
        let encrypted_json = item_to_ddb_json(&encrypted);

        let run = ddbguard_item("decrypt", &config, &encrypted_json.to_string());
        assert_eq!(run.code, 0, "{suite}: stdout {} stderr {}", run.stdout, run.stderr);
        let decrypted: Value = serde_json::from_str(&run.stdout).expect("decrypt prints one JSON item");
        let decrypted = item_from_ddb_json(&decrypted).expect("decrypt prints DynamoDB JSON");
        assert_eq!(sets_sorted_item(&decrypted), sets_sorted_item(&plain), "{suite}");

        // One bit of the ssn ciphertext flipped: the official crate refuses it, and so does ddbguard, by name.
        let mut tampered = encrypted.clone();
        match tampered.get_mut("ssn") {
            Some(AttributeValue::B(bytes)) => {
                let i = bytes.len() / 2;
                bytes[i] ^= 0x01;
            }
            other => panic!("{suite}: ssn is not ciphertext: {other:?}"),
        }
        assert!(
            runtime().block_on(official::decrypt(&cfg, &tampered)).is_err(),
            "{suite}: the official crate accepted a flipped bit"
        );
        let run = ddbguard_item("decrypt", &config, &item_to_ddb_json(&tampered).to_string());
        assert_eq!(run.code, 1, "{suite}: stdout {} stderr {}", run.stdout, run.stderr);
        let line: Value = serde_json::from_str(run.stdout.trim()).expect("a JSON result line");
        assert_eq!(line["verdict"], "integrity_failed", "{suite}: {line}");
        assert!(
            !run.stdout.contains("123-45-6789") && !run.stderr.contains("123-45-6789"),
            "{suite}: the plaintext leaked: {} {}",
            run.stdout,
            run.stderr
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
