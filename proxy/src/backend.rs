//! Backends: a Service port resolved to the addresses that serve it.

use std::{
    fmt,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
};

use crate::upstream::EndpointPool;

/// Names a backend for logs, metrics and `/debug/routes`: `namespace/service:port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId {
    pub namespace: Arc<str>,
    pub service: Arc<str>,
    /// The Service port as the Ingress named it: a number or a port name.
    pub port: Arc<str>,
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// One address a backend forwards to: a pod IP and port (endpoints mode) or a node IP and node port
/// (node-port mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub addr: SocketAddr,
}

/// A Service port with its ready endpoints, as of one snapshot.
///
/// An empty endpoint list is legal: requests routed here get 503, and `unavailable` says why
/// (for `/debug/routes`).
#[derive(Debug)]
pub struct Backend {
    pub id: BackendId,
    pub endpoints: Arc<[Endpoint]>,
    /// Why there are no endpoints (missing Service, port, endpoints), when there are none.
    pub unavailable: Option<Arc<str>>,
    /// Round-robin cursor. Starts at zero in every snapshot: a swap resets the rotation, which is
    /// harmless because requests still spread evenly from there on.
    next: AtomicUsize,
    /// The connection pools of `endpoints`, in the same order; set when the snapshot is published
    /// (see `Upstreams::bind`).
    pub(crate) pools: OnceLock<Box<[Arc<EndpointPool>]>>,
}

// === impl Backend ===

impl Backend {
    pub fn new(id: BackendId, mut endpoints: Vec<Endpoint>) -> Self {
        endpoints.sort();
        endpoints.dedup();
        Self {
            id,
            endpoints: endpoints.into(),
            unavailable: None,
            next: AtomicUsize::new(0),
            pools: OnceLock::new(),
        }
    }

    /// A backend that answers 503 for the given reason.
    pub fn unavailable(id: BackendId, reason: impl Into<Arc<str>>) -> Self {
        Self {
            id,
            endpoints: Arc::from([]),
            unavailable: Some(reason.into()),
            next: AtomicUsize::new(0),
            pools: OnceLock::new(),
        }
    }

    /// The next endpoint in round-robin order, or `None` when there are no endpoints.
    #[inline]
    pub fn next_round_robin(&self) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        Some(self.next.fetch_add(1, Ordering::Relaxed) % n)
    }
}
