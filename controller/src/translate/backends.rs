//! Processor 3 (called by the rules): an Ingress backend → a [`Backend`] with its addresses.
//!
//! Endpoints mode: Service port → the EndpointSlice port of the same name → every ready address.
//! Node-port mode: Service port → its `nodePort` on every usable Node. Either way a backend that
//! cannot be resolved still exists and answers 503 (`Backend::unavailable`): a broken Service is
//! then visible as a 503 with a reason in `/debug/routes` instead of a confusing 404.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use gantry_proxy::{Backend, BackendId, Endpoint};
use k8s_openapi::api::{core::v1::Node, networking::v1::IngressBackend};

use super::{BackendMode, Build, OurIngress, Problem};
use crate::store::{KeptServicePort, Kind, ObjectKey, ObjectStore};

/// What one build knows about backends beyond the cache ([`super::TranslateCache`], where each
/// distinct backend is one `Arc<Backend>`, so that routes to the same Service port share endpoints
/// and the round-robin cursor).
#[derive(Default)]
pub(super) struct Backends {
    /// Addresses of the usable Nodes, computed on first use in node-port mode.
    node_ips: Option<Vec<IpAddr>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct BackendKey {
    /// The Service: its namespace and name.
    service: ObjectKey,
    port: PortRef,
    mode: BackendMode,
}

impl BackendKey {
    /// The Service the backend is of.
    pub(super) fn service(&self) -> &ObjectKey {
        &self.service
    }
}

/// The revisions a backend was built from: its Service with the Service's EndpointSlices
/// ([`ObjectStore::service_revision`], which moves when either does), and in node-port mode
/// (where every usable Node is an endpoint) the Nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct BackendInputs {
    service: Option<u64>,
    nodes: Option<u64>,
}

impl BackendInputs {
    fn of(store: &ObjectStore, key: &BackendKey) -> Self {
        Self {
            service: store.service_revision(&key.service),
            nodes: (key.mode == BackendMode::NodePort).then(|| store.kind_revision(Kind::Node)),
        }
    }

    /// Whether the objects read still have these revisions: two lookups, nothing copied. (It runs
    /// for every backend kept after any Service or EndpointSlice change.)
    fn hold(&self, store: &ObjectStore, key: &BackendKey) -> bool {
        self.service == store.service_revision(&key.service)
            && self.nodes == (key.mode == BackendMode::NodePort).then(|| store.kind_revision(Kind::Node))
    }
}

/// The backend for `key`: the last build's when nothing it was made from changed.
///
/// The entry's revisions are always looked at: builds that skip the memo's stamps
/// ([`still`]) keep entries no route used, and one of a Service that changed meanwhile is stale.
fn cached(b: &mut Build<'_>, key: BackendKey) -> Resolved {
    let store = b.store;
    let node_ips = &mut b.backends.node_ips;
    let resolved = b.cache.backends.get(
        &key,
        |inputs| inputs.hold(store, &key),
        || {
            (
                build_backend(store, node_ips, &key),
                BackendInputs::of(store, &key),
            )
        },
    );
    if let Some(log) = &mut b.backend_log {
        log.push((key, resolved.backend.clone()));
    }
    resolved
}

/// Whether `backend`, which a host kept from the last build resolved, is still what `key`
/// resolves to: the backend's objects have not changed since it was made (or it is what this
/// build made).
///
/// With `trust_untouched` (the build skips the backend memo's stamps, so that what it does not
/// look up stays), a backend of a Service that did not change since the last build is taken
/// without a lookup: the host was whole then ([`Memo`](super::cache::Memo) keeps only the hosts
/// the last build used), and nothing it resolved changed since.
pub(super) fn still(
    b: &mut Build<'_>,
    key: &BackendKey,
    backend: &Arc<Backend>,
    trust_untouched: bool,
) -> bool {
    if trust_untouched && !b.unchanged.service_may_have_changed(&key.service) {
        return true;
    }
    let store = b.store;
    b.cache
        .backends
        .lookup(key, |inputs, _| inputs.hold(store, key))
        .is_some_and(|r| Arc::ptr_eq(&r.backend, backend))
}

/// The Service port as the Ingress names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum PortRef {
    Number(i32),
    Name(String),
    /// The API requires a port; a hand-written file may leave it out.
    Missing,
}

#[derive(Clone)]
pub(super) struct Resolved {
    backend: Arc<Backend>,
    /// Reported on every Ingress that uses the backend.
    problem: Option<Problem>,
}

impl fmt::Display for PortRef {
    /// As written: `80` or `http`; empty when missing (so `BackendId` reads `ns/svc:`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => f.write_str(name),
            PortRef::Missing => Ok(()),
        }
    }
}

/// The backend for one path (or the default backend) of an Ingress, in the Ingress's namespace.
/// `None` when the path must be skipped (resource backends, no Service named); problems are reported
/// on the Ingress.
pub(super) fn resolve(
    b: &mut Build<'_>,
    ing: &OurIngress<'_>,
    backend: &IngressBackend,
    place: &str,
) -> Option<Arc<Backend>> {
    let service = match (&backend.service, &backend.resource) {
        (Some(service), _) if !service.name.is_empty() => service,
        (None, Some(resource)) => {
            let resource = match &resource.api_group {
                Some(group) if !group.is_empty() => format!("{}.{group} {}", resource.kind, resource.name),
                _ => format!("{} {}", resource.kind, resource.name),
            };
            b.report(
                ing.object(),
                Problem::ResourceBackendUnsupported {
                    place: place.to_string(),
                    resource,
                },
            );
            return None;
        }
        _ => {
            b.report(
                ing.object(),
                Problem::InvalidBackend {
                    place: place.to_string(),
                },
            );
            return None;
        }
    };
    // The API allows exactly one of number and name; should both be set, the number is what
    // Kubernetes' own validation message talks about first, so it wins.
    let port = match &service.port {
        Some(p) if p.number.is_some() => PortRef::Number(p.number.unwrap_or_default()),
        Some(p) if p.name.as_deref().is_some_and(|n| !n.is_empty()) => {
            PortRef::Name(p.name.clone().unwrap_or_default())
        }
        _ => PortRef::Missing,
    };
    let key = BackendKey {
        service: ObjectKey::new(ing.key.namespace.as_str(), service.name.as_str()),
        port,
        mode: ing.backend_mode,
    };
    let resolved = cached(b, key);
    if let Some(problem) = resolved.problem {
        b.report(ing.object(), problem);
    }
    Some(resolved.backend)
}

/// A Service port by number in a namespace (a Gateway API `backendRef`), resolved like an Ingress
/// backend: the backend (which answers 503 when it cannot be resolved) and the problem, if any,
/// for the caller to report on its object.
pub(super) fn resolve_service_port(
    b: &mut Build<'_>,
    namespace: &str,
    service: &str,
    port: i32,
    mode: BackendMode,
) -> (Arc<Backend>, Option<Problem>) {
    let key = BackendKey {
        service: ObjectKey::new(namespace, service),
        port: PortRef::Number(port),
        mode,
    };
    let resolved = cached(b, key);
    (resolved.backend, resolved.problem)
}

/// The backend of an Ingress's `default-backend` annotation: the Service `name` in the Ingress's
/// namespace on its **first port**, as ingress-nginx takes it (`Spec.Ports[0]`). Problems are not
/// reported as diagnostics (the annotation's report says them): `Err` when the Service is missing
/// or has no port; a backend without endpoints is returned as it is (the caller does not use it).
pub(super) fn resolve_default_backend(
    b: &mut Build<'_>,
    ing: &OurIngress<'_>,
    name: &str,
) -> Result<Arc<Backend>, String> {
    let namespace = &ing.key.namespace;
    let Some(service) = b.store.service(namespace, name) else {
        return Err(format!("Service {namespace}/{name} not found"));
    };
    let first = service
        .ports
        .first()
        .ok_or_else(|| format!("Service {namespace}/{name} has no port"))?;
    let key = BackendKey {
        service: ObjectKey::new(namespace.as_str(), name),
        port: PortRef::Number(first.port),
        mode: ing.backend_mode,
    };
    Ok(cached(b, key).backend)
}

fn build_backend(store: &ObjectStore, node_ips: &mut Option<Vec<IpAddr>>, key: &BackendKey) -> Resolved {
    let (namespace, service) = (key.service.namespace.as_str(), key.service.name.as_str());
    let id = BackendId {
        namespace: Arc::from(namespace),
        service: Arc::from(service),
        port: Arc::from(key.port.to_string()),
    };
    let backend = id.to_string();
    let service_name = format!("{namespace}/{service}");
    let unavailable = |why: String, problem: Problem| Resolved {
        backend: Arc::new(Backend::unavailable(id.clone(), why)),
        problem: Some(problem),
    };

    let Some(service) = store.service(namespace, service) else {
        return unavailable(
            format!("Service {service_name} not found"),
            Problem::ServiceNotFound {
                backend,
                service: service_name,
            },
        );
    };
    let port = service.ports.iter().find(|p| match &key.port {
        PortRef::Number(n) => p.port == *n,
        PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
        PortRef::Missing => false,
    });
    let Some(port) = port else {
        let wanted = match &key.port {
            PortRef::Number(n) => n.to_string(),
            PortRef::Name(name) => format!("named {name:?}"),
            PortRef::Missing => "(the backend names none)".to_string(),
        };
        return unavailable(
            format!("Service {service_name} has no port {wanted}"),
            Problem::ServicePortNotFound {
                backend,
                service: service_name,
                port: wanted,
            },
        );
    };

    let endpoints = match key.mode {
        BackendMode::Endpoints => slice_endpoints(store, namespace, &key.service.name, port),
        BackendMode::ClusterIp => {
            let ip = service
                .cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            match (ip, valid_port(port.port)) {
                (Some(ip), Some(p)) => Ok(vec![Endpoint {
                    addr: SocketAddr::new(ip, p),
                }]),
                // Headless (`None`) or no address yet: the endpoints, as ingress-nginx falls back.
                _ => {
                    let fallback = slice_endpoints(store, namespace, &key.service.name, port);
                    if let Ok(endpoints) = fallback {
                        return Resolved {
                            backend: Arc::new(Backend::new(id, endpoints)),
                            problem: Some(Problem::NoClusterIp {
                                backend,
                                service: service_name,
                            }),
                        };
                    }
                    fallback
                }
            }
        }
        BackendMode::NodePort => {
            let Some(node_port) = port.node_port.and_then(valid_port) else {
                return unavailable(
                    format!("Service port {} has no nodePort", key.port),
                    Problem::NodePortNotFound {
                        backend,
                        port: key.port.to_string(),
                    },
                );
            };
            let ips = node_ips.get_or_insert_with(|| usable_node_ips(store));
            if ips.is_empty() {
                Err("no Node is ready and has an address")
            } else {
                Ok(ips
                    .iter()
                    .map(|ip| Endpoint {
                        addr: SocketAddr::new(*ip, node_port),
                    })
                    .collect())
            }
        }
    };
    match endpoints {
        Ok(endpoints) => Resolved {
            backend: Arc::new(Backend::new(id, endpoints)),
            problem: None,
        },
        Err(why) => unavailable(why.to_string(), Problem::NoEndpoints { backend, why }),
    }
}

/// Ready pod addresses for a Service port: from every IPv4/IPv6 EndpointSlice of the Service, the
/// slice port with the same name as the Service port (both unnamed counts as the same name), and
/// every address of every endpoint not marked `ready: false` (unset means ready, as the API says).
fn slice_endpoints(
    store: &ObjectStore,
    namespace: &str,
    service: &str,
    port: &KeptServicePort,
) -> Result<Vec<Endpoint>, &'static str> {
    let want = port.name.as_deref().unwrap_or_default();
    let mut any_slice = false;
    let mut endpoints = Vec::new();
    for (_, slice) in store.endpoint_slices_for(namespace, service) {
        any_slice = true;
        // FQDN slices name hosts, not addresses; resolving them would be I/O.
        if !matches!(&*slice.address_type, "IPv4" | "IPv6") {
            continue;
        }
        let slice_port = slice
            .ports
            .iter()
            .find(|p| p.name.as_deref().unwrap_or_default() == want)
            .and_then(|p| p.port)
            .and_then(valid_port);
        let Some(slice_port) = slice_port else { continue };
        for endpoint in &slice.endpoints {
            if endpoint.ready == Some(false) {
                continue;
            }
            endpoints.extend(
                endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                    .map(|ip| Endpoint {
                        addr: SocketAddr::new(ip, slice_port),
                    }),
            );
        }
    }
    match (any_slice, endpoints.is_empty()) {
        (false, _) => Err("the Service has no EndpointSlices"),
        (true, true) => Err("the Service has no ready endpoints for this port"),
        (true, false) => Ok(endpoints),
    }
}

/// Every Node not reported NotReady (`Ready` condition `"False"`; `"Unknown"` is given the benefit
/// of the doubt, since a node that just lost its kubelet often still forwards), at its InternalIP,
/// or its ExternalIP when it has no InternalIP.
fn usable_node_ips(store: &ObjectStore) -> Vec<IpAddr> {
    store
        .nodes()
        .values()
        .filter(|node| !is_not_ready(node))
        .filter_map(node_ip)
        .collect()
}

fn is_not_ready(node: &Node) -> bool {
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "False")
}

fn node_ip(node: &Node) -> Option<IpAddr> {
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default();
    let of_type = |ty: &str| {
        addresses
            .iter()
            .filter(|a| a.type_ == ty)
            .find_map(|a| a.address.parse::<IpAddr>().ok())
    };
    of_type("InternalIP").or_else(|| of_type("ExternalIP"))
}

fn valid_port(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}
