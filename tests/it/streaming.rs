//! Bodies stream both ways; upgrades tunnel only after the backend agreed.

use crate::support::*;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn large_uploads_and_downloads_stream() {
    let a = echo("a").await;
    let gw = TestGateway::start(&route_to("r", a)).await;

    // 48 MiB down, counted as it arrives.
    let client = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
    let resp = client
        .get(gw.url("/bytes/50331648").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        total += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(total, 50_331_648);

    // 32 MiB up, sent in chunks while the request is already in flight.
    type Chunk = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>;
    let chunks = futures_util::stream::iter(
        (0..512).map(|_| -> Chunk { Ok(hyper::body::Frame::data(Bytes::from(vec![b'u'; 65536]))) }),
    );
    let client = Client::builder(TokioExecutor::new()).build_http::<StreamBody<_>>();
    let req = http::Request::post(gw.url("/upload"))
        .body(StreamBody::new(chunks))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(json["bodyBytes"], 33_554_432);
    assert_eq!(
        json["headers"]["transfer-encoding"],
        serde_json::json!(["chunked"])
    );
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one() {
    let a = echo("a").await;
    let gw = TestGateway::start(&route_to("r", a)).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
    let start = Instant::now();
    let resp = client
        .get(gw.url("/sse?count=4&intervalMs=300").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            let text = String::from_utf8_lossy(data).into_owned();
            arrivals.push((start.elapsed(), text));
        }
    }
    assert_eq!(arrivals.len(), 4, "{arrivals:?}");
    // Event i is produced at about i*300 ms; each must be delivered well before the next.
    for (i, (at, text)) in arrivals.iter().enumerate() {
        assert!(text.contains(&format!("event {i}")), "{text}");
        assert!(
            *at < Duration::from_millis(300 * i as u64 + 250),
            "event {i} arrived at {at:?}"
        );
    }
}

#[tokio::test]
async fn websocket_tunnels_after_101() {
    let a = echo("a").await;
    let gw = TestGateway::start(&route_to("r", a)).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for msg in ["hello", "world"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg))
            .await
            .unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), msg);
    }
}

#[tokio::test]
async fn a_refused_upgrade_does_not_open_a_tunnel() {
    let a = echo("a").await;
    let gw = TestGateway::start(&route_to("r", a)).await;
    // The backend answers 400 (no Sec-WebSocket-Key). The pipelined request behind the
    // upgrade must be parsed and routed as HTTP, not passed raw to the backend.
    let out = raw(
        gw.addr,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\
          GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(statuses(&out), [400, 200], "{out}");
    assert!(out.contains("\"path\":\"/second\""), "{out}");
    assert!(
        out.contains("x-request-id"),
        "the second answer went through the gateway: {out}"
    );
}

#[tokio::test]
async fn h2c_prior_knowledge_clients_are_served() {
    let a = echo("a").await;
    let gw = TestGateway::start(&route_to("r", a)).await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let req = http::Request::get(gw.url("/h2"))
        .header("x-a", "1")
        .body(Default::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    // The backend leg is HTTP/1.1 with a Host taken from :authority.
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(json["path"], "/h2");
    assert_eq!(
        json["headers"]["host"],
        serde_json::json!([gw.addr.to_string()])
    );
}

#[tokio::test]
async fn h2_requests_have_their_header_fields_counted_and_cookies_joined() {
    let a = echo("a").await;
    let gw = TestGateway::start(&route_to("r", a)).await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let mut req = http::Request::get(gw.url("/"))
        .body(Default::default())
        .unwrap();
    for i in 0..150 {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
            "v".parse().unwrap(),
        );
    }
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 431);

    let req = http::Request::get(gw.url("/"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Default::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(json["headers"]["cookie"], serde_json::json!(["a=1; b=2"]));
}

#[tokio::test]
async fn a_slow_reader_does_not_make_the_gateway_buffer() {
    let a = echo("a").await;
    let gw = TestGateway::start(&route_to("r", a)).await;
    // Ask for 64 MiB and read nothing for a while: backpressure must hold the backend
    // instead of the gateway collecting the body in memory.
    let before = resident_kib();
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /bytes/67108864 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let grown = resident_kib().saturating_sub(before);
    // The test process (gateway and backend included) grows by far less than the body:
    // it waits in socket buffers, not in the heap.
    assert!(grown < 24 * 1024, "resident set grew by {grown} KiB");
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}
