//! Forwarding headers, hop-by-hop removal, request ids and trace context.

use crate::support::*;
use std::time::Duration;

#[tokio::test]
async fn hop_by_hop_headers_never_reach_the_backend() {
    let a = echo("a").await;
    let gw = TestGateway::start(&route_to("r", a)).await;
    let out = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close, X-Secret, Keep-Alive\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Kept: k\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    let headers = json["headers"].as_object().unwrap();
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        assert!(
            !headers.contains_key(gone),
            "{gone} reached the backend: {headers:?}"
        );
    }
    assert_eq!(headers["x-kept"], serde_json::json!(["k"]));
    // The gateway's own connection header to the backend is about keep-alive only.
    assert!(headers
        .get("connection")
        .is_none_or(|v| !v.to_string().contains("X-Secret")));
}

#[tokio::test]
async fn forwarding_headers_describe_this_hop() {
    let a = echo("a").await;
    let gw = TestGateway::start(&route_to("r", a)).await;
    let ans = get(
        &gw.url("/"),
        &[
            ("host", "shop.example.com"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
        ],
    )
    .await;
    assert_eq!(
        ans.echoed_header("x-forwarded-for").unwrap(),
        "203.0.113.7, 127.0.0.1"
    );
    assert_eq!(ans.echoed_header("x-forwarded-proto").unwrap(), "http");
    assert_eq!(
        ans.echoed_header("x-forwarded-host").unwrap(),
        "shop.example.com"
    );
    assert_eq!(ans.echoed_header("host").unwrap(), "shop.example.com");
}

#[tokio::test]
async fn headers_a_backend_might_trust_are_not_passed_on() {
    let a = echo("a").await;
    let gw = TestGateway::start(&route_to("r", a)).await;
    let out = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close, X-Secret, \xff\r\nX-Secret: s\r\n\
          Forwarded: for=6.6.6.6;proto=https\r\nX-Real-IP: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\n\
          X-Forwarded-Port: 443\r\nX-Portcullis-Client: admin\r\nX_Portcullis_Client: admin\r\n\
          X-Forwarded-For: 1.1.1.1, \xfe\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    for gone in [
        "x-secret",
        "forwarded",
        "x-real-ip",
        "x_forwarded_for",
        "x-forwarded-port",
        "x-portcullis-client",
        "x_portcullis_client",
    ] {
        assert!(
            !out.contains(&format!("\"{gone}\"")),
            "{gone} reached the backend: {out}"
        );
    }
    assert!(
        out.contains("1.1.1.1, \u{fffd}, 127.0.0.1"),
        "the chain is kept: {out}"
    );
}

#[tokio::test]
async fn h2c_upgrades_are_not_forwarded() {
    let a = echo("a").await;
    let gw = TestGateway::start(&route_to("r", a)).await;
    let out = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
          HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(statuses(&out), [200, 200], "{out}");
    for gone in ["upgrade", "http2-settings"] {
        assert!(
            !out.contains(&format!("\"{gone}\"")),
            "{gone} reached the backend: {out}"
        );
    }
}

#[tokio::test]
async fn request_ids_are_generated_kept_and_returned() {
    let a = echo("a").await;
    let gw = TestGateway::start(&route_to("r", a)).await;

    let ans = get(&gw.url("/"), &[]).await;
    let id = ans.header("x-request-id").to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert_eq!(ans.echoed_header("x-request-id").unwrap(), id);

    let ans = get(&gw.url("/"), &[("x-request-id", "client-id-1")]).await;
    assert_eq!(ans.header("x-request-id"), "client-id-1");
    assert_eq!(ans.echoed_header("x-request-id").unwrap(), "client-id-1");

    // An id that could inject into logs is replaced.
    let ans = get(&gw.url("/"), &[("x-request-id", "a b\"c")]).await;
    assert_ne!(ans.header("x-request-id"), "a b\"c");
}

#[tokio::test]
async fn trace_context_is_propagated_or_started() {
    let a = echo("a").await;
    let gw = TestGateway::start(&route_to("r", a)).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let ans = get(
        &gw.url("/"),
        &[("traceparent", tp), ("tracestate", "vendor=1")],
    )
    .await;
    assert_eq!(ans.echoed_header("traceparent").unwrap(), tp);
    assert_eq!(ans.echoed_header("tracestate").unwrap(), "vendor=1");
    assert_eq!(
        ans.header("x-request-id"),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );

    let ans = get(&gw.url("/"), &[]).await;
    let started = ans.echoed_header("traceparent").unwrap();
    let id = ans.header("x-request-id");
    assert_eq!(started.len(), 55);
    assert!(
        started.starts_with(&format!("00-{id}-")),
        "{started} should carry trace id {id}"
    );
}
