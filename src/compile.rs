//! The compile step: resources in, an immutable [`Snapshot`] and per-object problems out.
//!
//! It is pure and synchronous: no I/O, no clock, no randomness, so the same resources
//! always give the same table and the same problems. One bad object is rejected alone.

use crate::{
    config::{self, ObjectKey, Resource, Resources, RouteSpec},
    policy::{self, PolicyTable},
    routing::{self, path::canonicalize, EntryOrder, EntrySpec, PathCond, Router, ValueCond},
    tls::{self, TlsTable},
    upstream,
};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;
use serde::Serialize;
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

/// The routing table and what it was built from. Never changed once built.
#[derive(Debug)]
pub struct Snapshot {
    pub router: Router,
    /// The Routes that serve, by key: each the version given, or a previous good one.
    pub routes: BTreeMap<ObjectKey, Resource<RouteSpec>>,
    /// The BFFs that serve, by key: each the version given, or a previous good one.
    pub bffs: BTreeMap<ObjectKey, Resource<config::BffSpec>>,
    pub problems: Vec<Problem>,
    /// Certificates by host, for the TLS listener.
    pub tls: TlsTable,
    /// The Policy sections of each Route, and the Policies that serve.
    pub policies: PolicyTable,
    /// Every regular expression the table uses, for the next compile to reuse.
    regexes: HashMap<String, Regex>,
    /// Endpoint health and load, limits and retry budgets, and the endpoints to probe.
    pub upstreams: upstream::Upstreams,
}

/// Something wrong with one object, naming the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub kind: &'static str,
    pub object: ObjectKey,
    /// A field path such as `spec.rules[0].matches[1].path.value`.
    pub field: String,
    pub reason: Reason,
    pub message: String,
}

/// Why an object is not served as written. The reason decides which status condition
/// turns false.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Reason {
    /// The object is invalid and is not served (`Accepted=False`).
    Invalid,
    /// An older object already serves the same host and match (`Accepted=False`).
    Conflicted,
    /// A referenced Service or port does not exist; the object is served and the
    /// affected backend answers 503 (`ResolvedRefs=False`).
    BackendNotFound,
    /// A certificate or client CA is missing, does not load, or does not cover a host;
    /// plain HTTP is served, and the hosts affected get no certificate
    /// (`ResolvedRefs=False`).
    InvalidCertificateRef,
    /// A Policy names a Route that does not exist or is not served; its other targets
    /// are unaffected (`ResolvedRefs=False`).
    TargetNotFound,
}

// === impl Problem ===

impl Problem {
    /// True when the object is not served as written.
    pub fn rejects(&self) -> bool {
        matches!(self.reason, Reason::Invalid | Reason::Conflicted)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}: {}",
            self.kind, self.object, self.field, self.message
        )
    }
}

// === impl Snapshot ===

impl Snapshot {
    pub fn empty() -> Self {
        Snapshot {
            router: Router::default(),
            routes: BTreeMap::new(),
            bffs: BTreeMap::new(),
            problems: Vec::new(),
            tls: TlsTable::default(),
            policies: PolicyTable::default(),
            regexes: HashMap::new(),
            upstreams: upstream::Upstreams::default(),
        }
    }

    /// Problems that keep an object from serving as written.
    pub fn rejections(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.rejects())
    }

    /// How many objects of `kind` do not serve as written.
    pub fn rejected_count(&self, kind: &str) -> usize {
        self.rejections()
            .filter(|p| p.kind == kind)
            .map(|p| &p.object)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }

    /// True when some version of the object serves.
    pub fn serves(&self, kind: &str, key: &ObjectKey) -> bool {
        match kind {
            "Route" => self.routes.contains_key(key),
            "Policy" => self.policies.policies.contains_key(key),
            "BFF" => self.bffs.contains_key(key),
            _ => false,
        }
    }
}

/// Compiles resources into a snapshot.
///
/// A Route that is rejected keeps serving its version from `previous`, when that one was
/// good: a bad edit never takes a working Route away. Its problems are still reported.
pub fn compile(resources: &Resources, previous: Option<&Snapshot>) -> Snapshot {
    let mut problems = Vec::new();
    let mut candidates: Vec<(Resource<RouteSpec>, CompiledRoute)> = Vec::new();
    let mut reuse = Reuse {
        regexes: Regexes {
            previous: previous.map(|p| &p.regexes),
            built: HashMap::new(),
        },
        upstreams: upstream::Registry::new(previous.map(|p| &p.upstreams)),
    };

    for route in &resources.routes {
        let mut route_problems = Vec::new();
        let compiled = compile_route(route, resources, &mut route_problems, &mut reuse);
        let rejected = route_problems.iter().any(Problem::rejects);
        problems.append(&mut route_problems);
        match compiled {
            Some(c) if !rejected => candidates.push((route.clone(), c)),
            _ => {
                // Fall back to the last good version, compiled against today's Services.
                let key = route.meta.key();
                if let Some(old) = previous.and_then(|p| p.routes.get(&key)) {
                    let c = compile_route(old, resources, &mut Vec::new(), &mut reuse);
                    if let Some(c) = c {
                        candidates.push((old.clone(), c));
                    }
                }
            }
        }
    }

    // Older objects claim host and match pairs first, so the winner of a conflict is the
    // same on every replica, whatever order the objects arrived in.
    candidates.sort_by_cached_key(|(r, _)| age_key(&r.meta));
    let mut claimed: HashMap<(String, String), ObjectKey> = HashMap::new();
    let mut specs = Vec::new();
    let mut routes = BTreeMap::new();
    let mut oldest_first = Vec::new();
    for (route, compiled) in candidates {
        let key = route.meta.key();
        let (route, compiled) = match find_conflict(&key, &compiled, &claimed) {
            None => (route, compiled),
            Some(problem) => {
                problems.push(problem);
                // An edit that now conflicts keeps the version that served before, as
                // an edit that does not build does, unless that one conflicts too.
                let old = previous
                    .and_then(|p| p.routes.get(&key))
                    .filter(|old| old.spec != route.spec);
                let fallback = old.and_then(|old| {
                    let c = compile_route(old, resources, &mut Vec::new(), &mut reuse)?;
                    find_conflict(&key, &c, &claimed)
                        .is_none()
                        .then(|| (old.clone(), c))
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
        specs.extend(compiled.entries);
        oldest_first.push(key.clone());
        routes.insert(key, route);
    }
    // Only what serves is probed: a rejected edit or a Route that lost a conflict must
    // not mark down the endpoints of one that serves.
    for spec in &specs {
        let routing::ActionKind::Forward(forward) = &spec.action.kind else {
            continue;
        };
        for backend in forward.backends.backends() {
            let Some(active) = backend.health.as_ref().and_then(|h| h.active.as_ref()) else {
                continue;
            };
            for ep in &backend.endpoints {
                reuse
                    .upstreams
                    .probe(&backend.key, ep, active, &backend.transport);
            }
        }
    }
    let bffs = bff::compile_all(
        resources,
        previous.map(|p| &p.bffs),
        &claimed,
        &mut reuse,
        &mut problems,
    );
    specs.extend(bffs.entries);
    let tls = tls::build(
        resources,
        oldest_first.iter().map(|k| &routes[k]),
        previous.map(|p| &p.tls),
        &mut problems,
    );
    let policies = policy::build(
        resources,
        &routes,
        &bffs.serving,
        previous.map(|p| &p.policies),
        &mut problems,
    );

    problems.sort_by(|a, b| (a.kind, &a.object, &a.field).cmp(&(b.kind, &b.object, &b.field)));
    Snapshot {
        router: Router::build(specs),
        routes,
        bffs: bffs.serving,
        problems,
        tls,
        policies,
        regexes: reuse.regexes.built,
        upstreams: reuse.upstreams.finish(),
    }
}

fn find_conflict(
    key: &ObjectKey,
    compiled: &CompiledRoute,
    claimed: &HashMap<(String, String), ObjectKey>,
) -> Option<Problem> {
    compiled.claims.iter().find_map(|(claim, field)| {
        let winner = claimed.get(claim).filter(|w| *w != key)?;
        Some(Problem {
            kind: "Route",
            object: key.clone(),
            field: field.clone(),
            reason: Reason::Conflicted,
            message: format!(
                "{} with this match is already served by Route {winner}, which comes first \
                 (older, or alphabetically first when equally old)",
                if claim.0 == ANY_HOST {
                    "any host".to_string()
                } else {
                    format!("host {:?}", claim.0)
                }
            ),
        })
    })
}

/// Sorts older objects first, objects without a creation time last, then by namespace
/// and name. Computed once per object: parsing times inside the comparison would parse
/// each one many times over.
pub(crate) fn age_key(
    meta: &config::Meta,
) -> (bool, Option<std::time::SystemTime>, String, String) {
    let created = meta.creation_timestamp.as_deref().and_then(parse_time);
    (
        created.is_none(),
        created,
        meta.namespace.clone(),
        meta.name.clone(),
    )
}

fn parse_time(s: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

/// The claim key of Routes without hosts; not a valid host name, so it cannot collide.
const ANY_HOST: &str = "*any*";

/// One Route, compiled but not yet checked against other Routes.
struct CompiledRoute {
    entries: Vec<EntrySpec>,
    /// (host, match signature) pairs this Route serves, with the field that claims each.
    claims: Vec<((String, String), String)>,
}

/// Collects problems of one object, and compiles its regular expressions.
struct Check<'a, 'p> {
    kind: &'static str,
    object: &'a ObjectKey,
    problems: &'a mut Vec<Problem>,
    reuse: &'a mut Reuse<'p>,
}

/// What a compile takes over from the previous snapshot.
struct Reuse<'p> {
    regexes: Regexes<'p>,
    upstreams: upstream::Registry<'p>,
}

/// Compiled regular expressions by pattern. Those of the previous snapshot are reused,
/// so a change costs the compilation of its own new patterns only.
struct Regexes<'p> {
    previous: Option<&'p HashMap<String, Regex>>,
    built: HashMap<String, Regex>,
}

impl Regexes<'_> {
    /// A regex that must match the whole of its input.
    fn full_match(&mut self, pattern: &str) -> Result<Regex, regex::Error> {
        let anchored = format!("^(?:{pattern})$");
        if let Some(re) = self.built.get(&anchored) {
            return Ok(re.clone());
        }
        let re = match self.previous.and_then(|p| p.get(&anchored)) {
            Some(re) => re.clone(),
            None => Regex::new(&anchored)?,
        };
        self.built.insert(anchored, re.clone());
        Ok(re)
    }
}

impl Check<'_, '_> {
    fn invalid(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(field, Reason::Invalid, message);
    }

    fn push(&mut self, field: impl Into<String>, reason: Reason, message: impl Into<String>) {
        self.problems.push(Problem {
            kind: self.kind,
            object: self.object.clone(),
            field: field.into(),
            reason,
            message: message.into(),
        });
    }
}

fn compile_route(
    route: &Resource<RouteSpec>,
    resources: &Resources,
    problems: &mut Vec<Problem>,
    reuse: &mut Reuse<'_>,
) -> Option<CompiledRoute> {
    let key = route.meta.key();
    let mut check = Check {
        kind: "Route",
        object: &key,
        problems,
        reuse,
    };
    let before = check.problems.len();
    let label: Arc<str> = key.to_string().into();
    let created = route
        .meta
        .creation_timestamp
        .as_deref()
        .and_then(parse_time);

    let hosts = compile_hosts(&route.spec.hosts, &mut check);
    let https = route.spec.tls.as_ref().and_then(|tls| {
        if route.spec.hosts.is_empty() {
            check.invalid("spec.tls", "tls needs at least one host in spec.hosts");
        }
        compile_https(tls, &mut check).map(Arc::new)
    });
    if route.spec.rules.is_empty() {
        check.invalid("spec.rules", "at least one rule is required");
    }

    let mut entries = Vec::new();
    let mut claims = Vec::new();
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{ri}]");
        // A rule whose action is invalid still has its matches checked, so that one run
        // reports every problem.
        let action = compile_action(&label, &key, ri, rule, resources, &field, &mut check);
        let action = action.map(|mut a| {
            a.https.clone_from(&https);
            Arc::new(a)
        });
        let default_match = [config::RouteMatch::default()];
        let matches = if rule.matches.is_empty() {
            &default_match[..]
        } else {
            &rule.matches
        };
        for (mi, m) in matches.iter().enumerate() {
            let field = format!("{field}.matches[{mi}]");
            let Some((spec, signature)) = compile_match(m, &field, &mut check) else {
                continue;
            };
            let Some(action) = &action else {
                continue;
            };
            let prefix_rewrite = matches!(
                &action.kind,
                routing::ActionKind::Forward(f)
                    if matches!(f.rewrite_path, Some(routing::PathRewrite::Prefix(_)))
            );
            if prefix_rewrite && !matches!(spec.path, PathCond::Prefix(_)) {
                check.invalid(
                    format!("spec.rules[{ri}].filters.urlRewrite.path.replacePrefixMatch"),
                    format!("needs a PathPrefix match, and {field}.path is not one"),
                );
                continue;
            }
            let host_keys: Vec<String> = if hosts.is_empty() {
                vec![ANY_HOST.into()]
            } else {
                hosts.clone()
            };
            for h in host_keys {
                claims.push(((h, signature.clone()), field.clone()));
            }
            entries.push(EntrySpec {
                hosts: hosts.clone(),
                order: EntryOrder {
                    has_method: spec.method.is_some(),
                    headers: spec.headers.len(),
                    query: spec.query.len(),
                    created,
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    rule: ri,
                    alternative: mi,
                },
                path: spec.path,
                method: spec.method,
                headers: spec.headers,
                query: spec.query,
                action: action.clone(),
            });
        }
    }

    let rejected = check.problems[before..].iter().any(Problem::rejects);
    (!rejected).then_some(CompiledRoute { entries, claims })
}

fn compile_https(tls: &config::RouteTls, check: &mut Check<'_, '_>) -> Option<routing::RouteHttps> {
    let redirect = match &tls.http_redirect {
        None => None,
        Some(r) => match r.status_code.unwrap_or(308) {
            code @ (301 | 302 | 307 | 308) => Some((
                StatusCode::from_u16(code).expect("listed codes are valid"),
                r.port,
            )),
            other => {
                check.invalid(
                    "spec.tls.httpRedirect.statusCode",
                    format!("{other} is not one of 301, 302, 307, 308"),
                );
                return None;
            }
        },
    };
    let hsts = tls.hsts.as_ref().map(|h| {
        let mut v = format!("max-age={}", h.max_age_seconds);
        if h.include_sub_domains {
            v.push_str("; includeSubDomains");
        }
        if h.preload {
            v.push_str("; preload");
        }
        HeaderValue::from_str(&v).expect("digits and fixed words")
    });
    Some(routing::RouteHttps { redirect, hsts })
}

/// Validates and lower-cases host patterns.
fn compile_hosts(hosts: &[String], check: &mut Check<'_, '_>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let lower = host.to_ascii_lowercase();
        let name = lower.strip_prefix("*.").unwrap_or(&lower);
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid {
            check.invalid(
                format!("spec.hosts[{i}]"),
                format!(
                    "{host:?} is not a host name; write a DNS name such as api.example.com, \
                     optionally with a leading '*.' label, without a port"
                ),
            );
            continue;
        }
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    out
}

/// A match, compiled, plus a signature that is equal for two matches that select
/// exactly the same requests.
struct MatchSpec {
    path: PathCond,
    method: Option<Method>,
    headers: Vec<(HeaderName, ValueCond)>,
    query: Vec<(Box<str>, ValueCond)>,
}

fn compile_match(
    m: &config::RouteMatch,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<(MatchSpec, String)> {
    let before = check.problems.len();
    // A bad path does not stop the other conditions from being checked.
    let path = match &m.path {
        None => Some((PathCond::Prefix("/".into()), "prefix:/".to_string())),
        Some(p) => compile_path(p, &format!("{field}.path.value"), check),
    };

    let method = m.method.as_deref().and_then(|raw| {
        let upper = raw.to_ascii_uppercase();
        match Method::from_bytes(upper.as_bytes()) {
            Ok(method) => Some(method),
            Err(_) => {
                check.invalid(
                    format!("{field}.method"),
                    format!("{raw:?} is not an HTTP method"),
                );
                None
            }
        }
    });

    let mut headers = Vec::new();
    let mut seen = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        let f = format!("{field}.headers[{i}]");
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            check.invalid(
                format!("{f}.name"),
                format!("{:?} is not a header name", h.name),
            );
            continue;
        };
        if seen.contains(&name) {
            check.invalid(
                format!("{f}.name"),
                format!("header {name} is matched twice"),
            );
            continue;
        }
        seen.push(name.clone());
        if let Some(cond) = compile_value(h, &f, check) {
            headers.push((name, cond));
        }
    }

    let mut query = Vec::new();
    for (i, q) in m.query_params.iter().enumerate() {
        let f = format!("{field}.queryParams[{i}]");
        if q.name.is_empty() {
            check.invalid(format!("{f}.name"), "must not be empty");
            continue;
        }
        if query.iter().any(|(n, _): &(Box<str>, _)| **n == *q.name) {
            check.invalid(
                format!("{f}.name"),
                format!("parameter {:?} is matched twice", q.name),
            );
            continue;
        }
        if let Some(cond) = compile_value(q, &f, check) {
            query.push((q.name.as_str().into(), cond));
        }
    }

    let (path, path_sig) = path?;
    if check.problems.len() > before {
        return None;
    }

    // Conditions are a set, so the signature lists them sorted.
    let mut header_sig: Vec<String> = m
        .headers
        .iter()
        .map(|h| format!("{}:{:?}:{}", h.name.to_ascii_lowercase(), h.kind, h.value))
        .collect();
    header_sig.sort();
    let mut query_sig: Vec<String> = m
        .query_params
        .iter()
        .map(|q| format!("{}:{:?}:{}", q.name, q.kind, q.value))
        .collect();
    query_sig.sort();
    let signature = format!(
        "{path_sig} method:{} headers:{header_sig:?} query:{query_sig:?}",
        method.as_ref().map(Method::as_str).unwrap_or("*")
    );
    Some((
        MatchSpec {
            path,
            method,
            headers,
            query,
        },
        signature,
    ))
}

fn compile_path(
    p: &config::PathMatch,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<(PathCond, String)> {
    use config::PathMatchType::*;
    match p.kind {
        Exact | PathPrefix => {
            let canonical = match canonicalize(&p.value) {
                Ok(c) => c,
                Err(e) => {
                    check.invalid(field, format!("{:?}: {e}", p.value));
                    return None;
                }
            };
            if canonical != p.value {
                check.invalid(
                    field,
                    format!(
                        "{:?} is not in canonical form and would never match; write {canonical:?}",
                        p.value
                    ),
                );
                return None;
            }
            if p.kind == Exact {
                Some((
                    PathCond::Exact(p.value.clone()),
                    format!("exact:{}", p.value),
                ))
            } else {
                // Prefixes match at segment boundaries, so a trailing slash adds nothing.
                let trimmed = match p.value.trim_end_matches('/') {
                    "" => "/",
                    t => t,
                };
                Some((
                    PathCond::Prefix(trimmed.into()),
                    format!("prefix:{trimmed}"),
                ))
            }
        }
        RegularExpression => match check.reuse.regexes.full_match(&p.value) {
            Ok(re) => Some((PathCond::Regex(re), format!("regex:{}", p.value))),
            Err(e) => {
                check.invalid(field, format!("invalid regular expression: {e}"));
                None
            }
        },
    }
}

fn compile_value(
    v: &config::ValueMatch,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<ValueCond> {
    match v.kind {
        config::ValueMatchType::Exact => Some(ValueCond::Exact(v.value.as_str().into())),
        config::ValueMatchType::RegularExpression => match check.reuse.regexes.full_match(&v.value)
        {
            Ok(re) => Some(ValueCond::Regex(re)),
            Err(e) => {
                check.invalid(
                    format!("{field}.value"),
                    format!("invalid regular expression: {e}"),
                );
                None
            }
        },
    }
}

fn compile_action(
    label: &Arc<str>,
    key: &ObjectKey,
    ri: usize,
    rule: &config::RouteRule,
    resources: &Resources,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<routing::RuleAction> {
    let before = check.problems.len();
    let filters = &rule.filters;
    let request_headers = compile_edits(
        filters.request_headers.as_ref(),
        &format!("{field}.filters.requestHeaders"),
        check,
    );
    let response_headers = compile_edits(
        filters.response_headers.as_ref(),
        &format!("{field}.filters.responseHeaders"),
        check,
    );

    let kind = if let Some(redirect) = &filters.redirect {
        if !rule.backends.is_empty() {
            check.invalid(
                format!("{field}.backends"),
                "a rule with a redirect has no backends",
            );
        }
        if filters.url_rewrite.is_some() {
            check.invalid(
                format!("{field}.filters.urlRewrite"),
                "a rule cannot both redirect and rewrite",
            );
        }
        compile_redirect(redirect, &format!("{field}.filters.redirect"), check)
            .map(routing::ActionKind::Redirect)
    } else {
        if rule.backends.is_empty() {
            check.invalid(
                format!("{field}.backends"),
                "at least one backend is required",
            );
        }
        let balancer = compile_balancer(rule.load_balancer.as_ref(), field, check);
        let backends = rule
            .backends
            .iter()
            .enumerate()
            .filter_map(|(bi, b)| {
                compile_backend(
                    b,
                    key,
                    resources,
                    balancer.kind,
                    &format!("{field}.backends[{bi}]"),
                    check,
                )
            })
            .collect();
        let retry = rule
            .retry
            .as_ref()
            .map(|r| compile_retry(r, &format!("{key}#{ri}"), &format!("{field}.retry"), check));
        let rewrite = filters.url_rewrite.as_ref();
        let rewrite_field = format!("{field}.filters.urlRewrite");
        let rewrite_host = rewrite.and_then(|r| r.hostname.as_ref()).and_then(|h| {
            HeaderValue::from_str(h)
                .map_err(|_| check.invalid(format!("{rewrite_field}.hostname"), "not a valid host"))
                .ok()
        });
        let rewrite_path = rewrite
            .and_then(|r| r.path.as_ref())
            .and_then(|p| compile_path_rewrite(p, &format!("{rewrite_field}.path"), check));
        Some(routing::ActionKind::Forward(Box::new(routing::Forward {
            backends: upstream::BackendSet::new(backends),
            balancer,
            retry,
            per_try_timeout: rule.timeouts.per_try.map(|d| d.0),
            stream_idle: rule.timeouts.stream_idle.map(|d| d.0),
            rewrite_host,
            rewrite_path,
        })))
    };

    if rule.max_request_body_bytes == Some(0) {
        check.invalid(
            format!("{field}.maxRequestBodyBytes"),
            "must be greater than 0",
        );
    }
    let rejected = check.problems[before..].iter().any(Problem::rejects);
    if rejected {
        return None;
    }
    Some(routing::RuleAction {
        route: label.clone(),
        route_key: key.clone(),
        rule: ri,
        request_headers,
        response_headers,
        kind: kind?,
        timeout: rule.timeouts.request.map(|d| d.0),
        max_body_bytes: rule.max_request_body_bytes,
        https: None,
    })
}

fn compile_edits(
    m: Option<&config::HeaderModifier>,
    field: &str,
    check: &mut Check<'_, '_>,
) -> routing::HeaderEdits {
    let mut edits = routing::HeaderEdits::default();
    let Some(m) = m else {
        return edits;
    };
    let mut pair = |list: &str, i: usize, h: &config::HeaderValue| {
        let name = HeaderName::from_bytes(h.name.as_bytes());
        let value = HeaderValue::from_str(&h.value);
        match (name, value) {
            (Ok(n), Ok(v)) => Some((n, v)),
            (Err(_), _) => {
                check.invalid(
                    format!("{field}.{list}[{i}].name"),
                    format!("{:?} is not a header name", h.name),
                );
                None
            }
            (_, Err(_)) => {
                check.invalid(
                    format!("{field}.{list}[{i}].value"),
                    "not a valid header value (control characters are not allowed)",
                );
                None
            }
        }
    };
    edits.set = m
        .set
        .iter()
        .enumerate()
        .filter_map(|(i, h)| pair("set", i, h))
        .collect();
    edits.add = m
        .add
        .iter()
        .enumerate()
        .filter_map(|(i, h)| pair("add", i, h))
        .collect();
    for (i, name) in m.remove.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => edits.remove.push(n),
            Err(_) => check.invalid(
                format!("{field}.remove[{i}]"),
                format!("{name:?} is not a header name"),
            ),
        }
    }
    edits
}

fn compile_path_rewrite(
    p: &config::PathRewrite,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<routing::PathRewrite> {
    let (value, make, sub): (&String, fn(String) -> routing::PathRewrite, &str) =
        match (&p.replace_full_path, &p.replace_prefix_match) {
            (Some(full), None) => (full, routing::PathRewrite::Full, "replaceFullPath"),
            (None, Some(prefix)) => (prefix, routing::PathRewrite::Prefix, "replacePrefixMatch"),
            _ => {
                check.invalid(
                    field,
                    "set exactly one of replaceFullPath and replacePrefixMatch",
                );
                return None;
            }
        };
    match canonicalize(value) {
        Ok(c) => Some(make(c.into_owned())),
        Err(e) => {
            check.invalid(format!("{field}.{sub}"), format!("{value:?}: {e}"));
            None
        }
    }
}

fn compile_redirect(
    r: &config::Redirect,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<routing::RedirectAction> {
    let before = check.problems.len();
    if let Some(s) = &r.scheme {
        if s != "http" && s != "https" {
            check.invalid(
                format!("{field}.scheme"),
                format!("{s:?} must be http or https"),
            );
        }
    }
    if let Some(h) = &r.hostname {
        if HeaderValue::from_str(h).is_err() || h.contains('/') || h.is_empty() {
            check.invalid(
                format!("{field}.hostname"),
                format!("{h:?} is not a host name"),
            );
        }
    }
    let status = r.status_code.unwrap_or(302);
    if ![301, 302, 303, 307, 308].contains(&status) {
        check.invalid(
            format!("{field}.statusCode"),
            format!("{status} must be one of 301, 302, 303, 307, 308"),
        );
    }
    let path = r
        .path
        .as_ref()
        .and_then(|p| compile_path_rewrite(p, &format!("{field}.path"), check));
    if check.problems.len() > before {
        return None;
    }
    Some(routing::RedirectAction {
        scheme: r.scheme.clone(),
        host: r.hostname.clone(),
        port: r.port,
        path,
        status: StatusCode::from_u16(status).ok()?,
    })
}

fn compile_backend(
    b: &config::Backend,
    key: &ObjectKey,
    resources: &Resources,
    balancer: upstream::balance::Kind,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<upstream::Backend> {
    let weight = b.weight.unwrap_or(1);
    let (name, backend_key, addresses, transport): (String, Arc<str>, Vec<_>, _) =
        match (&b.address, b.addresses.as_slice(), &b.service) {
            (Some(addr), [], None) => match parse_address(addr) {
                Some(authority) => {
                    let transport = transport::for_addresses(
                        b,
                        key,
                        std::slice::from_ref(&authority),
                        resources,
                        field,
                        check,
                    )?;
                    (
                        addr.clone(),
                        addr.as_str().into(),
                        vec![authority],
                        transport,
                    )
                }
                None => {
                    check.invalid(
                        format!("{field}.address"),
                        format!(
                            "{addr:?} is not host:port (for example 10.0.0.5:8080 or users:80)"
                        ),
                    );
                    return None;
                }
            },
            (None, list @ [_, ..], None) => {
                let mut parsed = Vec::with_capacity(list.len());
                for (i, addr) in list.iter().enumerate() {
                    match parse_address(addr) {
                        Some(a) if !parsed.contains(&a) => parsed.push(a),
                        Some(_) => check.invalid(
                            format!("{field}.addresses[{i}]"),
                            format!("{addr:?} is listed twice"),
                        ),
                        None => check.invalid(
                            format!("{field}.addresses[{i}]"),
                            format!("{addr:?} is not host:port (for example 10.0.0.5:8080)"),
                        ),
                    }
                }
                if parsed.len() != list.len() {
                    return None;
                }
                let transport = transport::for_addresses(b, key, &parsed, resources, field, check)?;
                let name = list.join(",");
                (name.clone(), name.into(), parsed, transport)
            }
            (None, [], Some(svc)) => {
                let name = match &svc.port {
                    config::PortRef::Number(n) => format!("{}:{n}", svc.name),
                    config::PortRef::Name(n) => format!("{}:{n}", svc.name),
                };
                let svc_key = ObjectKey {
                    namespace: key.namespace.clone(),
                    name: svc.name.clone(),
                };
                let port = resources.services.get(&svc_key).and_then(|s| {
                    s.ports.iter().find(|p| match &svc.port {
                        config::PortRef::Number(n) => p.port == *n,
                        config::PortRef::Name(n) => p.name.as_deref() == Some(n.as_str()),
                    })
                });
                let (transport, mesh) =
                    transport::for_service(b, svc, key, port, resources, field, check)?;
                let endpoints = match (port, mesh) {
                    (_, Some(mesh)) => vec![mesh.authority],
                    (Some(p), None) => p
                        .endpoints
                        .iter()
                        .filter_map(|a| a.to_string().parse().ok())
                        .collect(),
                    (None, None) => {
                        let what = if resources.services.contains_key(&svc_key) {
                            format!("Service {svc_key} has no port {name}")
                        } else {
                            format!("Service {svc_key} not found")
                        };
                        check.push(format!("{field}.service"), Reason::BackendNotFound, what);
                        Vec::new()
                    }
                };
                let backend_key = format!("{}/{name}", key.namespace).into();
                (name, backend_key, endpoints, transport)
            }
            _ => {
                check.invalid(field, "set exactly one of address, addresses and service");
                return None;
            }
        };
    let health = b
        .health_check
        .as_ref()
        .and_then(|h| compile_health(h, &format!("{field}.healthCheck"), check));
    let limiter = match (b.max_connections, b.max_pending_requests) {
        (Some(0), _) => {
            check.invalid(
                format!("{field}.maxConnections"),
                "must be at least 1: no connection would ever be allowed",
            );
            None
        }
        (Some(max), pending) => Some(check.reuse.upstreams.limiter(
            &backend_key,
            max,
            pending.unwrap_or(0),
        )),
        (None, Some(_)) => {
            check.invalid(
                format!("{field}.maxPendingRequests"),
                "needs maxConnections: requests wait only for a connection limit",
            );
            None
        }
        (None, None) => None,
    };
    let upstreams = &mut check.reuse.upstreams;
    let endpoints: Vec<_> = addresses
        .into_iter()
        .map(|a| upstreams.endpoint(&backend_key, a))
        .collect();
    Some(
        upstream::Backend::new(name, weight, endpoints, balancer)
            .with_key(backend_key)
            .with_health(health)
            .with_limiter(limiter)
            .with_transport(transport),
    )
}

fn compile_balancer(
    lb: Option<&config::LoadBalancer>,
    field: &str,
    check: &mut Check<'_, '_>,
) -> upstream::Balancer {
    use upstream::balance::{HashOn, Kind};
    let Some(lb) = lb else {
        return upstream::Balancer::default();
    };
    let field = format!("{field}.loadBalancer");
    let kind = match lb.kind {
        config::LoadBalancerType::RoundRobin => Kind::RoundRobin,
        config::LoadBalancerType::LeastRequest => Kind::LeastRequest,
        config::LoadBalancerType::ConsistentHash => Kind::ConsistentHash,
    };
    let hash_on = match (&lb.hash_on, kind) {
        (None, Kind::ConsistentHash) => {
            check.invalid(format!("{field}.hashOn"), "ConsistentHash needs hashOn");
            None
        }
        (None, _) => None,
        (Some(_), k) if k != Kind::ConsistentHash => {
            check.invalid(
                format!("{field}.hashOn"),
                "hashOn is only for type ConsistentHash",
            );
            None
        }
        (Some(h), _) => {
            let set = [
                h.header.is_some(),
                h.cookie.is_some(),
                h.client_address,
                h.query_parameter.is_some(),
            ];
            if set.iter().filter(|s| **s).count() != 1 {
                check.invalid(
                    format!("{field}.hashOn"),
                    "set exactly one of header, cookie, clientAddress and queryParameter",
                );
                None
            } else if let Some(name) = &h.header {
                match HeaderName::from_bytes(name.as_bytes()) {
                    Ok(n) => Some(HashOn::Header(n)),
                    Err(_) => {
                        check.invalid(
                            format!("{field}.hashOn.header"),
                            format!("{name:?} is not a valid header name"),
                        );
                        None
                    }
                }
            } else if let Some(c) = &h.cookie {
                Some(HashOn::Cookie(c.clone()))
            } else if let Some(q) = &h.query_parameter {
                Some(HashOn::QueryParameter(q.clone()))
            } else {
                Some(HashOn::ClientAddress)
            }
        }
    };
    let session = lb.session_cookie.as_ref().and_then(|c| {
        let valid = !c.name.is_empty()
            && c.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            check.invalid(
                format!("{field}.sessionCookie.name"),
                "letters, digits, '_' and '-' only",
            );
            return None;
        }
        Some(upstream::SessionCookie {
            name: c.name.clone(),
            ttl: c.ttl.map(|d| d.0),
        })
    });
    upstream::Balancer {
        kind,
        hash_on,
        session,
    }
}

fn compile_retry(
    r: &config::Retry,
    rule_key: &str,
    field: &str,
    check: &mut Check<'_, '_>,
) -> upstream::RetryPolicy {
    use config::RetryOn;
    // The CRD schema holds these bounds in a cluster; files are checked here.
    if !(1..=10).contains(&r.attempts) {
        check.invalid(format!("{field}.attempts"), "must be from 1 to 10");
    }
    if r.budget_percent.is_some_and(|p| !(1..=100).contains(&p)) {
        check.invalid(format!("{field}.budgetPercent"), "must be from 1 to 100");
    }
    for (i, code) in r.status_codes.iter().enumerate() {
        if !(400..=599).contains(code) {
            check.invalid(
                format!("{field}.statusCodes[{i}]"),
                "must be a status code from 400 to 599",
            );
        }
    }
    let defaults = r.on.is_empty() && r.status_codes.is_empty();
    let on = |c: RetryOn| {
        defaults && c != RetryOn::PerTryTimeout && c != RetryOn::ServerError || r.on.contains(&c)
    };
    let status_codes = if defaults {
        vec![502, 503, 504]
    } else {
        r.status_codes.clone()
    };
    let percent = r.budget_percent.unwrap_or(20).clamp(1, 100);
    upstream::RetryPolicy {
        attempts: r.attempts.min(10),
        on_connect_failure: on(RetryOn::ConnectFailure),
        on_reset: on(RetryOn::Reset),
        on_per_try_timeout: on(RetryOn::PerTryTimeout),
        on_server_error: on(RetryOn::ServerError),
        status_codes,
        backoff: r.backoff.map_or(Duration::from_millis(25), |d| d.0),
        max_backoff: r.max_backoff.map_or(Duration::from_millis(250), |d| d.0),
        non_idempotent: r.non_idempotent,
        budget: check.reuse.upstreams.budget(rule_key.to_owned(), percent),
    }
}

fn compile_health(
    h: &config::HealthCheck,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<Arc<upstream::HealthPolicy>> {
    let passive = h.passive.as_ref().map(|p| upstream::PassiveCheck {
        consecutive_failures: p.consecutive_failures.unwrap_or(5).max(1),
        base_ejection: p
            .base_ejection_time
            .map_or(Duration::from_secs(30), |d| d.0),
        max_ejection: p
            .max_ejection_time
            .map_or(Duration::from_secs(300), |d| d.0),
    });
    let active = match &h.active {
        None => None,
        Some(a) => match a.path.parse::<http::uri::PathAndQuery>() {
            Ok(path) if a.path.starts_with('/') => {
                let interval = a.interval.map_or(Duration::from_secs(10), |d| d.0);
                let timeout = a.timeout.map_or(Duration::from_secs(2), |d| d.0);
                if interval < Duration::from_millis(100) {
                    check.invalid(
                        format!("{field}.active.interval"),
                        "at least 100ms, or the probes become the load",
                    );
                }
                Some(Arc::new(upstream::ActiveCheck {
                    path,
                    interval,
                    timeout: timeout.min(interval),
                    healthy_threshold: a.healthy_threshold.unwrap_or(2).max(1),
                    unhealthy_threshold: a.unhealthy_threshold.unwrap_or(3).max(1),
                }))
            }
            _ => {
                check.invalid(
                    format!("{field}.active.path"),
                    format!("{:?} is not an absolute path", a.path),
                );
                None
            }
        },
    };
    if passive.is_none() && active.is_none() {
        return None;
    }
    Some(Arc::new(upstream::HealthPolicy {
        passive,
        active,
        panic_percent: h.panic_threshold_percent.unwrap_or(50).min(100),
    }))
}

/// Accepts `host:port` with a port in 1..=65535 and nothing else (no scheme, no path).
fn parse_address(addr: &str) -> Option<http::uri::Authority> {
    let authority: http::uri::Authority = addr.parse().ok()?;
    let port = authority.port_u16()?;
    (port != 0 && !authority.host().is_empty() && !addr.contains('@')).then_some(authority)
}

mod bff;
mod transport;

#[cfg(test)]
mod tests;
