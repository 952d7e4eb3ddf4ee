//! What happens to a request once its rule is known.

use crate::{
    config::ObjectKey,
    upstream::{BackendSet, Balancer, RetryPolicy},
};
use http::{HeaderName, HeaderValue};
use std::{sync::Arc, time::Duration};

/// The compiled form of one rule of one Route.
#[derive(Debug)]
pub struct RuleAction {
    /// `namespace/name` of the Route, the label of its metrics and access log lines.
    pub route: Arc<str>,
    pub route_key: ObjectKey,
    pub rule: usize,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub kind: ActionKind,
    pub timeout: Option<Duration>,
    pub max_body_bytes: Option<u64>,
    /// Set when the Route has `tls`; shared by all its rules.
    pub https: Option<Arc<RouteHttps>>,
}

/// What HTTPS means for one Route.
#[derive(Debug)]
pub struct RouteHttps {
    /// Plain-HTTP requests get this redirect status, to this HTTPS port, instead.
    pub redirect: Option<(http::StatusCode, Option<u16>)>,
    /// `Strict-Transport-Security` for HTTPS responses.
    pub hsts: Option<HeaderValue>,
}

#[derive(Debug)]
pub enum ActionKind {
    Forward(Box<Forward>),
    Redirect(RedirectAction),
    /// An endpoint of a BFF, served by the proxy's aggregation.
    Bff(Arc<crate::bff::Endpoint>),
}

#[derive(Debug)]
pub struct Forward {
    pub backends: BackendSet,
    pub balancer: Balancer,
    pub retry: Option<RetryPolicy>,
    /// Time one try has for the response headers; the request timeout when `None`.
    pub per_try_timeout: Option<Duration>,
    /// A stream with no data for this long is closed; the listener's idle timeout when
    /// `None`.
    pub stream_idle: Option<Duration>,
    pub rewrite_host: Option<HeaderValue>,
    pub rewrite_path: Option<PathRewrite>,
}

#[derive(Clone, Debug)]
pub enum PathRewrite {
    Full(String),
    /// Replaces the matched prefix.
    Prefix(String),
}

#[derive(Debug)]
pub struct RedirectAction {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathRewrite>,
    pub status: http::StatusCode,
}

/// Header edits in the order they apply: remove, set, add.
#[derive(Debug, Default)]
pub struct HeaderEdits {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
}

// === impl HeaderEdits ===

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}
