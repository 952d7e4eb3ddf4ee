//! What the gateway knows about its upstreams beyond one snapshot: the health and load
//! of each endpoint, connection limits and retry budgets.
//!
//! Compiled actions hold this state through `Arc`s. The compile step hands the same
//! `Arc`s to the next snapshot while their identity is unchanged (the same Service port
//! and endpoint address, the same rule), so a configuration change never forgets an
//! ejected endpoint, resets a budget or lets a limit be exceeded twice over.

pub mod balance;
pub mod health;
pub mod retry;

pub use balance::{Backend, BackendSet, Balancer, HashOn, Pick, SessionCookie};
pub use health::{ActiveCheck, EndpointHealth, HealthPolicy, PassiveCheck};
pub use retry::{RetryBudget, RetryPolicy};

use http::uri::Authority;
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, OnceLock,
    },
    time::Instant,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One address of a backend.
#[derive(Debug)]
pub struct Endpoint {
    pub authority: Authority,
    /// The session cookie value that pins a client here: a hash of the backend and the
    /// address, the same on every replica.
    pub session_value: Box<str>,
    /// Requests sent here whose response headers have not arrived yet.
    pub in_flight: AtomicU32,
    pub health: EndpointHealth,
}

impl Endpoint {
    pub fn new(backend_key: &str, authority: Authority) -> Self {
        let id = xxhash_rust::xxh3::xxh3_64(format!("{backend_key}|{authority}").as_bytes());
        Endpoint {
            authority,
            session_value: format!("{id:016x}").into(),
            in_flight: AtomicU32::new(0),
            health: EndpointHealth::default(),
        }
    }

    /// Counts a request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request counted in [`Endpoint::in_flight`].
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Caps the requests in flight to a backend, with a bounded queue in front.
#[derive(Debug)]
pub struct Limiter {
    slots: Arc<Semaphore>,
    max_pending: u32,
    pending: AtomicU32,
}

/// The backend is at its limit and its queue is full.
#[derive(Debug)]
pub struct Overflow;

impl Limiter {
    pub fn new(max_connections: u32, max_pending: u32) -> Self {
        Limiter {
            slots: Arc::new(Semaphore::new(max_connections as usize)),
            max_pending,
            pending: AtomicU32::new(0),
        }
    }

    /// A slot at once, or a place in the queue and a slot later; `Overflow` at once when
    /// the queue is full. The caller's request timeout bounds the wait.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, Overflow> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let queued = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p < self.max_pending).then_some(p + 1)
            });
        if queued.is_err() {
            return Err(Overflow);
        }
        let _leave = PendingGuard(&self.pending);
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Overflow)
    }
}

struct PendingGuard<'a>(&'a AtomicU32);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Milliseconds since the first call in this process: the clock of ejections and
/// probes, cheap to store in an atomic.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// An endpoint to probe, with the check of the first rule that asked for it.
#[derive(Clone, Debug)]
pub struct Probe {
    pub backend: Arc<str>,
    pub endpoint: Arc<Endpoint>,
    pub check: Arc<ActiveCheck>,
    /// Probes travel as the backend's requests do (h2c, TLS).
    pub transport: crate::routing::Transport,
}

/// The upstream state one snapshot uses, kept so that the next one can reuse it.
#[derive(Debug, Default)]
pub struct Upstreams {
    /// By backend key (`namespace/service:port` or the address) and endpoint address.
    endpoints: HashMap<(Arc<str>, Authority), Arc<Endpoint>>,
    /// By backend key and the limits, so a changed limit starts a fresh count.
    limiters: HashMap<(Arc<str>, u32, u32), Arc<Limiter>>,
    /// By rule (`namespace/name#rule`) and budget.
    budgets: HashMap<(String, u32), Arc<RetryBudget>>,
    /// Each endpoint with an active check once.
    pub probes: Vec<Probe>,
}

impl Upstreams {
    /// Forgets what probes said of the endpoints no rule probes any more. Called once
    /// this set serves: a probe that ends after that finds its endpoint unprobed and
    /// keeps its result to itself.
    pub fn forget_unprobed(&self) {
        let probed: std::collections::HashSet<*const Endpoint> = self
            .probes
            .iter()
            .map(|p| Arc::as_ptr(&p.endpoint))
            .collect();
        for ep in self.endpoints.values() {
            if !probed.contains(&Arc::as_ptr(ep)) {
                ep.health.forget_probes();
            }
        }
    }
}

/// Builds the next snapshot's [`Upstreams`] out of the previous one's.
pub struct Registry<'p> {
    previous: Option<&'p Upstreams>,
    built: Upstreams,
}

impl<'p> Registry<'p> {
    pub fn new(previous: Option<&'p Upstreams>) -> Self {
        Registry {
            previous,
            built: Upstreams::default(),
        }
    }

    pub fn endpoint(&mut self, backend_key: &Arc<str>, authority: Authority) -> Arc<Endpoint> {
        let key = (backend_key.clone(), authority);
        if let Some(ep) = self.built.endpoints.get(&key) {
            return ep.clone();
        }
        let ep = match self.previous.and_then(|p| p.endpoints.get(&key)) {
            Some(ep) => ep.clone(),
            None => Arc::new(Endpoint::new(backend_key, key.1.clone())),
        };
        self.built.endpoints.insert(key, ep.clone());
        ep
    }

    pub fn limiter(&mut self, backend_key: &Arc<str>, max: u32, pending: u32) -> Arc<Limiter> {
        let key = (backend_key.clone(), max, pending);
        if let Some(l) = self.built.limiters.get(&key) {
            return l.clone();
        }
        let l = match self.previous.and_then(|p| p.limiters.get(&key)) {
            Some(l) => l.clone(),
            None => Arc::new(Limiter::new(max, pending)),
        };
        self.built.limiters.insert(key, l.clone());
        l
    }

    pub fn budget(&mut self, rule_key: String, percent: u32) -> Arc<RetryBudget> {
        let key = (rule_key, percent);
        if let Some(b) = self.built.budgets.get(&key) {
            return b.clone();
        }
        let b = match self.previous.and_then(|p| p.budgets.get(&key)) {
            Some(b) => b.clone(),
            None => Arc::new(RetryBudget::new(percent)),
        };
        self.built.budgets.insert(key, b.clone());
        b
    }

    /// Asks for `endpoint` to be probed, unless an earlier rule already did.
    pub fn probe(
        &mut self,
        backend: &Arc<str>,
        endpoint: &Arc<Endpoint>,
        check: &Arc<ActiveCheck>,
        transport: &crate::routing::Transport,
    ) {
        if self
            .built
            .probes
            .iter()
            .any(|p| Arc::ptr_eq(&p.endpoint, endpoint))
        {
            return;
        }
        self.built.probes.push(Probe {
            backend: backend.clone(),
            endpoint: endpoint.clone(),
            check: check.clone(),
            transport: transport.clone(),
        });
    }

    pub fn finish(self) -> Upstreams {
        self.built
    }
}
