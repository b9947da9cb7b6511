//! Kubernetes Events (events.k8s.io/v1) for the diagnostics about Ingresses and Gateway API objects
//! (Gateways, GatewayClasses, HTTPRoutes, GRPCRoutes), so that `kubectl describe ingress` tells why
//! a path is missing or answers 503.
//!
//! After every published snapshot the leader looks at its diagnostics. One about an Ingress
//! (`Ingress namespace/name`) that was not there before becomes a `Warning` Event on that Ingress,
//! with the diagnostic's reason and message. While it persists it is not sent again, except every
//! [`REFRESH`] so that it outlives the API server's Event time-to-live (1 h by default). When it goes
//! away and comes back, it is sent again.
//!
//! Events go out through [`kube::runtime::events::Recorder`], one per distinct diagnostic: the
//! recorder deduplicates by object and reason but not by message, so a shared one would fold two
//! different problems of the same kind (two missing Services) into one Event showing the first.
//! A new leader does not know what its predecessor sent and sends the current diagnostics once.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    diagnostic::Diagnostic,
    metrics::{Metrics, ResultLabels},
};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Client,
};
use tokio::sync::watch;

use crate::{
    leader::Leadership,
    runtime::{Published, SharedStore},
    store::ObjectKey,
};

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

/// The Ingress a diagnostic is about, if it is about an Ingress.
pub fn ingress_of(d: &Diagnostic) -> Option<ObjectKey> {
    let (namespace, name) = d.object.strip_prefix("Ingress ")?.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty()).then(|| ObjectKey::new(namespace, name))
}

/// The object a diagnostic is about (`Ingress ns/name`, `HTTPRoute ns/name`, `GRPCRoute ns/name`,
/// `Gateway ns/name`, `GatewayClass name`), as a reference with its uid (which is how
/// `kubectl describe` finds Events), if it is in the store.
fn reference(store: &crate::store::ObjectStore, d: &Diagnostic) -> Option<ObjectReference> {
    const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";
    let (kind, rest) = d.object.split_once(' ')?;
    let key = match rest.split_once('/') {
        Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
            ObjectKey::new(namespace, name)
        }
        None if kind == "GatewayClass" && !rest.is_empty() => ObjectKey::cluster(rest),
        _ => return None,
    };
    let (api_version, uid) = match kind {
        "Ingress" => (
            "networking.k8s.io/v1",
            store.ingresses().get(&key)?.metadata.uid.clone(),
        ),
        "HTTPRoute" => (GATEWAY_API, store.http_routes().get(&key)?.metadata.uid.clone()),
        "GRPCRoute" => (GATEWAY_API, store.grpc_routes().get(&key)?.metadata.uid.clone()),
        "Gateway" => (GATEWAY_API, store.gateways().get(&key)?.metadata.uid.clone()),
        "GatewayClass" => (
            GATEWAY_API,
            store.gateway_classes().get(&key)?.metadata.uid.clone(),
        ),
        _ => return None,
    };
    Some(ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        namespace: (!key.namespace.is_empty()).then(|| key.namespace.clone()),
        name: Some(key.name),
        uid,
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
    shared: Arc<SharedStore>,
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
            // Resolve each new diagnostic's Ingress to a reference (with its uid, which is how
            // `kubectl describe` finds Events) under one store lock.
            let due: Vec<(Diagnostic, ObjectReference)> = shared.with_state(|s| {
                diagnostics
                    .iter()
                    .filter(|d| sent.get(*d).is_none_or(|s| s.at.elapsed() >= REFRESH))
                    .filter_map(|d| Some((d.clone(), reference(&s.store, d)?)))
                    .collect()
            });
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

    fn diag(object: &str) -> Diagnostic {
        Diagnostic {
            object: object.into(),
            reason: "ServiceNotFound".into(),
            message: "m".into(),
        }
    }

    #[test]
    fn only_diagnostics_about_ingresses_name_an_ingress() {
        assert_eq!(
            ingress_of(&diag("Ingress shop/web")),
            Some(ObjectKey::new("shop", "web"))
        );
        assert_eq!(ingress_of(&diag("File a.yaml")), None);
        assert_eq!(ingress_of(&diag("Secret shop/tls")), None);
        assert_eq!(ingress_of(&diag("Ingress web")), None);
    }

    #[test]
    fn notes_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("ok", 1024), "ok");
    }
}
