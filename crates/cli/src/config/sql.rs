//! `[sql]`, `[sql.replicas]` and `[[sql_tables]]`: the Aurora Global Database side (PostgreSQL connection strings
//! per region, and the tables whose columns the application encrypts with the AWS Encryption SDK).
//!
//! Connection strings must not hold a password: passwords come from `PGPASSWORD` or the PostgreSQL password file
//! (`PGPASSFILE`, `~/.pgpass`), so the config file can be shared and logged.

use std::collections::BTreeMap;
use std::path::Path;

use ddbguard_sql::{ContextTemplate, Encoding, ProtectedColumn, SqlTable};
use serde::Deserialize;

use super::keyring::{KeyFiles, KeyringSettings, RawKeyring};
use super::{ConfigError, ConfigSource, Location};

/// `[sql]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSql {
    /// The home region's writer.
    pub primary: String,
    /// The home region's name (default: `[aws] region` when set there).
    pub home_region: Option<String>,
    /// Readers by region.
    #[serde(default)]
    pub replicas: BTreeMap<String, String>,
}

/// One `[[sql_tables]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSqlTable {
    pub name: String,
    pub primary_key: Vec<String>,
    pub columns: BTreeMap<String, RawColumn>,
    #[serde(default)]
    pub encryption_context: BTreeMap<String, String>,
    /// `sql verify`: the column marking new and changed rows.
    pub cursor_column: Option<String>,
    pub keyring: RawKeyring,
}

/// `[sql_tables.columns]` values.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawColumn {
    pub encoding: String,
}

/// The validated `[sql]` section.
#[derive(Debug, Clone)]
pub struct SqlSettings {
    /// The primary's connection string.
    pub primary: String,
    /// The home region, if named.
    pub home_region: Option<String>,
    /// Readers by region.
    pub replicas: BTreeMap<String, String>,
}

impl SqlSettings {
    /// The reader for `region`: its replica, else the primary when `region` is the home region (or no home
    /// region is named and `region` has no replica).
    pub fn reader_for(&self, region: &str) -> Option<&str> {
        match self.replicas.get(region) {
            Some(url) => Some(url),
            None if self.home_region.as_deref().is_none_or(|h| h == region) => Some(&self.primary),
            None => None,
        }
    }
}

/// A validated `[[sql_tables]]` entry.
#[derive(Debug, Clone)]
pub struct SqlTableSettings {
    /// The table as the SQL crate takes it.
    pub table: SqlTable,
    /// The keyring (the same kinds as `[[tables]]`, except `hierarchy`).
    pub keyring: KeyringSettings,
}

fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
        return Err("must be a postgresql:// connection string".into());
    }
    // A password is the part between ':' and '@' in the authority.
    let authority = url.split_once("://").map_or("", |(_, rest)| rest);
    let authority = authority.split(['/', '?']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && userinfo.contains(':')
    {
        return Err("holds a password; use PGPASSWORD or a password file (PGPASSFILE, ~/.pgpass)".into());
    }
    if url.contains("password=") {
        return Err("holds a password; use PGPASSWORD or a password file (PGPASSFILE, ~/.pgpass)".into());
    }
    Ok(())
}

impl SqlSettings {
    pub(super) fn from_raw(origin: &ConfigSource, raw: RawSql) -> Result<SqlSettings, ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            origin: origin.clone(),
            location: Location::Section("sql"),
            field,
            message,
        };
        check_url(&raw.primary).map_err(|m| invalid("primary".into(), m))?;
        for (region, url) in &raw.replicas {
            if !super::aws::valid_region(region) {
                return Err(invalid(format!("replicas.{region}"), "is not a region name".into()));
            }
            check_url(url).map_err(|m| invalid(format!("replicas.{region}"), m))?;
        }
        if let Some(home) = &raw.home_region
            && !super::aws::valid_region(home)
        {
            return Err(invalid("home_region".into(), format!("{home:?} is not a region name")));
        }
        Ok(SqlSettings {
            primary: raw.primary,
            home_region: raw.home_region,
            replicas: raw.replicas,
        })
    }
}

impl RawSqlTable {
    /// The key file this entry's keyring reads, if any.
    pub(super) fn key_file(&self, base: &Path) -> Option<std::path::PathBuf> {
        self.keyring.key_file_path(base)
    }
}

impl SqlTableSettings {
    pub(super) fn from_raw(
        origin: &ConfigSource,
        raw: RawSqlTable,
        base: &Path,
        key_files: &KeyFiles,
    ) -> Result<SqlTableSettings, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            origin: origin.clone(),
            location: Location::SqlTable(raw.name.clone()),
            field: field.to_owned(),
            message,
        };
        if raw.name.is_empty() || raw.name.split('.').any(str::is_empty) || raw.name.split('.').count() > 2 {
            return Err(invalid("name", "must be TABLE or SCHEMA.TABLE".into()));
        }
        if raw.primary_key.is_empty() || raw.primary_key.iter().any(String::is_empty) {
            return Err(invalid("primary_key", "must list at least one column".into()));
        }
        if raw.columns.is_empty() {
            return Err(invalid("columns", "must name at least one protected column".into()));
        }
        let mut columns = Vec::new();
        for (name, col) in &raw.columns {
            let encoding = match col.encoding.as_str() {
                "base64" => Encoding::Base64,
                "bytea" => Encoding::Bytea,
                other => {
                    return Err(invalid(
                        &format!("columns.{name}.encoding"),
                        format!("unknown encoding {other:?}; expected \"base64\" or \"bytea\""),
                    ));
                }
            };
            if raw.primary_key.contains(name) {
                return Err(invalid(
                    &format!("columns.{name}"),
                    "is a primary key column, which cannot be encrypted".into(),
                ));
            }
            columns.push(ProtectedColumn {
                name: name.clone(),
                encoding,
            });
        }
        let mut encryption_context = BTreeMap::new();
        for (key, template) in &raw.encryption_context {
            if key.starts_with("aws-crypto-") {
                return Err(invalid(
                    &format!("encryption_context.{key}"),
                    "the aws-crypto- prefix is reserved by the AWS Encryption SDK".into(),
                ));
            }
            let parsed =
                ContextTemplate::parse(template).map_err(|m| invalid(&format!("encryption_context.{key}"), m))?;
            if let Some(c) = parsed.row_columns().find(|c| raw.columns.contains_key(*c)) {
                return Err(invalid(
                    &format!("encryption_context.{key}"),
                    format!("{{row.{c}}} is a protected column; the context must be readable without decrypting"),
                ));
            }
            encryption_context.insert(key.clone(), parsed);
        }
        let keyring = KeyringSettings::from_raw(&raw.keyring, base, key_files)
            .map_err(|(field, message)| invalid(&format!("keyring.{field}"), message))?;
        if matches!(keyring, KeyringSettings::Hierarchy(_)) {
            return Err(invalid(
                "keyring.kind",
                "the hierarchy keyring is not supported for SQL tables; use kms-mrk, kms-mrk-discovery or raw-aes"
                    .into(),
            ));
        }
        Ok(SqlTableSettings {
            table: SqlTable {
                name: raw.name,
                primary_key: raw.primary_key,
                columns,
                encryption_context,
                cursor_column: raw.cursor_column,
            },
            keyring,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_connection_strings_are_refused() {
        assert!(check_url("postgresql://app@db:5432/app").is_ok());
        assert!(check_url("postgres://db/app?sslmode=require").is_ok());
        assert!(check_url("postgresql://app:pw@db:5432/app").is_err());
        assert!(check_url("postgresql://app@db/app?password=pw").is_err());
        assert!(check_url("mysql://db/app").is_err());
    }

    #[test]
    fn the_reader_is_the_local_replica_or_the_home_primary() {
        let s = SqlSettings {
            primary: "postgresql://p/app".into(),
            home_region: Some("us-east-1".into()),
            replicas: [("ap-southeast-2".to_owned(), "postgresql://r/app".to_owned())].into(),
        };
        assert_eq!(s.reader_for("ap-southeast-2"), Some("postgresql://r/app"));
        assert_eq!(s.reader_for("us-east-1"), Some("postgresql://p/app"));
        assert_eq!(s.reader_for("eu-west-1"), None);
    }
}
