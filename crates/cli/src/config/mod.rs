//! The `ddbguard.toml` configuration: read once, expanded, parsed with serde, then validated into typed settings.
//!
//! Loading has one place that touches the outside world, [`Config::load`]: it picks the source (`--config`
//! file or the inline `DDBGUARD_CONFIG_TOML`), reads it, expands `${VAR}` references ([`expand`]), reads the
//! key files the config names and the host name for the default worker id. Everything after that is pure:
//! the TOML is parsed into the `Raw*` types, which mirror the file field for field (unknown fields are rejected
//! so that typos surface), and validated into [`Config`], whose values are typed and ready to use (parsed KMS
//! ARNs, decoded keys, algorithm suites), so callers never parse them again. What needs AWS — the local region
//! when the file leaves it to the SDK's region chain — is settled later by the binary
//! ([`AwsSection::resolve`]). Every error names the source, the table or section and the field, so an operator
//! can fix it without reading code.
//!
//! Modules: [`aws`] (`[aws]`), [`verify`] (`[verify]`), [`backfill`] (`[backfill]`), [`migration`] (migration
//! files), [`tables`] (`[[tables]]`), [`sql`] (`[sql]` and `[[sql_tables]]`), [`keyring`]
//! (`[tables.keyring]`), [`expand`] (`${VAR}` substitution).

pub mod aws;
pub mod backfill;
pub mod expand;
pub mod keyring;
pub mod legacy;
pub mod migration;
pub mod sql;
pub mod tables;
pub mod verify;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use self::aws::{AwsSection, AwsSettings, DEFAULT_KMS_REQUESTS_PER_SECOND};
pub use self::backfill::{BackfillSettings, Rate};
pub use self::expand::ExpandError;
pub use self::keyring::{HierarchySettings, KeyFiles, KeyringSettings};
pub use self::legacy::{LegacyProviderSettings, LegacySettings};
pub use self::sql::{SqlSettings, SqlTableSettings};
pub use self::tables::TableSettings;
pub use self::verify::{DEFAULT_LEASE_TABLE, VerifySettings, default_worker_id};

/// The environment variable that may hold the whole config file (ECS secrets, SSM parameters).
pub const INLINE_CONFIG_VAR: &str = "DDBGUARD_CONFIG_TOML";

/// Where the config text came from; its `Display` starts every config error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file (`--config` / `DDBGUARD_CONFIG`).
    File(PathBuf),
    /// The text of the `DDBGUARD_CONFIG_TOML` environment variable.
    Inline,
}

impl ConfigSource {
    /// The directory relative `key_file`s are resolved against: the config file's, or the working directory
    /// for an inline config.
    fn base_dir(&self) -> &Path {
        match self {
            ConfigSource::File(path) => path.parent().unwrap_or(Path::new(".")),
            ConfigSource::Inline => Path::new("."),
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "config file {}", path.display()),
            ConfigSource::Inline => write!(f, "config in ${INLINE_CONFIG_VAR}"),
        }
    }
}

/// A configuration problem, with enough context to find and fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither a config file nor an inline config was given.
    #[error("no config: pass --config FILE, or set DDBGUARD_CONFIG (a file) or {INLINE_CONFIG_VAR} (the file's text)")]
    Missing,
    /// Both a config file and an inline config were given.
    #[error(
        "both a config file ({}) and {INLINE_CONFIG_VAR} are set; use one (unset DDBGUARD_CONFIG and drop \
         --config, or unset {INLINE_CONFIG_VAR})",
        path.display()
    )]
    Ambiguous { path: PathBuf },
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A `${VAR}` reference could not be expanded.
    #[error("{origin}: {error}")]
    Expand { origin: ConfigSource, error: ExpandError },
    /// The text is not valid TOML or does not have the expected shape.
    #[error("{origin}: {message}")]
    Parse { origin: ConfigSource, message: String },
    /// A value is present but not acceptable.
    #[error("{origin}: {location}: field `{field}`: {message}")]
    Invalid {
        origin: ConfigSource,
        location: Location,
        field: String,
        message: String,
    },
    /// `--table NAME` names no configured table.
    #[error("{origin}: no table named {name:?} (configured: {known})")]
    UnknownTable {
        origin: ConfigSource,
        name: String,
        known: String,
    },
}

/// Where in the file a problem is: a table entry or a top-level section.
#[derive(Debug, Clone)]
pub enum Location {
    /// The `[[tables]]` entry with this `name` (or its index when the name is missing).
    Table(String),
    /// A top-level section such as `[aws]`.
    Section(&'static str),
    /// The `[[sql_tables]]` entry with this `name`.
    SqlTable(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Table(name) => write!(f, "table {name:?}"),
            Location::Section(name) => write!(f, "[{name}]"),
            Location::SqlTable(name) => write!(f, "sql table {name:?}"),
        }
    }
}

/// The TOML file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub aws: Option<aws::RawAws>,
    pub verify: Option<verify::RawVerify>,
    pub backfill: Option<backfill::RawBackfill>,
    #[serde(default)]
    pub tables: Vec<tables::RawTable>,
    pub sql: Option<sql::RawSql>,
    #[serde(default)]
    pub sql_tables: Vec<sql::RawSqlTable>,
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Where it was read from (for messages).
    pub origin: ConfigSource,
    /// The `[aws]` section, with defaults when absent; the local region may be left to the environment.
    pub aws: AwsSection,
    /// The `[verify]` section, with defaults when absent.
    pub verify: VerifySettings,
    /// The `[backfill]` section, with defaults when absent.
    pub backfill: BackfillSettings,
    /// The `[[tables]]` entries, in file order, names unique.
    pub tables: Vec<TableSettings>,
    /// The `[sql]` section, if any.
    pub sql: Option<SqlSettings>,
    /// The `[[sql_tables]]` entries, in file order, names unique.
    pub sql_tables: Vec<SqlTableSettings>,
}

/// The `--config` flag, shared by every subcommand that reads the config.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// The ddbguard config file (TOML). Without it (and without DDBGUARD_CONFIG), the whole file's text is read
    /// from DDBGUARD_CONFIG_TOML (for ECS secrets or SSM parameters); setting both is an error. `${VAR}` and
    /// `${VAR:-default}` in the text are replaced from the environment (`$${` is a literal `${`).
    #[arg(long, env = "DDBGUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    /// Loads the config these arguments and the process environment select.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.config.as_deref(), &|name| std::env::var(name).ok())
    }
}

impl Config {
    /// Reads, expands and validates the config: the file at `path`, else the text of `DDBGUARD_CONFIG_TOML`
    /// (an empty value counts as unset). `env` looks up environment variables (`std::env::var` in the binary; a
    /// map in tests). This is the only step that reads files.
    pub fn load(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let inline = env(INLINE_CONFIG_VAR).filter(|text| !text.is_empty());
        let (origin, text) = match (path, inline) {
            (Some(path), Some(_)) => return Err(ConfigError::Ambiguous { path: path.to_owned() }),
            (None, None) => return Err(ConfigError::Missing),
            (None, Some(text)) => (ConfigSource::Inline, text),
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                (ConfigSource::File(path.to_owned()), text)
            }
        };
        let raw = Config::parse_raw(&origin, &text, env)?;
        let base = origin.base_dir();
        let key_files: Vec<PathBuf> = raw
            .tables
            .iter()
            .flat_map(|t| t.key_files(base))
            .chain(raw.sql_tables.iter().filter_map(|t| t.key_file(base)))
            .collect();
        let key_files = KeyFiles::read(key_files.iter().map(PathBuf::as_path));
        Config::validate(origin, raw, &key_files, default_worker_id())
    }

    /// Parses config text that needs nothing from outside (no `${VAR}`, no `key_file`): for tests and examples.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let origin = ConfigSource::File(path.to_owned());
        let raw = Config::parse_raw(&origin, text, &|_| None)?;
        Config::validate(origin, raw, &KeyFiles::default(), default_worker_id())
    }

    /// Expands `${VAR}` references with `env` and parses the TOML.
    pub fn parse_raw(
        origin: &ConfigSource,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RawConfig, ConfigError> {
        let text = expand::expand(text, env).map_err(|error| ConfigError::Expand {
            origin: origin.clone(),
            error,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            origin: origin.clone(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Validates a parsed file into typed settings, without I/O: `key_files` holds what the `key_file`s say and
    /// `default_worker_id` is used when `[verify] worker_id` is unset.
    pub fn validate(
        origin: ConfigSource,
        raw: RawConfig,
        key_files: &KeyFiles,
        default_worker_id: String,
    ) -> Result<Config, ConfigError> {
        let aws = AwsSection::from_raw(&origin, raw.aws)?;
        let verify = VerifySettings::from_raw(&origin, raw.verify, default_worker_id)?;
        let backfill = BackfillSettings::from_raw(&origin, raw.backfill)?;
        let mut seen = BTreeSet::new();
        let mut tables = Vec::with_capacity(raw.tables.len());
        for table in raw.tables {
            let settings = TableSettings::from_raw(&origin, table, origin.base_dir(), key_files)?;
            if !seen.insert(settings.name.clone()) {
                return Err(ConfigError::Invalid {
                    origin,
                    location: Location::Table(settings.name),
                    field: "name".into(),
                    message: "this table is configured twice".into(),
                });
            }
            tables.push(settings);
        }
        let sql = raw.sql.map(|s| SqlSettings::from_raw(&origin, s)).transpose()?;
        let mut sql_tables: Vec<SqlTableSettings> = Vec::with_capacity(raw.sql_tables.len());
        for table in raw.sql_tables {
            let settings = SqlTableSettings::from_raw(&origin, table, origin.base_dir(), key_files)?;
            if sql_tables.iter().any(|t| t.table.name == settings.table.name) {
                return Err(ConfigError::Invalid {
                    origin,
                    location: Location::SqlTable(settings.table.name),
                    field: "name".into(),
                    message: "this table is configured twice".into(),
                });
            }
            sql_tables.push(settings);
        }
        if sql.is_none() && !sql_tables.is_empty() {
            return Err(ConfigError::Invalid {
                origin,
                location: Location::Section("sql"),
                field: "primary".into(),
                message: "[[sql_tables]] need a [sql] section with the primary's connection string".into(),
            });
        }
        Ok(Config {
            origin,
            aws,
            verify,
            backfill,
            tables,
            sql,
            sql_tables,
        })
    }

    /// The `[aws]` settings with the local region settled: the file's `region`, else `from_chain` (the AWS SDK
    /// region chain's answer). Errors name the field when there is none.
    pub fn aws_settings(&self, from_chain: Option<String>) -> Result<AwsSettings, ConfigError> {
        self.aws.resolve(&self.origin, from_chain)
    }

    /// The `[sql]` section and the `[[sql_tables]]` entry named `name`.
    pub fn sql_table(&self, name: &str) -> Result<(&SqlSettings, &SqlTableSettings), ConfigError> {
        let table = self.sql_tables.iter().find(|t| t.table.name == name);
        match (&self.sql, table) {
            (Some(sql), Some(table)) => Ok((sql, table)),
            _ => Err(ConfigError::UnknownTable {
                origin: self.origin.clone(),
                name: name.to_owned(),
                known: if self.sql_tables.is_empty() {
                    "none".to_owned()
                } else {
                    self.sql_tables
                        .iter()
                        .map(|t| t.table.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            }),
        }
    }

    /// The settings of the table with this physical name.
    pub fn table(&self, name: &str) -> Result<&TableSettings, ConfigError> {
        self.tables
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ConfigError::UnknownTable {
                origin: self.origin.clone(),
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

/// A key file's path: relative paths are against `base` (the config file's directory, or the working directory
/// for an inline config).
fn resolve(base: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_owned()
    } else {
        base.join(file)
    }
}

#[cfg(test)]
mod tests;
