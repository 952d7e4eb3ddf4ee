//! JSON Web Key Sets: the keys that verify tokens, read from a Secret or fetched from an
//! identity provider and cached.
//!
//! A fetched set is shared, through the process-wide [`JwksRegistry`], by every policy
//! that names its URL, and it outlives a recompile of the configuration as long as one
//! snapshot still uses it. It is fetched by the first request that needs it, again in
//! the background once it is older than the policy's refresh interval, and again when a
//! token names a key the set lacks. Fetches of one URL never overlap, and after a fetch
//! the next one waits [`JwksOptions::cooldown`], so made-up `kid` values cannot flood
//! the provider. A failed fetch keeps the keys already held.

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse},
    Algorithm, DecodingKey,
};
use rustls::RootCertStore;
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock, Weak,
    },
    time::{Duration, Instant},
};

/// Ten seconds lets a provider's rotated keys be picked up quickly, while a flood of
/// made-up `kid` values costs the provider at most six requests a minute.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(10);

/// Providers answer in milliseconds; five seconds covers a slow TLS handshake without
/// holding the first requests after a start for long.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Real key sets are a few kilobytes; anything this large is not one.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Verification keys, in the order the set lists them.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Key>,
    /// Keys left out: for encryption, of a kind or curve not supported, or malformed.
    pub skipped: usize,
}

/// One public key (or HMAC secret) and what it may verify.
#[derive(Debug)]
pub struct Key {
    pub kid: Option<String>,
    kind: KeyKind,
    /// The `alg` the set binds the key to, if any.
    alg: Option<Algorithm>,
    decoding: DecodingKey,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
    Secret,
}

/// The caches of every fetched key set, by URL. Cheap to clone; clones share the caches.
#[derive(Clone, Default)]
pub struct JwksRegistry {
    inner: Arc<Registry>,
}

#[derive(Default)]
struct Registry {
    /// Weak, so a set no snapshot uses any more is dropped with the last one.
    caches: ArcSwap<HashMap<String, Weak<JwksCache>>>,
    fetcher: Arc<Fetcher>,
}

/// How a registry fetches.
#[derive(Clone, Debug)]
pub struct JwksOptions {
    /// The least time between two fetches of one URL, except the scheduled ones.
    pub cooldown: Duration,
    pub fetch_timeout: Duration,
    /// Trust anchors for `https` URLs; `None` reads the system's.
    pub roots: Option<Arc<RootCertStore>>,
}

/// The key set of one URL.
pub struct JwksCache {
    uri: Uri,
    fetcher: Arc<Fetcher>,
    keys: ArcSwapOption<KeySet>,
    /// Fetches finished, so that a caller who waited on another's fetch can tell.
    attempts: AtomicU64,
    /// When the last fetch finished, in milliseconds after `born`, and whether it
    /// brought keys.
    last_attempt_ms: AtomicU64,
    last_ok: AtomicBool,
    born: Instant,
    /// Held for the duration of a fetch: fetches of one URL never overlap.
    flight: tokio::sync::Mutex<()>,
    /// Set while a background refresh is pending, so requests start one at most.
    refreshing: AtomicBool,
}

/// What a cache held when a caller looked, for [`JwksCache::refetch`].
pub struct Held {
    pub keys: Option<Arc<KeySet>>,
    attempts: u64,
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

struct Fetcher {
    options: JwksOptions,
    /// Built on the first fetch, so that a registry that never fetches reads no
    /// certificates.
    client: OnceLock<HttpsClient>,
}

// === impl KeySet ===

impl KeySet {
    /// Parses a JWKS document. Keys that cannot verify signatures are skipped and
    /// counted, so one odd key does not take the others away.
    pub fn parse(bytes: &[u8]) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let doc: Document =
            serde_json::from_slice(bytes).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
        let mut set = KeySet::default();
        for value in doc.keys {
            match Key::from_json(value) {
                Some(key) => set.keys.push(key),
                None => set.skipped += 1,
            }
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that may verify a token signed with `alg`: those with its `kid` when
    /// it names one, else all.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys
            .iter()
            .filter(move |k| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
            .filter(move |k| k.fits(alg))
    }

    /// True when the set has the key a token asks for: one with its `kid`, whatever
    /// its algorithm, or, without a `kid`, one that fits `alg`. When false, a newer
    /// set may have it.
    pub fn knows(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        match kid {
            Some(kid) => self.keys.iter().any(|k| k.kid.as_deref() == Some(kid)),
            None => self.keys.iter().any(|k| k.fits(alg)),
        }
    }

    /// True when some key fits one of `algs`.
    pub fn fits_any(&self, algs: &[Algorithm]) -> bool {
        self.keys.iter().any(|k| algs.iter().any(|a| k.fits(*a)))
    }
}

// === impl Key ===

impl Key {
    /// A verification key, or `None` for one that is not for signatures or not
    /// supported.
    fn from_json(value: serde_json::Value) -> Option<Key> {
        let jwk: Jwk = serde_json::from_value(value).ok()?;
        let common = &jwk.common;
        if matches!(
            common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        ) {
            return None;
        }
        if let Some(ops) = &common.key_operations {
            if !ops.iter().any(|op| matches!(op, KeyOperations::Verify)) {
                return None;
            }
        }
        // An `alg` that is not a signature algorithm (`RSA-OAEP`, ...) rules the key out.
        let alg = match common.key_algorithm {
            None => None,
            Some(a) => Some(Algorithm::try_from(a).ok()?),
        };
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyKind::Rsa,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => KeyKind::P256,
                EllipticCurve::P384 => KeyKind::P384,
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                KeyKind::Ed25519
            }
            AlgorithmParameters::OctetKey(_) => KeyKind::Secret,
            _ => return None,
        };
        if alg.is_some_and(|a| !kind.fits(a)) {
            return None;
        }
        Some(Key {
            kid: common.key_id.clone(),
            kind,
            alg,
            decoding: DecodingKey::from_jwk(&jwk).ok()?,
        })
    }

    /// True when this key may verify a signature made with `alg`: its kind and curve
    /// are the algorithm's, and the set binds it to no other algorithm.
    pub fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }

    pub fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

// === impl KeyKind ===

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => alg == ES256,
            KeyKind::P384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
            KeyKind::Secret => matches!(alg, HS256 | HS384 | HS512),
        }
    }
}

// === impl JwksRegistry ===

impl JwksRegistry {
    pub fn new() -> JwksRegistry {
        JwksRegistry::default()
    }

    pub fn with_options(options: JwksOptions) -> JwksRegistry {
        JwksRegistry {
            inner: Arc::new(Registry {
                caches: ArcSwap::default(),
                fetcher: Arc::new(Fetcher {
                    options,
                    client: OnceLock::new(),
                }),
            }),
        }
    }

    /// The cache of `uri`, shared with every other user of the same URL. Does no I/O.
    pub fn cache(&self, uri: &Uri) -> Arc<JwksCache> {
        let name = uri.to_string();
        if let Some(cache) = self.inner.caches.load().get(&name).and_then(Weak::upgrade) {
            return cache;
        }
        let fresh = Arc::new(JwksCache::new(uri.clone(), self.inner.fetcher.clone()));
        let mut chosen = fresh.clone();
        self.inner.caches.rcu(|caches| {
            let mut caches = HashMap::clone(caches);
            caches.retain(|_, c| c.strong_count() > 0);
            match caches.get(&name).and_then(Weak::upgrade) {
                Some(raced) => chosen = raced,
                None => {
                    caches.insert(name.clone(), Arc::downgrade(&fresh));
                    chosen = fresh.clone();
                }
            }
            caches
        });
        chosen
    }
}

impl std::fmt::Debug for JwksRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksRegistry")
            .field("urls", &self.inner.caches.load().len())
            .finish()
    }
}

// === impl JwksOptions ===

impl Default for JwksOptions {
    fn default() -> Self {
        JwksOptions {
            cooldown: DEFAULT_COOLDOWN,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            roots: None,
        }
    }
}

// === impl JwksCache ===

impl JwksCache {
    fn new(uri: Uri, fetcher: Arc<Fetcher>) -> JwksCache {
        JwksCache {
            uri,
            fetcher,
            keys: ArcSwapOption::empty(),
            attempts: AtomicU64::new(0),
            last_attempt_ms: AtomicU64::new(0),
            last_ok: AtomicBool::new(false),
            born: Instant::now(),
            flight: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
        }
    }

    /// The keys held now. When they are older than `max_age`, a fetch starts in the
    /// background; the request goes on with what is held.
    pub fn current(self: &Arc<Self>, max_age: Duration) -> Held {
        let held = self.held();
        if held.keys.is_some()
            && self.refresh_due(max_age)
            && !self.refreshing.swap(true, Ordering::AcqRel)
        {
            let cache = self.clone();
            tokio::spawn(async move {
                let _flight = cache.flight.lock().await;
                // Another caller may have fetched while this task waited.
                if cache.refresh_due(max_age) {
                    cache.fetch().await;
                }
                cache.refreshing.store(false, Ordering::Release);
            });
        }
        held
    }

    /// Fetches the set again, unless a fetch finished since `held` was taken (the
    /// caller then gets that one's result) or the last fetch was less than the cooldown
    /// ago. Concurrent callers share one fetch. Returns the keys held afterwards.
    pub async fn refetch(&self, held: &Held) -> Option<Arc<KeySet>> {
        let _flight = self.flight.lock().await;
        if self.attempts.load(Ordering::Acquire) == held.attempts
            && self
                .since_last_attempt()
                .is_none_or(|t| t >= self.fetcher.options.cooldown)
        {
            self.fetch().await;
        }
        self.keys.load_full()
    }

    fn held(&self) -> Held {
        // The count is read first: a fetch finishing in between then looks newer than
        // the keys, which only costs a caller a wait, never a missed fetch.
        let attempts = self.attempts.load(Ordering::Acquire);
        Held {
            keys: self.keys.load_full(),
            attempts,
        }
    }

    fn since_last_attempt(&self) -> Option<Duration> {
        if self.attempts.load(Ordering::Acquire) == 0 {
            return None;
        }
        let at = Duration::from_millis(self.last_attempt_ms.load(Ordering::Acquire));
        Some(self.born.elapsed().saturating_sub(at))
    }

    /// After a good fetch, the next is due after `max_age`; after a failed one, after
    /// the cooldown, so a provider that is down is asked again soon but not hammered.
    fn refresh_due(&self, max_age: Duration) -> bool {
        let wait = if self.last_ok.load(Ordering::Acquire) {
            max_age
        } else {
            self.fetcher.options.cooldown
        };
        self.since_last_attempt().is_none_or(|t| t >= wait)
    }

    /// One fetch. The caller holds `flight`.
    async fn fetch(&self) {
        let result = self
            .fetcher
            .get(&self.uri)
            .await
            .and_then(|body| KeySet::parse(&body));
        let ok = match result {
            Ok(set) if !set.is_empty() => {
                tracing::debug!(uri = %self.uri, keys = set.len(), skipped = set.skipped, "JWKS fetched");
                self.keys.store(Some(Arc::new(set)));
                true
            }
            Ok(set) => {
                self.keep_keys("no key in the set verifies signatures", set.skipped);
                false
            }
            Err(error) => {
                self.keep_keys(&error, 0);
                false
            }
        };
        let at = self.born.elapsed().as_millis() as u64;
        self.last_attempt_ms.store(at, Ordering::Release);
        self.last_ok.store(ok, Ordering::Release);
        self.attempts.fetch_add(1, Ordering::AcqRel);
    }

    fn keep_keys(&self, error: &str, skipped: usize) {
        let held = self.keys.load().as_ref().map_or(0, |k| k.len());
        tracing::warn!(uri = %self.uri, %error, skipped, keys_kept = held, "JWKS fetch failed");
    }
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("uri", &self.uri)
            .field("keys", &self.keys.load().as_ref().map(|k| k.len()))
            .finish()
    }
}

// === impl Fetcher ===

impl Default for Fetcher {
    fn default() -> Self {
        Fetcher {
            options: JwksOptions::default(),
            client: OnceLock::new(),
        }
    }
}

impl Fetcher {
    async fn get(&self, uri: &Uri) -> Result<Bytes, String> {
        let req = Request::get(uri.clone())
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("portcullis/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let client = self.client.get_or_init(|| self.build_client());
        let exchange = async {
            let resp = client.request(req).await.map_err(|e| {
                // The legacy client's own message is only "client error (Connect)".
                let cause = std::error::Error::source(&e).map(ToString::to_string);
                format!("{e}: {}", cause.unwrap_or_default())
            })?;
            if resp.status() != StatusCode::OK {
                return Err(format!("the provider answered {}", resp.status()));
            }
            Limited::new(resp.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| format!("reading the answer: {e}"))
        };
        tokio::time::timeout(self.options.fetch_timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {:?}", self.options.fetch_timeout))?
    }

    fn build_client(&self) -> HttpsClient {
        https_client(self.options.roots.clone().unwrap_or_else(system_roots))
    }
}

/// An HTTP/1.1 client for calls to identity providers: `https` checked against `roots`,
/// plain `http` allowed.
pub(super) fn https_client<B>(roots: Arc<RootCertStore>) -> Client<HttpsConnector<HttpConnector>, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// The system's trust anchors. Without any, `https` fetches fail and say why; `http`
/// ones still work.
pub(super) fn system_roots() -> Arc<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(errors = ?found.errors, "no system CA certificates for JWKS over https");
    }
    Arc::new(roots)
}

#[cfg(test)]
mod tests;

/// Keys, tokens and a JWKS server for tests, shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/common/tokens.rs"]
pub(crate) mod test_tokens;
