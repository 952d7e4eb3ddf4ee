//! A real API server (started by e2e/run.sh), kubectl, gateway processes and backends.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::{
    io::Write,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// What e2e/run.sh set up.
pub struct Env {
    pub dir: PathBuf,
    pub admin_kubeconfig: PathBuf,
    pub gateway_kubeconfig: PathBuf,
    pub backends: Vec<IpAddr>,
    /// The chart's release namespace: the only one where the gateway may hold a Lease.
    pub lease_namespace: String,
}

pub fn env() -> Env {
    let dir = std::env::var("E2E_DIR").unwrap_or_else(|_| {
        panic!("E2E_DIR is not set: these tests need the control plane; run them with `sudo bash e2e/run.sh`")
    });
    let dir = PathBuf::from(dir);
    Env {
        admin_kubeconfig: dir.join("admin.kubeconfig"),
        gateway_kubeconfig: PathBuf::from(
            std::env::var("E2E_GATEWAY_KUBECONFIG").expect("E2E_GATEWAY_KUBECONFIG"),
        ),
        backends: std::env::var("E2E_BACKENDS")
            .expect("E2E_BACKENDS")
            .split(',')
            .map(|a| a.parse().expect("backend address"))
            .collect(),
        lease_namespace: std::env::var("E2E_LEASE_NAMESPACE").expect("E2E_LEASE_NAMESPACE"),
        dir,
    }
}

/// Runs kubectl as the cluster admin; returns (success, stdout, stderr).
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let env = env();
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&env.admin_kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn apply(yaml: &str) {
    let (ok, out, err) = kubectl(&["apply", "-f", "-"], Some(yaml));
    assert!(ok, "kubectl apply failed: {out}{err}\n{yaml}");
}

/// A namespace of its own for one test, deleted at the end.
pub struct Namespace(pub String);

impl Namespace {
    pub fn new(name: &str) -> Namespace {
        let (ok, _, err) = kubectl(&["create", "namespace", name], None);
        assert!(ok, "{err}");
        Namespace(name.to_string())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"], None);
    }
}

/// Starts an echo backend on `ip` (a namespace address) and a free port.
pub async fn backend(ip: IpAddr, name: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(portcullis::echo::serve(listener, name.to_string()));
    addr
}

pub fn service(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
    )
}

/// An EndpointSlice for Service `svc` whose endpoints are `addrs`, all on one port.
pub fn slice(ns: &str, name: &str, svc: &str, addrs: &[SocketAddr]) -> String {
    let port = addrs.first().map_or(8080, |a| a.port());
    let endpoints: Vec<String> = addrs
        .iter()
        .map(|a| format!("  - addresses: [\"{}\"]\n", a.ip()))
        .collect();
    let endpoints = if endpoints.is_empty() {
        "[]\n".to_string()
    } else {
        format!("\n{}", endpoints.concat())
    };
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
         labels: {{kubernetes.io/service-name: {svc}}}\naddressType: IPv4\n\
         ports: [{{name: http, port: {port}}}]\nendpoints: {endpoints}"
    )
}

/// Applies Service `name` with one EndpointSlice `name-1` listing `addrs`.
pub fn apply_service(ns: &str, name: &str, addrs: &[SocketAddr]) {
    apply(&format!(
        "{}---\n{}",
        service(ns, name),
        slice(ns, &format!("{name}-1"), name, addrs)
    ));
}

/// A `kubernetes.io/tls` Secret.
pub fn tls_secret(ns: &str, name: &str, crt: &str, key: &str) -> String {
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n    ");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    {}\n  tls.key: |\n    {}\n",
        indent(crt),
        indent(key)
    )
}

pub fn route(ns: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}")
}

/// A gateway process in `--kube` mode, watching one namespace, under the gateway's
/// ServiceAccount. Its Lease is named after that namespace and lives in the release
/// namespace, as in a real install.
pub struct Gateway {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    pub tls_addr: SocketAddr,
    pub admin: SocketAddr,
    pub identity: String,
}

impl Gateway {
    pub async fn start(ns: &str) -> Gateway {
        Self::start_with(ns, &env().gateway_kubeconfig, true).await
    }

    /// Starts the binary; waits for `/readyz` when `wait_ready`.
    pub async fn start_with(ns: &str, kubeconfig: &std::path::Path, wait_ready: bool) -> Gateway {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--kube", "--namespace", ns, "--lease-name", ns])
            .args(["--lease-namespace", &env().lease_namespace])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--listen-tls",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,access=off")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let serving = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("gateway exited before serving");
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["message"] == "serving" {
                    return v;
                }
            }
        })
        .await
        .expect("gateway started");
        // Keep draining the log so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let source = serving["source"].as_str().unwrap_or_default().to_string();
        let identity = source
            .split("identity: \"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_string();
        let gw = Gateway {
            child,
            addr: serving["listen_addr"].as_str().unwrap().parse().unwrap(),
            // Logged as `Some(ip:port)`.
            tls_addr: serving["listen_tls_addr"]
                .as_str()
                .and_then(|s| s.strip_prefix("Some(")?.strip_suffix(')'))
                .expect("the TLS listener's address")
                .parse()
                .unwrap(),
            admin: serving["admin_addr"].as_str().unwrap().parse().unwrap(),
            identity,
        };
        if wait_ready {
            let admin = gw.admin;
            eventually(
                "the gateway is ready",
                Duration::from_secs(30),
                async || {
                    get(&format!("http://{admin}/readyz"), "x")
                        .await
                        .map(|a| a.0)
                        == Some(200)
                },
            )
            .await;
        }
        gw
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn metric(&self, prefix: &str) -> f64 {
        let (_, _, body) = get(&format!("http://{}/metrics", self.admin), "x")
            .await
            .unwrap();
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// GET through a fresh client: (status, x-echo-name, body), or `None` when the
/// connection failed.
pub async fn get(url: &str, host: &str) -> Option<(u16, String, String)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::get(url)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    let name = resp
        .headers()
        .get("x-echo-name")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, name, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls `f` until it is true or `limit` passes.
pub async fn eventually(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A condition of a Route: (status, reason, message, observedGeneration).
pub fn condition(ns: &str, name: &str, type_: &str) -> Option<(String, String, String, i64)> {
    condition_of("route", ns, name, type_)
}

/// A condition of an object of `kind` (`route`, `policy`).
pub fn condition_of(
    kind: &str,
    ns: &str,
    name: &str,
    type_: &str,
) -> Option<(String, String, String, i64)> {
    let (ok, out, _) = kubectl(&["-n", ns, "get", kind, name, "-o", "json"], None);
    if !ok {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    let c = v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?
        .clone();
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str()?.to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
        c["observedGeneration"].as_i64().unwrap_or(-1),
    ))
}

/// The identity holding the Lease of the gateways watching `ns`, or "" when none does.
pub fn lease_holder(ns: &str) -> String {
    let (_, out, _) = kubectl(
        &[
            "-n",
            &env().lease_namespace,
            "get",
            "lease",
            ns,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    out
}

pub fn resource_version(ns: &str, kind: &str, name: &str) -> String {
    let (ok, out, err) = kubectl(
        &[
            "-n",
            ns,
            "get",
            kind,
            name,
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
        None,
    );
    assert!(ok, "{err}");
    out
}
