//! End-to-end tests against a real Kubernetes API server, with objects applied by
//! kubectl and the gateway running under its least-privilege ServiceAccount.
//!
//! Run through `sudo bash e2e/run.sh`, which starts the control plane in a private
//! network namespace; the backends listen on that namespace's addresses.

#[path = "../common/pki.rs"]
mod pki;
mod support;
mod upstream;

use std::time::{Duration, Instant};
use support::*;

const CONVERGE: Duration = Duration::from_secs(15);

async fn status_is(ns: &str, name: &str, type_: &str, status: &str, reason: &str) {
    eventually(
        &format!("{name} {type_}={status} ({reason})"),
        CONVERGE,
        async || condition(ns, name, type_).is_some_and(|c| c.0 == status && c.1 == reason),
    )
    .await;
}

async fn served_by(gw: &Gateway, host: &str, path: &str, want: &str) {
    let url = gw.url(path);
    eventually(
        &format!("{host}{path} served by {want}"),
        CONVERGE,
        async || {
            get(&url, host)
                .await
                .is_some_and(|(s, name, _)| s == 200 && name == want)
        },
    )
    .await;
}

async fn status_code(gw: &Gateway, host: &str, path: &str, want: u16) {
    let url = gw.url(path);
    eventually(
        &format!("{host}{path} answering {want}"),
        CONVERGE,
        async || get(&url, host).await.is_some_and(|(s, _, _)| s == want),
    )
    .await;
}

#[tokio::test]
async fn routes_become_traffic_and_report_status() {
    let env = env();
    let ns = Namespace::new("e2e-basic");
    let a = backend(env.backends[0], "a").await;
    apply_service(&ns.0, "web", &[a]);
    apply(&route(&ns.0, "web", "  hosts: [shop.example.com]\n  rules:\n  - backends: [{service: {name: web, port: http}}]\n"));
    let gw = Gateway::start(&ns.0).await;

    served_by(&gw, "shop.example.com", "/anything", "a").await;
    for type_ in ["Accepted", "ResolvedRefs", "Programmed"] {
        let reason = if type_ == "Accepted" {
            "Accepted"
        } else {
            type_
        };
        status_is(&ns.0, "web", type_, "True", reason).await;
        assert_eq!(
            condition(&ns.0, "web", type_).unwrap().3,
            1,
            "observedGeneration"
        );
    }
    // The printer columns show the conditions.
    let (_, table, _) = kubectl(&["-n", &ns.0, "get", "routes"], None);
    assert!(
        table.contains("ACCEPTED") && table.contains("True"),
        "{table}"
    );

    // A change of spec is served and observed as generation 2.
    apply(&route(
        &ns.0,
        "web",
        "  hosts: [shop.example.com]\n  rules:\n  - matches: [{path: {value: /v2}}]\n    backends: [{service: {name: web, port: 80}}]\n",
    ));
    status_code(&gw, "shop.example.com", "/anything", 404).await;
    served_by(&gw, "shop.example.com", "/v2/x", "a").await;
    eventually("observedGeneration 2", CONVERGE, async || {
        condition(&ns.0, "web", "Programmed").is_some_and(|c| c.3 == 2)
    })
    .await;
    gw.stop().await;
}

/// examples/saas as a user applies it; the e2e backends stand in for its Deployments,
/// which nothing runs here.
#[tokio::test]
async fn the_saas_example_serves_web_and_mobile() {
    let env = env();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/saas");
    let (ok, out, err) = kubectl(&["apply", "-f", dir.to_str().unwrap()], None);
    assert!(ok, "{out}{err}");
    let ns = Namespace("acme".to_string());
    for (i, svc) in ["users", "orders", "notifications"].into_iter().enumerate() {
        let addr = backend(env.backends[i], svc).await;
        apply(&slice(&ns.0, &format!("{svc}-e2e"), svc, &[addr]));
    }
    let gw = Gateway::start(&ns.0).await;

    // Each client's prefix goes; the service sees its own path and who called.
    let clients = [
        ("www.acme.example", "/api", "web"),
        ("mobile.acme.example", "/v1", "mobile"),
    ];
    for (host, prefix, client) in clients {
        for (service, rest) in [
            ("users", "/42"),
            ("orders", "/7/items"),
            ("notifications", ""),
        ] {
            let path = format!("{prefix}/{service}{rest}");
            served_by(&gw, host, &path, service).await;
            let (_, _, body) = get(&gw.url(&path), host).await.unwrap();
            let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(echoed["path"], format!("/{service}{rest}"), "{host}{path}");
            assert_eq!(
                echoed["headers"]["x-acme-client"][0], client,
                "{host}{path}"
            );
        }
    }
    status_code(&gw, "mobile.acme.example", "/v0/users/42", 308).await;
    status_code(&gw, "www.acme.example", "/v1/users/42", 404).await;
    for route in ["web", "mobile"] {
        status_is(&ns.0, route, "Programmed", "True", "Programmed").await;
        status_is(&ns.0, route, "ResolvedRefs", "True", "ResolvedRefs").await;
    }
    for policy in ["mobile-limits", "web-browsers"] {
        policy_status_is(&ns.0, policy, "Accepted", "True", "Accepted").await;
        policy_status_is(&ns.0, policy, "Programmed", "True", "Programmed").await;
    }

    // The BFFs: one request per home screen, shaped for each client.
    for bff in ["web", "mobile"] {
        for (type_, reason) in [
            ("Accepted", "Accepted"),
            ("ResolvedRefs", "ResolvedRefs"),
            ("Programmed", "Programmed"),
        ] {
            eventually(&format!("BFF {bff} {type_}=True"), CONVERGE, async || {
                condition_of("bff", &ns.0, bff, type_)
                    .is_some_and(|c| c.0 == "True" && c.1 == reason && c.3 == 1)
            })
            .await;
        }
    }
    status_code(&gw, "www.acme.example", "/bff/home/42", 200).await;
    let (_, _, body) = get(&gw.url("/bff/home/42"), "www.acme.example")
        .await
        .unwrap();
    let web: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(web["user"]["path"], "/users/42", "{web}");
    assert_eq!(web["orders"]["query"], "owner=42");
    assert_eq!(web["notifications"]["path"], "/notifications/42");
    assert_eq!(web["user"]["headers"]["x-portcullis-client"][0], "web");
    status_code(&gw, "mobile.acme.example", "/bff/home/42", 200).await;
    let (_, _, body) = get(&gw.url("/bff/home/42"), "mobile.acme.example")
        .await
        .unwrap();
    let mobile: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        mobile,
        serde_json::json!({
            "user": {"name": "users", "path": "/users/42"},
            "orders": {"name": "orders", "query": "owner=42"},
            "notifications": {"name": "notifications"},
        })
    );
    served_by(&gw, "www.acme.example", "/bff/users/7", "users").await;

    // A BFF naming a Service that does not exist says which part, and where.
    apply(&format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: BFF\nmetadata: {{name: admin, namespace: acme}}\n\
         spec:\n  client: admin\n  hosts: [admin.acme.example]\n  endpoints:\n\
         \x20 - path: /overview\n    aggregate:\n      parts:\n\
         \x20     - {{name: user, service: {{name: users, port: http}}, path: /users/1}}\n\
         \x20     - {{name: prices, service: {{name: prices, port: http}}, path: /prices}}\n"
    ));
    eventually("BFF admin ResolvedRefs=False", CONVERGE, async || {
        condition_of("bff", &ns.0, "admin", "ResolvedRefs").is_some_and(|c| {
            c.0 == "False"
                && c.1 == "BackendNotFound"
                && c.2
                    == "spec.endpoints[0].aggregate.parts[1].service: Service acme/prices not found"
        })
    })
    .await;
    status_code(&gw, "admin.acme.example", "/overview", 502).await;
    gw.stop().await;
}

#[tokio::test]
async fn certificates_come_from_secrets_and_follow_their_renewal() {
    let env = env();
    let ns = Namespace::new("e2e-tls");
    let a = backend(env.backends[0], "a").await;
    apply_service(&ns.0, "web", &[a]);
    apply(&route(
        &ns.0,
        "web",
        "  hosts: [secure.example.com]\n  tls:\n    certificateRef: {name: web-tls}\n  \
         rules:\n  - backends: [{service: {name: web, port: http}}]\n",
    ));
    let gw = Gateway::start(&ns.0).await;

    // Until the Secret exists the Route says so, and plain HTTP still serves.
    status_is(
        &ns.0,
        "web",
        "ResolvedRefs",
        "False",
        "InvalidCertificateRef",
    )
    .await;
    let (_, _, message, _) = condition(&ns.0, "web", "ResolvedRefs").unwrap();
    assert!(
        message.contains("Secret e2e-tls/web-tls not found"),
        "{message}"
    );
    served_by(&gw, "secure.example.com", "/", "a").await;
    assert!(pki::connect(
        gw.tls_addr,
        "secure.example.com",
        pki::Pki::new("x").roots(),
        None
    )
    .await
    .is_err());

    let ca = pki::Pki::new("E2E CA");
    let v1 = ca.leaf(&["secure.example.com"]);
    apply(&tls_secret(&ns.0, "web-tls", &v1.crt, &v1.key));
    status_is(&ns.0, "web", "ResolvedRefs", "True", "ResolvedRefs").await;
    let open = pki::connect(gw.tls_addr, "secure.example.com", ca.roots(), None)
        .await
        .unwrap();
    assert_eq!(pki::served_der(&open), v1.der);
    let mut open = https(open).await;
    assert_eq!(
        https_status(&mut open, "secure.example.com").await,
        Some(200)
    );

    // cert-manager renews by rewriting the Secret: new handshakes get the new
    // certificate, the open connection carries on.
    let v2 = ca.leaf(&["secure.example.com"]);
    apply(&tls_secret(&ns.0, "web-tls", &v2.crt, &v2.key));
    let roots = ca.roots();
    eventually(
        "the renewed certificate is served",
        CONVERGE,
        async || match pki::connect(gw.tls_addr, "secure.example.com", roots.clone(), None).await {
            Ok(s) => pki::served_der(&s) == v2.der,
            Err(_) => false,
        },
    )
    .await;
    assert_eq!(
        https_status(&mut open, "secure.example.com").await,
        Some(200)
    );
    assert!(
        gw.metric("portcullis_tls_certificate_not_after_seconds{secret=\"e2e-tls/web-tls\"}")
            .await
            > 0.0
    );
    gw.stop().await;
}

type HttpsSender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

async fn https(stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> HttpsSender {
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn https_status(sender: &mut HttpsSender, host: &str) -> Option<u16> {
    let req = http::Request::get("/")
        .header("host", host)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    sender.ready().await.ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .ok()?
        .ok()?;
    Some(resp.status().as_u16())
}

async fn policy_status_is(ns: &str, name: &str, type_: &str, status: &str, reason: &str) {
    eventually(
        &format!("Policy {name} {type_}={status} ({reason})"),
        CONVERGE,
        async || {
            condition_of("policy", ns, name, type_).is_some_and(|c| c.0 == status && c.1 == reason)
        },
    )
    .await;
}

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}")
}

#[tokio::test]
async fn a_policy_protects_its_route_and_reports_conflicts() {
    let env = env();
    let ns = Namespace::new("e2e-policy");
    let a = backend(env.backends[0], "a").await;
    apply_service(&ns.0, "web", &[a]);
    apply(&route(&ns.0, "web", "  hosts: [web.example.com]\n  rules:\n  - backends: [{service: {name: web, port: http}}]\n"));
    let gw = Gateway::start(&ns.0).await;
    served_by(&gw, "web.example.com", "/", "a").await;

    // The test client reaches the gateway from loopback.
    apply(&policy(
        &ns.0,
        "no-loopback",
        "  targetRefs: [{kind: Route, name: web}]\n  ipAccess: {deny: [127.0.0.0/8]}\n",
    ));
    status_code(&gw, "web.example.com", "/", 403).await;
    policy_status_is(&ns.0, "no-loopback", "Accepted", "True", "Accepted").await;
    policy_status_is(&ns.0, "no-loopback", "Programmed", "True", "Programmed").await;

    // A newer Policy setting the same section loses, and says why.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    apply(&policy(
        &ns.0,
        "loopback",
        "  targetRefs: [{kind: Route, name: web}, {kind: Route, name: nowhere}]\n  ipAccess: {allow: [127.0.0.0/8]}\n",
    ));
    policy_status_is(&ns.0, "loopback", "Accepted", "False", "Conflicted").await;
    let (_, _, message, _) = condition_of("policy", &ns.0, "loopback", "Accepted").unwrap();
    assert!(
        message.contains("already has ipAccess from Policy e2e-policy/no-loopback"),
        "{message}"
    );
    policy_status_is(&ns.0, "loopback", "ResolvedRefs", "False", "TargetNotFound").await;
    status_code(&gw, "web.example.com", "/", 403).await;

    // The API server itself refuses a Policy without targets.
    let (ok, _, err) = kubectl(
        &["apply", "-f", "-"],
        Some(&policy(
            &ns.0,
            "empty",
            "  targetRefs: []\n  ipAccess: {deny: [10.0.0.0/8]}\n",
        )),
    );
    assert!(!ok && err.contains("targetRefs"), "{err}");

    // Deleting the older Policy lets the newer one's section apply.
    let (ok, _, err) = kubectl(&["-n", &ns.0, "delete", "policy", "no-loopback"], None);
    assert!(ok, "{err}");
    served_by(&gw, "web.example.com", "/", "a").await;
    policy_status_is(&ns.0, "loopback", "Accepted", "True", "Accepted").await;
    gw.stop().await;
}

#[tokio::test]
async fn the_api_server_refuses_obviously_wrong_routes() {
    let ns = Namespace::new("e2e-schema");
    let cases = [
        ("  rules:\n  - backends: [{address: 'a:1', service: {name: s, port: 80}}]\n", "exactly one of address, addresses and service"),
        ("  rules:\n  - filters: {redirect: {statusCode: 200}}\n", "statusCode"),
        ("  hosts: ['bad host']\n  rules:\n  - backends: [{address: 'a:1'}]\n", "spec.hosts[0]"),
        ("  rules: []\n", "spec.rules"),
        ("  rules:\n  - matches: [{path: {type: Prefix, value: /}}]\n    backends: [{address: 'a:1'}]\n", "Unsupported value: \"Prefix\""),
    ];
    for (spec, message) in cases {
        let (ok, _, err) = kubectl(&["apply", "-f", "-"], Some(&route(&ns.0, "wrong", spec)));
        assert!(!ok, "accepted:\n{spec}");
        assert!(
            err.contains(message),
            "{spec}\nexpected {message:?} in: {err}"
        );
    }
}

#[tokio::test]
async fn a_bad_route_is_isolated_and_reported() {
    let env = env();
    let ns = Namespace::new("e2e-isolation");
    let a = backend(env.backends[0], "a").await;
    apply_service(&ns.0, "web", &[a]);
    apply(&route(&ns.0, "good", "  hosts: [good.example.com]\n  rules:\n  - backends: [{service: {name: web, port: http}}]\n"));
    // Valid for the schema, refused by the compile step: a path that would never match.
    apply(&route(
        &ns.0,
        "bad",
        "  hosts: [bad.example.com]\n  rules:\n  - matches: [{path: {value: /a/../b}}]\n    backends: [{service: {name: web, port: http}}]\n",
    ));
    apply(&route(&ns.0, "lost", "  hosts: [lost.example.com]\n  rules:\n  - backends: [{service: {name: nowhere, port: 80}}]\n"));
    let gw = Gateway::start(&ns.0).await;

    served_by(&gw, "good.example.com", "/", "a").await;
    status_code(&gw, "bad.example.com", "/b", 404).await;
    status_is(&ns.0, "bad", "Accepted", "False", "Invalid").await;
    status_is(&ns.0, "bad", "Programmed", "False", "NotProgrammed").await;
    let (_, _, message, _) = condition(&ns.0, "bad", "Accepted").unwrap();
    assert!(
        message.starts_with("spec.rules[0].matches[0].path.value:"),
        "{message}"
    );

    // A Service that does not exist: accepted, not resolved, and 503.
    status_is(&ns.0, "lost", "ResolvedRefs", "False", "BackendNotFound").await;
    status_code(&gw, "lost.example.com", "/", 503).await;

    // The rejection is also an Event on the Route.
    eventually("a warning event", CONVERGE, async || {
        let (_, out, _) = kubectl(
            &[
                "-n",
                &ns.0,
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=bad",
            ],
            None,
        );
        out.contains("Invalid")
    })
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn the_older_route_wins_a_conflict_on_every_start() {
    let env = env();
    let ns = Namespace::new("e2e-conflict");
    let (a, b) = (
        backend(env.backends[0], "a").await,
        backend(env.backends[1], "b").await,
    );
    apply(&format!(
        "{}---\n{}---\n{}---\n{}",
        service(&ns.0, "sa"),
        slice(&ns.0, "sa-1", "sa", &[a]),
        service(&ns.0, "sb"),
        slice(&ns.0, "sb-1", "sb", &[b])
    ));
    let spec = |svc: &str| {
        format!("  hosts: [c.example.com]\n  rules:\n  - matches: [{{path: {{value: /}}}}]\n    backends: [{{service: {{name: {svc}, port: http}}}}]\n")
    };
    // "zzz" is older; "aaa" would win on name alone.
    apply(&route(&ns.0, "zzz", &spec("sa")));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    apply(&route(&ns.0, "aaa", &spec("sb")));

    for _ in 0..2 {
        let gw = Gateway::start(&ns.0).await;
        served_by(&gw, "c.example.com", "/", "a").await;
        status_is(&ns.0, "aaa", "Accepted", "False", "Conflicted").await;
        status_is(&ns.0, "zzz", "Accepted", "True", "Accepted").await;
        let message = condition(&ns.0, "aaa", "Accepted").unwrap().2;
        assert!(message.contains("e2e-conflict/zzz"), "{message}");
        gw.stop().await;
    }
}

#[tokio::test]
async fn endpoint_changes_are_followed() {
    let env = env();
    let ns = Namespace::new("e2e-endpoints");
    let (a, b) = (
        backend(env.backends[0], "a").await,
        backend(env.backends[1], "b").await,
    );
    apply_service(&ns.0, "web", &[a]);
    apply(&route(
        &ns.0,
        "web",
        "  rules:\n  - backends: [{service: {name: web, port: http}}]\n",
    ));
    let gw = Gateway::start(&ns.0).await;
    served_by(&gw, "x", "/", "a").await;

    // Scaled to zero: 503.
    apply(&slice(&ns.0, "web-1", "web", &[]));
    status_code(&gw, "x", "/", 503).await;

    // A new endpoint in a new slice (slices carry their own ports) gets the traffic.
    apply(&slice(&ns.0, "web-2", "web", &[b]));
    served_by(&gw, "x", "/", "b").await;
    gw.stop().await;
}

#[tokio::test]
async fn a_restarted_gateway_serves_the_same_and_rewrites_nothing() {
    let env = env();
    let ns = Namespace::new("e2e-restart");
    let a = backend(env.backends[0], "a").await;
    apply_service(&ns.0, "web", &[a]);
    apply(&route(
        &ns.0,
        "web",
        "  rules:\n  - backends: [{service: {name: web, port: http}}]\n",
    ));
    let gw = Gateway::start(&ns.0).await;
    served_by(&gw, "x", "/", "a").await;
    status_is(&ns.0, "web", "Programmed", "True", "Programmed").await;
    gw.stop().await;
    let version = resource_version(&ns.0, "route", "web");

    let gw = Gateway::start(&ns.0).await;
    served_by(&gw, "x", "/", "a").await;
    // Give a new leader time to acquire the lease and look at the status.
    eventually("leadership", Duration::from_secs(30), async || {
        lease_holder(&ns.0) == gw.identity
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        resource_version(&ns.0, "route", "web"),
        version,
        "status was written again"
    );
    assert_eq!(gw.metric("portcullis_status_writes_total").await, 0.0);
    gw.stop().await;
}

#[tokio::test]
async fn two_replicas_serve_and_exactly_one_writes_status() {
    let env = env();
    let ns = Namespace::new("e2e-replicas");
    let a = backend(env.backends[0], "a").await;
    apply_service(&ns.0, "web", &[a]);
    let one = Gateway::start(&ns.0).await;
    let two = Gateway::start(&ns.0).await;
    for i in 0..3 {
        apply(&route(&ns.0, &format!("r{i}"), &format!("  hosts: [r{i}.example.com]\n  rules:\n  - backends: [{{service: {{name: web, port: http}}}}]\n")));
    }
    for i in 0..3 {
        served_by(&one, &format!("r{i}.example.com"), "/", "a").await;
        served_by(&two, &format!("r{i}.example.com"), "/", "a").await;
        status_is(&ns.0, &format!("r{i}"), "Programmed", "True", "Programmed").await;
    }
    let (w1, w2) = (
        one.metric("portcullis_status_writes_total").await,
        two.metric("portcullis_status_writes_total").await,
    );
    assert!((w1 > 0.0) != (w2 > 0.0), "writes: {w1} and {w2}");
    let holder = lease_holder(&ns.0);
    let (leader, follower) = if w1 > 0.0 { (one, two) } else { (two, one) };
    assert_eq!(holder, leader.identity);

    // The follower takes over when the leader goes, and writes the next change.
    leader.stop().await;
    apply(&route(&ns.0, "late", "  hosts: [late.example.com]\n  rules:\n  - backends: [{service: {name: web, port: http}}]\n"));
    served_by(&follower, "late.example.com", "/", "a").await;
    eventually(
        "the follower writes status",
        Duration::from_secs(40),
        async || condition(&ns.0, "late", "Programmed").is_some_and(|c| c.0 == "True"),
    )
    .await;
    assert!(follower.metric("portcullis_status_writes_total").await > 0.0);
    follower.stop().await;
}

#[tokio::test]
async fn not_ready_until_synced() {
    let env = env();
    let ns = Namespace::new("e2e-ready");
    // A kubeconfig whose server does not answer: the caches never sync.
    let text = std::fs::read_to_string(&env.gateway_kubeconfig).unwrap();
    let server = text
        .lines()
        .find(|l| l.trim_start().starts_with("server:"))
        .unwrap()
        .trim()
        .to_string();
    let broken = env.dir.join("broken.kubeconfig");
    std::fs::write(
        &broken,
        text.replace(&server, "server: https://127.0.0.1:1"),
    )
    .unwrap();
    let gw = Gateway::start_with(&ns.0, &broken, false).await;
    let admin = gw.admin;
    for _ in 0..10 {
        assert_eq!(
            get(&format!("http://{admin}/readyz"), "x").await.unwrap().0,
            503
        );
        assert_eq!(
            get(&format!("http://{admin}/healthz"), "x")
                .await
                .unwrap()
                .0,
            200
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn keeps_serving_while_the_api_server_is_down() {
    let env = env();
    let ns = Namespace::new("e2e-outage");
    let a = backend(env.backends[0], "a").await;
    apply_service(&ns.0, "web", &[a]);
    apply(&route(&ns.0, "web", "  rules:\n  - matches: [{path: {value: /one}}]\n    backends: [{service: {name: web, port: http}}]\n"));
    let gw = Gateway::start(&ns.0).await;
    served_by(&gw, "x", "/one", "a").await;

    let cp = |cmd: &str| {
        let status = std::process::Command::new("bash")
            .args(["e2e/controlplane.sh", cmd])
            .arg(&env.dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "controlplane.sh {cmd}");
    };
    cp("stop-apiserver");
    for _ in 0..10 {
        let (s, name, _) = get(&gw.url("/one"), "x")
            .await
            .expect("answered while the API server is down");
        assert_eq!((s, name.as_str()), (200, "a"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cp("start-apiserver");
    // Caught up: a change made after the outage is served.
    apply(&route(&ns.0, "web", "  rules:\n  - matches: [{path: {value: /two}}]\n    backends: [{service: {name: web, port: http}}]\n"));
    eventually(
        "the change after the outage",
        Duration::from_secs(60),
        async || {
            get(&gw.url("/two"), "x")
                .await
                .is_some_and(|(s, n, _)| s == 200 && n == "a")
        },
    )
    .await;
    gw.stop().await;
}

/// Prints how long a Route change takes from `kubectl apply` to being served, over 100
/// changes. Asserts only that every change is served.
#[tokio::test]
async fn convergence_figures() {
    let env = env();
    let ns = Namespace::new("e2e-convergence");
    let a = backend(env.backends[0], "a").await;
    apply_service(&ns.0, "web", &[a]);
    let spec = |i: usize| {
        format!(
            "  rules:\n  - filters: {{responseHeaders: {{set: [{{name: x-version, value: 'v{i}'}}]}}}}\n    backends: [{{service: {{name: web, port: http}}}}]\n"
        )
    };
    apply(&route(&ns.0, "web", &spec(0)));
    let gw = Gateway::start(&ns.0).await;
    served_by(&gw, "x", "/", "a").await;

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut times = Vec::new();
    for i in 1..=100 {
        apply(&route(&ns.0, "web", &spec(i)));
        let start = Instant::now();
        let want = format!("v{i}");
        loop {
            let resp = client.get(gw.url("/").parse().unwrap()).await.unwrap();
            if resp
                .headers()
                .get("x-version")
                .is_some_and(|v| v == want.as_str())
            {
                break;
            }
            assert!(start.elapsed() < CONVERGE, "change {i} not served");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "convergence over {} changes: p50 {:?}, p99 {:?}, max {:?}",
        times.len(),
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1]
    );
    gw.stop().await;
}

/// Prints start-to-ready time, resident memory and the time one change takes, with
/// 10,000 Routes and 50,000 endpoints. Asserts only that the gateway gets ready, serves
/// and applies the change.
#[tokio::test]
async fn scale_figures() {
    use futures_util::{stream, StreamExt};
    use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
    use kube::api::{Api, PostParams};

    const ROUTES: usize = 10_000;
    const SERVICES: usize = 500;
    const PER_SLICE: usize = 100;
    let env = env();
    let ns = Namespace::new("e2e-scale");
    let name = ns.0.as_str();
    let client = admin_client().await;
    let a = backend(env.backends[0], "a").await;

    let start = Instant::now();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.0);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns.0);
    let routes: Api<portcullis::k8s::api::Route> = Api::namespaced(client.clone(), &ns.0);
    let pp = PostParams::default();
    stream::iter(0..SERVICES)
        .for_each_concurrent(16, |i| {
            let (services, slices, pp) = (services.clone(), slices.clone(), pp.clone());
            async move {
                let svc: Service =
                    serde_norway::from_str(&service(name, &format!("s{i}"))).unwrap();
                services.create(&pp, &svc).await.unwrap();
                // Service 0 leads to the real backend; the others list addresses that
                // nothing ever sends to.
                let addrs: Vec<std::net::SocketAddr> = if i == 0 {
                    vec![a]
                } else {
                    (0..PER_SLICE)
                        .map(|j| format!("10.78.{}.{}:8080", i % 250, j + 1).parse().unwrap())
                        .collect()
                };
                let s: EndpointSlice = serde_norway::from_str(&slice(
                    name,
                    &format!("s{i}-1"),
                    &format!("s{i}"),
                    &addrs,
                ))
                .unwrap();
                slices.create(&pp, &s).await.unwrap();
            }
        })
        .await;
    stream::iter(0..ROUTES)
        .for_each_concurrent(16, |i| {
            let (routes, pp) = (routes.clone(), pp.clone());
            let svc = i % SERVICES;
            let path = if i % 5 == 1 { "RegularExpression, value: '/api/v[0-9]+/items'" } else { "PathPrefix, value: /api" };
            let yaml = route(
                name,
                &format!("r{i}"),
                &format!("  hosts: [r{i}.example.com]\n  rules:\n  - matches: [{{path: {{type: {path}}}}}]\n    backends: [{{service: {{name: s{svc}, port: http}}}}]\n"),
            );
            async move {
                let r: portcullis::k8s::api::Route = serde_norway::from_str(&yaml).unwrap();
                routes.create(&pp, &r).await.unwrap();
            }
        })
        .await;
    let created = start.elapsed();

    let start = Instant::now();
    let gw = Gateway::start(&ns.0).await;
    let ready = start.elapsed();
    served_by(&gw, "r0.example.com", "/api/x", "a").await;
    let rss = std::fs::read_to_string(format!("/proc/{}/status", gw.child.id().unwrap()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .unwrap();

    // One change among 10,000 Routes: a new path on r0.
    apply(&route(&ns.0, "r0", "  hosts: [r0.example.com]\n  rules:\n  - matches: [{path: {value: /changed}}]\n    backends: [{service: {name: s0, port: http}}]\n"));
    let start = Instant::now();
    served_by(&gw, "r0.example.com", "/changed", "a").await;
    let change = start.elapsed();
    println!(
        "scale: {ROUTES} Routes, {} endpoints: created in {created:?}; start to ready {ready:?}; \
         resident memory {} MiB; one change served after {change:?}",
        (SERVICES - 1) * PER_SLICE + 1,
        rss / 1024
    );
    gw.stop().await;
}

async fn admin_client() -> kube::Client {
    let env = env();
    let kubeconfig = kube::config::Kubeconfig::read_from(&env.admin_kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}
