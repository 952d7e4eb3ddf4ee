//! BFF resources in file mode: aggregates over real backends with chosen latencies and
//! failures, field selection, identity on every call, Policies of the BFF and of the
//! Routes its parts call, pass-through with a rewrite, and bad BFFs rejected alone.

use crate::support::*;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::{compile::Reason, proxy::Limits};
use std::{
    convert::Infallible,
    net::SocketAddr,
    time::{Duration, Instant},
};
use tokio::net::TcpListener;

use crate::policy_jwt::tokens;

/// A backend that answers every request with `status`, `content_type` and `body`.
async fn fixed(status: u16, content_type: &'static str, body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |_req: http::Request<Incoming>| async move {
                    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                    resp.headers_mut()
                        .insert("content-type", content_type.parse().unwrap());
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn bff(name: &str, created: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: BFF\n\
         metadata: {{name: {name}, creationTimestamp: '{created}'}}\nspec:\n{spec}"
    )
}

fn route(name: &str, host: &str, backend: SocketAddr) -> String {
    format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\n\
         spec:\n  hosts: [{host}]\n  rules:\n  - backends: [{{address: '{backend}'}}]\n"
    )
}

fn policy(name: &str, target: &str, body: &str) -> String {
    format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {{name: {name}}}\n\
         spec:\n  targetRefs: [{target}]\n{body}"
    )
}

#[tokio::test]
async fn parts_run_in_parallel_and_merge_under_their_names() {
    let (users, orders, notes) = (
        echo("users").await,
        echo("orders").await,
        echo("notes").await,
    );
    let yaml = bff(
        "web",
        "2026-01-01T00:00:00Z",
        &format!(
            "  client: web\n  hosts: [web.test]\n  endpoints:\n\
             \x20 - path: /dashboard/{{id}}\n    method: GET\n    aggregate:\n      parts:\n\
             \x20     - {{name: user, address: '{users}', path: '/users/{{id}}?delayMs=300'}}\n\
             \x20     - {{name: orders, address: '{orders}', path: '/orders?owner={{id}}&delayMs=300'}}\n\
             \x20     - {{name: notifications, address: '{notes}', path: '/notifications/{{id}}?delayMs=300'}}\n"
        ),
    );
    let gw = TestGateway::start(&yaml).await;

    let started = Instant::now();
    let a = get(&gw.url("/dashboard/42"), &[("host", "web.test")]).await;
    let took = started.elapsed();
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.header("content-type"), "application/json");
    assert!(
        took >= Duration::from_millis(300),
        "faster than the slowest part: {took:?}"
    );
    assert!(
        took < Duration::from_millis(700),
        "three 300 ms parts must overlap, took {took:?}"
    );
    let body = a.json();
    assert_eq!(body["user"]["name"], "users");
    assert_eq!(body["user"]["path"], "/users/42");
    assert_eq!(body["orders"]["query"], "owner=42&delayMs=300");
    assert_eq!(body["notifications"]["path"], "/notifications/42");
    assert!(body.get("errors").is_none());
    assert_eq!(a.header("x-portcullis-partial"), "");

    // Another method is not this endpoint.
    let mut req = http::Request::post(gw.url("/dashboard/42"));
    req = req.header("host", "web.test");
    let post = send(req.body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(post.status, 404);

    let metrics = get(&format!("http://{}/metrics", gw.admin), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(
            r#"portcullis_bff_part_calls_total{bff="bff:default/web",client="web",part="orders",result="ok"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"portcullis_bff_requests_total{bff="bff:default/web",client="web",status_class="2xx"} 1"#
    ));
}

#[tokio::test]
async fn optional_failures_are_named_and_required_ones_fail_the_answer() {
    let users = echo("users").await;
    let yaml = bff(
        "web",
        "2026-01-01T00:00:00Z",
        &format!(
            "  client: web\n  pathPrefix: /web\n  endpoints:\n\
             \x20 - path: /partial\n    aggregate:\n      parts:\n\
             \x20     - {{name: user, address: '{users}', path: /users/1}}\n\
             \x20     - {{name: prices, address: '{users}', path: /status/500, required: false}}\n\
             \x20     - {{name: slow, address: '{users}', path: '/x?delayMs=3000', timeout: 200ms, required: false}}\n\
             \x20 - path: /broken\n    aggregate:\n      parts:\n\
             \x20     - {{name: user, address: '{users}', path: /users/1}}\n\
             \x20     - {{name: prices, address: '{users}', path: '/status/503?delayMs=50'}}\n\
             \x20     - {{name: slow, address: '{users}', path: '/x?delayMs=3000'}}\n\
             \x20 - path: /late\n    aggregate:\n      parts:\n\
             \x20     - {{name: user, address: '{users}', path: /users/1}}\n\
             \x20     - {{name: slow, address: '{users}', path: '/x?delayMs=3000', timeout: 200ms}}\n"
        ),
    );
    let gw = TestGateway::start(&yaml).await;

    let a = get(&gw.url("/web/partial"), &[("x-request-id", "partial-1")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-portcullis-partial"), "prices, slow");
    let body = a.json();
    assert_eq!(body["user"]["path"], "/users/1");
    assert!(body.get("prices").is_none() && body.get("slow").is_none());
    assert_eq!(
        body["errors"],
        serde_json::json!({"prices": "answered 500", "slow": "no answer within 200ms"})
    );

    let started = Instant::now();
    let b = get(&gw.url("/web/broken"), &[("x-request-id", "broken-1")]).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "a required failure does not wait for the slow part"
    );
    assert_eq!(b.status, 502);
    assert_eq!(
        b.json(),
        serde_json::json!({
            "error": "part_failed",
            "status": 502,
            "part": "prices",
            "message": "part prices: answered 503",
            "requestId": "broken-1",
        })
    );

    let started = Instant::now();
    let c = get(&gw.url("/web/late"), &[("x-request-id", "late-1")]).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the timeout cuts the wait"
    );
    assert_eq!(c.status, 504);
    assert_eq!(c.json()["error"], "part_timeout");
    assert_eq!(c.json()["part"], "slow");
    assert_eq!(c.json()["message"], "part slow: no answer within 200ms");
}

#[tokio::test]
async fn non_json_answers_are_refused_naming_the_part() {
    let users = echo("users").await;
    let text = fixed(200, "text/plain", "hello").await;
    let bad_json = fixed(200, "application/json", "{not json").await;
    let yaml = bff(
        "web",
        "2026-01-01T00:00:00Z",
        &format!(
            "  client: web\n  pathPrefix: /web\n  endpoints:\n\
             \x20 - path: /text\n    aggregate:\n      parts:\n\
             \x20     - {{name: user, address: '{users}', path: /users/1}}\n\
             \x20     - {{name: banner, address: '{text}', path: /banner}}\n\
             \x20 - path: /malformed\n    aggregate:\n      parts:\n\
             \x20     - {{name: stats, address: '{bad_json}', path: /stats, required: false}}\n"
        ),
    );
    let gw = TestGateway::start(&yaml).await;

    let a = get(&gw.url("/web/text"), &[]).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.json()["part"], "banner");
    assert_eq!(
        a.json()["message"],
        "part banner: answered text/plain, not JSON"
    );

    let b = get(&gw.url("/web/malformed"), &[]).await;
    assert_eq!(b.status, 200);
    let why = b.json()["errors"]["stats"].as_str().unwrap().to_string();
    assert!(why.starts_with("answered malformed JSON"), "{why}");
}

#[tokio::test]
async fn field_selection_gives_each_client_its_own_shape() {
    let catalog = fixed(
        200,
        "application/json; charset=utf-8",
        r#"{"items":[{"id":1,"name":"tea","price":3,"stock":{"count":4,"warehouse":"n"}},{"id":2,"name":"cake","price":5,"stock":{"count":0,"warehouse":"s"}}],"total":2,"page":{"next":null}}"#,
    )
    .await;
    let spec = |client: &str, fields: &str| {
        format!(
            "  client: {client}\n  hosts: [{client}.test]\n  endpoints:\n\
             \x20 - path: /home\n    aggregate:\n      parts:\n\
             \x20     - {{name: catalog, address: '{catalog}', path: /items, fields: {fields}}}\n"
        )
    };
    let yaml = bff("web", "2026-01-01T00:00:00Z", &spec("web", "[]"))
        + &bff(
            "mobile",
            "2026-01-01T00:00:00Z",
            &spec("mobile", "[items.id, items.name, items.stock.count, total]"),
        );
    let gw = TestGateway::start(&yaml).await;

    let web = get(&gw.url("/home"), &[("host", "web.test")]).await.json();
    assert_eq!(web["catalog"]["items"][0]["price"], 3);
    assert_eq!(web["catalog"]["page"], serde_json::json!({"next": null}));

    let mobile = get(&gw.url("/home"), &[("host", "mobile.test")])
        .await
        .json();
    assert_eq!(
        mobile,
        serde_json::json!({"catalog": {
            "items": [
                {"id": 1, "name": "tea", "stock": {"count": 4}},
                {"id": 2, "name": "cake", "stock": {"count": 0}}
            ],
            "total": 2
        }})
    );
}

#[tokio::test]
async fn identity_travels_and_clients_cannot_forge_gateway_headers() {
    let users = echo("users").await;
    let yaml = bff(
        "web",
        "2026-01-01T00:00:00Z",
        &format!(
            "  client: web\n  pathPrefix: /web\n  endpoints:\n\
             \x20 - path: /me\n    aggregate:\n      parts:\n\
             \x20     - name: user\n        address: '{users}'\n        path: /users/me\n\
             \x20       headers: [{{name: x-tenant, value: 't-{{header.x-tenant}}'}}]\n\
             \x20 - path: /raw/{{rest}}\n    passThrough: {{address: '{users}'}}\n"
        ),
    );
    let gw = TestGateway::start(&yaml).await;
    let sent = [
        ("authorization", "Bearer token-abc"),
        ("x-request-id", "req-123"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-tenant", "acme"),
        // Copies of what only the gateway may say.
        ("x-portcullis-client", "admin"),
        ("x-real-ip", "6.6.6.6"),
        ("cookie", "session=secret"),
    ];

    let a = get(&gw.url("/web/me"), &sent).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-request-id"), "req-123");
    let seen = |name: &str| {
        a.json()["user"]["headers"][name][0]
            .as_str()
            .map(str::to_string)
    };
    assert_eq!(seen("authorization").as_deref(), Some("Bearer token-abc"));
    assert_eq!(seen("x-request-id").as_deref(), Some("req-123"));
    assert_eq!(
        seen("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen("x-portcullis-client").as_deref(), Some("web"));
    assert_eq!(seen("x-tenant").as_deref(), Some("t-acme"));
    assert!(seen("traceparent").is_some_and(|t| t.starts_with("00-")));
    assert_eq!(seen("x-real-ip"), None);
    assert_eq!(seen("cookie"), None, "only named headers reach a part");

    // A pass-through keeps the client's headers but not its copies of the gateway's.
    let b = get(&gw.url("/web/raw/x"), &sent).await;
    assert_eq!(b.status, 200);
    assert_eq!(
        b.echoed_header("x-portcullis-client").as_deref(),
        Some("web")
    );
    assert_eq!(b.echoed_header("x-request-id").as_deref(), Some("req-123"));
    assert!(b
        .echoed_header("traceparent")
        .is_some_and(|t| t.starts_with("00-")));
    assert_eq!(
        b.echoed_header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(b.echoed_header("x-real-ip"), None);
    assert_eq!(
        b.echoed_header("authorization").as_deref(),
        Some("Bearer token-abc")
    );
}

#[tokio::test]
async fn pass_through_rewrites_the_path_and_keeps_query_and_body() {
    let users = echo("users").await;
    let yaml = bff(
        "mobile",
        "2026-01-01T00:00:00Z",
        &format!(
            "  client: mobile\n  hosts: [m.test]\n  pathPrefix: /v1\n  endpoints:\n\
             \x20 - path: /users/{{id}}/avatar\n    method: PUT\n    passThrough: {{address: '{users}', path: '/v2/accounts/{{id}}/picture'}}\n\
             \x20 - path: /users/{{id}}\n    passThrough: {{address: '{users}'}}\n"
        ),
    );
    let gw = TestGateway::start(&yaml).await;

    let req = http::Request::put(gw.url("/v1/users/a%20b/avatar?size=2"))
        .header("host", "m.test")
        .body(Full::new(Bytes::from_static(b"picture-bytes")))
        .unwrap();
    let a = send(req).await;
    assert_eq!(a.status, 200);
    let body = a.json();
    assert_eq!(body["path"], "/v2/accounts/a%20b/picture");
    assert_eq!(body["query"], "size=2");
    assert_eq!(body["method"], "PUT");
    assert_eq!(body["body"], "picture-bytes");

    let b = get(&gw.url("/v1/users/7"), &[("host", "m.test")]).await;
    assert_eq!(b.json()["path"], "/v1/users/7", "no rewrite keeps the path");
    assert_eq!(
        get(&gw.url("/v1/users/7"), &[("host", "other.test")])
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn parts_through_routes_pass_those_routes_policies() {
    let internal = echo("internal").await;
    let yaml = route("keyed", "keyed.internal", internal)
        + &route("walled", "walled.internal", internal)
        + &policy(
            "keys",
            "{kind: Route, name: keyed}",
            "  apiKeys: {keysRef: {name: api-keys}}\n",
        )
        + &policy(
            "wall",
            "{kind: Route, name: walled}",
            "  ipAccess: {deny: [127.0.0.0/8]}\n",
        )
        + &bff(
            "web",
            "2026-01-01T00:00:00Z",
            "  client: web\n  pathPrefix: /web\n  endpoints:\n\
             \x20 - path: /keyed\n    aggregate:\n      parts:\n\
             \x20     - name: data\n        route: {host: keyed.internal}\n        path: /data\n\
             \x20       headers: [{name: x-api-key, value: '{header.x-api-key}'}]\n\
             \x20 - path: /walled\n    aggregate:\n      parts:\n\
             \x20     - {name: data, route: {host: walled.internal}, path: /data}\n",
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

    let none = get(&gw.url("/web/keyed"), &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["error"], "invalid_api_key");
    assert_eq!(none.json()["part"], "data");

    let wrong = get(
        &gw.url("/web/keyed"),
        &[("x-api-key", "not-the-key-at-all")],
    )
    .await;
    assert_eq!(wrong.status, 401);

    let good = get(
        &gw.url("/web/keyed"),
        &[("x-api-key", "web-key-0123456789abcdef")],
    )
    .await;
    assert_eq!(good.status, 200, "{}", String::from_utf8_lossy(&good.body));
    let data = &good.json()["data"];
    assert_eq!(data["path"], "/data");
    assert_eq!(data["headers"]["x-consumer"][0], "web");
    assert!(
        data["headers"].get("x-api-key").is_none(),
        "the key is removed on the way"
    );

    // The IP rule judges the original caller, here on loopback.
    let walled = get(&gw.url("/web/walled"), &[]).await;
    assert_eq!(walled.status, 403);
    assert_eq!(walled.json()["error"], "ip_denied");
    assert_eq!(walled.json()["part"], "data");
}

#[tokio::test]
async fn a_policy_targeting_a_bff_applies_to_every_endpoint() {
    let users = echo("users").await;
    let spec = |client: &str| {
        format!(
            "  client: {client}\n  hosts: [{client}.test]\n  endpoints:\n\
             \x20 - path: /agg\n    aggregate: {{parts: [{{name: u, address: '{users}', path: /u}}]}}\n\
             \x20 - path: /pass\n    passThrough: {{address: '{users}'}}\n"
        )
    };
    let yaml = bff("admin", "2026-01-01T00:00:00Z", &spec("admin"))
        + &bff("web", "2026-01-01T00:00:00Z", &spec("web"))
        + &policy(
            "admins-only",
            "{kind: BFF, name: admin}",
            "  ipAccess: {deny: [127.0.0.0/8]}\n",
        );
    let gw = TestGateway::start(&yaml).await;

    for path in ["/agg", "/pass"] {
        let a = get(&gw.url(path), &[("host", "admin.test")]).await;
        assert_eq!(a.status, 403, "{path}");
        assert_eq!(a.json()["error"], "ip_denied");
        assert_eq!(
            get(&gw.url(path), &[("host", "web.test")]).await.status,
            200,
            "{path}"
        );
    }
    let problems = gw.gw.as_ref().unwrap().snapshot.load().problems.clone();
    assert!(problems.is_empty(), "{problems:?}");
}

#[tokio::test]
async fn a_later_part_reads_an_earlier_answer() {
    let users = echo("users").await;
    let orders = echo("orders").await;
    let yaml = bff(
        "web",
        "2026-01-01T00:00:00Z",
        &format!(
            "  client: web\n  pathPrefix: /web\n  endpoints:\n\
             \x20 - path: /orders\n    aggregate:\n      parts:\n\
             \x20     - {{name: user, address: '{users}', path: '/users/me?delayMs=100', fields: [name]}}\n\
             \x20     - {{name: orders, address: '{orders}', path: '/orders?owner={{parts.user.name}}&m={{parts.user.method}}', after: user}}\n"
        ),
    );
    let gw = TestGateway::start(&yaml).await;
    let a = get(&gw.url("/web/orders"), &[]).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let body = a.json();
    assert_eq!(body["orders"]["query"], "owner=users&m=GET");
    // The selection shapes the answer, not what later parts may read.
    assert_eq!(body["user"], serde_json::json!({"name": "users"}));
}

#[tokio::test]
async fn bad_bffs_are_rejected_alone_with_the_field_path() {
    let users = echo("users").await;
    let exact_route = format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: plain}}\n\
         spec:\n  hosts: [shop.test]\n  rules:\n  - matches: [{{path: {{type: Exact, value: /home}}}}]\n\
         \x20   backends: [{{address: '{users}'}}]\n"
    );
    let yaml = exact_route
        + &bff(
            "good",
            "2026-01-01T00:00:00Z",
            &format!(
                "  client: web\n  hosts: [good.test]\n  endpoints:\n\
                 \x20 - path: /ok\n    aggregate: {{parts: [{{name: u, address: '{users}', path: /u}}]}}\n\
                 \x20 - path: /prices\n    aggregate:\n      parts:\n\
                 \x20     - {{name: u, address: '{users}', path: /u}}\n\
                 \x20     - {{name: p, service: {{name: prices, port: 80}}, path: /p, required: false}}\n"
            ),
        )
        + &bff(
            "bad",
            "2026-01-01T00:00:00Z",
            &format!(
                "  client: web\n  hosts: [bad.test]\n  endpoints:\n\
                 \x20 - path: /ok\n    aggregate: {{parts: [{{name: u, address: '{users}', path: /u}}]}}\n\
                 \x20 - path: /x\n    aggregate:\n      parts:\n\
                 \x20     - {{name: a, address: '{users}', path: /a}}\n\
                 \x20     - {{name: b, address: '{users}', path: /b}}\n\
                 \x20     - {{name: c, address: '{users}', path: '/c/{{nope}}'}}\n"
            ),
        )
        + &bff(
            "shadowed",
            "2026-01-01T00:00:00Z",
            &format!(
                "  client: web\n  hosts: [shop.test]\n  endpoints:\n\
                 \x20 - path: /home\n    passThrough: {{address: '{users}', path: /elsewhere}}\n"
            ),
        );
    let gw = TestGateway::start(&yaml).await;

    let problems = gw.gw.as_ref().unwrap().snapshot.load().problems.clone();
    let of = |name: &str| -> Vec<(String, Reason, String)> {
        problems
            .iter()
            .filter(|p| p.kind == "BFF" && p.object.name == name)
            .map(|p| (p.field.clone(), p.reason, p.message.clone()))
            .collect()
    };
    assert_eq!(
        of("bad"),
        [(
            "spec.endpoints[1].aggregate.parts[2].path".to_string(),
            Reason::Invalid,
            "{nope} is not a parameter of the endpoint path".to_string()
        )]
    );
    assert_eq!(
        of("good"),
        [(
            "spec.endpoints[1].aggregate.parts[1].service".to_string(),
            Reason::BackendNotFound,
            "Service default/prices not found".to_string()
        )]
    );
    // The very same host and match as a Route: the Route keeps it.
    let shadowed = of("shadowed");
    assert_eq!(shadowed.len(), 1, "{shadowed:?}");
    assert_eq!(shadowed[0].1, Reason::Conflicted);
    assert!(
        shadowed[0].2.contains("Route default/plain"),
        "{shadowed:?}"
    );

    // The bad BFF serves nothing, the rest serve on.
    assert_eq!(
        get(&gw.url("/ok"), &[("host", "bad.test")]).await.status,
        404
    );
    assert_eq!(
        get(&gw.url("/ok"), &[("host", "good.test")]).await.status,
        200
    );
    let partial = get(&gw.url("/prices"), &[("host", "good.test")]).await;
    assert_eq!(partial.status, 200);
    assert_eq!(partial.header("x-portcullis-partial"), "p");
    let home = get(&gw.url("/home"), &[("host", "shop.test")]).await;
    assert_eq!(home.json()["path"], "/home");
}

#[tokio::test]
async fn a_jwt_policy_on_the_bff_gives_parts_its_claims() {
    let users = echo("users").await;
    let key = tokens::TestKey::hmac(jsonwebtoken::Algorithm::HS256);
    let yaml = bff(
        "web",
        "2026-01-01T00:00:00Z",
        &format!(
            "  client: web\n  pathPrefix: /web\n  endpoints:\n\
             \x20 - path: /me\n    aggregate:\n      parts:\n\
             \x20     - {{name: user, address: '{users}', path: '/users/{{claims.sub}}?tier={{claims.tier}}'}}\n"
        ),
    ) + &policy(
        "auth",
        "{kind: BFF, name: web}",
        "  jwt: {keysRef: {name: idp}, issuer: https://idp.test, algorithms: [HS256]}\n",
    );
    let jwks = tokens::jwks(&[key.jwk("k1", Some("HS256"))]);
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| {
            std::fs::create_dir(dir.join("idp")).unwrap();
            std::fs::write(dir.join("idp/jwks.json"), &jwks).unwrap();
        },
        None,
    )
    .await;

    assert_eq!(get(&gw.url("/web/me"), &[]).await.status, 401);
    let bearer = |sub: &str| {
        let claims = serde_json::json!({
            "sub": sub, "tier": 3, "iss": "https://idp.test", "exp": tokens::now() + 600
        });
        format!("Bearer {}", key.sign(Some("k1"), &claims))
    };
    let alice = bearer("alice smith");
    let a = get(&gw.url("/web/me"), &[("authorization", &alice)]).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let user = &a.json()["user"];
    assert_eq!(user["path"], "/users/alice%20smith");
    assert_eq!(user["query"], "tier=3");
    assert_eq!(user["headers"]["authorization"][0], alice.as_str());

    // A value cannot add a segment: its slash is encoded, and an encoded slash is
    // refused as in any path this gateway sends.
    let b = get(
        &gw.url("/web/me"),
        &[("authorization", &bearer("../admin"))],
    )
    .await;
    assert_eq!(b.status, 502);
    assert_eq!(
        b.json()["message"],
        "part user: path \"/users/..%2Fadmin\": encoded '/' in path"
    );
}

#[test]
fn check_names_the_bff_endpoint_and_part_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bff.yaml");
    std::fs::write(
        &config,
        "apiVersion: portcullis.dev/v1alpha1\nkind: BFF\nmetadata: {name: shop, namespace: shop}\n\
         spec:\n  client: web\n  hosts: [shop.test]\n  endpoints:\n\
         \x20 - path: /home/{id}\n    aggregate:\n      parts:\n\
         \x20     - {name: user, address: 'users:80', path: '/users/{id}'}\n\
         \x20     - {name: prices, service: {name: prices, port: 80}, path: '/p/{id}'}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "document 1: BFF shop/shop: spec.endpoints[0].aggregate.parts[1].service: \
             Service shop/prices not found"
        ),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_policy_on_a_bff_compresses_its_answers_and_caches_pass_throughs() {
    use crate::origin::{answer, Origin};
    let big = format!(
        "{{\"items\":[{}]}}",
        vec!["{\"id\":1,\"n\":\"x\"}"; 300].join(",")
    );
    let origin = Origin::start(move |req, n| {
        let ct = ("content-type", "application/json");
        match req.uri.path() {
            p if p.starts_with("/cached") => answer(
                200,
                &[ct, ("cache-control", "max-age=60")],
                format!("{{\"n\":{n}}}"),
            ),
            _ => answer(200, &[ct], big.clone()),
        }
    })
    .await;
    let o = origin.addr;
    let yaml = bff(
        "mobile",
        "2026-01-01T00:00:00Z",
        &format!(
            "  client: mobile\n  hosts: [m.test]\n  endpoints:\n\
             \x20 - path: /home\n    aggregate: {{parts: [{{name: a, address: '{o}', path: /a}}, {{name: b, address: '{o}', path: /b}}]}}\n\
             \x20 - path: /cached\n    passThrough: {{address: '{o}'}}\n\
             \x20 - path: /tenant\n    passThrough: {{address: '{o}', path: '/cached/{{header.x-tenant}}'}}\n\
             \x20 - path: /small\n    aggregate: {{parts: [{{name: a, address: '{o}', path: /cached/s}}]}}\n"
        ),
    ) + &policy(
        "edge",
        "{kind: BFF, name: mobile}",
        "  cache: {}\n  compression: {encodings: [Gzip]}\n",
    );
    let gw = TestGateway::start(&yaml).await;

    let plain = get(&gw.url("/home"), &[("host", "m.test")]).await;
    assert_eq!(
        plain.status,
        200,
        "{}",
        String::from_utf8_lossy(&plain.body)
    );
    assert_eq!(plain.header("vary"), "Accept-Encoding");
    let zipped = get(
        &gw.url("/home"),
        &[("host", "m.test"), ("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(zipped.header("content-encoding"), "gzip");
    assert!(
        zipped.body.len() * 10 < plain.body.len(),
        "{} bytes",
        zipped.body.len()
    );
    let decoded = crate::edge_compress::decode("gzip", &zipped.body).await;
    assert_eq!(decoded, plain.body.to_vec());
    // An aggregate is built anew each time: its parts may read more than the URL.
    assert_eq!(zipped.header("cache-status"), "");
    // One under `minBytes` goes as it is, and says it does not vary.
    let small = get(
        &gw.url("/small"),
        &[("host", "m.test"), ("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(small.status, 200);
    assert_eq!(small.header("content-encoding"), "");
    assert_eq!(small.header("vary"), "");

    let first = get(&gw.url("/cached"), &[("host", "m.test")]).await;
    let second = get(&gw.url("/cached"), &[("host", "m.test")]).await;
    assert_eq!(first.body, second.body);
    assert!(
        second.header("cache-status").starts_with("portcullis; hit"),
        "{}",
        second.header("cache-status")
    );
    // A path that reads a header sends one URL to different places: never cached.
    let tenant = |t| [("host", "m.test"), ("x-tenant", t)];
    let acme = get(&gw.url("/tenant"), &tenant("acme")).await;
    let globex = get(&gw.url("/tenant"), &tenant("globex")).await;
    assert_ne!(acme.body, globex.body);
    assert_eq!(globex.header("cache-status"), "");
}

#[tokio::test]
async fn parts_through_routes_get_those_routes_retries_and_ejection() {
    let (well, dead) = (echo("well").await, closed_port().await);
    let orders = format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: orders}}\n\
         spec:\n  hosts: [orders.internal]\n  rules:\n\
         \x20 - backends:\n    - addresses: ['{dead}', '{well}']\n\
         \x20     healthCheck: {{passive: {{consecutiveFailures: 1, baseEjectionTime: 1m}}}}\n\
         \x20   retry: {{attempts: 1, on: [ConnectFailure], backoff: 1ms, budgetPercent: 100}}\n"
    );
    let yaml = orders
        + &bff(
            "web",
            "2026-01-01T00:00:00Z",
            "  client: web\n  hosts: [web.test]\n  endpoints:\n\
             \x20 - path: /home\n    aggregate: {parts: [{name: o, route: {host: orders.internal}, path: /orders}]}\n",
        );
    let gw = TestGateway::start(&yaml).await;
    for i in 0..20 {
        let a = get(&gw.url("/home"), &[("host", "web.test")]).await;
        assert_eq!(
            a.status,
            200,
            "call {i}: {}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(a.json()["o"]["path"], "/orders");
    }
    let metrics = gw.metrics().await;
    // The dead endpoint failed once, was retried past, and then left alone.
    for line in [
        "portcullis_upstream_retries_total{reason=\"connect_failure\",route=\"default/orders\"} 1",
        "portcullis_upstream_ejections_total{",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

#[tokio::test]
async fn every_part_of_one_request_joins_one_trace() {
    let (a, b) = (echo("a").await, echo("b").await);
    let yaml = bff(
        "web",
        "2026-01-01T00:00:00Z",
        &format!(
            "  client: web\n  hosts: [web.test]\n  endpoints:\n\
             \x20 - path: /home\n    aggregate: {{parts: [{{name: a, address: '{a}', path: /a}}, {{name: b, address: '{b}', path: /b}}]}}\n"
        ),
    );
    let gw = TestGateway::start(&yaml).await;
    // A request id that cannot be a trace id, and no trace context: the trace is new.
    let answer = get(
        &gw.url("/home"),
        &[("host", "web.test"), ("x-request-id", "req-1")],
    )
    .await;
    assert_eq!(answer.status, 200);
    let trace = |part: &str| {
        let tp = answer.json()[part]["headers"]["traceparent"][0]
            .as_str()
            .unwrap()
            .to_string();
        tp[3..35].to_string()
    };
    assert_eq!(trace("a"), trace("b"));
}

#[tokio::test]
async fn an_http2_pass_through_reaches_the_backend_as_a_route_would() {
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    let users = echo("users").await;
    let yaml = bff(
        "web",
        "2026-01-01T00:00:00Z",
        &format!(
            "  client: web\n  pathPrefix: /web\n  endpoints:\n\
             \x20 - path: /me\n    passThrough: {{address: '{users}'}}\n"
        ),
    );
    let gw = TestGateway::start(&yaml).await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = http::Request::get(gw.url("/web/me"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let json: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    // The host the client asked for (its :authority), not the backend's address.
    assert_eq!(
        json["headers"]["host"],
        serde_json::json!([gw.addr.to_string()])
    );
    assert_eq!(json["headers"]["cookie"], serde_json::json!(["a=1; b=2"]));
}
