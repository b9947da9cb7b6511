//! Processor 1: which Ingresses are ours, and in which order they claim hosts and paths.

use std::{cell::RefCell, sync::Arc};

use gantry_proxy::{HostMatch, RouteSource};
use k8s_openapi::api::{
    core::v1::{ConfigMap, Secret},
    networking::v1::{Ingress, IngressClass},
};

use super::cache::Inputs;
use super::hosts::parse_host;
use super::{
    BackendMode, Build, IngressReport, OurIngress, Problem, Served, TranslateOptions,
    ANNOTATION_BACKEND_MODE, ANNOTATION_DEFAULT_CLASS, ANNOTATION_INGRESS_CLASS,
};
use crate::{
    annotations::{IngressAnnotations, References},
    diagnostic::{ObjectKind, ObjectRef},
    store::{Kind, ObjectKey, ObjectStore},
};

/// Our Ingresses, oldest first, with their annotations read (problems with those are reported):
/// `gantry.dev/backend-mode` here, the ingress-nginx ones by [`crate::annotations::parse`], whose
/// reports go into the build.
pub(super) fn ours<'a>(b: &mut Build<'a>) -> Vec<OurIngress<'a>> {
    let selected = select(b.store, b.opts);
    let mut ours = Vec::with_capacity(selected.len());
    let default_mode = b.settings.backend_mode;
    for (key, ingress, revision) in selected {
        let facts = facts_of(b, key, ingress, revision, default_mode);
        if let Some(problem) = &facts.mode_problem {
            b.report(&facts.object, problem.clone());
        }
        b.annotation_reports.push((key, facts.report.clone()));
        // (Processors add to reports only after this loop; an index made before would miss this.)
        b.report_index = None;
        ours.push(OurIngress {
            key,
            ingress,
            source: facts.source.clone(),
            backend_mode: facts.backend_mode,
            facts,
        });
    }
    ours
}

/// What the later processors read of one of our Ingresses besides its spec, worked out once per
/// revision of the Ingress and its annotations (and the default backend mode), and kept across
/// builds: a build where one Ingress changed works out that one only. A new `Arc` stands for a
/// change: the route processor reuses a host's routes while the facts of its Ingresses are the
/// same `Arc`s.
#[derive(Debug)]
pub(super) struct IngressFacts {
    /// The Ingress, for diagnostics.
    pub(super) object: ObjectRef,
    pub(super) source: RouteSource,
    pub(super) backend_mode: BackendMode,
    /// An unknown `gantry.dev/backend-mode`.
    mode_problem: Option<Problem>,
    /// What its annotations did, before the processors add to it.
    pub(super) report: Arc<IngressReport>,
    /// Each rule's host, parsed, in rule order.
    pub(super) rule_hosts: Vec<Result<HostMatch, &'static str>>,
    /// The hosts of its rules that parse, in order, without repeats.
    pub(super) hosts: Vec<HostMatch>,
    /// Its `spec.tls` hosts, lowercase.
    pub(super) tls_hosts: Vec<String>,
    /// By rule: whether the rule's host is in its own `spec.tls` (most are), so that the route
    /// processor looks at every Ingress's TLS hosts only for the rules where this is false.
    pub(super) rule_in_own_tls: Vec<bool>,
    /// The hosts its annotations put in regex mode (see `rules::routes`).
    pub(super) regex_hosts: Vec<HostMatch>,
    /// Its `spec.tls` entries, read.
    pub(super) tls_entries: Vec<TlsEntry>,
    /// What the status writer needs of it.
    pub(super) served: Arc<Served>,
    /// Its ingress-nginx annotations, read.
    pub(super) annotations: Arc<IngressAnnotations>,
    /// It uses something whose effect reaches beyond its own hosts' routes: `canary` (or it is
    /// not routed), `default-backend`, `server-alias`, `from-to-www-redirect`, `auth-tls-*`
    /// (client authentication is per host, from every Ingress on it). A build with any such
    /// Ingress is never patched ([`super::patch`]).
    pub(super) cross: bool,
    /// Not [`Self::cross`], no `spec.defaultBackend`, and nothing of it is reported (its
    /// annotations, hosts and TLS hosts are all as they should be): a change to it or of it is
    /// one a build may patch in.
    pub(super) plain: bool,
}

/// One `spec.tls` entry of an Ingress.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TlsEntry {
    /// Its hosts that can have a certificate, lowercase.
    pub(super) hosts: Vec<String>,
    /// Its hosts that are not valid names, with why.
    pub(super) invalid: Vec<(String, &'static str)>,
    /// Its Secret, in the Ingress's namespace; `None` without `secretName` (the hosts are served
    /// the default certificate).
    pub(super) secret: Option<ObjectKey>,
}

/// What [`IngressFacts`] were made from.
pub(super) struct FactsInputs {
    /// The Ingress's.
    revision: Option<u64>,
    /// The Ingress's `metadata.generation` (for [`IngressFacts::served`]): the store's revision
    /// moves with the spec, which is what moves it, but a store fed by files or tests may say
    /// otherwise.
    generation: Option<i64>,
    /// The Secrets and ConfigMaps its annotations read.
    references: Inputs,
    default_mode: BackendMode,
}

impl IngressFacts {
    fn of(
        key: &ObjectKey,
        ingress: &Ingress,
        annotations: Arc<IngressAnnotations>,
        default_mode: BackendMode,
    ) -> Self {
        let object = ObjectRef::of(ObjectKind::Ingress, key, &ingress.metadata);
        let mut mode_problem = None;
        let backend_mode = match annotation(ingress, ANNOTATION_BACKEND_MODE) {
            None => default_mode,
            Some("node-port") => BackendMode::NodePort,
            Some("endpoints") => BackendMode::Endpoints,
            Some(other) => {
                mode_problem = Some(Problem::InvalidAnnotation {
                    annotation: ANNOTATION_BACKEND_MODE,
                    value: other.to_string(),
                    expected: "node-port or endpoints",
                    fallback: format!("{default_mode:?}"),
                });
                default_mode
            }
        };
        // ingress-nginx's `service-upstream` names the mode for the Ingress's own backends.
        let backend_mode = if annotations.service_upstream {
            BackendMode::ClusterIp
        } else {
            backend_mode
        };
        let spec = ingress.spec.as_ref();
        let rules = spec.and_then(|s| s.rules.as_deref()).unwrap_or_default();
        let rule_hosts: Vec<_> = rules.iter().map(|r| parse_host(r.host.as_deref())).collect();
        let mut hosts: Vec<HostMatch> = Vec::new();
        for host in rule_hosts.iter().flatten() {
            if !hosts.contains(host) {
                hosts.push(host.clone());
            }
        }
        let mut regex_hosts = Vec::new();
        for (rule, host) in rules.iter().zip(&rule_hosts) {
            let (Ok(host), Some(http)) = (host, &rule.http) else {
                continue;
            };
            let on = http.paths.iter().any(|p| {
                let written = p.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
                annotations.regex_mode_for(written)
            });
            if on && !regex_hosts.contains(host) {
                regex_hosts.push(host.clone());
            }
        }
        let tls_entries: Vec<TlsEntry> = spec
            .and_then(|s| s.tls.as_ref())
            .into_iter()
            .flatten()
            .map(|entry| {
                let (mut hosts, mut invalid) = (Vec::new(), Vec::new());
                for host in entry.hosts.iter().flatten() {
                    match parse_host(Some(host)) {
                        // An empty host (a rule for any host) has no SNI name to file a
                        // certificate under.
                        Ok(HostMatch::Any) => {}
                        Ok(_) => hosts.push(host.to_ascii_lowercase()),
                        Err(why) => invalid.push((host.clone(), why)),
                    }
                }
                let secret = entry
                    .secret_name
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .map(|name| ObjectKey::new(key.namespace.as_str(), name));
                hosts.shrink_to_fit();
                TlsEntry {
                    hosts,
                    invalid,
                    secret,
                }
            })
            .collect();
        let tls_hosts: Vec<String> = spec
            .and_then(|s| s.tls.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|tls| tls.hosts.as_ref())
            .flatten()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let rule_in_own_tls = rule_hosts
            .iter()
            .map(|host| {
                host.as_ref()
                    .is_ok_and(|host| super::hosts::is_tls_host(host, |h| tls_hosts.iter().any(|t| t == h)))
            })
            .collect();
        let cross = annotations.canary.is_some()
            || annotations.not_routed.is_some()
            || annotations.default_backend.is_some()
            || !annotations.server_alias.is_empty()
            || annotations.from_to_www_redirect
            || annotations.policies.client_cert.is_some()
            || annotations
                .reports
                .iter()
                .any(|r| r.name().starts_with("auth-tls-"));
        let plain = !cross
            && mode_problem.is_none()
            && spec.and_then(|s| s.default_backend.as_ref()).is_none()
            && rule_hosts.iter().all(Result::is_ok)
            && tls_entries.iter().all(|e: &TlsEntry| e.invalid.is_empty())
            && annotations
                .reports
                .iter()
                .all(|r| Problem::of_report(r).is_none());
        // Kept for as long as the Ingress is (one per Ingress): without the room pushing left.
        hosts.shrink_to_fit();
        let mut tls_hosts = tls_hosts;
        tls_hosts.shrink_to_fit();
        Self {
            cross,
            plain,
            rule_in_own_tls,
            source: RouteSource {
                kind: gantry_proxy::SourceKind::Ingress,
                namespace: Arc::from(key.namespace.as_str()),
                name: Arc::from(key.name.as_str()),
            },
            object,
            backend_mode,
            mode_problem,
            report: Arc::new(IngressReport {
                ingress: key.to_string(),
                fails_closed: annotations.fails_closed().map(str::to_string),
                not_routed: annotations.not_routed.clone(),
                annotations: annotations.reports.clone(),
            }),
            rule_hosts,
            hosts,
            tls_hosts,
            regex_hosts,
            tls_entries,
            served: Arc::new(Served::of(key, ingress)),
            annotations,
        }
    }
}

/// The facts of one Ingress (with its ingress-nginx annotations, read), worked out once per
/// revision of the Ingress (`revision`, found on the walk over the store's Ingresses) and of the
/// Secrets and ConfigMaps its annotations read: one lookup per Ingress per build.
pub(super) fn facts_of(
    b: &mut Build<'_>,
    key: &ObjectKey,
    ingress: &Ingress,
    revision: Option<u64>,
    default_mode: BackendMode,
) -> Arc<IngressFacts> {
    let store = b.store;
    let unchanged = &b.unchanged;
    b.cache.ingresses.get(
        key,
        |inputs| {
            inputs.revision == revision
                && inputs.generation == ingress.metadata.generation
                && inputs.default_mode == default_mode
                && inputs.references.hold(store, unchanged)
        },
        || {
            let reading = Reading {
                store,
                inputs: RefCell::new(Inputs::default()),
            };
            let parsed = crate::annotations::parse(key, ingress.metadata.annotations.as_ref(), &reading);
            let inputs = FactsInputs {
                revision,
                generation: ingress.metadata.generation,
                references: reading.inputs.into_inner(),
                default_mode,
            };
            let facts = IngressFacts::of(key, ingress, crate::annotations::shared(parsed), default_mode);
            (Arc::new(facts), inputs)
        },
    )
}

/// The store, writing down what the annotation parsers read from it.
struct Reading<'a> {
    store: &'a ObjectStore,
    inputs: RefCell<Inputs>,
}

impl References for Reading<'_> {
    fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        let key = ObjectKey::new(namespace, name);
        self.inputs.borrow_mut().read(self.store, Kind::Secret, key);
        self.store.secret(namespace, name)
    }

    fn config_map(&self, namespace: &str, name: &str) -> Option<&ConfigMap> {
        let key = ObjectKey::new(namespace, name);
        self.inputs.borrow_mut().read(self.store, Kind::ConfigMap, key);
        self.store.config_map(namespace, name)
    }
}

/// Our Ingresses, oldest first: by `metadata.creationTimestamp`, then namespace and name. An
/// Ingress without a timestamp (written by hand into a manifest file, never seen by an API server)
/// sorts after all that have one, so a file can never take a path away from a live object.
pub(super) fn select<'a>(
    store: &'a ObjectStore,
    opts: &TranslateOptions,
) -> Vec<(&'a ObjectKey, &'a Ingress, Option<u64>)> {
    let mut ours = Vec::with_capacity(store.ingresses().len());
    ours.extend(selected(store, opts));
    // The store's map yields them by key, so a stable sort by age alone leaves Ingresses of the
    // same age by key: the order is total and never depends on map order. (Comparing keys in
    // the sort instead would compare strings for every pair created in the same second, which is
    // most pairs after a bulk apply.)
    ours.sort_by(|(_, a, _), (_, b, _)| {
        let age = |ing: &'a Ingress| {
            let created = ing.metadata.creation_timestamp.as_ref();
            (created.is_none(), created)
        };
        age(a).cmp(&age(b))
    });
    ours
}

/// Our Ingresses, by key (not by age), each with its store revision: for answers that need the
/// set, not the order.
pub(super) fn selected<'s: 'o, 'o>(
    store: &'s ObjectStore,
    opts: &'o TranslateOptions,
) -> impl Iterator<Item = (&'s ObjectKey, &'s Ingress, Option<u64>)> + 'o {
    let default_is_ours = default_is_ours(store, opts);
    store
        .ingresses_with_revisions()
        .filter(move |(_, ing, _)| is_ours(ing, store, opts, default_is_ours))
}

/// Whether one of our IngressClasses is marked as the default class.
pub(super) fn default_is_ours(store: &ObjectStore, opts: &TranslateOptions) -> bool {
    store.ingress_classes().values().any(|class| {
        is_our_class(class, opts) && annotation_of(&class.metadata, ANNOTATION_DEFAULT_CLASS) == Some("true")
    })
}

/// Whether an Ingress is ours:
/// - `spec.ingressClassName` set: it equals our class name, or names an IngressClass whose
///   `spec.controller` is ours.
/// - no class name, legacy `kubernetes.io/ingress.class` annotation set: the same test on its value.
///   The annotation decides alone, as in Kubernetes' own default-class admission: an Ingress that
///   names another controller's class this way is never taken by a default class.
/// - neither: ours when one of our IngressClasses is marked as the default class.
pub(super) fn is_ours(
    ing: &Ingress,
    store: &ObjectStore,
    opts: &TranslateOptions,
    default_is_ours: bool,
) -> bool {
    let class_name = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .filter(|c| !c.is_empty());
    match class_name.or_else(|| annotation(ing, ANNOTATION_INGRESS_CLASS).filter(|c| !c.is_empty())) {
        Some(class) => {
            class == opts.ingress_class || store.ingress_class(class).is_some_and(|c| is_our_class(c, opts))
        }
        None => default_is_ours,
    }
}

pub(super) fn is_our_class(class: &IngressClass, opts: &TranslateOptions) -> bool {
    class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(opts.controller_name.as_str())
}

fn annotation<'a>(ing: &'a Ingress, name: &str) -> Option<&'a str> {
    annotation_of(&ing.metadata, name)
}

fn annotation_of<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    name: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(name).map(String::as_str)
}
