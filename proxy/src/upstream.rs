//! Upstream connections: one keep-alive pool per endpoint address, kept across snapshot swaps.
//!
//! Snapshots name endpoints by address only. When a snapshot is published, [`Upstreams::bind`]
//! attaches each backend to the pools of its endpoints (reusing the pools of the previous snapshot),
//! so the data path reaches its pool through a plain pointer and a swap never drops idle
//! connections.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use http::{Request, Response};
use http_body::Body as _;
use hyper::{body::Incoming, client::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{
    backend::Backend,
    config::{Balancer, ProxyConfig},
    error::ProxyError,
    metrics::Metrics,
    snapshot::Snapshot,
    workers::current_worker,
};

/// Idle connections kept per endpoint; beyond this a finished connection is closed.
const MAX_IDLE_PER_ENDPOINT: usize = 1024;
/// How long a pooled connection may take to become ready after its last response ended.
const READY_WAIT: Duration = Duration::from_millis(100);
/// How often a request may meet a pooled connection that the backend had already closed before we
/// open a fresh one.
const MAX_STALE_RETRIES: usize = 3;

/// Pooled connections and load of one endpoint address.
#[derive(Debug)]
pub struct EndpointPool {
    addr: SocketAddr,
    /// Idle connections, one list per worker thread: a connection's task runs on the worker that
    /// opened it, so only that worker reuses it (no cross-thread wake-ups per request).
    idle: Box<[Mutex<Vec<Idle>>]>,
    /// Requests sent and not yet finished (response body still streaming counts as in flight).
    in_flight: AtomicUsize,
}

#[derive(Debug)]
struct Idle {
    tx: http1::SendRequest<Incoming>,
    since: Instant,
}

/// All endpoint pools, by address.
#[derive(Debug)]
pub struct Upstreams {
    pools: Mutex<HashMap<SocketAddr, Arc<EndpointPool>>>,
    /// Pooled connections idle longer than this are closed.
    idle_timeout: Duration,
    /// Worker threads, for the per-worker idle lists.
    workers: usize,
    metrics: Arc<Metrics>,
}

// === impl EndpointPool ===

impl EndpointPool {
    fn new(addr: SocketAddr, workers: usize) -> Self {
        Self {
            addr,
            idle: (0..workers.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn idle_list(&self) -> &Mutex<Vec<Idle>> {
        &self.idle[current_worker() % self.idle.len()]
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The most recently used live connection (LIFO keeps few connections warm). A connection is
    /// handed back the moment its last response body has been read, so its dispatcher may need one
    /// more turn before it takes the next request: that wait is short and bounded.
    async fn checkout(&self, idle_timeout: Duration) -> Option<http1::SendRequest<Incoming>> {
        // Bounded by the pool size; each round removes one entry.
        loop {
            let conn = {
                let mut idle = self.idle_list().lock().unwrap_or_else(|e| e.into_inner());
                idle.pop()?
            };
            if conn.tx.is_closed() || conn.since.elapsed() >= idle_timeout {
                continue;
            }
            let mut tx = conn.tx;
            if tx.is_ready() {
                return Some(tx);
            }
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, tx.ready()).await {
                return Some(tx);
            }
        }
    }

    fn put(&self, tx: http1::SendRequest<Incoming>) {
        let mut idle = self.idle_list().lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(Idle {
                tx,
                since: Instant::now(),
            });
        }
    }

    pub fn idle_len(&self) -> usize {
        self.idle
            .iter()
            .map(|l| l.lock().map(|v| v.len()).unwrap_or(0))
            .sum()
    }
}

/// Decrements the endpoint's in-flight count when the request is done.
#[derive(Debug)]
struct InFlight(Arc<EndpointPool>);

impl InFlight {
    fn new(pool: &Arc<EndpointPool>) -> Self {
        pool.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(pool.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Upstreams ===

impl Upstreams {
    pub fn new(idle_timeout: Duration, workers: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            pools: Mutex::new(HashMap::new()),
            idle_timeout,
            workers,
            metrics,
        }
    }

    /// Attaches every backend of a snapshot about to be published to the pools of its endpoints,
    /// and forgets pools of addresses no longer in it (their connections close once the last
    /// request of an older snapshot is done with them). Runs off the data path.
    pub fn bind(&self, snapshot: &Snapshot) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = HashSet::new();
        let backends = snapshot
            .routes
            .iter()
            .map(|(_, r)| &r.backend)
            .chain(snapshot.routes.default_route().map(|r| &r.backend));
        for backend in backends {
            let bound: Vec<Arc<EndpointPool>> = backend
                .endpoints
                .iter()
                .map(|ep| {
                    seen.insert(ep.addr);
                    pools
                        .entry(ep.addr)
                        .or_insert_with(|| Arc::new(EndpointPool::new(ep.addr, self.workers)))
                        .clone()
                })
                .collect();
            // Already bound when a backend is shared by several routes: the first binding stands.
            let _ = backend.pools.set(bound.into_boxed_slice());
        }
        pools.retain(|addr, _| seen.contains(addr));
    }

    /// Number of endpoint addresses with a pool.
    pub fn len(&self) -> usize {
        self.pools.lock().map(|p| p.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pool of an address, creating it if needed. For backends of a snapshot that was never
    /// bound (tests, or a bug): slower, but correct.
    fn pool_for(&self, addr: SocketAddr) -> Arc<EndpointPool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .entry(addr)
            .or_insert_with(|| Arc::new(EndpointPool::new(addr, self.workers)))
            .clone()
    }

    /// Picks the first endpoint to try.
    fn pick(balancer: Balancer, backend: &Backend, pools: &[Arc<EndpointPool>]) -> usize {
        match balancer {
            Balancer::RoundRobin => backend.next_round_robin().unwrap_or(0),
            Balancer::LeastRequest => {
                let n = pools.len();
                if n == 1 {
                    return 0;
                }
                let a = fastrand::usize(..n);
                // A second, different endpoint.
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                if pools[b].in_flight() < pools[a].in_flight() {
                    b
                } else {
                    a
                }
            }
        }
    }

    /// Sends a request to one of the backend's endpoints and returns the response head with the
    /// address that answered. A failed connect is retried once on another endpoint (nothing was
    /// sent yet); a pooled connection the backend had closed is replaced transparently.
    pub async fn send(
        &self,
        backend: &Backend,
        mut req: Request<Incoming>,
        config: &ProxyConfig,
    ) -> Result<(Response<UpstreamBody>, SocketAddr), ProxyError> {
        let fallback;
        let pools: &[Arc<EndpointPool>] = match backend.pools.get() {
            Some(p) => p,
            None => {
                fallback = backend
                    .endpoints
                    .iter()
                    .map(|e| self.pool_for(e.addr))
                    .collect::<Vec<_>>();
                &fallback
            }
        };
        if pools.is_empty() {
            return Err(ProxyError::NoEndpoint(backend.id.to_string()));
        }
        let mut idx = Self::pick(config.balancer, backend, pools);
        let mut connect_retried = false;
        let mut stale = 0;
        loop {
            let pool = &pools[idx];
            let mut tx = match pool.checkout(self.idle_timeout).await {
                Some(tx) => tx,
                None => match self.connect(pool.addr, config.upstream_connect_timeout).await {
                    Ok(tx) => tx,
                    Err(e) => {
                        self.metrics.upstream_connect_errors.inc();
                        if !connect_retried && pools.len() > 1 {
                            connect_retried = true;
                            idx = (idx + 1) % pools.len();
                            continue;
                        }
                        return Err(e);
                    }
                },
            };
            let in_flight = InFlight::new(pool);
            let sent = tokio::time::timeout(config.upstream_response_timeout, tx.try_send_request(req)).await;
            match sent {
                Err(_) => {
                    self.metrics.upstream_timeouts.inc();
                    return Err(ProxyError::UpstreamTimeout);
                }
                Ok(Ok(resp)) => {
                    let addr = pool.addr;
                    // An upgraded connection belongs to the tunnel, never to the pool.
                    let release = (resp.status() != http::StatusCode::SWITCHING_PROTOCOLS).then(|| Release {
                        tx,
                        pool: pool.clone(),
                        _in_flight: in_flight,
                    });
                    let (parts, inner) = resp.into_parts();
                    let mut body = UpstreamBody { inner, release };
                    if body.inner.is_end_stream() {
                        body.release();
                    }
                    return Ok((Response::from_parts(parts, body), addr));
                }
                Ok(Err(mut e)) => match e.take_message() {
                    // The connection was closed before anything was written: try a fresh one.
                    Some(r) if stale < MAX_STALE_RETRIES => {
                        stale += 1;
                        req = r;
                    }
                    _ => return Err(ProxyError::Upstream(e.into_error())),
                },
            }
        }
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<http1::SendRequest<Incoming>, ProxyError> {
        let err = |reason: String| ProxyError::Connect { addr, reason };
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| err("timed out".into()))?
            .map_err(|e| err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        // The client builder has no timers to set: the response timeout is applied around the send.
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| err(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream connection ended");
            }
        });
        Ok(tx)
    }
}

/// A backend's response body, streamed as it arrives. Once it has been read to the end, its
/// connection goes back to the pool; dropped early (the client went away), the connection closes.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    release: Option<Release>,
}

#[derive(Debug)]
struct Release {
    tx: http1::SendRequest<Incoming>,
    pool: Arc<EndpointPool>,
    _in_flight: InFlight,
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some(r) = self.release.take() {
            r.pool.put(r.tx);
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => self.release(),
            std::task::Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            // A broken body means a broken connection: never pool it.
            std::task::Poll::Ready(Some(Err(_))) => self.release = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
