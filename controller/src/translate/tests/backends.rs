//! Backends: Service ports, EndpointSlices, node ports, and what happens when they are missing.

use std::net::SocketAddr;

use gantry_proxy::Backend;

use crate::translate::Translation;

use super::fixtures::*;
use crate::{
    store::Object,
    translate::{BackendMode, TranslateOptions, ANNOTATION_BACKEND_MODE},
};

/// `a.example /` → svc, plus the given objects.
fn one_route(port: impl Into<Port>, mut objects: Vec<Object>) -> Vec<Object> {
    objects.push(ingress("web").host("a.example").prefix("/", "svc", port).into());
    objects
}

fn backend(snapshot: &Translation) -> &Backend {
    &snapshot
        .routes
        .lookup("a.example", "/")
        .expect("the path still routes")
        .backend
}

fn addrs(backend: &Backend) -> Vec<String> {
    backend.endpoints.iter().map(|e| e.addr.to_string()).collect()
}

fn node_port_opts() -> TranslateOptions {
    TranslateOptions {
        backend_mode: BackendMode::NodePort,
        ..opts()
    }
}

#[test]
fn service_ports_resolve_to_the_endpoint_slice_port_of_the_same_name() {
    let cases: Vec<(&str, Port, Vec<Object>, Vec<&str>)> = vec![
        (
            "port by number, named service and slice ports",
            80.into(),
            objects![
                service("svc").port("http", 80, 8080),
                slice("svc").port_name("http").endpoint("10.0.0.1", 8080)
            ],
            vec!["10.0.0.1:8080"],
        ),
        (
            "port by name",
            "http".into(),
            objects![
                service("svc").port("metrics", 9090, 9090).port("http", 80, 8080),
                slice("svc").port_name("http").endpoint("10.0.0.1", 8080),
                slice("svc")
                    .named("svc-metrics")
                    .port_name("metrics")
                    .endpoint("10.0.0.1", 9090),
            ],
            vec!["10.0.0.1:8080"],
        ),
        (
            "unnamed service port matches the unnamed slice port",
            80.into(),
            objects![
                service("svc").port("", 80, 3000),
                slice("svc").endpoint("10.0.0.1", 3000)
            ],
            vec!["10.0.0.1:3000"],
        ),
        (
            "the slice port number is used, not the Service's targetPort",
            80.into(),
            objects![
                service("svc").port("", 80, 1234),
                slice("svc").endpoint("10.0.0.1", 3000)
            ],
            vec!["10.0.0.1:3000"],
        ),
        (
            "endpoints of every slice of the Service are merged",
            80.into(),
            objects![
                service("svc").port("", 80, 80),
                slice("svc").endpoint("10.0.0.2", 80),
                slice("svc").named("svc-2").endpoint("10.0.0.1", 80),
                slice("svc")
                    .named("svc-v6")
                    .address_type("IPv6")
                    .endpoint("fd00::1", 80),
            ],
            vec!["10.0.0.1:80", "10.0.0.2:80", "[fd00::1]:80"],
        ),
        (
            "not-ready endpoints are skipped and missing conditions count as ready",
            80.into(),
            objects![
                service("svc").port("", 80, 80),
                slice("svc")
                    .endpoint("10.0.0.1", 80)
                    .not_ready("10.0.0.2", 80)
                    .endpoint_without_conditions("10.0.0.3", 80),
            ],
            vec!["10.0.0.1:80", "10.0.0.3:80"],
        ),
        (
            "FQDN slices, slices of other Services and other namespaces are ignored",
            80.into(),
            objects![
                service("svc").port("", 80, 80),
                slice("svc").endpoint("10.0.0.1", 80),
                slice("svc")
                    .named("svc-fqdn")
                    .address_type("FQDN")
                    .endpoint("pod.example", 80),
                slice("other").endpoint("10.0.0.9", 80),
                slice("svc").ns("elsewhere").endpoint("10.0.0.8", 80),
            ],
            vec!["10.0.0.1:80"],
        ),
    ];
    for (case, port, objects, want) in cases {
        let snapshot = build(one_route(port, objects));
        assert!(
            snapshot.diagnostics.is_empty(),
            "{case}: {:#?}",
            snapshot.diagnostics
        );
        assert_eq!(addrs(backend(&snapshot)), want, "{case}");
    }
}

#[test]
fn unresolvable_backends_still_route_and_answer_503_with_a_diagnostic() {
    let cases: Vec<(&str, Port, Vec<Object>, &str, &str)> = vec![
        (
            "no such Service",
            80.into(),
            objects![],
            "ServiceNotFound",
            "Service default/svc not found",
        ),
        (
            "a Service in another namespace does not count",
            80.into(),
            objects![service("svc").ns("other").port("", 80, 80)],
            "ServiceNotFound",
            "Service default/svc not found",
        ),
        (
            "no port with that number",
            81.into(),
            objects![service("svc").port("http", 80, 80)],
            "ServicePortNotFound",
            "has no port 81",
        ),
        (
            "no port with that name",
            "grpc".into(),
            objects![service("svc").port("http", 80, 80)],
            "ServicePortNotFound",
            "has no port named \"grpc\"",
        ),
        (
            "no EndpointSlices",
            80.into(),
            objects![service("svc").port("", 80, 80)],
            "NoEndpoints",
            "no EndpointSlices",
        ),
        (
            "only not-ready endpoints",
            80.into(),
            objects![
                service("svc").port("", 80, 80),
                slice("svc").not_ready("10.0.0.1", 80)
            ],
            "NoEndpoints",
            "no ready endpoints",
        ),
        (
            "the slice has no port of the Service port's name",
            80.into(),
            objects![
                service("svc").port("http", 80, 80),
                slice("svc").endpoint("10.0.0.1", 80)
            ],
            "NoEndpoints",
            "no ready endpoints",
        ),
    ];
    for (case, port, objects, reason, message) in cases {
        let snapshot = build(one_route(port, objects));
        let b = backend(&snapshot);
        assert!(b.endpoints.is_empty(), "{case}");
        assert!(
            b.unavailable.as_deref().is_some_and(|why| why.contains(message)),
            "{case}: {:?}",
            b.unavailable
        );
        let d = the_diagnostic(&snapshot, reason);
        assert_eq!(d.object, "Ingress default/web", "{case}");
        assert!(
            d.message.contains(message) && d.message.contains("503"),
            "{case}: {}",
            d.message
        );
        assert_eq!(
            snapshot.diagnostics.len(),
            1,
            "{case}: {:#?}",
            snapshot.diagnostics
        );
    }
}

#[test]
fn resource_backends_are_unsupported_and_only_their_path_is_skipped() {
    let snapshot = build(objects![
        ingress("web")
            .host("a.example")
            .resource("/static", "StorageBucket", "assets")
            .prefix("/", "svc", 80),
        service("svc").port("", 80, 80),
        slice("svc").endpoint("10.0.0.1", 80),
    ]);
    assert_eq!(
        routed(&snapshot, "a.example", "/static/x").as_deref(),
        Some("svc"),
        "falls to Prefix /"
    );
    assert_eq!(snapshot.routes.len(), 1);
    let d = the_diagnostic(&snapshot, "ResourceBackendUnsupported");
    assert!(
        d.message.contains("StorageBucket.storage.example assets"),
        "{}",
        d.message
    );
    assert!(d.message.contains("a.example Prefix /static"), "{}", d.message);
}

fn nodes() -> Vec<Object> {
    objects![
        node("ready")
            .internal_ip("192.168.1.1")
            .external_ip("203.0.113.1"),
        node("not-ready").internal_ip("192.168.1.2").ready("False"),
        node("unknown").internal_ip("192.168.1.3").ready("Unknown"),
        node("external-only")
            .hostname("external-only")
            .external_ip("203.0.113.4"),
        node("no-address").hostname("no-address"),
    ]
}

#[test]
fn node_port_mode_uses_the_node_port_on_every_usable_node() {
    let mut objects = nodes();
    objects.extend(objects![
        service("svc").node_port("http", 80, 30080),
        slice("svc").port_name("http").endpoint("10.0.0.1", 80)
    ]);
    let by_flag = build_with(one_route(80, objects.clone()), &node_port_opts());
    let want = ["192.168.1.1:30080", "192.168.1.3:30080", "203.0.113.4:30080"];
    assert_eq!(
        addrs(backend(&by_flag)),
        want,
        "NotReady skipped, ExternalIP when no InternalIP"
    );
    assert!(by_flag.diagnostics.is_empty(), "{:#?}", by_flag.diagnostics);

    let mut annotated = objects.clone();
    annotated.push(
        ingress("np")
            .annotation(ANNOTATION_BACKEND_MODE, "node-port")
            .host("b.example")
            .prefix("/", "svc", 80)
            .into(),
    );
    let by_annotation = build(one_route(80, annotated));
    assert_eq!(
        addrs(backend(&by_annotation)),
        ["10.0.0.1:80"],
        "no annotation: endpoints mode"
    );
    let np = &by_annotation.routes.lookup("b.example", "/").unwrap().backend;
    assert_eq!(addrs(np), want, "the annotation selects node-port mode");

    let mut back = objects;
    back.push(
        ingress("ep")
            .annotation(ANNOTATION_BACKEND_MODE, "endpoints")
            .host("b.example")
            .prefix("/", "svc", 80)
            .into(),
    );
    let overridden = build_with(one_route(80, back), &node_port_opts());
    let ep = &overridden.routes.lookup("b.example", "/").unwrap().backend;
    assert_eq!(
        addrs(ep),
        ["10.0.0.1:80"],
        "`endpoints` overrides the node-port flag"
    );
}

#[test]
fn node_port_mode_reports_missing_node_ports_and_nodes() {
    let cases: Vec<(&str, Vec<Object>, &str)> = vec![
        (
            "a port without nodePort",
            objects![
                node("n").internal_ip("192.168.1.1"),
                service("svc").port("", 80, 80)
            ],
            "NodePortNotFound",
        ),
        (
            "no nodes",
            objects![service("svc").node_port("", 80, 30080)],
            "NoEndpoints",
        ),
        (
            "only not-ready nodes",
            objects![
                node("n").internal_ip("192.168.1.1").ready("False"),
                service("svc").node_port("", 80, 30080)
            ],
            "NoEndpoints",
        ),
    ];
    for (case, objects, reason) in cases {
        let snapshot = build_with(one_route(80, objects), &node_port_opts());
        assert!(backend(&snapshot).endpoints.is_empty(), "{case}");
        the_diagnostic(&snapshot, reason);
    }
}

#[test]
fn an_unknown_backend_mode_annotation_is_reported_and_the_default_mode_applies() {
    let snapshot = build(objects![
        ingress("web")
            .annotation(ANNOTATION_BACKEND_MODE, "nodeport")
            .host("a.example")
            .prefix("/", "svc", 80),
        service("svc").node_port("", 80, 30080),
        slice("svc").endpoint("10.0.0.1", 80),
        node("n").internal_ip("192.168.1.1"),
    ]);
    assert_eq!(addrs(backend(&snapshot)), ["10.0.0.1:80"]);
    let d = the_diagnostic(&snapshot, "InvalidAnnotation");
    assert!(d.message.contains("\"nodeport\""), "{}", d.message);
}

#[test]
fn backend_ids_name_namespace_service_and_port_as_written() {
    let snapshot = build(objects![
        ingress("web")
            .ns("shop")
            .host("a.example")
            .prefix("/", "svc", "http")
            .prefix("/n", "svc", 80),
        service("svc").ns("shop").port("http", 80, 8080),
        slice("svc")
            .ns("shop")
            .port_name("http")
            .endpoint("10.0.0.1", 8080),
    ]);
    assert_eq!(backend(&snapshot).id.to_string(), "shop/svc:http");
    let by_number = &snapshot.routes.lookup("a.example", "/n").unwrap().backend;
    assert_eq!(by_number.id.to_string(), "shop/svc:80");
    assert_eq!(
        by_number.endpoints[0].addr,
        "10.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
}

/// The watcher slims Services and EndpointSlices to the ports, cluster IP, addresses and
/// readiness; everything else they hold (selectors, pod references, nodes, zones, hints, other
/// conditions) translation must not read. Whole and slimmed objects give the same snapshot in
/// each backend mode, and the slimmed store still tells the not-ready endpoint from the others.
#[test]
fn slimmed_services_and_slices_translate_as_whole_ones() {
    use crate::sources::kube::slim;
    let objects = || {
        let mut objects = yaml(
            r#"
apiVersion: v1
kind: Service
metadata:
  name: svc
  namespace: default
  labels: {app: web}
spec:
  type: NodePort
  selector: {app: web}
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10]
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  sessionAffinity: None
  ports:
    - {name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP, appProtocol: http}
    - {name: admin, port: 9000, targetPort: admin, nodePort: 30900, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-abc12
  namespace: default
  labels: {kubernetes.io/service-name: svc, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}
addressType: IPv4
endpoints:
  - addresses: [10.0.0.1]
    conditions: {ready: true, serving: true, terminating: false}
    nodeName: node-a
    zone: zone-a
    hints: {forZones: [{name: zone-a}]}
    targetRef: {kind: Pod, name: web-1, namespace: default, uid: 0b8f0c5e-1}
  - addresses: [10.0.0.2]
    conditions: {ready: false, serving: true, terminating: true}
    nodeName: node-b
    targetRef: {kind: Pod, name: web-2, namespace: default, uid: 0b8f0c5e-2}
  - addresses: [10.0.0.3]
    nodeName: node-b
ports:
  - {name: http, port: 8080, protocol: TCP, appProtocol: http}
  - {name: admin, port: 9090, protocol: TCP}
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
status:
  addresses: [{type: InternalIP, address: 192.168.0.1}]
  conditions: [{type: Ready, status: "True"}]
"#,
        );
        objects.extend(objects![
            ingress_class(CLASS),
            ingress("pods").host("pods.example").prefix("/", "svc", "http"),
            ingress("admin").host("admin.example").prefix("/", "svc", 9000),
            ingress("nodes")
                .host("nodes.example")
                .annotation(ANNOTATION_BACKEND_MODE, "node-port")
                .prefix("/", "svc", 80),
            ingress("upstream")
                .host("upstream.example")
                .annotation("nginx.ingress.kubernetes.io/service-upstream", "true")
                .prefix("/", "svc", 80),
        ]);
        objects
    };
    let whole = build(objects());
    let slimmed = build(objects().into_iter().map(slim).collect());
    assert!(whole.snapshot == slimmed.snapshot, "slimming changed the routes");
    assert_eq!(whole.diagnostics, slimmed.diagnostics);
    let at = |host: &str| addrs(&slimmed.routes.lookup(host, "/").expect("routed").backend);
    assert_eq!(at("pods.example"), ["10.0.0.1:8080", "10.0.0.3:8080"]);
    assert_eq!(at("admin.example"), ["10.0.0.1:9090", "10.0.0.3:9090"]);
    assert_eq!(at("nodes.example"), ["192.168.0.1:30080"]);
    assert_eq!(at("upstream.example"), ["10.96.0.10:80"]);
}
