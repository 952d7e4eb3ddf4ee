//! The clients that carry requests to backends, one kind per [`Transport`].
//!
//! Plain HTTP/1.1 goes through one shared client addressed by endpoint. HTTP/2 (h2c) and
//! TLS go through clients pinned to one endpoint each: their connector dials that
//! endpoint whatever the request names, so the request URI can carry the host the
//! backend should see. Over HTTP/2 that URI becomes `:authority`, which must agree with
//! `Host`; over TLS the certificate is checked for the backend's server name, not for
//! the endpoint's address.

use super::body::ProxyBody;
use crate::routing::{Protocol, Transport};
use http::{header, uri, HeaderName, HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{self, connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use rustls::RootCertStore;
use std::{future::Future, pin::Pin, sync::Arc, task, time::Duration};
use tokio::{net::TcpStream, sync::OnceCell};
use tower_service::Service;

/// The header Linkerd routes by when it is set; Istio reads `Host`.
pub const L5D_DST_OVERRIDE: HeaderName = HeaderName::from_static("l5d-dst-override");

/// Backends commonly close idle connections after 60 s or more; closing ours first
/// avoids sending a request on a connection the backend just dropped.
const POOL_IDLE: Duration = Duration::from_secs(50);

/// A pinned client unused this long is dropped with its connections: its endpoint has
/// most likely left, or its CA or certificate changed.
const PINNED_IDLE: Duration = Duration::from_secs(300);

/// Every client the proxy sends with.
pub struct Transports {
    plain: Client<HttpConnector, ProxyBody>,
    pinned: moka::future::Cache<PinKey, Pinned>,
    connect_timeout: Duration,
    /// The system's trusted roots, read on first use by a backend with no `caRef`.
    system_roots: OnceCell<Arc<RootCertStore>>,
}

/// Why a request was not sent, or failed on the way.
#[derive(Debug)]
pub enum SendError {
    /// The backend cannot be reached as configured (see [`Transport::unusable`]).
    Refused(String),
    Failed(legacy::Error),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PinKey {
    endpoint: uri::Authority,
    /// `None` for h2c; else the TLS inputs' id.
    tls: Option<u64>,
}

#[derive(Clone)]
enum Pinned {
    H2c(Client<PinnedConnector, ProxyBody>),
    Tls(Client<HttpsConnector<PinnedConnector>, ProxyBody>),
}

/// Dials one endpoint, whatever URI it is asked for.
#[derive(Clone)]
struct PinnedConnector {
    http: HttpConnector,
    endpoint: Uri,
}

// === impl Transports ===

impl Transports {
    pub fn new(connect_timeout: Duration) -> Self {
        let plain = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(http_connector(connect_timeout));
        Transports {
            plain,
            pinned: moka::future::Cache::builder()
                .time_to_idle(PINNED_IDLE)
                .build(),
            connect_timeout,
            system_roots: OnceCell::new(),
        }
    }

    /// Sends `req`, whose URI is `http://endpoint/path` and whose `Host` is what the
    /// backend should see, the way `transport` says.
    pub async fn send(
        &self,
        transport: &Transport,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, SendError> {
        if let Some(why) = &transport.unusable {
            return Err(SendError::Refused(why.to_string()));
        }
        if let Some(host) = &transport.mesh_host {
            req.headers_mut().insert(header::HOST, host.clone());
            req.headers_mut().insert(L5D_DST_OVERRIDE, host.clone());
        }
        if transport.tls.is_none() && transport.protocol == Protocol::Http1 {
            *req.version_mut() = Version::HTTP_11;
            return self.plain.request(req).await.map_err(SendError::Failed);
        }
        let endpoint = req
            .uri()
            .authority()
            .cloned()
            .ok_or_else(|| SendError::Refused("request has no endpoint".into()))?;
        let client = self.pinned(transport, endpoint).await?;
        let scheme = match client {
            Pinned::H2c(_) => uri::Scheme::HTTP,
            Pinned::Tls(_) => uri::Scheme::HTTPS,
        };
        *req.uri_mut() = host_uri(scheme, req.headers().get(header::HOST), req.uri())?;
        let sent = match client {
            Pinned::H2c(c) => {
                *req.version_mut() = Version::HTTP_2;
                c.request(req).await
            }
            Pinned::Tls(c) => {
                // HTTP/2 or HTTP/1.1, whichever ALPN picks; a 1.1 request suits both.
                *req.version_mut() = Version::HTTP_11;
                c.request(req).await
            }
        };
        sent.map_err(SendError::Failed)
    }

    /// The client for `endpoint` with this transport, made on first use.
    async fn pinned(
        &self,
        transport: &Transport,
        endpoint: uri::Authority,
    ) -> Result<Pinned, SendError> {
        let key = PinKey {
            endpoint: endpoint.clone(),
            tls: transport.tls.as_ref().map(|t| t.id),
        };
        let connector = PinnedConnector {
            http: http_connector(self.connect_timeout),
            endpoint: Uri::builder()
                .scheme(uri::Scheme::HTTP)
                .authority(endpoint)
                .path_and_query("/")
                .build()
                .map_err(|e| SendError::Refused(e.to_string()))?,
        };
        let build = async {
            let mut builder = Client::builder(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(POOL_IDLE);
            let Some(tls) = &transport.tls else {
                return Ok(Pinned::H2c(builder.http2_only(true).build(connector)));
            };
            let system = self.system_roots().await;
            let config = tls.client_config(&system)?;
            let https = HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_only()
                .with_server_name_resolver(FixedServerNameResolver::new(tls.server_name.clone()))
                .enable_all_versions()
                .wrap_connector(connector);
            Ok::<_, String>(Pinned::Tls(builder.build(https)))
        };
        self.pinned
            .try_get_with(key, build)
            .await
            .map_err(|e| SendError::Refused(e.to_string()))
    }

    async fn system_roots(&self) -> Arc<RootCertStore> {
        self.system_roots
            .get_or_init(|| async {
                let loaded = tokio::task::spawn_blocking(rustls_native_certs::load_native_certs)
                    .await
                    .unwrap_or_default();
                for error in &loaded.errors {
                    tracing::warn!(%error, "reading the system's CA certificates");
                }
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(loaded.certs);
                if added == 0 {
                    tracing::warn!(
                        "no system CA certificate found; TLS backends without caRef will fail"
                    );
                }
                Arc::new(roots)
            })
            .await
            .clone()
    }
}

fn http_connector(connect_timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector
}

/// `scheme://host/path?query`: the target a pinned client sends, naming the host the
/// backend should see rather than the endpoint it reaches. A request the gateway makes
/// itself without a `Host` (a health probe) names the endpoint.
fn host_uri(
    scheme: uri::Scheme,
    host: Option<&HeaderValue>,
    target: &Uri,
) -> Result<Uri, SendError> {
    let host = match host {
        Some(h) => uri::Authority::try_from(h.as_bytes())
            .map_err(|_| SendError::Refused("Host cannot be sent as an authority".into()))?,
        None => target
            .authority()
            .cloned()
            .ok_or_else(|| SendError::Refused("request has no endpoint".into()))?,
    };
    let mut parts = target.clone().into_parts();
    parts.scheme = Some(scheme);
    parts.authority = Some(host);
    Uri::from_parts(parts).map_err(|e| SendError::Refused(e.to_string()))
}

// === impl PinnedConnector ===

impl Service<Uri> for PinnedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut task::Context<'_>) -> task::Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, _requested: Uri) -> Self::Future {
        let connecting = self.http.call(self.endpoint.clone());
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::body::empty;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn mesh_mode_names_the_service_to_the_mesh() {
        // The echo server stands where the mesh's DNS name would lead.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(crate::echo::serve(listener, "users".into()));
        let name = "users.shop.svc.cluster.local:8080";
        let transport = Transport {
            mesh_host: Some(HeaderValue::from_static(name)),
            ..Transport::default()
        };
        let req = Request::get(format!("http://{addr}/orders"))
            .header(header::HOST, "api.example.com")
            .body(empty())
            .unwrap();
        let resp = Transports::new(Duration::from_secs(1))
            .send(&transport, req)
            .await
            .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["headers"]["host"], serde_json::json!([name]));
        assert_eq!(
            seen["headers"]["l5d-dst-override"],
            serde_json::json!([name])
        );
    }

    #[tokio::test]
    async fn unusable_transports_send_nothing() {
        let transport = Transport {
            unusable: Some("backend TLS: Secret ns/ca not found".into()),
            ..Transport::default()
        };
        let req = Request::get("http://127.0.0.1:9/").body(empty()).unwrap();
        let err = Transports::new(Duration::from_secs(1))
            .send(&transport, req)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SendError::Refused(why) if why == "backend TLS: Secret ns/ca not found"),
            "{err:?}"
        );
    }
}
