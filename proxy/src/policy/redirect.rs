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
}
