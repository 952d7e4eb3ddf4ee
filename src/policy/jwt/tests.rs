use super::*;
use crate::policy::jwks::{
    test_tokens::{b64_json, jwks, now, other_rsa_key, rsa_key, JwksServer, TestKey},
    JwksOptions,
};
use serde_json::json;

const ISS: &str = "https://idp.example";

fn mk_spec(yaml: &str) -> JwtPolicy {
    serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("{e}: {yaml}"))
}

/// A policy reading keys from a Secret whose `jwks.json` holds `keys`.
fn mk_auth(yaml: &str, keys: &[Value]) -> JwtAuth {
    let spec = mk_spec(&format!("keysRef: {{name: keys}}\n{yaml}"));
    let keys: Arc<[u8]> = jwks(keys).into_bytes().into();
    JwtAuth::build(&spec, Some(&keys), &JwksRegistry::new()).unwrap_or_else(|e| panic!("{e:?}"))
}

/// The usual policy: RS256 keys `k1` (the test key) from a Secret.
fn mk_rsa_auth(yaml: &str) -> JwtAuth {
    mk_auth(yaml, &[rsa_key().jwk("k1", None)])
}

/// Claims valid for ten minutes, plus `extra`.
fn mk_claims(extra: Value) -> Value {
    let mut claims = json!({"sub": "alice", "iss": ISS, "exp": now() + 600});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn mk_token(extra: Value) -> String {
    rsa_key().sign(Some("k1"), &mk_claims(extra))
}

fn mk_headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (k, v) in pairs {
        headers.append(
            HeaderName::try_from(*k).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    headers
}

async fn check(auth: &JwtAuth, token: &str) -> Result<Option<Claims>, JwtDenied> {
    let bearer = format!("Bearer {token}");
    auth.authenticate(&mk_headers(&[("authorization", &bearer)]), None)
        .await
}

async fn refusal(auth: &JwtAuth, token: &str) -> JwtDenied {
    check(auth, token).await.expect_err("refused")
}

fn build_errors(yaml: &str, keys: Option<&str>) -> Vec<(String, String)> {
    let spec = mk_spec(yaml);
    let keys: Option<Arc<[u8]>> = keys.map(|k| k.as_bytes().into());
    JwtAuth::build(&spec, keys.as_ref(), &JwksRegistry::new()).expect_err("refused")
}

fn fields(errors: &[(String, String)]) -> Vec<&str> {
    errors.iter().map(|(f, _)| f.as_str()).collect()
}

const INVALID_SIG: JwtDenied = JwtDenied::Invalid("signature does not verify");
const NO_KEY: JwtDenied = JwtDenied::Invalid("no key for this token");
const NOT_ALLOWED: JwtDenied = JwtDenied::Invalid("algorithm not allowed");

// --- where the token comes from ---

#[tokio::test]
async fn the_bearer_scheme_is_read_in_any_case() {
    let auth = mk_rsa_auth("");
    let token = mk_token(json!({}));
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let value = format!("{scheme} {token}");
        let got = auth
            .authenticate(&mk_headers(&[("authorization", &value)]), None)
            .await;
        assert_eq!(
            got.unwrap().unwrap().get_str("sub").as_deref(),
            Some("alice")
        );
    }
}

#[tokio::test]
async fn no_bearer_token_is_missing_and_an_empty_or_doubled_one_invalid() {
    let auth = mk_rsa_auth("");
    let token = mk_token(json!({}));
    let bearer = format!("Bearer {token}");
    let cases: [(&[(&str, &str)], JwtDenied); 5] = [
        (&[], JwtDenied::Missing),
        (
            &[("authorization", "Basic YWxpY2U6c2VjcmV0")],
            JwtDenied::Missing,
        ),
        (&[("x-token", &token)], JwtDenied::Missing),
        (
            &[("authorization", "Bearer ")],
            JwtDenied::Invalid("malformed token"),
        ),
        (
            &[("authorization", &bearer), ("authorization", &bearer)],
            JwtDenied::Invalid("more than one token"),
        ),
    ];
    for (headers, want) in cases {
        let got = auth.authenticate(&mk_headers(headers), None).await;
        assert_eq!(got, Err(want), "{headers:?}");
    }
}

#[tokio::test]
async fn a_configured_header_carries_the_bare_token() {
    let auth = mk_rsa_auth("from: {header: X-Token}");
    let token = mk_token(json!({}));
    let ok = auth
        .authenticate(&mk_headers(&[("x-token", &token)]), None)
        .await;
    assert!(ok.unwrap().is_some());

    let bearer = format!("Bearer {token}");
    let elsewhere = auth
        .authenticate(&mk_headers(&[("authorization", &bearer)]), None)
        .await;
    assert_eq!(elsewhere, Err(JwtDenied::Missing));

    // `Authorization` named explicitly keeps the scheme.
    let auth = mk_rsa_auth("from: {header: Authorization}");
    let ok = auth
        .authenticate(&mk_headers(&[("authorization", &bearer)]), None)
        .await;
    assert!(ok.unwrap().is_some());
}

#[tokio::test]
async fn a_cookie_carries_the_token() {
    let auth = mk_rsa_auth("from: {cookie: session}");
    let token = mk_token(json!({}));
    let cookie = format!("theme=dark; session={token}; lang=en");
    let ok = auth
        .authenticate(&mk_headers(&[("cookie", &cookie)]), None)
        .await;
    assert!(ok.unwrap().is_some());

    let other = auth
        .authenticate(&mk_headers(&[("cookie", "theme=dark; sessionx=abc")]), None)
        .await;
    assert_eq!(other, Err(JwtDenied::Missing));
}

#[tokio::test]
async fn a_query_parameter_carries_the_token() {
    let auth = mk_rsa_auth("from: {query: access_token}");
    let token = mk_token(json!({}));
    let query = format!("page=2&access_token={token}");
    let ok = auth.authenticate(&HeaderMap::new(), Some(&query)).await;
    assert!(ok.unwrap().is_some());

    let none = auth.authenticate(&HeaderMap::new(), Some("page=2")).await;
    assert_eq!(none, Err(JwtDenied::Missing));
    let two = format!("access_token={token}&access_token={token}");
    let two = auth.authenticate(&HeaderMap::new(), Some(&two)).await;
    assert_eq!(two, Err(JwtDenied::Invalid("more than one token")));
}

// --- the algorithm and the key ---

#[tokio::test]
async fn alg_none_is_refused() {
    let auth = mk_rsa_auth("");
    let claims = b64_json(&mk_claims(json!({})));
    for alg in ["none", "None", "NONE"] {
        let header = b64_json(&json!({"alg": alg, "kid": "k1"}));
        assert_eq!(
            refusal(&auth, &format!("{header}.{claims}.")).await,
            NOT_ALLOWED
        );
    }
    // With a signature part copied from a real token, too.
    let real = mk_token(json!({}));
    let sig = real.rsplit('.').next().unwrap();
    let header = b64_json(&json!({"alg": "none"}));
    assert_eq!(
        refusal(&auth, &format!("{header}.{claims}.{sig}")).await,
        NOT_ALLOWED
    );
}

#[tokio::test]
async fn an_algorithm_outside_the_allow_list_is_refused_even_with_a_key() {
    let ec = TestKey::ec(Algorithm::ES256);
    let keys = [rsa_key().jwk("k1", None), ec.jwk("e1", None)];
    // The default list is RS256 alone.
    let auth = mk_auth("", &keys);
    let token = ec.sign(Some("e1"), &mk_claims(json!({})));
    assert_eq!(refusal(&auth, &token).await, NOT_ALLOWED);

    let auth = mk_auth("algorithms: [RS256, ES256]", &keys);
    assert!(check(&auth, &token).await.unwrap().is_some());
}

#[tokio::test]
async fn an_hmac_token_keyed_with_the_rsa_public_key_is_refused() {
    let rsa = rsa_key();
    let auth = mk_auth("algorithms: [RS256, HS256]", &[rsa.jwk("k1", None)]);
    let claims = mk_claims(json!({}));
    let secrets: [Vec<u8>; 2] = [
        rsa.public_pem.clone(),
        rsa.jwk("k1", None).to_string().into_bytes(),
    ];
    for secret in secrets {
        let forger = TestKey::hmac_from(Algorithm::HS256, &secret);
        for kid in [Some("k1"), None] {
            let token = forger.sign(kid, &claims);
            assert_eq!(refusal(&auth, &token).await, NO_KEY, "kid {kid:?}");
        }
    }
}

#[tokio::test]
async fn keys_in_the_token_header_are_ignored() {
    let auth = mk_rsa_auth("");
    let attacker = other_rsa_key();
    let server = JwksServer::start(jwks(&[attacker.jwk("evil", None)])).await;
    let claims = mk_claims(json!({}));
    let evil_jwk = attacker.jwk("evil", None);
    let headers = [
        json!({"alg": "RS256", "jwk": evil_jwk}),
        json!({"alg": "RS256", "kid": "evil", "jwk": evil_jwk}),
        json!({"alg": "RS256", "kid": "evil", "jku": server.url()}),
        json!({"alg": "RS256", "x5u": server.url()}),
        json!({"alg": "RS256", "x5c": ["MIIBaDCCAQ6gAwIBAgIBATAKBggqhkjOPQQDAjAAMB4XDQ=="]}),
    ];
    for header in &headers {
        let token = attacker.sign_with_header(header, &claims);
        let got = refusal(&auth, &token).await;
        assert!(got == INVALID_SIG || got == NO_KEY, "{header}: {got:?}");
    }
    assert_eq!(server.fetches(), 0, "no URL in a token is fetched");

    // A genuine token that carries such members still passes: they are not read.
    for mut header in headers {
        header["kid"] = json!("k1");
        let token = rsa_key().sign_with_header(&header, &claims);
        assert!(check(&auth, &token).await.unwrap().is_some(), "{header}");
    }
    assert_eq!(server.fetches(), 0);
}

#[tokio::test]
async fn a_key_bound_to_another_algorithm_or_of_another_kind_is_not_used() {
    let rsa = rsa_key();
    let p384 = TestKey::ec(Algorithm::ES384);
    let p256 = TestKey::ec(Algorithm::ES256);
    let keys = [
        rsa.jwk("rs384-only", Some("RS384")),
        p384.jwk("p384", None),
        p256.jwk("p256", None),
    ];
    let auth = mk_auth("algorithms: [RS256, ES256]", &keys);
    let claims = mk_claims(json!({}));

    assert_eq!(
        refusal(&auth, &rsa.sign(Some("rs384-only"), &claims)).await,
        NO_KEY
    );
    assert_eq!(refusal(&auth, &rsa.sign(None, &claims)).await, NO_KEY);
    // An ES256 token naming the P-384 key, signed with that key's curve or not.
    let es256_as_p384 = p256.sign_with_header(&json!({"alg": "ES256", "kid": "p384"}), &claims);
    assert_eq!(refusal(&auth, &es256_as_p384).await, NO_KEY);
    assert!(check(&auth, &p256.sign(Some("p256"), &claims))
        .await
        .is_ok());
}

#[tokio::test]
async fn kid_selects_the_key_and_without_kid_every_fitting_key_is_tried() {
    let keys = [rsa_key().jwk("k1", None), other_rsa_key().jwk("k2", None)];
    let auth = mk_auth("", &keys);
    let claims = mk_claims(json!({}));
    let by_other = |kid| other_rsa_key().sign(kid, &claims);

    assert!(check(&auth, &by_other(Some("k2"))).await.is_ok());
    assert!(check(&auth, &by_other(None)).await.is_ok());
    assert_eq!(refusal(&auth, &by_other(Some("k1"))).await, INVALID_SIG);
    assert_eq!(refusal(&auth, &by_other(Some("k9"))).await, NO_KEY);
}

#[tokio::test]
async fn ec_eddsa_and_hmac_keys_verify_their_tokens() {
    let ec = TestKey::ec(Algorithm::ES256);
    let ed = TestKey::ed25519();
    let hmac = TestKey::hmac(Algorithm::HS384);
    let auth = mk_auth(
        "algorithms: [ES256, EdDSA, HS384]",
        &[
            ec.jwk("e1", Some("ES256")),
            ed.jwk("d1", None),
            hmac.jwk("h1", None),
        ],
    );
    let claims = mk_claims(json!({}));
    assert!(check(&auth, &ec.sign(Some("e1"), &claims)).await.is_ok());
    assert!(check(&auth, &ed.sign(None, &claims)).await.is_ok());
    assert!(check(&auth, &hmac.sign(Some("h1"), &claims)).await.is_ok());
    assert!(check(&auth, &hmac.sign(None, &claims)).await.is_ok());
    let wrong = TestKey::hmac(Algorithm::HS384).sign(Some("h1"), &claims);
    assert_eq!(refusal(&auth, &wrong).await, INVALID_SIG);
}

#[tokio::test]
async fn a_changed_payload_or_a_mangled_token_is_refused() {
    let auth = mk_rsa_auth("");
    let token = mk_token(json!({}));
    let parts: Vec<&str> = token.split('.').collect();
    let forged = b64_json(&mk_claims(json!({"sub": "admin"})));
    let swapped = format!("{}.{forged}.{}", parts[0], parts[2]);
    assert_eq!(refusal(&auth, &swapped).await, INVALID_SIG);

    let malformed = JwtDenied::Invalid("malformed token");
    for bad in [
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.e30.sig",
        &format!("{}.{}", parts[0], parts[1]),
    ] {
        assert_eq!(refusal(&auth, bad).await, malformed, "{bad}");
    }
}

// --- registered claims ---

#[tokio::test]
async fn the_issuer_must_be_the_configured_string() {
    let auth = mk_rsa_auth(&format!("issuer: {ISS}"));
    assert!(check(&auth, &mk_token(json!({}))).await.is_ok());
    let bad = JwtDenied::Invalid("issuer not accepted");
    for iss in [json!("https://evil.example"), json!([ISS]), Value::Null] {
        assert_eq!(
            refusal(&auth, &mk_token(json!({"iss": iss}))).await,
            bad,
            "{iss}"
        );
    }
}

#[tokio::test]
async fn the_audience_must_contain_one_of_the_configured() {
    let auth = mk_rsa_auth("audiences: [api, admin]");
    for aud in [json!("api"), json!("admin"), json!(["other", "admin"])] {
        assert!(
            check(&auth, &mk_token(json!({"aud": aud}))).await.is_ok(),
            "{aud}"
        );
    }
    let bad = JwtDenied::Invalid("audience not accepted");
    for aud in [
        json!("other"),
        json!(["other", "web"]),
        json!([]),
        Value::Null,
    ] {
        assert_eq!(
            refusal(&auth, &mk_token(json!({"aud": aud}))).await,
            bad,
            "{aud}"
        );
    }

    // Without audiences, any `aud` passes.
    let auth = mk_rsa_auth("");
    assert!(check(&auth, &mk_token(json!({"aud": "whatever"})))
        .await
        .is_ok());
}

#[tokio::test]
async fn exp_is_required_and_checked_with_the_leeway() {
    let auth = mk_rsa_auth("");
    let expired = JwtDenied::Invalid("token expired");
    assert!(
        check(&auth, &mk_token(json!({"exp": now() - 10})))
            .await
            .is_ok(),
        "within 30s"
    );
    assert_eq!(
        refusal(&auth, &mk_token(json!({"exp": now() - 60}))).await,
        expired
    );
    assert_eq!(
        refusal(&auth, &mk_token(json!({"exp": Value::Null}))).await,
        JwtDenied::Invalid("token has no expiry")
    );
    // An `exp` that is not a number is no expiry.
    assert_eq!(
        refusal(&auth, &mk_token(json!({"exp": "tomorrow"}))).await,
        JwtDenied::Invalid("token has no expiry")
    );

    let strict = mk_rsa_auth("leeway: 0s");
    assert_eq!(
        refusal(&strict, &mk_token(json!({"exp": now() - 5}))).await,
        expired
    );

    let lax = mk_rsa_auth("requireExpiry: false");
    assert!(check(&lax, &mk_token(json!({"exp": Value::Null})))
        .await
        .is_ok());
    assert_eq!(
        refusal(&lax, &mk_token(json!({"exp": now() - 60}))).await,
        expired
    );
    assert_eq!(
        refusal(&lax, &mk_token(json!({"exp": "tomorrow"}))).await,
        JwtDenied::Invalid("malformed claims")
    );
}

#[tokio::test]
async fn nbf_is_checked_with_the_leeway() {
    let auth = mk_rsa_auth("leeway: 1m");
    assert!(check(&auth, &mk_token(json!({"nbf": now() + 30})))
        .await
        .is_ok());
    assert_eq!(
        refusal(&auth, &mk_token(json!({"nbf": now() + 120}))).await,
        JwtDenied::Invalid("token not yet valid")
    );
}

// --- authorization on claims ---

#[tokio::test]
async fn required_claims_must_be_present() {
    let auth = mk_rsa_auth("requiredClaims: [email, tenant]");
    let ok = mk_token(json!({"email": "a@example.com", "tenant": "t1"}));
    assert!(check(&auth, &ok).await.is_ok());

    for claims in [
        json!({"email": "a@example.com"}),
        json!({"email": "a@example.com", "tenant": null}),
    ] {
        let got = refusal(&auth, &mk_token(claims)).await;
        assert_eq!(
            got,
            JwtDenied::Forbidden("the token has no claim tenant".into())
        );
        assert_eq!(got.status(), StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn required_scopes_come_from_scope_or_scp() {
    let auth = mk_rsa_auth("requiredScopes: [orders.read, orders.write]");
    for granted in [
        json!({"scope": "profile orders.read orders.write"}),
        json!({"scp": ["orders.write", "orders.read"]}),
        json!({"scp": "orders.read orders.write"}),
        json!({"scope": "orders.read", "scp": ["orders.write"]}),
    ] {
        assert!(
            check(&auth, &mk_token(granted.clone())).await.is_ok(),
            "{granted}"
        );
    }
    let got = refusal(&auth, &mk_token(json!({"scope": "orders.read"}))).await;
    assert_eq!(got, JwtDenied::InsufficientScope("orders.write".into()));
    assert_eq!(got.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        got.www_authenticate().unwrap(),
        "Bearer error=\"insufficient_scope\", scope=\"orders.write\""
    );
    // A scope is a whole word, not a prefix.
    let got = refusal(
        &auth,
        &mk_token(json!({"scope": "orders.readx orders.write"})),
    )
    .await;
    assert_eq!(got, JwtDenied::InsufficientScope("orders.read".into()));
}

#[tokio::test]
async fn rules_accept_a_value_or_one_value_of_a_list() {
    let auth = mk_rsa_auth(
        "rules:\n- {claim: role, values: [admin, ops]}\n- {claim: level, values: ['3', 'true']}",
    );
    for claims in [
        json!({"role": "admin", "level": 3}),
        json!({"role": ["viewer", "ops"], "level": "3"}),
        json!({"role": "ops", "level": true}),
    ] {
        assert!(
            check(&auth, &mk_token(claims.clone())).await.is_ok(),
            "{claims}"
        );
    }
    let role = JwtDenied::Forbidden("claim role has no allowed value".into());
    for claims in [
        json!({"role": "viewer", "level": 3}),
        json!({"role": ["viewer"], "level": 3}),
        json!({"role": {"name": "admin"}, "level": 3}),
        json!({"level": 3}),
    ] {
        assert_eq!(
            refusal(&auth, &mk_token(claims.clone())).await,
            role,
            "{claims}"
        );
    }
    let level = refusal(&auth, &mk_token(json!({"role": "admin", "level": 4}))).await;
    assert_eq!(
        level,
        JwtDenied::Forbidden("claim level has no allowed value".into())
    );
    assert_eq!(level.www_authenticate(), None);
}

// --- claims to headers ---

#[tokio::test]
async fn claims_are_copied_to_headers_replacing_the_clients() {
    let auth = mk_rsa_auth(
        "claimsToHeaders:\n\
         - {claim: sub, header: x-user}\n\
         - {claim: groups, header: x-groups}\n\
         - {claim: age, header: x-age}\n\
         - {claim: admin, header: x-admin}\n\
         - {claim: missing, header: x-missing}\n\
         - {claim: nested, header: x-nested}",
    );
    let token = mk_token(json!({
        "groups": ["a", "b", 3], "age": 42, "admin": false, "nested": {"a": 1}
    }));
    let claims = check(&auth, &token).await.unwrap();
    let mut headers = mk_headers(&[
        ("x-user", "mallory"),
        ("x-user", "eve"),
        ("x-missing", "forged"),
        ("x-nested", "forged"),
        ("x-other", "kept"),
    ]);
    auth.apply_headers(claims.as_ref(), &mut headers).unwrap();

    let values = |name: &str| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(values("x-user"), ["alice"]);
    assert_eq!(values("x-groups"), ["a,b,3"]);
    assert_eq!(values("x-age"), ["42"]);
    assert_eq!(values("x-admin"), ["false"]);
    assert!(values("x-missing").is_empty());
    assert!(values("x-nested").is_empty());
    assert_eq!(values("x-other"), ["kept"]);
}

#[tokio::test]
async fn a_claim_with_a_line_break_or_nul_refuses_the_request() {
    let auth = mk_rsa_auth("claimsToHeaders: [{claim: sub, header: x-user}]");
    for sub in [
        "alice\r\nx-admin: true",
        "alice\nbob",
        "alice\rbob",
        "alice\0",
        "a\u{1}b",
    ] {
        let claims = check(&auth, &mk_token(json!({"sub": sub}))).await.unwrap();
        let mut headers = HeaderMap::new();
        let got = auth.apply_headers(claims.as_ref(), &mut headers);
        let err = got.expect_err(sub);
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            err,
            JwtDenied::Invalid("a claim cannot be sent as a header")
        );
    }
    // Other text, UTF-8 included, passes.
    let claims = check(&auth, &mk_token(json!({"sub": "zoë\tx"})))
        .await
        .unwrap();
    let mut headers = HeaderMap::new();
    auth.apply_headers(claims.as_ref(), &mut headers).unwrap();
    assert_eq!(headers["x-user"].as_bytes(), "zoë\tx".as_bytes());
}

// --- optional ---

#[tokio::test]
async fn optional_lets_requests_without_a_token_pass_but_not_bad_tokens() {
    let auth = mk_rsa_auth("optional: true\nclaimsToHeaders: [{claim: sub, header: x-user}]");
    let mut headers = mk_headers(&[("x-user", "forged")]);
    let anonymous = auth.authenticate(&headers, None).await.unwrap();
    assert_eq!(anonymous, None);
    auth.apply_headers(None, &mut headers).unwrap();
    assert!(headers.get("x-user").is_none(), "no identity is passed on");

    let expired = mk_token(json!({"exp": now() - 3600}));
    assert_eq!(
        refusal(&auth, &expired).await,
        JwtDenied::Invalid("token expired")
    );
    assert_eq!(
        refusal(&auth, "garbage").await,
        JwtDenied::Invalid("malformed token")
    );
    assert!(check(&auth, &mk_token(json!({}))).await.unwrap().is_some());
}

// --- answers ---

#[test]
fn refusals_carry_the_status_and_challenge_of_rfc_6750() {
    let missing = JwtDenied::Missing;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.www_authenticate().unwrap(), "Bearer");

    let invalid = JwtDenied::Invalid("token expired");
    assert_eq!(invalid.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        invalid.www_authenticate().unwrap(),
        "Bearer error=\"invalid_token\", error_description=\"token expired\""
    );
    assert_eq!(
        invalid.message(),
        "the token is not accepted: token expired"
    );

    let forbidden = JwtDenied::Forbidden("claim role has no allowed value".into());
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    assert_eq!(forbidden.www_authenticate(), None);

    let down = JwtDenied::KeysUnavailable;
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.www_authenticate(), None);
}

#[test]
fn claims_give_rate_limit_keys_as_text() {
    let claims = Claims(
        json!({"sub": "alice", "n": 7, "b": true, "l": ["x"], "o": {}})
            .as_object()
            .unwrap()
            .clone(),
    );
    assert_eq!(claims.get_str("sub").as_deref(), Some("alice"));
    assert_eq!(claims.get_str("n").as_deref(), Some("7"));
    assert_eq!(claims.get_str("b").as_deref(), Some("true"));
    assert_eq!(claims.get_str("l"), None);
    assert_eq!(claims.get_str("o"), None);
    assert_eq!(claims.get_str("absent"), None);
}

// --- build ---

#[test]
fn build_reports_each_bad_field_by_path() {
    let keys = jwks(&[rsa_key().jwk("k1", None)]);
    let errors = build_errors(
        "keysRef: {name: keys}\n\
         leeway: 10m\n\
         refreshInterval: 0s\n\
         issuer: ''\n\
         audiences: [api, '']\n\
         requiredClaims: ['']\n\
         requiredScopes: [ok, 'two words', 'q\"uote']\n\
         rules: [{claim: '', values: [a]}, {claim: role, values: []}]\n\
         from: {header: 'bad header'}\n\
         claimsToHeaders:\n\
         - {claim: sub, header: x-user}\n\
         - {claim: email, header: X-User}\n\
         - {claim: sub, header: content-length}\n\
         - {claim: sub, header: 'no good'}\n\
         - {claim: '', header: x-empty}",
        Some(&keys),
    );
    assert_eq!(
        fields(&errors),
        [
            "leeway",
            "refreshInterval",
            "from.header",
            "issuer",
            "audiences[1]",
            "requiredClaims[0]",
            "requiredScopes[1]",
            "requiredScopes[2]",
            "rules[0].claim",
            "rules[1].values",
            "claimsToHeaders[1].header",
            "claimsToHeaders[2].header",
            "claimsToHeaders[3].header",
            "claimsToHeaders[4].claim",
        ],
        "{errors:#?}"
    );
}

#[test]
fn build_needs_exactly_one_key_source_and_usable_keys() {
    let keys = jwks(&[rsa_key().jwk("k1", None)]);
    let both = "jwksUri: https://idp.example/keys\nkeysRef: {name: keys}";
    assert_eq!(fields(&build_errors(both, Some(&keys))), ["jwksUri"]);
    assert_eq!(fields(&build_errors("issuer: x", None)), ["jwksUri"]);

    for uri in ["ftp://idp.example/keys", "/keys", "not a url"] {
        let errors = build_errors(&format!("jwksUri: '{uri}'"), None);
        assert_eq!(fields(&errors), ["jwksUri"], "{uri}");
    }

    let secret = "keysRef: {name: keys}";
    assert_eq!(
        build_errors(secret, None)[0].1,
        "the Secret has no jwks.json"
    );
    assert!(build_errors(secret, Some("{}"))[0]
        .1
        .starts_with("jwks.json: not a JSON Web Key Set"));
    let errors = build_errors(&format!("{secret}\nalgorithms: [ES256]"), Some(&keys));
    assert_eq!(
        errors[0],
        (
            "keysRef".into(),
            "jwks.json has no key for ES256 (0 keys skipped as unusable)".into()
        )
    );

    let two = "keysRef: {name: keys}\nfrom: {header: x-token, cookie: session}";
    assert_eq!(fields(&build_errors(two, Some(&keys))), ["from"]);
}

// --- keys fetched from a provider ---

fn mk_fetching(server: &JwksServer, registry: &JwksRegistry, yaml: &str) -> JwtAuth {
    let spec = mk_spec(&format!("jwksUri: {}\n{yaml}", server.url()));
    JwtAuth::build(&spec, None, registry).unwrap()
}

#[tokio::test]
async fn made_up_kids_cannot_flood_the_provider() {
    let server = JwksServer::start(jwks(&[rsa_key().jwk("k1", None)])).await;
    let auth = Arc::new(mk_fetching(&server, &JwksRegistry::new(), ""));
    assert!(check(&auth, &mk_token(json!({}))).await.is_ok());

    let claims = mk_claims(json!({}));
    let flood = (0..200).map(|i| {
        let auth = auth.clone();
        let token = rsa_key().sign(Some(&format!("made-up-{i}")), &claims);
        async move { check(&auth, &token).await }
    });
    let answers = futures_util::future::join_all(flood).await;

    assert!(answers.iter().all(|a| *a == Err(NO_KEY)));
    assert!(server.fetches() <= 2, "{} fetches", server.fetches());
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_after_the_cooldown() {
    let server = JwksServer::start(jwks(&[rsa_key().jwk("k1", None)])).await;
    let registry = JwksRegistry::with_options(JwksOptions {
        cooldown: Duration::from_millis(500),
        ..JwksOptions::default()
    });
    let auth = mk_fetching(&server, &registry, "");
    let rotated = other_rsa_key().sign(Some("k2"), &mk_claims(json!({})));
    let rotated_set = jwks(&[other_rsa_key().jwk("k2", None)]);
    assert!(check(&auth, &mk_token(json!({}))).await.is_ok());

    server.set_body(rotated_set);
    assert_eq!(
        refusal(&auth, &rotated).await,
        NO_KEY,
        "within the cooldown"
    );
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert!(check(&auth, &rotated).await.is_ok());
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_provider_is_down() {
    let server = JwksServer::start(jwks(&[rsa_key().jwk("k1", None)])).await;
    let registry = JwksRegistry::with_options(JwksOptions {
        cooldown: Duration::from_millis(50),
        ..JwksOptions::default()
    });
    let auth = mk_fetching(&server, &registry, "refreshInterval: 1s");
    let token = mk_token(json!({}));
    assert!(check(&auth, &token).await.is_ok());

    server.set_status(503);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..5 {
        // Misses and scheduled refreshes both try the provider, and fail.
        let unknown = rsa_key().sign(Some(&format!("new-{i}")), &mk_claims(json!({})));
        assert_eq!(refusal(&auth, &unknown).await, NO_KEY);
        assert!(check(&auth, &token).await.is_ok());
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert!(server.fetches() >= 3, "{} fetches", server.fetches());
}

#[tokio::test]
async fn no_keys_ever_fetched_is_a_503_not_a_401() {
    let server = JwksServer::start(String::new()).await;
    server.set_status(500);
    let auth = mk_fetching(&server, &JwksRegistry::new(), "");
    let got = refusal(&auth, &mk_token(json!({}))).await;
    assert_eq!(got, JwtDenied::KeysUnavailable);
    assert_eq!(got.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_rebuilt_policy_keeps_the_fetched_keys() {
    let server = JwksServer::start(jwks(&[rsa_key().jwk("k1", None)])).await;
    let registry = JwksRegistry::new();
    let first = mk_fetching(&server, &registry, "");
    assert!(check(&first, &mk_token(json!({}))).await.is_ok());

    // Another policy, or the same one after a recompile, naming the same URL.
    let second = mk_fetching(&server, &registry, "audiences: [api]");
    drop(first);
    assert!(check(&second, &mk_token(json!({"aud": "api"})))
        .await
        .is_ok());
    assert_eq!(server.fetches(), 1);
}
