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
}

impl RequestBody {
    /// Reads `body` ahead until it ends or `limit` bytes are buffered, for at most `timeout`.
    /// A body that is already complete (no body, or an empty one) costs nothing.
    pub async fn read_ahead(mut body: Incoming, limit: usize, timeout: Duration) -> Result<Self, ProxyError> {
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
            ahead_len,
            rest: body,
        })
    }

    /// Bytes read ahead.
    pub fn ahead_len(&self) -> u64 {
        self.ahead_len
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

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
        Pin::new(&mut self.rest).poll_frame(cx)
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
