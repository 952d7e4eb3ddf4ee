//! Accepting connections, TLS handshakes, the HTTP/1.1 and HTTP/2 server, idle
//! detection and draining.

use super::{
    framing::{Heads, Tracker},
    handler, headers, Proxy,
};
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_rustls::{server::TlsStream, LazyConfigAcceptor};

/// Tells listeners to stop accepting and connections to finish what they are doing.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// When a connection last moved a byte, for idle detection.
#[derive(Clone)]
pub(super) struct Activity {
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// True once the connection moved any byte.
    fn any(&self) -> bool {
        self.last_ms.load(Ordering::Relaxed) != 0
    }

    fn touch(&self) {
        // Never 0, which stands for "nothing yet".
        let ms = (self.epoch.elapsed().as_millis() as u64).max(1);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    pub(super) fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Facts about a client connection that every request on it shares.
pub(super) struct ConnInfo {
    pub peer: SocketAddr,
    pub activity: Activity,
    /// Request heads as the client sent them, for the framing check.
    pub heads: Arc<Heads>,
    /// Set on connections that arrived over TLS.
    pub tls: Option<TlsConn>,
}

/// What a TLS handshake settled for the whole connection.
pub(super) struct TlsConn {
    /// The profile the handshake used; see [`crate::tls::Profile::id`].
    pub profile: u64,
    /// `x-forwarded-client-cert` for a verified client certificate.
    pub client_cert: Option<http::HeaderValue>,
}

/// A fatal `unrecognized_name` alert, sent in the clear before any handshake state
/// exists, so the client learns why instead of seeing the connection drop.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// Serves plain-text client connections from `listener` until `shutdown` fires, then
/// lets open connections finish for at most `drain`.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, shutdown: Shutdown, drain: Duration) {
    accept_loop(listener, proxy, shutdown, drain, false).await;
}

/// As [`serve`], with a TLS handshake first; the certificate comes from the snapshot's
/// table by the name the client asks for.
pub async fn serve_tls(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: Shutdown,
    drain: Duration,
) {
    accept_loop(listener, proxy, shutdown, drain, true).await;
}

async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    mut shutdown: Shutdown,
    drain: Duration,
    tls: bool,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(proxy.limits.header_read_timeout)
        .max_buf_size(proxy.limits.max_header_bytes.max(8192))
        .max_headers(proxy.limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(proxy.limits.max_header_bytes as u32)
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let (conns_tx, conns_rx) = watch::channel(());

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let guard = conns_rx.clone();
        tokio::spawn(async move {
            if tls {
                if let Some((stream, info)) = handshake(stream, &proxy).await {
                    serve_connection(stream, peer, Some(info), proxy, &builder, shutdown).await;
                }
            } else {
                serve_connection(stream, peer, None, proxy, &builder, shutdown).await;
            }
            drop(guard);
        });
    }

    drop(conns_rx);
    tracing::info!(open = conns_tx.receiver_count(), "draining connections");
    if tokio::time::timeout(drain, conns_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = conns_tx.receiver_count(),
            "drain period over, closing the rest"
        );
    }
}

/// Runs the TLS handshake within the header read timeout, so a client stalling in it
/// holds a socket no longer than one stalling in its request head.
async fn handshake(stream: TcpStream, proxy: &Proxy) -> Option<(TlsStream<TcpStream>, TlsConn)> {
    let result = tokio::time::timeout(proxy.limits.header_read_timeout, async {
        let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
        let start = match acceptor.await {
            Ok(start) => start,
            Err(_) => return Err("failed"),
        };
        let sni = start
            .client_hello()
            .server_name()
            .map(str::to_ascii_lowercase);
        let profile = proxy.snapshot.load().tls.resolve(sni.as_deref()).cloned();
        let Some(profile) = profile else {
            let mut tcp = start.io;
            let _ = tcp.write_all(&UNRECOGNIZED_NAME_ALERT).await;
            return Err("unknown_name");
        };
        match start.into_stream(profile.config.clone()).await {
            Ok(stream) => Ok((stream, profile.id)),
            Err(_) => Err("failed"),
        }
    })
    .await;
    let (stream, profile) = match result {
        Ok(Ok(done)) => done,
        Ok(Err(why)) => {
            proxy.metrics.tls_handshakes.with_label_values(&[why]).inc();
            return None;
        }
        Err(_) => {
            proxy
                .metrics
                .tls_handshakes
                .with_label_values(&["timeout"])
                .inc();
            return None;
        }
    };
    proxy
        .metrics
        .tls_handshakes
        .with_label_values(&["ok"])
        .inc();
    let client_cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| headers::client_cert_value(leaf));
    Some((
        stream,
        TlsConn {
            profile,
            client_cert,
        },
    ))
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    tls: Option<TlsConn>,
    proxy: Arc<Proxy>,
    builder: &auto::Builder<TokioExecutor>,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let heads = Arc::new(Heads::default());
    let info = Arc::new(ConnInfo {
        peer,
        activity: activity.clone(),
        heads: heads.clone(),
        tls,
    });
    let tracker = Tracker::new(proxy.limits.max_header_bytes, proxy.limits.max_headers);
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
        tracker: Some(tracker),
        heads,
    });
    let idle_timeout = proxy.limits.idle_timeout;
    let proxy_header_timeout = proxy.limits.header_read_timeout;
    proxy.metrics.open_connections.inc();
    let metrics = proxy.metrics.clone();

    let service = service_fn(move |req| handler::handle(proxy.clone(), info.clone(), req));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);

    // Check for idleness a few times per period, so a connection is closed at most a
    // quarter period late.
    let mut tick = tokio::time::interval(idle_timeout / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining = false;
    // hyper's header timer starts with the first byte; a client that sends none at all
    // gets the same time to start.
    let first_byte = tokio::time::sleep(proxy_header_timeout);
    tokio::pin!(first_byte);
    let mut waiting_for_first_byte = true;
    loop {
        tokio::select! {
            _ = &mut first_byte, if waiting_for_first_byte => {
                waiting_for_first_byte = false;
                if !activity.any() {
                    tracing::debug!(%peer, "closing a connection that sent nothing");
                    break;
                }
            }
            res = conn.as_mut() => {
                if let Err(error) = res {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.wait(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => {
                if activity.idle_for() >= idle_timeout {
                    tracing::debug!(%peer, "closing idle connection");
                    break;
                }
            }
        }
    }
    metrics.open_connections.dec();
}

/// A client socket that records when it last moved a byte and shows what it reads to
/// the framing tracker.
struct Tracked<S> {
    inner: S,
    activity: Activity,
    /// `None` once it stopped following (HTTP/2, an upgrade, input hyper refuses).
    tracker: Option<Tracker>,
    heads: Arc<Heads>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
            if let Some(tracker) = &mut this.tracker {
                tracker.feed(&buf.filled()[before..], &this.heads);
                if !tracker.is_following() {
                    this.tracker = None;
                }
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
