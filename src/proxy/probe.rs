//! Active health checks: each endpoint a rule asks to probe gets a GET on its check
//! path every interval, whatever snapshot is current. Probe state lives with the
//! endpoint, so a configuration change neither repeats nor skips a probe.

use super::{body::empty, Proxy};
use crate::upstream::{self, health::Change, Probe};
use http::{header, uri, HeaderValue, Request, Uri};
use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

/// How often the list of endpoints is walked for probes that are due.
const TICK: Duration = Duration::from_millis(100);

/// Runs until aborted.
pub async fn run_probes(proxy: Arc<Proxy>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut serving: Option<Arc<crate::compile::Snapshot>> = None;
    loop {
        tick.tick().await;
        let snapshot = proxy.snapshot.load_full();
        if !serving.as_ref().is_some_and(|s| Arc::ptr_eq(s, &snapshot)) {
            snapshot.upstreams.forget_unprobed();
            serving = Some(snapshot.clone());
        }
        let now = upstream::now_ms();
        for probe in &snapshot.upstreams.probes {
            let next = &probe.endpoint.health.next_probe;
            let due = next.load(Ordering::Relaxed);
            let interval = probe.check.interval.as_millis() as u64;
            // One probe per endpoint per interval, even when a slow probe is still out.
            if due > now
                || next
                    .compare_exchange(due, now + interval, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            tokio::spawn(probe_once(proxy.clone(), probe.clone()));
        }
    }
}

async fn probe_once(proxy: Arc<Proxy>, probe: Probe) {
    let check = &probe.check;
    let ok = match request(&probe) {
        Some(req) => matches!(
            tokio::time::timeout(check.timeout, proxy.transports.send(&probe.transport, req)).await,
            Ok(Ok(resp)) if resp.status().is_success()
        ),
        None => false,
    };
    // A probe still out when its rule went away must not give a verdict that no later
    // probe could revise.
    let still_probed = proxy
        .snapshot
        .load()
        .upstreams
        .probes
        .iter()
        .any(|p| Arc::ptr_eq(&p.endpoint, &probe.endpoint));
    if !still_probed {
        return;
    }
    let Some(change) = probe.endpoint.health.record_probe(ok, check) else {
        return;
    };
    let endpoint = &probe.endpoint.authority;
    match change {
        Change::Down => {
            tracing::warn!(backend = %probe.backend, %endpoint, path = %check.path, "endpoint failed its health check");
            proxy
                .metrics
                .upstream_ejections
                .with_label_values(&[&probe.backend, "active"])
                .inc();
        }
        Change::Up => {
            tracing::info!(backend = %probe.backend, %endpoint, "endpoint passed its health check again");
        }
        Change::Ejected(_) => {}
    }
}

fn request(probe: &Probe) -> Option<Request<super::ProxyBody>> {
    let uri = Uri::builder()
        .scheme(uri::Scheme::HTTP)
        .authority(probe.endpoint.authority.clone())
        .path_and_query(probe.check.path.clone())
        .build()
        .ok()?;
    let mut req = Request::new(empty());
    *req.uri_mut() = uri;
    req.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static("portcullis-health-check"),
    );
    Some(req)
}
