//! A lean HTTP/1.1 client codec for upstream connections.
//!
//! hyper's client runs every connection as a spawned task and hands it requests through a channel, so
//! each request costs a cross-task wake-up and every idle pooled connection keeps a task alive. Here the
//! request is written and the response head and body are read straight from the socket by whoever polls
//! [`H1Conn::send`] and then the [`H1Body`]. An idle connection is a plain value (a socket plus a
//! buffer) that a pool can hold without any task; the body hands it back through a callback once the
//! response has been read to its end.
//!
//! The codec has no timeouts: callers wrap `send` (and the body) in their own.
//!
//! It runs on any [`Io`]: a plain `TcpStream` (the default type parameter everywhere, and the code
//! it compiles to is the same as if it were the only one) or a boxed client TLS stream.

use std::{
    error::Error as StdError,
    fmt,
    future::{poll_fn, Future},
    io,
    mem::MaybeUninit,
    net::SocketAddr,
    pin::{pin, Pin},
    task::{ready, Context, Poll},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{
    header, request, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version,
};
use http_body::{Body, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Read buffer size. Reads ask for at least this much room; more is reserved only for large heads.
const READ_BUF: usize = 16 * 1024;
/// Below this much spare room the buffer is grown before a read, so reads never become tiny.
const MIN_READ_ROOM: usize = 4 * 1024;
/// Upper bound on a response head (and on a chunked body's trailer section).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// Upper bound on one chunk-size line including extensions; extensions are ignored, but must not let a
/// peer make us buffer without bound.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// A connection the codec can run on: a byte stream to one peer that can tell, while idle,
/// whether it is still usable.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether written bytes may wait in a buffer until flushed (TLS records do). The codec flushes
    /// only when this is true, so a plain socket pays nothing for it.
    const NEEDS_FLUSH: bool;

    fn peer_addr(&self) -> io::Result<SocketAddr>;

    /// Whether an idle connection is still open and nothing arrived on it that nobody asked for.
    /// Never blocks.
    fn is_idle_usable(&mut self) -> bool;
}

/// A client TLS connection, boxed so that a connection (and a response body that holds it) stays
/// as small as a plain one when moved in and out of a pool.
pub type TlsIo = Box<tokio_rustls::client::TlsStream<TcpStream>>;

impl Io for TcpStream {
    const NEEDS_FLUSH: bool = false;

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::peer_addr(self)
    }

    /// Costs no system call in the usual case: tokio's readiness says whether anything (data or a
    /// FIN) arrived since the connection went idle, and only then does a non-blocking one-byte
    /// `MSG_PEEK` tell which.
    fn is_idle_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if self.poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        let mut probe = [MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(&*self).peek(&mut probe) {
            // Readiness was stale: nothing to read and no FIN.
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            // 0 is a FIN; anything else is data a server has no business sending on an idle connection.
            Ok(_) => false,
        }
    }
}

impl Io for TlsIo {
    const NEEDS_FLUSH: bool = true;

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().0.peer_addr()
    }

    /// As for a plain socket, nothing arrived is the usual case and costs no system call. When
    /// something did, it may be TLS records that carry no data (a TLS 1.3 session ticket, a key
    /// update), so rustls reads them: only application data, a `close_notify`, a FIN or an error
    /// make the connection unusable.
    fn is_idle_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if self.get_ref().0.poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        // Pending: whatever arrived was consumed by rustls and the socket is empty again. Ready
        // with a byte is data nobody asked for; ready with none is the end of the stream.
        Pin::new(&mut **self).poll_read(&mut cx, &mut buf).is_pending()
    }
}

/// One upstream HTTP/1.1 connection, idle or in use.
pub struct H1Conn<IO = TcpStream> {
    io: IO,
    /// Bytes read from the socket and not yet consumed. Empty (and unallocated) while idle.
    buf: BytesMut,
    peer: SocketAddr,
    /// Whether a request was sent on this connection before: only then can an early close mean that
    /// the server timed the idle connection out, which makes a retry elsewhere safe.
    used: bool,
}

impl<IO> fmt::Debug for H1Conn<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H1Conn")
            .field("peer", &self.peer)
            .field("used", &self.used)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl<IO: Io> H1Conn<IO> {
    pub fn new(io: IO) -> Self {
        let peer = io
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        H1Conn {
            io,
            buf: BytesMut::new(),
            peer,
            used: false,
        }
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Whether a pooled idle connection still looks usable: the peer has not closed it, reset it or
    /// sent bytes nobody asked for. Never blocks (see [`Io::is_idle_usable`]).
    ///
    /// A close that tokio's reactor has not seen yet (it arrived since the reactor last turned,
    /// microseconds ago on a busy worker) is still possible; `send` reports it as
    /// [`SendError::Stale`] and the caller retries a request without body elsewhere.
    #[inline]
    pub fn is_reusable(&mut self) -> bool {
        self.buf.is_empty() && self.io.is_idle_usable()
    }

    /// Writes the request (head, then the body streamed) and reads until the final response head
    /// (1xx other than 101 are skipped). The returned body streams from this connection; see
    /// [`H1Body::on_reusable`] for getting the connection back.
    #[allow(clippy::result_large_err)] // see `SendError`
    pub async fn send<B>(mut self, req: Request<B>) -> Result<Response<H1Body<IO>>, SendError<B>>
    where
        B: Body<Data = Bytes> + Unpin + Send,
        B::Error: Into<BoxError>,
    {
        let reused = std::mem::replace(&mut self.used, true);
        let (mut parts, mut body) = req.into_parts();
        let framing = match request_framing(&mut parts, body.is_end_stream()) {
            Ok(f) => f,
            Err(e) => return Err(e.into()),
        };
        let head = encode_head(&parts, framing);
        let req_close = has_token(&parts.headers, "close");

        // A failed write does not end the exchange: a server that rejects a request early (a 413, a
        // 401) often closes while the body is still being sent, and its response is what the client
        // should see. The error is reported only if no response can be read.
        let mut body_taken = false;
        let write_err = match framing {
            ReqFraming::Empty { .. } => match self.io.write_all(&head).await {
                Ok(()) if IO::NEEDS_FLUSH => self.io.flush().await.err(),
                written => written.err(),
            },
            _ => match write_body(&mut self.io, head, &mut body, framing, &mut body_taken).await {
                Ok(()) => None,
                Err(WriteFail::Io(e)) => Some(e),
                Err(WriteFail::Body(e)) => return Err(SendError::Body(e)),
            },
        };

        let mut got_any = false;
        let head = loop {
            match parse_head(&mut self.buf) {
                Ok(Some(h)) if h.status.is_informational() && h.status != StatusCode::SWITCHING_PROTOCOLS => {
                    continue
                }
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(msg) => return Err(SendError::Protocol(msg)),
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(SendError::Protocol("response head too large"));
            }
            if self.buf.capacity() - self.buf.len() < MIN_READ_ROOM {
                self.buf.reserve(READ_BUF.max(self.buf.len()));
            }
            let closed_err = match self.io.read_buf(&mut self.buf).await {
                Ok(0) => io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed before responding"),
                Ok(_) => {
                    got_any = true;
                    continue;
                }
                Err(e) if is_closed(&e) => e,
                Err(e) => return Err(SendError::Io(e)),
            };
            // Closed before a single response byte on a connection that served a request before:
            // most likely the server's idle timeout raced with us. With no body bytes consumed the
            // request is intact and can go to another connection.
            if reused && !got_any && !body_taken {
                return Err(SendError::Stale(Request::from_parts(parts, body)));
            }
            return Err(SendError::Io(match write_err {
                Some(e) if !got_any => e,
                _ => closed_err,
            }));
        };

        let Head {
            version,
            status,
            mut headers,
        } = head;
        let keep_alive = write_err.is_none()
            && !req_close
            && !has_token(&headers, "close")
            && (version == Version::HTTP_11 || has_token(&headers, "keep-alive"));
        let mut must_close = false;
        let kind = if status == StatusCode::SWITCHING_PROTOCOLS {
            Kind::Upgrade
        } else if parts.method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Kind::Done
        } else if headers.contains_key(header::TRANSFER_ENCODING) {
            // RFC 9112 6.3: Transfer-Encoding overrides Content-Length, and a message carrying both
            // may be an attempt at request smuggling, so the connection is not trusted afterwards. The
            // bogus length is removed so that nobody forwards it.
            if headers.remove(header::CONTENT_LENGTH).is_some() {
                must_close = true;
            }
            if final_coding_is_chunked(&headers) {
                Kind::Chunked(Chunk::Size)
            } else {
                Kind::Eof
            }
        } else {
            match parse_content_length(&headers) {
                Err(()) => return Err(SendError::Protocol("invalid content-length in response")),
                Ok(Some(0)) => Kind::Done,
                Ok(Some(n)) => Kind::Length(n),
                Ok(None) => Kind::Eof,
            }
        };
        let reusable = keep_alive && !must_close && !matches!(kind, Kind::Eof | Kind::Upgrade);

        let mut res = Response::new(());
        *res.status_mut() = status;
        *res.version_mut() = version;
        *res.headers_mut() = headers;
        let mut body = H1Body {
            conn: Some(self),
            kind,
            reusable,
            on_reusable: None,
        };
        if matches!(body.kind, Kind::Done) {
            body.finish();
        }
        Ok(res.map(|()| body))
    }

    /// Grows the buffer if it is nearly full and reads once into it.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < MIN_READ_ROOM {
            self.buf.reserve(READ_BUF);
        }
        // `read_buf` keeps no state between polls, so a fresh future per poll is fine (and lets the
        // read go into the spare capacity without zeroing it first).
        pin!(self.io.read_buf(&mut self.buf)).poll(cx)
    }
}

/// Why a send failed.
// `Stale` carries the request inline (as hyper's `TrySendError` does): it is built once per failed
// request, and boxing it would cost an allocation on exactly the path that retries.
#[allow(clippy::large_enum_variant)]
pub enum SendError<B> {
    /// The connection turned out closed before any response byte arrived, and the request can be
    /// sent again elsewhere: it was reused from a pool and no body bytes were taken from the request.
    Stale(Request<B>),
    /// Reading or writing the socket failed.
    Io(io::Error),
    /// The response head was malformed, or the request's own framing headers were.
    Protocol(&'static str),
    /// The request body failed, or did not match its Content-Length.
    Body(BoxError),
}

impl<B> SendError<B> {
    /// The request back, for a retry on another connection, when the error is [`SendError::Stale`].
    pub fn into_request(self) -> Option<Request<B>> {
        match self {
            SendError::Stale(r) => Some(r),
            _ => None,
        }
    }

    pub fn is_stale(&self) -> bool {
        matches!(self, SendError::Stale(_))
    }
}

impl<B> fmt::Debug for SendError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Stale(_) => f.write_str("Stale(..)"),
            SendError::Io(e) => f.debug_tuple("Io").field(e).finish(),
            SendError::Protocol(m) => f.debug_tuple("Protocol").field(m).finish(),
            SendError::Body(e) => f.debug_tuple("Body").field(e).finish(),
        }
    }
}

impl<B> fmt::Display for SendError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Stale(_) => {
                f.write_str("upstream connection was closed before the request was answered")
            }
            SendError::Io(e) => write!(f, "upstream i/o: {e}"),
            SendError::Protocol(m) => write!(f, "upstream protocol error: {m}"),
            SendError::Body(e) => write!(f, "request body: {e}"),
        }
    }
}

impl<B> StdError for SendError<B> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            SendError::Io(e) => Some(e),
            SendError::Body(e) => Some(&**e),
            _ => None,
        }
    }
}

/// How the request body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ReqFraming {
    /// No body bytes; `zero_length` asks for an explicit `content-length: 0`.
    Empty {
        zero_length: bool,
    },
    Length(u64),
    Chunked,
}

/// Why the request's own framing headers cannot be used.
enum FramingError {
    InvalidLength,
    EmptyButLength,
}

impl<B> From<FramingError> for SendError<B> {
    fn from(e: FramingError) -> Self {
        match e {
            FramingError::InvalidLength => SendError::Protocol("invalid content-length in request"),
            FramingError::EmptyButLength => {
                SendError::Body("request body shorter than its content-length".into())
            }
        }
    }
}

fn request_framing(parts: &mut request::Parts, body_is_empty: bool) -> Result<ReqFraming, FramingError> {
    let length = parse_content_length(&parts.headers).map_err(|()| FramingError::InvalidLength)?;
    // The body is framed here, whatever the caller left behind.
    parts.headers.remove(header::TRANSFER_ENCODING);
    Ok(if body_is_empty {
        match length {
            Some(0) => ReqFraming::Empty { zero_length: false },
            Some(_) => return Err(FramingError::EmptyButLength),
            // A server reading a POST without any framing would have to wait for a close.
            None => ReqFraming::Empty {
                zero_length: matches!(parts.method, Method::POST | Method::PUT | Method::PATCH),
            },
        }
    } else {
        match length {
            Some(n) => ReqFraming::Length(n),
            None => ReqFraming::Chunked,
        }
    })
}

/// The request head in one buffer, so that a bodiless request is one write.
fn encode_head(parts: &request::Parts, framing: ReqFraming) -> BytesMut {
    let target = if parts.method == Method::CONNECT {
        parts.uri.authority().map(|a| a.as_str())
    } else {
        parts.uri.path_and_query().map(|p| p.as_str())
    };
    let target = target.unwrap_or("/");
    let needs_slash = parts.method != Method::CONNECT && !target.starts_with('/') && target != "*";
    let mut cap = parts.method.as_str().len() + target.len() + 64;
    for (name, value) in &parts.headers {
        cap += name.as_str().len() + value.len() + 4;
    }
    let mut b = BytesMut::with_capacity(cap);
    b.put_slice(parts.method.as_str().as_bytes());
    b.put_u8(b' ');
    if needs_slash {
        b.put_u8(b'/');
    }
    b.put_slice(target.as_bytes());
    b.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        b.put_slice(name.as_str().as_bytes());
        b.put_slice(b": ");
        b.put_slice(value.as_bytes());
        b.put_slice(b"\r\n");
    }
    match framing {
        ReqFraming::Chunked => b.put_slice(b"transfer-encoding: chunked\r\n"),
        ReqFraming::Empty { zero_length: true } => b.put_slice(b"content-length: 0\r\n"),
        _ => {}
    }
    b.put_slice(b"\r\n");
    b
}

enum WriteFail {
    Io(io::Error),
    Body(BoxError),
}

/// Streams the head and body. Whatever the body has ready is written together with the bytes before
/// it (the head, chunk framing) in one vectored write; only when the body has nothing ready are the
/// pending bytes flushed alone, so the server sees the head without waiting for a slow client.
async fn write_body<IO: Io, B>(
    io: &mut IO,
    head: BytesMut,
    body: &mut B,
    framing: ReqFraming,
    taken: &mut bool,
) -> Result<(), WriteFail>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let chunked = framing == ReqFraming::Chunked;
    let mut remaining = match framing {
        ReqFraming::Length(n) => n,
        _ => 0,
    };
    let mut pending = head;
    let mut terminated = false;
    loop {
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
            Poll::Ready(f) => f,
            Poll::Pending => {
                if !pending.is_empty() {
                    io.write_all_buf(&mut pending).await.map_err(WriteFail::Io)?;
                }
                if IO::NEEDS_FLUSH {
                    io.flush().await.map_err(WriteFail::Io)?;
                }
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        let frame = match frame {
            None => break,
            Some(Err(e)) => return Err(WriteFail::Body(e.into())),
            Some(Ok(f)) => f,
        };
        let data = match frame.into_data() {
            Ok(d) => d,
            Err(frame) => {
                // Trailers can only be sent in chunked framing; with a Content-Length they are dropped.
                if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                    pending.put_slice(b"0\r\n");
                    for (name, value) in &trailers {
                        pending.put_slice(name.as_str().as_bytes());
                        pending.put_slice(b": ");
                        pending.put_slice(value.as_bytes());
                        pending.put_slice(b"\r\n");
                    }
                    pending.put_slice(b"\r\n");
                    terminated = true;
                }
                continue;
            }
        };
        // An empty chunk would read as the last chunk.
        if data.is_empty() || terminated {
            continue;
        }
        *taken = true;
        if chunked {
            put_hex_line(&mut pending, data.len());
        } else {
            if data.len() as u64 > remaining {
                return Err(WriteFail::Body(
                    "request body longer than its content-length".into(),
                ));
            }
            remaining -= data.len() as u64;
        }
        let end = body.is_end_stream();
        let tail: &'static [u8] = match (chunked, end) {
            (true, true) => b"\r\n0\r\n\r\n",
            (true, false) => b"\r\n",
            (false, _) => b"",
        };
        terminated |= chunked && end;
        let mut out = (&mut pending).chain(data).chain(tail);
        io.write_all_buf(&mut out).await.map_err(WriteFail::Io)?;
        pending.clear();
        if end {
            break;
        }
    }
    if remaining != 0 {
        return Err(WriteFail::Body(
            "request body shorter than its content-length".into(),
        ));
    }
    if chunked && !terminated {
        pending.put_slice(b"0\r\n\r\n");
    }
    if !pending.is_empty() {
        io.write_all_buf(&mut pending).await.map_err(WriteFail::Io)?;
    }
    if IO::NEEDS_FLUSH {
        io.flush().await.map_err(WriteFail::Io)?;
    }
    Ok(())
}

fn put_hex_line(b: &mut BytesMut, n: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    b.put_slice(&digits[i..]);
    b.put_slice(b"\r\n");
}

/// Errors that mean the peer is gone rather than that something is broken locally.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe
    )
}

struct Head {
    version: Version,
    status: StatusCode,
    headers: HeaderMap,
}

/// Parses a complete response head off the front of `buf`, or returns `None` if more bytes are needed.
/// Header values are slices of the read buffer, not copies.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, &'static str> {
    if buf.is_empty() {
        return Ok(None);
    }
    // (name start, name end, value start, value end) of each header, relative to the buffer.
    let mut spans = [(0usize, 0usize, 0usize, 0usize); MAX_HEADERS];
    let (len, version, code, count) = {
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut raw);
        let len = match res.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err("too many response headers"),
            Err(_) => return Err("malformed response head"),
        };
        let base = buf.as_ptr() as usize;
        let offset = |s: &[u8]| s.as_ptr() as usize - base;
        for (span, h) in spans.iter_mut().zip(res.headers.iter()) {
            let (n, v) = (offset(h.name.as_bytes()), offset(h.value));
            *span = (n, n + h.name.len(), v, v + h.value.len());
        }
        let version = match res.version {
            Some(1) => Version::HTTP_11,
            Some(0) => Version::HTTP_10,
            _ => return Err("unsupported response version"),
        };
        (len, version, res.code.unwrap_or(0), res.headers.len())
    };
    let status = StatusCode::from_u16(code).map_err(|_| "invalid response status")?;
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(count);
    for &(ns, ne, vs, ve) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[ns..ne]).map_err(|_| "invalid response header name")?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| "invalid response header value")?;
        headers.append(name, value);
    }
    Ok(Some(Head {
        version,
        status,
        headers,
    }))
}

/// Whether a `Connection` header lists `token`.
fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
}

fn final_coding_is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(trim_ows)
        .rfind(|t| !t.is_empty())
        .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
}

/// The message's Content-Length: one decimal, or a list of identical ones (RFC 9110 8.6). `Err` for
/// anything else, which the caller must treat as unrecoverable framing.
fn parse_content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = parse_decimal(trim_ows(part)).ok_or(())?;
            match length {
                None => length = Some(n),
                Some(m) if m == n => {}
                Some(_) => return Err(()),
            }
        }
    }
    Ok(length)
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// Parses a chunk-size line (`hex [BWS ; extensions] CRLF`) at the front of `buf`: the line's length
/// and the size, or `None` if the line is not complete yet. Strict on purpose, since lenient chunk
/// parsing is a classic smuggling vector: hex digits only (no sign, no `0x`), no overflow, CRLF only.
/// Extensions are skipped unread.
fn parse_chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, &'static str> {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err("chunk size line not ended by CRLF");
    }
    let line = &buf[..lf - 1];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("invalid chunk size");
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or("chunk size overflows")?;
    }
    let rest = &line[digits..];
    let rest = &rest[rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count()..];
    if !(rest.is_empty() || rest[0] == b';') || rest.contains(&b'\r') {
        return Err("invalid chunk size");
    }
    Ok(Some((lf + 1, size)))
}

/// Where the response body stands.
enum Kind {
    /// This many bytes are left (never 0: a finished body is `Done`).
    Length(u64),
    Chunked(Chunk),
    /// Delimited by the server closing the connection.
    Eof,
    /// Ended; `conn` is either gone or waiting for [`H1Body::on_reusable`].
    Done,
    /// A 101 response: the connection belongs to [`H1Body::into_upgraded`].
    Upgrade,
}

enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

/// A response body streaming from its connection.
///
/// Chunked trailers are yielded as a trailers frame (empty trailer sections yield none). Framing
/// errors and early EOF are `io::Error`s (`InvalidData`, `UnexpectedEof`) and drop the connection.
pub struct H1Body<IO = TcpStream> {
    conn: Option<H1Conn<IO>>,
    kind: Kind,
    /// Whether the connection may carry another request once this body has ended.
    reusable: bool,
    on_reusable: Option<Box<dyn FnOnce(H1Conn<IO>) + Send>>,
}

impl<IO> fmt::Debug for H1Body<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H1Body")
            .field("conn", &self.conn)
            .field("reusable", &self.reusable)
            .finish_non_exhaustive()
    }
}

impl<IO: Io> H1Body<IO> {
    /// Sets what happens to the connection once the body has ended cleanly and the connection may be
    /// reused: `f` gets it, from inside whichever poll saw the end (no task, no channel). If the body
    /// has already ended (empty bodies end before `send` returns), `f` runs now. If the body is
    /// dropped early, fails, or the connection cannot be reused, `f` is dropped uncalled and the
    /// connection closed.
    pub fn on_reusable(&mut self, f: Box<dyn FnOnce(H1Conn<IO>) + Send>) {
        if matches!(self.kind, Kind::Done) {
            if let Some(conn) = self.conn.take() {
                f(conn);
            }
        } else {
            self.on_reusable = Some(f);
        }
    }

    /// The connection, once the body has ended cleanly and the connection may carry another
    /// request; `None` before that, or when it cannot be reused. The alternative to
    /// [`H1Body::on_reusable`] for a caller that polls the body itself (no closure to box).
    pub fn take_reusable(&mut self) -> Option<H1Conn<IO>> {
        if matches!(self.kind, Kind::Done) && self.on_reusable.is_none() {
            self.conn.take()
        } else {
            None
        }
    }

    /// Whether the connection will be offered to [`H1Body::on_reusable`] if the body is read to its end.
    pub fn is_keep_alive(&self) -> bool {
        self.reusable
    }

    /// For a 101 response: the raw connection for tunnelling, which first yields any bytes the server
    /// sent right after the 101 head. `None` for any other response.
    pub fn into_upgraded(mut self) -> Option<Upgraded<IO>> {
        if !matches!(self.kind, Kind::Upgrade) {
            return None;
        }
        let conn = self.conn.take()?;
        Some(Upgraded {
            io: conn.io,
            leftover: conn.buf.freeze(),
        })
    }

    /// The body ended cleanly: hand the connection on, or keep it for a later `on_reusable`, or close it.
    fn finish(&mut self) {
        self.kind = Kind::Done;
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // Bytes past the end of the response mean the server and we disagree about framing.
        if !self.reusable || !conn.buf.is_empty() {
            return;
        }
        // The buffer stays with the connection, so the next response is read without an allocation
        // (BytesMut reclaims the space once the chunks handed out are dropped). One that grew for a
        // large head is given up: idle pools should hold little.
        if conn.buf.capacity() > 4 * READ_BUF {
            conn.buf = BytesMut::new();
        }
        match self.on_reusable.take() {
            Some(f) => f(conn),
            None => self.conn = Some(conn),
        }
    }

    fn fail(&mut self, kind: io::ErrorKind, msg: &'static str) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.fail_with(io::Error::new(kind, msg))
    }

    fn fail_with(&mut self, e: io::Error) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.kind = Kind::Done;
        self.conn = None;
        self.reusable = false;
        self.on_reusable = None;
        Poll::Ready(Some(Err(e)))
    }

    /// Reads more into the connection's buffer; `Ok(false)` on EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        match &mut self.conn {
            Some(conn) => conn.poll_fill(cx).map_ok(|n| n > 0),
            None => Poll::Ready(Ok(false)),
        }
    }
}

impl<IO: Io> Body for H1Body<IO> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        loop {
            let Some(buf) = this.conn.as_mut().map(|c| &mut c.buf) else {
                return Poll::Ready(None);
            };
            let buffered = buf.len();
            // Each arm either returns or has consumed bytes / changed state, then loops.
            let need_more = match this.kind {
                Kind::Done | Kind::Upgrade => return Poll::Ready(None),
                Kind::Length(left) | Kind::Chunked(Chunk::Data(left)) if buffered > 0 => {
                    let n = left.min(buffered as u64);
                    let data = buf.split_to(n as usize).freeze();
                    let left = left - n;
                    match (&mut this.kind, left) {
                        (Kind::Length(_), 0) => this.finish(),
                        (Kind::Length(l), _) => *l = left,
                        (Kind::Chunked(c), 0) => *c = Chunk::DataEnd,
                        (Kind::Chunked(c), _) => *c = Chunk::Data(left),
                        _ => {}
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Kind::Length(_) | Kind::Chunked(Chunk::Data(_)) => true,
                Kind::Eof if buffered > 0 => return Poll::Ready(Some(Ok(Frame::data(buf.split().freeze())))),
                Kind::Eof => {
                    match ready!(this.poll_fill(cx)) {
                        Ok(true) => {}
                        // Close-delimited: the close is the end, and the connection is done for.
                        Ok(false) => {
                            this.kind = Kind::Done;
                            this.conn = None;
                            return Poll::Ready(None);
                        }
                        Err(e) => return this.fail_with(e),
                    }
                    continue;
                }
                Kind::Chunked(Chunk::Size) => match parse_chunk_size(buf) {
                    Ok(Some((len, size))) => {
                        buf.advance(len);
                        this.kind = Kind::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                        false
                    }
                    Ok(None) if buffered > MAX_CHUNK_LINE => {
                        return this.fail(io::ErrorKind::InvalidData, "chunk size line too long")
                    }
                    Ok(None) => true,
                    Err(msg) => return this.fail(io::ErrorKind::InvalidData, msg),
                },
                Kind::Chunked(Chunk::DataEnd) if buffered >= 2 => {
                    if &buf[..2] != b"\r\n" {
                        return this.fail(io::ErrorKind::InvalidData, "chunk data not followed by CRLF");
                    }
                    buf.advance(2);
                    this.kind = Kind::Chunked(Chunk::Size);
                    false
                }
                Kind::Chunked(Chunk::DataEnd) => true,
                Kind::Chunked(Chunk::Trailers) => {
                    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(buf, &mut raw) {
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let mut trailers = HeaderMap::with_capacity(fields.len());
                            for f in fields {
                                // A trailer field we cannot represent is dropped rather than failing a
                                // body whose data has already been delivered whole.
                                if let (Ok(n), Ok(v)) = (
                                    HeaderName::from_bytes(f.name.as_bytes()),
                                    HeaderValue::from_bytes(f.value),
                                ) {
                                    trailers.append(n, v);
                                }
                            }
                            buf.advance(len);
                            this.finish();
                            if trailers.is_empty() {
                                return Poll::Ready(None);
                            }
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Ok(httparse::Status::Partial) if buffered > MAX_HEAD => {
                            return this.fail(io::ErrorKind::InvalidData, "chunked trailers too large")
                        }
                        Ok(httparse::Status::Partial) => true,
                        Err(_) => return this.fail(io::ErrorKind::InvalidData, "malformed chunked trailers"),
                    }
                }
            };
            if need_more {
                match ready!(this.poll_fill(cx)) {
                    Ok(true) => {}
                    Ok(false) => {
                        return this.fail(
                            io::ErrorKind::UnexpectedEof,
                            "upstream closed before the body ended",
                        )
                    }
                    Err(e) => return this.fail_with(e),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Done | Kind::Upgrade)
    }

    fn size_hint(&self) -> SizeHint {
        match self.kind {
            Kind::Length(n) => SizeHint::with_exact(n),
            Kind::Done | Kind::Upgrade => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A connection taken over after a 101 response. Reads first yield whatever the server sent right
/// after the 101 head, then come from the socket; writes go straight to the socket.
pub struct Upgraded<IO = TcpStream> {
    io: IO,
    leftover: Bytes,
}

impl<IO> fmt::Debug for Upgraded<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgraded")
            .field("leftover", &self.leftover.len())
            .finish_non_exhaustive()
    }
}

impl<IO> Upgraded<IO> {
    /// The socket and the bytes read past the 101 head that nobody has consumed yet.
    pub fn into_parts(self) -> (IO, Bytes) {
        (self.io, self.leftover)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Upgraded<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.leftover.is_empty() {
            let n = this.leftover.len().min(buf.remaining());
            buf.put_slice(&this.leftover.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Upgraded<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc, Mutex,
        },
        time::Duration,
    };

    use http_body_util::{BodyExt, Empty, Full};
    use tokio::{net::TcpListener, sync::mpsc};

    use super::*;

    async fn within<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("test timed out")
    }

    /// A backend on 127.0.0.1 that runs `serve` on every accepted connection and counts accepts.
    async fn backend<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let counter = accepts.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s));
            }
        });
        (addr, accepts)
    }

    type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

    /// One connection answers each request head with the next canned response, recording what it
    /// received (head plus any body bytes that came with it), then closes or waits for the client to.
    async fn scripted(
        responses: Vec<&'static [u8]>,
        close_after: bool,
    ) -> (SocketAddr, Arc<AtomicUsize>, Seen) {
        let seen: Seen = Arc::default();
        let record = seen.clone();
        let (addr, accepts) = backend(move |mut s| {
            let responses = responses.clone();
            let record = record.clone();
            async move {
                for r in responses {
                    let (head, rest) = read_head(&mut s).await;
                    if head.is_empty() {
                        return;
                    }
                    record.lock().unwrap().push([head, rest].concat());
                    s.write_all(r).await.unwrap();
                }
                if !close_after {
                    let mut sink = [0u8; 1024];
                    while let Ok(1..) = s.read(&mut sink).await {}
                }
            }
        })
        .await;
        (addr, accepts, seen)
    }

    /// Reads up to the end of a request head: the head and whatever bytes came after it.
    async fn read_head(s: &mut TcpStream) -> (Vec<u8>, Vec<u8>) {
        let mut buf = Vec::new();
        loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                let rest = buf.split_off(i + 4);
                return (buf, rest);
            }
            let mut tmp = [0u8; 4096];
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return (Vec::new(), Vec::new()),
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    /// Decodes a chunked request body (test-side, simple): `buf` holds bytes already read.
    async fn read_chunked(s: &mut TcpStream, mut buf: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&buf, b"\r\n") {
                    break i;
                }
                fill(s, &mut buf).await;
            };
            let line = String::from_utf8(buf[..line_end].to_vec()).unwrap();
            let size = usize::from_str_radix(line.split(';').next().unwrap(), 16).unwrap();
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                fill(s, &mut buf).await;
            }
            if size == 0 {
                assert_eq!(&buf[..2], b"\r\n", "no trailers expected");
                return out;
            }
            out.extend_from_slice(&buf[..size]);
            assert_eq!(&buf[size..size + 2], b"\r\n");
            buf.drain(..size + 2);
        }
    }

    async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) {
        let mut tmp = [0u8; 16384];
        let n = s.read(&mut tmp).await.unwrap();
        assert!(n > 0, "unexpected EOF");
        buf.extend_from_slice(&tmp[..n]);
    }

    async fn connect(addr: SocketAddr) -> H1Conn {
        H1Conn::new(TcpStream::connect(addr).await.unwrap())
    }

    fn get(path: &str) -> Request<Empty<Bytes>> {
        Request::get(path)
            .header("host", "test")
            .body(Empty::new())
            .unwrap()
    }

    async fn send_ok<B>(conn: H1Conn, req: Request<B>) -> Response<H1Body>
    where
        B: Body<Data = Bytes> + Unpin + Send,
        B::Error: Into<BoxError>,
    {
        match conn.send(req).await {
            Ok(r) => r,
            Err(e) => panic!("send failed: {e}"),
        }
    }

    type Slot = Arc<Mutex<Option<H1Conn>>>;

    /// What a pool would do: keep the connection once the body hands it back.
    fn keep(body: &mut H1Body) -> Slot {
        let slot: Slot = Arc::default();
        let s = slot.clone();
        body.on_reusable(Box::new(move |c| *s.lock().unwrap() = Some(c)));
        slot
    }

    fn take(slot: &Slot) -> Option<H1Conn> {
        slot.lock().unwrap().take()
    }

    /// Collects a response body: data and trailers.
    async fn read_all(body: H1Body) -> io::Result<(Bytes, Option<HeaderMap>)> {
        let c = body.collect().await?;
        let trailers = c.trailers().cloned();
        Ok((c.to_bytes(), trailers))
    }

    /// A request body fed through a channel: no length known, frames arrive when sent.
    struct ChanBody(mpsc::Receiver<Bytes>);

    impl Body for ChanBody {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
            self.get_mut()
                .0
                .poll_recv(cx)
                .map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn get_with_content_length() {
        within(async {
            let (addr, _, seen) = scripted(
                vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Reply: yes\r\n\r\nhello"],
                false,
            )
            .await;
            let req = Request::get("http://ignored.example/a/b?c=d")
                .header("host", "test")
                .header("x-one", "1")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let res = send_ok(connect(addr).await, req).await;
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(res.version(), Version::HTTP_11);
            assert_eq!(res.headers()["x-reply"], "yes");
            let mut body = res.into_body();
            assert_eq!(body.size_hint().exact(), Some(5));
            assert!(!body.is_end_stream());
            let slot = keep(&mut body);
            assert_eq!(read_all(body).await.unwrap().0, "hello");
            assert!(take(&slot).is_some(), "connection handed back");
            assert_eq!(
                seen.lock().unwrap()[0],
                b"GET /a/b?c=d HTTP/1.1\r\nhost: test\r\nx-one: 1\r\n\r\n"
            );
        })
        .await
    }

    #[tokio::test]
    async fn chunked_with_extensions_and_trailers() {
        within(async {
            let (addr, _, _) = scripted(
                vec![
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n6 ; x\r\n world\r\n0;end\r\nX-Trailer: t\r\n\r\n",
                ],
                false,
            )
            .await;
            let res = send_ok(connect(addr).await, get("/")).await;
            let mut body = res.into_body();
            assert_eq!(body.size_hint().exact(), None);
            let slot = keep(&mut body);
            let (data, trailers) = read_all(body).await.unwrap();
            assert_eq!(data, "hello world");
            assert_eq!(trailers.unwrap()["x-trailer"], "t");
            assert!(take(&slot).is_some());
        })
        .await
    }

    #[tokio::test]
    async fn close_delimited_response_is_not_reused() {
        within(async {
            let (addr, _, _) = scripted(vec![b"HTTP/1.1 200 OK\r\n\r\nabc"], true).await;
            let mut body = send_ok(connect(addr).await, get("/")).await.into_body();
            assert!(!body.is_keep_alive());
            let slot = keep(&mut body);
            assert_eq!(read_all(body).await.unwrap().0, "abc");
            assert!(take(&slot).is_none());
        })
        .await
    }

    #[tokio::test]
    async fn head_no_content_not_modified_and_reuse() {
        within(async {
            let (addr, accepts, seen) = scripted(
                vec![
                    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
                    b"HTTP/1.1 204 No Content\r\n\r\n",
                    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: x\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                ],
                false,
            )
            .await;
            let mut conn = connect(addr).await;
            let head = Request::head("/h")
                .header("host", "test")
                .body(Empty::<Bytes>::new())
                .unwrap();
            for (req, status) in [
                (head, StatusCode::OK),
                (get("/204"), StatusCode::NO_CONTENT),
                (get("/304"), StatusCode::NOT_MODIFIED),
            ] {
                let res = send_ok(conn, req).await;
                assert_eq!(res.status(), status);
                let mut body = res.into_body();
                // Empty bodies end before anyone polls them, so a server can frame them up front.
                assert!(body.is_end_stream());
                assert_eq!(body.size_hint().exact(), Some(0));
                let slot = keep(&mut body);
                conn = take(&slot).expect("handed back at once");
                assert!(conn.is_reusable());
            }
            let res = send_ok(conn, get("/last")).await;
            assert_eq!(read_all(res.into_body()).await.unwrap().0, "ok");
            assert_eq!(accepts.load(Ordering::SeqCst), 1);
            let seen = seen.lock().unwrap();
            assert!(seen[0].starts_with(b"HEAD /h HTTP/1.1\r\n"));
            assert!(seen[3].starts_with(b"GET /last HTTP/1.1\r\n"));
        })
        .await
    }

    #[tokio::test]
    async fn informational_responses_are_skipped() {
        within(async {
            let (addr, _, _) = scripted(
                vec![
                    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                ],
                false,
            )
            .await;
            let res = send_ok(connect(addr).await, get("/")).await;
            assert_eq!(res.status(), StatusCode::OK);
            assert!(!res.headers().contains_key("link"));
            assert_eq!(read_all(res.into_body()).await.unwrap().0, "ok");
        })
        .await
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        within(async {
            let (addr, accepts, seen) = scripted(
                vec![
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none",
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n",
                ],
                false,
            )
            .await;
            let mut body = send_ok(connect(addr).await, get("/1")).await.into_body();
            let slot = keep(&mut body);
            assert_eq!(read_all(body).await.unwrap().0, "one");
            let mut conn = take(&slot).unwrap();
            assert!(conn.is_reusable());
            let mut body = send_ok(conn, get("/2")).await.into_body();
            let slot = keep(&mut body);
            assert_eq!(read_all(body).await.unwrap().0, "two");
            conn = take(&slot).unwrap();
            assert_eq!(conn.peer_addr(), addr);
            assert_eq!(accepts.load(Ordering::SeqCst), 1);
            assert_eq!(seen.lock().unwrap().len(), 2);
        })
        .await
    }

    #[tokio::test]
    async fn connection_close_and_http10_are_not_reused() {
        within(async {
            for (response, reused) in [
                (
                    &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"[..],
                    false,
                ),
                (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
                (
                    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
                    true,
                ),
            ] {
                let (addr, _, _) = scripted(vec![response], false).await;
                let res = send_ok(connect(addr).await, get("/")).await;
                let mut body = res.into_body();
                let slot = keep(&mut body);
                assert_eq!(read_all(body).await.unwrap().0, "ok");
                assert_eq!(
                    take(&slot).is_some(),
                    reused,
                    "{}",
                    String::from_utf8_lossy(response)
                );
            }
            // The request asking for close rules out reuse too.
            let (addr, _, _) = scripted(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], false).await;
            let req = Request::get("/")
                .header("connection", "close")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let mut body = send_ok(connect(addr).await, req).await.into_body();
            let slot = keep(&mut body);
            read_all(body).await.unwrap();
            assert!(take(&slot).is_none());
        })
        .await
    }

    #[tokio::test]
    async fn post_with_content_length_is_forwarded_byte_exact() {
        within(async {
            let payload = Bytes::from_static(b"hello\r\n\x00world");
            let got: Arc<Mutex<Vec<u8>>> = Arc::default();
            let record = got.clone();
            let (addr, _) = backend(move |mut s| {
                let record = record.clone();
                async move {
                    let (head, mut rest) = read_head(&mut s).await;
                    while rest.len() < 13 {
                        fill(&mut s, &mut rest).await;
                    }
                    *record.lock().unwrap() = [head, rest].concat();
                    s.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                        .await
                        .unwrap();
                }
            })
            .await;
            let req = Request::post("/up")
                .header("host", "test")
                .header("content-length", "13")
                .body(Full::new(payload))
                .unwrap();
            let res = send_ok(connect(addr).await, req).await;
            assert_eq!(res.status(), StatusCode::CREATED);
            assert_eq!(
                *got.lock().unwrap(),
                b"POST /up HTTP/1.1\r\nhost: test\r\ncontent-length: 13\r\n\r\nhello\r\n\x00world"
            );

            // A body that does not match its Content-Length is refused, not sent mis-framed.
            let req = Request::post("/up")
                .header("content-length", "3")
                .body(Full::new(Bytes::from_static(b"hello")))
                .unwrap();
            let err = connect(addr).await.send(req).await.unwrap_err();
            assert!(matches!(err, SendError::Body(_)), "{err:?}");

            // An empty POST gets an explicit zero length.
            let (addr, _, seen) =
                scripted(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], false).await;
            let req = Request::post("/e").body(Empty::<Bytes>::new()).unwrap();
            send_ok(connect(addr).await, req).await;
            assert_eq!(
                seen.lock().unwrap()[0],
                b"POST /e HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
            );
        })
        .await
    }

    #[tokio::test]
    async fn streaming_body_without_length_is_sent_chunked() {
        within(async {
            let got: Arc<Mutex<(Vec<u8>, Vec<u8>)>> = Arc::default();
            let record = got.clone();
            let (addr, _) = backend(move |mut s| {
                let record = record.clone();
                async move {
                    let (head, rest) = read_head(&mut s).await;
                    let body = read_chunked(&mut s, rest).await;
                    *record.lock().unwrap() = (head, body);
                    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await
                        .unwrap();
                }
            })
            .await;
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                for part in ["one", "", "two", "three"] {
                    tx.send(Bytes::from(part)).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            let req = Request::post("/s")
                .header("host", "test")
                // A stale framing header the caller left behind must not reach the wire.
                .header("transfer-encoding", "identity")
                .body(ChanBody(rx))
                .unwrap();
            let res = send_ok(connect(addr).await, req).await;
            assert_eq!(res.status(), StatusCode::OK);
            let (head, body) = got.lock().unwrap().clone();
            assert_eq!(
                head,
                b"POST /s HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n"
            );
            assert_eq!(body, b"onetwothree");
        })
        .await
    }

    #[tokio::test]
    async fn malformed_chunked_bodies_fail() {
        within(async {
            for bad in [
                &b"+5\r\nhello\r\n0\r\n\r\n"[..],
                b"-1\r\nx\r\n0\r\n\r\n",
                b"0x10\r\n0123456789abcdef\r\n0\r\n\r\n",
                b"10000000000000000\r\n",
                b"fffffffffffffffff\r\n",
                b"5\nhello\r\n0\r\n\r\n",
                b"5\r\nhelloXX0\r\n\r\n",
                b"5\r\nhello\n0\r\n\r\n",
                b" 5\r\nhello\r\n0\r\n\r\n",
                b"\r\nhello\r\n0\r\n\r\n",
                b"5\rX\r\nhello\r\n0\r\n\r\n",
            ] {
                let response: &'static [u8] =
                    [&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..], bad]
                        .concat()
                        .leak();
                let (addr, _, _) = scripted(vec![response], false).await;
                let mut body = send_ok(connect(addr).await, get("/")).await.into_body();
                let slot = keep(&mut body);
                let err = read_all(body).await.unwrap_err();
                assert_eq!(
                    err.kind(),
                    io::ErrorKind::InvalidData,
                    "{}",
                    String::from_utf8_lossy(bad)
                );
                assert!(take(&slot).is_none());
            }
            // Truncated: the server closes mid-chunk.
            let (addr, _, _) = scripted(
                vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"],
                true,
            )
            .await;
            let body = send_ok(connect(addr).await, get("/")).await.into_body();
            assert_eq!(
                read_all(body).await.unwrap_err().kind(),
                io::ErrorKind::UnexpectedEof
            );
            // Truncated Content-Length body.
            let (addr, _, _) = scripted(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"], true).await;
            let body = send_ok(connect(addr).await, get("/")).await.into_body();
            assert_eq!(
                read_all(body).await.unwrap_err().kind(),
                io::ErrorKind::UnexpectedEof
            );
        })
        .await
    }

    #[tokio::test]
    async fn invalid_content_length_and_heads_are_protocol_errors() {
        within(async {
            for bad in [
                &b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello"[..],
                b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
                b"HTTP/2.0 200 OK\r\n\r\n",
                b"HTTP/1.1 20 OK\r\n\r\n",
                b"garbage\r\n\r\n",
            ] {
                let (addr, _, _) = scripted(vec![bad], false).await;
                let err = connect(addr).await.send(get("/")).await.unwrap_err();
                assert!(matches!(err, SendError::Protocol(_)), "{err:?}: {}", String::from_utf8_lossy(bad));
            }
            // A list of identical values is one length.
            let (addr, _, _) =
                scripted(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"], false).await;
            let body = send_ok(connect(addr).await, get("/")).await.into_body();
            assert_eq!(read_all(body).await.unwrap().0, "hello");
            // Transfer-Encoding wins over Content-Length, the length is dropped, no reuse.
            let (addr, _, _) = scripted(
                vec![b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
                false,
            )
            .await;
            let res = send_ok(connect(addr).await, get("/")).await;
            assert!(!res.headers().contains_key("content-length"));
            let mut body = res.into_body();
            let slot = keep(&mut body);
            assert_eq!(read_all(body).await.unwrap().0, "hello");
            assert!(take(&slot).is_none());
            // A head larger than 64 KiB.
            let huge: &'static [u8] =
                format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000)).into_bytes().leak();
            let (addr, _, _) = scripted(vec![huge], false).await;
            let err = connect(addr).await.send(get("/")).await.unwrap_err();
            assert!(matches!(err, SendError::Protocol(_)), "{err:?}");
        })
        .await
    }

    #[tokio::test]
    async fn stale_pooled_connection_is_detected() {
        within(async {
            let (addr, _, _) = scripted(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], true).await;
            let mut body = send_ok(connect(addr).await, get("/")).await.into_body();
            let slot = keep(&mut body);
            read_all(body).await.unwrap();
            let mut conn = take(&slot).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!conn.is_reusable());
            // Sent anyway (the close raced with the check): the request comes back for a retry.
            let req = Request::get("/retry-me")
                .header("x-keep", "1")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let err = conn.send(req).await.unwrap_err();
            let req = err.into_request().expect("stale");
            assert_eq!(req.uri(), "/retry-me");
            assert_eq!(req.headers()["x-keep"], "1");

            // On a fresh connection an immediate close is an error, not a retry.
            let (addr, _) = backend(|s| async move { drop(s) }).await;
            let err = connect(addr).await.send(get("/")).await.unwrap_err();
            assert!(matches!(err, SendError::Io(_)), "{err:?}");

            // An idle connection the server keeps open is reusable; one it sent junk on is not.
            let (addr, _) = backend(|mut s| async move {
                let (_, _) = read_head(&mut s).await;
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                s.write_all(b"junk").await.unwrap();
                tokio::time::sleep(Duration::from_secs(5)).await;
            })
            .await;
            let mut body = send_ok(connect(addr).await, get("/")).await.into_body();
            let slot = keep(&mut body);
            let mut conn = take(&slot).unwrap();
            assert!(conn.is_reusable());
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert!(!conn.is_reusable());
        })
        .await
    }

    #[tokio::test]
    async fn switching_protocols_hands_over_the_connection() {
        within(async {
            let (addr, _) = backend(|mut s| async move {
                let (head, _) = read_head(&mut s).await;
                assert!(find(&head, b"upgrade: echo\r\n").is_some());
                s.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nearly",
                )
                .await
                .unwrap();
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    s.write_all(&buf[..n]).await.unwrap();
                }
            })
            .await;
            let req = Request::get("/ws")
                .header("host", "test")
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let res = send_ok(connect(addr).await, req).await;
            assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
            assert!(res.body().is_end_stream());
            let mut up = res.into_body().into_upgraded().expect("upgraded");
            let mut early = [0u8; 5];
            up.read_exact(&mut early).await.unwrap();
            assert_eq!(&early, b"early");
            up.write_all(b"ping").await.unwrap();
            let mut pong = [0u8; 4];
            up.read_exact(&mut pong).await.unwrap();
            assert_eq!(&pong, b"ping");

            // Not a 101: nothing to take over.
            let (addr, _, _) = scripted(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], false).await;
            let res = send_ok(connect(addr).await, get("/")).await;
            assert!(res.into_body().into_upgraded().is_none());
        })
        .await
    }

    #[tokio::test]
    async fn one_mebibyte_each_way() {
        within(async {
            const SIZE: usize = 1 << 20;
            let pattern: Bytes = (0..SIZE).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
            let expected = pattern.clone();
            let (addr, _) = backend(move |mut s| {
                let expected = expected.clone();
                async move {
                    let (_, rest) = read_head(&mut s).await;
                    let body = read_chunked(&mut s, rest).await;
                    assert!(body == expected, "upload corrupted");
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n");
                    s.write_all(head.as_bytes()).await.unwrap();
                    s.write_all(&body).await.unwrap();
                }
            })
            .await;
            // No Content-Length header: sent chunked, although the size is known.
            let req = Request::post("/big").body(Full::new(pattern.clone())).unwrap();
            let res = send_ok(connect(addr).await, req).await;
            let mut body = res.into_body();
            assert_eq!(body.size_hint().exact(), Some(SIZE as u64));
            let mut got = Vec::with_capacity(SIZE);
            let mut frames = 0;
            while let Some(frame) = body.frame().await {
                got.extend_from_slice(&frame.unwrap().into_data().unwrap());
                frames += 1;
            }
            assert!(got == pattern, "download corrupted");
            assert!(frames > 1, "streamed in pieces, not buffered whole");
        })
        .await
    }

    #[tokio::test]
    async fn early_response_while_the_body_is_being_written() {
        within(async {
            let (addr, _) = backend(|mut s| async move {
                let (_, _) = read_head(&mut s).await;
                s.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 7\r\nConnection: close\r\n\r\ntoo big")
                    .await
                    .unwrap();
                // Closed with the request body unread: the kernel answers further data with a reset.
            })
            .await;
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                // Runs until send drops the body (the response arrived) or 256 MiB were offered.
                for _ in 0..4096 {
                    if tx.send(chunk.clone()).await.is_err() {
                        return;
                    }
                }
            });
            let req = Request::post("/upload").header("host", "test").body(ChanBody(rx)).unwrap();
            let res = send_ok(connect(addr).await, req).await;
            assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
            let mut body = res.into_body();
            assert!(!body.is_keep_alive());
            let slot = keep(&mut body);
            assert_eq!(read_all(body).await.unwrap().0, "too big");
            assert!(take(&slot).is_none());
        })
        .await
    }

    #[tokio::test]
    async fn hyper_server_keep_alive_hundred_requests() {
        within(async {
            let (addr, accepts) = backend(|s| async move {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let line = format!("{} {}", req.method(), req.uri());
                    let body = req.into_body().collect().await?.to_bytes();
                    let text = format!("{line} {}", body.len());
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(text))))
                });
                let io = hyper_util::rt::TokioIo::new(s);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            })
            .await;
            let mut conn = connect(addr).await;
            for i in 0..100 {
                let res = match i % 3 {
                    0 => send_ok(conn, get(&format!("/get/{i}"))).await,
                    1 => {
                        let req = Request::post(format!("/len/{i}"))
                            .header("host", "test")
                            .header("content-length", "4")
                            .body(Full::new(Bytes::from_static(b"abcd")))
                            .unwrap();
                        send_ok(conn, req).await
                    }
                    _ => {
                        let (tx, rx) = mpsc::channel(4);
                        for part in ["ab", "cde"] {
                            tx.send(Bytes::from(part)).await.unwrap();
                        }
                        drop(tx);
                        let req = Request::post(format!("/chunked/{i}"))
                            .header("host", "test")
                            .body(ChanBody(rx))
                            .unwrap();
                        send_ok(conn, req).await
                    }
                };
                assert_eq!(res.status(), StatusCode::OK);
                let mut body = res.into_body();
                let slot = keep(&mut body);
                let (data, _) = read_all(body).await.unwrap();
                let expected = match i % 3 {
                    0 => format!("GET /get/{i} 0"),
                    1 => format!("POST /len/{i} 4"),
                    _ => format!("POST /chunked/{i} 5"),
                };
                assert_eq!(data, expected);
                conn = take(&slot).expect("kept alive");
                assert!(conn.is_reusable());
            }
            assert_eq!(accepts.load(Ordering::SeqCst), 1);
        })
        .await
    }
}
