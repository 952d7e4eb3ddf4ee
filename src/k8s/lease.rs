//! Leader election on a coordination.k8s.io Lease: only the holder writes status; every
//! replica serves.

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    api::{ObjectMeta, PostParams},
    Api, Client,
};
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

/// How long a holder keeps the lease without renewing. Client-go's default; another
/// replica takes over at most this long after the holder dies.
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and others check: a few renewals fit in one duration.
const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Keeps trying to hold the Lease `namespace/name` as `identity`, and keeps `is_leader`
/// true exactly while this replica holds it. Runs until the task is dropped.
pub async fn run(
    client: Client,
    namespace: String,
    name: String,
    identity: String,
    is_leader: Arc<AtomicBool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut last_renewal: Option<tokio::time::Instant> = None;
    loop {
        match try_hold(&api, &name, &identity).await {
            Ok(true) => {
                last_renewal = Some(tokio::time::Instant::now());
                if !is_leader.swap(true, Ordering::AcqRel) {
                    tracing::info!(lease = %name, %identity, "acquired leadership; writing status");
                }
            }
            Ok(false) => step_down(&is_leader, &name),
            Err(error) => {
                tracing::warn!(lease = %name, %error, "lease update failed");
                // Without a renewal for a whole duration another replica may hold it now.
                if last_renewal.is_none_or(|t| t.elapsed() >= LEASE_DURATION) {
                    step_down(&is_leader, &name);
                }
            }
        }
        tokio::time::sleep(RETRY_PERIOD).await;
    }
}

fn step_down(is_leader: &AtomicBool, name: &str) {
    if is_leader.swap(false, Ordering::AcqRel) {
        tracing::info!(lease = %name, "lost leadership; no longer writing status");
    }
}

/// Creates, renews or takes over the Lease. `Ok(true)` when this replica holds it now.
/// Writes carry the resourceVersion read, so two replicas can never both succeed.
async fn try_hold(api: &Api<Lease>, name: &str, identity: &str) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.into()),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let mine = spec.holder_identity.as_deref() == Some(identity);
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    let expired = spec
        .renew_time
        .as_ref()
        .is_none_or(|t| t.0 + duration < now);
    if !mine && !expired && spec.holder_identity.is_some() {
        return Ok(false);
    }
    if !mine {
        spec.holder_identity = Some(identity.into());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
    spec.renew_time = Some(MicroTime(now));
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
