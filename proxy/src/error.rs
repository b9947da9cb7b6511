//! What can go wrong with one request, where it came from, and the status it maps to.

use http::StatusCode;

/// Which side of the proxy a failure belongs to. Used for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client sent something we cannot serve.
    Downstream,
    /// The backend could not be reached or misbehaved.
    Upstream,
    /// Our own configuration has nothing for the request.
    Internal,
}

/// One failed request. Every variant maps to exactly one status.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No Host header, two of them, or one that disagrees with the request target.
    #[error("bad host: {0}")]
    BadHost(&'static str),
    /// The request target or its path cannot be normalized.
    #[error("bad request target: {0}")]
    BadTarget(String),
    /// More headers than `--max-headers`.
    #[error("too many request headers")]
    TooManyHeaders,
    /// No rule and no default backend matches.
    #[error("no route")]
    NoRoute,
    /// The backend has no ready endpoint.
    #[error("no ready endpoint: {0}")]
    NoEndpoint(String),
    /// The route's backend reference could not be resolved, or every backend of its weighted
    /// split has weight 0: the Gateway API requires 500 (not 503) for these.
    #[error("invalid backend: {0}")]
    InvalidBackend(String),
    /// Connecting to every endpoint tried failed or timed out. Safe to retry: nothing was sent.
    #[error("upstream connect to {addr}: {reason}")]
    Connect {
        addr: std::net::SocketAddr,
        reason: String,
    },
    /// The backend broke the connection or sent an invalid response.
    #[error("upstream protocol: {0}")]
    Upstream(String),
    /// The client's request body broke off or was malformed (a bad chunk, a cut connection).
    #[error("request body: {0}")]
    ClientBody(String),
    /// The request's framing is ambiguous or invalid (RFC 9112 6): `chunked` twice or not last,
    /// both Transfer-Encoding and Content-Length.
    #[error("bad request framing: {0}")]
    BadFraming(&'static str),
    /// A transfer coding other than `chunked` (RFC 9112 6.1: 501).
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    /// The client did not send its request body in time.
    #[error("request body timeout")]
    RequestTimeout,
    /// No response head within `--upstream-response-timeout`.
    #[error("upstream response timeout")]
    UpstreamTimeout,
    /// The request body is larger than the route allows (`proxy-body-size`).
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadHost(_) | Self::BadTarget(_) | Self::ClientBody(_) | Self::BadFraming(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::NoEndpoint(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::InvalidBackend(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Connect { .. } | Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn side(&self) -> Side {
        match self {
            Self::BadHost(_)
            | Self::BadTarget(_)
            | Self::TooManyHeaders
            | Self::ClientBody(_)
            | Self::BadFraming(_)
            | Self::UnsupportedTransferCoding
            | Self::BodyTooLarge(_)
            | Self::RequestTimeout => Side::Downstream,
            Self::NoRoute | Self::NoEndpoint(_) | Self::InvalidBackend(_) => Side::Internal,
            Self::Connect { .. } | Self::Upstream(_) | Self::UpstreamTimeout => Side::Upstream,
        }
    }

    /// A short, stable name for metrics (`gantry_rejected_requests_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadHost(_) => "bad_host",
            Self::BadTarget(_) => "bad_target",
            Self::TooManyHeaders => "too_many_headers",
            Self::ClientBody(_) => "bad_body",
            Self::BadFraming(_) => "bad_framing",
            Self::UnsupportedTransferCoding => "unsupported_transfer_coding",
            Self::RequestTimeout => "body_timeout",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::NoRoute => "no_route",
            Self::NoEndpoint(_) => "no_endpoint",
            Self::InvalidBackend(_) => "invalid_backend",
            Self::Connect { .. } => "connect",
            Self::Upstream(_) => "upstream",
            Self::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// Whether the request may be sent again elsewhere: only when nothing reached the backend.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }

    /// A connect to `addr` that did not finish within the connect timeout.
    pub fn connect_timed_out(addr: std::net::SocketAddr) -> Self {
        Self::Connect {
            addr,
            reason: CONNECT_TIMED_OUT.into(),
        }
    }

    /// Whether this is a connect that timed out (`proxy_next_upstream`'s `timeout`, where any
    /// other connect failure is its `error`).
    pub fn is_connect_timeout(&self) -> bool {
        matches!(self, Self::Connect { reason, .. } if reason == CONNECT_TIMED_OUT)
    }
}

/// The reason of a [`ProxyError::Connect`] that timed out.
const CONNECT_TIMED_OUT: &str = "timed out";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_the_documented_status() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let cases: Vec<(ProxyError, u16, Side)> = vec![
            (ProxyError::BadHost("missing"), 400, Side::Downstream),
            (ProxyError::BadTarget("x".into()), 400, Side::Downstream),
            (ProxyError::TooManyHeaders, 431, Side::Downstream),
            (ProxyError::BodyTooLarge(1), 413, Side::Downstream),
            (ProxyError::NoRoute, 404, Side::Internal),
            (ProxyError::NoEndpoint("svc".into()), 503, Side::Internal),
            (
                ProxyError::Connect {
                    addr,
                    reason: "refused".into(),
                },
                502,
                Side::Upstream,
            ),
            (ProxyError::UpstreamTimeout, 504, Side::Upstream),
            (ProxyError::Upstream("reset".into()), 502, Side::Upstream),
            (ProxyError::ClientBody("bad chunk".into()), 400, Side::Downstream),
            (ProxyError::BadFraming("chunked twice"), 400, Side::Downstream),
            (ProxyError::UnsupportedTransferCoding, 501, Side::Downstream),
            (ProxyError::RequestTimeout, 408, Side::Downstream),
        ];
        for (err, status, side) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.side(), side, "{err}");
        }
        assert!(ProxyError::Connect {
            addr,
            reason: String::new()
        }
        .is_retryable());
        assert!(!ProxyError::UpstreamTimeout.is_retryable());
    }
}
