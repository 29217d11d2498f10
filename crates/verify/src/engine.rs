//! One stream record in, one verdict out (architecture §4).
//!
//! The verifier keeps only what is about the stream record itself; everything about the item is the
//! [`Judge`]'s. In order, first failure wins:
//!
//! 1. `REMOVE` → `remove`; an event name other than INSERT, MODIFY, REMOVE → `policy_violation`
//!    (`unknown_event_name`).
//! 2. No NEW image (a KEYS_ONLY / OLD_IMAGE stream) → `policy_violation` (`no_new_image`): nothing can be verified.
//! 3. Image conversion ([`crate::convert`]) fails → `integrity_failed` with the conversion's reason.
//! 4. The item goes to [`Judge::judge`], [`Depth::Full`] when the record is sampled, else [`Depth::Structural`].
//!
//! Every record, malformed or not, ends as one [`RecordOutcome`] built from a [`Judgement`]: the same verdict and
//! reason types, metric and log as any other. Outcomes carry the primary key as DynamoDB JSON and messages that
//! name attributes, keys and ARNs — never an attribute value other than the primary key, and never a decrypted
//! value.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodbstreams::types::AttributeValue as StreamValue;
use ddbguard_dbe::{Keyring, Reason, Verdict};
use ddbguard_stream::{EventName, StreamRecord};
use serde_json::Value;

use crate::convert::{attribute_from_stream, image_to_item};
use crate::judge::{Depth, ItemFormat, Judge, Judgement};
use crate::policy::{PolicyError, VerifyPolicy};

/// The `origin_region` metric label when a record's origin is not known (REMOVE, raw or hierarchical keys).
pub const UNKNOWN_ORIGIN: &str = "unknown";

/// The verdict of one record and what an operator needs to find it (serializes with the verdict as its label,
/// e.g. for a JSON list of failing records).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RecordOutcome {
    /// The verdict.
    pub verdict: Verdict,
    /// The reason code (e.g. `recipient_tag_mismatch`, `not_sampled`).
    pub reason: Reason,
    /// Region of the first `aws-kms` EDK's key ARN: where the item was most likely written.
    pub origin_region: Option<String>,
    /// The primary key attributes as DynamoDB JSON (`{"pk":{"S":"a"}}`); no other attribute.
    pub keys: Value,
    /// The stream event id.
    pub event_id: String,
    /// Human-readable detail: names attributes, EDKs and ARNs, never values.
    pub message: String,
    /// The item's format, the `format` label (not serialized: the JSON lists of records keep their fields).
    #[serde(skip)]
    pub format: ItemFormat,
}

impl RecordOutcome {
    /// Whether the verdict is `ok`, `ok_structural` or `remove`.
    pub fn is_pass(&self) -> bool {
        self.verdict.is_pass()
    }
}

/// The verdict engine of one table in one region.
#[derive(Debug)]
pub struct Verifier {
    judge: Judge,
    table: String,
    region: String,
}

impl Verifier {
    /// A verifier for `policy`, decrypting with `keyring`, running in `region` (the `region` metric label). The
    /// `table` label defaults to the logical table name.
    pub fn new(
        policy: VerifyPolicy,
        keyring: Arc<dyn Keyring>,
        region: impl Into<String>,
    ) -> Result<Self, PolicyError> {
        Ok(Verifier {
            table: policy.table.config.logical_table_name.clone(),
            judge: Judge::new(policy, keyring)?,
            region: region.into(),
        })
    }

    /// Judges legacy items (when the policy has a [`crate::LegacyPolicy`]) with keys from `provider`.
    pub fn with_legacy_provider(mut self, provider: Arc<dyn ddbguard_ddbec::MaterialsProvider>) -> Self {
        self.judge = self.judge.with_legacy_provider(provider);
        self
    }

    /// Overrides the `table` label (e.g. the physical table name when it differs from the logical one).
    pub fn with_table_label(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The `table` label.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The verifying region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The policy.
    pub fn policy(&self) -> &VerifyPolicy {
        self.judge.policy()
    }

    /// The judge every record's item goes to.
    pub fn judge(&self) -> &Judge {
        &self.judge
    }

    /// Whether a record is chosen for full decryption: a deterministic function of its event id, so a retried
    /// batch makes the same choice.
    pub fn is_sampled(&self, event_id: &str) -> bool {
        sampled(event_id, self.policy().sample_rate)
    }

    /// Verifies one record, counts it in `ddbguard_records_total` and logs an `alert` event if it fails.
    pub async fn verify(&self, record: &StreamRecord) -> RecordOutcome {
        let outcome = self.evaluate(record).await;
        self.report(&outcome);
        outcome
    }

    /// Counts an outcome in `ddbguard_records_total{table,region,origin_region,verdict,format}` and, for a
    /// failing verdict, emits a `warn` event with target `alert` naming table, keys, verdict, reason and format.
    pub fn report(&self, outcome: &RecordOutcome) {
        let origin = outcome.origin_region.as_deref().unwrap_or(UNKNOWN_ORIGIN);
        metrics::counter!(
            "ddbguard_records_total",
            "table" => self.table.clone(),
            "region" => self.region.clone(),
            "origin_region" => origin.to_owned(),
            "verdict" => outcome.verdict.as_str(),
            "format" => outcome.format.as_str(),
        )
        .increment(1);
        if !outcome.is_pass() {
            tracing::warn!(
                target: "alert",
                event = "record_verdict",
                table = %self.table,
                region = %self.region,
                origin_region = origin,
                keys = %outcome.keys,
                verdict = outcome.verdict.as_str(),
                reason = outcome.reason.as_str(),
                format = outcome.format.as_str(),
                event_id = %outcome.event_id,
                detail = %outcome.message,
                "record failed verification"
            );
        }
    }

    /// The verdict of one record, without metrics or logs.
    pub async fn evaluate(&self, record: &StreamRecord) -> RecordOutcome {
        let judgement = self.judge_record(record).await;
        RecordOutcome {
            verdict: judgement.verdict,
            reason: judgement.reason,
            origin_region: judgement.origin_region,
            keys: self.keys_json(record),
            event_id: record.event_id.clone(),
            message: judgement.message,
            format: judgement.format,
        }
    }

    /// The stream-only steps, then the judge.
    async fn judge_record(&self, record: &StreamRecord) -> Judgement {
        match record.event_name {
            EventName::Remove => return Judgement::new(Verdict::Remove, Reason::Remove, ""),
            EventName::Unknown => {
                return Judgement::new(
                    Verdict::PolicyViolation,
                    Reason::UnknownEventName,
                    "the record's event name is none of INSERT, MODIFY, REMOVE: this ddbguard cannot judge it",
                );
            }
            EventName::Insert | EventName::Modify => {}
        }
        let Some(image) = &record.new_image else {
            return Judgement::new(
                Verdict::PolicyViolation,
                Reason::NoNewImage,
                format!(
                    "{} record has no NEW image: the stream view type must include new images",
                    record.event_name.as_str()
                ),
            );
        };
        let item = match image_to_item(image) {
            Ok(item) => item,
            Err(e) => return Judgement::new(Verdict::IntegrityFailed, e.reason(), e.to_string()),
        };
        let depth = if self.is_sampled(&record.event_id) {
            Depth::Full
        } else {
            Depth::Structural
        };
        self.judge.judge(&item, depth).await
    }

    /// The primary key as DynamoDB JSON: the record's `Keys`, else the key attributes of the NEW image.
    fn keys_json(&self, record: &StreamRecord) -> Value {
        let from_image;
        let keys: &HashMap<String, StreamValue> = if record.keys.is_empty() {
            from_image = record
                .new_image
                .as_ref()
                .or(record.old_image.as_ref())
                .map(|image| {
                    self.policy()
                        .table
                        .config
                        .key_names()
                        .filter_map(|k| image.get_key_value(k).map(|(n, v)| (n.clone(), v.clone())))
                        .collect()
                })
                .unwrap_or_default();
            &from_image
        } else {
            &record.keys
        };
        // Sorted by name so that log lines and quarantine entries are the same whatever the map order
        // (serde_json keeps insertion order when another crate enables its `preserve_order` feature).
        let mut sorted: Vec<_> = keys.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut out = serde_json::Map::new();
        for (name, value) in sorted {
            let json = match attribute_from_stream(value, name) {
                Ok(v) => ddbguard_dbe::json::attribute_to_ddb_json(&v),
                Err(e) => Value::String(format!("<{}>", e.reason().as_str())),
            };
            out.insert(name.clone(), json);
        }
        Value::Object(out)
    }
}

/// Deterministic sampling: FNV-1a over the event id, finalized with the SplitMix64 mixer, compared with
/// `rate × 2^64`.
pub fn sampled(event_id: &str, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate.is_nan() || rate <= 0.0 {
        return false;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in event_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    // rate < 1, so the product is < 2^64; `as` saturates anyway.
    h < (rate * 18_446_744_073_709_551_616.0) as u64
}
