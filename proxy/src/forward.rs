//! The request path: validate, route, rewrite headers, forward, tunnel upgrades.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{
    header::{self, HeaderMap, HeaderName, HeaderValue},
    uri::PathAndQuery,
    Request, Response, StatusCode, Uri, Version,
};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::{
    access_log::{AccessLog, AccessRecord},
    config::ProxyConfig,
    error::ProxyError,
    metrics::{status_class, Label, Metrics, RequestLabels},
    normalize::{normalize_host, normalize_path},
    routes::Route,
    snapshot::SnapshotHandle,
    upstream::{UpstreamBody, Upstreams},
};

/// The body of every response Gantry sends: the backend's, streamed, or a small one of our own.
pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static SERVER_VALUE: HeaderValue = HeaderValue::from_static("gantry");

/// What a request knows about the connection it came on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub client: SocketAddr,
    /// The port the client connected to (for `X-Forwarded-Port`).
    pub local_port: u16,
    pub tls: bool,
    /// `client`'s IP and `local_port` as header values, formatted once per connection.
    client_ip: HeaderValue,
    local_port_value: HeaderValue,
}

impl ConnInfo {
    pub fn new(client: SocketAddr, local_port: u16, tls: bool) -> Self {
        let client_ip = HeaderValue::from_str(&client.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            client,
            local_port,
            tls,
            client_ip,
            local_port_value: HeaderValue::from(local_port),
        }
    }
}

/// The shared state of the data path.
#[derive(Debug)]
pub struct Proxy {
    pub snapshots: SnapshotHandle,
    /// Process-wide settings (shutdown grace, upstream idle timeout). Per-request and per-connection
    /// settings come from the snapshot's own `config`.
    pub config: ProxyConfig,
    pub upstreams: Upstreams,
    pub metrics: Arc<Metrics>,
    access_log: AccessLog,
}

// === impl Proxy ===

impl Proxy {
    /// `workers` is the number of worker threads that will serve traffic (see `workers`).
    pub fn new(
        snapshots: SnapshotHandle,
        config: ProxyConfig,
        workers: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let upstreams = Upstreams::new(config.upstream_idle_timeout, workers, metrics.clone());
        Self {
            snapshots,
            config,
            upstreams,
            metrics,
            access_log: AccessLog::stdout(),
        }
    }

    /// Publishes a snapshot: binds its backends to the endpoint pools, then swaps it in.
    pub fn publish(&self, snapshot: crate::Snapshot) {
        self.upstreams.bind(&snapshot);
        let endpoints: usize = self.upstreams.len();
        self.metrics.routes.set(snapshot.routes.len() as i64);
        self.metrics.endpoints.set(endpoints as i64);
        self.metrics.snapshot_generation.set(snapshot.generation as i64);
        self.metrics.diagnostics.clear();
        for d in &snapshot.diagnostics {
            self.metrics
                .diagnostics
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: d.reason.clone(),
                })
                .inc();
        }
        self.snapshots.store(snapshot);
    }

    /// Serves one request. Never fails: every error becomes a response with its status.
    pub async fn handle(&self, conn: &ConnInfo, req: Request<Incoming>) -> Response<ProxyBody> {
        let start = Instant::now();
        let snapshot = self.snapshots.load();
        let config = &snapshot.config;
        let method = req.method().clone();
        let mut log = config.access_log.then(|| AccessRecord::start(&req, conn));
        let (mut resp, route, upstream) = match self.route_and_forward(conn, req, &snapshot, &mut log).await {
            Ok((resp, route, upstream)) => (resp, route, upstream),
            Err((err, route)) => {
                if err.status().is_server_error() {
                    tracing::debug!(error = %err, "request failed");
                }
                (error_response(&err), route, None)
            }
        };
        if let (true, Some(hsts)) = (conn.tls, &config.hsts) {
            if !resp.headers().contains_key(header::STRICT_TRANSPORT_SECURITY) {
                if let Ok(v) = HeaderValue::from_str(&hsts.header_value()) {
                    resp.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, v);
                }
            }
        }
        let status = resp.status();
        let elapsed = start.elapsed();
        self.record(route.as_deref(), status, elapsed);
        if let Some(mut rec) = log {
            rec.finish(&method, status, &resp, elapsed, upstream);
            self.access_log.write(rec, config.access_log_format);
        }
        resp
    }

    fn record(&self, route: Option<&Route>, status: StatusCode, elapsed: Duration) {
        match route {
            Some(r) => r.stats.count(
                &self.metrics,
                || {
                    (
                        Label(r.source.namespace.clone()),
                        Label(r.source.name.clone()),
                        Label(r.backend.id.service.clone()),
                    )
                },
                status.as_u16(),
            ),
            None => {
                let empty = || Label(Arc::from(""));
                let labels = RequestLabels {
                    namespace: empty(),
                    ingress: empty(),
                    service: empty(),
                    status_class: status_class(status.as_u16()),
                };
                self.metrics.requests.get_or_create(&labels).inc();
            }
        }
        self.metrics.request_duration.observe(elapsed.as_secs_f64());
    }

    #[allow(clippy::type_complexity)]
    async fn route_and_forward(
        &self,
        conn: &ConnInfo,
        mut req: Request<Incoming>,
        snapshot: &crate::Snapshot,
        log: &mut Option<AccessRecord>,
    ) -> Result<(Response<ProxyBody>, Option<Arc<Route>>, Option<SocketAddr>), (ProxyError, Option<Arc<Route>>)>
    {
        if req.headers().len() > snapshot.config.max_headers {
            return Err((ProxyError::TooManyHeaders, None));
        }
        let host_value = request_host(&req).map_err(|e| (e, None))?;
        let host = normalize_host(&host_value).map_err(|_| (ProxyError::BadHost("invalid host"), None))?;
        let path =
            normalize_path(req.uri().path()).map_err(|e| (ProxyError::BadTarget(e.to_string()), None))?;
        if let Some(rec) = log.as_mut() {
            rec.set_target(&host, &path);
        }

        let route = snapshot
            .routes
            .lookup(&host, &path)
            .cloned()
            .ok_or((ProxyError::NoRoute, None))?;

        if route.ssl_redirect && !conn.tls {
            return Ok((
                redirect_to_https(&host, &path, req.uri().query()),
                Some(route),
                None,
            ));
        }
        if route.backend.endpoints.is_empty() {
            let why = route
                .backend
                .unavailable
                .as_deref()
                .unwrap_or("no ready endpoints")
                .to_string();
            return Err((ProxyError::NoEndpoint(why), Some(route)));
        }

        // The path forwarded is the one that was matched.
        let pq = match req.uri().query() {
            _ if path.as_ref() == req.uri().path() => req.uri().path_and_query().cloned(),
            Some(q) => PathAndQuery::try_from(format!("{path}?{q}")).ok(),
            None => PathAndQuery::try_from(path.as_ref()).ok(),
        };
        let pq = pq.ok_or_else(|| {
            (
                ProxyError::BadTarget("unforwardable path".into()),
                Some(route.clone()),
            )
        })?;
        *req.uri_mut() = Uri::from(pq);

        let upgrade = is_upgrade(&req);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let host_header = HeaderValue::from_str(&host_value)
            .map_err(|_| (ProxyError::BadHost("invalid host"), Some(route.clone())))?;
        rewrite_request_headers(req.headers_mut(), conn, host_header, upgrade);
        if let Some(rec) = log.as_mut() {
            rec.set_request_id(req.headers().get(&X_REQUEST_ID));
        }
        *req.version_mut() = Version::HTTP_11;

        let (mut resp, addr) = self
            .upstreams
            .send(&route.backend, req, &snapshot.config)
            .await
            .map_err(|e| (e, Some(route.clone())))?;

        if let Some(client_upgrade) =
            client_upgrade.filter(|_| resp.status() == StatusCode::SWITCHING_PROTOCOLS)
        {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
            let (parts, _) = resp.into_parts();
            return Ok((
                Response::from_parts(parts, Either::Right(Full::default())),
                Some(route),
                Some(addr),
            ));
        }
        rewrite_response_headers(resp.headers_mut());
        Ok((resp.map(Either::Left), Some(route), Some(addr)))
    }
}

/// The Host the request is for: `Host` in HTTP/1, `:authority` (or `Host`) in HTTP/2. Missing,
/// repeated, or disagreeing with the request target: 400.
fn request_host<B>(req: &Request<B>) -> Result<String, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadHost("more than one Host header"));
    }
    let header = match header {
        Some(v) => Some(v.to_str().map_err(|_| ProxyError::BadHost("Host is not ASCII"))?),
        None => None,
    };
    let authority = req.uri().authority().map(|a| a.as_str());
    match (header, authority) {
        (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a) => {
            Err(ProxyError::BadHost("Host disagrees with the request target"))
        }
        (Some(h), _) => Ok(h.to_string()),
        (None, Some(a)) => Ok(a.to_string()),
        (None, None) => Err(ProxyError::BadHost("missing Host")),
    }
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_has(req.headers(), "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers: the fixed list and whatever `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

fn rewrite_request_headers(headers: &mut HeaderMap, conn: &ConnInfo, host: HeaderValue, upgrade: bool) {
    let upgrade_value = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(headers);
    if let Some(v) = upgrade_value {
        headers.insert(header::UPGRADE, v);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let xff = match headers.get(&X_FORWARDED_FOR) {
        None => conn.client_ip.clone(),
        Some(_) => {
            let prior: Vec<&str> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            let ip = conn.client_ip.to_str().unwrap_or("unknown");
            HeaderValue::from_str(&format!("{}, {ip}", prior.join(", ")))
                .unwrap_or_else(|_| conn.client_ip.clone())
        }
    };
    headers.insert(&X_FORWARDED_FOR, xff);
    let proto = if conn.tls { "https" } else { "http" };
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    headers.insert(&X_FORWARDED_HOST, host.clone());
    headers.insert(&X_FORWARDED_PORT, conn.local_port_value.clone());
    headers.insert(&X_REAL_IP, conn.client_ip.clone());
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(&X_REQUEST_ID, new_request_id());
    }
    headers.insert(header::HOST, host);
}

fn rewrite_response_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    if !headers.contains_key(header::SERVER) {
        headers.insert(header::SERVER, SERVER_VALUE.clone());
    }
}

/// 32 lowercase hex digits of randomness.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u128(..);
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((n >> (i * 4)) & 0xf) as usize];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn redirect_to_https(host: &str, path: &str, query: Option<&str>) -> Response<ProxyBody> {
    // host and path were validated by normalization, so this is a valid header value.
    let location = match query {
        Some(q) => format!("https://{host}{path}?{q}"),
        None => format!("https://{host}{path}"),
    };
    let mut resp = Response::new(Either::Right(Full::default()));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(header::SERVER, SERVER_VALUE.clone());
    resp
}

/// Gantry's own error page: a short text body naming the status.
pub fn error_response(err: &ProxyError) -> Response<ProxyBody> {
    let status = err.status();
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::SERVER, SERVER_VALUE.clone());
    if err.status() == StatusCode::BAD_REQUEST {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Copies bytes both ways between an upgraded client connection and the upstream one.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "tunnel ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnInfo {
        ConnInfo::new("10.1.2.3:5555".parse().unwrap(), 8443, true)
    }

    #[test]
    fn missing_repeated_or_disagreeing_hosts_are_refused() {
        let r = Request::get("/").body(()).unwrap();
        assert!(matches!(
            request_host(&r),
            Err(ProxyError::BadHost("missing Host"))
        ));
        let r = Request::get("/")
            .header("host", "a")
            .header("host", "b")
            .body(())
            .unwrap();
        assert!(matches!(
            request_host(&r),
            Err(ProxyError::BadHost("more than one Host header"))
        ));
        let r = Request::get("http://a.example/x")
            .header("host", "b.example")
            .body(())
            .unwrap();
        assert!(matches!(request_host(&r), Err(ProxyError::BadHost(_))));
        let r = Request::get("http://A.example/x")
            .header("host", "a.example")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r).unwrap(), "a.example");
        let r = Request::get("https://h2.example/x").body(()).unwrap();
        assert_eq!(request_host(&r).unwrap(), "h2.example");
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed_and_forwarding_headers_set() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        rewrite_request_headers(&mut h, &conn(), HeaderValue::from_static("a.example:8443"), false);
        for gone in ["connection", "x-secret", "keep-alive", "te", "upgrade"] {
            assert!(!h.contains_key(gone), "{gone} should be removed");
        }
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.example:8443");
        assert_eq!(h["x-forwarded-port"], "8443");
        assert_eq!(h["x-real-ip"], "10.1.2.3");
        assert_eq!(h["x-request-id"], "abc");
        assert_eq!(h["host"], "a.example:8443");
    }

    #[test]
    fn a_request_id_is_generated_when_absent() {
        let mut h = HeaderMap::new();
        rewrite_request_headers(&mut h, &conn(), HeaderValue::from_static("a"), false);
        let id = h["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn upgrade_headers_survive_for_upgrade_requests() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        rewrite_request_headers(&mut h, &conn(), HeaderValue::from_static("a"), true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn redirect_keeps_path_and_query_and_drops_the_port() {
        let r = redirect_to_https("foo.bar.com", "/a/b", Some("x=1"));
        assert_eq!(r.status(), 308);
        assert_eq!(r.headers()["location"], "https://foo.bar.com/a/b?x=1");
    }

    #[test]
    fn responses_get_a_server_header_only_when_absent() {
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        rewrite_response_headers(&mut h);
        assert_eq!(h["server"], "gantry");
        assert!(!h.contains_key("transfer-encoding"));
        let mut h = HeaderMap::new();
        h.insert("server", HeaderValue::from_static("echo"));
        rewrite_response_headers(&mut h);
        assert_eq!(h["server"], "echo");
    }
}
