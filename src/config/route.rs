//! The `Route` resource: which requests go where.

use super::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A lower-case DNS name, optionally with a leading `*.` label. The compile step checks
/// the same, case-insensitively.
const HOST_PATTERN: &str =
    r"^(\*\.)?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*$";

/// Routes requests for some hosts to backends, rule by rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.tls) || (has(self.hosts) && size(self.hosts) > 0)",
    "message": "tls needs at least one host"
}]))]
pub struct RouteSpec {
    /// Host names this Route serves: exact (`api.example.com`) or with a leading
    /// wildcard label (`*.example.com`, which matches one or more labels). Empty means
    /// every host, at the lowest host precedence.
    #[serde(default)]
    #[schemars(length(max = 32), inner(regex(pattern = HOST_PATTERN)))]
    pub hosts: Vec<String>,
    /// The rules, tried in the documented precedence order.
    #[schemars(length(min = 1, max = 64))]
    pub rules: Vec<RouteRule>,
    /// HTTPS for every host of this Route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RouteTls>,
}

/// The certificate of a Route's hosts and what HTTPS means for them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTls {
    /// A Secret in the Route's namespace holding `tls.crt` (the chain, leaf first) and
    /// `tls.key`, as a `kubernetes.io/tls` Secret does. In file mode, the folder of that
    /// name under `--secrets-dir`, laid out like a mounted Secret.
    pub certificate_ref: SecretRef,
    /// Answer plain-HTTP requests with a redirect to HTTPS instead of serving them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_redirect: Option<HttpsRedirect>,
    /// Send `Strict-Transport-Security` on HTTPS responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<Hsts>,
    /// Ask clients for a certificate signed by a given CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificate>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpsRedirect {
    /// 301, 302, 307 or 308 (default, which keeps the method and body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [301, 302, 307, 308]))]
    pub status_code: Option<u16>,
    /// The HTTPS port clients reach; written into the location unless it is 443.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hsts {
    /// How long browsers keep to HTTPS, in seconds; 0 tells them to forget.
    #[schemars(range(max = 63_072_000))]
    pub max_age_seconds: u64,
    #[serde(default)]
    pub include_sub_domains: bool,
    #[serde(default)]
    pub preload: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientCertificate {
    /// A Secret whose `ca.crt` holds the CA certificates that sign accepted client
    /// certificates (file mode: `ca.crt` in that folder).
    pub ca_ref: SecretRef,
    #[serde(default)]
    pub mode: ClientCertificateMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ClientCertificateMode {
    /// The handshake fails without a valid client certificate, and plain HTTP is
    /// refused with 403.
    #[default]
    Require,
    /// A certificate is asked for; one that is sent must be valid. Requests without
    /// one reach the backend with no client certificate header.
    Optional,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.filters) || !has(self.filters.redirect) || !has(self.backends) || size(self.backends) == 0",
    "message": "a rule with a redirect has no backends"
}, {
    "rule": "(has(self.filters) && has(self.filters.redirect)) || (has(self.backends) && size(self.backends) > 0)",
    "message": "at least one backend is required"
}]))]
pub struct RouteRule {
    /// Alternatives: the rule applies when any one of them matches. No entry means every
    /// request (a `/` prefix).
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub matches: Vec<RouteMatch>,
    #[serde(default)]
    pub filters: Filters,
    /// Where matching requests go. Empty is allowed only with a redirect.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub backends: Vec<Backend>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// How each backend's endpoints share the rule's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// When and how often a failed attempt is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Largest request body accepted, in bytes; larger bodies get 413. Defaults to the
    /// listener's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_request_body_bytes: Option<u64>,
}

/// Conditions that must all hold for a request to match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// An HTTP method such as `GET`; any method when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z]+$"))]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub query_params: Vec<ValueMatch>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.type) && self.type == 'RegularExpression') || self.value.startsWith('/')",
    "message": "an Exact or PathPrefix path must start with '/'"
}]))]
pub struct PathMatch {
    #[serde(rename = "type", default)]
    pub kind: PathMatchType,
    #[schemars(length(min = 1, max = 1024))]
    pub value: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PathMatchType {
    /// The whole canonical path equals the value.
    Exact,
    /// The path starts with the value at a segment boundary: `/api` matches `/api` and
    /// `/api/x` but not `/apix`.
    #[default]
    PathPrefix,
    /// The whole canonical path matches the regular expression (RE2-like syntax).
    RegularExpression,
}

/// A header or query parameter condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueMatch {
    /// Header names compare case-insensitively, query parameter names exactly.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: ValueMatchType,
    pub value: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ValueMatchType {
    #[default]
    Exact,
    /// The whole value matches the regular expression.
    RegularExpression,
}

/// What the gateway changes on the way through. Each filter is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    /// Answer with a redirect instead of forwarding; excludes `backends` and `urlRewrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
}

/// Header edits, applied in the order remove, set, add.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    /// Replace any existing value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    /// Append a value, keeping existing ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderValue {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    /// Replaces the Host header sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
}

/// Exactly one of the two fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.replaceFullPath) != has(self.replacePrefixMatch)",
    "message": "set exactly one of replaceFullPath and replacePrefixMatch"
}]))]
pub struct PathRewrite {
    /// The new path, whatever matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    /// Replaces the part matched by a `PathPrefix` match; the rest of the path is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redirect {
    /// `http` or `https`; the request's scheme when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["http", "https"]))]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [301, 302, 303, 307, 308]))]
    pub status_code: Option<u16>,
}

/// A destination: a static `host:port` (file mode) or a Service port (cluster mode).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.address), has(self.addresses) && size(self.addresses) > 0, has(self.service)].filter(x, x).size() == 1",
    "message": "set exactly one of address, addresses and service"
}, {
    "rule": "!has(self.mesh) || !self.mesh || has(self.service)",
    "message": "mesh needs a service backend"
}, {
    "rule": "!has(self.mesh) || !self.mesh || !has(self.tls)",
    "message": "mesh and tls exclude each other: the mesh secures the hop"
}, {
    "rule": "!has(self.tls) || !has(self.protocol) || self.protocol != 'H2C'",
    "message": "H2C is plain text; over tls, HTTP/2 is chosen by ALPN"
}]))]
pub struct Backend {
    /// `host:port` of a fixed upstream, for configurations without a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Several `host:port` of one fixed upstream, balanced as a Service's endpoints are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub addresses: Vec<String>,
    /// A Service in the Route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,
    /// Share of the rule's traffic, relative to the other backends. Default 1; 0 sends
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1_000_000))]
    pub weight: Option<u32>,
    /// Taking failing endpoints out of rotation, and checking them actively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Most requests in flight to this backend at once; for HTTP/1 that is the number of
    /// connections in use. Further requests wait (see `maxPendingRequests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<u32>,
    /// Most requests waiting for one of `maxConnections`; any more get 503 at once.
    /// Default 0 when `maxConnections` is set: no waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// How requests travel to the backend: `HTTP1`, or `H2C` (HTTP/2 in plain text with
    /// prior knowledge, as gRPC servers speak it). By default, `H2C` when the Service
    /// port's `appProtocol` is `kubernetes.io/h2c`, else `HTTP1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<BackendProtocol>,
    /// Connect to the backend over TLS; HTTP/2 or HTTP/1.1 as the backend picks by ALPN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTls>,
    /// Send to the Service's cluster DNS name instead of its endpoints, with `Host` and
    /// `l5d-dst-override` set to that name, so a service mesh (Linkerd, Istio) balances
    /// and secures the hop. Service backends only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum BackendProtocol {
    /// HTTP/1.1.
    #[serde(rename = "HTTP1")]
    Http1,
    /// HTTP/2 over plain TCP, without an upgrade (prior knowledge).
    #[serde(rename = "H2C")]
    H2c,
}

/// TLS from the gateway to a backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendTls {
    /// A Secret (file mode: a `--secrets-dir` folder) whose `ca.crt` holds the CA
    /// certificates the backend's certificate must chain to. Without it, the system's
    /// trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_ref: Option<SecretRef>,
    /// A Secret (or folder) whose `tls.crt` and `tls.key` the gateway presents to
    /// backends that ask for a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_ref: Option<SecretRef>,
    /// The name the backend's certificate must be valid for, also sent as SNI. By
    /// default the Service's cluster DNS name, or the host of `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub server_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRef {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    pub port: PortRef,
}

/// A Service port by number or by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl JsonSchema for PortRef {
    fn schema_name() -> Cow<'static, str> {
        "PortRef".into()
    }

    /// Kubernetes' int-or-string form, which a structural schema accepts.
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A Service port by number or by name.",
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer", "minimum": 1, "maximum": 65535}, {"type": "string"}]
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// Time allowed from the start of the request until the backend's response headers
    /// arrive, all tries and waits between them included; 504 after that. A response body
    /// that is still streaming is not cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// Time one try has for the response headers before it counts as failed (and may be
    /// retried). Defaults to the whole request's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try: Option<Duration>,
    /// A streaming response (Server-Sent Events, a long download) or a WebSocket with no
    /// data in either direction for this long is closed. Each byte resets it, so a live
    /// stream is never cut. Defaults to the listener's idle timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle: Option<Duration>,
}

/// The choice of endpoint within a backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.type) && self.type == 'ConsistentHash') == has(self.hashOn)",
    "message": "hashOn is set exactly when type is ConsistentHash"
}]))]
pub struct LoadBalancer {
    #[serde(rename = "type", default)]
    pub kind: LoadBalancerType,
    /// What identifies a client for `ConsistentHash`. Requests without it are spread
    /// round robin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
    /// Keep a client on the endpoint it first reached with a cookie the gateway sets;
    /// a client whose endpoint is gone or unhealthy is moved and gets a new cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_cookie: Option<SessionCookie>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LoadBalancerType {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The less busy of two endpoints drawn at random (power of two choices).
    LeastRequest,
    /// The same key always reaches the same endpoint; when endpoints come or go, only the
    /// keys of those endpoints move.
    ConsistentHash,
}

/// Exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.header), has(self.cookie), has(self.clientAddress) && self.clientAddress, has(self.queryParameter)].filter(x, x).size() == 1",
    "message": "set exactly one of header, cookie, clientAddress and queryParameter"
}]))]
pub struct HashOn {
    /// A request header, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The client's address (behind `--trusted-proxies`, the one they report).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_address: bool,
    /// A query parameter, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionCookie {
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_\-]+$"))]
    pub name: String,
    /// Lifetime of the cookie; a browser session when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
}

/// Retries: only idempotent requests (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) are
/// retried after they may have reached the backend; any request is retried when its
/// connection was refused, since the backend never saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    /// Tries after the first.
    #[schemars(range(min = 1, max = 10))]
    pub attempts: u32,
    /// What makes a try count as failed. Default: `ConnectFailure`, `Reset`, 502, 503, 504.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub on: Vec<RetryOn>,
    /// Status codes that make a try count as failed, in addition to `on`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 400, max = 599)))]
    pub status_codes: Vec<u16>,
    /// First wait between tries; each later wait may be twice as long, with random
    /// jitter. Default 25ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
    /// Longest wait between tries. Default 250ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<Duration>,
    /// Retries may add at most this share of the rule's requests, in percent. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub budget_percent: Option<u32>,
    /// Retry POST, PATCH and other non-idempotent requests after they may have reached
    /// the backend too. Only for backends that can take the same request twice.
    #[serde(default)]
    pub non_idempotent: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RetryOn {
    /// The connection could not be made (refused, unreachable, connect timeout).
    ConnectFailure,
    /// The connection broke before the response headers arrived.
    Reset,
    /// The try took longer than `timeouts.perTry`.
    PerTryTimeout,
    /// Any 5xx answer.
    #[serde(rename = "5xx")]
    ServerError,
}

/// Keeping traffic away from endpoints that fail.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// Eject an endpoint after consecutive failures seen on real traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveHealth>,
    /// Probe each endpoint with an HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveHealth>,
    /// When fewer than this share of endpoints are healthy, in percent, health is
    /// ignored and every endpoint gets traffic, so that a bad check cannot take a whole
    /// backend down. Default 50; 0 turns it off (but with no healthy endpoint left,
    /// traffic still goes to all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub panic_threshold_percent: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassiveHealth {
    /// Connection failures, resets, timeouts or 5xx answers in a row. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub consecutive_failures: Option<u32>,
    /// The first ejection lasts this long; each further one in a row lasts one more
    /// such period, up to `maxEjectionTime`. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Default 300s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActiveHealth {
    /// Path of a GET each endpoint answers with 2xx when healthy.
    #[schemars(length(min = 1, max = 1024), regex(pattern = "^/"))]
    pub path: String,
    /// Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Default 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Passing probes in a row that bring an endpoint back. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub healthy_threshold: Option<u32>,
    /// Failing probes in a row that take an endpoint out. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub unhealthy_threshold: Option<u32>,
}
