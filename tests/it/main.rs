//! Integration tests: the gateway in front of real backends, over real sockets.

mod origin;
#[path = "../common/pki.rs"]
mod pki;
mod redis_server;
mod support;

mod bff;
mod binary;
mod chart;
mod edge_cache;
mod edge_compress;
mod framing;
mod headers;
mod lifecycle;
mod policy;
mod policy_introspect;
mod policy_jwt;
mod policy_ratelimit;
mod ratelimit_redis;
mod routing;
mod streaming;
mod tls;
mod upstream;
mod upstream_grpc;
mod upstream_h2c;
mod upstream_tls;
