//! Rules → routes: hosts, paths, merging across Ingresses, conflicts by age, redirects.

use std::sync::Arc;

use gantry_proxy::HostMatch;

use crate::translate::Translation;

use super::fixtures::*;
use crate::translate::{translate, ANNOTATION_SSL_REDIRECT};

fn svc(name: &str) -> ServiceBuilder {
    service(name).port("http", 80, 8080)
}

#[test]
fn rules_for_one_host_merge_across_ingresses() {
    let snapshot = build(objects![
        ingress("api").host("shop.example").prefix("/api", "api", 80),
        ingress("web").host("shop.example").prefix("/", "web", 80),
        ingress("static")
            .host("SHOP.example")
            .exact("/favicon.ico", "static", 80),
        svc("api"),
        svc("web"),
        svc("static"),
    ]);
    let cases = [
        ("/api/v1/cart", Some("api")),
        ("/", Some("web")),
        ("/favicon.ico", Some("static")),
        ("/favicon.ico/x", Some("web")),
    ];
    for (path, want) in cases {
        assert_eq!(routed(&snapshot, "shop.example", path).as_deref(), want, "{path}");
    }
}

#[test]
fn a_host_with_its_own_rules_does_not_fall_through_to_rules_without_host() {
    let snapshot = build(objects![
        ingress("catch-all").any_host().prefix("/", "catch-all", 80),
        ingress("a").host("a.example").prefix("/only", "a", 80),
        svc("catch-all"),
        svc("a"),
    ]);
    let cases = [
        ("a.example", "/only", Some("a")),
        ("a.example", "/other", None),
        ("b.example", "/other", Some("catch-all")),
    ];
    for (host, path, want) in cases {
        assert_eq!(routed(&snapshot, host, path).as_deref(), want, "{host}{path}");
    }
}

#[test]
fn implementation_specific_paths_match_like_prefix() {
    let snapshot = build(objects![
        ingress("i")
            .host("a.example")
            .implementation_specific("/docs", "docs", 80),
        svc("docs")
    ]);
    let cases = [
        ("/docs", Some("docs")),
        ("/docs/x", Some("docs")),
        ("/docsx", None),
    ];
    for (path, want) in cases {
        assert_eq!(routed(&snapshot, "a.example", path).as_deref(), want, "{path}");
    }
}

/// Two Ingresses claim host `a.example` Prefix `/`; the first one's Service answers.
fn conflict(first: IngressBuilder, second: IngressBuilder) -> Translation {
    build(objects![
        first.host("a.example").prefix("/", "first", 80),
        second.host("a.example").prefix("/", "second", 80),
        svc("first"),
        svc("second"),
    ])
}

#[test]
fn the_oldest_ingress_keeps_a_contested_path_and_the_other_gets_a_path_conflict() {
    let cases = [
        (
            "older creationTimestamp wins regardless of name",
            ingress("zzz").created("2023-01-01T00:00:00Z"),
            ingress("aaa").created("2024-01-01T00:00:00Z"),
            "zzz",
            "aaa",
        ),
        (
            "an object with a creationTimestamp is older than one without",
            ingress("zzz").created("2030-01-01T00:00:00Z"),
            ingress("aaa"),
            "zzz",
            "aaa",
        ),
        (
            "without timestamps namespace/name decides",
            ingress("b").ns("a"),
            ingress("a").ns("b"),
            "b",
            "a",
        ),
        (
            "equal timestamps fall back to namespace/name",
            ingress("m").created("2024-01-01T00:00:00Z"),
            ingress("n").created("2024-01-01T00:00:00Z"),
            "m",
            "n",
        ),
    ];
    for (case, winner, loser, winner_name, loser_name) in cases {
        // The order objects arrive in must not matter, only their age.
        for (first, second) in [(winner.clone(), loser.clone()), (loser.clone(), winner.clone())] {
            let snapshot = conflict(first, second);
            let route = snapshot.routes.lookup("a.example", "/").expect("routed");
            assert_eq!(route.source.name.as_ref(), winner_name, "{case}");
            let d = the_diagnostic(&snapshot, "PathConflict");
            assert_eq!(d.object.name, loser_name, "{case}: {d:?}");
            assert!(
                d.message.contains(&format!("/{winner_name}")),
                "{case}: names the winner: {d:?}"
            );
            assert!(d.message.contains("a.example Prefix /"), "{case}: {d:?}");
        }
    }
}

#[test]
fn exact_and_prefix_on_the_same_path_do_not_conflict_but_trailing_slash_prefixes_do() {
    let snapshot = build(objects![
        ingress("a")
            .created("2024-01-01T00:00:00Z")
            .host("a.example")
            .prefix("/foo", "prefix", 80),
        ingress("b")
            .created("2024-02-01T00:00:00Z")
            .host("a.example")
            .exact("/foo", "exact", 80)
            .prefix("/foo/", "slash", 80),
        svc("prefix"),
        svc("exact"),
        svc("slash"),
    ]);
    assert_eq!(routed(&snapshot, "a.example", "/foo").as_deref(), Some("exact"));
    assert_eq!(
        routed(&snapshot, "a.example", "/foo/x").as_deref(),
        Some("prefix")
    );
    let d = the_diagnostic(&snapshot, "PathConflict");
    assert_eq!(d.object, "Ingress default/b");
    assert!(d.message.contains("default/a"), "{d:?}");
}

#[test]
fn the_oldest_default_backend_wins_and_later_ones_get_a_conflict() {
    let snapshot = build(objects![
        ingress("new")
            .created("2024-06-01T00:00:00Z")
            .default_backend("new", 80),
        ingress("handwritten").default_backend("handwritten", 80),
        ingress("old")
            .created("2024-01-01T00:00:00Z")
            .default_backend("old", 80),
        svc("old"),
        svc("new"),
        svc("handwritten"),
        slice("old").port_name("http").endpoint("10.0.0.1", 8080),
        slice("new").port_name("http").endpoint("10.0.0.2", 8080),
        slice("handwritten").port_name("http").endpoint("10.0.0.3", 8080),
    ]);
    assert_eq!(
        routed(&snapshot, "anything.example", "/x").as_deref(),
        Some("old")
    );
    assert_eq!(
        reasons(&snapshot),
        [
            (
                "Ingress default/handwritten".to_string(),
                "DefaultBackendConflict".to_string()
            ),
            (
                "Ingress default/new".to_string(),
                "DefaultBackendConflict".to_string()
            ),
        ]
    );
    assert!(snapshot
        .diagnostics
        .iter()
        .all(|d| d.message.contains("default/old")));
}

#[test]
fn invalid_hosts_skip_only_their_rule() {
    let bad_hosts = [
        "*",
        "a.example:8080",
        "*.*.example",
        "foo.*.example",
        "10.1.2.3",
        "under_score.example",
    ];
    let mut ing = ingress("i");
    for host in bad_hosts {
        ing = ing.host(host).prefix("/", "svc", 80);
    }
    let snapshot = build(objects![
        ing.host("Good.Example").prefix("/", "svc", 80),
        svc("svc")
    ]);
    assert_eq!(routed(&snapshot, "good.example", "/").as_deref(), Some("svc"));
    assert_eq!(snapshot.routes.len(), 1);
    let invalid: Vec<_> = snapshot
        .diagnostics
        .iter()
        .filter(|d| d.reason == "InvalidHost")
        .collect();
    assert_eq!(invalid.len(), bad_hosts.len(), "{:#?}", snapshot.diagnostics);
    for host in bad_hosts {
        assert!(
            invalid.iter().any(|d| d.message.contains(&format!("{host:?}"))),
            "{host}"
        );
    }
}

#[test]
fn wildcard_hosts_become_wildcard_matches_for_the_parent_domain() {
    let snapshot = build(objects![
        ingress("i").host("*.Example.com").prefix("/", "svc", 80),
        svc("svc")
    ]);
    let hosts: Vec<&HostMatch> = snapshot.routes.iter().map(|(h, _)| h).collect();
    assert_eq!(hosts, [&HostMatch::Wildcard("example.com".into())]);
    assert_eq!(routed(&snapshot, "a.example.com", "/").as_deref(), Some("svc"));
    assert_eq!(routed(&snapshot, "example.com", "/"), None);
}

#[test]
fn invalid_paths_skip_only_that_path() {
    let snapshot = build(objects![
        ingress("i")
            .host("a.example")
            .prefix("relative", "svc", 80)
            .path("Regex", "/re.*", service_backend("svc", 80))
            .prefix("/ok", "svc", 80),
        svc("svc"),
    ]);
    assert_eq!(routed(&snapshot, "a.example", "/ok").as_deref(), Some("svc"));
    assert_eq!(snapshot.routes.len(), 1);
    let messages: Vec<_> = snapshot
        .diagnostics
        .iter()
        .filter(|d| d.reason == "InvalidPath")
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(messages.len(), 2, "{:#?}", snapshot.diagnostics);
    assert!(
        messages
            .iter()
            .any(|m| m.contains("\"relative\" does not start with '/'")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("unknown pathType \"Regex\"")),
        "{messages:?}"
    );
}

#[test]
fn ssl_redirect_is_set_for_hosts_listed_for_tls_by_any_of_our_ingresses() {
    let objects = objects![
        ingress("tls").tls(&["secure.example", "*.wild.example"], "missing-is-fine-here"),
        ingress("routes")
            .host("secure.example")
            .prefix("/", "svc", 80)
            .host("*.wild.example")
            .prefix("/", "svc", 80)
            .host("plain.example")
            .prefix("/", "svc", 80)
            .any_host()
            .prefix("/", "svc", 80),
        ingress("opt-out")
            .annotation(ANNOTATION_SSL_REDIRECT, "false")
            .host("secure.example")
            .prefix("/no-redirect", "svc", 80),
        ingress("theirs").class("nginx").tls(&["plain.example"], "x"),
        svc("svc"),
    ];
    let snapshot = build(objects);
    let cases = [
        ("secure.example", "/", true),
        ("a.wild.example", "/", true),
        ("plain.example", "/", false),
        ("other.example", "/", false),
        ("secure.example", "/no-redirect", false),
    ];
    for (host, path, want) in cases {
        let route = snapshot.routes.lookup(host, path).expect("routed");
        assert_eq!(route.policies.https_redirect.is_some(), want, "{host}{path}");
    }
}

#[test]
fn routes_to_the_same_backend_share_one_backend() {
    let snapshot = build(objects![
        ingress("a")
            .host("a.example")
            .prefix("/x", "svc", 80)
            .prefix("/y", "svc", 80),
        ingress("b")
            .host("b.example")
            .prefix("/", "svc", 80)
            .prefix("/by-name", "svc", "http"),
        svc("svc"),
        slice("svc").port_name("http").endpoint("10.0.0.1", 8080),
    ]);
    let backend = |host: &str, path: &str| snapshot.routes.lookup(host, path).unwrap().backend.clone();
    assert!(Arc::ptr_eq(
        &backend("a.example", "/x"),
        &backend("a.example", "/y")
    ));
    assert!(Arc::ptr_eq(
        &backend("a.example", "/x"),
        &backend("b.example", "/")
    ));
    // Named differently, so a different BackendId (and backend), though the same pods.
    let by_name = backend("b.example", "/by-name");
    assert!(!Arc::ptr_eq(&backend("a.example", "/x"), &by_name));
    assert_eq!(by_name.id.to_string(), "default/svc:http");
    assert_eq!(by_name.endpoints, backend("a.example", "/x").endpoints);
}

#[test]
fn translating_an_unchanged_store_again_gives_an_equal_snapshot() {
    // What lets the data plane skip publishing a rebuild that changes nothing.
    let store = store(objects![
        ingress("i").host("a.example").prefix("/", "svc", 80),
        svc("svc")
    ]);
    let first = translate(&store, &opts(), &gantry_proxy::Snapshot::default());
    let second = translate(&store, &opts(), &first);
    assert_eq!(first.snapshot, second.snapshot);
    let changed = store_with_more(&store);
    assert_ne!(translate(&changed, &opts(), &first).snapshot, first.snapshot);
}

fn store_with_more(store: &crate::store::ObjectStore) -> crate::store::ObjectStore {
    let mut more = store.clone();
    more.apply(ingress("j").host("b.example").prefix("/", "svc", 80).into());
    more
}

#[test]
fn the_same_store_always_gives_the_same_routes_and_diagnostics() {
    let objects = objects![
        ingress("b").host("a.example").prefix("/", "missing", 80),
        ingress("a")
            .host("a.example")
            .prefix("/", "missing", 80)
            .prefix("/x", "missing", 80),
        ingress("c").host("c.example").prefix("/", "svc", 80),
        svc("svc"),
        slice("svc").port_name("http").endpoint("10.0.0.1", 8080),
    ];
    let one = build(objects.clone());
    let two = build(objects.into_iter().rev().collect());
    assert_eq!(one.diagnostics, two.diagnostics);
    let listing = |s: &Translation| {
        s.routes
            .iter()
            .map(|(h, r)| format!("{h:?} {:?} {}", r.path, r.backend.id))
            .collect::<Vec<_>>()
    };
    assert_eq!(listing(&one), listing(&two));
    // Two paths of `a` to the same missing Service are one problem, reported once.
    assert_eq!(
        reasons(&one),
        [
            ("Ingress default/a".to_string(), "ServiceNotFound".to_string()),
            ("Ingress default/b".to_string(), "PathConflict".to_string()),
            ("Ingress default/b".to_string(), "ServiceNotFound".to_string()),
        ]
    );
}

#[test]
fn routes_that_ask_for_the_same_policies_share_them() {
    let snapshot = build(objects![
        ingress("a")
            .host("a.example")
            .prefix("/", "web", 80)
            .prefix("/x", "web", 80),
        ingress("b").host("b.example").prefix("/", "web", 80),
        ingress("limited")
            .host("c.example")
            .annotation("nginx.ingress.kubernetes.io/limit-rps", "5")
            .prefix("/", "web", 80),
        svc("web"),
    ]);
    let policies = |host: &str, path: &str| {
        snapshot
            .routes
            .iter()
            .find(|(h, r)| h.to_string() == host && r.path == gantry_proxy::PathMatch::Prefix(path.into()))
            .map(|(_, r)| r.policies.clone())
            .unwrap_or_else(|| panic!("no route {host}{path}"))
    };
    let (a, a_x, b, c) = (
        policies("a.example", "/"),
        policies("a.example", "/x"),
        policies("b.example", "/"),
        policies("c.example", "/"),
    );
    assert!(Arc::ptr_eq(&a, &a_x), "two paths of one Ingress");
    assert!(Arc::ptr_eq(&a, &b), "two Ingresses asking for nothing");
    // Shared by value only: the rate-limited route keeps its own.
    assert!(a.rate_limit.is_none() && c.rate_limit.is_some());
    assert!(!Arc::ptr_eq(&a, &c));
}
