//! The `ddbguard.toml` configuration: parsed with serde, then validated into typed settings.
//!
//! Loading is two-phase, like ripgrep's low-level / high-level arguments: [`RawConfig`] mirrors the
//! TOML file field for field (unknown fields are rejected so that typos surface), and
//! [`Config::from_raw`] turns it into [`Config`], whose values are ready to use. Every error names the
//! file, the table and the field, so an operator can fix it without reading code.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ddbguard_dbe::{AlgorithmSuite, CryptoAction, TableConfig};
use ddbguard_keys::arn::KmsArn;
use ddbguard_keys::keystore::CacheSettings;
use ddbguard_keys::kms::DiscoveryFilter;
use serde::Deserialize;
use zeroize::Zeroizing;

/// A configuration problem, with enough context to find and fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is present but not acceptable.
    #[error("config file {path}: {location}: field `{field}`: {message}")]
    Invalid {
        path: PathBuf,
        location: Location,
        field: String,
        message: String,
    },
    /// `--table NAME` names no configured table.
    #[error("config file {path}: no table named {name:?} (configured: {known})")]
    UnknownTable { path: PathBuf, name: String, known: String },
}

/// Where in the file a problem is: a table entry or a top-level section.
#[derive(Debug, Clone)]
pub enum Location {
    /// The `[[tables]]` entry with this `name` (or its index when the name is missing).
    Table(String),
    /// A top-level section such as `[aws]`.
    Section(&'static str),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Table(name) => write!(f, "table {name:?}"),
            Location::Section(name) => write!(f, "[{name}]"),
        }
    }
}

/// The TOML file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub aws: Option<RawAws>,
    pub verify: Option<RawVerify>,
    #[serde(default)]
    pub tables: Vec<RawTable>,
}

/// The `[aws]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAws {
    pub region: String,
    #[serde(default)]
    pub regions: Vec<String>,
    pub endpoint_url: Option<String>,
    pub kms_requests_per_second: Option<f64>,
}

/// The `[verify]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub lease_table: Option<String>,
    pub worker_id: Option<String>,
    pub sample_rate: Option<f64>,
}

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
    pub keyring: RawKeyring,
}

/// A `[tables.keyring]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyring {
    pub kind: String,
    pub key_namespace: Option<String>,
    pub key_name: Option<String>,
    pub key_base64: Option<String>,
    pub key_file: Option<PathBuf>,
    pub key_arn: Option<String>,
    pub discovery_filter: Option<DiscoveryFilter>,
    pub key_store_table: Option<String>,
    pub key_store_logical_name: Option<String>,
    pub branch_key_id: Option<String>,
    pub cache_ttl_seconds: Option<u64>,
    pub cache_max_entries: Option<usize>,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    /// Where the process runs and which regions the global tables span; required by KMS keyrings.
    pub aws: Option<AwsSettings>,
    /// The `[verify]` section, with defaults when absent.
    pub verify: VerifySettings,
    pub tables: Vec<TableSettings>,
}

/// The validated `[verify]` section (settings of `ddbguard verify`).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifySettings {
    /// Prefix of the DynamoDB lease tables: the stream of table `T` is leased in `<lease_table>-<T>` (one lease
    /// table per stream), in the local region, created if missing.
    pub lease_table: String,
    /// This process's lease owner name; unique per process.
    pub worker_id: String,
    /// Share of records fully decrypted, `0.0..=1.0`; the rest get `ok_structural`.
    pub sample_rate: f64,
}

/// Default `[verify] lease_table`.
pub const DEFAULT_LEASE_TABLE: &str = "ddbguard-leases";

/// The default worker id: `<hostname>-<pid>-<random>`. The hostname of an ECS task is unique per task, but not
/// in host network mode, where pids can repeat too; two processes with one id would keep taking each other's
/// leases.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ddbguard".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
}

/// The validated `[aws]` section.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// The process's local region: KMS keyrings decrypt with the key's replica here.
    pub region: String,
    /// Every replica region of the global tables (includes `region`).
    pub regions: Vec<String>,
    /// A non-AWS endpoint (the local environment), for every service.
    pub endpoint_url: Option<String>,
    /// The process-wide KMS request rate (token bucket shared by all tasks).
    pub kms_requests_per_second: f64,
}

/// Default KMS request budget of one process: well under the smallest regional KMS quota for
/// symmetric cryptographic operations (5,500/s), leaving room for the applications.
pub const DEFAULT_KMS_REQUESTS_PER_SECOND: f64 = 100.0;

/// A table's validated settings: the DB-ESDK table configuration and its keyring.
#[derive(Debug)]
pub struct TableSettings {
    /// The physical DynamoDB table name.
    pub name: String,
    pub dbe: TableConfig,
    pub keyring: KeyringSettings,
    /// `ddbguard verify`: attributes that must be ENCRYPT_AND_SIGN whenever present, beyond `attribute_actions`.
    pub required_encrypted: BTreeSet<String>,
    /// `ddbguard verify`: the only algorithm suite records may use, if set.
    pub require_suite: Option<AlgorithmSuite>,
}

/// Which keyring protects a table's items.
pub enum KeyringSettings {
    /// A raw AES-256 wrapping key (offline use, tests, forensics with an escrowed key).
    RawAes {
        namespace: String,
        name: String,
        key: Zeroizing<[u8; 32]>,
    },
    /// An AWS KMS multi-Region key: decrypts with its replica in the local region.
    KmsMrk { key_arn: String },
    /// Any `aws-kms` key, through the local replica of its MRK (or the key itself in its own region).
    KmsMrkDiscovery { filter: Option<DiscoveryFilter> },
    /// The hierarchical keyring: branch keys from a key store table in DynamoDB, wrapped under `key_arn`
    /// (used through its local replica), cached per process.
    Hierarchy(HierarchySettings),
}

/// Settings of a `hierarchy` keyring.
#[derive(Debug, Clone)]
pub struct HierarchySettings {
    /// The KMS key (ARN; an MRK for global key stores) wrapping the branch keys.
    pub key_arn: String,
    /// The key store's DynamoDB table.
    pub key_store_table: String,
    /// The logical key store name bound into every branch key (default: the table name).
    pub logical_name: String,
    /// The branch key that encrypts; `None`: decrypt only, under any branch key of the store.
    pub branch_key_id: Option<String>,
    /// Bounds of the unwrapped branch key cache.
    pub cache: CacheSettings,
}

impl fmt::Debug for KeyringSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyringSettings::RawAes { namespace, name, .. } => f
                .debug_struct("RawAes")
                .field("namespace", namespace)
                .field("name", name)
                .field("key", &"<redacted>")
                .finish(),
            KeyringSettings::KmsMrk { key_arn } => f.debug_struct("KmsMrk").field("key_arn", key_arn).finish(),
            KeyringSettings::KmsMrkDiscovery { filter } => {
                f.debug_struct("KmsMrkDiscovery").field("filter", filter).finish()
            }
            KeyringSettings::Hierarchy(h) => f.debug_tuple("Hierarchy").field(h).finish(),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates config text; `path` is used for messages and to resolve relative key files.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Config::from_raw(path, raw)
    }

    /// Validates a parsed file into typed settings.
    pub fn from_raw(path: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
        let aws = raw.aws.map(|a| AwsSettings::from_raw(path, a)).transpose()?;
        let verify = VerifySettings::from_raw(path, raw.verify)?;
        let mut seen = BTreeSet::new();
        let mut tables = Vec::with_capacity(raw.tables.len());
        for table in raw.tables {
            let settings = TableSettings::from_raw(path, table)?;
            if !seen.insert(settings.name.clone()) {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    location: Location::Table(settings.name),
                    field: "name".into(),
                    message: "this table is configured twice".into(),
                });
            }
            if settings.keyring.needs_aws() && aws.is_none() {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    location: Location::Table(settings.name),
                    field: "keyring.kind".into(),
                    message: "KMS keyrings need an [aws] section with the local `region`".into(),
                });
            }
            tables.push(settings);
        }
        Ok(Config {
            path: path.to_owned(),
            aws,
            verify,
            tables,
        })
    }

    /// The settings of the table with this physical name.
    pub fn table(&self, name: &str) -> Result<&TableSettings, ConfigError> {
        self.tables
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ConfigError::UnknownTable {
                path: self.path.clone(),
                name: name.to_owned(),
                known: if self.tables.is_empty() {
                    "none".to_owned()
                } else {
                    self.tables
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    }
}

impl AwsSettings {
    fn from_raw(path: &Path, raw: RawAws) -> Result<AwsSettings, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            location: Location::Section("aws"),
            field: field.to_owned(),
            message,
        };
        let valid_region = |r: &str| {
            !r.is_empty()
                && r.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !valid_region(&raw.region) {
            return Err(invalid(
                "region",
                format!("{:?} is not a region name like \"us-east-1\"", raw.region),
            ));
        }
        let mut regions = raw.regions;
        if let Some(bad) = regions.iter().find(|r| !valid_region(r)) {
            return Err(invalid(
                "regions",
                format!("{bad:?} is not a region name like \"us-east-1\""),
            ));
        }
        if regions.is_empty() {
            regions.push(raw.region.clone());
        } else if !regions.contains(&raw.region) {
            return Err(invalid(
                "regions",
                format!(
                    "must include the local region {:?} (it lists the global table's replica regions)",
                    raw.region
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        regions.retain(|r| seen.insert(r.clone()));
        if let Some(url) = &raw.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid("endpoint_url", format!("{url:?} is not an http(s) URL")));
        }
        let rate = raw.kms_requests_per_second.unwrap_or(DEFAULT_KMS_REQUESTS_PER_SECOND);
        if !(rate.is_finite() && rate > 0.0) {
            return Err(invalid(
                "kms_requests_per_second",
                format!("must be a positive number, got {rate}"),
            ));
        }
        Ok(AwsSettings {
            region: raw.region,
            regions,
            endpoint_url: raw.endpoint_url,
            kms_requests_per_second: rate,
        })
    }
}

impl VerifySettings {
    fn from_raw(path: &Path, raw: Option<RawVerify>) -> Result<VerifySettings, ConfigError> {
        let raw = raw.unwrap_or(RawVerify {
            lease_table: None,
            worker_id: None,
            sample_rate: None,
        });
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            location: Location::Section("verify"),
            field: field.to_owned(),
            message,
        };
        let lease_table = raw.lease_table.unwrap_or_else(|| DEFAULT_LEASE_TABLE.to_owned());
        // The table name suffix takes at least 4 more characters ("-" and a 3-character table name).
        if lease_table.len() < 3 || lease_table.len() > 200 {
            return Err(invalid(
                "lease_table",
                format!("{lease_table:?} must be 3 to 200 characters long"),
            ));
        }
        if !lease_table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(invalid(
                "lease_table",
                format!("{lease_table:?} is not a DynamoDB table name (letters, digits, '_', '-' and '.')"),
            ));
        }
        let worker_id = match raw.worker_id {
            Some(id) if id.trim().is_empty() => return Err(invalid("worker_id", "must not be empty".into())),
            Some(id) => id,
            None => default_worker_id(),
        };
        let sample_rate = raw.sample_rate.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample_rate) {
            return Err(invalid(
                "sample_rate",
                format!("must be between 0 and 1 (share of records fully decrypted), got {sample_rate}"),
            ));
        }
        Ok(VerifySettings {
            lease_table,
            worker_id,
            sample_rate,
        })
    }

    /// The lease table of the stream of `table`.
    pub fn lease_table_for(&self, table: &str) -> String {
        format!("{}-{table}", self.lease_table)
    }
}

impl TableSettings {
    fn from_raw(path: &Path, raw: RawTable) -> Result<TableSettings, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            location: Location::Table(raw.name.clone()),
            field: field.to_owned(),
            message,
        };
        if raw.name.is_empty() {
            return Err(invalid("name", "must not be empty".into()));
        }
        let algorithm_suite = match raw.algorithm_suite.as_deref() {
            None => AlgorithmSuite::EcdsaP384,
            Some(s) => parse_suite(s).ok_or_else(|| {
                invalid(
                    "algorithm_suite",
                    format!(
                        "unknown algorithm suite {s:?}; expected \"0x6700\" (HMAC only) or \"0x6701\" (ECDSA P-384)"
                    ),
                )
            })?,
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
        let keyring = KeyringSettings::from_raw(path, &raw.keyring)
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
            Some(s) => Some(parse_suite(s).ok_or_else(|| {
                invalid(
                    "require_suite",
                    format!(
                        "unknown algorithm suite {s:?}; expected \"0x6700\" (HMAC only) or \"0x6701\" (ECDSA P-384)"
                    ),
                )
            })?),
        };
        Ok(TableSettings {
            name: raw.name,
            dbe,
            keyring,
            required_encrypted,
            require_suite,
        })
    }
}

fn parse_suite(s: &str) -> Option<AlgorithmSuite> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    let id = u16::from_str_radix(hex, 16).ok()?;
    AlgorithmSuite::from_id(id)
}

impl KeyringSettings {
    /// Whether this keyring calls AWS (and so needs the `[aws]` section).
    pub fn needs_aws(&self) -> bool {
        !matches!(self, KeyringSettings::RawAes { .. })
    }

    /// Validates a keyring section; errors are `(field, message)` for the caller to place.
    fn from_raw(config_path: &Path, raw: &RawKeyring) -> Result<KeyringSettings, (&'static str, String)> {
        match raw.kind.as_str() {
            "raw-aes" => {
                let namespace = required(&raw.key_namespace, "key_namespace")?;
                let name = required(&raw.key_name, "key_name")?;
                let key = match (&raw.key_base64, &raw.key_file) {
                    (Some(b64), None) => decode_key(b64.trim()).map_err(|m| ("key_base64", m))?,
                    (None, Some(file)) => {
                        let file = resolve(config_path, file);
                        let text = Zeroizing::new(
                            std::fs::read_to_string(&file)
                                .map_err(|e| ("key_file", format!("cannot read {}: {e}", file.display())))?,
                        );
                        decode_key(text.trim()).map_err(|m| ("key_file", format!("{}: {m}", file.display())))?
                    }
                    (Some(_), Some(_)) => {
                        return Err(("key_base64", "set either key_base64 or key_file, not both".into()));
                    }
                    (None, None) => {
                        return Err(("key_base64", "a raw-aes keyring needs key_base64 or key_file".into()));
                    }
                };
                Ok(KeyringSettings::RawAes { namespace, name, key })
            }
            "kms-mrk" => {
                let key_arn = required(&raw.key_arn, "key_arn")?;
                KmsArn::parse_key(&key_arn).map_err(|e| ("key_arn", e.to_string()))?;
                Ok(KeyringSettings::KmsMrk { key_arn })
            }
            "kms-mrk-discovery" => {
                if let Some(f) = &raw.discovery_filter
                    && (f.partition.is_empty() || f.accounts.is_empty())
                {
                    return Err(("discovery_filter", "needs a partition and at least one account".into()));
                }
                Ok(KeyringSettings::KmsMrkDiscovery {
                    filter: raw.discovery_filter.clone(),
                })
            }
            "hierarchy" => {
                let key_arn = required(&raw.key_arn, "key_arn")?;
                KmsArn::parse_key(&key_arn).map_err(|e| ("key_arn", e.to_string()))?;
                let key_store_table = required(&raw.key_store_table, "key_store_table")?;
                let logical_name = match &raw.key_store_logical_name {
                    Some(n) if n.is_empty() => return Err(("key_store_logical_name", "must not be empty".into())),
                    Some(n) => n.clone(),
                    None => key_store_table.clone(),
                };
                if raw.branch_key_id.as_deref() == Some("") {
                    return Err((
                        "branch_key_id",
                        "must not be empty (leave it out to decrypt under any branch key)".into(),
                    ));
                }
                let defaults = CacheSettings::default();
                let ttl = raw.cache_ttl_seconds.unwrap_or(defaults.ttl.as_secs());
                if ttl == 0 {
                    return Err(("cache_ttl_seconds", "must be at least 1".into()));
                }
                let max_entries = raw.cache_max_entries.unwrap_or(defaults.max_entries);
                if max_entries == 0 {
                    return Err(("cache_max_entries", "must be at least 1".into()));
                }
                Ok(KeyringSettings::Hierarchy(HierarchySettings {
                    key_arn,
                    key_store_table,
                    logical_name,
                    branch_key_id: raw.branch_key_id.clone(),
                    cache: CacheSettings {
                        ttl: std::time::Duration::from_secs(ttl),
                        max_entries,
                        ..CacheSettings::default()
                    },
                }))
            }
            other => Err((
                "kind",
                format!(
                    "unknown keyring kind {other:?}; expected \"raw-aes\", \"kms-mrk\", \"kms-mrk-discovery\" or \"hierarchy\""
                ),
            )),
        }
    }
}

fn required(value: &Option<String>, field: &'static str) -> Result<String, (&'static str, String)> {
    match value {
        Some(v) if !v.is_empty() => Ok(v.clone()),
        _ => Err((field, "is required for this keyring kind".into())),
    }
}

/// Decodes a base64 AES-256 key without ever putting the key bytes into an error message.
fn decode_key(b64: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "is not valid base64".to_owned())?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return Err(format!("must decode to 32 bytes (AES-256), got {}", bytes.len()));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// Resolves a path relative to the directory of the config file.
fn resolve(config_path: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_owned()
    } else {
        config_path.parent().unwrap_or(Path::new(".")).join(file)
    }
}

#[cfg(test)]
mod tests {
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
        let text = include_str!("../../../config/ddbguard.toml");
        let config = Config::parse(Path::new("config/ddbguard.toml"), text).unwrap();
        let t = config.table("Customers").unwrap();
        assert!(matches!(t.keyring, KeyringSettings::KmsMrk { .. }));
        assert!(t.required_encrypted.contains("ssn"));
        assert_eq!(config.aws.as_ref().unwrap().regions.len(), 2);
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
        let aws = config.aws.as_ref().unwrap();
        assert_eq!(aws.region, "ap-southeast-2");
        assert_eq!(aws.regions, ["us-east-1", "ap-southeast-2"]);
        assert_eq!(aws.kms_requests_per_second, DEFAULT_KMS_REQUESTS_PER_SECOND);
        assert!(matches!(&config.tables[0].keyring, KeyringSettings::KmsMrk { key_arn } if key_arn == MRK));

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

        let e = err(&table("", &format!("kind = \"kms-mrk\"\nkey_arn = \"{MRK}\"")));
        assert!(e.contains("[aws]"), "{e}");

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
    fn key_file_is_resolved_beside_the_config() {
        let dir = std::env::temp_dir().join(format!("ddbguard-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key.b64"), format!("{KEY}\n")).unwrap();
        let keyring = "kind = \"raw-aes\"\nkey_namespace = \"ops\"\nkey_name = \"k\"\nkey_file = \"key.b64\"";
        let config = Config::parse(&dir.join("c.toml"), &table("", keyring)).unwrap();
        assert!(matches!(config.tables[0].keyring, KeyringSettings::RawAes { ref key, .. } if key[31] == 31));
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
            "[verify]\nlease_table = \"ops.leases\"\nworker_id = \"task-1\"\nsample_rate = 0.25\n{}",
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
        let e = with("worker_id = \" \"");
        assert!(e.contains("[verify]") && e.contains("worker_id"), "{e}");
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
}
