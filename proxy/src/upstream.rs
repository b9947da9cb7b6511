//! The upstream side of forwarding: a connection to an endpoint (from this worker's pool or new),
//! the request sent on it, and the response body that hands the connection back when it ends.

use std::{
    future::Future as _,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use tokio::net::TcpStream;

use crate::{
    backend::Backend,
    body::{BodyError, RequestBody},
    config::ProxyConfig,
    error::ProxyError,
    h1::{H1Body, H1Conn, SendError, Upgraded},
    metrics::Metrics,
    state,
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
/// address that answered. A failed connect is retried once on the next endpoint (nothing was sent
/// yet); a pooled connection the backend had closed is replaced transparently.
///
/// The exchange runs in the caller's task: the request is written and the response read on the
/// connection directly (`h1`), with no connection task and no channel in between.
pub async fn send(
    backend: &Backend,
    first: usize,
    mut req: Request<RequestBody>,
    timeouts: Timeouts,
    metrics: &Metrics,
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
        let pooled = state::with(|s| s.checkout(addr, timeouts.pool_idle)).flatten();
        let conn = match pooled {
            Some(conn) => conn,
            None => match connect(addr, timeouts.connect).await {
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
                    inner,
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

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<H1Conn, ProxyError> {
    let err = |reason: String| ProxyError::Connect { addr, reason };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| err("timed out".into()))?
        .map_err(|e| err(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(H1Conn::new(stream))
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

/// A backend's response body, streamed as it arrives. Once it has been read to the end, its
/// connection goes back to this worker's pool; dropped early (the client went away), the
/// connection closes. The request counts as in flight to its endpoint until then.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: H1Body,
    _in_flight: InFlight,
    read_timeout: ReadTimeout,
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
        if let Some(conn) = self.inner.take_reusable() {
            let addr = self._in_flight.0;
            state::with(|s| s.checkin(addr, conn));
        }
    }

    /// For a 101 response: the upstream connection, for the tunnel.
    pub fn into_upgraded(self) -> Option<Upgraded> {
        self.inner.into_upgraded()
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
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
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
