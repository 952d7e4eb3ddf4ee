//! Load balancing, health, retries, timeouts and limits, against backends that
//! misbehave on purpose.

use crate::support::{closed_port, eventually_true, get, send, TestGateway};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::net::TcpListener;

/// What a test backend does with a request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Act {
    Answer(u16),
    /// Never answers.
    Stall,
    /// Closes the connection without an answer.
    Reset,
    /// Sends headers and part of the body, then closes (new connections only).
    Truncate,
    /// Answers after this long.
    Slow(Duration),
}

#[derive(Clone)]
struct Backend {
    addr: SocketAddr,
    /// Requests other than health probes.
    hits: Arc<AtomicUsize>,
    /// Request bodies received, in order.
    bodies: Arc<ArcSwap<Vec<Bytes>>>,
    act: Arc<ArcSwap<Act>>,
    healthy: Arc<AtomicBool>,
    probes: Arc<AtomicUsize>,
}

impl Backend {
    async fn start(name: &'static str, act: Act) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = Backend {
            addr: listener.local_addr().unwrap(),
            hits: Default::default(),
            bodies: Default::default(),
            act: Arc::new(ArcSwap::from_pointee(act)),
            healthy: Arc::new(AtomicBool::new(true)),
            probes: Default::default(),
        };
        let state = b.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let state = state.clone();
                if **state.act.load() == Act::Truncate {
                    // Raw bytes: a promise of 100 bytes, 7 of them, then the end.
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = [0u8; 4096];
                        let _ = stream.read(&mut buf).await;
                        state.hits.fetch_add(1, Ordering::SeqCst);
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nx-backend: dying\r\n\r\npartial")
                            .await;
                    });
                    continue;
                }
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(name, state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        b
    }

    fn set(&self, act: Act) {
        self.act.store(Arc::new(act));
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

async fn answer(
    name: &'static str,
    b: Backend,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    if req.uri().path() == "/healthz" {
        b.probes.fetch_add(1, Ordering::SeqCst);
        let status = if b.healthy.load(Ordering::SeqCst) {
            200
        } else {
            503
        };
        return Ok(reply(status, name));
    }
    b.hits.fetch_add(1, Ordering::SeqCst);
    // Event streams: `/events/N` sends N events 100 ms apart, then ends; `/events/stall`
    // sends one and then nothing.
    if let Some(what) = req.uri().path().strip_prefix("/events/") {
        let (count, stall) = match what.parse::<u64>() {
            Ok(n) => (n, false),
            Err(_) => (1, true),
        };
        let events = futures_util::stream::unfold(0u64, move |i| async move {
            if i == count {
                if stall {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let frame = hyper::body::Frame::data(Bytes::from(format!("data: {i}\n\n")));
            Some((Ok::<_, std::io::Error>(frame), i + 1))
        });
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .body(BodyExt::boxed(http_body_util::StreamBody::new(events)))
            .unwrap());
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?;
    let body = body.to_bytes();
    b.bodies.rcu(|list| {
        let mut list = Vec::clone(list);
        list.push(body.clone());
        list
    });
    let act = **b.act.load();
    match act {
        Act::Answer(status) => Ok(reply(status, name)),
        Act::Stall => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(reply(200, name))
        }
        Act::Reset => Err(std::io::Error::other("reset on purpose")),
        Act::Truncate => unreachable!("answered on the raw socket"),
        Act::Slow(d) => {
            tokio::time::sleep(d).await;
            Ok(reply(200, name))
        }
    }
}

fn reply(status: u16, name: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("x-backend", name)
        .body(
            Full::new(Bytes::from(name.to_owned()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

fn route(backends: &str, extra: &str) -> String {
    format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: up}}\n\
         spec:\n  rules:\n  - backends:\n{backends}{extra}"
    )
}

fn addresses(list: &[&Backend]) -> String {
    let addrs: Vec<String> = list.iter().map(|b| format!("'{}'", b.addr)).collect();
    format!("    - addresses: [{}]\n", addrs.join(", "))
}

async fn tally(gw: &TestGateway, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let a = get(&gw.url("/"), headers).await;
        *seen
            .entry(format!("{} {}", a.status, a.header("x-backend")))
            .or_default() += 1;
    }
    seen
}

async fn post(gw: &TestGateway, body: &'static str) -> crate::support::Answer {
    send(
        http::Request::post(gw.url("/"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap(),
    )
    .await
}

async fn metric(gw: &TestGateway, prefix: &str) -> f64 {
    let text = get(&format!("http://{}/metrics", gw.admin), &[]).await.body;
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn round_robin_spreads_evenly_over_addresses() {
    let a = Backend::start("a", Act::Answer(200)).await;
    let b = Backend::start("b", Act::Answer(200)).await;
    let c = Backend::start("c", Act::Answer(200)).await;
    let gw = TestGateway::start(&route(&addresses(&[&a, &b, &c]), "")).await;
    let seen = tally(&gw, 300, &[]).await;
    assert_eq!(seen["200 a"], 100, "{seen:?}");
    assert_eq!(seen["200 b"], 100, "{seen:?}");
    assert_eq!(seen["200 c"], 100, "{seen:?}");
}

#[tokio::test]
async fn consistent_hash_keeps_a_user_on_one_endpoint() {
    let a = Backend::start("a", Act::Answer(200)).await;
    let b = Backend::start("b", Act::Answer(200)).await;
    let c = Backend::start("c", Act::Answer(200)).await;
    let lb = "    loadBalancer: {type: ConsistentHash, hashOn: {header: x-user}}\n";
    let gw = TestGateway::start(&route(&addresses(&[&a, &b, &c]), lb)).await;
    let mut owners = HashMap::new();
    for user in 0..60 {
        let id = format!("user-{user}");
        let seen = tally(&gw, 5, &[("x-user", &id)]).await;
        assert_eq!(seen.len(), 1, "{id} moved: {seen:?}");
        *owners.entry(seen.into_keys().next().unwrap()).or_insert(0) += 1;
    }
    // 60 users over 3 endpoints: each gets some.
    assert_eq!(owners.len(), 3, "{owners:?}");
    // Requests without the header are spread round robin.
    assert_eq!(tally(&gw, 30, &[]).await.len(), 3);
}

#[tokio::test]
async fn a_session_cookie_pins_the_client_until_its_endpoint_fails() {
    let a = Backend::start("a", Act::Answer(200)).await;
    let b = Backend::start("b", Act::Answer(200)).await;
    let extra = "    loadBalancer: {sessionCookie: {name: pc-session, ttl: 1h}}\n\
                 \x20   retry: {attempts: 1}\n";
    let mut backends = addresses(&[&a, &b]);
    backends
        .push_str("      healthCheck: {passive: {consecutiveFailures: 1, baseEjectionTime: 1m}}\n");
    let gw = TestGateway::start(&route(&backends, extra)).await;
    let first = get(&gw.url("/"), &[]).await;
    let set_cookie = first.header("set-cookie").to_owned();
    assert!(
        set_cookie.starts_with("pc-session=")
            && set_cookie.ends_with("; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let home = first.header("x-backend").to_owned();
    for _ in 0..10 {
        let again = get(&gw.url("/"), &[("cookie", &cookie)]).await;
        assert_eq!(again.header("x-backend"), home);
        // A pinned client is not sent a new cookie.
        assert_eq!(again.header("set-cookie"), "");
    }
    // The endpoint starts failing: the request is retried elsewhere, the failing one is
    // ejected, and the client gets a cookie for its new home.
    let (failing, other) = if home == "a" { (&a, "b") } else { (&b, "a") };
    failing.set(Act::Answer(503));
    let moved = get(&gw.url("/"), &[("cookie", &cookie)]).await;
    assert_eq!(moved.status, 200);
    assert_eq!(moved.header("x-backend"), other);
    assert!(moved.header("set-cookie").starts_with("pc-session="));
    assert_ne!(moved.header("set-cookie"), set_cookie);
}

#[tokio::test]
async fn retries_move_past_503_and_resets_to_a_healthy_endpoint() {
    for bad in [Act::Answer(503), Act::Reset] {
        let sick = Backend::start("sick", bad).await;
        let well = Backend::start("well", Act::Answer(200)).await;
        let gw = TestGateway::start(&route(
            &addresses(&[&sick, &well]),
            "    retry: {attempts: 2, backoff: 1ms, budgetPercent: 100}\n",
        ))
        .await;
        let seen = tally(&gw, 40, &[]).await;
        assert_eq!(seen.get("200 well"), Some(&40), "{bad:?}: {seen:?}");
        assert_eq!(sick.hits(), 20, "{bad:?}: every other first try");
        assert!(metric(&gw, "portcullis_upstream_retries_total{").await >= 20.0);
    }
}

#[tokio::test]
async fn without_retries_a_failing_endpoint_fails_its_share() {
    let sick = Backend::start("sick", Act::Answer(503)).await;
    let well = Backend::start("well", Act::Answer(200)).await;
    let gw = TestGateway::start(&route(&addresses(&[&sick, &well]), "")).await;
    let seen = tally(&gw, 40, &[]).await;
    assert_eq!(seen.get("503 sick"), Some(&20), "{seen:?}");
}

#[tokio::test]
async fn a_post_that_timed_out_is_never_sent_twice() {
    let stall = Backend::start("stall", Act::Stall).await;
    let other = Backend::start("other", Act::Stall).await;
    let extra = "    timeouts: {request: 2s, perTry: 200ms}\n\
                 \x20   retry: {attempts: 3, on: [ConnectFailure, Reset, PerTryTimeout], backoff: 1ms}\n";
    let gw = TestGateway::start(&route(&addresses(&[&stall, &other]), extra)).await;
    let started = Instant::now();
    let answer = post(&gw, "order #1").await;
    assert_eq!(answer.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent: Vec<Bytes> = [&stall, &other]
        .iter()
        .flat_map(|b| Vec::clone(&b.bodies.load()))
        .collect();
    assert_eq!(sent, vec![Bytes::from_static(b"order #1")]);
    // A GET is idempotent: it is tried on both, then gives up with 504.
    let answer = get(&gw.url("/"), &[]).await;
    assert_eq!(answer.status, 504);
    assert_eq!(stall.hits() + other.hits(), 1 + 4);
    assert_eq!(answer.json()["error"], "timeout");
}

#[tokio::test]
async fn a_refused_post_is_retried_because_it_never_left() {
    let closed = closed_port().await;
    let well = Backend::start("well", Act::Answer(200)).await;
    let backends = format!("    - addresses: ['{closed}', '{}']\n", well.addr);
    let gw = TestGateway::start(&route(
        &backends,
        "    retry: {attempts: 1, backoff: 1ms}\n",
    ))
    .await;
    for _ in 0..6 {
        let a = post(&gw, "payment").await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    }
    // Each POST reached the live endpoint exactly once.
    assert_eq!(well.bodies.load().len(), 6);
    // A reset POST is not retried: the backend may have acted on it.
    well.set(Act::Reset);
    let sick_only = Backend::start("sick", Act::Reset).await;
    let gw = TestGateway::start(&route(
        &addresses(&[&sick_only]),
        "    retry: {attempts: 3, backoff: 1ms}\n",
    ))
    .await;
    assert_eq!(post(&gw, "payment").await.status, 502);
    assert_eq!(sick_only.hits(), 1);
}

#[tokio::test]
async fn a_body_that_dies_midway_is_cut_not_retried() {
    let dying = Backend::start("dying", Act::Truncate).await;
    let gw = TestGateway::start(&route(
        &addresses(&[&dying]),
        "    retry: {attempts: 3, backoff: 1ms}\n",
    ))
    .await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let resp = client
        .request(
            http::Request::get(gw.url("/"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The client sees the body end early, as the backend's did.
    assert!(resp.into_body().collect().await.is_err());
    assert_eq!(dying.hits(), 1);
}

#[tokio::test]
async fn the_retry_budget_caps_added_load() {
    let sick = Backend::start("sick", Act::Answer(503)).await;
    let gw = TestGateway::start(&route(
        &addresses(&[&sick]),
        "    retry: {attempts: 3, backoff: 1ms, maxBackoff: 1ms, budgetPercent: 20}\n",
    ))
    .await;
    let started = Instant::now();
    let seen = tally(&gw, 200, &[]).await;
    let seconds = started.elapsed().as_secs() + 1;
    assert_eq!(seen["503 sick"], 200);
    // Without a budget: 800 tries. With it: 200 plus a fifth, plus the ten a second
    // every rule keeps.
    let hits = sick.hits();
    let most = 200 + 40 + 10 + 10 * seconds as usize;
    assert!(
        (240..=most).contains(&hits),
        "{hits} tries for 200 requests"
    );
    assert!(
        metric(
            &gw,
            "portcullis_upstream_retries_total{reason=\"budget_exhausted\""
        )
        .await
            > 0.0
    );
}

#[tokio::test]
async fn passive_health_ejects_a_failing_endpoint_then_lets_it_back() {
    let sick = Backend::start("sick", Act::Answer(500)).await;
    let well = Backend::start("well", Act::Answer(200)).await;
    let mut backends = addresses(&[&sick, &well]);
    backends.push_str(
        "      healthCheck: {passive: {consecutiveFailures: 3, baseEjectionTime: 1s}, panicThresholdPercent: 0}\n",
    );
    let gw = TestGateway::start(&route(&backends, "")).await;
    let seen = tally(&gw, 40, &[]).await;
    // Three failures eject it; the rest go to the healthy one.
    assert_eq!(seen.get("500 sick"), Some(&3), "{seen:?}");
    assert_eq!(
        metric(&gw, "portcullis_upstream_ejections_total{").await,
        1.0
    );
    sick.set(Act::Answer(200));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let seen = tally(&gw, 10, &[]).await;
    assert_eq!(seen.get("200 sick"), Some(&5), "{seen:?}");
}

#[tokio::test]
async fn active_checks_take_an_endpoint_out_and_bring_it_back() {
    let a = Backend::start("a", Act::Answer(200)).await;
    let b = Backend::start("b", Act::Answer(200)).await;
    let mut backends = addresses(&[&a, &b]);
    backends.push_str(
        "      healthCheck:\n        active: {path: /healthz, interval: 100ms, unhealthyThreshold: 2, healthyThreshold: 2}\n        panicThresholdPercent: 0\n",
    );
    let gw = TestGateway::start(&route(&backends, "")).await;
    eventually_true(|| a.probes.load(Ordering::SeqCst) >= 2).await;
    b.healthy.store(false, Ordering::SeqCst);
    let probes = b.probes.load(Ordering::SeqCst);
    eventually_true(|| b.probes.load(Ordering::SeqCst) >= probes + 3).await;
    let seen = tally(&gw, 20, &[]).await;
    assert_eq!(seen.get("200 a"), Some(&20), "{seen:?}");
    b.healthy.store(true, Ordering::SeqCst);
    let probes = b.probes.load(Ordering::SeqCst);
    eventually_true(|| b.probes.load(Ordering::SeqCst) >= probes + 3).await;
    let seen = tally(&gw, 20, &[]).await;
    assert_eq!(seen.get("200 b"), Some(&10), "{seen:?}");
}

#[tokio::test]
async fn the_panic_threshold_keeps_traffic_flowing_when_checks_fail_everywhere() {
    let a = Backend::start("a", Act::Answer(200)).await;
    let b = Backend::start("b", Act::Answer(200)).await;
    a.healthy.store(false, Ordering::SeqCst);
    b.healthy.store(false, Ordering::SeqCst);
    let mut backends = addresses(&[&a, &b]);
    backends.push_str(
        "      healthCheck: {active: {path: /healthz, interval: 100ms, unhealthyThreshold: 1}}\n",
    );
    let gw = TestGateway::start(&route(&backends, "")).await;
    eventually_true(|| {
        a.probes.load(Ordering::SeqCst) >= 2 && b.probes.load(Ordering::SeqCst) >= 2
    })
    .await;
    let seen = tally(&gw, 20, &[]).await;
    assert_eq!(seen.get("200 a"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("200 b"), Some(&10), "{seen:?}");
}

#[tokio::test]
async fn over_the_connection_limit_requests_get_503_at_once() {
    let slow = Backend::start("slow", Act::Slow(Duration::from_millis(600))).await;
    let backends = format!(
        "    - address: '{}'\n      maxConnections: 2\n      maxPendingRequests: 1\n",
        slow.addr
    );
    let gw = Arc::new(TestGateway::start(&route(&backends, "")).await);
    let mut tasks = Vec::new();
    for i in 0..5u64 {
        let url = gw.url("/");
        tasks.push(tokio::spawn(async move {
            // Started in order, so the first three hold the slots and the queue.
            tokio::time::sleep(Duration::from_millis(i * 40)).await;
            let started = Instant::now();
            let a = get(&url, &[]).await;
            (a.status, a.json_or_code(), started.elapsed())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let ok: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!((ok.len(), refused.len()), (3, 2), "{results:?}");
    for r in refused {
        assert_eq!(r.1, "backend_overloaded");
        assert!(r.2 < Duration::from_millis(200), "refused at once: {r:?}");
    }
    // The queued request waited for a slot, so it took about two backend times.
    assert!(
        ok.iter().any(|r| r.2 >= Duration::from_millis(1000)),
        "{results:?}"
    );
    assert_eq!(
        metric(&gw, "portcullis_upstream_overflow_total{").await,
        2.0
    );
}

#[tokio::test]
async fn least_request_sends_less_to_a_slow_endpoint() {
    let slow = Backend::start("slow", Act::Slow(Duration::from_millis(200))).await;
    let fast = Backend::start("fast", Act::Answer(200)).await;
    let gw = Arc::new(
        TestGateway::start(&route(
            &addresses(&[&slow, &fast]),
            "    loadBalancer: {type: LeastRequest}\n",
        ))
        .await,
    );
    // Eight clients in parallel for a second: the slow endpoint holds requests longer, so
    // it is the busier one of most draws.
    let until = Instant::now() + Duration::from_secs(1);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = gw.url("/");
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                get(&url, &[]).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (s, f) = (slow.hits(), fast.hits());
    assert!(f > 10 * s, "slow {s}, fast {f}");
}

#[tokio::test]
async fn a_live_stream_outlasts_the_request_timeout_and_a_silent_one_is_cut() {
    let sse = Backend::start("sse", Act::Answer(200)).await;
    let gw = TestGateway::start(&route(
        &addresses(&[&sse]),
        "    timeouts: {request: 300ms, streamIdle: 500ms}\n",
    ))
    .await;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let get_stream = |path: &str| {
        client.request(
            http::Request::get(gw.url(path))
                .body(Full::default())
                .unwrap(),
        )
    };
    // Twelve events over 1.1 s: three times the request timeout, never idle for long.
    let started = Instant::now();
    let body = get_stream("/events/12")
        .await
        .unwrap()
        .into_body()
        .collect()
        .await;
    let text = String::from_utf8(body.unwrap().to_bytes().to_vec()).unwrap();
    assert_eq!(text.matches("data: ").count(), 12, "{text}");
    assert!(started.elapsed() >= Duration::from_millis(1100));
    // One event, then silence: cut after the idle timeout, not held forever.
    let started = Instant::now();
    let resp = get_stream("/events/stall").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.into_body().collect().await.is_err());
    let cut = started.elapsed();
    assert!(
        cut >= Duration::from_millis(500) && cut < Duration::from_millis(1500),
        "{cut:?}"
    );
}

#[tokio::test]
async fn a_deadline_the_client_chose_does_not_eject_the_endpoint() {
    let slow = Backend::start("slow", Act::Slow(Duration::from_millis(300))).await;
    let mut backends = addresses(&[&slow]);
    backends
        .push_str("      healthCheck: {passive: {consecutiveFailures: 1, baseEjectionTime: 1m}}\n");
    let gw = TestGateway::start(&route(&backends, "")).await;
    let grpc = [("content-type", "application/grpc"), ("grpc-timeout", "1m")];
    for _ in 0..3 {
        // DEADLINE_EXCEEDED
        assert_eq!(get(&gw.url("/"), &grpc).await.header("grpc-status"), "4");
    }
    // Outside gRPC the field means nothing.
    let a = get(&gw.url("/"), &[("grpc-timeout", "1m")]).await;
    assert_eq!((a.status, a.header("x-backend")), (200, "slow"));
    assert_eq!(
        metric(&gw, "portcullis_upstream_ejections_total{").await,
        0.0
    );
}

#[tokio::test]
async fn a_retry_that_cannot_start_in_time_leaves_the_backends_answer() {
    let sick = Backend::start("sick", Act::Answer(503)).await;
    let gw = TestGateway::start(&route(
        &addresses(&[&sick]),
        "    timeouts: {request: 500ms}\n\
         \x20   retry: {attempts: 2, backoff: 2s, maxBackoff: 2s, budgetPercent: 100}\n",
    ))
    .await;
    // The jittered wait mostly overshoots the deadline; when it does, the client gets
    // the backend's own 503, not a 504. A wait that fits is taken and ends the same way.
    for _ in 0..5 {
        let started = Instant::now();
        let a = get(&gw.url("/"), &[]).await;
        assert_eq!((a.status, a.header("x-backend")), (503, "sick"));
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_client_that_stalls_its_body_does_not_eject_the_endpoint() {
    let well = Backend::start("well", Act::Answer(200)).await;
    let mut backends = addresses(&[&well]);
    backends
        .push_str("      healthCheck: {passive: {consecutiveFailures: 1, baseEjectionTime: 1m}}\n");
    let gw = TestGateway::start(&route(&backends, "    timeouts: {request: 300ms}\n")).await;
    // Headers for a 200 KiB body, then only part of it.
    let mut bytes =
        b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 204800\r\n\r\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 100_000));
    for _ in 0..2 {
        let answer = crate::support::raw(gw.addr, &bytes, Duration::from_millis(1500)).await;
        assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    }
    assert_eq!(
        metric(&gw, "portcullis_upstream_ejections_total{").await,
        0.0
    );
}

#[tokio::test]
async fn only_routes_that_serve_are_probed_and_a_dropped_check_lets_go() {
    let a = Backend::start("a", Act::Answer(200)).await;
    let b = Backend::start("b", Act::Answer(200)).await;
    a.healthy.store(false, Ordering::SeqCst);
    let check = "      healthCheck:\n        passive: {consecutiveFailures: 5}\n        active: {path: /healthz, interval: 100ms, unhealthyThreshold: 1}\n        panicThresholdPercent: 0\n";
    // A Route that is rejected (its host is not a host name) probes nothing.
    let rejected = format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: bad}}\n\
         spec:\n  hosts: ['bad host']\n  rules:\n  - backends:\n{}{check}",
        addresses(&[&a])
    );
    let gw = TestGateway::start(&(route(&addresses(&[&b]), "") + "\n" + &rejected)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(a.probes.load(Ordering::SeqCst), 0);

    // Served, the check takes `a` out...
    let with_check = route(&(addresses(&[&a, &b]) + check), "");
    std::fs::write(gw.config_file(), &with_check).unwrap();
    eventually_true(|| a.probes.load(Ordering::SeqCst) >= 2).await;
    let seen = tally(&gw, 10, &[]).await;
    assert_eq!(seen.get("200 b"), Some(&10), "{seen:?}");

    // ...and once the check is gone, nothing can say `a` is down any more.
    let passive_only = check.replace(
        "        active: {path: /healthz, interval: 100ms, unhealthyThreshold: 1}\n",
        "",
    );
    std::fs::write(
        gw.config_file(),
        route(&(addresses(&[&a, &b]) + &passive_only), ""),
    )
    .unwrap();
    let started = Instant::now();
    loop {
        let seen = tally(&gw, 10, &[]).await;
        if seen.get("200 a") == Some(&5) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
