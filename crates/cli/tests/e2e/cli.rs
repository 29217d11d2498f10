//! The `ddbguard` binary end to end: `item encrypt|decrypt|inspect` with a raw AES key and with a KMS MRK across
//! the two local regions, batch (JSON lines) output and exit codes, config errors, and `keys check`.
//!
//! The tests run the binary as an operator would: the one cargo built for this test target
//! (`CARGO_BIN_EXE_ddbguard`), so it is never stale and never built a second time.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use ddbguard_e2e::{LocalAws, PRIMARY_REGION, REPLICA_REGION, unique_name};
use serde_json::{Value, json};

/// A 32-byte AES key (bytes 0..=31), base64.
const RAW_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The `ddbguard` binary that cargo built with this test target.
const DDBGUARD_BIN: &str = env!("CARGO_BIN_EXE_ddbguard");

/// What one run of the binary did.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:#?}"))
    }
}

/// Runs `ddbguard ARGS` with `stdin` as input, static test credentials and nothing else from the AWS environment.
pub(crate) fn ddbguard(args: &[&str], stdin: &str) -> Run {
    ddbguard_with_env(args, stdin, &[])
}

/// [`ddbguard`] with the environment variables `env` set as well.
pub(crate) fn ddbguard_with_env(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
    ddbguard_into(args, stdin, env, Stdio::piped())
}

/// The `ddbguard` binary as a command with static test credentials and nothing else from the AWS or ddbguard
/// environment of the test process.
pub(crate) fn command() -> Command {
    let mut command = Command::new(DDBGUARD_BIN);
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|n| n.starts_with("AWS_") || n.starts_with("DDBGUARD_"))
        {
            command.env_remove(name);
        }
    }
    command
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

/// [`ddbguard_with_env`] with stdout going to `stdout` (the returned `stdout` is empty unless it is piped).
pub(crate) fn ddbguard_into(args: &[&str], stdin: &str, env: &[(&str, &str)], stdout: Stdio) -> Run {
    let mut child = command()
        .args(args)
        .env("DDBGUARD_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning ddbguard");
    let mut pipe = child.stdin.take().expect("stdin pipe");
    let input = stdin.to_owned();
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("waiting for ddbguard");
    match writer.join().expect("stdin writer") {
        // A command that fails before reading its input (a configuration error) closes stdin early.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        result => result.expect("writing stdin"),
    }
    Run {
        code: out.status.code().expect("ddbguard exited by a signal"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

/// `ddbguard verify --until-caught-up --from trim-horizon` on `table`, metrics on an ephemeral port.
pub(crate) fn verify_until_caught_up(config: &str, table: &str) -> Run {
    verify_until_caught_up_into(config, table, Stdio::piped())
}

/// [`verify_until_caught_up`] with its summary (stdout) going to `stdout`.
pub(crate) fn verify_until_caught_up_into(config: &str, table: &str, stdout: Stdio) -> Run {
    ddbguard_into(
        &[
            "verify",
            "--config",
            config,
            "--table",
            table,
            "--until-caught-up",
            "--from",
            "trim-horizon",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        "",
        &[],
        stdout,
    )
}

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique_name("ddbguard-cli", test));
        std::fs::create_dir_all(&dir).expect("creating the temp dir");
        TempDir(dir)
    }

    /// Writes `name` into the directory; returns its path as a string (for arguments).
    pub(crate) fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("writing a temp file");
        path.to_str().expect("UTF-8 temp path").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `Customers` table: `ssn` and `email` encrypted, `Zip` signed (its capital sorts it before `ssn` in
/// canonical order), `note` neither. The items list the attributes in another order.
fn customers_table(extra: &str, keyring: &str) -> String {
    format!(
        r#"
[[tables]]
name = "Customers"
partition_key = "pk"
sort_key = "sk"
allowed_unsigned_attributes = ["note"]
{extra}

[tables.attribute_actions]
pk = "SIGN_ONLY"
sk = "SIGN_ONLY"
ssn = "ENCRYPT_AND_SIGN"
email = "ENCRYPT_AND_SIGN"
Zip = "SIGN_ONLY"
note = "DO_NOTHING"

[tables.keyring]
{keyring}
"#
    )
}

fn raw_aes_config() -> String {
    customers_table(
        "algorithm_suite = \"0x6701\"",
        &format!("kind = \"raw-aes\"\nkey_namespace = \"ops\"\nkey_name = \"local-key\"\nkey_base64 = \"{RAW_KEY}\""),
    )
}

fn kms_config(region: &str, endpoint: &str, key_arn: &str) -> String {
    format!(
        "[aws]\nregion = \"{region}\"\nregions = [\"{PRIMARY_REGION}\", \"{REPLICA_REGION}\"]\nendpoint_url = \"{endpoint}\"\n{}",
        customers_table("", &format!("kind = \"kms-mrk\"\nkey_arn = \"{key_arn}\""))
    )
}

fn customer(id: &str, ssn: &str, email: &str) -> Value {
    json!({
        "pk": {"S": id},
        "sk": {"S": "profile"},
        "ssn": {"S": ssn},
        "email": {"S": email},
        "Zip": {"N": "2000"},
        "note": {"S": "vip"},
    })
}

fn item_cmd<'a>(op: &'a str, config: &'a str) -> [&'a str; 6] {
    ["item", op, "--config", config, "--table", "Customers"]
}

/// Encrypts `item` with the CLI and returns the encrypted item.
fn encrypt(config: &str, item: &Value) -> Value {
    let run = ddbguard(&item_cmd("encrypt", config), &item.to_string());
    assert_eq!(run.code, 0, "{run:#?}");
    let encrypted = run.json();
    assert!(encrypted.get("aws_dbe_head").is_some(), "{run:#?}");
    encrypted
}

#[test]
fn item_encrypt_decrypt_and_inspect_with_a_raw_aes_key() {
    let dir = TempDir::new("raw-aes");
    let config = dir.write("ddbguard.toml", &raw_aes_config());
    let plain = customer("cust-1", "123-45-6789", "alice@example.com");

    let encrypted = encrypt(&config, &plain);
    for attribute in ["ssn", "email"] {
        assert!(
            encrypted[attribute].get("B").is_some(),
            "{attribute} is ciphertext: {encrypted}"
        );
    }
    assert_eq!(encrypted["note"], plain["note"]);
    let text = encrypted.to_string();
    assert!(
        !text.contains("123-45-6789") && !text.contains("alice@example.com"),
        "{text}"
    );

    let input = dir.write("encrypted.json", &text);
    let run = ddbguard(&[&item_cmd("decrypt", &config)[..], &[input.as_str()]].concat(), "");
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json(), plain);

    let run = ddbguard(&item_cmd("inspect", &config), &text);
    assert_eq!(run.code, 0, "{run:#?}");
    let header = run.json();
    assert_eq!(header["version"], 1, "{header:#}");
    assert_eq!(header["algorithm_suite"], "0x6701", "{header:#}");
    assert_eq!(header["legend_matches_item"], true, "{header:#}");
    let signed: Vec<(&str, &str)> = header["signed_attributes"]
        .as_array()
        .expect("signed_attributes")
        .iter()
        .map(|a| (a["name"].as_str().unwrap_or("?"), a["action"].as_str().unwrap_or("?")))
        .collect();
    assert_eq!(
        signed,
        // Canonical order: the canonical path prefixes each name with its UTF-16 length, so shorter names come
        // first, then bytewise (capital `Z` before lowercase `s`) — not the input's order, not plain sorting.
        [
            ("pk", "SIGN_ONLY"),
            ("sk", "SIGN_ONLY"),
            ("Zip", "SIGN_ONLY"),
            ("ssn", "ENCRYPT_AND_SIGN"),
            ("email", "ENCRYPT_AND_SIGN"),
        ],
        "{header:#}"
    );
    let edks = header["encrypted_data_keys"].as_array().expect("encrypted_data_keys");
    assert_eq!(edks.len(), 1, "{header:#}");
    assert_eq!(edks[0]["provider_id"], "ops", "{header:#}");
    assert_eq!(header["message_id"].as_str().map(str::len), Some(64), "{header:#}");
}

#[test]
fn json_lines_give_one_result_per_line_in_order_and_exit_1() {
    let dir = TempDir::new("batch");
    let config = dir.write("ddbguard.toml", &raw_aes_config());
    let good = encrypt(&config, &customer("cust-1", "123-45-6789", "alice@example.com"));
    // A second customer whose secrets must never be printed: its ciphertext is tampered with.
    let mut tampered = encrypt(&config, &customer("cust-2", "987-65-4321", "bob@example.com"));
    let ssn = tampered["ssn"]["B"].as_str().expect("ssn is B").to_owned();
    let mut chars: Vec<char> = ssn.chars().collect();
    // A middle character of the base64 text: flipping it changes one ciphertext byte and keeps it valid base64.
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    tampered["ssn"]["B"] = json!(chars.into_iter().collect::<String>());
    assert_ne!(tampered["ssn"]["B"], json!(ssn));
    let input = format!("{good}\n{tampered}\nnot json: ssn 555-12-3456\n");

    let run = ddbguard(&item_cmd("decrypt", &config), &input);
    assert_eq!(run.code, 1, "{run:#?}");
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{run:#?}");
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(line["line"], n + 1, "{line}");
    }
    assert_eq!(lines[0]["ok"], true, "{}", lines[0]);
    assert_eq!(lines[0]["item"]["ssn"]["S"], "123-45-6789", "{}", lines[0]);
    assert_eq!(lines[1]["ok"], false, "{}", lines[1]);
    assert_eq!(lines[1]["verdict"], "integrity_failed", "{}", lines[1]);
    assert!(
        lines[1]["reason"].is_string() && lines[1]["error"].is_string(),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2]["ok"], false, "{}", lines[2]);
    assert_eq!(lines[2]["input_error"], "not_json", "{}", lines[2]);
    assert!(
        lines[2].get("verdict").is_none(),
        "an input error is not a verdict: {}",
        lines[2]
    );
    for secret in ["987-65-4321", "bob@example.com", "555-12-3456"] {
        assert!(!run.stdout.contains(secret), "stdout shows {secret}: {}", run.stdout);
        assert!(!run.stderr.contains(secret), "stderr shows {secret}: {}", run.stderr);
    }
}

#[test]
fn config_errors_exit_2_and_name_file_table_and_field() {
    let dir = TempDir::new("config-errors");
    let bad = dir.write(
        "bad-suite.toml",
        &raw_aes_config().replace("algorithm_suite = \"0x6701\"", "algorithm_suite = \"0x6702\""),
    );
    let run = ddbguard(&item_cmd("inspect", &bad), "{}");
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    for needle in [bad.as_str(), "\"Customers\"", "algorithm_suite", "0x6702"] {
        assert!(run.stderr.contains(needle), "stderr lacks {needle}: {}", run.stderr);
    }

    let bad_action = dir.write(
        "bad-action.toml",
        &raw_aes_config().replace("email = \"ENCRYPT_AND_SIGN\"", "email = \"ENCRYPT\""),
    );
    let run = ddbguard(&item_cmd("decrypt", &bad_action), "{}");
    assert_eq!(run.code, 2, "{run:#?}");
    for needle in [bad_action.as_str(), "\"Customers\"", "attribute_actions.email"] {
        assert!(run.stderr.contains(needle), "stderr lacks {needle}: {}", run.stderr);
    }

    let good = dir.write("ddbguard.toml", &raw_aes_config());
    let run = ddbguard(&["item", "inspect", "--config", &good, "--table", "Orders"], "{}");
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    for needle in [good.as_str(), "Orders", "Customers"] {
        assert!(run.stderr.contains(needle), "stderr lacks {needle}: {}", run.stderr);
    }

    let missing = dir.0.join("missing.toml");
    let missing = missing.to_str().expect("UTF-8 path");
    let run = ddbguard(&item_cmd("inspect", missing), "{}");
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains(missing), "{}", run.stderr);
}

#[tokio::test]
async fn kms_mrk_item_encrypted_in_us_east_1_decrypts_in_ap_southeast_2() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env.create_replicated_mrk(&unique_name("cli", "mrk-item")).await?;
    let dir = TempDir::new("kms-mrk");
    let primary = dir.write(
        "us-east-1.toml",
        &kms_config(PRIMARY_REGION, env.endpoint(), &mrk.primary_arn),
    );
    let replica = dir.write(
        "ap-southeast-2.toml",
        &kms_config(REPLICA_REGION, env.endpoint(), &mrk.primary_arn),
    );
    let plain = customer("cust-1", "123-45-6789", "alice@example.com");

    let encrypted = encrypt(&primary, &plain);
    let text = encrypted.to_string();
    let run = ddbguard(&item_cmd("decrypt", &replica), &text);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json(), plain);

    let run = ddbguard(&item_cmd("inspect", &replica), &text);
    assert_eq!(run.code, 0, "{run:#?}");
    let header = run.json();
    let edks = header["encrypted_data_keys"].as_array().expect("encrypted_data_keys");
    assert_eq!(edks.len(), 1, "{header:#}");
    assert_eq!(edks[0]["provider_id"], "aws-kms", "{header:#}");
    assert_eq!(edks[0]["key_arn"], mrk.primary_arn.as_str(), "{header:#}");
    assert_eq!(edks[0]["mrk"], true, "{header:#}");
    Ok(())
}

#[tokio::test]
async fn keys_branch_create_rotate_show_and_items_under_the_branch_key() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env.create_replicated_mrk(&unique_name("cli", "branch")).await?;
    let key_store = unique_name("keystore", "cli-branch");
    let dir = TempDir::new("keys-branch");
    let config = |region: &str, branch_key_id: Option<&str>| {
        let id = branch_key_id.map_or(String::new(), |id| format!("branch_key_id = \"{id}\"\n"));
        format!(
            "[aws]\nregion = \"{region}\"\nregions = [\"{PRIMARY_REGION}\", \"{REPLICA_REGION}\"]\nendpoint_url = \"{}\"\n{}",
            env.endpoint(),
            customers_table(
                "",
                &format!(
                    "kind = \"hierarchy\"\nkey_arn = \"{}\"\nkey_store_table = \"{key_store}\"\n{id}",
                    mrk.primary_arn
                )
            )
        )
    };
    let branch_with = |command: &str, config: &str, extra: &[&str]| {
        let mut args = vec!["keys", "branch", command, "--config", config, "--table", "Customers"];
        args.extend_from_slice(extra);
        ddbguard(&args, "")
    };
    let branch = |command: &str, config: &str| branch_with(command, config, &[]);
    let setup = dir.write("setup.toml", &config(PRIMARY_REGION, None));

    // create: makes the key store table (missing so far) and a branch key with a random id.
    let run = branch("create", &setup);
    assert_eq!(run.code, 0, "{run:#?}");
    let created = run.json();
    assert_eq!(created["created_key_store_table"], true, "{created:#}");
    assert_eq!(created["ok"], true, "{created:#}");
    assert_eq!(created["kms_key"], mrk.primary_arn.as_str(), "{created:#}");
    let id = created["branch_key_id"].as_str().expect("branch_key_id").to_owned();

    // show without --branch-key-id and none configured: a usage error.
    let run = branch("show", &setup);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("--branch-key-id"), "{run:#?}");
    // A chosen id without an encryption context: a usage error, found before anything is written.
    let run = branch_with("create", &setup, &["--branch-key-id", "tenant-9"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("--encryption-context"), "{run:#?}");
    // A branch key that does not exist: the key store's answer, as JSON, exit 1.
    let run = branch_with("rotate", &setup, &["--branch-key-id", "missing"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let failed = run.json();
    assert_eq!(
        (&failed["ok"], &failed["kind"]),
        (&json!(false), &json!("not_found")),
        "{failed:#}"
    );
    assert!(
        failed["error"].as_str().is_some_and(|e| e.contains("\"missing\"")),
        "{failed:#}"
    );

    let writer = dir.write("writer.toml", &config(PRIMARY_REGION, Some(&id)));
    let run = branch("show", &writer);
    assert_eq!(run.code, 0, "{run:#?}");
    let shown = run.json();
    assert_eq!(shown["items"].as_array().map(Vec::len), Some(3), "{shown:#}");
    assert_eq!(shown["active_decrypts_here"]["ok"], true, "{shown:#}");

    let before = encrypt(&writer, &customer("c-1", "078-05-1120", "a@example.com"));
    let run = branch("rotate", &writer);
    assert_eq!(run.code, 0, "{run:#?}");
    let rotated = run.json()["active_version"]
        .as_str()
        .expect("active_version")
        .to_owned();
    let run = branch("show", &writer);
    let shown = run.json();
    assert_eq!(shown["items"].as_array().map(Vec::len), Some(4), "{shown:#}");
    assert_eq!(shown["active_decrypts_here"]["version"], rotated.as_str(), "{shown:#}");
    let after = encrypt(&writer, &customer("c-2", "219-09-9999", "b@example.com"));

    // Both versions decrypt; a reader without branch_key_id takes the id from each record.
    let reader = dir.write("reader.toml", &config(PRIMARY_REGION, None));
    let batch = format!("{before}\n{after}\n");
    let run = ddbguard(&item_cmd("decrypt", &reader), &batch);
    assert_eq!(run.code, 0, "{run:#?}");
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines[0]["item"]["ssn"]["S"], "078-05-1120", "{run:#?}");
    assert_eq!(lines[1]["item"]["ssn"]["S"], "219-09-9999", "{run:#?}");

    // A reader without a branch key cannot encrypt, and says why.
    let run = ddbguard(
        &item_cmd("encrypt", &reader),
        &customer("c-3", "1", "c@example.com").to_string(),
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stdout.contains("branch_key_id"), "{run:#?}");
    Ok(())
}

#[tokio::test]
async fn keys_check_passes_then_fails_naming_the_region_of_a_disabled_replica() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env.create_replicated_mrk(&unique_name("cli", "keys-check")).await?;
    let dir = TempDir::new("keys-check");
    let config = dir.write(
        "ddbguard.toml",
        &kms_config(PRIMARY_REGION, env.endpoint(), &mrk.primary_arn),
    );

    let run = ddbguard(&["keys", "check", "--config", &config, "--json"], "");
    assert_eq!(run.code, 0, "{run:#?}");
    let doc = run.json();
    assert_eq!(doc["ok"], true, "{doc:#}");
    assert_eq!(doc["tables"][0]["table"], "Customers", "{doc:#}");
    assert_eq!(doc["tables"][0]["report"]["ok"], true, "{doc:#}");
    assert_eq!(
        doc["tables"][0]["report"]["matrix"].as_array().map(Vec::len),
        Some(4),
        "{doc:#}"
    );

    env.kms(REPLICA_REGION)
        .await
        .disable_key()
        .key_id(mrk.arn_in(REPLICA_REGION))
        .send()
        .await?;

    let run = ddbguard(&["keys", "check", "--config", &config], "");
    assert_eq!(run.code, 1, "{run:#?}");
    let screen = &run.stdout;
    let state_row = screen
        .lines()
        .find(|l| l.trim_start().starts_with(REPLICA_REGION) && l.contains(&mrk.arn_in(REPLICA_REGION)))
        .unwrap_or_else(|| panic!("no state row for {REPLICA_REGION}:\n{screen}"));
    assert!(state_row.contains("DISABLED"), "{screen}");
    let problems: Vec<&str> = screen
        .lines()
        .skip_while(|l| l.trim() != "problems:")
        .skip(1)
        .filter(|l| l.trim_start().starts_with("- "))
        .collect();
    assert!(!problems.is_empty(), "{screen}");
    assert!(problems.iter().all(|p| p.contains(REPLICA_REGION)), "{screen}");

    let run = ddbguard(&["keys", "check", "--config", &config, "--json"], "");
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.json()["ok"], false, "{run:#?}");
    Ok(())
}

#[tokio::test]
async fn verify_until_caught_up_reports_ok_items_and_a_plaintext_one_from_the_replica_stream() -> anyhow::Result<()> {
    use crate::verify::sdk_item;
    use std::time::Duration;

    fn config(region: &str, endpoint: &str, table: &str, key_arn: &str) -> String {
        format!(
            r#"[aws]
region = "{region}"
regions = ["{PRIMARY_REGION}", "{REPLICA_REGION}"]
endpoint_url = "{endpoint}"

[[tables]]
name = "{table}"
partition_key = "pk"

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

    let env = LocalAws::shared();
    let mrk = env.create_replicated_mrk(&unique_name("cli", "verify")).await?;
    let table = unique_name("cli", "verify");
    env.create_global_table(&table).await?;
    let dir = TempDir::new("verify");
    let primary = dir.write(
        "us-east-1.toml",
        &config(PRIMARY_REGION, env.endpoint(), &table, &mrk.primary_arn),
    );
    let replica = dir.write(
        "ap-southeast-2.toml",
        &config(REPLICA_REGION, env.endpoint(), &table, &mrk.primary_arn),
    );

    let writer = env.dynamodb(PRIMARY_REGION).await;
    let encrypted_ids = ["cust-1", "cust-2", "cust-3"];
    for (n, id) in encrypted_ids.iter().enumerate() {
        let plain = json!({"pk": {"S": id}, "ssn": {"S": format!("123-45-000{n}")}, "Zip": {"N": "2000"}});
        let run = ddbguard(
            &["item", "encrypt", "--config", &primary, "--table", &table],
            &plain.to_string(),
        );
        assert_eq!(run.code, 0, "{run:#?}");
        let encrypted = run.json();
        assert!(encrypted.get("aws_dbe_head").is_some(), "{run:#?}");
        writer
            .put_item()
            .table_name(&table)
            .set_item(Some(sdk_item(&encrypted)))
            .send()
            .await?;
    }
    // A protected attribute in plain text: what a writer without the encryption client would store.
    let leaked = "999-88-7777";
    writer
        .put_item()
        .table_name(&table)
        .set_item(Some(sdk_item(
            &json!({"pk": {"S": "cust-plain"}, "ssn": {"S": leaked}}),
        )))
        .send()
        .await?;

    let replica_ddb = env.dynamodb(REPLICA_REGION).await;
    let all_ids = encrypted_ids.iter().copied().chain(["cust-plain"]);
    ddbguard_e2e::wait_replicated(&replica_ddb, &table, all_ids, Duration::from_secs(10)).await?;

    let run = verify_until_caught_up(&replica, &table);
    assert_eq!(run.code, 1, "{run:#?}");
    let summary = run.json();
    assert_eq!(summary["table"], table.as_str(), "{summary:#}");
    assert_eq!(summary["region"], REPLICA_REGION, "{summary:#}");
    assert_eq!(summary["records"], encrypted_ids.len() + 1, "{summary:#}");
    assert_eq!(summary["by_verdict"]["ok"], encrypted_ids.len(), "{summary:#}");
    assert_eq!(summary["by_verdict"]["plaintext"], 1, "{summary:#}");
    assert_eq!(
        summary["by_verdict"].as_object().map(|m| m.len()),
        Some(2),
        "{summary:#}"
    );
    assert_eq!(
        summary["by_origin"][PRIMARY_REGION]["ok"],
        encrypted_ids.len(),
        "{summary:#}"
    );
    assert_eq!(summary["gaps"].as_array().map(Vec::len), Some(0), "{summary:#}");
    assert_eq!(summary["caught_up"], true, "{summary:#}");
    assert_eq!(summary["passed"], false, "{summary:#}");
    // The alert names the record's key, never the leaked value.
    assert!(
        run.stderr.contains("plaintext") && run.stderr.contains("cust-plain"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains(leaked) && !run.stderr.contains(leaked), "{run:#?}");
    Ok(())
}

#[tokio::test]
async fn verify_fully_verifies_hierarchy_records_from_a_global_key_store_whatever_the_sample_rate() -> anyhow::Result<()>
{
    use crate::verify::sdk_item;
    use aws_sdk_dynamodb::types::KeyType;
    use std::time::Duration;

    let env = LocalAws::shared();
    let mrk = env
        .create_replicated_mrk(&unique_name("cli", "verify-hierarchy"))
        .await?;
    let table = unique_name("cli", "verify-hierarchy");
    let key_store = unique_name("keystore", "verify-hierarchy");
    env.create_global_table(&table).await?;
    env.create_global_table_keyed(
        &key_store,
        &[("branch-key-id", KeyType::Hash), ("type", KeyType::Range)],
    )
    .await?;
    let dir = TempDir::new("verify-hierarchy");
    let config = |region: &str, branch_key_id: &str| {
        format!(
            r#"[aws]
region = "{region}"
regions = ["{PRIMARY_REGION}", "{REPLICA_REGION}"]
endpoint_url = "{endpoint}"

[verify]
sample_rate = 0.0

[[tables]]
name = "{table}"
partition_key = "pk"

[tables.attribute_actions]
pk = "SIGN_ONLY"
ssn = "ENCRYPT_AND_SIGN"

[tables.keyring]
kind = "hierarchy"
key_arn = "{key_arn}"
key_store_table = "{key_store}"
{branch_key_id}
"#,
            endpoint = env.endpoint(),
            key_arn = mrk.primary_arn,
        )
    };
    let setup = dir.write("setup.toml", &config(PRIMARY_REGION, ""));
    let run = ddbguard(&["keys", "branch", "create", "--config", &setup, "--table", &table], "");
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        run.json()["created_key_store_table"],
        false,
        "the global key store exists: {run:#?}"
    );
    let id = run.json()["branch_key_id"].as_str().expect("id").to_owned();
    let primary = dir.write(
        "primary.toml",
        &config(PRIMARY_REGION, &format!("branch_key_id = \"{id}\"")),
    );
    let replica = dir.write("replica.toml", &config(REPLICA_REGION, ""));

    let writer = env.dynamodb(PRIMARY_REGION).await;
    let ids = ["h-1", "h-2", "h-3"];
    for (n, pk) in ids.iter().enumerate() {
        let plain = json!({"pk": {"S": pk}, "ssn": {"S": format!("555-01-000{n}")}});
        let run = ddbguard(
            &["item", "encrypt", "--config", &primary, "--table", &table],
            &plain.to_string(),
        );
        assert_eq!(run.code, 0, "{run:#?}");
        writer
            .put_item()
            .table_name(&table)
            .set_item(Some(sdk_item(&run.json())))
            .send()
            .await?;
    }
    let replica_ddb = env.dynamodb(REPLICA_REGION).await;
    ddbguard_e2e::wait_replicated(&replica_ddb, &table, ids, Duration::from_secs(10)).await?;

    let run = verify_until_caught_up(&replica, &table);
    assert_eq!(run.code, 0, "{run:#?}");
    let summary = run.json();
    // sample_rate = 0 would make every kms-mrk record ok_structural; hierarchy records are all fully verified.
    assert_eq!(summary["by_verdict"]["ok"], ids.len(), "{summary:#}");
    assert_eq!(
        summary["by_verdict"].as_object().map(|m| m.len()),
        Some(1),
        "{summary:#}"
    );
    assert_eq!(summary["passed"], true, "{summary:#}");
    Ok(())
}

#[tokio::test]
async fn one_config_without_a_region_serves_both_regions_through_aws_region_and_variables() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env.create_replicated_mrk(&unique_name("cli", "env-config")).await?;
    let dir = TempDir::new("env-config");
    // No `[aws] region`: the region comes from AWS_REGION, the key and the endpoint from variables.
    let text = format!(
        "[aws]\nregions = [\"{PRIMARY_REGION}\", \"{REPLICA_REGION}\"]\nendpoint_url = \"${{TEST_ENDPOINT}}\"\n{}",
        customers_table("", "kind = \"kms-mrk\"\nkey_arn = \"${CUSTOMERS_KEY_ARN}\"")
    );
    let config = dir.write("ddbguard.toml", &text);
    let in_region = |region: &'static str| {
        [
            ("AWS_REGION", region),
            ("TEST_ENDPOINT", env.endpoint()),
            ("CUSTOMERS_KEY_ARN", mrk.primary_arn.as_str()),
        ]
    };
    let plain = customer("cust-1", "123-45-6789", "alice@example.com");

    let run = ddbguard_with_env(
        &item_cmd("encrypt", &config),
        &plain.to_string(),
        &in_region(PRIMARY_REGION),
    );
    assert_eq!(run.code, 0, "{run:#?}");
    let encrypted = run.stdout;
    let run = ddbguard_with_env(&item_cmd("decrypt", &config), &encrypted, &in_region(REPLICA_REGION));
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.json(), plain);

    // A region outside `regions` is named as the problem.
    let mut elsewhere = in_region(REPLICA_REGION);
    elsewhere[0].1 = "eu-west-1";
    let run = ddbguard_with_env(&item_cmd("decrypt", &config), &encrypted, &elsewhere);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains("`regions`") && run.stderr.contains("eu-west-1"),
        "{}",
        run.stderr
    );

    // No region anywhere (no AWS_REGION, no profile, no instance metadata): exit 2 naming the field.
    let mut nowhere = in_region(REPLICA_REGION).to_vec();
    nowhere.remove(0);
    nowhere.push(("AWS_CONFIG_FILE", "/nonexistent/ddbguard-test-aws-config"));
    let run = ddbguard_with_env(&item_cmd("decrypt", &config), &encrypted, &nowhere);
    assert_eq!(run.code, 2, "{run:#?}");
    for needle in [config.as_str(), "[aws]", "field `region`", "AWS_REGION"] {
        assert!(run.stderr.contains(needle), "stderr lacks {needle}: {}", run.stderr);
    }
    Ok(())
}

#[test]
fn an_unset_variable_without_default_exits_2_naming_it_the_file_and_the_line() {
    let dir = TempDir::new("unset-var");
    let text = raw_aes_config().replace("partition_key = \"pk\"", "partition_key = \"${DDBGUARD_TEST_PK}\"");
    let line = text
        .lines()
        .position(|l| l.contains("DDBGUARD_TEST_PK"))
        .expect("the reference")
        + 1;
    let config = dir.write("ddbguard.toml", &text);
    let run = ddbguard(&item_cmd("inspect", &config), "{}");
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    for needle in [config.as_str(), &format!("line {line}:"), "`DDBGUARD_TEST_PK`"] {
        assert!(run.stderr.contains(needle), "stderr lacks {needle}: {}", run.stderr);
    }
    // Set, the same file works.
    let plain = customer("cust-1", "123-45-6789", "alice@example.com");
    let run = ddbguard_with_env(
        &item_cmd("encrypt", &config),
        &plain.to_string(),
        &[("DDBGUARD_TEST_PK", "pk")],
    );
    assert_eq!(run.code, 0, "{run:#?}");
}

#[test]
fn the_whole_config_can_come_from_ddbguard_config_toml() {
    let text = raw_aes_config();
    let plain = customer("cust-1", "123-45-6789", "alice@example.com");
    let args = ["item", "encrypt", "--table", "Customers"];
    let run = ddbguard_with_env(&args, &plain.to_string(), &[("DDBGUARD_CONFIG_TOML", &text)]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.json().get("aws_dbe_head").is_some(), "{run:#?}");

    // Errors name the variable instead of a file.
    let bad = text.replace("\"SIGN_ONLY\"", "\"SIGNED\"");
    let run = ddbguard_with_env(&args, "{}", &[("DDBGUARD_CONFIG_TOML", &bad)]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("config in $DDBGUARD_CONFIG_TOML"), "{}", run.stderr);

    // A file as well: ambiguous, exit 2 before anything is read.
    let dir = TempDir::new("inline-and-file");
    let config = dir.write("ddbguard.toml", &text);
    let run = ddbguard_with_env(
        &item_cmd("encrypt", &config),
        &plain.to_string(),
        &[("DDBGUARD_CONFIG_TOML", &text)],
    );
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr.contains(&config) && run.stderr.contains("DDBGUARD_CONFIG_TOML"),
        "{}",
        run.stderr
    );
}
