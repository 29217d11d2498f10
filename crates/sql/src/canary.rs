//! Canaries: a row per origin region in `ddbguard_canaries` on the primary, rewritten every interval with a fresh
//! AWS Encryption SDK message under the MRK, read and decrypted on each secondary with the local replica key.
//!
//! They measure what the application's own rows cannot while it is idle: how far behind a secondary is
//! (`ddbguard_canary_lag_seconds`, the age of a canary when it is first seen, on the secondary's clock) and
//! whether it still receives and can decrypt (`ddbguard_canary_missing` = 1 once the newest canary is older than
//! the overdue threshold, or does not decrypt). Both carry `system="aurora"`.

use std::time::Duration;

use ddbguard_dbe::Verdict;
use tokio_postgres::Client;

use crate::SqlError;
use crate::cipher::{EncryptionContext, Stored, ValueCipher, judge};
use crate::table::Encoding;

/// The canary table.
pub const CANARY_TABLE: &str = "ddbguard_canaries";
const LABEL: &str = "ddbguard_canaries";

fn context(origin: &str, seq: i64) -> EncryptionContext {
    [
        ("purpose".to_owned(), "ddbguard-canary".to_owned()),
        ("origin_region".to_owned(), origin.to_owned()),
        ("seq".to_owned(), seq.to_string()),
    ]
    .into()
}

/// Creates the canary table on the primary when missing.
pub async fn ensure_table(primary: &Client) -> Result<(), SqlError> {
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {CANARY_TABLE} (origin_region text PRIMARY KEY, seq bigint NOT NULL, \
         written_at timestamptz NOT NULL, message text NOT NULL)"
    );
    match primary.batch_execute(&create).await {
        Ok(()) => Ok(()),
        Err(e) if e.code().is_some_and(|c| c.code() == "23505" || c.code() == "42P07") => Ok(()),
        Err(e) => Err(SqlError::query(LABEL, e)),
    }
}

/// Writes the next canary of `origin` on the primary; returns its sequence number.
pub async fn write(primary: &Client, cipher: &dyn ValueCipher, origin: &str) -> Result<i64, SqlError> {
    let seq: i64 = primary
        .query_opt(
            &format!("SELECT seq FROM {CANARY_TABLE} WHERE origin_region = $1"),
            &[&origin],
        )
        .await
        .map_err(|e| SqlError::query(LABEL, e))?
        .map_or(0, |r| r.get::<_, i64>(0))
        + 1;
    let message = cipher
        .seal(format!("canary {origin} {seq}").as_bytes(), &context(origin, seq))
        .await
        .map_err(|e| SqlError::Query {
            table: LABEL.to_owned(),
            message: e.to_string(),
            sqlstate: None,
        })?;
    let Stored::Text(message) = Stored::encode(message, Encoding::Base64) else {
        return Err(SqlError::Query {
            table: LABEL.to_owned(),
            message: "canary encoding".into(),
            sqlstate: None,
        });
    };
    primary
        .execute(
            &format!(
                "INSERT INTO {CANARY_TABLE} VALUES ($1, $2, clock_timestamp(), $3) ON CONFLICT (origin_region) DO \
                 UPDATE SET seq = EXCLUDED.seq, written_at = EXCLUDED.written_at, message = EXCLUDED.message"
            ),
            &[&origin, &seq, &message],
        )
        .await
        .map_err(|e| SqlError::query(LABEL, e))?;
    Ok(seq)
}

/// The newest canary of an origin as a secondary sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Its sequence number.
    pub seq: i64,
    /// Seconds since it was written, on the reader's clock.
    pub age_seconds: f64,
    /// Its verdict (decrypted with the local key and bound to its origin and sequence number).
    pub verdict: Verdict,
}

/// Reads and judges the newest canary of `origin` on `reader`; `None` when none has arrived yet.
pub async fn read(reader: &Client, cipher: &dyn ValueCipher, origin: &str) -> Result<Option<Observation>, SqlError> {
    let row = reader
        .query_opt(
            &format!(
                "SELECT seq, extract(epoch FROM clock_timestamp() - written_at)::float8, message FROM {CANARY_TABLE} \
                 WHERE origin_region = $1"
            ),
            &[&origin],
        )
        .await;
    let row = match row {
        Ok(row) => row,
        // Not replicated yet: no canary.
        Err(e) if e.code().is_some_and(|c| c.code() == "42P01") => return Ok(None),
        Err(e) => return Err(SqlError::query(LABEL, e)),
    };
    let Some(row) = row else { return Ok(None) };
    let seq: i64 = row.get(0);
    let verdict = judge(cipher, &Stored::Text(row.get(2)), Some(&context(origin, seq))).await;
    Ok(Some(Observation {
        seq,
        age_seconds: row.get::<_, f64>(1).max(0.0),
        verdict,
    }))
}

/// Turns successive observations of one origin into the two canary metrics, and tells when the missing state
/// changes (so that the verifier alerts on the change, as the DynamoDB verifier's `canary_missing` /
/// `canary_arrived`, not on every poll).
#[derive(Debug)]
pub struct Watch {
    origin: String,
    overdue_after: Duration,
    last_seq: Option<i64>,
    /// The missing state of the last observation; `None` before the first.
    missing: Option<bool>,
    changed: bool,
}

impl Watch {
    /// Watches `origin`'s canaries; missing once the newest is older than `overdue_after`.
    pub fn new(origin: &str, overdue_after: Duration) -> Watch {
        Watch {
            origin: origin.to_owned(),
            overdue_after,
            last_seq: None,
            missing: None,
            changed: false,
        }
    }

    /// Whether the last [`observe`](Self::observe) changed the missing state. The first observation is a change
    /// only when the canary is missing: a verifier that starts healthy has nothing to announce.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// Records one observation and returns whether the canary is missing (also set as the gauge).
    pub fn observe(&mut self, observation: Option<&Observation>) -> bool {
        let missing = match observation {
            None => true,
            Some(o) => {
                if self.last_seq != Some(o.seq) && o.verdict.is_pass() {
                    self.last_seq = Some(o.seq);
                    metrics::histogram!(crate::metrics::CANARY_LAG, "system" => "aurora", "origin_region" => self.origin.clone())
                        .record(o.age_seconds);
                }
                !o.verdict.is_pass() || o.age_seconds > self.overdue_after.as_secs_f64()
            }
        };
        metrics::gauge!(crate::metrics::CANARY_MISSING, "system" => "aurora", "origin_region" => self.origin.clone())
            .set(if missing { 1.0 } else { 0.0 });
        self.changed = self.missing.unwrap_or(false) != missing;
        self.missing = Some(missing);
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(seq: i64, age: f64, verdict: Verdict) -> Observation {
        Observation {
            seq,
            age_seconds: age,
            verdict,
        }
    }

    #[test]
    fn a_canary_is_missing_when_absent_overdue_or_undecryptable() {
        let mut w = Watch::new("us-east-1", Duration::from_secs(10));
        assert!(w.observe(None));
        assert!(!w.observe(Some(&seen(1, 0.5, Verdict::Ok))));
        assert!(w.observe(Some(&seen(1, 10.5, Verdict::Ok))));
        assert!(!w.observe(Some(&seen(2, 0.2, Verdict::Ok))));
        assert!(w.observe(Some(&seen(3, 0.2, Verdict::KeyUnavailable))));
    }

    #[test]
    fn only_changes_of_the_missing_state_are_changes() {
        let mut w = Watch::new("us-east-1", Duration::from_secs(10));
        // Healthy from the start: nothing to say.
        w.observe(Some(&seen(1, 0.5, Verdict::Ok)));
        assert!(!w.changed());
        w.observe(Some(&seen(2, 0.5, Verdict::Ok)));
        assert!(!w.changed());
        // Goes missing once, stays missing without repeating itself, arrives once.
        w.observe(Some(&seen(2, 11.0, Verdict::Ok)));
        assert!(w.changed());
        w.observe(Some(&seen(2, 12.0, Verdict::Ok)));
        assert!(!w.changed());
        w.observe(None);
        assert!(!w.changed());
        w.observe(Some(&seen(3, 0.1, Verdict::Ok)));
        assert!(w.changed());
        // Missing from the very first look is a change.
        let mut w = Watch::new("us-east-1", Duration::from_secs(10));
        w.observe(None);
        assert!(w.changed());
    }
}
