use super::*;
use crate::config::{Duration as SpecDuration, RateLimitKey};
use governor::clock::FakeRelativeClock;

fn mk_spec(requests: u32, per: Duration, burst: Option<u32>) -> RateLimitPolicy {
    RateLimitPolicy {
        requests,
        per: SpecDuration(per),
        burst,
        key: RateLimitKey::default(),
        shared: false,
    }
}

fn mk_local(
    requests: u32,
    per: Duration,
    burst: Option<u32>,
) -> (Local<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    let bucket = Bucket::from_spec(&mk_spec(requests, per, burst)).unwrap();
    (Local::new(bucket, clock.clone()), clock)
}

fn mk_decision(outcome: Outcome, spec: &RateLimitPolicy) -> Decision {
    RateLimiter::build(spec, "ns/p", None)
        .unwrap()
        .decision(outcome, Store::Local)
}

fn header_bytes(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut all: Vec<_> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    all.sort();
    all
}

#[test]
fn admits_the_burst_then_limits() {
    let (local, _clock) = mk_local(3, Duration::from_secs(3), None);
    let remaining: Vec<_> = (0..3).map(|_| local.check("a")).collect();
    assert!(remaining.iter().all(|o| o.allowed));
    assert_eq!(
        remaining.iter().map(|o| o.remaining).collect::<Vec<_>>(),
        [2, 1, 0]
    );
    let refused = local.check("a");
    assert!(!refused.allowed);
    assert_eq!(refused.retry_after, Duration::from_secs(1));
    // Empty: three intervals until full again.
    assert_eq!(refused.reset, Duration::from_secs(3));
}

#[test]
fn burst_defaults_to_requests_and_may_be_smaller() {
    let (local, _clock) = mk_local(10, Duration::from_secs(10), Some(2));
    assert!(local.check("a").allowed);
    assert!(local.check("a").allowed);
    assert!(!local.check("a").allowed);
}

#[test]
fn refills_at_the_rate() {
    let (local, clock) = mk_local(3, Duration::from_secs(3), None);
    for _ in 0..3 {
        assert!(local.check("a").allowed);
    }
    clock.advance(Duration::from_millis(500));
    let early = local.check("a");
    assert!(!early.allowed);
    assert_eq!(early.retry_after, Duration::from_millis(500));

    clock.advance(Duration::from_millis(500));
    let one = local.check("a");
    assert!(one.allowed);
    assert_eq!(one.remaining, 0);
    assert!(!local.check("a").allowed);

    // After a whole `per`, the whole burst again, and no more.
    clock.advance(Duration::from_secs(3));
    assert_eq!((0..4).filter(|_| local.check("a").allowed).count(), 3);
}

#[test]
fn keys_are_independent() {
    let (local, _clock) = mk_local(1, Duration::from_secs(60), None);
    assert!(local.check("10.0.0.1").allowed);
    assert!(!local.check("10.0.0.1").allowed);
    assert!(local.check("10.0.0.2").allowed);
    assert!(local.check("").allowed);
}

#[test]
fn pruning_drops_refilled_keys_and_keeps_busy_ones() {
    let (local, clock) = mk_local(10, Duration::from_secs(1), None);
    for i in 0..100_000 {
        local.check(&format!("client-{i}"));
    }
    assert_eq!(local.len(), 100_000);

    // Before one interval (100 ms) has passed, no bucket is full: a sweep keeps all.
    clock.advance(Duration::from_millis(50));
    local.prune();
    assert_eq!(local.len(), 100_000);

    clock.advance(Duration::from_secs(1));
    for _ in 0..10 {
        local.check("busy");
    }
    local.prune();
    assert_eq!(local.len(), 1);
    assert!(
        !local.check("busy").allowed,
        "a kept bucket keeps its count"
    );
}

#[test]
fn checks_sweep_on_their_own_when_the_map_doubles() {
    let (mut local, clock) = mk_local(10, Duration::from_secs(1), None);
    local.prune_floor = 1_000;
    local.prune_above.store(1_000, Ordering::Relaxed);
    for i in 0..5_000 {
        local.check(&format!("old-{i}"));
    }
    clock.advance(Duration::from_secs(2));
    for i in 0..5_000 {
        local.check(&format!("new-{i}"));
    }
    // The old keys went in a sweep that a check started; no minute has passed.
    assert!(local.len() <= 5_000, "{} keys", local.len());
}

#[test]
fn checks_sweep_on_their_own_every_interval() {
    let (local, clock) = mk_local(10, Duration::from_secs(1), None);
    for i in 0..100 {
        local.check(&format!("k-{i}"));
    }
    clock.advance(PRUNE_INTERVAL);
    local.check("late");
    assert_eq!(local.len(), 1);
}

#[test]
fn allowed_answers_carry_the_policy_and_what_is_left() {
    let spec = mk_spec(100, Duration::from_secs(60), None);
    let limiter = RateLimiter::build(&spec, "ns/p", None).unwrap();
    let mut headers = HeaderMap::new();
    let decision = futures_util::FutureExt::now_or_never(limiter.check("a")).unwrap();
    assert_eq!(decision.store, Store::Local);
    assert_eq!(decision.retry_after_secs(), None);
    decision.apply_headers(&mut headers);
    assert_eq!(
        header_bytes(&headers),
        [
            ("ratelimit".into(), "\"default\";r=99;t=1".into()),
            ("ratelimit-policy".into(), "\"default\";q=100;w=60".into()),
        ]
    );
}

#[test]
fn refused_answers_carry_retry_after() {
    let spec = mk_spec(3, Duration::from_secs(3), None);
    let (local, clock) = mk_local(3, Duration::from_secs(3), None);
    for _ in 0..3 {
        local.check("a");
    }
    clock.advance(Duration::from_millis(200));
    let decision = mk_decision(local.check("a"), &spec);
    assert!(!decision.allowed);
    assert_eq!(decision.result_label(), "limited");
    let mut headers = HeaderMap::new();
    decision.apply_headers(&mut headers);
    assert_eq!(
        header_bytes(&headers),
        [
            ("ratelimit".into(), "\"default\";r=0;t=3".into()),
            ("ratelimit-policy".into(), "\"default\";q=3;w=3".into()),
            ("retry-after".into(), "1".into()),
        ]
    );
}

#[test]
fn retry_after_is_whole_seconds_and_never_zero() {
    let spec = mk_spec(1, Duration::from_secs(90), None);
    let refused = |retry_after| Outcome {
        allowed: false,
        remaining: 0,
        reset: retry_after,
        retry_after,
    };
    let secs = |d| mk_decision(refused(d), &spec).retry_after_secs();
    assert_eq!(secs(Duration::ZERO), Some(1));
    assert_eq!(secs(Duration::from_millis(1)), Some(1));
    assert_eq!(secs(Duration::from_secs(2)), Some(2));
    assert_eq!(secs(Duration::from_millis(2001)), Some(3));
}

#[test]
fn window_is_the_time_to_refill_the_burst() {
    let policy = |requests, per, burst| {
        let limiter = RateLimiter::build(&mk_spec(requests, per, burst), "ns/p", None).unwrap();
        limiter.policy_header.to_str().unwrap().to_string()
    };
    assert_eq!(
        policy(100, Duration::from_secs(60), Some(10)),
        "\"default\";q=10;w=6"
    );
    assert_eq!(
        policy(10, Duration::from_secs(1), None),
        "\"default\";q=10;w=1"
    );
    // Less than a second rounds up: w is whole seconds.
    assert_eq!(
        policy(4, Duration::from_secs(1), Some(1)),
        "\"default\";q=1;w=1"
    );
}

#[test]
fn fallback_buckets_hold_the_limit_divided_by_the_replicas() {
    let bucket = Bucket::from_spec(&mk_spec(100, Duration::from_secs(60), None)).unwrap();
    let third = bucket.divided(NonZeroU32::new(3).unwrap());
    assert_eq!(third.burst.get(), 33);
    assert_eq!(third.interval, Duration::from_millis(1800));
    let many = bucket.divided(NonZeroU32::new(1000).unwrap());
    assert_eq!(many.burst.get(), 1);
}

#[test]
fn build_reports_each_wrong_field() {
    let mut spec = mk_spec(0, Duration::ZERO, Some(0));
    spec.key.kind = RateLimitKeyType::Header;
    let errors = RateLimiter::build(&spec, "ns/p", None).unwrap_err();
    let fields: Vec<_> = errors.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["requests", "per", "burst", "key.name"]);

    spec = mk_spec(10, Duration::from_secs(1), None);
    spec.key = RateLimitKey {
        kind: RateLimitKeyType::Header,
        name: Some("bad header".into()),
    };
    assert_eq!(
        RateLimiter::build(&spec, "ns/p", None).unwrap_err(),
        [(
            "key.name".to_string(),
            "is not a valid header name".to_string()
        )]
    );
    spec.key = RateLimitKey {
        kind: RateLimitKeyType::Route,
        name: Some("x".into()),
    };
    assert_eq!(
        RateLimiter::build(&spec, "ns/p", None).unwrap_err()[0].0,
        "key.name"
    );

    let too_fast = mk_spec(2_000_000, Duration::from_secs(1), None);
    assert_eq!(
        RateLimiter::build(&too_fast, "ns/p", None).unwrap_err()[0].0,
        "requests"
    );
}

#[test]
fn shared_without_a_store_counts_locally_with_the_whole_limit() {
    let mut spec = mk_spec(2, Duration::from_secs(60), None);
    spec.shared = true;
    let limiter = RateLimiter::build(&spec, "ns/p", None).unwrap();
    let check = || futures_util::FutureExt::now_or_never(limiter.check("a")).unwrap();
    assert_eq!(check().store, Store::Local);
    assert!(check().allowed);
    assert!(!check().allowed);
}

#[test]
fn long_keys_become_short_fixed_redis_keys() {
    let shared = |name: &str| Shared {
        store: Arc::new(SharedStore {
            conn: None,
            script: redis::Script::new(GCRA_SCRIPT),
            replicas: NonZeroU32::MIN,
            up: AtomicBool::new(false),
            wake_probe: Notify::new(),
            metrics: Arc::new(Metrics::new()),
        }),
        key_prefix: format!("{REDIS_KEY_PREFIX}{name}:"),
    };
    let s = shared("ns/p");
    assert_eq!(
        s.redis_key("10.0.0.1"),
        "portcullis:ratelimit:ns/p:10.0.0.1"
    );
    let long = "x".repeat(10_000);
    let hashed = s.redis_key(&long);
    assert_eq!(hashed.len(), "portcullis:ratelimit:ns/p:#".len() + 32);
    assert_eq!(
        hashed,
        shared("ns/p").redis_key(&long),
        "the same on every replica"
    );
}
