//! A Policy's `rateLimit` over real sockets: 429 after the burst with the exact header
//! fields; counts kept across reloads; keys by header (the client address when it is
//! missing), client address through trusted proxies, Route, API-key consumer and JWT
//! claim; and two gateway processes sharing one limit through a real redis-server, then
//! falling back to their share of it when Redis stops.

use crate::{redis_server::RedisServer, support::*};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde_json::json;
use std::{net::SocketAddr, process::Stdio, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

fn limited_route(backend: SocketAddr, rate_limit: &str) -> String {
    format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: api}}\n\
         spec:\n  hosts: [api.test]\n  rules:\n  - backends: [{{address: '{backend}'}}]\n\
         ---\napiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {{name: limits}}\n\
         spec:\n  targetRefs: [{{kind: Route, name: api}}]\n  rateLimit: {rate_limit}\n"
    )
}

/// The header lines of one response read off the wire, lower-cased names as sent.
async fn raw_head(addr: SocketAddr, extra: &str) -> String {
    let request = format!("GET / HTTP/1.1\r\nHost: api.test\r\n{extra}Connection: close\r\n\r\n");
    let text = raw(addr, request.as_bytes(), Duration::from_secs(5)).await;
    text.split("\r\n\r\n").next().unwrap().to_string()
}

fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn over_the_burst_answers_429_with_retry_after() {
    let b = echo("b").await;
    let gw = TestGateway::start(&limited_route(b, "{requests: 3, per: 1m}")).await;

    // One token comes back every 20 s; `t` is the time until all three are back.
    for (remaining, reset) in [(2, 20), (1, 40), (0, 60)] {
        let head = raw_head(gw.addr, "").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\nratelimit-policy: \"default\";q=3;w=60\r\n"),
            "{head}"
        );
        let state = format!("\r\nratelimit: \"default\";r={remaining};t={reset}\r\n");
        assert!(head.contains(&state), "{head}");
        assert!(!head.contains("retry-after"), "{head}");
    }
    let head = raw_head(gw.addr, "").await;
    assert!(
        head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nretry-after: 20\r\n"), "{head}");
    assert!(
        head.contains("\r\nratelimit: \"default\";r=0;t=60\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nratelimit-policy: \"default\";q=3;w=60\r\n"),
        "{head}"
    );

    let refused = get(&gw.url("/"), &[("host", "api.test")]).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"], "rate_limited");

    let metrics = get(&format!("http://{}/metrics", gw.admin), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    let decisions = "portcullis_rate_limit_decisions_total";
    assert_eq!(
        metric(
            &text,
            &format!("{decisions}{{result=\"allowed\",store=\"local\"}}")
        ),
        3
    );
    assert_eq!(
        metric(
            &text,
            &format!("{decisions}{{result=\"limited\",store=\"local\"}}")
        ),
        2
    );
}

#[tokio::test]
async fn a_reload_keeps_the_counts_unless_the_section_changes() {
    let b = echo("b").await;
    let yaml = limited_route(b, "{requests: 1, per: 1m}");
    let gw = TestGateway::start(&yaml).await;
    let status = async || get(&gw.url("/"), &[("host", "api.test")]).await.status;
    let routes = || gw.gw.as_ref().unwrap().snapshot.load().routes.len();
    assert_eq!(status().await, 200);
    assert_eq!(status().await, 429);

    // Another Route: the Policy is rebuilt, its limiter and buckets kept.
    std::fs::write(
        gw.config_file(),
        format!("{yaml}---\n{}", route_to("other", b)),
    )
    .unwrap();
    eventually_true(|| routes() == 2).await;
    assert_eq!(status().await, 429);

    // A new limit starts new buckets.
    let yaml = limited_route(b, "{requests: 2, per: 1m}");
    std::fs::write(gw.config_file(), yaml).unwrap();
    eventually_true(|| routes() == 1).await;
    assert_eq!(status().await, 200);
}

#[tokio::test]
async fn header_keys_count_apart_and_fall_back_to_the_client_address() {
    let b = echo("b").await;
    let gw = TestGateway::start(&limited_route(
        b,
        "{requests: 1, per: 1m, key: {type: Header, name: x-user}}",
    ))
    .await;
    let status = async |user: Option<&str>| {
        let mut headers = vec![("host", "api.test")];
        headers.extend(user.map(|u| ("x-user", u)));
        get(&gw.url("/"), &headers).await.status
    };

    assert_eq!(status(Some("ann")).await, 200);
    assert_eq!(status(Some("ann")).await, 429);
    assert_eq!(status(Some("bob")).await, 200);
    // Without the header the client address is the key, and it has its own bucket.
    assert_eq!(status(None).await, 200);
    assert_eq!(status(None).await, 429);
    assert_eq!(
        status(Some("")).await,
        429,
        "an empty value counts as missing"
    );
    // A header value naming the client's address is still a header bucket.
    assert_eq!(status(Some("127.0.0.1")).await, 200);
}

#[tokio::test]
async fn client_addresses_come_through_trusted_proxies_and_route_keys_pool_them() {
    let b = echo("b").await;
    let status = async |gw: &TestGateway, client: &str| {
        let headers = [("host", "api.test"), ("x-forwarded-for", client)];
        get(&gw.url("/"), &headers).await.status
    };
    let trust_loopback = |o: &mut portcullis::gateway::Options| {
        o.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    };

    let per_client = limited_route(b, "{requests: 1, per: 1m}");
    let gw = TestGateway::with_options(&per_client, trust_loopback).await;
    assert_eq!(status(&gw, "203.0.113.1").await, 200);
    assert_eq!(status(&gw, "203.0.113.1").await, 429);
    assert_eq!(status(&gw, "203.0.113.2").await, 200);

    let per_route = limited_route(b, "{requests: 1, per: 1m, key: {type: Route}}");
    let gw = TestGateway::with_options(&per_route, trust_loopback).await;
    assert_eq!(status(&gw, "203.0.113.1").await, 200);
    assert_eq!(status(&gw, "203.0.113.2").await, 429);
}

#[tokio::test]
async fn consumer_keys_count_each_consumer_and_refused_requests_use_no_quota() {
    let b = echo("b").await;
    let yaml = limited_route(b, "{requests: 1, per: 1m, key: {type: Consumer}}")
        + "  apiKeys: {keysRef: {name: api-keys}}\n";
    let gw = TestGateway::with_secrets(
        &yaml,
        portcullis::proxy::Limits::default(),
        |dir| {
            std::fs::create_dir(dir.join("api-keys")).unwrap();
            std::fs::write(
                dir.join("api-keys/keys.yaml"),
                "web: web-key-0123456789abcdef\nmobile: mobile-key-0123456789abcdef\n",
            )
            .unwrap();
        },
        None,
    )
    .await;
    let status = async |key: Option<&str>| {
        let mut headers = vec![("host", "api.test")];
        headers.extend(key.map(|k| ("x-api-key", k)));
        get(&gw.url("/"), &headers).await.status
    };

    // The API key runs first: a request it refuses is not counted.
    assert_eq!(status(None).await, 401);
    assert_eq!(status(Some("web-key-0123456789abcdef")).await, 200);
    assert_eq!(status(Some("web-key-0123456789abcdef")).await, 429);
    assert_eq!(status(Some("mobile-key-0123456789abcdef")).await, 200);
}

/// An HS256 token over `claims`, valid for ten minutes.
fn mk_token(secret: &[u8], mut claims: serde_json::Value) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    claims["exp"] = json!(exp);
    let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let message = format!(
        "{}.{}",
        part(json!({"alg": "HS256", "kid": "k1"})),
        part(claims)
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let signature = URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, message.as_bytes()));
    format!("{message}.{signature}")
}

#[tokio::test]
async fn claim_keys_count_each_subject() {
    let b = echo("b").await;
    let secret = b"a secret of thirty-two bytes ...";
    let yaml = limited_route(b, "{requests: 1, per: 1m, key: {type: Claim, name: sub}}")
        + "  jwt: {keysRef: {name: idp}, algorithms: [HS256]}\n";
    let jwk =
        json!({"kty": "oct", "kid": "k1", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(secret)});
    let jwks = json!({ "keys": [jwk] }).to_string();
    let gw = TestGateway::with_secrets(
        &yaml,
        portcullis::proxy::Limits::default(),
        |dir| {
            std::fs::create_dir(dir.join("idp")).unwrap();
            std::fs::write(dir.join("idp/jwks.json"), &jwks).unwrap();
        },
        None,
    )
    .await;
    let token = |sub: Option<&str>| {
        let claims = match sub {
            Some(sub) => json!({ "sub": sub }),
            None => json!({}),
        };
        format!("Bearer {}", mk_token(secret, claims))
    };
    let status = async |bearer: String| {
        let headers = [("host", "api.test"), ("authorization", bearer.as_str())];
        get(&gw.url("/"), &headers).await.status
    };

    assert_eq!(status(token(Some("alice"))).await, 200);
    assert_eq!(status(token(Some("alice"))).await, 429);
    assert_eq!(status(token(Some("bob"))).await, 200);
    // A token without the claim counts by the client address.
    assert_eq!(status(token(None)).await, 200);
    assert_eq!(status(token(None)).await, 429);
}

/// One `portcullis serve` process, its addresses read from its "serving" log line.
struct Replica {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    logs: mpsc::UnboundedReceiver<serde_json::Value>,
}

impl Replica {
    async fn start(config: &std::path::Path, redis_url: &str) -> Replica {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--no-tls", "--log-format", "json", "--access-log", "false"])
            .args(["--redis-url", redis_url, "--replicas", "2", "--config"])
            .arg(config)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (tx, mut logs) = mpsc::unbounded_channel();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                let _ = tx.send(event);
            }
        });
        let serving = loop {
            let event: serde_json::Value =
                tokio::time::timeout(Duration::from_secs(10), logs.recv())
                    .await
                    .expect("a log line within 10 s")
                    .expect("the gateway is running");
            if event["message"] == "serving" {
                break event;
            }
        };
        let field = |name: &str| serving[name].as_str().unwrap().parse().unwrap();
        Replica {
            addr: field("listen_addr"),
            admin: field("admin_addr"),
            child,
            logs,
        }
    }

    async fn status(&self) -> u16 {
        get(&format!("http://{}/", self.addr), &[("host", "api.test")])
            .await
            .status
    }

    async fn metrics(&self) -> String {
        let answer = get(&format!("http://{}/metrics", self.admin), &[]).await;
        String::from_utf8_lossy(&answer.body).into_owned()
    }

    /// The messages of every warning logged so far.
    fn warnings(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(event) = self.logs.try_recv() {
            if event["level"] == "WARN" {
                out.push(event["message"].as_str().unwrap_or_default().to_string());
            }
        }
        out
    }
}

#[tokio::test]
async fn two_gateways_share_one_limit_through_redis_and_fall_back_without_it() {
    let mut redis = RedisServer::start().await;
    let b = echo("b").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.yaml");
    std::fs::write(
        &config,
        limited_route(b, "{requests: 100, per: 1m, shared: true}"),
    )
    .unwrap();
    let mut replicas = [
        Replica::start(&config, &redis.url()).await,
        Replica::start(&config, &redis.url()).await,
    ];

    let started = std::time::Instant::now();
    let mut admitted = [0u32; 2];
    for i in 0..400 {
        let status = replicas[i % 2].status().await;
        assert!(status == 200 || status == 429, "{status}");
        admitted[i % 2] += u32::from(status == 200);
    }
    let elapsed = started.elapsed();
    let total = admitted[0] + admitted[1];
    eprintln!(
        "two gateway processes, limit 100/min shared through Redis, 400 requests \
         alternating: {total} admitted ({} + {}) in {elapsed:?}",
        admitted[0], admitted[1]
    );
    // One request comes back every 600 ms while the test runs.
    let refilled = (elapsed.as_millis() / 600) as u32 + 1;
    assert!((100..=100 + refilled).contains(&total), "{total}");
    for r in &replicas {
        let text = r.metrics().await;
        assert_eq!(metric(&text, "portcullis_rate_limit_redis_up"), 1);
        assert!(text.contains("store=\"redis\""), "{text}");
        assert!(!text.contains("store=\"fallback\""), "{text}");
    }

    // Without Redis each gateway admits its half of the limit, and says so once.
    redis.stop().await;
    let started = std::time::Instant::now();
    for r in &replicas {
        let mut fallback_admitted = 0;
        for _ in 0..80 {
            fallback_admitted += u32::from(r.status().await == 200);
        }
        // Its bucket holds 50 and gains one every 1.2 s.
        let refilled = (started.elapsed().as_millis() / 1200) as u32 + 1;
        assert!(
            (50..=50 + refilled).contains(&fallback_admitted),
            "{fallback_admitted}"
        );
    }
    for r in &mut replicas {
        let text = r.metrics().await;
        assert_eq!(metric(&text, "portcullis_rate_limit_redis_up"), 0);
        let fallback =
            "portcullis_rate_limit_decisions_total{result=\"allowed\",store=\"fallback\"}";
        assert!(metric(&text, fallback) >= 50, "{text}");
        let outage = r
            .warnings()
            .into_iter()
            .filter(|m| m.starts_with("Redis unreachable"))
            .count();
        assert_eq!(outage, 1, "one warning per outage");
    }

    redis.restart().await;
    for r in &replicas {
        let mut up = false;
        for _ in 0..100 {
            if metric(&r.metrics().await, "portcullis_rate_limit_redis_up") == 1 {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "Redis seen again within 10 s");
        // A restarted Redis starts with full buckets.
        assert_eq!(r.status().await, 200);
    }
    for r in &mut replicas {
        let _ = r.child.kill().await;
    }
}
