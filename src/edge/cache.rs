//! The `cache` section: responses kept in memory and answered again while RFC 9111
//! allows.
//!
//! `http-cache-semantics` takes the decisions: whether a response may be stored,
//! whether a stored one is fresh for a new request (its `Vary` included), its `Age`,
//! which validators revalidate it and whether a 304 refreshes it. This module adds the
//! key, the store, the body and the `Cache-Status` field (RFC 9211).
//!
//! The key is the Route, the method (GET or HEAD), scheme, host, path and query, and a
//! digest of the `keyIncludes` values. One entry holds the variants of that key: the
//! responses whose `Vary` selected different request headers, newest first.
//!
//! A request with credentials (`Authorization`, `Cookie`, a checked API key or token)
//! is not answered from, nor stored in, the shared entries: only when `keyIncludes`
//! names something that identifies the caller, and every part has a value, does it get
//! entries of its own, judged as a private cache would (`private` is then storable).
//! `no-store`, `Set-Cookie`, `Vary: *` and event streams are never stored.

use super::{EdgeRequest, Verified};
use crate::{
    config::{CacheKeyType, CachePolicy},
    metrics::Metrics,
    policy::access::BuildErrors,
    proxy::{full, ProxyBody},
};
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_cache_semantics::{
    AfterResponse, BeforeRequest, CacheOptions, CachePolicy as Semantics, RequestLike, ResponseLike,
};
use ring::digest;
use std::{
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// RFC 9211.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The cache's name in `Cache-Status`.
const CACHE_NAME: &str = "portcullis";

/// Enough for many thousands of typical API answers, small next to the memory a
/// gateway pod is given (the Helm chart's limit is 512 MiB).
const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Larger bodies are usually downloads that gain little from a shared cache and
/// would push many small entries out.
const DEFAULT_MAX_OBJECT_BYTES: u64 = 1024 * 1024;

/// A body is held in memory whole before it is stored; this bounds what one response
/// may hold.
const MAX_OBJECT_LIMIT: u64 = 64 * 1024 * 1024;

/// Variants kept under one key: a `Vary` on a header with many values (a
/// `User-Agent`) would otherwise grow one entry without end.
const MAX_VARIANTS: usize = 8;

/// How long a stale entry with a validator (`ETag` or `Last-Modified`) is kept after
/// its freshness ends, so the backend can confirm it with a 304 instead of sending the
/// body again.
const STALE_KEEP: Duration = Duration::from_secs(600);

/// A `cache` section, built: its settings and its store.
pub struct Cache {
    pub spec: CachePolicy,
    /// The Policy's `namespace/name`, the label of its byte gauge.
    policy: Arc<str>,
    max_object: u64,
    parts: Vec<KeyPart>,
    store: moka::sync::Cache<Key, Arc<Entry>>,
}

/// One part of `keyIncludes`.
#[derive(Debug)]
enum KeyPart {
    Header(HeaderName),
    Consumer,
    Claim(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    route: Arc<str>,
    rule: usize,
    head: bool,
    https: bool,
    /// The raw `Host`, as forwarded.
    host: Box<str>,
    /// Path and query.
    target: Box<str>,
    /// SHA-256 of the `keyIncludes` values, when any has one.
    extra: Option<[u8; 32]>,
}

/// The variants stored under one key.
#[derive(Debug)]
struct Entry {
    /// Newest first.
    variants: Vec<Arc<Variant>>,
    /// Until the last variant is neither fresh nor worth revalidating.
    keep_for: Duration,
    /// Bytes counted against the budget.
    weight: u32,
}

/// One stored response.
#[derive(Debug)]
struct Variant {
    semantics: Semantics,
    status: StatusCode,
    /// As the backend sent them, after the rule's response filters. Kept here rather
    /// than read back from `semantics`, which keeps one value per header name.
    headers: HeaderMap,
    body: Bytes,
    weight: usize,
}

/// The request as the cache judges it: the URL from the key, and the client's headers
/// with the normalised host.
#[derive(Debug)]
struct CacheRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

/// A response head for `http-cache-semantics`.
struct Head<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
}

/// What a lookup found.
pub enum Outcome {
    /// A fresh response, ready to send.
    Hit(Response<ProxyBody>),
    /// Forward, then hand the response to [`Pending::respond`].
    Forward(Pending),
}

/// A forwarded request's business with the cache.
pub struct Pending {
    cache: Arc<Cache>,
    fwd: Fwd,
    plan: Plan,
}

enum Plan {
    Nothing,
    /// Store the response if it may be, replacing the stale variant, if any.
    Store(Box<Store>),
    /// An unsafe method: these entries are dropped once the backend succeeds.
    Invalidate(Vec<Key>),
}

struct Store {
    key: Key,
    request: CacheRequest,
    /// Judged as a shared cache (anonymous) or a private one (one identity's entries).
    shared: bool,
    /// The variant being revalidated.
    stale: Option<Arc<Variant>>,
}

/// Why the request was forwarded, as `Cache-Status` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fwd {
    /// Credentials the key does not include.
    Bypass,
    /// Not GET or HEAD.
    Method,
    UriMiss,
    VaryMiss,
    /// A fresh entry the request's own `Cache-Control` did not accept.
    Request,
    Stale,
}

/// Calls `on_complete` with the whole body once it has been read to its end, if it
/// fits in `limit` bytes; passes every frame on as it comes.
struct Recording<F> {
    inner: ProxyBody,
    buf: Option<BytesMut>,
    limit: usize,
    on_complete: Option<F>,
}

/// moka's per-entry expiry: each entry lives as long as its `keep_for`.
struct KeepFor;

// === impl Cache ===

impl Cache {
    pub fn build(spec: &CachePolicy, policy: &str) -> Result<Cache, BuildErrors> {
        let mut errors = BuildErrors::new();
        let max_bytes = spec.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
        if max_bytes < 1024 {
            errors.push(("maxBytes".into(), "must be at least 1024".into()));
        }
        let max_object = spec
            .max_object_bytes
            .unwrap_or(DEFAULT_MAX_OBJECT_BYTES.min(max_bytes));
        if max_object == 0 || max_object > MAX_OBJECT_LIMIT {
            errors.push((
                "maxObjectBytes".into(),
                format!("must be between 1 and {MAX_OBJECT_LIMIT}"),
            ));
        } else if max_object > max_bytes {
            errors.push((
                "maxObjectBytes".into(),
                format!("cannot exceed maxBytes ({max_bytes})"),
            ));
        }
        let mut parts = Vec::new();
        for (i, part) in spec.key_includes.iter().enumerate() {
            let field = format!("keyIncludes[{i}].name");
            let name = part.name.as_deref().filter(|n| !n.is_empty());
            match (part.kind, name) {
                (CacheKeyType::Header, Some(n)) => match HeaderName::from_bytes(n.as_bytes()) {
                    Ok(h) => parts.push(KeyPart::Header(h)),
                    Err(_) => errors.push((field, format!("{n:?} is not a header name"))),
                },
                (CacheKeyType::Claim, Some(n)) => parts.push(KeyPart::Claim(n.to_string())),
                (CacheKeyType::Consumer, None) => parts.push(KeyPart::Consumer),
                (CacheKeyType::Consumer, Some(_)) => {
                    errors.push((field, "is set only for Header and Claim".into()))
                }
                (_, None) => errors.push((field, "is required for Header and Claim".into())),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let store = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &Key, e: &Arc<Entry>| e.weight)
            .expire_after(KeepFor)
            .build();
        Ok(Cache {
            spec: spec.clone(),
            policy: policy.into(),
            max_object,
            parts,
            store,
        })
    }

    /// Looks the request up. A stale entry that can be revalidated adds its validators
    /// to `headers`, the request about to be forwarded.
    pub(super) fn lookup(
        self: &Arc<Self>,
        req: &EdgeRequest<'_>,
        headers: &mut HeaderMap,
    ) -> Outcome {
        let forward = |fwd, plan| {
            Outcome::Forward(Pending {
                cache: self.clone(),
                fwd,
                plan,
            })
        };
        let (extra, complete) = self.extra(headers, req.verified);
        let key = |head, extra| Key {
            route: req.route.clone(),
            rule: req.rule,
            head,
            https: req.https,
            host: req.raw_host.into(),
            target: match req.query {
                Some(q) => format!("{}?{q}", req.path).into(),
                None => req.path.into(),
            },
            extra,
        };
        let head = match req.method {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                // A write through the gateway makes what it stored for the URL stale
                // (RFC 9111 §4.4): the caller's own entries and the shared ones.
                let mut keys = vec![key(false, None), key(true, None)];
                if extra.is_some() {
                    keys.extend([key(false, extra), key(true, extra)]);
                }
                return forward(Fwd::Method, Plan::Invalidate(keys));
            }
        };
        let credentialed = headers.contains_key(header::AUTHORIZATION)
            || headers.contains_key(header::COOKIE)
            || req.verified.consumer.is_some()
            || req.verified.claims.is_some();
        if credentialed && !(complete && self.covers(headers, req.verified)) {
            return forward(Fwd::Bypass, Plan::Nothing);
        }
        let scheme = if req.https { "https" } else { "http" };
        let key = key(head, extra);
        let (Ok(uri), Ok(host)) = (
            Uri::try_from(format!("{scheme}://{}{}", req.host, key.target)),
            HeaderValue::from_str(req.host),
        ) else {
            return forward(Fwd::Bypass, Plan::Nothing);
        };
        let mut cache_headers = one_line_each(headers);
        cache_headers.insert(header::HOST, host);
        let mut store = Store {
            key,
            request: CacheRequest {
                method: req.method.clone(),
                uri,
                headers: cache_headers,
            },
            shared: !credentialed,
            stale: None,
        };

        let Some(entry) = self.store.get(&store.key) else {
            return forward(Fwd::UriMiss, Plan::Store(Box::new(store)));
        };
        let now = SystemTime::now();
        for variant in &entry.variants {
            match variant.semantics.before_request(&store.request, now) {
                BeforeRequest::Fresh(_) => {
                    let ttl = variant.semantics.time_to_live(now).as_secs();
                    let status = format!("{CACHE_NAME}; hit; ttl={ttl}");
                    return Outcome::Hit(variant.answer(now, head, &status));
                }
                BeforeRequest::Stale {
                    request,
                    matches: true,
                } => {
                    let fwd = if variant.semantics.is_stale(now) {
                        Fwd::Stale
                    } else {
                        Fwd::Request
                    };
                    for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
                        if let Some(v) = request.headers.get(&name) {
                            headers.insert(name, v.clone());
                        }
                    }
                    store.stale = Some(variant.clone());
                    return forward(fwd, Plan::Store(Box::new(store)));
                }
                BeforeRequest::Stale { matches: false, .. } => {}
            }
        }
        forward(Fwd::VaryMiss, Plan::Store(Box::new(store)))
    }

    /// Whether the key tells apart every caller the request's credentials could name.
    /// A verified claim stands for the token's caller; otherwise each credential the
    /// request carries (`Authorization`, `Cookie`, an API key's consumer) must be a
    /// part of the key, or two callers sharing one of them would share entries.
    fn covers(&self, headers: &HeaderMap, verified: &Verified) -> bool {
        let has = |want: &dyn Fn(&KeyPart) -> bool| self.parts.iter().any(want);
        let header = |name: HeaderName| has(&|p| matches!(p, KeyPart::Header(h) if *h == name));
        let claim = verified.claims.is_some() && has(&|p| matches!(p, KeyPart::Claim(_)));
        let consumer = has(&|p| matches!(p, KeyPart::Consumer));
        let needs = [
            (
                headers.contains_key(header::AUTHORIZATION),
                claim || header(header::AUTHORIZATION),
            ),
            (
                headers.contains_key(header::COOKIE),
                claim || header(header::COOKIE),
            ),
            (verified.consumer.is_some(), consumer),
            (
                verified.claims.is_some(),
                claim || header(header::AUTHORIZATION),
            ),
        ];
        needs.iter().all(|&(present, covered)| !present || covered)
    }

    /// The digest of the `keyIncludes` values (none when no part has a value), and
    /// whether every part has one.
    fn extra(&self, headers: &HeaderMap, verified: &Verified) -> (Option<[u8; 32]>, bool) {
        let mut ctx = digest::Context::new(&digest::SHA256);
        let (mut any, mut all) = (false, true);
        for part in &self.parts {
            let value: Option<Vec<u8>> = match part {
                KeyPart::Header(name) => {
                    // A line break cannot occur in a field value, so joining on one
                    // keeps different lists apart.
                    let values: Vec<&[u8]> =
                        headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
                    (!values.is_empty()).then(|| values.join(&b"\n"[..]))
                }
                KeyPart::Consumer => verified.consumer.as_deref().map(|c| c.as_bytes().to_vec()),
                KeyPart::Claim(name) => verified
                    .claims
                    .as_ref()
                    .and_then(|c| c.get_str(name))
                    .map(String::into_bytes),
            };
            // Each value is length-prefixed and an absent one marked, so no two
            // different lists of values hash alike.
            match value {
                Some(v) => {
                    any = true;
                    ctx.update(&[1]);
                    ctx.update(&(v.len() as u64).to_be_bytes());
                    ctx.update(&v);
                }
                None => {
                    all = false;
                    ctx.update(&[0]);
                }
            }
        }
        let extra = any.then(|| {
            ctx.finish()
                .as_ref()
                .try_into()
                .expect("SHA-256 digests are 32 bytes")
        });
        (extra, all)
    }

    /// Stores or refreshes from the backend's answer, and labels it.
    fn respond(
        self: Arc<Self>,
        store: Store,
        fwd: Fwd,
        mut resp: Response<ProxyBody>,
        metrics: &Arc<Metrics>,
        route: &Arc<str>,
    ) -> Response<ProxyBody> {
        let now = SystemTime::now();
        let options = CacheOptions {
            shared: store.shared,
            ..CacheOptions::default()
        };
        if let Some(stale) = &store.stale {
            let confirmed = resp.status() == StatusCode::NOT_MODIFIED
                && matches!(
                    stale.semantics.after_response(&store.request, &resp, now),
                    AfterResponse::NotModified(..)
                );
            if confirmed {
                // The entry is judged on the 304's fields, not on this request's own
                // directives: one client's `no-store` must not drop it for everyone.
                let variant =
                    Arc::new(stale.refreshed(&store.request, resp.headers(), now, options));
                // The 304's fields may forbid storing now (`no-store`, `private`, a
                // `Set-Cookie`): this client gets them, no later one does. A request's
                // own `no-store` only keeps this exchange out of the store.
                let fields = &variant.headers;
                if !self.storable(&variant.semantics, variant.status, fields, now) {
                    self.forget(store.key, &store.request, now, metrics);
                } else if !directive(&store.request.headers, "no-store") {
                    self.insert(store.key, variant.clone(), &store.request, now, metrics);
                }
                let status = format!("{CACHE_NAME}; fwd={}; fwd-status=304", fwd.token());
                return variant.answer(now, store.request.method == Method::HEAD, &status);
            }
        }

        let request = store.request.trimmed(resp.headers());
        let semantics = Semantics::new_options(&request, &resp, now, options);
        let storable = self.storable(&semantics, resp.status(), resp.headers(), now);
        let head = (resp.status(), resp.headers().clone());
        set_status(
            resp.headers_mut(),
            &format!("{CACHE_NAME}; fwd={}", fwd.token()),
        );
        if !storable {
            return resp;
        }

        let cache = self.clone();
        let metrics = metrics.clone();
        let route = route.clone();
        let on_complete = move |body: Bytes| {
            let (status, headers) = head;
            let variant = Variant::new(semantics, status, headers, body, &request);
            cache.insert(store.key, Arc::new(variant), &store.request, now, &metrics);
            metrics.cache_stores.with_label_values(&[&*route]).inc();
        };
        if resp.body().is_end_stream() {
            on_complete(Bytes::new());
            return resp;
        }
        let limit = usize::try_from(self.max_object).unwrap_or(usize::MAX);
        resp.map(|inner| {
            Recording {
                inner,
                buf: Some(BytesMut::new()),
                limit,
                on_complete: Some(on_complete),
            }
            .boxed()
        })
    }

    fn storable(
        &self,
        semantics: &Semantics,
        status: StatusCode,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> bool {
        // A 206 holds part of the body; storing it would answer later requests with it.
        if status == StatusCode::PARTIAL_CONTENT || !semantics.is_storable() {
            return false;
        }
        // A cookie is meant for one answer; replaying it would hand one session to
        // whoever asks next.
        if headers.contains_key(header::SET_COOKIE) || vary_names(headers).any(|n| n == "*") {
            return false;
        }
        // A stream has no end to store at, and must never wait for one.
        let event_stream = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
            });
        if event_stream {
            return false;
        }
        let too_long = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > self.max_object);
        if too_long {
            return false;
        }
        semantics.time_to_live(now) > Duration::ZERO || has_validator(headers)
    }

    /// Puts `variant` first under `key`, in place of the variant the same request
    /// selected before.
    fn insert(
        &self,
        key: Key,
        variant: Arc<Variant>,
        request: &CacheRequest,
        now: SystemTime,
        metrics: &Metrics,
    ) {
        let mut variants = vec![variant];
        if let Some(old) = self.store.get(&key) {
            let others = old.variants.iter().filter(|v| !v.selected_by(request, now));
            variants.extend(others.take(MAX_VARIANTS - 1).cloned());
        }
        self.put(key, variants, now, metrics);
    }

    /// Drops the variant `request` selects under `key`, keeping the others.
    fn forget(&self, key: Key, request: &CacheRequest, now: SystemTime, metrics: &Metrics) {
        let Some(old) = self.store.get(&key) else {
            return;
        };
        let others: Vec<Arc<Variant>> = old
            .variants
            .iter()
            .filter(|v| !v.selected_by(request, now))
            .cloned()
            .collect();
        if others.is_empty() {
            self.store.invalidate(&key);
        } else {
            self.put(key, others, now, metrics);
        }
    }

    fn put(&self, key: Key, variants: Vec<Arc<Variant>>, now: SystemTime, metrics: &Metrics) {
        let keep_for = variants
            .iter()
            .map(|v| v.keep_for(now))
            .max()
            .unwrap_or_default();
        let weight = key_weight(&key) + variants.iter().map(|v| v.weight).sum::<usize>();
        let entry = Entry {
            variants,
            keep_for,
            weight: u32::try_from(weight).unwrap_or(u32::MAX),
        };
        self.store.insert(key, Arc::new(entry));
        // Applies the budget now, so the gauge reads what is really held.
        self.store.run_pending_tasks();
        metrics
            .cache_bytes
            .with_label_values(&[&*self.policy])
            .set(i64::try_from(self.store.weighted_size()).unwrap_or(i64::MAX));
    }
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("spec", &self.spec)
            .field("entries", &self.store.entry_count())
            .finish_non_exhaustive()
    }
}

// === impl Pending ===

impl Pending {
    /// The `result` label of the lookup metric.
    pub(super) fn result_label(&self) -> &'static str {
        match self.fwd {
            Fwd::Bypass | Fwd::Method => "bypass",
            Fwd::UriMiss | Fwd::VaryMiss => "miss",
            Fwd::Request | Fwd::Stale => "stale",
        }
    }

    pub(super) fn respond(
        self,
        mut resp: Response<ProxyBody>,
        metrics: &Arc<Metrics>,
        route: &Arc<str>,
    ) -> Response<ProxyBody> {
        let Pending { cache, fwd, plan } = self;
        match plan {
            Plan::Store(store) => return cache.respond(*store, fwd, resp, metrics, route),
            Plan::Invalidate(keys) => {
                if resp.status().is_success() || resp.status().is_redirection() {
                    for key in &keys {
                        cache.store.invalidate(key);
                    }
                }
            }
            Plan::Nothing => {}
        }
        set_status(
            resp.headers_mut(),
            &format!("{CACHE_NAME}; fwd={}", fwd.token()),
        );
        resp
    }
}

// === impl Fwd ===

impl Fwd {
    fn token(self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Request => "request",
            Fwd::Stale => "stale",
        }
    }
}

// === impl Variant ===

impl Variant {
    fn new(
        semantics: Semantics,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        request: &CacheRequest,
    ) -> Variant {
        // The request's headers are held too, by `semantics`.
        let weight = body.len() + header_bytes(&headers) * 2 + header_bytes(&request.headers);
        Variant {
            semantics,
            status,
            headers,
            body,
            weight,
        }
    }

    /// The stored response, as an answer sent now.
    fn answer(&self, now: SystemTime, head: bool, cache_status: &str) -> Response<ProxyBody> {
        let mut headers = self.headers.clone();
        headers.insert(
            header::AGE,
            HeaderValue::from(self.semantics.age(now).as_secs()),
        );
        set_status(&mut headers, cache_status);
        let body = if head {
            Bytes::new()
        } else {
            self.body.clone()
        };
        let mut resp = Response::new(full(body));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = headers;
        resp
    }

    /// This variant with the header fields of a 304 that confirmed it (RFC 9111
    /// §4.3.4): each field the 304 sends replaces the stored one, except those that
    /// describe the body.
    fn refreshed(
        &self,
        request: &CacheRequest,
        update: &HeaderMap,
        now: SystemTime,
        options: CacheOptions,
    ) -> Variant {
        let mut headers = self.headers.clone();
        // These describe the stored body, or this exchange only.
        let skipped = [
            header::CONTENT_LENGTH,
            header::CONTENT_ENCODING,
            header::CONTENT_RANGE,
            header::TRANSFER_ENCODING,
            CACHE_STATUS,
        ];
        for name in update.keys() {
            if skipped.contains(name) {
                continue;
            }
            headers.remove(name);
            for value in update.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        // Judged without this request's directives, unless `Vary` names them.
        let trimmed = request.trimmed_with(&headers, false);
        let head = Head {
            status: self.status,
            headers: &headers,
        };
        let semantics = Semantics::new_options(&trimmed, &head, now, options);
        Variant::new(semantics, self.status, headers, self.body.clone(), &trimmed)
    }

    /// Whether `request` would select this variant, fresh or not.
    fn selected_by(&self, request: &CacheRequest, now: SystemTime) -> bool {
        matches!(
            self.semantics.before_request(request, now),
            BeforeRequest::Fresh(_) | BeforeRequest::Stale { matches: true, .. }
        )
    }

    fn keep_for(&self, now: SystemTime) -> Duration {
        let fresh = self.semantics.time_to_live(now);
        if has_validator(&self.headers) {
            fresh + STALE_KEEP
        } else {
            fresh
        }
    }
}

/// `headers` with the lines of each field joined into one: the `Vary` comparison reads
/// a field's first line only, and `a` then `b` must not match a request sending `a`.
fn one_line_each(headers: &HeaderMap) -> HeaderMap {
    // Most requests repeat no field: the map is then a plain (cheap) copy.
    if headers.keys_len() == headers.len() {
        return headers.clone();
    }
    let mut out = HeaderMap::with_capacity(headers.keys_len());
    for name in headers.keys() {
        let mut lines = headers.get_all(name).iter();
        let first = lines.next().expect("a key has a value");
        let mut joined = first.as_bytes().to_vec();
        for line in lines {
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(line.as_bytes());
        }
        let value = HeaderValue::from_bytes(&joined).unwrap_or_else(|_| first.clone());
        out.insert(name.clone(), value);
    }
    out
}

/// Whether `headers` carry the `Cache-Control` directive `name`.
fn directive(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            d.split('=')
                .next()
                .is_some_and(|d| d.trim().eq_ignore_ascii_case(name))
        })
}

// === impl CacheRequest ===

impl CacheRequest {
    /// The request as a stored response keeps it: only the fields the cache decisions
    /// read, and those the response's `Vary` names.
    fn trimmed(&self, response: &HeaderMap) -> CacheRequest {
        self.trimmed_with(response, true)
    }

    /// As [`Self::trimmed`], keeping the request's `Cache-Control` and `Pragma` only
    /// when `directives` is set or the response's `Vary` names them.
    fn trimmed_with(&self, response: &HeaderMap, directives: bool) -> CacheRequest {
        let mut headers = HeaderMap::new();
        let kept: &[HeaderName] = if directives {
            &[header::HOST, header::CACHE_CONTROL, header::PRAGMA]
        } else {
            &[header::HOST]
        };
        let varied: Vec<HeaderName> = vary_names(response)
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for name in kept.iter().chain(&varied) {
            for value in self.headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        CacheRequest {
            method: self.method.clone(),
            uri: self.uri.clone(),
            headers,
        }
    }
}

impl RequestLike for CacheRequest {
    fn uri(&self) -> Uri {
        self.uri.clone()
    }

    fn is_same_uri(&self, other: &Uri) -> bool {
        self.uri == *other
    }

    fn method(&self) -> &Method {
        &self.method
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

impl ResponseLike for Head<'_> {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

// === impl Recording ===

impl<F: FnOnce(Bytes)> Recording<F> {
    fn complete(&mut self) {
        if let (Some(buf), Some(f)) = (self.buf.take(), self.on_complete.take()) {
            f(buf.freeze());
        }
    }
}

impl<F: FnOnce(Bytes) + Unpin> Body for Recording<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                match (frame.data_ref(), &mut this.buf) {
                    (Some(data), Some(buf)) if buf.len() + data.len() <= this.limit => {
                        buf.extend_from_slice(data)
                    }
                    // Too long to store, or trailers, which a stored answer would lose.
                    _ => this.buf = None,
                }
                // Stored before the last bytes go out, so the client's next request
                // finds the entry.
                if this.inner.is_end_stream() {
                    this.complete();
                }
            }
            Poll::Ready(None) => this.complete(),
            Poll::Ready(Some(Err(_))) => this.buf = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl KeepFor ===

impl moka::Expiry<Key, Arc<Entry>> for KeepFor {
    fn expire_after_create(&self, _: &Key, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(entry.keep_for)
    }

    fn expire_after_update(
        &self,
        _: &Key,
        entry: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.keep_for)
    }
}

/// Adds this cache's member to `Cache-Status`, after those of the caches nearer the
/// origin (RFC 9211 §2).
fn set_status(headers: &mut HeaderMap, member: &str) {
    let mut list: Vec<String> = headers
        .get_all(CACHE_STATUS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    list.push(member.to_owned());
    if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
        headers.insert(CACHE_STATUS, v);
    }
}

/// The lower-case names a response's `Vary` lists.
fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}

fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum()
}

fn key_weight(key: &Key) -> usize {
    key.route.len() + key.host.len() + key.target.len() + std::mem::size_of::<Key>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheKeyPart;

    fn mk_cache(parts: &[(CacheKeyType, Option<&str>)]) -> Cache {
        let spec = CachePolicy {
            key_includes: parts
                .iter()
                .map(|(kind, name)| CacheKeyPart {
                    kind: *kind,
                    name: name.map(str::to_string),
                })
                .collect(),
            ..Default::default()
        };
        Cache::build(&spec, "default/test").unwrap()
    }

    fn mk_headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn key_values_are_told_apart_and_absent_ones_marked() {
        let cache = mk_cache(&[
            (CacheKeyType::Header, Some("x-a")),
            (CacheKeyType::Header, Some("x-b")),
        ]);
        let none = Verified::default();
        let extra = |pairs| cache.extra(&mk_headers(pairs), &none);

        assert_eq!(extra(&[]), (None, false));
        let (ab, complete) = extra(&[("x-a", "1"), ("x-b", "2")]);
        assert!(complete && ab.is_some());
        // The same bytes split differently, or moved to the other part, differ.
        assert_ne!(ab, extra(&[("x-a", "12")]).0);
        assert_ne!(extra(&[("x-a", "1")]).0, extra(&[("x-b", "1")]).0);
        assert_ne!(ab, extra(&[("x-a", "1"), ("x-a", "2")]).0);
        assert!(!extra(&[("x-a", "1")]).1);
        assert_eq!(ab, extra(&[("x-b", "2"), ("x-a", "1")]).0);
    }

    #[test]
    fn every_credential_sent_must_be_in_the_key() {
        let covers = |kind, name, sent: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in sent {
                h.insert(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            mk_cache(&[(kind, name)]).covers(&h, &Verified::default())
        };
        let auth = ("authorization", "Basic YTpi");
        let cookie = ("cookie", "lang=en");
        assert!(covers(CacheKeyType::Header, Some("Authorization"), &[auth]));
        assert!(covers(CacheKeyType::Header, Some("cookie"), &[cookie]));
        // One credential in the key does not cover another the request carries.
        assert!(!covers(
            CacheKeyType::Header,
            Some("cookie"),
            &[cookie, auth]
        ));
        assert!(!covers(
            CacheKeyType::Header,
            Some("Authorization"),
            &[auth, cookie]
        ));
        assert!(!covers(CacheKeyType::Header, Some("x-tenant"), &[auth]));
        // A claim counts only once a Policy verified the token...
        assert!(!covers(CacheKeyType::Claim, Some("sub"), &[auth]));
        assert!(!covers(CacheKeyType::Consumer, None, &[auth]));
        // ...and then stands for the caller, whatever else it sends.
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), "alice".into());
        let verified = Verified::new(None, Some(crate::policy::jwt::Claims(claims)));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        h.insert(header::COOKIE, "lang=en".parse().unwrap());
        let by_claim = mk_cache(&[(CacheKeyType::Claim, Some("sub"))]);
        assert!(by_claim.covers(&h, &verified));
        // An API key's consumer must be in the key, a claim does not name it.
        let both = Verified {
            consumer: Some("app".into()),
            ..verified
        };
        assert!(!by_claim.covers(&h, &both));
    }

    #[test]
    fn limits_are_checked_against_each_other() {
        let build = |max_bytes, max_object| {
            let spec = CachePolicy {
                max_bytes,
                max_object_bytes: max_object,
                ..Default::default()
            };
            Cache::build(&spec, "default/test").map(|c| c.max_object)
        };
        assert_eq!(build(None, None), Ok(DEFAULT_MAX_OBJECT_BYTES));
        assert_eq!(build(Some(4096), None), Ok(4096));
        let fields = |r: Result<u64, BuildErrors>| {
            r.unwrap_err()
                .into_iter()
                .map(|(f, _)| f)
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(build(Some(100), None)), ["maxBytes"]);
        assert_eq!(fields(build(Some(4096), Some(8192))), ["maxObjectBytes"]);
        assert_eq!(fields(build(None, Some(0))), ["maxObjectBytes"]);
    }
}
