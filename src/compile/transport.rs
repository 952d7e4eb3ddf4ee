//! The transport of each backend: protocol, TLS and mesh addressing, checked field by
//! field.

use super::{Check, Reason};
use crate::{
    config::{self, BackendProtocol, ObjectKey, Resources, ServicePort, DEFAULT_CLUSTER_DOMAIN},
    routing::{Protocol, Transport},
    tls::UpstreamTls,
};
use http::{uri::Authority, HeaderValue};
use rustls_pki_types::ServerName;
use std::sync::Arc;

/// The `appProtocol` of Service ports that speak HTTP/2 in plain text.
const APP_PROTOCOL_H2C: &str = "kubernetes.io/h2c";

/// Where a Service backend sends in mesh mode, when it is in mesh mode.
pub(super) struct MeshTarget {
    pub authority: Authority,
}

/// The transport of a backend given by addresses. `None` when a field is invalid.
pub(super) fn for_addresses(
    b: &config::Backend,
    route: &ObjectKey,
    addresses: &[Authority],
    resources: &Resources,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<Transport> {
    if b.mesh == Some(true) {
        check.invalid(
            format!("{field}.mesh"),
            "mesh mode sends to a Service's cluster DNS name; an address backend has none \
             (name a service instead)",
        );
        return None;
    }
    let bare = |a: &Authority| {
        let host = a.host();
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_string()
    };
    let hosts: Vec<String> = addresses.iter().map(bare).collect();
    // One certificate name for every address: their common host, or `serverName`.
    let default_name = match &hosts[..] {
        [first, rest @ ..] if rest.iter().all(|h| h == first) => first.as_str(),
        _ if b.tls.is_none() => "",
        _ if b.tls.as_ref().is_some_and(|t| t.server_name.is_some()) => "",
        _ => {
            check.invalid(
                format!("{field}.tls.serverName"),
                "addresses with different hosts need the name their certificates share",
            );
            return None;
        }
    };
    let protocol = b.protocol.map(protocol_of).unwrap_or_default();
    transport(b, route, protocol, default_name, resources, field, check)
}

/// The transport of a `service` backend, and its mesh target in mesh mode. `port` is the
/// Service port when the Service is known.
pub(super) fn for_service(
    b: &config::Backend,
    svc: &config::ServiceRef,
    route: &ObjectKey,
    port: Option<&ServicePort>,
    resources: &Resources,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<(Transport, Option<MeshTarget>)> {
    let domain = resources
        .cluster_domain
        .as_deref()
        .unwrap_or(DEFAULT_CLUSTER_DOMAIN);
    let dns_name = format!("{}.{}.svc.{domain}", svc.name, route.namespace);
    let protocol = match b.protocol {
        Some(p) => protocol_of(p),
        None if port.and_then(|p| p.app_protocol.as_deref()) == Some(APP_PROTOCOL_H2C) => {
            Protocol::H2c
        }
        None => Protocol::Http1,
    };
    let mut transport = transport(b, route, protocol, &dns_name, resources, field, check)?;
    if b.mesh != Some(true) {
        return Some((transport, None));
    }
    // A port number needs no Service to be known: the mesh resolves the name.
    let number = match (&svc.port, port) {
        (config::PortRef::Number(n), _) => *n,
        (config::PortRef::Name(_), Some(p)) => p.port,
        // Reported by the caller as a missing Service or port.
        (config::PortRef::Name(_), None) => return Some((transport, None)),
    };
    let text = format!("{dns_name}:{number}");
    let (Ok(authority), Ok(host)) = (text.parse::<Authority>(), HeaderValue::from_str(&text))
    else {
        check.invalid(
            format!("{field}.service.name"),
            format!("{text:?} is not a DNS name"),
        );
        return None;
    };
    transport.mesh_host = Some(host);
    Some((transport, Some(MeshTarget { authority })))
}

fn protocol_of(p: BackendProtocol) -> Protocol {
    match p {
        BackendProtocol::Http1 => Protocol::Http1,
        BackendProtocol::H2c => Protocol::H2c,
    }
}

/// The parts common to both kinds of backend; `default_name` is the name the backend's
/// certificate must be valid for when `tls.serverName` is not given.
fn transport(
    b: &config::Backend,
    route: &ObjectKey,
    protocol: Protocol,
    default_name: &str,
    resources: &Resources,
    field: &str,
    check: &mut Check<'_, '_>,
) -> Option<Transport> {
    let mut transport = Transport {
        protocol,
        ..Transport::default()
    };
    let Some(tls) = &b.tls else {
        return Some(transport);
    };
    if b.mesh == Some(true) {
        check.invalid(
            format!("{field}.tls"),
            "mesh and tls exclude each other: the mesh secures the hop",
        );
        return None;
    }
    if b.protocol == Some(BackendProtocol::H2c) {
        check.invalid(
            format!("{field}.protocol"),
            "H2C is plain text; over tls, HTTP/2 or HTTP/1.1 is chosen by ALPN",
        );
        return None;
    }
    let (name_field, name) = match &tls.server_name {
        Some(n) => (format!("{field}.tls.serverName"), n.as_str()),
        None => (field.to_string(), default_name),
    };
    let Ok(server_name) = ServerName::try_from(name.to_string()) else {
        check.invalid(
            name_field,
            format!("{name:?} is not a DNS name or IP address a certificate can be checked for"),
        );
        return None;
    };
    let loaded = UpstreamTls::load(
        resources,
        &route.namespace,
        tls.ca_ref.as_ref().map(|r| r.name.as_str()),
        tls.client_certificate_ref.as_ref().map(|r| r.name.as_str()),
        server_name,
    );
    match loaded {
        Ok(t) => transport.tls = Some(Arc::new(t)),
        Err(e) => {
            // Served, but never in plain text: requests get 502 until the Secret loads.
            transport.unusable = Some(format!("backend TLS: {}", e.message).into());
            check.push(
                format!("{field}.tls.{}", e.field),
                Reason::InvalidCertificateRef,
                e.message,
            );
        }
    }
    Some(transport)
}

#[cfg(test)]
mod tests {
    use crate::{
        compile::{compile, Reason, Snapshot},
        config::{self, Meta, ObjectKey, Resource, Resources, SecretData},
        routing::{ActionKind, Protocol, RequestView},
        upstream::Backend,
    };
    use http::{HeaderMap, Method};

    fn mk_resources(backend: &str) -> Resources {
        let spec = format!("{{hosts: [h.example.com], rules: [{{backends: [{backend}]}}]}}");
        Resources {
            routes: vec![Resource {
                meta: Meta {
                    name: "r".into(),
                    namespace: "ns".into(),
                    ..Meta::default()
                },
                spec: serde_norway::from_str(&spec).unwrap(),
            }],
            ..Resources::default()
        }
    }

    fn mk_service(resources: &mut Resources, port: config::ServicePort) {
        let key = ObjectKey {
            namespace: "ns".into(),
            name: "users".into(),
        };
        let svc = config::ServiceEndpoints { ports: vec![port] };
        resources.services.insert(key, svc);
    }

    fn mk_port(name: &str, number: u16, app_protocol: Option<&str>) -> config::ServicePort {
        config::ServicePort {
            name: Some(name.into()),
            port: number,
            app_protocol: app_protocol.map(str::to_string),
            endpoints: vec!["10.0.0.1:8080".parse().unwrap()],
        }
    }

    fn backend_of(snapshot: &Snapshot) -> &Backend {
        let headers = HeaderMap::new();
        let view = RequestView {
            host: "h.example.com",
            path: "/",
            method: &Method::GET,
            headers: &headers,
            query: None,
        };
        let found = snapshot.router.lookup(&view).expect("the route serves");
        match &found.action.kind {
            ActionKind::Forward(f) => &f.backends.backends()[0],
            ActionKind::Redirect(_) | ActionKind::Bff(_) => panic!("not a forward"),
        }
    }

    fn endpoints(b: &Backend) -> Vec<String> {
        b.endpoints
            .iter()
            .map(|a| a.authority.to_string())
            .collect()
    }

    #[test]
    fn mesh_sends_to_the_service_dns_name() {
        let resources = mk_resources("{service: {name: users, port: 8080}, mesh: true}");
        let snap = compile(&resources, None);
        assert!(snap.problems.is_empty(), "{:?}", snap.problems);
        let b = backend_of(&snap);
        assert_eq!(endpoints(b), ["users.ns.svc.cluster.local:8080"]);
        assert_eq!(
            b.transport.mesh_host.as_ref().unwrap(),
            "users.ns.svc.cluster.local:8080"
        );

        let mut resources = mk_resources("{service: {name: users, port: http}, mesh: true}");
        resources.cluster_domain = Some("corp.internal".into());
        mk_service(&mut resources, mk_port("http", 80, None));
        let snap = compile(&resources, None);
        assert!(snap.problems.is_empty(), "{:?}", snap.problems);
        assert_eq!(
            endpoints(backend_of(&snap)),
            ["users.ns.svc.corp.internal:80"]
        );
    }

    #[test]
    fn mesh_is_refused_on_addresses_and_with_tls() {
        let snap = compile(&mk_resources("{address: '10.0.0.1:80', mesh: true}"), None);
        assert_eq!(snap.problems.len(), 1, "{:?}", snap.problems);
        assert_eq!(snap.problems[0].field, "spec.rules[0].backends[0].mesh");
        assert_eq!(snap.problems[0].reason, Reason::Invalid);
        assert!(snap.routes.is_empty());

        let snap = compile(
            &mk_resources("{service: {name: users, port: 80}, mesh: true, tls: {}}"),
            None,
        );
        assert_eq!(snap.problems[0].field, "spec.rules[0].backends[0].tls");
        assert!(snap.routes.is_empty());
    }

    #[test]
    fn app_protocol_h2c_selects_http2_unless_the_backend_says() {
        let mut resources = mk_resources("{service: {name: users, port: grpc}}");
        mk_service(
            &mut resources,
            mk_port("grpc", 9090, Some("kubernetes.io/h2c")),
        );
        let snap = compile(&resources, None);
        let b = backend_of(&snap);
        assert_eq!(b.transport.protocol, Protocol::H2c);
        assert_eq!(endpoints(b), ["10.0.0.1:8080"]);

        let mut resources = mk_resources("{service: {name: users, port: grpc}, protocol: HTTP1}");
        mk_service(
            &mut resources,
            mk_port("grpc", 9090, Some("kubernetes.io/h2c")),
        );
        let snap = compile(&resources, None);
        assert_eq!(backend_of(&snap).transport.protocol, Protocol::Http1);

        let snap = compile(
            &mk_resources("{address: '10.0.0.1:80', protocol: H2C}"),
            None,
        );
        assert_eq!(backend_of(&snap).transport.protocol, Protocol::H2c);
    }

    #[test]
    fn tls_server_names_default_to_the_service_or_address() {
        let mut resources = mk_resources("{service: {name: users, port: 80}, tls: {}}");
        mk_service(&mut resources, mk_port("http", 80, None));
        let snap = compile(&resources, None);
        let tls = backend_of(&snap).transport.tls.clone().unwrap();
        assert_eq!(tls.server_name.to_str(), "users.ns.svc.cluster.local");
        assert!(tls.roots.is_none(), "system roots");

        let snap = compile(&mk_resources("{address: '[::1]:8443', tls: {}}"), None);
        let tls = backend_of(&snap).transport.tls.clone().unwrap();
        assert_eq!(tls.server_name.to_str(), "::1");

        let snap = compile(
            &mk_resources("{address: '10.0.0.1:443', tls: {serverName: api.internal}}"),
            None,
        );
        let tls = backend_of(&snap).transport.tls.clone().unwrap();
        assert_eq!(tls.server_name.to_str(), "api.internal");

        let snap = compile(
            &mk_resources("{address: '10.0.0.1:443', tls: {serverName: 'not a name'}}"),
            None,
        );
        assert_eq!(
            snap.problems[0].field,
            "spec.rules[0].backends[0].tls.serverName"
        );
        assert!(snap.routes.is_empty());
    }

    #[test]
    fn bad_tls_references_are_reported_and_never_fall_back_to_plain_text() {
        let backend =
            "{address: '10.0.0.1:443', tls: {caRef: {name: ca}, clientCertificateRef: {name: me}}}";
        let snap = compile(&mk_resources(backend), None);
        assert_eq!(snap.problems.len(), 1, "{:?}", snap.problems);
        let p = &snap.problems[0];
        assert_eq!(p.field, "spec.rules[0].backends[0].tls.caRef");
        assert_eq!(p.reason, Reason::InvalidCertificateRef);
        assert_eq!(p.message, "Secret ns/ca not found");
        let b = backend_of(&snap);
        assert!(b.transport.tls.is_none());
        assert!(b.transport.unusable.is_some());

        let mut resources = mk_resources(backend);
        let pem = |s: &str| Some(std::sync::Arc::from(s.as_bytes()));
        let secret = |name: &str| ObjectKey {
            namespace: String::new(),
            name: name.into(),
        };
        resources.secrets.insert(
            secret("ca"),
            SecretData {
                ca_crt: pem("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"),
                ..SecretData::default()
            },
        );
        let snap = compile(&resources, None);
        let p = &snap.problems[0];
        assert_eq!(p.field, "spec.rules[0].backends[0].tls.caRef");
        assert!(
            p.message.starts_with("secrets folder ca: ca.crt"),
            "{}",
            p.message
        );
        assert!(backend_of(&snap).transport.unusable.is_some());
    }
}
