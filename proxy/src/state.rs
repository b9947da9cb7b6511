//! Runtime state, per worker thread: upstream keep-alive pools, in-flight counts and balancer
//! cursors, and the request counters of each route.
//!
//! Configuration (the [`Snapshot`]) and runtime state are kept apart, as pingora keeps `Backends`
//! apart from the selection state: the snapshot is pure data that can be compared and swapped,
//! and this state is found again by stable keys (endpoint address, [`BackendKey`]) in whatever
//! snapshot a request runs on. A swap that keeps an endpoint keeps its idle connections and its
//! place in the rotation.
//!
//! Each worker runs one single-threaded runtime, so its state is a thread-local behind a
//! `RefCell`: nothing on the request path locks or touches an atomic shared with another worker.
//! The borrow never spans an `.await`.

use std::{
    cell::RefCell,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;

use crate::{
    backend::{Backend, BackendKey, Endpoint},
    config::Balancer,
    metrics::{class_index, Label, Metrics, RouteLabels, RouteMetrics},
    policy::StickyIndex,
    routes::Route,
    snapshot::Snapshot,
};
use crate::{
    policy::{UpstreamProtocol, UpstreamTls},
    upstream_h2::{H2Slot, H2Stream},
};

/// An idle upstream connection, as the upstream client keeps it.
pub type PooledConn = crate::h1::H1Conn;

/// An idle HTTP/1.1 connection over TLS.
pub type PooledTlsConn = crate::h1::H1Conn<crate::h1::TlsIo>;

/// Idle connections kept per endpoint and worker; beyond this a finished connection is closed.
const MAX_IDLE_PER_ENDPOINT: usize = 1024;

thread_local! {
    static STATE: RefCell<WorkerState> = RefCell::new(WorkerState::default());
}

/// Runs `f` with this thread's state. Returns `None` only while the thread is being torn down.
pub fn with<R>(f: impl FnOnce(&mut WorkerState) -> R) -> Option<R> {
    STATE.try_with(|s| f(&mut s.borrow_mut())).ok()
}

/// The runtime state of one worker.
#[derive(Default)]
pub struct WorkerState {
    /// The newest snapshot generation this worker has seen; state is pruned when it grows.
    generation: u64,
    cursors: FxHashMap<BackendKey, usize>,
    /// Sticky-session lookups of the backends with session affinity, with the endpoint list each
    /// was built from (rebuilt when that list changes, kept across swaps that keep it).
    sticky: FxHashMap<BackendKey, (Arc<[Endpoint]>, Arc<StickyIndex>)>,
    endpoints: FxHashMap<SocketAddr, EndpointState>,
    /// Idle HTTP/1.1-over-TLS connections by endpoint and TLS settings ([`UpstreamTls::key`]).
    tls_idle: FxHashMap<(SocketAddr, u64), Vec<IdleTls>>,
    /// HTTP/2 connections by endpoint, protocol and TLS settings, each shared by many requests.
    h2: FxHashMap<H2Key, Vec<H2Entry>>,
    /// Request counters and latency histograms by route, keyed by the route's address in the
    /// snapshot of `generation` (cleared when the generation changes, so an address is never reused
    /// for another route).
    counters: FxHashMap<usize, RouteMetrics>,
}

/// One endpoint address, as seen by one worker.
#[derive(Default)]
pub struct EndpointState {
    /// Idle keep-alive connections, most recently used last.
    idle: Vec<Idle>,
    /// Requests of this worker sent to the endpoint and not finished (a response body still
    /// streaming counts).
    in_flight: usize,
}

struct Idle {
    conn: PooledConn,
    since: Instant,
}

struct IdleTls {
    conn: PooledTlsConn,
    since: Instant,
    /// The settings it was made with: compared on checkout, since the pool key is their hash.
    tls: Arc<UpstreamTls>,
}

/// Which HTTP/2 connections a request may share: same endpoint, protocol and TLS settings (the
/// hash; the settings themselves are compared on a match).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct H2Key {
    addr: SocketAddr,
    protocol: UpstreamProtocol,
    tls: u64,
}

struct H2Entry {
    slot: Arc<H2Slot>,
    tls: Option<Arc<UpstreamTls>>,
    last_used: Instant,
}

fn same_tls(a: Option<&Arc<UpstreamTls>>, b: Option<&Arc<UpstreamTls>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}

// === impl WorkerState ===

impl WorkerState {
    /// Called with the snapshot each request runs on. On the first request of a newer generation,
    /// forgets the pools of addresses and the cursors of backends the snapshot no longer has
    /// (requests still streaming from a removed endpoint keep its entry until they end).
    pub fn observe(&mut self, snapshot: &Snapshot) {
        if snapshot.generation <= self.generation {
            return;
        }
        self.generation = snapshot.generation;
        // Kept when any route table has them (the shared one, or a Gateway address's).
        let known = |addr: &std::net::SocketAddr| {
            snapshot
                .tables()
                .any(|(_, t)| t.addresses().binary_search(addr).is_ok())
        };
        let used = |key: &crate::backend::BackendKey| {
            snapshot
                .tables()
                .any(|(_, t)| t.backend_keys().binary_search(key).is_ok())
        };
        self.endpoints.retain(|addr, ep| ep.in_flight > 0 || known(addr));
        self.tls_idle.retain(|(addr, _), _| known(addr));
        // Requests still streaming on a dropped HTTP/2 connection keep it open until they end.
        self.h2.retain(|key, _| known(&key.addr));
        self.cursors.retain(|key, _| used(key));
        self.sticky.retain(|key, _| used(key));
        self.counters.clear();
    }

    /// The index of the endpoint to try first, or `None` when the backend has none.
    pub fn pick(&mut self, backend: &Backend, balancer: Balancer) -> Option<usize> {
        let n = backend.endpoints.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            return Some(0);
        }
        Some(match balancer {
            Balancer::RoundRobin => {
                let cursor = self
                    .cursors
                    .entry(backend.key())
                    // Workers start at different places, so that they do not all send their
                    // first request after a start or a new backend to the same endpoint.
                    .or_insert_with(|| fastrand::usize(..n));
                let i = *cursor % n;
                *cursor = cursor.wrapping_add(1);
                i
            }
            Balancer::LeastRequest => {
                // Power of two choices on this worker's requests in flight.
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let load = |i: usize| {
                    self.endpoints
                        .get(&backend.endpoints[i].addr)
                        .map_or(0, |e| e.in_flight)
                };
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
        })
    }

    /// The sticky-session lookup of `backend`, built on first use and again when its endpoints
    /// change. A snapshot that keeps the same endpoints keeps it (sessions do not move).
    pub fn sticky(&mut self, backend: &Backend) -> Arc<StickyIndex> {
        let entry = self
            .sticky
            .entry(backend.key())
            .or_insert_with(|| (backend.endpoints.clone(), Arc::new(StickyIndex::new(backend))));
        if !Arc::ptr_eq(&entry.0, &backend.endpoints) {
            if *entry.0 != *backend.endpoints {
                entry.1 = Arc::new(StickyIndex::new(backend));
            }
            // Equal lists from another snapshot: only the pointer changes, so the next request
            // on this snapshot takes the fast path.
            entry.0 = backend.endpoints.clone();
        }
        entry.1.clone()
    }

    /// The most recently used idle connection to `addr` that is not older than `idle_timeout`
    /// and still looks usable. Older or broken ones are closed on the way.
    pub fn checkout(&mut self, addr: SocketAddr, idle_timeout: Duration) -> Option<PooledConn> {
        let ep = self.endpoints.get_mut(&addr)?;
        // Bounded by the pool size; each round removes one entry.
        while let Some(mut idle) = ep.idle.pop() {
            if idle.since.elapsed() < idle_timeout && idle.conn.is_reusable() {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Keeps a connection whose last response ended cleanly, for the next request to `addr`.
    pub fn checkin(&mut self, addr: SocketAddr, conn: PooledConn) {
        let ep = self.endpoints.entry(addr).or_default();
        if ep.idle.len() < MAX_IDLE_PER_ENDPOINT {
            ep.idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// The most recently used idle TLS connection to `addr` made with `tls`, as
    /// [`WorkerState::checkout`].
    pub fn checkout_tls(
        &mut self,
        addr: SocketAddr,
        tls: &Arc<UpstreamTls>,
        idle_timeout: Duration,
    ) -> Option<PooledTlsConn> {
        let idle = self.tls_idle.get_mut(&(addr, tls.key()))?;
        while let Some(mut i) = idle.pop() {
            if i.since.elapsed() < idle_timeout && same_tls(Some(&i.tls), Some(tls)) && i.conn.is_reusable() {
                return Some(i.conn);
            }
        }
        None
    }

    /// Keeps a TLS connection made with `tls` whose last response ended cleanly.
    pub fn checkin_tls(&mut self, addr: SocketAddr, tls: Arc<UpstreamTls>, conn: PooledTlsConn) {
        let idle = self.tls_idle.entry((addr, tls.key())).or_default();
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(IdleTls {
                conn,
                since: Instant::now(),
                tls,
            });
        }
    }

    /// A stream on an HTTP/2 connection to `addr` with this protocol and TLS settings: on the
    /// first such connection with room, or on a new one (not connected yet: the request that
    /// gets it connects, and those that come meanwhile wait for that). Connections that closed or
    /// failed are forgotten on the way.
    pub fn h2_stream(
        &mut self,
        addr: SocketAddr,
        protocol: UpstreamProtocol,
        tls: Option<&Arc<UpstreamTls>>,
    ) -> H2Stream {
        let key = H2Key {
            addr,
            protocol,
            tls: tls.map_or(0, |t| t.key()),
        };
        let conns = self.h2.entry(key).or_default();
        conns.retain(|c| !c.slot.is_dead());
        let now = Instant::now();
        if let Some(c) = conns
            .iter_mut()
            .find(|c| c.slot.has_room() && same_tls(c.tls.as_ref(), tls))
        {
            c.last_used = now;
            return c.slot.take_stream();
        }
        let slot = Arc::new(H2Slot::default());
        let stream = slot.take_stream();
        conns.push(H2Entry {
            slot,
            tls: tls.cloned(),
            last_used: now,
        });
        stream
    }

    /// HTTP/2 connections (connected or connecting) this worker keeps to `addr`.
    pub fn h2_connections(&self, addr: SocketAddr) -> usize {
        self.h2
            .iter()
            .filter(|(k, _)| k.addr == addr)
            .map(|(_, conns)| conns.iter().filter(|c| !c.slot.is_dead()).count())
            .sum()
    }

    /// Idle TLS connections this worker keeps to `addr`.
    pub fn idle_tls(&self, addr: SocketAddr) -> usize {
        self.tls_idle
            .iter()
            .filter(|((a, _), _)| *a == addr)
            .map(|(_, idle)| idle.len())
            .sum()
    }

    /// A request to `addr` starts.
    pub fn begin(&mut self, addr: SocketAddr) {
        self.endpoints.entry(addr).or_default().in_flight += 1;
    }

    /// A request to `addr` ended (its response body ended, failed, or was dropped).
    pub fn end(&mut self, addr: SocketAddr) {
        if let Some(ep) = self.endpoints.get_mut(&addr) {
            ep.in_flight = ep.in_flight.saturating_sub(1);
        }
    }

    /// Requests in flight from this worker to `addr`.
    pub fn in_flight(&self, addr: SocketAddr) -> usize {
        self.endpoints.get(&addr).map_or(0, |e| e.in_flight)
    }

    /// Idle connections this worker keeps to `addr`.
    pub fn idle(&self, addr: SocketAddr) -> usize {
        self.endpoints.get(&addr).map_or(0, |e| e.idle.len())
    }

    /// Counts one answered request of `route` (from the snapshot of `generation`): its status
    /// class, its latency, and its upstream latency when it went upstream. The first request per
    /// route and worker looks up the labelled metrics; every later one uses them directly.
    pub fn count(
        &mut self,
        generation: u64,
        route: &Arc<Route>,
        metrics: &Metrics,
        status: u16,
        elapsed: Duration,
        upstream: Option<Duration>,
    ) {
        let lookup = || {
            metrics.route_metrics(&RouteLabels {
                kind: route.source.kind.as_str(),
                namespace: Label(route.source.namespace.clone()),
                ingress: Label(route.source.name.clone()),
                service: Label(route.backend.id.service.clone()),
            })
        };
        let record = |m: &RouteMetrics| {
            m.classes[class_index(status)].inc();
            m.duration.observe(elapsed.as_secs_f64());
            if let Some(upstream) = upstream {
                m.upstream_duration.observe(upstream.as_secs_f64());
            }
        };
        if generation != self.generation {
            // A request on an older snapshot: its route's address may be reused later, so it is
            // not cached.
            record(&lookup());
            return;
        }
        let key = Arc::as_ptr(route) as usize;
        record(self.counters.entry(key).or_insert_with(lookup));
    }

    /// Closes idle connections older than `idle_timeout`. Run periodically by each worker, so a
    /// backend that is never asked again does not keep sockets open.
    pub fn sweep(&mut self, idle_timeout: Duration) {
        for ep in self.endpoints.values_mut() {
            ep.idle.retain(|i| i.since.elapsed() < idle_timeout);
        }
        self.tls_idle.retain(|_, idle| {
            idle.retain(|i| i.since.elapsed() < idle_timeout);
            !idle.is_empty()
        });
        // An HTTP/2 connection without streams for that long is let go (it closes once no
        // request holds it).
        self.h2.retain(|_, conns| {
            conns.retain(|c| {
                !c.slot.is_dead() && (c.slot.streams() > 0 || c.last_used.elapsed() < idle_timeout)
            });
            !conns.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        backend::{BackendId, Endpoint},
        routes::{HostMatch, PathMatch, RouteSource, RouteTableBuilder},
    };

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn snapshot(generation: u64, endpoints: &[SocketAddr]) -> Snapshot {
        let id = BackendId {
            namespace: "default".into(),
            service: "web".into(),
            port: "80".into(),
        };
        let endpoints = endpoints.iter().map(|&addr| Endpoint { addr }).collect();
        let mut b = RouteTableBuilder::new();
        b.add(
            HostMatch::Any,
            Route {
                path: PathMatch::Prefix("/".into()),
                conditions: None,
                backend: Arc::new(Backend::new(id, endpoints)),
                source: RouteSource {
                    kind: crate::routes::SourceKind::Ingress,
                    namespace: "default".into(),
                    name: "web".into(),
                },
                policies: Default::default(),
            },
        )
        .unwrap();
        Snapshot {
            generation,
            routes: b.build(),
            address_routes: Vec::new(),
            ..Default::default()
        }
    }

    fn backend(s: &Snapshot) -> &Backend {
        &s.routes.lookup("any", "/").unwrap().backend
    }

    /// A real idle connection to a listener that stays open.
    async fn idle_conn(listener: &tokio::net::TcpListener) -> PooledConn {
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        PooledConn::new(stream)
    }

    #[tokio::test]
    async fn pools_and_balancer_state_carry_over_a_swap_that_keeps_the_endpoint() {
        let kept = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (a, b) = (kept.local_addr().unwrap(), gone.local_addr().unwrap());
        let third = addr("127.0.0.1:1");
        let mut state = WorkerState::default();

        let first = snapshot(1, &[a, b]);
        state.observe(&first);
        let picked: Vec<usize> = (0..3)
            .map(|_| state.pick(backend(&first), Balancer::RoundRobin).unwrap())
            .collect();
        assert_ne!(picked[0], picked[1], "round robin alternates: {picked:?}");
        state.checkin(a, idle_conn(&kept).await);
        state.checkin(b, idle_conn(&gone).await);

        // The next snapshot keeps `a`, drops `b` and adds a third endpoint.
        let second = snapshot(2, &[a, third]);
        state.observe(&second);
        assert_eq!(
            state.idle(a),
            1,
            "the kept endpoint's idle connection survives the swap"
        );
        assert_eq!(state.idle(b), 0, "the removed endpoint's pool is gone");
        // The cursor carried over: it continues where it was instead of starting again.
        let cursor = state.cursors[&backend(&second).key()];
        let next = state.pick(backend(&second), Balancer::RoundRobin).unwrap();
        assert_eq!(next, cursor % 2);
        assert!(state.checkout(a, Duration::from_secs(60)).is_some());
    }

    #[tokio::test]
    async fn an_older_snapshot_does_not_prune_a_newer_one_s_state() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = listener.local_addr().unwrap();
        let mut state = WorkerState::default();
        state.observe(&snapshot(5, &[a]));
        state.checkin(a, idle_conn(&listener).await);
        // A request still running on generation 4, which did not have `a`.
        state.observe(&snapshot(4, &[addr("127.0.0.1:1")]));
        assert_eq!(state.idle(a), 1);
    }

    #[tokio::test]
    async fn stale_and_expired_idle_connections_are_not_handed_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = listener.local_addr().unwrap();
        let mut state = WorkerState::default();
        state.checkin(a, idle_conn(&listener).await);
        assert!(
            state.checkout(a, Duration::ZERO).is_none(),
            "older than the idle timeout"
        );
        assert_eq!(state.idle(a), 0);

        // The backend closes a pooled connection.
        state.checkin(a, idle_conn(&listener).await);
        let (server_side, _) = listener.accept().await.unwrap();
        let (_, _) = listener.accept().await.unwrap();
        drop(server_side);
        drop(listener);
        // The FIN reaches the kernel of the client side shortly; bounded wait.
        let mut handed_out = true;
        for _ in 0..100 {
            if state.idle(a) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            let conn = state.checkout(a, Duration::from_secs(60));
            handed_out = conn.is_some();
            if let Some(conn) = conn {
                state.checkin(a, conn);
            } else {
                break;
            }
        }
        assert!(!handed_out, "a connection the backend closed is never handed out");
    }

    #[test]
    fn least_request_prefers_the_endpoint_with_fewer_requests_in_flight() {
        let (a, b) = (addr("10.0.0.1:80"), addr("10.0.0.2:80"));
        let s = snapshot(1, &[a, b]);
        let mut state = WorkerState::default();
        state.observe(&s);
        for _ in 0..5 {
            state.begin(a);
        }
        for _ in 0..50 {
            let i = state.pick(backend(&s), Balancer::LeastRequest).unwrap();
            assert_eq!(backend(&s).endpoints[i].addr, b);
        }
        for _ in 0..5 {
            state.end(a);
        }
        assert_eq!(state.in_flight(a), 0);
    }
}

#[cfg(test)]
mod upstream_pool_tests {
    use super::*;

    #[test]
    fn h2_streams_share_a_connection_per_endpoint_protocol_and_tls_settings() {
        let a: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:443".parse().unwrap();
        let tls = Arc::new(UpstreamTls::new());
        let same = Arc::new(UpstreamTls::new());
        let other = Arc::new(UpstreamTls::new().with_sni(true));
        let mut state = WorkerState::default();

        let first = state.h2_stream(a, UpstreamProtocol::H2, Some(&tls));
        let second = state.h2_stream(a, UpstreamProtocol::H2, Some(&same));
        assert!(Arc::ptr_eq(first.slot(), second.slot()), "equal settings share");
        assert_eq!(first.slot().streams(), 2);
        let other_tls = state.h2_stream(a, UpstreamProtocol::H2, Some(&other));
        let cleartext = state.h2_stream(a, UpstreamProtocol::H2c, None);
        let other_addr = state.h2_stream(b, UpstreamProtocol::H2, Some(&tls));
        for s in [&other_tls, &cleartext, &other_addr] {
            assert!(!Arc::ptr_eq(first.slot(), s.slot()));
        }
        assert_eq!(state.h2_connections(a), 3);

        // A broken connection is forgotten; the next stream goes to a new one.
        first.slot().set_broken();
        let third = state.h2_stream(a, UpstreamProtocol::H2, Some(&tls));
        assert!(!Arc::ptr_eq(first.slot(), third.slot()));
        assert_eq!(state.h2_connections(a), 3);

        // A full connection gets a sibling.
        let many: Vec<H2Stream> = (1..crate::upstream_h2::MAX_STREAMS_PER_CONN)
            .map(|_| state.h2_stream(a, UpstreamProtocol::H2c, None))
            .collect();
        assert!(many.iter().all(|s| Arc::ptr_eq(s.slot(), cleartext.slot())));
        let sibling = state.h2_stream(a, UpstreamProtocol::H2c, None);
        assert!(!Arc::ptr_eq(sibling.slot(), cleartext.slot()));

        // Idle connections are let go by the sweep; busy ones stay.
        drop((many, sibling, other_tls, other_addr, second, third));
        state.sweep(Duration::ZERO);
        assert_eq!(state.h2_connections(a), 1, "only the one still holding a stream");
        drop(cleartext);
        state.sweep(Duration::ZERO);
        assert_eq!(state.h2_connections(a), 0);
        assert_eq!(state.idle_tls(a), 0);
    }
}
