//! Watch tasks: one per kind and namespace, each with backoff, feeding one index task
//! that compiles and publishes snapshots.

use super::{
    api::{Policy, Route, BFF},
    index::{reduce_secret, BffEntry, Changed, Index, PolicyEntry, RouteEntry, SecretEntry},
};
use crate::{
    compile::{self, Snapshot},
    config::{ObjectKey, Resources},
    metrics::Metrics,
    policy::ratelimit::SharedStore,
    proxy::SharedSnapshot,
};
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::{
    core::v1::{Secret, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};
use serde::de::DeserializeOwned;
use std::{
    collections::{BTreeSet, HashMap},
    fmt::Debug,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::sync::{mpsc, watch};

/// Time to gather a burst of watch events into one compile. Short enough that a change
/// is served well within a second; long enough that a rollout touching many slices
/// compiles a few times, not once per slice.
const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// What the status writer needs: the snapshot and the objects it was compiled from.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub snapshot: Arc<Snapshot>,
    pub routes: Vec<RouteEntry>,
    pub policies: Vec<PolicyEntry>,
    pub bffs: Vec<BffEntry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Route,
    Policy,
    Bff,
    Service,
    EndpointSlice,
    Secret,
}

/// One watch event, tagged with where it came from. Boxed: objects differ in size a lot.
enum Update {
    Route(Option<String>, Box<watcher::Event<Route>>),
    Policy(Option<String>, Box<watcher::Event<Policy>>),
    Bff(Option<String>, Box<watcher::Event<BFF>>),
    Service(Option<String>, Box<watcher::Event<Service>>),
    Slice(Option<String>, Box<watcher::Event<EndpointSlice>>),
    Secret(Option<String>, Box<watcher::Event<SecretEntry>>),
}

/// Secrets that never hold TLS material and can be large or many; the API server
/// leaves them out of the watch.
const SECRET_FIELD_SELECTOR: &str =
    "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

/// Watches everything the gateway routes on, in `namespaces` (all when empty), and keeps
/// `snapshot` current. Sets `ready` once every watch has listed its objects and the first
/// snapshot is in place. Runs until the task is dropped.
#[allow(clippy::too_many_arguments)] // start-up wiring: each is a handle the task keeps
pub async fn run(
    client: Client,
    namespaces: Vec<String>,
    snapshot: SharedSnapshot,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    compiled_tx: watch::Sender<Option<Compiled>>,
    default_certificate: Option<ObjectKey>,
    rate_limit_store: Option<Arc<SharedStore>>,
    cluster_domain: String,
) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let (tx, mut rx) = mpsc::channel(1024);
    let mut tasks = Vec::new();
    for scope in &scopes {
        tasks.push(spawn_watch::<Route>(
            &client,
            scope.clone(),
            tx.clone(),
            |s, e| Update::Route(s, Box::new(e)),
        ));
        tasks.push(spawn_watch::<Policy>(
            &client,
            scope.clone(),
            tx.clone(),
            |s, e| Update::Policy(s, Box::new(e)),
        ));
        tasks.push(spawn_watch::<BFF>(
            &client,
            scope.clone(),
            tx.clone(),
            |s, e| Update::Bff(s, Box::new(e)),
        ));
        tasks.push(spawn_watch::<Service>(
            &client,
            scope.clone(),
            tx.clone(),
            |s, e| Update::Service(s, Box::new(e)),
        ));
        tasks.push(spawn_watch::<EndpointSlice>(
            &client,
            scope.clone(),
            tx.clone(),
            |s, e| Update::Slice(s, Box::new(e)),
        ));
        tasks.push(spawn_secret_watch(&client, scope.clone(), tx.clone()));
    }
    drop(tx);

    let mut state = State {
        index: Index::default(),
        buffers: Buffers::default(),
        synced: BTreeSet::new(),
    };
    let needed = scopes.len() * 6;
    let mut dirty = false;
    while let Some(update) = rx.recv().await {
        dirty |= state.handle(update) == Changed::Yes;
        // Gather the rest of a burst before compiling.
        let deadline = tokio::time::sleep(BATCH_WINDOW);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                more = rx.recv() => match more {
                    Some(u) => dirty |= state.handle(u) == Changed::Yes,
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        let synced = state.synced.len() == needed;
        if synced && (dirty || !ready.load(Ordering::Acquire)) {
            publish(
                &state.index,
                default_certificate.as_ref(),
                rate_limit_store.as_ref(),
                &cluster_domain,
                &snapshot,
                &metrics,
                &compiled_tx,
            );
            dirty = false;
            if !ready.swap(true, Ordering::AcqRel) {
                tracing::info!("caches synced; serving the cluster's routes");
            }
        }
    }
    for t in tasks {
        t.abort();
    }
}

fn publish(
    index: &Index,
    default_certificate: Option<&ObjectKey>,
    rate_limit_store: Option<&Arc<SharedStore>>,
    cluster_domain: &str,
    snapshot: &SharedSnapshot,
    metrics: &Metrics,
    compiled_tx: &watch::Sender<Option<Compiled>>,
) {
    let previous = snapshot.load_full();
    let resources = Resources {
        default_certificate: default_certificate.cloned(),
        now: Some(std::time::SystemTime::now()),
        rate_limit_store: rate_limit_store.cloned(),
        cluster_domain: Some(cluster_domain.to_string()),
        ..index.resources()
    };
    let next = Arc::new(compile::compile(&resources, Some(&previous)));
    metrics.observe_tls(&next.tls);
    if let Some(why) = &next.tls.default_problem {
        if previous.tls.default_problem.as_ref() != Some(why) {
            tracing::error!("the default certificate is not served: {why}");
        }
    }
    for p in next.problems.iter() {
        tracing::debug!(object = %p.object, field = %p.field, reason = ?p.reason, "{}", p.message);
    }
    let rejected: BTreeSet<_> = next.rejections().map(|p| (p.kind, &p.object)).collect();
    metrics.observe_rejections(&next);
    metrics
        .config_reloads
        .with_label_values(&["accepted"])
        .inc();
    // Endpoints churn all day; only a change in what is served or refused is news.
    let prev_rejected: BTreeSet<_> = previous.rejections().map(|p| (p.kind, &p.object)).collect();
    let counts = |s: &Snapshot| (s.routes.len(), s.bffs.len());
    if counts(&next) != counts(&previous) || rejected != prev_rejected {
        tracing::info!(
            routes = next.routes.len(),
            bffs = next.bffs.len(),
            rejected = rejected.len(),
            "configuration accepted"
        );
    } else {
        tracing::debug!(routes = next.routes.len(), "configuration updated");
    }
    snapshot.store(next.clone());
    let routes = index.routes().cloned().collect();
    let policies = index.policies().cloned().collect();
    let bffs = index.bffs().cloned().collect();
    let _ = compiled_tx.send(Some(Compiled {
        snapshot: next,
        routes,
        policies,
        bffs,
    }));
}

fn spawn_watch<K>(
    client: &Client,
    scope: Option<String>,
    tx: mpsc::Sender<Update>,
    wrap: fn(Option<String>, watcher::Event<K>) -> Update,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = match &scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let kind = K::kind(&());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    tokio::spawn(forward(stream, scope, tx, wrap, kind.into_owned()))
}

/// Secrets are reduced to their TLS keys before they are queued.
fn spawn_secret_watch(
    client: &Client,
    scope: Option<String>,
    tx: mpsc::Sender<Update>,
) -> tokio::task::JoinHandle<()> {
    let api: Api<Secret> = match &scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let config = watcher::Config::default().fields(SECRET_FIELD_SELECTOR);
    let stream = watcher(api, config).default_backoff().map(|item| {
        item.map(|event| match event {
            watcher::Event::Apply(s) => watcher::Event::Apply(reduce_secret(&s)),
            watcher::Event::Delete(s) => watcher::Event::Delete(reduce_secret(&s)),
            watcher::Event::InitApply(s) => watcher::Event::InitApply(reduce_secret(&s)),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitDone => watcher::Event::InitDone,
        })
    });
    tokio::spawn(forward(
        stream,
        scope,
        tx,
        |s, e| Update::Secret(s, Box::new(e)),
        "Secret".into(),
    ))
}

async fn forward<K>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    scope: Option<String>,
    tx: mpsc::Sender<Update>,
    wrap: fn(Option<String>, watcher::Event<K>) -> Update,
    kind: String,
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                if tx.send(wrap(scope.clone(), event)).await.is_err() {
                    return;
                }
            }
            // The backoff wrapper retries; the last snapshot keeps serving meanwhile.
            Err(error) => {
                tracing::warn!(%kind, namespace = ?scope, %error, "watch failed; retrying")
            }
        }
    }
}

/// Objects listed since a watch (re)started, applied together when the list is done.
#[derive(Default)]
struct Buffers {
    routes: HashMap<Option<String>, Vec<Route>>,
    policies: HashMap<Option<String>, Vec<Policy>>,
    bffs: HashMap<Option<String>, Vec<BFF>>,
    services: HashMap<Option<String>, Vec<Service>>,
    slices: HashMap<Option<String>, Vec<EndpointSlice>>,
    secrets: HashMap<Option<String>, Vec<SecretEntry>>,
}

struct State {
    index: Index,
    buffers: Buffers,
    synced: BTreeSet<(Kind, Option<String>)>,
}

impl State {
    fn handle(&mut self, update: Update) -> Changed {
        use watcher::Event::*;
        let idx = &mut self.index;
        match update {
            Update::Route(scope, ev) => match *ev {
                Apply(o) => idx.apply_route(&o),
                Delete(o) => idx.delete_route(&o),
                Init => buffer(&mut self.buffers.routes, scope, None),
                InitApply(o) => buffer(&mut self.buffers.routes, scope, Some(o)),
                InitDone => {
                    let objs = self.buffers.routes.remove(&scope).unwrap_or_default();
                    self.synced.insert((Kind::Route, scope.clone()));
                    idx.reset_routes(scope.as_deref(), &objs)
                }
            },
            Update::Policy(scope, ev) => match *ev {
                Apply(o) => idx.apply_policy(&o),
                Delete(o) => idx.delete_policy(&o),
                Init => buffer(&mut self.buffers.policies, scope, None),
                InitApply(o) => buffer(&mut self.buffers.policies, scope, Some(o)),
                InitDone => {
                    let objs = self.buffers.policies.remove(&scope).unwrap_or_default();
                    self.synced.insert((Kind::Policy, scope.clone()));
                    idx.reset_policies(scope.as_deref(), &objs)
                }
            },
            Update::Bff(scope, ev) => match *ev {
                Apply(o) => idx.apply_bff(&o),
                Delete(o) => idx.delete_bff(&o),
                Init => buffer(&mut self.buffers.bffs, scope, None),
                InitApply(o) => buffer(&mut self.buffers.bffs, scope, Some(o)),
                InitDone => {
                    let objs = self.buffers.bffs.remove(&scope).unwrap_or_default();
                    self.synced.insert((Kind::Bff, scope.clone()));
                    idx.reset_bffs(scope.as_deref(), &objs)
                }
            },
            Update::Service(scope, ev) => match *ev {
                Apply(o) => idx.apply_service(&o),
                Delete(o) => idx.delete_service(&o),
                Init => buffer(&mut self.buffers.services, scope, None),
                InitApply(o) => buffer(&mut self.buffers.services, scope, Some(o)),
                InitDone => {
                    let objs = self.buffers.services.remove(&scope).unwrap_or_default();
                    self.synced.insert((Kind::Service, scope.clone()));
                    idx.reset_services(scope.as_deref(), &objs)
                }
            },
            Update::Slice(scope, ev) => match *ev {
                Apply(o) => idx.apply_slice(&o),
                Delete(o) => idx.delete_slice(&o),
                Init => buffer(&mut self.buffers.slices, scope, None),
                InitApply(o) => buffer(&mut self.buffers.slices, scope, Some(o)),
                InitDone => {
                    let objs = self.buffers.slices.remove(&scope).unwrap_or_default();
                    self.synced.insert((Kind::EndpointSlice, scope.clone()));
                    idx.reset_slices(scope.as_deref(), &objs)
                }
            },
            Update::Secret(scope, ev) => match *ev {
                Apply(o) => idx.apply_secret(&o),
                Delete(o) => idx.delete_secret(&o),
                Init => buffer(&mut self.buffers.secrets, scope, None),
                InitApply(o) => buffer(&mut self.buffers.secrets, scope, Some(o)),
                InitDone => {
                    let objs = self.buffers.secrets.remove(&scope).unwrap_or_default();
                    self.synced.insert((Kind::Secret, scope.clone()));
                    idx.reset_secrets(scope.as_deref(), &objs)
                }
            },
        }
    }
}

/// `None` starts a fresh buffer (a watch restart); `Some` adds to it.
fn buffer<K>(
    buffers: &mut HashMap<Option<String>, Vec<K>>,
    scope: Option<String>,
    obj: Option<K>,
) -> Changed {
    let list = buffers.entry(scope).or_default();
    match obj {
        None => list.clear(),
        Some(o) => list.push(o),
    }
    Changed::No
}
