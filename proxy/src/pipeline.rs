//! The request pipeline: a fixed list of named phases over one per-request context.
//!
//! ```text
//! parse ─▶ route ─▶ request policies ─▶ external auth ─▶ request body ─▶ choose endpoint
//!       ─▶ forward ─▶ response policies ─▶ log
//! ```
//!
//! Tracing is decided right after routing (a route may say whether it is traced): a sampled
//! request gets a server span, with child spans around external auth and the upstream exchange,
//! ended in the log phase and handed to the exporter's queue (`trace`). Without an exporter, or
//! with tracing off, it costs a branch.
//!
//! External authentication is the one asynchronous access step: it runs only for routes that
//! have it (a route without costs one `Option` check), after the synchronous policies and before
//! the body is read.
//!
//! Accepting the connection and TLS happen before (`server`). Each phase is a small function that
//! takes the [`RequestCtx`] and returns a typed outcome: `Ok(value)` to continue,
//! [`Flow::Respond`] to answer now, or a [`ProxyError`] that becomes its status. The response and
//! log phases run for every request, whatever the earlier phases decided.

use std::{borrow::Cow, net::SocketAddr, sync::Arc, time::Instant};

use bytes::Bytes;
use http::{
    header::{self, HeaderValue},
    uri::PathAndQuery,
    Method, Request, Response, StatusCode, Uri, Version,
};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::{
    access_log::{AccessLog, AccessRecord},
    backend::Backend,
    body::RequestBody,
    conn::ConnInfo,
    error::ProxyError,
    ext_auth::ExtAuthRuntime,
    headers::{self, X_REQUEST_ID},
    metrics::{status_class, Label, Metrics, RejectLabels, RequestLabels, ResultLabels, RouteLabels},
    normalize::{normalize_host, normalize_path},
    policy::{
        self,
        ext_auth::{Decision, Vars},
        Affinity, AuthCookies, ExternalAuth, LocalResponse, RateLimiters, StickySession, SERVER,
    },
    routes::{PathMatch, Route},
    snapshot::{Snapshot, SnapshotHandle},
    state,
    trace::{self, kv, kv_arc, kv_i64, Tracer},
    upstream::{self, Timeouts, Upgraded, UpstreamBody},
};

/// The body of every response Gantry sends: the backend's, streamed, or a small one of our own.
pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

/// What a phase decided, when it did not fail.
#[derive(Debug)]
pub enum Flow<T> {
    /// Go on to the next phase with this value.
    Continue(T),
    /// Answer now with this response; the remaining request phases are skipped.
    Respond(LocalResponse),
}

/// Everything one request has learned so far, passed from phase to phase.
#[derive(Debug)]
pub struct RequestCtx<'c> {
    pub conn: &'c ConnInfo,
    /// The snapshot this request runs on, from its first phase to its last.
    pub snapshot: Arc<Snapshot>,
    pub start: Instant,
    pub method: Method,
    /// The route, once the route phase found one.
    pub route: Option<Arc<Route>>,
    /// The endpoint that answered, once forwarded.
    pub upstream: Option<SocketAddr>,
    /// How long the upstream exchange took, from sending to the first endpoint to the response
    /// head or the last failure (retries included); `None` when nothing was sent upstream.
    pub upstream_elapsed: Option<std::time::Duration>,
    /// The access-log record, when the access log is on.
    pub log: Option<AccessRecord>,
    /// The client's address: the peer's, or the one a trusted proxy forwarded for.
    pub client: std::net::IpAddr,
    /// True when `client` came from a trusted proxy's `X-Forwarded-For`.
    pub via_trusted_proxy: bool,
    /// The request's `Origin`, kept for the CORS response headers.
    pub origin: Option<HeaderValue>,
    /// Held while the request counts against a `limit-connections` limit.
    pub rate_guard: Option<policy::rate_limit::InFlight>,
    /// The request's sticky session, when its route has session affinity and the response may
    /// have to set the cookie.
    pub sticky: Option<StickySession>,
    /// The cookies the external auth service set, for the response.
    pub auth_cookies: Option<AuthCookies>,
    /// True when the route's backend had no ready endpoint and its `default-backend` serves the
    /// request instead.
    pub fallback: bool,
    /// What the error backend is told about the request, kept only for routes with
    /// `custom-http-errors`.
    pub error_page: Option<ErrorPageInfo>,
    /// Whether the request is traced, and its spans when it is sampled.
    pub trace: trace::Decision,
}

/// What an error backend is told about the request that failed, captured before the request is
/// handed on.
#[derive(Debug)]
pub struct ErrorPageInfo {
    /// The client's `Host`, sent as the error request's `Host` (nginx's `$best_http_host`).
    pub host: HeaderValue,
    /// `X-Format`: the client's `Accept`.
    pub accept: Option<HeaderValue>,
    /// `X-Original-URI`: the request target as the client sent it (nginx's `$request_uri`).
    pub original_uri: Option<HeaderValue>,
    /// `X-Request-ID`: the one forwarded (the client's, or the one Gantry made).
    pub request_id: Option<HeaderValue>,
}

/// The request target after the parse phase: the normalized host and path, what routing and every
/// later phase use. Borrowed from the request: a canonical request (the usual case) costs no copy.
#[derive(Debug)]
pub struct Target<'r> {
    /// As the client sent it (with a port, any case): forwarded as `Host`.
    pub host_header: HeaderValue,
    /// Lowercase, without port: matched.
    pub host: Cow<'r, str>,
    /// Normalized (RFC 3986): matched and forwarded.
    pub path: Cow<'r, str>,
}

impl Target<'_> {
    /// What forwarding needs of the target once the request is handed on: the `Host` to send, and
    /// the request target when normalization changed the path (the path forwarded is the one that
    /// was matched).
    fn into_forwarding<B>(self, req: &Request<B>) -> Result<(HeaderValue, Option<Uri>), ProxyError> {
        let uri = match &self.path {
            Cow::Borrowed(_) => None,
            Cow::Owned(path) => {
                let pq = match req.uri().query() {
                    Some(q) => PathAndQuery::try_from(format!("{path}?{q}")),
                    None => PathAndQuery::try_from(path.as_str()),
                };
                let pq = pq.map_err(|_| ProxyError::BadTarget("unforwardable path".into()))?;
                Some(Uri::from(pq))
            }
        };
        Ok((self.host_header, uri))
    }
}

/// The shared, read-only part of the data path: where snapshots are loaded from and where requests
/// are counted and logged. Runtime state is per worker (`state`).
#[derive(Debug)]
pub struct Pipeline {
    pub snapshots: SnapshotHandle,
    pub metrics: Metrics,
    /// Open client connections, against `--max-connections`.
    pub connections: ConnectionLimit,
    /// Rate-limit state, shared by the workers and kept across snapshot swaps.
    pub rate_limiters: RateLimiters,
    /// External authentication's clients and result cache, shared by the workers and kept
    /// across snapshot swaps.
    pub ext_auth: ExtAuthRuntime,
    /// Where sampled requests' spans go; `None` (no `--otlp-endpoint`): nothing is traced.
    pub tracer: Option<Tracer>,
    access_log: AccessLog,
}

/// The process-wide cap on open client connections (both traffic listeners, every worker). One
/// atomic per accepted connection, none per request.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: usize,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<std::sync::atomic::AtomicUsize>);

impl ConnectionLimit {
    /// `max` 0 means no limit.
    pub fn new(max: usize) -> Self {
        Self {
            max: if max == 0 { usize::MAX } else { max },
            open: Arc::default(),
        }
    }

    /// A slot for a new connection, or `None` at the limit.
    pub fn try_open(&self) -> Option<ConnectionSlot> {
        use std::sync::atomic::Ordering;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(self.open.clone()))
    }

    pub fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

// === impl Pipeline ===

impl Pipeline {
    /// `max_connections` 0 means no limit.
    pub fn new(snapshots: SnapshotHandle, metrics: Metrics, max_connections: usize) -> Self {
        Self {
            snapshots,
            metrics,
            connections: ConnectionLimit::new(max_connections),
            rate_limiters: RateLimiters::new(),
            ext_auth: ExtAuthRuntime::new(),
            tracer: None,
            access_log: AccessLog::stdout(),
        }
    }

    /// Sends sampled requests' spans to `tracer`.
    pub fn with_tracer(mut self, tracer: Option<Tracer>) -> Self {
        self.tracer = tracer;
        self
    }

    /// Serves one request through every phase. Never fails: an error becomes a response with its
    /// status.
    pub async fn handle(&self, conn: &ConnInfo, req: Request<Incoming>) -> Response<ProxyBody> {
        let snapshot = self.snapshots.load();
        state::with(|s| s.observe(&snapshot));
        let log = snapshot
            .config
            .access_log
            .then(|| AccessRecord::start(&req, conn));
        let mut ctx = RequestCtx {
            conn,
            method: req.method().clone(),
            snapshot,
            start: Instant::now(),
            route: None,
            upstream: None,
            upstream_elapsed: None,
            log,
            client: conn.client.ip(),
            via_trusted_proxy: false,
            origin: None,
            rate_guard: None,
            sticky: None,
            auth_cookies: None,
            fallback: false,
            error_page: None,
            trace: trace::Decision::Untouched,
        };
        // gRPC runs over HTTP/2, where a trailers-only answer is possible; an HTTP/1.1 client
        // sending gRPC content gets the plain HTTP error.
        let grpc = req.version() == http::Version::HTTP_2 && is_grpc(req.headers());
        let resp = match self.request_phases(&mut ctx, req).await {
            Ok(resp) => resp,
            Err(err) if grpc => grpc_error_response(&err).map(Either::Right),
            Err(err) => {
                if err.status().is_server_error() {
                    tracing::debug!(error = %err, "request failed");
                } else if err.side() == crate::error::Side::Downstream {
                    let labels = RejectLabels { reason: err.reason() };
                    self.metrics.rejected_requests.get_or_create(&labels).inc();
                }
                error_response(&err).map(Either::Right)
            }
        };
        let resp = response_policies(&ctx, resp);
        self.log(ctx, &resp);
        resp
    }

    async fn request_phases(
        &self,
        ctx: &mut RequestCtx<'_>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let target = parse(ctx, &req)?;
        let route = route(ctx, &target, &req)?;
        if self.tracer.is_some() {
            start_trace(ctx, &route, &target, &req);
        }
        if let Flow::Respond(resp) = request_policies(ctx, &self.rate_limiters, &route, &target, &req) {
            return Ok(resp.map(Either::Right));
        }
        let granted = match &route.policies.external_auth {
            None => None,
            // Boxed: the subrequest's state is not part of every request's future.
            Some(auth) => {
                match Box::pin(external_auth(ctx, &self.ext_auth, &route, auth, &target, &req)).await {
                    Flow::Continue(granted) => Some(granted),
                    Flow::Respond(resp) => return Ok(resp.map(Either::Right)),
                }
            }
        };
        if route.policies.custom_errors.is_some() {
            ctx.error_page = Some(ErrorPageInfo {
                host: target.host_header.clone(),
                accept: req.headers().get(header::ACCEPT).cloned(),
                original_uri: req
                    .uri()
                    .path_and_query()
                    .and_then(|pq| HeaderValue::from_str(pq.as_str()).ok()),
                // Replaced by the forwarded one (which Gantry makes when the client sent none).
                request_id: req.headers().get(&X_REQUEST_ID).cloned(),
            });
        }
        let forwarding = upstream_target(&route, target, &req)?;
        let mut req = req;
        if let Some(granted) = granted {
            granted.apply(req.headers_mut());
        }
        let forwarded = match route.policies.timeouts.request {
            None => self.exchange(ctx, &route, forwarding, req).await,
            // `timeouts.request`: the whole exchange, from the request's arrival to the response
            // head, retries included. Boxed, so that routes without it keep a smaller future.
            Some(limit) => {
                // A limit too large to add to an instant (years) is no limit: never a panic.
                let deadline = ctx.start.checked_add(limit).map(tokio::time::Instant::from_std);
                let exchange = self.exchange(ctx, &route, forwarding, req);
                let bounded = async {
                    match deadline {
                        Some(deadline) => tokio::time::timeout_at(deadline, exchange).await,
                        None => Ok(exchange.await),
                    }
                };
                match Box::pin(bounded).await {
                    Ok(forwarded) => forwarded,
                    Err(_) => {
                        self.metrics.upstream_timeouts.inc();
                        Err(ProxyError::UpstreamTimeout)
                    }
                }
            }
        };
        match &route.policies.custom_errors {
            None => forwarded,
            Some(errors) => custom_error_page(ctx, &self.metrics, &route, errors, forwarded).await,
        }
    }

    /// The request body, the choice of endpoint and forwarding: what `timeouts.request` bounds.
    async fn exchange(
        &self,
        ctx: &mut RequestCtx<'_>,
        route: &Route,
        forwarding: (HeaderValue, Option<Uri>),
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let req = request_body(ctx, route, req).await?;
        let first = choose_endpoint(ctx, route, &req)?;
        forward(ctx, &self.metrics, route, first, forwarding, req).await
    }

    /// The last phase: metrics and the access log.
    fn log(&self, ctx: RequestCtx<'_>, resp: &Response<ProxyBody>) {
        let status = resp.status();
        let elapsed = ctx.start.elapsed();
        match &ctx.route {
            Some(route) => {
                let generation = ctx.snapshot.generation;
                let upstream = ctx.upstream_elapsed;
                let metrics = &self.metrics;
                state::with(|s| s.count(generation, route, metrics, status.as_u16(), elapsed, upstream));
            }
            None => {
                let empty = || Label(Arc::from(""));
                let route = RouteLabels {
                    kind: "",
                    namespace: empty(),
                    ingress: empty(),
                    service: empty(),
                };
                self.metrics
                    .request_duration
                    .get_or_create(&route)
                    .observe(elapsed.as_secs_f64());
                let labels = RequestLabels {
                    route,
                    status_class: status_class(status.as_u16()),
                };
                self.metrics.requests.get_or_create(&labels).inc();
            }
        }
        if let (trace::Decision::Sampled(t), Some(tracer)) = (ctx.trace, &self.tracer) {
            let mut attrs = vec![kv_i64("http.response.status_code", i64::from(status.as_u16()))];
            if status.is_server_error() {
                attrs.push(kv("error.type", status.as_str().to_string()));
            }
            if let Some(addr) = ctx.upstream {
                attrs.push(kv("gantry.endpoint", addr.to_string()));
            }
            let name = match &ctx.route {
                Some(route) => format!("{} {}", ctx.method, route_path(route)),
                None => ctx.method.to_string(),
            };
            tracer.send(t.finish(name, status.is_server_error(), attrs));
        }
        if let Some(mut rec) = ctx.log {
            rec.finish(&ctx.method, status, resp, elapsed, ctx.upstream);
            self.access_log.write(rec, ctx.snapshot.config.access_log_format);
        }
    }
}

// === phases ===

/// Parse and validate: header limits, the Host, the path. Everything later works on the
/// normalized [`Target`].
pub fn parse<'r, B>(ctx: &mut RequestCtx<'_>, req: &'r Request<B>) -> Result<Target<'r>, ProxyError> {
    if req.headers().len() > ctx.snapshot.config.max_headers {
        return Err(ProxyError::TooManyHeaders);
    }
    headers::check_framing(req.headers())?;
    let host_raw = headers::request_host(req)?;
    let host_header = match req.headers().get(header::HOST) {
        // The client's own header value: a reference count, not a copy.
        Some(v) => v.clone(),
        None => HeaderValue::from_str(host_raw).map_err(|_| ProxyError::BadHost("invalid host"))?,
    };
    let host = normalize_host(host_raw).map_err(|_| ProxyError::BadHost("invalid host"))?;
    let path = normalize_path(req.uri().path()).map_err(|e| ProxyError::BadTarget(e.to_string()))?;
    let trusted = &ctx.snapshot.config.trusted_proxies;
    if let Some(client) = headers::real_client(req.headers(), ctx.client, trusted) {
        ctx.client = client;
        ctx.via_trusted_proxy = true;
    }
    if let Some(rec) = ctx.log.as_mut() {
        rec.set_target(&host, &path);
    }
    Ok(Target {
        host_header,
        host,
        path,
    })
}

/// Route: host, then path, then the route's conditions (method, headers, query, listener), in the
/// snapshot the request runs on.
pub fn route<B>(
    ctx: &mut RequestCtx<'_>,
    target: &Target<'_>,
    req: &Request<B>,
) -> Result<Arc<Route>, ProxyError> {
    let facts = policy::RequestFacts {
        method: req.method(),
        headers: req.headers(),
        query: req.uri().query(),
        tls: ctx.conn.tls,
    };
    let route = ctx
        .snapshot
        .routes_for(ctx.conn.local_ip)
        .lookup_request(&target.host, &target.path, &facts)
        .cloned()
        .ok_or(ProxyError::NoRoute)?;
    ctx.route = Some(route.clone());
    Ok(route)
}

/// The path a route matches, as written (`http.route`).
fn route_path(route: &Route) -> &str {
    match &route.path {
        PathMatch::Exact(p) | PathMatch::Prefix(p) | PathMatch::Regex(p) | PathMatch::FullRegex(p) => {
            p.as_str()
        }
    }
}

/// Tracing: whether the route is traced and the request sampled (see `trace`); a sampled
/// request's server span starts here, with the attributes of OpenTelemetry's HTTP server
/// conventions and the route's source and Service.
pub fn start_trace<B>(ctx: &mut RequestCtx<'_>, route: &Route, target: &Target<'_>, req: &Request<B>) {
    let settings = &ctx.snapshot.config.tracing;
    let attributes = || {
        let version = match req.version() {
            Version::HTTP_2 => "2",
            Version::HTTP_10 => "1.0",
            _ => "1.1",
        };
        let mut a = vec![
            kv("http.request.method", req.method().as_str().to_string()),
            kv("url.scheme", if ctx.conn.tls { "https" } else { "http" }),
            kv("url.path", target.path.to_string()),
            kv("server.address", target.host.to_string()),
            kv_i64("server.port", i64::from(ctx.conn.local_port)),
            kv("client.address", ctx.client.to_string()),
            kv("network.protocol.version", version),
            kv("http.route", route_path(route).to_string()),
            kv("gantry.route.kind", route.source.kind.as_str()),
            kv_arc("k8s.namespace.name", &route.source.namespace),
            kv_arc("gantry.route.name", &route.source.name),
            kv_arc("gantry.service.name", &route.backend.id.service),
            kv_arc("gantry.service.port", &route.backend.id.port),
        ];
        if let Some(ua) = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            a.push(kv("user_agent.original", ua.to_string()));
        }
        a
    };
    ctx.trace = trace::decide(
        settings,
        route.policies.tracing.as_ref(),
        req.headers(),
        attributes,
    );
}

/// Request policies, in the order of nginx's phases (see `policy`): a route that fails closed is
/// refused first of all; then, on TLS, the client certificate; then the rewrite phase (app root,
/// fixed redirects, the CORS preflight, the HTTPS redirect), the client certificate of a plain-HTTP
/// request, pre-access (rate limits), access (client address, basic auth).
pub fn request_policies<B>(
    ctx: &mut RequestCtx<'_>,
    limiters: &RateLimiters,
    route: &Route,
    target: &Target<'_>,
    req: &Request<B>,
) -> Flow<()> {
    let p = &route.policies;
    if let Some(refusal) = &p.refusal {
        return Flow::Respond(refusal.apply());
    }
    // The client certificate, before any phase on TLS (see `policy`).
    if let Some(resp) = p
        .client_cert
        .as_ref()
        .filter(|_| ctx.conn.tls)
        .and_then(|c| c.apply(ctx.conn))
    {
        return Flow::Respond(resp);
    }
    // rewrite phase: a from/to-www alias host is a server of its own in ingress-nginx, whose only
    // directive is the redirect.
    if let Some(r) = &p.host_redirect {
        return Flow::Respond(r.apply(ctx.conn.tls, &target.host_header, &target.path, req.uri().query()));
    }
    if let Some(resp) = p
        .app_root
        .as_ref()
        .and_then(|a| a.apply(ctx.conn.tls, &target.host_header, &target.path))
    {
        return Flow::Respond(resp);
    }
    if let Some(redirect) = &p.redirect {
        return Flow::Respond(redirect.apply());
    }
    if let Some(r) = &p.request_redirect {
        let query = req.uri().query();
        return Flow::Respond(r.apply(
            ctx.conn.tls,
            &target.host,
            &target.host_header,
            &target.path,
            query,
        ));
    }
    if let Some(cors) = &p.cors {
        ctx.origin = req.headers().get(header::ORIGIN).cloned();
        if let Some(resp) = cors.preflight(req.method(), req.headers()) {
            return Flow::Respond(resp);
        }
    }
    if let Some(redirect) = &p.https_redirect {
        if let Some(resp) = redirect.apply(ctx.conn.tls, &target.host, &target.path, req.uri().query()) {
            return Flow::Respond(resp);
        }
    }
    // Plain HTTP carries no certificate: a protected route that did not redirect to HTTPS judges
    // it as such.
    if let Some(resp) = p
        .client_cert
        .as_ref()
        .filter(|_| !ctx.conn.tls)
        .and_then(|c| c.apply(ctx.conn))
    {
        return Flow::Respond(resp);
    }
    // pre-access
    let client = ctx.client;
    if let Some(limit) = &p.rate_limit {
        match limiters.check(limit, client) {
            Ok(guard) => ctx.rate_guard = guard,
            Err(resp) => return Flow::Respond(resp),
        }
    }
    // access
    if let Some(resp) = p.source_ranges.as_ref().and_then(|r| r.apply(client)) {
        return Flow::Respond(resp);
    }
    if let Some(resp) = p.basic_auth.as_ref().and_then(|a| a.apply(req.headers())) {
        return Flow::Respond(resp);
    }
    Flow::Continue(())
}

/// What a request that passed external authentication carries upstream: the headers of
/// `auth-response-headers`, and the `X-Request-ID` the auth service saw.
#[derive(Debug)]
pub struct Granted {
    decision: Decision,
    request_id: Option<HeaderValue>,
}

impl Granted {
    pub fn apply(self, headers: &mut http::HeaderMap) {
        self.decision.apply(headers);
        if let Some(id) = self.request_id {
            headers.insert(&X_REQUEST_ID, id);
        }
    }
}

/// External authentication (`auth-url`): the auth service's answer decides (see
/// `policy::ext_auth`). The subrequest has the route's upstream timeouts (connect plus response,
/// the auth location's `proxy_*_timeout` in ingress-nginx) as its deadline, so a request never
/// waits on it unboundedly. The auth service and the backend see the same `X-Request-ID`.
pub async fn external_auth<B>(
    ctx: &mut RequestCtx<'_>,
    runtime: &ExtAuthRuntime,
    route: &Route,
    auth: &ExternalAuth,
    target: &Target<'_>,
    req: &Request<B>,
) -> Flow<Granted> {
    let (request_id, new_id) = match req.headers().get(&X_REQUEST_ID) {
        Some(id) => (id.clone(), false),
        None => (headers::new_request_id(), true),
    };
    let request_uri = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path(), |pq| pq.as_str());
    let vars = Vars {
        headers: req.headers(),
        method: req.method(),
        request_uri,
        host: &target.host,
        http_host: &target.host_header,
        path: &target.path,
        tls: ctx.conn.tls,
        client: ctx.client,
        via_trusted_proxy: ctx.via_trusted_proxy,
    };
    let timeouts = Timeouts::resolve(&ctx.snapshot.config, &route.policies.timeouts);
    let deadline = timeouts.connect.saturating_add(timeouts.response);
    // The location's keyspace of the cache, only computed when the route caches.
    let location = match &auth.cache {
        Some(_) => format!("{:?}", route.path),
        None => String::new(),
    };
    let (span, sampled) = match &ctx.trace {
        trace::Decision::Sampled(t) => (Some(t.child()), Some(&**t)),
        _ => (None, None),
    };
    let traced = sampled.zip(span.as_ref());
    let verdict = runtime
        .check_traced(auth, &vars, &location, &request_id, deadline, traced)
        .await;
    if let (Some(span), trace::Decision::Sampled(t)) = (span, &mut ctx.trace) {
        let u = &auth.url;
        let scheme = if u.https { "https" } else { "http" };
        let result = match &verdict.decision {
            Decision::Allow(_) => "allowed",
            Decision::Unauthorized(_) => "unauthorized",
            Decision::Forbidden => "forbidden",
            Decision::Error => "error",
        };
        let method = auth.method();
        let attrs = vec![
            kv("gantry.span", "external_auth"),
            kv("http.request.method", method.as_str().to_string()),
            kv(
                "url.full",
                format!("{scheme}://{}{}", u.authority, u.path_and_query),
            ),
            kv("server.address", u.authority.to_string()),
            kv("gantry.ext_auth.result", result),
        ];
        t.end_child(span, method.to_string(), result == "error", attrs);
    }
    if !verdict.cookies.is_empty() {
        ctx.auth_cookies = Some(AuthCookies {
            values: verdict.cookies,
            always: auth.always_set_cookie,
        });
    }
    if let Some(resp) = auth.respond(&verdict.decision, &vars) {
        return Flow::Respond(resp);
    }
    Flow::Continue(Granted {
        decision: verdict.decision,
        request_id: new_id.then_some(request_id),
    })
}

/// The `Host` (the client's, for the forwarding headers) and the request target sent upstream:
/// the normalized path, or what the route's `rewrite-target` makes of it.
pub fn upstream_target<B>(
    route: &Route,
    target: Target<'_>,
    req: &Request<B>,
) -> Result<(HeaderValue, Option<Uri>), ProxyError> {
    let up = &route.policies.upstream;
    let rewritten = match (&up.rewrite, up.url_rewrite.as_ref().and_then(|u| u.path.as_ref())) {
        // `URLRewrite`'s path: the query is kept as the client sent it.
        (_, Some(modifier)) => {
            let path = modifier.apply(&target.path);
            Some(match req.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path.into_owned(),
            })
        }
        (Some(rewrite), None) => rewrite.apply(&target.path, req.uri().query()),
        (None, None) => None,
    };
    match rewritten {
        Some(path_and_query) => {
            let pq = PathAndQuery::try_from(path_and_query)
                .map_err(|_| ProxyError::BadTarget("unforwardable rewritten path".into()))?;
            Ok((target.host_header, Some(Uri::from(pq))))
        }
        None => target.into_forwarding(req),
    }
}

/// Bytes of a request body read before any upstream work (see `body`).
const READ_AHEAD: usize = 64 * 1024;

/// Request body: read ahead up to 64 KiB (or the whole body, if smaller) before any upstream work,
/// within the header read timeout. A body that is malformed or cut off early is the client's 400
/// here, before an endpoint is chosen; a client too slow to send it gets 408.
pub async fn request_body(
    ctx: &RequestCtx<'_>,
    route: &Route,
    req: Request<Incoming>,
) -> Result<Request<RequestBody>, ProxyError> {
    let (parts, body) = req.into_parts();
    let timeout = ctx.snapshot.config.header_read_timeout;
    let max_body = route.policies.max_body_bytes;
    // An HTTP/2 backend (gRPC) may answer before the client sends anything (bidirectional
    // streams), so nothing is waited for; its framing is checked by the HTTP/2 codec anyway.
    let ahead = if route.policies.upstream.protocol.is_http2() {
        0
    } else {
        READ_AHEAD
    };
    let body = RequestBody::read_ahead(body, ahead, timeout, max_body).await?;
    Ok(Request::from_parts(parts, body))
}

/// What the choose-endpoint phase decided: the backend (the route's, or its canary's) and the
/// endpoint of it to try first.
#[derive(Debug)]
pub struct Chosen {
    pub backend: Arc<Backend>,
    /// Index into `backend.endpoints`.
    pub index: usize,
}

/// Choose the endpoint to try first. The backend first: the route's canary decision, when it has
/// a canary (`policy::Canary`, ingress-nginx's order). Then, within that backend: the endpoint
/// the session cookie names (`policy::Affinity`), else the one `upstream-hash-by` maps the request
/// to, else the route's (or the snapshot's) balancer with this worker's state.
pub fn choose_endpoint<B>(
    ctx: &mut RequestCtx<'_>,
    route: &Route,
    req: &Request<B>,
) -> Result<Chosen, ProxyError> {
    let p = &route.policies;
    let headers = req.headers();
    let class_balancer = ctx.snapshot.config.balancer;
    let (mut backend, mut affinity, mut hash_by) = (&route.backend, p.affinity.as_ref(), p.hash_by.as_ref());
    let mut balancer = p.balancer.unwrap_or(class_balancer);
    // Weighted backends (`backendRefs`): each request draws one.
    if let Some(split) = &p.split {
        let total = split.total();
        let drawn = (total > 0).then(|| split.pick(fastrand::u64(..total))).flatten();
        backend = drawn.ok_or_else(|| ProxyError::InvalidBackend("every backend has weight 0".into()))?;
    }
    // A reference that could not be resolved is the route's fault, not the backend's: 500.
    if backend.invalid {
        let why = backend
            .unavailable
            .as_deref()
            .unwrap_or("unresolved backend reference");
        return Err(ProxyError::InvalidBackend(why.to_string()));
    }
    // As in ingress-nginx, a main backend without endpoints answers 503 whatever the canary would
    // say: there is no balancer to ask for the canary decision.
    let canary = p.canary.as_ref().filter(|_| p.split.is_none());
    if let Some(canary) = canary.filter(|_| !route.backend.endpoints.is_empty()) {
        let to_canary = state::with(|s| {
            let mut affinitized = |b: &Backend, a: Option<&Arc<Affinity>>| {
                a.is_some_and(|a| a.is_affinitized(headers, || s.sticky(b)))
            };
            let main = affinitized(&route.backend, p.affinity.as_ref());
            let alt = affinitized(&canary.backend, canary.affinity.as_ref());
            canary.decide(headers, main, alt, |total| fastrand::u32(1..=total))
        })
        .is_some_and(|d| d.to_canary());
        if to_canary {
            backend = &canary.backend;
            affinity = canary.affinity.as_ref();
            hash_by = canary.hash_by.as_ref();
            balancer = canary.balancer.unwrap_or(class_balancer);
        }
    }
    let index = if backend.endpoints.is_empty() {
        None
    } else if let Some(affinity) = affinity {
        let chosen = state::with(|s| {
            let index = s.sticky(backend);
            affinity.choose(backend, &index, headers, || s.pick(backend, balancer))
        })
        .flatten();
        chosen.map(|(i, session)| {
            if session.needs_response() {
                ctx.sticky = Some(session);
            }
            i
        })
    } else if let Some(hash_by) = hash_by {
        let key = hash_by.key(req.uri(), headers, ctx.client);
        policy::hash::rendezvous(key, &backend.endpoints)
    } else {
        state::with(|s| s.pick(backend, balancer)).flatten()
    };
    // `default-backend`: the route's own backend has no ready endpoint (a canary is only chosen
    // when the main backend has some).
    let fallback = match (index, &p.default_backend) {
        (None, Some(default)) => state::with(|s| s.pick(default, balancer))
            .flatten()
            .map(|i| (default, i)),
        _ => None,
    };
    if let Some((default, index)) = fallback {
        ctx.fallback = true;
        return Ok(Chosen {
            backend: default.clone(),
            index,
        });
    }
    match index {
        Some(index) => Ok(Chosen {
            backend: backend.clone(),
            index,
        }),
        None => {
            let why = backend.unavailable.as_deref().unwrap_or("no ready endpoints");
            Err(ProxyError::NoEndpoint(why.to_string()))
        }
    }
}

/// Forward: the request rewritten for the backend (normalized path, forwarding headers, no
/// hop-by-hop headers), sent, and its response head returned; an upgrade is tunnelled.
pub async fn forward(
    ctx: &mut RequestCtx<'_>,
    metrics: &Metrics,
    route: &Route,
    first: Chosen,
    (host_header, uri): (HeaderValue, Option<Uri>),
    mut req: Request<RequestBody>,
) -> Result<Response<ProxyBody>, ProxyError> {
    // The upstream codec sends the target in origin form (path and query) whatever its form here.
    if let Some(uri) = uri {
        *req.uri_mut() = uri;
    }

    // An HTTP/2 backend is never asked for an upgrade: its `Upgrade` goes with the other
    // hop-by-hop headers.
    let upgrade = headers::is_upgrade(&req) && !route.policies.upstream.protocol.is_http2();
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let real_client = ctx.via_trusted_proxy.then_some(ctx.client);
    headers::rewrite_request_headers(req.headers_mut(), ctx.conn, host_header, upgrade, real_client);
    // `X-Forwarded-Host` keeps the client's host; `upstream-vhost` changes only `Host`.
    let up = &route.policies.upstream;
    if let Some(vhost) = &up.host {
        req.headers_mut().insert(header::HOST, vhost.clone());
    }
    // `URLRewrite`'s hostname: the `Host` upstream (`:authority` for HTTP/2, made from it).
    if let Some(host) = up.url_rewrite.as_ref().and_then(|u| u.hostname.as_ref()) {
        req.headers_mut().insert(header::HOST, host.clone());
    }
    // `RequestHeaderModifier`, after Gantry's own forwarding headers, so that it may change them.
    if let Some(modifier) = &up.headers {
        modifier.apply(req.headers_mut());
    }
    // The chosen `backendRef`'s own `RequestHeaderModifier`, after the rule's.
    if let Some(modifier) = &first.backend.request_headers {
        modifier.apply(req.headers_mut());
    }
    if let Some(client_cert) = &route.policies.client_cert {
        client_cert.upstream_headers(ctx.conn, req.headers_mut());
    }
    if let Some(prefix) = &route.policies.upstream.forwarded_prefix {
        req.headers_mut()
            .insert(&headers::X_FORWARDED_PREFIX, prefix.clone());
    }
    if let Some(rec) = ctx.log.as_mut() {
        rec.set_request_id(req.headers().get(&X_REQUEST_ID));
    }
    if let Some(info) = ctx.error_page.as_mut() {
        info.request_id = req.headers().get(&X_REQUEST_ID).cloned();
    }
    if ctx.fallback {
        fallback_headers(route, req.headers_mut());
    }
    *req.version_mut() = Version::HTTP_11;

    // Trace context upstream: Gantry's upstream span as the parent of a sampled request.
    let span = match &ctx.trace {
        trace::Decision::Untouched => None,
        trace::Decision::Strip => {
            req.headers_mut().remove(&trace::TRACEPARENT);
            req.headers_mut().remove(&trace::TRACESTATE);
            None
        }
        trace::Decision::Sampled(t) => {
            let child = t.child();
            t.inject(&child, req.headers_mut());
            Some((child, req.method().clone()))
        }
    };
    let timeouts = Timeouts::resolve(&ctx.snapshot.config, &route.policies.timeouts);
    if let Some(mirrors) = &route.policies.mirrors {
        mirror(ctx, metrics, route, mirrors, &req, timeouts);
    }
    let retry = route.policies.retry.unwrap_or_default();
    // An upgrade cannot be sent twice: only a failed connect (nothing sent) may be retried.
    let retry = if upgrade { retry.connect_only() } else { retry };
    let sent_at = Instant::now();
    let sent = upstream::send(
        &first.backend,
        first.index,
        req,
        timeouts,
        &route.policies.upstream,
        &retry,
        metrics,
    )
    .await;
    ctx.upstream_elapsed = Some(sent_at.elapsed());
    if let (Some((span, method)), trace::Decision::Sampled(t)) = (span, &mut ctx.trace) {
        let id = &first.backend.id;
        let mut attrs = vec![
            kv("gantry.span", "upstream"),
            kv("http.request.method", method.as_str().to_string()),
            kv_arc("gantry.service.namespace", &id.namespace),
            kv_arc("gantry.service.name", &id.service),
            kv_arc("gantry.service.port", &id.port),
        ];
        let error = match &sent {
            Ok((resp, addr)) => {
                trace::endpoint_attributes(*addr, &mut attrs);
                attrs.push(kv_i64(
                    "http.response.status_code",
                    i64::from(resp.status().as_u16()),
                ));
                if resp.status().is_server_error() {
                    attrs.push(kv("error.type", resp.status().as_str().to_string()));
                }
                resp.status().is_server_error()
            }
            Err(e) => {
                attrs.push(kv("error.type", e.reason()));
                true
            }
        };
        t.end_child(span, method.to_string(), error, attrs);
    }
    let (mut resp, addr) = sent?;
    ctx.upstream = Some(addr);

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // Only an upgrade the client asked for, and that Gantry forwarded, is tunnelled.
        let Some(client_upgrade) = client_upgrade else {
            return Err(ProxyError::Upstream(
                "101 Switching Protocols without an upgrade request".into(),
            ));
        };
        let (parts, body) = resp.into_parts();
        let upstream = body
            .into_upgraded()
            .ok_or_else(|| ProxyError::Upstream("upgrade without a connection".into()))?;
        // The tunnel keeps the client connection counted as open for as long as it runs.
        let open = ctx.conn.open.clone();
        tokio::spawn(async move {
            tunnel(client_upgrade, upstream).await;
            drop(open);
        });
        return Ok(Response::from_parts(parts, Either::Right(Full::default())));
    }
    headers::rewrite_response_headers(resp.headers_mut());
    Ok(resp.map(Either::Left))
}

/// The most mirror requests one worker keeps in flight; beyond it copies are dropped (and counted),
/// so that a slow mirror backend cannot pile up tasks and memory.
pub const MAX_MIRRORS_IN_FLIGHT: usize = 256;

/// The longest a mirror request may take, its response body included.
pub const MIRROR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

thread_local! {
    /// Mirror requests in flight on this worker (each worker is one thread with its own runtime).
    static MIRRORS_IN_FLIGHT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// One mirror request in flight on this worker, counted until dropped.
struct MirrorSlot;

impl MirrorSlot {
    fn take() -> Option<Self> {
        MIRRORS_IN_FLIGHT
            .try_with(|n| {
                (n.get() < MAX_MIRRORS_IN_FLIGHT).then(|| {
                    n.set(n.get() + 1);
                    MirrorSlot
                })
            })
            .ok()
            .flatten()
    }
}

impl Drop for MirrorSlot {
    fn drop(&mut self) {
        let _ = MIRRORS_IN_FLIGHT.try_with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// `RequestMirror`: a copy of the request as it goes upstream (head, and a body only when it was
/// read ahead whole or is empty) to one endpoint of each mirror backend, for its share of
/// requests. Fire and forget: the copy runs on a task of its own, bounded by [`MIRROR_TIMEOUT`] and
/// [`MAX_MIRRORS_IN_FLIGHT`]; its answer is read and discarded, and the client never waits for it.
///
/// A body still streaming from the client is not mirrored (counted as `dropped_streaming`):
/// copying it would mean holding the client's stream to the pace of the mirror, or buffering
/// without bound.
fn mirror(
    ctx: &RequestCtx<'_>,
    metrics: &Metrics,
    route: &Route,
    mirrors: &[policy::Mirror],
    req: &Request<RequestBody>,
    timeouts: Timeouts,
) {
    let balancer = route.policies.balancer.unwrap_or(ctx.snapshot.config.balancer);
    let counters = &metrics.mirrors;
    for m in mirrors {
        if m.per_million < 1_000_000 && fastrand::u32(..1_000_000) >= m.per_million {
            continue;
        }
        let Some(index) = state::with(|s| s.pick(&m.backend, balancer)).flatten() else {
            counters.no_endpoint.inc();
            continue;
        };
        let Some(copy) = upstream::replay_copy(req) else {
            counters.dropped_streaming.inc();
            continue;
        };
        let Some(slot) = MirrorSlot::take() else {
            counters.dropped_in_flight.inc();
            continue;
        };
        counters.sent.inc();
        let backend = m.backend.clone();
        let upstream = route.policies.upstream.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let exchange = async {
                let retry = policy::Retry::CONNECT_ONCE;
                match upstream::send(&backend, index, copy, timeouts, &upstream, &retry, &metrics).await {
                    Ok((resp, _)) => {
                        // Read to the end, so that the connection can go back to the pool.
                        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                    }
                    Err(e) => tracing::debug!(error = %e, backend = %backend.id, "mirror request failed"),
                }
            };
            if tokio::time::timeout(MIRROR_TIMEOUT, exchange).await.is_err() {
                tracing::debug!(backend = %backend.id, "mirror request timed out");
            }
        });
    }
}

/// The headers ingress-nginx adds to a request its location sends to the custom default backend
/// because the route's Service has no endpoint (`nginx.tmpl`: `X-Code 503`, and the route's
/// namespace, Ingress, Service and port). The request is otherwise forwarded as it is, and the
/// default backend's response is returned as it is (ingress-nginx's e2e test expects its 200).
fn fallback_headers(route: &Route, headers: &mut http::HeaderMap) {
    let service = &route.backend.id;
    headers.insert(&policy::X_CODE, HeaderValue::from_static("503"));
    if let Some(accept) = headers.get(header::ACCEPT).cloned() {
        headers.insert(&policy::X_FORMAT, accept);
    }
    for (name, value) in [
        (&policy::X_NAMESPACE, &*route.source.namespace),
        (&policy::X_INGRESS_NAME, &*route.source.name),
        (&policy::X_SERVICE_NAME, &*service.service),
        (&policy::X_SERVICE_PORT, &*service.port),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
}

/// `custom-http-errors`: when the route's answer has a listed status, the error backend's response
/// as it is, its own status included (as ingress-nginx; see `policy::CustomErrors`); otherwise, or
/// when the error backend cannot give one, the answer as it was.
///
/// What counts as the route's answer: the backend's response (unless
/// `disable-proxy-intercept-errors`), and Gantry's own errors in reaching it (no endpoint 503,
/// connect or protocol failure 502, timeout 504), which nginx's `error_page` catches too. Errors
/// of the client's making (400, 408, 413...) and responses of the `default-backend` fallback are
/// never replaced.
async fn custom_error_page(
    ctx: &mut RequestCtx<'_>,
    metrics: &Metrics,
    route: &Route,
    errors: &policy::CustomErrors,
    forwarded: Result<Response<ProxyBody>, ProxyError>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let status = match &forwarded {
        Ok(resp) if errors.intercept_upstream && !ctx.fallback => resp.status(),
        Err(e) if e.side() != crate::error::Side::Downstream => e.status(),
        _ => return forwarded,
    };
    if !errors.contains(status) {
        return forwarded;
    }
    let Some(info) = ctx.error_page.take() else {
        return forwarded;
    };
    // The route's `default-backend` (set only with endpoints), else the global default backend.
    let backend = route.policies.default_backend.as_ref().or_else(|| {
        ctx.snapshot
            .routes_for(ctx.conn.local_ip)
            .default_route()
            .map(|r| &r.backend)
            .filter(|b| !b.endpoints.is_empty())
    });
    let Some(backend) = backend else {
        metrics
            .error_pages
            .get_or_create(&ResultLabels { result: "no_backend" })
            .inc();
        return forwarded;
    };
    let balancer = ctx.snapshot.config.balancer;
    let Some(index) = state::with(|s| s.pick(backend, balancer)).flatten() else {
        return forwarded;
    };
    let req = error_page_request(ctx, route, status, info);
    let timeouts = Timeouts::resolve(&ctx.snapshot.config, &route.policies.timeouts);
    let sent = upstream::send(
        backend,
        index,
        req,
        timeouts,
        &policy::UpstreamRequest::default(),
        &policy::Retry::CONNECT_ONCE,
        metrics,
    )
    .await;
    match sent {
        Ok((mut page, _)) => {
            metrics
                .error_pages
                .get_or_create(&ResultLabels { result: "ok" })
                .inc();
            headers::rewrite_response_headers(page.headers_mut());
            Ok(page.map(Either::Left))
        }
        Err(e) => {
            tracing::debug!(error = %e, backend = %backend.id, "error backend failed; the original answer is returned");
            metrics
                .error_pages
                .get_or_create(&ResultLabels { result: "failed" })
                .inc();
            forwarded
        }
    }
}

/// The request to the error backend, as ingress-nginx's `@custom_*` locations send it: `GET /`
/// (they rewrite every path to `/`), the client's `Host`, `X-Forwarded-For` the client, and the
/// `X-Code`... headers.
fn error_page_request(
    ctx: &RequestCtx<'_>,
    route: &Route,
    status: StatusCode,
    info: ErrorPageInfo,
) -> Request<RequestBody> {
    let mut req = Request::new(RequestBody::empty());
    *req.uri_mut() = Uri::from_static("/");
    let h = req.headers_mut();
    h.insert(header::HOST, info.host);
    h.insert(&policy::X_CODE, HeaderValue::from(status.as_u16()));
    if let Some(accept) = info.accept {
        h.insert(&policy::X_FORMAT, accept);
    }
    if let Some(uri) = info.original_uri {
        h.insert(&policy::X_ORIGINAL_URI, uri);
    }
    let service = &route.backend.id;
    for (name, value) in [
        (&policy::X_NAMESPACE, &*route.source.namespace),
        (&policy::X_INGRESS_NAME, &*route.source.name),
        (&policy::X_SERVICE_NAME, &*service.service),
        (&policy::X_SERVICE_PORT, &*service.port),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    if let Some(id) = info.request_id {
        h.insert(&X_REQUEST_ID, id);
    }
    h.insert(
        &headers::X_FORWARDED_FOR,
        HeaderValue::from_str(&ctx.client.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
    );
    req
}

/// Response policies: the route's CORS and custom headers, the `ResponseHeaderModifier` of a
/// backend's response, then HSTS on TLS responses (class-wide,
/// from the snapshot's settings). They apply to every response of the route, Gantry's own
/// included, as ingress-nginx's `add_header ... always` does.
pub fn response_policies(ctx: &RequestCtx<'_>, mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
    if let Some(route) = &ctx.route {
        let p = &route.policies;
        if let Some(cors) = &p.cors {
            cors.apply_response(ctx.origin.as_ref(), resp.headers_mut());
        }
        if let Some(extra) = &p.response_headers {
            extra.apply(resp.headers_mut());
        }
        // `ResponseHeaderModifier` changes the backend's responses (the Gateway API's filter is on
        // what the backend sent), not Gantry's own answers.
        if let Some(modifier) = p
            .response_header_modifier
            .as_ref()
            .filter(|_| ctx.upstream.is_some())
        {
            modifier.apply(resp.headers_mut());
        }
        if let Some(cookies) = &ctx.auth_cookies {
            let status = resp.status();
            cookies.apply(status, resp.headers_mut());
        }
        if let Some(sticky) = &ctx.sticky {
            let location = match &route.path {
                PathMatch::Exact(p)
                | PathMatch::Prefix(p)
                | PathMatch::Regex(p)
                | PathMatch::FullRegex(p) => p.as_str(),
            };
            let now = std::time::SystemTime::now();
            if let Some(cookie) = sticky.set_cookie(ctx.upstream, ctx.conn.tls, location, now) {
                resp.headers_mut().append(header::SET_COOKIE, cookie);
            }
        }
    }
    if let (true, Some(hsts)) = (ctx.conn.tls, &ctx.snapshot.config.hsts) {
        let headers = resp.headers_mut();
        if !headers.contains_key(header::STRICT_TRANSPORT_SECURITY) {
            if let Ok(v) = HeaderValue::from_str(&hsts.header_value()) {
                headers.insert(header::STRICT_TRANSPORT_SECURITY, v);
            }
        }
    }
    resp
}

/// Whether a request is gRPC (`content-type: application/grpc`, `application/grpc+proto`, ...).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Gantry's own error for a gRPC request: a trailers-only response (HTTP 200, no body) whose
/// `grpc-status` is the gRPC code for the HTTP status, as gRPC's HTTP-to-gRPC mapping and Envoy
/// give it, so that a gRPC client reads `UNIMPLEMENTED` for an unrouted method or `UNAVAILABLE`
/// for a backend without endpoints instead of failing to parse a text body.
pub fn grpc_error_response(err: &ProxyError) -> LocalResponse {
    let status = err.status();
    let code: &'static str = match status.as_u16() {
        400 => "13",
        401 => "16",
        403 => "7",
        404 => "12",
        429 | 502 | 503 | 504 => "14",
        _ => "2",
    };
    let mut resp = Response::new(Full::new(Bytes::new()));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from_static(code));
    let message = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
    if let Ok(v) = HeaderValue::from_str(&message) {
        h.insert("grpc-message", v);
    }
    h.insert(header::SERVER, SERVER.clone());
    resp
}

/// Gantry's own error page: a short text body naming the status.
pub fn error_response(err: &ProxyError) -> LocalResponse {
    let status = err.status();
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::SERVER, SERVER.clone());
    if status == StatusCode::BAD_REQUEST {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Copies bytes both ways between an upgraded client connection and the upstream one.
async fn tunnel(client: hyper::upgrade::OnUpgrade, mut upstream: Upgraded) {
    let client = match client.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "tunnel ended");
    }
}
