//! Integration tests: the gateway in front of real backends, over real sockets.

mod support;

mod binary;
mod chart;
mod framing;
mod headers;
mod lifecycle;
mod policy;
mod policy_jwt;
mod routing;
mod streaming;
mod tls;
