//! What happens to a request once its rule is known.

use crate::config::ObjectKey;
use http::{HeaderName, HeaderValue};
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

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
    Forward(Forward),
    Redirect(RedirectAction),
    /// An endpoint of a BFF, served by the proxy's aggregation.
    Bff(Arc<crate::bff::Endpoint>),
}

#[derive(Debug)]
pub struct Forward {
    pub backends: BackendSet,
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

/// The backends of a rule with their weights.
#[derive(Debug, Default)]
pub struct BackendSet {
    backends: Vec<Backend>,
    /// Running sum of the weights, for a binary search over a random draw.
    cumulative: Vec<u64>,
}

#[derive(Debug)]
pub struct Backend {
    /// `address` or `service:port` as written, for metrics and logs.
    pub name: Arc<str>,
    pub weight: u32,
    pub endpoints: Vec<http::uri::Authority>,
    next: AtomicUsize,
}

/// The upstream picked for one request.
#[derive(Debug)]
pub struct Pick<'a> {
    pub backend: &'a Backend,
    /// `None` when the backend has no endpoint to send to (503).
    pub endpoint: Option<&'a http::uri::Authority>,
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

// === impl BackendSet ===

impl BackendSet {
    pub fn new(backends: Vec<Backend>) -> Self {
        let mut sum = 0u64;
        let cumulative = backends
            .iter()
            .map(|b| {
                sum += u64::from(b.weight);
                sum
            })
            .collect();
        BackendSet {
            backends,
            cumulative,
        }
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Picks a backend by weight, then the next of its endpoints in turn. `None` when every
    /// weight is zero.
    pub fn pick(&self) -> Option<Pick<'_>> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let backend = if self.backends.len() == 1 {
            &self.backends[0]
        } else {
            let draw = fastrand::u64(0..total);
            let i = self.cumulative.partition_point(|&c| c <= draw);
            &self.backends[i]
        };
        Some(Pick {
            backend,
            endpoint: backend.next_endpoint(),
        })
    }
}

// === impl Backend ===

impl Backend {
    pub fn new(
        name: impl Into<Arc<str>>,
        weight: u32,
        endpoints: Vec<http::uri::Authority>,
    ) -> Self {
        Backend {
            name: name.into(),
            weight,
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    fn next_endpoint(&self) -> Option<&http::uri::Authority> {
        match self.endpoints.len() {
            0 => None,
            1 => Some(&self.endpoints[0]),
            n => Some(&self.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_backend(name: &str, weight: u32) -> Backend {
        Backend::new(name, weight, vec![format!("{name}:80").parse().unwrap()])
    }

    #[test]
    fn weighted_pick_follows_weights() {
        let set = BackendSet::new(vec![
            mk_backend("a", 1),
            mk_backend("b", 3),
            mk_backend("z", 0),
        ]);
        let mut counts = std::collections::HashMap::new();
        let n = 40_000;
        for _ in 0..n {
            *counts
                .entry(set.pick().unwrap().backend.name.clone())
                .or_insert(0u32) += 1;
        }
        let b = f64::from(counts["b"]) / f64::from(n);
        assert!((b - 0.75).abs() < 0.02, "b got {b}");
        assert!(!counts.contains_key("z"), "weight 0 must get nothing");
    }

    #[test]
    fn all_zero_weights_pick_nothing() {
        let set = BackendSet::new(vec![mk_backend("a", 0)]);
        assert!(set.pick().is_none());
    }

    #[test]
    fn endpoints_are_used_in_turn() {
        let b = Backend::new("s", 1, vec!["a:1".parse().unwrap(), "b:1".parse().unwrap()]);
        let picks: Vec<_> = (0..4)
            .map(|_| b.next_endpoint().unwrap().to_string())
            .collect();
        assert_eq!(picks, ["a:1", "b:1", "a:1", "b:1"]);
    }
}
