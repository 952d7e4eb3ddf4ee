//! BFF endpoints at request time: a pass-through to one backend, or an aggregate of
//! several calls merged into one JSON answer.
//!
//! The handler calls [`serve`] once the endpoint's own Policies admitted the request and
//! its trace context is settled, so a pass-through and every part join one trace.
//! An aggregate runs its parts stage by stage (parts without `after` together, then the
//! parts waiting for them), each under its own timeout; the first required part that
//! fails ends it, cancelling the calls still running. Every call is built from scratch:
//! it carries the caller's `Authorization`, the forwarding headers, the request id, the
//! trace context and the client name, which the gateway sets and no client header can
//! override. A part that names a `route` goes through the routing table and that Route's
//! Policies, judged on the original caller's address, so an aggregate is never a way
//! around them.

use super::{
    body::{empty, full, BoxError, ProxyBody},
    conn::ConnInfo,
    error::GatewayError,
    forward,
    handler::{join_cookies, rewrite_path},
    headers::{self, X_FORWARDED_FOR, X_REQUEST_ID},
    trace,
    transport::SendError,
    Proxy,
};
use crate::{
    bff::{
        template::{Escape, FillError, Inputs},
        Endpoint, EndpointKind, Part, PassThrough, Target, MAX_PART_BODY_BYTES,
    },
    metrics,
    policy::{self, access::client_address, Denial, Refusal, RequestFacts},
    routing::{path::canonicalize, ActionKind, RequestView, Transport},
};
use futures_util::{stream::FuturesUnordered, StreamExt};
use http::{header, uri, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value};
use std::{collections::HashMap, net::IpAddr, time::Duration};

/// The client name of the BFF a call is made for. Set by the gateway on every call; a
/// copy sent by the client is removed.
pub const X_PORTCULLIS_CLIENT: HeaderName = HeaderName::from_static("x-portcullis-client");

/// Names the optional parts left out of an aggregate's answer.
pub const X_PORTCULLIS_PARTIAL: HeaderName = HeaderName::from_static("x-portcullis-partial");

/// What the handler learned about the request before handing it over.
pub(super) struct Call<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The Host as the client sent it, for forwarding headers.
    pub raw_host: &'a str,
    pub request_id: &'a HeaderValue,
    /// The claims a Policy of the BFF verified.
    pub claims: Option<Map<String, Value>>,
}

/// Everything a part's call is built from, shared by the parts of one request.
struct Context<'a> {
    proxy: &'a Proxy,
    endpoint: &'a Endpoint,
    params: Vec<(String, String)>,
    call: &'a Call<'a>,
    /// The client's headers, after the BFF's Policies ran.
    client_headers: &'a HeaderMap,
    peer: IpAddr,
    /// The caller's address as Policies see it.
    client_ip: IpAddr,
    proto: &'static str,
    /// The caller's certificate as `x-forwarded-client-cert` has it, when it sent one,
    /// and the TLS profile of the connection that checked it.
    client_cert: Option<(HeaderValue, u64)>,
}

/// Why a part gave no answer.
#[derive(Debug)]
enum PartError {
    Timeout(Duration),
    Failed(String),
    /// The Policy of the Route the part called refused it.
    Refused(Denial),
}

/// Serves a request for a BFF endpoint.
pub(super) async fn serve(
    proxy: &Proxy,
    conn: &ConnInfo,
    req: Request<Incoming>,
    endpoint: &Endpoint,
    call: Call<'_>,
) -> Result<Response<ProxyBody>, GatewayError> {
    let result = match &endpoint.kind {
        EndpointKind::PassThrough(p) => pass_through(proxy, conn, req, endpoint, p, &call).await,
        EndpointKind::Aggregate(parts) => {
            let (head, _) = req.into_parts();
            let ctx = Context {
                proxy,
                endpoint,
                params: endpoint.params(call.path),
                call: &call,
                client_headers: &head.headers,
                peer: conn.peer.ip(),
                client_ip: client_address(conn.peer.ip(), &head.headers, &proxy.trusted_proxies),
                proto: if conn.tls.is_some() { "https" } else { "http" },
                client_cert: conn
                    .tls
                    .as_ref()
                    .and_then(|t| Some((t.client_cert.clone()?, t.profile))),
            };
            Ok(aggregate(&ctx, parts).await)
        }
    };
    let status = match &result {
        Ok(resp) => resp.status(),
        Err(e) => e.status(),
    };
    let bff = crate::bff::label(&endpoint.bff);
    proxy
        .metrics
        .bff_requests
        .with_label_values(&[
            bff.as_str(),
            &endpoint.client,
            metrics::status_class(status),
        ])
        .inc();
    result
}

/// Sends one request to one backend and waits for its response headers. The one place
/// BFF calls leave the gateway.
async fn send(
    proxy: &Proxy,
    transport: &Transport,
    req: Request<ProxyBody>,
    timeout: Duration,
) -> Result<Response<Incoming>, PartError> {
    match tokio::time::timeout(timeout, proxy.transports.send(transport, req)).await {
        Err(_) => Err(PartError::Timeout(timeout)),
        Ok(Err(SendError::Refused(why))) => Err(PartError::Failed(why)),
        Ok(Err(SendError::Failed(err))) => {
            let mut text = err.to_string();
            if let Some(cause) = std::error::Error::source(&err) {
                text = format!("{text}: {cause}");
            }
            Err(PartError::Failed(text))
        }
        Ok(Ok(resp)) => Ok(resp),
    }
}

// === pass-through ===

async fn pass_through(
    proxy: &Proxy,
    conn: &ConnInfo,
    req: Request<Incoming>,
    endpoint: &Endpoint,
    p: &PassThrough,
    call: &Call<'_>,
) -> Result<Response<ProxyBody>, GatewayError> {
    let limit = proxy.limits.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(GatewayError::BodyTooLarge(limit));
    }
    let path = match &p.path {
        None => call.path.to_string(),
        Some(t) => {
            let params = endpoint.params(call.path);
            let inputs = Inputs {
                params: &params,
                query: call.query,
                headers: Some(req.headers()),
                claims: call.claims.as_ref(),
                parts: None,
            };
            let filled = t.fill(&inputs, Escape::Component).map_err(|e| match e {
                FillError::Missing(_) => {
                    GatewayError::BadRequest("a value the endpoint's path needs is missing")
                }
                FillError::DotSegment => {
                    GatewayError::BadRequest("a value would make a '.' or '..' path segment")
                }
            })?;
            canonicalize(&filled)
                .map(|c| c.into_owned())
                .map_err(|_| GatewayError::BadRequest("the endpoint's path is not valid"))?
        }
    };
    let authority = p
        .upstream
        .next_endpoint()
        .ok_or(GatewayError::NoEndpoints)?;

    let (mut parts, body) = req.into_parts();
    // Upgrades are not passed through: a BFF answers plain requests.
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::strip_spoofable(&mut parts.headers);
    let proto = if conn.tls.is_some() { "https" } else { "http" };
    headers::set_forwarded(&mut parts.headers, conn.peer.ip(), proto, call.raw_host);
    parts.headers.insert(X_REQUEST_ID, call.request_id.clone());
    parts
        .headers
        .insert(X_PORTCULLIS_CLIENT, client_value(endpoint));
    // The backend hears the host the client asked for, as from a Route, whichever
    // version the client spoke; an HTTP/2 client's split cookies become one field.
    let host = HeaderValue::from_str(call.raw_host)
        .map_err(|_| GatewayError::BadRequest("invalid Host"))?;
    parts.headers.insert(header::HOST, host);
    if parts.version == http::Version::HTTP_2 {
        join_cookies(&mut parts.headers);
    }
    parts.uri = upstream_uri(authority, &path, call.query)
        .map_err(|_| GatewayError::BadRequest("request target cannot be forwarded"))?;
    parts.version = http::Version::HTTP_11;
    let body = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .map_err(BoxError::from)
        .boxed();
    let timeout = p.timeout.unwrap_or(proxy.limits.request_timeout);
    let mut resp = match send(
        proxy,
        &Transport::default(),
        Request::from_parts(parts, body),
        timeout,
    )
    .await
    {
        Ok(resp) => resp,
        Err(PartError::Timeout(t)) => return Err(GatewayError::Timeout(t)),
        Err(PartError::Failed(why)) | Err(PartError::Refused(Denial { message: why, .. })) => {
            return Err(GatewayError::BackendFailed(why))
        }
    };
    headers::strip_hop_by_hop(resp.headers_mut());
    Ok(resp.map(|b| b.map_err(BoxError::from).boxed()))
}

// === aggregate ===

async fn aggregate(ctx: &Context<'_>, parts: &[Part]) -> Response<ProxyBody> {
    let mut results: Vec<Option<Result<Value, PartError>>> =
        (0..parts.len()).map(|_| None).collect();
    let mut answers: HashMap<String, Value> = HashMap::new();
    // Only answers a later part reads (through its `after` chain) are kept aside, so a
    // large answer is not held twice for nothing.
    let mut read_later = vec![false; parts.len()];
    for part in parts {
        let mut waits = part.after;
        while let Some(i) = waits {
            read_later[i] = true;
            waits = parts[i].after;
        }
    }
    for stage in 0..ctx.endpoint.stages() {
        let calls = parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.stage == stage)
            .map(|(i, part)| {
                let waited_failed = part
                    .after
                    .filter(|&a| matches!(results[a], Some(Err(_))))
                    .map(|a| parts[a].name.clone());
                let answers = &answers;
                async move {
                    let outcome = match waited_failed {
                        Some(name) => Err(PartError::Failed(format!(
                            "part {name}, which it waits for, failed"
                        ))),
                        None => run_part(ctx, part, answers).await,
                    };
                    (i, outcome)
                }
            });
        let mut running: FuturesUnordered<_> = calls.collect();
        let mut done = Vec::new();
        let mut fatal = false;
        while let Some((i, outcome)) = running.next().await {
            fatal = parts[i].required && outcome.is_err();
            done.push((i, outcome));
            // A required part failed: nothing else can change the answer, so the
            // calls still running are dropped, which cancels them.
            if fatal {
                break;
            }
        }
        drop(running);
        for (i, outcome) in done {
            record_part(ctx, &parts[i], &outcome);
            if let (Ok(v), true) = (&outcome, read_later[i]) {
                answers.insert(parts[i].name.clone(), v.clone());
            }
            results[i] = Some(outcome);
        }
        if fatal {
            break;
        }
    }

    let mut body = Map::new();
    let mut errors = Map::new();
    for (part, result) in parts.iter().zip(results) {
        match result {
            Some(Ok(value)) => {
                let value = match &part.fields {
                    Some(selection) => selection.apply(value),
                    None => value,
                };
                body.insert(part.name.clone(), value);
            }
            Some(Err(err)) if part.required => return part_failure(ctx, part, err),
            Some(Err(err)) => {
                errors.insert(part.name.clone(), Value::String(describe(&err)));
            }
            // Not run, because a required part failed first.
            None => {}
        }
    }
    let partial: Vec<&str> = errors.keys().map(String::as_str).collect();
    let partial = HeaderValue::from_str(&partial.join(", ")).ok();
    if !errors.is_empty() {
        body.insert("errors".into(), Value::Object(errors));
    }
    let mut resp = json_response(StatusCode::OK, &Value::Object(body));
    if let Some(names) = partial.filter(|v| !v.is_empty()) {
        resp.headers_mut().insert(X_PORTCULLIS_PARTIAL, names);
    }
    resp
}

/// One part's call, its answer read and checked, under the part's timeout.
async fn run_part(
    ctx: &Context<'_>,
    part: &Part,
    answers: &HashMap<String, Value>,
) -> Result<Value, PartError> {
    match tokio::time::timeout(part.timeout, call_part(ctx, part, answers)).await {
        Err(_) => Err(PartError::Timeout(part.timeout)),
        Ok(result) => result,
    }
}

async fn call_part(
    ctx: &Context<'_>,
    part: &Part,
    answers: &HashMap<String, Value>,
) -> Result<Value, PartError> {
    let inputs = Inputs {
        params: &ctx.params,
        query: ctx.call.query,
        headers: Some(ctx.client_headers),
        claims: ctx.call.claims.as_ref(),
        parts: Some(answers),
    };
    let target = part
        .path
        .fill(&inputs, Escape::Component)
        .map_err(|e| PartError::Failed(e.to_string()))?;
    let (raw_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target.as_str(), None),
    };
    let path = canonicalize(raw_path)
        .map_err(|e| PartError::Failed(format!("path {raw_path:?}: {e}")))?
        .into_owned();

    let mut headers = identity_headers(ctx);
    for (name, value) in &part.headers {
        // A header with nothing to say is left out, so that what the callee requires
        // (an API key, say) is judged by its own Policy.
        let Ok(v) = value.fill(&inputs, Escape::Raw) else {
            continue;
        };
        let v = HeaderValue::from_str(&v).map_err(|_| {
            PartError::Failed(format!("header {name} has a value a header cannot carry"))
        })?;
        headers.insert(name.clone(), v);
    }

    match &part.target {
        Target::Upstream(upstream) => {
            let endpoint = upstream.next_endpoint().ok_or_else(|| {
                PartError::Failed(format!("{} has no endpoint to send to", upstream.name))
            })?;
            let req = build_request(part, endpoint, &path, query, headers)?;
            let resp = send(ctx.proxy, &Transport::default(), req, part.timeout).await?;
            read_json(resp).await
        }
        Target::Route { host } => through_route(ctx, part, host, &path, query, headers).await,
    }
}

/// Dispatches a call to a host of this gateway: its rule, then its Policies, then its
/// rewrites and header filters, and then the rule's balancing, endpoint health,
/// connection limits and retries, as for a client's request.
async fn through_route(
    ctx: &Context<'_>,
    part: &Part,
    host: &str,
    path: &str,
    query: Option<&str>,
    mut headers: HeaderMap,
) -> Result<Value, PartError> {
    let (action, matched_prefix, policy, vouched) = {
        let snapshot = ctx.proxy.snapshot.load();
        // A host that requires a client certificate requires it of every caller,
        // through an aggregate too, checked by that host's own CA: one another host of
        // this gateway accepted vouches for nothing here.
        let vouched = ctx
            .client_cert
            .as_ref()
            .is_some_and(|(_, profile)| snapshot.tls.client_ca_matches(host, *profile));
        if !vouched && snapshot.tls.requires_client_cert(host) {
            return Err(PartError::Refused(Denial::new(
                StatusCode::FORBIDDEN,
                "client_certificate_required",
                format!("{host} requires a client certificate its own CA issued, sent over HTTPS"),
            )));
        }
        let view = RequestView {
            host,
            path,
            method: &part.method,
            headers: &headers,
            query,
        };
        let found = snapshot
            .router
            .lookup(&view)
            .ok_or_else(|| PartError::Failed(format!("no route for {host}{path}")))?;
        let policy = snapshot.policies.for_route(&found.action.route).cloned();
        (
            found.action.clone(),
            found.matched_prefix.map(str::to_owned),
            policy,
            vouched,
        )
    };
    let ActionKind::Forward(forward) = &action.kind else {
        return Err(PartError::Failed(format!(
            "{host}{path} is not served by a forwarding Route rule"
        )));
    };
    if let Some(policy) = &policy {
        let facts = RequestFacts {
            method: &part.method,
            client: ctx.client_ip,
            route: &action.route,
            query,
        };
        match policy::enforce(policy, &facts, &mut headers).await {
            Ok(_) => {}
            Err(Refusal::Denied(d)) => return Err(PartError::Refused(d)),
            Err(Refusal::RateLimited(decision)) => {
                return Err(PartError::Refused(Denial::rate_limited(&decision)))
            }
            Err(Refusal::Preflight(_)) => {
                return Err(PartError::Failed("answered as a CORS preflight".into()))
            }
        }
    }
    let path = match &forward.rewrite_path {
        Some(rw) => rewrite_path(rw, path, matched_prefix.as_deref()),
        None => path.to_string(),
    };
    let host_value = match &forward.rewrite_host {
        Some(h) => h.clone(),
        None => {
            HeaderValue::from_str(host).map_err(|_| PartError::Failed("invalid host".into()))?
        }
    };
    headers.insert(header::HOST, host_value);
    // Only a certificate that host's own CA checked is vouched for to its backends.
    if let Some((cert, _)) = ctx.client_cert.as_ref().filter(|_| vouched) {
        headers.insert(headers::X_FORWARDED_CLIENT_CERT, cert.clone());
    }
    action.request_headers.apply(&mut headers);

    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    // The part's own timeout bounds every try; the rule's `request` timeout too, when
    // it is shorter.
    let rule_timeout = action.timeout.unwrap_or(ctx.proxy.limits.request_timeout);
    let timeout = part.timeout.min(rule_timeout);
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = part.method.clone();
    // The target as the rule sees it, for hashing on a query parameter.
    parts.uri = path_and_query
        .parse()
        .map_err(|_| PartError::Failed(format!("{path_and_query:?} cannot be sent")))?;
    parts.headers = headers;
    let out = forward::Outgoing {
        parts,
        path_and_query,
        body: None,
        body_limit: 0,
        client: ctx.client_ip,
        secure: false,
        trailers: false,
        // A part that gives up sooner than the rule would says nothing of the
        // endpoint's health, as a client's shorter deadline does not.
        client_deadline: part.timeout < rule_timeout,
    };
    let deadline = std::time::Instant::now() + timeout;
    let delivered = forward::send(ctx.proxy, forward, &action.route, out, deadline, timeout)
        .await
        .map_err(|(err, _)| match err {
            GatewayError::Timeout(t) => PartError::Timeout(t),
            other => PartError::Failed(format!("{host}: {other}")),
        })?;
    // The connection slot is held until the answer is read.
    let _guards = delivered.guards;
    read_json(delivered.response).await
}

fn build_request(
    part: &Part,
    authority: &uri::Authority,
    path: &str,
    query: Option<&str>,
    headers: HeaderMap,
) -> Result<Request<ProxyBody>, PartError> {
    let uri = upstream_uri(authority, path, query)
        .map_err(|_| PartError::Failed(format!("{path:?} cannot be sent")))?;
    let mut req = Request::new(empty());
    *req.method_mut() = part.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

/// The headers every call carries, set by the gateway alone.
fn identity_headers(ctx: &Context<'_>) -> HeaderMap {
    let client = ctx.client_headers;
    let mut h = HeaderMap::new();
    if let Some(auth) = client.get(header::AUTHORIZATION) {
        h.insert(header::AUTHORIZATION, auth.clone());
    }
    for v in client.get_all(&X_FORWARDED_FOR) {
        h.append(X_FORWARDED_FOR, v.clone());
    }
    headers::set_forwarded(&mut h, ctx.peer, ctx.proto, ctx.call.raw_host);
    for name in [headers::TRACEPARENT, headers::TRACESTATE] {
        if let Some(v) = client.get(&name) {
            h.insert(name, v.clone());
        }
    }
    trace::propagate(&mut h, ctx.call.request_id);
    h.insert(X_REQUEST_ID, ctx.call.request_id.clone());
    h.insert(X_PORTCULLIS_CLIENT, client_value(ctx.endpoint));
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    h
}

/// The answer's body as JSON, or why it is not one.
async fn read_json(resp: Response<Incoming>) -> Result<Value, PartError> {
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = Limited::new(resp.into_body(), MAX_PART_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| PartError::Failed(format!("reading the answer failed: {e}")))?
        .to_bytes();
    if !status.is_success() {
        return Err(PartError::Failed(format!("answered {}", status.as_u16())));
    }
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json" || essence.ends_with("+json");
    if !is_json {
        let shown = if essence.is_empty() {
            "no content type"
        } else {
            essence.as_str()
        };
        return Err(PartError::Failed(format!("answered {shown}, not JSON")));
    }
    serde_json::from_slice(&body)
        .map_err(|e| PartError::Failed(format!("answered malformed JSON: {e}")))
}

fn record_part(ctx: &Context<'_>, part: &Part, outcome: &Result<Value, PartError>) {
    let result = match outcome {
        Ok(_) => "ok",
        Err(PartError::Timeout(_)) => "timeout",
        Err(PartError::Refused(_)) => "refused",
        Err(PartError::Failed(_)) => "failed",
    };
    if let Err(err) = outcome {
        tracing::debug!(
            request_id = ?ctx.call.request_id,
            bff = %ctx.endpoint.bff,
            part = %part.name,
            error = %describe(err),
            "part failed"
        );
    }
    let bff = crate::bff::label(&ctx.endpoint.bff);
    ctx.proxy
        .metrics
        .bff_part_calls
        .with_label_values(&[bff.as_str(), &ctx.endpoint.client, &part.name, result])
        .inc();
}

fn describe(err: &PartError) -> String {
    match err {
        PartError::Timeout(t) => format!("no answer within {}", humantime::format_duration(*t)),
        PartError::Failed(why) => why.clone(),
        PartError::Refused(d) => format!(
            "refused by a Policy ({} {}): {}",
            d.status.as_u16(),
            d.code,
            d.message
        ),
    }
}

/// The answer when a required part failed: 504 for a timeout, the refusal's own status
/// when a Policy refused the call (so a caller without credentials learns it needs some),
/// and 502 otherwise. The body names the part.
fn part_failure(ctx: &Context<'_>, part: &Part, err: PartError) -> Response<ProxyBody> {
    let (status, code) = match &err {
        PartError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "part_timeout"),
        PartError::Failed(_) => (StatusCode::BAD_GATEWAY, "part_failed"),
        PartError::Refused(d) => (d.status, d.code),
    };
    let body = serde_json::json!({
        "error": code,
        "status": status.as_u16(),
        "part": part.name,
        "message": format!("part {}: {}", part.name, describe(&err)),
        "requestId": ctx.call.request_id.to_str().unwrap_or_default(),
    });
    let mut resp = json_response(status, &body);
    if let PartError::Refused(d) = err {
        for (name, value) in d.headers {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

fn json_response(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn client_value(endpoint: &Endpoint) -> HeaderValue {
    // Client names are checked to be lower-case letters, digits and '-'.
    HeaderValue::from_str(&endpoint.client).unwrap_or(HeaderValue::from_static("unknown"))
}

fn upstream_uri(
    authority: &uri::Authority,
    path: &str,
    query: Option<&str>,
) -> Result<Uri, http::Error> {
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    Uri::builder()
        .scheme(uri::Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query(pq)
        .build()
}
