//! Route lookup over 10,000 Routes: exact and wildcard hosts, prefixes, exact paths and
//! regular expressions. Prints the time of one lookup for several kinds of request, and
//! the time to compile all 10,000 Routes (what one configuration change costs).

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, Method};
use portcullis::{
    compile::compile,
    config::{Meta, Resource, Resources, RouteSpec},
    routing::RequestView,
};
use std::hint::black_box;

const ROUTES: usize = 10_000;

/// 10,000 Routes: 70 % on exact hosts, 20 % on wildcard hosts, 10 % on any host; each
/// with a prefix rule, an exact-path rule and, for one in five, a regex rule.
fn mk_resources() -> Resources {
    let routes = (0..ROUTES)
        .map(|i| {
            let hosts = match i % 10 {
                0..=6 => format!("[svc{i}.example.com]"),
                7 | 8 => format!("['*.team{i}.example.com']"),
                _ => "[]".to_string(),
            };
            let regex = if i % 5 == 4 {
                format!("\n  - matches: [{{path: {{type: RegularExpression, value: '/r{i}/[0-9]+/items'}}}}]\n    backends: [{{address: '10.0.0.1:80'}}]")
            } else {
                String::new()
            };
            let yaml = format!(
                "hosts: {hosts}\nrules:\n  - matches: [{{path: {{type: PathPrefix, value: /api/v{}/p{i}}}}}]\n    backends: [{{address: '10.0.0.1:80'}}]\n  - matches: [{{path: {{type: Exact, value: /exact/{i}}}, method: GET}}]\n    backends: [{{address: '10.0.0.2:80'}}]{regex}\n",
                i % 3
            );
            Resource {
                meta: Meta { name: format!("r{i}"), namespace: format!("ns{}", i % 20), ..Meta::default() },
                spec: serde_norway::from_str::<RouteSpec>(&yaml).expect("valid bench route"),
            }
        })
        .collect();
    Resources {
        routes,
        ..Resources::default()
    }
}

fn bench(c: &mut Criterion) {
    let snapshot = compile(&mk_resources(), None);
    assert!(
        snapshot.problems.is_empty(),
        "{:?}",
        &snapshot.problems[..3]
    );
    assert_eq!(snapshot.routes.len(), ROUTES);
    let headers = HeaderMap::new();
    let get = Method::GET;

    let cases = [
        (
            "exact host, prefix",
            "svc4321.example.com",
            "/api/v1/p4321/users/7",
        ),
        (
            "exact host, exact path",
            "svc4321.example.com",
            "/exact/4321",
        ),
        (
            "wildcard host, prefix",
            "a.b.team4327.example.com",
            "/api/v1/p4327/x",
        ),
        ("any host, regex", "unknown.example.org", "/r4329/15/items"),
        ("miss (404)", "nobody.example.net", "/nothing/here"),
    ];
    let mut group = c.benchmark_group("route_lookup_10k");
    for (name, host, path) in cases {
        let view = RequestView {
            host,
            path,
            method: &get,
            headers: &headers,
            query: None,
        };
        assert_eq!(
            snapshot.router.lookup(&view).is_some(),
            !name.starts_with("miss"),
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| black_box(snapshot.router.lookup(black_box(&view)).is_some()))
        });
    }
    group.finish();
}

/// The cost of one configuration change: every change recompiles the whole table.
fn bench_compile(c: &mut Criterion) {
    let resources = mk_resources();
    let mut group = c.benchmark_group("compile_10k");
    group.sample_size(10);
    group.bench_function("first compile", |b| {
        b.iter(|| black_box(compile(black_box(&resources), None).routes.len()))
    });
    // A change recompiles against the snapshot being served, reusing its regexes.
    let previous = compile(&resources, None);
    group.bench_function("recompile after a change", |b| {
        b.iter(|| black_box(compile(black_box(&resources), Some(&previous)).routes.len()))
    });
    group.finish();
}

criterion_group!(benches, bench, bench_compile);
criterion_main!(benches);
