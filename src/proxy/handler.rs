//! The path of one request: check its framing, find its rule, then redirect or forward.
//!
//! Phases, in order:
//! 1. framing: ambiguous HTTP/1 bodies are refused before anything reads them;
//! 2. target: the host and the canonical path every later step uses;
//! 3. route: one snapshot load and one table lookup;
//! 4. action: a redirect answers here; a forward rewrites, picks an endpoint and sends;
//! 5. response: hop-by-hop headers removed, response filters applied, and the access log
//!    and metrics written when the body ends.

use super::{
    aggregate,
    body::{empty, IdleTimeout, Observed, ProxyBody},
    conn::ConnInfo,
    error::GatewayError,
    forward,
    framing::Verdict,
    grpc,
    headers::{self, X_REQUEST_ID},
    trace, Proxy,
};
use crate::{
    edge::{self, Edge, EdgeRequest, Lookup},
    metrics,
    policy::{
        self,
        access::{client_address, Cors},
        ratelimit::Decision,
        Denial, Refusal, RequestFacts,
    },
    routing::{self, path, ActionKind, RequestView, RuleAction},
};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::{borrow::Cow, convert::Infallible, sync::Arc, time::Instant};

/// What the access log and metrics need to know about a request, gathered on the way.
struct Exchange {
    start: Instant,
    method: Method,
    host: String,
    path: String,
    request_id: HeaderValue,
    /// The trace id the request went upstream with.
    trace_id: Option<String>,
    route: Option<Arc<str>>,
    backend: Option<Arc<str>>,
    /// `Strict-Transport-Security` for the answer, once the rule is known.
    hsts: Option<HeaderValue>,
    /// The Route's CORS section and the request's `Origin`, to label the answer.
    cors: Option<(Arc<Cors>, Option<HeaderValue>)>,
    /// The Route's rate limit decision, whose header fields go on the answer.
    rate_limit: Option<Decision>,
}

pub(super) async fn handle(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let request_id = headers::request_id(req.headers());
    let grpc = grpc::is_grpc(req.headers());
    let mut ex = Exchange {
        start: Instant::now(),
        method: req.method().clone(),
        host: String::new(),
        path: String::new(),
        request_id: request_id.clone(),
        trace_id: None,
        route: None,
        backend: None,
        hsts: None,
        cors: None,
        rate_limit: None,
    };
    let mut resp = match route_and_forward(&proxy, &conn, req, &mut ex).await {
        Ok(resp) => resp,
        Err(err) => {
            if let GatewayError::BackendFailed(_) = &err {
                tracing::debug!(request_id = ?ex.request_id, error = %err, "backend failed");
            }
            if grpc {
                grpc::error_response(err, &request_id)
            } else {
                err.into_response(&request_id)
            }
        }
    };
    resp.headers_mut().insert(X_REQUEST_ID, request_id);
    // A proxy answers in its own HTTP version (RFC 9110 §6.2), not its backend's: an
    // HTTP/1.0 backend must not turn the client's connection into a 1.0 one.
    *resp.version_mut() = Version::HTTP_11;
    if let Some(hsts) = ex.hsts.take() {
        resp.headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
    }
    // Refusals are labelled too, so a page can read why it was refused.
    if let Some((cors, origin)) = ex.cors.take() {
        cors.label(origin.as_ref(), resp.headers_mut());
    }
    // Every answer on a rate-limited Route tells the client where it stands, whether
    // the backend or the gateway wrote it.
    if let Some(decision) = ex.rate_limit.take() {
        decision.apply_headers(resp.headers_mut());
    }
    Ok(observe(&proxy, resp, ex))
}

/// Arranges for metrics and the access log line to be written when the body ends.
fn observe(proxy: &Arc<Proxy>, resp: Response<ProxyBody>, ex: Exchange) -> Response<ProxyBody> {
    let status = resp.status();
    let proxy = proxy.clone();
    resp.map(move |body| {
        let on_end = move |bytes: u64, complete: bool| {
            let route = ex.route.as_deref().unwrap_or("none");
            let elapsed = ex.start.elapsed();
            let m = &proxy.metrics;
            m.requests
                .with_label_values(&[
                    route,
                    metrics::method_label(&ex.method),
                    metrics::status_class(status),
                ])
                .inc();
            m.request_duration
                .with_label_values(&[route])
                .observe(elapsed.as_secs_f64());
            if proxy.access_log {
                tracing::info!(
                    target: "access",
                    method = %ex.method,
                    host = %ex.host,
                    path = %ex.path,
                    route,
                    backend = ex.backend.as_deref().unwrap_or("-"),
                    status = status.as_u16(),
                    // Whole microseconds, so the value prints without float noise.
                    duration_ms = elapsed.as_micros() as f64 / 1000.0,
                    bytes,
                    complete,
                    request_id = ex.request_id.to_str().unwrap_or("-"),
                    trace_id = ex.trace_id.as_deref().unwrap_or("-"),
                );
            }
        };
        Observed::new(body, on_end).boxed()
    })
}

async fn route_and_forward(
    proxy: &Proxy,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    ex: &mut Exchange,
) -> Result<Response<ProxyBody>, GatewayError> {
    check_framing(&req, conn, proxy.limits.max_headers)?;

    // Phase 2: the target.
    let max_uri = proxy.limits.max_uri_bytes;
    let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > max_uri {
        return Err(GatewayError::UriTooLong(max_uri));
    }
    let raw_host = request_host(&req)
        .ok_or(GatewayError::BadRequest("missing or invalid Host"))?
        .into_owned();
    let host = routing::normalize_host(&raw_host)
        .ok_or(GatewayError::BadRequest("invalid Host"))?
        .into_owned();
    let canonical = path::canonicalize(req.uri().path())
        .map_err(|e| GatewayError::BadRequest(path_error_text(e)))?
        .into_owned();
    let query = req.uri().query().map(str::to_owned);
    // Only validated values reach the access log, so a client cannot forge its fields;
    // and only when there is an access log to write.
    if proxy.access_log {
        ex.host.clone_from(&host);
        ex.path.clone_from(&canonical);
    }

    // Phase 3: the rule. The snapshot guard is dropped before any await.
    let (action, matched_prefix, policy, cert_required) = {
        let snapshot = proxy.snapshot.load();
        // A connection may carry requests for other hosts (HTTP/2 coalescing, or a
        // client that simply lies): each must belong to the certificate and client
        // check this connection's handshake used, or a host's mTLS could be skipped.
        // Checked on every request, not only when the host differs from the name the
        // handshake asked for: a replaced client CA changes the profile under an open
        // connection. A host with no certificate of its own may be asked for on any
        // connection.
        if let Some(tls) = &conn.tls {
            if snapshot.tls.misdirected(&host, tls.profile) {
                return Err(GatewayError::Misdirected);
            }
        }
        let cert_required = snapshot.tls.requires_client_cert(&host);
        let view = RequestView {
            host: &host,
            path: &canonical,
            method: req.method(),
            headers: req.headers(),
            query: query.as_deref(),
        };
        let found = snapshot.router.lookup(&view).ok_or(GatewayError::NoRoute)?;
        let policy = snapshot.policies.for_route(&found.action.route).cloned();
        (
            found.action.clone(),
            found.matched_prefix.map(str::to_owned),
            policy,
            cert_required,
        )
    };
    // Fields for this hop only go once the rule is found (a rule may match on
    // `Upgrade`) and before anything else reads a header: a client could otherwise
    // show the Policy and the cache a field (one `Vary` selects on, say) that the
    // backend never gets. The `Upgrade` asked for is kept aside to be sent on purpose;
    // h2c is refused, as after its 101 the client would speak HTTP/2 to the backend
    // directly, past every rule of this gateway.
    let trailers = headers::accepts_trailers(req.headers());
    let client_upgrade = req.version() == Version::HTTP_11;
    let upgrade = headers::strip_hop_by_hop(req.headers_mut())
        .filter(|_| client_upgrade)
        .filter(|proto| !proto.as_bytes().eq_ignore_ascii_case(b"h2c"));
    ex.route = Some(action.route.clone());
    // The client certificate requirement belongs to the host: every Route serving it,
    // and every connection carrying it, is held to it.
    match &conn.tls {
        Some(tls) => {
            if cert_required && tls.client_cert.is_none() {
                return Err(GatewayError::ClientCertRequired);
            }
            if let Some(https) = &action.https {
                ex.hsts.clone_from(&https.hsts);
            }
        }
        None => {
            if let Some((status, port)) = action.https.as_ref().and_then(|h| h.redirect) {
                let to_https = routing::RedirectAction {
                    scheme: Some("https".into()),
                    host: None,
                    port,
                    path: None,
                    status,
                };
                return Ok(redirect(
                    &to_https,
                    &raw_host,
                    &host,
                    &canonical,
                    query.as_deref(),
                    None,
                ));
            }
            if cert_required {
                return Err(GatewayError::ClientCertRequired);
            }
        }
    }

    // Phase 4: the action.
    let forward = match &action.kind {
        ActionKind::Redirect(r) => {
            return Ok(redirect(
                r,
                &raw_host,
                &host,
                &canonical,
                query.as_deref(),
                matched_prefix.as_deref(),
            ))
        }
        ActionKind::Forward(f) => Ok(f),
        // Policed below like a forward, then served by the aggregation.
        ActionKind::Bff(endpoint) => Err(endpoint),
    };

    // Judged on the headers as the client sent them, before any are rewritten.
    let client = client_address(conn.peer.ip(), req.headers(), &proxy.trusted_proxies);
    let mut claims = None;
    let mut verified = edge::Verified::default();
    if let Some(policy) = &policy {
        let facts = RequestFacts {
            method: &req.method().clone(),
            client,
            route: &action.route,
            query: query.as_deref(),
        };
        let origin = req.headers().get(header::ORIGIN).cloned();
        match policy::enforce(policy, &facts, req.headers_mut()).await {
            Ok(admission) => {
                if let Some(consumer) = &admission.consumer {
                    proxy
                        .metrics
                        .consumer_requests
                        .with_label_values(&[&action.route, consumer])
                        .inc();
                }
                if let Some(decision) = admission.rate_limit {
                    decision.record(&proxy.metrics);
                    ex.rate_limit = Some(decision);
                }
                claims = admission.claims.clone().map(|c| c.0);
                verified = edge::Verified::new(admission.consumer, admission.claims);
            }
            Err(Refusal::Preflight(headers)) => {
                let mut resp = Response::new(empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp.headers_mut().extend(headers);
                return Ok(resp);
            }
            Err(Refusal::Denied(denial)) => {
                ex.cors = policy.cors.clone().map(|c| (c, origin));
                proxy
                    .metrics
                    .policy_denials
                    .with_label_values(&[&action.route, denial.code])
                    .inc();
                return Err(GatewayError::Policy(Box::new(denial)));
            }
            Err(Refusal::RateLimited(decision)) => {
                ex.cors = policy.cors.clone().map(|c| (c, origin));
                decision.record(&proxy.metrics);
                let denial = Denial::rate_limited(&decision);
                proxy
                    .metrics
                    .policy_denials
                    .with_label_values(&[&action.route, denial.code])
                    .inc();
                ex.rate_limit = Some(decision);
                return Err(GatewayError::Policy(Box::new(denial)));
            }
        }
        ex.cors = policy.cors.clone().map(|c| (c, origin));
    }
    // The cache answers only what the Policy admitted.
    let edge_req = EdgeRequest {
        route: &action.route,
        rule: action.rule,
        method: req.method().clone(),
        https: conn.tls.is_some(),
        host: &host,
        raw_host: &raw_host,
        path: &canonical,
        query: query.as_deref(),
        verified: &verified,
        cacheable: forward.as_ref().map_or_else(|e| e.keyed_by_url(), |_| true),
    };
    let edge = match Edge::before_forward(
        policy.as_deref(),
        &edge_req,
        req.headers_mut(),
        &proxy.metrics,
    ) {
        Lookup::Answer(resp) => return Ok(resp),
        Lookup::Forward(edge) => edge,
    };

    let forward = match forward {
        Ok(f) => f,
        Err(endpoint) => {
            // Settled here so the access log carries the trace every call joins.
            ex.trace_id = Some(trace::propagate(req.headers_mut(), &ex.request_id));
            if let crate::bff::EndpointKind::PassThrough(p) = &endpoint.kind {
                ex.backend = Some(p.upstream.name.clone());
            }
            let call = aggregate::Call {
                path: &canonical,
                query: query.as_deref(),
                raw_host: &raw_host,
                request_id: &ex.request_id,
                claims,
            };
            let resp = aggregate::serve(proxy, conn, req, endpoint, call).await?;
            return Ok(edge.respond(resp));
        }
    };

    let body_limit = action.max_body_bytes.unwrap_or(proxy.limits.max_body_bytes);
    if let Some(len) = content_length(&req) {
        if len > body_limit {
            return Err(GatewayError::BodyTooLarge(body_limit));
        }
    }

    let new_path = match &forward.rewrite_path {
        None => canonical,
        Some(rw) => rewrite_path(rw, &canonical, matched_prefix.as_deref()),
    };
    // The upstream request: same method and body, new target and headers.
    let on_client_upgrade = client_upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    headers::strip_spoofable(&mut parts.headers);
    let proto = if conn.tls.is_some() { "https" } else { "http" };
    headers::set_forwarded(&mut parts.headers, conn.peer.ip(), proto, &raw_host);
    if let Some(cert) = conn.tls.as_ref().and_then(|t| t.client_cert.clone()) {
        parts.headers.insert(headers::X_FORWARDED_CLIENT_CERT, cert);
    }
    ex.trace_id = Some(trace::propagate(&mut parts.headers, &ex.request_id));
    parts.headers.insert(X_REQUEST_ID, ex.request_id.clone());
    let upstream_host = match &forward.rewrite_host {
        Some(h) => h.clone(),
        None => HeaderValue::from_str(&raw_host)
            .map_err(|_| GatewayError::BadRequest("invalid Host"))?,
    };
    parts.headers.insert(header::HOST, upstream_host);
    action.request_headers.apply(&mut parts.headers);
    if let Some(proto) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto.clone());
    }
    if parts.version == Version::HTTP_2 {
        join_cookies(&mut parts.headers);
    }
    let path_and_query = match query.as_deref() {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    };
    let rule_timeout = action.timeout.unwrap_or(proxy.limits.request_timeout);
    let timeout = grpc::deadline(&parts.headers, rule_timeout);
    let out = forward::Outgoing {
        parts,
        path_and_query,
        body: Some(body),
        body_limit,
        client,
        secure: conn.tls.is_some(),
        trailers,
        client_deadline: timeout < rule_timeout,
    };
    let deadline = ex.start + timeout;
    let delivered = forward::send(proxy, forward, &action.route, out, deadline, timeout).await;
    let forward::Delivered {
        response: mut resp,
        backend,
        session_cookie,
        guards,
    } = match delivered {
        Ok(d) => d,
        Err((err, backend)) => {
            ex.backend = backend;
            return Err(err);
        }
    };
    ex.backend = Some(backend);

    // Phase 5: the response.
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let (Some(on_client), Some(_)) = (on_client_upgrade, &upgrade) {
            let idle = forward.stream_idle.unwrap_or(proxy.limits.idle_timeout);
            return Ok(tunnel(resp, on_client, conn, idle, &action, guards));
        }
        return Err(GatewayError::BackendFailed(
            "unrequested protocol switch".into(),
        ));
    }
    headers::strip_hop_by_hop(resp.headers_mut());
    action.response_headers.apply(resp.headers_mut());
    let mut resp = edge.respond(forward::hold(resp, guards));
    if let Some(cookie) = session_cookie {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(match forward.stream_idle {
        Some(idle) => resp.map(|b| IdleTimeout::new(b, idle).boxed()),
        None => resp,
    })
}

/// Refuses HTTP/1 messages whose body length is ambiguous, the root of request
/// smuggling: both `Content-Length` and `Transfer-Encoding`, several `Content-Length`
/// values, or a transfer coding other than a lone `chunked`.
fn check_framing(
    req: &Request<Incoming>,
    conn: &ConnInfo,
    max_headers: usize,
) -> Result<(), GatewayError> {
    if req.version() >= Version::HTTP_2 {
        // HTTP/1 heads are counted by hyper; HTTP/2 ones only by size, so count here.
        if req.headers().len() > max_headers {
            return Err(GatewayError::TooManyHeaders(max_headers));
        }
        return Ok(());
    }
    // The shapes hyper resolves before the headers reach us; see `framing`.
    if let Verdict::Refuse(why) = conn.heads.judge(req.method(), req.uri()) {
        return Err(GatewayError::BadRequest(why));
    }
    let h = req.headers();
    let te = h.get_all(header::TRANSFER_ENCODING);
    let cl = h.get_all(header::CONTENT_LENGTH);
    let te_count = te.iter().count();
    let cl_count = cl.iter().count();
    if te_count > 0 && cl_count > 0 {
        return Err(GatewayError::BadRequest(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if cl_count > 1 {
        return Err(GatewayError::BadRequest("repeated Content-Length"));
    }
    if let Some(v) = cl.iter().next() {
        let ok = !v.is_empty() && v.as_bytes().iter().all(u8::is_ascii_digit);
        if !ok {
            return Err(GatewayError::BadRequest("malformed Content-Length"));
        }
    }
    if te_count > 1 {
        return Err(GatewayError::BadRequest("repeated Transfer-Encoding"));
    }
    if let Some(v) = te.iter().next() {
        if req.version() == Version::HTTP_10 || !v.as_bytes().eq_ignore_ascii_case(b"chunked") {
            return Err(GatewayError::BadRequest("unsupported Transfer-Encoding"));
        }
    }
    Ok(())
}

/// HTTP/2 may split `cookie` into several fields; HTTP/1.1 allows one (RFC 9113
/// §8.2.3), joined with "; ".
pub(super) fn join_cookies(headers: &mut http::HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.nth(1).is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, v);
    }
}

fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The host a request is for: the authority of an absolute-form or HTTP/2 target, else
/// the Host header.
fn request_host(req: &Request<Incoming>) -> Option<Cow<'_, str>> {
    if let Some(authority) = req.uri().authority() {
        if authority.as_str().contains('@') {
            return None;
        }
        return Some(Cow::Borrowed(authority.as_str()));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next()?;
    if hosts.next().is_some() {
        return None;
    }
    host.to_str().ok().map(Cow::Borrowed)
}

fn path_error_text(e: path::PathError) -> &'static str {
    match e {
        path::PathError::NotAbsolute => "request target must be an absolute path",
        path::PathError::BadEncoding => "malformed percent-encoding in path",
        path::PathError::EncodedSlash => "encoded slash in path",
        path::PathError::Backslash => "backslash in path",
        path::PathError::Nul => "NUL in path",
        path::PathError::DotSegmentParameters => "dot segment with parameters in path",
    }
}

/// Applies a path rewrite and brings the result back to canonical form.
pub(super) fn rewrite_path(
    rw: &routing::PathRewrite,
    path: &str,
    matched_prefix: Option<&str>,
) -> String {
    let rewritten = match rw {
        routing::PathRewrite::Full(p) => p.clone(),
        routing::PathRewrite::Prefix(replacement) => {
            let prefix = matched_prefix.unwrap_or("/");
            let rest = if prefix == "/" {
                path
            } else {
                &path[prefix.len()..]
            };
            match (replacement.ends_with('/'), rest.starts_with('/')) {
                (true, true) => format!("{}{}", replacement, &rest[1..]),
                (false, false) if !rest.is_empty() => format!("{replacement}/{rest}"),
                _ => format!("{replacement}{rest}"),
            }
        }
    };
    // Replacements are canonical and so is the rest of the path, so this only merges
    // what the join produced; it cannot fail on canonical parts.
    path::canonicalize(&rewritten)
        .map(Cow::into_owned)
        .unwrap_or(rewritten)
}

fn redirect(
    r: &routing::RedirectAction,
    raw_host: &str,
    host: &str,
    path: &str,
    query: Option<&str>,
    matched_prefix: Option<&str>,
) -> Response<ProxyBody> {
    let scheme = r.scheme.as_deref().unwrap_or("http");
    let host = r.host.as_deref().unwrap_or(host);
    let new_path = match &r.path {
        Some(rw) => rewrite_path(rw, path, matched_prefix),
        None => path.to_owned(),
    };
    // A port is written only when asked for, or when the request named one that is not
    // the scheme's default.
    // The port of the authority the request was routed by, never of another header.
    let request_port = raw_host
        .rsplit_once(':')
        .filter(|(h, _)| !h.ends_with(':'))
        .and_then(|(_, p)| p.parse::<u16>().ok());
    let port = r.port.or(if r.scheme.is_some() {
        None
    } else {
        request_port
    });
    let default_port = if scheme == "https" { 443 } else { 80 };
    let mut location = format!("{scheme}://{host}");
    if let Some(p) = port.filter(|p| *p != default_port) {
        location.push_str(&format!(":{p}"));
    }
    location.push_str(&new_path);
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = Response::new(empty());
    *resp.status_mut() = r.status;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Answers 101 to the client and joins the two upgraded connections once both sides
/// have switched. Only a backend's 101 gets here, so a refused upgrade never tunnels.
fn tunnel(
    mut upstream: Response<Incoming>,
    on_client: hyper::upgrade::OnUpgrade,
    conn: &ConnInfo,
    idle_timeout: std::time::Duration,
    action: &RuleAction,
    guards: forward::Guards,
) -> Response<ProxyBody> {
    let on_upstream = hyper::upgrade::on(&mut upstream);
    let activity = conn.activity.clone();
    let route = action.route.clone();
    tokio::spawn(async move {
        // The tunnel holds its connection slot for as long as it lasts.
        let _guards = guards;
        let (client, backend) = match tokio::try_join!(on_client, on_upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, %route, "upgrade failed");
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut backend = hyper_util::rt::TokioIo::new(backend);
        let copy = tokio::io::copy_bidirectional(&mut client, &mut backend);
        tokio::pin!(copy);
        // The client side moves bytes through the tracked socket, so its activity is
        // the tunnel's.
        let mut tick = tokio::time::interval(idle_timeout / 4);
        loop {
            tokio::select! {
                _ = &mut copy => break,
                _ = tick.tick() => {
                    if activity.idle_for() >= idle_timeout {
                        tracing::debug!(%route, "closing idle tunnel");
                        break;
                    }
                }
            }
        }
    });
    let (mut parts, _) = upstream.into_parts();
    let upgrade = parts.headers.get(header::UPGRADE).cloned();
    headers::strip_hop_by_hop(&mut parts.headers);
    action.response_headers.apply(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(u) = upgrade {
        parts.headers.insert(header::UPGRADE, u);
    }
    Response::from_parts(parts, empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrites() {
        let rw = |repl: &str, path: &str, prefix: &str| {
            rewrite_path(
                &routing::PathRewrite::Prefix(repl.into()),
                path,
                Some(prefix),
            )
        };
        assert_eq!(rw("/v2", "/api/users", "/api"), "/v2/users");
        assert_eq!(rw("/v2", "/api", "/api"), "/v2");
        assert_eq!(rw("/", "/api/users", "/api"), "/users");
        assert_eq!(rw("/", "/api", "/api"), "/");
        assert_eq!(rw("/v2/", "/api/users", "/api"), "/v2/users");
        assert_eq!(rw("/new", "/x/y", "/"), "/new/x/y");
        assert_eq!(rw("/v2", "/api/", "/api"), "/v2/");
    }
}
