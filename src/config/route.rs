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
    "rule": "has(self.address) != has(self.service)",
    "message": "set exactly one of address and service"
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
    /// A Service in the Route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,
    /// Share of the rule's traffic, relative to the other backends. Default 1; 0 sends
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1_000_000))]
    pub weight: Option<u32>,
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
    /// arrive; 504 after that. A response body that is still streaming is not cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
}
