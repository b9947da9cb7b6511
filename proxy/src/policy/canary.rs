//! Canary: a second backend that some of a route's requests go to instead of its own (an Ingress
//! with `canary: "true"` on the same host and path).
//!
//! The decision is ingress-nginx's (`rootfs/etc/nginx/lua/balancer.lua`,
//! `route_to_alternative_balancer`), in its order:
//!
//! 1. a request with a session affinity cookie of the main backend stays on the main backend;
//! 2. a canary backend without endpoints gets nothing (ingress-nginx has no balancer for it;
//!    likewise a main backend without endpoints answers 503 without asking the canary, which the
//!    pipeline does before calling [`Canary::decide`]);
//! 3. a request with a session affinity cookie of the canary backend goes to the canary;
//! 4. `canary-by-header`: with `canary-by-header-value`, that exact value goes to the canary;
//!    else with `canary-by-header-pattern`, a value the pattern matches (anywhere, as
//!    `ngx.re.match`) goes to the canary; else `always` goes to the canary and `never` to the main
//!    backend. Any other value, or no header, falls through;
//! 5. `canary-by-cookie`: `always` goes to the canary, `never` to the main backend, anything else
//!    falls through;
//! 6. `canary-weight`: a draw of 1..=total goes to the canary when it is at most the weight. The
//!    total is `canary-weight-total` when above 100, else 100 (as ingress-nginx reads it).

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{affinity::request_cookie, Affinity, HashBy};
use crate::{backend::Backend, config::Balancer};

/// A route's canary backend and the rules that send requests to it.
#[derive(Clone, Debug)]
pub struct Canary {
    /// The canary Ingress's backend.
    pub backend: Arc<Backend>,
    /// `canary-by-header`.
    pub by_header: Option<HeaderName>,
    /// `canary-by-header-value`.
    pub header_value: Option<HeaderValue>,
    /// `canary-by-header-pattern` (ignored when `header_value` is set). Compared by its source.
    pub header_pattern: Option<regex::Regex>,
    /// `canary-by-cookie`: the cookie's name (compared without case, as nginx's `$cookie_`).
    pub by_cookie: Option<String>,
    /// `canary-weight`.
    pub weight: u32,
    /// `canary-weight-total` (100 by default; values up to 100 count as 100).
    pub weight_total: u32,
    /// Session affinity within the canary backend. With `affinity-canary-behavior: sticky` (the
    /// default) it is the main route's, so that a user the canary served stays on it; with
    /// `legacy`, the canary Ingress's own (usually none).
    pub affinity: Option<Arc<Affinity>>,
    /// The canary Ingress's own `upstream-hash-by` (ingress-nginx does not inherit it).
    pub hash_by: Option<HashBy>,
    /// The canary Ingress's own `load-balance`; `None` is the class-wide balancer.
    pub balancer: Option<Balancer>,
}

/// Which backend a request goes to, and which rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CanaryDecision {
    /// The request has the main backend's affinity cookie.
    MainAffinity,
    /// The canary backend has no endpoints.
    NoEndpoints,
    /// The request has the canary backend's affinity cookie.
    CanaryAffinity,
    /// `canary-by-header` decided: `true` is the canary.
    Header(bool),
    /// `canary-by-cookie` decided.
    Cookie(bool),
    /// The weighted draw decided.
    Weight(bool),
}

impl CanaryDecision {
    /// Whether the request goes to the canary backend.
    pub fn to_canary(self) -> bool {
        match self {
            Self::MainAffinity | Self::NoEndpoints => false,
            Self::CanaryAffinity => true,
            Self::Header(c) | Self::Cookie(c) | Self::Weight(c) => c,
        }
    }
}

impl PartialEq for Canary {
    fn eq(&self, other: &Self) -> bool {
        self.backend == other.backend
            && self.by_header == other.by_header
            && self.header_value == other.header_value
            && self.header_pattern.as_ref().map(regex::Regex::as_str)
                == other.header_pattern.as_ref().map(regex::Regex::as_str)
            && self.by_cookie == other.by_cookie
            && self.weight == other.weight
            && self.weight_total == other.weight_total
            && self.affinity == other.affinity
            && self.hash_by == other.hash_by
            && self.balancer == other.balancer
    }
}

impl Eq for Canary {}

// === impl Canary ===

impl Canary {
    /// A canary that gets no request until a rule is added (weight 0 of 100).
    pub fn new(backend: Arc<Backend>) -> Self {
        Self {
            backend,
            by_header: None,
            header_value: None,
            header_pattern: None,
            by_cookie: None,
            weight: 0,
            weight_total: 100,
            affinity: None,
            hash_by: None,
            balancer: None,
        }
    }

    /// Decides for one request. `main_affinitized` and `canary_affinitized`: the request carries
    /// the session affinity cookie of that backend. `draw(total)` returns a number in
    /// `1..=total` (random, except in tests).
    pub fn decide(
        &self,
        headers: &HeaderMap,
        main_affinitized: bool,
        canary_affinitized: bool,
        draw: impl FnOnce(u32) -> u32,
    ) -> CanaryDecision {
        if main_affinitized {
            return CanaryDecision::MainAffinity;
        }
        if self.backend.endpoints.is_empty() {
            return CanaryDecision::NoEndpoints;
        }
        if canary_affinitized {
            return CanaryDecision::CanaryAffinity;
        }
        if let Some(value) = self.by_header.as_ref().and_then(|name| headers.get(name)) {
            // Empty ones count as unset, as in ingress-nginx.
            let wanted = self.header_value.as_ref().filter(|v| !v.is_empty());
            let pattern = self.header_pattern.as_ref().filter(|p| !p.as_str().is_empty());
            if let Some(wanted) = wanted {
                if value == wanted {
                    return CanaryDecision::Header(true);
                }
            } else if let Some(pattern) = pattern {
                if value.to_str().is_ok_and(|v| pattern.is_match(v)) {
                    return CanaryDecision::Header(true);
                }
            } else if value == "always" {
                return CanaryDecision::Header(true);
            } else if value == "never" {
                return CanaryDecision::Header(false);
            }
        }
        if let Some(cookie) = self
            .by_cookie
            .as_deref()
            .and_then(|name| request_cookie(headers, name, true))
        {
            match cookie {
                b"always" => return CanaryDecision::Cookie(true),
                b"never" => return CanaryDecision::Cookie(false),
                _ => {}
            }
        }
        CanaryDecision::Weight(self.weight > 0 && draw(self.total()) <= self.weight)
    }

    /// The total the weight is out of.
    pub fn total(&self) -> u32 {
        self.weight_total.max(100)
    }

    /// One line for `/debug/explain`.
    pub fn describe(&self) -> String {
        let mut rules = Vec::new();
        if let Some(h) = &self.by_header {
            rules.push(match (&self.header_value, &self.header_pattern) {
                (Some(v), _) => format!("header {h}: {}", v.to_str().unwrap_or("?")),
                (None, Some(p)) => format!("header {h} ~ {}", p.as_str()),
                (None, None) => format!("header {h}: always/never"),
            });
        }
        if let Some(c) = &self.by_cookie {
            rules.push(format!("cookie {c}: always/never"));
        }
        rules.push(format!("weight {}/{}", self.weight, self.total()));
        format!("canary {}: {}", self.backend.id, rules.join(", then "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendId, Endpoint};

    fn backend(service: &str, endpoints: usize) -> Arc<Backend> {
        let id = BackendId {
            namespace: "default".into(),
            service: service.into(),
            port: "80".into(),
        };
        let endpoints = (0..endpoints)
            .map(|i| Endpoint {
                addr: std::net::SocketAddr::from(([10, 0, 1, i as u8], 80)),
            })
            .collect();
        Arc::new(Backend::new(id, endpoints))
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn canary() -> Canary {
        Canary {
            by_header: Some(HeaderName::from_static("canarybyheader")),
            by_cookie: Some("Canary-By-Cookie".into()),
            ..Canary::new(backend("canary", 1))
        }
    }

    /// Decides with a draw that fails the test if the weight is consulted.
    fn decide(c: &Canary, h: &HeaderMap) -> CanaryDecision {
        c.decide(h, false, false, |_| panic!("weight consulted"))
    }

    use CanaryDecision::*;

    #[test]
    fn header_always_and_never_win_over_cookie_and_weight() {
        let c = Canary {
            weight: 100,
            ..canary()
        };
        let h = headers(&[("canarybyheader", "always"), ("cookie", "canary-by-cookie=never")]);
        assert_eq!(decide(&c, &h), Header(true));
        let h = headers(&[("CanaryByHeader", "never"), ("cookie", "Canary-By-Cookie=always")]);
        assert_eq!(decide(&c, &h), Header(false));
        // Any other value falls through to the cookie, then the weight.
        let h = headers(&[
            ("canarybyheader", "badheadervalue"),
            ("cookie", "Canary-By-Cookie=always"),
        ]);
        assert_eq!(decide(&c, &h), Cookie(true));
        let h = headers(&[("canarybyheader", "badheadervalue")]);
        assert_eq!(c.decide(&h, false, false, |total| total), Weight(true));
    }

    #[test]
    fn a_header_value_replaces_always_and_never() {
        let c = Canary {
            header_value: Some(HeaderValue::from_static("DoCanary")),
            header_pattern: Some(regex::Regex::new("^always$").unwrap()),
            ..canary()
        };
        assert_eq!(
            decide(&c, &headers(&[("canarybyheader", "DoCanary")])),
            Header(true)
        );
        for other in ["always", "never", "docanary", "otherheadervalue"] {
            let h = headers(&[("canarybyheader", other)]);
            assert_eq!(c.decide(&h, false, false, |_| 100), Weight(false), "{other}");
        }
        // With the value set, the cookie still decides a value that does not match.
        let h = headers(&[
            ("canarybyheader", "otherheadervalue"),
            ("cookie", "Canary-By-Cookie=always"),
        ]);
        assert_eq!(decide(&c, &h), Cookie(true));
        // An empty value is no value: `always` works again.
        let c = Canary {
            header_value: Some(HeaderValue::from_static("")),
            header_pattern: Some(regex::Regex::new("").unwrap()),
            ..canary()
        };
        assert_eq!(
            decide(&c, &headers(&[("canarybyheader", "always")])),
            Header(true)
        );
    }

    #[test]
    fn a_header_pattern_matches_like_ngx_re_match() {
        let c = Canary {
            header_pattern: Some(regex::Regex::new("^Do[A-Z][a-z]+y$").unwrap()),
            ..canary()
        };
        assert_eq!(
            decide(&c, &headers(&[("canarybyheader", "DoCanary")])),
            Header(true)
        );
        let h = headers(&[("canarybyheader", "Docanary")]);
        assert_eq!(c.decide(&h, false, false, |_| 1), Weight(false));
        // `always` is no longer special once a pattern is set.
        let h = headers(&[("canarybyheader", "always")]);
        assert_eq!(c.decide(&h, false, false, |_| 1), Weight(false));
        // Unanchored patterns match anywhere; a non-UTF-8 value never matches.
        let c = Canary {
            header_pattern: Some(regex::Regex::new("beta").unwrap()),
            ..canary()
        };
        assert_eq!(
            decide(&c, &headers(&[("canarybyheader", "x-beta-1")])),
            Header(true)
        );
        let mut h = HeaderMap::new();
        h.insert("canarybyheader", HeaderValue::from_bytes(b"beta\xff").unwrap());
        assert_eq!(c.decide(&h, false, false, |_| 1), Weight(false));
    }

    #[test]
    fn cookie_always_and_never_win_over_the_weight() {
        let c = Canary {
            weight: 100,
            ..canary()
        };
        let h = headers(&[("cookie", "a=b; Canary-By-Cookie=never")]);
        assert_eq!(decide(&c, &h), Cookie(false));
        let c = Canary { weight: 0, ..c };
        let h = headers(&[("cookie", "canary-by-cookie=always")]);
        assert_eq!(decide(&c, &h), Cookie(true));
        let h = headers(&[("cookie", "Canary-By-Cookie=badcookievalue")]);
        assert_eq!(c.decide(&h, false, false, |_| 1), Weight(false));
    }

    #[test]
    fn affinity_and_endpoints_come_first() {
        let c = canary();
        let h = headers(&[("canarybyheader", "always")]);
        assert_eq!(c.decide(&h, true, true, |_| 1), MainAffinity);
        assert_eq!(c.decide(&h, false, true, |_| 1), CanaryAffinity);
        let h = headers(&[("canarybyheader", "never")]);
        assert_eq!(c.decide(&h, false, true, |_| 1), CanaryAffinity);
        let empty = Canary {
            backend: backend("canary", 0),
            weight: 100,
            ..canary()
        };
        let h = headers(&[("canarybyheader", "always")]);
        assert_eq!(empty.decide(&h, false, true, |_| 1), NoEndpoints);
        assert!(!NoEndpoints.to_canary());
    }

    #[test]
    fn weights_are_out_of_at_least_100() {
        let h = HeaderMap::new();
        let c = Canary {
            weight: 100,
            weight_total: 200,
            ..canary()
        };
        assert_eq!(c.total(), 200);
        assert_eq!(c.decide(&h, false, false, |t| t / 2), Weight(true));
        assert_eq!(c.decide(&h, false, false, |t| t / 2 + 1), Weight(false));
        let c = Canary {
            weight: 10,
            weight_total: 50,
            ..canary()
        };
        assert_eq!(c.total(), 100, "ingress-nginx ignores totals under 100");
        let c = Canary {
            weight: 1000,
            weight_total: 1000,
            ..canary()
        };
        assert_eq!(c.decide(&h, false, false, |t| t), Weight(true));
        let c = Canary {
            weight: 0,
            ..canary()
        };
        assert_eq!(
            c.decide(&h, false, false, |_| panic!("no draw at weight 0")),
            Weight(false)
        );
    }

    #[test]
    fn a_weight_splits_within_a_99_percent_binomial_bound() {
        let c = Canary {
            weight: 20,
            ..canary()
        };
        let h = HeaderMap::new();
        let n = 10_000u32;
        // Seeded, so that the test is not the 1% that a 99% bound lets fail.
        let mut rng = fastrand::Rng::with_seed(0x6761_6e74_7279);
        let hits = (0..n)
            .filter(|_| c.decide(&h, false, false, |total| rng.u32(1..=total)).to_canary())
            .count() as f64;
        // p = 0.2: mean 2000, sd 40; the 99% two-sided bound is 2.576 sd.
        let (mean, sd) = (2000.0, (f64::from(n) * 0.2 * 0.8).sqrt());
        assert!((hits - mean).abs() <= 2.576 * sd, "{hits}");
    }

    #[test]
    fn canaries_compare_by_value_with_patterns_by_source() {
        let a = Canary {
            header_pattern: Some(regex::Regex::new("^a+$").unwrap()),
            ..canary()
        };
        let b = Canary {
            header_pattern: Some(regex::Regex::new("^a+$").unwrap()),
            ..canary()
        };
        assert_eq!(a, b);
        let c = Canary {
            header_pattern: Some(regex::Regex::new("^a*$").unwrap()),
            ..canary()
        };
        assert_ne!(a, c);
        assert!(a.describe().contains("default/canary:80"));
    }
}
