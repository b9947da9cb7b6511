//! The Gateway API: GatewayClass, Gateway, HTTPRoute and ReferenceGrant manifests in → routes and
//! the status Gantry writes out, with every condition reason Gantry can write.

use gantry_proxy::{HostMatch, PathMatch, Route, SourceKind};

use super::fixtures::*;
use crate::translate::{
    gateway::{Condition, GatewayApiStatus, ListenerStatus, ParentStatus},
    Translation,
};

const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gantry}
spec: {controllerName: gantry.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: someone-else}
spec: {controllerName: example.com/other}
---
apiVersion: v1
kind: Namespace
metadata: {name: infra, labels: {team: infra}}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {team: apps}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: infra}
spec: {ports: [{name: http, port: 8080, targetPort: 3000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: infra, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 3000}]
endpoints: [{addresses: [10.0.0.1], conditions: {ready: true}}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: apps}
spec: {ports: [{name: http, port: 80, targetPort: 8000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: apps, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: 8000}]
endpoints: [{addresses: [10.0.0.2], conditions: {ready: true}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  gatewayClassName: gantry
  listeners:
  - {name: http, protocol: HTTP, port: 80}
  - name: from-apps
    protocol: HTTP
    port: 80
    hostname: "*.apps.example"
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: apps}}}}
"#;

fn with(extra: &str) -> Translation {
    build(yaml(&format!("{BASE}\n---\n{extra}")))
}

/// Every route of the table: (host, path, conditions described, backend service, source kind).
fn routes(t: &Translation) -> Vec<(HostMatch, PathMatch, Option<String>, String, SourceKind)> {
    t.routes
        .iter()
        .map(|(h, r): (&HostMatch, &std::sync::Arc<Route>)| {
            (
                h.clone(),
                r.path.clone(),
                r.conditions.as_ref().map(|c| format!("{c:?}")),
                r.backend.id.service.to_string(),
                r.source.kind,
            )
        })
        .collect()
}

fn route_of<'t>(t: &'t Translation, host: &HostMatch, path: &PathMatch) -> &'t Route {
    t.routes
        .iter()
        .find(|(h, r)| *h == host && r.path == *path)
        .map(|(_, r)| r.as_ref())
        .unwrap_or_else(|| panic!("no route for {host} {path:?} in {:#?}", routes(t)))
}

fn cond<'s>(conditions: &'s [Condition], type_: &str) -> &'s Condition {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} in {conditions:#?}"))
}

fn parent<'s>(status: &'s GatewayApiStatus, route: &str) -> &'s ParentStatus {
    let r = status
        .routes
        .iter()
        .find(|r| r.key.to_string() == route)
        .unwrap_or_else(|| panic!("no status for {route} in {status:#?}"));
    assert_eq!(r.parents.len(), 1, "{r:#?}");
    &r.parents[0]
}

fn listener<'s>(status: &'s GatewayApiStatus, gateway: &str, name: &str) -> &'s ListenerStatus {
    status
        .gateways
        .iter()
        .find(|g| g.key.to_string() == gateway)
        .and_then(|g| g.listeners.iter().find(|l| l.name == name))
        .unwrap_or_else(|| panic!("no listener {name} of {gateway} in {status:#?}"))
}

fn exact(h: &str) -> HostMatch {
    HostMatch::Exact(h.into())
}

fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.into())
}

#[test]
fn our_classes_are_accepted_and_others_left_alone() {
    let t = with(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: broken-params}
spec:
  controllerName: gantry.dev/gateway-controller
  parametersRef: {group: gantry.dev, kind: ProxyConfig, name: missing}
"#,
    );
    let names: Vec<_> = t.gateway.classes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["broken-params", "gantry"],
        "someone-else's class gets no status"
    );
    let gantry = &t.gateway.classes[1];
    assert!(cond(&gantry.conditions, "Accepted").status);
    let broken = cond(&t.gateway.classes[0].conditions, "Accepted");
    assert_eq!((broken.status, broken.reason), (false, "InvalidParameters"));
}

#[test]
fn an_http_route_becomes_routes_with_its_matches_and_status() {
    let t = with(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: infra, generation: 3}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [web.example]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /app}
      headers: [{name: version, value: two}]
      queryParams: [{name: animal, type: RegularExpression, value: "wh.*"}]
      method: POST
    - path: {type: Exact, value: /exact}
    backendRefs: [{name: web, port: 8080}]
"#,
    );
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    let r = route_of(&t, &exact("web.example"), &prefix("/app"));
    let c = r.conditions.as_ref().expect("conditions");
    assert_eq!(c.method, Some(http::Method::POST));
    assert_eq!(c.headers.len(), 1);
    assert_eq!(c.query.len(), 1);
    assert_eq!(c.tls, Some(false), "attached to an HTTP listener only");
    assert_eq!(r.source.kind, SourceKind::HttpRoute);
    assert_eq!(r.backend.id.to_string(), "infra/web:8080");
    assert_eq!(r.backend.endpoints[0].addr.to_string(), "10.0.0.1:3000");
    let e = route_of(&t, &exact("web.example"), &PathMatch::Exact("/exact".into()));
    assert!(e.conditions.as_ref().is_some_and(|c| c.headers.is_empty()));

    let p = parent(&t.gateway, "infra/web");
    assert_eq!(p.section_name.as_deref(), Some("http"));
    let accepted = cond(&p.conditions, "Accepted");
    assert_eq!((accepted.status, accepted.reason), (true, "Accepted"));
    assert_eq!(cond(&p.conditions, "ResolvedRefs").reason, "ResolvedRefs");
    assert_eq!(t.gateway.routes[0].generation, 3);
    assert_eq!(listener(&t.gateway, "infra/gw", "http").attached_routes, 1);
    assert_eq!(listener(&t.gateway, "infra/gw", "from-apps").attached_routes, 0);
}

#[test]
fn listeners_admit_routes_by_namespace_and_hostname() {
    let t = with(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [api.apps.example, api.elsewhere.example]
  rules: [{backendRefs: [{name: api, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other-host, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: from-apps}]
  hostnames: [api.other.example]
  rules: [{backendRefs: [{name: api, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wrong-section, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: nope}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: not-allowed, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: http}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
"#,
    );
    // `http` allows only its own namespace (Same, the default); `from-apps` the apps namespace,
    // for its hostname only.
    let hosts: Vec<_> = routes(&t).into_iter().map(|r| r.0).collect();
    assert_eq!(hosts, [exact("api.apps.example")]);
    assert_eq!(
        cond(&parent(&t.gateway, "apps/api").conditions, "Accepted").reason,
        "Accepted"
    );
    let reason = |route: &str| cond(&parent(&t.gateway, route).conditions, "Accepted").reason;
    assert_eq!(reason("apps/other-host"), "NoMatchingListenerHostname");
    assert_eq!(reason("apps/wrong-section"), "NoMatchingParent");
    assert_eq!(reason("apps/not-allowed"), "NotAllowedByListeners");
    assert_eq!(listener(&t.gateway, "infra/gw", "from-apps").attached_routes, 1);
}

#[test]
fn listeners_are_judged_with_the_spec_s_reasons() {
    let t = with(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: odd, namespace: infra}
spec:
  gatewayClassName: gantry
  listeners:
  - {name: tcp, protocol: TCP, port: 9000}
  - {name: port, protocol: HTTP, port: 8080}
  - {name: kinds, protocol: HTTP, port: 80, hostname: kinds.example, allowedRoutes: {kinds: [{kind: TCPRoute}]}}
  - {name: no-cert, protocol: HTTPS, port: 443, hostname: a.example}
  - name: missing-cert
    protocol: HTTPS
    port: 443
    hostname: b.example
    tls: {certificateRefs: [{name: nothing-here}]}
  - name: cross-ns-cert
    protocol: HTTPS
    port: 443
    hostname: c.example
    tls: {certificateRefs: [{name: cert, namespace: apps}]}
  - {name: dup-1, protocol: HTTP, port: 80, hostname: dup.example}
  - {name: dup-2, protocol: HTTP, port: 80, hostname: dup.example}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: not-ours, namespace: infra}
spec:
  gatewayClassName: someone-else
  listeners: [{name: http, protocol: HTTP, port: 80}]
"#,
    );
    let reasons = |name: &str| {
        let l = listener(&t.gateway, "infra/odd", name);
        l.conditions
            .iter()
            .filter(|c| {
                if c.type_ == "Conflicted" {
                    c.status
                } else {
                    !c.status
                }
            })
            .map(|c| (c.type_, c.reason))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        reasons("tcp"),
        [("Accepted", "UnsupportedProtocol"), ("Programmed", "Invalid")]
    );
    assert_eq!(
        reasons("port"),
        [("Accepted", "PortUnavailable"), ("Programmed", "Invalid")]
    );
    assert_eq!(
        reasons("kinds"),
        [("ResolvedRefs", "InvalidRouteKinds"), ("Programmed", "Invalid")]
    );
    assert!(listener(&t.gateway, "infra/odd", "kinds")
        .supported_kinds
        .is_empty());
    assert_eq!(
        reasons("no-cert"),
        [
            ("ResolvedRefs", "InvalidCertificateRef"),
            ("Programmed", "Invalid")
        ]
    );
    assert_eq!(
        reasons("missing-cert"),
        [
            ("ResolvedRefs", "InvalidCertificateRef"),
            ("Programmed", "Invalid")
        ]
    );
    assert_eq!(
        reasons("cross-ns-cert"),
        [("ResolvedRefs", "RefNotPermitted"), ("Programmed", "Invalid")]
    );
    assert_eq!(
        reasons("dup-1"),
        [("Conflicted", "HostnameConflict"), ("Programmed", "Invalid")]
    );
    let gw = t.gateway.gateways.iter().find(|g| g.key.name == "odd").unwrap();
    assert_eq!(cond(&gw.conditions, "Accepted").reason, "ListenersNotValid");
    assert!(!cond(&gw.conditions, "Accepted").status, "no listener is valid");
    assert!(t.gateway.gateways.iter().all(|g| g.key.name != "not-ours"));
}

#[test]
fn a_certificate_in_another_namespace_needs_a_reference_grant() {
    let cert = test_cert(&["secure.example"]);
    let gateway = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tls, namespace: infra}
spec:
  gatewayClassName: gantry
  listeners:
  - name: https
    protocol: HTTPS
    port: 443
    hostname: secure.example
    tls: {certificateRefs: [{name: cert, namespace: apps}]}
"#;
    let grant = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: gateways-may-read-certs, namespace: apps}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: "", kind: Secret}]
"#;
    for (extra, granted) in [
        (gateway.to_string(), false),
        (format!("{gateway}\n---\n{grant}"), true),
    ] {
        let mut objects = yaml(&format!("{BASE}\n---\n{extra}"));
        objects.push(secret("cert").cert(&cert).ns("apps").into());
        let t = build(objects);
        let l = listener(&t.gateway, "infra/tls", "https");
        let resolved = cond(&l.conditions, "ResolvedRefs");
        assert_eq!(resolved.status, granted, "{l:#?}");
        if granted {
            assert!(t.certs.has_host("secure.example"));
            assert!(cond(&l.conditions, "Programmed").status);
        } else {
            assert_eq!(resolved.reason, "RefNotPermitted");
            assert!(!t.certs.has_host("secure.example"));
        }
    }
}

#[test]
fn backend_references_are_resolved_or_answer_500_with_the_spec_s_reason() {
    let t = with(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: refs, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /missing}}]
    backendRefs: [{name: nothing, port: 80}]
  - matches: [{path: {value: /kind}}]
    backendRefs: [{group: example.com, kind: Bucket, name: b}]
  - matches: [{path: {value: /cross}}]
    backendRefs: [{name: api, namespace: apps, port: 80}]
  - matches: [{path: {value: /none}}]
  - matches: [{path: {value: /split}}]
    backendRefs: [{name: web, port: 8080, weight: 3}, {name: nothing, port: 80, weight: 1}]
"#,
    );
    let any = HostMatch::Any;
    for path in ["/missing", "/kind", "/cross", "/none"] {
        assert!(route_of(&t, &any, &prefix(path)).backend.invalid, "{path}");
    }
    let split = route_of(&t, &any, &prefix("/split"));
    let weights: Vec<_> = split
        .policies
        .split
        .as_ref()
        .expect("split")
        .backends
        .iter()
        .map(|(w, b)| (*w, b.id.service.to_string(), b.invalid))
        .collect();
    assert_eq!(weights, [(3, "web".into(), false), (1, "nothing".into(), true)]);
    let resolved = cond(&parent(&t.gateway, "infra/refs").conditions, "ResolvedRefs").clone();
    assert_eq!(
        (resolved.status, resolved.reason),
        (false, "BackendNotFound"),
        "the first problem is reported"
    );
    assert!(cond(&parent(&t.gateway, "infra/refs").conditions, "Accepted").status);
}

#[test]
fn a_reference_grant_opens_a_service_in_another_namespace() {
    let t = with(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cross, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: api, namespace: apps, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: infra-routes, namespace: apps}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]
  to: [{group: "", kind: Service, name: api}]
"#,
    );
    let r = route_of(&t, &HostMatch::Any, &prefix("/"));
    assert!(!r.backend.invalid);
    assert_eq!(r.backend.id.to_string(), "apps/api:80");
    assert!(cond(&parent(&t.gateway, "infra/cross").conditions, "ResolvedRefs").status);
}

#[test]
fn filters_become_policies() {
    let t = with(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filters, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-Set, value: "1"}], add: [{name: x-add, value: a}], remove: [x-gone]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-resp, value: r}]}
    backendRefs: [{name: web, port: 8080}]
  - matches: [{path: {value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: new.example, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
  - matches: [{path: {value: /rewrite/}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: internal.example, path: {type: ReplaceFullPath, replaceFullPath: /full}}
    backendRefs: [{name: web, port: 8080}]
    timeouts: {request: 10s, backendRequest: 500ms}
  - matches: [{path: {value: /mirror}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: web, port: 8080}, percent: 25}
    backendRefs: [{name: web, port: 8080}]
  - matches: [{path: {value: /ext}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: example.com, kind: Magic, name: m}
    backendRefs: [{name: web, port: 8080}]
"#,
    );
    use gantry_proxy::policy::{PathModifier, RedirectScheme};
    let any = HostMatch::Any;
    let h = route_of(&t, &any, &prefix("/headers"));
    let req = h.policies.upstream.headers.as_ref().expect("request headers");
    assert_eq!(req.set[0].0.as_str(), "x-set", "header names are lowercase");
    assert_eq!(req.remove[0].as_str(), "x-gone");
    assert!(h.policies.response_header_modifier.is_some());

    let r = route_of(&t, &any, &prefix("/old"));
    let redirect = r.policies.request_redirect.as_ref().expect("redirect");
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.scheme, Some(RedirectScheme::Https));
    assert_eq!(redirect.hostname.as_deref(), Some("new.example"));
    assert_eq!(
        redirect.path,
        Some(PathModifier::Prefix {
            matched: "/old".into(),
            replacement: "/new".into()
        })
    );

    let w = route_of(&t, &any, &prefix("/rewrite/"));
    let rewrite = w.policies.upstream.url_rewrite.as_ref().expect("rewrite");
    assert_eq!(rewrite.hostname.as_ref().unwrap(), "internal.example");
    assert_eq!(rewrite.path, Some(PathModifier::Full("/full".into())));
    assert_eq!(
        w.policies.timeouts.request,
        Some(std::time::Duration::from_secs(10))
    );
    assert_eq!(
        w.policies.timeouts.backend_request,
        Some(std::time::Duration::from_millis(500))
    );

    let m = route_of(&t, &any, &prefix("/mirror"));
    let mirrors = m.policies.mirrors.as_ref().expect("mirrors");
    assert_eq!(mirrors[0].per_million, 250_000);

    // A filter Gantry cannot honour: the rule answers 500 rather than skip it.
    let e = route_of(&t, &any, &prefix("/ext"));
    assert!(e.backend.invalid);
    assert_eq!(*e.policies, gantry_proxy::Policies::default());
    assert!(t
        .diagnostics
        .iter()
        .any(|d| d.reason == "UnsupportedValue" && d.message.contains("ExtensionRef")));
}

#[test]
fn an_ingress_keeps_a_host_and_path_an_http_route_also_claims() {
    let ingress_yaml = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: legacy, namespace: apps}
spec:
  ingressClassName: gantry
  rules:
  - host: shared.example
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: gantry}
spec: {controller: gantry.dev/ingress-controller}
"#;
    let t = with(&format!(
        r#"{ingress_yaml}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: new, namespace: infra, creationTimestamp: "2020-01-01T00:00:00Z"}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [shared.example]
  rules:
  - backendRefs: [{{name: web, port: 8080}}]
  - matches: [{{path: {{value: /}}, headers: [{{name: x-canary, value: "yes"}}]}}]
    backendRefs: [{{name: web, port: 8080}}]
"#
    ));
    let all = routes(&t);
    let on_root: Vec<_> = all
        .iter()
        .filter(|r| r.0 == exact("shared.example") && r.1 == prefix("/"))
        .map(|r| (r.3.as_str(), r.4))
        .collect();
    // The HTTPRoute is older, but the Ingress keeps the plain claim (Ingress first); the header
    // match is more specific and is served.
    assert!(on_root.contains(&("api", SourceKind::Ingress)), "{all:#?}");
    assert!(on_root.contains(&("web", SourceKind::HttpRoute)), "{all:#?}");
    assert_eq!(on_root.len(), 2, "{all:#?}");
    let conflict = t
        .diagnostics
        .iter()
        .find(|d| d.reason == "RouteConflict")
        .expect("the HTTPRoute is told");
    assert_eq!(conflict.object, "HTTPRoute infra/new");
    assert!(
        conflict.message.contains("Ingress apps/legacy"),
        "{}",
        conflict.message
    );
}

#[test]
fn routes_without_our_gateway_are_left_alone() {
    let t = with(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: theirs, namespace: infra}
spec:
  parentRefs: [{name: elsewhere}]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
"#,
    );
    assert!(t.gateway.routes.is_empty());
    assert!(t.routes.is_empty());
}

#[test]
fn gateway_api_off_reads_nothing() {
    let mut opts = opts();
    opts.gateway = None;
    let t = build_with(
        yaml(&format!(
            "{BASE}\n---\n{}",
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
"#
        )),
        &opts,
    );
    assert_eq!(t.gateway, GatewayApiStatus::default());
    assert!(t.routes.is_empty());
}

#[test]
fn a_grpc_route_routes_services_and_methods_over_h2c() {
    let t = with(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.example]
  rules:
  - matches: [{method: {service: echo.Echo, method: Say}, headers: [{name: x-tenant, value: a}]}]
    backendRefs: [{name: web, port: 8080}]
  - matches: [{method: {service: echo.Other}}]
    backendRefs: [{name: web, port: 8080}]
  - matches: [{method: {method: Anything}}]
    backendRefs: [{name: web, port: 8080}]
"#,
    );
    let host = exact("grpc.example");
    let say = route_of(&t, &host, &PathMatch::Exact("/echo.Echo/Say".into()));
    assert_eq!(say.source.kind, SourceKind::GrpcRoute);
    assert_eq!(say.conditions.as_ref().unwrap().headers.len(), 1);
    assert_eq!(
        say.policies.upstream.protocol,
        gantry_proxy::policy::UpstreamProtocol::H2c
    );
    route_of(&t, &host, &prefix("/echo.Other"));
    // A method without service: that method of any service, as a whole-path regex.
    route_of(&t, &host, &PathMatch::FullRegex("/[^/]+/Anything".into()));
    assert_eq!(routes(&t).len(), 3, "{:#?}", routes(&t));
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    let served = |path: &str| t.routes.lookup("grpc.example", path).map(|r| r.path.clone());
    assert_eq!(
        served("/pkg.Any/Anything"),
        Some(PathMatch::FullRegex("/[^/]+/Anything".into()))
    );
    assert_eq!(served("/pkg.Any/AnythingElse"), None);
    let p = parent(&t.gateway, "infra/grpc");
    assert!(cond(&p.conditions, "Accepted").status);
    assert_eq!(t.gateway.routes[0].kind, "GRPCRoute");
}

#[test]
fn regular_expression_matches_are_whole_path_regexes_and_bad_ones_are_reported() {
    let t = with(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [re.example]
  rules:
  - matches:
    - path: {type: RegularExpression, value: "/v[0-9]+/users"}
    - path: {type: RegularExpression, value: "/broken("}
    backendRefs: [{name: web, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.example]
  rules:
  - matches: [{method: {type: RegularExpression, service: "echo\\.v[0-9]+\\.Echo", method: "Say.*"}}]
    backendRefs: [{name: web, port: 8080}]
"#,
    );
    let full = PathMatch::FullRegex("/v[0-9]+/users".into());
    let r = route_of(&t, &exact("re.example"), &full);
    assert_eq!(r.backend.id.to_string(), "infra/web:8080");
    let served = |host: &str, path: &str| t.routes.lookup(host, path).is_some();
    assert!(served("re.example", "/v2/users"));
    assert!(!served("re.example", "/v2/users/1"), "the whole path must match");
    assert!(!served("re.example", "/V2/users"), "case-sensitive");
    // The bad pattern is the route's problem, named as such; its other match is served.
    let bad: Vec<_> = t
        .diagnostics
        .iter()
        .filter(|d| d.object == "HTTPRoute infra/web")
        .collect();
    assert_eq!(bad.len(), 1, "{:#?}", t.diagnostics);
    assert_eq!(bad[0].reason, "UnsupportedValue");
    assert!(bad[0].message.contains("/broken("), "{}", bad[0].message);

    assert!(served("grpc.example", "/echo.v2.Echo/SayHello"));
    assert!(
        !served("grpc.example", "/echoXv2.Echo/SayHello"),
        "escaped dots stay literal"
    );
    assert!(!served("grpc.example", "/echo.v2.Echo/Hello"));
}

#[test]
fn a_backend_tls_policy_makes_the_backend_https_with_its_ca_and_hostname_or_fails_closed() {
    let ca = test_cert(&["web.internal"]);
    let indent = |pem: &str| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: web-tls, namespace: infra}
spec:
  targetRefs: [{group: "", kind: Service, name: web, sectionName: http}]
  validation:
    hostname: web.internal
    caCertificateRefs: [{group: "", kind: ConfigMap, name: web-ca}]
"#;
    let with_ca = format!(
        "{route}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: web-ca, namespace: infra}}\ndata:\n  ca.crt: |\n{}",
        indent(&ca.cert_pem)
    );
    let t = with(&with_ca);
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    let r = route_of(&t, &HostMatch::Any, &prefix("/"));
    assert_eq!(
        r.policies.upstream.protocol,
        gantry_proxy::policy::UpstreamProtocol::Https
    );
    let tls = r.policies.upstream.tls.as_ref().expect("upstream TLS");
    assert!(tls.verify() && tls.sni());
    assert_eq!(tls.ca_len(), 1);
    // Its status: the Gateway that reaches the Service is its ancestor, and it is accepted.
    let [p] = t.gateway.policies.as_slice() else {
        panic!("{:#?}", t.gateway.policies)
    };
    assert_eq!(p.ancestors, vec![crate::store::ObjectKey::new("infra", "gw")]);
    assert!(cond(&p.conditions, "Accepted").status);
    assert!(cond(&p.conditions, "ResolvedRefs").status);
    // A second, newer policy for the same Service port is conflicted, and the older one applies.
    let newer = with_ca.clone()
        + "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: newer, namespace: infra, creationTimestamp: \"2030-01-01T00:00:00Z\"}\nspec:\n  targetRefs: [{group: \"\", kind: Service, name: web, sectionName: http}]\n  validation: {hostname: other.internal, caCertificateRefs: [{group: \"\", kind: ConfigMap, name: web-ca}]}\n";
    let t2 = with(&newer);
    let newer = t2
        .gateway
        .policies
        .iter()
        .find(|p| p.key.name == "newer")
        .unwrap();
    assert_eq!(cond(&newer.conditions, "Accepted").reason, "Conflicted");
    let tls = route_of(&t2, &HostMatch::Any, &prefix("/"))
        .policies
        .upstream
        .tls
        .clone()
        .unwrap();
    assert!(format!("{:?}", tls.name()).contains("web.internal"));
    assert!(
        format!("{:?}", tls.name()).contains("web.internal"),
        "{:?}",
        tls.name()
    );

    // Without its CA the backend is not reached at all: 500, and the route's author is told.
    let t = with(route);
    let r = route_of(&t, &HostMatch::Any, &prefix("/"));
    assert!(r.backend.invalid);
    assert!(r.policies.upstream.tls.is_none());
    let d = t
        .diagnostics
        .iter()
        .find(|d| d.object == "HTTPRoute infra/web")
        .expect("a diagnostic");
    assert!(
        d.message.contains("ConfigMap infra/web-ca not found"),
        "{}",
        d.message
    );
    let p = &t.gateway.policies[0];
    assert_eq!(cond(&p.conditions, "Accepted").reason, "NoValidCACertificate");
    assert_eq!(
        cond(&p.conditions, "ResolvedRefs").reason,
        "InvalidCACertificateRef"
    );
    // A reference that is not a ConfigMap: InvalidKind.
    let t = with(&route.replace("kind: ConfigMap, name: web-ca", "kind: Secret, name: web-ca"));
    assert_eq!(
        cond(&t.gateway.policies[0].conditions, "ResolvedRefs").reason,
        "InvalidKind"
    );
}

#[test]
fn a_gateway_class_s_proxy_config_sets_the_class_wide_settings_when_no_ingress_class_does() {
    let pc = proxy_config("edge", "upstreamResponseTimeout: 7s\n");
    let mut objects = yaml(&format!(
        "{BASE}\n---\n{}",
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: with-params}
spec:
  controllerName: gantry.dev/gateway-controller
  parametersRef: {group: gantry.dev, kind: ProxyConfig, name: edge}
"#
    ));
    objects.push(pc);
    let t = build(objects);
    assert_eq!(
        t.config.upstream_response_timeout,
        std::time::Duration::from_secs(7)
    );
    let class = t
        .gateway
        .classes
        .iter()
        .find(|c| c.name == "with-params")
        .unwrap();
    assert!(cond(&class.conditions, "Accepted").status);
}

/// `--gateway-address-pool`: each Gateway gets an address of its own, oldest first, and its routes
/// live in that address's table only; `spec.addresses` asks for one, with the spec's reasons when
/// it cannot be had.
#[test]
fn with_an_address_pool_each_gateway_has_its_own_address_and_table() {
    let mut opts = opts();
    opts.gateway.as_mut().unwrap().address_pool = Some("10.125.0.0/30".parse().unwrap());
    let gateway = |name: &str, created: &str, addresses: &str| {
        format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: infra, creationTimestamp: "{created}"}}
spec:
  gatewayClassName: gantry
  addresses: {addresses}
  listeners: [{{name: http, protocol: HTTP, port: 80}}]
"#
        )
    };
    let route = |name: &str, gw: &str, path: &str| {
        format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: infra}}
spec:
  parentRefs: [{{name: {gw}}}]
  rules: [{{matches: [{{path: {{type: PathPrefix, value: {path}}}}}], backendRefs: [{{name: web, port: 8080}}]}}]
"#
        )
    };
    let manifests = [
        // BASE's `gw` (2026-01-01) is the oldest: it takes 10.125.0.1.
        gateway("b", "2026-01-02T00:00:00Z", "[]"),
        gateway(
            "asks",
            "2026-01-03T00:00:00Z",
            "[{type: IPAddress, value: 10.125.0.1}]",
        ),
        gateway("outside", "2026-01-04T00:00:00Z", "[{value: 192.0.2.1}]"),
        gateway(
            "hostname",
            "2026-01-05T00:00:00Z",
            "[{type: Hostname, value: lb.example}]",
        ),
        gateway("full", "2026-01-06T00:00:00Z", "[]"),
        route("on-gw", "gw", "/"),
        route("on-b", "b", "/"),
        route("on-outside", "outside", "/outside"),
    ];
    let t = build_with(
        yaml(&format!("{BASE}\n---\n{}", manifests.join("\n---\n"))),
        &opts,
    );
    let status = |name: &str| {
        t.gateway
            .gateways
            .iter()
            .find(|g| g.key.name == name)
            .unwrap_or_else(|| panic!("no status for Gateway {name}"))
    };
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert_eq!(status("gw").addresses, Some(vec![ip("10.125.0.1")]));
    assert_eq!(status("b").addresses, Some(vec![ip("10.125.0.2")]));
    // Asked for an address an older Gateway holds: accepted, not programmed.
    let asks = status("asks");
    assert_eq!(asks.addresses, None);
    assert!(cond(&asks.conditions, "Accepted").status);
    assert_eq!(cond(&asks.conditions, "Programmed").reason, "AddressNotUsable");
    // Outside the pool: the same; its route still attaches (Accepted) but is served nowhere.
    assert_eq!(
        cond(&status("outside").conditions, "Programmed").reason,
        "AddressNotUsable"
    );
    assert!(cond(&parent(&t.gateway, "infra/on-outside").conditions, "Accepted").status);
    assert_eq!(listener(&t.gateway, "infra/outside", "http").attached_routes, 1);
    // A Hostname address is not one Gantry can give.
    let hostname = status("hostname");
    assert!(!cond(&hostname.conditions, "Accepted").status);
    assert_eq!(
        cond(&hostname.conditions, "Accepted").reason,
        "UnsupportedAddress"
    );
    // A /30 has two usable addresses, both taken.
    assert_eq!(
        cond(&status("full").conditions, "Programmed").reason,
        "AddressNotAssigned"
    );

    // Two Gateways' routes on `/` do not conflict: each is in its own address's table, and the
    // shared table (the Ingresses') has neither.
    assert!(t.routes.is_empty());
    let source_at = |addr: &str, path: &str| {
        t.routes_for(ip(addr))
            .lookup("any.example", path)
            .map(|r| r.source.name.to_string())
    };
    assert_eq!(source_at("10.125.0.1", "/").as_deref(), Some("on-gw"));
    assert_eq!(source_at("10.125.0.2", "/").as_deref(), Some("on-b"));
    assert_eq!(source_at("10.125.0.2", "/outside").as_deref(), Some("on-b"));
    assert_eq!(t.address_routes.len(), 2);
    assert!(
        t.diagnostics.iter().all(|d| d.reason != "RouteConflict"),
        "{:?}",
        t.diagnostics
    );

    // The next build keeps each Gateway's address, even when an older Gateway without one in its
    // status appears (the status is where an address is remembered).
    let mut with_status = format!("{BASE}\n---\n{}", manifests.join("\n---\n"));
    with_status = with_status.replacen(
        "metadata: {name: b, namespace: infra, creationTimestamp: \"2026-01-02T00:00:00Z\"}",
        "metadata: {name: b, namespace: infra, creationTimestamp: \"2026-01-02T00:00:00Z\"}\nstatus: {addresses: [{type: IPAddress, value: 10.125.0.2}]}",
        1,
    );
    let older = gateway("older", "2025-01-01T00:00:00Z", "[]");
    let t = build_with(yaml(&format!("{with_status}\n---\n{older}")), &opts);
    let status = |name: &str| {
        t.gateway
            .gateways
            .iter()
            .find(|g| g.key.name == name)
            .unwrap()
            .addresses
            .clone()
    };
    assert_eq!(status("older"), Some(vec![ip("10.125.0.1")]));
    assert_eq!(status("b"), Some(vec![ip("10.125.0.2")]));
    assert_eq!(status("gw"), None, "the pool is full");
}

/// A listener whose certificate is missing is not served, but routes still attach to it and
/// count in `attachedRoutes` (the spec: attachment depends only on allowedRoutes and parentRefs).
#[test]
fn routes_attach_to_a_listener_with_unresolved_references() {
    let t = with(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: broken-tls, namespace: infra}
spec:
  gatewayClassName: gantry
  listeners:
  - name: tls
    protocol: HTTPS
    port: 443
    tls: {certificateRefs: [{name: does-not-exist}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: on-broken, namespace: infra}
spec:
  parentRefs: [{name: broken-tls, sectionName: tls}]
  hostnames: [broken.example]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
"#,
    );
    let l = listener(&t.gateway, "infra/broken-tls", "tls");
    assert_eq!(l.attached_routes, 1);
    assert!(!cond(&l.conditions, "ResolvedRefs").status);
    assert!(!cond(&l.conditions, "Programmed").status);
    assert!(cond(&parent(&t.gateway, "infra/on-broken").conditions, "Accepted").status);
    assert!(t.routes.lookup("broken.example", "/").is_none(), "not served");
}

// --- Gateway API wildcard hostnames: the conformance suite's cases (v1.6.3) ---

/// The conformance suite's namespace and backends, each a Service with one ready endpoint.
fn conformance_backends() -> String {
    let mut out =
        String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: gateway-conformance-infra}\n");
    for (i, name) in [
        "infra-backend-v1",
        "infra-backend-v2",
        "infra-backend-v3",
        "grpc-infra-backend-v1",
        "grpc-infra-backend-v2",
        "grpc-infra-backend-v3",
    ]
    .iter()
    .enumerate()
    {
        out.push_str(&format!(
            r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec: {{ports: [{{name: http, port: 8080, targetPort: 3000}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: gateway-conformance-infra, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: 3000}}]
endpoints: [{{addresses: [10.1.0.{}], conditions: {{ready: true}}}}]
"#,
            i + 1
        ));
    }
    out
}

/// The conformance manifests (`{GATEWAY_CLASS_NAME}` is Gantry's class) with the backends; every
/// diagnostic must be for one of the routes in `refused`.
fn conformance(manifests: &str, refused: &[&str]) -> Translation {
    let t = with(&format!(
        "{}---\n{}",
        conformance_backends(),
        manifests.replace("{GATEWAY_CLASS_NAME}", "gantry")
    ));
    let expected = |object: &str| {
        refused
            .iter()
            .any(|r| object == format!("HTTPRoute gateway-conformance-infra/{r}"))
    };
    assert!(
        t.diagnostics.iter().all(|d| expected(&d.object.to_string())),
        "{:#?}",
        t.diagnostics
    );
    t
}

/// `routed` for several requests: `(host, path, the backend or None for a 404)`.
fn check_requests(t: &Translation, cases: &[(&str, &str, Option<&str>)]) {
    for (host, path, want) in cases {
        assert_eq!(
            routed(t, host, path).as_deref(),
            *want,
            "{host}{path} in {:#?}",
            routes(t)
        );
    }
}

/// `conformance/tests/httproute-listener-hostname-matching.yaml`.
const LISTENER_HOSTNAME_MATCHING: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: httproute-listener-hostname-matching
  namespace: gateway-conformance-infra
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: listener-1
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
    hostname: bar.com
  - name: listener-2
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
    hostname: foo.bar.com
  - name: listener-3
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
    hostname: "*.bar.com"
  - name: listener-4
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
    hostname: "*.foo.com"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: backend-v1
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: httproute-listener-hostname-matching
    namespace: gateway-conformance-infra
    sectionName: listener-1
  rules:
  - backendRefs:
    - name: infra-backend-v1
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: backend-v2
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: httproute-listener-hostname-matching
    namespace: gateway-conformance-infra
    sectionName: listener-2
  rules:
  - backendRefs:
    - name: infra-backend-v2
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: backend-v3
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: httproute-listener-hostname-matching
    namespace: gateway-conformance-infra
    sectionName: listener-3
  - name: httproute-listener-hostname-matching
    namespace: gateway-conformance-infra
    sectionName: listener-4
  rules:
  - backendRefs:
    - name: infra-backend-v3
      port: 8080
"#;

#[test]
fn http_route_listener_hostname_matching_conformance_wildcard_listeners_match_any_depth() {
    let t = conformance(LISTENER_HOSTNAME_MATCHING, &[]);
    let wild = |p: &str| HostMatch::WildcardAnyDepth(p.into());
    let hosts: Vec<_> = routes(&t).into_iter().map(|r| r.0).collect();
    assert_eq!(
        hosts,
        [
            exact("bar.com"),
            exact("foo.bar.com"),
            wild("bar.com"),
            wild("foo.com")
        ]
    );
    for route in ["backend-v1", "backend-v2", "backend-v3"] {
        let p = &t
            .gateway
            .routes
            .iter()
            .find(|r| r.key.to_string() == format!("gateway-conformance-infra/{route}"))
            .unwrap()
            .parents;
        assert!(
            p.iter().all(|p| cond(&p.conditions, "Accepted").status),
            "{route}: {p:#?}"
        );
    }
    check_requests(
        &t,
        &[
            ("bar.com", "/", Some("infra-backend-v1")),
            ("foo.bar.com", "/", Some("infra-backend-v2")),
            ("baz.bar.com", "/", Some("infra-backend-v3")),
            ("boo.bar.com", "/", Some("infra-backend-v3")),
            ("multiple.prefixes.bar.com", "/", Some("infra-backend-v3")),
            ("multiple.prefixes.foo.com", "/", Some("infra-backend-v3")),
            ("foo.com", "/", None),
            ("no.matching.host", "/", None),
        ],
    );
}

#[test]
fn grpc_route_listener_hostname_matching_conformance_wildcard_listeners_match_any_depth() {
    // `conformance/tests/grpcroute-listener-hostname-matching.yaml`: the same Gateway and routes
    // as GRPCRoutes to the gRPC backends.
    let manifests = LISTENER_HOSTNAME_MATCHING
        .replace(
            "httproute-listener-hostname-matching",
            "grpcroute-listener-hostname-matching",
        )
        .replace("kind: HTTPRoute", "kind: GRPCRoute")
        .replace("name: infra-backend", "name: grpc-infra-backend");
    let t = conformance(&manifests, &[]);
    assert!(routes(&t).iter().all(|r| r.4 == SourceKind::GrpcRoute));
    let method = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo";
    check_requests(
        &t,
        &[
            ("bar.com", method, Some("grpc-infra-backend-v1")),
            ("foo.bar.com", method, Some("grpc-infra-backend-v2")),
            ("baz.bar.com", method, Some("grpc-infra-backend-v3")),
            ("boo.bar.com", method, Some("grpc-infra-backend-v3")),
            ("multiple.prefixes.bar.com", method, Some("grpc-infra-backend-v3")),
            ("multiple.prefixes.foo.com", method, Some("grpc-infra-backend-v3")),
            ("foo.com", method, None),
            ("no.matching.host", method, None),
        ],
    );
}

#[test]
fn http_route_hostname_intersection_conformance_intersects_wildcards_at_any_depth() {
    // `conformance/tests/httproute-hostname-intersection.yaml`.
    let t = conformance(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: httproute-hostname-intersection
  namespace: gateway-conformance-infra
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: listener-1
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
    hostname: very.specific.com
  - name: listener-2
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
    hostname: "*.wildcard.io"
  - name: listener-3
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
    hostname: "*.anotherwildcard.io"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: httproute-hostname-intersection-all
  namespace: gateway-conformance-infra
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: listener-1
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: specific-host-matches-listener-specific-host
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: httproute-hostname-intersection
    namespace: gateway-conformance-infra
  hostnames:
  - non.matching.com
  - "*.nonmatchingwildcard.io"
  - very.specific.com  #  matches listener-1's specific host
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /s1
    backendRefs:
    - name: infra-backend-v1
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: specific-host-matches-listener-wildcard-host
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: httproute-hostname-intersection
    namespace: gateway-conformance-infra
  hostnames:
  - non.matching.com
  - wildcard.io
  - foo.wildcard.io  #  matches listener-2's wildcard host
  - bar.wildcard.io  #  matches listener-2's wildcard host
  - foo.bar.wildcard.io  #  matches listener-2's wildcard host
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /s2
    backendRefs:
    - name: infra-backend-v2
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: wildcard-host-matches-listener-specific-host
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: httproute-hostname-intersection
    namespace: gateway-conformance-infra
  hostnames:
  - non.matching.com
  - "*.specific.com"  # matches listener-1's specific host
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /s3
    backendRefs:
    - name: infra-backend-v3
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: wildcard-host-matches-listener-wildcard-host
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: httproute-hostname-intersection
    namespace: gateway-conformance-infra
  hostnames:
  - "*.anotherwildcard.io"  # matches listener-3's wildcard host
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /s4
    backendRefs:
    - name: infra-backend-v1
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: no-intersecting-hosts
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: httproute-hostname-intersection
    namespace: gateway-conformance-infra
  hostnames:
  - specific.but.wrong.com
  - wildcard.io
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /s5
    backendRefs:
    - name: infra-backend-v2
      port: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: httproute-hostname-intersection-all
  namespace: gateway-conformance-infra
spec:
  parentRefs:
  - name: httproute-hostname-intersection-all
    namespace: gateway-conformance-infra
  hostnames:
  - first.com
  - sub.first.com
  - second.com
  - sub.second.com
  rules:
  - backendRefs:
    - name: infra-backend-v2
      port: 8080
"#,
        &["no-intersecting-hosts"],
    );
    let (v1, v2, v3) = (
        Some("infra-backend-v1"),
        Some("infra-backend-v2"),
        Some("infra-backend-v3"),
    );
    check_requests(
        &t,
        &[
            // specific-host-matches-listener-specific-host
            ("very.specific.com", "/s1", v1),
            ("non.matching.com", "/s1", None),
            ("foo.nonmatchingwildcard.io", "/s1", None),
            ("foo.wildcard.io", "/s1", None),
            ("very.specific.com", "/non-matching-prefix", None),
            // specific-host-matches-listener-wildcard-host
            ("foo.wildcard.io", "/s2", v2),
            ("bar.wildcard.io", "/s2", v2),
            ("foo.bar.wildcard.io", "/s2", v2),
            ("non.matching.com", "/s2", None),
            ("wildcard.io", "/s2", None),
            ("very.specific.com", "/s2", None),
            ("foo.wildcard.io", "/non-matching-prefix", None),
            // wildcard-host-matches-listener-specific-host
            ("very.specific.com", "/s3", v3),
            ("non.matching.com", "/s3", None),
            ("foo.specific.com", "/s3", None),
            ("foo.wildcard.io", "/s3", None),
            ("very.specific.com", "/non-matching-prefix", None),
            // wildcard-host-matches-listener-wildcard-host
            ("foo.anotherwildcard.io", "/s4", v1),
            ("bar.anotherwildcard.io", "/s4", v1),
            ("foo.bar.anotherwildcard.io", "/s4", v1),
            ("anotherwildcard.io", "/s4", None),
            ("foo.wildcard.io", "/s4", None),
            ("very.specific.com", "/s4", None),
            ("foo.anotherwildcard.io", "/non-matching-prefix", None),
            // no-intersecting-hosts
            ("specific.but.wrong.com", "/s5", None),
            ("wildcard.io", "/s5", None),
            // httproute-hostname-intersection-all: a listener without hostname
            ("first.com", "/", v2),
            ("sub.first.com", "/", v2),
            ("second.com", "/", v2),
            ("sub.second.com", "/", v2),
            ("third.com", "/", None),
            ("sub.third.com", "/", None),
        ],
    );
    let reason = |route: &str| {
        cond(
            &parent(&t.gateway, &format!("gateway-conformance-infra/{route}")).conditions,
            "Accepted",
        )
        .reason
    };
    for route in [
        "specific-host-matches-listener-specific-host",
        "specific-host-matches-listener-wildcard-host",
        "wildcard-host-matches-listener-specific-host",
        "wildcard-host-matches-listener-wildcard-host",
        "httproute-hostname-intersection-all",
    ] {
        assert_eq!(reason(route), "Accepted", "{route}");
    }
    assert_eq!(reason("no-intersecting-hosts"), "NoMatchingListenerHostname");
    let attached = |name: &str| {
        listener(
            &t.gateway,
            "gateway-conformance-infra/httproute-hostname-intersection",
            name,
        )
        .attached_routes
    };
    assert_eq!(
        [
            attached("listener-1"),
            attached("listener-2"),
            attached("listener-3")
        ],
        [2, 1, 1]
    );
}

#[test]
fn a_conflict_on_a_wildcard_hostname_names_it_as_the_route_writes_it() {
    let route = |name: &str, time: &str| {
        format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: apps, creationTimestamp: "{time}"}}
spec:
  parentRefs: [{{name: gw, namespace: infra, sectionName: from-apps}}]
  hostnames: ["*.apps.example"]
  rules: [{{backendRefs: [{{name: api, port: 80}}]}}]
"#
        )
    };
    let t = with(&format!(
        "{}---\n{}",
        route("older", "2026-01-01T00:00:00Z"),
        route("newer", "2026-01-02T00:00:00Z")
    ));
    let wild = HostMatch::WildcardAnyDepth("apps.example".into());
    assert_eq!(route_of(&t, &wild, &prefix("/")).source.name.as_ref(), "older");
    let d = t
        .diagnostics
        .iter()
        .find(|d| d.object == "HTTPRoute apps/newer" && d.reason == "RouteConflict")
        .unwrap_or_else(|| panic!("{:#?}", t.diagnostics));
    assert!(d.message.contains(": *.apps.example Prefix"), "{}", d.message);
    assert_eq!(routed(&t, "a.b.apps.example", "/x").as_deref(), Some("api"));
}

/// Listener isolation (GatewayHTTPListenerIsolation): a host belongs to the most specific listener
/// whose hostname matches it, so a route attached to a broader listener does not serve it, even
/// when the route's own hostnames would match.
#[test]
fn a_host_is_served_only_by_the_routes_of_its_most_specific_listener() {
    let mut opts = opts();
    opts.gateway.as_mut().unwrap().address_pool = Some("10.125.0.0/24".parse().unwrap());
    let route = |name: &str, section: &str, path: &str| {
        format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: infra}}
spec:
  parentRefs: [{{name: isolated, sectionName: {section}}}]
  hostnames: [bar.com, "*.example.com", "*.foo.example.com"]
  rules: [{{matches: [{{path: {{type: PathPrefix, value: {path}}}}}], backendRefs: [{{name: web, port: 8080}}]}}]
"#
        )
    };
    let gateway = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: isolated, namespace: infra}
spec:
  gatewayClassName: gantry
  listeners:
  - {name: empty, protocol: HTTP, port: 80}
  - {name: wild, protocol: HTTP, port: 80, hostname: "*.example.com"}
  - {name: wild-foo, protocol: HTTP, port: 80, hostname: "*.foo.example.com"}
  - {name: abc, protocol: HTTP, port: 80, hostname: abc.foo.example.com}
"#;
    let manifests = [
        gateway.to_string(),
        route("on-empty", "empty", "/empty"),
        route("on-wild", "wild", "/wild"),
        route("on-wild-foo", "wild-foo", "/wild-foo"),
        route("on-abc", "abc", "/abc"),
    ];
    let t = build_with(
        yaml(&format!("{BASE}\n---\n{}", manifests.join("\n---\n"))),
        &opts,
    );
    let address = t
        .gateway
        .gateways
        .iter()
        .find(|g| g.key.name == "isolated")
        .and_then(|g| g.addresses.clone())
        .expect("an address")[0];
    let served = |host: &str, path: &str| {
        t.routes_for(address)
            .lookup(host, path)
            .map(|r| r.source.name.to_string())
    };
    // (host, path, the route that serves it or None for 404), as the conformance test expects.
    let cases = [
        ("bar.com", "/empty", Some("on-empty")),
        ("bar.com", "/wild", None),
        ("bar.example.com", "/empty", None),
        ("bar.example.com", "/wild", Some("on-wild")),
        ("bar.foo.example.com", "/empty", None),
        ("bar.foo.example.com", "/wild", None),
        ("bar.foo.example.com", "/wild-foo", Some("on-wild-foo")),
        ("abc.foo.example.com", "/wild-foo", None),
        ("abc.foo.example.com", "/abc", Some("on-abc")),
    ];
    for (host, path, want) in cases {
        assert_eq!(served(host, path).as_deref(), want, "{host}{path}");
    }
}

/// A Service port with `appProtocol: kubernetes.io/h2c` is spoken to in HTTP/2 without TLS.
#[test]
fn an_h2c_app_protocol_makes_the_backend_http2() {
    let t = with(
        r#"
apiVersion: v1
kind: Service
metadata: {name: grpcish, namespace: infra}
spec: {ports: [{name: h2c, port: 8081, targetPort: 3001, appProtocol: kubernetes.io/h2c}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h2c, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: grpcish, port: 8081}]}, {matches: [{path: {type: PathPrefix, value: /plain}}], backendRefs: [{name: web, port: 8080}]}]
"#,
    );
    let r = route_of(&t, &HostMatch::Any, &prefix("/"));
    assert_eq!(
        r.policies.upstream.protocol,
        gantry_proxy::policy::UpstreamProtocol::H2c
    );
    let r = route_of(&t, &HostMatch::Any, &prefix("/plain"));
    assert_eq!(
        r.policies.upstream.protocol,
        gantry_proxy::policy::UpstreamProtocol::default()
    );
}
