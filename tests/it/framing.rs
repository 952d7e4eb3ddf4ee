//! Request framing and limits, tested with the exact bytes a client sends.

use crate::support::*;
use portcullis::proxy::Limits;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_millis(1500);

async fn gateway(limits: Limits) -> TestGateway {
    let a = echo("a").await;
    let yaml = format!(
        "{}---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: small}}\nspec:
  rules:
  - matches: [{{path: {{value: /small}}}}]
    maxRequestBodyBytes: 10
    backends: [{{address: '{a}'}}]
---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: host}}\nspec:
  hosts: [api.example.com]
  rules:
  - matches: [{{path: {{value: /}}}}]
    backends: [{{address: '{a}'}}]
    filters: {{responseHeaders: {{set: [{{name: x-host-route, value: 'yes'}}]}}}}
",
        route_to("all", a)
    );
    TestGateway::with_limits(&yaml, limits).await
}

/// Sends `bytes` and expects exactly one response, with `status`, then a closed
/// connection: nothing after the bad request may be read as a request.
async fn assert_refused(gw: &TestGateway, bytes: &str, status: u16) {
    let out = raw(gw.addr, bytes.as_bytes(), WAIT).await;
    assert_eq!(statuses(&out), [status], "for {bytes:?} got: {out}");
}

#[tokio::test]
async fn smuggling_shapes_are_refused_and_close_the_connection() {
    // Each case ends with a request that must never be answered: one 400, then the
    // connection closes.
    let gw = gateway(Limits::default()).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases = [
        format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhello{smuggled}"),
        format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello{smuggled}"),
        format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello{smuggled}"),
        format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello{smuggled}"),
        format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n{smuggled}"),
        // Empty lines first, and bare LF line ends: hyper accepts both, so must the check.
        format!("\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST / HTTP/1.1\nHost: x\nContent-Length: 3\nContent-Length: 3\n\nabc{smuggled}"),
        // A body hyper cannot frame is the client's fault: 400, not 502.
        format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n{smuggled}"),
    ];
    let mut failures = Vec::new();
    for bytes in cases {
        let out = raw(gw.addr, bytes.as_bytes(), WAIT).await;
        if statuses(&out) != [400] {
            failures.push(format!("{bytes:?} -> {:?}", statuses(&out)));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn the_check_keeps_following_after_long_chunk_sizes() {
    let gw = gateway(Limits::default()).await;
    let out = raw(
        gw.addr,
        b"POST /1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000003\r\nabc\r\n0\r\n\r\n\
          POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        WAIT,
    )
    .await;
    assert_eq!(statuses(&out), [200, 400], "{out}");
}

#[tokio::test]
async fn hosts_and_paths_that_are_refused() {
    let gw = gateway(Limits::default()).await;
    for bytes in [
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n",
        "GET /a%2fb HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /a%2Fb HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /a%5cb HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /a\\b HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /public/..;/admin HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /public/x/..%3b/admin HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x@api.example.com\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: api.example.com/x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: api.example.com?x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: api.example.com,other\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: api.example.com..\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: api.example.com:99999999\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: api.example.com:\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: [zz]junk\r\n\r\n",
    ] {
        let out = raw(gw.addr, bytes.as_bytes(), WAIT).await;
        assert_eq!(statuses(&out), [400], "for {bytes:?} got: {out}");
    }
}

#[tokio::test]
async fn absolute_form_targets_route_by_their_authority() {
    let gw = gateway(Limits::default()).await;
    let out = raw(
        gw.addr,
        b"GET http://api.example.com/x HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("x-host-route: yes"), "{out}");
}

#[tokio::test]
async fn chunked_bodies_with_extensions_and_trailers_keep_the_connection_in_step() {
    let gw = gateway(Limits::default()).await;
    let out = raw(
        gw.addr,
        b"POST /1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=v\r\nGET /\r\n3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n\
          GET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(statuses(&out), [200, 200], "{out}");
    assert!(out.contains("\"body\":\"GET /abc\""), "{out}");
    assert!(out.contains("\"path\":\"/2\""), "{out}");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let gw = gateway(Limits::default()).await;
    let out = raw(
        gw.addr,
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(statuses(&out), [200, 200, 200], "{out}");
    let paths: Vec<_> = ["/1", "/2", "/3"]
        .iter()
        .map(|p| out.find(&format!("\"path\":\"{p}\"")).unwrap())
        .collect();
    assert!(paths.windows(2).all(|w| w[0] < w[1]), "{out}");
}

#[tokio::test]
async fn size_limits_answer_431_414_and_413() {
    let limits = Limits {
        max_uri_bytes: 1024,
        max_headers: 20,
        max_header_bytes: 8192,
        ..Limits::default()
    };
    let gw = gateway(limits).await;

    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(2000));
    assert_refused_or_closed(&gw, &long_uri, 414).await;

    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let out = raw(
        gw.addr,
        format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
        WAIT,
    )
    .await;
    assert_eq!(statuses(&out), [431], "{out}");

    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(10_000)
    );
    let out = raw(gw.addr, big.as_bytes(), WAIT).await;
    assert_eq!(statuses(&out), [431], "{out}");

    // A declared length over the route's limit is refused before the body is read.
    assert_refused(
        &gw,
        "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n",
        413,
    )
    .await;
    let out = raw(gw.addr, b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789", WAIT).await;
    assert_eq!(statuses(&out), [200], "{out}");
    // A chunked body is cut off as soon as it passes the limit.
    assert_refused(
        &gw,
        "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n",
        413,
    )
    .await;
}

/// 414 for a target that fits the header buffer; the connection must close either way.
async fn assert_refused_or_closed(gw: &TestGateway, bytes: &str, status: u16) {
    let out = raw(gw.addr, bytes.as_bytes(), WAIT).await;
    assert_eq!(statuses(&out), [status], "{out}");
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(400),
        ..Limits::default()
    };
    let gw = gateway(limits).await;

    // A connection that sends nothing at all.
    let start = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let _ = read_until_idle(&mut stream, Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "closed after {took:?}");

    // A head that never ends.
    let start = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let _ = read_until_idle(&mut stream, Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "closed after {took:?}");

    // A body that stalls after its head: the idle timeout closes it.
    let start = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab",
    )
    .await
    .unwrap();
    let _ = read_until_idle(&mut stream, Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
}

#[tokio::test]
async fn an_http_1_0_backend_does_not_make_the_answer_1_0() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    });
    let gw = TestGateway::start(&route_to("old", backend)).await;
    let answer = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    // Both answered on the one connection, each in the gateway's own version.
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert!(!answer.contains("HTTP/1.0"), "{answer}");
}
