//! Integration tests: the gateway in front of real backends, over real sockets.

mod origin;
mod redis_server;
mod support;

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
