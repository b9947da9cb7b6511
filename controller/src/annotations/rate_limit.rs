//! `limit-rps`, `limit-rpm`, `limit-connections`, `limit-burst-multiplier` and `limit-allowlist`
//! (older name `limit-whitelist`), as ingress-nginx's `ratelimit` parser reads them: zones per
//! Ingress, a burst of the limit times the multiplier (5 by default), 503 for refused requests.
//!
//! ingress-nginx drops the whole Ingress when a limit is not a number; Gantry reports it and serves
//! the Ingress without that limit. An invalid exemption list makes ingress-nginx drop the limits
//! altogether; Gantry keeps them for every client (the stricter reading) and reports it.

use std::sync::Arc;

use gantry_proxy::policy::RateLimit;
use http::StatusCode;

use super::{
    values::{parse_cidrs, parse_int},
    Outcome, Parser, References,
};

/// ingress-nginx's `defBurst`.
const DEFAULT_BURST_MULTIPLIER: u32 = 5;

pub(super) fn parse<R: References>(p: &mut Parser<'_, R>) {
    let rps = limit(p, "limit-rps");
    let rpm = limit(p, "limit-rpm");
    let connections = limit(p, "limit-connections");
    if rps.is_none() && rpm.is_none() && connections.is_none() {
        let why = "no limit is set (limit-rps, limit-rpm or limit-connections), as in ingress-nginx";
        p.report_all(
            &["limit-burst-multiplier", "limit-allowlist", "limit-whitelist"],
            || Outcome::Ignored(why.into()),
        );
        return;
    }
    let mut burst_multiplier = DEFAULT_BURST_MULTIPLIER;
    if let Some(v) = p.value("limit-burst-multiplier") {
        match parse_int(v)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n <= 1_000_000)
        {
            Some(n) => {
                burst_multiplier = n;
                p.report("limit-burst-multiplier", Outcome::Honoured);
            }
            None => p.report(
                "limit-burst-multiplier",
                Outcome::Invalid(format!(
                    "expected a whole number; using {DEFAULT_BURST_MULTIPLIER}"
                )),
            ),
        }
    }
    let (name, value) = match (p.value("limit-allowlist"), p.raw("limit-whitelist")) {
        (Some(v), alias) => {
            if alias.is_some() {
                p.report(
                    "limit-whitelist",
                    Outcome::Ignored("limit-allowlist takes precedence, as in ingress-nginx".into()),
                );
            }
            ("limit-allowlist", Some(v))
        }
        (None, _) => ("limit-whitelist", p.value("limit-whitelist")),
    };
    let exempt = match value.map(parse_cidrs) {
        None => Vec::new(),
        Some(Ok(nets)) => {
            p.report(name, Outcome::Honoured);
            nets
        }
        Some(Err(e)) => {
            p.report(
                name,
                Outcome::Invalid(format!(
                    "{e}; expected comma-separated IP addresses or CIDRs; the limits apply to every client"
                )),
            );
            Vec::new()
        }
    };
    p.out.policies.rate_limit = Some(Arc::new(RateLimit {
        zone: Arc::from(format!("{}/{}", p.ingress.namespace, p.ingress.name)),
        rps,
        rpm,
        burst_multiplier,
        connections,
        exempt,
        status: StatusCode::SERVICE_UNAVAILABLE,
    }));
}

/// One limit: a whole number; 0 is no limit (as in ingress-nginx).
fn limit<R: References>(p: &mut Parser<'_, R>, name: &'static str) -> Option<u32> {
    let v = p.value(name)?;
    match parse_int(v).and_then(|n| u32::try_from(n).ok()) {
        Some(0) => {
            p.report(name, Outcome::Honoured);
            None
        }
        Some(n) => {
            p.report(name, Outcome::Honoured);
            Some(n)
        }
        None => {
            p.report(
                name,
                Outcome::Invalid("expected a whole number; this limit is not applied".into()),
            );
            None
        }
    }
}
