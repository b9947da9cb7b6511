//! Listeners: accept, TLS, serve HTTP/1.1 and HTTP/2 on each connection, and drain on shutdown.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::{body::Incoming, service::service_fn, Request};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
    time::{Instant, Sleep},
};
use tokio_rustls::TlsAcceptor;

use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::{
    config::{ProxyConfig, TlsVersion},
    conn::ConnInfo,
    metrics::{ListenerLabels, ResultLabels},
    pipeline::{Pipeline, ProxyBody},
    snapshot::SnapshotHandle,
};

/// Which traffic listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    Http,
    Https,
}

impl ListenerKind {
    fn label(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// The rustls server configurations, one per minimum TLS version: TLS 1.2 and 1.3 (or 1.3 only),
/// ALPN `h2` then `http/1.1`, certificates chosen per handshake from the current snapshot.
#[derive(Clone, Debug)]
pub struct TlsConfigs {
    tls12: Arc<rustls::ServerConfig>,
    tls13: Arc<rustls::ServerConfig>,
}

impl TlsConfigs {
    /// `resumption`: a session cache and TLS 1.3 tickets (read once at start).
    pub fn new(snapshots: &SnapshotHandle, resumption: bool) -> Result<Self, rustls::Error> {
        let build = |versions: &[&'static rustls::SupportedProtocolVersion]| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(versions)?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(SnapshotCertResolver {
                    snapshots: snapshots.clone(),
                }));
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            if !resumption {
                // No session cache and no TLS 1.3 tickets: every connection does a full handshake.
                config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
                config.send_tls13_tickets = 0;
            }
            Ok::<_, rustls::Error>(Arc::new(config))
        };
        Ok(Self {
            tls12: build(&[&rustls::version::TLS13, &rustls::version::TLS12])?,
            tls13: build(&[&rustls::version::TLS13])?,
        })
    }

    fn acceptor(&self, min: TlsVersion) -> TlsAcceptor {
        match min {
            TlsVersion::Tls12 => TlsAcceptor::from(self.tls12.clone()),
            TlsVersion::Tls13 => TlsAcceptor::from(self.tls13.clone()),
        }
    }
}

/// Picks the certificate for each handshake from the snapshot current at that moment.
#[derive(Debug)]
struct SnapshotCertResolver {
    snapshots: SnapshotHandle,
}

impl ResolvesServerCert for SnapshotCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.snapshots.load();
        let certs = &snapshot.certs;
        let by_name = hello.server_name().and_then(|sni| {
            // SNI is already lowercase ASCII per rustls; strip a trailing dot if a client sent one.
            certs.lookup(sni.trim_end_matches('.'))
        });
        by_name.or(certs.default_cert()).map(|c| c.key.clone())
    }
}

/// The hyper connection builder for a set of settings.
fn connection_builder(config: &ProxyConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(8192))
        .max_headers(config.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Accepts connections until `shutdown` turns true, then stops accepting (the listener is closed,
/// so new connections are refused), asks every open connection to finish (HTTP/2 GOAWAY, HTTP/1
/// close after the current response) and waits up to the shutdown grace for them.
///
/// Listener settings (timeouts, limits, TLS version) are taken from the snapshot current when a
/// connection is accepted; a connection keeps them for its life.
pub async fn serve(
    pipeline: Arc<Pipeline>,
    listener: TcpListener,
    kind: ListenerKind,
    tls: Option<TlsConfigs>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    // The builder of the settings last seen, rebuilt only when the settings change.
    let mut current: Option<(Arc<ProxyConfig>, Arc<auto::Builder<TokioExecutor>>)> = None;

    loop {
        let (stream, client) = tokio::select! {
            biased;
            _ = crate::shutdown_requested(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, listener = kind.label(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let config = pipeline.snapshots.load().config.clone();
        let builder = match &current {
            Some((c, b)) if Arc::ptr_eq(c, &config) || **c == *config => b.clone(),
            _ => {
                let b = Arc::new(connection_builder(&config));
                current = Some((config.clone(), b.clone()));
                b
            }
        };
        let info = ConnInfo::new(client, local_port, tls.is_some());
        let conn = Connection {
            pipeline: pipeline.clone(),
            builder,
            acceptor: tls.as_ref().map(|t| t.acceptor(config.tls_min_version)),
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            info,
            kind,
            watcher: graceful.watcher(),
        };
        tokio::spawn(conn.run(stream));
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        listener = kind.label(),
        open,
        "listener closed; draining connections"
    );
    let grace = pipeline.snapshots.load().config.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            listener = kind.label(),
            "shutdown grace expired with connections still open"
        );
    }
}

struct Connection {
    pipeline: Arc<Pipeline>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    acceptor: Option<TlsAcceptor>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    info: ConnInfo,
    kind: ListenerKind,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let metrics = self.pipeline.metrics.clone();
        let gauge = metrics
            .active_connections
            .get_or_create(&ListenerLabels {
                listener: self.kind.label(),
            })
            .clone();
        gauge.inc();
        let active = Arc::new(AtomicUsize::new(0));
        let idle_timeout = self.idle_timeout;
        match &self.acceptor {
            Some(acceptor) => {
                let handshake = tokio::time::timeout(self.header_read_timeout, acceptor.accept(stream)).await;
                match handshake {
                    Ok(Ok(tls)) => {
                        metrics
                            .tls_handshakes
                            .get_or_create(&ResultLabels { result: "ok" })
                            .inc();
                        let io = IdleTimeout::new(tls, idle_timeout, active.clone());
                        self.serve(io, active).await;
                    }
                    Ok(Err(e)) => {
                        metrics
                            .tls_handshakes
                            .get_or_create(&ResultLabels { result: "error" })
                            .inc();
                        tracing::debug!(client = %self.info.client, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics
                            .tls_handshakes
                            .get_or_create(&ResultLabels { result: "timeout" })
                            .inc();
                    }
                }
            }
            None => {
                let io = IdleTimeout::new(stream, idle_timeout, active.clone());
                self.serve(io, active).await;
            }
        }
        gauge.dec();
    }

    async fn serve<I>(self, io: I, active: Arc<AtomicUsize>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let pipeline = self.pipeline.clone();
        let info = Arc::new(self.info);
        let service = service_fn(move |req: Request<Incoming>| {
            let pipeline = pipeline.clone();
            let info = info.clone();
            let guard = ActiveRequest::new(active.clone());
            // Boxed: hyper keeps one slot of the service's future type per connection for its
            // whole life, so an unboxed future (the whole pipeline, upstream exchange included)
            // would cost every idle connection its size. Boxed, it costs one allocation per
            // request and nothing while idle.
            Box::pin(async move {
                let resp = pipeline.handle(&info, req).await;
                // The request stays in flight until its response body has ended: a stream with
                // gaps longer than the idle timeout (SSE, long polling, gRPC streams) is not idle.
                Ok::<_, Infallible>(resp.map(|inner| InFlightBody { inner, _guard: guard }))
            })
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        if let Err(e) = self.watcher.watch(conn.into_owned()).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// A response body that keeps its request counted as in flight until it ends or is dropped.
struct InFlightBody {
    inner: ProxyBody,
    _guard: ActiveRequest,
}

impl http_body::Body for InFlightBody {
    type Data = bytes::Bytes;
    type Error = <ProxyBody as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts the requests in flight on one connection, for the idle timeout.
struct ActiveRequest(Arc<AtomicUsize>);

impl ActiveRequest {
    fn new(n: Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Closes a client connection that has had no request in flight and no bytes moving for the idle
/// timeout. A request waiting on a slow backend is not idle, however quiet the socket is.
///
/// Reads and writes only set a flag: the timer ticks every quarter of the timeout and the
/// connection closes after four quiet ticks in a row, i.e. between 1 and 1.25 times the timeout
/// after the last activity. Busy connections never read the clock or touch the timer wheel per
/// read or write.
struct IdleTimeout<T> {
    inner: T,
    tick: Duration,
    busy: bool,
    quiet_ticks: u8,
    sleep: Pin<Box<Sleep>>,
    active: Arc<AtomicUsize>,
}

/// Quiet ticks that make a connection idle.
const IDLE_TICKS: u8 = 4;

impl<T> IdleTimeout<T> {
    fn new(inner: T, timeout: Duration, active: Arc<AtomicUsize>) -> Self {
        let tick = (timeout / u32::from(IDLE_TICKS)).max(Duration::from_millis(1));
        Self {
            inner,
            tick,
            busy: false,
            quiet_ticks: 0,
            sleep: Box::pin(tokio::time::sleep(tick)),
            active,
        }
    }

    fn touch(&mut self) {
        self.busy = true;
    }

    /// Whether the connection has been idle too long. Registers the waker, so an idle connection is
    /// woken up to be closed.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        // Bounded: each round either returns or re-arms the timer into the future.
        for _ in 0..=IDLE_TICKS {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.busy || self.active.load(Ordering::Relaxed) > 0 {
                self.busy = false;
                self.quiet_ticks = 0;
            } else {
                self.quiet_ticks += 1;
                if self.quiet_ticks >= IDLE_TICKS {
                    return true;
                }
            }
            let next = Instant::now() + self.tick;
            self.sleep.as_mut().reset(next);
        }
        false
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
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

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(resumption: bool) -> TlsConfigs {
        TlsConfigs::new(&SnapshotHandle::default(), resumption).unwrap()
    }

    #[test]
    fn resumption_off_means_no_session_cache_and_no_tickets_for_either_tls_version() {
        let off = configs(false);
        for c in [&off.tls12, &off.tls13] {
            assert_eq!(c.send_tls13_tickets, 0);
            assert!(!c.session_storage.can_cache());
        }
        let on = configs(true);
        assert!(on.tls12.send_tls13_tickets > 0);
        assert!(on.tls12.session_storage.can_cache());
    }
}
