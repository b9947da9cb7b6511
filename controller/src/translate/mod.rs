//! Objects in the store → one routing [`Snapshot`].
//!
//! [`translate`] is a pure function (no I/O, no clock, no globals) run as a chain of small
//! processors over the store, in the spirit of Contour's `dag.Builder`:
//!
//! 0. **settings** (`settings`): the flags, overridden by the `ProxyConfig` our IngressClass names
//!    in `spec.parameters`: the data path's settings for this snapshot, the default backend mode
//!    and the default certificate.
//! 1. **class** (`class`): which Ingresses are ours, oldest first. Age order is what resolves
//!    every later conflict, so it is decided once, here.
//! 2. **rules** (`rules::routes`): hosts and paths of every rule, merged across Ingresses; each
//!    path's backend is resolved by
//! 3. **backends** (`backends`): Service → port → EndpointSlices (or nodes' node ports), one
//!    shared `Arc<Backend>` per distinct backend.
//! 4. **TLS** (`tls`): `spec.tls` Secrets → the SNI certificate table, carrying a host's last good
//!    certificate over when its Secret goes missing or breaks, plus the default certificate; and,
//!    once the routes are built, which SNI names request a client certificate (`tls::client_cas`,
//!    from the hosts' `auth-tls-*`).
//! 5. **default backend** (`rules::default_backend`): the oldest `spec.defaultBackend` wins.
//!
//! Canary Ingresses (`canary: "true"`) are read before the rules (`rules::canaries`): each of
//! their paths waits for the main route with the same host and path, which takes it as its canary;
//! what found no main route is reported last (`rules::report_canaries`).
//!
//! Choices the Ingress API leaves to the controller:
//! - `pathType: ImplementationSpecific` (and a missing `pathType`) matches like `Prefix`.
//! - An Ingress without `ingressClassName` but with the legacy `kubernetes.io/ingress.class`
//!   annotation is judged by the annotation alone; a default IngressClass only claims Ingresses
//!   that name no class at all (as Kubernetes' own admission plugin does).
//! - A `spec.tls` entry without `secretName` serves its hosts the default certificate.
//! - A host listed in `spec.tls` redirects plain HTTP to HTTPS (308) unless its Ingress says
//!   `nginx.ingress.kubernetes.io/ssl-redirect: "false"`.
//!
//! ingress-nginx annotations (`nginx.ingress.kubernetes.io/*`) are read once per Ingress by
//! [`crate::annotations::parse`] into the typed [`Policies`](gantry_proxy::Policies) of its routes;
//! what each annotation did is in [`Translation::annotations`], and every annotation that is
//! invalid, refused or unknown is also a diagnostic. An Ingress whose access or authentication
//! annotations cannot be honoured fails closed: its paths are routed and answer 503. When an
//! Ingress of a host has `use-regex` or `rewrite-target`, every Prefix and ImplementationSpecific
//! path of that host (from every Ingress) is a case-insensitive regex, as in ingress-nginx.
//!
//! A problem with one object never stops the others: it becomes a [`Diagnostic`] on that object
//! (see [`Problem`] for the reasons) and the offending rule, path or certificate is skipped, or
//! routed to a backend that answers 503 when that tells the user more than a 404 would.

mod backends;
mod cache;
mod class;
pub mod gateway;
pub(crate) mod hosts;
mod patch;
mod rules;
mod settings;
mod tls;

#[cfg(test)]
mod tests;

pub use cache::{CacheStats, TranslateCache};

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use gantry_proxy::{CertTable, RouteSource, RouteTableBuilder, Snapshot, TlsCert};
use k8s_openapi::api::networking::v1::Ingress;
use serde::Serialize;

use crate::{
    annotations::{AnnotationReport, Outcome, ReferenceKind},
    diagnostic::{Diagnostic, ObjectKind, ObjectRef},
    store::{self, ObjectKey, ObjectStore},
};

/// `kubernetes.io/ingress.class`: the class of an Ingress written before `ingressClassName`.
pub const ANNOTATION_INGRESS_CLASS: &str = "kubernetes.io/ingress.class";
/// `ingressclass.kubernetes.io/is-default-class: "true"` on an IngressClass makes it the class of
/// Ingresses that name none.
pub const ANNOTATION_DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";
/// `gantry.dev/backend-mode: node-port | endpoints` on an Ingress overrides
/// [`TranslateOptions::backend_mode`] for its backends.
pub const ANNOTATION_BACKEND_MODE: &str = "gantry.dev/backend-mode";
/// `nginx.ingress.kubernetes.io/ssl-redirect: "false"` turns the HTTP → HTTPS redirect off for the
/// Ingress's routes (the nginx spelling, so that existing manifests keep working).
pub const ANNOTATION_SSL_REDIRECT: &str = "nginx.ingress.kubernetes.io/ssl-redirect";

/// Where a backend's endpoints come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendMode {
    /// Pod IPs and ports from the Service's EndpointSlices (the default).
    #[default]
    Endpoints,
    /// Every usable Node's address with the Service port's `nodePort`, for a proxy that cannot reach
    /// pod IPs (outside the cluster network).
    NodePort,
    /// The Service's ClusterIP and port, one endpoint that kube-proxy balances (ingress-nginx's
    /// `service-upstream`). A Service without a ClusterIP (headless) falls back to its endpoints,
    /// as in ingress-nginx.
    ClusterIp,
}

/// How a store is translated. Fixed for the life of the process.
#[derive(Clone, Debug, PartialEq)]
pub struct TranslateOptions {
    /// The class name Gantry answers to (`ingressClassName` / legacy annotation).
    pub ingress_class: String,
    /// The `spec.controller` value of IngressClasses that are Gantry's.
    pub controller_name: String,
    /// Backend mode for Ingresses without the `gantry.dev/backend-mode` annotation, unless the
    /// ProxyConfig sets `backendMode`.
    pub backend_mode: BackendMode,
    /// A `kubernetes.io/tls` Secret served when SNI names no configured host, unless the
    /// ProxyConfig sets `defaultCertificate`.
    pub default_ssl_certificate: Option<ObjectKey>,
    /// Served as the default certificate when `default_ssl_certificate` is unset or does not load.
    /// Generated once at start so that it does not change between snapshots.
    pub fallback_certificate: TlsCert,
    /// The data path's settings from the flags; a `ProxyConfig` referenced by our IngressClass
    /// overrides them per snapshot.
    pub proxy_config: std::sync::Arc<gantry_proxy::ProxyConfig>,
    /// The Gateway API: `None` leaves every Gateway API object alone.
    pub gateway: Option<gateway::GatewayOptions>,
}

/// What can be wrong with one object; each becomes one [`Diagnostic`] whose `reason` is
/// [`Problem::reason`] and whose `message` is the `Display` text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A rule's or a TLS entry's host is not a DNS name or `*.` plus one; the rule (or TLS host) is
    /// skipped.
    #[error("host {host:?} {why}; {skipped} is skipped")]
    InvalidHost {
        host: String,
        why: &'static str,
        skipped: &'static str,
    },
    /// A path is not absolute, has an unknown `pathType`, or cannot be routed; the path is skipped.
    #[error("{host}: path {path:?} {why}; the path is skipped")]
    InvalidPath { host: String, path: String, why: String },
    /// An older Ingress already routes the same host, path and path type; this path is skipped.
    #[error("{host} {path} is already routed by Ingress {winner} (older); this path is ignored")]
    PathConflict {
        host: String,
        path: String,
        winner: String,
    },
    /// An older Ingress already sets `spec.defaultBackend`; this one is ignored.
    #[error("the default backend is already set by Ingress {winner} (older); this one is ignored")]
    DefaultBackendConflict { winner: String },
    /// The backend's Service does not exist; its routes answer 503.
    #[error("backend {backend}: Service {service} not found; requests get 503")]
    ServiceNotFound { backend: String, service: String },
    /// The Service has no port with the number or name the backend gives; its routes answer 503.
    #[error("backend {backend}: Service {service} has no port {port}; requests get 503")]
    ServicePortNotFound {
        backend: String,
        service: String,
        port: String,
    },
    /// Node-port mode, and the Service port has no `nodePort`; its routes answer 503.
    #[error("backend {backend}: Service port {port} has no nodePort (node-port mode); requests get 503")]
    NodePortNotFound { backend: String, port: String },
    /// The backend resolved to no ready address; its routes still exist and answer 503.
    #[error("backend {backend}: {why}; requests get 503")]
    NoEndpoints { backend: String, why: &'static str },
    /// A `resource` backend (only Service backends are supported); the path is skipped.
    #[error("{place}: resource backend {resource} is not supported; {place} is skipped")]
    ResourceBackendUnsupported { place: String, resource: String },
    /// A backend with neither `service` nor `resource`, or a Service backend without a name; the path
    /// is skipped.
    #[error("{place}: the backend names no Service; {place} is skipped")]
    InvalidBackend { place: String },
    /// A `spec.tls` Secret does not exist (or is in another namespace).
    #[error("TLS Secret {secret} not found; {outcome}")]
    TlsSecretNotFound { secret: String, outcome: String },
    /// A `spec.tls` Secret is not a usable `kubernetes.io/tls` certificate and key.
    #[error("TLS Secret {secret} is invalid: {error}; {outcome}")]
    TlsSecretInvalid {
        secret: String,
        error: String,
        outcome: String,
    },
    /// An ingress-nginx annotation has an invalid value; `why` says what was expected and done.
    #[error("annotation {annotation}: invalid value {value:?}: {why}{}", fails_closed_note(*fails_closed))]
    AnnotationInvalid {
        annotation: String,
        value: String,
        why: String,
        fails_closed: bool,
    },
    /// An ingress-nginx annotation Gantry does not apply (not supported, never executed).
    #[error("annotation {annotation} is refused: {why}{}", fails_closed_note(*fails_closed))]
    AnnotationRefused {
        annotation: String,
        why: String,
        fails_closed: bool,
    },
    /// An `nginx.ingress.kubernetes.io/*` annotation that is not in the catalogue; it is ignored.
    #[error("annotation {annotation} is not an ingress-nginx annotation Gantry knows{}; it is ignored", did_you_mean(.annotation))]
    AnnotationUnknown { annotation: String },
    /// The Secret or ConfigMap an annotation names does not exist.
    #[error("annotation {annotation}: {kind} {object} not found{}", fails_closed_note(*fails_closed))]
    AnnotationReferenceNotFound {
        annotation: String,
        kind: &'static str,
        object: String,
        fails_closed: bool,
    },
    /// The Secret or ConfigMap an annotation names cannot be used.
    #[error("annotation {annotation}: {why}{}", fails_closed_note(*fails_closed))]
    AnnotationReferenceInvalid {
        annotation: String,
        kind: &'static str,
        why: String,
        fails_closed: bool,
    },
    /// A canary Ingress's path (or default backend) that no main Ingress routes with the same host,
    /// path and path type; the canary is ignored, as in ingress-nginx.
    #[error("canary {place}: no Ingress that is not a canary routes this host, path and path type; this canary is ignored, as in ingress-nginx")]
    CanaryWithoutMainRoute { place: String },
    /// A canary Ingress's path whose main routes already have the canary of an older Ingress;
    /// ingress-nginx uses only the first.
    #[error("canary {place}: the main route already has the canary of Ingress {winner} (older); this canary is ignored, as ingress-nginx uses only the first")]
    CanaryConflict { place: String, winner: String },
    /// A canary Ingress's path whose main routes send to the canary's own backend.
    #[error("canary {place}: the main route sends to the same backend {backend}; this canary is ignored, as in ingress-nginx")]
    CanarySameBackend { place: String, backend: String },
    /// A `server-alias` that another rule's host or an older alias already claims; it is ignored.
    #[error("server-alias {alias}: {why}; the alias is ignored")]
    ServerAliasConflict { alias: String, why: String },
    /// `from-to-www-redirect` names a twin host that a rule or an alias already serves.
    #[error("from-to-www-redirect: {from} is not redirected: {why}")]
    WwwRedirectSkipped { from: String, why: String },
    /// The host's client certificate authentication (`auth-tls-*`, one per host as in
    /// ingress-nginx) comes from an older Ingress, and this one's differs.
    #[error("host {host}: {why}")]
    ClientCertConflict { host: String, why: String },
    /// `service-upstream` on a Service without a ClusterIP (headless): its endpoints are used.
    #[error(
        "backend {backend}: service-upstream, but Service {service} has no ClusterIP; using its endpoints"
    )]
    NoClusterIp { backend: String, service: String },
    /// A Gantry annotation has a value it does not understand; the default applies.
    #[error("annotation {annotation}: unknown value {value:?} ({expected}); using {fallback}")]
    InvalidAnnotation {
        annotation: &'static str,
        value: String,
        expected: &'static str,
        fallback: String,
    },
    /// Our IngressClass's `spec.parameters` name something other than a cluster-scoped `gantry.dev`
    /// ProxyConfig; the flags' settings apply.
    #[error("parameters {parameters} are not supported (only ProxyConfig of apiGroup gantry.dev, scope Cluster); the flags' settings apply")]
    UnsupportedParameters { parameters: String },
    /// Our IngressClass names a ProxyConfig that does not exist; the flags' settings apply.
    #[error("parameters name ProxyConfig {name}, which does not exist; the flags' settings apply")]
    ProxyConfigNotFound { name: String },
    /// Another of our IngressClasses decides the class-wide settings (there is one data path).
    #[error("parameters {parameters} are ignored: the class-wide settings come from IngressClass {winner}")]
    ParametersIgnored { parameters: String, winner: String },
    /// A ProxyConfig field the schema did not catch is invalid; that field keeps its last good value.
    #[error("spec.{field}: {error}; keeping {kept}")]
    InvalidProxyConfig {
        field: &'static str,
        error: String,
        kept: String,
    },
    /// A Gateway API object (or part of one) that is not served as written; `reason` is the
    /// Gateway API's condition reason where there is one.
    #[error("{message}")]
    GatewayApi { reason: &'static str, message: String },
}

// === impl Problem ===

impl Problem {
    /// The stable CamelCase reason, for metrics, Events and status.
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::InvalidHost { .. } => "InvalidHost",
            Problem::InvalidPath { .. } => "InvalidPath",
            Problem::PathConflict { .. } => "PathConflict",
            Problem::DefaultBackendConflict { .. } => "DefaultBackendConflict",
            Problem::ServiceNotFound { .. } => "ServiceNotFound",
            Problem::ServicePortNotFound { .. } => "ServicePortNotFound",
            Problem::NodePortNotFound { .. } => "NodePortNotFound",
            Problem::NoEndpoints { .. } => "NoEndpoints",
            Problem::ResourceBackendUnsupported { .. } => "ResourceBackendUnsupported",
            Problem::InvalidBackend { .. } => "InvalidBackend",
            Problem::TlsSecretNotFound { .. } => "TLSSecretNotFound",
            Problem::TlsSecretInvalid { .. } => "TLSSecretInvalid",
            Problem::InvalidAnnotation { .. } => "InvalidAnnotation",
            Problem::AnnotationInvalid { .. } => "AnnotationInvalid",
            Problem::AnnotationRefused { .. } => "AnnotationRefused",
            Problem::AnnotationUnknown { .. } => "AnnotationUnknown",
            Problem::AnnotationReferenceNotFound { kind: "Secret", .. } => "AnnotationSecretNotFound",
            Problem::AnnotationReferenceNotFound { .. } => "AnnotationConfigMapNotFound",
            Problem::AnnotationReferenceInvalid { kind: "Secret", .. } => "AnnotationSecretInvalid",
            Problem::AnnotationReferenceInvalid { .. } => "AnnotationConfigMapInvalid",
            Problem::ServerAliasConflict { .. } => "ServerAliasConflict",
            Problem::NoClusterIp { .. } => "NoClusterIp",
            Problem::WwwRedirectSkipped { .. } => "WwwRedirectSkipped",
            Problem::ClientCertConflict { .. } => "ClientCertConflict",
            Problem::CanaryWithoutMainRoute { .. } => "CanaryWithoutMainRoute",
            Problem::CanaryConflict { .. } => "CanaryConflict",
            Problem::CanarySameBackend { .. } => "CanarySameBackend",
            Problem::UnsupportedParameters { .. } => "UnsupportedParameters",
            Problem::ProxyConfigNotFound { .. } => "ProxyConfigNotFound",
            Problem::ParametersIgnored { .. } => "ParametersIgnored",
            Problem::InvalidProxyConfig { .. } => "InvalidProxyConfig",
            Problem::GatewayApi { reason, .. } => reason,
        }
    }
}

/// ` (did you mean ...?)` for an unknown annotation that is a typo of a known one.
fn did_you_mean(annotation: &str) -> String {
    annotation
        .strip_prefix(crate::annotations::PREFIX)
        .and_then(crate::annotations::suggest)
        .map(|n| format!(" (did you mean {}{n}?)", crate::annotations::PREFIX))
        .unwrap_or_default()
}

/// The tail of a diagnostic about an annotation that makes its Ingress fail closed.
fn fails_closed_note(fails_closed: bool) -> &'static str {
    if fails_closed {
        "; the Ingress fails closed: its paths answer 503"
    } else {
        ""
    }
}

impl Problem {
    /// The diagnostic for an annotation's report, if its outcome is a problem.
    fn of_report(r: &AnnotationReport) -> Option<Problem> {
        let annotation = r.annotation.clone();
        let fails_closed = r.fails_closed;
        Some(match (&r.outcome, &r.reference) {
            (Outcome::Invalid(why), Some(reference)) => {
                let kind = match reference.kind {
                    ReferenceKind::Secret => "Secret",
                    ReferenceKind::ConfigMap => "ConfigMap",
                };
                if reference.missing {
                    Problem::AnnotationReferenceNotFound {
                        annotation,
                        kind,
                        object: reference.object.clone(),
                        fails_closed,
                    }
                } else {
                    Problem::AnnotationReferenceInvalid {
                        annotation,
                        kind,
                        why: why.clone(),
                        fails_closed,
                    }
                }
            }
            (Outcome::Invalid(why), None) => Problem::AnnotationInvalid {
                annotation,
                value: r.value.clone(),
                why: why.clone(),
                fails_closed,
            },
            (Outcome::Refused(why), _) => Problem::AnnotationRefused {
                annotation,
                why: why.clone(),
                fails_closed,
            },
            (Outcome::Unknown, _) => Problem::AnnotationUnknown { annotation },
            (Outcome::Honoured | Outcome::Difference(_) | Outcome::Ignored(_), _) => return None,
        })
    }
}

/// What the annotations of one of our Ingresses did: for `gantry check` and `/debug/routes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IngressReport {
    /// `namespace/name`.
    pub ingress: String,
    /// Why the Ingress fails closed (its paths answer 503), if it does.
    pub fails_closed: Option<String>,
    /// Why the Ingress's rules are not routed at all (`canary`), if so.
    pub not_routed: Option<String>,
    /// One per `nginx.ingress.kubernetes.io/*` annotation, by name.
    pub annotations: Vec<AnnotationReport>,
}

/// One of our Ingresses, with what every processor needs to know about it.
#[derive(Clone, Debug)]
struct OurIngress<'a> {
    key: &'a ObjectKey,
    ingress: &'a Ingress,
    source: RouteSource,
    backend_mode: BackendMode,
    /// What the processors read of it besides the spec, its ingress-nginx annotations included,
    /// kept across builds while neither the Ingress nor what they refer to changes.
    facts: std::sync::Arc<class::IngressFacts>,
}

impl OurIngress<'_> {
    /// The Ingress as its diagnostics name it (`Ingress namespace/name`, with its uid).
    fn object(&self) -> &ObjectRef {
        &self.facts.object
    }
}

/// The state the processors share while building one snapshot.
struct Build<'a> {
    store: &'a ObjectStore,
    /// What the last build made that this one may reuse.
    cache: &'a mut TranslateCache,
    /// The kinds in which nothing changed since the last build with this cache.
    unchanged: cache::Unchanged,
    opts: &'a TranslateOptions,
    previous: &'a Snapshot,
    /// The flags' until processor 0 resolves them.
    settings: settings::Settings,
    routes: RouteTableBuilder,
    /// The tables of Gateways with addresses of their own (`--gateway-address-pool`).
    address_routes: BTreeMap<IpAddr, RouteTableBuilder>,
    certs: CertTable,
    backends: backends::Backends,
    /// While a host's routes are built: every backend they resolved, so that the next build can
    /// tell whether they still hold.
    backend_log: Option<Vec<(backends::BackendKey, std::sync::Arc<gantry_proxy::Backend>)>>,
    diagnostics: Vec<Diagnostic>,
    /// What each of our Ingresses' annotations did, oldest Ingress first; the processors may add to
    /// it (per-path rewrite problems, alias conflicts).
    /// Shared with the Ingress's facts until a processor adds to one (`Arc::make_mut`).
    annotation_reports: Vec<(&'a ObjectKey, Arc<IngressReport>)>,
    /// Where each Ingress's report is in `annotation_reports`: made the first time a processor
    /// adds to a report, so that a build where many do stays linear.
    report_index: Option<foldhash::HashMap<&'a ObjectKey, usize>>,
    /// When the build will be kept for the next to patch ([`patch`]): every host's rules (our
    /// Ingress's index and the rule's) and routes, as processor 2 made them.
    recorded_hosts: Option<Vec<patch::RecordedHost>>,
}

// === impl Build ===

impl<'a> Build<'a> {
    fn new(
        store: &'a ObjectStore,
        opts: &'a TranslateOptions,
        previous: &'a Snapshot,
        cache: &'a mut TranslateCache,
    ) -> Self {
        let unchanged = cache.start(store);
        Self::with(store, opts, previous, cache, unchanged)
    }

    /// A build that knows what did not change since the last one, without asking the cache
    /// ([`TranslateCache::start`]).
    fn with(
        store: &'a ObjectStore,
        opts: &'a TranslateOptions,
        previous: &'a Snapshot,
        cache: &'a mut TranslateCache,
        unchanged: cache::Unchanged,
    ) -> Self {
        Self {
            store,
            cache,
            unchanged,
            opts,
            previous,
            settings: settings::Settings::from_flags(opts),
            routes: RouteTableBuilder::new(),
            address_routes: BTreeMap::new(),
            certs: CertTable::default(),
            backends: backends::Backends::default(),
            backend_log: None,
            diagnostics: Vec::new(),
            annotation_reports: Vec::new(),
            report_index: None,
            recorded_hosts: None,
        }
    }

    /// The report of one annotation (name without prefix) of one of our Ingresses.
    fn annotation_report(&mut self, ingress: &ObjectKey, name: &str) -> Option<&mut AnnotationReport> {
        let reports = &self.annotation_reports;
        let index = self.report_index.get_or_insert_with(|| {
            reports
                .iter()
                .enumerate()
                .map(|(i, (key, _))| (*key, i))
                .collect()
        });
        let at = *index.get(ingress)?;
        Arc::make_mut(&mut self.annotation_reports[at].1)
            .annotations
            .iter_mut()
            .find(|r| r.name() == name)
    }

    /// The certificate in the `kubernetes.io/tls` Secret `key`, parsed once per revision of the
    /// Secret.
    fn certificate(&mut self, key: &ObjectKey) -> Result<TlsCert, tls::SecretError> {
        let store = self.store;
        let unchanged = self.unchanged.secrets;
        self.cache.certs.get(
            key,
            |last| unchanged || *last == store.revision(store::Kind::Secret, key),
            || (tls::load(store, key), store.revision(store::Kind::Secret, key)),
        )
    }

    /// The table for connections to `address` (a Gateway's own), or the shared one for `None`.
    fn routes_at(&mut self, address: Option<IpAddr>) -> &mut RouteTableBuilder {
        match address {
            None => &mut self.routes,
            Some(a) => self.address_routes.entry(a).or_default(),
        }
    }

    /// Records a problem with one object.
    fn report(&mut self, object: &ObjectRef, problem: Problem) {
        self.diagnostics.push(Diagnostic {
            object: object.clone(),
            reason: problem.reason().to_string(),
            message: problem.to_string(),
        });
    }

    fn finish(mut self) -> Translation {
        let cache = self.cache.finish();
        let reports = std::mem::take(&mut self.annotation_reports);
        for (key, report) in &reports {
            let mut problems = report
                .annotations
                .iter()
                .filter_map(Problem::of_report)
                .peekable();
            if problems.peek().is_none() {
                continue;
            }
            let uid = self
                .store
                .ingresses()
                .get(key)
                .and_then(|i| i.metadata.uid.as_deref());
            let object = ObjectRef::new(ObjectKind::Ingress, key, uid);
            for problem in problems {
                self.report(&object, problem);
            }
        }
        // Sorted so that the same store always gives the same list; deduplicated because ten paths
        // to one missing Service are one problem.
        self.diagnostics.sort();
        self.diagnostics.dedup();
        let routes = self.routes.build();
        self.certs.set_client_cas(tls::client_cas(&routes));
        Translation {
            snapshot: Snapshot {
                // Assigned when published.
                generation: 0,
                routes,
                address_routes: self
                    .address_routes
                    .into_iter()
                    .map(|(a, t)| (a, t.build()))
                    .collect(),
                certs: self.certs,
                config: self.settings.config,
            },
            diagnostics: self.diagnostics,
            annotations: reports.into_iter().map(|(_, r)| r).collect(),
            cache,
            gateway: gateway::GatewayApiStatus::default(),
            served: Vec::new(),
        }
    }
}

/// What one translation produced: the snapshot to publish, and the problems found on the way,
/// which stay in the controller (logs, metrics, Events, `/debug/routes`).
///
/// Dereferences to the snapshot, so tests and callers read `translation.routes` directly.
#[derive(Debug, Default)]
pub struct Translation {
    pub snapshot: Snapshot,
    pub diagnostics: Vec<Diagnostic>,
    /// What the ingress-nginx annotations of each of our Ingresses did, oldest Ingress first (the
    /// order in which they claim hosts and paths).
    pub annotations: Vec<Arc<IngressReport>>,
    /// The status of every Gateway API object of Gantry's classes.
    pub gateway: gateway::GatewayApiStatus,
    /// What the build reused from the last one ([`translate_cached`]).
    pub cache: CacheStats,
    /// The Ingresses this build serves (ours by class), oldest first: what their status is
    /// written from once it is published. Each is kept with the Ingress's facts across builds,
    /// so listing ten thousand of them copies no string.
    pub served: Vec<Arc<Served>>,
}

/// One Ingress a build serves, as it was when translated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub key: ObjectKey,
    /// `metadata.uid` (`None` outside an API server): tells the Ingress translated from one
    /// deleted and created again under the same name.
    pub uid: Option<String>,
    /// `metadata.generation`: the spec version translated.
    pub generation: Option<i64>,
}

impl Served {
    fn of(key: &ObjectKey, ingress: &Ingress) -> Self {
        Self {
            key: key.clone(),
            uid: ingress.metadata.uid.clone(),
            generation: ingress.metadata.generation,
        }
    }
}

impl std::ops::Deref for Translation {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

/// Builds the snapshot for the store. `previous` is the snapshot being replaced: hosts whose TLS
/// Secret went missing or broke keep their certificate from it. Never panics and never fails:
/// problems are in [`Translation::diagnostics`].
pub fn translate(store: &ObjectStore, opts: &TranslateOptions, previous: &Snapshot) -> Translation {
    translate_cached(store, opts, previous, &mut TranslateCache::default())
}

/// [`translate`], reusing what the last build with this cache made from objects that have not
/// changed since (certificates, backends, annotations; see [`TranslateCache`]). The result is
/// the same as [`translate`]'s.
pub fn translate_cached(
    store: &ObjectStore,
    opts: &TranslateOptions,
    previous: &Snapshot,
    cache: &mut TranslateCache,
) -> Translation {
    if let Some(t) = patch::patch(store, opts, previous, cache) {
        return t;
    }
    let mut build = Build::new(store, opts, previous, &mut *cache);
    build.settings = settings::resolve(&mut build);
    let settings_diagnostics = build.diagnostics.clone();
    let ours = class::ours(&mut build);
    let record = patch::may_record(store, &ours);
    if record {
        build.recorded_hosts = Some(Vec::with_capacity(ours.len()));
    }
    let served = ours.iter().map(|i| i.facts.served.clone()).collect();
    let mut canaries = rules::canaries(&mut build, &ours);
    rules::routes(&mut build, &ours, &mut canaries);
    tls::certificates(&mut build, &ours);
    // Every `spec.tls` Secret gave a certificate: the previous snapshot's played no part.
    let certificates_loaded = build.cache.sni.is_some();
    rules::default_backend(&mut build, &ours, &mut canaries);
    rules::report_canaries(&mut build, canaries);
    let gateway = gateway::gateway_api(&mut build);
    let settings = build.settings.clone();
    let hosts = build.recorded_hosts.take();
    let mut t = build.finish();
    t.gateway = gateway;
    t.served = served;
    if let Some(hosts) = hosts.filter(|_| certificates_loaded && t.snapshot.address_routes.is_empty()) {
        cache.prior = Some(patch::Prior::record(
            store,
            opts,
            settings,
            settings_diagnostics,
            &ours,
            &t,
            hosts,
        ));
    }
    t
}

/// The Ingresses that are ours (by class) in `store` as it is now, oldest first: the class selection
/// a build would make, without building.
///
/// For answers about the live store: which referenced Secrets and ConfigMaps to watch (they must be
/// watched before the build that needs them) and `gantry check`. What was actually published is
/// [`Translation::served`]; the status writer works from that.
pub fn served_ingresses(store: &ObjectStore, opts: &TranslateOptions) -> Vec<ObjectKey> {
    class::select(store, opts)
        .into_iter()
        .map(|(key, _, _)| key.clone())
        .collect()
}

/// [`served_ingresses`] by key rather than by age, without copying, each with its store revision
/// ([`ObjectStore::revision`]): for who needs only the set (the reference watches ask after every
/// Ingress change).
pub fn served_ingresses_by_key<'a>(
    store: &'a ObjectStore,
    opts: &'a TranslateOptions,
) -> impl Iterator<Item = (&'a ObjectKey, &'a Ingress, Option<u64>)> + 'a {
    class::selected(store, opts)
}
