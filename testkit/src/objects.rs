//! Kubernetes objects for tests: typed (k8s-openapi) for the API server, and YAML text for a
//! `--manifests` folder.

use std::{collections::BTreeMap, net::SocketAddr};

use k8s_openapi::{
    api::{
        core::v1::{Secret, Service, ServicePort, ServiceSpec},
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
        networking::v1::{
            HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass, IngressClassSpec,
            IngressRule, IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
        },
    },
    apimachinery::pkg::util::intstr::IntOrString,
    ByteString,
};
use kube::api::ObjectMeta;

use crate::tls::base64_encode;

/// The IngressClass name Gantry's tests use.
pub const CLASS: &str = "gantry";
/// Gantry's controller name (IngressClass `spec.controller`).
pub const CONTROLLER: &str = "gantry.dev/ingress-controller";

// === typed ===

pub fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..ObjectMeta::default()
    }
}

/// The IngressClass `gantry`, owned by Gantry's controller name.
pub fn ingress_class() -> IngressClass {
    IngressClass {
        metadata: ObjectMeta {
            name: Some(CLASS.into()),
            ..ObjectMeta::default()
        },
        spec: Some(IngressClassSpec {
            controller: Some(CONTROLLER.into()),
            ..IngressClassSpec::default()
        }),
    }
}

/// A ClusterIP Service with one port `port` named `http`, targeting `target`.
pub fn service(ns: &str, name: &str, port: i32, target: u16) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                target_port: Some(IntOrString::Int(target.into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// [`service`] whose port has `appProtocol` `app_protocol`: what a test changes to make a build
/// that yields the serving snapshot again (translation reads a port's `appProtocol`, which the
/// Gateway API's h2c backends need, but an Ingress's routes do not depend on it; a `targetPort`
/// is not even stored).
pub fn service_with_app_protocol(
    ns: &str,
    name: &str,
    port: i32,
    target: u16,
    app_protocol: &str,
) -> Service {
    let mut s = service(ns, name, port, target);
    for p in s.spec.iter_mut().flat_map(|spec| spec.ports.iter_mut().flatten()) {
        p.app_protocol = Some(app_protocol.into());
    }
    s
}

/// An EndpointSlice of `service` listing `addrs`, ready, on a port named `http`; they must all
/// share one port (use several IPs for several endpoints).
pub fn endpoint_slice(ns: &str, name: &str, service: &str, addrs: &[SocketAddr]) -> EndpointSlice {
    let port = addrs.first().map(|a| a.port()).unwrap_or(80);
    assert!(addrs.iter().all(|a| a.port() == port), "one port per slice");
    let mut m = meta(ns, name);
    m.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".to_string(),
        service.to_string(),
    )]));
    EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: addrs
            .iter()
            .map(|a| Endpoint {
                addresses: vec![a.ip().to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(port.into()),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    }
}

/// A `Prefix` path to port `port` of Service `svc`.
pub fn ingress_path(path: &str, svc: &str, port: i32) -> HTTPIngressPath {
    HTTPIngressPath {
        path: Some(path.to_string()),
        path_type: "Prefix".into(),
        backend: IngressBackend {
            service: Some(IngressServiceBackend {
                name: svc.to_string(),
                port: Some(ServiceBackendPort {
                    number: Some(port),
                    ..ServiceBackendPort::default()
                }),
            }),
            ..IngressBackend::default()
        },
    }
}

/// An Ingress of `class` with one rule of one path per (host, path, service, port), all `Prefix`
/// (an empty host: a rule for every host).
pub fn ingress(ns: &str, name: &str, class: &str, rules: &[(&str, &str, &str, i32)]) -> Ingress {
    let rules = rules
        .iter()
        .map(|(host, path, svc, port)| IngressRule {
            host: (!host.is_empty()).then(|| host.to_string()),
            http: Some(HTTPIngressRuleValue {
                paths: vec![ingress_path(path, svc, *port)],
            }),
        })
        .collect();
    Ingress {
        metadata: meta(ns, name),
        spec: Some(IngressSpec {
            ingress_class_name: Some(class.into()),
            rules: Some(rules),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}

/// Adds a `spec.tls` entry for `hosts` with `secret`.
pub fn with_tls(mut ing: Ingress, hosts: &[&str], secret: &str) -> Ingress {
    let spec = ing.spec.get_or_insert_with(IngressSpec::default);
    spec.tls.get_or_insert_with(Vec::new).push(IngressTLS {
        hosts: Some(hosts.iter().map(|h| h.to_string()).collect()),
        secret_name: Some(secret.into()),
    });
    ing
}

/// A kubernetes.io/tls Secret with a fresh self-signed certificate for `names`.
pub fn tls_secret(ns: &str, name: &str, names: &[&str]) -> Secret {
    let c =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    raw_tls_secret(
        ns,
        name,
        c.cert.pem().as_bytes(),
        c.signing_key.serialize_pem().as_bytes(),
    )
}

/// A kubernetes.io/tls Secret with the given `tls.crt` and `tls.key` (which need not be valid).
pub fn raw_tls_secret(ns: &str, name: &str, crt: &[u8], key: &[u8]) -> Secret {
    Secret {
        metadata: meta(ns, name),
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_string(), ByteString(crt.to_vec())),
            ("tls.key".to_string(), ByteString(key.to_vec())),
        ])),
        ..Secret::default()
    }
}

// === YAML, in namespace `default` ===

/// A NodePort Service with one port (`targetPort: 3000`) and one EndpointSlice `name-<i>` per
/// address in `endpoints` (all on one port: loopback backends share 127.0.0.1, so each slice
/// lists one endpoint; several ports need several slices).
pub fn service_yaml(name: &str, port: u16, port_name: Option<&str>, endpoints: &[SocketAddr]) -> String {
    let pn = port_name.map(|n| format!("name: {n}, ")).unwrap_or_default();
    let mut s = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: {name}, namespace: default }}\n\
         spec:\n  type: NodePort\n  ports: [{{ {pn}port: {port}, targetPort: 3000 }}]\n"
    );
    for (i, ep) in endpoints.iter().enumerate() {
        s += &format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  namespace: default\n  \
             labels: {{ kubernetes.io/service-name: {name} }}\naddressType: IPv4\nports: [{{ {pn}port: {} }}]\n\
             endpoints:\n  - addresses: [\"{}\"]\n    conditions: {{ ready: true }}\n",
            ep.port(),
            ep.ip()
        );
    }
    s
}

/// An Ingress of class `gantry` from a compact rule list: (host, path, pathType, service, port); an
/// empty host is a rule for every host.
pub fn ingress_yaml(
    name: &str,
    annotations: &[(&str, &str)],
    rules: &[(&str, &str, &str, &str, u16)],
) -> String {
    let mut s = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n"
    );
    if !annotations.is_empty() {
        s += "  annotations:\n";
        for (k, v) in annotations {
            s += &format!("    {k}: \"{v}\"\n");
        }
    }
    s += "spec:\n  ingressClassName: gantry\n  rules:\n";
    for (host, path, ty, svc, port) in rules {
        if host.is_empty() {
            s += "  - http:\n";
        } else {
            s += &format!("  - host: \"{host}\"\n    http:\n");
        }
        s += &format!(
            "      paths:\n      - path: {path}\n        pathType: {ty}\n        backend:\n          service: {{ name: {svc}, port: {{ number: {port} }} }}\n"
        );
    }
    s
}

/// A Secret of type `ty` with the given entries (base64-encoded here).
pub fn secret_yaml(name: &str, ty: &str, data: &[(&str, &str)]) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name}, namespace: default }}\ntype: {ty}\ndata:\n"
    );
    for (k, v) in data {
        s += &format!("  {k}: {}\n", base64_encode(v.as_bytes()));
    }
    s
}

/// A self-signed certificate for `names` as a kubernetes.io/tls Secret.
pub fn tls_secret_yaml(secret: &str, names: &[&str]) -> String {
    let c =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    secret_yaml(
        secret,
        "kubernetes.io/tls",
        &[
            ("tls.crt", &c.cert.pem()),
            ("tls.key", &c.signing_key.serialize_pem()),
        ],
    )
}
