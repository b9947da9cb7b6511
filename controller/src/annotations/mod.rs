//! ingress-nginx annotations → Gantry's typed policy model ([`Policies`]).
//!
//! Users leaving ingress-nginx (retired in March 2026) carry years of
//! `nginx.ingress.kubernetes.io/*` annotations. This module is the front end that reads them: it
//! is pure (no I/O; Secrets and ConfigMaps come through [`References`]) and turns each Ingress's
//! annotations into
//!
//! - the Ingress-wide parts of its routes' [`Policies`], built with the constructors of
//!   `gantry_proxy::policy` (the same model the Gateway API front end will feed),
//! - the inputs that depend on the host or path, which translation applies per route
//!   (`rewrite-target`, `use-regex`, the HTTPS redirects, `server-alias`),
//! - and one [`AnnotationReport`] per annotation present, for `gantry check`, Events and
//!   `/debug/routes`.
//!
//! Values are parsed with ingress-nginx's defaults and validation rules (its
//! `internal/ingress/annotations/*/main.go`); where its documentation and its end-to-end tests
//! disagree, the tests are followed and the choice is written down where it is made. No annotation
//! text reaches anything but a typed parser: the data plane only ever sees the values built here.
//!
//! **Fail closed.** When a security annotation ([`catalog::Entry::security`]: access control and
//! authentication) is invalid, refused, or names a Secret or ConfigMap that is missing or broken,
//! or a snippet carries an nginx access directive, the Ingress's routes get a
//! [`Refusal`](gantry_proxy::policy::Refusal): they are still routed (the path is held, no other
//! Ingress or default backend takes it) and answer 503, never served without the protection their
//! author asked for. Any other problem leaves the route served and is reported as a warning.

pub mod catalog;
pub mod references;
mod values;

mod access;
mod balancing;
mod canary;
mod client_cert;
mod cors;
mod error_pages;
mod ext_auth;
mod otel;
mod rate_limit;
mod redirect;
mod rewrite;
mod special;
mod upstream;

#[cfg(test)]
pub(crate) mod tests;

use std::{collections::BTreeMap, sync::Arc};

use gantry_proxy::policy::{Policies, Refusal};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde::Serialize;

pub use canary::CanarySpec;
pub use catalog::{lookup, markdown_table, suggest, Entry, Family, Support, CATALOG, PREFIX};

use crate::store::{ObjectKey, ObjectStore};

/// Longest value shown in a report.
const MAX_SHOWN: usize = 100;
/// Longest fail-closed reason kept (it is shown in logs and `/debug/routes`).
const MAX_REASON: usize = 2000;

/// Access to the objects annotations refer to.
pub trait References {
    fn secret(&self, namespace: &str, name: &str) -> Option<&Secret>;
    fn config_map(&self, namespace: &str, name: &str) -> Option<&ConfigMap>;
}

impl References for ObjectStore {
    fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        ObjectStore::secret(self, namespace, name)
    }

    fn config_map(&self, namespace: &str, name: &str) -> Option<&ConfigMap> {
        ObjectStore::config_map(self, namespace, name)
    }
}

/// What one Ingress's annotations ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressAnnotations {
    /// The parts of every route's policies that do not depend on its host or path. When the
    /// Ingress fails closed, `refusal` is set.
    pub policies: Policies,
    /// `ssl-redirect` (default true): hosts listed in `spec.tls` redirect plain HTTP to HTTPS.
    pub ssl_redirect: bool,
    /// `force-ssl-redirect`: every host redirects plain HTTP to HTTPS, with TLS or without.
    pub force_ssl_redirect: bool,
    /// `use-regex`.
    pub use_regex: bool,
    /// `rewrite-target`, validated with ingress-nginx's character set; compiled per path.
    pub rewrite_target: Option<String>,
    /// `server-alias`: extra host names (lowercase; exact or `*.` wildcards).
    pub server_alias: Vec<String>,
    /// `from-to-www-redirect`: each rule's host gets its `www.` twin (or the name without `www.`)
    /// as a host that redirects to it.
    pub from_to_www_redirect: bool,
    /// `service-upstream`: the backends are the Services' ClusterIPs, not their endpoints.
    pub service_upstream: bool,
    /// Why the Ingress's rules are not routed at all (`canary: "true"`), if so.
    pub not_routed: Option<String>,
    /// `canary: "true"`: what the Ingress's backends ask of the main routes they attach to.
    pub canary: Option<CanarySpec>,
    /// `default-backend`: a Service of the Ingress's namespace, resolved by translation (its
    /// first port) into the routes' `Policies::default_backend`.
    pub default_backend: Option<String>,
    /// One per `nginx.ingress.kubernetes.io/*` annotation present, by name.
    pub reports: Vec<AnnotationReport>,
}

impl Default for IngressAnnotations {
    fn default() -> Self {
        Self {
            policies: Policies::default(),
            ssl_redirect: true,
            force_ssl_redirect: false,
            use_regex: false,
            rewrite_target: None,
            server_alias: Vec::new(),
            from_to_www_redirect: false,
            service_upstream: false,
            not_routed: None,
            canary: None,
            default_backend: None,
            reports: Vec::new(),
        }
    }
}

/// `parsed`, shared: every Ingress whose annotations ask for nothing (most have none) gets the
/// same `Arc` of the default, instead of its own copy of about 1.3 KB (13 MB at 10,000
/// Ingresses).
pub fn shared(parsed: IngressAnnotations) -> Arc<IngressAnnotations> {
    static NOTHING: std::sync::LazyLock<Arc<IngressAnnotations>> =
        std::sync::LazyLock::new(|| Arc::new(IngressAnnotations::default()));
    if parsed == **NOTHING {
        NOTHING.clone()
    } else {
        Arc::new(parsed)
    }
}

impl IngressAnnotations {
    /// Why the Ingress fails closed, if it does.
    pub fn fails_closed(&self) -> Option<&str> {
        self.policies.refusal.as_ref().map(|r| &*r.reason)
    }

    /// Whether this Ingress puts the host of a rule with `path` into regex mode: `use-regex`, or a
    /// `rewrite-target` other than the path itself (ingress-nginx's `needsRewrite`).
    pub fn regex_mode_for(&self, path: &str) -> bool {
        self.use_regex || self.rewrite_target.as_deref().is_some_and(|t| t != path)
    }

    /// The report of an annotation (name without prefix), if present.
    pub fn report(&self, name: &str) -> Option<&AnnotationReport> {
        self.reports.iter().find(|r| r.name() == name)
    }
}

/// What Gantry did with one annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied as ingress-nginx applies it.
    Honoured,
    /// Applied, with this difference.
    Difference(String),
    /// Not applied, harmlessly: why.
    Ignored(String),
    /// Not applied: why, and what to use instead.
    Refused(String),
    /// The value is not valid: what was expected, and what was done instead.
    Invalid(String),
    /// An `nginx.ingress.kubernetes.io/*` key that is not in the catalogue.
    Unknown,
}

impl Outcome {
    /// `honoured`, `difference`, ... as in the JSON output.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Honoured => "honoured",
            Outcome::Difference(_) => "difference",
            Outcome::Ignored(_) => "ignored",
            Outcome::Refused(_) => "refused",
            Outcome::Invalid(_) => "invalid",
            Outcome::Unknown => "unknown",
        }
    }

    pub fn detail(&self) -> Option<&str> {
        match self {
            Outcome::Honoured | Outcome::Unknown => None,
            Outcome::Difference(d) | Outcome::Ignored(d) | Outcome::Refused(d) | Outcome::Invalid(d) => {
                Some(d)
            }
        }
    }
}

/// A Secret or ConfigMap an annotation names that is missing or cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceProblem {
    pub kind: ReferenceKind,
    /// `namespace/name`.
    pub object: String,
    /// Missing (else present but unusable).
    pub missing: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferenceKind {
    Secret,
    ConfigMap,
}

/// One annotation of one Ingress and its outcome.
///
/// Serializes as `{"annotation", "value", "outcome", "detail", "fails_closed"}`, `outcome` being
/// [`Outcome::label`] and `detail` [`AnnotationReport::detail`] (`null` when there is none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnotationReport {
    /// The full key, `nginx.ingress.kubernetes.io/<name>`.
    pub annotation: String,
    /// The value, cut for display.
    pub value: String,
    pub outcome: Outcome,
    /// Whether this annotation makes the Ingress fail closed.
    pub fails_closed: bool,
    /// The Secret or ConfigMap behind an `Invalid` outcome, if that is the cause.
    pub reference: Option<ReferenceProblem>,
}

impl Serialize for AnnotationReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            annotation: &'a str,
            value: &'a str,
            outcome: &'static str,
            detail: Option<String>,
            fails_closed: bool,
        }
        View {
            annotation: &self.annotation,
            value: &self.value,
            outcome: self.outcome.label(),
            detail: self.detail(),
            fails_closed: self.fails_closed,
        }
        .serialize(serializer)
    }
}

impl AnnotationReport {
    /// The name without prefix.
    pub fn name(&self) -> &str {
        self.annotation.strip_prefix(PREFIX).unwrap_or(&self.annotation)
    }

    /// What differs, why it is ignored or refused, what was expected; for an unknown annotation,
    /// the known one it is a typo of, if any.
    pub fn detail(&self) -> Option<String> {
        match &self.outcome {
            Outcome::Unknown => suggest(self.name()).map(|n| format!("did you mean {PREFIX}{n}?")),
            outcome => outcome.detail().map(str::to_string),
        }
    }

    /// Adds to the detail of the outcome, turning it into `Invalid` unless it already is a problem
    /// (used by translation for per-path problems, e.g. a `rewrite-target` that does not compile
    /// against one path).
    pub(crate) fn add_invalid(&mut self, detail: String) {
        self.outcome = match std::mem::replace(&mut self.outcome, Outcome::Honoured) {
            Outcome::Invalid(d) | Outcome::Refused(d) => Outcome::Invalid(format!("{d}; {detail}")),
            _ => Outcome::Invalid(detail),
        };
    }

    /// Adds a difference to the detail, unless the outcome is already a problem.
    pub(crate) fn add_difference(&mut self, detail: String) {
        self.outcome = match std::mem::replace(&mut self.outcome, Outcome::Honoured) {
            Outcome::Difference(d) => Outcome::Difference(format!("{d}; {detail}")),
            Outcome::Honoured | Outcome::Ignored(_) => Outcome::Difference(detail),
            problem => problem,
        };
    }
}

/// Reads the `nginx.ingress.kubernetes.io/*` annotations of the Ingress `ingress`. Never fails and
/// never panics: every problem is in a report, and security problems set
/// `policies.refusal`.
pub fn parse(
    ingress: &ObjectKey,
    annotations: Option<&BTreeMap<String, String>>,
    refs: &impl References,
) -> IngressAnnotations {
    let mut p = Parser::new(ingress, annotations, refs);
    match canary::parse(&mut p) {
        canary::Role::Main => {
            redirect::parse(&mut p);
            rewrite::parse(&mut p);
            access::parse(&mut p);
            client_cert::parse(&mut p);
            ext_auth::parse(&mut p);
            cors::parse(&mut p);
            rate_limit::parse(&mut p);
            upstream::parse(&mut p);
            error_pages::parse(&mut p);
            balancing::parse(&mut p, true);
            otel::parse(&mut p);
            special::parse(&mut p);
        }
        // Only the canary rules and the balancing annotations apply (read by `canary::parse`).
        canary::Role::Canary => canary::ignore_the_rest(
            &mut p,
            "ignored on a canary Ingress, as in ingress-nginx: the requests it takes are served with the main route's policies (only canary-*, load-balance, upstream-hash-by and, with affinity-canary-behavior: legacy, the session affinity annotations apply)",
        ),
        canary::Role::Invalid => canary::ignore_the_rest(&mut p, "the Ingress is not routed: canary is invalid"),
    }
    p.finish()
}

/// The state of one [`parse`].
struct Parser<'a, R> {
    ingress: &'a ObjectKey,
    /// Present annotations of the catalogue, by name without prefix.
    values: BTreeMap<&'a str, &'a str>,
    /// Prefixed keys not in the catalogue, with their values.
    unknown: Vec<(&'a str, &'a str)>,
    refs: &'a R,
    out: IngressAnnotations,
    reports: BTreeMap<&'static str, AnnotationReport>,
    /// Why the Ingress fails closed, one line per annotation.
    refusals: Vec<String>,
}

impl<'a, R: References> Parser<'a, R> {
    fn new(ingress: &'a ObjectKey, annotations: Option<&'a BTreeMap<String, String>>, refs: &'a R) -> Self {
        let mut values = BTreeMap::new();
        let mut unknown = Vec::new();
        for (key, value) in annotations.into_iter().flatten() {
            let Some(name) = key.strip_prefix(PREFIX) else {
                continue;
            };
            match catalog::lookup(name) {
                Some(entry) => {
                    values.insert(entry.name, value.as_str());
                }
                None => unknown.push((key.as_str(), value.as_str())),
            }
        }
        Self {
            ingress,
            values,
            unknown,
            refs,
            out: IngressAnnotations::default(),
            reports: BTreeMap::new(),
            refusals: Vec::new(),
        }
    }

    /// The namespace of the Ingress.
    fn namespace(&self) -> &'a str {
        &self.ingress.namespace
    }

    /// The value as written (trimmed), empty or not, or `None` when absent.
    fn raw(&self, name: &'static str) -> Option<&'a str> {
        self.values.get(name).map(|v| v.trim())
    }

    /// The value (trimmed), or `None` when absent. An empty value is reported as ignored, as
    /// ingress-nginx's parsers treat it as absent, and gives `None`.
    fn value(&mut self, name: &'static str) -> Option<&'a str> {
        let v = self.raw(name)?;
        if v.is_empty() {
            self.report(
                name,
                Outcome::Ignored("empty value: treated as absent, as ingress-nginx does".into()),
            );
            return None;
        }
        Some(v)
    }

    fn is_present(&self, name: &'static str) -> bool {
        self.values.contains_key(name)
    }

    /// Records the outcome of an annotation (the first outcome recorded stays).
    fn report(&mut self, name: &'static str, outcome: Outcome) {
        let Some(value) = self.values.get(name) else {
            debug_assert!(false, "report for absent annotation {name}");
            return;
        };
        let value = values::shorten(value, MAX_SHOWN);
        self.reports.entry(name).or_insert_with(|| AnnotationReport {
            annotation: format!("{PREFIX}{name}"),
            value,
            outcome,
            fails_closed: false,
            reference: None,
        });
    }

    /// Records an `Invalid` outcome caused by a referenced object.
    fn report_reference(&mut self, name: &'static str, detail: String, problem: ReferenceProblem) {
        self.report(name, Outcome::Invalid(detail));
        if let Some(r) = self.reports.get_mut(name) {
            r.reference = Some(problem);
        }
    }

    /// Reports every present annotation of `names` that has no report yet with `outcome`.
    fn report_all(&mut self, names: &[&'static str], outcome: impl Fn() -> Outcome) {
        for name in names {
            if self.is_present(name) && !self.reports.contains_key(name) {
                self.report(name, outcome());
            }
        }
    }

    /// Makes the Ingress fail closed because of `name` (which must be reported already).
    fn fail_closed(&mut self, name: &'static str, why: &str) {
        if let Some(r) = self.reports.get_mut(name) {
            if r.fails_closed {
                return;
            }
            r.fails_closed = true;
        }
        self.refusals
            .push(format!("{name}: {}", values::shorten(why, 300)));
    }

    fn finish(mut self) -> IngressAnnotations {
        // Annotations no family parser reads: ignored or refused as the catalogue says.
        let present: Vec<&'static str> = self
            .values
            .keys()
            .filter_map(|n| catalog::lookup(n))
            .map(|e| e.name)
            .collect();
        for name in present {
            if self.reports.contains_key(name) {
                continue;
            }
            let value = self.values.get(name).copied().unwrap_or_default();
            let outcome = match catalog::lookup(name).map(|e| e.support) {
                Some(Support::Ignored(why)) => Outcome::Ignored(why.to_string()),
                Some(Support::Refused(_)) if value.trim().is_empty() => {
                    Outcome::Ignored("empty value: treated as absent, as ingress-nginx does".into())
                }
                // `affinity: cookie` is refused, but `canary: "false"` asks for nothing.
                Some(Support::Refused(_)) if values::is_off(value) => {
                    Outcome::Ignored(format!("{:?} turns the feature off: nothing to do", value.trim()))
                }
                Some(Support::Refused(why)) => Outcome::Refused(why.to_string()),
                // Every honoured annotation has a parser (a test checks it); this is a fallback.
                Some(Support::Honoured | Support::HonouredWithDifference(_)) | None => Outcome::Honoured,
            };
            self.report(name, outcome);
        }
        // A security annotation that is invalid or refused: the Ingress fails closed.
        let failing: Vec<(&'static str, String)> = self
            .reports
            .iter()
            .filter(|(name, _)| catalog::lookup(name).is_some_and(|e| e.security))
            .filter_map(|(name, r)| match &r.outcome {
                Outcome::Invalid(why) | Outcome::Refused(why) => Some((*name, why.clone())),
                _ => None,
            })
            .collect();
        for (name, why) in failing {
            self.fail_closed(name, &why);
        }
        let mut reports: Vec<AnnotationReport> = self.reports.into_values().collect();
        for (key, value) in &self.unknown {
            reports.push(AnnotationReport {
                annotation: (*key).to_string(),
                value: values::shorten(value, MAX_SHOWN),
                outcome: Outcome::Unknown,
                fails_closed: false,
                reference: None,
            });
        }
        reports.sort_by(|a, b| a.annotation.cmp(&b.annotation));
        self.out.reports = reports;
        if !self.refusals.is_empty() {
            let reason = values::shorten(
                &format!(
                    "the Ingress asks for protection Gantry cannot honour: {}",
                    self.refusals.join("; ")
                ),
                MAX_REASON,
            );
            self.out.policies.refusal = Some(Refusal::new(reason));
        }
        self.out
    }
}
