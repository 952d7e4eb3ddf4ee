//! The edge of a Route: its Policy's `cache` and `compression` sections, run around
//! forwarding.
//!
//! Two hooks, both after the Policy admitted the request, so a cached answer never
//! skips an authentication, IP or rate-limit check:
//! - [`Edge::before_forward`] looks the request up in the cache. A fresh entry answers
//!   here; a stale one adds validators to the request so the backend may answer 304.
//! - [`Edge::respond`] takes the backend's response: it refreshes or stores the cache
//!   entry, labels the answer with `Cache-Status`, then compresses it for the client.
//!
//! A Route without these sections passes through both hooks untouched.

pub mod cache;
pub mod compress;

use crate::{metrics::Metrics, policy::jwt::Claims, policy::RoutePolicy, proxy::ProxyBody};
use compress::Compression;
use http::{HeaderMap, Method, Response};
use std::sync::Arc;

/// What the Policy verified about the caller, for the cache key.
#[derive(Debug, Default)]
pub struct Verified {
    /// The API key's consumer.
    pub consumer: Option<Arc<str>>,
    /// The claims of a verified token.
    pub claims: Option<Claims>,
}

/// The request facts the edge sections need.
pub struct EdgeRequest<'a> {
    /// The Route's `namespace/name`.
    pub route: &'a Arc<str>,
    /// The rule's index in its Route: rules of one Route may send one URL to
    /// different backends (a header match), so they never share entries.
    pub rule: usize,
    pub method: Method,
    pub https: bool,
    /// Normalised: lower-case, without port.
    pub host: &'a str,
    /// As the client sent it and the backend receives it: a backend may answer
    /// `Example.com:8080` differently from `example.com`.
    pub raw_host: &'a str,
    /// Canonical, as the router matched it.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub verified: &'a Verified,
    /// False when the backend's answer may depend on more than the URL and the
    /// `keyIncludes`: the cache then neither answers nor stores.
    pub cacheable: bool,
}

/// What [`Edge::before_forward`] decided.
pub enum Lookup {
    /// Answer with this; nothing is forwarded.
    Answer(Response<ProxyBody>),
    /// Forward, then hand the response to [`Edge::respond`].
    Forward(Edge),
}

/// The edge sections' state for one forwarded request.
pub struct Edge {
    route: Arc<str>,
    metrics: Arc<Metrics>,
    cache: Option<cache::Pending>,
    compress: Option<compress::Plan>,
}

// === impl Edge ===

impl Edge {
    /// Runs after the Policy admitted the request, before anything is forwarded. May
    /// change the request's headers (validators for a revalidation).
    pub fn before_forward(
        policy: Option<&RoutePolicy>,
        req: &EdgeRequest<'_>,
        headers: &mut HeaderMap,
        metrics: &Arc<Metrics>,
    ) -> Lookup {
        let mut edge = Edge {
            route: req.route.clone(),
            metrics: metrics.clone(),
            cache: None,
            compress: None,
        };
        let Some(policy) = policy else {
            return Lookup::Forward(edge);
        };
        edge.compress = policy
            .compression
            .as_ref()
            .map(|c| Compression::plan(c, &req.method, headers));
        if let Some(cache) = policy.cache.as_ref().filter(|_| req.cacheable) {
            match cache.lookup(req, headers) {
                cache::Outcome::Hit(resp) => {
                    edge.count_lookup("hit");
                    return Lookup::Answer(edge.compress(resp));
                }
                cache::Outcome::Forward(pending) => {
                    edge.count_lookup(pending.result_label());
                    edge.cache = Some(pending);
                }
            }
        }
        Lookup::Forward(edge)
    }

    /// Runs on the backend's response, once its hop-by-hop headers are gone and the
    /// rule's response filters applied.
    pub fn respond(mut self, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        let resp = match self.cache.take() {
            Some(pending) => pending.respond(resp, &self.metrics, &self.route),
            None => resp,
        };
        self.compress(resp)
    }

    fn compress(&mut self, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        match self.compress.take() {
            Some(plan) => plan.apply(resp, &self.metrics, &self.route),
            None => resp,
        }
    }

    fn count_lookup(&self, result: &str) {
        self.metrics
            .cache_lookups
            .with_label_values(&[&*self.route, result])
            .inc();
    }
}

// === impl Verified ===

impl Verified {
    pub fn new(consumer: Option<Arc<str>>, claims: Option<Claims>) -> Verified {
        Verified { consumer, claims }
    }
}
