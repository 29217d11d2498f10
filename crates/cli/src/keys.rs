//! `ddbguard keys check`: can every region decrypt what every other region encrypts?
//!
//! For every table whose keyring names a KMS key, in every region of `[aws] regions`: the key's state
//! (DescribeKey on the local replica ARN), whether the MRK's replica set covers every region, and a
//! round-trip matrix — a data key generated in each region and decrypted in every other one. Output is
//! a table on screen or JSON with `--json`. Exit code 0 when every cell works, 1 when any fails.

use std::fmt::Write as _;

use anyhow::Context as _;
use ddbguard_keys::kms::check::{CheckReport, KeyState, check_keys};
use serde::Serialize;

use crate::config::Config;
use crate::keyring::{self, AwsContext};

/// One table's result.
#[derive(Debug, Serialize)]
pub struct TableCheck {
    pub table: String,
    pub report: CheckReport,
    /// One line per problem, naming region, key and KMS error.
    pub failures: Vec<String>,
}

/// Checks the tables of `config` (or only `table`); returns the per-table reports.
pub async fn check(config: &Config, table: Option<&str>) -> anyhow::Result<Vec<TableCheck>> {
    let tables: Vec<_> = match table {
        Some(name) => vec![config.table(name)?],
        None => config.tables.iter().collect(),
    };
    // `kms-mrk` keys, and the keys that wrap branch keys (they must work in every region the key store serves).
    let targets: Vec<(&str, String)> = tables
        .iter()
        .filter_map(|t| Some((t.name.as_str(), t.keyring.kms_key()?.to_string())))
        .collect();
    if targets.is_empty() {
        anyhow::bail!(
            "{}: no {} uses a `kms-mrk` or `hierarchy` keyring, so there is no KMS key to check",
            config.origin,
            table.map_or("table".to_owned(), |t| format!("table named {t:?}"))
        );
    }
    let aws_settings = keyring::aws_settings(config).await?;
    let aws = AwsContext::new(&aws_settings).await;
    let mut out = Vec::with_capacity(targets.len());
    for (table, key_arn) in targets {
        let logical = config.table(table)?.dbe.logical_table_name.clone();
        let context = [("aws-crypto-table-name".to_owned(), logical)].into();
        let report = check_keys(&key_arn, &aws_settings.regions, &aws.kms, &context)
            .await
            .with_context(|| format!("table {table:?}: cannot check key {key_arn}"))?;
        let failures = report.failures();
        out.push(TableCheck {
            table: table.to_owned(),
            report,
            failures,
        });
    }
    Ok(out)
}

/// The human-readable rendering: a state table and the round-trip matrix per table.
pub fn render(checks: &[TableCheck]) -> String {
    let mut s = String::new();
    for c in checks {
        let r = &c.report;
        let _ = writeln!(
            s,
            "table {}  key {}{}",
            c.table,
            r.key_arn,
            if r.multi_region { "" } else { "  (NOT multi-Region)" }
        );
        let width = r.regions.iter().map(|x| x.region.len()).max().unwrap_or(6).max(6) + 2;
        let _ = writeln!(s, "  {:width$}{:18}replica ARN", "region", "state");
        for region in &r.regions {
            let state = match &region.state {
                KeyState::Enabled => "enabled".to_owned(),
                KeyState::Disabled => "DISABLED".to_owned(),
                KeyState::PendingDeletion => "PENDING DELETION".to_owned(),
                KeyState::Missing => "MISSING".to_owned(),
                KeyState::Other(o) => o.clone(),
                KeyState::Error(e) => format!("ERROR {}", e.code),
            };
            let _ = writeln!(s, "  {:width$}{state:18}{}", region.region, region.key_arn);
        }
        if !r.replicas_cover_all_regions {
            let _ = writeln!(s, "  replicas missing in: {}", r.missing_regions.join(", "));
        }
        let _ = writeln!(s, "  round trips (row: GenerateDataKey in, column: Decrypt in)");
        let _ = write!(s, "  {:width$}", "");
        for region in &r.regions {
            let _ = write!(s, "{:width$}", region.region);
        }
        let _ = writeln!(s);
        for from in &r.regions {
            let _ = write!(s, "  {:width$}", from.region);
            for to in &r.regions {
                let cell = r
                    .matrix
                    .iter()
                    .find(|c| c.encrypt_region == from.region && c.decrypt_region == to.region)
                    .map_or("?", |c| if c.ok { "ok" } else { "FAIL" });
                let _ = write!(s, "{cell:width$}");
            }
            let _ = writeln!(s);
        }
        if c.failures.is_empty() {
            let _ = writeln!(s, "  all {} cells ok", r.matrix.len());
        } else {
            let _ = writeln!(s, "  problems:");
            for f in &c.failures {
                let _ = writeln!(s, "    - {f}");
            }
        }
        let _ = writeln!(s);
    }
    s
}
