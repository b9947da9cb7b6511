//! CORS (`enable-cors` and the `cors-*` family): preflights answered by Gantry, headers added to
//! responses.
//!
//! Behaviour of ingress-nginx's generated configuration (the `CORS` template of `nginx.tmpl`,
//! `buildCorsOriginRegex` in `template.go`) and of its e2e tests (`test/e2e/annotations/cors.go`):
//!
//! - `*` (the default, also when `cors-allow-origin` is empty or lists `*` anywhere): every
//!   request of the route is a CORS request, with or without an `Origin`, and gets
//!   `Access-Control-Allow-Origin: *`, with `Access-Control-Allow-Credentials: true` too when
//!   credentials are on (browsers refuse that pair for credentialed requests; ingress-nginx sends
//!   it anyway, and echoing any origin instead would open the route to every site).
//! - A list of origins: a request whose `Origin` matches an entry gets that `Origin` echoed back;
//!   any other request (no `Origin`, or one that matches nothing) gets no CORS header at all, and
//!   is not answered as a preflight either: an `OPTIONS` request then goes to the backend like
//!   any other. Gantry adds `Vary: Origin` to every response of such a route, since the answer
//!   depends on the `Origin` (ingress-nginx does not; caches need it).
//! - A preflight is any `OPTIONS` request that is a CORS request in the sense above: answered
//!   with 204 and the CORS headers, `Content-Type: text/plain charset=UTF-8` (sic, as
//!   ingress-nginx) and `Content-Length: 0`, without reaching the backend.
//! - Other responses get the same CORS headers (origin, credentials, methods, headers, expose,
//!   max age), replacing any the backend sent, as nginx's `more_set_headers` does; this includes
//!   the responses Gantry makes itself (a 401 of basic auth carries them in ingress-nginx's e2e
//!   tests).
//!
//! Origin entries are matched exactly, scheme and host without regard to case, the port
//! included (an entry without a port matches only origins without one; `:80` and `:443` are
//! dropped from `http` and `https` entries, as browsers drop them from `Origin`). A wildcard entry
//! `https://*.example.com` matches one more label, `https://a.example.com`, not
//! `https://b.a.example.com` nor `https://example.com`: ingress-nginx's wildcard is one label
//! (`[A-Za-z0-9-]+`), and its e2e test "should not allow - unmatching origin with wildcard origin
//! (2 subdomains)" refuses the deeper one.

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, CONTENT_TYPE, ORIGIN, SERVER, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use super::LocalResponse;

/// One allowed origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigin {
    /// `*`: any origin.
    Any,
    /// One origin, exactly (`https://example.com`, `http://example.com:8080`), lowercase.
    Exact(String),
    /// `https://*.example.com`: any origin one label below `example.com` (`https://a.example.com`,
    /// not `https://b.a.example.com`, as in ingress-nginx) with this scheme and port; not
    /// `example.com` itself. `scheme` and `domain` are lowercase.
    Subdomains {
        scheme: String,
        domain: String,
        port: Option<u16>,
    },
    /// `https://*.example.com` as the Gateway API's CORS filter reads it: any origin one or more
    /// labels below `example.com` (`https://a.example.com`, `https://b.a.example.com`), not
    /// `example.com` itself.
    SubdomainsAnyDepth {
        scheme: String,
        domain: String,
        port: Option<u16>,
    },
}

impl CorsOrigin {
    /// The same origin, with a wildcard matching any number of labels (the Gateway API's).
    pub fn any_depth(self) -> Self {
        match self {
            CorsOrigin::Subdomains { scheme, domain, port } => {
                CorsOrigin::SubdomainsAnyDepth { scheme, domain, port }
            }
            other => other,
        }
    }
}

/// Whose CORS semantics a route follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CorsMode {
    /// ingress-nginx's `enable-cors` (the module documentation above).
    #[default]
    IngressNginx,
    /// The Gateway API's CORS filter (HTTPRoute `CORS`, tested by its conformance suite):
    /// - only a request with an `Origin` gets CORS headers, and an allowed origin is always
    ///   echoed (also for `*`, so that credentials can be allowed with it);
    /// - a preflight is an `OPTIONS` request with `Origin` and `Access-Control-Request-Method`;
    ///   Gantry answers every preflight itself (204), with the CORS headers only when the origin
    ///   is allowed, and never forwards one;
    /// - `allowMethods: ["*"]` and `allowHeaders: ["*"]` answer a preflight with the method and
    ///   headers it asked for;
    /// - `https://*.example.com` matches any number of labels.
    GatewayApi,
}

/// The CORS policy of a route, with ingress-nginx's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    /// Empty is not allowed by the controller; the default is `[Any]`. (An empty list would
    /// match no origin: no CORS header is ever sent, as ingress-nginx does when every entry of
    /// `cors-allow-origin` is invalid.)
    pub origins: Vec<CorsOrigin>,
    /// `Access-Control-Allow-Methods`, default `GET, PUT, POST, DELETE, PATCH, OPTIONS`.
    pub allow_methods: HeaderValue,
    /// `Access-Control-Allow-Headers`, default
    /// `DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization`.
    pub allow_headers: HeaderValue,
    /// `Access-Control-Expose-Headers`, none by default.
    pub expose_headers: Option<HeaderValue>,
    /// `Access-Control-Allow-Credentials: true`, on by default.
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age` in seconds, default 1728000 (20 days).
    pub max_age: u32,
    pub mode: CorsMode,
}

impl Default for Cors {
    fn default() -> Self {
        Self {
            origins: vec![CorsOrigin::Any],
            allow_methods: HeaderValue::from_static("GET, PUT, POST, DELETE, PATCH, OPTIONS"),
            allow_headers: HeaderValue::from_static(
                "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization",
            ),
            expose_headers: None,
            allow_credentials: true,
            max_age: 1_728_000,
            mode: CorsMode::IngressNginx,
        }
    }
}

/// What a request's `Origin` earns it.
enum Verdict<'a> {
    /// `Access-Control-Allow-Origin: *`.
    Any,
    /// The request's own `Origin`, echoed.
    Echo(&'a HeaderValue),
    /// No CORS headers.
    Refused,
}

impl Cors {
    /// The answer to a preflight (`OPTIONS`), or `None` for any other request, and for an
    /// `OPTIONS` request whose `Origin` is not allowed (it goes to the backend, as in
    /// ingress-nginx).
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<LocalResponse> {
        if method != Method::OPTIONS {
            return None;
        }
        if self.mode == CorsMode::GatewayApi {
            return self.gateway_preflight(headers);
        }
        let allow_origin = match self.verdict(headers.get(ORIGIN)) {
            Verdict::Any => HeaderValue::from_static("*"),
            Verdict::Echo(origin) => origin.clone(),
            Verdict::Refused => return None,
        };
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        self.set_headers(allow_origin, h);
        if self.depends_on_origin() {
            add_vary_origin(h);
        }
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain charset=UTF-8"));
        // No Content-Length: a 204 must not carry one (RFC 9110 8.6); nginx sends `0`.
        h.insert(SERVER, super::SERVER.clone());
        Some(resp)
    }

    /// [`CorsMode::GatewayApi`]'s preflight: `None` (not a preflight) without `Origin` or
    /// `Access-Control-Request-Method`; otherwise always answered here.
    fn gateway_preflight(&self, headers: &HeaderMap) -> Option<LocalResponse> {
        let origin = headers.get(ORIGIN)?;
        let requested_method = headers.get(ACCESS_CONTROL_REQUEST_METHOD)?;
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        if self.allows_origin(origin.as_bytes()) {
            self.set_headers(origin.clone(), h);
            if self.allow_methods.as_bytes() == b"*" {
                h.insert(ACCESS_CONTROL_ALLOW_METHODS, requested_method.clone());
            }
            if self.allow_headers.as_bytes() == b"*" {
                match headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
                    Some(asked) => h.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone()),
                    None => h.remove(ACCESS_CONTROL_ALLOW_HEADERS),
                };
            }
        }
        add_vary_origin(h);
        h.insert(SERVER, super::SERVER.clone());
        Some(resp)
    }

    /// Adds the CORS headers to a (non-preflight) response; `origin` is the request's `Origin`.
    /// They replace any the response has; a response to an origin not allowed is left as it is
    /// (but for `Vary: Origin`).
    pub fn apply_response(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        if self.mode == CorsMode::GatewayApi {
            // Methods, headers and max age belong to the preflight's answer (which already has
            // them, and passes here too, as all of Gantry's own answers do): an actual response
            // carries only the origin, credentials and exposed headers.
            if let Verdict::Echo(origin) = self.verdict(origin) {
                headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                if self.allow_credentials {
                    headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
                }
                if let Some(expose) = &self.expose_headers {
                    headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
                }
            }
            add_vary_origin(headers);
            return;
        }
        match self.verdict(origin) {
            Verdict::Any => self.set_headers(HeaderValue::from_static("*"), headers),
            Verdict::Echo(origin) => self.set_headers(origin.clone(), headers),
            Verdict::Refused => {}
        }
        if self.depends_on_origin() {
            add_vary_origin(headers);
        }
    }

    /// Whether any origin is allowed (`*` is in the list): then the answer does not depend on
    /// the request's `Origin`.
    pub fn allows_any_origin(&self) -> bool {
        self.origins.contains(&CorsOrigin::Any)
    }

    /// Whether `origin` (an `Origin` header value) is allowed.
    pub fn allows_origin(&self, origin: &[u8]) -> bool {
        self.origins.iter().any(|o| o.matches(origin))
    }

    fn depends_on_origin(&self) -> bool {
        self.mode == CorsMode::GatewayApi || !self.allows_any_origin()
    }

    fn verdict<'a>(&self, origin: Option<&'a HeaderValue>) -> Verdict<'a> {
        if self.mode == CorsMode::GatewayApi {
            return match origin {
                Some(o) if self.allows_origin(o.as_bytes()) => Verdict::Echo(o),
                _ => Verdict::Refused,
            };
        }
        if self.allows_any_origin() {
            return Verdict::Any;
        }
        match origin {
            Some(o) if self.allows_origin(o.as_bytes()) => Verdict::Echo(o),
            _ => Verdict::Refused,
        }
    }

    fn set_headers(&self, allow_origin: HeaderValue, h: &mut HeaderMap) {
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.allow_credentials {
            h.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        h.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, self.allow_headers.clone());
        if let Some(expose) = &self.expose_headers {
            h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(self.max_age));
    }
}

/// Adds `Vary: Origin` unless the response already varies on it (or on everything).
fn add_vary_origin(h: &mut HeaderMap) {
    let already = h.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.eq_ignore_ascii_case("origin"))
        })
    });
    if !already {
        h.append(VARY, HeaderValue::from_static("Origin"));
    }
}

impl CorsOrigin {
    /// One entry of `cors-allow-origin`: `*`, `scheme://host[:port]` or `scheme://*.domain[:port]`
    /// (surrounding whitespace ignored). The scheme is any URI scheme (`https`, `http`, `tauri`,
    /// as in ingress-nginx); the host a DNS name, an IPv4 address or a bracketed IPv6 address
    /// (not with a wildcard). Anything else is refused with the reason: no scheme, a path (even
    /// `/`), user info, a wildcard elsewhere than as the whole first label, a port out of range,
    /// characters a host name cannot have, and `null` (every sandboxed document and local file
    /// sends it, so allowing it would allow them all; ingress-nginx accepts it).
    pub fn parse(s: &str) -> Result<CorsOrigin, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(CorsOrigin::Any);
        }
        if s.is_empty() {
            return Err("empty origin".into());
        }
        if s.eq_ignore_ascii_case("null") {
            return Err(
                "the `null` origin is refused: every sandboxed document and local file sends \
                        it, so allowing it would allow them all"
                    .into(),
            );
        }
        if !s.is_ascii() || s.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!(
                "`{}` has spaces, control or non-ASCII characters (write an internationalized \
                 name in its xn-- form)",
                s.escape_debug()
            ));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(format!(
                "`{s}` has no scheme: an origin is scheme://host[:port], e.g. https://{s}"
            ));
        };
        if !valid_scheme(scheme) {
            return Err(format!("`{s}` does not start with a URI scheme"));
        }
        let scheme = scheme.to_ascii_lowercase();
        if rest.contains(['/', '?', '#']) {
            return Err(format!(
                "`{s}` has a path: an origin is scheme://host[:port], without even a trailing /"
            ));
        }
        if rest.contains('@') {
            return Err(format!("`{s}` has user info: an origin is scheme://host[:port]"));
        }
        let (host, port) = split_host_port(rest).map_err(|why| format!("`{s}`: {why}"))?;
        let port = port.filter(|&p| !is_default_port(&scheme, p));
        let port_suffix = port.map(|p| format!(":{p}")).unwrap_or_default();

        if let Some(v6) = host.strip_prefix('[') {
            let addr = v6
                .strip_suffix(']')
                .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok())
                .ok_or_else(|| format!("`{s}`: `{host}` is not an IPv6 address"))?;
            return Ok(CorsOrigin::Exact(format!("{scheme}://[{addr}]{port_suffix}")));
        }
        if let Some(domain) = host.strip_prefix("*.") {
            if !valid_host_name(domain) {
                return Err(format!("`{s}`: `{domain}` is not a host name"));
            }
            return Ok(CorsOrigin::Subdomains {
                scheme,
                domain: domain.to_ascii_lowercase(),
                port,
            });
        }
        if host.contains('*') {
            return Err(format!(
                "`{s}`: a wildcard may only be the whole first label, as in https://*.example.com"
            ));
        }
        if !valid_host_name(host) {
            return Err(format!("`{s}`: `{host}` is not a host name"));
        }
        Ok(CorsOrigin::Exact(format!(
            "{scheme}://{}{port_suffix}",
            host.to_ascii_lowercase()
        )))
    }

    /// A whole `cors-allow-origin` annotation, as ingress-nginx reads it: entries separated by
    /// commas, blank ones skipped; `*` anywhere (or no entry at all) allows any origin; an
    /// invalid entry is skipped and its reason returned beside the origins kept (ingress-nginx
    /// logs and skips it too). Every entry invalid gives no origin at all: the route then sends
    /// no CORS header, as ingress-nginx's does.
    pub fn parse_list(list: &str) -> (Vec<CorsOrigin>, Vec<String>) {
        let mut origins = Vec::new();
        let mut errors = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match CorsOrigin::parse(entry) {
                Ok(CorsOrigin::Any) => return (vec![CorsOrigin::Any], errors),
                Ok(origin) => {
                    if !origins.contains(&origin) {
                        origins.push(origin);
                    }
                }
                Err(why) => errors.push(why),
            }
        }
        if origins.is_empty() && errors.is_empty() {
            origins.push(CorsOrigin::Any);
        }
        (origins, errors)
    }

    /// Whether the request's `Origin` header value matches this entry.
    pub fn matches(&self, origin: &[u8]) -> bool {
        match self {
            CorsOrigin::Any => true,
            CorsOrigin::Exact(exact) => origin.eq_ignore_ascii_case(exact.as_bytes()),
            CorsOrigin::Subdomains { scheme, domain, port } => {
                matches_subdomain(origin, scheme, domain, *port, false)
            }
            CorsOrigin::SubdomainsAnyDepth { scheme, domain, port } => {
                matches_subdomain(origin, scheme, domain, *port, true)
            }
        }
    }
}

fn valid_scheme(scheme: &str) -> bool {
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

fn is_default_port(scheme: &str, port: u16) -> bool {
    matches!((scheme, port), ("http", 80) | ("https", 443))
}

/// A DNS name or IPv4 address: dot-separated labels of letters, digits and hyphens.
fn valid_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len()) && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Port digits: 1 to 65535.
fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).ok().filter(|&p| p != 0)
}

/// `host[:port]` of an entry; `[v6]:port` keeps its brackets in the host.
fn split_host_port(rest: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if rest.starts_with('[') {
        match rest.find(']') {
            Some(end) => {
                let (host, after) = rest.split_at(end + 1);
                match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None if after.is_empty() => (host, None),
                    None => return Err("unexpected text after the IPv6 address".into()),
                }
            }
            None => return Err("unclosed `[`".into()),
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    match port {
        None => Ok((host, None)),
        Some(p) => parse_port(p.as_bytes())
            .map(|p| (host, Some(p)))
            .ok_or_else(|| format!("`{p}` is not a port (1 to 65535)")),
    }
}

/// `origin` is `scheme://<one label>.domain[:port]`, scheme and host in any case.
fn matches_subdomain(origin: &[u8], scheme: &str, domain: &str, port: Option<u16>, any_depth: bool) -> bool {
    let Some(rest) = strip_prefix_ignore_case(origin, scheme.as_bytes()).and_then(|r| r.strip_prefix(b"://"))
    else {
        return false;
    };
    let (host, origin_port) = match rest.iter().rposition(|&b| b == b':') {
        Some(colon) => (&rest[..colon], Some(&rest[colon + 1..])),
        None => (rest, None),
    };
    let port_matches = match (port, origin_port) {
        (None, None) => true,
        (Some(want), Some(digits)) => parse_port(digits) == Some(want),
        _ => false,
    };
    if !port_matches || host.len() <= domain.len() + 1 {
        return false;
    }
    let (label, dot_domain) = host.split_at(host.len() - domain.len() - 1);
    let Some((&b'.', tail)) = dot_domain.split_first() else {
        return false;
    };
    let valid_label = |l: &[u8]| !l.is_empty() && l.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
    tail.eq_ignore_ascii_case(domain.as_bytes())
        && if any_depth {
            label.split(|&b| b == b'.').all(valid_label)
        } else {
            valid_label(label)
        }
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route with `cors-allow-origin: list` (as ingress-nginx reads the annotation).
    fn cors(list: &str) -> Cors {
        let (origins, _errors) = CorsOrigin::parse_list(list);
        Cors {
            origins,
            ..Cors::default()
        }
    }

    /// The headers of a normal response to a request with `origin`.
    fn response(cors: &Cors, origin: Option<&str>) -> HeaderMap {
        let origin = origin.map(|o| HeaderValue::from_str(o).unwrap());
        let mut h = HeaderMap::new();
        cors.apply_response(origin.as_ref(), &mut h);
        h
    }

    fn allow_origin(cors: &Cors, origin: Option<&str>) -> Option<String> {
        response(cors, origin)
            .get(ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    fn request(origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(o) = origin {
            h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    // --- test/e2e/annotations/cors.go ---

    #[test]
    fn should_enable_cors() {
        let h = response(&Cors::default(), None);
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(
            h["access-control-allow-methods"],
            "GET, PUT, POST, DELETE, PATCH, OPTIONS"
        );
        assert_eq!(
            h["access-control-allow-headers"],
            "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization"
        );
        assert_eq!(h["access-control-max-age"], "1728000");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert!(!h.contains_key("access-control-expose-headers"));
        // The answer is the same for every origin: nothing to vary on.
        assert!(!h.contains_key(VARY));
    }

    #[test]
    fn methods_max_age_headers_expose_and_credentials_are_configurable() {
        let c = Cors {
            allow_methods: HeaderValue::from_static("POST, GET"),
            allow_headers: HeaderValue::from_static("DNT, User-Agent"),
            expose_headers: Some(HeaderValue::from_static(
                "X-CustomResponseHeader, X-CustomSecondHeader",
            )),
            allow_credentials: false,
            max_age: 200,
            ..Cors::default()
        };
        let h = response(&c, Some("https://a.example"));
        assert_eq!(h["access-control-allow-methods"], "POST, GET");
        assert_eq!(h["access-control-allow-headers"], "DNT, User-Agent");
        assert_eq!(
            h["access-control-expose-headers"],
            "X-CustomResponseHeader, X-CustomSecondHeader"
        );
        assert_eq!(h["access-control-max-age"], "200");
        assert!(!h.contains_key("access-control-allow-credentials"));
    }

    #[test]
    fn should_allow_origin_for_cors() {
        let c = cors("https://origin.cors.com:8080");
        assert_eq!(
            allow_origin(&c, Some("https://origin.cors.com:8080")).as_deref(),
            Some("https://origin.cors.com:8080")
        );
    }

    #[test]
    fn single_origin_of_multiple_values() {
        let c = cors("https://origin.cors.com:8080, https://origin2.cors.com");
        assert_eq!(
            allow_origin(&c, Some("https://origin.cors.com:8080")).as_deref(),
            Some("https://origin.cors.com:8080")
        );
        let c = cors("http://origin2.cors.com, https://origin.com");
        let h = response(&c, Some("http://no.origin.com"));
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        // No CORS header at all for an origin not allowed; only Vary.
        assert!(h.keys().all(|k| k == VARY), "{h:?}");
        assert_eq!(h[VARY], "Origin");
    }

    #[test]
    fn should_allow_correct_origins_and_skip_invalid_entries() {
        let (origins, errors) =
            CorsOrigin::parse_list("origin.cors.com:8080, https://origin2.cors.com, https://origin.com");
        assert_eq!(origins.len(), 2);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("no scheme"), "{errors:?}");
        let c = Cors {
            origins,
            ..Cors::default()
        };
        assert_eq!(allow_origin(&c, Some("origin.cors.com:8080")), None);
        assert_eq!(
            allow_origin(&c, Some("https://origin2.cors.com")).as_deref(),
            Some("https://origin2.cors.com")
        );
        assert_eq!(
            allow_origin(&c, Some("https://origin.com")).as_deref(),
            Some("https://origin.com")
        );
    }

    #[test]
    fn star_allows_everything() {
        for list in [
            "*",
            "*, foo.bar.com",
            "https://a.example, *",
            "      ",
            "",
            " , ,",
        ] {
            let c = cors(list);
            assert_eq!(c.origins, vec![CorsOrigin::Any], "{list:?}");
            assert_eq!(allow_origin(&c, None).as_deref(), Some("*"), "{list:?}");
            for origin in ["http://origin.com", "http://book.origin.com", "test.origin.com"] {
                assert_eq!(allow_origin(&c, Some(origin)).as_deref(), Some("*"), "{list:?}");
            }
        }
    }

    #[test]
    fn should_not_match_a_dot_as_any_character() {
        let c = cors("https://foo.bar.com");
        assert_eq!(allow_origin(&c, Some("https://fooxbar.com")), None);
        assert_eq!(allow_origin(&c, Some("https://foo.bar.com.evil.com")), None);
        assert_eq!(
            allow_origin(&c, Some("https://evil.com/https://foo.bar.com")),
            None
        );
        assert_eq!(allow_origin(&c, Some("xhttps://foo.bar.com")), None);
        assert_eq!(allow_origin(&c, Some("http://foo.bar.com")), None);
        assert_eq!(allow_origin(&c, Some("https://foo.bar.com/")), None);
    }

    #[test]
    fn ports_must_match() {
        let c = cors("http://origin.cors.com:8080, http://origin.com:8080");
        assert_eq!(
            allow_origin(&c, Some("http://origin.com:8080")).as_deref(),
            Some("http://origin.com:8080")
        );
        assert_eq!(allow_origin(&c, Some("http://origin.com")), None);
        let c = cors("https://origin2.cors.com, http://origin.com");
        assert_eq!(allow_origin(&c, Some("http://origin.com:8080")), None);
        // Default ports are dropped from entries, as browsers drop them from Origin.
        let c = cors("https://a.example:443, http://b.example:80");
        assert_eq!(
            c.origins,
            vec![
                CorsOrigin::Exact("https://a.example".into()),
                CorsOrigin::Exact("http://b.example".into())
            ]
        );
        assert!(c.allows_origin(b"https://a.example"));
    }

    #[test]
    fn wildcard_matches_one_label() {
        let c = cors("http://*.origin.cors.com, http://*.origin.com:8080");
        for ok in ["http://foo.origin.cors.com", "http://bar-foo.origin.cors.com"] {
            assert_eq!(allow_origin(&c, Some(ok)).as_deref(), Some(ok));
        }
        for refused in [
            "http://bar.foo.origin.cors.com",
            "http://origin.cors.com",
            "http://.origin.cors.com",
            "https://foo.origin.cors.com",
            "http://foo.origin.cors.com:80",
            "http://fooorigin.cors.com",
            "http://foo_bar.origin.cors.com",
        ] {
            assert_eq!(allow_origin(&c, Some(refused)), None, "{refused}");
        }
    }

    #[test]
    fn wildcard_with_port() {
        let c = cors("http://origin.cors.com:8080, http://*.origin.com:8080");
        assert_eq!(
            allow_origin(&c, Some("http://abc.origin.com:8080")).as_deref(),
            Some("http://abc.origin.com:8080")
        );
        assert_eq!(allow_origin(&c, Some("http://abc.origin.com")), None);
        assert_eq!(allow_origin(&c, Some("http://origin.com:8080")), None);
        assert_eq!(allow_origin(&c, Some("http://abc.origin.com:8081")), None);
        assert_eq!(allow_origin(&c, Some("http://abc.origin.com:")), None);
        assert_eq!(
            allow_origin(&c, Some("http://bar.origin.com:8080")).as_deref(),
            Some("http://bar.origin.com:8080")
        );
    }

    #[test]
    fn trailing_commas_and_blank_entries() {
        let c = cors("https://origin-123.cors.com:8080,   ,https://origin-321.cors.com:8080,");
        assert_eq!(c.origins.len(), 2);
        assert!(allow_origin(&c, Some("https://origin-123.cors.com:8080")).is_some());
        assert_eq!(
            allow_origin(&c, Some("https://origin-321.cors.com:8080")).as_deref(),
            Some("https://origin-321.cors.com:8080")
        );
        assert_eq!(allow_origin(&c, Some("https://unknown.cors.com:8080")), None);
    }

    #[test]
    fn other_schemes() {
        let c = cors("test://localhost, tauri://localhost:3000");
        assert_eq!(
            allow_origin(&c, Some("test://localhost")).as_deref(),
            Some("test://localhost")
        );
        assert_eq!(
            allow_origin(&c, Some("tauri://localhost:3000")).as_deref(),
            Some("tauri://localhost:3000")
        );
        assert_eq!(allow_origin(&c, Some("tauri://localhost")), None);
    }

    #[test]
    fn unauthorized_responses_carry_cors_headers_too() {
        // "should return status code 401 and cors headers when authentication and cors is
        // configured": the pipeline applies the response phase to Gantry's own answers.
        let mut resp = super::super::local_response(StatusCode::UNAUTHORIZED);
        Cors::default().apply_response(None, resp.headers_mut());
        assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    }

    // --- matching details ---

    #[test]
    fn matching_ignores_case_and_echoes_the_origin_as_sent() {
        let c = cors("https://App.Example.com, https://*.Example.org");
        assert_eq!(
            allow_origin(&c, Some("HTTPS://APP.EXAMPLE.COM")).as_deref(),
            Some("HTTPS://APP.EXAMPLE.COM")
        );
        assert_eq!(
            allow_origin(&c, Some("https://WWW.example.ORG")).as_deref(),
            Some("https://WWW.example.ORG")
        );
    }

    #[test]
    fn no_origin_with_a_list_gets_no_cors_headers() {
        let c = cors("https://a.example");
        let h = response(&c, None);
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(h[VARY], "Origin");
        let h = response(&c, Some("null"));
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    #[test]
    fn an_empty_list_allows_no_origin() {
        let (origins, errors) = CorsOrigin::parse_list("origin.cors.com, ftp//x");
        assert!(origins.is_empty());
        assert_eq!(errors.len(), 2);
        let c = Cors {
            origins,
            ..Cors::default()
        };
        assert_eq!(allow_origin(&c, Some("https://origin.cors.com")), None);
        assert!(c
            .preflight(&Method::OPTIONS, &request(Some("https://origin.cors.com")))
            .is_none());
    }

    #[test]
    fn backend_cors_headers_are_replaced_and_vary_is_kept() {
        let c = cors("https://a.example");
        let mut h = HeaderMap::new();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        c.apply_response(Some(&HeaderValue::from_static("https://a.example")), &mut h);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example");
        let vary: Vec<_> = h.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        // Applying twice (e.g. to a preflight answer) adds no second Vary.
        c.apply_response(Some(&HeaderValue::from_static("https://a.example")), &mut h);
        assert_eq!(h.get_all(VARY).iter().count(), 2);
        let mut h = HeaderMap::new();
        h.insert(VARY, HeaderValue::from_static("accept, origin"));
        c.apply_response(None, &mut h);
        assert_eq!(h.get_all(VARY).iter().count(), 1);
        // A refused origin leaves the backend's own headers alone.
        let mut h = HeaderMap::new();
        h.insert(
            ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("https://b.example"),
        );
        c.apply_response(Some(&HeaderValue::from_static("https://b.example")), &mut h);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://b.example");
    }

    // --- preflights ---

    #[test]
    fn preflight_is_answered_with_204() {
        let resp = Cors::default()
            .preflight(&Method::OPTIONS, &request(Some("https://a.example")))
            .unwrap();
        assert_eq!(resp.status(), 204);
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(
            h["access-control-allow-methods"],
            "GET, PUT, POST, DELETE, PATCH, OPTIONS"
        );
        assert!(h.contains_key("access-control-allow-headers"));
        assert_eq!(h["access-control-max-age"], "1728000");
        assert_eq!(h["content-type"], "text/plain charset=UTF-8");
        assert!(!h.contains_key("content-length"));
        assert_eq!(h["server"], "gantry");
        assert!(!h.contains_key(VARY));
        // Every OPTIONS request of the route, with or without Origin or
        // Access-Control-Request-Method.
        assert!(Cors::default()
            .preflight(&Method::OPTIONS, &HeaderMap::new())
            .is_some());
    }

    #[test]
    fn only_options_is_a_preflight() {
        for m in [Method::GET, Method::POST, Method::HEAD, Method::PUT] {
            assert!(Cors::default()
                .preflight(&m, &request(Some("https://a.example")))
                .is_none());
        }
    }

    #[test]
    fn preflight_with_a_list_echoes_or_goes_to_the_backend() {
        let c = Cors {
            expose_headers: Some(HeaderValue::from_static("X-A")),
            allow_credentials: false,
            ..cors("https://*.example.com:8443")
        };
        let resp = c
            .preflight(&Method::OPTIONS, &request(Some("https://app.example.com:8443")))
            .unwrap();
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com:8443");
        assert_eq!(h["access-control-expose-headers"], "X-A");
        assert!(!h.contains_key("access-control-allow-credentials"));
        assert_eq!(h[VARY], "Origin");
        assert!(c
            .preflight(&Method::OPTIONS, &request(Some("https://app.example.com")))
            .is_none());
        assert!(c.preflight(&Method::OPTIONS, &request(None)).is_none());
    }

    // --- parsing entries ---

    #[test]
    fn parse_accepts_origins() {
        assert_eq!(CorsOrigin::parse("*"), Ok(CorsOrigin::Any));
        assert_eq!(
            CorsOrigin::parse(" HTTPS://Example.COM:8080 "),
            Ok(CorsOrigin::Exact("https://example.com:8080".into()))
        );
        assert_eq!(
            CorsOrigin::parse("http://10.0.0.1:3000"),
            Ok(CorsOrigin::Exact("http://10.0.0.1:3000".into()))
        );
        assert_eq!(
            CorsOrigin::parse("http://[0:0::1]:8080"),
            Ok(CorsOrigin::Exact("http://[::1]:8080".into()))
        );
        assert_eq!(
            CorsOrigin::parse("https://*.Example.com"),
            Ok(CorsOrigin::Subdomains {
                scheme: "https".into(),
                domain: "example.com".into(),
                port: None
            })
        );
        assert_eq!(
            CorsOrigin::parse("myprotocol://*.abc.bar.foo:9000"),
            Ok(CorsOrigin::Subdomains {
                scheme: "myprotocol".into(),
                domain: "abc.bar.foo".into(),
                port: Some(9000)
            })
        );
        assert_eq!(
            CorsOrigin::parse("tauri://localhost"),
            Ok(CorsOrigin::Exact("tauri://localhost".into()))
        );
    }

    #[test]
    fn parse_refuses_everything_else_with_a_reason() {
        for (entry, reason) in [
            ("", "empty"),
            ("null", "null"),
            ("origin.cors.com:8080", "no scheme"),
            ("foo.bar.com", "no scheme"),
            ("https://example.com/", "path"),
            ("https://example.com/app", "path"),
            ("https://example.com?x", "path"),
            ("https://user@example.com", "user info"),
            ("https://a.*.example.com", "wildcard"),
            ("https://*example.com", "wildcard"),
            ("https://*", "wildcard"),
            ("https://*.", "not a host name"),
            ("https://*.*.example.com", "not a host name"),
            ("https://exa mple.com", "spaces"),
            ("https://exämple.com", "xn--"),
            ("https://example.com:0", "port"),
            ("https://example.com:65536", "port"),
            ("https://example.com:", "port"),
            ("https://example.com:+80", "port"),
            ("https://example.com:80:80", "port"),
            ("https://", "no host"),
            ("https://:8080", "no host"),
            ("https://exa_mple.com", "not a host name"),
            ("https://example..com", "not a host name"),
            ("https://[::1", "unclosed"),
            ("https://[nope]", "IPv6"),
            ("https://[::1]x", "after the IPv6"),
            ("1http://example.com", "scheme"),
            ("://example.com", "scheme"),
            ("$host://example.com", "scheme"),
        ] {
            let err = CorsOrigin::parse(entry).expect_err(entry);
            assert!(err.contains(reason), "{entry:?}: {err}");
        }
    }

    #[test]
    fn odd_origin_headers_never_match_nor_panic() {
        let c = cors("https://*.example.com:8443, https://a.example");
        for origin in [
            &b""[..],
            b"https://",
            b"https://:8443",
            b"https://.example.com:8443",
            b"https://x.example.com:99999",
            b"https://x.example.com:8443:8443",
            b"https://\xff.example.com:8443",
            b"\xff\xfe",
            b"https://x.example.com:84430000000000000000",
            b"example.com",
            b":",
        ] {
            assert!(!c.allows_origin(origin), "{origin:?}");
        }
        let odd = HeaderValue::from_bytes(b"https://\xffa.example").unwrap();
        let mut h = HeaderMap::new();
        c.apply_response(Some(&odd), &mut h);
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    /// The Gateway API's CORS filter, as its conformance test `HTTPRouteCORS` expects.
    mod gateway_api {
        use super::*;

        fn filter(origins: &[&str], methods: &str, headers: &str, credentials: bool) -> Cors {
            Cors {
                origins: origins
                    .iter()
                    .map(|o| CorsOrigin::parse(o).unwrap().any_depth())
                    .collect(),
                allow_methods: HeaderValue::from_str(methods).unwrap(),
                allow_headers: HeaderValue::from_str(headers).unwrap(),
                allow_credentials: credentials,
                mode: CorsMode::GatewayApi,
                ..Cors::default()
            }
        }

        fn preflight(
            c: &Cors,
            origin: &str,
            method: &str,
            asked_headers: Option<&str>,
        ) -> Option<LocalResponse> {
            let mut h = HeaderMap::new();
            h.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
            h.insert(
                ACCESS_CONTROL_REQUEST_METHOD,
                HeaderValue::from_str(method).unwrap(),
            );
            if let Some(a) = asked_headers {
                h.insert(ACCESS_CONTROL_REQUEST_HEADERS, HeaderValue::from_str(a).unwrap());
            }
            c.preflight(&Method::OPTIONS, &h)
        }

        #[test]
        fn every_preflight_is_answered_here_and_only_allowed_origins_get_headers() {
            let c = filter(
                &["https://www.foo.com", "https://*.bar.com"],
                "GET, OPTIONS",
                "x-header-1",
                true,
            );
            for origin in [
                "https://www.foo.com",
                "https://www.bar.com",
                "https://xpto.www.bar.com",
            ] {
                let r = preflight(&c, origin, "GET", None).expect("answered");
                assert_eq!(r.status(), StatusCode::NO_CONTENT);
                assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], origin, "{origin}");
                assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
            }
            for origin in ["https://foobar.com", "https://bar.com", "http://www.bar.com"] {
                let r = preflight(&c, origin, "GET", None).expect("answered, not forwarded");
                assert!(r.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(), "{origin}");
                assert_eq!(r.headers()[VARY], "Origin");
            }
            // Not a preflight: no Access-Control-Request-Method, or not OPTIONS.
            let mut h = HeaderMap::new();
            h.insert(ORIGIN, HeaderValue::from_static("https://www.foo.com"));
            assert!(c.preflight(&Method::OPTIONS, &h).is_none());
            assert!(c.preflight(&Method::GET, &h).is_none());
        }

        #[test]
        fn a_wildcard_origin_is_echoed_and_wildcard_methods_and_headers_answer_what_was_asked() {
            let c = filter(&["*"], "*", "*", true);
            let mut r =
                preflight(&c, "https://other.foo.com", "PUT", Some("x-header-1, x-header-2")).unwrap();
            // Gantry's own answers pass the response phase too: it must not undo the preflight's.
            c.apply_response(
                Some(&HeaderValue::from_static("https://other.foo.com")),
                r.headers_mut(),
            );
            assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "https://other.foo.com");
            assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_METHODS], "PUT");
            assert_eq!(
                r.headers()[ACCESS_CONTROL_ALLOW_HEADERS],
                "x-header-1, x-header-2"
            );
            assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");

            let c = filter(&["*"], "*", "*", false);
            let r = preflight(&c, "https://foobar.com:12345", "PUT", None).unwrap();
            assert_eq!(
                r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
                "https://foobar.com:12345"
            );
            assert!(r.headers().get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
            assert!(r.headers().get(ACCESS_CONTROL_ALLOW_HEADERS).is_none());
        }

        #[test]
        fn simple_requests_get_headers_only_with_an_allowed_origin() {
            let c = filter(&["https://www.foo.com"], "GET", "x", false);
            let mut h = HeaderMap::new();
            c.apply_response(Some(&HeaderValue::from_static("https://www.foo.com")), &mut h);
            assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://www.foo.com");
            for origin in [Some("https://foobar.com"), None] {
                let mut h = HeaderMap::new();
                c.apply_response(origin.map(HeaderValue::from_static).as_ref(), &mut h);
                assert!(h.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(), "{origin:?}");
            }
            // `*` with no Origin: not a CORS request, so nothing.
            let c = filter(&["*"], "GET", "x", false);
            let mut h = HeaderMap::new();
            c.apply_response(None, &mut h);
            assert!(h.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        }

        #[test]
        fn no_valid_origin_allows_none() {
            let c = filter(&[], "GET", "x", false);
            assert!(preflight(&c, "https://a.example", "GET", None)
                .unwrap()
                .headers()
                .get(ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none());
        }
    }
}
