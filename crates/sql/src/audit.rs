//! `sql audit`: every protected value of one table on the local region's reader given its verdict, and with a
//! primary to compare against, the rows missing or different on the secondary.
//!
//! The comparison walks both sides in key order: each page read on the secondary, ending at key `L` after a page
//! that ended at `P`, is compared with the primary's rows in `(P, L]`, and the primary's rows after the last
//! secondary key are missing. A difference may be a write still replicating, so differences are read again on
//! both sides after `recheck_after`; only those that persist are findings.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use ddbguard_dbe::Verdict;
use futures::StreamExt as _;
use serde::Serialize;
use tokio_postgres::Client;

use crate::SqlError;
use crate::cipher::{ValueCipher, judge};
use crate::scan::{BoundTable, ScannedRow};

/// At most this many findings (and comparison differences) are listed in a report; the rest are counted.
pub const MAX_LISTED: usize = 100;

/// Tuning of an audit.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The region whose reader is audited (a label).
    pub region: String,
    /// Rows per page.
    pub page_size: i64,
    /// Values judged at once (each may be a key-service call).
    pub concurrency: usize,
    /// How long to wait before reading a difference again.
    pub recheck_after: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            region: String::new(),
            page_size: 500,
            concurrency: 16,
            recheck_after: Duration::from_secs(2),
        }
    }
}

/// One failing value.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// The row's key, `{column: value}`.
    pub key: serde_json::Value,
    /// The protected column.
    pub column: String,
    /// Its verdict.
    pub verdict: Verdict,
}

/// What `--compare-primary` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    /// Rows read on the primary.
    pub primary_rows: u64,
    /// Rows the primary has and the secondary does not.
    pub missing_on_secondary: u64,
    /// Rows on both whose contents differ.
    pub different: u64,
    /// Rows only the secondary has (deleted on the primary, not yet replayed).
    pub only_on_secondary: u64,
    /// The first [`MAX_LISTED`] differences: `{key, kind}`.
    pub samples: Vec<serde_json::Value>,
}

impl Comparison {
    fn passed(&self) -> bool {
        self.missing_on_secondary == 0 && self.different == 0 && self.only_on_secondary == 0
    }
}

/// The report of one audit; printed as JSON, shaped like `verify --until-caught-up`'s summary.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// Always `aurora`.
    pub system: &'static str,
    /// The table.
    pub table: String,
    /// The audited region.
    pub region: String,
    /// Rows read.
    pub rows: u64,
    /// Values with a verdict (NULLs are not values).
    pub records: u64,
    /// NULL protected values.
    pub nulls: u64,
    /// Verdicts by label.
    pub by_verdict: BTreeMap<Verdict, u64>,
    /// Verdicts by column and label.
    pub by_column: BTreeMap<String, BTreeMap<Verdict, u64>>,
    /// The first [`MAX_LISTED`] failing values.
    pub findings: Vec<Finding>,
    /// With a primary: the comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare_primary: Option<Comparison>,
    /// Whether the whole table was read (false when a signal stopped the audit).
    pub complete: bool,
    /// Complete, every verdict passes, and (with a primary) no row missing or different.
    pub passed: bool,
}

impl AuditReport {
    fn new(table: &str, region: &str) -> AuditReport {
        AuditReport {
            system: "aurora",
            table: table.to_owned(),
            region: region.to_owned(),
            rows: 0,
            records: 0,
            nulls: 0,
            by_verdict: BTreeMap::new(),
            by_column: BTreeMap::new(),
            findings: Vec::new(),
            compare_primary: None,
            complete: false,
            passed: false,
        }
    }

    /// Counts one verdict (and its metric, and its alert event when it fails).
    fn count(&mut self, row: &ScannedRow, bound: &BoundTable, column: &str, verdict: Verdict) {
        self.records += 1;
        *self.by_verdict.entry(verdict).or_default() += 1;
        *self
            .by_column
            .entry(column.to_owned())
            .or_default()
            .entry(verdict)
            .or_default() += 1;
        crate::metrics::value_judged(&bound.table.name, &self.region, column, verdict);
        if !verdict.is_pass() {
            let key = row.key_json(&bound.table);
            crate::metrics::finding(&bound.table.name, &self.region, column, &key, verdict);
            if self.findings.len() < MAX_LISTED {
                self.findings.push(Finding {
                    key,
                    column: column.to_owned(),
                    verdict,
                });
            }
        }
    }
}

/// Judges every protected value of `row`, `concurrency` at a time across the page.
pub(crate) async fn judge_rows<'a>(
    bound: &'a BoundTable,
    cipher: &'a dyn ValueCipher,
    rows: &'a [ScannedRow],
    concurrency: usize,
) -> Vec<(usize, usize, Option<Verdict>)> {
    let jobs = rows.iter().enumerate().flat_map(|(r, row)| {
        bound
            .table
            .columns
            .iter()
            .enumerate()
            .map(move |(c, col)| (r, c, row, col))
    });
    futures::stream::iter(jobs)
        .map(|(r, c, row, col)| async move {
            let verdict = match &row.values[c] {
                None => None,
                Some(stored) => {
                    let expected = bound.table.expected_context(&col.name, &row.text);
                    Some(judge(cipher, stored, expected.as_ref()).await)
                }
            };
            (r, c, verdict)
        })
        .buffered(concurrency.max(1))
        .collect()
        .await
}

/// Audits the table through `reader`; with `primary`, compares the two. Stops early (report not complete) when
/// `shutdown` completes.
pub async fn audit(
    reader: &Client,
    primary: Option<&Client>,
    bound: &BoundTable,
    cipher: &dyn ValueCipher,
    config: &AuditConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<AuditReport, SqlError> {
    let mut report = AuditReport::new(&bound.table.name, &config.region);
    let mut comparison = primary.map(|_| Comparison::default());
    let mut differences: Vec<(Vec<String>, &'static str)> = Vec::new();
    let mut last: Option<Vec<String>> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut stopped = false;
    loop {
        let page = tokio::select! {
            biased;
            () = &mut shutdown => { stopped = true; break; }
            page = bound.page(reader, last.as_deref(), config.page_size) => page?,
        };
        for (r, c, verdict) in judge_rows(bound, cipher, &page, config.concurrency).await {
            match verdict {
                None => report.nulls += 1,
                Some(v) => report.count(&page[r], bound, &bound.table.columns[c].name, v),
            }
        }
        report.rows += page.len() as u64;
        let Some(end) = page.last().map(|r| r.key.clone()) else {
            break;
        };
        if let (Some(primary), Some(cmp)) = (primary, comparison.as_mut()) {
            let theirs = match &last {
                None => bound.rows_by_keys(primary, &bound.statements.upto, &[&end]).await?,
                Some(prev) => {
                    bound
                        .rows_by_keys(primary, &bound.statements.range, &[prev, &end])
                        .await?
                }
            };
            cmp.primary_rows += theirs.len() as u64;
            diff(&page, theirs, &mut differences);
        }
        let full = page.len() as i64 == config.page_size;
        last = Some(end);
        if !full {
            break;
        }
    }
    if let (Some(primary), Some(cmp), false) = (primary, comparison.as_mut(), stopped) {
        // The primary's rows after the secondary's last key: missing there.
        let mut after = last.clone();
        loop {
            let theirs = bound.page(primary, after.as_deref(), config.page_size).await?;
            cmp.primary_rows += theirs.len() as u64;
            differences.extend(theirs.iter().map(|r| (r.key.clone(), "missing_on_secondary")));
            match theirs.last() {
                Some(r) if theirs.len() as i64 == config.page_size => after = Some(r.key.clone()),
                _ => break,
            }
        }
        recheck(reader, primary, bound, config, differences, cmp).await?;
    }
    report.compare_primary = comparison;
    report.complete = !stopped;
    report.passed = report.complete
        && report.by_verdict.keys().all(|v| v.is_pass())
        && report.compare_primary.as_ref().is_none_or(Comparison::passed);
    Ok(report)
}

/// Records the keys where one page of the secondary and the primary's rows of the same key range differ.
fn diff(ours: &[ScannedRow], theirs: Vec<ScannedRow>, out: &mut Vec<(Vec<String>, &'static str)>) {
    let mut theirs: HashMap<Vec<String>, String> = theirs.into_iter().map(|r| (r.key, r.digest)).collect();
    for row in ours {
        match theirs.remove(&row.key) {
            None => out.push((row.key.clone(), "only_on_secondary")),
            Some(digest) if digest != row.digest => out.push((row.key.clone(), "different")),
            Some(_) => {}
        }
    }
    let mut missing: Vec<_> = theirs.into_keys().collect();
    missing.sort();
    out.extend(missing.into_iter().map(|k| (k, "missing_on_secondary")));
}

/// Reads each difference again on both sides after the recheck delay and counts those that persist.
async fn recheck(
    reader: &Client,
    primary: &Client,
    bound: &BoundTable,
    config: &AuditConfig,
    differences: Vec<(Vec<String>, &'static str)>,
    cmp: &mut Comparison,
) -> Result<(), SqlError> {
    if differences.is_empty() {
        return Ok(());
    }
    tokio::time::sleep(config.recheck_after).await;
    for (key, _) in differences {
        let ours = bound.rows_by_keys(reader, &bound.statements.by_key, &[&key]).await?;
        let theirs = bound.rows_by_keys(primary, &bound.statements.by_key, &[&key]).await?;
        let kind = match (ours.first(), theirs.first()) {
            (None, None) => continue,
            (Some(a), Some(b)) if a.digest == b.digest => continue,
            (Some(_), Some(_)) => {
                cmp.different += 1;
                "different"
            }
            (None, Some(_)) => {
                cmp.missing_on_secondary += 1;
                "missing_on_secondary"
            }
            (Some(_), None) => {
                cmp.only_on_secondary += 1;
                "only_on_secondary"
            }
        };
        let key_json: serde_json::Value = bound
            .table
            .primary_key
            .iter()
            .zip(&key)
            .map(|(c, v)| (c.clone(), serde_json::Value::String(v.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into();
        tracing::warn!(
            event = "sql_replica_difference",
            system = "aurora",
            table = %bound.table.name,
            region = %config.region,
            key = %key_json,
            kind,
            "row differs between the primary and the secondary"
        );
        if cmp.samples.len() < MAX_LISTED {
            cmp.samples.push(serde_json::json!({ "key": key_json, "kind": kind }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, digest: &str) -> ScannedRow {
        ScannedRow {
            key: vec![key.to_owned()],
            text: Default::default(),
            values: vec![],
            digest: digest.to_owned(),
        }
    }

    #[test]
    fn diff_finds_missing_different_and_extra_rows() {
        let ours = [row("1", "a"), row("2", "b"), row("4", "d")];
        let theirs = vec![row("1", "a"), row("2", "B"), row("3", "c")];
        let mut out = Vec::new();
        diff(&ours, theirs, &mut out);
        assert_eq!(
            out,
            [
                (vec!["2".to_owned()], "different"),
                (vec!["4".to_owned()], "only_on_secondary"),
                (vec!["3".to_owned()], "missing_on_secondary"),
            ]
        );
    }
}
