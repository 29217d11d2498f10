//! Canaries: small encrypted items every verifier writes to its local replica, and watches arrive from every
//! region, so that "nothing was written" is told apart from "replication is broken" or "this region's replica key
//! cannot open what another region wrote".
//!
//! # The canary item
//!
//! Each region owns **one canary item per table**, overwritten in place every `interval` (so a table holds at most
//! one canary per region whatever the run time, and a replica's stream carries one record per region per
//! interval). Its key is derived from the region and the table's key schema, so that it works for any key types:
//!
//! | key type | canary value of region `R` |
//! |---|---|
//! | `S` | `<prefix>R` (default prefix `ddbguard-canary#`) |
//! | `B` | the UTF-8 bytes of `<prefix>R` |
//! | `N` | `-(10^20 + fnv1a32(R))`: a reserved range of 2^32 integers below `-10^20` |
//!
//! A sort key, if the table has one, gets the same value of its own type. The item carries the key attributes,
//! one ENCRYPT_AND_SIGN attribute of the table's policy (the first configured one, by name) holding the canary's
//! JSON payload `{"origin","written_at_ms","seq","worker"}`, and, when `ttl_attribute` is set (it must be an
//! allowed-unsigned attribute of the table, as DynamoDB reads it in plaintext), the expiry time. It is encrypted
//! with the table's keyring in the local region, so a successful canary write also proves that this region's key
//! can encrypt.
//!
//! # What is measured
//!
//! Every canary in the stream (whatever region wrote it) is recognised by its key before the record is counted: it
//! never counts as an application record and is never quarantined. It is fully decrypted with the local replica
//! key:
//!
//! - `ddbguard_canary_lag_seconds{system,table,origin_region,replica_region}`: arrival (when this verifier read it)
//!   minus the write time in its payload;
//! - `ddbguard_canaries_total{…,verdict}`: every canary by verdict; a canary that arrives but fails (for example
//!   `key_unavailable` when the local replica is disabled) is alerted with its verdict when an origin's verdict
//!   changes;
//! - `ddbguard_canary_missing{…}`: 1 when the freshest canary seen from an origin was written more than `slo` ago
//!   (or, `slo` after startup, none arrived at all), else 0; an `alert` event on each change. A canary that
//!   arrives but cannot be decrypted still arrived (replication works; its verdict is the alert): its freshness is
//!   the stream record's creation time.
//! - `ddbguard_canary_writes_total{system,table,region,outcome}`: this verifier's writes (`ok`, `encrypt_failed`,
//!   `write_failed`).
//!
//! Times are wall clock: the write time comes from the origin's clock, the arrival from this one (AWS hosts keep
//! them within milliseconds by NTP).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ddbguard_dbe::{AttributeValue, CryptoAction, Item, Keyring, Reason, TableConfig, Verdict, encrypt_item};
use ddbguard_ddb::{DynamoApi, KeyAttribute, KeySchema, ScalarType};
use ddbguard_stream::{EventName, StreamRecord};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::convert::{attribute_from_stream, image_to_item, item_to_table_item};
use crate::judge::{Depth, Judge};

/// Default `[verify] canary_prefix`.
pub const DEFAULT_PREFIX: &str = "ddbguard-canary#";
/// Default `[verify] canary_interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default `[verify] canary_slo`.
pub const DEFAULT_SLO: Duration = Duration::from_secs(60);
/// Default `[verify] canary_ttl`: how long after its last write a canary item expires (when a TTL attribute is
/// configured).
pub const DEFAULT_TTL: Duration = Duration::from_secs(86_400);

/// The `system` label of DynamoDB canaries (the Aurora ones say `aurora`).
const SYSTEM: &str = "dynamodb";

/// Numeric canary keys are `-(NUMBER_BASE + fnv1a32(region))`.
const NUMBER_BASE: i128 = 100_000_000_000_000_000_000;

/// How often the missing state is evaluated.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The canary settings of a verifier.
#[derive(Debug, Clone, PartialEq)]
pub struct CanarySettings {
    /// How often this verifier writes its region's canary.
    pub interval: Duration,
    /// An origin is missing when its freshest canary is older than this.
    pub slo: Duration,
    /// The key prefix of `S` and `B` canary keys.
    pub prefix: String,
    /// The regions whose canaries are expected (`[aws] regions`; the local one at least).
    pub origins: Vec<String>,
    /// The table's TTL attribute, if canaries should carry one (must be allowed unsigned).
    pub ttl_attribute: Option<String>,
    /// How long after a write the canary expires.
    pub ttl: Duration,
}

impl Default for CanarySettings {
    fn default() -> CanarySettings {
        CanarySettings {
            interval: DEFAULT_INTERVAL,
            slo: DEFAULT_SLO,
            prefix: DEFAULT_PREFIX.to_owned(),
            origins: Vec::new(),
            ttl_attribute: None,
            ttl: DEFAULT_TTL,
        }
    }
}

/// Why canaries cannot run on a table.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CanaryError {
    /// No attribute of the policy is ENCRYPT_AND_SIGN.
    #[error(
        "canaries need an ENCRYPT_AND_SIGN attribute in the table's attribute_actions to carry their payload; \
         the table has none (set [verify] canaries = false to run without canaries)"
    )]
    NoEncryptedAttribute,
    /// The TTL attribute would be signed (DynamoDB could not read it, and the policy would reject it).
    #[error(
        "the canary TTL attribute {0:?} must be an allowed unsigned (DO_NOTHING) attribute of the table, as \
         DynamoDB reads it in plaintext: add it to allowed_unsigned_attributes or unset canary_ttl_attribute"
    )]
    TtlSigned(String),
    /// The prefix is empty.
    #[error("canary_prefix must not be empty")]
    EmptyPrefix,
    /// Two configured regions get the same numeric canary key.
    #[error("regions {0} and {1} get the same numeric canary key; rename one in [aws] regions")]
    NumberCollision(String, String),
    /// The key schema names attributes the table configuration does not have.
    #[error("the table's key schema ({0}) differs from its configuration's partition/sort keys")]
    KeySchema(String),
}

/// Where canary keys live in a table's key space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryLayout {
    partition: KeyAttribute,
    sort: Option<KeyAttribute>,
    prefix: String,
    /// Numeric key hash → region, of the configured origins.
    by_hash: BTreeMap<u32, String>,
}

impl CanaryLayout {
    /// The layout for a table with `schema`, expecting canaries of `origins`.
    pub fn new(schema: &KeySchema, prefix: &str, origins: &[String]) -> Result<CanaryLayout, CanaryError> {
        if prefix.is_empty() {
            return Err(CanaryError::EmptyPrefix);
        }
        let mut by_hash = BTreeMap::new();
        for region in origins {
            if let Some(other) = by_hash.insert(fnv1a32(region), region.clone())
                && &other != region
            {
                return Err(CanaryError::NumberCollision(other, region.clone()));
            }
        }
        Ok(CanaryLayout {
            partition: schema.hash.clone(),
            sort: schema.range.clone(),
            prefix: prefix.to_owned(),
            by_hash,
        })
    }

    /// The canary key value of `region` for a key of type `kind`.
    fn value(&self, kind: ScalarType, region: &str) -> AttributeValue {
        match kind {
            ScalarType::S => AttributeValue::S(format!("{}{region}", self.prefix)),
            ScalarType::B => AttributeValue::B(format!("{}{region}", self.prefix).into_bytes()),
            ScalarType::N => AttributeValue::N(format!("-{}", NUMBER_BASE + i128::from(fnv1a32(region)))),
        }
    }

    /// The key of `region`'s canary item.
    pub fn key(&self, region: &str) -> Item {
        let mut key = Item::new();
        key.insert(self.partition.name.clone(), self.value(self.partition.kind, region));
        if let Some(sort) = &self.sort {
            key.insert(sort.name.clone(), self.value(sort.kind, region));
        }
        key
    }

    /// The region a canary key belongs to, if `value` is one: the region named after the prefix (`S`, `B`), or
    /// the configured region whose hash it carries (`N`; `unknown` for a hash of no configured region).
    fn origin_of_value(&self, value: &AttributeValue) -> Option<String> {
        match value {
            AttributeValue::S(s) => s.strip_prefix(&self.prefix).map(str::to_owned),
            AttributeValue::B(b) => b
                .strip_prefix(self.prefix.as_bytes())
                .and_then(|rest| std::str::from_utf8(rest).ok())
                .map(str::to_owned),
            AttributeValue::N(n) => {
                let v: i128 = n.trim().parse().ok()?;
                let hash = v.checked_neg()?.checked_sub(NUMBER_BASE)?;
                let hash = u32::try_from(hash).ok()?;
                Some(
                    self.by_hash
                        .get(&hash)
                        .cloned()
                        .unwrap_or_else(|| crate::engine::UNKNOWN_ORIGIN.to_owned()),
                )
            }
            _ => None,
        }
    }

    /// The origin region of a canary whose key attributes are `keys`, or `None` for any other item. The sort key,
    /// if any, must be the same region's canary value.
    pub fn origin(&self, keys: &Item) -> Option<String> {
        self.origin_by(|name| keys.get(name).cloned())
    }

    /// [`CanaryLayout::origin`] of an item as the DynamoDB adapter returns it (a scanned item).
    pub fn origin_of_table_item(&self, item: &ddbguard_ddb::Item) -> Option<String> {
        self.origin_by(|name| crate::convert::attribute_from_table(item.get(name)?, name).ok())
    }

    /// [`CanaryLayout::origin`] with the key attributes read through `get`, the sort key only when the partition
    /// key is a canary's: it runs for every scanned item and stream record, nearly all of them not canaries.
    fn origin_by(&self, get: impl Fn(&str) -> Option<AttributeValue>) -> Option<String> {
        let origin = self.origin_of_value(&get(&self.partition.name)?)?;
        if let Some(sort) = &self.sort {
            let sort_origin = self.origin_of_value(&get(&sort.name)?)?;
            if sort_origin != origin {
                return None;
            }
        }
        Some(origin)
    }
}

/// FNV-1a, 32 bits: a stable hash of a region name for numeric canary keys.
fn fnv1a32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// What a canary carries in its encrypted attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The region that wrote it.
    pub origin: String,
    /// Write time, milliseconds since the Unix epoch, on the writer's clock.
    pub written_at_ms: u64,
    /// The writer's sequence number (restarts at 0 with the process).
    pub seq: u64,
    /// The writing worker.
    pub worker: String,
}

/// What became of one canary record.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryObservation {
    /// The origin region (from the key).
    pub origin: String,
    /// The verdict (`remove` for a deleted or expired canary).
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// Arrival minus write time, when the payload was read.
    pub lag: Option<Duration>,
}

/// Per origin: what was seen.
#[derive(Debug, Default, Clone)]
struct OriginState {
    /// Write time of the freshest canary (or, if it could not be decrypted, its stream creation time).
    freshest: Option<SystemTime>,
    missing: bool,
    /// The verdict of the last canary, to alert on changes.
    last_verdict: Option<Verdict>,
}

/// One table's canaries in one region: recognises and judges them in the stream, writes the local one, keeps the
/// missing state.
#[derive(Debug)]
pub struct Canaries {
    layout: CanaryLayout,
    settings: CanarySettings,
    table: String,
    region: String,
    payload_attribute: String,
    started: SystemTime,
    seq: AtomicU64,
    origins: Mutex<BTreeMap<String, OriginState>>,
}

impl Canaries {
    /// Canaries of `table` (the metric label) in `region`, for a table with `schema` under `config`.
    pub fn new(
        settings: CanarySettings,
        schema: &KeySchema,
        config: &TableConfig,
        table: impl Into<String>,
        region: impl Into<String>,
    ) -> Result<Canaries, CanaryError> {
        let region = region.into();
        let configured: Vec<&str> = config.key_names().collect();
        let described: Vec<&str> = schema.names().collect();
        if configured != described {
            return Err(CanaryError::KeySchema(described.join(", ")));
        }
        let payload_attribute = config
            .attribute_actions
            .iter()
            .find(|(name, action)| **action == CryptoAction::EncryptAndSign && !described.contains(&name.as_str()))
            .map(|(name, _)| name.clone())
            .ok_or(CanaryError::NoEncryptedAttribute)?;
        if let Some(ttl) = &settings.ttl_attribute
            && !config.is_allowed_unsigned(ttl)
        {
            return Err(CanaryError::TtlSigned(ttl.clone()));
        }
        let mut origins = settings.origins.clone();
        if !origins.contains(&region) {
            origins.push(region.clone());
        }
        let layout = CanaryLayout::new(schema, &settings.prefix, &origins)?;
        let states = origins.iter().map(|o| (o.clone(), OriginState::default())).collect();
        Ok(Canaries {
            layout,
            settings: CanarySettings { origins, ..settings },
            table: table.into(),
            region,
            payload_attribute,
            started: SystemTime::now(),
            seq: AtomicU64::new(0),
            origins: Mutex::new(states),
        })
    }

    fn states(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, OriginState>> {
        self.origins.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The origin of `record` if it is a canary (by its keys, or the key attributes of its images).
    pub fn recognize(&self, record: &StreamRecord) -> Option<String> {
        let source = if record.keys.is_empty() {
            record.new_image.as_ref().or(record.old_image.as_ref())?
        } else {
            &record.keys
        };
        self.layout
            .origin_by(|name| attribute_from_stream(source.get(name)?, name).ok())
    }

    /// The plaintext canary item this region writes now (before encryption).
    pub fn item(&self, worker: &str, now: SystemTime) -> Item {
        let mut item = self.layout.key(&self.region);
        let payload = Payload {
            origin: self.region.clone(),
            written_at_ms: millis(now),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            worker: worker.to_owned(),
        };
        let json = serde_json::to_string(&payload).unwrap_or_default();
        item.insert(self.payload_attribute.clone(), AttributeValue::S(json));
        if let Some(ttl) = &self.settings.ttl_attribute {
            let expires = now + self.settings.ttl;
            item.insert(ttl.clone(), AttributeValue::N(secs(expires).to_string()));
        }
        item
    }

    /// Encrypts and writes this region's canary to `table` (the physical name) in the local region.
    pub async fn write<D: DynamoApi>(
        &self,
        db: &D,
        table: &str,
        config: &TableConfig,
        keyring: &dyn Keyring,
        worker: &str,
    ) -> Result<(), String> {
        let item = self.item(worker, SystemTime::now());
        let outcome = match encrypt_item(config, keyring, &item).await {
            Err(e) => Err(("encrypt_failed", format!("cannot encrypt the canary: {e}"))),
            Ok(encrypted) => match db.put_item(table, item_to_table_item(&encrypted), None).await {
                Ok(_) => Ok(()),
                Err(e) => Err(("write_failed", format!("cannot write the canary: {e}"))),
            },
        };
        let label = match &outcome {
            Ok(()) => "ok",
            Err((label, _)) => label,
        };
        metrics::counter!(
            "ddbguard_canary_writes_total",
            "system" => SYSTEM,
            "table" => self.table.clone(),
            "region" => self.region.clone(),
            "outcome" => label,
        )
        .increment(1);
        outcome.map_err(|(outcome, message)| {
            tracing::warn!(
                target: "alert",
                event = "canary_write_failed",
                table = %self.table,
                region = %self.region,
                outcome,
                detail = %message,
                "canary write failed"
            );
            message
        })
    }

    /// Judges a canary record from `origin` with the local replica key, measures its lag and updates the
    /// origin's state, metrics and alerts.
    pub async fn observe(&self, judge: &Judge, record: &StreamRecord, origin: &str) -> CanaryObservation {
        let now = SystemTime::now();
        let mut observation = CanaryObservation {
            origin: origin.to_owned(),
            verdict: Verdict::Remove,
            reason: Reason::Remove,
            lag: None,
        };
        // A deleted or expired canary says nothing about replication or keys.
        if record.event_name == EventName::Remove {
            return observation;
        }
        let Some(image) = &record.new_image else {
            observation.verdict = Verdict::PolicyViolation;
            observation.reason = Reason::NoNewImage;
            self.record_verdict(&observation, "canary record has no NEW image");
            return observation;
        };
        let (judgement, plaintext) = match image_to_item(image) {
            Ok(item) => judge.judge_and_decrypt(&item, Depth::Full).await,
            Err(e) => (
                crate::judge::Judgement::new(Verdict::IntegrityFailed, e.reason(), e.to_string()),
                None,
            ),
        };
        observation.verdict = judgement.verdict;
        observation.reason = judgement.reason;
        let payload = plaintext.and_then(|p| match p.item().get(&self.payload_attribute) {
            Some(AttributeValue::S(s)) => serde_json::from_str::<Payload>(s).ok(),
            _ => None,
        });
        let written = match &payload {
            Some(p) => Some(UNIX_EPOCH + Duration::from_millis(p.written_at_ms)),
            None => {
                if judgement.verdict == Verdict::Ok {
                    tracing::warn!(
                        table = %self.table,
                        region = %self.region,
                        origin_region = origin,
                        "a canary key holds an item without a canary payload: someone else writes the reserved key"
                    );
                }
                record.approximate_creation_time
            }
        };
        if payload.is_some()
            && let Some(written) = written
        {
            let lag = now.duration_since(written).unwrap_or_default();
            observation.lag = Some(lag);
            metrics::histogram!(
                "ddbguard_canary_lag_seconds",
                "system" => SYSTEM,
                "table" => self.table.clone(),
                "origin_region" => origin.to_owned(),
                "replica_region" => self.region.clone(),
            )
            .record(lag.as_secs_f64());
        }
        {
            let mut states = self.states();
            let state = states.entry(origin.to_owned()).or_default();
            if let Some(written) = written
                && state.freshest.is_none_or(|f| written > f)
            {
                state.freshest = Some(written);
            }
        }
        self.record_verdict(&observation, &judgement.message);
        observation
    }

    /// Counts a canary's verdict and alerts when an origin's verdict changes.
    fn record_verdict(&self, observation: &CanaryObservation, message: &str) {
        let origin = observation.origin.as_str();
        metrics::counter!(
            "ddbguard_canaries_total",
            "system" => SYSTEM,
            "table" => self.table.clone(),
            "origin_region" => origin.to_owned(),
            "replica_region" => self.region.clone(),
            "verdict" => observation.verdict.as_str(),
        )
        .increment(1);
        let previous = {
            let mut states = self.states();
            let state = states.entry(origin.to_owned()).or_default();
            state.last_verdict.replace(observation.verdict)
        };
        let passed = observation.verdict.is_pass();
        let changed = match previous {
            None => !passed,
            Some(p) => p != observation.verdict,
        };
        if !changed {
            return;
        }
        if passed {
            tracing::info!(
                target: "alert",
                event = "canary_recovered",
                table = %self.table,
                region = %self.region,
                origin_region = origin,
                verdict = observation.verdict.as_str(),
                "canaries from {origin} verify again"
            );
        } else {
            tracing::warn!(
                target: "alert",
                event = "canary_verdict",
                table = %self.table,
                region = %self.region,
                origin_region = origin,
                verdict = observation.verdict.as_str(),
                reason = observation.reason.as_str(),
                detail = message,
                "canary from {origin} failed verification"
            );
        }
    }

    /// Evaluates every origin's missing state at `now`: sets `ddbguard_canary_missing` and alerts on changes.
    /// Returns the origins missing now.
    pub fn check_missing(&self, now: SystemTime) -> Vec<String> {
        let warming_up = now.duration_since(self.started).unwrap_or_default() <= self.settings.slo;
        let mut missing = Vec::new();
        let mut states = self.states();
        for (origin, state) in states.iter_mut() {
            let stale = match state.freshest {
                Some(t) => now.duration_since(t).unwrap_or_default() > self.settings.slo,
                None => !warming_up,
            };
            metrics::gauge!(
                "ddbguard_canary_missing",
                "system" => SYSTEM,
                "table" => self.table.clone(),
                "origin_region" => origin.clone(),
                "replica_region" => self.region.clone(),
            )
            .set(if stale { 1.0 } else { 0.0 });
            if stale != state.missing {
                state.missing = stale;
                let age = state
                    .freshest
                    .and_then(|t| now.duration_since(t).ok())
                    .map(|d| d.as_secs());
                if stale {
                    tracing::warn!(
                        target: "alert",
                        event = "canary_missing",
                        table = %self.table,
                        region = %self.region,
                        origin_region = %origin,
                        freshest_age_s = age,
                        slo_s = self.settings.slo.as_secs(),
                        "no canary from {origin} within the SLO: replication from {origin} to {} is stalled or broken",
                        self.region
                    );
                } else {
                    tracing::info!(
                        target: "alert",
                        event = "canary_arrived",
                        table = %self.table,
                        region = %self.region,
                        origin_region = %origin,
                        "canaries from {origin} arrive again"
                    );
                }
            }
            if stale {
                missing.push(origin.clone());
            }
        }
        missing
    }

    /// Runs the writer and the missing check until `stop` completes: writes this region's canary every
    /// `interval` (first one at once) and evaluates missing origins every second.
    pub async fn run<D: DynamoApi>(
        self: Arc<Self>,
        db: D,
        table: String,
        judge: Judge,
        worker: String,
        stop: impl std::future::Future,
    ) {
        let mut write_tick = tokio::time::interval(self.settings.interval);
        write_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check_tick = tokio::time::interval(CHECK_EVERY);
        check_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let config = judge.policy().table.config.clone();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = write_tick.tick() => {
                    // A failed write is counted and alerted inside; the next tick tries again.
                    let _ = self.write(&db, &table, &config, judge.keyring().as_ref(), &worker).await;
                }
                _ = check_tick.tick() => {
                    self.check_missing(SystemTime::now());
                }
            }
        }
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ddbguard_ddb::FakeDynamo;
    use ddbguard_ddb::TableSpec;
    use ddbguard_keys::RawAesKeyring;
    use ddbguard_stream::SequenceNumber;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use zeroize::Zeroizing;

    use super::*;
    use crate::VerifyPolicy;
    use crate::convert::{item_to_image, table_item_to_item};

    fn regions() -> Vec<String> {
        vec!["us-east-1".into(), "ap-southeast-2".into()]
    }

    fn schema(hash: ScalarType, range: Option<ScalarType>) -> KeySchema {
        KeySchema {
            hash: KeyAttribute::new("pk", hash),
            range: range.map(|k| KeyAttribute::new("sk", k)),
        }
    }

    fn table_config(with_sort: bool) -> TableConfig {
        let mut c = TableConfig::new("orders", "pk");
        c.attribute_actions.insert("pk".into(), CryptoAction::SignOnly);
        if with_sort {
            c.sort_key = Some("sk".into());
            c.attribute_actions.insert("sk".into(), CryptoAction::SignOnly);
        }
        c.attribute_actions.insert("ssn".into(), CryptoAction::EncryptAndSign);
        c.allowed_unsigned_attributes.insert("expires".into());
        c
    }

    fn keyring(byte: u8) -> Arc<RawAesKeyring> {
        Arc::new(RawAesKeyring::new("ddbguard-test", "key-1", Zeroizing::new([byte; 32])))
    }

    fn judge(with_sort: bool, key: u8) -> Judge {
        Judge::new(VerifyPolicy::new(table_config(with_sort)), keyring(key)).unwrap()
    }

    fn canaries(region: &str, with_sort: bool, settings: CanarySettings) -> Canaries {
        let range = with_sort.then_some(ScalarType::N);
        Canaries::new(
            settings,
            &schema(ScalarType::S, range),
            &table_config(with_sort),
            "orders",
            region,
        )
        .unwrap()
    }

    fn settings() -> CanarySettings {
        CanarySettings {
            origins: regions(),
            ttl_attribute: Some("expires".into()),
            ..CanarySettings::default()
        }
    }

    fn stream_record(item: &Item, event_name: EventName) -> StreamRecord {
        let image = item_to_image(item);
        StreamRecord {
            event_id: "e1".into(),
            event_name,
            sequence_number: SequenceNumber::new("1"),
            approximate_creation_time: Some(SystemTime::now()),
            keys: HashMap::new(),
            new_image: Some(image),
            old_image: None,
            size_bytes: None,
        }
    }

    #[test]
    fn canary_keys_exist_for_every_key_type_and_name_their_region() {
        for hash in [ScalarType::S, ScalarType::N, ScalarType::B] {
            for range in [None, Some(ScalarType::S), Some(ScalarType::N), Some(ScalarType::B)] {
                let layout = CanaryLayout::new(&schema(hash, range), DEFAULT_PREFIX, &regions()).unwrap();
                for region in regions() {
                    let key = layout.key(&region);
                    assert_eq!(key.len(), 1 + usize::from(range.is_some()));
                    assert_eq!(layout.origin(&key), Some(region.clone()), "{hash:?}/{range:?}");
                }
                assert_ne!(layout.key("us-east-1"), layout.key("ap-southeast-2"));
            }
        }
    }

    #[test]
    fn application_keys_are_not_canaries() {
        let layout =
            CanaryLayout::new(&schema(ScalarType::S, Some(ScalarType::N)), DEFAULT_PREFIX, &regions()).unwrap();
        let key = |pk: AttributeValue, sk: AttributeValue| -> Item { [("pk".into(), pk), ("sk".into(), sk)].into() };
        assert_eq!(
            layout.origin(&key(
                AttributeValue::S("customer#1".into()),
                AttributeValue::N("1".into())
            )),
            None
        );
        // The partition key of a canary with an application sort key, or the canary of another region in the
        // sort key, is no canary.
        let pk = AttributeValue::S(format!("{DEFAULT_PREFIX}us-east-1"));
        assert_eq!(layout.origin(&key(pk.clone(), AttributeValue::N("7".into()))), None);
        let other = layout.key("ap-southeast-2")["sk"].clone();
        assert_eq!(layout.origin(&key(pk, other)), None);
        // Numbers: outside the reserved range, or not numbers at all.
        let numeric = CanaryLayout::new(&schema(ScalarType::N, None), DEFAULT_PREFIX, &regions()).unwrap();
        for n in [
            "0",
            "-1",
            "-99999999999999999999",
            "1e30",
            "-99999999999999999999999999",
            "x",
        ] {
            let key: Item = [("pk".to_owned(), AttributeValue::N(n.into()))].into();
            assert_eq!(numeric.origin(&key), None, "{n}");
        }
        // A number in the reserved range whose hash is no configured region's is a canary of an unknown origin.
        let key: Item = [("pk".to_owned(), AttributeValue::N("-100000000000000000001".into()))].into();
        assert_eq!(numeric.origin(&key).as_deref(), Some(crate::engine::UNKNOWN_ORIGIN));
    }

    #[test]
    fn tables_the_canary_cannot_serve_are_refused_with_the_fix() {
        let mut config = table_config(false);
        config.attribute_actions.insert("ssn".into(), CryptoAction::SignOnly);
        let e = Canaries::new(settings(), &schema(ScalarType::S, None), &config, "orders", "us-east-1").unwrap_err();
        assert_eq!(e, CanaryError::NoEncryptedAttribute);
        assert!(e.to_string().contains("canaries = false"));

        let signed_ttl = CanarySettings {
            ttl_attribute: Some("ssn".into()),
            ..settings()
        };
        let e = Canaries::new(
            signed_ttl,
            &schema(ScalarType::S, None),
            &table_config(false),
            "orders",
            "us-east-1",
        )
        .unwrap_err();
        assert!(matches!(e, CanaryError::TtlSigned(ref a) if a == "ssn"), "{e}");

        let e = Canaries::new(
            settings(),
            &schema(ScalarType::S, Some(ScalarType::S)),
            &table_config(false),
            "o",
            "r",
        )
        .unwrap_err();
        assert!(matches!(e, CanaryError::KeySchema(_)), "{e}");
    }

    /// A canary written by us-east-1 (through the adapter, encrypted) arrives in ap-southeast-2's stream: `ok`,
    /// with its lag measured from the payload and the origin no longer missing; under another key it fails with
    /// its verdict, still arrives, and neither the payload nor the key bytes appear in what is exported.
    #[tokio::test]
    async fn a_written_canary_is_judged_measured_and_clears_missing() {
        let recorder = PrometheusBuilder::new()
            .set_buckets(crate::metrics::HISTOGRAM_BUCKETS)
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        let _guard = metrics::set_default_local_recorder(&recorder);

        let db = FakeDynamo::new();
        db.add_table(TableSpec::on_demand(
            "orders-physical",
            schema(ScalarType::S, Some(ScalarType::N)),
        ));
        let writer = canaries("us-east-1", true, settings());
        let judge_here = judge(true, 7);
        writer
            .write(
                &db,
                "orders-physical",
                &table_config(true),
                judge_here.keyring().as_ref(),
                "w1",
            )
            .await
            .unwrap();
        let stored = db.items("orders-physical");
        assert_eq!(stored.len(), 1);
        let item = table_item_to_item(&stored[0]).unwrap();
        assert!(
            item.contains_key(ddbguard_dbe::HEADER_ATTRIBUTE),
            "the canary is encrypted"
        );
        assert!(
            matches!(&item["ssn"], AttributeValue::B(_)),
            "the payload is ciphertext"
        );
        assert!(
            matches!(&item["expires"], AttributeValue::N(_)),
            "the TTL attribute is plaintext"
        );

        let mut reader = canaries("ap-southeast-2", true, settings());
        // Started two minutes ago: past the warm-up.
        reader.started -= Duration::from_secs(120);
        let record = stream_record(&item, EventName::Modify);
        let origin = reader.recognize(&record).expect("recognised");
        assert_eq!(origin, "us-east-1");
        // Right after startup nothing is missing yet (warm-up of one SLO); a minute later, everything.
        let start = reader.started;
        assert!(reader.check_missing(start + Duration::from_secs(1)).is_empty());
        assert_eq!(
            reader.check_missing(start + DEFAULT_SLO + Duration::from_secs(1)),
            vec!["ap-southeast-2".to_owned(), "us-east-1".to_owned()]
        );

        let seen = reader.observe(&judge_here, &record, &origin).await;
        assert_eq!(seen.verdict, Verdict::Ok);
        assert!(seen.lag.is_some_and(|l| l < Duration::from_secs(5)), "{seen:?}");
        assert_eq!(
            reader.check_missing(SystemTime::now()),
            vec!["ap-southeast-2".to_owned()],
            "us-east-1's canary arrived"
        );
        // And missing again once its freshest canary is older than the SLO.
        assert_eq!(
            reader
                .check_missing(SystemTime::now() + DEFAULT_SLO + Duration::from_secs(2))
                .len(),
            2
        );

        // The same canary where the local key is another one: it arrived, but fails with its verdict.
        let wrong = reader.observe(&judge(true, 9), &record, &origin).await;
        assert!(!wrong.verdict.is_pass());
        assert_eq!(wrong.lag, None);
        assert_eq!(
            reader.check_missing(SystemTime::now()),
            vec!["ap-southeast-2".to_owned()]
        );

        // A deleted (expired) canary is nothing.
        let removed = reader
            .observe(&judge_here, &stream_record(&item, EventName::Remove), &origin)
            .await;
        assert_eq!(removed.verdict, Verdict::Remove);

        let text = handle.render();
        let labels = r#"system="dynamodb",table="orders",origin_region="us-east-1",replica_region="ap-southeast-2""#;
        assert!(
            text.contains(&format!("ddbguard_canary_lag_seconds_count{{{labels}}} 1")),
            "{text}"
        );
        assert!(
            text.contains(&format!("ddbguard_canaries_total{{{labels},verdict=\"ok\"}} 1")),
            "{text}"
        );
        assert!(
            text.contains(&format!("ddbguard_canary_missing{{{labels}}} 0")),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ddbguard_canary_writes_total{system="dynamodb",table="orders",region="us-east-1",outcome="ok"} 1"#
            ),
            "{text}"
        );
        assert!(!text.contains("written_at_ms") && !text.contains("\"w1\""), "{text}");
    }

    #[tokio::test]
    async fn a_failed_write_is_counted_not_fatal() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let db = FakeDynamo::new(); // no table: the write fails
        let writer = canaries("us-east-1", false, settings());
        let e = writer
            .write(&db, "missing", &table_config(false), keyring(7).as_ref(), "w1")
            .await
            .unwrap_err();
        assert!(e.contains("cannot write the canary"), "{e}");
        assert!(handle.render().contains(r#"outcome="write_failed"} 1"#));
    }

    /// In the sink, a canary is judged apart: the application record is counted, the canary is not, and the
    /// summary lists the canary by origin and verdict.
    #[tokio::test]
    async fn the_sink_sets_canaries_apart_from_records() {
        let writer = canaries("us-east-1", true, settings());
        let keyring = keyring(7);
        let canary = encrypt_item(
            &table_config(true),
            keyring.as_ref(),
            &writer.item("w1", SystemTime::now()),
        )
        .await
        .unwrap();
        let mut app = Item::new();
        app.insert("pk".into(), AttributeValue::S("customer#1".into()));
        app.insert("sk".into(), AttributeValue::N("1".into()));
        app.insert("ssn".into(), AttributeValue::S("123-45-6789".into()));
        let app = encrypt_item(&table_config(true), keyring.as_ref(), &app).await.unwrap();

        let verifier = crate::Verifier::new(VerifyPolicy::new(table_config(true)), keyring, "ap-southeast-2").unwrap();
        let reader = Arc::new(canaries("ap-southeast-2", true, settings()));
        let sink = crate::VerifySink::new(Arc::new(verifier)).with_canaries(reader);
        let batch = ddbguard_stream::RecordBatch {
            shard_id: "shard-0".into(),
            records: vec![
                stream_record(&app, EventName::Insert),
                stream_record(&canary, EventName::Insert),
            ],
            duplicates: 0,
        };
        let outcomes = sink.verify_batch(&batch).await.unwrap();
        assert_eq!(outcomes.len(), 1);
        let summary = sink.summary();
        assert_eq!(summary.records, 1);
        assert_eq!(summary.by_verdict.get(&Verdict::Ok), Some(&1));
        assert_eq!(summary.canaries["us-east-1"].get(&Verdict::Ok), Some(&1));
        assert!(summary.passed());
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["canaries"]["us-east-1"]["ok"], 1);
    }
}
