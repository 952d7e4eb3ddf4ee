//! The synchronous index: what the watchers have seen, as plain maps.
//!
//! Watch tasks call `apply`, `delete` and `reset` for their kind; [`Index::resources`]
//! turns the current state into the input of the compile step. Nothing here does I/O, so
//! its tests are plain `#[test]` functions.

use super::api::{ObjectStatus, Policy, Route, BFF};
use crate::config::{
    BffSpec, Meta, ObjectKey, PolicySpec, Resource, Resources, RouteSpec, SecretData,
    ServiceEndpoints, ServicePort,
};
use k8s_openapi::api::{
    core::v1::{Secret, Service},
    discovery::v1::EndpointSlice,
};
use kube::ResourceExt;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Every object the gateway watches, by kind and key.
#[derive(Debug, Default)]
pub struct Index {
    routes: BTreeMap<ObjectKey, RouteEntry>,
    policies: BTreeMap<ObjectKey, PolicyEntry>,
    bffs: BTreeMap<ObjectKey, BffEntry>,
    services: BTreeMap<ObjectKey, Vec<ServicePortSpec>>,
    slices: BTreeMap<ObjectKey, Slice>,
    secrets: BTreeMap<ObjectKey, SecretData>,
}

/// A Secret reduced to the keys the gateway reads, done as it arrives so that large Secrets of
/// other kinds are never held.
#[derive(Clone, Debug)]
pub struct SecretEntry {
    pub key: ObjectKey,
    /// `None` when it has none of [`SecretData::KEYS`].
    pub data: Option<SecretData>,
}

/// An object as the compile step and the status writer need it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry<S> {
    pub resource: Resource<S>,
    pub uid: Option<String>,
    pub status: Option<ObjectStatus>,
}

pub type RouteEntry = Entry<RouteSpec>;
pub type PolicyEntry = Entry<PolicySpec>;
pub type BffEntry = Entry<BffSpec>;

#[derive(Clone, Debug, PartialEq)]
struct ServicePortSpec {
    name: Option<String>,
    port: u16,
    app_protocol: Option<String>,
}

/// One EndpointSlice, reduced to what routing needs.
#[derive(Clone, Debug, PartialEq)]
struct Slice {
    service: ObjectKey,
    /// Port name (as in the Service) to the endpoints' port number.
    ports: Vec<(Option<String>, u16)>,
    endpoints: Vec<SliceEndpoint>,
}

#[derive(Clone, Debug, PartialEq)]
struct SliceEndpoint {
    addresses: Vec<IpAddr>,
    ready: bool,
    /// Serving while terminating: used only when no endpoint of the Service is ready.
    serving: bool,
}

/// Whether a change made a difference the compile step can see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    Yes,
    No,
}

// === impl Index ===

impl Index {
    pub fn apply_policy(&mut self, policy: &Policy) -> Changed {
        let entry = entry(policy, policy.spec.spec.clone(), policy.status.clone());
        let key = entry.resource.meta.key();
        let changed = match self.policies.get(&key) {
            Some(old) if old.resource == entry.resource => Changed::No,
            _ => Changed::Yes,
        };
        self.policies.insert(key, entry);
        changed
    }

    pub fn delete_policy(&mut self, policy: &Policy) -> Changed {
        changed(self.policies.remove(&key_of(policy)).is_some())
    }

    pub fn reset_policies(&mut self, namespace: Option<&str>, policies: &[Policy]) -> Changed {
        let before = self.policies.clone();
        self.policies.retain(|k, _| !in_scope(k, namespace));
        for p in policies {
            self.apply_policy(p);
        }
        changed(before != self.policies)
    }

    pub fn policies(&self) -> impl Iterator<Item = &PolicyEntry> {
        self.policies.values()
    }

    pub fn apply_bff(&mut self, bff: &BFF) -> Changed {
        let entry = entry(bff, bff.spec.spec.clone(), bff.status.clone());
        let key = entry.resource.meta.key();
        let changed = match self.bffs.get(&key) {
            Some(old) if old.resource == entry.resource => Changed::No,
            _ => Changed::Yes,
        };
        self.bffs.insert(key, entry);
        changed
    }

    pub fn delete_bff(&mut self, bff: &BFF) -> Changed {
        changed(self.bffs.remove(&key_of(bff)).is_some())
    }

    /// Replaces every BFF in `namespace` (all namespaces when `None`) with `bffs`.
    pub fn reset_bffs(&mut self, namespace: Option<&str>, bffs: &[BFF]) -> Changed {
        let before = self.bffs.clone();
        self.bffs.retain(|k, _| !in_scope(k, namespace));
        for b in bffs {
            self.apply_bff(b);
        }
        changed(before != self.bffs)
    }

    pub fn bffs(&self) -> impl Iterator<Item = &BffEntry> {
        self.bffs.values()
    }

    pub fn apply_route(&mut self, route: &Route) -> Changed {
        let entry = entry(route, route.spec.spec.clone(), route.status.clone());
        let key = entry.resource.meta.key();
        let changed = match self.routes.get(&key) {
            Some(old) if old.resource == entry.resource => Changed::No,
            _ => Changed::Yes,
        };
        self.routes.insert(key, entry);
        changed
    }

    pub fn delete_route(&mut self, route: &Route) -> Changed {
        changed(self.routes.remove(&key_of(route)).is_some())
    }

    /// Replaces every Route in `namespace` (all namespaces when `None`) with `routes`.
    pub fn reset_routes(&mut self, namespace: Option<&str>, routes: &[Route]) -> Changed {
        let before = self.routes.clone();
        self.routes.retain(|k, _| !in_scope(k, namespace));
        for r in routes {
            self.apply_route(r);
        }
        changed(before != self.routes)
    }

    pub fn apply_service(&mut self, svc: &Service) -> Changed {
        let ports = service_ports(svc);
        let old = self.services.insert(key_of(svc), ports.clone());
        changed(old.as_ref() != Some(&ports))
    }

    pub fn delete_service(&mut self, svc: &Service) -> Changed {
        changed(self.services.remove(&key_of(svc)).is_some())
    }

    pub fn reset_services(&mut self, namespace: Option<&str>, services: &[Service]) -> Changed {
        let before = self.services.clone();
        self.services.retain(|k, _| !in_scope(k, namespace));
        for s in services {
            self.apply_service(s);
        }
        changed(before != self.services)
    }

    pub fn apply_slice(&mut self, slice: &EndpointSlice) -> Changed {
        let key = key_of(slice);
        match reduce_slice(slice) {
            Some(s) => {
                let old = self.slices.insert(key, s.clone());
                changed(old.as_ref() != Some(&s))
            }
            // A slice that belongs to no Service routes nowhere.
            None => changed(self.slices.remove(&key).is_some()),
        }
    }

    pub fn delete_slice(&mut self, slice: &EndpointSlice) -> Changed {
        changed(self.slices.remove(&key_of(slice)).is_some())
    }

    pub fn reset_slices(&mut self, namespace: Option<&str>, slices: &[EndpointSlice]) -> Changed {
        let before = self.slices.clone();
        self.slices.retain(|k, _| !in_scope(k, namespace));
        for s in slices {
            self.apply_slice(s);
        }
        changed(before != self.slices)
    }

    pub fn apply_secret(&mut self, secret: &SecretEntry) -> Changed {
        match &secret.data {
            Some(data) => {
                let old = self.secrets.insert(secret.key.clone(), data.clone());
                changed(old.as_ref() != Some(data))
            }
            None => changed(self.secrets.remove(&secret.key).is_some()),
        }
    }

    pub fn delete_secret(&mut self, secret: &SecretEntry) -> Changed {
        changed(self.secrets.remove(&secret.key).is_some())
    }

    pub fn reset_secrets(&mut self, namespace: Option<&str>, secrets: &[SecretEntry]) -> Changed {
        let before = self.secrets.clone();
        self.secrets.retain(|k, _| !in_scope(k, namespace));
        for s in secrets {
            self.apply_secret(s);
        }
        changed(before != self.secrets)
    }

    pub fn routes(&self) -> impl Iterator<Item = &RouteEntry> {
        self.routes.values()
    }

    pub fn route(&self, key: &ObjectKey) -> Option<&RouteEntry> {
        self.routes.get(key)
    }

    /// The input of the compile step: every Route, and every Service port with its
    /// endpoints merged from all of the Service's slices.
    pub fn resources(&self) -> Resources {
        let routes = self.routes.values().map(|e| e.resource.clone()).collect();
        let services = self
            .services
            .iter()
            .map(|(key, ports)| (key.clone(), self.endpoints_of(key, ports)))
            .collect();
        Resources {
            routes,
            policies: self.policies.values().map(|e| e.resource.clone()).collect(),
            bffs: self.bffs.values().map(|e| e.resource.clone()).collect(),
            services,
            secrets: self.secrets.clone(),
            ..Resources::default()
        }
    }

    fn endpoints_of(&self, svc: &ObjectKey, ports: &[ServicePortSpec]) -> ServiceEndpoints {
        let slices: Vec<&Slice> = self.slices.values().filter(|s| s.service == *svc).collect();
        let ports = ports
            .iter()
            .map(|p| {
                let gather = |want_ready: bool| {
                    let mut set = BTreeSet::new();
                    for slice in &slices {
                        // Slices name their ports as the Service does; an unnamed Service
                        // port matches the slice's unnamed port.
                        let Some((_, target)) = slice.ports.iter().find(|(n, _)| *n == p.name)
                        else {
                            continue;
                        };
                        for ep in &slice.endpoints {
                            let usable = if want_ready { ep.ready } else { ep.serving };
                            if usable {
                                set.extend(
                                    ep.addresses.iter().map(|ip| SocketAddr::new(*ip, *target)),
                                );
                            }
                        }
                    }
                    set
                };
                let ready = gather(true);
                let endpoints = if ready.is_empty() {
                    gather(false)
                } else {
                    ready
                };
                ServicePort {
                    name: p.name.clone(),
                    port: p.port,
                    app_protocol: p.app_protocol.clone(),
                    endpoints: endpoints.into_iter().collect(),
                }
            })
            .collect();
        ServiceEndpoints { ports }
    }
}

fn changed(yes: bool) -> Changed {
    if yes {
        Changed::Yes
    } else {
        Changed::No
    }
}

fn in_scope(key: &ObjectKey, namespace: Option<&str>) -> bool {
    namespace.is_none_or(|ns| key.namespace == ns)
}

fn key_of<K: kube::Resource>(obj: &K) -> ObjectKey {
    ObjectKey {
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
    }
}

fn entry<K: kube::Resource, S>(obj: &K, spec: S, status: Option<ObjectStatus>) -> Entry<S> {
    let meta = Meta {
        name: obj.name_any(),
        namespace: obj.namespace().unwrap_or_default(),
        creation_timestamp: obj
            .meta()
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        generation: obj.meta().generation,
    };
    Entry {
        resource: Resource { meta, spec },
        uid: obj.meta().uid.clone(),
        status,
    }
}

pub fn reduce_secret(secret: &Secret) -> SecretEntry {
    let mut data = SecretData::default();
    for key in SecretData::KEYS {
        let value = secret.data.as_ref().and_then(|d| d.get(key));
        data.set(key, value.map(|b| std::sync::Arc::from(b.0.as_slice())));
    }
    let any = !data.is_empty();
    SecretEntry {
        key: key_of(secret),
        data: any.then_some(data),
    }
}

fn service_ports(svc: &Service) -> Vec<ServicePortSpec> {
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| {
            let name = p.name.clone().filter(|n| !n.is_empty());
            Some(ServicePortSpec {
                name,
                port: u16::try_from(p.port).ok()?,
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

fn reduce_slice(slice: &EndpointSlice) -> Option<Slice> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?;
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return None;
    }
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| {
            Some((
                p.name.clone().filter(|n| !n.is_empty()),
                u16::try_from(p.port?).ok()?,
            ))
        })
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .map(|ep| {
            let c = ep.conditions.as_ref();
            // An unset `ready` means ready; an unset `serving` means as ready.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let addresses = ep.addresses.iter().filter_map(|a| a.parse().ok()).collect();
            SliceEndpoint {
                addresses,
                ready,
                serving,
            }
        })
        .collect();
    Some(Slice {
        service: ObjectKey {
            namespace: slice.namespace().unwrap_or_default(),
            name: service.clone(),
        },
        ports,
        endpoints,
    })
}

#[cfg(test)]
mod tests;
