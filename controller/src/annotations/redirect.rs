//! `ssl-redirect`, `force-ssl-redirect`, `preserve-trailing-slash`, `permanent-redirect(-code)`,
//! `temporal-redirect(-code)`, `app-root` and `from-to-www-redirect` (ingress-nginx's `rewrite` and
//! `redirect` parsers; the alias host's route is made by translation).
//!
//! Precedence, as ingress-nginx's template and phases give it: `app-root` (a server-level
//! `return 302` for `/`), then the fixed redirect (a location-level `return`), then the HTTPS
//! redirect (Lua, at the end of the rewrite phase). Of the two fixed redirects `temporal-redirect`
//! wins (its parser returns as soon as it finds one).

use gantry_proxy::policy::{AppRoot, Redirect};
use http::{HeaderValue, StatusCode};

use super::{
    values::{is_path_with_captures, is_url_chars, parse_bool, parse_in_range},
    Outcome, Parser, References,
};

const TRAILING_SLASH: &str = "308 to https://; the path keeps a trailing slash, which ingress-nginx \
    strips unless preserve-trailing-slash is \"true\"";

pub(super) fn parse<R: References>(p: &mut Parser<'_, R>) {
    if let Some(v) = p.value("ssl-redirect") {
        match parse_bool(v) {
            Some(true) => {
                p.out.ssl_redirect = true;
                p.report("ssl-redirect", Outcome::Difference(TRAILING_SLASH.into()));
            }
            Some(false) => {
                p.out.ssl_redirect = false;
                p.report("ssl-redirect", Outcome::Honoured);
            }
            None => p.report(
                "ssl-redirect",
                Outcome::Invalid(
                    "expected \"true\" or \"false\"; using true (hosts with TLS redirect to HTTPS)".into(),
                ),
            ),
        }
    }
    if let Some(v) = p.value("force-ssl-redirect") {
        match parse_bool(v) {
            Some(force) => {
                p.out.force_ssl_redirect = force;
                let outcome = if force {
                    Outcome::Difference(TRAILING_SLASH.into())
                } else {
                    Outcome::Honoured
                };
                p.report("force-ssl-redirect", outcome);
            }
            None => p.report(
                "force-ssl-redirect",
                Outcome::Invalid("expected \"true\" or \"false\"; using false".into()),
            ),
        }
    }
    if let Some(v) = p.value("preserve-trailing-slash") {
        let outcome = match parse_bool(v) {
            Some(true) => Outcome::Honoured,
            Some(false) => {
                Outcome::Difference("Gantry keeps the trailing slash in HTTPS redirects anyway".into())
            }
            None => Outcome::Invalid(
                "expected \"true\" or \"false\"; Gantry keeps the trailing slash in HTTPS redirects anyway"
                    .into(),
            ),
        };
        p.report("preserve-trailing-slash", outcome);
    }

    fixed_redirect(p);
    app_root(p);
    if let Some(v) = p.value("from-to-www-redirect") {
        match parse_bool(v) {
            Some(on) => {
                p.out.from_to_www_redirect = on;
                let outcome = if on {
                    Outcome::Difference(WWW_PORT.into())
                } else {
                    Outcome::Honoured
                };
                p.report("from-to-www-redirect", outcome);
            }
            None => p.report(
                "from-to-www-redirect",
                Outcome::Invalid("expected \"true\" or \"false\"; using false".into()),
            ),
        }
    }
}

/// How Gantry's from/to-www redirect differs from ingress-nginx's.
pub(crate) const WWW_PORT: &str = "308 to the other name; the Location's port is the one the client \
    addressed (80 or 443 when its Host names none), where ingress-nginx writes its listener's port";

/// `temporal-redirect` (302 by default, codes 300 to 307) wins over `permanent-redirect` (301 by
/// default, codes 300 to 308); a code outside its range is the default, as in ingress-nginx (which
/// ignores it silently; Gantry reports it).
fn fixed_redirect<R: References>(p: &mut Parser<'_, R>) {
    const KINDS: [(&str, &str, i64, u16); 2] = [
        ("temporal-redirect", "temporal-redirect-code", 307, 302),
        ("permanent-redirect", "permanent-redirect-code", 308, 301),
    ];
    let mut chosen: Option<&'static str> = None;
    for (name, code_name, max, default) in KINDS {
        if let Some(winner) = chosen {
            let why = format!("{winner} takes precedence, as in ingress-nginx");
            p.report_all(&[name, code_name], || Outcome::Ignored(why.clone()));
            continue;
        }
        let Some(location) = location(p, name) else {
            p.report_all(&[code_name], || {
                Outcome::Ignored(format!("has no effect without a valid {name}"))
            });
            continue;
        };
        let mut code = default;
        if let Some(v) = p.value(code_name) {
            match parse_in_range(v, 300, max) {
                Some(n) => {
                    code = n as u16;
                    p.report(code_name, Outcome::Honoured);
                }
                None => p.report(
                    code_name,
                    Outcome::Invalid(format!("expected a number from 300 to {max}; using {default}")),
                ),
            }
        }
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::FOUND);
        p.out.policies.redirect = Some(Redirect { status, location });
        chosen = Some(name);
    }
}

/// A redirect location: an absolute `http://` or `https://` URL of the characters ingress-nginx
/// accepts (its `isValidURL` and `URLIsValidRegex`).
fn location<R: References>(p: &mut Parser<'_, R>, name: &'static str) -> Option<HeaderValue> {
    let v = p.value(name)?;
    let lower = v.to_ascii_lowercase();
    let absolute = ["http://", "https://"]
        .iter()
        .any(|s| lower.starts_with(s) && lower.len() > s.len());
    let header = HeaderValue::from_str(v)
        .ok()
        .filter(|_| absolute && is_url_chars(v));
    let Some(header) = header else {
        p.report(
            name,
            Outcome::Invalid(
                "expected an absolute http:// or https:// URL of letters, digits and -._~/:,?&=%; no redirect".into(),
            ),
        );
        return None;
    };
    if v.contains('$') {
        p.report(
            name,
            Outcome::Difference(
                "the location contains $: nginx variables are not expanded, it is sent exactly as written"
                    .into(),
            ),
        );
    } else {
        p.report(name, Outcome::Honoured);
    }
    Some(header)
}

/// `app-root`: an absolute path (ingress-nginx: `RegexPathWithCapture`, `url.ParseRequestURI`, not
/// an absolute URL). Requests for `/` get 302 to it.
fn app_root<R: References>(p: &mut Parser<'_, R>) {
    let Some(v) = p.value("app-root") else { return };
    if !v.starts_with('/') || !is_path_with_captures(v) || v.starts_with("//") || v.contains("://") {
        p.report(
            "app-root",
            Outcome::Invalid(
                "expected an absolute path such as /app1 (letters, digits, -._~/:); no redirect".into(),
            ),
        );
        return;
    }
    if v.contains('$') {
        p.report(
            "app-root",
            Outcome::Difference(
                "the path contains $: nginx variables are not expanded, it is sent as written".into(),
            ),
        );
    } else {
        p.report("app-root", Outcome::Honoured);
    }
    p.out.policies.app_root = Some(AppRoot { path: v.to_string() });
}
