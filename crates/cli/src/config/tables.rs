//! The `[[tables]]` entries: the DB-ESDK table configuration, the keyring and the `verify` policy of a table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ddbguard_dbe::{AlgorithmSuite, CryptoAction, TableConfig};
use serde::Deserialize;

use super::keyring::{KeyFiles, KeyringSettings, RawKeyring};
use super::legacy::{LegacySettings, RawLegacy};
use super::{ConfigError, ConfigSource, Location};

/// One `[[tables]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTable {
    pub name: String,
    pub logical_name: Option<String>,
    pub partition_key: String,
    pub sort_key: Option<String>,
    pub algorithm_suite: Option<String>,
    #[serde(default)]
    pub allowed_unsigned_attributes: Vec<String>,
    pub allowed_unsigned_attribute_prefix: Option<String>,
    #[serde(default)]
    pub attribute_actions: BTreeMap<String, String>,
    /// `ddbguard verify`: attributes that must be ENCRYPT_AND_SIGN whenever present.
    #[serde(default)]
    pub required_encrypted: Vec<String>,
    /// `ddbguard verify`: records written with another algorithm suite are a `policy_violation`.
    pub require_suite: Option<String>,
    /// `ddbguard backfill`: the only region the table's items may be rewritten in.
    pub home_region: Option<String>,
    /// `ddbguard backfill`: the application's optimistic-locking version attribute (a number).
    pub version_attribute: Option<String>,
    pub keyring: RawKeyring,
    /// Whether (and how) legacy DynamoDB Encryption Client items are judged.
    pub legacy: Option<RawLegacy>,
}

/// A table's validated settings: the DB-ESDK table configuration and its keyring.
#[derive(Debug, Clone)]
pub struct TableSettings {
    /// The physical DynamoDB table name.
    pub name: String,
    pub dbe: TableConfig,
    pub keyring: KeyringSettings,
    /// `ddbguard verify`: attributes that must be ENCRYPT_AND_SIGN whenever present, beyond `attribute_actions`.
    pub required_encrypted: BTreeSet<String>,
    /// `ddbguard verify`: the only algorithm suite records may use, if set.
    pub require_suite: Option<AlgorithmSuite>,
    /// `ddbguard backfill`: the region whose replica is rewritten (global tables are last-writer-wins across
    /// regions, so one region only); `None`: the region given with `--region`.
    pub home_region: Option<String>,
    /// `ddbguard backfill`: the application's version attribute; the write-back then compares only it instead of
    /// every attribute.
    pub version_attribute: Option<String>,
    /// Legacy DynamoDB Encryption Client items are judged with these settings; `None`: they are `legacy_format`.
    pub legacy: Option<LegacySettings>,
}

impl RawTable {
    /// The key files this entry reads: its keyring's and its legacy provider's.
    pub(super) fn key_files(&self, base: &Path) -> Vec<PathBuf> {
        let legacy = self.legacy.iter().flat_map(|l| l.key_files(base));
        self.keyring.key_file_path(base).into_iter().chain(legacy).collect()
    }
}

impl TableSettings {
    /// Validates one entry; `base` and `key_files` serve a `raw-aes` keyring's `key_file`.
    pub(super) fn from_raw(
        origin: &ConfigSource,
        raw: RawTable,
        base: &Path,
        key_files: &KeyFiles,
    ) -> Result<TableSettings, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            origin: origin.clone(),
            location: Location::Table(raw.name.clone()),
            field: field.to_owned(),
            message,
        };
        if raw.name.is_empty() {
            return Err(invalid("name", "must not be empty".into()));
        }
        let algorithm_suite = match raw.algorithm_suite.as_deref() {
            None => AlgorithmSuite::EcdsaP384,
            Some(s) => parse_suite(s).ok_or_else(|| invalid("algorithm_suite", unknown_suite(s)))?,
        };
        let mut attribute_actions = BTreeMap::new();
        for (attribute, action) in &raw.attribute_actions {
            let parsed: CryptoAction = action.parse().map_err(|_| {
                invalid(
                    &format!("attribute_actions.{attribute}"),
                    format!(
                        "unknown action {action:?}; expected ENCRYPT_AND_SIGN, SIGN_ONLY, \
                         SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT or DO_NOTHING"
                    ),
                )
            })?;
            attribute_actions.insert(attribute.clone(), parsed);
        }
        let dbe = TableConfig {
            logical_table_name: raw.logical_name.clone().unwrap_or_else(|| raw.name.clone()),
            partition_key: raw.partition_key.clone(),
            sort_key: raw.sort_key.clone(),
            attribute_actions,
            allowed_unsigned_attributes: raw.allowed_unsigned_attributes.iter().cloned().collect(),
            allowed_unsigned_attribute_prefix: raw.allowed_unsigned_attribute_prefix.clone(),
            algorithm_suite,
        };
        dbe.validate()
            .map_err(|e| invalid("attribute_actions", e.to_string()))?;
        let keyring = KeyringSettings::from_raw(&raw.keyring, base, key_files)
            .map_err(|(field, message)| invalid(&format!("keyring.{field}"), message))?;
        let mut required_encrypted = BTreeSet::new();
        for attribute in &raw.required_encrypted {
            if attribute.is_empty() {
                return Err(invalid(
                    "required_encrypted",
                    "attribute names must not be empty".into(),
                ));
            }
            if *attribute == dbe.partition_key || dbe.sort_key.as_ref() == Some(attribute) {
                return Err(invalid(
                    "required_encrypted",
                    format!("{attribute:?} is a primary key attribute, which is never encrypted"),
                ));
            }
            if let Some(action) = dbe.attribute_actions.get(attribute)
                && *action != CryptoAction::EncryptAndSign
            {
                return Err(invalid(
                    "required_encrypted",
                    format!("{attribute:?} has action {action} in attribute_actions, not ENCRYPT_AND_SIGN"),
                ));
            }
            if !required_encrypted.insert(attribute.clone()) {
                return Err(invalid("required_encrypted", format!("{attribute:?} is listed twice")));
            }
        }
        let require_suite = match raw.require_suite.as_deref() {
            None => None,
            Some(s) => Some(parse_suite(s).ok_or_else(|| invalid("require_suite", unknown_suite(s)))?),
        };
        if raw.home_region.as_deref().is_some_and(|r| !super::aws::valid_region(r)) {
            return Err(invalid(
                "home_region",
                format!("{:?} is not a region name", raw.home_region.unwrap_or_default()),
            ));
        }
        if let Some(version) = &raw.version_attribute {
            if version.is_empty() || dbe.key_names().any(|k| k == version) {
                return Err(invalid("version_attribute", "must be a non-key attribute name".into()));
            }
            if dbe.attribute_actions.get(version) == Some(&CryptoAction::EncryptAndSign) {
                return Err(invalid(
                    "version_attribute",
                    format!("{version:?} is ENCRYPT_AND_SIGN; the write-back condition must read it in plaintext"),
                ));
            }
        }
        let legacy = match &raw.legacy {
            None => None,
            Some(section) => LegacySettings::from_raw(section, &dbe, &keyring, base, key_files)
                .map_err(|(field, message)| invalid(&format!("legacy.{field}"), message))?,
        };
        Ok(TableSettings {
            name: raw.name,
            dbe,
            keyring,
            required_encrypted,
            require_suite,
            home_region: raw.home_region,
            version_attribute: raw.version_attribute,
            legacy,
        })
    }
}

pub(super) fn unknown_suite(s: &str) -> String {
    format!("unknown algorithm suite {s:?}; expected \"0x6700\" (HMAC only) or \"0x6701\" (ECDSA P-384)")
}

pub(super) fn parse_suite(s: &str) -> Option<AlgorithmSuite> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    let id = u16::from_str_radix(hex, 16).ok()?;
    AlgorithmSuite::from_id(id)
}
