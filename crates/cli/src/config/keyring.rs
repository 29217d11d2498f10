//! The `[tables.keyring]` sections: which keyring protects a table's items.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ddbguard_keys::arn::KmsArn;
use ddbguard_keys::keystore::CacheSettings;
use ddbguard_keys::kms::DiscoveryFilter;
use serde::Deserialize;
use zeroize::Zeroizing;

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

/// Which keyring protects a table's items.
#[derive(Clone)]
pub enum KeyringSettings {
    /// A raw AES-256 wrapping key (offline use, tests, forensics with an escrowed key).
    RawAes {
        namespace: String,
        name: String,
        key: Zeroizing<[u8; 32]>,
    },
    /// An AWS KMS multi-Region key: decrypts with its replica in the local region.
    KmsMrk {
        /// A key ARN (never an alias), parsed once here.
        key_arn: KmsArn,
    },
    /// Any `aws-kms` key, through the local replica of its MRK (or the key itself in its own region).
    KmsMrkDiscovery { filter: Option<DiscoveryFilter> },
    /// The hierarchical keyring: branch keys from a key store table in DynamoDB, wrapped under `key_arn`
    /// (used through its local replica), cached per process.
    Hierarchy(HierarchySettings),
}

/// Settings of a `hierarchy` keyring.
#[derive(Debug, Clone)]
pub struct HierarchySettings {
    /// The KMS key (a key ARN; an MRK for global key stores) wrapping the branch keys.
    pub key_arn: KmsArn,
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

/// The contents of the key files (`raw-aes` keyrings' `key_file`s, the `[tables.legacy]` keys), read by the load
/// function before validation (which does no I/O). A read error is kept, to be reported with the table and field
/// that name the file.
#[derive(Default)]
pub struct KeyFiles(BTreeMap<PathBuf, Result<Zeroizing<Vec<u8>>, String>>);

impl fmt::Debug for KeyFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl KeyFiles {
    /// Reads every file in `paths` (each once), as bytes: most key files are base64 text, a DER key is not.
    pub fn read<'p>(paths: impl IntoIterator<Item = &'p Path>) -> KeyFiles {
        let mut files = BTreeMap::new();
        for path in paths {
            if !files.contains_key(path) {
                let bytes = std::fs::read(path)
                    .map(Zeroizing::new)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()));
                files.insert(path.to_owned(), bytes);
            }
        }
        KeyFiles(files)
    }

    /// A file read as text (a base64 key).
    pub(super) fn get(&self, path: &Path) -> Result<&str, String> {
        std::str::from_utf8(self.get_bytes(path)?).map_err(|_| format!("{}: is not text", path.display()))
    }

    /// A file read as bytes (a DER or PEM key).
    pub(super) fn get_bytes(&self, path: &Path) -> Result<&[u8], String> {
        match self.0.get(path) {
            Some(Ok(bytes)) => Ok(bytes.as_slice()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!(
                "{} was not read (key files are read by Config::load)",
                path.display()
            )),
        }
    }
}

impl RawKeyring {
    /// The `key_file` of a `raw-aes` keyring, relative paths resolved against `base` (the config file's
    /// directory, or the working directory for an inline config).
    pub fn key_file_path(&self, base: &Path) -> Option<PathBuf> {
        let file = self.key_file.as_ref()?;
        (self.kind == "raw-aes").then(|| super::resolve(base, file))
    }
}

impl KeyringSettings {
    /// Whether this keyring calls AWS (and so needs a local region).
    pub fn needs_aws(&self) -> bool {
        !matches!(self, KeyringSettings::RawAes { .. })
    }

    /// The KMS key ARN of a `kms-mrk` or `hierarchy` keyring.
    pub fn kms_key(&self) -> Option<&KmsArn> {
        match self {
            KeyringSettings::KmsMrk { key_arn } => Some(key_arn),
            KeyringSettings::Hierarchy(h) => Some(&h.key_arn),
            KeyringSettings::RawAes { .. } | KeyringSettings::KmsMrkDiscovery { .. } => None,
        }
    }

    /// Validates a keyring section; errors are `(field, message)` for the caller to place. `base` resolves a
    /// relative `key_file`, whose contents `key_files` holds.
    pub fn from_raw(
        raw: &RawKeyring,
        base: &Path,
        key_files: &KeyFiles,
    ) -> Result<KeyringSettings, (&'static str, String)> {
        match raw.kind.as_str() {
            "raw-aes" => {
                let namespace = required(&raw.key_namespace, "key_namespace")?;
                let name = required(&raw.key_name, "key_name")?;
                let key = match (&raw.key_base64, raw.key_file_path(base)) {
                    (Some(b64), None) => decode_key(b64.trim()).map_err(|m| ("key_base64", m))?,
                    (None, Some(file)) => {
                        let text = key_files.get(&file).map_err(|m| ("key_file", m))?;
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
            "kms-mrk" => Ok(KeyringSettings::KmsMrk { key_arn: key_arn(raw)? }),
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
                let key_arn = key_arn(raw)?;
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

/// The required `key_arn`, parsed: decrypt needs a key ARN, never an alias.
fn key_arn(raw: &RawKeyring) -> Result<KmsArn, (&'static str, String)> {
    let text = required(&raw.key_arn, "key_arn")?;
    KmsArn::parse_key(&text).map_err(|e| ("key_arn", e.to_string()))
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
