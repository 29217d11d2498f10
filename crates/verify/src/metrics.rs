//! Every metric the workspace emits, in one place: its name, kind and HELP text.
//!
//! The crates record metrics with the `metrics` macros where the event happens; this module only describes
//! them, so that `/metrics` carries a `# HELP` line for each and the EMF writer knows their units. Call
//! [`describe_all`] once, right after installing the recorder. A test checks that `docs/METRICS.md` lists
//! every name here, and another that every `counter!`/`gauge!`/`histogram!` name in the workspace's sources
//! is here.

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observations.
    Histogram,
}

/// One metric: name, kind, unit and HELP text.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The full series name, `ddbguard_*`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its unit, for HELP and for CloudWatch.
    pub unit: ::metrics::Unit,
    /// The HELP text.
    pub help: &'static str,
}

/// The build information series: always `1`, labelled `version` and `git_sha`.
pub const BUILD_INFO: &str = "ddbguard_build_info";

use ::metrics::Unit;

/// Bucket bounds (seconds) of the request-latency histograms, the `*_duration_seconds` series: KMS and
/// GetRecords usually answer in 5–100 ms; the upper buckets catch throttling, retries inside the SDK and
/// timeouts. Buckets (rather than a summary's quantiles) can be summed across tasks and regions.
pub const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The suffix of every request-latency histogram, the series [`LATENCY_BUCKETS`] is for.
pub const LATENCY_SUFFIX: &str = "_duration_seconds";

/// Every metric the workspace emits.
pub const ALL: &[Metric] = &[
    Metric {
        name: "ddbguard_records_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Records verified, by table, region, origin_region (region of the record's key ARN), verdict and format.",
    },
    Metric {
        name: "ddbguard_stream_gaps_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Stream records lost before they were verified (trimmed, expired checkpoint or shard gone).",
    },
    Metric {
        name: "ddbguard_shard_lag_seconds",
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        help: "Now minus the creation time of the last record read from the shard; 0 at the shard's tip.",
    },
    Metric {
        name: "ddbguard_stream_lag_seconds",
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        help: "The largest ddbguard_shard_lag_seconds of the shards this process reads, by table; 0 when it reads \
               none.",
    },
    Metric {
        name: "ddbguard_stream_get_records_duration_seconds",
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        help: "Latency of completed DynamoDB Streams GetRecords calls, by table and outcome.",
    },
    Metric {
        name: "ddbguard_leases_held",
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Shard leases this process holds, by table.",
    },
    Metric {
        name: "ddbguard_kms_requests_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "KMS request attempts (retries count separately), by region, operation and outcome.",
    },
    Metric {
        name: "ddbguard_kms_request_duration_seconds",
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        help: "Latency of each KMS request attempt (without rate-limit waits or backoff), by region, operation and \
               outcome.",
    },
    Metric {
        name: "ddbguard_key_cache_hits_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Key cache lookups answered from the cache, by cache: kms_data_key or branch_key.",
    },
    Metric {
        name: "ddbguard_key_cache_loads_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Key cache misses that went to KMS (kms_data_key) or the key store (branch_key), by cache.",
    },
    Metric {
        name: "ddbguard_stream_throttles_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "DynamoDB Streams calls throttled and retried with backoff, by table and operation.",
    },
    Metric {
        name: "ddbguard_stream_iterator_refreshes_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Expired shard iterators fetched again from the checkpoint.",
    },
    Metric {
        name: "ddbguard_stream_duplicate_records_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Records seen again at or below a checkpoint (at-least-once delivery), skipped.",
    },
    Metric {
        name: "ddbguard_stream_malformed_records_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Stream records without a sequence number, left out of their page, by table.",
    },
    Metric {
        name: "ddbguard_quarantine_writes_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Quarantine entries of failing records, by outcome: written, failed (the write failed), dropped (the \
               queue was full).",
    },
    Metric {
        name: "ddbguard_canary_lag_seconds",
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        help: "Canary arrival time in this region's stream minus its write time in the origin region, by system, \
               table, origin_region and replica_region.",
    },
    Metric {
        name: "ddbguard_canary_missing",
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "1 when no canary from origin_region written within the canary SLO has arrived in replica_region, \
               else 0.",
    },
    Metric {
        name: "ddbguard_canaries_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Canary records judged with the local replica key, by system, table, origin_region, replica_region \
               and verdict.",
    },
    Metric {
        name: "ddbguard_canary_writes_total",
        kind: Kind::Counter,
        unit: Unit::Count,
        help: "Canary writes of this verifier, by system, table, region and outcome (ok, encrypt_failed, \
               write_failed).",
    },
    Metric {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        unit: Unit::Count,
        help: "Always 1; the labels name the running build's version and git revision.",
    },
];

/// Bucket upper bounds (seconds) of the histograms that are not request latencies (the canary lag): 1 ms to
/// 10 min, so that a healthy replication lag and an outage both resolve. (The Prometheus exporter renders
/// histograms without buckets as summaries, which do not aggregate across tasks.)
pub const HISTOGRAM_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Looks up a metric by its series name.
pub fn find(name: &str) -> Option<&'static Metric> {
    ALL.iter().find(|m| m.name == name)
}

/// Describes every metric to the installed recorder and sets `ddbguard_build_info{version,git_sha} 1`.
///
/// Call once after installing the recorder (Prometheus exporter, EMF layer); describing before any recorder
/// is installed does nothing.
pub fn describe_all(version: &str, git_sha: &str) {
    for m in ALL {
        match m.kind {
            Kind::Counter => ::metrics::describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => ::metrics::describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => ::metrics::describe_histogram!(m.name, m.unit, m.help),
        }
    }
    ::metrics::gauge!(BUILD_INFO, "version" => version.to_owned(), "git_sha" => git_sha.to_owned()).set(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// Metrics not yet in docs/METRICS.md (its owner adds them); the test fails once they are, so this
    /// list only shrinks.
    const NOT_YET_IN_DOCS: &[&str] = &[];

    fn workspace_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn docs_metrics_lists_every_metric() {
        let docs = std::fs::read_to_string(workspace_root().join("docs/METRICS.md")).unwrap();
        for m in ALL {
            let listed = docs.contains(&format!("| `{}` |", m.name));
            if NOT_YET_IN_DOCS.contains(&m.name) {
                assert!(
                    !listed,
                    "{} is in docs/METRICS.md now: remove it from NOT_YET_IN_DOCS",
                    m.name
                );
            } else {
                assert!(listed, "docs/METRICS.md has no table row for {}", m.name);
            }
        }
    }

    /// Collects `"ddbguard_…"` names passed to `counter!`/`gauge!`/`histogram!` in the non-test code of every
    /// `.rs` under `dir` (test modules, `tests.rs`, `tests/` and `benches/` record made-up series).
    fn emitted_names(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap_or_default();
            if path.is_dir() {
                if ["target", "tests", "benches"].iter().any(|skip| name == *skip) {
                    continue;
                }
                emitted_names(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") && name != "tests.rs" {
                let text = std::fs::read_to_string(&path).unwrap();
                let text = text.split("\n#[cfg(test)]").next().unwrap_or_default();
                for mac in ["counter!(", "gauge!(", "histogram!("] {
                    for (at, _) in text.match_indices(mac) {
                        let rest = text[at + mac.len()..].trim_start();
                        if let Some(rest) = rest.strip_prefix('"')
                            && let Some(end) = rest.find('"')
                            && rest[..end].starts_with("ddbguard_")
                        {
                            out.push(rest[..end].to_owned());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_emitted_metric_is_described() {
        let mut names = Vec::new();
        emitted_names(&workspace_root().join("crates"), &mut names);
        names.sort();
        names.dedup();
        assert!(names.len() >= 9, "the scan found too few metrics: {names:?}");
        for name in &names {
            assert!(
                find(name).is_some(),
                "{name} is emitted but not described in crates/verify/src/metrics.rs"
            );
        }
    }

    #[test]
    fn names_are_unique_and_helped() {
        for (i, m) in ALL.iter().enumerate() {
            assert!(m.name.starts_with("ddbguard_") && !m.help.is_empty(), "{}", m.name);
            assert!(ALL[i + 1..].iter().all(|o| o.name != m.name), "{} twice", m.name);
        }
    }

    #[test]
    fn describe_all_gives_help_text_and_build_info() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            describe_all("1.2.3", "abc123");
            ::metrics::counter!("ddbguard_records_total", "verdict" => "ok").increment(1);
        });
        let text = handle.render();
        assert!(
            text.contains("# HELP ddbguard_records_total Records verified"),
            "{text}"
        );
        assert!(
            text.contains("ddbguard_build_info{version=\"1.2.3\",git_sha=\"abc123\"} 1"),
            "{text}"
        );
    }
}
