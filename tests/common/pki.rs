//! Test certificates made at test time, and a TLS client that shows what it was served.
//! Shared by the integration and end-to-end tests.

// Each test crate uses its own part of these helpers.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::{
    pki_types::{pem::PemObject, PrivateKeyDer, ServerName},
    ClientConfig, RootCertStore,
};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

/// A test CA that signs server and client certificates.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and key, as PEM, and the certificate's DER.
pub struct Leaf {
    pub crt: String,
    pub key: String,
    pub der: Vec<u8>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_valid(names, -1, 30)
    }

    /// Valid from `from_days` to `to_days` relative to now.
    pub fn leaf_valid(&self, names: &[&str], from_days: i64, to_days: i64) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from_days);
        params.not_after = now + time::Duration::days(to_days);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            crt: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }
}

pub fn client_config(roots: RootCertStore, client: Option<&Leaf>, alpn: &[&[u8]]) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.der.clone().into()],
                PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A TLS connection asking for `server_name` (an IP address sends no SNI).
pub async fn connect(
    addr: SocketAddr,
    server_name: &str,
    roots: RootCertStore,
    client: Option<&Leaf>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let config = client_config(roots, client, &[b"http/1.1"]);
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("handshake within 10 s")
}

pub fn served_der(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}
