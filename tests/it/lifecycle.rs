//! Reloads, rejected changes, graceful shutdown and the `check` command.

use crate::support::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::time::{Duration, Instant};

/// Polls until `f` returns true or 10 s pass.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn metric(gw: &TestGateway, line_start: &str) -> Option<f64> {
    let text = String::from_utf8(
        get(&format!("http://{}/metrics", gw.admin), &[])
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test]
async fn file_changes_reload_and_bad_changes_keep_the_last_good_config() {
    let (a, b) = (echo("a").await, echo("b").await);
    let gw = TestGateway::start(&route_to("r", a)).await;
    assert_eq!(get(&gw.url("/"), &[]).await.header("x-echo-name"), "a");

    // A good change is picked up.
    std::fs::write(gw.config_file(), route_to("r", b)).unwrap();
    eventually("the new backend", async || {
        get(&gw.url("/"), &[]).await.header("x-echo-name") == "b"
    })
    .await;

    // A change that does not parse is refused whole; b keeps serving.
    std::fs::write(
        gw.config_file(),
        format!("{}  bogusField: 1\n", route_to("r", a)),
    )
    .unwrap();
    eventually("a refused reload", async || {
        metric(&gw, "portcullis_config_reloads_total{result=\"refused\"}").await >= Some(1.0)
    })
    .await;
    assert_eq!(get(&gw.url("/"), &[]).await.header("x-echo-name"), "b");

    // A Route that parses but is invalid keeps its previous version; a new good Route
    // next to it is served.
    let bad = "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {name: r}\nspec:\n  rules:\n  - backends: [{address: 'not an address'}]\n";
    let extra = format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {{name: extra}}\nspec:\n  rules:\n  - matches: [{{path: {{value: /extra}}}}]\n    backends: [{{address: '{a}'}}]\n"
    );
    std::fs::write(gw.config_file(), format!("{bad}---\n{extra}")).unwrap();
    eventually("the extra route", async || {
        get(&gw.url("/extra"), &[]).await.header("x-echo-name") == "a"
    })
    .await;
    assert_eq!(get(&gw.url("/"), &[]).await.header("x-echo-name"), "b");
    let config = get(&format!("http://{}/config", gw.admin), &[])
        .await
        .json();
    let problem = &config["problems"][0];
    assert_eq!(problem["object"]["name"], "r");
    assert_eq!(problem["field"], "spec.rules[0].backends[0].address");
    assert_eq!(
        metric(&gw, "portcullis_config_rejected_objects{kind=\"Route\"}").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_new_snapshot_does_not_cut_a_running_stream() {
    let (a, b) = (echo("a").await, echo("b").await);
    let gw = TestGateway::start(&route_to("r", a)).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
    let resp = client
        .get(gw.url("/sse?count=6&intervalMs=200").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-echo-name"], "a");

    // Move the route elsewhere, and then remove every route, while the stream runs.
    std::fs::write(gw.config_file(), route_to("r", b)).unwrap();
    eventually("the new backend", async || {
        get(&gw.url("/"), &[]).await.header("x-echo-name") == "b"
    })
    .await;
    std::fs::write(gw.config_file(), "").unwrap();
    eventually("no routes", async || {
        get(&gw.url("/"), &[]).await.status == 404
    })
    .await;

    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("event 5"), "the stream was cut: {text}");
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_and_stops_accepting() {
    let a = echo("a").await;
    let mut gw = TestGateway::start(&route_to("r", a)).await;
    let url = gw.url("/?delayMs=500");
    let in_flight = tokio::spawn(async move { get(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let start = Instant::now();
    gw.gw.take().unwrap().shutdown().await;
    let ans = in_flight.await.unwrap();
    assert_eq!(ans.status, 200, "the request in flight finished");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "shutdown waited for idle connections"
    );
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "still accepting"
    );
}

#[tokio::test]
async fn admin_endpoints() {
    let a = echo("a").await;
    let gw = TestGateway::start(&route_to("r", a)).await;
    get(&gw.url("/"), &[]).await;
    get(&gw.url("/"), &[]).await;
    let admin = |p: &str| format!("http://{}{p}", gw.admin);
    assert_eq!(get(&admin("/healthz"), &[]).await.status, 200);
    assert_eq!(get(&admin("/readyz"), &[]).await.status, 200);
    assert_eq!(
        metric(
            &gw,
            "portcullis_requests_total{method=\"GET\",route=\"default/r\",status_class=\"2xx\"}"
        )
        .await,
        Some(2.0)
    );
    assert_eq!(
        metric(
            &gw,
            "portcullis_request_duration_seconds_count{route=\"default/r\"}"
        )
        .await,
        Some(2.0)
    );
    assert!(metric(&gw, "portcullis_open_connections").await.is_some());
    let config = get(&admin("/config"), &[]).await.json();
    assert_eq!(config["routes"][0]["metadata"]["name"], "r");
    assert_eq!(
        config["routes"][0]["spec"]["rules"][0]["backends"][0]["address"],
        a.to_string()
    );
}

#[test]
fn check_reports_every_problem_with_file_document_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {name: ok}\nspec:\n  rules:\n  - backends: [{address: 'a:1'}]\n---\n\
         apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {name: bad}\nspec:\n  hosts: ['bad host']\n  rules:\n  - backends: [{address: 'a:1'}]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("a.yaml: document 2: Route default/bad: spec.hosts[0]:"),
        "{stdout}"
    );

    std::fs::write(dir.path().join("b.yml"), "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {name: x}\nspec:\n  rulez: []\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains(
            "b.yml:5:3: document 1: spec.rulez: unknown field `rulez`, expected one of `hosts`, `rules`, `tls`"
        ),
        "{stdout}"
    );

    std::fs::remove_file(dir.path().join("b.yml")).unwrap();
    std::fs::write(dir.path().join("a.yaml"), "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {name: ok}\nspec:\n  rules:\n  - backends: [{address: 'a:1'}]\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn unrelated_files_and_unchanged_content_do_not_reload() {
    let a = echo("a").await;
    let gw = TestGateway::start(&route_to("r", a)).await;
    let reloads = async || {
        metric(&gw, "portcullis_config_reloads_total{result=\"accepted\"}")
            .await
            .unwrap_or(0.0)
    };
    std::fs::write(gw.dir.path().join("load-test-output.txt"), "noise").unwrap();
    // Rewriting the same content touches the file but changes nothing.
    std::fs::write(gw.config_file(), route_to("r", a)).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(reloads().await, 0.0);
    // A real change still reloads.
    std::fs::write(
        gw.config_file(),
        format!("{}  hosts: [x.example.com]\n", route_to("r", a)),
    )
    .unwrap();
    eventually("a reload", async || reloads().await == 1.0).await;
}
