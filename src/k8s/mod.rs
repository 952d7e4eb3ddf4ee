//! The Kubernetes side: custom resource types, and (in `serve --kube`) the watchers that
//! turn cluster objects into [`crate::config::Resources`].
//!
//! Nothing outside this module sees a Kubernetes type: the compile step and the proxy
//! work on the domain types in [`crate::config`].

pub mod api;
pub mod index;
pub mod lease;
pub mod status;
pub mod watch;
