//! Route, Policy and BFF status: the conditions each object should carry, and the writer that patches them
//! when this replica holds the lease.
//!
//! Conditions are computed from the snapshot alone and keep their transition time while
//! their status stays the same, so writing them never changes what the next computation
//! gives: status writes cannot re-trigger themselves.

use super::{
    api::{ObjectStatus, Policy, Route, BFF},
    index::{BffEntry, Entry, PolicyEntry, RouteEntry},
    watch::Compiled,
};
use crate::{
    compile::{Problem, Reason, Snapshot},
    config::{Meta, ObjectKey, API_VERSION},
    metrics::Metrics,
};
use futures_util::StreamExt;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
    Api, Client,
};
use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::sync::watch;

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "portcullis";

/// How long one status write may take before it counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Status writes in flight at once.
const WRITE_CONCURRENCY: usize = 8;

/// How often a leader rechecks status even without a new snapshot, so that a replica
/// that just became leader catches up and a failed write is retried.
const RESYNC: Duration = Duration::from_secs(10);

/// The three conditions of one Route, computed from a snapshot.
pub fn desired_conditions(
    entry: &RouteEntry,
    snapshot: &Snapshot,
    now: Timestamp,
) -> Vec<Condition> {
    desired(
        "Route",
        &entry.resource.meta,
        entry.status.as_ref(),
        snapshot,
        now,
    )
}

/// The three conditions of one Policy, computed from a snapshot.
pub fn desired_policy_conditions(
    entry: &PolicyEntry,
    snapshot: &Snapshot,
    now: Timestamp,
) -> Vec<Condition> {
    desired(
        "Policy",
        &entry.resource.meta,
        entry.status.as_ref(),
        snapshot,
        now,
    )
}

/// The three conditions of one BFF, computed from a snapshot.
pub fn desired_bff_conditions(
    entry: &BffEntry,
    snapshot: &Snapshot,
    now: Timestamp,
) -> Vec<Condition> {
    desired(
        "BFF",
        &entry.resource.meta,
        entry.status.as_ref(),
        snapshot,
        now,
    )
}

fn desired(
    kind: &str,
    meta: &Meta,
    status: Option<&ObjectStatus>,
    snapshot: &Snapshot,
    now: Timestamp,
) -> Vec<Condition> {
    let key = meta.key();
    let generation = meta.generation;
    let problems: Vec<&Problem> = snapshot
        .problems
        .iter()
        .filter(|p| p.kind == kind && p.object == key)
        .collect();

    let refusing: Vec<&&Problem> = problems
        .iter()
        .filter(|p| matches!(p.reason, Reason::Invalid | Reason::Conflicted))
        .collect();
    let accepted = match refusing.first() {
        None => ("True", "Accepted", format!("the {kind} is valid")),
        Some(p) => {
            let reason = if p.reason == Reason::Conflicted {
                "Conflicted"
            } else {
                "Invalid"
            };
            ("False", reason, summarize(&refusing))
        }
    };
    let missing: Vec<&&Problem> = problems
        .iter()
        .filter(|p| {
            matches!(
                p.reason,
                Reason::BackendNotFound | Reason::InvalidCertificateRef | Reason::TargetNotFound
            )
        })
        .collect();
    let resolved = match missing.first() {
        None => (
            "True",
            "ResolvedRefs",
            "every reference resolves".to_string(),
        ),
        Some(p) => {
            let reason = match p.reason {
                Reason::InvalidCertificateRef => "InvalidCertificateRef",
                Reason::TargetNotFound => "TargetNotFound",
                _ => "BackendNotFound",
            };
            ("False", reason, summarize(&missing))
        }
    };
    let served = match kind {
        "Route" => snapshot.routes.get(&key).map(|r| r.meta.generation),
        "BFF" => snapshot.bffs.get(&key).map(|b| b.meta.generation),
        _ => snapshot
            .policies
            .policies
            .get(&key)
            .map(|p| p.meta.generation),
    };
    let programmed = match served {
        Some(g) if g == generation => ("True", "Programmed", "served by the gateway".to_string()),
        Some(g) => (
            "True",
            "ServingPreviousGeneration",
            format!(
                "generation {} is not served; generation {} keeps serving",
                generation.unwrap_or(0),
                g.unwrap_or(0)
            ),
        ),
        None => (
            "False",
            "NotProgrammed",
            "not served; see the Accepted condition".to_string(),
        ),
    };

    let current = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
    [
        ("Accepted", accepted),
        ("ResolvedRefs", resolved),
        ("Programmed", programmed),
    ]
    .into_iter()
    .map(|(type_, (status, reason, message))| {
        // Keep the transition time while the status is unchanged.
        let since = current
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: since,
        }
    })
    .collect()
}

/// One problem's text, with a count of the others.
fn summarize(problems: &[&&Problem]) -> String {
    let first = problems[0];
    let mut text = format!("{}: {}", first.field, first.message);
    if problems.len() > 1 {
        text.push_str(&format!(" (and {} more)", problems.len() - 1));
    }
    text
}

/// One object's identity, for writes and events.
#[derive(Clone)]
struct Target {
    kind: &'static str,
    key: ObjectKey,
    uid: Option<String>,
    generation: Option<i64>,
}

/// Writes Route, Policy and BFF status whenever a new snapshot arrives (or every [`RESYNC`]) while
/// `is_leader` is true. Runs until the task is dropped.
pub async fn run_writer(
    client: Client,
    mut compiled: watch::Receiver<Option<Compiled>>,
    is_leader: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    identity: String,
) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "portcullis".into(),
            instance: Some(identity),
        },
    );
    // What this replica last wrote, so a write is not repeated while the watch has not
    // yet delivered it back.
    let mut written: HashMap<(&'static str, ObjectKey), Vec<Condition>> = HashMap::new();
    let mut announced: HashSet<(String, Option<i64>, String)> = HashSet::new();
    loop {
        tokio::select! {
            changed = compiled.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RESYNC) => {}
        }
        if !is_leader.load(Ordering::Acquire) {
            written.clear();
            continue;
        }
        let Some(c) = compiled.borrow_and_update().clone() else {
            continue;
        };
        let now = Timestamp::now();
        let routes = c.routes.iter().map(|e| {
            (
                target("Route", e),
                e.status.as_ref(),
                desired_conditions(e, &c.snapshot, now),
            )
        });
        let policies = c.policies.iter().map(|e| {
            (
                target("Policy", e),
                e.status.as_ref(),
                desired_policy_conditions(e, &c.snapshot, now),
            )
        });
        let bffs = c.bffs.iter().map(|e| {
            (
                target("BFF", e),
                e.status.as_ref(),
                desired_bff_conditions(e, &c.snapshot, now),
            )
        });
        let mut todo = Vec::new();
        for (target, status, mut desired) in routes.chain(policies).chain(bffs) {
            let id = (target.kind, target.key.clone());
            if let Some(prev) = written.get(&id) {
                carry_times(&mut desired, prev);
            }
            let current = status.map(|s| s.conditions.clone()).unwrap_or_default();
            if same(&desired, &current) || written.get(&id).is_some_and(|w| same(&desired, w)) {
                continue;
            }
            todo.push((target, desired));
        }
        if todo.is_empty() {
            continue;
        }

        // A few writes at a time: thousands of Routes on a first start take seconds,
        // not minutes, without flooding the API server.
        let results: Vec<_> = futures_util::stream::iter(todo)
            .map(|(target, desired)| {
                let client = client.clone();
                async move {
                    let result = write(&client, target.kind, &target.key, &desired).await;
                    (target, desired, result)
                }
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        let mut ok = 0;
        for (target, desired, result) in results {
            let outcome = if result.is_ok() { "ok" } else { "error" };
            metrics.status_writes.with_label_values(&[outcome]).inc();
            let (kind, key) = (target.kind, &target.key);
            match result {
                Ok(()) => {
                    tracing::debug!(kind, object = %key, "status patched");
                    written.insert((kind, key.clone()), desired.clone());
                    ok += 1;
                }
                Err(error) => tracing::warn!(kind, object = %key, %error, "status patch failed"),
            }
            announce(&recorder, &target, &desired, &mut announced).await;
        }
        tracing::info!(objects = ok, "status written");
    }
}

/// Keeps transition times from what was written last, for conditions whose status has
/// not changed since.
fn carry_times(desired: &mut [Condition], prev: &[Condition]) {
    for d in desired.iter_mut() {
        if let Some(p) = prev
            .iter()
            .find(|p| p.type_ == d.type_ && p.status == d.status)
        {
            d.last_transition_time = p.last_transition_time.clone();
        }
    }
}

/// Equal apart from transition times.
fn same(a: &[Condition], b: &[Condition]) -> bool {
    let strip = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    let mut a: Vec<_> = a.iter().map(strip).collect();
    let mut b: Vec<_> = b.iter().map(strip).collect();
    a.sort();
    b.sort();
    a == b
}

fn target<S>(kind: &'static str, entry: &Entry<S>) -> Target {
    Target {
        kind,
        key: entry.resource.meta.key(),
        uid: entry.uid.clone(),
        generation: entry.resource.meta.generation,
    }
}

async fn write(
    client: &Client,
    kind: &'static str,
    key: &ObjectKey,
    conditions: &[Condition],
) -> anyhow::Result<()> {
    let patch = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": kind,
        "status": { "conditions": conditions },
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&patch);
    let written = async {
        match kind {
            "Policy" => {
                let api: Api<Policy> = Api::namespaced(client.clone(), &key.namespace);
                api.patch_status(&key.name, &params, &patch).await.map(drop)
            }
            "BFF" => {
                let api: Api<BFF> = Api::namespaced(client.clone(), &key.namespace);
                api.patch_status(&key.name, &params, &patch).await.map(drop)
            }
            _ => {
                let api: Api<Route> = Api::namespaced(client.clone(), &key.namespace);
                api.patch_status(&key.name, &params, &patch).await.map(drop)
            }
        }
    };
    tokio::time::timeout(WRITE_TIMEOUT, written)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {WRITE_TIMEOUT:?}"))??;
    Ok(())
}

/// Emits one Warning event per rejected generation of an object.
async fn announce(
    recorder: &Recorder,
    target: &Target,
    conditions: &[Condition],
    announced: &mut HashSet<(String, Option<i64>, String)>,
) {
    let Some(accepted) = conditions
        .iter()
        .find(|c| c.type_ == "Accepted" && c.status == "False")
    else {
        return;
    };
    let uid = target.uid.clone().unwrap_or_default();
    if !announced.insert((uid, target.generation, accepted.reason.clone())) {
        return;
    }
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(API_VERSION.into()),
        kind: Some(target.kind.into()),
        name: Some(target.key.name.clone()),
        namespace: Some(target.key.namespace.clone()),
        uid: target.uid.clone(),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: accepted.reason.clone(),
        note: Some(accepted.message.chars().take(1000).collect()),
        action: "Compile".into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &reference).await {
        tracing::warn!(kind = target.kind, object = %target.key, %error, "event not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        compile::compile,
        config::{Meta, Resource, Resources},
    };

    fn mk_entry(name: &str, generation: i64, yaml: &str) -> RouteEntry {
        RouteEntry {
            resource: Resource {
                meta: Meta {
                    name: name.into(),
                    namespace: "ns".into(),
                    creation_timestamp: None,
                    generation: Some(generation),
                },
                spec: serde_norway::from_str(yaml).unwrap(),
            },
            uid: Some(format!("uid-{name}")),
            status: None,
        }
    }

    fn summary(conds: &[Condition]) -> Vec<(String, String, String)> {
        conds
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn conditions_of_good_bad_and_unresolved_routes() {
        let good = mk_entry(
            "good",
            1,
            "{hosts: [a.com], rules: [{backends: [{address: 'a:1'}]}]}",
        );
        let bad = mk_entry(
            "bad",
            1,
            "{hosts: [b.com], rules: [{backends: [{address: 'nope'}]}]}",
        );
        let missing = mk_entry(
            "missing",
            3,
            "{hosts: [c.com], rules: [{backends: [{service: {name: s, port: 80}}]}]}",
        );
        let resources = Resources {
            routes: vec![
                good.resource.clone(),
                bad.resource.clone(),
                missing.resource.clone(),
            ],
            ..Resources::default()
        };
        let snap = compile(&resources, None);
        let now = t("2026-01-01T00:00:00Z");

        let c = desired_conditions(&good, &snap, now);
        assert_eq!(
            summary(&c),
            [
                ("Accepted".into(), "True".into(), "Accepted".into()),
                ("ResolvedRefs".into(), "True".into(), "ResolvedRefs".into()),
                ("Programmed".into(), "True".into(), "Programmed".into())
            ]
        );
        assert!(c.iter().all(|c| c.observed_generation == Some(1)));

        let c = desired_conditions(&bad, &snap, now);
        assert_eq!(c[0].status, "False");
        assert_eq!(c[0].reason, "Invalid");
        assert!(
            c[0].message
                .starts_with("spec.rules[0].backends[0].address:"),
            "{}",
            c[0].message
        );
        assert_eq!(
            (c[2].status.as_str(), c[2].reason.as_str()),
            ("False", "NotProgrammed")
        );

        let c = desired_conditions(&missing, &snap, now);
        assert_eq!(
            (
                c[0].status.as_str(),
                c[1].status.as_str(),
                c[1].reason.as_str()
            ),
            ("True", "False", "BackendNotFound")
        );
        assert!(
            c[1].message.contains("Service ns/s not found"),
            "{}",
            c[1].message
        );
        assert_eq!(c[2].status, "True");
        assert_eq!(c[2].observed_generation, Some(3));
    }

    #[test]
    fn a_missing_certificate_is_an_unresolved_ref_not_a_rejection() {
        let entry = mk_entry(
            "r",
            1,
            "{hosts: [a.com], tls: {certificateRef: {name: a-tls}}, rules: [{backends: [{address: 'a:1'}]}]}",
        );
        let snap = compile(
            &Resources {
                routes: vec![entry.resource.clone()],
                ..Resources::default()
            },
            None,
        );
        let c = desired_conditions(&entry, &snap, t("2026-01-01T00:00:00Z"));
        assert_eq!(
            summary(&c),
            [
                ("Accepted".into(), "True".into(), "Accepted".into()),
                (
                    "ResolvedRefs".into(),
                    "False".into(),
                    "InvalidCertificateRef".into()
                ),
                ("Programmed".into(), "True".into(), "Programmed".into())
            ]
        );
        assert!(
            c[1].message
                .contains("spec.tls.certificateRef: Secret ns/a-tls not found"),
            "{}",
            c[1].message
        );
    }

    #[test]
    fn a_rejected_edit_reports_the_generation_still_served() {
        let v1 = mk_entry("r", 1, "rules: [{backends: [{address: 'a:1'}]}]");
        let v2 = mk_entry("r", 2, "rules: [{backends: []}]");
        let first = compile(
            &Resources {
                routes: vec![v1.resource],
                ..Resources::default()
            },
            None,
        );
        let second = compile(
            &Resources {
                routes: vec![v2.resource.clone()],
                ..Resources::default()
            },
            Some(&first),
        );
        let c = desired_conditions(&v2, &second, t("2026-01-01T00:00:00Z"));
        assert_eq!(c[0].status, "False");
        assert_eq!(c[2].reason, "ServingPreviousGeneration");
        assert!(
            c[2].message.contains("generation 1 keeps serving"),
            "{}",
            c[2].message
        );
    }

    #[test]
    fn transition_times_stay_while_the_status_stays() {
        let mut entry = mk_entry("r", 1, "rules: [{backends: [{address: 'a:1'}]}]");
        let snap = compile(
            &Resources {
                routes: vec![entry.resource.clone()],
                ..Resources::default()
            },
            None,
        );
        let first = desired_conditions(&entry, &snap, t("2026-01-01T00:00:00Z"));
        entry.status = Some(super::super::api::ObjectStatus {
            conditions: first.clone(),
        });
        // Computing again later gives the very same conditions: nothing to write.
        let again = desired_conditions(&entry, &snap, t("2026-06-01T00:00:00Z"));
        assert_eq!(first, again);
        assert!(same(&first, &again));
    }
}
