//! The SQL side's metrics. The canary series share their names and HELP text with the DynamoDB canaries (one
//! dashboard for both systems) and carry `system="aurora"`.

use ddbguard_dbe::Verdict;

/// Protected values judged, by table, region, column and verdict.
pub const VALUES_TOTAL: &str = "ddbguard_sql_values_total";
/// Seconds between a canary's write on the primary and its read on a secondary.
pub const CANARY_LAG: &str = "ddbguard_canary_lag_seconds";
/// 1 while a region's newest canary is overdue, else 0.
pub const CANARY_MISSING: &str = "ddbguard_canary_missing";

/// Describes the series (HELP text), once per process.
pub fn describe() {
    metrics::describe_counter!(
        VALUES_TOTAL,
        "Protected SQL column values judged, by system, table, region, column and verdict."
    );
    metrics::describe_histogram!(
        CANARY_LAG,
        metrics::Unit::Seconds,
        "Seconds from a canary's write in its origin region to its verified read here."
    );
    metrics::describe_gauge!(
        CANARY_MISSING,
        "1 while the newest canary from origin_region is overdue here (replication stalled or key unusable), else 0."
    );
}

/// Counts one judged value.
pub(crate) fn value_judged(table: &str, region: &str, column: &str, verdict: Verdict) {
    metrics::counter!(
        VALUES_TOTAL,
        "system" => "aurora",
        "table" => table.to_owned(),
        "region" => region.to_owned(),
        "column" => column.to_owned(),
        "verdict" => verdict.as_str(),
    )
    .increment(1);
}

/// The `alert` log event of a value that failed verification (`sql_finding`, WARN, target `alert` like the
/// DynamoDB verifier's `record_verdict`, so one log filter pages on both systems). It names the row by its
/// primary key and the column, never the value.
pub(crate) fn finding(table: &str, region: &str, column: &str, key: &serde_json::Value, verdict: Verdict) {
    tracing::warn!(
        target: "alert",
        event = "sql_finding",
        system = "aurora",
        table,
        region,
        column,
        key = %key,
        verdict = verdict.as_str(),
        "protected value failed verification"
    );
}
