//! Migration files: `migrations/NNNN_name.toml`, each one backfill of one table under stated attribute actions.
//!
//! ```toml
//! table = "DemoCustomers"              # a [[tables]] entry of the config (keys, logical name, unsigned attributes)
//! home_region = "us-east-1"            # optional; default the table's home_region
//! algorithm_suite = "0x6701"           # optional; default the table's
//! filter = { attribute = "tenant", equals = "acme" }   # optional; or { attribute = "x", exists = true }
//! from_legacy = true                   # optional; also migrate legacy DynamoDB Encryption Client items
//! [attribute_actions]                  # the actions items are encrypted under (replace the table's)
//! pk = "SIGN_ONLY"
//! [keyring]                            # optional; default the table's keyring (same fields)
//! ```
//!
//! `from_legacy = true` is `backfill --from-legacy` for this migration: legacy items are judged with the table's
//! `[tables.legacy]` settings (their provider, and the actions the legacy client wrote them with) and written under
//! the migration's actions; refused for a table without `[tables.legacy] allowed = true`.
//!
//! A migration's id is its file stem (`0001_encrypt_customer_pii`); migrations run in the order of their number.
//! The checksum is the SHA-256 of the file's bytes: an applied migration whose file changed is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ddbguard_dbe::CryptoAction;
use ddbguard_ddb::{AttributeValue, Item};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::keyring::{KeyFiles, KeyringSettings, RawKeyring};
use super::tables::{parse_suite, unknown_suite};
use super::{Config, TableSettings};

/// A problem with a migration file; its `Display` names the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("migration {}: {field}: {message}", file.display())]
pub struct MigrationError {
    /// The file.
    pub file: PathBuf,
    /// The field (or `file` for problems of the file as a whole).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// A migration file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMigration {
    table: String,
    description: Option<String>,
    home_region: Option<String>,
    algorithm_suite: Option<String>,
    attribute_actions: BTreeMap<String, String>,
    keyring: Option<RawKeyring>,
    filter: Option<RawFilter>,
    #[serde(default)]
    from_legacy: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    attribute: String,
    equals: Option<FilterValue>,
    exists: Option<bool>,
}

/// A value a filter compares with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum FilterValue {
    /// Matches an `S` attribute with this text.
    String(String),
    /// Matches an `N` attribute with this value.
    Integer(i64),
    /// Matches a `BOOL` attribute.
    Bool(bool),
}

/// A migration's item filter: which scanned items it rewrites.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// The attribute has exactly this value.
    Equals {
        /// Attribute name.
        attribute: String,
        /// Value.
        value: FilterValue,
    },
    /// The attribute is present (`true`) or absent (`false`).
    Exists {
        /// Attribute name.
        attribute: String,
        /// Present or absent.
        present: bool,
    },
}

impl Filter {
    /// Whether `item` passes.
    pub fn matches(&self, item: &Item) -> bool {
        match self {
            Filter::Exists { attribute, present } => item.contains_key(attribute) == *present,
            Filter::Equals { attribute, value } => match (item.get(attribute), value) {
                (Some(AttributeValue::S(s)), FilterValue::String(v)) => s == v,
                (Some(AttributeValue::N(n)), FilterValue::Integer(v)) => n.trim().parse::<i64>().ok() == Some(*v),
                (Some(AttributeValue::Bool(b)), FilterValue::Bool(v)) => b == v,
                _ => false,
            },
        }
    }
}

/// A validated migration file.
#[derive(Debug, Clone)]
pub struct Migration {
    /// The file stem, e.g. `0001_encrypt_customer_pii`: the engine's job name and the ledger record's key.
    pub id: String,
    /// Its number.
    pub number: u32,
    /// The file.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, hex.
    pub checksum: String,
    /// Free text.
    pub description: Option<String>,
    /// The table's settings with the migration's actions, suite, keyring and home region applied.
    pub table: TableSettings,
    /// Which items it rewrites (`None`: every item).
    pub filter: Option<Filter>,
    /// Legacy DynamoDB Encryption Client items are migrated too (`from_legacy = true`).
    pub from_legacy: bool,
}

/// Parses the id of a migration file name: `NNNN_name.toml` → (`NNNN_name`, NNNN).
fn parse_name(path: &Path) -> Option<(String, u32)> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".toml")?;
    let (number, name) = stem.split_once('_')?;
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    (number.len() == 4 && number.chars().all(|c| c.is_ascii_digit()) && valid_name)
        .then(|| (stem.to_owned(), number.parse().ok()))
        .and_then(|(id, n)| Some((id, n?)))
}

/// Reads every `*.toml` file of `dir`, validated against `config`, in the order of their numbers.
pub fn load_dir(dir: &Path, config: &Config) -> Result<Vec<Migration>, MigrationError> {
    let entries = std::fs::read_dir(dir).map_err(|e| MigrationError {
        file: dir.to_owned(),
        field: "directory".into(),
        message: format!("cannot list: {e}"),
    })?;
    let mut migrations: Vec<Migration> = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| MigrationError {
                file: dir.to_owned(),
                field: "directory".into(),
                message: format!("cannot list: {e}"),
            })?
            .path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| MigrationError {
            file: path.clone(),
            field: "file".into(),
            message: format!("cannot read: {e}"),
        })?;
        let migration = parse(&path, &bytes, config)?;
        if let Some(other) = migrations.iter().find(|m| m.number == migration.number) {
            return Err(MigrationError {
                file: path,
                field: "file name".into(),
                message: format!(
                    "number {:04} is also used by {}",
                    migration.number,
                    other.path.display()
                ),
            });
        }
        migrations.push(migration);
    }
    migrations.sort_by_key(|m| m.number);
    Ok(migrations)
}

/// Validates one migration file's bytes against `config`.
pub fn parse(path: &Path, bytes: &[u8], config: &Config) -> Result<Migration, MigrationError> {
    let err = |field: &str, message: String| MigrationError {
        file: path.to_owned(),
        field: field.to_owned(),
        message,
    };
    let (id, number) = parse_name(path).ok_or_else(|| {
        err(
            "file name",
            "must be NNNN_name.toml (four digits, then lower-case letters, digits, '_' or '-')".into(),
        )
    })?;
    let checksum = hex::encode(Sha256::digest(bytes));
    let text = std::str::from_utf8(bytes).map_err(|_| err("file", "is not UTF-8".into()))?;
    let raw: RawMigration = toml::from_str(text).map_err(|e| {
        let message = e.message().to_owned();
        // serde names an unknown field in its message; the span is the best we can do for other errors.
        err("file", message)
    })?;
    let base = config.table(&raw.table).map_err(|e| err("table", e.to_string()))?;
    let mut table = base.clone();
    let mut actions = BTreeMap::new();
    for (attribute, action) in &raw.attribute_actions {
        let parsed: CryptoAction = action.parse().map_err(|_| {
            err(
                &format!("attribute_actions.{attribute}"),
                format!(
                    "unknown action {action:?}; expected ENCRYPT_AND_SIGN, SIGN_ONLY, \
                     SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT or DO_NOTHING"
                ),
            )
        })?;
        actions.insert(attribute.clone(), parsed);
    }
    table.dbe.attribute_actions = actions;
    if let Some(suite) = &raw.algorithm_suite {
        table.dbe.algorithm_suite = parse_suite(suite).ok_or_else(|| err("algorithm_suite", unknown_suite(suite)))?;
    }
    table
        .dbe
        .validate()
        .map_err(|e| err("attribute_actions", e.to_string()))?;
    if let Some(region) = raw.home_region {
        if !super::aws::valid_region(&region) {
            return Err(err("home_region", format!("{region:?} is not a region name")));
        }
        table.home_region = Some(region);
    }
    if let Some(keyring) = &raw.keyring {
        let dir = path.parent().unwrap_or(Path::new("."));
        let files = KeyFiles::read(keyring.key_file_path(dir).as_deref());
        table.keyring = KeyringSettings::from_raw(keyring, dir, &files)
            .map_err(|(field, message)| err(&format!("keyring.{field}"), message))?;
    }
    if raw.from_legacy && table.legacy.is_none() {
        return Err(err(
            "from_legacy",
            format!(
                "table {:?} does not allow legacy items; add [tables.legacy] with allowed = true to its [[tables]] \
                 entry to migrate them",
                table.name
            ),
        ));
    }
    let filter = match raw.filter {
        None => None,
        Some(f) => Some(match (f.equals, f.exists) {
            (Some(value), None) => Filter::Equals {
                attribute: f.attribute,
                value,
            },
            (None, Some(present)) => Filter::Exists {
                attribute: f.attribute,
                present,
            },
            _ => return Err(err("filter", "give exactly one of `equals` and `exists`".into())),
        }),
    };
    Ok(Migration {
        id,
        number,
        path: path.to_owned(),
        checksum,
        description: raw.description,
        table,
        filter,
        from_legacy: raw.from_legacy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn config() -> Config {
        let text = format!(
            "[[tables]]\nname = \"Orders\"\npartition_key = \"pk\"\nhome_region = \"us-east-1\"\n\
             [tables.attribute_actions]\npk = \"SIGN_ONLY\"\n\
             [tables.keyring]\nkind = \"raw-aes\"\nkey_namespace = \"ops\"\nkey_name = \"k\"\nkey_base64 = \"{KEY}\"\n"
        );
        Config::parse(Path::new("c.toml"), &text).unwrap()
    }

    #[test]
    fn a_migration_overrides_the_table_settings() {
        let text = "table = \"Orders\"\nalgorithm_suite = \"0x6700\"\nhome_region = \"ap-southeast-2\"\n\
                    filter = { attribute = \"tenant\", equals = \"acme\" }\n\
                    [attribute_actions]\npk = \"SIGN_ONLY\"\nssn = \"ENCRYPT_AND_SIGN\"\ntenant = \"SIGN_ONLY\"\n";
        let m = parse(Path::new("m/0007_encrypt_ssn.toml"), text.as_bytes(), &config()).unwrap();
        assert_eq!((m.id.as_str(), m.number), ("0007_encrypt_ssn", 7));
        assert_eq!(m.table.dbe.algorithm_suite, ddbguard_dbe::AlgorithmSuite::HmacOnly);
        assert_eq!(m.table.home_region.as_deref(), Some("ap-southeast-2"));
        assert_eq!(
            m.table.dbe.attribute_actions.get("ssn"),
            Some(&CryptoAction::EncryptAndSign)
        );
        assert_eq!(m.checksum, hex::encode(Sha256::digest(text.as_bytes())));
        assert!(!m.from_legacy);
        let filter = m.filter.unwrap();
        let item = |t: &str| Item::from([("tenant".to_owned(), AttributeValue::S(t.to_owned()))]);
        assert!(filter.matches(&item("acme")));
        assert!(!filter.matches(&item("other")));
        assert!(!filter.matches(&Item::new()));
        let exists = Filter::Exists {
            attribute: "tenant".into(),
            present: false,
        };
        assert!(exists.matches(&Item::new()) && !exists.matches(&item("acme")));
        let number = Filter::Equals {
            attribute: "n".into(),
            value: FilterValue::Integer(5),
        };
        assert!(number.matches(&Item::from([("n".to_owned(), AttributeValue::N("5".into()))])));
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let cases = [
            (
                "0001_a.toml",
                "table = \"Orders\"\n[attribute_actions]\npk = \"SIGN_ONLY\"\nssn = \"ENCRYPT\"\n",
                "attribute_actions.ssn",
            ),
            (
                "0001_a.toml",
                "table = \"Nope\"\n[attribute_actions]\npk = \"SIGN_ONLY\"\n",
                "table",
            ),
            (
                "0001_a.toml",
                "table = \"Orders\"\nsuite = \"x\"\n[attribute_actions]\npk = \"SIGN_ONLY\"\n",
                "file",
            ),
            (
                "0001_a.toml",
                "table = \"Orders\"\nfilter = { attribute = \"a\" }\n[attribute_actions]\npk = \"SIGN_ONLY\"\n",
                "filter",
            ),
            (
                "1_a.toml",
                "table = \"Orders\"\n[attribute_actions]\npk = \"SIGN_ONLY\"\n",
                "file name",
            ),
            (
                "0001_a.toml",
                "table = \"Orders\"\n[attribute_actions]\npk = \"SIGN_ONLY\"\n[keyring]\nkind = \"nope\"\n",
                "keyring.kind",
            ),
            (
                "0001_a.toml",
                "table = \"Orders\"\nfrom_legacy = true\n[attribute_actions]\npk = \"SIGN_ONLY\"\n",
                "from_legacy",
            ),
        ];
        for (name, text, field) in cases {
            let e = parse(Path::new(name), text.as_bytes(), &config()).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn from_legacy_needs_a_table_that_allows_legacy_items() {
        // The legacy provider defaults to aws-kms under the table keyring's MRK.
        let text = "[[tables]]\nname = \"Orders\"\npartition_key = \"pk\"\nhome_region = \"us-east-1\"\n\
                    [tables.attribute_actions]\npk = \"SIGN_ONLY\"\nssn = \"ENCRYPT_AND_SIGN\"\n\
                    [tables.keyring]\nkind = \"kms-mrk\"\n\
                    key_arn = \"arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab\"\n\
                    [tables.legacy]\nallowed = true\n";
        let config = Config::parse(Path::new("c.toml"), text).unwrap();
        let migration = "table = \"Orders\"\nfrom_legacy = true\n[attribute_actions]\npk = \"SIGN_ONLY\"\n\
                         ssn = \"ENCRYPT_AND_SIGN\"\n";
        let m = parse(Path::new("0002_from_legacy.toml"), migration.as_bytes(), &config).unwrap();
        assert!(m.from_legacy);
        let e = parse(
            Path::new("0002_from_legacy.toml"),
            migration.as_bytes(),
            &self::config(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not allow legacy items"), "{e}");
    }
}
