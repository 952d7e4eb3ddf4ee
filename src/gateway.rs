//! Wiring for `serve`: a source (files or the cluster), the compile step, the proxy and
//! the admin listener, started together and stopped together.

use crate::{
    admin::{self, AdminState},
    compile::{self, Snapshot},
    config::ObjectKey,
    k8s,
    metrics::Metrics,
    policy::ratelimit::SharedStore,
    proxy::{self, Limits, Proxy, SharedSnapshot, Shutdown},
    source::file,
};
use anyhow::Context;
use arc_swap::ArcSwap;
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

/// Time to gather a burst of file events (an editor saving, a ConfigMap swapping its
/// symlink) into one reload.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Clone, Debug)]
pub struct Options {
    pub source: Source,
    pub listen: SocketAddr,
    /// The HTTPS listener; none when `None`.
    pub listen_tls: Option<SocketAddr>,
    pub admin: SocketAddr,
    /// File mode: the folder of Secret folders (`NAME/tls.crt`, `NAME/tls.key`,
    /// `NAME/ca.crt`) that Routes name in `tls`.
    pub secrets_dir: Option<PathBuf>,
    /// The certificate for handshakes that name no host or one no Route covers:
    /// `namespace/name` of a Secret, or in file mode a folder of `secrets_dir`.
    pub default_certificate: Option<ObjectKey>,
    pub limits: Limits,
    pub drain: Duration,
    pub access_log: bool,
    /// Proxies in front of the gateway whose `X-Forwarded-For` entries are believed
    /// when Policies judge the client's address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where Policies with `rateLimit.shared` count; without it they count per replica.
    pub redis_url: Option<String>,
    /// How many gateways share those limits: while Redis is unreachable, each counts
    /// its share of them.
    pub replicas: u32,
    /// The suffix of Service DNS names, for mesh mode and backend TLS names.
    pub cluster_domain: String,
}

/// Where the resources come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A YAML file or folder, watched for changes.
    Files(PathBuf),
    /// The cluster of the in-cluster configuration or KUBECONFIG.
    Kube(KubeOptions),
}

#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// Namespaces to watch; all when empty.
    pub namespaces: Vec<String>,
    /// Where the Lease that elects the status writer lives.
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica's name in the Lease.
    pub identity: String,
}

/// A running gateway.
pub struct Gateway {
    pub listen_addr: SocketAddr,
    pub listen_tls_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub snapshot: SharedSnapshot,
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    proxy_tasks: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

/// Why the first configuration could not be served.
#[derive(Debug, thiserror::Error)]
#[error("the configuration has {} error(s)", .0.len())]
pub struct InvalidConfig(pub Vec<file::LoadError>);

impl Gateway {
    /// Starts serving. With files, the configuration is loaded first and start fails
    /// when it does not load at all; objects it rejects are logged and skipped. With the
    /// cluster, the listeners start at once and `/readyz` turns true once every watch has
    /// synced and the first snapshot is built.
    pub async fn start(opts: Options) -> anyhow::Result<Gateway> {
        let metrics = Arc::new(Metrics::new());
        let snapshot: SharedSnapshot = Arc::new(ArcSwap::from_pointee(Snapshot::empty()));
        let ready = Arc::new(AtomicBool::new(false));
        let mut background = Vec::new();
        let rate_limit_store = match &opts.redis_url {
            Some(url) => Some(SharedStore::connect(url, opts.replicas, metrics.clone()).await),
            None => None,
        };

        match &opts.source {
            Source::Files(path) => {
                let inputs = FileInputs {
                    path: path.clone(),
                    secrets_dir: opts.secrets_dir.clone(),
                    default_certificate: opts.default_certificate.clone(),
                    rate_limit_store,
                    cluster_domain: opts.cluster_domain.clone(),
                };
                let loaded = inputs.load().map_err(InvalidConfig)?;
                install(&snapshot, &metrics, &loaded);
                ready.store(true, std::sync::atomic::Ordering::Release);
                background.push(tokio::spawn(watch_files(
                    inputs,
                    snapshot.clone(),
                    metrics.clone(),
                    loaded.digest,
                )));
            }
            Source::Kube(kube_opts) => {
                let client = kube::Client::try_default().await.context(
                    "connecting to the cluster (in-cluster configuration or KUBECONFIG)",
                )?;
                background.extend(start_kube(
                    client,
                    kube_opts,
                    opts.default_certificate.clone(),
                    rate_limit_store,
                    opts.cluster_domain.clone(),
                    &snapshot,
                    &metrics,
                    &ready,
                ));
            }
        }

        let listener = TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("binding the traffic listener on {}", opts.listen))?;
        let admin_listener = TcpListener::bind(opts.admin)
            .await
            .with_context(|| format!("binding the admin listener on {}", opts.admin))?;
        let tls_listener = match opts.listen_tls {
            None => None,
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the TLS listener on {addr}"))?,
            ),
        };
        let listen_addr = listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let listen_tls_addr = tls_listener.as_ref().map(|l| l.local_addr()).transpose()?;

        let (shutdown, shutdown_rx) = Shutdown::new();
        let proxy = Proxy::new(
            snapshot.clone(),
            metrics.clone(),
            opts.limits.clone(),
            opts.access_log,
            opts.trusted_proxies.clone(),
        );
        background.push(tokio::spawn(proxy::run_probes(proxy.clone())));
        let mut proxy_tasks = Vec::new();
        if let Some(tls_listener) = tls_listener {
            proxy_tasks.push(tokio::spawn(proxy::serve_tls(
                tls_listener,
                proxy.clone(),
                shutdown_rx.clone(),
                opts.drain,
            )));
        }
        proxy_tasks.push(tokio::spawn(proxy::serve(
            listener,
            proxy,
            shutdown_rx,
            opts.drain,
        )));
        let admin_state = AdminState {
            snapshot: snapshot.clone(),
            metrics: metrics.clone(),
            ready,
        };
        background.push(tokio::spawn(admin::serve(admin_listener, admin_state)));

        tracing::info!(%listen_addr, ?listen_tls_addr, %admin_addr, source = ?opts.source, "serving");
        Ok(Gateway {
            listen_addr,
            listen_tls_addr,
            admin_addr,
            snapshot,
            metrics,
            shutdown,
            proxy_tasks,
            background,
        })
    }

    /// Stops accepting, lets requests in flight finish within the drain period, then
    /// stops everything else.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.proxy_tasks {
            let _ = task.await;
        }
        for task in self.background {
            task.abort();
        }
    }
}

/// Starts the watchers, the lease and the status writer.
#[allow(clippy::too_many_arguments)] // start-up wiring: each is a handle the tasks keep
fn start_kube(
    client: kube::Client,
    opts: &KubeOptions,
    default_certificate: Option<ObjectKey>,
    rate_limit_store: Option<Arc<SharedStore>>,
    cluster_domain: String,
    snapshot: &SharedSnapshot,
    metrics: &Arc<Metrics>,
    ready: &Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    let (compiled_tx, compiled_rx) = watch::channel(None);
    let is_leader = Arc::new(AtomicBool::new(false));
    vec![
        tokio::spawn(k8s::watch::run(
            client.clone(),
            opts.namespaces.clone(),
            snapshot.clone(),
            metrics.clone(),
            ready.clone(),
            compiled_tx,
            default_certificate,
            rate_limit_store,
            cluster_domain,
        )),
        tokio::spawn(k8s::lease::run(
            client.clone(),
            opts.lease_namespace.clone(),
            opts.lease_name.clone(),
            opts.identity.clone(),
            is_leader.clone(),
        )),
        tokio::spawn(k8s::status::run_writer(
            client,
            compiled_rx,
            is_leader,
            metrics.clone(),
            opts.identity.clone(),
        )),
    ]
}

/// Compiles what was loaded against the current snapshot and swaps it in.
fn install(snapshot: &SharedSnapshot, metrics: &Metrics, loaded: &file::Loaded) {
    let previous = snapshot.load();
    let next = compile::compile(&loaded.resources, Some(&previous));
    metrics.observe_tls(&next.tls);
    if let Some(why) = &next.tls.default_problem {
        tracing::error!("the default certificate is not served: {why}");
    }
    for problem in &next.problems {
        let origin = loaded
            .origins
            .get(&(problem.kind, problem.object.clone()))
            .map(ToString::to_string)
            .unwrap_or_default();
        let serving_previous = problem.rejects() && next.serves(problem.kind, &problem.object);
        tracing::warn!(
            %origin,
            kind = problem.kind,
            object = %problem.object,
            field = %problem.field,
            reason = ?problem.reason,
            serving_previous,
            "{}", problem.message
        );
    }
    metrics.observe_rejections(&next);
    // Objects, not problems: one bad object may have several.
    let rejected: std::collections::BTreeSet<_> =
        next.rejections().map(|p| (p.kind, &p.object)).collect();
    tracing::info!(
        routes = next.routes.len(),
        bffs = next.bffs.len(),
        policies = next.policies.policies.len(),
        rejected = rejected.len(),
        "configuration accepted"
    );
    snapshot.store(Arc::new(next));
}

/// What file mode reads: the configuration, and the Secret folders its Routes name.
struct FileInputs {
    path: PathBuf,
    secrets_dir: Option<PathBuf>,
    default_certificate: Option<ObjectKey>,
    rate_limit_store: Option<Arc<SharedStore>>,
    cluster_domain: String,
}

impl FileInputs {
    fn load(&self) -> Result<file::Loaded, Vec<file::LoadError>> {
        let mut loaded = file::load(&self.path)?;
        if let Some(dir) = &self.secrets_dir {
            file::load_secrets(dir, &mut loaded)?;
        }
        loaded
            .resources
            .default_certificate
            .clone_from(&self.default_certificate);
        loaded.resources.now = Some(std::time::SystemTime::now());
        loaded
            .resources
            .rate_limit_store
            .clone_from(&self.rate_limit_store);
        loaded.resources.cluster_domain = Some(self.cluster_domain.clone());
        Ok(loaded)
    }
}

/// Reloads on every change under the configuration or the secrets folder; a load that
/// fails keeps the current snapshot. `digest` is that of the files already being served.
async fn watch_files(
    inputs: FileInputs,
    snapshot: SharedSnapshot,
    metrics: Arc<Metrics>,
    digest: u64,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let mut watchers = Vec::new();
    match file::watch(&inputs.path, tx.clone()) {
        Ok(w) => watchers.push(w),
        Err(error) => {
            tracing::error!(%error, path = %inputs.path.display(), "cannot watch the configuration; changes will not be picked up");
            return;
        }
    }
    if let Some(dir) = &inputs.secrets_dir {
        match file::watch_all(dir, tx) {
            Ok(w) => watchers.push(w),
            Err(error) => {
                tracing::error!(%error, path = %dir.display(), "cannot watch the secrets folder; renewed certificates will not be picked up");
            }
        }
    }
    let mut last_digest = Some(digest);
    while rx.recv().await.is_some() {
        tokio::time::sleep(RELOAD_DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        reload(&inputs, &snapshot, &metrics, &mut last_digest);
    }
}

fn reload(
    inputs: &FileInputs,
    snapshot: &SharedSnapshot,
    metrics: &Metrics,
    last_digest: &mut Option<u64>,
) {
    match inputs.load() {
        Ok(loaded) if Some(loaded.digest) == *last_digest => {
            // After a refused edit is undone, say that all is well again.
            tracing::info!("configuration valid and unchanged from what is serving");
        }
        Ok(loaded) => {
            *last_digest = Some(loaded.digest);
            install(snapshot, metrics, &loaded);
            metrics
                .config_reloads
                .with_label_values(&["accepted"])
                .inc();
        }
        Err(errors) => {
            for error in &errors {
                tracing::error!("{error}");
            }
            tracing::error!(
                errors = errors.len(),
                "configuration refused; the previous one keeps serving"
            );
            metrics.config_reloads.with_label_values(&["refused"]).inc();
        }
    }
}
