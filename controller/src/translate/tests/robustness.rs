//! One bad object never stops the others; nothing panics on any input; manifests of every shape
//! translate the same.

use crate::translate::Translation;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::fixtures::*;
use crate::{
    manifests::parse_manifests,
    store::{Object, ObjectStore},
    translate::translate,
};

const GOOD: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: good, namespace: shop}
spec:
  ingressClassName: gantry
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
"#;

/// Translates what a manifest file holds; the parse diagnostics come along.
fn translate_file(name: &str, contents: &str) -> (Translation, Vec<String>) {
    let parsed = parse_manifests(name, contents).expect("file parses");
    let snapshot = build(parsed.objects);
    (
        snapshot,
        parsed
            .diagnostics
            .iter()
            .map(|d| format!("{} {}", d.object, d.reason))
            .collect(),
    )
}

#[test]
fn one_invalid_document_in_a_file_does_not_stop_the_others_from_routing() {
    let file = format!(
        "{GOOD}---\n{}",
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: broken, namespace: shop}
spec:
  ingressClassName: gantry
  rules:
  - host: broken.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: eighty}}}}
"#
    );
    let (snapshot, parse_diagnostics) = translate_file("shop.yaml", &file);
    assert_eq!(routed(&snapshot, "shop.example", "/").as_deref(), Some("web"));
    assert_eq!(routed(&snapshot, "broken.example", "/"), None);
    assert_eq!(parse_diagnostics, ["Ingress shop/broken InvalidObject"]);
}

#[test]
fn a_list_document_translates_like_separate_documents() {
    let list = r#"
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: Ingress
  metadata: {name: good, namespace: shop}
  spec:
    ingressClassName: gantry
    rules:
    - host: shop.example
      http:
        paths:
        - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: shop}
  spec: {ports: [{name: http, port: 80, targetPort: 8080}]}
"#;
    let (snapshot, parse_diagnostics) = translate_file("list.yaml", list);
    assert!(parse_diagnostics.is_empty());
    assert_eq!(routed(&snapshot, "shop.example", "/").as_deref(), Some("web"));
    assert_eq!(
        the_diagnostic(&snapshot, "NoEndpoints").object,
        "Ingress shop/good"
    );
}

#[test]
fn a_json_file_translates_like_yaml() {
    let json = r#"{
  "apiVersion": "networking.k8s.io/v1",
  "kind": "Ingress",
  "metadata": {"name": "api", "namespace": "shop"},
  "spec": {
    "ingressClassName": "gantry",
    "rules": [{"host": "api.example", "http": {"paths": [
      {"path": "/v1", "pathType": "Exact", "backend": {"service": {"name": "api", "port": {"name": "http"}}}}
    ]}}]
  }
}"#;
    let (snapshot, parse_diagnostics) = translate_file("api.json", json);
    assert!(parse_diagnostics.is_empty());
    assert_eq!(routed(&snapshot, "api.example", "/v1").as_deref(), Some("api"));
    assert_eq!(routed(&snapshot, "api.example", "/v1/x"), None);
}

#[test]
fn a_thoroughly_broken_ingress_does_not_stop_a_good_one() {
    let (secret, _) = tls_secret("good-cert", &["good.example"]);
    let snapshot = build(objects![
        ingress("broken")
            .created("2020-01-01T00:00:00Z")
            .tls(&["good.example"], "missing")
            .host("*.*")
            .prefix("/", "svc", 80)
            .host("good.example")
            .prefix("nope", "svc", 80)
            .prefix("/missing", "missing", 80)
            .resource("/r", "Bucket", "b")
            .default_backend("missing", 80),
        ingress("good")
            .tls(&["good.example"], "good-cert")
            .host("good.example")
            .prefix("/", "svc", 80),
        service("svc").port("", 80, 80),
        slice("svc").endpoint("10.0.0.1", 80),
        secret,
    ]);
    assert_eq!(routed(&snapshot, "good.example", "/").as_deref(), Some("svc"));
    assert!(snapshot.certs.lookup("good.example").is_some());
    let broken: Vec<&str> = snapshot
        .diagnostics
        .iter()
        .filter(|d| d.object == "Ingress default/broken")
        .map(|d| d.reason.as_str())
        .collect();
    assert_eq!(
        broken,
        [
            "InvalidHost",
            "InvalidPath",
            "ResourceBackendUnsupported",
            "ServiceNotFound",
            "TLSSecretNotFound"
        ]
    );
    assert!(snapshot
        .diagnostics
        .iter()
        .all(|d| d.object == "Ingress default/broken"));
}

/// An Ingress with every optional field left out or filled with nonsense.
fn odd_ingresses() -> Vec<Ingress> {
    let path = |path: Option<&str>, path_type: &str, backend: IngressBackend| HTTPIngressPath {
        path: path.map(str::to_string),
        path_type: path_type.into(),
        backend,
    };
    let port = |number: Option<i32>, name: Option<&str>| IngressBackend {
        service: Some(IngressServiceBackend {
            name: "svc".into(),
            port: Some(ServiceBackendPort {
                number,
                name: name.map(str::to_string),
            }),
        }),
        resource: None,
    };
    let paths = vec![
        path(None, "", IngressBackend::default()),
        path(Some(""), "Exact", port(None, None)),
        path(Some("/neg"), "Prefix", port(Some(-1), None)),
        path(Some("/big"), "Prefix", port(Some(i32::MAX), None)),
        path(Some("/empty-name"), "Prefix", port(None, Some(""))),
        path(Some("/both"), "Prefix", port(Some(80), Some("http"))),
        path(Some("/{braces}/%zz/../../.."), "Prefix", port(Some(80), None)),
        path(Some("/\u{0}nul"), "Exact", port(Some(80), None)),
        path(Some("/ünï"), "Prefix", port(Some(80), None)),
        path(
            Some("/"),
            "Prefix",
            IngressBackend {
                service: Some(IngressServiceBackend::default()),
                resource: None,
            },
        ),
    ];
    let spec = |rules: Option<Vec<IngressRule>>, tls: Option<Vec<IngressTLS>>| Ingress {
        metadata: Default::default(),
        spec: Some(IngressSpec {
            ingress_class_name: Some(CLASS.into()),
            rules,
            tls,
            default_backend: Some(IngressBackend::default()),
        }),
        status: None,
    };
    vec![
        Ingress::default(),
        spec(None, None),
        spec(
            Some(vec![IngressRule::default()]),
            Some(vec![IngressTLS::default()]),
        ),
        spec(
            Some(vec![IngressRule {
                host: Some("odd.example".into()),
                http: Some(HTTPIngressRuleValue { paths }),
            }]),
            Some(vec![
                IngressTLS {
                    hosts: Some(vec!["".into(), "odd.example".into()]),
                    secret_name: Some(String::new()),
                },
                IngressTLS {
                    hosts: Some(vec![]),
                    secret_name: Some("x".into()),
                },
                IngressTLS {
                    hosts: None,
                    secret_name: None,
                },
            ]),
        ),
        spec(
            Some(vec![IngressRule {
                host: Some("\u{feff}ÄÖ..*:".into()),
                http: None,
            }]),
            Some(vec![IngressTLS {
                hosts: Some(vec!["*.*".into()]),
                secret_name: Some("y".into()),
            }]),
        ),
    ]
}

#[test]
fn odd_and_empty_objects_never_panic_and_produce_a_snapshot() {
    let mut store = ObjectStore::new();
    for (i, mut ing) in odd_ingresses().into_iter().enumerate() {
        ing.metadata.name = Some(format!("odd-{i}"));
        store.apply(Object::Ingress(ing));
    }
    // Objects with nothing in them at all.
    store.apply(Object::Service(Default::default()));
    store.apply(Object::EndpointSlice(Default::default()));
    store.apply(Object::Secret(Default::default()));
    store.apply(Object::Node(Default::default()));
    store.apply(Object::IngressClass(Default::default()));
    store.apply(service("svc").port("", 80, 80).into());
    store.apply(slice("svc").endpoint("not an ip", 80).into());

    let snapshot = translate(&store, &opts(), &gantry_proxy::Snapshot::default());
    assert!(!snapshot.diagnostics.is_empty());
    // Translating the result again (as the next build would) is just as calm.
    let again = translate(&store, &opts(), &snapshot);
    assert_eq!(again.diagnostics, snapshot.diagnostics);
    assert_eq!(again.snapshot, snapshot.snapshot);
}
