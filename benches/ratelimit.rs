//! What a local rate limit adds to a request: one check (hash the key, update its
//! bucket) and the header fields written on the answer. Prints the time of one check for
//! a hot key, for keys spread over 100,000 clients, and for a refused request.

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use http::HeaderMap;
use portcullis::{config::RateLimitPolicy, policy::ratelimit::RateLimiter};
use std::hint::black_box;

const CLIENTS: usize = 100_000;

fn mk_limiter(yaml: &str) -> RateLimiter {
    let spec: RateLimitPolicy = serde_norway::from_str(yaml).expect("valid bench spec");
    RateLimiter::build(&spec, "bench/limits", None).expect("the spec builds")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_limit_local");
    // A local check never waits, so its future is ready on the first poll.
    let check = |limiter: &RateLimiter, key: &str| {
        limiter
            .check(key)
            .now_or_never()
            .expect("local checks are ready at once")
    };

    // One microsecond per token: the bucket never runs dry, every check is admitted.
    let open = mk_limiter("{requests: 1000000, per: 1s}");
    group.bench_function("one client, admitted", |b| {
        b.iter(|| black_box(check(&open, black_box("client:10.0.0.1")).allowed))
    });

    let keys: Vec<String> = (0..CLIENTS)
        .map(|i| format!("client:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    for key in &keys {
        check(&open, key);
    }
    let mut i = 0;
    group.bench_function("100k clients, admitted", |b| {
        b.iter(|| {
            i = (i + 7919) % CLIENTS;
            black_box(check(&open, black_box(&keys[i])).allowed)
        })
    });

    let closed = mk_limiter("{requests: 1, per: 1h}");
    check(&closed, "client:10.0.0.1");
    group.bench_function("one client, refused", |b| {
        b.iter(|| black_box(check(&closed, black_box("client:10.0.0.1")).allowed))
    });

    let decision = check(&open, "client:10.0.0.1");
    group.bench_function("header fields", |b| {
        b.iter(|| {
            let mut headers = HeaderMap::new();
            decision.apply_headers(&mut headers);
            black_box(headers.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
