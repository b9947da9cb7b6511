//! How a route's endpoint is chosen: cookie session affinity (`affinity: cookie`, `affinity-mode`,
//! `session-cookie-*`), consistent hashing (`upstream-hash-by`, `upstream-hash-by-subset*`) and the
//! balancer (`load-balance`).
//!
//! Precedence is ingress-nginx's (`get_implementation` in `rootfs/etc/nginx/lua/balancer.lua`):
//! session affinity, else the hash, else `load-balance`, else the class-wide balancer. What loses is
//! reported as ignored and left out of the policies, so that they say what is in force.
//!
//! Values are validated as `internal/ingress/annotations/{sessionaffinity,upstreamhashby,
//! loadbalancing}/main.go` validate them; a value that fails falls back to ingress-nginx's default
//! for that setting and is reported invalid.

use std::sync::Arc;

use gantry_proxy::{
    policy::{Affinity, AffinityMode, HashBy, SameSite, DEFAULT_COOKIE_NAME},
    Balancer,
};
use http::HeaderName;

use super::{
    values::{is_basic_chars, is_url_chars, parse_bool, parse_int},
    Outcome, Parser, References,
};

/// The annotations that configure the session cookie (all but `affinity` itself).
pub(super) const AFFINITY_SETTINGS: [&str; 10] = [
    "affinity-mode",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-domain",
    "session-cookie-samesite",
    "session-cookie-conditional-samesite-none",
    "session-cookie-secure",
    "session-cookie-expires",
    "session-cookie-max-age",
    "session-cookie-change-on-failure",
];

/// Reads session affinity (unless `affinity` is false: a canary with the sticky canary behaviour
/// takes the main route's), the hash and the balancer into the policies.
pub(super) fn parse<R: References>(p: &mut Parser<'_, R>, read_affinity: bool) {
    let affinity = if read_affinity { affinity(p) } else { None };
    let hash_by = hash_by(p, affinity.is_some());
    let balancer = load_balance(p, affinity.is_some(), hash_by.is_some());
    let policies = &mut p.out.policies;
    policies.affinity = affinity;
    policies.hash_by = hash_by;
    policies.balancer = balancer;
}

/// `affinity: cookie` and the `session-cookie-*` settings. ingress-nginx reads the settings only
/// with `affinity: cookie`; each invalid one takes its default.
fn affinity<R: References>(p: &mut Parser<'_, R>) -> Option<Arc<Affinity>> {
    let settings = &AFFINITY_SETTINGS;
    match p.value("affinity") {
        None => {
            p.report_all(settings, || {
                Outcome::Ignored("has no effect without affinity: cookie, as in ingress-nginx".into())
            });
            return None;
        }
        // `ValidateOptions([cookie], caseSensitive)`.
        Some("cookie") => {}
        Some(_) => {
            p.report(
                "affinity",
                Outcome::Invalid(
                    "expected cookie (the only affinity type); requests are balanced without session affinity"
                        .into(),
                ),
            );
            p.report_all(settings, || Outcome::Ignored("affinity is invalid".into()));
            return None;
        }
    }
    let mode = match p.value("affinity-mode") {
        None => AffinityMode::Balanced,
        Some(v) => match v {
            "balanced" => {
                p.report("affinity-mode", Outcome::Honoured);
                AffinityMode::Balanced
            }
            "persistent" => {
                p.report("affinity-mode", Outcome::Honoured);
                AffinityMode::Persistent
            }
            _ => {
                p.report(
                    "affinity-mode",
                    Outcome::Invalid("expected balanced or persistent; balanced is used".into()),
                );
                AffinityMode::Balanced
            }
        },
    };
    let mut a = Affinity {
        mode,
        ..Affinity::default()
    };

    // The name: `BasicCharsRegex`, and a cookie name (a token). Both together leave letters,
    // digits and -._~.
    if let Some(v) = p.value("session-cookie-name") {
        let candidate = Affinity {
            cookie_name: v.to_string(),
            ..Affinity::default()
        };
        if is_cookie_name(v) && candidate.validate().is_ok() {
            a.cookie_name = v.to_string();
            p.report("session-cookie-name", Outcome::Honoured);
        } else {
            p.report(
                "session-cookie-name",
                Outcome::Invalid(format!(
                    "expected a cookie name (letters, digits and -._~); {DEFAULT_COOKIE_NAME} is used"
                )),
            );
        }
    }

    // The path: `URLIsValidRegex`; none is the route's path as written.
    if let Some(v) = p.value("session-cookie-path") {
        let candidate = Affinity {
            path: Some(v.to_string()),
            ..Affinity::default()
        };
        if is_url_chars(v) && !v.contains(['$', '%']) && candidate.validate().is_ok() {
            a.path = Some(v.to_string());
            p.report("session-cookie-path", Outcome::Honoured);
        } else {
            p.report(
                "session-cookie-path",
                Outcome::Invalid(
                    "expected a path such as /app (letters, digits and -._~/:,?&=); the cookie's path is the route's path"
                        .into(),
                ),
            );
        }
    }

    // The domain: `BasicCharsRegex`.
    if let Some(v) = p.value("session-cookie-domain") {
        let candidate = Affinity {
            domain: Some(v.to_string()),
            ..Affinity::default()
        };
        if is_basic_chars(v) && !v.contains('/') && candidate.validate().is_ok() {
            a.domain = Some(v.to_string());
            p.report("session-cookie-domain", Outcome::Honoured);
        } else {
            p.report(
                "session-cookie-domain",
                Outcome::Invalid("expected a domain such as example.com; no Domain is set".into()),
            );
        }
    }

    // `ValidateOptions([none lax strict], caseInsensitive)`.
    if let Some(v) = p.value("session-cookie-samesite") {
        a.same_site = match v.to_ascii_lowercase().as_str() {
            "none" => Some(SameSite::None),
            "lax" => Some(SameSite::Lax),
            "strict" => Some(SameSite::Strict),
            _ => None,
        };
        let outcome = match a.same_site {
            Some(_) => Outcome::Honoured,
            None => Outcome::Invalid("expected None, Lax or Strict; no SameSite is set".into()),
        };
        p.report("session-cookie-samesite", outcome);
    }

    a.conditional_same_site_none = flag(p, "session-cookie-conditional-samesite-none");
    a.secure = flag(p, "session-cookie-secure");
    a.change_on_failure = flag(p, "session-cookie-change-on-failure");
    a.expires = seconds(p, "session-cookie-expires", "Expires");
    a.max_age = seconds(p, "session-cookie-max-age", "Max-Age");

    if a.validate().is_err() {
        // Every part was checked above; this is a last line of defence (the data plane would
        // send no cookie at all).
        p.report(
            "affinity",
            Outcome::Invalid("the session cookie cannot be sent as configured; no session affinity".into()),
        );
        return None;
    }
    if a.path.is_none() && (p.out.use_regex || p.out.rewrite_target.is_some()) {
        // affinity.go: "should warn user when use-regex is true and session-cookie-path is not set".
        p.report(
            "affinity",
            Outcome::Difference(
                "session-cookie-path should be set when use-regex is true: the cookie's Path is the route's path as written (a regular expression), as in ingress-nginx"
                    .into(),
            ),
        );
    }
    p.report("affinity", Outcome::Honoured);
    Some(Arc::new(a))
}

/// A boolean setting (Go's `ParseBool`); invalid is false, as in ingress-nginx.
fn flag<R: References>(p: &mut Parser<'_, R>, name: &'static str) -> bool {
    let Some(v) = p.value(name) else { return false };
    match parse_bool(v) {
        Some(b) => {
            p.report(name, Outcome::Honoured);
            b
        }
        None => {
            p.report(
                name,
                Outcome::Invalid("expected true or false; false is used".into()),
            );
            false
        }
    }
}

/// `session-cookie-expires` and `-max-age`: whole seconds (ingress-nginx's `(^0|-?[1-9]\d*$)`,
/// read by Lua's `tonumber`).
fn seconds<R: References>(p: &mut Parser<'_, R>, name: &'static str, attribute: &str) -> Option<i64> {
    let v = p.value(name)?;
    match parse_int(v) {
        Some(n) => {
            p.report(name, Outcome::Honoured);
            Some(n)
        }
        None => {
            p.report(
                name,
                Outcome::Invalid(format!(
                    "expected whole seconds such as \"172800\"; the cookie has no {attribute}"
                )),
            );
            None
        }
    }
}

/// Letters, digits and -._~: what both ingress-nginx's `BasicCharsRegex` and a cookie name allow.
fn is_cookie_name(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// `upstream-hash-by`: one nginx variable that Gantry reads itself. Anything else is refused:
/// nginx variables are never templated.
fn hash_by<R: References>(p: &mut Parser<'_, R>, affinity: bool) -> Option<HashBy> {
    let hash_by = match p.value("upstream-hash-by") {
        None => None,
        Some(_) if affinity => {
            p.report(
                "upstream-hash-by",
                Outcome::Ignored("affinity: cookie takes precedence, as in ingress-nginx".into()),
            );
            None
        }
        Some(v) => {
            let compact: String = v.chars().filter(|c| *c != ' ').collect();
            // ingress-nginx's `^[A-Za-z0-9\-_${}]*$` (spaces removed).
            if !compact
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_${}".contains(&b))
            {
                p.report(
                    "upstream-hash-by",
                    Outcome::Invalid(
                        "expected an nginx variable such as $request_uri; requests are balanced by the route's balancer"
                            .into(),
                    ),
                );
                None
            } else {
                match hash_variable(&compact) {
                    Some(h) => {
                        p.report("upstream-hash-by", Outcome::Honoured);
                        Some(h)
                    }
                    None => {
                        p.report(
                            "upstream-hash-by",
                            Outcome::Refused(
                                "Gantry hashes exactly one of $request_uri, $remote_addr, $http_<header>, $cookie_<name> or $arg_<name>: it does not template nginx variables, so other variables, text and combinations are not supported; requests are balanced by the route's balancer"
                                    .into(),
                            ),
                        );
                        None
                    }
                }
            }
        }
    };
    let subset = match p.value("upstream-hash-by-subset") {
        None => false,
        Some(_) if hash_by.is_none() => {
            p.report(
                "upstream-hash-by-subset",
                Outcome::Ignored("has no effect without a usable upstream-hash-by".into()),
            );
            false
        }
        Some(v) => match parse_bool(v) {
            Some(true) => {
                p.report(
                    "upstream-hash-by-subset",
                    Outcome::Refused(
                        "subset hashing is not supported: each key goes to one endpoint, as without this annotation"
                            .into(),
                    ),
                );
                true
            }
            Some(false) => {
                p.report(
                    "upstream-hash-by-subset",
                    Outcome::Ignored("\"false\": each key goes to one endpoint, as in ingress-nginx".into()),
                );
                false
            }
            None => {
                p.report(
                    "upstream-hash-by-subset",
                    Outcome::Invalid("expected true or false; false is used".into()),
                );
                false
            }
        },
    };
    if let Some(v) = p.value("upstream-hash-by-subset-size") {
        let outcome = match parse_int(v) {
            None => Outcome::Invalid("expected a whole number (3 by default)".into()),
            Some(_) if subset => {
                Outcome::Refused("subset hashing is not supported (see upstream-hash-by-subset)".into())
            }
            Some(_) => Outcome::Ignored("has no effect without upstream-hash-by-subset: \"true\"".into()),
        };
        p.report("upstream-hash-by-subset-size", outcome);
    }
    hash_by
}

/// The request variable named by an `upstream-hash-by` value (spaces removed): exactly one
/// `$name` or `${name}`. nginx's variable names are not case-sensitive; header names take `-` for
/// `_`, as nginx's `$http_` does.
fn hash_variable(value: &str) -> Option<HashBy> {
    let rest = value.strip_prefix('$')?;
    let name = match rest.strip_prefix('{') {
        Some(inner) => inner.strip_suffix('}')?,
        None => rest,
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    let suffix = |prefix: &str| {
        name.get(prefix.len()..)
            .filter(|_| lower.starts_with(prefix))
            .filter(|s| !s.is_empty())
    };
    match lower.as_str() {
        "request_uri" => return Some(HashBy::RequestUri),
        // The same address, in 4 or 16 bytes: the same partition of clients.
        "remote_addr" | "binary_remote_addr" => return Some(HashBy::RemoteAddr),
        _ => {}
    }
    if let Some(header) = suffix("http_") {
        let header = header.to_ascii_lowercase().replace('_', "-");
        return HeaderName::from_bytes(header.as_bytes()).ok().map(HashBy::Header);
    }
    if let Some(cookie) = suffix("cookie_") {
        return Some(HashBy::Cookie(cookie.into()));
    }
    suffix("arg_").map(|arg| HashBy::Arg(arg.into()))
}

/// `load-balance`: ingress-nginx's options (case-sensitive). `round_robin` is Gantry's round
/// robin, `ewma` its least-request balancer; the hashing and sticky algorithms are their own
/// annotations.
fn load_balance<R: References>(p: &mut Parser<'_, R>, affinity: bool, hash: bool) -> Option<Balancer> {
    let v = p.value("load-balance")?;
    let (balancer, outcome) = match v {
        "round_robin" | "ewma" if affinity || hash => {
            let winner = if affinity {
                "affinity: cookie"
            } else {
                "upstream-hash-by"
            };
            (
                None,
                Outcome::Ignored(format!("{winner} takes precedence, as in ingress-nginx")),
            )
        }
        "round_robin" => (Some(Balancer::RoundRobin), Outcome::Honoured),
        "ewma" => (
            Some(Balancer::LeastRequest),
            Outcome::Difference(
                "served by least-request (two endpoints at random, the one with fewer requests in flight), which also favours the faster endpoints but keeps no latency average"
                    .into(),
            ),
        ),
        "chash" | "chashsubset" => (
            None,
            Outcome::Refused(
                "consistent hashing is chosen with upstream-hash-by (ingress-nginx hashes an empty key without it); the class-wide balancer applies"
                    .into(),
            ),
        ),
        "sticky_balanced" | "sticky_persistent" => (
            None,
            Outcome::Refused(
                "sticky sessions are chosen with affinity: cookie and affinity-mode; the class-wide balancer applies"
                    .into(),
            ),
        ),
        _ => (
            None,
            Outcome::Invalid("expected round_robin or ewma; the class-wide balancer applies".into()),
        ),
    };
    p.report("load-balance", outcome);
    balancer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_variables_are_one_variable_gantry_reads() {
        let header = |h: &'static str| Some(HashBy::Header(HeaderName::from_static(h)));
        let cases: &[(&str, Option<HashBy>)] = &[
            ("$request_uri", Some(HashBy::RequestUri)),
            ("${request_uri}", Some(HashBy::RequestUri)),
            ("$Request_URI", Some(HashBy::RequestUri)),
            ("$remote_addr", Some(HashBy::RemoteAddr)),
            ("$binary_remote_addr", Some(HashBy::RemoteAddr)),
            ("$http_x_user_id", header("x-user-id")),
            ("$HTTP_X_Tenant", header("x-tenant")),
            ("$cookie_SESSION", Some(HashBy::Cookie("SESSION".into()))),
            ("$arg_user", Some(HashBy::Arg("user".into()))),
            // Combinations, text and variables Gantry does not read.
            ("$request_uri$host", None),
            ("${request_uri}-text-value", None),
            ("$host", None),
            ("$uri", None),
            ("$http_", None),
            ("$cookie_", None),
            ("request_uri", None),
            ("$", None),
            ("${request_uri", None),
            ("$http_x-user", None),
        ];
        for (value, want) in cases {
            assert_eq!(hash_variable(value), *want, "{value}");
        }
    }
}
