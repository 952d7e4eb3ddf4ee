//! Portcullis: an API gateway that serves routes compiled from Kubernetes resources or
//! from YAML files.
//!
//! The modules follow the flow of a configuration change and of a request:
//! [`config`] holds the resources users write, [`source`] reads them from files,
//! [`compile`] turns them into an immutable [`compile::Snapshot`] whose
//! [`routing::Router`] the [`proxy`] consults for every request, and whose
//! [`tls::TlsTable`] picks the certificate of each TLS handshake. [`admin`] serves health,
//! metrics and the current configuration; [`echo`] is a small backend for tests and demos.

pub mod admin;
pub mod bff;
pub mod cli;
pub mod compile;
pub mod config;
pub mod demo;
pub mod echo;
pub mod edge;
pub mod gateway;
pub mod k8s;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod routing;
pub mod source;
pub mod telemetry;
pub mod tls;
pub mod upstream;
