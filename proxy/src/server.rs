//! Listeners: accept, TLS, serve HTTP/1.1 and HTTP/2 on each connection, and drain on shutdown.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
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
use tokio_rustls::{server::TlsStream, LazyConfigAcceptor, TlsAcceptor};

use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::{
    client_auth::{ClientCa, ClientCertSession},
    config::{ProxyConfig, TlsVersion},
    conn::ConnInfo,
    metrics::{ConnectionLabels, ListenerLabels, ResultLabels},
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
///
/// Hosts with client certificate authentication get configurations of their own, one per CA
/// bundle ([`ClientCa`]), that request a certificate: built on the first handshake that needs
/// them and cached here (a handful of bundles in practice; the cache is emptied when it reaches
/// [`MAX_CLIENT_AUTH_CONFIGS`], so bundles of past snapshots do not pile up). Each has its own
/// session cache, so a session resumed under one CA was verified under that CA.
#[derive(Clone, Debug)]
pub struct TlsConfigs {
    tls12: Arc<rustls::ServerConfig>,
    tls13: Arc<rustls::ServerConfig>,
    snapshots: SnapshotHandle,
    resumption: bool,
    client_auth: Arc<Mutex<Vec<ClientAuthConfigs>>>,
}

/// The two configurations that request a certificate for one CA bundle.
#[derive(Debug)]
struct ClientAuthConfigs {
    ca: Arc<ClientCa>,
    tls12: Arc<rustls::ServerConfig>,
    tls13: Arc<rustls::ServerConfig>,
}

/// Client-authentication configurations kept at most (see [`TlsConfigs`]).
const MAX_CLIENT_AUTH_CONFIGS: usize = 32;

const ALL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
const TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

impl TlsConfigs {
    /// `resumption`: a session cache and TLS 1.3 tickets (read once at start).
    pub fn new(snapshots: &SnapshotHandle, resumption: bool) -> Result<Self, rustls::Error> {
        Ok(Self {
            tls12: server_config(snapshots, resumption, ALL_VERSIONS, None)?,
            tls13: server_config(snapshots, resumption, TLS13_ONLY, None)?,
            snapshots: snapshots.clone(),
            resumption,
            client_auth: Arc::default(),
        })
    }

    fn acceptor(&self, min: TlsVersion) -> TlsAcceptor {
        TlsAcceptor::from(self.base(min))
    }

    fn base(&self, min: TlsVersion) -> Arc<rustls::ServerConfig> {
        match min {
            TlsVersion::Tls12 => self.tls12.clone(),
            TlsVersion::Tls13 => self.tls13.clone(),
        }
    }

    /// The configuration that requests a certificate for `ca`.
    fn with_client_auth(
        &self,
        ca: &Arc<ClientCa>,
        min: TlsVersion,
    ) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let pick = |c: &ClientAuthConfigs| match min {
            TlsVersion::Tls12 => c.tls12.clone(),
            TlsVersion::Tls13 => c.tls13.clone(),
        };
        // A poisoned lock only means another handshake panicked while holding it; the cache is
        // still a list of complete entries.
        let mut cache = self.client_auth.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache
            .iter()
            .find(|c| Arc::ptr_eq(&c.ca, ca) || (c.ca.key() == ca.key() && c.ca == *ca))
        {
            return Ok(pick(c));
        }
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        let verifier = || Some(ca.handshake_verifier(algorithms));
        let entry = ClientAuthConfigs {
            ca: ca.clone(),
            tls12: server_config(&self.snapshots, self.resumption, ALL_VERSIONS, verifier())?,
            tls13: server_config(&self.snapshots, self.resumption, TLS13_ONLY, verifier())?,
        };
        let config = pick(&entry);
        if cache.len() >= MAX_CLIENT_AUTH_CONFIGS {
            cache.clear();
        }
        cache.push(entry);
        Ok(config)
    }
}

/// One server configuration: these versions, ALPN `h2` then `http/1.1`, certificates from the
/// snapshot, and a client certificate requested through `client_auth` when given.
fn server_config(
    snapshots: &SnapshotHandle,
    resumption: bool,
    versions: &[&'static rustls::SupportedProtocolVersion],
    client_auth: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider).with_protocol_versions(versions)?;
    let builder = match client_auth {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SnapshotCertResolver {
        snapshots: snapshots.clone(),
    }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if !resumption {
        // No session cache and no TLS 1.3 tickets: every connection does a full handshake.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
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

/// The hyper connection builders for one set of settings. A connection that negotiated ALPN `h2`
/// speaks only HTTP/2: anything else is a protocol error that closes it (RFC 9113 3.3), never an
/// HTTP/1.1 answer. Otherwise the first bytes decide (HTTP/1, or h2c with prior knowledge on the
/// plain listener).
#[derive(Debug)]
struct Builders {
    auto: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(config: &ProxyConfig) -> Self {
        Self {
            auto: connection_builder(config),
            h2: connection_builder(config).http2_only(),
        }
    }
}

/// Response bytes an HTTP/2 stream may hold for a client that reads slowly.
const MAX_SEND_BUF: usize = 64 * 1024;

/// The hyper connection builder for a set of settings.
fn connection_builder(config: &ProxyConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Request heads are timed by `IdleTimeout` (from their first byte, so that a keep-alive
        // connection waiting for its next request is governed by the idle timeout instead); hyper's
        // own timer is only a backstop.
        .header_read_timeout(config.header_read_timeout + config.idle_timeout)
        .max_buf_size(config.max_header_bytes.max(8192))
        .max_headers(config.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        // A stream whose reader is slow buffers at most this much of its response here (h2's
        // default is 400 KiB); HTTP/1 buffers at most `max_buf_size` above. Backpressure then
        // reaches the backend, whose body is only read as fast as the client takes it.
        .max_send_buf_size(MAX_SEND_BUF)
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
    let mut current: Option<(Arc<ProxyConfig>, Arc<Builders>)> = None;

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
        let Some(slot) = pipeline.connections.try_open() else {
            // At the limit: refuse at once (the socket closes here), so that a flood costs a
            // file descriptor for a moment and nothing else.
            pipeline.metrics.connections_refused.inc();
            continue;
        };
        let _ = stream.set_nodelay(true);
        // One getsockname per connection: the listeners are bound to a wildcard address, and the
        // address the client dialled chooses the route table (a Gateway with its own address).
        let local_ip = stream
            .local_addr()
            .map(|a| a.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let snapshot = pipeline.snapshots.load();
        let config = snapshot.config.clone();
        // Only while some host has client authentication does a handshake look at its
        // ClientHello first (to request a certificate for those names only).
        let client_auth = snapshot.certs.client_auth_active();
        drop(snapshot);
        let builder = match &current {
            Some((c, b)) if Arc::ptr_eq(c, &config) || **c == *config => b.clone(),
            _ => {
                let b = Arc::new(Builders::new(&config));
                current = Some((config.clone(), b.clone()));
                b
            }
        };
        let conn = Connection {
            pipeline: pipeline.clone(),
            builders: builder,
            tls: tls.as_ref().map(|t| Handshake {
                configs: t.clone(),
                min: config.tls_min_version,
                client_auth,
            }),
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            proxy_protocol: config.proxy_protocol,
            info: ConnInfo::new(client, local_port, tls.is_some()).at(local_ip),
            kind,
            watcher: graceful.watcher(),
            _slot: Some(slot),
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

/// How a TLS connection's handshake is made.
struct Handshake {
    configs: TlsConfigs,
    min: TlsVersion,
    /// Some host of the snapshot has client authentication: read the ClientHello first.
    client_auth: bool,
}

impl Handshake {
    /// The TLS handshake, and, while some host has client authentication, what it learnt about the
    /// client's certificate.
    async fn run(
        &self,
        stream: TcpStream,
        snapshots: &SnapshotHandle,
    ) -> io::Result<(TlsStream<TcpStream>, Option<ClientCertSession>)> {
        if !self.client_auth {
            let tls = self.configs.acceptor(self.min).accept(stream).await?;
            return Ok((tls, None));
        }
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
        let sni = start
            .client_hello()
            .server_name()
            .map(|s| s.trim_end_matches('.').to_ascii_lowercase());
        // The snapshot current now, as the certificate resolver reads it.
        let ca = snapshots.load().certs.client_ca(sni.as_deref()).cloned();
        let config = match &ca {
            Some(ca) => self
                .configs
                .with_client_auth(ca, self.min)
                .map_err(io::Error::other)?,
            None => self.configs.base(self.min),
        };
        let tls = start.into_stream(config).await?;
        let session = match ca {
            Some(ca) => {
                let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
                ClientCertSession::verified(ca, sni.is_some(), chain)
            }
            None => ClientCertSession::none(sni.is_some()),
        };
        Ok((tls, Some(session)))
    }
}

struct Connection {
    pipeline: Arc<Pipeline>,
    builders: Arc<Builders>,
    tls: Option<Handshake>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    /// Read a PROXY protocol header first; its source address becomes the client's.
    proxy_protocol: bool,
    info: ConnInfo,
    kind: ListenerKind,
    watcher: hyper_util::server::graceful::Watcher,
    /// Counts this connection against `--max-connections`; moved into [`OpenConnection`].
    _slot: Option<crate::pipeline::ConnectionSlot>,
}

/// A connection counted as open (gauge and `--max-connections` slot) until the last holder drops
/// it: the connection itself, or a WebSocket tunnel that outlives it. The gauge it counts in is
/// its protocol's, once known ([`OpenConnection::count_as`]).
struct OpenConnection {
    /// The `http1` and `h2` gauges of the connection's listener.
    gauges: [prometheus_client::metrics::gauge::Gauge; 2],
    /// 0 while not counted in a gauge, else 1 + the index of the gauge it is counted in.
    counted: std::sync::atomic::AtomicU8,
    _slot: Option<crate::pipeline::ConnectionSlot>,
}

impl OpenConnection {
    fn new(
        metrics: &crate::metrics::Metrics,
        listener: &'static str,
        slot: Option<crate::pipeline::ConnectionSlot>,
    ) -> Self {
        let gauge = |protocol| {
            metrics
                .active_connections
                .get_or_create(&ConnectionLabels { listener, protocol })
                .clone()
        };
        Self {
            gauges: [gauge("http1"), gauge("h2")],
            counted: std::sync::atomic::AtomicU8::new(0),
            _slot: slot,
        }
    }

    /// Counts the connection as open in its protocol's gauge (moving it from the other one).
    fn count_as(&self, h2: bool) {
        let new = if h2 { 2 } else { 1 };
        let old = self.counted.swap(new, Ordering::AcqRel);
        if old == new {
            return;
        }
        if old != 0 {
            self.gauges[usize::from(old - 1)].dec();
        }
        self.gauges[usize::from(new - 1)].inc();
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let counted = *self.counted.get_mut();
        if counted != 0 {
            self.gauges[usize::from(counted - 1)].dec();
        }
    }
}

/// What a client connection's bytes are counted in: the listener's byte counters, and the open
/// connection whose protocol the first bytes may reveal (the HTTP/2 preface).
struct Meter {
    open: Arc<OpenConnection>,
    received: prometheus_client::metrics::counter::Counter,
    sent: prometheus_client::metrics::counter::Counter,
}

impl Connection {
    async fn run(mut self, mut stream: TcpStream) {
        if self.proxy_protocol {
            match crate::proxy_protocol::read_header(&mut stream, self.header_read_timeout).await {
                Ok(Some(client)) => {
                    self.info =
                        ConnInfo::new(client, self.info.local_port, self.info.tls).at(self.info.local_ip);
                }
                Ok(None) => {}
                Err(e) => {
                    // Closed without an answer: the peer is not the balancer we were told of.
                    tracing::debug!(peer = %self.info.client, error = %e, "PROXY protocol header refused");
                    self.pipeline.metrics.connections_refused.inc();
                    return;
                }
            }
        }
        let metrics = self.pipeline.metrics.clone();
        let listener = self.kind.label();
        let open = Arc::new(OpenConnection::new(&metrics, listener, self._slot.take()));
        self.info = self.info.clone().counted_by(open.clone());
        let labels = ListenerLabels { listener };
        let meter = Meter {
            open,
            received: metrics.received_bytes.get_or_create_owned(&labels),
            sent: metrics.sent_bytes.get_or_create_owned(&labels),
        };
        let counts = Arc::new(RequestCounts::default());
        let timeouts = (self.idle_timeout, self.header_read_timeout);
        match self.tls.take() {
            Some(handshake) => {
                let handshake = tokio::time::timeout(
                    self.header_read_timeout,
                    handshake.run(stream, &self.pipeline.snapshots),
                )
                .await;
                match handshake {
                    Ok(Ok((tls, session))) => {
                        if let Some(session) = session {
                            self.info.client_cert = Some(Arc::new(session));
                        }
                        metrics
                            .tls_handshakes
                            .get_or_create(&ResultLabels { result: "ok" })
                            .inc();
                        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                        let h2 = alpn.as_deref() == Some(b"h2");
                        meter.open.count_as(h2);
                        let io = IdleTimeout::new(tls, timeouts, counts.clone(), h2, meter);
                        self.serve(io, counts, alpn.as_deref()).await;
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
                meter.open.count_as(false);
                let io = IdleTimeout::new(stream, timeouts, counts.clone(), false, meter);
                self.serve(io, counts, None).await;
            }
        }
    }

    async fn serve<I>(self, io: I, counts: Arc<RequestCounts>, alpn: Option<&[u8]>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let pipeline = self.pipeline.clone();
        let info = Arc::new(self.info);
        let service = service_fn(move |req: Request<Incoming>| {
            let pipeline = pipeline.clone();
            let info = info.clone();
            let guard = ActiveRequest::new(counts.clone());
            // Boxed: hyper keeps one slot of the service's future type per connection for its
            // whole life, so an unboxed future (the whole pipeline, upstream exchange included)
            // would cost every idle connection its size. Boxed, it costs one allocation per
            // request and nothing while idle.
            Box::pin(async move {
                let resp = pipeline.handle(&info, req).await;
                if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    // The request's own handle on the connection's counts: no second clone.
                    guard.0.upgraded.store(true, Ordering::Relaxed);
                }
                // The request stays in flight until its response body has ended: a stream with
                // gaps longer than the idle timeout (SSE, long polling, gRPC streams) is not idle.
                Ok::<_, Infallible>(resp.map(|inner| InFlightBody { inner, _guard: guard }))
            })
        });
        let ended = if alpn == Some(b"h2") {
            // HTTP/2 only. (hyper-util ignores "only" with upgrades, and HTTP/2 has none here.)
            let conn = self.builders.h2.serve_connection(TokioIo::new(io), service);
            self.watcher.watch(conn.into_owned()).await
        } else {
            let conn = self
                .builders
                .auto
                .serve_connection_with_upgrades(TokioIo::new(io), service);
            self.watcher.watch(conn.into_owned()).await
        };
        if let Err(e) = ended {
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

/// The requests of one connection, for the idle and request-head timeouts.
#[derive(Debug, Default)]
struct RequestCounts {
    /// Requests whose response has not ended.
    active: AtomicUsize,
    /// Requests whose head was complete (ever), so a head timer can tell that its head arrived.
    started: AtomicUsize,
    /// A `101 Switching Protocols` went out: the connection is a tunnel now (WebSocket), its bytes
    /// are no request heads, and only the idle timeout applies (no bytes either way for that long,
    /// as nginx's `proxy_read_timeout` ends a quiet WebSocket).
    upgraded: std::sync::atomic::AtomicBool,
}

/// Counts one request as in flight until dropped.
struct ActiveRequest(Arc<RequestCounts>);

impl ActiveRequest {
    fn new(counts: Arc<RequestCounts>) -> Self {
        counts.active.fetch_add(1, Ordering::Relaxed);
        counts.started.fetch_add(1, Ordering::Relaxed);
        Self(counts)
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The two timers of a client connection, on one timer wheel entry:
///
/// - **Idle**: a connection with no request in flight and no bytes moving for `--idle-timeout` is
///   closed. A request waiting on a slow backend, or a response streaming with long gaps, is not
///   idle, however quiet the socket is. This is also what ends a keep-alive connection waiting for
///   its next request.
/// - **Request head** (HTTP/1 only): from the first byte of a request head, the client has
///   `--header-read-timeout` to finish it (a slowloris defence). It starts with a byte, not with
///   the wait, so that it never cuts a keep-alive connection between requests.
///
/// Reads and writes only set a flag: the timer ticks every quarter of the shorter timeout, so a
/// connection closes within 1 to 1.25 times its timeout (plus a tick for the head timer), and busy
/// connections never read the clock or touch the timer wheel per read or write. The head timer
/// reads the clock once per request.
struct IdleTimeout<T> {
    inner: T,
    tick: Duration,
    idle_ticks: u32,
    head_timeout: Duration,
    busy: bool,
    quiet_ticks: u32,
    sleep: Pin<Box<Sleep>>,
    counts: Arc<RequestCounts>,
    /// HTTP/2 (by ALPN, or the prior-knowledge preface): no head timer.
    h2: bool,
    /// Whether the first bytes were looked at for the HTTP/2 preface.
    sniffed: bool,
    /// When the current request head started, and `counts.started` then.
    head: Option<(Instant, usize)>,
    /// The first line of the connection while it arrives in pieces.
    first_line: Vec<u8>,
    /// The connection opened with garbage: every read is the end of the stream.
    refused: bool,
    meter: Meter,
}

/// Past this, the first line is judged by what came (hyper refuses longer heads anyway).
const MAX_FIRST_LINE: usize = 8 * 1024;

/// What the first bytes of a connection say about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FirstLine {
    /// An HTTP/1 request line, or the start of one that can still become one.
    Http1,
    /// Anything else: a broken HTTP/2 preface, TLS to the plain port, noise.
    Garbage,
    /// Too little to tell yet.
    Undecided,
}

/// Judges the first bytes of a connection: a request line must end in `HTTP/1.x`. A connection
/// that opens with anything else is closed without an answer, as an HTTP/2 server must for a bad
/// preface (RFC 9113 3.4), rather than answered in a protocol the client may not speak. Decides
/// as early as the bytes allow, before hyper's parser would answer 400 to a partial line.
fn first_line(bytes: &[u8]) -> FirstLine {
    // Empty lines before the request line are allowed (RFC 9112 2.2).
    let start = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    let (line, complete) = match bytes.iter().position(|b| *b == b'\n') {
        Some(end) => (bytes[..end].strip_suffix(b"\r").unwrap_or(&bytes[..end]), true),
        None => (bytes, false),
    };
    // method SP target SP version
    let mut parts = line.splitn(3, |b| *b == b' ');
    let (Some(_), Some(_), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return if complete || line.len() >= MAX_FIRST_LINE {
            FirstLine::Garbage
        } else {
            FirstLine::Undecided
        };
    };
    const V: &[u8] = b"HTTP/1.";
    let fits = if version.len() <= V.len() {
        V.starts_with(version)
    } else {
        version.starts_with(V) && (!complete || version.len() == V.len() + 1)
    };
    match (fits, complete) {
        (false, _) => FirstLine::Garbage,
        (true, true) => FirstLine::Http1,
        (true, false) if version.len() > V.len() => FirstLine::Http1,
        (true, false) => FirstLine::Undecided,
    }
}

/// Quiet ticks that make a connection idle.
const IDLE_TICKS: u32 = 4;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl<T> IdleTimeout<T> {
    fn new(
        inner: T,
        (idle, head): (Duration, Duration),
        counts: Arc<RequestCounts>,
        h2: bool,
        meter: Meter,
    ) -> Self {
        let tick = (idle.min(head) / IDLE_TICKS).max(Duration::from_millis(1));
        let idle_ticks = u32::try_from(idle.as_nanos().div_ceil(tick.as_nanos().max(1)))
            .unwrap_or(u32::MAX)
            .max(1);
        Self {
            inner,
            tick,
            idle_ticks,
            head_timeout: head,
            busy: false,
            quiet_ticks: 0,
            sleep: Box::pin(tokio::time::sleep(tick)),
            counts,
            h2,
            sniffed: h2,
            head: None,
            first_line: Vec::new(),
            refused: false,
            meter,
        }
    }

    /// `n` bytes went out.
    fn wrote(&mut self, n: usize) {
        if n > 0 {
            self.busy = true;
            self.meter.sent.inc_by(n as u64);
        }
    }

    /// Bytes came in. Returns false when the connection must be closed without an answer.
    fn received(&mut self, bytes: &[u8]) -> bool {
        self.busy = true;
        if !self.sniffed {
            // The first line may arrive in pieces (hyper reads the first 24 bytes on their own):
            // keep what came until it is complete. Usually it is complete in the first read, and
            // nothing is copied.
            let first = if self.first_line.is_empty() {
                bytes
            } else {
                self.first_line.extend_from_slice(bytes);
                &self.first_line[..]
            };
            let verdict = if first.starts_with(H2_PREFACE) {
                self.h2 = true;
                self.meter.open.count_as(true);
                FirstLine::Http1
            } else if H2_PREFACE.starts_with(first) {
                FirstLine::Undecided
            } else {
                first_line(first)
            };
            match verdict {
                FirstLine::Garbage => return false,
                FirstLine::Http1 => {
                    self.sniffed = true;
                    self.first_line = Vec::new();
                }
                FirstLine::Undecided => {
                    if self.first_line.is_empty() {
                        self.first_line.extend_from_slice(bytes);
                    }
                }
            }
        }
        if !self.h2
            && self.head.is_none()
            && self.counts.active.load(Ordering::Relaxed) == 0
            && !self.counts.upgraded.load(Ordering::Relaxed)
        {
            self.head = Some((Instant::now(), self.counts.started.load(Ordering::Relaxed)));
        }
        true
    }

    /// Whether the connection has been idle too long, or a request head is late. Registers the
    /// waker, so an idle connection is woken up to be closed.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        // Bounded: each round either returns or re-arms the timer into the future.
        for _ in 0..=IDLE_TICKS {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            let active = self.counts.active.load(Ordering::Relaxed);
            if let Some((since, started)) = self.head {
                if active > 0
                    || self.counts.started.load(Ordering::Relaxed) != started
                    || self.counts.upgraded.load(Ordering::Relaxed)
                {
                    // The head arrived.
                    self.head = None;
                } else if since.elapsed() >= self.head_timeout {
                    return true;
                }
            }
            if self.busy || active > 0 {
                self.busy = false;
                self.quiet_ticks = 0;
            } else {
                self.quiet_ticks += 1;
                if self.quiet_ticks >= self.idle_ticks {
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
        if self.refused {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let read = buf.filled().len().saturating_sub(before);
                self.meter.received.inc_by(read as u64);
                if read > 0 && !self.received(&buf.filled()[before..]) {
                    // Neither HTTP/1 nor the HTTP/2 preface: end the stream here, so hyper closes
                    // without answering. What the client already sent is read away first, so the
                    // close is a FIN and not a reset (bounded: 64 KiB, and only what is there).
                    buf.set_filled(before);
                    self.refused = true;
                    let mut scratch = [0u8; 4096];
                    for _ in 0..16 {
                        let mut rb = ReadBuf::new(&mut scratch);
                        match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                            Poll::Ready(Ok(())) if !rb.filled().is_empty() => continue,
                            _ => break,
                        }
                    }
                    return Poll::Ready(Ok(()));
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
        if let Poll::Ready(Ok(n)) = r {
            self.wrote(n);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.wrote(n);
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
    fn only_http1_request_lines_or_the_http2_preface_open_a_connection() {
        use FirstLine::*;
        let cases: &[(&[u8], FirstLine)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Http1),
            (b"\r\nGET / HTTP/1.0\r\n", Http1),
            (b"GET / HTTP/1.1", Http1),
            (b"GET /a-long-path-not-finished", Undecided),
            (b"GET / HTT", Undecided),
            // hyper reads the first 24 bytes alone: this must already be refused.
            (b"INVALID CONNECTION PREFA", Garbage),
            (b"INVALID CONNECTION PREFACE\r\n\r\n", Garbage),
            (b"GET / HTTP/2.0\r\n", Garbage),
            (b"GET / HTTP/1.10\r\n", Garbage),
            (b"GET /\r\n", Garbage),
            (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\n", Garbage),
        ];
        for (bytes, want) in cases {
            assert_eq!(first_line(bytes), *want, "{:?}", String::from_utf8_lossy(bytes));
        }
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
