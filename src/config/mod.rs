//! The resources users write, as plain Rust types with no Kubernetes dependency.
//!
//! Every source (YAML files, the cluster) turns what it reads into these types and hands
//! them to [`crate::compile`]. The Kubernetes side wraps the same specs in its CRD types.

mod bff;
mod duration;
mod policy;
mod route;

pub use bff::*;
pub use duration::Duration;
pub use policy::*;
pub use route::*;

use serde::{Deserialize, Serialize};

/// The API group and version of every Portcullis resource.
pub const API_GROUP: &str = "portcullis.dev";
pub const API_VERSION: &str = "portcullis.dev/v1alpha1";

/// Namespace given to file-mode objects that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The part of an object's metadata that routing and status need.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// RFC 3339 creation time; older objects win ties. Files may leave it out, and then
    /// objects tie on age and are ordered by namespace and name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

/// One object: its metadata and its spec.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Resource<S> {
    pub meta: Meta,
    pub spec: S,
}

/// `namespace/name` of an object, ordered the way ties are broken.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

// === impl Meta ===

impl Meta {
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

// === impl ObjectKey ===

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Everything the compile step reads: the objects of every kind, plus what the cluster
/// knows about Services. File mode leaves `services` empty.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub routes: Vec<Resource<RouteSpec>>,
    pub policies: Vec<Resource<PolicySpec>>,
    pub bffs: Vec<Resource<BffSpec>>,
    /// Endpoints of each Service port, already merged and filtered for readiness by
    /// the source that watched them.
    pub services: std::collections::BTreeMap<ObjectKey, ServiceEndpoints>,
    /// The TLS material of Secrets, by key. File mode loads folders with an empty
    /// namespace, which any Route may name.
    pub secrets: std::collections::BTreeMap<ObjectKey, SecretData>,
    /// The certificate for handshakes that name no host, or a host no Route covers.
    pub default_certificate: Option<ObjectKey>,
    /// The time certificates are checked against; `None` leaves validity dates
    /// unchecked.
    pub now: Option<std::time::SystemTime>,
    /// Where shared rate limits count (`--redis-url`); without it, shared sections count
    /// per replica.
    pub rate_limit_store: Option<std::sync::Arc<crate::policy::ratelimit::SharedStore>>,
    /// The suffix of Service DNS names (`--cluster-domain`); `None` means
    /// [`DEFAULT_CLUSTER_DOMAIN`].
    pub cluster_domain: Option<String>,
}

/// The cluster domain of a default Kubernetes install.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

impl Resources {
    /// The Secret `key` names: in its namespace, else file mode's folder of that name.
    pub fn secret(&self, key: &ObjectKey) -> Option<(ObjectKey, &SecretData)> {
        if let Some(data) = self.secrets.get(key) {
            return Some((key.clone(), data));
        }
        let any_namespace = ObjectKey {
            namespace: String::new(),
            name: key.name.clone(),
        };
        self.secrets.get(&any_namespace).map(|d| (any_namespace, d))
    }
}

/// The keys of a Secret that the gateway reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretData {
    /// PEM: a certificate chain, leaf first.
    pub tls_crt: Option<std::sync::Arc<[u8]>>,
    /// PEM: the private key of `tls_crt`.
    pub tls_key: Option<std::sync::Arc<[u8]>>,
    /// PEM: CA certificates for client certificates.
    pub ca_crt: Option<std::sync::Arc<[u8]>>,
    /// A JSON Web Key Set, for JWT policies.
    pub jwks_json: Option<std::sync::Arc<[u8]>>,
    /// YAML: consumer name to API key, for API key policies.
    pub keys_yaml: Option<std::sync::Arc<[u8]>>,
    /// An OAuth2 client secret, for introspection.
    pub client_secret: Option<std::sync::Arc<[u8]>>,
}

impl SecretData {
    /// The Secret keys read, and the file names in file mode's secret folders.
    pub const KEYS: [&'static str; 6] = [
        "tls.crt",
        "tls.key",
        "ca.crt",
        "jwks.json",
        "keys.yaml",
        "client-secret",
    ];

    pub fn get(&self, key: &str) -> Option<&std::sync::Arc<[u8]>> {
        match key {
            "tls.crt" => self.tls_crt.as_ref(),
            "tls.key" => self.tls_key.as_ref(),
            "ca.crt" => self.ca_crt.as_ref(),
            "jwks.json" => self.jwks_json.as_ref(),
            "keys.yaml" => self.keys_yaml.as_ref(),
            "client-secret" => self.client_secret.as_ref(),
            _ => None,
        }
    }

    pub fn set(&mut self, key: &str, value: Option<std::sync::Arc<[u8]>>) {
        match key {
            "tls.crt" => self.tls_crt = value,
            "tls.key" => self.tls_key = value,
            "ca.crt" => self.ca_crt = value,
            "jwks.json" => self.jwks_json = value,
            "keys.yaml" => self.keys_yaml = value,
            "client-secret" => self.client_secret = value,
            _ => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        Self::KEYS.iter().all(|k| self.get(k).is_none())
    }
}

/// The ready endpoints of one Service, by port.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceEndpoints {
    pub ports: Vec<ServicePort>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    /// The port's `appProtocol`, such as `kubernetes.io/h2c`.
    pub app_protocol: Option<String>,
    /// `ip:targetPort` of each endpoint that may receive traffic.
    pub endpoints: Vec<std::net::SocketAddr>,
}
