//! HTTP/2 to backends (h2c with prior knowledge, or over TLS with ALPN `h2`), on hyper's HTTP/2
//! client.
//!
//! Each worker keeps its HTTP/2 connections in its own state (`state`), by endpoint address,
//! protocol and TLS settings. A connection is an [`H2Slot`]: the hyper sender, shared by every
//! request of the worker to that endpoint as one stream each, and a count of the streams open on
//! it. A request takes a stream on the first connection with room (fewer streams than the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` as the connection knows it at that moment, and at most
//! [`MAX_STREAMS_PER_CONN`]); when none has room, a new slot is made, and the requests that arrive
//! while it connects wait for that one connect. Until the server's SETTINGS arrive, a new
//! connection opens one stream at a time (the others wait in h2, never beyond a limit the server
//! has not told yet, which it would answer with `REFUSED_STREAM`); a burst larger than the
//! server's limit in that first round trip waits for streams to end on that connection.
//! A connection the server closed or sent GOAWAY on is dropped from the pool, and the requests
//! that had not been handed to it yet are sent again on a new one. The connection itself runs as
//! a task on the worker's runtime (hyper's HTTP/2 client needs one); it ends when the server
//! closes it, or when the pool has dropped it and its last stream ended.
//!
//! Unlike the HTTP/1.1 codec, HTTP/2 framing is hyper's: request and response bodies stream with
//! flow control, and trailers pass both ways (gRPC's status is in the response trailers).

use std::{
    future::{poll_fn, Future},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{
    header::{self, HeaderName, HeaderValue},
    uri::{Authority, Scheme},
    Request, Uri, Version,
};
use http_body::{Body, Frame, SizeHint};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{
    body::{BodyError, RequestBody},
    error::ProxyError,
};

/// The most streams one connection carries at a time, whatever the server allows; beyond it
/// another connection is opened.
pub const MAX_STREAMS_PER_CONN: usize = 100;

/// The streams h2 opens at once before the server's SETTINGS say how many it allows (h2 then
/// takes the server's value, or no limit when the server sets none). A server that really allows
/// only one is served as if it had not said yet: streams wait in h2 rather than on a sibling.
const INITIAL_SEND_STREAMS: usize = 1;

/// The most response bytes one stream may have received from the backend and not yet passed on
/// (its flow-control window): a client that reads slowly holds back the backend after this much,
/// as an HTTP/1.1 response is held back by its socket buffer. hyper's default is 2 MiB.
const STREAM_WINDOW: u32 = 256 * 1024;
/// The same for the whole connection, shared by its streams (hyper's default: 5 MiB).
const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;
/// The largest response head (and trailer section) accepted, as for HTTP/1.1 (`h1`).
const MAX_HEADER_LIST: u32 = 64 * 1024;

/// Ping an HTTP/2 connection this often, and close it when a ping is not answered within
/// [`KEEPALIVE_TIMEOUT`]: a backend that vanished without a FIN is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The hyper sender of one connection.
pub type H2Sender = http2::SendRequest<H2Body>;

/// A new HTTP/2 connection: its sender, and a view of the connection (driven by its own task)
/// for the server's settings.
pub struct Connected {
    sender: H2Sender,
    /// Gone once the connection's task has ended.
    settings: Weak<dyn PeerSettings>,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected").finish_non_exhaustive()
    }
}

/// What a slot reads of its connection while the connection's task drives it.
trait PeerSettings: Send + Sync {
    /// The server's `SETTINGS_MAX_CONCURRENT_STREAMS` as of now.
    fn max_send_streams(&self) -> usize;
}

type Connection<IO> = http2::Connection<TokioIo<IO>, H2Body, TokioExecutor>;

impl<IO> PeerSettings for Mutex<Connection<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn max_send_streams(&self) -> usize {
        // The lock is never held across an await: the connection's task takes it only while it
        // polls, on this same thread.
        self.lock().map_or(0, |c| c.current_max_send_streams())
    }
}

/// One HTTP/2 connection of a worker to an endpoint (connected or still connecting), shared by
/// the worker's requests.
#[derive(Debug, Default)]
pub struct H2Slot {
    sender: tokio::sync::OnceCell<Connected>,
    /// Streams taken ([`H2Stream`]s alive): requests sent or about to be, whose response has not
    /// ended.
    streams: AtomicUsize,
    /// The connect failed, or the connection refused a request: no new stream goes here.
    broken: AtomicBool,
}

impl H2Slot {
    /// Whether no new stream may go to this connection any more: it failed to connect, or it
    /// closed (the server closed it or sent GOAWAY).
    pub fn is_dead(&self) -> bool {
        self.broken.load(Ordering::Relaxed) || self.sender.get().is_some_and(|c| c.sender.is_closed())
    }

    /// Whether another stream may go to this connection now: fewer streams than the server allows
    /// (as the connection knows it now) and than [`MAX_STREAMS_PER_CONN`].
    pub fn has_room(&self) -> bool {
        if self.is_dead() {
            return false;
        }
        let allowed = match self.sender.get().map(|c| c.settings.upgrade()) {
            Some(Some(settings)) => match settings.max_send_streams() {
                // The server's SETTINGS are not in yet: its streams wait in h2 meanwhile.
                INITIAL_SEND_STREAMS => MAX_STREAMS_PER_CONN,
                n => n,
            },
            // The connection's task has ended.
            Some(None) => 0,
            // Still connecting: the requests that come meanwhile wait for this connect.
            None => MAX_STREAMS_PER_CONN,
        };
        self.streams.load(Ordering::Relaxed) < allowed.min(MAX_STREAMS_PER_CONN)
    }

    /// Streams open (or about to be) on this connection.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// Takes a stream on this connection; it counts until the returned guard is dropped.
    pub fn take_stream(self: &Arc<Self>) -> H2Stream {
        self.streams.fetch_add(1, Ordering::Relaxed);
        H2Stream(self.clone())
    }

    /// No new stream goes to this connection (the requests it holds carry on).
    pub fn set_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    /// The connection's sender: the one already made, or the one `connect` makes. Requests that
    /// ask while another is connecting wait for that connect rather than making their own; when
    /// it fails, they fail too.
    pub async fn sender<F, Fut>(&self, connect: F) -> Result<H2Sender, ProxyError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Connected, ProxyError>>,
    {
        let sender = self
            .sender
            .get_or_try_init(|| async {
                if self.broken.load(Ordering::Relaxed) {
                    return Err(None);
                }
                connect().await.map_err(|e| {
                    self.set_broken();
                    Some(e)
                })
            })
            .await;
        match sender {
            Ok(c) => Ok(c.sender.clone()),
            Err(Some(e)) => Err(e),
            Err(None) => Err(ProxyError::Upstream(
                "the HTTP/2 connection it waited for failed".into(),
            )),
        }
    }
}

/// One stream taken on an [`H2Slot`], released when dropped.
#[derive(Debug)]
pub struct H2Stream(Arc<H2Slot>);

impl H2Stream {
    pub fn slot(&self) -> &Arc<H2Slot> {
        &self.0
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The HTTP/2 handshake on a fresh connection (TCP, or TLS that negotiated `h2`). The connection
/// is driven by a task on the current runtime, which owns it: once the task ends (the server
/// closed the connection, or every sender is gone and the last stream ended), the connection is
/// dropped and its sender reports closed.
pub async fn handshake<IO>(io: IO) -> Result<Connected, hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_max_send_streams(INITIAL_SEND_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    let (sender, conn) = builder.handshake::<_, H2Body>(TokioIo::new(io)).await?;
    let conn: Arc<Mutex<Connection<IO>>> = Arc::new(Mutex::new(conn));
    let settings: Weak<dyn PeerSettings> = Arc::downgrade(&conn) as Weak<Mutex<Connection<IO>>>;
    tokio::spawn(async move {
        let done = poll_fn(|cx| match conn.lock() {
            Ok(mut c) => Pin::new(&mut *c).poll(cx),
            Err(_) => Poll::Ready(Ok(())),
        })
        .await;
        if let Err(e) = done {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
        }
    });
    Ok(Connected { sender, settings })
}

static TE: HeaderName = header::TE;
static TRAILERS: HeaderValue = HeaderValue::from_static("trailers");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Turns a request made for an HTTP/1.1 upstream into its HTTP/2 form (RFC 9113 8.3.1): the
/// `Host` becomes `:authority` (with `:scheme` `http` or `https`), connection-specific headers go
/// (HTTP/2 forbids them, and hyper would refuse the request), and `TE: trailers` is sent, as
/// nginx's gRPC proxy does (gRPC servers expect it; it only says that trailers are welcome).
pub fn into_h2<B>(req: Request<B>, tls: bool) -> Request<B> {
    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    for name in [
        &header::CONNECTION,
        &header::UPGRADE,
        &header::TRANSFER_ENCODING,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
    ] {
        headers.remove(name);
    }
    headers.insert(&TE, TRAILERS.clone());
    let authority = headers
        .get(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok());
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let absolute = authority.and_then(|authority| {
        Uri::builder()
            .scheme(if tls { Scheme::HTTPS } else { Scheme::HTTP })
            .authority(authority)
            .path_and_query(path)
            .build()
            .ok()
    });
    match absolute {
        Some(uri) => {
            parts.uri = uri;
            parts.headers.remove(header::HOST);
            parts.version = Version::HTTP_2;
        }
        // A Host that is no authority (or a target that cannot be made absolute): sent as it is,
        // with `:scheme` `http` and the Host as a header (h2 does this for HTTP/1.1 requests).
        None => parts.version = Version::HTTP_11,
    }
    Request::from_parts(parts, body)
}

/// A request body on its way to an HTTP/2 backend. hyper only logs a body that fails while it is
/// sent, and resets the stream; this keeps the reason, so that a body cut off at the route's
/// limit is still a 413 and a client that broke off is still its own 400, not a 502.
#[derive(Debug)]
pub struct H2Body {
    inner: RequestBody,
    /// Where a failure is kept; `None` for a body that had already ended (it cannot fail).
    failure: Option<Arc<Mutex<Option<ProxyError>>>>,
}

impl H2Body {
    pub fn new(inner: RequestBody) -> Self {
        let failure = (!inner.is_end_stream()).then(Arc::default);
        Self { inner, failure }
    }

    /// The body back, for an attempt on another endpoint before any of it was sent.
    pub fn into_inner(self) -> RequestBody {
        self.inner
    }

    /// Where this body's failure will be kept, to be read after the exchange failed.
    pub fn failure(&self) -> Option<Arc<Mutex<Option<ProxyError>>>> {
        self.failure.clone()
    }
}

/// What a failed request body means for the client.
pub fn body_failure(e: &BodyError) -> ProxyError {
    match e {
        BodyError::TooLarge(max) => ProxyError::BodyTooLarge(*max),
        BodyError::Client(e) => ProxyError::ClientBody(e.to_string()),
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Err(e))), Some(failure)) = (&polled, &self.failure) {
            if let Ok(mut slot) = failure.lock() {
                slot.get_or_insert_with(|| body_failure(e));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_take_their_http2_form() {
        let req = Request::post("/api/v1?q=1")
            .header("host", "grpc.example:8080")
            .header("connection", "keep-alive")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .header("transfer-encoding", "chunked")
            .header("upgrade", "websocket")
            .header("te", "gzip")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let req = into_h2(req, false);
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.uri(), "http://grpc.example:8080/api/v1?q=1");
        let h = req.headers();
        for gone in [
            "host",
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["content-type"], "application/grpc");

        let req = into_h2(Request::get("/").header("host", "h").body(()).unwrap(), true);
        assert_eq!(req.uri(), "https://h/");
    }

    #[test]
    fn a_host_that_is_no_authority_stays_a_header() {
        let req = Request::get("/x")
            .header("host", HeaderValue::from_bytes(b"bad host").unwrap())
            .body(())
            .unwrap();
        let req = into_h2(req, false);
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.uri(), "/x");
        assert_eq!(req.headers()["host"], "bad host");
        assert_eq!(req.headers()["te"], "trailers");
    }

    #[test]
    fn slots_count_streams_and_refuse_them_when_full_or_broken() {
        let slot = Arc::new(H2Slot::default());
        assert!(slot.has_room() && !slot.is_dead());
        let streams: Vec<H2Stream> = (0..MAX_STREAMS_PER_CONN).map(|_| slot.take_stream()).collect();
        assert_eq!(slot.streams(), MAX_STREAMS_PER_CONN);
        assert!(!slot.has_room(), "full");
        drop(streams);
        assert_eq!(slot.streams(), 0);
        assert!(slot.has_room());
        slot.set_broken();
        assert!(slot.is_dead() && !slot.has_room());
    }

    #[tokio::test]
    async fn waiters_share_one_connect_and_its_failure() {
        let slot = Arc::new(H2Slot::default());
        let err = slot
            .sender(|| async {
                Err(ProxyError::Connect {
                    addr: "127.0.0.1:1".parse().unwrap(),
                    reason: "refused".into(),
                })
            })
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Connect { .. }));
        assert!(slot.is_dead());
        // A later request on the same slot does not connect again.
        let err = slot
            .sender(|| async { panic!("connected twice") })
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Upstream(_)));
    }
}
