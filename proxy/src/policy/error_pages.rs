//! Custom error pages (`custom-http-errors`, `disable-proxy-intercept-errors`) and the fallback
//! backend (`default-backend`).
//!
//! When a route's answer has a listed status, the pipeline sends a `GET /` to the error backend
//! (the route's `default-backend` when it has endpoints, else the snapshot's default route, i.e.
//! the oldest `spec.defaultBackend`) with the headers of ingress-nginx's `@custom_*` locations
//! (`X-Code`, `X-Format`, `X-Original-URI`, `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`,
//! `X-Service-Port`, `X-Request-ID`) and answers with the error backend's response **as it is,
//! status included**: ingress-nginx's documentation says "the custom backend is expected to return
//! the correct HTTP status code instead of 200; NGINX does not change the response", and its e2e
//! test expects an echo server's 200 there (its own custom-error-pages image answers with the
//! `X-Code` it was sent). When there is no error backend, or it cannot be reached, the original
//! response is returned.

use http::{HeaderName, StatusCode};

/// The request headers sent to the error backend, as ingress-nginx's `nginx.tmpl` sets them.
pub static X_CODE: HeaderName = HeaderName::from_static("x-code");
pub static X_FORMAT: HeaderName = HeaderName::from_static("x-format");
pub static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
pub static X_NAMESPACE: HeaderName = HeaderName::from_static("x-namespace");
pub static X_INGRESS_NAME: HeaderName = HeaderName::from_static("x-ingress-name");
pub static X_SERVICE_NAME: HeaderName = HeaderName::from_static("x-service-name");
pub static X_SERVICE_PORT: HeaderName = HeaderName::from_static("x-service-port");

/// `custom-http-errors` of one route.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CustomErrors {
    /// Sorted, without duplicates, each within 400..=599.
    codes: Vec<u16>,
    /// Whether the backend's own responses are intercepted; `false` with
    /// `disable-proxy-intercept-errors: "true"`, when only Gantry's own errors (502, 503, 504
    /// decided while reaching the backend) get the error page, as nginx's `error_page` without
    /// `proxy_intercept_errors`.
    pub intercept_upstream: bool,
}

impl CustomErrors {
    /// The policy for `codes` (those outside 400..=599 are dropped; `None` when none is left).
    pub fn new(codes: impl IntoIterator<Item = u16>, intercept_upstream: bool) -> Option<Self> {
        let mut codes: Vec<u16> = codes.into_iter().filter(|c| (400..=599).contains(c)).collect();
        codes.sort_unstable();
        codes.dedup();
        (!codes.is_empty()).then_some(Self {
            codes,
            intercept_upstream,
        })
    }

    pub fn codes(&self) -> &[u16] {
        &self.codes
    }

    /// Whether a response with `status` gets the error page.
    pub fn contains(&self, status: StatusCode) -> bool {
        self.codes.binary_search(&status.as_u16()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_sorted_deduplicated_and_bounded() {
        let c = CustomErrors::new([503, 404, 503, 200, 600], true).unwrap();
        assert_eq!(c.codes(), &[404, 503]);
        assert!(c.contains(StatusCode::NOT_FOUND));
        assert!(!c.contains(StatusCode::OK));
        assert!(!c.contains(StatusCode::BAD_GATEWAY));
        assert_eq!(CustomErrors::new([200, 302], true), None);
    }
}
