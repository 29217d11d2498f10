//! The `[backfill]` section: settings of `ddbguard backfill` and `ddbguard migrate`.

use serde::Deserialize;

use super::{ConfigError, ConfigSource, Location};

/// The `[backfill]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackfill {
    pub ledger_table: Option<String>,
    pub read_units_per_second: Option<f64>,
    pub write_units_per_second: Option<f64>,
    pub read_capacity_share: Option<f64>,
    pub write_capacity_share: Option<f64>,
    pub kms_requests_per_second: Option<f64>,
    pub concurrency: Option<usize>,
}

/// Default `[backfill] ledger_table`.
pub const DEFAULT_LEDGER_TABLE: &str = "ddbguard-backfill";
/// Default read budget of an on-demand table: one full-speed scan segment's worth, far below the 40,000 RCU/s
/// account default, so the applications keep their headroom.
pub const DEFAULT_ON_DEMAND_READ_UNITS: f64 = 1000.0;
/// Default write budget of an on-demand table (each rewrite costs at least one WCU per started KB).
pub const DEFAULT_ON_DEMAND_WRITE_UNITS: f64 = 500.0;
/// Default share of a provisioned table's capacity a run may consume (read and write).
pub const DEFAULT_CAPACITY_SHARE: f64 = 0.5;
/// Default segments worked on at once by one process.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// A capacity budget: absolute, or a share of what a provisioned table has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Units per second.
    PerSecond(f64),
    /// A share (`0 < share <= 1`) of the table's provisioned units; on-demand tables use the on-demand default.
    Share(f64),
}

/// The validated `[backfill]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillSettings {
    /// The DynamoDB table (local region) holding segment leases, checkpoints and applied migrations.
    pub ledger_table: String,
    /// Read budget.
    pub read: Rate,
    /// Write budget.
    pub write: Rate,
    /// KMS requests per second for encryption; `None`: the process-wide `[aws] kms_requests_per_second`.
    pub kms_requests_per_second: Option<f64>,
    /// Segments worked on at once by one process.
    pub concurrency: usize,
}

impl Default for BackfillSettings {
    fn default() -> Self {
        BackfillSettings {
            ledger_table: DEFAULT_LEDGER_TABLE.to_owned(),
            read: Rate::Share(DEFAULT_CAPACITY_SHARE),
            write: Rate::Share(DEFAULT_CAPACITY_SHARE),
            kms_requests_per_second: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

impl Rate {
    /// Units per second for a table: the absolute rate, the share of its provisioned units, or `on_demand` for
    /// an on-demand table (and a table whose billing mode is unknown).
    pub fn units(self, provisioned: Option<i64>, on_demand: f64) -> f64 {
        match (self, provisioned) {
            (Rate::PerSecond(r), _) => r,
            (Rate::Share(s), Some(units)) => (s * units as f64).max(1.0),
            (Rate::Share(_), None) => on_demand,
        }
    }
}

/// Checks a rate flag or field: finite and positive.
pub fn check_rate(value: f64) -> Result<f64, String> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("must be a positive number, got {value}"))
    }
}

/// Checks a capacity share: within `(0, 1]`.
pub fn check_share(value: f64) -> Result<f64, String> {
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(format!(
            "must be within (0, 1] (a share of the provisioned capacity), got {value}"
        ))
    }
}

impl BackfillSettings {
    /// Validates the section (`None`: the file has none).
    pub(super) fn from_raw(origin: &ConfigSource, raw: Option<RawBackfill>) -> Result<BackfillSettings, ConfigError> {
        let raw = raw.unwrap_or_default();
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            origin: origin.clone(),
            location: Location::Section("backfill"),
            field: field.to_owned(),
            message,
        };
        let ledger_table = raw.ledger_table.unwrap_or_else(|| DEFAULT_LEDGER_TABLE.to_owned());
        if !(3..=255).contains(&ledger_table.len())
            || !ledger_table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(invalid(
                "ledger_table",
                format!("{ledger_table:?} is not a DynamoDB table name (3 to 255 letters, digits, '_', '-', '.')"),
            ));
        }
        let rate = |absolute: Option<f64>, share: Option<f64>, names: (&str, &str)| match (absolute, share) {
            (Some(_), Some(_)) => Err(invalid(
                names.0,
                format!("set either {} or {}, not both", names.0, names.1),
            )),
            (Some(r), None) => check_rate(r).map(Rate::PerSecond).map_err(|m| invalid(names.0, m)),
            (None, Some(s)) => check_share(s).map(Rate::Share).map_err(|m| invalid(names.1, m)),
            (None, None) => Ok(Rate::Share(DEFAULT_CAPACITY_SHARE)),
        };
        let read = rate(
            raw.read_units_per_second,
            raw.read_capacity_share,
            ("read_units_per_second", "read_capacity_share"),
        )?;
        let write = rate(
            raw.write_units_per_second,
            raw.write_capacity_share,
            ("write_units_per_second", "write_capacity_share"),
        )?;
        let kms_requests_per_second = raw
            .kms_requests_per_second
            .map(check_rate)
            .transpose()
            .map_err(|m| invalid("kms_requests_per_second", m))?;
        let concurrency = raw.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=256).contains(&concurrency) {
            return Err(invalid(
                "concurrency",
                format!("must be within 1..=256, got {concurrency}"),
            ));
        }
        Ok(BackfillSettings {
            ledger_table,
            read,
            write,
            kms_requests_per_second,
            concurrency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BackfillSettings, ConfigError> {
        let raw: RawBackfill = toml::from_str(text).unwrap();
        BackfillSettings::from_raw(&ConfigSource::Inline, Some(raw))
    }

    #[test]
    fn defaults_and_rates() {
        assert_eq!(
            BackfillSettings::from_raw(&ConfigSource::Inline, None).unwrap(),
            BackfillSettings::default()
        );
        let s = parse("ledger_table = \"jobs\"\nwrite_units_per_second = 25\nread_capacity_share = 0.2\n").unwrap();
        assert_eq!(s.ledger_table, "jobs");
        assert_eq!(s.write, Rate::PerSecond(25.0));
        assert_eq!(s.read, Rate::Share(0.2));
        assert_eq!(s.read.units(Some(100), 7.0), 20.0);
        assert_eq!(s.read.units(None, 7.0), 7.0);
        assert_eq!(s.write.units(Some(100), 7.0), 25.0);
        // A share of a tiny table still allows progress.
        assert_eq!(Rate::Share(0.1).units(Some(1), 7.0), 1.0);
    }

    #[test]
    fn errors_name_the_field() {
        for (text, field) in [
            (
                "write_units_per_second = 1\nwrite_capacity_share = 0.5\n",
                "write_units_per_second",
            ),
            ("write_capacity_share = 1.5\n", "write_capacity_share"),
            ("read_units_per_second = -1\n", "read_units_per_second"),
            ("kms_requests_per_second = 0\n", "kms_requests_per_second"),
            ("ledger_table = \"a b\"\n", "ledger_table"),
            ("concurrency = 0\n", "concurrency"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(
                e.contains("[backfill]") && e.contains(&format!("`{field}`")),
                "{text}: {e}"
            );
        }
    }
}
