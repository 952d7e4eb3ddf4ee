//! The `jwt` section of a Policy: a request must carry a JSON Web Token that verifies
//! against the policy's keys, and whose claims the policy's rules accept.
//!
//! The algorithm a token may use comes from the policy (`algorithms`) and from the key
//! that verifies it, never from the token alone: a token whose `alg` is not allowed, or
//! is `none`, is refused, and a key is only tried for the algorithms of its kind (an RSA
//! key never verifies an HMAC signature). Key members of the token header (`jwk`, `jku`,
//! `x5u`, `x5c`) are ignored: keys come only from the policy's `jwksUri` or `keysRef`.
//!
//! [`JwtAuth::authenticate`] runs once per request and answers 401 for a token that is
//! missing or does not verify, 403 for a valid token the rules refuse, and 503 when the
//! provider's keys were never fetched. [`JwtAuth::apply_headers`] then copies claims into
//! request headers for the backend.

use super::jwks::{JwksCache, JwksRegistry, KeySet};
use crate::config::{JwtAlgorithm, JwtPolicy, TokenSource};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use jsonwebtoken::{errors::ErrorKind, Algorithm, Validation};
use serde_json::{Map, Value};
use std::{sync::Arc, time::Duration};

/// Clock skew allowed on `exp` and `nbf` when the policy names none.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Skew beyond this is a clock to fix, not one to tolerate: a token would live that
/// much longer than its issuer meant.
const MAX_LEEWAY: Duration = Duration::from_secs(300);
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// Refreshing more often than this only loads the provider.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// Headers a claim may not be copied into: they frame the request or describe the
/// connection, and the proxy handles them itself.
const RESERVED_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// A compiled `jwt` section.
#[derive(Debug)]
pub struct JwtAuth {
    pub spec: JwtPolicy,
    /// The `jwks.json` of `keysRef` this was built from, to skip a rebuild when unchanged.
    pub source: Option<Arc<[u8]>>,
    from: TokenFrom,
    keys: Keys,
    /// One validation per allowed algorithm: the verifier takes exactly one, and its
    /// key must be of that algorithm's kind.
    validations: Vec<(Algorithm, Validation)>,
    claim_headers: Vec<(String, HeaderName)>,
}

/// Where the token is read from.
#[derive(Debug)]
pub(super) enum TokenFrom {
    /// A header with the `Bearer` scheme.
    Bearer(HeaderName),
    /// A header holding the bare token.
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

#[derive(Debug)]
enum Keys {
    /// From a Secret, parsed when the policy was built.
    Fixed(Arc<KeySet>),
    Fetched {
        cache: Arc<JwksCache>,
        refresh: Duration,
    },
}

/// The verified claims of a token.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Claims(pub Map<String, Value>);

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtDenied {
    /// No token was sent.
    #[error("a bearer token is required")]
    Missing,
    /// A token was sent and is not accepted; the text is short and fixed, as it goes
    /// into `WWW-Authenticate`.
    #[error("the token is not accepted: {0}")]
    Invalid(&'static str),
    /// The token is valid but lacks a scope the policy requires.
    #[error("the token lacks scope {0}")]
    InsufficientScope(String),
    /// The token is valid but its claims do not meet the policy.
    #[error("{0}")]
    Forbidden(String),
    /// The provider's keys were never fetched, so no token can be checked.
    #[error("the keys that verify tokens are not available")]
    KeysUnavailable,
}

/// The parts of a token header read before verification.
#[derive(serde::Deserialize)]
struct Peeked {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

// === impl JwtAuth ===

impl JwtAuth {
    /// Compiles a `jwt` section. `keys` is the `jwks.json` of the Secret `keysRef`
    /// names, when it has one; `registry` holds the caches of fetched key sets. Errors
    /// are (field path under the section, message), every one found.
    pub fn build(
        spec: &JwtPolicy,
        keys: Option<&Arc<[u8]>>,
        registry: &JwksRegistry,
    ) -> Result<JwtAuth, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut error = |field: &str, message: String| errors.push((field.to_string(), message));

        let algorithms: Vec<Algorithm> = if spec.algorithms.is_empty() {
            vec![Algorithm::RS256]
        } else {
            spec.algorithms.iter().map(|a| algorithm(*a)).collect()
        };
        let leeway = spec.leeway.map_or(DEFAULT_LEEWAY, |d| d.0);
        if leeway > MAX_LEEWAY {
            error(
                "leeway",
                format!("at most {}", humantime::format_duration(MAX_LEEWAY)),
            );
        }
        let refresh = spec.refresh_interval.map_or(DEFAULT_REFRESH, |d| d.0);
        if refresh < MIN_REFRESH {
            error(
                "refreshInterval",
                format!("at least {}", humantime::format_duration(MIN_REFRESH)),
            );
        }

        let from = token_from(spec.from.as_ref())
            .map_err(|(f, m)| error(&f, m))
            .ok();
        let key_source = match (&spec.jwks_uri, &spec.keys_ref) {
            (Some(uri), None) => match jwks_uri(uri) {
                Ok(uri) => Some(Keys::Fetched {
                    cache: registry.cache(&uri),
                    refresh,
                }),
                Err(m) => {
                    error("jwksUri", m);
                    None
                }
            },
            (None, Some(_)) => match fixed_keys(keys.map(|k| &k[..]), &algorithms) {
                Ok(set) => Some(Keys::Fixed(set)),
                Err(m) => {
                    error("keysRef", m);
                    None
                }
            },
            _ => {
                error("jwksUri", "set exactly one of jwksUri and keysRef".into());
                None
            }
        };

        check_claim_fields(spec, &mut error);
        let claim_headers = claim_headers(&spec.claims_to_headers, &mut error);

        let validations = algorithms
            .iter()
            .map(|alg| (*alg, validation(spec, *alg, leeway)))
            .collect();
        match (from, key_source) {
            (Some(from), Some(key_source)) if errors.is_empty() => Ok(JwtAuth {
                spec: spec.clone(),
                source: keys.filter(|_| spec.keys_ref.is_some()).cloned(),
                from,
                keys: key_source,
                validations,
                claim_headers,
            }),
            _ => Err(errors),
        }
    }

    /// Reads and checks the request's token. `Ok(None)`: the policy is optional and no
    /// token was sent, so the request goes on as anonymous. `Ok(Some(_))`: the token is
    /// valid and the rules accept it.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<Claims>, JwtDenied> {
        let token = match self.from.token(headers, query)? {
            Some(token) => token,
            None if self.spec.optional => return Ok(None),
            None => return Err(JwtDenied::Missing),
        };
        let claims = self.verify(&token).await.inspect_err(|why| {
            tracing::debug!(%why, "JWT refused");
        })?;
        self.authorize(&claims)?;
        Ok(Some(claims))
    }

    /// Removes every header named in `claimsToHeaders` from what the client sent, then
    /// sets those whose claim the token has. A value that cannot be a header (a line
    /// break, a NUL or another control character) refuses the request.
    pub fn apply_headers(
        &self,
        claims: Option<&Claims>,
        headers: &mut HeaderMap,
    ) -> Result<(), JwtDenied> {
        set_claim_headers(&self.claim_headers, claims, headers)
    }

    async fn verify(&self, token: &str) -> Result<Claims, JwtDenied> {
        let peeked = peek_header(token)?;
        let (alg, validation) = self
            .validations
            .iter()
            .find(|(a, _)| alg_name(*a) == peeked.alg)
            .ok_or(JwtDenied::Invalid("algorithm not allowed"))?;
        let kid = peeked.kid.as_deref();
        let keys = self.keys.for_token(kid, *alg).await?;

        let mut refusal = JwtDenied::Invalid("no key for this token");
        for key in keys.candidates(kid, *alg) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key.decoding(), validation) {
                Ok(data) => return self.check_issuer(Claims(data.claims)),
                // The signature or this key is wrong; another key may fit.
                Err(e) if is_key_error(e.kind()) => {
                    refusal = JwtDenied::Invalid("signature does not verify");
                }
                // The signature verified, or the token is malformed for every key.
                Err(e) => return Err(JwtDenied::Invalid(describe(e.kind()))),
            }
        }
        Err(refusal)
    }

    fn check_issuer(&self, claims: Claims) -> Result<Claims, JwtDenied> {
        match &self.spec.issuer {
            Some(iss) if claims.get("iss").and_then(Value::as_str) != Some(iss) => {
                Err(JwtDenied::Invalid("issuer not accepted"))
            }
            _ => Ok(claims),
        }
    }

    /// The 403 checks: claims, scopes and rules.
    fn authorize(&self, claims: &Claims) -> Result<(), JwtDenied> {
        if let Some(missing) = self
            .spec
            .required_claims
            .iter()
            .find(|c| claims.get(c).is_none_or(Value::is_null))
        {
            return Err(JwtDenied::Forbidden(format!(
                "the token has no claim {missing}"
            )));
        }
        claims.require_scopes(&self.spec.required_scopes)?;
        for rule in &self.spec.rules {
            let allowed = claims
                .get(&rule.claim)
                .is_some_and(|v| matches_rule(v, &rule.values));
            if !allowed {
                return Err(JwtDenied::Forbidden(format!(
                    "claim {} has no allowed value",
                    rule.claim
                )));
            }
        }
        Ok(())
    }
}

/// The validation of `alg`: `exp` required unless the policy says otherwise, `nbf`
/// checked, `aud` required and matched when audiences are set. `iss` is checked apart,
/// as a string only.
fn validation(spec: &JwtPolicy, alg: Algorithm, leeway: Duration) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = Vec::new();
    if spec.require_expiry != Some(false) {
        required.push("exp");
    }
    if spec.audiences.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(&spec.audiences);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

/// Checks the fields naming claims and scopes, which the request path trusts to be
/// well formed.
fn check_claim_fields(spec: &JwtPolicy, error: &mut impl FnMut(&str, String)) {
    if spec.issuer.as_deref() == Some("") {
        error("issuer", "must not be empty".into());
    }
    for (i, aud) in spec.audiences.iter().enumerate() {
        if aud.is_empty() {
            error(&format!("audiences[{i}]"), "must not be empty".into());
        }
    }
    for (i, claim) in spec.required_claims.iter().enumerate() {
        if claim.is_empty() {
            error(&format!("requiredClaims[{i}]"), "must not be empty".into());
        }
    }
    // The characters RFC 6750 allows in a scope, which also keeps the challenge header
    // well formed.
    let scope_char = |c: char| c.is_ascii_graphic() && c != '"' && c != '\\';
    for (i, scope) in spec.required_scopes.iter().enumerate() {
        if scope.is_empty() || !scope.chars().all(scope_char) {
            error(
                &format!("requiredScopes[{i}]"),
                "one scope: printable ASCII without spaces, quotes or backslashes".into(),
            );
        }
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        if rule.claim.is_empty() {
            error(&format!("rules[{i}].claim"), "must not be empty".into());
        }
        if rule.values.is_empty() {
            error(
                &format!("rules[{i}].values"),
                "list at least one value".into(),
            );
        }
    }
}

pub(super) fn token_from(from: Option<&TokenSource>) -> Result<TokenFrom, (String, String)> {
    let Some(from) = from else {
        return Ok(TokenFrom::Bearer(header::AUTHORIZATION));
    };
    let invalid = |field: &str, m: &str| Err((format!("from.{field}"), m.to_string()));
    match (&from.header, &from.cookie, &from.query) {
        (Some(h), None, None) => match HeaderName::try_from(h.as_str()) {
            Ok(name) if name == header::AUTHORIZATION => Ok(TokenFrom::Bearer(name)),
            Ok(name) => Ok(TokenFrom::Header(name)),
            Err(_) => invalid("header", "not a valid header name"),
        },
        (None, Some(c), None) if c.is_empty() => invalid("cookie", "must not be empty"),
        (None, Some(c), None) => Ok(TokenFrom::Cookie(c.clone())),
        (None, None, Some(q)) if q.is_empty() => invalid("query", "must not be empty"),
        (None, None, Some(q)) => Ok(TokenFrom::Query(q.clone())),
        _ => Err((
            "from".into(),
            "set exactly one of header, cookie and query".into(),
        )),
    }
}

fn jwks_uri(uri: &str) -> Result<Uri, String> {
    let parsed: Uri = uri.parse().map_err(|e| format!("not a URL: {e}"))?;
    match parsed.scheme_str() {
        Some("http" | "https") if parsed.authority().is_some() => Ok(parsed),
        _ => Err("an http:// or https:// URL with a host".into()),
    }
}

fn fixed_keys(bytes: Option<&[u8]>, algorithms: &[Algorithm]) -> Result<Arc<KeySet>, String> {
    let bytes = bytes.ok_or("the Secret has no jwks.json")?;
    let set = KeySet::parse(bytes).map_err(|e| format!("jwks.json: {e}"))?;
    if !set.fits_any(algorithms) {
        let names: Vec<&str> = algorithms.iter().map(|a| alg_name(*a)).collect();
        return Err(format!(
            "jwks.json has no key for {} ({} keys skipped as unusable)",
            names.join(", "),
            set.skipped
        ));
    }
    Ok(Arc::new(set))
}

/// Removes every header of `claim_headers` from what the client sent, then sets those
/// whose claim `claims` has.
pub(super) fn set_claim_headers(
    claim_headers: &[(String, HeaderName)],
    claims: Option<&Claims>,
    headers: &mut HeaderMap,
) -> Result<(), JwtDenied> {
    for (_, name) in claim_headers {
        crate::proxy::headers::remove_every_spelling(headers, name);
    }
    let Some(claims) = claims else { return Ok(()) };
    for (claim, name) in claim_headers {
        let Some(text) = claims.get(claim).and_then(header_text) else {
            continue;
        };
        let value = HeaderValue::from_str(&text)
            .map_err(|_| JwtDenied::Invalid("a claim cannot be sent as a header"))?;
        headers.insert(name.clone(), value);
    }
    Ok(())
}

pub(super) fn claim_headers(
    claims_to_headers: &[crate::config::ClaimHeader],
    error: &mut impl FnMut(&str, String),
) -> Vec<(String, HeaderName)> {
    let mut out: Vec<(String, HeaderName)> = Vec::new();
    for (i, ch) in claims_to_headers.iter().enumerate() {
        if ch.claim.is_empty() {
            error(
                &format!("claimsToHeaders[{i}].claim"),
                "must not be empty".into(),
            );
        }
        let field = format!("claimsToHeaders[{i}].header");
        match HeaderName::try_from(ch.header.as_str()) {
            Err(_) => error(&field, "not a valid header name".into()),
            Ok(name) if RESERVED_HEADERS.contains(&name.as_str()) => {
                error(&field, format!("{name} is managed by the proxy"));
            }
            Ok(name) if out.iter().any(|(_, n)| *n == name) => {
                error(&field, format!("{name} already carries another claim"));
            }
            Ok(name) => out.push((ch.claim.clone(), name)),
        }
    }
    out
}

/// The algorithm and key id a token asks for, read without trusting them: they only
/// choose among what the policy allows.
fn peek_header(token: &str) -> Result<Peeked, JwtDenied> {
    let malformed = JwtDenied::Invalid("malformed token");
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed.clone())?;
    serde_json::from_slice(&json).map_err(|_| malformed)
}

/// Errors that depend on the key tried, as opposed to the token.
fn is_key_error(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
    )
}

fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid",
        ErrorKind::InvalidAudience => "audience not accepted",
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => "token has no expiry",
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => "audience not accepted",
        ErrorKind::InvalidClaimFormat(_) => "malformed claims",
        ErrorKind::InvalidIssuer => "issuer not accepted",
        _ => "malformed token",
    }
}

/// A claim as header text: strings as they are, numbers and booleans as JSON writes
/// them, lists of those joined with commas. Objects and nulls give no header.
fn header_text(value: &Value) -> Option<String> {
    match value {
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().filter_map(scalar_text).collect();
            (!parts.is_empty()).then(|| parts.join(","))
        }
        other => scalar_text(other),
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A claim value, or one value of a list claim, is in `values`.
fn matches_rule(value: &Value, values: &[String]) -> bool {
    let one = |v: &Value| scalar_text(v).is_some_and(|t| values.contains(&t));
    match value {
        Value::Array(items) => items.iter().any(one),
        other => one(other),
    }
}

fn algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// The name a token header uses for `alg`.
fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        // The enum is non-exhaustive; a newer algorithm is never named by a policy.
        _ => "",
    }
}

// === impl TokenFrom ===

impl TokenFrom {
    /// The token, `None` when none was sent. Two tokens are refused rather than one
    /// picked, as another reader of the request might pick the other.
    pub(super) fn token(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<String>, JwtDenied> {
        let found: Vec<String> = match self {
            TokenFrom::Bearer(name) => headers
                .get_all(name)
                .iter()
                .filter_map(|v| bearer(v.as_bytes()))
                .collect(),
            TokenFrom::Header(name) => headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
                .collect(),
            TokenFrom::Cookie(cookie) => headers
                .get_all(header::COOKIE)
                .iter()
                .flat_map(|v| cookie_values(v.as_bytes(), cookie))
                .collect(),
            TokenFrom::Query(param) => query
                .map(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .filter(|(k, _)| k == param)
                        .map(|(_, v)| v.into_owned())
                        .collect()
                })
                .unwrap_or_default(),
        };
        match found.len() {
            0 => Ok(None),
            1 if found[0].is_empty() => Err(JwtDenied::Invalid("malformed token")),
            1 => Ok(found.into_iter().next()),
            _ => Err(JwtDenied::Invalid("more than one token")),
        }
    }
}

/// The credentials of a `Bearer` value (scheme in any case), `None` for another scheme.
fn bearer(value: &[u8]) -> Option<String> {
    let value = String::from_utf8_lossy(value);
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim().to_string())
}

fn cookie_values(value: &[u8], name: &str) -> Vec<String> {
    String::from_utf8_lossy(value)
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .collect()
}

// === impl Keys ===

impl Keys {
    /// The key set to check a token against. A fetched set that lacks the token's key
    /// is fetched again first, within the cache's limits.
    async fn for_token(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<KeySet>, JwtDenied> {
        match self {
            Keys::Fixed(set) => Ok(set.clone()),
            Keys::Fetched { cache, refresh } => {
                let held = cache.current(*refresh);
                match &held.keys {
                    Some(set) if set.knows(kid, alg) => Ok(set.clone()),
                    _ => cache.refetch(&held).await.ok_or(JwtDenied::KeysUnavailable),
                }
            }
        }
    }
}

// === impl Claims ===

impl Claims {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// A string, number or boolean claim as text, as rate limits key on it.
    pub fn get_str(&self, name: &str) -> Option<String> {
        self.get(name).and_then(scalar_text)
    }

    /// The scopes granted: `scope` (space-separated) and `scp` (a list, or a
    /// space-separated string as some providers write it).
    /// Refuses with 403 the first of `required` that was not granted.
    pub(super) fn require_scopes(&self, required: &[String]) -> Result<(), JwtDenied> {
        if required.is_empty() {
            return Ok(());
        }
        let granted = self.scopes();
        match required.iter().find(|s| !granted.contains(&s.as_str())) {
            Some(missing) => Err(JwtDenied::InsufficientScope(missing.clone())),
            None => Ok(()),
        }
    }

    fn scopes(&self) -> Vec<&str> {
        ["scope", "scp"]
            .iter()
            .filter_map(|c| self.get(c))
            .flat_map(|v| match v {
                Value::String(s) => s.split_whitespace().collect(),
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            })
            .collect()
    }
}

// === impl JwtDenied ===

impl JwtDenied {
    pub fn status(&self) -> StatusCode {
        match self {
            JwtDenied::Missing | JwtDenied::Invalid(_) => StatusCode::UNAUTHORIZED,
            JwtDenied::InsufficientScope(_) | JwtDenied::Forbidden(_) => StatusCode::FORBIDDEN,
            JwtDenied::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750), for the answers that carry one: every
    /// 401, and a 403 for a missing scope.
    pub fn www_authenticate(&self) -> Option<HeaderValue> {
        match self {
            JwtDenied::Missing => Some(HeaderValue::from_static("Bearer")),
            JwtDenied::Invalid(why) => HeaderValue::from_str(&format!(
                "Bearer error=\"invalid_token\", error_description=\"{why}\""
            ))
            .ok(),
            JwtDenied::InsufficientScope(scope) => HeaderValue::from_str(&format!(
                "Bearer error=\"insufficient_scope\", scope=\"{scope}\""
            ))
            .ok(),
            JwtDenied::Forbidden(_) | JwtDenied::KeysUnavailable => None,
        }
    }

    /// For the JSON body of the answer.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// A stable machine-readable code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            JwtDenied::Missing => "token_required",
            JwtDenied::Invalid(_) => "invalid_token",
            JwtDenied::InsufficientScope(_) => "insufficient_scope",
            JwtDenied::Forbidden(_) => "claims_refused",
            JwtDenied::KeysUnavailable => "keys_unavailable",
        }
    }
}

#[cfg(test)]
mod tests;
