//! What is sent upstream and how: `proxy-body-size`, the `proxy-*-timeout`s, `backend-protocol`,
//! and the response headers of `custom-headers`.

use std::{sync::Arc, time::Duration};

use gantry_proxy::policy::ResponseHeaders;
use http::{HeaderName, HeaderValue};

use super::{
    values::{is_basic_chars, parse_int, parse_size, split_key},
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
    backend_protocol(p);
    custom_headers(p);
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

/// `backend-protocol`: ingress-nginx's options, case-insensitive. Only HTTP is supported; the
/// others are reported, and the route is still served over HTTP (they do not fail closed).
fn backend_protocol<R: References>(p: &mut Parser<'_, R>) {
    let Some(v) = p.value("backend-protocol") else {
        return;
    };
    let outcome = match v.to_ascii_uppercase().as_str() {
        "HTTP" => Outcome::Honoured,
        "HTTPS" | "AUTO_HTTP" | "GRPC" | "GRPCS" | "FCGI" => Outcome::Refused(format!(
            "{} backends are not yet supported; the route is still served, and Gantry speaks HTTP/1.1 to its endpoints",
            v.to_ascii_uppercase()
        )),
        _ => Outcome::Invalid("expected HTTP, HTTPS, AUTO_HTTP, GRPC, GRPCS or FCGI; using HTTP".into()),
    };
    p.report("backend-protocol", outcome);
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
