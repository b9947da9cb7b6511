//! The upstream side of forwarding: a connection to an endpoint (from this worker's pool or new),
//! the request sent on it, and the response body that hands the connection back when it ends.
//!
//! The route's [`UpstreamProtocol`] decides how: HTTP/1.1 on our own codec (`h1`) over plain TCP
//! (the default, and the hot path: pooled connections, no task, no allocation per request) or
//! over TLS (`upstream_tls`, pooled by endpoint and TLS settings); or HTTP/2 on hyper's client
//! (`upstream_h2`), one multiplexed connection per worker, endpoint, protocol and TLS settings.
//! Endpoint choice, the retries on the next endpoint (`policy::Retry`), the timeouts, the metrics
//! and the in-flight count are the same for all of them: one loop ([`send`]) makes the attempts,
//! and the protocol only decides how one attempt is made.

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
use http_body::{Body as _, Frame, SizeHint};
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
    metrics::RetryLabels,
    policy::{Alpn, Condition, Retry, UpstreamProtocol, UpstreamRequest, UpstreamTls},
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
    /// One attempt at one endpoint, connect to response head (the Gateway API's
    /// `timeouts.backendRequest`); past it the attempt fails as a timeout (504, or the next
    /// endpoint when the retry policy allows). `None`: only `connect` and `response` bound it.
    pub attempt: Option<Duration>,
}

impl Timeouts {
    pub fn resolve(config: &ProxyConfig, route: &crate::policy::UpstreamTimeouts) -> Self {
        Self {
            connect: route.connect.unwrap_or(config.upstream_connect_timeout),
            response: route.read.unwrap_or(config.upstream_response_timeout),
            pool_idle: config.upstream_idle_timeout,
            attempt: route.backend_request,
        }
    }
}

/// Sends a request to the backend, first to its endpoint `first`, and returns the response head
/// with the address that answered, speaking the route's protocol (`upstream`: `backend-protocol`
/// and `proxy-ssl-*`).
///
/// A failed attempt goes to the next endpoint when `retry` allows it (see `policy::Retry` for the
/// rule; Gantry's default retries a failed connect once). This one loop serves every protocol:
/// each attempt is one endpoint, and the protocol only decides how that attempt is made. A pooled
/// connection the backend had closed is replaced transparently within an attempt.
///
/// HTTP/1.1 runs in the caller's task: the request is written and the response read on the
/// connection directly (`h1`), with no connection task and no channel in between.
pub async fn send(
    backend: &Backend,
    first: usize,
    req: Request<RequestBody>,
    timeouts: Timeouts,
    upstream: &UpstreamRequest,
    retry: &Retry,
    metrics: &Metrics,
) -> Result<(Response<UpstreamBody>, SocketAddr), ProxyError> {
    let endpoints = &backend.endpoints;
    if endpoints.is_empty() {
        return Err(ProxyError::NoEndpoint(backend.id.to_string()));
    }
    let how = match upstream.protocol {
        UpstreamProtocol::Http1 => How::Plain,
        UpstreamProtocol::Https => How::Tls(
            upstream
                .tls
                .as_ref()
                .unwrap_or_else(|| upstream_tls::default_tls()),
        ),
        protocol @ (UpstreamProtocol::H2c | UpstreamProtocol::H2) => How::H2 {
            protocol,
            tls: protocol.is_tls().then(|| {
                upstream
                    .tls
                    .as_ref()
                    .unwrap_or_else(|| upstream_tls::default_tls())
            }),
        },
    };
    // Done once: a replay copy is made of the request as it goes on the wire.
    let mut req = match how {
        How::H2 { tls, .. } => upstream_h2::into_h2(req, tls.is_some()),
        _ => req,
    };
    let n = endpoints.len();
    let max_attempts = retry.max_attempts(n);
    let has_body = !req.body().is_end_stream();
    let method = req.method().clone();
    // Whether a failure after sending could ever be retried: only then is a copy kept. Gantry's
    // default and `off` never get here, so their requests are never copied.
    let may_resend = max_attempts > 1 && retry.may_resend(req.method(), has_body);
    let started = retry
        .timeout
        .filter(|_| max_attempts > 1)
        .map(|t| (tokio::time::Instant::now(), t));
    let mut idx = first % n;
    let mut attempt = 1;
    loop {
        let addr = endpoints[idx].addr;
        let more = attempt < max_attempts && started.is_none_or(|(at, limit)| at.elapsed() < limit);
        let replay = if more && may_resend {
            replay_copy(&req)
        } else {
            None
        };
        let outcome = match (how, timeouts.attempt) {
            // Bounded and boxed only for routes with a per-attempt timeout, so that the plain
            // path's future keeps its size.
            (how, Some(limit)) => {
                Box::pin(bounded(
                    limit,
                    metrics,
                    attempt_any(how, addr, req, timeouts, metrics),
                ))
                .await
            }
            (How::Plain, None) => attempt_h1(&Plain, addr, req, timeouts, metrics).await,
            // Boxed, so that the plain path's future does not grow by the size of these.
            (How::Tls(tls), None) => Box::pin(attempt_h1(&Tls(tls), addr, req, timeouts, metrics)).await,
            (How::H2 { protocol, tls }, None) => {
                Box::pin(attempt_h2(addr, req, timeouts, protocol, tls, metrics)).await
            }
        };
        let condition = match outcome {
            Attempt::Response(resp) => {
                let condition = Condition::Status(resp.status());
                match replay {
                    Some(copy) if retry.allows(condition, more, &method, has_body, true) => {
                        // Discarded only now that a retry is certain (an HTTP/1.1 connection
                        // with an unread body closes).
                        drop(resp);
                        req = copy;
                        condition
                    }
                    _ => return Ok((resp, addr)),
                }
            }
            Attempt::NotSent(e, condition, back) => {
                if !retry.allows(condition, more, &method, has_body, true) {
                    return Err(e);
                }
                tracing::debug!(%addr, error = %e, "upstream connect failed; next endpoint");
                req = back;
                condition
            }
            Attempt::Failed(e, condition) => match (condition, replay) {
                (Some(condition), Some(copy)) if retry.allows(condition, more, &method, has_body, true) => {
                    tracing::debug!(%addr, error = %e, "upstream attempt failed; next endpoint");
                    req = copy;
                    condition
                }
                _ => return Err(e),
            },
        };
        metrics
            .upstream_retries
            .get_or_create(&RetryLabels {
                reason: condition.label(),
            })
            .inc();
        idx = (idx + 1) % n;
        attempt += 1;
    }
}

/// One attempt by whichever protocol.
async fn attempt_any(
    how: How<'_>,
    addr: SocketAddr,
    req: Request<RequestBody>,
    timeouts: Timeouts,
    metrics: &Metrics,
) -> Attempt {
    match how {
        How::Plain => attempt_h1(&Plain, addr, req, timeouts, metrics).await,
        How::Tls(tls) => attempt_h1(&Tls(tls), addr, req, timeouts, metrics).await,
        How::H2 { protocol, tls } => attempt_h2(addr, req, timeouts, protocol, tls, metrics).await,
    }
}

/// An attempt that must reach its response head within `limit` (`timeouts.backendRequest`). The
/// request is lost with the attempt: only a replay copy can go to the next endpoint.
async fn bounded(
    limit: Duration,
    metrics: &Metrics,
    attempt: impl std::future::Future<Output = Attempt>,
) -> Attempt {
    match tokio::time::timeout(limit, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => {
            metrics.upstream_timeouts.inc();
            Attempt::Failed(ProxyError::UpstreamTimeout, Some(Condition::Timeout))
        }
    }
}

/// How attempts are made, by the route's protocol.
#[derive(Clone, Copy)]
enum How<'a> {
    Plain,
    Tls(&'a Arc<UpstreamTls>),
    H2 {
        protocol: UpstreamProtocol,
        tls: Option<&'a Arc<UpstreamTls>>,
    },
}

/// What one attempt on one endpoint came to.
enum Attempt {
    Response(Response<UpstreamBody>),
    /// Nothing of the request reached the endpoint (the connect failed or timed out): the request
    /// comes back untouched.
    NotSent(ProxyError, Condition, Request<RequestBody>),
    /// The exchange failed once the request was (at least partly) sent. `None`: a failure that no
    /// other endpoint can help with (the client's body broke off or was too large).
    Failed(ProxyError, Option<Condition>),
}

/// A copy of the request to send again: the same head, and the body if it was read ahead whole.
/// Extensions are not copied (an upgrade, which lives there, is never resent).
pub(crate) fn replay_copy(req: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    let body = req.body().replay()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
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
            .map_err(|_| ProxyError::connect_timed_out(addr))?
    }

    fn body(&self, body: H1Body<TlsIo>) -> Inner {
        Inner::Tls(body, self.0.clone())
    }
}

/// One HTTP/1.1 attempt on `addr`, over whichever connector.
async fn attempt_h1<C: H1Connector>(
    connector: &C,
    addr: SocketAddr,
    mut req: Request<RequestBody>,
    timeouts: Timeouts,
    metrics: &Metrics,
) -> Attempt {
    let mut stale = 0;
    loop {
        let conn = match connector.checkout(addr, timeouts.pool_idle) {
            Some(conn) => conn,
            None => match connector.connect(addr, timeouts.connect).await {
                Ok(conn) => conn,
                Err(e) => {
                    metrics.upstream_connect_errors.inc();
                    let condition = connect_condition(&e);
                    return Attempt::NotSent(e, condition, req);
                }
            },
        };
        let in_flight = InFlight::begin(addr);
        let sent = tokio::time::timeout(timeouts.response, conn.send(req)).await;
        return match sent {
            Err(_) => {
                metrics.upstream_timeouts.inc();
                Attempt::Failed(ProxyError::UpstreamTimeout, Some(Condition::Timeout))
            }
            Ok(Ok(resp)) => {
                let (parts, inner) = resp.into_parts();
                let mut body = UpstreamBody {
                    inner: connector.body(inner),
                    _in_flight: in_flight,
                    read_timeout: ReadTimeout::new(timeouts.response),
                };
                body.release();
                Attempt::Response(Response::from_parts(parts, body))
            }
            // The pooled connection had been closed before the request reached the backend.
            Ok(Err(SendError::Stale(r))) if stale < MAX_STALE_RETRIES => {
                stale += 1;
                req = r;
                continue;
            }
            Ok(Err(SendError::Body(e))) => {
                let err = match e.downcast_ref::<BodyError>() {
                    Some(BodyError::TooLarge(max)) => ProxyError::BodyTooLarge(*max),
                    _ => ProxyError::ClientBody(e.to_string()),
                };
                Attempt::Failed(err, None)
            }
            Ok(Err(e @ SendError::Protocol(_))) => Attempt::Failed(
                ProxyError::Upstream(e.to_string()),
                Some(Condition::InvalidHeader),
            ),
            Ok(Err(e)) => Attempt::Failed(ProxyError::Upstream(e.to_string()), Some(Condition::Error)),
        };
    }
}

/// `error` or `timeout`, for a failed connect.
fn connect_condition(e: &ProxyError) -> Condition {
    if e.is_connect_timeout() {
        Condition::ConnectTimeout
    } else {
        Condition::ConnectError
    }
}

/// One HTTP/2 attempt on `addr`: a stream on this worker's shared connection to the endpoint
/// (made when there is none with room), the request (already in HTTP/2 form) sent on it, the
/// response head awaited.
async fn attempt_h2(
    addr: SocketAddr,
    req: Request<RequestBody>,
    timeouts: Timeouts,
    protocol: UpstreamProtocol,
    tls: Option<&Arc<UpstreamTls>>,
    metrics: &Metrics,
) -> Attempt {
    let mut req = req.map(H2Body::new);
    let mut gone = 0;
    loop {
        let Some(stream) = state::with(|s| s.h2_stream(addr, protocol, tls)) else {
            return Attempt::Failed(ProxyError::Upstream("worker state is gone".into()), None);
        };
        let connected = stream
            .slot()
            .sender(|| connect_h2(addr, tls, timeouts.connect))
            .await;
        let mut sender = match connected {
            Ok(sender) => sender,
            Err(e) => {
                metrics.upstream_connect_errors.inc();
                let condition = connect_condition(&e);
                return Attempt::NotSent(e, condition, req.map(H2Body::into_inner));
            }
        };
        let failure = req.body().failure();
        let in_flight = InFlight::begin(addr);
        let sent = tokio::time::timeout(timeouts.response, sender.try_send_request(req)).await;
        return match sent {
            Err(_) => {
                metrics.upstream_timeouts.inc();
                Attempt::Failed(ProxyError::UpstreamTimeout, Some(Condition::Timeout))
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
                Attempt::Response(Response::from_parts(parts, body))
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
                match failure.as_ref().and_then(|f| f.lock().ok()?.take()) {
                    Some(body_failed) => Attempt::Failed(body_failed, None),
                    None => Attempt::Failed(
                        ProxyError::Upstream(format!("HTTP/2: {}", chain(&e.into_error()))),
                        Some(Condition::Error),
                    ),
                }
            }
        };
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
        .map_err(|_| ProxyError::connect_timed_out(addr))?
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
        .map_err(|_| ProxyError::connect_timed_out(addr))?
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{Method, Uri};
    use http_body_util::BodyExt;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::{
        backend::{BackendId, Endpoint},
        policy::RetryOn,
    };

    /// A loopback backend that answers every request with `status` (and its number as the body),
    /// counting the requests it read.
    async fn backend_answering(status: u16) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            // Bounded: a test makes a handful of connections.
            for _ in 0..32 {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // One request per connection: head, then the body its Content-Length declares.
                    loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let len = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let body = status.to_string();
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        (addr, seen)
    }

    /// An address nothing listens on.
    async fn refusing() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    fn backend(addrs: &[SocketAddr]) -> Backend {
        let id = BackendId {
            namespace: "default".into(),
            service: "web".into(),
            port: "80".into(),
        };
        // `Backend::new` sorts endpoints; the tests start at the index of the first address.
        Backend::new(id, addrs.iter().map(|&addr| Endpoint { addr }).collect())
    }

    fn index_of(b: &Backend, addr: SocketAddr) -> usize {
        b.endpoints.iter().position(|e| e.addr == addr).unwrap()
    }

    fn retry(words: &str, tries: u32) -> Retry {
        Retry {
            on: words
                .split_whitespace()
                .map(|w| RetryOn::from_word(w).unwrap())
                .fold(RetryOn::empty(), |a, b| a | b),
            tries,
            timeout: None,
        }
    }

    fn request(method: Method, body: &'static [u8]) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::complete(body));
        *req.method_mut() = method;
        *req.uri_mut() = Uri::from_static("/x");
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("test"));
        if !body.is_empty() {
            req.headers_mut()
                .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(body.len()));
        }
        req
    }

    fn timeouts() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(5),
            pool_idle: Duration::from_secs(60),
            attempt: None,
        }
    }

    /// Sends `req` to the backend of `addrs` starting at `first` under `retry`: the status that
    /// came back (or the error's), and the retries counted.
    async fn run(
        addrs: &[SocketAddr],
        first: SocketAddr,
        req: Request<RequestBody>,
        retry: &Retry,
    ) -> (u16, u64) {
        let b = backend(addrs);
        let metrics = Metrics::default();
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            send(
                &b,
                index_of(&b, first),
                req,
                timeouts(),
                &UpstreamRequest::default(),
                retry,
                &metrics,
            ),
        )
        .await
        .expect("the exchange took longer than 10 s");
        let retries: u64 = ["connect_error", "error", "timeout", "http_503", "http_502"]
            .iter()
            .map(|r| {
                metrics
                    .upstream_retries
                    .get_or_create(&RetryLabels { reason: r })
                    .get()
            })
            .sum();
        let status = match sent {
            Ok((resp, _)) => {
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(
                    body,
                    status.to_string().as_bytes(),
                    "the body of the response returned"
                );
                status
            }
            Err(e) => e.status().as_u16(),
        };
        (status, retries)
    }

    #[tokio::test]
    async fn a_listed_status_goes_to_the_next_endpoint() {
        let (bad, bad_seen) = backend_answering(503).await;
        let (good, good_seen) = backend_answering(200).await;
        let r = retry("error timeout http_503", 3);
        let (status, retries) = run(&[bad, good], bad, request(Method::GET, b""), &r).await;
        assert_eq!((status, retries), (200, 1));
        assert_eq!(bad_seen.load(Ordering::SeqCst), 1);
        assert_eq!(good_seen.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unlisted_status_or_no_try_left_returns_the_response() {
        let (bad, _) = backend_answering(502).await;
        let (good, good_seen) = backend_answering(200).await;
        let r = retry("error timeout http_503", 3);
        assert_eq!(
            run(&[bad, good], bad, request(Method::GET, b""), &r).await,
            (502, 0)
        );
        let (bad, _) = backend_answering(503).await;
        let r = retry("http_503", 1);
        assert_eq!(
            run(&[bad, good], bad, request(Method::GET, b""), &r).await,
            (503, 0)
        );
        assert_eq!(good_seen.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn every_endpoint_is_tried_at_most_once() {
        let (a, a_seen) = backend_answering(503).await;
        let (b, b_seen) = backend_answering(503).await;
        let r = retry("http_503", 0);
        // The last response is returned as it is.
        assert_eq!(run(&[a, b], a, request(Method::GET, b""), &r).await, (503, 1));
        assert_eq!(a_seen.load(Ordering::SeqCst) + b_seen.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_sent_body_of_a_non_idempotent_request_is_never_resent() {
        let (bad, bad_seen) = backend_answering(503).await;
        let (good, good_seen) = backend_answering(200).await;
        let with_flag = retry("error timeout http_503 non_idempotent", 3);
        let without = retry("error timeout http_503", 3);
        let post = || request(Method::POST, b"payload");
        assert_eq!(run(&[bad, good], bad, post(), &without).await, (503, 0));
        assert_eq!(run(&[bad, good], bad, post(), &with_flag).await, (503, 0));
        // A bodiless POST only with non_idempotent.
        assert_eq!(
            run(&[bad, good], bad, request(Method::POST, b""), &without).await,
            (503, 0)
        );
        assert_eq!(
            run(&[bad, good], bad, request(Method::POST, b""), &with_flag).await,
            (200, 1)
        );
        // An idempotent method with a body read ahead whole is resent.
        assert_eq!(
            run(&[bad, good], bad, request(Method::PUT, b"payload"), &without).await,
            (200, 1)
        );
        assert_eq!(bad_seen.load(Ordering::SeqCst), 5);
        assert_eq!(good_seen.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_connect_is_retried_whatever_the_method_unless_off() {
        let down = refusing().await;
        let (good, good_seen) = backend_answering(200).await;
        let post = || request(Method::POST, b"payload");
        // Gantry's default.
        assert_eq!(
            run(&[down, good], down, post(), &Retry::CONNECT_ONCE).await,
            (200, 1)
        );
        assert_eq!(
            run(&[down, good], down, post(), &retry("error", 3)).await,
            (200, 1)
        );
        assert_eq!(run(&[down, good], down, post(), &retry("off", 3)).await, (502, 0));
        // `timeout` alone does not cover a refused connection.
        assert_eq!(
            run(&[down, good], down, post(), &retry("timeout http_503", 3)).await,
            (502, 0)
        );
        assert_eq!(good_seen.load(Ordering::SeqCst), 2);
    }

    /// An HTTP/2 (h2c, prior knowledge) backend answering every request with `status`.
    async fn h2_backend_answering(status: u16) -> (SocketAddr, Arc<AtomicUsize>) {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            for _ in 0..8 {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let count = count.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        count.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let mut resp =
                                Response::new(http_body_util::Full::new(Bytes::from(status.to_string())));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn http2_attempts_share_the_same_retry_loop() {
        let (bad, bad_seen) = h2_backend_answering(503).await;
        let (good, good_seen) = h2_backend_answering(200).await;
        let b = backend(&[bad, good]);
        let h2c = UpstreamRequest {
            protocol: UpstreamProtocol::H2c,
            ..UpstreamRequest::default()
        };
        let metrics = Metrics::default();
        let go = |retry: Retry, method: Method, body: &'static [u8]| {
            let (b, h2c, metrics) = (&b, &h2c, &metrics);
            async move {
                let sent = tokio::time::timeout(
                    Duration::from_secs(10),
                    send(
                        b,
                        index_of(b, bad),
                        request(method, body),
                        timeouts(),
                        h2c,
                        &retry,
                        metrics,
                    ),
                )
                .await
                .expect("the exchange took longer than 10 s");
                sent.map(|(r, _)| r.status().as_u16())
                    .unwrap_or_else(|e| e.status().as_u16())
            }
        };
        assert_eq!(go(retry("http_503", 3), Method::GET, b"").await, 200);
        assert_eq!(go(retry("http_503", 1), Method::GET, b"").await, 503);
        assert_eq!(
            go(retry("http_503 non_idempotent", 3), Method::POST, b"x").await,
            503
        );
        assert_eq!(go(Retry::CONNECT_ONCE, Method::GET, b"").await, 503);
        assert_eq!(bad_seen.load(Ordering::SeqCst), 4);
        assert_eq!(good_seen.load(Ordering::SeqCst), 1);
        let retried = metrics
            .upstream_retries
            .get_or_create(&RetryLabels { reason: "http_503" })
            .get();
        assert_eq!(retried, 1);
    }

    #[tokio::test]
    async fn a_broken_response_is_an_error_and_retried_for_get() {
        // A backend that closes without answering.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closing = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..4 {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                drop(sock);
            }
        });
        let (good, _) = backend_answering(200).await;
        assert_eq!(
            run(
                &[closing, good],
                closing,
                request(Method::GET, b""),
                &retry("error", 3)
            )
            .await,
            (200, 1)
        );
        assert_eq!(
            run(
                &[closing, good],
                closing,
                request(Method::GET, b""),
                &Retry::CONNECT_ONCE
            )
            .await,
            (502, 0)
        );
    }
}
