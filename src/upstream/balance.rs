//! Choosing a backend by weight, then one of its endpoints: round robin, least request
//! (power of two choices) or consistent hashing on a ring, with session cookies on top.
//! Unavailable endpoints are passed over, and endpoints already tried for this request
//! come last.

use super::{now_ms, Endpoint, HealthPolicy, Limiter};
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

/// Points each endpoint gets on the ring: enough that endpoints' shares stay within a
/// few percent of each other, few enough that a ring of 100 endpoints stays small.
const RING_POINTS: usize = 160;
/// Longest precomputed weighted schedule; larger weight sums draw at random instead.
const MAX_SCHEDULE: u64 = 4096;

/// The backends of a rule with their weights.
#[derive(Debug, Default)]
pub struct BackendSet {
    backends: Vec<Backend>,
    /// Smooth weighted round robin, precomputed: backend indexes in the order they
    /// take turns. Empty when the weight sum is too large (random draw) or zero.
    schedule: Vec<u16>,
    turn: AtomicUsize,
    /// Running sum of the weights, for a random draw.
    cumulative: Vec<u64>,
}

/// One destination of a rule: a Service port or an address.
#[derive(Debug)]
pub struct Backend {
    /// `address` or `service:port` as written, for the access log.
    pub name: Arc<str>,
    /// `namespace/service:port` (or the addresses): unique across the cluster, for
    /// metrics and health logs, where Services of one name in two namespaces differ.
    pub key: Arc<str>,
    pub weight: u32,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// `None`: every endpoint is always available.
    pub health: Option<Arc<HealthPolicy>>,
    pub limiter: Option<Arc<Limiter>>,
    /// How requests reach the endpoints: protocol, TLS, mesh addressing.
    pub transport: crate::routing::Transport,
    ring: Option<Ring>,
    next: AtomicUsize,
}

/// How a rule picks endpoints.
#[derive(Clone, Debug, Default)]
pub struct Balancer {
    pub kind: Kind,
    pub hash_on: Option<HashOn>,
    pub session: Option<SessionCookie>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    #[default]
    RoundRobin,
    LeastRequest,
    ConsistentHash,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashOn {
    Header(http::HeaderName),
    Cookie(String),
    ClientAddress,
    QueryParameter(String),
}

#[derive(Clone, Debug)]
pub struct SessionCookie {
    pub name: String,
    pub ttl: Option<Duration>,
}

/// What a request brings to the choice.
#[derive(Debug, Default)]
pub struct Hints<'a> {
    /// The consistent-hash key, when the rule hashes and the request has one.
    pub hash: Option<u64>,
    /// The value of the rule's session cookie, when sent.
    pub session: Option<&'a str>,
    /// Endpoints already tried for this request.
    pub tried: &'a [Arc<Endpoint>],
}

/// The upstream picked for one try.
#[derive(Debug)]
pub struct Pick<'a> {
    pub backend: &'a Backend,
    /// `None` when the backend has no endpoint to send to (503).
    pub endpoint: Option<&'a Arc<Endpoint>>,
    /// The session cookie pointed here, so no new one is needed.
    pub pinned: bool,
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
        let schedule = smooth_schedule(&backends.iter().map(|b| b.weight).collect::<Vec<_>>());
        let first = fastrand::usize(..schedule.len().max(1));
        BackendSet {
            backends,
            schedule,
            // A set is rebuilt on every configuration change. Starting at a random turn
            // keeps the shares right however often that is: from turn 0 each time, a
            // 99:1 split would give the 1 nothing when changes come every 50 requests.
            turn: AtomicUsize::new(first),
            cumulative,
        }
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Picks the session's endpoint when it is still there and available, else a
    /// backend by weight and one of its endpoints. `None` when every weight is zero.
    pub fn pick(&self, kind: Kind, hints: &Hints<'_>) -> Option<Pick<'_>> {
        if let Some(value) = hints.session {
            if let Some(pick) = self.pinned(value, hints) {
                return Some(pick);
            }
        }
        let backend = self.weighted()?;
        Some(Pick {
            backend,
            endpoint: backend.choose(kind, hints),
            pinned: false,
        })
    }

    fn pinned(&self, value: &str, hints: &Hints<'_>) -> Option<Pick<'_>> {
        let now = now_ms();
        self.backends.iter().find_map(|b| {
            let ep = b.endpoints.iter().find(|e| &*e.session_value == value)?;
            let usable = b.weight > 0
                && !tried(hints.tried, ep)
                && (!b.health_counts(now) || ep.health.available(now));
            usable.then_some(Pick {
                backend: b,
                endpoint: Some(ep),
                pinned: true,
            })
        })
    }

    fn weighted(&self) -> Option<&Backend> {
        if self.backends.len() == 1 {
            return (self.backends[0].weight > 0).then(|| &self.backends[0]);
        }
        if !self.schedule.is_empty() {
            let turn = self.turn.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
            return Some(&self.backends[usize::from(self.schedule[turn])]);
        }
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let draw = fastrand::u64(0..total);
        Some(&self.backends[self.cumulative.partition_point(|&c| c <= draw)])
    }
}

/// nginx's smooth weighted round robin, unrolled once: each backend's turns are spread
/// out rather than bunched (5:1:1 gives a a b a c a a, not a a a a a b c).
fn smooth_schedule(weights: &[u32]) -> Vec<u16> {
    let divisor = weights.iter().fold(0u32, |g, &w| gcd(g, w));
    if divisor == 0 || weights.len() > usize::from(u16::MAX) {
        return Vec::new();
    }
    let scaled: Vec<i64> = weights.iter().map(|&w| i64::from(w / divisor)).collect();
    let total: i64 = scaled.iter().sum();
    if total as u64 > MAX_SCHEDULE {
        return Vec::new();
    }
    let mut current = vec![0i64; scaled.len()];
    (0..total)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(&scaled) {
                *c += w;
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
                .expect("at least one backend");
            current[best] -= total;
            best as u16
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn tried(list: &[Arc<Endpoint>], ep: &Arc<Endpoint>) -> bool {
    list.iter().any(|t| Arc::ptr_eq(t, ep))
}

// === impl Backend ===

impl Backend {
    pub fn new(
        name: impl Into<Arc<str>>,
        weight: u32,
        endpoints: Vec<Arc<Endpoint>>,
        balancer: Kind,
    ) -> Self {
        let ring = (balancer == Kind::ConsistentHash).then(|| Ring::new(&endpoints));
        let first = fastrand::usize(..endpoints.len().max(1));
        let name: Arc<str> = name.into();
        Backend {
            key: name.clone(),
            name,
            weight,
            endpoints,
            health: None,
            limiter: None,
            transport: crate::routing::Transport::default(),
            ring,
            // Random for the reason the set's turn is: the first endpoint would
            // otherwise get the first request after every change.
            next: AtomicUsize::new(first),
        }
    }

    pub fn with_key(mut self, key: Arc<str>) -> Self {
        self.key = key;
        self
    }

    pub fn with_health(mut self, health: Option<Arc<HealthPolicy>>) -> Self {
        self.health = health;
        self
    }

    pub fn with_limiter(mut self, limiter: Option<Arc<Limiter>>) -> Self {
        self.limiter = limiter;
        self
    }

    pub fn with_transport(mut self, transport: crate::routing::Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Whether health decides now: it does unless too few endpoints are healthy, when
    /// every endpoint gets traffic rather than the few left being overwhelmed.
    fn health_counts(&self, now: u64) -> bool {
        let Some(policy) = &self.health else {
            return false;
        };
        let healthy = self
            .endpoints
            .iter()
            .filter(|e| e.health.available(now))
            .count();
        healthy > 0 && healthy * 100 >= self.endpoints.len() * policy.panic_percent as usize
    }

    /// An endpoint for one try: healthy and untried if there is one, else healthy, else
    /// any.
    pub fn choose(&self, kind: Kind, hints: &Hints<'_>) -> Option<&Arc<Endpoint>> {
        match self.endpoints.len() {
            0 => return None,
            1 => return Some(&self.endpoints[0]),
            _ => {}
        }
        let now = now_ms();
        let health = self.health_counts(now);
        let retrying = !hints.tried.is_empty();
        if !health && !retrying {
            return self.choose_among(kind, hints.hash, None, false);
        }
        let healthy = |e: &Arc<Endpoint>| !health || e.health.available(now);
        let fresh = |e: &Arc<Endpoint>| healthy(e) && !tried(hints.tried, e);
        if retrying {
            if let Some(e) = self.choose_among(kind, hints.hash, Some(&fresh), true) {
                return Some(e);
            }
        }
        self.choose_among(kind, hints.hash, Some(&healthy), retrying)
            .or_else(|| self.choose_among(kind, hints.hash, None, retrying))
    }

    /// Chooses among the endpoints `ok` accepts; all of them when it is `None`. A retry
    /// takes a random turn rather than the next one: were it to take a turn, a failing
    /// endpoint would get the first try of every request.
    fn choose_among(
        &self,
        kind: Kind,
        hash: Option<u64>,
        ok: Option<Filter<'_>>,
        retrying: bool,
    ) -> Option<&Arc<Endpoint>> {
        let accept = |e: &Arc<Endpoint>| ok.is_none_or(|f| f(e));
        match (kind, hash, &self.ring) {
            (Kind::ConsistentHash, Some(h), Some(ring)) => ring.lookup(h, &self.endpoints, accept),
            (Kind::LeastRequest, ..) => {
                // Two different endpoints, so the busier one never wins a draw alone.
                let count = match ok {
                    None => self.endpoints.len(),
                    Some(f) => self.endpoints.iter().filter(|e| f(e)).count(),
                };
                if count == 0 {
                    return None;
                }
                let i = fastrand::usize(..count);
                let a = self.nth(i, ok)?;
                if count == 1 {
                    return Some(a);
                }
                let b = self.nth(i + 1 + fastrand::usize(..count - 1), ok)?;
                let load = |e: &Arc<Endpoint>| e.in_flight.load(Ordering::Relaxed);
                Some(if load(b) < load(a) { b } else { a })
            }
            _ if retrying => self.nth(fastrand::usize(..), ok),
            _ => self.nth(self.next.fetch_add(1, Ordering::Relaxed), ok),
        }
    }

    /// The `turn`-th acceptable endpoint, counting round and round, so that skipping one
    /// spreads its share over all the others rather than handing it to its neighbour.
    fn nth(&self, turn: usize, ok: Option<Filter<'_>>) -> Option<&Arc<Endpoint>> {
        let Some(ok) = ok else {
            return Some(&self.endpoints[turn % self.endpoints.len()]);
        };
        let count = self.endpoints.iter().filter(|e| ok(e)).count();
        if count == 0 {
            return None;
        }
        self.endpoints.iter().filter(|e| ok(e)).nth(turn % count)
    }
}

/// Which endpoints a choice may take; every one when absent.
type Filter<'f> = &'f dyn Fn(&Arc<Endpoint>) -> bool;

/// A hash ring: each endpoint owns the arcs ending at its points. Points depend only on
/// the endpoint's address, so an endpoint that comes or goes moves only the keys of its
/// own arcs, and every replica builds the same ring.
#[derive(Debug)]
struct Ring {
    /// (point, endpoint index), sorted by point.
    points: Vec<(u64, u32)>,
}

impl Ring {
    fn new(endpoints: &[Arc<Endpoint>]) -> Self {
        let mut points = Vec::with_capacity(endpoints.len() * RING_POINTS);
        for (i, e) in endpoints.iter().enumerate() {
            let address = e.authority.as_str();
            for p in 0..RING_POINTS {
                let point = xxhash_rust::xxh3::xxh3_64_with_seed(address.as_bytes(), p as u64);
                points.push((point, i as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The owner of the key's arc, or the next acceptable owner clockwise.
    fn lookup<'e>(
        &self,
        key: u64,
        endpoints: &'e [Arc<Endpoint>],
        ok: impl Fn(&Arc<Endpoint>) -> bool,
    ) -> Option<&'e Arc<Endpoint>> {
        let start = self.points.partition_point(|&(p, _)| p < key);
        let n = self.points.len();
        (0..n)
            .map(|i| &endpoints[self.points[(start + i) % n].1 as usize])
            .find(|e| ok(e))
    }
}

/// The hash of a consistent-hash key.
pub fn hash_key(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

#[cfg(test)]
mod tests;
