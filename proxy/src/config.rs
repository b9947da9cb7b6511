//! Listener and upstream settings. Validated once at start; the data path reads them as they are.

use std::time::Duration;

/// How a backend picks one of its endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balancer {
    /// Each endpoint in turn. The default: cheapest, and even when endpoints are alike.
    #[default]
    RoundRobin,
    /// Power of two choices on requests in flight: two endpoints at random, the less busy one wins.
    /// Better when endpoints differ in speed or requests in cost.
    LeastRequest,
}

/// The oldest TLS version a client may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersion {
    #[default]
    Tls12,
    Tls13,
}

/// How access-log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// One line in the nginx/Apache combined style, for people reading logs by eye.
    Text,
}

/// `Strict-Transport-Security` added to HTTPS responses that do not set it themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hsts {
    pub max_age: Duration,
    pub include_subdomains: bool,
    pub preload: bool,
}

impl Hsts {
    /// The header value, e.g. `max-age=31536000; includeSubDomains`.
    pub fn header_value(&self) -> String {
        let mut v = format!("max-age={}", self.max_age.as_secs());
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        v
    }
}

/// The data path's settings. Flags give the defaults; a `ProxyConfig` object referenced by the
/// IngressClass overrides them. The settings travel inside each [`crate::Snapshot`], so a change is
/// applied by the next swap like any other: per request for upstream, routing and logging
/// settings, per new connection for listener settings (connections keep what they started with).
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyConfig {
    /// Time a client has to send a complete request head, and a TLS handshake to finish. Default 30 s.
    pub header_read_timeout: Duration,
    /// Time to open a TCP connection to an endpoint; on expiry the next endpoint is tried once, then
    /// 502. Default 5 s.
    pub upstream_connect_timeout: Duration,
    /// Time from sending a request upstream to its response head (on expiry 504), and the longest
    /// silence between two pieces of a response body (on expiry the response is cut, as nginx's
    /// `proxy_read_timeout` does). Long downloads and streams are fine as long as they keep
    /// moving. Default 60 s.
    pub upstream_response_timeout: Duration,
    /// A client connection with no request in flight and no bytes moving is closed after this.
    /// Default 60 s.
    pub idle_timeout: Duration,
    /// Upstream keep-alive connections idle longer than this are closed. Default 90 s.
    pub upstream_idle_timeout: Duration,
    /// How long in-flight requests get to finish after SIGTERM. Default 30 s.
    pub shutdown_grace: Duration,
    /// Largest request head (request line and headers) in bytes; beyond it 431. Default 60 KiB,
    /// Envoy's limit.
    pub max_header_bytes: usize,
    /// Most request headers; beyond it 431. Default 100, Envoy's limit.
    pub max_headers: usize,
    /// Streams one HTTP/2 connection may have open. Default 250.
    pub http2_max_concurrent_streams: u32,
    pub balancer: Balancer,
    /// One line per request on stdout. Default on.
    pub access_log: bool,
    pub access_log_format: AccessLogFormat,
    /// Oldest TLS version accepted. Default TLS 1.2.
    pub tls_min_version: TlsVersion,
    /// Default off.
    pub hsts: Option<Hsts>,
    /// TLS session resumption (a session cache and TLS 1.3 tickets). Default on. Read once at start.
    pub tls_session_resumption: bool,
    /// Open client connections allowed across both traffic listeners and every worker; beyond it
    /// new connections are closed at once (`gantry_connections_refused_total`). 0 is no limit.
    /// The admin listener does not count, so health checks stay answerable. Default 0. Read once
    /// at start.
    pub max_connections: usize,
    /// Every connection to the traffic listeners opens with a PROXY protocol header (v1 or v2)
    /// naming the client; one without is closed. For Gantry behind a TCP load balancer that
    /// sends it (ingress-nginx's `use-proxy-protocol`). Default off. Applies to new connections.
    pub proxy_protocol: bool,
    /// Proxies in front of Gantry whose `X-Forwarded-For` and `X-Forwarded-Proto/-Host/-Port`
    /// are believed (ingress-nginx's `use-forwarded-headers` with `proxy-real-ip-cidr`): from a peer
    /// in these ranges, the client is the right-most untrusted address of `X-Forwarded-For`, and
    /// that is the address allow-lists and rate limits judge. Empty (the default): no one is.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Tracing: which routes are traced and what share of their requests is sampled (see
    /// `crate::trace`). Default off. Spans go out only when the data plane has an exporter
    /// (`DataplaneBuilder::otlp`).
    pub tracing: crate::trace::TraceSettings,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(90),
            shutdown_grace: Duration::from_secs(30),
            max_header_bytes: 60 * 1024,
            max_headers: 100,
            http2_max_concurrent_streams: 250,
            balancer: Balancer::RoundRobin,
            access_log: true,
            access_log_format: AccessLogFormat::Json,
            tls_min_version: TlsVersion::Tls12,
            hsts: None,
            tls_session_resumption: true,
            max_connections: 0,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            tracing: crate::trace::TraceSettings::default(),
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A timeout of zero would fail every request.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// hyper needs at least 8 KiB of read buffer, and a request line alone can be that long.
    #[error("max-header-bytes must be at least 8192, got {0}")]
    HeaderBytesTooSmall(usize),
    /// At least the Host header must fit.
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
}

impl ProxyConfig {
    /// Checks the settings once at start, so the data path never has to.
    pub fn validate(self) -> Result<Self, ConfigError> {
        for (name, d) in [
            ("header-read-timeout", self.header_read_timeout),
            ("upstream-connect-timeout", self.upstream_connect_timeout),
            ("upstream-response-timeout", self.upstream_response_timeout),
            ("idle-timeout", self.idle_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if self.max_header_bytes < 8192 {
            return Err(ConfigError::HeaderBytesTooSmall(self.max_header_bytes));
        }
        if self.max_headers == 0 {
            return Err(ConfigError::ZeroLimit("max-headers"));
        }
        if self.http2_max_concurrent_streams == 0 {
            return Err(ConfigError::ZeroLimit("http2-max-concurrent-streams"));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(ProxyConfig::default().validate().is_ok());
    }

    #[test]
    fn zero_timeouts_and_tiny_limits_are_refused() {
        let c = ProxyConfig {
            upstream_connect_timeout: Duration::ZERO,
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ZeroDuration("upstream-connect-timeout"))
        ));
        let c = ProxyConfig {
            max_header_bytes: 100,
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::HeaderBytesTooSmall(100))));
        let c = ProxyConfig {
            max_headers: 0,
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::ZeroLimit("max-headers"))));
    }
}
