//! CORS (`enable-cors` and the `cors-*` family): preflights answered by Gantry, headers added to
//! responses.
//!
//! SKELETON: types and signatures are the contract with the controller.

use http::{HeaderMap, HeaderValue, Method};

use super::LocalResponse;

/// One allowed origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigin {
    /// `*`: any origin.
    Any,
    /// One origin, exactly (`https://example.com`, `http://example.com:8080`), lowercase.
    Exact(String),
    /// `https://*.example.com`: any subdomain of `example.com` (at any depth) with this scheme and
    /// port; not `example.com` itself.
    Subdomains { scheme: String, domain: String, port: Option<u16> },
}

/// The CORS policy of a route, with ingress-nginx's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    /// Empty is not allowed by the controller; the default is `[Any]`.
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
        }
    }
}

impl Cors {
    /// The answer to a preflight (`OPTIONS`), or `None` for any other request.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<LocalResponse> {
        let _ = (method, headers);
        None
    }

    /// Adds the CORS headers to a (non-preflight) response; `origin` is the request's `Origin`.
    pub fn apply_response(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        let _ = (origin, headers);
    }
}
