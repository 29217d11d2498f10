//! One item: classify it, encrypt it if it is plaintext, and write it back so that a concurrent application write
//! always wins.
//!
//! ## The write-back condition
//! The encrypted item is written with `UpdateItem` (never `PutItem`), on the condition that the item
//! - still has no `aws_dbe_head` and no `aws_dbe_foot` (the application did not encrypt it meanwhile), and
//! - is still exactly what was read: every attribute read is still there with the same value, and every
//!   attribute the table's policy names that was absent is still absent;
//!
//! or, when the table has a version attribute (`version_attribute`, the optimistic-locking number of the
//! application's mapper), only that the version is still the one read — the rewrite then writes the next version,
//! inside the signature, so the application's next conditional write sees the change.
//!
//! `UpdateItem` sets only the attributes encryption changed plus the header and footer, so an attribute that the
//! application added meanwhile and that the policy leaves unsigned survives the rewrite. The full comparison costs
//! one placeholder pair per attribute and DynamoDB limits a condition expression to 4 KB: items with more than
//! [`MAX_COMPARED_ATTRIBUTES`] attributes are left alone (`too_wide`) unless the table has a version attribute.
//!
//! A failed condition re-reads the item (strongly consistent): encrypted meanwhile → left alone and counted;
//! deleted → counted; changed but still plaintext → encrypted again from its new value, up to a retry limit.
//!
//! ## Legacy items (`backfill --from-legacy`)
//! With [`Target::from_legacy`] set, an item of the legacy DynamoDB Encryption Client is a source too: the judge
//! `verify` uses checks it in full (signature, then decryption with the table's legacy materials provider), and
//! only an `ok` item's plaintext is encrypted in the DB-ESDK format and written back — the same condition as
//! above (which then also pins `*amzn-ddb-map-desc*` and `*amzn-ddb-map-sig*`, with a version attribute too), the
//! update also removing those two. An item that does not verify is never rewritten (`legacy_refused`, with its verdict). On a conflict the
//! re-read item is migrated again if it is still legacy, encrypted if the application wrote it in plaintext, and
//! left alone if it is in the DB-ESDK format. The plaintext lives only between the judge and the encryption.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ddbguard_dbe::{AttributeValue as DbeValue, Item as DbeItem, Keyring, Reason, TableConfig, Verdict, encrypt_item};
use ddbguard_ddb::size::{item_size, read_units, write_units};
use ddbguard_ddb::{AttributeValue, Backoff, Condition, DdbError, DynamoApi, ErrorKind, Item, ReturnValues, Update};
use ddbguard_verify::convert::{item_to_table_item, table_item_to_item};
use ddbguard_verify::{Depth, Judge, Plaintext};

use crate::limiter::Budgets;

/// The header attribute of the DB-ESDK format.
pub const HEAD: &str = "aws_dbe_head";
/// The footer attribute of the DB-ESDK format.
pub const FOOT: &str = "aws_dbe_foot";
/// The material description of the legacy DynamoDB Encryption Client.
pub const LEGACY_DESC: &str = "*amzn-ddb-map-desc*";
/// The signature of the legacy DynamoDB Encryption Client.
pub const LEGACY_SIG: &str = "*amzn-ddb-map-sig*";
/// Items with more attributes than this are not compared attribute by attribute (DynamoDB's 4 KB limit on a
/// condition expression, with room for long placeholder numbers); they need a version attribute.
pub const MAX_COMPARED_ATTRIBUTES: usize = 150;

/// What the run writes, and with which keys.
#[derive(Debug, Clone)]
pub struct Target {
    /// The physical table.
    pub table: String,
    /// The judge `verify` uses for this table: its policy (attribute actions, key names, suite, required
    /// encryption, KMS key) decides what is written, and it gives items already encrypted their verdict.
    pub judge: Judge,
    /// The keyring that encrypts (the table's keyring in the home region).
    pub keyring: Arc<dyn Keyring>,
    /// KMS requests one encryption costs (`kms-mrk`: 1, a `GenerateDataKey`; `hierarchy` with a cached branch
    /// key and `raw-aes`: 0).
    pub kms_calls_per_item: f64,
    /// The application's optimistic-locking version attribute (a number), if it has one.
    pub version_attribute: Option<String>,
    /// Migrate legacy DynamoDB Encryption Client items to the DB-ESDK format (`backfill --from-legacy`); `None`:
    /// they are left alone (`legacy_format`). Requires a judge with a legacy policy and materials provider
    /// ([`Judge::judges_legacy`]).
    pub from_legacy: Option<FromLegacy>,
}

/// Legacy items as a source of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FromLegacy {
    /// KMS requests judging one legacy item costs (the direct KMS provider: 1, a `Decrypt` of the item's data
    /// key; the most-recent provider: 0, one `Decrypt` per metastore version, cached; wrapped and static
    /// providers: 0).
    pub kms_calls_per_item: f64,
    /// Whether judging a legacy item reaches AWS (KMS, or the metastore table): a dry run then checks the
    /// structure only, as it makes no AWS call.
    pub calls_aws: bool,
}

/// What happened to one scanned item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Encrypted and written back (`attempts` > 1 after conflicts with the application).
    Encrypted {
        /// Write attempts.
        attempts: u32,
    },
    /// Would be encrypted (dry run).
    WouldEncrypt {
        /// Size of the encrypted item, bytes (for the capacity estimate).
        encrypted_bytes: usize,
    },
    /// Already in the DB-ESDK format: never rewritten; the structural verdict is counted.
    AlreadyEncrypted {
        /// The judge's verdict at structural depth (`ok_structural`, or `ok` where a full check costs no KMS
        /// call), or a failing one.
        verdict: Verdict,
        /// Its reason.
        reason: Reason,
    },
    /// Written by the legacy DynamoDB Encryption Client: never rewritten by a plaintext backfill.
    Legacy,
    /// A legacy item that verified and decrypted, written back in the DB-ESDK format (`attempts` > 1 after
    /// conflicts with the application).
    MigratedLegacy {
        /// Write attempts.
        attempts: u32,
    },
    /// A legacy item that would be migrated (dry run; verified in full only where that costs no KMS call).
    WouldMigrateLegacy {
        /// Size of the item in the DB-ESDK format, bytes (an estimate when the item was not decrypted).
        encrypted_bytes: usize,
    },
    /// A legacy item that did not verify (tampered, under another key, outside the policy): never rewritten.
    LegacyRefused {
        /// The judge's verdict.
        verdict: Verdict,
        /// Its reason.
        reason: Reason,
    },
    /// The item does not fit the table's policy (unknown attribute, missing key attribute, …): not rewritten.
    PolicyViolation {
        /// The reason code.
        reason: &'static str,
    },
    /// Too many attributes for a full comparison and no version attribute: not rewritten.
    TooWide,
    /// Filtered out by the run's filter.
    Filtered,
    /// A verifier's canary item (`[verify] canaries`): the verifiers overwrite it every few seconds, so it is
    /// never rewritten and not an application item; counted apart.
    Canary,
    /// The application encrypted it between the scan and the write: left alone.
    EncryptedMeanwhile,
    /// The application deleted it between the scan and the write.
    DeletedMeanwhile,
    /// Changed by the application on every attempt: left plaintext for a later run.
    SkippedConflicts,
    /// Could not be encrypted or written (keys unavailable, DynamoDB refused): counted as failed.
    Failed {
        /// The reason code.
        reason: &'static str,
    },
}

impl Outcome {
    /// The snake_case label of the outcome in reports and progress.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Encrypted { .. } => "encrypted",
            Outcome::WouldEncrypt { .. } => "would_encrypt",
            Outcome::AlreadyEncrypted { .. } => "already_encrypted",
            Outcome::Legacy => "legacy_format",
            Outcome::MigratedLegacy { .. } => "migrated_legacy",
            Outcome::WouldMigrateLegacy { .. } => "would_migrate_legacy",
            Outcome::LegacyRefused { .. } => "legacy_refused",
            Outcome::PolicyViolation { .. } => "policy_violation",
            Outcome::TooWide => "too_wide",
            Outcome::Filtered => "filtered",
            Outcome::Canary => "canary",
            Outcome::EncryptedMeanwhile => "encrypted_meanwhile",
            Outcome::DeletedMeanwhile => "deleted_meanwhile",
            Outcome::SkippedConflicts => "skipped_conflicts",
            Outcome::Failed { .. } => "failed",
        }
    }

    /// KMS requests the outcome cost under `target`: one encryption for every item written (or that would be),
    /// plus one legacy judgement for legacy items judged in full.
    pub fn kms_calls(&self, target: &Target) -> f64 {
        let legacy = target.from_legacy.map_or(0.0, |l| l.kms_calls_per_item);
        match self {
            Outcome::Encrypted { .. } | Outcome::WouldEncrypt { .. } => target.kms_calls_per_item,
            Outcome::MigratedLegacy { .. } | Outcome::WouldMigrateLegacy { .. } => target.kms_calls_per_item + legacy,
            // One judgement, even where a structural fault spared the KMS call: the run's budget was charged
            // before the judge looked, so this is what the budget saw (an upper bound of the calls made).
            Outcome::LegacyRefused { .. } => legacy,
            _ => 0.0,
        }
    }
}

impl Target {
    /// The item format configuration: attribute actions, key names, suite.
    pub fn config(&self) -> &TableConfig {
        &self.judge.policy().table.config
    }
}

/// How a scanned item is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// No encryption attributes at all.
    Plaintext,
    /// `aws_dbe_head` or `aws_dbe_foot` present.
    Dbesdk,
    /// The legacy client's material description or signature present.
    Legacy,
}

/// The format of an item as scanned.
pub fn format_of(item: &Item) -> Format {
    if item.contains_key(HEAD) || item.contains_key(FOOT) {
        Format::Dbesdk
    } else if item.contains_key(LEGACY_DESC) || item.contains_key(LEGACY_SIG) {
        Format::Legacy
    } else {
        Format::Plaintext
    }
}

/// Settings of the per-item work.
#[derive(Debug, Clone)]
pub struct RewriteSettings {
    /// Write attempts before an item that keeps changing is left for a later run.
    pub max_attempts: u32,
    /// Retries of a throttled or transient DynamoDB or KMS failure.
    pub max_retries: u32,
    /// First retry delay; doubles with jitter.
    pub retry_backoff: Duration,
    /// Dry run: classify and encrypt in memory, write nothing.
    pub dry_run: bool,
}

/// Processes one scanned item. Never panics on the item's content; every path ends in an [`Outcome`].
pub async fn process<D: DynamoApi>(
    db: &D,
    target: &Target,
    budgets: &Budgets,
    settings: &RewriteSettings,
    scanned: Item,
) -> Outcome {
    let mut current = scanned;
    let mut attempts = 0;
    loop {
        let legacy = match format_of(&current) {
            Format::Dbesdk if attempts == 0 => return structural(target, &current).await,
            Format::Dbesdk => return Outcome::EncryptedMeanwhile,
            Format::Legacy if target.from_legacy.is_some() => true,
            Format::Legacy if attempts == 0 => return Outcome::Legacy,
            Format::Legacy => return Outcome::EncryptedMeanwhile,
            Format::Plaintext => false,
        };
        if target.version_attribute.is_none() && current.len() > MAX_COMPARED_ATTRIBUTES {
            return Outcome::TooWide;
        }
        let plain = if legacy {
            open_legacy(target, budgets, settings, &current).await
        } else {
            table_item_to_item(&current).map_err(|_| Outcome::PolicyViolation {
                reason: "unconvertible_item",
            })
        };
        // `plain` is moved into the encryption and dropped there: the plaintext of a legacy item lives no longer.
        let encrypted = match plain {
            Ok(plain) => match encrypt(target, budgets, settings, plain).await {
                Ok(e) => e,
                Err(outcome) => return outcome,
            },
            Err(outcome) => return outcome,
        };
        if settings.dry_run {
            let encrypted_bytes = item_size(&encrypted);
            return if legacy {
                Outcome::WouldMigrateLegacy { encrypted_bytes }
            } else {
                Outcome::WouldEncrypt { encrypted_bytes }
            };
        }
        attempts += 1;
        match write_back(db, target, budgets, settings, &current, &encrypted).await {
            Ok(()) if legacy => return Outcome::MigratedLegacy { attempts },
            Ok(()) => return Outcome::Encrypted { attempts },
            Err(e) if e.kind == ErrorKind::Conflict => {}
            Err(e) => {
                tracing::warn!(table = %target.table, error = %e, "writing an encrypted item back failed");
                return Outcome::Failed {
                    reason: reason_of(e.kind),
                };
            }
        }
        if attempts >= settings.max_attempts {
            return Outcome::SkippedConflicts;
        }
        // The application wrote the item meanwhile: see what it is now.
        match reread(db, target, budgets, settings, &current).await {
            Ok(Some(now)) => current = now,
            Ok(None) => return Outcome::DeletedMeanwhile,
            Err(e) => {
                return Outcome::Failed {
                    reason: reason_of(e.kind),
                };
            }
        }
    }
}

fn reason_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Throttled => "dynamodb_throttled",
        ErrorKind::NotFound => "table_not_found",
        ErrorKind::Transient => "dynamodb_unavailable",
        ErrorKind::Conflict => "conflict",
        ErrorKind::InUse => "table_in_use",
        ErrorKind::Other => "dynamodb_error",
    }
}

/// The verdict of an item already in the DB-ESDK format, from the judge `verify` uses, at structural depth
/// (no KMS call).
async fn structural(target: &Target, item: &Item) -> Outcome {
    let judgement = match table_item_to_item(item) {
        Ok(i) => target.judge.judge(&i, Depth::Structural).await,
        Err(e) => ddbguard_verify::Judgement::new(Verdict::IntegrityFailed, e.reason(), e.to_string()),
    };
    Outcome::AlreadyEncrypted {
        verdict: judgement.verdict,
        reason: judgement.reason,
    }
}

/// A legacy item's plaintext (without the two reserved attributes), judged in full by the judge `verify` uses;
/// a verdict other than `ok` is the outcome instead. Throttled KMS calls are retried.
///
/// A dry run judges in full only where that costs no KMS call (wrapped and static providers); under the direct
/// KMS provider it checks the structure and stands the stored item (reserved attributes removed) in for the
/// plaintext, whose encryption then only sizes the estimate.
async fn open_legacy(
    target: &Target,
    budgets: &Budgets,
    settings: &RewriteSettings,
    item: &Item,
) -> Result<DbeItem, Outcome> {
    let stored = table_item_to_item(item).map_err(|e| Outcome::LegacyRefused {
        verdict: Verdict::IntegrityFailed,
        reason: e.reason(),
    })?;
    let calls_aws = target.from_legacy.is_some_and(|l| l.calls_aws);
    let (depth, cost) = if settings.dry_run && calls_aws {
        (Depth::Structural, 0.0)
    } else {
        (Depth::Full, target.from_legacy.map_or(0.0, |l| l.kms_calls_per_item))
    };
    let stored = &stored;
    with_kms_retries(&target.table, budgets, settings, cost, || async move {
        let (judgement, plaintext) = target.judge.judge_and_decrypt(stored, depth).await;
        let failed = Err(Outcome::Failed {
            reason: judgement.reason.as_str(),
        });
        match (judgement.verdict, plaintext) {
            (Verdict::Ok, Some(Plaintext::Ddbec(decrypted))) => Attempt::Done(Ok(decrypted.item)),
            (Verdict::OkStructural, None) if depth == Depth::Structural => {
                let mut stand_in = stored.clone();
                stand_in.remove(LEGACY_DESC);
                stand_in.remove(LEGACY_SIG);
                Attempt::Done(Ok(stand_in))
            }
            (Verdict::KmsThrottled, _) => Attempt::Throttled(failed),
            (Verdict::KeyUnavailable, _) => {
                tracing::warn!(table = %target.table, reason = %judgement.reason, "a legacy item's key is unavailable");
                Attempt::Done(failed)
            }
            // A pass without the legacy plaintext: the judge does not judge legacy items (checked at the start
            // of the run), so this is a fault of the wiring, not of the item.
            (verdict, _) if verdict.is_pass() => Attempt::Done(Err(Outcome::Failed {
                reason: "legacy_not_decrypted",
            })),
            (verdict, _) => {
                tracing::warn!(
                    table = %target.table,
                    verdict = %verdict,
                    reason = %judgement.reason,
                    "a legacy item does not verify; left as it is"
                );
                Attempt::Done(Err(Outcome::LegacyRefused {
                    verdict,
                    reason: judgement.reason,
                }))
            }
        }
    })
    .await
}

/// One attempt of a step that calls KMS: its result, or (KMS throttled) what to answer if no retry is left.
enum Attempt<T> {
    Done(T),
    Throttled(T),
}

/// Runs `attempt` under the KMS budget (`cost` requests each time; 0 for a step that makes none) and again after a
/// backoff while KMS throttles it, up to `settings.max_retries` times: the legacy decryption and the encryption
/// of one item.
async fn with_kms_retries<T, F, Fut>(
    table: &str,
    budgets: &Budgets,
    settings: &RewriteSettings,
    cost: f64,
    mut attempt: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Attempt<T>>,
{
    let mut backoff = Backoff::new(settings.retry_backoff, settings.retry_backoff * 64);
    loop {
        if cost > 0.0 {
            budgets.kms.ready().await;
            budgets.kms.charge(cost);
        }
        match attempt().await {
            Attempt::Done(result) => return result,
            Attempt::Throttled(result) if backoff.attempts() >= settings.max_retries => {
                tracing::warn!(
                    table,
                    retries = backoff.attempts(),
                    "KMS still throttles an item; left for a later pass"
                );
                return result;
            }
            Attempt::Throttled(_) => tokio::time::sleep(backoff.next_delay()).await,
        }
    }
}

/// Encrypts the plaintext item (with the version bumped when the table has one), retrying throttled KMS calls.
/// Takes the plaintext by value so that it is dropped as soon as it is encrypted.
async fn encrypt(
    target: &Target,
    budgets: &Budgets,
    settings: &RewriteSettings,
    mut plain: DbeItem,
) -> Result<Item, Outcome> {
    if let Some(version) = &target.version_attribute {
        let next = match plain.get(version) {
            None => 1u64,
            Some(DbeValue::N(n)) => match n.parse::<u64>() {
                Ok(v) => v.saturating_add(1),
                Err(_) => {
                    return Err(Outcome::PolicyViolation {
                        reason: "version_not_integer",
                    });
                }
            },
            Some(_) => {
                return Err(Outcome::PolicyViolation {
                    reason: "version_not_number",
                });
            }
        };
        plain.insert(version.clone(), DbeValue::N(next.to_string()));
    }
    let cost = if settings.dry_run {
        0.0
    } else {
        target.kms_calls_per_item
    };
    let plain = &plain;
    with_kms_retries(&target.table, budgets, settings, cost, || async move {
        match encrypt_item(target.config(), target.keyring.as_ref(), plain).await {
            Ok(encrypted) => Attempt::Done(Ok(item_to_table_item(&encrypted))),
            Err(e) => match e.verdict() {
                Verdict::KmsThrottled => Attempt::Throttled(Err(Outcome::Failed {
                    reason: e.reason().as_str(),
                })),
                Verdict::PolicyViolation => Attempt::Done(Err(Outcome::PolicyViolation {
                    reason: e.reason().as_str(),
                })),
                _ => {
                    tracing::warn!(error = %e, "encrypting an item failed");
                    Attempt::Done(Err(Outcome::Failed {
                        reason: e.reason().as_str(),
                    }))
                }
            },
        }
    })
    .await
}

/// The write-back condition (see the module docs).
pub fn write_condition(target: &Target, read: &Item) -> Condition {
    let mut all = vec![Condition::not_exists(HEAD), Condition::not_exists(FOOT)];
    match &target.version_attribute {
        Some(version) => {
            all.push(match read.get(version) {
                Some(v) => Condition::equals(version.clone(), v.clone()),
                None => Condition::not_exists(version.clone()),
            });
            // A legacy writer need not bump the version (the clients' encryptors do not, only a mapper with
            // optimistic locking does), but every legacy write makes a new signature: pinning it keeps such a
            // write from being overwritten with the values read.
            for name in [LEGACY_DESC, LEGACY_SIG] {
                if let Some(value) = read.get(name) {
                    all.push(Condition::equals(name, value.clone()));
                }
            }
        }
        None => {
            let mut names: Vec<&String> = read.keys().collect();
            names.sort();
            for name in names {
                all.push(Condition::equals(name.clone(), read[name].clone()));
            }
            let mut absent: Vec<&String> = target
                .config()
                .attribute_actions
                .keys()
                .filter(|n| !read.contains_key(*n))
                .collect();
            absent.sort();
            for name in absent {
                all.push(Condition::not_exists(name.clone()));
            }
        }
    }
    Condition::And(all)
}

/// The write-back update: every non-key attribute encryption changed or added (header and footer included), and
/// the removal of the legacy client's material description and signature when the item read had them.
pub fn write_update(target: &Target, read: &Item, encrypted: &Item) -> Update {
    let keys: Vec<&str> = target.config().key_names().collect();
    let mut names: Vec<&String> = encrypted
        .iter()
        .filter(|(n, v)| !keys.contains(&n.as_str()) && read.get(*n) != Some(*v))
        .map(|(n, _)| n)
        .collect();
    names.sort();
    let mut update = Update::new();
    for name in names {
        update = update.set(name.clone(), encrypted[name].clone());
    }
    for reserved in [LEGACY_DESC, LEGACY_SIG] {
        if read.contains_key(reserved) && !encrypted.contains_key(reserved) {
            update = update.remove(reserved);
        }
    }
    update
}

async fn write_back<D: DynamoApi>(
    db: &D,
    target: &Target,
    budgets: &Budgets,
    settings: &RewriteSettings,
    read: &Item,
    encrypted: &Item,
) -> Result<(), DdbError> {
    let key = key_of(target, read);
    let condition = write_condition(target, read);
    let update = write_update(target, read, encrypted);
    let estimate = write_units(item_size(read).max(item_size(encrypted)));
    retry(settings, || async {
        budgets.write.ready().await;
        let out = db
            .update_item(
                &target.table,
                key.clone(),
                update.clone(),
                Some(condition.clone()),
                ReturnValues::None,
            )
            .await;
        // A refused condition still consumes write capacity.
        let consumed = match &out {
            Ok(o) => o.consumed.write_units,
            Err(_) => 0.0,
        };
        budgets.write.charge(if consumed > 0.0 { consumed } else { estimate });
        out.map(|_| ())
    })
    .await
}

async fn reread<D: DynamoApi>(
    db: &D,
    target: &Target,
    budgets: &Budgets,
    settings: &RewriteSettings,
    read: &Item,
) -> Result<Option<Item>, DdbError> {
    let key = key_of(target, read);
    retry(settings, || async {
        budgets.read.ready().await;
        let out = db.get_item(&target.table, key.clone(), true).await?;
        let estimate = out.item.as_ref().map_or(1.0, |i| read_units(item_size(i), true));
        budgets.read.charge(if out.consumed.read_units > 0.0 {
            out.consumed.read_units
        } else {
            estimate
        });
        Ok(out.item)
    })
    .await
}

/// Retries throttled and transient failures with jittered backoff.
async fn retry<T, F, Fut>(settings: &RewriteSettings, mut call: F) -> Result<T, DdbError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DdbError>>,
{
    let mut backoff = Backoff::new(settings.retry_backoff, settings.retry_backoff * 64);
    loop {
        match call().await {
            Err(e) if e.kind.is_retryable() && backoff.attempts() < settings.max_retries => {
                tracing::debug!(error = %e, "retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            other => return other,
        }
    }
}

fn key_of(target: &Target, item: &Item) -> Item {
    target
        .config()
        .key_names()
        .filter_map(|k| item.get(k).map(|v| (k.to_owned(), v.clone())))
        .collect::<HashMap<String, AttributeValue>>()
}
