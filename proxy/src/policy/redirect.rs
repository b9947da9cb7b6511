//! Redirects decided from the request alone: to HTTPS, to a fixed location, to the application
//! root.

use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::{LocalResponse, SERVER};

/// Redirects plain-HTTP requests to the same host and path over HTTPS. The port is dropped: the
/// redirect goes to the default HTTPS port, as ingress-nginx does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpsRedirect {
    /// 308 by default: unlike 301, it keeps the method and body.
    pub status: StatusCode,
}

impl Default for HttpsRedirect {
    fn default() -> Self {
        Self {
            status: StatusCode::PERMANENT_REDIRECT,
        }
    }
}

impl HttpsRedirect {
    /// The redirect for a request that came over plain HTTP, or `None` over TLS. `host` and `path`
    /// are the normalized ones the request was routed by.
    pub fn apply(&self, tls: bool, host: &str, path: &str, query: Option<&str>) -> Option<LocalResponse> {
        if tls {
            return None;
        }
        let location = match query {
            Some(q) => format!("https://{host}{path}?{q}"),
            None => format!("https://{host}{path}"),
        };
        let mut resp = Response::new(Full::default());
        *resp.status_mut() = self.status;
        // Host and path passed normalization, and a query is visible ASCII as the URI parser
        // accepted it; if it were not a valid header value, the answer is still a redirect
        // status and the client sees no Location rather than a forged one.
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp.headers_mut().insert(header::SERVER, SERVER.clone());
        Some(resp)
    }
}

/// Answers every request of a route with a redirect to a fixed location (`permanent-redirect`,
/// 301 by default; `temporal-redirect`, 302 by default). The location is sent exactly as written:
/// no part of the request is substituted into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub status: StatusCode,
    pub location: HeaderValue,
}

impl Redirect {
    pub fn apply(&self) -> LocalResponse {
        redirect(self.status, self.location.clone())
    }
}

/// The Gateway API's `RequestRedirect` filter: a redirect built from the request, with the parts
/// the filter names replaced. Every part is a validated value; nothing of the request is
/// interpreted beyond its scheme, host, port and path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRedirect {
    /// `http` or `https`; `None` keeps the request's.
    pub scheme: Option<RedirectScheme>,
    /// `None` keeps the request's host (without its port).
    pub hostname: Option<String>,
    /// `None` keeps the request's path.
    pub path: Option<super::PathModifier>,
    /// `None`: the Gateway API's rule: the scheme's default port when `scheme` is set (and then
    /// left out of `Location`), else the port the request came in on (left out when it is its
    /// scheme's default).
    pub port: Option<u16>,
    /// 301 or 302 (the standard channel), 303, 307 or 308.
    pub status: StatusCode,
}

/// The scheme a [`RequestRedirect`] sends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectScheme {
    Http,
    Https,
}

impl RedirectScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    /// 80 or 443.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

impl RequestRedirect {
    /// The redirect of a request that came over TLS or not, with `host` (normalized, without
    /// port), `host_header` (as sent: its port is the one the client addressed), the normalized
    /// `path` and the raw `query` (kept as it is).
    ///
    /// The port, as the Gateway API's conformance tests expect: the filter's `port`; else, when
    /// the filter sets `scheme`, that scheme's default port; else the port the client addressed
    /// (its `Host` header's, or the default of the scheme it came over). A port that is the default
    /// of the redirect's scheme is left out of `Location`.
    pub fn apply(
        &self,
        tls: bool,
        host: &str,
        host_header: &HeaderValue,
        path: &str,
        query: Option<&str>,
    ) -> LocalResponse {
        let came_over = if tls {
            RedirectScheme::Https
        } else {
            RedirectScheme::Http
        };
        let scheme = self.scheme.unwrap_or(came_over);
        let port = match (self.port, self.scheme) {
            (Some(port), _) => port,
            (None, Some(scheme)) => scheme.default_port(),
            (None, None) => host_port(host_header).unwrap_or(came_over.default_port()),
        };
        let host = self.hostname.as_deref().unwrap_or(host);
        let path = match &self.path {
            Some(modifier) => modifier.apply(path),
            None => std::borrow::Cow::Borrowed(path),
        };
        let mut location = format!("{}://{host}", scheme.as_str());
        if port != scheme.default_port() {
            location.push_str(&format!(":{port}"));
        }
        location.push_str(&path);
        if let Some(q) = query {
            location.push('?');
            location.push_str(q);
        }
        // The hostname and path passed the controller's validation and the request's parts the
        // request parser's; should the value still not be a header value, the client gets the
        // status without a Location rather than a forged one.
        match HeaderValue::from_str(&location) {
            Ok(v) => redirect(self.status, v),
            Err(_) => {
                let mut resp = Response::new(Full::default());
                *resp.status_mut() = self.status;
                resp.headers_mut().insert(header::SERVER, SERVER.clone());
                resp
            }
        }
    }

    /// One line for `/debug/explain`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.scheme {
            parts.push(format!("scheme {}", s.as_str()));
        }
        if let Some(h) = &self.hostname {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = self.port {
            parts.push(format!("port {p}"));
        }
        if let Some(p) = &self.path {
            parts.push(p.describe());
        }
        if parts.is_empty() {
            parts.push("the same URL".into());
        }
        format!("redirect ({}) to {}", self.status.as_u16(), parts.join(", "))
    }
}

/// The port of a `Host` header value (`a.example:8080`, `[::1]:8080`), if it names one.
fn host_port(host_header: &HeaderValue) -> Option<u16> {
    let h = host_header.to_str().ok()?;
    let (_, port) = h.rsplit_once(':').filter(|(_, p)| !p.contains(']'))?;
    port.parse().ok()
}

/// Redirects every request of an alias host to the canonical one (`from-to-www-redirect`: the
/// Ingress's host with `www.` added or removed), keeping the request's scheme, port and target.
///
/// As ingress-nginx's `ngx_srv_redirect.lua`: `scheme://host:port` followed by the request target
/// without its last character when that is `/` (so `/` becomes nothing, and `/foo/` becomes
/// `/foo`). The port is the one the client addressed (its `Host` header), else the scheme's
/// default; ingress-nginx writes its listener's port, which is the same number when clients reach
/// it on 80 and 443, while Gantry's own listeners usually sit behind a Service that maps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRedirect {
    /// The canonical host, lowercase (a rule's host of the Ingress).
    pub to: String,
    /// 308 (ingress-nginx's `http-redirect-code` default).
    pub status: StatusCode,
}

impl HostRedirect {
    pub fn new(to: String) -> Self {
        Self {
            to,
            status: StatusCode::PERMANENT_REDIRECT,
        }
    }

    /// The redirect of a request that came with `host_header` (port kept) for the normalized
    /// `path` and `query`.
    pub fn apply(
        &self,
        tls: bool,
        host_header: &HeaderValue,
        path: &str,
        query: Option<&str>,
    ) -> LocalResponse {
        let (scheme, default_port) = if tls { ("https", 443) } else { ("http", 80) };
        let port = host_header
            .to_str()
            .ok()
            .and_then(|h| h.rsplit_once(':').filter(|(_, p)| !p.contains(']')))
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .unwrap_or(default_port);
        let mut target = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        if target.ends_with('/') {
            target.pop();
        }
        let location = format!("{scheme}://{}:{port}{target}", self.to);
        // The host passed translation's validation and the target the request parser's; should the
        // value still not be a header value, the client gets the status without a Location.
        match HeaderValue::from_str(&location) {
            Ok(v) => redirect(self.status, v),
            Err(_) => {
                let mut resp = Response::new(Full::default());
                *resp.status_mut() = self.status;
                resp.headers_mut().insert(header::SERVER, SERVER.clone());
                resp
            }
        }
    }
}

/// Redirects a request for `/` to the application root (`app-root`), with 302 and the request's
/// own scheme and host, as ingress-nginx does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRoot {
    /// An absolute path, e.g. `/app1`.
    pub path: String,
}

impl AppRoot {
    /// The redirect when `path` is `/`, else `None`. `host_header` is the `Host` as the client sent
    /// it (port kept).
    pub fn apply(&self, tls: bool, host_header: &HeaderValue, path: &str) -> Option<LocalResponse> {
        if path != "/" {
            return None;
        }
        let scheme = if tls { "https" } else { "http" };
        let host = host_header.to_str().ok()?;
        let location = HeaderValue::from_str(&format!("{scheme}://{host}{}", self.path)).ok()?;
        Some(redirect(StatusCode::FOUND, location))
    }
}

fn redirect(status: StatusCode, location: HeaderValue) -> LocalResponse {
    let mut resp = Response::new(Full::default());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut().insert(header::SERVER, SERVER.clone());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_keeps_host_path_and_query_and_uses_308() {
        let r = HttpsRedirect::default()
            .apply(false, "foo.bar.com", "/a/b", Some("x=1"))
            .unwrap();
        assert_eq!(r.status(), 308);
        assert_eq!(r.headers()["location"], "https://foo.bar.com/a/b?x=1");
        assert_eq!(r.headers()["server"], "gantry");
    }

    #[test]
    fn requests_that_came_over_tls_are_not_redirected() {
        assert!(HttpsRedirect::default().apply(true, "a", "/", None).is_none());
    }

    #[test]
    fn the_status_is_the_policy_s_own() {
        let p = HttpsRedirect {
            status: StatusCode::MOVED_PERMANENTLY,
        };
        let r = p.apply(false, "a", "/x", None).unwrap();
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()["location"], "https://a/x");
    }

    #[test]
    fn fixed_redirects_send_the_location_as_written() {
        let r = Redirect {
            status: StatusCode::MOVED_PERMANENTLY,
            location: HeaderValue::from_static("http://redirect.example.com"),
        }
        .apply();
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()["location"], "http://redirect.example.com");
    }

    #[test]
    fn host_redirects_keep_scheme_port_and_target_and_drop_one_trailing_slash() {
        let r = HostRedirect::new("bar.com".into());
        let plain = HeaderValue::from_static("www.bar.com");
        let loc = |resp: LocalResponse| resp.headers()["location"].to_str().unwrap().to_string();
        // ingress-nginx's e2e test: `GET /foo` to www → `http://bar.com:80/foo`, 308.
        let resp = r.apply(false, &plain, "/foo", None);
        assert_eq!(resp.status(), 308);
        assert_eq!(loc(resp), "http://bar.com:80/foo");
        // Over TLS, `/` becomes nothing: `https://bar.com:443`.
        assert_eq!(loc(r.apply(true, &plain, "/", None)), "https://bar.com:443");
        assert_eq!(
            loc(r.apply(false, &plain, "/a/", Some("x=1"))),
            "http://bar.com:80/a/?x=1"
        );
        assert_eq!(
            loc(r.apply(false, &plain, "/a", Some("x=/"))),
            "http://bar.com:80/a?x="
        );
        let with_port = HeaderValue::from_static("www.bar.com:8080");
        assert_eq!(
            loc(r.apply(false, &with_port, "/a/", None)),
            "http://bar.com:8080/a"
        );
        let v6 = HeaderValue::from_static("[::1]");
        assert_eq!(loc(r.apply(false, &v6, "/x", None)), "http://bar.com:80/x");
    }

    #[test]
    fn app_root_redirects_only_the_root() {
        let a = AppRoot { path: "/foo".into() };
        let host = HeaderValue::from_static("approot.bar.com:8080");
        let r = a.apply(false, &host, "/").unwrap();
        assert_eq!(r.status(), 302);
        assert_eq!(r.headers()["location"], "http://approot.bar.com:8080/foo");
        assert_eq!(
            a.apply(true, &host, "/").unwrap().headers()["location"],
            "https://approot.bar.com:8080/foo"
        );
        assert!(a.apply(false, &host, "/foo").is_none());
    }

    mod request_redirect {
        use super::super::*;
        use crate::policy::PathModifier;

        fn rr() -> RequestRedirect {
            RequestRedirect {
                scheme: None,
                hostname: None,
                path: None,
                port: None,
                status: StatusCode::FOUND,
            }
        }

        /// The Location of a request to `host_header` + `path` (query `q=1`), over TLS or not.
        fn location(r: &RequestRedirect, tls: bool, host_header: &'static str, path: &str) -> String {
            let host = host_header.split(':').next().unwrap();
            let resp = r.apply(
                tls,
                host,
                &HeaderValue::from_static(host_header),
                path,
                Some("q=1"),
            );
            assert_eq!(resp.status(), r.status);
            resp.headers()["location"].to_str().unwrap().to_owned()
        }

        #[test]
        fn without_scheme_or_port_the_addressed_port_is_kept_unless_it_is_the_default() {
            // httproute-redirect-port-and-scheme.go, "scheme-nil-and-port-nil" on each listener.
            let r = RequestRedirect {
                hostname: Some("example.org".into()),
                ..rr()
            };
            assert_eq!(location(&r, false, "a.test", "/x"), "http://example.org/x?q=1");
            assert_eq!(location(&r, false, "a.test:80", "/x"), "http://example.org/x?q=1");
            assert_eq!(
                location(&r, false, "a.test:8080", "/x"),
                "http://example.org:8080/x?q=1"
            );
            assert_eq!(location(&r, true, "a.test", "/x"), "https://example.org/x?q=1");
            assert_eq!(
                location(&r, true, "a.test:8443", "/x"),
                "https://example.org:8443/x?q=1"
            );
        }

        #[test]
        fn a_scheme_without_port_goes_to_the_scheme_s_default_port() {
            let https = RequestRedirect {
                scheme: Some(RedirectScheme::Https),
                ..rr()
            };
            assert_eq!(
                location(&https, false, "a.test:8080", "/x"),
                "https://a.test/x?q=1"
            );
            let http = RequestRedirect {
                scheme: Some(RedirectScheme::Http),
                ..rr()
            };
            assert_eq!(location(&http, true, "a.test:8443", "/x"), "http://a.test/x?q=1");
        }

        #[test]
        fn a_port_is_written_unless_it_is_the_scheme_s_default() {
            let cases = [
                (None, 80, false, "http://example.org/p?q=1"),
                (None, 8080, false, "http://example.org:8080/p?q=1"),
                (None, 443, true, "https://example.org/p?q=1"),
                (
                    Some(RedirectScheme::Https),
                    443,
                    false,
                    "https://example.org/p?q=1",
                ),
                (
                    Some(RedirectScheme::Https),
                    8443,
                    false,
                    "https://example.org:8443/p?q=1",
                ),
                (Some(RedirectScheme::Http), 80, true, "http://example.org/p?q=1"),
                (
                    Some(RedirectScheme::Http),
                    8080,
                    true,
                    "http://example.org:8080/p?q=1",
                ),
                (None, 8083, false, "http://example.org:8083/p?q=1"),
            ];
            for (scheme, port, tls, want) in cases {
                let r = RequestRedirect {
                    scheme,
                    port: Some(port),
                    hostname: Some("example.org".into()),
                    ..rr()
                };
                assert_eq!(location(&r, tls, "a.test:9999", "/p"), want, "{scheme:?} {port}");
            }
        }

        #[test]
        fn paths_are_replaced_in_full_or_by_prefix_and_the_status_is_the_filter_s() {
            // httproute-redirect-path.go.
            let prefix = RequestRedirect {
                path: Some(PathModifier::Prefix {
                    matched: "/original-prefix".into(),
                    replacement: "/replacement-prefix".into(),
                }),
                status: StatusCode::MOVED_PERMANENTLY,
                ..rr()
            };
            assert_eq!(
                location(&prefix, false, "a.test", "/original-prefix/lemon"),
                "http://a.test/replacement-prefix/lemon?q=1"
            );
            let full = RequestRedirect {
                path: Some(PathModifier::Full("/full-path-replacement".into())),
                ..rr()
            };
            assert_eq!(
                location(&full, false, "a.test", "/full/path/original"),
                "http://a.test/full-path-replacement?q=1"
            );
        }
    }
}
