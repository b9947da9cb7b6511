//! `enable-cors` and the `cors-*` family, with ingress-nginx's defaults and validation: an invalid
//! field falls back to its default (as ingress-nginx's parser does) and is reported.
//!
//! Origins are read by [`CorsOrigin::parse_list`], as ingress-nginx's parser reads them: each
//! comma-separated origin on its own, an invalid one skipped (and reported), `*` anywhere meaning
//! any origin. When no origin is left, ingress-nginx adds no CORS headers at all (its template only
//! sets them for a matching origin), and neither does Gantry. Two choices differ from
//! ingress-nginx, both towards fewer origins: a value its whole-value validator refuses falls back
//! to `*` there, while Gantry keeps the valid origins it names; and the `null` origin (sent by every
//! sandboxed document) is refused.

use std::sync::Arc;

use gantry_proxy::policy::{Cors, CorsOrigin};
use http::HeaderValue;

use super::{
    values::{is_alpha_token, is_header_token, is_token_list, parse_bool, parse_int},
    Outcome, Parser, References,
};

const FIELDS: [&str; 6] = [
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
];

pub(super) fn parse<R: References>(p: &mut Parser<'_, R>) {
    let enabled = match p.value("enable-cors") {
        None => false,
        Some(v) => match parse_bool(v) {
            Some(on) => {
                p.report("enable-cors", Outcome::Honoured);
                on
            }
            None => {
                p.report(
                    "enable-cors",
                    Outcome::Invalid("expected \"true\" or \"false\"; using false".into()),
                );
                false
            }
        },
    };
    if !enabled {
        p.report_all(&FIELDS, || {
            Outcome::Ignored("CORS is not enabled (enable-cors: \"true\"), as in ingress-nginx".into())
        });
        return;
    }
    let mut cors = Cors::default();

    if let Some(v) = p.value("cors-allow-origin") {
        let (list, skipped) = CorsOrigin::parse_list(v);
        if skipped.is_empty() {
            p.report("cors-allow-origin", Outcome::Honoured);
        } else if list.is_empty() {
            p.report(
                "cors-allow-origin",
                Outcome::Invalid(format!(
                    "no valid origin ({}); no CORS headers are added, as in ingress-nginx",
                    skipped.join("; ")
                )),
            );
            p.report_all(&FIELDS, || {
                Outcome::Ignored("cors-allow-origin has no valid origin".into())
            });
            return;
        } else {
            p.report(
                "cors-allow-origin",
                Outcome::Invalid(format!(
                    "skipped, as ingress-nginx skips invalid origins: {}; the other origins apply",
                    skipped.join("; ")
                )),
            );
        }
        cors.origins = list;
    }

    // ingress-nginx: `^([A-Za-z]+,?\s?)+$`, else the default.
    if let Some(v) = p.value("cors-allow-methods") {
        match HeaderValue::from_str(v).ok().filter(|_| is_token_list(v, is_alpha_token)) {
            Some(h) => {
                cors.allow_methods = h;
                p.report("cors-allow-methods", Outcome::Honoured);
            }
            None => p.report(
                "cors-allow-methods",
                Outcome::Invalid("expected comma-separated methods (letters only); using the default GET, PUT, POST, DELETE, PATCH, OPTIONS".into()),
            ),
        }
    }
    // ingress-nginx: `^[A-Za-z0-9-_, ]*$` (`HeadersVariable`), else the default.
    if let Some(v) = p.value("cors-allow-headers") {
        let ok = v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(&b));
        match HeaderValue::from_str(v).ok().filter(|_| ok) {
            Some(h) => {
                cors.allow_headers = h;
                p.report("cors-allow-headers", Outcome::Honoured);
            }
            None => p.report(
                "cors-allow-headers",
                Outcome::Invalid(
                    "expected comma-separated header names (letters, digits, - and _); using the default"
                        .into(),
                ),
            ),
        }
    }
    // ingress-nginx: `^(([A-Za-z0-9\-\_]+|\*),?\s?)+$`, else none.
    if let Some(v) = p.value("cors-expose-headers") {
        match HeaderValue::from_str(v)
            .ok()
            .filter(|_| is_token_list(v, is_header_token))
        {
            Some(h) => {
                cors.expose_headers = Some(h);
                p.report("cors-expose-headers", Outcome::Honoured);
            }
            None => p.report(
                "cors-expose-headers",
                Outcome::Invalid("expected comma-separated header names or *; none are exposed".into()),
            ),
        }
    }
    if let Some(v) = p.value("cors-allow-credentials") {
        match parse_bool(v) {
            Some(on) => {
                cors.allow_credentials = on;
                p.report("cors-allow-credentials", Outcome::Honoured);
            }
            None => p.report(
                "cors-allow-credentials",
                Outcome::Invalid("expected \"true\" or \"false\"; using true".into()),
            ),
        }
    }
    if let Some(v) = p.value("cors-max-age") {
        match parse_int(v).and_then(|n| u32::try_from(n).ok()) {
            Some(n) => {
                cors.max_age = n;
                p.report("cors-max-age", Outcome::Honoured);
            }
            None => p.report(
                "cors-max-age",
                Outcome::Invalid("expected a number of seconds; using 1728000".into()),
            ),
        }
    }
    p.out.policies.cors = Some(Arc::new(cors));
}
