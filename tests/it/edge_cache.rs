//! The `cache` section in front of a real origin that counts its calls: hits and
//! misses, `Vary`, expiry and revalidation, what is never shared, and a cached answer
//! still refused to a caller the Policy refuses.

use crate::{origin::*, support::*};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use bytes::Bytes;
use http_body_util::Full;
use portcullis::{compile::Reason, proxy::Limits};
use serde_json::json;
use std::{net::SocketAddr, time::Duration};

/// Route `api` (every host) to `origin`, and a Policy on it whose sections are
/// `sections` (indented by two spaces).
fn mk_config(origin: SocketAddr, sections: &str) -> String {
    format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: api}}\n\
         spec:\n  rules:\n  - backends: [{{address: '{origin}'}}]\n\
         ---\napiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {{name: edge}}\n\
         spec:\n  targetRefs: [{{kind: Route, name: api}}]\n{sections}"
    )
}

/// An origin answering every request with `headers` and a body naming the path and
/// the call.
async fn mk_origin(headers: &'static [(&'static str, &'static str)]) -> Origin {
    Origin::start(move |req, n| answer(200, headers, format!("{} #{n}", req.uri.path()))).await
}

fn text(a: &Answer) -> String {
    String::from_utf8_lossy(&a.body).into_owned()
}

#[tokio::test]
async fn a_fresh_entry_answers_with_age_and_cache_status() {
    let origin = mk_origin(&[("cache-control", "max-age=60")]).await;
    let gw = TestGateway::start(&mk_config(origin.addr, "  cache: {}\n")).await;

    let a = get(&gw.url("/a"), &[]).await;
    assert_eq!((a.status, text(&a).as_str()), (200, "/a #1"));
    assert_eq!(a.header("cache-status"), "portcullis; fwd=uri-miss");
    assert!(!a.headers.contains_key("age"));

    let a = get(&gw.url("/a"), &[]).await;
    assert_eq!(text(&a), "/a #1");
    assert_eq!(a.header("age"), "0");
    let ttl: u64 = a
        .header("cache-status")
        .strip_prefix("portcullis; hit; ttl=")
        .unwrap_or_else(|| panic!("not a hit: {}", a.header("cache-status")))
        .parse()
        .unwrap();
    assert!((58..=60).contains(&ttl), "ttl={ttl}");
    // The gateway's own fields are fresh on every answer.
    assert!(!a.header("x-request-id").is_empty());

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = get(&gw.url("/a"), &[]).await;
    assert_eq!(text(&a), "/a #1");
    assert_eq!(a.header("age"), "1");
    // Another path is another entry.
    assert_eq!(text(&get(&gw.url("/b"), &[]).await), "/b #2");
    // So is the same path with a query.
    assert_eq!(text(&get(&gw.url("/a?x=1"), &[]).await), "/a #3");
    assert_eq!(origin.calls(), 3);

    let metrics = get(&format!("http://{}/metrics", gw.admin), &[]).await;
    let metrics = text(&metrics);
    for line in [
        "portcullis_cache_lookups_total{result=\"hit\",route=\"default/api\"} 2",
        "portcullis_cache_lookups_total{result=\"miss\",route=\"default/api\"} 3",
        "portcullis_cache_stores_total{route=\"default/api\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    let bytes: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_cache_bytes{policy=\"default/edge\"} "))
        .expect("a byte gauge for the Policy")
        .parse()
        .unwrap();
    assert!(bytes > 0);
}

/// An origin whose fresh answer names the request's `Accept-Language` (`-` without one)
/// and the call, and varies on it.
async fn lang_origin() -> Origin {
    Origin::start(|req, n| {
        let lang = req
            .headers
            .get("accept-language")
            .map_or("-", |v| v.to_str().unwrap());
        answer(
            200,
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            format!("{lang} #{n}"),
        )
    })
    .await
}

#[tokio::test]
async fn vary_keeps_one_variant_per_selecting_header() {
    let origin = lang_origin().await;
    let gw = TestGateway::start(&mk_config(origin.addr, "  cache: {}\n")).await;
    let lang = |l: &'static str| [("accept-language", l)];

    let a = get(&gw.url("/"), &lang("en")).await;
    assert_eq!(
        (text(&a).as_str(), a.header("cache-status")),
        ("en #1", "portcullis; fwd=uri-miss")
    );
    let a = get(&gw.url("/"), &lang("fr")).await;
    assert_eq!(
        (text(&a).as_str(), a.header("cache-status")),
        ("fr #2", "portcullis; fwd=vary-miss")
    );
    assert_eq!(text(&get(&gw.url("/"), &lang("en")).await), "en #1");
    assert_eq!(text(&get(&gw.url("/"), &lang("fr")).await), "fr #2");
    assert_eq!(text(&get(&gw.url("/"), &[]).await), "- #3");
    assert_eq!(text(&get(&gw.url("/"), &[]).await), "- #3");
    assert_eq!(origin.calls(), 3);
    // A field sent on two lines is the whole list, not its first line.
    let two_lines = http::Request::get(gw.url("/two"))
        .header("accept-language", "en")
        .header("accept-language", "fr")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(text(&send(two_lines).await), "en #4");
    let a = get(&gw.url("/two"), &lang("en")).await;
    assert_eq!(
        (text(&a).as_str(), a.header("cache-status")),
        ("en #5", "portcullis; fwd=vary-miss")
    );

    // `Vary: *` matches no later request: never stored.
    let star = Origin::start(|_, n| {
        answer(
            200,
            &[("cache-control", "max-age=60"), ("vary", "*")],
            format!("#{n}"),
        )
    })
    .await;
    let gw = TestGateway::start(&mk_config(star.addr, "  cache: {}\n")).await;
    get(&gw.url("/"), &[]).await;
    assert_eq!(text(&get(&gw.url("/"), &[]).await), "#2");
}

#[tokio::test]
async fn an_expired_entry_goes_back_to_the_origin() {
    let origin = mk_origin(&[("cache-control", "max-age=1")]).await;
    let gw = TestGateway::start(&mk_config(origin.addr, "  cache: {}\n")).await;
    assert_eq!(text(&get(&gw.url("/"), &[]).await), "/ #1");
    assert_eq!(text(&get(&gw.url("/"), &[]).await), "/ #1");

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let a = get(&gw.url("/"), &[]).await;
    assert_eq!(text(&a), "/ #2");
    // Without a validator there is nothing to revalidate: the entry is gone.
    assert_eq!(a.header("cache-status"), "portcullis; fwd=uri-miss");
    assert_eq!(text(&get(&gw.url("/"), &[]).await), "/ #2");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test]
async fn a_stale_entry_is_revalidated_with_its_etag() {
    let origin = Origin::start(|req, n| {
        let cc = ("cache-control", "max-age=1");
        let etag = ("etag", "\"v1\"");
        if req
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            answer(304, &[cc, etag, ("x-checked", "yes")], "")
        } else {
            answer(
                200,
                &[cc, etag, ("content-type", "text/plain")],
                format!("full #{n}"),
            )
        }
    })
    .await;
    let gw = TestGateway::start(&mk_config(origin.addr, "  cache: {}\n")).await;
    assert_eq!(text(&get(&gw.url("/"), &[]).await), "full #1");

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let a = get(&gw.url("/"), &[]).await;
    assert_eq!(origin.calls(), 2);
    assert_eq!(origin.last_request()["if-none-match"], "\"v1\"");
    assert_eq!((a.status, text(&a).as_str()), (200, "full #1"));
    assert_eq!(
        a.header("cache-status"),
        "portcullis; fwd=stale; fwd-status=304"
    );
    // The 304's fields update the stored ones; the body's stay.
    assert_eq!(a.header("x-checked"), "yes");
    assert_eq!(a.header("content-type"), "text/plain");

    // Fresh again for another second.
    let a = get(&gw.url("/"), &[]).await;
    assert!(a.header("cache-status").starts_with("portcullis; hit"));
    assert_eq!(a.header("x-checked"), "yes");
    assert_eq!(origin.calls(), 2);

    // A client asking for a revalidation gets one, though the entry is fresh.
    let a = get(&gw.url("/"), &[("cache-control", "no-cache")]).await;
    assert_eq!(
        a.header("cache-status"),
        "portcullis; fwd=request; fwd-status=304"
    );
    assert_eq!(origin.calls(), 3);
    // Nor can one client's `no-store` take the entry from the others.
    let a = get(&gw.url("/"), &[("cache-control", "no-cache, no-store")]).await;
    assert_eq!(text(&a), "full #1");
    assert_eq!(origin.calls(), 4);
    let a = get(&gw.url("/"), &[]).await;
    assert!(
        a.header("cache-status").starts_with("portcullis; hit"),
        "{}",
        a.header("cache-status")
    );
    assert_eq!(origin.calls(), 4);
}

#[tokio::test]
async fn a_field_named_in_connection_cannot_pick_the_variant_it_is_stored_under() {
    let origin = lang_origin().await;
    let gw = TestGateway::start(&mk_config(origin.addr, "  cache: {}\n")).await;
    // Accept-Language is for this hop only: the backend answers without it...
    let poison = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a.test\r\nAccept-Language: en\r\n\
          Connection: close, accept-language\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(poison.ends_with("- #1"), "{poison}");
    // ...so that answer is stored as the one for no Accept-Language, not for `en`.
    let a = get(
        &gw.url("/"),
        &[("host", "a.test"), ("accept-language", "en")],
    )
    .await;
    assert_eq!(text(&a), "en #2");
    let a = get(&gw.url("/"), &[("host", "a.test")]).await;
    assert_eq!(text(&a), "- #1");
}

#[tokio::test]
async fn a_304_that_forbids_storing_ends_the_entry() {
    let origin = Origin::start(|req, n| {
        let etag = ("etag", "\"v1\"");
        let revalidating = req.headers.get("if-none-match").is_some();
        match (req.uri.path(), revalidating) {
            ("/cookie", true) => answer(304, &[etag, ("set-cookie", "sid=abc")], ""),
            ("/no-store", true) => answer(304, &[etag, ("cache-control", "no-store")], ""),
            ("/private", true) => answer(304, &[etag, ("cache-control", "private")], ""),
            _ => answer(
                200,
                &[("cache-control", "max-age=1"), etag],
                format!("full #{n}"),
            ),
        }
    })
    .await;
    let gw = TestGateway::start(&mk_config(origin.addr, "  cache: {}\n")).await;
    for path in ["/cookie", "/no-store", "/private"] {
        get(&gw.url(path), &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // A client's own no-store keeps its exchange out of the store, but the 304 still
    // decides that the entry may not stay.
    let a = get(&gw.url("/private"), &[("cache-control", "no-store")]).await;
    assert_eq!(
        a.header("cache-status"),
        "portcullis; fwd=stale; fwd-status=304"
    );
    let a = get(&gw.url("/private"), &[]).await;
    assert_eq!(a.header("cache-status"), "portcullis; fwd=uri-miss");
    let a = get(&gw.url("/cookie"), &[]).await;
    assert_eq!(
        a.header("cache-status"),
        "portcullis; fwd=stale; fwd-status=304"
    );
    // The client that revalidated gets the stored body with the new fields...
    assert_eq!(
        (text(&a).as_str(), a.header("set-cookie")),
        ("full #1", "sid=abc")
    );
    assert_eq!(
        get(&gw.url("/no-store"), &[]).await.header("cache-control"),
        "no-store"
    );
    assert_eq!(origin.calls(), 7);
    // ...and no later client is answered from the entry: its cookie was for one.
    for path in ["/cookie", "/no-store"] {
        let a = get(&gw.url(path), &[]).await;
        assert_eq!(
            a.header("cache-status"),
            "portcullis; fwd=uri-miss",
            "{path}"
        );
        assert_eq!(a.header("set-cookie"), "", "{path}");
    }
    assert_eq!(origin.calls(), 9);
}

#[tokio::test]
async fn no_store_private_and_set_cookie_answers_are_not_shared() {
    let origin = Origin::start(|req, n| {
        let headers: &[(&str, &str)] = match req.uri.path() {
            "/no-store" => &[("cache-control", "no-store, max-age=60")],
            "/private" => &[("cache-control", "private, max-age=60")],
            "/cookie" => &[
                ("cache-control", "max-age=60"),
                ("set-cookie", "session=s1"),
            ],
            _ => &[("cache-control", "max-age=60")],
        };
        answer(200, headers, format!("#{n}"))
    })
    .await;
    let gw = TestGateway::start(&mk_config(origin.addr, "  cache: {}\n")).await;
    for path in ["/no-store", "/private", "/cookie"] {
        let before = origin.calls();
        get(&gw.url(path), &[]).await;
        let a = get(&gw.url(path), &[]).await;
        assert_eq!(
            origin.calls(),
            before + 2,
            "{path} was answered from the cache"
        );
        assert_eq!(
            a.header("cache-status"),
            "portcullis; fwd=uri-miss",
            "{path}"
        );
    }
    get(&gw.url("/public"), &[]).await;
    get(&gw.url("/public"), &[]).await;
    assert_eq!(origin.calls(), 7);
}

#[tokio::test]
async fn requests_with_credentials_bypass_the_shared_entries() {
    // `public` would let an RFC 9111 shared cache store an authorised answer; without
    // the identity in the key, this one never does.
    let origin = mk_origin(&[("cache-control", "public, max-age=60")]).await;
    let gw = TestGateway::start(&mk_config(origin.addr, "  cache: {}\n")).await;
    let alice = [("authorization", "Bearer alice")];

    let a = get(&gw.url("/"), &alice).await;
    assert_eq!(a.header("cache-status"), "portcullis; fwd=bypass");
    assert_eq!(text(&get(&gw.url("/"), &alice).await), "/ #2");

    // An anonymous answer is stored, and still not given to a caller with
    // credentials, whose answer may differ.
    assert_eq!(text(&get(&gw.url("/"), &[]).await), "/ #3");
    assert_eq!(text(&get(&gw.url("/"), &[]).await), "/ #3");
    assert_eq!(text(&get(&gw.url("/"), &alice).await), "/ #4");
    assert_eq!(
        text(&get(&gw.url("/"), &[("cookie", "session=a")]).await),
        "/ #5"
    );
}

#[tokio::test]
async fn each_identity_gets_entries_of_its_own() {
    let origin = Origin::start(|req, n| {
        let who = req
            .headers
            .get("authorization")
            .map_or("nobody", |v| v.to_str().unwrap());
        answer(
            200,
            &[("cache-control", "private, max-age=60")],
            format!("{who} #{n}"),
        )
    })
    .await;
    let gw = TestGateway::start(&mk_config(
        origin.addr,
        "  cache: {keyIncludes: [{type: Header, name: Authorization}]}\n",
    ))
    .await;
    let user = |u: &'static str| [("authorization", u)];

    assert_eq!(text(&get(&gw.url("/"), &user("alice")).await), "alice #1");
    assert_eq!(text(&get(&gw.url("/"), &user("bob")).await), "bob #2");
    for _ in 0..2 {
        assert_eq!(text(&get(&gw.url("/"), &user("alice")).await), "alice #1");
        assert_eq!(text(&get(&gw.url("/"), &user("bob")).await), "bob #2");
    }
    // The anonymous answer is `private`: neither stored for everyone nor mixed with
    // the users' own.
    assert_eq!(text(&get(&gw.url("/"), &[]).await), "nobody #3");
    assert_eq!(text(&get(&gw.url("/"), &[]).await), "nobody #4");
    assert_eq!(origin.calls(), 4);

    // A write through the gateway drops the writer's entry, not the others'.
    let post = http::Request::post(gw.url("/"))
        .header("authorization", "alice")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let a = send(post).await;
    assert_eq!(a.header("cache-status"), "portcullis; fwd=method");
    assert_eq!(text(&get(&gw.url("/"), &user("alice")).await), "alice #6");
    assert_eq!(text(&get(&gw.url("/"), &user("bob")).await), "bob #2");
}

#[tokio::test]
async fn hosts_are_kept_apart() {
    let origin = Origin::start(|req, n| {
        let host = req.headers["host"].to_str().unwrap().to_string();
        answer(
            200,
            &[("cache-control", "max-age=60")],
            format!("{host} #{n}"),
        )
    })
    .await;
    let gw = TestGateway::start(&mk_config(origin.addr, "  cache: {}\n")).await;
    let host = |h: &'static str| [("host", h)];
    assert_eq!(text(&get(&gw.url("/"), &host("a.test")).await), "a.test #1");
    assert_eq!(text(&get(&gw.url("/"), &host("b.test")).await), "b.test #2");
    assert_eq!(text(&get(&gw.url("/"), &host("a.test")).await), "a.test #1");
    // The backend receives the Host as sent, so a spelling it could answer
    // differently is an entry of its own.
    assert_eq!(
        text(&get(&gw.url("/"), &host("B.test:80")).await),
        "B.test:80 #3"
    );
    assert_eq!(
        text(&get(&gw.url("/"), &host("B.test:80")).await),
        "B.test:80 #3"
    );
    assert_eq!(origin.calls(), 3);
}

#[tokio::test]
async fn rules_sending_one_url_to_different_backends_are_kept_apart() {
    let stable = mk_origin(&[("cache-control", "max-age=60")]).await;
    let canary = Origin::start(|req, n| {
        answer(
            200,
            &[("cache-control", "max-age=60")],
            format!("canary {} #{n}", req.uri.path()),
        )
    })
    .await;
    let config = format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: api}}\n\
         spec:\n  rules:\n\
         \x20 - matches: [{{headers: [{{name: x-canary, value: 'yes'}}]}}]\n\
         \x20   backends: [{{address: '{}'}}]\n\
         \x20 - backends: [{{address: '{}'}}]\n\
         ---\napiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {{name: edge}}\n\
         spec:\n  targetRefs: [{{kind: Route, name: api}}]\n  cache: {{}}\n",
        canary.addr, stable.addr
    );
    let gw = TestGateway::start(&config).await;
    let canary_hdr = [("x-canary", "yes")];
    assert_eq!(text(&get(&gw.url("/a"), &canary_hdr).await), "canary /a #1");
    assert_eq!(text(&get(&gw.url("/a"), &[]).await), "/a #1");
    assert_eq!(text(&get(&gw.url("/a"), &canary_hdr).await), "canary /a #1");
    assert_eq!(text(&get(&gw.url("/a"), &[]).await), "/a #1");
    assert_eq!((canary.calls(), stable.calls()), (1, 1));
}

#[tokio::test]
async fn bodies_over_the_object_limit_stream_through_uncached() {
    let origin = Origin::start(|req, n| {
        let size: usize = req.uri.path()[1..].parse().unwrap();
        let mut body = format!("#{n} ").into_bytes();
        body.resize(size, b'x');
        answer(200, &[("cache-control", "max-age=60")], body)
    })
    .await;
    let gw = TestGateway::start(&mk_config(origin.addr, "  cache: {maxObjectBytes: 4096}\n")).await;
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/4096"), &[]).await.body.len(), 4096);
        assert_eq!(get(&gw.url("/4097"), &[]).await.body.len(), 4097);
    }
    assert_eq!(
        origin.calls(),
        3,
        "only the body within the limit is stored"
    );
}

#[tokio::test]
async fn a_cached_answer_is_still_refused_to_callers_the_policy_refuses() {
    let secret = b"a secret of the identity provider, 32+ bytes";
    let set = json!({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256",
                               "k": URL_SAFE_NO_PAD.encode(secret)}]})
    .to_string();
    let origin = Origin::start(|req, n| {
        let who = req.headers.get("x-consumer").or(req.headers.get("x-user"));
        let who = who.map_or("-", |v| v.to_str().unwrap());
        answer(
            200,
            &[("cache-control", "max-age=60")],
            format!("{who} #{n}"),
        )
    })
    .await;
    let yaml = mk_config(
        origin.addr,
        "  jwt:\n    keysRef: {name: idp-keys}\n    algorithms: [HS256]\n    \
         claimsToHeaders: [{claim: sub, header: x-user}]\n  \
         cache: {keyIncludes: [{type: Claim, name: sub}]}\n",
    ) + &format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: keyed}}\n\
         spec:\n  hosts: [keyed.test]\n  rules:\n  - backends: [{{address: '{}'}}]\n\
         ---\napiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {{name: keyed}}\n\
         spec:\n  targetRefs: [{{kind: Route, name: keyed}}]\n  \
         apiKeys: {{keysRef: {{name: api-keys}}}}\n  cache: {{keyIncludes: [{{type: Consumer}}]}}\n",
        origin.addr
    );
    let gw = TestGateway::with_secrets(
        &yaml,
        Limits::default(),
        |dir| {
            std::fs::create_dir(dir.join("idp-keys")).unwrap();
            std::fs::write(dir.join("idp-keys/jwks.json"), &set).unwrap();
            std::fs::create_dir(dir.join("api-keys")).unwrap();
            std::fs::write(
                dir.join("api-keys/keys.yaml"),
                "web: web-key-0123456789abcdef\nmobile: mobile-key-0123456789abcdef\n",
            )
            .unwrap();
        },
        None,
    )
    .await;

    let token = |sub: &str, exp: i64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("k1".into());
        let claims = json!({"sub": sub, "exp": now + exp});
        let key = jsonwebtoken::EncodingKey::from_secret(secret).unwrap();
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        )
    };
    let alice = token("alice", 600);
    let a = get(&gw.url("/"), &[("authorization", &alice)]).await;
    assert_eq!(text(&a), "alice #1");
    // Another token of the same subject shares the subject's entries.
    let alice_again = token("alice", 300);
    let a = get(&gw.url("/"), &[("authorization", &alice_again)]).await;
    assert_eq!(text(&a), "alice #1");
    assert!(a.header("cache-status").contains("hit"));
    assert_eq!(get(&gw.url("/"), &[]).await.status, 401);
    let expired = token("alice", -600);
    assert_eq!(
        get(&gw.url("/"), &[("authorization", &expired)])
            .await
            .status,
        401
    );
    assert_eq!(
        text(&get(&gw.url("/"), &[("authorization", &token("bob", 600))]).await),
        "bob #2"
    );

    let keyed = |k: &'static str| [("host", "keyed.test"), ("x-api-key", k)];
    assert_eq!(
        text(&get(&gw.url("/"), &keyed("web-key-0123456789abcdef")).await),
        "web #3"
    );
    assert_eq!(
        text(&get(&gw.url("/"), &keyed("web-key-0123456789abcdef")).await),
        "web #3"
    );
    assert_eq!(
        text(&get(&gw.url("/"), &keyed("mobile-key-0123456789abcdef")).await),
        "mobile #4"
    );
    assert_eq!(
        get(&gw.url("/"), &keyed("wrong-key-0123456789abcdef"))
            .await
            .status,
        401
    );
    assert_eq!(
        get(&gw.url("/"), &[("host", "keyed.test")]).await.status,
        401
    );
    assert_eq!(origin.calls(), 4);
}

#[tokio::test]
async fn a_bad_cache_section_names_its_field() {
    let origin = mk_origin(&[]).await;
    let gw = TestGateway::start(&mk_config(
        origin.addr,
        "  cache:\n    maxBytes: 2048\n    maxObjectBytes: 4096\n    \
         keyIncludes: [{type: Header, name: 'bad header'}, {type: Claim}]\n",
    ))
    .await;
    let problems = gw.gw.as_ref().unwrap().snapshot.load().problems.clone();
    let found: Vec<(String, Reason)> = problems
        .iter()
        .filter(|p| p.kind == "Policy")
        .map(|p| (p.field.clone(), p.reason))
        .collect();
    assert_eq!(
        found,
        [
            (
                "spec.cache.keyIncludes[0].name".to_string(),
                Reason::Invalid
            ),
            (
                "spec.cache.keyIncludes[1].name".to_string(),
                Reason::Invalid
            ),
            ("spec.cache.maxObjectBytes".to_string(), Reason::Invalid),
        ]
    );
    // A Policy that never built closes its Route rather than serve it unguarded.
    assert_eq!(get(&gw.url("/"), &[]).await.status, 500);
}
