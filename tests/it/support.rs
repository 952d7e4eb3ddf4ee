//! Real servers on port 0 and small clients for the integration tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use portcullis::{
    config::ObjectKey,
    gateway::{Gateway, Options, Source},
    proxy::Limits,
};
use std::{net::SocketAddr, path::PathBuf, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Starts an echo backend named `name` on a free loopback port.
pub async fn echo(name: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(portcullis::echo::serve(listener, name.to_string()));
    addr
}

/// A loopback address where nothing listens.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A gateway serving `yaml` from a file in its own folder, with plain and TLS
/// listeners and a secrets folder of its own.
pub struct TestGateway {
    pub gw: Option<Gateway>,
    pub addr: SocketAddr,
    pub tls_addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub secrets: tempfile::TempDir,
}

impl TestGateway {
    pub async fn start(yaml: &str) -> TestGateway {
        Self::with_limits(yaml, Limits::default()).await
    }

    pub async fn with_limits(yaml: &str, limits: Limits) -> TestGateway {
        Self::with_secrets(yaml, limits, |_| {}, None).await
    }

    /// `secrets` fills the secrets folder before the gateway starts; `default_cert`
    /// names one of its folders.
    pub async fn with_secrets(
        yaml: &str,
        limits: Limits,
        secrets: impl FnOnce(&std::path::Path),
        default_cert: Option<&str>,
    ) -> TestGateway {
        Self::build(yaml, secrets, |o| {
            o.limits = limits;
            o.default_certificate = default_cert.map(|name| ObjectKey {
                namespace: String::new(),
                name: name.into(),
            });
        })
        .await
    }

    /// `edit` changes the options before the gateway starts.
    pub async fn with_options(yaml: &str, edit: impl FnOnce(&mut Options)) -> TestGateway {
        Self::build(yaml, |_| {}, edit).await
    }

    async fn build(
        yaml: &str,
        secrets: impl FnOnce(&std::path::Path),
        edit: impl FnOnce(&mut Options),
    ) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let secrets_dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("routes.yaml"), yaml).unwrap();
        secrets(secrets_dir.path());
        let mut opts = Options {
            source: Source::Files(dir.path().to_path_buf()),
            listen: "127.0.0.1:0".parse().unwrap(),
            listen_tls: Some("127.0.0.1:0".parse().unwrap()),
            admin: "127.0.0.1:0".parse().unwrap(),
            secrets_dir: Some(secrets_dir.path().to_path_buf()),
            default_certificate: None,
            limits: Limits::default(),
            drain: Duration::from_secs(5),
            access_log: false,
            trusted_proxies: Vec::new(),
            redis_url: None,
            replicas: 1,
            cluster_domain: "cluster.local".into(),
        };
        edit(&mut opts);
        let gw = Gateway::start(opts).await.unwrap();
        TestGateway {
            addr: gw.listen_addr,
            tls_addr: gw.listen_tls_addr.unwrap(),
            admin: gw.admin_addr,
            gw: Some(gw),
            dir,
            secrets: secrets_dir,
        }
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("routes.yaml")
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let answer = get(&format!("http://{}/metrics", self.admin), &[]).await;
        String::from_utf8_lossy(&answer.body).into_owned()
    }

    /// The base URL of the traffic listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Waits up to 10 s for `f` to hold.
pub async fn eventually_true(mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One route `name` on any host sending every request to `backend`.
pub fn route_to(name: &str, backend: SocketAddr) -> String {
    format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\n\
         spec:\n  rules:\n  - backends: [{{address: '{backend}'}}]\n"
    )
}

pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// The `error` code of a gateway's JSON answer, or the status when there is none.
    pub fn json_or_code(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| self.status.to_string())
    }

    /// The echo backend's view of one request header, first value.
    pub fn echoed_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name][0].as_str().map(str::to_string)
    }
}

/// Sends a request through a fresh HTTP/1.1 client.
pub async fn send(req: http::Request<Full<Bytes>>) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("answer within 10 s")
        .expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut b = http::Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::new(Bytes::new())).unwrap()).await
}

/// Writes `bytes` on a new connection and returns everything read until the server
/// closes it or `wait` passes without data.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_until_idle(&mut stream, wait).await
}

pub async fn read_until_idle(stream: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Status codes of every response in a raw HTTP/1.1 byte stream, in order.
pub fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw[i + 9..i + 12].parse().ok())
        .collect()
}
