//! A build that patches the last one instead of going over every Ingress.
//!
//! A build from the cache ([`super::TranslateCache`]) compiles only the hosts whose inputs moved,
//! but it still visits every one of our Ingresses and every host: class selection and age order,
//! one memo lookup each, grouping the rules by host, and the route table's host index. At ten
//! thousand Ingresses that is most of a build after a one-Ingress change. This build starts from
//! what the last one made (kept here as a [`Prior`]) and from what the store says changed since
//! ([`ObjectStore::ingresses_touched_since`], [`ObjectStore::services_touched_since`]):
//!
//! 1. each changed Ingress leaves the age order and the rule groups of its old hosts, and enters
//!    them again as it is now (or not, when it is gone or no longer ours);
//! 2. the hosts it had or has, and the hosts with a backend of a Service whose endpoints changed,
//!    are compiled again from their rules, exactly as a whole build compiles a host
//!    (`rules::patched_host`, sharing its memo);
//! 3. the route table is the last one with those hosts' tables replaced
//!    ([`gantry_proxy::RouteTable::patched`]); everything else (certificates, settings, the
//!    default route, diagnostics, the Gateway API's status) is the last build's.
//!
//! That is what a whole build gives only when nothing else can have moved, so a patch is made
//! only when all of these hold, and otherwise the build is a whole one (which keeps a new
//! [`Prior`] when it may):
//!
//! - no object of any other kind changed (IngressClasses, Secrets, ConfigMaps, Nodes,
//!   ProxyConfigs, the Gateway API's), the options and the settings are the same, and the store
//!   can say which Ingresses and Services changed (at most [`MAX_TOUCHED`] Ingresses);
//! - no Gateway, HTTPRoute or GRPCRoute exists (their routes share the table), and every
//!   `spec.tls` Secret gave a certificate;
//! - none of our Ingresses uses what reaches beyond its own hosts (canaries, `default-backend`,
//!   `server-alias`, `from-to-www-redirect`, client authentication: [`IngressFacts::cross`]);
//! - each changed Ingress, before and after, is [`IngressFacts::plain`] (nothing of it reported,
//!   no `spec.defaultBackend`), and its `spec.tls` is the same unless it had and has none;
//! - the hosts compiled again reported nothing, before and after;
//! - after an endpoint change, there is no default route (its backend is not tracked here).
//!
//! The property test (`tests/incremental.rs`) checks that every build equals a build from
//! nothing, and that builds of its Ingress-only steps are patches.

use std::{
    borrow::Borrow,
    hash::{Hash, Hasher},
    sync::Arc,
};

use gantry_proxy::{CertTable, HostMatch, RouteTable, Snapshot};
use k8s_openapi::{api::networking::v1::Ingress, apimachinery::pkg::apis::meta::v1::Time};

use super::{
    cache::CacheStats,
    class::{self, IngressFacts},
    gateway::GatewayApiStatus,
    rules::{self, FastSet, HostUnit},
    settings::{self, Settings},
    Build, IngressReport, OurIngress, Served, TranslateCache, TranslateOptions, Translation,
};
use crate::{
    diagnostic::Diagnostic,
    store::{Kind, ObjectKey, ObjectStore},
};

/// At most this many Ingress changes since the last build for a patch; more (a rollout, a relist)
/// make a whole build.
pub(super) const MAX_TOUCHED: usize = 256;

/// After this many patches in a row, a whole build: it sweeps the caches of what no route uses
/// any more (a patch drops the entries of what it removes, not of backends no route uses).
const MAX_PATCHES: u32 = 1024;

/// The revision of every kind but those a patch follows (Ingresses, Services, EndpointSlices):
/// a patch needs these unchanged since the last build. (Any kind added later is in it.)
fn frozen_kinds(store: &ObjectStore) -> [u64; Kind::ALL.len()] {
    Kind::ALL.map(|kind| match kind {
        Kind::Ingress | Kind::Service | Kind::EndpointSlice => 0,
        _ => store.kind_revision(kind),
    })
}

/// One host as processor 2 made it in a whole build: the host, its rules (index in our Ingresses,
/// index of the rule) and its routes.
pub(super) type RecordedHost = (HostMatch, Vec<(usize, usize)>, Arc<HostUnit>);

/// Where an Ingress is in the age order our Ingresses claim hosts and paths in: by creation
/// timestamp (none last), then by key, as [`class::select`] orders them.
#[derive(Clone, Debug)]
pub(super) struct Age {
    created: Option<Time>,
    /// The Ingress's key, shared with its facts.
    served: Arc<Served>,
}

impl Age {
    fn of(ingress: &Ingress, facts: &IngressFacts) -> Self {
        Self {
            created: ingress.metadata.creation_timestamp.clone(),
            served: facts.served.clone(),
        }
    }

    fn key(&self) -> &ObjectKey {
        &self.served.key
    }

    fn order(&self) -> (bool, Option<&Time>, &ObjectKey) {
        (self.created.is_none(), self.created.as_ref(), self.key())
    }
}

impl PartialEq for Age {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}

impl Eq for Age {}

impl PartialOrd for Age {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Age {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

/// An [`Age`] found by the Ingress's key.
struct ByKey(Age);

impl Hash for ByKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key().hash(state);
    }
}

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for ByKey {}

impl Borrow<ObjectKey> for ByKey {
    fn borrow(&self) -> &ObjectKey {
        self.0.key()
    }
}

/// One of our Ingresses as the last build left it.
struct PriorIngress {
    age: Age,
    facts: Arc<IngressFacts>,
    /// Its annotations' report, with what the processors added.
    report: Arc<IngressReport>,
}

/// One host's rules, oldest Ingress first, and the routes made of them (`None` for a host that
/// has rules only since this patch began).
struct PriorHost {
    members: Vec<(Age, usize)>,
    unit: Option<Arc<HostUnit>>,
}

/// What the last build made, for the next to patch.
pub(super) struct Prior {
    opts: TranslateOptions,
    /// The kinds' revisions ([`frozen_kinds`]).
    kinds: [u64; Kind::ALL.len()],
    settings: Settings,
    /// What resolving the settings reported.
    settings_diagnostics: Vec<Diagnostic>,
    /// Our Ingresses, oldest first.
    ours: Vec<PriorIngress>,
    ages: FastSet<ByKey>,
    hosts: foldhash::HashMap<HostMatch, PriorHost>,
    /// Every `spec.tls` host of every one of our Ingresses.
    tls_hosts: FastSet<String>,
    /// By Service: the hosts with a backend of it. Made by the first patch after an endpoint
    /// change, then kept up to date.
    service_hosts: Option<foldhash::HashMap<ObjectKey, Vec<HostMatch>>>,
    routes: RouteTable,
    certs: CertTable,
    diagnostics: Vec<Diagnostic>,
    gateway: GatewayApiStatus,
    /// Patches since the last whole build.
    patches: u32,
}

/// Whether a whole build with these Ingresses may be kept for the next to patch (the rest of the
/// conditions are known only at its end).
pub(super) fn may_record(store: &ObjectStore, ours: &[OurIngress<'_>]) -> bool {
    store.gateways().is_empty()
        && store.http_routes().is_empty()
        && store.grpc_routes().is_empty()
        && !ours.iter().any(|i| i.facts.cross)
}

impl Prior {
    /// Keeps a whole build `t` of `ours`, whose processor 2 made `hosts`.
    pub(super) fn record(
        store: &ObjectStore,
        opts: &TranslateOptions,
        settings: Settings,
        settings_diagnostics: Vec<Diagnostic>,
        ours: &[OurIngress<'_>],
        t: &Translation,
        hosts: Vec<RecordedHost>,
    ) -> Self {
        let ages: Vec<Age> = ours.iter().map(|i| Age::of(i.ingress, &i.facts)).collect();
        let mut by_host = foldhash::HashMap::default();
        by_host.reserve(hosts.len());
        for (host, members, unit) in hosts {
            let members = members.into_iter().map(|(i, r)| (ages[i].clone(), r)).collect();
            by_host.insert(
                host,
                PriorHost {
                    members,
                    unit: Some(unit),
                },
            );
        }
        Self {
            opts: opts.clone(),
            kinds: frozen_kinds(store),
            settings,
            settings_diagnostics,
            ages: ages.iter().cloned().map(ByKey).collect(),
            ours: ours
                .iter()
                .zip(ages)
                .zip(&t.annotations)
                .map(|((i, age), report)| PriorIngress {
                    age,
                    facts: i.facts.clone(),
                    report: report.clone(),
                })
                .collect(),
            hosts: by_host,
            tls_hosts: ours
                .iter()
                .flat_map(|i| i.facts.tls_hosts.iter().cloned())
                .collect(),
            service_hosts: None,
            routes: t.snapshot.routes.clone(),
            certs: t.snapshot.certs.clone(),
            diagnostics: t.diagnostics.clone(),
            gateway: t.gateway.clone(),
            patches: 0,
        }
    }

    fn position(&self, age: &Age) -> Result<usize, usize> {
        self.ours.binary_search_by(|p| p.age.cmp(age))
    }

    /// Indexes the hosts by the Services of their backends.
    fn index_services(&mut self) -> &mut foldhash::HashMap<ObjectKey, Vec<HostMatch>> {
        let hosts = &self.hosts;
        self.service_hosts.get_or_insert_with(|| {
            let mut index: foldhash::HashMap<ObjectKey, Vec<HostMatch>> = foldhash::HashMap::default();
            for (host, entry) in hosts {
                for service in entry.unit.iter().flat_map(|u| services_of(u)) {
                    index.entry(service.clone()).or_default().push(host.clone());
                }
            }
            index
        })
    }
}

/// An Ingress's `spec.tls` as read (entries and hosts); none for no Ingress.
fn tls_of(facts: Option<&Arc<IngressFacts>>) -> (&[super::class::TlsEntry], &[String]) {
    facts
        .map(|f| (&f.tls_entries[..], &f.tls_hosts[..]))
        .unwrap_or_default()
}

/// The Services of a host's backends, each once.
fn services_of(unit: &HostUnit) -> Vec<&ObjectKey> {
    let mut services: Vec<&ObjectKey> = unit.backends.iter().map(|(key, _)| key.service()).collect();
    services.sort_unstable();
    services.dedup();
    services
}

/// The build for `store` made by patching the last one, when it may be ([`self`]); `None`: make
/// a whole build (the cache is as it was, but for entries made on the way, which stay valid).
pub(super) fn patch(
    store: &ObjectStore,
    opts: &TranslateOptions,
    previous: &Snapshot,
    cache: &mut TranslateCache,
) -> Option<Translation> {
    let mut prior = cache.prior.take()?;
    if prior.patches >= MAX_PATCHES || prior.opts != *opts || prior.kinds != frozen_kinds(store) {
        return None;
    }
    let mark = cache.last_mark()?;
    let mut touched: Vec<ObjectKey> = store
        .ingresses_touched_since(mark)?
        .take(MAX_TOUCHED + 1)
        .cloned()
        .collect();
    if touched.len() > MAX_TOUCHED {
        return None;
    }
    touched.sort_unstable();
    touched.dedup();
    let unchanged = cache.peek(store);
    if !unchanged.backends && unchanged.touched_services.is_none() {
        return None;
    }
    let services: Vec<ObjectKey> = unchanged.touched_services.iter().flatten().cloned().collect();
    if !services.is_empty() && prior.routes.default_route().is_some() {
        return None;
    }

    let mut b = Build::with(store, opts, previous, &mut *cache, unchanged);
    b.settings = settings::resolve(&mut b);
    if b.settings != prior.settings || b.diagnostics != prior.settings_diagnostics {
        return None;
    }
    let default_mode = b.settings.backend_mode;
    let default_is_ours = class::default_is_ours(store, opts);

    // 1. The changed Ingresses leave and enter the age order and their hosts' rules.
    let mut dirty: FastSet<HostMatch> = FastSet::default();
    let mut gone = Vec::new();
    for key in &touched {
        let old = match prior.ages.get(key) {
            Some(ByKey(age)) => Some(prior.position(age).ok()?),
            None => None,
        };
        let now = store
            .ingresses()
            .get_key_value(key)
            .filter(|(_, ing)| class::is_ours(ing, store, opts, default_is_ours))
            .map(|(key, ing)| {
                let revision = store.revision(Kind::Ingress, key);
                let facts = class::facts_of(&mut b, key, ing, revision, default_mode);
                (Age::of(ing, &facts), ing, facts)
            });
        let old_facts = old.map(|at| &prior.ours[at].facts);
        if old_facts.is_some_and(|f| !f.plain) || now.as_ref().is_some_and(|(_, _, f)| !f.plain) {
            return None;
        }
        // Which host has which certificate, and which hosts redirect to HTTPS, depend on every
        // Ingress's `spec.tls` in age order: the same entries in the same place only.
        let (old_tls, new_tls) = (tls_of(old_facts), tls_of(now.as_ref().map(|(_, _, f)| f)));
        if !(old_tls.0.is_empty() && old_tls.1.is_empty() && new_tls.0.is_empty() && new_tls.1.is_empty()) {
            let same_place = match (old, &now) {
                (Some(at), Some((age, _, _))) => prior.ours[at].age == *age,
                _ => false,
            };
            if !same_place || old_tls != new_tls {
                return None;
            }
        }
        if let Some(at) = old {
            let left = prior.ours.remove(at);
            prior.ages.remove(key);
            for host in &left.facts.hosts {
                if let Some(entry) = prior.hosts.get_mut(host) {
                    entry.members.retain(|(age, _)| age.key() != key);
                }
                dirty.insert(host.clone());
            }
        }
        match now {
            Some((age, ing, facts)) => {
                let rules = ing
                    .spec
                    .as_ref()
                    .and_then(|s| s.rules.as_deref())
                    .unwrap_or_default();
                for (r, (rule, host)) in rules.iter().zip(&facts.rule_hosts).enumerate() {
                    let (Ok(host), Some(_)) = (host, &rule.http) else {
                        continue;
                    };
                    let entry = prior.hosts.entry(host.clone()).or_insert_with(|| PriorHost {
                        members: Vec::new(),
                        unit: None,
                    });
                    let member = (age.clone(), r);
                    let at = entry.members.partition_point(|m| *m < member);
                    entry.members.insert(at, member);
                }
                dirty.extend(facts.hosts.iter().cloned());
                let at = prior.position(&age).err()?;
                prior.ages.insert(ByKey(age.clone()));
                prior.ours.insert(
                    at,
                    PriorIngress {
                        age,
                        report: facts.report.clone(),
                        facts,
                    },
                );
            }
            None => gone.push(key),
        }
    }
    // The hosts with a backend of a Service whose endpoints changed.
    if !services.is_empty() {
        let index = prior.index_services();
        for service in &services {
            dirty.extend(index.get(service).into_iter().flatten().cloned());
        }
    }

    // 2. Those hosts compiled again, from their rules as they are now.
    let trust = rules::trust(&mut b);
    let mut changes = Vec::with_capacity(dirty.len());
    for host in dirty {
        let Some(entry) = prior.hosts.get(&host) else {
            continue;
        };
        let reported = |u: &HostUnit| !u.diagnostics.is_empty() || !u.additions.is_empty();
        if entry.unit.as_deref().is_some_and(reported) {
            return None;
        }
        let unit = if entry.members.is_empty() {
            None
        } else {
            let mut ours: Vec<OurIngress<'_>> = Vec::new();
            let mut members = Vec::with_capacity(entry.members.len());
            for (age, r) in &entry.members {
                let i = match ours.iter().position(|o| o.key == age.key()) {
                    Some(i) => i,
                    None => {
                        let facts = &prior.ours[prior.position(age).ok()?].facts;
                        let (key, ingress) = store.ingresses().get_key_value(age.key())?;
                        ours.push(OurIngress {
                            key,
                            ingress,
                            source: facts.source.clone(),
                            backend_mode: facts.backend_mode,
                            facts: facts.clone(),
                        });
                        ours.len() - 1
                    }
                };
                members.push((i, *r));
            }
            let unit = rules::patched_host(&mut b, &ours, &host, &members, &prior.tls_hosts, trust);
            if reported(&unit) {
                return None;
            }
            Some(unit)
        };
        let entry = prior.hosts.get_mut(&host)?;
        let old = std::mem::replace(&mut entry.unit, unit.clone());
        if unit.is_none() {
            prior.hosts.remove(&host);
            b.cache.hosts.remove(&host);
        }
        if let Some(index) = &mut prior.service_hosts {
            for service in old.iter().flat_map(|u| services_of(u)) {
                if let Some(hosts) = index.get_mut(service) {
                    hosts.retain(|h| *h != host);
                }
            }
            for service in unit.iter().flat_map(|u| services_of(u)) {
                index.entry(service.clone()).or_default().push(host.clone());
            }
        }
        changes.push((host, unit.and_then(|u| u.table.clone())));
    }

    // 3. The last build's table with those hosts replaced; the rest as it was.
    let routes = prior.routes.patched(changes);
    for key in gone {
        b.cache.ingresses.remove(key);
    }
    // Nothing was swept: every entry stays (each is checked against its inputs when used).
    b.cache.ingresses.skip_stamps();
    b.cache.hosts.skip_stamps();
    b.cache.backends.skip_stamps();
    b.cache.certs.skip_stamps();
    let config = b.settings.config.clone();
    drop(b);
    let stats = cache.finish();
    cache.advance(store);
    let t = Translation {
        snapshot: Snapshot {
            generation: 0,
            routes,
            address_routes: Vec::new(),
            certs: prior.certs.clone(),
            config,
        },
        diagnostics: prior.diagnostics.clone(),
        annotations: prior.ours.iter().map(|p| p.report.clone()).collect(),
        gateway: prior.gateway.clone(),
        cache: CacheStats {
            patched: true,
            ..stats
        },
        served: prior.ours.iter().map(|p| p.facts.served.clone()).collect(),
    };
    prior.routes = t.snapshot.routes.clone();
    prior.patches += 1;
    cache.prior = Some(prior);
    Some(t)
}
