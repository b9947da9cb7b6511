//! Ingress status: the addresses Gantry is reached at, in `status.loadBalancer.ingress` of every
//! Ingress it serves.
//!
//! The addresses come from `--publish-status-address` (fixed) or from `--publish-service` (that
//! Service's load-balancer addresses, watched; for a NodePort Service without any, the addresses of
//! the Nodes, also watched, and only then). After every published snapshot, when a status changed
//! in the store (which builds nothing), on a leadership change and when the addresses change, the
//! leader compares every Ingress in the store with what it should say and patches (merge patch on
//! the status subresource) only those that differ:
//!
//! - an Ingress the last build serves ([`Published::served`]) should list our addresses. That
//!   build decides, not the store as it is now: an Ingress that changed class since keeps the
//!   status it had until the build that sees the change is published, so the status never claims
//!   (or disclaims) more than what is served. One served but since deleted (or deleted and created
//!   again under its name: another uid) is left alone;
//! - an Ingress we do not serve that lists exactly our addresses is one we wrote before its class
//!   changed: its list is cleared. (Deciding by content rather than by memory makes a new leader, or
//!   a restarted one, clean up after its predecessor. The cost: two controllers publishing the very
//!   same addresses for different classes would clear each other's status.)
//!
//! Nothing is written before the first snapshot (a partial store would clear Ingresses whose class
//! is not listed yet) or before the publish Service's addresses are known. A failed patch is retried
//! five seconds later.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    pin::pin,
    sync::Arc,
    time::Duration,
};

use crate::metrics::{Metrics, ResultLabels};
use futures_util::{stream::BoxStream, StreamExt};
use k8s_openapi::api::{
    core::v1::{Node, Service},
    networking::v1::{Ingress, IngressLoadBalancerIngress},
};
use kube::{
    api::{Patch, PatchParams},
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};
use serde_json::json;
use tokio::{sync::watch, time::Instant};

use crate::{
    leader::Leadership,
    runtime::{Published, SharedStore},
    store::{ObjectKey, ObjectStore},
    translate::Served,
};

/// Concurrent status patches.
const CONCURRENCY: usize = 8;
/// Wait before retrying after a failed patch.
const RETRY: Duration = Duration::from_secs(5);
/// Longest wait for one patch: a hung API server must not hold the writer (the client's own read
/// timeout is almost five minutes, made for watches).
const PATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the published addresses come from.
#[derive(Clone, Debug)]
pub enum PublishSource {
    /// `--publish-status-address`: IP addresses or host names.
    Addresses(Vec<String>),
    /// `--publish-service NAMESPACE/NAME`.
    Service(ObjectKey),
}

/// One entry of `status.loadBalancer.ingress`. Ports are never written, and ignored when comparing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Address {
    Ip(String),
    Hostname(String),
}

// === impl Address ===

impl Address {
    /// An IP address (v4 or v6) is an `ip`, anything else a `hostname`.
    pub fn parse(s: &str) -> Address {
        let s = s.trim();
        match s.parse::<IpAddr>() {
            Ok(ip) => Address::Ip(ip.to_string()),
            Err(_) => Address::Hostname(s.to_string()),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Address::Ip(ip) => json!({ "ip": ip }),
            Address::Hostname(h) => json!({ "hostname": h }),
        }
    }
}

/// Sorted, without duplicates or empty strings.
fn normalize(mut list: Vec<Address>) -> Vec<Address> {
    list.retain(|a| !matches!(a, Address::Ip(s) | Address::Hostname(s) if s.is_empty()));
    list.sort();
    list.dedup();
    list
}

/// What an Ingress's status says now.
pub fn current_addresses(ing: &Ingress) -> Vec<Address> {
    let entries = ing
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    normalize(entries.iter().filter_map(entry_address).collect())
}

fn entry_address(e: &IngressLoadBalancerIngress) -> Option<Address> {
    match (&e.ip, &e.hostname) {
        (Some(ip), _) if !ip.is_empty() => Some(Address::Ip(ip.clone())),
        (_, Some(h)) if !h.is_empty() => Some(Address::Hostname(h.clone())),
        _ => None,
    }
}

/// The addresses a publish Service stands for: its load-balancer addresses and external IPs; for a
/// NodePort Service without load-balancer addresses, the Nodes' (`None` while they are not listed).
pub fn service_addresses(svc: &Service, nodes: Option<&BTreeMap<String, Address>>) -> Option<Vec<Address>> {
    let lb: Vec<Address> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| match (&e.ip, &e.hostname) {
            (Some(ip), _) if !ip.is_empty() => Some(Address::Ip(ip.clone())),
            (_, Some(h)) if !h.is_empty() => Some(Address::Hostname(h.clone())),
            _ => None,
        })
        .collect();
    let spec = svc.spec.as_ref();
    let external = spec
        .and_then(|s| s.external_ips.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|ip| Address::parse(ip));
    if lb.is_empty() && is_node_port(svc) {
        return Some(normalize(nodes?.values().cloned().chain(external).collect()));
    }
    Some(normalize(lb.into_iter().chain(external).collect()))
}

fn is_node_port(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("NodePort")
}

/// The address a Node is published at: its ExternalIP, else its InternalIP.
fn node_address(node: &Node) -> Option<Address> {
    let addresses = node.status.as_ref()?.addresses.as_deref()?;
    let of_type = |ty: &str| addresses.iter().find(|a| a.type_ == ty && !a.address.is_empty());
    of_type("ExternalIP")
        .or_else(|| of_type("InternalIP"))
        .map(|a| Address::parse(&a.address))
}

/// One status patch to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub key: ObjectKey,
    /// The Ingress's `resourceVersion` when the write was planned.
    pub resource_version: String,
    /// Empty: clear the list.
    pub addresses: Vec<Address>,
}

/// The writes that bring the store's Ingresses in line with `addresses`, given the Ingresses the
/// published build serves. `pending` holds writes made but not yet seen back through the watch (by
/// `resourceVersion` at the time), so they are not made twice.
pub fn plan(
    store: &ObjectStore,
    served: &[Arc<Served>],
    addresses: &[Address],
    pending: &HashMap<ObjectKey, (String, Vec<Address>)>,
) -> Vec<Write> {
    let ours: HashMap<&ObjectKey, Option<&str>> = served.iter().map(|s| (&s.key, s.uid.as_deref())).collect();
    let mut writes = Vec::new();
    for (key, ing) in store.ingresses() {
        let current = current_addresses(ing);
        let desired = match ours.get(key) {
            // Deleted and created again since the build: the next build decides.
            Some(Some(uid)) if ing.metadata.uid.as_deref().is_some_and(|now| now != *uid) => continue,
            Some(_) => addresses.to_vec(),
            None if !current.is_empty() && current == addresses => Vec::new(),
            None => continue,
        };
        if current == desired {
            continue;
        }
        let resource_version = ing.metadata.resource_version.clone().unwrap_or_default();
        if pending
            .get(key)
            .is_some_and(|(rv, a)| *rv == resource_version && *a == desired)
        {
            continue;
        }
        writes.push(Write {
            key: key.clone(),
            resource_version,
            addresses: desired,
        });
    }
    writes
}

/// Starts the status writer; it runs until `shutdown` turns true.
pub fn run(
    client: Client,
    mut addresses: watch::Receiver<Option<Vec<Address>>>,
    shared: Arc<SharedStore>,
    mut leadership: Leadership,
    mut published: watch::Receiver<Published>,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pending: HashMap<ObjectKey, (String, Vec<Address>)> = HashMap::new();
        // A status-only change builds nothing, so it would not wake us through `published`; it may be
        // another writer undoing ours.
        let mut statuses = shared.subscribe_status();
        let mut retry_at: Option<Instant> = None;
        // What the last plan was made for. A build that serves the same Ingresses, with nothing
        // else new (no status change, leadership, addresses or retry), needs no plan: the statuses
        // it would compare are the ones the last plan left right. Without this, every rebuild
        // (each Ingress update) compared every Ingress's status under the store lock that the
        // next rebuild waits for. A new Ingress cannot arrive with a status (the API server
        // ignores it on create), so one that later gets ours is a status change.
        let mut planned: Option<(ServedList, Vec<Address>)> = None;
        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let mut dirty = true;
            tokio::select! {
                _ = gantry_proxy::shutdown_requested(&mut shutdown) => return,
                r = published.changed() => {
                    if r.is_err() {
                        return;
                    }
                    dirty = false;
                }
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
            if !leadership.is_leading() || published.borrow().generation == 0 {
                planned = None;
                continue;
            }
            let Some(addrs) = addresses.borrow().clone() else {
                continue;
            };
            let served = published.borrow().served.clone();
            if !dirty
                && planned
                    .as_ref()
                    .is_some_and(|(s, a)| *a == addrs && same_keys(s, &served))
            {
                continue;
            }
            planned = Some((served.clone(), addrs.clone()));
            let writes = shared.with_state(|s| {
                pending.retain(|key, (rv, _)| {
                    s.store
                        .ingresses()
                        .get(key)
                        .and_then(|i| i.metadata.resource_version.as_ref())
                        == Some(rv)
                });
                plan(&s.store, &served, &addrs, &pending)
            });
            if writes.is_empty() {
                continue;
            }
            let (done, failed) = write_all(&client, &leadership, &shutdown, &metrics, writes).await;
            tracing::info!(written = done.len(), failed, addresses = ?addrs, "Ingress status updated");
            for w in done {
                pending.insert(w.key, (w.resource_version, w.addresses));
            }
            if failed > 0 {
                retry_at = Some(Instant::now() + RETRY);
            }
        }
    })
}

/// The Ingresses one published build serves.
type ServedList = Arc<[Arc<crate::translate::Served>]>;

/// Whether two builds serve the same Ingresses (in the same order: both are oldest first).
fn same_keys(a: &[Arc<crate::translate::Served>], b: &[Arc<crate::translate::Served>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.key == b.key && a.uid == b.uid)
}

/// The addresses Gantry is reached at, as they become known (`None` until then): for the Ingress
/// status and the Gateway API's `status.addresses`.
pub fn addresses(
    client: &Client,
    source: PublishSource,
    shutdown: &watch::Receiver<bool>,
) -> watch::Receiver<Option<Vec<Address>>> {
    match source {
        PublishSource::Addresses(list) => {
            let list = normalize(list.iter().map(|a| Address::parse(a)).collect());
            tracing::info!(addresses = ?list, "publishing fixed status addresses");
            let (tx, rx) = watch::channel(Some(list));
            // The sender must outlive the readers so that `changed()` keeps waiting.
            tokio::spawn(async move { tx.closed().await });
            rx
        }
        PublishSource::Service(key) => track_service(client.clone(), key, shutdown.clone()),
    }
}

/// Makes the writes while still leading and not shutting down. Returns those made and how many
/// failed.
async fn write_all(
    client: &Client,
    leadership: &Leadership,
    shutdown: &watch::Receiver<bool>,
    metrics: &Metrics,
    writes: Vec<Write>,
) -> (Vec<Write>, usize) {
    let results: Vec<(Write, Result<(), String>)> = futures_util::stream::iter(writes)
        .map(|w| async move {
            if !leadership.is_leading() || *shutdown.borrow() {
                return None;
            }
            let api: Api<Ingress> = Api::namespaced(client.clone(), &w.key.namespace);
            let list = if w.addresses.is_empty() {
                serde_json::Value::Null
            } else {
                w.addresses.iter().map(Address::to_json).collect()
            };
            let patch = json!({ "status": { "loadBalancer": { "ingress": list } } });
            let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
            let patched = api.patch_status(&w.key.name, &params, &patch);
            let r = match tokio::time::timeout(PATCH_TIMEOUT, patched).await {
                Ok(Ok(_)) => Ok(()),
                // Deleted meanwhile: nothing to write.
                Ok(Err(kube::Error::Api(s))) if s.is_not_found() => return None,
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {PATCH_TIMEOUT:?}")),
            };
            Some((w, r))
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(std::future::ready)
        .collect()
        .await;
    let mut done = Vec::new();
    let mut failed = 0;
    for (w, r) in results {
        match r {
            Ok(()) => {
                tracing::debug!(ingress = %w.key, addresses = ?w.addresses, "status written");
                metrics
                    .status_writes
                    .get_or_create(&ResultLabels { result: "ok" })
                    .inc();
                done.push(w);
            }
            Err(e) => {
                tracing::warn!(ingress = %w.key, error = %e, "cannot write Ingress status; retrying");
                metrics
                    .status_writes
                    .get_or_create(&ResultLabels { result: "error" })
                    .inc();
                failed += 1;
            }
        }
    }
    (done, failed)
}

/// Watches the publish Service (and, while it is a NodePort Service, the Nodes) and tells its
/// addresses; `None` until they are known.
fn track_service(
    client: Client,
    key: ObjectKey,
    mut shutdown: watch::Receiver<bool>,
) -> watch::Receiver<Option<Vec<Address>>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let api: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
        let mut services = pin!(watcher(api, config).default_backoff());
        let mut node_events: Option<BoxStream<'static, watcher::Result<watcher::Event<Node>>>> = None;
        // The Service (`Some(None)`: listed, absent), and the Nodes' addresses once listed.
        let mut service: Option<Option<Service>> = None;
        let mut listing: Option<Service> = None;
        let mut nodes: Option<BTreeMap<String, Address>> = None;
        let mut nodes_listing: BTreeMap<String, Address> = BTreeMap::new();
        loop {
            let next_node = async {
                match node_events.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = gantry_proxy::shutdown_requested(&mut shutdown) => return,
                ev = services.next() => match ev {
                    Some(Ok(watcher::Event::Init)) => listing = None,
                    Some(Ok(watcher::Event::InitApply(s))) => listing = Some(s),
                    Some(Ok(watcher::Event::InitDone)) => service = Some(listing.take()),
                    Some(Ok(watcher::Event::Apply(s))) => service = Some(Some(s)),
                    Some(Ok(watcher::Event::Delete(_))) => service = Some(None),
                    Some(Err(e)) => tracing::warn!(service = %key, error = %e, "watching the publish Service failed; retrying"),
                    None => return,
                },
                ev = next_node => match ev {
                    Some(Ok(watcher::Event::Init)) => nodes_listing.clear(),
                    Some(Ok(watcher::Event::InitApply(n))) => {
                        if let (Some(name), Some(a)) = (n.metadata.name.clone(), node_address(&n)) {
                            nodes_listing.insert(name, a);
                        }
                    }
                    Some(Ok(watcher::Event::InitDone)) => nodes = Some(std::mem::take(&mut nodes_listing)),
                    Some(Ok(watcher::Event::Apply(n))) => {
                        if let (Some(map), Some(name)) = (nodes.as_mut(), n.metadata.name.clone()) {
                            match node_address(&n) {
                                Some(a) => map.insert(name, a),
                                None => map.remove(&name),
                            };
                        }
                    }
                    Some(Ok(watcher::Event::Delete(n))) => {
                        if let (Some(map), Some(name)) = (nodes.as_mut(), n.metadata.name.as_ref()) {
                            map.remove(name);
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "watching Nodes for the publish Service failed; retrying"),
                    None => node_events = None,
                },
            }
            let Some(svc) = &service else { continue };
            let wants_nodes = svc.as_ref().is_some_and(is_node_port);
            if wants_nodes && node_events.is_none() {
                let api: Api<Node> = Api::all(client.clone());
                node_events = Some(watcher(api, watcher::Config::default()).default_backoff().boxed());
            } else if !wants_nodes && node_events.is_some() {
                node_events = None;
                nodes = None;
            }
            let addresses = match svc {
                Some(svc) => service_addresses(svc, nodes.as_ref()),
                None => Some(Vec::new()),
            };
            if addresses.is_some() {
                tx.send_if_modified(|current| {
                    let changed = *current != addresses;
                    if changed {
                        tracing::info!(service = %key, addresses = ?addresses, "publish Service addresses");
                        *current = addresses;
                    }
                    changed
                });
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::{
            core::v1::{
                LoadBalancerIngress, LoadBalancerStatus, NodeAddress, NodeStatus, ServiceSpec, ServiceStatus,
            },
            networking::v1::{
                IngressLoadBalancerStatus, IngressServiceBackend, IngressSpec, IngressStatus,
                ServiceBackendPort,
            },
        },
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;
    use crate::{store::Object, translate::TranslateOptions};

    fn opts() -> TranslateOptions {
        TranslateOptions {
            ingress_class: "gantry".into(),
            controller_name: "gantry.dev/ingress-controller".into(),
            backend_mode: Default::default(),
            default_ssl_certificate: None,
            fallback_certificate: gantry_proxy::TlsCert::self_signed(&["gantry.invalid"]).unwrap(),
            proxy_config: Default::default(),
            gateway: None,
        }
    }

    fn ingress(name: &str, class: &str, status: &[&str]) -> Object {
        let entries = status
            .iter()
            .map(|a| match Address::parse(a) {
                Address::Ip(ip) => IngressLoadBalancerIngress {
                    ip: Some(ip),
                    ..Default::default()
                },
                Address::Hostname(h) => IngressLoadBalancerIngress {
                    hostname: Some(h),
                    ..Default::default()
                },
            })
            .collect();
        Object::Ingress(Ingress {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some("1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(IngressSpec {
                ingress_class_name: Some(class.into()),
                default_backend: Some(k8s_openapi::api::networking::v1::IngressBackend {
                    service: Some(IngressServiceBackend {
                        name: "web".into(),
                        port: Some(ServiceBackendPort {
                            number: Some(80),
                            ..Default::default()
                        }),
                    }),
                    ..Default::default()
                }),
                ..IngressSpec::default()
            }),
            status: Some(IngressStatus {
                load_balancer: Some(IngressLoadBalancerStatus {
                    ingress: Some(entries),
                }),
            }),
        })
    }

    fn addrs(list: &[&str]) -> Vec<Address> {
        normalize(list.iter().map(|a| Address::parse(a)).collect())
    }

    /// The Ingresses a build of `store` serves.
    fn served(store: &ObjectStore) -> Vec<Arc<Served>> {
        crate::translate::translate(store, &opts(), &gantry_proxy::Snapshot::default()).served
    }

    fn with_uid(mut obj: Object, uid: &str) -> Object {
        if let Object::Ingress(ing) = &mut obj {
            ing.metadata.uid = Some(uid.into());
        }
        obj
    }

    /// (name, addresses) of each write.
    fn summary(writes: &[Write]) -> Vec<(&str, &[Address])> {
        writes
            .iter()
            .map(|w| (w.key.name.as_str(), w.addresses.as_slice()))
            .collect()
    }

    #[test]
    fn ours_get_our_addresses_and_others_keep_theirs_unless_they_are_ours() {
        let mut store = ObjectStore::new();
        store.apply(ingress("fresh", "gantry", &[]));
        store.apply(ingress("done", "gantry", &["lb.example", "10.0.0.1"]));
        store.apply(ingress("left-us", "other", &["10.0.0.1", "lb.example"]));
        store.apply(ingress("theirs", "other", &["192.0.2.9"]));
        store.apply(ingress("never", "other", &[]));
        let ours = addrs(&["10.0.0.1", "lb.example"]);
        let served = served(&store);
        let writes = plan(&store, &served, &ours, &HashMap::new());
        assert_eq!(
            summary(&writes),
            [("fresh", ours.as_slice()), ("left-us", &[][..])]
        );

        // A write on its way is not made twice, until the object changes.
        let pending = HashMap::from([(ObjectKey::new("ns", "fresh"), ("1".to_string(), ours.clone()))]);
        let writes = plan(&store, &served, &ours, &pending);
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert_eq!(writes[0].key.name, "left-us");
    }

    #[test]
    fn the_published_build_decides_which_ingresses_are_ours_until_the_next_one() {
        let ours = addrs(&["10.0.0.1"]);
        let mut store = ObjectStore::new();
        store.apply(ingress("leaving", "gantry", &["10.0.0.1"]));
        store.apply(ingress("joining", "other", &[]));
        let published = served(&store);
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].key, ObjectKey::new("ns", "leaving"));
        assert!(plan(&store, &published, &ours, &HashMap::new()).is_empty());

        // Both change class in the store; the build that sees it is not published yet: the
        // published decision stands (the live store alone would clear one and write the other).
        store.apply(ingress("leaving", "other", &["10.0.0.1"]));
        store.apply(ingress("joining", "gantry", &[]));
        assert!(
            plan(&store, &published, &ours, &HashMap::new()).is_empty(),
            "nothing written before the build is published"
        );

        // Published: now they move.
        let published = served(&store);
        let writes = plan(&store, &published, &ours, &HashMap::new());
        assert_eq!(
            summary(&writes),
            [("joining", ours.as_slice()), ("leaving", &[][..])]
        );
    }

    #[test]
    fn a_served_ingress_gone_or_created_again_since_the_build_is_left_alone() {
        let ours = addrs(&["10.0.0.1"]);
        let mut store = ObjectStore::new();
        store.apply(with_uid(ingress("web", "gantry", &[]), "u-1"));
        store.apply(with_uid(ingress("gone", "gantry", &[]), "u-2"));
        let published = served(&store);
        assert_eq!(
            published.iter().map(|s| s.uid.as_deref()).collect::<Vec<_>>(),
            [Some("u-2"), Some("u-1")],
            "{published:?}"
        );
        assert_eq!(
            summary(&plan(&store, &published, &ours, &HashMap::new())),
            [("gone", ours.as_slice()), ("web", ours.as_slice())]
        );

        // `gone` is deleted and `web` deleted and created again (a new uid) before the next build.
        store.delete(crate::store::Kind::Ingress, &ObjectKey::new("ns", "gone"));
        store.apply(with_uid(ingress("web", "gantry", &[]), "u-3"));
        assert!(plan(&store, &published, &ours, &HashMap::new()).is_empty());
        // The next build serves the new one.
        let writes = plan(&store, &served(&store), &ours, &HashMap::new());
        assert_eq!(summary(&writes), [("web", ours.as_slice())]);
    }

    #[test]
    fn addresses_are_ips_or_hostnames_sorted_and_deduplicated() {
        assert_eq!(
            addrs(&[" 10.0.0.2", "a.example", "10.0.0.2", "::1", ""]),
            [
                Address::Ip("10.0.0.2".into()),
                Address::Ip("::1".into()),
                Address::Hostname("a.example".into()),
            ]
        );
    }

    #[test]
    fn a_publish_service_stands_for_its_load_balancer_or_else_its_nodes() {
        let mut svc = Service {
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ..ServiceSpec::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        hostname: Some("lb.example".into()),
                        ..Default::default()
                    }]),
                }),
                ..ServiceStatus::default()
            }),
            ..Service::default()
        };
        assert_eq!(service_addresses(&svc, None), Some(addrs(&["lb.example"])));
        svc.status = None;
        svc.spec.as_mut().unwrap().type_ = Some("NodePort".into());
        assert_eq!(service_addresses(&svc, None), None, "nodes not listed yet");
        let node = Node {
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "10.1.0.1".into(),
                    },
                    NodeAddress {
                        type_: "ExternalIP".into(),
                        address: "203.0.113.1".into(),
                    },
                ]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        };
        let nodes = BTreeMap::from([("n1".to_string(), node_address(&node).unwrap())]);
        assert_eq!(
            service_addresses(&svc, Some(&nodes)),
            Some(addrs(&["203.0.113.1"]))
        );
    }
}
