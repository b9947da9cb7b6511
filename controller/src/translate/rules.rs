//! Processors 2 and 5: rules → routes, and `spec.defaultBackend` → the default route.
//!
//! Ingresses arrive oldest first and the route table keeps the first claim of a host + path +
//! path type, so merging across Ingresses and resolving conflicts by age are the same step.

use std::collections::BTreeSet;

use gantry_proxy::{HostMatch, PathMatch, Policies, Route, RouteError, RouteSource};

use super::{
    backends,
    hosts::{host_label, host_spelling, parse_host, parse_path, path_label},
    Build, OurIngress, Problem,
};

pub(super) fn routes(b: &mut Build<'_>, ours: &[OurIngress<'_>]) {
    let tls_hosts = tls_hosts(ours);
    for ing in ours {
        let rules = ing
            .ingress
            .spec
            .as_ref()
            .and_then(|s| s.rules.as_deref())
            .unwrap_or_default();
        for rule in rules {
            let host = match parse_host(rule.host.as_deref()) {
                Ok(host) => host,
                Err(why) => {
                    let host = rule.host.clone().unwrap_or_default();
                    b.report(
                        &ing.label,
                        Problem::InvalidHost {
                            host,
                            why,
                            skipped: "the rule",
                        },
                    );
                    continue;
                }
            };
            // A rule may carry only a host (for TLS); then it routes nothing.
            let Some(http) = &rule.http else { continue };
            // Redirect only hosts that have TLS; a rule without host has no name to have a
            // certificate for.
            let ssl_redirect =
                ing.ssl_redirect && host_spelling(&host).is_some_and(|h| tls_hosts.contains(&h));
            for path in &http.paths {
                let matcher = match parse_path(path.path.as_deref(), &path.path_type) {
                    Ok(m) => m,
                    Err(why) => {
                        let problem = Problem::InvalidPath {
                            host: host_label(&host),
                            path: path.path.clone().unwrap_or_default(),
                            why,
                        };
                        b.report(&ing.label, problem);
                        continue;
                    }
                };
                let place = format!("{} {}", host_label(&host), path_label(&matcher));
                let Some(backend) = backends::resolve(b, ing, &path.backend, &place) else {
                    continue;
                };
                let route = Route {
                    path: matcher,
                    backend,
                    source: ing.source.clone(),
                    policies: Policies::https_redirect(ssl_redirect),
                };
                if let Err(e) = b.routes.add(host.clone(), route) {
                    let problem = route_problem(e, &host);
                    b.report(&ing.label, problem);
                }
            }
        }
    }
}

pub(super) fn default_backend(b: &mut Build<'_>, ours: &[OurIngress<'_>]) {
    for ing in ours {
        let Some(backend) = ing.ingress.spec.as_ref().and_then(|s| s.default_backend.as_ref()) else {
            continue;
        };
        let Some(backend) = backends::resolve(b, ing, backend, "defaultBackend") else {
            continue;
        };
        let route = Route {
            path: PathMatch::Prefix("/".into()),
            backend,
            source: ing.source.clone(),
            // A request no rule matches has no host with a certificate to redirect to.
            policies: Policies::default(),
        };
        match b.routes.set_default(route) {
            Ok(()) => {}
            Err(RouteError::Conflict { existing, .. }) => {
                b.report(
                    &ing.label,
                    Problem::DefaultBackendConflict {
                        winner: source_name(&existing),
                    },
                );
            }
            Err(e) => {
                let problem = route_problem(e, &HostMatch::Any);
                b.report(&ing.label, problem);
            }
        }
    }
}

/// Every host (as spelled in `spec.tls[].hosts`, lowercase) that any of our Ingresses lists for
/// TLS. Listing is what counts, not whether the certificate loaded: a host whose Secret broke still
/// redirects, and is served its last good or the default certificate.
fn tls_hosts(ours: &[OurIngress<'_>]) -> BTreeSet<String> {
    ours.iter()
        .filter_map(|ing| ing.ingress.spec.as_ref()?.tls.as_ref())
        .flatten()
        .filter_map(|tls| tls.hosts.as_ref())
        .flatten()
        .map(|h| h.to_ascii_lowercase())
        .collect()
}

fn route_problem(e: RouteError, host: &HostMatch) -> Problem {
    match e {
        RouteError::Conflict { path, existing, .. } => Problem::PathConflict {
            host: host_label(host),
            path: path_label(&path),
            winner: source_name(&existing),
        },
        RouteError::InvalidPath { path, reason } => Problem::InvalidPath {
            host: host_label(host),
            path,
            why: reason.to_string(),
        },
    }
}

fn source_name(source: &RouteSource) -> String {
    format!("{}/{}", source.namespace, source.name)
}
