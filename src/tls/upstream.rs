//! TLS from the gateway to backends: the CA a backend's certificate must chain to, the
//! client certificate shown to it, and the name it must be valid for.
//!
//! Loading is pure (PEM in, parsed roots and keys out), so the compile step reports a bad
//! CA or key on the Route. The system's roots, used when no CA is named, are read by the
//! proxy when it first needs them.

use super::load::{provider, Certificate, ClientCa};
use crate::config::{ObjectKey, Resources};
use rustls::{client::ResolvesClientCert, sign::SingleCertAndKey, ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use std::{
    hash::{Hash, Hasher},
    sync::Arc,
};

/// What one backend's TLS needs, parsed.
#[derive(Debug)]
pub struct UpstreamTls {
    /// Equal for equal inputs (the bytes of the CA, certificate and key, and the server
    /// name), so the proxy keeps its clients while none of them changes.
    pub id: u64,
    /// `None`: the system's trusted roots.
    pub roots: Option<Arc<RootCertStore>>,
    pub client_cert: Option<Arc<Certificate>>,
    pub server_name: ServerName<'static>,
}

/// A reference that did not load, with the field at fault (below the backend's `tls`).
#[derive(Debug)]
pub struct UpstreamTlsError {
    pub field: &'static str,
    pub message: String,
}

// === impl UpstreamTls ===

impl UpstreamTls {
    /// Loads the Secrets `ca` and `client_cert` name (in `namespace`, or file mode's
    /// folders).
    pub fn load(
        resources: &Resources,
        namespace: &str,
        ca: Option<&str>,
        client_cert: Option<&str>,
        server_name: ServerName<'static>,
    ) -> Result<UpstreamTls, UpstreamTlsError> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        server_name.to_str().hash(&mut h);
        let secret = |name: &str, field: &'static str| {
            let key = ObjectKey {
                namespace: namespace.to_string(),
                name: name.to_string(),
            };
            resources
                .secret(&key)
                .map(|(found, data)| (found, data.clone()))
                .ok_or_else(|| UpstreamTlsError {
                    field,
                    message: format!("Secret {key} not found"),
                })
        };
        let roots = match ca {
            None => None,
            Some(name) => {
                let (found, data) = secret(name, "caRef")?;
                data.ca_crt.hash(&mut h);
                let ca = ClientCa::load(&found, &data).map_err(|why| UpstreamTlsError {
                    field: "caRef",
                    message: format!("{}: {why}", super::source_name(&found)),
                })?;
                Some(ca.roots().clone())
            }
        };
        let client_cert = match client_cert {
            None => None,
            Some(name) => {
                let (found, data) = secret(name, "clientCertificateRef")?;
                data.tls_crt.hash(&mut h);
                data.tls_key.hash(&mut h);
                let cert = Certificate::load(&found, &data).map_err(|why| UpstreamTlsError {
                    field: "clientCertificateRef",
                    message: format!("{}: {why}", super::source_name(&found)),
                })?;
                Some(Arc::new(cert))
            }
        };
        Ok(UpstreamTls {
            id: h.finish(),
            roots,
            client_cert,
            server_name,
        })
    }

    /// A client configuration: TLS 1.3 and 1.2, these roots (or `system` ones), and the
    /// client certificate when there is one. ALPN is left to the connector.
    pub fn client_config(&self, system: &Arc<RootCertStore>) -> Result<ClientConfig, String> {
        let roots = self.roots.as_ref().unwrap_or(system).clone();
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots);
        Ok(match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some(cert) => {
                let resolver: Arc<dyn ResolvesClientCert> =
                    Arc::new(SingleCertAndKey::from(cert.certified.clone()));
                builder.with_client_cert_resolver(resolver)
            }
        })
    }
}
