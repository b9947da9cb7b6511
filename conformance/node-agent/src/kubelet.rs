//! The part of the kubelet API the API server calls for `pods/log` (`kubectl logs`, client-go's
//! `GetLogs`): `GET /containerLogs/{namespace}/{pod}/{container}?<PodLogOptions>`, over HTTPS on
//! the Node's address and `status.daemonEndpoints.kubeletEndpoint.Port`.
//!
//! * TLS: a self-signed certificate made at start with rcgen, for the node address and name.
//!   The API server verifies the kubelet's certificate only with `--kubelet-certificate-authority`,
//!   which the rig does not set.
//! * No client authentication or authorization: the endpoint listens only inside the rig's
//!   private network namespace, where the API server (and the tests) are the only clients. A real
//!   kubelet checks the API server's client certificate and asks for a SubjectAccessReview.
//! * `follow=true` streams new entries until the client goes away, for at most [`FOLLOW_MAX`]
//!   (the kubelet also stops when the container exits; here a restart keeps appending to the same
//!   file, so following goes on across restarts).
//! * `previous=true` is answered 400: all runs of a container share one log file, so the previous
//!   run's output cannot be told apart (the current log has it).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Seek};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::logs::{self, Query, Selector};
use crate::pod;

/// The longest a `follow=true` request streams.
pub const FOLLOW_MAX: Duration = Duration::from_secs(300);
/// How often a followed log is checked for new entries.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Output is sent in chunks of about this size.
const CHUNK: usize = 64 * 1024;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, Infallible>;

/// Where the logs of the Pods the agent runs are: `(namespace, name)` → the Pod's folder and
/// containers. Kept apart from the agent's Pod table, which stays locked while Pods are synced.
#[derive(Default)]
pub struct LogIndex {
    pods: RwLock<HashMap<(String, String), PodLogs>>,
}

#[derive(Clone)]
struct PodLogs {
    uid: String,
    dir: PathBuf,
    containers: Vec<String>,
}

impl LogIndex {
    pub fn insert(&self, namespace: &str, name: &str, uid: &str, dir: PathBuf, containers: Vec<String>) {
        let entry = PodLogs {
            uid: uid.to_string(),
            dir,
            containers,
        };
        self.write().insert((namespace.into(), name.into()), entry);
    }

    /// Forgets the Pod if the entry is still this uid's (a new Pod may reuse the name).
    pub fn remove(&self, namespace: &str, name: &str, uid: &str) {
        let mut pods = self.write();
        let key = (namespace.to_string(), name.to_string());
        if pods.get(&key).is_some_and(|p| p.uid == uid) {
            pods.remove(&key);
        }
    }

    fn get(&self, namespace: &str, name: &str) -> Option<PodLogs> {
        let pods = self.pods.read().unwrap_or_else(|e| e.into_inner());
        pods.get(&(namespace.to_string(), name.to_string())).cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<(String, String), PodLogs>> {
        self.pods.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Binds `addr` (so a taken port fails the start) and serves the kubelet API there in a task.
pub async fn serve(addr: SocketAddr, names: Vec<String>, index: Arc<LogIndex>) -> Result<()> {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names).context("making the kubelet's certificate")?;
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(signing_key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key.into())?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the kubelet API to {addr}"))?;
    tokio::spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!("kubelet API: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, index) = (acceptor.clone(), Arc::clone(&index));
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let index = Arc::clone(&index);
                    async move { Ok::<_, Infallible>(handle(&index, req)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!("kubelet API connection: {e}");
                }
            });
        }
    });
    Ok(())
}

fn text(status: StatusCode, message: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(message + "\n")).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn handle(index: &LogIndex, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/containerLogs/") else {
        return text(
            StatusCode::NOT_FOUND,
            format!("{path}: not served by gantry-node-agent"),
        );
    };
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET".into());
    }
    let parts: Vec<String> = rest.split('/').map(logs::percent_decode).collect();
    let [namespace, name, container] = parts.as_slice() else {
        return text(
            StatusCode::NOT_FOUND,
            format!("{path}: expected /containerLogs/<namespace>/<pod>/<container>"),
        );
    };
    let query = match Query::parse(req.uri().query().unwrap_or_default(), Timestamp::now()) {
        Ok(q) => q,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let Some(pod) = index.get(namespace, name) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod \"{namespace}/{name}\" not found on this node"),
        );
    };
    if !pod.containers.iter().any(|c| c == container) {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "container \"{container}\" not found in pod \"{namespace}/{name}\" (containers: {})",
                pod.containers.join(", ")
            ),
        );
    }
    if query.previous {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "previous=true is not supported by gantry-node-agent: all runs of container \"{container}\" share one log, which the current log returns"
            ),
        );
    }
    let file = pod.dir.join(format!("{}.log", pod::sanitize(container)));
    let log = match std::fs::File::open(&file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("container \"{container}\" in pod \"{namespace}/{name}\" is waiting to start"),
            );
        }
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("opening {}: {e}", file.display()),
            )
        }
    };
    // File reads block; a thread of the blocking pool sends the output in chunks, so memory stays
    // bounded whatever the log's size. A full channel waits for the client to read.
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = stream_log(log, &file, &query, &tx) {
            tracing::warn!(log = %file.display(), "kubelet API: reading a log: {e}");
        }
    });
    let stream =
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))));
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Sends the selected output of `log` to `tx`; with `follow`, keeps sending new entries until
/// the receiver is dropped (the client went away), the log file is removed (the Pod is gone), or
/// [`FOLLOW_MAX`] passed.
fn stream_log(
    log: std::fs::File,
    path: &Path,
    query: &Query,
    tx: &mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    let mut log = BufReader::new(log);
    let skip = match query.tail_lines {
        Some(tail) => {
            let skip = logs::tail_skip(&mut log, tail)?;
            log.rewind()?;
            skip
        }
        None => 0,
    };
    let deadline = Instant::now() + FOLLOW_MAX;
    let mut selector = Selector::new(query);
    let mut out = Vec::with_capacity(CHUNK);
    let mut line = Vec::new();
    let mut skipped = 0u64;
    let send = |out: &mut Vec<u8>| -> bool {
        let chunk = Bytes::from(std::mem::take(out));
        chunk.is_empty() || tx.blocking_send(chunk).is_ok()
    };
    loop {
        let n = log.read_until(b'\n', &mut line)?;
        if n > 0 && line.ends_with(b"\n") {
            line.pop();
            if skipped < skip {
                skipped += 1;
            } else if !selector.line(&line, &mut out) {
                send(&mut out);
                return Ok(());
            }
            line.clear();
            if out.len() >= CHUNK && !send(&mut out) {
                return Ok(());
            }
            continue;
        }
        // The end of what is written so far (an entry being appended stays in `line`).
        if !send(&mut out) || !query.follow || Instant::now() >= deadline || !path.exists() || tx.is_closed()
        {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}
