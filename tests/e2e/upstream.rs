//! Backend transports in a cluster: a Service port's `appProtocol` choosing h2c for a
//! real gRPC server, mesh-mode Routes accepted, and the schema's rules on `protocol`,
//! `tls` and `mesh`.

use crate::{status_is, support::*, CONVERGE};
use tonic::transport::{server::TcpIncoming, Channel, Server};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

#[tokio::test]
async fn app_protocol_h2c_carries_grpc_and_the_schema_guards_transports() {
    let env = env();
    let ns = Namespace::new("e2e-upstream");
    let refused = [
        (
            "  rules:\n  - backends: [{address: 'a:1', mesh: true}]\n",
            "mesh needs a service backend",
        ),
        (
            "  rules:\n  - backends: [{service: {name: s, port: 80}, mesh: true, tls: {}}]\n",
            "mesh and tls exclude each other",
        ),
        (
            "  rules:\n  - backends: [{address: 'a:1', protocol: H2C, tls: {}}]\n",
            "H2C is plain text",
        ),
        (
            "  rules:\n  - backends: [{address: 'a:1', protocol: HTTP2}]\n",
            "Unsupported value: \"HTTP2\"",
        ),
    ];
    for (spec, message) in refused {
        let (ok, _, err) = kubectl(&["apply", "-f", "-"], Some(&route(&ns.0, "wrong", spec)));
        assert!(!ok, "accepted:\n{spec}");
        assert!(
            err.contains(message),
            "{spec}\nexpected {message:?} in: {err}"
        );
    }

    // A gRPC server behind a Service whose port says h2c; the Route says nothing.
    let listener = tokio::net::TcpListener::bind((env.backends[0], 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let (ip, port) = (addr.ip(), addr.port());
    apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: grpc, namespace: {ns}}}\n\
         spec:\n  ports: [{{name: grpc, port: 9090, targetPort: {port}, appProtocol: kubernetes.io/h2c}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: grpc-1, namespace: {ns}, labels: {{kubernetes.io/service-name: grpc}}}}\n\
         addressType: IPv4\nports: [{{name: grpc, port: {port}, appProtocol: kubernetes.io/h2c}}]\n\
         endpoints: [{{addresses: [\"{ip}\"]}}]\n",
        ns = ns.0
    ));
    apply(&route(
        &ns.0,
        "grpc",
        "  rules:\n  - backends: [{service: {name: grpc, port: grpc}}]\n",
    ));
    apply(&route(
        &ns.0,
        "mesh",
        "  hosts: [mesh.example.com]\n  rules:\n  - backends: [{service: {name: grpc, port: 9090}, mesh: true}]\n",
    ));
    let gw = Gateway::start(&ns.0).await;
    status_is(&ns.0, "grpc", "ResolvedRefs", "True", "ResolvedRefs").await;
    status_is(&ns.0, "mesh", "Accepted", "True", "Accepted").await;
    status_is(&ns.0, "mesh", "ResolvedRefs", "True", "ResolvedRefs").await;

    let url = format!("http://{}", gw.addr);
    eventually("a gRPC call through the gateway", CONVERGE, async || {
        let Ok(channel) = Channel::from_shared(url.clone()).unwrap().connect().await else {
            return false;
        };
        let call = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        call.is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
    })
    .await;
    gw.stop().await;
}
