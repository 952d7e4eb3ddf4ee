//! A small echo server for tests, demos and debugging in a cluster.
//!
//! - any request: a JSON description of the request (method, path, headers, body);
//! - `/sse?count=N&intervalMs=M`: N Server-Sent Events, M ms apart;
//! - `/bytes/N`: N bytes, streamed in 64 KiB chunks;
//! - `/status/CODE`: that status code;
//! - `?delayMs=M` on any request: wait M ms before answering;
//! - a WebSocket upgrade: every message is sent back.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use std::{convert::Infallible, sync::Arc, time::Duration};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

/// Bodies up to this size are echoed back; larger ones are only counted.
const MAX_ECHOED_BODY: usize = 64 * 1024;

/// Serves echo requests on `listener` forever. `name` is returned in `x-echo-name` and
/// in the JSON, so a caller can tell which backend answered.
pub async fn serve(listener: TcpListener, name: String) {
    let name: Arc<str> = name.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(name.clone(), req));
            // Room for what a gateway adds to a client's own headers.
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().max_headers(256);
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(name: Arc<str>, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let param = |k: &str| {
        query
            .iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    if let Some(ms) = param("delayMs") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    let path = req.uri().path().to_owned();
    let mut resp = if is_websocket(&req) {
        websocket(&mut req)
    } else if path == "/sse" {
        sse(
            param("count").unwrap_or(3),
            param("intervalMs").unwrap_or(100),
        )
    } else if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse().ok()) {
        bytes(n)
    } else {
        let status = path
            .strip_prefix("/status/")
            .and_then(|c| c.parse().ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::OK);
        let mut resp = describe(&name, req).await;
        *resp.status_mut() = status;
        resp
    };
    if let Ok(v) = HeaderValue::from_str(&name) {
        resp.headers_mut().insert("x-echo-name", v);
    }
    Ok(resp)
}

async fn describe(name: &str, req: Request<Incoming>) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        let entry = headers
            .entry(k.as_str())
            .or_insert_with(|| serde_json::Value::Array(vec![]));
        if let serde_json::Value::Array(values) = entry {
            values.push(String::from_utf8_lossy(v.as_bytes()).into_owned().into());
        }
    }
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            total += data.len();
            if kept.len() < MAX_ECHOED_BODY {
                kept.extend_from_slice(&data[..data.len().min(MAX_ECHOED_BODY - kept.len())]);
            }
        }
    }
    let json = serde_json::json!({
        "name": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&kept),
        "bodyBytes": total,
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn sse(count: u64, interval_ms: u64) -> Response<Body> {
    let events = futures_util::stream::unfold(0u64, move |i| async move {
        if i >= count {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
        let frame = hyper::body::Frame::data(Bytes::from(format!("id: {i}\ndata: event {i}\n\n")));
        Some((Ok::<_, Infallible>(frame), i + 1))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(events)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn bytes(n: u64) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let chunks = futures_util::stream::unfold(0u64, move |sent| async move {
        if sent >= n {
            return None;
        }
        let len = CHUNK.min(n - sent);
        let frame = hyper::body::Frame::data(Bytes::from(vec![b'x'; len as usize]));
        Some((Ok::<_, Infallible>(frame), sent + len))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    resp
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn websocket(req: &mut Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        let mut resp =
            Response::new(Full::new(Bytes::from_static(b"missing Sec-WebSocket-Key")).boxed());
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()).boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid value"),
    );
    resp
}
