//! `canary: "true"`: the Ingress is not routed by itself; its backends become the canary of the
//! main Ingress's routes for the same host and path (translation attaches them, see
//! `translate::rules`).
//!
//! As in ingress-nginx (`internal/ingress/annotations/canary/main.go`, and the user guide: "when
//! you mark an ingress as canary, then all the other non-canary annotations will be ignored
//! (inherited from the corresponding main ingress) except load-balance, upstream-hash-by, and
//! annotations related to session affinity"), a canary Ingress contributes only:
//!
//! - the rules that send requests to its backend: `canary-by-header` (with `-value` or
//!   `-pattern`), `canary-by-cookie`, `canary-weight` and `canary-weight-total`;
//! - how an endpoint of its backend is chosen: `upstream-hash-by` and `load-balance`, and its own
//!   session affinity only with `affinity-canary-behavior: legacy` (with `sticky`, the default, the
//!   canary keeps the main route's session affinity, so that a user the canary served stays there).
//!
//! Every other annotation of a canary Ingress is reported as ignored: requests it takes are served
//! with the main route's policies (access control included), never its own.

use std::sync::Arc;

use gantry_proxy::{
    policy::{Affinity, Canary, HashBy},
    Backend, Balancer,
};
use http::{HeaderName, HeaderValue};

use super::{
    balancing,
    values::{is_basic_chars, parse_bool, parse_int},
    Outcome, Parser, References,
};

/// The annotations of the canary rules.
pub(super) const CANARY_RULES: [&str; 6] = [
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "canary-weight",
    "canary-weight-total",
];

/// Longest compiled `canary-by-header-pattern` (the `regex` crate's size limit): a pattern that
/// needs more is refused rather than allowed to make matching slow or large.
const MAX_PATTERN_SIZE: usize = 1 << 20;

/// What a canary Ingress asks of the routes it attaches to; translation turns it into a
/// [`Canary`] per route with [`CanarySpec::canary`].
#[derive(Clone, Debug)]
pub struct CanarySpec {
    pub by_header: Option<HeaderName>,
    pub header_value: Option<HeaderValue>,
    pub header_pattern: Option<regex::Regex>,
    pub by_cookie: Option<String>,
    pub weight: u32,
    pub weight_total: u32,
    /// `affinity-canary-behavior: sticky` (the default): the canary backend keeps the main route's
    /// session affinity. `legacy`: its own ([`CanarySpec::affinity`]).
    pub sticky: bool,
    /// The canary Ingress's own session affinity (read only with `legacy`).
    pub affinity: Option<Arc<Affinity>>,
    /// The canary Ingress's own `upstream-hash-by`.
    pub hash_by: Option<HashBy>,
    /// The canary Ingress's own `load-balance`.
    pub balancer: Option<Balancer>,
}

impl PartialEq for CanarySpec {
    fn eq(&self, other: &Self) -> bool {
        self.by_header == other.by_header
            && self.header_value == other.header_value
            && self.header_pattern.as_ref().map(regex::Regex::as_str)
                == other.header_pattern.as_ref().map(regex::Regex::as_str)
            && self.by_cookie == other.by_cookie
            && self.weight == other.weight
            && self.weight_total == other.weight_total
            && self.sticky == other.sticky
            && self.affinity == other.affinity
            && self.hash_by == other.hash_by
            && self.balancer == other.balancer
    }
}

impl Eq for CanarySpec {}

impl Default for CanarySpec {
    fn default() -> Self {
        Self {
            by_header: None,
            header_value: None,
            header_pattern: None,
            by_cookie: None,
            weight: 0,
            weight_total: 100,
            sticky: true,
            affinity: None,
            hash_by: None,
            balancer: None,
        }
    }
}

impl CanarySpec {
    /// The canary of one main route: `backend` is the canary Ingress's backend for the route's
    /// host and path, `main_affinity` the route's own session affinity.
    pub fn canary(&self, backend: Arc<Backend>, main_affinity: Option<&Arc<Affinity>>) -> Canary {
        Canary {
            by_header: self.by_header.clone(),
            header_value: self.header_value.clone(),
            header_pattern: self.header_pattern.clone(),
            by_cookie: self.by_cookie.clone(),
            weight: self.weight,
            weight_total: self.weight_total,
            affinity: if self.sticky {
                main_affinity.cloned()
            } else {
                self.affinity.clone()
            },
            hash_by: self.hash_by.clone(),
            balancer: self.balancer,
            ..Canary::new(backend)
        }
    }
}

/// What `canary` says about the Ingress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// Not a canary (no `canary`, or `"false"`): an ordinary Ingress.
    Main,
    /// `canary: "true"`.
    Canary,
    /// `canary` is not a boolean: the Ingress is not routed at all (it may be meant as a canary,
    /// and routed by itself it could take all the traffic of the main Ingress).
    Invalid,
}

/// Reads `canary`. For a canary, reads the canary rules, `affinity-canary-behavior` and the
/// balancing annotations into [`super::IngressAnnotations::canary`]; for the other roles, reports
/// the canary annotations that have no effect.
pub(super) fn parse<R: References>(p: &mut Parser<'_, R>) -> Role {
    let role = match p.value("canary").map(|v| (v, parse_bool(v))) {
        None => Role::Main,
        Some((_, Some(false))) => {
            p.report("canary", Outcome::Ignored("not a canary: nothing to do".into()));
            Role::Main
        }
        Some((_, Some(true))) => Role::Canary,
        Some((_, None)) => {
            let why = "expected \"true\" or \"false\"; the Ingress is not routed (it may be meant as a canary: routed by itself it could take the main Ingress's traffic)";
            p.report("canary", Outcome::Invalid(why.into()));
            p.out.not_routed = Some(format!("canary: {why}"));
            Role::Invalid
        }
    };
    match role {
        Role::Main => {
            // ingress-nginx: "configured but not enabled".
            p.report_all(&CANARY_RULES, || {
                Outcome::Invalid("has no effect without canary: \"true\" (ingress-nginx: canary configured but not enabled)".into())
            });
            p.report_all(&["affinity-canary-behavior"], || {
                Outcome::Ignored("only read on a canary Ingress".into())
            });
        }
        Role::Invalid => {}
        Role::Canary => canary(p),
    }
    role
}

fn canary<R: References>(p: &mut Parser<'_, R>) {
    p.report("canary", Outcome::Honoured);
    p.out.not_routed = Some(
        "a canary: its paths are not routed by themselves; their backends take some requests of the main Ingress's routes for the same host, path and path type"
            .into(),
    );
    let mut spec = CanarySpec::default();
    by_header(p, &mut spec);
    spec.by_cookie = p.value("canary-by-cookie").and_then(|v| {
        if is_basic_chars(v) && is_cookie_name(v) {
            p.report("canary-by-cookie", Outcome::Honoured);
            Some(v.to_string())
        } else {
            p.report(
                "canary-by-cookie",
                Outcome::Invalid(
                    "expected a cookie name (letters, digits and -._~); the cookie rule is off".into(),
                ),
            );
            None
        }
    });
    weights(p, &mut spec);

    spec.sticky = match p.value("affinity-canary-behavior") {
        None => true,
        // `ValidateOptions([sticky legacy], caseSensitive)`.
        Some("sticky") => {
            p.report("affinity-canary-behavior", Outcome::Honoured);
            true
        }
        Some("legacy") => {
            p.report("affinity-canary-behavior", Outcome::Honoured);
            false
        }
        Some(_) => {
            p.report(
                "affinity-canary-behavior",
                Outcome::Invalid("expected sticky or legacy; sticky is used".into()),
            );
            true
        }
    };
    if spec.sticky {
        let why = "affinity-canary-behavior is sticky (the default): the canary keeps the main route's session affinity, as in ingress-nginx";
        p.report_all(&["affinity"], || Outcome::Ignored(why.into()));
        p.report_all(&balancing::AFFINITY_SETTINGS, || Outcome::Ignored(why.into()));
    }
    balancing::parse(p, !spec.sticky);
    let policies = std::mem::take(&mut p.out.policies);
    spec.affinity = policies.affinity;
    spec.hash_by = policies.hash_by;
    spec.balancer = policies.balancer;
    p.out.canary = Some(spec);
}

/// `canary-by-header` and its value or pattern. ingress-nginx reads `$http_<name>` with `-` for
/// `_`, so the name is taken that way; the value wins over the pattern.
fn by_header<R: References>(p: &mut Parser<'_, R>, spec: &mut CanarySpec) {
    let name = p.value("canary-by-header").and_then(|v| {
        let compact: String = v.chars().filter(|c| *c != ' ').collect();
        let header = compact.to_ascii_lowercase().replace('_', "-");
        match HeaderName::from_bytes(header.as_bytes()) {
            Ok(name) if is_basic_chars(&compact) => {
                p.report("canary-by-header", Outcome::Honoured);
                Some(name)
            }
            _ => {
                p.report(
                    "canary-by-header",
                    Outcome::Invalid(
                        "expected a header name such as X-Canary; the header rule is off".into(),
                    ),
                );
                None
            }
        }
    });
    if name.is_none() {
        p.report_all(&["canary-by-header-value", "canary-by-header-pattern"], || {
            Outcome::Ignored("has no effect without a usable canary-by-header, as in ingress-nginx".into())
        });
        return;
    }
    spec.header_value = p.value("canary-by-header-value").and_then(|v| {
        // `BasicCharsRegex` with spaces removed: the value keeps them.
        let basic = is_basic_chars(&v.replace(' ', ""));
        match HeaderValue::from_str(v) {
            Ok(value) if basic => {
                p.report("canary-by-header-value", Outcome::Honoured);
                Some(value)
            }
            _ => {
                p.report(
                    "canary-by-header-value",
                    Outcome::Invalid(
                        "expected letters, digits, spaces and -._~/:; always and never decide instead".into(),
                    ),
                );
                None
            }
        }
    });
    if let Some(v) = p.value("canary-by-header-pattern") {
        if spec.header_value.is_some() {
            p.report(
                "canary-by-header-pattern",
                Outcome::Ignored("canary-by-header-value takes precedence, as in ingress-nginx".into()),
            );
        } else if !is_pattern_chars(v) {
            p.report(
                "canary-by-header-pattern",
                Outcome::Invalid(
                    "expected a regular expression of letters, digits and -._~/:^$[](){}*+?|&=\\; always and never decide instead"
                        .into(),
                ),
            );
        } else {
            match regex::RegexBuilder::new(v).size_limit(MAX_PATTERN_SIZE).build() {
                Ok(re) => {
                    p.report("canary-by-header-pattern", Outcome::Honoured);
                    spec.header_pattern = Some(re);
                }
                Err(e) => {
                    let e = super::values::shorten(&e.to_string().replace('\n', " "), 200);
                    p.report(
                        "canary-by-header-pattern",
                        Outcome::Invalid(format!(
                            "does not compile ({e}); ingress-nginx then sends every request that carries the header to the main backend, Gantry turns the header rule off instead (such requests are decided by canary-by-cookie and canary-weight)"
                        )),
                    );
                    // No header rule at all: with the pattern gone, `always` would send requests
                    // to the canary that ingress-nginx keeps on the main backend.
                    if let Some(r) = p.reports.get_mut("canary-by-header") {
                        r.add_difference(
                            "the header rule is off: canary-by-header-pattern does not compile".into(),
                        );
                    }
                    return;
                }
            }
        }
    }
    spec.by_header = name;
}

/// `canary-weight` and `canary-weight-total` (Go's `Atoi`; a total of 100 or less counts as 100
/// in ingress-nginx's balancer).
fn weights<R: References>(p: &mut Parser<'_, R>, spec: &mut CanarySpec) {
    let clamp = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    if let Some(v) = p.value("canary-weight") {
        match parse_int(v) {
            Some(n) if n >= 0 => {
                spec.weight = clamp(n);
                p.report("canary-weight", Outcome::Honoured);
            }
            Some(_) => p.report(
                "canary-weight",
                Outcome::Invalid("a negative weight sends nothing to the canary; 0 is used".into()),
            ),
            None => p.report(
                "canary-weight",
                Outcome::Invalid("expected a whole number; 0 is used (no request is sent by weight)".into()),
            ),
        }
    }
    if let Some(v) = p.value("canary-weight-total") {
        match parse_int(v) {
            Some(100) => p.report("canary-weight-total", Outcome::Honoured),
            Some(n) if n > 100 => {
                spec.weight_total = clamp(n);
                p.report("canary-weight-total", Outcome::Honoured);
            }
            Some(_) => p.report(
                "canary-weight-total",
                Outcome::Ignored("a total of 100 or less counts as 100, as in ingress-nginx".into()),
            ),
            None => p.report(
                "canary-weight-total",
                Outcome::Invalid("expected a whole number; 100 is used".into()),
            ),
        }
    }
}

/// ingress-nginx's `IsValidRegex` characters: `[/\-._~a-zA-Z0-9:^$\[\](){}*+?|&=\\]`.
fn is_pattern_chars(v: &str) -> bool {
    v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || br"/-._~:^$[](){}*+?|&=\".contains(&b))
}

/// Letters, digits and -._~ (ingress-nginx's `BasicCharsRegex` without `/` and `:`, which no
/// cookie name may hold).
fn is_cookie_name(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Reports every annotation that has no report yet as ignored, with `why`.
pub(super) fn ignore_the_rest<R: References>(p: &mut Parser<'_, R>, why: &str) {
    let present: Vec<&'static str> = p
        .values
        .keys()
        .filter_map(|n| super::catalog::lookup(n))
        .map(|e| e.name)
        .collect();
    p.report_all(&present, || Outcome::Ignored(why.to_string()));
}
