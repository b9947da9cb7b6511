//! Fluent builders for the objects translation reads, and helpers to look at a snapshot.
//!
//! Defaults are the common case so tests only spell what they are about: namespace `default`,
//! Ingresses of our class (as the conformance runner does), ready endpoints, ready nodes.

use std::{
    collections::BTreeMap,
    sync::{Arc, OnceLock},
};

use gantry_proxy::{Snapshot, TlsCert};

use crate::{diagnostic::Diagnostic, translate::Translation};
use k8s_openapi::{
    api::{
        core::v1::{
            Node, NodeAddress, NodeCondition, NodeStatus, Secret, Service, ServicePort, ServiceSpec,
            TypedLocalObjectReference,
        },
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
        networking::v1::{
            HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass,
            IngressClassParametersReference, IngressClassSpec, IngressRule, IngressServiceBackend,
            IngressSpec, IngressTLS, ServiceBackendPort,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{ObjectMeta, Time},
        util::intstr::IntOrString,
    },
    ByteString,
};

use crate::{
    manifests::parse_manifests,
    store::{Object, ObjectStore, SERVICE_NAME_LABEL},
    translate::{translate, BackendMode, TranslateOptions},
};

pub const CLASS: &str = "gantry";
pub const CONTROLLER: &str = "gantry.dev/ingress-controller";

/// Builds `Vec<Object>` from builders and k8s objects of mixed types.
macro_rules! objects {
    ($($e:expr),* $(,)?) => { vec![$($crate::store::Object::from($e)),*] };
}
pub(crate) use objects;

/// Options as the binary's defaults would be, with one fallback certificate for the whole test run
/// (generating one per test would only slow the tests down).
pub fn opts() -> TranslateOptions {
    static FALLBACK: OnceLock<TlsCert> = OnceLock::new();
    TranslateOptions {
        ingress_class: CLASS.into(),
        controller_name: CONTROLLER.into(),
        backend_mode: BackendMode::Endpoints,
        default_ssl_certificate: None,
        fallback_certificate: FALLBACK
            .get_or_init(|| TlsCert::self_signed(&["gantry.invalid"]).expect("fallback certificate"))
            .clone(),
        proxy_config: Default::default(),
        gateway: Some(crate::translate::gateway::GatewayOptions::default()),
    }
}

pub fn store(objects: Vec<Object>) -> ObjectStore {
    let mut store = ObjectStore::new();
    for obj in objects {
        store.apply(obj);
    }
    store
}

/// Translates the objects as the first build after start.
pub fn build(objects: Vec<Object>) -> Translation {
    translate(&store(objects), &opts(), &Snapshot::default())
}

pub fn build_with(objects: Vec<Object>, opts: &TranslateOptions) -> Translation {
    translate(&store(objects), opts, &Snapshot::default())
}

/// Parses manifest text (which must load without diagnostics) into objects.
pub fn yaml(contents: &str) -> Vec<Object> {
    let parsed = parse_manifests("test.yaml", contents).expect("valid YAML");
    assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
    parsed.objects
}

/// The Service a request is routed to, or `None` for a 404.
pub fn routed(snapshot: &Translation, host: &str, path: &str) -> Option<String> {
    snapshot
        .routes
        .lookup(host, path)
        .map(|r| r.backend.id.service.to_string())
}

/// `(object, reason)` of every diagnostic.
pub fn reasons(snapshot: &Translation) -> Vec<(String, String)> {
    snapshot
        .diagnostics
        .iter()
        .map(|d| (d.object.to_string(), d.reason.clone()))
        .collect()
}

/// The only diagnostic with this reason; fails the test when there is not exactly one.
pub fn the_diagnostic<'s>(snapshot: &'s Translation, reason: &str) -> &'s Diagnostic {
    let found: Vec<_> = snapshot
        .diagnostics
        .iter()
        .filter(|d| d.reason == reason)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {reason} expected in {:#?}",
        snapshot.diagnostics
    );
    found[0]
}

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn time(rfc3339: &str) -> Time {
    Time(rfc3339.parse().expect("RFC 3339 timestamp"))
}

// === Ingress ===

/// A Service port as an Ingress names it: `80` or `"http"`.
pub enum Port {
    Number(i32),
    Name(&'static str),
}

impl From<i32> for Port {
    fn from(n: i32) -> Self {
        Port::Number(n)
    }
}

impl From<&'static str> for Port {
    fn from(name: &'static str) -> Self {
        Port::Name(name)
    }
}

pub fn service_backend(service: &str, port: impl Into<Port>) -> IngressBackend {
    let port = match port.into() {
        Port::Number(n) => ServiceBackendPort {
            number: Some(n),
            name: None,
        },
        Port::Name(name) => ServiceBackendPort {
            number: None,
            name: Some(name.into()),
        },
    };
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: service.into(),
            port: Some(port),
        }),
        resource: None,
    }
}

#[derive(Clone)]
pub struct IngressBuilder(Ingress);

/// An Ingress in `default`, of our class, without creation timestamp.
pub fn ingress(name: &str) -> IngressBuilder {
    IngressBuilder(Ingress {
        metadata: meta("default", name),
        spec: Some(IngressSpec {
            ingress_class_name: Some(CLASS.into()),
            ..Default::default()
        }),
        status: None,
    })
}

impl IngressBuilder {
    fn spec(&mut self) -> &mut IngressSpec {
        self.0.spec.get_or_insert_with(Default::default)
    }

    pub fn ns(mut self, namespace: &str) -> Self {
        self.0.metadata.namespace = Some(namespace.into());
        self
    }

    pub fn class(mut self, class: &str) -> Self {
        self.spec().ingress_class_name = Some(class.into());
        self
    }

    pub fn no_class(mut self) -> Self {
        self.spec().ingress_class_name = None;
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }

    /// `metadata.creationTimestamp`, RFC 3339.
    pub fn created(mut self, at: &str) -> Self {
        self.0.metadata.creation_timestamp = Some(time(at));
        self
    }

    /// Starts a rule for a host; the paths that follow belong to it.
    pub fn host(mut self, host: &str) -> Self {
        self.rules().push(IngressRule {
            host: Some(host.into()),
            http: None,
        });
        self
    }

    /// Starts a rule without host.
    pub fn any_host(mut self) -> Self {
        self.rules().push(IngressRule {
            host: None,
            http: None,
        });
        self
    }

    fn rules(&mut self) -> &mut Vec<IngressRule> {
        self.spec().rules.get_or_insert_with(Vec::new)
    }

    /// Adds a path to the current rule (a rule without host if none was started).
    pub fn path(mut self, path_type: &str, path: &str, backend: IngressBackend) -> Self {
        if self.rules().is_empty() {
            self = self.any_host();
        }
        let rule = self.rules().last_mut().expect("a rule");
        rule.http
            .get_or_insert_with(|| HTTPIngressRuleValue { paths: Vec::new() })
            .paths
            .push(HTTPIngressPath {
                backend,
                path: Some(path.into()),
                path_type: path_type.into(),
            });
        self
    }

    pub fn prefix(self, path: &str, service: &str, port: impl Into<Port>) -> Self {
        self.path("Prefix", path, service_backend(service, port))
    }

    pub fn exact(self, path: &str, service: &str, port: impl Into<Port>) -> Self {
        self.path("Exact", path, service_backend(service, port))
    }

    pub fn implementation_specific(self, path: &str, service: &str, port: impl Into<Port>) -> Self {
        self.path("ImplementationSpecific", path, service_backend(service, port))
    }

    /// A path to a `resource` backend (unsupported).
    pub fn resource(self, path: &str, kind: &str, name: &str) -> Self {
        let backend = IngressBackend {
            service: None,
            resource: Some(TypedLocalObjectReference {
                api_group: Some("storage.example".into()),
                kind: kind.into(),
                name: name.into(),
            }),
        };
        self.path("Prefix", path, backend)
    }

    pub fn default_backend(mut self, service: &str, port: impl Into<Port>) -> Self {
        self.spec().default_backend = Some(service_backend(service, port));
        self
    }

    pub fn tls(mut self, hosts: &[&str], secret: &str) -> Self {
        self.spec().tls.get_or_insert_with(Vec::new).push(IngressTLS {
            hosts: Some(hosts.iter().map(|h| h.to_string()).collect()),
            secret_name: Some(secret.into()),
        });
        self
    }

    pub fn build(self) -> Ingress {
        self.0
    }
}

impl From<IngressBuilder> for Object {
    fn from(b: IngressBuilder) -> Self {
        Object::Ingress(b.0)
    }
}

// === IngressClass ===

pub struct IngressClassBuilder(IngressClass);

/// An IngressClass with no controller.
pub fn ingress_class(name: &str) -> IngressClassBuilder {
    IngressClassBuilder(IngressClass {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(IngressClassSpec::default()),
    })
}

impl IngressClassBuilder {
    pub fn controller(mut self, controller: &str) -> Self {
        self.0.spec.get_or_insert_with(Default::default).controller = Some(controller.into());
        self
    }

    pub fn default_class(mut self) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(crate::translate::ANNOTATION_DEFAULT_CLASS.into(), "true".into());
        self
    }

    /// `spec.parameters` naming a cluster-scoped `gantry.dev` ProxyConfig.
    pub fn proxy_config(self, name: &str) -> Self {
        self.parameters(
            Some(crate::crd::GROUP),
            crate::crd::KIND,
            name,
            Some("Cluster"),
            None,
        )
    }

    /// Any `spec.parameters`.
    pub fn parameters(
        mut self,
        api_group: Option<&str>,
        kind: &str,
        name: &str,
        scope: Option<&str>,
        namespace: Option<&str>,
    ) -> Self {
        self.0.spec.get_or_insert_with(Default::default).parameters = Some(IngressClassParametersReference {
            api_group: api_group.map(str::to_string),
            kind: kind.into(),
            name: name.into(),
            scope: scope.map(str::to_string),
            namespace: namespace.map(str::to_string),
        });
        self
    }
}

impl From<IngressClassBuilder> for Object {
    fn from(b: IngressClassBuilder) -> Self {
        Object::IngressClass(b.0)
    }
}

// === ProxyConfig ===

/// A ProxyConfig from the YAML of its spec, e.g. `"upstreamResponseTimeout: 2s"` (`""`: empty).
pub fn proxy_config(name: &str, spec_yaml: &str) -> Object {
    let spec = match spec_yaml.trim() {
        "" => " {}".to_string(),
        text => text.lines().map(|l| format!("\n  {l}")).collect(),
    };
    let mut objects = yaml(&format!(
        "apiVersion: gantry.dev/v1alpha1\nkind: ProxyConfig\nmetadata:\n  name: {name}\nspec:{spec}\n"
    ));
    assert_eq!(objects.len(), 1, "one ProxyConfig");
    objects.remove(0)
}

// === Service ===

pub struct ServiceBuilder(Service);

pub fn service(name: &str) -> ServiceBuilder {
    ServiceBuilder(Service {
        metadata: meta("default", name),
        spec: Some(ServiceSpec {
            ports: Some(Vec::new()),
            ..Default::default()
        }),
        status: None,
    })
}

impl ServiceBuilder {
    pub fn ns(mut self, namespace: &str) -> Self {
        self.0.metadata.namespace = Some(namespace.into());
        self
    }

    fn push(mut self, name: &str, port: i32, target: i32, node_port: Option<i32>) -> Self {
        let ports = self
            .0
            .spec
            .get_or_insert_with(Default::default)
            .ports
            .get_or_insert_with(Vec::new);
        ports.push(ServicePort {
            name: (!name.is_empty()).then(|| name.to_string()),
            port,
            target_port: Some(IntOrString::Int(target)),
            node_port,
            ..Default::default()
        });
        self
    }

    /// `spec.clusterIP` (`None` for a headless Service).
    pub fn cluster_ip(mut self, ip: &str) -> Self {
        self.0.spec.get_or_insert_with(Default::default).cluster_ip = Some(ip.into());
        self
    }

    /// A port; `name` may be `""` for an unnamed port.
    pub fn port(self, name: &str, port: i32, target: i32) -> Self {
        self.push(name, port, target, None)
    }

    /// A port with a node port (type NodePort Services have one on every port).
    pub fn node_port(self, name: &str, port: i32, node_port: i32) -> Self {
        self.push(name, port, port, Some(node_port))
    }
}

impl From<ServiceBuilder> for Object {
    fn from(b: ServiceBuilder) -> Self {
        Object::Service(b.0)
    }
}

// === EndpointSlice ===

pub struct SliceBuilder {
    slice: EndpointSlice,
    port_name: Option<String>,
    port: Option<i32>,
}

/// An IPv4 EndpointSlice of a Service, named `<service>-slice` (use `named` for a second one), with
/// one unnamed port.
pub fn slice(service: &str) -> SliceBuilder {
    let mut metadata = meta("default", &format!("{service}-slice"));
    metadata.labels = Some(BTreeMap::from([(
        SERVICE_NAME_LABEL.to_string(),
        service.to_string(),
    )]));
    SliceBuilder {
        slice: EndpointSlice {
            metadata,
            address_type: "IPv4".into(),
            ..Default::default()
        },
        port_name: None,
        port: None,
    }
}

impl SliceBuilder {
    pub fn ns(mut self, namespace: &str) -> Self {
        self.slice.metadata.namespace = Some(namespace.into());
        self
    }

    pub fn named(mut self, name: &str) -> Self {
        self.slice.metadata.name = Some(name.into());
        self
    }

    pub fn address_type(mut self, ty: &str) -> Self {
        self.slice.address_type = ty.into();
        self
    }

    /// Names the slice's port (it matches the Service port of the same name).
    pub fn port_name(mut self, name: &str) -> Self {
        self.port_name = Some(name.into());
        self
    }

    fn push(mut self, address: &str, port: i32, ready: Option<bool>) -> Self {
        self.port = Some(port);
        self.slice.endpoints.push(Endpoint {
            addresses: vec![address.into()],
            conditions: Some(EndpointConditions {
                ready,
                ..Default::default()
            }),
            ..Default::default()
        });
        self
    }

    /// A ready endpoint. All endpoints of a slice share its one port, so `port` sets it.
    pub fn endpoint(self, address: &str, port: i32) -> Self {
        self.push(address, port, Some(true))
    }

    /// An endpoint without conditions (which the API reads as ready).
    pub fn endpoint_without_conditions(mut self, address: &str, port: i32) -> Self {
        self = self.push(address, port, None);
        self.slice.endpoints.last_mut().expect("endpoint").conditions = None;
        self
    }

    pub fn not_ready(self, address: &str, port: i32) -> Self {
        self.push(address, port, Some(false))
    }
}

impl From<SliceBuilder> for Object {
    fn from(mut b: SliceBuilder) -> Self {
        b.slice.ports = Some(vec![EndpointPort {
            name: b.port_name,
            port: b.port,
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]);
        Object::EndpointSlice(b.slice)
    }
}

// === Node ===

pub struct NodeBuilder(Node);

/// A node with a Ready condition `"True"` and no addresses.
pub fn node(name: &str) -> NodeBuilder {
    NodeBuilder(Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            addresses: Some(Vec::new()),
            ..Default::default()
        }),
    })
}

impl NodeBuilder {
    fn address(mut self, ty: &str, address: &str) -> Self {
        let status = self.0.status.get_or_insert_with(Default::default);
        status.addresses.get_or_insert_with(Vec::new).push(NodeAddress {
            type_: ty.into(),
            address: address.into(),
        });
        self
    }

    pub fn internal_ip(self, ip: &str) -> Self {
        self.address("InternalIP", ip)
    }

    pub fn external_ip(self, ip: &str) -> Self {
        self.address("ExternalIP", ip)
    }

    pub fn hostname(self, name: &str) -> Self {
        self.address("Hostname", name)
    }

    /// Sets the Ready condition's status: `"False"` or `"Unknown"`.
    pub fn ready(mut self, status: &str) -> Self {
        let status_ = self.0.status.get_or_insert_with(Default::default);
        for c in status_.conditions.iter_mut().flatten() {
            if c.type_ == "Ready" {
                c.status = status.into();
            }
        }
        self
    }
}

impl From<NodeBuilder> for Object {
    fn from(b: NodeBuilder) -> Self {
        Object::Node(b.0)
    }
}

// === Secret ===

/// A generated certificate in the forms tests compare against.
#[derive(Clone)]
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// The leaf certificate, DER: what the snapshot's `TlsCert` must hold.
    pub der: Vec<u8>,
}

pub fn test_cert(names: &[&str]) -> TestCert {
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names).expect("rcgen certificate");
    TestCert {
        cert_pem: cert.pem(),
        key_pem: signing_key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// The leaf certificate (DER) a `TlsCert` serves.
pub fn leaf(cert: &TlsCert) -> Vec<u8> {
    cert.key.cert[0].as_ref().to_vec()
}

/// Whether two `TlsCert`s are the very same loaded certificate (not just equal bytes).
pub fn same_cert(a: &TlsCert, b: &TlsCert) -> bool {
    Arc::ptr_eq(&a.key, &b.key)
}

pub struct SecretBuilder(Secret);

/// A `kubernetes.io/tls` Secret with no data.
pub fn secret(name: &str) -> SecretBuilder {
    SecretBuilder(Secret {
        metadata: meta("default", name),
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::new()),
        ..Default::default()
    })
}

/// A `kubernetes.io/tls` Secret holding a fresh certificate for the names, and that certificate.
pub fn tls_secret(name: &str, names: &[&str]) -> (SecretBuilder, TestCert) {
    let cert = test_cert(names);
    (secret(name).cert(&cert), cert)
}

impl SecretBuilder {
    pub fn ns(mut self, namespace: &str) -> Self {
        self.0.metadata.namespace = Some(namespace.into());
        self
    }

    pub fn data(mut self, key: &str, value: &[u8]) -> Self {
        self.0
            .data
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), ByteString(value.to_vec()));
        self
    }

    pub fn cert(self, cert: &TestCert) -> Self {
        self.data("tls.crt", cert.cert_pem.as_bytes())
            .data("tls.key", cert.key_pem.as_bytes())
    }

    pub fn secret_type(mut self, ty: &str) -> Self {
        self.0.type_ = Some(ty.into());
        self
    }
}

impl From<SecretBuilder> for Object {
    fn from(b: SecretBuilder) -> Self {
        Object::Secret(b.0)
    }
}
