//! One echo backend for every test: it answers each request with what it received, as JSON, and
//! records it.
//!
//! The answer (`content-type: application/json`) is
//! `{"service", "pod", "method", "path", "query", "target", "proto", "authority", "scheme", "host",
//! "headers", "header_list", "body", "body_len", "trailers"}`: `service` is the backend's name,
//! `pod` its address, `target` the path and query, `proto` the HTTP version (`"HTTP/1.1"`),
//! `headers` an object (the last value of a repeated header), `header_list` every `[name, value]`
//! in order, `body` the request body as text (`null` above 16 KiB), `trailers` the request's
//! trailers. [`Seen`] reads it back.
//!
//! Some paths do more (anywhere in the path, so they also work behind a path prefix):
//!
//! - `/sleep/MS` waits MS milliseconds before answering;
//! - `/status/N` answers with status N (otherwise the builder's [`status`](EchoBuilder::status),
//!   200);
//! - `/bytes/N` answers N bytes of `x` instead, in 64 KiB frames with a Content-Length;
//! - a path ending in `/upload` answers the request body's length as text instead;
//! - a path ending in `/ws` with an `Upgrade` header is a WebSocket echo (text and binary
//!   messages come back as sent).
//!
//! The builder chooses the protocols (HTTP/1.1 and h2c by default; one of them only), TLS, the
//! listen address, a delay for every request, extra response headers and trailers, and a path
//! prefix whose requests wait until [`Echo::release`].

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Notify,
};

/// Request bodies longer than this are not echoed back as `body` (only `body_len`).
const ECHOED_BODY_MAX: usize = 16 * 1024;
/// The frame size of `/bytes/N` answers.
const FRAME: usize = 64 * 1024;

/// The HTTP versions a backend speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (with upgrades) and HTTP/2 with prior knowledge, told apart by the preface.
    #[default]
    Auto,
    /// HTTP/1.1 only (with upgrades).
    Http1,
    /// HTTP/2 only (prior knowledge over TCP, or over TLS).
    Http2,
}

/// One request as the backend saw it: recorded by [`Echo`], and what its JSON answer holds.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub struct Seen {
    /// The backend's name.
    pub service: String,
    /// The backend's address.
    pub pod: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Path and query.
    pub target: String,
    /// `"HTTP/1.1"`, `"HTTP/2.0"`.
    pub proto: String,
    /// The request target's authority (HTTP/2's `:authority`), if any.
    pub authority: Option<String>,
    pub scheme: Option<String>,
    pub host: Option<String>,
    /// Every header in order (`header_list` in the JSON answer).
    #[serde(rename = "header_list")]
    pub headers: Vec<(String, String)>,
    /// The body as text; `None` when longer than 16 KiB.
    pub body: Option<String>,
    pub body_len: usize,
    /// The request's trailers.
    pub trailers: serde_json::Map<String, serde_json::Value>,
}

impl Seen {
    /// Every value of header `name` (lowercase), in order.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The JSON answer: this, with `headers` as an object too.
    fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap();
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect();
        v["headers"] = headers.into();
        v
    }
}

/// How to start an [`Echo`]: [`Echo::builder`].
#[derive(Clone)]
pub struct EchoBuilder {
    name: String,
    ip: IpAddr,
    port: u16,
    protocol: Protocol,
    tls: Option<Arc<rustls::ServerConfig>>,
    status: StatusCode,
    delay: Duration,
    headers: Vec<(HeaderName, HeaderValue)>,
    trailers: HeaderMap,
    hang_prefix: Option<String>,
    goaway_after_first: bool,
    max_concurrent_streams: Option<u32>,
}

impl EchoBuilder {
    /// Listens on `ip` (127.0.0.1 by default).
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = ip;
        self
    }

    /// Listens on `port` (0, any free port, by default).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// HTTP/1.1 only.
    pub fn http1_only(mut self) -> Self {
        self.protocol = Protocol::Http1;
        self
    }

    /// HTTP/2 only: prior knowledge in cleartext (h2c), or HTTP/2 over [`tls`](Self::tls).
    pub fn http2_only(mut self) -> Self {
        self.protocol = Protocol::Http2;
        self
    }

    /// Serves TLS with `config` (its ALPN list is what is offered); [`Echo::sni`] records the
    /// server name of each handshake.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// The status of every answer (200 by default; a `/status/N` path still wins).
    pub fn status(mut self, status: u16) -> Self {
        self.status = StatusCode::from_u16(status).unwrap();
        self
    }

    /// Waits this long before every answer (none by default).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Adds a response header to every answer.
    pub fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers
            .push((HeaderName::from_static(name), HeaderValue::from_static(value)));
        self
    }

    /// Adds a response trailer to every JSON answer (which is then sent without a
    /// Content-Length).
    pub fn trailer(mut self, name: &'static str, value: &'static str) -> Self {
        self.trailers
            .insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        self
    }

    /// Holds every request whose path starts with `prefix`, after recording it, until
    /// [`Echo::release`].
    pub fn hang_on(mut self, prefix: &str) -> Self {
        self.hang_prefix = Some(prefix.into());
        self
    }

    /// Shuts every connection down gracefully (GOAWAY) after its first answer. HTTP/2 only.
    pub fn goaway_after_first(mut self) -> Self {
        assert_eq!(
            self.protocol,
            Protocol::Http2,
            "goaway_after_first needs http2_only"
        );
        self.goaway_after_first = true;
        self
    }

    /// Allows at most `n` concurrent streams per connection. HTTP/2 only.
    pub fn max_concurrent_streams(mut self, n: u32) -> Self {
        assert_eq!(
            self.protocol,
            Protocol::Http2,
            "max_concurrent_streams needs http2_only"
        );
        self.max_concurrent_streams = Some(n);
        self
    }

    /// Binds and starts serving; the server stops accepting when the [`Echo`] is dropped.
    pub async fn start(self) -> Echo {
        let listener = TcpListener::bind((self.ip, self.port))
            .await
            .unwrap_or_else(|e| panic!("binding {}:{}: {e}", self.ip, self.port));
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            config: self,
            addr,
            hits: Arc::new(AtomicUsize::new(0)),
            accepts: Arc::new(AtomicUsize::new(0)),
            sni: Arc::new(Mutex::new(Vec::new())),
            seen: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            release: Notify::new(),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                s.accepts.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    match s.config.tls.clone() {
                        None => serve_connection(s, tcp).await,
                        Some(config) => {
                            let Ok(tls) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await else {
                                return;
                            };
                            let name = tls.get_ref().1.server_name().map(str::to_owned);
                            s.sni.lock().unwrap().push(name);
                            serve_connection(s, tls).await
                        }
                    }
                });
            }
        });
        Echo {
            name: shared.config.name.clone(),
            addr,
            hits: shared.hits.clone(),
            accepts: shared.accepts.clone(),
            sni: shared.sni.clone(),
            shared,
            read: Mutex::new(0),
            task: Some(task),
        }
    }
}

/// A running echo backend (see the module documentation). Dropping it stops the accepting.
pub struct Echo {
    pub name: String,
    pub addr: SocketAddr,
    /// Requests answered (or being answered).
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted.
    pub accepts: Arc<AtomicUsize>,
    /// The SNI of each TLS handshake, in order (`None`: the client sent none).
    pub sni: Arc<Mutex<Vec<Option<String>>>>,
    shared: Arc<Shared>,
    /// How many recorded requests [`next_request`](Self::next_request) returned.
    read: Mutex<usize>,
    /// The accepting task; `None` once [`detach`](Echo::detach)ed.
    task: Option<tokio::task::JoinHandle<()>>,
}

struct Shared {
    config: EchoBuilder,
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    accepts: Arc<AtomicUsize>,
    sni: Arc<Mutex<Vec<Option<String>>>>,
    seen: Mutex<Vec<Seen>>,
    arrived: Notify,
    release: Notify,
}

// === impl Echo ===

impl Echo {
    /// A builder for a backend named `name`.
    pub fn builder(name: &str) -> EchoBuilder {
        EchoBuilder {
            name: name.into(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            protocol: Protocol::Auto,
            tls: None,
            status: StatusCode::OK,
            delay: Duration::ZERO,
            headers: Vec::new(),
            trailers: HeaderMap::new(),
            hang_prefix: None,
            goaway_after_first: false,
            max_concurrent_streams: None,
        }
    }

    /// A backend named `name` on 127.0.0.1 with the defaults.
    pub async fn start(name: &str) -> Echo {
        Echo::builder(name).start().await
    }

    /// Requests so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Every request recorded so far, in order of arrival.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The last request recorded; panics when there is none.
    pub fn last_request(&self) -> Seen {
        self.requests()
            .pop()
            .unwrap_or_else(|| panic!("{} saw no request", self.name))
    }

    /// The next request not yet returned by this or [`try_next_request`](Self::try_next_request),
    /// waiting for it to arrive.
    pub async fn next_request(&self) -> Seen {
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(seen) = self.try_next_request() {
                return seen;
            }
            arrived.await;
        }
    }

    /// Like [`next_request`](Self::next_request), without waiting.
    pub fn try_next_request(&self) -> Option<Seen> {
        let mut read = self.read.lock().unwrap();
        let seen = self.shared.seen.lock().unwrap().get(*read).cloned()?;
        *read += 1;
        Some(seen)
    }

    /// Keeps the backend serving until the test's runtime ends, and returns its address (for tests
    /// that only need somewhere to send requests).
    pub fn detach(mut self) -> SocketAddr {
        self.task = None;
        self.addr
    }

    /// Lets every request held by [`hang_on`](EchoBuilder::hang_on) go on.
    pub fn release(&self) {
        self.shared.release.notify_waiters();
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

// === serving ===

type EchoBody = BoxBody<Bytes, Infallible>;

async fn serve_connection<I>(s: Arc<Shared>, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let (served_tx, mut served_rx) = tokio::sync::mpsc::channel::<()>(1);
    let svc = {
        let s = s.clone();
        service_fn(move |req| {
            let (s, served_tx) = (s.clone(), served_tx.clone());
            async move {
                let resp = respond(s, req).await;
                let _ = served_tx.try_send(());
                resp
            }
        })
    };
    match s.config.protocol {
        Protocol::Auto => {
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            b.http1().timer(TokioTimer::new());
            b.http2().timer(TokioTimer::new());
            let _ = b.serve_connection_with_upgrades(io, svc).await;
        }
        Protocol::Http1 => {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(io, svc)
                .with_upgrades()
                .await;
        }
        Protocol::Http2 => {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(s.config.max_concurrent_streams)
                .serve_connection(io, svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                Some(()) = served_rx.recv(), if s.config.goaway_after_first => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        }
    }
}

async fn respond(s: Arc<Shared>, mut req: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    if path.ends_with("/ws") && req.headers().contains_key("upgrade") {
        return Ok(websocket(&mut req));
    }
    let (parts, body) = req.into_parts();
    let collected = body.collect().await.ok();
    let trailers = collected
        .as_ref()
        .and_then(|c| c.trailers())
        .map(|t| {
            t.iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        serde_json::json!(String::from_utf8_lossy(v.as_bytes())),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let body = collected.map(|c| c.to_bytes()).unwrap_or_default();
    let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    let seen = Seen {
        service: s.config.name.clone(),
        pod: s.addr.to_string(),
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        target: parts.uri.path_and_query().map_or("", |pq| pq.as_str()).into(),
        proto: format!("{:?}", parts.version),
        authority: parts.uri.authority().map(|a| a.to_string()),
        scheme: parts.uri.scheme_str().map(str::to_owned),
        host: parts.headers.get("host").map(text),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), text(v)))
            .collect(),
        body: (body.len() <= ECHOED_BODY_MAX).then(|| String::from_utf8_lossy(&body).into_owned()),
        body_len: body.len(),
        trailers,
    };
    s.seen.lock().unwrap().push(seen.clone());
    s.arrived.notify_waiters();

    if s.config
        .hang_prefix
        .as_deref()
        .is_some_and(|p| path.starts_with(p))
    {
        s.release.notified().await;
    }
    let mut delay = s.config.delay;
    if let Some((_, ms)) = path.split_once("/sleep/") {
        delay += Duration::from_millis(ms.parse().unwrap_or(0));
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = path
        .split_once("/status/")
        .and_then(|(_, n)| n.parse().ok())
        .and_then(|n| StatusCode::from_u16(n).ok())
        .unwrap_or(s.config.status);

    let mut resp = if let Some((_, n)) = path.split_once("/bytes/") {
        Response::new(XBytes(n.parse().unwrap_or(0)).boxed())
    } else if path.ends_with("/upload") {
        Response::new(Full::new(Bytes::from(body.len().to_string())).boxed())
    } else {
        let json = Bytes::from(seen.to_json().to_string());
        let body = if s.config.trailers.is_empty() {
            Full::new(json).boxed()
        } else {
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                Ok(Frame::data(json)),
                Ok(Frame::trailers(s.config.trailers.clone())),
            ];
            BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)))
        };
        let mut resp = Response::new(body);
        resp.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        resp
    };
    *resp.status_mut() = status;
    for (k, v) in &s.config.headers {
        resp.headers_mut().append(k.clone(), v.clone());
    }
    Ok(resp)
}

/// Answers a WebSocket handshake and echoes the connection's text and binary messages.
fn websocket(req: &mut Request<Incoming>) -> Response<EchoBody> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .cloned()
        .unwrap_or(HeaderValue::from_static(""));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let (mut tx, mut rx) = ws.split();
        while let Some(Ok(msg)) = rx.next().await {
            if msg.is_text() || msg.is_binary() {
                if tx.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(Full::default().boxed())
        .unwrap()
}

/// N bytes of `x` in 64 KiB frames, with an exact size (so HTTP/1.1 sends a Content-Length).
struct XBytes(usize);

impl Body for XBytes {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        let n = self.0.min(FRAME);
        self.0 -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.0 == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0 as u64)
    }
}
