//! A backend whose answers a test writes: it counts its calls and keeps the headers of
//! the last request, so a test can tell what reached it and what a cache answered alone.

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{request::Parts, HeaderMap, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};
use tokio::net::TcpListener;

pub type OriginBody = BoxBody<Bytes, Infallible>;

/// Writes the answer to a request; the number is this call's, from 1.
pub type Answerer = dyn Fn(&Parts, usize) -> Response<OriginBody> + Send + Sync;

pub struct Origin {
    pub addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    last: Arc<ArcSwapOption<HeaderMap>>,
}

impl Origin {
    pub async fn start(
        answer: impl Fn(&Parts, usize) -> Response<OriginBody> + Send + Sync + 'static,
    ) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(ArcSwapOption::empty());
        let answer: Arc<Answerer> = Arc::new(answer);
        let (c, l) = (calls.clone(), last.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (answer, calls, last) = (answer.clone(), c.clone(), l.clone());
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (answer, calls, last) = (answer.clone(), calls.clone(), last.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let _ = body.collect().await;
                        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                        last.store(Some(Arc::new(parts.headers.clone())));
                        Ok::<_, Infallible>(answer(&parts, n))
                    }
                });
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { addr, calls, last }
    }

    /// Requests answered so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The headers of the last request that reached the origin.
    pub fn last_request(&self) -> HeaderMap {
        self.last
            .load_full()
            .map(|h| (*h).clone())
            .unwrap_or_default()
    }
}

/// An answer with `headers` and `body`.
pub fn answer(
    status: u16,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<OriginBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        resp.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    resp
}
