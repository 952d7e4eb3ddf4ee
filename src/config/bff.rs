//! The `BFF` resource: one entry point per kind of client (web, mobile, admin), whose
//! endpoints either pass a request through to one Service or aggregate several calls into
//! one JSON answer shaped for that client.

use super::{Duration, HeaderValue, PortRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An entry point tailored to one kind of client.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.hosts) && size(self.hosts) > 0) || has(self.pathPrefix)",
    "message": "set hosts, pathPrefix or both"
}]))]
pub struct BffSpec {
    /// The kind of client served (`web`, `mobile`, `admin`, ...). It labels the BFF's
    /// metrics and reaches every backend call in `x-portcullis-client`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub client: String,
    /// Host names this BFF serves, written as for Routes. Empty means every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub hosts: Vec<String>,
    /// A path prefix put in front of every endpoint path, such as `/web`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub path_prefix: Option<String>,
    #[schemars(length(min = 1, max = 64))]
    pub endpoints: Vec<BffEndpoint>,
}

/// One path of a BFF and what answers it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.passThrough) != has(self.aggregate)",
    "message": "set exactly one of passThrough and aggregate"
}]))]
pub struct BffEndpoint {
    /// The path after `pathPrefix`, matched whole; a segment written `{name}` matches any
    /// one segment and names it for templates (`/users/{id}`).
    #[schemars(length(min = 1, max = 1024))]
    pub path: String,
    /// An HTTP method such as `GET`; any method when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z]+$"))]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_through: Option<PassThrough>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
}

/// Sends the request on to one Service, with its body, headers and query.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.address) != has(self.service)",
    "message": "set exactly one of address and service"
}]))]
pub struct PassThrough {
    /// A Service in the BFF's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<BffServiceRef>,
    /// `host:port` of a fixed upstream, for configurations without a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The path sent upstream, a template (`/v2/users/{id}`); the request's path when
    /// absent. The request's query string is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub path: Option<String>,
    /// Time until the response headers; the listener's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Several calls made at once, whose JSON answers are merged under each part's name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Aggregate {
    #[schemars(length(min = 1, max = 16))]
    pub parts: Vec<Part>,
}

/// One call of an aggregate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.service), has(self.address), has(self.route)].filter(x, x).size() == 1",
    "message": "set exactly one of service, address and route"
}]))]
pub struct Part {
    /// The member of the answer this part's JSON goes under.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]*$")
    )]
    pub name: String,
    /// A Service in the BFF's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<BffServiceRef>,
    /// `host:port` of a fixed upstream, for configurations without a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A host served by this gateway: the call goes through that host's Route and the
    /// Policies attached to it, as a client's request would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteTarget>,
    /// `GET` when absent. The call never has a body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z]+$"))]
    pub method: Option<String>,
    /// Path and optional query of the call, a template: `{id}` is a path parameter,
    /// `{query.NAME}` a query parameter, `{header.NAME}` a request header,
    /// `{claims.NAME}` a claim of the verified token, `{parts.PART.FIELD}` a field of an
    /// earlier part's answer (see `after`).
    #[schemars(length(min = 1, max = 2048))]
    pub path: String,
    /// Extra headers for the call; values are templates. A header whose template has no
    /// value in a request is left out. The gateway's own headers (`x-request-id`,
    /// `x-forwarded-*`, `traceparent`, `x-portcullis-client`) cannot be set here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<HeaderValue>,
    /// How long the part may take, response body included. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// A required part that fails fails the whole answer; an optional one is left out
    /// and named in `errors`. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Only these members of the answer are kept: names or dotted paths
    /// (`items.id`), applied to objects and to each object of an array. Everything when
    /// empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub fields: Vec<String>,
    /// Another part whose answer this one waits for, so its templates may read
    /// `{parts.NAME.FIELD}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BffServiceRef {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    pub port: PortRef,
}

/// A host of this gateway, reached through its routing table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTarget {
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
}
