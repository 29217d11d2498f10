//! The `[verify]` section: settings of `ddbguard verify`.

use std::time::Duration;

use ddbguard_verify::canary::{self, CanarySettings};
use ddbguard_verify::quarantine::{self, QuarantineSettings};
use serde::Deserialize;

use super::{ConfigError, ConfigSource, Location};

/// The `[verify]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub lease_table: Option<String>,
    pub worker_id: Option<String>,
    pub sample_rate: Option<f64>,
    pub quarantine: Option<bool>,
    pub quarantine_table: Option<String>,
    pub quarantine_retention: Option<String>,
    pub canaries: Option<bool>,
    pub canary_interval: Option<String>,
    pub canary_slo: Option<String>,
    pub canary_prefix: Option<String>,
    pub canary_ttl_attribute: Option<String>,
    pub canary_ttl: Option<String>,
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
    /// Where failing records are kept (`quarantine = false`: nowhere).
    pub quarantine: Option<QuarantineSettings>,
    /// The quarantine table name, also when `quarantine = false` (for `ddbguard quarantine`).
    pub quarantine_table: String,
    /// Canaries (`canaries = false`: none). The origin regions are filled in from `[aws] regions` once the
    /// local region is known ([`VerifySettings::canaries_in`]).
    pub canaries: Option<CanarySettings>,
}

impl VerifySettings {
    /// The canaries as `verify`, `audit` and `backfill` see them: every replica region in `regions` (`[aws]
    /// regions`, with the local one) writes its own; a single-region setup expects only its own.
    pub fn canaries_in(&self, regions: &[String]) -> Option<CanarySettings> {
        self.canaries.clone().map(|mut canaries| {
            canaries.origins = regions.to_vec();
            canaries
        })
    }
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
        let quarantine_table = raw
            .quarantine_table
            .unwrap_or_else(|| quarantine::DEFAULT_TABLE.to_owned());
        if !is_table_name(&quarantine_table) {
            return Err(invalid(
                "quarantine_table",
                format!("{quarantine_table:?} is not a DynamoDB table name (3 to 255 letters, digits, '_', '-', '.')"),
            ));
        }
        let duration = |field: &str, text: Option<String>, default: Duration, min: Duration| match text {
            None => Ok(default),
            Some(text) => match parse_duration(&text) {
                Some(d) if d >= min => Ok(d),
                _ => Err(invalid(
                    field,
                    format!(
                        "{text:?} is not a duration of at least {}s (a whole number and s, m, h or d: \"10s\")",
                        min.as_secs()
                    ),
                )),
            },
        };
        let retention = duration(
            "quarantine_retention",
            raw.quarantine_retention,
            quarantine::DEFAULT_RETENTION,
            Duration::from_secs(3600),
        )?;
        let quarantine = raw.quarantine.unwrap_or(true).then(|| QuarantineSettings {
            table: quarantine_table.clone(),
            retention,
            ..QuarantineSettings::default()
        });
        let interval = duration(
            "canary_interval",
            raw.canary_interval,
            canary::DEFAULT_INTERVAL,
            Duration::from_secs(1),
        )?;
        let slo = duration(
            "canary_slo",
            raw.canary_slo,
            canary::DEFAULT_SLO,
            Duration::from_secs(1),
        )?;
        if slo <= interval {
            return Err(invalid(
                "canary_slo",
                format!(
                    "{}s must be longer than canary_interval ({}s): every origin would be missing between two canaries",
                    slo.as_secs(),
                    interval.as_secs()
                ),
            ));
        }
        let ttl = duration(
            "canary_ttl",
            raw.canary_ttl,
            canary::DEFAULT_TTL,
            Duration::from_secs(3600),
        )?;
        let prefix = raw.canary_prefix.unwrap_or_else(|| canary::DEFAULT_PREFIX.to_owned());
        if prefix.is_empty() || prefix.len() > 200 {
            return Err(invalid("canary_prefix", "must be 1 to 200 characters long".into()));
        }
        if let Some(attr) = &raw.canary_ttl_attribute
            && attr.trim().is_empty()
        {
            return Err(invalid("canary_ttl_attribute", "must not be empty".into()));
        }
        let canaries = raw.canaries.unwrap_or(true).then(|| CanarySettings {
            interval,
            slo,
            prefix,
            origins: Vec::new(),
            ttl_attribute: raw.canary_ttl_attribute,
            ttl,
        });
        Ok(VerifySettings {
            lease_table,
            worker_id,
            sample_rate,
            quarantine,
            quarantine_table,
            canaries,
        })
    }

    /// The lease table of the stream of `table`.
    pub fn lease_table_for(&self, table: &str) -> String {
        format!("{}-{table}", self.lease_table)
    }
}

fn is_table_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A duration written as a whole number and a unit: `"90s"`, `"10m"`, `"12h"`, `"30d"`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(unit_secs).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_a_number_and_a_unit() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }
}
