//! The upstream side of forwarding: a connection to an endpoint (from this worker's pool or new),
//! the request sent on it, and the response body that hands the connection back when it ends.
//!
//! The route's [`UpstreamProtocol`] decides how: HTTP/1.1 on our own codec (`h1`) over plain TCP
//! (the default, and the hot path: pooled connections, no task, no allocation per request) or
//! over TLS (`upstream_tls`, pooled by endpoint and TLS settings); or HTTP/2 on hyper's client
//! (`upstream_h2`), one multiplexed connection per worker, endpoint, protocol and TLS settings.
//! Endpoint choice, the connect retry on the next endpoint, the timeouts, the metrics and the
//! in-flight count are the same for all of them.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use crate::{
    backend::Backend,
    body::{BodyError, RequestBody},
    config::ProxyConfig,
    error::ProxyError,
    h1::{self, H1Body, H1Conn, SendError, TlsIo},
    metrics::Metrics,
    policy::{Alpn, UpstreamProtocol, UpstreamRequest, UpstreamTls},
    state,
    upstream_h2::{self, Connected, H2Body, H2Stream},
    upstream_tls,
};

/// How often a request may meet a pooled connection that the backend had already closed before we
/// open a fresh one.
const MAX_STALE_RETRIES: usize = 3;

/// The upstream timeouts of one request: the class-wide settings, overridden by the route's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// To the response head, and between two pieces of the response body.
    pub response: Duration,
    /// How long a pooled connection may have been idle and still be used.
    pub pool_idle: Duration,
}

impl Timeouts {
    pub fn resolve(config: &ProxyConfig, route: &crate::policy::UpstreamTimeouts) -> Self {
        Self {
            connect: route.connect.unwrap_or(config.upstream_connect_timeout),
            response: route.read.unwrap_or(config.upstream_response_timeout),
            pool_idle: config.upstream_idle_timeout,
        }
    }
}

/// Sends a request to the backend's endpoint `first` and returns the response head with the
/// address that answered, speaking the route's protocol (`upstream`: `backend-protocol` and
/// `proxy-ssl-*`). A failed connect (TCP, TLS handshake and certificate check, HTTP/2
/// handshake) is retried once on the next endpoint (nothing was sent yet); a pooled connection
/// the backend had closed is replaced transparently.
///
/// HTTP/1.1 runs in the caller's task: the request is written and the response read on the
/// connection directly (`h1`), with no connection task and no channel in between.
pub async fn send(
    backend: &Backend,
    first: usize,
    req: Request<RequestBody>,
    timeouts: Timeouts,
    upstream: &UpstreamRequest,
    metrics: &Metrics,
) -> Result<(Response<UpstreamBody>, SocketAddr), ProxyError> {
    match upstream.protocol {
        UpstreamProtocol::Http1 => send_h1(backend, first, req, timeouts, metrics, Plain).await,
        // Boxed, so that the plain path's future does not grow by the size of these.
        UpstreamProtocol::Https => {
            let tls = upstream
                .tls
                .as_ref()
                .unwrap_or_else(|| upstream_tls::default_tls());
            Box::pin(send_h1(backend, first, req, timeouts, metrics, Tls(tls))).await
        }
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
            Box::pin(send_h2(backend, first, req, timeouts, upstream, metrics)).await
        }
    }
}

/// Where HTTP/1.1 connections come from: the plain pool and TCP, or the TLS pool and a handshake.
trait H1Connector: Sync {
    type Io: h1::Io;

    /// A pooled idle connection to `addr` that still looks usable.
    fn checkout(&self, addr: SocketAddr, idle_timeout: Duration) -> Option<H1Conn<Self::Io>>;

    /// A new connection to `addr`, within `timeout`.
    fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> impl Future<Output = Result<H1Conn<Self::Io>, ProxyError>> + Send;

    /// The response body, with what it needs to find its pool again.
    fn body(&self, body: H1Body<Self::Io>) -> Inner;
}

/// HTTP/1.1 over plain TCP.
struct Plain;

impl H1Connector for Plain {
    type Io = TcpStream;

    #[inline]
    fn checkout(&self, addr: SocketAddr, idle_timeout: Duration) -> Option<H1Conn> {
        state::with(|s| s.checkout(addr, idle_timeout)).flatten()
    }

    fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> impl Future<Output = Result<H1Conn, ProxyError>> + Send {
        connect(addr, timeout)
    }

    #[inline]
    fn body(&self, body: H1Body) -> Inner {
        Inner::Plain(body)
    }
}

/// HTTP/1.1 over TLS with these settings.
struct Tls<'a>(&'a Arc<UpstreamTls>);

impl H1Connector for Tls<'_> {
    type Io = TlsIo;

    fn checkout(&self, addr: SocketAddr, idle_timeout: Duration) -> Option<H1Conn<TlsIo>> {
        state::with(|s| s.checkout_tls(addr, self.0, idle_timeout)).flatten()
    }

    async fn connect(&self, addr: SocketAddr, timeout: Duration) -> Result<H1Conn<TlsIo>, ProxyError> {
        let tls = self.0;
        let connected = async move {
            let tcp = connect_tcp(addr).await?;
            let stream = upstream_tls::handshake(addr, tcp, tls, Alpn::Http1).await?;
            Ok(H1Conn::new(Box::new(stream)))
        };
        tokio::time::timeout(timeout, connected)
            .await
            .map_err(|_| ProxyError::Connect {
                addr,
                reason: "timed out".into(),
            })?
    }

    fn body(&self, body: H1Body<TlsIo>) -> Inner {
        Inner::Tls(body, self.0.clone())
    }
}

/// The HTTP/1.1 exchange, over whichever connector.
async fn send_h1<C: H1Connector>(
    backend: &Backend,
    first: usize,
    mut req: Request<RequestBody>,
    timeouts: Timeouts,
    metrics: &Metrics,
    connector: C,
) -> Result<(Response<UpstreamBody>, SocketAddr), ProxyError> {
    let endpoints = &backend.endpoints;
    if endpoints.is_empty() {
        return Err(ProxyError::NoEndpoint(backend.id.to_string()));
    }
    let mut idx = first % endpoints.len();
    let mut connect_retried = false;
    let mut stale = 0;
    loop {
        let addr = endpoints[idx].addr;
        let pooled = connector.checkout(addr, timeouts.pool_idle);
        let conn = match pooled {
            Some(conn) => conn,
            None => match connector.connect(addr, timeouts.connect).await {
                Ok(conn) => conn,
                Err(e) => {
                    metrics.upstream_connect_errors.inc();
                    if !connect_retried && endpoints.len() > 1 {
                        connect_retried = true;
                        idx = (idx + 1) % endpoints.len();
                        continue;
                    }
                    return Err(e);
                }
            },
        };
        let in_flight = InFlight::begin(addr);
        let sent = tokio::time::timeout(timeouts.response, conn.send(req)).await;
        match sent {
            Err(_) => {
                metrics.upstream_timeouts.inc();
                return Err(ProxyError::UpstreamTimeout);
            }
            Ok(Ok(resp)) => {
                let (parts, inner) = resp.into_parts();
                let mut body = UpstreamBody {
                    inner: connector.body(inner),
                    _in_flight: in_flight,
                    read_timeout: ReadTimeout::new(timeouts.response),
                };
                body.release();
                return Ok((Response::from_parts(parts, body), addr));
            }
            // The pooled connection had been closed before the request reached the backend.
            Ok(Err(SendError::Stale(r))) if stale < MAX_STALE_RETRIES => {
                stale += 1;
                req = r;
            }
            Ok(Err(SendError::Body(e))) => {
                return Err(match e.downcast_ref::<BodyError>() {
                    Some(BodyError::TooLarge(max)) => ProxyError::BodyTooLarge(*max),
                    _ => ProxyError::ClientBody(e.to_string()),
                })
            }
            Ok(Err(e)) => return Err(ProxyError::Upstream(e.to_string())),
        }
    }
}

/// The HTTP/2 exchange: a stream on this worker's shared connection to the endpoint (made when
/// there is none with room), the request sent on it, the response head awaited.
async fn send_h2(
    backend: &Backend,
    first: usize,
    req: Request<RequestBody>,
    timeouts: Timeouts,
    upstream: &UpstreamRequest,
    metrics: &Metrics,
) -> Result<(Response<UpstreamBody>, SocketAddr), ProxyError> {
    let endpoints = &backend.endpoints;
    if endpoints.is_empty() {
        return Err(ProxyError::NoEndpoint(backend.id.to_string()));
    }
    let protocol = upstream.protocol;
    let tls = protocol.is_tls().then(|| {
        upstream
            .tls
            .as_ref()
            .unwrap_or_else(|| upstream_tls::default_tls())
    });
    let mut req = upstream_h2::into_h2(req, tls.is_some()).map(H2Body::new);
    let failure = req.body().failure();
    let mut idx = first % endpoints.len();
    let mut connect_retried = false;
    let mut gone = 0;
    loop {
        let addr = endpoints[idx].addr;
        let stream = state::with(|s| s.h2_stream(addr, protocol, tls))
            .ok_or_else(|| ProxyError::Upstream("worker state is gone".into()))?;
        let connected = stream
            .slot()
            .sender(|| connect_h2(addr, tls, timeouts.connect))
            .await;
        let mut sender = match connected {
            Ok(sender) => sender,
            Err(e) => {
                metrics.upstream_connect_errors.inc();
                if !connect_retried && endpoints.len() > 1 {
                    connect_retried = true;
                    idx = (idx + 1) % endpoints.len();
                    continue;
                }
                return Err(e);
            }
        };
        let in_flight = InFlight::begin(addr);
        let sent = tokio::time::timeout(timeouts.response, sender.try_send_request(req)).await;
        match sent {
            Err(_) => {
                metrics.upstream_timeouts.inc();
                return Err(ProxyError::UpstreamTimeout);
            }
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                // What the rest of the pipeline (and an HTTP/1.1 client) expects of a response.
                parts.version = Version::HTTP_11;
                let body = UpstreamBody {
                    inner: Inner::H2 {
                        body,
                        _stream: stream,
                    },
                    _in_flight: in_flight,
                    read_timeout: ReadTimeout::new(timeouts.response),
                };
                return Ok((Response::from_parts(parts, body), addr));
            }
            Ok(Err(mut e)) => {
                // The connection closed (or got GOAWAY) before it took the request: the request is
                // whole, and goes to a new connection.
                if let Some(r) = e.take_message() {
                    if gone < MAX_STALE_RETRIES {
                        stream.slot().set_broken();
                        gone += 1;
                        req = r;
                        continue;
                    }
                }
                let body_failed = failure.as_ref().and_then(|f| f.lock().ok()?.take());
                return Err(body_failed
                    .unwrap_or_else(|| ProxyError::Upstream(format!("HTTP/2: {}", chain(&e.into_error())))));
            }
        }
    }
}

/// An error and its sources, for the log: hyper's own message alone says little.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn connect_tcp(addr: SocketAddr) -> Result<TcpStream, ProxyError> {
    let stream = TcpStream::connect(addr).await.map_err(|e| ProxyError::Connect {
        addr,
        reason: e.to_string(),
    })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<H1Conn, ProxyError> {
    let err = |reason: String| ProxyError::Connect { addr, reason };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| err("timed out".into()))?
        .map_err(|e| err(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(H1Conn::new(stream))
}

/// A new HTTP/2 connection to `addr` (TCP, TLS with ALPN `h2` when `tls`, the HTTP/2 handshake),
/// within `timeout`.
async fn connect_h2(
    addr: SocketAddr,
    tls: Option<&Arc<UpstreamTls>>,
    timeout: Duration,
) -> Result<Connected, ProxyError> {
    let connected = async move {
        let tcp = connect_tcp(addr).await?;
        let handshake = match tls {
            None => upstream_h2::handshake(tcp).await,
            Some(tls) => {
                let stream = upstream_tls::handshake(addr, tcp, tls, Alpn::H2).await?;
                upstream_h2::handshake(stream).await
            }
        };
        handshake.map_err(|e| ProxyError::Connect {
            addr,
            reason: format!("HTTP/2 handshake: {}", chain(&e)),
        })
    };
    tokio::time::timeout(timeout, connected)
        .await
        .map_err(|_| ProxyError::Connect {
            addr,
            reason: "timed out".into(),
        })?
}

/// Counts a request in flight to an endpoint on this worker until dropped.
#[derive(Debug)]
struct InFlight(SocketAddr);

impl InFlight {
    fn begin(addr: SocketAddr) -> Self {
        state::with(|s| s.begin(addr));
        Self(addr)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        state::with(|s| s.end(self.0));
    }
}

/// A backend's response body, streamed as it arrives. Once an HTTP/1.1 body has been read to the
/// end, its connection goes back to this worker's pool; dropped early (the client went away), the
/// connection closes. An HTTP/2 body is one stream of a shared connection: dropped early, the
/// stream is reset and the connection carries on. The request counts as in flight to its
/// endpoint until then.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Inner,
    _in_flight: InFlight,
    read_timeout: ReadTimeout,
}

/// The body by protocol. An enum rather than a boxed trait object: the plain HTTP/1.1 body is
/// polled as directly as before, with one predictable branch.
#[derive(Debug)]
enum Inner {
    Plain(H1Body),
    /// With the settings whose pool the connection goes back to.
    Tls(H1Body<TlsIo>, Arc<UpstreamTls>),
    /// With the stream it holds on its shared connection until it ends.
    H2 {
        body: Incoming,
        _stream: H2Stream,
    },
}

/// The upstream read timeout between two pieces of a response body (nginx's
/// `proxy_read_timeout`): a backend that stops sending mid-body for longer than this fails the
/// response, so a stuck stream does not hold its client forever. The timer is armed only when a
/// read has to wait, and a read that makes progress only sets a flag, so a body that flows never
/// touches the timer wheel; a stall is detected within one to two times the timeout.
#[derive(Debug)]
struct ReadTimeout {
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    progress: bool,
}

impl ReadTimeout {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: None,
            progress: false,
        }
    }

    /// Called when the body has no data ready: whether the backend has now been silent too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        // Bounded: at most one re-arm per call.
        for _ in 0..2 {
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if !std::mem::take(&mut self.progress) {
                return true;
            }
            sleep.as_mut().reset(tokio::time::Instant::now() + timeout);
        }
        false
    }
}

impl UpstreamBody {
    /// Returns the connection to the pool once the body has ended and it can be reused.
    fn release(&mut self) {
        match &mut self.inner {
            Inner::Plain(body) => {
                if let Some(conn) = body.take_reusable() {
                    let addr = self._in_flight.0;
                    state::with(|s| s.checkin(addr, conn));
                }
            }
            Inner::Tls(body, tls) => {
                if let Some(conn) = body.take_reusable() {
                    let (addr, tls) = (self._in_flight.0, tls.clone());
                    state::with(|s| s.checkin_tls(addr, tls, conn));
                }
            }
            Inner::H2 { .. } => {}
        }
    }

    /// For a 101 response: the upstream connection, for the tunnel. Never for HTTP/2 (a request
    /// to an HTTP/2 backend does not ask for an upgrade).
    pub fn into_upgraded(self) -> Option<Upgraded> {
        match self.inner {
            Inner::Plain(body) => body.into_upgraded().map(Upgraded::Plain),
            Inner::Tls(body, _) => body.into_upgraded().map(Upgraded::Tls),
            Inner::H2 { .. } => None,
        }
    }
}

/// An upstream connection taken over after a 101 response, plain or TLS.
#[derive(Debug)]
pub enum Upgraded {
    Plain(h1::Upgraded),
    Tls(h1::Upgraded<TlsIo>),
}

impl AsyncRead for Upgraded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upgraded::Plain(u) => Pin::new(u).poll_read(cx, buf),
            Upgraded::Tls(u) => Pin::new(u).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upgraded::Plain(u) => Pin::new(u).poll_write(cx, buf),
            Upgraded::Tls(u) => Pin::new(u).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upgraded::Plain(u) => Pin::new(u).poll_write_vectored(cx, bufs),
            Upgraded::Tls(u) => Pin::new(u).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Upgraded::Plain(u) => u.is_write_vectored(),
            Upgraded::Tls(u) => u.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upgraded::Plain(u) => Pin::new(u).poll_flush(cx),
            Upgraded::Tls(u) => Pin::new(u).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upgraded::Plain(u) => Pin::new(u).poll_shutdown(cx),
            Upgraded::Tls(u) => Pin::new(u).poll_shutdown(cx),
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = match &mut self.inner {
            Inner::Plain(body) => Pin::new(body).poll_frame(cx),
            Inner::Tls(body, _) => Pin::new(body).poll_frame(cx),
            Inner::H2 { body, .. } => Pin::new(body).poll_frame(cx).map_err(io::Error::other),
        };
        match &polled {
            Poll::Ready(None | Some(Ok(_))) => {
                self.read_timeout.progress = true;
                self.release();
            }
            Poll::Pending if self.read_timeout.expired(cx) => {
                return Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "upstream read timeout",
                ))));
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Plain(body) => body.is_end_stream(),
            Inner::Tls(body, _) => body.is_end_stream(),
            Inner::H2 { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Plain(body) => body.size_hint(),
            Inner::Tls(body, _) => body.size_hint(),
            Inner::H2 { body, .. } => body.size_hint(),
        }
    }
}
