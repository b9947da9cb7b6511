//! The immutable routing snapshot and the handle it is swapped through.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::{config::ProxyConfig, routes::RouteTable, tls::CertTable};

/// Everything the data path needs, built together so that a request never sees half an update.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases by one with every published snapshot; 0 is the empty snapshot before the first build.
    pub generation: u64,
    pub routes: RouteTable,
    /// SNI → certificate, with the default certificate.
    pub certs: CertTable,
    /// The data path's settings for this snapshot.
    pub config: Arc<ProxyConfig>,
    /// Problems found while building this snapshot, one per rejected or partly applied object.
    pub diagnostics: Vec<Diagnostic>,
}

/// One problem with one object. The proxy only shows these (`/debug/routes`, metrics); the
/// controller turns them into log lines, Events and status.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// `Kind namespace/name`, e.g. `Ingress default/web`.
    pub object: String,
    /// A short CamelCase reason, stable for metrics and Events (`ServiceNotFound`, `PathConflict`, ...).
    pub reason: String,
    /// What is wrong and what was done about it, for people.
    pub message: String,
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

    /// Publishes a new snapshot with one atomic pointer swap.
    pub fn store(&self, snapshot: Snapshot) {
        self.inner.store(Arc::new(snapshot));
    }
}
