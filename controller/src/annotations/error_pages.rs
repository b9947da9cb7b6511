//! Error pages: `default-backend`, `custom-http-errors` and `disable-proxy-intercept-errors`
//! (ingress-nginx's `internal/ingress/annotations/{defaultbackend,customhttperrors,
//! disableproxyintercepterrors}`).
//!
//! `default-backend` names a Service of the Ingress's namespace (a DNS-1035 label, ingress-nginx's
//! `ValidateServiceName`); translation resolves it on the Service's first port, as ingress-nginx
//! does, and uses it only when it has ready endpoints.

use std::sync::Arc;

use gantry_proxy::policy::CustomErrors;

use super::{values::parse_bool, Outcome, Parser, References};

/// What differs from ingress-nginx in `custom-http-errors` (also in the catalogue).
pub(super) const CUSTOM_ERRORS_DIFFERENCE: &str = "the error backend's response is returned with its own status, as in ingress-nginx (it should answer with the X-Code it is sent); it always gets GET /, where nginx keeps the client's method; no error backend (no default-backend with endpoints and no spec.defaultBackend) or a failed one returns the original response";

pub(super) fn parse<R: References>(p: &mut Parser<'_, R>) {
    default_backend(p);
    let intercept_upstream = !disable_intercept(p);
    custom_errors(p, intercept_upstream);
}

fn default_backend<R: References>(p: &mut Parser<'_, R>) {
    let Some(v) = p.value("default-backend") else {
        return;
    };
    if is_dns1035_label(v) {
        p.out.default_backend = Some(v.to_string());
        p.report("default-backend", Outcome::Honoured);
    } else {
        p.report(
            "default-backend",
            Outcome::Invalid(
                "expected the name of a Service in the Ingress's namespace (a DNS-1035 label); no default backend is used".into(),
            ),
        );
    }
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
fn is_dns1035_label(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// `disable-proxy-intercept-errors`: a Go boolean (default false).
fn disable_intercept<R: References>(p: &mut Parser<'_, R>) -> bool {
    let Some(v) = p.value("disable-proxy-intercept-errors") else {
        return false;
    };
    let Some(on) = parse_bool(v) else {
        p.report(
            "disable-proxy-intercept-errors",
            Outcome::Invalid("expected true or false; false is used".into()),
        );
        return false;
    };
    if !p.is_present("custom-http-errors") {
        p.report(
            "disable-proxy-intercept-errors",
            Outcome::Ignored("has no effect without custom-http-errors".into()),
        );
    } else {
        p.report("disable-proxy-intercept-errors", Outcome::Honoured);
    }
    on
}

/// `custom-http-errors`: codes from 400 to 599, comma-separated (spaces allowed, as
/// ingress-nginx removes them before validating).
fn custom_errors<R: References>(p: &mut Parser<'_, R>, intercept_upstream: bool) {
    let Some(v) = p.value("custom-http-errors") else {
        return;
    };
    let mut codes = Vec::new();
    for token in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let code = (token.len() == 3 && token.bytes().all(|b| b.is_ascii_digit()))
            .then(|| token.parse::<u16>().ok())
            .flatten()
            .filter(|c| (400..=599).contains(c));
        match code {
            Some(code) => codes.push(code),
            None => {
                p.report(
                    "custom-http-errors",
                    Outcome::Invalid(format!(
                        "{token:?} is not a status code from 400 to 599; expected a list such as \"404,503\"; no custom error pages"
                    )),
                );
                return;
            }
        }
    }
    match CustomErrors::new(codes, intercept_upstream) {
        Some(errors) => {
            p.out.policies.custom_errors = Some(Arc::new(errors));
            p.report(
                "custom-http-errors",
                Outcome::Difference(CUSTOM_ERRORS_DIFFERENCE.into()),
            );
        }
        None => p.report(
            "custom-http-errors",
            Outcome::Invalid("no status code listed; expected a list such as \"404,503\"".into()),
        ),
    }
}
