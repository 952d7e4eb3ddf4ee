//! TLS from the gateway to backends: a CA made at test time, the server name checked,
//! HTTP/2 or HTTP/1.1 by ALPN, a client certificate for backends that require one, and
//! every failure a 502, never a request in plain text.

use crate::pki::*;
use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use portcullis::{compile::Reason, proxy::Limits};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    ServerConfig,
};
use std::{
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A TLS backend: answers with what it saw as JSON. `clients` makes it require a client
/// certificate signed by that CA. Counts the handshakes that succeeded.
struct TlsBackend {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
}

async fn tls_backend(leaf: &Leaf, clients: Option<&Pki>, alpn: &[&[u8]]) -> TlsBackend {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider)
                .build()
                .unwrap(),
        ),
    };
    let mut config = builder
        .with_single_cert(
            vec![CertificateDer::from(leaf.der.clone())],
            PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let count = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let client_cert = stream.get_ref().1.peer_certificates().is_some();
                let service = service_fn(move |req| answer(req, client_cert));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TlsBackend { addr, handshakes }
}

async fn answer(
    req: http::Request<Incoming>,
    client_cert: bool,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let body = serde_json::json!({
        "version": format!("{:?}", req.version()),
        "host": req.headers().get("host").map(|h| h.to_str().unwrap()),
        "authority": req.uri().authority().map(|a| a.to_string()),
        "clientCert": client_cert,
    });
    Ok(http::Response::new(Full::new(Bytes::from(
        body.to_string(),
    ))))
}

fn write_folder(dir: &Path, name: &str, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir.join(name)).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(name).join(file), text).unwrap();
    }
}

fn tls_route(name: &str, backend: SocketAddr, tls: &str) -> String {
    format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\n\
         spec:\n  hosts: [{name}.test]\n  rules:\n  - backends: [{{address: '{backend}', tls: {tls}}}]\n"
    )
}

#[tokio::test]
async fn backends_are_verified_and_never_reached_in_plain_text() {
    let ca = Pki::new("backend CA");
    let other = Pki::new("other CA");
    let leaf = ca.leaf(&["backend.test"]);
    let h2 = tls_backend(&leaf, None, &[b"h2", b"http/1.1"]).await;
    let h1 = tls_backend(&leaf, None, &[b"http/1.1"]).await;
    let yaml = tls_route(
        "ok",
        h2.addr,
        "{caRef: {name: ca}, serverName: backend.test}",
    ) + &tls_route(
        "h1",
        h1.addr,
        "{caRef: {name: ca}, serverName: backend.test}",
    ) + &tls_route(
        "wrongca",
        h2.addr,
        "{caRef: {name: other}, serverName: backend.test}",
    ) + &tls_route(
        "wrongname",
        h2.addr,
        "{caRef: {name: ca}, serverName: else.test}",
    ) + &tls_route("noname", h2.addr, "{caRef: {name: ca}}")
        + &tls_route("missing", h2.addr, "{caRef: {name: nowhere}}");
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| {
            write_folder(dir, "ca", &[("ca.crt", &ca.ca_pem())]);
            write_folder(dir, "other", &[("ca.crt", &other.ca_pem())]);
        },
        None,
    )
    .await;

    let a = get(&gw.url("/"), &[("host", "ok.test")]).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let seen = a.json();
    assert_eq!(seen["version"], "HTTP/2.0", "ALPN picks h2");
    // The backend sees the client's host as :authority and Host alike.
    assert_eq!(seen["authority"], "ok.test");
    assert_eq!(seen["host"], "ok.test");
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/"), &[("host", "ok.test")]).await.status, 200);
    }
    assert_eq!(
        h2.handshakes.load(Ordering::SeqCst),
        1,
        "the connection is reused"
    );

    let a = get(&gw.url("/"), &[("host", "h1.test")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["version"], "HTTP/1.1");
    assert_eq!(a.json()["host"], "h1.test");

    for host in ["wrongca.test", "wrongname.test", "noname.test"] {
        let a = get(&gw.url("/"), &[("host", host)]).await;
        assert_eq!(a.status, 502, "{host}");
        assert_eq!(a.json()["error"], "backend_failed", "{host}");
    }
    // Without the certificate's name, the address is what it must be valid for.
    let a = get(&gw.url("/"), &[("host", "noname.test")]).await;
    assert!(
        a.json()["message"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{}",
        a.json()
    );

    let a = get(&gw.url("/"), &[("host", "missing.test")]).await;
    assert_eq!(a.status, 502);
    assert_eq!(
        a.json()["message"],
        "backend failed: backend TLS: Secret default/nowhere not found"
    );
    let problems = gw.gw.as_ref().unwrap().snapshot.load().problems.clone();
    let missing: Vec<_> = problems
        .iter()
        .filter(|p| p.object.name == "missing")
        .map(|p| (p.field.as_str(), p.reason))
        .collect();
    assert_eq!(
        missing,
        [(
            "spec.rules[0].backends[0].tls.caRef",
            Reason::InvalidCertificateRef
        )]
    );
    // Only the handshake that worked, and never a request on a plain connection.
    assert_eq!(h2.handshakes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_backend_that_requires_a_client_certificate_gets_one() {
    let ca = Pki::new("backend CA");
    let clients = Pki::new("client CA");
    let backend = tls_backend(&ca.leaf(&["backend.test"]), Some(&clients), &[b"h2"]).await;
    let me = clients.leaf(&["gateway.test"]);
    let yaml = tls_route(
        "with",
        backend.addr,
        "{caRef: {name: ca}, serverName: backend.test, clientCertificateRef: {name: me}}",
    ) + &tls_route(
        "without",
        backend.addr,
        "{caRef: {name: ca}, serverName: backend.test}",
    );
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| {
            write_folder(dir, "ca", &[("ca.crt", &ca.ca_pem())]);
            write_folder(dir, "me", &[("tls.crt", &me.crt), ("tls.key", &me.key)]);
        },
        None,
    )
    .await;

    let a = get(&gw.url("/"), &[("host", "with.test")]).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.json()["clientCert"], true);

    let a = get(&gw.url("/"), &[("host", "without.test")]).await;
    assert_eq!(a.status, 502);
    assert_eq!(backend.handshakes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn clients_are_kept_until_the_ca_bytes_change() {
    let ca = Pki::new("backend CA");
    let other = Pki::new("other CA");
    let backend = tls_backend(&ca.leaf(&["backend.test"]), None, &[b"h2"]).await;
    let echo = echo("e").await;
    let tls = "{caRef: {name: ca}, serverName: backend.test}";
    let yaml = tls_route("ok", backend.addr, tls);
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| write_folder(dir, "ca", &[("ca.crt", &ca.ca_pem())]),
        None,
    )
    .await;
    assert_eq!(get(&gw.url("/"), &[("host", "ok.test")]).await.status, 200);

    // A reload that leaves this backend's inputs alone keeps its connection.
    let more = yaml.clone()
        + &format!(
            "---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: extra}}\n\
             spec:\n  hosts: [extra.test]\n  rules:\n  - backends: [{{address: '{echo}'}}]\n"
        );
    std::fs::write(gw.config_file(), more).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(&gw.url("/"), &[("host", "extra.test")]).await.status != 200 {
        assert!(tokio::time::Instant::now() < deadline, "reload not served");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(get(&gw.url("/"), &[("host", "ok.test")]).await.status, 200);
    assert_eq!(backend.handshakes.load(Ordering::SeqCst), 1);

    // New CA bytes (the same CA and another) make a new client, hence a new handshake.
    let bundle = ca.ca_pem() + &other.ca_pem();
    let folder = gw.secrets.path().join("ca");
    std::fs::write(folder.join(".ca.crt.new"), bundle).unwrap();
    std::fs::rename(folder.join(".ca.crt.new"), folder.join("ca.crt")).unwrap();
    while backend.handshakes.load(Ordering::SeqCst) < 2 {
        assert!(tokio::time::Instant::now() < deadline + std::time::Duration::from_secs(10));
        assert_eq!(get(&gw.url("/"), &[("host", "ok.test")]).await.status, 200);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(get(&gw.url("/"), &[("host", "ok.test")]).await.status, 200);
}
