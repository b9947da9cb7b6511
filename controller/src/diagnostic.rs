//! Diagnostics: one per rejected or partly applied object. They belong to the controller, which
//! turns them into log lines, metrics, Events and `/debug/routes`; the data plane never sees them.
//!
//! A diagnostic names its object by an [`ObjectRef`]: kind, namespace, name, and the `uid` of the
//! very object version that was translated (when it came from an API server), so that the Event
//! made of it goes to that object and nothing has to be looked up or parsed again later.

use std::{borrow::Cow, cmp::Ordering, fmt};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{ser::SerializeStruct, Serialize, Serializer};

use crate::store::{self, ObjectKey};

/// What kind of thing a diagnostic is about: a Kubernetes kind Gantry reads, or, in file mode, a
/// manifest file or one of its documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Ingress,
    IngressClass,
    Service,
    EndpointSlice,
    Secret,
    ConfigMap,
    Node,
    Namespace,
    /// `gantry.dev` ProxyConfig (cluster-scoped).
    ProxyConfig,
    GatewayClass,
    Gateway,
    HttpRoute,
    GrpcRoute,
    ReferenceGrant,
    BackendTlsPolicy,
    /// A manifest file that does not parse (`File a.yaml`).
    File,
    /// A document of a manifest file that is no object at all (`document 3 of a.yaml`).
    Document,
}

// === impl ObjectKind ===

impl ObjectKind {
    /// The kind as Kubernetes spells it (`HTTPRoute`), or `File` / `document`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Ingress => "Ingress",
            ObjectKind::IngressClass => "IngressClass",
            ObjectKind::Service => "Service",
            ObjectKind::EndpointSlice => "EndpointSlice",
            ObjectKind::Secret => "Secret",
            ObjectKind::ConfigMap => "ConfigMap",
            ObjectKind::Node => "Node",
            ObjectKind::Namespace => "Namespace",
            ObjectKind::ProxyConfig => "ProxyConfig",
            ObjectKind::GatewayClass => "GatewayClass",
            ObjectKind::Gateway => "Gateway",
            ObjectKind::HttpRoute => "HTTPRoute",
            ObjectKind::GrpcRoute => "GRPCRoute",
            ObjectKind::ReferenceGrant => "ReferenceGrant",
            ObjectKind::BackendTlsPolicy => "BackendTLSPolicy",
            ObjectKind::File => "File",
            ObjectKind::Document => "document",
        }
    }

    /// The `apiVersion` of a Kubernetes kind, as Gantry reads it; `None` for files and documents.
    pub fn api_version(self) -> Option<Cow<'static, str>> {
        use crate::gateway::api;
        use k8s_openapi::api::{core::v1, discovery::v1::EndpointSlice, networking::v1 as net};
        fn of<K: Resource<DynamicType = ()>>() -> Option<Cow<'static, str>> {
            Some(K::api_version(&()))
        }
        match self {
            ObjectKind::Ingress => of::<net::Ingress>(),
            ObjectKind::IngressClass => of::<net::IngressClass>(),
            ObjectKind::Service => of::<v1::Service>(),
            ObjectKind::EndpointSlice => of::<EndpointSlice>(),
            ObjectKind::Secret => of::<v1::Secret>(),
            ObjectKind::ConfigMap => of::<v1::ConfigMap>(),
            ObjectKind::Node => of::<v1::Node>(),
            ObjectKind::Namespace => of::<v1::Namespace>(),
            ObjectKind::ProxyConfig => of::<crate::crd::ProxyConfig>(),
            ObjectKind::GatewayClass => of::<api::GatewayClass>(),
            ObjectKind::Gateway => of::<api::Gateway>(),
            ObjectKind::HttpRoute => of::<api::HttpRoute>(),
            ObjectKind::GrpcRoute => of::<api::GrpcRoute>(),
            ObjectKind::ReferenceGrant => of::<api::ReferenceGrant>(),
            ObjectKind::BackendTlsPolicy => of::<api::BackendTlsPolicy>(),
            ObjectKind::File | ObjectKind::Document => None,
        }
    }
}

impl From<store::Kind> for ObjectKind {
    fn from(kind: store::Kind) -> Self {
        match kind {
            store::Kind::Ingress => ObjectKind::Ingress,
            store::Kind::IngressClass => ObjectKind::IngressClass,
            store::Kind::Service => ObjectKind::Service,
            store::Kind::EndpointSlice => ObjectKind::EndpointSlice,
            store::Kind::Secret => ObjectKind::Secret,
            store::Kind::Node => ObjectKind::Node,
            store::Kind::ProxyConfig => ObjectKind::ProxyConfig,
            store::Kind::ConfigMap => ObjectKind::ConfigMap,
            store::Kind::GatewayClass => ObjectKind::GatewayClass,
            store::Kind::Gateway => ObjectKind::Gateway,
            store::Kind::HttpRoute => ObjectKind::HttpRoute,
            store::Kind::GrpcRoute => ObjectKind::GrpcRoute,
            store::Kind::ReferenceGrant => ObjectKind::ReferenceGrant,
            store::Kind::Namespace => ObjectKind::Namespace,
            store::Kind::BackendTlsPolicy => ObjectKind::BackendTlsPolicy,
        }
    }
}

impl From<gantry_proxy::SourceKind> for ObjectKind {
    fn from(kind: gantry_proxy::SourceKind) -> Self {
        match kind {
            gantry_proxy::SourceKind::Ingress => ObjectKind::Ingress,
            gantry_proxy::SourceKind::HttpRoute => ObjectKind::HttpRoute,
            gantry_proxy::SourceKind::GrpcRoute => ObjectKind::GrpcRoute,
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The object a diagnostic is about. Shown (`Display`, and serialized) as `Kind namespace/name`,
/// or `Kind name` for cluster-scoped objects, files and documents.
///
/// Ordered by that text first (then by uid), so lists of diagnostics sort as their text reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub kind: ObjectKind,
    /// `None` for cluster-scoped objects, files and documents.
    pub namespace: Option<String>,
    pub name: String,
    /// `metadata.uid` of the object as translated; `None` when it came from a file (or a test)
    /// rather than an API server, and for files and documents.
    pub uid: Option<String>,
}

// === impl ObjectRef ===

impl ObjectRef {
    /// The object `key` of `kind` (an empty namespace: cluster-scoped), with its uid.
    pub fn new(kind: impl Into<ObjectKind>, key: &ObjectKey, uid: Option<&str>) -> Self {
        Self {
            kind: kind.into(),
            namespace: (!key.namespace.is_empty()).then(|| key.namespace.clone()),
            name: key.name.clone(),
            uid: uid.map(str::to_string),
        }
    }

    /// The object `key` of `kind` whose metadata is `meta`: the uid is taken from it.
    pub fn of(kind: impl Into<ObjectKind>, key: &ObjectKey, meta: &ObjectMeta) -> Self {
        Self::new(kind, key, meta.uid.as_deref())
    }

    /// A manifest file.
    pub fn file(name: impl Into<String>) -> Self {
        Self {
            kind: ObjectKind::File,
            namespace: None,
            name: name.into(),
            uid: None,
        }
    }

    /// Document `index` (from 1) of the manifest file `source`.
    pub fn document(index: usize, source: &str) -> Self {
        Self {
            kind: ObjectKind::Document,
            namespace: None,
            name: format!("{index} of {source}"),
            uid: None,
        }
    }

    /// The store key: `namespace/name`, or `name` with an empty namespace.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(self.namespace.clone().unwrap_or_default(), self.name.clone())
    }

    /// Whether this names the same object as `kind` `key`, whatever its uid.
    pub fn is(&self, kind: impl Into<ObjectKind>, key: &ObjectKey) -> bool {
        self.kind == kind.into()
            && self.name == key.name
            && self.namespace.as_deref().unwrap_or_default() == key.namespace
    }

    /// The bytes of the `Display` text, without allocating.
    fn text(&self) -> impl Iterator<Item = u8> + '_ {
        let namespace = self.namespace.as_deref().filter(|ns| !ns.is_empty());
        self.kind
            .as_str()
            .bytes()
            .chain(*b" ")
            .chain(namespace.into_iter().flat_map(|ns| ns.bytes().chain(*b"/")))
            .chain(self.name.bytes())
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace.as_deref().filter(|ns| !ns.is_empty()) {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

impl Ord for ObjectRef {
    fn cmp(&self, other: &Self) -> Ordering {
        self.text()
            .cmp(other.text())
            .then_with(|| self.uid.cmp(&other.uid))
            // Equal text from different parts (an empty namespace and none): still a total order
            // that agrees with `Eq`.
            .then_with(|| {
                (self.kind, &self.namespace, &self.name).cmp(&(other.kind, &other.namespace, &other.name))
            })
    }
}

impl PartialOrd for ObjectRef {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares the `Display` text: `object == "Ingress default/web"`.
impl PartialEq<str> for ObjectRef {
    fn eq(&self, other: &str) -> bool {
        self.text().eq(other.bytes())
    }
}

impl PartialEq<&str> for ObjectRef {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl Serialize for ObjectRef {
    /// As the `Display` text.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One problem with one object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub object: ObjectRef,
    /// A short CamelCase reason, stable for metrics and Events (`ServiceNotFound`, `PathConflict`, ...).
    pub reason: String,
    /// What is wrong and what was done about it, for people.
    pub message: String,
}

impl Serialize for Diagnostic {
    /// `object` as the text it always was (`Ingress default/web`), then its parts: `kind`,
    /// `namespace` and `uid` (`null` when there is none) and `name`; then `reason` and `message`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut d = s.serialize_struct("Diagnostic", 7)?;
        d.serialize_field("object", &self.object)?;
        d.serialize_field("kind", self.object.kind.as_str())?;
        d.serialize_field("namespace", &self.object.namespace)?;
        d.serialize_field("name", &self.object.name)?;
        d.serialize_field("uid", &self.object.uid)?;
        d.serialize_field("reason", &self.reason)?;
        d.serialize_field("message", &self.message)?;
        d.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(ns: &str, name: &str) -> ObjectRef {
        ObjectRef::new(ObjectKind::Ingress, &ObjectKey::new(ns, name), Some("u-1"))
    }

    #[test]
    fn objects_read_as_kind_namespace_and_name() {
        assert_eq!(ingress("shop", "web").to_string(), "Ingress shop/web");
        let class = ObjectRef::new(store::Kind::IngressClass, &ObjectKey::cluster("gantry"), None);
        assert_eq!(class.to_string(), "IngressClass gantry");
        assert_eq!(class.namespace, None);
        assert_eq!(ObjectRef::file("a.yaml").to_string(), "File a.yaml");
        assert_eq!(
            ObjectRef::document(3, "a.yaml").to_string(),
            "document 3 of a.yaml"
        );
        let route = ObjectRef::new(ObjectKind::HttpRoute, &ObjectKey::new("infra", "web"), None);
        assert_eq!(route.to_string(), "HTTPRoute infra/web");
        assert_eq!(route.key(), ObjectKey::new("infra", "web"));
        assert_eq!(route, "HTTPRoute infra/web");
        assert_ne!(route, "HTTPRoute infra/we");
        assert_ne!(route, "GRPCRoute infra/web");
        assert!(route.is(store::Kind::HttpRoute, &ObjectKey::new("infra", "web")));
        assert!(!route.is(store::Kind::GrpcRoute, &ObjectKey::new("infra", "web")));
        assert!(!route.is(store::Kind::HttpRoute, &ObjectKey::new("other", "web")));
    }

    #[test]
    fn objects_sort_as_their_text_reads() {
        // `-` sorts before `/`: by parts, `a` would come before `a-b`; by text it comes after.
        let mut refs = [
            ingress("a", "x"),
            ingress("a-b", "x"),
            ObjectRef::new(ObjectKind::GatewayClass, &ObjectKey::cluster("z"), None),
            ObjectRef::file("b.yaml"),
            ingress("a", "x-y"),
        ];
        refs.sort();
        let mut texts: Vec<String> = refs.iter().map(ToString::to_string).collect();
        let sorted = texts.clone();
        texts.sort();
        assert_eq!(sorted, texts);
        assert_eq!(sorted[0], "File b.yaml");
        assert_eq!(sorted[2], "Ingress a-b/x");
        // The same object at two uids: two objects, in a stable order.
        let (mut one, two) = (ingress("a", "x"), ingress("a", "x"));
        one.uid = Some("u-0".into());
        assert_eq!(one.cmp(&two), Ordering::Less);
        assert_ne!(one, two);
    }

    #[test]
    fn diagnostics_serialize_the_text_and_the_parts() {
        let d = Diagnostic {
            object: ingress("shop", "web"),
            reason: "ServiceNotFound".into(),
            message: "m".into(),
        };
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({
                "object": "Ingress shop/web",
                "kind": "Ingress",
                "namespace": "shop",
                "name": "web",
                "uid": "u-1",
                "reason": "ServiceNotFound",
                "message": "m",
            })
        );
        let file = Diagnostic {
            object: ObjectRef::file("a.yaml"),
            ..d
        };
        let v = serde_json::to_value(&file).unwrap();
        assert_eq!(
            (&v["object"], &v["namespace"], &v["uid"]),
            (
                &"File a.yaml".into(),
                &serde_json::Value::Null,
                &serde_json::Value::Null
            )
        );
    }

    #[test]
    fn kubernetes_kinds_have_their_api_version() {
        let version = |k: ObjectKind| k.api_version().map(|v| v.into_owned());
        assert_eq!(
            version(ObjectKind::Ingress).as_deref(),
            Some("networking.k8s.io/v1")
        );
        assert_eq!(
            version(ObjectKind::IngressClass).as_deref(),
            Some("networking.k8s.io/v1")
        );
        assert_eq!(
            version(ObjectKind::ProxyConfig).as_deref(),
            Some(crate::crd::API_VERSION)
        );
        assert_eq!(
            version(ObjectKind::HttpRoute).as_deref(),
            Some("gateway.networking.k8s.io/v1")
        );
        assert_eq!(version(ObjectKind::Secret).as_deref(), Some("v1"));
        assert_eq!(version(ObjectKind::File), None);
        assert_eq!(version(ObjectKind::Document), None);
    }
}
