//! Gantry's data plane.
//!
//! The proxy serves traffic from one immutable [`Snapshot`] at a time. The embedding program (the
//! controller) builds snapshots off the data path and publishes them through the [`Dataplane`]
//! handle; requests only `load()` them. Nothing in this crate knows about Kubernetes.
//!
//! Modules import downward only, in these layers (each line may import the lines above it):
//!
//! 1. data: `trace` (imports nothing of the crate: W3C Trace Context, spans, their OTLP export
//!    thread), `normalize`, `config` (trace), `error`, `backend`, `client_auth`, `tls`
//!    (client_auth), `conn` (client_auth), `metrics` (trace),
//!    `proxy_protocol`, `body` (error), `policy` (backend, client_auth, config, conn), and the upstream codecs: `h1`
//!    (HTTP/1.1, imports nothing of the crate), `upstream_h2` (body, error: HTTP/2 on hyper's
//!    client), `upstream_tls` (error, policy: the TLS handshake to backends)
//! 2. compiled data: `routes` (backend, normalize, policy), `snapshot` (config, routes, tls),
//!    `headers` (conn, error, policy), `access_log` (config, conn)
//! 3. runtime state: `state` (backend, config, h1, metrics, policy, routes, snapshot, upstream_h2)
//! 4. upstream clients: `upstream` (backend, body, config, error, h1, metrics, policy, state,
//!    upstream_h2, upstream_tls), `ext_auth` (policy: the external authentication subrequest and
//!    its cache)
//! 5. request pipeline: `pipeline` (every module above)
//! 6. listeners: `server` (config, conn, metrics, pipeline, proxy_protocol, snapshot), `admin`
//!    (metrics, normalize, routes, snapshot)
//! 7. threads: `workers` (pipeline, server, state)
//! 8. entry point: `dataplane` (admin, config, metrics, pipeline, policy, server, snapshot, workers)
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod access_log;
pub mod admin;
pub mod backend;
pub mod body;
pub mod client_auth;
pub mod config;
pub mod conn;
pub mod dataplane;
pub mod error;
pub mod ext_auth;
pub mod h1;
pub mod headers;
pub mod metrics;
pub mod normalize;
pub mod pipeline;
pub mod policy;
pub mod proxy_protocol;
pub mod routes;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod status_page;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod upstream_h2;
pub mod upstream_tls;
pub mod workers;

pub use backend::{Backend, BackendId, BackendKey, Endpoint};
pub use config::{Balancer, ProxyConfig};
pub use dataplane::{Dataplane, DataplaneBuilder};
pub use error::ProxyError;
pub use policy::{HttpsRedirect, Policies};
pub use routes::{
    HostMatch, HostTable, HostTableChanges, PathMatch, Route, RouteError, RouteSource, RouteTable,
    RouteTableBuilder, SourceKind,
};
pub use snapshot::{Snapshot, SnapshotHandle};
pub use tls::{CertTable, TlsCert, TlsError};

/// Resolves once `shutdown` turns true (or its sender is gone). The watch guard is dropped inside,
/// so the future stays `Send`.
pub async fn shutdown_requested(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
