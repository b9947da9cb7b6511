//! ingress-nginx annotations → route policies: every honoured annotation on a route, regex mode,
//! rewrites per path, server aliases, and the Ingresses that fail closed (routed, answering 503).

use std::time::Duration;

use gantry_proxy::{HostMatch, PathMatch};

use super::fixtures::*;
use crate::{
    annotations::{
        tests::{config_map, opaque_secret, HTPASSWD_FOO_BAR},
        Outcome,
    },
    store::Object,
    translate::Translation,
};

/// Annotations as `(name, value)` pairs.
type Anns<'a> = &'a [(&'a str, &'a str)];

const P: &str = "nginx.ingress.kubernetes.io/";

/// Service `name` with one ready endpoint, so that only annotation problems are diagnosed.
fn backend(name: &str, ip: &str) -> Vec<Object> {
    objects![
        service(name).port("http", 80, 8080),
        slice(name).port_name("http").endpoint(ip, 8080)
    ]
}

/// An Ingress `web` for host `a.example`, Prefix `/`, with the annotations, and its backend.
fn web(annotations: &[(&str, &str)], extra: Vec<Object>) -> Translation {
    let mut ing = ingress("web").host("a.example").prefix("/", "web", 80);
    for (k, v) in annotations {
        ing = ing.annotation(&format!("{P}{k}"), v);
    }
    let mut objects = objects![ing];
    objects.extend(backend("web", "10.0.0.1"));
    objects.extend(extra);
    build(objects)
}

fn route<'t>(t: &'t Translation, host: &str, path: &str) -> &'t gantry_proxy::Route {
    t.routes
        .lookup(host, path)
        .unwrap_or_else(|| panic!("{host}{path} is routed"))
}

fn reports_of<'t>(t: &'t Translation, ingress: &str) -> &'t crate::translate::IngressReport {
    t.annotations
        .iter()
        .find(|r| r.ingress == ingress)
        .unwrap_or_else(|| panic!("no report for {ingress}"))
}

#[test]
fn every_honoured_annotation_lands_on_the_route() {
    let secret = opaque_secret("default", "basic-auth", &[("auth", HTPASSWD_FOO_BAR)]);
    let headers = config_map("default", "headers", &[("X-Frame-Options", "DENY")]);
    let t = web(
        &[
            ("permanent-redirect", "https://www.example.com"),
            ("permanent-redirect-code", "308"),
            ("app-root", "/app1"),
            ("x-forwarded-prefix", "/path"),
            ("upstream-vhost", "internal.example"),
            ("proxy-body-size", "1m"),
            ("proxy-connect-timeout", "5"),
            ("proxy-read-timeout", "120"),
            ("proxy-send-timeout", "30"),
            ("whitelist-source-range", "10.0.0.0/8"),
            ("denylist-source-range", "10.1.0.0/16"),
            ("auth-type", "basic"),
            ("auth-secret", "basic-auth"),
            ("auth-realm", "Authentication Required"),
            ("enable-cors", "true"),
            ("limit-rps", "10"),
            ("custom-headers", "default/headers"),
            ("backend-protocol", "HTTP"),
        ],
        vec![secret, headers],
    );
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    let p = &route(&t, "a.example", "/anything").policies;
    assert!(p.refusal.is_none());
    let redirect = p.redirect.as_ref().unwrap();
    assert_eq!(
        (redirect.status.as_u16(), redirect.location.to_str().unwrap()),
        (308, "https://www.example.com")
    );
    assert_eq!(p.app_root.as_ref().unwrap().path, "/app1");
    assert_eq!(p.upstream.forwarded_prefix.as_ref().unwrap(), "/path");
    assert_eq!(p.upstream.host.as_ref().unwrap(), "internal.example");
    assert_eq!(p.max_body_bytes, Some(1 << 20));
    assert_eq!(p.timeouts.connect, Some(Duration::from_secs(5)));
    assert_eq!(p.timeouts.read, Some(Duration::from_secs(120)));
    assert_eq!(p.timeouts.send, Some(Duration::from_secs(30)));
    let ranges = p.source_ranges.as_ref().unwrap();
    assert!(ranges.allows("10.2.0.1".parse().unwrap()) && !ranges.allows("10.1.0.1".parse().unwrap()));
    assert!(p.basic_auth.as_ref().unwrap().users.verify("foo", b"bar"));
    assert!(p.cors.is_some());
    assert_eq!(p.rate_limit.as_ref().unwrap().rps, Some(10));
    assert_eq!(
        p.response_headers.as_ref().unwrap().headers[0].0,
        "x-frame-options"
    );
    assert!(p.https_redirect.is_none(), "no TLS: no HTTPS redirect");
    let report = reports_of(&t, "default/web");
    assert_eq!(report.annotations.len(), 18);
    assert!(report.fails_closed.is_none());
    assert!(report
        .annotations
        .iter()
        .all(|r| matches!(r.outcome, Outcome::Honoured | Outcome::Difference(_))));
}

#[test]
fn https_redirects_follow_tls_ssl_redirect_and_force() {
    let cases: &[(Anns<'_>, bool, bool)] = &[
        // (annotations, host listed in spec.tls, redirect)
        (&[], true, true),
        (&[], false, false),
        (&[("ssl-redirect", "false")], true, false),
        (&[("ssl-redirect", "0")], true, false),
        (&[("force-ssl-redirect", "true")], false, true),
        (
            &[("force-ssl-redirect", "true"), ("ssl-redirect", "false")],
            false,
            true,
        ),
    ];
    for (annotations, tls, want) in cases {
        let mut ing = ingress("web").host("a.example").prefix("/", "web", 80);
        if *tls {
            ing = ing.tls(&["a.example"], "cert");
        }
        for (k, v) in *annotations {
            ing = ing.annotation(&format!("{P}{k}"), v);
        }
        let mut objects = objects![ing];
        objects.extend(backend("web", "10.0.0.1"));
        let t = build(objects);
        let r = route(&t, "a.example", "/");
        assert_eq!(
            r.policies.https_redirect.is_some(),
            *want,
            "{annotations:?} tls={tls}"
        );
    }
}

#[test]
fn use_regex_makes_every_prefix_path_of_the_host_a_regex() {
    let mut objects = objects![
        ingress("plain")
            .created("2024-01-01T00:00:00Z")
            .host("a.example")
            .prefix("/foo", "plain", 80)
            .exact("/exact", "plain", 80)
            .host("b.example")
            .prefix("/foo", "plain", 80),
        ingress("regex")
            .created("2024-02-01T00:00:00Z")
            .annotation(&format!("{P}use-regex"), "true")
            .host("a.example")
            .implementation_specific("/foo/bar/[A-Z0-9]{3}", "regex", 80),
    ];
    objects.extend(backend("plain", "10.0.0.1"));
    objects.extend(backend("regex", "10.0.0.2"));
    let t = build(objects);
    assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
    let paths = |host: &str| -> Vec<PathMatch> {
        let h = HostMatch::Exact(host.into());
        let mut v: Vec<PathMatch> = t
            .routes
            .iter()
            .filter(|(hm, _)| **hm == h)
            .map(|(_, r)| r.path.clone())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        paths("a.example"),
        [
            PathMatch::Exact("/exact".into()),
            PathMatch::Regex("/foo".into()),
            PathMatch::Regex("/foo/bar/[A-Z0-9]{3}".into()),
        ]
    );
    assert_eq!(
        paths("b.example"),
        [PathMatch::Prefix("/foo".into())],
        "other hosts keep their paths"
    );
    // ingress-path-matching.md's warning: the longer regex wins over the "more exact" one.
    assert_eq!(routed(&t, "a.example", "/foo/bar/bar").as_deref(), Some("regex"));
    assert_eq!(
        routed(&t, "a.example", "/FOO/x").as_deref(),
        Some("plain"),
        "case-insensitive"
    );
    assert_eq!(
        routed(&t, "a.example", "/foobar").as_deref(),
        Some("plain"),
        "anchored at the start only"
    );
    assert_eq!(routed(&t, "a.example", "/exact").as_deref(), Some("plain"));
    assert_eq!(routed(&t, "b.example", "/foobar"), None);
}

#[test]
fn rewrite_target_compiles_per_path_and_a_path_it_cannot_fit_answers_503() {
    let mut objects = objects![ingress("rewrite")
        .annotation(&format!("{P}rewrite-target"), "/$2")
        .annotation(&format!("{P}use-regex"), "true")
        .host("rewrite.bar.com")
        .implementation_specific("/something(/|$)(.*)", "web", 80)
        .implementation_specific("/one-group(.*)", "web", 80)];
    objects.extend(backend("web", "10.0.0.1"));
    let t = build(objects);
    // docs/examples/rewrite: /something → /, /something/new → /new.
    let r = route(&t, "rewrite.bar.com", "/something/new");
    let rewrite = r.policies.upstream.rewrite.as_ref().unwrap();
    assert_eq!(rewrite.apply("/something/new", None).as_deref(), Some("/new"));
    assert_eq!(rewrite.apply("/something", None).as_deref(), Some("/"));
    // `$2` does not exist in `/one-group(.*)`: that path answers 503, the other one is served.
    let broken = route(&t, "rewrite.bar.com", "/one-group/x");
    assert!(broken.policies.refusal.is_some());
    assert!(broken.policies.upstream.rewrite.is_none());
    let report = reports_of(&t, "default/rewrite");
    let rw = report
        .annotations
        .iter()
        .find(|r| r.name() == "rewrite-target")
        .unwrap();
    assert!(
        matches!(&rw.outcome, Outcome::Invalid(d) if d.contains("/one-group(.*)")),
        "{rw:?}"
    );
    assert!(report.fails_closed.is_none(), "only that path");
    let d = the_diagnostic(&t, "AnnotationInvalid");
    assert!(d.message.contains("that path answers 503"), "{d:?}");

    // rewrite.go "should use correct longest path match": a rewrite on `/` of one Ingress puts the
    // other Ingress's paths of the host in regex mode, and they keep their own routing.
    let mut objects = objects![
        ingress("kube-lego")
            .created("2024-01-01T00:00:00Z")
            .host("rewrite.bar.com")
            .prefix("/.well-known/acme/challenge", "acme", 80),
        ingress("rewrite-index")
            .created("2024-02-01T00:00:00Z")
            .annotation(&format!("{P}rewrite-target"), "/new/backend")
            .host("rewrite.bar.com")
            .prefix("/", "web", 80),
    ];
    objects.extend(backend("web", "10.0.0.1"));
    objects.extend(backend("acme", "10.0.0.2"));
    let t = build(objects);
    let acme = route(&t, "rewrite.bar.com", "/.well-known/acme/challenge");
    assert_eq!(acme.path, PathMatch::Regex("/.well-known/acme/challenge".into()));
    assert!(acme.policies.upstream.rewrite.is_none());
    let index = route(&t, "rewrite.bar.com", "/other");
    assert_eq!(
        index
            .policies
            .upstream
            .rewrite
            .as_ref()
            .unwrap()
            .apply("/other", Some("a=1"))
            .as_deref(),
        Some("/new/backend?a=1")
    );
}

#[test]
fn server_aliases_serve_the_whole_host_and_explicit_hosts_win() {
    // alias.go: "hosts defined in two ingresses, different path with one alias".
    let mut objects = objects![
        ingress("app-a")
            .created("2024-01-01T00:00:00Z")
            .host("foo")
            .prefix("/app-a", "a", 80),
        ingress("app-b")
            .created("2024-02-01T00:00:00Z")
            .annotation(&format!("{P}server-alias"), "bar, taken.example")
            .host("foo")
            .prefix("/app-b", "b", 80),
        ingress("taken")
            .created("2024-03-01T00:00:00Z")
            .host("taken.example")
            .prefix("/", "t", 80),
    ];
    objects.extend(backend("a", "10.0.0.1"));
    objects.extend(backend("b", "10.0.0.2"));
    objects.extend(backend("t", "10.0.0.3"));
    let t = build(objects);
    assert_eq!(routed(&t, "bar", "/app-a").as_deref(), Some("a"));
    assert_eq!(routed(&t, "bar", "/app-b").as_deref(), Some("b"));
    assert_eq!(
        routed(&t, "taken.example", "/app-a").as_deref(),
        Some("t"),
        "the explicit host wins"
    );
    let d = the_diagnostic(&t, "ServerAliasConflict");
    assert_eq!(d.object, "Ingress default/app-b");
    assert!(
        d.message.contains("taken.example") && d.message.contains("default/taken"),
        "{d:?}"
    );
    let r = reports_of(&t, "default/app-b")
        .annotations
        .iter()
        .find(|r| r.name() == "server-alias")
        .unwrap();
    assert!(
        matches!(&r.outcome, Outcome::Difference(d) if d.contains("taken.example")),
        "{r:?}"
    );
}

#[test]
fn from_to_www_redirect_makes_the_twin_host_redirect_and_explicit_hosts_win() {
    // fromtowwwredirect.go: host `fromtowwwredirect.bar.com` gets `www.` as a redirecting server.
    let www = |name: &str, created: &str, host: &str, svc: &str| {
        ingress(name)
            .created(created)
            .annotation(&format!("{P}from-to-www-redirect"), "true")
            .host(host)
            .prefix("/app", svc, 80)
    };
    let mut objects = objects![
        www("plain", "2024-01-01T00:00:00Z", "fromtowwwredirect.bar.com", "a"),
        www("with-www", "2024-02-01T00:00:00Z", "www.shop.example", "b"),
        www("clash", "2024-03-01T00:00:00Z", "taken.example", "c"),
        ingress("owner")
            .created("2024-04-01T00:00:00Z")
            .host("www.taken.example")
            .prefix("/", "d", 80),
    ];
    for (svc, ip) in [
        ("a", "10.0.0.1"),
        ("b", "10.0.0.2"),
        ("c", "10.0.0.3"),
        ("d", "10.0.0.4"),
    ] {
        objects.extend(backend(svc, ip));
    }
    let t = build(objects);
    let twin = route(&t, "www.fromtowwwredirect.bar.com", "/anything/at/all");
    let r = twin.policies.host_redirect.as_ref().expect("a redirect route");
    assert_eq!(r.to, "fromtowwwredirect.bar.com");
    assert_eq!(r.status, 308);
    assert_eq!(&*twin.source.name, "plain");
    // The other way round: the host with www. redirects its bare twin.
    let bare = route(&t, "shop.example", "/");
    assert_eq!(
        bare.policies.host_redirect.as_ref().map(|r| r.to.as_str()),
        Some("www.shop.example")
    );
    // The host itself is served as before.
    assert!(route(&t, "www.shop.example", "/app")
        .policies
        .host_redirect
        .is_none());
    // A twin that is another Ingress's host keeps its own routes, and the skip is reported.
    assert_eq!(routed(&t, "www.taken.example", "/app").as_deref(), Some("d"));
    assert!(route(&t, "www.taken.example", "/")
        .policies
        .host_redirect
        .is_none());
    let d = the_diagnostic(&t, "WwwRedirectSkipped");
    assert_eq!(d.object, "Ingress default/clash");
    assert!(
        d.message.contains("www.taken.example") && d.message.contains("default/owner"),
        "{d:?}"
    );
    let r = reports_of(&t, "default/clash")
        .annotations
        .iter()
        .find(|r| r.name() == "from-to-www-redirect")
        .unwrap();
    assert!(
        matches!(&r.outcome, Outcome::Difference(d) if d.contains("www.taken.example")),
        "{r:?}"
    );
}

#[test]
fn fail_closed_ingresses_are_routed_and_answer_503() {
    let cases: &[(&str, Anns<'_>, &str)] = &[
        (
            "invalid allow-list CIDR",
            &[("whitelist-source-range", "10.0.0.0/33")],
            "AnnotationInvalid",
        ),
        (
            "auth-secret missing",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "missing"),
                ("auth-realm", "test auth"),
            ],
            "AnnotationSecretNotFound",
        ),
        (
            "auth-url that is not a URL",
            &[("auth-url", "https://invalid..auth.url")],
            "AnnotationInvalid",
        ),
        (
            "auth-proxy-set-headers ConfigMap missing",
            &[
                ("auth-url", "http://oauth2-proxy.auth.svc/oauth2/auth"),
                ("auth-proxy-set-headers", "nope"),
            ],
            "AnnotationConfigMapNotFound",
        ),
        (
            "snippet with deny all",
            &[("configuration-snippet", "allow 10.0.0.0/8;\ndeny all;")],
            "AnnotationRefused",
        ),
        (
            "digest auth",
            &[("auth-type", "digest"), ("auth-secret", "missing")],
            "AnnotationRefused",
        ),
        (
            "client certificates: CA Secret missing",
            &[("auth-tls-secret", "default/ca")],
            "AnnotationSecretNotFound",
        ),
        (
            "custom-headers ConfigMap missing",
            &[("custom-headers", "default/nope")],
            "AnnotationConfigMapNotFound",
        ),
    ];
    for (case, annotations, reason) in cases {
        let t = web(annotations, vec![]);
        let r = t
            .routes
            .lookup("a.example", "/x")
            .unwrap_or_else(|| panic!("{case}: still routed, not 404"));
        let refusal = r
            .policies
            .refusal
            .as_ref()
            .unwrap_or_else(|| panic!("{case}: refused"));
        assert_eq!(refusal.status, 503, "{case}");
        assert_eq!(r.policies.https_redirect, None, "{case}: nothing but the refusal");
        let d = the_diagnostic(&t, reason);
        assert_eq!(d.object, "Ingress default/web", "{case}");
        assert!(d.message.contains("fails closed"), "{case}: {d:?}");
        assert!(reports_of(&t, "default/web").fails_closed.is_some(), "{case}");
    }
}

#[test]
fn a_snippet_with_only_headers_is_refused_but_served() {
    let t = web(
        &[(
            "configuration-snippet",
            "more_set_headers \"Request-Id: $req_id\";",
        )],
        vec![],
    );
    let r = route(&t, "a.example", "/");
    assert!(r.policies.refusal.is_none());
    let d = the_diagnostic(&t, "AnnotationRefused");
    assert!(
        d.message.contains("custom-headers"),
        "names the typed annotation: {d:?}"
    );
    assert!(!d.message.contains("fails closed"), "{d:?}");
    assert_eq!(reasons(&t).len(), 1);
}

#[test]
fn warnings_leave_the_route_served() {
    let t = web(
        &[
            ("proxy-body-size", "15r"),
            ("rewrite-targte", "/"),
            ("upstream-hash-by", "$request_uri$host"),
            ("proxy-buffering", "on"),
        ],
        vec![],
    );
    assert!(route(&t, "a.example", "/").policies.refusal.is_none());
    let mut got = reasons(&t).into_iter().map(|(_, r)| r).collect::<Vec<_>>();
    got.sort();
    assert_eq!(
        got,
        ["AnnotationInvalid", "AnnotationRefused", "AnnotationUnknown"]
    );
}

/// In a cluster the store holds only `kubernetes.io/tls` Secrets, slimmed to their certificate and
/// key, until watches of referenced objects are added: an Ingress with basic auth must then fail
/// closed ("Secret ... not found"), never be served open.
#[test]
fn cluster_mode_without_the_secret_fails_closed() {
    use crate::sources::kube::slim;
    let ing = ingress("web")
        .annotation(&format!("{P}auth-type"), "basic")
        .annotation(&format!("{P}auth-secret"), "basic-auth")
        .host("a.example")
        .prefix("/", "web", 80);
    let tls_named_like_it = secret("basic-auth").data("auth", HTPASSWD_FOO_BAR.as_bytes());
    for extra in [vec![], objects![tls_named_like_it]] {
        let mut objects = vec![slim(Object::from(ing.clone()))];
        objects.extend(backend("web", "10.0.0.1"));
        objects.extend(extra.into_iter().map(slim));
        let t = build(objects);
        let r = route(&t, "a.example", "/");
        assert!(r.policies.refusal.is_some(), "{:#?}", t.diagnostics);
        assert!(r.policies.basic_auth.is_none());
        assert!(
            reports_of(&t, "default/web")
                .fails_closed
                .as_deref()
                .unwrap()
                .contains("Secret default/basic-auth"),
            "{:?}",
            t.annotations
        );
    }
}

#[test]
fn file_mode_reads_opaque_secrets_and_config_maps() {
    let t = build(yaml(&format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  annotations:
    nginx.ingress.kubernetes.io/auth-type: basic
    nginx.ingress.kubernetes.io/auth-secret: basic-auth
    nginx.ingress.kubernetes.io/custom-headers: default/headers
spec:
  ingressClassName: gantry
  rules:
  - host: a.example
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: basic-auth}}
type: Opaque
stringData:
  auth: "{}"
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: headers}}
data: {{X-Frame-Options: DENY}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec: {{ports: [{{name: http, port: 80}}]}}
"#,
        HTPASSWD_FOO_BAR.trim()
    )));
    let p = &route(&t, "a.example", "/").policies;
    assert!(p.refusal.is_none(), "{:?}", t.annotations);
    assert!(p.basic_auth.as_ref().unwrap().users.verify("foo", b"bar"));
    assert!(p.response_headers.is_some());
}

#[test]
fn the_default_backend_keeps_the_ingress_access_policies() {
    let mut objects = objects![ingress("catch-all")
        .annotation(&format!("{P}whitelist-source-range"), "10.0.0.0/8")
        .annotation(&format!("{P}permanent-redirect"), "https://elsewhere.example")
        .default_backend("web", 80)];
    objects.extend(backend("web", "10.0.0.1"));
    let t = build(objects);
    let p = &t.routes.default_route().unwrap().policies;
    assert!(p.source_ranges.is_some());
    assert!(
        p.redirect.is_none(),
        "ingress-nginx keeps redirects off the catch-all location"
    );
    let mut objects = objects![ingress("catch-all")
        .annotation(&format!("{P}auth-url"), "http://auth.example")
        .default_backend("web", 80)];
    objects.extend(backend("web", "10.0.0.1"));
    let t = build(objects);
    let p = &t.routes.default_route().unwrap().policies;
    assert!(p.refusal.is_none() && p.external_auth.is_some());
    let mut objects = objects![ingress("catch-all")
        .annotation(&format!("{P}auth-url"), "http://bad..auth")
        .default_backend("web", 80)];
    objects.extend(backend("web", "10.0.0.1"));
    let t = build(objects);
    assert!(t.routes.default_route().unwrap().policies.refusal.is_some());
}

#[test]
fn every_ingress_of_the_class_has_a_report_and_others_none() {
    let mut objects = objects![
        ingress("ours").host("a.example").prefix("/", "web", 80),
        ingress("theirs")
            .class("nginx")
            .annotation(&format!("{P}auth-url"), "http://x")
            .host("b.example")
            .prefix("/", "web", 80),
    ];
    objects.extend(backend("web", "10.0.0.1"));
    let t = build(objects);
    let names: Vec<&str> = t.annotations.iter().map(|r| r.ingress.as_str()).collect();
    assert_eq!(names, ["default/ours"]);
    assert!(t.annotations[0].annotations.is_empty());
    assert!(t.diagnostics.is_empty());
}

#[test]
fn service_upstream_sends_to_the_cluster_ip_and_a_headless_service_falls_back_to_its_endpoints() {
    // ingress-nginx's serviceupstream.go: one upstream server, the Service's ClusterIP and port
    // (a named port resolved to its number).
    let objects = objects![
        ingress("ip")
            .host("ip.example")
            .prefix("/", "web", "http")
            .annotation(&format!("{P}service-upstream"), "true"),
        ingress("plain").host("plain.example").prefix("/", "web", 80),
        ingress("headless")
            .host("headless.example")
            .prefix("/", "none", 80)
            .annotation(&format!("{P}service-upstream"), "true"),
        service("web").cluster_ip("10.96.0.10").port("http", 80, 8080),
        slice("web").port_name("http").endpoint("10.0.0.1", 8080),
        service("none").cluster_ip("None").port("", 80, 8080),
        slice("none").endpoint("10.0.0.2", 8080)
    ];
    let t = build(objects);
    let addrs = |host: &str| -> Vec<String> {
        route(&t, host, "/")
            .backend
            .endpoints
            .iter()
            .map(|e| e.addr.to_string())
            .collect()
    };
    assert_eq!(addrs("ip.example"), ["10.96.0.10:80"]);
    assert_eq!(
        addrs("plain.example"),
        ["10.0.0.1:8080"],
        "other Ingresses keep the endpoints"
    );
    assert_eq!(addrs("headless.example"), ["10.0.0.2:8080"]);
    let d = the_diagnostic(&t, "NoClusterIp");
    assert_eq!(d.object, "Ingress default/headless");
    let r = reports_of(&t, "default/ip")
        .annotations
        .iter()
        .find(|r| r.name() == "service-upstream")
        .unwrap();
    assert_eq!(r.outcome.label(), "honoured");
    let invalid = web(&[("service-upstream", "sure")], vec![]);
    let r = reports_of(&invalid, "default/web")
        .annotations
        .iter()
        .find(|r| r.name() == "service-upstream")
        .unwrap();
    assert_eq!(r.outcome.label(), "invalid");
    assert_eq!(
        route(&invalid, "a.example", "/").backend.endpoints[0]
            .addr
            .to_string(),
        "10.0.0.1:8080"
    );
}

#[test]
fn default_backend_is_the_service_s_first_port_when_it_has_endpoints() {
    // The route's Service has no endpoint; `fallback` has two ports, the first one is used.
    let objects = |fallback_ready: bool| {
        let mut objects = objects![
            ingress("web")
                .host("a.example")
                .prefix("/", "web", 80)
                .annotation(&format!("{P}default-backend"), "fallback")
                .annotation(&format!("{P}custom-http-errors"), "404,503"),
            service("web").port("http", 80, 8080),
            service("fallback")
                .port("first", 8081, 9001)
                .port("second", 8082, 9002)
        ];
        if fallback_ready {
            objects.extend(objects![slice("fallback")
                .port_name("first")
                .endpoint("10.0.0.9", 9001)]);
        }
        objects
    };
    let t = build(objects(true));
    let p = &route(&t, "a.example", "/x").policies;
    let fallback = p.default_backend.as_ref().expect("the default backend is set");
    assert_eq!(fallback.id.to_string(), "default/fallback:8081");
    assert_eq!(fallback.endpoints[0].addr, "10.0.0.9:9001".parse().unwrap());
    assert_eq!(p.custom_errors.as_ref().unwrap().codes(), &[404, 503]);
    let report = reports_of(&t, "default/web");
    let outcome = |name: &str| {
        report
            .annotations
            .iter()
            .find(|r| r.name() == name)
            .map(|r| r.outcome.label())
    };
    assert_eq!(outcome("default-backend"), Some("honoured"));

    // Without endpoints it is not used (ingress-nginx: valid only with an endpoint), and said so.
    let t = build(objects(false));
    assert!(route(&t, "a.example", "/x").policies.default_backend.is_none());
    let report = reports_of(&t, "default/web");
    let r = report
        .annotations
        .iter()
        .find(|r| r.name() == "default-backend")
        .unwrap();
    assert_eq!(r.outcome.label(), "difference", "{r:?}");

    // A missing Service is an invalid annotation, and the route is still served.
    let t = web(&[("default-backend", "missing")], vec![]);
    assert!(route(&t, "a.example", "/x").policies.default_backend.is_none());
    let report = reports_of(&t, "default/web");
    let r = report
        .annotations
        .iter()
        .find(|r| r.name() == "default-backend")
        .unwrap();
    assert_eq!(r.outcome.label(), "invalid", "{r:?}");
}

#[test]
fn retries_land_on_the_route() {
    let t = web(
        &[
            ("proxy-next-upstream", "error timeout http_503"),
            ("proxy-next-upstream-tries", "2"),
        ],
        vec![],
    );
    let retry = route(&t, "a.example", "/")
        .policies
        .retry
        .expect("a retry policy");
    assert_eq!(retry.tries, 2);
    assert!(retry.on.status(http::StatusCode::SERVICE_UNAVAILABLE));
    // Without the annotations: Gantry's default, kept as `None`.
    let t = web(&[], vec![]);
    assert_eq!(route(&t, "a.example", "/").policies.retry, None);
}

/// ingress-nginx's client-certs example: `auth-tls-*` apply per host, from the oldest Ingress of
/// the host that has `auth-tls-secret`, to every route of the host; the handshake table requests a
/// certificate for exactly those hosts.
#[test]
fn client_certificate_authentication_is_per_host_and_the_oldest_ingress_decides() {
    use crate::annotations::tests::{client_ca_pem, client_ca_secret};
    let other_ca = {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    };
    let other = opaque_secret("default", "other-ca", &[("ca.crt", &other_ca)]);
    let ing = |name: &str, at: &str, host: &str, path: &str, anns: Anns<'_>| {
        let mut i = ingress(name).created(at).host(host).prefix(path, "web", 80);
        for (k, v) in anns {
            i = i.annotation(&format!("{P}{k}"), v);
        }
        Object::Ingress(i.build())
    };
    let mut objects = vec![
        // The owner of secure.example: client certificates required, with a CN to match.
        ing(
            "owner",
            "2024-01-01T00:00:00Z",
            "secure.example",
            "/",
            &[
                ("auth-tls-secret", "default/ca-secret"),
                ("auth-tls-match-cn", "CN=authtls"),
            ],
        ),
        // A newer Ingress of the same host without auth-tls: its path is protected too.
        ing("plain", "2024-02-01T00:00:00Z", "secure.example", "/api", &[]),
        // A newer one that disagrees: reported, the owner's applies.
        ing(
            "rival",
            "2024-03-01T00:00:00Z",
            "secure.example",
            "/rival",
            &[("auth-tls-secret", "default/other-ca")],
        ),
        // Another host: no client authentication.
        ing("open", "2024-01-01T00:00:00Z", "open.example", "/", &[]),
        // verify-client off: headers only, no certificate requested.
        ing(
            "off",
            "2024-01-01T00:00:00Z",
            "off.example",
            "/",
            &[
                ("auth-tls-secret", "default/ca-secret"),
                ("auth-tls-verify-client", "off"),
            ],
        ),
        client_ca_secret(),
        other,
    ];
    objects.extend(backend("web", "10.0.0.1"));
    let t = build(objects);

    let owner = route(&t, "secure.example", "/")
        .policies
        .client_cert
        .clone()
        .unwrap();
    assert_eq!(owner.match_dn.as_ref().unwrap().as_str(), "CN=authtls");
    for path in ["/api", "/rival"] {
        let r = route(&t, "secure.example", path);
        assert_eq!(r.policies.client_cert.as_ref(), Some(&owner), "{path}");
        assert!(r.policies.refusal.is_none(), "{path}");
    }
    assert!(route(&t, "open.example", "/").policies.client_cert.is_none());
    let d = the_diagnostic(&t, "ClientCertConflict");
    assert_eq!(d.object, "Ingress default/rival");
    assert!(d.message.contains("default/owner"), "{}", d.message);

    // The handshake table: secure.example requests a certificate for the owner's CA.
    assert!(t.certs.client_auth_active());
    assert_eq!(t.certs.client_ca(Some("secure.example")), Some(&owner.ca));
    assert_eq!(t.certs.client_ca(Some("open.example")), None);
    assert_eq!(t.certs.client_ca(Some("off.example")), None);
    assert_eq!(t.certs.client_ca(None), None);
    assert_eq!(owner.ca.ca_len(), 1);
    assert!(client_ca_pem().contains("BEGIN CERTIFICATE"));
    let off = route(&t, "off.example", "/")
        .policies
        .client_cert
        .clone()
        .unwrap();
    assert_eq!(off.verify, gantry_proxy::policy::VerifyClient::Off);
}

#[test]
fn a_broken_auth_tls_of_the_host_s_oldest_ingress_refuses_the_whole_host() {
    let ing = |name: &str, at: &str, path: &str, anns: Anns<'_>| {
        let mut i = ingress(name)
            .created(at)
            .host("secure.example")
            .prefix(path, "web", 80);
        for (k, v) in anns {
            i = i.annotation(&format!("{P}{k}"), v);
        }
        Object::Ingress(i.build())
    };
    let mut objects = vec![
        ing(
            "owner",
            "2024-01-01T00:00:00Z",
            "/",
            &[("auth-tls-secret", "default/missing")],
        ),
        ing("plain", "2024-02-01T00:00:00Z", "/api", &[]),
    ];
    objects.extend(backend("web", "10.0.0.1"));
    let t = build(objects);
    for path in ["/", "/api"] {
        let r = route(&t, "secure.example", path);
        assert_eq!(
            r.policies.refusal.as_ref().map(|r| r.status.as_u16()),
            Some(503),
            "{path} answers 503"
        );
        assert!(r.policies.client_cert.is_none());
    }
    let d = the_diagnostic(&t, "ClientCertConflict");
    assert_eq!(d.object, "Ingress default/plain");
    // No host requests a certificate: the listeners are as without the feature.
    assert!(!t.certs.client_auth_active());
}

#[test]
fn aliases_and_hostless_rules_carry_the_client_ca() {
    use crate::annotations::tests::client_ca_secret;
    let mut objects = vec![
        Object::Ingress(
            ingress("aliased")
                .host("secure.example")
                .prefix("/", "web", 80)
                .annotation(&format!("{P}auth-tls-secret"), "default/ca-secret")
                .annotation(&format!("{P}server-alias"), "alias.example")
                .build(),
        ),
        client_ca_secret(),
    ];
    objects.extend(backend("web", "10.0.0.1"));
    let t = build(objects);
    let ca = route(&t, "secure.example", "/")
        .policies
        .client_cert
        .clone()
        .unwrap()
        .ca
        .clone();
    assert_eq!(t.certs.client_ca(Some("alias.example")), Some(&ca));
    assert_eq!(t.certs.client_ca(Some("unknown.example")), None);

    let mut objects = vec![
        Object::Ingress(
            ingress("hostless")
                .any_host()
                .prefix("/", "web", 80)
                .annotation(&format!("{P}auth-tls-secret"), "default/ca-secret")
                .build(),
        ),
        client_ca_secret(),
    ];
    objects.extend(backend("web", "10.0.0.1"));
    let t = build(objects);
    assert!(t.certs.client_ca(None).is_some(), "SNI-less handshakes ask");
    assert!(t.certs.client_ca(Some("anything.example")).is_some());
}
