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
    /// The client's stream after what was read ahead; `None` for a copy made by
    /// [`RequestBody::replay`] or an [`RequestBody::empty`] body.
    rest: Option<Incoming>,
    /// Whether `ahead` holds the whole body (the client's stream has ended): only then can the
    /// body be sent again.
    complete: bool,
    /// Whether a frame has been taken (the body is being or was sent).
    taken: bool,
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
        let mut complete = body.is_end_stream();
        let read = async {
            while !complete && ahead_len < limit as u64 {
                match body.frame().await {
                    None => {
                        complete = true;
                        break;
                    }
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            ahead_len += data.len() as u64;
                        }
                        if let Some(max) = max_body.filter(|max| ahead_len > *max) {
                            return Err(ProxyError::BodyTooLarge(max));
                        }
                        ahead.push_back(frame);
                        // A body with a Content-Length ends without a last empty poll.
                        complete = body.is_end_stream();
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
            rest: Some(body),
            complete,
            taken: false,
            limit: max_body,
        })
    }

    /// A body with nothing in it (the request to an error backend).
    pub fn empty() -> Self {
        Self {
            ahead: VecDeque::new(),
            ahead_len: 0,
            rest: None,
            complete: true,
            taken: false,
            limit: None,
            streamed: 0,
        }
    }

    /// A body of `data`, complete (as if read ahead whole), for tests.
    #[cfg(test)]
    pub(crate) fn complete(data: &'static [u8]) -> Self {
        let mut body = Self::empty();
        if !data.is_empty() {
            body.ahead.push_back(Frame::data(Bytes::from_static(data)));
            body.ahead_len = data.len() as u64;
            body.streamed = body.ahead_len;
        }
        body
    }

    /// Bytes read ahead.
    pub fn ahead_len(&self) -> u64 {
        self.ahead_len
    }

    /// A copy of this body to send again, when all of it was read ahead and none of it has been
    /// taken yet: data frames share their bytes, so the copy costs a few reference counts.
    /// `None` for a body longer than the read-ahead (its rest is on the client's stream once).
    pub fn replay(&self) -> Option<Self> {
        if !self.complete || self.taken {
            return None;
        }
        let ahead = self
            .ahead
            .iter()
            .map(|frame| match (frame.data_ref(), frame.trailers_ref()) {
                (Some(data), _) => Some(Frame::data(data.clone())),
                (None, Some(trailers)) => Some(Frame::trailers(trailers.clone())),
                (None, None) => None,
            })
            .collect::<Option<VecDeque<_>>>()?;
        Some(Self {
            ahead,
            ahead_len: self.ahead_len,
            rest: None,
            complete: true,
            taken: false,
            limit: self.limit,
            streamed: self.streamed,
        })
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.taken = true;
        if let Some(frame) = self.ahead.pop_front() {
            if let Some(data) = frame.data_ref() {
                self.ahead_len -= data.len() as u64;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(rest).poll_frame(cx);
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
        self.ahead.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let rest = match &self.rest {
            Some(rest) => rest.size_hint(),
            None => SizeHint::with_exact(0),
        };
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + self.ahead_len);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + self.ahead_len);
        }
        hint
    }
}
