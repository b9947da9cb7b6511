//! Gateway API status: GatewayClass, Gateway (with its listeners and addresses) and HTTPRoute
//! `status.parents`, written by the leader after every published build, and looked at again when
//! only a status changed in the store (which builds nothing).
//!
//! What to write is decided by translation ([`GatewayApiStatus`]): the status writer only adds
//! what translation must not know (the clock for `lastTransitionTime`, the addresses Gantry is
//! reached at) and compares with what the object says now:
//!
//! - `lastTransitionTime` is kept from the current condition of the same type when its status did
//!   not change, so an unchanged condition compares equal and is not written again;
//! - an HTTPRoute's `status.parents` entries of other controllers are kept as they are: Gantry
//!   writes only the entries with its own `controllerName`;
//! - every patch is a merge patch on the status subresource that carries the `resourceVersion` it
//!   was planned from, so a write based on a stale read fails (409) and is planned again from the
//!   newer object instead of undoing another writer's change;
//! - the same status is written at most once per [`REWRITE_AFTER`] for one object, whatever the
//!   comparison says, so a difference that survives a write (a field the API server normalizes)
//!   can never turn into a write loop.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition as K8sCondition, Time},
    jiff::Timestamp,
};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use serde_json::json;
use tokio::sync::watch;

use crate::{
    gateway::api::{
        backendtlspolicies::{
            BackendTlsPolicyStatus, BackendTlsPolicyStatusAncestors,
            BackendTlsPolicyStatusAncestorsAncestorRef,
        },
        gatewayclasses::{GatewayClassStatus, GatewayClassStatusSupportedFeatures},
        gateways::{
            GatewayStatus, GatewayStatusAddresses, GatewayStatusListeners,
            GatewayStatusListenersSupportedKinds,
        },
        httproutes::{HttpRouteStatus, HttpRouteStatusParents, HttpRouteStatusParentsParentRef},
        BackendTlsPolicy, Gateway, GatewayClass, GrpcRoute, HttpRoute,
    },
    leader::Leadership,
    metrics::{Metrics, ResultLabels},
    runtime::{Published, SharedStore},
    status::Address,
    store::{ObjectKey, ObjectStore},
    translate::{
        gateway::{Condition, GatewayApiStatus, GROUP},
        TranslateOptions,
    },
};

/// Concurrent status patches.
const CONCURRENCY: usize = 8;
/// Wait before retrying after a failed patch.
const RETRY: Duration = Duration::from_secs(5);
/// Longest wait for one patch.
const PATCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The same status is not written again for the same object within this time.
const REWRITE_AFTER: Duration = Duration::from_secs(10);

/// One status patch.
#[derive(Clone, Debug)]
pub struct Write {
    pub kind: &'static str,
    pub key: ObjectKey,
    /// The whole `status` to write.
    pub status: serde_json::Value,
    /// The object's `resourceVersion` when the write was planned.
    pub resource_version: String,
}

/// Starts the writer; it runs until `shutdown` turns true.
#[allow(clippy::too_many_arguments)]
pub fn run(
    client: Client,
    addresses: Option<watch::Receiver<Option<Vec<Address>>>>,
    shared: Arc<SharedStore>,
    opts: Arc<TranslateOptions>,
    mut leadership: Leadership,
    mut published: watch::Receiver<Published>,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let Some(controller) = opts.gateway.as_ref().map(|g| g.controller_name.clone()) else {
        return tokio::spawn(async {});
    };
    // Without a publish source the Gateways have no addresses; the sender lives as long as the
    // writer, so that `changed()` keeps waiting instead of ending the loop.
    let (fixed, mut addresses) = match addresses {
        Some(rx) => (None, rx),
        None => {
            let (tx, rx) = watch::channel(Some(Vec::new()));
            (Some(tx), rx)
        }
    };
    tokio::spawn(async move {
        let _fixed = fixed;
        let mut written: HashMap<(&'static str, ObjectKey), (serde_json::Value, Instant)> = HashMap::new();
        // A status-only change builds nothing, so it would not wake us through `published`; it may be
        // another writer undoing ours.
        let mut statuses = shared.subscribe_status();
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
                r = statuses.changed() => {
                    if r.is_err() || !crate::runtime::settle_status(&mut statuses, &mut shutdown).await {
                        return;
                    }
                }
                _ = leadership.changed() => {}
                r = addresses.changed() => if r.is_err() { return },
                _ = retry => {}
            }
            retry_at = None;
            let status = published.borrow().gateway.clone();
            if !leadership.is_leading() || published.borrow().generation == 0 {
                continue;
            }
            let addrs = addresses.borrow().clone().unwrap_or_default();
            let now = Time(Timestamp::now());
            let writes = shared.with_state(|s| plan(&s.store, &status, &controller, &addrs, &now));
            let writes: Vec<Write> = writes
                .into_iter()
                .filter(|w| {
                    written
                        .get(&(w.kind, w.key.clone()))
                        .is_none_or(|(v, at)| *v != strip_times(&w.status) || at.elapsed() > REWRITE_AFTER)
                })
                .collect();
            if writes.is_empty() {
                continue;
            }
            let results = futures_util::stream::iter(writes)
                .map(|w| {
                    let client = client.clone();
                    async move {
                        let r = patch(&client, &w).await;
                        (w, r)
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            let mut failed = 0;
            for (w, r) in results {
                let result = match r {
                    Ok(()) => {
                        written.insert((w.kind, w.key.clone()), (strip_times(&w.status), Instant::now()));
                        "ok"
                    }
                    Err(e) => {
                        tracing::warn!(kind = w.kind, object = %w.key, error = %e, "cannot write status; retrying");
                        failed += 1;
                        "error"
                    }
                };
                metrics
                    .status_writes
                    .get_or_create(&ResultLabels { result })
                    .inc();
            }
            if failed > 0 {
                retry_at = Some(tokio::time::Instant::now() + RETRY);
            }
        }
    })
}

async fn patch(client: &Client, w: &Write) -> Result<(), String> {
    let body = json!({
        "metadata": { "resourceVersion": w.resource_version },
        "status": w.status,
    });
    let params = PatchParams::default();
    let patch = Patch::Merge(&body);
    let fut = async {
        match w.kind {
            "GatewayClass" => Api::<GatewayClass>::all(client.clone())
                .patch_status(&w.key.name, &params, &patch)
                .await
                .map(|_| ()),
            "Gateway" => Api::<Gateway>::namespaced(client.clone(), &w.key.namespace)
                .patch_status(&w.key.name, &params, &patch)
                .await
                .map(|_| ()),
            "BackendTLSPolicy" => Api::<BackendTlsPolicy>::namespaced(client.clone(), &w.key.namespace)
                .patch_status(&w.key.name, &params, &patch)
                .await
                .map(|_| ()),
            "GRPCRoute" => Api::<GrpcRoute>::namespaced(client.clone(), &w.key.namespace)
                .patch_status(&w.key.name, &params, &patch)
                .await
                .map(|_| ()),
            _ => Api::<HttpRoute>::namespaced(client.clone(), &w.key.namespace)
                .patch_status(&w.key.name, &params, &patch)
                .await
                .map(|_| ()),
        }
    };
    match tokio::time::timeout(PATCH_TIMEOUT, fut).await {
        Ok(Ok(())) => Ok(()),
        // Deleted meanwhile: nothing to write.
        Ok(Err(kube::Error::Api(s))) if s.is_not_found() => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {PATCH_TIMEOUT:?}")),
    }
}

/// The status without `lastTransitionTime`s: what "the same status" means for [`REWRITE_AFTER`].
fn strip_times(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(k, _)| k.as_str() != "lastTransitionTime")
            .map(|(k, v)| (k.clone(), strip_times(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        serde_json::Value::Array(a) => a.iter().map(strip_times).collect(),
        other => other.clone(),
    }
}

/// The conditions as Kubernetes writes them, keeping the transition time of a condition whose
/// status did not change.
fn conditions(
    desired: &[Condition],
    current: &[K8sCondition],
    generation: i64,
    now: &Time,
) -> Vec<K8sCondition> {
    desired
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let since = current
                .iter()
                .find(|k| k.type_ == c.type_ && k.status == status)
                .map_or_else(|| now.clone(), |k| k.last_transition_time.clone());
            K8sCondition {
                type_: c.type_.to_string(),
                status: status.to_string(),
                reason: c.reason.to_string(),
                message: truncate(&c.message),
                observed_generation: Some(generation),
                last_transition_time: since,
            }
        })
        .collect()
}

/// Condition messages are at most 32768 bytes.
fn truncate(s: &str) -> String {
    if s.len() <= 32_768 {
        return s.to_owned();
    }
    let mut end = 32_000;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn rv(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.resource_version.clone().unwrap_or_default()
}

/// The writes that bring the store's objects in line with `status`.
pub fn plan(
    store: &ObjectStore,
    status: &GatewayApiStatus,
    controller: &str,
    addresses: &[Address],
    now: &Time,
) -> Vec<Write> {
    let mut writes = Vec::new();
    for c in &status.classes {
        let Some(obj) = store.gateway_classes().get(&ObjectKey::cluster(c.name.as_str())) else {
            continue;
        };
        let current = obj.status.clone().unwrap_or(GatewayClassStatus {
            conditions: None,
            supported_features: None,
        });
        let desired = GatewayClassStatus {
            conditions: Some(conditions(
                &c.conditions,
                current.conditions.as_deref().unwrap_or_default(),
                c.generation,
                now,
            )),
            supported_features: (!c.supported_features.is_empty()).then(|| {
                c.supported_features
                    .iter()
                    .map(|f| GatewayClassStatusSupportedFeatures { name: (*f).into() })
                    .collect()
            }),
        };
        if desired != current {
            writes.push(Write {
                kind: "GatewayClass",
                key: ObjectKey::cluster(c.name.as_str()),
                status: serde_json::to_value(&desired).unwrap_or_default(),
                resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
            });
        }
    }
    for g in &status.gateways {
        let Some(obj) = store.gateways().get(&g.key) else {
            continue;
        };
        let current = obj.status.clone().unwrap_or(GatewayStatus {
            addresses: None,
            attached_listener_sets: None,
            conditions: None,
            listeners: None,
        });
        let current_listeners = current.listeners.as_deref().unwrap_or_default();
        // A Gateway with addresses of its own (`--gateway-address-pool`) publishes those.
        let own: Option<Vec<Address>> = g
            .addresses
            .as_ref()
            .map(|a| a.iter().map(|ip| Address::Ip(ip.to_string())).collect());
        let desired = GatewayStatus {
            addresses: Some(
                own.as_deref()
                    .unwrap_or(addresses)
                    .iter()
                    .map(|a| match a {
                        Address::Ip(ip) => GatewayStatusAddresses {
                            r#type: Some("IPAddress".into()),
                            value: ip.clone(),
                        },
                        Address::Hostname(h) => GatewayStatusAddresses {
                            r#type: Some("Hostname".into()),
                            value: h.clone(),
                        },
                    })
                    .collect(),
            ),
            attached_listener_sets: current.attached_listener_sets,
            conditions: Some(conditions(
                &g.conditions,
                current.conditions.as_deref().unwrap_or_default(),
                g.generation,
                now,
            )),
            listeners: Some(
                g.listeners
                    .iter()
                    .map(|l| {
                        let before = current_listeners
                            .iter()
                            .find(|c| c.name == l.name)
                            .map(|c| c.conditions.as_slice())
                            .unwrap_or_default();
                        GatewayStatusListeners {
                            attached_routes: l.attached_routes,
                            conditions: conditions(&l.conditions, before, g.generation, now),
                            name: l.name.clone(),
                            supported_kinds: Some(
                                l.supported_kinds
                                    .iter()
                                    .map(|k| GatewayStatusListenersSupportedKinds {
                                        group: Some(GROUP.into()),
                                        kind: (*k).into(),
                                    })
                                    .collect(),
                            ),
                        }
                    })
                    .collect(),
            ),
        };
        if desired != current {
            writes.push(Write {
                kind: "Gateway",
                key: g.key.clone(),
                status: serde_json::to_value(&desired).unwrap_or_default(),
                resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
            });
        }
    }
    // Routes: HTTPRoute and GRPCRoute statuses have the same shape.
    let mut routes: Vec<(&'static str, &ObjectKey, Option<HttpRouteStatus>, String)> = Vec::new();
    for (key, obj) in store.http_routes() {
        routes.push(("HTTPRoute", key, obj.status.clone(), rv(&obj.metadata)));
    }
    for (key, obj) in store.grpc_routes() {
        let current = obj
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| serde_json::from_value(v).ok());
        routes.push(("GRPCRoute", key, current, rv(&obj.metadata)));
    }
    for (kind, key, current, resource_version) in routes {
        let ours = status.routes.iter().find(|r| r.kind == kind && &r.key == key);
        let current = current.unwrap_or(HttpRouteStatus { parents: Vec::new() });
        if ours.is_none() && current.parents.iter().all(|p| p.controller_name != controller) {
            continue;
        }
        // Other controllers' entries stay as they are, first; ours follow in parentRef order. A
        // route whose parents no longer include one of our Gateways keeps no entry of ours.
        let mut parents: Vec<HttpRouteStatusParents> = current
            .parents
            .iter()
            .filter(|p| p.controller_name != controller)
            .cloned()
            .collect();
        for r in ours.into_iter() {
            for p in &r.parents {
                let parent_ref = HttpRouteStatusParentsParentRef {
                    group: p.group.clone(),
                    kind: p.kind.clone(),
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                    port: p.port,
                    section_name: p.section_name.clone(),
                };
                let before = current
                    .parents
                    .iter()
                    .find(|c| c.controller_name == controller && c.parent_ref == parent_ref)
                    .map(|c| c.conditions.as_slice())
                    .unwrap_or_default();
                parents.push(HttpRouteStatusParents {
                    conditions: conditions(&p.conditions, before, r.generation, now),
                    controller_name: controller.to_owned(),
                    parent_ref,
                });
            }
        }
        let desired = HttpRouteStatus { parents };
        if desired != current {
            writes.push(Write {
                kind,
                key: key.clone(),
                status: serde_json::to_value(&desired).unwrap_or_default(),
                resource_version,
            });
        }
    }
    // BackendTLSPolicies: one ancestor entry per Gateway of ours that reaches a targeted Service;
    // other controllers' entries are kept as they are.
    for (key, obj) in store.backend_tls_policies() {
        let ours = status.policies.iter().find(|p| &p.key == key);
        let current = obj.status.clone().unwrap_or(BackendTlsPolicyStatus {
            ancestors: Vec::new(),
        });
        if ours.is_none() && current.ancestors.iter().all(|a| a.controller_name != controller) {
            continue;
        }
        let mut ancestors: Vec<BackendTlsPolicyStatusAncestors> = current
            .ancestors
            .iter()
            .filter(|a| a.controller_name != controller)
            .cloned()
            .collect();
        for p in ours.into_iter() {
            for gw in &p.ancestors {
                let ancestor_ref = BackendTlsPolicyStatusAncestorsAncestorRef {
                    group: Some(GROUP.into()),
                    kind: Some("Gateway".into()),
                    name: gw.name.clone(),
                    namespace: Some(gw.namespace.clone()),
                    port: None,
                    section_name: None,
                };
                let before = current
                    .ancestors
                    .iter()
                    .find(|a| a.controller_name == controller && a.ancestor_ref == ancestor_ref)
                    .map(|a| a.conditions.as_slice())
                    .unwrap_or_default();
                ancestors.push(BackendTlsPolicyStatusAncestors {
                    ancestor_ref,
                    conditions: conditions(&p.conditions, before, p.generation, now),
                    controller_name: controller.to_owned(),
                });
            }
        }
        let desired = BackendTlsPolicyStatus { ancestors };
        if desired != current {
            writes.push(Write {
                kind: "BackendTLSPolicy",
                key: key.clone(),
                status: serde_json::to_value(&desired).unwrap_or_default(),
                resource_version: rv(&obj.metadata),
            });
        }
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{manifests::parse_manifests, store::ObjectStore, translate::gateway::ParentStatus};

    fn store(yaml: &str) -> ObjectStore {
        let mut store = ObjectStore::new();
        for o in parse_manifests("t.yaml", yaml).unwrap().objects {
            store.apply(o);
        }
        store
    }

    fn route_status(conditions: Vec<Condition>) -> GatewayApiStatus {
        GatewayApiStatus {
            routes: vec![crate::translate::gateway::RouteStatus {
                kind: "HTTPRoute",
                key: ObjectKey::new("ns", "r"),
                generation: 2,
                parents: vec![ParentStatus {
                    group: None,
                    kind: None,
                    namespace: None,
                    name: "gw".into(),
                    section_name: None,
                    port: None,
                    conditions,
                }],
            }],
            ..Default::default()
        }
    }

    const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns, resourceVersion: "5"}
spec: {parentRefs: [{name: gw}]}
status:
  parents:
  - controllerName: example.com/other
    parentRef: {name: theirs}
    conditions: [{type: Accepted, status: "True", reason: Accepted, message: "", lastTransitionTime: "2026-01-01T00:00:00Z"}]
  - controllerName: gantry.dev/gateway-controller
    parentRef: {name: gw}
    conditions: [{type: Accepted, status: "True", reason: Accepted, message: ok, observedGeneration: 2, lastTransitionTime: "2026-01-01T00:00:00Z"}]
"#;

    #[test]
    fn an_unchanged_status_is_not_written_and_others_entries_are_kept() {
        let store = store(ROUTE);
        let now = Time(Timestamp::now());
        let same = route_status(vec![Condition {
            type_: "Accepted",
            status: true,
            reason: "Accepted",
            message: "ok".into(),
        }]);
        assert!(plan(&store, &same, "gantry.dev/gateway-controller", &[], &now).is_empty());

        let changed = route_status(vec![Condition {
            type_: "Accepted",
            status: false,
            reason: "NotAllowedByListeners",
            message: "no".into(),
        }]);
        let writes = plan(&store, &changed, "gantry.dev/gateway-controller", &[], &now);
        assert_eq!(writes.len(), 1);
        let w = &writes[0];
        assert_eq!(w.resource_version, "5");
        let parents = w.status["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 2, "{parents:#?}");
        assert_eq!(
            parents[0]["controllerName"], "example.com/other",
            "kept first, untouched"
        );
        assert_eq!(parents[1]["conditions"][0]["reason"], "NotAllowedByListeners");
        assert_ne!(
            parents[1]["conditions"][0]["lastTransitionTime"], "2026-01-01T00:00:00Z",
            "a changed status is a transition"
        );
    }

    #[test]
    fn a_route_that_left_our_gateways_loses_only_our_entries() {
        let store = store(ROUTE);
        let now = Time(Timestamp::now());
        let writes = plan(
            &store,
            &GatewayApiStatus::default(),
            "gantry.dev/gateway-controller",
            &[],
            &now,
        );
        assert_eq!(writes.len(), 1);
        let parents = writes[0].status["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 1);
        assert_eq!(parents[0]["controllerName"], "example.com/other");
    }
}
