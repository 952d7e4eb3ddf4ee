//! Signing keys made at test time, the key sets that publish them, tokens signed with
//! them, and a small JWKS server that counts its fetches. Shared by the unit tests of the
//! JWT policy and the integration tests.

// Each test crate uses its own part of these helpers.
#![allow(dead_code)]

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use std::{
    net::SocketAddr,
    process::Command,
    sync::{
        atomic::{AtomicU16, AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::{SystemTime, UNIX_EPOCH},
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A private key to sign with and the public parts a key set publishes.
pub struct TestKey {
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    /// The public key as a JWK without `kid` or `alg`.
    pub public: Value,
    /// For RSA keys: the public key as PEM, which an HMAC confusion attack uses as the
    /// secret.
    pub public_pem: Vec<u8>,
}

// === impl TestKey ===

impl TestKey {
    /// A 2048-bit RSA key made by the `openssl` command.
    pub fn rsa(alg: Algorithm) -> TestKey {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("key.pem");
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            pem.to_str().unwrap(),
        ]);
        let path = pem.to_str().unwrap();
        // PKCS#1 DER is what the signer expects.
        let der = openssl(&["rsa", "-in", path, "-outform", "DER", "-traditional"]);
        let modulus =
            String::from_utf8(openssl(&["rsa", "-in", path, "-noout", "-modulus"])).unwrap();
        let hex = modulus.trim().strip_prefix("Modulus=").unwrap();
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        TestKey {
            alg,
            encoding: EncodingKey::from_rsa_der(&der),
            public: json!({"kty": "RSA", "n": b64(&n), "e": "AQAB"}),
            public_pem: openssl(&["rsa", "-in", path, "-pubout"]),
        }
    }

    /// A P-256 key for ES256, or a P-384 key for ES384.
    pub fn ec(alg: Algorithm) -> TestKey {
        let (rcgen_alg, crv, len) = match alg {
            Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, "P-256", 32),
            Algorithm::ES384 => (&rcgen::PKCS_ECDSA_P384_SHA384, "P-384", 48),
            other => panic!("not an EC algorithm: {other:?}"),
        };
        let pair = rcgen::KeyPair::generate_for(rcgen_alg).unwrap();
        let point = pair.public_key_raw();
        assert_eq!(point.len(), 1 + 2 * len, "an uncompressed point");
        TestKey {
            alg,
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            public: json!({
                "kty": "EC",
                "crv": crv,
                "x": b64(&point[1..1 + len]),
                "y": b64(&point[1 + len..]),
            }),
            public_pem: Vec::new(),
        }
    }

    /// An Ed25519 key for EdDSA.
    pub fn ed25519() -> TestKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        TestKey {
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(&pair.serialize_der()),
            public: json!({"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key_raw())}),
            public_pem: Vec::new(),
        }
    }

    /// A random 32-byte secret for HS256/384/512.
    pub fn hmac(alg: Algorithm) -> TestKey {
        let secret: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
        TestKey::hmac_from(alg, &secret)
    }

    pub fn hmac_from(alg: Algorithm, secret: &[u8]) -> TestKey {
        TestKey {
            alg,
            encoding: EncodingKey::from_secret(secret).unwrap(),
            public: json!({"kty": "oct", "k": b64(secret)}),
            public_pem: Vec::new(),
        }
    }

    /// The public JWK with `kid` and, when given, `alg`.
    pub fn jwk(&self, kid: &str, alg: Option<&str>) -> Value {
        let mut jwk = self.public.clone();
        jwk["kid"] = json!(kid);
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg);
        }
        jwk
    }

    /// A token with header `{"alg": <this key's>, "kid": kid}` and `claims`.
    pub fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = json!({"alg": alg_name(self.alg), "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        self.sign_with_header(&header, claims)
    }

    /// A token with exactly `header`, signed with this key's algorithm whatever the
    /// header says.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let message = format!("{}.{}", b64_json(header), b64_json(claims));
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, self.alg).unwrap();
        format!("{message}.{sig}")
    }
}

/// One RSA key per test process: making them takes a moment.
pub fn rsa_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| TestKey::rsa(Algorithm::RS256))
}

/// Another RSA key, for tokens that must not verify against the first.
pub fn other_rsa_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| TestKey::rsa(Algorithm::RS256))
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn alg_name(alg: Algorithm) -> String {
    serde_json::to_value(alg)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64_json(value: &Value) -> String {
    b64(value.to_string().as_bytes())
}

/// A JWKS document with `keys`.
pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A JWKS server on a loopback port that answers every request with the current body
/// and status, and counts the requests.
#[derive(Clone)]
pub struct JwksServer {
    pub addr: SocketAddr,
    scheme: &'static str,
    body: Arc<arc_swap::ArcSwap<String>>,
    status: Arc<AtomicU16>,
    fetches: Arc<AtomicUsize>,
}

// === impl JwksServer ===

impl JwksServer {
    pub async fn start(body: String) -> JwksServer {
        JwksServer::serve(body, None).await
    }

    /// The same over TLS, with a certificate for `localhost`.
    pub async fn start_tls(body: String, cert_pem: &str, key_pem: &str) -> JwksServer {
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        JwksServer::serve(body, Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn serve(body: String, tls: Option<TlsAcceptor>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = JwksServer {
            addr: listener.local_addr().unwrap(),
            scheme: if tls.is_some() { "https" } else { "http" },
            body: Arc::new(arc_swap::ArcSwap::from_pointee(body)),
            status: Arc::new(AtomicU16::new(200)),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move { s.answer(req).await }
                    });
                    let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(stream), svc).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => http.serve_connection(TokioIo::new(stream), svc).await,
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        server
    }

    async fn answer(&self, _req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let mut resp = Response::new(Full::new(Bytes::from(self.body.load().as_str().to_owned())));
        *resp.status_mut() = StatusCode::from_u16(self.status.load(Ordering::SeqCst)).unwrap();
        Ok(resp)
    }

    pub fn url(&self) -> String {
        match self.scheme {
            "https" => format!("https://localhost:{}/jwks.json", self.addr.port()),
            _ => format!("http://{}/jwks.json", self.addr),
        }
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn set_body(&self, body: String) {
        self.body.store(Arc::new(body));
    }

    /// Makes every later answer carry `status`, as a provider that is down would.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}
