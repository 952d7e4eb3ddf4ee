//! Sending a request upstream: one try after another until one succeeds, the rule's
//! retries or budget run out, or the request's time is up. Each try picks an endpoint,
//! waits for a connection slot, and reports its outcome to the endpoint's health.

use super::{
    body::{BoxError, Observed, ProxyBody},
    error::GatewayError,
    transport::SendError,
    Proxy,
};
use crate::{
    routing::Forward,
    upstream::{
        self,
        balance::{hash_key, Hints},
        health::Change,
        retry::Failure,
        Endpoint, InFlight, Pick,
    },
};
use bytes::Bytes;
use http::{header, uri, HeaderMap, HeaderValue, Request, Response, Uri};
use http_body::Body as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::sync::OwnedSemaphorePermit;

/// Bodies up to this size are kept in memory so a retry can send them again; larger
/// ones stream once and are not retried.
const REPLAY_LIMIT: u64 = 64 * 1024;

/// The request, ready to go but for its endpoint.
pub(super) struct Outgoing {
    pub parts: http::request::Parts,
    pub path_and_query: String,
    /// `None` for a request the gateway makes itself, which has no body.
    pub body: Option<Incoming>,
    pub body_limit: u64,
    pub client: IpAddr,
    /// The client came over HTTPS, so the session cookie is `Secure`.
    pub secure: bool,
    /// The client accepts trailers (`TE: trailers`), to be passed on over HTTP/2.
    pub trailers: bool,
    /// The client's own deadline (`grpc-timeout`) is the one that ends the request.
    pub client_deadline: bool,
}

/// A response and what must live as long as it.
pub(super) struct Delivered {
    pub response: Response<Incoming>,
    pub backend: Arc<str>,
    /// A `Set-Cookie` pinning the client to the endpoint that answered.
    pub session_cookie: Option<HeaderValue>,
    /// The connection slot and the in-flight count, held until the body ends.
    pub guards: Guards,
}

pub(super) struct Guards {
    _permit: Option<OwnedSemaphorePermit>,
    _in_flight: InFlight,
}

/// The body of every try: the same bytes again, or the client's stream once.
enum Replay {
    Bytes(Bytes),
    Stream(Option<Incoming>),
}

pub(super) async fn send(
    proxy: &Proxy,
    forward: &Forward,
    route: &Arc<str>,
    out: Outgoing,
    deadline: Instant,
    timeout: Duration,
) -> Result<Delivered, (GatewayError, Option<Arc<str>>)> {
    let Outgoing {
        parts,
        path_and_query,
        body,
        body_limit,
        client,
        secure,
        trailers,
        client_deadline,
    } = out;
    let session_value = forward
        .balancer
        .session
        .as_ref()
        .and_then(|s| cookie(&parts.headers, &s.name));
    let hash = forward
        .balancer
        .hash_on
        .as_ref()
        .and_then(|on| hash_of(on, &parts.headers, parts.uri.query(), client));
    let retry = forward.retry.as_ref();
    if let Some(r) = retry {
        r.budget.deposit();
    }
    let mut replay = match (body, retry) {
        (None, _) => Replay::Bytes(Bytes::new()),
        (Some(body), Some(_)) => replayable(body, body_limit, deadline).await?,
        (Some(body), None) => Replay::Stream(Some(body)),
    };

    let mut tried: Vec<Arc<Endpoint>> = Vec::new();
    for attempt in 0.. {
        let hints = Hints {
            hash,
            session: session_value.as_deref(),
            tried: &tried,
        };
        let Pick {
            backend,
            endpoint,
            pinned,
        } = forward
            .backends
            .pick(forward.balancer.kind, &hints)
            .ok_or((GatewayError::NoEndpoints, None))?;
        let fail = |e| (e, Some(backend.name.clone()));
        let endpoint = endpoint
            .ok_or_else(|| fail(GatewayError::NoEndpoints))?
            .clone();

        let permit = match &backend.limiter {
            None => None,
            Some(limiter) => {
                let wait = tokio::time::timeout_at(deadline.into(), limiter.acquire()).await;
                match wait {
                    Ok(Ok(p)) => Some(p),
                    Ok(Err(upstream::Overflow)) => {
                        proxy
                            .metrics
                            .upstream_overflow
                            .with_label_values(&[&backend.key])
                            .inc();
                        return Err(fail(GatewayError::Overloaded));
                    }
                    Err(_) => return Err(fail(GatewayError::Timeout(timeout))),
                }
            }
        };
        let in_flight = endpoint.start();

        // Set while the client's streamed body is still arriving: a try that times out
        // then may be the client's slowness, not the endpoint's. Bodies held in memory,
        // or already ended, cannot stall and are not watched.
        let mut body_pending: Option<Arc<AtomicBool>> = None;
        let body = match &mut replay {
            Replay::Bytes(b) => Full::new(b.clone()).map_err(BoxError::from).boxed(),
            Replay::Stream(s) => match s.take() {
                Some(b) if b.is_end_stream() => b.map_err(BoxError::from).boxed(),
                Some(b) => {
                    let pending = Arc::new(AtomicBool::new(true));
                    body_pending = Some(pending.clone());
                    let limited =
                        Limited::new(b, usize::try_from(body_limit).unwrap_or(usize::MAX));
                    Observed::new(limited, move |_, complete| {
                        if complete {
                            pending.store(false, Ordering::Relaxed);
                        }
                    })
                    .map_err(BoxError::from)
                    .boxed()
                }
                // Streamed bodies are sent once; the loop never comes back for them.
                None => {
                    return Err(fail(GatewayError::BackendFailed(
                        "body already sent".into(),
                    )))
                }
            },
        };
        let mut req_parts = parts.clone();
        req_parts.uri = upstream_uri(&endpoint.authority, &path_and_query).map_err(fail)?;
        // HTTP/1.1 backends never see `TE`; gRPC over HTTP/2 needs it.
        if trailers && backend.transport.may_use_http2() {
            req_parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let req = Request::from_parts(req_parts, body);

        let try_deadline = match forward.per_try_timeout {
            Some(t) => deadline.min(Instant::now() + t),
            None => deadline,
        };
        let sent = proxy.transports.send(&backend.transport, req);
        let outcome = tokio::time::timeout_at(try_deadline.into(), sent).await;
        let can_replay = matches!(replay, Replay::Bytes(_));
        let wait = retry.map_or(Duration::ZERO, |r| r.backoff(attempt + 1));
        // A retry that could not start before the deadline would turn the backend's
        // own answer into a timeout.
        let retryable = |failure: Failure| {
            retry.is_some_and(|r| {
                can_replay && attempt < r.attempts && r.retries(&parts.method, failure)
            }) && Instant::now() + wait < deadline
                && budget_allows(proxy, forward, route)
        };
        let failure = match outcome {
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                note_health(proxy, backend, &endpoint, status < 500);
                if !retryable(Failure::Status(status)) {
                    let session_cookie = forward
                        .balancer
                        .session
                        .as_ref()
                        .filter(|_| !pinned)
                        .and_then(|s| set_cookie(s, &endpoint, secure));
                    return Ok(Delivered {
                        response: resp,
                        backend: backend.name.clone(),
                        session_cookie,
                        guards: Guards {
                            _permit: permit,
                            _in_flight: in_flight,
                        },
                    });
                }
                Failure::Status(status)
            }
            Ok(Err(SendError::Refused(why))) => {
                // The backend's TLS settings did not load: no try can succeed.
                return Err(fail(GatewayError::BackendFailed(why)));
            }
            Ok(Err(SendError::Failed(err))) => {
                let (failure, error) = classify(proxy, &backend.key, err, body_limit);
                let Some(failure) = failure else {
                    // The client's own body failed: not the backend's fault, and nothing
                    // to retry.
                    return Err(fail(error));
                };
                note_health(proxy, backend, &endpoint, false);
                if !retryable(failure) {
                    return Err(fail(error));
                }
                failure
            }
            Err(_) => {
                // A deadline the client chose, or a body the client has not finished
                // sending, says nothing of the endpoint's health: counting them would
                // let any client have healthy endpoints ejected.
                let client_slow = body_pending.is_some_and(|p| p.load(Ordering::Relaxed));
                if (try_deadline < deadline || !client_deadline) && !client_slow {
                    note_health(proxy, backend, &endpoint, false);
                }
                let per_try = forward.per_try_timeout.filter(|_| try_deadline < deadline);
                let error = GatewayError::Timeout(per_try.unwrap_or(timeout));
                if per_try.is_none() || !retryable(Failure::PerTryTimeout) {
                    return Err(fail(error));
                }
                Failure::PerTryTimeout
            }
        };
        drop(in_flight);
        drop(permit);
        proxy
            .metrics
            .upstream_retries
            .with_label_values(&[route, failure_label(failure)])
            .inc();
        tried.push(endpoint);
        if Instant::now() + wait >= deadline {
            return Err(fail(GatewayError::Timeout(timeout)));
        }
        tokio::time::sleep(wait).await;
    }
    unreachable!("the loop returns")
}

/// Takes a retry from the rule's budget; counts the refusal when there is none.
fn budget_allows(proxy: &Proxy, forward: &Forward, route: &Arc<str>) -> bool {
    let Some(r) = &forward.retry else {
        return false;
    };
    if r.budget.withdraw(upstream::now_ms()) {
        return true;
    }
    proxy
        .metrics
        .upstream_retries
        .with_label_values(&[route, "budget_exhausted"])
        .inc();
    false
}

fn failure_label(f: Failure) -> &'static str {
    match f {
        Failure::Connect => "connect_failure",
        Failure::Reset => "reset",
        Failure::PerTryTimeout => "per_try_timeout",
        Failure::Status(_) => "status",
    }
}

/// Reports one outcome to passive health, and logs and counts an ejection.
fn note_health(proxy: &Proxy, backend: &upstream::Backend, endpoint: &Endpoint, ok: bool) {
    let Some(check) = backend.health.as_ref().and_then(|h| h.passive.as_ref()) else {
        return;
    };
    if let Some(Change::Ejected(period)) = endpoint.health.record(ok, check, upstream::now_ms()) {
        tracing::warn!(
            backend = %backend.key,
            endpoint = %endpoint.authority,
            seconds = period.as_secs_f64(),
            "endpoint ejected after consecutive failures"
        );
        proxy
            .metrics
            .upstream_ejections
            .with_label_values(&[&backend.key, "passive"])
            .inc();
    }
}

/// Reads a small body whole so that it can be sent again; streams anything larger.
async fn replayable(
    body: Incoming,
    body_limit: u64,
    deadline: Instant,
) -> Result<Replay, (GatewayError, Option<Arc<str>>)> {
    if body.is_end_stream() {
        return Ok(Replay::Bytes(Bytes::new()));
    }
    let cap = REPLAY_LIMIT.min(body_limit);
    let small = body.size_hint().upper().is_some_and(|n| n <= cap);
    if !small {
        return Ok(Replay::Stream(Some(body)));
    }
    let limit = usize::try_from(cap).unwrap_or(usize::MAX);
    match tokio::time::timeout_at(deadline.into(), Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(Replay::Bytes(collected.to_bytes())),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err((GatewayError::BodyTooLarge(body_limit), None))
        }
        Ok(Err(_)) => Err((
            GatewayError::BadRequest("malformed or interrupted request body"),
            None,
        )),
        Err(_) => Err((GatewayError::BadRequest("request body too slow"), None)),
    }
}

/// Sorts a client error into a retry condition; `None` when the client's side failed.
fn classify(
    proxy: &Proxy,
    backend: &str,
    err: hyper_util::client::legacy::Error,
    body_limit: u64,
) -> (Option<Failure>, GatewayError) {
    let chain = || {
        std::iter::successors(Some(&err as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
    };
    if chain().any(|e| e.is::<http_body_util::LengthLimitError>()) {
        return (None, GatewayError::BodyTooLarge(body_limit));
    }
    // The client's body broke (bad chunked framing, a reset): not the backend's fault.
    if chain().any(|e| {
        e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user)
    }) {
        return (
            None,
            GatewayError::BadRequest("malformed or interrupted request body"),
        );
    }
    let mut text = err.to_string();
    if let Some(cause) = std::error::Error::source(&err) {
        text = format!("{text}: {cause}");
    }
    let failure = if err.is_connect() {
        proxy
            .metrics
            .upstream_connect_errors
            .with_label_values(&[backend])
            .inc();
        Failure::Connect
    } else {
        Failure::Reset
    };
    (Some(failure), GatewayError::BackendFailed(text))
}

/// The value of one cookie of the request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim().to_owned())
        })
}

fn hash_of(
    on: &upstream::HashOn,
    headers: &HeaderMap,
    query: Option<&str>,
    client: IpAddr,
) -> Option<u64> {
    match on {
        upstream::HashOn::Header(name) => headers.get(name).map(|v| hash_key(v.as_bytes())),
        upstream::HashOn::Cookie(name) => cookie(headers, name).map(|v| hash_key(v.as_bytes())),
        upstream::HashOn::ClientAddress => Some(hash_key(client.to_string().as_bytes())),
        upstream::HashOn::QueryParameter(name) => form_urlencoded::parse(query?.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| hash_key(v.as_bytes())),
    }
}

fn set_cookie(
    s: &upstream::SessionCookie,
    endpoint: &Endpoint,
    secure: bool,
) -> Option<HeaderValue> {
    let mut c = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Lax",
        s.name, endpoint.session_value
    );
    if let Some(ttl) = s.ttl {
        c.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).ok()
}

fn upstream_uri(endpoint: &uri::Authority, path_and_query: &str) -> Result<Uri, GatewayError> {
    Uri::builder()
        .scheme(uri::Scheme::HTTP)
        .authority(endpoint.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| GatewayError::BadRequest("request target cannot be forwarded"))
}

/// Ends the guards with the body, so a slot is held while the response streams.
pub(super) fn hold(resp: Response<Incoming>, guards: Guards) -> Response<ProxyBody> {
    resp.map(|b| {
        super::body::Observed::new(b.map_err(BoxError::from), move |_, _| drop(guards)).boxed()
    })
}
