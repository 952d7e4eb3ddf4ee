//! Policies: who may call a Route, how often, and what its answers go through
//! (caching and compression, run by [`crate::edge`]).
//!
//! [`build`] compiles every Policy, attaches its sections to the Routes its `targetRefs`
//! name, and settles conflicts (the older Policy keeps a section). [`enforce`] runs the
//! sections of one Route on a request, in a fixed order: IP access, CORS preflight,
//! API key, JWT, then the rest, and the rate limit last, so refused requests use no
//! quota.
//!
//! A Policy that does not build keeps its previous good version serving. When it has
//! none, the Routes it names refuse every request rather than serve without the
//! protection it asks for.

pub mod access;
pub mod introspect;
pub mod jwks;
pub mod jwt;
pub mod ratelimit;

use crate::{
    compile::{age_key, Problem, Reason},
    config::{
        BffSpec, ObjectKey, PolicySpec, RateLimitKeyType, Resource, Resources, RouteSpec,
        TargetKind,
    },
    edge::{cache::Cache, compress::Compression},
};
use access::{ApiKeys, BuildErrors, Cors, IpAccess, Preflight};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use introspect::Introspection;
use jwks::JwksRegistry;
use jwt::{Claims, JwtAuth, JwtDenied};
use ratelimit::{Decision, RateLimiter};
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
};

/// The sections in force on each Route, and the Policies that serve.
#[derive(Debug, Default)]
pub struct PolicyTable {
    /// By the Route's `namespace/name`, the label every rule action carries.
    by_route: HashMap<Arc<str>, Arc<RoutePolicy>>,
    /// The Policies that serve, by key: each the version given, or a previous good one.
    pub policies: BTreeMap<ObjectKey, Resource<PolicySpec>>,
    /// What each serving Policy built, for the next build to reuse.
    built: BTreeMap<ObjectKey, Arc<BuiltPolicy>>,
    /// Key sets fetched for JWT sections. Each table hands it on to the next, so fetched
    /// keys outlive recompiles.
    jwks: JwksRegistry,
}

/// The sections one Route gets, each from the oldest Policy that sets it.
#[derive(Debug, Default)]
pub struct RoutePolicy {
    pub ip_access: Option<Arc<IpAccess>>,
    pub cors: Option<Arc<Cors>>,
    pub api_keys: Option<Arc<ApiKeys>>,
    pub rate_limit: Option<Arc<RateLimiter>>,
    pub jwt: Option<Arc<JwtAuth>>,
    pub introspection: Option<Arc<Introspection>>,
    pub cache: Option<Arc<Cache>>,
    pub compression: Option<Arc<Compression>>,
    /// Why every request is refused: a Policy naming this Route does not build and has
    /// no good version to fall back on.
    pub broken: Option<String>,
}

/// One Policy's sections, built.
#[derive(Debug)]
struct BuiltPolicy {
    ip_access: Option<Arc<IpAccess>>,
    cors: Option<Arc<Cors>>,
    api_keys: Option<Arc<ApiKeys>>,
    rate_limit: Option<Arc<RateLimiter>>,
    jwt: Option<Arc<JwtAuth>>,
    introspection: Option<Arc<Introspection>>,
    cache: Option<Arc<Cache>>,
    compression: Option<Arc<Compression>>,
}

// === impl PolicyTable ===

impl PolicyTable {
    /// The sections of the Route labelled `route`, if any Policy names it.
    pub fn for_route(&self, route: &str) -> Option<&Arc<RoutePolicy>> {
        self.by_route.get(route)
    }
}

/// Builds every Policy of `resources` against the Routes that serve.
pub fn build(
    resources: &Resources,
    routes: &BTreeMap<ObjectKey, Resource<RouteSpec>>,
    bffs: &BTreeMap<ObjectKey, Resource<BffSpec>>,
    previous: Option<&PolicyTable>,
    problems: &mut Vec<Problem>,
) -> PolicyTable {
    let jwks = previous.map(|p| p.jwks.clone()).unwrap_or_default();
    let mut serving: Vec<(Resource<PolicySpec>, Arc<BuiltPolicy>)> = Vec::new();
    let mut broken: Vec<((TargetKind, ObjectKey), String)> = Vec::new();
    for policy in &resources.policies {
        let key = policy.meta.key();
        let reuse = previous.and_then(|p| p.built.get(&key));
        match build_one(&policy.spec, &key, resources, reuse, &jwks) {
            Ok(built) => serving.push((policy.clone(), built)),
            Err(errors) => {
                for (field, message) in errors {
                    problems.push(problem(&key, field, Reason::Invalid, message));
                }
                let old = previous.and_then(|p| Some((p.policies.get(&key)?, p.built.get(&key)?)));
                match old {
                    Some((spec, built)) => serving.push((spec.clone(), built.clone())),
                    None => {
                        for t in &policy.spec.target_refs {
                            broken.push((
                                target_key(&key, t),
                                format!("Policy {key} is invalid; see its status"),
                            ));
                        }
                    }
                }
            }
        }
    }
    // Older Policies claim sections first, so every replica settles a conflict alike.
    serving.sort_by_cached_key(|(p, _)| age_key(&p.meta));

    #[derive(Default)]
    struct Claims {
        ip_access: Option<(ObjectKey, Arc<IpAccess>)>,
        cors: Option<(ObjectKey, Arc<Cors>)>,
        api_keys: Option<(ObjectKey, Arc<ApiKeys>)>,
        rate_limit: Option<(ObjectKey, Arc<RateLimiter>)>,
        jwt: Option<(ObjectKey, Arc<JwtAuth>)>,
        introspection: Option<(ObjectKey, Arc<Introspection>)>,
        cache: Option<(ObjectKey, Arc<Cache>)>,
        compression: Option<(ObjectKey, Arc<Compression>)>,
        broken: Option<String>,
    }
    let mut claims: BTreeMap<(TargetKind, ObjectKey), Claims> = BTreeMap::new();
    let serves = |(kind, key): &(TargetKind, ObjectKey)| match kind {
        TargetKind::Route => routes.contains_key(key),
        TargetKind::BFF => bffs.contains_key(key),
    };
    for (policy, built) in &serving {
        let key = policy.meta.key();
        for (i, target) in policy.spec.target_refs.iter().enumerate() {
            let target_id = target_key(&key, target);
            let route = &target_id.1;
            if !serves(&target_id) {
                problems.push(problem(
                    &key,
                    format!("spec.targetRefs[{i}]"),
                    Reason::TargetNotFound,
                    format!("{:?} {route} not found, or not served", target.kind),
                ));
                continue;
            }
            let c = claims.entry(target_id.clone()).or_default();
            let mut conflict = |section: &str, owner: &ObjectKey| {
                problems.push(problem(
                    &key,
                    format!("spec.{section}"),
                    Reason::Conflicted,
                    format!(
                        "{:?} {route} already has {section} from Policy {owner}, which is older",
                        target.kind
                    ),
                ));
            };
            macro_rules! claim {
                ($field:ident, $name:literal) => {
                    if let Some(section) = &built.$field {
                        match &c.$field {
                            Some((owner, _)) if *owner != key => conflict($name, owner),
                            Some(_) => {}
                            None => c.$field = Some((key.clone(), section.clone())),
                        }
                    }
                };
            }
            claim!(ip_access, "ipAccess");
            claim!(cors, "cors");
            claim!(api_keys, "apiKeys");
            claim!(rate_limit, "rateLimit");
            claim!(jwt, "jwt");
            claim!(introspection, "introspection");
            claim!(cache, "cache");
            claim!(compression, "compression");
        }
    }
    for (route, why) in broken {
        if serves(&route) {
            claims.entry(route).or_default().broken = Some(why);
        }
    }

    let by_route = claims
        .into_iter()
        .map(|((kind, key), c)| {
            let policy = RoutePolicy {
                ip_access: c.ip_access.map(|(_, s)| s),
                cors: c.cors.map(|(_, s)| s),
                api_keys: c.api_keys.map(|(_, s)| s),
                rate_limit: c.rate_limit.map(|(_, s)| s),
                jwt: c.jwt.map(|(_, s)| s),
                introspection: c.introspection.map(|(_, s)| s),
                cache: c.cache.map(|(_, s)| s),
                compression: c.compression.map(|(_, s)| s),
                broken: c.broken,
            };
            let label = match kind {
                TargetKind::Route => key.to_string(),
                TargetKind::BFF => crate::bff::label(&key),
            };
            (Arc::from(label), Arc::new(policy))
        })
        .collect();
    let mut policies = BTreeMap::new();
    let mut built = BTreeMap::new();
    for (policy, b) in serving {
        let key = policy.meta.key();
        built.insert(key.clone(), b);
        policies.insert(key, policy);
    }
    PolicyTable {
        by_route,
        policies,
        built,
        jwks,
    }
}

fn target_key(policy: &ObjectKey, target: &crate::config::TargetRef) -> (TargetKind, ObjectKey) {
    let key = ObjectKey {
        namespace: policy.namespace.clone(),
        name: target.name.clone(),
    };
    (target.kind, key)
}

fn problem(key: &ObjectKey, field: String, reason: Reason, message: String) -> Problem {
    Problem {
        kind: "Policy",
        object: key.clone(),
        field,
        reason,
        message,
    }
}

/// Builds each section, reusing the previous build of a section whose input is
/// unchanged (so state such as rate-limit buckets survives unrelated changes).
fn build_one(
    spec: &PolicySpec,
    key: &ObjectKey,
    resources: &Resources,
    previous: Option<&Arc<BuiltPolicy>>,
    jwks: &JwksRegistry,
) -> Result<Arc<BuiltPolicy>, BuildErrors> {
    let mut errors: BuildErrors = Vec::new();
    if spec.target_refs.is_empty() {
        errors.push((
            "spec.targetRefs".into(),
            "at least one target is required".into(),
        ));
    }
    let ip_access = spec.ip_access.as_ref().and_then(|s| {
        let reused = previous
            .and_then(|p| p.ip_access.clone())
            .filter(|b| b.spec == *s);
        section(
            "ipAccess",
            reuse_or_build(reused, || IpAccess::build(s)),
            &mut errors,
        )
    });
    let cors = spec.cors.as_ref().and_then(|s| {
        let reused = previous
            .and_then(|p| p.cors.clone())
            .filter(|b| b.spec == *s);
        section(
            "cors",
            reuse_or_build(reused, || Cors::build(s)),
            &mut errors,
        )
    });
    let api_keys = spec.api_keys.as_ref().and_then(|s| {
        let secret = ObjectKey {
            namespace: key.namespace.clone(),
            name: s.keys_ref.name.clone(),
        };
        let result = match resources.secret(&secret) {
            None => Err(vec![(
                "keysRef".to_string(),
                format!("Secret {secret} not found"),
            )]),
            Some((_, data)) => {
                let reused = previous
                    .and_then(|p| p.api_keys.clone())
                    .filter(|b| b.spec == *s && data.keys_yaml.as_deref() == Some(&b.source[..]));
                reuse_or_build(reused, || ApiKeys::build(s, data.keys_yaml.as_ref()))
            }
        };
        section("apiKeys", result, &mut errors)
    });
    let rate_limit = spec.rate_limit.as_ref().and_then(|s| {
        // The buckets live in the limiter: keeping it keeps every client's count.
        let reused = previous
            .and_then(|p| p.rate_limit.clone())
            .filter(|b| b.spec() == s);
        let store = resources.rate_limit_store.as_ref();
        section(
            "rateLimit",
            reuse_or_build(reused, || RateLimiter::build(s, &key.to_string(), store)),
            &mut errors,
        )
    });
    let jwt = spec.jwt.as_ref().and_then(|s| {
        let keys = match &s.keys_ref {
            None => Ok(None),
            Some(r) => {
                let secret = ObjectKey {
                    namespace: key.namespace.clone(),
                    name: r.name.clone(),
                };
                match resources.secret(&secret) {
                    None => Err(vec![(
                        "keysRef".to_string(),
                        format!("Secret {secret} not found"),
                    )]),
                    Some((_, data)) => Ok(data.jwks_json.as_ref()),
                }
            }
        };
        let result = keys.and_then(|keys| {
            let reused = previous
                .and_then(|p| p.jwt.clone())
                .filter(|b| b.spec == *s && b.source.as_ref() == keys);
            reuse_or_build(reused, || JwtAuth::build(s, keys, jwks))
        });
        section("jwt", result, &mut errors)
    });
    let introspection = spec.introspection.as_ref().and_then(|s| {
        if spec.jwt.is_some() {
            errors.push((
                "spec.introspection".into(),
                "set jwt or introspection, not both".into(),
            ));
            return None;
        }
        let secret = ObjectKey {
            namespace: key.namespace.clone(),
            name: s.client_secret_ref.name.clone(),
        };
        let result = match resources.secret(&secret) {
            None => Err(vec![(
                "clientSecretRef".to_string(),
                format!("Secret {secret} not found"),
            )]),
            Some((_, data)) => {
                let reused = previous.and_then(|p| p.introspection.clone()).filter(|b| {
                    b.spec == *s && data.client_secret.as_deref() == Some(&b.source[..])
                });
                reuse_or_build(reused, || {
                    Introspection::build(s, data.client_secret.as_ref())
                })
            }
        };
        section("introspection", result, &mut errors)
    });
    let cache = spec.cache.as_ref().and_then(|s| {
        // The store lives in the section: keeping it keeps every entry.
        let reused = previous
            .and_then(|p| p.cache.clone())
            .filter(|b| b.spec == *s);
        section(
            "cache",
            reuse_or_build(reused, || Cache::build(s, &key.to_string())),
            &mut errors,
        )
    });
    let compression = spec.compression.as_ref().and_then(|s| {
        let reused = previous
            .and_then(|p| p.compression.clone())
            .filter(|b| b.spec == *s);
        section(
            "compression",
            reuse_or_build(reused, || Compression::build(s)),
            &mut errors,
        )
    });

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Arc::new(BuiltPolicy {
        ip_access,
        cors,
        api_keys,
        rate_limit,
        jwt,
        introspection,
        cache,
        compression,
    }))
}

fn reuse_or_build<T>(
    reused: Option<Arc<T>>,
    build: impl FnOnce() -> Result<T, BuildErrors>,
) -> Result<Arc<T>, BuildErrors> {
    match reused {
        Some(b) => Ok(b),
        None => build().map(Arc::new),
    }
}

/// The built section, or its errors added to `errors` with `spec.<name>.` in front.
fn section<T>(
    name: &str,
    result: Result<Arc<T>, BuildErrors>,
    errors: &mut BuildErrors,
) -> Option<Arc<T>> {
    match result {
        Ok(b) => Some(b),
        Err(errs) => {
            errors.extend(errs.into_iter().map(|(field, message)| {
                let path = if field.is_empty() {
                    format!("spec.{name}")
                } else {
                    format!("spec.{name}.{field}")
                };
                (path, message)
            }));
            None
        }
    }
}

/// What a request may go on with.
#[derive(Debug, Default)]
pub struct Admission {
    /// The API key's consumer, when a key was checked.
    pub consumer: Option<Arc<str>>,
    /// The rate limit's decision, whose header fields go on the response.
    pub rate_limit: Option<Decision>,
    /// The token's claims, when a JWT section verified one.
    pub claims: Option<Claims>,
}

/// Why a request is answered by the gateway instead of its backend.
#[derive(Debug)]
pub enum Refusal {
    /// A CORS preflight, answered 204 with these headers.
    Preflight(HeaderMap),
    Denied(Denial),
    /// Over the rate limit: answered 429, with the decision's header fields.
    RateLimited(Decision),
}

/// A refusal's status, machine-readable code, message and extra headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
}

impl Denial {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> Denial {
        Denial {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// The 429 of a request over its rate limit. The header fields come from the
    /// decision, which the proxy puts on every answer of the Route.
    pub fn rate_limited(decision: &Decision) -> Denial {
        let wait = decision.retry_after_secs().unwrap_or(1);
        Denial::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("rate limit exceeded; retry after {wait} s"),
        )
    }
}

/// The request facts the sections judge.
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    pub client: IpAddr,
    /// The Route's `namespace/name`.
    pub route: &'a str,
    /// The query string, where a JWT section may find its token.
    pub query: Option<&'a str>,
}

/// Runs the Route's sections on a request, changing its headers where a section says
/// so (an API key removed, the consumer set).
pub async fn enforce(
    policy: &RoutePolicy,
    facts: &RequestFacts<'_>,
    headers: &mut HeaderMap,
) -> Result<Admission, Refusal> {
    if let Some(why) = &policy.broken {
        return Err(Refusal::Denied(Denial::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "policy_invalid",
            why.clone(),
        )));
    }
    if let Some(ip) = &policy.ip_access {
        if !ip.allows(facts.client) {
            return Err(Refusal::Denied(Denial::new(
                StatusCode::FORBIDDEN,
                "ip_denied",
                "the client address is not allowed",
            )));
        }
    }
    if let Some(cors) = &policy.cors {
        match cors.preflight(facts.method, headers) {
            Preflight::No => {}
            Preflight::Allowed(h) => return Err(Refusal::Preflight(h)),
            Preflight::Refused(why) => {
                return Err(Refusal::Denied(Denial::new(
                    StatusCode::FORBIDDEN,
                    "cors_refused",
                    format!("CORS preflight refused: {why}"),
                )))
            }
        }
    }
    let mut admission = Admission::default();
    if let Some(keys) = &policy.api_keys {
        match keys.authenticate(headers) {
            Ok(consumer) => admission.consumer = Some(consumer),
            Err(why) => {
                let mut d = Denial::new(StatusCode::UNAUTHORIZED, "invalid_api_key", why);
                if let Ok(v) =
                    HeaderValue::from_str(&format!("ApiKey header=\"{}\"", keys.header()))
                {
                    d.headers.push((http::header::WWW_AUTHENTICATE, v));
                }
                return Err(Refusal::Denied(d));
            }
        }
    }
    if let Some(jwt) = &policy.jwt {
        let claims = jwt
            .authenticate(headers, facts.query)
            .await
            .map_err(jwt_refusal)?;
        jwt.apply_headers(claims.as_ref(), headers)
            .map_err(jwt_refusal)?;
        admission.claims = claims;
    }
    if let Some(introspection) = &policy.introspection {
        let claims = introspection
            .authenticate(headers, facts.query)
            .await
            .map_err(jwt_refusal)?;
        introspection
            .apply_headers(&claims, headers)
            .map_err(jwt_refusal)?;
        admission.claims = Some((*claims).clone());
    }
    if let Some(limiter) = &policy.rate_limit {
        let key = rate_limit_key(limiter, facts, headers, &admission);
        let decision = limiter.check(&key).await;
        if !decision.allowed {
            return Err(Refusal::RateLimited(decision));
        }
        admission.rate_limit = Some(decision);
    }
    Ok(admission)
}

/// What the request is counted under. Each kind has its own prefix, so a header value
/// cannot name another client's address bucket. A request without the header, claim or
/// consumer is counted by its client address.
fn rate_limit_key(
    limiter: &RateLimiter,
    facts: &RequestFacts<'_>,
    headers: &HeaderMap,
    admission: &Admission,
) -> String {
    let key = &limiter.spec().key;
    let found = match key.kind {
        RateLimitKeyType::Header => key
            .name
            .as_deref()
            .and_then(|name| headers.get(name))
            .filter(|v| !v.is_empty())
            .map(|v| format!("header:{}", String::from_utf8_lossy(v.as_bytes()))),
        RateLimitKeyType::Consumer => admission.consumer.as_ref().map(|c| format!("consumer:{c}")),
        RateLimitKeyType::Route => Some(format!("route:{}", facts.route)),
        RateLimitKeyType::Claim => key
            .name
            .as_deref()
            .and_then(|name| admission.claims.as_ref()?.get_str(name))
            .map(|v| format!("claim:{v}")),
        RateLimitKeyType::ClientAddress => None,
    };
    found.unwrap_or_else(|| format!("client:{}", facts.client))
}

fn jwt_refusal(why: JwtDenied) -> Refusal {
    let mut d = Denial::new(why.status(), why.code(), why.message());
    if let Some(challenge) = why.www_authenticate() {
        d.headers.push((http::header::WWW_AUTHENTICATE, challenge));
    }
    Refusal::Denied(d)
}
