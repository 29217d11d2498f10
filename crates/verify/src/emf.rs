//! CloudWatch Embedded Metric Format (EMF): every metric as JSON lines on stdout, for `--emf`.
//!
//! An ECS task whose logs go to CloudWatch Logs (the `awslogs` driver) gets CloudWatch metrics from these
//! lines without an agent or a scraper. The writer takes periodic snapshots of the same Prometheus text
//! `/metrics` serves (so both outputs always agree, and Prometheus stays as it is) and turns each into EMF
//! documents:
//!
//! - one document per label set; the labels are its dimensions (one dimension set, all the labels) and its
//!   top-level string members; at most [`MAX_METRICS_PER_DOCUMENT`] metrics per document, as EMF requires;
//! - namespace [`NAMESPACE`]; units from [`crate::metrics`] (`_seconds` → `Seconds`, else `Count`/`None`);
//! - counters as the increase since the previous flush (CloudWatch sums them per period; a value that went
//!   down — a restarted series — counts from zero); gauges as their value;
//! - histograms as `Values`/`Counts` arrays: with buckets, each bucket's upper bound with the observations
//!   that fell into it since the previous flush; without (the exporter's summaries), one value, the mean of
//!   the new observations, with their count, so CloudWatch's SampleCount, Sum and Average are exact.
//!
//! Start it with [`spawn_emf_writer`]; [`EmfWriter`] is the pure snapshot-to-documents part.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::metrics::{Kind, find};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "ddbguard";
/// EMF's limit of metrics in one document.
pub const MAX_METRICS_PER_DOCUMENT: usize = 100;
/// EMF's limit of values in one metric's `Values` array.
pub const MAX_VALUES_PER_METRIC: usize = 100;
/// The default flush interval: CloudWatch's standard resolution.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Labels of one series, sorted by name.
type Labels = BTreeMap<String, String>;

/// One metric's value in one document.
#[derive(Debug, Clone, PartialEq)]
enum Datum {
    Single(f64),
    Distribution { values: Vec<f64>, counts: Vec<f64> },
}

/// A histogram series as read from the text: cumulative buckets (if any), sum and count.
#[derive(Debug, Default, Clone)]
struct HistogramSample {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

/// One parsed snapshot of the Prometheus text.
#[derive(Debug, Default)]
struct Snapshot {
    /// Counters and gauges: (name, labels) → value.
    scalars: BTreeMap<(String, Labels), (Kind, f64)>,
    histograms: BTreeMap<(String, Labels), HistogramSample>,
}

/// Turns successive Prometheus text snapshots into EMF documents; remembers what the previous flush saw so
/// counters and histograms are written as increases.
#[derive(Debug, Default)]
pub struct EmfWriter {
    previous_counters: HashMap<(String, Labels), f64>,
    previous_histograms: HashMap<(String, Labels), HistogramSample>,
}

impl EmfWriter {
    /// A writer that has flushed nothing yet (the first flush writes counters' whole values).
    pub fn new() -> Self {
        Self::default()
    }

    /// The EMF documents (one JSON object each) for the snapshot `prometheus_text`, stamped `timestamp_ms`.
    pub fn flush(&mut self, prometheus_text: &str, timestamp_ms: u64) -> Vec<Value> {
        let snapshot = parse(prometheus_text);
        let mut by_labels: BTreeMap<Labels, Vec<(String, Datum)>> = BTreeMap::new();
        for ((name, labels), (kind, value)) in snapshot.scalars {
            let datum = match kind {
                Kind::Counter => {
                    let before = self.previous_counters.insert((name.clone(), labels.clone()), value);
                    match before {
                        Some(before) if before <= value => value - before,
                        _ => value,
                    }
                }
                _ => value,
            };
            by_labels.entry(labels).or_default().push((name, Datum::Single(datum)));
        }
        for ((name, labels), sample) in snapshot.histograms {
            let before = self
                .previous_histograms
                .insert((name.clone(), labels.clone()), sample.clone())
                .filter(|b| b.count <= sample.count)
                .unwrap_or_default();
            if let Some(datum) = histogram_datum(&before, &sample) {
                by_labels.entry(labels).or_default().push((name, datum));
            }
        }
        let mut documents = Vec::new();
        for (labels, metrics) in by_labels {
            for chunk in metrics.chunks(MAX_METRICS_PER_DOCUMENT) {
                documents.push(document(&labels, chunk, timestamp_ms));
            }
        }
        documents
    }
}

/// The new observations of a histogram since `before`, or `None` when there are none.
fn histogram_datum(before: &HistogramSample, now: &HistogramSample) -> Option<Datum> {
    let new_count = now.count - before.count;
    if new_count <= 0.0 {
        return None;
    }
    if now.buckets.is_empty() {
        let mean = (now.sum - before.sum) / new_count;
        return Some(Datum::Distribution {
            values: vec![mean],
            counts: vec![new_count],
        });
    }
    let cumulative_before = |le: f64| before.buckets.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, c)| *c);
    let (mut values, mut counts) = (Vec::new(), Vec::new());
    let (mut previous_bound, mut previous_new) = (0.0_f64, 0.0_f64);
    for &(le, cumulative) in &now.buckets {
        let new_cumulative = cumulative - cumulative_before(le);
        let in_bucket = new_cumulative - previous_new;
        if in_bucket > 0.0 {
            // `+Inf` has no value to stand for it: its observations are at least the last finite bound.
            values.push(if le.is_finite() { le } else { previous_bound });
            counts.push(in_bucket);
        }
        if le.is_finite() {
            previous_bound = le;
        }
        previous_new = new_cumulative;
    }
    // EMF takes at most 100 distinct values: fold the highest buckets into the 100th.
    if values.len() > MAX_VALUES_PER_METRIC {
        let extra: f64 = counts[MAX_VALUES_PER_METRIC - 1..].iter().sum();
        values.truncate(MAX_VALUES_PER_METRIC);
        counts.truncate(MAX_VALUES_PER_METRIC);
        counts[MAX_VALUES_PER_METRIC - 1] = extra;
    }
    Some(Datum::Distribution { values, counts })
}

/// The CloudWatch unit of a metric.
fn unit(name: &str) -> &'static str {
    if let Some(m) = find(name) {
        return match m.unit {
            ::metrics::Unit::Count => "Count",
            ::metrics::Unit::Seconds => "Seconds",
            ::metrics::Unit::Milliseconds => "Milliseconds",
            ::metrics::Unit::Microseconds => "Microseconds",
            ::metrics::Unit::Bytes => "Bytes",
            ::metrics::Unit::Percent => "Percent",
            _ => "None",
        };
    }
    if name.ends_with("_seconds") {
        "Seconds"
    } else if name.ends_with("_total") {
        "Count"
    } else {
        "None"
    }
}

fn document(labels: &Labels, metrics: &[(String, Datum)], timestamp_ms: u64) -> Value {
    let definitions: Vec<Value> = metrics
        .iter()
        .map(|(name, _)| json!({ "Name": name, "Unit": unit(name) }))
        .collect();
    let mut doc = Map::new();
    doc.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [labels.keys().collect::<Vec<_>>()],
                "Metrics": definitions,
            }],
        }),
    );
    for (key, value) in labels {
        doc.insert(key.clone(), Value::String(value.clone()));
    }
    for (name, datum) in metrics {
        let value = match datum {
            Datum::Single(v) => json!(v),
            Datum::Distribution { values, counts } => json!({ "Values": values, "Counts": counts }),
        };
        doc.insert(name.clone(), value);
    }
    Value::Object(doc)
}

/// Parses the Prometheus text exposition format (as `metrics-exporter-prometheus` writes it).
fn parse(text: &str) -> Snapshot {
    let mut types: HashMap<&str, Kind> = HashMap::new();
    let mut snapshot = Snapshot::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                let kind = match kind {
                    "counter" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    "histogram" | "summary" => Kind::Histogram,
                    _ => continue,
                };
                types.insert(name, kind);
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((name, mut labels, value)) = parse_sample(line) else {
            continue;
        };
        if let Some(&kind) = types.get(name.as_str()) {
            if kind == Kind::Histogram {
                // A summary's quantile lines: CloudWatch computes its own percentiles from Values/Counts.
                continue;
            }
            snapshot.scalars.insert((name, labels), (kind, value));
            continue;
        }
        for (suffix, part) in [("_bucket", 0), ("_sum", 1), ("_count", 2)] {
            let Some(base) = name.strip_suffix(suffix) else {
                continue;
            };
            if types.get(base) != Some(&Kind::Histogram) {
                continue;
            }
            let le = if part == 0 {
                match labels.remove("le").map(|le| parse_value(&le)) {
                    Some(Some(le)) => Some(le),
                    _ => break,
                }
            } else {
                None
            };
            let sample = snapshot
                .histograms
                .entry((base.to_owned(), labels.clone()))
                .or_default();
            match (part, le) {
                (0, Some(le)) => sample.buckets.push((le, value)),
                (1, _) => sample.sum = value,
                _ => sample.count = value,
            }
            break;
        }
    }
    for sample in snapshot.histograms.values_mut() {
        sample.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    snapshot
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// `name{a="x",b="y"} value [timestamp]` → (name, labels, value); `None` for a line it cannot read.
fn parse_sample(line: &str) -> Option<(String, Labels, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Labels::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, end) = parse_labels(inner)?;
        labels = parsed;
        rest = &inner[end..];
    }
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some((name, labels, value))
}

/// `a="x",b="y"}…` → the labels and the index just after `}`; reads `\\`, `\"` and `\n` escapes.
fn parse_labels(inner: &str) -> Option<(Labels, usize)> {
    let mut labels = Labels::new();
    let mut chars = inner.char_indices();
    loop {
        let (start, first) = chars.by_ref().find(|(_, c)| *c != ',' && *c != ' ')?;
        if first == '}' {
            return Some((labels, start + 1));
        }
        let mut key = String::from(first);
        loop {
            match chars.next()?.1 {
                '=' => break,
                c => key.push(c),
            }
        }
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()?.1 {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_owned(), value);
    }
}

/// A running EMF writer; [`EmfHandle::stop`] writes a last flush and ends it.
#[derive(Debug)]
pub struct EmfHandle {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl EmfHandle {
    /// Writes one last flush (so the final counts of a stopping task reach CloudWatch) and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Spawns a task that every `interval` renders the metrics with `render` (e.g. `PrometheusHandle::render`)
/// and writes them to stdout as EMF JSON lines, one document per line. Must be called inside a Tokio runtime.
pub fn spawn_emf_writer(render: impl Fn() -> String + Send + 'static, interval: Duration) -> EmfHandle {
    spawn_emf_writer_to(render, interval, std::io::stdout())
}

/// [`spawn_emf_writer`] to any output.
pub fn spawn_emf_writer_to(
    render: impl Fn() -> String + Send + 'static,
    interval: Duration,
    mut out: impl Write + Send + 'static,
) -> EmfHandle {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut writer = EmfWriter::new();
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; the first flush comes one interval after start.
        ticks.tick().await;
        loop {
            let last = tokio::select! {
                _ = ticks.tick() => false,
                _ = &mut stopped => true,
            };
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let mut lines = String::new();
            for doc in writer.flush(&render(), now_ms) {
                lines.push_str(&doc.to_string());
                lines.push('\n');
            }
            // One write per flush, so the lines of a flush are not interleaved with other output.
            if let Err(e) = out.write_all(lines.as_bytes()).and_then(|()| out.flush()) {
                tracing::warn!(error = %e, "emf: cannot write metrics");
            }
            if last {
                return;
            }
        }
    });
    EmfHandle { stop, task }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    const TEXT: &str = "\
# HELP ddbguard_records_total Records verified.
# TYPE ddbguard_records_total counter
ddbguard_records_total{table=\"orders\",region=\"us-east-1\",verdict=\"ok\"} 5
ddbguard_records_total{table=\"orders\",region=\"us-east-1\",verdict=\"plaintext\"} 1
# TYPE ddbguard_leases_held gauge
ddbguard_leases_held{table=\"orders\"} 2
# TYPE ddbguard_stream_malformed_records_total counter
ddbguard_stream_malformed_records_total 0
";

    fn metric_names(doc: &Value) -> Vec<String> {
        doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// What CloudWatch requires of every document: the envelope, declared dimensions and metrics present.
    fn assert_valid_emf(doc: &Value) {
        let aws = &doc["_aws"];
        assert!(aws["Timestamp"].is_u64(), "{doc}");
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 1);
        assert_eq!(directives[0]["Namespace"], NAMESPACE);
        for set in directives[0]["Dimensions"].as_array().unwrap() {
            let set = set.as_array().unwrap();
            assert!(set.len() <= 30);
            for key in set {
                assert!(
                    doc[key.as_str().unwrap()].is_string(),
                    "dimension {key} has no string member: {doc}"
                );
            }
        }
        let metrics = directives[0]["Metrics"].as_array().unwrap();
        assert!(!metrics.is_empty() && metrics.len() <= MAX_METRICS_PER_DOCUMENT);
        for m in metrics {
            let name = m["Name"].as_str().unwrap();
            assert!(m["Unit"].is_string());
            let value = &doc[name];
            assert!(
                value.is_number() || (value["Values"].is_array() && value["Counts"].is_array()),
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn writes_one_document_per_label_set_with_the_envelope() {
        let docs = EmfWriter::new().flush(TEXT, 1_700_000_000_000);
        assert_eq!(docs.len(), 4, "{docs:#?}");
        docs.iter().for_each(assert_valid_emf);
        let plaintext = docs.iter().find(|d| d["verdict"] == "plaintext").unwrap();
        assert_eq!(plaintext["_aws"]["Timestamp"], 1_700_000_000_000_u64);
        assert_eq!(
            plaintext["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["region", "table", "verdict"]])
        );
        assert_eq!(
            plaintext["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            json!([{"Name": "ddbguard_records_total", "Unit": "Count"}])
        );
        assert_eq!(plaintext["table"], "orders");
        assert_eq!(plaintext["ddbguard_records_total"], 1.0);
        // A series without labels has one empty dimension set: the metric aggregated over everything.
        let malformed = docs
            .iter()
            .find(|d| d.get("ddbguard_stream_malformed_records_total").is_some())
            .unwrap();
        assert_eq!(malformed["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
    }

    #[test]
    fn counters_are_written_as_increases_and_gauges_as_values() {
        let mut writer = EmfWriter::new();
        writer.flush(TEXT, 1);
        let later = TEXT
            .replace("verdict=\"ok\"} 5", "verdict=\"ok\"} 12")
            .replace("{table=\"orders\"} 2", "{table=\"orders\"} 3");
        let docs = writer.flush(&later, 2);
        let ok = docs.iter().find(|d| d["verdict"] == "ok").unwrap();
        assert_eq!(ok["ddbguard_records_total"], 7.0);
        let plaintext = docs.iter().find(|d| d["verdict"] == "plaintext").unwrap();
        assert_eq!(plaintext["ddbguard_records_total"], 0.0);
        let leases = docs.iter().find(|d| d.get("ddbguard_leases_held").is_some()).unwrap();
        assert_eq!(leases["ddbguard_leases_held"], 3.0);
        // A counter that went down (a series recreated) counts from zero.
        let reset = later.replace("verdict=\"ok\"} 12", "verdict=\"ok\"} 4");
        let docs = writer.flush(&reset, 3);
        assert_eq!(
            docs.iter().find(|d| d["verdict"] == "ok").unwrap()["ddbguard_records_total"],
            4.0
        );
    }

    #[test]
    fn histograms_become_values_and_counts() {
        let text = |b1: u32, b2: u32, inf: u32, sum: f64| {
            format!(
                "# TYPE ddbguard_canary_lag_seconds histogram\n\
                 ddbguard_canary_lag_seconds_bucket{{origin_region=\"us-east-1\",le=\"0.5\"}} {b1}\n\
                 ddbguard_canary_lag_seconds_bucket{{origin_region=\"us-east-1\",le=\"1\"}} {b2}\n\
                 ddbguard_canary_lag_seconds_bucket{{origin_region=\"us-east-1\",le=\"+Inf\"}} {inf}\n\
                 ddbguard_canary_lag_seconds_sum{{origin_region=\"us-east-1\"}} {sum}\n\
                 ddbguard_canary_lag_seconds_count{{origin_region=\"us-east-1\"}} {inf}\n"
            )
        };
        let mut writer = EmfWriter::new();
        let docs = writer.flush(&text(2, 3, 4, 5.0), 1);
        assert_eq!(docs.len(), 1);
        assert_valid_emf(&docs[0]);
        assert_eq!(docs[0]["origin_region"], "us-east-1");
        assert!(docs[0].get("le").is_none(), "le is the bucket, not a dimension");
        assert_eq!(
            docs[0]["ddbguard_canary_lag_seconds"],
            json!({"Values": [0.5, 1.0, 1.0], "Counts": [2.0, 1.0, 1.0]})
        );
        assert_eq!(metric_names(&docs[0]), ["ddbguard_canary_lag_seconds"]);
        assert_eq!(docs[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"], "Seconds");
        // Only the new observations, and nothing at all when there are none.
        let docs = writer.flush(&text(2, 5, 6, 7.0), 2);
        assert_eq!(
            docs[0]["ddbguard_canary_lag_seconds"],
            json!({"Values": [1.0], "Counts": [2.0]})
        );
        assert!(writer.flush(&text(2, 5, 6, 7.0), 3).is_empty());
    }

    #[test]
    fn summaries_become_their_mean_and_count() {
        let text = |sum: f64, count: u32| {
            format!(
                "# TYPE ddbguard_kms_seconds summary\n\
                 ddbguard_kms_seconds{{quantile=\"0.5\"}} 0.1\n\
                 ddbguard_kms_seconds_sum {sum}\n\
                 ddbguard_kms_seconds_count {count}\n"
            )
        };
        let mut writer = EmfWriter::new();
        let docs = writer.flush(&text(2.0, 4), 1);
        assert_eq!(docs.len(), 1, "{docs:#?}");
        assert_eq!(
            docs[0]["ddbguard_kms_seconds"],
            json!({"Values": [0.5], "Counts": [4.0]})
        );
        let docs = writer.flush(&text(5.0, 5), 2);
        assert_eq!(
            docs[0]["ddbguard_kms_seconds"],
            json!({"Values": [3.0], "Counts": [1.0]})
        );
    }

    #[test]
    fn at_most_100_metrics_per_document() {
        let mut text = String::new();
        for i in 0..150 {
            text.push_str(&format!(
                "# TYPE ddbguard_m{i} gauge\nddbguard_m{i}{{table=\"t\"}} {i}\n"
            ));
        }
        let docs = EmfWriter::new().flush(&text, 1);
        assert_eq!(docs.len(), 2);
        docs.iter().for_each(assert_valid_emf);
        assert_eq!(metric_names(&docs[0]).len() + metric_names(&docs[1]).len(), 150);
    }

    #[test]
    fn label_values_are_unescaped() {
        let (name, labels, value) =
            parse_sample(r#"ddbguard_x{a="q\"uote",b="back\\slash",c="new\nline",} 1.5"#).unwrap();
        assert_eq!(name, "ddbguard_x");
        assert_eq!(value, 1.5);
        assert_eq!(labels["a"], "q\"uote");
        assert_eq!(labels["b"], "back\\slash");
        assert_eq!(labels["c"], "new\nline");
        assert!(parse_sample("ddbguard_y{a=\"unterminated} 1").is_none());
        assert_eq!(parse_sample("ddbguard_z 3 1700000000").unwrap().2, 3.0);
    }

    /// The exporter's own text, not a hand-written sample: what `verify` will actually hand the writer.
    #[test]
    fn reads_the_prometheus_exporter_output() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            crate::metrics::describe_all("1.0.0", "abc");
            ::metrics::counter!("ddbguard_records_total", "table" => "t", "verdict" => "ok").increment(3);
            ::metrics::histogram!("ddbguard_canary_lag_seconds", "origin_region" => "us-east-1").record(2.0);
            ::metrics::histogram!("ddbguard_canary_lag_seconds", "origin_region" => "us-east-1").record(4.0);
        });
        let docs = EmfWriter::new().flush(&handle.render(), 5);
        docs.iter().for_each(assert_valid_emf);
        let find = |name: &str| {
            docs.iter()
                .find(|d| d.get(name).is_some())
                .unwrap_or_else(|| panic!("{name}: {docs:#?}"))
        };
        assert_eq!(find("ddbguard_records_total")["ddbguard_records_total"], 3.0);
        assert_eq!(find("ddbguard_build_info")["git_sha"], "abc");
        let lag = find("ddbguard_canary_lag_seconds");
        assert_eq!(
            lag["ddbguard_canary_lag_seconds"],
            json!({"Values": [3.0], "Counts": [2.0]})
        );
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_writer_flushes_every_interval_and_once_more_on_stop() {
        let out = Shared::default();
        let handle = spawn_emf_writer_to(|| TEXT.to_owned(), Duration::from_secs(60), out.clone());
        tokio::time::sleep(Duration::from_secs(121)).await;
        let lines = |out: &Shared| String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(lines(&out).lines().count(), 8, "two flushes of four documents");
        handle.stop().await;
        let text = lines(&out);
        assert_eq!(text.lines().count(), 12);
        for line in text.lines() {
            assert_valid_emf(&serde_json::from_str(line).unwrap());
        }
    }
}
