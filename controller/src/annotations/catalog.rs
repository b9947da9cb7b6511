//! Every `nginx.ingress.kubernetes.io/*` annotation Gantry knows, with what Gantry does about it.
//!
//! The table covers the annotation table of ingress-nginx's user guide
//! (`docs/user-guide/nginx-configuration/annotations.md`, its final release of March 2026), the
//! annotations the same page only describes in prose, and those its parsers accept without
//! documenting them (`allowlist-source-range`, `limit-allowlist`, `relative-redirects`, ...).
//!
//! It is the single source of `gantry check`, of the diagnostics' wording for annotations that are
//! ignored or refused outright, and of the README's table ([`markdown_table`], checked by a test).
//! Annotations whose outcome depends on their value (`backend-protocol`, `auth-type`, snippets)
//! say so in their text; the parser reports the outcome for the value at hand.

use std::fmt::Write as _;

/// Annotation key prefix.
pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// What Gantry does with an annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Applied as ingress-nginx applies it.
    Honoured,
    /// Applied, with the difference described.
    HonouredWithDifference(&'static str),
    /// Not applied, and harmless to leave out: why.
    Ignored(&'static str),
    /// Not applied: why, and what to use instead. A refused security annotation makes its Ingress
    /// fail closed (its paths answer 503).
    Refused(&'static str),
}

/// The section of ingress-nginx's documentation an annotation belongs to, for grouping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Redirect,
    Rewrite,
    Hosts,
    Authentication,
    ExternalAuthentication,
    ClientCertificates,
    AccessControl,
    RateLimiting,
    Cors,
    Headers,
    BodySize,
    Timeouts,
    Buffering,
    Backend,
    BackendTls,
    LoadBalancing,
    SessionAffinity,
    Canary,
    ErrorPages,
    Tls,
    Snippets,
    ModSecurity,
    Mirror,
    Logging,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Redirect => "Redirect",
            Family::Rewrite => "Rewrite",
            Family::Hosts => "Hosts",
            Family::Authentication => "Authentication",
            Family::ExternalAuthentication => "External authentication",
            Family::ClientCertificates => "Client certificates",
            Family::AccessControl => "Access control",
            Family::RateLimiting => "Rate limiting",
            Family::Cors => "CORS",
            Family::Headers => "Headers",
            Family::BodySize => "Body size",
            Family::Timeouts => "Timeouts and retries",
            Family::Buffering => "Buffering",
            Family::Backend => "Backend",
            Family::BackendTls => "Backend TLS",
            Family::LoadBalancing => "Load balancing",
            Family::SessionAffinity => "Session affinity",
            Family::Canary => "Canary",
            Family::ErrorPages => "Error pages",
            Family::Tls => "TLS",
            Family::Snippets => "Snippets",
            Family::ModSecurity => "ModSecurity",
            Family::Mirror => "Mirror",
            Family::Logging => "Logging and tracing",
        }
    }
}

/// One annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Without the `nginx.ingress.kubernetes.io/` prefix.
    pub name: &'static str,
    pub family: Family,
    /// Access control or authentication (or, for `custom-headers`, response security headers that
    /// ingress-nginx also refuses to serve without): when such an annotation is invalid, refused,
    /// or names a Secret or ConfigMap that is missing or broken, the Ingress fails closed.
    pub security: bool,
    pub support: Support,
}

use Family::*;
use Support::*;

const fn e(name: &'static str, family: Family, security: bool, support: Support) -> Entry {
    Entry {
        name,
        family,
        security,
        support,
    }
}

const BUFFERING: &str = "Gantry streams request and response bodies and buffers at most 64 KiB of a \
    request body before choosing an endpoint; nginx's buffers and temporary files do not exist";
const SUBSET: &str = "subset hashing is not supported: each key goes to one endpoint, as without it";
const PROXY_SSL_OFF: &str = "needs proxy-ssl-secret and backend-protocol HTTPS or GRPCS (otherwise \
    ignored, as in ingress-nginx)";
const MODSECURITY: &str = "ModSecurity is not supported (ingress-nginx runs it in detection-only \
    mode unless a modsecurity-snippet turns the rule engine on)";
const MIRROR: &str = "request mirroring is not yet supported";
const OPERATION_NAME: &str = "spans are named by method and route (OpenTelemetry's HTTP \
    conventions); the nginx variables of the template do not exist in Gantry";
const SNIPPET: &str = "never executed: Gantry runs no nginx configuration. Write the typed \
    annotation instead (the report names it: more_set_headers → custom-headers, proxy_set_header \
    Host → upstream-vhost, rewrite → rewrite-target, return → permanent-redirect or \
    temporal-redirect, client_max_body_size → proxy-body-size, ...). A snippet with an access \
    directive (allow, deny, auth_basic, auth_request, satisfy, access_by_lua, return 401 or 403) makes \
    the Ingress fail closed (its paths answer 503); without one the Ingress is served without the snippet";
const TRAILING_SLASH: &str = "308 to https:// with the host (without port) and the request's path \
    and query; the path keeps a trailing slash, which ingress-nginx strips unless \
    preserve-trailing-slash is \"true\"";
const FIXED_REDIRECT: &str = "the location is sent exactly as written: nginx variables \
    ($request_uri, ...) are not expanded, and such a value is reported";
const COOKIE_REWRITE: &str = "rewriting the backend's Set-Cookie headers is not supported";
const LOCATION_REWRITE: &str = "rewriting the backend's Location headers is not supported (the value \
    off, ingress-nginx's default, is Gantry's behaviour)";

const NEXT_UPSTREAM: &str = "each endpoint is tried at most once per request; once a request was \
    sent it is resent only if its body was empty or within the 64 KiB read ahead, and only for an \
    idempotent method (RFC 9110), or with non_idempotent for a request without body: a body that \
    reached a backend is never sent twice. Without any proxy-next-upstream annotation a failed \
    connect goes once to another endpoint";
const CUSTOM_ERRORS: &str = "the client gets the error backend's response with its own status, as \
    in ingress-nginx (the error backend should answer with the X-Code it is sent); it gets GET / with \
    X-Code, X-Format, X-Original-URI, X-Namespace, X-Ingress-Name, X-Service-Name, X-Service-Port \
    and X-Request-ID; without an error backend (default-backend with endpoints, else \
    spec.defaultBackend), or when it fails, the original response is returned. Only the annotation: \
    there is no class-wide custom-http-errors";

/// Every annotation, grouped by family.
pub static CATALOG: &[Entry] = &[
    // --- Redirect ---
    e(
        "ssl-redirect",
        Redirect,
        false,
        HonouredWithDifference(TRAILING_SLASH),
    ),
    e(
        "force-ssl-redirect",
        Redirect,
        false,
        HonouredWithDifference(
            "redirects plain HTTP to HTTPS for hosts with or without spec.tls; 308 like ssl-redirect, \
         and the path keeps a trailing slash; X-Forwarded-Proto is not consulted",
        ),
    ),
    e(
        "preserve-trailing-slash",
        Redirect,
        false,
        HonouredWithDifference("Gantry always keeps the trailing slash in HTTPS redirects, as with \"true\""),
    ),
    e(
        "permanent-redirect",
        Redirect,
        false,
        HonouredWithDifference(FIXED_REDIRECT),
    ),
    e("permanent-redirect-code", Redirect, false, Honoured),
    e(
        "temporal-redirect",
        Redirect,
        false,
        HonouredWithDifference(FIXED_REDIRECT),
    ),
    e("temporal-redirect-code", Redirect, false, Honoured),
    e("app-root", Redirect, false, Honoured),
    e(
        "from-to-www-redirect",
        Redirect,
        false,
        HonouredWithDifference(super::redirect::WWW_PORT),
    ),
    e(
        "relative-redirects",
        Redirect,
        false,
        Ignored("Gantry's own redirects carry absolute locations, which every client follows"),
    ),
    e(
        "use-port-in-redirects",
        Redirect,
        false,
        Refused("not supported: HTTPS redirects go to the default port 443"),
    ),
    // --- Rewrite ---
    e(
        "rewrite-target",
        Rewrite,
        false,
        HonouredWithDifference(
            "only the capture groups $1 to $9 are substituted; a target with nginx variables, or one \
         that does not compile against a path, makes that path answer 503 (it would send requests \
         to the wrong place otherwise)",
        ),
    ),
    e(
        "use-regex",
        Rewrite,
        false,
        HonouredWithDifference(
            "Prefix and ImplementationSpecific paths of the host become case-insensitive regexes \
         anchored at the start, tried longest first; Exact paths stay exact and are tried first \
         (ingress-nginx makes them regexes too)",
        ),
    ),
    e(
        "x-forwarded-prefix",
        Rewrite,
        false,
        HonouredWithDifference(
            "a value with $ (capture groups, nginx variables) is refused and the header is not sent",
        ),
    ),
    e(
        "enable-rewrite-log",
        Rewrite,
        false,
        Ignored("Gantry has no rewrite log; the access log records each request as received"),
    ),
    // --- Hosts ---
    e(
        "server-alias",
        Hosts,
        false,
        HonouredWithDifference(
            "each alias gets every path of the Ingress's hosts, from every Ingress; an alias that is the \
         host of an Ingress is skipped (the explicit host wins, and it is reported); regex aliases \
         (~...) are not supported; an alias is served the default certificate unless spec.tls lists \
         it",
        ),
    ),
    e(
        "upstream-vhost",
        Hosts,
        false,
        HonouredWithDifference(
            "a value with nginx variables ($host, ...) is refused and the client's Host is sent",
        ),
    ),
    // --- Authentication ---
    e(
        "auth-type",
        Authentication,
        true,
        HonouredWithDifference(
            "basic only; digest is refused and the Ingress fails closed (its paths answer 503)",
        ),
    ),
    e(
        "auth-secret",
        Authentication,
        true,
        HonouredWithDifference(
            "name or namespace/name in the Ingress's own namespace (ingress-nginx's default, \
         allow-cross-namespace-resources: false); a missing or broken Secret, or auth-secret \
         without auth-type, makes the Ingress fail closed",
        ),
    ),
    e("auth-secret-type", Authentication, true, Honoured),
    e("auth-realm", Authentication, true, Honoured),
    e(
        "satisfy",
        Authentication,
        true,
        HonouredWithDifference(
            "all, as ingress-nginx's default; any is applied as all (stricter: a client must pass both \
         the address list and the password)",
        ),
    ),
    e(
        "enable-global-auth",
        Authentication,
        true,
        Ignored(
            "Gantry has no global external authentication (global-auth-url): there is nothing to turn \
         on or off",
        ),
    ),
    // --- External authentication ---
    e(
        "auth-url",
        ExternalAuthentication,
        true,
        HonouredWithDifference(
            "nginx variables are read once into the ones Gantry knows ($host, $http_host, $scheme, \
         $request_uri, $escaped_request_uri, $uri, $args, $remote_addr, $remote_user, $http_*, \
         $cookie_*, $arg_*, ...; any other makes the Ingress fail closed); a URL without a path asks \
         for /; an https:// auth service must present a certificate for its host from the Mozilla \
         roots (nginx does not verify it); the subrequest must finish within the route's connect \
         plus read timeout, else 500. An invalid URL makes the Ingress fail closed (503), as in \
         ingress-nginx",
        ),
    ),
    e("auth-method", ExternalAuthentication, true, Honoured),
    e(
        "auth-signin",
        ExternalAuthentication,
        true,
        HonouredWithDifference(
            "a 401 from the auth service becomes a 302 to it with rd=<scheme>://<host><escaped URI>, \
         as in ingress-nginx; an invalid value makes the Ingress fail closed (ingress-nginx \
         answers 401 without the redirect)",
        ),
    ),
    e(
        "auth-signin-redirect-param",
        ExternalAuthentication,
        true,
        HonouredWithDifference(
            "a parameter name of letters, digits and -._~ (ingress-nginx also takes /:,?&=)",
        ),
    ),
    e(
        "auth-response-headers",
        ExternalAuthentication,
        true,
        HonouredWithDifference(
            "each header is removed from the request and set to every value the auth service sent \
         (nginx joins them); Content-Length, Transfer-Encoding and hop-by-hop headers are \
         refused",
        ),
    ),
    e(
        "auth-proxy-set-headers",
        ExternalAuthentication,
        true,
        HonouredWithDifference(
            "the ConfigMap must be in the Ingress's namespace; values may use the variables auth-url \
         knows; framing and hop-by-hop headers are refused. A missing or invalid ConfigMap makes \
         the Ingress fail closed, as in ingress-nginx",
        ),
    ),
    e("auth-request-redirect", ExternalAuthentication, true, Honoured),
    e(
        "auth-cache-key",
        ExternalAuthentication,
        true,
        HonouredWithDifference(
            "results are kept per request host, route path, auth URL and key (ingress-nginx: server \
         name, location and key), at most 10,000 across all routes; an invalid key makes the \
         Ingress fail closed (ingress-nginx does not cache)",
        ),
    ),
    e(
        "auth-cache-duration",
        ExternalAuthentication,
        true,
        HonouredWithDifference(
            "as proxy_cache_valid: an answer with Set-Cookie or Cache-Control no-cache, no-store or \
         private is not cached, but its own max-age or Expires does not change the time; several \
         times in one rule are added up; a word that is neither a status nor a time is invalid",
        ),
    ),
    e(
        "auth-keepalive",
        ExternalAuthentication,
        true,
        HonouredWithDifference(
            "connections to the auth service are pooled even without it (32 idle per host; \
         ingress-nginx keeps none), with HTTP/2 clients and variables in the host too; 0 or less \
         keeps none",
        ),
    ),
    e(
        "auth-keepalive-share-vars",
        ExternalAuthentication,
        true,
        HonouredWithDifference(
            "Gantry always sends the auth service and the backend the same X-Request-ID (what \
         sharing variables is used for); there are no other nginx variables to share",
        ),
    ),
    e(
        "auth-keepalive-requests",
        ExternalAuthentication,
        true,
        HonouredWithDifference(
            "0 or less keeps no connection, as in ingress-nginx; otherwise a connection is not retired \
         after a number of requests (hyper's pool has no such limit), only when idle or closed",
        ),
    ),
    e("auth-keepalive-timeout", ExternalAuthentication, true, Honoured),
    e("auth-always-set-cookie", ExternalAuthentication, true, Honoured),
    e(
        "auth-snippet",
        ExternalAuthentication,
        true,
        Refused(
            "never executed, and an auth snippet always makes the Ingress fail closed (its paths answer \
         503): use auth-proxy-set-headers for headers to the auth service, or auth-type: basic",
        ),
    ),
    // --- Client certificates ---
    e(
        "auth-tls-secret",
        ClientCertificates,
        true,
        HonouredWithDifference(
            "per host, as in ingress-nginx: the oldest Ingress of a host with auth-tls-secret decides for \
             every path of the host (another Ingress's differing auth-tls-* are reported and ignored there). \
             namespace/name in the Ingress's own namespace, with ca.crt and an optional ca.crl; a missing \
             Secret, or one without a usable ca.crt (ingress-nginx then serves without client \
             authentication), makes the Ingress fail closed, and with it every path of the host (ingress-nginx \
             answers 403 for the host). A request whose TLS connection was opened for another host (SNI) \
             answers 421, as from nginx",
        ),
    ),
    e(
        "auth-tls-verify-client",
        ClientCertificates,
        true,
        HonouredWithDifference(
            "optional answers 400 to a certificate that is not of the CA, as nginx does (the user guide says \
             it passes); a plain-HTTP request that the HTTPS redirect does not take is judged as carrying no \
             certificate (nginx does not check it); an invalid value makes the Ingress fail closed \
             (ingress-nginx uses on)",
        ),
    ),
    e(
        "auth-tls-verify-depth",
        ClientCertificates,
        true,
        HonouredWithDifference(
            "the most intermediate certificates between the client's certificate and a CA of ca.crt (as \
             proxy-ssl-verify-depth); 0 is the default 1, as in ingress-nginx; a value that is not a whole \
             number of 0 or more makes the Ingress fail closed (ingress-nginx uses 1)",
        ),
    ),
    e(
        "auth-tls-error-page",
        ClientCertificates,
        true,
        HonouredWithDifference(
            "a URL gets a 302 to it, as in ingress-nginx; a local path (/...) or named location (@...) is not \
             served in place of the error (no internal redirects): the client gets the 400, and this is \
             reported",
        ),
    ),
    e(
        "auth-tls-pass-certificate-to-upstream",
        ClientCertificates,
        true,
        Honoured,
    ),
    e(
        "auth-tls-match-cn",
        ClientCertificates,
        true,
        HonouredWithDifference(
            "matched against the whole subject DN in RFC 2253 form (CN=client,O=Org,C=US), unanchored, as \
             nginx's template does (the user guide says the CN); Rust regex syntax (no look-around or \
             back-references); no match, or no certificate, is 403",
        ),
    ),
    // --- Access control ---
    e("allowlist-source-range", AccessControl, true, Honoured),
    e(
        "whitelist-source-range",
        AccessControl,
        true,
        HonouredWithDifference("the older name of allowlist-source-range, which wins when both are set"),
    ),
    e("denylist-source-range", AccessControl, true, Honoured),
    // --- Rate limiting ---
    e("limit-rps", RateLimiting, false, Honoured),
    e("limit-rpm", RateLimiting, false, Honoured),
    e(
        "limit-connections",
        RateLimiting,
        false,
        HonouredWithDifference(
            "counts a client's requests in flight (an HTTP/2 connection may carry several)",
        ),
    ),
    e("limit-burst-multiplier", RateLimiting, false, Honoured),
    e("limit-allowlist", RateLimiting, false, Honoured),
    e(
        "limit-whitelist",
        RateLimiting,
        false,
        HonouredWithDifference("the older name of limit-allowlist, which wins when both are set"),
    ),
    e(
        "limit-rate",
        RateLimiting,
        false,
        Refused("not supported: response bandwidth is not throttled"),
    ),
    e(
        "limit-rate-after",
        RateLimiting,
        false,
        Refused("not supported: response bandwidth is not throttled"),
    ),
    // --- CORS ---
    e("enable-cors", Cors, false, Honoured),
    e(
        "cors-allow-origin",
        Cors,
        false,
        HonouredWithDifference(
            "an invalid origin is skipped and reported, as in ingress-nginx, but a value its validator \
         refuses keeps the valid origins it names instead of falling back to *; the null origin is \
         refused; https://*.example.com matches one label, as in ingress-nginx",
        ),
    ),
    e("cors-allow-methods", Cors, false, Honoured),
    e("cors-allow-headers", Cors, false, Honoured),
    e("cors-expose-headers", Cors, false, Honoured),
    e("cors-allow-credentials", Cors, false, Honoured),
    e("cors-max-age", Cors, false, Honoured),
    // --- Headers ---
    e(
        "custom-headers",
        Headers,
        true,
        HonouredWithDifference(
            "a header is added only when the backend's response does not carry it (more_set_headers \
         replaces it); there is no global-allowed-response-headers list, but framing and hop-by-hop \
         headers are refused; the ConfigMap must be in the Ingress's namespace. As in \
         ingress-nginx, a missing or invalid ConfigMap makes the Ingress answer 503",
        ),
    ),
    e(
        "connection-proxy-header",
        Headers,
        false,
        Ignored("Gantry manages upstream connections (keep-alive, upgrades) itself"),
    ),
    // --- Body size ---
    e(
        "proxy-body-size",
        BodySize,
        false,
        HonouredWithDifference(
            "without it Gantry sets no limit (nginx's default is 1m); 0 means no limit, as in nginx",
        ),
    ),
    e("client-body-buffer-size", Buffering, false, Ignored(BUFFERING)),
    // --- Timeouts and retries ---
    e("proxy-connect-timeout", Timeouts, false, Honoured),
    e("proxy-read-timeout", Timeouts, false, Honoured),
    e("proxy-send-timeout", Timeouts, false, Honoured),
    e(
        "proxy-next-upstream",
        Timeouts,
        false,
        HonouredWithDifference(NEXT_UPSTREAM),
    ),
    e("proxy-next-upstream-timeout", Timeouts, false, Honoured),
    e("proxy-next-upstream-tries", Timeouts, false, Honoured),
    // --- Buffering ---
    e("proxy-buffering", Buffering, false, Ignored(BUFFERING)),
    e("proxy-request-buffering", Buffering, false, Ignored(BUFFERING)),
    e("proxy-buffer-size", Buffering, false, Ignored(BUFFERING)),
    e("proxy-buffers-number", Buffering, false, Ignored(BUFFERING)),
    e("proxy-busy-buffers-size", Buffering, false, Ignored(BUFFERING)),
    e("proxy-max-temp-file-size", Buffering, false, Ignored(BUFFERING)),
    // --- Backend ---
    e(
        "backend-protocol",
        Backend,
        false,
        HonouredWithDifference(
            "HTTP and HTTPS (HTTP/1.1, pooled), GRPC (HTTP/2 in clear text) and GRPCS (HTTP/2 over \
         TLS), whatever HTTP version the client speaks; H2C is Gantry's own value for clear-text \
         HTTP/2 backends that are not gRPC; AUTO_HTTP and FCGI are refused and the route is served \
         over HTTP/1.1. A canary's backend is reached with its main route's protocol, as in \
         ingress-nginx",
        ),
    ),
    e(
        "proxy-http-version",
        Backend,
        false,
        Ignored("Gantry speaks HTTP/1.1 to backends, or HTTP/2 with backend-protocol GRPC, GRPCS or H2C"),
    ),
    e(
        "service-upstream",
        Backend,
        false,
        Honoured,
    ),
    e("proxy-cookie-domain", Backend, false, Refused(COOKIE_REWRITE)),
    e("proxy-cookie-path", Backend, false, Refused(COOKIE_REWRITE)),
    e("proxy-redirect-from", Backend, false, Refused(LOCATION_REWRITE)),
    e("proxy-redirect-to", Backend, false, Refused(LOCATION_REWRITE)),
    e(
        "fastcgi-index",
        Backend,
        false,
        Refused("FastCGI backends are not supported"),
    ),
    e(
        "fastcgi-params-configmap",
        Backend,
        false,
        Refused("FastCGI backends are not supported"),
    ),
    // --- Backend TLS ---
    e(
        "proxy-ssl-secret",
        BackendTls,
        false,
        HonouredWithDifference(
            "namespace/name in the Ingress's own namespace: ca.crt is what the backend's certificate \
         must lead to, tls.crt and tls.key a client certificate; read with backend-protocol HTTPS \
         or GRPCS only. A Secret that is missing or broken makes the Ingress fail closed (its \
         paths answer 503) when proxy-ssl-verify is on; with verification off it is reported and \
         the backend is reached without it (ingress-nginx answers 503 either way)",
        ),
    ),
    e(
        "proxy-ssl-verify",
        BackendTls,
        false,
        HonouredWithDifference(
            "on without a usable ca.crt in proxy-ssl-secret makes the Ingress fail closed (its paths \
         answer 503), where ingress-nginx does not verify; without proxy-ssl-name the certificate is \
         checked against the name upstream_balancer, as in ingress-nginx, so set it (this is \
         reported); needs backend-protocol HTTPS or GRPCS",
        ),
    ),
    e(
        "proxy-ssl-verify-depth",
        BackendTls,
        false,
        HonouredWithDifference(PROXY_SSL_OFF),
    ),
    e(
        "proxy-ssl-ciphers",
        BackendTls,
        false,
        Ignored("rustls offers only modern AEAD cipher suites to backends"),
    ),
    e(
        "proxy-ssl-protocols",
        BackendTls,
        false,
        Ignored("Gantry offers TLS 1.2 and 1.3 to backends (ingress-nginx's default is TLS 1.2 only)"),
    ),
    e(
        "proxy-ssl-name",
        BackendTls,
        false,
        HonouredWithDifference(
            "a DNS name or IP address; a value with nginx variables ($host, ...) is refused; needs \
         proxy-ssl-secret and backend-protocol HTTPS or GRPCS (otherwise ignored, as in \
         ingress-nginx)",
        ),
    ),
    e(
        "proxy-ssl-server-name",
        BackendTls,
        false,
        HonouredWithDifference(PROXY_SSL_OFF),
    ),
    // --- Load balancing ---
    e(
        "load-balance",
        LoadBalancing,
        false,
        HonouredWithDifference(
            "round_robin; ewma is served by least-request (two endpoints at random, the one with \
         fewer requests in flight: it favours fast endpoints too, without a latency average); \
         chash, chashsubset and sticky_* are refused (use upstream-hash-by or affinity: cookie); \
         affinity and upstream-hash-by take precedence, as in ingress-nginx",
        ),
    ),
    e(
        "upstream-hash-by",
        LoadBalancing,
        false,
        HonouredWithDifference(
            "exactly one of $request_uri, $remote_addr (or $binary_remote_addr), $http_<header>, \
         $cookie_<name> or $arg_<name>: nginx variables are never templated, so other variables, \
         text and combinations are refused and the route's balancer applies. Keys are mapped by \
         rendezvous hashing instead of ketama: a key keeps its endpoint and few keys move when \
         endpoints change, but it is not the endpoint ingress-nginx would pick; affinity takes \
         precedence",
        ),
    ),
    e("upstream-hash-by-subset", LoadBalancing, false, Refused(SUBSET)),
    e(
        "upstream-hash-by-subset-size",
        LoadBalancing,
        false,
        Refused(SUBSET),
    ),
    // --- Session affinity ---
    e(
        "affinity",
        SessionAffinity,
        false,
        HonouredWithDifference(
            "cookie, with ingress-nginx's cookie value (a persistent-mode session carries over from \
         ingress-nginx); balanced mode maps sessions by rendezvous hashing instead of ketama; a \
         cookie of the main route keeps a request off its canary, as in ingress-nginx; without \
         session-cookie-path a regex route's cookie Path is the regex, as in ingress-nginx (this is \
         reported)",
        ),
    ),
    e("affinity-mode", SessionAffinity, false, Honoured),
    e(
        "affinity-canary-behavior",
        SessionAffinity,
        false,
        HonouredWithDifference(
            "on a canary Ingress: sticky (the default) gives its backend the main route's session \
         affinity, legacy its own; reported as ignored elsewhere",
        ),
    ),
    e("session-cookie-name", SessionAffinity, false, Honoured),
    e("session-cookie-path", SessionAffinity, false, Honoured),
    e("session-cookie-domain", SessionAffinity, false, Honoured),
    e("session-cookie-expires", SessionAffinity, false, Honoured),
    e("session-cookie-max-age", SessionAffinity, false, Honoured),
    e(
        "session-cookie-samesite",
        SessionAffinity,
        false,
        HonouredWithDifference(
            "session-cookie-conditional-samesite-none applies to none in any case (ingress-nginx: only \
         when written None)",
        ),
    ),
    e(
        "session-cookie-conditional-samesite-none",
        SessionAffinity,
        false,
        Honoured,
    ),
    e("session-cookie-secure", SessionAffinity, false, Honoured),
    e(
        "session-cookie-change-on-failure",
        SessionAffinity,
        false,
        HonouredWithDifference(
            "the cookie is re-issued for the endpoint that answered when Gantry's one retry (of a \
         connection that failed) went to another",
        ),
    ),
    // --- Canary ---
    e(
        "canary",
        Canary,
        false,
        HonouredWithDifference(
            "the Ingress is not routed by itself: its backend becomes the canary of the main (not \
         canary) Ingress's route with the same host, path and path type (ingress-nginx attaches it \
         to the main Service, so its other paths get it too); a canary without such a route, or \
         after the first for one route, is reported and ignored, as in ingress-nginx; its other \
         annotations are ignored except canary-*, load-balance, upstream-hash-by and, with \
         affinity-canary-behavior: legacy, session affinity; an invalid value leaves the Ingress \
         not routed at all",
        ),
    ),
    e("canary-by-header", Canary, false, Honoured),
    e("canary-by-header-value", Canary, false, Honoured),
    e(
        "canary-by-header-pattern",
        Canary,
        false,
        HonouredWithDifference(
            "Rust regex syntax (no look-around or back-references), matched anywhere in the value; a \
         pattern that does not compile turns the header rule off, where ingress-nginx keeps \
         requests carrying the header on the main backend (reported)",
        ),
    ),
    e("canary-by-cookie", Canary, false, Honoured),
    e("canary-weight", Canary, false, Honoured),
    e("canary-weight-total", Canary, false, Honoured),
    // --- Error pages ---
    e("default-backend", ErrorPages, false, Honoured),
    e(
        "custom-http-errors",
        ErrorPages,
        false,
        HonouredWithDifference(CUSTOM_ERRORS),
    ),
    e("disable-proxy-intercept-errors", ErrorPages, false, Honoured),
    // --- TLS ---
    e(
        "ssl-passthrough",
        Tls,
        false,
        Refused("not yet supported: Gantry terminates TLS for every host it serves"),
    ),
    e(
        "ssl-ciphers",
        Tls,
        false,
        Ignored("rustls offers only modern AEAD cipher suites; the minimum TLS version is class-wide"),
    ),
    e(
        "ssl-prefer-server-ciphers",
        Tls,
        false,
        Ignored("rustls offers only modern AEAD cipher suites and chooses by its own preference"),
    ),
    e(
        "http2-push-preload",
        Tls,
        false,
        Ignored(
            "HTTP/2 server push is not supported; browsers dropped it and fetch preload links themselves",
        ),
    ),
    // --- Snippets ---
    e("configuration-snippet", Snippets, false, Refused(SNIPPET)),
    e("server-snippet", Snippets, false, Refused(SNIPPET)),
    e(
        "stream-snippet",
        Snippets,
        false,
        Refused("never executed: Gantry serves HTTP only, no TCP or UDP streams"),
    ),
    // --- ModSecurity ---
    e("enable-modsecurity", ModSecurity, false, Refused(MODSECURITY)),
    e(
        "enable-owasp-core-rules",
        ModSecurity,
        false,
        Refused(MODSECURITY),
    ),
    e(
        "modsecurity-transaction-id",
        ModSecurity,
        false,
        Refused(MODSECURITY),
    ),
    e(
        "modsecurity-snippet",
        ModSecurity,
        false,
        Refused(
            "never executed: ModSecurity is not supported. A snippet that turns the rule engine on \
         (SecRuleEngine On) makes the Ingress fail closed (its paths answer 503)",
        ),
    ),
    // --- Mirror ---
    e("mirror-target", Mirror, false, Refused(MIRROR)),
    e("mirror-host", Mirror, false, Refused(MIRROR)),
    e("mirror-request-body", Mirror, false, Refused(MIRROR)),
    // --- Logging and tracing ---
    e(
        "enable-access-log",
        Logging,
        false,
        Ignored("the access log is class-wide (--access-log, ProxyConfig)"),
    ),
    e(
        "enable-opentelemetry",
        Logging,
        false,
        HonouredWithDifference(
            "spans go to the collector of --otlp-endpoint, sampled at the class-wide ratio \
         (--trace-sampling-ratio, ProxyConfig tracing)",
        ),
    ),
    e("opentelemetry-trust-incoming-span", Logging, false, Honoured),
    e("opentelemetry-operation-name", Logging, false, Ignored(OPERATION_NAME)),
];

/// The entry of an annotation, by its name without prefix.
pub fn lookup(name: &str) -> Option<&'static Entry> {
    CATALOG.iter().find(|e| e.name == name)
}

/// The catalogue name closest to `name` when it is at most two edits away (a typo), for "did you
/// mean".
pub fn suggest(name: &str) -> Option<&'static str> {
    if name.len() > 64 {
        return None;
    }
    CATALOG
        .iter()
        .map(|e| (edit_distance(name, e.name), e.name))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| n)
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// The catalogue as a Markdown table: one row per annotation, in catalogue order.
pub fn markdown_table() -> String {
    let mut out = String::new();
    out.push_str("| annotation | family | security | Gantry | notes |\n");
    out.push_str("|---|---|---|---|---|\n");
    for entry in CATALOG {
        let (support, notes) = match entry.support {
            Honoured => ("honoured", ""),
            HonouredWithDifference(why) => ("honoured, with a difference", why),
            Ignored(why) => ("ignored", why),
            Refused(why) => ("refused", why),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            entry.name,
            entry.family.as_str(),
            if entry.security { "yes" } else { "" },
            support,
            notes.replace('|', "\\|"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_annotation_of_the_user_guide_table_is_in_the_catalogue() {
        let table = include_str!("user_guide_table.txt");
        let names: Vec<&str> = table
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(names.len(), 117, "the user guide's table has 117 rows");
        let missing: Vec<&str> = names.iter().copied().filter(|n| lookup(n).is_none()).collect();
        assert!(missing.is_empty(), "not in the catalogue: {missing:?}");
    }

    #[test]
    fn annotations_outside_the_table_are_in_the_catalogue_too() {
        // Described in the user guide's prose only, or accepted by ingress-nginx's parsers without
        // documentation.
        let extra = [
            "auth-always-set-cookie",
            "auth-method",
            "auth-request-redirect",
            "auth-response-headers",
            "auth-signin",
            "auth-signin-redirect-param",
            "limit-burst-multiplier",
            "limit-rate",
            "limit-rate-after",
            "limit-rpm",
            "limit-whitelist",
            "upstream-hash-by-subset",
            "upstream-hash-by-subset-size",
            "allowlist-source-range",
            "disable-proxy-intercept-errors",
            "fastcgi-index",
            "fastcgi-params-configmap",
            "limit-allowlist",
            "opentelemetry-operation-name",
            "relative-redirects",
            "use-port-in-redirects",
        ];
        for name in extra {
            assert!(lookup(name).is_some(), "{name}");
        }
    }

    #[test]
    fn names_are_unique_bare_and_lowercase() {
        let mut seen = BTreeSet::new();
        for entry in CATALOG {
            assert!(seen.insert(entry.name), "{} twice", entry.name);
            assert!(!entry.name.contains('/'), "{}", entry.name);
            assert!(
                entry
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                entry.name
            );
        }
        assert_eq!(CATALOG.len(), 138);
    }

    #[test]
    fn the_security_annotations_are_the_access_and_authentication_ones() {
        let security: BTreeSet<&str> = CATALOG.iter().filter(|e| e.security).map(|e| e.name).collect();
        for name in [
            "auth-type",
            "auth-secret",
            "auth-url",
            "auth-snippet",
            "auth-tls-secret",
            "auth-tls-match-cn",
            "whitelist-source-range",
            "allowlist-source-range",
            "denylist-source-range",
            "satisfy",
            "enable-global-auth",
        ] {
            assert!(security.contains(name), "{name}");
        }
        for entry in CATALOG.iter().filter(|e| e.security) {
            assert!(
                matches!(
                    entry.family,
                    Authentication | ExternalAuthentication | ClientCertificates | AccessControl | Headers
                ),
                "{}",
                entry.name
            );
        }
    }

    #[test]
    fn the_readme_has_exactly_the_rendered_table() {
        let readme = include_str!("../../../README.md");
        let heading = "\n## ingress-nginx annotations\n";
        let start = readme
            .find(heading)
            .expect("README.md has a section \"## ingress-nginx annotations\"");
        let section = &readme[start + heading.len()..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        let table = markdown_table();
        assert!(
            section.contains(&table),
            "README.md's table differs from the catalogue: replace it with the output of `gantry check --annotations-table`"
        );
        // And no other (stale) annotation table in the section.
        assert_eq!(section.matches("| annotation |").count(), 1);
        assert_eq!(readme.matches(heading).count(), 1);
    }

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(suggest("whitelist-source-rnage"), Some("whitelist-source-range"));
        assert_eq!(suggest("server-snipet"), Some("server-snippet"));
        assert_eq!(suggest("rewrite-targte"), Some("rewrite-target"));
        assert_eq!(suggest("something-else-entirely"), None);
        assert_eq!(suggest(&"x".repeat(1000)), None);
    }

    #[test]
    fn refused_and_ignored_entries_say_why() {
        for entry in CATALOG {
            if let Ignored(why) | Refused(why) | HonouredWithDifference(why) = entry.support {
                assert!(why.len() > 20, "{}: {why}", entry.name);
                assert!(!why.contains('\n'), "{}", entry.name);
            }
        }
    }
}
