//! Table-driven tests of the compile step and of routing precedence.

use super::*;
use crate::{
    config::{Meta, Resources},
    routing::{normalize_host, RequestView},
};
use http::{HeaderMap, Method};

fn mk_route(ns: &str, name: &str, created: Option<&str>, yaml: &str) -> Resource<RouteSpec> {
    Resource {
        meta: Meta {
            name: name.into(),
            namespace: ns.into(),
            creation_timestamp: created.map(str::to_string),
            generation: None,
        },
        spec: serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("bad test yaml: {e}\n{yaml}")),
    }
}

fn mk_resources(routes: Vec<Resource<RouteSpec>>) -> Resources {
    Resources {
        routes,
        ..Default::default()
    }
}

/// A request described as "METHOD host path?query" plus headers.
struct Req<'a> {
    line: &'a str,
    headers: &'a [(&'a str, &'a str)],
}

/// Returns "namespace/name#rule" of the rule chosen, or "404".
fn route_of(snapshot: &Snapshot, req: &Req<'_>) -> String {
    let mut parts = req.line.splitn(3, ' ');
    let method = Method::from_bytes(parts.next().unwrap().as_bytes()).unwrap();
    let host = normalize_host(parts.next().unwrap()).unwrap();
    let target = parts.next().unwrap();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut headers = HeaderMap::new();
    for (k, v) in req.headers {
        headers.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let view = RequestView {
        host: &host,
        path,
        method: &method,
        headers: &headers,
        query,
    };
    match snapshot.router.lookup(&view) {
        Some(m) => format!("{}#{}", m.action.route, m.action.rule),
        None => "404".into(),
    }
}

/// (request line, headers, expected rule)
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

fn assert_routes(snapshot: &Snapshot, cases: &[Case<'_>]) {
    for (line, headers, want) in cases {
        let got = route_of(snapshot, &Req { line, headers });
        assert_eq!(&got, want, "request {line:?} with headers {headers:?}");
    }
}

const B: &str = "backends: [{address: '127.0.0.1:1'}]";

#[test]
fn hosts_exact_wildcard_and_any() {
    let snap = compile(
        &mk_resources(vec![
            mk_route(
                "ns",
                "exact",
                None,
                &format!("{{hosts: [api.example.com], rules: [{{{B}}}]}}"),
            ),
            mk_route(
                "ns",
                "wild",
                None,
                &format!("{{hosts: ['*.example.com'], rules: [{{{B}}}]}}"),
            ),
            mk_route(
                "ns",
                "deeper",
                None,
                &format!("{{hosts: ['*.eu.example.com'], rules: [{{{B}}}]}}"),
            ),
            mk_route(
                "ns",
                "any",
                None,
                &format!("{{rules: [{{matches: [{{path: {{value: /only}}}}], {B}}}]}}"),
            ),
        ]),
        None,
    );
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
    assert_routes(
        &snap,
        &[
            ("GET api.example.com /", &[], "ns/exact#0"),
            ("GET API.Example.COM /", &[], "ns/exact#0"),
            ("GET api.example.com:8080 /", &[], "ns/exact#0"),
            ("GET api.example.com. /", &[], "ns/exact#0"),
            ("GET www.example.com /", &[], "ns/wild#0"),
            ("GET a.b.example.com /", &[], "ns/wild#0"),
            ("GET x.eu.example.com /", &[], "ns/deeper#0"),
            ("GET example.com /", &[], "404"),
            ("GET example.com /only", &[], "ns/any#0"),
            ("GET notexample.com /", &[], "404"),
            // A more specific host without a matching rule falls through to the next.
            ("GET api.example.com /only", &[], "ns/exact#0"),
        ],
    );
}

#[test]
fn path_kinds_and_precedence() {
    let snap = compile(
        &mk_resources(vec![mk_route(
            "ns",
            "r",
            None,
            &format!(
                "rules:
                 - {{matches: [{{path: {{type: PathPrefix, value: /}}}}], {B}}}
                 - {{matches: [{{path: {{type: PathPrefix, value: /api}}}}], {B}}}
                 - {{matches: [{{path: {{type: PathPrefix, value: /api/v1/}}}}], {B}}}
                 - {{matches: [{{path: {{type: Exact, value: /api/v1/users}}}}], {B}}}
                 - {{matches: [{{path: {{type: RegularExpression, value: '/api/v[0-9]+/items/[0-9]+'}}}}], {B}}}
                 - {{matches: [{{path: {{type: RegularExpression, value: '/api/.*'}}}}], {B}}}
                 "
            ),
        )]),
        None,
    );
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
    assert_routes(
        &snap,
        &[
            ("GET h /", &[], "ns/r#0"),
            ("GET h /apix", &[], "ns/r#0"),
            // The regex `/api/.*` matches these and ranks above every prefix.
            ("GET h /api", &[], "ns/r#1"),
            ("GET h /api/", &[], "ns/r#5"),
            ("GET h /api/v1", &[], "ns/r#5"),
            ("GET h /api/v1/users", &[], "ns/r#3"),
            ("GET h /api/v1/users/", &[], "ns/r#5"),
            ("GET h /api/v2/items/7", &[], "ns/r#4"),
            ("GET h /api/v2/items/7x", &[], "ns/r#5"),
        ],
    );
}

#[test]
fn prefixes_match_whole_segments_longest_first() {
    let snap = compile(
        &mk_resources(vec![mk_route(
            "ns",
            "r",
            None,
            &format!(
                "rules:
                 - {{matches: [{{path: {{value: /api}}}}], {B}}}
                 - {{matches: [{{path: {{value: /api/v1}}}}], {B}}}
                 - {{matches: [{{path: {{value: /}}}}], {B}}}
                 "
            ),
        )]),
        None,
    );
    assert_routes(
        &snap,
        &[
            ("GET h /api", &[], "ns/r#0"),
            ("GET h /api/", &[], "ns/r#0"),
            ("GET h /api/x", &[], "ns/r#0"),
            ("GET h /apix", &[], "ns/r#2"),
            ("GET h /api/v1", &[], "ns/r#1"),
            ("GET h /api/v1/a/b", &[], "ns/r#1"),
            ("GET h /api/v10", &[], "ns/r#0"),
        ],
    );
}

#[test]
fn method_headers_query_and_tie_breakers() {
    let snap = compile(
        &mk_resources(vec![
            mk_route(
                "ns",
                "young",
                Some("2026-02-01T00:00:00Z"),
                &format!(
                    "rules:
                     - {{matches: [{{path: {{value: /x}}}}], {B}}}
                     - {{matches: [{{path: {{value: /x}}, method: GET}}], {B}}}
                     - {{matches: [{{path: {{value: /x}}, headers: [{{name: X-A, value: '1'}}]}}], {B}}}
                     - {{matches: [{{path: {{value: /x}}, headers: [{{name: x-a, value: '1'}}, {{name: x-b, type: RegularExpression, value: 'b[0-9]'}}]}}], {B}}}
                     - {{matches: [{{path: {{value: /x}}, queryParams: [{{name: v, value: '2'}}]}}], {B}}}
                     "
                ),
            ),
            mk_route(
                "ns",
                "old",
                Some("2026-01-01T00:00:00Z"),
                &format!("rules: [{{matches: [{{path: {{value: /y}}}}], {B}}}]"),
            ),
            mk_route(
                "ns",
                "older-by-name",
                Some("2026-03-01T00:00:00Z"),
                &format!("rules: [{{matches: [{{path: {{value: /y}}, method: POST}}], {B}}}]"),
            ),
        ]),
        None,
    );
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
    assert_routes(
        &snap,
        &[
            ("GET h /x", &[], "ns/young#1"),
            ("POST h /x", &[], "ns/young#0"),
            // A method outranks any number of headers.
            ("GET h /x", &[("x-a", "1"), ("x-b", "b1")], "ns/young#1"),
            ("PUT h /x", &[("x-a", "1")], "ns/young#2"),
            ("PUT h /x", &[("x-a", "1"), ("x-b", "b1")], "ns/young#3"),
            ("PUT h /x", &[("x-a", "1"), ("x-b", "b12")], "ns/young#2"),
            ("PUT h /x", &[("x-a", "2")], "ns/young#0"),
            ("PUT h /x?v=2", &[], "ns/young#4"),
            ("PUT h /x?v=2&v=3", &[], "ns/young#4"),
            ("PUT h /x?v=3&v=2", &[], "ns/young#0"),
            ("PUT h /x?v=%32", &[], "ns/young#4"),
            // Headers outrank query parameters.
            ("PUT h /x?v=2", &[("x-a", "1")], "ns/young#2"),
            ("POST h /y", &[], "ns/older-by-name#0"),
            ("GET h /y", &[], "ns/old#0"),
        ],
    );
}

#[test]
fn order_of_objects_does_not_change_the_result() {
    let mk = |order: &[usize]| {
        let all = [
            mk_route("a", "one", None, &format!("rules: [{{matches: [{{path: {{value: /p}}, headers: [{{name: x, value: '1'}}]}}], {B}}}]")),
            mk_route("b", "two", None, &format!("rules: [{{matches: [{{path: {{value: /p}}, headers: [{{name: y, value: '1'}}]}}], {B}}}]")),
            mk_route("a", "three", Some("2020-01-01T00:00:00Z"), &format!("rules: [{{matches: [{{path: {{value: /p}}, headers: [{{name: z, value: '1'}}]}}], {B}}}]")),
        ];
        compile(
            &mk_resources(order.iter().map(|&i| all[i].clone()).collect()),
            None,
        )
    };
    let headers: &[(&str, &str)] = &[("x", "1"), ("y", "1"), ("z", "1")];
    for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2], [1, 2, 0]] {
        // The oldest wins; among objects without a time, namespace then name.
        assert_eq!(
            route_of(
                &mk(&order),
                &Req {
                    line: "GET h /p",
                    headers
                }
            ),
            "a/three#0"
        );
        assert_eq!(
            route_of(
                &mk(&order),
                &Req {
                    line: "GET h /p",
                    headers: &headers[..2]
                }
            ),
            "a/one#0"
        );
    }
}

#[test]
fn conflicts_go_to_the_older_route() {
    let rules = format!("{{hosts: [a.example.com], rules: [{{matches: [{{path: {{value: /x}}, method: GET}}], {B}}}]}}");
    let older = mk_route("ns", "zzz", Some("2026-01-01T00:00:00Z"), &rules);
    let newer = mk_route("ns", "aaa", Some("2026-06-01T00:00:00Z"), &rules);
    for routes in [
        vec![older.clone(), newer.clone()],
        vec![newer.clone(), older.clone()],
    ] {
        let snap = compile(&mk_resources(routes), None);
        assert_eq!(
            route_of(
                &snap,
                &Req {
                    line: "GET a.example.com /x",
                    headers: &[]
                }
            ),
            "ns/zzz#0"
        );
        assert_eq!(snap.problems.len(), 1);
        let p = &snap.problems[0];
        assert_eq!(p.object.name, "aaa");
        assert_eq!(p.reason, Reason::Conflicted);
        assert_eq!(p.field, "spec.rules[0].matches[0]");
        assert!(p.message.contains("ns/zzz"), "{}", p.message);
    }
}

#[test]
fn one_bad_route_is_rejected_alone_with_field_paths() {
    let good = mk_route("ns", "good", None, &format!("rules: [{{{B}}}]"));
    let cases: &[(&str, &str, &str)] = &[
        ("rules: []", "spec.rules", "at least one rule"),
        (&format!("{{hosts: ['a b'], rules: [{{{B}}}]}}"), "spec.hosts[0]", "not a host name"),
        (&format!("{{hosts: ['x.*.com'], rules: [{{{B}}}]}}"), "spec.hosts[0]", "not a host name"),
        (&format!("{{hosts: ['a.com:80'], rules: [{{{B}}}]}}"), "spec.hosts[0]", "not a host name"),
        (&format!("rules: [{{matches: [{{path: {{value: 'api'}}}}], {B}}}]"), "spec.rules[0].matches[0].path.value", "start with"),
        (&format!("rules: [{{matches: [{{path: {{value: '/a/../b'}}}}], {B}}}]"), "spec.rules[0].matches[0].path.value", "write \"/b\""),
        (&format!("rules: [{{matches: [{{path: {{type: RegularExpression, value: '/a('}}}}], {B}}}]"), "spec.rules[0].matches[0].path.value", "regular expression"),
        (&format!("rules: [{{matches: [{{method: 'G T'}}], {B}}}]"), "spec.rules[0].matches[0].method", "not an HTTP method"),
        (&format!("rules: [{{matches: [{{headers: [{{name: 'bad name', value: x}}]}}], {B}}}]"), "spec.rules[0].matches[0].headers[0].name", "not a header name"),
        (&format!("rules: [{{matches: [{{queryParams: [{{name: q, type: RegularExpression, value: '['}}]}}], {B}}}]"), "spec.rules[0].matches[0].queryParams[0].value", "regular expression"),
        ("rules: [{matches: []}]", "spec.rules[0].backends", "at least one backend"),
        ("rules: [{backends: [{address: 'nope'}]}]", "spec.rules[0].backends[0].address", "host:port"),
        ("rules: [{backends: [{address: 'http://a:80/'}]}]", "spec.rules[0].backends[0].address", "host:port"),
        ("rules: [{backends: [{}]}]", "spec.rules[0].backends[0]", "exactly one of address, addresses and service"),
        ("rules: [{filters: {redirect: {statusCode: 200}}}]", "spec.rules[0].filters.redirect.statusCode", "301, 302"),
        ("rules: [{filters: {redirect: {scheme: ftp}}}]", "spec.rules[0].filters.redirect.scheme", "http or https"),
        (&format!("rules: [{{filters: {{redirect: {{}}}}, {B}}}]"), "spec.rules[0].backends", "no backends"),
        (&format!("rules: [{{filters: {{urlRewrite: {{path: {{}}}}}}, {B}}}]"), "spec.rules[0].filters.urlRewrite.path", "exactly one"),
        (&format!("rules: [{{matches: [{{path: {{type: Exact, value: /a}}}}], filters: {{urlRewrite: {{path: {{replacePrefixMatch: /b}}}}}}, {B}}}]"), "spec.rules[0].filters.urlRewrite.path.replacePrefixMatch", "PathPrefix"),
        (&format!("rules: [{{filters: {{requestHeaders: {{set: [{{name: x, value: \"a\\nb\"}}]}}}}, {B}}}]"), "spec.rules[0].filters.requestHeaders.set[0].value", "not a valid header value"),
        (&format!("rules: [{{maxRequestBodyBytes: 0, {B}}}]"), "spec.rules[0].maxRequestBodyBytes", "greater than 0"),
        (&format!("rules: [{{loadBalancer: {{type: ConsistentHash}}, {B}}}]"), "spec.rules[0].loadBalancer.hashOn", "needs hashOn"),
        (&format!("rules: [{{loadBalancer: {{hashOn: {{header: x}}}}, {B}}}]"), "spec.rules[0].loadBalancer.hashOn", "only for type ConsistentHash"),
        (&format!("rules: [{{loadBalancer: {{type: ConsistentHash, hashOn: {{header: x, cookie: y}}}}, {B}}}]"), "spec.rules[0].loadBalancer.hashOn", "exactly one of header"),
        (&format!("rules: [{{loadBalancer: {{type: ConsistentHash, hashOn: {{header: 'a b'}}}}, {B}}}]"), "spec.rules[0].loadBalancer.hashOn.header", "not a valid header name"),
        (&format!("rules: [{{loadBalancer: {{sessionCookie: {{name: 'a;b'}}}}, {B}}}]"), "spec.rules[0].loadBalancer.sessionCookie.name", "letters, digits"),
        ("rules: [{backends: [{address: 'a:1', maxPendingRequests: 5}]}]", "spec.rules[0].backends[0].maxPendingRequests", "needs maxConnections"),
        ("rules: [{backends: [{address: 'a:1', maxConnections: 0}]}]", "spec.rules[0].backends[0].maxConnections", "at least 1"),
        ("rules: [{backends: [{addresses: ['a:1', 'a:1']}]}]", "spec.rules[0].backends[0].addresses[1]", "listed twice"),
        ("rules: [{backends: [{addresses: ['a:1', 'b']}]}]", "spec.rules[0].backends[0].addresses[1]", "host:port"),
        ("rules: [{backends: [{address: 'a:1', healthCheck: {active: {path: 'x'}}}]}]", "spec.rules[0].backends[0].healthCheck.active.path", "absolute path"),
        ("rules: [{backends: [{address: 'a:1', healthCheck: {active: {path: /h, interval: 10ms}}}]}]", "spec.rules[0].backends[0].healthCheck.active.interval", "at least 100ms"),
        (&format!("rules: [{{retry: {{attempts: 11}}, {B}}}]"), "spec.rules[0].retry.attempts", "from 1 to 10"),
        (&format!("rules: [{{retry: {{attempts: 0}}, {B}}}]"), "spec.rules[0].retry.attempts", "from 1 to 10"),
        (&format!("rules: [{{retry: {{attempts: 2, budgetPercent: 150}}, {B}}}]"), "spec.rules[0].retry.budgetPercent", "from 1 to 100"),
        (&format!("rules: [{{retry: {{attempts: 2, statusCodes: [503, 200]}}, {B}}}]"), "spec.rules[0].retry.statusCodes[1]", "from 400 to 599"),
    ];
    for (yaml, field, text) in cases {
        let bad = mk_route("ns", "bad", None, yaml);
        let snap = compile(&mk_resources(vec![good.clone(), bad]), None);
        let problem = snap
            .problems
            .iter()
            .find(|p| p.field == *field)
            .unwrap_or_else(|| panic!("no problem at {field} for {yaml}; got {:?}", snap.problems));
        assert!(
            problem.message.contains(text),
            "{field}: {:?} lacks {text:?}",
            problem.message
        );
        assert_eq!(problem.object.name, "bad");
        assert!(problem.rejects());
        assert!(
            snap.routes.contains_key(&good.meta.key()),
            "the good route keeps serving"
        );
        assert!(
            !snap.routes.keys().any(|k| k.name == "bad"),
            "{yaml} should be rejected"
        );
    }
}

#[test]
fn every_problem_of_a_route_is_reported_at_once() {
    let bad = mk_route(
        "ns",
        "bad",
        None,
        "rules: [{matches: [{path: {value: 'x'}, method: 'G T', headers: [{name: 'a b', value: v}]}], backends: [{address: nope}]}]",
    );
    let snap = compile(&mk_resources(vec![bad]), None);
    let fields: Vec<&str> = snap.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.rules[0].backends[0].address",
            "spec.rules[0].matches[0].headers[0].name",
            "spec.rules[0].matches[0].method",
            "spec.rules[0].matches[0].path.value",
        ]
    );
}

#[test]
fn an_edit_that_conflicts_keeps_the_previous_version() {
    let path = |p: &str| format!("rules: [{{matches: [{{path: {{value: {p}}}}}], {B}}}]");
    let older = mk_route("ns", "older", Some("2026-01-01T00:00:00Z"), &path("/taken"));
    let v1 = mk_route("ns", "r", Some("2026-02-01T00:00:00Z"), &path("/mine"));
    let v2 = mk_route("ns", "r", Some("2026-02-01T00:00:00Z"), &path("/taken"));
    let first = compile(&mk_resources(vec![older.clone(), v1]), None);
    let second = compile(&mk_resources(vec![older, v2]), Some(&first));
    let served = |line| route_of(&second, &Req { line, headers: &[] });
    assert_eq!(served("GET h /mine"), "ns/r#0");
    assert_eq!(served("GET h /taken"), "ns/older#0");
    let conflicts: Vec<_> = second
        .problems
        .iter()
        .filter(|p| p.reason == Reason::Conflicted)
        .map(|p| p.object.name.as_str())
        .collect();
    assert_eq!(conflicts, ["r"]);
}

#[test]
fn a_rejected_edit_keeps_the_previous_version() {
    let v1 = mk_route(
        "ns",
        "r",
        None,
        &format!("rules: [{{matches: [{{path: {{value: /v1}}}}], {B}}}]"),
    );
    let v2 = mk_route(
        "ns",
        "r",
        None,
        "rules: [{matches: [{path: {value: v2}}], backends: []}]",
    );
    let first = compile(&mk_resources(vec![v1]), None);
    let second = compile(&mk_resources(vec![v2.clone()]), Some(&first));
    assert_eq!(
        route_of(
            &second,
            &Req {
                line: "GET h /v1",
                headers: &[]
            }
        ),
        "ns/r#0"
    );
    assert!(second.problems.iter().any(Problem::rejects));
    // Without a previous good version, nothing serves.
    let alone = compile(&mk_resources(vec![v2]), None);
    assert_eq!(
        route_of(
            &alone,
            &Req {
                line: "GET h /v1",
                headers: &[]
            }
        ),
        "404"
    );
}

#[test]
fn unresolved_services_are_served_with_503_and_reported() {
    let route = mk_route(
        "ns",
        "svc",
        None,
        "rules: [{backends: [{service: {name: users, port: 80}}]}]",
    );
    let mut resources = mk_resources(vec![route]);
    let snap = compile(&resources, None);
    assert_eq!(snap.problems.len(), 1);
    assert_eq!(snap.problems[0].reason, Reason::BackendNotFound);
    assert_eq!(snap.problems[0].field, "spec.rules[0].backends[0].service");
    assert!(!snap.problems[0].rejects());
    assert_eq!(
        route_of(
            &snap,
            &Req {
                line: "GET h /",
                headers: &[]
            }
        ),
        "ns/svc#0"
    );

    resources.services.insert(
        ObjectKey {
            namespace: "ns".into(),
            name: "users".into(),
        },
        config::ServiceEndpoints {
            ports: vec![config::ServicePort {
                name: Some("http".into()),
                port: 80,
                app_protocol: None,
                endpoints: vec![
                    "10.0.0.1:8080".parse().unwrap(),
                    "10.0.0.2:8080".parse().unwrap(),
                ],
            }],
        },
    );
    let snap = compile(&resources, None);
    assert!(snap.problems.is_empty(), "{:?}", snap.problems);
}

#[test]
fn compile_is_deterministic() {
    let routes: Vec<_> = (0..50)
        .map(|i| {
            mk_route(
                &format!("ns{}", i % 3),
                &format!("r{i}"),
                None,
                &format!("{{hosts: [h{}.example.com], rules: [{{matches: [{{path: {{value: /p{}}}}}], {B}}}]}}", i % 7, i % 5),
            )
        })
        .collect();
    let mut reversed = routes.clone();
    reversed.reverse();
    let a = compile(&mk_resources(routes), None);
    let b = compile(&mk_resources(reversed), None);
    assert_eq!(a.problems, b.problems);
    assert_eq!(
        a.routes.keys().collect::<Vec<_>>(),
        b.routes.keys().collect::<Vec<_>>()
    );
}

#[test]
fn upstream_state_outlives_a_recompile() {
    let yaml =
        "rules: [{backends: [{addresses: ['10.0.0.1:80', '10.0.0.2:80'], maxConnections: 4, \
                healthCheck: {active: {path: /healthz}}}], retry: {attempts: 2}}]";
    let route = mk_route("ns", "r", None, yaml);
    let first = compile(&mk_resources(vec![route.clone()]), None);
    let other = mk_route(
        "ns",
        "other",
        None,
        &format!("{{hosts: [x.example], rules: [{{{B}}}]}}"),
    );
    let second = compile(&mk_resources(vec![route, other]), Some(&first));
    let forward = |snap: &Snapshot| {
        let req = http::Request::get("/").body(()).unwrap();
        let view = crate::routing::RequestView {
            host: "any",
            path: "/",
            method: req.method(),
            headers: req.headers(),
            query: None,
        };
        let found = snap.router.lookup(&view).unwrap();
        match &found.action.kind {
            routing::ActionKind::Forward(f) => {
                let b = &f.backends.backends()[0];
                (
                    b.endpoints.clone(),
                    b.limiter.clone().unwrap(),
                    f.retry.as_ref().unwrap().budget.clone(),
                )
            }
            _ => unreachable!(),
        }
    };
    let (eps1, lim1, budget1) = forward(&first);
    let (eps2, lim2, budget2) = forward(&second);
    assert!(eps1.iter().zip(&eps2).all(|(a, b)| Arc::ptr_eq(a, b)));
    assert!(Arc::ptr_eq(&lim1, &lim2));
    assert!(Arc::ptr_eq(&budget1, &budget2));
    // Each endpoint is probed once.
    assert_eq!(second.upstreams.probes.len(), 2);
}
