//! Parsing certificates, keys and CA bundles from PEM, and building server configurations.

use crate::config::{ClientCertificateMode, ObjectKey, SecretData};
use rustls::{
    crypto::CryptoProvider,
    server::WebPkiClientVerifier,
    sign::{CertifiedKey, SingleCertAndKey},
    RootCertStore, ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use std::{
    sync::{Arc, OnceLock},
    time::SystemTime,
};

/// One crypto provider for every configuration, chosen here rather than by whichever
/// dependency installs a process default first.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A certificate chain with its private key, from one Secret.
#[derive(Debug)]
pub struct Certificate {
    pub secret: ObjectKey,
    /// The PEM it was parsed from, to skip parsing it again when nothing changed.
    source: (Arc<[u8]>, Arc<[u8]>),
    pub certified: Arc<CertifiedKey>,
    /// DNS names of the leaf certificate, wildcards included.
    pub names: Vec<String>,
    /// Validity bounds, as Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// CA certificates that sign accepted client certificates, from one Secret.
#[derive(Debug)]
pub struct ClientCa {
    pub secret: ObjectKey,
    pub(super) source: Arc<[u8]>,
    roots: Arc<RootCertStore>,
}

// === impl Certificate ===

impl Certificate {
    pub fn load(secret: &ObjectKey, data: &SecretData) -> Result<Certificate, String> {
        let crt = data.tls_crt.clone().ok_or("has no tls.crt")?;
        let key = data.tls_key.clone().ok_or("has no tls.key")?;
        let chain = CertificateDer::pem_slice_iter(&crt)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("tls.crt is not valid PEM ({})", pem_problem(&e)))?;
        if chain.is_empty() {
            return Err("tls.crt holds no certificate".into());
        }
        let private = PrivateKeyDer::from_pem_slice(&key)
            .map_err(|e| format!("tls.key holds no usable private key ({})", pem_problem(&e)))?;
        let certified = CertifiedKey::from_der(chain, private, &provider())
            .map_err(|e| format!("tls.crt and tls.key do not make a usable pair: {e}"))?;
        let leaf = &certified.cert[0];
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| format!("tls.crt: the first certificate does not parse: {e}"))?;
        let validity = parsed.validity();
        let end_entity = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| format!("tls.crt: the first certificate is not usable: {e:?}"))?;
        let names = end_entity
            .valid_dns_names()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        Ok(Certificate {
            secret: secret.clone(),
            source: (crt, key),
            names,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            certified: Arc::new(certified),
        })
    }

    pub(super) fn same_source(&self, data: &SecretData) -> bool {
        data.tls_crt.as_deref() == Some(&self.source.0[..])
            && data.tls_key.as_deref() == Some(&self.source.1[..])
    }

    /// True when the leaf certificate is valid for `host`, by the rules clients apply.
    pub fn covers(&self, host: &str) -> bool {
        let Ok(name) = ServerName::try_from(host) else {
            return false;
        };
        webpki::EndEntityCert::try_from(&self.certified.cert[0])
            .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
    }

    /// Why the certificate is not valid at `now`, if it is not.
    pub fn validity_problem(&self, now: SystemTime) -> Option<String> {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let when = |t: i64| {
            humantime::format_rfc3339(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
            )
        };
        if now > self.not_after {
            Some(format!("expired at {}", when(self.not_after)))
        } else if now < self.not_before {
            Some(format!("is not valid before {}", when(self.not_before)))
        } else {
            None
        }
    }
}

// === impl ClientCa ===

impl ClientCa {
    pub fn load(secret: &ObjectKey, data: &SecretData) -> Result<ClientCa, String> {
        let pem = data.ca_crt.clone().ok_or("has no ca.crt")?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("ca.crt is not valid PEM ({})", pem_problem(&e)))?;
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "ca.crt holds no usable CA certificate ({ignored} could not be used)"
            ));
        }
        Ok(ClientCa {
            secret: secret.clone(),
            source: pem,
            roots: Arc::new(roots),
        })
    }

    pub(super) fn same_source(&self, data: &SecretData) -> bool {
        data.ca_crt.as_deref() == Some(&self.source[..])
    }

    pub(super) fn source_bytes(&self) -> &[u8] {
        &self.source
    }

    pub(super) fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }
}

/// A PEM error in words, without the bytes some errors carry.
fn pem_problem(e: &rustls_pki_types::pem::Error) -> &'static str {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { .. } => "a section has no END line",
        E::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        E::Base64Decode(_) => "a section is not valid base64",
        E::NoItemsFound => "no PEM section of the expected kind",
        _ => "unreadable",
    }
}

/// TLS 1.3 and 1.2 only, ALPN `h2` then `http/1.1`.
pub(super) fn server_config(
    cert: &Certificate,
    client: Option<&(Arc<ClientCa>, ClientCertificateMode)>,
) -> Result<ServerConfig, String> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let builder = match client {
        None => builder.with_no_client_auth(),
        Some((ca, mode)) => {
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(ca.roots.clone(), provider);
            if *mode == ClientCertificateMode::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| format!("Secret {}: client CA: {e}", ca.secret))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(cert.certified.clone())));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
