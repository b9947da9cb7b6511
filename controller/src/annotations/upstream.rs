//! What is sent upstream and how: `proxy-body-size`, the `proxy-*-timeout`s, `backend-protocol`
//! and TLS to the backend (`proxy-ssl-*`), and the response headers of `custom-headers`.

use std::{sync::Arc, time::Duration};

use gantry_proxy::policy::{
    ResponseHeaders, Retry, RetryOn, UpstreamProtocol, UpstreamTls, DEFAULT_SSL_NAME, DEFAULT_VERIFY_DEPTH,
};
use http::{HeaderName, HeaderValue};

use super::{
    access::secret_entries,
    values::{is_basic_chars, parse_bool, parse_int, parse_size, split_key},
    Outcome, Parser, ReferenceKind, ReferenceProblem, References,
};

/// Headers `custom-headers` may not set: they frame the response or belong to one connection, and
/// setting them would break the response rather than add to it.
const FORBIDDEN_RESPONSE_HEADERS: [&str; 9] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "server",
];

/// Longest upstream timeout accepted: a day.
const MAX_TIMEOUT_SECS: i64 = 86_400;

pub(super) fn parse<R: References>(p: &mut Parser<'_, R>) {
    body_size(p);
    for name in [
        "proxy-connect-timeout",
        "proxy-read-timeout",
        "proxy-send-timeout",
    ] {
        let timeout = timeout(p, name);
        let t = &mut p.out.policies.timeouts;
        match name {
            "proxy-connect-timeout" => t.connect = timeout,
            "proxy-read-timeout" => t.read = timeout,
            _ => t.send = timeout,
        }
    }
    next_upstream(p);
    if let Some(v) = p.value("service-upstream") {
        match parse_bool(v) {
            Some(on) => {
                p.out.service_upstream = on;
                p.report("service-upstream", Outcome::Honoured);
            }
            None => p.report(
                "service-upstream",
                Outcome::Invalid("expected \"true\" or \"false\"; using false (the endpoints)".into()),
            ),
        }
    }
    let protocol = backend_protocol(p);
    p.out.policies.upstream.protocol = protocol;
    p.out.policies.upstream.tls = backend_tls(p, protocol);
    custom_headers(p);
}

/// What differs from ingress-nginx in `proxy-next-upstream` (also in the catalogue).
pub(super) const NEXT_UPSTREAM_DIFFERENCE: &str = "each endpoint is tried at most once per request; once a request was sent it is resent only if its body was empty or within the 64 KiB read ahead, and only for an idempotent method (RFC 9110), or with non_idempotent for a request without body: a body that reached a backend is never sent twice";

/// `proxy-next-upstream`, `-tries` and `-timeout`: when any is present the route gets a
/// [`Retry`] with ingress-nginx's defaults (`error timeout`, 3 tries, no time limit) for the
/// others and for invalid values, as ingress-nginx falls back to its ConfigMap defaults; with
/// none of them, Gantry's own default applies (a failed connect goes once to another endpoint).
///
/// `proxy-next-upstream` is nginx's list (ingress-nginx's `validUpstreamAnnotation`: `error`,
/// `timeout`, `invalid_header`, `http_500|502|503|504|403|404|429`, `non_idempotent`, `off`,
/// separated by whitespace); `off` anywhere turns retries off, as nginx's bitmask does. The
/// numbers are ingress-nginx's `GetIntAnnotation`: whole numbers, 0 meaning no limit (its e2e test
/// uses 888888 tries and a 999999 s timeout); a negative one is refused here, where nginx would
/// reject the whole configuration.
fn next_upstream<R: References>(p: &mut Parser<'_, R>) {
    const NAMES: [&str; 3] = [
        "proxy-next-upstream",
        "proxy-next-upstream-tries",
        "proxy-next-upstream-timeout",
    ];
    if !NAMES.iter().any(|n| p.is_present(n)) {
        return;
    }
    let mut retry = Retry::INGRESS_NGINX;
    if let Some(v) = p.value("proxy-next-upstream") {
        let words: Option<Vec<RetryOn>> = v.split_whitespace().map(RetryOn::from_word).collect();
        match words {
            Some(words) if !words.is_empty() => {
                let off = v.split_whitespace().any(|w| w == "off");
                retry.on = if off {
                    RetryOn::empty()
                } else {
                    words.into_iter().fold(RetryOn::empty(), |a, b| a | b)
                };
                let outcome = if off {
                    Outcome::Honoured
                } else {
                    Outcome::Difference(NEXT_UPSTREAM_DIFFERENCE.into())
                };
                p.report("proxy-next-upstream", outcome);
            }
            _ => p.report(
                "proxy-next-upstream",
                Outcome::Invalid(
                    "expected nginx's conditions separated by spaces: error, timeout, invalid_header, http_500, http_502, http_503, http_504, http_403, http_404, http_429, non_idempotent or off; \"error timeout\" is used, as in ingress-nginx".into(),
                ),
            ),
        }
    }
    if let Some(v) = p.value("proxy-next-upstream-tries") {
        match parse_int(v).filter(|n| *n >= 0) {
            Some(n) => {
                retry.tries = u32::try_from(n).unwrap_or(u32::MAX);
                p.report("proxy-next-upstream-tries", Outcome::Honoured);
            }
            None => p.report(
                "proxy-next-upstream-tries",
                Outcome::Invalid(
                    "expected a whole number of tries, 0 for no limit; 3 is used, as in ingress-nginx".into(),
                ),
            ),
        }
    }
    if let Some(v) = p.value("proxy-next-upstream-timeout") {
        match parse_int(v).filter(|n| *n >= 0) {
            Some(n) => {
                retry.timeout = (n > 0).then(|| Duration::from_secs(n.unsigned_abs()));
                p.report("proxy-next-upstream-timeout", Outcome::Honoured);
            }
            None => p.report(
                "proxy-next-upstream-timeout",
                Outcome::Invalid(
                    "expected whole seconds (no unit), 0 for no limit; no limit is used, as in ingress-nginx"
                        .into(),
                ),
            ),
        }
    }
    p.out.policies.retry = Some(retry);
}

/// `proxy-body-size`: an nginx size (`8m`, `1k`, `1000`); `0` is no limit, which overrides any
/// class-wide limit (so it is `u64::MAX`, not `None`).
fn body_size<R: References>(p: &mut Parser<'_, R>) {
    let Some(v) = p.value("proxy-body-size") else {
        return;
    };
    match parse_size(v) {
        Some(0) => {
            p.out.policies.max_body_bytes = Some(u64::MAX);
            p.report("proxy-body-size", Outcome::Honoured);
        }
        Some(n) => {
            p.out.policies.max_body_bytes = Some(n);
            p.report("proxy-body-size", Outcome::Honoured);
        }
        None => p.report(
            "proxy-body-size",
            Outcome::Invalid(
                "expected a size such as 8m, 512k or 1000 (bytes); no per-route limit is applied".into(),
            ),
        ),
    }
}

/// A timeout in whole seconds, as ingress-nginx takes it (`"30s"` is refused there too, and the
/// default applies).
fn timeout<R: References>(p: &mut Parser<'_, R>, name: &'static str) -> Option<Duration> {
    let v = p.value(name)?;
    match parse_int(v).filter(|n| (1..=MAX_TIMEOUT_SECS).contains(n)) {
        Some(n) => {
            p.report(name, Outcome::Honoured);
            Some(Duration::from_secs(n.unsigned_abs()))
        }
        None => {
            p.report(
                name,
                Outcome::Invalid(format!(
                    "expected whole seconds from 1 to {MAX_TIMEOUT_SECS} such as \"60\" (no unit, as in ingress-nginx); the class-wide timeout applies"
                )),
            );
            None
        }
    }
}

/// `backend-protocol`: ingress-nginx's options, case-insensitive (its template upper-cases them),
/// and Gantry's own `H2C`. `AUTO_HTTP` and `FCGI` are refused and the route is still served over
/// HTTP/1.1 (they do not fail closed).
fn backend_protocol<R: References>(p: &mut Parser<'_, R>) -> UpstreamProtocol {
    let Some(v) = p.value("backend-protocol") else {
        return UpstreamProtocol::Http1;
    };
    let upper = v.to_ascii_uppercase();
    let (protocol, outcome) = match upper.as_str() {
        "HTTP" => (UpstreamProtocol::Http1, Outcome::Honoured),
        "HTTPS" => (UpstreamProtocol::Https, Outcome::Honoured),
        "GRPC" => (UpstreamProtocol::H2c, Outcome::Honoured),
        "GRPCS" => (UpstreamProtocol::H2, Outcome::Honoured),
        "H2C" => (
            UpstreamProtocol::H2c,
            Outcome::Difference(
                "H2C is Gantry's own value (plain HTTP/2 with prior knowledge, as GRPC); ingress-nginx refuses it and speaks HTTP/1.1"
                    .into(),
            ),
        ),
        "AUTO_HTTP" => (
            UpstreamProtocol::Http1,
            Outcome::Refused(
                "AUTO_HTTP (the client's own scheme) is not supported; the route is still served, and Gantry speaks HTTP/1.1 to its endpoints (use HTTPS for TLS to the backend)"
                    .into(),
            ),
        ),
        "FCGI" => (
            UpstreamProtocol::Http1,
            Outcome::Refused(
                "FastCGI backends are not supported; the route is still served, and Gantry speaks HTTP/1.1 to its endpoints"
                    .into(),
            ),
        ),
        _ => (
            UpstreamProtocol::Http1,
            Outcome::Invalid("expected HTTP, HTTPS, GRPC or GRPCS (or Gantry's H2C); HTTP is used".into()),
        ),
    };
    p.report("backend-protocol", outcome);
    protocol
}

/// The `proxy-ssl-*` annotations other than the Secret.
const PROXY_SSL_SETTINGS: [&str; 6] = [
    "proxy-ssl-verify",
    "proxy-ssl-verify-depth",
    "proxy-ssl-name",
    "proxy-ssl-server-name",
    "proxy-ssl-ciphers",
    "proxy-ssl-protocols",
];

/// TLS to the backend: the `proxy-ssl-*` annotations, for the TLS protocols (`HTTPS`, `GRPCS`).
///
/// As in ingress-nginx (`internal/ingress/annotations/proxyssl/main.go`), nothing but
/// `proxy-ssl-secret` turns them on: without it they are all ignored and the backend is reached
/// with nginx's defaults (no verification, no SNI). The Secret is `namespace/name`, in the
/// Ingress's own namespace, with `ca.crt` (what the backend's chain must lead to) and/or `tls.crt`
/// and `tls.key` (a client certificate).
///
/// ingress-nginx denies the location (503) whenever the Secret is missing or broken. Gantry fails
/// closed when verification was asked for (`proxy-ssl-verify: on`), since the Ingress asks for a
/// protection that cannot be given; with verification off the Secret only carried a client
/// certificate or a CA that is not used, so it is reported and the backend is reached without it.
/// For the same reason `proxy-ssl-verify: on` without a usable `ca.crt` fails closed, where
/// ingress-nginx silently does not verify.
fn backend_tls<R: References>(p: &mut Parser<'_, R>, protocol: UpstreamProtocol) -> Option<Arc<UpstreamTls>> {
    if !protocol.is_tls() {
        let why = format!(
            "backend-protocol is not HTTPS or GRPCS: Gantry speaks clear text ({protocol}) to the backend, as ingress-nginx does, and TLS settings have no effect"
        );
        p.report_all(&["proxy-ssl-secret"], || Outcome::Ignored(why.clone()));
        p.report_all(&PROXY_SSL_SETTINGS, || Outcome::Ignored(why.clone()));
        return None;
    }
    // `^(on|off)$`; anything else is off, as in ingress-nginx.
    let verify = match p.value("proxy-ssl-verify") {
        None => false,
        Some("on") => true,
        Some("off") => false,
        Some(_) => {
            p.report(
                "proxy-ssl-verify",
                Outcome::Invalid("expected on or off; off is used, as in ingress-nginx".into()),
            );
            false
        }
    };
    let Some(secret) = p.value("proxy-ssl-secret") else {
        if verify {
            let why = "on without proxy-ssl-secret: there is no CA to verify the backend's certificate against (ingress-nginx then does not verify at all); the Ingress fails closed rather than be served unverified";
            p.report("proxy-ssl-verify", Outcome::Invalid(why.into()));
            p.fail_closed("proxy-ssl-verify", why);
        }
        p.report_all(&PROXY_SSL_SETTINGS, || {
            Outcome::Ignored("has no effect without proxy-ssl-secret, as in ingress-nginx".into())
        });
        return None;
    };
    let mut tls = UpstreamTls::new();
    let problem = match proxy_ssl_secret(p, secret, verify) {
        Ok(Some(loaded)) => {
            tls = loaded;
            None
        }
        Ok(None) => None,
        Err(why) => Some(why),
    };
    if let Some(why) = problem {
        if verify {
            p.fail_closed(
                "proxy-ssl-secret",
                &format!("{why}, and proxy-ssl-verify is on: the backend cannot be verified"),
            );
        } else if let Some(r) = p.reports.get_mut("proxy-ssl-secret") {
            // The report is the diagnostic (a warning); say what is done.
            let note = "proxy-ssl-verify is off, so the backend is reached over TLS without it (no client certificate, no verification); ingress-nginx answers 503";
            r.outcome = match std::mem::replace(&mut r.outcome, Outcome::Honoured) {
                Outcome::Refused(d) => Outcome::Refused(format!("{d}; {note}")),
                Outcome::Invalid(d) => Outcome::Invalid(format!("{d}; {note}")),
                other => other,
            };
        }
    }
    tls = tls.with_verify(verify);
    if verify {
        p.report("proxy-ssl-verify", Outcome::Honoured);
    } else {
        p.report_all(&["proxy-ssl-verify"], || Outcome::Honoured);
    }

    let mut named = false;
    if let Some(v) = p.value("proxy-ssl-name") {
        if v.contains('$') {
            p.report(
                "proxy-ssl-name",
                Outcome::Refused(format!(
                    "nginx variables are not expanded; the certificate is checked against (and SNI sends) {DEFAULT_SSL_NAME}, ingress-nginx's upstream name"
                )),
            );
        } else {
            match tls.clone().with_name(v) {
                Ok(t) => {
                    tls = t;
                    named = true;
                    p.report("proxy-ssl-name", Outcome::Honoured);
                }
                Err(_) => p.report(
                    "proxy-ssl-name",
                    Outcome::Invalid(format!(
                        "expected a DNS name or an IP address; {DEFAULT_SSL_NAME} (ingress-nginx's upstream name) is used"
                    )),
                ),
            }
        }
    }
    let secret_failed = p.reports.get("proxy-ssl-secret").is_some_and(|r| r.fails_closed);
    if verify && !named && !secret_failed {
        if let Some(r) = p.reports.get_mut("proxy-ssl-verify") {
            r.add_invalid(format!(
                "without proxy-ssl-name the backend's certificate is checked against the name {DEFAULT_SSL_NAME}, as in ingress-nginx, which no real certificate carries: requests get 502 until proxy-ssl-name is set"
            ));
        }
    }

    if let Some(v) = p.value("proxy-ssl-server-name") {
        match v {
            "on" | "off" => {
                tls = tls.with_sni(v == "on");
                p.report("proxy-ssl-server-name", Outcome::Honoured);
            }
            _ => p.report(
                "proxy-ssl-server-name",
                Outcome::Invalid("expected on or off; off is used (no SNI)".into()),
            ),
        }
    }

    if let Some(v) = p.value("proxy-ssl-verify-depth") {
        match parse_int(v) {
            // ingress-nginx: 0 (or an error) is the default, 1.
            Some(0) => p.report(
                "proxy-ssl-verify-depth",
                Outcome::Ignored(format!(
                    "0 means the default, {DEFAULT_VERIFY_DEPTH}, as in ingress-nginx"
                )),
            ),
            Some(n) if n > 0 => {
                tls = tls.with_verify_depth(u32::try_from(n).unwrap_or(u32::MAX));
                if verify {
                    p.report("proxy-ssl-verify-depth", Outcome::Honoured);
                } else {
                    p.report(
                        "proxy-ssl-verify-depth",
                        Outcome::Ignored("has no effect with proxy-ssl-verify off".into()),
                    );
                }
            }
            _ => p.report(
                "proxy-ssl-verify-depth",
                Outcome::Invalid(format!(
                    "expected a positive whole number; {DEFAULT_VERIFY_DEPTH} is used"
                )),
            ),
        }
    }

    if let Some(v) = p.value("proxy-ssl-ciphers") {
        let outcome = if v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+:_-! ".contains(&b))
        {
            Outcome::Ignored(
                "rustls offers only modern AEAD cipher suites to backends; the list is not applied".into(),
            )
        } else {
            Outcome::Invalid(
                "expected an OpenSSL cipher list such as HIGH:!aNULL; not applied either way".into(),
            )
        };
        p.report("proxy-ssl-ciphers", outcome);
    }
    if let Some(v) = p.value("proxy-ssl-protocols") {
        let valid = v.split(' ').all(|w| matches!(w, "" | "TLSv1.2" | "TLSv1.3"));
        let outcome = if valid {
            Outcome::Ignored(
                "Gantry offers TLS 1.2 and 1.3 to backends (ingress-nginx's default is TLS 1.2 only)".into(),
            )
        } else {
            Outcome::Invalid("expected TLSv1.2 and/or TLSv1.3; Gantry offers both".into())
        };
        p.report("proxy-ssl-protocols", outcome);
    }
    Some(Arc::new(tls))
}

/// `proxy-ssl-secret`: `namespace/name` (ingress-nginx's `ParseNameNS` takes no other form), in the
/// Ingress's namespace. `Ok(Some)`: TLS settings with its CA and client certificate; `Err`: why it
/// cannot be used (already reported).
fn proxy_ssl_secret<R: References>(
    p: &mut Parser<'_, R>,
    value: &str,
    verify: bool,
) -> Result<Option<UpstreamTls>, String> {
    const NAME: &str = "proxy-ssl-secret";
    let own = p.namespace();
    let parsed = split_key(value)
        .filter(|_| is_basic_chars(value) && value.matches('/').count() == 1)
        .and_then(|(ns, name)| Some((ns?, name)));
    let Some((ns, name)) = parsed else {
        let why = "expected namespace/name (ingress-nginx takes no other form)";
        p.report(NAME, Outcome::Invalid(why.into()));
        return Err(format!("{NAME}: {why}"));
    };
    if ns != own {
        let why = format!(
            "the Secret is in namespace {ns}, not the Ingress's ({own}): cross-namespace Secrets are not allowed (ingress-nginx's default)"
        );
        p.report(NAME, Outcome::Refused(why.clone()));
        return Err(format!("{NAME}: {why}"));
    }
    let object = format!("{ns}/{name}");
    let Some(secret) = p.refs.secret(ns, name) else {
        let why = format!("Secret {object} not found");
        p.report_reference(
            NAME,
            why.clone(),
            ReferenceProblem {
                kind: ReferenceKind::Secret,
                object,
                missing: true,
            },
        );
        return Err(why);
    };
    let entries = secret_entries(secret);
    let ca = entries.get("ca.crt").filter(|v| !v.is_empty());
    let pair = entries
        .get("tls.crt")
        .zip(entries.get("tls.key"))
        .filter(|(c, k)| !c.is_empty() && !k.is_empty());
    let mut tls = UpstreamTls::new();
    let loaded = (|| {
        if ca.is_none() && pair.is_none() {
            return Err("has neither ca.crt nor tls.crt and tls.key".to_string());
        }
        if let Some(ca) = ca {
            tls = tls.clone().with_ca_pem(ca).map_err(|e| format!("ca.crt: {e}"))?;
        } else if verify {
            return Err("has no ca.crt to verify the backend against".to_string());
        }
        if let Some((cert, key)) = pair {
            tls = tls
                .clone()
                .with_client_cert_pem(cert, key)
                .map_err(|e| format!("tls.crt and tls.key: {e}"))?;
        }
        Ok(())
    })();
    match loaded {
        Ok(()) => {
            p.report(NAME, Outcome::Honoured);
            Ok(Some(tls))
        }
        Err(why) => {
            let why = format!("Secret {object} {why}");
            p.report_reference(
                NAME,
                why.clone(),
                ReferenceProblem {
                    kind: ReferenceKind::Secret,
                    object,
                    missing: false,
                },
            );
            Err(why)
        }
    }
}

/// `custom-headers`: a ConfigMap (`namespace/name`, or `name`) whose data are response headers.
///
/// ingress-nginx's docs say only ConfigMaps of the Ingress's namespace are allowed; its code does
/// not check. Gantry follows the docs (the safer reading). As in its e2e tests, a ConfigMap that
/// is missing or has an invalid header makes the location answer 503.
fn custom_headers<R: References>(p: &mut Parser<'_, R>) {
    let Some(v) = p.value("custom-headers") else {
        return;
    };
    let own = p.namespace();
    let Some((ns, name)) = split_key(v).filter(|_| is_basic_chars(v)) else {
        p.report(
            "custom-headers",
            Outcome::Invalid("expected a ConfigMap namespace/name".into()),
        );
        return;
    };
    let ns = ns.unwrap_or(own);
    if ns != own {
        p.report(
            "custom-headers",
            Outcome::Refused(format!(
                "the ConfigMap is in namespace {ns}, not the Ingress's ({own}); only ConfigMaps of the Ingress's namespace are allowed"
            )),
        );
        return;
    }
    let object = format!("{ns}/{name}");
    let Some(config_map) = p.refs.config_map(ns, name) else {
        p.report_reference(
            "custom-headers",
            format!("ConfigMap {object} not found"),
            ReferenceProblem {
                kind: ReferenceKind::ConfigMap,
                object,
                missing: true,
            },
        );
        return;
    };
    let mut headers = Vec::new();
    let mut problems = Vec::new();
    for (key, value) in config_map.data.iter().flatten() {
        match response_header(key, value) {
            Ok(h) => headers.push(h),
            Err(why) => problems.push(why),
        }
    }
    if !problems.is_empty() {
        p.report_reference(
            "custom-headers",
            format!("ConfigMap {object}: {}", problems.join("; ")),
            ReferenceProblem {
                kind: ReferenceKind::ConfigMap,
                object,
                missing: false,
            },
        );
        return;
    }
    p.report(
        "custom-headers",
        Outcome::Difference(
            "each header is added only when the backend's response does not carry it already".into(),
        ),
    );
    if !headers.is_empty() {
        p.out.policies.response_headers = Some(Arc::new(ResponseHeaders { headers }));
    }
}

/// One header of the ConfigMap: ingress-nginx's name (`^[a-zA-Z\d\-_]+$`) and value checks (visible
/// ASCII and spaces), and no framing or hop-by-hop header.
fn response_header(key: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let shown = super::values::shorten(key, 60);
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "{shown:?} is not a header name (letters, digits, - and _)"
        ));
    }
    let name =
        HeaderName::from_bytes(key.as_bytes()).map_err(|_| format!("{shown:?} is not a header name"))?;
    if FORBIDDEN_RESPONSE_HEADERS.contains(&name.as_str()) {
        return Err(format!(
            "{shown:?} may not be set: it frames the response or belongs to the connection"
        ));
    }
    if value.is_empty() || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(format!("the value of {shown:?} is empty or not visible ASCII"));
    }
    let value =
        HeaderValue::from_str(value).map_err(|_| format!("the value of {shown:?} is not a header value"))?;
    Ok((name, value))
}
