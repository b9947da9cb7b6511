//! Kubernetes Events (events.k8s.io/v1) for the diagnostics about Ingresses, IngressClasses,
//! ProxyConfigs and Gateway API objects (Gateways, GatewayClasses, HTTPRoutes, GRPCRoutes), so that
//! `kubectl describe ingress` tells why a path is missing or answers 503, and
//! `kubectl describe ingressclass` why the class's ProxyConfig does not apply.
//!
//! After every build the leader looks at the diagnostics it published. One about such an object
//! that was not there before becomes a `Warning` Event on that object, with the diagnostic's reason
//! and message. The object is the diagnostic's [`ObjectRef`](crate::diagnostic::ObjectRef), uid
//! included: the Event goes to exactly the object version that was translated, nothing is looked up
//! in the store (which may have moved on), and an object deleted and created again under its name
//! is another object. Objects without a uid (from files) get no Events. Events about cluster-scoped
//! objects (IngressClass, ProxyConfig, GatewayClass) go to namespace `default`, as kubectl's own
//! do for Nodes.
//!
//! While a diagnostic persists it is not sent again, except every [`REFRESH`] so that it outlives
//! the API server's Event time-to-live (1 h by default). When it goes away and comes back, it is
//! sent again.
//!
//! Events go out through [`kube::runtime::events::Recorder`], one per distinct diagnostic: the
//! recorder deduplicates by object and reason but not by message, so a shared one would fold two
//! different problems of the same kind (two missing Services) into one Event showing the first.
//! A new leader does not know what its predecessor sent and sends the current diagnostics once.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::{
    diagnostic::{Diagnostic, ObjectKind},
    metrics::{Metrics, ResultLabels},
};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Client,
};
use tokio::sync::watch;

use crate::{leader::Leadership, runtime::Published};

/// A diagnostic that persists is sent again this often.
pub const REFRESH: Duration = Duration::from_secs(30 * 60);
/// Wait before retrying Events that could not be sent.
const RETRY: Duration = Duration::from_secs(10);
/// Concurrent Event writes.
const CONCURRENCY: usize = 8;
/// The API server refuses notes longer than this.
const MAX_NOTE: usize = 1024;
/// The `action` of every Event: what Gantry was doing when it found the problem.
const ACTION: &str = "Translate";
/// Longest wait for one Event write (the client's own read timeout is made for watches).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether problems with objects of `kind` become Events on them.
fn has_events(kind: ObjectKind) -> bool {
    matches!(
        kind,
        ObjectKind::Ingress
            | ObjectKind::IngressClass
            | ObjectKind::ProxyConfig
            | ObjectKind::GatewayClass
            | ObjectKind::Gateway
            | ObjectKind::HttpRoute
            | ObjectKind::GrpcRoute
    )
}

/// The object a diagnostic is about, as the `regarding` reference of its Event: apiVersion, kind,
/// namespace (none for cluster-scoped objects, whose Events go to namespace `default`), name and
/// the uid of the object as translated, which is how `kubectl describe` finds its Events. `None`
/// for kinds that get no Events, and for objects without a uid (not from an API server).
fn reference(d: &Diagnostic) -> Option<ObjectReference> {
    let o = &d.object;
    if !has_events(o.kind) {
        return None;
    }
    Some(ObjectReference {
        api_version: Some(o.kind.api_version()?.into_owned()),
        kind: Some(o.kind.as_str().into()),
        namespace: o.namespace.clone().filter(|ns| !ns.is_empty()),
        name: Some(o.name.clone()).filter(|n| !n.is_empty()),
        uid: Some(o.uid.clone()?),
        ..ObjectReference::default()
    })
}

/// What was sent for one diagnostic.
struct Sent {
    recorder: Recorder,
    at: Instant,
}

/// Starts the Event writer; it runs until `shutdown` turns true. `reporter` names this controller
/// (`reportingController`) and replica (`reportingInstance`).
pub fn run(
    client: Client,
    reporter: Reporter,
    mut leadership: Leadership,
    mut published: watch::Receiver<Published>,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sent: BTreeMap<Diagnostic, Sent> = BTreeMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = gantry_proxy::shutdown_requested(&mut shutdown) => return,
                r = published.changed() => if r.is_err() { return },
                _ = leadership.changed() => {}
                _ = tick.tick() => {}
                _ = retry => {}
            }
            retry_at = None;
            let diagnostics = published.borrow().diagnostics.clone();
            sent.retain(|d, _| diagnostics.binary_search(d).is_ok());
            if !leadership.is_leading() {
                continue;
            }
            let due: Vec<(Diagnostic, ObjectReference)> = diagnostics
                .iter()
                .filter(|d| sent.get(*d).is_none_or(|s| s.at.elapsed() >= REFRESH))
                .filter_map(|d| Some((d.clone(), reference(d)?)))
                .collect();
            if due.is_empty() {
                continue;
            }
            let results: Vec<_> = futures_util::stream::iter(due)
                .map(|(d, reference)| {
                    let recorder = match sent.get(&d) {
                        Some(s) => s.recorder.clone(),
                        None => Recorder::new(client.clone(), reporter.clone()),
                    };
                    let (leadership, shutdown) = (&leadership, &shutdown);
                    async move {
                        if !leadership.is_leading() || *shutdown.borrow() {
                            return None;
                        }
                        let event = Event {
                            type_: EventType::Warning,
                            reason: d.reason.clone(),
                            note: Some(truncate(&d.message, MAX_NOTE)),
                            action: ACTION.into(),
                            secondary: None,
                        };
                        let r =
                            match tokio::time::timeout(PUBLISH_TIMEOUT, recorder.publish(&event, &reference))
                                .await
                            {
                                Ok(r) => r.map_err(|e| e.to_string()),
                                Err(_) => Err(format!("no answer within {PUBLISH_TIMEOUT:?}")),
                            };
                        Some((d, recorder, r))
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .filter_map(std::future::ready)
                .collect()
                .await;
            let (mut ok, mut failed) = (0, 0);
            for (d, recorder, r) in results {
                match r {
                    Ok(()) => {
                        ok += 1;
                        tracing::debug!(object = %d.object, reason = %d.reason, "Event published");
                        sent.insert(
                            d,
                            Sent {
                                recorder,
                                at: Instant::now(),
                            },
                        );
                    }
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(object = %d.object, reason = %d.reason, error = %e, "cannot publish Event; retrying");
                    }
                }
            }
            let m = &metrics.events_published;
            m.get_or_create(&ResultLabels { result: "ok" }).inc_by(ok);
            m.get_or_create(&ResultLabels { result: "error" }).inc_by(failed);
            if failed > 0 {
                retry_at = Some(tokio::time::Instant::now() + RETRY);
            }
        }
    })
}

/// At most `max` bytes, cut at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{diagnostic::ObjectRef, store::ObjectKey};

    fn diag(kind: ObjectKind, namespace: &str, name: &str, uid: Option<&str>) -> Diagnostic {
        Diagnostic {
            object: ObjectRef::new(kind, &ObjectKey::new(namespace, name), uid),
            reason: "ServiceNotFound".into(),
            message: "m".into(),
        }
    }

    /// (apiVersion, kind, namespace, name, uid) of the Event's `regarding`.
    fn regarding(d: &Diagnostic) -> Option<[Option<String>; 5]> {
        let r = reference(d)?;
        Some([r.api_version, r.kind, r.namespace, r.name, r.uid])
    }

    fn expected(
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<[Option<String>; 5]> {
        Some([
            Some(api_version.into()),
            Some(kind.into()),
            namespace.map(Into::into),
            Some(name.into()),
            Some("u-1".into()),
        ])
    }

    #[test]
    fn events_regard_the_object_translated_with_its_api_version_and_uid() {
        let uid = Some("u-1");
        let gateway_api = "gateway.networking.k8s.io/v1";
        for (d, want) in [
            (
                diag(ObjectKind::Ingress, "shop", "web", uid),
                expected("networking.k8s.io/v1", "Ingress", Some("shop"), "web"),
            ),
            (
                diag(ObjectKind::IngressClass, "", "gantry", uid),
                expected("networking.k8s.io/v1", "IngressClass", None, "gantry"),
            ),
            (
                diag(ObjectKind::ProxyConfig, "", "pc", uid),
                expected("gantry.dev/v1alpha1", "ProxyConfig", None, "pc"),
            ),
            (
                diag(ObjectKind::GatewayClass, "", "gantry", uid),
                expected(gateway_api, "GatewayClass", None, "gantry"),
            ),
            (
                diag(ObjectKind::Gateway, "infra", "gw", uid),
                expected(gateway_api, "Gateway", Some("infra"), "gw"),
            ),
            (
                diag(ObjectKind::HttpRoute, "apps", "r", uid),
                expected(gateway_api, "HTTPRoute", Some("apps"), "r"),
            ),
            (
                diag(ObjectKind::GrpcRoute, "apps", "g", uid),
                expected(gateway_api, "GRPCRoute", Some("apps"), "g"),
            ),
        ] {
            assert_eq!(regarding(&d), want, "{}", d.object);
        }
    }

    #[test]
    fn objects_without_a_uid_and_other_kinds_get_no_events() {
        assert_eq!(regarding(&diag(ObjectKind::Ingress, "shop", "web", None)), None);
        assert_eq!(regarding(&diag(ObjectKind::ProxyConfig, "", "pc", None)), None);
        for kind in [
            ObjectKind::Secret,
            ObjectKind::Service,
            ObjectKind::ConfigMap,
            ObjectKind::BackendTlsPolicy,
        ] {
            assert_eq!(regarding(&diag(kind, "shop", "x", Some("u-1"))), None, "{kind}");
        }
        let file = Diagnostic {
            object: ObjectRef::file("a.yaml"),
            reason: "ManifestParseError".into(),
            message: "m".into(),
        };
        assert_eq!(regarding(&file), None);
    }

    #[test]
    fn notes_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("ok", 1024), "ok");
    }
}
