//! Smoke tests of the envtest harness against a real etcd + kube-apiserver.
//!
//! Needs the control-plane binaries: `KUBEBUILDER_ASSETS` (see
//! `controller/testenv/build-control-plane.sh`), or the harness runs that
//! script itself.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_testkit::TestEnv;
use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;

fn meta(name: &str, ns: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ObjectMeta::default()
    }
}

fn web_service(ns: &str) -> Service {
    Service {
        metadata: meta("web", ns, &[("app", "web")]),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            ports: Some(vec![ServicePort {
                name: Some("http".to_string()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn web_endpoint_slice(ns: &str) -> EndpointSlice {
    EndpointSlice {
        metadata: meta(
            "web-abc12",
            ns,
            &[
                ("kubernetes.io/service-name", "web"),
                ("endpointslice.kubernetes.io/managed-by", "gantry-test"),
            ],
        ),
        address_type: "IPv4".to_string(),
        endpoints: vec![
            Endpoint {
                addresses: vec!["10.1.0.5".to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            },
            Endpoint {
                addresses: vec!["10.1.0.6".to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(false),
                    ..EndpointConditions::default()
                }),
                ..Endpoint::default()
            },
        ],
        ports: Some(vec![EndpointPort {
            name: Some("http".to_string()),
            port: Some(8080),
            protocol: Some("TCP".to_string()),
            ..EndpointPort::default()
        }]),
    }
}

fn web_ingress(ns: &str) -> Ingress {
    Ingress {
        metadata: meta("web", ns, &[]),
        spec: Some(IngressSpec {
            ingress_class_name: Some("gantry".to_string()),
            tls: Some(vec![IngressTLS {
                hosts: Some(vec!["smoke.example.test".to_string()]),
                secret_name: Some("web-tls".to_string()),
            }]),
            rules: Some(vec![IngressRule {
                host: Some("smoke.example.test".to_string()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/api".to_string()),
                        path_type: "Prefix".to_string(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: "web".to_string(),
                                port: Some(ServiceBackendPort {
                                    number: Some(80),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_and_survive_an_api_server_restart() {
    let env = TestEnv::start_async().await.expect("control plane starts");
    assert!(
        env.apiserver_url().starts_with("https://127.0.0.1:"),
        "{}",
        env.apiserver_url()
    );
    let client = env.client().await;
    let ns = env.new_namespace("smoke").await;
    assert!(ns.starts_with("smoke-"), "{ns}");
    let pp = PostParams::default();

    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services
        .create(&pp, &web_service(&ns))
        .await
        .expect("create service");
    let svc = services.get("web").await.expect("get service");
    let spec = svc.spec.expect("service spec");
    let cluster_ip = spec.cluster_ip.expect("a cluster IP is allocated");
    assert!(
        cluster_ip.starts_with("10.0.0."),
        "cluster IP {cluster_ip} from 10.0.0.0/24"
    );
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(
        (port.port, port.target_port.clone()),
        (80, Some(IntOrString::Int(8080)))
    );

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    slices
        .create(&pp, &web_endpoint_slice(&ns))
        .await
        .expect("create endpointslice");
    let listed = slices
        .list(&kube::api::ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .expect("list endpointslices");
    assert_eq!(listed.items.len(), 1);
    let slice = &listed.items[0];
    let ready: Vec<(&str, bool)> = slice
        .endpoints
        .iter()
        .map(|e| {
            (
                e.addresses[0].as_str(),
                e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(ready, vec![("10.1.0.5", true), ("10.1.0.6", false)]);
    assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080));

    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);
    let created = ingresses
        .create(&pp, &web_ingress(&ns))
        .await
        .expect("create ingress");
    let ing = ingresses.get("web").await.expect("get ingress");
    let spec = ing.spec.clone().expect("ingress spec");
    assert_eq!(spec.ingress_class_name.as_deref(), Some("gantry"));
    let rule = &spec.rules.as_ref().unwrap()[0];
    assert_eq!(rule.host.as_deref(), Some("smoke.example.test"));
    let path = &rule.http.as_ref().unwrap().paths[0];
    assert_eq!(
        (path.path.as_deref(), path.path_type.as_str()),
        (Some("/api"), "Prefix")
    );
    let backend = path.backend.service.as_ref().unwrap();
    assert_eq!(
        (backend.name.as_str(), backend.port.as_ref().unwrap().number),
        ("web", Some(80))
    );
    assert_eq!(
        spec.tls.as_ref().unwrap()[0].secret_name.as_deref(),
        Some("web-tls")
    );

    // Stop the control plane: requests now fail (quickly: the port is closed).
    let url = env.apiserver_url();
    env.stop_apiserver();
    assert!(!env.is_ready());
    let while_down = tokio::time::timeout(Duration::from_secs(30), ingresses.get("web")).await;
    assert!(
        matches!(while_down, Ok(Err(_))),
        "a request while stopped fails: {while_down:?}"
    );

    // Start it again: same URL, same data, and the old client reconnects.
    env.start_apiserver_async().await.expect("control plane restarts");
    assert_eq!(env.apiserver_url(), url);
    let again = ingresses
        .get("web")
        .await
        .expect("ingress is still there after a restart");
    assert_eq!(again.metadata.uid, created.metadata.uid);
    assert_eq!(again.metadata.resource_version, ing.metadata.resource_version);
    assert_eq!(again.spec, ing.spec);
    let fresh: Api<Service> = Api::namespaced(env.client().await, &ns);
    assert_eq!(
        fresh
            .get("web")
            .await
            .expect("service after restart")
            .spec
            .unwrap()
            .cluster_ip,
        Some(cluster_ip)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_uses_the_kubeconfig_and_namespaces_are_fresh_per_call() {
    let env = TestEnv::start_async().await.expect("control plane starts");
    let a = env.new_namespace("gantry-a").await;
    let b = env.new_namespace("gantry-a").await;
    assert_ne!(a, b);

    let namespaces: Api<Namespace> = Api::all(env.client().await);
    let ns = namespaces.get(&a).await.expect("namespace exists");
    assert_eq!(
        ns.metadata
            .labels
            .unwrap()
            .get("gantry.test/envtest")
            .map(String::as_str),
        Some("true")
    );

    let out = env
        .kubectl()
        .args(["get", "namespace", &b, "-o", "jsonpath={.metadata.name}"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), b);

    // The administrator is in system:masters, so RBAC lets it do anything.
    let out = env
        .kubectl()
        .args(["auth", "can-i", "*", "*"])
        .output()
        .expect("kubectl runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
}
