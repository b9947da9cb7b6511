//! Policies: typed values that the controller compiles per route ahead of time, and that the
//! request pipeline applies in a fixed order. The data path never sees the text a policy came from
//! (an annotation, a Gateway API filter, a ProxyConfig field), only these values.
//!
//! A policy is a plain value with an `apply` method that decides from the request alone; it holds
//! no runtime state. New policies are added as fields of [`Policies`], each applied by one phase of
//! the pipeline (`pipeline`), so their order is the pipeline's, not the order a front end wrote
//! them in.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// A response Gantry answers by itself, without a backend.
pub type LocalResponse = Response<Full<Bytes>>;

/// `Server: gantry` on every response Gantry makes itself.
pub static SERVER: HeaderValue = HeaderValue::from_static("gantry");

/// Everything a route asks of a request beyond forwarding it. `Default` is no policy at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policies {
    /// Answer plain-HTTP requests with a redirect to `https://` (ingress-nginx's `ssl-redirect`,
    /// on by default for hosts with TLS).
    pub https_redirect: Option<HttpsRedirect>,
}

impl Policies {
    /// Policies with only the HTTPS redirect, when `on`.
    pub fn https_redirect(on: bool) -> Self {
        Self {
            https_redirect: on.then(HttpsRedirect::default),
        }
    }
}

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
    fn policies_compare_by_value() {
        assert_eq!(Policies::https_redirect(true), Policies::https_redirect(true));
        assert_ne!(Policies::https_redirect(true), Policies::default());
        assert_eq!(Policies::https_redirect(false), Policies::default());
    }
}
