//! One stream record in, one verdict out (architecture §4).
//!
//! Order of checks, first failure wins:
//!
//! 1. `REMOVE` → `remove`.
//! 2. No NEW image (a KEYS_ONLY / OLD_IMAGE stream) → `policy_violation` (`no_new_image`): nothing can be verified.
//! 3. Image conversion ([`crate::convert`]) fails → `integrity_failed` with the conversion's reason.
//! 4. Neither `aws_dbe_head` nor `aws_dbe_foot`: `legacy_format` for `*amzn-ddb-map-desc*`, else `plaintext` if
//!    the policy encrypts anything, else `policy_violation` (`not_encrypted`: every item must at least be signed).
//! 5. [`check_structure`]: header and footer parse, key attributes present, legend matches the signed attributes,
//!    encrypted attributes well-formed → else the error's verdict.
//! 6. EDKs: with a configured KMS key, every `aws-kms` EDK names a key that MRK-matches it, and there is at least
//!    one → else `key_not_mrk` (no keyring call is made).
//! 7. Shape vs policy from the header's legend: an attribute the policy wants encrypted written in plaintext →
//!    `plaintext`; a signed attribute the policy does not know → `policy_violation`
//!    (`unexpected_signed_attribute`); a different action → `policy_violation` (`action_mismatch`); a different
//!    suite than `require_suite` → `policy_violation` (`wrong_suite`).
//! 8. Not sampled (and no hierarchical EDK) → `ok_structural`.
//! 9. [`decrypt_item`] → `ok`, or the error's verdict (`integrity_failed`, `key_unavailable`, `kms_throttled`, …).
//!
//! Outcomes carry the primary key as DynamoDB JSON and messages that name attributes, keys and ARNs — never an
//! attribute value other than the primary key, and never a decrypted value.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodbstreams::types::AttributeValue as StreamValue;
use ddbguard_dbe::{
    CryptoAction, DbeError, EncryptedDataKey, FOOTER_ATTRIBUTE, HEADER_ATTRIBUTE, Header, Item, Keyring,
    LEGACY_MATERIAL_DESCRIPTION, Verdict, check_structure, decrypt_item, signed_attribute_names,
};
use ddbguard_keys::arn::KmsArn;
use ddbguard_stream::{EventName, StreamRecord};
use serde_json::Value;

use crate::convert::{attribute_from_stream, image_to_item};
use crate::policy::{PolicyError, VerifyPolicy};

/// EDK provider id of the AWS KMS keyrings.
pub const KMS_PROVIDER_ID: &str = "aws-kms";
/// EDK provider id of the hierarchical keyring.
pub const HIERARCHY_PROVIDER_ID: &str = "aws-kms-hierarchy";
/// The `origin_region` metric label when a record's origin is not known (REMOVE, raw or hierarchical keys).
pub const UNKNOWN_ORIGIN: &str = "unknown";

/// The verdict of one record and what an operator needs to find it (serializes with the verdict as its label,
/// e.g. for a JSON list of failing records).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RecordOutcome {
    /// The verdict.
    #[serde(serialize_with = "verdict_label")]
    pub verdict: Verdict,
    /// A stable snake_case reason code (e.g. `recipient_tag_mismatch`, `not_sampled`).
    pub reason: &'static str,
    /// Region of the first `aws-kms` EDK's key ARN: where the item was most likely written.
    pub origin_region: Option<String>,
    /// The primary key attributes as DynamoDB JSON (`{"pk":{"S":"a"}}`); no other attribute.
    pub keys: Value,
    /// The stream event id.
    pub event_id: String,
    /// Human-readable detail: names attributes, EDKs and ARNs, never values.
    pub message: String,
}

impl RecordOutcome {
    /// Whether the verdict is `ok`, `ok_structural` or `remove`.
    pub fn is_pass(&self) -> bool {
        verdict_passes(self.verdict)
    }
}

fn verdict_label<S: serde::Serializer>(v: &Verdict, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
}

/// Whether a verdict counts as passing (`ok`, `ok_structural`, `remove`).
pub fn verdict_passes(v: Verdict) -> bool {
    matches!(v, Verdict::Ok | Verdict::OkStructural | Verdict::Remove)
}

/// A failed check: verdict, reason, message.
struct Fail(Verdict, &'static str, String);

impl From<DbeError> for Fail {
    fn from(e: DbeError) -> Fail {
        Fail(e.verdict(), e.reason(), e.to_string())
    }
}

/// The verdict engine of one table in one region.
#[derive(Debug)]
pub struct Verifier {
    policy: VerifyPolicy,
    keyring: Arc<dyn Keyring>,
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
        policy.validate()?;
        Ok(Verifier {
            table: policy.table.logical_table_name.clone(),
            policy,
            keyring,
            region: region.into(),
        })
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
        &self.policy
    }

    /// Whether a record is chosen for full decryption: a deterministic function of its event id, so a retried
    /// batch makes the same choice.
    pub fn is_sampled(&self, event_id: &str) -> bool {
        sampled(event_id, self.policy.sample_rate)
    }

    /// Verifies one record, counts it in `ddbguard_records_total` and logs an `alert` event if it fails.
    pub async fn verify(&self, record: &StreamRecord) -> RecordOutcome {
        let outcome = self.evaluate(record).await;
        self.report(&outcome);
        outcome
    }

    /// Counts an outcome in `ddbguard_records_total{table,region,origin_region,verdict}` and, for a failing
    /// verdict, emits a `warn` event with target `alert` naming table, keys, verdict and reason.
    pub fn report(&self, outcome: &RecordOutcome) {
        let origin = outcome.origin_region.as_deref().unwrap_or(UNKNOWN_ORIGIN);
        metrics::counter!(
            "ddbguard_records_total",
            "table" => self.table.clone(),
            "region" => self.region.clone(),
            "origin_region" => origin.to_owned(),
            "verdict" => outcome.verdict.as_str(),
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
                reason = outcome.reason,
                event_id = %outcome.event_id,
                detail = %outcome.message,
                "record failed verification"
            );
        }
    }

    /// The verdict of one record, without metrics or logs.
    pub async fn evaluate(&self, record: &StreamRecord) -> RecordOutcome {
        let keys = self.keys_json(record);
        let mut origin = None;
        let (verdict, reason, message) = match self.check(record, &mut origin).await {
            Ok((verdict, reason)) => (verdict, reason, String::new()),
            Err(Fail(verdict, reason, message)) => (verdict, reason, message),
        };
        RecordOutcome {
            verdict,
            reason,
            origin_region: origin,
            keys,
            event_id: record.event_id.clone(),
            message,
        }
    }

    async fn check(&self, record: &StreamRecord, origin: &mut Option<String>) -> Result<(Verdict, &'static str), Fail> {
        match record.event_name {
            EventName::Remove => return Ok((Verdict::Remove, "remove")),
            EventName::Unknown => {
                return Err(Fail(
                    Verdict::PolicyViolation,
                    "unknown_event_name",
                    "the record's event name is none of INSERT, MODIFY, REMOVE: this ddbguard cannot judge it".into(),
                ));
            }
            EventName::Insert | EventName::Modify => {}
        }
        let Some(image) = &record.new_image else {
            return Err(Fail(
                Verdict::PolicyViolation,
                "no_new_image",
                format!(
                    "{} record has no NEW image: the stream view type must include new images",
                    record.event_name.as_str()
                ),
            ));
        };
        let item = image_to_item(image).map_err(|e| Fail(Verdict::IntegrityFailed, e.reason(), e.to_string()))?;
        let policy = &self.policy;
        let table = &policy.table;

        if !item.contains_key(HEADER_ATTRIBUTE) && !item.contains_key(FOOTER_ATTRIBUTE) {
            if item.contains_key(LEGACY_MATERIAL_DESCRIPTION) {
                return Err(DbeError::LegacyFormat.into());
            }
            let (verdict, what) = if policy.requires_encryption() {
                (Verdict::Plaintext, "the policy requires encrypted attributes")
            } else {
                (Verdict::PolicyViolation, "the policy requires every item to be signed")
            };
            return Err(Fail(
                verdict,
                "not_encrypted",
                format!("item has no {HEADER_ATTRIBUTE}/{FOOTER_ATTRIBUTE} but {what}"),
            ));
        }

        let header = check_structure(table, &item)?;
        *origin = origin_region(&header.edks);
        self.check_edks(&header.edks)?;
        self.check_shape(&header, &item)?;

        let hierarchical = header.edks.iter().any(|e| e.provider_id == HIERARCHY_PROVIDER_ID);
        if !hierarchical && !self.is_sampled(&record.event_id) {
            return Ok((Verdict::OkStructural, "not_sampled"));
        }

        let decrypted = decrypt_item(table, self.keyring.as_ref(), &item).await;
        // With keys cached, a full verification is pure CPU (~200 µs for 0x6701) and never awaits anything that
        // can be pending: without a yield point a batch would hold its worker thread for all its records (0.2 s),
        // delaying lease renewals and the metrics server. This yields once the task's cooperative budget is spent
        // (128 full verifications). Structural checks (~15 µs) do not yield: measured, yielding there cost a third
        // of their time by interleaving the shards' batches.
        tokio::task::consume_budget().await;
        let decrypted = decrypted?;
        let differences = decrypted.action_differences(table);
        if let Some((name, written, ours)) = differences.first() {
            return Err(Fail(
                Verdict::PolicyViolation,
                "action_mismatch",
                format!("attribute {name:?} was written {written}, the policy says {ours}"),
            ));
        }
        Ok((Verdict::Ok, "verified"))
    }

    /// Every `aws-kms` EDK must MRK-match the configured key, and there must be one.
    fn check_edks(&self, edks: &[EncryptedDataKey]) -> Result<(), Fail> {
        let Some(key) = &self.policy.key_arn else {
            return Ok(());
        };
        let mut kms_edks = 0;
        for (i, edk) in edks.iter().enumerate() {
            if edk.provider_id != KMS_PROVIDER_ID {
                continue;
            }
            kms_edks += 1;
            let arn = std::str::from_utf8(&edk.provider_info)
                .ok()
                .and_then(|s| KmsArn::parse(s).ok());
            match arn {
                Some(arn) if arn.mrk_matches(key) => {}
                Some(arn) => {
                    return Err(Fail(
                        Verdict::KeyNotMrk,
                        "edk_key_not_mrk",
                        format!("EDK {i} names {arn}, which does not MRK-match the configured key {key}"),
                    ));
                }
                None => {
                    return Err(Fail(
                        Verdict::KeyNotMrk,
                        "edk_arn_invalid",
                        format!("EDK {i} (aws-kms) does not name a KMS key ARN"),
                    ));
                }
            }
        }
        if kms_edks == 0 {
            let providers: Vec<&str> = edks.iter().map(|e| e.provider_id.as_str()).collect();
            return Err(Fail(
                Verdict::KeyNotMrk,
                "no_kms_edk",
                format!("no aws-kms EDK for the configured key {key} (providers: {providers:?})"),
            ));
        }
        Ok(())
    }

    /// The header's legend against the policy (what `ok_structural` rests on besides the structure).
    fn check_shape(&self, header: &Header, item: &Item) -> Result<(), Fail> {
        let policy = &self.policy;
        if let Some(suite) = policy.require_suite
            && header.suite != suite
        {
            return Err(Fail(
                Verdict::PolicyViolation,
                "wrong_suite",
                format!(
                    "record uses suite {}, the policy requires {}",
                    header.suite.name(),
                    suite.name()
                ),
            ));
        }
        // `check_structure` guarantees the legend and the signed names line up (both in canonical order).
        let names = signed_attribute_names(&policy.table, item);
        for (name, &written) in names.iter().zip(&header.legend) {
            if written != CryptoAction::EncryptAndSign && policy.must_encrypt(name) {
                return Err(Fail(
                    Verdict::Plaintext,
                    "attribute_not_encrypted",
                    format!("attribute {name:?} must be ENCRYPT_AND_SIGN but was written {written}"),
                ));
            }
        }
        if let Some(name) = item
            .keys()
            .find(|n| policy.must_encrypt(n) && policy.table.is_allowed_unsigned(n))
        {
            return Err(Fail(
                Verdict::Plaintext,
                "attribute_not_encrypted",
                format!("attribute {name:?} must be ENCRYPT_AND_SIGN but is stored unsigned"),
            ));
        }
        for (name, &written) in names.iter().zip(&header.legend) {
            match policy.table.attribute_actions.get(*name) {
                None => {
                    return Err(Fail(
                        Verdict::PolicyViolation,
                        "unexpected_signed_attribute",
                        format!("attribute {name:?} is signed ({written}) but has no action in the policy"),
                    ));
                }
                Some(&ours) if ours != written => {
                    return Err(Fail(
                        Verdict::PolicyViolation,
                        "action_mismatch",
                        format!("attribute {name:?} was written {written}, the policy says {ours}"),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
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
                    self.policy
                        .table
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
                Err(e) => Value::String(format!("<{}>", e.reason())),
            };
            out.insert(name.clone(), json);
        }
        Value::Object(out)
    }
}

/// Region of the first `aws-kms` EDK's key ARN.
pub fn origin_region(edks: &[EncryptedDataKey]) -> Option<String> {
    edks.iter()
        .find(|e| e.provider_id == KMS_PROVIDER_ID)
        .and_then(|e| std::str::from_utf8(&e.provider_info).ok())
        .and_then(|s| KmsArn::parse(s).ok())
        .map(|arn| arn.region().to_owned())
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
