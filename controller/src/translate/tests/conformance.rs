//! The Kubernetes Ingress conformance scenarios (shared/reference/ingress-conformance.md), as
//! manifests in → snapshot lookups out. What the suite checks over HTTP that translation decides
//! (which Service answers, or 404; which certificate; the redirect) is checked here.

use std::{collections::BTreeSet, net::SocketAddr};

use crate::translate::Translation;

use super::fixtures::*;
use crate::translate::{served_ingresses, translate};

const DEFAULT_BACKEND: &str = include_str!("../../../tests/fixtures/conformance/default_backend.yaml");
const HOST_RULES: &str = include_str!("../../../tests/fixtures/conformance/host_rules.yaml");
const INGRESS_CLASS: &str = include_str!("../../../tests/fixtures/conformance/ingress_class.yaml");
const LOAD_BALANCING: &str = include_str!("../../../tests/fixtures/conformance/load_balancing.yaml");
const PATH_RULES: &str = include_str!("../../../tests/fixtures/conformance/path_rules.yaml");

fn assert_routes(snapshot: &Translation, table: &[(&str, &str, Option<&str>)]) {
    for (host, path, want) in table {
        assert_eq!(routed(snapshot, host, path).as_deref(), *want, "{host} {path}");
    }
}

#[test]
fn default_backend_serves_every_host_and_path() {
    let snapshot = build(yaml(DEFAULT_BACKEND));
    assert!(snapshot.diagnostics.is_empty(), "{:#?}", snapshot.diagnostics);
    assert_routes(
        &snapshot,
        &[
            ("my-host", "/", Some("echo-service")),
            ("my-host", "/sub-path", Some("echo-service")),
            ("some-host", "/", Some("echo-service")),
            ("", "/resource", Some("echo-service")),
            ("some-host", "/resource", Some("echo-service")),
            ("my-host", "/resource", Some("echo-service")),
        ],
    );
    let route = snapshot.routes.default_route().expect("default route");
    assert_eq!(route.backend.id.to_string(), "conformance/echo-service:8080");
    let addrs: Vec<SocketAddr> = route.backend.endpoints.iter().map(|e| e.addr).collect();
    assert_eq!(
        addrs,
        ["10.244.0.10:3000".parse::<SocketAddr>().unwrap()],
        "pod IP and targetPort"
    );
    assert!(route.policies.https_redirect.is_none());
}

#[test]
fn host_rules_route_exact_and_one_label_wildcards_and_resolve_a_port_by_name() {
    let (tls, cert) = tls_secret("conformance-tls", &["foo.bar.com"]);
    let mut objects = yaml(HOST_RULES);
    objects.push(tls.ns("conformance").into());
    let snapshot = build(objects);
    assert!(snapshot.diagnostics.is_empty(), "{:#?}", snapshot.diagnostics);

    assert_routes(
        &snapshot,
        &[
            ("foo.bar.com", "/", Some("foo-bar-com")),
            ("subdomain.bar.com", "/", None),
            ("bar.foo.com", "/", Some("wildcard-foo-com")),
            ("baz.bar.foo.com", "/", None),
            ("foo.com", "/", None),
        ],
    );

    let foo_bar = snapshot.routes.lookup("foo.bar.com", "/").unwrap();
    assert_eq!(
        foo_bar.backend.id.port.as_ref(),
        "http",
        "BackendId keeps the port as written"
    );
    assert_eq!(
        foo_bar.backend.endpoints[0].addr,
        "10.244.2.1:3000".parse::<SocketAddr>().unwrap()
    );
    assert!(
        foo_bar.policies.https_redirect.is_some(),
        "foo.bar.com has TLS: http is redirected to https"
    );
    assert!(snapshot
        .routes
        .lookup("bar.foo.com", "/")
        .unwrap()
        .policies
        .https_redirect
        .is_none());

    let served = snapshot
        .certs
        .lookup("foo.bar.com")
        .expect("certificate for foo.bar.com");
    assert_eq!(leaf(served), cert.der);
    assert!(
        snapshot.certs.lookup("subdomain.bar.com").is_none(),
        "others get the default certificate"
    );
    assert!(snapshot.certs.default_cert().is_some());
}

#[test]
fn an_invalid_ingress_class_never_routes_and_is_not_served() {
    let objects = yaml(INGRESS_CLASS);
    let store = store(objects.clone());
    assert!(served_ingresses(&store, &opts()).is_empty());
    let snapshot = build(objects);
    assert!(snapshot.routes.is_empty());
    assert!(snapshot.routes.default_route().is_none());
    assert_eq!(routed(&snapshot, "any-host", "/"), None);
    assert!(
        snapshot.diagnostics.is_empty(),
        "other classes are ignored silently"
    );
}

#[test]
fn load_balancing_spreads_requests_over_all_ten_pods() {
    let snapshot = build(yaml(LOAD_BALANCING));
    let backend = &snapshot.routes.default_route().expect("default route").backend;
    assert_eq!(backend.endpoints.len(), 10);
    // The data plane's balancer, with a worker state of its own.
    let mut worker = gantry_proxy::state::WorkerState::default();
    let answered: BTreeSet<SocketAddr> = (0..100)
        .map(|_| {
            let i = worker.pick(backend, gantry_proxy::Balancer::RoundRobin).unwrap();
            backend.endpoints[i].addr
        })
        .collect();
    assert_eq!(answered.len(), 10, "exactly 10 distinct pods answer");
}

#[test]
fn path_rules_follow_the_conformance_table() {
    let snapshot = build(yaml(PATH_RULES));
    assert!(snapshot.diagnostics.is_empty(), "{:#?}", snapshot.diagnostics);
    assert_routes(
        &snapshot,
        &[
            ("exact-path-rules", "/foo", Some("foo-exact")),
            ("exact-path-rules", "/foo/", None),
            ("exact-path-rules", "/FOO", None),
            ("exact-path-rules", "/bar", None),
            ("prefix-path-rules", "/foo", Some("foo-prefix")),
            ("prefix-path-rules", "/foo/", Some("foo-prefix")),
            ("prefix-path-rules", "/FOO", None),
            ("prefix-path-rules", "/aaa/bbb", Some("aaa-slash-bbb-prefix")),
            ("prefix-path-rules", "/aaa/bbb/ccc", Some("aaa-slash-bbb-prefix")),
            ("prefix-path-rules", "/aaa/ccc", Some("aaa-prefix")),
            ("prefix-path-rules", "/aaaccc", None),
            ("mixed-path-rules", "/foo", Some("foo-exact")),
            (
                "trailing-slash-path-rules",
                "/aaa/bbb",
                Some("aaa-slash-bbb-slash-prefix"),
            ),
            (
                "trailing-slash-path-rules",
                "/aaa/bbb/",
                Some("aaa-slash-bbb-slash-prefix"),
            ),
            ("trailing-slash-path-rules", "/foo", None),
            ("trailing-slash-path-rules", "/foo/", Some("foo-slash-exact")),
        ],
    );
}

#[test]
fn all_scenarios_together_route_as_each_alone() {
    // The suite runs the features one after another against one controller; leftovers of one
    // scenario must not change another's answers.
    let (tls, _) = tls_secret("conformance-tls", &["foo.bar.com"]);
    let mut objects = yaml(PATH_RULES);
    objects.extend(yaml(HOST_RULES));
    objects.extend(yaml(INGRESS_CLASS));
    objects.extend(yaml(DEFAULT_BACKEND));
    objects.push(tls.ns("conformance").into());
    let snapshot = translate(&store(objects), &opts(), &gantry_proxy::Snapshot::default());
    assert_routes(
        &snapshot,
        &[
            ("mixed-path-rules", "/foo", Some("foo-exact")),
            ("bar.foo.com", "/", Some("wildcard-foo-com")),
            ("foo.bar.com", "/", Some("foo-bar-com")),
            // No rule matches: the default backend answers instead of a 404.
            ("exact-path-rules", "/bar", Some("echo-service")),
            ("baz.bar.foo.com", "/", Some("echo-service")),
        ],
    );
}
