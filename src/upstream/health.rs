//! Whether an endpoint should get traffic: passive checks count failures on real
//! traffic and eject for a while; active checks probe with an HTTP request.

use std::{
    sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

/// The health settings of one backend.
#[derive(Debug)]
pub struct HealthPolicy {
    pub passive: Option<PassiveCheck>,
    pub active: Option<std::sync::Arc<ActiveCheck>>,
    /// Below this share of healthy endpoints, in percent, health is ignored.
    pub panic_percent: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PassiveCheck {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ActiveCheck {
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// Health counters of one endpoint. Lock-free: every request may update them.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    failures: AtomicU32,
    /// [`super::now_ms`] until which the endpoint is ejected.
    ejected_until: AtomicU64,
    /// Ejections in a row: each one lasts a period longer.
    ejections: AtomicU32,
    /// Set while the active check says the endpoint is down.
    probe_down: AtomicBool,
    /// Passing probes in a row when positive, failing ones when negative.
    probe_streak: AtomicI32,
    /// [`super::now_ms`] of the next probe.
    pub(crate) next_probe: AtomicU64,
}

/// What a result did to an endpoint, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Ejected(Duration),
    Down,
    Up,
}

impl EndpointHealth {
    pub fn available(&self, now: u64) -> bool {
        !self.probe_down.load(Ordering::Relaxed)
            && self.ejected_until.load(Ordering::Relaxed) <= now
    }

    /// Records the outcome of one request on real traffic.
    pub fn record(&self, ok: bool, check: &PassiveCheck, now: u64) -> Option<Change> {
        if ok {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            // A success after the ejection ended and well past it forgives the
            // earlier ejections, so an old incident does not lengthen the next one.
            let until = self.ejected_until.load(Ordering::Relaxed);
            if until != 0 && now >= until + check.max_ejection.as_millis() as u64 {
                self.ejections.store(0, Ordering::Relaxed);
                self.ejected_until.store(0, Ordering::Relaxed);
            }
            return None;
        }
        // Failures of requests still in flight when the endpoint was ejected are not
        // counted: they would eject it again on the first failure after it returns.
        if self.ejected_until.load(Ordering::Relaxed) > now {
            return None;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < check.consecutive_failures {
            return None;
        }
        // Requests in flight when the endpoint was ejected may still fail; only the
        // one that wins the reset ejects.
        if self
            .failures
            .compare_exchange(failures, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let period = check
            .base_ejection
            .saturating_mul(n)
            .min(check.max_ejection);
        self.ejected_until
            .store(now + period.as_millis() as u64, Ordering::Relaxed);
        Some(Change::Ejected(period))
    }

    /// Forgets what probes said, once no rule probes the endpoint any more: a verdict
    /// nothing can revise must not keep it out of rotation.
    pub fn forget_probes(&self) {
        self.probe_down.store(false, Ordering::Relaxed);
        self.probe_streak.store(0, Ordering::Relaxed);
    }

    /// Records one probe; returns the change when a threshold was crossed.
    pub fn record_probe(&self, ok: bool, check: &ActiveCheck) -> Option<Change> {
        let old = self
            .probe_streak
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some(next_streak(s, ok))
            })
            .unwrap_or_else(|s| s);
        let streak = next_streak(old, ok);
        let down = self.probe_down.load(Ordering::Relaxed);
        if ok && down && streak >= check.healthy_threshold as i32 {
            self.probe_down.store(false, Ordering::Relaxed);
            return Some(Change::Up);
        }
        if !ok && !down && -streak >= check.unhealthy_threshold as i32 {
            self.probe_down.store(true, Ordering::Relaxed);
            return Some(Change::Down);
        }
        None
    }
}

fn next_streak(streak: i32, ok: bool) -> i32 {
    match (ok, streak > 0) {
        (true, true) => streak.saturating_add(1),
        (true, false) => 1,
        (false, true) => -1,
        (false, false) => streak.saturating_sub(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passive() -> PassiveCheck {
        PassiveCheck {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
        }
    }

    fn active(healthy_threshold: u32, unhealthy_threshold: u32) -> ActiveCheck {
        ActiveCheck {
            path: "/healthz".parse().unwrap(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold,
            unhealthy_threshold,
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_for_growing_periods() {
        let h = EndpointHealth::default();
        let c = passive();
        assert_eq!(h.record(false, &c, 0), None);
        assert_eq!(h.record(false, &c, 0), None);
        assert_eq!(
            h.record(false, &c, 0),
            Some(Change::Ejected(Duration::from_secs(10)))
        );
        assert!(!h.available(9_999));
        assert!(h.available(10_000));
        // A success in between resets the count.
        h.record(false, &c, 10_000);
        h.record(true, &c, 10_000);
        h.record(false, &c, 10_000);
        assert_eq!(h.record(false, &c, 10_000), None);
        assert_eq!(
            h.record(false, &c, 10_000),
            Some(Change::Ejected(Duration::from_secs(20)))
        );
        assert!(h.available(30_000));
        for _ in 0..2 {
            h.record(false, &c, 30_000);
        }
        // The third ejection would last 30 s; the maximum caps it.
        assert_eq!(
            h.record(false, &c, 30_000),
            Some(Change::Ejected(Duration::from_secs(25)))
        );
        // Long after, a success forgives the series.
        h.record(true, &c, 200_000);
        for _ in 0..2 {
            h.record(false, &c, 200_000);
        }
        assert_eq!(
            h.record(false, &c, 200_000),
            Some(Change::Ejected(Duration::from_secs(10)))
        );
    }

    #[test]
    fn failures_while_ejected_do_not_count_towards_the_next_ejection() {
        let h = EndpointHealth::default();
        let c = passive();
        for _ in 0..2 {
            h.record(false, &c, 0);
        }
        assert!(matches!(h.record(false, &c, 0), Some(Change::Ejected(_))));
        // Requests that were in flight when it was ejected fail too.
        for _ in 0..5 {
            assert_eq!(h.record(false, &c, 5_000), None);
        }
        // Back in rotation, it takes three failures in a row again.
        assert_eq!(h.record(false, &c, 10_000), None);
        assert_eq!(h.record(false, &c, 10_000), None);
        assert!(matches!(
            h.record(false, &c, 10_000),
            Some(Change::Ejected(_))
        ));
    }

    #[test]
    fn forgotten_probes_put_the_endpoint_back() {
        let h = EndpointHealth::default();
        let c = active(2, 1);
        assert_eq!(h.record_probe(false, &c), Some(Change::Down));
        assert!(!h.available(0));
        h.forget_probes();
        assert!(h.available(0));
    }

    #[test]
    fn probes_cross_thresholds_both_ways() {
        let h = EndpointHealth::default();
        let c = active(2, 3);
        assert_eq!(h.record_probe(false, &c), None);
        assert_eq!(h.record_probe(false, &c), None);
        assert_eq!(h.record_probe(false, &c), Some(Change::Down));
        assert!(!h.available(0));
        assert_eq!(h.record_probe(false, &c), None);
        assert_eq!(h.record_probe(true, &c), None);
        assert_eq!(h.record_probe(true, &c), Some(Change::Up));
        assert!(h.available(0));
    }
}
