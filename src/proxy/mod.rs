//! The data plane: listeners, connections and the per-request path.
//!
//! The proxy reads the current [`Snapshot`] with one atomic load per request and keeps
//! the rule it picked for the life of that request, so a new snapshot never touches a
//! request or stream that is already running.

mod aggregate;
mod body;
mod conn;
mod error;
mod forward;
mod framing;
mod grpc;
mod handler;
pub mod headers;
mod probe;
pub mod trace;
mod transport;

pub use aggregate::{X_PORTCULLIS_CLIENT, X_PORTCULLIS_PARTIAL};
pub use body::{full, ProxyBody};
pub use error::GatewayError;

use crate::{compile::Snapshot, metrics::Metrics};
use arc_swap::ArcSwap;
use std::{sync::Arc, time::Duration};
use transport::Transports;

/// The snapshot every request reads; swapped whole by the configuration source.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// Limits that protect the gateway from slow or oversized clients.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Time a client has to send a complete request head. HTTP/1.1 keep-alive
    /// connections waiting for their next request are closed after this too.
    pub header_read_timeout: Duration,
    /// A connection with no bytes in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Default time until a backend's response headers, for rules that set none.
    pub request_timeout: Duration,
    /// Largest request head, in bytes (431 above it).
    pub max_header_bytes: usize,
    /// Most header lines in a request head (431 above it).
    pub max_headers: usize,
    /// Longest request target, in bytes (414 above it).
    pub max_uri_bytes: usize,
    /// Default largest request body, for rules that set none (413 above it).
    pub max_body_bytes: u64,
    /// Time to connect to a backend before the attempt counts as failed.
    pub connect_timeout: Duration,
}

impl Default for Limits {
    /// Defaults close to what nginx ships with, tighter where a gateway can afford it.
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 64 * 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything a request needs, shared by all connections.
pub struct Proxy {
    snapshot: SharedSnapshot,
    /// Peers whose `X-Forwarded-For` is believed when finding the client's address.
    trusted_proxies: Vec<ipnet::IpNet>,
    /// The clients to backends, by protocol, TLS and endpoint.
    transports: Transports,
    metrics: Arc<Metrics>,
    limits: Limits,
    access_log: bool,
}

impl Proxy {
    pub fn new(
        snapshot: SharedSnapshot,
        metrics: Arc<Metrics>,
        limits: Limits,
        access_log: bool,
        trusted_proxies: Vec<ipnet::IpNet>,
    ) -> Arc<Self> {
        Arc::new(Proxy {
            snapshot,
            trusted_proxies,
            transports: Transports::new(limits.connect_timeout),
            metrics,
            limits,
            access_log,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

pub use conn::{serve, serve_tls, Shutdown};
pub use probe::run_probes;
