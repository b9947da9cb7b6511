//! What a build says about the objects it read: every diagnostic names its object by kind,
//! namespace, name and the uid of the version translated (what Events are sent to), and the build
//! lists the Ingresses it serves (what the status writer writes to).

use super::fixtures::*;
use crate::{
    diagnostic::{Diagnostic, ObjectKind, ObjectRef},
    store::ObjectKey,
    translate::{Served, Translation},
};

/// (kind, namespace, name, uid) of a diagnostic's object.
fn parts(d: &Diagnostic) -> (ObjectKind, Option<&str>, &str, Option<&str>) {
    let o = &d.object;
    (o.kind, o.namespace.as_deref(), o.name.as_str(), o.uid.as_deref())
}

/// The diagnostics with this reason.
fn with_reason<'t>(t: &'t Translation, reason: &str) -> Vec<&'t Diagnostic> {
    t.diagnostics.iter().filter(|d| d.reason == reason).collect()
}

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 80, targetPort: 3000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 3000}]
endpoints: [{addresses: [10.0.0.1], conditions: {ready: true}}]
"#;

#[test]
fn ingress_diagnostics_carry_the_uid_and_the_build_lists_what_it_serves() {
    let t = build(yaml(&format!(
        r#"{SERVICE}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: broken
  namespace: shop
  uid: uid-broken
  generation: 3
  creationTimestamp: "2026-01-02T00:00:00Z"
  annotations: {{nginx.ingress.kubernetes.io/no-such-annotation: "x"}}
spec:
  ingressClassName: gantry
  rules:
  - host: broken.example
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: missing, port: {{number: 80}}}}}}}}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: old, namespace: shop, uid: uid-old, generation: 1, creationTimestamp: "2026-01-01T00:00:00Z"}}
spec:
  ingressClassName: gantry
  rules:
  - host: old.example
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: theirs, namespace: shop, uid: uid-theirs}}
spec:
  ingressClassName: other
  rules:
  - host: theirs.example
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: missing, port: {{number: 80}}}}}}}}]}}
"#
    )));
    // A processor's diagnostic (backends) and one made from the annotation reports at the end.
    for reason in ["ServiceNotFound", "AnnotationUnknown"] {
        let found = with_reason(&t, reason);
        assert_eq!(found.len(), 1, "{reason}: {:#?}", t.diagnostics);
        assert_eq!(
            parts(found[0]),
            (ObjectKind::Ingress, Some("shop"), "broken", Some("uid-broken")),
            "{reason}"
        );
        assert_eq!(found[0].object, "Ingress shop/broken");
    }
    assert_eq!(
        t.diagnostics.len(),
        2,
        "nothing about other classes: {:#?}",
        t.diagnostics
    );
    // Oldest first, as translated.
    assert_eq!(
        t.served.iter().map(|s| Served::clone(s)).collect::<Vec<_>>(),
        [
            Served {
                key: ObjectKey::new("shop", "old"),
                uid: Some("uid-old".into()),
                generation: Some(1),
            },
            Served {
                key: ObjectKey::new("shop", "broken"),
                uid: Some("uid-broken".into()),
                generation: Some(3),
            },
        ]
    );
}

#[test]
fn class_and_proxy_config_diagnostics_name_those_objects_with_their_uids() {
    let class = |name: &str, uid: &str, parameters: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: {name}, uid: {uid}}}\n\
             spec: {{controller: {CONTROLLER}, parameters: {parameters}}}\n"
        )
    };
    let proxy_config = "apiVersion: gantry.dev/v1alpha1\nkind: ProxyConfig\n\
                        metadata: {name: pc, uid: uid-pc}\nspec: {trustedProxies: [not-a-cidr]}\n";
    let to_pc = "{apiGroup: gantry.dev, kind: ProxyConfig, name: pc}";

    // The class names a ProxyConfig that does not exist; another class of ours names something else.
    let t = build(yaml(&format!(
        "{}---\n{}",
        class(CLASS, "uid-class", to_pc),
        class(
            "second",
            "uid-second",
            "{apiGroup: gantry.dev, kind: ProxyConfig, name: other}"
        )
    )));
    let d = the_diagnostic(&t, "ProxyConfigNotFound");
    assert_eq!(
        parts(d),
        (ObjectKind::IngressClass, None, CLASS, Some("uid-class"))
    );
    assert_eq!(d.object, "IngressClass gantry");
    let d = the_diagnostic(&t, "ParametersIgnored");
    assert_eq!(
        parts(d),
        (ObjectKind::IngressClass, None, "second", Some("uid-second"))
    );

    // Parameters of a kind Gantry does not read.
    let t = build(yaml(&class(
        CLASS,
        "uid-class",
        "{apiGroup: example.com, kind: Other, name: x}",
    )));
    let d = the_diagnostic(&t, "UnsupportedParameters");
    assert_eq!(
        parts(d),
        (ObjectKind::IngressClass, None, CLASS, Some("uid-class"))
    );

    // The ProxyConfig exists, with a value its schema lets through.
    let t = build(yaml(&format!(
        "{}---\n{proxy_config}",
        class(CLASS, "uid-class", to_pc)
    )));
    let d = the_diagnostic(&t, "InvalidProxyConfig");
    assert_eq!(parts(d), (ObjectKind::ProxyConfig, None, "pc", Some("uid-pc")));
    assert_eq!(d.object, "ProxyConfig pc");
    assert!(d.message.starts_with("spec.trustedProxies: "), "{}", d.message);
    assert_eq!(t.diagnostics.len(), 1, "{:#?}", t.diagnostics);
}

#[test]
fn gateway_api_diagnostics_name_the_object_of_their_kind_with_its_uid() {
    let t = build(yaml(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gantry, uid: uid-class}
spec: {controllerName: gantry.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: broken-class, uid: uid-broken-class}
spec:
  controllerName: gantry.dev/gateway-controller
  parametersRef: {group: example.com, kind: Other, name: x}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra, uid: uid-gw}
spec:
  gatewayClassName: gantry
  listeners:
  - {name: http, protocol: HTTP, port: 80}
  - {name: udp, protocol: UDP, port: 53}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: infra}
spec: {ports: [{name: http, port: 80, targetPort: 3000}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: infra, uid: uid-http}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [web.example]
  rules:
  - backendRefs: [{name: missing, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: infra, uid: uid-grpc}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [grpc.example]
  rules:
  - backendRefs: [{name: empty, port: 80}]
"#,
    ));
    let about = |kind: ObjectKind| -> Vec<(Option<&str>, &str, Option<&str>, &str)> {
        t.diagnostics
            .iter()
            .filter(|d| d.object.kind == kind)
            .map(|d| {
                let (_, ns, name, uid) = parts(d);
                (ns, name, uid, d.reason.as_str())
            })
            .collect()
    };
    assert_eq!(
        about(ObjectKind::GatewayClass),
        [(
            None,
            "broken-class",
            Some("uid-broken-class"),
            "InvalidParameters"
        )]
    );
    let gateway = about(ObjectKind::Gateway);
    assert!(!gateway.is_empty(), "{:#?}", t.diagnostics);
    assert!(
        gateway
            .iter()
            .all(|(ns, name, uid, _)| (*ns, *name, *uid) == (Some("infra"), "gw", Some("uid-gw"))),
        "{gateway:?}"
    );
    assert_eq!(
        about(ObjectKind::HttpRoute),
        [(Some("infra"), "web", Some("uid-http"), "BackendNotFound")]
    );
    // A GRPCRoute's backend problems are its own, not an HTTPRoute's.
    assert_eq!(
        about(ObjectKind::GrpcRoute),
        [(Some("infra"), "grpc", Some("uid-grpc"), "NoEndpoints")]
    );
    assert_eq!(
        t.diagnostics
            .iter()
            .find(|d| d.object.kind == ObjectKind::GrpcRoute)
            .map(|d| d.object.to_string()),
        Some("GRPCRoute infra/grpc".to_string())
    );
}

#[test]
fn the_default_certificate_diagnostic_names_its_secret() {
    let mut opts = opts();
    opts.default_ssl_certificate = Some(ObjectKey::new("infra", "default-cert"));
    let bad = yaml(
        r#"
apiVersion: v1
kind: Secret
metadata: {name: default-cert, namespace: infra, uid: uid-secret}
type: kubernetes.io/tls
data: {tls.crt: bm90IGEgY2VydA==, tls.key: bm90IGEga2V5}
"#,
    );
    let t = build_with(bad, &opts);
    let d = the_diagnostic(&t, "TLSSecretInvalid");
    assert_eq!(
        d.object,
        ObjectRef::new(
            ObjectKind::Secret,
            &ObjectKey::new("infra", "default-cert"),
            Some("uid-secret")
        )
    );
    // Missing: there is no uid to give.
    let t = build_with(Vec::new(), &opts);
    let d = the_diagnostic(&t, "TLSSecretNotFound");
    assert_eq!(
        parts(d),
        (ObjectKind::Secret, Some("infra"), "default-cert", None)
    );
}
