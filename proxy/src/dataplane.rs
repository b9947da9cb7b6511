//! The one entry point of the data plane: build it with its settings and listeners, start it, and
//! drive it through the returned [`Dataplane`] handle (publish snapshots, readiness, shutdown).

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    admin::{serve_admin, Admin, DebugSection, Readiness},
    backend::{Backend, BackendKey},
    config::ProxyConfig,
    metrics::Metrics,
    pipeline::Pipeline,
    routes::RouteTable,
    server::TlsConfigs,
    snapshot::{Snapshot, SnapshotHandle},
    workers::Workers,
};

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener address is taken or not ours.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The TLS settings were refused by rustls.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// The OTLP exporter could not be set up.
    #[error("tracing: {0}")]
    Trace(#[from] crate::trace::Error),
}

/// Settings for [`Dataplane::start`]. Defaults: one worker, every listener on 127.0.0.1 with a
/// port picked by the kernel, an empty registry.
pub struct DataplaneBuilder {
    settings: ProxyConfig,
    workers: usize,
    http: SocketAddr,
    https: SocketAddr,
    admin: SocketAddr,
    registry: Registry,
    sections: Vec<DebugSection>,
    otlp: Option<crate::trace::ExportConfig>,
}

/// The running data plane.
#[derive(Debug)]
pub struct Dataplane {
    snapshots: SnapshotHandle,
    metrics: Metrics,
    readiness: Arc<Readiness>,
    /// Taken by [`Dataplane::join`]; behind a lock only so that `join` can take `&self` (the
    /// handle is shared with the rebuild loop), never touched on the request path.
    workers: std::sync::Mutex<Option<Workers>>,
    http_addr: SocketAddr,
    https_addr: SocketAddr,
    admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    admin_shutdown: watch::Sender<bool>,
    admin_task: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// The backends of the last published snapshot, for `gantry_backend_endpoints`: a publish
    /// sets the gauges of the backends that changed and removes those of the backends gone.
    published_backends: std::sync::Mutex<PublishedBackends>,
}

// === impl DataplaneBuilder ===

impl DataplaneBuilder {
    /// Worker threads, each with its own runtime and listening sockets. At least one.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    pub fn http(mut self, addr: SocketAddr) -> Self {
        self.http = addr;
        self
    }

    pub fn https(mut self, addr: SocketAddr) -> Self {
        self.https = addr;
        self
    }

    pub fn admin(mut self, addr: SocketAddr) -> Self {
        self.admin = addr;
        self
    }

    /// The registry `/metrics` serves. The data plane registers its own metrics in it; the caller
    /// may have registered others (the controller's) first.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Exports the spans of sampled requests over OTLP (see `crate::trace`). Without it (the
    /// default) nothing is traced, whatever the settings say.
    pub fn otlp(mut self, export: Option<crate::trace::ExportConfig>) -> Self {
        self.otlp = export;
        self
    }

    /// Adds a section to `/debug/routes`.
    pub fn debug_section(
        mut self,
        name: &'static str,
        render: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.sections.push((name, Arc::new(render)));
        self
    }

    /// Binds every listener, starts the worker threads, and serves the admin endpoints on the
    /// calling runtime. Until the first [`Dataplane::publish`], requests get 404 with the
    /// builder's settings and `/readyz` says 503.
    pub async fn start(mut self) -> Result<Dataplane, Error> {
        let metrics = Metrics::register(&mut self.registry);
        let initial = Snapshot {
            config: Arc::new(self.settings.clone()),
            ..Default::default()
        };
        let snapshots = SnapshotHandle::new(initial);
        let admin_listener = TcpListener::bind(self.admin)
            .await
            .map_err(|source| Error::Listen {
                what: "admin",
                addr: self.admin,
                source,
            })?;
        let admin_addr = admin_listener.local_addr().unwrap_or(self.admin);
        let tls = TlsConfigs::new(&snapshots, self.settings.tls_session_resumption)?;
        let tracer = match self.otlp.take() {
            Some(export) => Some(crate::trace::Tracer::start(export, metrics.trace_spans.clone())?),
            None => None,
        };
        let pipeline = Arc::new(
            Pipeline::new(snapshots.clone(), metrics.clone(), self.settings.max_connections)
                .with_tracer(tracer),
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        tokio::spawn(sweep_rate_limits(pipeline.clone(), shutdown_rx.clone()));
        let workers = Workers::start(pipeline, self.workers, self.http, self.https, tls, shutdown_rx)
            .map_err(|source| Error::Listen {
                what: "http/https",
                addr: self.http,
                source,
            })?;
        let readiness = Arc::new(Readiness::default());
        let admin = Arc::new(Admin {
            snapshots: snapshots.clone(),
            readiness: readiness.clone(),
            registry: Arc::new(self.registry),
            sections: self.sections,
            metrics: metrics.clone(),
            window: Default::default(),
        });
        let (admin_shutdown, admin_shutdown_rx) = watch::channel(false);
        let admin_task = tokio::spawn(serve_admin(admin, admin_listener, admin_shutdown_rx));
        Ok(Dataplane {
            snapshots,
            metrics,
            published_backends: Default::default(),
            readiness,
            http_addr: workers.http_addr,
            https_addr: workers.https_addr,
            workers: std::sync::Mutex::new(Some(workers)),
            admin_addr,
            shutdown,
            admin_shutdown,
            admin_task: std::sync::Mutex::new(Some(admin_task)),
        })
    }
}

/// How often rate-limit state is trimmed: limits no route uses any more are dropped, and client
/// addresses that are back to a full bucket are forgotten, so memory follows the active clients.
const RATE_LIMIT_SWEEP: std::time::Duration = std::time::Duration::from_secs(30);

async fn sweep_rate_limits(pipeline: Arc<Pipeline>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(RATE_LIMIT_SWEEP);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = crate::shutdown_requested(&mut shutdown) => return,
            _ = every.tick() => {}
        }
        let snapshot = pipeline.snapshots.load();
        let in_use: std::collections::HashSet<&crate::policy::RateLimit> = snapshot
            .tables()
            .flat_map(|(_, t)| t.iter_unordered().map(|(_, r)| r).chain(t.default_route()))
            .filter_map(|r| r.policies.rate_limit.as_deref())
            .collect();
        pipeline.rate_limiters.retain(|limit| in_use.contains(limit));
        pipeline.rate_limiters.sweep();
    }
}

/// The Unix time now, in seconds.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `tls_certificate_expiry_timestamp_seconds` for every TLS host of `snapshot`, and nothing for
/// hosts it no longer has. Parses each leaf certificate, so it runs only when the certificates
/// changed.
fn set_certificate_expiry(metrics: &Metrics, snapshot: &Snapshot) {
    metrics.tls_certificate_expiry.clear();
    for (host, cert) in snapshot.certs.entries() {
        if let Some(not_after) = cert.not_after() {
            let labels = crate::metrics::HostLabels { host };
            metrics
                .tls_certificate_expiry
                .get_or_create(&labels)
                .set(not_after as f64);
        }
    }
}

/// What the `backend_endpoints` gauges were last set from: the route tables of the last
/// published snapshot, and per backend how many of their host tables and default routes send to
/// it.
///
/// A publish counts in the routes of the host tables that are new since (by `Arc`, host by host),
/// and counts out those of the tables that went: after a change to one Ingress or one Service
/// that is a few tables, found without visiting the hosts of the shards the two tables share
/// ([`RouteTable::changed_host_tables`]); walking every route of every host, and hashing every
/// backend into a new map, was a sixth of a rebuild at 10,000 Ingresses.
#[derive(Debug, Default)]
pub(crate) struct PublishedBackends {
    /// The last published snapshot's tables (cheap clones), by local address.
    tables: Vec<(Option<std::net::IpAddr>, RouteTable)>,
    /// How many host tables and default routes send to each backend, and the newest `Arc` of it.
    refs: HashMap<BackendKey, (usize, Arc<Backend>), foldhash::fast::RandomState>,
}

fn backends_of(routes: &[Arc<crate::Route>]) -> impl Iterator<Item = &Arc<Backend>> {
    routes.iter().flat_map(|r| r.backends())
}

/// `backend_endpoints` for every backend the snapshot's routes name (their own backends and the
/// other backends of their policies), and nothing for backends it no longer has. A backend that
/// is the same `Arc` (or has the same number of endpoints) keeps its gauge, so a publish after a
/// change to one Service touches one gauge, not one per backend.
fn set_backend_endpoints(metrics: &Metrics, snapshot: &Snapshot, last: &mut PublishedBackends) {
    let labels = |b: &Backend| crate::metrics::BackendLabels {
        namespace: crate::metrics::Label(b.id.namespace.clone()),
        service: crate::metrics::Label(b.id.service.clone()),
        port: crate::metrics::Label(b.id.port.clone()),
    };
    let empty = RouteTable::default();
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut added_defaults, mut removed_defaults) = (Vec::new(), Vec::new());
    for (address, table) in snapshot.tables() {
        let before = last
            .tables
            .iter()
            .find(|(a, _)| *a == address)
            .map_or(&empty, |(_, t)| t);
        let changes = table.changed_host_tables(before);
        added.extend(changes.added);
        removed.extend(changes.removed);
        match (table.default_route(), before.default_route()) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => {}
            (a, b) => {
                added_defaults.extend(a.cloned());
                removed_defaults.extend(b.cloned());
            }
        }
    }
    for (address, before) in &last.tables {
        if !snapshot.tables().any(|(a, _)| a == *address) {
            removed.extend(before.host_tables());
            removed_defaults.extend(before.default_route().cloned());
        }
    }
    // Added first, so that a backend that moves from a table that went to one that came keeps
    // its gauge.
    let refs = &mut last.refs;
    let mut add = |b: &Arc<Backend>| {
        let entry = refs.entry(b.key()).or_insert_with(|| (0, b.clone()));
        let changed = entry.0 == 0
            || !(Arc::ptr_eq(&entry.1, b)
                || (entry.1.id == b.id && entry.1.endpoints.len() == b.endpoints.len()));
        entry.0 += 1;
        entry.1 = b.clone();
        if changed {
            metrics
                .backend_endpoints
                .get_or_create(&labels(b))
                .set(b.endpoints.len() as i64);
        }
    };
    for host in &added {
        backends_of(host.routes()).for_each(&mut add);
    }
    backends_of(&added_defaults).for_each(&mut add);
    let mut remove = |b: &Arc<Backend>| {
        if let Some(entry) = refs.get_mut(&b.key()) {
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 == 0 {
                metrics.backend_endpoints.remove(&labels(&entry.1));
                refs.remove(&b.key());
            }
        }
    };
    for host in &removed {
        backends_of(host.routes()).for_each(&mut remove);
    }
    backends_of(&removed_defaults).for_each(&mut remove);
    drop(removed);
    last.tables = snapshot.tables().map(|(a, t)| (a, t.clone())).collect();
}

// === impl Dataplane ===

impl Dataplane {
    pub fn builder(settings: ProxyConfig) -> DataplaneBuilder {
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        DataplaneBuilder {
            settings,
            workers: 1,
            http: local,
            https: local,
            admin: local,
            registry: Registry::default(),
            sections: Vec::new(),
            otlp: None,
        }
    }

    /// Publishes a snapshot with one atomic swap, unless it equals the serving one (then nothing
    /// changes and this returns false). The first publish marks the data plane ready.
    ///
    /// Only one task may publish (see [`SnapshotHandle::publish`]).
    pub fn publish(&self, snapshot: Snapshot) -> bool {
        let before = self.snapshots.load();
        let published = self.snapshots.publish(snapshot);
        if published {
            let current = self.snapshots.load();
            self.metrics.snapshot_last_publish.set(unix_now());
            if before.certs != current.certs {
                set_certificate_expiry(&self.metrics, &current);
            }
            let mut last = self.published_backends.lock().unwrap_or_else(|e| e.into_inner());
            set_backend_endpoints(&self.metrics, &current, &mut last);
            drop(last);
            let routes: usize = current.tables().map(|(_, t)| t.len()).sum();
            self.metrics.routes.set(routes as i64);
            let endpoints = if current.tables().count() == 1 {
                // One table's addresses are already sorted and without duplicates.
                current.tables().map(|(_, t)| t.addresses().len()).sum()
            } else {
                let mut all: Vec<_> = current.tables().flat_map(|(_, t)| t.addresses()).collect();
                all.sort_unstable();
                all.dedup();
                all.len()
            };
            self.metrics.endpoints.set(endpoints as i64);
            self.metrics.snapshot_generation.set(current.generation as i64);
        }
        self.readiness.set_ready();
        published
    }

    /// The serving snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshots.load()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    /// Starts the shutdown: `/readyz` turns 503 first, so load balancers stop sending, then the
    /// listeners close and every connection is asked to finish (see `server::serve`).
    pub fn shutdown(&self) {
        self.readiness.set_shutting_down();
        let _ = self.shutdown.send(true);
    }

    /// Waits until every worker has drained (at most the shutdown grace after [`Self::shutdown`]),
    /// then stops the admin listener. Takes `&self`, so a clone of the handle held elsewhere can
    /// never make shutdown skip the drain. A second call returns at once.
    pub async fn join(&self) {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(workers) = workers {
            workers.join().await;
        }
        let _ = self.admin_shutdown.send(true);
        let admin = self.admin_task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(admin) = admin {
            let _ = admin.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        backend::BackendId, backend::Endpoint, HostMatch, PathMatch, Route, RouteSource, RouteTableBuilder,
    };

    fn backend(service: &str, endpoints: usize) -> Arc<Backend> {
        let id = BackendId {
            namespace: "default".into(),
            service: service.into(),
            port: "80".into(),
        };
        let endpoints = (0..endpoints)
            .map(|i| Endpoint {
                addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 8080)),
            })
            .collect();
        Arc::new(Backend::new(id, endpoints))
    }

    /// `/` of an Ingress `name` in `default`, to `backend`.
    fn route_to(backend: &Arc<Backend>, name: &str) -> Route {
        Route {
            path: PathMatch::Prefix("/".into()),
            conditions: None,
            backend: backend.clone(),
            source: RouteSource {
                kind: crate::SourceKind::Ingress,
                namespace: "default".into(),
                name: name.into(),
            },
            policies: Default::default(),
        }
    }

    fn snapshot(backends: &[Arc<Backend>]) -> Snapshot {
        let mut routes = RouteTableBuilder::new();
        for b in backends {
            routes
                .add(
                    HostMatch::Exact(format!("{}.example", b.id.service)),
                    route_to(b, &b.id.service),
                )
                .unwrap();
        }
        Snapshot {
            routes: routes.build(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn backend_gauges_count_the_host_tables_kept_from_one_publish_to_the_next() {
        let mut registry = Registry::with_prefix("gantry");
        let metrics = Metrics::register(&mut registry);
        let mut last = PublishedBackends::default();
        let a = backend("a", 2);
        let route = |b: &Arc<Backend>| route_to(b, "web");
        let host = |h: &str| HostMatch::Exact(h.into());
        let a_gauge = [r#"gantry_backend_endpoints{namespace="default",service="a",port="80"} 2"#];
        // Two hosts send to `a`.
        let mut routes = RouteTableBuilder::new();
        routes.add(host("x.example"), route(&a)).unwrap();
        routes.add(host("y.example"), route(&a)).unwrap();
        let first = Snapshot {
            routes: routes.build(),
            ..Snapshot::default()
        };
        set_backend_endpoints(&metrics, &first, &mut last);
        assert_eq!(gauges(&registry), a_gauge);
        // x's table is kept (the same Arc, as a build that reuses the host hands it on); y goes:
        // `a` is still used.
        let kept = first.routes.host_tables().next().expect("x.example").clone();
        let mut routes = RouteTableBuilder::new();
        routes.add_host_table(host("x.example"), kept.clone());
        let second = Snapshot {
            routes: routes.build(),
            ..Snapshot::default()
        };
        assert!(Arc::ptr_eq(
            &kept,
            second.routes.host_tables().next().expect("kept")
        ));
        set_backend_endpoints(&metrics, &second, &mut last);
        assert_eq!(gauges(&registry), a_gauge, "x still sends to a");
        // Published again as it is: nothing counted twice.
        set_backend_endpoints(&metrics, &second, &mut last);
        // The kept table goes too: so does the gauge.
        set_backend_endpoints(&metrics, &Snapshot::default(), &mut last);
        assert!(gauges(&registry).is_empty(), "{:?}", gauges(&registry));
    }

    /// The `gantry_backend_endpoints` lines, sorted.
    fn gauges(registry: &Registry) -> Vec<String> {
        let mut lines: Vec<String> = crate::metrics::encode(registry)
            .lines()
            .filter(|l| l.starts_with("gantry_backend_endpoints{"))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn backend_endpoint_gauges_follow_each_publish_and_go_with_their_backend() {
        let mut registry = Registry::with_prefix("gantry");
        let metrics = Metrics::register(&mut registry);
        let mut last = PublishedBackends::default();
        let (a, b) = (backend("a", 2), backend("b", 1));
        set_backend_endpoints(&metrics, &snapshot(&[a.clone(), b]), &mut last);
        assert_eq!(
            gauges(&registry),
            [
                r#"gantry_backend_endpoints{namespace="default",service="a",port="80"} 2"#,
                r#"gantry_backend_endpoints{namespace="default",service="b",port="80"} 1"#,
            ]
        );
        // `a` unchanged (the same Arc), `b` gone, `c` new, then `a` with three endpoints.
        set_backend_endpoints(&metrics, &snapshot(&[a, backend("c", 0)]), &mut last);
        assert_eq!(
            gauges(&registry),
            [
                r#"gantry_backend_endpoints{namespace="default",service="a",port="80"} 2"#,
                r#"gantry_backend_endpoints{namespace="default",service="c",port="80"} 0"#,
            ]
        );
        set_backend_endpoints(
            &metrics,
            &snapshot(&[backend("a", 3), backend("c", 0)]),
            &mut last,
        );
        assert_eq!(
            gauges(&registry),
            [
                r#"gantry_backend_endpoints{namespace="default",service="a",port="80"} 3"#,
                r#"gantry_backend_endpoints{namespace="default",service="c",port="80"} 0"#,
            ]
        );
    }
}
