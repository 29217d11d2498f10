//! Rate budgets: consumed read and write capacity, and KMS requests.
//!
//! Capacity is only known after a call (DynamoDB reports what it consumed), so each budget is a token bucket
//! that may go into debt: a call waits until the bucket is not negative, then its consumption is charged. Over a
//! run the consumption stays within `rate × elapsed + burst`, where the burst is one second of rate. Every wait is
//! accounted to its budget, so the report can say which one limited the run.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Which budget a wait was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    /// Read capacity units per second.
    ReadCapacity,
    /// Write capacity units per second.
    WriteCapacity,
    /// KMS requests per second.
    Kms,
    /// Rows per second (the SQL backfill, where the database reports no consumed capacity).
    Rows,
}

impl BudgetKind {
    /// The snake_case name used in reports and progress lines.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetKind::ReadCapacity => "read_capacity",
            BudgetKind::WriteCapacity => "write_capacity",
            BudgetKind::Kms => "kms",
            BudgetKind::Rows => "rows",
        }
    }
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
    waited: Duration,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
    }
}

/// One budget, shared by every task of a process.
#[derive(Debug)]
pub struct Budget {
    kind: BudgetKind,
    bucket: Option<Mutex<Bucket>>,
    /// Every unit charged, limited or not (the report's consumed capacity).
    charged: Mutex<f64>,
}

impl Budget {
    /// A budget of `rate` units per second; `None` is unlimited.
    pub fn new(kind: BudgetKind, rate: Option<f64>) -> Self {
        let bucket = rate.filter(|r| *r > 0.0 && r.is_finite()).map(|rate| {
            Mutex::new(Bucket {
                rate,
                tokens: rate,
                last: Instant::now(),
                waited: Duration::ZERO,
            })
        });
        Self {
            kind,
            bucket,
            charged: Mutex::new(0.0),
        }
    }

    /// Units charged so far.
    pub fn charged(&self) -> f64 {
        *self.charged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The budget's kind.
    pub fn kind(&self) -> BudgetKind {
        self.kind
    }

    /// The rate, if limited.
    pub fn rate(&self) -> Option<f64> {
        self.bucket.as_ref().map(|b| lock(b).rate)
    }

    /// Waits until the budget is not in debt.
    pub async fn ready(&self) {
        let Some(bucket) = &self.bucket else { return };
        loop {
            let wait = {
                let mut b = lock(bucket);
                b.refill(Instant::now());
                if b.tokens >= 0.0 {
                    return;
                }
                Duration::from_secs_f64(-b.tokens / b.rate)
            };
            tokio::time::sleep(wait).await;
            lock(bucket).waited += wait;
        }
    }

    /// Charges what a call consumed.
    pub fn charge(&self, units: f64) {
        if units > 0.0 {
            *self.charged.lock().unwrap_or_else(|e| e.into_inner()) += units;
        }
        if let Some(bucket) = &self.bucket
            && units > 0.0
        {
            let mut b = lock(bucket);
            b.refill(Instant::now());
            b.tokens -= units;
        }
    }

    /// Total time callers waited for this budget.
    pub fn waited(&self) -> Duration {
        self.bucket.as_ref().map(|b| lock(b).waited).unwrap_or_default()
    }
}

fn lock<T>(b: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    b.lock().unwrap_or_else(|e| e.into_inner())
}

/// The three budgets of a run.
#[derive(Debug)]
pub struct Budgets {
    /// Read capacity (the scan).
    pub read: Budget,
    /// Write capacity (the write-back and re-reads after conflicts).
    pub write: Budget,
    /// KMS requests (one `GenerateDataKey` per item with the `kms-mrk` keyring).
    pub kms: Budget,
}

impl Budgets {
    /// Budgets from rates per second (`None`: unlimited).
    pub fn new(read: Option<f64>, write: Option<f64>, kms: Option<f64>) -> Self {
        Self {
            read: Budget::new(BudgetKind::ReadCapacity, read),
            write: Budget::new(BudgetKind::WriteCapacity, write),
            kms: Budget::new(BudgetKind::Kms, kms),
        }
    }

    /// The budget callers waited for most, if any wait happened at all.
    pub fn limiting(&self) -> Option<BudgetKind> {
        [&self.read, &self.write, &self.kms]
            .into_iter()
            .filter(|b| !b.waited().is_zero())
            .max_by_key(|b| b.waited())
            .map(Budget::kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn consumption_stays_within_rate_and_burst() {
        let budget = Budget::new(BudgetKind::WriteCapacity, Some(100.0));
        let start = Instant::now();
        let mut consumed = 0.0;
        while start.elapsed() < Duration::from_secs(30) {
            budget.ready().await;
            budget.charge(7.0);
            consumed += 7.0;
        }
        let elapsed = start.elapsed().as_secs_f64();
        // At most one second of burst plus one call of debt above the rate.
        assert!(consumed <= 100.0 * elapsed + 100.0 + 7.0, "{consumed} in {elapsed} s");
        assert!(
            consumed >= 100.0 * 29.0,
            "the budget is used, not just respected: {consumed}"
        );
        assert!(budget.waited() > Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits_and_the_limiting_budget_is_named() {
        let budgets = Budgets::new(None, Some(10.0), None);
        for _ in 0..50 {
            budgets.read.ready().await;
            budgets.read.charge(100.0);
            budgets.write.ready().await;
            budgets.write.charge(1.0);
        }
        assert!(budgets.read.waited().is_zero());
        assert_eq!(budgets.limiting(), Some(BudgetKind::WriteCapacity));
        assert_eq!(Budgets::new(None, None, None).limiting(), None);
    }
}
