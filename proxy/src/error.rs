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
    /// Connecting to every endpoint tried failed or timed out. Safe to retry: nothing was sent.
    #[error("upstream connect to {addr}: {reason}")]
    Connect {
        addr: std::net::SocketAddr,
        reason: String,
    },
    /// The backend broke the connection or sent an invalid response.
    #[error("upstream protocol: {0}")]
    Upstream(String),
    /// The client's request body broke off or was malformed while it was being forwarded.
    #[error("request body: {0}")]
    ClientBody(String),
    /// No response head within `--upstream-response-timeout`.
    #[error("upstream response timeout")]
    UpstreamTimeout,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadHost(_) | Self::BadTarget(_) | Self::ClientBody(_) => StatusCode::BAD_REQUEST,
            Self::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::NoEndpoint(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. } | Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn side(&self) -> Side {
        match self {
            Self::BadHost(_) | Self::BadTarget(_) | Self::TooManyHeaders | Self::ClientBody(_) => {
                Side::Downstream
            }
            Self::NoRoute | Self::NoEndpoint(_) => Side::Internal,
            Self::Connect { .. } | Self::Upstream(_) | Self::UpstreamTimeout => Side::Upstream,
        }
    }

    /// Whether the request may be sent again elsewhere: only when nothing reached the backend.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}

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
