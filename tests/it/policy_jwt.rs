//! JWT Policies in front of real backends: tokens signed at test time, keys from a local
//! JWKS server that counts its fetches or from a secrets folder.

use crate::support::*;
use portcullis::proxy::Limits;
use serde_json::{json, Value};
use std::{net::SocketAddr, time::Duration};

#[path = "../common/tokens.rs"]
pub mod tokens;

use tokens::{jwks, now, rsa_key, JwksServer, TestKey};

const ISS: &str = "https://idp.test";

fn route(name: &str, host: &str, backend: SocketAddr) -> String {
    format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\n\
         spec:\n  hosts: [{host}]\n  rules:\n  - backends: [{{address: '{backend}'}}]\n"
    )
}

/// A Policy on Route `api` whose `jwt` section is `jwt` (indented by four spaces).
fn jwt_policy(jwt: &str) -> String {
    format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {{name: auth}}\n\
         spec:\n  targetRefs: [{{kind: Route, name: api}}]\n  jwt:\n{jwt}"
    )
}

/// Route `api` on `api.test` behind a JWT Policy, and Route `open` on `open.test`.
async fn mk_gateway(jwt: &str) -> TestGateway {
    let b = echo("b").await;
    let yaml = route("api", "api.test", b) + &route("open", "open.test", b) + &jwt_policy(jwt);
    TestGateway::start(&yaml).await
}

fn mk_claims(extra: Value) -> Value {
    let mut claims = json!({"sub": "alice", "iss": ISS, "aud": "orders", "exp": now() + 600});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

fn mk_token(extra: Value) -> String {
    rsa_key().sign(Some("k1"), &mk_claims(extra))
}

async fn call(gw: &TestGateway, token: Option<&str>, extra: &[(&str, &str)]) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("host", "api.test")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b));
    }
    headers.extend_from_slice(extra);
    get(&gw.url("/orders"), &headers).await
}

#[tokio::test]
async fn a_valid_token_passes_with_its_claims_as_headers() {
    let idp = JwksServer::start(jwks(&[rsa_key().jwk("k1", Some("RS256"))])).await;
    let gw = mk_gateway(&format!(
        "    jwksUri: {}\n    issuer: {ISS}\n    audiences: [orders]\n    claimsToHeaders:\n\
         \x20   - {{claim: sub, header: x-user}}\n\
         \x20   - {{claim: groups, header: x-groups}}\n",
        idp.url()
    ))
    .await;

    let token = mk_token(json!({"groups": ["buyers", "staff"]}));
    let a = call(
        &gw,
        Some(&token),
        &[("x-user", "mallory"), ("x-groups", "admins")],
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.echoed_header("x-user").as_deref(), Some("alice"));
    assert_eq!(a.echoed_header("x-groups").as_deref(), Some("buyers,staff"));

    // Without a groups claim, the client's copy is removed all the same.
    let a = call(&gw, Some(&mk_token(json!({}))), &[("x-groups", "admins")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.echoed_header("x-groups"), None);

    // Another Route is not affected.
    let a = get(&gw.url("/"), &[("host", "open.test")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(idp.fetches(), 1);
}

#[tokio::test]
async fn refusals_are_401_with_a_bearer_challenge() {
    let idp = JwksServer::start(jwks(&[rsa_key().jwk("k1", None)])).await;
    let gw = mk_gateway(&format!(
        "    jwksUri: {}\n    issuer: {ISS}\n    audiences: [orders]\n",
        idp.url()
    ))
    .await;

    let a = call(&gw, None, &[]).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("www-authenticate"), "Bearer");
    assert_eq!(a.json()["error"], "token_required");

    let cases = [
        (mk_token(json!({"exp": now() - 3600})), "token expired"),
        (
            mk_token(json!({"iss": "https://evil.test"})),
            "issuer not accepted",
        ),
        (mk_token(json!({"aud": "billing"})), "audience not accepted"),
        (
            TestKey::ec(jsonwebtoken::Algorithm::ES256).sign(Some("k1"), &mk_claims(json!({}))),
            "algorithm not allowed",
        ),
        ("not-a-token".to_string(), "malformed token"),
    ];
    for (token, why) in cases {
        let a = call(&gw, Some(&token), &[]).await;
        assert_eq!(a.status, 401, "{why}");
        assert_eq!(
            a.header("www-authenticate"),
            format!("Bearer error=\"invalid_token\", error_description=\"{why}\"")
        );
        assert_eq!(a.json()["error"], "invalid_token");
    }
}

#[tokio::test]
async fn alg_none_and_an_hmac_token_keyed_with_the_public_key_are_refused() {
    let idp = JwksServer::start(jwks(&[rsa_key().jwk("k1", None)])).await;
    let gw = mk_gateway(&format!(
        "    jwksUri: {}\n    algorithms: [RS256, HS256]\n",
        idp.url()
    ))
    .await;
    let claims = mk_claims(json!({}));

    let header = tokens::b64_json(&json!({"alg": "none", "kid": "k1"}));
    let unsigned = format!("{header}.{}.", tokens::b64_json(&claims));
    let a = call(&gw, Some(&unsigned), &[]).await;
    assert_eq!(a.status, 401);
    assert!(a
        .header("www-authenticate")
        .contains("algorithm not allowed"));

    let forger = TestKey::hmac_from(jsonwebtoken::Algorithm::HS256, &rsa_key().public_pem);
    let a = call(&gw, Some(&forger.sign(Some("k1"), &claims)), &[]).await;
    assert_eq!(a.status, 401);
    assert!(a
        .header("www-authenticate")
        .contains("no key for this token"));
}

#[tokio::test]
async fn scopes_and_rules_refuse_with_403() {
    let idp = JwksServer::start(jwks(&[rsa_key().jwk("k1", None)])).await;
    let gw = mk_gateway(&format!(
        "    jwksUri: {}\n    requiredScopes: [orders.read]\n    \
         rules: [{{claim: tier, values: [gold, silver]}}]\n",
        idp.url()
    ))
    .await;

    let ok = mk_token(json!({"scope": "orders.read profile", "tier": "gold"}));
    assert_eq!(call(&gw, Some(&ok), &[]).await.status, 200);

    let no_scope = mk_token(json!({"scope": "profile", "tier": "gold"}));
    let a = call(&gw, Some(&no_scope), &[]).await;
    assert_eq!(a.status, 403);
    assert_eq!(
        a.header("www-authenticate"),
        "Bearer error=\"insufficient_scope\", scope=\"orders.read\""
    );
    assert_eq!(a.json()["error"], "insufficient_scope");

    let wrong_tier = mk_token(json!({"scp": ["orders.read"], "tier": ["bronze"]}));
    let a = call(&gw, Some(&wrong_tier), &[]).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.header("www-authenticate"), "");
    assert_eq!(a.json()["error"], "claims_refused");
    assert_eq!(a.json()["message"], "claim tier has no allowed value");
}

#[tokio::test]
async fn keys_never_fetched_answer_503() {
    let idp = JwksServer::start(String::new()).await;
    idp.set_status(500);
    let gw = mk_gateway(&format!("    jwksUri: {}\n", idp.url())).await;
    let a = call(&gw, Some(&mk_token(json!({}))), &[]).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.json()["error"], "keys_unavailable");
    // No token is still a 401: the keys are not needed to say so.
    assert_eq!(call(&gw, None, &[]).await.status, 401);
}

#[tokio::test]
async fn an_optional_policy_passes_anonymous_requests_without_identity() {
    let idp = JwksServer::start(jwks(&[rsa_key().jwk("k1", None)])).await;
    let gw = mk_gateway(&format!(
        "    jwksUri: {}\n    optional: true\n    claimsToHeaders: [{{claim: sub, header: x-user}}]\n",
        idp.url()
    ))
    .await;

    let a = call(&gw, None, &[("x-user", "admin")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.echoed_header("x-user"), None);

    let a = call(&gw, Some(&mk_token(json!({"exp": now() - 3600}))), &[]).await;
    assert_eq!(a.status, 401);

    let a = call(&gw, Some(&mk_token(json!({}))), &[]).await;
    assert_eq!(a.echoed_header("x-user").as_deref(), Some("alice"));
}

#[tokio::test]
async fn a_claim_with_a_line_break_refuses_the_request() {
    let idp = JwksServer::start(jwks(&[rsa_key().jwk("k1", None)])).await;
    let gw = mk_gateway(&format!(
        "    jwksUri: {}\n    claimsToHeaders: [{{claim: sub, header: x-user}}]\n",
        idp.url()
    ))
    .await;
    let token = mk_token(json!({"sub": "alice\r\nx-admin: true"}));
    let a = call(&gw, Some(&token), &[]).await;
    assert_eq!(a.status, 401);
    assert!(a.header("www-authenticate").contains("invalid_token"));
}

#[tokio::test]
async fn keys_from_a_secrets_folder_and_tokens_from_a_cookie_or_query() {
    let ec = TestKey::ec(jsonwebtoken::Algorithm::ES256);
    let set = jwks(&[ec.jwk("e1", Some("ES256"))]);
    let b = echo("b").await;
    let yaml = route("api", "api.test", b)
        + &jwt_policy("    keysRef: {name: idp-keys}\n    algorithms: [ES256]\n    from: {cookie: session}\n")
        + &route("q", "q.test", b)
        + "---\napiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {name: q}\n\
           spec:\n  targetRefs: [{kind: Route, name: q}]\n  jwt:\n    keysRef: {name: idp-keys}\n    \
           algorithms: [ES256]\n    from: {query: access_token}\n";
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| {
            std::fs::create_dir(dir.join("idp-keys")).unwrap();
            std::fs::write(dir.join("idp-keys/jwks.json"), &set).unwrap();
        },
        None,
    )
    .await;
    let token = ec.sign(Some("e1"), &mk_claims(json!({})));

    let cookie = format!("theme=dark; session={token}");
    let a = get(&gw.url("/"), &[("host", "api.test"), ("cookie", &cookie)]).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let a = call(&gw, Some(&token), &[]).await;
    assert_eq!(a.status, 401, "the cookie is the only place read");

    let a = get(
        &gw.url(&format!("/?access_token={token}")),
        &[("host", "q.test")],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(get(&gw.url("/"), &[("host", "q.test")]).await.status, 401);
}

#[tokio::test]
async fn made_up_kids_do_not_flood_the_provider() {
    let idp = JwksServer::start(jwks(&[rsa_key().jwk("k1", None)])).await;
    let gw = mk_gateway(&format!("    jwksUri: {}\n", idp.url())).await;
    assert_eq!(call(&gw, Some(&mk_token(json!({}))), &[]).await.status, 200);

    let claims = mk_claims(json!({}));
    let flood = (0..200).map(|i| {
        let token = rsa_key().sign(Some(&format!("made-up-{i}")), &claims);
        let gw = &gw;
        async move { call(gw, Some(&token), &[]).await.status }
    });
    let statuses = futures_util::future::join_all(flood).await;

    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert!(idp.fetches() <= 2, "{} fetches", idp.fetches());
}

#[tokio::test]
async fn cached_keys_serve_while_the_provider_is_down_and_across_reloads() {
    let idp = JwksServer::start(jwks(&[rsa_key().jwk("k1", None)])).await;
    let b = echo("b").await;
    let yaml = |extra: &str| {
        route("api", "api.test", b)
            + &jwt_policy(&format!(
                "    jwksUri: {}\n    refreshInterval: 1s\n{extra}",
                idp.url()
            ))
    };
    let gw = TestGateway::start(&yaml("")).await;
    let token = mk_token(json!({}));
    assert_eq!(call(&gw, Some(&token), &[]).await.status, 200);

    idp.set_status(503);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Due for a refresh, which fails in the background; the request is not held up.
    assert_eq!(call(&gw, Some(&token), &[]).await.status, 200);
    eventually_true(|| idp.fetches() >= 2).await;
    assert_eq!(call(&gw, Some(&token), &[]).await.status, 200);

    // A changed Policy is rebuilt, and keeps the keys already fetched.
    std::fs::write(
        gw.config_file(),
        yaml("    claimsToHeaders: [{claim: sub, header: x-user}]\n"),
    )
    .unwrap();
    let mut applied = false;
    for _ in 0..200 {
        let a = call(&gw, Some(&token), &[]).await;
        assert_eq!(a.status, 200);
        if a.echoed_header("x-user").as_deref() == Some("alice") {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(applied, "the edit was not applied");
}

#[tokio::test]
async fn a_jwt_section_that_does_not_build_is_reported_by_field() {
    let gw = mk_gateway("    jwksUri: 'ftp://idp.test/keys'\n    leeway: 10m\n").await;
    let a = call(&gw, Some(&mk_token(json!({}))), &[]).await;
    assert_eq!(a.status, 500);
    assert_eq!(a.json()["error"], "policy_invalid");

    let problems = gw.gw.as_ref().unwrap().snapshot.load().problems.clone();
    let mut fields: Vec<&str> = problems
        .iter()
        .filter(|p| p.kind == "Policy")
        .map(|p| p.field.as_str())
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        ["spec.jwt.jwksUri", "spec.jwt.leeway"],
        "{problems:?}"
    );
}
