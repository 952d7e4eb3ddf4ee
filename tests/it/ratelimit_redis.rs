//! Shared rate limits against a real redis-server: one limit across replicas, the
//! header fields from Redis's counts, keys that expire, and the fallback to local
//! buckets when Redis stops, stalls or is down from the start.

use crate::redis_server::RedisServer;
use http::HeaderMap;
use portcullis::{
    config::RateLimitPolicy,
    metrics::Metrics,
    policy::ratelimit::{Decision, RateLimiter, SharedStore, Store, REDIS_TIMEOUT},
};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// One gateway's view: its own connection to Redis and its own limiter.
struct Replica {
    store: Arc<SharedStore>,
    limiter: RateLimiter,
    metrics: Arc<Metrics>,
}

async fn mk_replica(url: &str, replicas: u32, spec: &str) -> Replica {
    let metrics = Arc::new(Metrics::new());
    let store = SharedStore::connect(url, replicas, metrics.clone()).await;
    let spec: RateLimitPolicy = serde_norway::from_str(spec).unwrap();
    let limiter = RateLimiter::build(&spec, "team/limits", Some(&store)).unwrap();
    Replica {
        store,
        limiter,
        metrics,
    }
}

fn headers(decision: &Decision) -> Vec<(String, String)> {
    let mut headers = HeaderMap::new();
    decision.apply_headers(&mut headers);
    let mut all: Vec<_> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    all.sort();
    all
}

fn redis_up(metrics: &Metrics) -> bool {
    let text = metrics.render();
    assert!(text.contains("portcullis_rate_limit_redis_up "), "{text}");
    text.contains("portcullis_rate_limit_redis_up 1")
}

async fn wait_until_up(store: &SharedStore) {
    for _ in 0..200 {
        if store.is_up() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Redis not seen again within 10 s");
}

#[tokio::test]
async fn two_replicas_admit_one_limit_between_them() {
    let redis = RedisServer::start().await;
    let spec = "{requests: 100, per: 1m, shared: true}";
    let a = mk_replica(&redis.url(), 2, spec).await;
    let b = mk_replica(&redis.url(), 2, spec).await;

    let started = Instant::now();
    let mut admitted = 0;
    for i in 0..400 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let decision = replica.limiter.check("client").await;
        assert_eq!(decision.store, Store::Redis);
        admitted += u32::from(decision.allowed);
    }
    // The bucket also refills while the test runs: one request per 600 ms.
    let refilled = (started.elapsed().as_millis() / 600) as u32 + 1;
    eprintln!(
        "two replicas, limit 100/min, 400 requests alternating: {admitted} admitted in {:?}",
        started.elapsed()
    );
    assert!((100..=100 + refilled).contains(&admitted), "{admitted}");
}

#[tokio::test]
async fn headers_report_redis_counts() {
    let redis = RedisServer::start().await;
    let a = mk_replica(&redis.url(), 1, "{requests: 100, per: 1m, shared: true}").await;
    assert_eq!(
        headers(&a.limiter.check("fresh").await),
        [
            ("ratelimit".into(), "\"default\";r=99;t=1".into()),
            ("ratelimit-policy".into(), "\"default\";q=100;w=60".into()),
        ]
    );

    let b = mk_replica(&redis.url(), 1, "{requests: 3, per: 3s, shared: true}").await;
    for _ in 0..3 {
        assert!(b.limiter.check("k").await.allowed);
    }
    let refused = b.limiter.check("k").await;
    assert_eq!((refused.allowed, refused.store), (false, Store::Redis));
    assert_eq!(
        headers(&refused),
        [
            ("ratelimit".into(), "\"default\";r=0;t=3".into()),
            ("ratelimit-policy".into(), "\"default\";q=3;w=3".into()),
            ("retry-after".into(), "1".into()),
        ]
    );
}

#[tokio::test]
async fn redis_keys_expire_when_their_bucket_is_full_again() {
    let redis = RedisServer::start().await;
    let a = mk_replica(&redis.url(), 1, "{requests: 100, per: 1m, shared: true}").await;
    a.limiter.check("10.1.2.3").await;
    a.limiter.check("10.1.2.3").await;

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg("portcullis:ratelimit:team/limits:10.1.2.3")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Two requests of 600 ms each: full again in at most 1.2 s.
    assert!((1..=1200).contains(&ttl), "PTTL {ttl}");
}

#[tokio::test]
async fn a_stopped_redis_falls_back_to_a_share_of_the_limit_and_recovers() {
    let mut redis = RedisServer::start().await;
    let a = mk_replica(&redis.url(), 2, "{requests: 10, per: 1m, shared: true}").await;
    assert_eq!(a.limiter.check("c").await.store, Store::Redis);
    assert!(redis_up(&a.metrics));

    redis.stop().await;
    let mut decisions = Vec::new();
    for _ in 0..10 {
        decisions.push(a.limiter.check("c").await);
    }
    assert!(decisions.iter().all(|d| d.store == Store::Fallback));
    // Two replicas: each admits half of the 10 on its own.
    assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 5);
    assert!(!a.store.is_up());
    assert!(!redis_up(&a.metrics));

    redis.restart().await;
    wait_until_up(&a.store).await;
    assert!(redis_up(&a.metrics));
    let back = a.limiter.check("c").await;
    assert_eq!((back.store, back.allowed), (Store::Redis, true));
}

#[tokio::test]
async fn a_stalled_redis_costs_one_bounded_wait() {
    let redis = RedisServer::start().await;
    let a = mk_replica(&redis.url(), 1, "{requests: 1000, per: 1m, shared: true}").await;
    assert_eq!(a.limiter.check("c").await.store, Store::Redis);

    redis.pause();
    let started = Instant::now();
    let first = a.limiter.check("c").await;
    let first_took = started.elapsed();
    assert_eq!(first.store, Store::Fallback);
    // The timeout, plus scheduling slack on a busy machine.
    assert!(first_took < REDIS_TIMEOUT * 6, "{first_took:?}");
    for _ in 0..50 {
        assert_eq!(a.limiter.check("c").await.store, Store::Fallback);
    }
    // The later decisions did not wait on Redis at all.
    assert!(
        started.elapsed() < REDIS_TIMEOUT * 10,
        "{:?}",
        started.elapsed()
    );

    redis.resume();
    wait_until_up(&a.store).await;
    assert_eq!(a.limiter.check("c").await.store, Store::Redis);
}

#[tokio::test]
async fn a_store_starts_in_fallback_when_redis_is_down() {
    let mut redis = RedisServer::start().await;
    redis.stop().await;
    let a = mk_replica(&redis.url(), 4, "{requests: 8, per: 1m, shared: true}").await;
    assert!(!a.store.is_up());
    assert!(!redis_up(&a.metrics));
    let mut decisions = Vec::new();
    for _ in 0..4 {
        decisions.push(a.limiter.check("c").await);
    }
    assert!(decisions.iter().all(|d| d.store == Store::Fallback));
    assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 2);

    redis.restart().await;
    wait_until_up(&a.store).await;
    assert_eq!(a.limiter.check("c").await.store, Store::Redis);
}
