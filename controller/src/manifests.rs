//! Manifest files → objects, for file mode.
//!
//! A file is read the way `kubectl apply -f` would take it: multi-document YAML (`---`), or JSON,
//! where any document may be a `List` of items. Only the kinds Gantry reads are kept (Secrets of
//! every type and ConfigMaps too, as annotations refer to them: `auth-secret`, `custom-headers`);
//! everything else (Deployments next to the Services, ...) is skipped without a word.
//!
//! Errors are split in two on purpose: a file that is not YAML/JSON at all is an `Err` (the file
//! source then keeps its last good read of the file, so a half-saved file in an editor does not
//! drop routes), while a document that parses but is not a valid object of its kind only costs that
//! one object a [`Diagnostic`] and the rest of the file still loads.

use crate::diagnostic::{Diagnostic, ObjectRef};
use k8s_openapi::api::{
    core::v1::{ConfigMap, Namespace, Node, Secret, Service},
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, IngressClass},
};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::Value;

use crate::{
    crd::{self, ProxyConfig},
    gateway::api::{BackendTlsPolicy, Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant},
    store::{Kind, Object, ObjectKey, DEFAULT_NAMESPACE},
};

/// The Secret type Gantry reads certificates from (`spec.tls`). Secrets of other types are loaded
/// too, for the annotations that refer to them (`auth-secret`), and translation checks the type
/// where it matters.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Diagnostic reason for a document that does not deserialize into its kind.
pub const INVALID_OBJECT: &str = "InvalidObject";

/// Why a whole file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file is not valid YAML (for a JSON-looking file: neither valid JSON nor YAML).
    #[error("{file}: not valid YAML: {error}")]
    Yaml {
        file: String,
        #[source]
        error: serde_norway::Error,
    },
    /// The file looks like JSON (starts with `{` or `[`) and is neither valid JSON nor valid YAML.
    #[error("{file}: not valid JSON: {error}")]
    Json {
        file: String,
        #[source]
        error: serde_json::Error,
    },
}

/// What one file holds: the objects Gantry reads, and one diagnostic per document that could not
/// be used.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub objects: Vec<Object>,
    /// Sorted and deduplicated.
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses one manifest file. `source` names the file in messages only.
///
/// Returns `Err` only when the file as a whole is not valid YAML/JSON. Empty documents, documents
/// that are not mappings, and kinds or API versions Gantry does not read are skipped silently.
/// A document of a kind Gantry reads (Secrets of any type and ConfigMaps included) that fails to
/// deserialize, or has no `metadata.name`, yields an `InvalidObject` diagnostic.
pub fn parse_manifests(source: &str, contents: &str) -> Result<ParsedFile, ManifestError> {
    let documents = read_documents(source, contents)?;
    let mut parsed = ParsedFile::default();
    for (i, doc) in documents.into_iter().enumerate() {
        match doc {
            Ok(value) => collect(source, &format!("document {}", i + 1), value, &mut parsed),
            // Valid YAML that has no JSON form (e.g. a mapping with a sequence as key): not an object.
            Err(error) => parsed.diagnostics.push(Diagnostic {
                object: ObjectRef::document(i + 1, source),
                reason: INVALID_OBJECT.into(),
                message: format!("{source}: document {}: {error}; skipped", i + 1),
            }),
        }
    }
    parsed.diagnostics.sort();
    parsed.diagnostics.dedup();
    Ok(parsed)
}

/// Splits a file into documents, each as a JSON value (or why it has no JSON form).
fn read_documents(source: &str, contents: &str) -> Result<Vec<Result<Value, String>>, ManifestError> {
    let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
    let trimmed = contents.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // `kubectl get -o json` output, possibly several values back to back.
        let json: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(contents).into_iter().collect();
        match json {
            Ok(values) => return Ok(values.into_iter().map(Ok).collect()),
            // JSON-looking files may still be YAML flow mappings (`{kind: List, items: []}`).
            Err(json_error) => {
                return read_yaml(source, contents).map_err(|_| ManifestError::Json {
                    file: source.to_string(),
                    error: json_error,
                })
            }
        }
    }
    read_yaml(source, contents)
}

fn read_yaml(source: &str, contents: &str) -> Result<Vec<Result<Value, String>>, ManifestError> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(contents) {
        // Stop at the first syntax error: the parser cannot resume after one, and a file that is
        // partly broken is treated as not read at all.
        let value = serde_norway::Value::deserialize(document).map_err(|error| ManifestError::Yaml {
            file: source.to_string(),
            error,
        })?;
        documents.push(serde_json::to_value(value).map_err(|e| e.to_string()));
    }
    Ok(documents)
}

/// Adds the object in one document (or the items of a `List`) to `parsed`.
fn collect(source: &str, place: &str, value: Value, parsed: &mut ParsedFile) {
    let Value::Object(map) = &value else { return };
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();

    if let Some(item_kind) = kind.strip_suffix("List") {
        let Some(Value::Array(items)) = map.get("items") else {
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let mut item = item.clone();
            // Typed lists from the API (`kind: ServiceList`) leave kind and apiVersion off the
            // items; a plain `List` has them on every item.
            if let (Value::Object(m), false) = (&mut item, item_kind.is_empty()) {
                m.entry("kind")
                    .or_insert_with(|| Value::String(item_kind.to_string()));
                m.entry("apiVersion")
                    .or_insert_with(|| Value::String(api_version.clone()));
            }
            collect(source, &format!("{place}, item {}", i + 1), item, parsed);
        }
        return;
    }

    let kind = match (api_version.as_str(), kind.as_str()) {
        ("networking.k8s.io/v1", "Ingress") => Kind::Ingress,
        ("networking.k8s.io/v1", "IngressClass") => Kind::IngressClass,
        ("v1", "Service") => Kind::Service,
        ("discovery.k8s.io/v1", "EndpointSlice") => Kind::EndpointSlice,
        ("v1", "Secret") => Kind::Secret,
        ("v1", "ConfigMap") => Kind::ConfigMap,
        ("v1", "Node") => Kind::Node,
        ("v1", "Namespace") => Kind::Namespace,
        ("gateway.networking.k8s.io/v1", "BackendTLSPolicy") => Kind::BackendTlsPolicy,
        (crd::API_VERSION, crd::KIND) => Kind::ProxyConfig,
        ("gateway.networking.k8s.io/v1", "GatewayClass") => Kind::GatewayClass,
        ("gateway.networking.k8s.io/v1", "Gateway") => Kind::Gateway,
        ("gateway.networking.k8s.io/v1", "HTTPRoute") => Kind::HttpRoute,
        ("gateway.networking.k8s.io/v1", "GRPCRoute") => Kind::GrpcRoute,
        ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "ReferenceGrant") => {
            Kind::ReferenceGrant
        }
        _ => return,
    };

    let label = object_label(kind, &value);
    let object = match kind {
        Kind::Ingress => typed::<Ingress>(value).map(Object::Ingress),
        Kind::IngressClass => typed::<IngressClass>(value).map(Object::IngressClass),
        Kind::Service => typed::<Service>(value).map(Object::Service),
        Kind::EndpointSlice => typed::<EndpointSlice>(value).map(Object::EndpointSlice),
        Kind::Secret => typed::<Secret>(value).map(Object::Secret),
        Kind::Node => typed::<Node>(value).map(Object::Node),
        Kind::ProxyConfig => typed::<ProxyConfig>(value).map(Object::ProxyConfig),
        Kind::ConfigMap => typed::<ConfigMap>(value).map(Object::ConfigMap),
        Kind::GatewayClass => typed::<GatewayClass>(value).map(Object::GatewayClass),
        Kind::Gateway => typed::<Gateway>(value).map(Object::Gateway),
        Kind::HttpRoute => typed::<HttpRoute>(value).map(Object::HttpRoute),
        Kind::GrpcRoute => typed::<GrpcRoute>(value).map(Object::GrpcRoute),
        Kind::ReferenceGrant => typed::<ReferenceGrant>(value).map(Object::ReferenceGrant),
        Kind::Namespace => typed::<Namespace>(value).map(Object::Namespace),
        Kind::BackendTlsPolicy => typed::<BackendTlsPolicy>(value).map(Object::BackendTlsPolicy),
    };
    let problem = match object {
        Ok(object) if object.metadata().name.as_deref().is_some_and(|n| !n.is_empty()) => {
            parsed.objects.push(object);
            return;
        }
        Ok(_) => "metadata.name is missing".to_string(),
        Err(error) => error.to_string(),
    };
    parsed.diagnostics.push(Diagnostic {
        object: label.clone(),
        reason: INVALID_OBJECT.into(),
        message: format!(
            "{source}: {place}: {label} is not a valid {api_version} {kind}: {problem}; skipped"
        ),
    });
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, serde_json::Error> {
    serde_json::from_value(value)
}

/// The object (`Kind namespace/name`) as the raw document names it, so that even an object that does not
/// deserialize can be named in its diagnostic.
fn object_label(kind: Kind, value: &Value) -> ObjectRef {
    let meta = value.get("metadata");
    let field = |f: &str| {
        meta.and_then(|m| m.get(f))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let namespace = match (kind.is_namespaced(), field("namespace")) {
        (false, _) => "",
        (true, "") => DEFAULT_NAMESPACE,
        (true, ns) => ns,
    };
    let name = match field("name") {
        "" => "<unnamed>",
        name => name,
    };
    let uid = Some(field("uid")).filter(|u| !u.is_empty());
    ObjectRef::new(kind, &ObjectKey::new(namespace, name), uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds_and_keys(parsed: &ParsedFile) -> Vec<String> {
        parsed.objects.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn multi_document_yaml_keeps_the_kinds_gantry_reads_and_skips_the_rest() {
        let yaml = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec: {replicas: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
---
# only a comment
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  rules:
  - host: a.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1beta1
kind: Ingress
metadata: {name: ancient}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: gantry}
spec: {controller: gantry.dev/ingress-controller}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1]}]
---
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
type: Opaque
data: {password: aGVsbG8=}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: headers}
data: {X-Frame-Options: DENY}
"#;
        let parsed = parse_manifests("app.yaml", yaml).unwrap();
        assert_eq!(
            kinds_and_keys(&parsed),
            [
                "Service shop/web",
                "Ingress default/web",
                "IngressClass gantry",
                "EndpointSlice default/web-1",
                "Node n1",
                "Secret default/creds",
                "ConfigMap default/headers"
            ]
        );
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
    }

    #[test]
    fn one_invalid_document_gets_a_diagnostic_and_the_others_still_load() {
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: good}
---
apiVersion: v1
kind: Service
metadata: {name: bad, namespace: shop}
spec:
  ports: [{port: "not a number"}]
---
apiVersion: v1
kind: Service
metadata: {namespace: shop}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: also-good}
"#;
        let parsed = parse_manifests("mixed.yaml", yaml).unwrap();
        assert_eq!(
            kinds_and_keys(&parsed),
            ["Service default/good", "Ingress default/also-good"]
        );
        let diags: Vec<(String, &str)> = parsed
            .diagnostics
            .iter()
            .map(|d| (d.object.to_string(), d.reason.as_str()))
            .collect();
        assert_eq!(
            diags,
            [
                ("Service shop/<unnamed>".to_string(), "InvalidObject"),
                ("Service shop/bad".to_string(), "InvalidObject")
            ]
        );
        let bad = &parsed.diagnostics[1].message;
        assert!(
            bad.starts_with("mixed.yaml: document 2: Service shop/bad"),
            "{bad}"
        );
        assert!(
            bad.contains("invalid type"),
            "serde's error is in the message: {bad}"
        );
        assert!(parsed.diagnostics[0].message.contains("metadata.name is missing"));
    }

    #[test]
    fn a_file_that_is_not_yaml_is_an_error() {
        let err = parse_manifests("broken.yaml", "kind: Service\nmetadata: {name: [unclosed\n").unwrap_err();
        assert!(matches!(err, ManifestError::Yaml { .. }), "{err}");
        assert!(err.to_string().starts_with("broken.yaml: not valid YAML"));

        // A syntax error after good documents still rejects the whole file.
        let err = parse_manifests("late.yaml", "kind: A\n---\nkind: B\n---\n\"unterminated\n").unwrap_err();
        assert!(matches!(err, ManifestError::Yaml { .. }), "{err}");
    }

    #[test]
    fn a_json_looking_file_that_is_neither_json_nor_yaml_is_a_json_error() {
        let err = parse_manifests("broken.json", "{\"kind\": \"Service\",").unwrap_err();
        assert!(matches!(err, ManifestError::Json { .. }), "{err}");
    }

    #[test]
    fn empty_and_comment_only_files_hold_nothing() {
        for contents in ["", "\n\n", "# nothing here\n", "---\n---\n", "[]", "\u{feff}"] {
            let parsed = parse_manifests("empty.yaml", contents).unwrap();
            assert!(
                parsed.objects.is_empty() && parsed.diagnostics.is_empty(),
                "{contents:?}"
            );
        }
    }

    #[test]
    fn list_items_are_read_including_typed_lists_without_item_kinds() {
        let yaml = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: a}
- apiVersion: v1
  kind: List
  items:
  - {apiVersion: v1, kind: Node, metadata: {name: nested}}
---
apiVersion: v1
kind: ServiceList
items:
- metadata: {name: b, namespace: x}
"#;
        let parsed = parse_manifests("list.yaml", yaml).unwrap();
        assert_eq!(
            kinds_and_keys(&parsed),
            ["Service default/a", "Node nested", "Service x/b"]
        );
    }

    #[test]
    fn json_files_are_read_with_lists_and_several_values() {
        let json = r#"{
  "apiVersion": "v1", "kind": "List",
  "items": [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
     "spec": {"ports": [{"name": "http", "port": 80}]}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "bad"},
     "spec": {"rules": "not a list"}}
  ]
}
{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}"#;
        let parsed = parse_manifests("all.json", json).unwrap();
        assert_eq!(kinds_and_keys(&parsed), ["Service default/a", "Node n1"]);
        assert_eq!(parsed.diagnostics.len(), 1);
        assert_eq!(parsed.diagnostics[0].object, "Ingress default/bad");
        assert!(parsed.diagnostics[0]
            .message
            .starts_with("all.json: document 1, item 2:"));
    }

    #[test]
    fn secrets_of_every_type_are_kept_and_their_data_is_decoded() {
        let yaml = r#"
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: web}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==, tls.key: a2V5}
---
apiVersion: v1
kind: Secret
metadata: {name: basic-auth}
type: Opaque
data: {auth: Zm9vOmJhcg==}
stringData: {note: plain}
---
apiVersion: v1
kind: Secret
metadata: {name: token}
type: kubernetes.io/service-account-token
data: {token: "this is not base64"}
"#;
        let parsed = parse_manifests("secrets.yaml", yaml).unwrap();
        let [Object::Secret(tls), Object::Secret(auth)] = parsed.objects.as_slice() else {
            panic!("{:?}", parsed.objects)
        };
        let data = tls.data.as_ref().unwrap();
        assert_eq!(data["tls.crt"].0, b"cert");
        assert_eq!(data["tls.key"].0, b"key");
        assert_eq!(auth.data.as_ref().unwrap()["auth"].0, b"foo:bar");
        assert_eq!(auth.string_data.as_ref().unwrap()["note"], "plain");
        // A Secret Gantry now reads that does not decode is a diagnostic, like any other object.
        assert_eq!(parsed.diagnostics.len(), 1, "{:?}", parsed.diagnostics);
        assert_eq!(parsed.diagnostics[0].object, "Secret default/token");
    }

    #[test]
    fn documents_without_a_json_form_get_a_diagnostic() {
        let yaml = "? [a, b]\n: c\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n1}\n";
        let parsed = parse_manifests("odd.yaml", yaml).unwrap();
        assert_eq!(kinds_and_keys(&parsed), ["Node n1"]);
        assert_eq!(parsed.diagnostics.len(), 1);
        assert_eq!(parsed.diagnostics[0].reason, INVALID_OBJECT);
    }

    #[test]
    fn garbage_never_panics() {
        let inputs = [
            "kind: List\nitems: 3\n",
            "kind: List\n",
            "apiVersion: v1\nkind: Service\nmetadata: 7\n",
            "apiVersion: v1\nkind: Service\n",
            "- 1\n- 2\n",
            "just a string",
            "apiVersion: [v1]\nkind: {a: b}\n",
            "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {name: s}\ndata: {tls.crt: '%%%'}\n",
            "&a [*a]",
            "{\"a\": 1e999}",
        ];
        for input in inputs {
            let _ = parse_manifests("fuzz.yaml", input);
        }
    }
}
