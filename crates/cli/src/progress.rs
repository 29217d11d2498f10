//! Progress of a backfill run on stderr: a progress bar on a terminal, else one JSON line per snapshot (every
//! [`JSON_INTERVAL`]), so that ECS tasks and CI logs get machine-readable progress.

use std::io::IsTerminal as _;
use std::time::Duration;

use ddbguard_backfill::{Progress, Report};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
    pub fn update(&mut self, p: &Progress) {
        match &self.bar {
            Some(bar) => {
                if let Some(n) = p.estimated_items {
                    bar.set_length(n.max(p.scanned));
                }
                bar.set_position(p.scanned);
                bar.set_message(summary(p));
            }
            None => {
                let line = serde_json::json!({ "event": "backfill_progress", "job": self.job, "progress": p });
                eprintln!("{line}");
            }
        }
    }

    /// Clears the bar at the end.
    pub fn finish(&mut self, report: &Report) {
        if let Some(bar) = self.bar.take() {
            bar.set_position(report.progress.scanned);
            bar.finish_with_message(summary(&report.progress));
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
}
