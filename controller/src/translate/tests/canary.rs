//! Canary Ingresses (`canary: "true"`) attached to the main routes with the same host, path and
//! path type, as ingress-nginx's `mergeAlternativeBackends` does, and what happens to those that
//! find none; session affinity, hashing and the balancer on routes and canaries.

use gantry_proxy::{policy::HashBy, Balancer, PathMatch};

use super::fixtures::*;
use crate::{store::Object, translate::Translation};

const P: &str = "nginx.ingress.kubernetes.io/";

/// Service `name` with one ready endpoint.
fn backend(name: &str, ip: &str) -> Vec<Object> {
    objects![
        service(name).port("http", 80, 8080),
        slice(name).port_name("http").endpoint(ip, 8080)
    ]
}

fn with_annotations(mut ing: IngressBuilder, pairs: &[(&str, &str)]) -> IngressBuilder {
    for (k, v) in pairs {
        ing = ing.annotation(&format!("{P}{k}"), v);
    }
    ing
}

/// A canary Ingress `name` (with `canary: "true"` and the annotations), created at `created`.
fn canary(name: &str, created: &str, pairs: &[(&str, &str)]) -> IngressBuilder {
    with_annotations(ingress(name).created(created), pairs).annotation(&format!("{P}canary"), "true")
}

fn build_with_backends(ingresses: Vec<IngressBuilder>, services: &[&str]) -> Translation {
    let mut objects: Vec<Object> = ingresses.into_iter().map(Object::from).collect();
    for (i, svc) in services.iter().enumerate() {
        objects.extend(backend(svc, &format!("10.0.0.{}", i + 1)));
    }
    build(objects)
}

fn canary_service(t: &Translation, host: &str, path: &str) -> Option<String> {
    let route = t.routes.lookup(host, path)?;
    route
        .policies
        .canary
        .as_ref()
        .map(|c| c.backend.id.service.to_string())
}

#[test]
fn a_canary_attaches_to_the_main_route_for_its_host_and_path() {
    // canary.go: the mainline Ingress created before, or after, the canary.
    for (main_created, canary_created) in [
        ("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"),
        ("2024-02-01T00:00:00Z", "2024-01-01T00:00:00Z"),
    ] {
        let t = build_with_backends(
            vec![
                ingress("main")
                    .created(main_created)
                    .host("foo")
                    .prefix("/info", "httpbun", 80),
                canary(
                    "foo-canary",
                    canary_created,
                    &[
                        ("canary-by-header", "CanaryByHeader"),
                        ("canary-weight", "30"),
                        ("canary-weight-total", "200"),
                    ],
                )
                .host("foo")
                .prefix("/info", "httpbun-canary", 80),
            ],
            &["httpbun", "httpbun-canary"],
        );
        assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
        assert_eq!(routed(&t, "foo", "/info").as_deref(), Some("httpbun"));
        let c = t
            .routes
            .lookup("foo", "/info")
            .unwrap()
            .policies
            .canary
            .clone()
            .unwrap();
        assert_eq!(c.backend.id.service.as_ref(), "httpbun-canary");
        assert_eq!(c.by_header.as_ref().unwrap(), "canarybyheader");
        assert_eq!((c.weight, c.total()), (30, 200));
        // Not a route of its own: one route only.
        assert_eq!(t.routes.len(), 1);
        let report = t
            .annotations
            .iter()
            .find(|r| r.ingress == "default/foo-canary")
            .unwrap();
        assert!(report.not_routed.is_some());
    }
}

#[test]
fn canaries_match_host_path_and_path_type_as_written() {
    let main = || {
        ingress("main")
            .created("2024-01-01T00:00:00Z")
            .host("foo")
            .prefix("/info", "main", 80)
            .exact("/exact", "main", 80)
            .implementation_specific("/impl", "main", 80)
    };
    // (canary's host, path type, path) → attached
    let cases: &[(&str, &str, &str, bool)] = &[
        ("foo", "Prefix", "/info", true),
        ("foo", "Exact", "/exact", true),
        // ImplementationSpecific is Prefix in Gantry: one route, so one canary.
        ("foo", "Prefix", "/impl", true),
        ("foo", "ImplementationSpecific", "/info", true),
        ("foo", "Exact", "/info", false),
        ("foo", "Prefix", "/info/", false),
        ("foo", "Prefix", "/", false),
        ("bar", "Prefix", "/info", false),
        ("FOO", "Prefix", "/info", true),
    ];
    for (host, ty, path, attached) in cases {
        let c = canary("c", "2024-02-01T00:00:00Z", &[("canary-weight", "50")])
            .host(host)
            .path(ty, path, service_backend("canary", 80));
        let t = build_with_backends(vec![main(), c], &["main", "canary"]);
        let got = t
            .routes
            .iter()
            .find_map(|(_, r)| r.policies.canary.as_ref())
            .map(|c| c.backend.id.service.to_string());
        let reasons: Vec<String> = reasons(&t).into_iter().map(|(_, r)| r).collect();
        if *attached {
            assert_eq!(got.as_deref(), Some("canary"), "{host} {ty} {path}");
            assert!(reasons.is_empty(), "{host} {ty} {path}: {reasons:?}");
        } else {
            assert_eq!(reasons, ["CanaryWithoutMainRoute"], "{host} {ty} {path}");
            assert!(t.routes.iter().all(|(_, r)| r.policies.canary.is_none()));
        }
    }
}

#[test]
fn a_canary_without_main_route_is_ignored_and_reported() {
    // canary.go: "should return 404 status for requests to the canary if no matching ingress is
    // found"; "should not use canary with domain as a server".
    let t = build_with_backends(
        vec![
            canary(
                "foo-canary",
                "2024-01-01T00:00:00Z",
                &[("canary-by-header", "CanaryByHeader")],
            )
            .host("foo")
            .prefix("/info", "canary", 80),
            ingress("bar").host("bar").prefix("/info", "main", 80),
        ],
        &["main", "canary"],
    );
    assert_eq!(routed(&t, "foo", "/info"), None, "404: the canary is not a route");
    assert!(t.routes.lookup("bar", "/info").unwrap().policies.canary.is_none());
    let d = the_diagnostic(&t, "CanaryWithoutMainRoute");
    assert_eq!(d.object, "Ingress default/foo-canary");
    assert!(d.message.contains("foo Prefix /info"), "{d:?}");
}

#[test]
fn the_oldest_canary_wins_and_the_others_are_reported() {
    let t = build_with_backends(
        vec![
            ingress("main").host("foo").prefix("/", "main", 80),
            canary("second", "2024-02-01T00:00:00Z", &[("canary-weight", "100")])
                .host("foo")
                .prefix("/", "canary-b", 80),
            canary("first", "2024-01-01T00:00:00Z", &[("canary-weight", "10")])
                .host("foo")
                .prefix("/", "canary-a", 80),
        ],
        &["main", "canary-a", "canary-b"],
    );
    assert_eq!(canary_service(&t, "foo", "/").as_deref(), Some("canary-a"));
    let d = the_diagnostic(&t, "CanaryConflict");
    assert_eq!(d.object, "Ingress default/second");
    assert!(d.message.contains("default/first"), "{d:?}");
}

#[test]
fn a_canary_to_the_main_backend_is_ignored() {
    let t = build_with_backends(
        vec![
            ingress("main").host("foo").prefix("/", "main", 80),
            canary("c", "2024-01-01T00:00:00Z", &[("canary-weight", "50")])
                .host("foo")
                .prefix("/", "main", 80),
        ],
        &["main"],
    );
    assert_eq!(canary_service(&t, "foo", "/"), None);
    assert_eq!(
        reasons(&t),
        [("Ingress default/c".to_string(), "CanarySameBackend".to_string())]
    );
}

#[test]
fn a_canary_default_backend_is_the_catch_all_s_canary() {
    // canary.go: "should not use canary as a catch-all server": the catch-all keeps the main
    // backend, with the canary's as its canary.
    let t = build_with_backends(
        vec![
            canary(
                "foo-canary",
                "2024-01-01T00:00:00Z",
                &[("canary-by-header", "CanaryByHeader")],
            )
            .default_backend("canary", 80),
            ingress("foo")
                .created("2024-02-01T00:00:00Z")
                .default_backend("main", 80)
                .any_host()
                .prefix("/api", "api", 80),
        ],
        &["main", "canary", "api"],
    );
    let default = t.routes.default_route().unwrap();
    assert_eq!(default.backend.id.service.as_ref(), "main");
    assert_eq!(
        default
            .policies
            .canary
            .as_ref()
            .unwrap()
            .backend
            .id
            .service
            .as_ref(),
        "canary"
    );
    // Rules without host are the catch-all server's locations too.
    assert_eq!(
        canary_service(&t, "any.example", "/api").as_deref(),
        Some("canary")
    );
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
}

#[test]
fn a_canary_takes_the_main_route_s_affinity_unless_legacy() {
    // canary.go "canary affinity behavior": the main Ingress has the cookie; the canary none.
    let main = || {
        with_annotations(
            ingress("main").host("foo").prefix("/info", "main", 80),
            &[("affinity", "cookie"), ("session-cookie-name", "aff")],
        )
    };
    for (behavior, inherited) in [(None, true), (Some("sticky"), true), (Some("legacy"), false)] {
        let mut pairs = vec![
            ("canary-by-header", "ForceCanary"),
            ("canary-by-header-value", "yes"),
            ("canary-weight", "1"),
        ];
        pairs.extend(behavior.map(|b| ("affinity-canary-behavior", b)));
        let t = build_with_backends(
            vec![
                main(),
                canary("c", "2024-01-01T00:00:00Z", &pairs)
                    .host("foo")
                    .prefix("/info", "canary", 80),
            ],
            &["main", "canary"],
        );
        let p = &t.routes.lookup("foo", "/info").unwrap().policies;
        let c = p.canary.as_ref().unwrap();
        assert_eq!(p.affinity.as_ref().unwrap().cookie_name, "aff");
        assert_eq!(c.affinity.is_some(), inherited, "{behavior:?}");
        if inherited {
            assert_eq!(c.affinity, p.affinity);
        }
    }
    // legacy with the canary's own affinity, hash and balancer.
    let t = build_with_backends(
        vec![
            main(),
            canary(
                "c",
                "2024-01-01T00:00:00Z",
                &[
                    ("affinity-canary-behavior", "legacy"),
                    ("affinity", "cookie"),
                    ("session-cookie-name", "canary-aff"),
                ],
            )
            .host("foo")
            .prefix("/info", "canary", 80),
        ],
        &["main", "canary"],
    );
    let c = t
        .routes
        .lookup("foo", "/info")
        .unwrap()
        .policies
        .canary
        .clone()
        .unwrap();
    assert_eq!(c.affinity.as_ref().unwrap().cookie_name, "canary-aff");
}

#[test]
fn a_canary_uses_the_main_route_s_policies_and_its_own_hash_and_balancer() {
    let t = build_with_backends(
        vec![
            with_annotations(
                ingress("main").host("foo").prefix("/", "main", 80),
                &[("whitelist-source-range", "10.0.0.0/8"), ("load-balance", "ewma")],
            ),
            canary(
                "c",
                "2024-01-01T00:00:00Z",
                &[
                    ("canary-weight", "50"),
                    ("upstream-hash-by", "$http_x_user"),
                    // Not the canary's: the main route's protocol and access policies apply.
                    ("backend-protocol", "GRPC"),
                    ("auth-url", "http://auth.example"),
                ],
            )
            .host("foo")
            .prefix("/", "canary", 80),
        ],
        &["main", "canary"],
    );
    let p = &t.routes.lookup("foo", "/").unwrap().policies;
    assert!(
        p.refusal.is_none() && p.external_auth.is_none(),
        "the canary's auth-url is ignored, as in ingress-nginx"
    );
    assert!(p.source_ranges.is_some());
    assert_eq!(p.balancer, Some(Balancer::LeastRequest));
    assert_eq!(p.upstream.protocol, gantry_proxy::policy::UpstreamProtocol::Http1);
    let c = p.canary.as_ref().unwrap();
    assert_eq!(
        c.hash_by,
        Some(HashBy::Header(http::HeaderName::from_static("x-user")))
    );
    assert_eq!(c.balancer, None);
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
}

#[test]
fn a_failing_main_route_keeps_no_canary_and_canaries_in_regex_hosts_attach() {
    let t = build_with_backends(
        vec![
            with_annotations(
                ingress("main").host("foo").prefix("/", "main", 80),
                &[("auth-url", "https://invalid..auth.url")],
            ),
            canary("c", "2024-01-01T00:00:00Z", &[("canary-weight", "100")])
                .host("foo")
                .prefix("/", "canary", 80),
        ],
        &["main", "canary"],
    );
    let p = &t.routes.lookup("foo", "/").unwrap().policies;
    assert!(p.refusal.is_some() && p.canary.is_none(), "503 for everybody");
    assert!(reasons(&t).iter().all(|(_, r)| !r.starts_with("Canary")));

    let t = build_with_backends(
        vec![
            with_annotations(
                ingress("main").host("foo").prefix("/api/.*", "main", 80),
                &[("use-regex", "true")],
            ),
            canary("c", "2024-01-01T00:00:00Z", &[("canary-weight", "100")])
                .host("foo")
                .prefix("/api/.*", "canary", 80),
        ],
        &["main", "canary"],
    );
    let route = t.routes.lookup("foo", "/api/v1").unwrap();
    assert!(matches!(route.path, PathMatch::Regex(_)));
    assert_eq!(
        route
            .policies
            .canary
            .as_ref()
            .unwrap()
            .backend
            .id
            .service
            .as_ref(),
        "canary"
    );
}

#[test]
fn server_aliases_share_the_canary() {
    let t = build_with_backends(
        vec![
            with_annotations(
                ingress("main").host("foo").prefix("/", "main", 80),
                &[("server-alias", "alias.example")],
            ),
            canary("c", "2024-01-01T00:00:00Z", &[("canary-weight", "100")])
                .host("foo")
                .prefix("/", "canary", 80),
        ],
        &["main", "canary"],
    );
    assert_eq!(
        canary_service(&t, "alias.example", "/").as_deref(),
        Some("canary")
    );
}

#[test]
fn affinity_hash_and_balancer_land_on_the_route() {
    let t = build_with_backends(
        vec![
            with_annotations(
                ingress("sticky").host("a.example").prefix("/", "web", 80),
                &[
                    ("affinity", "cookie"),
                    ("affinity-mode", "persistent"),
                    ("session-cookie-name", "SERVERID"),
                    ("session-cookie-max-age", "3600"),
                ],
            ),
            with_annotations(
                ingress("hashed").host("b.example").prefix("/", "web", 80),
                &[
                    ("upstream-hash-by", "$request_uri"),
                    ("load-balance", "round_robin"),
                ],
            ),
            with_annotations(
                ingress("balanced").host("c.example").prefix("/", "web", 80),
                &[("load-balance", "ewma")],
            ),
        ],
        &["web"],
    );
    let a = t
        .routes
        .lookup("a.example", "/")
        .unwrap()
        .policies
        .affinity
        .clone()
        .unwrap();
    assert_eq!((a.cookie_name.as_str(), a.max_age), ("SERVERID", Some(3600)));
    let b = &t.routes.lookup("b.example", "/").unwrap().policies;
    assert_eq!(b.hash_by, Some(HashBy::RequestUri));
    assert_eq!(b.balancer, None, "upstream-hash-by takes precedence");
    let c = &t.routes.lookup("c.example", "/").unwrap().policies;
    assert_eq!(c.balancer, Some(Balancer::LeastRequest));
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
}
