//! gRPC through the gateway to a real tonic server over h2c: unary and server-streaming
//! calls with their trailers, a backend's error status reaching the client, and the
//! gateway's own refusals arriving as gRPC statuses rather than bare HTTP codes.

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use portcullis::proxy::Limits;
use std::{net::SocketAddr, time::Duration};
use tokio::net::TcpListener;
use tonic::{transport::Channel, Code};
use tonic_health::{
    pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest},
    server::HealthReporter,
};

/// A tonic server with the standard health service on a free loopback port.
async fn grpc_backend() -> (SocketAddr, HealthReporter) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, service) = tonic_health::server::health_reporter();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    (addr, reporter)
}

/// A listener that accepts connections and never says a word.
async fn silent_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

fn grpc_route(name: &str, backend: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\n\
         spec:\n  rules:\n  - backends: [{backend}]\n{extra}"
    )
}

async fn client(gw: &TestGateway) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

fn ask(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

#[tokio::test]
async fn unary_and_streaming_calls_keep_their_trailers() {
    let (backend, mut reporter) = grpc_backend().await;
    reporter
        .set_service_status("orders", tonic_health::ServingStatus::Serving)
        .await;
    let gw = TestGateway::start(&grpc_route(
        "grpc",
        &format!("{{address: '{backend}', protocol: H2C}}"),
        "",
    ))
    .await;
    let mut health = client(&gw).await;

    // A unary success: tonic fails a 200 whose trailers lack grpc-status, so this
    // passing means the backend's trailers crossed the gateway.
    let resp = health.check(ask("orders")).await.unwrap().into_inner();
    assert_eq!(resp.status(), ServingStatus::Serving);

    // The backend's own error status and message reach the client as sent.
    let err = health.check(ask("missing")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "service not registered");

    // A server stream: messages arrive as the backend sends them, and the stream ends
    // cleanly with the backend's trailers.
    let mut stream = health.watch(ask("orders")).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    reporter
        .set_service_status("orders", tonic_health::ServingStatus::NotServing)
        .await;
    let second = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the update streams through")
        .unwrap()
        .unwrap();
    assert_eq!(second.status(), ServingStatus::NotServing);
    reporter.clear_service_status("orders").await;
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn gateway_refusals_are_grpc_statuses() {
    let (backend, _reporter) = grpc_backend().await;
    let silent = silent_backend().await;
    let yaml = grpc_route(
        "none",
        "{service: {name: missing, port: 9090}}",
        "    matches: [{path: {value: /none.Health}}]\n",
    ) + &grpc_route(
        "slow",
        &format!("{{address: '{silent}', protocol: H2C}}"),
        "    matches: [{path: {value: /slow.Health}}]\n    timeouts: {request: 300ms}\n",
    ) + &grpc_route(
        "guarded",
        &format!("{{address: '{backend}', protocol: H2C}}"),
        "    matches: [{path: {value: /grpc.health.v1.Health}}]\n",
    ) + "---\napiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {name: guard}\n\
         spec:\n  targetRefs: [{kind: Route, name: guarded}]\n  apiKeys: {keysRef: {name: keys}}\n  \
         rateLimit: {requests: 1, per: 1m, key: {type: Route}}\n";
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| {
            std::fs::create_dir(dir.join("keys")).unwrap();
            std::fs::write(
                dir.join("keys/keys.yaml"),
                "app: app-key-0123456789abcdef\n",
            )
            .unwrap();
        },
        None,
    )
    .await;

    // Calls to other services, by path, reach the refusing Routes.
    let (status, message) = grpc_call(gw.addr, "/none.Health/Check", &[]).await;
    assert_eq!(status, "14", "no endpoint: UNAVAILABLE");
    assert!(message.starts_with("no_endpoints"), "{message}");

    let started = std::time::Instant::now();
    let (status, _) = grpc_call(gw.addr, "/slow.Health/Check", &[]).await;
    assert_eq!(status, "4", "route timeout: DEADLINE_EXCEEDED");
    assert!(started.elapsed() < Duration::from_secs(3));

    // The tonic client reads the same statuses.
    let mut health = client(&gw).await;
    let err = health.check(ask("")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().starts_with("invalid_api_key"), "{err:?}");

    let with_key = || {
        let mut req = tonic::Request::new(ask(""));
        req.metadata_mut()
            .insert("x-api-key", "app-key-0123456789abcdef".parse().unwrap());
        req
    };
    let ok = health.check(with_key()).await.unwrap().into_inner();
    assert_eq!(ok.status(), ServingStatus::Serving);
    let err = health.check(with_key()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.metadata().get("retry-after").is_some());
}

#[tokio::test]
async fn a_shorter_grpc_timeout_is_the_deadline() {
    let silent = silent_backend().await;
    let gw = TestGateway::start(&grpc_route(
        "slow",
        &format!("{{address: '{silent}', protocol: H2C}}"),
        "    timeouts: {request: 20s}\n",
    ))
    .await;
    let started = std::time::Instant::now();
    let (status, message) = grpc_call(gw.addr, "/a.B/C", &[("grpc-timeout", "200m")]).await;
    assert_eq!(status, "4", "{message}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// One gRPC-shaped request over HTTP/2 with prior knowledge; returns `grpc-status` and
/// `grpc-message` from the head (a trailers-only answer) or the trailers.
async fn grpc_call(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> (String, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()),
    )
    .await
    .expect("an answer within 10 s")
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let mut head = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    if let Some(trailers) = collected.trailers() {
        head.extend(trailers.clone());
    }
    let text = |name: &str| {
        head.get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (text("grpc-status"), text("grpc-message"))
}
