//! The request body as it is forwarded: what was read ahead before any upstream work, then the
//! rest of the client's body, streamed.
//!
//! Reading ahead (up to a limit, like nginx's `client_body_buffer_size`) means that a body that is
//! malformed from the start (a bad chunk size, a missing CRLF, a connection cut mid-body) is the
//! client's 400 before an endpoint is chosen or a connection opened, not a 502 blamed on the
//! backend; and a client that sends its body slowly holds no upstream connection meanwhile.

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::error::ProxyError;

/// A client's request body: frames read ahead, then the rest of the stream.
#[derive(Debug)]
pub struct RequestBody {
    ahead: VecDeque<Frame<Bytes>>,
    /// Bytes of data in `ahead`.
    ahead_len: u64,
    rest: Incoming,
    /// The most the body may carry (`proxy-body-size`), and how much of `rest` has passed.
    limit: Option<u64>,
    streamed: u64,
}

/// Why a request body stopped while it was being forwarded.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client's stream failed (cut off, malformed chunk).
    #[error(transparent)]
    Client(#[from] hyper::Error),
    /// The body went past the route's limit; the upstream request is cut off here.
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
}

impl RequestBody {
    /// Reads `body` ahead until it ends or `limit` bytes are buffered, for at most `timeout`.
    /// A body that is already complete (no body, or an empty one) costs nothing.
    ///
    /// `max_body` is the route's body limit: a body that declares a larger `Content-Length`, or
    /// turns out larger while read ahead, is refused here (413) before any upstream work; one that
    /// grows past it later is cut off with [`BodyError::TooLarge`].
    pub async fn read_ahead(
        mut body: Incoming,
        limit: usize,
        timeout: Duration,
        max_body: Option<u64>,
    ) -> Result<Self, ProxyError> {
        if let (Some(max), Some(declared)) = (max_body, body.size_hint().exact()) {
            if declared > max {
                return Err(ProxyError::BodyTooLarge(max));
            }
        }
        let mut ahead = VecDeque::new();
        let mut ahead_len = 0u64;
        let read = async {
            while !body.is_end_stream() && ahead_len < limit as u64 {
                match body.frame().await {
                    None => break,
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            ahead_len += data.len() as u64;
                        }
                        if let Some(max) = max_body.filter(|max| ahead_len > *max) {
                            return Err(ProxyError::BodyTooLarge(max));
                        }
                        ahead.push_back(frame);
                    }
                    Some(Err(e)) => return Err(ProxyError::ClientBody(e.to_string())),
                }
            }
            Ok(())
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| ProxyError::RequestTimeout)??;
        Ok(Self {
            ahead,
            // What was read ahead counts toward the limit; the rest is added as it streams.
            streamed: ahead_len,
            ahead_len,
            rest: body,
            limit: max_body,
        })
    }

    /// Bytes read ahead.
    pub fn ahead_len(&self) -> u64 {
        self.ahead_len
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Some(frame) = self.ahead.pop_front() {
            if let Some(data) = frame.data_ref() {
                self.ahead_len -= data.len() as u64;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        let polled = Pin::new(&mut self.rest).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let (Some(data), Some(max)) = (frame.data_ref(), self.limit) {
                self.streamed += data.len() as u64;
                if self.streamed > max {
                    return Poll::Ready(Some(Err(BodyError::TooLarge(max))));
                }
            }
        }
        polled.map_err(BodyError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + self.ahead_len);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + self.ahead_len);
        }
        hint
    }
}
