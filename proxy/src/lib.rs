//! Gantry's data plane.
//!
//! The proxy serves traffic from one immutable [`Snapshot`] at a time. The controller builds a new
//! snapshot off the data path and publishes it with [`SnapshotHandle::store`]; requests only
//! `load()` it. Nothing in this crate knows about Kubernetes.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod backend;
pub mod normalize;
pub mod routes;
pub mod snapshot;
pub mod tls;

pub use backend::{Backend, BackendId, Endpoint};
pub use routes::{HostMatch, PathMatch, Route, RouteError, RouteSource, RouteTable, RouteTableBuilder};
pub use snapshot::{Diagnostic, Snapshot, SnapshotHandle};
pub use tls::{CertTable, TlsCert, TlsError};
