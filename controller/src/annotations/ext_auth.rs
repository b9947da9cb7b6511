//! External authentication: `auth-url` and its family (`auth-method`, `auth-signin`,
//! `auth-signin-redirect-param`, `auth-response-headers`, `auth-proxy-set-headers`,
//! `auth-request-redirect`, `auth-cache-key`, `auth-cache-duration`, `auth-keepalive*`,
//! `auth-always-set-cookie`), read as ingress-nginx's `annotations/authreq/main.go` reads them
//! into the data plane's [`ExternalAuth`].
//!
//! Every one of them is a security annotation: an invalid value makes the Ingress fail closed
//! (503), where ingress-nginx denies the location for some (`auth-url`, `auth-method`,
//! `auth-response-headers`, `auth-cache-duration`, `auth-proxy-set-headers`) and, for others,
//! logs a warning and goes on without the value (`auth-signin`: then 401 instead of the
//! redirect) or even without authentication (`auth-request-redirect`, `auth-always-set-cookie`:
//! its parser returns an error that is not a denial, and the location is served open). Gantry
//! fails closed for all of them: a broken authentication is never served open or half-applied.
//!
//! Where ingress-nginx's docs and e2e tests disagree, the tests win:
//!
//! - `auth-keepalive` below 0: the docs say nothing; the e2e test ("should not create additional
//!   upstream block when auth-keepalive is negative") expects the Ingress served with keep-alive
//!   off, so it is a difference, not an invalid value. Likewise `auth-keepalive-requests` and
//!   `auth-keepalive-timeout` of 0 or less turn keep-alive off (the parser's rule).
//! - `auth-always-set-cookie`: the docs say the cookie is set only for 2xx/3xx responses by
//!   default; the e2e tests check exactly that the cookie is on a 503 only with it ("user with
//!   annotated ingress retains cookie if upstream returns error status code").
//! - `auth-signin`: the docs call it "the location of the error page"; the e2e tests want a 302
//!   to it with `rd=<scheme>://<host><escaped request URI>` (see `policy::ext_auth`).

use std::sync::Arc;

use gantry_proxy::policy::{
    ext_auth::{AuthCache, Template},
    AuthUrl, ExternalAuth, Keepalive, Signin,
};
use http::{HeaderName, Method};

use super::{
    catalog,
    values::{is_basic_chars, parse_bool, parse_int, split_key},
    Outcome, Parser, ReferenceKind, ReferenceProblem, References,
};

/// The annotations of the family this module reads (`auth-snippet` is refused by the
/// catalogue; `enable-global-auth` is about the global auth Gantry does not have).
const FAMILY: [&str; 13] = [
    "auth-method",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-response-headers",
    "auth-proxy-set-headers",
    "auth-request-redirect",
    "auth-cache-key",
    "auth-cache-duration",
    "auth-keepalive",
    "auth-keepalive-share-vars",
    "auth-keepalive-requests",
    "auth-keepalive-timeout",
    "auth-always-set-cookie",
];

/// Request headers that frame the request or belong to one connection: an auth service may not
/// set them on the request sent upstream, nor a ConfigMap on the subrequest.
const FRAMING: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "http2-settings",
];

pub(super) fn parse<R: References>(p: &mut Parser<'_, R>) {
    let Some(url_text) = p.value("auth-url") else {
        p.report_all(&FAMILY, || {
            Outcome::Ignored("has no effect without auth-url, as in ingress-nginx".into())
        });
        return;
    };
    // Each annotation is read (and reported) whatever the others are, so that every problem is
    // listed at once and the ConfigMap is asked for in any case (see `references`).
    let url = auth_url(p, url_text);
    let method = method(p);
    let signin = signin(p);
    let response_headers = response_headers(p);
    let proxy_set_headers = proxy_set_headers(p);
    let request_redirect = request_redirect(p);
    let cache = cache(p);
    let keepalive = keepalive(p, url.as_ref());
    let always_set_cookie = flag(p, "auth-always-set-cookie");
    let _share_vars = flag(p, "auth-keepalive-share-vars");
    let (
        Some(url),
        Ok(method),
        Ok(signin),
        Ok(response_headers),
        Ok(proxy_set_headers),
        Ok(request_redirect),
        Ok(cache),
        Ok(keepalive),
        Ok(always_set_cookie),
    ) = (
        url,
        method,
        signin,
        response_headers,
        proxy_set_headers,
        request_redirect,
        cache,
        keepalive,
        always_set_cookie,
    )
    else {
        // Reported as invalid: `Parser::finish` makes the Ingress fail closed.
        return;
    };
    p.out.policies.external_auth = Some(Arc::new(ExternalAuth {
        url,
        method,
        signin,
        response_headers,
        request_redirect,
        proxy_set_headers,
        cache,
        keepalive,
        always_set_cookie,
    }));
}

/// Honoured, or honoured with the catalogue's difference.
fn honoured(name: &str) -> Outcome {
    match catalog::lookup(name).map(|e| e.support) {
        Some(catalog::Support::HonouredWithDifference(why)) => Outcome::Difference(why.into()),
        _ => Outcome::Honoured,
    }
}

/// ingress-nginx's `URLWithNginxVariableRegex` (`^[-._~a-zA-Z0-9/:, ?&=$]*$`), less the space
/// and comma, which no URL holds.
fn is_url_with_variables(v: &str) -> bool {
    v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/:?&=$%".contains(&b))
}

/// `auth-url`: a URL (`could not parse auth-url annotation` in ingress-nginx denies the
/// location), its variables parsed into known ones.
fn auth_url<R: References>(p: &mut Parser<'_, R>, v: &str) -> Option<AuthUrl> {
    if !is_url_with_variables(v) {
        p.report(
            "auth-url",
            Outcome::Invalid("expected an http:// or https:// URL of letters, digits and -._~/:?&=$%".into()),
        );
        return None;
    }
    match AuthUrl::parse(v) {
        Ok(url) => {
            p.report("auth-url", honoured("auth-url"));
            Some(url)
        }
        Err(e) => {
            p.report(
                "auth-url",
                Outcome::Invalid(format!("could not parse auth-url: {e}")),
            );
            None
        }
    }
}

/// `auth-method`: ingress-nginx's `^(GET|HEAD|POST|PUT|PATCH|DELETE|CONNECT|OPTIONS|TRACE)$`.
fn method<R: References>(p: &mut Parser<'_, R>) -> Result<Option<Method>, ()> {
    let Some(v) = p.value("auth-method") else {
        return Ok(None);
    };
    const METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
    ];
    match METHODS
        .contains(&v)
        .then(|| Method::from_bytes(v.as_bytes()).ok())
        .flatten()
    {
        Some(m) => {
            p.report("auth-method", Outcome::Honoured);
            Ok(Some(m))
        }
        None => {
            p.report(
                "auth-method",
                Outcome::Invalid(format!("expected one of {} (upper case)", METHODS.join(", "))),
            );
            Err(())
        }
    }
}

/// `auth-signin` with `auth-signin-redirect-param` (default `rd`).
fn signin<R: References>(p: &mut Parser<'_, R>) -> Result<Option<Signin>, ()> {
    let param = match p.value("auth-signin-redirect-param") {
        None => Ok(""),
        Some(v)
            if v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) =>
        {
            Ok(v)
        }
        Some(_) => Err(()),
    };
    let Some(url) = p.value("auth-signin") else {
        p.report_all(&["auth-signin-redirect-param"], || {
            Outcome::Ignored("has no effect without auth-signin, as in ingress-nginx".into())
        });
        return Ok(None);
    };
    let Ok(param) = param else {
        p.report(
            "auth-signin-redirect-param",
            Outcome::Invalid("expected a query parameter name of letters, digits and -._~".into()),
        );
        p.report(
            "auth-signin",
            Outcome::Ignored("auth-signin-redirect-param is invalid".into()),
        );
        return Err(());
    };
    let parsed = if is_url_with_variables(url) {
        Signin::new(url, param).map_err(|e| e.to_string())
    } else {
        Err("expected a URL of letters, digits and -._~/:?&=$%".into())
    };
    match parsed {
        Ok(s) => {
            p.report("auth-signin", honoured("auth-signin"));
            if !param.is_empty() {
                p.report(
                    "auth-signin-redirect-param",
                    honoured("auth-signin-redirect-param"),
                );
            }
            Ok(Some(s))
        }
        Err(why) => {
            p.report(
                "auth-signin",
                Outcome::Invalid(format!(
                    "{why}; ingress-nginx would answer 401 without the redirect, Gantry fails closed"
                )),
            );
            p.report_all(&["auth-signin-redirect-param"], || {
                Outcome::Ignored("auth-signin is invalid".into())
            });
            Err(())
        }
    }
}

/// ingress-nginx's `ValidHeader`: `^[a-zA-Z\d\-_]+$`.
fn valid_header(name: &str) -> Option<HeaderName> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    HeaderName::from_bytes(name.as_bytes()).ok()
}

/// `auth-response-headers`: comma-separated header names (`HeadersVariable`, then each
/// `ValidHeader`; an invalid one denies the location in ingress-nginx).
fn response_headers<R: References>(p: &mut Parser<'_, R>) -> Result<Vec<HeaderName>, ()> {
    let Some(v) = p.value("auth-response-headers") else {
        return Ok(Vec::new());
    };
    let mut names: Vec<HeaderName> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some(name) = valid_header(item) else {
            p.report(
                "auth-response-headers",
                Outcome::Invalid(format!(
                    "{:?} is not a header name (letters, digits, - and _)",
                    super::values::shorten(item, 60)
                )),
            );
            return Err(());
        };
        if FRAMING.contains(&name.as_str()) {
            p.report(
                "auth-response-headers",
                Outcome::Invalid(format!(
                    "{item} frames the request or belongs to the connection: an auth service may not set it"
                )),
            );
            return Err(());
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    p.report("auth-response-headers", honoured("auth-response-headers"));
    Ok(names)
}

/// `auth-proxy-set-headers`: a ConfigMap (`name` or `namespace/name`, only the Ingress's own
/// namespace: ingress-nginx's default, allow-cross-namespace-resources off) whose data are extra
/// headers of the subrequest. A missing ConfigMap or an invalid name denies the location in
/// ingress-nginx; values are nginx strings, so their variables are parsed like the URL's.
fn proxy_set_headers<R: References>(p: &mut Parser<'_, R>) -> Result<Vec<(HeaderName, Template)>, ()> {
    const NAME: &str = "auth-proxy-set-headers";
    let Some(v) = p.value(NAME) else {
        return Ok(Vec::new());
    };
    let own = p.namespace();
    let Some((ns, name)) = split_key(v).filter(|_| is_basic_chars(v)) else {
        p.report(
            NAME,
            Outcome::Invalid("expected a ConfigMap name or namespace/name".into()),
        );
        return Err(());
    };
    let ns = ns.unwrap_or(own);
    if ns != own {
        p.report(
            NAME,
            Outcome::Refused(format!(
                "the ConfigMap is in namespace {ns}, not the Ingress's ({own}): cross-namespace references are not allowed (ingress-nginx's default)"
            )),
        );
        return Err(());
    }
    let object = format!("{ns}/{name}");
    let Some(config_map) = p.refs.config_map(ns, name) else {
        p.report_reference(
            NAME,
            format!("ConfigMap {object} not found"),
            ReferenceProblem {
                kind: ReferenceKind::ConfigMap,
                object,
                missing: true,
            },
        );
        return Err(());
    };
    let mut headers = Vec::new();
    let mut problems = Vec::new();
    for (key, value) in config_map.data.iter().flatten() {
        let shown = super::values::shorten(key, 60);
        let Some(header) = valid_header(key) else {
            problems.push(format!(
                "{shown:?} is not a header name (letters, digits, - and _)"
            ));
            continue;
        };
        if FRAMING.contains(&header.as_str()) {
            problems.push(format!(
                "{shown:?} frames the request or belongs to the connection"
            ));
            continue;
        }
        if !value.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) {
            problems.push(format!("the value of {shown:?} is not visible ASCII"));
            continue;
        }
        match Template::parse(value) {
            Ok(t) => headers.push((header, t)),
            Err(e) => problems.push(format!("the value of {shown:?}: {e}")),
        }
    }
    if !problems.is_empty() {
        p.report_reference(
            NAME,
            format!("ConfigMap {object}: {}", problems.join("; ")),
            ReferenceProblem {
                kind: ReferenceKind::ConfigMap,
                object,
                missing: false,
            },
        );
        return Err(());
    }
    p.report(NAME, honoured(NAME));
    Ok(headers)
}

/// `auth-request-redirect`: the `X-Auth-Request-Redirect` value (`URLIsValidRegex`).
fn request_redirect<R: References>(p: &mut Parser<'_, R>) -> Result<Option<Template>, ()> {
    let Some(v) = p.value("auth-request-redirect") else {
        return Ok(None);
    };
    let parsed = if super::values::is_url_chars(v) {
        Template::parse(v).map_err(|e| e.to_string())
    } else {
        Err("expected a URL of letters, digits and -._~/:,?&=".into())
    };
    match parsed {
        Ok(t) => {
            p.report("auth-request-redirect", Outcome::Honoured);
            Ok(Some(t))
        }
        Err(why) => {
            p.report("auth-request-redirect", Outcome::Invalid(why));
            Err(())
        }
    }
}

/// `auth-cache-key` (`NGINXVariable`: `^[A-Za-z0-9\-\_\$\{\}]*$`) and `auth-cache-duration`
/// (checked whether or not there is a key, as ingress-nginx does; it only applies with one).
fn cache<R: References>(p: &mut Parser<'_, R>) -> Result<Option<AuthCache>, ()> {
    let rules = match p.value("auth-cache-duration") {
        None => AuthCache::parse_rules("").map_err(|_| ()),
        Some(v) => {
            let ok_chars = v.bytes().all(|b| b.is_ascii_alphanumeric() || b" ,".contains(&b));
            let rules = if ok_chars {
                AuthCache::parse_rules(v)
            } else {
                Err("expected status codes and a time, like 200 202 10m, 401 5m".into())
            };
            match rules {
                Ok(r) => Ok(r),
                Err(why) => {
                    p.report(
                        "auth-cache-duration",
                        Outcome::Invalid(format!("invalid cache duration: {why}")),
                    );
                    Err(())
                }
            }
        }
    };
    let Some(key) = p.value("auth-cache-key") else {
        p.report_all(&["auth-cache-duration"], || {
            Outcome::Ignored("has no effect without auth-cache-key, as in ingress-nginx".into())
        });
        return rules.map(|_| None);
    };
    let template = if key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_${}".contains(&b))
    {
        Template::parse(key).map_err(|e| e.to_string())
    } else {
        Err("expected letters, digits, -, _ and nginx variables ($name or ${name})".into())
    };
    let key = match template {
        Ok(t) => {
            p.report("auth-cache-key", honoured("auth-cache-key"));
            t
        }
        Err(why) => {
            p.report(
                "auth-cache-key",
                Outcome::Invalid(format!(
                    "{why}; ingress-nginx would not cache, Gantry fails closed"
                )),
            );
            return Err(());
        }
    };
    let rules = rules?;
    p.report_all(&["auth-cache-duration"], || honoured("auth-cache-duration"));
    Ok(Some(AuthCache { key, rules }))
}

/// `auth-keepalive`, `auth-keepalive-requests` and `auth-keepalive-timeout`: integers
/// (`ValidateInt`), with ingress-nginx's fallbacks for values out of range (keep-alive off).
fn keepalive<R: References>(p: &mut Parser<'_, R>, url: Option<&AuthUrl>) -> Result<Keepalive, ()> {
    let mut k = Keepalive::default();
    let mut bad = false;
    let mut int = |p: &mut Parser<'_, R>, name: &'static str| -> Option<i64> {
        let v = p.value(name)?;
        let n = parse_int(v);
        if n.is_none() {
            p.report(name, Outcome::Invalid("expected a whole number".into()));
            bad = true;
        }
        n
    };
    let connections = int(p, "auth-keepalive");
    let requests = int(p, "auth-keepalive-requests");
    let timeout = int(p, "auth-keepalive-timeout");
    if bad {
        return Err(());
    }
    let off = |p: &mut Parser<'_, R>, name: &'static str, why: &str| {
        p.report(
            name,
            Outcome::Difference(format!(
                "{why}: no idle connection to the auth service is kept, as ingress-nginx's auth-keepalive 0"
            )),
        );
    };
    match connections {
        Some(n) if n < 0 => {
            off(p, "auth-keepalive", "negative");
            k.max_idle = 0;
        }
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX).min(MAX_KEEPALIVE);
            k.max_idle = n;
            let with_variables = url.is_some_and(|u| u.authority.has_variables());
            if with_variables && n > 0 {
                p.report(
                    "auth-keepalive",
                    Outcome::Difference(
                        "connections are pooled per auth host, also when the URL's host has variables (ingress-nginx keeps none then)"
                            .into(),
                    ),
                );
            } else {
                p.report("auth-keepalive", honoured("auth-keepalive"));
            }
        }
        None => {}
    }
    match requests {
        Some(n) if n <= 0 => {
            off(p, "auth-keepalive-requests", "0 or less");
            k.max_idle = 0;
        }
        Some(_) => p.report("auth-keepalive-requests", honoured("auth-keepalive-requests")),
        None => {}
    }
    match timeout {
        Some(n) if n <= 0 => {
            off(p, "auth-keepalive-timeout", "0 or less");
            k.max_idle = 0;
        }
        Some(n) => {
            k.idle_timeout = std::time::Duration::from_secs(n.unsigned_abs().min(MAX_IDLE_SECS));
            p.report("auth-keepalive-timeout", Outcome::Honoured);
        }
        None => {}
    }
    Ok(k)
}

/// The most idle connections kept per auth host (nginx's `keepalive` has no limit; a pool of
/// this size is far beyond what one auth service needs).
const MAX_KEEPALIVE: usize = 1024;
/// The longest idle time (a day).
const MAX_IDLE_SECS: u64 = 86_400;

/// A boolean annotation (Go's `ParseBool`).
fn flag<R: References>(p: &mut Parser<'_, R>, name: &'static str) -> Result<bool, ()> {
    let Some(v) = p.value(name) else {
        return Ok(false);
    };
    match parse_bool(v) {
        Some(b) => {
            p.report(name, honoured(name));
            Ok(b)
        }
        None => {
            p.report(name, Outcome::Invalid("expected true or false".into()));
            Err(())
        }
    }
}
