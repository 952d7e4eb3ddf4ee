//! HTTP/2 in plain text to backends, chosen by the backend's `protocol`, and the trace
//! context a backend receives.

use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{convert::Infallible, net::SocketAddr};
use tokio::net::TcpListener;

/// A backend that speaks HTTP/2 only, with prior knowledge, and answers with what it saw.
async fn h2c_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service_fn(answer)),
            );
        }
    });
    addr
}

/// Health probes the h2c backends have answered, over every test of this file.
static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn answer(req: http::Request<Incoming>) -> Result<http::Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/healthz" {
        PROBES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|h| h.to_str().unwrap().to_string())
    };
    let body = serde_json::json!({
        "version": format!("{:?}", req.version()),
        "authority": req.uri().authority().map(|a| a.to_string()),
        "host": header("host"),
        "path": req.uri().path_and_query().map(|p| p.to_string()),
        "forwardedHost": header("x-forwarded-host"),
        "te": header("te"),
    });
    Ok(http::Response::new(Full::new(Bytes::from(
        body.to_string(),
    ))))
}

fn route(name: &str, host: &str, backend: &str) -> String {
    format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\n\
         spec:\n  hosts: [{host}]\n  rules:\n  - backends: [{backend}]\n"
    )
}

#[tokio::test]
async fn h2c_is_chosen_by_the_backend_protocol() {
    let backend = h2c_backend().await;
    let yaml = route(
        "h2c",
        "h2c.test",
        &format!("{{address: '{backend}', protocol: H2C}}"),
    ) + &route("h1", "h1.test", &format!("{{address: '{backend}'}}"));
    let gw = TestGateway::start(&yaml).await;

    let a = get(
        &gw.url("/items?page=2"),
        &[("host", "h2c.test"), ("te", "trailers")],
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let seen = a.json();
    assert_eq!(seen["version"], "HTTP/2.0");
    // `:authority` carries the host the client asked for, as `Host` does over HTTP/1.
    assert_eq!(seen["authority"], "h2c.test");
    assert_eq!(seen["path"], "/items?page=2");
    assert_eq!(seen["forwardedHost"], "h2c.test");
    // The one `TE` HTTP/2 allows, which gRPC needs, is said again on this hop.
    assert_eq!(seen["te"], "trailers");

    // HTTP/1.1 to a server that speaks only HTTP/2 fails: nothing guesses.
    let a = get(&gw.url("/"), &[("host", "h1.test")]).await;
    assert_eq!(a.status, 502);
}

#[tokio::test]
async fn backends_get_a_traceparent_carrying_the_b3_trace() {
    let echo = echo("e").await;
    let gw = TestGateway::start(&route_to("e", echo)).await;

    let a = get(
        &gw.url("/"),
        &[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    assert_eq!(
        a.echoed_header("traceparent").unwrap(),
        "00-0000000000000000a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(a.echoed_header("x-b3-traceid").unwrap(), "a3ce929d0e0e4736");
    assert_eq!(a.echoed_header("x-b3-spanid").unwrap(), "00f067aa0ba902b7");
    assert_eq!(a.echoed_header("x-b3-sampled").unwrap(), "1");
    // With no request id of its own, the request is known by its trace.
    assert_eq!(a.header("x-request-id"), "0000000000000000a3ce929d0e0e4736");

    let single = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0";
    let a = get(&gw.url("/"), &[("b3", single)]).await;
    assert_eq!(
        a.echoed_header("traceparent").unwrap(),
        "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-00"
    );
    assert_eq!(a.echoed_header("b3").unwrap(), single);

    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let a = get(
        &gw.url("/"),
        &[("traceparent", tp), ("tracestate", "congo=t61rcWkgMzE")],
    )
    .await;
    assert_eq!(a.echoed_header("traceparent").unwrap(), tp);
    assert_eq!(a.echoed_header("tracestate").unwrap(), "congo=t61rcWkgMzE");

    // Invalid values never reach the backend.
    let a = get(
        &gw.url("/"),
        &[
            ("b3", "not-a-b3-value"),
            ("traceparent", "01-xyz"),
            ("tracestate", "a=b"),
        ],
    )
    .await;
    assert_eq!(a.echoed_header("b3"), None);
    assert_eq!(a.echoed_header("tracestate"), None);
    let new = a.echoed_header("traceparent").unwrap();
    assert_ne!(new, "01-xyz");
    assert_eq!(new.len(), 55, "{new}");
}

#[tokio::test]
async fn active_checks_reach_an_h2c_backend() {
    let backend = h2c_backend().await;
    let yaml = route(
        "h2c",
        "h2c.test",
        &format!(
            "{{address: '{backend}', protocol: H2C, healthCheck: {{active: {{path: /healthz, interval: 100ms, unhealthyThreshold: 1}}}}}}"
        ),
    );
    let gw = TestGateway::start(&yaml).await;
    eventually_true(|| PROBES.load(std::sync::atomic::Ordering::SeqCst) >= 3).await;
    let metrics = gw.metrics().await;
    // The probes went out as HTTP/2 and were answered 200: nothing was marked down.
    assert!(
        !metrics.contains("portcullis_upstream_ejections_total{"),
        "{metrics}"
    );
    assert_eq!(get(&gw.url("/"), &[("host", "h2c.test")]).await.status, 200);
}
