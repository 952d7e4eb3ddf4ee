//! The Helm chart's ties to the binary: its version and the metric names its dashboard
//! queries. Rendering and linting the chart is e2e/helm.sh's work.

use std::{collections::BTreeSet, path::Path};

fn chart_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts/portcullis")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn app_version_is_the_crate_version() {
    let chart: serde_json::Value = serde_norway::from_str(&chart_file("Chart.yaml")).unwrap();
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "set appVersion in charts/portcullis/Chart.yaml to the version in Cargo.toml"
    );
}

#[test]
fn the_dashboard_queries_only_metrics_the_gateway_exports() {
    // Give every labelled metric one series, so each family shows up in the output.
    let m = portcullis::metrics::Metrics::new();
    m.requests.with_label_values(&["ns/r", "GET", "2xx"]).inc();
    m.request_duration.with_label_values(&["ns/r"]).observe(0.1);
    m.upstream_connect_errors.with_label_values(&["b"]).inc();
    m.config_reloads.with_label_values(&["accepted"]).inc();
    m.config_rejected_objects
        .with_label_values(&["Route"])
        .set(0);
    m.status_writes.with_label_values(&["ok"]).inc();
    let exported: BTreeSet<String> = m
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();

    let dashboard = chart_file("dashboards/portcullis.json");
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    let re = regex::Regex::new(r"portcullis_[a-z_]+").unwrap();
    let queried: BTreeSet<&str> = re.find_iter(&dashboard).map(|m| m.as_str()).collect();
    assert!(queried.len() >= 5, "{queried:?}");
    let unknown: Vec<_> = queried
        .iter()
        .filter(|name| !exported.contains(**name))
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries {unknown:?}, which the gateway does not export: {exported:?}"
    );
}
