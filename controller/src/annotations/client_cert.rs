//! Client certificate authentication: `auth-tls-secret`, `auth-tls-verify-client`,
//! `auth-tls-verify-depth`, `auth-tls-error-page`, `auth-tls-pass-certificate-to-upstream` and
//! `auth-tls-match-cn` (ingress-nginx's `internal/ingress/annotations/authtls/main.go`).
//!
//! The result is the Ingress's [`ClientCertAuth`]; translation applies it per host (the oldest
//! Ingress of a host with `auth-tls-secret` decides for the whole host, as ingress-nginx merges its
//! servers), and the data plane requests the certificate in the TLS handshake of that host's names.
//!
//! These are security annotations: any problem makes the Ingress fail closed (`Parser::finish`).
//! Where ingress-nginx quietly falls back to a default (an invalid `auth-tls-verify-client` is
//! `on`, an invalid `auth-tls-verify-depth` is 1) or drops the protection (a Secret without
//! `ca.crt` serves the host without client authentication), Gantry refuses and says why: the
//! value is not what its author wrote, and the host is not served on a guess.

use std::sync::{Arc, OnceLock};

use gantry_proxy::{
    client_auth::{ClientCa, DEFAULT_CLIENT_VERIFY_DEPTH},
    policy::{ClientCertAuth, MatchDn, VerifyClient},
};
use http::HeaderValue;

use super::{
    access::secret_entries,
    values::{is_basic_chars, parse_bool, parse_int},
    Outcome, Parser, ReferenceKind, ReferenceProblem, References,
};

const SECRET: &str = "auth-tls-secret";
const VERIFY_CLIENT: &str = "auth-tls-verify-client";
const VERIFY_DEPTH: &str = "auth-tls-verify-depth";
const ERROR_PAGE: &str = "auth-tls-error-page";
const PASS_CERTIFICATE: &str = "auth-tls-pass-certificate-to-upstream";
const MATCH_CN: &str = "auth-tls-match-cn";

/// The keys of an `auth-tls-secret` Secret.
const CA_KEY: &str = "ca.crt";
const CRL_KEY: &str = "ca.crl";

/// ingress-nginx's `redirectRegex` for `auth-tls-error-page`.
fn error_page_regex() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"^(@[A-Za-z0-9_-]+|((https?://)?[A-Za-z0-9\-.]+(:\d+)?)?(/[A-Za-z0-9\-_.]+)*/?)$")
            .expect("a valid regex")
    })
}

pub(super) fn parse<R: References>(p: &mut Parser<'_, R>) {
    let Some(secret) = p.value(SECRET) else {
        without_secret(p);
        return;
    };

    // The Secret first, so that it is asked for whatever the other values are (the references
    // recorder lists what a parse asks for).
    let ca_pem = ca_secret(p, secret);

    let verify = match p.value(VERIFY_CLIENT) {
        None => Some(VerifyClient::default()),
        Some(v) => match VerifyClient::parse(v) {
            Some(mode) => {
                p.report(VERIFY_CLIENT, Outcome::Honoured);
                Some(mode)
            }
            None => {
                p.report(
                    VERIFY_CLIENT,
                    Outcome::Invalid(
                        "expected on, off, optional or optional_no_ca (ingress-nginx would use on)".into(),
                    ),
                );
                None
            }
        },
    };

    let depth = match p.value(VERIFY_DEPTH) {
        None => Some(DEFAULT_CLIENT_VERIFY_DEPTH),
        // ingress-nginx reads 0 as its default, 1.
        Some(v) => match parse_int(v).map(|d| {
            if d == 0 {
                i64::from(DEFAULT_CLIENT_VERIFY_DEPTH)
            } else {
                d
            }
        }) {
            Some(d) if d > 0 => match u32::try_from(d) {
                Ok(d) => {
                    p.report(VERIFY_DEPTH, Outcome::Honoured);
                    Some(d)
                }
                Err(_) => {
                    p.report(VERIFY_DEPTH, Outcome::Invalid("too large".into()));
                    None
                }
            },
            _ => {
                p.report(
                    VERIFY_DEPTH,
                    Outcome::Invalid(
                        "expected a whole number of intermediate certificates, 0 or more (ingress-nginx would use 1)"
                            .into(),
                    ),
                );
                None
            }
        },
    };

    let error_page = match p.value(ERROR_PAGE) {
        None => Some(None),
        Some(v) if !error_page_regex().is_match(v) => {
            p.report(
                ERROR_PAGE,
                Outcome::Invalid("expected a URL, a path or a named location (@name)".into()),
            );
            None
        }
        Some(v) if v.starts_with('@') || v.starts_with('/') => {
            // nginx serves a path or named location of the same server in place of the 400
            // (an internal redirect); Gantry has no internal redirects, and a 302 to a path of a
            // host that asks for the certificate would only loop.
            p.report(
                ERROR_PAGE,
                Outcome::Difference(
                    "a local path or named location is not served in place of the error (Gantry has no internal redirects): a missing or refused certificate gets 400"
                        .into(),
                ),
            );
            Some(None)
        }
        // The value passed ingress-nginx's character set, so it is a valid header value.
        Some(v) => match HeaderValue::from_str(v) {
            Ok(location) => {
                p.report(ERROR_PAGE, Outcome::Honoured);
                Some(Some(location))
            }
            Err(_) => {
                p.report(ERROR_PAGE, Outcome::Invalid("not a valid Location".into()));
                None
            }
        },
    };

    let pass = match p.value(PASS_CERTIFICATE) {
        None => Some(false),
        Some(v) => match parse_bool(v) {
            Some(b) => {
                p.report(PASS_CERTIFICATE, Outcome::Honoured);
                Some(b)
            }
            None => {
                p.report(
                    PASS_CERTIFICATE,
                    Outcome::Invalid("expected true or false".into()),
                );
                None
            }
        },
    };

    let match_dn = match p.value(MATCH_CN) {
        None => Some(None),
        Some(v) if !v.starts_with("CN=") => {
            p.report(
                MATCH_CN,
                Outcome::Invalid("expected CN= followed by a regex, as ingress-nginx requires".into()),
            );
            None
        }
        Some(v) => match MatchDn::new(v) {
            Ok(m) => {
                p.report(MATCH_CN, Outcome::Honoured);
                Some(Some(m))
            }
            Err(e) => {
                let e = super::values::shorten(&e.to_string(), 200);
                p.report(MATCH_CN, Outcome::Invalid(format!("not a valid regex: {e}")));
                None
            }
        },
    };

    let (Some(ca_pem), Some(verify), Some(depth), Some(error_page), Some(pass), Some(match_dn)) =
        (ca_pem, verify, depth, error_page, pass, match_dn)
    else {
        // Some value is invalid (reported): the Ingress fails closed.
        return;
    };
    let object = secret.to_string();
    match ClientCa::from_pem(&ca_pem.0, ca_pem.1.as_deref(), depth) {
        Ok(ca) => {
            p.report(SECRET, Outcome::Honoured);
            let mut auth = ClientCertAuth::new(Arc::new(ca), verify);
            auth.error_page = error_page;
            auth.pass_certificate = pass;
            auth.match_dn = match_dn;
            p.out.policies.client_cert = Some(Arc::new(auth));
        }
        Err(e) => p.report_reference(
            SECRET,
            format!("Secret {object}: {e}"),
            ReferenceProblem {
                kind: ReferenceKind::Secret,
                object,
                missing: false,
            },
        ),
    }
}

/// `ca.crt` and `ca.crl` of the Secret `auth-tls-secret` names, or `None` (reported).
///
/// ingress-nginx takes `namespace/name` only (`k8s.ParseNameNS`: a bare name is an error), an
/// empty namespace meaning the Ingress's own, and refuses other namespaces unless the admin
/// allowed cross-namespace resources (off by default).
fn ca_secret<R: References>(p: &mut Parser<'_, R>, value: &str) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let own = p.namespace();
    let parts: Vec<&str> = value.split('/').collect();
    let &[ns, name] = parts.as_slice() else {
        p.report(
            SECRET,
            Outcome::Invalid("expected namespace/name, as ingress-nginx requires".into()),
        );
        return None;
    };
    if !is_basic_chars(value) || super::values::split_key(name).is_none() {
        p.report(SECRET, Outcome::Invalid("expected namespace/name".into()));
        return None;
    }
    let ns = if ns.is_empty() { own } else { ns };
    if ns != own {
        p.report(
            SECRET,
            Outcome::Refused(format!(
                "the Secret is in namespace {ns}, not the Ingress's ({own}): cross-namespace Secrets are not allowed (ingress-nginx's default)"
            )),
        );
        return None;
    }
    let object = format!("{ns}/{name}");
    let Some(secret) = p.refs.secret(ns, name) else {
        p.report_reference(
            SECRET,
            format!("Secret {object} not found"),
            ReferenceProblem {
                kind: ReferenceKind::Secret,
                object,
                missing: true,
            },
        );
        return None;
    };
    let mut entries = secret_entries(secret);
    let crl = entries.remove(CRL_KEY).filter(|v| !v.is_empty());
    match entries.remove(CA_KEY).filter(|v| !v.is_empty()) {
        Some(ca) => Some((ca, crl)),
        None => {
            p.report_reference(
                SECRET,
                format!("Secret {object} has no {CA_KEY:?} (ingress-nginx would serve the host without client certificate authentication)"),
                ReferenceProblem {
                    kind: ReferenceKind::Secret,
                    object,
                    missing: false,
                },
            );
            None
        }
    }
}

/// The other annotations without `auth-tls-secret`: ingress-nginx ignores them all. Those that
/// ask for protection (a verify mode other than `off`, a CN to match) or promise the backend a
/// certificate header it could then get from the client are taken as protection asked for and not
/// configured, and fail closed; the rest are harmless.
fn without_secret<R: References>(p: &mut Parser<'_, R>) {
    let why = "needs auth-tls-secret (the CA to verify against); the Ingress fails closed rather than serve without the client certificate check it asks for";
    if let Some(v) = p.value(VERIFY_CLIENT) {
        if v != "off" {
            p.report(VERIFY_CLIENT, Outcome::Invalid(why.into()));
        }
    }
    if p.value(MATCH_CN).is_some() {
        p.report(MATCH_CN, Outcome::Invalid(why.into()));
    }
    if p.value(PASS_CERTIFICATE).and_then(parse_bool) == Some(true) {
        p.report(PASS_CERTIFICATE, Outcome::Invalid(why.into()));
    }
    p.report_all(
        &[
            VERIFY_CLIENT,
            VERIFY_DEPTH,
            ERROR_PAGE,
            PASS_CERTIFICATE,
            MATCH_CN,
        ],
        || Outcome::Ignored("has no effect without auth-tls-secret, as in ingress-nginx".into()),
    );
}
