//! OAuth2 token introspection (RFC 7662): opaque tokens checked with the provider, the
//! answers cached no longer than the token lives.

use super::{
    jwks,
    jwt::{claim_headers, set_claim_headers, token_from, Claims, JwtDenied, TokenFrom},
};
use crate::config::IntrospectionPolicy;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

/// How long an answer is reused when the section sets no `cacheFor`.
const DEFAULT_CACHE_FOR: Duration = Duration::from_secs(300);
/// Inactive answers are reused briefly, so a client repeating a dead token does not
/// send the provider a request each time.
const INACTIVE_CACHE_FOR: Duration = Duration::from_secs(30);
/// Tokens whose answers are kept at once; the oldest go first.
const CACHE_ENTRIES: u64 = 100_000;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_ANSWER_BYTES: usize = 64 * 1024;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A compiled `introspection` section.
pub struct Introspection {
    pub spec: IntrospectionPolicy,
    /// The `client-secret` this was built from, to skip a rebuild when unchanged.
    pub source: Arc<[u8]>,
    endpoint: Uri,
    authorization: HeaderValue,
    from: TokenFrom,
    claim_headers: Vec<(String, HeaderName)>,
    cache_for: Duration,
    /// By the token's SHA-256, never the token itself.
    cache: moka::future::Cache<[u8; 32], Answer>,
    client: HttpsClient,
}

impl std::fmt::Debug for Introspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspection")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// What the provider said about one token, and until when it may be reused.
#[derive(Clone)]
struct Answer {
    claims: Option<Arc<Claims>>,
    reuse_for: Duration,
}

struct ReuseFor;

impl moka::Expiry<[u8; 32], Answer> for ReuseFor {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Answer,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.reuse_for)
    }
}

impl Introspection {
    /// Errors are (field path under the section, message), every one found.
    pub fn build(
        spec: &IntrospectionPolicy,
        client_secret: Option<&Arc<[u8]>>,
    ) -> Result<Introspection, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut error = |field: &str, message: String| errors.push((field.to_string(), message));
        let endpoint = match spec.endpoint.parse::<Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some() => {
                Some(u)
            }
            _ => {
                error(
                    "endpoint",
                    format!("{:?} is not an http(s) URL", spec.endpoint),
                );
                None
            }
        };
        if spec.client_id.is_empty() || spec.client_id.contains(':') {
            error("clientId", "must be set and hold no ':'".into());
        }
        let secret = match client_secret {
            Some(s) if !s.is_empty() => Some(s.clone()),
            _ => {
                error("clientSecretRef", "the Secret has no client-secret".into());
                None
            }
        };
        let from = match token_from(spec.from.as_ref()) {
            Ok(f) => Some(f),
            Err((field, message)) => {
                error(&field, message);
                None
            }
        };
        let claim_headers = claim_headers(&spec.claims_to_headers, &mut error);
        let cache_for = spec.cache_for.map_or(DEFAULT_CACHE_FOR, |d| d.0);
        let (Some(endpoint), Some(secret), Some(from), true) =
            (endpoint, secret, from, errors.is_empty())
        else {
            return Err(errors);
        };
        // Form-encoded first, as RFC 6749 §2.3.1 asks of client credentials.
        let encode = |s: &[u8]| form_urlencoded::byte_serialize(s).collect::<String>();
        let credentials = format!("{}:{}", encode(spec.client_id.as_bytes()), encode(&secret));
        let authorization = HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        ))
        .map_err(|_| {
            vec![(
                "clientSecretRef".to_string(),
                "unusable client secret".to_string(),
            )]
        })?;
        Ok(Introspection {
            spec: spec.clone(),
            source: secret,
            endpoint,
            authorization,
            from,
            claim_headers,
            cache_for,
            cache: moka::future::Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .expire_after(ReuseFor)
                .build(),
            client: jwks::https_client(jwks::system_roots()),
        })
    }

    /// The provider's answer for the request's token, when it is active and has the
    /// required scopes.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Arc<Claims>, JwtDenied> {
        let token = self.from.token(headers, query)?.ok_or(JwtDenied::Missing)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let key: [u8; 32] = digest.as_ref().try_into().expect("SHA-256 is 32 bytes");
        // Concurrent requests with one token share one call; failed calls are not kept.
        let answer = self
            .cache
            .try_get_with(key, self.ask(&token))
            .await
            .map_err(|why| {
                tracing::warn!(endpoint = %self.endpoint, %why, "token introspection failed");
                JwtDenied::KeysUnavailable
            })?;
        let claims = answer
            .claims
            .ok_or(JwtDenied::Invalid("the token is not active"))?;
        claims.require_scopes(&self.spec.required_scopes)?;
        Ok(claims)
    }

    /// Removes every header named in `claimsToHeaders` from what the client sent, then
    /// sets those the answer has.
    pub fn apply_headers(&self, claims: &Claims, headers: &mut HeaderMap) -> Result<(), JwtDenied> {
        set_claim_headers(&self.claim_headers, Some(claims), headers)
    }

    async fn ask(&self, token: &str) -> Result<Answer, String> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            if resp.status() != StatusCode::OK {
                return Err(format!("the provider answered {}", resp.status()));
            }
            Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| format!("reading the answer: {e}"))
        };
        let bytes = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))??;
        let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the answer is not a JSON object: {e}"))?;
        Ok(self.judge(json, SystemTime::now()))
    }

    /// An active answer is reused until the token expires or `cacheFor` passes, whichever
    /// comes first; an expired one counts as inactive whatever `active` says.
    fn judge(&self, json: serde_json::Map<String, serde_json::Value>, now: SystemTime) -> Answer {
        let inactive = Answer {
            claims: None,
            reuse_for: INACTIVE_CACHE_FOR.min(self.cache_for),
        };
        if json.get("active") != Some(&serde_json::Value::Bool(true)) {
            return inactive;
        }
        let now_secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let reuse_for = match json.get("exp").and_then(serde_json::Value::as_u64) {
            Some(exp) if exp <= now_secs => return inactive,
            Some(exp) => self.cache_for.min(Duration::from_secs(exp - now_secs)),
            None => self.cache_for,
        };
        Answer {
            claims: Some(Arc::new(Claims(json))),
            reuse_for,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn section() -> Introspection {
        let spec: IntrospectionPolicy = serde_json::from_value(json!({
            "endpoint": "http://127.0.0.1:1/introspect",
            "clientId": "gateway",
            "clientSecretRef": {"name": "s"},
            "cacheFor": "60s",
        }))
        .unwrap();
        Introspection::build(&spec, Some(&Arc::from(&b"p@ss:word"[..]))).unwrap()
    }

    #[test]
    fn answers_are_reused_no_longer_than_the_token_lives() {
        let s = section();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let obj = |v: serde_json::Value| v.as_object().unwrap().clone();
        let a = s.judge(obj(json!({"active": true, "exp": 1_000_010})), now);
        assert!(a.claims.is_some());
        assert_eq!(a.reuse_for, Duration::from_secs(10));
        let a = s.judge(obj(json!({"active": true, "exp": 2_000_000})), now);
        assert_eq!(a.reuse_for, Duration::from_secs(60));
        let a = s.judge(obj(json!({"active": true, "exp": 999_999})), now);
        assert!(a.claims.is_none(), "an expired token is not active");
        let a = s.judge(obj(json!({"active": "true"})), now);
        assert!(a.claims.is_none(), "only the JSON true is active");
        assert_eq!(a.reuse_for, Duration::from_secs(30));
    }

    #[test]
    fn credentials_are_form_encoded_then_basic() {
        let s = section();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(
                s.authorization
                    .to_str()
                    .unwrap()
                    .strip_prefix("Basic ")
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(decoded, b"gateway:p%40ss%3Aword");
    }

    #[test]
    fn build_names_every_bad_field() {
        let spec: IntrospectionPolicy = serde_json::from_value(json!({
            "endpoint": "ftp://idp",
            "clientId": "a:b",
            "clientSecretRef": {"name": "s"},
        }))
        .unwrap();
        let errors = Introspection::build(&spec, None).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(fields, ["endpoint", "clientId", "clientSecretRef"]);
    }
}
