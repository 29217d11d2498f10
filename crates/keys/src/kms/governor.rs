//! The one place KMS calls go through: a process-wide request-rate limiter, retries of throttles and transient
//! failures with jittered exponential backoff inside a budget, and per-(region, operation, outcome) counting and
//! timing of every attempt.
//!
//! [`GovernedKms`] wraps any [`KmsApi`] and is itself a [`KmsApi`]. Share one [`RateLimiter`] (an `Arc`) among
//! all governed clients of a process so the configured rate holds across regions and tasks.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::api::{DataKey, EncryptionContext, KeyDescription, KmsApi, KmsFuture, ReEncryptRequest, WrappedKey};
use super::error::{KmsError, Operation};

/// An async token bucket: `rate` requests per second with bursts up to `burst`.
///
/// Callers that find the bucket empty reserve a token (the balance goes negative) and sleep until it is theirs,
/// so waiters are served in arrival order and the long-run rate never exceeds `rate`.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<BucketState>,
}

struct BucketState {
    tokens: f64,
    last: Instant,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .finish()
    }
}

impl RateLimiter {
    /// A limiter allowing `rate_per_sec` requests per second on average, `burst` at once (both at least 1).
    pub fn new(rate_per_sec: f64, burst: u32) -> RateLimiter {
        let rate = if rate_per_sec.is_finite() && rate_per_sec > 0.0 {
            rate_per_sec
        } else {
            1.0
        };
        let burst = f64::from(burst.max(1));
        RateLimiter {
            rate,
            burst,
            state: Mutex::new(BucketState {
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// The configured rate (requests per second).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Waits until one request may be sent.
    pub async fn acquire(&self) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
            s.tokens = (s.tokens + elapsed * self.rate).min(self.burst);
            s.last = now;
            s.tokens -= 1.0;
            if s.tokens >= 0.0 {
                None
            } else {
                Some(Duration::from_secs_f64(-s.tokens / self.rate))
            }
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

/// How throttled and transient KMS failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub max_attempts: u32,
    /// The backoff cap of the first retry; it doubles per attempt (full jitter: sleep uniformly in `0..cap`).
    pub base_delay: Duration,
    /// The largest backoff cap.
    pub max_delay: Duration,
    /// Total time a call may spend retrying (no sleep starts past it).
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            budget: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The jittered sleep before retry number `retry` (1-based).
    fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::random_range(0..=nanos))
    }
}

/// In-process counts of KMS calls by region, operation and outcome (each attempt counts once), readable by
/// tests and health checks. The same counts go to the `metrics` facade as `ddbguard_kms_requests_total`, and
/// each attempt's latency as `ddbguard_kms_request_duration_seconds` with the same labels.
#[derive(Debug, Default)]
pub struct KmsCounters {
    counts: Mutex<BTreeMap<(String, Operation, &'static str), u64>>,
}

impl KmsCounters {
    /// A fresh set of counters.
    pub fn new() -> Arc<KmsCounters> {
        Arc::new(KmsCounters::default())
    }

    /// Counts one attempt and records how long it took (the request alone: neither the rate limiter's wait nor
    /// the backoff before it, so the histogram shows KMS's latency, not ours).
    fn record(&self, region: &str, op: Operation, outcome: &'static str, took: Duration) {
        metrics::histogram!(
            "ddbguard_kms_request_duration_seconds",
            "region" => region.to_owned(),
            "operation" => op.as_str(),
            "outcome" => outcome,
        )
        .record(took.as_secs_f64());
        metrics::counter!(
            "ddbguard_kms_requests_total",
            "region" => region.to_owned(),
            "operation" => op.as_str(),
            "outcome" => outcome,
        )
        .increment(1);
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((region.to_owned(), op, outcome)).or_default() += 1;
    }

    /// The count for one (region, operation, outcome).
    pub fn get(&self, region: &str, op: Operation, outcome: &str) -> u64 {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.iter()
            .filter(|((r, o, out), _)| r == region && *o == op && *out == outcome)
            .map(|(_, n)| *n)
            .sum()
    }

    /// All calls to `op` in `region`, whatever the outcome.
    pub fn calls(&self, region: &str, op: Operation) -> u64 {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.iter()
            .filter(|((r, o, _), _)| r == region && *o == op)
            .map(|(_, n)| *n)
            .sum()
    }

    /// All calls counted.
    pub fn total(&self) -> u64 {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).values().sum()
    }

    /// A copy of every count, keyed `(region, operation, outcome)`.
    pub fn snapshot(&self) -> BTreeMap<(String, Operation, &'static str), u64> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A [`KmsApi`] that rate-limits, retries and counts every call of the client it wraps.
#[derive(Debug, Clone)]
pub struct GovernedKms {
    inner: Arc<dyn KmsApi>,
    limiter: Option<Arc<RateLimiter>>,
    retry: RetryPolicy,
    counters: Arc<KmsCounters>,
}

impl GovernedKms {
    /// Governs `inner` with the given (shared) limiter, retry policy and counters.
    pub fn new(
        inner: Arc<dyn KmsApi>,
        limiter: Option<Arc<RateLimiter>>,
        retry: RetryPolicy,
        counters: Arc<KmsCounters>,
    ) -> GovernedKms {
        GovernedKms {
            inner,
            limiter,
            retry,
            counters,
        }
    }

    /// The counters this client records into.
    pub fn counters(&self) -> &Arc<KmsCounters> {
        &self.counters
    }

    async fn run<'a, T, F>(&'a self, op: Operation, mut call: F) -> Result<T, KmsError>
    where
        F: FnMut() -> KmsFuture<'a, T>,
    {
        let start = Instant::now();
        let region = self.inner.region().to_owned();
        let mut attempt = 1;
        loop {
            if let Some(l) = &self.limiter {
                l.acquire().await;
            }
            let sent = Instant::now();
            let result = call().await;
            let took = sent.elapsed();
            match result {
                Ok(v) => {
                    self.counters.record(&region, op, "ok", took);
                    return Ok(v);
                }
                Err(e) => {
                    self.counters.record(&region, op, e.kind.outcome(), took);
                    if !e.kind.is_retryable() || attempt >= self.retry.max_attempts {
                        return Err(e);
                    }
                    let sleep = self.retry.backoff(attempt);
                    if start.elapsed() + sleep > self.retry.budget {
                        return Err(e);
                    }
                    tracing::debug!(
                        region = %region, operation = %op, attempt, sleep_ms = sleep.as_millis() as u64,
                        error = %e, "retrying KMS call"
                    );
                    tokio::time::sleep(sleep).await;
                    attempt += 1;
                }
            }
        }
    }
}

impl KmsApi for GovernedKms {
    fn region(&self) -> &str {
        self.inner.region()
    }

    fn decrypt<'a>(&'a self, key_id: &'a str, ct: &'a [u8], ec: &'a EncryptionContext) -> KmsFuture<'a, DataKey> {
        Box::pin(self.run(Operation::Decrypt, move || self.inner.decrypt(key_id, ct, ec)))
    }

    fn generate_data_key<'a>(&'a self, key_id: &'a str, n: i32, ec: &'a EncryptionContext) -> KmsFuture<'a, DataKey> {
        Box::pin(self.run(Operation::GenerateDataKey, move || {
            self.inner.generate_data_key(key_id, n, ec)
        }))
    }

    fn generate_data_key_without_plaintext<'a>(
        &'a self,
        key_id: &'a str,
        n: i32,
        ec: &'a EncryptionContext,
    ) -> KmsFuture<'a, WrappedKey> {
        Box::pin(self.run(Operation::GenerateDataKeyWithoutPlaintext, move || {
            self.inner.generate_data_key_without_plaintext(key_id, n, ec)
        }))
    }

    fn describe_key<'a>(&'a self, key_id: &'a str) -> KmsFuture<'a, KeyDescription> {
        Box::pin(self.run(Operation::DescribeKey, move || self.inner.describe_key(key_id)))
    }

    fn re_encrypt<'a>(&'a self, request: ReEncryptRequest<'a>) -> KmsFuture<'a, WrappedKey> {
        Box::pin(self.run(Operation::ReEncrypt, move || self.inner.re_encrypt(request)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::fake::{FailureKms, FakeKms, FakeKmsWorld};
    use crate::test_metrics::sample;

    const KEY: &str = "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab";

    /// A fake KMS whose `GenerateDataKey` takes 30 ms.
    #[derive(Debug)]
    struct Slow(FakeKms);

    const SLOW: Duration = Duration::from_millis(30);

    impl KmsApi for Slow {
        fn region(&self) -> &str {
            self.0.region()
        }
        fn decrypt<'a>(&'a self, key_id: &'a str, ct: &'a [u8], ec: &'a EncryptionContext) -> KmsFuture<'a, DataKey> {
            self.0.decrypt(key_id, ct, ec)
        }
        fn generate_data_key<'a>(
            &'a self,
            key_id: &'a str,
            n: i32,
            ec: &'a EncryptionContext,
        ) -> KmsFuture<'a, DataKey> {
            Box::pin(async move {
                tokio::time::sleep(SLOW).await;
                self.0.generate_data_key(key_id, n, ec).await
            })
        }
        fn generate_data_key_without_plaintext<'a>(
            &'a self,
            key_id: &'a str,
            n: i32,
            ec: &'a EncryptionContext,
        ) -> KmsFuture<'a, WrappedKey> {
            self.0.generate_data_key_without_plaintext(key_id, n, ec)
        }
        fn describe_key<'a>(&'a self, key_id: &'a str) -> KmsFuture<'a, KeyDescription> {
            self.0.describe_key(key_id)
        }
        fn re_encrypt<'a>(&'a self, request: ReEncryptRequest<'a>) -> KmsFuture<'a, WrappedKey> {
            self.0.re_encrypt(request)
        }
    }

    /// Each attempt is timed under its own outcome, and only the request itself: the throttled attempt
    /// (answered at once) and the retry that succeeded (30 ms) are two observations, and the backoff between
    /// them is in neither.
    #[tokio::test(start_paused = true)]
    async fn every_attempt_is_timed_by_outcome() {
        let world = FakeKmsWorld::new();
        world.create_key(KEY);
        let failing = Arc::new(FailureKms::new(Arc::new(Slow(world.client("eu-west-1")))));
        failing.fail_next(Operation::GenerateDataKey, 1, "ThrottlingException", 400);
        let retry = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_millis(500),
            budget: Duration::from_secs(5),
        };
        let kms = GovernedKms::new(failing, None, retry, KmsCounters::new());
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        {
            let _local = metrics::set_default_local_recorder(&recorder);
            kms.generate_data_key(KEY, 32, &EncryptionContext::new()).await.unwrap();
        }
        let text = handle.render();
        let series = |outcome: &str, suffix: &str| {
            let labels = format!("{{region=\"eu-west-1\",operation=\"generate_data_key\",outcome=\"{outcome}\"}}");
            sample(
                &text,
                &format!("ddbguard_kms_request_duration_seconds_{suffix}{labels}"),
            )
        };
        assert_eq!(series("throttled", "count"), Some(1.0), "{text}");
        assert_eq!(series("throttled", "sum"), Some(0.0), "{text}");
        assert_eq!(series("ok", "count"), Some(1.0), "{text}");
        let ok = series("ok", "sum").unwrap();
        assert!((0.030..0.032).contains(&ok), "{ok}: {text}");
        assert_eq!(
            kms.counters().get("eu-west-1", Operation::GenerateDataKey, "throttled"),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_holds_the_rate() {
        let l = Arc::new(RateLimiter::new(10.0, 5));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..25 {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                l.acquire().await;
                Instant::now()
            }));
        }
        let mut done = Vec::new();
        for t in tasks {
            done.push(t.await.unwrap().duration_since(start));
        }
        done.sort();
        // 5 at once (burst), then 20 more at 10/s: the last one after 2 s, none before.
        assert_eq!(done.iter().filter(|d| d.is_zero()).count(), 5);
        let last = *done.last().unwrap();
        assert!(
            last >= Duration::from_millis(1990) && last <= Duration::from_millis(2010),
            "{last:?}"
        );
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(800),
            budget: Duration::from_secs(60),
        };
        for retry in 1..40 {
            let cap = Duration::from_millis(100 * (1u64 << (retry - 1).min(3)));
            assert!(p.backoff(retry) <= cap.min(Duration::from_millis(800)));
        }
    }
}
