//! The immutable routing snapshot and the handle it is swapped through.
//!
//! A snapshot is pure data: routes with their policies, backends with their endpoint lists,
//! certificates and settings. Runtime state (connection pools, balancer cursors, counters) lives
//! per worker beside it (`state`), so two snapshots can be compared and an identical rebuild is
//! never published.

use std::{net::IpAddr, sync::Arc};

use arc_swap::ArcSwap;

use crate::{config::ProxyConfig, routes::RouteTable, tls::CertTable};

/// Everything the data path needs, built together so that a request never sees half an update.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases by one with every published snapshot; 0 is the empty snapshot before the first
    /// build. Not part of equality: it numbers snapshots, it does not describe them.
    pub generation: u64,
    /// The routes of every connection whose local address has no table in `address_routes`.
    pub routes: RouteTable,
    /// Route tables of their own for connections to one local address, sorted by address: the
    /// Gateways that have an address of their own (`--gateway-address-pool`). Usually empty, and
    /// then a lookup costs nothing more.
    pub address_routes: Vec<(IpAddr, RouteTable)>,
    /// SNI → certificate, with the default certificate.
    pub certs: CertTable,
    /// The data path's settings for this snapshot.
    pub config: Arc<ProxyConfig>,
}

/// Equal when they would serve every request the same way; `generation` is ignored.
impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
            && self.certs == other.certs
            && self.routes == other.routes
            && self.address_routes == other.address_routes
    }
}

impl Eq for Snapshot {}

impl Snapshot {
    /// The route table for a connection to local address `local`.
    #[inline]
    pub fn routes_for(&self, local: IpAddr) -> &RouteTable {
        if self.address_routes.is_empty() {
            return &self.routes;
        }
        match self.address_routes.binary_search_by(|(a, _)| a.cmp(&local)) {
            Ok(i) => &self.address_routes[i].1,
            Err(_) => &self.routes,
        }
    }

    /// Every route table: the shared one, then those of the addresses.
    pub fn tables(&self) -> impl Iterator<Item = (Option<IpAddr>, &RouteTable)> {
        std::iter::once((None, &self.routes)).chain(self.address_routes.iter().map(|(a, t)| (Some(*a), t)))
    }
}

/// The one place a snapshot is published. Cheap to clone; every clone sees the same snapshot.
#[derive(Clone, Debug)]
pub struct SnapshotHandle {
    inner: Arc<ArcSwap<Snapshot>>,
}

// === impl SnapshotHandle ===

impl Default for SnapshotHandle {
    fn default() -> Self {
        Self::new(Snapshot::default())
    }
}

impl SnapshotHandle {
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            inner: Arc::new(ArcSwap::from_pointee(snapshot)),
        }
    }

    /// The current snapshot. Requests hold it for their whole life, so a swap never changes the
    /// routes of a request in flight.
    #[inline]
    pub fn load(&self) -> Arc<Snapshot> {
        self.inner.load_full()
    }

    /// Publishes a snapshot with one atomic pointer swap, unless it equals the current one.
    /// Returns whether it was published; the generation is assigned here (the current one plus
    /// one), so skipped rebuilds leave no gap.
    ///
    /// Only one publisher may call this at a time (the controller's rebuild loop): two concurrent
    /// calls could both compare against the same current snapshot.
    pub fn publish(&self, mut snapshot: Snapshot) -> bool {
        let current = self.inner.load();
        if **current == snapshot {
            return false;
        }
        snapshot.generation = current.generation + 1;
        self.inner.store(Arc::new(snapshot));
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        backend::{Backend, BackendId, Endpoint},
        policy::Policies,
        routes::{HostMatch, PathMatch, Route, RouteSource, RouteTableBuilder},
    };

    fn snapshot(endpoints: &[&str], timeout: u64) -> Snapshot {
        let id = BackendId {
            namespace: "default".into(),
            service: "web".into(),
            port: "80".into(),
        };
        let endpoints = endpoints
            .iter()
            .map(|a| Endpoint {
                addr: a.parse().unwrap(),
            })
            .collect();
        let mut b = RouteTableBuilder::new();
        b.add(
            HostMatch::Exact("a.example".into()),
            Route {
                path: PathMatch::Prefix("/".into()),
                conditions: None,
                backend: Arc::new(Backend::new(id, endpoints)),
                source: RouteSource {
                    kind: crate::routes::SourceKind::Ingress,
                    namespace: "default".into(),
                    name: "web".into(),
                },
                policies: Policies::https_redirect(false).into(),
            },
        )
        .unwrap();
        Snapshot {
            generation: 0,
            routes: b.build(),
            address_routes: Vec::new(),
            certs: CertTable::default(),
            config: Arc::new(ProxyConfig {
                idle_timeout: Duration::from_secs(timeout),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn publishing_an_identical_rebuild_changes_nothing() {
        let handle = SnapshotHandle::default();
        assert!(handle.publish(snapshot(&["10.0.0.1:80", "10.0.0.2:80"], 60)));
        let first = handle.load();
        assert_eq!(first.generation, 1);
        // Built again from scratch, endpoints in another order: the same content.
        assert!(!handle.publish(snapshot(&["10.0.0.2:80", "10.0.0.1:80"], 60)));
        let still = handle.load();
        assert!(Arc::ptr_eq(&first, &still), "the serving snapshot was replaced");
        assert_eq!(still.generation, 1);
    }

    #[test]
    fn a_changed_endpoint_or_setting_is_published_with_the_next_generation() {
        let handle = SnapshotHandle::default();
        assert!(handle.publish(snapshot(&["10.0.0.1:80"], 60)));
        assert!(handle.publish(snapshot(&["10.0.0.1:80", "10.0.0.3:80"], 60)));
        assert_eq!(handle.load().generation, 2);
        assert!(handle.publish(snapshot(&["10.0.0.1:80", "10.0.0.3:80"], 30)));
        assert_eq!(handle.load().generation, 3);
    }
}
