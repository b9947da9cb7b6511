//! Gantry's data plane.
//!
//! The proxy serves traffic from one immutable [`Snapshot`] at a time. The controller builds a new
//! snapshot off the data path and publishes it with [`SnapshotHandle::store`]; requests only
//! `load()` it. Nothing in this crate knows about Kubernetes.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod access_log;
pub mod admin;
pub mod backend;
pub mod config;
pub mod error;
pub mod forward;
pub mod metrics;
pub mod normalize;
pub mod routes;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod upstream;
pub mod workers;

pub use admin::Readiness;
pub use backend::{Backend, BackendId, Endpoint};
pub use config::{Balancer, ProxyConfig};
pub use error::ProxyError;
pub use forward::{ConnInfo, Proxy};
pub use metrics::Metrics;
pub use routes::{HostMatch, PathMatch, Route, RouteError, RouteSource, RouteTable, RouteTableBuilder};
pub use snapshot::{Diagnostic, Snapshot, SnapshotHandle};
pub use tls::{CertTable, TlsCert, TlsError};

/// Resolves once `shutdown` turns true (or its sender is gone). The watch guard is dropped inside,
/// so the future stays `Send`.
pub async fn shutdown_requested(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
