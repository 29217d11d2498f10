//! Loading and validation of whole config texts; the sections' own rules are tested beside them.

use std::collections::{BTreeMap, BTreeSet};

use ddbguard_dbe::{AlgorithmSuite, CryptoAction};
use ddbguard_keys::keystore::CacheSettings;

use super::*;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn table(extra: &str, keyring: &str) -> String {
    format!(
        r#"
[[tables]]
name = "Customers"
partition_key = "pk"
sort_key = "sk"
{extra}
[tables.attribute_actions]
pk = "SIGN_ONLY"
sk = "SIGN_ONLY"
ssn = "ENCRYPT_AND_SIGN"
[tables.keyring]
{keyring}
"#
    )
}

fn raw_aes() -> String {
    format!("kind = \"raw-aes\"\nkey_namespace = \"ops\"\nkey_name = \"k\"\nkey_base64 = \"{KEY}\"")
}

fn err(text: &str) -> String {
    Config::parse(Path::new("ddbguard.toml"), text).unwrap_err().to_string()
}

#[test]
fn the_documented_config_is_valid() {
    let text = include_str!("../../../../config/ddbguard.toml");
    // Its `${VAR:-default}` references take their defaults when nothing is set.
    let config = Config::parse(Path::new("config/ddbguard.toml"), text).unwrap();
    let t = config.table("Customers").unwrap();
    assert!(matches!(t.keyring, KeyringSettings::KmsMrk { .. }));
    assert!(t.required_encrypted.contains("ssn"));
    assert_eq!(config.aws.regions.len(), 2);
    // It leaves the region to the environment, and its variables change it for another deployment.
    assert_eq!(config.aws.region, None);
    let env = env_of(&[(INLINE_CONFIG_VAR, text), ("CUSTOMERS_TABLE", "Customers-eu")]);
    let config = Config::load(None, &env).unwrap();
    assert_eq!(config.tables[0].name, "Customers-eu");
    assert_eq!(config.tables[0].dbe.logical_table_name, "Customers");
    assert_eq!(config.tables[0].home_region.as_deref(), Some("us-east-1"));
    assert_eq!(config.backfill.ledger_table, "ddbguard-backfill");
}

#[test]
fn backfill_fields_of_a_table_are_checked() {
    let config = Config::parse(
        Path::new("x.toml"),
        &table("home_region = \"eu-west-1\"\nversion_attribute = \"v\"", &raw_aes()),
    )
    .unwrap();
    let t = &config.tables[0];
    assert_eq!(
        (t.home_region.as_deref(), t.version_attribute.as_deref()),
        (Some("eu-west-1"), Some("v"))
    );
    assert_eq!(config.backfill, crate::config::BackfillSettings::default());
    for (extra, field) in [
        ("home_region = \"EU West\"", "`home_region`"),
        ("version_attribute = \"pk\"", "`version_attribute`"),
        ("version_attribute = \"ssn\"", "`version_attribute`"),
    ] {
        let e = err(&table(extra, &raw_aes()));
        assert!(e.contains("\"Customers\"") && e.contains(field), "{extra}: {e}");
    }
}

#[test]
fn hierarchy_keyring_is_read_with_defaults_and_checked() {
    let mrk = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab";
    let base = format!("kind = \"hierarchy\"\nkey_arn = \"{mrk}\"\nkey_store_table = \"Keys\"");
    let config = Config::parse(Path::new("x.toml"), &format!("{AWS}{}", table("", &base))).unwrap();
    let KeyringSettings::Hierarchy(h) = &config.tables[0].keyring else {
        panic!("not hierarchy: {:?}", config.tables[0].keyring)
    };
    assert_eq!((h.logical_name.as_str(), h.branch_key_id.as_deref()), ("Keys", None));
    assert_eq!(h.cache, CacheSettings::default());
    let full = format!(
        "{base}\nkey_store_logical_name = \"L\"\nbranch_key_id = \"bk\"\ncache_ttl_seconds = 5\ncache_max_entries = 7"
    );
    let config = Config::parse(Path::new("x.toml"), &format!("{AWS}{}", table("", &full))).unwrap();
    let KeyringSettings::Hierarchy(h) = &config.tables[0].keyring else {
        panic!()
    };
    assert_eq!((h.logical_name.as_str(), h.branch_key_id.as_deref()), ("L", Some("bk")));
    assert_eq!((h.cache.ttl.as_secs(), h.cache.max_entries), (5, 7));
    let e = err(&format!(
        "{AWS}{}",
        table("", &format!("{base}\ncache_ttl_seconds = 0"))
    ));
    assert!(e.contains("keyring.cache_ttl_seconds"), "{e}");
    let e = err(&format!(
        "{AWS}{}",
        table("", &base.replace("key_store_table = \"Keys\"", ""))
    ));
    assert!(e.contains("keyring.key_store_table"), "{e}");
    let e = err(&format!(
        "{AWS}{}",
        table("", &base.replace(mrk, "arn:aws:kms:us-east-1:111122223333:alias/keys"))
    ));
    assert!(e.contains("keyring.key_arn"), "{e}");
}

#[test]
fn valid_config_gets_defaults() {
    let config = Config::parse(Path::new("x.toml"), &table("", &raw_aes())).unwrap();
    let t = config.table("Customers").unwrap();
    assert_eq!(t.dbe.logical_table_name, "Customers");
    assert_eq!(t.dbe.algorithm_suite, AlgorithmSuite::EcdsaP384);
    assert_eq!(t.dbe.attribute_actions["ssn"], CryptoAction::EncryptAndSign);
    assert!(matches!(t.keyring, KeyringSettings::RawAes { ref key, .. } if key[1] == 1));
}

#[test]
fn suite_and_logical_name_are_read() {
    let text = table("logical_name = \"Cust\"\nalgorithm_suite = \"0x6700\"", &raw_aes());
    let config = Config::parse(Path::new("x.toml"), &text).unwrap();
    let t = &config.tables[0];
    assert_eq!(t.dbe.logical_table_name, "Cust");
    assert_eq!(t.dbe.algorithm_suite, AlgorithmSuite::HmacOnly);
}

#[test]
fn errors_name_file_table_and_field() {
    let e = err(&table("algorithm_suite = \"0x6702\"", &raw_aes()));
    assert!(
        e.contains("ddbguard.toml") && e.contains("\"Customers\"") && e.contains("algorithm_suite"),
        "{e}"
    );

    let e = err(&table("", &raw_aes()).replace("\"ENCRYPT_AND_SIGN\"", "\"ENCRYPT\""));
    assert!(e.contains("attribute_actions.ssn") && e.contains("ENCRYPT"), "{e}");

    let e = err(&table(
        "",
        "kind = \"raw-aes\"\nkey_namespace = \"ops\"\nkey_name = \"k\"\nkey_base64 = \"AAAA\"",
    ));
    assert!(e.contains("keyring.key_base64") && e.contains("32 bytes"), "{e}");

    let e = err(&table("", "kind = \"kms\""));
    assert!(e.contains("keyring.kind"), "{e}");

    let e = err(&table("colour = \"blue\"", &raw_aes()));
    assert!(e.contains("ddbguard.toml") && e.contains("colour"), "{e}");
}

#[test]
fn key_bytes_never_appear_in_errors_or_debug() {
    let config = Config::parse(Path::new("x.toml"), &table("", &raw_aes())).unwrap();
    let debug = format!("{config:?}");
    assert!(debug.contains("<redacted>") && !debug.contains(KEY), "{debug}");
    let bad = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    let e = err(&table("", &raw_aes().replace(KEY, &format!("{bad}!"))));
    assert!(!e.contains(bad), "{e}");
}

const AWS: &str = "[aws]\nregion = \"ap-southeast-2\"\nregions = [\"us-east-1\", \"ap-southeast-2\"]\n";
const MRK: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab";

#[test]
fn kms_keyrings_and_aws_section() {
    let text = format!(
        "{AWS}{}",
        table("", &format!("kind = \"kms-mrk\"\nkey_arn = \"{MRK}\""))
    );
    let config = Config::parse(Path::new("x.toml"), &text).unwrap();
    let aws = config.aws_settings(None).unwrap();
    assert_eq!(aws.region, "ap-southeast-2");
    assert_eq!(aws.regions, ["us-east-1", "ap-southeast-2"]);
    assert_eq!(aws.kms_requests_per_second, DEFAULT_KMS_REQUESTS_PER_SECOND);
    assert!(
        matches!(&config.tables[0].keyring, KeyringSettings::KmsMrk { key_arn } if key_arn.to_string() == MRK && key_arn.is_mrk())
    );

    let discovery =
        "kind = \"kms-mrk-discovery\"\ndiscovery_filter = { partition = \"aws\", accounts = [\"111122223333\"] }";
    let config = Config::parse(Path::new("x.toml"), &format!("{AWS}{}", table("", discovery))).unwrap();
    assert!(
        matches!(&config.tables[0].keyring, KeyringSettings::KmsMrkDiscovery { filter: Some(f) } if f.accounts.len() == 1)
    );
}

#[test]
fn kms_config_errors_are_precise() {
    let alias = "arn:aws:kms:us-east-1:111122223333:alias/customers";
    let e = err(&format!(
        "{AWS}{}",
        table("", &format!("kind = \"kms-mrk\"\nkey_arn = \"{alias}\""))
    ));
    assert!(e.contains("keyring.key_arn") && e.contains("alias"), "{e}");

    // Without `[aws]` a KMS keyring is valid: the local region may come from the environment, and only its
    // absence there too is an error (when the binary resolves it).
    let config = Config::parse(
        Path::new("ddbguard.toml"),
        &table("", &format!("kind = \"kms-mrk\"\nkey_arn = \"{MRK}\"")),
    )
    .unwrap();
    let e = config.aws_settings(None).unwrap_err().to_string();
    assert!(
        e.contains("ddbguard.toml") && e.contains("[aws]") && e.contains("`region`"),
        "{e}"
    );
    assert_eq!(
        config.aws_settings(Some("us-east-1".into())).unwrap().region,
        "us-east-1"
    );

    let e = err(&format!(
        "[aws]\nregion = \"eu-west-1\"\nregions = [\"us-east-1\"]\n{}",
        table("", &raw_aes())
    ));
    assert!(
        e.contains("[aws]") && e.contains("regions") && e.contains("eu-west-1"),
        "{e}"
    );

    let e = err(&format!("[aws]\nregion = \"US East\"\n{}", table("", &raw_aes())));
    assert!(e.contains("region"), "{e}");
}

#[test]
fn duplicate_and_unknown_tables_are_reported() {
    let text = format!("{}{}", table("", &raw_aes()), table("", &raw_aes()));
    assert!(err(&text).contains("configured twice"));
    let config = Config::parse(Path::new("x.toml"), &table("", &raw_aes())).unwrap();
    let e = config.table("Orders").unwrap_err().to_string();
    assert!(e.contains("Orders") && e.contains("Customers"), "{e}");
}

#[test]
fn key_file_is_read_by_load_and_resolved_beside_the_config() {
    let dir = std::env::temp_dir().join(format!("ddbguard-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("key.b64"), format!("{KEY}\n")).unwrap();
    let keyring = "kind = \"raw-aes\"\nkey_namespace = \"ops\"\nkey_name = \"k\"\nkey_file = \"key.b64\"";
    std::fs::write(dir.join("c.toml"), table("", keyring)).unwrap();
    let config = Config::load(Some(&dir.join("c.toml")), &no_env).unwrap();
    assert!(matches!(config.tables[0].keyring, KeyringSettings::RawAes { ref key, .. } if key[31] == 31));
    // A missing key file is reported with the table and the field that name it.
    std::fs::write(dir.join("d.toml"), table("", &keyring.replace("key.b64", "gone.b64"))).unwrap();
    let e = Config::load(Some(&dir.join("d.toml")), &no_env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"Customers\"") && e.contains("keyring.key_file") && e.contains("gone.b64"),
        "{e}"
    );
    // Validation itself reads nothing: without the loaded contents the key is not there.
    let e = err(&table("", keyring));
    assert!(e.contains("keyring.key_file") && e.contains("not read"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn verify_section_defaults() {
    let config = Config::parse(Path::new("x.toml"), &table("", &raw_aes())).unwrap();
    assert_eq!(config.verify.lease_table, DEFAULT_LEASE_TABLE);
    assert_eq!(config.verify.sample_rate, 1.0);
    // <host>-<pid>-<8 random hex digits>: unique even where hosts and pids repeat.
    let id = &config.verify.worker_id;
    let (rest, random) = id.rsplit_once('-').expect("a random suffix");
    assert!(rest.ends_with(&format!("-{}", std::process::id())), "{id}");
    assert!(
        random.len() == 8 && random.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_ne!(default_worker_id(), default_worker_id());
    assert_eq!(config.verify.lease_table_for("Customers"), "ddbguard-leases-Customers");
    let t = &config.tables[0];
    assert!(t.required_encrypted.is_empty());
    assert_eq!(t.require_suite, None);
}

#[test]
fn verify_section_and_table_policy_are_read() {
    let text = format!(
        "[verify]\nlease_table = \"ops.leases\"\nworker_id = \"task-1\"\nsample_rate = 0.25\n\
         quarantine_table = \"ops.quarantine\"\nquarantine_retention = \"7d\"\ncanary_interval = \"2s\"\n\
         canary_slo = \"15s\"\ncanary_prefix = \"canary/\"\ncanary_ttl_attribute = \"expires\"\n{}",
        table(
            "required_encrypted = [\"ssn\", \"dob\"]\nrequire_suite = \"0x6701\"",
            &raw_aes()
        )
    );
    let config = Config::parse(Path::new("x.toml"), &text).unwrap();
    assert_eq!(
        config.verify,
        VerifySettings {
            lease_table: "ops.leases".into(),
            worker_id: "task-1".into(),
            sample_rate: 0.25,
            quarantine: Some(ddbguard_verify::quarantine::QuarantineSettings {
                table: "ops.quarantine".into(),
                retention: std::time::Duration::from_secs(7 * 86_400),
                ..Default::default()
            }),
            quarantine_table: "ops.quarantine".into(),
            canaries: Some(ddbguard_verify::canary::CanarySettings {
                interval: std::time::Duration::from_secs(2),
                slo: std::time::Duration::from_secs(15),
                prefix: "canary/".into(),
                origins: Vec::new(),
                ttl_attribute: Some("expires".into()),
                ttl: ddbguard_verify::canary::DEFAULT_TTL,
            }),
        }
    );
    let t = &config.tables[0];
    assert_eq!(
        t.required_encrypted,
        BTreeSet::from(["dob".to_owned(), "ssn".to_owned()])
    );
    assert_eq!(t.require_suite, Some(AlgorithmSuite::EcdsaP384));
}

#[test]
fn verify_errors_name_file_section_and_field() {
    let with = |verify: &str| err(&format!("[verify]\n{verify}\n{}", table("", &raw_aes())));

    let e = with("sample_rate = 1.5");
    assert!(
        e.contains("ddbguard.toml") && e.contains("[verify]") && e.contains("sample_rate") && e.contains("1.5"),
        "{e}"
    );
    let e = with("sample_rate = nan");
    assert!(e.contains("[verify]") && e.contains("sample_rate"), "{e}");
    let e = with("lease_table = \"leases table\"");
    assert!(e.contains("[verify]") && e.contains("lease_table"), "{e}");
    let e = with("lease_table = \"ab\"");
    assert!(e.contains("lease_table") && e.contains("3 to 200"), "{e}");
    let e = with("quarantine_retention = \"30\"");
    assert!(e.contains("[verify]") && e.contains("quarantine_retention"), "{e}");
    let e = with("quarantine_table = \"a b\"");
    assert!(e.contains("[verify]") && e.contains("quarantine_table"), "{e}");
    let e = with("worker_id = \" \"");
    assert!(e.contains("[verify]") && e.contains("worker_id"), "{e}");
    let e = with("canary_interval = \"10\"");
    assert!(
        e.contains("[verify]") && e.contains("canary_interval") && e.contains("\"10s\""),
        "{e}"
    );
    let e = with("canary_interval = \"30s\"\ncanary_slo = \"20s\"");
    assert!(
        e.contains("canary_slo") && e.contains("longer than canary_interval"),
        "{e}"
    );
    let e = with("canary_prefix = \"\"");
    assert!(e.contains("canary_prefix"), "{e}");
    let e = with("canary_ttl = \"5m\"");
    assert!(e.contains("canary_ttl") && e.contains("3600s"), "{e}");
    let e = with("lease = \"x\"");
    assert!(e.contains("ddbguard.toml") && e.contains("lease"), "{e}");
}

#[test]
fn table_verify_policy_errors_name_table_and_field() {
    let e = err(&table("require_suite = \"0x6799\"", &raw_aes()));
    assert!(
        e.contains("ddbguard.toml") && e.contains("\"Customers\"") && e.contains("require_suite"),
        "{e}"
    );
    let e = err(&table("required_encrypted = [\"pk\"]", &raw_aes()));
    assert!(
        e.contains("\"Customers\"") && e.contains("required_encrypted") && e.contains("primary key"),
        "{e}"
    );
    let e = err(&table("required_encrypted = [\"sk\"]", &raw_aes()));
    assert!(e.contains("required_encrypted"), "{e}");
    let e = err(&table("required_encrypted = [\"ssn\", \"ssn\"]", &raw_aes()));
    assert!(e.contains("required_encrypted") && e.contains("twice"), "{e}");
    let e = err(&table("required_encrypted = [\"\"]", &raw_aes()));
    assert!(e.contains("required_encrypted") && e.contains("empty"), "{e}");
    let e = err(&table("", &raw_aes())
        .replace(
            "ssn = \"ENCRYPT_AND_SIGN\"",
            "ssn = \"ENCRYPT_AND_SIGN\"\nzip = \"SIGN_ONLY\"",
        )
        .replace(
            "[tables.attribute_actions]",
            "required_encrypted = [\"zip\"]\n[tables.attribute_actions]",
        ));
    assert!(
        e.contains("required_encrypted") && e.contains("zip") && e.contains("SIGN_ONLY"),
        "{e}"
    );
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// An environment lookup over fixed pairs, so tests never touch the process environment.
fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    move |name| map.get(name).cloned()
}

#[test]
fn variables_are_expanded_before_parsing() {
    let text = format!(
        "[aws]\nregion = \"${{REGION}}\"\nregions = [\"us-east-1\", \"ap-southeast-2\"]\n{}",
        table("", &format!("kind = \"kms-mrk\"\nkey_arn = \"${{KEY_ARN:-{MRK}}}\""))
    )
    .replace("name = \"Customers\"", "name = \"${TABLE:-Customers}\"");
    let env = env_of(&[
        (INLINE_CONFIG_VAR, &text),
        ("REGION", "ap-southeast-2"),
        ("TABLE", "Orders"),
    ]);
    let config = Config::load(None, &env).unwrap();
    assert_eq!(config.origin, ConfigSource::Inline);
    assert_eq!(config.aws.region.as_deref(), Some("ap-southeast-2"));
    assert_eq!(config.tables[0].name, "Orders");
    assert_eq!(
        config.tables[0].keyring.kms_key().map(ToString::to_string).as_deref(),
        Some(MRK)
    );
}

#[test]
fn an_unset_variable_is_an_error_naming_it_the_source_and_the_line() {
    let text = format!("[aws]\nregion = \"${{REGION}}\"\n{}", table("", &raw_aes()));
    let e = Config::load(None, &env_of(&[(INLINE_CONFIG_VAR, &text)])).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Expand { error, .. } if error.line == 2),
        "{e:?}"
    );
    let e = e.to_string();
    assert!(
        e.contains("DDBGUARD_CONFIG_TOML") && e.contains("line 2") && e.contains("`REGION`"),
        "{e}"
    );

    let e = Config::parse(Path::new("ddbguard.toml"), &text)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("config file ddbguard.toml: line 2:") && e.contains("`REGION`"),
        "{e}"
    );
}

#[test]
fn inline_config_and_file_are_exclusive() {
    let text = table("", &raw_aes());
    let env = env_of(&[(INLINE_CONFIG_VAR, &text)]);
    let config = Config::load(None, &env).unwrap();
    assert_eq!(config.tables[0].name, "Customers");
    // Errors in inline text name the variable instead of a file.
    let bad = env_of(&[(INLINE_CONFIG_VAR, "[aws]\nregion = \"US East\"\n")]);
    let e = Config::load(None, &bad).unwrap_err().to_string();
    assert!(
        e.starts_with("config in $DDBGUARD_CONFIG_TOML: [aws]: field `region`"),
        "{e}"
    );
    // Both given: an error, whichever would be meant; neither: an error naming all three ways.
    let e = Config::load(Some(Path::new("ddbguard.toml")), &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ddbguard.toml") && e.contains(INLINE_CONFIG_VAR), "{e}");
    let e = Config::load(None, &no_env).unwrap_err().to_string();
    assert!(
        e.contains("--config") && e.contains("DDBGUARD_CONFIG") && e.contains(INLINE_CONFIG_VAR),
        "{e}"
    );
    // An empty variable counts as unset (a task definition that declares it without a value).
    let empty = env_of(&[(INLINE_CONFIG_VAR, "")]);
    assert!(matches!(Config::load(None, &empty), Err(ConfigError::Missing)));
}

#[test]
fn unreadable_config_file_names_it() {
    let e = Config::load(Some(Path::new("/nonexistent/ddbguard.toml")), &no_env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read config file /nonexistent/ddbguard.toml"), "{e}");
}

#[test]
fn region_falls_back_to_the_chain_and_is_named_when_missing() {
    let text = format!(
        "[aws]\nregions = [\"us-east-1\", \"ap-southeast-2\"]\n{}",
        table("", &format!("kind = \"kms-mrk\"\nkey_arn = \"{MRK}\""))
    );
    let config = Config::parse(Path::new("ddbguard.toml"), &text).unwrap();
    assert_eq!(config.aws.region, None);
    let aws = config.aws_settings(Some("ap-southeast-2".into())).unwrap();
    assert_eq!((aws.region.as_str(), aws.regions.len()), ("ap-southeast-2", 2));
    let e = config.aws_settings(None).unwrap_err().to_string();
    assert!(
        e.contains("config file ddbguard.toml: [aws]: field `region`") && e.contains("AWS_REGION"),
        "{e}"
    );
}

const SQL: &str = r#"
[sql]
primary = "postgresql://app@primary.example:5432/app"
home_region = "us-east-1"
[sql.replicas]
"ap-southeast-2" = "postgresql://app@reader.example:5432/app"

[[sql_tables]]
name = "patients"
primary_key = ["id"]
cursor_column = "updated_at"
[sql_tables.columns]
ssn = { encoding = "base64" }
scan = { encoding = "bytea" }
[sql_tables.encryption_context]
table = "patients"
column = "{column}"
id = "{row.id}"
[sql_tables.keyring]
kind = "kms-mrk"
key_arn = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"
"#;

#[test]
fn sql_tables_are_typed() {
    let config = Config::parse(Path::new("ddbguard.toml"), SQL).unwrap();
    let (sql, table) = config.sql_table("patients").unwrap();
    assert_eq!(
        sql.reader_for("ap-southeast-2"),
        Some("postgresql://app@reader.example:5432/app")
    );
    assert_eq!(table.table.primary_key, ["id"]);
    let columns: Vec<_> = table
        .table
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.encoding))
        .collect();
    assert_eq!(
        columns,
        [
            ("scan", ddbguard_sql::Encoding::Bytea),
            ("ssn", ddbguard_sql::Encoding::Base64)
        ]
    );
    assert_eq!(table.table.cursor_column.as_deref(), Some("updated_at"));
    let row = [("id".to_owned(), Some("42".to_owned()))].into();
    let ctx = table.table.expected_context("ssn", &row).unwrap();
    assert_eq!(ctx["id"], "42");
    assert_eq!(ctx["column"], "ssn");
    assert!(matches!(table.keyring, KeyringSettings::KmsMrk { .. }));
    assert!(config.sql_table("nope").unwrap_err().to_string().contains("patients"));
}

#[test]
fn sql_config_errors_name_the_field() {
    let e = err(&SQL.replace("app@primary", "app:pw@primary"));
    assert!(e.contains("[sql]: field `primary`") && e.contains("password"), "{e}");
    let e = err(&SQL.replace("\"base64\"", "\"hex\""));
    assert!(
        e.contains("sql table \"patients\": field `columns.ssn.encoding`"),
        "{e}"
    );
    let e = err(&SQL.replace("{row.id}", "{row.ssn}"));
    assert!(
        e.contains("encryption_context.id") && e.contains("protected column"),
        "{e}"
    );
    let e = err(&SQL.replace("table = \"patients\"", "aws-crypto-x = \"1\""));
    assert!(e.contains("reserved"), "{e}");
    let no_section = SQL.split("[[sql_tables]]").nth(1).unwrap();
    let e = err(&format!("[[sql_tables]]{no_section}"));
    assert!(e.contains("[sql]"), "{e}");
}

fn kms_mrk_with(legacy: &str) -> String {
    table(
        "",
        &format!("kind = \"kms-mrk\"\nkey_arn = \"{MRK}\"\n[tables.legacy]\n{legacy}"),
    )
}

#[test]
fn legacy_section_defaults_to_the_keyring_key_and_the_table_actions() {
    use ddbguard_ddbec::LegacyAction;

    let config = Config::parse(Path::new("x.toml"), &kms_mrk_with("allowed = true")).unwrap();
    let legacy = config.tables[0].legacy.as_ref().unwrap();
    assert!(matches!(&legacy.provider, LegacyProviderSettings::AwsKms { key_arn } if key_arn.to_string() == MRK));
    assert_eq!(legacy.actions.action("ssn"), LegacyAction::EncryptAndSign);
    assert_eq!(legacy.actions.action("pk"), LegacyAction::SignOnly);
    assert_eq!(legacy.actions.action("unlisted"), LegacyAction::DoNothing);

    // Without the section, or with `allowed = false`, legacy items stay `legacy_format`.
    let config = Config::parse(Path::new("x.toml"), &table("", &raw_aes())).unwrap();
    assert!(config.tables[0].legacy.is_none());
    let config = Config::parse(Path::new("x.toml"), &kms_mrk_with("allowed = false")).unwrap();
    assert!(config.tables[0].legacy.is_none());
}

#[test]
fn legacy_key_and_actions_are_overridable() {
    use ddbguard_ddbec::LegacyAction;

    let other = MRK.replace("mrk-1234", "mrk-9999");
    let text = kms_mrk_with(&format!(
        "allowed = true\nkey_arn = \"{other}\"\ndefault_action = \"ENCRYPT_AND_SIGN\"\n\
         [tables.legacy.attribute_actions]\nzip = \"SIGN_ONLY\"\nsk = \"ENCRYPT_AND_SIGN\""
    ));
    let config = Config::parse(Path::new("x.toml"), &text).unwrap();
    let legacy = config.tables[0].legacy.as_ref().unwrap();
    assert!(matches!(&legacy.provider, LegacyProviderSettings::AwsKms { key_arn } if key_arn.to_string() == other));
    assert_eq!(legacy.actions.action("zip"), LegacyAction::SignOnly);
    assert_eq!(legacy.actions.action("ssn"), LegacyAction::EncryptAndSign);
    // Key attributes are never encrypted by the legacy clients, whatever is listed.
    assert_eq!(legacy.actions.action("sk"), LegacyAction::SignOnly);
    assert_eq!(
        legacy.actions.action("pk"),
        LegacyAction::EncryptAndSign.min(LegacyAction::SignOnly)
    );
}

#[test]
fn legacy_errors_name_table_and_field() {
    let cases = [
        (
            "allowed = true\nprovider = \"metastore\"",
            "legacy.provider",
            "metastore",
        ),
        (
            "allowed = true\ndefault_action = \"ENCRYPT\"",
            "legacy.default_action",
            "ENCRYPT",
        ),
        (
            "allowed = true\n[tables.legacy.attribute_actions]\nzip = \"SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT\"",
            "legacy.attribute_actions.zip",
            "SIGN_ONLY",
        ),
        ("allowed = true\nkey_arn = \"alias/orders\"", "legacy.key_arn", "alias"),
        (
            "allowed = true\nprovider = \"wrapped\"",
            "legacy.wrapping_key_file",
            "required",
        ),
        (
            "allowed = true\nsigning_key_file = \"s.b64\"",
            "legacy.signing_key_file",
            "aws-kms",
        ),
        (
            "allowed = true\nprovider = \"static\"\nkey_arn = \"x\"",
            "legacy.key_arn",
            "static",
        ),
        ("allowed = yes", "allowed", ""),
    ];
    for (section, field, detail) in cases {
        let e = err(&kms_mrk_with(section));
        assert!(
            e.contains("ddbguard.toml") && e.contains(field) && e.contains(detail),
            "{section}: {e}"
        );
        if field.starts_with("legacy.") {
            assert!(e.contains("\"Customers\""), "{e}");
        }
    }
    // A keyring without a KMS key leaves nothing to default to.
    let e = err(&table("", &format!("{}\n[tables.legacy]\nallowed = true", raw_aes())));
    assert!(
        e.contains("\"Customers\"") && e.contains("legacy.key_arn") && e.contains("names no KMS key"),
        "{e}"
    );
}

#[test]
fn legacy_most_recent_reads_its_metastore_under_the_keyring_key_by_default() {
    let text = kms_mrk_with(
        "allowed = true\nprovider = \"most-recent\"\nmetastore_table = \"orders-meta\"\nmaterial_name = \"orders\"",
    );
    let config = Config::parse(Path::new("x.toml"), &text).unwrap();
    let legacy = config.tables[0].legacy.as_ref().unwrap();
    let LegacyProviderSettings::MostRecent {
        metastore_table,
        material_name,
        metastore_key_arn,
    } = &legacy.provider
    else {
        panic!("{:?}", legacy.provider)
    };
    assert_eq!(
        (metastore_table.as_str(), material_name.as_str()),
        ("orders-meta", "orders")
    );
    assert_eq!(metastore_key_arn.to_string(), MRK);
    assert!(legacy.provider.needs_aws());

    let other = MRK.replace("mrk-1234", "mrk-9999");
    let text = kms_mrk_with(&format!(
        "allowed = true\nprovider = \"most-recent\"\nmetastore_table = \"m\"\nmaterial_name = \"n\"\n\
         metastore_key_arn = \"{other}\""
    ));
    let config = Config::parse(Path::new("x.toml"), &text).unwrap();
    assert!(matches!(
        &config.tables[0].legacy.as_ref().unwrap().provider,
        LegacyProviderSettings::MostRecent { metastore_key_arn, .. } if metastore_key_arn.to_string() == other
    ));
}

#[test]
fn legacy_most_recent_errors_name_table_and_field() {
    let most_recent = "allowed = true\nprovider = \"most-recent\"";
    let full = format!("{most_recent}\nmetastore_table = \"m\"\nmaterial_name = \"n\"");
    let cases = [
        (most_recent.to_owned(), "legacy.metastore_table", "required"),
        (
            format!("{most_recent}\nmetastore_table = \"m\""),
            "legacy.material_name",
            "amzn-ddb-meta-id",
        ),
        (
            format!("{most_recent}\nmetastore_table = \" \"\nmaterial_name = \"n\""),
            "legacy.metastore_table",
            "empty",
        ),
        (
            format!("{full}\nmetastore_key_arn = \"alias/meta\""),
            "legacy.metastore_key_arn",
            "alias",
        ),
        (format!("{full}\nkey_arn = \"{MRK}\""), "legacy.key_arn", "most-recent"),
        (
            format!("{full}\nsigning_key_file = \"s.b64\""),
            "legacy.signing_key_file",
            "most-recent",
        ),
        (
            "allowed = true\nmetastore_table = \"m\"".to_owned(),
            "legacy.metastore_table",
            "aws-kms",
        ),
        (
            "allowed = true\nprovider = \"static\"\nmaterial_name = \"n\"".to_owned(),
            "legacy.material_name",
            "static",
        ),
        (
            "allowed = true\nprovider = \"metastore\"".to_owned(),
            "legacy.provider",
            "most-recent",
        ),
    ];
    for (section, field, detail) in cases {
        let e = err(&kms_mrk_with(&section));
        assert!(
            e.contains("ddbguard.toml") && e.contains("\"Customers\"") && e.contains(field) && e.contains(detail),
            "{section}: {e}"
        );
    }
    // A keyring without a KMS key leaves the metastore's key to be named.
    let e = err(&table("", &format!("{}\n[tables.legacy]\n{full}", raw_aes())));
    assert!(
        e.contains("legacy.metastore_key_arn") && e.contains("names no KMS key"),
        "{e}"
    );
}

#[test]
fn legacy_key_files_are_read_by_load() {
    let dir = std::env::temp_dir().join(format!("ddbguard-legacy-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("enc.b64"), format!("{KEY}\n")).unwrap();
    std::fs::write(dir.join("sign.b64"), format!("{KEY}\n")).unwrap();
    let write = |name: &str, legacy: &str| {
        let text = table("", &format!("{}\n[tables.legacy]\nallowed = true\n{legacy}", raw_aes()));
        std::fs::write(dir.join(name), text).unwrap();
        Config::load(Some(&dir.join(name)), &no_env)
    };
    let config = write(
        "s.toml",
        "provider = \"static\"\nencryption_key_file = \"enc.b64\"\nsigning_key_file = \"sign.b64\"",
    )
    .unwrap();
    let legacy = config.tables[0].legacy.as_ref().unwrap();
    assert!(matches!(legacy.provider, LegacyProviderSettings::Static(_)));
    // Key material never reaches Debug output.
    assert!(!format!("{config:?}").contains(KEY), "{config:?}");
    let config = write(
        "w.toml",
        "provider = \"wrapped\"\nwrapping_key_file = \"enc.b64\"\nsigning_key_file = \"sign.b64\"",
    )
    .unwrap();
    assert!(matches!(
        config.tables[0].legacy.as_ref().unwrap().provider,
        LegacyProviderSettings::Wrapped(_)
    ));

    // A static provider must have a content key when the actions encrypt; a missing file names itself.
    let e = write("n.toml", "provider = \"static\"\nsigning_key_file = \"sign.b64\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("legacy.encryption_key_file") && e.contains("encrypt"), "{e}");
    let e = write(
        "g.toml",
        "provider = \"wrapped\"\nwrapping_key_file = \"gone.b64\"\nsigning_key_file = \"sign.b64\"",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("\"Customers\"") && e.contains("legacy.wrapping_key_file") && e.contains("gone.b64"),
        "{e}"
    );
    std::fs::write(dir.join("bad.b64"), "not base64!").unwrap();
    let e = write(
        "b.toml",
        "provider = \"wrapped\"\nwrapping_key_file = \"enc.b64\"\nsigning_key_file = \"bad.b64\"",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("legacy.signing_key_file") && e.contains("base64") && !e.contains("not base64!"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The legacy client's official vectors (vendored in crates/ddbec): their keys and one RSA-wrapped item file.
const VECTOR_KEYS: &str = include_str!("../../../ddbec/tests/data/ddbec/encrypted_item/keys.json");
const VECTOR_RSA_ITEMS: &str =
    include_str!("../../../ddbec/tests/data/ddbec/encrypted_item/ciphertext/python/wrapped-rsa-rsa-1.json");

/// A vector key's DER bytes.
fn vector_key(name: &str) -> Vec<u8> {
    use base64::Engine as _;
    let keys: serde_json::Value = serde_json::from_str(VECTOR_KEYS).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(keys[name]["material"].as_str().unwrap())
        .unwrap()
}

/// A directory with the vectors' RSA keys in PEM and DER, removed on drop.
struct RsaKeyDir(std::path::PathBuf);

impl RsaKeyDir {
    fn new(test: &str) -> RsaKeyDir {
        let dir = std::env::temp_dir().join(format!("ddbguard-legacy-rsa-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = |label, der: &[u8]| pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der).unwrap();
        let private = vector_key("rsaEncPriv");
        let public = vector_key("rsaSignPub");
        std::fs::write(dir.join("unwrap.der"), &private).unwrap();
        std::fs::write(dir.join("unwrap.pem"), pem("PRIVATE KEY", &private)).unwrap();
        std::fs::write(dir.join("unwrap-pkcs1.pem"), pem("RSA PRIVATE KEY", &private)).unwrap();
        std::fs::write(dir.join("unwrap-encrypted.pem"), pem("ENCRYPTED PRIVATE KEY", &private)).unwrap();
        std::fs::write(dir.join("empty.der"), b"\n").unwrap();
        std::fs::write(dir.join("verify.der"), &public).unwrap();
        std::fs::write(dir.join("verify.pem"), pem("PUBLIC KEY", &public)).unwrap();
        // The same key as PKCS#1 (`openssl rsa -RSAPublicKey_out`): the BIT STRING inside the RSA-2048
        // SubjectPublicKeyInfo, after its fixed 24-byte prefix.
        let (prefix, pkcs1) = public.split_at(24);
        assert_eq!(prefix[..4], [0x30, 0x82, 0x01, 0x22]);
        assert_eq!(prefix[19..], [0x03, 0x82, 0x01, 0x0f, 0x00]);
        std::fs::write(dir.join("verify-pkcs1.pem"), pem("RSA PUBLIC KEY", pkcs1)).unwrap();
        std::fs::write(dir.join("garbage.der"), [0x30, 0x03, 0x02, 0x01, 0x05]).unwrap();
        std::fs::write(dir.join("enc.b64"), format!("{KEY}\n")).unwrap();
        std::fs::write(dir.join("sign.b64"), format!("{KEY}\n")).unwrap();
        RsaKeyDir(dir)
    }

    /// Loads a config of table `TableName` (the vectors' table: `hashKey`, `rangeKey`, both signed) with this
    /// `[tables.legacy]` body.
    fn load(&self, name: &str, legacy: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[[tables]]\nname = \"TableName\"\npartition_key = \"hashKey\"\nsort_key = \"rangeKey\"\n\
             [tables.attribute_actions]\nhashKey = \"SIGN_ONLY\"\nrangeKey = \"SIGN_ONLY\"\n\
             [tables.keyring]\n{}\n[tables.legacy]\nallowed = true\n{legacy}",
            raw_aes()
        );
        std::fs::write(self.0.join(name), text).unwrap();
        Config::load(Some(&self.0.join(name)), &no_env)
    }
}

impl Drop for RsaKeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn legacy_rsa_keys_are_read_from_pem_or_der() {
    let dir = RsaKeyDir::new("formats");
    for (unwrap, verify) in [
        ("unwrap.pem", "verify.pem"),
        ("unwrap.der", "verify.der"),
        ("unwrap.pem", "verify-pkcs1.pem"),
    ] {
        let config = dir
            .load(
                "w.toml",
                &format!(
                    "provider = \"wrapped\"\nrsa_unwrapping_key_file = \"{unwrap}\"\n\
                     rsa_verification_key_file = \"{verify}\""
                ),
            )
            .unwrap();
        let legacy = config.tables[0].legacy.as_ref().unwrap();
        assert!(matches!(legacy.provider, LegacyProviderSettings::Wrapped(_)));
        // Key material never reaches Debug output.
        let debug = format!("{config:?}");
        let keys: serde_json::Value = serde_json::from_str(VECTOR_KEYS).unwrap();
        for name in ["rsaEncPriv", "rsaSignPub"] {
            let b64 = keys[name]["material"].as_str().unwrap();
            assert!(!debug.contains(&b64[40..80]), "{debug}");
        }
    }
    // AESWrap with an RSA verification key, and the static provider with one.
    let config = dir
        .load(
            "a.toml",
            "provider = \"wrapped\"\nwrapping_key_file = \"enc.b64\"\nrsa_verification_key_file = \"verify.pem\"",
        )
        .unwrap();
    assert!(matches!(
        config.tables[0].legacy.as_ref().unwrap().provider,
        LegacyProviderSettings::Wrapped(_)
    ));
    let config = dir
        .load(
            "s.toml",
            "provider = \"static\"\nencryption_key_file = \"enc.b64\"\nrsa_verification_key_file = \"verify.der\"",
        )
        .unwrap();
    assert!(matches!(
        config.tables[0].legacy.as_ref().unwrap().provider,
        LegacyProviderSettings::Static(_)
    ));
}

#[test]
fn legacy_rsa_key_errors_name_table_field_and_file() {
    let dir = RsaKeyDir::new("errors");
    let cases = [
        (
            "provider = \"wrapped\"\nrsa_unwrapping_key_file = \"unwrap-pkcs1.pem\"\n\
             signing_key_file = \"sign.b64\"",
            "legacy.rsa_unwrapping_key_file",
            "unwrap-pkcs1.pem: is a PKCS#1 RSA private key",
        ),
        (
            "provider = \"wrapped\"\nrsa_unwrapping_key_file = \"unwrap-encrypted.pem\"\n\
             signing_key_file = \"sign.b64\"",
            "legacy.rsa_unwrapping_key_file",
            "unwrap-encrypted.pem: is an encrypted PKCS#8 key",
        ),
        (
            "provider = \"wrapped\"\nwrapping_key_file = \"enc.b64\"\nrsa_verification_key_file = \"empty.der\"",
            "legacy.rsa_verification_key_file",
            "empty.der: is empty",
        ),
        (
            "provider = \"wrapped\"\nrsa_unwrapping_key_file = \"verify.pem\"\nsigning_key_file = \"sign.b64\"",
            "legacy.rsa_unwrapping_key_file",
            "verify.pem: is a PEM \"PUBLIC KEY\"",
        ),
        (
            "provider = \"wrapped\"\nrsa_unwrapping_key_file = \"verify.der\"\nsigning_key_file = \"sign.b64\"",
            "legacy.rsa_unwrapping_key_file",
            "verify.der: invalid key: not an RSA private key",
        ),
        (
            "provider = \"wrapped\"\nwrapping_key_file = \"enc.b64\"\nrsa_verification_key_file = \"unwrap.der\"",
            "legacy.rsa_verification_key_file",
            "unwrap.der: invalid key: not an RSA public key",
        ),
        (
            "provider = \"static\"\nencryption_key_file = \"enc.b64\"\nrsa_verification_key_file = \"garbage.der\"",
            "legacy.rsa_verification_key_file",
            "garbage.der",
        ),
        (
            "provider = \"wrapped\"\nwrapping_key_file = \"enc.b64\"\nrsa_unwrapping_key_file = \"unwrap.pem\"\n\
             signing_key_file = \"sign.b64\"",
            "legacy.wrapping_key_file",
            "not both",
        ),
        (
            "provider = \"static\"\nencryption_key_file = \"enc.b64\"\nsigning_key_file = \"sign.b64\"\n\
             rsa_verification_key_file = \"verify.pem\"",
            "legacy.signing_key_file",
            "not both",
        ),
        (
            "provider = \"static\"\nencryption_key_file = \"enc.b64\"\nrsa_unwrapping_key_file = \"unwrap.pem\"\n\
             signing_key_file = \"sign.b64\"",
            "legacy.rsa_unwrapping_key_file",
            "static",
        ),
        (
            "rsa_verification_key_file = \"verify.pem\"",
            "legacy.rsa_verification_key_file",
            "aws-kms",
        ),
        (
            "provider = \"wrapped\"\nrsa_unwrapping_key_file = \"gone.pem\"\nsigning_key_file = \"sign.b64\"",
            "legacy.rsa_unwrapping_key_file",
            "gone.pem",
        ),
    ];
    let keys: serde_json::Value = serde_json::from_str(VECTOR_KEYS).unwrap();
    for (legacy, field, detail) in cases {
        let e = dir.load("e.toml", legacy).unwrap_err().to_string();
        assert!(
            e.contains("\"TableName\"") && e.contains(field) && e.contains(detail),
            "{legacy}: {e}"
        );
        for name in ["rsaEncPriv", "rsaSignPub"] {
            assert!(!e.contains(&keys[name]["material"].as_str().unwrap()[40..80]), "{e}");
        }
    }
}

#[tokio::test]
async fn a_config_built_rsa_provider_verifies_and_decrypts_a_vendored_vector_item() {
    use ddbguard_dbe::json::item_from_ddb_json;
    use ddbguard_dbe::{AttributeValue, Verdict};
    use ddbguard_ddbec::{MaterialsProvider, TableContext, decrypt_item};

    let dir = RsaKeyDir::new("vector");
    let config = dir
        .load(
            "w.toml",
            "provider = \"wrapped\"\nrsa_unwrapping_key_file = \"unwrap.pem\"\n\
             rsa_verification_key_file = \"verify-pkcs1.pem\"\ndefault_action = \"ENCRYPT_AND_SIGN\"\n\
             [tables.legacy.attribute_actions]\nversion = \"SIGN_ONLY\"",
        )
        .unwrap();
    let legacy = config.tables[0].legacy.as_ref().unwrap();
    let LegacyProviderSettings::Wrapped(provider) = &legacy.provider else {
        panic!("{:?}", legacy.provider)
    };
    // The vectors' item {hashKey: 5, rangeKey: 7}: the "encrypt" actions (everything but `version` encrypted)
    // over the v0 attributes; its signature checked with the PKCS#1 form of the public key.
    let items: serde_json::Value = serde_json::from_str(VECTOR_RSA_ITEMS).unwrap();
    let stored = items["TableName"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| item_from_ddb_json(i).unwrap())
        .find(|i| i["hashKey"] == AttributeValue::N("5".into()) && i["rangeKey"] == AttributeValue::N("7".into()))
        .unwrap();
    let table = TableContext {
        table_name: "TableName",
        partition_key: Some("hashKey"),
        sort_key: Some("rangeKey"),
    };
    let provider: &dyn MaterialsProvider = provider;
    let plain = decrypt_item(table, &stored, &legacy.actions, provider).await.unwrap();
    assert_eq!(plain.item["stringValue"], AttributeValue::S("Hello world!".into()));
    assert_eq!(plain.item["intValue"], AttributeValue::N("123".into()));
    assert_eq!(plain.item["byteArrayValue"], AttributeValue::B(vec![0, 1, 2, 3, 4, 5]));
    assert_eq!(plain.item.len(), 8, "{:?}", plain.item.keys());

    // One flipped bit of the RSA signature: integrity_failed.
    let mut tampered = stored.clone();
    let Some(AttributeValue::B(signature)) = tampered.get_mut(ddbguard_ddbec::SIGNATURE) else {
        panic!("signature")
    };
    assert_eq!(signature.len(), 256, "an RSA-2048 signature");
    signature[100] ^= 0x01;
    let e = decrypt_item(table, &tampered, &legacy.actions, provider)
        .await
        .unwrap_err();
    assert_eq!(e.verdict(), Verdict::IntegrityFailed, "{e}");
}
