//! Tracing: `enable-opentelemetry` and `opentelemetry-trust-incoming-span` (ingress-nginx's
//! `internal/ingress/annotations/opentelemetry`), compiled into the route's
//! [`RouteTracing`]. Both are Go booleans; an invalid one is reported and left out, as
//! ingress-nginx's parser falls back to the default. `opentelemetry-operation-name` (an nginx
//! variable template) is ignored: spans are named by method and route, as OpenTelemetry's HTTP
//! conventions say.

use gantry_proxy::trace::RouteTracing;

use super::{values::parse_bool, Outcome, Parser, References};

pub(super) fn parse<R: References>(p: &mut Parser<'_, R>) {
    let enabled = boolean(p, "enable-opentelemetry", "the class-wide setting is used");
    let trust = boolean(p, "opentelemetry-trust-incoming-span", "true is used");
    if enabled.is_some() || trust.is_some() {
        p.out.policies.tracing = Some(RouteTracing {
            enabled,
            trust_incoming: trust.unwrap_or(true),
        });
    }
}

fn boolean<R: References>(p: &mut Parser<'_, R>, name: &'static str, otherwise: &str) -> Option<bool> {
    let v = p.value(name)?;
    match parse_bool(v) {
        Some(b) => {
            p.report(name, Outcome::Honoured);
            Some(b)
        }
        None => {
            p.report(
                name,
                Outcome::Invalid(format!("expected true or false; {otherwise}")),
            );
            None
        }
    }
}
