//! Policies: one typed model of everything a route asks of a request beyond forwarding it.
//!
//! The controller compiles policies per route ahead of time from its front ends (ingress-nginx
//! annotations today, Gateway API filters next, `ProxyConfig` fields for class-wide ones); the
//! request pipeline applies them in a fixed order of phases. The data path never sees the text a
//! policy came from, only these values: no user string is ever templated into anything.
//!
//! Phases, in the order the pipeline applies them (the order of nginx's own phases, so that an
//! Ingress written for ingress-nginx behaves the same):
//!
//! 0. **client certificate** ([`ClientCertAuth`], `auth-tls-*`): on TLS connections, before
//!    everything else, as nginx judges the certificate (400, 421) when it reads the request head,
//!    before any phase, and matches `auth-tls-match-cn` (403) in the server's rewrite phase. On
//!    plain HTTP (no certificate), right after the HTTPS redirect, so a protected host still
//!    redirects to HTTPS first.
//! 1. **rewrite phase**, answered before any access check, as nginx's `return` and `rewrite` are:
//!    [`HostRedirect`] (from/to www), [`AppRoot`], [`Redirect`] (permanent and temporal), the
//!    Gateway API's [`RequestRedirect`], the CORS preflight ([`Cors`]), [`HttpsRedirect`].
//! 2. **pre-access**: [`RateLimit`] (per client address, 503 by default).
//! 3. **access**: [`Refusal`] (a policy that could not be honoured: the route fails closed),
//!    [`SourceRanges`] (403), [`BasicAuth`] (401), then [`ExternalAuth`] (the one asynchronous
//!    access step: a subrequest to an authentication service, see `crate::ext_auth`).
//! 4. **request**: the body limit (413), the path sent upstream ([`Rewrite`], or the Gateway
//!    API's [`UrlRewrite`] path, query kept), the `Host` sent upstream (`upstream-vhost`, or the
//!    [`UrlRewrite`] hostname) and `X-Forwarded-Prefix` ([`UpstreamRequest`]), then the request
//!    [`HeaderModifier`] (after Gantry's forwarding headers), and the upstream timeouts
//!    ([`UpstreamTimeouts`]: `request` bounds everything from here to the response head, 504).
//!    Then **choosing the endpoint**: the backend is drawn from [`WeightedBackends`] by weight
//!    (all weights 0, or a drawn backend that is `invalid`: 500), or the [`Canary`] decision
//!    picks it; then within it [`Affinity`] (the session cookie), else [`HashBy`], else the
//!    balancer picks the endpoint; a backend without ready endpoints gives way to the route's
//!    `default_backend` (else 503). A copy of the request goes to each [`Mirror`] (fire and
//!    forget). Forwarding goes to the next endpoint as [`Retry`] allows, each attempt bounded by
//!    `backend_request`.
//! 5. **response**: the error backend's page for a status of [`CustomErrors`], CORS response
//!    headers, custom response headers ([`ResponseHeaders`]), the response [`HeaderModifier`]
//!    (backend responses only), the session cookie of a new [`Affinity`] session.
//!
//! Every policy is a plain value: comparing two snapshots compares policies by value, so an
//! unchanged manifest never causes a swap. Runtime state a policy needs (rate-limit buckets) lives
//! beside the pipeline, keyed by the policy's value, and survives snapshot swaps.

mod access;
mod affinity;
mod basic_auth;
mod canary;
mod client_cert;
mod conditions;
mod cors;
mod error_pages;
pub mod ext_auth;
pub mod hash;
mod header_modifier;
pub mod rate_limit;
mod redirect;
mod retry;
mod rewrite;
mod split;
mod upstream;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response};
use http_body_util::Full;

pub use access::{Refusal, SourceRanges};
pub use affinity::{
    Affinity, AffinityError, AffinityMode, SameSite, StickyIndex, StickySession, DEFAULT_COOKIE_NAME,
};
pub use basic_auth::{BasicAuth, Htpasswd, HtpasswdError};
pub use canary::{Canary, CanaryDecision};
pub use client_cert::{
    ClientCertAuth, MatchDn, VerifyClient, SSL_CLIENT_CERT, SSL_CLIENT_ISSUER_DN, SSL_CLIENT_SUBJECT_DN,
    SSL_CLIENT_VERIFY,
};
pub use conditions::{RequestConditions, RequestFacts, ValueMatch};
pub use cors::{Cors, CorsMode, CorsOrigin};
pub use error_pages::{
    CustomErrors, X_CODE, X_FORMAT, X_INGRESS_NAME, X_NAMESPACE, X_ORIGINAL_URI, X_SERVICE_NAME,
    X_SERVICE_PORT,
};
pub use ext_auth::{
    AuthCache, AuthCookies, AuthUrl, ExtAuthError, ExternalAuth, Keepalive, Signin, Template,
};
pub use hash::HashBy;
pub use header_modifier::HeaderModifier;
pub use rate_limit::{RateLimit, RateLimiters};
pub use redirect::{AppRoot, HostRedirect, HttpsRedirect, Redirect, RedirectScheme, RequestRedirect};
pub use retry::{is_idempotent, Condition, Retry, RetryOn};
pub use rewrite::{PathModifier, Rewrite, RewriteError, UrlRewrite};
pub use split::{Mirror, WeightedBackends};
pub use upstream::{
    Alpn, UpstreamProtocol, UpstreamTls, UpstreamTlsError, DEFAULT_SSL_NAME, DEFAULT_VERIFY_DEPTH,
};

/// A response Gantry answers by itself, without a backend.
pub type LocalResponse = Response<Full<Bytes>>;

/// `Server: gantry` on every response Gantry makes itself.
pub static SERVER: HeaderValue = HeaderValue::from_static("gantry");

/// Everything a route asks of a request beyond forwarding it. `Default` is no policy at all.
///
/// Large or shared parts are behind `Arc` so that cloning a route (one per path of a rule) stays
/// cheap and a policy used by a thousand routes is held once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policies {
    // --- rewrite phase ---
    /// Answer plain-HTTP requests with a redirect to `https://` (`ssl-redirect`, on by default for
    /// hosts with TLS; `force-ssl-redirect` for hosts without).
    pub https_redirect: Option<HttpsRedirect>,
    /// Answer every request with a fixed redirect (`permanent-redirect`, `temporal-redirect`).
    pub redirect: Option<Redirect>,
    /// Redirect requests for `/` to the application root (`app-root`, 302).
    pub app_root: Option<AppRoot>,
    /// Redirect every request to another host (`from-to-www-redirect`, on the alias host's route).
    pub host_redirect: Option<HostRedirect>,
    /// CORS: preflights answered here, headers added to responses (`enable-cors`, `cors-*`).
    pub cors: Option<Arc<Cors>>,
    /// A redirect built from the request (the Gateway API's `RequestRedirect` filter).
    pub request_redirect: Option<Arc<RequestRedirect>>,

    // --- pre-access ---
    /// Per-client request rate and connection limits (`limit-rps`, `limit-rpm`, ...).
    pub rate_limit: Option<Arc<RateLimit>>,

    // --- client certificate (before the rewrite phase on TLS, see above) ---
    /// Client certificate authentication of the route's host (`auth-tls-*`): the same for every
    /// route of a host, as ingress-nginx applies it per nginx server.
    pub client_cert: Option<Arc<ClientCertAuth>>,

    // --- access ---
    /// The route cannot be served as its author meant (an access or auth policy that is invalid
    /// or not supported): every request is refused, never served open.
    pub refusal: Option<Refusal>,
    /// Client address allow and deny lists (`whitelist-source-range`, `denylist-source-range`).
    pub source_ranges: Option<Arc<SourceRanges>>,
    /// HTTP basic authentication against an htpasswd list (`auth-type: basic`).
    pub basic_auth: Option<Arc<BasicAuth>>,
    /// External authentication (`auth-url`): a subrequest decides, after the checks above.
    pub external_auth: Option<Arc<ExternalAuth>>,

    // --- request ---
    /// Largest request body in bytes (`proxy-body-size`); a larger one gets 413. `None`: the
    /// class-wide limit from the settings, if any.
    pub max_body_bytes: Option<u64>,
    /// What is changed in the request sent upstream.
    pub upstream: UpstreamRequest,
    /// Per-route upstream timeouts; each `None` falls back to the class-wide setting.
    pub timeouts: UpstreamTimeouts,
    /// When a request goes to the next endpoint (`proxy-next-upstream*`, see [`Retry`] for the
    /// rule). `None`: Gantry's default, [`Retry::CONNECT_ONCE`].
    pub retry: Option<Retry>,
    /// Served instead of the route's backend when that has no ready endpoint, and the error
    /// backend of [`CustomErrors`] (`default-backend`). Set only when it has endpoints.
    pub default_backend: Option<Arc<crate::backend::Backend>>,

    // --- choosing the endpoint (canary first, then within the chosen backend: affinity, hash,
    // balancer) ---
    /// A canary backend that some requests go to instead of the route's (`canary-*` of a canary
    /// Ingress on the same host and path).
    pub canary: Option<Arc<Canary>>,
    /// Weighted backends (the Gateway API's `backendRefs`): each request draws one; the route's
    /// `backend` is the first of them.
    pub split: Option<Arc<WeightedBackends>>,
    /// Copies of each request sent to other backends (`RequestMirror`).
    pub mirrors: Option<Arc<[Mirror]>>,
    /// Cookie session affinity (`affinity: cookie`, `session-cookie-*`).
    pub affinity: Option<Arc<Affinity>>,
    /// Consistent hashing on a request variable (`upstream-hash-by`); affinity wins over it.
    pub hash_by: Option<HashBy>,
    /// The route's balancer (`load-balance`: `round_robin`; `ewma` is served by
    /// [`crate::config::Balancer::LeastRequest`], which also favours the less busy endpoints
    /// but counts requests in flight instead of keeping a latency average). `None`: the
    /// class-wide one.
    pub balancer: Option<crate::config::Balancer>,

    // --- response ---
    /// Headers added to every response of the route (`custom-headers`).
    pub response_headers: Option<Arc<ResponseHeaders>>,
    /// Responses with these statuses get the error backend's page (`custom-http-errors`).
    pub custom_errors: Option<Arc<CustomErrors>>,
    /// Response headers set, added and removed (`ResponseHeaderModifier`).
    pub response_header_modifier: Option<Arc<HeaderModifier>>,

    // --- tracing (decided after routing, see `crate::trace`) ---
    /// The route's own tracing (`enable-opentelemetry`, `opentelemetry-trust-incoming-span`).
    /// `None`: the class-wide setting, trusting incoming spans.
    pub tracing: Option<crate::trace::RouteTracing>,
}

impl Policies {
    /// One short line per policy in force, in the order they apply (for `/debug/explain`).
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(r) = &self.refusal {
            out.push(format!("refused ({}): {}", r.status.as_u16(), r.reason));
        }
        if let Some(c) = &self.client_cert {
            out.push(c.describe());
        }
        if let Some(r) = &self.host_redirect {
            out.push(format!("redirect ({}) to host {}", r.status.as_u16(), r.to));
        }
        if let Some(a) = &self.app_root {
            out.push(format!("app root: / redirects (302) to {}", a.path));
        }
        if let Some(r) = &self.redirect {
            let to = r.location.to_str().unwrap_or("?");
            out.push(format!("redirect ({}) to {to}", r.status.as_u16()));
        }
        if let Some(r) = &self.request_redirect {
            out.push(r.describe());
        }
        if self.cors.is_some() {
            out.push("CORS (preflight answered here)".into());
        }
        if let Some(r) = &self.https_redirect {
            out.push(format!("plain HTTP redirects ({}) to HTTPS", r.status.as_u16()));
        }
        if let Some(l) = &self.rate_limit {
            let mut parts = Vec::new();
            if let Some(rps) = l.rps {
                parts.push(format!("{rps}/s"));
            }
            if let Some(rpm) = l.rpm {
                parts.push(format!("{rpm}/min"));
            }
            if let Some(c) = l.connections {
                parts.push(format!("{c} in flight"));
            }
            out.push(format!(
                "rate limit per client: {} (burst x{})",
                parts.join(", "),
                l.burst_multiplier
            ));
        }
        if let Some(r) = &self.source_ranges {
            out.push(format!(
                "client addresses: {} allowed, {} denied ranges",
                r.allow.len(),
                r.deny.len()
            ));
        }
        if let Some(a) = &self.basic_auth {
            out.push(format!("basic auth ({} users)", a.users.len()));
        }
        if let Some(a) = &self.external_auth {
            let u = &a.url;
            let scheme = if u.https { "https" } else { "http" };
            let mut line = format!(
                "external auth: {} {scheme}://{}{}",
                a.method(),
                u.authority,
                u.path_and_query
            );
            if let Some(s) = &a.signin {
                line.push_str(&format!(", 401 redirects to {} ({})", s.url, s.param));
            }
            if let Some(c) = &a.cache {
                line.push_str(&format!(", cached by {}", c.key));
            }
            out.push(line);
        }
        if let Some(max) = self.max_body_bytes {
            out.push(format!("request body at most {max} bytes"));
        }
        if let Some(r) = &self.upstream.rewrite {
            out.push(format!("path rewritten to {}", r.target()));
        }
        if let Some(h) = &self.upstream.host {
            out.push(format!("Host upstream: {}", h.to_str().unwrap_or("?")));
        }
        if let Some(p) = &self.upstream.forwarded_prefix {
            out.push(format!("X-Forwarded-Prefix: {}", p.to_str().unwrap_or("?")));
        }
        if let Some(u) = &self.upstream.url_rewrite {
            if let Some(h) = &u.hostname {
                out.push(format!("Host upstream: {}", h.to_str().unwrap_or("?")));
            }
            if let Some(p) = &u.path {
                out.push(format!("upstream {}", p.describe()));
            }
        }
        if let Some(h) = &self.upstream.headers {
            out.push(format!("request headers: {}", h.describe()));
        }
        let t = &self.timeouts;
        if let Some(r) = t.request {
            out.push(format!("request timeout {r:?} to the response head (504)"));
        }
        if let Some(b) = t.backend_request {
            out.push(format!("each upstream attempt within {b:?} to the response head"));
        }
        if t.connect.is_some() || t.read.is_some() || t.send.is_some() {
            out.push(format!(
                "upstream timeouts: connect {:?}, read {:?}, send {:?}",
                t.connect, t.read, t.send
            ));
        }
        if let Some(r) = &self.retry {
            let timeout = r
                .timeout
                .map_or("no time limit".to_string(), |t| format!("within {t:?}"));
            out.push(format!(
                "next endpoint on {:?}, {} tries, {timeout}",
                r.on,
                if r.tries == 0 {
                    "unlimited".to_string()
                } else {
                    r.tries.to_string()
                },
            ));
        }
        if let Some(b) = &self.default_backend {
            out.push(format!(
                "default backend {} when the route's has no endpoint",
                b.id
            ));
        }
        if let Some(c) = &self.canary {
            out.push(c.describe());
        }
        if let Some(s) = &self.split {
            out.push(s.describe());
        }
        if let Some(mirrors) = &self.mirrors {
            for m in mirrors.iter() {
                out.push(m.describe());
            }
        }
        if let Some(a) = &self.affinity {
            out.push(format!(
                "session affinity: cookie {} ({})",
                a.cookie_name,
                a.mode.as_str()
            ));
        }
        if let Some(h) = &self.hash_by {
            out.push(format!("upstream hash by {}", h.variable()));
        }
        if let Some(b) = &self.balancer {
            out.push(format!("balancer: {b:?}"));
        }
        if let Some(h) = &self.response_headers {
            out.push(format!("{} extra response headers", h.headers.len()));
        }
        if let Some(c) = &self.custom_errors {
            let what = if c.intercept_upstream {
                ""
            } else {
                " (Gantry's own errors only)"
            };
            out.push(format!("custom error pages for {:?}{what}", c.codes()));
        }
        if let Some(h) = &self.response_header_modifier {
            out.push(format!("response headers: {}", h.describe()));
        }
        if let Some(t) = &self.tracing {
            let traced = match t.enabled {
                Some(true) => "traced",
                Some(false) => "not traced",
                None => "traced as the class says",
            };
            let trust = if t.trust_incoming {
                "continuing the client's trace"
            } else {
                "starting a new trace"
            };
            out.push(format!("tracing: {traced}, {trust}"));
        }
        out
    }

    /// The backends besides the route's own that these policies may send requests to (the
    /// canary's, the default backend): the route table keeps their endpoints' per-worker state too.
    pub fn other_backends(&self) -> impl Iterator<Item = &Arc<crate::backend::Backend>> {
        self.canary
            .iter()
            .map(|c| &c.backend)
            .chain(self.default_backend.iter())
            .chain(self.split.iter().flat_map(|s| s.backends.iter().map(|(_, b)| b)))
            .chain(self.mirrors.iter().flat_map(|m| m.iter().map(|m| &m.backend)))
    }

    /// Policies with only the HTTPS redirect, when `on`.
    pub fn https_redirect(on: bool) -> Self {
        Self {
            https_redirect: on.then(HttpsRedirect::default),
            ..Self::default()
        }
    }
}

/// What is changed in the request sent upstream (after routing, which always uses the request as
/// the client sent it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// The path sent upstream (`rewrite-target`).
    pub rewrite: Option<Arc<Rewrite>>,
    /// The `Host` sent upstream instead of the client's (`upstream-vhost`).
    pub host: Option<HeaderValue>,
    /// `X-Forwarded-Prefix` sent upstream (`x-forwarded-prefix`).
    pub forwarded_prefix: Option<HeaderValue>,
    /// The protocol spoken to the backend (`backend-protocol`).
    pub protocol: UpstreamProtocol,
    /// TLS to the backend (`proxy-ssl-*`), for the TLS protocols; `None` is nginx's defaults
    /// (no verification, no SNI). Ignored by the plain-text protocols.
    pub tls: Option<Arc<UpstreamTls>>,
    /// Request headers set, added and removed (`RequestHeaderModifier`), after the forwarding
    /// headers are written.
    pub headers: Option<Arc<HeaderModifier>>,
    /// The host and path sent upstream (`URLRewrite`).
    pub url_rewrite: Option<Arc<UrlRewrite>>,
}

/// Upstream timeouts of one route (`proxy-connect-timeout`, `proxy-read-timeout`,
/// `proxy-send-timeout`). `None` is the class-wide setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// Opening a connection to one endpoint.
    pub connect: Option<Duration>,
    /// Waiting for the response head, and the longest silence between two pieces of the response
    /// body.
    pub read: Option<Duration>,
    /// The longest the upstream may take to accept two successive pieces of the request body.
    pub send: Option<Duration>,
    /// The whole exchange, from the request's arrival to the end of the response head, retries
    /// included (the Gateway API's `timeouts.request`); past it the client gets 504.
    pub request: Option<Duration>,
    /// One attempt at one endpoint, to the end of the response head (`timeouts.backendRequest`).
    pub backend_request: Option<Duration>,
}

/// Headers added to every response of a route, unless the response already has them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseHeaders {
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ResponseHeaders {
    /// Adds each header the response does not already carry.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for (name, value) in &self.headers {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
}

/// Gantry's own short text response with `status`, e.g. for 401, 403, 413 and 503 decided by a
/// policy.
pub fn local_response(status: http::StatusCode) -> LocalResponse {
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(http::header::SERVER, SERVER.clone());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_compare_by_value() {
        assert_eq!(Policies::https_redirect(true), Policies::https_redirect(true));
        assert_ne!(Policies::https_redirect(true), Policies::default());
        assert_eq!(Policies::https_redirect(false), Policies::default());
    }

    #[test]
    fn response_headers_never_override_the_backend_s() {
        let rh = ResponseHeaders {
            headers: vec![
                (HeaderName::from_static("x-a"), HeaderValue::from_static("1")),
                (HeaderName::from_static("x-b"), HeaderValue::from_static("2")),
            ],
        };
        let mut h = http::HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("backend"));
        rh.apply(&mut h);
        assert_eq!(h["x-a"], "backend");
        assert_eq!(h["x-b"], "2");
    }

    #[test]
    fn describe_names_each_gateway_api_policy() {
        let backend = |name: &str, invalid: bool| {
            let id = crate::backend::BackendId {
                namespace: "gw".into(),
                service: name.into(),
                port: "80".into(),
            };
            Arc::new(if invalid {
                crate::backend::Backend::invalid(id, "missing")
            } else {
                crate::backend::Backend::new(id, vec![])
            })
        };
        let h = HeaderModifier {
            set: vec![(HeaderName::from_static("x-a"), HeaderValue::from_static("1"))],
            ..HeaderModifier::default()
        };
        let p = Policies {
            request_redirect: Some(Arc::new(RequestRedirect {
                scheme: Some(RedirectScheme::Https),
                hostname: None,
                path: Some(PathModifier::Full("/new".into())),
                port: None,
                status: http::StatusCode::MOVED_PERMANENTLY,
            })),
            upstream: UpstreamRequest {
                headers: Some(Arc::new(h.clone())),
                url_rewrite: Some(Arc::new(UrlRewrite {
                    hostname: Some(HeaderValue::from_static("up.example")),
                    path: Some(PathModifier::Prefix {
                        matched: "/a".into(),
                        replacement: "/b".into(),
                    }),
                })),
                ..UpstreamRequest::default()
            },
            timeouts: UpstreamTimeouts {
                request: Some(Duration::from_secs(1)),
                backend_request: Some(Duration::from_millis(500)),
                ..UpstreamTimeouts::default()
            },
            split: Some(Arc::new(WeightedBackends {
                backends: vec![(3, backend("a", false)), (1, backend("b", true))],
            })),
            mirrors: Some(Arc::from([Mirror {
                backend: backend("m", false),
                per_million: 500_000,
            }])),
            response_header_modifier: Some(Arc::new(h)),
            ..Policies::default()
        };
        let lines = p.describe();
        let want = [
            "redirect (301) to scheme https, path replaced by /new",
            "Host upstream: up.example",
            "upstream path prefix /a replaced by /b",
            "request headers: set x-a=1",
            "request timeout 1s to the response head (504)",
            "each upstream attempt within 500ms to the response head",
            "weighted backends: gw/a:80 (3), gw/b:80 (1, invalid: 500)",
            "mirror to gw/m:80 (50% of requests)",
            "response headers: set x-a=1",
        ];
        assert_eq!(lines, want);
    }

    #[test]
    fn local_responses_name_their_status() {
        let r = local_response(http::StatusCode::FORBIDDEN);
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["server"], "gantry");
    }
}
