//! The command line: `serve`, `check`, `demo` and `echo`.

use crate::{
    compile, demo, echo, gateway,
    proxy::Limits,
    source::file,
    telemetry::{self, LogFormat},
};
use clap::{Args, Parser, Subcommand};
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

/// Portcullis: an API gateway that serves Kubernetes resources or plain YAML files.
#[derive(Parser, Debug)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    /// Log output format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "PORTCULLIS_LOG_FORMAT"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
enum Command {
    /// Serve traffic from a YAML file or folder, reloading it when it changes.
    Serve(ServeArgs),
    /// Report every problem of a configuration; exit 1 when there is any.
    Check {
        /// A YAML file or a folder of them.
        #[arg(long, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// Check the certificates Routes name, from this folder (as for `serve`);
        /// without it they are not checked.
        #[arg(long, env = "PORTCULLIS_SECRETS_DIR")]
        secrets_dir: Option<PathBuf>,
    },
    /// Print the CustomResourceDefinitions of the resources the gateway reads.
    Crds,
    /// Run the gateway on the example configuration with built-in echo backends.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
    /// A small echo server: answers with the request as JSON; streams SSE; echoes
    /// WebSocket messages.
    Echo {
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: SocketAddr,
        /// Returned in `x-echo-name`, to tell backends apart.
        #[arg(long, default_value = "echo")]
        name: String,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Serve from a YAML file or a folder of them.
    #[arg(
        long,
        env = "PORTCULLIS_CONFIG",
        required_unless_present = "kube",
        conflicts_with = "kube"
    )]
    config: Option<PathBuf>,
    /// Serve from the cluster: the in-cluster configuration, or KUBECONFIG.
    #[arg(long)]
    kube: bool,
    /// With --kube, watch only this namespace (repeatable); all namespaces by default.
    #[arg(long = "namespace", requires = "kube")]
    namespaces: Vec<String>,
    /// With --kube, the namespace of the Lease that elects the status writer.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// With --kube, the name of that Lease.
    #[arg(long, default_value = "portcullis-status")]
    lease_name: String,
    /// Address for traffic.
    #[arg(long, default_value = "0.0.0.0:8080", env = "PORTCULLIS_LISTEN")]
    listen: SocketAddr,
    /// Address for HTTPS traffic.
    #[arg(long, default_value = "0.0.0.0:8443", env = "PORTCULLIS_LISTEN_TLS")]
    listen_tls: SocketAddr,
    /// Serve no HTTPS listener.
    #[arg(long)]
    no_tls: bool,
    /// With --config, the folder of certificate folders that Routes name in
    /// `tls.certificateRef` and `tls.clientCertificate.caRef`: `NAME/tls.crt`,
    /// `NAME/tls.key` and `NAME/ca.crt`, as a mounted Secret lays them out.
    #[arg(long, env = "PORTCULLIS_SECRETS_DIR", requires = "config")]
    secrets_dir: Option<PathBuf>,
    /// The certificate for handshakes that name no host, or a host no Route covers
    /// (when it is valid for that name): `namespace/name` of a Secret with --kube, a
    /// folder of --secrets-dir with --config.
    #[arg(long, env = "PORTCULLIS_DEFAULT_CERTIFICATE")]
    default_certificate: Option<String>,
    /// Address for /healthz, /readyz, /metrics and /config.
    #[arg(long, default_value = "127.0.0.1:9901", env = "PORTCULLIS_ADMIN")]
    admin: SocketAddr,
    /// Worker threads; defaults to the number of CPUs.
    #[arg(long, env = "PORTCULLIS_WORKERS")]
    workers: Option<usize>,
    /// Write one log line per request (target `access`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "PORTCULLIS_ACCESS_LOG")]
    access_log: bool,
    /// Proxies in front of the gateway (CIDRs, comma-separated) whose
    /// `X-Forwarded-For` entries are believed when Policies judge the client address.
    #[arg(long, value_delimiter = ',', env = "PORTCULLIS_TRUSTED_PROXIES")]
    trusted_proxies: Vec<ipnet::IpNet>,
    /// Redis for rate limits that Policies mark `shared` (`redis://host:6379/0`); without
    /// it, those limits count per replica. When Redis is unreachable, each replica
    /// counts its share of them (see --replicas) until it answers again.
    #[arg(long, env = "PORTCULLIS_REDIS_URL", value_parser = redis_url)]
    redis_url: Option<String>,
    /// How many replicas share the rate limits: while Redis is unreachable, each admits
    /// this fraction of a shared limit.
    #[arg(
        long,
        default_value_t = 1,
        env = "PORTCULLIS_REPLICAS",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    replicas: u32,
    /// The suffix of Service DNS names: mesh-mode backends are sent to
    /// `NAME.NAMESPACE.svc.DOMAIN`, and TLS backends are checked for that name.
    #[arg(long, default_value = crate::config::DEFAULT_CLUSTER_DOMAIN, env = "PORTCULLIS_CLUSTER_DOMAIN")]
    cluster_domain: String,
    /// After SIGTERM, how long requests in flight may take to finish.
    #[arg(long, default_value = "25s", value_parser = humantime::parse_duration)]
    drain_period: Duration,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Args, Debug)]
struct LimitArgs {
    /// Time a client has to send a request head; also how long an idle HTTP/1.1
    /// connection waits for its next request.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// Close a connection that moved no byte for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Time until a backend's response headers, for rules that set none.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Time to connect to a backend.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// Largest request head in bytes (431 above).
    #[arg(long, default_value_t = 32 * 1024)]
    max_header_bytes: usize,
    /// Most header lines in a request (431 above).
    #[arg(long, default_value_t = 100)]
    max_headers: usize,
    /// Longest request target in bytes (414 above).
    #[arg(long, default_value_t = 8 * 1024)]
    max_uri_bytes: usize,
    /// Largest request body in bytes for rules that set none (413 above).
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    max_body_bytes: u64,
}

impl LimitArgs {
    fn into_limits(self) -> Limits {
        let LimitArgs {
            header_read_timeout,
            idle_timeout,
            request_timeout,
            connect_timeout,
            max_header_bytes,
            max_headers,
            max_uri_bytes,
            max_body_bytes,
        } = self;
        Limits {
            header_read_timeout,
            idle_timeout,
            request_timeout,
            max_header_bytes,
            max_headers,
            max_uri_bytes,
            max_body_bytes,
            connect_timeout,
        }
    }
}

impl Cli {
    pub fn run(self) -> ExitCode {
        telemetry::init(self.log_format);
        match self.command {
            Command::Check {
                config,
                secrets_dir,
            } => check(&config, secrets_dir.as_deref()),
            Command::Crds => print_crds(),
            Command::Serve(args) => {
                let ServeArgs {
                    config,
                    kube,
                    namespaces,
                    lease_namespace,
                    lease_name,
                    listen,
                    listen_tls,
                    no_tls,
                    secrets_dir,
                    default_certificate,
                    admin,
                    workers,
                    access_log,
                    drain_period,
                    trusted_proxies,
                    redis_url,
                    replicas,
                    cluster_domain,
                    limits,
                } = args;
                let default_certificate = match default_certificate
                    .map(|r| secret_ref(&r, kube))
                    .transpose()
                {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("error: --default-certificate: {e}");
                        return ExitCode::from(2);
                    }
                };
                let source = match (config, kube) {
                    (Some(path), false) => gateway::Source::Files(path),
                    _ => gateway::Source::Kube(gateway::KubeOptions {
                        namespaces,
                        lease_namespace,
                        lease_name,
                        identity: identity(),
                    }),
                };
                let opts = gateway::Options {
                    source,
                    listen,
                    listen_tls: (!no_tls).then_some(listen_tls),
                    admin,
                    secrets_dir,
                    default_certificate,
                    limits: limits.into_limits(),
                    drain: drain_period,
                    access_log,
                    trusted_proxies,
                    redis_url,
                    replicas,
                    cluster_domain,
                };
                runtime(workers).block_on(serve(opts))
            }
            Command::Demo { listen, admin } => {
                let opts = gateway::Options {
                    source: gateway::Source::Files(PathBuf::new()),
                    listen,
                    listen_tls: None,
                    admin,
                    secrets_dir: None,
                    default_certificate: None,
                    limits: Limits::default(),
                    drain: Duration::from_secs(1),
                    access_log: true,
                    trusted_proxies: Vec::new(),
                    redis_url: None,
                    replicas: 1,
                    cluster_domain: crate::config::DEFAULT_CLUSTER_DOMAIN.into(),
                };
                runtime(None).block_on(run_demo(opts))
            }
            Command::Echo { listen, name } => runtime(None).block_on(async move {
                match tokio::net::TcpListener::bind(listen).await {
                    Ok(l) => {
                        tracing::info!(%listen, %name, "echo server listening");
                        tokio::select! {
                            _ = echo::serve(l, name) => {}
                            _ = stop_signal() => {}
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: cannot listen on {listen}: {e}");
                        ExitCode::FAILURE
                    }
                }
            }),
        }
    }
}

/// This replica's name in the Lease: the pod name when the chart passes it, else the
/// host name, plus a random suffix so two processes on one host never share it.
fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "portcullis".into());
    format!("{base}-{:08x}", fastrand::u32(..))
}

/// One worker runs on the current thread: no work stealing and no cross-thread wake-ups,
/// which is cheaper per request than a multi-threaded runtime with one worker.
fn runtime(workers: Option<usize>) -> tokio::runtime::Runtime {
    let mut b = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all().build().expect("the tokio runtime starts")
}

#[allow(clippy::print_stdout)] // the CRDs are the command's output
fn print_crds() -> ExitCode {
    print!("{}", crate::k8s::api::crds_yaml());
    ExitCode::SUCCESS
}

/// A URL the Redis client accepts; checked at start so a typo fails there, not later.
fn redis_url(text: &str) -> Result<String, String> {
    redis::Client::open(text)
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

/// `namespace/name`; with files a bare folder name is accepted too.
fn secret_ref(text: &str, kube: bool) -> Result<crate::config::ObjectKey, String> {
    let (namespace, name) = match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() => (ns, name),
        None if !kube => ("", text),
        _ => return Err(format!("{text:?} is not namespace/name")),
    };
    if name.is_empty() || name.contains('/') {
        return Err(format!("{text:?} is not namespace/name"));
    }
    Ok(crate::config::ObjectKey {
        namespace: namespace.into(),
        name: name.into(),
    })
}

/// Prints every problem; exit code 1 when there is any.
#[allow(clippy::print_stdout)] // the report is the command's output
fn check(config: &std::path::Path, secrets_dir: Option<&std::path::Path>) -> ExitCode {
    let loaded = file::load(config).and_then(|mut l| {
        if let Some(dir) = secrets_dir {
            file::load_secrets(dir, &mut l)?;
            l.resources.now = Some(std::time::SystemTime::now());
        }
        Ok(l)
    });
    let loaded = match loaded {
        Ok(l) => l,
        Err(errors) => {
            for e in &errors {
                println!("error: {e}");
            }
            println!("{} error(s)", errors.len());
            return ExitCode::FAILURE;
        }
    };
    if loaded.origins.is_empty() {
        println!(
            "error: no Route, Policy or BFF found under {}",
            config.display()
        );
        return ExitCode::FAILURE;
    }
    let mut snapshot = compile::compile(&loaded.resources, None);
    if secrets_dir.is_none() {
        let before = snapshot.problems.len();
        snapshot
            .problems
            .retain(|p| p.reason != compile::Reason::InvalidCertificateRef);
        if snapshot.problems.len() != before {
            println!("note: certificates not checked; pass --secrets-dir to check them");
        }
    }
    for p in &snapshot.problems {
        let origin = loaded
            .origins
            .get(&(p.kind, p.object.clone()))
            .map(|o| format!("{o}: "))
            .unwrap_or_default();
        println!("error: {origin}{p}");
    }
    if snapshot.problems.is_empty() {
        println!(
            "ok: {} route(s), {} BFF(s)",
            snapshot.routes.len(),
            snapshot.bffs.len()
        );
        ExitCode::SUCCESS
    } else {
        println!("{} problem(s)", snapshot.problems.len());
        ExitCode::FAILURE
    }
}

async fn serve(opts: gateway::Options) -> ExitCode {
    match gateway::Gateway::start(opts).await {
        Ok(gw) => {
            stop_signal().await;
            tracing::info!("shutting down");
            gw.shutdown().await;
            ExitCode::SUCCESS
        }
        Err(e) => report_start_error(e),
    }
}

#[allow(clippy::print_stdout)] // the instructions are the command's output
async fn run_demo(opts: gateway::Options) -> ExitCode {
    match demo::start(opts).await {
        Ok((gw, _dir)) => {
            println!("{}", demo::instructions(gw.listen_addr, gw.admin_addr));
            stop_signal().await;
            gw.shutdown().await;
            ExitCode::SUCCESS
        }
        Err(e) => report_start_error(e),
    }
}

fn report_start_error(e: anyhow::Error) -> ExitCode {
    if let Some(invalid) = e.downcast_ref::<gateway::InvalidConfig>() {
        for error in &invalid.0 {
            eprintln!("error: {error}");
        }
    }
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
