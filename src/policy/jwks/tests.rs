use super::*;
use serde_json::json;
use std::time::Duration;

#[path = "../../../tests/common/pki.rs"]
mod pki;

use super::test_tokens::{jwks, rsa_key, JwksServer, TestKey};

fn mk_registry(cooldown: Duration) -> JwksRegistry {
    JwksRegistry::with_options(JwksOptions {
        cooldown,
        ..JwksOptions::default()
    })
}

fn mk_uri(server: &JwksServer) -> Uri {
    server.url().parse().unwrap()
}

fn kids(set: &KeySet, kid: Option<&str>, alg: Algorithm) -> Vec<String> {
    set.candidates(kid, alg)
        .map(|k| k.kid.clone().unwrap_or_default())
        .collect()
}

// --- parsing and key choice ---

#[test]
fn parse_keeps_signature_keys_and_skips_the_rest() {
    let rsa = rsa_key();
    let p256 = TestKey::ec(Algorithm::ES256);
    let doc = jwks(&[
        rsa.jwk("rsa", None),
        rsa.jwk("rsa-384", Some("RS384")),
        p256.jwk("ec", Some("ES256")),
        json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
        // For encryption: by `use`, by `key_ops`, by `alg`.
        json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": rsa.public["n"], "e": "AQAB"}),
        json!({"kty": "RSA", "kid": "ops", "key_ops": ["encrypt"], "n": rsa.public["n"], "e": "AQAB"}),
        json!({"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": rsa.public["n"], "e": "AQAB"}),
        // An RSA key that claims an EC algorithm, an unknown kind, a curve not supported.
        rsa.jwk("liar", Some("ES256")),
        json!({"kty": "XYZ", "kid": "odd"}),
        json!({"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"}),
    ]);
    let set = KeySet::parse(doc.as_bytes()).unwrap();
    assert_eq!(set.len(), 4);
    assert_eq!(set.skipped, 6);
}

#[test]
fn parse_refuses_what_is_not_a_key_set() {
    assert!(KeySet::parse(b"{\"nokeys\": []}").is_err());
    assert!(KeySet::parse(b"<html>").is_err());
    let empty = KeySet::parse(b"{\"keys\": []}").unwrap();
    assert!(empty.is_empty());
}

#[test]
fn a_key_is_tried_only_for_the_algorithms_of_its_kind_and_alg() {
    let rsa = rsa_key();
    let p384 = TestKey::ec(Algorithm::ES384);
    let doc = jwks(&[
        rsa.jwk("any-rsa", None),
        rsa.jwk("rs384", Some("RS384")),
        p384.jwk("p384", None),
        json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
    ]);
    let set = KeySet::parse(doc.as_bytes()).unwrap();

    assert_eq!(kids(&set, None, Algorithm::RS256), ["any-rsa"]);
    assert_eq!(kids(&set, None, Algorithm::RS384), ["any-rsa", "rs384"]);
    assert_eq!(kids(&set, None, Algorithm::PS256), ["any-rsa"]);
    // A P-384 key never verifies ES256; an RSA key never verifies HMAC.
    assert!(kids(&set, None, Algorithm::ES256).is_empty());
    assert_eq!(kids(&set, None, Algorithm::ES384), ["p384"]);
    assert_eq!(kids(&set, None, Algorithm::HS256), ["hmac"]);
    // `kid` picks; a `kid` for another algorithm gives nothing.
    assert_eq!(kids(&set, Some("rs384"), Algorithm::RS384), ["rs384"]);
    assert!(kids(&set, Some("rs384"), Algorithm::RS256).is_empty());
    assert!(kids(&set, Some("hmac"), Algorithm::RS256).is_empty());

    assert!(
        set.knows(Some("rs384"), Algorithm::RS256),
        "the kid is known"
    );
    assert!(!set.knows(Some("new"), Algorithm::RS256));
    assert!(!set.knows(None, Algorithm::ES256));
    assert!(set.fits_any(&[Algorithm::ES256, Algorithm::HS512]));
    assert!(!set.fits_any(&[Algorithm::ES256, Algorithm::EdDSA]));
}

// --- the registry ---

#[test]
fn policies_naming_one_url_share_its_cache_while_one_uses_it() {
    let registry = JwksRegistry::new();
    let a: Uri = "https://idp.example/keys".parse().unwrap();
    let b: Uri = "https://other.example/keys".parse().unwrap();

    let first = registry.cache(&a);
    assert!(Arc::ptr_eq(&first, &registry.cache(&a)));
    assert!(
        Arc::ptr_eq(&first, &registry.clone().cache(&a)),
        "clones share"
    );
    assert!(!Arc::ptr_eq(&first, &registry.cache(&b)));

    // Once no one holds it, the registry lets it go and the next user gets a new one.
    let weak = Arc::downgrade(&first);
    drop(first);
    assert!(weak.upgrade().is_none());
    let again = registry.cache(&a);
    assert_eq!(Arc::strong_count(&again), 1);
}

// --- fetching ---

#[tokio::test]
async fn concurrent_first_requests_share_one_fetch() {
    let server = JwksServer::start(jwks(&[rsa_key().jwk("k1", None)])).await;
    let cache = mk_registry(Duration::from_secs(10)).cache(&mk_uri(&server));

    let waiters = (0..50).map(|_| {
        let cache = cache.clone();
        async move {
            let held = cache.current(Duration::from_secs(300));
            cache.refetch(&held).await.map(|k| k.len())
        }
    });
    let got = futures_util::future::join_all(waiters).await;

    assert!(got.iter().all(|n| *n == Some(1)), "{got:?}");
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn a_miss_fetches_again_only_after_the_cooldown() {
    let rsa = rsa_key();
    let server = JwksServer::start(jwks(&[rsa.jwk("k1", None)])).await;
    let cache = mk_registry(Duration::from_millis(500)).cache(&mk_uri(&server));
    let refresh = Duration::from_secs(300);

    cache.refetch(&cache.current(refresh)).await.unwrap();
    server.set_body(jwks(&[rsa.jwk("k1", None), rsa.jwk("k2", None)]));

    let keys = cache.refetch(&cache.current(refresh)).await.unwrap();
    assert!(
        !keys.knows(Some("k2"), Algorithm::RS256),
        "still cooling down"
    );
    assert_eq!(server.fetches(), 1);

    tokio::time::sleep(Duration::from_millis(550)).await;
    let keys = cache.refetch(&cache.current(refresh)).await.unwrap();
    assert!(keys.knows(Some("k2"), Algorithm::RS256));
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn keys_older_than_the_refresh_interval_are_fetched_in_the_background() {
    let rsa = rsa_key();
    let server = JwksServer::start(jwks(&[rsa.jwk("k1", None)])).await;
    let cache = mk_registry(Duration::from_secs(10)).cache(&mk_uri(&server));
    let refresh = Duration::from_millis(500);
    let rotated = jwks(&[rsa.jwk("k2", None)]);

    cache.refetch(&cache.current(refresh)).await.unwrap();
    server.set_body(rotated);
    // Not due yet.
    assert!(cache
        .current(refresh)
        .keys
        .unwrap()
        .knows(Some("k1"), Algorithm::RS256));
    assert_eq!(server.fetches(), 1);

    tokio::time::sleep(Duration::from_millis(550)).await;
    // Due: this caller gets the old keys at once, the next ones the new.
    let held = cache.current(refresh);
    assert!(held.keys.unwrap().knows(Some("k1"), Algorithm::RS256));
    for _ in 0..100 {
        if server.fetches() == 2
            && cache
                .keys
                .load_full()
                .is_some_and(|k| k.knows(Some("k2"), Algorithm::RS256))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.fetches(), 2);
    assert!(cache
        .current(refresh)
        .keys
        .unwrap()
        .knows(Some("k2"), Algorithm::RS256));
}

#[tokio::test]
async fn a_provider_that_is_down_leaves_the_cached_keys_in_use() {
    let rsa = rsa_key();
    let server = JwksServer::start(jwks(&[rsa.jwk("k1", None)])).await;
    let cache = mk_registry(Duration::from_millis(100)).cache(&mk_uri(&server));
    let refresh = Duration::from_millis(100);
    cache.refetch(&cache.current(refresh)).await.unwrap();

    server.set_status(503);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // A scheduled refresh and a miss both fail; the keys stay.
    let held = cache.current(refresh);
    let keys = cache.refetch(&held).await.unwrap();
    assert!(keys.knows(Some("k1"), Algorithm::RS256));
    assert!(server.fetches() >= 2);

    // An answer that is not a key set, or a set without usable keys, is a failure too.
    server.set_status(200);
    for body in ["not json".to_string(), jwks(&[])] {
        server.set_body(body);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let before = server.fetches();
        let keys = cache
            .refetch(&cache.current(Duration::from_secs(300)))
            .await;
        assert_eq!(server.fetches(), before + 1);
        assert!(keys.unwrap().knows(Some("k1"), Algorithm::RS256));
    }
}

#[tokio::test]
async fn a_provider_never_reached_leaves_no_keys() {
    let server = JwksServer::start(String::new()).await;
    server.set_status(500);
    let cache = mk_registry(Duration::from_secs(10)).cache(&mk_uri(&server));
    assert!(cache
        .refetch(&cache.current(Duration::from_secs(300)))
        .await
        .is_none());
    // Within the cooldown, callers are not held up by another attempt.
    assert!(cache
        .refetch(&cache.current(Duration::from_secs(300)))
        .await
        .is_none());
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn keys_are_fetched_over_https_against_the_configured_roots() {
    let ca = pki::Pki::new("jwks test CA");
    let leaf = ca.leaf(&["localhost"]);
    let server =
        JwksServer::start_tls(jwks(&[rsa_key().jwk("k1", None)]), &leaf.crt, &leaf.key).await;

    let trusted = JwksRegistry::with_options(JwksOptions {
        roots: Some(Arc::new(ca.roots())),
        ..JwksOptions::default()
    });
    let cache = trusted.cache(&mk_uri(&server));
    let keys = cache
        .refetch(&cache.current(Duration::from_secs(300)))
        .await;
    assert_eq!(keys.map(|k| k.len()), Some(1));

    // Without the test CA, the certificate is not trusted.
    let untrusted = JwksRegistry::with_options(JwksOptions {
        roots: Some(Arc::new(RootCertStore::empty())),
        ..JwksOptions::default()
    });
    let cache = untrusted.cache(&mk_uri(&server));
    assert!(cache
        .refetch(&cache.current(Duration::from_secs(300)))
        .await
        .is_none());
}
