//! Backends: a Service port resolved to the addresses that serve it. Pure data: the balancer's
//! cursor, the connection pools and the in-flight counts live in the per-worker state
//! (`state`), found again by [`Backend::key`] and the endpoint address after every swap.

use std::{
    fmt,
    hash::{Hash, Hasher},
    net::SocketAddr,
    sync::Arc,
};

/// Names a backend for logs, metrics and `/debug/routes`: `namespace/service:port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId {
    pub namespace: Arc<str>,
    pub service: Arc<str>,
    /// The Service port as the route named it: a number or a port name.
    pub port: Arc<str>,
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// The stable identity of a backend across snapshots: a hash of its [`BackendId`], computed once
/// when the snapshot is built so that the data path finds its per-worker state with one integer
/// lookup instead of hashing three strings per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey(pub u64);

impl BackendKey {
    pub fn of(id: &BackendId) -> Self {
        // `DefaultHasher::new()` has fixed keys, so the key is the same in every snapshot.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        Self(h.finish())
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub id: BackendId,
    /// Sorted and without duplicates, so that equal sets compare equal.
    pub endpoints: Arc<[Endpoint]>,
    /// Why there are no endpoints (missing Service, port, endpoints), when there are none.
    pub unavailable: Option<Arc<str>>,
    /// The reference itself is invalid (the Gateway API's `ResolvedRefs: False`): requests get 500
    /// rather than 503, as the Gateway API requires for a backendRef that cannot be resolved.
    pub invalid: bool,
    /// The Gateway API's `RequestHeaderModifier` on this `backendRef`: applied to the requests
    /// sent here, after the route's own.
    pub request_headers: Option<Arc<crate::policy::HeaderModifier>>,
    key: BackendKey,
}

// === impl Backend ===

impl Backend {
    pub fn new(id: BackendId, mut endpoints: Vec<Endpoint>) -> Self {
        endpoints.sort();
        endpoints.dedup();
        Self {
            key: BackendKey::of(&id),
            id,
            endpoints: endpoints.into(),
            unavailable: None,
            invalid: false,
            request_headers: None,
        }
    }

    /// A backend that answers 503 for the given reason.
    pub fn unavailable(id: BackendId, reason: impl Into<Arc<str>>) -> Self {
        Self {
            key: BackendKey::of(&id),
            id,
            endpoints: Arc::from([]),
            unavailable: Some(reason.into()),
            invalid: false,
            request_headers: None,
        }
    }

    /// A backend reference that cannot be resolved (the Gateway API's invalid backendRef): its
    /// share of requests gets 500.
    pub fn invalid(id: BackendId, reason: impl Into<Arc<str>>) -> Self {
        Self {
            invalid: true,
            ..Self::unavailable(id, reason)
        }
    }

    /// The key of this backend's per-worker state (balancer cursor).
    #[inline]
    pub fn key(&self) -> BackendKey {
        self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(service: &str) -> BackendId {
        BackendId {
            namespace: "default".into(),
            service: service.into(),
            port: "80".into(),
        }
    }

    fn ep(s: &str) -> Endpoint {
        Endpoint {
            addr: s.parse().unwrap(),
        }
    }

    #[test]
    fn backends_with_the_same_endpoints_in_any_order_are_equal() {
        let a = Backend::new(
            id("web"),
            vec![ep("10.0.0.2:80"), ep("10.0.0.1:80"), ep("10.0.0.1:80")],
        );
        let b = Backend::new(id("web"), vec![ep("10.0.0.1:80"), ep("10.0.0.2:80")]);
        assert_eq!(a, b);
        assert_ne!(a, Backend::new(id("web"), vec![ep("10.0.0.1:80")]));
    }

    #[test]
    fn the_key_depends_on_the_id_only() {
        let a = Backend::new(id("web"), vec![ep("10.0.0.1:80")]);
        let b = Backend::unavailable(id("web"), "no endpoints");
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), Backend::new(id("api"), vec![]).key());
    }
}
