use super::*;
use k8s_openapi::api::{
    core::v1::{ServicePort as K8sServicePort, ServiceSpec},
    discovery::v1::{Endpoint, EndpointConditions, EndpointPort},
};
use kube::api::ObjectMeta;

fn mk_meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

fn mk_route(ns: &str, name: &str, yaml: &str) -> Route {
    let spec: RouteSpec = serde_norway::from_str(yaml).unwrap();
    let mut r = Route::new(name, super::super::api::RouteResource { spec });
    r.metadata.namespace = Some(ns.into());
    r
}

fn mk_service(ns: &str, name: &str, ports: &[(Option<&str>, i32)]) -> Service {
    Service {
        metadata: mk_meta(ns, name),
        spec: Some(ServiceSpec {
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| K8sServicePort {
                        name: n.map(Into::into),
                        port: *p,
                        ..K8sServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// An endpoint: (address, ready, serving).
type Ep<'a> = (&'a str, Option<bool>, Option<bool>);

fn mk_slice(
    ns: &str,
    name: &str,
    svc: &str,
    ports: &[(Option<&str>, i32)],
    eps: &[Ep<'_>],
) -> EndpointSlice {
    let mut meta = mk_meta(ns, name);
    meta.labels = Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into());
    EndpointSlice {
        metadata: meta,
        address_type: "IPv4".into(),
        ports: Some(
            ports
                .iter()
                .map(|(n, p)| EndpointPort {
                    name: n.map(Into::into),
                    port: Some(*p),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
        endpoints: eps
            .iter()
            .map(|(a, ready, serving)| Endpoint {
                addresses: vec![a.to_string()],
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    serving: *serving,
                    terminating: None,
                }),
                ..Endpoint::default()
            })
            .collect(),
    }
}

fn endpoints(index: &Index, ns: &str, svc: &str, port: u16) -> Vec<String> {
    let resources = index.resources();
    let key = ObjectKey {
        namespace: ns.into(),
        name: svc.into(),
    };
    let p = resources.services[&key]
        .ports
        .iter()
        .find(|p| p.port == port)
        .unwrap()
        .clone();
    p.endpoints.iter().map(ToString::to_string).collect()
}

#[test]
fn slices_of_a_service_are_merged_and_deduplicated() {
    let mut index = Index::default();
    index.apply_service(&mk_service(
        "ns",
        "users",
        &[(Some("http"), 80), (Some("admin"), 9000)],
    ));
    index.apply_slice(&mk_slice(
        "ns",
        "users-a",
        "users",
        &[(Some("http"), 8080), (Some("admin"), 9090)],
        &[("10.0.0.1", Some(true), None), ("10.0.0.2", None, None)],
    ));
    index.apply_slice(&mk_slice(
        "ns",
        "users-b",
        "users",
        &[(Some("http"), 8080)],
        &[
            ("10.0.0.2", Some(true), None),
            ("10.0.0.3", Some(true), None),
        ],
    ));
    // Another Service's slice and a slice of the same name elsewhere stay apart.
    index.apply_slice(&mk_slice(
        "other",
        "users-a",
        "users",
        &[(Some("http"), 8080)],
        &[("10.9.9.9", Some(true), None)],
    ));

    assert_eq!(
        endpoints(&index, "ns", "users", 80),
        ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
    );
    assert_eq!(
        endpoints(&index, "ns", "users", 9000),
        ["10.0.0.1:9090", "10.0.0.2:9090"]
    );
}

#[test]
fn terminating_endpoints_only_when_none_is_ready() {
    let mut index = Index::default();
    index.apply_service(&mk_service("ns", "s", &[(None, 80)]));
    index.apply_slice(&mk_slice(
        "ns",
        "s-1",
        "s",
        &[(None, 8080)],
        &[
            ("10.0.0.1", Some(false), Some(true)),
            ("10.0.0.2", Some(true), Some(true)),
            ("10.0.0.3", Some(false), Some(false)),
        ],
    ));
    assert_eq!(endpoints(&index, "ns", "s", 80), ["10.0.0.2:8080"]);

    index.apply_slice(&mk_slice(
        "ns",
        "s-1",
        "s",
        &[(None, 8080)],
        &[
            ("10.0.0.1", Some(false), Some(true)),
            ("10.0.0.3", Some(false), Some(false)),
        ],
    ));
    assert_eq!(endpoints(&index, "ns", "s", 80), ["10.0.0.1:8080"]);

    index.apply_slice(&mk_slice("ns", "s-1", "s", &[(None, 8080)], &[]));
    assert!(endpoints(&index, "ns", "s", 80).is_empty());
}

#[test]
fn deletes_and_resets() {
    let mut index = Index::default();
    let slice = mk_slice(
        "ns",
        "s-1",
        "s",
        &[(None, 8080)],
        &[("10.0.0.1", None, None)],
    );
    index.apply_service(&mk_service("ns", "s", &[(None, 80)]));
    index.apply_slice(&slice);
    assert_eq!(index.delete_slice(&slice), Changed::Yes);
    assert_eq!(index.delete_slice(&slice), Changed::No);
    assert!(endpoints(&index, "ns", "s", 80).is_empty());

    let b = "rules: [{backends: [{service: {name: s, port: 80}}]}]";
    index.apply_route(&mk_route("a", "r1", b));
    index.apply_route(&mk_route("b", "r2", b));
    // A reset of namespace a drops what a no longer has and keeps b.
    assert_eq!(
        index.reset_routes(Some("a"), &[mk_route("a", "r3", b)]),
        Changed::Yes
    );
    let names: Vec<_> = index
        .routes()
        .map(|r| r.resource.meta.key().to_string())
        .collect();
    assert_eq!(names, ["a/r3", "b/r2"]);
    assert_eq!(index.reset_routes(None, &[]), Changed::Yes);
    assert_eq!(index.routes().count(), 0);
}

#[test]
fn status_only_changes_do_not_count() {
    let mut index = Index::default();
    let mut r = mk_route("ns", "r", "rules: [{backends: [{address: 'a:1'}]}]");
    assert_eq!(index.apply_route(&r), Changed::Yes);
    r.status = Some(ObjectStatus { conditions: vec![] });
    r.metadata.resource_version = Some("2".into());
    assert_eq!(index.apply_route(&r), Changed::No);
    r.metadata.generation = Some(2);
    assert_eq!(index.apply_route(&r), Changed::Yes);
}

#[test]
fn routes_compile_against_indexed_services() {
    let mut index = Index::default();
    index.apply_route(&mk_route(
        "ns",
        "r",
        "rules: [{backends: [{service: {name: users, port: http}}]}]",
    ));
    let snapshot = crate::compile::compile(&index.resources(), None);
    assert_eq!(snapshot.problems.len(), 1, "the Service is not known yet");

    index.apply_service(&mk_service("ns", "users", &[(Some("http"), 80)]));
    index.apply_slice(&mk_slice(
        "ns",
        "users-1",
        "users",
        &[(Some("http"), 8080)],
        &[("10.0.0.7", None, None)],
    ));
    let snapshot = crate::compile::compile(&index.resources(), None);
    assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
}

#[test]
fn app_protocol_is_carried_to_the_compile_step() {
    let mut index = Index::default();
    let mut svc = mk_service("ns", "grpc", &[(Some("grpc"), 9090), (Some("http"), 80)]);
    if let Some(ports) = svc.spec.as_mut().and_then(|s| s.ports.as_mut()) {
        ports[0].app_protocol = Some("kubernetes.io/h2c".into());
    }
    index.apply_service(&svc);
    let resources = index.resources();
    let ports = &resources.services[&ObjectKey {
        namespace: "ns".into(),
        name: "grpc".into(),
    }]
        .ports;
    assert_eq!(ports[0].app_protocol.as_deref(), Some("kubernetes.io/h2c"));
    assert_eq!(ports[1].app_protocol, None);

    // A changed appProtocol is a change the compile step must see.
    if let Some(ports) = svc.spec.as_mut().and_then(|s| s.ports.as_mut()) {
        ports[0].app_protocol = None;
    }
    assert_eq!(index.apply_service(&svc), Changed::Yes);
}
