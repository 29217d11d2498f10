//! The `[verify]` section: settings of `ddbguard verify`.

use serde::Deserialize;

use super::{ConfigError, ConfigSource, Location};

/// The `[verify]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub lease_table: Option<String>,
    pub worker_id: Option<String>,
    pub sample_rate: Option<f64>,
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
/// leases. Reads `HOSTNAME` or `/etc/hostname`, so it is called by the load function, not by validation.
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

impl VerifySettings {
    /// Validates the section (`None`: the file has none); `default_worker_id` is used when `worker_id` is unset.
    pub(super) fn from_raw(
        origin: &ConfigSource,
        raw: Option<RawVerify>,
        default_worker_id: String,
    ) -> Result<VerifySettings, ConfigError> {
        let raw = raw.unwrap_or_default();
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            origin: origin.clone(),
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
            None => default_worker_id,
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
