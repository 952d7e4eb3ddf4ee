//! When a failed try is tried again, how long to wait first, and how many retries a
//! rule may add.

use std::{
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    sync::Arc,
    time::Duration,
};

/// The compiled `retry` of a rule.
#[derive(Debug)]
pub struct RetryPolicy {
    /// Tries after the first.
    pub attempts: u32,
    pub on_connect_failure: bool,
    pub on_reset: bool,
    pub on_per_try_timeout: bool,
    pub on_server_error: bool,
    pub status_codes: Vec<u16>,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub non_idempotent: bool,
    pub budget: Arc<RetryBudget>,
}

/// How one try failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection was made: the backend never saw the request.
    Connect,
    /// The connection broke after the request may have been sent.
    Reset,
    PerTryTimeout,
    Status(u16),
}

impl RetryPolicy {
    /// Whether this failure is one the rule retries, for this method.
    pub fn retries(&self, method: &http::Method, failure: Failure) -> bool {
        let listed = match failure {
            Failure::Connect => self.on_connect_failure,
            Failure::Reset => self.on_reset,
            Failure::PerTryTimeout => self.on_per_try_timeout,
            Failure::Status(code) => {
                (self.on_server_error && code >= 500) || self.status_codes.contains(&code)
            }
        };
        // A refused connection never delivered anything, so repeating it is safe for
        // any method; anything else may have reached the backend.
        listed && (failure == Failure::Connect || self.non_idempotent || idempotent(method))
    }

    /// Full jitter: a random wait up to an exponentially growing cap.
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self
            .backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

/// Methods whose repetition has the same effect as one request (RFC 9110 §9.2.2).
pub fn idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// Tokens in thousandths: each request adds `percent` × 10, each retry takes 1,000.
#[derive(Debug)]
pub struct RetryBudget {
    deposit: i64,
    tokens: AtomicI64,
    /// [`super::now_ms`] of the last time-based refill.
    refilled: AtomicU64,
}

/// Retries saved up while traffic is light, so that a burst after a quiet spell can
/// still retry, but only so much.
const BUDGET_CAP: i64 = 100_000;
/// Ten retries a second are always allowed, so a rule with little traffic can retry at
/// all.
const FLOOR_PER_SECOND: i64 = 10_000;

impl RetryBudget {
    pub fn new(percent: u32) -> Self {
        RetryBudget {
            deposit: i64::from(percent) * 10,
            tokens: AtomicI64::new(FLOOR_PER_SECOND),
            refilled: AtomicU64::new(0),
        }
    }

    /// Called once for each request (not for its retries).
    pub fn deposit(&self) {
        if self.tokens.fetch_add(self.deposit, Ordering::Relaxed) > BUDGET_CAP {
            self.tokens.fetch_sub(self.deposit, Ordering::Relaxed);
        }
    }

    /// Takes one retry's worth, or says there is none left.
    pub fn withdraw(&self, now: u64) -> bool {
        let last = self.refilled.load(Ordering::Relaxed);
        if now > last
            && self
                .refilled
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let refill = i64::try_from(now - last).unwrap_or(i64::MAX) * FLOOR_PER_SECOND / 1000;
            let current = self.tokens.load(Ordering::Relaxed);
            if current < FLOOR_PER_SECOND {
                self.tokens
                    .fetch_add(refill.min(FLOOR_PER_SECOND - current), Ordering::Relaxed);
            }
        }
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t >= 1000).then_some(t - 1000)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn policy(non_idempotent: bool) -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            on_connect_failure: true,
            on_reset: true,
            on_per_try_timeout: true,
            on_server_error: false,
            status_codes: vec![503],
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
            non_idempotent,
            budget: Arc::new(RetryBudget::new(20)),
        }
    }

    #[test]
    fn post_is_retried_only_when_it_never_left() {
        let p = policy(false);
        assert!(p.retries(&Method::POST, Failure::Connect));
        assert!(!p.retries(&Method::POST, Failure::Reset));
        assert!(!p.retries(&Method::POST, Failure::PerTryTimeout));
        assert!(!p.retries(&Method::PATCH, Failure::Status(503)));
        assert!(p.retries(&Method::GET, Failure::Status(503)));
        assert!(p.retries(&Method::PUT, Failure::PerTryTimeout));
        assert!(!p.retries(&Method::GET, Failure::Status(500)));
        let opted_in = policy(true);
        assert!(opted_in.retries(&Method::POST, Failure::PerTryTimeout));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = policy(false);
        for _ in 0..200 {
            assert!(p.backoff(1) <= Duration::from_millis(25));
            assert!(p.backoff(2) <= Duration::from_millis(50));
            assert!(p.backoff(10) <= Duration::from_millis(250));
        }
        // Jitter: not every wait is the cap.
        assert!((0..50).any(|_| p.backoff(3) < Duration::from_millis(90)));
    }

    #[test]
    fn budget_allows_about_a_fifth_of_requests() {
        let b = RetryBudget::new(20);
        let now = super::super::now_ms();
        // Spend the floor first.
        while b.withdraw(now) {}
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.withdraw(now) {
                retries += 1;
            }
        }
        assert!(
            (199..=201).contains(&retries),
            "{retries} retries for 1000 requests"
        );
    }
}
