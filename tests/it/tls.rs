//! HTTPS at the edge: certificates by name, renewal under open connections, 421,
//! redirects and HSTS, client certificates, and bad certificates reported, not served.

use crate::pki::*;
use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use portcullis::{compile::Reason, proxy::Limits};
use rustls::pki_types::ServerName;
use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

/// Writes a Secret folder the way a Secret volume updates: new files, then a rename, so
/// a reader never sees half of a pair.
fn write_secret(dir: &Path, name: &str, files: &[(&str, &str)]) {
    let staging = dir.join(format!(".{name}.new"));
    std::fs::create_dir_all(&staging).unwrap();
    for (file, text) in files {
        std::fs::write(staging.join(file), text).unwrap();
    }
    let target = dir.join(name);
    if target.exists() {
        std::fs::remove_dir_all(&target).unwrap();
    }
    std::fs::rename(&staging, &target).unwrap();
}

fn write_cert(dir: &Path, name: &str, leaf: &Leaf) {
    write_secret(dir, name, &[("tls.crt", &leaf.crt), ("tls.key", &leaf.key)]);
}

fn tls_route(name: &str, hosts: &[&str], secret: &str, backend: SocketAddr, extra: &str) -> String {
    format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\n\
         spec:\n  hosts: [{}]\n  tls:\n    certificateRef: {{name: {secret}}}\n{extra}\
         \n  rules:\n  - backends: [{{address: '{backend}'}}]\n",
        hosts
            .iter()
            .map(|h| format!("'{h}'"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// An HTTP/1.1 client on an open TLS connection.
struct Https {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Https {
    async fn over(stream: TlsStream<TcpStream>) -> Https {
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        Https { sender }
    }

    async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, String> {
        let mut b = http::Request::get(path).header("host", host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::new())).unwrap();
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.sender.send_request(req))
            .await
            .expect("answer within 10 s")
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

async fn https_get(
    gw: &TestGateway,
    pki: &Pki,
    host: &str,
    path: &str,
    client: Option<&Leaf>,
) -> Result<Answer, String> {
    let stream = connect(gw.tls_addr, host, pki.roots(), client)
        .await
        .map_err(|e| e.to_string())?;
    Https::over(stream).await.get(host, path, &[]).await
}

async fn metric(gw: &TestGateway, line_start: &str) -> Option<f64> {
    let text = get(&format!("http://{}/metrics", gw.admin), &[]).await.body;
    String::from_utf8_lossy(&text)
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn each_name_gets_its_own_certificate() {
    let pki = Pki::new("Test CA");
    let app = pki.leaf(&["app.example.test"]);
    let wild = pki.leaf(&["*.wild.example.test"]);
    let backend = echo("b").await;
    let yaml = tls_route("app", &["app.example.test"], "app-tls", backend, "")
        + &tls_route("wild", &["*.wild.example.test"], "wild-tls", backend, "");
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| {
            write_cert(dir, "app-tls", &app);
            write_cert(dir, "wild-tls", &wild);
        },
        None,
    )
    .await;

    let s = connect(gw.tls_addr, "app.example.test", pki.roots(), None)
        .await
        .unwrap();
    assert_eq!(served_der(&s), app.der);
    let s = connect(gw.tls_addr, "x.wild.example.test", pki.roots(), None)
        .await
        .unwrap();
    assert_eq!(served_der(&s), wild.der);
    // A wildcard certificate covers one label, so that name gets no certificate at all.
    assert!(
        connect(gw.tls_addr, "a.b.wild.example.test", pki.roots(), None)
            .await
            .is_err()
    );
    let err = connect(gw.tls_addr, "other.example.test", pki.roots(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UnrecognisedName"), "{err}");
    assert_eq!(
        metric(
            &gw,
            "portcullis_tls_handshakes_total{result=\"unknown_name\"}"
        )
        .await,
        Some(2.0)
    );

    let a = https_get(&gw, &pki, "app.example.test", "/hello", None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(
        a.echoed_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert!(a.header("strict-transport-security").is_empty());

    // Browsers offer h2 first; the gateway takes it.
    let config = client_config(pki.roots(), None, &[b"h2", b"http/1.1"]);
    let tcp = TcpStream::connect(gw.tls_addr).await.unwrap();
    let s = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("app.example.test").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://app.example.test/h2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 200);

    let not_after = metric(
        &gw,
        "portcullis_tls_certificate_not_after_seconds{secret=\"app-tls\"}",
    )
    .await
    .expect("expiry gauge");
    let (_, parsed) = x509_parser::parse_x509_certificate(&app.der).unwrap();
    assert_eq!(not_after as i64, parsed.validity().not_after.timestamp());
}

#[tokio::test]
async fn default_certificate_serves_clients_without_a_name_and_names_it_covers() {
    let pki = Pki::new("Test CA");
    let fallback = pki.leaf(&["127.0.0.1", "*.fallback.test"]);
    let app = pki.leaf(&["app.example.test"]);
    let backend = echo("b").await;
    let yaml = tls_route("app", &["app.example.test"], "app", backend, "")
        + "---\n"
        + &route_to("any", backend);
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| {
            write_cert(dir, "fallback", &fallback);
            write_cert(dir, "app", &app);
        },
        Some("fallback"),
    )
    .await;
    // An IP address sends no SNI.
    let s = connect(gw.tls_addr, "127.0.0.1", pki.roots(), None)
        .await
        .unwrap();
    assert_eq!(served_der(&s), fallback.der);
    let s = connect(gw.tls_addr, "x.fallback.test", pki.roots(), None)
        .await
        .unwrap();
    assert_eq!(served_der(&s), fallback.der);
    // Never a certificate for the wrong name.
    assert!(connect(gw.tls_addr, "elsewhere.test", pki.roots(), None)
        .await
        .is_err());

    // A name the default certificate covers belongs to the default's connections: on a
    // connection opened for another certificate it gets 421, on its own it is served.
    let s = connect(gw.tls_addr, "app.example.test", pki.roots(), None)
        .await
        .unwrap();
    let mut on_app = Https::over(s).await;
    let a = on_app.get("x.fallback.test", "/", &[]).await.unwrap();
    assert_eq!(a.status, 421);
    assert_eq!(
        on_app.get("elsewhere.test", "/", &[]).await.unwrap().status,
        200
    );
    let s = connect(gw.tls_addr, "x.fallback.test", pki.roots(), None)
        .await
        .unwrap();
    let mut on_default = Https::over(s).await;
    assert_eq!(
        on_default
            .get("y.fallback.test", "/", &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        on_default
            .get("app.example.test", "/", &[])
            .await
            .unwrap()
            .status,
        421
    );
}

#[tokio::test]
async fn a_request_for_a_host_of_another_certificate_gets_421() {
    let pki = Pki::new("Test CA");
    let one = pki.leaf(&["one.example.test"]);
    let two = pki.leaf(&["two.example.test"]);
    let shared = pki.leaf(&["s1.example.test", "s2.example.test"]);
    let backend = echo("b").await;
    let yaml = tls_route("one", &["one.example.test"], "one", backend, "")
        + &tls_route("two", &["two.example.test"], "two", backend, "")
        + &tls_route(
            "shared",
            &["s1.example.test", "s2.example.test"],
            "shared",
            backend,
            "",
        );
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| {
            write_cert(dir, "one", &one);
            write_cert(dir, "two", &two);
            write_cert(dir, "shared", &shared);
        },
        None,
    )
    .await;

    let mut c = Https::over(
        connect(gw.tls_addr, "one.example.test", pki.roots(), None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        c.get("one.example.test", "/", &[]).await.unwrap().status,
        200
    );
    let a = c.get("two.example.test", "/", &[]).await.unwrap();
    assert_eq!(a.status, 421);
    assert_eq!(a.json()["error"], "misdirected");
    // A host with no certificate of its own may be asked for on any connection.
    assert_eq!(
        c.get("plain.example.test", "/", &[]).await.unwrap().status,
        404
    );

    // Hosts that share a certificate may share a connection.
    let mut c = Https::over(
        connect(gw.tls_addr, "s1.example.test", pki.roots(), None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        c.get("s2.example.test", "/", &[]).await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn a_renewed_certificate_serves_new_handshakes_and_keeps_open_connections() {
    let pki = Pki::new("Test CA");
    let v1 = pki.leaf(&["app.example.test"]);
    let v2 = pki.leaf(&["app.example.test"]);
    let backend = echo("b").await;
    let gw = TestGateway::with_secrets(
        &tls_route("app", &["app.example.test"], "app-tls", backend, ""),
        Limits::default(),
        |dir| write_cert(dir, "app-tls", &v1),
        None,
    )
    .await;

    let open = connect(gw.tls_addr, "app.example.test", pki.roots(), None)
        .await
        .unwrap();
    assert_eq!(served_der(&open), v1.der);
    let mut open = Https::over(open).await;
    assert_eq!(
        open.get("app.example.test", "/1", &[])
            .await
            .unwrap()
            .status,
        200
    );

    write_cert(gw.secrets.path(), "app-tls", &v2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = connect(gw.tls_addr, "app.example.test", pki.roots(), None)
            .await
            .unwrap();
        if served_der(&s) == v2.der {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened with the old certificate still works.
    assert_eq!(
        open.get("app.example.test", "/2", &[])
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test]
async fn plain_http_is_redirected_and_https_answers_carry_hsts() {
    let pki = Pki::new("Test CA");
    let leaf = pki.leaf(&["shop.example.test"]);
    let backend = echo("b").await;
    let extra = "    httpRedirect: {port: 8443}\n    hsts: {maxAgeSeconds: 31536000, includeSubDomains: true}\n";
    let yaml = tls_route("shop", &["shop.example.test"], "shop", backend, extra)
        + "---\n"
        + &route_to("plain", backend);
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| write_cert(dir, "shop", &leaf),
        None,
    )
    .await;

    let a = get(&gw.url("/cart?id=7"), &[("host", "shop.example.test")]).await;
    assert_eq!(a.status, 308);
    assert_eq!(
        a.header("location"),
        "https://shop.example.test:8443/cart?id=7"
    );
    assert!(
        a.header("strict-transport-security").is_empty(),
        "HSTS is never sent over plain HTTP"
    );
    // Other hosts are not touched.
    assert_eq!(
        get(&gw.url("/"), &[("host", "other.test")]).await.status,
        200
    );

    let a = https_get(&gw, &pki, "shop.example.test", "/cart", None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("strict-transport-security"),
        "max-age=31536000; includeSubDomains"
    );
}

#[tokio::test]
async fn client_certificates_required_and_optional() {
    let pki = Pki::new("Server CA");
    let clients = Pki::new("Client CA");
    let strangers = Pki::new("Other CA");
    let admin = pki.leaf(&["admin.example.test"]);
    let partner = pki.leaf(&["partner.example.test"]);
    let open = pki.leaf(&["open.example.test"]);
    let good = clients.leaf(&["alice"]);
    let bad = strangers.leaf(&["mallory"]);
    let backend = echo("b").await;
    let yaml = tls_route(
        "admin",
        &["admin.example.test"],
        "admin",
        backend,
        "    clientCertificate: {caRef: {name: client-ca}}\n",
    ) + &tls_route(
        "partner",
        &["partner.example.test"],
        "partner",
        backend,
        "    clientCertificate: {caRef: {name: client-ca}, mode: Optional}\n",
    ) + &tls_route("open", &["open.example.test"], "open", backend, "");
    let ca_pem = clients.ca_pem();
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| {
            write_cert(dir, "admin", &admin);
            write_cert(dir, "partner", &partner);
            write_cert(dir, "open", &open);
            write_secret(dir, "client-ca", &[("ca.crt", &ca_pem)]);
        },
        None,
    )
    .await;

    // Required: no certificate, or one from another CA, never reaches the backend.
    assert!(https_get(&gw, &pki, "admin.example.test", "/", None)
        .await
        .is_err());
    assert!(https_get(&gw, &pki, "admin.example.test", "/", Some(&bad))
        .await
        .is_err());
    let a = https_get(&gw, &pki, "admin.example.test", "/", Some(&good))
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    let xfcc = a.echoed_header("x-forwarded-client-cert").unwrap();
    assert!(xfcc.starts_with("Hash="), "{xfcc}");
    assert!(xfcc.ends_with(";Subject=\"CN=alice\""), "{xfcc}");
    // Plain HTTP cannot show a certificate.
    let a = get(&gw.url("/"), &[("host", "admin.example.test")]).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["error"], "client_certificate_required");
    // Nor can a connection opened for a host without the check.
    let mut c = Https::over(
        connect(gw.tls_addr, "open.example.test", pki.roots(), None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        c.get("admin.example.test", "/", &[]).await.unwrap().status,
        421
    );

    // Optional: without a certificate the backend hears of none, whatever the client says.
    let stream = connect(gw.tls_addr, "partner.example.test", pki.roots(), None)
        .await
        .unwrap();
    let a = Https::over(stream)
        .await
        .get(
            "partner.example.test",
            "/",
            &[("x-forwarded-client-cert", "Hash=00;Subject=\"CN=admin\"")],
        )
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.echoed_header("x-forwarded-client-cert"), None);
    let a = https_get(&gw, &pki, "partner.example.test", "/", Some(&good))
        .await
        .unwrap();
    assert!(a
        .echoed_header("x-forwarded-client-cert")
        .unwrap()
        .contains("CN=alice"));
    assert!(
        https_get(&gw, &pki, "partner.example.test", "/", Some(&bad))
            .await
            .is_err()
    );

    let a = get(
        &gw.url("/"),
        &[
            ("host", "open.example.test"),
            ("x_forwarded_client_cert", "Hash=00"),
        ],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.echoed_header("x-forwarded-client-cert"), None);
    assert_eq!(a.echoed_header("x_forwarded_client_cert"), None);
}

#[tokio::test]
async fn bad_certificates_are_reported_and_never_served() {
    let pki = Pki::new("Test CA");
    let good = pki.leaf(&["good.example.test"]);
    let wrong_name = pki.leaf(&["someone-else.test"]);
    let expired = pki.leaf_valid(&["old.example.test"], -30, -1);
    let other_key = pki.leaf(&["mixed.example.test"]);
    let backend = echo("b").await;
    let yaml = tls_route("good", &["good.example.test"], "good", backend, "")
        + &tls_route("wrong", &["wrong.example.test"], "wrong", backend, "")
        + &tls_route("old", &["old.example.test"], "old", backend, "")
        + &tls_route("missing", &["missing.example.test"], "nowhere", backend, "")
        + &tls_route("mixed", &["mixed.example.test"], "mixed", backend, "");
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| {
            write_cert(dir, "good", &good);
            write_cert(dir, "wrong", &wrong_name);
            write_cert(dir, "old", &expired);
            write_secret(
                dir,
                "mixed",
                &[("tls.crt", &other_key.crt), ("tls.key", &good.key)],
            );
        },
        None,
    )
    .await;

    let problems = gw.gw.as_ref().unwrap().snapshot.load().problems.clone();
    let about = |route: &str| {
        problems
            .iter()
            .filter(|p| p.object.name == route)
            .map(|p| {
                assert_eq!(p.reason, Reason::InvalidCertificateRef);
                format!("{}: {}", p.field, p.message)
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(about("good"), "");
    assert!(about("wrong").contains("spec.hosts[0]: the certificate in secrets folder wrong does not cover host wrong.example.test; it names someone-else.test"), "{}", about("wrong"));
    assert!(about("old").contains("expired at"), "{}", about("old"));
    assert!(
        about("missing").contains("Secret default/nowhere not found"),
        "{}",
        about("missing")
    );
    assert!(
        about("mixed").contains("do not make a usable pair"),
        "{}",
        about("mixed")
    );

    assert!(
        connect(gw.tls_addr, "wrong.example.test", pki.roots(), None)
            .await
            .is_err()
    );
    assert!(
        connect(gw.tls_addr, "missing.example.test", pki.roots(), None)
            .await
            .is_err()
    );
    assert!(
        connect(gw.tls_addr, "mixed.example.test", pki.roots(), None)
            .await
            .is_err()
    );
    // The others keep serving, over HTTPS and plain HTTP alike.
    assert_eq!(
        https_get(&gw, &pki, "good.example.test", "/", None)
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get(&gw.url("/"), &[("host", "wrong.example.test")])
            .await
            .status,
        200
    );

    // A broken renewal keeps the last good certificate, and says so.
    write_secret(
        gw.secrets.path(),
        "good",
        &[("tls.crt", &good.crt), ("tls.key", "not a key")],
    );
    let snapshot = gw.gw.as_ref().unwrap().snapshot.clone();
    let noticed = || {
        snapshot
            .load()
            .problems
            .iter()
            .any(|p| p.object.name == "good")
    };
    eventually_true(noticed).await;
    let problems = snapshot.load().problems.clone();
    let p = problems.iter().find(|p| p.object.name == "good").unwrap();
    assert!(
        p.message.contains("the previous certificate keeps serving"),
        "{}",
        p.message
    );
    let s = connect(gw.tls_addr, "good.example.test", pki.roots(), None)
        .await
        .unwrap();
    assert_eq!(served_der(&s), good.der);
}

#[tokio::test]
async fn tls12_works_and_stalled_or_plain_text_handshakes_are_closed() {
    let pki = Pki::new("Test CA");
    let app = pki.leaf(&["app.example.test"]);
    let backend = echo("b").await;
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let gw = TestGateway::with_secrets(
        &tls_route("app", &["app.example.test"], "app-tls", backend, ""),
        limits,
        |dir| write_cert(dir, "app-tls", &app),
        None,
    )
    .await;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    let tcp = TcpStream::connect(gw.tls_addr).await.unwrap();
    let s = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("app.example.test").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(
        Https::over(s)
            .await
            .get("app.example.test", "/", &[])
            .await
            .unwrap()
            .status,
        200
    );

    // Silence, half a ClientHello, and plain HTTP on the TLS port: each is closed, the
    // first two once the head timeout passes.
    let started = std::time::Instant::now();
    let silent = raw(gw.tls_addr, b"", Duration::from_secs(3)).await;
    assert_eq!(silent, "");
    let half = raw(
        gw.tls_addr,
        &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01],
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(half, "");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let plain = raw(
        gw.tls_addr,
        b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(!plain.contains("200"), "{plain}");
    assert_eq!(
        metric(&gw, "portcullis_tls_handshakes_total{result=\"timeout\"}").await,
        Some(2.0)
    );
    assert_eq!(
        metric(&gw, "portcullis_tls_handshakes_total{result=\"failed\"}").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_host_whose_client_ca_is_missing_is_never_served_without_a_certificate() {
    let pki = Pki::new("Test CA");
    // The default certificate covers the host, so a handshake for it still succeeds.
    let fallback = pki.leaf(&["*.example.test"]);
    let backend = echo("b").await;
    let gw = TestGateway::with_secrets(
        &tls_route(
            "locked",
            &["locked.example.test"],
            "fallback",
            backend,
            "    clientCertificate: {caRef: {name: no-such-ca}}\n",
        ),
        Limits::default(),
        |dir| write_cert(dir, "fallback", &fallback),
        Some("fallback"),
    )
    .await;
    let problems = gw.gw.as_ref().unwrap().snapshot.load().problems.clone();
    assert!(
        problems
            .iter()
            .any(|p| p.field == "spec.tls.clientCertificate.caRef"
                && p.message.contains("no-such-ca not found")),
        "{problems:?}"
    );
    let a = https_get(&gw, &pki, "locked.example.test", "/", None)
        .await
        .unwrap();
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["error"], "client_certificate_required");
}

#[tokio::test]
async fn the_client_certificate_requirement_holds_for_the_host_whatever_route_answers() {
    let pki = Pki::new("Server CA");
    let clients = Pki::new("Client CA");
    let other_clients = Pki::new("Other client CA");
    let shop = pki.leaf(&["shop.example.test"]);
    let alice = clients.leaf(&["alice"]);
    let backend = echo("b").await;
    // `locked` requires a certificate on /secure; `extra` and the catch-all serve the
    // same host without saying anything about certificates.
    let yaml = tls_route(
        "locked",
        &["shop.example.test"],
        "shop",
        backend,
        "    clientCertificate: {caRef: {name: client-ca}}\n",
    )
    .replace(
        "  - backends:",
        "  - matches: [{path: {value: /secure}}]\n    backends:",
    ) + "---\n"
        + &route_to("catch-all", backend);
    let ca_pem = clients.ca_pem();
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| {
            write_cert(dir, "shop", &shop);
            write_secret(dir, "client-ca", &[("ca.crt", &ca_pem)]);
        },
        None,
    )
    .await;
    for path in ["/secure", "/other"] {
        let a = get(&gw.url(path), &[("host", "shop.example.test")]).await;
        assert_eq!(a.status, 403, "{path}");
    }
    // Another host still reaches the catch-all.
    assert_eq!(
        get(&gw.url("/"), &[("host", "else.test")]).await.status,
        200
    );
    let a = https_get(&gw, &pki, "shop.example.test", "/other", Some(&alice))
        .await
        .unwrap();
    assert_eq!(a.status, 200);

    // Replacing the CA ends what the old one verified, also on open connections.
    let open = connect(gw.tls_addr, "shop.example.test", pki.roots(), Some(&alice))
        .await
        .unwrap();
    let mut open = Https::over(open).await;
    assert_eq!(
        open.get("shop.example.test", "/secure", &[])
            .await
            .unwrap()
            .status,
        200
    );
    write_secret(
        gw.secrets.path(),
        "client-ca",
        &[("ca.crt", &other_clients.ca_pem())],
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = open
            .get("shop.example.test", "/secure", &[])
            .await
            .unwrap()
            .status;
        if status == 421 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old CA kept its connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        https_get(&gw, &pki, "shop.example.test", "/secure", Some(&alice))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_client_that_names_no_host_reaches_hosts_without_certificates() {
    let pki = Pki::new("Test CA");
    let fallback = pki.leaf(&["127.0.0.1"]);
    let backend = echo("b").await;
    let gw = TestGateway::with_secrets(
        &route_to("any", backend),
        Limits::default(),
        |dir| write_cert(dir, "fallback", &fallback),
        Some("fallback"),
    )
    .await;
    let s = connect(gw.tls_addr, "127.0.0.1", pki.roots(), None)
        .await
        .unwrap();
    let host = gw.tls_addr.to_string();
    let a = Https::over(s).await.get(&host, "/", &[]).await.unwrap();
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn an_aggregate_cannot_reach_a_host_that_requires_a_certificate_without_one() {
    let pki = Pki::new("Server CA");
    let clients = Pki::new("Client CA");
    let strangers = Pki::new("Other CA");
    let leaf = |host: &str| pki.leaf(&[host]);
    let alice = clients.leaf(&["alice"]);
    let mallory = strangers.leaf(&["mallory"]);
    let backend = echo("b").await;
    let bff = "---\napiVersion: portcullis.dev/v1alpha1\nkind: BFF\nmetadata: {name: web}\n\
               spec:\n  client: web\n  hosts: [web.example.test, partner.example.test]\n  endpoints:\n\
               \x20 - path: /home\n    aggregate:\n      parts:\n\
               \x20     - {name: admin, route: {host: admin.example.test}, path: /users}\n\
               \x20     - {name: open, route: {host: open.example.test}, path: /news, required: false}\n";
    // The BFF's hosts ask for a certificate without requiring one, so a caller can show
    // it: web checks it against admin's CA, partner against another. open has a
    // certificate of its own and no client check.
    let route = |name: &str, check: Option<(&str, &str)>| {
        let check = match check {
            None => String::new(),
            Some((ca, mode)) => {
                format!("    clientCertificate: {{caRef: {{name: {ca}}}, mode: {mode}}}\n")
            }
        };
        tls_route(
            name,
            &[&format!("{name}.example.test")],
            name,
            backend,
            &check,
        )
    };
    let yaml = route("admin", Some(("client-ca", "Require")))
        + &route("web", Some(("client-ca", "Optional")))
        + &route("partner", Some(("other-ca", "Optional")))
        + &route("open", None)
        + bff;
    let (ca_pem, other_pem) = (clients.ca_pem(), strangers.ca_pem());
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| {
            for host in ["admin", "web", "partner", "open"] {
                write_cert(dir, host, &leaf(&format!("{host}.example.test")));
            }
            write_secret(dir, "client-ca", &[("ca.crt", &ca_pem)]);
            write_secret(dir, "other-ca", &[("ca.crt", &other_pem)]);
        },
        None,
    )
    .await;
    let problems = gw.gw.as_ref().unwrap().snapshot.load().problems.clone();
    assert!(problems.is_empty(), "{problems:?}");

    let a = get(&gw.url("/home"), &[("host", "web.example.test")]).await;
    assert_eq!(a.status, 403, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["error"], "client_certificate_required");
    assert_eq!(a.json()["part"], "admin");
    let a = https_get(&gw, &pki, "web.example.test", "/home", None)
        .await
        .unwrap();
    assert_eq!(a.status, 403);
    // A certificate another host accepted vouches for nothing at admin.
    let a = https_get(&gw, &pki, "partner.example.test", "/home", Some(&mallory))
        .await
        .unwrap();
    assert_eq!(a.status, 403, "{}", String::from_utf8_lossy(&a.body));

    let a = https_get(&gw, &pki, "web.example.test", "/home", Some(&alice))
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let xfcc = |part: &str| a.json()[part]["headers"]["x-forwarded-client-cert"][0].clone();
    assert!(
        xfcc("admin")
            .as_str()
            .is_some_and(|x| x.ends_with(";Subject=\"CN=alice\"")),
        "{}",
        xfcc("admin")
    );
    // open never checked it: its backends hear of no certificate.
    assert_eq!(a.json()["open"]["path"], "/news");
    assert!(xfcc("open").is_null(), "{}", xfcc("open"));
}
