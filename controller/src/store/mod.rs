//! The object store: the Kubernetes objects Gantry reads, keyed by namespace and name.
//!
//! Both sources (cluster watches and the manifest directory) only fill this store; everything after
//! it (`translate`) reads it and never sees where an object came from. Maps are `BTreeMap`s so that
//! every iteration is in key order and a translation of the same store is always the same snapshot.

use std::{
    collections::{btree_map::Entry, BTreeMap, HashMap, VecDeque},
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

mod kept;

pub use kept::{KeptEndpoint, KeptService, KeptServicePort, KeptSlice, KeptSlicePort};

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

/// What applying or deleting one object changed, in increasing order: a batch of events changed
/// the most any of its events did ([`Ord::max`]).
///
/// Only [`Change::Read`] rebuilds the snapshot. Watch events that change nothing translation reads
/// are common: every status Gantry writes comes back as an event of its own, and every write bumps
/// `resourceVersion`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Nothing Gantry reads: `resourceVersion`, `managedFields`, timestamps other than
    /// `creationTimestamp`, labels and annotations slimming dropped, the status of a kind whose
    /// status translation does not read (Service).
    Unchanged,
    /// Only the status of a kind whose status Gantry writes (Ingress and the Gateway API kinds)
    /// changed, in a part translation does not read. Nothing to rebuild, but the status writers
    /// look again: this is how they notice another writer undoing theirs.
    Status,
    /// Something translation reads: the object is new or gone, or its spec, data, annotations,
    /// labels, `creationTimestamp`, `uid`, the `generation` that Gateway API status reports, a
    /// Gateway's `status.addresses` (where a pool address is remembered) or a Node's addresses and
    /// readiness changed.
    Read,
}

/// Every object Gantry reads, by kind and key, with EndpointSlices also indexed by the Service they
/// belong to.
///
/// Fields are private so the slice index cannot drift from the slices: change the store only
/// through [`ObjectStore::apply`] and [`ObjectStore::delete`].
#[derive(Default, Clone, Debug)]
pub struct ObjectStore {
    ingresses: Objects<Ingress>,
    ingress_classes: BTreeMap<ObjectKey, IngressClass>,
    /// Services and EndpointSlices as [`kept`] (what translation reads, in types of their own).
    services: BTreeMap<ObjectKey, KeptService>,
    endpoint_slices: BTreeMap<ObjectKey, KeptSlice>,
    secrets: Objects<Secret>,
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
    /// `(namespace, service name)` → the keys of the slices labelled with that service, sorted.
    /// Slices without the label are stored but not indexed: no Service claims them. (A sorted
    /// `Vec`: most Services have one slice, and a one-key `BTreeSet` allocates a whole node.)
    slices_by_service: BTreeMap<(String, String), Vec<ObjectKey>>,
    /// The revision at which what translation reads of each object last changed ([`Change::Read`]):
    /// what the translation cache keys its results by (`resourceVersion` would do for objects from
    /// the API server, but moves on status-only writes, and files and tests have none).
    revisions: HashMap<Kind, HashMap<ObjectKey, u64, foldhash::fast::RandomState>>,
    /// The revisions of Ingresses, kept apart (and not in `revisions`) in key order, so that a
    /// walk over every Ingress gets each one's revision without a lookup
    /// ([`ObjectStore::ingresses_with_revisions`]).
    ingress_revisions: BTreeMap<ObjectKey, u64>,
    /// The last revision handed out; revisions only grow, so a deleted and re-created object never
    /// gets one it had before.
    revision: u64,
    /// The last revision at which an object of each kind changed, was added or was removed.
    kind_revisions: HashMap<Kind, u64>,
    /// By Service key: the last revision at which the Service or an EndpointSlice labelled with it
    /// changed, came or went (see [`ObjectStore::service_revision`]).
    service_revisions: HashMap<ObjectKey, u64, foldhash::fast::RandomState>,
    /// Each move of a [`service_revision`](ObjectStore::service_revision): which Services an
    /// endpoint change touched, so that a build can look at those Services' backends alone
    /// ([`ObjectStore::services_touched_since`]).
    service_log: TouchLog,
    /// Each change of an Ingress that translation reads (it changed, came or went): which
    /// Ingresses a build must look at when it patches the last build
    /// ([`ObjectStore::ingresses_touched_since`]).
    ingress_log: TouchLog,
    /// Which store this is: a [`Mark`] of another store (a clone included) says nothing of this one.
    lineage: Lineage,
}

/// How many touches a [`TouchLog`] remembers. A build that comes after more (a relist, a bulk
/// rollout) looks at everything instead, as it would without the log.
const TOUCH_LOG: usize = 4096;

/// The last [`TOUCH_LOG`] objects of one kind that moved, each with the revision it moved at,
/// oldest first.
#[derive(Clone, Debug, Default)]
struct TouchLog {
    log: VecDeque<(u64, ObjectKey)>,
    /// The newest revision dropped from `log` (0: none yet): the log is complete after it.
    floor: u64,
}

impl TouchLog {
    fn push(&mut self, revision: u64, key: ObjectKey) {
        if self.log.len() == TOUCH_LOG {
            if let Some((dropped, _)) = self.log.pop_front() {
                self.floor = dropped;
            }
        }
        self.log.push_back((revision, key));
    }

    /// What moved after `revision`, newest first (a key may come more than once); `None` when the
    /// log has forgotten some of it.
    fn since(&self, revision: u64) -> Option<impl Iterator<Item = &ObjectKey> + '_> {
        if revision < self.floor {
            return None;
        }
        Some(
            self.log
                .iter()
                .rev()
                .take_while(move |(r, _)| *r > revision)
                .map(|(_, key)| key),
        )
    }
}

/// A store's identity for [`Mark`]s: every new store and every clone gets its own, since a clone's
/// history goes its own way from the clone on.
#[derive(Debug, PartialEq, Eq)]
struct Lineage(u64);

impl Default for Lineage {
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

impl Clone for Lineage {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Objects of one kind by key. The high-volume k8s-openapi kinds (Ingresses and Secrets) are
/// boxed: a B-tree node holds eleven values inline and is about half full when filled in key
/// order (as a list arrives), so an inline k8s-openapi struct (456 to 584 bytes) would cost
/// nearly twice its size in node space. (Services and EndpointSlices are [`kept`]: small structs,
/// inline.)
pub type Objects<T> = BTreeMap<ObjectKey, Box<T>>;

/// A point in one store's history ([`ObjectStore::mark`]), to ask later what changed since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    lineage: u64,
    revision: u64,
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

// === change detection ===

impl Change {
    /// Whether the snapshot must be built again.
    pub fn is_read(self) -> bool {
        self == Change::Read
    }

    /// `Read` when something translation reads differs, else `Status` when the status Gantry
    /// writes differs.
    fn of(read_differs: bool, status_differs: bool) -> Self {
        if read_differs {
            Change::Read
        } else if status_differs {
            Change::Status
        } else {
            Change::Unchanged
        }
    }
}

/// Stores `new` under `key` and compares it with what it replaces; a new key is a change.
/// Revisions are unique in the process, not per store: file mode builds a new store on every
/// reload, and a cache keyed by revisions must never take a new store's object for an old one's.
fn next_revision() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn replace<T>(
    map: &mut BTreeMap<ObjectKey, T>,
    key: ObjectKey,
    new: T,
    change: fn(&T, &T) -> Change,
) -> Change {
    match map.entry(key) {
        Entry::Vacant(e) => {
            e.insert(new);
            Change::Read
        }
        Entry::Occupied(mut e) => {
            let change = change(e.get(), &new);
            e.insert(new);
            change
        }
    }
}

/// Whether two versions of an object's metadata differ in what translation, the status writers
/// and Events read of it: name and namespace, labels and annotations (both already slimmed to the
/// ones read), `creationTimestamp` (the oldest object wins conflicts) and `uid` (Events name their
/// object by it). The destructuring names every field, so a new one in `k8s-openapi` needs a
/// decision here.
fn meta_differs(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    let ObjectMeta {
        annotations,
        creation_timestamp,
        labels,
        name,
        namespace,
        uid,
        // Never read: moves on every write, or only says who wrote or how deletion proceeds.
        deletion_grace_period_seconds: _,
        deletion_timestamp: _,
        finalizers: _,
        generate_name: _,
        managed_fields: _,
        owner_references: _,
        resource_version: _,
        self_link: _,
        // Read for the Gateway API kinds only (their status reports `observedGeneration`); see
        // `generation_differs`.
        generation: _,
    } = a;
    *annotations != b.annotations
        || *creation_timestamp != b.creation_timestamp
        || *labels != b.labels
        || *name != b.name
        || *namespace != b.namespace
        || *uid != b.uid
}

/// For the kinds whose status carries `observedGeneration` from the object's `generation`.
fn generation_differs(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    meta_differs(a, b) || a.generation != b.generation
}

fn ingress_change(a: &Ingress, b: &Ingress) -> Change {
    let Ingress {
        metadata,
        spec,
        status,
    } = a;
    Change::of(
        meta_differs(metadata, &b.metadata) || *spec != b.spec,
        *status != b.status,
    )
}

fn ingress_class_change(a: &IngressClass, b: &IngressClass) -> Change {
    let IngressClass { metadata, spec } = a;
    Change::of(meta_differs(metadata, &b.metadata) || *spec != b.spec, false)
}

/// A Service's status (its load-balancer addresses) is read by the status writer's own watch of
/// the publish Service, never from the store.
/// A kept Service or EndpointSlice is what translation reads of it, and has no status.
fn kept_change<T: PartialEq>(a: &T, b: &T) -> Change {
    Change::of(a != b, false)
}

fn secret_change(a: &Secret, b: &Secret) -> Change {
    let Secret {
        metadata,
        data,
        immutable,
        string_data,
        type_,
    } = a;
    Change::of(
        meta_differs(metadata, &b.metadata)
            || *data != b.data
            || *immutable != b.immutable
            || *string_data != b.string_data
            || *type_ != b.type_,
        false,
    )
}

/// Node-port mode reads a Node's addresses and whether its `Ready` condition is `False`; the
/// kubelet's heartbeats move the conditions' times (and slimming already dropped the rest of the
/// status), so conditions compare by type and status only.
fn node_change(a: &Node, b: &Node) -> Change {
    fn view(
        node: &Node,
    ) -> (
        Option<&Vec<k8s_openapi::api::core::v1::NodeAddress>>,
        Vec<(&str, &str)>,
    ) {
        let status = node.status.as_ref();
        let conditions = status
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        (status.and_then(|s| s.addresses.as_ref()), conditions)
    }
    let Node {
        metadata,
        spec,
        status: _,
    } = a;
    Change::of(
        meta_differs(metadata, &b.metadata) || *spec != b.spec || view(a) != view(b),
        false,
    )
}

fn proxy_config_change(a: &ProxyConfig, b: &ProxyConfig) -> Change {
    let ProxyConfig { metadata, spec } = a;
    Change::of(meta_differs(metadata, &b.metadata) || *spec != b.spec, false)
}

fn config_map_change(a: &ConfigMap, b: &ConfigMap) -> Change {
    let ConfigMap {
        metadata,
        binary_data,
        data,
        immutable,
    } = a;
    Change::of(
        meta_differs(metadata, &b.metadata)
            || *binary_data != b.binary_data
            || *data != b.data
            || *immutable != b.immutable,
        false,
    )
}

fn gateway_class_change(a: &GatewayClass, b: &GatewayClass) -> Change {
    let GatewayClass {
        metadata,
        spec,
        status,
    } = a;
    Change::of(
        generation_differs(metadata, &b.metadata) || *spec != b.spec,
        *status != b.status,
    )
}

/// A Gateway's `status.addresses` is read: it is where the address a Gateway was given from the
/// pool is remembered, across restarts and by every replica.
fn gateway_change(a: &Gateway, b: &Gateway) -> Change {
    // As `held_addresses` reads it: no status and no addresses are the same.
    fn addresses(g: &Gateway) -> &[crate::gateway::api::gateways::GatewayStatusAddresses] {
        g.status
            .as_ref()
            .and_then(|s| s.addresses.as_deref())
            .unwrap_or_default()
    }
    let Gateway {
        metadata,
        spec,
        status,
    } = a;
    Change::of(
        generation_differs(metadata, &b.metadata) || *spec != b.spec || addresses(a) != addresses(b),
        *status != b.status,
    )
}

fn http_route_change(a: &HttpRoute, b: &HttpRoute) -> Change {
    let HttpRoute {
        metadata,
        spec,
        status,
    } = a;
    Change::of(
        generation_differs(metadata, &b.metadata) || *spec != b.spec,
        *status != b.status,
    )
}

fn grpc_route_change(a: &GrpcRoute, b: &GrpcRoute) -> Change {
    let GrpcRoute {
        metadata,
        spec,
        status,
    } = a;
    Change::of(
        generation_differs(metadata, &b.metadata) || *spec != b.spec,
        *status != b.status,
    )
}

fn reference_grant_change(a: &ReferenceGrant, b: &ReferenceGrant) -> Change {
    let ReferenceGrant { metadata, spec } = a;
    Change::of(meta_differs(metadata, &b.metadata) || *spec != b.spec, false)
}

/// Listeners' `allowedRoutes` selectors read a Namespace's labels (in the metadata); spec and
/// status are compared too, though slimming drops them.
fn namespace_change(a: &Namespace, b: &Namespace) -> Change {
    let Namespace {
        metadata,
        spec,
        status,
    } = a;
    Change::of(
        meta_differs(metadata, &b.metadata) || *spec != b.spec || *status != b.status,
        false,
    )
}

fn backend_tls_policy_change(a: &BackendTlsPolicy, b: &BackendTlsPolicy) -> Change {
    let BackendTlsPolicy {
        metadata,
        spec,
        status,
    } = a;
    Change::of(
        generation_differs(metadata, &b.metadata) || *spec != b.spec,
        *status != b.status,
    )
}

// === impl ObjectStore ===

impl ObjectStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces an object, and says what that changed for translation ([`Change`]). A
    /// namespaced object without a namespace is stored (and its metadata rewritten) with namespace
    /// `default`; a cluster-scoped one has its namespace cleared.
    ///
    /// The object is always stored, even when nothing translation reads changed: the status writers
    /// compare with the newest status and patch with the newest `resourceVersion`.
    pub fn apply(&mut self, mut obj: Object) -> Change {
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
        let revision_key = key.clone();
        // The Services whose backends this change may touch: the Service itself, or a slice's
        // Service before and after.
        let mut services: [Option<ObjectKey>; 2] = [None, None];
        let change = match obj {
            Object::Ingress(o) => replace(&mut self.ingresses, key, Box::new(o), |a, b| ingress_change(a, b)),
            Object::IngressClass(o) => replace(&mut self.ingress_classes, key, o, ingress_class_change),
            Object::Service(o) => {
                services[0] = Some(key.clone());
                replace(&mut self.services, key, KeptService::from(o), kept_change)
            }
            Object::EndpointSlice(o) => {
                let o = KeptSlice::from(o);
                // The service label may have changed: drop the old index entry before adding the new.
                let old = self.unindex_slice(&key);
                let new = o
                    .service
                    .as_deref()
                    .map(|service| ObjectKey::new(key.namespace.as_str(), service));
                if let Some(service) = &new {
                    let slices = self
                        .slices_by_service
                        .entry((service.namespace.clone(), service.name.clone()))
                        .or_default();
                    if let Err(at) = slices.binary_search(&key) {
                        slices.insert(at, key.clone());
                    }
                }
                services = [old, new];
                replace(&mut self.endpoint_slices, key, o, kept_change)
            }
            Object::Secret(o) => replace(&mut self.secrets, key, Box::new(o), |a, b| secret_change(a, b)),
            Object::Node(o) => replace(&mut self.nodes, key, o, node_change),
            Object::ProxyConfig(o) => replace(&mut self.proxy_configs, key, o, proxy_config_change),
            Object::ConfigMap(o) => replace(&mut self.config_maps, key, o, config_map_change),
            Object::GatewayClass(o) => replace(&mut self.gateway_classes, key, o, gateway_class_change),
            Object::Gateway(o) => replace(&mut self.gateways, key, o, gateway_change),
            Object::HttpRoute(o) => replace(&mut self.http_routes, key, o, http_route_change),
            Object::GrpcRoute(o) => replace(&mut self.grpc_routes, key, o, grpc_route_change),
            Object::ReferenceGrant(o) => replace(&mut self.reference_grants, key, o, reference_grant_change),
            Object::Namespace(o) => replace(&mut self.namespaces, key, o, namespace_change),
            Object::BackendTlsPolicy(o) => {
                replace(&mut self.backend_tls_policies, key, o, backend_tls_policy_change)
            }
        };
        if change == Change::Read {
            self.revision = next_revision();
            self.kind_revisions.insert(kind, self.revision);
            if kind == Kind::Ingress {
                self.ingress_log.push(self.revision, revision_key.clone());
                self.ingress_revisions.insert(revision_key, self.revision);
            } else {
                self.revisions
                    .entry(kind)
                    .or_default()
                    .insert(revision_key, self.revision);
            }
            for service in services.into_iter().flatten() {
                self.touch_service(service);
            }
        }
        change
    }

    /// The Service's backends may have changed at the store's current revision.
    fn touch_service(&mut self, service: ObjectKey) {
        self.service_revisions.insert(service.clone(), self.revision);
        self.service_log.push(self.revision, service);
    }

    /// This point in the store's history, for [`Self::services_touched_since`].
    pub fn mark(&self) -> Mark {
        Mark {
            lineage: self.lineage.0,
            revision: self.revision,
        }
    }

    /// Every Service whose [`service_revision`](Self::service_revision) moved after `mark` (a
    /// Service may come more than once), newest first; `None` when the store cannot tell: `mark`
    /// is another store's (a clone's included), or older than the store remembers.
    pub fn services_touched_since(&self, mark: Mark) -> Option<impl Iterator<Item = &ObjectKey> + '_> {
        if mark.lineage != self.lineage.0 {
            return None;
        }
        self.service_log.since(mark.revision)
    }

    /// Every Ingress whose [`revision`](Self::revision) moved after `mark` (it changed, came or
    /// went; one may come more than once), newest first; `None` when the store cannot tell, as
    /// for [`Self::services_touched_since`].
    pub fn ingresses_touched_since(&self, mark: Mark) -> Option<impl Iterator<Item = &ObjectKey> + '_> {
        if mark.lineage != self.lineage.0 {
            return None;
        }
        self.ingress_log.since(mark.revision)
    }

    /// The last revision at which the Service `service` (namespace and name) or an EndpointSlice
    /// labelled with it changed in what translation reads, came or went; `None` when neither ever
    /// was in the store. What a backend is made from, in one lookup: the translation cache checks
    /// every backend it keeps against it after any Service or EndpointSlice change.
    pub fn service_revision(&self, service: &ObjectKey) -> Option<u64> {
        self.service_revisions.get(service).copied()
    }

    /// The revision at which what translation reads of this object last changed; `None` when the
    /// store does not hold it. Two calls give the same number exactly when no [`Change::Read`] of
    /// the object came in between.
    pub fn revision(&self, kind: Kind, key: &ObjectKey) -> Option<u64> {
        if kind == Kind::Ingress {
            return self.ingress_revisions.get(key).copied();
        }
        self.revisions.get(&kind)?.get(key).copied()
    }

    /// Every Ingress with its [`revision`](Self::revision), in key order: one walk of two maps
    /// in the same order instead of a lookup per Ingress.
    pub fn ingresses_with_revisions(&self) -> impl Iterator<Item = (&ObjectKey, &Ingress, Option<u64>)> + '_ {
        let mut revisions = self.ingress_revisions.iter().peekable();
        self.ingresses.iter().map(move |(key, ingress)| {
            let ingress: &Ingress = ingress;
            // Both maps hold the same keys, so the next revision is this Ingress's: one compare.
            if let Some((_, r)) = revisions.next_if(|(k, _)| *k == key) {
                return (key, ingress, Some(*r));
            }
            // Skipping past smaller keys keeps this right if they ever differ.
            while revisions.next_if(|(k, _)| *k < key).is_some() {}
            let revision = revisions.next_if(|(k, _)| *k == key).map(|(_, r)| *r);
            (key, ingress, revision)
        })
    }

    /// The last revision at which any object of `kind` changed, came or went (0: none yet).
    pub fn kind_revision(&self, kind: Kind) -> u64 {
        self.kind_revisions.get(&kind).copied().unwrap_or_default()
    }

    /// Removes an object; removing one that is not there does nothing and is
    /// [`Change::Unchanged`], removing one that is there is [`Change::Read`]. The key is taken as
    /// the object was stored: namespace `""` for cluster-scoped kinds, and for namespaced kinds an
    /// empty namespace means `default`, as in `apply`.
    pub fn delete(&mut self, kind: Kind, key: &ObjectKey) -> Change {
        let mut key = key.clone();
        normalize_namespace(kind, &mut key.namespace);
        // The Service whose backends the removal touches (see `service_revisions`).
        let mut touched = None;
        let removed = match kind {
            Kind::Ingress => self.ingresses.remove(&key).is_some(),
            Kind::IngressClass => self.ingress_classes.remove(&key).is_some(),
            Kind::Service => {
                touched = Some(key.clone());
                self.services.remove(&key).is_some()
            }
            Kind::EndpointSlice => {
                touched = self.unindex_slice(&key);
                self.endpoint_slices.remove(&key).is_some()
            }
            Kind::Secret => self.secrets.remove(&key).is_some(),
            Kind::Node => self.nodes.remove(&key).is_some(),
            Kind::ProxyConfig => self.proxy_configs.remove(&key).is_some(),
            Kind::ConfigMap => self.config_maps.remove(&key).is_some(),
            Kind::GatewayClass => self.gateway_classes.remove(&key).is_some(),
            Kind::Gateway => self.gateways.remove(&key).is_some(),
            Kind::HttpRoute => self.http_routes.remove(&key).is_some(),
            Kind::GrpcRoute => self.grpc_routes.remove(&key).is_some(),
            Kind::ReferenceGrant => self.reference_grants.remove(&key).is_some(),
            Kind::Namespace => self.namespaces.remove(&key).is_some(),
            Kind::BackendTlsPolicy => self.backend_tls_policies.remove(&key).is_some(),
        };
        if removed {
            if kind == Kind::Ingress {
                self.ingress_revisions.remove(&key);
            } else if let Some(revisions) = self.revisions.get_mut(&kind) {
                revisions.remove(&key);
            }
            self.revision = next_revision();
            self.kind_revisions.insert(kind, self.revision);
            if kind == Kind::Ingress {
                self.ingress_log.push(self.revision, key);
            }
            if let Some(service) = touched {
                self.touch_service(service);
            }
            Change::Read
        } else {
            Change::Unchanged
        }
    }

    /// Takes a stored slice out of the by-Service index; returns the Service it was labelled with.
    fn unindex_slice(&mut self, key: &ObjectKey) -> Option<ObjectKey> {
        let old = self.endpoint_slices.get(key)?;
        let service = old.service.as_deref()?;
        let index_key = (key.namespace.clone(), service.to_string());
        if let Some(keys) = self.slices_by_service.get_mut(&index_key) {
            if let Ok(at) = keys.binary_search(key) {
                keys.remove(at);
            }
            if keys.is_empty() {
                self.slices_by_service.remove(&index_key);
            }
        }
        Some(ObjectKey::new(index_key.0, index_key.1))
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

    pub fn ingresses(&self) -> &Objects<Ingress> {
        &self.ingresses
    }

    pub fn ingress_classes(&self) -> &BTreeMap<ObjectKey, IngressClass> {
        &self.ingress_classes
    }

    pub fn services(&self) -> &BTreeMap<ObjectKey, KeptService> {
        &self.services
    }

    pub fn endpoint_slices(&self) -> &BTreeMap<ObjectKey, KeptSlice> {
        &self.endpoint_slices
    }

    pub fn secrets(&self) -> &Objects<Secret> {
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

    pub fn service(&self, namespace: &str, name: &str) -> Option<&KeptService> {
        self.services.get(&ObjectKey::new(namespace, name))
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        self.secrets.get(&ObjectKey::new(namespace, name)).map(|s| &**s)
    }

    /// The EndpointSlices labelled `kubernetes.io/service-name: <service>` in a namespace, in key
    /// order.
    pub fn endpoint_slices_for<'a>(
        &'a self,
        namespace: &str,
        service: &str,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a KeptSlice)> + 'a {
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

    use k8s_openapi::{api::core::v1::Service, apimachinery::pkg::util::intstr::IntOrString};

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
        assert!(
            store.service("default", "web").is_some(),
            "stored under default/web"
        );
        store.apply(Object::Ingress(Ingress {
            metadata: ObjectMeta {
                name: Some("web".into()),
                ..Default::default()
            },
            ..Default::default()
        }));
        // A kind kept whole has its metadata rewritten too.
        let ing = &store.ingresses()[&ObjectKey::new("default", "web")];
        assert_eq!(ing.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(store.len(), 2);
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
    fn revisions_move_only_when_what_translation_reads_changes() {
        let mut store = ObjectStore::new();
        let key = ObjectKey::new("default", "s1");
        assert_eq!(store.revision(Kind::EndpointSlice, &key), None);
        store.apply(slice(None, "s1", Some("web")));
        let first = store.revision(Kind::EndpointSlice, &key).expect("stored");
        let mut bumped = slice(None, "s1", Some("web"));
        if let Object::EndpointSlice(s) = &mut bumped {
            s.metadata.resource_version = Some("2".into());
        }
        assert_eq!(store.apply(bumped), Change::Unchanged);
        assert_eq!(store.revision(Kind::EndpointSlice, &key), Some(first));
        let kind_before = store.kind_revision(Kind::EndpointSlice);
        store.apply(slice(None, "s1", Some("api")));
        let second = store.revision(Kind::EndpointSlice, &key).expect("stored");
        assert!(second > first);
        assert!(store.kind_revision(Kind::EndpointSlice) > kind_before);
        store.delete(Kind::EndpointSlice, &key);
        assert_eq!(store.revision(Kind::EndpointSlice, &key), None);
        store.apply(slice(None, "s1", Some("api")));
        assert!(
            store.revision(Kind::EndpointSlice, &key) > Some(second),
            "a re-created object never gets an old revision back"
        );
        assert_eq!(store.kind_revision(Kind::Node), 0);
    }

    #[test]
    fn the_walk_over_ingresses_gives_each_its_revision() {
        let mut store = ObjectStore::new();
        let named = |ns: &str, name: &str| {
            let mut i = ingress();
            i.metadata.namespace = Some(ns.into());
            i.metadata.name = Some(name.into());
            Object::from(i)
        };
        for (ns, name) in [("b", "x"), ("a", "z"), ("a", "y"), ("c", "w")] {
            store.apply(named(ns, name));
        }
        store.delete(Kind::Ingress, &ObjectKey::new("a", "y"));
        store.apply(named("a", "y"));
        let mut changed = ingress();
        changed.metadata.namespace = Some("b".into());
        changed.metadata.name = Some("x".into());
        changed.metadata.annotations = None;
        store.apply(Object::from(changed));
        let walked: Vec<_> = store
            .ingresses_with_revisions()
            .map(|(k, _, r)| (k.to_string(), r))
            .collect();
        let looked_up: Vec<_> = store
            .ingresses()
            .keys()
            .map(|k| (k.to_string(), store.revision(Kind::Ingress, k)))
            .collect();
        assert_eq!(walked, looked_up);
        assert_eq!(walked.len(), 4);
        assert!(walked.iter().all(|(_, r)| r.is_some()), "{walked:?}");
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

    #[test]
    fn a_service_revision_moves_with_the_service_and_every_slice_labelled_with_it() {
        let mut store = ObjectStore::new();
        let web = ObjectKey::new("default", "web");
        let api = ObjectKey::new("default", "api");
        let service = |port: i32| {
            Object::Service(Service {
                metadata: ObjectMeta {
                    name: Some("web".into()),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                    ports: Some(vec![k8s_openapi::api::core::v1::ServicePort {
                        port,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        assert_eq!(store.service_revision(&web), None);
        let mut last = 0;
        // Each step must move web's revision; `api` says whether api's moves too.
        let mut step = |store: &mut ObjectStore,
                        what: &str,
                        edit: &dyn Fn(&mut ObjectStore) -> Change,
                        api_too: bool| {
            let api_before = store.service_revision(&api);
            assert_eq!(edit(store), Change::Read, "{what}");
            let now = store
                .service_revision(&web)
                .unwrap_or_else(|| panic!("{what}: none"));
            assert!(now > last, "{what}: web's revision did not move");
            last = now;
            assert_eq!(
                store.service_revision(&api) != api_before,
                api_too,
                "{what}: api's"
            );
        };
        step(&mut store, "the Service comes", &|s| s.apply(service(80)), false);
        step(&mut store, "its port changes", &|s| s.apply(service(81)), false);
        step(
            &mut store,
            "a slice comes",
            &|s| s.apply(slice(None, "s1", Some("web"))),
            false,
        );
        step(
            &mut store,
            "a second slice comes",
            &|s| s.apply(slice(None, "s2", Some("web"))),
            false,
        );
        step(
            &mut store,
            "a slice moves to api",
            &|s| s.apply(slice(None, "s2", Some("api"))),
            true,
        );
        step(
            &mut store,
            "a slice goes",
            &|s| s.delete(Kind::EndpointSlice, &ObjectKey::new("default", "s1")),
            false,
        );
        step(
            &mut store,
            "the Service goes",
            &|s| s.delete(Kind::Service, &web),
            false,
        );

        // Not moved: a write that changes nothing translation reads, a slice of no Service, a
        // slice of another Service.
        let before = store.service_revision(&web);
        store.apply(slice(None, "s3", Some("web")));
        let before = store.service_revision(&web).max(before);
        let mut bumped = slice(None, "s3", Some("web"));
        if let Object::EndpointSlice(s) = &mut bumped {
            s.metadata.resource_version = Some("9".into());
        }
        assert_eq!(store.apply(bumped), Change::Unchanged);
        store.apply(slice(None, "orphan", None));
        store.apply(slice(None, "s4", Some("api")));
        assert_eq!(store.service_revision(&web), before);
    }

    /// The names of the keys, sorted, once each.
    fn names<'a>(keys: Option<impl Iterator<Item = &'a ObjectKey>>) -> Option<Vec<String>> {
        keys.map(|keys| {
            let mut names: Vec<String> = keys.map(|k| k.name.clone()).collect();
            names.sort();
            names.dedup();
            names
        })
    }

    #[test]
    fn the_services_touched_since_a_mark_are_those_whose_revision_moved() {
        let touched = |store: &ObjectStore, mark| names(store.services_touched_since(mark));
        let mut store = ObjectStore::new();
        store.apply(slice(None, "w1", Some("web")));
        let mark = store.mark();
        assert_eq!(touched(&store, mark), Some(vec![]));
        store.apply(slice(None, "a1", Some("api")));
        store.apply(slice(None, "w2", Some("web")));
        store.apply(slice(None, "orphan", None));
        let mut bumped = slice(None, "a1", Some("api"));
        if let Object::EndpointSlice(s) = &mut bumped {
            s.metadata.resource_version = Some("9".into());
        }
        let later = store.mark();
        assert_eq!(store.apply(bumped), Change::Unchanged);
        assert_eq!(touched(&store, mark), Some(vec!["api".into(), "web".into()]));
        assert_eq!(touched(&store, later), Some(vec![]), "a write of nothing read");
        store.delete(Kind::EndpointSlice, &ObjectKey::new("default", "w1"));
        assert_eq!(touched(&store, later), Some(vec!["web".into()]));

        // A clone goes its own way: the original's marks say nothing of it, nor its of the original.
        let clone = store.clone();
        assert_eq!(touched(&clone, store.mark()), None);
        assert_eq!(touched(&store, clone.mark()), None);

        // Past what the log remembers, the store cannot tell; after it, it can.
        let old = store.mark();
        for i in 0..TOUCH_LOG {
            store.apply(slice(None, &format!("s{i}"), Some(&format!("svc{}", i % 3))));
        }
        let recent = store.mark();
        store.apply(slice(None, "w3", Some("web")));
        assert_eq!(touched(&store, old), None);
        assert_eq!(touched(&store, recent), Some(vec!["web".into()]));
    }

    #[test]
    fn the_ingresses_touched_since_a_mark_are_those_whose_revision_moved() {
        let touched = |store: &ObjectStore, mark| names(store.ingresses_touched_since(mark));
        let named = |name: &str| {
            let mut ing = ingress();
            ing.metadata.name = Some(name.into());
            ing
        };
        let mut store = ObjectStore::new();
        store.apply(named("a").into());
        let mark = store.mark();
        assert_eq!(touched(&store, mark), Some(vec![]));
        store.apply(named("b").into());
        let mut bumped = named("a");
        bump(&mut bumped.metadata);
        assert_eq!(store.apply(bumped.into()), Change::Unchanged);
        assert_eq!(
            touched(&store, mark),
            Some(vec!["b".into()]),
            "a write of nothing read"
        );
        let later = store.mark();
        // Another kind's change is not an Ingress's.
        store.apply(slice(None, "w1", Some("web")));
        assert_eq!(touched(&store, later), Some(vec![]));
        store.delete(Kind::Ingress, &ObjectKey::new("default", "a"));
        assert_eq!(touched(&store, later), Some(vec!["a".into()]), "a delete");
        assert_eq!(touched(&store, mark), Some(vec!["a".into(), "b".into()]));
        assert_eq!(
            touched(&store.clone(), store.mark()),
            None,
            "a clone's marks are its own"
        );

        let old = store.mark();
        for i in 0..TOUCH_LOG {
            store.apply(named(&format!("i{}", i % 5)).into());
            store.delete(Kind::Ingress, &ObjectKey::new("default", format!("i{}", i % 5)));
        }
        let recent = store.mark();
        store.apply(named("c").into());
        assert_eq!(touched(&store, old), None, "older than the log");
        assert_eq!(touched(&store, recent), Some(vec!["c".into()]));
    }

    /// An object as the API server would send it, from its JSON.
    fn from_json<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> T {
        serde_json::from_value(json).expect("a valid object")
    }

    /// What storing `edit(base)` over `base` changes.
    fn change_of<T: Clone + Into<Object>>(base: &T, edit: impl FnOnce(&mut T)) -> Change {
        let mut store = ObjectStore::new();
        assert_eq!(
            store.apply(base.clone().into()),
            Change::Read,
            "a new object is a change"
        );
        assert_eq!(
            store.apply(base.clone().into()),
            Change::Unchanged,
            "the same object again"
        );
        let mut edited = base.clone();
        edit(&mut edited);
        store.apply(edited.into())
    }

    /// The metadata every write moves and translation never reads.
    fn bump(meta: &mut ObjectMeta) {
        meta.resource_version = Some("2".into());
        meta.managed_fields = Some(vec![Default::default()]);
    }

    fn ingress() -> Ingress {
        from_json(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "1", "generation": 1,
                         "annotations": {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}},
            "spec": {"ingressClassName": "gantry", "rules": [{"host": "a.example", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
        }))
    }

    #[test]
    fn an_ingress_changes_with_its_spec_and_annotations_not_with_its_status_or_resource_version() {
        let base = ingress();
        assert_eq!(change_of(&base, |i| bump(&mut i.metadata)), Change::Unchanged);
        let written = |i: &mut Ingress| {
            i.status = Some(from_json(serde_json::json!({
                "loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}
            })));
            bump(&mut i.metadata);
        };
        assert_eq!(
            change_of(&base, written),
            Change::Status,
            "Gantry's own status write"
        );
        assert_eq!(
            change_of(&base, |i| {
                i.spec.as_mut().expect("spec").ingress_class_name = Some("other".into());
            }),
            Change::Read
        );
        assert_eq!(
            change_of(&base, |i| {
                i.metadata
                    .annotations
                    .get_or_insert_default()
                    .insert("nginx.ingress.kubernetes.io/ssl-redirect".into(), "true".into());
            }),
            Change::Read
        );
    }

    #[test]
    fn a_service_changes_with_its_spec_not_with_its_status() {
        let base: Service = from_json(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "1"},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}]},
        }));
        assert_eq!(change_of(&base, |s| bump(&mut s.metadata)), Change::Unchanged);
        assert_eq!(
            change_of(&base, |s| {
                s.status = Some(from_json(serde_json::json!({
                    "loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}
                })));
            }),
            Change::Unchanged,
            "translation never reads a Service's status, and Gantry does not write it"
        );
        assert_eq!(
            change_of(&base, |s| s.spec.as_mut().expect("spec").ports = None),
            Change::Read
        );
        // The store keeps what translation reads of a Service (`KeptService`), whatever the
        // source slimmed: the endpoints' port comes from the slice, and labels select nothing.
        let port = |s: &mut Service| s.spec.as_mut().expect("spec").ports.as_mut().expect("ports")[0].clone();
        assert_eq!(
            change_of(&base, |s| {
                s.spec.as_mut().expect("spec").ports.as_mut().expect("ports")[0].target_port =
                    Some(IntOrString::Int(9090));
                s.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into())]));
            }),
            Change::Unchanged
        );
        assert_eq!(
            change_of(&base, |s| {
                let mut p = port(s);
                p.app_protocol = Some("kubernetes.io/h2c".into());
                s.spec.as_mut().expect("spec").ports = Some(vec![p]);
            }),
            Change::Read,
            "appProtocol is read (the Gateway API's h2c backends)"
        );
        let mut store = ObjectStore::new();
        store.apply(Object::Service(from_json(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10", "type": "NodePort", "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080,
                 "protocol": "TCP", "appProtocol": "http"}]},
        }))));
        assert_eq!(
            store.service("default", "web"),
            Some(&KeptService {
                cluster_ip: Some("10.96.0.10".into()),
                ports: [KeptServicePort {
                    name: Some("http".into()),
                    port: 80,
                    node_port: Some(30080),
                    app_protocol: Some("http".into()),
                }]
                .into(),
            })
        );
    }

    #[test]
    fn an_endpoint_slice_changes_with_its_endpoints_and_service_label() {
        let base: EndpointSlice = from_json(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "default", "resourceVersion": "1",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": true}}],
            "ports": [{"port": 8080}],
        }));
        assert_eq!(change_of(&base, |e| bump(&mut e.metadata)), Change::Unchanged);
        assert_eq!(
            change_of(&base, |e| e.endpoints[0].addresses = vec!["10.1.0.2".into()]),
            Change::Read
        );
        assert_eq!(
            change_of(&base, |e| e.endpoints[0].conditions = None),
            Change::Read,
            "readiness is read"
        );
        assert_eq!(
            change_of(&base, |e| {
                e.metadata.labels = Some(BTreeMap::from([(SERVICE_NAME_LABEL.into(), "api".into())]));
            }),
            Change::Read
        );
        // What translation does not read of a slice is not kept (`KeptSlice`).
        assert_eq!(
            change_of(&base, |e| {
                e.endpoints[0].node_name = Some("n2".into());
                e.endpoints[0].zone = Some("z2".into());
                e.ports.as_mut().expect("ports")[0].protocol = Some("TCP".into());
                e.metadata
                    .labels
                    .get_or_insert_default()
                    .insert("endpointslice.kubernetes.io/managed-by".into(), "x".into());
            }),
            Change::Unchanged
        );
        let mut store = ObjectStore::new();
        store.apply(Object::EndpointSlice(base));
        let (_, kept) = store
            .endpoint_slices_for("default", "web")
            .next()
            .expect("indexed");
        assert_eq!(
            *kept,
            KeptSlice {
                service: Some("web".into()),
                address_type: "IPv4".into(),
                ports: [KeptSlicePort {
                    name: None,
                    port: Some(8080)
                }]
                .into(),
                endpoints: [KeptEndpoint {
                    addresses: ["10.1.0.1".into()].into(),
                    ready: Some(true),
                }]
                .into(),
            }
        );
    }

    #[test]
    fn a_secret_changes_with_its_data() {
        let base: Secret = from_json(serde_json::json!({
            "metadata": {"name": "tls", "namespace": "default", "resourceVersion": "1"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": "Y2VydA==", "tls.key": "a2V5"},
        }));
        assert_eq!(change_of(&base, |s| bump(&mut s.metadata)), Change::Unchanged);
        assert_eq!(
            change_of(&base, |s| {
                s.data
                    .get_or_insert_default()
                    .insert("tls.crt".into(), k8s_openapi::ByteString(b"new".to_vec()));
            }),
            Change::Read
        );
    }

    fn gateway() -> Gateway {
        from_json(serde_json::json!({
            "metadata": {"name": "gw", "namespace": "default", "resourceVersion": "1", "generation": 1},
            "spec": {"gatewayClassName": "gantry", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"}]},
            "status": {"addresses": [{"type": "IPAddress", "value": "10.9.0.1"}], "conditions": []},
        }))
    }

    #[test]
    fn a_gateway_changes_with_its_spec_generation_and_status_addresses_not_its_conditions() {
        let base = gateway();
        assert_eq!(change_of(&base, |g| bump(&mut g.metadata)), Change::Unchanged);
        let accepted = |g: &mut Gateway| {
            g.status.as_mut().expect("status").conditions = Some(vec![from_json(serde_json::json!({
                "type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z",
            }))]);
            bump(&mut g.metadata);
        };
        assert_eq!(
            change_of(&base, accepted),
            Change::Status,
            "Gantry's own status write"
        );
        assert_eq!(
            change_of(&base, |g| {
                g.status.as_mut().expect("status").addresses = Some(vec![from_json(serde_json::json!({
                    "type": "IPAddress", "value": "10.9.0.2",
                }))]);
            }),
            Change::Read,
            "status.addresses remembers the pool address a Gateway holds"
        );
        assert_eq!(change_of(&base, |g| g.status = None), Change::Read);
        assert_eq!(
            change_of(&base, |g| g.spec.listeners[0].port = 8080),
            Change::Read
        );
        assert_eq!(
            change_of(&base, |g| g.metadata.generation = Some(2)),
            Change::Read,
            "status reports observedGeneration"
        );
    }

    #[test]
    fn an_http_route_changes_with_its_spec_not_with_its_status() {
        let base: HttpRoute = from_json(serde_json::json!({
            "metadata": {"name": "r", "namespace": "default", "resourceVersion": "1", "generation": 1},
            "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["a.example"]},
        }));
        assert_eq!(change_of(&base, |r| bump(&mut r.metadata)), Change::Unchanged);
        let written = |r: &mut HttpRoute| {
            r.status = Some(from_json(serde_json::json!({"parents": [{
                "controllerName": "gantry.dev/gateway", "parentRef": {"name": "gw"},
                "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            }]})));
            bump(&mut r.metadata);
        };
        assert_eq!(change_of(&base, written), Change::Status);
        assert_eq!(
            change_of(&base, |r| r.spec.hostnames = Some(vec!["b.example".into()])),
            Change::Read
        );
    }

    #[test]
    fn a_node_changes_with_its_addresses_and_readiness_not_with_heartbeats() {
        let node = |heartbeat: &str, ready: &str| -> Node {
            from_json(serde_json::json!({
                "metadata": {"name": "n1", "resourceVersion": heartbeat},
                "status": {
                    "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
                    "conditions": [{"type": "Ready", "status": ready,
                                    "lastHeartbeatTime": heartbeat}],
                },
            }))
        };
        let base = node("2026-01-01T00:00:00Z", "True");
        let later = node("2026-01-01T00:05:00Z", "True");
        assert_eq!(change_of(&base, |n| *n = later), Change::Unchanged);
        let not_ready = node("2026-01-01T00:05:00Z", "False");
        assert_eq!(change_of(&base, |n| *n = not_ready), Change::Read);
        assert_eq!(
            change_of(&base, |n| {
                n.status.as_mut().expect("status").addresses = None;
            }),
            Change::Read
        );
    }

    #[test]
    fn deleting_changes_only_what_is_there() {
        let mut store = ObjectStore::new();
        let key = ObjectKey::new("default", "web");
        assert_eq!(store.delete(Kind::Ingress, &key), Change::Unchanged);
        store.apply(ingress().into());
        assert_eq!(
            store.delete(Kind::Service, &key),
            Change::Unchanged,
            "another kind"
        );
        assert_eq!(store.delete(Kind::Ingress, &key), Change::Read);
        assert_eq!(store.delete(Kind::Ingress, &key), Change::Unchanged);
        assert!(store.is_empty());
    }

    #[test]
    fn changes_order_from_nothing_to_read() {
        assert_eq!(Change::Unchanged.max(Change::Status), Change::Status);
        assert_eq!(Change::Status.max(Change::Read), Change::Read);
        assert!(Change::Read.is_read() && !Change::Status.is_read());
    }
}
