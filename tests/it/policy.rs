//! Policies in file mode: attachment, conflicts, IP access, CORS, API keys, and a
//! Policy that does not build closing its Routes rather than opening them.

use crate::support::*;
use portcullis::{compile::Reason, proxy::Limits};
use std::net::SocketAddr;

fn route(name: &str, host: &str, backend: SocketAddr) -> String {
    format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\n\
         spec:\n  hosts: [{host}]\n  rules:\n  - backends: [{{address: '{backend}'}}]\n"
    )
}

fn policy(name: &str, created: &str, targets: &[&str], body: &str) -> String {
    let targets: Vec<String> = targets
        .iter()
        .map(|t| format!("{{kind: Route, name: {t}}}"))
        .collect();
    format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Policy\n\
         metadata: {{name: {name}, creationTimestamp: '{created}'}}\n\
         spec:\n  targetRefs: [{}]\n{body}",
        targets.join(", ")
    )
}

#[tokio::test]
async fn ip_access_judges_the_client_and_the_older_policy_keeps_a_section() {
    let b = echo("b").await;
    let yaml = route("api", "api.test", b)
        + &route("open", "open.test", b)
        + &policy(
            "deny-loopback",
            "2026-01-01T00:00:00Z",
            &["api"],
            "  ipAccess: {deny: [127.0.0.0/8]}\n",
        )
        + &policy(
            "allow-loopback",
            "2026-02-01T00:00:00Z",
            &["api", "missing"],
            "  ipAccess: {allow: [127.0.0.1/32]}\n",
        );
    let gw = TestGateway::start(&yaml).await;

    let a = get(&gw.url("/"), &[("host", "api.test")]).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["error"], "ip_denied");
    // Only the named Route is affected.
    assert_eq!(
        get(&gw.url("/"), &[("host", "open.test")]).await.status,
        200
    );

    let problems = gw.gw.as_ref().unwrap().snapshot.load().problems.clone();
    let of = |name: &str| -> Vec<(String, Reason, String)> {
        problems
            .iter()
            .filter(|p| p.kind == "Policy" && p.object.name == name)
            .map(|p| (p.field.clone(), p.reason, p.message.clone()))
            .collect()
    };
    assert_eq!(of("deny-loopback"), []);
    assert_eq!(
        of("allow-loopback"),
        [
            (
                "spec.ipAccess".to_string(),
                Reason::Conflicted,
                "Route default/api already has ipAccess from Policy default/deny-loopback, which is older".to_string()
            ),
            (
                "spec.targetRefs[1]".to_string(),
                Reason::TargetNotFound,
                "Route default/missing not found, or not served".to_string()
            ),
        ]
    );
}

#[tokio::test]
async fn trusted_proxies_decide_which_forwarded_address_counts() {
    let b = echo("b").await;
    let yaml = route("api", "api.test", b)
        + &policy(
            "office",
            "2026-01-01T00:00:00Z",
            &["api"],
            "  ipAccess: {allow: [203.0.113.0/24]}\n",
        );
    // Without trusted proxies the loopback peer is the client, whatever it forwards.
    let gw = TestGateway::start(&yaml).await;
    let a = get(
        &gw.url("/"),
        &[("host", "api.test"), ("x-forwarded-for", "203.0.113.9")],
    )
    .await;
    assert_eq!(a.status, 403);
    drop(gw);

    let gw = TestGateway::with_options(&yaml, |o| {
        o.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let a = get(
        &gw.url("/"),
        &[("host", "api.test"), ("x-forwarded-for", "203.0.113.9")],
    )
    .await;
    assert_eq!(a.status, 200);
    // The client prepends an address of its choosing: the rightmost untrusted entry,
    // written by the trusted hop, is what counts.
    let a = get(
        &gw.url("/"),
        &[
            ("host", "api.test"),
            ("x-forwarded-for", "203.0.113.9, 198.51.100.4"),
        ],
    )
    .await;
    assert_eq!(a.status, 403);
}

#[tokio::test]
async fn cors_preflights_are_answered_and_responses_labelled() {
    let b = echo("b").await;
    let yaml = route("api", "api.test", b)
        + &policy(
            "cors",
            "2026-01-01T00:00:00Z",
            &["api"],
            "  cors:\n    allowOrigins: ['https://app.test']\n    allowMethods: [GET, PUT]\n    \
             allowHeaders: [content-type]\n    maxAge: 10m\n",
        )
        + &policy(
            "keys",
            "2026-01-01T00:00:00Z",
            &["api"],
            "  apiKeys: {keysRef: {name: api-keys}}\n",
        );
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| {
            std::fs::create_dir(dir.join("api-keys")).unwrap();
            std::fs::write(
                dir.join("api-keys/keys.yaml"),
                "web: web-key-0123456789abcdef\n",
            )
            .unwrap();
        },
        None,
    )
    .await;

    // A preflight carries no credentials and never reaches the backend.
    let mut req = http::Request::builder()
        .method("OPTIONS")
        .uri(gw.url("/items"))
        .header("host", "api.test")
        .header("origin", "https://app.test")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "Content-Type");
    let a = send(req.body(Default::default()).unwrap()).await;
    assert_eq!(a.status, 204);
    assert_eq!(a.header("access-control-allow-origin"), "https://app.test");
    assert_eq!(a.header("access-control-allow-methods"), "GET, PUT");
    assert_eq!(a.header("access-control-allow-headers"), "content-type");
    assert_eq!(a.header("access-control-max-age"), "600");
    assert!(a.header("x-echo-name").is_empty());

    req = http::Request::builder()
        .method("OPTIONS")
        .uri(gw.url("/items"))
        .header("host", "api.test")
        .header("origin", "https://evil.test")
        .header("access-control-request-method", "PUT");
    let a = send(req.body(Default::default()).unwrap()).await;
    assert_eq!(a.status, 403);
    assert!(a.header("access-control-allow-origin").is_empty());

    // Refusals are labelled, so the page can read them.
    let a = get(
        &gw.url("/"),
        &[("host", "api.test"), ("origin", "https://app.test")],
    )
    .await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["error"], "invalid_api_key");
    assert_eq!(a.header("access-control-allow-origin"), "https://app.test");
    assert_eq!(a.header("www-authenticate"), "ApiKey header=\"x-api-key\"");

    let a = get(
        &gw.url("/"),
        &[
            ("host", "api.test"),
            ("origin", "https://app.test"),
            ("x-api-key", "web-key-0123456789abcdef"),
            ("x-consumer", "admin"),
        ],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("access-control-allow-origin"), "https://app.test");
    assert_eq!(a.echoed_header("x-consumer").as_deref(), Some("web"));
    assert_eq!(a.echoed_header("x-api-key"), None);
    let metrics = get(&format!("http://{}/metrics", gw.admin), &[]).await.body;
    assert!(
        String::from_utf8_lossy(&metrics).contains(
            "portcullis_consumer_requests_total{consumer=\"web\",route=\"default/api\"} 1"
        ),
        "{}",
        String::from_utf8_lossy(&metrics)
    );
    let a = get(
        &gw.url("/"),
        &[
            ("host", "api.test"),
            ("x-api-key", "web-key-0123456789abcdeF"),
        ],
    )
    .await;
    assert_eq!(a.status, 401);
}

#[tokio::test]
async fn a_policy_that_does_not_build_closes_its_routes_until_it_does() {
    let b = echo("b").await;
    let good = route("api", "api.test", b)
        + &policy(
            "p",
            "2026-01-01T00:00:00Z",
            &["api"],
            "  ipAccess: {allow: [127.0.0.0/8]}\n",
        );
    let bad = route("api", "api.test", b)
        + &policy(
            "p",
            "2026-01-01T00:00:00Z",
            &["api"],
            "  ipAccess: {allow: [127.0.0.0/99]}\n",
        );

    // Never good: the Route refuses every request.
    let gw = TestGateway::start(&bad).await;
    let a = get(&gw.url("/"), &[("host", "api.test")]).await;
    assert_eq!(a.status, 500);
    assert_eq!(a.json()["error"], "policy_invalid");
    let problems = gw.gw.as_ref().unwrap().snapshot.load().problems.clone();
    assert!(
        problems
            .iter()
            .any(|p| p.field == "spec.ipAccess.allow[0]" && p.message.contains("127.0.0.0/99")),
        "{problems:?}"
    );
    drop(gw);

    // Good, then a bad edit: the good version keeps serving.
    let gw = TestGateway::start(&good).await;
    assert_eq!(get(&gw.url("/"), &[("host", "api.test")]).await.status, 200);
    std::fs::write(gw.config_file(), &bad).unwrap();
    let snapshot = gw.gw.as_ref().unwrap().snapshot.clone();
    eventually_true(|| snapshot.load().problems.iter().any(|p| p.kind == "Policy")).await;
    assert_eq!(get(&gw.url("/"), &[("host", "api.test")]).await.status, 200);
}
