//! OAuth2 token introspection against a local provider that counts its calls.

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

/// A provider: `good` is active for a minute with scope `orders:read`, `brief` for one
/// second, anything else inactive. Calls without the gateway's credentials get 401.
async fn provider() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let counter = counter.clone();
                        async move {
                            counter.fetch_add(1, Ordering::SeqCst);
                            // "gateway:s3cret-value" in Basic.
                            let authorized =
                                req.headers().get("authorization").map(|v| v.as_bytes())
                                    == Some(&b"Basic Z2F0ZXdheTpzM2NyZXQtdmFsdWU="[..]);
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let token = form_urlencoded::parse(&body)
                                .find(|(k, _)| k == "token")
                                .map(|(_, v)| v.into_owned())
                                .unwrap_or_default();
                            let now = SystemTime::now()
                                .duration_since(SystemTime::UNIX_EPOCH)
                                .unwrap()
                                .as_secs();
                            let answer = match token.as_str() {
                                "good" => {
                                    serde_json::json!({"active": true, "sub": "alice", "scope": "orders:read profile", "exp": now + 60})
                                }
                                "brief" => {
                                    serde_json::json!({"active": true, "sub": "bob", "scope": "orders:read", "exp": now + 1})
                                }
                                "narrow" => {
                                    serde_json::json!({"active": true, "sub": "carol", "scope": "profile", "exp": now + 60})
                                }
                                _ => serde_json::json!({"active": false}),
                            };
                            let mut resp =
                                http::Response::new(Full::new(Bytes::from(answer.to_string())));
                            if !authorized {
                                *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, calls, task)
}

fn config(backend: SocketAddr, idp: SocketAddr) -> String {
    format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: orders}}\n\
         spec:\n  rules:\n  - backends: [{{address: '{backend}'}}]\n---\n\
         apiVersion: portcullis.dev/v1alpha1\nkind: Policy\nmetadata: {{name: opaque}}\n\
         spec:\n  targetRefs: [{{kind: Route, name: orders}}]\n  introspection:\n    \
         endpoint: http://{idp}/introspect\n    clientId: gateway\n    \
         clientSecretRef: {{name: idp}}\n    requiredScopes: [orders:read]\n    \
         claimsToHeaders: [{{claim: sub, header: x-user}}]\n"
    )
}

async fn gateway(backend: SocketAddr, idp: SocketAddr, secret: &'static str) -> TestGateway {
    TestGateway::with_secrets(
        &config(backend, idp),
        portcullis::proxy::Limits::default(),
        move |dir| {
            std::fs::create_dir(dir.join("idp")).unwrap();
            std::fs::write(dir.join("idp/client-secret"), secret).unwrap();
        },
        None,
    )
    .await
}

async fn call(gw: &TestGateway, token: Option<&str>) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("x-user", "mallory")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b));
    }
    get(&gw.url("/orders"), &headers).await
}

#[tokio::test]
async fn active_tokens_pass_and_answers_are_reused_within_the_token_lifetime() {
    let b = echo("b").await;
    let (idp, calls, _task) = provider().await;
    let gw = gateway(b, idp, "s3cret-value").await;

    let a = call(&gw, Some("good")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.echoed_header("x-user").as_deref(), Some("alice"));
    for _ in 0..5 {
        assert_eq!(call(&gw, Some("good")).await.status, 200);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one call for six requests");

    // A token that expires in a second is asked about again after it did.
    assert_eq!(call(&gw, Some("brief")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = calls.load(Ordering::SeqCst);
    call(&gw, Some("brief")).await;
    assert_eq!(calls.load(Ordering::SeqCst), before + 1);

    let a = call(&gw, Some("forged")).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["error"], "invalid_token");
    assert!(a
        .header("www-authenticate")
        .starts_with("Bearer error=\"invalid_token\""));
    let a = call(&gw, None).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("www-authenticate"), "Bearer");
    let a = call(&gw, Some("narrow")).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["error"], "insufficient_scope");
}

#[tokio::test]
async fn a_provider_that_refuses_or_is_gone_never_lets_a_request_through() {
    let b = echo("b").await;
    let (idp, calls, task) = provider().await;
    // Wrong credentials: the provider answers 401, which is the gateway's problem, not
    // the client's.
    let gw = gateway(b, idp, "wrong-secret").await;
    let a = call(&gw, Some("good")).await;
    assert_eq!(a.status, 503);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    drop(gw);

    let gw = gateway(b, idp, "s3cret-value").await;
    task.abort();
    let _ = task.await;
    let a = call(&gw, Some("good")).await;
    assert_eq!(a.status, 503);
}
