//! The `portcullis` binary itself: JSON logs, the access log, SIGTERM, the CRDs it prints,
//! and `check` over the shipped examples.

use crate::support::*;
use std::{process::Stdio, time::Duration};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn serve_logs_json_and_drains_on_sigterm() {
    let a = echo("a").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.yaml");
    std::fs::write(&config, route_to("r", a)).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--listen-tls",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--config",
        ])
        .arg(&config)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stderr = child.stderr.take().unwrap();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let _ = lines_tx.send(line);
        }
    });
    let next_json = async |lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>| {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.recv())
            .await
            .unwrap()
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };

    let serving = loop {
        let event = next_json(&mut lines).await;
        if event["message"] == "serving" {
            break event;
        }
    };
    let addr = serving["listen_addr"].as_str().unwrap().to_string();

    // A Host made to look like more log fields is refused, and stays out of the log.
    let forged = raw(
        addr.parse().unwrap(),
        b"GET / HTTP/1.1\r\nHost: x route=\"default/admin\" status=200\r\n\r\n",
        Duration::from_secs(1),
    )
    .await;
    assert!(forged.starts_with("HTTP/1.1 400"), "{forged}");

    // A slow request in flight when SIGTERM arrives still gets its answer.
    let url = format!("http://{addr}/slow?delayMs=700");
    let in_flight = tokio::spawn(async move { get(&url, &[("x-request-id", "drain-1")]).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let ans = in_flight.await.unwrap();
    assert_eq!(ans.status, 200);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");

    let mut refused = None;
    let access = loop {
        let event = next_json(&mut lines).await;
        if event["target"] == "access" && event["status"] == 400 {
            refused = Some(event);
        } else if event["target"] == "access" {
            break event;
        }
    };
    let refused = refused.expect("the refused request is logged");
    assert_eq!(refused["host"], "", "{refused}");
    assert_eq!(access["request_id"], "drain-1");
    assert_eq!(access["status"], 200);
    assert_eq!(access["route"], "default/r");
    assert_eq!(access["path"], "/slow");
    assert_eq!(access["method"], "GET");
    assert!(access["bytes"].as_u64().unwrap() > 0);
}

#[test]
fn the_demo_configuration_has_no_problems() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.yaml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn serve_refuses_to_start_on_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("routes.yaml");
    std::fs::write(&config, "apiVersion: portcullis.dev/v1alpha1\nkind: Route\nmetadata: {name: r}\nspec: {rules: [{matches: [{path: {type: Prefix, value: /}}]}]}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--listen-tls",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routes.yaml:4:"), "{stderr}");
    assert!(
        stderr.contains("document 1: spec.rules[0].matches[0].path.type: unknown variant `Prefix`"),
        "{stderr}"
    );
}

#[test]
fn checked_in_crds_match_the_types() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    // The chart installs its own copy; both must be what the binary prints.
    for path in [
        "crds/portcullis.dev.yaml",
        "charts/portcullis/crds/portcullis.dev.yaml",
    ] {
        let checked_in =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
                .unwrap();
        assert!(
            printed == checked_in,
            "{path} is stale; run: cargo run -- crds > {path}"
        );
    }
}

/// Every document of a multi-document YAML file, as JSON values.
fn documents(path: &std::path::Path) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .collect()
}

/// The Acme example's Routes pass `check` but for their Service backends, which only a
/// cluster resolves; backends.yaml beside them defines each Service with the port asked for.
#[test]
fn the_saas_example_routes_lack_nothing_but_their_cluster() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/saas");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(dir.join("routes.yaml"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);

    // "namespace/name" of each Service, with its port names and numbers.
    let mut services = std::collections::BTreeMap::new();
    for doc in documents(&dir.join("backends.yaml")) {
        if doc["kind"] == "Service" {
            let key = format!(
                "{}/{}",
                doc["metadata"]["namespace"], doc["metadata"]["name"]
            );
            let ports: Vec<String> = doc["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|p| [p["name"].to_string(), p["port"].to_string()])
                .collect();
            services.insert(key.replace('"', ""), ports);
        }
    }
    let mut backends = 0;
    for route in documents(&dir.join("routes.yaml")) {
        let ns = route["metadata"]["namespace"].as_str().unwrap();
        for rule in route["spec"]["rules"].as_array().unwrap() {
            for b in rule["backends"].as_array().into_iter().flatten() {
                let svc = &b["service"];
                let key = format!("{ns}/{}", svc["name"].as_str().unwrap());
                let ports = services
                    .get(&key)
                    .unwrap_or_else(|| panic!("no Service {key} in backends.yaml"));
                assert!(ports.contains(&svc["port"].to_string()), "{key}: {svc}");
                backends += 1;
            }
        }
    }

    let unresolved = regex::Regex::new(r"^error: .*: Service (\S+) not found$").unwrap();
    let problems: Vec<&str> = report.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(problems.len(), backends, "{report}");
    for p in problems {
        let service = unresolved.captures(p).map(|c| c[1].to_string());
        assert!(
            service.is_some_and(|s| services.contains_key(&s)),
            "not a missing Service of backends.yaml: {p}"
        );
    }
}
