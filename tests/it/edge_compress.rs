//! The `compression` section in front of a real origin: each encoding decoded back to
//! the origin's bytes, negotiation by q-value, what is left alone, and events of a
//! compressed stream arriving as they are sent.

use crate::{origin::*, support::*};
use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::{
    convert::Infallible,
    net::SocketAddr,
    time::{Duration, Instant},
};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt};

fn mk_config(origin: SocketAddr, sections: &str) -> String {
    format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: api}}\n\
         spec:\n  rules:\n  - backends: [{{address: '{origin}'}}]\n\
         ---\napiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {{name: edge}}\n\
         spec:\n  targetRefs: [{{kind: Route, name: api}}]\n{sections}"
    )
}

/// About 20 KiB of JSON that compresses well, as API answers do.
fn mk_json() -> String {
    let items: Vec<String> = (0..400)
        .map(|i| format!("{{\"id\":{i},\"name\":\"item {i}\",\"tags\":[\"a\",\"b\"]}}"))
        .collect();
    format!("[{}]", items.join(","))
}

/// The origin's answer for each path: `/json`, `/small`, `/png`, `/encoded`,
/// `/no-transform` and `/chunked` (JSON of unknown length).
async fn mk_origin() -> Origin {
    Origin::start(|req, _| {
        let json = mk_json();
        let ct = ("content-type", "application/json; charset=utf-8");
        match req.uri.path() {
            "/json" => answer(200, &[ct, ("etag", "\"j1\"")], json),
            "/small" => answer(200, &[ct], "{\"ok\":true}"),
            "/png" => answer(200, &[("content-type", "image/png")], vec![7u8; 20_000]),
            "/encoded" => answer(200, &[ct, ("content-encoding", "br")], json),
            "/no-transform" => answer(200, &[ct, ("cache-control", "no-transform")], json),
            "/chunked" => {
                let chunks = vec![Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(
                    "[1,2,3]",
                )))];
                let body = StreamBody::new(futures_util::stream::iter(chunks)).boxed();
                let mut resp = http::Response::new(body);
                resp.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                resp
            }
            _ => answer(404, &[], ""),
        }
    })
    .await
}

pub async fn decode(encoding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut reader: std::pin::Pin<Box<dyn AsyncRead>> = match encoding {
        "gzip" => Box::pin(GzipDecoder::new(data)),
        "br" => Box::pin(BrotliDecoder::new(data)),
        "zstd" => Box::pin(ZstdDecoder::new(data)),
        other => panic!("unexpected encoding {other}"),
    };
    reader.read_to_end(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn each_encoding_decodes_to_the_origin_bytes() {
    let origin = mk_origin().await;
    let gw = TestGateway::start(&mk_config(origin.addr, "  compression: {}\n")).await;
    let plain = get(&gw.url("/json"), &[]).await;
    assert_eq!(plain.body, mk_json().as_bytes());
    assert_eq!(plain.header("content-encoding"), "");
    assert_eq!(plain.header("vary"), "Accept-Encoding");

    for encoding in ["gzip", "br", "zstd"] {
        let a = get(&gw.url("/json"), &[("accept-encoding", encoding)]).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-encoding"), encoding);
        assert_eq!(a.header("vary"), "Accept-Encoding");
        assert_eq!(
            a.header("etag"),
            "W/\"j1\"",
            "the body is not the origin's bytes"
        );
        assert!(!a.headers.contains_key("content-length"));
        assert!(
            a.body.len() * 4 < plain.body.len(),
            "{encoding}: {} of {} bytes",
            a.body.len(),
            plain.body.len()
        );
        assert_eq!(decode(encoding, &a.body).await, plain.body, "{encoding}");
    }
}

#[tokio::test]
async fn q_values_choose_and_q_zero_refuses() {
    let origin = mk_origin().await;
    let gw = TestGateway::start(&mk_config(origin.addr, "  compression: {}\n")).await;
    let encoding_for = |accept: &'static str| {
        let url = gw.url("/json");
        async move {
            let a = get(&url, &[("accept-encoding", accept)]).await;
            let encoding = a.header("content-encoding").to_string();
            if !encoding.is_empty() {
                assert_eq!(decode(&encoding, &a.body).await, mk_json().as_bytes());
            }
            encoding
        }
    };
    assert_eq!(encoding_for("gzip, deflate, br, zstd").await, "zstd");
    assert_eq!(
        encoding_for("gzip;q=1.0, br;q=0.8, zstd;q=0.5").await,
        "gzip"
    );
    assert_eq!(encoding_for("gzip;q=0, br").await, "br");
    assert_eq!(encoding_for("gzip;q=0, br;q=0, zstd;q=0").await, "");
    assert_eq!(encoding_for("*;q=0").await, "");
    assert_eq!(encoding_for("*;q=0.5, zstd;q=0").await, "br");
    assert_eq!(encoding_for("identity").await, "");

    // The section's order breaks ties.
    let gw = TestGateway::start(&mk_config(
        origin.addr,
        "  compression: {encodings: [Gzip, Brotli]}\n",
    ))
    .await;
    let a = get(&gw.url("/json"), &[("accept-encoding", "zstd, br, gzip")]).await;
    assert_eq!(a.header("content-encoding"), "gzip");
    let a = get(&gw.url("/json"), &[("accept-encoding", "zstd")]).await;
    assert_eq!(a.header("content-encoding"), "");
}

#[tokio::test]
async fn small_encoded_and_binary_bodies_go_as_they_are_and_head_gets_get_fields() {
    let origin = mk_origin().await;
    let gw = TestGateway::start(&mk_config(origin.addr, "  compression: {}\n")).await;
    let all = [("accept-encoding", "gzip, br, zstd")];
    for path in ["/small", "/png", "/no-transform"] {
        let a = get(&gw.url(path), &all).await;
        assert_eq!(a.header("content-encoding"), "", "{path}");
        assert!(!a.header("vary").contains("Accept-Encoding"), "{path}");
        assert_eq!(
            a.header("content-length"),
            a.body.len().to_string(),
            "{path}"
        );
    }
    let a = get(&gw.url("/encoded"), &all).await;
    assert_eq!(a.header("content-encoding"), "br");
    assert_eq!(a.body, mk_json().as_bytes(), "passed on untouched");

    // A body of unknown length may be long: it is compressed.
    let a = get(&gw.url("/chunked"), &all).await;
    assert_eq!(a.header("content-encoding"), "zstd");
    assert_eq!(decode("zstd", &a.body).await, b"[1,2,3]");

    let head = http::Request::head(gw.url("/json"))
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let a = send(head).await;
    assert_eq!(a.status, 200);
    assert!(a.body.is_empty());
    // The fields its GET would get: the encoding, no identity length, a weak validator.
    assert_eq!(a.header("content-encoding"), "gzip");
    assert_eq!(a.header("vary"), "Accept-Encoding");
    assert_eq!(a.header("etag"), "W/\"j1\"");
    assert!(!a.headers.contains_key("content-length"));
    let head = http::Request::head(gw.url("/json"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let a = send(head).await;
    assert_eq!(a.header("content-encoding"), "");
    assert_eq!(a.header("vary"), "Accept-Encoding");
    assert_eq!(a.header("content-length"), mk_json().len().to_string());

    // A larger minimum leaves the JSON alone.
    let gw = TestGateway::start(&mk_config(
        origin.addr,
        "  compression: {minBytes: 100000, contentTypes: [application/json]}\n",
    ))
    .await;
    let a = get(&gw.url("/json"), &all).await;
    assert_eq!(a.header("content-encoding"), "");
}

#[tokio::test]
async fn cached_answers_are_compressed_for_each_client() {
    let origin = Origin::start(|_, _| {
        answer(
            200,
            &[
                ("content-type", "text/plain"),
                ("cache-control", "max-age=60"),
            ],
            mk_json(),
        )
    })
    .await;
    let gw = TestGateway::start(&mk_config(origin.addr, "  cache: {}\n  compression: {}\n")).await;
    let a = get(&gw.url("/"), &[("accept-encoding", "gzip")]).await;
    assert_eq!(a.header("content-encoding"), "gzip");
    let a = get(&gw.url("/"), &[]).await;
    assert!(a.header("cache-status").contains("hit"));
    assert_eq!(
        (a.header("content-encoding"), &a.body[..]),
        ("", mk_json().as_bytes())
    );
    let a = get(&gw.url("/"), &[("accept-encoding", "br")]).await;
    assert!(a.header("cache-status").contains("hit"));
    assert_eq!(a.header("content-encoding"), "br");
    assert_eq!(decode("br", &a.body).await, mk_json().as_bytes());
    assert_eq!(origin.calls(), 1);
}

/// A decoder reading a response body as it arrives.
fn mk_stream_decoder(
    encoding: &str,
    body: hyper::body::Incoming,
) -> std::pin::Pin<Box<dyn AsyncRead + Send>> {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader: std::pin::Pin<Box<dyn AsyncBufRead + Send>> =
        Box::pin(tokio_util::io::StreamReader::new(stream));
    match encoding {
        "gzip" => Box::pin(GzipDecoder::new(reader)),
        "br" => Box::pin(BrotliDecoder::new(reader)),
        "zstd" => Box::pin(ZstdDecoder::new(reader)),
        other => panic!("unexpected encoding {other}"),
    }
}

#[tokio::test]
async fn a_compressed_event_stream_delivers_each_event_before_the_next_is_sent() {
    for encoding in ["gzip", "br", "zstd"] {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let rx = tokio::sync::Mutex::new(Some(rx));
        let origin = Origin::start(move |_, _| {
            let rx = rx.try_lock().unwrap().take().expect("one stream");
            let events = futures_util::stream::unfold(rx, |mut rx| async move {
                let event = rx.recv().await?;
                Some((Ok::<_, Infallible>(hyper::body::Frame::data(event)), rx))
            });
            let mut resp = http::Response::new(StreamBody::new(events).boxed());
            resp.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            resp
        })
        .await;
        let gw = TestGateway::start(&mk_config(origin.addr, "  compression: {}\n")).await;

        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let req = http::Request::get(gw.url("/events"))
            .header("accept-encoding", encoding)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.headers()["content-encoding"], encoding);
        let mut decoder = mk_stream_decoder(encoding, resp.into_body());

        // The origin sends the next event only once the client has the previous one:
        // an event held back by the encoder would stall the stream here.
        let mut received = String::new();
        for i in 0..3 {
            let event = format!(
                "id: {i}\ndata: {{\"n\":{i},\"pad\":\"{}\"}}\n\n",
                "x".repeat(40)
            );
            let sent = Instant::now();
            tx.send(Bytes::from(event.clone())).unwrap();
            let mut buf = [0u8; 4096];
            while !received.ends_with(&event) {
                let n = tokio::time::timeout(Duration::from_secs(2), decoder.read(&mut buf))
                    .await
                    .unwrap_or_else(|_| panic!("{encoding}: event {i} held back"))
                    .unwrap();
                assert!(n > 0, "{encoding}: stream ended early");
                received.push_str(std::str::from_utf8(&buf[..n]).unwrap());
            }
            let took = sent.elapsed();
            assert!(
                took < Duration::from_millis(500),
                "{encoding}: event {i} took {took:?}"
            );
        }
        drop(tx);
        let mut rest = Vec::new();
        decoder.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{encoding}");
    }
}
