//! The `Policy` resource: who may call a Route, and how often.
//!
//! A Policy attaches to Routes of its own namespace through `targetRefs`. Each section
//! (`jwt`, `apiKeys`, `ipAccess`, `cors`, `rateLimit`, `cache`, `compression`) is
//! independent: two Policies may
//! attach different sections to one Route, and when two set the same section for one
//! Route, the older Policy's applies and the newer one reports the conflict.

use super::{Duration, SecretRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// The objects this Policy applies to, in its own namespace.
    #[schemars(length(min = 1, max = 16))]
    pub target_refs: Vec<TargetRef>,
    /// Require a JSON Web Token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtPolicy>,
    /// Require an opaque OAuth2 token, checked with the provider (RFC 7662); excludes
    /// `jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection: Option<IntrospectionPolicy>,
    /// Require an API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeyPolicy>,
    /// Allow or deny client addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_access: Option<IpAccessPolicy>,
    /// Answer CORS preflights and label responses for browsers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsPolicy>,
    /// Limit request rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitPolicy>,
    /// Keep responses and answer from them while they are fresh (RFC 9111).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
    /// Compress responses for clients that accept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<CompressionPolicy>,
}

#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    pub kind: TargetKind,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum TargetKind {
    Route,
    /// Every endpoint of the BFF; the calls its aggregates make are held to the Policies
    /// of what they call.
    #[allow(clippy::upper_case_acronyms)] // the kind as users write it
    BFF,
}

/// JWT authentication and authorization on claims.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.jwksUri), has(self.keysRef)].filter(x, x).size() == 1",
    "message": "set exactly one of jwksUri and keysRef"
}]))]
pub struct JwtPolicy {
    /// Required `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The token's `aud` (a string or a list) must contain one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Where the identity provider publishes its keys (JWKS), fetched over HTTP(S).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// A Secret (file mode: a `--secrets-dir` folder) whose `jwks.json` holds the keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_ref: Option<SecretRef>,
    /// Algorithms accepted; a token naming another is refused. Default `RS256`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 12))]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Where the token is read from; `Authorization: Bearer` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<TokenSource>,
    /// Clock skew allowed on `exp` and `nbf`. Default 30s; at most 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<Duration>,
    /// When false, a token without `exp` is accepted. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_expiry: Option<bool>,
    /// Claims that must be present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_claims: Vec<String>,
    /// Scopes that must all be in the `scope` claim (space-separated) or `scp` (a list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
    /// Every rule must hold, else 403.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ClaimRule>,
    /// Claims copied into request headers for the backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims_to_headers: Vec<ClaimHeader>,
    /// A request without a token passes as anonymous; a token that is sent must still
    /// be valid.
    #[serde(default)]
    pub optional: bool,
    /// How often JWKS keys are fetched again. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// Exactly one of the fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.header), has(self.cookie), has(self.query)].filter(x, x).size() == 1",
    "message": "set exactly one of header, cookie and query"
}]))]
pub struct TokenSource {
    /// A header; `Authorization` expects the `Bearer` scheme, others the bare token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// A claim whose value (or one of whose values, for a list) must be one of `values`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimRule {
    pub claim: String,
    #[schemars(length(min = 1))]
    pub values: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimHeader {
    pub claim: String,
    pub header: String,
}

/// OAuth2 token introspection (RFC 7662).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntrospectionPolicy {
    /// The provider's introspection endpoint, `https://` (or `http://`).
    pub endpoint: String,
    /// The gateway's client id at the provider, sent with HTTP Basic authentication.
    pub client_id: String,
    /// A Secret (file mode: a `--secrets-dir` folder) whose `client-secret` holds the
    /// client's secret.
    pub client_secret_ref: SecretRef,
    /// Where the token is read from; `Authorization: Bearer` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<TokenSource>,
    /// Scopes that must all be in the answer's `scope`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
    /// Members of the provider's answer copied into request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims_to_headers: Vec<ClaimHeader>,
    /// Longest time an answer is reused; never past the token's `exp`. Default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_for: Option<Duration>,
}

/// API keys, each naming a consumer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyPolicy {
    /// A Secret (file mode: a `--secrets-dir` folder) whose `keys.yaml` maps consumer
    /// names to keys.
    pub keys_ref: SecretRef,
    /// The header that carries the key. Default `x-api-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The header that tells the backend which consumer called. Default
    /// `x-consumer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_header: Option<String>,
}

/// Client addresses allowed or denied, by CIDR. Deny wins over allow; with an allow
/// list, everything not on it is denied.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpAccessPolicy {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Origins allowed, exact (`https://app.example.com`) or `*`.
    #[schemars(length(min = 1))]
    pub allow_origins: Vec<String>,
    /// Default GET, HEAD, POST.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
}

/// A token bucket: `requests` per `per`, with bursts up to `burst`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitPolicy {
    #[schemars(range(min = 1))]
    pub requests: u32,
    pub per: Duration,
    /// Requests allowed at once after a quiet period. Default `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub burst: Option<u32>,
    /// What is counted separately. Default the client address.
    #[serde(default)]
    pub key: RateLimitKey,
    /// Count across every replica through Redis (`--redis-url`), instead of per
    /// replica.
    #[serde(default)]
    pub shared: bool,
}

/// The client address, a header, a JWT claim, the API key's consumer, or the whole
/// Route. A request without the header, claim or consumer is counted by its client
/// address.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(self.type in ['Header', 'Claim']) == has(self.name)",
    "message": "name is set exactly for Header and Claim"
}]))]
pub struct RateLimitKey {
    #[serde(rename = "type", default)]
    pub kind: RateLimitKeyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RateLimitKeyType {
    #[default]
    ClientAddress,
    Header,
    Claim,
    Consumer,
    Route,
}

/// A shared response cache, following the backend's `Cache-Control`, `Expires` and
/// `Vary`. Requests with credentials are only cached per identity, when `keyIncludes`
/// says what identifies the caller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CachePolicy {
    /// Bytes the stored responses may take, bodies and headers counted. Default 64 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub max_bytes: Option<u64>,
    /// Largest body stored; larger ones stream through uncached. Default 1 MiB; at
    /// most 64 MiB and at most `maxBytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 67108864))]
    pub max_object_bytes: Option<u64>,
    /// What else tells entries apart: a request header, the API key's consumer or a
    /// claim of the verified token. Naming `Authorization`, `Cookie`, `Consumer` or a
    /// `Claim` lets requests with credentials use the cache, each identity with
    /// entries of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub key_includes: Vec<CacheKeyPart>,
}

/// One part of the cache key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(self.type in ['Header', 'Claim']) == has(self.name)",
    "message": "name is set exactly for Header and Claim"
}]))]
pub struct CacheKeyPart {
    #[serde(rename = "type")]
    pub kind: CacheKeyType,
    /// The header or claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CacheKeyType {
    Header,
    Consumer,
    Claim,
}

/// On-the-fly compression of response bodies, negotiated with `Accept-Encoding`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompressionPolicy {
    /// Encodings offered, the preferred first: it wins when the client weighs several
    /// alike. Default `[Zstd, Brotli, Gzip]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub encodings: Vec<ContentCoding>,
    /// Bodies whose `Content-Length` is below this go as they are. Default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bytes: Option<u64>,
    /// Media types compressed: `type/subtype`, `type/*` or `type/*+suffix`. Default
    /// text, JSON, JavaScript, XML, SVG and WebAssembly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub content_types: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ContentCoding {
    Gzip,
    Brotli,
    Zstd,
}
