//! Progress of a backfill run on stderr: a progress bar on a terminal, else one JSON line per snapshot (every
//! [`JSON_INTERVAL`]), so that ECS tasks and CI logs get machine-readable progress. The DynamoDB backfill and
//! `sql backfill` both show theirs here, through [`Snapshot`].

use std::io::IsTerminal as _;
use std::time::Duration;

use ddbguard_backfill::{Progress, Report};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// Between two JSON progress lines.
pub const JSON_INTERVAL: Duration = Duration::from_secs(5);
/// Between two updates of the progress bar.
pub const BAR_INTERVAL: Duration = Duration::from_millis(500);

/// Whether progress goes to a terminal.
fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// How often the engine should hand over a snapshot.
pub fn interval() -> Duration {
    if on_terminal() { BAR_INTERVAL } else { JSON_INTERVAL }
}

/// A progress snapshot of a backfill engine: its JSON form is the `progress` of a JSON line.
pub trait Snapshot: Serialize {
    /// Items (rows) read so far: the bar's position.
    fn position(&self) -> u64;
    /// The expected total, when the engine has an estimate: the bar's length.
    fn length(&self) -> Option<u64>;
    /// One line of counters under the bar.
    fn summary(&self) -> String;
}

impl Snapshot for Progress {
    fn position(&self) -> u64 {
        self.scanned
    }

    fn length(&self) -> Option<u64> {
        self.estimated_items
    }

    fn summary(&self) -> String {
        summary(self)
    }
}

impl Snapshot for ddbguard_sql::backfill::Progress {
    fn position(&self) -> u64 {
        ddbguard_sql::backfill::Progress::position(self)
    }

    fn length(&self) -> Option<u64> {
        self.estimated_rows
    }

    fn summary(&self) -> String {
        let c = &self.counts;
        format!(
            "{:.0} rows/s · encrypted {}, already encrypted {}, NULL {}, conflicts {}, left {}, failed {}{}",
            self.rows_per_second,
            c.encrypted,
            c.already_encrypted,
            c.nulls,
            c.conflicts,
            c.skipped_after_conflicts,
            c.failed,
            if c.would_encrypt > 0 {
                format!(", would encrypt {}", c.would_encrypt)
            } else {
                String::new()
            }
        )
    }
}

/// Shows progress snapshots.
#[derive(Debug)]
pub struct Reporter {
    job: String,
    bar: Option<ProgressBar>,
}

impl Reporter {
    /// A reporter for `job`: a bar when stderr is a terminal.
    pub fn new(job: &str, dry_run: bool) -> Reporter {
        let bar = on_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} items, ETA {eta}\n{msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(if dry_run {
                format!("{job} (dry run)")
            } else {
                job.to_owned()
            });
            bar
        });
        Reporter {
            job: job.to_owned(),
            bar,
        }
    }

    /// Shows one snapshot.
    pub fn update(&mut self, p: &impl Snapshot) {
        match &self.bar {
            Some(bar) => {
                if let Some(n) = p.length() {
                    bar.set_length(n.max(p.position()));
                }
                bar.set_position(p.position());
                bar.set_message(p.summary());
            }
            None => {
                let line = serde_json::json!({ "event": "backfill_progress", "job": self.job, "progress": p });
                eprintln!("{line}");
            }
        }
    }

    /// Ends the bar at the DynamoDB backfill's report (its engine sends no snapshot at the end).
    pub fn finish(&mut self, report: &Report) {
        if let Some(bar) = self.bar.take() {
            bar.set_position(report.progress.position());
            bar.finish_with_message(report.progress.summary());
        }
    }

    /// Ends the bar where the last snapshot left it (an engine whose last snapshot is the end of the run).
    pub fn done(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

/// One line of counters: outcomes, rate, consumed capacity.
pub fn summary(p: &Progress) -> String {
    let outcomes: Vec<String> = p.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!(
        "{:.0} items/s · {} · {:.1} RCU, {:.1} WCU, {:.0} KMS calls · segments {}/{}",
        p.items_per_second,
        if outcomes.is_empty() {
            "nothing yet".to_owned()
        } else {
            outcomes.join(", ")
        },
        p.read_units,
        p.write_units,
        p.kms_calls,
        p.segments_finished,
        p.segments
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_lists_outcomes_rate_and_capacity() {
        let p = Progress {
            elapsed_seconds: 2.0,
            scanned: 10,
            scanned_bytes: 1000,
            outcomes: [("encrypted".to_owned(), 7), ("legacy_format".to_owned(), 3)].into(),
            verdicts: Default::default(),
            legacy_refused: Default::default(),
            items_per_second: 5.0,
            read_units: 1.5,
            write_units: 7.0,
            kms_calls: 7.0,
            segments_finished: 1,
            segments: 8,
            estimated_items: Some(20),
            eta_seconds: Some(2),
        };
        let s = summary(&p);
        assert!(s.contains("encrypted 7, legacy_format 3"), "{s}");
        assert!(s.contains("1.5 RCU, 7.0 WCU, 7 KMS calls"), "{s}");
        assert!(s.contains("segments 1/8"), "{s}");
    }

    #[test]
    fn the_sql_snapshot_counts_earlier_runs_and_names_rows() {
        let p = ddbguard_sql::backfill::Progress {
            system: "aurora",
            elapsed_seconds: 2.0,
            resumed_at_rows: 1_000,
            rows_per_second: 150.0,
            estimated_rows: Some(5_000),
            eta_seconds: Some(25),
            counts: ddbguard_sql::backfill::Counts {
                rows_scanned: 300,
                encrypted: 290,
                already_encrypted: 10,
                conflicts: 2,
                ..Default::default()
            },
        };
        assert_eq!((Snapshot::position(&p), p.length()), (1_300, Some(5_000)));
        let s = Snapshot::summary(&p);
        assert!(s.starts_with("150 rows/s · encrypted 290, already encrypted 10"), "{s}");
        assert!(s.contains("conflicts 2"), "{s}");
        assert!(!s.contains("would encrypt"), "not a dry run: {s}");
    }
}
