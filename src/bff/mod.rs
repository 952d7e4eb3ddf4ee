//! BFF endpoints, compiled: what the proxy needs to pass a request through or to
//! aggregate several calls into one answer.
//!
//! The compile step (`compile::bff`) builds these from `BFF` resources and puts each
//! endpoint in the routing table next to Route rules; the proxy's aggregation
//! (`proxy::aggregate`) runs them.

pub mod fields;
pub mod template;

use crate::config::ObjectKey;
use fields::Selection;
use http::{uri::Authority, HeaderName, Method};
use regex::Regex;
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use template::{Source, Template};

/// How long a part may take when it sets no `timeout`.
pub const DEFAULT_PART_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest part answer read, in bytes. Aggregated answers are held whole in memory
/// while they are merged, so one backend must not be able to make that unbounded.
pub const MAX_PART_BODY_BYTES: usize = 8 * 1024 * 1024;

/// One endpoint of one BFF.
#[derive(Debug)]
pub struct Endpoint {
    pub bff: ObjectKey,
    /// The kind of client, for metrics and the `x-portcullis-client` header.
    pub client: Arc<str>,
    /// Index in `spec.endpoints`.
    pub index: usize,
    /// Names of the `{param}` segments, in order.
    params: Vec<String>,
    /// Captures the parameters from the canonical path; `None` without parameters.
    path: Option<Regex>,
    pub kind: EndpointKind,
}

#[derive(Debug)]
pub enum EndpointKind {
    PassThrough(PassThrough),
    /// Parts in the order they are written, with `stage` saying when each runs.
    Aggregate(Vec<Part>),
}

#[derive(Debug)]
pub struct PassThrough {
    pub upstream: Upstream,
    /// The upstream path; the request's own when `None`.
    pub path: Option<Template>,
    pub timeout: Option<Duration>,
}

/// One call of an aggregate.
#[derive(Debug)]
pub struct Part {
    pub name: String,
    pub target: Target,
    pub method: Method,
    /// The path, and after a `?` the query, of the call.
    pub path: Template,
    pub headers: Vec<(HeaderName, Template)>,
    pub timeout: Duration,
    pub required: bool,
    pub fields: Option<Selection>,
    /// The index of the part this one waits for.
    pub after: Option<usize>,
    /// 0 for parts that wait for nothing, one more than their `after` otherwise. Parts of
    /// one stage run together.
    pub stage: usize,
}

#[derive(Debug)]
pub enum Target {
    Upstream(Upstream),
    /// A host of this gateway, dispatched through the routing table and its Policies.
    Route {
        host: String,
    },
}

/// A Service's endpoints, or a fixed address, taken in turn.
#[derive(Debug)]
pub struct Upstream {
    /// `address` or `service:port` as written, for logs.
    pub name: Arc<str>,
    endpoints: Vec<Authority>,
    next: AtomicUsize,
}

/// The label of a BFF in metrics, logs and the Policy table; the prefix keeps it apart
/// from a Route of the same name.
pub fn label(key: &ObjectKey) -> String {
    format!("bff:{key}")
}

// === impl Upstream ===

impl Upstream {
    pub fn new(name: impl Into<Arc<str>>, endpoints: Vec<Authority>) -> Upstream {
        Upstream {
            name: name.into(),
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The endpoint for the next call; `None` when there is none to send to.
    pub fn next_endpoint(&self) -> Option<&Authority> {
        match self.endpoints.len() {
            0 => None,
            n => Some(&self.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }
}

// === impl Endpoint ===

impl Endpoint {
    pub fn new(
        bff: ObjectKey,
        client: Arc<str>,
        index: usize,
        params: Vec<String>,
        path: Option<Regex>,
        kind: EndpointKind,
    ) -> Endpoint {
        Endpoint {
            bff,
            client,
            index,
            params,
            path,
            kind,
        }
    }

    /// True when what is sent upstream follows from the request's URL alone, so that
    /// a cache keyed on the URL may hold its answers. A pass-through whose path reads a
    /// header or a claim sends one URL to different places; so may an aggregate.
    pub fn keyed_by_url(&self) -> bool {
        match &self.kind {
            EndpointKind::PassThrough(p) => p.path.as_ref().is_none_or(|t| {
                t.sources()
                    .all(|s| matches!(s, Source::Param(_) | Source::Query(_)))
            }),
            EndpointKind::Aggregate(_) => false,
        }
    }

    /// The path parameters of a canonical request path this endpoint matched, decoded.
    pub fn params(&self, path: &str) -> Vec<(String, String)> {
        let Some(re) = &self.path else {
            return Vec::new();
        };
        let Some(caps) = re.captures(path) else {
            return Vec::new();
        };
        self.params
            .iter()
            .zip(caps.iter().skip(1))
            .filter_map(|(name, m)| {
                let raw = m?.as_str();
                let value = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
                Some((name.clone(), value.into_owned()))
            })
            .collect()
    }

    /// The number of stages of an aggregate.
    pub fn stages(&self) -> usize {
        match &self.kind {
            EndpointKind::Aggregate(parts) => parts.iter().map(|p| p.stage + 1).max().unwrap_or(0),
            EndpointKind::PassThrough(_) => 0,
        }
    }
}
