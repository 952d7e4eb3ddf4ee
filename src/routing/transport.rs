//! How requests reach a backend: the HTTP version, TLS, and mesh addressing. Fixed by
//! the compile step for each backend; the proxy's transports act on it.

use crate::tls::UpstreamTls;
use http::HeaderValue;
use std::sync::Arc;

/// The transport facts of one backend.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    pub protocol: Protocol,
    /// TLS to the backend; the HTTP version is then chosen by ALPN.
    pub tls: Option<Arc<UpstreamTls>>,
    /// In mesh mode, the Service's `name.namespace.svc.domain:port`: the only endpoint,
    /// and the `Host` and `l5d-dst-override` the mesh routes by.
    pub mesh_host: Option<HeaderValue>,
    /// Why requests must not be sent (a CA or client certificate that does not load):
    /// they get 502 rather than travel without the protection asked for.
    pub unusable: Option<Arc<str>>,
}

/// The HTTP version spoken to a backend over plain TCP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge.
    H2c,
}

// === impl Transport ===

impl Transport {
    /// True when requests may travel over HTTP/2, where `TE: trailers` is the one `TE`
    /// allowed and gRPC needs it.
    pub fn may_use_http2(&self) -> bool {
        self.protocol == Protocol::H2c || self.tls.is_some()
    }
}
