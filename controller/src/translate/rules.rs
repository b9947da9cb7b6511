//! Processors 2 and 5: rules → routes, and `spec.defaultBackend` → the default route.
//!
//! Ingresses arrive oldest first and the route table keeps the first claim of a host + path +
//! path type, so merging across Ingresses and resolving conflicts by age are the same step.
//!
//! Each route's [`Policies`] are its Ingress's annotation policies (the Ingress-wide part, read
//! once by [`crate::annotations::parse`]) plus what depends on the host and path:
//!
//! - the HTTPS redirect: hosts listed in `spec.tls` (unless `ssl-redirect: "false"`), every host
//!   with `force-ssl-redirect: "true"`;
//! - regex mode (ingress-nginx's `docs/user-guide/ingress-path-matching.md`): when any of our
//!   Ingresses with a rule for a host has `use-regex: "true"`, or a `rewrite-target` other than one
//!   of its paths, every Prefix and ImplementationSpecific path of that host, from every Ingress,
//!   becomes [`PathMatch::Regex`] of the path as written (Exact paths stay exact);
//! - `rewrite-target`, compiled against each path; a target that does not fit a path (a capture
//!   group the path does not have, an nginx variable) makes that path answer 503 rather than send
//!   requests somewhere its author did not mean.
//!
//! An Ingress that fails closed keeps only its refusal: its paths are routed (held against other
//! Ingresses and the default backend) and answer 503. `server-alias` names get a copy of every
//! route of the Ingress's hosts once all rules are in (an alias serves the whole host, from every
//! Ingress, as an nginx `server_name` does).
//!
//! **Canaries** (`canary: "true"`, ingress-nginx's `mergeAlternativeBackends`): a canary Ingress's
//! paths are not routed. Each becomes a [`CanaryClaim`] first ([`canaries`]), and a main (not
//! canary) Ingress's route takes the first claim, oldest canary Ingress first, with the same host,
//! the same path as written and the same path type (ImplementationSpecific counting as Prefix, as
//! Gantry routes it): the claim's backend is the route's [`Canary`](gantry_proxy::policy::Canary).
//! A canary Ingress's `spec.defaultBackend` claims the default route and every route of a rule
//! without host (ingress-nginx's catch-all server). ingress-nginx keeps one canary per route (its
//! balancer reads only the first alternative backend); a claim that finds no main route, only
//! routes with an older canary, or only routes to its own backend is ignored there and reported
//! here. ingress-nginx attaches a canary to the main *Service* (its upstream), so every other path
//! to that Service gets it too; Gantry attaches it to the route with the same host and path only,
//! which is what its documentation describes.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use gantry_proxy::{
    policy::{ClientCertAuth, HostRedirect, HttpsRedirect, Refusal, Rewrite},
    Backend, HostMatch, HostTable, PathMatch, Policies, Route, RouteError, RouteSource, RouteTableBuilder,
};
use k8s_openapi::api::networking::v1::IngressRule;

use super::{
    backends,
    class::IngressFacts,
    hosts::{host_label, is_tls_host, parse_host, parse_path, path_label},
    Build, OurIngress, Problem,
};
use crate::{
    annotations::CanarySpec,
    diagnostic::{Diagnostic, ObjectRef},
    store::ObjectKey,
};

/// One backend of a canary Ingress, waiting for the main route it attaches to.
pub(super) struct CanaryClaim {
    /// The canary Ingress, as its diagnostics name it.
    object: ObjectRef,
    /// `namespace/name` of the canary Ingress.
    source: String,
    host: HostMatch,
    /// The path as parsed (Exact or Prefix), or `None` for the canary Ingress's
    /// `spec.defaultBackend`, which claims the default route and every route without host.
    path: Option<PathMatch>,
    /// `host Prefix /path`, or `defaultBackend`, for messages.
    place: String,
    backend: Arc<Backend>,
    spec: Arc<CanarySpec>,
    outcome: ClaimOutcome,
}

/// What became of a claim; a later, better outcome replaces an earlier one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ClaimOutcome {
    /// No main route with its host and path.
    Unmatched,
    /// Only main routes to the canary's own backend (ingress-nginx's `altEqualsPri`).
    SameBackend(String),
    /// Only main routes that already have an older canary: the winner's `namespace/name`.
    Conflict(String),
    /// The canary of at least one route.
    Attached,
}

impl CanaryClaim {
    fn matches(&self, host: &HostMatch, path: &PathMatch) -> bool {
        match &self.path {
            Some(p) => self.host == *host && p == path,
            None => matches!(host, HostMatch::Any),
        }
    }

    fn record(&mut self, outcome: ClaimOutcome) {
        if outcome > self.outcome {
            self.outcome = outcome;
        }
    }
}

/// Which claims a main route to `backend` at `host` `path` (as parsed) takes: the first matching
/// claim to another backend wins.
#[derive(Default)]
struct CanaryPick {
    winner: Option<usize>,
    /// Matching claims after the winner.
    losers: Vec<usize>,
    /// Matching claims to the route's own backend.
    same_backend: Vec<usize>,
}

fn pick_canary(
    claims: &[CanaryClaim],
    matches: impl Fn(&CanaryClaim) -> bool,
    backend: &Backend,
) -> CanaryPick {
    let mut pick = CanaryPick::default();
    for (i, claim) in claims.iter().enumerate().filter(|(_, c)| matches(c)) {
        if claim.backend.id == backend.id {
            pick.same_backend.push(i);
        } else if pick.winner.is_none() {
            pick.winner = Some(i);
        } else {
            pick.losers.push(i);
        }
    }
    pick
}

impl CanaryPick {
    /// Puts the winner's canary into `policies` (unless the route fails closed: it answers 503
    /// whatever the backend).
    fn apply(&self, claims: &[CanaryClaim], policies: &mut Policies) {
        if let Some(claim) = self.winner.map(|i| &claims[i]) {
            if policies.refusal.is_none() {
                let canary = claim
                    .spec
                    .canary(claim.backend.clone(), policies.affinity.as_ref());
                policies.canary = Some(Arc::new(canary));
            }
        }
    }

    /// Records the outcome once the route is in the table.
    fn record(&self, claims: &mut [CanaryClaim], main_backend: &Backend) {
        let Some(winner) = self.winner else {
            for &i in &self.same_backend {
                claims[i].record(ClaimOutcome::SameBackend(main_backend.id.to_string()));
            }
            return;
        };
        let winner_source = claims[winner].source.clone();
        claims[winner].record(ClaimOutcome::Attached);
        for &i in &self.losers {
            claims[i].record(ClaimOutcome::Conflict(winner_source.clone()));
        }
        for &i in &self.same_backend {
            claims[i].record(ClaimOutcome::SameBackend(main_backend.id.to_string()));
        }
    }
}

/// The claims of our canary Ingresses, oldest Ingress first, each Ingress's `spec.defaultBackend`
/// before its rules (the order in which ingress-nginx merges them). Invalid hosts and paths, and
/// backends that cannot be resolved, are reported as for any Ingress.
pub(super) fn canaries(b: &mut Build<'_>, ours: &[OurIngress<'_>]) -> Vec<CanaryClaim> {
    let mut claims = Vec::new();
    for ing in ours {
        let Some(spec) = &ing.facts.annotations.canary else {
            continue;
        };
        let spec = Arc::new(spec.clone());
        let claim =
            |host: HostMatch, path: Option<PathMatch>, place: String, backend: Arc<Backend>| CanaryClaim {
                object: ing.object().clone(),
                source: ing.key.to_string(),
                host,
                path,
                place,
                backend,
                spec: spec.clone(),
                outcome: ClaimOutcome::Unmatched,
            };
        let spec_of = ing.ingress.spec.as_ref();
        if let Some(default) = spec_of.and_then(|s| s.default_backend.as_ref()) {
            if let Some(backend) = backends::resolve(b, ing, default, "defaultBackend") {
                claims.push(claim(HostMatch::Any, None, "defaultBackend".into(), backend));
            }
        }
        for rule in spec_of.and_then(|s| s.rules.as_deref()).unwrap_or_default() {
            let host = match parse_host(rule.host.as_deref()) {
                Ok(host) => host,
                Err(why) => {
                    let host = rule.host.clone().unwrap_or_default();
                    b.report(
                        ing.object(),
                        Problem::InvalidHost {
                            host,
                            why,
                            skipped: "the rule",
                        },
                    );
                    continue;
                }
            };
            let Some(http) = &rule.http else { continue };
            for path in &http.paths {
                let parsed = match parse_path(path.path.as_deref(), &path.path_type) {
                    Ok(m) => m,
                    Err(why) => {
                        let problem = Problem::InvalidPath {
                            host: host_label(&host),
                            path: path.path.clone().unwrap_or_default(),
                            why,
                        };
                        b.report(ing.object(), problem);
                        continue;
                    }
                };
                let place = format!("{} {}", host_label(&host), path_label(&parsed));
                let Some(backend) = backends::resolve(b, ing, &path.backend, &place) else {
                    continue;
                };
                claims.push(claim(host.clone(), Some(parsed), place, backend));
            }
        }
    }
    claims
}

/// Reports every claim that is the canary of no route.
pub(super) fn report_canaries(b: &mut Build<'_>, claims: Vec<CanaryClaim>) {
    for claim in claims {
        let place = claim.place;
        let problem = match claim.outcome {
            ClaimOutcome::Attached => continue,
            ClaimOutcome::Unmatched => Problem::CanaryWithoutMainRoute { place },
            ClaimOutcome::SameBackend(backend) => Problem::CanarySameBackend { place, backend },
            ClaimOutcome::Conflict(winner) => Problem::CanaryConflict { place, winner },
        };
        b.report(&claim.object, problem);
    }
}

/// The compiled routes of every host the rules made, for `server-alias` and
/// `from-to-www-redirect`.
type Added<'o> = HashMap<&'o HostMatch, Arc<HostTable>>;

/// The `default-backend` of each Ingress (by index in `ours`) that has one.
type Defaults = HashMap<usize, Option<Arc<Backend>>, foldhash::fast::RandomState>;

/// A set hashed with foldhash, for the per-build sets made from every Ingress.
pub(super) type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;

/// What one host's routes were made from: the rules for the host, oldest Ingress first, and what
/// else they depend on. The host's routes are reused while these are the same and the backends
/// they resolved still hold ([`backends::still`]).
pub(super) struct HostInputs {
    /// Every rule for the host: its Ingress's facts (a new `Arc` when the Ingress or its
    /// annotations changed) and its index in `spec.rules`.
    members: Vec<(Arc<IngressFacts>, usize)>,
    /// Some Ingress lists the host in `spec.tls`.
    tls: bool,
    /// The host is in regex mode.
    regex: bool,
    client_auth: Option<HostClientAuth>,
    /// `false` when the routes depend on what is not tracked here (canary claims on the host, an
    /// Ingress's `default-backend` annotation, both rare): they are made anew every build.
    cacheable: bool,
}

impl HostInputs {
    /// Whether these inputs are the host's now: `members` (indexes into `ours`, and of the rule
    /// in the Ingress) and the rest as [`routes`] works them out. Compared where they lie, so a
    /// host that is reused (most hosts, most builds) costs no copy of its members.
    fn hold(&self, now: &HostNow<'_>, members: &[(usize, usize)], ours: &[OurIngress<'_>]) -> bool {
        self.cacheable
            && now.cacheable
            && self.tls == now.tls
            && self.regex == now.regex
            && self.members.len() == members.len()
            && self
                .members
                .iter()
                .zip(members)
                .all(|((a, i), &(ing, j))| *i == j && Arc::ptr_eq(a, &ours[ing].facts))
            && match (&self.client_auth, now.client_auth) {
                (None, None) => true,
                (Some(HostClientAuth::Protected(a)), Some(HostClientAuth::Protected(b))) => Arc::ptr_eq(a, b),
                (Some(HostClientAuth::Broken { owner: a }), Some(HostClientAuth::Broken { owner: b })) => {
                    a == b
                }
                _ => false,
            }
    }
}

/// What [`HostInputs`] holds besides the members, as this build finds it.
struct HostNow<'a> {
    cacheable: bool,
    tls: bool,
    regex: bool,
    client_auth: Option<&'a HostClientAuth>,
}

/// One host's share of a build: its compiled routes and what making them reported.
pub(super) struct HostUnit {
    /// `None` when no path of the host could be routed.
    pub(super) table: Option<Arc<HostTable>>,
    pub(super) diagnostics: Vec<Diagnostic>,
    /// `rewrite-target` report lines: (Ingress, text).
    pub(super) additions: Vec<(ObjectKey, String)>,
    /// Every backend the routes resolved.
    pub(super) backends: Vec<(backends::BackendKey, Arc<Backend>)>,
}

/// Processor 2: the routes of every rule, host by host.
///
/// The rules are grouped by host (hosts in the order they first appear, each host's rules oldest
/// Ingress first, so conflicts resolve by age as if every rule were added in one pass). A host's
/// routes depend only on its own rules and on facts about that host (TLS, regex mode, client
/// authentication, canaries), so each host is compiled on its own ([`HostTable`]) and kept across
/// builds: a change to one Ingress compiles that Ingress's hosts again, and every other host's
/// table is the last build's `Arc`.
pub(super) fn routes(b: &mut Build<'_>, ours: &[OurIngress<'_>], canaries: &mut [CanaryClaim]) {
    // foldhash: these are built from every Ingress every build (SipHash was a tenth of them).
    // Every Ingress's TLS hosts are gathered only for a host none of whose rules' own Ingress
    // lists it in `spec.tls` (most Ingresses with TLS list their own hosts).
    let tls_hosts: std::cell::OnceCell<FastSet<&str>> = std::cell::OnceCell::new();
    let all_tls_hosts = || {
        tls_hosts.get_or_init(|| {
            ours.iter()
                .flat_map(|i| i.facts.tls_hosts.iter().map(String::as_str))
                .collect()
        })
    };
    let regex_hosts: FastSet<&HostMatch> = ours
        .iter()
        .filter(|i| i.facts.annotations.not_routed.is_none())
        .flat_map(|i| i.facts.regex_hosts.iter())
        .collect();
    let client_auth = host_client_auth(b, ours);
    // Hosts that canary claims attach to: a claim without path (a `spec.defaultBackend`) claims
    // the routes without host.
    let claimed: FastSet<HostMatch> = canaries
        .iter()
        .map(|c| match c.path {
            Some(_) => c.host.clone(),
            None => HostMatch::Any,
        })
        .collect();

    // The rules of each host, and the `default-backend` of each Ingress that has one. Each rule
    // is filed under its host's group first; one counting pass then lays every group's rules
    // out in one list (no list per host: most hosts have one rule).
    let mut index: foldhash::HashMap<&HostMatch, usize> = foldhash::HashMap::default();
    index.reserve(ours.len());
    let mut hosts: Vec<&HostMatch> = Vec::with_capacity(ours.len());
    let mut filed: Vec<(usize, usize, usize)> = Vec::with_capacity(ours.len());
    let mut defaults: Defaults = Defaults::default();
    for (i, ing) in ours.iter().enumerate() {
        if ing.facts.annotations.not_routed.is_some() {
            // A canary (its rules are claims, see `canaries`), or an invalid `canary`: none of its
            // rules is routed.
            continue;
        }
        if ing.facts.annotations.default_backend.is_some() {
            defaults.insert(i, annotation_default_backend(b, ing, true));
        }
        for (r, (rule, host)) in rules_of(ing).iter().zip(&ing.facts.rule_hosts).enumerate() {
            let host = match host {
                Ok(host) => host,
                Err(why) => {
                    let host = rule.host.clone().unwrap_or_default();
                    b.report(
                        ing.object(),
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
            if rule.http.is_none() {
                continue;
            }
            let at = *index.entry(host).or_insert_with(|| {
                hosts.push(host);
                hosts.len() - 1
            });
            filed.push((at, i, r));
        }
    }
    drop(index);
    // Where each group starts in `members`, then the rules, each group's in the order filed
    // (oldest Ingress first).
    let mut starts = vec![0usize; hosts.len() + 1];
    for &(at, _, _) in &filed {
        starts[at + 1] += 1;
    }
    for g in 0..hosts.len() {
        starts[g + 1] += starts[g];
    }
    let mut next = starts.clone();
    let mut members_of = vec![(0usize, 0usize); filed.len()];
    for &(at, i, r) in &filed {
        members_of[next[at]] = (i, r);
        next[at] += 1;
    }
    let groups = hosts
        .iter()
        .enumerate()
        .map(|(g, host)| (*host, &members_of[starts[g]..starts[g + 1]]));

    let keep_added = ours
        .iter()
        .any(|i| !i.facts.annotations.server_alias.is_empty() || i.facts.annotations.from_to_www_redirect);
    let mut added = Added::new();
    b.routes.reserve_hosts(hosts.len());
    let mut memo = std::mem::take(&mut b.cache.hosts);
    let trust = trust(b);
    for (host, members) in groups {
        let now = HostNow {
            cacheable: (claimed.is_empty() || !claimed.contains(host))
                && (defaults.is_empty() || members.iter().all(|(i, _)| !defaults.contains_key(i))),
            // Redirect only hosts that have TLS (a rule without host has no name to have a
            // certificate for), unless the Ingress forces it.
            tls: members
                .iter()
                .any(|&(i, r)| ours[i].facts.rule_in_own_tls.get(r).copied().unwrap_or(false))
                || is_tls_host(host, |h| all_tls_hosts().contains(h)),
            regex: !regex_hosts.is_empty() && regex_hosts.contains(host),
            client_auth: if client_auth.is_empty() {
                None
            } else {
                client_auth.get(host)
            },
        };
        let unit = unit_for(
            b, &mut memo, ours, host, members, &now, trust, &defaults, canaries,
        );
        if let Some(hosts) = &mut b.recorded_hosts {
            hosts.push((host.clone(), members.to_vec(), unit.clone()));
        }
        b.diagnostics.extend(unit.diagnostics.iter().cloned());
        for (ingress, text) in &unit.additions {
            if let Some(report) = b.annotation_report(ingress, "rewrite-target") {
                report.add_invalid(text.clone());
            }
        }
        if let Some(table) = &unit.table {
            b.routes.add_host_table(host.clone(), table.clone());
            if keep_added {
                added.insert(host, table.clone());
            }
        }
    }
    b.cache.hosts = memo;
    if keep_added {
        server_aliases(b, ours, &added);
        www_redirects(b, ours, &added);
    }
}

/// How far a build may trust the backends of a host it reuses without looking them up: `all`
/// when no Service, EndpointSlice or Node changed since the last build, `untouched` those of the
/// Services the store says did not (see [`backends::still`]).
#[derive(Clone, Copy)]
pub(super) struct Trust {
    pub(super) untouched: bool,
    pub(super) all: bool,
}

/// What this build may trust of reused hosts' backends. No Service, EndpointSlice or Node changed
/// since the last build, or only known Services did: every backend a reused host resolved of any
/// other Service is still what it was, so it need not be looked at.
pub(super) fn trust(b: &mut Build<'_>) -> Trust {
    let untouched = (b.unchanged.backends || b.unchanged.touched_services.is_some())
        && b.cache.backends.may_skip_stamps();
    if untouched {
        b.cache.backends.skip_stamps();
    }
    Trust {
        untouched,
        all: untouched && b.unchanged.backends,
    }
}

/// One host's routes: the last build's when its inputs still hold, else compiled anew (and kept).
#[allow(clippy::too_many_arguments)]
fn unit_for(
    b: &mut Build<'_>,
    memo: &mut HostMemo,
    ours: &[OurIngress<'_>],
    host: &HostMatch,
    members: &[(usize, usize)],
    now: &HostNow<'_>,
    trust: Trust,
    defaults: &Defaults,
    canaries: &mut [CanaryClaim],
) -> Arc<HostUnit> {
    let reused = memo.lookup(host, |last, unit| {
        last.hold(now, members, ours)
            && (trust.all
                || unit
                    .backends
                    .iter()
                    .all(|(key, backend)| backends::still(b, key, backend, trust.untouched)))
    });
    if let Some(unit) = reused {
        return unit;
    }
    let inputs = HostInputs {
        cacheable: now.cacheable,
        members: members.iter().map(|&(i, r)| (ours[i].facts.clone(), r)).collect(),
        tls: now.tls,
        regex: now.regex,
        client_auth: now.client_auth.cloned(),
    };
    let unit = Arc::new(host_unit(b, ours, host, members, &inputs, defaults, canaries));
    memo.store(host, inputs, unit.clone());
    unit
}

/// The routes of one host for a build that patches the last one ([`super::patch`]): `members`
/// are the host's rules (an Ingress in `ours` and the rule's index), oldest Ingress first, none
/// of them [`IngressFacts::cross`]; `tls_hosts` every TLS host of every one of our Ingresses.
pub(super) fn patched_host(
    b: &mut Build<'_>,
    ours: &[OurIngress<'_>],
    host: &HostMatch,
    members: &[(usize, usize)],
    tls_hosts: &FastSet<String>,
    trust: Trust,
) -> Arc<HostUnit> {
    let now = HostNow {
        cacheable: true,
        tls: members
            .iter()
            .any(|&(i, r)| ours[i].facts.rule_in_own_tls.get(r).copied().unwrap_or(false))
            || is_tls_host(host, |h| tls_hosts.contains(h)),
        // A host is in regex mode when one of its rules' Ingresses puts it there
        // (`IngressFacts::regex_hosts` are hosts of the Ingress's own rules).
        regex: members
            .iter()
            .any(|&(i, _)| ours[i].facts.regex_hosts.contains(host)),
        client_auth: None,
    };
    let mut memo = std::mem::take(&mut b.cache.hosts);
    let unit = unit_for(
        b,
        &mut memo,
        ours,
        host,
        members,
        &now,
        trust,
        &Defaults::default(),
        &mut [],
    );
    b.cache.hosts = memo;
    unit
}

/// The hosts memo of [`super::TranslateCache`].
type HostMemo = super::cache::Memo<HostMatch, HostInputs, Arc<HostUnit>>;

fn rules_of<'i>(ing: &OurIngress<'i>) -> &'i [IngressRule] {
    ing.ingress
        .spec
        .as_ref()
        .and_then(|s| s.rules.as_deref())
        .unwrap_or_default()
}

/// The routes of one host from its rules (`members`: our Ingress and rule index), compiled.
fn host_unit(
    b: &mut Build<'_>,
    ours: &[OurIngress<'_>],
    host: &HostMatch,
    members: &[(usize, usize)],
    inputs: &HostInputs,
    defaults: &Defaults,
    canaries: &mut [CanaryClaim],
) -> HostUnit {
    let start = b.diagnostics.len();
    b.backend_log = Some(Vec::new());
    let mut table = RouteTableBuilder::new();
    let mut additions = Vec::new();
    for &(i, r) in members {
        let ing = &ours[i];
        let Some(http) = rules_of(ing).get(r).and_then(|rule| rule.http.as_ref()) else {
            continue;
        };
        let ann = &ing.facts.annotations;
        let ssl_redirect = ann.force_ssl_redirect || (ann.ssl_redirect && inputs.tls);
        let default_backend = defaults.get(&i).cloned().flatten();
        for path in &http.paths {
            let parsed = parse_path(path.path.as_deref(), &path.path_type);
            let matcher = match parsed.clone() {
                Ok(PathMatch::Prefix(p)) if inputs.regex => PathMatch::Regex(p),
                Ok(m) => m,
                Err(why) => {
                    let problem = Problem::InvalidPath {
                        host: host_label(host),
                        path: path.path.clone().unwrap_or_default(),
                        why,
                    };
                    b.report(ing.object(), problem);
                    continue;
                }
            };
            let place = format!("{} {}", host_label(host), path_label(&matcher));
            let Some(backend) = backends::resolve(b, ing, &path.backend, &place) else {
                continue;
            };
            let mut policies = route_policies(ing, &matcher, ssl_redirect, &mut additions);
            apply_client_auth(&mut policies, inputs.client_auth.as_ref());
            if policies.refusal.is_none() {
                policies.default_backend = default_backend.clone();
            }
            let pick = match &parsed {
                Ok(parsed) => pick_canary(canaries, |c| c.matches(host, parsed), &backend),
                Err(_) => CanaryPick::default(),
            };
            pick.apply(canaries, &mut policies);
            let route = Route {
                path: matcher,
                conditions: None,
                backend,
                source: ing.source.clone(),
                policies: b.cache.policies.share(policies),
            };
            let main_backend = route.backend.clone();
            match table.add(host.clone(), route) {
                Ok(()) => pick.record(canaries, &main_backend),
                Err(e) => {
                    let problem = route_problem(e, host);
                    b.report(ing.object(), problem);
                }
            }
        }
    }
    HostUnit {
        table: table.host_table(host),
        diagnostics: b.diagnostics.split_off(start),
        additions,
        backends: {
            // Kept with the host: without a path's repeat of the backend before it, or spare room.
            let mut log = b.backend_log.take().unwrap_or_default();
            log.dedup_by(|a, b| a.0 == b.0 && Arc::ptr_eq(&a.1, &b.1));
            log.shrink_to_fit();
            log
        },
    }
}

/// The `default-backend` of an Ingress, when it names a Service with ready endpoints (ingress-nginx
/// uses a custom default backend only then: "valid only if contains at least one endpoint").
/// A missing Service, or one without ports, makes the annotation's report invalid (`report`: once
/// per Ingress).
fn annotation_default_backend(b: &mut Build<'_>, ing: &OurIngress<'_>, report: bool) -> Option<Arc<Backend>> {
    let name = ing.facts.annotations.default_backend.as_deref()?;
    match backends::resolve_default_backend(b, ing, name) {
        Ok(backend) if !backend.endpoints.is_empty() => Some(backend),
        _ if !report => None,
        Ok(backend) => {
            if let Some(report) = b.annotation_report(ing.key, "default-backend") {
                let why = backend.unavailable.as_deref().unwrap_or("no ready endpoints");
                report.add_difference(format!(
                    "{}: {why}; not used until it has ready endpoints, as in ingress-nginx",
                    backend.id
                ));
            }
            None
        }
        Err(why) => {
            if let Some(report) = b.annotation_report(ing.key, "default-backend") {
                report.add_invalid(format!("{why}; no default backend is used"));
            }
            None
        }
    }
}

/// A host's client certificate authentication (`auth-tls-*`), decided once for all its routes.
#[derive(Clone)]
pub(super) enum HostClientAuth {
    /// From the oldest Ingress of the host that has `auth-tls-secret`.
    Protected(Arc<ClientCertAuth>),
    /// That Ingress's `auth-tls-*` cannot be honoured: every route of the host answers 503 (for
    /// ingress-nginx, whose server then answers 403, an `auth-tls` error of any of the host's
    /// Ingresses denies the whole host).
    Broken { owner: String },
}

/// What one Ingress asks of its hosts' client authentication, if anything.
fn ingress_client_auth(ing: &OurIngress<'_>) -> Option<Result<Arc<ClientCertAuth>, ()>> {
    let broken = ing
        .facts
        .annotations
        .reports
        .iter()
        .any(|r| r.name().starts_with("auth-tls-") && r.fails_closed);
    if broken {
        return Some(Err(()));
    }
    ing.facts.annotations.policies.client_cert.clone().map(Ok)
}

/// Client certificate authentication per host, as ingress-nginx merges servers: the oldest of our
/// Ingresses with `auth-tls-secret` for a host decides for every route of that host, whichever
/// Ingress the route comes from (`ssl_verify_client` is a directive of the nginx server). A newer
/// Ingress whose `auth-tls-*` differ, or that has none on a host whose client authentication is
/// broken, gets a diagnostic.
fn host_client_auth(b: &mut Build<'_>, ours: &[OurIngress<'_>]) -> HashMap<HostMatch, HostClientAuth> {
    let mut hosts: HashMap<HostMatch, (HostClientAuth, &ObjectRef)> = HashMap::new();
    // Pass 1, oldest first: the owner of each host.
    for ing in ours.iter().filter(|i| i.facts.annotations.not_routed.is_none()) {
        let Some(asked) = ingress_client_auth(ing) else {
            continue;
        };
        for host in ing.facts.hosts.iter().cloned() {
            hosts.entry(host).or_insert_with(|| {
                let auth = match &asked {
                    Ok(auth) => HostClientAuth::Protected(auth.clone()),
                    Err(()) => HostClientAuth::Broken {
                        owner: ing.key.to_string(),
                    },
                };
                (auth, ing.object())
            });
        }
    }
    if hosts.is_empty() {
        return HashMap::new();
    }
    // Pass 2: every other Ingress of those hosts that asks for something else.
    for ing in ours.iter().filter(|i| i.facts.annotations.not_routed.is_none()) {
        let asked = ingress_client_auth(ing);
        for host in &ing.facts.hosts {
            let Some((auth, owner)) = hosts.get(host) else {
                continue;
            };
            if **owner == *ing.object() {
                continue;
            }
            let why = match (auth, &asked) {
                (HostClientAuth::Protected(a), Some(Ok(mine))) if a == mine => continue,
                // Its own problem is reported with its annotations, and its paths answer 503.
                (_, Some(Err(()))) => continue,
                (HostClientAuth::Protected(_), Some(Ok(_))) => format!(
                    "client certificate authentication is per host and comes from {owner} (older); this Ingress's auth-tls-* differ and do not apply to the host"
                ),
                (HostClientAuth::Protected(_), None) => continue,
                (HostClientAuth::Broken { .. }, _) => format!(
                    "the client certificate authentication of {owner} (older) cannot be honoured, and it applies to every path of the host: this Ingress's paths there answer 503"
                ),
            };
            b.report(
                ing.object(),
                Problem::ClientCertConflict {
                    host: host_label(host),
                    why,
                },
            );
        }
    }
    hosts.into_iter().map(|(host, (auth, _))| (host, auth)).collect()
}

/// Puts the host's client authentication into a route's policies (a route that fails closed keeps
/// only its refusal).
fn apply_client_auth(policies: &mut Policies, auth: Option<&HostClientAuth>) {
    if policies.refusal.is_some() {
        return;
    }
    match auth {
        Some(HostClientAuth::Protected(auth)) => policies.client_cert = Some(auth.clone()),
        Some(HostClientAuth::Broken { owner }) => {
            *policies = refused(Refusal::new(format!(
                "the host's client certificate authentication (auth-tls-* of Ingress {owner}) cannot be honoured"
            )));
        }
        // No Ingress of the host has auth-tls-secret.
        None => policies.client_cert = None,
    }
}

/// The policies of one route of `ing`; a `rewrite-target` that does not fit the path adds a line to
/// `additions` for the annotation's report.
fn route_policies(
    ing: &OurIngress<'_>,
    path: &PathMatch,
    ssl_redirect: bool,
    additions: &mut Vec<(ObjectKey, String)>,
) -> Policies {
    let ann = &ing.facts.annotations;
    if let Some(refusal) = &ann.policies.refusal {
        return refused(refusal.clone());
    }
    let mut policies = ann.policies.clone();
    policies.https_redirect = ssl_redirect.then(HttpsRedirect::default);
    let written = path_text(path);
    // ingress-nginx rewrites only when the target differs from the path (`needsRewrite`).
    if let Some(target) = ann.rewrite_target.as_deref().filter(|t| *t != written) {
        match Rewrite::new(written, target) {
            Ok(rewrite) => policies.upstream.rewrite = Some(Arc::new(rewrite)),
            Err(e) => {
                additions.push((
                    ing.key.clone(),
                    format!("path {written}: {e}; that path answers 503"),
                ));
                return refused(Refusal::new(format!(
                    "rewrite-target {target:?} cannot be applied to path {written}: {e}"
                )));
            }
        }
    }
    policies
}

/// A route that answers 503 and does nothing else.
fn refused(refusal: Refusal) -> Policies {
    Policies {
        refusal: Some(refusal),
        ..Policies::default()
    }
}

fn path_text(path: &PathMatch) -> &str {
    match path {
        PathMatch::Exact(p) | PathMatch::Prefix(p) | PathMatch::Regex(p) | PathMatch::FullRegex(p) => p,
    }
}

/// Every `server-alias` gets the routes of its Ingress's hosts. An alias that is a rule's host (of
/// any of our Ingresses) is skipped: the explicit host wins, as in ingress-nginx. Of two Ingresses
/// naming the same alias, the older keeps it.
fn server_aliases(b: &mut Build<'_>, ours: &[OurIngress<'_>], added: &Added<'_>) {
    let mut explicit: HashMap<HostMatch, &ObjectRef> = HashMap::new();
    for ing in ours {
        for host in ing.facts.hosts.iter().cloned() {
            explicit.entry(host).or_insert(ing.object());
        }
    }
    let mut claimed: HashMap<HostMatch, &ObjectRef> = HashMap::new();
    for ing in ours.iter().filter(|i| i.facts.annotations.not_routed.is_none()) {
        if ing.facts.annotations.server_alias.is_empty() {
            continue;
        }
        let hosts: Vec<&HostMatch> = ing
            .facts
            .hosts
            .iter()
            .filter(|h| !matches!(h, HostMatch::Any))
            .collect();
        if hosts.is_empty() {
            if let Some(report) = b.annotation_report(ing.key, "server-alias") {
                report
                    .add_difference("the Ingress has no rule with a host: there is nothing to alias".into());
            }
            continue;
        }
        for alias in &ing.facts.annotations.server_alias {
            let Ok(alias_host) = parse_host(Some(alias)) else {
                continue;
            };
            let conflict = match (explicit.get(&alias_host), claimed.get(&alias_host)) {
                (Some(owner), _) => Some(format!("it is a host of {owner}, whose rules win")),
                (None, Some(owner)) if **owner != *ing.object() => {
                    Some(format!("it is already an alias of {owner} (older)"))
                }
                _ => None,
            };
            if let Some(why) = conflict {
                if let Some(report) = b.annotation_report(ing.key, "server-alias") {
                    report.add_difference(format!("{alias} skipped: {why}"));
                }
                b.report(
                    ing.object(),
                    Problem::ServerAliasConflict {
                        alias: alias.clone(),
                        why,
                    },
                );
                continue;
            }
            claimed.insert(alias_host.clone(), ing.object());
            for host in &hosts {
                for route in added.get(host).into_iter().flat_map(|t| t.routes()) {
                    // Two hosts of one Ingress aliased to one name: the first host's route keeps
                    // a path both have.
                    let _ = b.routes.add(alias_host.clone(), Route::clone(route));
                }
            }
        }
    }
}

/// `from-to-www-redirect`: each exact host of the Ingress gets its twin (`www.` added, or removed
/// when the host starts with it) as a host of its own whose every request is redirected (308) to
/// it, as ingress-nginx's redirect servers do. A twin that is a rule's host or a `server-alias` of
/// any of our Ingresses is skipped and reported: the explicit host wins, as ingress-nginx's
/// documentation says. Of two Ingresses asking for the same twin, the older one's route stays.
fn www_redirects(b: &mut Build<'_>, ours: &[OurIngress<'_>], added: &Added<'_>) {
    let mut taken: HashMap<HostMatch, String> = HashMap::new();
    for ing in ours {
        for host in ing.facts.hosts.iter().cloned() {
            taken
                .entry(host)
                .or_insert_with(|| format!("it is a host of {}", ing.object()));
        }
        for alias in &ing.facts.annotations.server_alias {
            if let Ok(host) = parse_host(Some(alias)) {
                taken
                    .entry(host)
                    .or_insert_with(|| format!("it is a server-alias of {}", ing.object()));
            }
        }
    }
    for ing in ours.iter().filter(|i| i.facts.annotations.not_routed.is_none()) {
        if !ing.facts.annotations.from_to_www_redirect {
            continue;
        }
        for host in &ing.facts.hosts {
            let HostMatch::Exact(name) = host else { continue };
            let twin = match name.strip_prefix("www.") {
                Some(bare) if !bare.is_empty() => bare.to_string(),
                _ => format!("www.{name}"),
            };
            let Ok(twin_host) = parse_host(Some(&twin)) else {
                continue;
            };
            if let Some(why) = taken.get(&twin_host) {
                if let Some(report) = b.annotation_report(ing.key, "from-to-www-redirect") {
                    report.add_difference(format!("{twin} is not redirected: {why}"));
                }
                b.report(
                    ing.object(),
                    Problem::WwwRedirectSkipped {
                        from: twin.clone(),
                        why: why.clone(),
                    },
                );
                continue;
            }
            // Any route of the host lends the redirect route its backend, which it never uses.
            let Some(template) = added.get(&host).and_then(|t| t.routes().first()) else {
                continue;
            };
            let route = Route {
                path: PathMatch::Prefix("/".into()),
                conditions: None,
                backend: template.backend.clone(),
                source: ing.source.clone(),
                policies: Arc::new(Policies {
                    host_redirect: Some(HostRedirect::new(name.clone())),
                    ..Policies::default()
                }),
            };
            // An older Ingress's redirect for the same twin keeps it.
            let _ = b.routes.add(twin_host, route);
        }
    }
}

pub(super) fn default_backend(b: &mut Build<'_>, ours: &[OurIngress<'_>], canaries: &mut [CanaryClaim]) {
    for ing in ours.iter().filter(|i| i.facts.annotations.not_routed.is_none()) {
        let Some(backend) = ing.ingress.spec.as_ref().and_then(|s| s.default_backend.as_ref()) else {
            continue;
        };
        let Some(backend) = backends::resolve(b, ing, backend, "defaultBackend") else {
            continue;
        };
        // The catch-all location: a canary's `spec.defaultBackend`, or a canary rule without host
        // for Prefix `/`, as ingress-nginx merges them into its catch-all server.
        let root = PathMatch::Prefix("/".into());
        let pick = pick_canary(canaries, |c| c.matches(&HostMatch::Any, &root), &backend);
        let mut policies = default_policies(ing);
        if policies.refusal.is_none() {
            // Reported with the Ingress's rules, when it has some.
            let report = ing
                .ingress
                .spec
                .as_ref()
                .and_then(|s| s.rules.as_ref())
                .is_none_or(|r| r.is_empty());
            policies.default_backend = annotation_default_backend(b, ing, report);
        }
        pick.apply(canaries, &mut policies);
        let route = Route {
            path: root,
            conditions: None,
            backend,
            source: ing.source.clone(),
            policies: Arc::new(policies),
        };
        let main_backend = route.backend.clone();
        match b.routes.set_default(route) {
            Ok(()) => pick.record(canaries, &main_backend),
            Err(RouteError::Conflict { existing, .. }) => {
                b.report(
                    ing.object(),
                    Problem::DefaultBackendConflict {
                        winner: source_name(&existing),
                    },
                );
            }
            Err(e) => {
                let problem = route_problem(e, &HostMatch::Any);
                b.report(ing.object(), problem);
            }
        }
    }
}

/// The default route's policies: the Ingress's access, limits and headers (ingress-nginx applies
/// an Ingress's annotations to the catch-all location its `defaultBackend` makes, except redirects
/// and rewrites). A request no rule matches has no host with a certificate to redirect to.
fn default_policies(ing: &OurIngress<'_>) -> Policies {
    let ann = &ing.facts.annotations;
    if let Some(refusal) = &ann.policies.refusal {
        return refused(refusal.clone());
    }
    Policies {
        redirect: None,
        app_root: None,
        https_redirect: None,
        // Client authentication is per host (see `host_client_auth`); the default route serves
        // requests for no host of ours, whose handshakes requested no certificate.
        client_cert: None,
        ..ann.policies.clone()
    }
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
