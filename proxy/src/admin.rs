//! The admin listener: health, readiness, metrics, and the route dump.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::{net::TcpListener, sync::watch};

use prometheus_client::registry::Registry;

use crate::{
    metrics,
    routes::{HostMatch, PathMatch},
    snapshot::{Snapshot, SnapshotHandle},
};

/// A section the embedding program adds to `/debug/routes` (the controller adds its
/// diagnostics): a name and a function that renders it as JSON when asked.
pub type DebugSection = (&'static str, Arc<dyn Fn() -> serde_json::Value + Send + Sync>);

/// What the admin endpoints read.
pub struct Admin {
    pub snapshots: SnapshotHandle,
    pub readiness: Arc<Readiness>,
    pub registry: Arc<Registry>,
    pub sections: Vec<DebugSection>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

/// Whether traffic should be sent here: true once the first snapshot serves, false again from the
/// start of shutdown.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    shutting_down: AtomicBool,
}

impl Readiness {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.shutting_down.load(Ordering::SeqCst)
    }
}

/// Serves the admin endpoints until `shutdown` turns true. The admin listener keeps answering
/// while traffic drains (so `/readyz` can say 503); it stops with the process.
pub async fn serve_admin(admin: Arc<Admin>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            _ = crate::shutdown_requested(&mut shutdown) => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = admin_response(&admin, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn admin_response(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let readiness = &admin.readiness;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if readiness.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => {
            let mut r = text(StatusCode::OK, metrics::encode(&admin.registry));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/debug/routes" => {
            let mut dump =
                serde_json::to_value(RouteDump::from(&*admin.snapshots.load())).unwrap_or_default();
            if let Some(map) = dump.as_object_mut() {
                for (name, section) in &admin.sections {
                    map.insert((*name).to_string(), section());
                }
            }
            let body = serde_json::to_vec_pretty(&dump).unwrap_or_default();
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The JSON shape of `/debug/routes`.
#[derive(Debug, Serialize)]
pub struct RouteDump {
    pub generation: u64,
    pub routes: Vec<RouteEntry>,
    pub default_backend: Option<RouteEntry>,
    pub tls_hosts: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RouteEntry {
    /// `foo.example.com`, `*.example.com`, or `*` for rules without host.
    pub host: String,
    pub path: String,
    pub path_type: &'static str,
    pub backend: String,
    pub endpoints: Vec<String>,
    pub unavailable: Option<String>,
    pub ingress: String,
    pub ssl_redirect: bool,
}

impl From<&Snapshot> for RouteDump {
    fn from(s: &Snapshot) -> Self {
        let entry = |host: String, r: &crate::Route| {
            let (path, path_type) = match &r.path {
                PathMatch::Exact(p) => (p.clone(), "Exact"),
                PathMatch::Prefix(p) => (p.clone(), "Prefix"),
                PathMatch::Regex(p) => (p.clone(), "Regex"),
            };
            RouteEntry {
                host,
                path,
                path_type,
                backend: r.backend.id.to_string(),
                endpoints: r.backend.endpoints.iter().map(|e| e.addr.to_string()).collect(),
                unavailable: r.backend.unavailable.as_deref().map(str::to_string),
                ingress: format!("{}/{}", r.source.namespace, r.source.name),
                ssl_redirect: r.policies.https_redirect.is_some(),
            }
        };
        let host_name = |h: &HostMatch| match h {
            HostMatch::Exact(h) => h.clone(),
            HostMatch::Wildcard(p) => format!("*.{p}"),
            HostMatch::Any => "*".to_string(),
        };
        Self {
            generation: s.generation,
            routes: s.routes.iter().map(|(h, r)| entry(host_name(h), r)).collect(),
            default_backend: s.routes.default_route().map(|r| entry("*".into(), r)),
            tls_hosts: s.certs.names(),
        }
    }
}
