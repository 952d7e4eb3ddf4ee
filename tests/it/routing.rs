//! Routing, filters and the answers the gateway makes itself, end to end.

use crate::support::*;
use std::{collections::HashMap, time::Duration};

#[tokio::test]
async fn hosts_paths_and_methods_reach_the_right_backend() {
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let gw = TestGateway::start(&format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: api}}\nspec:
  hosts: [api.example.com, '*.apps.example.com']
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /users}}}}]
    backends: [{{address: '{a}'}}]
  - matches: [{{path: {{type: PathPrefix, value: /users}}, method: POST}}]
    backends: [{{address: '{b}'}}]
---
apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: fallback}}\nspec:
  rules:
  - matches: [{{path: {{type: RegularExpression, value: '/items/[0-9]+'}}}}]
    backends: [{{address: '{c}'}}]
"
    ))
    .await;
    let cases = [
        ("GET", "api.example.com", "/users/1", "a"),
        ("POST", "api.example.com", "/users", "b"),
        ("GET", "API.EXAMPLE.COM:8080", "/users", "a"),
        ("GET", "x.apps.example.com", "/users", "a"),
        ("GET", "other.example.com", "/items/42", "c"),
        ("GET", "api.example.com", "/items/42", "c"),
    ];
    for (method, host, path, want) in cases {
        let req = http::Request::builder()
            .method(method)
            .uri(gw.url(path))
            .header("host", host)
            .body(Default::default())
            .unwrap();
        let ans = send(req).await;
        assert_eq!(ans.status, 200, "{method} {host}{path}");
        assert_eq!(ans.header("x-echo-name"), want, "{method} {host}{path}");
    }
    for (host, path) in [
        ("api.example.com", "/usersx"),
        ("other.example.com", "/users"),
        ("x", "/items/4x"),
    ] {
        let ans = get(&gw.url(path), &[("host", host)]).await;
        assert_eq!(ans.status, 404, "{host}{path}");
        assert_eq!(ans.json()["error"], "no_route");
        assert_eq!(ans.json()["requestId"], ans.header("x-request-id"));
    }
}

#[tokio::test]
async fn weighted_split_follows_the_weights() {
    let (a, b) = (echo("a").await, echo("b").await);
    let gw = TestGateway::start(&format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: split}}\nspec:
  rules:
  - backends: [{{address: '{a}', weight: 80}}, {{address: '{b}', weight: 20}}]
"
    ))
    .await;
    let mut counts: HashMap<String, u32> = HashMap::new();
    let n = 1000;
    for _ in 0..n {
        let ans = get(&gw.url("/"), &[]).await;
        *counts
            .entry(ans.header("x-echo-name").to_string())
            .or_default() += 1;
    }
    // 80 % of 1000 has a standard deviation of about 13; allow five of them.
    let share_a = counts["a"];
    assert!((735..=865).contains(&share_a), "a got {share_a} of {n}");
}

#[tokio::test]
async fn canonical_path_is_what_the_backend_sees() {
    let a = echo("a").await;
    let gw = TestGateway::start(&format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: r}}\nspec:
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /public}}}}]
    backends: [{{address: '{a}'}}]
"
    ))
    .await;
    // Each spelling routes as /public/... and reaches the backend canonical.
    for (sent, seen) in [
        ("/public//a", "/public/a"),
        ("/public/./a/../b", "/public/b"),
        ("/%70ublic/%7euser", "/public/~user"),
        ("/public/a%20b", "/public/a%20b"),
    ] {
        let raw = raw(
            gw.addr,
            format!("GET {sent} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            std::time::Duration::from_secs(2),
        )
        .await;
        assert!(raw.starts_with("HTTP/1.1 200"), "{sent}: {raw}");
        assert!(
            raw.contains(&format!("\"path\":\"{seen}\"")),
            "{sent} should arrive as {seen}: {raw}"
        );
    }
    // Climbing out of the prefix is resolved before routing, so it cannot reach
    // what the prefix guards.
    let raw = raw(
        gw.addr,
        b"GET /public/../admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(2),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
}

#[tokio::test]
async fn header_filters_and_rewrites() {
    let a = echo("a").await;
    let gw = TestGateway::start(&format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: r}}\nspec:
  rules:
  - matches: [{{path: {{value: /api}}}}]
    filters:
      requestHeaders:
        set: [{{name: x-set, value: gateway}}]
        add: [{{name: x-add, value: two}}]
        remove: [x-drop]
      responseHeaders:
        set: [{{name: x-resp, value: yes}}]
        remove: [x-echo-name]
      urlRewrite:
        hostname: internal.svc
        path: {{replacePrefixMatch: /v2}}
    backends: [{{address: '{a}'}}]
  - matches: [{{path: {{type: Exact, value: /old}}}}]
    filters:
      urlRewrite:
        path: {{replaceFullPath: /new/place}}
    backends: [{{address: '{a}'}}]
"
    ))
    .await;
    let ans = get(
        &gw.url("/api/users?x=1"),
        &[("x-set", "client"), ("x-add", "one"), ("x-drop", "1")],
    )
    .await;
    assert_eq!(ans.status, 200);
    let json = ans.json();
    assert_eq!(json["path"], "/v2/users");
    assert_eq!(json["query"], "x=1");
    assert_eq!(json["headers"]["x-set"], serde_json::json!(["gateway"]));
    assert_eq!(json["headers"]["x-add"], serde_json::json!(["one", "two"]));
    assert!(json["headers"]["x-drop"].is_null());
    assert_eq!(json["headers"]["host"], serde_json::json!(["internal.svc"]));
    assert_eq!(ans.header("x-resp"), "yes");
    assert_eq!(ans.header("x-echo-name"), "");

    let ans = get(&gw.url("/old"), &[]).await;
    assert_eq!(ans.json()["path"], "/new/place");
}

#[tokio::test]
async fn redirects() {
    let gw = TestGateway::start(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {name: r}\nspec:
  rules:
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
      redirect: {path: {replacePrefixMatch: /new}, statusCode: 301}
  - matches: [{path: {type: Exact, value: /secure}}]
    filters:
      redirect: {scheme: https, hostname: secure.example.com, statusCode: 308}
  - matches: [{path: {type: Exact, value: /port}}]
    filters:
      redirect: {port: 8443}
",
    )
    .await;
    let cases = [
        ("/old/a?q=1", 301, "http://example.com:8080/new/a?q=1"),
        ("/secure", 308, "https://secure.example.com/secure"),
        ("/port", 302, "http://example.com:8443/port"),
    ];
    for (path, status, location) in cases {
        let ans = get(&gw.url(path), &[("host", "example.com:8080")]).await;
        assert_eq!(ans.status, status, "{path}");
        assert_eq!(ans.header("location"), location, "{path}");
    }
    // The port comes from the authority the request was routed by.
    let out = raw(
        gw.addr,
        b"GET http://b.example.com:9000/old/x HTTP/1.1\r\nHost: a.example.com:8080\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(2),
    )
    .await;
    assert!(
        out.contains("location: http://b.example.com:9000/new/x"),
        "{out}"
    );
    for code in [303, 307] {
        let yaml = format!(
            "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: r}}\nspec:\n  rules:\n  - filters: {{redirect: {{statusCode: {code}}}}}\n"
        );
        let gw = TestGateway::start(&yaml).await;
        assert_eq!(get(&gw.url("/"), &[]).await.status, code);
    }
}

#[tokio::test]
async fn backend_failures_have_their_own_status_and_json() {
    let down = closed_port().await;
    let slow = echo("slow").await;
    let gw = TestGateway::start(&format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: r}}\nspec:
  rules:
  - matches: [{{path: {{value: /down}}}}]
    backends: [{{address: '{down}'}}]
  - matches: [{{path: {{value: /none}}}}]
    backends: [{{service: {{name: users, port: 80}}}}]
  - matches: [{{path: {{value: /slow}}}}]
    timeouts: {{request: 200ms}}
    backends: [{{address: '{slow}'}}]
"
    ))
    .await;
    let cases = [
        ("/down", 502, "backend_failed"),
        ("/none", 503, "no_endpoints"),
        ("/slow?delayMs=2000", 504, "timeout"),
    ];
    for (path, status, code) in cases {
        let ans = get(&gw.url(path), &[("x-request-id", "req-42")]).await;
        assert_eq!(ans.status, status, "{path}");
        assert_eq!(ans.header("content-type"), "application/json");
        assert_eq!(ans.header("x-request-id"), "req-42");
        let json = ans.json();
        assert_eq!(json["error"], code, "{path}");
        assert_eq!(json["requestId"], "req-42");
    }
    let metrics = get(&format!("http://{}/metrics", gw.admin), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(&format!(
            "portcullis_upstream_connect_errors_total{{backend=\"{down}\"}} 1"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn rules_may_match_on_fields_for_this_hop_only() {
    let (ws, plain) = (echo("ws").await, echo("plain").await);
    let yaml = format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: r}}\nspec:\n  rules:\n\
         \x20 - matches: [{{headers: [{{name: Upgrade, value: websocket}}]}}]\n    backends: [{{address: '{ws}'}}]\n\
         \x20 - backends: [{{address: '{plain}'}}]\n"
    );
    let gw = TestGateway::start(&yaml).await;
    // Upgrade is hop-by-hop, and still chooses the rule.
    let answer = raw(
        gw.addr,
        b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: close, upgrade\r\nUpgrade: websocket\r\n\r\n",
        Duration::from_millis(1500),
    )
    .await;
    assert!(answer.contains("x-echo-name: ws"), "{answer}");
    let answer = raw(
        gw.addr,
        b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_millis(1500),
    )
    .await;
    assert!(answer.contains("x-echo-name: plain"), "{answer}");
}
