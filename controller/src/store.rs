//! The object store: the Kubernetes objects Gantry reads, keyed by namespace and name.
//!
//! Both sources (cluster watches and the manifest directory) only fill this store; everything after
//! it (`translate`) reads it and never sees where an object came from. Maps are `BTreeMap`s so that
//! every iteration is in key order and a translation of the same store is always the same snapshot.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Namespace, Node, Secret, Service},
        discovery::v1::EndpointSlice,
        networking::v1::{Ingress, IngressClass},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use crate::{
    crd::ProxyConfig,
    gateway::api::{BackendTlsPolicy, Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant},
};

/// The label an EndpointSlice carries to name the Service it belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The namespace a namespaced object without one lands in, as `kubectl apply` would do.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Names one object of a kind. Cluster-scoped objects (IngressClass, Node, ProxyConfig) use the
/// namespace `""`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

/// The kinds the store holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Ingress,
    IngressClass,
    Service,
    EndpointSlice,
    Secret,
    Node,
    /// `gantry.dev/v1alpha1` ProxyConfig, the class-wide settings (cluster-scoped).
    ProxyConfig,
    /// ConfigMaps that annotations refer to (`custom-headers`).
    ConfigMap,
    /// `gateway.networking.k8s.io` (cluster-scoped).
    GatewayClass,
    Gateway,
    HttpRoute,
    GrpcRoute,
    ReferenceGrant,
    /// Namespaces, for the labels a Gateway listener's `allowedRoutes` selector reads.
    Namespace,
    BackendTlsPolicy,
}

/// One object of a kind the store holds.
// Not boxed: an `Object` only travels once, from a source into the store, where it is unpacked; the
// size difference costs a memcpy there, while boxes would make every match and constructor noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Object {
    Ingress(Ingress),
    IngressClass(IngressClass),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Secret(Secret),
    Node(Node),
    ProxyConfig(ProxyConfig),
    ConfigMap(ConfigMap),
    GatewayClass(GatewayClass),
    Gateway(Gateway),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
    ReferenceGrant(ReferenceGrant),
    Namespace(Namespace),
    BackendTlsPolicy(BackendTlsPolicy),
}

/// Every object Gantry reads, by kind and key, with EndpointSlices also indexed by the Service they
/// belong to.
///
/// Fields are private so the slice index cannot drift from the slices: change the store only
/// through [`ObjectStore::apply`] and [`ObjectStore::delete`].
#[derive(Default, Clone, Debug)]
pub struct ObjectStore {
    ingresses: BTreeMap<ObjectKey, Ingress>,
    ingress_classes: BTreeMap<ObjectKey, IngressClass>,
    services: BTreeMap<ObjectKey, Service>,
    endpoint_slices: BTreeMap<ObjectKey, EndpointSlice>,
    secrets: BTreeMap<ObjectKey, Secret>,
    nodes: BTreeMap<ObjectKey, Node>,
    proxy_configs: BTreeMap<ObjectKey, ProxyConfig>,
    config_maps: BTreeMap<ObjectKey, ConfigMap>,
    gateway_classes: BTreeMap<ObjectKey, GatewayClass>,
    gateways: BTreeMap<ObjectKey, Gateway>,
    http_routes: BTreeMap<ObjectKey, HttpRoute>,
    grpc_routes: BTreeMap<ObjectKey, GrpcRoute>,
    reference_grants: BTreeMap<ObjectKey, ReferenceGrant>,
    namespaces: BTreeMap<ObjectKey, Namespace>,
    backend_tls_policies: BTreeMap<ObjectKey, BackendTlsPolicy>,
    /// `(namespace, service name)` → the keys of the slices labelled with that service. Slices without
    /// the label are stored but not indexed: no Service claims them.
    slices_by_service: BTreeMap<(String, String), BTreeSet<ObjectKey>>,
}

// === impl ObjectKey ===

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a cluster-scoped object.
    pub fn cluster(name: impl Into<String>) -> Self {
        Self::new("", name)
    }

    /// The key an object's metadata names, as stored: a missing namespace is `""` here; `apply`
    /// fills it in before keying namespaced objects.
    pub fn of(meta: &ObjectMeta) -> Self {
        Self::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ObjectKey {
    /// `namespace/name`, or just `name` for cluster-scoped objects (a leading `/` would read as a
    /// path).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

// === impl Kind ===

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::Ingress,
        Kind::IngressClass,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::Node,
        Kind::ProxyConfig,
        Kind::ConfigMap,
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::ReferenceGrant,
        Kind::Namespace,
        Kind::BackendTlsPolicy,
    ];

    /// Whether objects of this kind live in a namespace (IngressClass, Node and ProxyConfig do not).
    pub fn is_namespaced(self) -> bool {
        !matches!(
            self,
            Kind::IngressClass | Kind::Node | Kind::ProxyConfig | Kind::GatewayClass | Kind::Namespace
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::Node => "Node",
            Kind::ProxyConfig => "ProxyConfig",
            Kind::ConfigMap => "ConfigMap",
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Namespace => "Namespace",
            Kind::BackendTlsPolicy => "BackendTLSPolicy",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Object ===

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Ingress(_) => Kind::Ingress,
            Object::IngressClass(_) => Kind::IngressClass,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Secret(_) => Kind::Secret,
            Object::Node(_) => Kind::Node,
            Object::ProxyConfig(_) => Kind::ProxyConfig,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::GatewayClass(_) => Kind::GatewayClass,
            Object::Gateway(_) => Kind::Gateway,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::Namespace(_) => Kind::Namespace,
            Object::BackendTlsPolicy(_) => Kind::BackendTlsPolicy,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Ingress(o) => &o.metadata,
            Object::IngressClass(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::ProxyConfig(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::GatewayClass(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::GrpcRoute(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::BackendTlsPolicy(o) => &o.metadata,
        }
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Ingress(o) => &mut o.metadata,
            Object::IngressClass(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::EndpointSlice(o) => &mut o.metadata,
            Object::Secret(o) => &mut o.metadata,
            Object::Node(o) => &mut o.metadata,
            Object::ProxyConfig(o) => &mut o.metadata,
            Object::ConfigMap(o) => &mut o.metadata,
            Object::GatewayClass(o) => &mut o.metadata,
            Object::Gateway(o) => &mut o.metadata,
            Object::HttpRoute(o) => &mut o.metadata,
            Object::GrpcRoute(o) => &mut o.metadata,
            Object::ReferenceGrant(o) => &mut o.metadata,
            Object::Namespace(o) => &mut o.metadata,
            Object::BackendTlsPolicy(o) => &mut o.metadata,
        }
    }

    /// The key this object is stored under: namespaced kinds without a namespace get `default`,
    /// cluster-scoped kinds always get `""` (a stray namespace on them means nothing).
    pub fn key(&self) -> ObjectKey {
        let mut key = ObjectKey::of(self.metadata());
        normalize_namespace(self.kind(), &mut key.namespace);
        key
    }
}

/// `Kind namespace/name`, the form diagnostics and logs name objects by.
impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.key())
    }
}

impl From<Ingress> for Object {
    fn from(o: Ingress) -> Self {
        Object::Ingress(o)
    }
}

impl From<IngressClass> for Object {
    fn from(o: IngressClass) -> Self {
        Object::IngressClass(o)
    }
}

impl From<Service> for Object {
    fn from(o: Service) -> Self {
        Object::Service(o)
    }
}

impl From<EndpointSlice> for Object {
    fn from(o: EndpointSlice) -> Self {
        Object::EndpointSlice(o)
    }
}

impl From<Secret> for Object {
    fn from(o: Secret) -> Self {
        Object::Secret(o)
    }
}

impl From<Node> for Object {
    fn from(o: Node) -> Self {
        Object::Node(o)
    }
}

impl From<ProxyConfig> for Object {
    fn from(o: ProxyConfig) -> Self {
        Object::ProxyConfig(o)
    }
}

impl From<ConfigMap> for Object {
    fn from(o: ConfigMap) -> Self {
        Object::ConfigMap(o)
    }
}

impl From<GatewayClass> for Object {
    fn from(o: GatewayClass) -> Self {
        Object::GatewayClass(o)
    }
}

impl From<Gateway> for Object {
    fn from(o: Gateway) -> Self {
        Object::Gateway(o)
    }
}

impl From<HttpRoute> for Object {
    fn from(o: HttpRoute) -> Self {
        Object::HttpRoute(o)
    }
}

impl From<GrpcRoute> for Object {
    fn from(o: GrpcRoute) -> Self {
        Object::GrpcRoute(o)
    }
}

impl From<BackendTlsPolicy> for Object {
    fn from(o: BackendTlsPolicy) -> Self {
        Object::BackendTlsPolicy(o)
    }
}

impl From<Namespace> for Object {
    fn from(o: Namespace) -> Self {
        Object::Namespace(o)
    }
}

impl From<ReferenceGrant> for Object {
    fn from(o: ReferenceGrant) -> Self {
        Object::ReferenceGrant(o)
    }
}

fn normalize_namespace(kind: Kind, namespace: &mut String) {
    if !kind.is_namespaced() {
        namespace.clear();
    } else if namespace.is_empty() {
        namespace.push_str(DEFAULT_NAMESPACE);
    }
}

/// The Service an EndpointSlice belongs to, by its label.
fn slice_service(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

// === impl ObjectStore ===

impl ObjectStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces an object. A namespaced object without a namespace is stored (and its
    /// metadata rewritten) with namespace `default`; a cluster-scoped one has its namespace cleared.
    pub fn apply(&mut self, mut obj: Object) {
        let kind = obj.kind();
        {
            let meta = obj.metadata_mut();
            let ns = meta.namespace.get_or_insert_with(String::new);
            normalize_namespace(kind, ns);
            if ns.is_empty() {
                meta.namespace = None;
            }
        }
        let key = obj.key();
        match obj {
            Object::Ingress(o) => {
                self.ingresses.insert(key, o);
            }
            Object::IngressClass(o) => {
                self.ingress_classes.insert(key, o);
            }
            Object::Service(o) => {
                self.services.insert(key, o);
            }
            Object::EndpointSlice(o) => {
                // The service label may have changed: drop the old index entry before adding the new.
                self.unindex_slice(&key);
                if let Some(service) = slice_service(&o) {
                    self.slices_by_service
                        .entry((key.namespace.clone(), service.to_string()))
                        .or_default()
                        .insert(key.clone());
                }
                self.endpoint_slices.insert(key, o);
            }
            Object::Secret(o) => {
                self.secrets.insert(key, o);
            }
            Object::Node(o) => {
                self.nodes.insert(key, o);
            }
            Object::ProxyConfig(o) => {
                self.proxy_configs.insert(key, o);
            }
            Object::ConfigMap(o) => {
                self.config_maps.insert(key, o);
            }
            Object::GatewayClass(o) => {
                self.gateway_classes.insert(key, o);
            }
            Object::Gateway(o) => {
                self.gateways.insert(key, o);
            }
            Object::HttpRoute(o) => {
                self.http_routes.insert(key, o);
            }
            Object::GrpcRoute(o) => {
                self.grpc_routes.insert(key, o);
            }
            Object::ReferenceGrant(o) => {
                self.reference_grants.insert(key, o);
            }
            Object::Namespace(o) => {
                self.namespaces.insert(key, o);
            }
            Object::BackendTlsPolicy(o) => {
                self.backend_tls_policies.insert(key, o);
            }
        }
    }

    /// Removes an object; removing one that is not there does nothing. The key is taken as the
    /// object was stored: namespace `""` for cluster-scoped kinds, and for namespaced kinds an empty
    /// namespace means `default`, as in `apply`.
    pub fn delete(&mut self, kind: Kind, key: &ObjectKey) {
        let mut key = key.clone();
        normalize_namespace(kind, &mut key.namespace);
        match kind {
            Kind::Ingress => {
                self.ingresses.remove(&key);
            }
            Kind::IngressClass => {
                self.ingress_classes.remove(&key);
            }
            Kind::Service => {
                self.services.remove(&key);
            }
            Kind::EndpointSlice => {
                self.unindex_slice(&key);
                self.endpoint_slices.remove(&key);
            }
            Kind::Secret => {
                self.secrets.remove(&key);
            }
            Kind::Node => {
                self.nodes.remove(&key);
            }
            Kind::ProxyConfig => {
                self.proxy_configs.remove(&key);
            }
            Kind::ConfigMap => {
                self.config_maps.remove(&key);
            }
            Kind::GatewayClass => {
                self.gateway_classes.remove(&key);
            }
            Kind::Gateway => {
                self.gateways.remove(&key);
            }
            Kind::HttpRoute => {
                self.http_routes.remove(&key);
            }
            Kind::GrpcRoute => {
                self.grpc_routes.remove(&key);
            }
            Kind::ReferenceGrant => {
                self.reference_grants.remove(&key);
            }
            Kind::Namespace => {
                self.namespaces.remove(&key);
            }
            Kind::BackendTlsPolicy => {
                self.backend_tls_policies.remove(&key);
            }
        }
    }

    fn unindex_slice(&mut self, key: &ObjectKey) {
        let Some(old) = self.endpoint_slices.get(key) else {
            return;
        };
        let Some(service) = slice_service(old) else { return };
        let index_key = (key.namespace.clone(), service.to_string());
        if let Some(keys) = self.slices_by_service.get_mut(&index_key) {
            keys.remove(key);
            if keys.is_empty() {
                self.slices_by_service.remove(&index_key);
            }
        }
    }

    /// Number of objects of all kinds.
    pub fn len(&self) -> usize {
        self.ingresses.len()
            + self.ingress_classes.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
            + self.nodes.len()
            + self.proxy_configs.len()
            + self.config_maps.len()
            + self.gateway_classes.len()
            + self.gateways.len()
            + self.http_routes.len()
            + self.grpc_routes.len()
            + self.reference_grants.len()
            + self.namespaces.len()
            + self.backend_tls_policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of objects of one kind.
    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Ingress => self.ingresses.len(),
            Kind::IngressClass => self.ingress_classes.len(),
            Kind::Service => self.services.len(),
            Kind::EndpointSlice => self.endpoint_slices.len(),
            Kind::Secret => self.secrets.len(),
            Kind::Node => self.nodes.len(),
            Kind::ProxyConfig => self.proxy_configs.len(),
            Kind::ConfigMap => self.config_maps.len(),
            Kind::GatewayClass => self.gateway_classes.len(),
            Kind::Gateway => self.gateways.len(),
            Kind::HttpRoute => self.http_routes.len(),
            Kind::GrpcRoute => self.grpc_routes.len(),
            Kind::ReferenceGrant => self.reference_grants.len(),
            Kind::Namespace => self.namespaces.len(),
            Kind::BackendTlsPolicy => self.backend_tls_policies.len(),
        }
    }

    pub fn ingresses(&self) -> &BTreeMap<ObjectKey, Ingress> {
        &self.ingresses
    }

    pub fn ingress_classes(&self) -> &BTreeMap<ObjectKey, IngressClass> {
        &self.ingress_classes
    }

    pub fn services(&self) -> &BTreeMap<ObjectKey, Service> {
        &self.services
    }

    pub fn endpoint_slices(&self) -> &BTreeMap<ObjectKey, EndpointSlice> {
        &self.endpoint_slices
    }

    pub fn secrets(&self) -> &BTreeMap<ObjectKey, Secret> {
        &self.secrets
    }

    pub fn nodes(&self) -> &BTreeMap<ObjectKey, Node> {
        &self.nodes
    }

    pub fn proxy_configs(&self) -> &BTreeMap<ObjectKey, ProxyConfig> {
        &self.proxy_configs
    }

    pub fn config_maps(&self) -> &BTreeMap<ObjectKey, ConfigMap> {
        &self.config_maps
    }

    pub fn gateway_classes(&self) -> &BTreeMap<ObjectKey, GatewayClass> {
        &self.gateway_classes
    }

    pub fn gateways(&self) -> &BTreeMap<ObjectKey, Gateway> {
        &self.gateways
    }

    pub fn http_routes(&self) -> &BTreeMap<ObjectKey, HttpRoute> {
        &self.http_routes
    }

    pub fn grpc_routes(&self) -> &BTreeMap<ObjectKey, GrpcRoute> {
        &self.grpc_routes
    }

    pub fn reference_grants(&self) -> &BTreeMap<ObjectKey, ReferenceGrant> {
        &self.reference_grants
    }

    pub fn namespaces(&self) -> &BTreeMap<ObjectKey, Namespace> {
        &self.namespaces
    }

    pub fn backend_tls_policies(&self) -> &BTreeMap<ObjectKey, BackendTlsPolicy> {
        &self.backend_tls_policies
    }

    pub fn config_map(&self, namespace: &str, name: &str) -> Option<&ConfigMap> {
        self.config_maps.get(&ObjectKey::new(namespace, name))
    }

    pub fn proxy_config(&self, name: &str) -> Option<&ProxyConfig> {
        self.proxy_configs.get(&ObjectKey::cluster(name))
    }

    pub fn ingress_class(&self, name: &str) -> Option<&IngressClass> {
        self.ingress_classes.get(&ObjectKey::cluster(name))
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services.get(&ObjectKey::new(namespace, name))
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        self.secrets.get(&ObjectKey::new(namespace, name))
    }

    /// The EndpointSlices labelled `kubernetes.io/service-name: <service>` in a namespace, in key
    /// order.
    pub fn endpoint_slices_for<'a>(
        &'a self,
        namespace: &str,
        service: &str,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a EndpointSlice)> + 'a {
        self.slices_by_service
            .get(&(namespace.to_string(), service.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|key| self.endpoint_slices.get_key_value(key))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::Service;

    use super::*;

    fn slice(ns: Option<&str>, name: &str, service: Option<&str>) -> Object {
        let labels = service.map(|s| BTreeMap::from([(SERVICE_NAME_LABEL.to_string(), s.to_string())]));
        Object::EndpointSlice(EndpointSlice {
            metadata: ObjectMeta {
                namespace: ns.map(str::to_string),
                name: Some(name.to_string()),
                labels,
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ..Default::default()
        })
    }

    fn slice_names(store: &ObjectStore, ns: &str, svc: &str) -> Vec<String> {
        store
            .endpoint_slices_for(ns, svc)
            .map(|(k, _)| k.to_string())
            .collect()
    }

    #[test]
    fn apply_puts_namespaced_objects_without_namespace_in_default() {
        let mut store = ObjectStore::new();
        store.apply(Object::Service(Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                ..Default::default()
            },
            ..Default::default()
        }));
        let svc = store.service("default", "web").expect("stored under default/web");
        assert_eq!(svc.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn cluster_scoped_objects_are_keyed_without_namespace() {
        let mut store = ObjectStore::new();
        store.apply(Object::Node(Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                namespace: Some("stray".into()),
                ..Default::default()
            },
            ..Default::default()
        }));
        let key = ObjectKey::cluster("n1");
        assert!(store.nodes().contains_key(&key));
        assert_eq!(key.to_string(), "n1");
        assert_eq!(ObjectKey::new("ns", "a").to_string(), "ns/a");
        store.delete(Kind::Node, &key);
        assert!(store.is_empty());
    }

    #[test]
    fn endpoint_slices_are_indexed_by_namespace_and_service_label() {
        let mut store = ObjectStore::new();
        store.apply(slice(None, "web-abc", Some("web")));
        store.apply(slice(Some("default"), "web-def", Some("web")));
        store.apply(slice(Some("other"), "web-xyz", Some("web")));
        store.apply(slice(None, "orphan", None));
        assert_eq!(
            slice_names(&store, "default", "web"),
            ["default/web-abc", "default/web-def"]
        );
        assert_eq!(slice_names(&store, "other", "web"), ["other/web-xyz"]);
        assert_eq!(store.count(Kind::EndpointSlice), 4);
    }

    #[test]
    fn relabelled_or_deleted_slices_leave_the_index() {
        let mut store = ObjectStore::new();
        store.apply(slice(None, "s1", Some("web")));
        store.apply(slice(None, "s1", Some("api")));
        assert!(slice_names(&store, "default", "web").is_empty());
        assert_eq!(slice_names(&store, "default", "api"), ["default/s1"]);

        store.delete(Kind::EndpointSlice, &ObjectKey::new("default", "s1"));
        assert!(slice_names(&store, "default", "api").is_empty());
        assert!(store.is_empty());
        // Deleting what is not there is harmless.
        store.delete(Kind::EndpointSlice, &ObjectKey::new("default", "s1"));
    }
}
