//! The admin listener: health, readiness, metrics and the configuration being served.
//!
//! Bind it to loopback or a cluster-internal address: `/config` shows every Route.

use crate::{
    metrics::Metrics,
    proxy::{full, ProxyBody, SharedSnapshot},
};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};
use tokio::net::TcpListener;

/// Shared state the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    pub snapshot: SharedSnapshot,
    pub metrics: Arc<Metrics>,
    /// Set once the first snapshot is loaded.
    pub ready: Arc<AtomicBool>,
}

/// Serves the admin endpoints until the task is dropped.
pub async fn serve(listener: TcpListener, state: AdminState) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, &req)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(state: &AdminState, req: &Request<Incoming>) -> Response<ProxyBody> {
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no configuration loaded yet\n",
        ),
        "/metrics" => {
            let mut resp = text(StatusCode::OK, &state.metrics.render());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        "/config" => {
            let snapshot = state.snapshot.load();
            let routes: Vec<_> = snapshot
                .routes
                .values()
                .map(|r| {
                    serde_json::json!({
                        "apiVersion": crate::config::API_VERSION,
                        "kind": "Route",
                        "metadata": r.meta,
                        "spec": r.spec,
                    })
                })
                .collect();
            let bffs: Vec<_> = snapshot
                .bffs
                .values()
                .map(|b| {
                    serde_json::json!({
                        "apiVersion": crate::config::API_VERSION,
                        "kind": "BFF",
                        "metadata": b.meta,
                        "spec": b.spec,
                    })
                })
                .collect();
            let body = serde_json::json!({
                "routes": routes,
                "bffs": bffs,
                "problems": snapshot.problems,
            });
            let mut resp = text(
                StatusCode::OK,
                &serde_json::to_string_pretty(&body).unwrap_or_default(),
            );
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz, /metrics or /config\n",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body.to_owned()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
