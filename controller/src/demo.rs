//! The bundled demo: echo backends on loopback and the manifests that route to them.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;

use crate::{
    manifests::parse_manifests,
    runtime::{SharedStore, SourceState},
    store::{Change, ObjectStore},
};

/// The demo manifests, compiled into the binary so `gantry --demo` works from anywhere.
pub const MANIFESTS: &str = include_str!("../examples/demo/demo.yaml");

/// The demo backends: (service, address).
pub const BACKENDS: &[(&str, &str)] = &[
    ("web", "127.0.0.1:9101"),
    ("api", "127.0.0.1:9102"),
    ("apps", "127.0.0.1:9103"),
];

/// Why the demo cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A demo backend port is taken.
    #[error("demo backend {service} cannot listen on {addr}: {source}")]
    Listen {
        service: &'static str,
        addr: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The bundled manifests do not parse (a bug in the bundle).
    #[error("bundled demo manifests: {0}")]
    Manifests(#[from] crate::manifests::ManifestError),
}

/// Starts the demo backends and fills the store with the bundled manifests.
pub async fn start(shared: &SharedStore) -> Result<(), Error> {
    for &(service, addr) in BACKENDS {
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Listen {
            service,
            addr,
            source,
        })?;
        tokio::spawn(serve_echo(listener, service));
    }
    let parsed = parse_manifests("demo.yaml", MANIFESTS)?;
    let mut store = ObjectStore::new();
    for obj in parsed.objects {
        store.apply(obj);
    }
    shared.update(|s| {
        *s = SourceState {
            store,
            diagnostics: parsed.diagnostics,
        };
        Change::Read
    });
    shared.mark_synced();
    Ok(())
}

/// An echo server: answers every request with JSON describing it and naming `service`, like the
/// echo server of the Ingress conformance suite.
pub async fn serve_echo(listener: TcpListener, service: &'static str) {
    let pod: Arc<str> = Arc::from(format!(
        "{service}-{}",
        listener.local_addr().map(|a| a.port()).unwrap_or(0)
    ));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let pod = pod.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = echo(service, &pod, peer, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1()
                .timer(TokioTimer::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn echo(service: &str, pod: &str, peer: SocketAddr, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), json!(String::from_utf8_lossy(v.as_bytes()))))
        .collect();
    let body = json!({
        "service": service,
        "pod": pod,
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "host": req.headers().get(header::HOST).and_then(|h| h.to_str().ok()),
        "proto": format!("{:?}", req.version()),
        "peer": peer.to_string(),
        "headers": headers,
    });
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body:#}\n"))));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}
