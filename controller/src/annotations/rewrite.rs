//! `rewrite-target`, `use-regex`, `x-forwarded-prefix`, `upstream-vhost` and `server-alias`.
//!
//! `rewrite-target` is only validated here (ingress-nginx's character set); it is compiled against
//! each path by translation, where a target that does not fit a path makes that path answer 503.

use gantry_proxy::HostMatch;
use http::HeaderValue;

use super::{
    values::{is_path_with_captures, parse_bool, shorten},
    Outcome, Parser, References,
};
use crate::translate::hosts::{host_spelling, parse_host};

pub(super) fn parse<R: References>(p: &mut Parser<'_, R>) {
    if let Some(v) = p.value("use-regex") {
        match parse_bool(v) {
            Some(on) => {
                p.out.use_regex = on;
                let outcome = if on {
                    Outcome::Difference(
                        "Exact paths stay exact and are tried before the regex paths (ingress-nginx makes them regexes too)"
                            .into(),
                    )
                } else {
                    Outcome::Honoured
                };
                p.report("use-regex", outcome);
            }
            None => p.report(
                "use-regex",
                Outcome::Invalid("expected \"true\" or \"false\"; using false".into()),
            ),
        }
    }

    if let Some(v) = p.value("rewrite-target") {
        // ingress-nginx's `RegexPathWithCapture`. A value it refuses was ignored there (requests went
        // upstream unrewritten); Gantry refuses to send them to a path their author did not mean.
        if is_path_with_captures(v) {
            p.out.rewrite_target = Some(v.to_string());
            p.report("rewrite-target", Outcome::Honoured);
        } else {
            let why =
                "expected a path of letters, digits, -._~/: and $1 to $9; the Ingress's paths answer 503";
            p.report("rewrite-target", Outcome::Invalid(why.into()));
            p.fail_closed("rewrite-target", why);
        }
    }

    if let Some(v) = p.value("x-forwarded-prefix") {
        match HeaderValue::from_str(v) {
            Ok(_) if v.contains('$') => p.report(
                "x-forwarded-prefix",
                Outcome::Refused(
                    "capture groups ($1) and nginx variables are not substituted; the header is not sent"
                        .into(),
                ),
            ),
            Ok(h) if is_path_with_captures(v) => {
                p.out.policies.upstream.forwarded_prefix = Some(h);
                p.report("x-forwarded-prefix", Outcome::Honoured);
            }
            _ => p.report(
                "x-forwarded-prefix",
                Outcome::Invalid(
                    "expected a path of letters, digits and -._~/:; the header is not sent".into(),
                ),
            ),
        }
    }

    if let Some(v) = p.value("upstream-vhost") {
        if v.contains('$') {
            p.report(
                "upstream-vhost",
                Outcome::Refused("nginx variables are not expanded; the client's Host is sent".into()),
            );
        } else if let Some(h) = host_header(v) {
            p.out.policies.upstream.host = Some(h);
            p.report("upstream-vhost", Outcome::Honoured);
        } else {
            p.report(
                "upstream-vhost",
                Outcome::Invalid(
                    "expected a host name, optionally with :port; the client's Host is sent".into(),
                ),
            );
        }
    }

    server_alias(p);
}

/// A `Host` value: a name or address of `[A-Za-z0-9.-_]` (IPv6 in brackets), with an optional port.
fn host_header(v: &str) -> Option<HeaderValue> {
    let ok = v.len() <= 261
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b))
        && !v.starts_with(':');
    ok.then(|| HeaderValue::from_str(v).ok()).flatten()
}

/// `server-alias`: comma-separated host names (ingress-nginx: trimmed, empty items skipped,
/// deduplicated). nginx also takes regexes (`~^www\d+`) and `example.*`; Gantry takes DNS names
/// and `*.` wildcards, as Ingress hosts are written.
fn server_alias<R: References>(p: &mut Parser<'_, R>) {
    let Some(v) = p.value("server-alias") else { return };
    let mut aliases: Vec<String> = Vec::new();
    let mut bad: Vec<String> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match parse_host(Some(item)) {
            Ok(host @ (HostMatch::Exact(_) | HostMatch::Wildcard(_) | HostMatch::WildcardAnyDepth(_))) => {
                if let Some(spelling) = host_spelling(&host) {
                    if !aliases.contains(&spelling) {
                        aliases.push(spelling);
                    }
                }
            }
            Ok(HostMatch::Any) => {}
            Err(why) => bad.push(format!("{:?} {why}", shorten(item, 60))),
        }
    }
    aliases.sort();
    if bad.is_empty() {
        p.report("server-alias", Outcome::Honoured);
    } else {
        p.report(
            "server-alias",
            Outcome::Invalid(format!(
                "{}; skipped (regex aliases are not supported){}",
                bad.join(", "),
                if aliases.is_empty() {
                    ""
                } else {
                    "; the other aliases apply"
                }
            )),
        );
    }
    p.out.server_alias = aliases;
}
