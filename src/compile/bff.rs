//! The compile step for `BFF` resources: each endpoint becomes an entry of the routing
//! table, beside the Route rules.
//!
//! An endpoint path without parameters is an `Exact` match, one with `{param}` segments a
//! `RegularExpression` match, so the table's precedence applies to BFFs and Routes alike.
//! Where a BFF endpoint and a Route claim the very same host and match, the Route wins and
//! the BFF is rejected as `Conflicted`; between two BFFs, the older one wins.

use super::{
    age_key, compile_hosts, compile_match, parse_time, Check, Problem, Reason, Reuse, ANY_HOST,
};
use crate::{
    bff::{self, fields::Selection, template::Source, template::Template, EndpointKind},
    config::{self, BffSpec, ObjectKey, Resource, Resources},
    routing::{self, path::canonicalize, EntryOrder, EntrySpec, PathCond},
};
use http::{HeaderName, Method};
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

/// Headers the gateway sets on every call, which a part may not replace.
const GATEWAY_HEADERS: [&str; 8] = [
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "traceparent",
    "tracestate",
    "x-portcullis-client",
    "host",
];

/// The BFFs that serve, and their table entries.
pub(super) struct Compiled {
    pub entries: Vec<EntrySpec>,
    pub serving: BTreeMap<ObjectKey, Resource<BffSpec>>,
}

/// One BFF, compiled but not yet checked against other objects.
struct CompiledBff {
    entries: Vec<EntrySpec>,
    claims: Vec<((String, String), String)>,
}

/// Compiles every BFF. `route_claims` are the host and match pairs Routes serve; a BFF
/// rejected now keeps its version in `previous` serving, when that one was good.
pub(super) fn compile_all(
    resources: &Resources,
    previous: Option<&BTreeMap<ObjectKey, Resource<BffSpec>>>,
    route_claims: &HashMap<(String, String), ObjectKey>,
    reuse: &mut Reuse<'_>,
    problems: &mut Vec<Problem>,
) -> Compiled {
    let mut candidates = Vec::new();
    for bff in &resources.bffs {
        let mut own = Vec::new();
        let compiled = compile_bff(bff, &resources.services, &mut own, reuse);
        let rejected = own.iter().any(Problem::rejects);
        problems.append(&mut own);
        match compiled {
            Some(c) if !rejected => candidates.push((bff.clone(), c)),
            _ => {
                let old = previous.and_then(|p| p.get(&bff.meta.key()));
                if let Some(old) = old {
                    if let Some(c) = compile_bff(old, &resources.services, &mut Vec::new(), reuse) {
                        candidates.push((old.clone(), c));
                    }
                }
            }
        }
    }

    candidates.sort_by_cached_key(|(b, _)| age_key(&b.meta));
    let mut claimed: HashMap<(String, String), ObjectKey> = HashMap::new();
    let mut out = Compiled {
        entries: Vec::new(),
        serving: BTreeMap::new(),
    };
    for (bff, compiled) in candidates {
        let key = bff.meta.key();
        let conflict = |compiled: &CompiledBff, claimed: &HashMap<(String, String), ObjectKey>| {
            compiled.claims.iter().find_map(|(claim, field)| {
                let winner = match (route_claims.get(claim), claimed.get(claim)) {
                    (Some(route), _) => format!("Route {route}, as Routes come before BFFs"),
                    (None, Some(other)) => {
                        format!("BFF {other}, which is older (or alphabetically first)")
                    }
                    (None, None) => return None,
                };
                let host = if claim.0 == ANY_HOST {
                    "any host".to_string()
                } else {
                    format!("host {:?}", claim.0)
                };
                Some(Problem {
                    kind: "BFF",
                    object: key.clone(),
                    field: field.clone(),
                    reason: Reason::Conflicted,
                    message: format!(
                        "{host} with this path and method is already served by {winner}"
                    ),
                })
            })
        };
        let (bff, compiled) = match conflict(&compiled, &claimed) {
            None => (bff, compiled),
            Some(problem) => {
                problems.push(problem);
                // As for Routes: the version that served before goes on serving, unless
                // it conflicts too.
                let old = previous
                    .and_then(|p| p.get(&key))
                    .filter(|old| old.spec != bff.spec);
                let fallback = old.and_then(|old| {
                    let c = compile_bff(old, &resources.services, &mut Vec::new(), reuse)?;
                    conflict(&c, &claimed).is_none().then(|| (old.clone(), c))
                });
                match fallback {
                    Some(f) => f,
                    None => continue,
                }
            }
        };
        for (claim, _) in &compiled.claims {
            claimed.insert(claim.clone(), key.clone());
        }
        out.entries.extend(compiled.entries);
        out.serving.insert(key, bff);
    }
    out
}

fn compile_bff(
    bff: &Resource<BffSpec>,
    services: &BTreeMap<ObjectKey, config::ServiceEndpoints>,
    problems: &mut Vec<Problem>,
    reuse: &mut Reuse<'_>,
) -> Option<CompiledBff> {
    let key = bff.meta.key();
    let mut check = Check {
        kind: "BFF",
        object: &key,
        problems,
        reuse,
    };
    let before = check.problems.len();
    let spec = &bff.spec;
    let label: Arc<str> = bff::label(&key).into();
    let client: Arc<str> = spec.client.as_str().into();
    let created = bff.meta.creation_timestamp.as_deref().and_then(parse_time);

    let client_ok = !spec.client.is_empty()
        && spec.client.len() <= 63
        && spec
            .client
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !client_ok {
        check.invalid(
            "spec.client",
            format!(
                "{:?} is not a client name; use lower-case letters, digits and '-'",
                spec.client
            ),
        );
    }
    let hosts = compile_hosts(&spec.hosts, &mut check);
    let prefix = spec
        .path_prefix
        .as_deref()
        .and_then(|p| compile_prefix(p, &mut check));
    if spec.hosts.is_empty() && spec.path_prefix.is_none() {
        check.invalid("spec", "set hosts, pathPrefix or both");
    }
    if spec.endpoints.is_empty() {
        check.invalid("spec.endpoints", "at least one endpoint is required");
    }
    // The CRD's bounds, for files too: a BFF is compiled and served as a whole.
    check_most(spec.hosts.len(), 32, "spec.hosts", &mut check);
    check_most(spec.endpoints.len(), 64, "spec.endpoints", &mut check);

    let mut entries = Vec::new();
    let mut claims = Vec::new();
    for (ei, endpoint) in spec.endpoints.iter().enumerate() {
        let field = format!("spec.endpoints[{ei}]");
        let Some(path) = compile_endpoint_path(
            prefix.as_deref().unwrap_or(""),
            &endpoint.path,
            &field,
            &mut check,
        ) else {
            continue;
        };
        let kind =
            compile_endpoint_kind(endpoint, &key, &path.params, services, &field, &mut check);
        let as_match = config::RouteMatch {
            path: Some(config::PathMatch {
                kind: if path.params.is_empty() {
                    config::PathMatchType::Exact
                } else {
                    config::PathMatchType::RegularExpression
                },
                value: path.pattern.clone(),
            }),
            method: endpoint.method.clone(),
            ..config::RouteMatch::default()
        };
        let Some((m, signature)) = compile_match(&as_match, &field, &mut check) else {
            continue;
        };
        let (Some(kind), PathCond::Exact(_) | PathCond::Regex(_)) = (kind, &m.path) else {
            continue;
        };
        let regex = match &m.path {
            PathCond::Regex(re) => Some(re.clone()),
            _ => None,
        };
        let endpoint =
            bff::Endpoint::new(key.clone(), client.clone(), ei, path.params, regex, kind);
        let action = Arc::new(routing::RuleAction {
            route: label.clone(),
            route_key: key.clone(),
            rule: ei,
            request_headers: routing::HeaderEdits::default(),
            response_headers: routing::HeaderEdits::default(),
            kind: routing::ActionKind::Bff(Arc::new(endpoint)),
            timeout: None,
            max_body_bytes: None,
            https: None,
        });
        let host_keys = if hosts.is_empty() {
            vec![ANY_HOST.to_string()]
        } else {
            hosts.clone()
        };
        for h in host_keys {
            claims.push(((h, signature.clone()), format!("{field}.path")));
        }
        entries.push(EntrySpec {
            hosts: hosts.clone(),
            order: EntryOrder {
                has_method: m.method.is_some(),
                headers: 0,
                query: 0,
                created,
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                rule: ei,
                alternative: 0,
            },
            path: m.path,
            method: m.method,
            headers: Vec::new(),
            query: Vec::new(),
            action,
        });
    }

    let rejected = check.problems[before..].iter().any(Problem::rejects);
    (!rejected).then_some(CompiledBff { entries, claims })
}

/// A canonical prefix without its trailing slash (`/` becomes empty).
fn compile_prefix(prefix: &str, check: &mut Check<'_, '_>) -> Option<String> {
    match canonicalize(prefix) {
        Ok(c) if c == prefix => Some(prefix.trim_end_matches('/').to_string()),
        Ok(c) => {
            check.invalid(
                "spec.pathPrefix",
                format!("{prefix:?} is not in canonical form and would never match; write {c:?}"),
            );
            None
        }
        Err(e) => {
            check.invalid("spec.pathPrefix", format!("{prefix:?}: {e}"));
            None
        }
    }
}

/// An endpoint path as a table match: the literal path, or a regular expression with one
/// group per parameter.
struct EndpointPath {
    pattern: String,
    params: Vec<String>,
}

fn compile_endpoint_path(
    prefix: &str,
    path: &str,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<EndpointPath> {
    let field = format!("{field}.path");
    if !path.starts_with('/') {
        check.invalid(field, format!("{path:?} must start with '/'"));
        return None;
    }
    let mut params = Vec::new();
    let mut pattern = regex::escape(prefix);
    let mut literal = prefix.to_string();
    for segment in path[1..].split('/') {
        pattern.push('/');
        literal.push('/');
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                let valid = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid || params.iter().any(|p| p == name) {
                    check.invalid(
                        &field,
                        format!("{{{name}}} must be a unique name of letters, digits and '_'"),
                    );
                    return None;
                }
                params.push(name.to_string());
                pattern.push_str("([^/]+)");
                literal.push('x');
            }
            None if segment.contains(['{', '}']) => {
                check.invalid(
                    &field,
                    format!("{segment:?}: a parameter must be a whole segment, such as {{id}}"),
                );
                return None;
            }
            None => {
                pattern.push_str(&regex::escape(segment));
                literal.push_str(segment);
            }
        }
    }
    match canonicalize(&literal) {
        Ok(c) if c == literal => {}
        _ => {
            check.invalid(
                field,
                format!("{path:?} is not a canonical path (no '.', '..', '//' or odd escapes)"),
            );
            return None;
        }
    }
    Some(EndpointPath {
        pattern: if params.is_empty() { literal } else { pattern },
        params,
    })
}

fn compile_endpoint_kind(
    endpoint: &config::BffEndpoint,
    key: &ObjectKey,
    params: &[String],
    services: &BTreeMap<ObjectKey, config::ServiceEndpoints>,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<EndpointKind> {
    match (&endpoint.pass_through, &endpoint.aggregate) {
        (Some(p), None) => {
            let field = format!("{field}.passThrough");
            let upstream = compile_upstream(&p.address, &p.service, key, services, &field, check);
            let path = p.path.as_deref().and_then(|t| {
                let field = format!("{field}.path");
                let template = compile_template(t, params, &[], &field, check)?;
                check_target(&template, &field, check).then_some(template)
            });
            check_timeout(p.timeout, &format!("{field}.timeout"), check);
            Some(EndpointKind::PassThrough(bff::PassThrough {
                upstream: upstream?,
                path: match (&p.path, path) {
                    (Some(_), None) => return None,
                    (_, path) => path,
                },
                timeout: p.timeout.map(|d| d.0),
            }))
        }
        (None, Some(a)) => {
            let field = format!("{field}.aggregate");
            compile_parts(&a.parts, key, params, services, &field, check)
                .map(EndpointKind::Aggregate)
        }
        _ => {
            check.invalid(field, "set exactly one of passThrough and aggregate");
            None
        }
    }
}

fn compile_parts(
    parts: &[config::Part],
    key: &ObjectKey,
    params: &[String],
    services: &BTreeMap<ObjectKey, config::ServiceEndpoints>,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<Vec<bff::Part>> {
    if parts.is_empty() {
        check.invalid(format!("{field}.parts"), "at least one part is required");
        return None;
    }
    check_most(parts.len(), 16, &format!("{field}.parts"), check);
    for (pi, part) in parts.iter().enumerate() {
        let field = format!("{field}.parts[{pi}]");
        check_most(part.headers.len(), 16, &format!("{field}.headers"), check);
        check_most(part.fields.len(), 64, &format!("{field}.fields"), check);
    }
    // Index for index with `parts`, so `after` finds its part even when one before failed.
    let mut out: Vec<Option<bff::Part>> = Vec::new();
    for (pi, part) in parts.iter().enumerate() {
        let field = format!("{field}.parts[{pi}]");
        let compiled = compile_part(part, pi, parts, &out, key, params, services, &field, check);
        out.push(compiled);
    }
    out.into_iter().collect()
}

#[allow(clippy::too_many_arguments)] // one part, with the context it is checked against
fn compile_part(
    part: &config::Part,
    pi: usize,
    all: &[config::Part],
    earlier: &[Option<bff::Part>],
    key: &ObjectKey,
    params: &[String],
    services: &BTreeMap<ObjectKey, config::ServiceEndpoints>,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<bff::Part> {
    let before = check.problems.len();
    let name_ok = part
        .name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && part
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if !name_ok {
        check.invalid(
            format!("{field}.name"),
            format!(
                "{:?} must start with a letter and hold letters, digits, '_' and '-'",
                part.name
            ),
        );
    } else if part.name == "errors" {
        check.invalid(
            format!("{field}.name"),
            "\"errors\" is where failed optional parts are listed; pick another name",
        );
    } else if all[..pi].iter().any(|p| p.name == part.name) {
        check.invalid(
            format!("{field}.name"),
            format!("part {:?} is named twice", part.name),
        );
    }

    let target = match &part.route {
        Some(route) if part.address.is_none() && part.service.is_none() => {
            let host = route.host.to_ascii_lowercase();
            if routing::normalize_host(&host).is_none_or(|h| h != host) {
                check.invalid(
                    format!("{field}.route.host"),
                    format!("{:?} is not a host name without a port", route.host),
                );
            }
            Some(bff::Target::Route { host })
        }
        Some(_) => {
            check.invalid(field, "set exactly one of service, address and route");
            None
        }
        None => compile_upstream(&part.address, &part.service, key, services, field, check)
            .map(bff::Target::Upstream),
    };

    let method = match part.method.as_deref() {
        None => Some(Method::GET),
        Some(raw) => Method::from_bytes(raw.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                check.invalid(
                    format!("{field}.method"),
                    format!("{raw:?} is not an HTTP method"),
                )
            })
            .ok(),
    };

    // `after` must name an earlier part, so waiting can never go round in a circle.
    let after = part.after.as_deref().and_then(|name| {
        let found = all[..pi].iter().position(|p| p.name == name);
        if found.is_none() {
            check.invalid(
                format!("{field}.after"),
                format!("{name:?} is not the name of an earlier part"),
            );
        }
        found
    });
    // The parts whose answers this one may read: the one it waits for, and theirs.
    let mut readable = Vec::new();
    let mut cursor = after;
    while let Some(i) = cursor {
        readable.push(all[i].name.clone());
        cursor = earlier.get(i).and_then(|p| p.as_ref()?.after);
    }

    let path = compile_template(
        &part.path,
        params,
        &readable,
        &format!("{field}.path"),
        check,
    );
    if let Some(p) = &path {
        check_target(p, &format!("{field}.path"), check);
    }
    let mut headers = Vec::new();
    for (hi, h) in part.headers.iter().enumerate() {
        let f = format!("{field}.headers[{hi}]");
        match HeaderName::from_bytes(h.name.as_bytes()) {
            Ok(name) if GATEWAY_HEADERS.contains(&name.as_str()) => check.invalid(
                format!("{f}.name"),
                format!("{name} is set by the gateway on every call"),
            ),
            Ok(name) => {
                if let Some(t) =
                    compile_template(&h.value, params, &readable, &format!("{f}.value"), check)
                {
                    headers.push((name, t));
                }
            }
            Err(_) => check.invalid(
                format!("{f}.name"),
                format!("{:?} is not a header name", h.name),
            ),
        }
    }
    check_timeout(part.timeout, &format!("{field}.timeout"), check);
    let fields = match Selection::parse(part.fields.iter().map(String::as_str)) {
        Ok(s) => (!part.fields.is_empty()).then_some(s),
        Err((i, why)) => {
            check.invalid(format!("{field}.fields[{i}]"), why);
            None
        }
    };

    if check.problems[before..].iter().any(Problem::rejects) {
        return None;
    }
    Some(bff::Part {
        name: part.name.clone(),
        target: target?,
        method: method?,
        path: path?,
        headers,
        timeout: part.timeout.map_or(bff::DEFAULT_PART_TIMEOUT, |d| d.0),
        required: part.required.unwrap_or(true),
        fields,
        after,
        stage: after
            .and_then(|i| earlier.get(i)?.as_ref())
            .map_or(0, |p| p.stage + 1),
    })
}

/// A static address, or the endpoints of a Service port in the BFF's namespace. A
/// Service that is missing is reported and leaves the upstream without endpoints.
fn compile_upstream(
    address: &Option<String>,
    service: &Option<config::BffServiceRef>,
    key: &ObjectKey,
    services: &BTreeMap<ObjectKey, config::ServiceEndpoints>,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<bff::Upstream> {
    match (address, service) {
        (Some(addr), None) => match addr.parse::<http::uri::Authority>() {
            Ok(a) if a.port_u16().is_some_and(|p| p != 0) && !addr.contains('@') => {
                Some(bff::Upstream::new(addr.as_str(), vec![a]))
            }
            _ => {
                check.invalid(
                    format!("{field}.address"),
                    format!("{addr:?} is not host:port (for example 10.0.0.5:8080 or users:80)"),
                );
                None
            }
        },
        (None, Some(svc)) => {
            let port_name = match &svc.port {
                config::PortRef::Number(n) => n.to_string(),
                config::PortRef::Name(n) => n.clone(),
            };
            let svc_key = ObjectKey {
                namespace: key.namespace.clone(),
                name: svc.name.clone(),
            };
            let port = services.get(&svc_key).and_then(|s| {
                s.ports.iter().find(|p| match &svc.port {
                    config::PortRef::Number(n) => p.port == *n,
                    config::PortRef::Name(n) => p.name.as_deref() == Some(n.as_str()),
                })
            });
            let endpoints = match port {
                Some(p) => p
                    .endpoints
                    .iter()
                    .filter_map(|a| a.to_string().parse().ok())
                    .collect(),
                None => {
                    let what = if services.contains_key(&svc_key) {
                        format!("Service {svc_key} has no port {port_name}")
                    } else {
                        format!("Service {svc_key} not found")
                    };
                    check.push(format!("{field}.service"), Reason::BackendNotFound, what);
                    Vec::new()
                }
            };
            Some(bff::Upstream::new(
                format!("{}:{port_name}", svc.name),
                endpoints,
            ))
        }
        _ => {
            check.invalid(field, "set exactly one of address and service");
            None
        }
    }
}

/// Parses a template and checks that each placeholder can have a value: path parameters
/// of the endpoint, and parts this one waits for.
fn compile_template(
    text: &str,
    params: &[String],
    readable_parts: &[String],
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<Template> {
    let template = match Template::parse(text) {
        Ok(t) => t,
        Err(why) => {
            check.invalid(field, why);
            return None;
        }
    };
    for source in template.sources() {
        match source {
            Source::Param(name) if !params.contains(name) => {
                check.invalid(
                    field,
                    format!("{{{name}}} is not a parameter of the endpoint path"),
                );
                return None;
            }
            Source::Part(part, _) if !readable_parts.contains(part) => {
                check.invalid(
                    field,
                    format!("{{{source}}} reads part {part:?}, which this part does not wait for (after)"),
                );
                return None;
            }
            _ => {}
        }
    }
    Some(template)
}

/// A call's path (and query) must make a request target whatever fills it: values are
/// percent-encoded, so only the literal text can break it.
fn check_target(template: &Template, field: &str, check: &mut Check<'_, '_>) -> bool {
    let text = template.literal_text();
    if !text.starts_with('/') {
        check.invalid(field, "must start with '/'");
        return false;
    }
    if let Err(e) = http::uri::PathAndQuery::try_from(text.as_str()) {
        check.invalid(field, format!("is not a valid request target: {e}"));
        return false;
    }
    true
}

fn check_most(len: usize, max: usize, field: &str, check: &mut Check<'_, '_>) {
    if len > max {
        check.invalid(field, format!("at most {max} entries; this has {len}"));
    }
}

fn check_timeout(timeout: Option<config::Duration>, field: &str, check: &mut Check<'_, '_>) {
    if timeout.is_some_and(|t| t.0.is_zero()) {
        check.invalid(field, "must be greater than 0");
    }
}

#[cfg(test)]
mod tests {
    use super::super::compile;
    use crate::{
        bff::EndpointKind,
        compile::{Reason, Snapshot},
        config::{BffSpec, Meta, Resource, Resources, RouteSpec},
        routing::{normalize_host, ActionKind, RequestView},
    };
    use http::{HeaderMap, Method};

    fn mk_meta(name: &str, created: &str) -> Meta {
        Meta {
            name: name.into(),
            namespace: "shop".into(),
            creation_timestamp: Some(created.into()),
            generation: None,
        }
    }

    fn mk_bff(name: &str, created: &str, yaml: &str) -> Resource<BffSpec> {
        Resource {
            meta: mk_meta(name, created),
            spec: serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")),
        }
    }

    fn mk_route(name: &str, created: &str, yaml: &str) -> Resource<RouteSpec> {
        Resource {
            meta: mk_meta(name, created),
            spec: serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")),
        }
    }

    /// "label#endpoint params" of what answers `method host path`, or "404".
    fn served(snapshot: &Snapshot, method: &str, host: &str, path: &str) -> String {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let host = normalize_host(host).unwrap();
        let headers = HeaderMap::new();
        let view = RequestView {
            host: &host,
            path,
            method: &method,
            headers: &headers,
            query: None,
        };
        let Some(found) = snapshot.router.lookup(&view) else {
            return "404".into();
        };
        match &found.action.kind {
            ActionKind::Bff(e) => {
                format!("{}#{} {:?}", found.action.route, e.index, e.params(path))
            }
            _ => format!("{}#{}", found.action.route, found.action.rule),
        }
    }

    const WEB: &str = "client: web\nhosts: [shop.test]\npathPrefix: /web/\nendpoints:\n\
        - path: /users/{id}/orders/{order}\n  aggregate: {parts: [{name: a, address: 'a:1', path: '/o/{order}'}]}\n\
        - path: /users/me\n  passThrough: {address: 'a:1'}\n\
        - path: /users/{id}\n  method: GET\n  passThrough: {address: 'a:1', path: '/u/{id}'}\n";

    #[test]
    fn endpoints_match_with_parameters_under_the_prefix() {
        let resources = Resources {
            bffs: vec![mk_bff("web", "2026-01-01T00:00:00Z", WEB)],
            ..Default::default()
        };
        let s = compile(&resources, None);
        assert_eq!(s.problems, []);
        assert_eq!(
            served(&s, "GET", "shop.test", "/web/users/7/orders/a%20b"),
            r#"bff:shop/web#0 [("id", "7"), ("order", "a b")]"#
        );
        // An exact endpoint comes before a parameter in the same place.
        assert_eq!(
            served(&s, "GET", "shop.test", "/web/users/me"),
            "bff:shop/web#1 []"
        );
        assert_eq!(
            served(&s, "GET", "shop.test", "/web/users/me2"),
            r#"bff:shop/web#2 [("id", "me2")]"#
        );
        assert_eq!(served(&s, "POST", "shop.test", "/web/users/me2"), "404");
        assert_eq!(served(&s, "GET", "shop.test", "/web/users/7/x"), "404");
        assert_eq!(served(&s, "GET", "shop.test", "/users/7"), "404");
        assert_eq!(served(&s, "GET", "other.test", "/web/users/7"), "404");
    }

    #[test]
    fn routes_keep_their_matches_and_older_bffs_win() {
        let route = mk_route(
            "api",
            "2026-06-01T00:00:00Z",
            "hosts: [shop.test]\nrules:\n- matches: [{path: {type: Exact, value: /web/users/me}}]\n  backends: [{address: 'r:1'}]\n",
        );
        let resources = Resources {
            routes: vec![route],
            bffs: vec![
                mk_bff("newer", "2026-02-01T00:00:00Z", WEB),
                mk_bff(
                    "older",
                    "2026-01-01T00:00:00Z",
                    "client: web\nhosts: [shop.test]\nendpoints:\n- path: /web/users/{x}/orders/{y}\n  passThrough: {address: 'a:1'}\n",
                ),
            ],
            ..Default::default()
        };
        let s = compile(&resources, None);
        let problems: Vec<_> = s
            .problems
            .iter()
            .map(|p| (p.object.name.as_str(), p.field.as_str(), p.reason))
            .collect();
        // The regex of `newer`'s first endpoint equals `older`'s, and its second endpoint
        // is the Route's exact match: the first conflict found rejects it.
        assert_eq!(
            problems,
            [("newer", "spec.endpoints[0].path", Reason::Conflicted)]
        );
        assert!(
            s.problems[0].message.contains("BFF shop/older"),
            "{}",
            s.problems[0].message
        );
        assert_eq!(
            served(&s, "GET", "shop.test", "/web/users/me"),
            "shop/api#0"
        );
        assert!(
            served(&s, "GET", "shop.test", "/web/users/1/orders/2").starts_with("bff:shop/older#0")
        );
        assert!(s.bffs.contains_key(&mk_meta("older", "").key()));
        assert!(!s.bffs.contains_key(&mk_meta("newer", "").key()));
    }

    #[test]
    fn an_edit_that_conflicts_keeps_the_previous_version() {
        let route = mk_route(
            "api",
            "2026-01-01T00:00:00Z",
            "hosts: [shop.test]\nrules: [{matches: [{path: {type: Exact, value: /web/b}}], backends: [{address: 'a:1'}]}]",
        );
        let v = |path: &str| {
            mk_bff(
                "web",
                "2026-02-01T00:00:00Z",
                &format!("client: web\nhosts: [shop.test]\npathPrefix: /web\nendpoints:\n- path: {path}\n  passThrough: {{address: 'a:1'}}\n"),
            )
        };
        let first = compile(
            &Resources {
                routes: vec![route.clone()],
                bffs: vec![v("/a")],
                ..Default::default()
            },
            None,
        );
        let second = compile(
            &Resources {
                routes: vec![route],
                bffs: vec![v("/b")],
                ..Default::default()
            },
            Some(&first),
        );
        assert!(served(&second, "GET", "shop.test", "/web/a").starts_with("bff:shop/web#0"));
        assert_eq!(served(&second, "GET", "shop.test", "/web/b"), "shop/api#0");
        assert!(second
            .problems
            .iter()
            .any(|p| p.reason == Reason::Conflicted));
    }

    #[test]
    fn files_are_held_to_the_crd_bounds() {
        let parts: Vec<String> = (0..17)
            .map(|i| format!("{{name: p{i}, address: 'a:1', path: /p}}"))
            .collect();
        let yaml = format!(
            "client: web\npathPrefix: /w\nendpoints:\n- path: /a\n  aggregate: {{parts: [{}]}}\n",
            parts.join(", ")
        );
        let s = compile(
            &Resources {
                bffs: vec![mk_bff("big", "2026-01-01T00:00:00Z", &yaml)],
                ..Default::default()
            },
            None,
        );
        let problems: Vec<(&str, &str)> = s
            .problems
            .iter()
            .map(|p| (p.field.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            problems,
            [(
                "spec.endpoints[0].aggregate.parts",
                "at most 16 entries; this has 17"
            )]
        );
    }

    #[test]
    fn problems_name_the_endpoint_and_part() {
        let yaml = "client: Web\nhosts: [shop.test]\nendpoints:\n\
            - path: /a/{id}/{id}\n  passThrough: {address: 'a:1'}\n\
            - path: /b\n  aggregate:\n    parts:\n\
            \x20   - {name: user, address: 'nohost', path: /u}\n\
            \x20   - {name: user, address: 'a:1', path: '/u/{parts.x.id}', after: later}\n\
            \x20   - {name: errors, address: 'a:1', path: 'u', fields: ['a..b'], timeout: 0s}\n\
            \x20   - {name: h, address: 'a:1', path: /h, headers: [{name: x-request-id, value: v}]}\n\
            \x20   - {name: sp, address: 'a:1', path: '/a b'}\n\
            - path: /c\n";
        let resources = Resources {
            bffs: vec![mk_bff("bad", "2026-01-01T00:00:00Z", yaml)],
            ..Default::default()
        };
        let s = compile(&resources, None);
        let fields: Vec<&str> = s.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.client",
                "spec.endpoints[0].path",
                "spec.endpoints[1].aggregate.parts[0].address",
                "spec.endpoints[1].aggregate.parts[1].after",
                "spec.endpoints[1].aggregate.parts[1].name",
                "spec.endpoints[1].aggregate.parts[1].path",
                "spec.endpoints[1].aggregate.parts[2].fields[0]",
                "spec.endpoints[1].aggregate.parts[2].name",
                "spec.endpoints[1].aggregate.parts[2].path",
                "spec.endpoints[1].aggregate.parts[2].timeout",
                "spec.endpoints[1].aggregate.parts[3].headers[0].name",
                "spec.endpoints[1].aggregate.parts[4].path",
                "spec.endpoints[2]",
            ]
        );
        assert!(s.problems.iter().all(|p| p.reason == Reason::Invalid));
        assert!(s.bffs.is_empty());
    }

    #[test]
    fn stages_follow_after() {
        let yaml = "client: web\npathPrefix: /x\nendpoints:\n\
            - path: /s\n  aggregate:\n    parts:\n\
            \x20   - {name: a, address: 'a:1', path: /a}\n\
            \x20   - {name: b, address: 'a:1', path: '/b/{parts.a.id}', after: a}\n\
            \x20   - {name: c, address: 'a:1', path: '/c/{parts.a.id}/{parts.b.id}', after: b}\n\
            \x20   - {name: d, address: 'a:1', path: /d, required: false}\n";
        let resources = Resources {
            bffs: vec![mk_bff("s", "2026-01-01T00:00:00Z", yaml)],
            ..Default::default()
        };
        let s = compile(&resources, None);
        assert_eq!(s.problems, []);
        let view = RequestView {
            host: "any.test",
            path: "/x/s",
            method: &Method::GET,
            headers: &HeaderMap::new(),
            query: None,
        };
        let found = s.router.lookup(&view).unwrap();
        let ActionKind::Bff(e) = &found.action.kind else {
            panic!("not a BFF")
        };
        let EndpointKind::Aggregate(parts) = &e.kind else {
            panic!("not an aggregate")
        };
        let stages: Vec<(usize, bool)> = parts.iter().map(|p| (p.stage, p.required)).collect();
        assert_eq!(stages, [(0, true), (1, true), (2, true), (0, false)]);
        assert_eq!(e.stages(), 3);
    }
}
